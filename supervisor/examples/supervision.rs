//! Supervision beyond crashes, each as a user would meet it: a handler that leaks memory,
//! contained by recycling its workers; a handler wedged on a lock, caught by its silence
//! while a busy one reporting progress runs on; a batch with a poison record that segfaults,
//! finished without it; a handler's child processes, in a process group of their own, killed
//! with the task that timed out.
//!
//! ```text
//! cargo run --release --example supervision -- leak | stall | records | records-thread | children | children-thread
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

/// Works through `steps` steps of 100 ms, reporting each; with `wedge`, after three steps
/// it takes a lock that another thread holds forever (a deadlock in a library, say).
#[derive(Debug, Serialize, Deserialize)]
struct Steps;

impl Handler for Steps {
    type Task = (u32, bool);
    type Output = u32;

    fn handle(&self, (steps, wedge): (u32, bool), cx: &TaskContext<'_>) -> Result<u32, TaskError> {
        let lock = std::sync::Arc::new(std::sync::Mutex::new(()));
        for i in 0..steps {
            if wedge && i == 3 {
                let (held, taken) = (lock.clone(), std::sync::mpsc::channel::<()>());
                std::thread::spawn(move || {
                    let _guard = held.lock();
                    let _ = taken.0.send(());
                    std::thread::park();
                });
                let _ = taken.1.recv();
                let _never = lock.lock();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            cx.progress(1);
        }
        Ok(steps)
    }
}

/// A wedged handler and a busy one under a 700 ms stall limit: the busy one runs 2.5 s,
/// reporting every 100 ms, and is left alone; the wedged one is killed as `stalled`.
fn stall() -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::builder()
        .mode(Mode::Process)
        .workers(2)
        .attempts(1)
        .stall_timeout(std::time::Duration::from_millis(700))
        .build(Steps)?;
    let tasks = [TaskSpec::with_id("wedged", (25, true)), TaskSpec::with_id("busy", (25, false))];
    print_outcomes(pool.run(tasks)?)
}

/// Sums the squares of a batch of records, reporting the one it is on; a record listed in
/// `poison` segfaults its worker (a bad pointer in a parser of that record's format, say).
#[derive(Debug, Serialize, Deserialize)]
struct Batch;

impl Handler for Batch {
    /// The records, and the indices of those that crash.
    type Task = (Vec<u64>, Vec<usize>);
    /// The sum of squares of the records processed, and how many were.
    type Output = (u64, usize);

    fn handle(&self, (records, poison): Self::Task, cx: &TaskContext<'_>) -> Result<(u64, usize), TaskError> {
        let (mut sum, mut done) = (0, 0);
        for (i, r) in records.iter().enumerate() {
            if cx.at(i).skip() {
                continue;
            }
            if poison.contains(&i) {
                // A write to page 0, never mapped: the kernel's SIGSEGV, a real crash. The
                // address is non-null so that debug builds do not turn it into a panic.
                let bad = std::hint::black_box(0x10usize) as *mut u8;
                // SAFETY: deliberately unsound: this record is the poison.
                unsafe { std::ptr::write_volatile(bad, 1) };
            }
            sum += r * r;
            done += 1;
        }
        Ok((sum, done))
    }
}

/// Three batches of 100 records under `--skip-bad-records` (one worker, so that each task's
/// crashes are on one slot): one whose record 37 segfaults, one with records 5 and 80 bad,
/// one clean. Each record is printed as JSON, one a line.
fn records(mode: Mode) -> Result<(), Box<dyn std::error::Error>> {
    let pool =
        Pool::builder().mode(mode).workers(1).attempts(3).skip_bad_records(true).build(Batch).map_err(|e| match e {
            // The setting refused, with its reason (thread mode).
            bulkhead::PoolError::Invalid(why) => why.to_string(),
            e => e.to_string(),
        })?;
    let batch = |poison: Vec<usize>| ((0..100u64).collect::<Vec<_>>(), poison);
    let tasks = [
        TaskSpec::with_id("bad37", batch(vec![37])),
        TaskSpec::with_id("bad5-80", batch(vec![5, 80])),
        TaskSpec::with_id("clean", batch(vec![])),
    ];
    let mut run = pool.run(tasks)?;
    for r in run.by_ref() {
        println!("{}", serde_json::to_string(&r?)?);
    }
    Ok(())
}

/// Runs `sleep SECONDS` as a child in a process group of its own (as a tool that must not
/// get the terminal's signals is started), declared to the pool, and waits for it.
#[derive(Debug, Serialize, Deserialize)]
struct Sleeper;

impl Handler for Sleeper {
    type Task = u32;
    type Output = i32;

    fn handle(&self, seconds: u32, cx: &TaskContext<'_>) -> Result<i32, TaskError> {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg(seconds.to_string())
            .process_group(0)
            .spawn()
            .map_err(|e| TaskError::new(format!("cannot start sleep: {e}")))?;
        // Its own group is out of reach of a kill of the worker's: declared, a timeout kills it.
        cx.set_child_group(child.id() as i32);
        let status = child.wait().map_err(|e| TaskError::new(format!("cannot wait for sleep: {e}")))?;
        cx.clear_child_group();
        status.code().ok_or_else(|| TaskError::new(format!("sleep ended by {status}")))
    }
}

/// A quick child and one that would sleep 60 s under a 500 ms timeout: the slow task times
/// out and its sleep dies with it, in process mode (the worker is killed) and in thread mode
/// (the thread cannot be killed, its children can).
fn children(mode: Mode) -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::builder()
        .mode(mode)
        .workers(2)
        .attempts(1)
        .timeout(std::time::Duration::from_millis(500))
        // The killed sleep outlives its killed worker for a moment and comes here to be reaped
        // (this program has no children of its own). A thread-mode task waits for its own.
        .reap_orphans(mode == Mode::Process)
        .build(Sleeper)?;
    print_outcomes(pool.run([TaskSpec::with_id("quick", 0), TaskSpec::with_id("slow", 60)])?)
}

/// One line a task: its id, status, attempts and the cause of each crash.
fn print_outcomes<H: Handler>(run: bulkhead::Run<'_, H>) -> Result<(), Box<dyn std::error::Error>> {
    for r in run {
        let r = r?;
        print!("  {} {} attempts {}", r.id, r.status, r.attempts);
        for c in &r.crashes {
            print!(": {}", c.cause);
        }
        println!();
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Workers get no arguments: each serves whichever handler its pool asked for.
    bulkhead::serve_if_worker::<Leaky>();
    bulkhead::serve_if_worker::<Steps>();
    bulkhead::serve_if_worker::<Batch>();
    bulkhead::serve_if_worker::<Sleeper>();
    match std::env::args().nth(1).as_deref() {
        Some("leak") => leak(),
        Some("stall") => stall(),
        Some("records") => records(Mode::Process),
        Some("records-thread") => records(Mode::Thread),
        Some("children") => children(Mode::Process),
        Some("children-thread") => children(Mode::Thread),
        other => Err(format!(
            "usage: supervision leak | stall | records | records-thread | children | children-thread (not {other:?})"
        )
        .into()),
    }
}
