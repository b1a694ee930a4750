//! The lifecycle events of a run, as written to `--events` (one JSON object a line, each with
//! `t`, seconds since the run started, and `event`). The HTML report, the demo's live view
//! and the progress bar are all drawn from this one stream.

use serde::{Deserialize, Serialize};
use shared::record::{CrashCause, Status};

/// One lifecycle step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    /// A worker answered its hello and is ready for tasks.
    WorkerStarted {
        /// The worker slot (a lane in the report).
        worker: usize,
        /// The process id; in thread mode, where the worker is a thread, the supervisor's own.
        pid: u32,
        /// Milliseconds from spawn to ready.
        ms: f64,
    },
    /// A task attempt was handed to a worker.
    TaskStarted {
        /// The task.
        id: String,
        /// The worker slot.
        worker: usize,
        /// The attempt, from 1.
        attempt: u32,
    },
    /// A task attempt produced its final record.
    TaskFinished {
        /// The task.
        id: String,
        /// The worker slot.
        worker: usize,
        /// `ok` or `failed`.
        status: Status,
        /// Time the attempt took in the worker.
        ms: f64,
        /// The peak resident memory of its worker's tree, where sampled.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peak_rss: Option<u64>,
    },
    /// A worker ended. `cause` and its fields are absent for a clean shutdown.
    WorkerExited {
        /// The worker slot.
        worker: usize,
        /// The process id.
        pid: u32,
        /// Whether it exited because it was asked to.
        clean: bool,
        /// Why it died, when it was not asked to.
        #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
        cause: Option<CrashCause>,
        /// Task it was executing, if one is blamed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<String>,
    },
    /// A task went back to the queue after its worker died.
    TaskRequeued {
        /// The task.
        id: String,
        /// The worker slot it was on.
        worker: usize,
        /// Whether the death was charged to it (it was executing), or it was only queued there.
        charged: bool,
        /// Attempts charged so far.
        attempts: u32,
    },
    /// A task used up its attempts and was set aside.
    TaskQuarantined {
        /// The task.
        id: String,
        /// Attempts it used.
        attempts: u32,
    },
    /// A replacement worker is being started.
    WorkerRestarted {
        /// The worker slot.
        worker: usize,
        /// How long the slot waited before the restart.
        backoff_ms: f64,
    },
    /// Thread mode: a thread panicked while holding the shared tally's lock.
    StatePoisoned {
        /// The task whose thread poisoned it.
        id: String,
        /// The thread's slot.
        worker: usize,
        /// The panic message.
        message: String,
    },
    /// The run is ending.
    Shutdown {
        /// Why: `completed`, `interrupted`, `terminated`, `hung_up`, `signalled`, `gave_up`, `bad_input`, `poisoned`.
        reason: String,
    },
}

/// An event with its time, as one line of the events file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timed {
    /// Seconds since the run started.
    pub t: f64,
    /// The event.
    #[serde(flatten)]
    pub event: RunEvent,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_the_spec_shape() {
        let e = Timed {
            t: 1.5,
            event: RunEvent::WorkerExited {
                worker: 2,
                pid: 77,
                clean: false,
                cause: Some(CrashCause::Signal { signal: "SIGSEGV".into(), core: false, detail: None }),
                task: Some("a6".into()),
            },
        };
        let s = serde_json::to_string(&e).unwrap();
        assert_eq!(
            s,
            r#"{"t":1.5,"event":"worker_exited","worker":2,"pid":77,"clean":true,"cause":"signal","signal":"SIGSEGV","core":false,"task":"a6"}"#
                .replace("\"clean\":true", "\"clean\":false")
        );
        let back: Timed = serde_json::from_str(&s).unwrap();
        assert_eq!(back, e);
        let clean =
            Timed { t: 2.0, event: RunEvent::WorkerExited { worker: 0, pid: 5, clean: true, cause: None, task: None } };
        let s = serde_json::to_string(&clean).unwrap();
        assert_eq!(serde_json::from_str::<Timed>(&s).unwrap(), clean);
    }
}
