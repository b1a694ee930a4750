//! Past one machine: shards merged back into one results file, and a sharded batch run as a
//! real Slurm job array through `bulkhead slurm`, crashes, a SIGTERM and a requeue included.
//!
//! The Slurm tests need a cluster (`.ci/slurm-up.sh` starts one on localhost, as root). Without
//! one they say "SKIPPED" on stderr and pass, unless BULKHEAD_REQUIRE_SLURM=1 (set by CI when it
//! brought a cluster up), where a missing cluster is a failure rather than a quiet skip. The
//! cluster may be someone else's: the requeue test reads its settings and waits as long as
//! they make a requeued job wait, or says SKIPPED when that is over 10 minutes.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::common::*;

/// The Slurm tests share one small cluster: run one at a time, so one test's array does not
/// wait in the queue behind the other's.
static CLUSTER: Mutex<()> = Mutex::new(());

fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}

/// A Slurm command's stdout; panics with its stderr when it fails.
fn slurm_cmd(program: &str, args: &[&str]) -> String {
    let out = output_of(Command::new(program).args(args));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a Slurm cluster with a usable node answers here; says why not when it does not.
/// Asked once: with the package installed but no controller, sinfo retries for seconds.
fn cluster_up() -> bool {
    static UP: OnceLock<Result<(), String>> = OnceLock::new();
    let up = UP.get_or_init(|| {
        let mut sinfo = Command::new("sinfo")
            .args(["-h", "-o", "%T"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|_| "sinfo is not on PATH".to_string())?;
        let asked = Instant::now();
        while sinfo.try_wait().unwrap().is_none() {
            if asked.elapsed() > Duration::from_secs(5) {
                let _ = sinfo.kill();
                let _ = sinfo.wait();
                return Err("sinfo got no answer from a controller within 5 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut sinfo.stdout.take().unwrap(), &mut text).unwrap();
        if text.lines().any(|s| matches!(s.trim().trim_end_matches('*'), "idle" | "mixed" | "allocated")) {
            Ok(())
        } else {
            Err(format!("no node is up: sinfo says {:?}", text.trim()))
        }
    });
    let Err(why) = up else { return true };
    let required = std::env::var("BULKHEAD_REQUIRE_SLURM").is_ok_and(|v| v == "1");
    assert!(!required, "BULKHEAD_REQUIRE_SLURM=1 but there is no Slurm cluster: {why}");
    // Straight to the stream, not through eprintln!, which the test harness captures: the
    // skip must show in a plain `cargo test`.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: no Slurm cluster ({why}); run .ci/slurm-up.sh as root to test on a real one"
    );
    false
}

/// Waits until the array job has left the queue: [`PATIENCE`] plus `extra`, what the cluster's
/// settings add.
fn wait_for_array(job: &str, extra: Duration) {
    wait_for_up_to(&format!("Slurm array {job} to end"), PATIENCE + extra, || {
        slurm_cmd("squeue", &["-h", "-j", job]).trim().is_empty()
    });
}

/// The longest this test suite waits for a cluster's own delays; a cluster set up to take
/// longer is skipped, said so.
const LONGEST_DELAY: Duration = Duration::from_secs(600);

/// How long this cluster, by its own settings (`scontrol show config`), lets a requeued job
/// wait before it runs again, and why: Slurm holds a requeued job until its credential has
/// expired (`AuthInfo=cred_expire`, 120 s by default) plus a second, and then starts it at a
/// periodic scheduling pass, since no event triggers one: the main scheduler's
/// (`sched_interval`, 60 s by default) or the backfill scheduler's (`bf_interval`, 30 s by
/// default). The passes run on the controller's own clock, and on a cluster with the defaults
/// the requeue test's array ended 179 s after it was submitted, its shard requeued about 10 s
/// in: more than cred_expire + 1 + bf_interval, so the longer interval counts. `.ci/slurm-up.sh`'s own cluster sets 5 s and 1 s; another's may not.
fn requeue_delay() -> (Duration, String) {
    let config = slurm_cmd("scontrol", &["show", "config"]);
    let value = |key: &str| {
        config.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    };
    let param = |list: &Option<String>, name: &str| {
        list.as_deref()?.split(',').find_map(|p| p.trim().strip_prefix(name)?.strip_prefix('=')?.parse::<u64>().ok())
    };
    let auth = value("AuthInfo");
    let sched = value("SchedulerParameters");
    let cred_expire = param(&auth, "cred_expire").unwrap_or(120);
    let sched_interval = param(&sched, "sched_interval").unwrap_or(60);
    let backfill = value("SchedulerType").is_some_and(|t| t.contains("backfill"));
    let bf_interval = param(&sched, "bf_interval").unwrap_or(30);
    let pass = if backfill { sched_interval.max(bf_interval) } else { sched_interval };
    let why = format!(
        "cred_expire={cred_expire} s{}, then a scheduling pass within {pass} s (sched_interval={sched_interval}{})",
        if param(&auth, "cred_expire").is_none() { " (Slurm's default)" } else { "" },
        if backfill { format!(", bf_interval={bf_interval}") } else { String::new() }
    );
    (Duration::from_secs(cred_expire + 1 + pass), why)
}

/// Each array task's (task id, state, exit code, restarts), from `scontrol` (kept 300 s after
/// the end, so no accounting database is needed).
fn array_tasks(job: &str) -> Vec<(u32, String, String, u32)> {
    let text = slurm_cmd("scontrol", &["-o", "show", "job", job]);
    let field = |line: &str, key: &str| {
        line.split_whitespace().find_map(|f| f.strip_prefix(key).map(str::to_string)).unwrap_or_default()
    };
    let mut tasks: Vec<_> = text
        .lines()
        .map(|l| {
            (
                field(l, "ArrayTaskId=").parse().unwrap_or(u32::MAX),
                field(l, "JobState="),
                field(l, "ExitCode="),
                field(l, "Restarts=").parse().unwrap_or(0),
            )
        })
        .collect();
    tasks.sort();
    tasks
}

/// Submits the batch through `bulkhead slurm`; returns the job id it printed.
fn submit(sb: &Sandbox, tasks: &Path, extra: &[&str]) -> String {
    let mut args = vec!["slurm", tasks.to_str().unwrap()];
    args.extend_from_slice(extra);
    let done = sb.run(&args, None);
    done.expect_code(0);
    let job = done.stdout().trim().to_string();
    assert!(!job.is_empty() && job.bytes().all(|b| b.is_ascii_digit()), "not a job id: {:?}", done.stdout());
    job
}

/// `bulkhead merge` of the shards' results; returns (exit code, stderr).
fn merge(sb: &Sandbox, files: &[&Path], tasks: &Path, out: Option<&Path>) -> (Option<i32>, String) {
    let mut args: Vec<&str> = vec!["merge"];
    args.extend(files.iter().map(|p| p.to_str().unwrap()));
    args.extend(["--tasks", tasks.to_str().unwrap()]);
    if let Some(o) = out {
        args.extend(["-o", o.to_str().unwrap()]);
    }
    let done = sb.run(&args, None);
    (done.code(), done.stderr())
}

fn shard_files(sb: &Sandbox, n: usize) -> Vec<std::path::PathBuf> {
    (0..n).map(|k| sb.path(&format!("results-{k}.jsonl"))).collect()
}

/// Shards run by hand (no cluster needed) and merged: every task once; a missing shard, a
/// shard given twice and an existing output are each told apart by the exit code.
#[test]
fn merge_checks_shards_against_the_task_list() {
    let sb = Sandbox::new();
    let n = 120;
    let tasks = sb.write(
        "tasks.jsonl",
        &tasks(n, |i| match i {
            // One task without an id: merge must find its record by the same content hash.
            0 => "{\"kind\":\"sleep\",\"ms\":1}".to_string(),
            7 => "{\"id\":\"t7\",\"kind\":\"noop\",\"fault\":\"segv\",\"fault_attempts\":1}".to_string(),
            9 => "{\"id\":\"t9\",\"kind\":\"noop\",\"fault\":\"segv\"}".to_string(),
            _ => format!("{{\"id\":\"t{i}\",\"kind\":\"noop\"}}"),
        }),
    );
    let files = shard_files(&sb, 4);
    for (k, f) in files.iter().enumerate() {
        let shard = format!("{k}/4");
        let done = sb.run(
            &["run", tasks.to_str().unwrap(), "--shard", &shard, "-j", "2", "--results", f.to_str().unwrap()],
            None,
        );
        assert!(matches!(done.code(), Some(0 | 1)), "shard {shard}: {}", done.stderr());
    }
    let all: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let out = sb.path("merged.jsonl");
    let (code, err) = merge(&sb, &all, &tasks, Some(&out));
    // t9 crashes on every attempt: quarantined, so complete but not all ok.
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("120 tasks: 120 with one final record (119 ok, 0 failed, 1 quarantined), 0 missing"), "{err}");
    let recs = by_id(&read_records(&out));
    assert_eq!(recs.len(), n);
    assert_eq!(recs["t9"]["status"], "quarantined");
    assert_eq!(causes(&recs["t7"]), ["signal"]);

    // The output is never overwritten.
    let (code, err) = merge(&sb, &all, &tasks, Some(&out));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("never overwrites"), "{err}");
    assert_eq!(read_records(&out).len(), n);

    // A shard missing: incomplete, and the missing tasks are named.
    let (code, err) = merge(&sb, &all[..3], &tasks, None);
    assert_eq!(code, Some(4), "{err}");
    let lost = count_lines(&files[3]);
    assert!(err.contains(&format!("{lost} of 120 tasks have no final record")), "{err}");

    // The same file given twice is a slip of the command line, said as such.
    let (code, err) = merge(&sb, &[all[0], all[1], all[2], all[3], all[0]], &tasks, None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("is given twice"), "{err}");
    // A copy of a shard under another name: two final records for its tasks.
    let copy = sb.path("copy-of-0.jsonl");
    std::fs::copy(&files[0], &copy).unwrap();
    let (code, err) = merge(&sb, &[all[0], all[1], all[2], all[3], copy.as_path()], &tasks, None);
    assert_eq!(code, Some(5), "{err}");
    assert!(err.contains("has two final records") && err.contains("(kept)"), "{err}");
    std::fs::remove_file(&copy).unwrap();

    // A shard killed while writing: its torn last line is left out, with a warning naming it.
    let mut torn = std::fs::read_to_string(&files[2]).unwrap();
    let last = torn.trim_end().rfind('\n').map_or(0, |i| i + 1);
    torn.truncate(last + 10);
    std::fs::write(&files[2], torn).unwrap();
    let (code, err) = merge(&sb, &all, &tasks, None);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("results-2.jsonl") && err.contains("cut short"), "{err}");
    assert!(err.contains("1 of 120 tasks have no final record"), "{err}");
    sb.assert_clean();
}

/// The first "done when": a 4-shard batch of a few hundred tasks with crashes, run
/// through `bulkhead slurm` on a real cluster, merges to every task exactly once.
#[test]
fn a_sharded_batch_with_crashes_completes_on_slurm() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    if !cluster_up() {
        return;
    }
    let sb = Sandbox::new();
    let n = 300;
    let tasks = sb.write(
        "tasks.jsonl",
        &tasks(n, |i| match i % 25 {
            0 => format!("{{\"id\":\"t{i}\",\"kind\":\"sleep\",\"ms\":5,\"fault\":\"segv\",\"fault_attempts\":1}}"),
            7 => format!("{{\"id\":\"t{i}\",\"kind\":\"noop\",\"fault\":\"panic\",\"fault_attempts\":2}}"),
            13 => format!("{{\"id\":\"t{i}\",\"kind\":\"noop\",\"fault\":\"abort\",\"fault_attempts\":1}}"),
            _ => format!("{{\"id\":\"t{i}\",\"kind\":\"sleep\",\"ms\":5}}"),
        }),
    );
    let start = Instant::now();
    let job = submit(
        &sb,
        &tasks,
        &[
            "--shards",
            "4",
            "--sbatch-arg=--comment=bulkhead e2e",
            "--",
            "-j",
            "2",
            "--inject",
            "segv:0.02",
            "--seed",
            "7",
        ],
    );
    wait_for_array(&job, Duration::ZERO);
    eprintln!("slurm array {job} of 4 shards ({n} tasks) ended after {:.1}s", start.elapsed().as_secs_f64());
    let shards = array_tasks(&job);
    assert_eq!(shards.len(), 4, "{shards:?}");
    assert!(slurm_cmd("scontrol", &["-o", "show", "job", &job]).contains("Comment=bulkhead e2e"), "--sbatch-arg");
    for (k, state, code, _) in &shards {
        let log = std::fs::read_to_string(sb.path(&format!("slurm-{job}_{k}.out"))).unwrap_or_default();
        assert_eq!((state.as_str(), code.as_str()), ("COMPLETED", "0:0"), "shard {k}:\n{log}");
        assert!(log.contains(&format!("shard {k}/4")), "shard {k} ran another shard:\n{log}");
    }
    let files = shard_files(&sb, 4);
    let all: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let out = sb.path("merged.jsonl");
    let (code, err) = merge(&sb, &all, &tasks, Some(&out));
    assert_eq!(code, Some(0), "{err}");
    let recs = by_id(&read_records(&out));
    assert_eq!(recs.len(), n, "every task exactly once");
    assert!(recs.values().all(|r| r["status"] == "ok"));
    let crashed = recs.values().filter(|r| !causes(r).is_empty()).count();
    assert!(crashed >= 36, "the injected crashes happened: {crashed} tasks crashed");
    assert_eq!(causes(&recs["t7"]), ["panic", "panic"]);
    sb.assert_clean();
}

/// The second "done when": one shard stopped by SIGTERM in the middle of its run
/// (`scancel --signal=TERM --batch`, as a time-limit warning does) drains, exits 143, requeues
/// itself (`--requeue`), resumes its own results file and completes without duplicates.
#[test]
fn a_shard_stopped_by_sigterm_requeues_and_resumes_on_slurm() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    if !cluster_up() {
        return;
    }
    let (delay, why) = requeue_delay();
    if delay > LONGEST_DELAY {
        // Straight to the stream: the harness captures eprintln!.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: this Slurm cluster holds a requeued job {} s ({why}), over the {} s this test waits",
            delay.as_secs(),
            LONGEST_DELAY.as_secs()
        );
        return;
    }
    eprintln!("a requeued shard waits up to {} s on this cluster: {why}", delay.as_secs());
    let sb = Sandbox::new();
    let n = 400;
    let tasks = sb.write("tasks.jsonl", &tasks(n, |i| format!("{{\"id\":\"t{i}\",\"kind\":\"sleep\",\"ms\":50}}")));
    let start = Instant::now();
    let job = submit(&sb, &tasks, &["--shards", "4", "--requeue", "--", "-j", "2", "--grace", "20s"]);
    // Shard 3 starts last on a small node. Stop it once it is under way and no task of the
    // array is still pending: while some are, Slurm 22.05 answers a --batch signal with
    // "Job is in transitional state" and scancel sends it again every 5 s, which could reach
    // the requeued shard too.
    let victim = sb.path("results-3.jsonl");
    wait_for("shard 3 to be under way with nothing pending", || {
        count_lines(&victim) >= 10 && slurm_cmd("squeue", &["-h", "-t", "PD", "-j", &job]).trim().is_empty()
    });
    let before = count_lines(&victim);
    let task = format!("{job}_3");
    let mut scancel = Command::new("scancel")
        .args(["--signal=TERM", "--batch", &task])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start scancel");
    // The fact to wait on: Slurm has requeued the shard (its script did, after bulkhead's 143).
    wait_for("shard 3 to be requeued", || {
        let text = slurm_cmd("scontrol", &["-o", "show", "job", &task]);
        text.contains("Restarts=1") || text.contains("JobState=PENDING")
    });
    let stopped_at = count_lines(&victim);
    let scancel_done = Instant::now();
    while scancel.try_wait().unwrap().is_none() && scancel_done.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let retrying = scancel.try_wait().unwrap().is_none();
    if retrying {
        // Still retrying (see above): the signal has landed, stop it before it lands twice.
        let _ = scancel.kill();
    }
    let _ = scancel.wait();
    wait_for_array(&job, delay);
    eprintln!(
        "slurm array {job}: shard 3 stopped at {stopped_at} records (asked at {before}{}), requeued, array ended after {:.1}s",
        if retrying { "; scancel was still retrying" } else { "" },
        start.elapsed().as_secs_f64()
    );
    let shards = array_tasks(&job);
    let log = std::fs::read_to_string(sb.path(&format!("slurm-{job}_3.out"))).unwrap_or_default();
    assert_eq!(shards.len(), 4, "{shards:?}");
    for (k, state, code, restarts) in &shards {
        assert_eq!((state.as_str(), code.as_str()), ("COMPLETED", "0:0"), "shard {k}: {shards:?}\n{log}");
        assert_eq!(*restarts, u32::from(*k == 3), "only shard 3 restarted: {shards:?}");
    }
    assert!(log.contains("SIGTERM: starting nothing new"), "bulkhead drained:\n{log}");
    assert!(log.contains("requeueing"), "the script requeued the shard:\n{log}");
    assert!(log.contains(&format!("(plus {stopped_at} from earlier runs)")), "the requeued shard resumed:\n{log}");
    assert!(stopped_at < count_lines(&victim), "shard 3 was stopped before its end");
    let files = shard_files(&sb, 4);
    // The stopped shard's own file has no record twice either.
    assert_eq!(by_id(&read_records(&files[3])).len(), count_lines(&files[3]));
    let all: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let out = sb.path("merged.jsonl");
    let (code, err) = merge(&sb, &all, &tasks, Some(&out));
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("duplicate") && !err.contains("two final records"), "{err}");
    let recs = by_id(&read_records(&out));
    assert_eq!(recs.len(), n, "every task exactly once");
    assert!(recs.values().all(|r| r["status"] == "ok" && r["attempts"] == 1), "no task was charged for the stop");
    sb.assert_clean();
}
