//! `bulkhead run`: a batch from JSONL or from lines with `--cmd`, through the library's pool.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, IsTerminal};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::rc::Rc;

use shared::exit;
use worker::builtin::Builtin;

use super::{ModeArg, ProgressArg, RunArgs, report_error};
use crate::inject::Inject;
use crate::input::{CmdTemplate, Format, LineSource};
use crate::journal::ResultsTarget;
use crate::pool::{Mode, Pool, PoolBuilder, PoolError, Run, Summary};
use crate::rundir::RunDir;
use crate::source::TaskSource;

enum Input {
    /// A file: a regular one is checked whole before the run.
    File(File, String),
    /// Standard input that is not a regular file (a pipe, a terminal).
    Stream,
}

pub(super) fn run(mut args: RunArgs) -> i32 {
    let shard = match resolve_shard(&mut args) {
        Ok(s) => s,
        Err(code) => return code,
    };
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
    let total = checked.as_ref().map(|c| c.tasks);
    let check_time = checked.as_ref().map(|_| check_started.elapsed());
    let mut setup = match PoolSetup::new(&args, shard, Some(ResultsTarget::Stdout)) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Some(n) = total {
        setup.builder = setup.builder.expected_total(n);
    }
    let pool = match setup.builder.build(Builtin::default()) {
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
    let (run, timeline) = attach_timeline(run, &args);
    eprintln!("bulkhead: control socket {} (bulkhead status)", setup.control.display());
    let summary = run.finish();
    print_summary(&summary, check_time, args.cmd.is_some());
    let title = match &args.tasks {
        Some(p) => format!("bulkhead run {}", p.display()),
        None => "bulkhead run".to_string(),
    };
    write_timeline(&args, timeline, &title);
    summary.exit_code()
}

/// Resolves the run's shard (from the options or the cluster engine's environment) and puts
/// it into the `{shard}` of file names; a `{shard}` outside a shard is refused (exit 2).
pub(super) fn resolve_shard(args: &mut RunArgs) -> Result<Option<(u32, u32)>, i32> {
    let shard = match crate::shard::resolve(args.shard, args.shards, &|k| std::env::var(k).ok()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bulkhead: error: {e}");
            return Err(exit::BAD_INPUT);
        }
    };
    if let Some(s) = &shard {
        eprintln!("bulkhead: shard {}/{} ({})", s.k, s.n, s.source);
        for p in [&mut args.results, &mut args.events, &mut args.report].into_iter().flatten() {
            *p = crate::shard::fill(p, s.k);
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
        return Err(exit::BAD_INPUT);
    }
    Ok(shard.map(|s| (s.k, s.n)))
}

/// A pool configured from the run options, and the control socket it will listen on.
pub(super) struct PoolSetup {
    pub builder: PoolBuilder,
    pub control: PathBuf,
    /// The private directory of the control socket, removed when the run is over.
    _rundir: Option<RunDir>,
}

impl PoolSetup {
    /// Applies every pool option of `args`; `results` is where records go without
    /// `--results` (nowhere when `None`). Bad options are reported here (exit 2).
    pub(super) fn new(args: &RunArgs, shard: Option<(u32, u32)>, results: Option<ResultsTarget>) -> Result<Self, i32> {
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
            .reap_orphans(true);
        builder = match &args.results {
            Some(p) => builder.results(ResultsTarget::File(p.clone())),
            None => match results {
                Some(r) => builder.results(r),
                None => builder,
            },
        };
        if let Some(n) = args.workers {
            builder = builder.workers(n);
        }
        if let Some((k, n)) = shard {
            builder = builder.shard(k, n);
        }
        if let Some(t) = args.timeout {
            builder = builder.timeout(t);
        }
        if let Some(m) = args.memory_limit {
            builder = builder.memory_limit(m);
        }
        if let Some(e) = &args.events {
            builder = builder.events(e);
        }
        if let Some(spec) = &args.inject {
            let seed = args
                .seed
                .unwrap_or_else(|| shared::hash::mix64(worker::clock::mono_ns() ^ u64::from(std::process::id())));
            match Inject::parse(spec, seed) {
                Ok(i) => {
                    if args.seed.is_none() {
                        eprintln!("bulkhead: injecting faults {i} with seed {seed} (repeat with --seed {seed})");
                    }
                    builder = builder.inject(i);
                }
                Err(e) => {
                    eprintln!("bulkhead: error: --inject: {e}");
                    return Err(exit::BAD_INPUT);
                }
            }
        }
        let progress = match args.progress {
            ProgressArg::Always => true,
            ProgressArg::Never => false,
            ProgressArg::Auto => io::stderr().is_terminal(),
        };
        builder = builder.progress(progress);
        // --report: a path that cannot be written is refused before the batch runs rather than
        // after it; the timeline is built from the events as they happen and written at the end.
        if let Some(path) = &args.report
            && let Err(e) = check_writable(path)
        {
            eprintln!("bulkhead: error: cannot write the report {}: {e}", path.display());
            return Err(exit::BAD_INPUT);
        }
        // The control socket lives in a fresh private directory unless a path is given.
        let (control, rundir) = match &args.control {
            Some(p) => (p.clone(), None),
            None => match RunDir::create() {
                Ok(d) => (d.control_socket(), Some(d)),
                Err(e) => {
                    eprintln!("bulkhead: error: cannot create a private runtime directory: {e}");
                    return Err(exit::BAD_INPUT);
                }
            },
        };
        builder = builder.control_socket(&control);
        if let Ok(program) = crate::spawn::WorkerProgram::builtin() {
            builder = builder.worker_program(program);
        }
        Ok(Self { builder, control, _rundir: rundir })
    }
}

/// The timeline of `--report`, built from the run's events as they happen.
pub(super) type Timeline = Option<Rc<RefCell<crate::report::Timeline>>>;

/// With `--report`, records the run's events for the timeline.
pub(super) fn attach_timeline<'a>(run: Run<'a, Builtin>, args: &RunArgs) -> (Run<'a, Builtin>, Timeline) {
    match &args.report {
        Some(_) => {
            let t = Rc::new(RefCell::new(crate::report::Timeline::new()));
            let seen = t.clone();
            (run.on_event(move |e| seen.borrow_mut().push(e)), Some(t))
        }
        None => (run, None),
    }
}

/// Writes the `--report` timeline, if asked for.
pub(super) fn write_timeline(args: &RunArgs, timeline: Timeline, title: &str) {
    if let (Some(path), Some(t)) = (&args.report, timeline) {
        match std::fs::write(path, t.borrow().to_html(title)) {
            Ok(()) => eprintln!("bulkhead: timeline written to {}", path.display()),
            Err(e) => eprintln!("bulkhead: error: cannot write the report {}: {e}", path.display()),
        }
    }
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
        Err((line, msg)) => {
            eprintln!(
                "bulkhead: error: {name}, line {line}: {msg}{}",
                duplicate_hint(&msg, matches!(format, Format::Cmd(_)))
            );
            Err(exit::BAD_INPUT)
        }
    }
}

/// A task's id, when not given, is a hash of its content (with --cmd, of its command), so a
/// repeated line is a repeated task, which a GNU parallel user would not expect to be
/// refused: say why, and how to run both.
fn duplicate_hint(msg: &str, cmd: bool) -> &'static str {
    if !msg.contains("duplicate id") {
        ""
    } else if cmd {
        " (with --cmd, a task's id is a hash of its command: this line repeats an earlier command; \
         put {#} in --cmd to run each line, repeats included)"
    } else if msg.split('\'').nth(1).is_some_and(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())) {
        // The id looks like a content hash: most likely neither line had one.
        " (if these lines have no \"id\": a task without one is named by a hash of its content, so \
         identical lines are one task; give each an \"id\" to run both)"
    } else {
        ""
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
pub(super) fn pool_error(e: &PoolError) -> i32 {
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
        PoolError::InWorker => exit::TASKS_FAILED,
        _ => exit::BAD_INPUT,
    }
}

/// The summary line; its time and rate are the run's, and the check of a whole input file
/// before it (a second pass over a big file) is said apart.
pub(super) fn print_summary(s: &Summary, check_time: Option<std::time::Duration>, cmd: bool) {
    let c = &s.counts;
    let secs = s.elapsed.as_secs_f64();
    let mut line =
        format!("bulkhead: {} tasks: {} ok, {} failed, {} quarantined", c.finished(), c.ok, c.failed, c.quarantined);
    let previous = s.previous_ok + s.previous_failed + s.previous_quarantined;
    if previous > 0 {
        line.push_str(&format!(" (plus {previous} from earlier runs)"));
    }
    let crashes = c.crashes_total();
    if crashes > 0 {
        let causes: Vec<String> = c.crashes.iter().map(|(k, v)| format!("{v} {k}")).collect();
        line.push_str(&format!("; {crashes} worker crashes ({}), {} restarts", causes.join(", "), c.restarts));
    }
    line.push_str(&format!("; {secs:.2}s ({:.0} tasks/s)", c.finished() as f64 / secs.max(1e-9)));
    if let Some(t) = check_time.filter(|t| t.as_secs_f64() >= 0.01) {
        line.push_str(&format!(", after {:.2}s checking the input", t.as_secs_f64()));
    }
    eprintln!("{line}");
    match &s.stop {
        Some(crate::engine::StopReason::GaveUp(msg)) => {
            eprintln!("bulkhead: {msg}; finished results are kept, --resume continues")
        }
        Some(crate::engine::StopReason::BadInput(msg)) => {
            eprintln!("bulkhead: error: {msg}{}; nothing after it was run", duplicate_hint(msg, cmd))
        }
        Some(crate::engine::StopReason::Interrupted(_)) => {
            eprintln!("bulkhead: interrupted; unfinished tasks have no record, --resume runs them")
        }
        Some(crate::engine::StopReason::Poisoned(_)) => {
            if let Some(t) = &s.tally {
                eprintln!(
                    "bulkhead: the shared tally {} (finished {}, ok {}, failed {}); {} later updates refused",
                    if t.consistent() { "adds up" } else { "is inconsistent" },
                    t.tally.finished,
                    t.tally.ok,
                    t.tally.failed,
                    t.refused
                );
            }
        }
        _ => {}
    }
    if let Some(e) = &s.output_error
        && !s.broken_pipe
    {
        eprintln!("bulkhead: error: {e}");
    }
}
