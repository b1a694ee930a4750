//! What goes in and out of the engine: the events it is fed, the actions it answers with, the
//! sink that takes records and lifecycle events, why a run stopped, and the running totals.

use std::collections::BTreeMap;
use std::sync::Arc;

use nix::sys::signal::Signal;
use shared::proto::{Outcome, PanicReport, TaskError};
use shared::record::Crash;
use shared::shm;

use crate::engine::ExitCause;
use crate::engine::blame::Rule;
use crate::engine::halt::Halt;
use crate::engine::ids::{Seq, SlotIndex};
use crate::engine::lifecycle::RunEvent;
use crate::input::error::InputError;

/// Something for the loop to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a worker in `slot`, then call [`Engine::spawned`](crate::engine::Engine::spawned).
    Spawn {
        /// The slot.
        slot: SlotIndex,
    },
    /// Send the slot's new assignments ([`Engine::take_unsent`](crate::engine::Engine::take_unsent)).
    Dispatch {
        /// The slot.
        slot: SlotIndex,
    },
    /// Ask the slot's worker to finish and exit.
    Shutdown {
        /// The slot.
        slot: SlotIndex,
    },
    /// Send `signal` to the worker's process group and its task's child groups.
    Kill {
        /// The slot.
        slot: SlotIndex,
        /// The worker.
        pid: u32,
        /// SIGTERM first, SIGKILL when it must go now.
        signal: Signal,
    },
}

/// A signal that stops a run: SIGINT, SIGTERM, or another whose default would end the
/// process (SIGHUP, SIGUSR1, SIGUSR2, SIGALRM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Interrupt {
    /// Ctrl-C.
    Int,
    /// A polite kill, as from systemd or a cluster's preemption.
    Term,
    /// Drained like SIGTERM: SIGHUP (a closed ssh session), SIGUSR1 (Slurm's warning before a
    /// time limit)...; the signal's number, as `libc::SIGHUP` names it (a plain number, so
    /// that no signal crate's type is part of this API).
    Other(i32),
}

impl Interrupt {
    /// The signal's name.
    pub fn name(self) -> &'static str {
        match self {
            Interrupt::Int => "SIGINT",
            Interrupt::Term => "SIGTERM",
            Interrupt::Other(n) => Signal::try_from(n).map_or("signal", Signal::as_str),
        }
    }
}

/// Something that happened.
#[derive(Debug)]
pub enum Event<'a> {
    /// The slot's worker answered its hello.
    Ready {
        /// The slot.
        slot: SlotIndex,
    },
    /// Results from the slot's worker.
    Outcomes {
        /// The slot.
        slot: SlotIndex,
        /// In the order they finished.
        outcomes: &'a [Outcome<'a>],
    },
    /// A heartbeat.
    Heartbeat {
        /// The slot.
        slot: SlotIndex,
    },
    /// The worker's panic hook reported a panic; its death follows.
    Panic {
        /// The slot.
        slot: SlotIndex,
        /// The report.
        report: PanicReport,
    },
    /// The worker's connection ended (`detail: None`: a clean close) or broke.
    ChannelEnded {
        /// The slot.
        slot: SlotIndex,
        /// What was wrong, for a broken connection.
        detail: Option<String>,
    },
    /// The slot's worker ended, as the kernel reports it.
    Reaped {
        /// The slot.
        slot: SlotIndex,
        /// The worker.
        pid: u32,
        /// How it ended.
        exit: ExitCause,
        /// Tasks its status page showed executing.
        executing: Vec<Seq>,
        /// The record each executing task last reported being on (`cx.at`): (seq, index).
        records: Vec<(Seq, u64)>,
        /// The task its status page names as the cause, in hybrid mode.
        culprit: Option<Seq>,
        /// The end of its stderr.
        stderr_tail: String,
    },
    /// The memory watch found the slot's worker and its tasks' processes over the running
    /// task's memory limit, and killed them.
    OverMemory {
        /// The slot.
        slot: SlotIndex,
        /// The worker.
        pid: u32,
        /// The limit, in bytes.
        limit: u64,
        /// The resident bytes it saw.
        peak: u64,
    },
    /// SIGINT or SIGTERM.
    Interrupt(Interrupt),
    /// The whole run was stopped for `ns` and goes on now: SIGTSTP (the workers were stopped
    /// with it), a SIGSTOP of the job, a frozen cgroup, a suspended machine; seen as the loop
    /// being away far longer than it meant to sleep.
    Paused {
        /// How long.
        ns: u64,
    },
}

/// Reads the slots' status pages.
pub trait Probe {
    /// The status-page slots of `slot`'s current worker.
    fn page(&self, slot: SlotIndex) -> Option<&[shm::PageSlot]>;

    /// The resident size of `slot`'s current worker in bytes, where it is a process of its
    /// own (`None` for threads, or when it cannot be read).
    fn resident(&self, _slot: SlotIndex) -> Option<u64> {
        None
    }
}

/// How a task ended, for its final record.
#[derive(Debug)]
pub enum Ending<'a> {
    /// The handler's output, postcard-encoded.
    Ok(&'a [u8]),
    /// The handler's error.
    Failed(TaskError),
    /// Crashed on every attempt.
    Quarantined,
}

/// A task's end, for its final record.
#[derive(Debug)]
pub struct Finished<'a> {
    /// The task's id.
    pub id: &'a str,
    /// Its label ([`crate::engine::Job::label`]).
    pub label: &'a str,
    /// Its place among the jobs the run was given, from 0 (the order `-k` keeps).
    pub order: u64,
    /// The seq of its last attempt's assignment; `None` when it never ran.
    pub seq: Option<Seq>,
    /// Attempts used.
    pub attempts: u32,
    /// Time of the last attempt in its worker.
    pub micros: Option<u64>,
    /// How it ended.
    pub ending: Ending<'a>,
    /// Its crashes, oldest first.
    pub crashes: Vec<Crash>,
    /// The retry rule that ended it, for a failed or quarantined task (`None` for one that
    /// never ran).
    pub rule: Option<Rule>,
    /// The factor its last attempt's memory limit was multiplied by (a retry rule of the command line that raises the memory limit); 1
    /// as given.
    pub memory_factor: u32,
    /// The peak resident memory of its worker's tree in the last attempt, where sampled.
    pub peak_rss: Option<u64>,
    /// Processes its command left running (stopped), where any.
    pub leaked: Option<u32>,
    /// Records inside the task set aside after they crashed its worker, in the order found.
    pub skipped: Vec<shared::record::SkippedRecord>,
}

/// Where records and events go.
pub trait Sink {
    /// A task's final record.
    fn finished(&mut self, f: Finished<'_>);
    /// Whether anyone listens to events; if not, none are built.
    fn wants_events(&self) -> bool;
    /// An event, `t` seconds after the run started.
    fn event(&mut self, t: f64, ev: RunEvent);
    /// The loop is about to wait: write out what is buffered.
    fn flush(&mut self) {}
    /// A line a worker process wrote on its stderr (or a `log` record of its handler). By
    /// default it goes to this process's `log` at debug level.
    fn worker_line(&mut self, line: WorkerLine<'_>) {
        log::debug!("{line}");
    }
}

/// One line from a worker process's stderr, with the task it belongs to when that is known.
#[derive(Debug, Clone, Copy)]
pub struct WorkerLine<'a> {
    /// The worker's slot.
    pub slot: SlotIndex,
    /// Its pid.
    pub pid: u32,
    /// The id of the task that was running when the line was written.
    pub task: Option<&'a str>,
    /// For a `log` record of the handler, its level and target; `None` for what the program
    /// wrote on stderr itself.
    pub record: Option<(log::Level, &'a str)>,
    /// The line, without its newline.
    pub text: &'a str,
}

impl WorkerLine<'_> {
    /// The prefix that names its worker and task: `[worker 1 task 17]`.
    pub fn prefix(&self) -> String {
        match self.task {
            Some(id) => format!("[worker {} task {id}]", self.slot),
            None => format!("[worker {} pid {}]", self.slot, self.pid),
        }
    }

    /// The line as kept with a task's result: a record starts with its level and target.
    pub fn body(&self) -> String {
        match self.record {
            Some((level, target)) => format!("{level} {target}: {}", self.text),
            None => self.text.to_string(),
        }
    }
}

impl std::fmt::Display for WorkerLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.prefix(), self.body())
    }
}

/// Why a worker could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The worker process did not start.
    #[error("cannot start {}", exe.display())]
    Process {
        /// Its executable.
        exe: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The worker thread did not start.
    #[error("cannot start a thread")]
    Thread(#[source] std::io::Error),
}

impl SpawnError {
    /// Whether the system refused for a limit on processes or threads (`fork` and `clone`
    /// fail with EAGAIN at RLIMIT_NPROC, at the cgroup's pids.max, at the kernel's
    /// threads-max): trying again at once cannot help, running with fewer workers can.
    pub fn is_process_limit(&self) -> bool {
        let (SpawnError::Process { source, .. } | SpawnError::Thread(source)) = self;
        source.raw_os_error() == Some(libc::EAGAIN)
    }
}

/// Thread mode: which task poisoned the shared tally, and what the tally showed then.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "shared state poisoned at {at:.3}s: task '{task}' panicked on thread {thread} while holding the tally's lock \
     ({message}); the tally no longer adds up (finished {finished} but ok {ok} + failed {failed})"
)]
pub struct Poison {
    /// The task whose panic poisoned it.
    pub task: String,
    /// The thread (slot) that ran it.
    pub thread: SlotIndex,
    /// Seconds since the run began.
    pub at: f64,
    /// The panic's message.
    pub message: String,
    /// The tally's count of finished tasks, read through the poison.
    pub finished: u64,
    /// Of which ok.
    pub ok: u64,
    /// Of which failed.
    pub failed: u64,
}

/// Why a run stopped. The exit code each gives is decided in one place,
/// [`Summary::exit_code`](crate::pool::Summary::exit_code).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StopReason {
    /// Every task has a final record.
    #[error("every task has a final record")]
    Completed,
    /// A signal; unfinished tasks stay for `resume`.
    #[error("interrupted by {}", .0.name())]
    Interrupted(Interrupt),
    /// Workers died faster than the restart limit allows.
    #[error(transparent)]
    RestartLimit(RestartLimit),
    /// A worker speaks another protocol version than this supervisor.
    #[error(
        "worker {slot} speaks protocol version {theirs}, this supervisor {ours}: the executable changed under a running batch?"
    )]
    ProtocolMismatch {
        /// The worker's slot.
        slot: SlotIndex,
        /// Its version.
        theirs: u32,
        /// Ours.
        ours: u32,
    },
    /// A worker did not serve the pool's handler: every replacement would end the same way.
    #[error("worker {slot} (pid {pid}) {misuse}")]
    NotServed {
        /// The worker's slot.
        slot: SlotIndex,
        /// Its process.
        pid: u32,
        /// What it did instead.
        misuse: Misuse,
    },
    /// The results could not be written: running more tasks would only lose their records.
    #[error("cannot write results to {path}")]
    ResultsWriteFailed {
        /// The results file, or "standard output".
        path: String,
        /// The system's error.
        #[source]
        error: Arc<std::io::Error>,
    },
    /// A bad task in streamed input.
    #[error("{0}")]
    BadInput(Arc<InputError>),
    /// Thread mode: the shared state was poisoned.
    #[error("{0}")]
    Poisoned(Poison),
    /// A halt rule was reached; unfinished tasks stay for `resume`.
    #[error("halted by --halt {0}")]
    Halted(Halt),
}

/// How a worker failed to serve the pool's handler; each says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Misuse {
    /// Its program reached building a pool: `serve_if_worker` was not called first.
    #[error(
        "did not serve handler '{handler}': its program built a pool instead; call \
         bulkhead::serve_if_worker::<{handler}>() as the first line of main in {exe}, before anything else runs"
    )]
    BuiltAPool {
        /// The pool's handler.
        handler: String,
        /// The worker's executable.
        exe: String,
    },
    /// It exited with status 0 before its handshake.
    #[error(
        "exited before its handshake without serving handler '{handler}': call \
         bulkhead::serve_if_worker::<{handler}>() as the first line of main in {exe}, before anything else runs \
         (its last words: {said})"
    )]
    ExitedEarly {
        /// The pool's handler.
        handler: String,
        /// The worker's executable.
        exe: String,
        /// Its last line on stderr.
        said: String,
    },
    /// It refused the handshake (another handler, a configuration it cannot decode).
    #[error("refused its handshake: {said}")]
    Refused {
        /// Its last line on stderr.
        said: String,
    },
}

/// The restart limit was passed: more restarts within the period than allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "gave up: workers died {restarts} times within {:.1}s, more than --max-restarts {max}/{:.1}s allows (last: worker {slot} {what})",
    *.period_ns as f64 / 1e9,
    *.period_ns as f64 / 1e9
)]
pub struct RestartLimit {
    /// Restarts counted within the period.
    pub restarts: u32,
    /// Restarts allowed within the period.
    pub max: u32,
    /// The period.
    pub period_ns: u64,
    /// The slot whose death passed the limit.
    pub slot: SlotIndex,
    /// How that worker ended.
    pub what: String,
}

impl StopReason {
    /// The `reason` of the `shutdown` event.
    pub fn word(&self) -> &'static str {
        match self {
            StopReason::Completed => "completed",
            StopReason::Interrupted(Interrupt::Int) => "interrupted",
            StopReason::Interrupted(Interrupt::Term) => "terminated",
            StopReason::Interrupted(Interrupt::Other(libc::SIGHUP)) => "hung_up",
            StopReason::Interrupted(Interrupt::Other(_)) => "signalled",
            StopReason::RestartLimit(_) | StopReason::ProtocolMismatch { .. } | StopReason::NotServed { .. } => {
                "gave_up"
            }
            StopReason::ResultsWriteFailed { .. } => "output_failed",
            StopReason::BadInput(_) => "bad_input",
            StopReason::Poisoned(_) => "poisoned",
            StopReason::Halted(_) => "halted",
        }
    }

    /// Whether the run stops at once, killing what runs (rather than draining).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            StopReason::RestartLimit(_)
                | StopReason::ProtocolMismatch { .. }
                | StopReason::NotServed { .. }
                | StopReason::ResultsWriteFailed { .. }
        )
    }
}

/// Running totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Tasks ended `ok`.
    pub ok: u64,
    /// Tasks ended `failed`.
    pub failed: u64,
    /// Tasks quarantined.
    pub quarantined: u64,
    /// Worker deaths by cause name.
    pub crashes: BTreeMap<&'static str, u64>,
    /// Workers restarted.
    pub restarts: u64,
    /// Tasks requeued after a death (charged or not).
    pub requeued: u64,
    /// Task attempts handed to workers.
    pub dispatched: u64,
    /// Worker slots given up because the system allowed no more processes: the run went on
    /// with the others.
    pub slots_retired: u64,
    /// Workers retired between tasks and replaced (recycling): not crashes.
    pub retired: u64,
}

impl Counts {
    /// Tasks with a final record.
    pub fn finished(&self) -> u64 {
        self.ok + self.failed + self.quarantined
    }

    /// All worker deaths.
    pub fn crashes_total(&self) -> u64 {
        self.crashes.values().sum()
    }
}
