//! The results file, which is also the run's journal: one final record per task, appended as
//! tasks finish. A record in the file means the task is done; one missing means it runs
//! again on `--resume`. So a crash of the supervisor, even SIGKILL, loses nothing and doubles
//! nothing: records written before it are there, records still in memory are absent and
//! their tasks rerun, and a line cut short by the crash is cut off on resume.
//!
//! Records are buffered and written when the loop is about to wait, or every megabyte: a
//! system call per batch of results, not per result.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use shared::record::{RecordHead, RecordRef, Status};

use crate::input::source::IdSet;

/// Where results go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultsTarget {
    /// Standard output (results only; logs go to stderr).
    Stdout,
    /// A file, created if missing.
    File(PathBuf),
}

/// Why the results file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// It holds records and `--resume` was not given.
    #[error(
        "results file {path} already holds {records} record(s); add --resume to continue that batch, or name another file (it is never truncated)"
    )]
    Exists {
        /// The file.
        path: PathBuf,
        /// Records in it.
        records: u64,
    },
    /// `--resume` without a file to resume from.
    #[error("--resume needs --results FILE: there is nothing to resume from standard output")]
    ResumeStdout,
    /// A line in the middle of the file is not a record.
    #[error("results file {path}, line {line}: not a results record ({reason}); fix or move the file")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// The file cannot be opened or read.
    #[error("cannot use results file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// What an existing results file says about the batch.
#[derive(Debug, Default)]
pub struct Resumed {
    /// Ids with a final record.
    pub done: IdSet,
    /// Records by status.
    pub ok: u64,
    /// Failed records.
    pub failed: u64,
    /// Quarantined records.
    pub quarantined: u64,
    /// Bytes of a torn last line that were cut off.
    pub repaired_bytes: u64,
}

/// An open results file.
pub struct Journal {
    out: File,
    regular: bool,
    buf: Vec<u8>,
    name: String,
    error: Option<io::Error>,
    /// Bytes written since writeback was last started.
    unsynced: u64,
}

/// Start writing back to disk every this many bytes, so the final sync has little left.
const WRITEBACK_EVERY: u64 = 4 << 20;

const FLUSH_BYTES: usize = 1 << 20;

impl Journal {
    /// Opens the target for appending, reading back what it holds when resuming.
    pub fn open(target: &ResultsTarget, resume: bool) -> Result<(Self, Resumed), JournalError> {
        match target {
            ResultsTarget::Stdout => {
                if resume {
                    return Err(JournalError::ResumeStdout);
                }
                // A descriptor of our own for standard output: closing it at the end leaves
                // the process's fd 1 open.
                let out = io::stdout()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(|source| JournalError::Io { path: PathBuf::from("standard output"), source })?;
                Ok((
                    Self {
                        out: File::from(out),
                        regular: false,
                        buf: Vec::new(),
                        name: "standard output".into(),
                        error: None,
                        unsynced: 0,
                    },
                    Resumed::default(),
                ))
            }
            ResultsTarget::File(path) => Self::open_file(path, resume),
        }
    }

    fn open_file(path: &Path, resume: bool) -> Result<(Self, Resumed), JournalError> {
        let io_err = |source| JournalError::Io { path: path.to_path_buf(), source };
        let meta = std::fs::metadata(path).ok();
        let regular = meta.as_ref().is_none_or(|m| m.is_file());
        let special = meta.as_ref().is_some_and(|m| m.file_type().is_char_device() || m.file_type().is_fifo());
        let mut resumed = Resumed::default();
        if regular && meta.as_ref().is_some_and(|m| m.len() > 0) {
            let mut file = OpenOptions::new().read(true).write(resume).open(path).map_err(io_err)?;
            resumed = read_back(&mut file, path, resume)?;
            if !resume {
                return Err(JournalError::Exists {
                    path: path.to_path_buf(),
                    records: resumed.ok + resumed.failed + resumed.quarantined,
                });
            }
        }
        let mut opts = OpenOptions::new();
        if special {
            opts.write(true);
        } else {
            opts.append(true).create(true);
        }
        let file = opts.open(path).map_err(io_err)?;
        let journal = Self {
            out: file,
            regular,
            buf: Vec::with_capacity(64 << 10),
            name: path.display().to_string(),
            error: None,
            unsynced: 0,
        };
        Ok((journal, resumed))
    }

    /// Buffers one record.
    pub fn write<O: Serialize>(&mut self, record: &RecordRef<'_, O>) {
        if self.error.is_some() {
            return;
        }
        write_record(&mut self.buf, record);
        self.buf.push(b'\n');
        if self.buf.len() >= FLUSH_BYTES {
            self.flush();
        }
    }

    /// Writes what is buffered. After a failure the journal keeps the error (see
    /// [`Journal::error`]) and writes nothing more.
    pub fn flush(&mut self) {
        if self.buf.is_empty() || self.error.is_some() {
            return;
        }
        if let Err(e) = self.out.write_all(&self.buf) {
            self.error = Some(e);
        }
        self.unsynced += self.buf.len() as u64;
        self.buf.clear();
        if self.regular && self.unsynced >= WRITEBACK_EVERY {
            // Ask the kernel to start writing what we wrote (without waiting): the journal
            // reaches the disk as the run goes, and the sync at the end (0.14 s for a
            // million records when it had everything left to do) only waits for the tail.
            self.unsynced = 0;
            // SAFETY: sync_file_range on our own descriptor; offset 0 and length 0 mean the
            // whole file, and SYNC_FILE_RANGE_WRITE only starts writeback.
            unsafe {
                libc::sync_file_range(std::os::fd::AsRawFd::as_raw_fd(&self.out), 0, 0, libc::SYNC_FILE_RANGE_WRITE)
            };
        }
    }

    /// The write error that stopped the journal, if any.
    pub fn error(&self) -> Option<String> {
        self.error.as_ref().map(|e| format!("cannot write results to {}: {e}", self.name))
    }

    /// Whether the journal stopped because its reader went away (a closed pipe).
    pub fn broken_pipe(&self) -> bool {
        self.error.as_ref().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    }

    /// Flushes and asks the disk to keep it. A target that cannot be synced (a pipe, a
    /// device) is only flushed.
    pub fn finish(&mut self) {
        self.flush();
        if self.regular
            && self.error.is_none()
            && let Err(e) = self.out.sync_data()
            && !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EROFS | libc::ENOTSUP))
        {
            log::warn!("cannot sync {}: {e}", self.name);
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Writes a record as JSON, the same bytes as serde would (a test checks), without serde's
/// generic map machinery for the fixed fields: on a million tiny records, serializing was a
/// tenth of the supervisor's time.
pub fn write_record<O: Serialize>(buf: &mut Vec<u8>, r: &RecordRef<'_, O>) {
    buf.extend_from_slice(b"{\"id\":");
    write_str(buf, r.id);
    buf.extend_from_slice(b",\"status\":\"");
    buf.extend_from_slice(r.status.as_str().as_bytes());
    buf.extend_from_slice(b"\",\"attempts\":");
    buf.extend_from_slice(itoa::Buffer::new().format(r.attempts).as_bytes());
    if let Some(ms) = r.ms {
        buf.extend_from_slice(b",\"ms\":");
        serde_json::to_writer(&mut *buf, &ms).expect("a float serializes");
    }
    if let Some(o) = r.output {
        buf.extend_from_slice(b",\"output\":");
        serde_json::to_writer(&mut *buf, o).expect("outputs serialize to JSON");
    }
    for (key, value) in [("error", r.error), ("stdout", r.stdout), ("stderr", r.stderr)] {
        if let Some(v) = value {
            buf.extend_from_slice(b",\"");
            buf.extend_from_slice(key.as_bytes());
            buf.extend_from_slice(b"\":");
            write_str(buf, v);
        }
    }
    if !r.crashes.is_empty() {
        buf.extend_from_slice(b",\"crashes\":");
        serde_json::to_writer(&mut *buf, r.crashes).expect("crashes serialize");
    }
    buf.push(b'}');
}

/// A JSON string: plain ASCII is copied as it is, anything else goes through serde_json.
fn write_str(buf: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        serde_json::to_writer(&mut *buf, s).expect("strings serialize");
    }
}

/// Reads the records of a results file. With `repair`, a torn last line (not a record) is
/// cut off so the file ends at a record boundary, and a last record missing its newline gets
/// one.
fn read_back(file: &mut File, path: &Path, repair: bool) -> Result<Resumed, JournalError> {
    let io_err = |source| JournalError::Io { path: path.to_path_buf(), source };
    let len = file.metadata().map_err(io_err)?.len();
    let mut resumed = Resumed::default();
    let mut reader = BufReader::with_capacity(1 << 20, &mut *file);
    let mut line = Vec::new();
    let mut offset = 0u64;
    let mut number = 0u64;
    let mut cut_at = None;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io_err)?;
        if n == 0 {
            break;
        }
        number += 1;
        let complete = line.last() == Some(&b'\n');
        let text = if complete { &line[..line.len() - 1] } else { &line[..] };
        let at_end = offset + n as u64 == len;
        match serde_json::from_slice::<RecordHead>(text) {
            Ok(head) if complete || at_end => {
                if !resumed.done.insert(&head.id) {
                    return Err(JournalError::Corrupt {
                        path: path.to_path_buf(),
                        line: number,
                        reason: format!("a second final record for '{}'", head.id),
                    });
                }
                match head.status {
                    Status::Ok => resumed.ok += 1,
                    Status::Failed => resumed.failed += 1,
                    Status::Quarantined => resumed.quarantined += 1,
                }
                if !complete {
                    // The record is whole but its newline was not written: add it.
                    cut_at = Some((len, true));
                }
            }
            Err(_) if text.iter().all(u8::is_ascii_whitespace) => {}
            // Only a line without its newline can have been cut short: records hold no raw
            // newline, and each is written with its own. A whole line that is not a record is
            // somebody's data, and is refused below like one in the middle.
            Err(e) if at_end && !complete => {
                log::warn!(
                    "results file {}: line {number} was cut short by a crash ({e}); dropping it",
                    path.display()
                );
                cut_at = Some((offset, false));
            }
            Ok(_) => unreachable!("incomplete lines are always at the end"),
            Err(e) => {
                return Err(JournalError::Corrupt { path: path.to_path_buf(), line: number, reason: e.to_string() });
            }
        }
        offset += n as u64;
    }
    drop(reader);
    if let Some((at, add_newline)) = cut_at.filter(|_| repair) {
        if add_newline {
            file.seek(SeekFrom::End(0)).map_err(io_err)?;
            file.write_all(b"\n").map_err(io_err)?;
        } else {
            resumed.repaired_bytes = len - at;
            file.set_len(at).map_err(io_err)?;
        }
    }
    Ok(resumed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(dir: &tempfile::TempDir) -> (PathBuf, ResultsTarget) {
        let p = dir.path().join("results.jsonl");
        (p.clone(), ResultsTarget::File(p))
    }

    #[test]
    fn an_existing_file_is_never_truncated_without_resume() {
        let dir = tempfile::tempdir().unwrap();
        let (p, t) = target(&dir);
        std::fs::write(&p, "{\"id\":\"a\",\"status\":\"ok\",\"attempts\":1}\n").unwrap();
        let err = Journal::open(&t, false).err().unwrap();
        assert!(err.to_string().contains("--resume"), "{err}");
        assert_eq!(std::fs::read_to_string(&p).unwrap().lines().count(), 1);
    }

    #[test]
    fn resume_repairs_a_torn_last_line_and_reads_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (p, t) = target(&dir);
        std::fs::write(&p, "{\"id\":\"a\",\"status\":\"ok\",\"attempts\":1}\n{\"id\":\"b\",\"status\":\"quarantined\",\"attempts\":3}\n{\"id\":\"c\",\"sta").unwrap();
        let (mut j, r) = Journal::open(&t, true).unwrap();
        assert_eq!((r.ok, r.quarantined, r.done.len()), (1, 1, 2));
        assert!(r.done.contains("b") && !r.done.contains("c"));
        assert_eq!(r.repaired_bytes, r#"{"id":"c","sta"#.len() as u64);
        let rec = shared::record::Record::<()>::new("c".into(), 1, None, Ok(()), vec![]);
        j.write(&rec.as_ref());
        j.finish();
        drop(j);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.ends_with("\"output\":null}\n"), "{text}");
        // A record whose newline was lost is kept and completed.
        std::fs::write(&p, "{\"id\":\"a\",\"status\":\"ok\",\"attempts\":1}").unwrap();
        let (_, r) = Journal::open(&t, true).unwrap();
        assert_eq!(r.ok, 1);
        assert!(std::fs::read_to_string(&p).unwrap().ends_with("}\n"));
    }

    #[test]
    fn a_whole_last_line_that_is_not_a_record_is_refused_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (p, t) = target(&dir);
        let text = "{\"id\":\"a\",\"status\":\"ok\",\"attempts\":1}\n{\"id\":\"z\",\"status\":\"weird\"}\n";
        std::fs::write(&p, text).unwrap();
        let err = Journal::open(&t, true).err().unwrap().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text, "the file is left as it was");
    }

    #[test]
    fn corruption_in_the_middle_is_reported_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let (p, t) = target(&dir);
        std::fs::write(&p, "{\"id\":\"a\",\"status\":\"ok\",\"attempts\":1}\ngarbage\n{\"id\":\"b\",\"status\":\"ok\",\"attempts\":1}\n").unwrap();
        let err = Journal::open(&t, true).err().unwrap().to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn the_direct_writer_matches_serde() {
        use shared::record::{Crash, CrashCause, Record};
        let crash = Crash { attempt: 1, pid: 9, cause: CrashCause::Panic { message: "ü \"q\" \n".into() } };
        let mut e = shared::proto::TaskError::new("exit status 1");
        e.stdout = Some("out\n".into());
        e.stderr = Some("\u{1}err".into());
        let records: Vec<Record<serde_json::Value>> = vec![
            Record::new("plain".into(), 1, Some(0.004), Ok(serde_json::Value::Null), vec![]),
            Record::new("ü\"id\\".into(), 2, Some(812.5), Ok(serde_json::json!({"sum": "3"})), vec![crash.clone()]),
            Record::new("f".into(), 1, Some(40.1), Err(e), vec![]),
            Record::quarantined("q".into(), 3, vec![crash.clone(), crash]),
        ];
        for r in &records {
            let mut buf = Vec::new();
            write_record(&mut buf, &r.as_ref());
            assert_eq!(String::from_utf8(buf).unwrap(), serde_json::to_string(r).unwrap());
        }
    }

    #[test]
    fn dev_null_is_a_fine_target() {
        let (mut j, _) = Journal::open(&ResultsTarget::File("/dev/null".into()), false).unwrap();
        j.write(&shared::record::Record::<()>::quarantined("a".into(), 3, vec![]).as_ref());
        j.finish();
        assert!(j.error().is_none());
    }
}
