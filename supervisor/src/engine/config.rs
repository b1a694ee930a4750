//! The policies a run's engine is built with, in engine units (nanoseconds), and the
//! isolation mode.

use shared::task::FaultKind;

use crate::engine::inject::Inject;
use crate::engine::restart::RestartPolicy;

/// The most tasks in flight on one worker thread; beyond this, queueing only adds latency.
pub const MAX_INFLIGHT_PER_THREAD: usize = 4096;

/// The largest task input a worker can be sent: one task must fit in one message frame
/// (16 MiB) beside the few bytes of its assignment (sequence number, attempt, fault, lengths:
/// at most 33).
pub const MAX_TASK_BYTES: usize = shared::MAX_FRAME as usize - 64;

/// A fault carried by a task, and on which attempts it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultPlan {
    /// The fault.
    pub kind: FaultKind,
    /// Fires on attempts `1..=n`; `None` on every attempt (a poison task).
    pub attempts: Option<u32>,
}

/// The policies of a run, in engine units (nanoseconds).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Worker slots.
    pub workers: usize,
    /// Tasks one worker runs at once (hybrid mode above 1).
    pub threads_per_worker: u32,
    /// Attempts per task before quarantine.
    pub attempts: u32,
    /// Per-task wall-clock limit.
    pub timeout_ns: Option<u64>,
    /// Silence after which a worker counts as unresponsive (`None`: never, thread mode).
    pub heartbeat_timeout_ns: Option<u64>,
    /// SIGTERM to SIGKILL.
    pub term_grace_ns: u64,
    /// How long a closed or broken connection waits for the death that explains it.
    pub protocol_grace_ns: u64,
    /// How long a new worker may take to become ready.
    pub start_timeout_ns: u64,
    /// How long running tasks may finish after SIGINT/SIGTERM.
    pub drain_grace_ns: u64,
    /// Restart backoff and intensity.
    pub restart: RestartPolicy,
    /// Retry tasks whose handler reported an error, within `attempts`.
    pub retry_failed: bool,
    /// Random faults.
    pub inject: Option<Inject>,
    /// Work to keep queued per worker thread, by the measured task duration.
    pub queue_budget_ns: u64,
    /// Seed for backoff jitter.
    pub seed: u64,
    /// The largest encoded task input; a larger task fails when it is taken in, unrun.
    pub max_task_bytes: usize,
    /// The resident memory a task's worker and process tree may use together, in bytes.
    pub memory_limit: Option<u64>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            workers: 2,
            threads_per_worker: 1,
            attempts: 3,
            timeout_ns: None,
            heartbeat_timeout_ns: Some(2_000_000_000),
            term_grace_ns: 500_000_000,
            protocol_grace_ns: 200_000_000,
            start_timeout_ns: 10_000_000_000,
            drain_grace_ns: 10_000_000_000,
            restart: RestartPolicy::default(),
            retry_failed: false,
            inject: None,
            queue_budget_ns: 2_000_000,
            seed: 0,
            max_task_bytes: MAX_TASK_BYTES,
            memory_limit: None,
        }
    }
}

/// How tasks are isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Each worker is a process: a crash ends only that worker, which is replaced, and its
    /// task is retried.
    #[default]
    Process,
    /// Each worker is a thread of this process: cheaper, but a crash ends everything and a
    /// panic poisons the shared state.
    Thread,
}
