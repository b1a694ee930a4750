//! The timeline model of a run: what happened on each worker slot (process lives, attempts
//! as bars, deaths, gaps), built one event at a time with memory bounded however long the run
//! (throughput bins once attempts are too many to draw one by one).

use std::collections::{BTreeMap, HashMap};

use shared::record::{CrashCause, Status};

use crate::engine::SlotIndex;
use crate::engine::lifecycle::{RunEvent, Timed};

/// How a task attempt ended, as its `task_finished` event says.
pub(super) struct Ended {
    pub status: Status,
    pub ms: f64,
    pub peak_rss: Option<u64>,
}

/// Routine attempts (ok or failed) drawn one bar each. Above this the page would pass ~3 MB and
/// the bars would be far narrower than a pixel anyway, so lanes switch to throughput bands;
/// deaths and the attempts they touched are always drawn one by one.
pub const MAX_BARS: usize = 20_000;
/// Bins a lane's throughput band is collected in while streaming; the width doubles as the run
/// grows, so memory stays fixed however long the run is.
pub(super) const MAX_BINS: usize = 1024;
/// Worker slots drawn; events for slots beyond are counted but not drawn.
pub(super) const MAX_LANES: usize = 512;
/// Rows of each table; every death stays on the timeline regardless.
pub(super) const MAX_TABLE_ROWS: usize = 500;
/// User strings (task ids, panic messages) are cut to this many characters in the page.
pub(super) const ID_CHARS: usize = 120;
pub(super) const TEXT_CHARS: usize = 400;
/// Free-requeued task ids named per death, crashes remembered per task.
pub(super) const NAMED: usize = 8;

/// What a bar stands for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum BarKind {
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
pub(super) struct Bar {
    pub(super) lane: usize,
    pub(super) start: f64,
    pub(super) end: f64,
    pub(super) id: String,
    /// From 1; 0 where the log does not say.
    pub(super) attempt: u32,
    /// Time in the worker, where the worker reported it.
    pub(super) ms: Option<f64>,
    /// The peak resident memory of its worker's tree, where the log has it.
    pub(super) peak_rss: Option<u64>,
    pub(super) kind: BarKind,
}

/// An attempt dispatched and not yet ended.
#[derive(Debug, Clone, Copy)]
pub(super) struct Open {
    pub(super) lane: usize,
    pub(super) dispatched: f64,
    pub(super) attempt: u32,
}

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum End {
    Clean,
    Died,
    /// The slot started another process without the log saying this one ended.
    Replaced,
}

/// One worker process in a lane.
#[derive(Debug, Clone)]
pub(super) struct Life {
    pub(super) pid: u32,
    pub(super) spawned: f64,
    pub(super) ready: f64,
    pub(super) ended: Option<(f64, End)>,
}

/// A lane's dead time after a death, until its replacement was spawned.
#[derive(Debug, Clone)]
pub(super) struct Down {
    pub(super) from: f64,
    /// When the replacement was spawned; `None` if it never was.
    pub(super) to: Option<f64>,
    pub(super) backoff_ms: Option<f64>,
}

/// Throughput of a lane in one time bin.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Bin {
    pub(super) ok: u32,
    pub(super) failed: u32,
    /// Seconds of attempt time inside the bin.
    pub(super) busy: f64,
}

/// One worker slot.
#[derive(Debug, Clone)]
pub(super) struct Lane {
    pub(super) worker: SlotIndex,
    pub(super) lives: Vec<Life>,
    pub(super) downs: Vec<Down>,
    /// Where the worker's previous attempt ended: a worker runs its queue in order, so the
    /// next one started no earlier.
    pub(super) cursor: f64,
    pub(super) last_exit: Option<usize>,
    /// A death whose replacement is not ready yet.
    pub(super) pending_death: Option<usize>,
    pub(super) deaths: u64,
    pub(super) bins: Vec<Bin>,
}

/// An attempt charged with its worker's death.
#[derive(Debug, Clone)]
pub(super) struct Hit {
    pub(super) id: String,
    pub(super) attempt: u32,
    pub(super) quarantined: bool,
}

/// A worker process ending.
#[derive(Debug, Clone)]
pub(super) struct Exit {
    pub(super) t: f64,
    pub(super) lane: usize,
    pub(super) pid: u32,
    pub(super) clean: bool,
    pub(super) cause: Option<CrashCause>,
    pub(super) blamed: Option<String>,
    pub(super) charged: Vec<Hit>,
    pub(super) free: u64,
    pub(super) free_ids: Vec<String>,
    /// When the earliest free-requeued task was dispatched there.
    pub(super) free_since: f64,
    pub(super) backoff_ms: Option<f64>,
    /// When the replacement was ready.
    pub(super) recovered: Option<f64>,
}

/// A thread poisoning the shared state (thread mode).
#[derive(Debug, Clone)]
pub(super) struct Poison {
    pub(super) t: f64,
    pub(super) lane: usize,
    pub(super) id: String,
    pub(super) message: String,
}

/// How a task that crashed a worker ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Fate {
    Pending,
    Finished(Status, u32),
    Quarantined(u32),
}

/// A task that was executing when a worker died.
#[derive(Debug, Clone)]
pub(super) struct Hist {
    pub(super) first: f64,
    pub(super) crashes: u64,
    pub(super) causes: Vec<String>,
    pub(super) outcome: Fate,
}

/// Totals for the header.
#[derive(Debug, Clone, Default)]
pub(super) struct Counts {
    pub(super) events: u64,
    pub(super) ok: u64,
    pub(super) failed: u64,
    pub(super) quarantined: u64,
    pub(super) attempts: u64,
    pub(super) retries: u64,
    pub(super) processes: u64,
    pub(super) restarts: u64,
    pub(super) backoff_ms: f64,
    pub(super) deaths: BTreeMap<String, u64>,
    pub(super) signals: BTreeMap<String, u64>,
    pub(super) requeued_charged: u64,
    pub(super) requeued_free: u64,
    pub(super) poisoned: u64,
    /// Workers retired between tasks (recycling), by reason: not deaths.
    pub(super) retired: BTreeMap<String, u64>,
    pub(super) shutdown: Option<(f64, String)>,
    pub(super) unknown_lane_events: u64,
}

/// A run's timeline built one event at a time, in memory bounded by the worker slots, the
/// deaths and the attempts in flight (not by the number of tasks). [`render`](super::render) and
/// [`render_file`](super::render_file) are the usual way in; this is for a caller that has the events as a stream.
#[derive(Debug, Clone)]
pub struct Timeline {
    pub(super) lanes: Vec<Lane>,
    pub(super) lane_of: HashMap<SlotIndex, usize>,
    pub(super) open: HashMap<String, Open>,
    /// Ok and failed attempts, until there are more than [`MAX_BARS`].
    pub(super) routine: Vec<Bar>,
    pub(super) routine_total: u64,
    pub(super) aggregated: bool,
    /// Attempts a death touched, and attempts left open: always drawn.
    pub(super) kept: Vec<Bar>,
    pub(super) exits: Vec<Exit>,
    pub(super) poisons: Vec<Poison>,
    pub(super) hist: HashMap<String, Hist>,
    /// Workers ready: +1 when one is ready, -1 when one ends.
    pub(super) pool: Vec<(f64, i32)>,
    pub(super) bin_w: f64,
    pub(super) counts: Counts,
    pub(super) last_t: f64,
    pub(super) t_end: f64,
    pub(super) notes: Vec<String>,
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
            RunEvent::TaskStarted { id, worker, attempt, label } => {
                self.task_started(t, id, &shown(id, label.as_ref()), *worker, *attempt)
            }
            RunEvent::TaskFinished { id, worker, status, ms, label, peak_rss } => self.task_finished(
                t,
                id,
                &shown(id, label.as_ref()),
                *worker,
                Ended { status: *status, ms: *ms, peak_rss: *peak_rss },
            ),
            RunEvent::WorkerExited { worker, pid, exit, task } => {
                self.worker_exited(t, *worker, *pid, exit.clean(), exit.cause(), task.as_deref())
            }
            RunEvent::TaskRequeued { id, worker, charged, label, .. } => {
                self.task_requeued(t, id, &shown(id, label.as_ref()), *worker, *charged)
            }
            RunEvent::TaskQuarantined { id, attempts, label } => {
                self.task_quarantined(t, id, &shown(id, label.as_ref()), *attempts)
            }
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
            RunEvent::WorkerRetired { why, .. } => {
                let reason = match why {
                    crate::engine::lifecycle::Retirement::Tasks { .. } => "task limit",
                    crate::engine::lifecycle::Retirement::Memory { .. } => "memory limit",
                };
                *self.counts.retired.entry(reason.to_string()).or_default() += 1;
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
    pub(super) fn lane(&mut self, worker: SlotIndex) -> Option<usize> {
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

    pub(super) fn worker_started(&mut self, t: f64, worker: SlotIndex, pid: u32, ms: f64) {
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

    /// `shown`: how the task's bars name it (its id, and what a `--cmd` task was).
    pub(super) fn task_started(&mut self, t: f64, id: &str, shown: &str, worker: SlotIndex, attempt: u32) {
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
                id: clip(shown, ID_CHARS),
                attempt: prev.attempt,
                ms: None,
                peak_rss: None,
                kind: BarKind::FailedRetried,
            });
            self.bin(prev.lane, start, t, false);
        }
    }

    pub(super) fn task_finished(&mut self, t: f64, id: &str, shown: &str, worker: SlotIndex, ended: Ended) {
        let Ended { status, ms, peak_rss } = ended;
        match status {
            Status::Ok => self.counts.ok += 1,
            Status::Failed => self.counts.failed += 1,
            Status::Quarantined => self.counts.quarantined += 1,
        }
        let open = self.open.remove(id);
        if let Some(h) = self.hist.get_mut(id) {
            h.outcome = match status {
                Status::Quarantined => Fate::Quarantined(open.map_or(0, |o| o.attempt)),
                s => Fate::Finished(s, open.map_or(0, |o| o.attempt)),
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
            id: clip(shown, ID_CHARS),
            attempt: open.map_or(0, |o| o.attempt),
            ms: Some(ms),
            peak_rss,
            kind,
        };
        self.bin(li, start, end, status == Status::Ok);
        if kind == BarKind::Quarantined(None) {
            self.kept.push(bar);
        } else {
            self.routine(bar);
        }
    }

    pub(super) fn worker_exited(
        &mut self,
        t: f64,
        worker: SlotIndex,
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

    pub(super) fn task_requeued(&mut self, t: f64, id: &str, shown: &str, worker: SlotIndex, charged: bool) {
        let open = self.open.remove(id);
        let Some(li) = open.map(|o| o.lane).or_else(|| self.lane(worker)) else { return };
        let exit = self.lanes[li].last_exit;
        if charged {
            self.counts.requeued_charged += 1;
            self.record_crash(t, id, exit, Fate::Pending);
            if let (Some(o), Some(e)) = (open, exit) {
                let start = o.dispatched.max(self.lanes[li].cursor).min(t);
                self.kept.push(Bar {
                    lane: li,
                    start,
                    end: t,
                    id: clip(shown, ID_CHARS),
                    attempt: o.attempt,
                    ms: None,
                    peak_rss: None,
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

    pub(super) fn task_quarantined(&mut self, t: f64, id: &str, shown: &str, attempts: u32) {
        self.counts.quarantined += 1;
        let open = self.open.remove(id);
        let exit = open.and_then(|o| self.lanes[o.lane].last_exit);
        self.record_crash(t, id, exit, Fate::Quarantined(attempts));
        if let Some(o) = open {
            let start = o.dispatched.max(self.lanes[o.lane].cursor).min(t);
            self.kept.push(Bar {
                lane: o.lane,
                start,
                end: t,
                id: clip(shown, ID_CHARS),
                attempt: o.attempt,
                ms: None,
                peak_rss: None,
                kind: BarKind::Quarantined(exit),
            });
            if let Some(e) = exit {
                self.exits[e].charged.push(Hit { id: clip(id, ID_CHARS), attempt: o.attempt, quarantined: true });
            }
        }
    }

    /// Remembers that `id` was charged with the death `exit`.
    pub(super) fn record_crash(&mut self, t: f64, id: &str, exit: Option<usize>, outcome: Fate) {
        let cause = exit.and_then(|e| self.exits[e].cause.as_ref()).map_or_else(|| "unknown".to_string(), cause_short);
        let h = self.hist.entry(clip(id, ID_CHARS)).or_insert(Hist {
            first: t,
            crashes: 0,
            causes: Vec::new(),
            outcome: Fate::Pending,
        });
        h.crashes += 1;
        if h.causes.len() < NAMED {
            h.causes.push(cause);
        }
        h.outcome = outcome;
    }

    /// Keeps a routine bar, or drops them all once there are too many to draw one by one.
    pub(super) fn routine(&mut self, bar: Bar) {
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
    pub(super) fn bin(&mut self, lane: usize, start: f64, end: f64, ok: bool) {
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
}

pub(super) fn finite_ms(ms: f64) -> f64 {
    if ms.is_finite() { ms.max(0.0) } else { 0.0 }
}

/// At most `max` characters of `s`.
/// A task as its bars name it: the id, and for a `--cmd` task its `#seq` and input.
fn shown(id: &str, label: Option<&crate::engine::lifecycle::TaskLabel>) -> String {
    match label {
        Some(l) => format!("{id} #{} {}", l.seq, l.input),
        None => id.to_string(),
    }
}

pub(super) fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A cause with its user strings cut to size.
pub(super) fn clip_cause(c: &CrashCause) -> CrashCause {
    match c {
        CrashCause::Signal { signal, core, detail } => CrashCause::Signal {
            signal: clip(signal, 24),
            core: *core,
            detail: detail.as_deref().map(|d| clip(d, TEXT_CHARS)),
        },
        CrashCause::Panic { message } => CrashCause::Panic { message: clip(message, TEXT_CHARS) },
        CrashCause::Protocol { detail } => CrashCause::Protocol { detail: clip(detail, TEXT_CHARS) },
        CrashCause::Oom { detail, limit, peak } => {
            CrashCause::Oom { detail: clip(detail, TEXT_CHARS), limit: *limit, peak: *peak }
        }
        other => other.clone(),
    }
}

/// A cause in a word or two: the signal's name, `exit 3`, `panic`.
pub(super) fn cause_short(c: &CrashCause) -> String {
    match c {
        CrashCause::Signal { signal, .. } => signal.clone(),
        CrashCause::Exit { code } => format!("exit {code}"),
        other => other.name().to_string(),
    }
}
