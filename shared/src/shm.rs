//! The layout of a worker's status page: a small shared-memory file the supervisor creates
//! for each worker and reads when it dies.
//!
//! It is how exact blame survives batching. A worker runs a queue of prefetched tasks and
//! reports results in batches, so when it dies the supervisor cannot tell from the socket
//! which task was executing and which had finished with their results still unsent. Before
//! and after each task the worker stores one word here (a plain memory store, no system
//! call); after the death the supervisor reads it. The cost per task is constant and tiny.
//!
//! Only the layout lives here; mapping the page is left to the two sides.

use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

/// Marks a page the supervisor initialised.
pub const MAGIC: u32 = 0xB07C_4EAD;

/// The most task slots (threads) one worker may have.
pub const MAX_SLOTS: u32 = 1024;

/// The page header.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Header {
    /// [`MAGIC`] once initialised.
    pub magic: AtomicU32,
    /// Number of [`PageSlot`]s that follow.
    pub slots: AtomicU32,
    /// `seq` of the task whose thread caused the death, written by the panic hook and the
    /// fatal-signal handler of a multi-threaded worker; 0 when unknown.
    pub culprit: AtomicU64,
    /// `seq` of a task whose start the supervisor notes itself, so the worker writes no mark
    /// for it on stderr: the task it sends to an idle worker, after reading all of that
    /// worker's stderr (0: none). A mark per task cost a write and woke the supervisor once
    /// more per round trip, ~6 us of a ~38 us no-op round trip on the 2-core VM.
    pub unmarked: AtomicU64,
}

/// What one of the worker's task threads is doing.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct PageSlot {
    /// 0 before the first task, else `seq << 1 | running`.
    pub state: AtomicU64,
    /// CLOCK_MONOTONIC nanoseconds when the current task started.
    pub started_ns: AtomicU64,
    /// Process group of the task's children (a shell command), 0 if none; killed with the
    /// worker.
    pub child_pgid: AtomicI32,
    /// Units of work the current task has reported done (bytes, iterations, records: the
    /// handler's choice); 0 at its start.
    pub progress: AtomicU64,
    /// CLOCK_MONOTONIC nanoseconds of the current task's last progress report (its start,
    /// before the first): how long it has been stuck is read from here, with no frame sent.
    pub progressed_ns: AtomicU64,
    /// The largest resident memory of the worker's process tree (bytes) that the supervisor's
    /// samples saw while this slot's task ran: raised by the supervisor, taken (reset to 0)
    /// by the worker when a task begins and ends.
    pub peak_rss: AtomicU64,
    /// The record the current task is on (`index + 1`; 0: none reported), written by the
    /// handler's `cx.at(index)` and read after a crash, to name the record that killed it.
    pub record: AtomicU64,
}

/// Bytes needed for a page with `slots` slots.
pub const fn page_len(slots: u32) -> usize {
    std::mem::size_of::<Header>() + slots as usize * std::mem::size_of::<PageSlot>()
}

/// A slot's state, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageState {
    /// No task yet.
    Idle,
    /// Executing `seq` since `started_ns`.
    Running {
        /// The task's seq.
        seq: u64,
        /// When it started (CLOCK_MONOTONIC ns).
        started_ns: u64,
    },
    /// Finished `seq`, not started another.
    Finished {
        /// The task's seq.
        seq: u64,
    },
}

impl PageSlot {
    /// Marks `seq` as executing from `now_ns`.
    pub fn begin(&self, seq: u64, now_ns: u64) {
        self.started_ns.store(now_ns, Ordering::Relaxed);
        self.progress.store(0, Ordering::Relaxed);
        self.progressed_ns.store(now_ns, Ordering::Relaxed);
        self.record.store(0, Ordering::Relaxed);
        self.state.store(seq << 1 | 1, Ordering::Release);
    }

    /// The running task did `units` more work at `now_ns`: two plain stores, no system call.
    pub fn advance(&self, units: u64, now_ns: u64) {
        self.progress.fetch_add(units, Ordering::Relaxed);
        self.progressed_ns.store(now_ns, Ordering::Release);
    }

    /// The running task's progress so far and when it last moved (CLOCK_MONOTONIC ns). Read
    /// beside [`read`](Self::read): a value of the task before is possible for an instant
    /// after a task change, and harmless, since the new task's start counts as progress.
    pub fn progress(&self) -> (u64, u64) {
        let at = self.progressed_ns.load(Ordering::Acquire);
        (self.progress.load(Ordering::Relaxed), at)
    }

    /// The running task is now on record `index`: one plain store, no system call.
    pub fn set_record(&self, index: u64) {
        self.record.store(index.saturating_add(1), Ordering::Release);
    }

    /// The record the running task last reported being on, if it reported one.
    pub fn record(&self) -> Option<u64> {
        self.record.load(Ordering::Acquire).checked_sub(1)
    }

    /// Marks `seq` as finished.
    pub fn end(&self, seq: u64) {
        self.state.store(seq << 1, Ordering::Release);
    }

    /// Reads the state; `started_ns` is consistent with `seq` (re-read if the task changed
    /// in between).
    pub fn read(&self) -> PageState {
        loop {
            let s = self.state.load(Ordering::Acquire);
            if s == 0 {
                return PageState::Idle;
            }
            if s & 1 == 0 {
                return PageState::Finished { seq: s >> 1 };
            }
            let started_ns = self.started_ns.load(Ordering::Relaxed);
            if self.state.load(Ordering::Acquire) == s {
                return PageState::Running { seq: s >> 1, started_ns };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_states_round_trip() {
        let slot = PageSlot::default();
        assert_eq!(slot.read(), PageState::Idle);
        slot.begin(42, 1000);
        assert_eq!(slot.read(), PageState::Running { seq: 42, started_ns: 1000 });
        assert_eq!(slot.progress(), (0, 1000));
        slot.advance(10, 1500);
        slot.advance(5, 1700);
        assert_eq!(slot.progress(), (15, 1700));
        assert_eq!(slot.record(), None);
        slot.set_record(0);
        assert_eq!(slot.record(), Some(0));
        slot.set_record(37);
        assert_eq!(slot.record(), Some(37));
        slot.end(42);
        assert_eq!(slot.read(), PageState::Finished { seq: 42 });
        slot.begin(43, 2000);
        assert_eq!(slot.record(), None, "a new task starts on no record");
        assert_eq!(page_len(2), 64 * 3);
    }
}
