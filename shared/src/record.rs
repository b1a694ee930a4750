//! The records of a results file: one final record per task, in a shape that readers of
//! results files rely on (README.md shows it; a test here pins it), and the crash causes
//! they carry.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::proto::TaskError;

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The handler returned an output.
    Ok,
    /// The handler reported an error (not retried unless asked).
    Failed,
    /// The task crashed or timed out on every attempt.
    Quarantined,
}

impl Status {
    /// The name written in results files.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Quarantined => "quarantined",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One death of a worker while it was executing a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Crash {
    /// The attempt that died.
    pub attempt: u32,
    /// The worker's process id; in thread mode, where the worker is a thread, the supervisor's
    /// own.
    pub pid: u32,
    /// Why it died.
    #[serde(flatten)]
    pub cause: CrashCause,
}

/// A record inside a task that took its worker down and was set aside, so that the task's
/// other records could finish (`skip_bad_records`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedRecord {
    /// The record's index, as the handler reported it with `cx.at(index)`.
    pub index: u64,
    /// How the attempt on it died.
    #[serde(flatten)]
    pub cause: CrashCause,
}

/// Why a worker died, as recorded in results and events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum CrashCause {
    /// It exited by itself while executing.
    Exit {
        /// Its exit status.
        code: i32,
    },
    /// A signal killed it.
    Signal {
        /// The signal's name, e.g. `SIGSEGV`.
        signal: String,
        /// Whether the kernel wrote a core dump.
        core: bool,
        /// What its last words on stderr said, where they explain the signal (a stack
        /// overflow, an abort message).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// Its task panicked.
    Panic {
        /// The panic message.
        message: String,
    },
    /// The task ran past `timeout`; the worker was killed.
    Timeout {
        /// The limit in milliseconds.
        limit_ms: u64,
    },
    /// The task reported no progress for `stall_timeout` while its worker stayed alive
    /// (wedged on a lock, waiting on something that never comes); the worker was killed.
    Stalled {
        /// The limit in milliseconds.
        limit_ms: u64,
        /// The progress the task had reported when it was killed.
        progress: u64,
    },
    /// The worker stopped sending heartbeats (frozen, stopped, deadlocked); it was killed.
    Unresponsive {
        /// How long it had been silent, in milliseconds.
        silent_ms: u64,
    },
    /// It broke the protocol (garbage, a closed socket while alive); it was killed.
    Protocol {
        /// What it did.
        detail: String,
    },
    /// Out of memory: its allocator failed under the address-space limit, or the resident
    /// memory of its worker and process tree went past the memory limit and the tree was
    /// killed.
    Oom {
        /// The allocator's message, or what went past which limit.
        detail: String,
        /// The memory limit that was passed, in bytes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
        /// The resident bytes of the tree the supervisor saw when it killed it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peak: Option<u64>,
    },
}

impl CrashCause {
    /// The cause's name as written in records (`signal`, `timeout`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            CrashCause::Exit { .. } => "exit",
            CrashCause::Signal { .. } => "signal",
            CrashCause::Panic { .. } => "panic",
            CrashCause::Timeout { .. } => "timeout",
            CrashCause::Stalled { .. } => "stalled",
            CrashCause::Unresponsive { .. } => "unresponsive",
            CrashCause::Protocol { .. } => "protocol",
            CrashCause::Oom { .. } => "oom",
        }
    }
}

impl fmt::Display for CrashCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CrashCause::Exit { code } => write!(f, "exited with status {code}"),
            CrashCause::Signal { signal, core, detail } => {
                write!(f, "killed by {signal}")?;
                if *core {
                    f.write_str(" (core dumped)")?;
                }
                if let Some(d) = detail {
                    write!(f, ": {d}")?;
                }
                Ok(())
            }
            CrashCause::Panic { message } => write!(f, "panicked: {message}"),
            CrashCause::Timeout { limit_ms } => write!(f, "timed out after {limit_ms} ms"),
            CrashCause::Stalled { limit_ms, progress } => {
                write!(f, "stalled: no progress for {limit_ms} ms (at progress {progress})")
            }
            CrashCause::Unresponsive { silent_ms } => write!(f, "unresponsive for {silent_ms} ms"),
            CrashCause::Protocol { detail } => write!(f, "protocol violation: {detail}"),
            CrashCause::Oom { detail, .. } => write!(f, "out of memory: {detail}"),
        }
    }
}

/// What a record keeps of one of a command's output streams: its head and how much there
/// was. The text is the head alone, never a marker: whether it was cut and the total are
/// fields of their own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Captured {
    /// The first bytes of the stream (lossy UTF-8: a byte that is not UTF-8 reads as U+FFFD).
    pub head: String,
    /// Bytes of the stream that the head holds.
    pub head_bytes: u64,
    /// Whether the stream was longer than its head.
    pub cut: bool,
    /// Bytes the command wrote to the stream in all.
    pub bytes: u64,
}

impl Captured {
    /// The capture of `bytes` in all, of which `head` are the first.
    pub fn of(head: &[u8], bytes: u64) -> Self {
        Self {
            head: String::from_utf8_lossy(head).into_owned(),
            head_bytes: head.len() as u64,
            cut: bytes > head.len() as u64,
            bytes,
        }
    }

    /// Whether the head is the whole stream, byte for byte: not cut, and no byte of it was
    /// replaced for not being UTF-8. A spooled stream whose head is whole needs no file: its
    /// reader writes the head and never opens it, and the worker reuses or removes it.
    pub fn is_whole(&self) -> bool {
        !self.cut && !self.head.contains('\u{FFFD}')
    }

    /// The last line of the head that has any text, without its newline.
    pub fn last_line(&self) -> Option<&str> {
        self.head.lines().rev().map(str::trim_end).find(|l| !l.is_empty())
    }
}

/// One line of a results file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record<O> {
    /// The task's id.
    pub id: String,
    /// How it ended.
    pub status: Status,
    /// Attempts it used, the last one included.
    pub attempts: u32,
    /// Time the last attempt took in its worker, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms: Option<f64>,
    /// The output, for `ok` tasks (`null` for kinds without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<O>,
    /// The task's error, for `failed` tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the task's standard output was (its head, its size), for shell tasks whatever
    /// their status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<Captured>,
    /// What the task's standard error was, the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<Captured>,
    /// Every crash of the task, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crashes: Vec<Crash>,
    /// Records inside the task skipped after they crashed its worker (`skip_bad_records`),
    /// in the order they were found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedRecord>,
    /// For a failed or quarantined task, the retry rule that ended it (`attempts=3`,
    /// `panic=1`, `retries=1`, `retry-exit=75`, `fail-exit=2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The factor its last attempt's memory limit was multiplied by (a retry rule of the command line that raises the memory limit),
    /// when above 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_factor: Option<u32>,
    /// How many earlier final records of this task it supersedes: written by
    /// `resume_failed`, the only way a task gets a second record. A task's last record is
    /// the one that counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<u32>,
    /// The largest resident memory (bytes) of its worker and process tree together that the
    /// supervisor's samples saw during the last attempt; absent when no sample fell within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss: Option<u64>,
    /// Processes its command left running when it exited, stopped by the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaked: Option<u32>,
    /// When the pool captures worker output: what the task's worker wrote on stderr while
    /// the task ran (over all its attempts) and the `log` records its handler made, a line
    /// each, oldest first. Empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<String>,
}

/// How a task ended, with what it ended with: the one input from which both [`Record`] and
/// [`RecordRef`] are built, so that which field carries what is decided in one place.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Conclusion<O, E> {
    /// The handler returned this output.
    Ok(O),
    /// The handler reported this error.
    Failed(E),
    /// Every attempt crashed.
    Quarantined,
}

impl<O, E> Conclusion<O, E> {
    /// The status it is recorded with.
    pub fn status(&self) -> Status {
        match self {
            Conclusion::Ok(_) => Status::Ok,
            Conclusion::Failed(_) => Status::Failed,
            Conclusion::Quarantined => Status::Quarantined,
        }
    }

    /// The output of an ok task and the error of a failed one, as a record's two fields.
    pub fn into_parts(self) -> (Option<O>, Option<E>) {
        match self {
            Conclusion::Ok(o) => (Some(o), None),
            Conclusion::Failed(e) => (None, Some(e)),
            Conclusion::Quarantined => (None, None),
        }
    }

    /// The same conclusion, borrowed.
    pub fn as_ref(&self) -> Conclusion<&O, &E> {
        match self {
            Conclusion::Ok(o) => Conclusion::Ok(o),
            Conclusion::Failed(e) => Conclusion::Failed(e),
            Conclusion::Quarantined => Conclusion::Quarantined,
        }
    }
}

impl<O> Record<O> {
    /// A record for a task that ended with `result` after `attempts` attempts.
    pub fn new(id: String, attempts: u32, ms: Option<f64>, result: Result<O, TaskError>, crashes: Vec<Crash>) -> Self {
        let end = match result {
            Ok(o) => Conclusion::Ok(o),
            Err(e) => Conclusion::Failed(e),
        };
        Self::concluded(id, attempts, ms, end, crashes)
    }

    /// A record for a task that crashed on every attempt.
    pub fn quarantined(id: String, attempts: u32, crashes: Vec<Crash>) -> Self {
        Self::concluded(id, attempts, None, Conclusion::Quarantined, crashes)
    }

    /// The record of a task that ended as `end`, the same fields [`RecordRef::concluded`]
    /// fills; a quarantined task has no time.
    pub fn concluded(
        id: String,
        attempts: u32,
        ms: Option<f64>,
        end: Conclusion<O, TaskError>,
        crashes: Vec<Crash>,
    ) -> Self {
        let status = end.status();
        let (output, error) = end.into_parts();
        let (error, stdout, stderr) = match error {
            Some(e) => (Some(e.message), e.stdout.map(|c| *c), e.stderr.map(|c| *c)),
            None => (None, None, None),
        };
        let ms = if status == Status::Quarantined { None } else { ms };
        Self {
            id,
            status,
            attempts,
            ms,
            output,
            error,
            stdout,
            stderr,
            crashes,
            skipped: Vec::new(),
            rule: None,
            memory_factor: None,
            supersedes: None,
            peak_rss: None,
            leaked: None,
            log: Vec::new(),
        }
    }

    /// A borrowed view, which serializes exactly as the record does.
    pub fn as_ref(&self) -> RecordRef<'_, O> {
        RecordRef {
            id: &self.id,
            status: self.status,
            attempts: self.attempts,
            ms: self.ms,
            output: self.output.as_ref(),
            error: self.error.as_deref(),
            stdout: self.stdout.as_ref(),
            stderr: self.stderr.as_ref(),
            crashes: &self.crashes,
            skipped: &self.skipped,
            rule: self.rule.as_deref(),
            memory_factor: self.memory_factor,
            supersedes: self.supersedes,
            peak_rss: self.peak_rss,
            leaked: self.leaked,
        }
    }
}

/// A record made of borrowed parts, for writing one without building it: a results file of
/// a million records then costs no allocation per record.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RecordRef<'a, O> {
    /// The task's id.
    pub id: &'a str,
    /// How it ended.
    pub status: Status,
    /// Attempts used.
    pub attempts: u32,
    /// Time of the last attempt, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ms: Option<f64>,
    /// The output of an `ok` task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<&'a O>,
    /// The error of a `failed` task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    /// Its stdout's head and size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<&'a Captured>,
    /// Its stderr's head and size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<&'a Captured>,
    /// Its crashes.
    #[serde(skip_serializing_if = "<[Crash]>::is_empty")]
    pub crashes: &'a [Crash],
    /// Records skipped after they crashed the worker.
    #[serde(skip_serializing_if = "<[SkippedRecord]>::is_empty")]
    pub skipped: &'a [SkippedRecord],
    /// The retry rule that ended a failed or quarantined task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'a str>,
    /// The last attempt's memory-limit factor, when above 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_factor: Option<u32>,
    /// Earlier final records of the task that this one supersedes (`resume_failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<u32>,
    /// As in [`Record::peak_rss`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss: Option<u64>,
    /// As in [`Record::leaked`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaked: Option<u32>,
}

impl<'a, O> RecordRef<'a, O> {
    /// The view of a task that ended as `end`, the same fields [`Record::concluded`] fills;
    /// a quarantined task has no time.
    pub fn concluded(
        id: &'a str,
        attempts: u32,
        ms: Option<f64>,
        end: Conclusion<&'a O, &'a TaskError>,
        crashes: &'a [Crash],
    ) -> Self {
        let status = end.status();
        let (output, error) = end.into_parts();
        RecordRef {
            id,
            status,
            attempts,
            ms: if status == Status::Quarantined { None } else { ms },
            output,
            error: error.map(|e| e.message.as_str()),
            stdout: error.and_then(|e| e.stdout.as_deref()),
            stderr: error.and_then(|e| e.stderr.as_deref()),
            crashes,
            skipped: &[],
            rule: None,
            memory_factor: None,
            supersedes: None,
            peak_rss: None,
            leaked: None,
        }
    }
}

impl<O> RecordRef<'_, O> {
    /// The owned record of this view with `output` for its output, which whoever owns the
    /// output moves in: a task's output need not be `Clone`.
    pub fn to_record<P>(&self, output: Option<P>) -> Record<P> {
        Record {
            id: self.id.to_string(),
            status: self.status,
            attempts: self.attempts,
            ms: self.ms,
            output,
            error: self.error.map(str::to_string),
            stdout: self.stdout.cloned(),
            stderr: self.stderr.cloned(),
            crashes: self.crashes.to_vec(),
            skipped: self.skipped.to_vec(),
            rule: self.rule.map(str::to_string),
            memory_factor: self.memory_factor,
            supersedes: self.supersedes,
            peak_rss: self.peak_rss,
            leaked: self.leaked,
            log: Vec::new(),
        }
    }
}

impl<O: Clone> RecordRef<'_, O> {
    /// The owned record.
    pub fn to_owned(&self) -> Record<O> {
        self.to_record(self.output.cloned())
    }
}

/// The part of a record that resume and merge need, read without caring about the output's
/// type.
#[derive(Debug, Clone, Deserialize)]
pub struct RecordHead {
    /// The task's id.
    pub id: String,
    /// How it ended.
    pub status: Status,
    /// Earlier final records it supersedes (`resume_failed`); `None` for a first record.
    #[serde(default)]
    pub supersedes: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_have_the_documented_shape() {
        let r = Record::new(
            "a6".into(),
            2,
            Some(101.2),
            Ok(serde_json::Value::Null),
            vec![Crash {
                attempt: 1,
                pid: 4321,
                cause: CrashCause::Signal { signal: "SIGSEGV".into(), core: false, detail: None },
            }],
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"id":"a6","status":"ok","attempts":2,"ms":101.2,"output":null,"crashes":[{"attempt":1,"pid":4321,"cause":"signal","signal":"SIGSEGV","core":false}]}"#
        );
        let mut e = TaskError::new("exit status 1");
        e.stderr = Some(Box::new(Captured::of(b"gzip: ...", 9)));
        let r: Record<()> = Record::new("a2".into(), 1, Some(40.1), Err(e), vec![]);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"id":"a2","status":"failed","attempts":1,"ms":40.1,"error":"exit status 1","stderr":{"head":"gzip: ...","head_bytes":9,"cut":false,"bytes":9}}"#
        );
        let back: Record<serde_json::Value> = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.status, Status::Failed);
        // The borrowed view writes the same bytes.
        assert_eq!(serde_json::to_string(&r.as_ref()).unwrap(), serde_json::to_string(&r).unwrap());
        assert_eq!(r.as_ref().to_owned(), r);
        // Built from the same conclusion, the two agree field for field.
        let e = TaskError::new("exit status 2");
        let owned: Record<u8> = Record::concluded("b".into(), 1, Some(2.0), Conclusion::Failed(e.clone()), vec![]);
        assert_eq!(RecordRef::concluded("b", 1, Some(2.0), Conclusion::Failed(&e), &[]).to_owned(), owned);
        let q: Record<u8> = Record::concluded("q".into(), 3, Some(9.0), Conclusion::Quarantined, vec![]);
        assert_eq!((q.status, q.ms), (Status::Quarantined, None));
    }
}
