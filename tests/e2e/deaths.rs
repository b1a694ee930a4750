//! Every way a worker can die, and a batch that survives them all.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::common::*;

/// Ordinary tasks and one task per death kind, each faulting on its first attempt only, and
/// one poison task that faults on every attempt.
#[test]
fn every_death_is_survived_with_its_true_cause() {
    let sb = Sandbox::new();
    let mut input = String::new();
    for i in 0..6 {
        input.push_str(&format!("{{\"id\":\"plain{i}\",\"kind\":\"sleep\",\"ms\":5}}\n"));
    }
    input.push_str("{\"id\":\"sum\",\"kind\":\"sum_squares\",\"n\":10000000}\n");
    for fault in ["panic", "abort", "segv", "kill", "exit", "stack_overflow"] {
        input.push_str(&format!(
            "{{\"id\":\"{fault}\",\"kind\":\"sleep\",\"ms\":10,\"fault\":\"{fault}\",\"fault_attempts\":1}}\n"
        ));
    }
    input.push_str("{\"id\":\"poison\",\"kind\":\"noop\",\"fault\":\"segv\"}\n");
    let tasks = sb.write("tasks.jsonl", &input);
    let events = sb.path("events.jsonl");
    let done = sb.run(&["run", tasks.to_str().unwrap(), "-j", "2", "--events", events.to_str().unwrap()], None);
    done.expect_code(1);
    let recs = by_id(&done.records());
    assert_eq!(recs.len(), 14);
    for i in 0..6 {
        assert_eq!(recs[&format!("plain{i}")]["status"], "ok");
    }
    assert_eq!(recs["sum"]["output"]["sum"], "333333283333335000000");
    let expect = [
        ("panic", "panic"),
        ("abort", "signal"),
        ("segv", "signal"),
        ("kill", "signal"),
        ("exit", "exit"),
        ("stack_overflow", "signal"),
    ];
    for (id, cause) in expect {
        let r = &recs[id];
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["attempts"], 2, "{r}");
        assert_eq!(causes(r), [cause], "{r}");
    }
    assert_eq!(recs["panic"]["crashes"][0]["message"], "injected fault: panic");
    assert_eq!(recs["abort"]["crashes"][0]["signal"], "SIGABRT");
    assert_eq!(recs["segv"]["crashes"][0]["signal"], "SIGSEGV");
    assert_eq!(recs["kill"]["crashes"][0]["signal"], "SIGKILL");
    assert_eq!(recs["exit"]["crashes"][0]["code"], 3);
    assert_eq!(recs["stack_overflow"]["crashes"][0]["signal"], "SIGABRT");
    assert!(recs["stack_overflow"]["crashes"][0]["detail"].as_str().unwrap().contains("overflowed its stack"));
    let poison = &recs["poison"];
    assert_eq!(poison["status"], "quarantined");
    assert_eq!(poison["attempts"], 3);
    assert_eq!(causes(poison), ["signal", "signal", "signal"]);
    // The events tell the same story.
    let evs = read_records(&events);
    let exits = evs.iter().filter(|e| e["event"] == "worker_exited" && e["clean"] == false).count();
    assert_eq!(exits, 9);
    assert!(evs.iter().any(|e| e["event"] == "task_quarantined" && e["id"] == "poison"));
    assert_eq!(evs.last().unwrap()["event"], "shutdown");
    assert!(done.stderr().contains("14 tasks: 13 ok, 0 failed, 1 quarantined"), "{}", done.stderr());
    sb.assert_clean();
}

/// Workers SIGKILLed from outside, again and again while a batch runs: nothing changes in
/// the results. Between kills the batch makes some progress, as it would with an operator or
/// an OOM killer picking workers off; killing each replacement the instant it appears would
/// kill the same task three times, and a task killed on every attempt is quarantined.
#[test]
fn workers_killed_from_outside_change_nothing() {
    let sb = Sandbox::new();
    let tasks = sb.write("tasks.jsonl", &tasks(400, |i| format!("{{\"id\":\"t{i}\",\"kind\":\"sleep\",\"ms\":3}}")));
    let results = sb.path("results.jsonl");
    let run = sb.spawn(&["run", tasks.to_str().unwrap(), "-j", "2", "--results", results.to_str().unwrap()], None);
    let mut kills = 0;
    let mut next_kill_at = 10;
    while kills < 12 {
        let mut target = None;
        wait_for("progress and a worker to kill", || {
            let written = std::fs::read_to_string(&results).map(|t| t.lines().count()).unwrap_or(0);
            if written >= 400 {
                return true;
            }
            target = sb.workers().first().copied();
            written >= next_kill_at && target.is_some()
        });
        let Some(pid) = target else { break };
        if kill(Pid::from_raw(pid as i32), Signal::SIGKILL).is_ok() {
            kills += 1;
        }
        next_kill_at = std::fs::read_to_string(&results).map(|t| t.lines().count()).unwrap_or(0) + 20;
    }
    assert!(kills >= 8, "only {kills} kills landed before the batch ended");
    let done = run.wait();
    done.expect_code(0);
    let recs = by_id(&read_records(&results));
    assert_eq!(recs.len(), 400);
    assert!(recs.values().all(|r| r["status"] == "ok"));
    let charged = recs.values().filter(|r| r["attempts"] == 2).count();
    assert!(charged >= 1, "a kill mid-task charges that task");
    sb.assert_clean();
}

/// A plain run leaves nothing behind: no worker, no zombie, no socket, no runtime directory.
#[test]
fn a_clean_run_leaves_nothing() {
    let sb = Sandbox::new();
    let done = sb.run(&["run", "-j", "3"], Some(&tasks(50, |i| format!("{{\"id\":\"n{i}\",\"kind\":\"noop\"}}"))));
    done.expect_code(0);
    assert_eq!(done.records().len(), 50);
    sb.assert_clean();
}

/// Batching must not cost exact blame: a worker with hundreds of tiny tasks queued dies
/// executing one of them; only that one is charged, the others it held are re-run free.
#[test]
fn in_a_batched_run_a_crash_charges_only_the_executing_task() {
    let sb = Sandbox::new();
    let mut input = tasks(3000, |i| format!("{{\"id\":\"n{i}\",\"kind\":\"noop\"}}"));
    input.push_str("{\"id\":\"crash\",\"kind\":\"noop\",\"fault\":\"segv\",\"fault_attempts\":1}\n");
    input.push_str(&tasks(3000, |i| format!("{{\"id\":\"m{i}\",\"kind\":\"noop\"}}")));
    let tasks = sb.write("tasks.jsonl", &input);
    let events = sb.path("events.jsonl");
    let done = sb.run(&["run", tasks.to_str().unwrap(), "-j", "1", "--events", events.to_str().unwrap()], None);
    done.expect_code(0);
    let recs = by_id(&done.records());
    assert_eq!(recs.len(), 6001);
    assert_eq!(recs["crash"]["attempts"], 2);
    assert_eq!(causes(&recs["crash"]), ["signal"]);
    let charged: Vec<_> = recs.values().filter(|r| r["attempts"] != 1).map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(charged, ["crash"], "only the executing task is charged");
    // The worker did hold other tasks when it died: they were requeued without charge.
    let evs = read_records(&events);
    let free = evs.iter().filter(|e| e["event"] == "task_requeued" && e["charged"] == false).count();
    let paid = evs.iter().filter(|e| e["event"] == "task_requeued" && e["charged"] == true).count();
    assert_eq!(paid, 1);
    assert!(free >= 10, "the run was batched: {free} prefetched tasks went back to the queue");
    sb.assert_clean();
}

/// `--inject` strikes real faults at random; the seed it prints makes a run repeatable, and
/// `--seed` chooses one.
#[test]
fn injected_faults_repeat_with_their_seed() {
    let sb = Sandbox::new();
    let tasks = sb.write("tasks.jsonl", &tasks(60, |i| format!("{{\"id\":\"t{i}\",\"kind\":\"noop\"}}")));
    let t = tasks.to_str().unwrap();
    // The ids that crashed, with their crash counts.
    let struck = |done: &Done| -> Vec<(String, usize)> {
        done.expect_code(0);
        let recs = by_id(&done.records());
        assert_eq!(recs.len(), 60);
        recs.iter().filter_map(|(id, r)| r["crashes"].as_array().map(|c| (id.clone(), c.len()))).collect()
    };
    let first = sb.run(&["run", t, "-j", "2", "--inject", "segv:0.2", "--attempts", "10"], None);
    let seed = first
        .stderr()
        .split("--seed ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next().map(str::to_string))
        .unwrap_or_else(|| panic!("no seed printed: {}", first.stderr()));
    let a = struck(&first);
    assert!(!a.is_empty(), "20% of 60 tasks and none crashed");
    let again = sb.run(&["run", t, "-j", "2", "--inject", "segv:0.2", "--attempts", "10", "--seed", &seed], None);
    assert_eq!(struck(&again), a, "the same seed strikes the same tasks");
    let other = sb.run(&["run", t, "-j", "2", "--inject", "segv:0.2", "--attempts", "10", "--seed", "1"], None);
    let b = struck(&other);
    assert!((!b.is_empty() && b != a) || seed == "1", "another seed, another pattern: {a:?} {b:?}");
    sb.assert_clean();
}
