//! The benchmark suite: `cargo bench -p bulkhead` measures bulkhead on this machine, with each
//! peer (Python's multiprocessing and concurrent.futures, GNU parallel, xargs) measured in the
//! same run beside it, and prints one table; the same figures go to
//! `target/bench-results.json`. Smaller batches for development:
//! `BULKHEAD_BENCH_QUICK=1 cargo bench -p bulkhead`, or `cargo bench -p bulkhead --bench suite --
//! --quick` (a bare `-- --quick` reaches the library's test harness too, which refuses it); bare
//! words after `--` pick sections (`cargo bench -p bulkhead -- latency restart`).
//!
//! Every bulkhead figure comes from the release binary started as a child process (or, for the
//! round trip, from the library in this process driving that binary's workers), timed from
//! outside; repetitions of bulkhead and of its peers are interleaved so that a burst of load
//! on this noisy machine hits both; ratios are computed from the medians of this run. The CPU
//! that other processes used during each section is measured and printed beside it. The
//! Python peers live in `benches/peers/`; `.ci/peers-setup.sh` (the script CI uses too)
//! installs GNU parallel, ripgrep and rust-parallel where they are missing.

mod library;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bulkhead::__private::{CpuSnap, NOISY_CORES, OtherLoad, group_digits};
use bulkhead::{Mode, Pool, TaskSpec, WorkerProgram};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Deserialize;
use serde_json::{Value, json};
use shared::record::Status;
use shared::task::BuiltinTask;
use worker::builtin::Builtin;

/// The release binary `cargo bench` built beside this suite.
const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");
/// The built-in kinds' worker, which `bulkhead` starts when it sits beside it.
const WORKER_BIN: &str = env!("CARGO_BIN_EXE_bulkhead-worker");
/// Where the peers and the setup script are.
const BENCH_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches");
/// The one script that installs the peers, for CI and for this suite alike.
const PEERS_SETUP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../.ci/peers-setup.sh");

const SECTIONS: [&str; 11] = [
    "throughput",
    "latency",
    "restart",
    "scaling",
    "idle-rss",
    "supervisor-rss",
    "faults",
    "shell",
    "scan",
    "memory",
    "library",
];

fn main() {
    // The memory section's allocator is this executable too.
    serve_allocator();
    // And the library section's workers (bulkhead's and procspawn's).
    library::serve();
    let opts = Opts::parse();
    let started = Instant::now();
    let target = target_dir();
    let tmp = target.join("bench-tmp");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(tmp.join("bin")).expect("create target/bench-tmp");
    // A private copy: the library may be rebuilt in this tree while the suite runs, and every
    // figure of one run must come from one build. The worker goes beside it, as installed, or
    // bulkhead would serve as its own (bigger) worker.
    let bin = tmp.join("bin").join("bulkhead");
    for (from, to) in [(BIN, &bin), (WORKER_BIN, &tmp.join("bin").join("bulkhead-worker"))] {
        fs::copy(from, to).unwrap_or_else(|e| panic!("copy {from}: {e}"));
    }
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let sz = if opts.quick { Sizes::quick() } else { Sizes::full() };
    let python = first_line(Command::new("python3").arg("--version"));
    let (parallel, parallel_note) = find_parallel(opts.install);
    let cx = Ctx { sz, tmp: tmp.clone(), bin, cores, python, parallel, quick: opts.quick };
    let machine = machine_info(&cx);
    let header = header_lines(&cx, &machine, &parallel_note);
    for l in &header {
        eprintln!("{l}");
    }

    let all: [(&str, &str, SectionFn); 11] = [
        ("throughput", "1. End-to-end no-op throughput: JSONL file in, JSONL results out, 2 workers", throughput),
        ("latency", "2. Round trip: one no-op submitted, its result back, 1 worker process", latency),
        ("restart", "3. Worker start and crash-to-replacement", restart),
        ("scaling", "4. CPU-bound scaling, 1 worker to one per core", scaling),
        ("idle-rss", "5. Idle worker memory", idle_rss),
        ("supervisor-rss", "6. Supervisor peak RSS against batch size (no-ops streamed from a pipe)", supervisor_rss),
        ("faults", "7. Throughput with 5% of tasks crashing their worker (CPU-bound)", faults),
        ("shell", "8. Trivial shell commands from lines on stdin, 2 at a time", shell),
        ("scan", "9. A regex over a big access log: count requests by status code", scan),
        (
            "memory",
            "10. --memory-limit: the supervisor's cost of watching busy trees, and how far a fast allocator gets",
            memory,
        ),
        ("library", "11. The library against procspawn, in this process", library_section),
    ];
    let mut sections = Vec::new();
    for (key, title, f) in all {
        if opts.only.as_ref().is_some_and(|o| !o.iter().any(|k| k == key)) {
            continue;
        }
        sections.push(run_section(&cx, key, title, f));
    }
    let total = started.elapsed().as_secs_f64();
    let leftovers = descendants(std::process::id());
    for &p in &leftovers {
        let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
    }

    let mut out = String::new();
    for l in &header {
        let _ = writeln!(out, "{l}");
    }
    out.push('\n');
    out.push_str(&render(&sections));
    let problems: Vec<String> =
        sections.iter().flat_map(|s| s.problems.iter().map(move |p| format!("{}: {p}", s.key))).collect();
    let _ = writeln!(out, "\nsuite took {total:.0} s{}", if cx.quick { " (quick mode)" } else { "" });
    if !leftovers.is_empty() {
        let _ = writeln!(out, "WARNING: {} process(es) were left behind and killed: {leftovers:?}", leftovers.len());
    }
    if !problems.is_empty() {
        let _ = writeln!(out, "PROBLEMS (bulkhead did not do what was asked; figures above may be missing):");
        for p in &problems {
            let _ = writeln!(out, "  - {p}");
        }
    }
    print!("{out}");

    let doc = json!({
        "suite": "bulkhead",
        "quick": cx.quick,
        "started_unix": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()) - total,
        "total_secs": total,
        "machine": machine,
        "binary": BIN,
        "git_head": first_line(Command::new("git").args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short", "HEAD"])),
        "peers": {"python": cx.python, "gnu_parallel": cx.parallel, "gnu_parallel_note": parallel_note},
        "sections": sections.iter().map(Section::to_json).collect::<Vec<_>>(),
        "problems": problems,
        "leftover_processes": leftovers,
    });
    let json_path = target.join("bench-results.json");
    match fs::write(&json_path, serde_json::to_string_pretty(&doc).expect("serializes") + "\n") {
        Ok(()) => println!("figures written to {}", json_path.display()),
        Err(e) => eprintln!("bench: cannot write {}: {e}", json_path.display()),
    }
    let _ = fs::remove_dir_all(&tmp);
    if !problems.is_empty() {
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// Options and sizes

struct Opts {
    quick: bool,
    only: Option<Vec<String>>,
    install: bool,
}

impl Opts {
    fn parse() -> Self {
        // `cargo bench -p bulkhead -- --quick` would hand --quick to the library's test harness
        // too, which refuses it: the environment variable works with the plain command.
        let quick = std::env::var_os("BULKHEAD_BENCH_QUICK").is_some_and(|v| !v.is_empty() && v != "0");
        let mut o = Opts { quick, only: None, install: true };
        for a in std::env::args().skip(1) {
            match a.as_str() {
                "--quick" => o.quick = true,
                "--no-install" => o.install = false,
                // cargo passes this to every bench binary.
                "--bench" => {}
                "-h" | "--help" => {
                    println!(
                        "cargo bench -p bulkhead [--bench suite -- [--quick] [--no-install]] [-- SECTION...]\n\
                         BULKHEAD_BENCH_QUICK=1 cargo bench -p bulkhead   (the same as --quick)\n\
                         --quick       smaller batches, one repetition of most peers (development)\n\
                         --no-install  do not try to install GNU parallel when it is missing\n\
                         SECTION       run only these: {}",
                        SECTIONS.join(" ")
                    );
                    std::process::exit(0);
                }
                s if SECTIONS.contains(&s) => o.only.get_or_insert_with(Vec::new).push(s.to_string()),
                s if s.starts_with('-') => eprintln!("bench: ignoring option {s}"),
                s => {
                    eprintln!("bench: unknown section '{s}' (sections: {})", SECTIONS.join(" "));
                    std::process::exit(2);
                }
            }
        }
        o
    }
}

/// Batch sizes and repetitions.
struct Sizes {
    noop: u64,
    bh_reps: usize,
    peer_reps: usize,
    ppe_map_sample: u64,
    chunk1_sample: u64,
    submit_sample: u64,
    rtt_warmup: usize,
    rtt_samples: usize,
    crash_noops: u64,
    crash_runs: usize,
    cold_reps: usize,
    cpu_n: u64,
    /// CPU-bound tasks per core, so that each worker gets the same share on any machine.
    cpu_tasks_per_core: u64,
    cpu_reps: usize,
    py_cpu_n: u64,
    py_cpu_tasks_per_core: u64,
    idle_runs: usize,
    rss_batches: [u64; 2],
    fault_tasks: u64,
    fault_reps: usize,
    shell_cmds: u64,
    shell_reps: usize,
}

impl Sizes {
    fn full() -> Self {
        Sizes {
            noop: 1_000_000,
            bh_reps: 5,
            peer_reps: 3,
            ppe_map_sample: 300_000,
            chunk1_sample: 100_000,
            submit_sample: 20_000,
            rtt_warmup: 200,
            rtt_samples: 2000,
            crash_noops: 10_000,
            crash_runs: 3,
            cold_reps: 10,
            cpu_n: 5_000_000,
            cpu_tasks_per_core: 120,
            cpu_reps: 3,
            py_cpu_n: 200_000,
            py_cpu_tasks_per_core: 60,
            idle_runs: 3,
            rss_batches: [1_000_000, 10_000_000],
            fault_tasks: 400,
            fault_reps: 3,
            shell_cmds: 2000,
            shell_reps: 5,
        }
    }

    fn quick() -> Self {
        Sizes {
            noop: 100_000,
            bh_reps: 2,
            peer_reps: 1,
            ppe_map_sample: 50_000,
            chunk1_sample: 10_000,
            submit_sample: 5_000,
            rtt_warmup: 50,
            rtt_samples: 500,
            crash_noops: 2_000,
            crash_runs: 1,
            cold_reps: 3,
            cpu_n: 5_000_000,
            cpu_tasks_per_core: 30,
            cpu_reps: 1,
            py_cpu_n: 200_000,
            py_cpu_tasks_per_core: 15,
            idle_runs: 1,
            rss_batches: [100_000, 1_000_000],
            fault_tasks: 100,
            fault_reps: 1,
            shell_cmds: 300,
            shell_reps: 1,
        }
    }
}

struct Ctx {
    sz: Sizes,
    tmp: PathBuf,
    bin: PathBuf,
    cores: usize,
    python: Option<String>,
    parallel: Option<String>,
    quick: bool,
}

impl Ctx {
    fn bulkhead(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("run").args(["--progress", "never"]);
        c
    }

    fn python(&self, script: &str) -> Command {
        let mut c = Command::new("python3");
        c.arg(format!("{BENCH_DIR}/peers/{script}"));
        c
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.join(name)
    }
}

// ---------------------------------------------------------------------------------------------
// Sections, rows, the table

type SectionFn = fn(&Ctx, &mut Section) -> Result<(), String>;

struct Section {
    key: &'static str,
    title: String,
    rows: Vec<Row>,
    notes: Vec<String>,
    problems: Vec<String>,
    secs: f64,
    noise: Option<OtherLoad>,
}

impl Section {
    fn note(&mut self, s: impl Into<String>) {
        let s = s.into();
        eprintln!("  note: {s}");
        self.notes.push(s);
    }

    /// Something bulkhead got wrong (a failed run, a lost record, a hang).
    fn problem(&mut self, s: impl Into<String>) {
        let s = s.into();
        eprintln!("  PROBLEM: {s}");
        self.problems.push(s);
    }

    fn to_json(&self) -> Value {
        json!({
            "key": self.key,
            "title": self.title,
            "secs": self.secs,
            "noise": self.noise.as_ref().map(|n| json!({"other_cores": n.other_cores, "steal_cores": n.steal_cores})),
            "rows": self.rows.iter().map(|r| {
                let mut v = json!({"system": r.system, "batch": r.batch, "reps": r.reps, "result": r.result,
                    "vs": r.vs, "target": r.target});
                if let (Value::Object(m), Value::Object(d)) = (&mut v, &r.data) {
                    m.extend(d.clone());
                }
                v
            }).collect::<Vec<_>>(),
            "notes": self.notes,
            "problems": self.problems,
        })
    }
}

#[derive(Default)]
struct Row {
    system: String,
    batch: String,
    reps: String,
    result: String,
    vs: String,
    target: String,
    data: Value,
}

fn row(system: impl Into<String>, batch: impl Into<String>, reps: impl ToString, result: impl Into<String>) -> Row {
    Row {
        system: system.into(),
        batch: batch.into(),
        reps: reps.to_string(),
        result: result.into(),
        data: json!({}),
        ..Row::default()
    }
}

impl Row {
    fn vs(mut self, s: impl Into<String>) -> Self {
        self.vs = s.into();
        self
    }
    fn target(mut self, s: impl Into<String>) -> Self {
        self.target = s.into();
        self
    }
    fn data(mut self, v: Value) -> Self {
        self.data = v;
        self
    }
}

fn run_section(cx: &Ctx, key: &'static str, title: &str, f: SectionFn) -> Section {
    let mut s = Section {
        key,
        title: title.to_string(),
        rows: Vec::new(),
        notes: Vec::new(),
        problems: Vec::new(),
        secs: 0.0,
        noise: None,
    };
    eprintln!("\n== {title}");
    let before = CpuSnap::take();
    let t0 = Instant::now();
    match std::panic::catch_unwind(AssertUnwindSafe(|| f(cx, &mut s))) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => s.problem(e),
        Err(p) => {
            let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            s.problem(format!("the section panicked: {}", msg.unwrap_or_default()));
        }
    }
    s.secs = t0.elapsed().as_secs_f64();
    s.noise = Some(OtherLoad::since(&before));
    // Each section cleans up after itself; anything still here is big and no longer needed.
    if let Ok(rd) = fs::read_dir(&cx.tmp) {
        for e in rd.flatten() {
            if e.file_name() != "bin" {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    s
}

fn render(sections: &[Section]) -> String {
    let head = ["system / setup", "batch", "reps", "result (median)", "bulkhead vs this", "target"];
    let mut w = head.map(str::len);
    for r in sections.iter().flat_map(|s| &s.rows) {
        for (i, c) in [&r.system, &r.batch, &r.reps, &r.result, &r.vs, &r.target].into_iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut s = String::from("   ");
        for (i, c) in cells.iter().enumerate() {
            let pad = w[i].saturating_sub(c.chars().count());
            if i == 2 {
                s.push_str(&format!("{}{c}", " ".repeat(pad)));
            } else {
                s.push_str(&format!("{c}{}", " ".repeat(pad)));
            }
            s.push_str("  ");
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(head);
    out.push_str(&format!("   {}\n", "-".repeat(w.iter().sum::<usize>() + 2 * 5)));
    for s in sections {
        let noise = s.noise.as_ref().map(describe).unwrap_or_default();
        out.push_str(&format!("{}  [{:.0} s; {noise}]\n", s.title, s.secs));
        for r in &s.rows {
            out.push_str(&line([&r.system, &r.batch, &r.reps, &r.result, &r.vs, &r.target]));
        }
        for n in &s.notes {
            out.push_str(&format!("     note: {n}\n"));
        }
        for p in &s.problems {
            out.push_str(&format!("     PROBLEM: {p}\n"));
        }
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 1. Throughput

fn throughput(cx: &Ctx, s: &mut Section) -> Result<(), String> {
    let n = cx.sz.noop;
    let tasks = cx.path("noop.jsonl");
    write_tasks(&tasks, n, noop_line("t"))?;
    let results = cx.path("results.jsonl");
    let peers: Vec<(&str, String, u64)> = vec![
        ("pool-chunk1000", "Python Pool(2).imap_unordered chunksize=1000".into(), n),
        ("ppe-map1000", "Python ProcessPoolExecutor(2).map chunksize=1000".into(), cx.sz.ppe_map_sample.min(n)),
        ("pool-chunk1", "Python Pool(2).imap_unordered chunksize=1".into(), cx.sz.chunk1_sample.min(n)),
        ("ppe-submit", "Python ProcessPoolExecutor(2).submit per task".into(), cx.sz.submit_sample.min(n)),
    ];
    let mut bh = Vec::new();
    let mut bh_run_phase = Vec::new();
    let mut peer_rates: Vec<Vec<f64>> = vec![Vec::new(); peers.len()];
    let mut peer_failed: Vec<Option<String>> = vec![None; peers.len()];
    if cx.python.is_none() {
        s.note("python3 not found: the Python peers are skipped");
    }
    let reps = cx.sz.bh_reps.max(cx.sz.peer_reps);
    for rep in 0..reps {
        if rep < cx.sz.bh_reps {
            let _ = fs::remove_file(&results);
            let mut c = cx.bulkhead();
            c.arg(&tasks).args(["-j", "2", "--results"]).arg(&results);
            let o = execute(&mut c, Input::Null, Output::Null, bh_timeout(n), None)?;
            o.check(&[0])?;
            verify_results(&results, Some("t"), n, false)?;
            let rate = n as f64 / o.secs();
            eprintln!("  bulkhead rep {}/{}: {} ({:.2} s)", rep + 1, cx.sz.bh_reps, fmt_rate(rate), o.secs());
            bh.push(rate);
            if let Some(r) = parse_summary(&o.stderr).rate {
                bh_run_phase.push(r);
            }
            let _ = fs::remove_file(&results);
        }
        if cx.python.is_none() || rep >= cx.sz.peer_reps {
            continue;
        }
        for (i, (mode, label, limit)) in peers.iter().enumerate() {
            if peer_failed[i].is_some() {
                continue;
            }
            let out = cx.path("peer-results.jsonl");
            let mut c = cx.python("throughput.py");
            c.arg(mode).arg(&tasks).arg(&out).arg("--limit").arg(limit.to_string());
            let r = execute(&mut c, Input::Null, Output::Capture, peer_timeout(*limit), None).and_then(|o| {
                o.check(&[0])?;
                let got = count_lines(&out)?;
                if got != *limit {
                    return Err(format!("wrote {got} results for {limit} tasks"));
                }
                Ok(*limit as f64 / o.secs())
            });
            let _ = fs::remove_file(&out);
            match r {
                Ok(rate) => {
                    eprintln!("  {label} rep {}/{}: {}", rep + 1, cx.sz.peer_reps, fmt_rate(rate));
                    peer_rates[i].push(rate);
                }
                Err(e) => {
                    s.note(format!("{label} failed, skipped: {e}"));
                    peer_failed[i] = Some(e);
                }
            }
        }
    }
    let bh_med = median(&bh);
    s.rows.push(
        row("bulkhead run -j 2 --results FILE", fmt_int(n), bh.len(), fmt_rate(bh_med))
            .target(verdict(bh_med >= 1e6, ">= 1,000,000/s"))
            .data(json!({"unit": "tasks/s", "value": bh_med, "samples": bh, "run_phase_samples": bh_run_phase})),
    );
    for (i, (_, label, limit)) in peers.iter().enumerate() {
        if peer_rates[i].is_empty() {
            continue;
        }
        let m = median(&peer_rates[i]);
        let batch = if *limit == n { fmt_int(*limit) } else { format!("{} (sample)", fmt_int(*limit)) };
        let mut r = row(label.clone(), batch, peer_rates[i].len(), fmt_rate(m))
            .vs(faster(bh_med / m))
            .data(json!({"unit": "tasks/s", "value": m, "samples": peer_rates[i], "tasks": limit}));
        if i == 0 {
            r = r.target(verdict(bh_med / m >= 10.0, "bulkhead >= 10x"));
        }
        s.rows.push(r);
    }
    if !bh_run_phase.is_empty() {
        s.note(format!(
            "bulkhead's own summary line (its run phase: without process start-up and the check of the whole \
             input file before the first task) says {} median",
            fmt_rate(median(&bh_run_phase))
        ));
    }
    s.note("every rate is tasks / wall time of the whole process (start to exit), results written to a file");
    if peers.iter().any(|p| p.2 != n) {
        s.note("per-task peers and PPE.map run on a sample (first N lines of the same file): rates are comparable");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 10. The library against procspawn

fn library_section(cx: &Ctx, s: &mut Section) -> Result<(), String> {
    let sz = if cx.quick {
        library::LibSizes { batch: 2_000, round_trips: 1_000, cold_reps: 3, crashes: 30, reps: 1 }
    } else {
        library::LibSizes { batch: 10_000, round_trips: 10_000, cold_reps: 10, crashes: 100, reps: 3 }
    };
    let dog = watchdog("the library section", Duration::from_secs(600));
    let (mut bh, mut ps) = (library::Figures::default(), library::Figures::default());
    // (name, backoff: immediate restarts and base, ms per crash of each repetition)
    type Variant = (&'static str, Option<(u32, Duration)>, Vec<f64>);
    // Each of these deaths is charged to its task, so the default replaces it at once; the
    // backoff turned off entirely is the control that shows it costs them nothing.
    let mut variants: Vec<Variant> = vec![
        ("default restart policy", None, Vec::new()),
        ("no backoff at all", Some((u32::MAX, Duration::ZERO)), Vec::new()),
    ];
    // Interleaved: a burst of load on this machine hits both.
    for _ in 0..sz.reps {
        bh.batch_s.push(library::bh_batch(2, sz.batch)?);
        ps.batch_s.push(library::ps_batch(2, sz.batch)?);
        bh.round_trip_us.extend(library::bh_round_trips(sz.round_trips)?);
        ps.round_trip_us.extend(library::ps_round_trips(sz.round_trips)?);
        for (_, backoff, v) in &mut variants {
            v.push(library::bh_crash_loop(sz.crashes, *backoff)?);
        }
        ps.crash_ms.push(library::ps_crash_loop(sz.crashes)?);
    }
    for _ in 0..sz.cold_reps {
        bh.cold_ms.push(library::bh_cold()?);
        ps.cold_ms.push(library::ps_cold()?);
    }
    drop(dog);
    let n = fmt_int(sz.batch);
    let (b, p) = (median(&bh.batch_s), median(&ps.batch_s));
    s.rows.push(
        row("bulkhead Pool::run, 2 workers", format!("{n} calls"), sz.reps, fmt_ms(b * 1e3))
            .vs(format!("{} than procspawn", faster(p / b)))
            .data(json!({"unit": "ms", "median": b * 1e3})),
    );
    s.rows.push(
        row("procspawn Pool(2): spawn, join (1,000 in flight)", format!("{n} calls"), sz.reps, fmt_ms(p * 1e3))
            .data(json!({"unit": "ms", "median": p * 1e3})),
    );
    let (b50, b99, p50, p99) = (
        percentile(&bh.round_trip_us, 50.0),
        percentile(&bh.round_trip_us, 99.0),
        percentile(&ps.round_trip_us, 50.0),
        percentile(&ps.round_trip_us, 99.0),
    );
    let rt = fmt_int(sz.round_trips);
    s.rows.push(
        row(
            "bulkhead submit + join, 1 worker",
            format!("{rt} in a row"),
            sz.reps,
            format!("p50 {}, p99 {}", fmt_us(b50), fmt_us(b99)),
        )
        .vs(format!("{} (p50)", faster(p50 / b50)))
        .data(json!({"unit": "us", "p50": b50, "p99": b99})),
    );
    s.rows.push(
        row(
            "procspawn Pool(1): spawn + join",
            format!("{rt} in a row"),
            sz.reps,
            format!("p50 {}, p99 {}", fmt_us(p50), fmt_us(p99)),
        )
        .data(json!({"unit": "us", "p50": p50, "p99": p99})),
    );
    let (bc, pc) = (median(&bh.cold_ms), median(&ps.cold_ms));
    s.rows.push(
        row("bulkhead cold start: build, submit, join", "1 call", sz.cold_reps, fmt_ms(bc))
            .vs(faster(pc / bc))
            .data(json!({"unit": "ms", "median": bc})),
    );
    s.rows.push(
        row("procspawn cold start: Pool::new(1), spawn, join", "1 call", sz.cold_reps, fmt_ms(pc))
            .data(json!({"unit": "ms", "median": pc})),
    );
    let pcr = median(&ps.crash_ms);
    for (name, _, v) in &variants {
        let m = median(v);
        s.rows.push(
            row(
                format!("bulkhead crash + replace, {name}"),
                format!("{} crashes in a row", sz.crashes),
                sz.reps,
                format!("{} per crash", fmt_ms(m)),
            )
            .vs(faster(pcr / m))
            .data(json!({"unit": "ms", "median": m})),
        );
    }
    s.rows.push(
        row(
            "procspawn Pool(1): a crashing call, joined",
            format!("{} crashes in a row", sz.crashes),
            sz.reps,
            format!("{} per crash", fmt_ms(pcr)),
        )
        .data(json!({"unit": "ms", "median": pcr})),
    );
    s.note("both in this process, both serving from this executable; every bulkhead result is checked (sums, statuses, a call after the crashes)");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. Round trip

fn latency(cx: &Ctx, s: &mut Section) -> Result<(), String> {
    let (warm, n) = (cx.sz.rtt_warmup, cx.sz.rtt_samples);
    let dog = watchdog("the round-trip loop", Duration::from_secs(120));
    let bh = bulkhead_round_trips(cx, warm, n)?;
    drop(dog);
    let (p50, p99) = (percentile(&bh, 50.0), percentile(&bh, 99.0));
    eprintln!("  bulkhead: p50 {} p99 {}", fmt_us(p50), fmt_us(p99));
    s.rows.push(
        row("bulkhead library: channel().send + Run::next", fmt_int(n as u64), 1, format!("p50 {}, p99 {}", fmt_us(p50), fmt_us(p99)))
            .target(verdict(p50 < 100.0, "p50 < 100 us"))
            .data(json!({"unit": "us", "p50": p50, "p99": p99, "mean": mean(&bh), "max": percentile(&bh, 100.0), "warmup": warm})),
    );
    if cx.python.is_none() {
        s.note("python3 not found: the Python peer is skipped");
    } else {
        let mut c = cx.python("latency.py");
        c.args(["--samples", &n.to_string(), "--warmup", &warm.to_string()]);
        let r = execute(&mut c, Input::Null, Output::Capture, Duration::from_secs(120), None).and_then(|o| {
            o.check(&[0])?;
            let v: Value = serde_json::from_str(o.stdout.trim()).map_err(|e| format!("bad output: {e}"))?;
            floats(&v["samples_us"])
        });
        match r {
            Ok(py) => {
                let (q50, q99) = (percentile(&py, 50.0), percentile(&py, 99.0));
                eprintln!("  Pool.apply: p50 {} p99 {}", fmt_us(q50), fmt_us(q99));
                s.rows.push(
                    row(
                        "Python Pool(1).apply (fork)",
                        fmt_int(py.len() as u64),
                        1,
                        format!("p50 {}, p99 {}", fmt_us(q50), fmt_us(q99)),
                    )
                    .vs(format!("{} (p50)", faster(q50 / p50)))
                    .data(json!({"unit": "us", "p50": q50, "p99": q99, "mean": mean(&py)})),
                );
            }
            Err(e) => s.note(format!("the Python peer failed, skipped: {e}")),
        }
    }
    s.note(format!(
        "process mode, 1 worker; {warm} warm-up round trips first; each timed from send to the record back"
    ));
    Ok(())
}

fn bulkhead_round_trips(cx: &Ctx, warmup: usize, n: usize) -> Result<Vec<f64>, String> {
    let pool = Pool::builder()
        .mode(Mode::Process)
        .workers(1)
        .worker_program(WorkerProgram { exe: cx.bin.with_file_name("bulkhead-worker"), args: vec![] })
        .build(Builtin::default())
        .map_err(|e| format!("build the pool: {e}"))?;
    let (tx, src) = bulkhead::channel::<BuiltinTask>().map_err(|e| format!("channel: {e}"))?;
    let mut run = pool.run_channel(src).map_err(|e| format!("start the run: {e}"))?;
    let mut samples = Vec::with_capacity(n);
    for i in 0..warmup + n {
        let id = format!("r{i}");
        let spec = TaskSpec::with_id(id.clone(), BuiltinTask::Noop);
        let t0 = Instant::now();
        tx.send(spec);
        let r = run.next();
        let dt = t0.elapsed();
        match r {
            Some(Ok(r)) if r.id == id && r.status == Status::Ok => {}
            Some(Err(e)) => return Err(format!("round trip {i}: {e}")),
            Some(Ok(r)) => {
                return Err(format!("round trip {i}: got the record of '{}' ({:?}) for '{id}'", r.id, r.status));
            }
            None => return Err(format!("round trip {i}: the run ended without a result")),
        }
        if i >= warmup {
            samples.push(dt.as_secs_f64() * 1e6);
        }
    }
    drop(tx);
    if let Some(r) = run.next() {
        return Err(format!("a record after the last round trip: {r:?}"));
    }
    let summary = run.finish().map_err(|e| e.to_string())?;
    if summary.exit_code() != 0 {
        return Err(format!("the run ended with {:?}", summary.stop));
    }
    Ok(samples)
}

// ---------------------------------------------------------------------------------------------
// 3. Worker start and restart

fn restart(cx: &Ctx, s: &mut Section) -> Result<(), String> {
    let n = cx.sz.crash_noops;
    let tasks = cx.path("crash.jsonl");
    write_tasks(&tasks, n, noop_line("k"))?;
    let mut all = Replacements::default();
    for run in 0..cx.sz.crash_runs {
        let (results, events) = (cx.path("crash-results.jsonl"), cx.path("crash-events.jsonl"));
        let _ = fs::remove_file(&results);
        let _ = fs::remove_file(&events);
        let mut c = cx.bulkhead();
        c.arg(&tasks).args(["-j", "2", "--inject", "segv:0.05", "--seed", "1", "--max-restarts", "100000/1s"]);
        c.arg("--results").arg(&results).arg("--events").arg(&events);
        let o = execute(&mut c, Input::Null, Output::Null, bh_timeout(n) * 2, None)?;
        o.check(&[0, 1])?;
        let q = verify_results(&results, Some("k"), n, true)?;
        if o.code() == Some(1) && q == 0 {
            return Err(format!("exit 1 with nothing quarantined; stderr: {}", tail(&o.stderr)));
        }
        let r = Replacements::from_events(&read_events(&events, Replacements::KINDS)?);
        eprintln!("  run {}/{}: {} crashes, {q} quarantined, {:.2} s", run + 1, cx.sz.crash_runs, r.crashes, o.secs());
        all.extend(r);
        let _ = fs::remove_file(&results);
        let _ = fs::remove_file(&events);
    }
    if all.replace.is_empty() {
        return Err("no crash was followed by a replacement (no worker_exited/worker_started pairs)".into());
    }
    let (start_med, start_p99) = (median(&all.starts), percentile(&all.starts, 99.0));
    s.rows.push(
        row(
            "bulkhead worker start: spawn to ready",
            format!("{} starts", fmt_int(all.starts.len() as u64)),
            cx.sz.crash_runs,
            format!("median {}, p99 {}", fmt_ms(start_med), fmt_ms(start_p99)),
        )
        .data(json!({"unit": "ms", "median": start_med, "p99": start_p99, "count": all.starts.len()})),
    );
    all.rows(s, "", cx.sz.crash_runs);
    if cx.python.is_none() {
        s.note("python3 not found: the Python peer is skipped");
    } else {
        let mut c = cx.python("coldstart.py");
        c.args(["--reps", &cx.sz.cold_reps.to_string()]);
        let r = execute(&mut c, Input::Null, Output::Capture, Duration::from_secs(120), None).and_then(|o| {
            o.check(&[0])?;
            serde_json::from_str::<Value>(o.stdout.trim()).map_err(|e| format!("bad output: {e}"))
        });
        match r {
            Ok(v) => {
                for method in ["fork", "spawn"] {
                    let t = floats(&v[format!("{method}_ms")])?;
                    let m = median(&t);
                    s.rows.push(
                        row(
                            format!("Python Pool(1) cold start, {method}"),
                            "",
                            t.len(),
                            format!("median {}", fmt_ms(m)),
                        )
                        .vs(faster(m / start_med))
                        .data(json!({"unit": "ms", "median": m, "samples": t})),
                    );
                }
            }
            Err(e) => s.note(format!("the Python peer failed, skipped: {e}")),
        }
    }
    s.note(format!(
        "from `run` of {} no-ops, -j 2, --inject segv:0.05 --seed 1 --max-restarts 100000/1s --events; start = \
         worker_started.ms; replacement = worker_exited.t (the supervisor saw the death) to the next worker_started.t \
         of that slot; `no backoff` leaves out the replacements whose slot first waited out a restart backoff \
         (the policy's deliberate delay after a worker that died before it was heard to finish a task); Python's \
         cold start is from creating the pool to the first result back, compared with bulkhead's worker start",
        fmt_int(n)
    ));
    Ok(())
}

/// Worker starts and crash-to-replacement times from an events file.
#[derive(Default)]
struct Replacements {
    /// `worker_started.ms` of every start.
    starts: Vec<f64>,
    /// (ms from the death to the replacement ready, the backoff the slot waited in between).
    replace: Vec<(f64, f64)>,
    crashes: u64,
}

impl Replacements {
    const KINDS: &[&str] = &["worker_exited", "worker_restarted", "worker_started"];

    fn from_events(ev: &[Value]) -> Self {
        let mut r = Replacements::default();
        // slot -> (time of the death, backoff waited since)
        let mut pending: HashMap<u64, (f64, f64)> = HashMap::new();
        for e in ev {
            let (Some(kind), Some(t)) = (e["event"].as_str(), e["t"].as_f64()) else { continue };
            let slot = e["worker"].as_u64().unwrap_or(u64::MAX);
            match kind {
                "worker_exited" if e["clean"] == Value::Bool(false) => {
                    r.crashes += 1;
                    pending.insert(slot, (t, 0.0));
                }
                "worker_restarted" => {
                    if let Some(p) = pending.get_mut(&slot) {
                        p.1 += e["backoff_ms"].as_f64().unwrap_or(0.0);
                    }
                }
                "worker_started" => {
                    if let Some(ms) = e["ms"].as_f64() {
                        r.starts.push(ms);
                    }
                    if let Some((t0, backoff)) = pending.remove(&slot) {
                        r.replace.push(((t - t0) * 1000.0, backoff));
                    }
                }
                _ => {}
            }
        }
        r
    }

    fn extend(&mut self, o: Replacements) {
        self.starts.extend(o.starts);
        self.replace.extend(o.replace);
        self.crashes += o.crashes;
    }

    /// Two rows: every replacement, and those whose slot waited no backoff.
    fn rows(&self, s: &mut Section, context: &str, runs: usize) {
        let every: Vec<f64> = self.replace.iter().map(|r| r.0).collect();
        let quick: Vec<f64> = self.replace.iter().filter(|r| r.1 == 0.0).map(|r| r.0).collect();
        let backoffs: Vec<f64> = self.replace.iter().filter(|r| r.1 > 0.0).map(|r| r.1).collect();
        for (label, v) in [("", &every), (", no backoff", &quick)] {
            if v.is_empty() {
                continue;
            }
            let (p50, p99) = (percentile(v, 50.0), percentile(v, 99.0));
            s.rows.push(
                row(
                    format!("bulkhead crash to replacement ready{label}{context}"),
                    format!("{} of {} crashes", fmt_int(v.len() as u64), fmt_int(self.crashes)),
                    runs,
                    format!("p50 {}, p99 {}", fmt_ms(p50), fmt_ms(p99)),
                )
                .target(verdict(p50 < 2.0 && p99 < 10.0, "p50 < 2 ms, p99 < 10 ms"))
                .data(json!({"unit": "ms", "p50": p50, "p99": p99, "max": percentile(v, 100.0), "count": v.len(),
                    "crashes": self.crashes, "backoffs": backoffs.len(), "backoff_ms_median": median(&backoffs)})),
            );
        }
        if !backoffs.is_empty() {
            s.note(format!(
                "{} of {} replacements{context} waited a restart backoff first (median {})",
                backoffs.len(),
                self.replace.len(),
                fmt_ms(median(&backoffs))
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Scaling

fn scaling(cx: &Ctx, s: &mut Section) -> Result<(), String> {
    let nw = cx.cores;
    if nw < 2 {
        s.note("one core: nothing to scale to; skipped");
        return Ok(());
    }
    let (t, n) = (cx.sz.cpu_tasks_per_core * nw as u64, cx.sz.cpu_n);
    let py_tasks = cx.sz.py_cpu_tasks_per_core * nw as u64;
    let tasks = cx.path("cpu.jsonl");
    write_tasks(&tasks, t, sum_squares_line("c", n))?;
    let results = cx.path("cpu-results.jsonl");
    let (mut one, mut all, mut task_ms) = (Vec::new(), Vec::new(), Vec::new());
    let (mut py1, mut pyn, mut py_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut py_error = cx.python.is_none().then(|| "python3 not found".to_string());
    let (mut rep, mut discarded) = (0, Discarded::default());
    while rep < cx.sz.cpu_reps {
        // One round: bulkhead at 1 and N workers, then Python at 1 and N processes. A round
        // during which other processes took a good share of the CPU measures them, not us:
        // it is thrown away and run again (see `Discarded`).
        let round = Noisy::start();
        let (mut one_r, mut all_r, mut task_ms_r) = (Vec::new(), Vec::new(), Vec::new());
        let (mut py1_r, mut pyn_r, mut py_ms_r) = (Vec::new(), Vec::new(), Vec::new());
        for (j, out) in [(1, &mut one_r), (nw, &mut all_r)] {
            let _ = fs::remove_file(&results);
            let mut c = cx.bulkhead();
            c.arg(&tasks).args(["-j", &j.to_string(), "--results"]).arg(&results);
            let o = execute(&mut c, Input::Null, Output::Null, Duration::from_secs(300), None)?;
            o.check(&[0])?;
            verify_results(&results, Some("c"), t, false)?;
            if j == 1 {
                task_ms_r.push(median(&record_ms(&results)?));
            }
            let rate = t as f64 / o.secs();
            eprintln!("  rep {}/{}: bulkhead -j {j}: {:.1} tasks/s", rep + 1, cx.sz.cpu_reps, rate);
            out.push(rate);
        }
        for (p, out) in [(1, &mut py1_r), (nw, &mut pyn_r)] {
            if py_error.is_some() {
                break;
            }
            let mut c = cx.python("scaling.py");
            c.args(["--procs", &p.to_string(), "--tasks", &py_tasks.to_string()]);
            c.args(["--n", &cx.sz.py_cpu_n.to_string()]);
            let r = execute(&mut c, Input::Null, Output::Capture, Duration::from_secs(300), None).and_then(|o| {
                o.check(&[0])?;
                serde_json::from_str::<Value>(o.stdout.trim()).map_err(|e| format!("bad output: {e}"))
            });
            match r {
                Ok(v) => {
                    let rate = v["tasks"].as_f64().unwrap_or(0.0) / v["secs"].as_f64().unwrap_or(f64::INFINITY);
                    if p == 1 {
                        py_ms_r.push(v["task_ms"].as_f64().unwrap_or(f64::NAN));
                    }
                    eprintln!("  rep {}/{}: Python Pool({p}): {:.1} tasks/s", rep + 1, cx.sz.cpu_reps, rate);
                    out.push(rate);
                }
                Err(e) => py_error = Some(e),
            }
        }
        if discarded.discard(&round, cx.sz.cpu_reps) {
            continue;
        }
        rep += 1;
        one.extend(one_r);
        all.extend(all_r);
        task_ms.extend(task_ms_r);
        py1.extend(py1_r);
        pyn.extend(pyn_r);
        py_ms.extend(py_ms_r);
    }
    discarded.note(s);
    let (m1, mn) = (median(&one), median(&all));
    let speedup = mn / m1;
    let want = 0.95 * nw as f64;
    let batch = format!("{t} x sum_squares n={}", fmt_count(n));
    s.rows.push(
        row(
            "bulkhead run -j 1",
            batch.clone(),
            one.len(),
            format!("{m1:.1} tasks/s ({} a task)", fmt_ms(median(&task_ms))),
        )
        .data(json!({"unit": "tasks/s", "value": m1, "samples": one, "task_ms": median(&task_ms)})),
    );
    s.rows.push(
        row(format!("bulkhead run -j {nw}"), batch, all.len(), format!("{mn:.1} tasks/s, speedup {speedup:.2}x"))
            .target(verdict(speedup >= want, &format!("speedup >= {want:.2}")))
            .data(json!({"unit": "tasks/s", "value": mn, "samples": all, "speedup": speedup})),
    );
    if let Some(e) = py_error {
        s.note(format!("the Python peer is skipped: {e}"));
    } else {
        let (q1, qn) = (median(&py1), median(&pyn));
        let batch = format!("{py_tasks} x pure-Python loop n={}", fmt_count(cx.sz.py_cpu_n));
        s.rows.push(
            row(
                "Python Pool(1).map chunksize=1",
                batch.clone(),
                py1.len(),
                format!("{q1:.1} tasks/s ({} a task)", fmt_ms(median(&py_ms))),
            )
            .data(json!({"unit": "tasks/s", "value": q1, "samples": py1, "task_ms": median(&py_ms)})),
        );
        s.rows.push(
            row(
                format!("Python Pool({nw}).map chunksize=1"),
                batch,
                pyn.len(),
                format!("{qn:.1} tasks/s, speedup {:.2}x", qn / q1),
            )
            .vs(format!("speedup {speedup:.2}x vs {:.2}x", qn / q1))
            .data(json!({"unit": "tasks/s", "value": qn, "samples": pyn, "speedup": qn / q1})),
        );
        s.note("Python's tasks are a different loop (its per-task time differs): compare the speedups, not the rates");
    }
    s.note(format!(
        "{nw} cores; bulkhead rates are tasks / wall time of the whole process; Python's exclude pool start"
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 5. Idle worker memory

fn idle_rss(cx: &Ctx, s: &mut Section) -> Result<(), String> {
    let tasks = cx.path("sleep.jsonl");
    fs::write(&tasks, "{\"id\":\"s0\",\"kind\":\"sleep\",\"ms\":900}\n").map_err(|e| format!("write: {e}"))?;
    let (mut idle, mut idle_pss, mut busy) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..cx.sz.idle_runs {
        let (results, events) = (cx.path("sleep-results.jsonl"), cx.path("sleep-events.jsonl"));
        let _ = fs::remove_file(&results);
        let _ = fs::remove_file(&events);
        let mut c = cx.bulkhead();
        c.arg(&tasks).args(["-j", "2", "--results"]).arg(&results).arg("--events").arg(&events);
        // pid -> (VmRSS, Pss) in KiB, the latest sample once both workers have settled.
        let mut seen: HashMap<u32, (u64, u64)> = HashMap::new();
        let mut sample = |pid: u32, at: Duration| {
            if at < Duration::from_millis(300) || at > Duration::from_millis(800) {
                return;
            }
            for (child, comm) in children(pid) {
                if comm == "bulkhead-worker"
                    && let Some(rss) = proc_field(&format!("/proc/{child}/status"), "VmRSS")
                {
                    let pss = proc_field(&format!("/proc/{child}/smaps_rollup"), "Pss").unwrap_or(0);
                    seen.insert(child, (rss, pss));
                }
            }
        };
        let o = execute(
            &mut c,
            Input::Null,
            Output::Null,
            Duration::from_secs(60),
            Some((Duration::from_millis(50), &mut sample)),
        )?;
        o.check(&[0])?;
        verify_results(&results, Some("s"), 1, false)?;
        let ev = read_events(&events, &["worker_started", "task_started"])?;
        let _ = fs::remove_file(&events);
        let pid_of: HashMap<u64, u64> = ev
            .iter()
            .filter(|e| e["event"] == "worker_started")
            .filter_map(|e| Some((e["worker"].as_u64()?, e["pid"].as_u64()?)))
            .collect();
        let busy_slot = ev.iter().find(|e| e["event"] == "task_started").and_then(|e| e["worker"].as_u64());
        let busy_pid = busy_slot.and_then(|s| pid_of.get(&s)).copied();
        let idle_pid = pid_of.values().copied().find(|&p| Some(p) != busy_pid);
        match idle_pid.and_then(|p| seen.get(&(p as u32))) {
            Some(&(rss, pss)) => {
                eprintln!(
                    "  run {}/{}: idle worker VmRSS {} PSS {}",
                    run + 1,
                    cx.sz.idle_runs,
                    fmt_kib(rss),
                    fmt_kib(pss)
                );
                idle.push(rss as f64);
                idle_pss.push(pss as f64);
            }
            None => return Err(format!("could not sample the idle worker (workers seen: {seen:?}, pids: {pid_of:?})")),
        }
        if let Some(&(rss, _)) = busy_pid.and_then(|p| seen.get(&(p as u32))) {
            busy.push(rss as f64);
        }
    }
    let (rss, pss) = (median(&idle), median(&idle_pss));
    s.rows.push(
        row(
            "bulkhead idle worker (-j 2, the other one sleeping)",
            "",
            idle.len(),
            format!("RSS {} (PSS {})", fmt_kib(rss as u64), fmt_kib(pss as u64)),
        )
        .target(verdict(rss < 3.0 * 1024.0, "RSS < 3 MiB"))
        .data(json!({"unit": "KiB", "rss_kib": rss, "pss_kib": pss, "busy_worker_rss_kib": median(&busy)})),
    );
    if cx.python.is_none() {
        s.note("python3 not found: the Python peer is skipped");
    } else {
        let c = &mut cx.python("idle_rss.py");
        let r = execute(c, Input::Null, Output::Capture, Duration::from_secs(60), None).and_then(|o| {
            o.check(&[0])?;
            serde_json::from_str::<Value>(o.stdout.trim()).map_err(|e| format!("bad output: {e}"))
        });
        match r {
            Ok(v) => {
                for method in ["fork", "spawn"] {
                    let (Some(prss), Some(ppss)) = (v[method]["rss_kib"].as_u64(), v[method]["pss_kib"].as_u64())
                    else {
                        continue;
                    };
                    s.rows.push(
                        row(
                            format!("Python Pool(1) idle worker, {method}"),
                            "",
                            1,
                            format!("RSS {} (PSS {})", fmt_kib(prss), fmt_kib(ppss)),
                        )
                        .vs(format!("{} (RSS)", smaller(prss as f64 / rss)))
                        .data(json!({"unit": "KiB", "rss_kib": prss, "pss_kib": ppss})),
                    );
                }
            }
            Err(e) => s.note(format!("the Python peer failed, skipped: {e}")),
        }
    }
    s.note("VmRSS from /proc/PID/status, PSS (shared pages split among sharers) from smaps_rollup");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 6. Supervisor memory

fn supervisor_rss(cx: &Ctx, s: &mut Section) -> Result<(), String> {
    let mut peaks = Vec::new();
    for n in cx.sz.rss_batches {
        let mut c = cx.bulkhead();
        c.args(["-j", "2", "--results", "/dev/null"]);
        let mut hwm = 0u64;
        let mut sample = |pid: u32, _: Duration| {
            if let Some(v) = proc_field(&format!("/proc/{pid}/status"), "VmHWM") {
                hwm = hwm.max(v);
            }
        };
        let input = Input::Gen(Box::new(move |w| gen_lines(w, n, noop_line("p"))));
        let o =
            execute(&mut c, input, Output::Null, bh_timeout(n) * 2, Some((Duration::from_millis(10), &mut sample)))?;
        o.check(&[0])?;
        let sum = parse_summary(&o.stderr);
        if sum.finished != Some(n) || sum.ok != Some(n) {
            return Err(format!("{n} tasks in, summary says {:?}; stderr: {}", sum, tail(&o.stderr)));
        }
        let rate = n as f64 / o.secs();
        eprintln!("  {}: VmHWM {}, {}", fmt_int(n), fmt_kib(hwm), fmt_rate(rate));
        let mut r = row(
            "bulkhead run -j 2 < pipe, --results /dev/null",
            fmt_int(n),
            1,
            format!("peak RSS {}; {}", fmt_kib(hwm), fmt_rate(rate)),
        )
        .data(json!({"unit": "KiB", "vmhwm_kib": hwm, "tasks_per_s": rate, "tasks": n}));
        if n >= 10_000_000 {
            r = r.target(verdict((hwm as f64) < 64.0 * 1024.0, "< 64 MiB"));
        }
        s.rows.push(r);
        peaks.push((n, hwm));
    }
    if let [(n0, a), (n1, b)] = peaks[..] {
        s.note(format!(
            "from {} to {} tasks the peak grew by {} ({:+.1} bytes a task)",
            fmt_count(n0),
            fmt_count(n1),
            fmt_kib(b.saturating_sub(a)),
            (b as f64 - a as f64) * 1024.0 / (n1 - n0) as f64
        ));
    }
    s.note(
        "peak = VmHWM of the supervisor process alone (not its workers), sampled every 10 ms until it exits; the \
         JSONL is generated on the fly into its stdin",
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 10. Memory

/// The first argument that makes this executable the memory section's allocator instead of
/// the suite: `suite ALLOC_ARG RATE_MIB_S TOTAL_MIB PROGRESS_FILE huge|small`.
const ALLOC_ARG: &str = "--bulkhead-bench-allocator";

/// Slots of the allocator's progress file (each a `u64`, written as it goes, read by the suite
/// after the allocator was killed): the tree's resident bytes before it touched anything, the
/// bytes touched, and the nanoseconds it took to touch them.
const PROGRESS_BASE: usize = 0;
const PROGRESS_TOUCHED: usize = 1;
const PROGRESS_NS: usize = 2;

/// When started as the allocator: touches `TOTAL_MIB` of fresh anonymous memory page by page,
/// at `RATE_MIB_S` (0: as fast as it can), in 2 MiB transparent huge pages (`huge`, where the
/// kernel has them to give) or 4 KiB ones (`small`), and exits. The rate is kept by a schedule (each
/// 256 KiB is touched once its time has come, spinning until then), so a late start does not
/// lower it.
fn serve_allocator() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some(ALLOC_ARG) {
        return;
    }
    let rate = args.get(1).and_then(|a| a.parse().ok());
    let total = args.get(2).and_then(|a| a.parse().ok());
    let huge = match args.get(4).map(String::as_str) {
        Some("huge") => Some(true),
        Some("small") => Some(false),
        _ => None,
    };
    let code = match (rate, total, args.get(3), huge) {
        (Some(rate), Some(total), Some(path), Some(huge)) => match allocate(rate, total, Path::new(path), huge) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("allocator: {e}");
                2
            }
        },
        _ => {
            eprintln!("allocator: usage: {ALLOC_ARG} RATE_MIB_S TOTAL_MIB PROGRESS_FILE huge|small");
            2
        }
    };
    std::process::exit(code);
}

fn allocate(rate_mib_s: u64, total_mib: usize, progress: &Path, huge: bool) -> Result<(), String> {
    use nix::sys::mman::{MapFlags, MmapAdvise, ProtFlags, madvise, mmap, mmap_anonymous};
    use std::num::NonZeroUsize;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(progress)
        .map_err(|e| format!("open {}: {e}", progress.display()))?;
    f.set_len(4096).map_err(|e| format!("size {}: {e}", progress.display()))?;
    let rw = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
    let four_k = NonZeroUsize::new(4096).expect("4096 > 0");
    // SAFETY: a fresh shared mapping of the 4096-byte file, only ever read and written here
    // as aligned u64 atomics, and never unmapped.
    let slots = unsafe { mmap(None, four_k, rw, MapFlags::MAP_SHARED, &f, 0) }.map_err(|e| format!("mmap: {e}"))?;
    // SAFETY: see above; 3 u64s fit in 4096 bytes, and the mapping is page-aligned.
    let slots = unsafe { std::slice::from_raw_parts(slots.as_ptr().cast::<AtomicU64>(), 3) };
    let len = total_mib << 20;
    let n = NonZeroUsize::new(len).ok_or("TOTAL_MIB is 0")?;
    // SAFETY: a fresh private mapping, touched only within its length below.
    let region = unsafe { mmap_anonymous(None, n, rw, MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE) }
        .map_err(|e| format!("mmap {total_mib} MiB: {e}"))?;
    // One fault per 2 MiB, or per 4 KiB: this VM faults small pages in at ~0.5 GiB/s.
    let advice = if huge { MmapAdvise::MADV_HUGEPAGE } else { MmapAdvise::MADV_NOHUGEPAGE };
    // SAFETY: the whole of the mapping just made.
    let _ = unsafe { madvise(region, len, advice) };
    let before =
        resident(std::process::id()).unwrap_or(0) + resident(nix::unistd::getppid().as_raw() as u32).unwrap_or(0);
    slots[PROGRESS_BASE].store(before, Relaxed);
    let page = 4096;
    let step = 256 << 10;
    let base = region.as_ptr().cast::<u8>();
    let start = Instant::now();
    let mut done = 0usize;
    while done < len {
        if rate_mib_s > 0 {
            let due = Duration::from_secs_f64(done as f64 / (rate_mib_s << 20) as f64);
            while start.elapsed() < due {
                std::hint::spin_loop();
            }
        }
        let end = (done + step).min(len);
        for off in (done..end).step_by(page) {
            // SAFETY: off < len, inside the mapping.
            unsafe { base.add(off).write_volatile(1) };
        }
        done = end;
        slots[PROGRESS_TOUCHED].store(done as u64, Relaxed);
        slots[PROGRESS_NS].store(start.elapsed().as_nanos() as u64, Relaxed);
    }
    Ok(())
}

/// Resident bytes of `pid`: `/proc/PID/statm` field 2 × 4096, as the memory watch counts.
fn resident(pid: u32) -> Option<u64> {
    let statm = fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    statm.split_whitespace().nth(1)?.parse::<u64>().ok().map(|p| p * 4096)
}

/// What the allocator wrote in its progress file: (bytes resident before, bytes touched,
/// seconds it took).
fn read_progress(path: &Path) -> Result<(u64, u64, f64), String> {
    let b = fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let slot = |i: usize| b.get(i * 8..i * 8 + 8).map(|s| u64::from_ne_bytes(s.try_into().expect("8 bytes")));
    match (slot(PROGRESS_BASE), slot(PROGRESS_TOUCHED), slot(PROGRESS_NS)) {
        (Some(base), Some(touched), Some(ns)) if touched > 0 && ns > 0 => Ok((base, touched, ns as f64 / 1e9)),
        _ => Err(format!("the allocator left no progress in {}", path.display())),
    }
}

/// The supervisor's memory-watch thread (named `bulkhead-memwatch`, cut to 15 bytes): its run
/// time in nanoseconds and how many times it was scheduled, from its
/// `/proc/PID/task/TID/schedstat` (the scheduler's own clock, not 10 ms ticks).
fn memwatch_schedstat(pid: u32) -> Option<(u64, u64)> {
    for e in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let dir = e.path();
        if fs::read_to_string(dir.join("comm")).ok()?.trim() != "bulkhead-memwat" {
            continue;
        }
        let stat = fs::read_to_string(dir.join("schedstat")).ok()?;
        let mut f = stat.split_whitespace().map(|v| v.parse::<u64>().ok());
        let run_ns = f.next()??;
        let _wait = f.next();
        return Some((run_ns, f.next()??));
    }
    None
}

fn memory(cx: &Ctx, s: &mut Section) -> Result<(), String> {
    memory_watch_cpu(cx, s)?;
    memory_overshoot(cx, s)
}

/// (a) The watch's own CPU while N workers each run a busy tree (timeout, sh, a busy loop).
fn memory_watch_cpu(cx: &Ctx, s: &mut Section) -> Result<(), String> {
    let secs = if cx.quick { 2 } else { 4 };
    for n in [2usize, 16] {
        let mut c = cx.bulkhead();
        c.args(["-j", &n.to_string(), "--memory-limit", "1G", "--results", "/dev/null"]);
        let line = move |i: usize| {
            format!(
                "{{\"id\":\"busy{i}\",\"kind\":\"shell\",\"cmd\":\"timeout {secs} sh -c 'while :; do :; done'; true\"}}\n"
            )
        };
        let mut last = (0u64, 0u64);
        let mut sample = |pid: u32, _: Duration| {
            if let Some(v) = memwatch_schedstat(pid) {
                last = last.max(v);
            }
        };
        let input = Input::Gen(Box::new(move |w| {
            for i in 0..n {
                w.write_all(line(i).as_bytes())?;
            }
            Ok(())
        }));
        let o = execute(
            &mut c,
            input,
            Output::Null,
            Duration::from_secs(120),
            Some((Duration::from_millis(20), &mut sample)),
        )?;
        o.check(&[0])?;
        let (run_ns, wakes) = last;
        if wakes == 0 {
            return Err("no bulkhead-memwatch thread was seen in the supervisor".to_string());
        }
        let share = run_ns as f64 / 1e9 / o.secs() * 100.0;
        let per = run_ns as f64 / 1e3 / wakes as f64;
        eprintln!(
            "  {n} busy trees: memory watch ran {:.1} ms in {:.1} s = {share:.3}% of a core; {wakes} wake-ups, {per:.1} µs \
             each",
            run_ns as f64 / 1e6,
            o.secs()
        );
        s.rows.push(
            row(
                format!("memory watch, {n} busy workers' trees (3 processes each)"),
                format!("{n} tasks"),
                1,
                format!("{share:.3}% of one core ({per:.0} µs per wake-up)"),
            )
            .target(verdict(share < 2.0, "< 2% of one core"))
            .data(json!({"workers": n, "watch_run_ns": run_ns, "wakeups": wakes, "us_per_wakeup": per,
                "wall_s": o.secs(), "percent_of_core": share})),
        );
    }
    s.note(format!(
        "CPU = the bulkhead-memwatch thread's run time from its /proc/PID/task/TID/schedstat (nanoseconds; the wake-ups \
         are its schedstat timeslices), read every 20 ms until the run ends, over the whole run's wall time; each task \
         is `timeout {secs} sh -c 'while :; do :; done'`, so with 16 workers on {} cores the busy loops oversubscribe \
         the machine and the watch competes with them for CPU",
        cx.cores
    ));
    Ok(())
}

/// (b) How far past the limit a fast allocator gets: this executable as the allocator, at
/// 1 GiB/s and then as fast as it can, each in a shell task under `--memory-limit 256M`.
fn memory_overshoot(cx: &Ctx, s: &mut Section) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let progress = cx.tmp.join("alloc-progress");
    let speed_alone = |pages: &str| -> Result<f64, String> {
        let alone = Command::new(&exe)
            .args([ALLOC_ARG, "0", "512"])
            .arg(&progress)
            .arg(pages)
            .output()
            .map_err(|e| format!("start the allocator: {e}"))?;
        if !alone.status.success() {
            return Err(format!("the allocator alone failed: {}", tail(&String::from_utf8_lossy(&alone.stderr))));
        }
        let (_, touched, t) = read_progress(&progress)?;
        Ok(touched as f64 / t / (1u64 << 30) as f64)
    };
    // Its speed alone, unpaced: 512 MiB, no limit, no bulkhead.
    let (huge_alone, small_alone) = (speed_alone("huge")?, speed_alone("small")?);
    eprintln!("  allocator alone, unpaced: {huge_alone:.2} GiB/s in huge pages, {small_alone:.2} GiB/s in 4 KiB pages");
    s.note(format!(
        "the allocator alone (512 MiB, as fast as it can, no bulkhead) touched {huge_alone:.2} GiB/s in 2 MiB pages and \
         {small_alone:.2} GiB/s in 4 KiB pages on this machine"
    ));
    let limit_mib = 256u64;
    let limit = limit_mib << 20;
    let mib = |b: f64| b / (1u64 << 20) as f64;
    for (rate, pages) in [(1024u64, "huge"), (0, "huge"), (0, "small")] {
        let mut runs = Vec::new();
        for _ in 0..if cx.quick { 1 } else { 5 } {
            let _ = fs::remove_file(&progress);
            let mut c = cx.bulkhead();
            c.args(["-j", "1", "--attempts", "1", "--memory-limit", &format!("{limit_mib}M")]);
            // 768 MiB asked for: three times the limit, well under a GiB of the host even if
            // the watch never fired.
            let cmd = format!("exec {} {ALLOC_ARG} {rate} 768 {} {pages}", exe.display(), progress.display());
            let line = json!({"id": "alloc", "kind": "shell", "cmd": cmd}).to_string() + "\n";
            let o = execute(
                &mut c,
                Input::Gen(Box::new(move |w| w.write_all(line.as_bytes()))),
                Output::Capture,
                Duration::from_secs(120),
                None,
            )?;
            o.check(&[1])?;
            let rec: Value =
                serde_json::from_str(o.stdout.lines().next().unwrap_or("")).map_err(|e| format!("record: {e}"))?;
            let crash = &rec["crashes"][0];
            if crash["cause"] != "oom" {
                return Err(format!("the allocator was not killed as oom: {rec}"));
            }
            let peak = crash["peak"].as_u64().ok_or_else(|| format!("no oom peak in {rec}"))?;
            let (before, touched, t) = read_progress(&progress)?;
            // The tree when it died: what was resident before it began, plus what it touched.
            let reached = before + touched;
            runs.push(json!({
                "rate_gib_s": touched as f64 / t / (1u64 << 30) as f64,
                "peak_seen_mib": mib(peak as f64),
                "seen_past_mib": mib(peak as f64 - limit as f64),
                "reached_mib": mib(reached as f64),
                "reached_past_mib": mib(reached as f64 - limit as f64),
            }));
        }
        let col = |k: &str| {
            let mut v: Vec<f64> = runs.iter().filter_map(|r| r[k].as_f64()).collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let (rates, seen, reached) = (col("rate_gib_s"), col("seen_past_mib"), col("reached_past_mib"));
        let med = |v: &[f64]| v[v.len() / 2];
        let worst = reached.iter().copied().fold(f64::MIN, f64::max);
        let what = format!(
            "{}, {}",
            if rate > 0 { "paced at 1 GiB/s" } else { "unpaced" },
            if pages == "huge" { "2 MiB pages" } else { "4 KiB pages" }
        );
        eprintln!(
            "  allocator {what}: reached {:.2} GiB/s (median; {:.2}–{:.2}); limit {limit_mib} MiB; peak the watch \
             recorded {:.1} MiB past (median; {:.1}–{:.1}); the tree held {:.1} MiB past when it died (median; worst \
             {worst:.1}) over {} runs",
            med(&rates),
            rates[0],
            rates[rates.len() - 1],
            med(&seen),
            seen[0],
            seen[seen.len() - 1],
            med(&reached),
            runs.len()
        );
        s.rows.push(
            row(
                format!("a task allocating {:.2} GiB/s ({what}), --memory-limit {limit_mib}M", med(&rates)),
                "1 task",
                runs.len(),
                format!(
                    "peak seen {:.1} MiB past, {:.1} MiB past when killed (worst {worst:.1})",
                    med(&seen),
                    med(&reached)
                ),
            )
            .target(verdict(worst < 100.0, "< 100 MiB past"))
            .data(json!({"rate_mib_s_asked": rate, "pages": pages, "limit_mib": limit_mib, "runs": runs})),
        );
    }
    s.note(
        "the allocator is this suite's executable started by the shell task (`exec suite --bulkhead-bench-allocator \
         RATE 768 FILE PAGES`): it touches one byte per 4 KiB of a fresh mapping (madvised for or against transparent \
         huge pages; the rate shows which it got), paced by a schedule, and \
         writes into a shared file how much it touched and in how long, so the figures survive its SIGKILL. rate = \
         bytes touched / time until killed; peak seen = the tree's resident bytes at the sample that found it over the \
         limit (the crash's `peak`); past when killed = the tree's resident bytes before it began (its own + the \
         worker's statm) + bytes touched at death, less the limit. Verdict on the worst run"
            .to_string(),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 7. Faults

fn faults(cx: &Ctx, s: &mut Section) -> Result<(), String> {
    let (t, n, j) = (cx.sz.fault_tasks, cx.sz.cpu_n, cx.cores.max(1));
    let tasks = cx.path("fault.jsonl");
    write_tasks(&tasks, t, sum_squares_line("f", n))?;
    let (results, events) = (cx.path("fault-results.jsonl"), cx.path("fault-events.jsonl"));
    let (mut clean, mut faulty, mut crashes, mut quarantined) = (Vec::new(), Vec::new(), Vec::new(), 0);
    let mut replaced = Replacements::default();
    let (mut rep, mut discarded) = (0, Discarded::default());
    while rep < cx.sz.fault_reps {
        // A round is a fault-free run and a faulty one; a noisy round is run again (see scaling).
        let round = Noisy::start();
        let (mut clean_r, mut faulty_r, mut crashes_r, mut replaced_r) = (None, None, None, None);
        for inject in [false, true] {
            // Each run writes its own results and events: a run refuses a non-empty events file
            // without --resume.
            let _ = fs::remove_file(&results);
            let _ = fs::remove_file(&events);
            let mut c = cx.bulkhead();
            c.arg(&tasks).args(["-j", &j.to_string(), "--results"]).arg(&results).arg("--events").arg(&events);
            if inject {
                c.args(["--inject", "segv:0.05", "--seed", "1", "--max-restarts", "100000/1s"]);
            }
            let o = execute(&mut c, Input::Null, Output::Null, Duration::from_secs(300), None)?;
            o.check(if inject { &[0, 1] } else { &[0] })?;
            let q = verify_results(&results, Some("f"), t, inject)?;
            let rate = t as f64 / o.secs();
            let sum = parse_summary(&o.stderr);
            eprintln!(
                "  rep {}/{}: {}: {rate:.1} tasks/s, {} crashes",
                rep + 1,
                cx.sz.fault_reps,
                if inject { "segv:0.05" } else { "no faults" },
                sum.crashes
            );
            if inject {
                faulty_r = Some(rate);
                crashes_r = Some(sum.crashes as f64);
                quarantined = q;
                replaced_r = Some(Replacements::from_events(&read_events(&events, Replacements::KINDS)?));
            } else {
                clean_r = Some(rate);
            }
        }
        if discarded.discard(&round, cx.sz.fault_reps) {
            continue;
        }
        rep += 1;
        clean.extend(clean_r);
        faulty.extend(faulty_r);
        crashes.extend(crashes_r);
        if let Some(r) = replaced_r {
            replaced.extend(r);
        }
    }
    discarded.note(s);
    let _ = fs::remove_file(&results);
    let _ = fs::remove_file(&events);
    let (mc, mf) = (median(&clean), median(&faulty));
    let batch = format!("{t} x sum_squares n={}", fmt_count(n));
    s.rows.push(
        row(format!("bulkhead run -j {j}, no faults"), batch.clone(), clean.len(), format!("{mc:.1} tasks/s"))
            .data(json!({"unit": "tasks/s", "value": mc, "samples": clean})),
    );
    s.rows.push(
        row(
            format!("bulkhead run -j {j} --inject segv:0.05 --seed 1"),
            batch,
            faulty.len(),
            format!("{mf:.1} tasks/s = {:.1}% ({:.0} crashes)", 100.0 * mf / mc, median(&crashes)),
        )
        .target(verdict(mf / mc > 0.9, "> 90% of fault-free"))
        .data(json!({"unit": "tasks/s", "value": mf, "samples": faulty, "crashes": crashes, "ratio": mf / mc,
            "quarantined": quarantined})),
    );
    replaced.rows(s, " (here)", faulty.len());
    s.note(
        "an injected segv strikes after the task's work, so each crash throws away one whole task's CPU time; \
         --max-restarts 100000/1s keeps the restart limit out of the way; both runs write --events",
    );
    if quarantined > 0 {
        s.note(format!("{quarantined} task(s) crashed on all 3 attempts and were quarantined (counted in the rate)"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 8. Shell commands

fn shell(cx: &Ctx, s: &mut Section) -> Result<(), String> {
    let n = cx.sz.shell_cmds;
    let lines = move || -> Input { Input::Gen(Box::new(move |w| gen_lines(w, n, |b, i| push_line(b, i + 1)))) };
    let results = cx.path("shell-results.jsonl");
    let out = cx.path("shell-out.txt");
    let rust_parallel = find_rust_parallel(cx);
    // bulkhead three ways (records to a file and nothing on stdout, as before the commands'
    // output was printed; the commands' output on stdout; the same in input order), then
    // the peers, all in one run, each printing to a file.
    let variants: [(&str, Vec<&str>, bool); 3] = [
        ("bulkhead --cmd 'echo {}' -j 2 --results F --output records", vec!["--output", "records"], true),
        ("bulkhead --cmd 'echo {}' -j 2 (output on stdout)", vec![], false),
        ("bulkhead --cmd 'echo {}' -j 2 -k", vec!["-k"], false),
    ];
    let peers: [(&str, Option<String>, Vec<&str>); 3] = [
        (
            "GNU parallel -j 2 echo {}",
            cx.parallel.as_ref().map(|_| "parallel".into()),
            vec!["--will-cite", "-j", "2", "echo", "{}"],
        ),
        ("xargs -P 2 -n 1 echo", Some("xargs".into()), vec!["-P", "2", "-n", "1", "echo"]),
        ("rust-parallel -j 2 -s echo", rust_parallel.as_ref().ok().cloned(), vec!["-j", "2", "-s", "echo"]),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); variants.len() + peers.len()];
    let mut peer_error: Vec<Option<String>> = vec![None; peers.len()];
    if cx.parallel.is_none() {
        peer_error[0] = Some("GNU parallel is not installed and could not be installed".into());
    }
    if let Err(e) = &rust_parallel {
        peer_error[2] = Some(e.clone());
    }
    let limit = Duration::from_secs(120 + n / 20);
    // bulkhead's three ways run `BULKHEAD_ROUNDS` times in each repetition, in an order
    // rotated from round to round, so that none always follows a slow peer or another one:
    // their paired ratios are what the section reports, and a trivial run takes ~1.5 s.
    const BULKHEAD_ROUNDS: usize = 3;
    for rep in 0..cx.sz.shell_reps {
        let kinds = variants.len();
        let rounds = (0..BULKHEAD_ROUNDS).flat_map(|r| (0..kinds).map(move |k| (k + r) % kinds));
        for i in rounds {
            let (_, extra, to_file) = &variants[i];
            let _ = fs::remove_file(&results);
            let mut c = cx.bulkhead();
            c.args(["--cmd", "echo {}", "-j", "2"]).args(extra);
            if *to_file {
                c.arg("--results").arg(&results);
            }
            let o = execute(&mut c, lines(), Output::File(out.clone()), limit, None)?;
            o.check(&[0])?;
            if *to_file {
                verify_results(&results, None, n, false)?;
            } else {
                let got = count_lines(&out)?;
                if got != n {
                    return Err(format!("{}: printed {got} lines for {n} commands", variants[i].0));
                }
            }
            rates[i].push(n as f64 / o.secs());
        }
        for (i, (_, program, args)) in peers.iter().enumerate() {
            let Some(program) = program.as_ref().filter(|_| peer_error[i].is_none()) else { continue };
            let mut c = Command::new(program);
            c.args(args);
            let r = execute(&mut c, lines(), Output::File(out.clone()), limit, None).and_then(|o| {
                o.check(&[0])?;
                match count_lines(&out)? {
                    got if got == n => Ok(n as f64 / o.secs()),
                    got => Err(format!("printed {got} lines for {n} commands")),
                }
            });
            match r {
                Ok(rate) => rates[variants.len() + i].push(rate),
                Err(e) => peer_error[i] = Some(e),
            }
        }
        let now: Vec<String> = rates.iter().map(|r| r.last().map_or("-".into(), |r| format!("{r:.0}/s"))).collect();
        eprintln!("  rep {}/{}: {}", rep + 1, cx.sz.shell_reps, now.join(", "));
    }
    let _ = fs::remove_file(&results);
    let _ = fs::remove_file(&out);
    for (i, (label, _, _)) in variants.iter().enumerate() {
        let m = median(&rates[i]);
        // Paired: each round's rate against the records-to-a-file run of the same round, so
        // that the machine's drift between rounds cancels.
        let paired: Vec<f64> = rates[i].iter().zip(&rates[0]).map(|(r, base)| r / base).collect();
        let vs = median(&paired);
        let mut r = row(*label, fmt_int(n), rates[i].len(), fmt_rate(m).replace("/s", " commands/s"))
            .data(json!({"unit": "commands/s", "value": m, "samples": rates[i], "vs_records_to_file": vs}));
        if i > 0 {
            r = r.vs(format!("{:.0}% of records to a file (median of the paired ratios)", 100.0 * vs));
        }
        s.rows.push(r);
    }
    let plain = median(&rates[1]);
    for (i, (label, _, _)) in peers.iter().enumerate() {
        if let Some(e) = &peer_error[i] {
            s.note(format!("{label} SKIPPED: {e}"));
            continue;
        }
        let m = median(&rates[variants.len() + i]);
        s.rows.push(
            row(*label, fmt_int(n), rates[variants.len() + i].len(), fmt_rate(m).replace("/s", " commands/s"))
                .vs(faster(plain / m))
                .data(json!({"unit": "commands/s", "value": m, "samples": rates[variants.len() + i]})),
        );
    }
    if let Some(v) = &cx.parallel {
        s.note(format!(
            "{v}; bulkhead, parallel and rust-parallel -s start each command through /bin/sh, xargs execs echo directly"
        ));
    }
    s.note(
        "every program's stdout goes to a file; the peers are compared with bulkhead printing the commands' output \
         (its default); each command's output travels through a spool file, whose cost the first two rows show",
    );
    big_output(cx, s)
}

/// One command printing 1 GiB (less with --quick): the peak resident memory of the
/// supervisor and of its workers, which must each stay under 64 MiB however much a command
/// prints (benches/big_output.py runs it and reads their VmHWM).
fn big_output(cx: &Ctx, s: &mut Section) -> Result<(), String> {
    let bytes: u64 = if cx.quick { 64 << 20 } else { 1 << 30 };
    let mut c = Command::new("python3");
    c.arg(format!("{BENCH_DIR}/big_output.py")).arg(&cx.bin).env("BYTES", bytes.to_string());
    let o = execute(&mut c, Input::Null, Output::Capture, Duration::from_secs(900), None)?;
    let text = o.stdout.trim();
    let v: Value = serde_json::from_str(text)
        .map_err(|e| format!("big_output.py printed no result ({e}): {}", tail(&o.stderr)))?;
    let mib = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let sup = mib(&v["supervisor_peak_rss_mib"]);
    let workers: Vec<f64> =
        v["worker_peak_rss_mib"].as_array().map(|a| a.iter().map(mib).collect()).unwrap_or_default();
    let worst = workers.iter().copied().fold(0.0, f64::max);
    let label = format!("bulkhead --cmd printing {} MiB, output on stdout", bytes >> 20);
    let result = format!("supervisor {sup:.1} MiB, workers {worst:.1} MiB peak resident");
    let verdict = if v["within_limit"] == true { "each under 64 MiB" } else { "OVER 64 MiB" };
    s.rows.push(row(label, "1 command", 1, result).vs(verdict).data(v.clone()));
    if v["within_limit"] != true {
        return Err(format!("one command's large output: {text}"));
    }
    Ok(())
}

/// rust-parallel: on the PATH, in cargo's bin directory, or installed by `cargo install` (into
/// target/, so that nothing outside the repository changes); an error says why it is missing.
fn find_rust_parallel(cx: &Ctx) -> Result<String, String> {
    let local = target_dir().join("bench-tools/bin/rust-parallel");
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/rust-parallel"));
    let works = |p: &str| first_line(Command::new(p).arg("--version")).is_some();
    for p in ["rust-parallel".to_string(), local.display().to_string()]
        .into_iter()
        .chain(home.map(|h| h.display().to_string()))
    {
        if works(&p) {
            return Ok(p);
        }
    }
    if cx.quick {
        return Err("not installed (a --quick run does not build it; .ci/peers-setup.sh rust-parallel does)".into());
    }
    eprintln!("bench: rust-parallel is missing; installing it with cargo install (once, into target/bench-tools)");
    let mut c = Command::new("sh");
    c.arg(PEERS_SETUP).arg("rust-parallel").env("CARGO_TARGET_DIR", target_dir());
    match execute(&mut c, Input::Null, Output::Capture, Duration::from_secs(900), None) {
        Ok(o) if o.code() == Some(0) && works(&local.display().to_string()) => Ok(local.display().to_string()),
        Ok(o) => Err(format!("cargo install rust-parallel failed: {}", tail(&o.stderr))),
        Err(e) => Err(format!("cargo install rust-parallel failed: {e}")),
    }
}

/// The scan section's pattern: the status code of an access log line.
const SCAN_PATTERN: &str = r#"" (\d{3}) "#;

/// An Apache-style access log of about `bytes`, the same bytes on every machine and run:
/// generated into target/ once and reused (it takes a while; 1 GiB is ~10 M lines).
fn access_log(bytes: u64) -> Result<PathBuf, String> {
    let dir = target_dir().join("bench-data");
    let path = dir.join(format!("access-{}m.log", bytes >> 20));
    if fs::metadata(&path).is_ok_and(|m| m.len() >= bytes) {
        return Ok(path);
    }
    fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    eprintln!("  generating {} (once)", path.display());
    let part = path.with_extension("part");
    let f = File::create(&part).map_err(|e| format!("create {}: {e}", part.display()))?;
    let mut w = io::BufWriter::with_capacity(1 << 20, f);
    let pages = ["/", "/index.html", "/api/items", "/api/users", "/static/app.js", "/static/style.css", "/login"];
    let agents = ["Mozilla/5.0 (X11; Linux x86_64)", "curl/8.5.0", "Mozilla/5.0 (Macintosh)", "Googlebot/2.1"];
    let (mut written, mut i, mut x) = (0u64, 0u64, 0x5eed_u64);
    let mut line = Vec::with_capacity(256);
    while written < bytes {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let r = x >> 16;
        // 80% 200, 8% 304, 6% 404, 3% 301, 2% 500, 1% 503.
        let status = match r % 100 {
            0..80 => 200,
            80..88 => 304,
            88..94 => 404,
            94..97 => 301,
            97..99 => 500,
            _ => 503,
        };
        line.clear();
        let _ = writeln!(
            line,
            "10.{}.{}.{} - - [01/Dec/2026:{:02}:{:02}:{:02} +0000] \"GET {}/{} HTTP/1.1\" {status} {} \"-\" \"{}\"",
            (r >> 8) % 256,
            (r >> 16) % 256,
            (r >> 24) % 256,
            (i / 3600) % 24,
            (i / 60) % 60,
            i % 60,
            pages[(r >> 32) as usize % pages.len()],
            (r >> 12) % 100_000,
            (r >> 20) % 50_000,
            agents[(r >> 40) as usize % agents.len()]
        );
        w.write_all(&line).map_err(|e| format!("write {}: {e}", part.display()))?;
        written += line.len() as u64;
        i += 1;
    }
    w.flush().map_err(|e| format!("write {}: {e}", part.display()))?;
    fs::rename(&part, &path).map_err(|e| format!("rename {}: {e}", part.display()))?;
    Ok(path)
}

/// Peak resident memory (KiB) of a process and, separately, of the largest of its
/// descendants, sampled while it runs.
#[derive(Default)]
struct Peaks {
    supervisor: u64,
    worker: u64,
}

fn scan(cx: &Ctx, s: &mut Section) -> Result<(), String> {
    let bytes: u64 = if cx.quick { 128 << 20 } else { 1 << 30 };
    let log = access_log(bytes)?;
    let logs = log.to_str().ok_or("a path that is not UTF-8")?.to_string();
    let size = fs::metadata(&log).map_err(|e| e.to_string())?.len();
    let n = cx.cores.max(2).to_string();
    let reps = if cx.quick { 1 } else { 3 };
    let rg = first_line(Command::new("rg").arg("--version"));
    // Page cache warm for everyone.
    execute(Command::new("cat").arg(&log), Input::Null, Output::Null, Duration::from_secs(300), None)?;
    let bh = |args: &[&str]| {
        let mut c = Command::new(&cx.bin);
        c.args(["scan", &logs, "-e", SCAN_PATTERN, "--json", "--progress", "never"]).args(args);
        c
    };
    let json_total = |o: &Outcome| -> Result<(u64, BTreeMap<String, u64>), String> {
        let v: Value = serde_json::from_str(o.stdout.trim()).map_err(|e| format!("{e}: {}", tail(&o.stdout)))?;
        let counts = v["values"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| (x["value"].as_str().unwrap_or("").to_string(), x["count"].as_u64().unwrap_or(0)))
            .collect();
        Ok((v["matched_lines"].as_u64().unwrap_or(0), counts))
    };
    let timeout = Duration::from_secs(600);
    let names = [
        "cat FILE > /dev/null (the floor)",
        "bulkhead scan -c -j 1 (count lines)",
        "bulkhead scan -j 1 (by status)",
        "bulkhead scan -j N (by status)",
        "rg -c (one thread, count lines)",
        "parallel --pipepart --block 16M rg -c, N jobs",
        "Python Pool(N), re per line, 16 MiB ranges",
    ];
    let mut secs: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut skipped: Vec<Option<String>> = vec![None; names.len()];
    if rg.is_none() {
        skipped[4] = Some("rg is not installed (.ci/peers-setup.sh rg installs Debian's ripgrep)".into());
        skipped[5] = skipped[4].clone();
    }
    if cx.parallel.is_none() {
        skipped[5] = Some("GNU parallel is not installed".into());
    }
    if cx.python.is_none() {
        skipped[6] = Some("python3 is not installed".into());
    }
    let escaped: String = SCAN_PATTERN
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_string() } else { format!("\\{c}") })
        .collect();
    let mut peaks = Peaks::default();
    let mut reference: Option<(u64, BTreeMap<String, u64>)> = None;
    let mut discarded = Discarded::default();
    let mut rep = 0;
    while rep < reps {
        let round = Noisy::start();
        let mut this: Vec<Option<(f64, f64)>> = vec![None; names.len()];
        for (k, slot) in this.iter_mut().enumerate() {
            if skipped[k].is_some() {
                continue;
            }
            let o = match k {
                0 => execute(Command::new("cat").arg(&log), Input::Null, Output::Null, timeout, None)?,
                1 => execute(&mut bh(&["-c", "-j", "1"]), Input::Null, Output::Capture, timeout, None)?,
                2 => execute(&mut bh(&["-j", "1"]), Input::Null, Output::Capture, timeout, None)?,
                3 => {
                    let mut sample = |pid: u32, _: Duration| {
                        let hwm = |p: u32| proc_field(&format!("/proc/{p}/status"), "VmHWM").unwrap_or(0);
                        peaks.supervisor = peaks.supervisor.max(hwm(pid));
                        for c in descendants(pid) {
                            peaks.worker = peaks.worker.max(hwm(c));
                        }
                    };
                    let poll: Poll<'_> = Some((Duration::from_millis(20), &mut sample));
                    execute(&mut bh(&["-j", &n]), Input::Null, Output::Capture, timeout, poll)?
                }
                4 => execute(
                    Command::new("rg").args(["-c", SCAN_PATTERN]).arg(&log),
                    Input::Null,
                    Output::Capture,
                    timeout,
                    None,
                )?,
                5 => execute(
                    // parallel runs the command through a shell (its -q did not work with
                    // --pipepart here): the pattern goes backslash-escaped.
                    Command::new("parallel").args([
                        "--will-cite",
                        "-j",
                        &n,
                        "--pipepart",
                        "-a",
                        &logs,
                        "--block",
                        "16M",
                        "rg",
                        "-c",
                        &escaped,
                    ]),
                    Input::Null,
                    Output::Capture,
                    timeout,
                    None,
                )?,
                _ => execute(
                    cx.python("scan.py").args(["--procs", &n, "--pattern", SCAN_PATTERN, &logs]),
                    Input::Null,
                    Output::Capture,
                    timeout,
                    None,
                )?,
            };
            // A peer that fails is skipped and said; bulkhead failing is the section's problem.
            if let Err(e) = o.check(&[0]) {
                if k < 4 {
                    return Err(e);
                }
                skipped[k] = Some(e);
                continue;
            }
            // Every answer is checked against the first: the same lines, the same values.
            let got = match k {
                1 => Some((json_total(&o)?.0, None)),
                2 | 3 => json_total(&o).map(|(a, b)| Some((a, Some(b))))?,
                4 => Some((o.stdout.trim().parse::<u64>().map_err(|e| format!("rg -c: {e}"))?, None)),
                5 => Some((o.stdout.lines().filter_map(|l| l.trim().parse::<u64>().ok()).sum(), None)),
                6 => {
                    let v: Value = serde_json::from_str(o.stdout.trim()).map_err(|e| format!("scan.py: {e}"))?;
                    let counts = v["counts"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                        .collect();
                    Some((v["matched_lines"].as_u64().unwrap_or(0), Some(counts)))
                }
                _ => None,
            };
            if let Some((lines, counts)) = got {
                match (&reference, counts) {
                    (None, Some(c)) => reference = Some((lines, c)),
                    (Some((want, _)), _) if lines != *want => {
                        s.problem(format!("{}: {lines} matching lines, the others {want}", names[k]))
                    }
                    (Some((_, want)), Some(c)) if &c != want => {
                        s.problem(format!("{}: counts by value differ from the others'", names[k]))
                    }
                    _ => {}
                }
            }
            *slot = Some((o.secs(), o.cpu_secs()));
            eprintln!("  rep {}: {}: {:.2} s (CPU {:.2} s)", rep + 1, names[k], o.secs(), o.cpu_secs());
        }
        if discarded.discard(&round, reps) {
            continue;
        }
        for (k, t) in this.into_iter().enumerate() {
            if let Some((t, c)) = t {
                secs[k].push(t);
                cpu[k].push(c);
            }
        }
        rep += 1;
    }
    // Crashes: 5% of the ranges segfault their worker; the totals must not move.
    let o = execute(
        &mut bh(&["-j", &n, "--inject", "segv:0.05", "--seed", "5", "--attempts", "10"]),
        Input::Null,
        Output::Capture,
        timeout,
        None,
    )?;
    o.check(&[0])?;
    let injected = json_total(&o)?;
    let crashes = parse_summary(&o.stderr);
    let exact = reference.as_ref() == Some(&injected);
    if !exact {
        s.problem("with --inject segv:0.05 the totals differ from the fault-free run's");
    }
    discarded.note(s);
    let m: Vec<f64> = secs.iter().map(|v| if v.is_empty() { f64::NAN } else { median(v) }).collect();
    let mc: Vec<f64> = cpu.iter().map(|v| if v.is_empty() { f64::NAN } else { median(v) }).collect();
    let gib = size as f64 / (1u64 << 30) as f64;
    let label = |k: usize| names[k].replace('N', &n);
    let batch = format!("{:.2} GiB", gib);
    for k in 0..names.len() {
        if let Some(why) = &skipped[k] {
            s.note(format!("{} skipped: {why}", names[k]));
            continue;
        }
        let mut r = row(label(k), batch.clone(), secs[k].len(), format!("{:.2} s (CPU {:.2} s)", m[k], mc[k]))
            .data(json!({"unit": "s", "value": m[k], "samples": secs[k], "cpu_s": mc[k], "cpu_samples": cpu[k]}));
        match k {
            1 if m[4].is_finite() => {
                r = r
                    .vs(format!("{:.2}x rg -c's time", m[1] / m[4]))
                    .target(verdict(m[1] <= 1.25 * m[4], "<= 1.25x rg -c"));
            }
            3 => {
                let scale = m[2] / m[3];
                let mut t = vec![verdict(scale >= 1.8, &format!("1 -> {n} workers {scale:.2}x >= 1.8x"))];
                if m[4].is_finite() {
                    t.push(verdict(m[3] < m[4], "faster than rg -c"));
                }
                r = r.vs(format!("{scale:.2}x -j 1")).target(t.join("; "));
            }
            4..=6 => {
                r = r.vs(faster(m[k] / m[3]));
                if k == 6 {
                    r = r.target(verdict(m[6] / m[3] >= 7.0, ">= 7x faster"));
                }
            }
            _ => {}
        }
        s.rows.push(r);
    }
    let (sup, wk) = (peaks.supervisor, peaks.worker);
    s.rows.push(
        row(
            format!("bulkhead scan -j {n}: peak RSS"),
            batch.clone(),
            1,
            format!("supervisor {}, worker {}", fmt_kib(sup), fmt_kib(wk)),
        )
        .target(verdict(sup < 64 << 10 && wk < 64 << 10, "< 64 MiB each"))
        .data(json!({"supervisor_kib": sup, "worker_kib": wk})),
    );
    s.rows.push(
        row(format!("bulkhead scan -j {n} --inject segv:0.05"), batch, 1, format!("{} crashes", crashes.crashes))
            .target(verdict(exact, "totals identical")),
    );
    if mc[3].is_finite() && mc[4].is_finite() {
        // What the wall-time targets come to on an idle machine, whatever the load now: -j N
        // beats rg -c there only if its CPU, spread over N cores, is well under rg's.
        s.note(format!(
            "CPU (user + system, all processes): by status -j {n} {:.2} s, -j 1 {:.2} s, rg -c {:.2} s: \
             the capture path costs {:.2}x rg -c's CPU (under {n}x is needed for -j {n} to beat it on {n} idle cores)",
            mc[3],
            mc[2],
            mc[4],
            mc[3] / mc[4]
        ));
    }
    if let Some(v) = rg {
        s.note(format!("{v}; every tool's count is checked against bulkhead's"));
    }
    s.note(format!(
        "pattern {SCAN_PATTERN}; page cache warm; bulkhead -j 1 and rg -c are one thread each, -j {n} and the peers use {n}"
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Running a child process

/// Writes a child's stdin from a thread while it runs.
type Generator = Box<dyn FnOnce(&mut dyn Write) -> io::Result<()> + Send>;

enum Input {
    Null,
    Gen(Generator),
}

enum Output {
    Null,
    Capture,
    File(PathBuf),
}

struct Outcome {
    wall: Duration,
    /// User and system time of the child and every descendant it reaped (wait4's rusage):
    /// what a run costs whatever else the machine does, unlike `wall`.
    cpu: Duration,
    status: ExitStatus,
    stdout: String,
    stderr: String,
    what: String,
}

impl Outcome {
    fn secs(&self) -> f64 {
        self.wall.as_secs_f64()
    }

    fn cpu_secs(&self) -> f64 {
        self.cpu.as_secs_f64()
    }

    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn check(&self, allowed: &[i32]) -> Result<(), String> {
        match self.code() {
            Some(c) if allowed.contains(&c) => Ok(()),
            _ => Err(format!("{} ended with {}; stderr: {}", self.what, self.status, tail(&self.stderr))),
        }
    }
}

type Poll<'a> = Option<(Duration, &'a mut dyn FnMut(u32, Duration))>;

/// Runs `cmd` to its end, timed from just before the spawn to the return of waitpid; calls
/// `poll` with the pid every interval while it runs. Past `timeout` the process and all its
/// descendants are killed and this is an error (a hang).
fn execute(
    cmd: &mut Command,
    input: Input,
    output: Output,
    timeout: Duration,
    mut poll: Poll<'_>,
) -> Result<Outcome, String> {
    let what = format!("{cmd:?}").chars().take(300).collect::<String>();
    cmd.stdin(if matches!(input, Input::Gen(_)) { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(match &output {
        Output::Null => Stdio::null(),
        Output::Capture => Stdio::piped(),
        Output::File(p) => Stdio::from(File::create(p).map_err(|e| format!("create {}: {e}", p.display()))?),
    });
    cmd.stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {what}: {e}"))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let r = reap(pid);
        let _ = tx.send((r, Instant::now()));
    });
    let writer = match (input, child.stdin.take()) {
        (Input::Gen(g), Some(mut w)) => Some(thread::spawn(move || {
            let _ = g(&mut w);
        })),
        _ => None,
    };
    let reader = |r: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = mpsc::channel();
        if let Some(mut r) = r {
            thread::spawn(move || {
                let mut v = Vec::new();
                let _ = r.read_to_end(&mut v);
                let _ = tx.send(v);
            });
        } else {
            let _ = tx.send(Vec::new());
        }
        rx
    };
    let out_rx = reader(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let err_rx = reader(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    // The waiter thread reaps it; std's handle must not.
    drop(child);
    let mut timed_out = false;
    let ((status, cpu), end) = loop {
        let wait = match &poll {
            Some((every, _)) => *every,
            None => timeout.saturating_sub(start.elapsed()).max(Duration::from_millis(10)),
        };
        match rx.recv_timeout(wait) {
            Ok(v) => break v,
            Err(RecvTimeoutError::Timeout) => {
                if !timed_out && start.elapsed() >= timeout {
                    timed_out = true;
                    kill_tree(pid);
                } else if let Some((_, f)) = poll.as_mut() {
                    f(pid, start.elapsed());
                }
            }
            Err(RecvTimeoutError::Disconnected) => return Err(format!("lost the waiter of {what}")),
        }
    };
    let _ = waiter.join();
    if let Some(w) = writer {
        let _ = w.join();
    }
    // A descendant that outlived the child may still hold the pipes; do not wait forever.
    let grab = |rx: mpsc::Receiver<Vec<u8>>| {
        rx.recv_timeout(Duration::from_secs(5)).map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default()
    };
    let (stdout, stderr) = (grab(out_rx), grab(err_rx));
    if timed_out {
        return Err(format!(
            "{what} did not finish within {} s and was killed (a hang?); stderr: {}",
            timeout.as_secs(),
            tail(&stderr)
        ));
    }
    Ok(Outcome { wall: end - start, cpu, status: ExitStatus::from_raw(status), stdout, stderr, what })
}

/// Reaps `pid` and returns its wait status and CPU time (user + system, its own and its
/// reaped descendants'). (Not wait4's ru_maxrss for memory: std starts children with vfork
/// semantics, so that figure includes this process's own peak at spawn.)
fn reap(pid: u32) -> (i32, Duration) {
    let mut status = 0;
    loop {
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 writes only through the status and rusage pointers, both to live locals.
        let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut ru) };
        if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        return (status, tv(ru.ru_utime) + tv(ru.ru_stime));
    }
}

fn kill_tree(pid: u32) {
    let mut all = descendants(pid);
    all.push(pid);
    for p in all {
        let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
    }
}

/// Every process below `root`, from /proc.
fn descendants(root: u32) -> Vec<u32> {
    let table: Vec<(u32, u32)> =
        all_pids().into_iter().filter_map(|p| proc_stat(p).map(|(_, ppid)| (p, ppid))).collect();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &table {
            if pp == p && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

fn children(pid: u32) -> Vec<(u32, String)> {
    all_pids()
        .into_iter()
        .filter_map(|p| proc_stat(p).filter(|(_, pp)| *pp == pid).map(|(comm, _)| (p, comm)))
        .collect()
}

fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|rd| rd.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// (comm, ppid) of a process.
fn proc_stat(pid: u32) -> Option<(String, u32)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (open, close) = (s.find('(')?, s.rfind(')')?);
    let ppid = s.get(close + 2..)?.split_whitespace().nth(1)?.parse().ok()?;
    Some((s[open + 1..close].to_string(), ppid))
}

/// A `Name:   123 kB` field of a /proc file, in KiB.
fn proc_field(path: &str, name: &str) -> Option<u64> {
    let s = fs::read_to_string(path).ok()?;
    s.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
}

fn watchdog(what: &'static str, limit: Duration) -> mpsc::Sender<()> {
    let (tx, rx) = mpsc::channel::<()>();
    thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
            eprintln!("bench: PROBLEM: {what} did not finish within {} s: bulkhead hangs; giving up", limit.as_secs());
            std::process::exit(3);
        }
    });
    tx
}

fn bh_timeout(tasks: u64) -> Duration {
    Duration::from_secs(60 + tasks / 50_000)
}

fn peer_timeout(tasks: u64) -> Duration {
    Duration::from_secs(60 + tasks / 2_000)
}

// ---------------------------------------------------------------------------------------------
// Inputs and outputs

fn gen_lines(w: &mut dyn Write, n: u64, mut line: impl FnMut(&mut Vec<u8>, u64)) -> io::Result<()> {
    let mut buf = Vec::with_capacity(1 << 16);
    for i in 0..n {
        line(&mut buf, i);
        if buf.len() >= 60_000 {
            w.write_all(&buf)?;
            buf.clear();
        }
    }
    w.write_all(&buf)?;
    w.flush()
}

fn push_line(b: &mut Vec<u8>, i: u64) {
    let _ = writeln!(b, "{i}");
}

fn noop_line(prefix: &'static str) -> impl FnMut(&mut Vec<u8>, u64) {
    move |b, i| {
        let _ = writeln!(b, "{{\"id\":\"{prefix}{i}\",\"kind\":\"noop\"}}");
    }
}

fn sum_squares_line(prefix: &'static str, n: u64) -> impl FnMut(&mut Vec<u8>, u64) {
    move |b, i| {
        let _ = writeln!(b, "{{\"id\":\"{prefix}{i}\",\"kind\":\"sum_squares\",\"n\":{n}}}");
    }
}

fn write_tasks(path: &Path, n: u64, line: impl FnMut(&mut Vec<u8>, u64)) -> Result<(), String> {
    let f = File::create(path).map_err(|e| format!("create {}: {e}", path.display()))?;
    gen_lines(&mut BufWriter::new(f), n, line).map_err(|e| format!("write {}: {e}", path.display()))
}

fn count_lines(path: &Path) -> Result<u64, String> {
    let data = fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    Ok(data.iter().filter(|&&b| b == b'\n').count() as u64)
}

#[derive(Deserialize)]
struct RecordHead<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    status: Cow<'a, str>,
    ms: Option<f64>,
}

/// Checks a results file: exactly one record per task (`PREFIX0` to `PREFIX{n-1}` when a
/// prefix is given), every one `ok` (or `quarantined` where allowed). Returns the quarantined.
fn verify_results(path: &Path, prefix: Option<&str>, n: u64, allow_quarantine: bool) -> Result<u64, String> {
    let data = fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let mut seen = vec![false; n as usize];
    let (mut count, mut quarantined) = (0u64, 0u64);
    for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let r: RecordHead<'_> = serde_json::from_slice(line)
            .map_err(|e| format!("results: bad record {}: {e}", String::from_utf8_lossy(line)))?;
        match &*r.status {
            "ok" => {}
            "quarantined" if allow_quarantine => quarantined += 1,
            other => return Err(format!("results: task {} ended {other}: {}", r.id, String::from_utf8_lossy(line))),
        }
        if let Some(p) = prefix {
            let i = r.id.strip_prefix(p).and_then(|d| d.parse::<usize>().ok()).filter(|&i| i < seen.len());
            let Some(i) = i else { return Err(format!("results: a record for unknown task '{}'", r.id)) };
            if std::mem::replace(&mut seen[i], true) {
                return Err(format!("results: two records for task '{}'", r.id));
            }
        }
        count += 1;
    }
    if count != n {
        return Err(format!("results: {count} records for {n} tasks"));
    }
    Ok(quarantined)
}

fn record_ms(path: &Path) -> Result<Vec<f64>, String> {
    let data = fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    Ok(data.split(|&b| b == b'\n').filter_map(|l| serde_json::from_slice::<RecordHead<'_>>(l).ok()?.ms).collect())
}

/// The events of the given kinds from an events file. (A crash-heavy no-op run writes hundreds
/// of thousands of task events; only the few worker events are kept.)
fn read_events(path: &Path, kinds: &[&str]) -> Result<Vec<Value>, String> {
    let s = fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let wanted = |l: &&str| kinds.iter().any(|k| l.contains(&format!("\"event\":\"{k}\"")));
    s.lines()
        .filter(wanted)
        .map(|l| serde_json::from_str(l).map_err(|e| format!("events: bad line {l}: {e}")))
        .collect()
}

#[derive(Debug, Default)]
struct CliSummary {
    finished: Option<u64>,
    ok: Option<u64>,
    crashes: u64,
    rate: Option<f64>,
}

/// Reads `bulkhead: N tasks: N ok, 0 failed, 0 quarantined; C worker crashes (...); 0.9s (R tasks/s)`.
fn parse_summary(stderr: &str) -> CliSummary {
    let Some(line) = stderr.lines().rev().find(|l| l.starts_with("bulkhead: ") && l.contains(" tasks: ")) else {
        return CliSummary::default();
    };
    let before = |needle: &str| -> Option<u64> {
        let i = line.find(needle)?;
        line[..i].rsplit([' ', '(']).next()?.parse().ok()
    };
    let rate =
        line.rfind(" tasks/s)").and_then(|end| line[..end].rsplit('(').next().and_then(|r| r.trim().parse().ok()));
    CliSummary {
        finished: before(" tasks: "),
        ok: before(" ok"),
        crashes: before(" worker crashes").unwrap_or(0),
        rate,
    }
}

fn floats(v: &Value) -> Result<Vec<f64>, String> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).ok_or_else(|| format!("not a list: {v}"))
}

fn tail(s: &str) -> String {
    let s = s.trim();
    let start = s.char_indices().rev().nth(600).map_or(0, |(i, _)| i);
    s[start..].replace('\n', " | ")
}

// ---------------------------------------------------------------------------------------------
// The machine and its noise

fn first_line(cmd: &mut Command) -> Option<String> {
    let o = cmd.stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    let s = String::from_utf8_lossy(&o.stdout);
    o.status.success().then(|| s.lines().next().unwrap_or("").trim().to_string()).filter(|s| !s.is_empty())
}

fn find_parallel(install: bool) -> (Option<String>, String) {
    let probe = || first_line(Command::new("parallel").arg("--version")).filter(|v| v.contains("GNU parallel"));
    // Installed with ripgrep, the scan section's peer.
    let rg = first_line(Command::new("rg").arg("--version")).is_some();
    if let Some(v) = probe()
        && (rg || !install)
    {
        return (Some(v), "installed".into());
    }
    if !install {
        return (None, "not installed (--no-install)".into());
    }
    eprintln!("bench: GNU parallel or ripgrep is missing; running .ci/peers-setup.sh to install them");
    let mut c = Command::new("sh");
    c.arg(PEERS_SETUP).args(["parallel", "rg"]);
    match execute(&mut c, Input::Null, Output::Capture, Duration::from_secs(300), None) {
        Ok(o) if o.code() == Some(0) => match probe() {
            Some(v) => (Some(v), "installed by .ci/peers-setup.sh in this run".into()),
            None => (None, ".ci/peers-setup.sh ran but `parallel --version` still fails".into()),
        },
        Ok(o) => (None, format!(".ci/peers-setup.sh could not install it: {}", tail(&o.stderr))),
        Err(e) => (None, format!(".ci/peers-setup.sh failed: {e}")),
    }
}

fn machine_info(cx: &Ctx) -> Value {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let mem_kib = proc_field("/proc/meminfo", "MemTotal").unwrap_or(0);
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    json!({
        "cpu_model": model, "cpus": cpus, "cores_available": cx.cores, "kernel": kernel,
        "mem_gib": mem_kib as f64 / 1048576.0, "loadavg_at_start": load.join(" "),
        "bulkhead_version": first_line(Command::new(&cx.bin).arg("--version")),
        "xargs": first_line(Command::new("xargs").arg("--version")),
    })
}

fn header_lines(cx: &Ctx, m: &Value, parallel_note: &str) -> Vec<String> {
    let s = |k: &str| m[k].as_str().unwrap_or("?").to_string();
    let release = if BIN.contains("/release/") { "release profile" } else { "NOT the release profile" };
    vec![
        format!(
            "bulkhead benchmark suite{}",
            if cx.quick { " -- QUICK MODE: small batches, figures not comparable with the targets" } else { "" }
        ),
        format!(
            "machine: {} x {} ({} available to this process), {:.1} GiB RAM, Linux {}; load average at start {}",
            m["cpus"],
            s("cpu_model"),
            cx.cores,
            m["mem_gib"].as_f64().unwrap_or(0.0),
            s("kernel"),
            s("loadavg_at_start")
        ),
        format!(
            "peers:   {}; {}; {}",
            cx.python.as_deref().unwrap_or("python3 missing"),
            cx.parallel
                .as_deref()
                .map_or(format!("GNU parallel missing ({parallel_note})"), |v| format!("{v} ({parallel_note})")),
            s("xargs")
        ),
        format!(
            "binary:  {BIN} ({}, {release}), run from a private copy with its bulkhead-worker",
            s("bulkhead_version")
        ),
        "figures: medians of the repetitions; every ratio is from this run; [s; load] = the section's time and the \
         CPU other processes took meanwhile"
            .into(),
    ]
}

/// How the section's load reads in the table: other processes' CPU, the hypervisor's steal,
/// and NOISY above the threshold at which a round is run again.
fn describe(n: &OtherLoad) -> String {
    let mut s = format!("other load {:.2} cores", n.other_cores);
    if n.steal_cores >= 0.01 {
        s.push_str(&format!(", steal {:.2}", n.steal_cores));
    }
    if n.noisy() {
        s.push_str(" NOISY");
    }
    s
}

/// Rounds thrown away because other processes took a good share of the CPU meanwhile: they
/// measure them, not us. As many extra rounds as there are repetitions, no more.
#[derive(Default)]
struct Discarded(Vec<f64>);

impl Discarded {
    /// Whether the round that `round` watched must be run again.
    fn discard(&mut self, round: &Noisy, reps: usize) -> bool {
        let load = OtherLoad::since(&round.0);
        let other = load.other_cores;
        if load.noisy() && self.0.len() < reps {
            eprintln!("  other processes took {other:.2} cores during this round: discarded, running it again");
            self.0.push(other);
            return true;
        }
        false
    }

    fn note(&self, s: &mut Section) {
        if !self.0.is_empty() {
            s.note(format!(
                "{} round(s) discarded and run again because other processes took > {NOISY_CORES} cores meanwhile \
                 (they took {})",
                self.0.len(),
                self.0.iter().map(|c| format!("{c:.2}")).collect::<Vec<_>>().join(", ")
            ));
        }
    }
}

/// What one round of a section started from, to tell whether other processes took part.
struct Noisy(CpuSnap);

impl Noisy {
    fn start() -> Self {
        Noisy(CpuSnap::take())
    }
}

fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    // The binary lies in <target>/<profile>/ (or <target>/<triple>/<profile>/); cargo marks
    // <target> with CACHEDIR.TAG.
    Path::new(BIN)
        .ancestors()
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"), Path::to_path_buf)
}

// ---------------------------------------------------------------------------------------------
// Statistics and formatting

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    s.sort_by(f64::total_cmp);
    s
}

fn median(v: &[f64]) -> f64 {
    let s = sorted(v);
    match s.len() {
        0 => f64::NAN,
        n if !n.is_multiple_of(2) => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile.
fn percentile(v: &[f64], p: f64) -> f64 {
    let s = sorted(v);
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn verdict(pass: bool, what: &str) -> String {
    format!("{what}: {}", if pass { "PASS" } else { "MISS" })
}

/// "2.50x faster" / "1.25x slower": a ratio said the way round that reads above 1.
fn ratio(r: f64, digits: usize, better: &str, worse: &str) -> String {
    if !r.is_finite() {
        "-".into()
    } else if r >= 1.0 {
        format!("{r:.digits$}x {better}")
    } else {
        format!("{:.digits$}x {worse}", 1.0 / r)
    }
}

fn faster(r: f64) -> String {
    ratio(r, 2, "faster", "slower")
}

fn smaller(r: f64) -> String {
    ratio(r, 1, "smaller", "larger")
}

fn fmt_int(n: u64) -> String {
    group_digits(n)
}

/// 5M, 200k, 1,234.
fn fmt_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n.is_multiple_of(1_000_000) => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n.is_multiple_of(1_000) => format!("{}k", n / 1_000),
        n => fmt_int(n),
    }
}

fn fmt_rate(r: f64) -> String {
    if !r.is_finite() {
        "-".into()
    } else if r >= 100.0 {
        format!("{}/s", fmt_int(r.round() as u64))
    } else {
        format!("{r:.1}/s")
    }
}

fn fmt_us(us: f64) -> String {
    if us >= 100.0 { format!("{} us", fmt_int(us.round() as u64)) } else { format!("{us:.1} us") }
}

fn fmt_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

fn fmt_kib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
