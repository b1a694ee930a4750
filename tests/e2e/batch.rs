//! The batch runner under fire: a supervisor killed and resumed, drained by signals, shell
//! commands from lines, the status socket, strangers on it.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use nix::sys::signal::Signal;

use crate::common::*;

fn count_lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}

/// The supervisor SIGKILLed at many moments of a batch, then resumed, as often as it takes:
/// every task ends ok with exactly one record, and no worker outlives a killed supervisor.
#[test]
fn a_killed_supervisor_resumes_to_exactly_once() {
    let sb = Sandbox::new();
    let n = 400;
    let tasks = sb.write("tasks.jsonl", &tasks(n, |i| format!("{{\"id\":\"t{i}\",\"kind\":\"sleep\",\"ms\":4}}")));
    let results = sb.path("results.jsonl");
    let (t, r) = (tasks.to_str().unwrap(), results.to_str().unwrap());
    let mut kills = 0;
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 60, "the batch never completed");
        let args: Vec<&str> = if rounds == 1 {
            vec!["run", t, "-j", "2", "--results", r]
        } else {
            vec!["run", t, "-j", "2", "--results", r, "--resume"]
        };
        let mut run = sb.spawn(&args, None);
        // Kill it at a different point each round: after a few more records than it started
        // with, a number that grows with the round.
        let before = count_lines(&results);
        let target = before + 7 * rounds;
        let mut finished = false;
        wait_for("progress or the end", || {
            finished = run.exited();
            finished || count_lines(&results) >= target
        });
        if finished || kills >= 8 {
            let done = run.wait();
            if done.code() == Some(0) {
                break;
            }
            panic!("a run ended with {:?}: {}", done.status(), done.stderr());
        }
        sb.kill_hard(&run);
        let done = run.wait();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&done.status()), Some(9));
        kills += 1;
        sb.assert_nothing_alive();
        if kills == 3 {
            // A crash in the middle of a write leaves a torn last line; resume repairs it.
            let mut f = std::fs::OpenOptions::new().append(true).open(&results).unwrap();
            f.write_all(b"{\"id\":\"t399\",\"status\":\"o").unwrap();
        }
    }
    assert!(kills >= 3, "only {kills} kills landed");
    let recs = by_id(&read_records(&results));
    assert_eq!(recs.len(), n, "every task has exactly one record");
    assert!(recs.values().all(|r| r["status"] == "ok"));
    sb.assert_clean();
}

/// SIGTERM mid-batch: running tasks finish, exit 143, nothing marked failed or charged;
/// --resume completes the batch.
#[test]
fn sigterm_drains_and_resume_completes() {
    let sb = Sandbox::new();
    let n = 60;
    let tasks = sb.write("tasks.jsonl", &tasks(n, |i| format!("{{\"id\":\"t{i}\",\"kind\":\"sleep\",\"ms\":100}}")));
    let results = sb.path("results.jsonl");
    let (t, r) = (tasks.to_str().unwrap(), results.to_str().unwrap());
    let events = sb.path("events.jsonl");
    let e = events.to_str().unwrap();
    let run = sb.spawn(&["run", t, "-j", "2", "--results", r, "--grace", "30s", "--events", e], None);
    wait_for("some results", || count_lines(&results) >= 4);
    run.signal(Signal::SIGTERM);
    let done = run.wait();
    done.expect_code(143);
    let first = read_records(&results);
    assert!(first.len() < n, "the batch was cut short");
    assert!(first.iter().all(|r| r["status"] == "ok" && r["attempts"] == 1), "{first:?}");
    // Every task that had started when the signal came ran to its end: started ones all
    // finished ok, none was taken back.
    let evs = read_records(&events);
    let ids = |kind: &str| -> std::collections::BTreeSet<String> {
        evs.iter().filter(|e| e["event"] == kind).map(|e| e["id"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(ids("task_started"), ids("task_finished"));
    assert_eq!(ids("task_finished").len(), first.len());
    assert!(ids("task_requeued").is_empty(), "{evs:?}");
    assert_eq!(evs.last().unwrap()["reason"], "terminated", "{evs:?}");
    assert!(done.stderr().contains("--resume"), "{}", done.stderr());
    let resumed = sb.run(&["run", t, "-j", "2", "--results", r, "--resume"], None);
    resumed.expect_code(0);
    let recs = by_id(&read_records(&results));
    assert_eq!(recs.len(), n);
    assert!(recs.values().all(|r| r["attempts"] == 1));
    sb.assert_clean();
}

/// One SIGINT drains; tasks still running when the grace runs out are killed, charged
/// nothing and left without a record for --resume; exit 130.
#[test]
fn a_drain_kills_what_outlives_the_grace_and_charges_nobody() {
    let sb = Sandbox::new();
    let events = sb.path("events.jsonl");
    let run = sb.spawn(
        &["run", "-j", "2", "--grace", "300ms", "--events", events.to_str().unwrap()],
        Some(&tasks(3, |i| format!("{{\"id\":\"t{i}\",\"kind\":\"sleep\",\"ms\":60000}}"))),
    );
    wait_for("two busy workers", || read_records(&events).iter().filter(|e| e["event"] == "task_started").count() == 2);
    run.signal(Signal::SIGINT);
    let done = run.wait();
    done.expect_code(130);
    assert!(done.records().is_empty());
    // The results went to stdout: there is no file for --resume to continue from, and the
    // run does not pretend there is.
    assert!(done.stderr().contains("unfinished tasks have no record"), "{}", done.stderr());
    assert!(!done.stderr().contains("--resume"), "{}", done.stderr());
    let evs = read_records(&events);
    let requeued: Vec<_> = evs.iter().filter(|e| e["event"] == "task_requeued").collect();
    assert_eq!(requeued.len(), 2, "{evs:?}");
    assert!(requeued.iter().all(|e| e["charged"] == false), "{evs:?}");
    assert_eq!(evs.last().unwrap()["reason"], "interrupted");
    sb.assert_clean();
}

/// Tasks without ids get content hashes: a resumed batch whose input was reordered and grew
/// runs only the new tasks, each once.
#[test]
fn content_hash_ids_survive_edits_to_the_input() {
    let sb = Sandbox::new();
    let line = |n: usize| format!("{{\"kind\":\"sum_squares\",\"n\":{n}}}\n");
    let first: String = (1..=10).map(line).collect();
    let results = sb.path("results.jsonl");
    let r = results.to_str().unwrap();
    sb.run(&["run", "-j", "2", "--results", r], Some(&first)).expect_code(0);
    let before = by_id(&read_records(&results));
    assert_eq!(before.len(), 10);
    // Reversed, with five new tasks in between.
    let edited: String = (1..=15).rev().map(line).collect();
    let again = sb.run(&["run", "-j", "2", "--results", r, "--resume"], Some(&edited));
    again.expect_code(0);
    assert_eq!(again.records().len(), 0, "results go to the file");
    let after = by_id(&read_records(&results));
    assert_eq!(after.len(), 15, "each task once");
    for (id, rec) in &before {
        assert_eq!(&after[id], rec, "a task of the first run was not run again");
    }
    sb.assert_clean();
}

/// A second SIGINT does not wait for the grace: the workers are killed at once.
#[test]
fn a_second_sigint_kills_at_once() {
    let sb = Sandbox::new();
    let run = sb.spawn(
        &["run", "-j", "2", "--grace", "1h"],
        Some(&tasks(4, |i| format!("{{\"id\":\"t{i}\",\"kind\":\"sleep\",\"ms\":60000}}"))),
    );
    wait_for("two workers", || sb.workers().len() == 2);
    // Two signals sent back to back may be merged into one delivery, and a loaded machine
    // may take any time to act on the first: send SIGINT until the run ends. The first that
    // arrives starts a drain with an hour of grace; only a second can end it within the wait.
    let mut run = run;
    wait_for("a second SIGINT to end the run", || {
        if run.exited() {
            return true;
        }
        run.signal(Signal::SIGINT);
        false
    });
    let done = run.wait();
    done.expect_code(130);
    assert!(done.records().is_empty());
    sb.assert_clean();
}

/// A SIGKILLed supervisor leaves no worker and no grandchild of a shell task alive.
#[test]
fn shell_grandchildren_die_with_a_killed_supervisor() {
    let sb = Sandbox::new();
    let run = sb.spawn(&["run", "-j", "2", "--cmd", "sleep {} & sleep {}"], Some("300\n301\n"));
    wait_for("the shells' children", || sb.tagged().iter().filter(|(_, c)| c == "sleep").count() >= 4);
    sb.kill_hard(&run);
    let _ = run.wait();
    sb.assert_nothing_alive();
}

#[test]
fn cmd_runs_a_shell_command_per_line_like_gnu_parallel() {
    let sb = Sandbox::new();
    let done = sb.run(
        &["run", "-j", "2", "--output", "records", "--cmd", "echo {#}:{}; test {} != fail || { echo no >&2; exit 4; }"],
        Some("alpha\nb c\nfail\n"),
    );
    done.expect_code(1);
    let recs = done.records();
    assert_eq!(recs.len(), 3);
    let out =
        |needle: &str| recs.iter().find(|r| r["stdout"]["head"].as_str().is_some_and(|s| s.contains(needle))).cloned();
    assert!(out("1:alpha").is_some(), "{recs:?}");
    assert!(out("2:b c").is_some(), "{recs:?}");
    let failed = recs.iter().find(|r| r["status"] == "failed").unwrap();
    assert_eq!(failed["error"], "exit status 4");
    // The streams are in the same fields whatever the status: the head, its size, the total.
    assert_eq!(failed["stderr"], serde_json::json!({"head": "no\n", "head_bytes": 3, "cut": false, "bytes": 3}));
    assert_eq!(failed["stdout"]["head"], "3:fail\n");
    assert_eq!(out("1:alpha").unwrap()["output"], serde_json::json!({"exit": 0}));
    // Ids are hashes of the commands: a rerun with --resume skips what was done.
    sb.assert_clean();
}

/// `bulkhead status` from another terminal shows a running batch; strangers on the control
/// socket change nothing.
#[test]
fn status_shows_a_running_batch_and_strangers_change_nothing() {
    let sb = Sandbox::new();
    let results = sb.path("results.jsonl");
    let run = sb.spawn(
        &["run", "-j", "2", "--results", results.to_str().unwrap()],
        Some(&tasks(40, |i| format!("{{\"id\":\"t{i}\",\"kind\":\"sleep\",\"ms\":50}}"))),
    );
    let mut socket = None;
    wait_for("the control socket", || {
        socket = std::fs::read_dir(sb.path("run"))
            .ok()
            .and_then(|d| d.flatten().map(|e| e.path().join("bulkhead-control.sock")).find(|p| p.exists()));
        socket.is_some() && count_lines(&results) >= 2
    });
    let socket = socket.unwrap();
    let dir_mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(socket.parent().unwrap()).unwrap().permissions());
    assert_eq!(dir_mode & 0o777, 0o700);
    let sock_mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(sock_mode & 0o777, 0o600);
    let status = sb.run(&["status"], None);
    status.expect_code(0);
    let text = status.stdout();
    assert!(text.contains("tasks:") && text.contains("serving"), "{text}");
    let json = sb.run(&["status", "--json", "--socket", socket.to_str().unwrap()], None);
    let snap: serde_json::Value = serde_json::from_str(&json.stdout()).unwrap();
    assert_eq!(snap["workers"].as_array().unwrap().len(), 2);
    // A stranger that sends garbage, and one that connects and never reads.
    let mut s1 = UnixStream::connect(&socket).unwrap();
    // Bounded: a server that kept the stranger's connection open fails the test, not hangs it.
    s1.set_read_timeout(Some(PATIENCE)).unwrap();
    let _ = s1.write_all(&[0xff; 4096]);
    let mut answer = String::new();
    let read = s1.read_to_string(&mut answer);
    assert!(
        !matches!(&read, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "the stranger was not dropped: {read:?}"
    );
    let _idle = UnixStream::connect(&socket).unwrap();
    let done = run.wait();
    done.expect_code(0);
    assert_eq!(by_id(&read_records(&results)).len(), 40);
    drop(_idle);
    sb.assert_clean();
}

/// Progress is shown only on a terminal unless asked for; off one it is a plain line.
#[test]
fn progress_is_off_unless_on_a_terminal_or_asked_for() {
    let sb = Sandbox::new();
    let input = tasks(20, |i| format!("{{\"id\":\"t{i}\",\"kind\":\"noop\"}}"));
    let quiet = sb.run(&["run", "-j", "1"], Some(&input));
    quiet.expect_code(0);
    assert!(!quiet.stderr().contains("progress"), "{}", quiet.stderr());
    let loud = sb.run(&["run", "-j", "1", "--progress", "always"], Some(&input));
    loud.expect_code(0);
    assert!(loud.stderr().contains("bulkhead: progress: "), "{}", loud.stderr());
    assert_eq!(loud.records().len(), 20, "stdout carries results only");
    sb.assert_clean();
}

/// Slurm's scancel, a Kubernetes pod's termination, systemd's stop: SIGTERM reaches every
/// process of the job at once, workers included. The workers ignore a SIGTERM that is not
/// their supervisor's; the supervisor drains; no task is charged; resume completes.
#[test]
fn a_sigterm_to_every_process_drains_without_charging_anyone() {
    let sb = Sandbox::new();
    let n = 40;
    let tasks = sb.write("tasks.jsonl", &tasks(n, |i| format!("{{\"id\":\"t{i}\",\"kind\":\"sleep\",\"ms\":150}}")));
    let results = sb.path("results.jsonl");
    let (t, r) = (tasks.to_str().unwrap(), results.to_str().unwrap());
    let events = sb.path("events.jsonl");
    let run =
        sb.spawn(&["run", t, "-j", "2", "--attempts", "1", "--results", r, "--events", events.to_str().unwrap()], None);
    wait_for("results and two busy workers", || count_lines(&results) >= 2 && sb.workers().len() == 2);
    sb.signal_all(Signal::SIGTERM);
    let done = run.wait();
    done.expect_code(143);
    let first = read_records(&results);
    assert!(first.iter().all(|r| r["status"] == "ok"), "nobody is charged: {first:?}");
    // The workers ignored the stranger's SIGTERM: each ended cleanly when the drain let it go.
    let exits: Vec<_> = read_records(&events).into_iter().filter(|e| e["event"] == "worker_exited").collect();
    assert_eq!(exits.len(), 2, "{exits:?}");
    assert!(exits.iter().all(|e| e["clean"] == true), "{exits:?}\n{}", done.stderr());
    let resumed = sb.run(&["run", t, "-j", "2", "--attempts", "1", "--results", r, "--resume"], None);
    resumed.expect_code(0);
    let recs = by_id(&read_records(&results));
    assert_eq!(recs.len(), n);
    assert!(recs.values().all(|r| r["status"] == "ok" && r["attempts"] == 1));
    sb.assert_clean();
}

/// A closed terminal (SIGHUP) drains like SIGTERM: running tasks finish, exit 129, the
/// socket is removed, --resume completes.
#[test]
fn a_hangup_drains_and_resume_completes() {
    let sb = Sandbox::new();
    let n = 30;
    let tasks = sb.write("tasks.jsonl", &tasks(n, |i| format!("{{\"id\":\"t{i}\",\"kind\":\"sleep\",\"ms\":100}}")));
    let results = sb.path("results.jsonl");
    let (t, r) = (tasks.to_str().unwrap(), results.to_str().unwrap());
    let run = sb.spawn(&["run", t, "-j", "2", "--results", r], None);
    wait_for("some results", || count_lines(&results) >= 2);
    run.signal(Signal::SIGHUP);
    let done = run.wait();
    done.expect_code(129);
    assert!(done.stderr().contains("SIGHUP: starting nothing new"), "{}", done.stderr());
    let first = read_records(&results);
    assert!(first.len() < n && first.iter().all(|r| r["status"] == "ok" && r["attempts"] == 1), "{first:?}");
    sb.assert_clean();
    sb.run(&["run", t, "-j", "2", "--results", r, "--resume"], None).expect_code(0);
    assert_eq!(by_id(&read_records(&results)).len(), n);
    sb.assert_clean();
}

/// Slurm's `--signal=USR1@N` warning before a time limit reaches every process of the step:
/// the supervisor drains (exit 138), the workers ignore a signal that is not their
/// supervisor's, and no task is charged.
#[test]
fn a_usr1_to_every_process_drains_without_charging_anyone() {
    let sb = Sandbox::new();
    let tasks = sb.write("tasks.jsonl", &tasks(40, |i| format!("{{\"id\":\"t{i}\",\"kind\":\"sleep\",\"ms\":100}}")));
    let results = sb.path("results.jsonl");
    let events = sb.path("events.jsonl");
    let (t, r, e) = (tasks.to_str().unwrap(), results.to_str().unwrap(), events.to_str().unwrap());
    let run = sb.spawn(&["run", t, "-j", "2", "--attempts", "1", "--results", r, "--events", e], None);
    wait_for("results and two busy workers", || count_lines(&results) >= 2 && sb.workers().len() == 2);
    sb.signal_all(Signal::SIGUSR1);
    let done = run.wait();
    done.expect_code(138);
    let evs = read_records(&events);
    assert_eq!(evs.last().unwrap()["reason"], "signalled", "{evs:?}");
    let exits: Vec<_> = evs.iter().filter(|e| e["event"] == "worker_exited").collect();
    assert!(exits.len() == 2 && exits.iter().all(|e| e["clean"] == true), "{exits:?}");
    assert!(read_records(&results).iter().all(|r| r["status"] == "ok" && r["attempts"] == 1));
    sb.assert_clean();
}

/// A signal to every process of the job (Slurm's `scancel --full`, systemd's default stop)
/// also kills a shell task's own processes. That is not the command failing: the task is held
/// until the drain's grace ends and left for --resume, not recorded failed.
#[test]
fn a_sigterm_to_every_process_leaves_shell_tasks_for_resume() {
    let sb = Sandbox::new();
    let quick = sb.path("quick");
    let q = quick.to_str().unwrap();
    let tasks = sb.write(
        "tasks.jsonl",
        &tasks(6, |i| {
            // Half of them catch the signal and exit 128 + 15, as shells and scripts do.
            let trap = if i % 2 == 1 { "trap 'exit 143' TERM; " } else { "" };
            format!("{{\"id\":\"c{i}\",\"kind\":\"shell\",\"cmd\":\"{trap}test -e {q} || sleep 30\"}}")
        }),
    );
    let results = sb.path("results.jsonl");
    let (t, r) = (tasks.to_str().unwrap(), results.to_str().unwrap());
    let run = sb.spawn(&["run", t, "-j", "2", "--grace", "500ms", "--results", r], None);
    wait_for("two commands running", || sb.tagged().iter().filter(|(_, c)| c == "sleep").count() == 2);
    sb.signal_all(Signal::SIGTERM);
    let done = run.wait();
    done.expect_code(143);
    assert!(read_records(&results).is_empty(), "a task killed by the job's signal was recorded");
    std::fs::write(&quick, "").unwrap();
    sb.run(&["run", t, "-j", "2", "--results", r, "--resume"], None).expect_code(0);
    let recs = by_id(&read_records(&results));
    assert_eq!(recs.len(), 6);
    assert!(recs.values().all(|r| r["status"] == "ok" && r["attempts"] == 1), "{recs:?}");
    sb.assert_clean();
}

/// `--control PATH` replaces only a stale socket: a file, or the socket of a running batch,
/// is refused with exit 2 and left as it was.
#[test]
fn a_control_path_in_use_is_refused_and_left_alone() {
    let sb = Sandbox::new();
    let precious = sb.write("precious.txt", "precious data\n");
    let input = "{\"id\":\"a\",\"kind\":\"noop\"}\n";
    let done = sb.run(&["run", "--control", precious.to_str().unwrap()], Some(input));
    done.expect_code(2);
    assert!(done.stderr().contains("is not a socket"), "{}", done.stderr());
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "precious data\n");

    // A killed run's leftover, where nobody listens, is taken over.
    let sock = sb.path("c.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    sb.run(&["run", "--control", sock.to_str().unwrap()], Some(input)).expect_code(0);
    assert!(!sock.exists(), "removed at the end");

    let s = sock.to_str().unwrap();
    let slow = sb.spawn(
        &["run", "-j", "1", "--grace", "100ms", "--control", s],
        Some("{\"id\":\"s\",\"kind\":\"sleep\",\"ms\":60000}\n"),
    );
    wait_for("the first run's socket", || sb.run(&["status", "--socket", s], None).code() == Some(0));
    let second = sb.run(&["run", "--control", s], Some(input));
    second.expect_code(2);
    assert!(second.stderr().contains("control socket of a running supervisor"), "{}", second.stderr());
    // The first run still answers on its socket.
    sb.run(&["status", "--socket", s], None).expect_code(0);
    slow.signal(Signal::SIGINT);
    slow.wait().expect_code(130);
    assert!(!sock.exists());
    sb.assert_clean();
}

/// Input is read as it comes: the first lines' results are in the results file while stdin
/// is still open, and the batch ends when it closes.
#[test]
fn results_stream_while_the_input_is_still_open() {
    let sb = Sandbox::new();
    let results = sb.path("results.jsonl");
    let (run, mut stdin) = sb.spawn_stdin(&["run", "-j", "2", "--results", results.to_str().unwrap()]);
    // A producer that writes in blocks ends a write mid-line: the whole lines before it must
    // not wait for the rest.
    let first = tasks(10, |i| format!("{{\"id\":\"a{i}\",\"kind\":\"noop\"}}")) + "{\"id\":\"b0\",";
    stdin.write_all(first.as_bytes()).unwrap();
    stdin.flush().unwrap();
    wait_for("the first results before the input ends", || count_lines(&results) == 10);
    stdin.write_all(b"\"kind\":\"noop\"}\n").unwrap();
    stdin.write_all(tasks(9, |i| format!("{{\"id\":\"b{}\",\"kind\":\"noop\"}}", i + 1)).as_bytes()).unwrap();
    drop(stdin);
    run.wait().expect_code(0);
    assert_eq!(by_id(&read_records(&results)).len(), 20);
    sb.assert_clean();
}

/// The parent-death signal, not the socket's EOF, ends the workers of a SIGKILLed
/// supervisor: a frozen (SIGSTOPped) worker reads nothing, and still dies.
#[test]
fn a_frozen_worker_dies_with_a_killed_supervisor() {
    let sb = Sandbox::new();
    let input =
        "{\"id\":\"f\",\"kind\":\"noop\",\"fault\":\"freeze\"}\n{\"id\":\"s\",\"kind\":\"sleep\",\"ms\":60000}\n";
    let run = sb.spawn(&["run", "-j", "2"], Some(input));
    let stopped = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('T')))
    };
    wait_for("a frozen worker", || sb.workers().iter().any(stopped));
    sb.kill_hard(&run);
    let _ = run.wait();
    sb.assert_nothing_alive();
}

/// A long task is sent alone: the short tasks around it finish on the other worker while it
/// runs, none stranded behind it.
#[test]
fn a_long_task_strands_no_short_ones_behind_it() {
    let sb = Sandbox::new();
    let mut input = tasks(100, |i| format!("{{\"id\":\"a{i}\",\"kind\":\"sleep\",\"ms\":5}}"));
    input.push_str("{\"id\":\"long\",\"kind\":\"sleep\",\"ms\":2500}\n");
    input.push_str(&tasks(100, |i| format!("{{\"id\":\"b{i}\",\"kind\":\"sleep\",\"ms\":5}}")));
    let events = sb.path("events.jsonl");
    let done = sb.run(&["run", "-j", "2", "--events", events.to_str().unwrap()], Some(&input));
    done.expect_code(0);
    let finished: std::collections::BTreeMap<String, f64> = read_records(&events)
        .iter()
        .filter(|e| e["event"] == "task_finished")
        .map(|e| (e["id"].as_str().unwrap().to_string(), e["t"].as_f64().unwrap()))
        .collect();
    assert_eq!(finished.len(), 201);
    let long = finished["long"];
    let stranded: Vec<_> = finished.iter().filter(|(id, t)| *id != "long" && **t > long).collect();
    assert!(stranded.is_empty(), "finished after the long task: {stranded:?}");
    sb.assert_clean();
}
