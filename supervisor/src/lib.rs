//! bulkhead runs batches of tasks over crash-isolated worker processes, and is the library
//! behind the `bulkhead` command line.
//!
//! You define a task type, an output type and a [`Handler`]; a [`Pool`] runs a batch of
//! tasks on workers and hands back a [`TaskResult`] per task as they finish: its status
//! (`ok`, `failed`, `quarantined`), the attempts it took, its output or error, and every
//! crash it caused. A run that stops before its end (a crash loop it gave up on, bad input,
//! an interrupt) ends with a [`RunError`] that lists every task it left unrun. Switching between processes and threads is one line, as with Python's
//! `concurrent.futures`:
//!
//! ```standalone_crate
//! use bulkhead::{Handler, Mode, Pool, TaskContext, TaskError};
//! use serde::{Deserialize, Serialize};
//!
//! // The handler's value is its configuration: the pool sends it to every worker.
//! #[derive(Serialize, Deserialize)]
//! struct Power {
//!     exponent: u32,
//! }
//!
//! impl Handler for Power {
//!     type Task = u64;
//!     type Output = u64;
//!     fn handle(&self, n: u64, _cx: &TaskContext<'_>) -> Result<u64, TaskError> {
//!         n.checked_pow(self.exponent).ok_or_else(|| TaskError::new("overflow"))
//!     }
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // First thing in main: in a worker process this serves tasks and never returns.
//!     bulkhead::serve_if_worker::<Power>();
//!
//!     for mode in [Mode::Process, Mode::Thread] {
//!         let pool = Pool::builder().mode(mode).workers(2).build(Power { exponent: 2 })?;
//!         let mut sum = 0;
//!         for r in pool.run(1..=10u64)? {
//!             // `?`: a run that stopped early (gave up, interrupted) ends with its error.
//!             sum += r?.output.expect("every task is ok");
//!         }
//!         assert_eq!(sum, 385);
//!     }
//!     Ok(())
//! }
//! ```
//!
//! # The rule for process mode
//!
//! Process mode needs an executable that knows your handler. Your own program serves: the
//! pool starts it again with a marker in its environment, and [`serve_if_worker`] at the top
//! of `main` sees the marker, serves tasks, and exits. Call it **first**, before starting
//! threads, parsing arguments or touching files: a worker's start-up (parent-death signal,
//! address-space limit, moving its socket off standard input) assumes a fresh single-threaded
//! process, and nothing before the call should have side effects twice. A program with
//! several handlers calls it once per handler type; each serves only when asked for by name
//! ([`Handler::name`]). The worker serves the very handler value the pool was built with: it
//! travels, serialized, with the handshake. A worker that reaches [`PoolBuilder::build`]
//! instead (the call is missing, or comes too late) exits at once, and the run stops at that
//! first worker with an error that names the call and where it goes. To use another
//! executable, see [`PoolBuilder::worker_program`].
//!
//! # One task at a time, and async code
//!
//! [`Pool::submit`] hands back a [`Handle`] at once: [`Handle::join`], [`Handle::join_timeout`]
//! (the task goes on), [`Handle::cancel`] (a task a worker process is executing is stopped by
//! killing that worker, which is replaced at once), and, with the `async` feature (on by
//! default, no dependency), `handle.await`, woken by the pool's own thread, so no executor
//! thread blocks. A [`Run`] is `Send`.
//!
//! # What workers print and log
//!
//! A handler's `eprintln!` (and `println!`) in a worker process, and its `log` records (a
//! worker installs a logger; [`PoolBuilder::worker_log_level`], default info), reach this
//! process's stderr, each line named by its worker and task: `[worker 1 task 17] WARN app:
//! odd line`. [`WorkerOutput::Capture`] keeps each task's lines in its result's `log`
//! instead ([`PoolBuilder::worker_output`]).
//!
//! # Features
//!
//! `cli` (default) is the `bulkhead` command line and its dependencies (clap, env_logger,
//! maud, indicatif); a library user can leave it out with `default-features = false`.
//! `async` (default) makes [`Handle`] a future. `progress-bar` draws
//! [`PoolBuilder::progress`] as a bar (else a line every few seconds).
//!
//! # Theory of operation
//!
//! One thread owns everything (the run loop): it polls the workers' sockets and stderr
//! pipes, signal pipes and the input's wake-up, feeds what happens to the
//! engine — a pure state machine that decides which worker gets which tasks, who is to
//! blame for a death, when to retry, quarantine, restart or give up — and performs the
//! actions it returns.
//!
//! - **Workers** are started with `std::process::Command` and no `pre_exec`, so std uses
//!   posix_spawn (about 1 ms to ready, independent of the supervisor's size). Each gets one
//!   end of a socketpair as its standard input and a small shared-memory status page.
//! - **Messages** are serde types encoded with postcard in length-prefixed frames (see the
//!   `shared` crate); a version handshake comes first.
//! - **Batching**: each worker keeps about 2 ms of work queued at its measured pace (one
//!   task at a time while the pace is unknown), so tiny tasks travel by the thousand per frame
//!   and a slow task never strands others behind it. Results come back in batches.
//! - **Exact blame**: before and after each task a worker stores one word on its status page.
//!   When it dies, the supervisor reads the page: the task that was executing is charged an
//!   attempt, tasks only queued there go back free.
//! - **Deaths** are seen twice, as EOF (or a bad frame) on the socket and as SIGCHLD, and the
//!   cause is decided in one place from the supervisor's own reason (timeout, unresponsive,
//!   protocol), a panic report, the wait status, and the worker's last words on stderr (the
//!   only place an allocation failure or a stack overflow is named).
//! - **Restarts** back off after repeated deaths that no task answers for (a worker that dies
//!   at start or between tasks), with jitter, and an intensity
//!   limit in the manner of Erlang/OTP gives up on a crash loop.
//! - **Thread mode** runs the same engine over threads of this process, sharing a real
//!   `std::sync::Mutex` tally; there a panic poisons shared state and a segfault ends
//!   everything, which is what it is for: the contrast.
//! - **Results** can go to a JSONL file that is also the journal: a record there means done;
//!   [`PoolBuilder::resume`] skips those tasks.
//!
//! ARCHITECTURE.md in the repository draws the same picture and lists the pitfalls.
#![warn(missing_docs)]
// The modules are the implementation; the API is the `pub use` list below. A type that a
// public signature shows but that list forgot would be unnameable to a user: this says so.
#![warn(unnameable_types)]
// Without the command line, its input formats, sources and settings have no caller. Dead code
// is checked in the default build, where every caller is present.
#![cfg_attr(not(feature = "cli"), allow(dead_code, reason = "the command line's code has no caller without it"))]

#[cfg(feature = "cli")]
mod cli;
mod engine;
mod input;
mod output;
mod pool;
#[cfg(feature = "cli")]
mod report;
mod runtime;

pub use engine::config::MAX_TASK_BYTES;
pub use engine::halt::{Halt, HaltError, HaltLimit, HaltOn, HaltWhen};
pub use engine::lifecycle::{Retirement, RunEvent, TaskLabel, Timed, WorkerExit};
pub use engine::{Counts, FaultPlan, Interrupt, Misuse, Mode, Poison, RestartLimit, Seq, SlotIndex, StopReason};
pub use input::error::{IdOrigin, InputError, Place, Problem};
pub use input::lines::NotAnItem;
pub use input::source::{ChannelSource, TaskSender, TaskSpec, channel};
pub use output::events::EventsError;
pub use output::failure::OutputFailure;
pub use output::files::{PathError, Role};
pub use output::journal::{JournalError, RecordConflict, ResultsTarget};
pub use pool::{
    Handle, JoinError, MIN_ADDRESS_SPACE_LIMIT, MIN_MEMORY_LIMIT, MIN_TIMEOUT, NotRun, Pool, PoolBuilder, PoolError,
    Run, RunError, SettingError, SubmitResult, Summary, TaskResult, WorkerOutput,
};
pub use runtime::process::spawn::WorkerProgram;
pub use runtime::tally::{Tally, TallyReport};
pub use shared::record::{Crash, CrashCause, SkippedRecord, Status};
pub use shared::task::FaultKind;
pub use worker::{At, Handler};

/// In a handler: the attempt, where in its records the task is ([`TaskContext::at`]), and
/// its progress ([`TaskContext::progress`], which
/// [`PoolBuilder::stall_timeout`] watches).
///
/// ```
/// use bulkhead::{Handler, TaskContext, TaskError};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Sum;
///
/// impl Handler for Sum {
///     type Task = Vec<u64>;
///     type Output = u64;
///     fn handle(&self, records: Vec<u64>, cx: &TaskContext<'_>) -> Result<u64, TaskError> {
///         if cx.attempt() > 1 {
///             log::warn!("attempt {}: an earlier one crashed", cx.attempt());
///         }
///         let mut sum = 0;
///         for (i, r) in records.iter().enumerate() {
///             if cx.at(i).skip() {
///                 continue; // it crashed a worker before (`skip_bad_records`)
///             }
///             sum += r;
///             cx.progress(1);
///         }
///         Ok(sum)
///     }
/// }
/// # let group = std::sync::atomic::AtomicI32::new(0);
/// # assert_eq!(Sum.handle(vec![1, 2, 3], &TaskContext::new(1, &group)).unwrap(), 6);
/// ```
pub use worker::TaskContext;

/// A handler's own failure: the task ends `failed` with this message (and is retried only
/// with [`PoolBuilder::retry_failed`]); a panic or a crash is a different thing, the
/// worker's death.
///
/// ```
/// use bulkhead::{Handler, TaskContext, TaskError};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Parse;
///
/// impl Handler for Parse {
///     type Task = String;
///     type Output = i64;
///     fn handle(&self, text: String, _: &TaskContext<'_>) -> Result<i64, TaskError> {
///         text.trim().parse().map_err(|e| TaskError::new(format!("{text:?}: {e}")))
///     }
/// }
/// # let group = std::sync::atomic::AtomicI32::new(0);
/// # assert!(Parse.handle("x".into(), &TaskContext::new(1, &group)).is_err());
/// ```
pub use worker::TaskError;

/// The first line of `main` of a program that uses process mode (no other code before it
/// should have side effects): in a worker process started by a pool of handler `H`, it
/// serves tasks and exits; anywhere else it returns at once.
///
/// ```no_run
/// # use bulkhead::{Handler, Pool, TaskContext, TaskError};
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # struct Double;
/// # impl Handler for Double { type Task = u32; type Output = u32;
/// #   fn handle(&self, t: u32, _: &TaskContext<'_>) -> Result<u32, TaskError> { Ok(2 * t) } }
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     bulkhead::serve_if_worker::<Double>();
///     // Only the parent gets here: arguments, files, an async runtime come after.
///     let pool = Pool::builder().workers(4).build(Double)?;
///     for r in pool.run(0..10u32)? {
///         println!("{:?}", r?.output);
///     }
///     Ok(())
/// }
/// ```
pub use worker::serve_if_worker;

/// Not API: the `bulkhead` binary's entry, and the internals that this package's benchmarks
/// measure. Hidden from the docs, outside any compatibility promise, and for this package's
/// own targets only.
#[doc(hidden)]
pub mod __private {
    /// The command line: `main` of the `bulkhead` binary, and the load meter and number
    /// format of the benchmark suite.
    #[cfg(feature = "cli")]
    pub use crate::cli::{
        load::{CpuSnap, NOISY_CORES, OtherLoad},
        main as cli_main,
        units::group_digits,
    };
    /// The hot paths `benches/hot_paths.rs` measures.
    pub use crate::input::idset::IdSet;
    pub use crate::output::journal::write_record;
    pub use crate::pool::decode_output;
}
