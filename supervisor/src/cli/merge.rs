//! `bulkhead merge`: shard results into one file, checked against the task list (to be
//! written).

use std::path::PathBuf;

use clap::Args;

/// Options of `bulkhead merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Results files of the shards.
    #[arg(required = true)]
    pub results: Vec<PathBuf>,
    /// The batch's task file (JSONL), to check that every task has exactly one record.
    #[arg(long, value_name = "TASKS")]
    pub tasks: PathBuf,
    /// The merged results file.
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
}

pub(super) fn merge(args: MergeArgs) -> i32 {
    let _ = args;
    eprintln!("bulkhead: merge is not written yet");
    1
}
