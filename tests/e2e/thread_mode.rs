//! Thread mode against process mode: the same batches, where they must differ.

use std::os::unix::process::ExitStatusExt;

use crate::common::*;

fn panic_batch() -> String {
    let mut s = tasks(4, |i| format!("{{\"id\":\"a{i}\",\"kind\":\"sleep\",\"ms\":20}}"));
    s.push_str("{\"id\":\"boom\",\"kind\":\"sleep\",\"ms\":20,\"fault\":\"panic\"}\n");
    s.push_str(&tasks(6, |i| format!("{{\"id\":\"b{i}\",\"kind\":\"sleep\",\"ms\":20}}")));
    s
}

#[test]
fn a_panic_really_poisons_the_shared_state_on_threads() {
    let sb = Sandbox::new();
    let events = sb.path("events.jsonl");
    let done =
        sb.run(&["run", "--mode", "thread", "-j", "2", "--events", events.to_str().unwrap()], Some(&panic_batch()));
    assert_ne!(done.code(), Some(0), "{}", done.stderr());
    assert!(done.stderr().contains("shared state poisoned at "), "{}", done.stderr());
    assert!(done.stderr().contains("s: task 'boom' panicked"), "{}", done.stderr());
    assert!(done.stderr().contains("the shared tally is inconsistent"), "{}", done.stderr());
    let evs = read_records(&events);
    let poisoned: Vec<_> = evs.iter().filter(|e| e["event"] == "state_poisoned").collect();
    assert_eq!(poisoned.len(), 1);
    assert_eq!(poisoned[0]["id"], "boom");
    assert_eq!(evs.last().unwrap()["reason"], "poisoned");
    // The records written are honest: only tasks that really finished, none for 'boom'.
    let recs = by_id(&done.records());
    assert!(!recs.contains_key("boom"));
    assert!(recs.values().all(|r| r["status"] == "ok"));
    assert!(recs.len() < 10, "the run stopped after the poison: {}", recs.len());
    sb.assert_clean();
}

#[test]
fn the_same_panic_on_processes_is_quarantined_and_the_rest_is_ok() {
    let sb = Sandbox::new();
    let done = sb.run(&["run", "-j", "2"], Some(&panic_batch()));
    done.expect_code(1);
    let recs = by_id(&done.records());
    assert_eq!(recs.len(), 11);
    assert_eq!(recs["boom"]["status"], "quarantined");
    assert_eq!(causes(&recs["boom"]), ["panic", "panic", "panic"]);
    assert_eq!(recs.values().filter(|r| r["status"] == "ok").count(), 10);
    sb.assert_clean();
}

#[test]
fn a_segfault_ends_the_thread_mode_process_and_is_contained_on_processes() {
    let mut input = tasks(6, |i| format!("{{\"id\":\"a{i}\",\"kind\":\"sleep\",\"ms\":30}}"));
    input.push_str("{\"id\":\"crash\",\"kind\":\"sleep\",\"ms\":10,\"fault\":\"segv\",\"fault_attempts\":1}\n");
    input.push_str(&tasks(6, |i| format!("{{\"id\":\"b{i}\",\"kind\":\"sleep\",\"ms\":30}}")));
    let sb = Sandbox::new();
    let threads = sb.run(&["run", "--mode", "thread", "-j", "2"], Some(&input));
    assert_eq!(threads.status().signal(), Some(libc::SIGSEGV), "{:?}", threads.status());
    assert!(threads.records().len() < 13);
    let procs = sb.run(&["run", "-j", "2"], Some(&input));
    procs.expect_code(0);
    assert_eq!(procs.records().len(), 13);
    sb.assert_clean();
}

#[test]
fn a_hung_thread_is_abandoned_not_killed() {
    let sb = Sandbox::new();
    let mut input = tasks(3, |i| format!("{{\"id\":\"a{i}\",\"kind\":\"sleep\",\"ms\":10}}"));
    input.push_str("{\"id\":\"stuck\",\"kind\":\"sleep\",\"ms\":10,\"fault\":\"hang\",\"fault_attempts\":1}\n");
    let run = sb.spawn(&["run", "--mode", "thread", "-j", "2", "--timeout", "300ms"], Some(&input));
    let supervisor = run.pid();
    let done = run.wait();
    done.expect_code(0);
    assert!(done.stderr().contains("cannot be killed; abandoned"), "{}", done.stderr());
    let recs = by_id(&done.records());
    assert_eq!(recs["stuck"]["attempts"], 2);
    assert_eq!(causes(&recs["stuck"]), ["timeout"]);
    // The worker was a thread: its crash names the supervisor's own process.
    assert_eq!(recs["stuck"]["crashes"][0]["pid"], supervisor);
    sb.assert_clean();
}

/// Every other fatal fault ends the thread-mode process the way the kernel ends it, every
/// task in it with it; the same faults on processes cost one worker each. (`oom` allocates
/// under its own cap of 768 MiB above what the process holds: thread mode has no per-worker
/// limit to stop it earlier.)
#[test]
fn every_fatal_fault_ends_the_thread_mode_process_as_the_kernel_would() {
    let sb = Sandbox::new();
    let expect: [(&str, Option<i32>, Option<i32>, &str); 5] = [
        ("abort", None, Some(libc::SIGABRT), ""),
        ("kill", None, Some(libc::SIGKILL), ""),
        ("exit", Some(3), None, ""),
        ("stack_overflow", None, Some(libc::SIGABRT), "has overflowed its stack"),
        ("oom", None, Some(libc::SIGABRT), "memory allocation"),
    ];
    for (fault, code, signal, words) in expect {
        // The fault strikes first; the others would take long enough to still be running.
        let mut input = format!("{{\"id\":\"x\",\"kind\":\"noop\",\"fault\":\"{fault}\",\"fault_attempts\":1}}\n");
        // (60 s: on a loaded machine an oom fault took over 5 s to exhaust memory; the fault
        // ends the process, so the sleeps cost nothing.)
        input.push_str(&tasks(4, |i| format!("{{\"id\":\"a{i}\",\"kind\":\"sleep\",\"ms\":60000}}")));
        let threads = sb.run(&["run", "--mode", "thread", "-j", "2"], Some(&input));
        let st = threads.status();
        assert_eq!((st.code(), st.signal()), (code, signal), "{fault}: {st:?}\n{}", threads.stderr());
        assert!(threads.stderr().contains(words), "{fault}: {}", threads.stderr());
        assert!(threads.records().is_empty(), "{fault}: nothing finished before the process died");
        let procs = sb.run(&["run", "-j", "2", "--address-space-limit", "256M"], Some(&input.replace("60000", "10")));
        procs.expect_code(0);
        let recs = by_id(&procs.records());
        assert_eq!(recs.len(), 5, "{fault}");
        assert_eq!(recs["x"]["attempts"], 2, "{fault}: {}", recs["x"]);
    }
    sb.assert_clean();
}

/// Hybrid: one worker process runs its tasks at once on threads (four tasks that each wait
/// for all four to have started finish only if they really run together), and a crash costs
/// only that worker's tasks: the crashing one is charged, its neighbours are re-run free.
#[test]
fn hybrid_runs_tasks_together_and_a_crash_reruns_only_that_workers_tasks() {
    let sb = Sandbox::new();
    let barrier = sb.path("barrier");
    std::fs::create_dir(&barrier).unwrap();
    let b = barrier.to_str().unwrap();
    let input = tasks(4, |i| {
        format!(
            "{{\"id\":\"b{i}\",\"kind\":\"shell\",\"cmd\":\"touch {b}/{i}; until [ $(ls {b} | wc -l) -ge 4 ]; do sleep 0.01; done\"}}"
        )
    });
    // A timeout turns a worker that runs them one by one into a failure, not a hang.
    let done =
        sb.run(&["run", "-j", "1", "--threads-per-worker", "4", "--timeout", "20s", "--attempts", "1"], Some(&input));
    done.expect_code(0);
    assert_eq!(done.records().len(), 4);

    let mut input =
        String::from("{\"id\":\"crash\",\"kind\":\"sleep\",\"ms\":100,\"fault\":\"segv\",\"fault_attempts\":1}\n");
    input.push_str(&tasks(3, |i| format!("{{\"id\":\"n{i}\",\"kind\":\"sleep\",\"ms\":1000}}")));
    let events = sb.path("events.jsonl");
    let e = events.to_str().unwrap();
    let done = sb.run(&["run", "-j", "1", "--threads-per-worker", "4", "--events", e], Some(&input));
    done.expect_code(0);
    let recs = by_id(&done.records());
    assert_eq!(recs.len(), 4);
    assert_eq!(causes(&recs["crash"]), ["signal"]);
    assert_eq!(recs["crash"]["crashes"][0]["signal"], "SIGSEGV");
    assert_eq!(recs["crash"]["attempts"], 2);
    let requeued: Vec<_> = read_records(&events).into_iter().filter(|e| e["event"] == "task_requeued").collect();
    for r in &requeued {
        assert_eq!(r["charged"], r["id"] == "crash", "only the crashing task is charged: {r}");
    }
    let neighbours = requeued.iter().filter(|r| r["id"] != "crash").count();
    assert_eq!(neighbours, 3, "the neighbours running beside it go back to the queue: {requeued:?}");
    for i in 0..3 {
        assert_eq!(recs[&format!("n{i}")]["attempts"], 1, "re-run free");
    }
    sb.assert_clean();
}
