//! The state machine driven by events alone: no process, socket or clock. Each test tells a
//! worker's story as the loop would report it and checks the actions and records.

use nix::sys::signal::Signal;
use serde_bytes::Bytes;
use shared::proto::{Outcome, PanicReport, TaskError};
use shared::record::CrashCause;
use shared::shm;
use shared::task::FaultKind;

use super::*;
use crate::engine::lifecycle::{RunEvent, WorkerExit};
use crate::engine::machine::fault_for;
use crate::engine::restart::RestartPolicy;

const MS: u64 = 1_000_000;

/// The workers' status pages, and the resident size every worker is read at.
struct Page(Vec<Vec<shm::PageSlot>>, Option<u64>);

impl Probe for Page {
    fn page(&self, slot: SlotIndex) -> Option<&[shm::PageSlot]> {
        self.0.get(slot.0).map(|v| v.as_slice())
    }
    fn resident(&self, _slot: SlotIndex) -> Option<u64> {
        self.1
    }
}

#[derive(Default)]
struct Recorder {
    records: Vec<(String, &'static str, u32, Vec<CrashCause>)>,
    /// The rule of each record that has one, by id.
    rules: Vec<(String, String)>,
    /// The memory factor of each record above 1, by id.
    factors: Vec<(String, u32)>,
    /// The skipped records of each record that has some, by id.
    skipped: Vec<(String, Vec<u64>)>,
    events: Vec<RunEvent>,
}

impl Sink for Recorder {
    fn finished(&mut self, f: Finished<'_>) {
        let status = match f.ending {
            Ending::Ok(_) => "ok",
            Ending::Failed(_) => "failed",
            Ending::Quarantined => "quarantined",
        };
        if f.memory_factor > 1 {
            self.factors.push((f.id.to_string(), f.memory_factor));
        }
        if let Some(rule) = f.rule {
            self.rules.push((f.id.to_string(), rule.to_string()));
        }
        if !f.skipped.is_empty() {
            self.skipped.push((f.id.to_string(), f.skipped.iter().map(|r| r.index).collect()));
        }
        self.records.push((f.id.to_string(), status, f.attempts, f.crashes.into_iter().map(|c| c.cause).collect()));
    }
    fn wants_events(&self) -> bool {
        true
    }
    fn event(&mut self, _t: f64, ev: RunEvent) {
        self.events.push(ev);
    }
}

struct Harness {
    engine: Engine,
    page: Page,
    sink: Recorder,
    now: u64,
    next_pid: u32,
}

fn slot_page() -> Vec<shm::PageSlot> {
    vec![shm::PageSlot::default()]
}

fn job(id: &str) -> Job {
    Job::new(id, &[0], None)
}

impl Harness {
    fn new(cfg: EngineConfig) -> Self {
        let workers = cfg.workers;
        Self {
            engine: Engine::new(cfg, 1_000 * MS),
            page: Page((0..workers).map(|_| slot_page()).collect(), None),
            sink: Recorder::default(),
            now: 1_000 * MS,
            next_pid: 100,
        }
    }

    fn ev(&mut self, ev: Event<'_>) -> Vec<Action> {
        let mut out = Vec::new();
        self.engine.handle(ev, self.now, &mut self.sink, &mut out);
        out
    }

    fn push(&mut self, jobs: impl IntoIterator<Item = Job>) -> Vec<Action> {
        let mut out = Vec::new();
        self.engine.push_jobs(jobs, self.now, &mut self.sink, &mut out);
        out
    }

    fn tick(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        self.engine.tick(self.now, &self.page, &mut self.sink, &mut out);
        out
    }

    /// Performs spawn actions the way the loop would, answering with fresh pids.
    fn spawn_all(&mut self, actions: &[Action]) -> Vec<Action> {
        let mut more = Vec::new();
        for a in actions {
            if let Action::Spawn { slot } = a {
                self.next_pid += 1;
                let pid = self.next_pid;
                self.engine.spawned(*slot, Ok(pid), self.now, &mut self.sink, &mut more);
            }
        }
        more
    }

    /// Ticks, spawns and readies every waiting slot.
    fn start(&mut self) -> Vec<Action> {
        let actions = self.tick();
        self.spawn_all(&actions);
        let mut out = Vec::new();
        for slot in SlotIndex::all(self.engine.slots().len()) {
            if matches!(self.engine.slots()[slot].state, SlotState::Starting { .. }) {
                out.extend(self.ev(Event::Ready { slot }));
            }
        }
        out
    }

    fn pid(&self, slot: usize) -> u32 {
        self.engine.slots()[SlotIndex(slot)].state.pid().expect("slot has a worker")
    }

    fn sent(&mut self, slot: usize) -> Vec<(u64, u32, Option<FaultKind>)> {
        self.engine.take_unsent(SlotIndex(slot), usize::MAX).map(|a| (a.seq, a.attempt, a.fault)).collect()
    }

    fn ok(&mut self, slot: usize, seqs: &[u64]) -> Vec<Action> {
        let outs: Vec<Outcome> = seqs
            .iter()
            .map(|&seq| Outcome { seq, micros: 10, result: Ok(Bytes::new(&[0])), peak_rss: 0, leaked: 0 })
            .collect();
        self.ev(Event::Outcomes { slot: SlotIndex(slot), outcomes: &outs })
    }

    fn die(&mut self, slot: usize, exit: ExitCause, executing: &[u64]) -> Vec<Action> {
        let pid = self.pid(slot);
        self.ev(Event::Reaped {
            slot: SlotIndex(slot),
            pid,
            exit,
            executing: executing.iter().copied().map(Seq).collect(),
            records: Vec::new(),
            culprit: None,
            stderr_tail: String::new(),
        })
    }

    /// The slot's unsent assignments with their skip lists.
    fn sent_skips(&mut self, slot: usize) -> Vec<(u64, u32, Vec<u64>)> {
        self.engine.take_unsent(SlotIndex(slot), usize::MAX).map(|a| (a.seq, a.attempt, a.skip)).collect()
    }

    /// The worker dies with `seq` executing on record `index` (`None`: it reported none).
    fn die_on_record(&mut self, slot: usize, seq: u64, index: Option<u64>) -> Vec<Action> {
        let pid = self.pid(slot);
        self.ev(Event::Reaped {
            slot: SlotIndex(slot),
            pid,
            exit: segv(),
            executing: vec![Seq(seq)],
            records: index.map(|i| (Seq(seq), i)).into_iter().collect(),
            culprit: None,
            stderr_tail: String::new(),
        })
    }

    fn record(&self, id: &str) -> &(String, &'static str, u32, Vec<CrashCause>) {
        self.sink.records.iter().find(|r| r.0 == id).unwrap_or_else(|| panic!("no record for {id}"))
    }
}

fn segv() -> ExitCause {
    ExitCause::Signaled { signal: Signal::SIGSEGV, core: false }
}

#[test]
fn tasks_flow_through_and_the_run_completes() {
    let mut h = Harness::new(EngineConfig { workers: 2, ..Default::default() });
    let mut out = Vec::new();
    h.push([job("a"), job("b"), job("c")]);
    h.engine.input_ended(h.now, &mut h.sink, &mut out);
    let actions = h.start();
    // Pace unknown: one task per worker.
    assert_eq!(actions, vec![Action::Dispatch { slot: SlotIndex(0) }, Action::Dispatch { slot: SlotIndex(1) }]);
    assert_eq!(h.sent(0), vec![(1, 1, None)]);
    assert_eq!(h.sent(1), vec![(2, 1, None)]);
    h.ok(0, &[1]);
    assert_eq!(h.sent(0), vec![(3, 1, None)]);
    h.ok(1, &[2]);
    // Nothing left for slot 1: it is told to shut down.
    let actions = h.ok(0, &[3]);
    assert!(actions.contains(&Action::Shutdown { slot: SlotIndex(0) }), "{actions:?}");
    assert_eq!(h.sink.records.iter().map(|r| r.1).collect::<Vec<_>>(), ["ok", "ok", "ok"]);
    for slot in 0..2 {
        h.die(slot, ExitCause::Exited(0), &[]);
    }
    assert!(h.engine.is_done());
    assert!(matches!(h.engine.stop_reason(), Some(StopReason::Completed)));
    assert!(h.sink.events.iter().any(|e| matches!(e, RunEvent::WorkerExited { exit: WorkerExit::Clean, .. })));
    assert_eq!(h.engine.counts().crashes_total(), 0);
}

#[test]
fn a_crash_charges_only_the_executing_task() {
    let mut h = Harness::new(EngineConfig { workers: 1, ..Default::default() });
    h.start();
    // Teach the slot that tasks are fast, so it prefetches many.
    h.push([job("warm")]);
    h.tick();
    let first = h.sent(0);
    h.ok(0, &[first[0].0]);
    h.push((0..10).map(|i| job(&format!("t{i}"))));
    h.tick();
    let batch = h.sent(0);
    assert_eq!(batch.len(), 10, "fast tasks are batched");
    // Results for the first three arrive; the fifth is executing when the worker dies.
    h.ok(0, &[batch[0].0, batch[1].0, batch[2].0]);
    let pid = h.pid(0);
    let actions = h.die(0, segv(), &[batch[4].0]);
    assert!(actions.is_empty(), "restart waits for the next tick: {actions:?}");
    let requeued: Vec<(String, bool)> = h
        .sink
        .events
        .iter()
        .filter_map(|e| match e {
            RunEvent::TaskRequeued { id, charged, .. } => Some((id.clone(), *charged)),
            _ => None,
        })
        .collect();
    assert_eq!(requeued.len(), 7);
    assert_eq!(requeued.iter().filter(|r| r.1).map(|r| r.0.as_str()).collect::<Vec<_>>(), ["t4"]);
    assert!(h.sink.events.iter().any(|e| matches!(e,
        RunEvent::WorkerExited { pid: p, exit: WorkerExit::Died(Some(CrashCause::Signal { .. })), task: Some(t), .. } if *p == pid && t == "t4")));
    // The first death of a slot restarts at once; the requeued tasks come first, in order.
    let actions = h.start();
    assert_eq!(actions, vec![Action::Dispatch { slot: SlotIndex(0) }]);
    let again = h.sent(0);
    assert_eq!(again[0].1, 1, "t3 was only queued: still attempt 1");
    let t4 = again.iter().find(|a| h.engine.inflight_id(SlotIndex(0), Seq(a.0)) == Some("t4")).unwrap();
    assert_eq!(t4.1, 2, "t4 was executing: attempt 2");
    assert_eq!(h.engine.counts().restarts, 1);
}

#[test]
fn poison_tasks_are_quarantined_with_every_cause() {
    let mut h = Harness::new(EngineConfig { workers: 1, attempts: 3, ..Default::default() });
    h.push([Job::new("p", &[0], Some(FaultPlan { kind: FaultKind::Panic, attempts: None }))]);
    let mut out = Vec::new();
    h.engine.input_ended(h.now, &mut h.sink, &mut out);
    for attempt in 1..=3 {
        h.start();
        let sent = h.sent(0);
        assert_eq!(sent, vec![(attempt as u64, attempt, Some(FaultKind::Panic))]);
        h.ev(Event::Panic { slot: SlotIndex(0), report: PanicReport { seq: Some(sent[0].0), message: "boom".into() } });
        h.die(0, ExitCause::Signaled { signal: Signal::SIGABRT, core: false }, &[sent[0].0]);
        h.now += 100 * MS;
    }
    let r = h.record("p");
    assert_eq!((r.1, r.2), ("quarantined", 3));
    assert_eq!(r.3, vec![CrashCause::Panic { message: "boom".into() }; 3]);
    assert!(h.engine.is_done());
}

#[test]
fn fault_attempts_limit_injection() {
    let j = Job::new("x", &[0], Some(FaultPlan { kind: FaultKind::Segv, attempts: Some(1) }));
    assert_eq!(fault_for(&j, 1, None), Some(FaultKind::Segv));
    assert_eq!(fault_for(&j, 2, None), None);
}

#[test]
fn timeouts_terminate_then_kill_and_blame_the_late_task() {
    let mut h = Harness::new(EngineConfig { workers: 1, timeout_ns: Some(2_000 * MS), ..Default::default() });
    h.push([job("slow")]);
    h.start();
    let seq = h.sent(0)[0].0;
    h.page.0[0][0].begin(seq, h.now);
    let deadline = h.engine.next_deadline(h.now, &h.page).unwrap();
    assert!(deadline <= h.now + 2_000 * MS);
    h.now += 1_000 * MS;
    h.ev(Event::Heartbeat { slot: SlotIndex(0) });
    assert!(h.tick().is_empty());
    h.now += 1_000 * MS;
    h.ev(Event::Heartbeat { slot: SlotIndex(0) });
    let pid = h.pid(0);
    assert_eq!(h.tick(), vec![Action::Kill { slot: SlotIndex(0), pid, signal: Signal::SIGTERM }]);
    h.now += 600 * MS;
    assert_eq!(h.tick(), vec![Action::Kill { slot: SlotIndex(0), pid, signal: Signal::SIGKILL }]);
    h.die(0, ExitCause::Signaled { signal: Signal::SIGKILL, core: false }, &[seq]);
    assert!(h.sink.events.iter().any(|e| matches!(e,
        RunEvent::TaskRequeued { id, charged: true, attempts: 1, .. } if id == "slow")));
    assert_eq!(h.engine.counts().crashes.get("timeout"), Some(&1));
}

#[test]
fn silence_means_unresponsive_before_the_timeout() {
    let mut h = Harness::new(EngineConfig {
        workers: 1,
        timeout_ns: Some(2_000 * MS),
        heartbeat_timeout_ns: Some(1_500 * MS),
        ..Default::default()
    });
    h.push([job("frozen")]);
    h.start();
    let seq = h.sent(0)[0].0;
    h.page.0[0][0].begin(seq, h.now);
    h.now += 1_600 * MS;
    let pid = h.pid(0);
    assert_eq!(h.tick(), vec![Action::Kill { slot: SlotIndex(0), pid, signal: Signal::SIGKILL }]);
    h.die(0, ExitCause::Signaled { signal: Signal::SIGKILL, core: false }, &[seq]);
    assert_eq!(h.engine.counts().crashes.get("unresponsive"), Some(&1));
}

#[test]
fn a_pause_charges_nobody_and_does_not_count_against_the_timeout() {
    let mut h = Harness::new(EngineConfig {
        workers: 1,
        timeout_ns: Some(2_000 * MS),
        heartbeat_timeout_ns: Some(1_500 * MS),
        ..Default::default()
    });
    h.push([job("paused")]);
    h.start();
    let seq = h.sent(0)[0].0;
    h.page.0[0][0].begin(seq, h.now);
    h.now += 500 * MS;
    h.ev(Event::Heartbeat { slot: SlotIndex(0) });
    // Stopped for 10 s: past the heartbeat limit and the timeout, but nobody could run.
    h.now += 10_000 * MS;
    h.ev(Event::Paused { ns: 10_000 * MS });
    assert!(h.tick().is_empty(), "nobody is judged on waking");
    // A fresh heartbeat window: silence after the pause is still caught.
    h.now += 1_000 * MS;
    h.ev(Event::Heartbeat { slot: SlotIndex(0) });
    assert!(h.tick().is_empty());
    // The timeout counts the 2 s the task could run: 0.5 s before, 1.5 s after.
    assert_eq!(h.engine.next_deadline(h.now, &h.page).map(|d| d <= h.now + 500 * MS), Some(true));
    h.now += 500 * MS;
    let pid = h.pid(0);
    assert_eq!(h.tick(), vec![Action::Kill { slot: SlotIndex(0), pid, signal: Signal::SIGTERM }]);
}

/// A heartbeat read in the round that woke from a pause, stamped with the time from before
/// it (the loop's clock of that round), must not set the worker's last word back by the
/// whole pause: the ctrl-Z end-to-end test killed both workers as unresponsive that way.
#[test]
fn a_heartbeat_stamped_before_a_pause_does_not_undo_it() {
    let mut h = Harness::new(EngineConfig { workers: 1, heartbeat_timeout_ns: Some(2_000 * MS), ..Default::default() });
    h.push([job("stopped")]);
    h.start();
    let seq = h.sent(0)[0].0;
    h.page.0[0][0].begin(seq, h.now);
    let before = h.now;
    h.now += 3_500 * MS;
    h.ev(Event::Paused { ns: 3_500 * MS });
    let mut out = Vec::new();
    h.engine.handle(Event::Heartbeat { slot: SlotIndex(0) }, before, &mut h.sink, &mut out);
    h.now += 100 * MS;
    assert!(h.tick().is_empty(), "the worker was heard at the pause's end");
}

#[test]
fn a_closed_connection_on_a_live_worker_is_a_protocol_fault() {
    let mut h = Harness::new(EngineConfig { workers: 1, ..Default::default() });
    h.push([job("d")]);
    h.start();
    let seq = h.sent(0)[0].0;
    h.ev(Event::ChannelEnded { slot: SlotIndex(0), detail: None });
    h.now += 100 * MS;
    assert!(h.tick().is_empty(), "waits for the death that usually explains a close");
    h.now += 150 * MS;
    let pid = h.pid(0);
    assert_eq!(h.tick(), vec![Action::Kill { slot: SlotIndex(0), pid, signal: Signal::SIGKILL }]);
    h.die(0, ExitCause::Signaled { signal: Signal::SIGKILL, core: false }, &[seq]);
    assert_eq!(h.engine.counts().crashes.get("protocol"), Some(&1));
}

#[test]
fn a_close_explained_by_a_death_keeps_the_real_cause() {
    let mut h = Harness::new(EngineConfig { workers: 1, ..Default::default() });
    h.push([job("s")]);
    h.start();
    let seq = h.sent(0)[0].0;
    h.ev(Event::ChannelEnded { slot: SlotIndex(0), detail: Some("connection closed inside a frame".into()) });
    h.die(0, segv(), &[seq]);
    assert_eq!(h.engine.counts().crashes.get("signal"), Some(&1));
}

#[test]
fn a_crash_loop_hits_the_restart_limit() {
    let policy = RestartPolicy { max_restarts: 10, period_ns: 5_000 * MS, immediate_restarts: 1, ..Default::default() };
    let mut h = Harness::new(EngineConfig { workers: 2, restart: policy, ..Default::default() });
    h.push((0..100).map(|i| job(&format!("t{i}"))));
    let mut deaths = 0;
    while !h.engine.is_done() {
        h.start();
        for slot in 0..2 {
            if let Some(a) = h.sent(slot).first() {
                h.die(slot, segv(), &[a.0]);
                deaths += 1;
            } else if h.engine.slots()[slot].state.pid().is_some() {
                h.die(slot, ExitCause::Signaled { signal: Signal::SIGKILL, core: false }, &[]);
            }
        }
        h.now = h.engine.next_deadline(h.now, &h.page).unwrap_or(h.now + MS).max(h.now + MS);
        assert!(deaths < 50, "never gave up");
    }
    let Some(why @ StopReason::RestartLimit(_)) = h.engine.stop_reason() else {
        panic!("{:?}", h.engine.stop_reason())
    };
    let msg = why.to_string();
    assert!(msg.contains("workers died 11 times within 5.0s, more than --max-restarts 10/5.0s allows"), "{msg}");
    // Both slots die in each round: the second may die after the give-up, in the same round.
    assert!((11..=12).contains(&deaths), "{deaths}");
    // Each death was charged to the task that caused it: replaced at once, no backoff.
    let backoffs = restart_backoffs(&h);
    assert!(backoffs.len() >= 9 && backoffs.iter().all(|&b| b == 0.0), "{backoffs:?}");
}

/// The backoff of each restart so far, in ms.
fn restart_backoffs(h: &Harness) -> Vec<f64> {
    h.sink
        .events
        .iter()
        .filter_map(|e| match e {
            RunEvent::WorkerRestarted { backoff_ms, .. } => Some(*backoff_ms),
            _ => None,
        })
        .collect()
}

/// A worker program that dies before its handshake, every time, with tasks waiting: no task
/// answers for it, so past the immediate restarts each replacement waits a growing backoff,
/// and the restart limit ends the loop.
#[test]
fn workers_dying_before_their_handshake_back_off_until_the_limit() {
    let policy = RestartPolicy { max_restarts: 10, period_ns: 5_000 * MS, ..Default::default() };
    let mut h = Harness::new(EngineConfig { workers: 1, restart: policy, ..Default::default() });
    h.push((0..10).map(|i| job(&format!("t{i}"))));
    let mut deaths = 0;
    while !h.engine.is_done() {
        let actions = h.tick();
        h.spawn_all(&actions);
        if matches!(h.engine.slots()[0].state, SlotState::Starting { .. }) {
            h.die(0, ExitCause::Exited(1), &[]);
            deaths += 1;
        }
        h.now = h.engine.next_deadline(h.now, &h.page).unwrap_or(h.now + MS).max(h.now + MS);
        assert!(deaths < 50, "never gave up");
    }
    assert!(matches!(h.engine.stop_reason(), Some(StopReason::RestartLimit(_))), "{:?}", h.engine.stop_reason());
    assert_eq!(deaths, 11);
    let backoffs = restart_backoffs(&h);
    assert_eq!(backoffs.len(), 10, "{backoffs:?}");
    assert!(backoffs[..5].iter().all(|&b| b == 0.0), "five replaced at once: {backoffs:?}");
    assert!(backoffs[5] >= 5.0 && backoffs[9] > backoffs[6], "then a growing backoff: {backoffs:?}");
    // Nobody was charged for the program's failure to start.
    assert!(h.sink.records.iter().all(|r| r.2 == 0), "{:?}", h.sink.records);
}

/// A loop of tasks each of which kills a fresh worker (the library benchmark's crash loop):
/// every death is charged to its task and replaced at once, however long the loop, while
/// deaths between tasks still back off.
#[test]
fn a_death_charged_to_its_task_is_replaced_at_once() {
    let policy = RestartPolicy { immediate_restarts: 1, ..Default::default() };
    let mut h = Harness::new(EngineConfig { workers: 1, restart: policy, attempts: 1, ..Default::default() });
    h.push((0..20).map(|i| job(&format!("t{i}"))));
    for _ in 0..20 {
        h.start();
        let sent = h.sent(0);
        h.die(0, segv(), &[sent[0].0]);
        assert!(
            matches!(h.engine.slots()[0].state, SlotState::Waiting { until, .. } if until == h.now),
            "{:?}",
            h.engine.slots()[0].state
        );
    }
    assert_eq!(h.sink.records.iter().filter(|r| r.1 == "quarantined").count(), 20);
    // Two deaths between tasks: the first is immediate, the second waits.
    h.start();
    h.die(0, segv(), &[]);
    h.start();
    h.die(0, segv(), &[]);
    assert!(
        matches!(h.engine.slots()[0].state, SlotState::Waiting { until, .. } if until > h.now),
        "{:?}",
        h.engine.slots()[0].state
    );
}

#[test]
fn sigterm_drains_without_charging_and_leaves_the_rest_unfinished() {
    let mut h = Harness::new(EngineConfig { workers: 2, drain_grace_ns: 1_000 * MS, ..Default::default() });
    h.push((0..10).map(|i| job(&format!("t{i}"))));
    h.start();
    let a = h.sent(0)[0].0;
    let b = h.sent(1)[0].0;
    h.ev(Event::Interrupt(Interrupt::Term));
    // Slot 0 finishes its task within the grace and is told to exit; nothing new is sent.
    let actions = h.ok(0, &[a]);
    assert_eq!(actions, vec![Action::Shutdown { slot: SlotIndex(0) }]);
    h.die(0, ExitCause::Exited(0), &[]);
    // Slot 1 overruns the grace: SIGTERM, then its task goes back uncharged.
    h.now += 1_000 * MS;
    let pid = h.pid(1);
    assert_eq!(h.tick(), vec![Action::Kill { slot: SlotIndex(1), pid, signal: Signal::SIGTERM }]);
    h.die(1, ExitCause::Signaled { signal: Signal::SIGTERM, core: false }, &[b]);
    assert!(h.engine.is_done());
    assert!(matches!(h.engine.stop_reason(), Some(StopReason::Interrupted(Interrupt::Term))));
    assert_eq!(h.sink.records.len(), 1);
    assert_eq!(h.engine.counts().crashes_total(), 0);
    assert!(h.sink.events.iter().any(|e| matches!(e, RunEvent::TaskRequeued { charged: false, attempts: 0, .. })));
}

#[test]
fn a_second_interrupt_kills_at_once() {
    let mut h = Harness::new(EngineConfig { workers: 1, ..Default::default() });
    h.push([job("a")]);
    h.start();
    h.sent(0);
    h.ev(Event::Interrupt(Interrupt::Int));
    let pid = h.pid(0);
    assert_eq!(
        h.ev(Event::Interrupt(Interrupt::Int)),
        vec![Action::Kill { slot: SlotIndex(0), pid, signal: Signal::SIGKILL }]
    );
}

#[test]
fn a_repeated_sigterm_keeps_the_grace() {
    let mut h = Harness::new(EngineConfig { workers: 1, ..Default::default() });
    h.push([job("a")]);
    h.start();
    h.sent(0);
    h.ev(Event::Interrupt(Interrupt::Term));
    assert!(h.ev(Event::Interrupt(Interrupt::Term)).is_empty());
    let pid = h.pid(0);
    assert_eq!(
        h.ev(Event::Interrupt(Interrupt::Int)),
        vec![Action::Kill { slot: SlotIndex(0), pid, signal: Signal::SIGKILL }]
    );
}

#[test]
fn failed_tasks_are_final_unless_retries_are_asked_for() {
    for retry_failed in [false, true] {
        let mut h = Harness::new(EngineConfig { workers: 1, retry_failed, ..Default::default() });
        h.push([job("f")]);
        let mut out = Vec::new();
        h.engine.input_ended(h.now, &mut h.sink, &mut out);
        h.start();
        for _ in 0..3 {
            let Some(&(seq, _, _)) = h.sent(0).first() else {
                break;
            };
            let outs =
                [Outcome { seq, micros: 5, result: Err(TaskError::new("exit status 1")), peak_rss: 0, leaked: 0 }];
            h.ev(Event::Outcomes { slot: SlotIndex(0), outcomes: &outs });
        }
        let r = h.record("f");
        assert_eq!((r.1, r.2), ("failed", if retry_failed { 3 } else { 1 }));
    }
}

#[test]
fn a_result_for_a_task_never_sent_is_a_protocol_fault() {
    let mut h = Harness::new(EngineConfig { workers: 1, ..Default::default() });
    h.start();
    let pid = h.pid(0);
    assert_eq!(h.ok(0, &[999]), vec![Action::Kill { slot: SlotIndex(0), pid, signal: Signal::SIGKILL }]);
}

#[test]
fn bad_input_stops_dispatch_and_lets_running_tasks_finish() {
    let mut h = Harness::new(EngineConfig { workers: 1, ..Default::default() });
    h.push([job("a"), job("b")]);
    h.start();
    let a = h.sent(0)[0].0;
    let mut out = Vec::new();
    let bad =
        crate::input::error::InputError::new(crate::input::error::Place::Line(3), crate::input::error::Problem::Nul);
    h.engine.input_failed(std::sync::Arc::new(bad), h.now, &mut h.sink, &mut out);
    assert!(out.is_empty());
    assert_eq!(h.ok(0, &[a]), vec![Action::Shutdown { slot: SlotIndex(0) }]);
    h.die(0, ExitCause::Exited(0), &[]);
    assert!(matches!(h.engine.stop_reason(), Some(StopReason::BadInput(_))));
    assert_eq!(h.sink.records.len(), 1);
}

#[test]
fn taking_everything_unsent_does_not_overflow() {
    let mut h = Harness::new(EngineConfig { workers: 1, ..Default::default() });
    h.push([job("a")]);
    h.start();
    assert_eq!(h.engine.take_unsent(SlotIndex(0), usize::MAX).len(), 1);
    assert_eq!(h.engine.take_unsent(SlotIndex(0), usize::MAX).len(), 0);
}

#[test]
fn deaths_shrink_the_queue_and_successes_grow_it_back() {
    let mut h = Harness::new(EngineConfig { workers: 1, ..Default::default() });
    h.start();
    h.push([job("warm")]);
    let first = h.sent(0);
    h.ok(0, &[first[0].0]);
    h.push((0..5000).map(|i| job(&format!("t{i}"))));
    let before = h.sent(0).len();
    assert!(before >= 100, "fast tasks are queued by the hundred: {before}");
    let running = h.engine.slots()[0].inflight();
    h.die(0, segv(), &[]);
    h.start();
    let after = h.sent(0);
    assert_eq!(after.len(), running / 2, "a death halves what the slot may hold");
    // Successes grow it back, one task at a time.
    let seqs: Vec<u64> = after.iter().map(|a| a.0).collect();
    h.ok(0, &seqs);
    assert_eq!(h.sent(0).len(), running / 2 + seqs.len());
}

#[test]
fn a_worker_that_finished_tasks_before_dying_is_healthy() {
    let policy = RestartPolicy { healthy_after_ns: u64::MAX, ..Default::default() };
    let mut h = Harness::new(EngineConfig { workers: 1, restart: policy, ..Default::default() });
    h.start();
    h.push([job("warm")]);
    let w = h.sent(0);
    h.ok(0, &[w[0].0]);
    for round in 0..4 {
        h.push((0..50).map(|i| job(&format!("r{round}-{i}"))));
        let sent = h.sent(0);
        // It finished the first tasks (results unsent) and died on the third.
        h.die(0, segv(), &[sent[2].0]);
        h.tick();
        let backoff = match h.engine.slots()[0].state {
            SlotState::Waiting { until, .. } => until - h.now,
            ref other => panic!("{other:?}"),
        };
        assert_eq!(backoff, 0, "round {round}: no backoff after a worker that did good work");
        h.start();
    }
}

/// The tail is shared among workers with room, not among all: a full worker does not keep a
/// share for itself while another idles.
#[test]
fn the_tail_goes_to_the_workers_with_room() {
    let mut h = Harness::new(EngineConfig { workers: 2, threads_per_worker: 50, ..Default::default() });
    h.push((0..100).map(|i| job(&format!("w{i}"))));
    let mut out = Vec::new();
    h.engine.input_ended(h.now, &mut h.sink, &mut out);
    // Worker 0 is ready first and takes a full load; worker 1 then takes all the rest.
    h.tick();
    let pids: Vec<_> = h.spawn_all(&[Action::Spawn { slot: SlotIndex(0) }, Action::Spawn { slot: SlotIndex(1) }]);
    let _ = pids;
    h.ev(Event::Ready { slot: SlotIndex(0) });
    assert_eq!(h.sent(0).len(), 50);
    h.ev(Event::Ready { slot: SlotIndex(1) });
    assert_eq!(h.sent(1).len(), 50);
}

/// Repeated deaths of workers that did no good back off more and more; a worker that then
/// serves for longer than `healthy_after` resets it: its death is followed by an immediate
/// restart.
#[test]
fn the_backoff_grows_with_unhealthy_deaths_and_resets_after_a_healthy_worker() {
    let policy = RestartPolicy { healthy_after_ns: 1_000 * MS, immediate_restarts: 1, ..Default::default() };
    let mut h = Harness::new(EngineConfig { workers: 1, restart: policy, ..Default::default() });
    h.start();
    // Dies at once; returns the backoff its replacement waits, and waits it out.
    let die_and_wait = |h: &mut Harness| -> u64 {
        h.die(0, segv(), &[]);
        h.tick();
        let until = match h.engine.slots()[0].state {
            SlotState::Waiting { until, .. } => until,
            ref other => panic!("{other:?}"),
        };
        let backoff = until - h.now;
        h.now = until;
        h.start();
        backoff
    };
    let backoffs: Vec<u64> = (0..5).map(|_| die_and_wait(&mut h)).collect();
    assert_eq!(backoffs[0], 0, "the first replacement is immediate: {backoffs:?}");
    assert!(backoffs[1] > 0 && backoffs[4] > backoffs[2] && backoffs[2] > backoffs[1], "{backoffs:?}");
    // A worker that has now served for more than a second was healthy.
    h.now += 1_001 * MS;
    assert_eq!(die_and_wait(&mut h), 0, "reset after a healthy worker");
    assert!(die_and_wait(&mut h) <= backoffs[1], "the growth starts over");
}

/// Once a signal drains the run, the grace is the only deadline: a task past its timeout is
/// not killed and charged, but stopped at the grace's end and left uncharged, like the rest.
#[test]
fn a_drain_on_a_signal_suspends_timeouts() {
    let cfg = EngineConfig {
        workers: 1,
        timeout_ns: Some(100 * MS),
        drain_grace_ns: 1_000 * MS,
        heartbeat_timeout_ns: None,
        ..Default::default()
    };
    let mut h = Harness::new(cfg);
    h.push([job("held")]);
    h.start();
    let seq = h.sent(0)[0].0;
    h.page.0[0][0].begin(seq, h.now);
    h.ev(Event::Interrupt(Interrupt::Term));
    h.now += 500 * MS;
    assert!(h.tick().is_empty(), "past its timeout, within the grace");
    assert!(h.engine.next_deadline(h.now, &h.page).unwrap() > h.now, "no deadline in the past to spin on");
    h.now += 500 * MS;
    let pid = h.pid(0);
    assert_eq!(h.tick(), vec![Action::Kill { slot: SlotIndex(0), pid, signal: Signal::SIGTERM }]);
    h.die(0, ExitCause::Signaled { signal: Signal::SIGTERM, core: false }, &[seq]);
    assert_eq!(h.engine.counts().crashes_total(), 0);
    assert!(h.sink.records.is_empty());
}

/// Runs the one task on the harness's one worker until it has a record: each attempt as
/// `attempt` does it (answers or dies).
fn until_recorded(h: &mut Harness, id: &str, mut attempt: impl FnMut(&mut Harness, u64)) {
    let mut out = Vec::new();
    h.engine.input_ended(h.now, &mut h.sink, &mut out);
    for _ in 0..10 {
        if h.sink.records.iter().any(|r| r.0 == id) {
            return;
        }
        h.start();
        let Some(&(seq, _, _)) = h.sent(0).first() else { continue };
        attempt(h, seq);
        h.now += 1_000 * MS;
    }
    panic!("no record for {id} after 10 attempts");
}

fn rule_of<'a>(h: &'a Harness, id: &str) -> &'a str {
    h.sink.rules.iter().find(|r| r.0 == id).map(|r| r.1.as_str()).unwrap_or("")
}

#[test]
fn a_command_that_times_out_fails_once_and_a_task_that_is_not_one_is_retried() {
    for command in [true, false] {
        let cfg = EngineConfig { workers: 1, timeout_ns: Some(100 * MS), ..Default::default() };
        let mut h = Harness::new(cfg);
        let j = if command { job("slow").into_command() } else { job("slow") };
        h.push([j]);
        until_recorded(&mut h, "slow", |h, seq| {
            h.page.0[0][0].begin(seq, h.now);
            h.now += 200 * MS;
            h.ev(Event::Heartbeat { slot: SlotIndex(0) });
            h.tick();
            h.die(0, ExitCause::Signaled { signal: Signal::SIGTERM, core: false }, &[seq]);
            h.page.0[0][0].end(seq);
        });
        let r = h.record("slow").clone();
        let expected = if command { ("failed", 1, "retries=1") } else { ("quarantined", 3, "attempts=3") };
        assert_eq!((r.1, r.2, rule_of(&h, "slow")), expected);
        assert!(r.3.iter().all(|c| *c == CrashCause::Timeout { limit_ms: 100 }), "{:?}", r.3);
    }
}

#[test]
fn a_cause_rule_quarantines_a_panic_at_once_while_a_segfault_is_retried() {
    let mut cfg = EngineConfig { workers: 1, ..Default::default() };
    cfg.retry.by_cause = crate::engine::config::parse_retry_rules("panic=1").unwrap();
    let mut h = Harness::new(cfg.clone());
    h.push([job("p")]);
    until_recorded(&mut h, "p", |h, seq| {
        h.ev(Event::Panic { slot: SlotIndex(0), report: PanicReport { seq: Some(seq), message: "boom".into() } });
        h.die(0, ExitCause::Signaled { signal: Signal::SIGABRT, core: false }, &[seq]);
    });
    assert_eq!((h.record("p").1, h.record("p").2, rule_of(&h, "p")), ("quarantined", 1, "panic=1"));
    let mut h = Harness::new(cfg);
    h.push([job("s")]);
    let mut deaths = 0;
    until_recorded(&mut h, "s", |h, seq| {
        if deaths < 2 {
            deaths += 1;
            h.die(0, segv(), &[seq]);
        } else {
            h.ok(0, &[seq]);
        }
    });
    assert_eq!((h.record("s").1, h.record("s").2), ("ok", 3));
}

#[test]
fn an_oom_rule_raises_the_factor_of_the_task_s_next_attempt() {
    let mut cfg = EngineConfig { workers: 1, ..Default::default() };
    cfg.retry.by_cause = crate::engine::config::parse_retry_rules("oom=2:x2").unwrap();
    let mut h = Harness::new(cfg);
    h.push([job("big")]);
    let mut first = true;
    until_recorded(&mut h, "big", |h, seq| {
        if std::mem::take(&mut first) {
            let pid = h.pid(0);
            h.ev(Event::Reaped {
                slot: SlotIndex(0),
                pid,
                exit: ExitCause::Signaled { signal: Signal::SIGABRT, core: false },
                executing: vec![Seq(seq)],
                records: Vec::new(),
                culprit: None,
                stderr_tail: "memory allocation of 1048576 bytes failed\n".into(),
            });
        } else {
            h.ok(0, &[seq]);
        }
    });
    assert_eq!((h.record("big").1, h.record("big").2), ("ok", 2));
    assert_eq!(h.sink.factors, vec![("big".to_string(), 2)]);
}

#[test]
fn a_relative_timeout_applies_once_enough_tasks_succeeded() {
    let cfg = EngineConfig { workers: 1, timeout_percent: Some(300), ..Default::default() };
    let mut h = Harness::new(cfg);
    h.start();
    assert_eq!(h.engine.timeout_ns(), None);
    for i in 0..crate::engine::config::TIMEOUT_SAMPLES {
        h.push([job(&format!("t{i}"))]);
        let seq = h.sent(0)[0].0;
        let outs = [Outcome { seq, micros: 100_000, result: Ok(Bytes::new(&[0])), peak_rss: 0, leaked: 0 }];
        h.ev(Event::Outcomes { slot: SlotIndex(0), outcomes: &outs });
    }
    let limit = h.engine.timeout_ns().unwrap();
    assert!((300 * MS..=310 * MS).contains(&limit), "{limit}");
}

/// A worker is retired once it has been handed its task limit and its queue is empty; it is
/// replaced at once (no backoff, no restart), and nobody is charged.
#[test]
fn a_worker_is_retired_after_its_task_limit_and_replaced_without_charge() {
    let mut h = Harness::new(EngineConfig { workers: 1, max_tasks_per_worker: Some(2), ..Default::default() });
    h.push((0..5).map(|i| job(&format!("t{i}"))));
    h.start();
    let first = h.pid(0);
    let a = h.sent(0)[0].0;
    h.ok(0, &[a]);
    let b = h.sent(0)[0].0;
    let actions = h.ok(0, &[b]);
    // Its two tasks handed out: no third, and it is asked to exit.
    assert!(!h.engine.has_unsent(SlotIndex(0)));
    let actions = [actions, h.tick()].concat();
    assert!(actions.contains(&Action::Shutdown { slot: SlotIndex(0) }), "{actions:?}");
    h.die(0, ExitCause::Exited(0), &[]);
    let retired = RunEvent::WorkerRetired {
        worker: SlotIndex(0),
        pid: first,
        why: crate::engine::lifecycle::Retirement::Tasks { tasks: 2 },
    };
    assert!(h.sink.events.contains(&retired), "{:?}", h.sink.events);
    // Replaced now, without backoff: the next tick spawns.
    assert_eq!(h.tick(), vec![Action::Spawn { slot: SlotIndex(0) }]);
    h.start();
    assert_ne!(h.pid(0), first);
    let c = h.engine.counts();
    assert_eq!((c.retired, c.restarts, c.crashes_total(), c.requeued), (1, 0, 0, 0));
    assert!(h.sink.records.iter().all(|r| r.1 == "ok" && r.2 == 1));
}

/// A worker read above the memory limit after a task takes no more and is retired once
/// what it holds is done; below the limit nothing happens.
#[test]
fn a_worker_above_the_memory_limit_is_retired_between_tasks() {
    let mut h = Harness::new(EngineConfig { workers: 1, max_worker_memory: Some(100 << 20), ..Default::default() });
    h.push((0..3).map(|i| job(&format!("t{i}"))));
    h.start();
    h.page.1 = Some(50 << 20);
    let a = h.sent(0)[0].0;
    h.ok(0, &[a]);
    assert!(!h.tick().contains(&Action::Shutdown { slot: SlotIndex(0) }));
    // At the measured pace, both other tasks went out with that result.
    let rest: Vec<u64> = h.sent(0).into_iter().map(|a| a.0).collect();
    assert_eq!(rest.len(), 2);
    h.page.1 = Some(200 << 20);
    h.ok(0, &rest[..1]);
    // Above the limit, with a task still queued there: it runs that one first.
    assert!(!h.tick().contains(&Action::Shutdown { slot: SlotIndex(0) }));
    h.push([job("t3")]);
    assert!(!h.engine.has_unsent(SlotIndex(0)), "a retiring worker takes no more");
    h.ok(0, &rest[1..]);
    assert!(h.tick().contains(&Action::Shutdown { slot: SlotIndex(0) }));
    h.die(0, ExitCause::Exited(0), &[]);
    assert!(h.sink.events.iter().any(|e| matches!(
        e,
        RunEvent::WorkerRetired { why: crate::engine::lifecycle::Retirement::Memory { resident_bytes, .. }, .. }
            if *resident_bytes == 200 << 20
    )));
    assert_eq!((h.engine.counts().retired, h.engine.counts().crashes_total()), (1, 0));
}

/// Progress on the status page keeps a task alive under the stall limit however long it
/// runs; once it stops moving for the limit, its worker is ended and it alone is charged,
/// with cause `stalled` and the progress it had made.
#[test]
fn a_task_without_progress_for_the_stall_limit_is_killed_as_stalled() {
    let mut h = Harness::new(EngineConfig { workers: 1, stall_timeout_ns: Some(500 * MS), ..Default::default() });
    h.push([job("task")]);
    h.start();
    let seq = h.sent(0)[0].0;
    h.page.0[0][0].begin(seq, h.now);
    assert!(h.engine.next_deadline(h.now, &h.page).unwrap() <= h.now + 500 * MS);
    // Moving every 400 ms, for 2 s: never stalled.
    for _ in 0..5 {
        h.now += 400 * MS;
        h.page.0[0][0].advance(10, h.now);
        h.ev(Event::Heartbeat { slot: SlotIndex(0) });
        assert!(h.tick().is_empty());
    }
    // Then still (its heartbeats go on: alive, but stuck).
    h.now += 400 * MS;
    h.ev(Event::Heartbeat { slot: SlotIndex(0) });
    assert!(h.tick().is_empty());
    h.now += 100 * MS;
    h.ev(Event::Heartbeat { slot: SlotIndex(0) });
    let pid = h.pid(0);
    assert_eq!(h.tick(), vec![Action::Kill { slot: SlotIndex(0), pid, signal: Signal::SIGTERM }]);
    h.die(0, ExitCause::Signaled { signal: Signal::SIGTERM, core: false }, &[seq]);
    assert!(h.sink.records.is_empty(), "charged and requeued, not final yet");
    assert_eq!(h.engine.counts().crashes.get("stalled"), Some(&1));
    assert!(h.sink.events.iter().any(|e| matches!(
        e,
        RunEvent::WorkerExited {
            exit: WorkerExit::Died(Some(CrashCause::Stalled { limit_ms: 500, progress: 50 })),
            ..
        }
    )));
}

/// `--skip-bad-records`: a crash on a reported record sends the task back with that record on
/// its skip list, charged an attempt; a second bad record joins the list; a crash on a record
/// already listed (the handler ignored the list) and one with no record reported are plain
/// crashes. The record names what was skipped.
#[test]
fn a_crash_on_a_reported_record_is_skipped_by_the_next_attempts() {
    let mut h = Harness::new(EngineConfig { workers: 1, attempts: 4, skip_bad_records: true, ..Default::default() });
    h.start();
    h.push([job("batch")]);
    h.tick();
    let [(seq, 1, skip)] = &h.sent_skips(0)[..] else { panic!("one first attempt") };
    assert!(skip.is_empty());
    h.die_on_record(0, *seq, Some(37));
    h.now += 100 * MS;
    h.start();
    let [(seq, 2, skip)] = &h.sent_skips(0)[..] else { panic!("a second attempt") };
    assert_eq!(skip, &[37]);
    h.die_on_record(0, *seq, Some(5));
    h.now += 100 * MS;
    h.start();
    let [(seq, 3, skip)] = &h.sent_skips(0)[..] else { panic!("a third attempt") };
    assert_eq!(skip, &[5, 37], "sorted for the handler's lookup");
    h.die_on_record(0, *seq, Some(37));
    h.now += 100 * MS;
    h.start();
    let [(seq, 4, skip)] = &h.sent_skips(0)[..] else { panic!("a fourth attempt") };
    assert_eq!(skip, &[5, 37], "a record already listed is not listed twice");
    h.ok(0, &[*seq]);
    assert_eq!(h.record("batch").1, "ok");
    assert_eq!(h.record("batch").2, 4, "each skip cost an attempt");
    assert_eq!(h.sink.skipped, [("batch".to_string(), vec![37, 5])]);
}

#[test]
fn without_the_setting_or_a_reported_record_a_crash_is_only_a_crash() {
    for (skip_bad_records, index) in [(false, Some(37)), (true, None)] {
        let mut h = Harness::new(EngineConfig { workers: 1, attempts: 2, skip_bad_records, ..Default::default() });
        h.start();
        h.push([job("batch")]);
        h.tick();
        let seq = h.sent_skips(0)[0].0;
        h.die_on_record(0, seq, index);
        h.now += 100 * MS;
        h.start();
        let [(seq, 2, skip)] = &h.sent_skips(0)[..] else { panic!("a second attempt") };
        assert!(skip.is_empty());
        h.die_on_record(0, *seq, index);
        assert_eq!(h.record("batch").1, "quarantined");
        assert!(h.sink.skipped.is_empty());
    }
}

/// A hybrid worker that dies with no culprit named blames every task it was running: none of
/// their records is skipped, since all but one of them are good.
#[test]
fn a_death_blaming_several_tasks_skips_no_record() {
    let cfg = EngineConfig { workers: 1, threads_per_worker: 2, skip_bad_records: true, ..Default::default() };
    let mut h = Harness::new(cfg);
    h.start();
    h.push([job("a"), job("b")]);
    h.tick();
    let seqs: Vec<u64> = h.sent_skips(0).iter().map(|a| a.0).collect();
    assert_eq!(seqs.len(), 2, "one task per thread");
    let pid = h.pid(0);
    h.ev(Event::Reaped {
        slot: SlotIndex(0),
        pid,
        exit: segv(),
        executing: seqs.iter().copied().map(Seq).collect(),
        records: vec![(Seq(seqs[0]), 3), (Seq(seqs[1]), 9)],
        culprit: None,
        stderr_tail: String::new(),
    });
    h.now += 100 * MS;
    h.start();
    let again = h.sent_skips(0);
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|(_, attempt, skip)| *attempt == 2 && skip.is_empty()), "{again:?}");
}

/// Cancelling: a queued task ends at once; the task a worker executes ends when the worker,
/// killed for it, is reaped, charging nobody; the tasks queued behind it go back uncharged and
/// the slot is replaced at once, with no restart counted.
#[test]
fn a_cancel_ends_the_task_and_replaces_its_worker_charging_nobody() {
    let mut h = Harness::new(EngineConfig { workers: 1, ..Default::default() });
    h.start();
    h.push([job("warm")]);
    h.tick();
    let first = h.sent(0);
    h.ok(0, &[first[0].0]);
    h.push([job("a"), job("b")]);
    h.tick();
    let sent = h.sent(0);
    assert_eq!(sent.len(), 2);
    h.push([job("queued")]);
    let mut out = Vec::new();
    assert!(h.engine.cancel("queued", h.now, &mut h.sink, &mut out));
    assert_eq!(h.record("queued").1, "failed");
    assert!(!h.engine.cancel("nonexistent", h.now, &mut h.sink, &mut out));
    let mut out = Vec::new();
    assert!(h.engine.cancel("a", h.now, &mut h.sink, &mut out));
    let pid = h.pid(0);
    assert_eq!(out, vec![Action::Kill { slot: SlotIndex(0), pid, signal: Signal::SIGKILL }]);
    h.die(0, ExitCause::Signaled { signal: Signal::SIGKILL, core: false }, &[sent[0].0]);
    assert_eq!(h.record("a").1, "failed");
    assert_eq!(h.record("a").2, 0, "a cancel is no attempt's fault");
    assert!(h.sink.records.iter().all(|r| r.0 != "b"), "b goes back to run");
    assert_eq!(h.engine.counts().crashes_total(), 0);
    assert!(matches!(h.engine.slots()[0].state, SlotState::Waiting { backoff_ns: None, .. }));
    h.start();
    let again = h.sent(0);
    assert_eq!(h.engine.inflight_id(SlotIndex(0), Seq(again[0].0)), Some("b"));
    assert_eq!(again[0].1, 1, "b is still on its first attempt");
    assert_eq!(h.engine.counts().restarts, 0);
}
