//! The exit codes of `bulkhead`; scripts and cluster retry policies rely on them, so they live
//! in the contract crate. When several apply to one run, the first of this order wins:
//! [`BAD_INPUT`], [`BROKEN_PIPE`], [`OUTPUT_FAILED`], [`GAVE_UP`], the signals
//! ([`INTERRUPTED`], [`TERMINATED`], [`SIGNAL_BASE`] + N), [`TASKS_FAILED`], [`OK`].

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
/// An output could not be written (sysexits' `EX_IOERR`): for the results file, the records up
/// to the failure are kept; for the events file or the report, they are incomplete, which the
/// run says on stderr; a results file deleted or replaced during the run, too.
pub const OUTPUT_FAILED: i32 = 74;
/// The reader of the results on standard output went away (as `head` does): 128 + SIGPIPE.
pub const BROKEN_PIPE: i32 = 141;
/// `merge`: tasks of the list have no record.
pub const MERGE_INCOMPLETE: i32 = 4;
/// `merge`: a task has two records.
pub const MERGE_INCONSISTENT: i32 = 5;
/// Interrupted by SIGINT; the batch is resumable.
pub const INTERRUPTED: i32 = 130;
/// Interrupted by SIGTERM; the batch is resumable.
pub const TERMINATED: i32 = 143;
/// Interrupted by another signal whose default would end the process (SIGHUP 129, SIGUSR1
/// 138, SIGUSR2 140, SIGALRM 142): this plus the signal, as a shell reports it; resumable.
pub const SIGNAL_BASE: i32 = 128;

/// A worker exits with this code when the supervisor speaks another protocol version.
pub const WORKER_PROTOCOL_MISMATCH: i32 = 86;
/// A worker exits with this code when its start-up fails (no socket, no status page).
pub const WORKER_SETUP_FAILED: i32 = 87;
