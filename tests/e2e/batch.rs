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
    let run = sb.spawn(&["run", t, "-j", "2", "--results", r, "--grace", "30s"], None);
    wait_for("some results", || count_lines(&results) >= 4);
    run.signal(Signal::SIGTERM);
    let done = run.wait();
    done.expect_code(143);
    let first = read_records(&results);
    assert!(first.len() < n, "the batch was cut short");
    assert!(first.iter().all(|r| r["status"] == "ok" && r["attempts"] == 1), "{first:?}");
    assert!(done.stderr().contains("--resume"), "{}", done.stderr());
    let resumed = sb.run(&["run", t, "-j", "2", "--results", r, "--resume"], None);
    resumed.expect_code(0);
    let recs = by_id(&read_records(&results));
    assert_eq!(recs.len(), n);
    assert!(recs.values().all(|r| r["attempts"] == 1));
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
    run.signal(Signal::SIGINT);
    // Two signals sent back to back may be merged into one: wait until the first is seen.
    wait_for("the drain to begin", || {
        let s = sb.run(&["status", "--json"], None);
        serde_json::from_str::<serde_json::Value>(&s.stdout()).is_ok_and(|v| v["stopping"] == "interrupted")
    });
    run.signal(Signal::SIGINT);
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
        &["run", "-j", "2", "--cmd", "echo {#}:{}; test {} != fail || { echo no >&2; exit 4; }"],
        Some("alpha\nb c\nfail\n"),
    );
    done.expect_code(1);
    let recs = done.records();
    assert_eq!(recs.len(), 3);
    let out = |needle: &str| {
        recs.iter().find(|r| r["output"]["stdout"].as_str().is_some_and(|s| s.contains(needle))).cloned()
    };
    assert!(out("1:alpha").is_some(), "{recs:?}");
    assert!(out("2:b c").is_some(), "{recs:?}");
    let failed = recs.iter().find(|r| r["status"] == "failed").unwrap();
    assert_eq!(failed["error"], "exit status 4");
    assert_eq!(failed["stderr"], "no\n");
    assert_eq!(failed["stdout"], "3:fail\n");
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
    let _ = s1.write_all(&[0xff; 4096]);
    let mut answer = String::new();
    let _ = s1.read_to_string(&mut answer);
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
    let run = sb.spawn(&["run", t, "-j", "2", "--attempts", "1", "--results", r], None);
    wait_for("results and two busy workers", || count_lines(&results) >= 2 && sb.workers().len() == 2);
    for (pid, _) in sb.tagged() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    let done = run.wait();
    done.expect_code(143);
    let first = read_records(&results);
    assert!(first.iter().all(|r| r["status"] == "ok"), "nobody is charged: {first:?}");
    assert!(!done.stderr().contains("SIGTERM:") || !done.stderr().contains("died"), "{}", done.stderr());
    let resumed = sb.run(&["run", t, "-j", "2", "--attempts", "1", "--results", r, "--resume"], None);
    resumed.expect_code(0);
    let recs = by_id(&read_records(&results));
    assert_eq!(recs.len(), n);
    assert!(recs.values().all(|r| r["status"] == "ok" && r["attempts"] == 1));
    sb.assert_clean();
}
