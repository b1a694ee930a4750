//! The two numbers the engine, the runtime and the outputs pass around most, as types of their
//! own so that one cannot be given where the other is meant: a worker slot's index and an
//! assignment's sequence number. Each is its bare integer in memory (`repr(transparent)`) and
//! in every file and frame (serde `transparent`, and the wire carries the bare `u64`), so they
//! cost nothing at run time and change no format.
//!
//! ```
//! use bulkhead::{RunEvent, SlotIndex};
//! let event = RunEvent::WorkerRestarted { worker: SlotIndex(0), backoff_ms: 0.0 };
//! assert!(matches!(event, RunEvent::WorkerRestarted { worker: SlotIndex(0), .. }));
//! ```
//!
//! A sequence number where a slot is meant does not compile:
//!
//! ```compile_fail,E0308
//! use bulkhead::{RunEvent, Seq};
//! let event = RunEvent::WorkerRestarted { worker: Seq(0), backoff_ms: 0.0 };
//! ```

use std::fmt;
use std::ops::{Index, IndexMut};

use serde::{Deserialize, Serialize};

/// A worker slot: a lane of the pool, from 0, that holds one worker at a time and outlives
/// each of them. Logs, events and `bulkhead status` call it `worker N`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[repr(transparent)]
#[serde(transparent)]
pub struct SlotIndex(pub usize);

impl SlotIndex {
    /// The slots of a pool of `n`, in order.
    pub fn all(n: usize) -> impl DoubleEndedIterator<Item = SlotIndex> + ExactSizeIterator {
        (0..n).map(SlotIndex)
    }
}

impl fmt::Display for SlotIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Per-slot tables are indexed by the slot itself.
impl<T> Index<SlotIndex> for [T] {
    type Output = T;
    fn index(&self, slot: SlotIndex) -> &T {
        &self[slot.0]
    }
}

impl<T> IndexMut<SlotIndex> for [T] {
    fn index_mut(&mut self, slot: SlotIndex) -> &mut T {
        &mut self[slot.0]
    }
}

impl<T> Index<SlotIndex> for Vec<T> {
    type Output = T;
    fn index(&self, slot: SlotIndex) -> &T {
        &self[slot.0]
    }
}

impl<T> IndexMut<SlotIndex> for Vec<T> {
    fn index_mut(&mut self, slot: SlotIndex) -> &mut T {
        &mut self[slot.0]
    }
}

/// The sequence number of one assignment: one attempt of one task handed to a worker, from 1,
/// never reused within a run. It names the attempt on the wire (`Assignment::seq`,
/// `Outcome::seq`), on the status page, in a worker's stderr marks and in a command's spool
/// files. Not a `--cmd` job's number (`{#}`, a label's `seq`), which names the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[repr(transparent)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
