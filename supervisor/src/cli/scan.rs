//! `bulkhead scan`: a regex over big files in one command. It plans byte ranges of each
//! file, runs them as ordinary `scan` tasks through the pool (so every option of `run`
//! applies: workers, timeouts, memory limit, injected faults, results with resume, events,
//! report, shards), merges the one final result of each range, and prints the answer.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use clap::{ArgMatches, Args, FromArgMatches};
use serde::Serialize;
use shared::exit;
use shared::task::{BuiltinOutput, BuiltinTask};
use worker::builtin::{Builtin, MAX_MAX_LINE, Pattern};

use super::RunArgs;
use super::run::{PoolSetup, attach_timeline, pool_error, print_summary, resolve_shard, write_timeline};
use crate::cli::units::parse_size;
use crate::pool::Run;
use crate::{Status, TaskSpec};

/// Ranges are this long unless `--chunk` says otherwise, or the file is small: 16 MiB
/// ranges keep a 1 GiB file in 64 tasks (a few ms of dispatch) with work for every worker.
const DEFAULT_CHUNK: u64 = 16 << 20;

/// With `--lines`, a range returns its matching lines in one result, which must fit a
/// frame: ranges are at most this long.
const LINES_CHUNK: u64 = 8 << 20;

/// Options of `bulkhead scan`.
#[derive(Debug, Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct ScanArgs {
    /// The files to search (regular files: their size plans the ranges).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The regex (Rust `regex` syntax), matched against each line without its newline.
    #[arg(short = 'e', long, value_name = "RE")]
    pub pattern: String,
    /// Count the values of this named group, `(?P<NAME>...)` [default: the first group].
    #[arg(short = 'g', long, value_name = "NAME")]
    pub group: Option<String>,
    /// Count matching lines only, even when the pattern has a group (faster).
    #[arg(short = 'c', long, conflicts_with_all = ["group", "lines"])]
    pub count: bool,
    /// Case-insensitive.
    #[arg(short = 'i', long)]
    pub ignore_case: bool,
    /// Print the matching lines, in file order ('FILE:' before each with several files).
    #[arg(long)]
    pub lines: bool,
    /// Show the N most frequent values; the rest are one row.
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    /// Print the answer as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Bytes per range (task) [default: 16M, less for small files; at most 8M with --lines].
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub chunk: Option<u64>,
    /// Longer lines are counted as long and searched in their first SIZE bytes only.
    #[arg(long, value_parser = parse_size, default_value = "1M", value_name = "SIZE")]
    pub max_line: u64,
    #[command(flatten)]
    pub run: RunOptions,
}

const AFTER_HELP: &str = "\
Output: with a capture group (the first, or --group NAME), a table of the group's values \
sorted by count: value, count, share of the matching lines; then the total. Without a group \
(or with --count), the number of matching lines (per file, then the total, for several \
files). --lines prints the matching lines instead, the counts going to stderr. --json prints \
{\"matched_lines\", \"long_lines\", \"values\": [{\"value\", \"count\", \"share\"}], \"others\", \
\"no_value\", \"files\": [{\"path\", \"bytes\", \"ranges\", \"matched_lines\"}], \"ranges\": {\"total\", \
\"ran\", \"resumed\", \"failed\"}}.

Each range is a `scan` task: {\"kind\":\"scan\",\"path\",\"offset\",\"len\",\"pattern\"}; a line \
belongs to the range holding its first byte, so the ranges count every line once. Its record \
(in --results) has output {\"matched_lines\": N, \"counts\": {VALUE: N}, \"long_lines\": N}, \
and \"lines\" with --lines. A range that crashes its worker is retried; only its one final \
result is counted, so the totals are exact. If a range fails or is quarantined the totals \
are incomplete: they are printed, marked so, and the exit status is 1.

Exit: 0 all ranges counted, 1 some failed, 2 bad usage, 74 the answer could not be written, \
and the codes of `run` for signals and giving up (then --results FILE --resume continues).";

/// The pool options of `run`, for `scan`: its task file and `--cmd` are not scan's.
#[derive(Debug)]
pub struct RunOptions(pub RunArgs);

impl FromArgMatches for RunOptions {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        RunArgs::from_arg_matches(m).map(Self)
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(m)
    }
}

impl Args for RunOptions {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        Self::adapt(RunArgs::augment_args(cmd))
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::adapt(RunArgs::augment_args_for_update(cmd))
    }
}

impl RunOptions {
    /// The same options as `run`, one parser for both; `run`'s task file becomes a hidden
    /// option (the files here are what is searched), `--cmd` is hidden and refused.
    fn adapt(cmd: clap::Command) -> clap::Command {
        cmd.mut_arg("tasks", |a| a.long("tasks").hide(true))
            .mut_arg("sources", |a| a.long("sources").hide(true))
            .mut_arg("cmd", |a| a.hide(true))
            .mut_arg("colsep", |a| a.hide(true))
            .mut_arg("link", |a| a.hide(true))
            .mut_arg("output", |a| a.hide(true))
            .mut_arg("keep_order", |a| a.hide(true))
            .mut_arg("tag", |a| a.hide(true))
            .mut_arg("dry_run", |a| a.hide(true))
            .mut_arg("pipepart", |a| a.hide(true))
            .mut_arg("block", |a| a.hide(true))
            .mut_arg("results", |a| {
                a.help(
                "Results JSONL of the ranges, appended as they finish: the journal --resume continues [default: none]",
            )
            })
    }
}

/// One planned range.
struct Range {
    file: usize,
    offset: u64,
    id: String,
}

/// A file to search.
struct Planned {
    shown: String,
    bytes: u64,
    ranges: u64,
    matched_lines: u64,
}

/// The merged answer.
#[derive(Default)]
struct Totals {
    matched_lines: u64,
    long_lines: u64,
    counts: HashMap<String, u64>,
    resumed: u64,
    ran: u64,
    failed: Vec<String>,
}

pub(super) fn scan(args: ScanArgs) -> i32 {
    scan_files(args).unwrap_or_else(|code| code)
}

/// `scan`'s steps: its flags checked, the ranges planned, the earlier run's results read
/// on resume, the ranges run and counted, the answer printed. `Err` is a refusal's exit
/// code, said on stderr.
fn scan_files(args: ScanArgs) -> Result<i32, i32> {
    refuse_run_flags(&args.run.0)?;
    let search = Search::new(&args)?;
    let mut run = args.run.0;
    let shard = resolve_shard(&mut run)?;
    let workers = run.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let (mut scan, tasks) = Scan::plan(&args.files, &search, workers)?;
    // On resume the ranges already done are skipped by the pool; their results are in the
    // results file, read here.
    if (run.resume || run.resume_failed)
        && let Some(path) = &run.results
        && let Err(e) = scan.read_done(path, run.resume_failed)
    {
        eprintln!("bulkhead: error: cannot read {} to resume: {e}", path.display());
        return Err(exit::BAD_INPUT);
    }
    let setup = PoolSetup::new(&run, shard, None, Some(tasks.len() as u64))?;
    let pool = setup.build(Builtin::default())?;
    let started = pool.run(tasks).map_err(|e| pool_error(&e))?;
    let (mut started, timeline) = attach_timeline(started, &run);
    let write_error = scan.count_run(&mut started);
    let mut summary = started.summary();
    print_summary(&summary, None, None);
    write_timeline(&run, timeline, &format!("bulkhead scan {}", scan.planned[0].shown), &mut summary);
    // A shard runs the ranges whose id hashes to it: its totals are its share.
    let expected = match shard {
        Some((k, n)) => scan.ranges.iter().filter(|r| shared::hash::shard_of(&r.id, n) == k).count() as u64,
        None => scan.ranges.len() as u64,
    };
    let printed = scan.print_answer(&search, expected, args.top, args.json);
    if let Some(e) = write_error.or(printed.err()) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            return Ok(141);
        }
        eprintln!("bulkhead: error: cannot write the answer to standard output: {e}");
        return Ok(exit::OUTPUT_FAILED);
    }
    scan.say_notes(search.max_line, expected, shard);
    Ok(match summary.exit_code() {
        exit::OK if !scan.totals.failed.is_empty() => exit::TASKS_FAILED,
        code => code,
    })
}

/// The flags of `run` that are not scan's are refused (exit 2).
fn refuse_run_flags(run: &RunArgs) -> Result<(), i32> {
    if run.tasks.is_some() || run.cmd.is_some() {
        eprintln!("bulkhead: error: scan takes files to search, not a task file or --cmd (those are for `run`)");
        return Err(exit::BAD_INPUT);
    }
    if let Some(flag) = [
        (run.output.is_some(), "--output"),
        (run.keep_order, "--keep-order"),
        (run.tag, "--tag"),
        (run.dry_run, "--dry-run"),
    ]
    .into_iter()
    .find_map(|(given, flag)| given.then_some(flag))
    {
        eprintln!("bulkhead: error: {flag} is for the commands of `run --cmd`; scan prints its counts");
        return Err(exit::BAD_INPUT);
    }
    Ok(())
}

/// What each range searches for, checked.
struct Search {
    /// The regex as the tasks carry it (`(?i)` in front with `--ignore-case`).
    pattern: String,
    /// The counted group, as the tasks name it.
    group: Option<String>,
    /// Whether a group's values are counted: counting lines alone skips captures.
    grouped: bool,
    lines: bool,
    chunk: Option<u64>,
    max_line: u64,
}

impl Search {
    /// `--max-line`, `--chunk` and the pattern, checked (exit 2).
    fn new(args: &ScanArgs) -> Result<Self, i32> {
        let max_line = args.max_line;
        if max_line == 0 || max_line > MAX_MAX_LINE {
            eprintln!("bulkhead: error: --max-line must be 1 to {}M, not {max_line} bytes", MAX_MAX_LINE >> 20);
            return Err(exit::BAD_INPUT);
        }
        if args.chunk == Some(0) {
            eprintln!("bulkhead: error: --chunk must be at least 1 byte");
            return Err(exit::BAD_INPUT);
        }
        let pattern = if args.ignore_case { format!("(?i){}", args.pattern) } else { args.pattern.clone() };
        let compiled = Pattern::new(&pattern, args.group.as_deref()).map_err(|e| {
            eprintln!("bulkhead: error: --pattern: {e}");
            exit::BAD_INPUT
        })?;
        let grouped = !args.count && compiled.counts_group();
        Ok(Search {
            pattern,
            group: if grouped { args.group.clone() } else { Some(shared::task::SCAN_LINES_ONLY.to_string()) },
            grouped,
            lines: args.lines,
            chunk: args.chunk,
            max_line,
        })
    }
}

/// The ranges of a scan and what their results add up to so far.
struct Scan {
    planned: Vec<Planned>,
    ranges: Vec<Range>,
    /// Each range's place in `ranges`, by its task's id.
    index: HashMap<String, usize>,
    totals: Totals,
    out: LineWriter,
}

impl Scan {
    /// Plans the ranges of `files` (regular files, each once) for `workers`, and their tasks.
    fn plan(files: &[PathBuf], search: &Search, workers: usize) -> Result<(Self, Vec<TaskSpec<BuiltinTask>>), i32> {
        let mut planned = Vec::new();
        let mut ranges = Vec::new();
        let mut tasks = Vec::new();
        let mut planned_ids = HashMap::new();
        for path in files {
            let meta = regular_file(path, "scan plans ranges", "a `scan` task with an explicit len in `bulkhead run`")?;
            if let Some(first) = planned_ids.insert((meta.dev(), meta.ino()), path) {
                eprintln!(
                    "bulkhead: error: {} is {} again: each file is searched once",
                    path.display(),
                    first.display()
                );
                return Err(exit::BAD_INPUT);
            }
            let bytes = meta.len();
            let len = plan_chunk(search.chunk, bytes, workers, search.lines);
            let file = planned.len();
            let mut n = 0;
            for offset in offsets(bytes, len) {
                let task = BuiltinTask::Scan {
                    path: path.to_string_lossy().into_owned(),
                    offset,
                    len,
                    pattern: search.pattern.clone(),
                    group: search.group.clone(),
                    lines: search.lines,
                    max_line: Some(search.max_line),
                };
                let id = range_id("scan", &task, &meta, u64::from(search.grouped));
                ranges.push(Range { file, offset, id: id.clone() });
                tasks.push(TaskSpec::with_id(id, task));
                n += 1;
            }
            planned.push(Planned { shown: path.display().to_string(), bytes, ranges: n, matched_lines: 0 });
        }
        let index = ranges.iter().enumerate().map(|(i, r)| (r.id.clone(), i)).collect();
        let out = LineWriter::new(search.lines, planned.len() > 1, ranges.len());
        Ok((Scan { planned, ranges, index, totals: Totals::default(), out }, tasks))
    }

    /// Counts each range's result as the run finishes it, printing `--lines` in file order;
    /// the first failure to write them, if any. A stop ends the iteration with its error;
    /// the summary and the completeness check say what it left undone.
    fn count_run(&mut self, run: &mut Run<'_, Builtin>) -> Option<io::Error> {
        let mut write_error = None;
        for r in run.by_ref().filter_map(Result::ok) {
            let Some(&i) = self.index.get(&r.id) else { continue };
            self.totals.ran += 1;
            self.count(i, r.status, r.output, r.error, "");
            if let Err(e) = self.out.flush_ready(&self.planned, &self.ranges) {
                write_error.get_or_insert(e);
            }
        }
        if let Err(e) = self.out.out.flush() {
            write_error.get_or_insert(e);
        }
        write_error
    }

    /// Counts range `i`'s final result: an ok one's output is added; any other is a range
    /// failed, said on stderr, its reason followed by `when`.
    fn count(&mut self, i: usize, status: Status, output: Option<BuiltinOutput>, error: Option<String>, when: &str) {
        match (status, output) {
            (Status::Ok, Some(o)) => self.add(i, o),
            (status, _) => {
                let why = error.unwrap_or_else(|| status.as_str().to_string());
                let range = &self.ranges[i];
                let what = format!("{} from byte {}: {why}{when}", self.planned[range.file].shown, range.offset);
                eprintln!("bulkhead: error: range {what}");
                self.totals.failed.push(what);
                self.out.skip(i);
            }
        }
    }

    /// Adds range `i`'s output.
    fn add(&mut self, i: usize, o: BuiltinOutput) {
        if let BuiltinOutput::Scan { matched_lines, counts, long_lines, lines } = o {
            let file = &mut self.planned[self.ranges[i].file];
            self.totals.matched_lines += matched_lines;
            self.totals.long_lines += long_lines;
            file.matched_lines += matched_lines;
            for (k, v) in counts {
                *self.totals.counts.entry(k).or_insert(0) += v;
            }
            self.out.done(i, lines.unwrap_or_default());
        } else {
            self.out.skip(i);
        }
    }

    /// Prints the answer: the count of `--lines` (on stderr, the lines being stdout), the
    /// JSON object of `--json`, or the table. `expected`: the ranges this run answers for.
    fn print_answer(&self, search: &Search, expected: u64, top: Option<usize>, json: bool) -> io::Result<()> {
        let answer = Answer::new(&self.totals, &self.planned, expected, top, search.grouped);
        if search.lines {
            eprintln!("bulkhead: {} matching lines", fmt_int(self.totals.matched_lines));
            Ok(())
        } else if json {
            print_json(&answer)
        } else {
            print_table(&answer, &self.planned, search.grouped)
        }
    }

    /// What the answer leaves out, said after it: lines searched in part, ranges not
    /// counted, the share a shard's totals are.
    fn say_notes(&self, max_line: u64, expected: u64, shard: Option<(u32, u32)>) {
        let t = &self.totals;
        let complete = t.resumed + t.ran == expected;
        if t.long_lines > 0 {
            eprintln!(
                "bulkhead: {} lines were longer than --max-line {} and were searched in their first {} bytes only",
                fmt_int(t.long_lines),
                max_line,
                max_line
            );
        }
        if !t.failed.is_empty() || !complete {
            eprintln!(
                "bulkhead: the totals are INCOMPLETE: {} of {} ranges counted{}",
                t.resumed + t.ran - t.failed.len() as u64,
                expected,
                if complete { "" } else { "; --results FILE --resume continues" }
            );
        }
        if let Some((k, n)) = shard {
            eprintln!(
                "bulkhead: shard {k}/{n}: these totals are its {expected} of {} ranges; for the whole, put the \
                 shards' results files into one (cat) and scan the same files with --results THAT --resume",
                self.ranges.len()
            );
        }
    }
}

/// The file at `path`, which must be a regular file: `planner` (who plans by its size) and
/// `instead` (what to use for a device or a pipe) make the refusal's words. Errors are said
/// on stderr; the exit code is 2.
pub(super) fn regular_file(path: &Path, planner: &str, instead: &str) -> Result<std::fs::Metadata, i32> {
    let meta = std::fs::metadata(path).map_err(|e| {
        eprintln!("bulkhead: error: cannot read {}: {e}", path.display());
        exit::BAD_INPUT
    })?;
    if !meta.is_file() {
        eprintln!(
            "bulkhead: error: {} is not a regular file: {planner} by a file's size (for a device or a pipe, use {instead})",
            path.display()
        );
        return Err(exit::BAD_INPUT);
    }
    Ok(meta)
}

/// Where the ranges of `len` bytes over a file of `bytes` start. The worker aligns each to
/// whole lines (a line belongs to the range holding its first byte), so the planner needs
/// only the size.
pub(super) fn offsets(bytes: u64, len: u64) -> impl Iterator<Item = u64> {
    std::iter::successors(Some(0u64), move |&o| o.checked_add(len)).take_while(move |&o| o < bytes)
}

/// The range length for a file of `bytes`: `--chunk`, or 16 MiB, or less so that a small
/// file still gives each worker a few ranges (never under 64 KiB).
pub(super) fn plan_chunk(chunk: Option<u64>, bytes: u64, workers: usize, lines: bool) -> u64 {
    let len = chunk.unwrap_or_else(|| (bytes / (4 * workers.max(1) as u64)).clamp(64 << 10, DEFAULT_CHUNK));
    if lines { len.min(LINES_CHUNK) } else { len }
}

/// A range's id, `PREFIX-HASH`: the hash of its task, of the file's identity (size,
/// modification time, inode) and of `extra`, so a resume against a changed file or another
/// pattern or command finds nothing stale.
pub(super) fn range_id(prefix: &str, task: &BuiltinTask, meta: &std::fs::Metadata, extra: u64) -> String {
    let mut bytes = postcard::to_stdvec(task).expect("a task encodes");
    for n in [meta.len(), meta.mtime() as u64, meta.mtime_nsec() as u64, meta.ino(), extra] {
        bytes.extend_from_slice(&n.to_le_bytes());
    }
    format!("{prefix}-{}", shared::hash::content_id(&bytes))
}

/// What a results record says about a range.
#[derive(serde::Deserialize)]
struct Done {
    id: String,
    status: Status,
    #[serde(default)]
    output: Option<BuiltinOutput>,
    #[serde(default)]
    error: Option<String>,
}

impl Scan {
    /// Reads the results of an earlier run: the ranges it finished count now; with
    /// `rerun_failed`, those that did not end ok run again instead.
    fn read_done(&mut self, path: &Path, rerun_failed: bool) -> io::Result<()> {
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        // A range's last record is the one that counts (one written by --resume-failed
        // supersedes the failure before it).
        let mut last: Vec<Option<Done>> = (0..self.ranges.len()).map(|_| None).collect();
        for line in io::BufReader::new(f).split(b'\n') {
            // A torn last line (the run was killed mid-write) is not a record; the journal cuts it.
            let Ok(r) = serde_json::from_slice::<Done>(&line?) else { continue };
            let Some(&i) = self.index.get(&r.id) else { continue };
            last[i] = Some(r);
        }
        for (i, r) in last.into_iter().enumerate() {
            let Some(r) = r else { continue };
            if rerun_failed && r.status != Status::Ok {
                // It runs again in this run, which counts it.
                continue;
            }
            self.totals.resumed += 1;
            self.count(i, r.status, r.output, r.error, " in an earlier run");
        }
        Ok(())
    }
}

/// `--lines`: ranges finish in any order; their lines are printed in file order, each range
/// as soon as all before it are out.
struct LineWriter {
    on: bool,
    prefix: bool,
    next: usize,
    ready: BTreeMap<usize, Option<String>>,
    out: io::BufWriter<io::Stdout>,
    total: usize,
}

impl LineWriter {
    fn new(on: bool, prefix: bool, total: usize) -> Self {
        Self {
            on,
            prefix,
            next: 0,
            ready: BTreeMap::new(),
            out: io::BufWriter::with_capacity(256 << 10, io::stdout()),
            total,
        }
    }

    fn done(&mut self, i: usize, lines: String) {
        if self.on {
            self.ready.insert(i, Some(lines));
        }
    }

    /// A range without lines to print (it failed: said on stderr).
    fn skip(&mut self, i: usize) {
        if self.on {
            self.ready.insert(i, None);
        }
    }

    fn flush_ready(&mut self, planned: &[Planned], ranges: &[Range]) -> io::Result<()> {
        while let Some(lines) = self.ready.remove(&self.next) {
            if let Some(text) = lines {
                if self.prefix {
                    let name = &planned[ranges[self.next].file].shown;
                    for l in text.lines() {
                        writeln!(self.out, "{name}:{l}")?;
                    }
                } else {
                    self.out.write_all(text.as_bytes())?;
                }
            }
            self.next += 1;
        }
        if self.next == self.total {
            self.out.flush()?;
        }
        Ok(())
    }
}

/// The answer, as printed.
#[derive(Serialize)]
struct Answer<'a> {
    matched_lines: u64,
    long_lines: u64,
    values: Vec<Value<'a>>,
    /// The values past `--top`: how many, and their count.
    #[serde(skip_serializing_if = "Option::is_none")]
    others: Option<Others>,
    /// Matching lines where the group took no part.
    no_value: u64,
    files: Vec<FileAnswer<'a>>,
    ranges: Ranges<'a>,
}

#[derive(Serialize)]
struct Value<'a> {
    value: &'a str,
    count: u64,
    share: f64,
}

#[derive(Serialize)]
struct Others {
    values: usize,
    count: u64,
    share: f64,
}

#[derive(Serialize)]
struct FileAnswer<'a> {
    path: &'a str,
    bytes: u64,
    ranges: u64,
    matched_lines: u64,
}

#[derive(Serialize)]
struct Ranges<'a> {
    total: u64,
    ran: u64,
    resumed: u64,
    failed: &'a [String],
    complete: bool,
}

impl<'a> Answer<'a> {
    fn new(t: &'a Totals, planned: &'a [Planned], total: u64, top: Option<usize>, grouped: bool) -> Self {
        let share = |n: u64| if t.matched_lines == 0 { 0.0 } else { n as f64 / t.matched_lines as f64 };
        let mut all: Vec<(&str, u64)> = t.counts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let counted: u64 = all.iter().map(|v| v.1).sum();
        let shown = top.unwrap_or(usize::MAX).min(all.len());
        let rest = &all[shown..];
        let others = (!rest.is_empty()).then(|| {
            let count = rest.iter().map(|v| v.1).sum();
            Others { values: rest.len(), count, share: share(count) }
        });
        Answer {
            matched_lines: t.matched_lines,
            long_lines: t.long_lines,
            values: all[..shown].iter().map(|&(value, count)| Value { value, count, share: share(count) }).collect(),
            others,
            no_value: if grouped { t.matched_lines - counted.min(t.matched_lines) } else { 0 },
            files: planned
                .iter()
                .map(|p| FileAnswer {
                    path: &p.shown,
                    bytes: p.bytes,
                    ranges: p.ranges,
                    matched_lines: p.matched_lines,
                })
                .collect(),
            ranges: Ranges {
                total,
                ran: t.ran,
                resumed: t.resumed,
                failed: &t.failed,
                complete: t.failed.is_empty() && t.ran + t.resumed == total,
            },
        }
    }
}

fn print_json(a: &Answer<'_>) -> io::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, a).map_err(io::Error::from)?;
    writeln!(out)?;
    out.flush()
}

fn print_table(a: &Answer<'_>, planned: &[Planned], grouped: bool) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if !grouped {
        if planned.len() > 1 {
            for f in &a.files {
                writeln!(out, "{}:{}", f.path, f.matched_lines)?;
            }
            writeln!(out, "total:{}", a.matched_lines)?;
        } else {
            writeln!(out, "{}", a.matched_lines)?;
        }
        return out.flush();
    }
    let mut rows: Vec<(String, u64, f64)> = a.values.iter().map(|v| (v.value.to_string(), v.count, v.share)).collect();
    if let Some(o) = &a.others {
        rows.push((format!("({} other values)", fmt_int(o.values as u64)), o.count, o.share));
    }
    if a.no_value > 0 {
        let share = a.no_value as f64 / a.matched_lines.max(1) as f64;
        rows.push(("(group not matched)".to_string(), a.no_value, share));
    }
    rows.push(("total".to_string(), a.matched_lines, if a.matched_lines > 0 { 1.0 } else { 0.0 }));
    let w = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0).max(5);
    let cw = rows.iter().map(|r| fmt_int(r.1).len()).max().unwrap_or(0).max(5);
    writeln!(out, "{:<w$}  {:>cw$}  {:>6}", "value", "count", "share")?;
    for (v, c, s) in rows {
        writeln!(out, "{v:<w$}  {:>cw$}  {:>5.1}%", fmt_int(c), s * 100.0)?;
    }
    out.flush()
}

fn fmt_int(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_files_get_small_ranges_and_lines_fit_a_frame() {
        assert_eq!(plan_chunk(None, 1 << 30, 2, false), 16 << 20);
        assert_eq!(plan_chunk(None, 8 << 20, 2, false), 1 << 20);
        assert_eq!(plan_chunk(None, 1000, 2, false), 64 << 10);
        assert_eq!(plan_chunk(Some(100), 1 << 30, 2, false), 100);
        assert_eq!(plan_chunk(Some(1 << 30), 1 << 30, 2, true), 8 << 20);
    }

    #[test]
    fn ranges_cover_the_size_once() {
        assert_eq!(offsets(10, 4).collect::<Vec<_>>(), [0, 4, 8]);
        assert_eq!(offsets(8, 4).collect::<Vec<_>>(), [0, 4]);
        assert_eq!(offsets(0, 4).count(), 0);
        assert_eq!(offsets(u64::MAX, u64::MAX - 1).count(), 2);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(fmt_int(0), "0");
        assert_eq!(fmt_int(999), "999");
        assert_eq!(fmt_int(1000), "1,000");
        assert_eq!(fmt_int(9_408_058), "9,408,058");
    }
}
