//! What a worker does before it serves: tie its life to the supervisor's, bound its memory,
//! move the inherited socket out of the way, and arrange that its task's children die with
//! it. All of this happens here and not in a `pre_exec` closure of the supervisor: any
//! `pre_exec` moves std's spawn from posix_spawn (vfork) to plain fork, measured at 45 ms per
//! spawn for a supervisor holding 1 GiB instead of about 1.2 ms from spawn to a ready worker.

use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, OnceLock};

use nix::fcntl::{FcntlArg, fcntl};
use nix::sys::prctl;
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::{Pid, dup2_stdin, getppid};

use crate::env;
use crate::statuspage::StatusPage;

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The supervisor died before the worker could tie itself to it.
    #[error("the supervisor (pid {0}) is already gone")]
    Orphaned(i32),
    /// fd 0 is not a socket: someone started the worker by hand.
    #[error("not started by a bulkhead supervisor: standard input is not a socket")]
    NoSocket,
    /// A system call failed.
    #[error("failed to {what}")]
    Sys {
        /// What was attempted.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> StartupError {
    move |e| StartupError::Sys { what, source: e.into() }
}

/// Steps that must come first, in a single-threaded process. Returns the supervisor socket.
pub(crate) fn prepare() -> Result<UnixStream, StartupError> {
    // Die with the supervisor, even when it is SIGKILLed. The signal follows the supervisor
    // thread that spawned us, which is its long-lived event-loop thread.
    prctl::set_pdeathsig(Signal::SIGKILL).map_err(sys("arm the parent-death signal"))?;
    if let Some(expected) = std::env::var(env::SUPERVISOR_PID).ok().and_then(|p| p.parse::<i32>().ok()) {
        if getppid() != Pid::from_raw(expected) {
            // It died between our fork and the prctl: the signal will never come.
            return Err(StartupError::Orphaned(expected));
        }
        SUPERVISOR.store(expected, std::sync::atomic::Ordering::Relaxed);
    }
    if let Some(limit) = std::env::var(env::ADDRESS_SPACE_LIMIT).ok().and_then(|v| v.parse::<u64>().ok()) {
        setrlimit(Resource::RLIMIT_AS, limit, limit).map_err(sys("set the address-space limit"))?;
    }
    // A task's orphans (after `setsid`, a double fork, a daemonizing program) come to the
    // worker instead of init, so that they stay in its tree: the memory watch counts them, and
    // the shell kind stops what its command left behind.
    prctl::set_child_subreaper(true).map_err(sys("become a child subreaper"))?;
    let _ = prctl::set_name(c"bulkhead-worker");
    // The markers must not leak into the environment of the task's own children: a task that
    // runs `bulkhead` would otherwise become a worker.
    let _ = USER_BACKTRACE.set(std::env::var_os(env::USER_BACKTRACE));
    if let Some(ms) = std::env::var(env::DRAIN_GRACE_MS).ok().and_then(|v| v.parse::<u64>().ok()) {
        let _ = DRAIN_GRACE.set(std::time::Duration::from_millis(ms));
    }
    let level = std::env::var(env::LOG_LEVEL).ok().and_then(|v| v.parse::<log::LevelFilter>().ok());
    let _ = OUTPUT.set(Output { task_marks: std::env::var_os(env::TASK_MARKS).is_some(), log_level: level });
    // SAFETY: no other thread exists yet, so nothing reads the environment concurrently.
    unsafe {
        std::env::remove_var(env::WORKER);
        std::env::remove_var(env::SUPERVISOR_PID);
        std::env::remove_var(env::ADDRESS_SPACE_LIMIT);
        std::env::remove_var(env::USER_BACKTRACE);
        std::env::remove_var(env::DRAIN_GRACE_MS);
        std::env::remove_var(env::TASK_MARKS);
        std::env::remove_var(env::LOG_LEVEL);
    }
    take_socket()
}

/// Moves the socket from fd 0 to a close-on-exec descriptor and puts /dev/null on fd 0, so
/// that the task's children neither inherit the socket (the supervisor would never see EOF)
/// nor read from it.
fn take_socket() -> Result<UnixStream, StartupError> {
    let stat = nix::sys::stat::fstat(std::io::stdin()).map_err(|_| StartupError::NoSocket)?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(StartupError::NoSocket);
    }
    let fd = fcntl(std::io::stdin(), FcntlArg::F_DUPFD_CLOEXEC(3))
        .map_err(|e| StartupError::Sys { what: "move the socket off stdin", source: e.into() })?;
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let null = File::open("/dev/null").map_err(|source| StartupError::Sys { what: "open /dev/null", source })?;
    dup2_stdin(&null).map_err(|e| StartupError::Sys { what: "put /dev/null on stdin", source: e.into() })?;
    Ok(UnixStream::from(sock))
}

static PAGE: OnceLock<&'static StatusPage> = OnceLock::new();
/// See [`env::USER_BACKTRACE`]; unset outside a worker.
static USER_BACKTRACE: OnceLock<Option<std::ffi::OsString>> = OnceLock::new();

/// What a task's child command gets for `RUST_BACKTRACE`, where the supervisor turned it off
/// for the worker itself (a backtrace makes each panicking worker ~100 ms slower to die; a
/// user's own program run by a shell task is none of that): `None`, the worker's own
/// environment as it is; `Some(None)`, none; `Some(Some(v))`, the user's `v`.
pub(crate) fn user_backtrace() -> Option<Option<&'static std::ffi::OsStr>> {
    match USER_BACKTRACE.get() {
        Some(Some(v)) if v.is_empty() => Some(None),
        Some(Some(v)) => Some(Some(v.as_os_str())),
        _ => None,
    }
}

/// The supervisor's pid: the only sender whose SIGTERM a worker obeys.
static SUPERVISOR: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
/// The signals a cluster engine or systemd sends to every process of a job, which a worker
/// takes only from its supervisor.
pub(crate) const JOB_SIGNALS: [i32; 4] = [libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2];
/// When a stranger last sent each of [`JOB_SIGNALS`] (monotonic ns; 0: never), each its own,
/// so that a SIGHUP right after a SIGTERM (systemd's SendSIGHUP) does not hide it.
static STRANGER_AT_NS: [std::sync::atomic::AtomicU64; 4] = [const { std::sync::atomic::AtomicU64::new(0) }; 4];
/// What the supervisor asked of the worker's stderr: see [`env::TASK_MARKS`] and
/// [`env::LOG_LEVEL`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output {
    /// Mark each task's start.
    pub task_marks: bool,
    /// Forward `log` records up to this level; `None`: install no logger.
    pub log_level: Option<log::LevelFilter>,
}
static OUTPUT: OnceLock<Output> = OnceLock::new();

/// What the supervisor asked of this worker's stderr (nothing, outside a worker).
pub(crate) fn output() -> Output {
    OUTPUT.get().copied().unwrap_or(Output { task_marks: false, log_level: None })
}
/// See [`env::DRAIN_GRACE_MS`]; unset outside a worker.
static DRAIN_GRACE: OnceLock<std::time::Duration> = OnceLock::new();

/// The supervisor's drain grace, when this is a worker of a supervisor that drains.
pub(crate) fn drain_grace() -> Option<std::time::Duration> {
    DRAIN_GRACE.get().copied()
}

/// When a stranger last sent this worker `sig` (monotonic ns), if ever.
pub(crate) fn stranger_sent_at(sig: i32) -> Option<u64> {
    let i = JOB_SIGNALS.iter().position(|&s| s == sig)?;
    Some(STRANGER_AT_NS[i].load(std::sync::atomic::Ordering::Acquire)).filter(|&at| at != 0)
}
static CHILD_GROUPS: Mutex<usize> = Mutex::new(0);

/// Installs the worker's handler of SIGTERM and of the other signals that cluster engines
/// send to a whole job (SIGHUP, SIGUSR1, SIGUSR2). It obeys them only from its supervisor (a
/// timeout's polite kill, or the parent-death signal, which the kernel sends in the dying
/// parent's name): it SIGKILLs every child process group published on the status page, then
/// lets the signal end the worker as usual. From anyone else they are ignored: Slurm's
/// `scancel` (and its `--signal` warning before a time limit), a Kubernetes pod's termination
/// or systemd's stop signal every process of the job, and the worker must not die of it while
/// the supervisor, which got its own, drains the batch; a task killed that way would be
/// charged as a crash instead of being left for resume. (A handler, not SIG_IGN: the task's
/// own child processes get the default actions back when they exec. SIGALRM is left alone: a
/// handler's own `alarm()` must still work. A signal the supervisor was started with ignored,
/// as under `nohup`, stays ignored for the tasks too. SA_RESTART, so that an ignored signal
/// does not interrupt the task's blocking calls.)
pub(crate) fn guard_children(page: &'static StatusPage) -> Result<(), StartupError> {
    let _ = PAGE.set(page);
    let flags = SaFlags::SA_SIGINFO | SaFlags::SA_RESTART;
    let action = SigAction::new(SigHandler::SigAction(on_term), flags, SigSet::empty());
    for sig in JOB_SIGNALS.map(|s| Signal::try_from(s).expect("a job signal is a signal")) {
        // SAFETY: `on_term` only does async-signal-safe things: atomic loads and stores,
        // clock_gettime(2), kill(2), signal(2), raise(3).
        let old = unsafe { signal::sigaction(sig, &action) }.map_err(sys("install the signal handlers"))?;
        if sig != Signal::SIGTERM && matches!(old.handler(), SigHandler::SigIgn) {
            // SAFETY: restoring the disposition the process started with.
            unsafe { signal::sigaction(sig, &old) }.map_err(sys("install the signal handlers"))?;
        }
    }
    Ok(())
}

extern "C" fn on_term(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let supervisor = SUPERVISOR.load(std::sync::atomic::Ordering::Relaxed);
    // SAFETY: the kernel passes a valid siginfo with SA_SIGINFO.
    let sender = if info.is_null() { 0 } else { unsafe { (*info).si_pid() } };
    if supervisor != 0 && sender != supervisor {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime(2) is async-signal-safe; `ts` is a valid timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let now = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
        if let Some(i) = JOB_SIGNALS.iter().position(|&s| s == sig) {
            STRANGER_AT_NS[i].store(now.max(1), std::sync::atomic::Ordering::Release);
        }
        return;
    }
    if let Some(page) = PAGE.get() {
        for slot in page.slots() {
            let pgid = slot.child_pgid.load(std::sync::atomic::Ordering::Acquire);
            if pgid > 0 {
                // SAFETY: kill(2) is async-signal-safe.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
        }
    }
    // Back to the default action, and again: the worker dies by this signal. It is blocked
    // while this handler runs, so it is delivered as the handler returns.
    // SAFETY: signal(2) and raise(3) are async-signal-safe.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Called when a task publishes a child process group. While any exists, the parent-death
/// signal is SIGTERM, whose handler kills the groups: a plain SIGKILL would leave the task's
/// grandchildren running after a SIGKILLed supervisor. Without children it is SIGKILL again,
/// which also ends a worker that is stopped (a `freeze`), where a handler could not run.
pub(crate) fn child_group_started() {
    if !in_worker() {
        return;
    }
    let mut n = CHILD_GROUPS.lock().unwrap_or_else(|e| e.into_inner());
    if *n == 0 {
        let _ = prctl::set_pdeathsig(Signal::SIGTERM);
    }
    *n += 1;
}

/// Called when a task's child process group is gone.
pub(crate) fn child_group_finished() {
    if !in_worker() {
        return;
    }
    let mut n = CHILD_GROUPS.lock().unwrap_or_else(|e| e.into_inner());
    *n = n.saturating_sub(1);
    if *n == 0 {
        let _ = prctl::set_pdeathsig(Signal::SIGKILL);
    }
}

/// The child process groups that the worker's other tasks have published, besides `mine`.
pub(crate) fn other_child_groups(mine: i32) -> Vec<i32> {
    let Some(page) = PAGE.get() else { return Vec::new() };
    page.slots()
        .iter()
        .map(|s| s.child_pgid.load(std::sync::atomic::Ordering::Acquire))
        .filter(|&g| g > 0 && g != mine)
        .collect()
}

pub(crate) fn in_worker() -> bool {
    PAGE.get().is_some()
}
