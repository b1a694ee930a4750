//! The results file, which is also the run's journal: one final record per task, appended as
//! tasks finish. A record in the file means the task is done; one missing means it runs
//! again on `resume`. So a crash of the supervisor, even SIGKILL, loses nothing and doubles
//! nothing: records written before it are there, records still in memory are absent and
//! their tasks rerun, and a line cut short by the crash is cut off on resume.
//!
//! Records are buffered and written when the loop is about to wait, or every megabyte: a
//! system call per batch of results, not per result.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;
use shared::record::{RecordHead, RecordRef, Status};
use shared::task::BuiltinOutput;

use crate::input::lines::{Judged, LineError, Lines, NotAnItem};
use crate::input::source::IdSet;
use crate::output::failure::OutputFailure;

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
    /// It holds records and `resume` was not asked for.
    #[error(
        "results file {path} already holds {records} record(s); add --resume to continue that batch, or name another file (it is never truncated)"
    )]
    Exists {
        /// The file.
        path: PathBuf,
        /// Records in it.
        records: u64,
    },
    /// Another run holds the file's lock: it is writing it now.
    #[error("results file {path} is being written by another run{}; one run per results file (wait for it, or name another file)", holder.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked {
        /// The file.
        path: PathBuf,
        /// The process holding the lock, where `/proc/locks` says.
        holder: Option<u32>,
    },
    /// `resume` without a file to resume from.
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
        reason: NotAnItem,
    },
    /// A task has two final records that do not supersede one another.
    #[error("results file {path}, line {line}: two final records of one task; fix or move the file")]
    Conflict {
        /// The file.
        path: PathBuf,
        /// The line of the second record, from 1.
        line: u64,
        /// Which records, and how they conflict.
        #[source]
        conflict: RecordConflict,
    },
    /// The file changed while it was read back, though this run holds its lock: something
    /// that does not take the lock writes it.
    #[error(
        "results file {path} changed while it was read back ({read} bytes read, {now} now): something writes it without taking its lock; stop that writer first"
    )]
    Changed {
        /// The file.
        path: PathBuf,
        /// Bytes read.
        read: u64,
        /// Its length afterwards.
        now: u64,
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
    /// The tasks whose last record is failed or quarantined, with how many final records each
    /// has: what `resume_failed` runs again, and what its new records supersede. Only these
    /// are held by id, so memory grows with the failures, not with the batch.
    pub not_ok: HashMap<String, (u32, Status)>,
}

/// Why a record read back cannot be counted: it is a task's second final record, and does
/// not supersede the first as `--resume-failed` writes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordConflict {
    /// It supersedes another number of records than came before it.
    #[error("a record for '{id}' supersedes {supersedes} record(s), but {earlier} came before it")]
    Count {
        /// The task.
        id: String,
        /// The records it says it supersedes.
        supersedes: u32,
        /// The records that came before it.
        earlier: u32,
    },
    /// It supersedes a record that ended ok, which is never run again.
    #[error("a record for '{id}' supersedes a record that ended ok")]
    SupersedesOk {
        /// The task.
        id: String,
    },
    /// It supersedes nothing.
    #[error("a second final record for '{id}'")]
    Second {
        /// The task.
        id: String,
    },
}

impl Resumed {
    /// Counts one record read back. A task's last record is the one that counts: a record
    /// that supersedes the task's earlier ones (`supersedes`, written by `resume_failed`)
    /// replaces it, and must count them; any other second record is a conflict.
    pub fn take(&mut self, head: RecordHead) -> Result<(), RecordConflict> {
        let first = self.done.insert(&head.id);
        let records = match (first, head.supersedes, self.not_ok.remove(&head.id)) {
            (true, _, _) => 1,
            (false, Some(n), Some((earlier, status))) if n == earlier => {
                *self.count_of(status) -= 1;
                earlier + 1
            }
            (false, Some(supersedes), Some((earlier, _))) => {
                return Err(RecordConflict::Count { id: head.id, supersedes, earlier });
            }
            (false, Some(_), None) => return Err(RecordConflict::SupersedesOk { id: head.id }),
            (false, None, _) => return Err(RecordConflict::Second { id: head.id }),
        };
        *self.count_of(head.status) += 1;
        if head.status != Status::Ok {
            self.not_ok.insert(head.id, (records, head.status));
        }
        Ok(())
    }

    fn count_of(&mut self, status: Status) -> &mut u64 {
        match status {
            Status::Ok => &mut self.ok,
            Status::Failed => &mut self.failed,
            Status::Quarantined => &mut self.quarantined,
        }
    }
}

/// What the journal writes into.
enum Target {
    /// A duplicate of standard output.
    Stdout(File),
    /// A regular file, locked for this run, and which file it is (device, inode).
    Regular(Flock<File>, (u64, u64), PathBuf),
    /// A device or a FIFO (`/dev/null`, a named pipe): written, neither locked nor synced.
    Special(File),
}

impl Target {
    fn file(&self) -> &File {
        match self {
            Target::Stdout(f) | Target::Special(f) => f,
            Target::Regular(f, ..) => f,
        }
    }
}

/// An open results file.
pub struct Journal {
    out: Target,
    buf: Vec<u8>,
    name: String,
    error: Option<io::Error>,
    /// Records in `buf`.
    buffered: u64,
    /// Records written whole.
    written: u64,
    /// Bytes written since writeback was last started.
    unsynced: u64,
}

/// Start writing back to disk every this many bytes, so the final sync has little left.
const WRITEBACK_EVERY: u64 = 4 << 20;

const FLUSH_BYTES: usize = 1 << 20;

impl Journal {
    /// Opens the target for appending, reading back what it holds when resuming. A regular
    /// file is locked first (`flock`, on the open file: a hard link or a symlink to it is
    /// the same lock), so a second run on it is refused before it reads a byte, and the
    /// lock is held until this journal is dropped, after its last record is synced.
    pub fn open(target: &ResultsTarget, resume: bool) -> Result<(Self, Resumed), JournalError> {
        match target {
            ResultsTarget::Stdout => {
                if resume {
                    return Err(JournalError::ResumeStdout);
                }
                let out = io::stdout()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(|source| JournalError::Io { path: "standard output".into(), source })?;
                Ok((Self::new(Target::Stdout(File::from(out)), "standard output".into()), Resumed::default()))
            }
            ResultsTarget::File(path) => Self::open_file(path, resume),
        }
    }

    fn new(out: Target, name: String) -> Self {
        Self { out, buf: Vec::with_capacity(64 << 10), name, error: None, buffered: 0, written: 0, unsynced: 0 }
    }

    fn open_file(path: &Path, resume: bool) -> Result<(Self, Resumed), JournalError> {
        let io_err = |source| JournalError::Io { path: path.to_path_buf(), source };
        let meta = std::fs::metadata(path).ok();
        if meta.as_ref().is_some_and(|m| m.file_type().is_char_device() || m.file_type().is_fifo()) {
            let file = OpenOptions::new().write(true).open(path).map_err(io_err)?;
            return Ok((Self::new(Target::Special(file), path.display().to_string()), Resumed::default()));
        }
        let file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io_err)?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(f) => f,
            Err((f, Errno::EWOULDBLOCK)) => {
                return Err(JournalError::Locked { path: path.to_path_buf(), holder: lock_holder(&f) });
            }
            Err((_, e)) => return Err(io_err(e.into())),
        };
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(io_err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file")));
        }
        let mut resumed = Resumed::default();
        if meta.len() > 0 {
            resumed = read_back(&mut file, path, resume)?;
            if !resume {
                return Err(JournalError::Exists {
                    path: path.to_path_buf(),
                    records: resumed.ok + resumed.failed + resumed.quarantined,
                });
            }
        }
        let id = (meta.dev(), meta.ino());
        Ok((Self::new(Target::Regular(file, id, path.to_path_buf()), path.display().to_string()), resumed))
    }

    /// Buffers one record.
    pub fn write<O: Serialize + 'static>(&mut self, record: &RecordRef<'_, O>, label: &str) {
        if self.error.is_some() {
            return;
        }
        write_record(&mut self.buf, record, label);
        self.buf.push(b'\n');
        self.buffered += 1;
        if self.buf.len() >= FLUSH_BYTES {
            self.flush();
        }
    }

    /// Writes what is buffered. After a failure the journal keeps the error (see
    /// [`Journal::failure`]) and writes nothing more.
    pub fn flush(&mut self) {
        if self.buf.is_empty() || self.error.is_some() {
            return;
        }
        let (done, result) = write_waiting(self.out.file(), &self.buf);
        if let Err(e) = result {
            // The records wholly written before the failure are there; the rest are not.
            self.written += memchr_count(&self.buf[..done]);
            self.error = Some(e);
        } else {
            self.written += self.buffered;
        }
        self.buffered = 0;
        self.unsynced += done as u64;
        self.buf.clear();
        if let Target::Regular(f, ..) = &self.out
            && self.unsynced >= WRITEBACK_EVERY
        {
            // Ask the kernel to start writing what we wrote (without waiting): the journal
            // reaches the disk as the run goes, and the sync at the end (0.14 s for a
            // million records when it had everything left to do) only waits for the tail.
            self.unsynced = 0;
            // SAFETY: sync_file_range on our own descriptor; offset 0 and length 0 mean the
            // whole file, and SYNC_FILE_RANGE_WRITE only starts writeback.
            unsafe { libc::sync_file_range(std::os::fd::AsRawFd::as_raw_fd(&**f), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
        }
    }

    /// Records written whole so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The write error that stopped the journal, if any.
    pub fn failure(&self) -> Option<OutputFailure> {
        self.error.as_ref().map(|e| OutputFailure::Results {
            path: self.name.clone(),
            error: std::sync::Arc::new(io::Error::new(e.kind(), e.to_string())),
        })
    }

    /// Whether the journal stopped because its reader went away (a closed pipe).
    pub fn broken_pipe(&self) -> bool {
        self.error.as_ref().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    }

    /// Whether `resume` can continue from this journal: a regular file, still at its path.
    pub fn resumable(&self) -> bool {
        matches!(self.out, Target::Regular(..)) && self.lost().is_none()
    }

    /// A results file deleted during the run (no link left), or whose path now names another
    /// file: its records are not where the next `resume` will look.
    pub fn lost(&self) -> Option<OutputFailure> {
        let Target::Regular(f, id, path) = &self.out else { return None };
        let name = path.display().to_string();
        if f.metadata().is_ok_and(|m| m.nlink() == 0) {
            return Some(OutputFailure::ResultsDeleted { path: name, records: self.written });
        }
        match std::fs::metadata(path) {
            Ok(m) if (m.dev(), m.ino()) == *id => None,
            _ => Some(OutputFailure::ResultsReplaced { path: name, records: self.written }),
        }
    }

    /// Flushes and asks the disk to keep it. A target that cannot be synced (a pipe, a
    /// device) is only flushed.
    pub fn finish(&mut self) {
        self.flush();
        if let Target::Regular(f, ..) = &self.out
            && self.error.is_none()
            && let Err(e) = f.sync_data()
            && !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EROFS | libc::ENOTSUP))
        {
            // The records are written; the disk did not confirm it keeps them.
            log::warn!("cannot sync {}: {e}", self.name);
            self.error = Some(e);
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.flush();
    }
}

fn memchr_count(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// Writes all of `buf`, waiting with `poll` whenever the descriptor is non-blocking and full
/// (a standard output that a slow reader set `O_NONBLOCK` on): EAGAIN means "later", never
/// "lost". Returns the bytes written, and the error that stopped it.
pub(crate) fn write_waiting(mut out: &File, buf: &[u8]) -> (usize, io::Result<()>) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut done = 0;
    while done < buf.len() {
        match out.write(&buf[done..]) {
            Ok(0) => return (done, Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLOUT)];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return (done, Err(e.into())),
                }
            }
            Err(e) => return (done, Err(e)),
        }
    }
    (done, Ok(()))
}

/// Whether a run holds the lock of the results file at `path` (it is still being written),
/// and its pid where known. For readers such as `merge`, which read it all the same.
pub fn being_written(path: &Path) -> Option<Option<u32>> {
    let file = File::open(path).ok()?;
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_) => None,
        Err((f, Errno::EWOULDBLOCK)) => Some(lock_holder(&f)),
        Err(_) => None,
    }
}

/// The pid holding a `flock` on `file`, from `/proc/locks` (a line such as
/// `1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234 0 EOF`: pid, then major:minor:inode).
fn lock_holder(file: &File) -> Option<u32> {
    let m = file.metadata().ok()?;
    let (major, minor) = (libc::major(m.dev()), libc::minor(m.dev()));
    let want = format!("{major:02x}:{minor:02x}:{}", m.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&want.as_str())).then(|| f[4].parse().ok()).flatten()
    })
}

/// Writes a record as JSON, the same bytes as serde would (a test checks), without serde's
/// generic map machinery for the fixed fields: on a million tiny records, serializing was a
/// tenth of the supervisor's time.
pub fn write_record<O: Serialize + 'static>(buf: &mut Vec<u8>, r: &RecordRef<'_, O>, label: &str) {
    buf.extend_from_slice(b"{\"id\":");
    write_str(buf, r.id);
    // What the task was (a --cmd task's input, seq, cmd), right beside its id.
    if !label.is_empty() {
        buf.push(b',');
        buf.extend_from_slice(label.as_bytes());
    }
    // Each arm copies bytes of a length known when compiling, which compiles to moves; a
    // slice known only at run time calls memcpy (the status's name and the attempts' digits
    // were two of three calls a record, 33 instructions, callgrind, no-ops).
    match r.status {
        Status::Ok => buf.extend_from_slice(b",\"status\":\"ok\",\"attempts\":"),
        Status::Failed => buf.extend_from_slice(b",\"status\":\"failed\",\"attempts\":"),
        Status::Quarantined => buf.extend_from_slice(b",\"status\":\"quarantined\",\"attempts\":"),
    }
    match u8::try_from(r.attempts) {
        Ok(n @ 0..=9) => buf.push(b'0' + n),
        _ => buf.extend_from_slice(itoa::Buffer::new().format(r.attempts).as_bytes()),
    }
    if let Some(ms) = r.ms {
        buf.extend_from_slice(b",\"ms\":");
        serde_json::to_writer(&mut *buf, &ms).expect("a float serializes");
    }
    if let Some(o) = r.output {
        // The built-in kinds' empty output (every no-op's) is `null`, written here: through
        // serde_json it was 41 instructions a task and more (callgrind, 200,000 no-ops).
        if matches!((o as &dyn std::any::Any).downcast_ref::<BuiltinOutput>(), Some(BuiltinOutput::Nothing)) {
            buf.extend_from_slice(b",\"output\":null");
        } else {
            buf.extend_from_slice(b",\"output\":");
            serde_json::to_writer(&mut *buf, o).expect("outputs serialize to JSON");
        }
    }
    if let Some(v) = r.error {
        buf.extend_from_slice(b",\"error\":");
        write_str(buf, v);
    }
    for (key, value) in [("stdout", r.stdout), ("stderr", r.stderr)] {
        if let Some(c) = value {
            buf.extend_from_slice(b",\"");
            buf.extend_from_slice(key.as_bytes());
            buf.extend_from_slice(b"\":{\"head\":");
            write_str(buf, &c.head);
            buf.extend_from_slice(b",\"head_bytes\":");
            buf.extend_from_slice(itoa::Buffer::new().format(c.head_bytes).as_bytes());
            buf.extend_from_slice(if c.cut { b",\"cut\":true" } else { b",\"cut\":false" });
            buf.extend_from_slice(b",\"bytes\":");
            buf.extend_from_slice(itoa::Buffer::new().format(c.bytes).as_bytes());
            buf.push(b'}');
        }
    }
    if !r.crashes.is_empty() {
        buf.extend_from_slice(b",\"crashes\":");
        serde_json::to_writer(&mut *buf, r.crashes).expect("crashes serialize");
    }
    if !r.skipped.is_empty() {
        buf.extend_from_slice(b",\"skipped\":");
        serde_json::to_writer(&mut *buf, r.skipped).expect("skipped records serialize");
    }
    if let Some(rule) = r.rule {
        buf.extend_from_slice(b",\"rule\":");
        write_str(buf, rule);
    }
    for (key, value) in [("memory_factor", r.memory_factor), ("supersedes", r.supersedes)] {
        if let Some(v) = value {
            buf.extend_from_slice(b",\"");
            buf.extend_from_slice(key.as_bytes());
            buf.extend_from_slice(b"\":");
            buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        }
    }
    if let Some(peak) = r.peak_rss {
        buf.extend_from_slice(b",\"peak_rss\":");
        buf.extend_from_slice(itoa::Buffer::new().format(peak).as_bytes());
    }
    if let Some(n) = r.leaked {
        buf.extend_from_slice(b",\"leaked\":");
        buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }
    buf.push(b'}');
}

/// A JSON string: plain ASCII is copied as it is, anything else goes through serde_json.
fn write_str(buf: &mut Vec<u8>, s: &str) {
    if is_plain(s.as_bytes()) {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        serde_json::to_writer(&mut *buf, s).expect("strings serialize");
    }
}

/// Whether `s` goes between quotes as it is: printable ASCII without `"` or `\\`. Eight bytes
/// at a time, the last word overlapping the one before (byte by byte it was 118 instructions
/// a record for a 7-byte id, callgrind, 200,000 no-ops); a property test holds it to the
/// byte rule.
fn is_plain(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte below `n` (n <= 0x80), exact as to whether there is one when
    // no byte has its high bit set: a borrow may mark the bytes above a marked one.
    let below = |w: u64, n: u64| w.wrapping_sub(ONES * n) & !w & HIGH;
    let plain = |w: u64| {
        let bad = (w & HIGH)
            | below(w, 0x20)
            | below(w ^ (ONES * 0x7f), 1)
            | below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1);
        bad == 0
    };
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("eight bytes"));
    let half = |b: &[u8]| u64::from(u32::from_le_bytes(b.try_into().expect("four bytes")));
    let n = s.len();
    if n >= 8 {
        s.chunks_exact(8).all(|c| plain(word(c))) && plain(word(&s[n - 8..]))
    } else if n >= 4 {
        plain(half(&s[..4]) | (half(&s[n - 4..]) << 32))
    } else {
        s.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    }
}

/// Reads the records of a results file, by the torn-last-line rule of
/// [`crate::input::lines`]. With `repair`, a torn last line is cut off so the file ends at a
/// record boundary, and a last record missing its newline gets one; a repair happens only if
/// the file is still the length that was read.
fn read_back(file: &mut File, path: &Path, repair: bool) -> Result<Resumed, JournalError> {
    let io_err = |source| JournalError::Io { path: path.to_path_buf(), source };
    file.seek(SeekFrom::Start(0)).map_err(io_err)?;
    let mut resumed = Resumed::default();
    let mut lines = Lines::new(BufReader::with_capacity(1 << 20, &mut *file));
    // Where the file is to be cut (a torn line), or that it needs a newline.
    let mut fix = None;
    loop {
        let start = lines.offset();
        let line = match lines.next_line() {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(LineError::Read { source, .. }) => return Err(io_err(source)),
            Err(e @ LineError::TooLong { .. }) => {
                return Err(JournalError::Corrupt {
                    path: path.to_path_buf(),
                    line: e.line(),
                    reason: NotAnItem::TooLong,
                });
            }
        };
        let (number, terminated) = (line.number, line.terminated);
        if line.is_blank() {
            continue;
        }
        match line.judge(serde_json::from_slice::<RecordHead>(line.text)) {
            Judged::Item(head) => {
                if let Err(conflict) = resumed.take(head) {
                    return Err(JournalError::Conflict { path: path.to_path_buf(), line: number, conflict });
                }
                if !terminated {
                    // The record is whole but its newline was not written: add it.
                    fix = Some(Fix::Newline);
                }
            }
            Judged::Torn(e) => {
                log::warn!(
                    "results file {}: line {number} was cut short by a crash ({e}); dropping it",
                    path.display()
                );
                fix = Some(Fix::Cut(start));
            }
            Judged::Bad(e) => {
                return Err(JournalError::Corrupt {
                    path: path.to_path_buf(),
                    line: number,
                    reason: NotAnItem::Json(e),
                });
            }
        }
        if !terminated {
            // The end of the file as it was when this line was read.
            break;
        }
    }
    let read = lines.offset();
    drop(lines);
    let Some(fix) = fix.filter(|_| repair) else { return Ok(resumed) };
    let now = file.metadata().map_err(io_err)?.len();
    if now != read {
        return Err(JournalError::Changed { path: path.to_path_buf(), read, now });
    }
    match fix {
        Fix::Newline => {
            file.seek(SeekFrom::End(0)).map_err(io_err)?;
            file.write_all(b"\n").map_err(io_err)?;
        }
        Fix::Cut(at) => {
            resumed.repaired_bytes = read - at;
            file.set_len(at).map_err(io_err)?;
        }
    }
    Ok(resumed)
}

/// A repair of the results file's end.
enum Fix {
    /// A last record lacks its newline.
    Newline,
    /// A torn last line starts at this offset.
    Cut(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_superseding_record_replaces_the_failure_before_it() {
        let head = |id: &str, status, supersedes| RecordHead { id: id.into(), status, supersedes };
        let mut r = Resumed::default();
        r.take(head("a", Status::Failed, None)).unwrap();
        r.take(head("b", Status::Quarantined, None)).unwrap();
        r.take(head("c", Status::Ok, None)).unwrap();
        r.take(head("a", Status::Failed, Some(1))).unwrap();
        r.take(head("b", Status::Ok, Some(1))).unwrap();
        assert_eq!((r.ok, r.failed, r.quarantined), (2, 1, 0));
        assert_eq!(r.not_ok.get("a"), Some(&(2, Status::Failed)));
        assert!(!r.not_ok.contains_key("b"));
        // The count must match, an ok record is never superseded, a plain second record is corrupt.
        let a = head("a", Status::Ok, Some(1));
        assert_eq!(r.take(a).unwrap_err(), RecordConflict::Count { id: "a".into(), supersedes: 1, earlier: 2 });
        assert_eq!(
            r.take(head("c", Status::Ok, Some(1))).unwrap_err(),
            RecordConflict::SupersedesOk { id: "c".into() }
        );
        assert_eq!(r.take(head("c", Status::Ok, None)).unwrap_err(), RecordConflict::Second { id: "c".into() });
    }

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
        j.write(&rec.as_ref(), "");
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
        e.stdout = Some(Box::new(shared::record::Captured::of(b"out\n", 9000)));
        e.stderr = Some(Box::new(shared::record::Captured::of(b"\x01err\xff", 5)));
        let mut skipping = Record::new("s".into(), 2, Some(1.5), Ok(serde_json::json!(7)), vec![crash.clone()]);
        skipping.skipped = vec![shared::record::SkippedRecord { index: 37, cause: crash.cause.clone() }];
        skipping.rule = Some("attempts=3".into());
        let records: Vec<Record<serde_json::Value>> = vec![
            skipping,
            Record::new("plain".into(), 1, Some(0.004), Ok(serde_json::Value::Null), vec![]),
            Record::new("ü\"id\\".into(), 2, Some(812.5), Ok(serde_json::json!({"sum": "3"})), vec![crash.clone()]),
            Record::new("f".into(), 1, Some(40.1), Err(e), vec![]),
            Record::quarantined("q".into(), 3, vec![crash.clone(), crash]),
            // Attempts of two digits take the general path.
            Record::quarantined("q10".into(), 12, vec![]),
            Record {
                peak_rss: Some(3 << 20),
                leaked: Some(2),
                ..Record::new("m".into(), 1, Some(1.5), Ok(serde_json::Value::Null), vec![])
            },
        ];
        for r in &records {
            let mut buf = Vec::new();
            write_record(&mut buf, &r.as_ref(), "");
            assert_eq!(String::from_utf8(buf).unwrap(), serde_json::to_string(r).unwrap());
        }
        // The built-in kinds' outputs, the empty one written by hand.
        let builtin = [BuiltinOutput::Nothing, BuiltinOutput::Sum { sum: "14".into() }];
        for (i, o) in builtin.into_iter().enumerate() {
            let r = Record::new(format!("b{i}"), 1, Some(0.25), Ok(o), vec![]);
            let mut buf = Vec::new();
            write_record(&mut buf, &r.as_ref(), "");
            assert_eq!(String::from_utf8(buf).unwrap(), serde_json::to_string(&r).unwrap());
        }
    }

    proptest::proptest! {
        #[test]
        fn plain_strings_are_found_as_byte_by_byte(
            bytes in proptest::collection::vec(proptest::prop_oneof![0x18u8..0x24, 0x5au8..0x5e, 0x7cu8..0x84, proptest::prelude::any::<u8>()], 0..40)
        ) {
            let by_byte = bytes.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
            proptest::prop_assert_eq!(is_plain(&bytes), by_byte);
            if let Ok(s) = std::str::from_utf8(&bytes) {
                let mut buf = Vec::new();
                write_str(&mut buf, s);
                proptest::prop_assert_eq!(String::from_utf8(buf).unwrap(), serde_json::to_string(s).unwrap());
            }
        }
    }

    #[test]
    fn each_bad_byte_is_found_at_each_place() {
        for n in 0..20 {
            let good = vec![b'a'; n];
            assert!(is_plain(&good), "{n}");
            for at in 0..n {
                for bad in [0x00, 0x1f, b'"', b'\\', 0x7f, 0x80, 0xff] {
                    let mut b = good.clone();
                    b[at] = bad;
                    assert!(!is_plain(&b), "{n} {at} {bad:#x}");
                }
            }
        }
    }

    #[test]
    fn dev_null_is_a_fine_target() {
        let (mut j, _) = Journal::open(&ResultsTarget::File("/dev/null".into()), false).unwrap();
        j.write(&shared::record::Record::<()>::quarantined("a".into(), 3, vec![]).as_ref(), "");
        j.finish();
        assert!(j.failure().is_none());
    }
}
