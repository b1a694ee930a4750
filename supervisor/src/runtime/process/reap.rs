//! Reaping: the workers we know of by pid, and, as a subreaper, any orphan; each wait status
//! becomes an [`ExitCause`] through its one conversion.
//!
//! Only known pids are reaped: a `waitpid(-1)` would steal statuses from `Child::wait`
//! elsewhere in a program that uses bulkhead as a library (measured: `Child::wait` got ECHILD
//! in 1 to 4 runs of 20).

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::engine::ExitCause;

/// Reaps `pid` if it has ended, without blocking.
pub fn try_reap(pid: u32) -> Option<ExitCause> {
    loop {
        match waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)) {
            Ok(status) => return ExitCause::from_wait(status),
            Err(nix::Error::EINTR) => continue,
            // ECHILD: not our child (any more); nothing to reap.
            Err(_) => return None,
        }
    }
}

/// Waits for `pid` to end.
pub fn reap_blocking(pid: u32) -> Option<ExitCause> {
    loop {
        match waitpid(Pid::from_raw(pid as i32), None) {
            Ok(status) => {
                if let Some(c) = ExitCause::from_wait(status) {
                    return Some(c);
                }
            }
            Err(nix::Error::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

/// Reaps any child that has ended, without blocking (subreaper mode only).
pub fn try_reap_any() -> Option<(u32, ExitCause)> {
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return None,
            Ok(status) => {
                let pid = status.pid()?.as_raw() as u32;
                match ExitCause::from_wait(status) {
                    Some(c) => return Some((pid, c)),
                    None => continue,
                }
            }
            Err(nix::Error::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

/// Reaps the orphans a subreaper collected, waiting up to `patience` for those killed a
/// moment ago to finish dying. Anything still alive after that (a task's descendant that
/// left its process group) is left to init when we exit.
pub fn reap_orphans(patience: std::time::Duration) {
    let start = std::time::Instant::now();
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {
                if start.elapsed() >= patience {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Ok(_) | Err(nix::Error::EINTR) => {}
            // ECHILD: no children left.
            Err(_) => return,
        }
    }
}
