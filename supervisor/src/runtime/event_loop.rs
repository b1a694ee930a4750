//! The event loop: the one thread that owns the engine and performs its actions.
//!
//! Every source of events is a descriptor in one `poll(2)` set: the workers' sockets and
//! stderr pipes (or the thread backend's wake-up), the signal pipes, the input's wake-up,
//! the control socket. The loop sleeps until one is ready or the engine's next deadline,
//! turns what it finds into engine events, and performs the actions that come back. Nothing
//! else touches the run's state.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;

use crate::engine::{Action, Engine, Event, Probe, Sink, SlotIndex, SpawnError};
use crate::input::source::{Pull, TaskSource};
use crate::runtime::signals::{Sig, Signals};
use crate::runtime::tally::TallyReport;
use worker::clock::mono_ns;

/// What the loop hands a backend while it handles a readiness.
pub struct Cx<'a> {
    /// The state machine.
    pub engine: &'a mut Engine,
    /// Where records and events go.
    pub sink: &'a mut dyn Sink,
    /// Actions to perform after.
    pub out: &'a mut Vec<Action>,
    /// The time of this wake-up.
    pub now: u64,
}

/// The descriptors of one `poll(2)` call, each with the token of its owner.
///
/// The set is cleared and refilled before every call, from descriptors that their owners
/// (the signals, the source, the backend, the hooks) keep open until the call returns; that
/// is what the `'static` borrows below stand for. The buffer is kept between calls so that
/// the loop allocates nothing per wake-up.
#[derive(Default)]
pub struct PollSet {
    fds: Vec<PollFd<'static>>,
    tokens: Vec<Token>,
    owner: Owner,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Owner {
    #[default]
    Backend,
    Hook,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Signal(Sig),
    Source,
    Backend(u32),
    Hook(u32),
}

impl PollSet {
    /// Adds a descriptor to watch for `events`, tagged `token`.
    pub fn push(&mut self, fd: RawFd, events: PollFlags, token: u32) {
        self.fds.push(PollFd::new(borrow(fd), events));
        self.tokens.push(match self.owner {
            Owner::Backend => Token::Backend(token),
            Owner::Hook => Token::Hook(token),
        });
    }

    fn push_token(&mut self, fd: RawFd, token: Token) {
        self.fds.push(PollFd::new(borrow(fd), PollFlags::POLLIN));
        self.tokens.push(token);
    }

    fn clear(&mut self) {
        self.fds.clear();
        self.tokens.clear();
    }
}

/// Borrows `fd` for one poll call of a [`PollSet`].
fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: the set is cleared before the next call, and every owner keeps its descriptor
    // open until this call has returned (see [`PollSet`]). A descriptor closed regardless
    // would only read POLLNVAL.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// Where the engine's actions are carried out: worker processes or threads.
pub trait Backend: Probe + Send {
    /// Starts a worker in `slot`; its pid (for a thread, the supervisor's own).
    fn spawn(&mut self, slot: SlotIndex) -> Result<u32, SpawnError>;
    /// Sends the slot's unsent assignments.
    fn dispatch(&mut self, slot: SlotIndex, engine: &mut Engine);
    /// Asks the slot's worker to finish and exit.
    fn shutdown(&mut self, slot: SlotIndex);
    /// Signals the slot's worker and its task's children.
    fn kill(&mut self, slot: SlotIndex, pid: u32, signal: Signal);
    /// Adds the descriptors to watch.
    fn poll_set(&self, set: &mut PollSet);
    /// One of its descriptors is ready.
    fn ready(&mut self, token: u32, revents: PollFlags, cx: &mut Cx<'_>);
    /// Collects ended workers (on SIGCHLD, and in thread mode on every wake-up).
    fn reap(&mut self, cx: &mut Cx<'_>);
    /// Workers alive.
    fn live(&self) -> usize;
    /// Ends every worker now (error paths).
    fn kill_all(&mut self);
    /// Thread mode: the shared tally.
    fn tally(&self) -> Option<TallyReport> {
        None
    }
    /// Stops (SIGSTOP) or continues (SIGCONT) every worker and its tasks' children, for
    /// SIGTSTP. Threads stop with the process, so by default this does nothing.
    fn freeze(&mut self, _stop: bool) {}
}

/// Extra duties of the loop that are not the engine's: flushing output before it sleeps,
/// a progress display, the control socket.
pub trait Hooks {
    /// Descriptors to watch for the hooks.
    fn poll_set(&self, _set: &mut PollSet) {}
    /// One of them is ready.
    fn ready(&mut self, _token: u32, _engine: &Engine, _backend: &dyn Backend, _now: u64) {}
    /// The loop is about to sleep: flush what is buffered.
    fn before_wait(&mut self, _engine: &Engine, _now: u64) {}
    /// The longest the loop may sleep, for periodic work (a progress bar).
    fn max_wait_ns(&self) -> Option<u64> {
        None
    }
}

/// The loop's state.
pub struct Runtime<'a> {
    /// The state machine.
    pub engine: Engine,
    /// The workers.
    pub backend: Box<dyn Backend + 'a>,
    source: Box<dyn TaskSource + 'a>,
    source_open: bool,
    source_pending: bool,
    signals: Signals,
    actions: Vec<Action>,
    jobs: Vec<crate::engine::Job>,
    set: PollSet,
    /// The clocks when the last `poll` returned, to see the loop was away (stopped,
    /// suspended) far longer than it meant to sleep.
    woke: Clocks,
}

/// CLOCK_MONOTONIC and CLOCK_BOOTTIME at one moment: the first stops during a suspend, the
/// second does not.
#[derive(Debug, Clone, Copy)]
struct Clocks {
    mono: u64,
    boot: u64,
}

impl Clocks {
    fn now() -> Self {
        let boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
            .map_or(0, |t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64);
        Self { mono: mono_ns(), boot }
    }

    /// How much longer than `meant_ns` the loop was away since `before`: the monotonic time
    /// past what it meant to sleep (the process was stopped, or starved), or the time the
    /// machine was suspended (boot time that monotonic time did not see).
    fn away_since(self, before: Clocks, meant_ns: u64) -> u64 {
        let mono = self.mono.saturating_sub(before.mono);
        let suspended = self.boot.saturating_sub(before.boot).saturating_sub(mono);
        mono.saturating_sub(meant_ns).max(suspended)
    }
}

impl<'a> Runtime<'a> {
    /// A loop over `engine`, `backend` and `source`.
    pub fn new(
        engine: Engine,
        backend: Box<dyn Backend + 'a>,
        source: Box<dyn TaskSource + 'a>,
        signals: Signals,
    ) -> Self {
        Self {
            engine,
            backend,
            source,
            source_open: true,
            source_pending: false,
            signals,
            actions: Vec::new(),
            jobs: Vec::new(),
            set: PollSet::default(),
            woke: Clocks::now(),
        }
    }

    /// One turn: take input, act, sleep until something happens, handle it. False once the
    /// run is over.
    pub fn step(&mut self, sink: &mut dyn Sink, hooks: &mut dyn Hooks) -> bool {
        let now = mono_ns();
        self.pull_input(now, sink);
        self.perform(now, sink);
        sink.flush();
        hooks.before_wait(&self.engine, now);
        if self.engine.is_done() && self.backend.live() == 0 {
            return false;
        }
        let mut wait_ns = self.engine.next_deadline(now, &*self.backend).map(|d| d.saturating_sub(now));
        if let Some(max) = hooks.max_wait_ns() {
            wait_ns = Some(wait_ns.map_or(max, |w| w.min(max)));
        }
        self.build_set(hooks);
        let timeout_ms = match wait_ns {
            None => 1000,
            Some(ns) => ns.div_ceil(1_000_000).min(1000) as u16,
        };
        // An error is EINTR (a signal, whose pipe the next call finds readable) or EAGAIN:
        // either way there is nothing to read this time.
        let n = poll(&mut self.set.fds, PollTimeout::from(timeout_ms)).unwrap_or(0);
        let clocks = Clocks::now();
        let mut now = clocks.mono;
        // Away far longer than meant (the whole job was stopped, the machine suspended, the
        // loop starved): the workers could not be heard meanwhile, so before any readiness or
        // deadline is judged, the engine gives everyone a fresh window.
        let away = clocks.away_since(self.woke, u64::from(timeout_ms) * 1_000_000);
        self.woke = clocks;
        if away >= self.engine.pause_threshold_ns() {
            self.engine.handle(Event::Paused { ns: away }, now, sink, &mut self.actions);
        }
        if n > 0 {
            for i in 0..self.set.fds.len() {
                let revents = self.set.fds[i].revents().unwrap_or(PollFlags::empty());
                if revents.is_empty() {
                    continue;
                }
                match self.set.tokens[i] {
                    Token::Signal(Sig::Child) => {
                        self.signals.drain(Sig::Child);
                        let mut cx = Cx { engine: &mut self.engine, sink, out: &mut self.actions, now };
                        self.backend.reap(&mut cx);
                    }
                    Token::Signal(Sig::Suspend) => {
                        self.signals.drain(Sig::Suspend);
                        // What the rest of this round reads (heartbeats that waited through
                        // the stop) happened after it: judged at the old time, a heartbeat
                        // would set the worker's last word back by the whole pause.
                        now = self.suspend(sink);
                    }
                    Token::Signal(sig @ Sig::Drain(which)) => {
                        let count = self.signals.drain(sig);
                        for _ in 0..count.max(1) {
                            self.engine.handle(Event::Interrupt(which), now, sink, &mut self.actions);
                        }
                    }
                    Token::Source => self.source_pending = false,
                    Token::Backend(t) => {
                        let mut cx = Cx { engine: &mut self.engine, sink, out: &mut self.actions, now };
                        self.backend.ready(t, revents, &mut cx);
                    }
                    Token::Hook(t) => hooks.ready(t, &self.engine, &*self.backend, now),
                }
                self.perform(now, sink);
            }
        }
        self.engine.tick(now, &*self.backend, sink, &mut self.actions);
        self.perform(now, sink);
        true
    }

    /// SIGTSTP: stop the workers and their tasks, then this process (as the terminal would
    /// have); once continued (SIGCONT, `fg`), continue them and tell the engine how long the
    /// run stood still, so that no timeout counts it. Returns the time it went on at.
    fn suspend(&mut self, sink: &mut dyn Sink) -> u64 {
        log::warn!("SIGTSTP: stopping the workers and the supervisor (SIGCONT or fg continues)");
        self.backend.freeze(true);
        let before = Clocks::now();
        let _ = nix::sys::signal::raise(Signal::SIGSTOP);
        let after = Clocks::now();
        self.backend.freeze(false);
        self.woke = after;
        let ns = after.away_since(before, 0);
        self.engine.handle(Event::Paused { ns }, after.mono, sink, &mut self.actions);
        after.mono
    }

    fn build_set(&mut self, hooks: &dyn Hooks) {
        self.set.clear();
        for (sig, fd) in self.signals.fds() {
            self.set.push_token(fd.as_raw_fd(), Token::Signal(sig));
        }
        if self.source_open
            && self.source_pending
            && self.engine.wants_input() > 0
            && let Some(fd) = self.source.wake_fd()
        {
            self.set.push_token(fd, Token::Source);
        }
        self.set.owner = Owner::Backend;
        self.backend.poll_set(&mut self.set);
        self.set.owner = Owner::Hook;
        hooks.poll_set(&mut self.set);
        self.set.owner = Owner::Backend;
    }

    fn pull_input(&mut self, now: u64, sink: &mut dyn Sink) {
        while self.source_open && !self.source_pending {
            let want = self.engine.wants_input();
            if want == 0 {
                if !self.engine.is_accepting() {
                    // Draining or giving up: input that has not been read stays unread.
                    self.source_open = false;
                }
                return;
            }
            self.jobs.clear();
            let pulled = self.source.pull(want, &mut self.jobs);
            self.engine.push_jobs(self.jobs.drain(..), now, sink, &mut self.actions);
            match pulled {
                Pull::Ready => {}
                Pull::Pending => self.source_pending = true,
                Pull::End => {
                    self.source_open = false;
                    self.engine.input_ended(now, sink, &mut self.actions);
                }
                Pull::Failed(error) => {
                    self.source_open = false;
                    self.engine.input_failed(error, now, sink, &mut self.actions);
                }
            }
        }
    }

    /// Carries out the engine's actions, including those that performing them produces.
    fn perform(&mut self, now: u64, sink: &mut dyn Sink) {
        while !self.actions.is_empty() {
            let actions = std::mem::take(&mut self.actions);
            for a in actions {
                match a {
                    Action::Spawn { slot } => {
                        let r = self.backend.spawn(slot);
                        self.engine.spawned(slot, r, now, sink, &mut self.actions);
                    }
                    Action::Dispatch { slot } => self.backend.dispatch(slot, &mut self.engine),
                    Action::Shutdown { slot } => self.backend.shutdown(slot),
                    Action::Kill { slot, pid, signal } => self.backend.kill(slot, pid, signal),
                }
            }
        }
    }

    /// Queues an action decided outside the loop (an interrupt, a fatal output error).
    pub fn push_action(&mut self, a: Action) {
        self.actions.push(a);
    }

    /// Thread mode: the shared tally.
    pub fn thread_report(&self) -> Option<TallyReport> {
        self.backend.tally()
    }
}

impl Drop for Runtime<'_> {
    fn drop(&mut self) {
        // Normally nothing is left; after an early return or a panic, no worker may outlive
        // the loop.
        self.backend.kill_all();
    }
}
