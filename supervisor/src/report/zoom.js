(()=>{const s=document.getElementById('tl');if(!s)return;
const L=+s.dataset.left,P=+s.dataset.pw,S=+s.dataset.span,T=+s.dataset.top,B=+s.dataset.bottom;
const zg=document.getElementById('zg'),ax=document.getElementById('ax'),sel=document.getElementById('sel'),info=document.getElementById('zinfo');
const mk=[...s.querySelectorAll('.mk')].map(m=>[m,m.transform.baseVal.getItem(0).matrix.e-L]),zr=[...document.querySelectorAll('#zr rect')].map(r=>[r,+r.getAttribute('x')-L,+r.getAttribute('width')]);let a=0,b=P,d0=null;
const sx=e=>{const p=s.createSVGPoint();p.x=e.clientX;p.y=e.clientY;return p.matrixTransform(s.getScreenCTM().inverse()).x};
const cl=x=>Math.min(Math.max(x,L),L+P);
const nice=r=>{const e=Math.pow(10,Math.floor(Math.log10(r))),f=r/e;return(f<1.5?1:f<3.5?2:f<7.5?5:10)*e};
const fmt=t=>(t<10?t.toFixed(4):t.toFixed(3))+' s';
function apply(){const k=P/(b-a);zg.setAttribute('transform',`translate(${L-a*k} 0) scale(${k} 1)`);
for(const[m,x]of mk)m.setAttribute('transform',`translate(${L+(x-a)*k} 0)`);
for(const[r,x,w]of zr){r.setAttribute('x',L+(x-a)*k);r.setAttribute('width',w*k)}
const t0=a/P*S,t1=b/P*S,st=nice((t1-t0)/8),dp=Math.max(0,-Math.floor(Math.log10(st)+1e-9));let h='';
for(let v=Math.ceil(t0/st-1e-9)*st,i=0;v<=t1+st*1e-9&&i<40;v+=st,i++){const x=L+(v/S*P-a)*k;h+=`<line x1="${x}" x2="${x}" y1="${T}" y2="${B}"/><text x="${x}" y="${T-8}">${v.toFixed(dp)}</text>`}
ax.innerHTML=h;info.textContent=(a>0||b<P?'zoomed: ':'')+fmt(t0)+' – '+fmt(t1)}
s.addEventListener('mousedown',e=>{const x=sx(e);if(x<L||x>L+P)return;d0=x;sel.setAttribute('x',x);sel.setAttribute('width',0);sel.style.display='';e.preventDefault()});
addEventListener('mousemove',e=>{if(d0===null)return;const x=cl(sx(e));sel.setAttribute('x',Math.min(x,d0));sel.setAttribute('width',Math.abs(x-d0))});
addEventListener('mouseup',e=>{if(d0===null)return;const x=cl(sx(e)),k=(b-a)/P;sel.style.display='none';
if(Math.abs(x-d0)>4){const na=a+(Math.min(x,d0)-L)*k,nb=a+(Math.max(x,d0)-L)*k;if(nb-na>P*1e-7){a=na;b=nb;apply()}}d0=null});
s.addEventListener('dblclick',()=>{a=0;b=P;apply()});})();
