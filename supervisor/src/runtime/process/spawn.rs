//! Starting one worker process.
//!
//! The worker is the program's own executable (or one the user names) started with a marker
//! in its environment, through `std::process::Command` without `pre_exec`, which keeps std on
//! its posix_spawn path: about 1 ms from spawn to ready whatever the supervisor's size, where
//! a fork would copy page tables (45 ms at 1 GiB). Everything a worker must set up for itself
//! (parent-death signal, address-space limit, moving the socket) it does in its own start-up.
//!
//! The connection is one end of a socketpair, handed over as the worker's stdin: no file, no
//! address anyone else could connect to, and an exact EOF when the worker dies. The status
//! page (a memfd) travels with the hello frame as an attached descriptor.

use std::ffi::OsString;
use std::io::{self, IoSlice, PipeReader};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use nix::unistd::Pid;
use shared::PROTOCOL_VERSION;
use shared::frame;
use shared::proto::{Hello, ToWorker};
use worker::env;
use worker::statuspage::StatusPage;

use crate::engine::SlotIndex;

/// The program that serves as a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerProgram {
    /// Its path.
    pub exe: PathBuf,
    /// Arguments to start it with (the marker is in the environment, so usually none).
    pub args: Vec<OsString>,
}

impl WorkerProgram {
    /// The running executable, which must call [`worker::serve_if_worker`] first thing in
    /// `main`.
    pub fn current() -> io::Result<Self> {
        Ok(Self { exe: std::env::current_exe()?, args: Vec::new() })
    }

    /// For the built-in kinds: `bulkhead-worker` beside this executable when it is there and
    /// of this very build (a small program, so each worker costs less memory), else this
    /// executable itself. Asking the sibling its build id costs one start, once per run.
    pub fn builtin() -> io::Result<Self> {
        let me = std::env::current_exe()?;
        let sibling = me.with_file_name("bulkhead-worker");
        let same_build = sibling.is_file()
            && Command::new(&sibling)
                .arg("--build-id")
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .env_remove(env::WORKER)
                .output()
                .is_ok_and(|o| o.status.success() && o.stdout.trim_ascii() == worker::BUILD_ID.as_bytes());
        if sibling.is_file() && !same_build {
            log::info!("{} is from another build; workers run {}", sibling.display(), me.display());
        }
        Ok(Self { exe: if same_build { sibling } else { me }, args: Vec::new() })
    }
}

/// How to start workers.
#[derive(Debug, Clone)]
pub struct SpawnConfig {
    /// The program.
    pub program: WorkerProgram,
    /// The handler it must serve.
    pub handler: String,
    /// That handler's value, postcard-encoded, for the hello.
    pub config: std::sync::Arc<[u8]>,
    /// Task threads per worker.
    pub threads: u32,
    /// Heartbeat interval.
    pub heartbeat_ms: u32,
    /// Address-space limit (`RLIMIT_AS`) per worker.
    pub address_space_limit: Option<u64>,
    /// The resident memory each worker and its tasks' processes may use together (sampled by
    /// the supervisor, not set in the worker).
    pub memory_limit: Option<u64>,
    /// The drain's grace, when the supervisor drains on signals.
    pub drain_grace: Option<std::time::Duration>,
    /// Workers mark each task's start on stderr, so that every line is known to be its
    /// task's (one small write per task, so only when lines are shown or kept by task).
    pub task_marks: bool,
    /// The handler's `log` records reach the supervisor up to this level.
    pub log_level: log::LevelFilter,
}

/// A started worker, not yet ready.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid, which is also its process group.
    pub pid: u32,
    /// The supervisor's end of its socket, non-blocking.
    pub sock: UnixStream,
    /// Its stdout and stderr, non-blocking.
    pub stderr: PipeReader,
    /// Its status page.
    pub page: StatusPage,
}

/// Starts a worker and sends it its hello.
pub fn spawn_worker(cfg: &SpawnConfig, slot: SlotIndex) -> io::Result<Spawned> {
    let (ours, theirs) = UnixStream::pair()?;
    let (page, page_fd) = StatusPage::create(cfg.threads)?;
    let (err_r, err_w) = std::io::pipe()?;
    let mut cmd = Command::new(&cfg.program.exe);
    cmd.args(&cfg.program.args)
        .env(env::WORKER, &cfg.handler)
        .env(env::SUPERVISOR_PID, std::process::id().to_string())
        .env(env::JOB_SLOT, (slot.0 as u64 * u64::from(cfg.threads.max(1)) + 1).to_string())
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        // The worker's stdout is not ours to share: results go to our stdout alone. What a
        // handler prints lands in the stderr pipe with everything else it says.
        .stdout(Stdio::from(err_w.try_clone()?))
        .stderr(Stdio::from(err_w))
        .process_group(0);
    match cfg.address_space_limit {
        Some(limit) => cmd.env(env::ADDRESS_SPACE_LIMIT, limit.to_string()),
        None => cmd.env_remove(env::ADDRESS_SPACE_LIMIT),
    };
    match cfg.drain_grace {
        Some(g) => cmd.env(env::DRAIN_GRACE_MS, g.as_millis().to_string()),
        None => cmd.env_remove(env::DRAIN_GRACE_MS),
    };
    if cfg.task_marks {
        cmd.env(env::TASK_MARKS, "1");
    } else {
        cmd.env_remove(env::TASK_MARKS);
    }
    cmd.env(env::LOG_LEVEL, cfg.log_level.as_str());
    // A panicking worker with RUST_BACKTRACE=1 took ~100 ms to die instead of 0.4 ms
    // (measured on the 2-core development VM), so workers get 0 unless asked.
    if std::env::var_os("BULKHEAD_WORKER_BACKTRACE").is_none() {
        cmd.env(env::USER_BACKTRACE, std::env::var_os("RUST_BACKTRACE").unwrap_or_default());
        cmd.env("RUST_BACKTRACE", "0");
    }
    let child = cmd.spawn()?;
    let pid = child.id();
    // The Command keeps the child's ends of the socket and pipe open until it is dropped; we
    // would then never see EOF.
    drop(cmd);
    drop(child);
    let hello = ToWorker::Hello(Hello {
        version: PROTOCOL_VERSION,
        handler: cfg.handler.clone(),
        threads: cfg.threads,
        heartbeat_ms: cfg.heartbeat_ms,
        config: cfg.config.to_vec(),
    });
    let bytes = frame::encode(&hello).map_err(io::Error::other)?;
    let sent = match send_with_fd(ours.as_raw_fd(), &bytes, page_fd.as_raw_fd()) {
        // The worker is already gone (a program that exits at once, before it serves): its
        // death, with its exit status and last words, is for the reaper to report, as any
        // other; calling it a failed start would hide why.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)) => Ok(()),
        other => other,
    }
    .and_then(|()| ours.set_nonblocking(true));
    if let Err(e) = sent.and_then(|()| set_nonblocking(&err_r)) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        crate::runtime::process::reap::reap_blocking(pid);
        return Err(e);
    }
    Ok(Spawned { pid, sock: ours, stderr: err_r, page })
}

fn send_with_fd(sock: RawFd, bytes: &[u8], fd: RawFd) -> io::Result<()> {
    let fds = [fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let mut off = 0;
    while off < bytes.len() {
        let iov = [IoSlice::new(&bytes[off..])];
        // The descriptor goes with the first byte only.
        let cmsgs: &[ControlMessage] = if off == 0 { &cmsg } else { &[] };
        match sendmsg::<()>(sock, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) => off += n,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Sets O_NONBLOCK on a descriptor.
pub fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    let fd = fd.as_fd();
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}
