//! The faults a task can carry, each doing the real thing to whatever runs it: in a worker
//! process they kill or break that worker; on a thread of the supervisor (thread mode) the
//! same code takes the whole process down, which is the point of the comparison.

use std::hint::black_box;
use std::time::Duration;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{Signal, kill, raise};
use nix::unistd::getpid;
use shared::task::FaultKind;

/// The most memory an `oom` fault may take from the host when no limit is set.
pub const OOM_CAP: u64 = 768 << 20;

/// Where the protocol faults act: the worker's socket, or nothing in thread mode.
pub trait FaultSite {
    /// Writes bytes that are not a frame to the supervisor; false if there is no stream.
    fn garbage(&self) -> bool;
    /// Closes the connection to the supervisor; false if there is no connection.
    fn disconnect(&self) -> bool;
}

/// Injects `kind` now, on the calling thread. Most faults do not return; `freeze` returns if
/// someone continues the process; `panic` unwinds; `garbage` and `disconnect` return where
/// there is no socket to break (thread mode).
pub fn inject(kind: FaultKind, site: &dyn FaultSite) {
    match kind {
        FaultKind::Panic => panic!("injected fault: panic"),
        FaultKind::Abort => std::process::abort(),
        FaultKind::Segv => segv(),
        FaultKind::Kill => {
            let _ = kill(getpid(), Signal::SIGKILL);
            // SIGKILL is delivered before kill(2) returns to user space; never reached.
            loop {
                std::thread::park();
            }
        }
        FaultKind::Exit => std::process::exit(3),
        FaultKind::Hang => loop {
            std::hint::spin_loop();
        },
        FaultKind::Freeze => {
            let _ = raise(Signal::SIGSTOP);
        }
        FaultKind::Oom => oom(),
        FaultKind::StackOverflow => {
            black_box(recurse(black_box(1)));
        }
        // A worker that broke its stream is broken: it stalls, still holding its task, until
        // the supervisor kills it.
        FaultKind::Garbage => {
            if site.garbage() {
                stall();
            }
        }
        FaultKind::Disconnect => {
            if site.disconnect() {
                stall();
            }
        }
    }
}

fn stall() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A write to an unmapped address (page 0 is never mapped). Non-null and aligned, so it is
/// not turned into a panic by debug assertions: the kernel's SIGSEGV is what we want.
fn segv() {
    let bad = black_box(0x10usize) as *mut u8;
    // SAFETY: deliberately unsound: this is the fault being injected.
    unsafe { std::ptr::write_volatile(bad, 1) };
}

/// Allocates and touches memory until the allocator fails, which aborts with "memory
/// allocation of N bytes failed". A limit below [`OOM_CAP`] above current use is put in place
/// first when none is, so the host never gives more than that.
fn oom() -> ! {
    let in_use = vm_size().unwrap_or(0);
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_AS) {
        let cap = in_use.saturating_add(OOM_CAP);
        if soft == libc::RLIM_INFINITY || soft > cap {
            let _ = setrlimit(Resource::RLIMIT_AS, cap.min(hard), hard);
        }
    }
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk: Vec<u8> = Vec::with_capacity(16 << 20);
        // Touch every page so the memory is really resident, not just reserved.
        for i in (0..chunk.capacity()).step_by(4096) {
            // SAFETY: within capacity; u8 needs no initialisation beyond this write.
            unsafe { chunk.as_mut_ptr().add(i).write_volatile(1) };
        }
        hoard.push(black_box(chunk));
    }
}

fn vm_size() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().next()?.parse().ok()?;
    Some(pages * 4096)
}

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth as u8; 1024]);
    if black_box(depth) == 0 {
        return 0;
    }
    recurse(depth + 1).wrapping_add(u64::from(frame[7]))
}
