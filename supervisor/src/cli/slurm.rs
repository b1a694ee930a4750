//! `bulkhead slurm`: writes an sbatch array script that runs a batch as shards, and submits
//! it (to be written).

use std::path::PathBuf;

use clap::Args;

/// Options of `bulkhead slurm`.
#[derive(Debug, Args)]
pub struct SlurmArgs {
    /// The batch's task file (JSONL).
    pub tasks: PathBuf,
    /// Number of shards (array tasks).
    #[arg(long, value_name = "N")]
    pub shards: u32,
    /// An extra sbatch option, repeatable (e.g. --sbatch-arg=--time=1:00:00).
    #[arg(long = "sbatch-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub sbatch_args: Vec<String>,
    /// Print the script instead of submitting it.
    #[arg(long)]
    pub dry_run: bool,
    /// Options for each shard's `bulkhead run`, after `--`.
    #[arg(last = true)]
    pub run_args: Vec<String>,
}

pub(super) fn slurm(args: SlurmArgs) -> i32 {
    let _ = args;
    eprintln!("bulkhead: slurm is not written yet");
    1
}
