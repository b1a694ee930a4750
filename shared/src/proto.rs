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
        push_assignment(buf, &a)?;
    }
    frame::finish_frame(buf, start);
    Ok(())
}

/// Appends one assignment as postcard does (serde's derive took 43 M instructions for
/// 200,000 no-ops under callgrind, this 28 M); a fault, rare, goes through serde.
fn push_assignment(buf: &mut Vec<u8>, a: &Assignment<'_>) -> Result<(), postcard::Error> {
    // The most its fixed fields take (varints of 10, 5 and 10 bytes, the option's tag), so
    // that the pushes below find room.
    buf.reserve(26 + a.payload.len() + 10 * (1 + a.skip.len()));
    push_varint(buf, a.seq);
    push_varint(buf, u64::from(a.attempt));
    match &a.fault {
        None => buf.push(0),
        Some(kind) => {
            buf.push(1);
            frame::append(kind, buf)?;
        }
    }
    push_varint(buf, a.payload.len() as u64);
    buf.extend_from_slice(a.payload);
    push_varint(buf, a.skip.len() as u64);
    for &i in &a.skip {
        push_varint(buf, i);
    }
    Ok(())
}

/// Decodes a frame body from the supervisor: a `Run` batch by hand (serde's derive over the
/// assignments, their skip lists included, was 28% of a worker's instructions per no-op task
/// under callgrind), anything else, and anything the hand decoder does not take, by serde, which gives
/// the error. Equal to `frame::decode::<ToWorker>` for every body (a test checks it).
pub fn decode_to_worker(body: &[u8]) -> Result<ToWorker<'_>, frame::FrameError> {
    match decode_run(body) {
        Some(run) => Ok(ToWorker::Run(run)),
        None => frame::decode(body),
    }
}

fn decode_run(body: &[u8]) -> Option<Vec<Assignment<'_>>> {
    let mut r = Reader(body);
    let count = r.batch()?;
    let mut run = Vec::with_capacity(r.capacity(count));
    for _ in 0..count {
        let seq = r.u64()?;
        let attempt = r.u32()?;
        let fault = match r.byte()? {
            0 => None,
            1 => Some(r.serde::<FaultKind>()?),
            _ => return None,
        };
        let payload = r.bytes()?;
        let n = r.usize()?;
        let mut skip = Vec::new();
        if n > 0 {
            skip.reserve(n.min(r.0.len()));
            for _ in 0..n {
                skip.push(r.u64()?);
            }
        }
        run.push(Assignment { seq, attempt, fault, payload, skip });
    }
    Some(run)
}

/// Decodes a frame body from a worker: a `Results` batch by hand (serde's derive took 66 M
/// instructions, 14% of the supervisor's event loop, for 200,000 no-ops under callgrind; this
/// 29 M), a task's error in it, and anything else, by serde. Equal to `frame::decode::<FromWorker>` for every body (a test
/// checks it).
pub fn decode_from_worker(body: &[u8]) -> Result<FromWorker<'_>, frame::FrameError> {
    match decode_results(body) {
        Some(results) => Ok(FromWorker::Results(results)),
        None => frame::decode(body),
    }
}

fn decode_results(body: &[u8]) -> Option<Vec<Outcome<'_>>> {
    let mut r = Reader(body);
    let count = r.batch()?;
    let mut results = Vec::with_capacity(r.capacity(count));
    for _ in 0..count {
        let seq = r.u64()?;
        let micros = r.u64()?;
        let result = match r.variant()? {
            0 => Ok(Bytes::new(r.bytes()?)),
            1 => Err(r.serde::<TaskError>()?),
            _ => return None,
        };
        let peak_rss = r.u64()?;
        let leaked = r.u32()?;
        results.push(Outcome { seq, micros, result, peak_rss, leaked });
    }
    Some(results)
}

/// Reads postcard's encoding by hand, by its rules: varints of at most 10 bytes (5 for a
/// `u32`) whose last byte holds no bits beyond the type's, lengths as `u64` varints. `None`
/// wherever postcard would fail, or might.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// The start of a batch frame (`Run` or `Results`, both the variant `BATCH_VARIANT`):
    /// its count of entries; `None` for any other frame.
    #[inline]
    fn batch(&mut self) -> Option<usize> {
        if self.variant()? != u32::from(BATCH_VARIANT) {
            return None;
        }
        self.usize()
    }

    /// Room to reserve for `count` entries: every entry takes at least 5 bytes, so a count
    /// beyond what the rest of the body can hold (a bad frame) reserves no more than that.
    #[inline]
    fn capacity(&self, count: usize) -> usize {
        count.min(self.0.len() / 5)
    }

    /// A value serde decodes, for the rare parts (a fault, a task's error).
    fn serde<T: Deserialize<'a>>(&mut self) -> Option<T> {
        let (v, rest) = postcard::take_from_bytes::<T>(self.0).ok()?;
        self.0 = rest;
        Some(v)
    }

    #[inline]
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    #[inline]
    fn u64(&mut self) -> Option<u64> {
        // The 10th byte holds bit 63 alone.
        self.varint(10, 0x01)
    }

    #[inline]
    fn u32(&mut self) -> Option<u32> {
        // The 5th byte holds bits 28 to 31.
        self.varint(5, 0x0F).map(|v| v as u32)
    }

    /// A varint of at most `bytes` bytes whose last may be at most `last_max`, as postcard
    /// refuses longer or overflowing ones.
    #[inline(always)]
    fn varint(&mut self, bytes: u32, last_max: u8) -> Option<u64> {
        // Most fields are below 128 (a no-op's micros, peak, leaked, lengths): one byte.
        if let Some((&b, rest)) = self.0.split_first()
            && b < 0x80
        {
            self.0 = rest;
            return Some(u64::from(b));
        }
        let mut out = 0u64;
        for i in 0..bytes {
            let b = self.byte()?;
            out |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return (i + 1 < bytes || b <= last_max).then_some(out);
            }
        }
        None
    }

    /// An enum's variant index.
    #[inline]
    fn variant(&mut self) -> Option<u32> {
        self.u32()
    }

    #[inline]
    fn usize(&mut self) -> Option<usize> {
        usize::try_from(self.u64()?).ok()
    }

    #[inline]
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.usize()?;
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
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
        match outcome.result {
            // Written by hand as postcard writes it: serde's derive was 32% of a worker's
            // instructions per no-op task. An error, rarer and larger, goes through serde.
            Ok(output) => {
                let b = &mut self.body;
                // The most it takes: four varints of 10 bytes, one of 5, the tag.
                b.reserve(46 + output.len());
                push_varint(b, outcome.seq);
                push_varint(b, outcome.micros);
                b.push(0);
                push_varint(b, output.len() as u64);
                b.extend_from_slice(output);
                push_varint(b, outcome.peak_rss);
                push_varint(b, u64::from(outcome.leaked));
            }
            Err(_) => frame::append(outcome, &mut self.body)?,
        }
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

#[inline]
fn push_varint(buf: &mut Vec<u8>, mut v: u64) {
    if v < 0x80 {
        buf.push(v as u8);
        return;
    }
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

    /// Bodies of every shape the hand decoders meet: batches with and without faults, skip
    /// lists, errors and large numbers, then each of them cut short at every byte and with
    /// each byte replaced by values that are varint edges or bad tags.
    fn mangled(bodies: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut all = Vec::new();
        for b in bodies {
            all.push(b.clone());
            for n in 0..b.len() {
                all.push(b[..n].to_vec());
                for v in [0x00, 0x01, 0x02, 0x0F, 0x10, 0x7F, 0x80, 0xFF] {
                    let mut m = b.clone();
                    m[n] = v;
                    all.push(m);
                }
            }
        }
        // Overlong and overflowing varints where a seq is read.
        for tail in [&[0xFF; 10][..], &[0x80; 9], &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]] {
            all.push([&[1u8, 1][..], tail, &[1, 0, 0, 0][..]].concat());
        }
        all
    }

    fn assignments(payloads: &[Vec<u8>]) -> Vec<Assignment<'_>> {
        let kinds = [FaultKind::Segv, FaultKind::Disconnect, FaultKind::Panic];
        payloads
            .iter()
            .enumerate()
            .map(|(i, p)| Assignment {
                seq: if i == 3 { u64::MAX } else { (i as u64) << (i * 5 % 60) },
                attempt: if i == 4 { u32::MAX } else { 1 + i as u32 },
                fault: (i % 2 == 1).then_some(kinds[i % 3]),
                payload: p,
                skip: if i % 3 == 0 { vec![i as u64, 1 << 33, u64::MAX] } else { Vec::new() },
            })
            .collect()
    }

    #[test]
    fn hand_decoded_runs_match_serde() {
        let payloads: Vec<Vec<u8>> = (0..6).map(|i| vec![i as u8; i * 40 % 150]).collect();
        let mut bodies: Vec<Vec<u8>> = (0..=6)
            .map(|n| frame::encode(&ToWorker::Run(assignments(&payloads[..n]))).unwrap()[HEADER_LEN..].to_vec())
            .collect();
        // The hand decoder takes every whole batch itself.
        assert!(bodies.iter().all(|b| decode_run(b).is_some()));
        bodies.push(frame::encode(&ToWorker::Shutdown).unwrap()[HEADER_LEN..].to_vec());
        let mut checked = 0;
        for body in mangled(&bodies) {
            let (by_hand, by_serde) = (decode_to_worker(&body), frame::decode::<ToWorker>(&body));
            assert_eq!(by_hand.as_ref().ok(), by_serde.as_ref().ok(), "body {body:?}");
            assert_eq!(by_hand.map_err(|e| e.to_string()).err(), by_serde.map_err(|e| e.to_string()).err());
            checked += 1;
        }
        assert!(checked > 5_000, "{checked}");
    }

    #[test]
    fn hand_decoded_results_match_serde() {
        let outs: Vec<Vec<u8>> = (0..5).map(|i| vec![i as u8; i * 70 % 200]).collect();
        let outcome = |i: usize| Outcome {
            seq: if i == 2 { u64::MAX } else { (i as u64) << (i * 9 % 60) },
            micros: i as u64 * 1_000_003,
            result: if i == 1 {
                Err(TaskError {
                    message: "exit status 2".into(),
                    stdout: Some(Box::new(crate::record::Captured::of(b"out\n", 4))),
                    stderr: None,
                    exit: Some(2),
                })
            } else {
                Ok(Bytes::new(&outs[i]))
            },
            peak_rss: if i == 3 { u64::MAX } else { i as u64 * (300 << 20) },
            leaked: if i == 4 { u32::MAX } else { i as u32 },
        };
        let mut bodies: Vec<Vec<u8>> = (0..=5)
            .map(|n| frame::encode(&FromWorker::Results((0..n).map(outcome).collect())).unwrap()[HEADER_LEN..].to_vec())
            .collect();
        assert!(bodies.iter().all(|b| decode_results(b).is_some()));
        bodies.push(frame::encode(&FromWorker::Heartbeat).unwrap()[HEADER_LEN..].to_vec());
        bodies.push(
            frame::encode(&FromWorker::Ready(Ready { version: PROTOCOL_VERSION, pid: 77 })).unwrap()[HEADER_LEN..]
                .to_vec(),
        );
        let mut checked = 0;
        for body in mangled(&bodies) {
            let (by_hand, by_serde) = (decode_from_worker(&body), frame::decode::<FromWorker>(&body));
            assert_eq!(by_hand.as_ref().ok(), by_serde.as_ref().ok(), "body {body:?}");
            assert_eq!(by_hand.map_err(|e| e.to_string()).err(), by_serde.map_err(|e| e.to_string()).err());
            checked += 1;
        }
        assert!(checked > 5_000, "{checked}");
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
