//! `bulkhead k8s`: writes a Kubernetes Indexed Job that runs a batch as shards, one pod an
//! index, and with `--apply` hands it to `kubectl apply`. Each pod is an ordinary `bulkhead
//! run --resume` on its own results file on a shared volume, so a retried pod continues where
//! the last one stopped; Kubernetes does the scheduling and the retrying, steered by a
//! `podFailurePolicy` made from [`shared::exit::CODES`]. Checking the shards' results
//! together is `bulkhead merge`'s.
//!
//! Exit codes: 0 printed (or applied), 2 bad usage or bad input (checked before anything is
//! applied; no kubectl on PATH with `--apply`), 1 kubectl refused the manifest.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use clap::Args;
use shared::exit::{self, CODES, Retry};

use super::sharded::{self, CheckError, Engine, find_on_path};

const K8S: Engine = Engine { command: "k8s", unit: "pod" };

/// The container's name, which the podFailurePolicy's rules name.
const CONTAINER: &str = "bulkhead";

/// Seconds the pod is given beyond `--grace` before the kubelet's SIGKILL: once the grace has
/// run out, bulkhead kills the workers still running, waits for them, and flushes and syncs
/// the results and events files, which on a network volume can take seconds.
const STOP_MARGIN_S: u64 = 30;

/// The most indexes: Kubernetes refuses more completions than 100,000 for an Indexed Job with
/// `backoffLimitPerIndex` unless `maxFailedIndexes` is also set low.
const MAX_SHARDS: i64 = 100_000;

/// Options of `bulkhead k8s`.
#[derive(Debug, Args)]
pub struct K8sArgs {
    /// The task file as the pods see it: an absolute path under a --volume's mount path (JSONL,
    /// or lines for `--cmd` among the run options). Checked whole here too when this machine
    /// has it at the same path.
    pub tasks: PathBuf,
    /// Number of shards: the Job's completions, one pod per index 0 to N-1.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_SHARDS))]
    pub shards: u32,
    /// Run at most P pods at once [default: N].
    #[arg(long, value_name = "P", value_parser = clap::value_parser!(u32).range(1..=MAX_SHARDS))]
    pub parallelism: Option<u32>,
    /// The container image, with `bulkhead` (and `bulkhead-worker` beside it) on its PATH
    /// [default: bulkhead:VERSION of this bulkhead].
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// Mount the PersistentVolumeClaim CLAIM at PATH in every pod (ReadWriteMany: every pod
    /// sees the same files); repeatable [default: bulkhead-batch:/batch].
    #[arg(long = "volume", value_name = "CLAIM:PATH")]
    pub volumes: Vec<String>,
    /// Each shard's results file as the pods see it; '{shard}' becomes its index; its
    /// directory must exist [default: results-{shard}.jsonl beside TASKS].
    #[arg(long, value_name = "TEMPLATE")]
    pub results: Option<PathBuf>,
    /// The Job's name [default: bulkhead-STEM, from the task file's name].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The Job's namespace [default: kubectl's].
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Retries of each index whose pod failed with a code worth retrying (exit 3, a signal).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=i32::MAX as i64))]
    pub backoff_limit_per_index: u32,
    /// CPU each pod requests (a Kubernetes quantity: 8, 500m).
    #[arg(long, value_name = "QTY")]
    pub cpu: Option<String>,
    /// Memory each pod requests (a Kubernetes quantity: 8Gi, 512Mi).
    #[arg(long, value_name = "QTY")]
    pub memory: Option<String>,
    /// Run `kubectl apply -f -` with the manifest instead of printing it.
    #[arg(long)]
    pub apply: bool,
    /// Options for each pod's `bulkhead run`, after `--`.
    #[arg(last = true)]
    pub run_args: Vec<String>,
}

pub(super) fn k8s(args: K8sArgs) -> i32 {
    let job = match Job::prepare(&args) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("bulkhead: error: {}", worker::ErrorChain(&e));
            return exit::BAD_INPUT;
        }
    };
    match &job.checked {
        Checked::Here(n) => eprintln!("bulkhead: checked {} here: {n} tasks", job.tasks.display()),
        Checked::NotHere(why) => eprintln!(
            "bulkhead: {} not checked here ({why}); each pod checks it, and a bad line fails the Job (exit 2)",
            job.tasks.display()
        ),
    }
    let manifest = job.manifest();
    if !args.apply {
        print!("{manifest}");
        return exit::OK;
    }
    match apply(&manifest) {
        Ok(()) => {
            eprintln!("bulkhead: when the Job has ended, from a pod that mounts the volume: {}", job.merge_command());
            exit::OK
        }
        Err(e @ ApplyError::NoKubectl) => {
            super::report_error(&e);
            exit::BAD_INPUT
        }
        Err(e) => {
            super::report_error(&e);
            1
        }
    }
}

/// Whether the task file was checked before the Job was written.
enum Checked {
    /// This machine has it at the pods' path: checked whole, this many tasks.
    Here(u64),
    /// Not here (why): the pods check it.
    NotHere(String),
}

/// A PersistentVolumeClaim mounted in every pod.
struct Volume {
    claim: String,
    mount: PathBuf,
}

/// Everything the manifest says, checked.
struct Job {
    name: String,
    namespace: Option<String>,
    image: String,
    tasks: PathBuf,
    results: PathBuf,
    volumes: Vec<Volume>,
    shards: u32,
    parallelism: u32,
    backoff_limit_per_index: u32,
    cpu: Option<String>,
    memory: Option<String>,
    /// Whole seconds of `--grace`, rounded up.
    grace_s: u64,
    /// The run options as given, then `--resume` unless given.
    run_args: Vec<String>,
    /// `--cmd TEMPLATE` among the run options, for the merge command shown.
    cmd: Option<String>,
    checked: Checked,
}

impl Job {
    fn prepare(args: &K8sArgs) -> Result<Self, PrepareError> {
        let tasks = absolute_in_pod("TASKS", &args.tasks)?;
        let volumes = if args.volumes.is_empty() {
            vec![Volume { claim: "bulkhead-batch".into(), mount: PathBuf::from("/batch") }]
        } else {
            args.volumes.iter().map(|v| volume(v)).collect::<Result<Vec<_>, _>>()?
        };
        for (i, v) in volumes.iter().enumerate() {
            if volumes[..i].iter().any(|w| w.mount == v.mount) {
                return Err(PrepareError::TwoVolumesAt(v.mount.clone()));
            }
        }
        let on_volume = |what: &'static str, p: &Path| {
            if volumes.iter().any(|v| p.starts_with(&v.mount)) {
                return Ok(());
            }
            let mounts: Vec<String> = volumes.iter().map(|v| v.mount.display().to_string()).collect();
            Err(PrepareError::OnNoVolume { what, path: p.to_path_buf(), mounts: mounts.join(", ") })
        };
        on_volume("TASKS", &tasks)?;
        let results = match &args.results {
            Some(r) => {
                sharded::check_results_template(r)?;
                absolute_in_pod("--results", r)?
            }
            None => tasks.parent().unwrap_or(Path::new("/")).join("results-{shard}.jsonl"),
        };
        on_volume("--results", &results)?;
        let name = match &args.name {
            Some(n) => dns_label("--name", n)?,
            None => default_name(&sharded::stem(&tasks)),
        };
        let namespace = args.namespace.as_deref().map(|n| dns_label("--namespace", n)).transpose()?;
        let image = args.image.clone().unwrap_or_else(|| format!("bulkhead:{}", env!("CARGO_PKG_VERSION")));
        if image.is_empty() || image.contains(char::is_whitespace) {
            return Err(PrepareError::Image(image));
        }
        let parallelism = args.parallelism.unwrap_or(args.shards);
        if parallelism > args.shards {
            return Err(PrepareError::Parallelism { parallelism, shards: args.shards });
        }
        let cpu = args.cpu.as_deref().map(|q| quantity("--cpu", q)).transpose()?;
        let memory = args.memory.as_deref().map(|q| quantity("--memory", q)).transpose()?;
        let run = sharded::check_run_args(&K8S, &tasks, &args.run_args)?;
        let checked = match std::fs::metadata(&tasks) {
            Ok(m) if m.is_file() => Checked::Here(sharded::check_task_file(&tasks, &tasks, run.cmd.as_deref())?),
            Ok(_) => return Err(PrepareError::NotAFile(tasks)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Checked::NotHere("not on this machine".into()),
            Err(e) => Checked::NotHere(e.to_string()),
        };
        Ok(Self {
            name,
            namespace,
            image,
            tasks,
            results,
            volumes,
            shards: args.shards,
            parallelism,
            backoff_limit_per_index: args.backoff_limit_per_index,
            cpu,
            memory,
            grace_s: run.grace.as_secs() + u64::from(run.grace.subsec_nanos() > 0),
            run_args: sharded::with_resume(&args.run_args, &run),
            cmd: run.cmd,
            checked,
        })
    }

    /// The `bulkhead merge` that checks this batch once the Job has ended, run in a pod.
    fn merge_command(&self) -> String {
        let out = self.tasks.with_file_name(format!("{}-merged.jsonl", sharded::stem(&self.tasks)));
        sharded::merge_command("bulkhead", &self.results, &self.tasks, &out, self.cmd.as_deref())
    }

    /// The pod's command line: the image's `bulkhead`, as PID 1 of the container.
    fn command(&self) -> Vec<String> {
        let mut c: Vec<String> = vec!["bulkhead".into(), "run".into(), self.tasks.to_string_lossy().into_owned()];
        c.push(format!("--shards={}", self.shards));
        c.push(format!("--results={}", self.results.display()));
        c.extend(self.run_args.iter().cloned());
        c
    }

    fn manifest(&self) -> String {
        let mut y = Yaml::default();
        let n = self.shards;
        y.note(
            0,
            &format!(
                "Written by `bulkhead k8s`: pod K of this Indexed Job runs shard K of {n} \
                 (JOB_COMPLETION_INDEX), appending to its own results file and resuming it, so a \
                 retried pod continues where the last one stopped. When the Job has ended, from a \
                 pod that mounts the volume:"
            ),
        );
        // Whole, to be copied.
        y.text.push_str(&format!("#   {}\n", self.merge_command()));
        y.line(0, "apiVersion: batch/v1", "");
        y.line(0, "kind: Job", "");
        y.line(0, "metadata:", "");
        y.line(1, &format!("name: {}", scalar(&self.name)), "");
        if let Some(ns) = &self.namespace {
            y.line(1, &format!("namespace: {}", scalar(ns)), "");
        }
        y.line(0, "spec:", "");
        y.line(1, "completionMode: Indexed", "");
        y.line(1, &format!("completions: {n}"), "one pod per shard");
        y.line(1, &format!("parallelism: {}", self.parallelism), "");
        y.line(
            1,
            &format!("backoffLimitPerIndex: {}", self.backoff_limit_per_index),
            "retries of each shard (Kubernetes 1.33+)",
        );
        y.line(1, "podReplacementPolicy: Failed", "a new pod only once the old one has ended:");
        y.comment("two pods never append to one results file");
        y.line(1, "podFailurePolicy:", "bulkhead's exit codes; the first rule that matches wins");
        y.line(2, "rules:", "");
        y.note(2, "Preempted, evicted, drained: bulkhead drained and exited 143; retried without");
        y.note(2, "counting against the limit.");
        y.line(2, "- action: Ignore", "");
        y.line(3, "onPodConditions:", "");
        y.line(3, "- type: DisruptionTarget", "");
        y.line(4, "status: \"True\"", "");
        for (action, retry) in RULES {
            let meanings: Vec<_> = CODES.iter().filter(|m| m.retry == retry).collect();
            let mut codes: Vec<i32> = meanings.iter().flat_map(|m| m.codes.iter().copied()).collect();
            // Kubernetes wants them in order.
            codes.sort_unstable();
            let names: Vec<String> = meanings
                .iter()
                .map(|m| format!("{} {}", m.codes.iter().map(i32::to_string).collect::<Vec<_>>().join("/"), m.name))
                .collect();
            y.note(2, &format!("{}: {}.", names.join(", "), why(retry)));
            y.line(2, &format!("- action: {action}"), "");
            y.line(3, "onExitCodes:", "");
            y.line(4, &format!("containerName: {CONTAINER}"), "");
            y.line(4, "operator: In", "");
            let values: Vec<String> = codes.iter().map(i32::to_string).collect();
            y.line(4, &format!("values: [{}]", values.join(", ")), "");
        }
        y.note(2, "Any other failure counts too, as Kubernetes counts a failure that no rule matches");
        y.note(2, "(137: killed, by the OOM killer or at the end of the grace period).");
        y.line(1, "template:", "");
        y.line(2, "spec:", "");
        y.line(3, "restartPolicy: Never", "podFailurePolicy needs it");
        y.line(
            3,
            &format!("terminationGracePeriodSeconds: {}", self.grace_s + STOP_MARGIN_S),
            &format!("--grace ({} s) + {STOP_MARGIN_S} s to stop and flush", self.grace_s),
        );
        y.line(3, "containers:", "");
        y.line(3, &format!("- name: {CONTAINER}"), "");
        y.line(4, &format!("image: {}", scalar(&self.image)), "");
        y.line(4, "command:", "PID 1: gets the kubelet's SIGTERM, reaps orphans");
        for a in self.command() {
            y.line(4, &format!("- {}", scalar(&a)), "");
        }
        if self.cpu.is_some() || self.memory.is_some() {
            y.line(4, "resources:", "");
            y.line(5, "requests:", "");
            for (key, q) in [("cpu", &self.cpu), ("memory", &self.memory)] {
                if let Some(q) = q {
                    y.line(6, &format!("{key}: {}", scalar(q)), "");
                }
            }
        }
        y.line(4, "volumeMounts:", "");
        for (i, v) in self.volumes.iter().enumerate() {
            y.line(4, &format!("- name: volume-{i}"), "");
            y.line(5, &format!("mountPath: {}", scalar(&v.mount.to_string_lossy())), "");
        }
        y.line(3, "volumes:", "");
        for (i, v) in self.volumes.iter().enumerate() {
            y.line(3, &format!("- name: volume-{i}"), "");
            y.line(4, "persistentVolumeClaim:", "");
            y.line(5, &format!("claimName: {}", scalar(&v.claim)), "ReadWriteMany");
        }
        y.text
    }
}

/// The podFailurePolicy's rules for exit codes, in order, with what each retry answer means
/// to Kubernetes. [`Retry::Done`] needs none (0 is success) and [`Retry::NotRun`] is no
/// pod's code.
const RULES: [(&str, Retry); 4] = [
    ("FailJob", Retry::StopBatch),
    ("FailIndex", Retry::Final),
    // A full or read-only volume is the same volume for every retry, wherever it runs:
    // counted retries would only spend the index's limit, for a failure that a person must
    // fix; the records written before it are kept, so rerunning the index then resumes it.
    ("FailIndex", Retry::AfterFix),
    ("Count", Retry::Resume),
];

/// Why a rule does what it does, as the manifest's comment says it.
fn why(retry: Retry) -> &'static str {
    match retry {
        Retry::StopBatch => "every shard would fail the same way, so the Job stops",
        Retry::Final => "the shard's results are final, a retry would change nothing",
        Retry::AfterFix => {
            "any retry writes to the same volume, so the index stops; rerun once the volume is \
             fixed, it resumes"
        }
        Retry::Resume => "retried up to backoffLimitPerIndex, each retry resuming the results file",
        Retry::Done | Retry::NotRun => "",
    }
}

/// The exit-code table of docs/cluster.md, made from [`CODES`] and the manifest's rules.
#[cfg(test)]
fn exit_code_table() -> String {
    let mut t = String::from(
        "| code | `bulkhead run` (one shard) | what a rerun of the shard does | `bulkhead k8s` podFailurePolicy | `bulkhead merge` |\n\
         |---|---|---|---|---|\n",
    );
    for m in CODES {
        let codes: Vec<String> = m.codes.iter().map(i32::to_string).collect();
        let code = if m.codes.len() > 1 { format!("128 + N: {}", codes.join(", ")) } else { codes.join(", ") };
        let rerun = match m.retry {
            Retry::Done => "nothing to do",
            Retry::Final => "nothing new: the shard's results file holds those records",
            Retry::StopBatch => "fails the same way, as every shard would",
            Retry::AfterFix => "likely fails the same way (a full volume); once fixed, resumes",
            Retry::Resume => "resumes where the run stopped",
            Retry::NotRun => "",
        };
        let action = match RULES.iter().find(|(_, r)| *r == m.retry) {
            Some((action, _)) => format!("`{action}`"),
            None if m.retry == Retry::Done => "(success)".into(),
            None => String::new(),
        };
        let cell = |s: &str| if s.is_empty() { "—".to_string() } else { s.to_string() };
        t.push_str(&format!(
            "| {code} | {} | {} | {} | {} |\n",
            cell(m.run),
            cell(rerun),
            cell(&action),
            cell(m.merge)
        ));
    }
    t
}

/// Lines of YAML with aligned comments.
#[derive(Default)]
struct Yaml {
    text: String,
}

impl Yaml {
    /// Where a comment after a value starts, unless the value is longer.
    const COMMENT_AT: usize = 34;
    /// The widest a comment of its own is wrapped to.
    const WIDTH: usize = 96;

    fn line(&mut self, level: usize, text: &str, comment: &str) {
        let mut l = format!("{}{text}", "  ".repeat(level));
        if !comment.is_empty() {
            let pad = Self::COMMENT_AT.saturating_sub(l.len()).max(1);
            l.push_str(&format!("{}# {comment}", " ".repeat(pad)));
        }
        self.text.push_str(&l);
        self.text.push('\n');
    }

    /// A comment line that continues the comment of the line above.
    fn comment(&mut self, text: &str) {
        self.text.push_str(&format!("{}# {text}\n", " ".repeat(Self::COMMENT_AT)));
    }

    /// A comment of its own, at the indentation of `level`, wrapped before [`Self::WIDTH`].
    fn note(&mut self, level: usize, text: &str) {
        let lead = format!("{}#", "  ".repeat(level));
        let mut line = lead.clone();
        for word in text.split(' ') {
            if line.len() > lead.len() && line.len() + 1 + word.len() > Self::WIDTH {
                self.text.push_str(&line);
                self.text.push('\n');
                line = lead.clone();
            }
            line.push(' ');
            line.push_str(word);
        }
        self.text.push_str(&line);
        self.text.push('\n');
    }
}

/// A string as a YAML scalar that every YAML reader (1.1 or 1.2) takes for that string: plain
/// when it is made of path and flag characters and cannot read as a number, a boolean or
/// null; otherwise double-quoted, whose escapes are JSON's.
fn scalar(s: &str) -> String {
    let mut chars = s.chars();
    let first = chars.next();
    let second = chars.next();
    // ':' only inside: "key:" would read as a mapping's key. The first character is never a
    // digit, so "1:20" (a number to YAML 1.1) stays quoted.
    let safe_chars = s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_.=+:-".contains(&b)) && !s.ends_with(':');
    let safe_start = match first {
        Some(c) if c.is_ascii_alphabetic() || c == '/' => true,
        // A flag: "-j", "--resume"; not "-1" nor a lone "-".
        Some('-') => second.is_some_and(|c| c == '-' || c.is_ascii_alphabetic()),
        _ => false,
    };
    let special =
        matches!(s.to_ascii_lowercase().as_str(), "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null");
    if safe_chars && safe_start && !special {
        s.to_string()
    } else {
        serde_json::to_string(s).expect("a string serializes")
    }
}

/// An absolute path as the pods see it.
fn absolute_in_pod(what: &'static str, p: &Path) -> Result<PathBuf, PrepareError> {
    if !p.is_absolute() {
        return Err(PrepareError::NotAbsolute { what, path: p.to_path_buf() });
    }
    Ok(sharded::absolute(Path::new("/"), p))
}

/// `--volume CLAIM:PATH`.
fn volume(v: &str) -> Result<Volume, PrepareError> {
    let bad = |why| PrepareError::Volume { given: v.to_string(), why };
    let Some((claim, mount)) = v.split_once(':') else {
        return Err(bad(VolumeProblem::NoColon));
    };
    let subdomain = claim.len() <= 253 && claim.split('.').all(|l| dns_label("", l).is_ok());
    if !subdomain {
        return Err(bad(VolumeProblem::Claim(claim.to_string())));
    }
    let mount = Path::new(mount);
    if !mount.is_absolute() || mount == Path::new("/") {
        return Err(bad(VolumeProblem::Mount));
    }
    Ok(Volume { claim: claim.into(), mount: sharded::absolute(Path::new("/"), mount) })
}

/// A DNS-1123 label, as Kubernetes names a Job or a namespace.
fn dns_label(what: &'static str, s: &str) -> Result<String, PrepareError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok { Ok(s.to_string()) } else { Err(PrepareError::Name { what, given: s.to_string() }) }
}

/// `bulkhead-STEM` as a DNS-1123 label.
fn default_name(stem: &str) -> String {
    let mut name = String::from("bulkhead-");
    for c in stem.chars().map(|c| c.to_ascii_lowercase()) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' };
        if !(c == '-' && name.ends_with('-')) {
            name.push(c);
        }
    }
    name.truncate(63);
    name.trim_end_matches('-').to_string()
}

/// A Kubernetes resource quantity (8, 500m, 8Gi, 1e3).
fn quantity(what: &'static str, q: &str) -> Result<String, PrepareError> {
    let re = regex::Regex::new(r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")
        .expect("the pattern is valid");
    if re.is_match(q) { Ok(q.to_string()) } else { Err(PrepareError::Quantity { what, given: q.to_string() }) }
}

/// Why `bulkhead k8s` refused its options before printing or applying anything (exit 2).
#[derive(Debug, thiserror::Error)]
enum PrepareError {
    #[error("{what} {}: give the path the pods see, absolute (e.g. /batch/{})", path.display(), path.display())]
    NotAbsolute { what: &'static str, path: PathBuf },
    #[error("--volume {given}: {why}")]
    Volume { given: String, why: VolumeProblem },
    #[error("--volume: two volumes are mounted at {}", .0.display())]
    TwoVolumesAt(PathBuf),
    #[error(
        "{what} {} is on no volume the pods mount ({mounts}): every pod must see the same file; add --volume CLAIM:PATH",
        path.display()
    )]
    OnNoVolume { what: &'static str, path: PathBuf, mounts: String },
    #[error(
        "{what} {given:?}: not a Kubernetes name (lowercase letters, digits and '-', at most 63, beginning and \
         ending with a letter or digit)"
    )]
    Name { what: &'static str, given: String },
    #[error("--image {0:?}: not an image reference")]
    Image(String),
    #[error("--parallelism {parallelism}: more than the {shards} shards, so some pods would have no index")]
    Parallelism { parallelism: u32, shards: u32 },
    #[error("{what} {given:?}: not a Kubernetes quantity (e.g. 8, 500m, 8Gi)")]
    Quantity { what: &'static str, given: String },
    #[error("{}: not a file", .0.display())]
    NotAFile(PathBuf),
    #[error(transparent)]
    Check(#[from] CheckError),
}

/// What is wrong with a `--volume CLAIM:PATH`.
#[derive(Debug, thiserror::Error)]
enum VolumeProblem {
    #[error("give CLAIM:PATH (a PersistentVolumeClaim and where it is mounted)")]
    NoColon,
    #[error("'{0}' is not a claim name (lowercase letters, digits, '-' and '.', at most 253)")]
    Claim(String),
    #[error("the mount path must be absolute, and not /")]
    Mount,
}

/// Why `kubectl apply` did not take the manifest.
#[derive(Debug, thiserror::Error)]
enum ApplyError {
    #[error(
        "cannot apply: kubectl is not on PATH (without --apply, the manifest is printed: pipe it to \
         `kubectl apply -f -` where kubectl is)"
    )]
    NoKubectl,
    #[error("cannot start {path}")]
    Start {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot hand the manifest to kubectl")]
    Write(#[source] std::io::Error),
    #[error("kubectl refused the manifest: kubectl apply {0}")]
    Refused(ExitStatus),
}

/// `kubectl apply -f -` with the manifest on its stdin; kubectl's own output passes through.
fn apply(manifest: &str) -> Result<(), ApplyError> {
    let kubectl = find_on_path("kubectl").ok_or(ApplyError::NoKubectl)?;
    let mut child = Command::new(&kubectl)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|source| ApplyError::Start { path: kubectl.clone(), source })?;
    let written = child.stdin.take().expect("stdin is piped").write_all(manifest.as_bytes());
    // Waited for even when the write failed, so no zombie is left; its status says more.
    let status = child.wait().map_err(|source| ApplyError::Start { path: kubectl, source })?;
    if !status.success() {
        return Err(ApplyError::Refused(status));
    }
    written.map_err(ApplyError::Write)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::{Cli, Command as Sub};
    use super::*;

    fn args(extra: &[&str]) -> K8sArgs {
        let mut argv = vec!["bulkhead", "k8s"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Sub::K8s(a) => a,
            _ => unreachable!(),
        }
    }

    fn manifest(extra: &[&str]) -> String {
        Job::prepare(&args(extra)).unwrap_or_else(|e| panic!("{}", worker::ErrorChain(&e))).manifest()
    }

    #[test]
    fn every_exit_code_of_run_but_success_has_exactly_one_rule() {
        let m = manifest(&["/batch/tasks.jsonl", "--shards", "4"]);
        let values: Vec<Vec<i32>> = m
            .lines()
            .filter_map(|l| l.trim().strip_prefix("values: [")?.split(']').next())
            .map(|v| v.split(", ").map(|c| c.parse().unwrap()).collect())
            .collect();
        for v in &values {
            assert!(v.windows(2).all(|w| w[0] < w[1]), "Kubernetes wants the values sorted: {v:?}");
            assert!(!v.contains(&0), "0 cannot be in an In rule");
        }
        for meaning in CODES {
            for code in meaning.codes {
                let rules = values.iter().filter(|v| v.contains(code)).count();
                let expected = usize::from(!matches!(meaning.retry, Retry::Done | Retry::NotRun));
                assert_eq!(rules, expected, "exit {code} ({}):\n{m}", meaning.name);
            }
        }
        assert!(m.contains("values: [74]") && m.contains("values: [3, 129, 130, 138, 140, 141, 142, 143]"), "{m}");
    }

    #[test]
    fn the_grace_the_shards_and_the_run_options_reach_the_manifest() {
        let m = manifest(&[
            "/data/in/tasks.jsonl",
            "--shards",
            "3",
            "--parallelism",
            "2",
            "--volume",
            "data:/data",
            "--",
            "-j",
            "4",
            "--grace",
            "1500ms",
            "--cmd",
            "echo {} 'x'",
        ]);
        assert!(m.contains("  completions: 3 ") && m.contains("  parallelism: 2\n"), "{m}");
        assert!(m.contains("terminationGracePeriodSeconds: 32 "), "{m}");
        assert!(m.contains("- --shards=3\n") && m.contains("- \"--results=/data/in/results-{shard}.jsonl\"\n"), "{m}");
        assert!(m.contains("- \"1500ms\"\n") && m.contains("- \"echo {} 'x'\"\n        - --resume\n"), "{m}");
        assert!(m.contains("claimName: data ") && m.contains("mountPath: /data\n"), "{m}");
        assert!(m.contains("bulkhead merge /data/in/results-*.jsonl --tasks /data/in/tasks.jsonl"), "{m}");
        assert!(m.contains("--cmd 'echo {} '\\''x'\\'''"), "{m}");
        assert_eq!(manifest(&["/batch/t.jsonl", "--shards", "1", "--", "--resume"]).matches("--resume").count(), 1);
    }

    #[test]
    fn strings_are_plain_only_where_no_yaml_reader_can_take_them_for_something_else() {
        for plain in ["bulkhead", "run", "/batch/tasks.jsonl", "-j", "--resume", "--grace=90s", "registry.io/b:0.1"] {
            assert_eq!(scalar(plain), plain);
        }
        for quoted in ["8", "1m", "-1", "-", "", "yes", "No", "null", "on", "a:", "a b", "{shard}", "#", "'", "~", "="]
        {
            assert_eq!(scalar(quoted), serde_json::to_string(quoted).unwrap(), "{quoted}");
        }
        assert_eq!(scalar("a\"b\\c\nd"), r#""a\"b\\c\nd""#);
    }

    #[test]
    fn names_and_quantities_are_those_kubernetes_takes() {
        assert_eq!(default_name("tasks"), "bulkhead-tasks");
        assert_eq!(default_name("My_Batch.v2"), "bulkhead-my-batch-v2");
        assert_eq!(default_name("--"), "bulkhead");
        assert_eq!(default_name(&"x".repeat(100)).len(), 63);
        assert!(dns_label("--name", "ok-1").is_ok());
        for bad in ["", "-a", "a-", "A", "a.b", &"a".repeat(64)] {
            assert!(dns_label("--name", bad).is_err(), "{bad}");
        }
        for q in ["8", "500m", "8Gi", "1.5", "1e3", "+2"] {
            assert!(quantity("--cpu", q).is_ok(), "{q}");
        }
        for q in ["", "8 Gi", "8GB", "-1", "lots"] {
            assert!(quantity("--cpu", q).is_err(), "{q}");
        }
    }

    #[test]
    fn bad_options_are_refused_before_anything_is_written() {
        let refused =
            |extra: &[&str]| Job::prepare(&args(extra)).err().map(|e| worker::ErrorChain(&e).to_string()).unwrap();
        assert!(refused(&["tasks.jsonl", "--shards", "2"]).contains("absolute"));
        assert!(refused(&["/elsewhere/t.jsonl", "--shards", "2"]).contains("on no volume"));
        assert!(
            refused(&["/batch/t.jsonl", "--shards", "2", "--results", "/tmp/r-{shard}.jsonl"]).contains("on no volume")
        );
        assert!(refused(&["/batch/t.jsonl", "--shards", "2", "--results", "/batch/r.jsonl"]).contains("{shard}"));
        assert!(refused(&["/batch/t.jsonl", "--shards", "2", "--volume", "nocolon"]).contains("CLAIM:PATH"));
        assert!(refused(&["/batch/t.jsonl", "--shards", "2", "--volume", "Bad:/batch"]).contains("claim name"));
        assert!(refused(&["/batch/t.jsonl", "--shards", "2", "--volume", "a:batch"]).contains("absolute"));
        assert!(
            refused(&["/b/t.jsonl", "--shards", "2", "--volume", "a:/b", "--volume", "c:/b/"]).contains("two volumes")
        );
        assert!(refused(&["/batch/t.jsonl", "--shards", "2", "--name", "My Job"]).contains("not a Kubernetes name"));
        assert!(refused(&["/batch/t.jsonl", "--shards", "2", "--parallelism", "3"]).contains("--parallelism"));
        assert!(refused(&["/batch/t.jsonl", "--shards", "2", "--image", "a b"]).contains("--image"));
        assert!(refused(&["/batch/t.jsonl", "--shards", "2", "--memory", "8GB"]).contains("quantity"));
        assert!(refused(&["/batch/t.jsonl", "--shards", "2", "--", "--shard", "0/2"]).contains("pod K runs shard K"));
        assert!(refused(&["/batch/t.jsonl", "--shards", "2", "--", "--events", "/batch/e"]).contains("{shard}"));
        assert!(refused(&["/batch/t.jsonl", "--shards", "2", "--", "--no-such-flag"]).contains("after '--'"));
        assert!(Cli::try_parse_from(["bulkhead", "k8s", "/b/t", "--shards", "100001"]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let tasks = dir.path().join("tasks.jsonl");
        std::fs::write(&tasks, "{\"kind\":\"nope\"}\n").unwrap();
        let vol = format!("v:{}", dir.path().display());
        let msg = refused(&[tasks.to_str().unwrap(), "--shards", "2", "--volume", &vol]);
        assert!(msg.contains("line 1"), "a task file this machine has is checked: {msg}");
    }

    /// docs/cluster.md's table of exit codes is made from the same list as the constants and
    /// the manifest's rules; this fails when one of them changes without the other.
    #[test]
    fn the_exit_code_table_of_the_docs_is_the_generated_one() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/cluster.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let begin = "<!-- exit codes: generated from shared::exit::CODES; a test checks it -->\n";
        let start = doc.find(begin).expect("the table's marker in docs/cluster.md") + begin.len();
        let end = doc[start..].find("\n\n").map_or(doc.len(), |e| start + e + 1);
        let expected = exit_code_table();
        assert!(doc[start..end] == expected, "docs/cluster.md's exit-code table differs; it should be:\n{expected}");
    }
}
