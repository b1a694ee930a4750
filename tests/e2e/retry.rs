//! Retry policy end to end: a command's failure and timeout fail it once (unless
//! `--retries`), retries by crash cause, by exit status, a timeout relative to the median,
//! an out-of-memory retry with a larger memory factor, and `--resume-failed` finishing the
//! README's deploy example after a SIGKILL.

use std::collections::BTreeMap;

use crate::common::*;

/// Each task's records in file order: the last is the one that counts.
fn records_by_id(records: &[serde_json::Value]) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut out: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for r in records {
        out.entry(r["id"].as_str().unwrap().to_string()).or_default().push(r.clone());
    }
    out
}

fn by_stderr<'a>(recs: &'a [serde_json::Value], error: &str) -> &'a serde_json::Value {
    recs.iter()
        .find(|r| r["error"].as_str().is_some_and(|e| e.contains(error)))
        .unwrap_or_else(|| panic!("no record with error {error:?}: {recs:?}"))
}

/// A command that exits non-zero or times out has failed, once; `--retries 2` runs it twice.
/// The worker killed to stop the timed-out one is replaced; the record names the cause and
/// the limit.
#[test]
fn a_failed_or_timed_out_command_fails_once_unless_retries_ask_for_more() {
    let sb = Sandbox::new();
    let input = "exit 3\nsleep 300\necho fine\n";
    for (retries, runs) in [("1", 1), ("2", 2)] {
        let done = sb.run(
            &["run", "-j", "2", "--output", "records", "--cmd", "eval {}", "--timeout", "2s", "--retries", retries],
            Some(input),
        );
        done.expect_code(1);
        let recs = done.records();
        assert_eq!(recs.len(), 3, "{recs:?}");
        let exited = by_stderr(&recs, "exit status 3");
        assert_eq!((&exited["status"], &exited["attempts"]), (&"failed".into(), &runs.into()), "{exited}");
        assert_eq!(exited["rule"], format!("retries={retries}"));
        let slow = by_stderr(&recs, "timed out");
        assert_eq!((&slow["status"], &slow["attempts"]), (&"failed".into(), &runs.into()), "{slow}");
        assert_eq!(causes(slow), vec!["timeout"; runs]);
        assert_eq!(slow["crashes"][0]["limit_ms"], 2000);
        assert!(recs.iter().any(|r| r["status"] == "ok"), "{recs:?}");
    }
    sb.assert_clean();
}

/// `--retry-exit 75` retries a command that exits 75 (within --attempts) until it succeeds;
/// without it the same command fails once; `--fail-exit 2` fails at once whatever
/// `--retries` allows.
#[test]
fn exit_statuses_decide_retries() {
    let sb = Sandbox::new();
    // Exits 75 on its first run (the marker does not exist yet), 0 after.
    let flaky = |marker: &str| format!("test -e {marker} || {{ touch {marker}; exit 75; }}\n");
    let done = sb.run(&["run", "-j", "1", "--output", "records", "--cmd", "eval {}"], Some(&flaky("m1")));
    done.expect_code(1);
    let r = &done.records()[0];
    assert_eq!((&r["status"], &r["attempts"], &r["rule"]), (&"failed".into(), &1.into(), &"retries=1".into()));
    let done = sb
        .run(&["run", "-j", "1", "--output", "records", "--cmd", "eval {}", "--retry-exit", "75"], Some(&flaky("m2")));
    done.expect_code(0);
    let r = &done.records()[0];
    assert_eq!((&r["status"], &r["attempts"]), (&"ok".into(), &2.into()), "{r}");
    let done = sb.run(
        &["run", "-j", "1", "--output", "records", "--cmd", "eval {}", "--fail-exit", "2", "--retries", "3"],
        Some("exit 2\n"),
    );
    done.expect_code(1);
    let r = &done.records()[0];
    assert_eq!((&r["status"], &r["attempts"], &r["rule"]), (&"failed".into(), &1.into(), &"fail-exit=2".into()));
    // One status in both lists is refused before anything runs.
    let done =
        sb.run(&["run", "--output", "records", "--cmd", "true", "--retry-exit", "2", "--fail-exit", "2"], Some("x\n"));
    done.expect_code(2);
    assert!(done.stderr().contains("exit status 2 is in both"), "{}", done.stderr());
    sb.assert_clean();
}

/// `--retry panic=1`: a panicking task is quarantined after its one attempt, while a
/// segfault in the same batch is retried within --attempts and succeeds.
#[test]
fn a_panic_rule_quarantines_at_once_while_a_segfault_is_retried() {
    let sb = Sandbox::new();
    let tasks = sb.write(
        "tasks.jsonl",
        "{\"id\":\"p\",\"kind\":\"noop\",\"fault\":\"panic\"}\n\
         {\"id\":\"s\",\"kind\":\"noop\",\"fault\":\"segv\",\"fault_attempts\":2}\n\
         {\"id\":\"plain\",\"kind\":\"noop\"}\n",
    );
    let done = sb.run(&["run", tasks.to_str().unwrap(), "-j", "2", "--retry", "panic=1"], None);
    done.expect_code(1);
    let recs = by_id(&done.records());
    assert_eq!((&recs["p"]["status"], &recs["p"]["attempts"]), (&"quarantined".into(), &1.into()), "{}", recs["p"]);
    assert_eq!(recs["p"]["rule"], "panic=1");
    assert_eq!(causes(&recs["p"]), ["panic"]);
    assert_eq!((&recs["s"]["status"], &recs["s"]["attempts"]), (&"ok".into(), &3.into()), "{}", recs["s"]);
    assert_eq!(causes(&recs["s"]), ["signal", "signal"]);
    assert_eq!(recs["plain"]["status"], "ok");
    // A cause no worker dies of is refused with the list.
    let done = sb.run(&["run", tasks.to_str().unwrap(), "--retry", "segv=1"], None);
    done.expect_code(2);
    assert!(done.stderr().contains("unknown cause 'segv'"), "{}", done.stderr());
    sb.assert_clean();
}

/// `--retry oom=2:x2`: a task that ran out of memory is retried once with its memory factor
/// doubled, and succeeds; one that runs out every time is quarantined after 2 attempts.
#[test]
fn an_oom_is_retried_once_with_a_doubled_memory_factor() {
    let sb = Sandbox::new();
    let tasks = sb.write(
        "tasks.jsonl",
        "{\"id\":\"once\",\"kind\":\"noop\",\"fault\":\"oom\",\"fault_attempts\":1}\n\
         {\"id\":\"always\",\"kind\":\"noop\",\"fault\":\"oom\"}\n",
    );
    let args = ["run", tasks.to_str().unwrap(), "-j", "2", "--memory-limit", "128M", "--retry", "oom=2:x2"];
    let done = sb.run(&args, None);
    done.expect_code(1);
    let recs = by_id(&done.records());
    let once = &recs["once"];
    assert_eq!((&once["status"], &once["attempts"], &once["memory_factor"]), (&"ok".into(), &2.into(), &2.into()));
    assert_eq!(causes(once), ["oom"]);
    let always = &recs["always"];
    assert_eq!((&always["status"], &always["attempts"]), (&"quarantined".into(), &2.into()), "{always}");
    assert_eq!(always["rule"], "oom=2");
    sb.assert_clean();
}

/// `--retry oom=2:x2` under the resident `--memory-limit`: a command that holds 150 MiB is
/// killed as `oom` under 100M, and its second attempt, under 200M, ends ok; with `oom=2`
/// alone the second attempt has the same limit and dies the same way.
#[test]
fn an_oom_retried_with_a_doubled_limit_ends_ok() {
    let sb = Sandbox::new();
    // Holds 150 MiB, touched, long enough for the 10 ms samples to see it.
    let hog = "python3 -c 'b = bytearray(150 << 20); import time; time.sleep(0.5)'";
    let task = format!("{{\"id\":\"hog\",\"kind\":\"shell\",\"cmd\":{}}}\n", serde_json::to_string(hog).unwrap());
    let tasks = sb.write("tasks.jsonl", &task);
    let run = |rule: &str| {
        sb.run(&["run", tasks.to_str().unwrap(), "-j", "1", "--memory-limit", "100M", "--retry", rule], None)
    };
    let doubled = run("oom=2:x2");
    doubled.expect_code(0);
    let r = &doubled.records()[0];
    assert_eq!((&r["status"], &r["attempts"], &r["memory_factor"]), (&"ok".into(), &2.into(), &2.into()), "{r}");
    assert_eq!(causes(r), ["oom"]);
    assert_eq!(r["crashes"][0]["limit"], 100u64 << 20, "{r}");
    let same = run("oom=2");
    same.expect_code(1);
    let r = &same.records()[0];
    assert_eq!((&r["status"], &r["attempts"]), (&"quarantined".into(), &2.into()), "{r}");
    assert_eq!(causes(r), ["oom", "oom"]);
    sb.assert_clean();
}

/// `--timeout 300%`: of eleven sleeps, the one ten times longer than the rest is killed at
/// three times the median of those that succeeded, and none of the others.
#[test]
fn a_relative_timeout_kills_only_the_task_far_slower_than_the_rest() {
    let sb = Sandbox::new();
    let mut input = tasks(10, |i| format!("{{\"id\":\"s{i}\",\"kind\":\"sleep\",\"ms\":200}}"));
    input.push_str("{\"id\":\"long\",\"kind\":\"sleep\",\"ms\":2000}\n");
    let tasks = sb.write("tasks.jsonl", &input);
    let done = sb.run(&["run", tasks.to_str().unwrap(), "-j", "2", "--timeout", "300%", "--attempts", "1"], None);
    done.expect_code(1);
    let recs = by_id(&done.records());
    assert_eq!(recs.len(), 11);
    let killed: Vec<&String> = recs.iter().filter(|(_, r)| r["status"] != "ok").map(|(id, _)| id).collect();
    assert_eq!(killed, ["long"], "{recs:?}");
    assert_eq!(causes(&recs["long"]), ["timeout"]);
    // The limit in force is in the record: three times a median of sleeps of at least 200 ms.
    let limit = recs["long"]["crashes"][0]["limit_ms"].as_u64().unwrap();
    assert!(limit >= 600, "{}", recs["long"]);
    sb.assert_clean();
}

/// The README's deploy command: `gzip -9f` overwrites what a killed gzip left; a gzip that
/// finished but whose record the kill lost finds its file gone and counts as done.
const GZIP: &str = "gzip -9f {} || { [ -e {}.gz ] && [ ! -e {} ]; }";

/// The README's deploy example, SIGKILLed mid-way and finished with `--resume-failed`: every
/// file ends compressed (gzip -9f overwrites what a killed gzip left), a file that was not
/// there at first is compressed once it is, and each file has one record that counts.
#[test]
fn resume_failed_finishes_the_deploy_example_after_a_sigkill() {
    let sb = Sandbox::new();
    std::fs::create_dir(sb.path("data")).unwrap();
    let mut names = String::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..24 {
        // Incompressible bytes, so that each gzip takes a while and the kill lands mid-batch.
        let bytes: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(sb.path(&format!("data/{i}.log")), bytes).unwrap();
        names.push_str(&format!("data/{i}.log\n"));
    }
    // Listed, but created only after the first run: its gzip fails there.
    names.push_str("data/late.log\n");
    let list = sb.write("files.txt", &names);
    let results = sb.path("done.jsonl");
    let args = ["run", list.to_str().unwrap(), "--cmd", GZIP, "-j", "2", "--results", results.to_str().unwrap()];
    let run = sb.spawn(&args, None);
    wait_for("a first record", || std::fs::read_to_string(&results).is_ok_and(|t| t.lines().count() >= 1));
    sb.kill_hard(&run);
    let _ = run.wait();
    sb.assert_nothing_alive();
    // The late file's failure is final for --resume (and for a run that finishes first).
    let mut more = args.to_vec();
    more.push("--resume");
    sb.run(&more, None).expect_code(1);
    let late = &records_by_id(&read_records(&results))
        .into_values()
        .find(|rs| rs.iter().any(|r| r["stderr"]["head"].as_str().is_some_and(|e| e.contains("late.log"))));
    let late_id = late.as_ref().expect("a failed record for late.log")[0]["id"].as_str().unwrap().to_string();
    std::fs::write(sb.path("data/late.log"), "now here\n").unwrap();
    more.pop();
    more.push("--resume-failed");
    sb.run(&more, None).expect_code(0);
    for i in 0..24 {
        assert!(sb.path(&format!("data/{i}.log.gz")).exists(), "data/{i}.log.gz is missing");
        assert!(!sb.path(&format!("data/{i}.log")).exists(), "data/{i}.log is left uncompressed");
    }
    assert!(sb.path("data/late.log.gz").exists() && !sb.path("data/late.log").exists());
    let recs = records_by_id(&read_records(&results));
    assert_eq!(recs.len(), 25, "{recs:?}");
    for (id, rs) in &recs {
        // The last record counts: ok, and it counts the ones before it.
        let last = rs.last().unwrap();
        assert_eq!(last["status"], "ok", "{id}: {rs:?}");
        if rs.len() > 1 {
            assert_eq!(last["supersedes"], rs.len() - 1, "{id}: {rs:?}");
        } else {
            assert!(last.get("supersedes").is_none(), "{id}: {rs:?}");
        }
    }
    assert_eq!(recs[&late_id].len(), 2, "{:?}", recs[&late_id]);
    // merge agrees: one record per task, every one ok.
    let merged = sb.path("merged.jsonl");
    let m = sb.run(
        &[
            "merge",
            results.to_str().unwrap(),
            "--tasks",
            list.to_str().unwrap(),
            "--cmd",
            GZIP,
            "-o",
            merged.to_str().unwrap(),
        ],
        None,
    );
    m.expect_code(0);
    assert_eq!(read_records(&merged).len(), 25);
    sb.assert_clean();
}
