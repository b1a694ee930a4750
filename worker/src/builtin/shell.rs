//! The `shell` kind: `/bin/sh -c CMD` in its own process group, its output's heads kept.
//!
//! The group is published on the status page while the command runs, so a timeout or a
//! death of the worker kills the command and everything it started. When the shell exits,
//! its output pipes are read for [`PIPE_GRACE`] more and then closed, whoever still holds
//! them, and whatever it left running is stopped (SIGTERM, [`STOP_GRACE`], SIGKILL) and
//! counted as `leaked`: its group, and the orphans that left the group (`setsid`, a double
//! fork) and came to the worker, a child subreaper (systemd's control-group rule, by tree).

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use shared::proto::TaskError;
use shared::record::Captured;
use shared::task::BuiltinOutput;

use super::shell_spawn::{self, ShellChild};
use crate::handler::TaskContext;
use crate::procs::ProcTable;
use std::collections::HashSet;

/// Bytes of stdout and stderr kept in a task's record.
pub const HEAD_BYTES: usize = 4096;
/// How long the output pipes stay open after the shell exited, for its last writers.
pub const PIPE_GRACE: Duration = Duration::from_millis(200);
/// SIGTERM to SIGKILL for the processes the command left running.
pub const STOP_GRACE: Duration = Duration::from_millis(200);

pub(super) fn run(
    cmd: &(impl AsRef<std::ffi::OsStr> + ?Sized),
    spool: Option<&Path>,
    cx: &TaskContext<'_>,
) -> Result<BuiltinOutput, TaskError> {
    run_fed(cmd, spool, None, cx)
}

/// A part of a file given to a command as its standard input: the file, and bytes
/// `start..stop` of it (`stop` may lie past its end).
pub(super) struct Feed {
    pub file: std::fs::File,
    pub path: String,
    pub start: u64,
    pub stop: u64,
}

/// As [`run`], with `feed` (if any) as the command's standard input instead of nothing.
pub(super) fn run_fed(
    cmd: &(impl AsRef<std::ffi::OsStr> + ?Sized),
    spool: Option<&Path>,
    feed: Option<Feed>,
    cx: &TaskContext<'_>,
) -> Result<BuiltinOutput, TaskError> {
    let start_err = |e: std::io::Error| TaskError::new(format!("cannot start /bin/sh: {e}"));
    let pipe = || -> Result<(File, File), TaskError> {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| start_err(e.into()))?;
        Ok((File::from(r), File::from(w)))
    };
    let seq = crate::execute::executing().unwrap_or(0);
    let files = spool.map(|root| SpoolFiles::create(root, seq)).transpose()?;
    let input = match &feed {
        Some(_) => Some(pipe()?),
        None => None,
    };
    let outputs = match &files {
        Some(_) => None,
        None => Some((pipe()?, pipe()?)),
    };
    let stdio = shell_spawn::Stdio {
        stdin: input
            .as_ref()
            .map_or_else(|| dev_null().map(|f| f.as_fd()), |(r, _)| Ok(r.as_fd()))
            .map_err(start_err)?,
        stdout: files
            .as_ref()
            .map_or_else(|| outputs.as_ref().map(|o| o.0.1.as_fd()).expect("pipes"), |f| f.out.as_fd()),
        stderr: files
            .as_ref()
            .map_or_else(|| outputs.as_ref().map(|o| o.1.1.as_fd()).expect("pipes"), |f| f.err.as_fd()),
    };
    let spawned = shell_spawn::spawn_shell(cmd.as_ref(), stdio, cx.child_group_cell());
    let mut child = spawned.inspect_err(|_| cx.clear_child_group()).map_err(start_err)?;
    // The child has its own copies of the pipes' other ends; ours must not outlive the spawn,
    // or the reading would never see their end.
    let stdin = input.map(|(_, w)| w);
    let outputs = outputs.map(|((out, _), (err, _))| (out, err));
    let pgid = Pid::from_raw(child.id() as i32);
    let feeder = feed.zip(stdin).map(|(f, pipe)| std::thread::spawn(move || feed_pipe(f, pipe)));
    let heads = outputs.map(|(out, err)| read_heads(&mut child, out, err, cx));
    let status = match &files {
        Some(f) => f.wait_watching(&mut child, cx),
        None => child.wait(),
    };
    // Anything the command left behind goes with it.
    let leftovers = stop_leftovers(pgid);
    cx.add_leaked(leftovers);
    cx.clear_child_group();
    let (stdout, stderr) = match &files {
        Some(f) => f.heads()?,
        None => heads.unwrap_or_default(),
    };
    let status = status.map_err(|e| TaskError::new(format!("cannot wait for /bin/sh: {e}")))?;
    // The group is gone, so the pipe's reading end is closed and the feeder has returned.
    if let Some(fed) = feeder {
        fed.join().map_err(|_| TaskError::new("the feeder of the command's input panicked"))??;
    }
    hold_if_killed_by_the_job_signal(status);
    // From here on every way returns the heads. The files are reused only where nothing the
    // command started can write into them: in a worker process, whose leftovers (its group,
    // and the orphans that come to it) are all found and stopped; thread mode does not see
    // orphans that left the group.
    if let Some(f) = files {
        f.done((&stdout, &stderr), leftovers == 0 && crate::startup::in_worker());
    }
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(BuiltinOutput::Shell { exit: 0, stdout, stderr }),
        (code, signal) => {
            let message = match (code, signal) {
                (Some(c), _) => format!("exit status {c}"),
                (None, Some(s)) => format!(
                    "killed by {}",
                    Signal::try_from(s).map(|s| s.as_str().to_string()).unwrap_or_else(|_| format!("signal {s}"))
                ),
                (None, None) => "ended abnormally".to_string(),
            };
            Err(TaskError { message, stdout: Some(Box::new(stdout)), stderr: Some(Box::new(stderr)), exit: code })
        }
    }
}

fn spool_err(e: std::io::Error) -> TaskError {
    TaskError::new(format!("cannot create the command's output file: {e}"))
}

thread_local! {
    /// This task thread's spool directory, kept after a command whose output was whole in its
    /// heads (so nobody will read its files) for the thread's next command to take over.
    static REUSABLE: std::cell::RefCell<Option<SpoolFiles>> = const { std::cell::RefCell::new(None) };
}

/// The two files a command writes its output into, `out` and `err` in the directory named by
/// the task's seq in the spool directory: where the supervisor finds them by the seq alone,
/// a killed command's included.
///
/// A task thread takes the directory its last command left over when nobody will read it (the
/// output was whole in the record's heads, and nothing the command started is left to write
/// more): renamed to the new seq and its files truncated, one rename and at most two
/// truncations where a fresh pair cost a directory, two creations and two removals (on ext4,
/// ~4x the system time of the reuse, and far more while other writers keep its journal busy).
/// A directory whose files the supervisor will read (output past its head, or not UTF-8) is
/// left to it, which removes it once copied, and the next command starts a fresh one.
struct SpoolFiles {
    root: PathBuf,
    dir: PathBuf,
    out: File,
    err: File,
    /// The bytes in `out` and `err` when the last command that used them ended.
    written: [u64; 2],
}

impl SpoolFiles {
    /// Waits for the shell while the bytes the command writes into its files count as
    /// progress, as the bytes read from its pipes do: their sizes are looked at every 100 ms
    /// while it runs. The wait is a `poll` of the shell's pidfd, which its exit makes
    /// readable at once; a thread per command for it cost a fifth of the rate of trivial
    /// commands. Where the kernel has no pidfd (before Linux 5.3), a thread of its own looks
    /// at the sizes instead.
    fn wait_watching(&self, child: &mut ShellChild, cx: &TaskContext<'_>) -> std::io::Result<std::process::ExitStatus> {
        let mut reported = 0u64;
        let size = |f: &File| f.metadata().map_or(0, |m| m.len());
        // Only bytes that are new: a report of nothing would count as progress all the same,
        // and a quiet command would never stall.
        let mut report = || {
            let written = size(&self.out) + size(&self.err);
            if written > reported {
                cx.progress(written - reported);
                reported = written;
            }
        };
        let Some(pidfd) = pidfd_of(child) else {
            let (done, woken) = std::sync::mpsc::channel::<()>();
            return std::thread::scope(|s| {
                s.spawn(move || {
                    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                        woken.recv_timeout(Duration::from_millis(100))
                    {
                        report();
                    }
                });
                let status = child.wait();
                drop(done);
                status
            });
        };
        loop {
            let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(100u16)) {
                Ok(0) => report(),
                Err(nix::errno::Errno::EINTR) => {}
                // Exited (readable), or a poll that cannot work: the wait says which.
                _ => break,
            }
        }
        child.wait()
    }

    /// The files of task `seq`, in `root`: this thread's last ones emptied and renamed, where
    /// it left any, else new ones.
    fn create(root: &Path, seq: u64) -> Result<Self, TaskError> {
        let dir = root.join(seq.to_string());
        // Taken, not borrowed: a command that ends in any other way than whole heads leaves
        // nothing here, so the supervisor reads its files alone.
        if let Some(mut last) = REUSABLE.take().filter(|s| s.root == root) {
            // Any failure (the directory removed under it) falls back to new files.
            if std::fs::rename(&last.dir, &dir).is_ok() && last.empty().is_ok() {
                last.dir = dir;
                return Ok(last);
            }
        }
        // A directory of this name can only be a leftover of the same attempt: an attempt the
        // supervisor stopped uncharged runs again under a new seq.
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(spool_err(e)),
            _ => {}
        }
        let open = |name: &str| {
            let mut o = std::fs::OpenOptions::new();
            o.read(true).write(true).create(true).truncate(true).open(dir.join(name)).map_err(spool_err)
        };
        Ok(Self { root: root.to_path_buf(), out: open("out")?, err: open("err")?, dir, written: [0, 0] })
    }

    /// Empties both files for a new command: truncated where the last one wrote anything,
    /// and written from their start (the offset is shared with the command's descriptors).
    fn empty(&mut self) -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom};
        for (mut f, written) in [&self.out, &self.err].into_iter().zip(self.written) {
            if written > 0 {
                f.set_len(0)?;
            }
            f.seek(SeekFrom::Start(0))?;
        }
        self.written = [0, 0];
        Ok(())
    }

    /// Each file's head and size.
    fn heads(&self) -> Result<(Captured, Captured), TaskError> {
        let head = |f: &File| -> Result<Captured, TaskError> {
            let bytes = f.metadata().map_err(spool_err)?.len();
            if bytes == 0 {
                return Ok(Captured::default());
            }
            let mut buf = vec![0u8; HEAD_BYTES.min(bytes as usize)];
            let n = f.read_at(&mut buf, 0).map_err(spool_err)?;
            buf.truncate(n);
            Ok(Captured::of(&buf, bytes))
        };
        Ok((head(&self.out)?, head(&self.err)?))
    }

    /// The command is over and its heads go to the supervisor. Where they are whole it
    /// never opens these files: they are kept for this thread's next command where
    /// `reusable` (nothing the command started can still write into them), else removed
    /// here. Otherwise they are the supervisor's to read and remove.
    fn done(mut self, (out, err): (&Captured, &Captured), reusable: bool) {
        self.written = [out.bytes, err.bytes];
        match (out.is_whole() && err.is_whole(), reusable) {
            (true, true) => REUSABLE.set(Some(self)),
            // A straggler that still holds a file writes into an unlinked one.
            (true, false) => {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
            (false, _) => {}
        }
    }
}

/// `/dev/null`, opened once: the standard input of a command that is fed nothing.
fn dev_null() -> std::io::Result<&'static File> {
    static NULL: std::sync::OnceLock<File> = std::sync::OnceLock::new();
    if let Some(f) = NULL.get() {
        return Ok(f);
    }
    let f = File::open("/dev/null")?;
    Ok(NULL.get_or_init(|| f))
}

/// A pidfd of the running `child`: readable once it has exited. `None` where the kernel has
/// none (nix has no `pidfd_open`: the raw call).
fn pidfd_of(child: &ShellChild) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    // SAFETY: a non-negative result is a descriptor that nothing else owns.
    (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Copies the fed part of the file into the command's standard input (the kernel copies file
/// to pipe: `io::copy` uses `sendfile`/`splice` there), then closes it. A command that stops
/// reading early (`head -1`) closes the pipe: that is its choice, not a failure, as in GNU
/// parallel. SIGPIPE is blocked on this thread so that a worker whose program left SIGPIPE at
/// its default gets the error instead of dying.
fn feed_pipe(feed: Feed, mut pipe: File) -> Result<(), TaskError> {
    use std::io::{Seek, SeekFrom};
    let _ = nix::sys::signal::SigSet::from(Signal::SIGPIPE).thread_block();
    let Feed { mut file, path, start, stop } = feed;
    let fail = |e: std::io::Error| TaskError::new(format!("cannot feed {path} from byte {start} to the command: {e}"));
    file.seek(SeekFrom::Start(start)).map_err(fail)?;
    match std::io::copy(&mut std::io::Read::take(file, stop - start), &mut pipe) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(fail(e)),
    }
}

/// A command killed by a signal sent to every process of the job (Slurm's `scancel --full` or
/// time limit, systemd's stop with `KillMode=control-group`) did not fail: this worker got the
/// same signal from the same stranger and ignored it, and the supervisor, which got it too, is
/// draining. The task is held as still running until the drain's grace ends and the
/// supervisor stops this worker, which leaves it unfinished and uncharged, for `--resume`.
/// Should no drain come (the signal did not reach the supervisor), the failure is reported
/// once that time has passed, as it would have been at once. A command that caught the signal
/// and exited with 128 + its number, as shells do, counts as killed by it.
fn hold_if_killed_by_the_job_signal(status: std::process::ExitStatus) {
    use std::time::{Duration, Instant};
    let Some(grace) = crate::startup::drain_grace() else { return };
    let by_code = status.code().filter(|c| (129..160).contains(c)).map(|c| c - 128);
    let Some(sig) = status.signal().or(by_code).filter(|s| crate::startup::JOB_SIGNALS.contains(s)) else {
        return;
    };
    let margin = Duration::from_secs(2);
    let window = (grace + margin).as_nanos() as u64;
    // This worker's own copy may be delivered a moment after the command died of its copy.
    let t0 = Instant::now();
    let at = loop {
        if let Some(at) =
            crate::startup::stranger_sent_at(sig).filter(|&at| crate::clock::mono_ns().saturating_sub(at) <= window)
        {
            break at;
        }
        if t0.elapsed() > Duration::from_millis(200) {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    eprintln!(
        "bulkhead-worker: the task's command died of signal {sig}, sent to the whole job; \
         holding it for the drain, so that it is left for --resume rather than failed"
    );
    let until = at + window;
    std::thread::sleep(Duration::from_nanos(until.saturating_sub(crate::clock::mono_ns())));
}

/// Reads both pipes to the end, keeping the first [`HEAD_BYTES`] of each and reporting every
/// byte read as progress, or until [`PIPE_GRACE`] after the shell exited: what it started may
/// hold a pipe open for ever.
fn read_heads(child: &mut ShellChild, out: File, err: File, cx: &TaskContext<'_>) -> (Captured, Captured) {
    let mut reported = 0u64;
    let (mut out, mut err) = (Some(out), Some(err));
    let (mut out_head, mut err_head) = (Vec::new(), Vec::new());
    let (mut out_more, mut err_more) = (0u64, 0u64);
    let mut buf = [0u8; 16 << 10];
    let mut exited: Option<Instant> = None;
    while out.is_some() || err.is_some() {
        if exited.is_none() && matches!(child.try_wait(), Ok(Some(_))) {
            exited = Some(Instant::now());
        }
        let wait = match exited {
            Some(at) if at.elapsed() >= PIPE_GRACE => break,
            Some(at) => PIPE_GRACE - at.elapsed(),
            None => Duration::from_millis(100),
        };
        let mut fds = Vec::with_capacity(2);
        if let Some(o) = &out {
            fds.push(PollFd::new(o.as_fd(), PollFlags::POLLIN));
        }
        if let Some(e) = &err {
            fds.push(PollFd::new(e.as_fd(), PollFlags::POLLIN));
        }
        let ready = poll(&mut fds, PollTimeout::from(wait.as_millis().clamp(1, 100) as u16)).unwrap_or(0);
        let readable: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
        drop(fds);
        if ready == 0 {
            continue;
        }
        let mut idx = 0;
        if out.is_some() {
            if readable[idx] && !drain(&mut out, &mut out_head, &mut out_more, &mut buf) {
                out = None;
            }
            idx += 1;
        }
        if err.is_some() && readable[idx] && !drain(&mut err, &mut err_head, &mut err_more, &mut buf) {
            err = None;
        }
        let read = (out_head.len() + err_head.len()) as u64 + out_more + err_more;
        cx.progress(read - reported);
        reported = read;
    }
    let total = |head: &[u8], more: u64| head.len() as u64 + more;
    (Captured::of(&out_head, total(&out_head, out_more)), Captured::of(&err_head, total(&err_head, err_more)))
}

/// Stops what the command of group `pgid` left running once its shell exited: the rest of the
/// group, and every descendant of this worker (orphans come here: it is a child subreaper)
/// that is not another running task's, SIGTERM first and SIGKILL after [`STOP_GRACE`]; reaps
/// those that are this worker's children. Returns how many were running. In a hybrid worker
/// an orphan that left the group of another task that is still running cannot be told from
/// this one's and is counted here.
fn stop_leftovers(pgid: Pid) -> u32 {
    if !crate::startup::in_worker() {
        // Thread mode, or a test: the other tasks' groups are not published anywhere this can
        // see, so only this task's own group is known to be its.
        let _ = killpg(pgid, Signal::SIGKILL);
        return 0;
    }
    // The common case without reading /proc (a whole table per command cost a third of
    // the rate of trivial commands): nothing left in the task's group, and no child at all,
    // where an orphan of the task would be one (the worker is a child subreaper).
    let group_empty = killpg(pgid, None) == Err(nix::errno::Errno::ESRCH);
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    if group_empty && nix::sys::wait::waitid(nix::sys::wait::Id::All, flags) == Err(nix::errno::Errno::ECHILD) {
        return 0;
    }
    let me = nix::unistd::getpid().as_raw();
    let find = || -> Vec<i32> {
        let Ok(table) = ProcTable::now() else { return Vec::new() };
        let others: HashSet<i32> =
            crate::startup::other_child_groups(pgid.as_raw()).into_iter().flat_map(|g| table.tree(g)).collect();
        let mut left = Vec::new();
        for p in table.tree(me).into_iter().skip(1).filter(|p| !others.contains(p)) {
            if table.state(p) == Some(b'Z') {
                // Ended by itself: only to be reaped (when it is ours; else its parent's).
                if table.parent(p) == Some(me) {
                    let _ = waitpid(Pid::from_raw(p), Some(WaitPidFlag::WNOHANG));
                }
            } else {
                left.push(p);
            }
        }
        left
    };
    // Counted before any is signalled: one that dies of its SIGTERM is a leftover all the same.
    let left = find();
    let leaked = left.len() as u32;
    let _ = killpg(pgid, Signal::SIGTERM);
    for &p in &left {
        let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
        let _ = kill(Pid::from_raw(p), Signal::SIGCONT);
    }
    let t0 = Instant::now();
    let mut rest = left;
    while !rest.is_empty() {
        if t0.elapsed() >= STOP_GRACE {
            let _ = killpg(pgid, Signal::SIGKILL);
            for &p in &rest {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
        }
        if t0.elapsed() >= STOP_GRACE * 10 {
            eprintln!("bulkhead-worker: {} processes the task left are still there: {rest:?}", rest.len());
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
        rest = find();
    }
    leaked
}

/// One read; false at EOF.
fn drain<R: Read>(pipe: &mut Option<R>, head: &mut Vec<u8>, more: &mut u64, buf: &mut [u8]) -> bool {
    let Some(p) = pipe else { return false };
    match p.read(buf) {
        Ok(0) => false,
        Ok(n) => {
            let keep = n.min(HEAD_BYTES - head.len().min(HEAD_BYTES));
            head.extend_from_slice(&buf[..keep]);
            *more += (n - keep) as u64;
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicI32;

    #[test]
    fn output_heads_and_status() {
        let pg = AtomicI32::new(0);
        let cx = TaskContext::new(1, &pg);
        let ok = run("echo hello; echo oops >&2", None, &cx).unwrap();
        assert_eq!(
            ok,
            BuiltinOutput::Shell { exit: 0, stdout: Captured::of(b"hello\n", 6), stderr: Captured::of(b"oops\n", 5) }
        );
        let err = run("echo partial; exit 7", None, &cx).unwrap_err();
        assert_eq!(err.message, "exit status 7");
        assert_eq!(err.stdout.map(|c| c.head).as_deref(), Some("partial\n"));
        let big = run("yes | head -c 100000", None, &cx).unwrap();
        let BuiltinOutput::Shell { stdout, .. } = big else { unreachable!() };
        // The head is text alone; its size and the total are fields.
        assert_eq!((stdout.head.len(), stdout.head_bytes, stdout.cut, stdout.bytes), (HEAD_BYTES, 4096, true, 100_000));
        assert!(stdout.head.ends_with("y\n"));
        assert_eq!(pg.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    /// Spooled, the whole output is in the files, byte for byte, in the directory named by
    /// the seq (0 outside a task); a command whose heads are whole leaves no directory where
    /// its files cannot be reused (outside a worker process).
    #[test]
    fn spooled_output_is_whole_in_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let pg = AtomicI32::new(0);
        let cx = TaskContext::new(1, &pg);
        let out = run("head -c 200000 /dev/urandom | od -An -tx1; printf 'x\\377y'", Some(dir.path()), &cx).unwrap();
        let BuiltinOutput::Shell { stdout, stderr, .. } = out else { unreachable!() };
        let file = std::fs::read(dir.path().join("0/out")).unwrap();
        assert_eq!(stdout.bytes, file.len() as u64);
        assert!(stdout.cut && file.ends_with(b"x\xffy"));
        assert_eq!(stdout.head_bytes as usize, HEAD_BYTES);
        assert_eq!(stderr, Captured::default());
        assert_eq!(std::fs::read(dir.path().join("0/err")).unwrap(), b"");
        std::fs::remove_dir_all(dir.path().join("0")).unwrap();
        let small = run("echo small", Some(dir.path()), &cx).unwrap();
        assert_eq!(small.streams().unwrap().0.head, "small\n");
        assert!(!dir.path().join("0").exists(), "whole heads need no files");
    }

    /// A task thread's files whose heads were whole are the next command's, renamed to its
    /// seq and empty; files the supervisor will read are never taken over.
    #[test]
    fn whole_heads_leave_their_files_to_the_next_command() {
        use std::io::Write;
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().unwrap();
        let first = SpoolFiles::create(root.path(), 1).unwrap();
        (&first.out).write_all(b"one\n").unwrap();
        (&first.err).write_all(b"oops\n").unwrap();
        let (out, err) = first.heads().unwrap();
        assert_eq!((out.head.as_str(), err.head.as_str()), ("one\n", "oops\n"));
        let inode = first.out.metadata().unwrap().ino();
        first.done((&out, &err), true);
        let second = SpoolFiles::create(root.path(), 2).unwrap();
        assert_eq!(second.out.metadata().unwrap().ino(), inode, "the same file, taken over");
        assert!(!root.path().join("1").exists() && root.path().join("2/out").exists());
        assert_eq!(second.heads().unwrap(), (Captured::default(), Captured::default()));
        // Written from the start again, not after the last command's bytes.
        (&second.out).write_all(b"two").unwrap();
        assert_eq!(std::fs::read(root.path().join("2/out")).unwrap(), b"two");
        // Output the supervisor reads from the files stays where it is, and the next command
        // gets new ones.
        second.done((&Captured::of(b"tw", 3), &Captured::default()), true);
        let third = SpoolFiles::create(root.path(), 3).unwrap();
        assert_ne!(third.out.metadata().unwrap().ino(), inode);
        assert_eq!(std::fs::read(root.path().join("2/out")).unwrap(), b"two");
        // Whole heads whose files cannot be reused are removed.
        third.done((&Captured::default(), &Captured::default()), false);
        assert!(!root.path().join("3").exists());
        let fourth = SpoolFiles::create(root.path(), 4).unwrap();
        assert!(root.path().join("4/err").exists());
        drop(fourth);
    }

    #[test]
    fn a_fed_part_of_a_file_is_the_standard_input() {
        let pg = AtomicI32::new(0);
        let cx = TaskContext::new(1, &pg);
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, b"one\ntwo\nthree\n").unwrap();
        let feed = |start, stop| Some(Feed { file: f.reopen().unwrap(), path: "f".into(), start, stop });
        let out = run_fed("cat", None, feed(4, 8), &cx).unwrap();
        let stdout = Captured::of(b"two\n", 4);
        assert_eq!(out, BuiltinOutput::Shell { exit: 0, stdout, stderr: Captured::default() });
        let out = run_fed("cat", None, feed(4, u64::MAX), &cx).unwrap();
        let stdout = Captured::of(b"two\nthree\n", 10);
        assert_eq!(out, BuiltinOutput::Shell { exit: 0, stdout, stderr: Captured::default() });
        // A command that does not read its input is no failure of the feeding.
        let big = tempfile::NamedTempFile::new().unwrap();
        big.as_file().set_len(64 << 20).unwrap();
        let out = run_fed(
            "head -c 2",
            None,
            Some(Feed { file: big.reopen().unwrap(), path: "b".into(), start: 0, stop: u64::MAX }),
            &cx,
        );
        assert!(matches!(out, Ok(BuiltinOutput::Shell { exit: 0, .. })), "{out:?}");
    }

    #[test]
    fn a_background_straggler_does_not_hold_the_task() {
        let pg = AtomicI32::new(0);
        let cx = TaskContext::new(1, &pg);
        let t = std::time::Instant::now();
        let out = run("sleep 30 & echo $!", None, &cx).unwrap();
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        let BuiltinOutput::Shell { exit: 0, stdout, .. } = out else { panic!("{out:?}") };
        // ...and does not outlive it: the group was killed (a zombie until init reaps it).
        let pid: i32 = stdout.head.trim().parse().unwrap();
        let gone = || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        };
        while !gone() {
            assert!(t.elapsed() < std::time::Duration::from_secs(10), "the straggler {pid} is still running");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
