//! Time, memory and protocol faults: timeouts, heartbeats, memory limits, garbage, closed
//! sockets, and crash loops.

use crate::common::*;

/// The batch: one task each of hang, freeze, oom, garbage, disconnect (first attempt
/// only) and ordinary tasks, with a timeout and a memory limit.
#[test]
fn time_memory_and_protocol_faults_are_survived_with_their_causes() {
    let sb = Sandbox::new();
    let mut input = String::new();
    for fault in ["hang", "freeze", "oom", "garbage", "disconnect"] {
        input.push_str(&format!(
            "{{\"id\":\"{fault}\",\"kind\":\"sleep\",\"ms\":10,\"fault\":\"{fault}\",\"fault_attempts\":1}}\n"
        ));
    }
    for i in 0..5 {
        input.push_str(&format!("{{\"id\":\"plain{i}\",\"kind\":\"sleep\",\"ms\":20}}\n"));
    }
    let tasks = sb.write("tasks.jsonl", &input);
    // The oom task fills its memory limit page by page before the allocation fails: 128 MiB
    // keeps that well inside the timeout even on a loaded machine (512 MiB took over 2 s at
    // load 11 on 2 cores, and was recorded as a timeout).
    let done =
        sb.run(&["run", tasks.to_str().unwrap(), "-j", "2", "--timeout", "5s", "--address-space-limit", "128M"], None);
    done.expect_code(0);
    let recs = by_id(&done.records());
    assert_eq!(recs.len(), 10);
    assert!(recs.values().all(|r| r["status"] == "ok"), "{recs:?}");
    let expect = [
        ("hang", "timeout"),
        ("freeze", "unresponsive"),
        ("oom", "oom"),
        ("garbage", "protocol"),
        ("disconnect", "protocol"),
    ];
    for (id, cause) in expect {
        assert_eq!(recs[id]["attempts"], 2, "{}", recs[id]);
        assert_eq!(causes(&recs[id]), [cause], "{}", recs[id]);
    }
    assert!(recs["oom"]["crashes"][0]["detail"].as_str().unwrap().contains("memory allocation"));
    assert!(recs["garbage"]["crashes"][0]["detail"].as_str().unwrap().contains("exceeds the limit"));
    assert_eq!(recs["hang"]["crashes"][0]["limit_ms"], 5000);
    sb.assert_clean();
}

/// Every task segfaults: the restart limit stops the loop with exit 3 and says why, keeping
/// the records already written.
#[test]
fn a_crash_loop_gives_up_with_exit_3() {
    let sb = Sandbox::new();
    let tasks =
        sb.write("tasks.jsonl", &tasks(50, |i| format!("{{\"id\":\"s{i}\",\"kind\":\"noop\",\"fault\":\"segv\"}}")));
    let results = sb.path("results.jsonl");
    let done = sb.run(
        &["run", tasks.to_str().unwrap(), "-j", "2", "--max-restarts", "10/5s", "--results", results.to_str().unwrap()],
        None,
    );
    done.expect_code(3);
    assert!(
        done.stderr().contains("gave up: workers died 11 times within 5.0s, more than --max-restarts 10/5.0s allows"),
        "{}",
        done.stderr()
    );
    // What was recorded before the end is kept: the tasks that used up their attempts.
    let kept = read_records(&results);
    assert!(!kept.is_empty(), "{}", done.stderr());
    assert!(
        kept.iter().all(|r| r["status"] == "quarantined"
            && r["crashes"].as_array().is_some_and(|c| c.len() == 3 && c.iter().all(|c| c["signal"] == "SIGSEGV"))),
        "{kept:?}"
    );
    sb.assert_clean();
}

/// A worker busy in a long computation keeps beating; it is not taken for a frozen one.
#[test]
fn a_long_computation_is_not_mistaken_for_a_frozen_worker() {
    let sb = Sandbox::new();
    // The computation must outlast the 2 s heartbeat limit by a margin, whatever the speed of
    // the machine: from about 0.75 s of a core in a debug build here, doubled until it does.
    // (It started at 3 s of a core, which took past the run's 60 s wait on a 2-core machine
    // loaded 22 deep; loaded, a small n already runs long enough.)
    let mut n: u64 = 30_000_000;
    loop {
        let input = format!("{{\"id\":\"long\",\"kind\":\"sum_squares\",\"n\":{n}}}\n");
        let done = sb.run(&["run", "-j", "1"], Some(&input));
        done.expect_code(0);
        let r = &done.records()[0];
        assert_eq!(r["attempts"], 1, "{r}");
        assert!(r["crashes"].is_null(), "{r}");
        if r["ms"].as_f64().unwrap() > 2_500.0 {
            break;
        }
        assert!(n < 4_000_000_000, "even n = {n} ran in under 2.5 s: {r}");
        n *= 2;
    }
    sb.assert_clean();
}

/// A shell task that times out dies with its whole process group: no grandchild survives,
/// not even one that ignores SIGTERM (the kill escalates to SIGKILL). It has failed, once.
#[test]
fn a_timed_out_shell_task_leaves_no_grandchild() {
    let sb = Sandbox::new();
    let input = "{\"id\":\"tree\",\"kind\":\"shell\",\"cmd\":\"trap '' TERM; sleep 300 & sleep 301 & sleep 302\"}\n";
    let done = sb.run(&["run", "-j", "1", "--timeout", "500ms"], Some(input));
    done.expect_code(1);
    let r = &done.records()[0];
    assert_eq!((&r["status"], &r["attempts"]), (&"failed".into(), &1.into()), "{r}");
    assert_eq!(causes(r), ["timeout"]);
    sb.assert_clean();
}

/// Deaths charged to the tasks that caused them (4 tasks that abort, 3 attempts each) are
/// replaced at once, however many in a row: the tasks' attempts bound them. (Deaths no task
/// answers for, a worker dying at start, back off: the engine's tests tell that story.)
#[test]
fn deaths_charged_to_their_tasks_are_replaced_without_backoff() {
    let sb = Sandbox::new();
    let tasks =
        sb.write("tasks.jsonl", &tasks(4, |i| format!("{{\"id\":\"p{i}\",\"kind\":\"noop\",\"fault\":\"abort\"}}")));
    let events = sb.path("events.jsonl");
    let done = sb.run(&["run", tasks.to_str().unwrap(), "-j", "1", "--events", events.to_str().unwrap()], None);
    done.expect_code(1);
    let backoffs: Vec<f64> = read_records(&events)
        .iter()
        .filter(|e| e["event"] == "worker_restarted")
        .map(|e| e["backoff_ms"].as_f64().unwrap())
        .collect();
    assert!(backoffs.len() >= 10, "{backoffs:?}");
    assert!(backoffs.iter().all(|&b| b == 0.0), "every restart is immediate: {backoffs:?}");
    let records = done.records();
    assert!(records.iter().all(|r| r["status"] == "quarantined" && r["attempts"] == 3), "{records:?}");
    sb.assert_clean();
}
