//! `bulkhead demo`: fault-injection stories on built-in data, shown live. The tour runs a
//! batch with every kind of fault over worker processes, then the same kind of batch on
//! threads of one process (in a child process, so the demo survives it), then a side-by-side
//! summary. Each named scenario tells one story. Every run is real: the faults do what they
//! do, and the demo checks that the outcome is what the story claims.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shared::record::{CrashCause, Status};
use worker::builtin::Builtin;

use crate::engine::FaultPlan;
use crate::engine::Mode;
use crate::engine::StopReason;
use crate::engine::lifecycle::{RunEvent, Timed, WorkerExit};
use crate::input::source::TaskSpec;
use crate::pool::{Pool, PoolBuilder, Summary};
use shared::task::{BuiltinTask, FaultKind};

/// The named scenarios.
pub const SCENARIOS: &[(&str, &str)] = &[
    ("tour", "everything below in under a minute (the default)"),
    ("poison", "a task that crashes every attempt is quarantined; the batch completes"),
    ("segv", "one segfault: one task retried on processes, everything lost on threads"),
    ("mutex", "a panic while holding a lock poisons the state threads share"),
    ("hang", "a hung task is killed at its timeout on processes, abandoned on threads"),
    ("freeze", "a stopped worker misses its heartbeats and is replaced"),
    ("oom", "a worker that allocates without end hits its memory limit, alone"),
    ("protocol", "a worker that sends garbage or hangs up is cut off"),
    ("crash-loop", "every task crashes: the restart limit stops the loop"),
    ("retry", "retries by cause: a panic is set aside at once, a segfault gets more tries"),
];

/// Terminal colours, or none.
#[derive(Debug, Clone, Copy)]
struct Paint(bool);

impl Paint {
    fn wrap(self, code: &str, s: &str) -> String {
        if self.0 { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_string() }
    }
    fn red(self, s: &str) -> String {
        self.wrap("31", s)
    }
    fn green(self, s: &str) -> String {
        self.wrap("32", s)
    }
    fn yellow(self, s: &str) -> String {
        self.wrap("33", s)
    }
    fn dim(self, s: &str) -> String {
        self.wrap("2", s)
    }
    fn bold(self, s: &str) -> String {
        self.wrap("1", s)
    }
}

/// Runs the scenario `name`; returns the exit code (0 when the story came out as told).
pub fn run(name: Option<&str>) -> i32 {
    let paint = Paint(std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none());
    let name = name.unwrap_or("tour");
    let started = Instant::now();
    let result = match name {
        "tour" => tour(paint),
        "poison" => poison(paint),
        "segv" => segv(paint),
        "mutex" => mutex(paint),
        "hang" => hang(paint),
        "freeze" => freeze(paint),
        "oom" => oom(paint),
        "protocol" => protocol(paint),
        "crash-loop" => crash_loop(paint),
        "retry" => retry_by_cause(paint),
        other => {
            eprintln!("bulkhead: error: no demo scenario '{other}'; there are:");
            for (n, what) in SCENARIOS {
                eprintln!("  {n:<11} {what}");
            }
            return shared::exit::BAD_INPUT;
        }
    };
    match result {
        Ok(()) => {
            println!("{}", paint.dim(&format!("(demo '{name}' took {:.1}s)", started.elapsed().as_secs_f64())));
            0
        }
        Err(e) => {
            eprintln!("bulkhead: demo '{name}' did not go as it should: {}", worker::ErrorChain(&e));
            1
        }
    }
}

type Outcome = Result<(), DemoError>;

/// Why a demo did not go as it should.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The pool refused to run.
    #[error("cannot run the batch")]
    Pool(#[from] crate::pool::PoolError),
    /// A process the demo needs did not start or could not be waited for.
    #[error("cannot {what}")]
    Io {
        /// What the demo tried.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The run did something else than the story says it does.
    #[error("expected {expected}{}", saw.as_ref().map(|s| format!(", {s}")).unwrap_or_default())]
    Unexpected {
        /// What the story says.
        expected: &'static str,
        /// What happened instead, where it says more.
        saw: Option<String>,
    },
}

impl DemoError {
    fn unexpected(expected: &'static str) -> Self {
        DemoError::Unexpected { expected, saw: None }
    }
}

fn section(paint: Paint, title: &str, note: &str) {
    println!();
    println!("{}", paint.bold(title));
    if !note.is_empty() {
        println!("{}", paint.dim(note));
    }
}

fn task(id: &str, task: BuiltinTask, fault: Option<(FaultKind, Option<u32>)>) -> TaskSpec<BuiltinTask> {
    TaskSpec { id: Some(id.to_string()), task, fault: fault.map(|(kind, attempts)| FaultPlan { kind, attempts }) }
}

fn sleep(ms: u64) -> BuiltinTask {
    BuiltinTask::Sleep { ms }
}

/// The tour's batch: plain work, one task per fault (first attempt only), one poison task.
fn every_fault_batch() -> Vec<TaskSpec<BuiltinTask>> {
    let mut v = Vec::new();
    let faults = [
        FaultKind::Panic,
        FaultKind::Segv,
        FaultKind::Abort,
        FaultKind::Kill,
        FaultKind::Exit,
        FaultKind::StackOverflow,
        FaultKind::Oom,
        FaultKind::Hang,
        FaultKind::Freeze,
        FaultKind::Garbage,
        FaultKind::Disconnect,
    ];
    for (i, f) in faults.iter().enumerate() {
        v.push(task(&format!("work-{}", 2 * i), sleep(40), None));
        v.push(task(&format!("{f}-task"), sleep(20), Some((*f, Some(1)))));
        v.push(task(&format!("work-{}", 2 * i + 1), BuiltinTask::SumSquares { n: 2_000_000 }, None));
    }
    v.push(task("poison", sleep(10), Some((FaultKind::Segv, None))));
    v.push(task("shell", BuiltinTask::Shell { cmd: "echo made by /bin/sh".into() }, None));
    v
}

/// A pool tuned for a demo: short timeouts so the stories take seconds.
fn demo_pool() -> PoolBuilder {
    let builder = match crate::runtime::process::spawn::WorkerProgram::builtin() {
        Ok(p) => Pool::builder().worker_program(p),
        Err(_) => Pool::builder(),
    };
    builder
        .worker_output(crate::WorkerOutput::Log)
        .mode(Mode::Process)
        .workers(2)
        .timeout(Duration::from_millis(800))
        .heartbeat(Duration::from_millis(100), Duration::from_millis(600))
        .address_space_limit(256 << 20)
        .max_restarts(50, Duration::from_secs(10))
}

/// Prints the events of a run as they happen.
fn live(paint: Paint) -> impl FnMut(&Timed) + 'static {
    let mut crashed: HashSet<String> = HashSet::new();
    move |e: &Timed| {
        let t = paint.dim(&format!("  {:>6.2}s", e.t));
        match &e.event {
            RunEvent::WorkerStarted { worker, pid, ms } => {
                println!("{t}  {} worker {worker} up (pid {pid}, ready in {ms:.1} ms)", paint.green("+"))
            }
            RunEvent::WorkerExited { worker, pid, exit: WorkerExit::Died(Some(cause)), task } => {
                let on = task.as_ref().map(|t| format!("  [task {t}]")).unwrap_or_default();
                println!(
                    "{t}  {} worker {worker} (pid {pid}) {}{}",
                    paint.red("✗"),
                    paint.red(&describe(cause)),
                    paint.dim(&on)
                );
            }
            RunEvent::WorkerRestarted { worker, backoff_ms } => {
                println!("{t}  {} worker {worker} restarting (backoff {backoff_ms:.0} ms)", paint.yellow("↻"))
            }
            RunEvent::TaskRequeued { id, charged: true, attempts, .. } => {
                crashed.insert(id.clone());
                println!("{t}    {} {id} goes back to the queue ({attempts} attempt(s) used)", paint.yellow("↺"));
            }
            RunEvent::TaskFinished { id, status, .. } if crashed.remove(id) => {
                let mark = if *status == Status::Ok { paint.green("✓") } else { paint.red("✗") };
                println!("{t}    {mark} {id} {status} on a later attempt");
            }
            RunEvent::TaskQuarantined { id, attempts, .. } => {
                println!("{t}    {} {id} quarantined after {attempts} attempts; the batch goes on", paint.red("☠"))
            }
            _ => {}
        }
        let _ = std::io::stdout().flush();
    }
}

fn describe(cause: &CrashCause) -> String {
    match cause {
        CrashCause::Panic { message } => format!("panicked: {message}"),
        other => other.to_string(),
    }
}

/// Runs a batch in process mode, live; returns the summary and the records.
fn process_run(
    paint: Paint,
    builder: PoolBuilder,
    batch: Vec<TaskSpec<BuiltinTask>>,
) -> Result<(Summary, Vec<shared::record::Record<shared::task::BuiltinOutput>>), DemoError> {
    let pool = builder.build(Builtin::default())?;
    let mut run = pool.run(batch)?.on_event(live(paint));
    // A stop (the crash-loop story gives up) is told by the summary's verdict.
    let records: Vec<_> = run.by_ref().filter_map(Result::ok).collect();
    Ok((run.summary(), records))
}

fn verdict(paint: Paint, s: &Summary, tasks: usize) {
    let c = &s.counts;
    let unfinished = tasks as u64 - c.finished();
    // A task without a record in process mode was not lost: the run stopped before it ended,
    // and it is still to do.
    let rest = match (unfinished, &s.stop) {
        (0, _) => "none lost".to_string(),
        (k, Some(StopReason::RestartLimit(_) | StopReason::ProtocolMismatch { .. } | StopReason::NotServed { .. })) => {
            format!("{k} never finished: the run gave up before them (no record; --resume runs them)")
        }
        (k, _) => format!("{k} never finished: the run stopped before them (no record; --resume runs them)"),
    };
    let n = |k: u64, one: &str, many: &str| format!("{k} {}", if k == 1 { one } else { many });
    println!(
        "  {} {} ok, {} failed, {} quarantined, {rest}; {}, {}, in {:.1}s",
        paint.bold("→"),
        c.ok,
        c.failed,
        c.quarantined,
        n(c.crashes_total(), "worker death", "worker deaths"),
        n(c.restarts, "restart", "restarts"),
        s.elapsed.as_secs_f64()
    );
}

/// What a thread-mode child run did.
struct ThreadRun {
    records: usize,
    exit: std::process::ExitStatus,
    stderr: Vec<String>,
    tasks: usize,
}

/// Runs a batch with `bulkhead run --mode thread` in a child process, echoing its stderr.
fn thread_run(paint: Paint, batch: &[TaskSpec<BuiltinTask>], extra: &[&str]) -> Result<ThreadRun, DemoError> {
    let exe = std::env::current_exe().map_err(|source| DemoError::Io { what: "find this executable", source })?;
    let mut input = String::new();
    for t in batch {
        input.push_str(&task_line(t));
        input.push('\n');
    }
    let mut child = Command::new(exe)
        .args(["run", "--mode", "thread", "-j", "2", "--progress", "never"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| DemoError::Io { what: "start a thread-mode run", source })?;
    let mut stdin = child.stdin.take().expect("piped");
    std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let stdout = child.stdout.take().expect("piped");
    let counter = std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).count());
    let mut lines = Vec::new();
    for line in BufReader::new(child.stderr.take().expect("piped")).lines().map_while(Result::ok) {
        if (line.starts_with("bulkhead: ") && !line.starts_with("bulkhead: control socket"))
            || line.starts_with("thread '")
        {
            println!("  {}", paint.dim(&format!("| {line}")));
        }
        lines.push(line);
    }
    let exit = child.wait().map_err(|source| DemoError::Io { what: "wait for the thread-mode run", source })?;
    // A run killed by a signal could not remove its control socket; reclaim it, as the next
    // run would.
    crate::output::rundir::reclaim(&crate::output::rundir::base_dir());
    Ok(ThreadRun { records: counter.join().unwrap_or(0), exit, stderr: lines, tasks: batch.len() })
}

fn task_line(t: &TaskSpec<BuiltinTask>) -> String {
    let mut s = String::from("{");
    if let Some(id) = &t.id {
        let _ = write!(s, "\"id\":{},", serde_json::to_string(id).expect("strings serialize"));
    }
    let _ = match &t.task {
        BuiltinTask::Noop => write!(s, "\"kind\":\"noop\""),
        BuiltinTask::Sleep { ms } => write!(s, "\"kind\":\"sleep\",\"ms\":{ms}"),
        BuiltinTask::SumSquares { n } => write!(s, "\"kind\":\"sum_squares\",\"n\":{n}"),
        BuiltinTask::Shell { cmd } => {
            write!(s, "\"kind\":\"shell\",\"cmd\":{}", serde_json::to_string(cmd).expect("serializes"))
        }
        BuiltinTask::ShellParts { parts } => {
            let cmd = String::from_utf8_lossy(&parts.join(&b"{%}"[..])).into_owned();
            write!(s, "\"kind\":\"shell\",\"cmd\":{}", serde_json::to_string(&cmd).expect("serializes"))
        }
        BuiltinTask::Scan { path, offset, len, pattern, .. } => write!(
            s,
            "\"kind\":\"scan\",\"path\":{},\"offset\":{offset},\"len\":{len},\"pattern\":{}",
            serde_json::to_string(path).expect("serializes"),
            serde_json::to_string(pattern).expect("serializes")
        ),
        BuiltinTask::Pipe { cmd, path, offset, len } => write!(
            s,
            "\"kind\":\"pipe\",\"cmd\":{},\"path\":{},\"offset\":{offset},\"len\":{len}",
            serde_json::to_string(cmd).expect("serializes"),
            serde_json::to_string(path).expect("serializes")
        ),
    };
    if let Some(f) = t.fault {
        let _ = write!(s, ",\"fault\":\"{}\"", f.kind);
        if let Some(n) = f.attempts {
            let _ = write!(s, ",\"fault_attempts\":{n}");
        }
    }
    s.push('}');
    s
}

fn signal_of(status: &std::process::ExitStatus) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    status
        .signal()
        .map(|s| nix::sys::signal::Signal::try_from(s).map(|s| s.as_str().to_string()).unwrap_or(s.to_string()))
}

fn tour(paint: Paint) -> Outcome {
    println!("{}", paint.bold("bulkhead demo: threads share memory and fail together; processes fail alone."));
    let batch = every_fault_batch();
    section(
        paint,
        &format!("1/3  Processes: 2 workers, {} tasks, one of every fault", batch.len()),
        "     each faulty task fails its first attempt; 'poison' fails every attempt",
    );
    let (summary, records) = process_run(paint, demo_pool(), batch.clone())?;
    verdict(paint, &summary, batch.len());
    let quarantined: Vec<_> =
        records.iter().filter(|r| r.status == Status::Quarantined).map(|r| r.id.as_str()).collect();
    if records.len() != batch.len() || quarantined != ["poison"] || summary.counts.ok as usize != batch.len() - 1 {
        return Err(DemoError::Unexpected {
            expected: "every task but 'poison' ok",
            saw: Some(format!("got {} records, quarantined {quarantined:?}", records.len())),
        });
    }
    let deaths = summary.counts.crashes_total();

    section(
        paint,
        "2/3  Threads: the same kind of batch on 2 threads of one process sharing a Mutex tally",
        "     (in a child process, so this demo survives it)",
    );
    println!("  {}", paint.bold("a panic while the tally's lock is held:"));
    let mut poisoned = every_fault_batch();
    poisoned.retain(|t| t.fault.is_none());
    // Some work gets done before the panic, so there is a tally to poison.
    poisoned.insert(8, task("panic-task", sleep(20), Some((FaultKind::Panic, Some(1)))));
    let panic_run = thread_run(paint, &poisoned, &[])?;
    let said_poisoned = panic_run.stderr.iter().any(|l| l.contains("shared state poisoned"));
    println!(
        "  {} {} of {} tasks recorded, then the run stopped (exit {}): the state every thread shares is corrupt",
        paint.bold("→"),
        panic_run.records,
        panic_run.tasks,
        panic_run.exit.code().map_or("by signal".into(), |c| c.to_string())
    );
    if !said_poisoned || panic_run.exit.success() {
        return Err(DemoError::unexpected("thread mode to report the poisoned state"));
    }
    println!("  {}", paint.bold("one segfault on one thread:"));
    let mut segv_batch = every_fault_batch();
    segv_batch
        .retain(|t| t.fault.is_none() || t.fault.is_some_and(|f| f.kind == FaultKind::Segv && f.attempts.is_some()));
    let segv_run = thread_run(paint, &segv_batch, &[])?;
    let sig = signal_of(&segv_run.exit);
    println!(
        "  {} the whole process died ({}) after {} of {} tasks; {} lost, the other thread's work with them",
        paint.bold("→"),
        paint.red(sig.as_deref().unwrap_or("no signal?")),
        segv_run.records,
        segv_run.tasks,
        segv_run.tasks - segv_run.records
    );
    if sig.as_deref() != Some("SIGSEGV") {
        return Err(DemoError::Unexpected {
            expected: "the thread-mode run to die by SIGSEGV",
            saw: Some(format!("it ended with {:?}", segv_run.exit)),
        });
    }

    section(paint, "3/3  Side by side", "");
    let rows = [
        ("", "processes", "threads"),
        ("a panic", "1 task retried, batch done", "shared state poisoned, run stopped"),
        ("a segfault", "1 task retried, batch done", "whole process dead, in-flight work lost"),
        ("a poison task", "quarantined after 3 attempts", "the first attempt ends everything"),
        ("a hung task", "worker killed at the timeout", "thread abandoned, still spinning"),
        ("runaway memory", "that worker hits its limit", "the process's limit, or the host's"),
    ];
    for (a, b, c) in rows {
        println!("  {:<16} {:<32} {}", paint.bold(a), b, c);
    }
    println!(
        "  {}",
        paint.dim(&format!(
            "measured above: {deaths} worker deaths cost the process batch nothing; on threads one panic stopped the run and one segfault ended it"
        ))
    );
    println!("  {}", paint.dim("what isolation costs in memory and speed: bulkhead compare"));
    Ok(())
}

fn poison(paint: Paint) -> Outcome {
    section(
        paint,
        "A poison task among good ones",
        "     'poison' segfaults its worker on every attempt; --attempts 3",
    );
    let mut batch: Vec<_> = (0..12).map(|i| task(&format!("good-{i}"), sleep(30), None)).collect();
    batch.insert(3, task("poison", sleep(5), Some((FaultKind::Segv, None))));
    let n = batch.len();
    let (s, recs) = process_run(paint, demo_pool(), batch)?;
    verdict(paint, &s, n);
    let q: Vec<_> = recs.iter().filter(|r| r.status == Status::Quarantined).collect();
    match q.as_slice() {
        [r] if r.id == "poison" && r.crashes.len() == 3 && s.counts.ok == 12 => Ok(()),
        _ => Err(DemoError::unexpected("only 'poison' quarantined with 3 crashes")),
    }
}

fn segv(paint: Paint) -> Outcome {
    let mut batch: Vec<_> = (0..10).map(|i| task(&format!("t{i}"), sleep(40), None)).collect();
    batch.insert(4, task("segv", sleep(10), Some((FaultKind::Segv, Some(1)))));
    section(paint, "One segfault, on processes", "");
    let n = batch.len();
    let (s, _) = process_run(paint, demo_pool(), batch.clone())?;
    verdict(paint, &s, n);
    section(paint, "The same segfault, on threads", "");
    let r = thread_run(paint, &batch, &[])?;
    let sig = signal_of(&r.exit);
    println!(
        "  {} process killed by {}; {} of {} tasks recorded, {} lost",
        paint.bold("→"),
        paint.red(sig.as_deref().unwrap_or("?")),
        r.records,
        r.tasks,
        r.tasks - r.records
    );
    if s.counts.ok != 11 || sig.as_deref() != Some("SIGSEGV") {
        return Err(DemoError::unexpected("11 ok on processes and SIGSEGV on threads"));
    }
    Ok(())
}

fn mutex(paint: Paint) -> Outcome {
    section(
        paint,
        "A panic while a lock is held",
        "     threads add every result to one tally in a std::sync::Mutex: finished += 1, then ok += 1;\n     the 'panic' fault fires between the two, with the lock held",
    );
    let mut batch: Vec<_> = (0..8).map(|i| task(&format!("t{i}"), sleep(30), None)).collect();
    batch.insert(3, task("boom", sleep(30), Some((FaultKind::Panic, None))));
    let r = thread_run(paint, &batch, &[])?;
    let inconsistent = r.stderr.iter().any(|l| l.contains("is inconsistent"));
    println!(
        "  {} threads: {} of {} tasks recorded before the run had to stop; the tally no longer adds up",
        paint.bold("→"),
        r.records,
        r.tasks
    );
    section(paint, "The same batch on processes", "     the tally is the supervisor's alone, updated from results");
    let n = batch.len();
    let (s, _) = process_run(paint, demo_pool(), batch)?;
    verdict(paint, &s, n);
    if !inconsistent || s.counts.ok != 8 || s.counts.quarantined != 1 {
        return Err(DemoError::unexpected(
            "a poisoned, inconsistent tally on threads and 8 ok + 1 quarantined on processes",
        ));
    }
    Ok(())
}

fn hang(paint: Paint) -> Outcome {
    let mut batch: Vec<_> = (0..6).map(|i| task(&format!("t{i}"), sleep(30), None)).collect();
    batch.insert(2, task("hang", sleep(10), Some((FaultKind::Hang, Some(1)))));
    section(
        paint,
        "A hung task on processes",
        "     --timeout 800ms: the worker is killed (SIGTERM, then SIGKILL), the task retried",
    );
    let n = batch.len();
    let (s, _) = process_run(paint, demo_pool(), batch.clone())?;
    verdict(paint, &s, n);
    section(
        paint,
        "The same hang on threads",
        "     a thread cannot be killed: it is abandoned, still burning its core",
    );
    let r = thread_run(paint, &batch, &["--timeout", "800ms"])?;
    let abandoned = r.stderr.iter().any(|l| l.contains("abandoned"));
    println!(
        "  {} {} of {} tasks recorded; the hung thread is still spinning when the process exits",
        paint.bold("→"),
        r.records,
        r.tasks
    );
    if s.counts.ok != 7 || s.counts.crashes.get("timeout") != Some(&1) || !abandoned {
        return Err(DemoError::unexpected("a timeout on processes and an abandoned thread"));
    }
    Ok(())
}

fn freeze(paint: Paint) -> Outcome {
    let mut batch: Vec<_> = (0..6).map(|i| task(&format!("t{i}"), sleep(30), None)).collect();
    batch.insert(2, task("freeze", sleep(10), Some((FaultKind::Freeze, Some(1)))));
    section(
        paint,
        "A worker stopped with SIGSTOP",
        "     heartbeats every 100 ms; 600 ms of silence and it is replaced",
    );
    let n = batch.len();
    let (s, _) = process_run(paint, demo_pool(), batch)?;
    verdict(paint, &s, n);
    (s.counts.crashes.get("unresponsive") == Some(&1) && s.counts.ok == 7)
        .then_some(())
        .ok_or(DemoError::unexpected("one unresponsive worker"))
}

fn oom(paint: Paint) -> Outcome {
    let mut batch: Vec<_> = (0..6).map(|i| task(&format!("t{i}"), sleep(30), None)).collect();
    batch.insert(2, task("hog", sleep(10), Some((FaultKind::Oom, Some(1)))));
    section(
        paint,
        "A worker that allocates without end",
        "     --address-space-limit 256M per worker: the allocator fails, the worker dies, the host never feels it",
    );
    let n = batch.len();
    // No task here hangs: a longer timeout costs nothing, and on a loaded machine filling
    // 256 MiB page by page may take longer than the other stories' 800 ms.
    let (s, _) = process_run(paint, demo_pool().timeout(Duration::from_secs(30)), batch)?;
    verdict(paint, &s, n);
    (s.counts.crashes.get("oom") == Some(&1) && s.counts.ok == 7).then_some(()).ok_or(DemoError::unexpected("one oom"))
}

fn protocol(paint: Paint) -> Outcome {
    let mut batch: Vec<_> = (0..6).map(|i| task(&format!("t{i}"), sleep(30), None)).collect();
    batch.insert(1, task("garbage", sleep(10), Some((FaultKind::Garbage, Some(1)))));
    batch.insert(4, task("hangup", sleep(10), Some((FaultKind::Disconnect, Some(1)))));
    section(
        paint,
        "Workers that break the protocol",
        "     one writes an absurd frame length, one closes its socket and stays alive",
    );
    let n = batch.len();
    let (s, _) = process_run(paint, demo_pool(), batch)?;
    verdict(paint, &s, n);
    (s.counts.crashes.get("protocol") == Some(&2) && s.counts.ok == 8)
        .then_some(())
        .ok_or(DemoError::unexpected("two protocol deaths"))
}

fn crash_loop(paint: Paint) -> Outcome {
    section(
        paint,
        "Every task crashes",
        "     --max-restarts 10/5s: more than 10 restarts in 5 seconds and the supervisor gives up",
    );
    let batch: Vec<_> =
        (0..40).map(|i| task(&format!("doomed-{i}"), BuiltinTask::Noop, Some((FaultKind::Segv, None)))).collect();
    let n = batch.len();
    let (s, _) = process_run(paint, demo_pool().max_restarts(10, Duration::from_secs(5)), batch)?;
    verdict(paint, &s, n);
    match &s.stop {
        Some(msg @ StopReason::RestartLimit(_)) => {
            println!("  {} {msg} (exit code {})", paint.bold("→"), s.exit_code());
            Ok(())
        }
        other => Err(DemoError::Unexpected {
            expected: "the supervisor to give up",
            saw: Some(format!("it stopped with {other:?}")),
        }),
    }
}

/// Retry by cause: a panic is a bug that another attempt will not fix, a segfault here is a
/// flaky native library that a fresh process usually gets past.
fn retry_by_cause(paint: Paint) -> Outcome {
    section(
        paint,
        "Retries by cause",
        "     --retry panic=1,signal=5: 'bug' panics on every attempt and is set aside after one;\n     \
         'flaky' segfaults on its first 3 attempts, past the default --attempts 3, and succeeds on its 4th",
    );
    let mut batch: Vec<_> = (0..8).map(|i| task(&format!("t{i}"), sleep(30), None)).collect();
    batch.insert(1, task("bug", sleep(5), Some((FaultKind::Panic, None))));
    batch.insert(3, task("flaky", sleep(5), Some((FaultKind::Segv, Some(3)))));
    let n = batch.len();
    let rules = crate::engine::config::RetryRules {
        by_cause: crate::engine::config::parse_retry_rules("panic=1,signal=5").expect("the demo's rules parse"),
        ..Default::default()
    };
    let (s, recs) = process_run(paint, demo_pool().retry_rules(rules), batch)?;
    verdict(paint, &s, n);
    for r in recs.iter().filter(|r| r.id == "bug" || r.id == "flaky") {
        let rule = r.rule.as_deref().map(|rule| format!(", by the rule {rule}")).unwrap_or_default();
        println!("  {}: {} after {} attempt(s){rule}", r.id, r.status, r.attempts);
    }
    let find = |id: &str| recs.iter().find(|r| r.id == id).map(|r| (r.status, r.attempts, r.rule.as_deref()));
    match (find("bug"), find("flaky")) {
        (Some((Status::Quarantined, 1, Some("panic=1"))), Some((Status::Ok, 4, None))) => Ok(()),
        _ => Err(DemoError::unexpected("'bug' quarantined after 1 attempt by panic=1, 'flaky' ok on its 4th")),
    }
}
