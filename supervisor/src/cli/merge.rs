//! `bulkhead merge`: the results files of a batch's shards into one, checked against the task
//! list: every task exactly one final record. It says which tasks have none (a shard still
//! running, killed, or never run), which have two, and which records name no task of the
//! list, and its exit code says whether the batch is complete. Running the shards is left to
//! `run` (and to the cluster engine); reading the task list to [`crate::input`].
//!
//! Memory stays bounded whatever the batch's size: ids live in [`IdSet`]s (about 2 bytes an
//! id) and records are copied line by line, never held. Only the few ids a message names are
//! kept as strings.
//!
//! Exit codes, by precedence: 5 inconsistent (a task with two final records, or a record of
//! no task in the list: rerunning shards cannot fix it), 4 incomplete (some task has no final
//! record: rerun its shard with `--resume`), 2 bad usage or unreadable input (nothing is
//! written), 1 complete but some task failed or was quarantined, 0 complete and all ok.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use clap::Args;
use shared::exit;
use shared::record::{RecordHead, Status};

use crate::input::Format;
use crate::input::error::{IdOrigin, InputError, Problem};
use crate::input::idset::IdSet;

pub use shared::exit::{INCOMPLETE, INCONSISTENT};

/// How many ids a message lists before it only counts.
const SHOWN: usize = 20;

/// Options of `bulkhead merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Results files of the shards (e.g. results-*.jsonl).
    #[arg(required = true)]
    pub results: Vec<PathBuf>,
    /// The batch's task file (JSONL, as given to `run`), to check that every task has
    /// exactly one final record.
    #[arg(long, value_name = "TASKS")]
    pub tasks: PathBuf,
    /// The batch was run with `run --cmd TEMPLATE`: the same template, so the tasks' ids
    /// match their records.
    #[arg(long, value_name = "TEMPLATE")]
    pub cmd: Option<String>,
    /// The batch was run with `run --colsep REGEX`: the same one.
    #[arg(long, value_name = "REGEX", requires = "cmd")]
    pub colsep: Option<String>,
    /// The merged results file ('-': standard output). Never overwritten when it holds
    /// anything. Without it, merge only checks.
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
}

/// Why a merge could not be done at all (exit 2; nothing is written).
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// The task list has a line that is not a task, or repeats an id.
    #[error("{}, {}{hint}", path.display(), worker::ErrorChain(error))]
    Tasks {
        /// The task file.
        path: PathBuf,
        /// The line and what is wrong with it (with its causes in the message, so that the hint
        /// comes last).
        error: InputError,
        /// What may have caused it.
        hint: &'static str,
    },
    /// A line in the middle of a results file is not a record.
    #[error("results file {path}, line {line}: not a results record ({reason})")]
    Corrupt {
        /// The results file.
        path: PathBuf,
        /// The line, from 1.
        line: u64,
        /// What is wrong.
        reason: crate::input::lines::NotAnItem,
    },
    /// The output already holds records.
    #[error("{path} is not empty; merge never overwrites a results file: remove it or name another")]
    OutputExists {
        /// The output.
        path: PathBuf,
    },
    /// A file cannot be opened, read or written.
    #[error("cannot {what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A record found where it should not be, with where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The task id.
    pub id: String,
    /// The results file.
    pub file: PathBuf,
    /// The line, from 1.
    pub line: u64,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// What a merge found.
#[derive(Debug, Default)]
pub struct MergeReport {
    /// Tasks in the list.
    pub tasks: u64,
    /// Final records written, by status.
    pub ok: u64,
    /// Failed records written.
    pub failed: u64,
    /// Quarantined records written.
    pub quarantined: u64,
    /// Tasks without a final record.
    pub missing: u64,
    /// The first [`SHOWN`] of them, with their line in the task list.
    pub missing_shown: Vec<(String, u64)>,
    /// Records of a task that already had one (left out).
    pub duplicates: u64,
    /// The first [`SHOWN`] of them: the second record, and where the first (kept) one is.
    pub duplicates_shown: Vec<(Place, Option<Place>)>,
    /// Records whose id is no task of the list (left out).
    pub unknown: u64,
    /// The first [`SHOWN`] of them.
    pub unknown_shown: Vec<Place>,
    /// Results files whose last line was cut short (a shard killed while writing it).
    pub torn: Vec<PathBuf>,
}

impl MergeReport {
    /// Tasks with exactly one final record.
    pub fn recorded(&self) -> u64 {
        self.ok + self.failed + self.quarantined
    }

    /// The exit code (see the module documentation).
    pub fn exit_code(&self) -> i32 {
        if self.duplicates > 0 || self.unknown > 0 {
            INCONSISTENT
        } else if self.missing > 0 {
            INCOMPLETE
        } else if self.failed > 0 || self.quarantined > 0 {
            exit::TASKS_FAILED
        } else {
            exit::OK
        }
    }
}

pub(super) fn merge(args: MergeArgs) -> i32 {
    // The same file twice would read as every task of it having two records.
    let mut seen = std::collections::HashSet::new();
    for p in &args.results {
        if !seen.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())) {
            eprintln!("bulkhead merge: error: results file {} is given twice", p.display());
            return exit::BAD_INPUT;
        }
    }
    let format = match Format::new(args.cmd.as_deref(), args.colsep.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("bulkhead merge: error: {}", worker::ErrorChain(&e));
            return exit::BAD_INPUT;
        }
    };
    let mut out = match args.output.as_deref().map(Output::open).transpose() {
        Ok(o) => o,
        Err(e) => return fail(&e),
    };
    let outcome = merge_into(&args.results, &args.tasks, &format, out.as_mut().map(|o| o.writer()));
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            if let Some(o) = out {
                o.discard();
            }
            return fail(&e);
        }
    };
    let written = match out.map(Output::commit).transpose() {
        Ok(w) => w,
        Err(e) => return fail(&e),
    };
    print_outcome(&outcome, args.results.len(), written.as_deref(), &args);
    outcome.exit_code()
}

fn fail(e: &MergeError) -> i32 {
    super::report_error(e);
    match e {
        // The merged output could not be written: a loss of output, as for `run`.
        MergeError::Io { what: "write" | "sync", .. } => exit::OUTPUT_FAILED,
        _ => exit::BAD_INPUT,
    }
}

/// Merges `results` into `out` (when given), checked against the task list at `tasks`.
pub fn merge_into(
    results: &[PathBuf],
    tasks: &Path,
    format: &Format,
    mut out: Option<&mut dyn Write>,
) -> Result<MergeReport, MergeError> {
    let mut outcome = MergeReport::default();
    let listed = read_task_ids(tasks, format, &mut outcome)?;
    let mut recorded = IdSet::default();
    // Tasks with records written by --resume-failed: the count of records the last one
    // supersedes. Only these are held by id.
    let mut superseded: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    for path in results {
        if let Some(holder) = crate::output::journal::being_written(path) {
            log::warn!(
                "results file {} is still being written by a running batch{}: merging the records it holds now",
                path.display(),
                holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
            );
        }
        let torn = for_each_record(path, |head, _, line| {
            let place = || Place { id: head.id.clone(), file: path.clone(), line };
            if !listed.contains(&head.id) {
                outcome_push(&mut outcome.unknown, &mut outcome.unknown_shown, place());
                return Ok(());
            }
            let first = recorded.insert(&head.id);
            match head.supersedes {
                // Written by --resume-failed: a task's last record is the one that counts.
                Some(n) => {
                    let last = superseded.entry(head.id).or_insert(n);
                    *last = (*last).max(n);
                }
                None if !first => {
                    outcome_push(&mut outcome.duplicates, &mut outcome.duplicates_shown, (place(), None));
                }
                None => {}
            }
            Ok(())
        })?;
        if let Some((line, why)) = torn {
            log::warn!(
                "results file {}: the last line (line {line}) was cut short ({why}); left out, its task counts as missing",
                path.display()
            );
            outcome.torn.push(path.clone());
        }
    }
    // The second pass counts and writes each task's last record: only once every file has
    // been read is it known which one that is.
    let mut kept = IdSet::default();
    for path in results {
        for_each_record(path, |head, raw, _| {
            let last = head.supersedes.unwrap_or(0) == superseded.get(&head.id).copied().unwrap_or(0);
            if !listed.contains(&head.id) || !last || !kept.insert(&head.id) {
                return Ok(());
            }
            match head.status {
                Status::Ok => outcome.ok += 1,
                Status::Failed => outcome.failed += 1,
                Status::Quarantined => outcome.quarantined += 1,
            }
            if let Some(w) = out.as_deref_mut() {
                let io_err = |source| MergeError::Io { what: "write", path: "the merged results".into(), source };
                w.write_all(raw).map_err(io_err)?;
                w.write_all(b"\n").map_err(io_err)?;
            }
            Ok(())
        })?;
    }
    outcome.missing = outcome.tasks - outcome.recorded();
    if outcome.missing > 0 {
        find_missing(tasks, format, &recorded, &mut outcome)?;
    }
    if !outcome.duplicates_shown.is_empty() {
        find_first_records(results, &mut outcome)?;
    }
    Ok(outcome)
}

/// Counts `item` and keeps it when fewer than [`SHOWN`] are kept.
fn outcome_push<T>(count: &mut u64, shown: &mut Vec<T>, item: T) {
    *count += 1;
    if shown.len() < SHOWN {
        shown.push(item);
    }
}

/// The ids of the task list, checked as `run` checks them: every line a task, no id twice.
fn read_task_ids(path: &Path, format: &Format, outcome: &mut MergeReport) -> Result<IdSet, MergeError> {
    let mut ids = IdSet::default();
    for_each_task(path, format, |id, origin, _| {
        if !ids.insert(id) {
            return Err(Problem::DuplicateId { id: id.to_string(), origin, first: None });
        }
        outcome.tasks += 1;
        Ok(())
    })?;
    Ok(ids)
}

/// The second pass over the task list, only when some task has no record: names them.
fn find_missing(path: &Path, format: &Format, recorded: &IdSet, outcome: &mut MergeReport) -> Result<(), MergeError> {
    let mut shown = Vec::new();
    for_each_task(path, format, |id, _, line| {
        if shown.len() < SHOWN && !recorded.contains(id) {
            shown.push((id.to_string(), line));
        }
        Ok(())
    })?;
    outcome.missing_shown = shown;
    Ok(())
}

/// Calls `f` with each task's id (given, or the content hash `run` gives it), how it got it,
/// and its line.
fn for_each_task(
    path: &Path,
    format: &Format,
    mut f: impl FnMut(&str, IdOrigin, u64) -> Result<(), Problem>,
) -> Result<(), MergeError> {
    let file = File::open(path).map_err(|source| MergeError::Io { what: "open", path: path.into(), source })?;
    let mut parser = format.parser();
    crate::input::for_each_line(BufReader::with_capacity(1 << 20, file), |number, text| {
        match parser.line(text, number)? {
            Some(t) => f(&t.id, t.origin, number),
            None => Ok(()),
        }
    })
    .map_err(|error| {
        let hint = if matches!(format, Format::Jsonl) && matches!(error.problem, Problem::NotJson(_)) {
            "; if the batch ran with `run --cmd`, give merge the same --cmd"
        } else {
            ""
        };
        MergeError::Tasks { path: path.into(), error, hint }
    })
}

/// Calls `f` with each record of a results file: its head, its bytes (without the newline)
/// and its line. A last line cut short is left out with a warning, as `run --resume` would
/// cut it off (returns its number and what is wrong with it); a bad line anywhere else is an
/// error.
fn for_each_record(
    path: &Path,
    mut f: impl FnMut(RecordHead, &[u8], u64) -> Result<(), MergeError>,
) -> Result<Option<(u64, crate::input::lines::NotAnItem)>, MergeError> {
    use crate::input::lines::{Judged, LineError, Lines, NotAnItem};
    let file = File::open(path).map_err(|source| MergeError::Io { what: "open", path: path.into(), source })?;
    let mut lines = Lines::new(BufReader::with_capacity(1 << 20, file));
    let mut torn = None;
    loop {
        let line = match lines.next_line() {
            Ok(Some(l)) => l,
            Ok(None) => return Ok(torn),
            Err(LineError::Read { source, .. }) => {
                return Err(MergeError::Io { what: "read", path: path.into(), source });
            }
            Err(e @ LineError::TooLong { .. }) => {
                return Err(MergeError::Corrupt { path: path.into(), line: e.line(), reason: NotAnItem::TooLong });
            }
        };
        if line.is_blank() {
            continue;
        }
        match line.judge(serde_json::from_slice::<RecordHead>(line.text)) {
            Judged::Item(head) => f(head, line.text, line.number)?,
            // Only the end of a file can be torn: a shard killed in the middle of a write, or
            // one still writing.
            Judged::Torn(e) => torn = Some((line.number, NotAnItem::Json(e))),
            Judged::Bad(e) => {
                return Err(MergeError::Corrupt { path: path.into(), line: line.number, reason: NotAnItem::Json(e) });
            }
        }
    }
}

/// Where the kept record of each duplicate shown is: one more pass, only when there are
/// duplicates, so the first pass need not remember where every id was.
fn find_first_records(results: &[PathBuf], outcome: &mut MergeReport) -> Result<(), MergeError> {
    let shown = &mut outcome.duplicates_shown;
    for path in results {
        for_each_record(path, |head, _, line| {
            for (_, first) in shown.iter_mut().filter(|(dup, first)| first.is_none() && dup.id == head.id) {
                *first = Some(Place { id: head.id.clone(), file: path.clone(), line });
            }
            Ok(())
        })?;
        if shown.iter().all(|(_, first)| first.is_some()) {
            break;
        }
    }
    Ok(())
}

/// The merged file: written beside its final name and renamed into place when the merge
/// succeeds, so a merge that fails half-way leaves no half file under the name. Devices
/// and pipes (`/dev/stdout`, `-`) are written directly.
struct Output {
    path: PathBuf,
    temp: Option<PathBuf>,
    writer: BufWriter<File>,
}

impl Output {
    fn open(path: &Path) -> Result<Self, MergeError> {
        let io_err = |what, source| MergeError::Io { what, path: path.into(), source };
        if path.as_os_str() == "-" {
            let fd = std::os::fd::AsFd::as_fd(&io::stdout()).try_clone_to_owned().map_err(|e| io_err("write", e))?;
            return Ok(Self { path: path.into(), temp: None, writer: BufWriter::new(File::from(fd)) });
        }
        match std::fs::metadata(path) {
            Ok(m) if m.file_type().is_char_device() || m.file_type().is_fifo() => {
                let f = OpenOptions::new().write(true).open(path).map_err(|e| io_err("write", e))?;
                return Ok(Self { path: path.into(), temp: None, writer: BufWriter::new(f) });
            }
            Ok(m) if m.len() > 0 => return Err(MergeError::OutputExists { path: path.into() }),
            _ => {}
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "merged".into());
        let temp = path.with_file_name(format!(".{name}.merge-{}.tmp", std::process::id()));
        let f = OpenOptions::new().write(true).create_new(true).open(&temp).map_err(|e| io_err("create", e))?;
        Ok(Self { path: path.into(), temp: Some(temp), writer: BufWriter::with_capacity(1 << 20, f) })
    }

    fn writer(&mut self) -> &mut dyn Write {
        &mut self.writer
    }

    /// Flushes, syncs and moves the file into place; returns its name.
    fn commit(self) -> Result<PathBuf, MergeError> {
        let io_err = |what, source| MergeError::Io { what, path: self.path.clone(), source };
        let file = match self.writer.into_inner() {
            Ok(f) => f,
            Err(e) => {
                let e = io_err("write", e.into_error());
                if let Some(t) = &self.temp {
                    let _ = std::fs::remove_file(t);
                }
                return Err(e);
            }
        };
        let Some(temp) = &self.temp else {
            return Ok(self.path.clone());
        };
        let done = file.sync_data().map_err(|e| io_err("sync", e)).and_then(|()| {
            // Someone may have written the name meanwhile: still never overwrite records.
            if std::fs::metadata(&self.path).is_ok_and(|m| m.len() > 0) {
                return Err(MergeError::OutputExists { path: self.path.clone() });
            }
            std::fs::rename(temp, &self.path).map_err(|e| io_err("write", e))
        });
        if let Err(e) = done {
            let _ = std::fs::remove_file(temp);
            return Err(e);
        }
        Ok(self.path.clone())
    }

    fn discard(self) {
        if let Some(t) = &self.temp {
            let _ = std::fs::remove_file(t);
        }
    }
}

fn print_outcome(o: &MergeReport, files: usize, written: Option<&Path>, args: &MergeArgs) {
    for (dup, first) in &o.duplicates_shown {
        let first = first.as_ref().map_or_else(|| "?".to_string(), ToString::to_string);
        eprintln!("bulkhead merge: task '{}' has two final records: {first} (kept) and {dup}", dup.id);
    }
    if o.duplicates > o.duplicates_shown.len() as u64 {
        eprintln!("bulkhead merge: ... and {} more second records", o.duplicates - o.duplicates_shown.len() as u64);
    }
    for p in &o.unknown_shown {
        eprintln!("bulkhead merge: record of '{}' at {p} names no task of {} (left out)", p.id, args.tasks.display());
    }
    if o.unknown > o.unknown_shown.len() as u64 {
        eprintln!("bulkhead merge: ... and {} more records of no task", o.unknown - o.unknown_shown.len() as u64);
    }
    if o.missing > 0 {
        let ids: Vec<String> = o.missing_shown.iter().map(|(id, line)| format!("{id} (line {line})")).collect();
        let more = o.missing - o.missing_shown.len() as u64;
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        eprintln!(
            "bulkhead merge: {} of {} tasks have no final record: {}{more}; rerun their shards with --resume",
            o.missing,
            o.tasks,
            ids.join(", ")
        );
    }
    let mut line = format!(
        "bulkhead merge: {} tasks: {} with one final record ({} ok, {} failed, {} quarantined), {} missing",
        o.tasks,
        o.recorded(),
        o.ok,
        o.failed,
        o.quarantined,
        o.missing
    );
    if o.duplicates > 0 {
        line.push_str(&format!(", {} duplicate records", o.duplicates));
    }
    if o.unknown > 0 {
        line.push_str(&format!(", {} records of no task", o.unknown));
    }
    line.push_str(&format!("; from {files} results file(s)"));
    if !o.torn.is_empty() {
        line.push_str(&format!(" ({} with a torn last line)", o.torn.len()));
    }
    if let Some(p) = written.filter(|p| p.as_os_str() != "-") {
        line.push_str(&format!("; wrote {}", p.display()));
    }
    eprintln!("{line}");
    let verdict = match o.exit_code() {
        INCONSISTENT => "inconsistent: some task has more than one record, or a record belongs to no task",
        INCOMPLETE => "incomplete",
        exit::TASKS_FAILED => "complete, with failed or quarantined tasks",
        _ => "complete",
    };
    eprintln!("bulkhead merge: the batch is {verdict}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, status: &str) -> String {
        format!("{{\"id\":\"{id}\",\"status\":\"{status}\",\"attempts\":1}}\n")
    }

    fn setup(tasks: &[&str], files: &[String]) -> (tempfile::TempDir, PathBuf, Vec<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("tasks.jsonl");
        let lines: String = tasks.iter().map(|id| format!("{{\"id\":\"{id}\",\"kind\":\"noop\"}}\n")).collect();
        std::fs::write(&t, lines).unwrap();
        let results = files
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let p = dir.path().join(format!("results-{i}.jsonl"));
                std::fs::write(&p, text).unwrap();
                p
            })
            .collect();
        (dir, t, results)
    }

    fn merged(tasks: &[&str], files: &[String]) -> (MergeReport, String) {
        let (_dir, t, results) = setup(tasks, files);
        let mut out = Vec::new();
        let o = merge_into(&results, &t, &Format::Jsonl, Some(&mut out)).unwrap();
        (o, String::from_utf8(out).unwrap())
    }

    #[test]
    fn a_task_s_last_record_is_the_one_merged() {
        let again = |id: &str, status: &str, n: u32| {
            format!("{{\"id\":\"{id}\",\"status\":\"{status}\",\"attempts\":1,\"supersedes\":{n}}}\n")
        };
        let file = rec("a", "failed") + &rec("b", "ok") + &again("a", "quarantined", 1) + &again("a", "ok", 2);
        let (o, out) = merged(&["a", "b"], &[file]);
        assert_eq!((o.ok, o.failed, o.quarantined, o.duplicates, o.exit_code()), (2, 0, 0, 0, 0));
        assert_eq!(out, rec("b", "ok") + &again("a", "ok", 2));
        // A second record that supersedes nothing is still a duplicate.
        let (o, _) = merged(&["a"], &[rec("a", "failed") + &rec("a", "ok")]);
        assert_eq!(o.duplicates, 1);
    }

    #[test]
    fn a_complete_batch_merges_every_record_once() {
        let (o, out) = merged(&["a", "b", "c"], &[rec("a", "ok") + &rec("c", "ok"), rec("b", "ok")]);
        assert_eq!((o.tasks, o.ok, o.missing, o.exit_code()), (3, 3, 0, 0));
        assert_eq!(out, rec("a", "ok") + &rec("c", "ok") + &rec("b", "ok"));
        let (o, _) = merged(&["a", "b"], &[rec("a", "ok") + &rec("b", "quarantined")]);
        assert_eq!((o.quarantined, o.exit_code()), (1, exit::TASKS_FAILED));
    }

    #[test]
    fn missing_tasks_are_named_with_their_lines() {
        let (o, out) = merged(&["a", "b", "c"], &[rec("b", "failed")]);
        assert_eq!((o.missing, o.exit_code()), (2, INCOMPLETE));
        assert_eq!(o.missing_shown, vec![("a".to_string(), 1), ("c".to_string(), 3)]);
        assert_eq!(out, rec("b", "failed"));
    }

    #[test]
    fn duplicates_and_strangers_are_left_out_and_reported() {
        let (o, out) = merged(&["a", "b"], &[rec("a", "ok") + &rec("b", "ok"), rec("x", "ok") + &rec("a", "failed")]);
        assert_eq!((o.duplicates, o.unknown, o.missing, o.exit_code()), (1, 1, 0, INCONSISTENT));
        assert_eq!(out, rec("a", "ok") + &rec("b", "ok"));
        let (dup, first) = &o.duplicates_shown[0];
        assert_eq!((dup.id.as_str(), dup.line), ("a", 2));
        assert!(dup.file.ends_with("results-1.jsonl"));
        let first = first.as_ref().unwrap();
        assert!(first.file.ends_with("results-0.jsonl") && first.line == 1, "{first}");
        assert_eq!(o.unknown_shown[0].id, "x");
    }

    #[test]
    fn a_torn_last_line_is_left_out_and_a_torn_middle_is_an_error() {
        let (o, out) = merged(&["a", "b"], &[rec("a", "ok") + "{\"id\":\"b\",\"sta"]);
        assert_eq!((o.missing, o.torn.len(), o.exit_code()), (1, 1, INCOMPLETE));
        assert_eq!(out, rec("a", "ok"));
        // A whole last record without its newline is kept, and gets one.
        let (o, out) = merged(&["a"], &[rec("a", "ok").trim_end().to_string()]);
        assert_eq!((o.ok, o.torn.len()), (1, 0));
        assert_eq!(out, rec("a", "ok"));
        let (_dir, t, results) = setup(&["a", "b"], &[rec("a", "ok") + "garbage\n" + &rec("b", "ok")]);
        let err = merge_into(&results, &t, &Format::Jsonl, None).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn tasks_without_ids_match_by_content_as_in_run() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("tasks.jsonl");
        std::fs::write(&t, "{\"kind\":\"sleep\",\"ms\":1}\n{\"kind\":\"noop\"}\n").unwrap();
        let id = crate::input::parse_line(br#"{"ms":1,"kind":"sleep"}"#).unwrap().unwrap().id.into_owned();
        let r = dir.path().join("r.jsonl");
        std::fs::write(&r, rec(&id, "ok")).unwrap();
        let o = merge_into(&[r], &t, &Format::Jsonl, None).unwrap();
        assert_eq!((o.ok, o.missing), (1, 1));
        assert_eq!(o.missing_shown.len(), 1);
        assert_ne!(o.missing_shown[0].0, id);
    }

    #[test]
    fn an_output_with_records_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        std::fs::write(&p, rec("a", "ok")).unwrap();
        assert!(matches!(Output::open(&p), Err(MergeError::OutputExists { .. })));
        std::fs::write(&p, "").unwrap();
        let mut o = Output::open(&p).unwrap();
        o.writer().write_all(b"x\n").unwrap();
        assert_eq!(o.commit().unwrap(), p);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "x\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "the temporary file is gone");
    }
}
