//! Kubernetes, as far as this machine allows: every manifest `bulkhead k8s` writes here is
//! validated against the API's strict schemas of Kubernetes 1.33 (the oldest with every field
//! it uses: `backoffLimitPerIndex` is GA there) and of the newest the validator knows, with
//! `kubernetes-validate` from PyPI in a private virtual environment (`.ci/k8s-validate-setup.sh`;
//! SKIPPED with the reason where it cannot be installed, a failure when
//! BULKHEAD_REQUIRE_K8S_VALIDATE=1). The pods are run as the Job would run them: the manifest's
//! command line with `JOB_COMPLETION_INDEX`, stopped by SIGTERM and replaced as the manifest's
//! policies say, then merged. `--apply` is tested with a `kubectl` that records its input.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::*;

/// The validator's executable, or why there is none.
fn validator() -> Option<&'static Path> {
    static CLI: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let cli = CLI.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        // BIN is TARGET/debug/bulkhead: the environment goes under this build's target/.
        let venv = Path::new(BIN).parent().and_then(Path::parent).expect("target dir").join("k8s-validate");
        let out = output_of(Command::new("bash").arg(root.join(".ci/k8s-validate-setup.sh")).arg(&venv));
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(err.lines().last().unwrap_or("the setup script failed").to_string());
        }
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Ok(PathBuf::from(path))
    });
    match cli {
        Ok(p) => Some(p),
        Err(why) => {
            let required = std::env::var("BULKHEAD_REQUIRE_K8S_VALIDATE").is_ok_and(|v| v == "1");
            assert!(!required, "BULKHEAD_REQUIRE_K8S_VALIDATE=1 but kubernetes-validate cannot be had: {why}");
            // Straight to the stream: the harness captures eprintln!.
            let _ =
                writeln!(std::io::stderr(), "SKIPPED: Kubernetes schema validation: no kubernetes-validate ({why})");
            None
        }
    }
}

/// The versions one `kubernetes-validate --strict` run says each file passed against; panics
/// with its output when any file did not pass (an error, or a warning such as a missing schema).
fn validate_files(cli: &Path, files: &[PathBuf], version: Option<&str>) -> Vec<String> {
    let mut c = Command::new(cli);
    c.arg("--strict");
    if let Some(v) = version {
        c.args(["-k", v]);
    }
    let out = output_of(c.args(files));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubernetes-validate --strict {version:?} refused a manifest:\n{text}");
    files
        .iter()
        .map(|f| {
            let head = format!("INFO {} passed for resource job/", f.display());
            let line = text.lines().find(|l| l.starts_with(&head));
            let line = line.unwrap_or_else(|| panic!("no pass for {} ({version:?}):\n{text}", f.display()));
            line.rsplit("against version ").next().unwrap().trim().to_string()
        })
        .collect()
}

/// Validates manifests strictly for 1.33 and for the newest Kubernetes the validator knows
/// (what it validates against when given no version); returns that newest, or None when there
/// is no validator (said as SKIPPED). Each manifest's command line is also read by a real YAML
/// parser (the validator's PyYAML) and must be the one [`command_of`] reads.
fn validate(manifests: &[String]) -> Option<String> {
    let cli = validator()?;
    let dir = tempfile::Builder::new().prefix("bh-k8s-").tempdir().unwrap();
    let files: Vec<PathBuf> = manifests
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let f = dir.path().join(format!("job-{i}.yaml"));
            std::fs::write(&f, m).unwrap();
            f
        })
        .collect();
    let oldest = validate_files(cli, &files, Some("1.33.0"));
    assert!(oldest.iter().all(|v| v == "1.33"), "{oldest:?}");
    let newest = validate_files(cli, &files, None);
    let newest = newest[0].clone();
    let minor: u32 = newest.strip_prefix("1.").and_then(|m| m.parse().ok()).unwrap_or(0);
    assert!(minor >= 33, "the validator's newest Kubernetes is {newest}");
    let python = cli.with_file_name("python3");
    for (f, m) in files.iter().zip(manifests) {
        let out = output_of(
            Command::new(&python)
                .args([
                    "-c",
                    "import json,sys,yaml; j=yaml.safe_load(open(sys.argv[1])); \
                 print(json.dumps(j['spec']['template']['spec']['containers'][0]['command']))",
                ])
                .arg(f),
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let parsed: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(parsed, command_of(m), "PyYAML reads another command line");
    }
    Some(newest)
}

/// `bulkhead k8s ARGS`'s stdout, checked to succeed.
fn k8s(sb: &Sandbox, args: &[&str]) -> String {
    let mut all = vec!["k8s"];
    all.extend_from_slice(args);
    let out = output_of(&mut sb.cmd(&all));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "bulkhead k8s {args:?}:\n{err}");
    String::from_utf8(out.stdout).unwrap()
}

/// A scalar as `bulkhead k8s` writes one: plain, or double-quoted with JSON's escapes.
fn scalar(s: &str) -> String {
    if s.starts_with('"') { serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}")) } else { s.to_string() }
}

/// The value of the first `key: value` line of the manifest, comment cut off.
fn field<'a>(manifest: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}:");
    manifest
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(&prefix))
        .map(|v| v.split(" #").next().unwrap().trim())
        .unwrap_or_else(|| panic!("no {key} in:\n{manifest}"))
}

/// The container's command line, as the manifest has it.
fn command_of(manifest: &str) -> Vec<String> {
    let mut lines = manifest.lines().skip_while(|l| !l.trim_start().starts_with("command:"));
    let head = lines.next().expect("a command");
    let indent = head.len() - head.trim_start().len();
    lines
        .take_while(|l| l.len() > indent && l[..indent].trim().is_empty() && l[indent..].starts_with("- "))
        .map(|l| scalar(&l[indent + 2..]))
        .collect()
}

/// What the manifest's podFailurePolicy does with a container's exit code: the action of the
/// first rule whose values hold it, or Kubernetes' default for a failure no rule matches.
fn policy(manifest: &str, code: i32) -> String {
    let mut action = None;
    for l in manifest.lines().map(str::trim) {
        if let Some(a) = l.strip_prefix("- action: ") {
            action = Some(a.to_string());
        } else if let Some(v) = l.strip_prefix("values: [").and_then(|v| v.strip_suffix(']'))
            && v.split(", ").any(|c| c.parse() == Ok(code))
        {
            return action.expect("values belong to a rule");
        }
    }
    "Count".into()
}

fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}

/// Manifests for several option sets, each validated strictly for 1.33 and the newest
/// Kubernetes; and the validator is shown to refuse what 1.33 refuses, so it is really asked.
#[test]
fn manifests_validate_strictly_for_kubernetes_1_33_and_the_newest() {
    let sb = Sandbox::new();
    let sets: [&[&str]; 5] = [
        &["/batch/tasks.jsonl", "--shards", "4"],
        &["/batch/tasks.jsonl", "--shards", "1", "--image", "registry.example.com/bulkhead:0.1", "--name", "my-batch"],
        &[
            "/data/in/tasks.jsonl",
            "--shards",
            "16",
            "--parallelism",
            "4",
            "--namespace",
            "batch-jobs",
            "--volume",
            "data:/data",
            "--volume",
            "scratch.v1:/scratch",
            "--results",
            "/scratch/out/r-{shard}.jsonl",
            "--cpu",
            "500m",
            "--memory",
            "2Gi",
            "--backoff-limit-per-index",
            "0",
        ],
        &[
            "/batch/tasks.jsonl",
            "--shards",
            "3",
            "--",
            "-j",
            "8",
            "--grace",
            "1h",
            "--timeout",
            "10m",
            "--attempts",
            "5",
        ],
        &[
            "/batch/lines.txt",
            "--shards",
            "100000",
            "--",
            "--cmd",
            "gzip -9 {} && echo \"done: {}\"",
            "--events",
            "/batch/ev-{shard}.jsonl",
            "--inject",
            "segv:0.01",
            "--seed",
            "7",
            "--retry-failed",
            "--address-space-limit",
            "2G",
            "--resume",
        ],
    ];
    let manifests: Vec<String> = sets.iter().map(|a| k8s(&sb, a)).collect();
    // The options reached the manifests.
    assert_eq!(field(&manifests[0], "terminationGracePeriodSeconds"), "40", "the default --grace 10s + 30 s");
    assert_eq!(field(&manifests[3], "terminationGracePeriodSeconds"), "3630");
    assert_eq!(field(&manifests[2], "parallelism"), "4");
    assert_eq!(field(&manifests[2], "namespace"), "batch-jobs");
    assert_eq!(field(&manifests[1], "image"), "registry.example.com/bulkhead:0.1");
    let cmd = command_of(&manifests[4]);
    assert_eq!(cmd[..4], ["bulkhead", "run", "/batch/lines.txt", "--shards=100000"]);
    assert!(cmd.contains(&"gzip -9 {} && echo \"done: {}\"".to_string()), "{cmd:?}");
    assert_eq!(cmd.iter().filter(|a| *a == "--resume").count(), 1, "{cmd:?}");
    let Some(newest) = validate(&manifests) else { return };

    // What every Kubernetes before 1.37 refuses: a DisruptionTarget condition without status.
    let broken = manifests[0].replace("        status: \"True\"\n", "");
    assert_ne!(broken, manifests[0]);
    let f = sb.write("broken.yaml", &broken);
    let out = output_of(Command::new(validator().unwrap()).args(["--strict", "-k", "1.33.0"]).arg(&f));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains("'status' is a required property"), "{text}");
    eprintln!("{} manifests valid for Kubernetes 1.33 and {newest} (strict)", manifests.len());
    sb.assert_clean();
}

/// The README and docs/cluster.md show what `bulkhead k8s` prints: each console block that
/// begins with `$ bulkhead k8s ...` (but `--apply`) holds exactly its stdout.
#[test]
fn the_readme_and_the_docs_show_what_bulkhead_k8s_prints() {
    let sb = Sandbox::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut manifests = Vec::new();
    for doc in ["README.md", "docs/cluster.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        let mut found = 0;
        for block in text.split("```console\n").skip(1) {
            let block = block.split("\n```").next().unwrap();
            let Some((first, shown)) = block.split_once('\n') else { continue };
            let Some(args) = first.strip_prefix("$ bulkhead k8s ") else { continue };
            // A worked example with a cluster: its output is kubectl's.
            if args.contains("--apply") {
                continue;
            }
            assert!(!args.contains(['\'', '"', '\\']), "{doc}: keep the documented command free of quotes: {args}");
            let args: Vec<&str> = args.split_whitespace().collect();
            let printed = k8s(&sb, &args);
            assert!(
                printed == format!("{shown}\n"),
                "{doc}: the block of `bulkhead k8s {args:?}` should be:\n{printed}"
            );
            manifests.push(printed);
            found += 1;
        }
        assert!(found > 0, "{doc} shows no `$ bulkhead k8s` block");
    }
    validate(&manifests);
    sb.assert_clean();
}

/// The pods' view: each index runs the manifest's own command line with JOB_COMPLETION_INDEX,
/// is stopped by SIGTERM at a random point and replaced (one pod at a time, as
/// `podReplacementPolicy: Failed` does) whenever the manifest's podFailurePolicy retries its exit
/// code; `bulkhead merge` then finds exactly one final record per task.
#[test]
fn pods_stopped_by_sigterm_and_replaced_merge_to_one_record_per_task() {
    let sb = Sandbox::new();
    let n = 240;
    let shards = 3;
    let tasks = sb.write(
        "tasks.jsonl",
        &tasks(n, |i| match i % 40 {
            0 => format!("{{\"id\":\"t{i}\",\"kind\":\"sleep\",\"ms\":20,\"fault\":\"segv\",\"fault_attempts\":1}}"),
            _ => format!("{{\"id\":\"t{i}\",\"kind\":\"sleep\",\"ms\":20}}"),
        }),
    );
    let mount = sb.dir.path().to_str().unwrap().to_string();
    let volume = format!("batch:{mount}");
    let manifest =
        k8s(&sb, &[tasks.to_str().unwrap(), "--shards", "3", "--volume", &volume, "--", "-j", "2", "--grace", "20s"]);
    validate(std::slice::from_ref(&manifest));
    assert_eq!(field(&manifest, "completionMode"), "Indexed");
    assert_eq!(field(&manifest, "completions"), shards.to_string());
    assert_eq!(field(&manifest, "podReplacementPolicy"), "Failed", "a replacement only after the old pod ended");
    assert_eq!(field(&manifest, "restartPolicy"), "Never");
    let retries: u32 = field(&manifest, "backoffLimitPerIndex").parse().unwrap();
    let command = command_of(&manifest);
    assert_eq!(command[0], "bulkhead", "the image's bulkhead, on its PATH");
    let args: Vec<&str> = command[1..].iter().map(String::as_str).collect();

    // A random point for each index's SIGTERM: after this many of its records.
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    let stop_at: Vec<usize> = (0..shards).map(|k| 1 + (seed as usize / (k + 1) * 7919) % 50).collect();
    eprintln!("SIGTERM after {stop_at:?} records (seed {seed})");
    struct Index {
        pod: Option<Running>,
        pods: u32,
        failures: u32,
        signalled: bool,
        logs: Vec<(Option<i32>, String)>,
        done: bool,
    }
    let results = |k: usize| sb.path(&format!("results-{k}.jsonl"));
    let index = |k: usize| k.to_string();
    let start = |k: usize| sb.spawn_env(&args, &[("JOB_COMPLETION_INDEX", &index(k))]);
    let mut idx: Vec<Index> = (0..shards)
        .map(|k| Index { pod: Some(start(k)), pods: 1, failures: 0, signalled: false, logs: vec![], done: false })
        .collect();
    let mut stopped_at = vec![None; shards];
    wait_for("every index of the Job to complete", || {
        for (k, ix) in idx.iter_mut().enumerate() {
            let Some(pod) = ix.pod.as_mut() else { continue };
            if !ix.signalled && count_lines(&results(k)) >= stop_at[k] {
                // The kubelet's SIGTERM goes to the container's PID 1: bulkhead.
                pod.signal(nix::sys::signal::Signal::SIGTERM);
                ix.signalled = true;
            }
            if !pod.exited() {
                continue;
            }
            let done = ix.pod.take().unwrap().wait();
            let code = done.code();
            ix.logs.push((code, done.stderr()));
            match code {
                Some(0) => ix.done = true,
                Some(c) => {
                    let action = policy(&manifest, c);
                    assert_eq!(action, "Count", "index {k} exit {c}:\n{}", done.stderr());
                    ix.failures += 1;
                    assert!(ix.failures <= retries, "index {k} ran out of retries");
                    if c == 143 {
                        stopped_at[k] = Some(count_lines(&results(k)));
                    }
                    // podReplacementPolicy: Failed: the replacement starts now the old pod has ended.
                    ix.pod = Some(start(k));
                    ix.pods += 1;
                }
                None => panic!("index {k}'s pod died of a signal: {:?}\n{}", done.status(), done.stderr()),
            }
        }
        idx.iter().all(|ix| ix.done)
    });
    let mut replaced = 0;
    for (k, ix) in idx.iter().enumerate() {
        let (_, first) = &ix.logs[0];
        assert!(first.contains(&format!("shard {k}/{shards} (JOB_COMPLETION_INDEX={k})")), "index {k}:\n{first}");
        if let Some(at) = stopped_at[k] {
            assert_eq!(ix.logs[0].0, Some(143), "index {k}: {:?}", ix.logs);
            assert!(first.contains("SIGTERM"), "index {k} drained:\n{first}");
            let (_, last) = ix.logs.last().unwrap();
            assert!(last.contains(&format!("(plus {at} from earlier runs)")), "index {k} resumed:\n{last}");
            assert!(at < count_lines(&results(k)), "index {k} was stopped before its end");
            replaced += 1;
        }
        // A shard's own file never has a task twice.
        assert_eq!(by_id(&read_records(&results(k))).len(), count_lines(&results(k)));
    }
    eprintln!(
        "{replaced} of {shards} indexes stopped by SIGTERM at {stopped_at:?} records and replaced; pods: {:?}",
        idx.iter().map(|ix| ix.pods).collect::<Vec<_>>()
    );
    assert!(replaced > 0, "no pod was stopped before its end");
    let out = sb.path("merged.jsonl");
    let files: Vec<String> = (0..shards).map(|k| results(k).to_string_lossy().into_owned()).collect();
    let mut margs = vec!["merge"];
    margs.extend(files.iter().map(String::as_str));
    margs.extend(["--tasks", tasks.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    let merged = sb.run(&margs, None);
    merged.expect_code(0);
    let recs = by_id(&read_records(&out));
    assert_eq!(recs.len(), n, "exactly one final record per task");
    for (id, r) in &recs {
        let crashed = id.strip_prefix('t').and_then(|i| i.parse::<usize>().ok()).is_some_and(|i| i % 40 == 0);
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["attempts"], 1 + u64::from(crashed), "no task was charged for a stop: {r}");
    }
    sb.assert_clean();
}

/// `--apply` hands the very manifest to `kubectl apply -f -`; a kubectl that refuses it is
/// exit 1, no kubectl at all is exit 2 with a clear word.
#[test]
fn apply_pipes_the_manifest_to_kubectl() {
    let sb = Sandbox::new();
    let bin = sb.path("bin");
    std::fs::create_dir(&bin).unwrap();
    let kubectl = bin.join("kubectl");
    std::fs::write(
        &kubectl,
        "#!/bin/sh\nprintf '%s\\n' \"$*\" > \"$0.args\"\ncat > \"$0.stdin\"\n\
         echo 'job.batch/bulkhead-tasks configured'\nexit \"${FAKE_KUBECTL_EXIT:-0}\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&kubectl, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let opts = ["/batch/tasks.jsonl", "--shards", "2", "--", "-j", "4"];
    let printed = k8s(&sb, &opts);
    validate(std::slice::from_ref(&printed));
    let apply = |path: &str, fail: bool| {
        let mut args = vec!["k8s", "--apply"];
        args.extend_from_slice(&opts);
        let mut c = sb.cmd(&args);
        c.env("PATH", path);
        if fail {
            c.env("FAKE_KUBECTL_EXIT", "1");
        }
        output_of(&mut c)
    };
    let out = apply(&path, false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(std::fs::read_to_string(bin.join("kubectl.args")).unwrap(), "apply -f -\n");
    assert!(std::fs::read_to_string(bin.join("kubectl.stdin")).unwrap() == printed, "kubectl got another manifest");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "job.batch/bulkhead-tasks configured\n", "kubectl's own output");
    assert!(err.contains("bulkhead merge /batch/results-*.jsonl --tasks /batch/tasks.jsonl"), "{err}");

    let out = apply(&path, true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("kubectl refused the manifest"), "{err}");

    let empty = sb.path("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = apply(empty.to_str().unwrap(), false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("kubectl is not on PATH"), "{err}");
    assert!(out.stdout.is_empty());
    sb.assert_clean();
}

/// `bulkhead k8s --help` names what it writes.
#[test]
fn help_names_the_options() {
    let sb = Sandbox::new();
    let out = output_of(&mut sb.cmd(&["k8s", "--help"]));
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in ["--shards", "--image", "--volume", "--results", "--apply", "--parallelism", "RUN_ARGS"] {
        assert!(help.contains(opt), "{opt}:\n{help}");
    }
    sb.assert_clean();
}
