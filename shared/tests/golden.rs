//! Golden frames: one checked-in file per message shape. The test decodes each file and
//! compares it with the value it must hold, and encodes the value and compares the bytes, so
//! any change to the wire format fails here until the files are regenerated on purpose
//! (`BULKHEAD_BLESS=1 cargo test -p bulkhead-shared --test golden`) and
//! `PROTOCOL_VERSION` is bumped.

use std::path::PathBuf;

use serde_bytes::Bytes;
use shared::frame::{self, FrameReader, HEADER_LEN};
use shared::proto::{self, Assignment, FromWorker, Hello, Outcome, PanicReport, Ready, TaskError, ToWorker};
use shared::record::Captured;
use shared::task::{BuiltinOutput, BuiltinTask, FaultKind};

fn check(name: &str, bytes: Vec<u8>, decode_eq: impl Fn(&[u8])) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{name}.bin"));
    if std::env::var_os("BULKHEAD_BLESS").is_some() {
        std::fs::write(&path, &bytes).unwrap();
    }
    let golden = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = FrameReader::new(frame::MAX_FRAME);
    reader.push(&golden);
    let body = reader.next_frame().unwrap().expect("one whole frame");
    decode_eq(body);
    assert_eq!(bytes, golden, "encoding of {name} changed: bump PROTOCOL_VERSION and bless");
}

#[test]
fn golden_frames() {
    let hello = ToWorker::Hello(Hello {
        version: 3,
        handler: "bulkhead-builtin".into(),
        threads: 1,
        heartbeat_ms: 250,
        config: postcard::to_stdvec(&("a pattern", true)).unwrap(),
    });
    check("hello", frame::encode(&hello).unwrap(), |b| assert_eq!(frame::decode::<ToWorker>(b).unwrap(), hello));

    let payloads = [
        postcard::to_stdvec(&BuiltinTask::Noop).unwrap(),
        postcard::to_stdvec(&BuiltinTask::SumSquares { n: 10_000_000 }).unwrap(),
        postcard::to_stdvec(&BuiltinTask::Shell { cmd: "gzip -9 data/x.log".into() }).unwrap(),
        postcard::to_stdvec(&BuiltinTask::Scan {
            path: "access.log".into(),
            offset: 0,
            len: 8_388_608,
            pattern: r"status=(\d{3})".into(),
            group: Some("status".into()),
            lines: false,
            max_line: None,
        })
        .unwrap(),
    ];
    let run = ToWorker::Run(vec![
        Assignment { seq: 1, attempt: 1, fault: None, payload: &payloads[0], skip: Vec::new() },
        Assignment { seq: 2, attempt: 2, fault: Some(FaultKind::Segv), payload: &payloads[1], skip: vec![37] },
        Assignment {
            seq: 300,
            attempt: 1,
            fault: Some(FaultKind::Disconnect),
            payload: &payloads[2],
            skip: Vec::new(),
        },
        Assignment { seq: 1 << 40, attempt: 3, fault: None, payload: &payloads[3], skip: vec![0, 1 << 20] },
    ]);
    check("run", frame::encode(&run).unwrap(), |b| {
        assert_eq!(frame::decode::<ToWorker>(b).unwrap(), run);
        assert_eq!(proto::decode_to_worker(b).unwrap(), run);
    });
    check("shutdown", frame::encode(&ToWorker::Shutdown).unwrap(), |b| {
        assert_eq!(frame::decode::<ToWorker>(b).unwrap(), ToWorker::Shutdown)
    });

    let ready = FromWorker::Ready(Ready { version: 3, pid: 4321 });
    check("ready", frame::encode(&ready).unwrap(), |b| assert_eq!(frame::decode::<FromWorker>(b).unwrap(), ready));
    let sum = postcard::to_stdvec(&BuiltinOutput::Sum { sum: "333333283333335000000".into() }).unwrap();
    let nothing = postcard::to_stdvec(&BuiltinOutput::Nothing).unwrap();
    let results = FromWorker::Results(vec![
        Outcome { seq: 1, micros: 3, result: Ok(Bytes::new(&nothing)), peak_rss: 0, leaked: 0 },
        Outcome { seq: 2, micros: 812_500, result: Ok(Bytes::new(&sum)), peak_rss: 3 << 20, leaked: 0 },
        Outcome {
            seq: 300,
            micros: 40_100,
            result: Err(TaskError {
                message: "exit status 1".into(),
                stdout: None,
                stderr: Some(Box::new(Captured::of(b"gzip: data/x.log: No such file or directory\n", 45))),
                exit: Some(1),
            }),
            peak_rss: 600 << 20,
            leaked: 2,
        },
    ]);
    check("results", frame::encode(&results).unwrap(), |b| {
        assert_eq!(frame::decode::<FromWorker>(b).unwrap(), results);
        assert_eq!(proto::decode_from_worker(b).unwrap(), results);
    });
    check("heartbeat", frame::encode(&FromWorker::Heartbeat).unwrap(), |b| {
        assert_eq!(frame::decode::<FromWorker>(b).unwrap(), FromWorker::Heartbeat)
    });
    let panic = FromWorker::Panic(PanicReport { seq: Some(2), message: "injected fault: panic".into() });
    check("panic", frame::encode(&panic).unwrap(), |b| assert_eq!(frame::decode::<FromWorker>(b).unwrap(), panic));
    assert_eq!(HEADER_LEN, 4);
}
