//! `bulkhead slurm`: writes an sbatch script that runs a batch as a Slurm job array, one
//! shard an array task, and submits it. Each shard is an ordinary `bulkhead run --resume`
//! on its own results file, so a requeued, preempted or resubmitted shard continues where it
//! stopped; Slurm does the scheduling and the retrying, bulkhead grows no cluster of its own.
//! Checking the shards' results together is `bulkhead merge`'s.
//!
//! Exit codes: 0 submitted (the job id is on stdout) or printed (`--dry-run`), 2 bad usage
//! or bad input (checked before anything is submitted), 1 sbatch refused the job.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::Args;
use shared::exit;

use super::sharded::{self, CheckError, Engine, absolute, find_on_path};
use crate::input::quote;

/// Options of `bulkhead slurm`.
#[derive(Debug, Args)]
pub struct SlurmArgs {
    /// The batch's task file (JSONL, or lines for `--cmd` among the run options).
    pub tasks: PathBuf,
    /// Number of shards (array tasks 0 to N-1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub shards: u32,
    /// Where the script, Slurm's logs (slurm-JOB_K.out) and the results go [default: the
    /// current directory].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Each shard's results file; '{shard}' becomes its number [default:
    /// DIR/results-{shard}.jsonl].
    #[arg(long, value_name = "TEMPLATE")]
    pub results: Option<PathBuf>,
    /// A shard stopped by SIGTERM (exit 143: preemption, a time-limit warning, `scancel
    /// --signal=TERM --batch`) requeues itself and resumes; also marks the job requeueable.
    #[arg(long)]
    pub requeue: bool,
    /// Run at most M shards at once (sbatch --array=0-(N-1)%M).
    #[arg(long, value_name = "M")]
    pub max_running: Option<u32>,
    /// An extra sbatch option, repeatable (e.g. --sbatch-arg=--time=1:00:00), written into the
    /// script as an #SBATCH line after bulkhead's own, so it overrides them.
    #[arg(long = "sbatch-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub sbatch_args: Vec<String>,
    /// Print the script instead of submitting it (nothing is written).
    #[arg(long)]
    pub dry_run: bool,
    /// Options for each shard's `bulkhead run`, after `--`.
    #[arg(last = true)]
    pub run_args: Vec<String>,
}

const SLURM: Engine = Engine { command: "slurm", unit: "array task" };

pub(super) fn slurm(args: SlurmArgs) -> i32 {
    let job = match Job::prepare(&args) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("bulkhead: error: {}", worker::ErrorChain(&e));
            return exit::BAD_INPUT;
        }
    };
    let script = job.script();
    if args.dry_run {
        print!("{script}");
        return exit::OK;
    }
    match job.submit(&script) {
        Ok(id) => {
            println!("{id}");
            eprintln!(
                "bulkhead: submitted array job {id}: {} shards; logs {}/slurm-{id}_K.out; results {}",
                job.shards,
                job.dir.display(),
                job.results.display()
            );
            eprintln!("bulkhead: when it has ended: {}", job.merge_command());
            exit::OK
        }
        Err(e @ SubmitError::Refused(_)) => {
            eprintln!("bulkhead: error: {}", worker::ErrorChain(&e));
            1
        }
        Err(e) => {
            eprintln!("bulkhead: error: {}", worker::ErrorChain(&e));
            exit::BAD_INPUT
        }
    }
}

/// Everything the script needs, with every path absolute: the job runs wherever Slurm puts
/// it, possibly long after this process has gone.
struct Job {
    bulkhead: PathBuf,
    tasks: PathBuf,
    workdir: PathBuf,
    dir: PathBuf,
    results: PathBuf,
    script_path: PathBuf,
    shards: u32,
    max_running: Option<u32>,
    requeue: bool,
    /// The run options as given, then `--resume` unless given.
    run_args: Vec<String>,
    /// `--cmd TEMPLATE` among the run options, for the merge command shown.
    cmd: Option<String>,
    /// The user's sbatch options, as #SBATCH arguments.
    sbatch_lines: Vec<String>,
}

/// Why `bulkhead slurm` refused its options before writing anything (exit 2).
#[derive(Debug, thiserror::Error)]
enum PrepareError {
    #[error("cannot read the current directory")]
    CurrentDir(#[source] std::io::Error),
    #[error("cannot find this bulkhead executable (for the script to run)")]
    CurrentExe(#[source] std::io::Error),
    #[error("{}: no such task file", .0.display())]
    NoTaskFile(PathBuf),
    #[error("--max-running must be at least 1")]
    MaxRunningZero,
    #[error("--sbatch-arg {arg:?}: {why}")]
    SbatchArg { arg: String, why: &'static str },
    #[error(transparent)]
    Check(#[from] CheckError),
}

/// Why the job was not submitted: exit 2 for what is wrong here, 1 for sbatch's refusal.
#[derive(Debug, thiserror::Error)]
enum SubmitError {
    #[error("sbatch is not on PATH: run this on a Slurm login node (--dry-run prints the script)")]
    NoSbatch,
    #[error("cannot create {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", path.display())]
    WriteScript {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sbatch refused the job: {0}")]
    Refused(#[source] Refusal),
}

/// What sbatch did instead of taking the job.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("cannot run sbatch")]
    Start(#[source] std::io::Error),
    /// sbatch's own words on stderr, or its exit status where it said nothing.
    #[error("{0}")]
    Said(String),
    #[error("sbatch printed no job id: {0:?}")]
    NoJobId(String),
}

impl Job {
    fn prepare(args: &SlurmArgs) -> Result<Self, PrepareError> {
        let workdir = std::env::current_dir().map_err(PrepareError::CurrentDir)?;
        let bulkhead = std::env::current_exe().map_err(PrepareError::CurrentExe)?;
        let tasks = absolute(&workdir, &args.tasks);
        if !tasks.is_file() {
            return Err(PrepareError::NoTaskFile(args.tasks.clone()));
        }
        let dir = absolute(&workdir, args.dir.as_deref().unwrap_or(Path::new(".")));
        let results = match &args.results {
            Some(r) => {
                sharded::check_results_template(r)?;
                absolute(&workdir, r)
            }
            None => dir.join("results-{shard}.jsonl"),
        };
        if args.max_running == Some(0) {
            return Err(PrepareError::MaxRunningZero);
        }
        let sbatch_lines = args.sbatch_args.iter().map(|a| directive(a)).collect::<Result<Vec<_>, _>>()?;
        let run = sharded::check_run_args(&SLURM, &tasks, &args.run_args)?;
        sharded::check_task_file(&tasks, &args.tasks, run.cmd.as_deref())?;
        let run_args = sharded::with_resume(&args.run_args, &run);
        Ok(Self {
            script_path: dir.join(format!("bulkhead-{}.sbatch", sharded::stem(&tasks))),
            bulkhead,
            tasks,
            workdir,
            dir,
            results,
            shards: args.shards,
            max_running: args.max_running,
            requeue: args.requeue,
            run_args,
            cmd: run.cmd,
            sbatch_lines,
        })
    }

    fn script(&self) -> String {
        let n = self.shards;
        let last = n - 1;
        let throttle = self.max_running.map(|m| format!("%{m}")).unwrap_or_default();
        let q = |p: &Path| quote(&p.to_string_lossy());
        let mut s = String::new();
        s.push_str("#!/bin/bash\n");
        s.push_str(&format!("#SBATCH --job-name=bulkhead-{}\n", sanitize(&self.stem())));
        s.push_str(&format!("#SBATCH --array=0-{last}{throttle}\n"));
        s.push_str(&format!("#SBATCH --output={}\n", self.dir.join("slurm-%A_%a.out").display()));
        // A requeued shard's log continues rather than starting over.
        s.push_str("#SBATCH --open-mode=append\n");
        if self.requeue {
            s.push_str("#SBATCH --requeue\n");
        }
        for line in &self.sbatch_lines {
            s.push_str(&format!("#SBATCH {line}\n"));
        }
        s.push_str(&format!(
            "#\n# Written by `bulkhead slurm`: array task K runs shard K of {n}. Each shard appends to its\n\
             # own results file and resumes it, so a requeued or resubmitted shard continues where it\n\
             # stopped (`sbatch --array=K {}` reruns shard K alone).\n\
             # When the array has ended:\n#   {}\n\n",
            self.script_path.display(),
            self.merge_command()
        ));
        s.push_str("set -u\n");
        s.push_str(&format!("cd {} || exit 2\n", q(&self.workdir)));
        s.push_str(&format!("BULKHEAD={}\n", q(&self.bulkhead)));
        // The shard is given explicitly: the run's own guess from SLURM_ARRAY_TASK_* would be
        // wrong for a partial resubmission such as --array=2 (shard 0 of 1, the whole batch).
        let mut cmd = format!("\"$BULKHEAD\" run {} --shard \"${{SLURM_ARRAY_TASK_ID}}/{n}\"", q(&self.tasks));
        cmd.push_str(&format!(" --results {}", q(&self.results)));
        for a in &self.run_args {
            cmd.push(' ');
            cmd.push_str(&quote(a));
        }
        s.push_str(&format!(
            "\n# In the background, so that this shell can pass on a SIGTERM sent to it alone\n\
             # (`scancel --signal=TERM --batch`, an `sbatch --signal=B:TERM@SECONDS` or\n\
             # `B:USR1@SECONDS` warning), always as SIGTERM: a drained shard then exits 143.\n\
             {cmd} &\n\
             pid=$!\n\
             trap 'kill -TERM \"$pid\" 2>/dev/null' TERM USR1\n\
             # A trapped signal ends `wait` early; wait again until bulkhead has really exited,\n\
             # then once more for its status (bash keeps it).\n\
             while wait \"$pid\"; [ \"$?\" -gt 128 ] && kill -0 \"$pid\" 2>/dev/null; do :; done\n\
             wait \"$pid\"\n\
             rc=$?\n"
        ));
        if self.requeue {
            s.push_str(
                "\n# 143 (138): bulkhead drained after SIGTERM (a SIGUSR1 that reached it first); its\n\
                 # results file holds every finished task.\n\
                 # Requeue only a job that is still running: a cancelled one (plain scancel) is\n\
                 # COMPLETING, and Slurm requeues a preempted one by itself.\n\
                 task=\"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\"\n\
                 if { [ \"$rc\" -eq 143 ] || [ \"$rc\" -eq 138 ]; } && scontrol -o show job \"$task\" | grep -q 'JobState=RUNNING '; then\n\
                 \x20   echo \"bulkhead slurm: shard ${SLURM_ARRAY_TASK_ID} stopped by a signal; requeueing $task to resume\" >&2\n\
                 \x20   scontrol requeue \"$task\"\n\
                 fi\n",
            );
        }
        s.push_str("exit \"$rc\"\n");
        s
    }

    fn stem(&self) -> String {
        sharded::stem(&self.tasks)
    }

    /// The `bulkhead merge` that checks this batch once the array has ended.
    fn merge_command(&self) -> String {
        let out = self.dir.join(format!("{}-merged.jsonl", self.stem()));
        sharded::merge_command(&self.bulkhead.to_string_lossy(), &self.results, &self.tasks, &out, self.cmd.as_deref())
    }

    /// Writes the script into DIR and hands it to `sbatch --parsable`; returns the job id.
    fn submit(&self, script: &str) -> Result<String, SubmitError> {
        let sbatch = find_on_path("sbatch").ok_or(SubmitError::NoSbatch)?;
        // The results' directory too, unless it differs by shard: a shard cannot create it.
        let results_dir = self.results.parent().filter(|p| !p.to_string_lossy().contains("{shard}"));
        for d in [Some(self.dir.as_path()), results_dir].into_iter().flatten() {
            std::fs::create_dir_all(d).map_err(|source| SubmitError::CreateDir { path: d.to_path_buf(), source })?;
        }
        std::fs::write(&self.script_path, script)
            .map_err(|source| SubmitError::WriteScript { path: self.script_path.clone(), source })?;
        let out = Command::new(sbatch)
            .arg("--parsable")
            .arg(&self.script_path)
            .current_dir(&self.workdir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| SubmitError::Refused(Refusal::Start(e)))?;
        let _ = std::io::stderr().write_all(&out.stderr);
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let said = if why.is_empty() { format!("sbatch {}", out.status) } else { why };
            return Err(SubmitError::Refused(Refusal::Said(said)));
        }
        // --parsable prints "jobid" or "jobid;cluster".
        let text = String::from_utf8_lossy(&out.stdout);
        let id = text.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SubmitError::Refused(Refusal::NoJobId(text.trim().to_string())));
        }
        Ok(id)
    }
}

/// An sbatch option as an #SBATCH line reads it: sbatch splits the line at whitespace unless
/// it is in double quotes, so a value with spaces is quoted (`--comment="a b"`).
fn directive(arg: &str) -> Result<String, PrepareError> {
    let refuse = |why: &'static str| Err(PrepareError::SbatchArg { arg: arg.to_string(), why });
    if !arg.starts_with('-') {
        return refuse("give each sbatch option whole, as --option=value");
    }
    if arg.contains(['\n', '\r']) {
        return refuse("a line break cannot go in the script");
    }
    if !arg.contains(char::is_whitespace) {
        return Ok(arg.to_string());
    }
    match arg.split_once('=') {
        Some((key, value)) if !value.contains('"') && !key.contains(char::is_whitespace) => {
            Ok(format!("{key}=\"{value}\""))
        }
        _ => refuse("a value with spaces must come as --option=value, without double quotes in it"),
    }
}

/// A job name Slurm shows plainly.
fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::{Cli, Command as Sub};
    use super::*;

    fn args(dir: &Path, extra: &[&str]) -> SlurmArgs {
        let tasks = dir.join("tasks.jsonl");
        std::fs::write(&tasks, "{\"id\":\"a\",\"kind\":\"noop\"}\n").unwrap();
        let mut argv = vec!["bulkhead", "slurm"];
        let t = tasks.to_string_lossy().into_owned();
        argv.push(&t);
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Sub::Slurm(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_script_runs_each_shard_with_resume_and_requeues_on_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_string_lossy().into_owned();
        let a = args(dir.path(), &["--shards", "4", "--dir", &d, "--requeue", "--", "-j", "2", "--inject", "segv:0.1"]);
        let s = Job::prepare(&a).unwrap().script();
        assert!(s.contains("#SBATCH --array=0-3\n"), "{s}");
        assert!(s.contains("#SBATCH --requeue\n"), "{s}");
        assert!(s.contains("--shard \"${SLURM_ARRAY_TASK_ID}/4\""), "{s}");
        assert!(
            s.contains(&format!("--results '{d}/results-{{shard}}.jsonl' -j 2 --inject segv:0.1 --resume &")),
            "{s}"
        );
        assert!(s.contains("scontrol requeue"), "{s}");
        let named = args(dir.path(), &["--shards", "2", "--sbatch-arg=--time=5", "--sbatch-arg", "--comment=a b"]);
        let s = Job::prepare(&named).unwrap().script();
        assert!(s.contains("#SBATCH --time=5\n#SBATCH --comment=\"a b\"\n"), "{s}");
        let plain = Job::prepare(&args(dir.path(), &["--shards", "1", "--", "--resume"])).unwrap().script();
        assert!(!plain.contains("scontrol requeue") && !plain.contains("--requeue"), "{plain}");
        assert_eq!(plain.matches("--resume").count(), 1, "{plain}");
    }

    #[test]
    fn bad_options_are_refused_before_submitting() {
        let dir = tempfile::tempdir().unwrap();
        let refused = |extra: &[&str]| {
            Job::prepare(&args(dir.path(), extra)).err().map(|e| worker::ErrorChain(&e).to_string()).unwrap()
        };
        assert!(refused(&["--shards", "2", "--", "--shard", "0/2"]).contains("--shard"));
        assert!(refused(&["--shards", "2", "--", "--results", "x"]).contains("--results"));
        assert!(refused(&["--shards", "2", "--", "--events", "ev.jsonl"]).contains("{shard}"));
        assert!(refused(&["--shards", "2", "--", "--no-such-flag"]).contains("after '--'"));
        assert!(refused(&["--shards", "2", "--results", "r.jsonl"]).contains("{shard}"));
        assert!(refused(&["--shards", "2", "--sbatch-arg", "-J my job"]).contains("--option=value"));
        assert!(Cli::try_parse_from(["bulkhead", "slurm", "t", "--shards", "0"]).is_err());
        let a = args(dir.path(), &["--shards", "2"]);
        std::fs::write(&a.tasks, "{\"kind\":\"nope\"}\n").unwrap();
        assert!(Job::prepare(&a).err().map(|e| worker::ErrorChain(&e).to_string()).unwrap().contains("line 1"));
    }
}
