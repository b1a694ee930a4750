//! `bulkhead run`: a batch from JSONL or from lines with `--cmd`, through the library's pool.

use std::fs::File;
use std::io::{self, IsTerminal};
use std::os::fd::AsFd;
use std::path::PathBuf;

use shared::exit;
use worker::builtin::Builtin;

use super::{ModeArg, OutputArg, ProgressArg, RunArgs, report_error};
use crate::engine::Mode;
use crate::engine::inject::Inject;
use crate::input::source::TaskSource;
use crate::input::sources::Sources;
use crate::input::{Format, LineSource};
use crate::output::commands::CommandOutput;
use crate::output::failure::OutputFailure;
use crate::output::files::Role;
use crate::output::journal::ResultsTarget;
use crate::output::rundir::RunDir;
use crate::pool::{Pool, PoolBuilder, PoolError, Run, Summary};

enum Input {
    /// A file: a regular one is checked whole before the run.
    File(File, String),
    /// Standard input that is not a regular file (a pipe, a terminal).
    Stream,
    /// GNU parallel's input sources (`:::`, `::::`).
    Sources(crate::input::sources::Rows),
}

/// Whether a word starts GNU parallel's input sources.
fn is_source_marker(w: &std::ffi::OsStr) -> bool {
    [":::", "::::", ":::+", "::::+"].iter().any(|m| w == *m)
}

/// The task kinds, for the hint on a file that is no JSONL.
const NOT_JSONL_HINT: &str = "hint: a file of plain lines (names, arguments) runs with --cmd TEMPLATE, \
     e.g. --cmd 'gzip -9f {}'; task files are JSON Lines ({\"kind\":\"shell\",\"cmd\":\"...\"}, see --help)";

pub(super) fn run(mut args: RunArgs) -> i32 {
    let plan = match Plan::new(&mut args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let (setup, commands, pool) = match command_pool(&args, plan.shard, plan.mode, plan.total) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let (total, check_time) = (plan.total, plan.check_time);
    let source = plan.into_source();
    if args.dry_run {
        return dry_run(&pool, source);
    }
    let run = match pool.run_source(source) {
        Ok(r) => r,
        Err(e) => return pool_error(&e),
    };
    let title = match &args.tasks {
        Some(p) => format!("bulkhead run {}", p.display()),
        None => "bulkhead run".to_string(),
    };
    show_run(run, &args, &setup, &commands, total, check_time, &title)
}

/// What `run` is to do, made from its flags and checked before anything runs: the shard,
/// the input opened (a regular file checked whole) and what stdout is.
struct Plan {
    shard: Option<(u32, u32)>,
    format: Format,
    input: Input,
    /// A regular file's whole check, with the jobs it parsed first.
    checked: Option<crate::input::Checked>,
    /// The tasks to run, where the input says before the run: a checked file, input sources.
    total: Option<u64>,
    /// How long the check of a whole file took.
    check_time: Option<std::time::Duration>,
    mode: OutputArg,
}

impl Plan {
    /// Checks `args` and opens the input; a problem is said on stderr, with its exit code.
    fn new(args: &mut RunArgs) -> Result<Self, i32> {
        let shard = resolve_shard(args)?;
        let sources = input_sources(args)?;
        let tasks = args.tasks.as_deref().filter(|p| p.as_os_str() != "-");
        check_outputs(args, input_path(tasks).as_slice())?;
        let format = Format::new(args.cmd.as_deref(), args.colsep.as_deref()).map_err(|e| {
            report_error(&e);
            exit::BAD_INPUT
        })?;
        let input = match sources {
            Some(s) => Input::Sources(s.rows(args.link)),
            None => Input::open(tasks)?,
        };
        // A regular file is checked whole before any task runs; a pipe is checked as it streams.
        let check_started = std::time::Instant::now();
        let checked = match &input {
            Input::File(f, name) => precheck(f, name, &format, shard)?,
            Input::Stream | Input::Sources(_) => None,
        };
        if matches!(input, Input::Stream) && io::stdin().is_terminal() {
            // As `sort` or `cat` would, but a first-time user may not know it is waiting.
            eprintln!(
                "bulkhead: reading tasks from standard input (a terminal), one per line; \
                 end with Ctrl-D, or give a task file"
            );
        }
        let sources_total = match &input {
            Input::Sources(rows) => input_total(rows, shard),
            _ => None,
        };
        Ok(Plan {
            shard,
            total: checked.as_ref().map(|c| c.tasks).or(sources_total),
            check_time: checked.as_ref().map(|_| check_started.elapsed()),
            format,
            input,
            checked,
            mode: output_mode(args),
        })
    }

    /// The task source the pool starts with its admission: the input, read by the reader
    /// thread.
    fn into_source<'a>(self) -> impl FnOnce(crate::input::source::Admission) -> io::Result<Box<dyn TaskSource + 'a>> {
        let Plan { format, input, checked, .. } = self;
        move |mut admission| {
            // A --cmd task's id is unique by construction (a repeat is `#k`).
            if matches!(format, Format::Cmd(_)) {
                admission.check_duplicates = false;
            }
            let source: Box<dyn TaskSource + 'a> = match (input, checked) {
                (Input::Sources(rows), _) => Box::new(LineSource::spawn_rows(rows, format, admission)?),
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
        }
    }
}

/// What a run's stdout is when `--output` does not say: a command run's is its commands' own
/// output, and its records go only to --results; a JSONL run's is its records, as
/// --output records makes any run's.
pub(super) fn output_mode(args: &RunArgs) -> OutputArg {
    args.output.unwrap_or(if args.cmd.is_some() { OutputArg::Commands } else { OutputArg::Records })
}

/// GNU parallel's input sources (`:::`, `::::`), when the run has them; refused (exit 2)
/// after a task file, without --cmd, or malformed.
fn input_sources(args: &mut RunArgs) -> Result<Option<Sources>, i32> {
    // `run --cmd T ::: a b`: clap takes the marker for the task file.
    if let Some(t) = args.tasks.take_if(|t| is_source_marker(t.as_os_str())) {
        args.sources.insert(0, t.into_os_string());
    }
    match args.sources.first() {
        None => Ok(None),
        Some(w) if !is_source_marker(w) => {
            eprintln!(
                "bulkhead: error: unexpected argument '{}' after the task file (input sources start with ::: or ::::)",
                w.to_string_lossy()
            );
            Err(exit::BAD_INPUT)
        }
        Some(_) if args.cmd.is_none() => {
            eprintln!("bulkhead: error: input sources (::: and ::::) need --cmd TEMPLATE");
            Err(exit::BAD_INPUT)
        }
        Some(_) if args.tasks.is_some() => {
            eprintln!(
                "bulkhead: error: give a task file or input sources (::: and ::::), not both; \
                 ':::: FILE' makes the file a source"
            );
            Err(exit::BAD_INPUT)
        }
        Some(_) => Sources::parse(&args.sources).map(Some).map_err(|e| {
            report_error(&e);
            exit::BAD_INPUT
        }),
    }
}

/// The file the tasks are read from, to keep the outputs off it: the task file, or standard
/// input where it is one (`bulkhead run < tasks.jsonl`).
fn input_path(tasks: Option<&std::path::Path>) -> Option<&std::path::Path> {
    let stdin = std::path::Path::new("/dev/stdin");
    match tasks {
        Some(p) => Some(p),
        None if std::fs::metadata(stdin).is_ok_and(|m| m.is_file()) => Some(stdin),
        None => None,
    }
}

impl Input {
    /// The task file, or standard input (`None`); one that cannot be opened is refused (exit 2).
    fn open(tasks: Option<&std::path::Path>) -> Result<Self, i32> {
        match tasks {
            Some(path) => match File::open(path) {
                Ok(f) => Ok(Input::File(f, path.display().to_string())),
                Err(e) => {
                    eprintln!("bulkhead: error: cannot open {}: {e}", path.display());
                    Err(exit::BAD_INPUT)
                }
            },
            None => {
                let stdin = File::from(io::stdin().as_fd().try_clone_to_owned().expect("stdin is open"));
                if stdin.metadata().is_ok_and(|m| m.is_file()) {
                    Ok(Input::File(stdin, "standard input".into()))
                } else {
                    Ok(Input::Stream)
                }
            }
        }
    }
}

/// A started run of built-in tasks to its end as `run` and `--pipepart` show it: the
/// timeline recorded, the control socket said, each command's output shown, the summary,
/// the timeline written; the exit code. `total` and `check_time` are the summary's.
pub(super) fn show_run(
    run: Run<'_, Builtin>,
    args: &RunArgs,
    setup: &PoolSetup,
    commands: &SharedOutput,
    total: Option<u64>,
    check_time: Option<std::time::Duration>,
    title: &str,
) -> i32 {
    let (run, timeline) = attach_timeline(run, args);
    setup.announce();
    let mut summary = finish_showing(run, commands);
    print_summary(&summary, total, check_time);
    write_timeline(args, timeline, title, &mut summary);
    finish(&summary, args.results.as_deref(), output_mode(args) == OutputArg::Records)
}

/// The pool of a run of built-in tasks whose stdout is `mode`'s (records, or the commands'
/// output), with its setup and the commands' output it shows: `run` and `--pipepart` alike.
pub(super) fn command_pool(
    args: &RunArgs,
    shard: Option<(u32, u32)>,
    mode: OutputArg,
    total: Option<u64>,
) -> Result<(PoolSetup, SharedOutput, Pool<Builtin>), i32> {
    let records = (mode == OutputArg::Records).then_some(ResultsTarget::Stdout);
    let setup = PoolSetup::new(args, shard, records, total)?;
    let (commands, handler) = command_output(mode, args)?;
    let pool = setup.build(handler)?;
    Ok((setup, commands, pool))
}

/// The commands' output of a run whose stdout is `mode`'s, shared with the run's callback,
/// and the handler whose commands write into it. A spool directory that cannot be made is
/// reported here (exit 5).
pub(super) fn command_output(mode: OutputArg, args: &RunArgs) -> Result<(SharedOutput, Builtin), i32> {
    let commands = match CommandOutput::new(mode == OutputArg::Commands, args.keep_order, args.tag) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bulkhead: error: cannot create a directory for the commands' output: {e}");
            return Err(exit::OUTPUT_FAILED);
        }
    };
    let handler = match commands.spool_dir() {
        Some(dir) => Builtin::spooling(dir),
        None => Builtin::default(),
    };
    Ok((std::sync::Arc::new(std::sync::Mutex::new(commands)), handler))
}

/// The commands' output, as the run's callback and its caller both hold it.
pub(super) type SharedOutput = std::sync::Arc<std::sync::Mutex<CommandOutput>>;

/// Runs `run` to its end showing each concluded task's output through `commands`, and says
/// in the summary a write of it that failed. The summary says how a stopped run ended; its
/// tasks left behind have no record, and --resume runs them. Output that cannot be written
/// stops the run as a signal would.
pub(super) fn finish_showing(run: Run<'_, Builtin>, commands: &SharedOutput) -> Summary {
    fn lock(c: &SharedOutput) -> std::sync::MutexGuard<'_, CommandOutput> {
        c.lock().unwrap_or_else(|e| e.into_inner())
    }
    let shown = commands.clone();
    // Decided once: an ok task that shows nothing then costs no lock.
    let ok_too = lock(commands).shows_ok();
    let run = run.on_concluded(ok_too, move |c| lock(&shown).concluded(c));
    let mut summary = run.finish_unless(|| lock(commands).broken()).unwrap_or_else(|e| *e.summary);
    let mut commands = lock(commands);
    commands.finish();
    match commands.take_failure() {
        Some(e) if e.kind() == io::ErrorKind::BrokenPipe => summary.broken_pipe = true,
        Some(e) => summary.output_failures.push(OutputFailure::Commands { error: std::sync::Arc::new(e) }),
        None => {}
    }
    summary
}

/// `--dry-run`: each command that would run, on its own line; nothing runs.
fn dry_run<'a>(
    pool: &Pool<Builtin>,
    source: impl FnOnce(crate::input::source::Admission) -> io::Result<Box<dyn TaskSource + 'a>>,
) -> i32 {
    use std::io::Write;
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut failed: Option<io::Error> = None;
    let mut n = 0u64;
    let ended = pool.dry_run_source(source, |job| {
        if failed.is_some() {
            return;
        }
        n += 1;
        // A command's exact bytes; `{%}` stays where the job slot goes, as no slot runs it.
        let line = match postcard::from_bytes::<shared::task::BuiltinTask>(job.payload()) {
            Ok(shared::task::BuiltinTask::Shell { cmd }) => cmd.into_bytes(),
            Ok(shared::task::BuiltinTask::ShellParts { parts }) => parts.join(&b"{%}"[..]),
            Ok(t) => format!("{}\t{}", job.id(), t.kind()).into_bytes(),
            Err(_) => job.id().as_bytes().to_vec(),
        };
        if let Err(e) = out.write_all(&line).and_then(|()| out.write_all(b"\n")) {
            failed = Some(e);
        }
    });
    if failed.is_none()
        && let Err(e) = out.flush()
    {
        failed = Some(e);
    }
    match (ended, failed) {
        (Err(e), _) => pool_error(&e),
        (_, Some(e)) if e.kind() == io::ErrorKind::BrokenPipe => exit::BROKEN_PIPE,
        (_, Some(e)) => {
            report_error(&OutputFailure::Commands { error: std::sync::Arc::new(e) });
            exit::OUTPUT_FAILED
        }
        (Ok(Err(e)), None) => {
            eprintln!("bulkhead: error: {}", worker::ErrorChain(&*e));
            exit::BAD_INPUT
        }
        (Ok(Ok(())), None) => {
            eprintln!("bulkhead: dry run: {n} task(s) would run; none ran");
            exit::OK
        }
    }
}

/// How many jobs input sources make, when no shard leaves some to others.
fn input_total(rows: &crate::input::sources::Rows, shard: Option<(u32, u32)>) -> Option<u64> {
    shard.is_none().then_some(rows.total() as u64)
}

/// The end of a run: every lost output said, the exit code, and the line that says what to
/// do next.
pub(super) fn finish(summary: &Summary, results: Option<&std::path::Path>, records_on_stdout: bool) -> i32 {
    for f in &summary.output_failures {
        report_error(f);
    }
    let code = summary.exit_code();
    if let Some(line) = next_step(code, summary, results, records_on_stdout) {
        eprintln!("{line}");
    }
    code
}

/// Resolves the run's shard (from the options or the cluster engine's environment) and puts
/// it into the `{shard}` of file names; a `{shard}` outside a shard is refused (exit 2).
pub(super) fn resolve_shard(args: &mut RunArgs) -> Result<Option<(u32, u32)>, i32> {
    let shard = match crate::cli::shard::resolve(args.shard, args.shards, &|k| std::env::var(k).ok()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bulkhead: error: {e}");
            return Err(exit::BAD_INPUT);
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
        return Err(exit::BAD_INPUT);
    }
    Ok(shard.map(|s| (s.k, s.n)))
}

/// Before anything is opened or runs: no output may overwrite an input or another output,
/// nor be opened through a planted symlink (exit 2).
pub(super) fn check_outputs(args: &RunArgs, inputs: &[&std::path::Path]) -> Result<(), i32> {
    let mut paths: Vec<(Role, &std::path::Path)> = inputs.iter().map(|p| (Role::Input, *p)).collect();
    for (role, p) in [(Role::Results, &args.results), (Role::Events, &args.events), (Role::Report, &args.report)] {
        if let Some(p) = p {
            paths.push((role, p.as_path()));
        }
    }
    crate::output::files::check(&paths).map_err(|e| {
        report_error(&e);
        exit::BAD_INPUT
    })
}

/// A pool configured from the run options, and the control socket it will listen on.
pub(super) struct PoolSetup {
    /// The pool's options.
    builder: PoolBuilder,
    control: PathBuf,
    /// The private directory of the control socket, removed when the run is over.
    _rundir: Option<RunDir>,
}

impl PoolSetup {
    /// Applies every pool option of `args`; `results` is where records go without
    /// `--results` (nowhere when `None`), `total` the tasks the run is to run where known.
    /// Bad options are reported here (exit 2).
    pub(super) fn new(
        args: &RunArgs,
        shard: Option<(u32, u32)>,
        results: Option<ResultsTarget>,
        total: Option<u64>,
    ) -> Result<Self, i32> {
        if args.mode == ModeArg::Thread {
            warn_thread_mode(args);
        }
        let mut builder = batch_options(args, shard, results);
        builder = retry_options(builder, args)?;
        builder = worker_limits(builder, args);
        if let Some(e) = &args.events {
            builder = builder.events(e);
        }
        if let Some(i) = injected_faults(args)? {
            builder = builder.inject(i);
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
        check_output_files(args)?;
        let (control, rundir) = control_socket(args)?;
        builder = builder.control_socket(&control);
        if let Ok(program) = crate::runtime::process::spawn::WorkerProgram::builtin() {
            builder = builder.worker_program(program);
        }
        Ok(Self { builder, control, _rundir: rundir })
    }

    /// The pool of these options, whose tasks `handler` runs; one that cannot be built is
    /// reported (its exit code).
    pub(super) fn build(&self, handler: Builtin) -> Result<Pool<Builtin>, i32> {
        self.builder.clone().build(handler).map_err(|e| pool_error(&e))
    }

    /// Says where `bulkhead status` finds the run: on a terminal, where someone may want to
    /// look; elsewhere only with -v.
    pub(super) fn announce(&self) {
        if io::stderr().is_terminal() {
            eprintln!("bulkhead: control socket {} (bulkhead status)", self.control.display());
        } else {
            log::info!("control socket {} (bulkhead status)", self.control.display());
        }
    }
}

/// Thread mode has no worker process to bound: the options that bound one are not applied,
/// and said so.
fn warn_thread_mode(args: &RunArgs) {
    if args.memory_limit.is_some() {
        eprintln!(
            "bulkhead: warning: --memory-limit bounds worker processes; thread mode has none, so it is not applied"
        );
    }
    if args.address_space_limit.is_some() {
        eprintln!(
            "bulkhead: warning: --address-space-limit bounds worker processes; thread mode has none, so it is not applied"
        );
    }
    if args.threads_per_worker > 1 {
        eprintln!(
            "bulkhead: warning: --threads-per-worker is for worker processes (hybrid); in thread mode -j sets the threads"
        );
    }
}

/// The batch's shape: mode, workers, attempts, restarts, grace, resume, results, halt, shard
/// and timeout.
fn batch_options(args: &RunArgs, shard: Option<(u32, u32)>, results: Option<ResultsTarget>) -> PoolBuilder {
    // The built-in kinds capture their commands' output themselves; what a worker says
    // on its own stderr stays in the debug log, as ever.
    let mut builder = Pool::builder()
        .worker_output(crate::WorkerOutput::Log)
        .mode(if args.mode == ModeArg::Thread { Mode::Thread } else { Mode::Process })
        .attempts(args.attempts)
        .threads_per_worker(args.threads_per_worker)
        .max_restarts(args.max_restarts.0, args.max_restarts.1)
        .grace(args.grace)
        .retry_failed(args.retry_failed)
        .resume(args.resume)
        .handle_signals(true)
        .reap_orphans(true);
    match (&args.results, results) {
        (Some(p), _) => builder = builder.results(ResultsTarget::File(p.clone())),
        (None, Some(r)) => builder = builder.results(r),
        (None, None) => {}
    }
    if let Some(n) = args.workers {
        builder = builder.workers(n);
    }
    if let Some(h) = args.halt {
        builder = builder.halt(h);
    }
    if let Some((k, n)) = shard {
        builder = builder.shard(k, n);
    }
    if let Some(t) = args.timeout {
        if let Some(d) = t.fixed {
            builder = builder.timeout(d);
        }
        if let Some(p) = t.percent {
            builder = builder.timeout_percent(p);
        }
    }
    builder
}

/// Which failures run again: the retry rules and `--resume-failed`. An exit status both to
/// retry and to fail is refused (exit 2).
fn retry_options(builder: PoolBuilder, args: &RunArgs) -> Result<PoolBuilder, i32> {
    if let Some(code) = args.retry_exit.iter().find(|c| args.fail_exit.contains(c)) {
        eprintln!("bulkhead: error: exit status {code} is in both --retry-exit and --fail-exit");
        return Err(exit::BAD_INPUT);
    }
    Ok(builder
        .retry_rules(crate::engine::config::RetryRules {
            by_cause: args.retry.clone().map(|r| r.0).unwrap_or_default(),
            retries: args.retries,
            retry_exit: args.retry_exit.clone(),
            fail_exit: args.fail_exit.clone(),
        })
        .resume_failed(args.resume_failed))
}

/// What bounds a worker: its stall timeout, tasks and memory before it is replaced, bad
/// records skipped, and the limits of a worker process.
fn worker_limits(mut builder: PoolBuilder, args: &RunArgs) -> PoolBuilder {
    if let Some(d) = args.stall_timeout {
        builder = builder.stall_timeout(d);
    }
    if let Some(n) = args.max_tasks_per_worker {
        builder = builder.max_tasks_per_worker(n);
    }
    if let Some(m) = args.max_worker_memory {
        builder = builder.max_worker_memory(m);
    }
    builder = builder.skip_bad_records(args.skip_bad_records);
    // Thread mode has no worker process to bound (a warning said so).
    if args.mode != ModeArg::Thread {
        if let Some(m) = args.address_space_limit {
            builder = builder.address_space_limit(m);
        }
        if let Some(m) = args.memory_limit {
            builder = builder.memory_limit(m);
        }
    }
    builder
}

/// `--inject`, with its seed: a seed not given is drawn and said, so that the run can be
/// repeated. A bad spec is refused (exit 2).
fn injected_faults(args: &RunArgs) -> Result<Option<Inject>, i32> {
    let Some(spec) = &args.inject else { return Ok(None) };
    let seed =
        args.seed.unwrap_or_else(|| shared::hash::mix64(worker::clock::mono_ns() ^ u64::from(std::process::id())));
    match Inject::parse(spec, seed) {
        Ok(i) => {
            if args.seed.is_none() {
                eprintln!("bulkhead: injecting faults {i} with seed {seed} (repeat with --seed {seed})");
            }
            Ok(Some(i))
        }
        Err(e) => {
            eprintln!("bulkhead: error: --inject: {e}");
            Err(exit::BAD_INPUT)
        }
    }
}

/// Before the batch runs: a --report path that cannot be written is refused (exit 2) rather
/// than found after it; a FIFO among the outputs is said, as opening it blocks until
/// something reads it.
fn check_output_files(args: &RunArgs) -> Result<(), i32> {
    // The timeline is built from the events as they happen and written at the end.
    if let Some(path) = &args.report
        && let Err(e) = check_writable(path)
    {
        eprintln!("bulkhead: error: cannot write the report {}: {e}", path.display());
        return Err(exit::BAD_INPUT);
    }
    for (flag, path) in [("--results", &args.results), ("--events", &args.events)] {
        if let Some(p) = path
            && std::fs::metadata(p).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()))
        {
            eprintln!("bulkhead: {flag} {} is a FIFO: waiting for a reader to open it", p.display());
        }
    }
    Ok(())
}

/// Where the control socket listens: `--control`, or a fresh private directory, removed with
/// the returned [`RunDir`] once the run is over.
fn control_socket(args: &RunArgs) -> Result<(PathBuf, Option<RunDir>), i32> {
    match &args.control {
        Some(p) => Ok((p.clone(), None)),
        None => match RunDir::create() {
            Ok(d) => Ok((d.control_socket(), Some(d))),
            Err(e) => {
                eprintln!("bulkhead: error: cannot create a private runtime directory: {e}");
                Err(exit::BAD_INPUT)
            }
        },
    }
}

/// The timeline of `--report`, built from the run's events as they happen.
pub(super) type Timeline = Option<std::sync::Arc<std::sync::Mutex<crate::report::Timeline>>>;

/// With `--report`, records the run's events for the timeline.
pub(super) fn attach_timeline<'a>(run: Run<'a, Builtin>, args: &RunArgs) -> (Run<'a, Builtin>, Timeline) {
    match &args.report {
        Some(_) => {
            // Shared with the run's observer, which a `Send` run requires to be `Send` too.
            let t = std::sync::Arc::new(std::sync::Mutex::new(crate::report::Timeline::new()));
            let seen = t.clone();
            (run.on_event(move |e| seen.lock().unwrap_or_else(|e| e.into_inner()).push(e)), Some(t))
        }
        None => (run, None),
    }
}

/// Writes the `--report` timeline, if asked for, replacing the old one only once the new one
/// is whole; a failure is an output lost, in the summary.
pub(super) fn write_timeline(args: &RunArgs, timeline: Timeline, title: &str, summary: &mut Summary) {
    if let (Some(path), Some(t)) = (&args.report, timeline) {
        match crate::output::files::write_atomically(
            path,
            t.lock().unwrap_or_else(|e| e.into_inner()).to_html(title).as_bytes(),
        ) {
            Ok(()) => eprintln!("bulkhead: timeline written to {}", path.display()),
            Err(e) => summary
                .output_failures
                .push(OutputFailure::Report { path: path.display().to_string(), error: std::sync::Arc::new(e) }),
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
        Err(e) => {
            eprintln!("bulkhead: error: {name}, {}", worker::ErrorChain(&e));
            if matches!(format, Format::Jsonl) && matches!(e.problem, crate::input::error::Problem::NotJson(_)) {
                eprintln!("bulkhead: {NOT_JSONL_HINT}");
            }
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
        _ => exit::BAD_INPUT,
    }
}

/// The summary, printed. Its words come from [`summary_lines`]; a failed run's last line,
/// from [`next_step`].
pub(super) fn print_summary(s: &Summary, total: Option<u64>, check_time: Option<std::time::Duration>) {
    for line in summary_lines(s, total, check_time) {
        eprintln!("{line}");
    }
}

/// The summary's lines: what the run did, counted from what it recorded. Its time and rate are
/// the run's; the check of a whole input file before it (a second pass over a big file) is
/// said apart. `total`: the tasks of a checked input file, for what never ran.
fn summary_lines(s: &Summary, total: Option<u64>, check_time: Option<std::time::Duration>) -> Vec<String> {
    let mut lines = vec![counts_line(s, check_time)];
    lines.extend(stop_lines(s, total));
    lines
}

/// The summary's first line: the tasks by status, the crashes and workers replaced, the time
/// and rate, the records written where they are not the tasks'.
fn counts_line(s: &Summary, check_time: Option<std::time::Duration>) -> String {
    let c = &s.counts;
    let secs = s.elapsed.as_secs_f64();
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
    if c.retired > 0 {
        line.push_str(&format!("; {} workers retired and replaced (recycling, not crashes)", c.retired));
    }
    if c.slots_retired > 0 {
        line.push_str(&format!("; {} workers not started (the system's process limit)", c.slots_retired));
    }
    line.push_str(&format!("; {secs:.2}s ({:.0} tasks/s)", c.finished() as f64 / secs.max(1e-9)));
    if let Some(t) = check_time.filter(|t| t.as_secs_f64() >= 0.01) {
        line.push_str(&format!(", after {:.2}s checking the input", t.as_secs_f64()));
    }
    if let Some(w) = s.records_written.filter(|&w| w != c.finished()) {
        line.push_str(&format!("; {w} record(s) written"));
    }
    line
}

/// The summary's lines after the first: how a stopped run ended, and what of it can be
/// trusted or resumed. `total`: the tasks of a checked input file, for what never ran.
fn stop_lines(s: &Summary, total: Option<u64>) -> Vec<String> {
    let c = &s.counts;
    let mut lines = Vec::new();
    let previous = s.previous_ok + s.previous_failed + s.previous_quarantined;
    let never_ran = |finished: u64| match total {
        Some(t) => format!("{} never ran", t.saturating_sub(finished + previous)),
        None => "the rest of the input was not read".to_string(),
    };
    use crate::engine::StopReason as R;
    // Only a results file still at its path is where --resume looks.
    let kept = if s.resumable {
        "finished results are kept, --resume continues"
    } else {
        "--resume cannot continue from where these results went"
    };
    match &s.stop {
        Some(why @ (R::RestartLimit(_) | R::ProtocolMismatch { .. } | R::NotServed { .. })) => {
            lines.push(format!("bulkhead: {why}; {kept}"))
        }
        Some(why @ R::ResultsWriteFailed { .. }) => {
            let written = s.records_written.unwrap_or(0);
            let why = worker::ErrorChain(why);
            lines.push(format!("bulkhead: error: {why}; the run stopped: {written} record(s) were written, {kept}"))
        }
        Some(R::BadInput(e)) => {
            lines.push(format!("bulkhead: error: {}; nothing after it was run", worker::ErrorChain(&**e)));
            // Only a JSONL line is ever "not JSON": a --cmd line is any bytes.
            if matches!(e.problem, crate::input::error::Problem::NotJson(_)) {
                lines.push(format!("bulkhead: {NOT_JSONL_HINT}"));
            }
        }
        Some(R::Interrupted(_)) if s.resumable => {
            lines.push("bulkhead: interrupted; unfinished tasks have no record, --resume runs them".to_string())
        }
        Some(R::Interrupted(_)) => lines.push("bulkhead: interrupted; unfinished tasks have no record".to_string()),
        Some(why @ R::Halted(_)) => lines.push(format!(
            "bulkhead: {why}; unfinished tasks have no record{}",
            if s.resumable { ", --resume runs them" } else { "" }
        )),
        Some(R::Poisoned(_)) => {
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
        Some(R::Completed) | None => {}
    }
    lines
}

/// A failed run's last line: what to do next, chosen by how the run ended (its exit code and
/// stop reason). `None` for a run that needs nothing done. A new ending gets its arm here.
fn next_step(code: i32, s: &Summary, results: Option<&std::path::Path>, records_on_stdout: bool) -> Option<String> {
    use crate::engine::StopReason as R;
    let records = match (results, records_on_stdout) {
        (Some(p), _) => p.display().to_string(),
        (None, true) => "stdout (the results)".to_string(),
        (None, false) => "the failure lines above (--results FILE keeps the records)".to_string(),
    };
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
        (exit::GAVE_UP, Some(R::RestartLimit(_) | R::ProtocolMismatch { .. } | R::NotServed { .. })) => format!(
            "next: the causes are in the crashes above and in the records in {records}; \
             if the workers died of the load, not of a bug, allow more with --max-restarts N/DUR, \
             then run again{}",
            if results.is_some() { " with --resume" } else { "" }
        ),
        (_, Some(R::Interrupted(_))) => match results {
            Some(p) => {
                format!("next: run the same command with --resume to continue (the records are in {})", p.display())
            }
            None if records_on_stdout => "next: run again with --results FILE to make the run resumable; this one \
                     wrote to stdout, so rerun the tasks that have no record there"
                .to_string(),
            None => {
                "next: run again with --results FILE to make the run resumable (this one kept no records)".to_string()
            }
        },
        // The failure itself, with its path and error, is the line above.
        (exit::OUTPUT_FAILED, _) => format!(
            "next: free the space or fix the path named above, then run again{}",
            if s.resumable { " with --resume" } else { "" }
        ),
        (exit::TASKS_FAILED, _) => {
            let bad = s.counts.failed + s.counts.quarantined + s.previous_failed + s.previous_quarantined;
            let named = if s.first_bad.is_empty() {
                String::new()
            } else {
                let more = if bad as usize > s.first_bad.len() { ", ..." } else { "" };
                format!(" ({}{more})", s.first_bad.join(", "))
            };
            let where_ = match (results, records_on_stdout) {
                (Some(p), _) => format!("in {}: grep -v '\"status\":\"ok\"' {}", p.display(), p.display()),
                (None, true) => "on stdout, with the others".to_string(),
                (None, false) => "not kept: each has its line above; --results FILE keeps them".to_string(),
            };
            let mut line =
                format!("next: {bad} task(s) did not end ok{named}; their records (error, crashes) are {where_}");
            if s.counts.failed + s.previous_failed > 0 {
                line.push_str("; --retries N runs a failing task up to N times");
            }
            if results.is_some() {
                line.push_str("; once fixed, the same command with --resume-failed runs them again");
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
