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
    assert!(done.stderr().contains("shared state poisoned: task 'boom'"), "{}", done.stderr());
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
    let done = sb.run(&["run", "--mode", "thread", "-j", "2", "--timeout", "300ms"], Some(&input));
    done.expect_code(0);
    assert!(done.stderr().contains("cannot be killed; abandoned"), "{}", done.stderr());
    let recs = by_id(&done.records());
    assert_eq!(recs["stuck"]["attempts"], 2);
    assert_eq!(causes(&recs["stuck"]), ["timeout"]);
    sb.assert_clean();
}
