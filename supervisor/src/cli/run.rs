//! `bulkhead run`: a batch from JSONL or from lines with `--cmd`, through the library's pool.

use std::fs::File;
use std::io::{self, IsTerminal};
use std::os::fd::AsFd;

use shared::exit;
use worker::builtin::Builtin;

use super::{ModeArg, ProgressArg, RunArgs, report_error};
use crate::engine::Mode;
use crate::engine::inject::Inject;
use crate::input::source::TaskSource;
use crate::input::{CmdTemplate, Format, LineSource};
use crate::output::journal::ResultsTarget;
use crate::output::rundir::RunDir;
use crate::pool::{Pool, PoolError, Summary};

enum Input {
    /// A file: a regular one is checked whole before the run.
    File(File, String),
    /// Standard input that is not a regular file (a pipe, a terminal).
    Stream,
}

pub(super) fn run(mut args: RunArgs) -> i32 {
    let shard = match crate::cli::shard::resolve(args.shard, args.shards, &|k| std::env::var(k).ok()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bulkhead: error: {e}");
            return exit::BAD_INPUT;
        }
    };
    if let Some(s) = &shard {
        eprintln!("bulkhead: shard {}/{} ({})", s.k, s.n, s.source);
        for p in [&mut args.results, &mut args.events, &mut args.report].into_iter().flatten() {
            *p = crate::cli::shard::fill(p, s.k);
        }
    } else if let Some(p) = [&args.results, &args.events, &args.report]
        .into_iter()
        .flatten()
        .find(|p| p.to_string_lossy().contains("{shard}"))
    {
        // Not a shard: the file would be named with a literal "{shard}".
        eprintln!(
            "bulkhead: error: {} has {{shard}} but this run is not a shard \
             (--shard K/N, a Slurm array task, or JOB_COMPLETION_INDEX with --shards N)",
            p.display()
        );
        return exit::BAD_INPUT;
    }
    let shard = shard.map(|s| (s.k, s.n));
    let format = match &args.cmd {
        Some(t) => Format::Cmd(CmdTemplate::new(t)),
        None => Format::Jsonl,
    };
    // A regular file is checked whole before any task runs; a pipe is checked as it streams.
    let input = match args.tasks.as_deref().filter(|p| p.as_os_str() != "-") {
        Some(path) => match File::open(path) {
            Ok(f) => Input::File(f, path.display().to_string()),
            Err(e) => {
                eprintln!("bulkhead: error: cannot open {}: {e}", path.display());
                return exit::BAD_INPUT;
            }
        },
        None => {
            // `bulkhead run < tasks.jsonl`: a file all the same.
            let stdin = File::from(io::stdin().as_fd().try_clone_to_owned().expect("stdin is open"));
            if stdin.metadata().is_ok_and(|m| m.is_file()) {
                Input::File(stdin, "standard input".into())
            } else {
                Input::Stream
            }
        }
    };
    let check_started = std::time::Instant::now();
    let checked = match &input {
        Input::File(f, name) => match precheck(f, name, &format, shard) {
            Ok(c) => c,
            Err(code) => return code,
        },
        Input::Stream => None,
    };
    if matches!(input, Input::Stream) && io::stdin().is_terminal() {
        // As `sort` or `cat` would, but a first-time user may not know it is waiting.
        eprintln!(
            "bulkhead: reading tasks from standard input (a terminal), one per line; \
             end with Ctrl-D, or give a task file"
        );
    }
    let total = checked.as_ref().map(|c| c.tasks);
    let check_time = checked.as_ref().map(|_| check_started.elapsed());
    if args.mode == ModeArg::Thread {
        if args.memory_limit.is_some() {
            eprintln!(
                "bulkhead: warning: --memory-limit bounds worker processes; thread mode has none, so it is not applied"
            );
        }
        if args.threads_per_worker > 1 {
            eprintln!(
                "bulkhead: warning: --threads-per-worker is for worker processes (hybrid); in thread mode -j sets the threads"
            );
        }
    }
    let mut builder = Pool::builder()
        .mode(if args.mode == ModeArg::Thread { Mode::Thread } else { Mode::Process })
        .attempts(args.attempts)
        .threads_per_worker(args.threads_per_worker)
        .max_restarts(args.max_restarts.0, args.max_restarts.1)
        .grace(args.grace)
        .retry_failed(args.retry_failed)
        .resume(args.resume)
        .handle_signals(true)
        .reap_orphans(true)
        .results(match &args.results {
            Some(p) => ResultsTarget::File(p.clone()),
            None => ResultsTarget::Stdout,
        });
    if let Some(n) = args.workers {
        builder = builder.workers(n);
    }
    if let Some((k, n)) = shard {
        builder = builder.shard(k, n);
    }
    if let Some(t) = args.timeout {
        builder = builder.timeout(t);
    }
    // Thread mode has no worker process to bound (the warning above said so).
    if let Some(m) = args.memory_limit
        && args.mode != ModeArg::Thread
    {
        builder = builder.memory_limit(m);
    }
    if let Some(e) = &args.events {
        builder = builder.events(e);
    }
    if let Some(spec) = &args.inject {
        let seed =
            args.seed.unwrap_or_else(|| shared::hash::mix64(worker::clock::mono_ns() ^ u64::from(std::process::id())));
        match Inject::parse(spec, seed) {
            Ok(i) => {
                if args.seed.is_none() {
                    eprintln!("bulkhead: injecting faults {i} with seed {seed} (repeat with --seed {seed})");
                }
                builder = builder.inject(i);
            }
            Err(e) => {
                eprintln!("bulkhead: error: --inject: {e}");
                return exit::BAD_INPUT;
            }
        }
    }
    let progress = match args.progress {
        ProgressArg::Always => true,
        ProgressArg::Never => false,
        ProgressArg::Auto => io::stderr().is_terminal(),
    };
    builder = builder.progress(progress);
    if let Some(n) = total {
        builder = builder.expected_total(n);
    }
    // --report: a path that cannot be written is refused before the batch runs rather than
    // after it; the timeline is built from the events as they happen and written at the end.
    if let Some(path) = &args.report
        && let Err(e) = check_writable(path)
    {
        eprintln!("bulkhead: error: cannot write the report {}: {e}", path.display());
        return exit::BAD_INPUT;
    }
    // Opening a FIFO for writing blocks until something reads it: say so before it does.
    for (flag, path) in [("--results", &args.results), ("--events", &args.events)] {
        if let Some(p) = path
            && std::fs::metadata(p).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()))
        {
            eprintln!("bulkhead: {flag} {} is a FIFO: waiting for a reader to open it", p.display());
        }
    }
    // The control socket lives in a fresh private directory unless a path is given.
    let rundir;
    let control = match &args.control {
        Some(p) => p.clone(),
        None => match RunDir::create() {
            Ok(d) => {
                rundir = d;
                rundir.control_socket()
            }
            Err(e) => {
                eprintln!("bulkhead: error: cannot create a private runtime directory: {e}");
                return exit::BAD_INPUT;
            }
        },
    };
    builder = builder.control_socket(&control);
    if let Ok(program) = crate::runtime::process::spawn::WorkerProgram::builtin() {
        builder = builder.worker_program(program);
    }
    let pool = match builder.build(Builtin::default()) {
        Ok(p) => p,
        Err(e) => return pool_error(&e),
    };
    let run = pool.run_source(|mut admission| {
        let source: Box<dyn TaskSource> = match (input, checked) {
            (Input::File(f, _), Some(checked)) => {
                // A file checked whole has no duplicate ids: the reader need not remember
                // them; and the jobs the check parsed first are not parsed again.
                admission.check_duplicates = false;
                Box::new(LineSource::spawn_checked(f, format, admission, checked.prefix)?)
            }
            (Input::File(f, _), None) => Box::new(LineSource::spawn(f, format, admission)?),
            (Input::Stream, _) => Box::new(LineSource::spawn(io::stdin(), format, admission)?),
        };
        Ok(source)
    });
    let run = match run {
        Ok(r) => r,
        Err(e) => return pool_error(&e),
    };
    let timeline =
        args.report.as_ref().map(|_| std::rc::Rc::new(std::cell::RefCell::new(crate::report::Timeline::new())));
    let run = match &timeline {
        Some(t) => {
            let t = t.clone();
            run.on_event(move |e| t.borrow_mut().push(e))
        }
        None => run,
    };
    // Said on a terminal, where someone may want to look; elsewhere only with -v.
    if io::stderr().is_terminal() {
        eprintln!("bulkhead: control socket {} (bulkhead status)", control.display());
    } else {
        log::info!("control socket {} (bulkhead status)", control.display());
    }
    // The summary says how a stopped run ended; its tasks left behind have no record, and
    // --resume runs them.
    let summary = run.finish().unwrap_or_else(|e| *e.summary);
    print_summary(&summary, total, check_time);
    if let (Some(path), Some(t)) = (&args.report, timeline) {
        let title = match &args.tasks {
            Some(p) => format!("bulkhead run {}", p.display()),
            None => "bulkhead run".to_string(),
        };
        match std::fs::write(path, t.borrow().to_html(&title)) {
            Ok(()) => eprintln!("bulkhead: timeline written to {}", path.display()),
            Err(e) => eprintln!("bulkhead: error: cannot write the report {}: {e}", path.display()),
        }
    }
    let code = summary.exit_code();
    if let Some(line) = next_step(code, &summary, args.results.as_deref()) {
        eprintln!("{line}");
    }
    code
}

/// Checks a whole regular file; pipes and terminals are checked as they stream.
fn precheck(
    f: &File,
    name: &str,
    format: &Format,
    shard: Option<(u32, u32)>,
) -> Result<Option<crate::input::Checked>, i32> {
    let regular = f.metadata().map(|m| m.is_file()).unwrap_or(false);
    if !regular {
        return Ok(None);
    }
    match crate::input::validate_file(f, format, shard, crate::input::KEEP_BYTES) {
        Ok(c) => Ok(Some(c)),
        Err(e) => {
            eprintln!("bulkhead: error: {name}, {}", worker::ErrorChain(&e));
            Err(exit::BAD_INPUT)
        }
    }
}

/// Whether `path` could be written, without leaving a file behind: an existing one (or a
/// device such as /dev/stdout) is opened for writing, a new one created and removed.
fn check_writable(path: &std::path::Path) -> io::Result<()> {
    if path.exists() {
        std::fs::OpenOptions::new().write(true).open(path).map(drop)
    } else {
        File::create(path)?;
        std::fs::remove_file(path)
    }
}

/// A run that could not start. A file, path or setting it was given that cannot be used is
/// bad usage (exit 2: nothing ran, and 1 would claim that tasks failed); a refusal of the
/// system (no more processes, descriptors) keeps exit 1, which a cluster may retry elsewhere.
fn pool_error(e: &PoolError) -> i32 {
    report_error(e);
    use io::ErrorKind as K;
    match e {
        PoolError::Io { source, .. }
            if !matches!(
                source.kind(),
                K::NotFound
                    | K::PermissionDenied
                    | K::AlreadyExists
                    | K::AddrInUse
                    | K::InvalidInput
                    | K::IsADirectory
                    | K::NotADirectory
                    | K::ReadOnlyFilesystem
            ) =>
        {
            exit::TASKS_FAILED
        }
        _ => exit::BAD_INPUT,
    }
}

/// The summary, printed. Its words come from [`summary_lines`]; a failed run's last line,
/// from [`next_step`].
fn print_summary(s: &Summary, total: Option<u64>, check_time: Option<std::time::Duration>) {
    for line in summary_lines(s, total, check_time) {
        eprintln!("{line}");
    }
}

/// The summary's lines: what the run did, counted from what it recorded. Its time and rate are
/// the run's; the check of a whole input file before it (a second pass over a big file) is
/// said apart. `total`: the tasks of a checked input file, for what never ran.
fn summary_lines(s: &Summary, total: Option<u64>, check_time: Option<std::time::Duration>) -> Vec<String> {
    let c = &s.counts;
    let secs = s.elapsed.as_secs_f64();
    let mut lines = Vec::new();
    let poisoned = matches!(s.stop, Some(crate::engine::StopReason::Poisoned(_)));
    let mut line = if poisoned {
        // Not "N tasks: N ok": the records are there, but not all of them can be believed.
        format!(
            "bulkhead: {} tasks recorded ({} ok, {} failed, {} quarantined), but the shared state was poisoned",
            c.finished(),
            c.ok,
            c.failed,
            c.quarantined
        )
    } else {
        format!("bulkhead: {} tasks: {} ok, {} failed, {} quarantined", c.finished(), c.ok, c.failed, c.quarantined)
    };
    let previous = s.previous_ok + s.previous_failed + s.previous_quarantined;
    if previous > 0 {
        line.push_str(&format!(" (plus {previous} from earlier runs)"));
    }
    let crashes = c.crashes_total();
    if crashes > 0 {
        let causes: Vec<String> = c.crashes.iter().map(|(k, v)| format!("{v} {k}")).collect();
        line.push_str(&format!("; {crashes} worker crashes ({}), {} restarts", causes.join(", "), c.restarts));
    }
    if c.slots_retired > 0 {
        line.push_str(&format!("; {} workers not started (the system's process limit)", c.slots_retired));
    }
    line.push_str(&format!("; {secs:.2}s ({:.0} tasks/s)", c.finished() as f64 / secs.max(1e-9)));
    if let Some(t) = check_time.filter(|t| t.as_secs_f64() >= 0.01) {
        line.push_str(&format!(", after {:.2}s checking the input", t.as_secs_f64()));
    }
    lines.push(line);
    let never_ran = |finished: u64| match total {
        Some(t) => format!("{} never ran", t.saturating_sub(finished + previous)),
        None => "the rest of the input was not read".to_string(),
    };
    match &s.stop {
        Some(crate::engine::StopReason::GaveUp(msg)) => {
            lines.push(format!("bulkhead: {msg}; finished results are kept, --resume continues"))
        }
        Some(crate::engine::StopReason::BadInput(msg)) => {
            lines.push(format!("bulkhead: error: {}; nothing after it was run", worker::ErrorChain(&**msg)))
        }
        Some(crate::engine::StopReason::Interrupted(_)) => {
            lines.push("bulkhead: interrupted; unfinished tasks have no record, --resume runs them".to_string())
        }
        Some(crate::engine::StopReason::Poisoned(_)) => {
            if let Some(t) = &s.tally {
                lines.push(format!(
                    "bulkhead: {} ran before the poison (the tally counts them: trustworthy), {} ran after it \
                     in a process whose shared state was corrupt (recorded, not counted: do not trust them), {}",
                    t.trusted,
                    t.untrusted,
                    never_ran(c.finished())
                ));
                lines.push(format!(
                    "bulkhead: the shared tally {} (finished {}, ok {}, failed {}); {} later updates refused",
                    if t.consistent() { "adds up" } else { "is inconsistent" },
                    t.tally.finished,
                    t.tally.ok,
                    t.tally.failed,
                    t.refused
                ));
            }
        }
        _ => {}
    }
    if let Some(e) = &s.output_error
        && !s.broken_pipe
    {
        lines.push(format!("bulkhead: error: {e}"));
    }
    lines
}

/// A failed run's last line: what to do next, chosen by how the run ended (its exit code and
/// stop reason). `None` for a run that needs nothing done. A new ending gets its arm here.
fn next_step(code: i32, s: &Summary, results: Option<&std::path::Path>) -> Option<String> {
    use crate::engine::StopReason as R;
    let records = results.map_or("stdout (the results)".to_string(), |p| p.display().to_string());
    let line = match (code, &s.stop) {
        (exit::OK, _) | (141, _) => return None,
        (_, Some(R::Poisoned(_))) => "next: rerun in process mode (--mode process): a panicking task there \
             takes down only its own worker, and its retry runs in a fresh one"
            .to_string(),
        (exit::BAD_INPUT, Some(R::BadInput(e))) => format!(
            "next: fix {} of the input and run again{}",
            e.place,
            if results.is_some() { " with --resume (the tasks before it are recorded)" } else { "" }
        ),
        (exit::GAVE_UP, Some(R::GaveUp(_))) => format!(
            "next: the causes are in the crashes above and in the records in {records}; \
             if the workers died of the load, not of a bug, allow more with --max-restarts N/DUR, \
             then run again{}",
            if results.is_some() { " with --resume" } else { "" }
        ),
        (_, Some(R::Interrupted(_))) => match results {
            Some(p) => {
                format!("next: run the same command with --resume to continue (the records are in {})", p.display())
            }
            None => "next: run again with --results FILE to make the run resumable; this one wrote to stdout, \
                     so rerun the tasks that have no record there"
                .to_string(),
        },
        (exit::OUTPUT_FAILED, _) => format!(
            "next: the output could not be written ({}): free the space or fix the path, then run again{}",
            s.output_error.as_deref().unwrap_or("see above"),
            if results.is_some() { " with --resume" } else { "" }
        ),
        (exit::TASKS_FAILED, _) if s.output_error.is_some() && !s.broken_pipe => format!(
            "next: the output could not be written ({}): fix it, then run again{}",
            s.output_error.as_deref().unwrap_or_default(),
            if results.is_some() { " with --resume" } else { "" }
        ),
        (exit::TASKS_FAILED, _) => {
            let bad = s.counts.failed + s.counts.quarantined + s.previous_failed + s.previous_quarantined;
            let named = if s.first_bad.is_empty() {
                String::new()
            } else {
                let more = if bad as usize > s.first_bad.len() { ", ..." } else { "" };
                format!(" ({}{more})", s.first_bad.join(", "))
            };
            let where_ = match results {
                Some(p) => format!("in {}: grep -v '\"status\":\"ok\"' {}", p.display(), p.display()),
                None => "on stdout, with the others".to_string(),
            };
            let mut line =
                format!("next: {bad} task(s) did not end ok{named}; their records (error, crashes) are {where_}");
            if s.counts.failed + s.previous_failed > 0 {
                line.push_str("; --retry-failed retries a failure (not only a crash) within --attempts");
            }
            if s.counts.quarantined + s.previous_quarantined > 0 {
                line.push_str("; a quarantined task crashed its worker on every attempt: its crashes say how");
            }
            line
        }
        _ => return None,
    };
    Some(format!("bulkhead: {line}"))
}
