//! The shared tally of a thread-mode run (counts every finished task adds to, under one lock)
//! and what the run reports of it at the end.

/// The run's shared tally in thread mode. `finished` and `ok + failed` are updated together
/// under one lock; after a poisoning panic between the two they disagree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Tasks counted as finished.
    pub finished: u64,
    /// Of which ok.
    pub ok: u64,
    /// Of which failed.
    pub failed: u64,
    /// Microseconds of task time.
    pub busy_us: u64,
}

/// The tally at the end of a thread-mode run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TallyReport {
    /// Its contents (read through the poison if need be).
    pub tally: Tally,
    /// Whether its lock was poisoned.
    pub poisoned: bool,
    /// Updates refused because the lock was poisoned.
    pub refused: u64,
    /// Threads abandoned because they could not be killed (hung tasks).
    pub abandoned: u64,
    /// Results recorded whose update the tally took: they ran before the poison.
    pub trusted: u64,
    /// Results recorded whose update the tally refused: they ran after the poison, in a
    /// process whose shared state was already corrupt.
    pub untrusted: u64,
}

impl TallyReport {
    /// Whether the tally still adds up.
    pub fn consistent(&self) -> bool {
        self.tally.finished == self.tally.ok + self.tally.failed
    }
}
