//! `bulkhead compare`: the threads-versus-processes cheat sheet, measured on this machine.
//!
//! Every figure comes from a real `bulkhead run` started as a child process in thread,
//! process or hybrid mode, timed from outside, with the memory of its whole process tree
//! sampled while it runs (RSS, and PSS, which shares the pages processes have in common
//! fairly between them). Nothing is estimated.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cli::load::{CpuSnap, NOISY_CORES, OtherLoad};

/// Options of `bulkhead compare`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Smaller batches and shorter waits, for a quick look (and the tests).
    pub quick: bool,
    /// Workers for the parallel runs; default: available cores.
    pub workers: usize,
}

/// One mode's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModeFigures {
    /// `thread`, `process` or `hybrid`.
    pub mode: String,
    /// How the mode was run.
    pub setup: String,
    /// Peak RSS of the whole tree with 8 workers sleeping, MiB.
    pub rss_total_mib: f64,
    /// Peak PSS of the whole tree, MiB.
    pub pss_total_mib: f64,
    /// Extra PSS per worker: (8 workers - 1 worker) / 7, MiB.
    pub pss_per_worker_mib: f64,
    /// Microseconds per no-op task, end to end, on one worker (batched).
    pub us_per_task: f64,
    /// Round trip of one task at a time, median, microseconds.
    pub rtt_p50_us: f64,
    /// Round trip of one task at a time, 99th percentile, microseconds.
    pub rtt_p99_us: f64,
    /// Tasks of the stability batch with a final record.
    pub completed: u64,
    /// Tasks of the stability batch with none: lost.
    pub lost: u64,
    /// How far one segfault spread.
    pub segv_spread: String,
    /// What one panic did.
    pub panic_effect: String,
    /// CPU-bound tasks per second on one worker.
    pub cpu_1_per_s: f64,
    /// CPU-bound tasks per second on all workers.
    pub cpu_n_per_s: f64,
    /// `cpu_n_per_s / cpu_1_per_s`.
    pub speedup: f64,
    /// Seconds for the slow fetches on 2 workers.
    pub wait_2_s: f64,
    /// Seconds for the slow fetches on 100 workers (or 2 x 50 threads in hybrid).
    pub wait_100_s: f64,
}

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The machine: cores and kernel.
    pub machine: String,
    /// Worker count of the parallel runs.
    pub workers: usize,
    /// Quick mode.
    pub quick: bool,
    /// Slow fetches: count and milliseconds each.
    pub fetches: (u64, u64),
    /// Per mode.
    pub modes: Vec<ModeFigures>,
    /// CPU that other processes of the machine took while this ran, in cores: above
    /// [`NOISY_CORES`] the CPU-bound and timing figures measure them as much as us.
    pub other_load_cores: f64,
}

/// What a child run did.
#[derive(Debug, Clone, Default)]
struct Measured {
    secs: f64,
    records: u64,
    code: Option<i32>,
    signal: Option<i32>,
    peak_rss: u64,
    peak_pss: u64,
    stderr: String,
}

fn exe() -> std::path::PathBuf {
    std::env::current_exe().expect("the running executable has a path")
}

/// Why a comparison could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// A run could not start or be waited for.
    #[error("cannot {what}")]
    Io {
        /// What was tried.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The library refused the round-trip run.
    #[error("cannot run the round trips")]
    Pool(#[from] crate::pool::PoolError),
    /// A measuring thread panicked.
    #[error("a measurement thread panicked")]
    Panicked,
    /// The round-trip run stopped before its last task.
    #[error("the round-trip run stopped")]
    Stopped(#[source] Box<crate::pool::RunError>),
    /// The round-trip run ended before its last task.
    #[error("the round-trip run ended early")]
    EndedEarly,
}

/// Runs `bulkhead run ARGS` on `input`, sampling the tree's memory every 5 ms.
fn measure(args: &[String], input: String) -> Result<Measured, CompareError> {
    let start = Instant::now();
    let mut child = Command::new(exe())
        .arg("run")
        .args(args)
        .args(["--progress", "never"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CompareError::Io { what: "start bulkhead run", source })?;
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("piped");
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let done = Arc::new(AtomicBool::new(false));
    let (peak_rss, peak_pss) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let sampler = {
        let (done, rss, pss) = (done.clone(), peak_rss.clone(), peak_pss.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let (r, p) = tree_memory(pid);
                rss.fetch_max(r, Ordering::Relaxed);
                pss.fetch_max(p, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let stdout = child.stdout.take().expect("piped");
    let counter = std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).count() as u64);
    let stderr = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            s.push_str(&l);
            s.push('\n');
        }
        s
    });
    let status = child.wait().map_err(|source| CompareError::Io { what: "wait for bulkhead run", source })?;
    let secs = start.elapsed().as_secs_f64();
    // A thread-mode run killed by its segfault could not remove its control socket; reclaim
    // it, as the next run would.
    crate::output::rundir::reclaim(&crate::output::rundir::base_dir());
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let _ = feeder.join();
    use std::os::unix::process::ExitStatusExt;
    Ok(Measured {
        secs,
        records: counter.join().unwrap_or(0),
        code: status.code(),
        signal: status.signal(),
        peak_rss: peak_rss.load(Ordering::Relaxed),
        peak_pss: peak_pss.load(Ordering::Relaxed),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// One no-op at a time through the library, `n` times after a warm-up: (p50, p99) in µs.
/// Process mode runs workers of this very executable, which serves as its own worker.
fn round_trip(mode: &str, n: usize) -> Result<(f64, f64), CompareError> {
    use shared::task::BuiltinTask;
    let mut builder = crate::Pool::builder().workers(1).worker_output(crate::WorkerOutput::Log);
    if let Ok(p) = crate::runtime::process::spawn::WorkerProgram::builtin() {
        builder = builder.worker_program(p);
    }
    let builder = match mode {
        "thread" => builder.mode(crate::Mode::Thread),
        "process" => builder.mode(crate::Mode::Process),
        _ => builder.mode(crate::Mode::Process).threads_per_worker(2),
    };
    let pool = builder.build(worker::builtin::Builtin::default())?;
    let (tx, source) =
        crate::channel::<BuiltinTask>().map_err(|source| CompareError::Io { what: "open a task channel", source })?;
    let mut run = pool.run_source(|a| Ok(Box::new(source.admit_with(a))))?;
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 100 {
        let t = Instant::now();
        tx.send(crate::TaskSpec::with_id(format!("r{i}"), BuiltinTask::Noop));
        run.next().ok_or(CompareError::EndedEarly)?.map_err(|e| CompareError::Stopped(Box::new(e)))?;
        if i >= 100 {
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    drop(tx);
    for r in run {
        r.map_err(|e| CompareError::Stopped(Box::new(e)))?;
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], times[times.len() * 99 / 100]))
}

/// RSS and PSS in bytes of `pid` and all its descendants.
pub fn tree_memory(pid: u32) -> (u64, u64) {
    let mut rss = 0;
    let mut pss = 0;
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{p}/status"))
            && let Some(kb) = field_kb(&status, "VmRSS:")
        {
            rss += kb * 1024;
        }
        if let Ok(rollup) = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup"))
            && let Some(kb) = field_kb(&rollup, "Pss:")
        {
            pss += kb * 1024;
        }
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                if let Ok(children) = std::fs::read_to_string(t.path().join("children")) {
                    stack.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
                }
            }
        }
    }
    (rss, pss)
}

fn field_kb(text: &str, name: &str) -> Option<u64> {
    text.lines().find(|l| l.starts_with(name))?.split_whitespace().nth(1)?.parse().ok()
}

fn lines(n: usize, f: impl Fn(usize) -> String) -> String {
    let mut s = String::with_capacity(n * 40);
    for i in 0..n {
        s.push_str(&f(i));
        s.push('\n');
    }
    s
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// A mode's flags for `w` workers.
fn mode_args(mode: &str, w: usize) -> Vec<String> {
    let mut a = vec!["--results".to_string(), "/dev/null".to_string()];
    match mode {
        "thread" => a.extend(["--mode".into(), "thread".into(), "-j".into(), w.to_string()]),
        "process" => a.extend(["-j".into(), w.to_string()]),
        // Hybrid: the same number of concurrent tasks, as threads inside 2 processes.
        _ => a.extend([
            "-j".into(),
            w.min(2).to_string(),
            "--threads-per-worker".into(),
            w.div_ceil(2).max(1).to_string(),
        ]),
    }
    a
}

fn with_stdout(mut args: Vec<String>) -> Vec<String> {
    if let Some(i) = args.iter().position(|a| a == "--results") {
        args.drain(i..i + 2);
    }
    args
}

/// Runs every measurement.
pub fn compare(opts: &Options, mut progress: impl FnMut(&str)) -> Result<Comparison, CompareError> {
    let q = opts.quick;
    let workers = opts.workers.max(1);
    let noops = if q { 20_000 } else { 200_000 };
    let cpu_tasks = if q { 24 } else { 120 };
    let cpu_n = if q { 1_000_000 } else { 5_000_000 };
    let (fetches, fetch_ms) = if q { (100u64, 50u64) } else { (100, 500) };
    let load = CpuSnap::take();
    let mut modes = Vec::new();
    for mode in ["thread", "process", "hybrid"] {
        let mut m = ModeFigures { mode: mode.into(), ..Default::default() };
        m.setup = match mode {
            "thread" => "N threads of one process".into(),
            "process" => "N worker processes".into(),
            _ => "2 processes x N/2 threads".into(),
        };

        progress(&format!("{mode}: memory"));
        let sleepers = |n: usize| lines(n, |i| format!("{{\"id\":\"m{i}\",\"kind\":\"sleep\",\"ms\":300}}"));
        let one = measure(&mode_args(mode, 1), sleepers(1))?;
        let eight = measure(&mode_args(mode, 8), sleepers(8))?;
        m.rss_total_mib = mib(eight.peak_rss);
        m.pss_total_mib = mib(eight.peak_pss);
        m.pss_per_worker_mib = mib(eight.peak_pss.saturating_sub(one.peak_pss)) / 7.0;

        progress(&format!("{mode}: communication"));
        let r = measure(&mode_args(mode, 1), lines(noops, |i| format!("{{\"id\":\"n{i}\",\"kind\":\"noop\"}}")))?;
        m.us_per_task = r.secs * 1e6 / noops as f64;

        let (p50, p99) = round_trip(mode, if q { 300 } else { 2000 })?;
        m.rtt_p50_us = p50;
        m.rtt_p99_us = p99;

        progress(&format!("{mode}: one segfault, one panic"));
        let batch = |fault: &str| {
            lines(40, |i| {
                if i == 10 {
                    format!(
                        "{{\"id\":\"f{i}\",\"kind\":\"sleep\",\"ms\":20,\"fault\":\"{fault}\",\"fault_attempts\":1}}"
                    )
                } else {
                    format!("{{\"id\":\"s{i}\",\"kind\":\"sleep\",\"ms\":20}}")
                }
            })
        };
        let ev = std::env::temp_dir().join(format!("bulkhead-compare-{}.jsonl", std::process::id()));
        let mut args = with_stdout(mode_args(mode, 4));
        args.extend(["--events".into(), ev.display().to_string()]);
        let s = measure(&args, batch("segv"))?;
        let requeued = std::fs::read_to_string(&ev)
            .map(|t| t.lines().filter(|l| l.contains("\"task_requeued\"")).count())
            .unwrap_or(0);
        let _ = std::fs::remove_file(&ev);
        m.completed = s.records;
        m.lost = 40 - s.records.min(40);
        m.segv_spread = match s.signal {
            Some(sig) => format!("whole process (killed by signal {sig}); {} tasks lost", m.lost),
            None => format!("{requeued} task(s) re-run, none lost"),
        };
        let p = measure(&with_stdout(mode_args(mode, 4)), batch("panic"))?;
        m.panic_effect = if p.stderr.contains("shared state poisoned") {
            format!("state poisoned, run stopped; {} of 40 recorded", p.records)
        } else if p.code == Some(0) {
            "1 task retried, none lost".into()
        } else {
            format!("exit {:?}, {} of 40 recorded", p.code, p.records)
        };

        progress(&format!("{mode}: CPU-bound"));
        let cpu = || lines(cpu_tasks, |i| format!("{{\"id\":\"c{i}\",\"kind\":\"sum_squares\",\"n\":{cpu_n}}}"));
        let c1 = measure(&mode_args(mode, 1), cpu())?;
        let cn = measure(&mode_args(mode, workers), cpu())?;
        m.cpu_1_per_s = cpu_tasks as f64 / c1.secs;
        m.cpu_n_per_s = cpu_tasks as f64 / cn.secs;
        m.speedup = m.cpu_n_per_s / m.cpu_1_per_s;
        modes.push(m);
    }
    // The slow fetches wait rather than compute, so the runs can share the machine: all six
    // run at once.
    progress("waiting-bound: 100 slow fetches on 2 and on 100 workers");
    let fetch_input = lines(fetches as usize, |i| format!("{{\"id\":\"w{i}\",\"kind\":\"sleep\",\"ms\":{fetch_ms}}}"));
    let mut handles = Vec::new();
    for (i, mode) in ["thread", "process", "hybrid"].iter().enumerate() {
        for w in [2usize, 100] {
            let args = if *mode == "hybrid" {
                vec![
                    "--results".into(),
                    "/dev/null".into(),
                    "-j".into(),
                    "2".into(),
                    "--threads-per-worker".into(),
                    (w / 2).to_string(),
                ]
            } else {
                mode_args(mode, w)
            };
            let input = fetch_input.clone();
            handles.push((i, w, std::thread::spawn(move || measure(&args, input))));
        }
    }
    for (i, w, h) in handles {
        let r = h.join().map_err(|_| CompareError::Panicked)??;
        if w == 2 {
            modes[i].wait_2_s = r.secs;
        } else {
            modes[i].wait_100_s = r.secs;
        }
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    Ok(Comparison {
        machine: format!(
            "{} cores, Linux {}",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel.trim()
        ),
        workers,
        quick: q,
        fetches: (fetches, fetch_ms),
        modes,
        other_load_cores: OtherLoad::since(&load).other_cores,
    })
}

/// The comparison as a table for the terminal.
pub fn table(c: &Comparison) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "threads vs processes, measured: {}{}", c.machine, if c.quick { " (quick)" } else { "" });
    let head = ["", "thread", "process", "hybrid"];
    let _ = writeln!(s, "{:<34}{:>22}{:>22}{:>22}", head[0], head[1], head[2], head[3]);
    let row = |s: &mut String, name: &str, f: &dyn Fn(&ModeFigures) -> String| {
        let cells: Vec<String> = c.modes.iter().map(f).collect();
        let _ = writeln!(s, "{:<34}{:>22}{:>22}{:>22}", name, cells[0], cells[1], cells[2]);
    };
    row(&mut s, "memory, 8 workers: RSS total", &|m| format!("{:.1} MiB", m.rss_total_mib));
    row(&mut s, "memory, 8 workers: PSS total", &|m| format!("{:.1} MiB", m.pss_total_mib));
    row(&mut s, "memory: PSS per extra worker", &|m| format!("{:.2} MiB", m.pss_per_worker_mib));
    row(&mut s, "communication: per task, batched", &|m| format!("{:.2} µs", m.us_per_task));
    row(&mut s, "communication: one at a time p50", &|m| format!("{:.1} µs", m.rtt_p50_us));
    row(&mut s, "communication: one at a time p99", &|m| format!("{:.1} µs", m.rtt_p99_us));
    row(&mut s, "one segfault in 40 tasks: done", &|m| format!("{}/40, {} lost", m.completed, m.lost));
    row(&mut s, "CPU-bound: 1 worker", &|m| format!("{:.1} tasks/s", m.cpu_1_per_s));
    row(&mut s, &format!("CPU-bound: {} workers", c.workers), &|m| format!("{:.1} tasks/s", m.cpu_n_per_s));
    row(&mut s, "CPU-bound: speedup", &|m| format!("{:.2}x", m.speedup));
    let (n, ms) = c.fetches;
    row(&mut s, &format!("{n} waits of {ms} ms: 2 workers"), &|m| format!("{:.2} s", m.wait_2_s));
    row(&mut s, &format!("{n} waits of {ms} ms: 100 workers"), &|m| format!("{:.2} s", m.wait_100_s));
    let _ = writeln!(s, "how far one crash spreads:");
    for m in &c.modes {
        let _ = writeln!(s, "  {:<8} segfault: {}", m.mode, m.segv_spread);
        let _ = writeln!(s, "  {:<8} panic:    {}", "", m.panic_effect);
    }
    let _ = writeln!(s, "(hybrid: 2 processes x N/2 threads; with 100 workers: 2 x 50)");
    if c.other_load_cores > NOISY_CORES {
        let _ = writeln!(
            s,
            "warning: other processes took {:.2} cores meanwhile: the CPU-bound and timing figures measure \
             them too; rerun on a quiet machine",
            c.other_load_cores
        );
    }
    s
}
