//! The job slot a task runs in (GNU parallel's `{%}`, from 1): each task thread of a worker
//! process, or each thread of thread mode, is one slot, numbered by whoever starts it.

use std::cell::Cell;

thread_local! {
    static SLOT: Cell<u64> = const { Cell::new(1) };
}

/// Numbers the calling thread's slot.
pub fn set(slot: u64) {
    SLOT.set(slot.max(1));
}

/// The calling thread's slot (1 where nobody numbered it).
pub fn get() -> u64 {
    SLOT.get()
}

/// The first slot of this worker process, from its environment.
pub(crate) fn first_from_env() -> u64 {
    std::env::var(crate::env::JOB_SLOT).ok().and_then(|v| v.parse().ok()).unwrap_or(1)
}
