//! The messages a supervisor and its workers exchange, as serde types encoded with postcard.
//!
//! postcard is not self-describing, so two rules keep old and new peers from misreading each
//! other: the first frame each way is `Hello`/`Ready`, variant 0, whose first field is the
//! protocol version, checked before anything else is decoded (see [`peek_version`]); and
//! enums only ever grow at the end. The golden frames under `shared/tests/golden/` pin the
//! encoding, so a change to it is a deliberate act.

use serde::{Deserialize, Serialize};
use serde_bytes::Bytes;

use crate::frame::{self, HEADER_LEN};
use crate::task::FaultKind;

/// Bumped on any change to the encoding of these messages.
pub const PROTOCOL_VERSION: u32 = 4;

/// Messages from the supervisor to a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToWorker<'a> {
    /// The first frame on every connection; carries the status page as an attached fd.
    Hello(Hello),
    /// Tasks to run, in order (one at a time, or on the worker's threads in hybrid mode).
    #[serde(borrow)]
    Run(Vec<Assignment<'a>>),
    /// Finish what was assigned, report it, and exit with status 0.
    Shutdown,
}

/// The supervisor's greeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Must equal the worker's [`PROTOCOL_VERSION`]; stays the first field forever.
    pub version: u32,
    /// The handler the supervisor expects this worker to serve.
    pub handler: String,
    /// Tasks the worker runs at once (hybrid mode when above 1).
    pub threads: u32,
    /// How often the worker proves it is alive when it has nothing else to say.
    pub heartbeat_ms: u32,
    /// The handler the pool was built with, postcard-encoded: the worker serves this value,
    /// not one of its own making, so a configured handler behaves as in thread mode.
    #[serde(with = "serde_bytes")]
    pub config: Vec<u8>,
}

/// One task for a worker to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment<'a> {
    /// Unique within the run; names this attempt in results, panic reports and the status page.
    pub seq: u64,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// A fault to inject into this attempt, after the task's work and before its result.
    pub fault: Option<FaultKind>,
    /// The task, postcard-encoded as the handler's task type.
    #[serde(borrow, with = "serde_bytes")]
    pub payload: &'a [u8],
    /// Indices of records the handler is to skip (`cx.at(i).skip()`): the records an earlier
    /// attempt crashed on, with `skip_bad_records`. Empty otherwise: one byte on the wire.
    pub skip: Vec<u64>,
}

/// Messages from a worker to the supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FromWorker<'a> {
    /// The worker's answer to `Hello`: it is ready for tasks.
    Ready(Ready),
    /// Finished tasks, in the order they finished.
    #[serde(borrow)]
    Results(Vec<Outcome<'a>>),
    /// Sent when the worker has been quiet for a heartbeat interval.
    Heartbeat,
    /// Sent from the panic hook, just before the worker aborts.
    Panic(PanicReport),
}

/// A worker's readiness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// The worker's [`PROTOCOL_VERSION`]; stays the first field forever.
    pub version: u32,
    /// The worker's process id, as it sees it.
    pub pid: u32,
}

/// The result of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome<'a> {
    /// The assignment's `seq`.
    pub seq: u64,
    /// Time the task took in the worker, in microseconds.
    pub micros: u64,
    /// The handler's output, postcard-encoded, or the error it reported.
    #[serde(borrow)]
    pub result: Result<&'a Bytes, TaskError>,
    /// The largest resident memory of the worker's tree the supervisor's samples saw while
    /// the task ran (bytes; 0: no sample fell within it).
    pub peak_rss: u64,
    /// Processes the task's command left running, which the worker stopped.
    pub leaked: u32,
}

/// A task's own failure, reported by its handler. It is data in the task's record, never a
/// reason to stop the batch.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskError {
    /// What went wrong, e.g. `exit status 1`.
    pub message: String,
    /// What the task wrote to its standard output (head and size), where it has one.
    pub stdout: Option<Box<crate::record::Captured>>,
    /// What the task wrote to its standard error, the same way.
    pub stderr: Option<Box<crate::record::Captured>>,
    /// The exit status of a shell command that exited non-zero: what the command line's exit-code
    /// rules decide by.
    pub exit: Option<i32>,
}

impl TaskError {
    /// An error with a message and no captured output.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), stdout: None, stderr: None, exit: None }
    }
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TaskError {}

/// A panic in a worker, reported before it aborts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PanicReport {
    /// The task that was executing on the panicking thread, if any.
    pub seq: Option<u64>,
    /// The panic message.
    pub message: String,
}

/// Reads the protocol version from the body of a first frame (`Hello` or `Ready`) without
/// decoding the rest, which may have another shape in another version.
pub fn peek_version(body: &[u8]) -> Option<u32> {
    match postcard::take_from_bytes::<(u32, u32)>(body) {
        Ok(((0, version), _)) => Some(version),
        _ => None,
    }
}

/// Index of `ToWorker::Run` and `FromWorker::Results` in their enums.
const BATCH_VARIANT: u8 = 1;

/// Appends a `ToWorker::Run` frame with `count` assignments, produced by `each` into the
/// buffer. Writing the frame in place saves building a `Vec` of assignments per batch; the
/// bytes are exactly what `encode(&ToWorker::Run(vec))` gives (a test checks it).
pub fn encode_run<'a>(
    buf: &mut Vec<u8>,
    assignments: impl ExactSizeIterator<Item = Assignment<'a>>,
) -> Result<(), postcard::Error> {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER_LEN]);
    buf.push(BATCH_VARIANT);
    push_varint(buf, assignments.len() as u64);
    for a in assignments {
        frame::append(&a, buf)?;
    }
    frame::finish_frame(buf, start);
    Ok(())
}

/// Results collected by a worker between two flushes, encoded as they come.
#[derive(Debug, Default)]
pub struct ResultsBatch {
    body: Vec<u8>,
    count: u64,
}

impl ResultsBatch {
    /// Results waiting to be sent.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True when nothing waits to be sent.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes waiting to be sent.
    pub fn bytes(&self) -> usize {
        self.body.len()
    }

    /// Adds an outcome as it is.
    pub fn push(&mut self, outcome: &Outcome<'_>) -> Result<(), postcard::Error> {
        frame::append(outcome, &mut self.body)?;
        self.count += 1;
        Ok(())
    }

    /// Moves the batch into `out` as one `FromWorker::Results` frame and empties it.
    pub fn take_frame(&mut self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER_LEN]);
        out.push(BATCH_VARIANT);
        push_varint(out, self.count);
        out.extend_from_slice(&self.body);
        frame::finish_frame(out, start);
        self.body.clear();
        self.count = 0;
    }
}

fn push_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_encoded_batches_match_serde() {
        let payloads: Vec<Vec<u8>> = (0..300).map(|i| vec![i as u8; i % 7]).collect();
        let assignments: Vec<Assignment> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| Assignment {
                seq: i as u64 * 1000,
                attempt: 1 + (i % 3) as u32,
                fault: (i % 5 == 0).then_some(FaultKind::Segv),
                payload: p,
                skip: if i % 4 == 0 { vec![i as u64, 1 << 33] } else { Vec::new() },
            })
            .collect();
        let mut by_hand = Vec::new();
        encode_run(&mut by_hand, assignments.iter().cloned()).unwrap();
        assert_eq!(by_hand, frame::encode(&ToWorker::Run(assignments)).unwrap());

        let mut batch = ResultsBatch::default();
        let mut expected = Vec::new();
        let outs: Vec<Vec<u8>> = (0..200u64).map(|i| postcard::to_stdvec(&(i, "x")).unwrap()).collect();
        for i in 0..200u64 {
            if i % 9 == 0 {
                let o = Outcome { seq: i, micros: i * 7, result: Err(TaskError::new("boom")), peak_rss: 0, leaked: 0 };
                batch.push(&o).unwrap();
                expected.push(o);
            } else {
                let o = Outcome {
                    seq: i,
                    micros: i * 7,
                    result: Ok(Bytes::new(&outs[i as usize])),
                    peak_rss: i,
                    leaked: 1,
                };
                batch.push(&o).unwrap();
                expected.push(o);
            }
        }
        let mut by_hand = Vec::new();
        batch.take_frame(&mut by_hand);
        assert!(batch.is_empty());
        assert_eq!(by_hand, frame::encode(&FromWorker::Results(expected)).unwrap());
    }

    #[test]
    fn version_is_read_before_the_rest() {
        let hello = frame::encode(&ToWorker::Hello(Hello {
            version: 7,
            handler: "h".into(),
            threads: 1,
            heartbeat_ms: 500,
            config: vec![1, 2],
        }))
        .unwrap();
        assert_eq!(peek_version(&hello[HEADER_LEN..]), Some(7));
        let ready = frame::encode(&FromWorker::Ready(Ready { version: 9, pid: 1 })).unwrap();
        assert_eq!(peek_version(&ready[HEADER_LEN..]), Some(9));
        let hb = frame::encode(&FromWorker::Heartbeat).unwrap();
        assert_eq!(peek_version(&hb[HEADER_LEN..]), None);
    }
}
