//! The worker side of bulkhead: the [`Handler`] interface that task code implements, the serve
//! loop a worker process runs, the built-in task kinds, and the faults that demos inject.
//!
//! A worker is the supervisor's own executable started again with a marker in its
//! environment; [`serve_if_worker`] at the top of `main` notices the marker and never returns.
#![warn(missing_docs)]

pub mod builtin;
pub mod clock;
mod error_chain;
pub mod execute;
pub mod fault;
mod handler;
mod logger;
pub mod procs;
mod serve;
pub mod slot;
mod startup;
pub mod statuspage;

pub use error_chain::ErrorChain;
pub use handler::{At, Handler, TaskContext};

/// Identifies the worker code of this build (a hash of its sources): a separate worker
/// executable is used only when its id is the supervisor's own.
pub const BUILD_ID: &str = env!("BULKHEAD_BUILD_ID");
/// The stack reserved for each task thread of a hybrid worker (`--threads-per-worker`): std's
/// default, set explicitly so that the supervisor can check that the stacks fit under an
/// address-space limit.
pub const TASK_STACK_BYTES: usize = 2 << 20;
pub use serve::{exit_if_unserved_worker, serve_if_worker};
pub use shared::proto::TaskError;

/// Environment variables through which a supervisor configures the workers it starts. They
/// are read before the socket is, because limits and the parent-death signal must be in
/// place before the worker does anything else.
pub mod env {
    /// The marker: its value names the handler the worker must serve.
    pub const WORKER: &str = "BULKHEAD_WORKER";
    /// The supervisor's pid, to close the race where it dies before the parent-death signal
    /// is armed.
    pub const SUPERVISOR_PID: &str = "BULKHEAD_SUPERVISOR_PID";
    /// Address-space limit (`RLIMIT_AS`) in bytes.
    pub const ADDRESS_SPACE_LIMIT: &str = "BULKHEAD_ADDRESS_SPACE_LIMIT";
    /// The user's `RUST_BACKTRACE` (empty: unset), when the supervisor set the worker's own to
    /// 0; shell tasks get the user's back.
    pub const USER_BACKTRACE: &str = "BULKHEAD_USER_RUST_BACKTRACE";
    /// The supervisor's drain grace in milliseconds: how long a task stays held when a
    /// signal sent to the whole job killed its command (see the `shell` kind).
    pub const DRAIN_GRACE_MS: &str = "BULKHEAD_DRAIN_GRACE_MS";
    /// The job slot of the worker's first task thread, from 1 (GNU parallel's `{%}`): the
    /// worker's slot times its threads, plus 1.
    pub const JOB_SLOT: &str = "BULKHEAD_JOB_SLOT";
    /// Set (to any value) when the supervisor wants each task's start marked on stderr, so
    /// that it can name the task of every line that follows.
    pub const TASK_MARKS: &str = "BULKHEAD_TASK_MARKS";
    /// The most verbose `log` level the worker forwards (`error` to `trace`, or `off`).
    pub const LOG_LEVEL: &str = "BULKHEAD_WORKER_LOG";
}
