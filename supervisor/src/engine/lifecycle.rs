//! The lifecycle events of a run, as written to `--events` (one JSON object a line, each with
//! `t`, seconds since the run started, and `event`). The HTML report, the demo's live view
//! and the progress bar are all drawn from this one stream.

use serde::{Deserialize, Serialize};
use shared::record::{CrashCause, Status};

use crate::engine::ids::SlotIndex;

/// One lifecycle step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    /// A worker answered its hello and is ready for tasks.
    WorkerStarted {
        /// The worker slot (a lane in the report).
        worker: SlotIndex,
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
        worker: SlotIndex,
        /// The attempt, from 1.
        attempt: u32,
        /// What the task was (a shell-command task's input, seq and cmd), beside its id.
        #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
        label: Option<TaskLabel>,
    },
    /// A task attempt produced its final record.
    TaskFinished {
        /// The task.
        id: String,
        /// The worker slot.
        worker: SlotIndex,
        /// `ok` or `failed`.
        status: Status,
        /// Time the attempt took in the worker.
        ms: f64,
        /// What the task was (a shell-command task's input, seq and cmd), beside its id.
        #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
        label: Option<TaskLabel>,
        /// The peak resident memory of its worker's tree, where sampled.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peak_rss: Option<u64>,
    },
    /// A worker ended. `cause` and its fields are absent for a clean shutdown.
    WorkerExited {
        /// The worker slot.
        worker: SlotIndex,
        /// The process id.
        pid: u32,
        /// Asked to, or died (and why): written as `clean` and the crash fields.
        #[serde(flatten)]
        exit: WorkerExit,
        /// Task it was executing, if one is blamed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<String>,
    },
    /// A task went back to the queue after its worker died.
    TaskRequeued {
        /// The task.
        id: String,
        /// The worker slot it was on.
        worker: SlotIndex,
        /// Whether the death was charged to it (it was executing), or it was only queued there.
        charged: bool,
        /// Attempts charged so far.
        attempts: u32,
        /// What the task was (a shell-command task's input, seq and cmd), beside its id.
        #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
        label: Option<TaskLabel>,
    },
    /// A task used up its attempts and was set aside.
    TaskQuarantined {
        /// The task.
        id: String,
        /// Attempts it used.
        attempts: u32,
        /// What the task was (a shell-command task's input, seq and cmd), beside its id.
        #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
        label: Option<TaskLabel>,
    },
    /// A worker was retired between tasks and is replaced at once, without backoff and
    /// without charging any task: it ran its `max_tasks_per_worker`, or grew past
    /// `max_worker_memory`. Not a crash.
    WorkerRetired {
        /// The worker slot.
        worker: SlotIndex,
        /// The process id.
        pid: u32,
        /// Why (`reason` with its figures).
        #[serde(flatten)]
        why: Retirement,
    },
    /// A replacement worker is being started.
    WorkerRestarted {
        /// The worker slot.
        worker: SlotIndex,
        /// How long the slot waited before the restart.
        backoff_ms: f64,
    },
    /// Thread mode: a thread panicked while holding the shared tally's lock.
    StatePoisoned {
        /// The task whose thread poisoned it.
        id: String,
        /// The thread's slot.
        worker: SlotIndex,
        /// The panic message.
        message: String,
    },
    /// The run is ending.
    Shutdown {
        /// Why: `completed`, `interrupted`, `terminated`, `hung_up`, `signalled`, `gave_up`, `bad_input`, `poisoned`.
        reason: String,
    },
}

/// How a worker ended. In the events file it is `"clean": true`, or `"clean": false` with the
/// crash fields (`cause`, `signal`, ...), which is what readers of the file match on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "ExitFields", into = "ExitFields")]
pub enum WorkerExit {
    /// It exited because it was asked to.
    Clean,
    /// It died. The cause is always known to the supervisor that writes the events; `None`
    /// is for a file written by something else that gave no cause.
    Died(Option<CrashCause>),
}

impl WorkerExit {
    /// Whether the worker exited because it was asked to.
    pub fn clean(&self) -> bool {
        matches!(self, WorkerExit::Clean)
    }

    /// Why it died, when it did and it is known.
    pub fn cause(&self) -> Option<&CrashCause> {
        match self {
            WorkerExit::Died(cause) => cause.as_ref(),
            WorkerExit::Clean => None,
        }
    }
}

/// [`WorkerExit`] as the events file spells it.
#[derive(Clone, Serialize, Deserialize)]
struct ExitFields {
    clean: bool,
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    cause: Option<CrashCause>,
}

impl From<ExitFields> for WorkerExit {
    fn from(f: ExitFields) -> Self {
        // A clean exit has no cause; one written beside `"clean": true` says nothing more.
        if f.clean { WorkerExit::Clean } else { WorkerExit::Died(f.cause) }
    }
}

impl From<WorkerExit> for ExitFields {
    fn from(e: WorkerExit) -> Self {
        match e {
            WorkerExit::Clean => ExitFields { clean: true, cause: None },
            WorkerExit::Died(cause) => ExitFields { clean: false, cause },
        }
    }
}

/// Why a worker was retired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Retirement {
    /// It was handed its `max_tasks_per_worker`.
    Tasks {
        /// The limit.
        tasks: u64,
    },
    /// Its resident size, read between tasks, was above `max_worker_memory`.
    Memory {
        /// Its resident size when it was read, in bytes.
        resident_bytes: u64,
        /// The limit, in bytes.
        limit_bytes: u64,
    },
}

impl std::fmt::Display for Retirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Retirement::Tasks { tasks } => write!(f, "ran its {tasks} tasks"),
            Retirement::Memory { resident_bytes, limit_bytes } => write!(
                f,
                "resident {:.1} MiB, above the limit of {:.1} MiB",
                *resident_bytes as f64 / 1048576.0,
                *limit_bytes as f64 / 1048576.0
            ),
        }
    }
}

/// What a shell-command task was, in its events as in its record: the input (with `input_b64`
/// where the bytes are not UTF-8), its number `seq` (as `{#}`) and the command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLabel {
    /// The input line (or the input sources' arguments, joined by tabs).
    pub input: String,
    /// The exact bytes of the input, in base64, where they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_b64: Option<String>,
    /// The job's number, from 1.
    pub seq: u64,
    /// The command (with `{%}` where the job slot goes).
    pub cmd: String,
    /// The exact bytes of the command, in base64, where they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd_b64: Option<String>,
}

impl TaskLabel {
    /// The label of a job ([`crate::engine::Job::label`]); `None` for a task without one.
    pub(crate) fn of(label: &str) -> Option<Self> {
        if label.is_empty() {
            return None;
        }
        serde_json::from_str(&format!("{{{label}}}")).ok()
    }

    /// The exact bytes of the input: `input_b64` decoded where the line was not UTF-8.
    pub fn input_bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        use base64::Engine as _;
        match self.input_b64.as_deref().map(|b| base64::engine::general_purpose::STANDARD.decode(b)) {
            Some(Ok(bytes)) => std::borrow::Cow::Owned(bytes),
            _ => std::borrow::Cow::Borrowed(self.input.as_bytes()),
        }
    }
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
                worker: SlotIndex(2),
                pid: 77,
                exit: WorkerExit::Died(Some(CrashCause::Signal {
                    signal: "SIGSEGV".into(),
                    core: false,
                    detail: None,
                })),
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
        let clean = Timed {
            t: 2.0,
            event: RunEvent::WorkerExited { worker: SlotIndex(0), pid: 5, exit: WorkerExit::Clean, task: None },
        };
        let s = serde_json::to_string(&clean).unwrap();
        assert_eq!(s, r#"{"t":2.0,"event":"worker_exited","worker":0,"pid":5,"clean":true}"#);
        assert_eq!(serde_json::from_str::<Timed>(&s).unwrap(), clean);
    }
}
