//! Supervision beyond crashes, each as a user would meet it: a handler that leaks memory,
//! contained by recycling its workers.
//!
//! ```text
//! cargo run --release --example supervision -- leak
//! ```

use std::collections::BTreeMap;

use bulkhead::{Handler, Mode, Pool, TaskContext, TaskError, TaskSpec};
use serde::{Deserialize, Serialize};

/// Leaks `mib` MiB per task, touched so that it is resident (a cache that never evicts, a
/// C library that forgets a free), and answers with the pid that ran the task.
#[derive(Debug, Serialize, Deserialize)]
struct Leaky {
    mib: usize,
}

impl Handler for Leaky {
    type Task = u32;
    type Output = u32;

    fn handle(&self, _n: u32, _cx: &TaskContext<'_>) -> Result<u32, TaskError> {
        let block = vec![1u8; self.mib << 20];
        std::mem::forget(std::hint::black_box(block));
        Ok(std::process::id())
    }
}

/// 30 tasks leaking 8 MiB each on one worker recycled above 48 MiB resident: no worker
/// holds more than a few tasks' leaks, and no task is charged for a retirement.
fn leak() -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::builder().mode(Mode::Process).workers(1).max_worker_memory(48 << 20).build(Leaky { mib: 8 })?;
    let mut run = pool.run((0..30).map(|i| TaskSpec::with_id(format!("t{i}"), i)))?;
    let mut per_pid: BTreeMap<u32, u32> = BTreeMap::new();
    for r in run.by_ref() {
        let r = r?;
        let pid = r.output.ok_or("a leaky task has an output")?;
        println!("  {} {} attempts {} crashes {} ran in pid {pid}", r.id, r.status, r.attempts, r.crashes.len());
        *per_pid.entry(pid).or_default() += 1;
    }
    let s = run.summary();
    println!("tasks per worker: {:?}", per_pid.values().collect::<Vec<_>>());
    println!(
        "{} ok, {} failed, {} quarantined; {} workers retired, {} crashes",
        s.counts.ok,
        s.counts.failed,
        s.counts.quarantined,
        s.counts.retired,
        s.counts.crashes_total()
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    bulkhead::serve_if_worker::<Leaky>();
    match std::env::args().nth(1).as_deref() {
        Some("leak") => leak(),
        other => Err(format!("usage: supervision leak (not {other:?})").into()),
    }
}
