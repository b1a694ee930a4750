//! What `bulkhead slurm` and `bulkhead k8s` share: both write a job that runs a batch as
//! shards, each an ordinary `bulkhead run --resume` on its own results file, so both check the
//! task file and the run options the same way before anything is submitted, and tell the same
//! `bulkhead merge` for the end.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use super::{Cli, Command as Sub, RunArgs};
use crate::input::{Format, quote};

/// Why the task file or the run options of a sharded job were refused, before anything is
/// submitted (exit 2).
#[derive(Debug, thiserror::Error)]
pub(super) enum CheckError {
    /// clap refused the run options; its first line says which and why.
    #[error("in the run options after '--': {}", first_line(.0))]
    RunOptions(#[source] clap::Error),
    #[error("{flag} cannot be a run option here: {why}")]
    SetByTheJob { flag: &'static str, why: String },
    #[error("{flag} {}: needs '{{shard}}' in it, or {clash}", path.display())]
    NoShardInPath { flag: &'static str, path: PathBuf, clash: &'static str },
    #[error("cannot open {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The check's own message names the line; the path comes first, as a compiler's would.
    #[error("{}, {}", path.display(), worker::ErrorChain(.source))]
    BadTasks { path: PathBuf, source: crate::input::error::InputError },
    #[error("{}: no tasks", path.display())]
    NoTasks { path: PathBuf },
    #[error(transparent)]
    Template(#[from] crate::input::CmdError),
}

/// The first line of clap's message without its `error: `, which the caller prints itself.
fn first_line(e: &clap::Error) -> String {
    let msg = e.to_string();
    msg.lines().next().unwrap_or(&msg).trim_start_matches("error: ").to_string()
}

/// The engine a job is written for, as the run options' refusals name it.
pub(super) struct Engine {
    /// The subcommand: "slurm", "k8s".
    pub command: &'static str,
    /// What runs one shard there: "array task", "pod".
    pub unit: &'static str,
}

/// What the run options say that the job must know.
pub(super) struct RunOptions {
    pub resume: bool,
    pub cmd: Option<String>,
    pub grace: Duration,
}

/// Parses the run options as `bulkhead run` will on every node, so a typo fails here, once,
/// and refuses those that the job sets or that shards would share.
pub(super) fn check_run_args(engine: &Engine, tasks: &Path, run_args: &[String]) -> Result<RunOptions, CheckError> {
    let argv = ["bulkhead".to_string(), "run".into(), tasks.to_string_lossy().into_owned()]
        .into_iter()
        .chain(run_args.iter().cloned());
    let run: Box<RunArgs> = match Cli::try_parse_from(argv) {
        Ok(Cli { command: Sub::Run(r), .. }) => r,
        Ok(_) => unreachable!("the argv names `run`"),
        Err(e) => return Err(CheckError::RunOptions(e)),
    };
    let (command, unit) = (engine.command, engine.unit);
    let set_here = [
        (run.shard.is_some(), "--shard", format!("{unit} K runs shard K")),
        (run.shards.is_some(), "--shards", format!("give the count as `bulkhead {command} --shards N`")),
        (run.results.is_some(), "--results", format!("give it to `bulkhead {command} --results`, with '{{shard}}'")),
        (run.control.is_some(), "--control", "shards on one node would share the socket".to_string()),
    ];
    if let Some((_, flag, why)) = set_here.iter().find(|(given, ..)| *given) {
        return Err(CheckError::SetByTheJob { flag, why: why.clone() });
    }
    for (path, flag) in [(&run.events, "--events"), (&run.report, "--report")] {
        if let Some(p) = path
            && !p.to_string_lossy().contains("{shard}")
        {
            return Err(CheckError::NoShardInPath {
                flag,
                path: p.clone(),
                clash: "the shards would overwrite each other",
            });
        }
    }
    Ok(RunOptions { resume: run.resume || run.resume_failed, cmd: run.cmd.clone(), grace: run.grace })
}

/// Refuses a results template without '{shard}'.
pub(super) fn check_results_template(results: &Path) -> Result<(), CheckError> {
    if results.to_string_lossy().contains("{shard}") {
        return Ok(());
    }
    Err(CheckError::NoShardInPath {
        flag: "--results",
        path: results.to_path_buf(),
        clash: "every shard would write the same file",
    })
}

/// Checks the whole task file now, as `run` would on each node: a bad line is better found
/// before N shards wait in the queue for it. `shown` is the path as the user gave it. Returns
/// the number of tasks; none is an error.
pub(super) fn check_task_file(path: &Path, shown: &Path, cmd: Option<&str>) -> Result<u64, CheckError> {
    let format = Format::new(cmd, None)?;
    let file = std::fs::File::open(path).map_err(|source| CheckError::Open { path: path.to_path_buf(), source })?;
    let count = crate::input::validate_file(&file, &format, None, 0)
        .map(|c| c.tasks)
        .map_err(|source| CheckError::BadTasks { path: shown.to_path_buf(), source })?;
    if count == 0 {
        return Err(CheckError::NoTasks { path: shown.to_path_buf() });
    }
    Ok(count)
}

/// The run options as given, then `--resume` unless given: a shard that is rerun continues.
pub(super) fn with_resume(run_args: &[String], run: &RunOptions) -> Vec<String> {
    let mut args = run_args.to_vec();
    if !run.resume {
        args.push("--resume".into());
    }
    args
}

/// The task file's name without its extension, for names of the job and its files.
pub(super) fn stem(tasks: &Path) -> String {
    tasks.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "batch".into())
}

/// The `bulkhead merge` that checks the batch once every shard has ended: `bulkhead` is the
/// executable to name, the shards' results are `results` with '{shard}' as a glob.
pub(super) fn merge_command(bulkhead: &str, results: &Path, tasks: &Path, out: &Path, cmd: Option<&str>) -> String {
    let glob = results.to_string_lossy().replace("{shard}", "*");
    let mut line = format!(
        "{} merge {} --tasks {} -o {}",
        quote(bulkhead),
        // The glob is for the shell to expand: only the rest is quoted.
        glob.split('*').map(quote).collect::<Vec<_>>().join("*"),
        quote(&tasks.to_string_lossy()),
        quote(&out.to_string_lossy())
    );
    if let Some(t) = cmd {
        line.push_str(&format!(" --cmd {}", quote(t)));
    }
    line
}

/// `p` from `base`, without `.` components (they would show in every path of the job).
pub(super) fn absolute(base: &Path, p: &Path) -> PathBuf {
    let joined = if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
    joined.components().filter(|c| *c != std::path::Component::CurDir).collect()
}

/// The first executable file called `name` in a directory of PATH.
pub(super) fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}
