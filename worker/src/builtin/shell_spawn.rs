//! Starting a command's `/bin/sh` as `posix_spawn` does, in a child that shares the worker's
//! memory until it execs (`clone` with `CLONE_VM | CLONE_VFORK`), with the parent-death
//! signal that `posix_spawn` cannot set.
//!
//! `std::process::Command` forks as soon as it must run code in the child (`pre_exec`, here
//! for `PR_SET_PDEATHSIG`): the kernel then copies the worker's page tables and tears the copy
//! down again at the exec, and each page either side writes meanwhile faults. For a trivial
//! command that was a fifth of all the CPU time of a run. The child here runs only system
//! calls on a stack of its own until it execs, and writes nothing of the worker's memory but
//! the error of an exec that failed.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};

/// The child's stack: the signal resets, the descriptors and the exec need little.
const STACK_BYTES: usize = 64 << 10;

/// The descriptors the command gets as its standard input, output and error.
pub(super) struct Stdio<'a> {
    pub stdin: BorrowedFd<'a>,
    pub stdout: BorrowedFd<'a>,
    pub stderr: BorrowedFd<'a>,
}

/// A started `/bin/sh`, leader of a process group of its own (its pgid is its pid).
#[derive(Debug)]
pub(super) struct ShellChild {
    pid: libc::pid_t,
    status: Option<ExitStatus>,
}

impl ShellChild {
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Waits for it to exit and reaps it.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        self.reap(0).map(|s| s.expect("a blocking wait returns a status"))
    }

    /// Its status if it has exited (reaped then), else `None`.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.reap(libc::WNOHANG)
    }

    fn reap(&mut self, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let mut raw = 0;
        loop {
            // SAFETY: waitpid(2) on our own child, with a status word on our stack.
            match unsafe { libc::waitpid(self.pid, &mut raw, flags) } {
                0 => return Ok(None),
                -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
                -1 => return Err(io::Error::last_os_error()),
                _ => {
                    let s = ExitStatus::from_raw(raw);
                    self.status = Some(s);
                    return Ok(Some(s));
                }
            }
        }
    }
}

/// What the child reads (prepared before the clone: it must not allocate) and the one thing
/// it writes.
struct ChildArgs<'a> {
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    fds: [libc::c_int; 3],
    parent: libc::pid_t,
    /// Where the child publishes its process group (its pid) once it leads it, before the
    /// exec: whoever kills the task then finds the command from its first instruction on.
    group: &'a AtomicI32,
    /// The errno of a failed step; 0 while the exec has not failed.
    error: AtomicI32,
}

/// Starts `/bin/sh -c cmd` in a new process group with `stdio`, dying by SIGKILL with the
/// worker, with the worker's environment (`RUST_BACKTRACE` as the user had it), every other
/// descriptor closed by its close-on-exec flag, no signal blocked and every signal the
/// worker handles back at its default (SIGPIPE too, which Rust programs ignore). The child
/// stores its group in `group` before it execs.
pub(super) fn spawn_shell(cmd: &OsStr, stdio: Stdio<'_>, group: &AtomicI32) -> io::Result<ShellChild> {
    let cmd = CString::new(cmd.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the command has a NUL byte"))?;
    let argv_c = [c"/bin/sh".to_owned(), c"-c".to_owned(), cmd];
    let argv: Vec<*const libc::c_char> = argv_c.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
    let envp_c = environment();
    let envp: Vec<*const libc::c_char> = envp_c.iter().map(|e| e.as_ptr()).chain([std::ptr::null()]).collect();
    let args = ChildArgs {
        argv: &argv,
        envp: &envp,
        fds: [stdio.stdin.as_raw_fd(), stdio.stdout.as_raw_fd(), stdio.stderr.as_raw_fd()],
        parent: nix::unistd::getpid().as_raw(),
        group,
        error: AtomicI32::new(0),
    };
    let mut stack = vec![0u8; STACK_BYTES];
    // Every signal blocked across the clone, as posix_spawn does: a handler of the worker's
    // must not run in the child, which shares its memory, before the child has reset it.
    let all = nix::sys::signal::SigSet::all();
    let mut old = nix::sys::signal::SigSet::empty();
    nix::sys::signal::pthread_sigmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&all), Some(&mut old))
        .map_err(io::Error::from)?;
    // SAFETY: the child runs `child` on its own stack (the top of `stack`: it grows down) and
    // only makes system calls until it execs or exits; CLONE_VFORK suspends this thread until
    // then, so `args` and `stack` outlive its use of them.
    let pid = unsafe {
        // The top, 16-byte aligned as the ABI wants a stack.
        let top = stack.as_mut_ptr().add(STACK_BYTES);
        let top = top.sub(top as usize % 16);
        libc::clone(
            child,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&args as *const ChildArgs<'_>).cast_mut().cast(),
        )
    };
    let cloned = io::Error::last_os_error();
    let _ = nix::sys::signal::pthread_sigmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&old), None);
    drop(stack);
    if pid == -1 {
        return Err(cloned);
    }
    let mut started = ShellChild { pid, status: None };
    match args.error.load(Ordering::Acquire) {
        0 => Ok(started),
        errno => {
            let _ = started.wait();
            Err(io::Error::from_raw_os_error(errno))
        }
    }
}

/// The child's environment: the worker's, with `RUST_BACKTRACE` as the user had it.
fn environment() -> Vec<CString> {
    let user = crate::startup::user_backtrace();
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| user.is_none() || k != "RUST_BACKTRACE")
        .filter_map(|(k, v)| CString::new([k.as_bytes(), b"=", v.as_bytes()].concat()).ok())
        .collect();
    if let Some(Some(v)) = user
        && let Ok(e) = CString::new([b"RUST_BACKTRACE=", v.as_bytes()].concat())
    {
        env.push(e);
    }
    env
}

/// The child, until the exec: system calls only (no allocation, no lock, no unwinding).
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive while the parent is suspended.
    let a = unsafe { &*(arg as *const ChildArgs<'_>) };
    let fail = |a: &ChildArgs<'_>| -> libc::c_int {
        a.error.store(io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL), Ordering::Release);
        // SAFETY: _exit(2) ends the child without running anything of the parent's.
        unsafe { libc::_exit(127) }
    };
    // SAFETY: each call below is a plain system call on the child's own state.
    unsafe {
        // The worker's handlers back to their defaults (an ignored signal stays ignored across
        // the exec, as ever, but SIGPIPE, which Rust's runtime ignores, is reset as std does).
        for sig in 1..=libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            if old.sa_sigaction != libc::SIG_DFL && (old.sa_sigaction != libc::SIG_IGN || sig == libc::SIGPIPE) {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        if libc::setpgid(0, 0) != 0 {
            return fail(a);
        }
        a.group.store(libc::getpid(), Ordering::Release);
        // The shell dies with its worker even when the worker is SIGKILLed; one that died
        // already (before the call) is noticed by the parent's pid.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
            return fail(a);
        }
        if libc::getppid() != a.parent {
            libc::_exit(127);
        }
        for (target, &fd) in a.fds.iter().enumerate() {
            let target = target as libc::c_int;
            let done = if fd == target { libc::fcntl(fd, libc::F_SETFD, 0) } else { libc::dup2(fd, target) };
            if done == -1 {
                return fail(a);
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(a.argv[0], a.argv.as_ptr(), a.envp.as_ptr());
    }
    fail(a)
}
