//! The outputs a run could not write, or lost: each is said on stderr with its path and its
//! error, and each makes the run exit 74 (sysexits' `EX_IOERR`).

use std::io;
use std::sync::Arc;

/// An output that is incomplete or gone.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OutputFailure {
    /// Writing the results failed; the records written before it are kept.
    #[error("cannot write results to {path}")]
    Results {
        /// The file, or "standard output".
        path: String,
        /// Why.
        #[source]
        error: Arc<io::Error>,
    },
    /// The results file was deleted while the run wrote it: its records are gone.
    #[error("results file {path} was deleted during the run: the {records} record(s) written to it are gone")]
    ResultsDeleted {
        /// The file.
        path: String,
        /// Records written to it.
        records: u64,
    },
    /// The results file's path names another file than the one the run wrote.
    #[error(
        "results file {path} was replaced or moved during the run: the {records} record(s) this run wrote are not in the file at that path"
    )]
    ResultsReplaced {
        /// The file.
        path: String,
        /// Records written to the file the run opened.
        records: u64,
    },
    /// Writing the events failed; the events file ends at the failure.
    #[error("cannot write events to {path}; the events file is incomplete from {written} line(s) on")]
    Events {
        /// The file.
        path: String,
        /// Lines written whole before the failure.
        written: u64,
        /// Why.
        #[source]
        error: Arc<io::Error>,
    },
    /// The commands' own output could not be written whole to stdout or stderr.
    #[error("cannot write the commands' output")]
    Commands {
        /// Why.
        #[source]
        error: Arc<io::Error>,
    },
    /// The report could not be written; an earlier report at that path is left as it was.
    #[error("cannot write the report {path}")]
    Report {
        /// The file.
        path: String,
        /// Why.
        #[source]
        error: Arc<io::Error>,
    },
}

impl OutputFailure {
    /// Whether it concerns the results (not the events or the report).
    pub fn is_results(&self) -> bool {
        matches!(
            self,
            OutputFailure::Results { .. }
                | OutputFailure::ResultsDeleted { .. }
                | OutputFailure::ResultsReplaced { .. }
        )
    }
}
