//! Signals as readable descriptors: signal-hook writes a byte to a socket per delivery, and
//! the event loop polls the read ends with everything else. Nothing runs in signal context
//! beyond that write, and nothing busy-polls. SIGCHLD coalesces (50 children exiting at once
//! gave 35 to 44 wake-ups), so a wake-up only means "reap whatever has ended".

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::signal::Signal;
use signal_hook::SigId;
use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM, SIGTSTP};

use crate::engine::Interrupt;
use crate::runtime::waker::{Wakeup, wake_pair};

/// What a signal's descriptor asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    /// SIGCHLD: a child changed state; reap.
    Child,
    /// SIGTSTP (Ctrl-Z): stop the workers, then the supervisor itself.
    Suspend,
    /// A signal that drains the run: the engine's own [`Interrupt`] (SIGINT, SIGTERM, or
    /// another whose default would end the process: SIGHUP from a closed terminal,
    /// SIGUSR1/SIGUSR2 as Slurm's `--signal` warning before a time limit, SIGALRM).
    Drain(Interrupt),
}

/// The signals that drain a run like SIGTERM, besides SIGINT and SIGTERM themselves.
const DRAIN_SIGNALS: [Signal; 4] = [Signal::SIGHUP, Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGALRM];

/// The registered signal pipes; unregistered on drop.
#[derive(Debug)]
pub struct Signals {
    pipes: Vec<(Sig, Wakeup)>,
    ids: Vec<SigId>,
}

impl Signals {
    /// Registers SIGCHLD, and SIGINT, SIGTERM, SIGHUP, SIGUSR1/2 and SIGALRM when `interrupts` (the
    /// library leaves those to the program unless asked).
    pub fn new(interrupts: bool) -> io::Result<Self> {
        let mut s = Self { pipes: Vec::new(), ids: Vec::new() };
        s.add(Sig::Child, SIGCHLD)?;
        if interrupts {
            // A signal the parent set to be ignored stays ignored, as POSIX shells expect:
            // `nohup bulkhead run ...` must survive its terminal's SIGHUP, and a background
            // job of a script its SIGINT.
            if !ignored(SIGINT) {
                s.add(Sig::Drain(Interrupt::Int), SIGINT)?;
            }
            s.add(Sig::Drain(Interrupt::Term), SIGTERM)?;
            // The workers are in process groups of their own, so the terminal's Ctrl-Z
            // reaches only the supervisor: it stops them itself.
            if !ignored(SIGTSTP) {
                s.add(Sig::Suspend, SIGTSTP)?;
            }
            for sig in DRAIN_SIGNALS {
                if !ignored(sig as i32) {
                    s.add(Sig::Drain(Interrupt::Other(sig as i32)), sig as i32)?;
                }
            }
        }
        Ok(s)
    }

    fn add(&mut self, sig: Sig, num: i32) -> io::Result<()> {
        let (r, w) = wake_pair()?;
        self.ids.push(signal_hook::low_level::pipe::register(num, w)?);
        self.pipes.push((sig, r));
        Ok(())
    }

    /// The descriptors to poll.
    pub fn fds(&self) -> impl Iterator<Item = (Sig, BorrowedFd<'_>)> {
        self.pipes.iter().map(|(s, p)| (*s, p.as_fd()))
    }

    /// Empties the pipe of `sig`; returns how many deliveries it held.
    pub fn drain(&mut self, sig: Sig) -> usize {
        self.pipes.iter().find(|(s, _)| *s == sig).map_or(0, |(_, p)| p.drain())
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Whether `sig` is set to be ignored (inherited from the parent: `nohup`, a shell's
/// background job).
fn ignored(sig: i32) -> bool {
    // SAFETY: sigaction is plain data, for which all zeroes is a valid value.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `old`.
    let rc = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) };
    rc == 0 && old.sa_sigaction == libc::SIG_IGN
}
