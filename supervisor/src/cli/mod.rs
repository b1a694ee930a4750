//! The `bulkhead` command line: argument parsing and the mapping of each command's outcome
//! to an exit code. The work is in the library.

pub mod compare;
pub mod demo;
mod k8s;
pub mod load;
mod merge;
mod pipepart;
mod run;
mod scan;
pub mod shard;
mod sharded;
mod slurm;
mod status;
pub mod units;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cli::units::{TimeoutArg, parse_duration, parse_rate, parse_size, parse_timeout};

/// Run batches over crash-isolated worker processes.
#[derive(Debug, Parser)]
#[command(name = "bulkhead", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More log output on stderr (-v: info, -vv: debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a batch of tasks (JSONL, or shell commands from lines with --cmd).
    #[command(after_long_help = run_help())]
    Run(Box<RunArgs>),
    /// Search big files with a regex on all cores: count matching lines or a group's values.
    Scan(Box<scan::ScanArgs>),
    /// Fault-injection demos on built-in data; no scenario: the tour.
    Demo {
        /// poison, segv, mutex, hang, freeze, oom, protocol, crash-loop, retry, or tour.
        scenario: Option<String>,
    },
    /// Thread vs process vs hybrid, measured side by side on the same batches.
    Compare {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Smaller batches and shorter waits (seconds instead of a minute).
        #[arg(long)]
        quick: bool,
        /// Workers of the parallel runs [default: available cores].
        #[arg(short = 'j', long = "workers")]
        workers: Option<usize>,
    },
    /// Write a self-contained HTML timeline of a run from its events file.
    Report {
        /// The events JSONL of a run (`run --events`).
        events: PathBuf,
        /// The HTML file to write.
        #[arg(short, long, value_name = "OUT.html", default_value = "report.html")]
        output: PathBuf,
    },
    /// Merge the results files of shards into one, checked against the task list.
    Merge(merge::MergeArgs),
    /// Write (and submit) a Slurm array job that runs a batch as shards.
    Slurm(slurm::SlurmArgs),
    /// Write (and apply) a Kubernetes Indexed Job that runs a batch as shards.
    K8s(k8s::K8sArgs),
    /// Show what a running supervisor is doing.
    Status(StatusArgs),
}

/// Options of `bulkhead run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// JSONL task file (with --cmd: lines of arguments); '-' or absent: standard input.
    pub tasks: Option<PathBuf>,
    /// GNU parallel's input sources instead of a file: '::: ARG...' and ':::: FILE...', every
    /// combination (or paired with --link); needs --cmd.
    #[arg(value_name = "::: ARGS | :::: FILES")]
    pub sources: Vec<std::ffi::OsString>,
    /// Make each input line a shell task, with GNU parallel's replacement strings: '{}' the
    /// line (quoted), '{.}' without extension, '{/}' basename, '{//}' dirname, '{/.}'
    /// basename without extension, '{#}' the job's number, '{%}' its job slot, '{1}' '{2}'
    /// ... the columns (--colsep) or input sources ('{1/}', '{2.}' ... as above); other
    /// braces stay as written; without any, the line is appended.
    #[arg(long, value_name = "TEMPLATE")]
    pub cmd: Option<String>,
    /// With --cmd: one task per line-aligned block of FILE, which the worker feeds to the
    /// command's standard input (GNU parallel's --pipepart); '{#}' is the block number.
    #[arg(long, value_name = "FILE", requires = "cmd", conflicts_with = "tasks")]
    pub pipepart: Option<PathBuf>,
    /// Bytes per --pipepart block (a line belongs to the block holding its first byte)
    /// [default: 16M, less for small files].
    #[arg(long, value_parser = parse_size, value_name = "SIZE", requires = "pipepart")]
    pub block: Option<u64>,
    /// Split each input line into the columns {1}, {2}, ... at this regex (e.g. '\t', ',').
    #[arg(long, value_name = "REGEX", requires = "cmd")]
    pub colsep: Option<String>,
    /// Pair the input sources (the n-th argument of each together) instead of combining them.
    #[arg(long, requires = "cmd")]
    pub link: bool,
    /// Worker processes (threads in thread mode): N, N% of the cores, +N or -N relative to
    /// them [default: available cores].
    #[arg(
        short = 'j',
        long = "workers",
        visible_alias = "jobs",
        visible_short_alias = 'P',
        value_name = "N",
        value_parser = parse_jobs,
        allow_hyphen_values = true
    )]
    pub workers: Option<usize>,
    /// Isolation mode.
    #[arg(long, value_enum, default_value_t = ModeArg::Process)]
    pub mode: ModeArg,
    /// Per-task wall-clock limit (500ms, 2s, 1m); N% of the median run of the tasks that
    /// succeeded so far, once 5 have (300%), with a floor that alone applies before (300%,10s).
    #[arg(long, value_parser = parse_timeout, value_name = "DUR|N%[,DUR]")]
    pub timeout: Option<TimeoutArg>,
    /// Attempts per task before quarantine: its worker's deaths count (crashes, and timeouts
    /// of tasks that are not shell commands).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub attempts: u32,
    /// Attempts by the cause of the worker's death, e.g. panic=1,signal=5,oom=2:x2 (x2: the
    /// next attempt's memory limit doubled); causes: signal, panic, oom, timeout,
    /// unresponsive, protocol, exit. Others get --attempts.
    #[arg(long, value_parser = parse_retry_arg, value_name = "CAUSE=N,...")]
    pub retry: Option<RetryArg>,
    /// Runs in all of a task that failed (a command's non-zero exit or timeout, a handler's
    /// error), as GNU parallel's --retries [default: 1, no retry].
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub retries: u32,
    /// Exit statuses of a command that are retried within --attempts (e.g. 75,143).
    #[arg(long, value_delimiter = ',', value_name = "CODE,...")]
    pub retry_exit: Vec<i32>,
    /// Exit statuses of a command that fail it at once, never retried (e.g. 2).
    #[arg(long, value_delimiter = ',', value_name = "CODE,...")]
    pub fail_exit: Vec<i32>,
    /// Results JSONL, appended and flushed as tasks finish [default: stdout].
    #[arg(long, value_name = "FILE")]
    pub results: Option<PathBuf>,
    /// Skip tasks that already have a final record in --results.
    #[arg(long)]
    pub resume: bool,
    /// As --resume, and run again the tasks whose last record is failed or quarantined;
    /// each new record counts the records it supersedes (`supersedes`).
    #[arg(long)]
    pub resume_failed: bool,
    /// Lifecycle events JSONL.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Write the HTML timeline of the run here at the end.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Resident memory that each worker and every process of its task may use together (512M,
    /// 2G), sampled from /proc; past it the whole tree is killed and the task charged `oom`.
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub memory_limit: Option<u64>,
    /// Kill a worker whose running task has reported no progress for DUR (cause `stalled`,
    /// retried as a crash). The built-in kinds report theirs (bytes scanned, iterations
    /// summed, a shell command's output bytes); a task reporting none stalls after DUR.
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    pub stall_timeout: Option<Duration>,
    /// Recycling: retire each worker after it has run N tasks and start a fresh one (no task
    /// charged, no backoff), to contain a handler that leaks.
    #[arg(long, value_name = "N")]
    pub max_tasks_per_worker: Option<u64>,
    /// Recycling: retire a worker whose resident memory, read between tasks, is above SIZE
    /// (300M, 1G), and start a fresh one (no task charged, no backoff).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub max_worker_memory: Option<u64>,
    /// Address-space limit (RLIMIT_AS) of each worker and each process of its tasks (512M,
    /// 2G): breaks programs that reserve more than they use (a JVM, Go, V8, a large mmap).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub address_space_limit: Option<u64>,
    /// Poison records: after a worker dies on a record its handler reported (`cx.at(i)` in
    /// the library), run the task again skipping it; the record is listed under `skipped`
    /// with its cause. Each skip costs an attempt. Process mode only (refused in thread mode).
    #[arg(long)]
    pub skip_bad_records: bool,
    /// Restart intensity limit: give up (exit 3) above N restarts within DUR.
    #[arg(long, value_parser = parse_rate, default_value = "100/10s", value_name = "N/DUR")]
    pub max_restarts: (u32, Duration),
    /// Random faults, e.g. panic:0.02,segv:0.01,hang:0.005.
    #[arg(long, value_name = "SPEC")]
    pub inject: Option<String>,
    /// Makes --inject reproducible [default: random, printed].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Drain time on SIGINT, SIGTERM, SIGHUP, SIGUSR1/2 before workers are killed.
    #[arg(long, value_parser = parse_duration, default_value = "10s", value_name = "DUR")]
    pub grace: Duration,
    /// Live progress on stderr.
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    pub progress: ProgressArg,
    /// Hybrid: each worker process runs T tasks at once on threads (for waiting-bound work).
    #[arg(long, default_value_t = 1, value_name = "T")]
    pub threads_per_worker: u32,
    /// Control socket for `bulkhead status` [default: in a private directory under
    /// $XDG_RUNTIME_DIR or the temp directory].
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Retry tasks that failed (not only those that crashed), within --attempts.
    #[arg(long)]
    pub retry_failed: bool,
    /// Run only shard K of N (K from 0): the tasks whose id hashes there. Without it, a run
    /// inside a Slurm array takes its shard from SLURM_ARRAY_TASK_ID/COUNT, and inside a
    /// Kubernetes Indexed Job from JOB_COMPLETION_INDEX with --shards. '{shard}' in --results,
    /// --events and --report becomes K.
    #[arg(long, value_parser = crate::cli::shard::parse_shard, value_name = "K/N")]
    pub shard: Option<(u32, u32)>,
    /// Shard count, for engines that give only the index (Kubernetes' JOB_COMPLETION_INDEX).
    #[arg(long, value_name = "N")]
    pub shards: Option<u32>,
    /// What stdout carries: each command's own output (the default with --cmd; records go
    /// only to --results) or the records (the default for JSONL tasks).
    #[arg(long, value_enum, value_name = "WHAT")]
    pub output: Option<OutputArg>,
    /// Print each command's output in input order, not as commands finish (GNU parallel's -k).
    #[arg(short = 'k', long)]
    pub keep_order: bool,
    /// Put each command's input line and a tab before each line of its output (GNU
    /// parallel's --tag).
    #[arg(long)]
    pub tag: bool,
    /// Stop at a rule, as GNU parallel: now|soon,fail=N|N%, success=..., done=... (soon: start
    /// nothing new, let running tasks finish; now: stop them too, uncharged, for --resume).
    #[arg(long, value_parser = crate::engine::halt::Halt::parse, value_name = "WHEN,WHAT=N")]
    pub halt: Option<crate::engine::halt::Halt>,
    /// Print the commands that would run (after --resume and shard filtering), one per line,
    /// and run none; a task that is not a command prints as its id and kind.
    #[arg(long)]
    pub dry_run: bool,
}

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputArg {
    /// Each command's own stdout and stderr, grouped per command.
    Commands,
    /// The results records, one JSON line per task.
    Records,
}

/// `--retry`'s rules (a type of its own: clap would take a `Vec` for repeated flags).
#[derive(Debug, Clone)]
pub struct RetryArg(pub Vec<crate::engine::config::CauseRule>);

fn parse_retry_arg(s: &str) -> Result<RetryArg, crate::engine::config::RetryRuleError> {
    crate::engine::config::parse_retry_rules(s).map(RetryArg)
}

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Worker processes: a crash ends one worker, which is replaced.
    Process,
    /// Threads of this process: a crash ends everything.
    Thread,
}

/// `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressArg {
    /// Only when stderr is a terminal.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// Options of `bulkhead status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The control socket [default: every running batch of this user].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print the raw JSON snapshot.
    #[arg(long)]
    pub json: bool,
}

/// What `run --help` teaches after the options: task kinds and fields, record fields, exit
/// codes (from the one list of them), examples.
fn run_help() -> String {
    let mut codes = String::new();
    for m in shared::exit::CODES.iter().filter(|m| !m.run.is_empty()) {
        let code = match m.codes {
            [one] => one.to_string(),
            _ => "128+N".to_string(),
        };
        codes.push_str(&format!("  {code:<8} {}\n", m.run));
    }
    format!(
        "\
Input: a JSONL file (or standard input), one task object a line:
  {{\"kind\":\"noop\"}}                            does nothing
  {{\"kind\":\"sleep\",\"ms\":50}}                   waits
  {{\"kind\":\"sum_squares\",\"n\":10000000}}        CPU-bound work
  {{\"kind\":\"shell\",\"cmd\":\"gzip -9f a.log\"}}    /bin/sh -c CMD
  {{\"kind\":\"scan\",\"path\":P,\"offset\":O,\"len\":L,\"pattern\":RE}}   regex over a byte range
  Any task may have \"id\" (unique; default: a hash of its content), \"fault\" (panic, abort,
  segv, kill, exit, hang, freeze, oom, stack_overflow, garbage, disconnect) and
  \"fault_attempts\" N.
Or, with --cmd TEMPLATE, each input line (bytes, not only UTF-8) is a shell command as in GNU
  parallel; the k-th repeat of a command runs too, as task HASH#k.

Records (one JSON line per task, on stdout or in --results FILE, the journal of --resume):
  id, status (ok | failed | quarantined), attempts, ms, output (ok), error (failed),
  stdout, stderr (heads of a failed shell task), crashes [{{attempt, pid, cause, ...}}];
  a --cmd task also input, seq (its {{#}}), cmd, and input_b64/cmd_b64 (the exact bytes, in
  base64) where they are not UTF-8. --events FILE has task_started, task_finished, ...
  with the same input, seq and cmd.

Exit codes (the first that applies, in the order 2, 141, 74, 3, signals, 1, 0):
{codes}
Examples:
  find /data -name '*.log' | bulkhead run --cmd 'gzip -9f {{}}' -j 200% --results done.jsonl
      compress every file, two jobs a core, with a journal; again with --resume after a crash
  bulkhead run --cmd 'convert {{}} {{.}}.png' ::: *.jpg
      one job per argument after :::; '{{1}} {{2}}' with several sources (every combination,
      or --link to pair them), or with --colsep REGEX to split lines into columns
  bulkhead run tasks.jsonl -j 4 --timeout 10s --events events.jsonl --report report.html
      a JSONL batch with a time limit per task, its events and an HTML timeline
"
    )
}

/// Splits `bulkhead run ... ::: a b` at its first input-source marker: as in GNU parallel,
/// every word from there on is a source (so `::: -n` is an argument, not a flag).
fn split_sources(mut argv: Vec<std::ffi::OsString>) -> (Vec<std::ffi::OsString>, Vec<std::ffi::OsString>) {
    // The subcommand is the first word that is no flag (`-v` may come before it).
    let command = argv.iter().skip(1).position(|w| !w.as_encoded_bytes().starts_with(b"-")).map(|i| i + 1);
    let Some(run) = command.filter(|&i| argv[i] == "run") else { return (argv, Vec::new()) };
    match argv[run + 1..].iter().position(|w| w == ":::" || w == "::::") {
        Some(i) => {
            let tail = argv.split_off(run + 1 + i);
            (argv, tail)
        }
        None => (argv, Vec::new()),
    }
}

/// `-j`, counted against this machine's cores.
fn parse_jobs(s: &str) -> Result<usize, crate::input::template::JobsError> {
    crate::input::template::parse_jobs(s, std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Runs the command line; returns the exit code.
pub fn main() -> i32 {
    let (argv, sources) = split_sources(std::env::args_os().collect());
    let mut cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { shared::exit::BAD_INPUT } else { 0 };
        }
    };
    if let Command::Run(run) = &mut cli.command {
        run.sources.extend(sources);
    }
    // The demo shows every death in its live view; log lines would repeat them.
    let quiet = matches!(cli.command, Command::Demo { .. });
    let level = match cli.verbose {
        0 if quiet => "error",
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .format_target(false)
        .init();
    if matches!(cli.command, Command::Merge(_) | Command::Status(_) | Command::Report { .. }) {
        // Like any Unix filter, `bulkhead merge ... | head` ends quietly at the closed pipe
        // (exit 141) instead of failing, or panicking in eprintln!. Commands that run pools
        // (run, demo, compare) keep it ignored: they write to sockets of workers that may
        // have died, and handle a closed stdout themselves.
        // SAFETY: setting a signal's disposition to the default is always sound.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cli.command {
        Command::Run(args) if args.pipepart.is_some() => pipepart::pipepart(*args),
        Command::Run(args) => run::run(*args),
        Command::Scan(args) => scan::scan(*args),
        Command::Status(args) => status::status(args),
        Command::Merge(args) => merge::merge(args),
        Command::Slurm(args) => slurm::slurm(args),
        Command::K8s(args) => k8s::k8s(args),
        Command::Report { events, output } => {
            let title = format!("bulkhead run: {}", events.display());
            match crate::report::render_file(&events, &title) {
                Ok(html) => match crate::output::files::write_atomically(&output, html.as_bytes()) {
                    Ok(()) => {
                        eprintln!("bulkhead: wrote {}", output.display());
                        0
                    }
                    Err(e) => {
                        let path = output.display().to_string();
                        report_error(&crate::output::failure::OutputFailure::Report {
                            path,
                            error: std::sync::Arc::new(e),
                        });
                        shared::exit::OUTPUT_FAILED
                    }
                },
                Err(e) => {
                    report_error(&e);
                    shared::exit::BAD_INPUT
                }
            }
        }
        Command::Demo { scenario } => crate::cli::demo::run(scenario.as_deref()),
        Command::Compare { json, quick, workers } => {
            let opts = crate::cli::compare::Options {
                quick,
                workers: workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
            };
            match crate::cli::compare::compare(&opts, |step| eprintln!("bulkhead compare: {step}")) {
                Ok(c) if json => {
                    println!("{}", serde_json::to_string_pretty(&c).expect("serializes"));
                    0
                }
                Ok(c) => {
                    print!("{}", crate::cli::compare::table(&c));
                    0
                }
                Err(e) => {
                    eprintln!("bulkhead: error: compare: {}", worker::ErrorChain(&e));
                    1
                }
            }
        }
    }
}

/// Prints an error with its chain of causes, as `bulkhead: error: a: b: c`.
pub fn report_error(e: &dyn std::error::Error) {
    eprintln!("bulkhead: error: {}", worker::ErrorChain(e));
}
