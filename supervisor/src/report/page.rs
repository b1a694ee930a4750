//! The page: a self-contained HTML document drawn from a [`Timeline`], with the chart as
//! inline SVG, the style sheet (`style.css`) and the zoom script (`zoom.js`) included whole.

use std::borrow::Cow;
use std::fmt::Write as _;

use shared::record::{CrashCause, Status};

use crate::cli::units::group_digits as group;
use crate::report::timeline::*;

/// Bins drawn over all lanes together in the aggregated view (each costs ~200 bytes).
const BIN_BUDGET: usize = 24_000;
/// Overlapping attempts in a lane (threads of a hybrid worker) get rows, up to this many.
const MAX_ROWS: usize = 6;
/// Deaths above which only death markers and attempt bars carry tooltips: each death costs
/// ~1.7 KB with all of them, ~0.9 KB without.
const COMPACT_DEATHS: usize = 4_000;
/// Overlap two attempts in a lane may have and still share a row: the supervisor's clock and
/// the worker's own timing disagree by microseconds.
const ROW_SLACK: f64 = 50e-6;

impl Timeline {
    /// The page.
    pub fn to_html(&self, title: &str) -> String {
        Page::new(self).html(title)
    }
}

/// Escapes text for HTML content and attribute values. Control characters (other than the
/// newlines tooltips use) are replaced, and `://` is broken up so that nothing in a page can
/// even look like a link to fetch.
pub(super) fn esc(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| matches!(c, '&' | '<' | '>' | '"' | '\'' | ':') || (c.is_control() && c != '\n')) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            ':' if chars.peek() == Some(&'/') => out.push_str("&#58;"),
            '\n' => out.push('\n'),
            '\t' => out.push(' '),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A duration in milliseconds, to a sensible precision.
pub(super) fn fmt_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms:.3} ms")
    } else if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1e3)
    }
}

/// A moment of the run.
pub(super) fn fmt_t(t: f64) -> String {
    if t < 10.0 { format!("{t:.4} s") } else { format!("{t:.3} s") }
}

/// A tick step of 1, 2 or 5 times a power of ten, about `raw`.
pub(super) fn nice_step(raw: f64) -> f64 {
    let e = 10f64.powf(raw.log10().floor());
    let f = raw / e;
    let m = if f < 1.5 {
        1.0
    } else if f < 3.5 {
        2.0
    } else if f < 7.5 {
        5.0
    } else {
        10.0
    };
    m * e
}

/// The CSS class of a death's cause, which sets its colour.
pub(super) fn cause_class(c: Option<&CrashCause>) -> &'static str {
    c.map_or("unknown", CrashCause::name)
}

/// Causes in legend order, with their colours.
const CAUSES: [(&str, &str); 8] = [
    ("signal", "#d32f2f"),
    ("panic", "#ef6c00"),
    ("timeout", "#7b1fa2"),
    ("unresponsive", "#1565c0"),
    ("protocol", "#00897b"),
    ("oom", "#6d4c41"),
    ("exit", "#546e7a"),
    ("unknown", "#212121"),
];

/// Layout of the chart, in SVG units.
pub(super) struct Geo {
    pub(super) width: f64,
    pub(super) left: f64,
    pub(super) plot_w: f64,
    pub(super) span: f64,
    pub(super) axis_y: f64,
    pub(super) pool_y: f64,
    pub(super) pool_h: f64,
    pub(super) lanes_y: f64,
    pub(super) lane_h: f64,
    pub(super) bottom: f64,
    pub(super) height: f64,
}

impl Geo {
    pub(super) fn new(lanes: usize, t_end: f64) -> Self {
        let width = 1320.0;
        let left = 104.0;
        let plot_w = width - left - 18.0;
        let span = if t_end > 0.0 { t_end } else { 1.0 };
        let lane_h = (760.0 / lanes.max(1) as f64).clamp(14.0, 40.0).floor();
        let axis_y = 26.0;
        let pool_y = axis_y + 8.0;
        let pool_h = 30.0;
        let lanes_y = pool_y + pool_h + 14.0;
        let bottom = lanes_y + lanes as f64 * lane_h;
        Self { width, left, plot_w, span, axis_y, pool_y, pool_h, lanes_y, lane_h, bottom, height: bottom + 22.0 }
    }

    /// The x of a moment, from the plot's left edge.
    fn x(&self, t: f64) -> f64 {
        let x = t / self.span * self.plot_w;
        if x.is_finite() { x.clamp(0.0, self.plot_w) } else { 0.0 }
    }
}

/// Rows of one lane: where bars go, by row.
pub(super) struct LaneRows<'a> {
    pub(super) bars: Vec<(&'a Bar, usize)>,
    pub(super) rows: usize,
}

/// Renders a [`Timeline`].
pub(super) struct Page<'a> {
    pub(super) tl: &'a Timeline,
    pub(super) geo: Geo,
    /// Lane indices in slot order.
    pub(super) order: Vec<usize>,
    /// Display rank of each lane index.
    pub(super) rank: Vec<usize>,
    /// Attempts still open at the end of the log.
    pub(super) unfinished: Vec<Bar>,
    /// So many deaths that only markers and bars carry hover details, to keep the page small.
    pub(super) compact: bool,
}

impl<'a> Page<'a> {
    pub(super) fn new(tl: &'a Timeline) -> Self {
        let mut order: Vec<usize> = (0..tl.lanes.len()).collect();
        order.sort_by_key(|&i| tl.lanes[i].worker);
        let mut rank = vec![0; tl.lanes.len()];
        for (r, &i) in order.iter().enumerate() {
            rank[i] = r;
        }
        let mut unfinished: Vec<Bar> = tl
            .open
            .iter()
            .map(|(id, o)| Bar {
                lane: o.lane,
                start: o.dispatched.max(tl.lanes[o.lane].cursor).min(tl.t_end),
                end: tl.t_end,
                id: clip(id, ID_CHARS),
                attempt: o.attempt,
                ms: None,
                kind: BarKind::Unfinished,
            })
            .collect();
        unfinished.sort_by(|a, b| a.start.total_cmp(&b.start).then_with(|| a.id.cmp(&b.id)));
        let compact = tl.exits.iter().filter(|e| !e.clean).count() > COMPACT_DEATHS;
        Self { tl, geo: Geo::new(tl.lanes.len(), tl.t_end), order, rank, unfinished, compact }
    }

    /// A tooltip, unless the page is compact.
    fn tip(&self, text: &str) -> String {
        if self.compact { String::new() } else { format!("<title>{}</title>", esc(text)) }
    }

    fn html(&self, title: &str) -> String {
        let tl = self.tl;
        let title = esc(title);
        let mut o = String::with_capacity(64 * 1024 + tl.routine.len() * 160 + tl.exits.len() * 400);
        o.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
        // The page may fetch nothing at all, whatever ends up in it.
        o.push_str(
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
             style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n",
        );
        o.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
        let _ = write!(o, "<title>{title}</title>\n<style>\n{CSS}");
        for (name, colour) in CAUSES {
            let _ = write!(o, ".c-{name}{{--c:{colour}}}");
        }
        o.push_str("</style></head><body>\n");
        let _ = writeln!(
            o,
            "<header><h1>{title}</h1><p class=\"sub\">bulkhead run timeline · {} events · {} worker slot{} · {}</p></header>",
            group(tl.counts.events),
            tl.lanes.len(),
            plural(tl.lanes.len() as u64),
            fmt_t(tl.t_end)
        );
        self.summary(&mut o);
        self.legend(&mut o);
        self.chart(&mut o);
        self.notes(&mut o);
        self.deaths_table(&mut o);
        self.tasks_table(&mut o);
        o.push_str("<footer>Self-contained: no scripts, fonts or styles are loaded from anywhere. Hover for details; times are seconds since the run started.</footer>\n");
        let _ = write!(o, "<script>\n{JS}</script>\n</body></html>\n");
        o
    }

    fn summary(&self, o: &mut String) {
        let c = &self.tl.counts;
        let deaths: u64 = c.deaths.values().sum();
        o.push_str("<section class=\"cards\">");
        // Duration and shutdown.
        let (reason, cls) = match &c.shutdown {
            Some((_, r)) if r == "completed" => (r.as_str(), "good"),
            Some((_, r)) => (r.as_str(), "bad"),
            None => ("no shutdown in the log", "bad"),
        };
        let _ = write!(
            o,
            "<div class=\"card\"><div class=\"k\">Duration</div><div class=\"v\">{}</div><div class=\"s\">shutdown: <b class=\"{cls}\">{}</b></div></div>",
            fmt_t(self.tl.t_end),
            esc(reason)
        );
        // Tasks.
        let finished = c.ok + c.failed + c.quarantined;
        let rate = if self.tl.t_end > 0.0 { finished as f64 / self.tl.t_end } else { 0.0 };
        let _ = write!(
            o,
            "<div class=\"card\"><div class=\"k\">Tasks</div><div class=\"v\">{}</div><div class=\"s chips\">\
             <span><i class=\"dot ok\"></i>{} ok</span> <span><i class=\"dot failed\"></i>{} failed</span> \
             <span><i class=\"dot quarantined\"></i>{} quarantined</span></div><div class=\"s\">{} attempts · {} retries · {rate:.0}/s</div></div>",
            group(finished),
            group(c.ok),
            group(c.failed),
            group(c.quarantined),
            group(c.attempts),
            group(c.retries),
        );
        // Deaths by cause.
        let _ = write!(
            o,
            "<div class=\"card wide\"><div class=\"k\">Worker deaths</div><div class=\"v{}\">{}</div><div class=\"s chips\">",
            if deaths > 0 { " bad" } else { "" },
            group(deaths)
        );
        if deaths == 0 {
            o.push_str("none");
        }
        for (name, _) in CAUSES {
            if let Some(n) = c.deaths.get(name) {
                let extra = if name == "signal" && !c.signals.is_empty() {
                    let parts: Vec<String> =
                        c.signals.iter().map(|(s, n)| format!("{} {}", esc(s), group(*n))).collect();
                    format!(" <small>({})</small>", parts.join(", "))
                } else {
                    String::new()
                };
                let _ = write!(
                    o,
                    "<span class=\"chip\"><i class=\"sw c-{name}\"></i>{name} <b>{}</b>{extra}</span>",
                    group(*n)
                );
            }
        }
        for (name, n) in &c.deaths {
            if !CAUSES.iter().any(|(k, _)| k == name) {
                let _ = write!(
                    o,
                    "<span class=\"chip\"><i class=\"sw c-unknown\"></i>{} <b>{}</b></span>",
                    esc(name),
                    group(*n)
                );
            }
        }
        let _ = write!(
            o,
            "</div><div class=\"s\">{} charged · {} requeued free</div></div>",
            group(c.requeued_charged),
            group(c.requeued_free)
        );
        // Restarts and recovery.
        let mut rec: Vec<f64> =
            self.tl.exits.iter().filter(|e| !e.clean).filter_map(|e| e.recovered.map(|r| (r - e.t) * 1e3)).collect();
        rec.sort_by(f64::total_cmp);
        let recovery = match (rec.get(rec.len() / 2), rec.last()) {
            (Some(med), Some(max)) => format!("back in {} median, {} max", fmt_ms(*med), fmt_ms(*max)),
            _ => "no death was followed by a replacement".to_string(),
        };
        let _ = write!(
            o,
            "<div class=\"card\"><div class=\"k\">Restarts</div><div class=\"v\">{}</div><div class=\"s\">{recovery}</div><div class=\"s\">backoff {} in all · {} processes</div></div>",
            group(c.restarts),
            fmt_ms(c.backoff_ms),
            group(c.processes)
        );
        if c.poisoned > 0 {
            let _ = write!(
                o,
                "<div class=\"card\"><div class=\"k\">Shared state poisoned</div><div class=\"v bad\">{}</div><div class=\"s\">thread mode: a panic while holding the lock</div></div>",
                group(c.poisoned)
            );
        }
        o.push_str("</section>\n");
    }

    fn legend(&self, o: &mut String) {
        o.push_str("<section class=\"legend\"><div><b>Attempts</b>");
        for (cls, label) in [
            ("ok", "ok"),
            ("ok retry", "ok on a retry"),
            ("failed", "failed"),
            ("failedretried", "failed, retried"),
            ("crashed", "crashed its worker (charged, requeued)"),
            ("quarantined", "crashed, quarantined"),
            ("unfinished", "no end in the log"),
        ] {
            let _ = write!(o, "<span><i class=\"sw b {cls}\"></i>{label}</span>");
        }
        o.push_str("<span><i class=\"sw strip\"></i>queued there when it died (requeued, not charged)</span>");
        o.push_str("</div><div><b>Workers</b><span><i class=\"sw life\"></i>process up</span><span><i class=\"sw starting\"></i>starting (spawn to ready)</span><span><i class=\"sw down\"></i>down after a death (backoff)</span>");
        o.push_str("<span><svg class=\"mksw\" viewBox=\"-7 -8 14 16\"><path class=\"c-signal\" d=\"M0,-5V8M-5,-6h10l-5,8z\"/></svg>death (colour: cause)</span>");
        for (name, _) in CAUSES.iter().filter(|(n, _)| self.tl.counts.deaths.contains_key(*n)) {
            let _ = write!(o, "<span><i class=\"sw c-{name}\"></i>{name}</span>");
        }
        if !self.tl.poisons.is_empty() {
            o.push_str("<span><svg class=\"mksw\" viewBox=\"-7 -8 14 16\"><path class=\"poison\" d=\"M0,-6l5,5l-5,5l-5,-5z\"/></svg>state poisoned</span>");
        }
        o.push_str("</div></section>\n");
    }

    fn chart(&self, o: &mut String) {
        let g = &self.geo;
        let tl = self.tl;
        let _ = write!(
            o,
            "<section class=\"chart\"><div class=\"hint\"><span>Hover a bar or a marker for details. Drag across the chart to zoom in; double-click to zoom out.</span><span id=\"zinfo\">0 – {}</span></div>",
            fmt_t(g.span)
        );
        if tl.aggregated {
            let _ = write!(
                o,
                "<div class=\"agg\">{} attempts are too many to draw one by one: each lane shows completions per time bin (height; hover for counts). Every death, and every attempt a death touched, is still drawn.</div>",
                group(tl.routine_total)
            );
        }
        let _ = write!(
            o,
            "<svg id=\"tl\" viewBox=\"0 0 {w} {h}\" data-left=\"{l}\" data-pw=\"{pw}\" data-span=\"{span}\" data-top=\"{top}\" data-bottom=\"{bot}\" role=\"img\" aria-label=\"timeline\">",
            w = g.width,
            h = g.height,
            l = g.left,
            pw = g.plot_w,
            span = g.span,
            top = g.axis_y,
            bot = g.bottom,
        );
        let _ = write!(
            o,
            "<defs><clipPath id=\"clip\"><rect x=\"{}\" y=\"0\" width=\"{}\" height=\"{}\"/></clipPath>\
             <pattern id=\"pdown\" width=\"5\" height=\"5\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\"><rect width=\"5\" height=\"5\" fill=\"#fdeceb\"/><rect width=\"2\" height=\"5\" fill=\"#eda19a\"/></pattern>\
             <pattern id=\"pstart\" width=\"5\" height=\"5\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(-45)\"><rect width=\"5\" height=\"5\" fill=\"#e6f0fb\"/><rect width=\"2\" height=\"5\" fill=\"#9cc3ea\"/></pattern></defs>",
            g.left - 1.0,
            g.plot_w + 2.0,
            g.height
        );
        // Lane backgrounds and the pool row's frame.
        let _ = write!(
            o,
            "<rect class=\"poolbg\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>",
            g.left, g.pool_y, g.plot_w, g.pool_h
        );
        for r in 0..self.order.len() {
            let y = g.lanes_y + r as f64 * g.lane_h;
            let _ = write!(
                o,
                "<rect class=\"lbg{}\" x=\"0\" y=\"{y}\" width=\"{}\" height=\"{}\"/>",
                r % 2,
                g.width,
                g.lane_h
            );
        }
        // Time axis.
        o.push_str("<g id=\"ax\">");
        let step = nice_step(g.span / 8.0);
        let decimals = (-(step.log10() + 1e-9).floor()).clamp(0.0, 9.0) as usize;
        let mut v = 0.0;
        for _ in 0..40 {
            if v > g.span * (1.0 + 1e-9) {
                break;
            }
            let x = g.left + g.x(v);
            let _ = write!(
                o,
                "<line x1=\"{x:.2}\" x2=\"{x:.2}\" y1=\"{}\" y2=\"{}\"/><text x=\"{x:.2}\" y=\"{}\">{v:.decimals$}</text>",
                g.axis_y,
                g.bottom,
                g.axis_y - 8.0
            );
            v += step;
        }
        o.push_str("</g>");
        let _ = write!(o, "<text class=\"unit\" x=\"{}\" y=\"{}\">seconds</text>", g.left - 28.0, g.axis_y - 8.0);
        // Everything placed in time: one group, stretched by the zoom.
        let mut hatched = String::new();
        let mut lives = String::new();
        for &li in &self.order {
            self.lane_states(&mut lives, &mut hatched, li);
        }
        let _ = write!(
            o,
            "<g clip-path=\"url(#clip)\"><g id=\"zr\">{hatched}</g><g id=\"zg\" transform=\"translate({} 0)\">{lives}",
            g.left
        );
        self.pool(o);
        let rows = self.lane_rows();
        if tl.aggregated {
            self.bands(o);
        }
        for &li in &self.order {
            self.bars(o, li, &rows[li]);
        }
        self.free_strips(o);
        o.push_str("</g>");
        // Markers keep their shape under the zoom: the script moves them instead.
        for e in tl.exits.iter().filter(|e| !e.clean) {
            self.death_marker(o, e);
        }
        for p in &tl.poisons {
            self.poison_marker(o, p);
        }
        o.push_str("</g>");
        // Labels over the lanes' left margin.
        let _ = write!(
            o,
            "<text class=\"lab\" x=\"{}\" y=\"{}\">workers ready</text>",
            g.left - 10.0,
            g.pool_y + g.pool_h / 2.0 + 4.0
        );
        for (r, &li) in self.order.iter().enumerate() {
            let lane = &tl.lanes[li];
            let y = g.lanes_y + r as f64 * g.lane_h;
            let big = g.lane_h >= 30.0;
            let _ = write!(
                o,
                "<text class=\"lab\" x=\"{}\" y=\"{:.1}\"><title>worker slot {}: {} process{}, {} death{}</title>worker {}</text>",
                g.left - 10.0,
                y + if big { g.lane_h / 2.0 - 1.0 } else { g.lane_h / 2.0 + 4.0 },
                lane.worker,
                lane.lives.len(),
                if lane.lives.len() == 1 { "" } else { "es" },
                lane.deaths,
                plural(lane.deaths),
                lane.worker
            );
            if big && lane.deaths > 0 {
                let _ = write!(
                    o,
                    "<text class=\"lab sublab\" x=\"{}\" y=\"{:.1}\">{} death{}</text>",
                    g.left - 10.0,
                    y + g.lane_h / 2.0 + 11.0,
                    group(lane.deaths),
                    plural(lane.deaths)
                );
            }
        }
        let _ = write!(
            o,
            "<rect id=\"sel\" x=\"0\" y=\"{}\" width=\"0\" height=\"{}\" style=\"display:none\"/>",
            g.axis_y,
            g.bottom - g.axis_y
        );
        o.push_str("</svg></section>\n");
    }

    /// The workers-ready step line over the lanes.
    fn pool(&self, o: &mut String) {
        let g = &self.geo;
        let mut steps = self.tl.pool.clone();
        steps.sort_by(|a, b| a.0.total_cmp(&b.0));
        let max = self.tl.lanes.len().max(1) as f64;
        let y = |n: i64| g.pool_y + g.pool_h - (n.max(0) as f64 / max).min(1.0) * (g.pool_h - 3.0);
        let mut d = format!("M0,{:.1}", y(0));
        let mut n: i64 = 0;
        let mut i = 0;
        while i < steps.len() {
            let t = steps[i].0;
            while i < steps.len() && steps[i].0 == t {
                n += i64::from(steps[i].1);
                i += 1;
            }
            let x = g.x(t);
            let _ = write!(d, "H{x:.3}V{:.1}", y(n));
        }
        let _ = write!(d, "H{:.3}V{:.1}Z", g.x(self.tl.t_end), y(0));
        let _ = write!(
            o,
            "<path class=\"pool\" d=\"{d}\"><title>workers ready over time (of {} slots): dips are deaths until the replacement is ready</title></path>",
            self.tl.lanes.len()
        );
    }

    fn lane_y(&self, li: usize) -> f64 {
        self.geo.lanes_y + self.rank[li] as f64 * self.geo.lane_h
    }

    /// Process lives, starts and dead gaps of one lane.
    /// Process lives (into `o`, stretched by the zoom) and the hatched starts and dead gaps
    /// (into `hatched`, moved and resized by the script so that the hatching keeps its slant).
    fn lane_states(&self, o: &mut String, hatched: &mut String, li: usize) {
        let g = &self.geo;
        let lane = &self.tl.lanes[li];
        let y = self.lane_y(li) + 1.5;
        let h = g.lane_h - 3.0;
        let mut span = |cls: &str, x0: f64, x1: f64, tip: String| {
            let _ = write!(
                hatched,
                "<rect class=\"{cls}\" x=\"{:.3}\" y=\"{y:.1}\" width=\"{:.3}\" height=\"{h:.1}\">{}</rect>",
                g.left + x0,
                (x1 - x0).max(0.0),
                self.tip(&tip)
            );
        };
        for life in &lane.lives {
            let end = life.ended.map_or(self.tl.t_end, |(t, _)| t);
            let ended = match life.ended {
                Some((t, End::Clean)) => format!("exited cleanly at {}", fmt_t(t)),
                Some((t, End::Died)) => format!("died at {}", fmt_t(t)),
                Some((t, End::Replaced)) => format!("replaced at {} (no exit in the log)", fmt_t(t)),
                None => "still up at the end of the log".to_string(),
            };
            let (x0, x1, x2) = (g.x(life.spawned), g.x(life.ready), g.x(end));
            let spawn = fmt_ms((life.ready - life.spawned) * 1e3);
            if x1 > x0 {
                span(
                    "starting",
                    x0,
                    x1,
                    format!("worker {} (pid {}) starting: ready in {spawn}", lane.worker, life.pid),
                );
            }
            let _ = write!(
                o,
                "<rect class=\"life\" x=\"{x1:.3}\" y=\"{y:.1}\" width=\"{:.3}\" height=\"{h:.1}\">{}</rect>",
                (x2 - x1).max(0.0),
                self.tip(&format!(
                    "worker {} (pid {})\nready at {} (spawn took {spawn})\n{ended}",
                    lane.worker,
                    life.pid,
                    fmt_t(life.ready)
                )),
            );
        }
        for down in &lane.downs {
            let to = down.to.unwrap_or(self.tl.t_end);
            let what = match (down.to, down.backoff_ms) {
                (Some(_), Some(b)) => format!("backoff {}, then respawn", fmt_ms(b)),
                (Some(_), None) => "respawned".to_string(),
                (None, _) => "not restarted before the log ends".to_string(),
            };
            let tip = format!(
                "worker {} down for {} after a death at {}: {what}",
                lane.worker,
                fmt_ms((to - down.from) * 1e3),
                fmt_t(down.from)
            );
            span("down", g.x(down.from), g.x(to), tip);
        }
    }

    /// Packs each lane's bars into rows so that overlapping attempts (threads of a hybrid
    /// worker) do not hide each other.
    pub(super) fn lane_rows(&self) -> Vec<LaneRows<'_>> {
        let mut per: Vec<Vec<&Bar>> = vec![Vec::new(); self.tl.lanes.len()];
        let routine = if self.tl.aggregated { &[][..] } else { &self.tl.routine[..] };
        for b in routine.iter().chain(&self.tl.kept).chain(&self.unfinished) {
            if let Some(v) = per.get_mut(b.lane) {
                v.push(b);
            }
        }
        per.into_iter()
            .map(|mut bars| {
                bars.sort_by(|a, b| a.start.total_cmp(&b.start));
                let mut ends: Vec<f64> = Vec::new();
                let placed = bars
                    .into_iter()
                    .map(|b| {
                        let row = match ends.iter().position(|&e| e <= b.start + ROW_SLACK) {
                            Some(r) => r,
                            None if ends.len() < MAX_ROWS => {
                                ends.push(f64::NEG_INFINITY);
                                ends.len() - 1
                            }
                            None => (0..ends.len()).min_by(|&x, &y| ends[x].total_cmp(&ends[y])).unwrap_or(0),
                        };
                        ends[row] = ends[row].max(b.end);
                        (b, row)
                    })
                    .collect();
                LaneRows { bars: placed, rows: ends.len().max(1) }
            })
            .collect()
    }

    /// The band of a lane's bars: top and height.
    fn bar_band(&self, li: usize) -> (f64, f64) {
        let h = self.geo.lane_h;
        let pad = (h * 0.16).round().max(2.0);
        let strip = (h * 0.12).round().max(2.0);
        (self.lane_y(li) + pad, h - 2.0 * pad - strip + 1.0)
    }

    fn bars(&self, o: &mut String, li: usize, rows: &LaneRows<'_>) {
        let g = &self.geo;
        let (top, height) = self.bar_band(li);
        let rh = height / rows.rows as f64;
        let worker = self.tl.lanes[li].worker;
        for &(b, row) in &rows.bars {
            let x0 = g.x(b.start);
            // A zero width hides a rect entirely; the stroke gives it a pixel at any zoom.
            let w = (g.x(b.end) - x0).max(0.001);
            let y = top + row as f64 * rh;
            let attempt = if b.attempt > 0 { format!("attempt {}", b.attempt) } else { "attempt ?".to_string() };
            let (cls, what) = match b.kind {
                BarKind::Ok if b.attempt > 1 => ("ok retry", "ok".to_string()),
                BarKind::Ok => ("ok", "ok".to_string()),
                BarKind::Failed => ("failed", "failed".to_string()),
                BarKind::FailedRetried => {
                    ("failedretried", "failed; retried (ends where the retry was dispatched)".into())
                }
                BarKind::Crashed(e) => ("crashed", format!("crashed its worker: {}; requeued", self.cause_text(e))),
                BarKind::Quarantined(Some(e)) => {
                    ("quarantined", format!("crashed its worker: {}; quarantined", self.cause_text(e)))
                }
                BarKind::Quarantined(None) => ("quarantined", "quarantined".to_string()),
                BarKind::Unfinished => ("unfinished", "dispatched; no end in the log".to_string()),
            };
            let took = match b.ms {
                Some(ms) => format!(" · {}", fmt_ms(ms)),
                None => format!(" · {} until {}", fmt_ms((b.end - b.start) * 1e3), fmt_t(b.end)),
            };
            let _ = write!(
                o,
                "<rect class=\"b {cls}\" x=\"{x0:.3}\" y=\"{y:.1}\" width=\"{w:.3}\" height=\"{:.1}\"><title>{} · {attempt} · worker {worker}\n{}{took}\nfrom {}</title></rect>",
                (rh - if rows.rows > 1 { 0.6 } else { 0.0 }).max(1.0),
                esc(&b.id),
                esc(&what),
                fmt_t(b.start)
            );
        }
    }

    /// The cause of a death for an attempt's tooltip: in full, or (compact) its short name,
    /// the marker beside the bar having the rest.
    fn cause_text(&self, exit: usize) -> String {
        match self.tl.exits.get(exit).and_then(|e| e.cause.as_ref()) {
            Some(c) if self.compact => cause_short(c),
            Some(c) => c.to_string(),
            None => "cause unknown".to_string(),
        }
    }

    /// Throughput bands of the aggregated view.
    fn bands(&self, o: &mut String) {
        let g = &self.geo;
        let tl = self.tl;
        let used = tl.lanes.iter().map(|l| l.bins.len()).max().unwrap_or(0);
        let target = (BIN_BUDGET / tl.lanes.len().max(1)).clamp(16, MAX_BINS);
        let mut factor = 1usize;
        while used.div_ceil(factor) > target {
            factor *= 2;
        }
        let w = tl.bin_w * factor as f64;
        let grouped: Vec<Vec<Bin>> = tl
            .lanes
            .iter()
            .map(|l| {
                l.bins
                    .chunks(factor)
                    .map(|c| {
                        c.iter().fold(Bin::default(), |a, b| Bin {
                            ok: a.ok.saturating_add(b.ok),
                            failed: a.failed.saturating_add(b.failed),
                            busy: a.busy + b.busy,
                        })
                    })
                    .collect()
            })
            .collect();
        let peak = grouped.iter().flatten().map(|b| u64::from(b.ok) + u64::from(b.failed)).max().unwrap_or(0).max(1);
        for (li, bins) in grouped.iter().enumerate() {
            let (top, height) = self.bar_band(li);
            let bottom = top + height;
            for (i, b) in bins.iter().enumerate() {
                let n = u64::from(b.ok) + u64::from(b.failed);
                if n == 0 {
                    continue;
                }
                let t0 = i as f64 * w;
                let t1 = ((i + 1) as f64 * w).min(tl.t_end.max(t0));
                let x0 = g.x(t0);
                let bw = (g.x(t1) - x0).max(0.001);
                let h_ok = f64::from(b.ok) / peak as f64 * height;
                let h_failed = f64::from(b.failed) / peak as f64 * height;
                let _ = write!(
                    o,
                    "<g class=\"bin\"><title>worker {} · {}–{}\n{} ok · {} failed · {:.0}/s · busy {:.0}%</title>",
                    tl.lanes[li].worker,
                    fmt_t(t0),
                    fmt_t(t1),
                    group(u64::from(b.ok)),
                    group(u64::from(b.failed)),
                    n as f64 / w,
                    b.busy / w * 100.0
                );
                if b.ok > 0 {
                    let _ = write!(
                        o,
                        "<rect class=\"ok\" x=\"{x0:.3}\" y=\"{:.2}\" width=\"{bw:.3}\" height=\"{h_ok:.2}\"/>",
                        bottom - h_ok
                    );
                }
                if b.failed > 0 {
                    let _ = write!(
                        o,
                        "<rect class=\"failed\" x=\"{x0:.3}\" y=\"{:.2}\" width=\"{bw:.3}\" height=\"{:.2}\"/>",
                        bottom - h_ok - h_failed,
                        h_failed.max(0.5)
                    );
                }
                o.push_str("</g>");
            }
        }
    }

    /// One thin strip per death for the tasks only queued at the worker, returned unrun.
    fn free_strips(&self, o: &mut String) {
        let g = &self.geo;
        for e in self.tl.exits.iter().filter(|e| e.free > 0) {
            let (top, height) = self.bar_band(e.lane);
            let y = top + height + 1.0;
            let sh = (g.lane_h * 0.12).round().max(2.0) - 1.0;
            let x0 = g.x(e.free_since);
            let w = (g.x(e.t) - x0).max(0.001);
            let mut names = e.free_ids.clone();
            if e.free > names.len() as u64 {
                names.push(format!("and {} more", group(e.free - names.len() as u64)));
            }
            let tip = self.tip(&format!(
                "{} task{} queued at worker {} (pid {}) when it {} at {}; requeued, not charged:\n{}",
                group(e.free),
                plural(e.free),
                self.tl.lanes[e.lane].worker,
                e.pid,
                if e.clean { "exited" } else { "died" },
                fmt_t(e.t),
                names.join(", ")
            ));
            let _ = write!(
                o,
                "<rect class=\"strip\" x=\"{x0:.3}\" y=\"{y:.1}\" width=\"{w:.3}\" height=\"{sh:.1}\">{tip}</rect>"
            );
        }
    }

    fn death_marker(&self, o: &mut String, e: &Exit) {
        let g = &self.geo;
        let lane = &self.tl.lanes[e.lane];
        let y = self.lane_y(e.lane);
        let x = g.x(e.t);
        let cls = cause_class(e.cause.as_ref());
        let cause = match &e.cause {
            Some(c) => format!("{}: {c}", c.name()),
            None => "unknown cause".to_string(),
        };
        let mut tip = format!("worker {} (pid {}) died at {}\n{cause}", lane.worker, e.pid, fmt_t(e.t));
        match &e.blamed {
            Some(id) => {
                let fate = e.charged.iter().find(|h| &h.id == id).map_or(String::new(), |h| {
                    format!(
                        " (attempt {}, {})",
                        h.attempt,
                        if h.quarantined { "quarantined" } else { "charged, requeued" }
                    )
                });
                let _ = write!(tip, "\nblamed task: {id}{fate}");
            }
            None => tip.push_str("\nno task blamed"),
        }
        let others = e.charged.iter().filter(|h| Some(&h.id) != e.blamed.as_ref()).count();
        if others > 0 {
            let _ = write!(tip, "\nalso charged: {others} more");
        }
        if e.free > 0 {
            let _ = write!(tip, "\n{} queued task{} requeued free", group(e.free), plural(e.free));
        }
        match (e.recovered, e.backoff_ms) {
            (Some(r), Some(b)) => {
                let _ = write!(tip, "\nreplacement ready after {} (backoff {})", fmt_ms((r - e.t) * 1e3), fmt_ms(b));
            }
            (Some(r), None) => {
                let _ = write!(tip, "\nreplacement ready after {}", fmt_ms((r - e.t) * 1e3));
            }
            (None, _) => tip.push_str("\nno replacement in the log"),
        }
        let _ = write!(
            o,
            "<g class=\"mk d c-{cls}\" transform=\"translate({:.3} 0)\"><title>{}</title><path d=\"M0,{:.1}V{:.1}M-5,{:.1}h10l-5,8z\"/></g>",
            g.left + x,
            esc(&tip),
            y + 2.0,
            y + g.lane_h - 1.0,
            y - 4.0
        );
    }

    fn poison_marker(&self, o: &mut String, p: &Poison) {
        let g = &self.geo;
        let y = self.lane_y(p.lane) + g.lane_h / 2.0;
        let x = g.x(p.t);
        let _ = write!(
            o,
            "<g class=\"mk poison\" transform=\"translate({:.3} 0)\"><title>{}</title><path d=\"M0,{:.1}l6,6l-6,6l-6,-6z\"/></g>",
            g.left + x,
            esc(&format!(
                "shared state poisoned at {} on worker {}\nby task {}: {}",
                fmt_t(p.t),
                self.tl.lanes[p.lane].worker,
                p.id,
                p.message
            )),
            y - 6.0
        );
    }

    fn notes(&self, o: &mut String) {
        let tl = self.tl;
        let mut notes: Vec<String> = tl.notes.iter().map(|n| esc(n).into_owned()).collect();
        if tl.counts.events == 0 {
            notes.push("The events stream is empty: there is nothing to draw.".to_string());
        }
        if !self.unfinished.is_empty() {
            notes.push(format!(
                "{} attempt{} had no end in the log (drawn dashed to its end).",
                group(self.unfinished.len() as u64),
                plural(self.unfinished.len() as u64)
            ));
        }
        if tl.counts.shutdown.is_none() && tl.counts.events > 0 {
            notes.push("The log has no shutdown event: the run was cut off, or is still going.".to_string());
        }
        if self.compact {
            notes.push(format!(
                "With more than {} deaths, only death markers and attempts show details on hover, to keep the page small.",
                group(COMPACT_DEATHS as u64)
            ));
        }
        if tl.counts.unknown_lane_events > 0 {
            notes.push(format!(
                "{} events of worker slots beyond the first {MAX_LANES} are counted in the summary but not drawn.",
                group(tl.counts.unknown_lane_events)
            ));
        }
        if notes.is_empty() {
            return;
        }
        o.push_str("<section class=\"notes\"><ul>");
        for n in notes {
            let _ = write!(o, "<li>{n}</li>");
        }
        o.push_str("</ul></section>\n");
    }

    fn deaths_table(&self, o: &mut String) {
        let tl = self.tl;
        let deaths: Vec<(usize, &Exit)> = tl.exits.iter().enumerate().filter(|(_, e)| !e.clean).collect();
        if deaths.is_empty() {
            return;
        }
        let _ = write!(
            o,
            "<section><h2>Worker deaths <small>{}</small></h2><table><thead><tr><th>time</th><th>worker</th><th>pid</th><th>cause</th><th>details</th><th>blamed task</th><th>requeued</th><th>back after</th><th>backoff</th></tr></thead><tbody>",
            group(deaths.len() as u64)
        );
        for (i, e) in deaths.iter().take(MAX_TABLE_ROWS) {
            let cls = cause_class(e.cause.as_ref());
            let detail = e.cause.as_ref().map_or(String::new(), ToString::to_string);
            let blamed = match &e.blamed {
                Some(id) => {
                    let fate =
                        e.charged.iter().find(|h| &h.id == id).map_or("", |h| {
                            if h.quarantined { " <span class=\"tag q\">quarantined</span>" } else { "" }
                        });
                    format!("<code>{}</code>{fate}", esc(id))
                }
                None => "—".to_string(),
            };
            let _ = write!(
                o,
                "<tr id=\"row-{i}\"><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td><i class=\"sw c-{cls}\"></i>{cls}</td><td>{}</td><td>{blamed}</td><td class=\"num\">{} charged, {} free</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                fmt_t(e.t),
                tl.lanes[e.lane].worker,
                e.pid,
                esc(&detail),
                e.charged.len(),
                group(e.free),
                e.recovered.map_or("—".to_string(), |r| fmt_ms((r - e.t) * 1e3)),
                e.backoff_ms.map_or("—".to_string(), fmt_ms),
            );
        }
        o.push_str("</tbody></table>");
        if deaths.len() > MAX_TABLE_ROWS {
            let _ = write!(
                o,
                "<p class=\"more\">First {MAX_TABLE_ROWS} of {} deaths; every one is marked on the timeline.</p>",
                group(deaths.len() as u64)
            );
        }
        o.push_str("</section>\n");
    }

    fn tasks_table(&self, o: &mut String) {
        let tl = self.tl;
        if tl.hist.is_empty() {
            return;
        }
        let mut tasks: Vec<(&String, &Hist)> = tl.hist.iter().collect();
        tasks.sort_by(|a, b| a.1.first.total_cmp(&b.1.first).then_with(|| a.0.cmp(b.0)));
        let _ = write!(
            o,
            "<section><h2>Tasks that crashed a worker <small>{}</small></h2><table><thead><tr><th>task</th><th>first crash</th><th>crashes</th><th>causes</th><th>outcome</th></tr></thead><tbody>",
            group(tasks.len() as u64)
        );
        for (id, h) in tasks.iter().take(MAX_TABLE_ROWS) {
            let outcome = match h.outcome {
                Outcome::Pending => "<span class=\"tag u\">no end in the log</span>".to_string(),
                Outcome::Finished(Status::Ok, a) => format!("<span class=\"tag ok\">ok</span> on attempt {a}"),
                Outcome::Finished(Status::Failed, a) => format!("<span class=\"tag f\">failed</span> on attempt {a}"),
                Outcome::Finished(Status::Quarantined, a) | Outcome::Quarantined(a) => {
                    format!("<span class=\"tag q\">quarantined</span> after {a} attempts")
                }
            };
            let causes: Vec<String> = h.causes.iter().map(|c| esc(c).into_owned()).collect();
            let _ = write!(
                o,
                "<tr><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{outcome}</td></tr>",
                esc(id),
                fmt_t(h.first),
                group(h.crashes),
                causes.join(", ")
            );
        }
        o.push_str("</tbody></table>");
        if tasks.len() > MAX_TABLE_ROWS {
            let _ = write!(o, "<p class=\"more\">First {MAX_TABLE_ROWS} of {} tasks.</p>", group(tasks.len() as u64));
        }
        o.push_str("</section>\n");
    }
}

pub(super) fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

const CSS: &str = include_str!("style.css");

/// Drag to zoom, double-click to reset: the time group is stretched, markers are moved so that
/// they keep their shape, and the ticks are redrawn. Without it the page is the full run.
const JS: &str = include_str!("zoom.js");
