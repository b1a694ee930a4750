//! The [`Engine`]: the run's logical state and its one place of change.

use std::collections::VecDeque;
use std::sync::Arc;

use nix::sys::signal::Signal;
use shared::proto::{Assignment, Outcome, PanicReport};
use shared::record::{Crash, SkippedRecord, Status};
use shared::shm::PageState;
use shared::task::FaultKind;

use crate::engine::blame::{self, Death, Mishap, Next, Verdict};
use crate::engine::inject::Inject;
use crate::engine::lifecycle::{Retirement, RunEvent, TaskLabel, WorkerExit};
use crate::engine::restart::{Life, RestartTracker};
use crate::engine::timeout::{self, RunTimes};
use crate::engine::{
    Action, Counts, Ending, EngineConfig, Event, Finished, Interrupt, Job, KillReason, MAX_INFLIGHT_PER_THREAD, Poison,
    Probe, RestartLimit, Seq, Sink, SlotIndex, SlotState, SpawnError, StopReason,
};
use crate::input::error::InputError;

/// Worker deaths logged at warning level before the rest go to info.
const LOGGED_DEATHS: u64 = 20;

#[derive(Debug)]
struct Task {
    job: Job,
    /// Its place among the jobs this engine was given, from 0: the order `-k` keeps.
    order: u64,
    /// Attempts charged (deaths while executing, failures retried).
    charged: u32,
    /// The factor its next attempt's memory limit is multiplied by (`--retry oom=N:xF`).
    memory_factor: u32,
    /// Its caller cancelled it while a worker had it: it ends cancelled instead of retried.
    cancelled: bool,
    /// Its crashes and skipped records, once it has any.
    past: Option<Box<Past>>,
}

/// What earlier attempts left on a task: rare (a crash), so kept out of line. Inline, its
/// two vectors made a task 120 bytes, moved four times on its way to a worker and back
/// (the slot's queue took it through `memcpy`, 29 instructions a task, callgrind, no-ops).
#[derive(Debug, Default)]
struct Past {
    crashes: Vec<Crash>,
    /// Records that crashed an attempt and are skipped by the next ones
    /// (`--skip-bad-records`), in the order found.
    skipped: Vec<SkippedRecord>,
}

impl Task {
    /// A task not yet attempted.
    fn new(job: Job, order: u64) -> Self {
        Self { job, order, charged: 0, memory_factor: 1, cancelled: false, past: None }
    }

    /// Its crashes, oldest first.
    fn crashes(&self) -> &[Crash] {
        self.past.as_ref().map_or(&[], |p| &p.crashes)
    }

    /// Its skipped records, in the order found.
    fn skipped(&self) -> &[SkippedRecord] {
        self.past.as_ref().map_or(&[], |p| &p.skipped)
    }

    /// Its past, made on first use.
    fn past_mut(&mut self) -> &mut Past {
        self.past.get_or_insert_with(Box::default)
    }

    /// Its crashes and skipped records, for its final record.
    fn take_past(&mut self) -> (Vec<Crash>, Vec<SkippedRecord>) {
        self.past.take().map_or_else(Default::default, |p| (p.crashes, p.skipped))
    }

    /// The indices of the records to skip, sorted for the handler's lookup.
    #[inline]
    fn skip_list(&self) -> Vec<u64> {
        // Nearly every task has none: no collect, no sort.
        if self.past.as_ref().is_none_or(|p| p.skipped.is_empty()) { Vec::new() } else { self.sorted_skips() }
    }

    #[cold]
    fn sorted_skips(&self) -> Vec<u64> {
        let mut list: Vec<u64> = self.skipped().iter().map(|r| r.index).collect();
        list.sort_unstable();
        list
    }
}

#[derive(Debug)]
struct InFlight {
    seq: Seq,
    task: Task,
    attempt: u32,
    fault: Option<FaultKind>,
}

/// One worker slot.
#[derive(Debug)]
pub struct Slot {
    /// Where its worker is in its life.
    pub state: SlotState,
    inflight: VecDeque<InFlight>,
    /// `inflight[..sent]` have been handed to the worker.
    sent: usize,
    /// Mean task duration on this slot, once measured.
    ewma_ns: Option<f64>,
    /// Most tasks to keep queued here, whatever the pace: halved by each death that threw
    /// queued tasks back, grown by one per task finished (additive increase, multiplicative
    /// decrease). A healthy worker soon queues its full budget; one that keeps dying does
    /// not take thousands of tasks down with it each time.
    cap: usize,
    /// Wasted deaths (no good done, no task charged) since the last healthy worker: the
    /// count the restart backoff grows with.
    failures: u32,
    /// Tasks finished by the current worker.
    completed: u64,
    /// Tasks handed to the current worker.
    assigned: u64,
    /// `completed` when the worker's resident size was last read.
    measured_at: u64,
    /// Why the current worker is to be retired once its queue is empty; it takes no more.
    retiring: Option<Retirement>,
    panic: Option<PanicReport>,
}

impl Slot {
    /// Tasks assigned to the slot's worker and not finished.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// The first task handed to the slot's worker and not finished: the one it runs (of a
    /// worker with one task thread).
    pub fn current(&self) -> Option<&crate::engine::Job> {
        (self.sent > 0).then(|| self.inflight.front().map(|f| &f.task.job)).flatten()
    }
}

/// Where the run is in its life, with what each stage needs: whether input may still come
/// while it runs; why it stops and until when running tasks may finish while it drains; why
/// it stopped once it has.
#[derive(Debug, Clone)]
enum Phase {
    /// Handing out tasks.
    Running {
        /// More input may come.
        input_open: bool,
    },
    /// Starting nothing new; running tasks finish until `deadline` (none: they all may), then
    /// the workers are stopped.
    Draining {
        /// Why.
        reason: StopReason,
        /// When the rest is killed; 0: at once.
        deadline: Option<u64>,
    },
    /// Every worker is stopped.
    Done {
        /// Why the run stopped.
        reason: StopReason,
    },
}

impl Phase {
    fn is_running(&self) -> bool {
        matches!(self, Phase::Running { .. })
    }
}

/// The state machine. See the module documentation.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    slots: Vec<Slot>,
    retry: VecDeque<Task>,
    fresh: VecDeque<Task>,
    phase: Phase,
    next_seq: u64,
    /// Jobs given so far (the next one's `order`).
    admitted: u64,
    restarts: RestartTracker,
    counts: Counts,
    t0: u64,
    /// Times the whole run was stopped (SIGTSTP, SIGSTOP of the job, a suspend): when each
    /// pause ended and how long it was. A task's timeout does not count them.
    pauses: Vec<(u64, u64)>,
    /// Run times of the tasks that succeeded, for `--timeout N%`.
    run_times: RunTimes,
    /// The relative timeout as of a count of successes: the median is read again only when
    /// another task has succeeded, not at every deadline check of every slot.
    timeout_cache: std::cell::Cell<(u64, Option<u64>)>,
}

const MS: f64 = 1_000_000.0;

impl Engine {
    /// A run starting at `now`; every slot starts its first worker on the first tick.
    pub fn new(cfg: EngineConfig, now: u64) -> Self {
        let slots = (0..cfg.workers.max(1))
            .map(|_| Slot {
                state: SlotState::Waiting { until: now, backoff_ns: None },
                inflight: VecDeque::new(),
                sent: 0,
                ewma_ns: None,
                cap: usize::MAX,
                failures: 0,
                completed: 0,
                assigned: 0,
                measured_at: 0,
                retiring: None,
                panic: None,
            })
            .collect();
        let restarts = RestartTracker::new(cfg.restart, cfg.seed, cfg.workers.max(1));
        Self {
            cfg,
            slots,
            retry: VecDeque::new(),
            fresh: VecDeque::new(),
            phase: Phase::Running { input_open: true },
            next_seq: 1,
            admitted: 0,
            restarts,
            counts: Counts::default(),
            t0: now,
            pauses: Vec::new(),
            run_times: RunTimes::default(),
            timeout_cache: std::cell::Cell::new((0, None)),
        }
    }

    /// The slots.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// Running totals.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Tasks waiting for a worker.
    pub fn queued(&self) -> usize {
        self.retry.len() + self.fresh.len()
    }

    /// Tasks in flight on all workers.
    pub fn running(&self) -> usize {
        self.slots.iter().map(|s| s.inflight.len()).sum()
    }

    /// Every task taken in and not concluded, with the attempts charged to it and its
    /// crashes: once a stopped run is done, the tasks the stop left behind.
    pub fn unfinished(&self) -> impl Iterator<Item = (&str, u32, &[Crash])> {
        let held = self.slots.iter().flat_map(|s| s.inflight.iter().map(|f| &f.task));
        held.chain(self.retry.iter()).chain(self.fresh.iter()).map(|t| (t.job.id(), t.charged, t.crashes()))
    }

    /// Why the run stopped or is stopping.
    pub fn stop_reason(&self) -> Option<&StopReason> {
        match &self.phase {
            Phase::Running { .. } => None,
            Phase::Draining { reason, .. } | Phase::Done { reason } => Some(reason),
        }
    }

    /// True once every worker is gone and nothing remains to do.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done { .. })
    }

    /// Whether the run still takes input.
    pub fn is_accepting(&self) -> bool {
        matches!(self.phase, Phase::Running { input_open: true })
    }

    /// Seconds since the run started.
    pub fn secs(&self, now: u64) -> f64 {
        now.saturating_sub(self.t0) as f64 / 1e9
    }

    fn emit(&self, sink: &mut dyn Sink, now: u64, ev: impl FnOnce() -> RunEvent) {
        if sink.wants_events() {
            sink.event(self.secs(now), ev());
        }
    }

    /// How many more jobs the engine would like queued.
    pub fn wants_input(&self) -> usize {
        if !self.is_accepting() {
            return 0;
        }
        let total: usize = self.slots.iter().map(|s| self.target(s)).sum();
        (total * 2).max(64).saturating_sub(self.queued())
    }

    /// Queues new jobs and hands them out to idle workers at once. A job over the input limit
    /// fails here, unrun: no worker could be sent it.
    pub fn push_jobs(
        &mut self,
        jobs: impl IntoIterator<Item = Job>,
        now: u64,
        sink: &mut dyn Sink,
        out: &mut Vec<Action>,
    ) {
        let before = self.fresh.len();
        for job in jobs {
            let order = self.admitted;
            self.admitted += 1;
            let (len, max) = (job.payload_len(), self.cfg.max_task_bytes);
            if len > max {
                self.counts.failed += 1;
                let message =
                    format!("task input of {len} bytes is over the limit of {max} bytes a task may have; not run");
                let ending = Ending::Failed(shared::proto::TaskError::new(message));
                sink.finished(Finished {
                    id: job.id(),
                    label: job.label(),
                    order,
                    seq: None,
                    attempts: 0,
                    micros: None,
                    ending,
                    crashes: Vec::new(),
                    rule: None,
                    memory_factor: 1,
                    peak_rss: None,
                    leaked: None,
                    skipped: Vec::new(),
                });
                continue;
            }
            self.fresh.push_back(Task::new(job, order));
        }
        if self.fresh.len() > before {
            self.settle(now, sink, out);
        }
    }

    /// Cancels the task `id`; false when no such task is unfinished. One still waiting for a
    /// worker, or queued at one and not yet sent, ends at once, failed as cancelled. One its
    /// worker has: when it is the first there (executing, or next), the worker is killed and
    /// replaced at once, which charges nobody and sends its other tasks back uncharged; one
    /// further back ends cancelled if its worker dies before reporting it, else with the
    /// result it reports.
    pub fn cancel(&mut self, id: &str, now: u64, sink: &mut dyn Sink, out: &mut Vec<Action>) -> bool {
        let queued = |q: &VecDeque<Task>| q.iter().position(|t| t.job.id() == id);
        if let Some(i) = queued(&self.retry) {
            let task = self.retry.remove(i).expect("position is in range");
            self.end_cancelled(task, SlotIndex(0), now, sink);
            self.settle(now, sink, out);
            return true;
        }
        if let Some(i) = queued(&self.fresh) {
            let task = self.fresh.remove(i).expect("position is in range");
            self.end_cancelled(task, SlotIndex(0), now, sink);
            self.settle(now, sink, out);
            return true;
        }
        for slot in SlotIndex::all(self.slots.len()) {
            let s = &mut self.slots[slot];
            let Some(pos) = s.inflight.iter().position(|f| f.task.job.id() == id) else { continue };
            if pos >= s.sent {
                let f = s.inflight.remove(pos).expect("position is in range");
                self.end_cancelled(f.task, slot, now, sink);
            } else {
                s.inflight[pos].task.cancelled = true;
                if pos == 0 {
                    self.terminate(slot, KillReason::Cancel, true, now, out);
                }
            }
            self.settle(now, sink, out);
            return true;
        }
        false
    }

    fn end_cancelled(&mut self, mut task: Task, slot: SlotIndex, now: u64, sink: &mut dyn Sink) {
        self.counts.failed += 1;
        let (crashes, skipped) = task.take_past();
        let id = task.job.id();
        self.emit(sink, now, || RunEvent::TaskFinished {
            id: id.to_string(),
            worker: slot,
            status: Status::Failed,
            ms: 0.0,
            label: TaskLabel::of(task.job.label()),
            peak_rss: None,
        });
        sink.finished(Finished {
            id,
            label: task.job.label(),
            order: task.order,
            seq: None,
            attempts: task.charged,
            micros: None,
            ending: Ending::Failed(shared::proto::TaskError::new("cancelled")),
            crashes,
            rule: None,
            memory_factor: task.memory_factor,
            peak_rss: None,
            leaked: None,
            skipped,
        });
    }

    /// No more input will come.
    pub fn input_ended(&mut self, now: u64, sink: &mut dyn Sink, out: &mut Vec<Action>) {
        self.close_input();
        self.settle(now, sink, out);
    }

    /// The input broke: what is queued is not run (it stays queued, for
    /// [`unfinished`](Self::unfinished)); running tasks finish; the run ends with a bad-input
    /// error.
    pub fn input_failed(&mut self, error: Arc<InputError>, now: u64, sink: &mut dyn Sink, out: &mut Vec<Action>) {
        self.begin_drain(StopReason::BadInput(error), None);
        self.settle(now, sink, out);
    }

    /// Thread mode: the shared state was poisoned; run nothing more, let running tasks end.
    pub fn poisoned(&mut self, poison: Poison, now: u64, sink: &mut dyn Sink, out: &mut Vec<Action>) {
        self.begin_drain(StopReason::Poisoned(poison), None);
        self.settle(now, sink, out);
    }

    /// The run cannot go on (a worker speaks another protocol version, the results cannot
    /// be written): stop now.
    pub fn fatal(&mut self, why: StopReason, now: u64, sink: &mut dyn Sink, out: &mut Vec<Action>) {
        if !self.is_done() {
            self.give_up(why, now);
            self.settle(now, sink, out);
        }
    }

    /// The loop performed `Action::Spawn`: the worker has `pid`, or could not be started.
    pub fn spawned(
        &mut self,
        slot: SlotIndex,
        result: Result<u32, SpawnError>,
        now: u64,
        sink: &mut dyn Sink,
        out: &mut Vec<Action>,
    ) {
        let backoff = match self.slots[slot].state {
            SlotState::Waiting { backoff_ns, .. } => backoff_ns,
            _ => None,
        };
        match result {
            Ok(pid) => {
                self.slots[slot].state = SlotState::Starting { pid, since: now };
                let s = &mut self.slots[slot];
                (s.completed, s.assigned, s.measured_at, s.retiring, s.panic) = (0, 0, 0, None, None);
                if let Some(b) = backoff {
                    self.counts.restarts += 1;
                    self.emit(sink, now, || RunEvent::WorkerRestarted { worker: slot, backoff_ms: b as f64 / MS });
                }
            }
            Err(e) => {
                let what = worker::ErrorChain(&e).to_string();
                let live = self.slots.iter().filter(|s| s.state.pid().is_some()).count();
                if e.is_process_limit() && live > 0 && self.phase.is_running() {
                    // The system allows no more: go on with the workers it allowed, say so
                    // once, and leave this slot empty rather than count a crash loop.
                    if self.counts.slots_retired == 0 {
                        eprintln!(
                            "bulkhead: worker {slot}: {what}: the system allows no more processes{}; \
                             running with {live} of {} workers",
                            process_limit_note(),
                            self.slots.len()
                        );
                    }
                    self.counts.slots_retired += 1;
                    self.slots[slot].state = SlotState::Stopped;
                } else {
                    log::error!("worker {slot}: {what}");
                    self.after_death(slot, Life::Wasted, now, &what);
                }
            }
        }
        self.settle(now, sink, out);
    }

    /// The slot's unsent assignments, at most `max`, now marked sent.
    pub fn take_unsent(&mut self, slot: SlotIndex, max: usize) -> impl ExactSizeIterator<Item = Assignment<'_>> {
        let s = &mut self.slots[slot];
        let start = s.sent;
        let end = s.inflight.len().min(start.saturating_add(max));
        s.sent = end;
        s.inflight.range(start..end).map(|f| Assignment {
            seq: f.seq.0,
            attempt: f.attempt,
            fault: f.fault,
            payload: f.task.job.payload(),
            skip: f.task.skip_list(),
        })
    }

    /// How many of the slot's next unsent assignments, at most `max`, fit in `bytes` when
    /// each costs its payload plus `overhead`; at least one while any is unsent (a task alone
    /// is within the input limit, which is below a frame's).
    pub fn unsent_fitting(&self, slot: SlotIndex, max: usize, bytes: usize, overhead: usize) -> usize {
        let s = &self.slots[slot];
        // A plain loop over the deque's two halves: its range iterator with `take_while` was
        // 43 instructions a task (callgrind, no-ops), a quarter of the assignment's encoding.
        let (front, back) = s.inflight.as_slices();
        let unsent = front
            .get(s.sent..)
            .unwrap_or_default()
            .iter()
            .chain(back.get(s.sent.saturating_sub(front.len())..).unwrap_or_default());
        let (mut total, mut n) = (0usize, 0usize);
        for f in unsent {
            total += f.task.job.payload_len() + overhead;
            if n == max || total > bytes {
                break;
            }
            n += 1;
        }
        n.max(usize::from(s.sent < s.inflight.len()))
    }

    /// The seq of the next task to send to `slot`'s worker when none sent before is still
    /// in flight there (the worker is idle): whatever it writes from now on is that task's.
    pub fn next_unsent_alone(&self, slot: SlotIndex) -> Option<Seq> {
        let s = &self.slots[slot];
        if s.sent == 0 { s.inflight.front().map(|f| f.seq) } else { None }
    }

    /// Whether the slot has assignments not yet sent.
    pub fn has_unsent(&self, slot: SlotIndex) -> bool {
        self.slots[slot].sent < self.slots[slot].inflight.len()
    }

    /// The resident memory that the worker of `slot` and its process tree may use together
    /// while each of the tasks `seqs` runs there: `--memory-limit`, times the task's memory
    /// factor (raised after an `oom` by a `--retry oom=N:xF` rule). Empty without a limit.
    /// One pass over the slot's tasks: a batch sent at once is thousands of them, and a
    /// search per task made a million no-ops four times slower.
    pub fn task_memory_limits(&self, slot: SlotIndex, seqs: &[Seq]) -> Vec<(Seq, u64)> {
        let Some(limit) = self.cfg.memory_limit else { return Vec::new() };
        let wanted: std::collections::HashSet<Seq> = seqs.iter().copied().collect();
        self.slots[slot]
            .inflight
            .iter()
            .filter(|f| wanted.contains(&f.seq))
            .map(|f| (f.seq, limit.saturating_mul(u64::from(f.task.memory_factor))))
            .collect()
    }

    /// The id of an in-flight task, for displays.
    pub fn inflight_id(&self, slot: SlotIndex, seq: Seq) -> Option<&str> {
        self.slots[slot].inflight.iter().find(|f| f.seq == seq).map(|f| f.task.job.id())
    }

    /// Checks deadlines: starts due workers, times out tasks, escalates kills.
    pub fn tick(&mut self, now: u64, probe: &dyn Probe, sink: &mut dyn Sink, out: &mut Vec<Action>) {
        self.on_tick(now, probe, out);
        self.settle(now, sink, out);
    }

    /// Handles one event.
    pub fn handle(&mut self, ev: Event<'_>, now: u64, sink: &mut dyn Sink, out: &mut Vec<Action>) {
        match ev {
            Event::Ready { slot } => self.on_ready(slot, now, sink, out),
            Event::Outcomes { slot, outcomes } => self.on_outcomes(slot, outcomes, now, sink, out),
            Event::Heartbeat { slot } => self.heard(slot, now),
            Event::Panic { slot, report } => {
                self.heard(slot, now);
                self.slots[slot].panic = Some(report);
            }
            Event::ChannelEnded { slot, detail } => self.on_channel_ended(slot, detail, now),
            Event::Reaped { slot, pid, exit, executing, records, culprit, stderr_tail } => {
                let death =
                    Death { pid, exit, executing: &executing, records: &records, culprit, stderr_tail: &stderr_tail };
                self.on_reaped(slot, death, now, sink)
            }
            Event::OverMemory { slot, pid, limit, peak } => {
                if self.slots[slot].state.pid() == Some(pid) {
                    log::warn!(
                        "worker {slot} (pid {pid}) and its tasks' processes used {} resident, past the memory limit of {}: killed",
                        super::cause::size(peak),
                        super::cause::size(limit)
                    );
                    self.terminate(slot, KillReason::Memory { limit, peak }, true, now, out);
                }
            }
            Event::Interrupt(i) => self.on_interrupt(i, now, out),
            Event::Paused { ns } => self.on_paused(ns, now),
        }
        self.settle(now, sink, out);
    }

    fn heard(&mut self, slot: SlotIndex, now: u64) {
        if let SlotState::Serving { last_heard, .. } = &mut self.slots[slot].state {
            // Never back in time: a pause moved it to the pause's end, and a word read in
            // the same round may carry the time from before it.
            *last_heard = (*last_heard).max(now);
        }
    }

    fn on_ready(&mut self, slot: SlotIndex, now: u64, sink: &mut dyn Sink, out: &mut Vec<Action>) {
        match self.slots[slot].state {
            SlotState::Starting { pid, since } => {
                self.slots[slot].state = SlotState::Serving { pid, since: now, last_heard: now };
                self.emit(sink, now, || RunEvent::WorkerStarted {
                    worker: slot,
                    pid,
                    ms: now.saturating_sub(since) as f64 / MS,
                });
            }
            SlotState::Serving { .. } => self.protocol_error(slot, "sent a second ready".into(), now, out),
            _ => {}
        }
    }

    fn on_outcomes(
        &mut self,
        slot: SlotIndex,
        outcomes: &[Outcome<'_>],
        now: u64,
        sink: &mut dyn Sink,
        out: &mut Vec<Action>,
    ) {
        self.heard(slot, now);
        let want_events = sink.wants_events();
        for o in outcomes {
            let s = &mut self.slots[slot];
            let pos = if s.inflight.front().is_some_and(|f| f.seq == Seq(o.seq)) {
                0
            } else {
                match s.inflight.iter().position(|f| f.seq == Seq(o.seq)) {
                    Some(p) if p < s.sent => p,
                    _ => {
                        self.protocol_error(
                            slot,
                            format!("sent a result for task seq {} it was not given", o.seq),
                            now,
                            out,
                        );
                        return;
                    }
                }
            };
            // Results come in order: the first is nearly always the one, and a pop costs
            // less than a remove.
            let f = if pos == 0 { s.inflight.pop_front() } else { s.inflight.remove(pos) };
            let mut f = f.expect("position is in range");
            s.sent -= 1;
            let ns = o.micros as f64 * 1000.0;
            s.ewma_ns = Some(match s.ewma_ns {
                Some(e) => e * 0.9 + ns * 0.1,
                None => ns,
            });
            s.completed += 1;
            s.cap = s.cap.saturating_add(1);
            s.failures = 0;
            let micros = Some(o.micros);
            let ms = o.micros as f64 / 1000.0;
            let (status, ending, rule) = match &o.result {
                Ok(bytes) => {
                    self.counts.ok += 1;
                    // Only `--timeout N%` reads the times (their log2 was 53 instructions a
                    // task, 2% of the event loop's, on no-ops).
                    if self.cfg.timeout_percent.is_some() {
                        self.run_times.add(o.micros);
                    }
                    (Status::Ok, Ending::Ok(bytes), None)
                }
                Err(e) => {
                    let mishap = Mishap::Failed { exit: e.exit };
                    let d = blame::decide(&self.cfg, f.task.job.command, mishap, f.attempt, f.task.memory_factor);
                    if let Next::Retry { memory_factor } = d.next {
                        log::info!(
                            "task {} failed on attempt {} ({}); retrying ({})",
                            f.task.job.id(),
                            f.attempt,
                            e.message,
                            d.rule
                        );
                        let mut task = f.task;
                        task.charged += 1;
                        task.memory_factor = memory_factor;
                        self.retry.push_back(task);
                        continue;
                    }
                    self.counts.failed += 1;
                    (Status::Failed, Ending::Failed(e.clone()), Some(d.rule))
                }
            };
            if want_events {
                let id = f.task.job.id().to_string();
                let label = TaskLabel::of(f.task.job.label());
                let peak_rss = (o.peak_rss > 0).then_some(o.peak_rss);
                sink.event(self.secs(now), RunEvent::TaskFinished { id, worker: slot, status, ms, label, peak_rss });
            }
            let (crashes, skipped) = f.task.take_past();
            sink.finished(Finished {
                id: f.task.job.id(),
                label: f.task.job.label(),
                order: f.task.order,
                seq: Some(f.seq),
                attempts: f.attempt,
                micros,
                ending,
                crashes,
                rule,
                memory_factor: f.task.memory_factor,
                peak_rss: (o.peak_rss > 0).then_some(o.peak_rss),
                leaked: (o.leaked > 0).then_some(o.leaked),
                skipped,
            });
        }
    }

    fn on_channel_ended(&mut self, slot: SlotIndex, detail: Option<String>, now: u64) {
        match self.slots[slot].state {
            SlotState::Starting { pid, .. } | SlotState::Serving { pid, .. } => {
                let detail = detail.unwrap_or_else(|| "closed its connection while alive".to_string());
                self.slots[slot].state = SlotState::Closing { pid, since: now, detail };
            }
            // Already ending: the close is the death we are waiting for.
            _ => {}
        }
    }

    fn protocol_error(&mut self, slot: SlotIndex, detail: String, now: u64, out: &mut Vec<Action>) {
        log::warn!("worker {slot}: {detail}");
        self.terminate(slot, KillReason::Protocol { detail }, true, now, out);
    }

    /// Starts ending the slot's worker: SIGTERM with a grace, or SIGKILL at once.
    fn terminate(&mut self, slot: SlotIndex, reason: KillReason, hard: bool, now: u64, out: &mut Vec<Action>) {
        let s = &mut self.slots[slot];
        let Some(pid) = s.state.pid() else { return };
        if let SlotState::Terminating { kill_at, reason: current, .. } = &mut s.state {
            // Keep the first reason (a timeout stays a timeout); only escalate.
            if hard && kill_at.is_some() {
                *kill_at = None;
                out.push(Action::Kill { slot, pid, signal: Signal::SIGKILL });
            }
            // Our own polite ends give way to any other reason (a worker retiring may still
            // time out or go silent).
            if matches!(current, KillReason::Shutdown | KillReason::Retire(_))
                && !matches!(reason, KillReason::Shutdown | KillReason::Retire(_))
            {
                *current = reason;
            }
            return;
        }
        let (signal, kill_at) =
            if hard { (Signal::SIGKILL, None) } else { (Signal::SIGTERM, Some(now + self.cfg.term_grace_ns)) };
        out.push(Action::Kill { slot, pid, signal });
        s.state = SlotState::Terminating { pid, reason, kill_at };
    }

    fn on_reaped(&mut self, slot: SlotIndex, death: Death<'_>, now: u64, sink: &mut dyn Sink) {
        if self.slots[slot].state.pid() != Some(death.pid) {
            return;
        }
        let killed_for = match &self.slots[slot].state {
            SlotState::Terminating { reason, .. } => Some(reason.clone()),
            _ => None,
        };
        let panic = self.slots[slot].panic.take();
        let verdict = blame::judge(&death, killed_for.as_ref(), panic.as_ref());
        if verdict.crash {
            *self.counts.crashes.entry(verdict.cause.name()).or_default() += 1;
        }
        self.log_death(slot, death.pid, &verdict);
        let blamed_id = verdict.blamed.first().and_then(|seq| self.inflight_id(slot, *seq)).map(str::to_string);
        self.emit(sink, now, || RunEvent::WorkerExited {
            worker: slot,
            pid: death.pid,
            exit: if verdict.clean { WorkerExit::Clean } else { WorkerExit::Died(Some(verdict.cause.clone())) },
            task: blamed_id,
        });
        let charged = self.charges_a_task(slot, &verdict);
        self.settle_inflight(slot, &death, &verdict, now, sink);
        if verdict.crash {
            let life = self.life_of(slot, charged, now);
            self.after_death(slot, life, now, &verdict.cause.to_string());
        } else if let Some(KillReason::Retire(why)) = killed_for.clone()
            && self.phase.is_running()
        {
            // Recycled: replaced at once, no backoff, no restart counted against the limit.
            self.counts.retired += 1;
            log::info!("worker {slot} (pid {}) retired: {why}", death.pid);
            self.emit(sink, now, || RunEvent::WorkerRetired { worker: slot, pid: death.pid, why });
            self.slots[slot].state = SlotState::Waiting { until: now, backoff_ns: None };
        } else if killed_for == Some(KillReason::Cancel) && self.phase.is_running() {
            // Killed for its caller, not for a fault: replaced at once, no restart counted.
            self.slots[slot].state = SlotState::Waiting { until: now, backoff_ns: None };
        } else {
            // Shutdowns, drains and give-ups only happen while the run is ending.
            self.slots[slot].state = SlotState::Stopped;
        }
    }

    fn log_death(&self, slot: SlotIndex, pid: u32, verdict: &Verdict) {
        let cause = &verdict.cause;
        if verdict.crash {
            // A batch with injected faults may see thousands of deaths: the first few are
            // worth a line each, the rest are counted in the summary and the events.
            let n = self.counts.crashes_total();
            if n <= LOGGED_DEATHS {
                log::warn!("worker {slot} (pid {pid}) died: {cause}");
                if n == LOGGED_DEATHS {
                    log::warn!("further worker deaths are logged at info level (-v); the summary counts them all");
                }
            } else {
                log::info!("worker {slot} (pid {pid}) died: {cause}");
            }
        } else if !verdict.clean {
            log::info!("worker {slot} (pid {pid}) ended: {cause}");
        }
    }

    /// Carries out a verdict on the dead worker's tasks: the blamed ones are charged (and
    /// ended when out of attempts), every other one goes back to the front of the queue
    /// uncharged.
    fn settle_inflight(
        &mut self,
        slot: SlotIndex,
        death: &Death<'_>,
        verdict: &Verdict,
        now: u64,
        sink: &mut dyn Sink,
    ) {
        let (inflight, sent) = self.take_inflight(slot, death);
        let mut back = Vec::with_capacity(inflight.len());
        for (i, mut f) in inflight.into_iter().enumerate() {
            if f.task.cancelled {
                self.end_cancelled(f.task, slot, now, sink);
                continue;
            }
            let charged = i < sent && verdict.blamed.contains(&f.seq);
            if charged {
                self.charge(&mut f, death, verdict);
            }
            let mishap = Mishap::Crashed(&verdict.cause);
            let decision = charged
                .then(|| blame::decide(&self.cfg, f.task.job.command, mishap, f.task.charged, f.task.memory_factor));
            match decision {
                Some(d @ blame::Decision { next: Next::Quarantine | Next::Fail, .. }) => {
                    self.end_charged(f, d, slot, &verdict.cause, now, sink)
                }
                _ => {
                    if let Some(blame::Decision { next: Next::Retry { memory_factor }, .. }) = decision {
                        f.task.memory_factor = memory_factor;
                    }
                    self.counts.requeued += 1;
                    let (id, attempts) = (f.task.job.id(), f.task.charged);
                    let label = f.task.job.label();
                    self.emit(sink, now, || RunEvent::TaskRequeued {
                        id: id.to_string(),
                        worker: slot,
                        charged,
                        attempts,
                        label: TaskLabel::of(label),
                    });
                    back.push(f.task);
                }
            }
        }
        // Back to the front, in their order: the replacement picks them up first.
        for task in back.into_iter().rev() {
            self.retry.push_front(task);
        }
    }

    /// Takes the dead worker's tasks off its slot, with how many of them were sent to it.
    /// Those queued ahead of the executing one are credited to the slot as completed; a
    /// worker that held several gets half as many at once next time.
    fn take_inflight(&mut self, slot: SlotIndex, death: &Death<'_>) -> (Vec<InFlight>, usize) {
        let s = &mut self.slots[slot];
        let sent = s.sent;
        // Tasks queued ahead of the executing one were finished, their results unsent: the
        // worker was doing good work, and its death is no sign of a crash loop.
        if let Some(p) = death.executing.iter().filter_map(|seq| s.inflight.iter().position(|f| f.seq == *seq)).min() {
            s.completed += p as u64;
        }
        if s.inflight.len() > 1 {
            s.cap = (s.cap.min(s.inflight.len()) / 2).max(1);
        }
        s.sent = 0;
        (s.inflight.drain(..).collect(), sent)
    }

    /// Charges `f`'s attempt with the death: one attempt used, its crash kept, and (when the
    /// death blames it alone) its current record set aside.
    fn charge(&self, f: &mut InFlight, death: &Death<'_>, verdict: &Verdict) {
        f.task.charged += 1;
        f.task.past_mut().crashes.push(Crash { attempt: f.attempt, pid: death.pid, cause: verdict.cause.clone() });
        if verdict.blamed.len() == 1 {
            self.set_aside(&mut f.task, f.seq, death, &verdict.cause);
        }
    }

    /// Ends a charged task that `d` runs no more: failed (a command that timed out: its
    /// worker was killed to stop it) or quarantined; counted, its event, its record.
    fn end_charged(
        &mut self,
        mut f: InFlight,
        d: blame::Decision,
        slot: SlotIndex,
        cause: &shared::record::CrashCause,
        now: u64,
        sink: &mut dyn Sink,
    ) {
        let attempts = f.task.charged;
        let (crashes, skipped) = f.task.take_past();
        let id = f.task.job.id();
        let ending = if d.next == Next::Fail {
            self.counts.failed += 1;
            let ms = match cause {
                shared::record::CrashCause::Timeout { limit_ms } => *limit_ms as f64,
                _ => 0.0,
            };
            self.emit(sink, now, || RunEvent::TaskFinished {
                id: id.to_string(),
                worker: slot,
                status: Status::Failed,
                ms,
                label: TaskLabel::of(f.task.job.label()),
                peak_rss: None,
            });
            Ending::Failed(shared::proto::TaskError::new(cause.to_string()))
        } else {
            self.counts.quarantined += 1;
            if self.counts.quarantined <= LOGGED_DEATHS {
                log::warn!(
                    "task {id}{} quarantined after {attempts} attempts ({})",
                    crate::engine::job::describe(f.task.job.label()),
                    d.rule
                );
            }
            self.emit(sink, now, || RunEvent::TaskQuarantined {
                id: id.to_string(),
                attempts,
                label: TaskLabel::of(f.task.job.label()),
            });
            Ending::Quarantined
        };
        sink.finished(Finished {
            id,
            label: f.task.job.label(),
            order: f.task.order,
            seq: Some(f.seq),
            attempts,
            micros: None,
            ending,
            crashes,
            rule: Some(d.rule),
            memory_factor: f.task.memory_factor,
            peak_rss: None,
            leaked: None,
            skipped,
        });
    }

    /// With `--skip-bad-records`, notes the record the dead attempt of `task` (`seq`) was on,
    /// so that the next attempts skip it. The attempt is charged all the same: each skip
    /// cost a worker, and `--attempts` stays the one bound on how often a task may kill one.
    /// A record already on the list was processed although the handler was told to skip it:
    /// that crash is only a crash. Called only when the death blames one task: a hybrid
    /// worker that died with no culprit named blames every task it was running, and skipping
    /// each one's current record would drop good records of the innocent ones.
    fn set_aside(&self, task: &mut Task, seq: Seq, death: &Death<'_>, cause: &shared::record::CrashCause) {
        if !self.cfg.skip_bad_records {
            return;
        }
        let Some(&(_, index)) = death.records.iter().find(|(s, _)| *s == seq) else { return };
        if task.skipped().iter().any(|r| r.index == index) {
            return;
        }
        log::info!("task {}: record {index} crashed its worker ({cause}); skipping it from now on", task.job.id());
        task.past_mut().skipped.push(SkippedRecord { index, cause: cause.clone() });
    }

    /// Whether the death judged as `verdict` charges one of the slot's tasks an attempt (one
    /// sent to the worker, blamed, not cancelled), as `settle_inflight` will; asked before.
    fn charges_a_task(&self, slot: SlotIndex, verdict: &Verdict) -> bool {
        let s = &self.slots[slot];
        s.inflight.iter().take(s.sent).any(|f| !f.task.cancelled && verdict.blamed.contains(&f.seq))
    }

    /// What the slot's dead worker did, for the backoff (its tasks settled, so that results
    /// it finished but had not sent count). Healthy: it finished a task, or served past
    /// `healthy_after`; else charged when a task answers for its death.
    fn life_of(&self, slot: SlotIndex, charged: bool, now: u64) -> Life {
        let s = &self.slots[slot];
        let served_long = matches!(s.state, SlotState::Serving { since, .. }
            if now.saturating_sub(since) >= self.cfg.restart.healthy_after_ns);
        if s.completed > 0 || served_long {
            Life::Healthy
        } else if charged {
            Life::Charged
        } else {
            Life::Wasted
        }
    }

    /// Decides the slot's future after an unplanned death (or a failed spawn): a restart
    /// after the backoff its worker's `life` calls for, or giving up the run.
    fn after_death(&mut self, slot: SlotIndex, life: Life, now: u64, what: &str) {
        if !self.phase.is_running() {
            self.slots[slot].state = SlotState::Stopped;
            return;
        }
        if let Err(e) = self.restarts.record(now) {
            let why = StopReason::RestartLimit(RestartLimit {
                restarts: e.restarts,
                max: e.max,
                period_ns: e.period_ns,
                slot,
                what: what.to_string(),
            });
            self.slots[slot].state = SlotState::Stopped;
            self.give_up(why, now);
            return;
        }
        let backoff = self.restarts.backoff_after(life, &mut self.slots[slot].failures, slot);
        self.slots[slot].state = SlotState::Waiting { until: now + backoff, backoff_ns: Some(backoff) };
    }

    fn give_up(&mut self, why: StopReason, _now: u64) {
        log::error!("{}", worker::ErrorChain(&why));
        // Everything goes now: the settle step kills the workers at this deadline.
        self.phase = Phase::Draining { reason: why, deadline: Some(0) };
    }

    /// Starts a drain for `why`, unless the run already stops for another reason.
    fn begin_drain(&mut self, why: StopReason, deadline: Option<u64>) {
        if self.phase.is_running() {
            self.phase = Phase::Draining { reason: why, deadline };
        }
    }

    /// No more input will come (in a drain, none is read anyway).
    fn close_input(&mut self) {
        if let Phase::Running { input_open } = &mut self.phase {
            *input_open = false;
        }
    }

    fn on_interrupt(&mut self, i: Interrupt, now: u64, out: &mut Vec<Action>) {
        match &self.phase {
            Phase::Done { .. } => {}
            Phase::Draining { reason: StopReason::Interrupted(_), .. } if i == Interrupt::Int => {
                // A second Ctrl-C: no more waiting.
                log::warn!("second SIGINT: killing the workers now");
                for slot in SlotIndex::all(self.slots.len()) {
                    self.terminate(slot, KillReason::Drain, true, now, out);
                }
            }
            // A repeated SIGTERM is not an escalation: cluster engines and the scripts around
            // them deliver it more than once. The grace stands.
            Phase::Draining { reason: r, .. } if r.is_fatal() || matches!(r, StopReason::Interrupted(_)) => {
                log::info!("already stopping; a second {} changes nothing (a second SIGINT kills at once)", i.name());
            }
            Phase::Draining { reason: StopReason::Completed, .. } => {}
            // Running, or draining for a reason a signal outranks (bad input, a poison).
            Phase::Running { .. } | Phase::Draining { .. } => {
                let deadline = Some(now + self.cfg.drain_grace_ns);
                self.phase = Phase::Draining { reason: StopReason::Interrupted(i), deadline };
                log::warn!(
                    "{}: starting nothing new; running tasks have {:.1}s to finish",
                    i.name(),
                    self.cfg.drain_grace_ns as f64 / 1e9
                );
            }
        }
    }

    fn on_tick(&mut self, now: u64, probe: &dyn Probe, out: &mut Vec<Action>) {
        for slot in SlotIndex::all(self.slots.len()) {
            match self.slots[slot].state.clone() {
                SlotState::Waiting { until, .. } if now >= until && self.phase.is_running() => {
                    out.push(Action::Spawn { slot });
                }
                SlotState::Starting { since, .. } if now.saturating_sub(since) >= self.cfg.start_timeout_ns => {
                    let detail = format!("not ready {:.1}s after start", self.cfg.start_timeout_ns as f64 / 1e9);
                    self.terminate(slot, KillReason::Protocol { detail }, true, now, out);
                }
                SlotState::Serving { last_heard, .. } => {
                    // Whichever limit passed first names the death: a frozen worker misses
                    // its heartbeats before its task's timeout, a busy one keeps beating.
                    let silent = now.saturating_sub(last_heard);
                    let unresponsive_at = self.cfg.heartbeat_timeout_ns.map(|h| last_heard + h).filter(|&at| now >= at);
                    // While a signal drains the run, the grace is the only deadline: a task past
                    // its timeout is left to it, and stopped at its end uncharged, like every
                    // other (a shell task held after the job's signal killed its command, too).
                    let overdue = if self.draining_on_signal() { None } else { self.overdue(slot, now, probe) };
                    match (unresponsive_at, &overdue) {
                        (Some(at), Some((_, deadline))) if *deadline < at => self.time_out(slot, overdue, now, out),
                        (Some(_), _) => {
                            log::warn!("worker {slot}: no heartbeat for {:.1}s; killing it", silent as f64 / 1e9);
                            let reason = KillReason::Unresponsive { silent_ms: silent / 1_000_000 };
                            self.terminate(slot, reason, true, now, out);
                        }
                        (None, Some(_)) => self.time_out(slot, overdue, now, out),
                        (None, None) => self.retire_if_due(slot, now, probe, out),
                    }
                }
                SlotState::Closing { since, detail, .. } if now.saturating_sub(since) >= self.cfg.protocol_grace_ns => {
                    self.terminate(slot, KillReason::Protocol { detail }, true, now, out);
                }
                SlotState::Terminating { pid, kill_at: Some(at), reason } if now >= at => {
                    out.push(Action::Kill { slot, pid, signal: Signal::SIGKILL });
                    self.slots[slot].state = SlotState::Terminating { pid, reason, kill_at: None };
                }
                _ => {}
            }
        }
    }

    /// The run was stopped for `ns` until `now`: no worker could speak, no task could run.
    /// Every worker gets a fresh heartbeat window from now, and every deadline moves by the
    /// pause, before anyone is judged.
    fn on_paused(&mut self, ns: u64, now: u64) {
        log::warn!(
            "the supervisor was away for {:.1}s (stopped, suspended, or not called); no worker or task is charged for it",
            ns as f64 / 1e9
        );
        self.pauses.push((now, ns));
        if let Phase::Draining { deadline: Some(d), .. } = &mut self.phase
            && *d > 0
        {
            *d += ns;
        }
        for s in &mut self.slots {
            match &mut s.state {
                SlotState::Serving { last_heard, .. } => *last_heard = now,
                SlotState::Starting { since, .. } | SlotState::Closing { since, .. } => *since += ns,
                SlotState::Terminating { kill_at: Some(k), .. } => *k += ns,
                _ => {}
            }
        }
    }

    /// How far past its planned wake-up the loop must have been away to count as a pause:
    /// half the heartbeat limit (1 s of the default 2 s), since a pause that short plus a
    /// heartbeat interval already comes near the silence that condemns a worker; in thread
    /// mode, which has no heartbeats, the same 1 s (for the timeouts).
    pub fn pause_threshold_ns(&self) -> u64 {
        self.cfg.heartbeat_timeout_ns.unwrap_or(2_000_000_000) / 2
    }

    /// Time paused since `since`, to add to a deadline counted from it (a pause that ended
    /// after a task started began after it too: nothing starts during a pause).
    fn paused_since(&self, since: u64) -> u64 {
        self.pauses.iter().filter(|(end, _)| *end > since).map(|(_, ns)| ns).sum()
    }

    fn time_out(&mut self, slot: SlotIndex, overdue: Option<(KillReason, u64)>, now: u64, out: &mut Vec<Action>) {
        let Some((reason, _)) = overdue else { return };
        match &reason {
            KillReason::Timeout { seq, limit_ms } => {
                log::warn!("worker {slot}: task seq {seq} ran past {limit_ms} ms; killing its worker");
            }
            KillReason::Stalled { seq, limit_ms, progress } => log::warn!(
                "worker {slot}: task seq {seq} made no progress for {limit_ms} ms (at {progress}); killing its worker"
            ),
            _ => {}
        }
        self.terminate(slot, reason, false, now, out);
    }

    /// The first task on the slot's status page that has run past the timeout or gone
    /// without progress past the stall limit, with the reason to kill it for and the
    /// deadline it passed.
    fn overdue(&self, slot: SlotIndex, now: u64, probe: &dyn Probe) -> Option<(KillReason, u64)> {
        let timeout = self.timeout_ns();
        if timeout.is_none() && self.cfg.stall_timeout_ns.is_none() {
            return None;
        }
        let s = &self.slots[slot];
        if s.inflight.is_empty() {
            return None;
        }
        let page = probe.page(slot)?;
        page.iter().find_map(|p| {
            let PageState::Running { seq, started_ns } = p.read() else { return None };
            if let Some(limit) = timeout {
                let deadline = started_ns + limit + self.paused_since(started_ns);
                if now >= deadline {
                    return Some((KillReason::Timeout { seq: Seq(seq), limit_ms: limit / 1_000_000 }, deadline));
                }
            }
            let limit = self.cfg.stall_timeout_ns?;
            let (progress, at) = p.progress();
            // The task's start counts as progress: a new task is never judged by the last.
            let at = at.max(started_ns);
            let deadline = at + limit + self.paused_since(at);
            (now >= deadline)
                .then_some((KillReason::Stalled { seq: Seq(seq), limit_ms: limit / 1_000_000, progress }, deadline))
        })
    }

    /// The per-task limit in force now (`--timeout`, fixed or relative to the median).
    pub fn timeout_ns(&self) -> Option<u64> {
        if self.cfg.timeout_percent.is_none() {
            return self.cfg.timeout_ns;
        }
        let (count, limit) = self.timeout_cache.get();
        if count == self.run_times.count() && count > 0 {
            return limit;
        }
        let limit = timeout::limit_ns(&self.cfg, &self.run_times);
        self.timeout_cache.set((self.run_times.count(), limit));
        limit
    }

    /// A signal stopped the run: its grace is the only deadline left for running tasks.
    fn draining_on_signal(&self) -> bool {
        matches!(self.phase, Phase::Draining { reason: StopReason::Interrupted(_), .. })
    }

    /// When the loop must call back with a `Tick` at the latest.
    pub fn next_deadline(&self, now: u64, probe: &dyn Probe) -> Option<u64> {
        let mut next: Option<u64> = None;
        let mut at = |t: u64| next = Some(next.map_or(t, |n: u64| n.min(t)));
        if let Phase::Draining { deadline: Some(d), .. } = self.phase {
            at(d);
        }
        for (i, s) in SlotIndex::all(self.slots.len()).zip(&self.slots) {
            match &s.state {
                SlotState::Waiting { until, .. } if self.phase.is_running() => at(*until),
                SlotState::Starting { since, .. } => at(since + self.cfg.start_timeout_ns),
                SlotState::Serving { last_heard, .. } => {
                    if let Some(h) = self.cfg.heartbeat_timeout_ns {
                        at(last_heard + h);
                    }
                    if let Some(limit) = self.timeout_ns()
                        && !s.inflight.is_empty()
                        && !self.draining_on_signal()
                    {
                        // The earliest deadline among tasks already running; tasks that start
                        // later are seen by polling the page a few times per timeout.
                        let poll = (limit / 8).clamp(5_000_000, 100_000_000);
                        at(now + poll);
                        if let Some(page) = probe.page(i) {
                            for p in page {
                                if let PageState::Running { started_ns, .. } = p.read() {
                                    at(started_ns + limit + self.paused_since(started_ns));
                                }
                            }
                        }
                    }
                    if let Some(limit) = self.cfg.stall_timeout_ns
                        && !s.inflight.is_empty()
                        && !self.draining_on_signal()
                    {
                        // Progress moves the deadline without a frame: poll the page a few
                        // times per limit, and wake at the earliest deadline it shows now.
                        at(now + (limit / 8).clamp(5_000_000, 100_000_000));
                        if let Some(page) = probe.page(i) {
                            for p in page {
                                if let PageState::Running { started_ns, .. } = p.read() {
                                    let since = p.progress().1.max(started_ns);
                                    at(since + limit + self.paused_since(since));
                                }
                            }
                        }
                    }
                }
                SlotState::Closing { since, .. } => at(since + self.cfg.protocol_grace_ns),
                SlotState::Terminating { kill_at: Some(k), .. } => at(*k),
                _ => {}
            }
        }
        next
    }

    /// After every event: hand out work, notice completion, move a drain along.
    fn settle(&mut self, now: u64, sink: &mut dyn Sink, out: &mut Vec<Action>) {
        // A halt rule reached stops the run before anything more is handed out: `now` kills
        // the running tasks, uncharged, `soon` lets them finish.
        if let Some((rule, total)) = self.cfg.halt
            && self.phase.is_running()
            && rule.reached(&self.counts, total)
        {
            let why = StopReason::Halted(rule);
            log::info!("{why}");
            self.begin_drain(why, (rule.when == super::halt::HaltWhen::Now).then_some(now));
        }
        if let Phase::Running { input_open } = self.phase {
            self.fill(now, sink, out);
            if !input_open && self.queued() == 0 && self.running() == 0 {
                self.begin_drain(StopReason::Completed, None);
            }
        }
        if let Phase::Draining { reason, deadline } = &self.phase {
            let (hard, deadline) = (reason.is_fatal(), *deadline);
            let expired = deadline.is_some_and(|d| now >= d);
            for slot in SlotIndex::all(self.slots.len()) {
                match self.slots[slot].state {
                    SlotState::Waiting { .. } => self.slots[slot].state = SlotState::Stopped,
                    SlotState::Starting { pid, .. } | SlotState::Serving { pid, .. }
                        if !expired && self.slots[slot].inflight.is_empty() =>
                    {
                        out.push(Action::Shutdown { slot });
                        self.slots[slot].state = SlotState::Terminating {
                            pid,
                            reason: KillReason::Shutdown,
                            kill_at: Some(now + self.cfg.start_timeout_ns),
                        };
                    }
                    _ => {}
                }
                if expired && self.slots[slot].state.pid().is_some() {
                    let reason = if hard { KillReason::GiveUp } else { KillReason::Drain };
                    self.terminate(slot, reason, hard, now, out);
                }
            }
            if self.slots.iter().all(|s| s.state == SlotState::Stopped) {
                let Phase::Draining { reason, .. } =
                    std::mem::replace(&mut self.phase, Phase::Running { input_open: false })
                else {
                    unreachable!("checked above: the run is draining")
                };
                let word = reason.word().to_string();
                self.phase = Phase::Done { reason };
                self.emit(sink, now, || RunEvent::Shutdown { reason: word });
            }
        }
    }

    /// How many tasks to keep in flight on a slot: enough for `queue_budget_ns` of work at
    /// the measured pace, one per thread while the pace is unknown. Tiny tasks thus travel in
    /// big batches, and a slow task never has others stranded behind it.
    fn target(&self, s: &Slot) -> usize {
        let threads = self.cfg.threads_per_worker.max(1) as usize;
        let per_thread = match s.ewma_ns {
            None => 1,
            Some(ns) => ((self.cfg.queue_budget_ns as f64 / ns.max(50.0)) as usize).clamp(1, MAX_INFLIGHT_PER_THREAD),
        };
        (per_thread * threads).min(s.cap.max(threads))
    }

    /// Whether a slot takes more work now: serving, not retiring nor at its task limit, and
    /// down to half its target (topping up a nearly full queue would only cost small frames).
    fn has_room(&self, s: &Slot) -> bool {
        matches!(s.state, SlotState::Serving { .. })
            && s.retiring.is_none()
            && self.cfg.max_tasks_per_worker.is_none_or(|n| s.assigned < n)
            && s.inflight.len() <= self.target(s) / 2
    }

    /// Recycling: marks a serving worker for retirement when it has been handed its task
    /// limit or its resident size (read once after each task it finished, so between tasks)
    /// is above the memory limit; once its queue is empty, asks it to exit. Its replacement
    /// starts as soon as it is reaped.
    fn retire_if_due(&mut self, slot: SlotIndex, now: u64, probe: &dyn Probe, out: &mut Vec<Action>) {
        let (tasks, memory) = (self.cfg.max_tasks_per_worker, self.cfg.max_worker_memory);
        let s = &mut self.slots[slot];
        if s.retiring.is_none() {
            if let Some(n) = tasks
                && s.assigned >= n
            {
                s.retiring = Some(Retirement::Tasks { tasks: n });
            } else if let Some(limit) = memory
                && s.completed != s.measured_at
            {
                s.measured_at = s.completed;
                if let Some(resident) = probe.resident(slot)
                    && resident > limit
                {
                    s.retiring = Some(Retirement::Memory { resident_bytes: resident, limit_bytes: limit });
                }
            }
        }
        let (Some(why), SlotState::Serving { pid, .. }) = (&s.retiring, &s.state) else { return };
        if s.inflight.is_empty() && self.phase.is_running() {
            let reason = KillReason::Retire(why.clone());
            s.state = SlotState::Terminating { pid: *pid, reason, kill_at: Some(now + self.cfg.start_timeout_ns) };
            out.push(Action::Shutdown { slot });
        }
    }

    fn fill(&mut self, now: u64, sink: &mut dyn Sink, out: &mut Vec<Action>) {
        let with_room = self.slots.iter().filter(|s| self.has_room(s)).count();
        if with_room == 0 || self.queued() == 0 {
            return;
        }
        // Once the input is all here, share what is left evenly among the workers that can
        // take it, so that one does not take a long tail while another idles.
        let input_open = matches!(self.phase, Phase::Running { input_open: true });
        let fair_share = (!input_open).then(|| self.queued().div_ceil(with_room));
        let want_events = sink.wants_events();
        for slot in SlotIndex::all(self.slots.len()) {
            if !self.has_room(&self.slots[slot]) {
                continue;
            }
            let target = self.target(&self.slots[slot]);
            let have = self.slots[slot].inflight.len();
            let mut want = target - have;
            if let Some(share) = fair_share {
                want = want.min(share.max(1));
            }
            if let Some(n) = self.cfg.max_tasks_per_worker {
                want = want.min(n.saturating_sub(self.slots[slot].assigned) as usize);
            }
            let mut added = 0;
            while added < want {
                let Some(task) = self.retry.pop_front().or_else(|| self.fresh.pop_front()) else {
                    break;
                };
                let attempt = task.charged + 1;
                let fault = fault_for(&task.job, attempt, self.cfg.inject.as_ref());
                let seq = Seq(self.next_seq);
                self.next_seq += 1;
                if want_events {
                    sink.event(
                        self.secs(now),
                        RunEvent::TaskStarted {
                            id: task.job.id().to_string(),
                            worker: slot,
                            attempt,
                            label: TaskLabel::of(task.job.label()),
                        },
                    );
                }
                self.slots[slot].inflight.push_back(InFlight { seq, task, attempt, fault });
                added += 1;
            }
            if added > 0 {
                self.slots[slot].assigned += added as u64;
                self.counts.dispatched += added as u64;
                out.push(Action::Dispatch { slot });
            }
        }
    }
}

/// The user's process limit, when there is one, for the message that names why a worker could
/// not start (the other causes of EAGAIN, a cgroup's pids.max, have no such number at hand).
fn process_limit_note() -> String {
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NPROC) {
        Ok((soft, _)) if soft != nix::sys::resource::RLIM_INFINITY => {
            format!(" (ulimit -u is {soft}: processes and threads of this user)")
        }
        _ => String::new(),
    }
}

/// The fault to inject into `attempt` of `job`: its own, while its attempts last, else a roll
/// of `--inject`.
pub fn fault_for(job: &Job, attempt: u32, inject: Option<&Inject>) -> Option<FaultKind> {
    if let Some(plan) = job.fault {
        return match plan.attempts {
            Some(n) if attempt > n => None,
            _ => Some(plan.kind),
        };
    }
    inject.and_then(|i| i.roll(job.id(), attempt))
}
