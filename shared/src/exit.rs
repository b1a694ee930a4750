//! The exit codes of `bulkhead` (README.md lists them): scripts and cluster retry policies
//! rely on them, so they live in the contract crate. [`CODES`] lists every one with its
//! meaning and what a retry of the run can do, so that the documentation's table and the
//! Kubernetes manifest's `podFailurePolicy` are made from the same list as the constants.
//! When several apply to one run, the first of this order wins: [`BAD_INPUT`],
//! [`BROKEN_PIPE`], [`OUTPUT_FAILED`], [`GAVE_UP`], the signals ([`INTERRUPTED`],
//! [`TERMINATED`], [`SIGNAL_BASE`] + N), [`TASKS_FAILED`], [`OK`].

/// Every task ended `ok`.
pub const OK: i32 = 0;
/// Some task ended `failed` or `quarantined`.
pub const TASKS_FAILED: i32 = 1;
/// Bad usage or bad input (flags, task lines, an existing results or events file without
/// `--resume`, outputs that are the same file as each other or the input, a results file
/// locked by another run).
pub const BAD_INPUT: i32 = 2;
/// The supervisor gave up: workers died faster than `--max-restarts` allows, or a worker
/// speaks another protocol version.
pub const GAVE_UP: i32 = 3;
/// `bulkhead merge`: some task of the list has no final record in any results file.
pub const INCOMPLETE: i32 = 4;
/// `bulkhead merge`: a task has two final records, or a record names no task of the list.
pub const INCONSISTENT: i32 = 5;
/// An output could not be written (sysexits' `EX_IOERR`): for the results file, the records up
/// to the failure are kept; for the events file or the report, they are incomplete, which the
/// run says on stderr; a results file deleted or replaced during the run, too.
pub const OUTPUT_FAILED: i32 = 74;
/// The reader of the results on standard output went away (as `head` does): 128 + SIGPIPE.
pub const BROKEN_PIPE: i32 = 141;
/// Interrupted by SIGINT; the batch is resumable.
pub const INTERRUPTED: i32 = 130;
/// Interrupted by SIGTERM; the batch is resumable.
pub const TERMINATED: i32 = 143;
/// Interrupted by another signal whose default would end the process (SIGHUP 129, SIGUSR1
/// 138, SIGUSR2 140, SIGALRM 142): this plus the signal, as a shell reports it; resumable.
pub const SIGNAL_BASE: i32 = 128;
/// The codes of [`SIGNAL_BASE`] plus a signal that a run drains on besides SIGINT and SIGTERM:
/// SIGHUP (1), SIGUSR1 (10), SIGUSR2 (12), SIGALRM (14).
pub const OTHER_SIGNALS: [i32; 4] = [SIGNAL_BASE + 1, SIGNAL_BASE + 10, SIGNAL_BASE + 12, SIGNAL_BASE + 14];

/// A worker exits with this code when the supervisor speaks another protocol version.
pub const WORKER_PROTOCOL_MISMATCH: i32 = 86;
/// A worker exits with this code when its start-up fails (no socket, no status page).
pub const WORKER_SETUP_FAILED: i32 = 87;
/// A worker exits with this code when its program reached the building of a pool without
/// serving the handler it was started for (no call to `serve_if_worker` for it came first).
pub const WORKER_NOT_SERVED: i32 = 88;

/// What running a shard again can do after `bulkhead run` ended with a code: the answer a
/// cluster engine's retry policy needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The run succeeded: nothing to retry.
    Done,
    /// The shard's outcome is final: its results file holds every record, failed ones
    /// included, and a rerun would change nothing.
    Final,
    /// Every shard would end the same way (the same flags, the same task file): stop the
    /// whole batch.
    StopBatch,
    /// Likely to persist wherever the shard runs (a full or read-only volume is the same for
    /// every node): stop the shard; once the cause is fixed, a rerun resumes it, since the
    /// records written before the failure are kept.
    AfterFix,
    /// A rerun resumes where this run stopped, possibly on another node.
    Resume,
    /// `bulkhead run` never exits with it (another command's code).
    NotRun,
}

/// One exit code (or a family of them) with what it means.
#[derive(Debug, Clone, Copy)]
pub struct Meaning {
    /// The code, or every code of the family (sorted).
    pub codes: &'static [i32],
    /// The constant's name in this module.
    pub name: &'static str,
    /// What it means from `bulkhead run` (one shard); empty when run never exits with it.
    pub run: &'static str,
    /// What it means from `bulkhead merge`; empty when merge never exits with it.
    pub merge: &'static str,
    /// What a rerun of the shard can do.
    pub retry: Retry,
}

/// Every exit code of `bulkhead run` and `bulkhead merge`, by their first code.
pub const CODES: &[Meaning] = &[
    Meaning {
        codes: &[OK],
        name: "OK",
        run: "every task of the shard ok",
        merge: "every task has exactly one record, all ok",
        retry: Retry::Done,
    },
    Meaning {
        codes: &[TASKS_FAILED],
        name: "TASKS_FAILED",
        run: "some task failed or was quarantined",
        merge: "complete, but some task failed or was quarantined",
        retry: Retry::Final,
    },
    Meaning {
        codes: &[BAD_INPUT],
        name: "BAD_INPUT",
        run: "bad usage or bad input (flags, a task line, a results or events file without `--resume`, outputs that are one file, a results file another run holds)",
        merge: "bad usage or unreadable input; nothing written",
        retry: Retry::StopBatch,
    },
    Meaning {
        codes: &[GAVE_UP],
        name: "GAVE_UP",
        run: "gave up: workers died faster than `--max-restarts` allows, or a worker speaks another protocol version",
        merge: "",
        retry: Retry::Resume,
    },
    Meaning {
        codes: &[INCOMPLETE],
        name: "INCOMPLETE",
        run: "",
        merge: "**incomplete**: some task has no final record (listed on stderr); rerun its shard",
        retry: Retry::NotRun,
    },
    Meaning {
        codes: &[INCONSISTENT],
        name: "INCONSISTENT",
        run: "",
        merge: "**inconsistent**: a task has two final records, or a record names no task of the list",
        retry: Retry::NotRun,
    },
    Meaning {
        codes: &[OUTPUT_FAILED],
        name: "OUTPUT_FAILED",
        run: "an output could not be written or was lost (results: the run stops, the records up to the failure are kept; a results file deleted or replaced mid-run; events or report: incomplete); each said on stderr",
        merge: "",
        retry: Retry::AfterFix,
    },
    Meaning {
        codes: &OTHER_SIGNALS,
        name: "OTHER_SIGNALS",
        run: "interrupted by another signal N after draining (SIGHUP, SIGUSR1, SIGUSR2, SIGALRM); resumable",
        merge: "",
        retry: Retry::Resume,
    },
    Meaning {
        codes: &[INTERRUPTED],
        name: "INTERRUPTED",
        run: "interrupted by SIGINT after draining; resumable",
        merge: "",
        retry: Retry::Resume,
    },
    Meaning {
        codes: &[BROKEN_PIPE],
        name: "BROKEN_PIPE",
        run: "the reader of the results on standard output went away (as `head` does); what it read is all there is",
        merge: "",
        retry: Retry::Resume,
    },
    Meaning {
        codes: &[TERMINATED],
        name: "TERMINATED",
        run: "interrupted by SIGTERM after draining; resumable",
        merge: "",
        retry: Retry::Resume,
    },
];

/// The meaning of `code`, if it is one of [`CODES`].
pub fn meaning(code: i32) -> Option<&'static Meaning> {
    CODES.iter().find(|m| m.codes.contains(&code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_ascending_without_repeats_and_says_something_for_each_code() {
        let firsts: Vec<i32> = CODES.iter().map(|m| m.codes[0]).collect();
        assert!(firsts.windows(2).all(|w| w[0] < w[1]), "{firsts:?}");
        let mut all: Vec<i32> = CODES.iter().flat_map(|m| m.codes.iter().copied()).collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "a code is listed twice");
        assert!(CODES.iter().all(|m| m.codes.windows(2).all(|w| w[0] < w[1])));
        for m in CODES {
            assert!(!m.run.is_empty() || !m.merge.is_empty(), "{}", m.name);
            assert_eq!(m.run.is_empty(), m.retry == Retry::NotRun, "{}", m.name);
        }
        for c in
            [OK, TASKS_FAILED, BAD_INPUT, GAVE_UP, INCOMPLETE, INCONSISTENT, OUTPUT_FAILED, INTERRUPTED, TERMINATED]
        {
            assert!(meaning(c).is_some(), "{c}");
        }
        assert_eq!(OTHER_SIGNALS, [129, 138, 140, 142]);
        assert!(meaning(WORKER_SETUP_FAILED).is_none(), "a worker's code is not bulkhead's");
    }
}
