//! The HTML timeline report of a run, drawn from its events stream: one self-contained page
//! (inline CSS, SVG and a little JS; nothing is fetched) with a lane per worker slot, a bar per
//! task attempt coloured by outcome, a marker at every worker death, and a summary. What the
//! events mean is defined in `events`; this file only reads them, one at a time.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use shared::record::{CrashCause, Status};

use crate::engine::lifecycle::{RunEvent, Timed};
use crate::input::lines::MAX_LINE;

/// Routine attempts (ok or failed) drawn one bar each. Above this the page would pass ~3 MB and
/// the bars would be far narrower than a pixel anyway, so lanes switch to throughput bands;
/// deaths and the attempts they touched are always drawn one by one.
pub const MAX_BARS: usize = 20_000;
/// Bins a lane's throughput band is collected in while streaming; the width doubles as the run
/// grows, so memory stays fixed however long the run is.
const MAX_BINS: usize = 1024;
/// Bins drawn over all lanes together in the aggregated view (each costs ~200 bytes).
const BIN_BUDGET: usize = 24_000;
/// Worker slots drawn; events for slots beyond are counted but not drawn.
const MAX_LANES: usize = 512;
/// Overlapping attempts in a lane (threads of a hybrid worker) get rows, up to this many.
const MAX_ROWS: usize = 6;
/// Deaths above which only death markers and attempt bars carry tooltips: each death costs
/// ~1.7 KB with all of them, ~0.9 KB without.
const COMPACT_DEATHS: usize = 4_000;
/// Rows of each table; every death stays on the timeline regardless.
const MAX_TABLE_ROWS: usize = 500;
/// User strings (task ids, panic messages) are cut to this many characters in the page.
const ID_CHARS: usize = 120;
const TEXT_CHARS: usize = 400;
/// Free-requeued task ids named per death, crashes remembered per task.
const NAMED: usize = 8;
/// Overlap two attempts in a lane may have and still share a row: the supervisor's clock and
/// the worker's own timing disagree by microseconds.
const ROW_SLACK: f64 = 50e-6;

/// Why an events file cannot be turned into a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The file cannot be opened or read.
    #[error("cannot read events file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A line that is not the last one is not an event.
    #[error("events file {path}, line {line}: not an event ({reason})")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Renders a self-contained HTML page for the events of one run.
pub fn render(events: &[Timed], title: &str) -> String {
    let mut timeline = Timeline::new();
    for e in events {
        timeline.push(e);
    }
    timeline.to_html(title)
}

/// Reads an events file (JSON lines) and renders its page. A last line cut short by a killed
/// run is skipped with a note on the page; any other bad line is an error naming it.
pub fn render_file(path: &Path, title: &str) -> Result<String, ReportError> {
    let file = File::open(path).map_err(|source| ReportError::Io { path: path.to_path_buf(), source })?;
    let mut timeline = Timeline::new();
    read_events(BufReader::with_capacity(1 << 20, file), path, &mut timeline)?;
    Ok(timeline.to_html(title))
}

/// Feeds every event of `reader` to `timeline`, one line at a time, by the torn-last-line
/// rule of [`crate::input::lines`].
fn read_events(reader: impl BufRead, path: &Path, timeline: &mut Timeline) -> Result<(), ReportError> {
    use crate::input::lines::{Judged, LineError, Lines};
    let bad = |line, reason| ReportError::BadLine { path: path.to_path_buf(), line, reason };
    let mut lines = Lines::new(reader);
    let mut torn: Option<(u64, String)> = None;
    // `run --resume --events` appends each run to the stream: a run begins after a
    // `shutdown`, or where time goes back (a run killed before its shutdown). The page draws
    // the last run, and says so.
    let (mut runs, mut run_line, mut ended, mut last_t) = (1u64, 1u64, false, f64::NEG_INFINITY);
    loop {
        let line = match lines.next_line() {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(LineError::Read { source, .. }) => return Err(ReportError::Io { path: path.to_path_buf(), source }),
            Err(e @ LineError::TooLong { .. }) => return Err(bad(e.line(), format!("longer than {MAX_LINE} bytes"))),
        };
        if line.is_blank() {
            continue;
        }
        match line.judge(parse_line(line.text)) {
            Judged::Item(Some(event)) => {
                if ended || event.t < last_t {
                    *timeline = Timeline::new();
                    runs += 1;
                    run_line = line.number;
                }
                ended = matches!(event.event, RunEvent::Shutdown { .. });
                last_t = event.t;
                timeline.push(&event)
            }
            Judged::Item(None) => {}
            Judged::Bad(reason) => return Err(bad(line.number, reason)),
            Judged::Torn(reason) => torn = Some((line.number, reason)),
        }
    }
    if runs > 1 {
        timeline.note(format!(
            "The events file holds {runs} runs, one after the other (appended by --resume); this page draws the last one, from line {run_line}."
        ));
    }
    if let Some((line, reason)) = torn {
        log::warn!("events file {}: line {line} was cut short ({reason}); skipping it", path.display());
        timeline.note(format!(
            "The last line of the events file (line {line}) was cut short, probably by a killed run, and was skipped."
        ));
    }
    Ok(())
}

/// The event names this report knows; a line naming another is from a newer bulkhead and is
/// skipped rather than refused.
const KNOWN_EVENTS: [&str; 9] = [
    "worker_started",
    "task_started",
    "task_finished",
    "worker_exited",
    "task_requeued",
    "task_quarantined",
    "worker_restarted",
    "state_poisoned",
    "shutdown",
];

/// Parses one non-blank line: `Ok(None)` for an event of an unknown kind.
fn parse_line(text: &[u8]) -> Result<Option<Timed>, String> {
    #[derive(Deserialize)]
    struct Head<'a> {
        // Required, so that a line without a time is an error, not an event from the future.
        #[allow(dead_code)]
        t: f64,
        #[serde(borrow)]
        event: Cow<'a, str>,
    }
    match serde_json::from_slice::<Timed>(text) {
        Ok(e) => Ok(Some(e)),
        Err(e) => match serde_json::from_slice::<Head>(text) {
            Ok(head) if !KNOWN_EVENTS.contains(&&*head.event) => Ok(None),
            _ => {
                // serde_json counts lines within the text, always 1 here: name the column only.
                let msg = e.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg);
                Err(format!("{msg} at column {}", e.column()))
            }
        },
    }
}

/// What a bar stands for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum BarKind {
    /// Finished ok.
    Ok,
    /// Finished with the handler's error, for good.
    Failed,
    /// Failed and was retried (the engine writes no event for it; it ends where the retry
    /// was dispatched).
    FailedRetried,
    /// Executing when its worker died; charged and requeued. Holds the exit's index.
    Crashed(usize),
    /// Executing when its worker died, and out of attempts. The exit's index, if known.
    Quarantined(Option<usize>),
    /// Dispatched, with no end in the log.
    Unfinished,
}

/// One attempt drawn as a bar.
#[derive(Debug, Clone)]
struct Bar {
    lane: usize,
    start: f64,
    end: f64,
    id: String,
    /// From 1; 0 where the log does not say.
    attempt: u32,
    /// Time in the worker, where the worker reported it.
    ms: Option<f64>,
    kind: BarKind,
}

/// An attempt dispatched and not yet ended.
#[derive(Debug, Clone, Copy)]
struct Open {
    lane: usize,
    dispatched: f64,
    attempt: u32,
}

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    Clean,
    Died,
    /// The slot started another process without the log saying this one ended.
    Replaced,
}

/// One worker process in a lane.
#[derive(Debug, Clone)]
struct Life {
    pid: u32,
    spawned: f64,
    ready: f64,
    ended: Option<(f64, End)>,
}

/// A lane's dead time after a death, until its replacement was spawned.
#[derive(Debug, Clone)]
struct Down {
    from: f64,
    /// When the replacement was spawned; `None` if it never was.
    to: Option<f64>,
    backoff_ms: Option<f64>,
}

/// Throughput of a lane in one time bin.
#[derive(Debug, Clone, Copy, Default)]
struct Bin {
    ok: u32,
    failed: u32,
    /// Seconds of attempt time inside the bin.
    busy: f64,
}

/// One worker slot.
#[derive(Debug, Clone)]
struct Lane {
    worker: usize,
    lives: Vec<Life>,
    downs: Vec<Down>,
    /// Where the worker's previous attempt ended: a worker runs its queue in order, so the
    /// next one started no earlier.
    cursor: f64,
    last_exit: Option<usize>,
    /// A death whose replacement is not ready yet.
    pending_death: Option<usize>,
    deaths: u64,
    bins: Vec<Bin>,
}

/// An attempt charged with its worker's death.
#[derive(Debug, Clone)]
struct Hit {
    id: String,
    attempt: u32,
    quarantined: bool,
}

/// A worker process ending.
#[derive(Debug, Clone)]
struct Exit {
    t: f64,
    lane: usize,
    pid: u32,
    clean: bool,
    cause: Option<CrashCause>,
    blamed: Option<String>,
    charged: Vec<Hit>,
    free: u64,
    free_ids: Vec<String>,
    /// When the earliest free-requeued task was dispatched there.
    free_since: f64,
    backoff_ms: Option<f64>,
    /// When the replacement was ready.
    recovered: Option<f64>,
}

/// A thread poisoning the shared state (thread mode).
#[derive(Debug, Clone)]
struct Poison {
    t: f64,
    lane: usize,
    id: String,
    message: String,
}

/// How a task that crashed a worker ended.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Pending,
    Finished(Status, u32),
    Quarantined(u32),
}

/// A task that was executing when a worker died.
#[derive(Debug, Clone)]
struct Hist {
    first: f64,
    crashes: u64,
    causes: Vec<String>,
    outcome: Outcome,
}

/// Totals for the header.
#[derive(Debug, Clone, Default)]
struct Counts {
    events: u64,
    ok: u64,
    failed: u64,
    quarantined: u64,
    attempts: u64,
    retries: u64,
    processes: u64,
    restarts: u64,
    backoff_ms: f64,
    deaths: BTreeMap<String, u64>,
    signals: BTreeMap<String, u64>,
    requeued_charged: u64,
    requeued_free: u64,
    poisoned: u64,
    shutdown: Option<(f64, String)>,
    unknown_lane_events: u64,
}

/// A run's timeline built one event at a time, in memory bounded by the worker slots, the
/// deaths and the attempts in flight (not by the number of tasks). [`render`] and
/// [`render_file`] are the usual way in; this is for a caller that has the events as a stream.
#[derive(Debug, Clone)]
pub struct Timeline {
    lanes: Vec<Lane>,
    lane_of: HashMap<usize, usize>,
    open: HashMap<String, Open>,
    /// Ok and failed attempts, until there are more than [`MAX_BARS`].
    routine: Vec<Bar>,
    routine_total: u64,
    aggregated: bool,
    /// Attempts a death touched, and attempts left open: always drawn.
    kept: Vec<Bar>,
    exits: Vec<Exit>,
    poisons: Vec<Poison>,
    hist: HashMap<String, Hist>,
    /// Workers ready: +1 when one is ready, -1 when one ends.
    pool: Vec<(f64, i32)>,
    bin_w: f64,
    counts: Counts,
    last_t: f64,
    t_end: f64,
    notes: Vec<String>,
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new()
    }
}

impl Timeline {
    /// An empty timeline.
    pub fn new() -> Self {
        Self {
            lanes: Vec::new(),
            lane_of: HashMap::new(),
            open: HashMap::new(),
            routine: Vec::new(),
            routine_total: 0,
            aggregated: false,
            kept: Vec::new(),
            exits: Vec::new(),
            poisons: Vec::new(),
            hist: HashMap::new(),
            pool: Vec::new(),
            bin_w: 1e-3,
            counts: Counts::default(),
            last_t: 0.0,
            t_end: 0.0,
            notes: Vec::new(),
        }
    }

    /// Adds a line shown in the page's notes (e.g. that the log was cut short).
    pub fn note(&mut self, text: String) {
        self.notes.push(text);
    }

    /// Adds the next event of the run.
    pub fn push(&mut self, timed: &Timed) {
        self.counts.events += 1;
        // Events come from our own writer, but a hand-made list may hold anything: time never
        // goes below 0 or to a non-number.
        let t = if timed.t.is_finite() { timed.t.max(0.0) } else { self.last_t };
        self.last_t = t;
        self.t_end = self.t_end.max(t);
        match &timed.event {
            RunEvent::WorkerStarted { worker, pid, ms } => self.worker_started(t, *worker, *pid, *ms),
            RunEvent::TaskStarted { id, worker, attempt } => self.task_started(t, id, *worker, *attempt),
            RunEvent::TaskFinished { id, worker, status, ms } => self.task_finished(t, id, *worker, *status, *ms),
            RunEvent::WorkerExited { worker, pid, clean, cause, task } => {
                self.worker_exited(t, *worker, *pid, *clean, cause.as_ref(), task.as_deref())
            }
            RunEvent::TaskRequeued { id, worker, charged, attempts: _ } => self.task_requeued(t, id, *worker, *charged),
            RunEvent::TaskQuarantined { id, attempts } => self.task_quarantined(t, id, *attempts),
            RunEvent::WorkerRestarted { worker, backoff_ms } => {
                let ms = finite_ms(*backoff_ms);
                self.counts.restarts += 1;
                self.counts.backoff_ms += ms;
                if let Some(lane) = self.lane(*worker) {
                    let lane = &mut self.lanes[lane];
                    if let Some(e) = lane.pending_death {
                        self.exits[e].backoff_ms = Some(ms);
                    }
                    if let Some(down) = lane.downs.last_mut()
                        && down.to.is_none()
                    {
                        down.backoff_ms = Some(ms);
                    }
                }
            }
            RunEvent::StatePoisoned { id, worker, message } => {
                self.counts.poisoned += 1;
                if let Some(lane) = self.lane(*worker)
                    && self.poisons.len() < MAX_TABLE_ROWS
                {
                    self.poisons.push(Poison { t, lane, id: clip(id, ID_CHARS), message: clip(message, TEXT_CHARS) });
                }
            }
            RunEvent::Shutdown { reason } => self.counts.shutdown = Some((t, clip(reason, ID_CHARS))),
        }
    }

    /// The lane of a worker slot, made on first sight; `None` past [`MAX_LANES`].
    fn lane(&mut self, worker: usize) -> Option<usize> {
        if let Some(&i) = self.lane_of.get(&worker) {
            return Some(i);
        }
        if self.lanes.len() >= MAX_LANES {
            self.counts.unknown_lane_events += 1;
            return None;
        }
        let i = self.lanes.len();
        self.lanes.push(Lane {
            worker,
            lives: Vec::new(),
            downs: Vec::new(),
            cursor: 0.0,
            last_exit: None,
            pending_death: None,
            deaths: 0,
            bins: Vec::new(),
        });
        self.lane_of.insert(worker, i);
        Some(i)
    }

    fn worker_started(&mut self, t: f64, worker: usize, pid: u32, ms: f64) {
        self.counts.processes += 1;
        let Some(li) = self.lane(worker) else { return };
        let lane = &mut self.lanes[li];
        let mut spawned = (t - finite_ms(ms) / 1e3).max(0.0);
        if let Some(life) = lane.lives.last_mut()
            && life.ended.is_none()
        {
            life.ended = Some((spawned.max(life.ready), End::Replaced));
            self.pool.push((spawned.max(life.ready), -1));
        }
        if let Some(down) = lane.downs.last_mut()
            && down.to.is_none()
        {
            spawned = spawned.max(down.from);
            down.to = Some(spawned);
        }
        if let Some(e) = lane.pending_death.take() {
            self.exits[e].recovered = Some(t);
        }
        lane.lives.push(Life { pid, spawned, ready: t, ended: None });
        lane.cursor = t;
        self.pool.push((t, 1));
    }

    fn task_started(&mut self, t: f64, id: &str, worker: usize, attempt: u32) {
        self.counts.attempts += 1;
        if attempt > 1 {
            self.counts.retries += 1;
        }
        let Some(lane) = self.lane(worker) else { return };
        let previous = self.open.insert(id.to_string(), Open { lane, dispatched: t, attempt });
        if let Some(prev) = previous {
            // A failure being retried: its result produced no event, and its retry is
            // dispatched as soon as the result is in, so it ended about now.
            let cursor = &mut self.lanes[prev.lane].cursor;
            let start = prev.dispatched.max(*cursor).min(t);
            *cursor = cursor.max(t);
            self.routine(Bar {
                lane: prev.lane,
                start,
                end: t,
                id: clip(id, ID_CHARS),
                attempt: prev.attempt,
                ms: None,
                kind: BarKind::FailedRetried,
            });
            self.bin(prev.lane, start, t, false);
        }
    }

    fn task_finished(&mut self, t: f64, id: &str, worker: usize, status: Status, ms: f64) {
        match status {
            Status::Ok => self.counts.ok += 1,
            Status::Failed => self.counts.failed += 1,
            Status::Quarantined => self.counts.quarantined += 1,
        }
        let open = self.open.remove(id);
        if let Some(h) = self.hist.get_mut(id) {
            h.outcome = match status {
                Status::Quarantined => Outcome::Quarantined(open.map_or(0, |o| o.attempt)),
                s => Outcome::Finished(s, open.map_or(0, |o| o.attempt)),
            };
        }
        let Some(li) = self.lane(worker) else { return };
        let ms = finite_ms(ms);
        let dur = ms / 1e3;
        let dispatched = open.map_or(t - dur, |o| o.dispatched).min(t);
        // The earliest start consistent with the worker running its queue in order; if the
        // clocks disagree with that, trust the reported time ending at the result.
        let lane = &mut self.lanes[li];
        let s0 = dispatched.max(lane.cursor);
        let (start, end) = if s0 + dur <= t { (s0, s0 + dur) } else { ((t - dur).max(dispatched), t) };
        lane.cursor = lane.cursor.max(end);
        let kind = match status {
            Status::Ok => BarKind::Ok,
            Status::Failed => BarKind::Failed,
            Status::Quarantined => BarKind::Quarantined(None),
        };
        let bar = Bar {
            lane: li,
            start,
            end,
            id: clip(id, ID_CHARS),
            attempt: open.map_or(0, |o| o.attempt),
            ms: Some(ms),
            kind,
        };
        self.bin(li, start, end, status == Status::Ok);
        if kind == BarKind::Quarantined(None) {
            self.kept.push(bar);
        } else {
            self.routine(bar);
        }
    }

    fn worker_exited(
        &mut self,
        t: f64,
        worker: usize,
        pid: u32,
        clean: bool,
        cause: Option<&CrashCause>,
        task: Option<&str>,
    ) {
        if !clean {
            let name = cause.map_or("unknown", CrashCause::name);
            *self.counts.deaths.entry(name.to_string()).or_default() += 1;
            if let Some(CrashCause::Signal { signal, .. }) = cause {
                let signal = clip(signal, 24);
                // Signal names are the kernel's, but a hand-made log may invent any number.
                if self.counts.signals.len() < 32 || self.counts.signals.contains_key(&signal) {
                    *self.counts.signals.entry(signal).or_default() += 1;
                }
            }
        }
        let Some(li) = self.lane(worker) else { return };
        let e = self.exits.len();
        self.exits.push(Exit {
            t,
            lane: li,
            pid,
            clean,
            cause: cause.map(clip_cause),
            blamed: task.map(|s| clip(s, ID_CHARS)),
            charged: Vec::new(),
            free: 0,
            free_ids: Vec::new(),
            free_since: t,
            backoff_ms: None,
            recovered: None,
        });
        let lane = &mut self.lanes[li];
        lane.last_exit = Some(e);
        if let Some(life) = lane.lives.last_mut()
            && life.ended.is_none()
        {
            life.ended = Some((t.max(life.ready), if clean { End::Clean } else { End::Died }));
            self.pool.push((t, -1));
        }
        if !clean {
            lane.deaths += 1;
            lane.pending_death = Some(e);
            // A second death before the replacement was ready extends the same gap.
            if lane.downs.last().is_none_or(|d| d.to.is_some()) {
                lane.downs.push(Down { from: t, to: None, backoff_ms: None });
            }
        }
    }

    fn task_requeued(&mut self, t: f64, id: &str, worker: usize, charged: bool) {
        let open = self.open.remove(id);
        let Some(li) = open.map(|o| o.lane).or_else(|| self.lane(worker)) else { return };
        let exit = self.lanes[li].last_exit;
        if charged {
            self.counts.requeued_charged += 1;
            self.record_crash(t, id, exit, Outcome::Pending);
            if let (Some(o), Some(e)) = (open, exit) {
                let start = o.dispatched.max(self.lanes[li].cursor).min(t);
                self.kept.push(Bar {
                    lane: li,
                    start,
                    end: t,
                    id: clip(id, ID_CHARS),
                    attempt: o.attempt,
                    ms: None,
                    kind: BarKind::Crashed(e),
                });
                self.exits[e].charged.push(Hit { id: clip(id, ID_CHARS), attempt: o.attempt, quarantined: false });
            }
        } else {
            self.counts.requeued_free += 1;
            if let Some(e) = exit {
                let x = &mut self.exits[e];
                x.free += 1;
                if let Some(o) = open {
                    x.free_since = x.free_since.min(o.dispatched);
                }
                if x.free_ids.len() < NAMED {
                    x.free_ids.push(clip(id, ID_CHARS));
                }
            }
        }
    }

    fn task_quarantined(&mut self, t: f64, id: &str, attempts: u32) {
        self.counts.quarantined += 1;
        let open = self.open.remove(id);
        let exit = open.and_then(|o| self.lanes[o.lane].last_exit);
        self.record_crash(t, id, exit, Outcome::Quarantined(attempts));
        if let Some(o) = open {
            let start = o.dispatched.max(self.lanes[o.lane].cursor).min(t);
            self.kept.push(Bar {
                lane: o.lane,
                start,
                end: t,
                id: clip(id, ID_CHARS),
                attempt: o.attempt,
                ms: None,
                kind: BarKind::Quarantined(exit),
            });
            if let Some(e) = exit {
                self.exits[e].charged.push(Hit { id: clip(id, ID_CHARS), attempt: o.attempt, quarantined: true });
            }
        }
    }

    /// Remembers that `id` was charged with the death `exit`.
    fn record_crash(&mut self, t: f64, id: &str, exit: Option<usize>, outcome: Outcome) {
        let cause = exit.and_then(|e| self.exits[e].cause.as_ref()).map_or_else(|| "unknown".to_string(), cause_short);
        let h = self.hist.entry(clip(id, ID_CHARS)).or_insert(Hist {
            first: t,
            crashes: 0,
            causes: Vec::new(),
            outcome: Outcome::Pending,
        });
        h.crashes += 1;
        if h.causes.len() < NAMED {
            h.causes.push(cause);
        }
        h.outcome = outcome;
    }

    /// Keeps a routine bar, or drops them all once there are too many to draw one by one.
    fn routine(&mut self, bar: Bar) {
        self.routine_total += 1;
        if self.aggregated {
            return;
        }
        if self.routine.len() >= MAX_BARS {
            self.aggregated = true;
            self.routine = Vec::new();
            return;
        }
        self.routine.push(bar);
    }

    /// Counts an attempt of `[start, end]` in its lane's throughput band.
    fn bin(&mut self, lane: usize, start: f64, end: f64, ok: bool) {
        while end / self.bin_w >= MAX_BINS as f64 && self.bin_w < 1e300 {
            self.bin_w *= 2.0;
            for l in &mut self.lanes {
                let merged: Vec<Bin> = l
                    .bins
                    .chunks(2)
                    .map(|c| {
                        c.iter().fold(Bin::default(), |a, b| Bin {
                            ok: a.ok.saturating_add(b.ok),
                            failed: a.failed.saturating_add(b.failed),
                            busy: a.busy + b.busy,
                        })
                    })
                    .collect();
                l.bins = merged;
            }
        }
        let w = self.bin_w;
        let idx = |t: f64| ((t / w) as usize).min(MAX_BINS - 1);
        let bins = &mut self.lanes[lane].bins;
        let last = idx(end);
        if bins.len() <= last {
            bins.resize(last + 1, Bin::default());
        }
        let b = &mut bins[last];
        if ok {
            b.ok = b.ok.saturating_add(1);
        } else {
            b.failed = b.failed.saturating_add(1);
        }
        for (i, bin) in bins.iter_mut().enumerate().take(last + 1).skip(idx(start)) {
            let lo = start.max(i as f64 * w);
            let hi = end.min((i + 1) as f64 * w);
            bin.busy += (hi - lo).max(0.0);
        }
    }

    /// The page.
    pub fn to_html(&self, title: &str) -> String {
        Page::new(self).html(title)
    }
}

fn finite_ms(ms: f64) -> f64 {
    if ms.is_finite() { ms.max(0.0) } else { 0.0 }
}

/// At most `max` characters of `s`.
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A cause with its user strings cut to size.
fn clip_cause(c: &CrashCause) -> CrashCause {
    match c {
        CrashCause::Signal { signal, core, detail } => CrashCause::Signal {
            signal: clip(signal, 24),
            core: *core,
            detail: detail.as_deref().map(|d| clip(d, TEXT_CHARS)),
        },
        CrashCause::Panic { message } => CrashCause::Panic { message: clip(message, TEXT_CHARS) },
        CrashCause::Protocol { detail } => CrashCause::Protocol { detail: clip(detail, TEXT_CHARS) },
        CrashCause::Oom { detail } => CrashCause::Oom { detail: clip(detail, TEXT_CHARS) },
        other => other.clone(),
    }
}

/// A cause in a word or two: the signal's name, `exit 3`, `panic`.
fn cause_short(c: &CrashCause) -> String {
    match c {
        CrashCause::Signal { signal, .. } => signal.clone(),
        CrashCause::Exit { code } => format!("exit {code}"),
        other => other.name().to_string(),
    }
}

/// Escapes text for HTML content and attribute values. Control characters (other than the
/// newlines tooltips use) are replaced, and `://` is broken up so that nothing in a page can
/// even look like a link to fetch.
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

/// `1234567` as `1,234,567`.
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration in milliseconds, to a sensible precision.
fn fmt_ms(ms: f64) -> String {
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
fn fmt_t(t: f64) -> String {
    if t < 10.0 { format!("{t:.4} s") } else { format!("{t:.3} s") }
}

/// A tick step of 1, 2 or 5 times a power of ten, about `raw`.
fn nice_step(raw: f64) -> f64 {
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
fn cause_class(c: Option<&CrashCause>) -> &'static str {
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
struct Geo {
    width: f64,
    left: f64,
    plot_w: f64,
    span: f64,
    axis_y: f64,
    pool_y: f64,
    pool_h: f64,
    lanes_y: f64,
    lane_h: f64,
    bottom: f64,
    height: f64,
}

impl Geo {
    fn new(lanes: usize, t_end: f64) -> Self {
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
struct LaneRows<'a> {
    bars: Vec<(&'a Bar, usize)>,
    rows: usize,
}

/// Renders a [`Timeline`].
struct Page<'a> {
    tl: &'a Timeline,
    geo: Geo,
    /// Lane indices in slot order.
    order: Vec<usize>,
    /// Display rank of each lane index.
    rank: Vec<usize>,
    /// Attempts still open at the end of the log.
    unfinished: Vec<Bar>,
    /// So many deaths that only markers and bars carry hover details, to keep the page small.
    compact: bool,
}

impl<'a> Page<'a> {
    fn new(tl: &'a Timeline) -> Self {
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
        let _ = write!(o, "<title>{title}</title>\n<style>{CSS}");
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
        let _ = write!(o, "<script>{JS}</script>\n</body></html>\n");
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
    fn lane_rows(&self) -> Vec<LaneRows<'_>> {
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

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

const CSS: &str = r#"
:root{--ok:#2e9e68;--okd:#0f5132;--failed:#e49b2c;--crashed:#d8403a;--quar:#5b0f22;--free:#8d99a8;--ink:#1f2933;--mute:#616e7c;--line:#e4e7eb}
*{box-sizing:border-box}
body{margin:0;padding:24px 28px 40px;background:#f5f7fa;color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header h1{margin:0;font-size:22px;font-weight:650;letter-spacing:-.01em;overflow-wrap:anywhere}
header .sub{margin:2px 0 16px;color:var(--mute)}
h2{font-size:16px;margin:28px 0 8px}h2 small{color:var(--mute);font-weight:400;margin-left:6px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(190px,1fr));gap:12px;margin-bottom:14px}
.card{background:#fff;border:1px solid var(--line);border-radius:10px;padding:12px 14px}
.card.wide{grid-column:span 2}
.card .k{color:var(--mute);font-size:12px;text-transform:uppercase;letter-spacing:.06em}
.card .v{font-size:26px;font-weight:650;margin:2px 0}
.card .s{color:var(--mute);font-size:13px}
.good{color:#17803d}.bad{color:#b42318}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:4px}
.chips span{white-space:nowrap}
.dot.ok{background:var(--ok)}.dot.failed{background:var(--failed)}.dot.quarantined{background:var(--quar)}
.chips{display:flex;flex-wrap:wrap;gap:4px 10px;margin:4px 0}
.chip{background:#f1f3f6;border-radius:12px;padding:1px 9px 1px 6px;color:var(--ink);font-size:13px}
.chip small{color:var(--mute)}
.sw{display:inline-block;width:14px;height:10px;border-radius:2px;margin-right:5px;vertical-align:-1px}
.legend{display:flex;flex-direction:column;gap:4px;background:#fff;border:1px solid var(--line);border-radius:10px;padding:10px 14px;font-size:13px;margin-bottom:12px}
.legend div{display:flex;flex-wrap:wrap;gap:4px 16px;align-items:center}
.legend b{width:70px;color:var(--mute);font-weight:600}
.legend span{display:inline-flex;align-items:center}
.mksw{width:14px;height:16px;margin-right:4px}
.chart{background:#fff;border:1px solid var(--line);border-radius:10px;padding:8px 10px 6px}
.hint{display:flex;justify-content:space-between;color:var(--mute);font-size:12px;padding:0 4px 4px}
.agg{background:#fff8e6;border:1px solid #f3dfa6;border-radius:6px;padding:6px 10px;margin:2px 4px 6px;font-size:13px}
svg#tl{width:100%;height:auto;display:block;user-select:none;cursor:crosshair}
svg text{font-size:11px;fill:var(--mute);font-family:inherit}
#ax line{stroke:#e9edf2;stroke-width:1}#ax text{text-anchor:middle}
.unit,.lab{text-anchor:end}.lab{fill:var(--ink);font-size:12px}.sublab{fill:#b42318;font-size:10px}
.lbg0{fill:#fff}.lbg1{fill:#f8f9fb}.poolbg{fill:#f8f9fb}
.pool{fill:#d7e6f7;stroke:#5b8fc9;stroke-width:1}
#zg *{vector-effect:non-scaling-stroke}
.life{fill:#e4edf7}.starting{fill:url(#pstart)}.down{fill:url(#pdown);stroke:#e7938b;stroke-width:1}
.starting:hover,.down:hover{stroke:#111}
.b{stroke-width:.8}
.b.ok,.sw.ok{fill:var(--ok);stroke:#23804f;background:var(--ok)}
.b.ok.retry,.sw.ok.retry{stroke:var(--okd);stroke-width:1.6;border:2px solid var(--okd)}
.b.failed,.sw.failed,.bin .failed{fill:var(--failed);stroke:var(--failed);background:var(--failed)}
.b.failedretried,.sw.failedretried{fill:#f6d49b;stroke:var(--failed);background:#f6d49b;border:1px solid var(--failed)}
.b.crashed,.sw.crashed{fill:var(--crashed);stroke:var(--crashed);background:var(--crashed)}
.b.quarantined,.sw.quarantined{fill:var(--quar);stroke:#000;stroke-width:1.4;background:var(--quar);border:1px solid #000}
.b.unfinished,.sw.unfinished{fill:#fff;stroke:#7b8794;stroke-dasharray:3 2;background:#fff;border:1px dashed #7b8794}
.bin .ok{fill:var(--ok)}
.strip,.sw.strip{fill:var(--free);background:var(--free)}
.sw.strip{height:4px;vertical-align:2px}
.sw.life{background:#e4edf7;border:1px solid #cfdced}
.sw.starting{background:repeating-linear-gradient(-45deg,#e6f0fb 0 3px,#9cc3ea 3px 5px)}
.sw.down{background:repeating-linear-gradient(45deg,#fdeceb 0 3px,#eda19a 3px 5px)}
.b:hover,.strip:hover{stroke:#111;stroke-width:1.5}
.mk.d path{stroke-width:2;stroke-linejoin:round}
.mk:hover path{stroke-width:3.5}
.poison path{fill:#fdd835;stroke:#5d4037}
#sel{fill:rgba(66,133,244,.12);stroke:#4285f4;stroke-width:1}
.mk.d path,path[class^=c-]{fill:var(--c);stroke:var(--c)}path[class^=c-]{stroke-width:1.5;stroke-linejoin:round}.sw[class*=c-]{background:var(--c)}
.notes{background:#fff8e6;border:1px solid #f3dfa6;border-radius:10px;padding:4px 14px;margin-top:12px;font-size:13px}
table{border-collapse:collapse;background:#fff;border:1px solid var(--line);border-radius:10px;overflow:hidden;width:100%;font-size:13px}
th,td{text-align:left;padding:5px 10px;border-bottom:1px solid #eef1f4;vertical-align:top}
th{background:#f8f9fb;color:var(--mute);font-weight:600;font-size:12px}
td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
td code{font-size:12px;overflow-wrap:anywhere}
.tag{display:inline-block;border-radius:4px;padding:0 6px;font-size:12px;color:#fff}
.tag.ok{background:var(--ok)}.tag.f{background:var(--failed)}.tag.q{background:var(--quar)}.tag.u{background:#7b8794}
.more{color:var(--mute);font-size:13px}
footer{margin-top:26px;color:var(--mute);font-size:12px}
"#;

/// Drag to zoom, double-click to reset: the time group is stretched, markers are moved so that
/// they keep their shape, and the ticks are redrawn. Without it the page is the full run.
const JS: &str = r#"
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
"#;

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use proptest::prelude::*;

    use super::*;

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata").join(name)
    }

    fn at(t: f64, event: RunEvent) -> Timed {
        Timed { t, event }
    }

    fn started(t: f64, worker: usize, pid: u32) -> Timed {
        at(t, RunEvent::WorkerStarted { worker, pid, ms: 2.0 })
    }

    fn dispatched(t: f64, id: &str, worker: usize, attempt: u32) -> Timed {
        at(t, RunEvent::TaskStarted { id: id.into(), worker, attempt })
    }

    fn finished(t: f64, id: &str, worker: usize, ms: f64) -> Timed {
        at(t, RunEvent::TaskFinished { id: id.into(), worker, status: Status::Ok, ms })
    }

    fn died(t: f64, worker: usize, pid: u32, cause: CrashCause, task: &str) -> Timed {
        at(t, RunEvent::WorkerExited { worker, pid, clean: false, cause: Some(cause), task: Some(task.into()) })
    }

    fn requeued(t: f64, id: &str, worker: usize, charged: bool) -> Timed {
        at(t, RunEvent::TaskRequeued { id: id.into(), worker, charged, attempts: u32::from(charged) })
    }

    fn segv() -> CrashCause {
        CrashCause::Signal { signal: "SIGSEGV".into(), core: false, detail: None }
    }

    fn count(html: &str, needle: &str) -> usize {
        html.matches(needle).count()
    }

    /// The unclean exits of an events file.
    fn deaths_in(path: &Path) -> usize {
        std::fs::read_to_string(path).unwrap().lines().filter(|l| l.contains("\"clean\":false")).count()
    }

    #[test]
    fn fixtures_have_a_lane_per_slot_and_a_marker_per_death() {
        for name in ["report-faults.jsonl", "report-kills.jsonl"] {
            let path = testdata(name);
            let html = render_file(&path, name).unwrap();
            assert_eq!(count(&html, "<rect class=\"lbg"), 2, "{name}: two worker slots");
            assert!(html.contains(">worker 0</text>") && html.contains(">worker 1</text>"), "{name}");
            assert_eq!(count(&html, "<g class=\"mk d "), deaths_in(&path), "{name}");
            assert!(html.contains("shutdown: <b class=\"good\">completed</b>"), "{name}");
            assert!(!html.contains("http://") && !html.contains("https://"), "{name}");
        }
        let html = render_file(&testdata("report-faults.jsonl"), "faults").unwrap();
        for cause in
            ["panicked: injected fault: panic", "killed by SIGKILL", "exited with status 3", "has overflowed its stack"]
        {
            assert!(html.contains(cause), "{cause}");
        }
        // The poison task crashed three times and was quarantined on the third.
        assert_eq!(count(&html, "<rect class=\"b crashed\""), 8);
        assert_eq!(count(&html, "<rect class=\"b quarantined\""), 1);
        assert!(html.contains("blamed task: poison (attempt 3, quarantined)"));
        let html = render_file(&testdata("report-kills.jsonl"), "kills").unwrap();
        for cause in [
            "timed out after 2000 ms",
            "unresponsive for 2000 ms",
            "closed its connection while alive",
            "out of memory",
        ] {
            assert!(html.contains(cause), "{cause}");
        }
    }

    #[test]
    fn an_attempt_runs_after_the_one_before_it_and_a_death_ends_the_executing_one() {
        // Prefetch: a, b and c are dispatched together; a finishes, b crashes the worker, c
        // was only queued there.
        let events = vec![
            started(0.0, 0, 10),
            dispatched(0.0, "a", 0, 1),
            dispatched(0.0, "b", 0, 1),
            dispatched(0.0, "c", 0, 1),
            finished(1.0, "a", 0, 400.0),
            died(1.5, 0, 10, segv(), "b"),
            requeued(1.5, "b", 0, true),
            requeued(1.5, "c", 0, false),
            at(1.5, RunEvent::WorkerRestarted { worker: 0, backoff_ms: 100.0 }),
            started(1.7, 0, 11),
            dispatched(1.7, "b", 0, 2),
            finished(2.0, "b", 0, 300.0),
            at(2.0, RunEvent::Shutdown { reason: "completed".into() }),
        ];
        let mut tl = Timeline::new();
        events.iter().for_each(|e| tl.push(e));
        let a = &tl.routine[0];
        assert_eq!((a.id.as_str(), a.start, a.end), ("a", 0.0, 0.4));
        // b started when a ended, not when it was dispatched.
        let b = &tl.kept[0];
        assert_eq!((b.id.as_str(), b.start, b.end, b.kind), ("b", 0.4, 1.5, BarKind::Crashed(0)));
        let death = &tl.exits[0];
        assert_eq!((death.free, death.free_ids.as_slice()), (1, &["c".to_string()][..]));
        assert_eq!(death.recovered, Some(1.7));
        assert_eq!(death.backoff_ms, Some(100.0));
        // The gap runs from the death to the spawn of the replacement (ready less its 2 ms).
        let down = &tl.lanes[0].downs[0];
        assert!(down.from == 1.5 && (down.to.unwrap() - 1.698).abs() < 1e-9);
        let html = tl.to_html("run");
        assert_eq!(count(&html, "<rect class=\"strip\""), 1);
        assert!(html.contains("replacement ready after 200.0 ms (backoff 100.0 ms)"));
        assert!(html.contains("blamed task: b (attempt 1, charged, requeued)"));
        assert_eq!(count(&html, "<rect class=\"b ok retry\""), 1);
        assert_eq!(count(&html, "<rect class=\"down\""), 1);
    }

    #[test]
    fn overlapping_attempts_get_rows_of_their_own() {
        // A hybrid worker runs two tasks at once.
        let events = [
            started(0.0, 0, 10),
            dispatched(0.0, "a", 0, 1),
            dispatched(0.0, "b", 0, 1),
            finished(1.0, "a", 0, 1000.0),
            finished(1.01, "b", 0, 1000.0),
        ];
        let mut tl = Timeline::new();
        events.iter().for_each(|e| tl.push(e));
        let page = Page::new(&tl);
        assert_eq!(page.lane_rows()[0].rows, 2);
        // Back to back, one row.
        let events = [started(0.0, 0, 10), dispatched(0.0, "a", 0, 1), dispatched(0.0, "b", 0, 1)];
        let mut tl = Timeline::new();
        events.iter().for_each(|e| tl.push(e));
        tl.push(&finished(0.5, "a", 0, 500.0));
        tl.push(&finished(1.0, "b", 0, 500.0));
        assert_eq!(Page::new(&tl).lane_rows()[0].rows, 1);
    }

    #[test]
    fn user_strings_are_escaped() {
        let id = "<script>alert(1)</script>";
        let message = "\"><img src=x onerror=alert(2)> see http://example.com/x & 'y'";
        let events = vec![
            started(0.0, 0, 10),
            dispatched(0.0, id, 0, 1),
            died(0.5, 0, 10, CrashCause::Panic { message: message.into() }, id),
            at(0.5, RunEvent::TaskQuarantined { id: id.into(), attempts: 1 }),
            at(0.6, RunEvent::StatePoisoned { id: id.into(), worker: 0, message: message.into() }),
            at(0.7, RunEvent::Shutdown { reason: "<b>".into() }),
        ];
        let html = render(&events, "</title><script>alert(3)</script>");
        assert!(!html.contains("<script>alert"), "a script got through");
        assert!(!html.contains("<img"), "an element got through");
        assert!(html.contains("shutdown: <b class=\"bad\">&lt;b&gt;</b>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&quot;&gt;&lt;img src=x"));
        assert!(!html.contains("http://") && !html.contains("https://"), "a URL-looking string survived");
        assert_eq!(count(&html, "<script>"), 1, "only the page's own script");
    }

    #[test]
    fn long_user_strings_are_cut() {
        let id = "é".repeat(10_000);
        let events = vec![started(0.0, 0, 1), dispatched(0.0, &id, 0, 1), finished(0.1, &id, 0, 1.0)];
        let html = render(&events, "long");
        assert!(html.len() < 100_000);
        assert!(html.contains(&format!("{}…", "é".repeat(ID_CHARS))));
    }

    /// A big run of `tasks` over 4 workers, with a death every `every` tasks.
    fn big_run(tasks: usize, every: usize) -> (Vec<Timed>, usize) {
        let mut events = Vec::new();
        let mut pids = [100u32, 200, 300, 400];
        for (w, pid) in pids.iter().enumerate() {
            events.push(started(0.0, w, *pid));
        }
        let mut t = [0.0f64; 4];
        let mut deaths = 0;
        for i in 0..tasks {
            let w = i % 4;
            let id = format!("t{i}");
            events.push(dispatched(t[w], &id, w, 1));
            t[w] += 0.001;
            if i % every == every - 1 {
                deaths += 1;
                events.push(died(t[w], w, pids[w], CrashCause::Timeout { limit_ms: 1 }, &id));
                events.push(requeued(t[w], &id, w, true));
                pids[w] += 1;
                t[w] += 0.002;
                events.push(started(t[w], w, pids[w]));
                events.push(dispatched(t[w], &id, w, 2));
                t[w] += 0.001;
            }
            events.push(finished(t[w], &id, w, 1.0));
        }
        events.sort_by(|a, b| a.t.total_cmp(&b.t));
        (events, deaths)
    }

    #[test]
    fn a_big_run_is_drawn_as_bands_and_keeps_every_death() {
        let (events, deaths) = big_run(60_000, 97);
        let html = render(&events, "big");
        assert!(html.contains("too many to draw one by one"));
        assert_eq!(count(&html, "<rect class=\"b ok"), 0, "no single ok bars");
        assert!(count(&html, "<g class=\"bin\">") > 100);
        assert_eq!(count(&html, "<g class=\"mk d "), deaths);
        assert_eq!(count(&html, "<rect class=\"b crashed\""), deaths);
        assert!(html.len() < 2_000_000, "{} bytes", html.len());
        // Below the line, every attempt is a bar.
        let (events, deaths) = big_run(10_000, 97);
        let html = render(&events, "small");
        assert_eq!(count(&html, "<rect class=\"b ok"), 10_000);
        assert_eq!(count(&html, "<g class=\"mk d "), deaths);
    }

    fn events_file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn a_torn_last_line_is_skipped_with_a_note() {
        let good = std::fs::read_to_string(testdata("report-kills.jsonl")).unwrap();
        let f = events_file(&format!("{good}{{\"t\":2.75,\"event\":\"task_sta"));
        let html = render_file(f.path(), "torn").unwrap();
        assert!(html.contains("(line 47) was cut short"));
        assert_eq!(count(&html, "<g class=\"mk d "), 5);
        // A last line that is whole but lacks its newline is read as usual.
        let f = events_file(good.trim_end());
        let html = render_file(f.path(), "whole").unwrap();
        assert!(!html.contains("cut short") && html.contains("shutdown: <b class=\"good\">completed"));
    }

    #[test]
    fn a_bad_line_in_the_middle_is_an_error_naming_it() {
        let text = "{\"t\":0.1,\"event\":\"worker_started\",\"worker\":0,\"pid\":1,\"ms\":1.0}\n\n\
                    {\"t\":0.2,\"event\":\"task_started\",\"id\":\"a\"}\n\
                    {\"t\":0.3,\"event\":\"shutdown\",\"reason\":\"completed\"}\n";
        let f = events_file(text);
        let err = render_file(f.path(), "bad").unwrap_err();
        assert!(matches!(err, ReportError::BadLine { line: 3, .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("line 3: not an event (missing field `worker`"), "{msg}");
        // A torn line followed by more lines is not a torn last line.
        let f = events_file("{\"t\":0.1,\"ev\n{\"t\":0.3,\"event\":\"shutdown\",\"reason\":\"completed\"}\n");
        assert!(matches!(render_file(f.path(), "x"), Err(ReportError::BadLine { line: 1, .. })));
        // So is a bad last line with its newline: the writer finished it.
        let f = events_file("{\"t\":0.3,\"event\":\"shutdown\",\"reason\":\"completed\"}\nnope\n");
        assert!(matches!(render_file(f.path(), "x"), Err(ReportError::BadLine { line: 2, .. })));
        let missing = render_file(Path::new("/nonexistent/events.jsonl"), "x").unwrap_err();
        assert!(matches!(missing, ReportError::Io { .. }));
    }

    #[test]
    fn events_of_unknown_kinds_are_skipped() {
        let f = events_file(
            "{\"t\":0.1,\"event\":\"worker_started\",\"worker\":0,\"pid\":1,\"ms\":1.0}\n\
             {\"t\":0.2,\"event\":\"from_the_future\",\"x\":1}\n\
             {\"t\":0.3,\"event\":\"shutdown\",\"reason\":\"completed\"}\n",
        );
        let html = render_file(f.path(), "future").unwrap();
        assert!(html.contains(">worker 0</text>"));
    }

    #[test]
    fn an_empty_log_still_makes_a_page() {
        let html = render(&[], "empty");
        assert!(html.contains("nothing to draw"));
        assert!(html.ends_with("</html>\n"));
    }

    #[test]
    fn the_page_fetches_nothing() {
        let html = render_file(&testdata("report-faults.jsonl"), "faults").unwrap();
        assert!(html.contains("Content-Security-Policy\" content=\"default-src 'none'"));
        for needle in ["http:", "https:", "src=", "href=", "@import", "url(http", "<link"] {
            assert!(!html.contains(needle), "{needle}");
        }
    }

    fn any_event() -> impl Strategy<Value = Timed> {
        let id = prop::sample::select(vec!["a", "b", "c", "<x>"]).prop_map(String::from);
        let worker = 0usize..4;
        let t = prop_oneof![0.0f64..10.0, Just(f64::NAN), Just(f64::INFINITY), Just(-1.0), Just(1e300)];
        let ms = prop_oneof![0.0f64..5000.0, Just(f64::NAN), Just(-3.0), Just(1e308)];
        let cause = prop_oneof![
            Just(None),
            Just(Some(CrashCause::Panic { message: "boom".into() })),
            Just(Some(CrashCause::Exit { code: 3 })),
        ];
        let event = prop_oneof![
            (worker.clone(), any::<u32>(), ms.clone()).prop_map(|(worker, pid, ms)| RunEvent::WorkerStarted {
                worker,
                pid,
                ms
            }),
            (id.clone(), worker.clone(), 0u32..4).prop_map(|(id, worker, attempt)| RunEvent::TaskStarted {
                id,
                worker,
                attempt
            }),
            (id.clone(), worker.clone(), ms.clone(), any::<bool>()).prop_map(|(id, worker, ms, ok)| {
                RunEvent::TaskFinished { id, worker, status: if ok { Status::Ok } else { Status::Failed }, ms }
            }),
            (worker.clone(), any::<bool>(), cause, prop::option::of(id.clone())).prop_map(
                |(worker, clean, cause, task)| { RunEvent::WorkerExited { worker, pid: 7, clean, cause, task } }
            ),
            (id.clone(), worker.clone(), any::<bool>()).prop_map(|(id, worker, charged)| RunEvent::TaskRequeued {
                id,
                worker,
                charged,
                attempts: 1
            }),
            (id.clone(), 0u32..4).prop_map(|(id, attempts)| RunEvent::TaskQuarantined { id, attempts }),
            (worker.clone(), ms).prop_map(|(worker, backoff_ms)| RunEvent::WorkerRestarted { worker, backoff_ms }),
            (id, worker).prop_map(|(id, worker)| RunEvent::StatePoisoned { id, worker, message: "m".into() }),
            Just(RunEvent::Shutdown { reason: "interrupted".into() }),
        ];
        (t, event).prop_map(|(t, event)| Timed { t, event })
    }

    proptest! {
        #[test]
        fn any_sequence_of_events_makes_a_page(events in prop::collection::vec(any_event(), 0..60)) {
            let html = render(&events, "fuzz");
            prop_assert!(html.ends_with("</html>\n"));
            prop_assert!(!html.contains("NaN") && !html.contains("inf\""));
        }
    }

    /// Writes pages from the fixtures to /tmp for a look in a browser:
    /// `cargo test -p bulkhead --lib report::tests::write_pages -- --ignored`; more as
    /// `REPORT_PAGES=in.jsonl=out.html,...`.
    #[test]
    #[ignore]
    fn write_pages() {
        for (name, out) in [("report-faults.jsonl", "/tmp/report.html"), ("report-kills.jsonl", "/tmp/report2.html")] {
            let html = render_file(&testdata(name), name).unwrap();
            std::fs::write(out, html).unwrap();
        }
        for pair in std::env::var("REPORT_PAGES").unwrap_or_default().split(',').filter(|p| !p.is_empty()) {
            let (input, out) = pair.split_once('=').unwrap();
            std::fs::write(out, render_file(Path::new(input), input).unwrap()).unwrap();
        }
    }
}
