//! Thread mode: the same tasks on threads of the supervisor's own process, for contrast.
//!
//! What threads share, they share for real: the run's tally (counts that every finished task
//! adds to) sits in one `std::sync::Mutex` that the task threads update directly, as threaded
//! code does. A `panic` fault fires while that lock is held, between two updates that belong
//! together, so the lock is poisoned and the tally left inconsistent, and every later update
//! is refused; the run then stops, because nothing it would add up could be trusted. The
//! fatal faults (`segv`, `abort`, `kill`, `exit`, `stack_overflow`, `oom`) end the whole
//! process, as they must. A hung thread cannot be killed: on timeout it is abandoned, still
//! spinning, and a new thread takes its place.
//!
//! The poisoning this relies on is `std::sync::Mutex`'s (a panic while a guard is held
//! poisons the lock); a test pins it, since the standard library may change the default
//! mutex in a future edition.

use std::os::fd::AsRawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use nix::poll::PollFlags;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_bytes::Bytes;
use shared::proto::{Assignment, Outcome, PanicReport, TaskError};
use shared::shm::{self, PageState};
use shared::task::FaultKind;
use worker::Handler;
use worker::execute::{Executed, OwnedAssignment, execute, executing, panic_message};
use worker::fault::FaultSite;

use crate::engine::ExitCause;
use crate::engine::lifecycle::RunEvent;
use crate::engine::{Engine, Event, Poison, Probe, Seq, SlotIndex, SpawnError};
use crate::runtime::tally::{Tally, TallyReport};
use crate::runtime::waker::{Waker, Wakeup, wake_pair};
use crate::runtime::{Backend, Cx, PollSet};

enum Msg {
    Run(Vec<OwnedAssignment>),
    Shutdown,
}

struct Done {
    seq: u64,
    micros: u64,
    leaked: u32,
    result: Result<Vec<u8>, TaskError>,
    /// Whether the shared tally took this result (false: refused, the lock was poisoned).
    counted: bool,
}

enum ThreadEvent {
    Ready,
    Results(Vec<Done>),
    Died { seq: Option<u64>, message: String },
    Exited,
}

struct Shared {
    tally: Mutex<Tally>,
    refused: AtomicU64,
    /// Results delivered whose update the tally took, and whose update it refused.
    delivered_counted: AtomicU64,
    delivered_refused: AtomicU64,
    events: Mutex<Sender<(SlotIndex, u64, ThreadEvent)>>,
    wake: Waker,
}

impl Shared {
    fn send(&self, slot: SlotIndex, incarnation: u64, ev: ThreadEvent) {
        let _ = self.events.lock().unwrap_or_else(|e| e.into_inner()).send((slot, incarnation, ev));
        self.wake.wake();
    }
}

struct ThreadSlot {
    incarnation: u64,
    tx: Sender<Msg>,
    page: Arc<[shm::PageSlot]>,
}

/// Task threads, one per slot.
pub struct ThreadBackend<H: Handler> {
    handler: Arc<H>,
    shared: Arc<Shared>,
    rx: Receiver<(SlotIndex, u64, ThreadEvent)>,
    wake_read: Wakeup,
    slots: Vec<Option<ThreadSlot>>,
    next_incarnation: u64,
    /// Deaths decided by `kill` (abandoned threads), delivered on the next wake-up.
    abandoned: Vec<(SlotIndex, Signal)>,
    abandoned_total: u64,
    /// The pages of abandoned threads whose task's child group was killed: the thread's own
    /// wait reaps the children, and the run's end gives it a moment to (see `kill_all`).
    killed_groups: Vec<Arc<[shm::PageSlot]>>,
    poison_reported: bool,
}

impl<H: Handler> ThreadBackend<H> {
    /// A backend with `slots` thread slots.
    pub fn new(handler: Arc<H>, slots: usize) -> std::io::Result<Self> {
        quiet_task_panics();
        let (wake_read, wake) = wake_pair()?;
        let (tx, rx) = channel();
        Ok(Self {
            handler,
            shared: Arc::new(Shared {
                tally: Mutex::new(Tally::default()),
                refused: AtomicU64::new(0),
                delivered_counted: AtomicU64::new(0),
                delivered_refused: AtomicU64::new(0),
                events: Mutex::new(tx),
                wake,
            }),
            rx,
            wake_read,
            slots: (0..slots).map(|_| None).collect(),
            next_incarnation: 1,
            abandoned: Vec::new(),
            abandoned_total: 0,
            killed_groups: Vec::new(),
            poison_reported: false,
        })
    }

    /// The tally as it stands.
    pub fn report(&self) -> TallyReport {
        let (tally, poisoned) = match self.shared.tally.lock() {
            Ok(t) => (*t, false),
            Err(e) => (*e.into_inner(), true),
        };
        TallyReport {
            tally,
            poisoned,
            refused: self.shared.refused.load(Ordering::Relaxed),
            abandoned: self.abandoned_total,
            trusted: self.shared.delivered_counted.load(Ordering::Relaxed),
            untrusted: self.shared.delivered_refused.load(Ordering::Relaxed),
        }
    }

    fn process_events(&mut self, cx: &mut Cx<'_>) {
        self.wake_read.drain();
        for (slot, signal) in std::mem::take(&mut self.abandoned) {
            self.deliver_death(slot, ExitCause::Signaled { signal, core: false }, cx);
        }
        while let Ok((slot, inc, ev)) = self.rx.try_recv() {
            if self.slots[slot].as_ref().map(|s| s.incarnation) != Some(inc) {
                continue; // from an abandoned thread
            }
            match ev {
                ThreadEvent::Ready => cx.engine.handle(Event::Ready { slot }, cx.now, cx.sink, cx.out),
                ThreadEvent::Results(done) => {
                    let counted = done.iter().filter(|d| d.counted).count() as u64;
                    self.shared.delivered_counted.fetch_add(counted, Ordering::Relaxed);
                    self.shared.delivered_refused.fetch_add(done.len() as u64 - counted, Ordering::Relaxed);
                    let outcomes: Vec<Outcome> = done
                        .iter()
                        .map(|d| Outcome {
                            seq: d.seq,
                            micros: d.micros,
                            result: d.result.as_ref().map(|b| Bytes::new(b)).map_err(Clone::clone),
                            // Threads share this process: there is no tree of a task's own.
                            peak_rss: 0,
                            leaked: d.leaked,
                        })
                        .collect();
                    cx.engine.handle(Event::Outcomes { slot, outcomes: &outcomes }, cx.now, cx.sink, cx.out);
                }
                ThreadEvent::Died { seq, message } => {
                    cx.engine.handle(
                        Event::Panic { slot, report: PanicReport { seq, message: message.clone() } },
                        cx.now,
                        cx.sink,
                        cx.out,
                    );
                    let id = seq.and_then(|s| cx.engine.inflight_id(slot, Seq(s))).unwrap_or("?").to_string();
                    self.deliver_death(slot, ExitCause::Exited(101), cx);
                    if self.shared.tally.is_poisoned() && !self.poison_reported {
                        self.poison_reported = true;
                        self.report_poison(slot, &id, &message, cx);
                    }
                }
                ThreadEvent::Exited => self.deliver_death(slot, ExitCause::Exited(0), cx),
            }
        }
    }

    fn deliver_death(&mut self, slot: SlotIndex, exit: ExitCause, cx: &mut Cx<'_>) {
        let Some(s) = self.slots[slot].take() else {
            return;
        };
        let (mut executing, mut records) = (Vec::new(), Vec::new());
        for p in s.page.iter() {
            if let PageState::Running { seq, .. } = p.read() {
                executing.push(Seq(seq));
                records.extend(p.record().map(|index| (Seq(seq), index)));
            }
        }
        let pid = std::process::id();
        let ev = Event::Reaped { slot, pid, exit, executing, records, culprit: None, stderr_tail: String::new() };
        cx.engine.handle(ev, cx.now, cx.sink, cx.out);
    }

    fn report_poison(&self, slot: SlotIndex, id: &str, message: &str, cx: &mut Cx<'_>) {
        let report = self.report();
        let t = report.tally;
        let at = cx.engine.secs(cx.now);
        let poison = Poison {
            task: id.to_string(),
            thread: slot,
            at,
            message: message.to_string(),
            finished: t.finished,
            ok: t.ok,
            failed: t.failed,
        };
        eprintln!("bulkhead: {poison}; stopping: later results could not be counted");
        if cx.sink.wants_events() {
            cx.sink
                .event(at, RunEvent::StatePoisoned { id: id.to_string(), worker: slot, message: message.to_string() });
        }
        cx.engine.poisoned(poison, cx.now, cx.sink, cx.out);
    }
}

/// Task threads report a panic in one line, like a worker's stderr tail would show it; a
/// backtrace only with `BULKHEAD_BACKTRACE`. Panics elsewhere keep the program's own hook.
fn quiet_task_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let ours = std::thread::current().name().is_some_and(|n| n.starts_with("bulkhead-thread-"));
            if !ours || std::env::var_os("BULKHEAD_BACKTRACE").is_some() {
                return previous(info);
            }
            let name = std::thread::current().name().unwrap_or("?").to_string();
            let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            eprintln!("thread '{name}' panicked{at}: {}", panic_message(info.payload()));
        }));
    });
}

/// Thread mode has no socket: the protocol faults have nothing to act on.
struct NoSocket;

impl FaultSite for NoSocket {
    fn garbage(&self) -> bool {
        eprintln!("bulkhead: fault 'garbage' has no socket to corrupt in thread mode; ignored");
        false
    }
    fn disconnect(&self) -> bool {
        eprintln!("bulkhead: fault 'disconnect' has no socket to close in thread mode; ignored");
        false
    }
}

fn thread_main<H: Handler>(
    handler: Arc<H>,
    shared: Arc<Shared>,
    slot: SlotIndex,
    inc: u64,
    rx: Receiver<Msg>,
    page: Arc<[shm::PageSlot]>,
) {
    worker::slot::set(slot.0 as u64 + 1);
    shared.send(slot, inc, ThreadEvent::Ready);
    let mut scratch = Vec::new();
    // Outside the unwinding closure: what a batch finished before a panic is still delivered,
    // so that those tasks keep their results instead of running again.
    let mut done: Vec<Done> = Vec::new();
    let body = catch_unwind(AssertUnwindSafe(|| {
        while let Ok(msg) = rx.recv() {
            let Msg::Run(batch) = msg else { return };
            done.reserve(batch.len());
            for t in batch {
                // Every fault but `panic` does here what it does anywhere: most end the process.
                // `panic` fires in the tally's update instead, with its lock held.
                let panics = t.fault == Some(FaultKind::Panic);
                let a = Assignment { fault: t.fault.filter(|k| *k != FaultKind::Panic), ..t.as_assignment() };
                let mut counted = false;
                let r = execute(&*handler, &a, &page[0], &NoSocket, &mut scratch, None, |r| {
                    counted = count(&shared, r, panics);
                });
                let result = match r.error {
                    None => Ok(scratch.clone()),
                    Some(e) => Err(e),
                };
                done.push(Done { seq: t.seq, micros: r.micros, leaked: r.leaked, result, counted });
            }
            shared.send(slot, inc, ThreadEvent::Results(std::mem::take(&mut done)));
        }
    }));
    match body {
        Ok(()) => shared.send(slot, inc, ThreadEvent::Exited),
        Err(payload) => {
            if !done.is_empty() {
                shared.send(slot, inc, ThreadEvent::Results(std::mem::take(&mut done)));
            }
            shared.send(slot, inc, ThreadEvent::Died { seq: executing(), message: panic_message(&*payload) });
        }
    }
}

/// Adds a finished task to the shared tally under its lock, as threaded code does; whether it
/// was counted. An injected `panic` fires between two updates that belong together, so the
/// lock is poisoned and the tally left inconsistent; once it is, every later update is
/// refused and counted as refused.
fn count(shared: &Shared, r: &Executed, panics: bool) -> bool {
    match shared.tally.lock() {
        Ok(mut t) => {
            t.finished += 1;
            if panics {
                panic!("injected fault: panic");
            }
            if r.error.is_none() {
                t.ok += 1;
            } else {
                t.failed += 1;
            }
            t.busy_us += r.micros;
            true
        }
        Err(_) => {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

impl<H: Handler> Probe for ThreadBackend<H> {
    fn page(&self, slot: SlotIndex) -> Option<&[shm::PageSlot]> {
        self.slots.get(slot.0)?.as_ref().map(|s| &*s.page)
    }
}

impl<H: Handler> Backend for ThreadBackend<H> {
    fn spawn(&mut self, slot: SlotIndex) -> Result<u32, SpawnError> {
        let inc = self.next_incarnation;
        self.next_incarnation += 1;
        let (tx, rx) = channel();
        let page: Arc<[shm::PageSlot]> = Arc::from(vec![shm::PageSlot::default()]);
        let (handler, shared, p) = (self.handler.clone(), self.shared.clone(), page.clone());
        std::thread::Builder::new()
            .name(format!("bulkhead-thread-{slot}"))
            .spawn(move || thread_main(handler, shared, slot, inc, rx, p))
            .map_err(SpawnError::Thread)?;
        self.slots[slot] = Some(ThreadSlot { incarnation: inc, tx, page });
        Ok(std::process::id())
    }

    fn dispatch(&mut self, slot: SlotIndex, engine: &mut Engine) {
        let Some(s) = self.slots[slot].as_ref() else {
            return;
        };
        let batch: Vec<OwnedAssignment> =
            engine.take_unsent(slot, usize::MAX).map(|a| OwnedAssignment::copy(&a)).collect();
        let _ = s.tx.send(Msg::Run(batch));
    }

    fn shutdown(&mut self, slot: SlotIndex) {
        if let Some(s) = self.slots[slot].as_ref() {
            let _ = s.tx.send(Msg::Shutdown);
        }
    }

    fn kill(&mut self, slot: SlotIndex, _pid: u32, signal: Signal) {
        let Some(s) = self.slots[slot].as_ref() else {
            return;
        };
        // A thread cannot be killed. Its task's children can.
        let pgid = s.page[0].child_pgid.load(Ordering::Acquire);
        if pgid > 0 {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            self.killed_groups.push(s.page.clone());
        }
        log::warn!("thread {slot} cannot be killed: abandoned (it keeps running until the process exits)");
        eprintln!("bulkhead: thread {slot} cannot be killed; abandoned, still running, and replaced");
        self.abandoned_total += 1;
        self.abandoned.push((slot, signal));
        self.shared.wake.wake();
    }

    fn poll_set(&self, set: &mut PollSet) {
        set.push(self.wake_read.as_raw_fd(), PollFlags::POLLIN, 0);
    }

    fn ready(&mut self, _token: u32, _revents: PollFlags, cx: &mut Cx<'_>) {
        self.process_events(cx);
    }

    fn reap(&mut self, cx: &mut Cx<'_>) {
        self.process_events(cx);
    }

    fn live(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    fn tally(&self) -> Option<TallyReport> {
        Some(self.report())
    }

    fn kill_all(&mut self) {
        for s in self.slots.iter_mut() {
            if let Some(s) = s.take() {
                let _ = s.tx.send(Msg::Shutdown);
            }
        }
        // The children of a timed-out task were killed, but they are this process's own and
        // only its abandoned thread's wait reaps them. Should the process end first, they are
        // left to its parent as zombies: up to 1 s for each thread to withdraw its group
        // (its wait returns as soon as the killed child is dead).
        let start = std::time::Instant::now();
        while self.killed_groups.iter().any(|p| p[0].child_pgid.load(Ordering::Acquire) > 0)
            && start.elapsed() < std::time::Duration::from_secs(1)
        {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    /// Pins the behaviour thread mode relies on: a panic while a `std::sync::Mutex` guard is
    /// held poisons the lock, leaves the data as the panic left it, and a later `lock()`
    /// reports the poison.
    #[test]
    fn a_panic_under_the_guard_poisons_std_mutex() {
        let m = std::sync::Arc::new(Mutex::new((0u32, 0u32)));
        let m2 = m.clone();
        let r = std::thread::spawn(move || {
            let mut g = m2.lock().unwrap();
            g.0 += 1;
            panic!("between two updates");
        })
        .join();
        assert!(r.is_err());
        assert!(m.is_poisoned());
        let err = m.lock().unwrap_err();
        assert_eq!(*err.into_inner(), (1, 0), "the half-done update is visible");
    }
}
