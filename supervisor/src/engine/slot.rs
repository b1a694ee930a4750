//! A worker slot's lifecycle. A slot is a lane of the pool: it holds one worker at a time
//! and outlives each of them; its state carries what that stage needs (pids, timestamps,
//! deadlines) forward, as nextest's `UnitState` does.

use crate::engine::ids::Seq;
use crate::engine::lifecycle::Retirement;

/// Why the supervisor is ending a worker. The reason, not the wait status, decides the crash
/// cause of a worker we killed, and whether its death is charged to a task at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillReason {
    /// Asked to exit because there is nothing left for it; a clean end.
    Shutdown,
    /// Its task ran past `--timeout`.
    Timeout {
        /// The task that timed out.
        seq: Seq,
        /// The limit.
        limit_ms: u64,
    },
    /// Its task reported no progress for `--stall-timeout`.
    Stalled {
        /// The stalled task.
        seq: Seq,
        /// The limit.
        limit_ms: u64,
        /// The progress it had reported.
        progress: u64,
    },
    /// No frame or heartbeat for too long.
    Unresponsive {
        /// How long it had been silent.
        silent_ms: u64,
    },
    /// It broke the protocol, or closed its socket and stayed alive.
    Protocol {
        /// What it did.
        detail: String,
    },
    /// The run is draining after a signal and the grace is over; its tasks stay unfinished,
    /// uncharged.
    Drain,
    /// The run gave up (restart limit); its tasks stay unfinished, uncharged.
    GiveUp,
    /// Asked to exit between tasks to be replaced (recycling); a clean end, nobody charged.
    Retire(Retirement),
    /// The resident memory of the worker and its tasks' processes went past the running
    /// task's `--memory-limit`; the memory watch has already killed the whole tree.
    Memory {
        /// The limit, in bytes.
        limit: u64,
        /// The resident bytes the sample that found it over saw.
        peak: u64,
    },
    /// Its first task was cancelled by its caller; the others go back uncharged.
    Cancel,
}

impl KillReason {
    /// Whether a death for this reason is the task's fault and counts as a crash.
    pub fn is_crash(&self) -> bool {
        matches!(
            self,
            KillReason::Timeout { .. }
                | KillReason::Stalled { .. }
                | KillReason::Unresponsive { .. }
                | KillReason::Protocol { .. }
                | KillReason::Memory { .. }
        )
    }
}

/// Where a slot's current worker is in its life. All times are CLOCK_MONOTONIC nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotState {
    /// No worker; start one at `until` (a first start, or a restart after backoff).
    Waiting {
        /// When to start.
        until: u64,
        /// The backoff that was chosen, for the `worker_restarted` event; `None` for the first
        /// start.
        backoff_ns: Option<u64>,
    },
    /// Spawned, not yet ready.
    Starting {
        /// Its pid.
        pid: u32,
        /// When it was spawned.
        since: u64,
    },
    /// Ready and taking tasks.
    Serving {
        /// Its pid.
        pid: u32,
        /// When it became ready.
        since: u64,
        /// When it last sent anything.
        last_heard: u64,
    },
    /// Its connection ended or broke without our asking; waiting a moment for the kernel to
    /// report the death that usually explains it, before killing it.
    Closing {
        /// Its pid.
        pid: u32,
        /// When the connection ended.
        since: u64,
        /// What was wrong with the connection.
        detail: String,
    },
    /// We are ending it and wait for the reap.
    Terminating {
        /// Its pid.
        pid: u32,
        /// Why.
        reason: KillReason,
        /// When to escalate to SIGKILL, if not yet done.
        kill_at: Option<u64>,
    },
    /// No worker, and none will be started again.
    Stopped,
}

impl SlotState {
    /// The pid of the worker the slot holds, if any.
    pub fn pid(&self) -> Option<u32> {
        match self {
            SlotState::Starting { pid, .. }
            | SlotState::Serving { pid, .. }
            | SlotState::Closing { pid, .. }
            | SlotState::Terminating { pid, .. } => Some(*pid),
            SlotState::Waiting { .. } | SlotState::Stopped => None,
        }
    }

    /// A short word for status displays.
    pub fn label(&self) -> &'static str {
        match self {
            SlotState::Waiting { .. } => "backoff",
            SlotState::Starting { .. } => "starting",
            SlotState::Serving { .. } => "serving",
            SlotState::Closing { .. } => "closing",
            SlotState::Terminating { .. } => "terminating",
            SlotState::Stopped => "stopped",
        }
    }
}
