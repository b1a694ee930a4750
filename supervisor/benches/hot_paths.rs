//! Micro-benchmarks of the paths written by hand for speed, each beside the plain serde (or
//! std) way it replaces, so that a change to either is measured: the record writer, the
//! frame encoders and decoders of a `Run` batch and of a results batch, a task's empty
//! output, and the id set.
//!
//! `cargo bench -p bulkhead --bench hot_paths` (divan's options after `--`). A plain
//! `cargo bench -p bulkhead` runs these and then the suite; the suite's own words
//! (`-- --quick`, `-- latency restart`) are the suite's, so with them this binary runs with
//! divan's defaults, or not at all when sections are named.

use std::collections::HashSet;
use std::hint::black_box;

use bulkhead::__private::{IdSet, decode_output, write_record};
use divan::Bencher;
use serde_bytes::Bytes;
use shared::frame;
use shared::proto::{self, Assignment, FromWorker, Outcome, ResultsBatch, ToWorker};
use shared::record::{Crash, CrashCause, Record};
use shared::task::BuiltinOutput;

/// Options of the benchmark suite, which cargo hands to every bench binary.
const SUITE_OPTIONS: [&str; 2] = ["--quick", "--no-install"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.iter().any(|a| SUITE_OPTIONS.contains(&a.as_str())) {
        if args.iter().any(|a| !a.starts_with('-')) {
            eprintln!("hot_paths: skipped (suite sections were named)");
            return;
        }
        divan::Divan::default().main();
        return;
    }
    divan::main();
}

/// Records as a run writes them: mostly `ok` with a small output, some with a crash.
fn records() -> Vec<Record<serde_json::Value>> {
    (0..1000u32)
        .map(|i| {
            let crashes = if i % 10 == 0 {
                vec![Crash {
                    attempt: 1,
                    pid: 31_000 + i,
                    cause: CrashCause::Signal { signal: "SIGSEGV".into(), core: false, detail: None },
                }]
            } else {
                Vec::new()
            };
            let output = serde_json::json!({ "sum": (u64::from(i) * 7919).to_string() });
            Record::new(format!("task-{i:06}"), 1 + u32::from(i % 10 == 0), Some(0.25), Ok(output), crashes)
        })
        .collect()
}

/// Times writing every one of `recs` with `write` into one buffer of `capacity`, emptied
/// before each round.
fn write_each<T>(b: Bencher, recs: &[T], capacity: usize, write: impl Fn(&mut Vec<u8>, &T)) {
    let mut buf = Vec::with_capacity(capacity);
    b.counter(divan::counter::ItemsCount::new(recs.len())).bench_local(|| {
        buf.clear();
        for r in recs {
            write(&mut buf, r);
        }
        black_box(buf.len())
    });
}

mod record_writer {
    use super::*;

    /// 1000 records through the hand-written writer.
    #[divan::bench]
    fn by_hand(b: Bencher) {
        write_each(b, &records(), 256 << 10, |buf, r| {
            write_record(buf, &r.as_ref(), "");
            buf.push(b'\n');
        });
    }

    /// The same records through serde_json, the bytes the writer must equal.
    #[divan::bench]
    fn serde(b: Bencher) {
        write_each(b, &records(), 256 << 10, |buf, r| {
            serde_json::to_writer(&mut *buf, &r.as_ref()).unwrap();
            buf.push(b'\n');
        });
    }
}

mod run_frame {
    use super::*;

    fn payloads() -> Vec<Vec<u8>> {
        (0..256u64).map(|i| postcard::to_stdvec(&("noop", i)).unwrap()).collect()
    }

    fn assignments(p: &[Vec<u8>]) -> impl ExactSizeIterator<Item = Assignment<'_>> {
        p.iter().enumerate().map(|(i, payload)| Assignment {
            seq: i as u64 + 1,
            attempt: 1,
            fault: None,
            payload,
            skip: Vec::new(),
        })
    }

    /// A batch of 256 assignments written in place.
    #[divan::bench]
    fn in_place(b: Bencher) {
        let p = payloads();
        let mut buf = Vec::with_capacity(64 << 10);
        b.counter(divan::counter::ItemsCount::new(p.len())).bench_local(|| {
            buf.clear();
            proto::encode_run(&mut buf, assignments(&p)).unwrap();
            black_box(buf.len())
        });
    }

    /// The same batch collected into a `Vec` and encoded by serde.
    #[divan::bench]
    fn serde(b: Bencher) {
        let p = payloads();
        b.counter(divan::counter::ItemsCount::new(p.len())).bench_local(|| {
            let frame = frame::encode(&ToWorker::Run(assignments(&p).collect())).unwrap();
            black_box(frame.len())
        });
    }

    fn body(p: &[Vec<u8>]) -> Vec<u8> {
        frame::encode(&ToWorker::Run(assignments(p).collect())).unwrap()[frame::HEADER_LEN..].to_vec()
    }

    /// The batch decoded by hand, as a worker reads it.
    #[divan::bench]
    fn decode_by_hand(b: Bencher) {
        let p = payloads();
        let body = body(&p);
        b.counter(divan::counter::ItemsCount::new(p.len())).bench_local(|| {
            let ToWorker::Run(run) = proto::decode_to_worker(black_box(&body)).unwrap() else { unreachable!() };
            black_box(run.len())
        });
    }

    /// The same batch decoded by serde.
    #[divan::bench]
    fn decode_serde(b: Bencher) {
        let p = payloads();
        let body = body(&p);
        b.counter(divan::counter::ItemsCount::new(p.len())).bench_local(|| {
            let ToWorker::Run(run) = frame::decode::<ToWorker>(black_box(&body)).unwrap() else { unreachable!() };
            black_box(run.len())
        });
    }
}

mod results_frame {
    use super::*;

    /// 256 outcomes encoded as they come, then framed.
    #[divan::bench]
    fn as_they_come(b: Bencher) {
        let out = postcard::to_stdvec(&Some(42u64)).unwrap();
        let mut batch = ResultsBatch::default();
        let mut buf = Vec::with_capacity(64 << 10);
        b.counter(divan::counter::ItemsCount::new(256usize)).bench_local(|| {
            for seq in 1..=256 {
                batch.push(&Outcome { seq, micros: 3, result: Ok(Bytes::new(&out)), peak_rss: 0, leaked: 0 }).unwrap();
            }
            buf.clear();
            batch.take_frame(&mut buf);
            black_box(buf.len())
        });
    }

    /// The same outcomes collected into a `Vec` and encoded by serde.
    #[divan::bench]
    fn serde(b: Bencher) {
        let out = postcard::to_stdvec(&Some(42u64)).unwrap();
        b.counter(divan::counter::ItemsCount::new(256usize)).bench_local(|| {
            let outcomes: Vec<Outcome<'_>> = (1..=256)
                .map(|seq| Outcome { seq, micros: 3, result: Ok(Bytes::new(&out)), peak_rss: 0, leaked: 0 })
                .collect();
            black_box(frame::encode(&FromWorker::Results(outcomes)).unwrap().len())
        });
    }

    fn body(out: &[u8]) -> Vec<u8> {
        let outcomes: Vec<Outcome<'_>> = (1..=256)
            .map(|seq| Outcome { seq, micros: 3, result: Ok(Bytes::new(out)), peak_rss: 0, leaked: 0 })
            .collect();
        frame::encode(&FromWorker::Results(outcomes)).unwrap()[frame::HEADER_LEN..].to_vec()
    }

    /// 256 outcomes decoded by hand, as the supervisor reads them.
    #[divan::bench]
    fn decode_by_hand(b: Bencher) {
        let out = postcard::to_stdvec(&Some(42u64)).unwrap();
        let body = body(&out);
        b.counter(divan::counter::ItemsCount::new(256usize)).bench_local(|| {
            let FromWorker::Results(r) = proto::decode_from_worker(black_box(&body)).unwrap() else { unreachable!() };
            black_box(r.len())
        });
    }

    /// The same outcomes decoded by serde.
    #[divan::bench]
    fn decode_serde(b: Bencher) {
        let out = postcard::to_stdvec(&Some(42u64)).unwrap();
        let body = body(&out);
        b.counter(divan::counter::ItemsCount::new(256usize)).bench_local(|| {
            let FromWorker::Results(r) = frame::decode::<FromWorker>(black_box(&body)).unwrap() else { unreachable!() };
            black_box(r.len())
        });
    }
}

mod empty_output {
    use super::*;

    fn records() -> Vec<Record<BuiltinOutput>> {
        (0..1000u32).map(|i| Record::new(format!("t{i}"), 1, Some(0.004), Ok(BuiltinOutput::Nothing), vec![])).collect()
    }

    /// 1000 no-op records (`"output":null`) through the hand-written writer.
    #[divan::bench]
    fn write_by_hand(b: Bencher) {
        write_each(b, &records(), 64 << 10, |buf, r| write_record(buf, &r.as_ref(), ""));
    }

    /// The same records through serde_json.
    #[divan::bench]
    fn write_serde(b: Bencher) {
        write_each(b, &records(), 64 << 10, |buf, r| serde_json::to_writer(&mut *buf, &r.as_ref()).unwrap());
    }

    /// A no-op's output decoded as the supervisor decodes it.
    #[divan::bench]
    fn decode_by_hand() -> BuiltinOutput {
        decode_output::<BuiltinOutput>(black_box(BuiltinOutput::NOTHING_POSTCARD)).unwrap()
    }

    /// The same bytes decoded by serde.
    #[divan::bench]
    fn decode_serde() -> BuiltinOutput {
        postcard::from_bytes::<BuiltinOutput>(black_box(BuiltinOutput::NOTHING_POSTCARD)).unwrap()
    }
}

mod id_set {
    use super::*;

    fn ids() -> Vec<String> {
        (0..100_000).map(|i| format!("task-{i:08}")).collect()
    }

    /// 100 000 ids into the id set (64-bit hashes, duplicate check included).
    #[divan::bench]
    fn insert(b: Bencher) {
        let ids = ids();
        b.counter(divan::counter::ItemsCount::new(ids.len())).bench_local(|| {
            let mut set = IdSet::default();
            for id in &ids {
                black_box(set.insert(id));
            }
            set.len()
        });
    }

    /// The same ids into a `HashSet<String>`, which holds every id's bytes.
    #[divan::bench]
    fn hash_set_of_strings(b: Bencher) {
        let ids = ids();
        b.counter(divan::counter::ItemsCount::new(ids.len())).bench_local(|| {
            let mut set = HashSet::new();
            for id in &ids {
                black_box(set.insert(id.clone()));
            }
            set.len()
        });
    }
}
