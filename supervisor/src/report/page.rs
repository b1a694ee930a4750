//! The page: a self-contained HTML document drawn from a [`Timeline`], with the chart as
//! inline SVG, the style sheet (`style.css`) and the zoom script (`zoom.js`) included whole.
//! The markup is written with `maud`, which escapes every spliced value but the markup it made
//! itself and the two included files (marked [`PreEscaped`]): text from the run cannot become
//! markup.

use std::borrow::Cow;
use std::fmt::Write as _;

use maud::{DOCTYPE, Markup, PreEscaped, Render, html};
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

/// Escapes text for HTML content and attribute values, as maud does, and more: control
/// characters (other than the newlines tooltips use) are replaced, and `://` is broken up so
/// that nothing in a page can even look like a link to fetch.
fn esc(s: &str) -> Cow<'_, str> {
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

/// Text from the run (task ids, causes, messages, notes, the title) in the page: [`esc`]aped.
/// A plain `&str` splice is escaped by maud already; this adds the defanging of `://` and
/// control characters.
struct Text<'a>(&'a str);

impl Render for Text<'_> {
    fn render_to(&self, buffer: &mut String) {
        buffer.push_str(&esc(self.0));
    }
}

/// A number with a fixed count of decimals, written straight into the page: digits, a sign and
/// a point need no escaping, and no `String` is made for each of the thousands of coordinates.
struct Fixed(f64, usize);

impl Render for Fixed {
    fn render_to(&self, buffer: &mut String) {
        let _ = write!(buffer, "{:.*}", self.1, self.0);
    }
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
const CAUSES: [(&str, &str); 9] = [
    ("signal", "#d32f2f"),
    ("panic", "#ef6c00"),
    ("timeout", "#7b1fa2"),
    ("stalled", "#c2185b"),
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
                peak_rss: None,
                kind: BarKind::Unfinished,
            })
            .collect();
        unfinished.sort_by(|a, b| a.start.total_cmp(&b.start).then_with(|| a.id.cmp(&b.id)));
        let compact = tl.exits.iter().filter(|e| !e.clean).count() > COMPACT_DEATHS;
        Self { tl, geo: Geo::new(tl.lanes.len(), tl.t_end), order, rank, unfinished, compact }
    }

    /// A tooltip, unless the page is compact.
    fn tip(&self, text: &str) -> Markup {
        html! {
            @if !self.compact {
                title { (Text(text)) }
            }
        }
    }

    fn html(&self, title: &str) -> String {
        let tl = self.tl;
        let page = html! {
            (DOCTYPE) "\n"
            html lang="en" {
                head {
                    meta charset="utf-8";
                    "\n"
                    // The page may fetch nothing at all, whatever ends up in it.
                    meta http-equiv="Content-Security-Policy"
                        content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'";
                    "\n"
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    "\n"
                    title { (Text(title)) }
                    "\n"
                    style {
                        "\n"
                        (PreEscaped(CSS))
                        @for (name, colour) in CAUSES {
                            ".c-" (name) "{--c:" (colour) "}"
                        }
                    }
                }
                body {
                    "\n"
                    header {
                        h1 { (Text(title)) }
                        p class="sub" {
                            "bulkhead run timeline · " (group(tl.counts.events)) " events · "
                            (tl.lanes.len()) " worker slot" (plural(tl.lanes.len() as u64)) " · " (fmt_t(tl.t_end))
                        }
                    }
                    "\n"
                    (self.summary()) "\n"
                    (self.legend()) "\n"
                    (self.chart()) "\n"
                    (self.notes())
                    (self.deaths_table())
                    (self.tasks_table())
                    footer {
                        "Self-contained: no scripts, fonts or styles are loaded from anywhere. Hover for details; \
                         times are seconds since the run started."
                    }
                    "\n"
                    script { "\n" (PreEscaped(JS)) }
                    "\n"
                }
            }
        };
        let mut o = page.into_string();
        o.push('\n');
        o
    }

    fn summary(&self) -> Markup {
        let tl = self.tl;
        let c = &tl.counts;
        let deaths: u64 = c.deaths.values().sum();
        let (reason, cls) = match &c.shutdown {
            Some((_, r)) if r == "completed" => (r.as_str(), "good"),
            Some((_, r)) => (r.as_str(), "bad"),
            None => ("no shutdown in the log", "bad"),
        };
        let finished = c.ok + c.failed + c.quarantined;
        let rate = if tl.t_end > 0.0 { finished as f64 / tl.t_end } else { 0.0 };
        let mut rec: Vec<f64> =
            tl.exits.iter().filter(|e| !e.clean).filter_map(|e| e.recovered.map(|r| (r - e.t) * 1e3)).collect();
        rec.sort_by(f64::total_cmp);
        let recovery = match (rec.get(rec.len() / 2), rec.last()) {
            (Some(med), Some(max)) => format!("back in {} median, {} max", fmt_ms(*med), fmt_ms(*max)),
            _ => "no death was followed by a replacement".to_string(),
        };
        html! {
            section class="cards" {
                // Duration and shutdown.
                div class="card" {
                    div class="k" { "Duration" }
                    div class="v" { (fmt_t(tl.t_end)) }
                    div class="s" { "shutdown: " b class=(cls) { (Text(reason)) } }
                }
                // Tasks.
                div class="card" {
                    div class="k" { "Tasks" }
                    div class="v" { (group(finished)) }
                    div class="s chips" {
                        span { i class="dot ok" {} (group(c.ok)) " ok" }
                        " "
                        span { i class="dot failed" {} (group(c.failed)) " failed" }
                        " "
                        span { i class="dot quarantined" {} (group(c.quarantined)) " quarantined" }
                    }
                    div class="s" {
                        (group(c.attempts)) " attempts · " (group(c.retries)) " retries · " (Fixed(rate, 0)) "/s"
                    }
                }
                // Deaths by cause.
                div class="card wide" {
                    div class="k" { "Worker deaths" }
                    div class=(if deaths > 0 { "v bad" } else { "v" }) { (group(deaths)) }
                    div class="s chips" {
                        @if deaths == 0 { "none" }
                        @for (name, _) in CAUSES {
                            @if let Some(n) = c.deaths.get(name) {
                                span class="chip" {
                                    i class={ "sw c-" (name) } {}
                                    (name) " " b { (group(*n)) }
                                    @if name == "signal" && !c.signals.is_empty() {
                                        " "
                                        small {
                                            "("
                                            @for (i, (s, n)) in c.signals.iter().enumerate() {
                                                @if i > 0 { ", " }
                                                (Text(s)) " " (group(*n))
                                            }
                                            ")"
                                        }
                                    }
                                }
                            }
                        }
                        @for (name, n) in &c.deaths {
                            @if !CAUSES.iter().any(|(k, _)| k == name) {
                                span class="chip" { i class="sw c-unknown" {} (Text(name)) " " b { (group(*n)) } }
                            }
                        }
                    }
                    div class="s" {
                        (group(c.requeued_charged)) " charged · " (group(c.requeued_free)) " requeued free"
                    }
                }
                // Restarts and recovery.
                div class="card" {
                    div class="k" { "Restarts" }
                    div class="v" { (group(c.restarts)) }
                    div class="s" { (recovery) }
                    div class="s" { "backoff " (fmt_ms(c.backoff_ms)) " in all · " (group(c.processes)) " processes" }
                }
                @if !c.retired.is_empty() {
                    div class="card" {
                        div class="k" { "Retired (recycled)" }
                        div class="v" { (group(c.retired.values().sum())) }
                        div class="s" {
                            @for (i, (why, n)) in c.retired.iter().enumerate() {
                                @if i > 0 { " · " }
                                (group(*n)) " at the " (why)
                            }
                        }
                        div class="s" { "replaced between tasks, nobody charged" }
                    }
                }
                @if c.poisoned > 0 {
                    div class="card" {
                        div class="k" { "Shared state poisoned" }
                        div class="v bad" { (group(c.poisoned)) }
                        div class="s" { "thread mode: a panic while holding the lock" }
                    }
                }
            }
        }
    }

    fn legend(&self) -> Markup {
        let seen = CAUSES.iter().filter(|(n, _)| self.tl.counts.deaths.contains_key(*n));
        html! {
            section class="legend" {
                div {
                    b { "Attempts" }
                    @for (cls, label) in [
                        ("ok", "ok"),
                        ("ok retry", "ok on a retry"),
                        ("failed", "failed"),
                        ("failedretried", "failed, retried"),
                        ("crashed", "crashed its worker (charged, requeued)"),
                        ("quarantined", "crashed, quarantined"),
                        ("unfinished", "no end in the log"),
                    ] {
                        span { i class={ "sw b " (cls) } {} (label) }
                    }
                    span { i class="sw strip" {} "queued there when it died (requeued, not charged)" }
                }
                div {
                    b { "Workers" }
                    span { i class="sw life" {} "process up" }
                    span { i class="sw starting" {} "starting (spawn to ready)" }
                    span { i class="sw down" {} "down after a death (backoff)" }
                    span {
                        svg class="mksw" viewBox="-7 -8 14 16" { path class="c-signal" d="M0,-5V8M-5,-6h10l-5,8z" {} }
                        "death (colour: cause)"
                    }
                    @for (name, _) in seen {
                        span { i class={ "sw c-" (name) } {} (name) }
                    }
                    @if !self.tl.poisons.is_empty() {
                        span {
                            svg class="mksw" viewBox="-7 -8 14 16" { path class="poison" d="M0,-6l5,5l-5,5l-5,-5z" {} }
                            "state poisoned"
                        }
                    }
                }
            }
        }
    }

    fn chart(&self) -> Markup {
        let g = &self.geo;
        let tl = self.tl;
        let step = nice_step(g.span / 8.0);
        let decimals = (-(step.log10() + 1e-9).floor()).clamp(0.0, 9.0) as usize;
        let mut ticks = Vec::new();
        let mut v = 0.0;
        while ticks.len() < 40 && v <= g.span * (1.0 + 1e-9) {
            ticks.push(v);
            v += step;
        }
        // Everything placed in time goes in one group, stretched by the zoom; the hatched
        // starts and gaps are moved and resized by the script instead, to keep their slant.
        let states: Vec<(Markup, Markup)> = self.order.iter().map(|&li| self.lane_states(li)).collect();
        let rows = self.lane_rows();
        html! {
            section class="chart" {
                div class="hint" {
                    span {
                        "Hover a bar or a marker for details. Drag across the chart to zoom in; \
                         double-click to zoom out."
                    }
                    span id="zinfo" { "0 – " (fmt_t(g.span)) }
                }
                @if tl.aggregated {
                    div class="agg" {
                        (group(tl.routine_total))
                        " attempts are too many to draw one by one: each lane shows completions per time \
                         bin (height; hover for counts). Every death, and every attempt a death touched, \
                         is still drawn."
                    }
                }
                svg id="tl" viewBox={ "0 0 " (g.width) " " (g.height) } data-left=(g.left) data-pw=(g.plot_w)
                    data-span=(g.span) data-top=(g.axis_y) data-bottom=(g.bottom) role="img" aria-label="timeline" {
                    defs {
                        clipPath id="clip" {
                            rect x=(g.left - 1.0) y="0" width=(g.plot_w + 2.0) height=(g.height) {}
                        }
                        pattern id="pdown" width="5" height="5" patternUnits="userSpaceOnUse"
                            patternTransform="rotate(45)" {
                            rect width="5" height="5" fill="#fdeceb" {}
                            rect width="2" height="5" fill="#eda19a" {}
                        }
                        pattern id="pstart" width="5" height="5" patternUnits="userSpaceOnUse"
                            patternTransform="rotate(-45)" {
                            rect width="5" height="5" fill="#e6f0fb" {}
                            rect width="2" height="5" fill="#9cc3ea" {}
                        }
                    }
                    // Lane backgrounds and the pool row's frame.
                    rect class="poolbg" x=(g.left) y=(g.pool_y) width=(g.plot_w) height=(g.pool_h) {}
                    @for r in 0..self.order.len() {
                        rect class={ "lbg" (r % 2) } x="0" y=(g.lanes_y + r as f64 * g.lane_h) width=(g.width)
                            height=(g.lane_h) {}
                    }
                    // Time axis.
                    g id="ax" {
                        @for v in &ticks {
                            @let x = Fixed(g.left + g.x(*v), 2);
                            line x1=(x) x2=(x) y1=(g.axis_y) y2=(g.bottom) {}
                            text x=(x) y=(g.axis_y - 8.0) { (Fixed(*v, decimals)) }
                        }
                    }
                    text class="unit" x=(g.left - 28.0) y=(g.axis_y - 8.0) { "seconds" }
                    g clip-path="url(#clip)" {
                        g id="zr" {
                            @for (hatched, _) in &states { (hatched) }
                        }
                        g id="zg" transform={ "translate(" (g.left) " 0)" } {
                            @for (_, lives) in &states { (lives) }
                            (self.pool())
                            @if tl.aggregated { (self.bands()) }
                            @for &li in &self.order { (self.bars(li, &rows[li])) }
                            (self.free_strips())
                        }
                        // Markers keep their shape under the zoom: the script moves them instead.
                        @for e in tl.exits.iter().filter(|e| !e.clean) { (self.death_marker(e)) }
                        @for p in &tl.poisons { (self.poison_marker(p)) }
                    }
                    // Labels over the lanes' left margin.
                    text class="lab" x=(g.left - 10.0) y=(g.pool_y + g.pool_h / 2.0 + 4.0) { "workers ready" }
                    @for (r, &li) in self.order.iter().enumerate() {
                        @let lane = &tl.lanes[li];
                        @let y = g.lanes_y + r as f64 * g.lane_h;
                        @let big = g.lane_h >= 30.0;
                        text class="lab" x=(g.left - 10.0)
                            y=(Fixed(y + if big { g.lane_h / 2.0 - 1.0 } else { g.lane_h / 2.0 + 4.0 }, 1)) {
                            title {
                                "worker slot " (lane.worker) ": " (lane.lives.len()) " process"
                                (if lane.lives.len() == 1 { "" } else { "es" }) ", " (lane.deaths) " death"
                                (plural(lane.deaths))
                            }
                            "worker " (lane.worker)
                        }
                        @if big && lane.deaths > 0 {
                            text class="lab sublab" x=(g.left - 10.0) y=(Fixed(y + g.lane_h / 2.0 + 11.0, 1)) {
                                (group(lane.deaths)) " death" (plural(lane.deaths))
                            }
                        }
                    }
                    rect id="sel" x="0" y=(g.axis_y) width="0" height=(g.bottom - g.axis_y) style="display:none" {}
                }
            }
        }
    }

    /// The workers-ready step line over the lanes.
    fn pool(&self) -> Markup {
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
        html! {
            path class="pool" d=(d) {
                title {
                    "workers ready over time (of " (self.tl.lanes.len())
                    " slots): dips are deaths until the replacement is ready"
                }
            }
        }
    }

    fn lane_y(&self, li: usize) -> f64 {
        self.geo.lanes_y + self.rank[li] as f64 * self.geo.lane_h
    }

    /// Process lives, starts and dead gaps of one lane: the hatched starts and dead gaps
    /// (first, moved and resized by the script so that the hatching keeps its slant) and the
    /// process lives (second, stretched by the zoom).
    fn lane_states(&self, li: usize) -> (Markup, Markup) {
        let g = &self.geo;
        let lane = &self.tl.lanes[li];
        let y = Fixed(self.lane_y(li) + 1.5, 1);
        let h = Fixed(g.lane_h - 3.0, 1);
        // (class, from, to, tooltip) of each hatched span; (from, to, tooltip) of each life.
        let mut hatched: Vec<(&str, f64, f64, String)> = Vec::new();
        let mut lives: Vec<(f64, f64, String)> = Vec::new();
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
                let tip = format!("worker {} (pid {}) starting: ready in {spawn}", lane.worker, life.pid);
                hatched.push(("starting", x0, x1, tip));
            }
            let tip = format!(
                "worker {} (pid {})\nready at {} (spawn took {spawn})\n{ended}",
                lane.worker,
                life.pid,
                fmt_t(life.ready)
            );
            lives.push((x1, x2, tip));
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
            hatched.push(("down", g.x(down.from), g.x(to), tip));
        }
        let hatched = html! {
            @for (cls, x0, x1, tip) in &hatched {
                rect class=(cls) x=(Fixed(g.left + x0, 3)) y=(y) width=(Fixed((x1 - x0).max(0.0), 3)) height=(h) {
                    (self.tip(tip))
                }
            }
        };
        let lives = html! {
            @for (x1, x2, tip) in &lives {
                rect class="life" x=(Fixed(*x1, 3)) y=(y) width=(Fixed((x2 - x1).max(0.0), 3)) height=(h) {
                    (self.tip(tip))
                }
            }
        };
        (hatched, lives)
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

    fn bars(&self, li: usize, rows: &LaneRows<'_>) -> Markup {
        let g = &self.geo;
        let (top, height) = self.bar_band(li);
        let rh = height / rows.rows as f64;
        let bar_h = Fixed((rh - if rows.rows > 1 { 0.6 } else { 0.0 }).max(1.0), 1);
        let worker = self.tl.lanes[li].worker;
        html! {
            @for &(b, row) in &rows.bars {
                @let x0 = g.x(b.start);
                // A zero width hides a rect entirely; the stroke gives it a pixel at any zoom.
                @let w = (g.x(b.end) - x0).max(0.001);
                @let (cls, what) = self.bar_kind(b);
                rect class={ "b " (cls) } x=(Fixed(x0, 3)) y=(Fixed(top + row as f64 * rh, 1)) width=(Fixed(w, 3))
                    height=(bar_h) {
                    title {
                        (Text(&b.id)) " · attempt "
                        @if b.attempt > 0 { (b.attempt) } @else { "?" }
                        " · worker " (worker) "\n" (Text(&what))
                        @match b.ms {
                            Some(ms) => { " · " (fmt_ms(ms)) }
                            None => { " · " (fmt_ms((b.end - b.start) * 1e3)) " until " (fmt_t(b.end)) }
                        }
                        @if let Some(peak) = b.peak_rss { " · peak " (crate::engine::cause::size(peak)) " resident" }
                        "\nfrom " (fmt_t(b.start))
                    }
                }
            }
        }
    }

    /// A bar's class and what became of the attempt, for its tooltip.
    fn bar_kind(&self, b: &Bar) -> (&'static str, Cow<'static, str>) {
        match b.kind {
            BarKind::Ok if b.attempt > 1 => ("ok retry", "ok".into()),
            BarKind::Ok => ("ok", "ok".into()),
            BarKind::Failed => ("failed", "failed".into()),
            BarKind::FailedRetried => ("failedretried", "failed; retried (ends where the retry was dispatched)".into()),
            BarKind::Crashed(e) => ("crashed", format!("crashed its worker: {}; requeued", self.cause_text(e)).into()),
            BarKind::Quarantined(Some(e)) => {
                ("quarantined", format!("crashed its worker: {}; quarantined", self.cause_text(e)).into())
            }
            BarKind::Quarantined(None) => ("quarantined", "quarantined".into()),
            BarKind::Unfinished => ("unfinished", "dispatched; no end in the log".into()),
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
    fn bands(&self) -> Markup {
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
        html! {
            @for (li, bins) in grouped.iter().enumerate() {
                @let (top, height) = self.bar_band(li);
                @let bottom = top + height;
                @for (i, b) in bins.iter().enumerate() {
                    @let n = u64::from(b.ok) + u64::from(b.failed);
                    @if n > 0 {
                        @let t0 = i as f64 * w;
                        @let t1 = ((i + 1) as f64 * w).min(tl.t_end.max(t0));
                        @let x0 = Fixed(g.x(t0), 3);
                        @let bw = Fixed((g.x(t1) - g.x(t0)).max(0.001), 3);
                        @let h_ok = f64::from(b.ok) / peak as f64 * height;
                        @let h_failed = f64::from(b.failed) / peak as f64 * height;
                        g class="bin" {
                            title {
                                "worker " (tl.lanes[li].worker) " · " (fmt_t(t0)) "–" (fmt_t(t1)) "\n"
                                (group(u64::from(b.ok))) " ok · " (group(u64::from(b.failed))) " failed · "
                                (Fixed(n as f64 / w, 0)) "/s · busy " (Fixed(b.busy / w * 100.0, 0)) "%"
                            }
                            @if b.ok > 0 {
                                rect class="ok" x=(x0) y=(Fixed(bottom - h_ok, 2)) width=(bw) height=(Fixed(h_ok, 2)) {}
                            }
                            @if b.failed > 0 {
                                rect class="failed" x=(x0) y=(Fixed(bottom - h_ok - h_failed, 2)) width=(bw)
                                    height=(Fixed(h_failed.max(0.5), 2)) {}
                            }
                        }
                    }
                }
            }
        }
    }

    /// One thin strip per death for the tasks only queued at the worker, returned unrun.
    fn free_strips(&self) -> Markup {
        let g = &self.geo;
        let sh = Fixed((g.lane_h * 0.12).round().max(2.0) - 1.0, 1);
        let free_names = |e: &Exit| {
            let mut names = e.free_ids.clone();
            if e.free > names.len() as u64 {
                names.push(format!("and {} more", group(e.free - names.len() as u64)));
            }
            names.join(", ")
        };
        html! {
            @for e in self.tl.exits.iter().filter(|e| e.free > 0) {
                @let (top, height) = self.bar_band(e.lane);
                @let x0 = g.x(e.free_since);
                @let tip = format!(
                    "{} task{} queued at worker {} (pid {}) when it {} at {}; requeued, not charged:\n{}",
                    group(e.free),
                    plural(e.free),
                    self.tl.lanes[e.lane].worker,
                    e.pid,
                    if e.clean { "exited" } else { "died" },
                    fmt_t(e.t),
                    free_names(e)
                );
                rect class="strip" x=(Fixed(x0, 3)) y=(Fixed(top + height + 1.0, 1))
                    width=(Fixed((g.x(e.t) - x0).max(0.001), 3)) height=(sh) {
                    (self.tip(&tip))
                }
            }
        }
    }

    fn death_marker(&self, e: &Exit) -> Markup {
        let g = &self.geo;
        let lane = &self.tl.lanes[e.lane];
        let y = self.lane_y(e.lane);
        let x = g.x(e.t);
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
        let d = format!("M0,{:.1}V{:.1}M-5,{:.1}h10l-5,8z", y + 2.0, y + g.lane_h - 1.0, y - 4.0);
        html! {
            g class={ "mk d c-" (cause_class(e.cause.as_ref())) }
                transform={ "translate(" (Fixed(g.left + x, 3)) " 0)" } {
                title { (Text(&tip)) }
                path d=(d) {}
            }
        }
    }

    fn poison_marker(&self, p: &Poison) -> Markup {
        let g = &self.geo;
        let y = self.lane_y(p.lane) + g.lane_h / 2.0;
        let x = g.x(p.t);
        let tip = format!(
            "shared state poisoned at {} on worker {}\nby task {}: {}",
            fmt_t(p.t),
            self.tl.lanes[p.lane].worker,
            p.id,
            p.message
        );
        html! {
            g class="mk poison" transform={ "translate(" (Fixed(g.left + x, 3)) " 0)" } {
                title { (Text(&tip)) }
                path d={ "M0," (Fixed(y - 6.0, 1)) "l6,6l-6,6l-6,-6z" } {}
            }
        }
    }

    fn notes(&self) -> Markup {
        let tl = self.tl;
        let mut notes = tl.notes.clone();
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
        html! {
            @if !notes.is_empty() {
                section class="notes" {
                    ul {
                        @for n in &notes { li { (Text(n)) } }
                    }
                }
                "\n"
            }
        }
    }

    fn deaths_table(&self) -> Markup {
        let tl = self.tl;
        let deaths: Vec<(usize, &Exit)> = tl.exits.iter().enumerate().filter(|(_, e)| !e.clean).collect();
        html! {
            @if !deaths.is_empty() {
                section {
                    h2 { "Worker deaths " small { (group(deaths.len() as u64)) } }
                    table {
                        thead {
                            tr {
                                @for h in [
                                    "time", "worker", "pid", "cause", "details", "blamed task", "requeued",
                                    "back after", "backoff",
                                ] {
                                    th { (h) }
                                }
                            }
                        }
                        tbody {
                            @for (i, e) in deaths.iter().take(MAX_TABLE_ROWS) {
                                @let cls = cause_class(e.cause.as_ref());
                                @let quarantined = |id: &String| {
                                    e.charged.iter().find(|h| &h.id == id).is_some_and(|h| h.quarantined)
                                };
                                tr id={ "row-" (i) } {
                                    td class="num" { (fmt_t(e.t)) }
                                    td class="num" { (tl.lanes[e.lane].worker) }
                                    td class="num" { (e.pid) }
                                    td { i class={ "sw c-" (cls) } {} (cls) }
                                    td {
                                        @if let Some(c) = &e.cause { (Text(&c.to_string())) }
                                    }
                                    td {
                                        @match &e.blamed {
                                            Some(id) => {
                                                code { (Text(id)) }
                                                @if quarantined(id) {
                                                    " " span class="tag q" { "quarantined" }
                                                }
                                            }
                                            None => { "—" }
                                        }
                                    }
                                    td class="num" { (e.charged.len()) " charged, " (group(e.free)) " free" }
                                    td class="num" {
                                        @match e.recovered {
                                            Some(r) => { (fmt_ms((r - e.t) * 1e3)) }
                                            None => { "—" }
                                        }
                                    }
                                    td class="num" {
                                        @match e.backoff_ms {
                                            Some(b) => { (fmt_ms(b)) }
                                            None => { "—" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if deaths.len() > MAX_TABLE_ROWS {
                        p class="more" {
                            "First " (MAX_TABLE_ROWS) " of " (group(deaths.len() as u64))
                            " deaths; every one is marked on the timeline."
                        }
                    }
                }
                "\n"
            }
        }
    }

    fn tasks_table(&self) -> Markup {
        let tl = self.tl;
        let mut tasks: Vec<(&String, &Hist)> = tl.hist.iter().collect();
        tasks.sort_by(|a, b| a.1.first.total_cmp(&b.1.first).then_with(|| a.0.cmp(b.0)));
        html! {
            @if !tasks.is_empty() {
                section {
                    h2 { "Tasks that crashed a worker " small { (group(tasks.len() as u64)) } }
                    table {
                        thead {
                            tr {
                                @for h in ["task", "first crash", "crashes", "causes", "outcome"] { th { (h) } }
                            }
                        }
                        tbody {
                            @for (id, h) in tasks.iter().take(MAX_TABLE_ROWS) {
                                tr {
                                    td { code { (Text(id)) } }
                                    td class="num" { (fmt_t(h.first)) }
                                    td class="num" { (group(h.crashes)) }
                                    td {
                                        @for (i, c) in h.causes.iter().enumerate() {
                                            @if i > 0 { ", " }
                                            (Text(c))
                                        }
                                    }
                                    td {
                                        @match h.outcome {
                                            Fate::Pending => { span class="tag u" { "no end in the log" } }
                                            Fate::Finished(Status::Ok, a) => {
                                                span class="tag ok" { "ok" } " on attempt " (a)
                                            }
                                            Fate::Finished(Status::Failed, a) => {
                                                span class="tag f" { "failed" } " on attempt " (a)
                                            }
                                            Fate::Finished(Status::Quarantined, a) | Fate::Quarantined(a) => {
                                                span class="tag q" { "quarantined" } " after " (a) " attempts"
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if tasks.len() > MAX_TABLE_ROWS {
                        p class="more" { "First " (MAX_TABLE_ROWS) " of " (group(tasks.len() as u64)) " tasks." }
                    }
                }
                "\n"
            }
        }
    }
}

pub(super) fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

const CSS: &str = include_str!("style.css");

/// Drag to zoom, double-click to reset: the time group is stretched, markers are moved so that
/// they keep their shape, and the ticks are redrawn. Without it the page is the full run.
const JS: &str = include_str!("zoom.js");
