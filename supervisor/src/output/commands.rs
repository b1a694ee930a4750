//! A command run's own output: each command's stdout on our stdout and its stderr on our
//! stderr, whole, byte for byte, one command's group at a time, in completion order or (with
//! `-k`) in input order; and the one line on stderr that each failed or quarantined command
//! gets.
//!
//! The workers' commands write straight into the files `out` and `err` of a directory named
//! by their assignment's seq in a private spool directory (`worker::builtin::Builtin::spooling`).
//! A command whose streams are whole in its record's heads is written from them, and its
//! directory is left alone: its worker takes it over for its next command. Any other (output
//! past its head, or not UTF-8, or a command killed with its worker) has its files copied
//! to our outputs (`sendfile`, no copy in our memory), and its directory removed. A command
//! `-k` holds behind a slower one costs only its entry here: its output stays in its files
//! until its turn (its worker starts new ones), so memory is bounded whatever it printed and
//! however long it waits.
//!
//! The output thread is not woken for each task. After a batch it lingers [`LINGER`] for the
//! next tasks, which the loop leaves in its mailbox without a system call, and it sleeps until
//! told only after a linger in which none came; what it writes goes out in one write per
//! stream per batch. A wake-up and a write for each of 2,000 trivial commands on 2 workers
//! cost about 9% of their rate.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use shared::record::Status;

use crate::engine::Seq;
use crate::pool::Concluded;

/// Bytes read from the end of a command's stderr for the last line of its failure line.
const TAIL_BYTES: u64 = 4096;
/// How long the output thread waits for more tasks after a batch before it sleeps until
/// told: the longest a concluded command's output waits to be written.
pub const LINGER: Duration = Duration::from_millis(5);

/// The failure line of a task, printed when its output is.
#[derive(Debug, Clone)]
struct Failure {
    /// Its place in the run's input, from 1 (a `--cmd` task's `{#}`).
    number: u64,
    /// Its input line (`--cmd`), else its id.
    id: String,
    /// What it ended with: the error, or the cause of its last crash.
    why: String,
    /// The last line of its stderr head (records mode; with spool files, the file's own).
    last: Option<String>,
}

/// A concluded task waiting for its turn under `-k`.
#[derive(Debug)]
struct Held {
    /// The seq whose files hold its output; `None`: it has none to show.
    seq: Option<Seq>,
    /// With `--tag`: its input line and a tab, put before each line of its output.
    tag: Option<Vec<u8>>,
    /// Its stdout and stderr where the worker left no file: the whole stream is the head.
    whole: [Option<String>; 2],
    failure: Option<Failure>,
}

/// Where the commands' output goes. The copying happens on a thread of its own, so that a
/// command printing a gigabyte, or a slow reader of our stdout, holds up only the output and
/// never the event loop (which would miss its workers' heartbeats meanwhile).
pub(crate) struct CommandOutput {
    /// `None`: records mode, which prints only failure lines.
    spool: Option<tempfile::TempDir>,
    tag: bool,
    keep_order: bool,
    mailbox: Arc<Mailbox>,
    writer: Option<std::thread::JoinHandle<Option<io::Error>>>,
    /// Set by the writer when a write failed (a closed pipe included).
    broken: Arc<AtomicBool>,
    failed: Option<io::Error>,
}

impl CommandOutput {
    /// The output of a run whose commands write into a fresh spool directory (`spool`), or,
    /// without it, one that prints failure lines alone.
    pub fn new(spool: bool, keep_order: bool, tag: bool) -> io::Result<Self> {
        let spool = match spool {
            true => Some(tempfile::Builder::new().prefix("bulkhead-output-").tempdir()?),
            false => None,
        };
        let dup = |fd: std::os::fd::BorrowedFd<'_>| fd.try_clone_to_owned().map(File::from);
        let broken = Arc::new(AtomicBool::new(false));
        let mut w = Writer {
            dir: spool.as_ref().map(|d| d.path().to_path_buf()),
            keep_order,
            next: 0,
            held: BTreeMap::new(),
            streams: Streams::new(dup(io::stdout().as_fd())?, dup(io::stderr().as_fd())?),
            failed: None,
            broken: broken.clone(),
        };
        let mailbox = Arc::new(Mailbox::default());
        let inbox = mailbox.clone();
        let writer = std::thread::Builder::new().name("bulkhead-output".into()).spawn(move || {
            let mut batch = Vec::new();
            while inbox.wait_for(&mut batch) {
                for (order, h) in batch.drain(..) {
                    w.take(order, h);
                }
                w.flush();
            }
            w.finish();
            w.failed
        })?;
        Ok(Self { spool, tag, keep_order, mailbox, writer: Some(writer), broken, failed: None })
    }

    /// The directory the workers' commands write into.
    pub fn spool_dir(&self) -> Option<PathBuf> {
        self.spool.as_ref().map(|d| d.path().to_path_buf())
    }

    /// After [`finish`](CommandOutput::finish): the first write that failed, once.
    pub fn take_failure(&mut self) -> Option<io::Error> {
        self.failed.take()
    }

    /// Whether a write failed (a closed pipe included): the run should stop.
    pub fn broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Whether a task that ended ok has anything to show or a turn to keep: not in records
    /// mode (which shows only failures) without -k. When not, the run need not call
    /// [`concluded`](Self::concluded) for ok tasks at all (a million no-ops paid a channel
    /// send and a wake-up each, and then a lock each).
    pub fn shows_ok(&self) -> bool {
        self.spool.is_some() || self.keep_order
    }

    /// A task concluded: its output is shown now, or held for its turn.
    pub fn concluded(&mut self, c: &Concluded<'_>) {
        if c.status == Status::Ok && !self.shows_ok() {
            return;
        }
        // Parsed only where it is shown: a failure line, a tag.
        let label =
            (c.status != Status::Ok || self.tag).then(|| crate::engine::lifecycle::TaskLabel::of(c.label)).flatten();
        let failure = (c.status != Status::Ok).then(|| Failure {
            // A --cmd task is named as its user knows it: its {#} and its input line.
            number: label.as_ref().map_or(c.order + 1, |l| l.seq),
            id: label.as_ref().map_or_else(|| c.id.to_string(), |l| l.input.clone()),
            why: match (c.error, c.crashes.last()) {
                (Some(e), _) => e.to_string(),
                (None, Some(crash)) => format!("quarantined after {} attempt(s): {}", c.crashes.len(), crash.cause),
                (None, None) => c.status.to_string(),
            },
            last: c.stderr.and_then(|s| s.last_line()).map(str::to_string),
        });
        // What a killed command printed is shown as far as it got, as GNU parallel shows a
        // job it killed for its --timeout: a timed-out command's, and a quarantined task's
        // last attempt's, which died with its worker. (A command stopped by `--halt now` or a
        // drain never concludes here: it runs again on --resume, and shows its output then.)
        let seq = c.seq.filter(|_| self.spool.is_some());
        let tag = self.tag.then(|| {
            let input = label.as_ref().map(|l| l.input_bytes().into_owned()).unwrap_or_default();
            [&input[..], b"\t"].concat()
        });
        let whole = [c.stdout, c.stderr].map(|s| s.filter(|s| s.is_whole()).map(|s| s.head.clone()));
        self.mailbox.post((c.order, Held { seq, tag, whole, failure }));
    }

    /// The run is over: what is still held (behind tasks that never concluded) goes out in
    /// input order, and everything is written before this returns.
    pub fn finish(&mut self) {
        self.mailbox.close();
        if let Some(w) = self.writer.take() {
            self.failed = match w.join() {
                Ok(failed) => failed,
                Err(_) => Some(io::Error::other("the output thread panicked")),
            };
        }
    }
}

/// What the loop hands the output thread: concluded tasks with their place in the input.
#[derive(Default)]
struct Mailbox {
    mail: Mutex<Mail>,
    woken: Condvar,
}

#[derive(Default)]
struct Mail {
    tasks: Vec<(u64, Held)>,
    /// No more tasks will come.
    closed: bool,
    /// The output thread waits until told (a post must wake it), not for its linger to end.
    asleep: bool,
}

impl Mailbox {
    fn lock(&self) -> MutexGuard<'_, Mail> {
        self.mail.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leaves a task for the output thread, waking it only where it sleeps until told.
    fn post(&self, task: (u64, Held)) {
        let mut mail = self.lock();
        mail.tasks.push(task);
        let wake = std::mem::take(&mut mail.asleep);
        drop(mail);
        if wake {
            self.woken.notify_one();
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.woken.notify_one();
    }

    /// The output thread's wait: the tasks posted since the last batch, into `batch`, after
    /// a linger and (where none came in it) a sleep until one does. `false`: closed, and
    /// every task taken.
    fn wait_for(&self, batch: &mut Vec<(u64, Held)>) -> bool {
        let mut mail = self.lock();
        if mail.tasks.is_empty() && !mail.closed {
            mail = self.woken.wait_timeout(mail, LINGER).unwrap_or_else(|e| e.into_inner()).0;
        }
        while mail.tasks.is_empty() && !mail.closed {
            mail.asleep = true;
            mail = self.woken.wait(mail).unwrap_or_else(|e| e.into_inner());
        }
        mail.asleep = false;
        std::mem::swap(batch, &mut mail.tasks);
        !(mail.closed && batch.is_empty())
    }
}

/// Our stdout and stderr, each buffered for one write per batch. Writing to one first writes
/// out what the other holds, so that on a terminal showing both a command's stdout still
/// comes before its stderr, and its stderr before the next command's stdout.
struct Streams {
    out: BufWriter<File>,
    err: BufWriter<File>,
}

impl Streams {
    fn new(out: File, err: File) -> Self {
        Self { out: BufWriter::with_capacity(64 << 10, out), err: BufWriter::with_capacity(64 << 10, err) }
    }

    /// The stream to write to next, the other one's buffer written out.
    fn to(&mut self, stdout: bool) -> io::Result<&mut BufWriter<File>> {
        let (this, other) = if stdout { (&mut self.out, &mut self.err) } else { (&mut self.err, &mut self.out) };
        other.flush()?;
        Ok(this)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.err.flush()
    }
}

/// The output thread's side: the files, and what `-k` holds.
struct Writer {
    dir: Option<PathBuf>,
    keep_order: bool,
    /// The next task in input order (`-k`).
    next: u64,
    held: BTreeMap<u64, Held>,
    streams: Streams,
    /// The first write that failed; nothing more is written after it.
    failed: Option<io::Error>,
    broken: Arc<AtomicBool>,
}

impl Writer {
    fn take(&mut self, order: u64, h: Held) {
        if !self.keep_order {
            self.show(h);
            return;
        }
        self.held.insert(order, h);
        while let Some(h) = self.held.remove(&self.next) {
            self.next += 1;
            self.show(h);
        }
    }

    fn finish(&mut self) {
        for (_, h) in std::mem::take(&mut self.held) {
            self.show(h);
        }
        self.flush();
    }

    /// Writes out what the streams' buffers hold: the end of a batch.
    fn flush(&mut self) {
        if self.failed.is_none()
            && let Err(e) = self.streams.flush()
        {
            self.failed = Some(e);
        }
        if self.failed.is_some() {
            self.broken.store(true, Ordering::Relaxed);
        }
    }

    fn show(&mut self, h: Held) {
        let mut last = h.failure.as_ref().and_then(|f| f.last.clone());
        if let (Some(seq), Some(spool)) = (h.seq, self.dir.clone()) {
            let dir = spool.join(seq.to_string());
            let (out, err) = (dir.join("out"), dir.join("err"));
            self.copy(&out, h.whole[0].as_deref(), true, h.tag.as_deref());
            // A whole head's last line is the stream's; its file may be another command's by now.
            if h.failure.is_some()
                && h.whole[1].is_none()
                && let Some(l) = last_line_of(&err)
            {
                last = Some(l);
            }
            self.copy(&err, h.whole[1].as_deref(), false, h.tag.as_deref());
            // Only a directory whose files were read is this side's to remove: one whose
            // heads were whole is its worker's, for its next command.
            if h.whole.iter().any(Option::is_none) {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        if let Some(f) = h.failure {
            let line = match last {
                Some(l) => format!("bulkhead: #{} failed ({}): {}: {l}\n", f.number, f.id, f.why),
                None => format!("bulkhead: #{} failed ({}): {}\n", f.number, f.id, f.why),
            };
            if self.failed.is_none()
                && let Err(e) = self.streams.to(false).and_then(|w| w.write_all(line.as_bytes()))
            {
                self.failed = Some(e);
            }
        }
        if self.failed.is_some() {
            self.broken.store(true, Ordering::Relaxed);
        }
    }

    /// Copies a spool file whole to stdout or stderr, or `whole`, the stream's head, where it
    /// is all of it; a file that is not there is an empty stream (a command that never
    /// started).
    fn copy(&mut self, path: &Path, whole: Option<&str>, to_stdout: bool, tag: Option<&[u8]>) {
        if let Some(text) = whole {
            if self.failed.is_some() || text.is_empty() {
                return;
            }
            let written = self.streams.to(to_stdout).and_then(|target| match tag {
                None => target.write_all(text.as_bytes()),
                Some(tag) => write_tagged(text.as_bytes(), target, tag, true).map(drop),
            });
            if let Err(e) = written {
                self.failed = Some(e);
            }
            return;
        }
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                self.failed.get_or_insert(e);
                return;
            }
        };
        if self.failed.is_some() {
            return;
        }
        let copied = self.streams.to(to_stdout).and_then(|target| match tag {
            // File to file, with nothing buffered before it: the kernel copies (sendfile),
            // none of it in our memory.
            None => target.flush().and_then(|()| io::copy(&mut file, target.get_mut())).map(drop),
            Some(tag) => copy_tagged(file, target, tag),
        });
        if let Err(e) = copied {
            self.failed = Some(e);
        }
    }
}

/// Copies `from` to `w` with `tag` before each line, in blocks: a line longer than any
/// buffer (a command that never prints a newline) costs no more memory than a short one.
fn copy_tagged(from: impl io::Read, w: &mut BufWriter<File>, tag: &[u8]) -> io::Result<()> {
    use std::io::BufRead;
    let mut r = io::BufReader::with_capacity(64 << 10, from);
    let mut at_start = true;
    loop {
        let block = r.fill_buf()?;
        if block.is_empty() {
            return Ok(());
        }
        let n = block.len();
        at_start = write_tagged(block, w, tag, at_start)?;
        r.consume(n);
    }
}

/// Writes `block` to `w` with `tag` before each line, the first one only where `at_start`
/// (the block goes on a line the last one began); whether the next block starts a line.
fn write_tagged(block: &[u8], w: &mut BufWriter<File>, tag: &[u8], mut at_start: bool) -> io::Result<bool> {
    for piece in block.split_inclusive(|&b| b == b'\n') {
        if at_start {
            w.write_all(tag)?;
        }
        w.write_all(piece)?;
        at_start = piece.ends_with(b"\n");
    }
    Ok(at_start)
}

/// The last line with text in the last [`TAIL_BYTES`] of a file, without its newline.
fn last_line_of(path: &Path) -> Option<String> {
    let f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    let mut buf = vec![0; (len - start) as usize];
    let n = f.read_at(&mut buf, start).ok()?;
    buf.truncate(n);
    let text = String::from_utf8_lossy(&buf);
    text.lines().rev().map(str::trim_end).find(|l| !l.is_empty()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(n: u64) -> (u64, Held) {
        (n, Held { seq: None, tag: None, whole: [Some(n.to_string()), None], failure: None })
    }

    /// Tasks posted while the output thread lingers or sleeps all reach it, in the order
    /// posted, and a close lets it end only once it has taken every one.
    #[test]
    fn the_mailbox_hands_over_every_task_in_order_then_ends() {
        let mailbox = Arc::new(Mailbox::default());
        let inbox = mailbox.clone();
        let (got_tx, got) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut batch = Vec::new();
            while inbox.wait_for(&mut batch) {
                for (n, _) in batch.drain(..) {
                    got_tx.send(n).unwrap();
                }
            }
        });
        let wait = Duration::from_secs(60);
        mailbox.post(held(0));
        assert_eq!(got.recv_timeout(wait), Ok(0));
        // Asleep until told, once a linger passed with nothing: the post must wake it.
        while !mailbox.lock().asleep {
            std::thread::yield_now();
        }
        mailbox.post(held(1));
        assert_eq!(got.recv_timeout(wait), Ok(1));
        for n in 2..100 {
            mailbox.post(held(n));
        }
        mailbox.close();
        reader.join().unwrap();
        assert_eq!(got.try_iter().collect::<Vec<_>>(), (2..100).collect::<Vec<_>>());
    }
}
