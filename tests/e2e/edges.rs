//! The edges of a run, tried as a hostile or careless user would: two runs on one results
//! file, outputs pointed at each other or at the input, planted symlinks, full disks, a
//! non-blocking stdout read slowly, a results file deleted mid-run, a stopped job.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::common::*;

fn sleeps(n: usize, ms: u64) -> String {
    tasks(n, |i| format!("{{\"id\":\"t{i}\",\"kind\":\"sleep\",\"ms\":{ms}}}"))
}

fn noops(n: usize) -> String {
    tasks(n, |i| format!("{{\"id\":\"n{i}\",\"kind\":\"noop\"}}"))
}

/// Every task has exactly one record.
fn assert_one_record_each(records: &[serde_json::Value], n: usize) {
    let ids = by_id(records);
    assert_eq!(records.len(), n, "{} records for {n} tasks", records.len());
    assert_eq!(ids.len(), n, "an id has two records");
}

#[test]
fn two_runs_started_together_on_one_results_file_one_is_refused() {
    let sb = Sandbox::new();
    let tasks = sb.write("tasks.jsonl", &sleeps(40, 20));
    let results = sb.path("results.jsonl");
    let args = ["run", tasks.to_str().unwrap(), "-j", "2", "--results", results.to_str().unwrap(), "--resume"];
    let a = sb.spawn(&args, None);
    let b = sb.spawn(&args, None);
    let (a, b) = (a.wait(), b.wait());
    let mut codes = [a.code(), b.code()];
    codes.sort();
    assert_eq!(codes, [Some(0), Some(2)], "a: {}\nb: {}", a.stderr(), b.stderr());
    let refused = if a.code() == Some(2) { &a } else { &b };
    assert!(refused.stderr().contains("is being written by another run (pid "), "{}", refused.stderr());
    assert_one_record_each(&read_records(&results), 40);
    sb.assert_clean();
}

#[test]
fn a_resume_while_a_run_appends_is_refused_because_of_the_lock() {
    use std::io::Write;
    let sb = Sandbox::new();
    let results = sb.path("results.jsonl");
    let r = results.to_str().unwrap();
    // The first run reads its tasks from a pipe the test holds open: it keeps the file (and
    // its lock) for as long as the test feeds it, appending as lines arrive.
    let (first, mut feed) = sb.spawn_stdin(&["run", "-j", "2", "--results", r]);
    let link = sb.path("same-file.jsonl");
    let mut all = String::new();
    for round in 0..6 {
        let lines = tasks(50, |i| format!("{{\"id\":\"r{round}-{i}\",\"kind\":\"noop\"}}"));
        feed.write_all(lines.as_bytes()).unwrap();
        feed.flush().unwrap();
        all.push_str(&lines);
        wait_for("the fed tasks' records", || count_lines(&results) >= 50 * (round + 1));
        if round == 0 {
            std::fs::hard_link(&results, &link).unwrap();
        }
        // Through the file's path and through a hard link: refused at once, before reading a
        // byte (a reader racing the writer once panicked or misjudged its newest record).
        let path = if round % 2 == 0 { r } else { link.to_str().unwrap() };
        let tasks = sb.write("tasks.jsonl", &all);
        let second = sb.run(&["run", tasks.to_str().unwrap(), "--results", path, "--resume"], None);
        second.expect_code(2);
        assert!(second.stderr().contains(&format!("pid {}", first.pid())), "{}", second.stderr());
        // Merge may read it, and says it is being written.
        let merged = sb.cmd(&["merge", r, "--tasks", tasks.to_str().unwrap()]).output().unwrap();
        let err = String::from_utf8_lossy(&merged.stderr);
        assert!(err.contains("is still being written by a running batch"), "{err}");
    }
    drop(feed);
    first.wait().expect_code(0);
    assert_one_record_each(&read_records(&results), 300);
    sb.assert_clean();
}

fn count_lines(p: &std::path::Path) -> usize {
    std::fs::read_to_string(p).map_or(0, |t| t.lines().count())
}

#[test]
fn outputs_pointed_at_the_results_or_the_input_are_refused_and_left_unchanged() {
    let sb = Sandbox::new();
    let tasks = sb.write("tasks.jsonl", &noops(3));
    let results = sb.path("results.jsonl");
    let r = results.to_str().unwrap();
    sb.run(&["run", tasks.to_str().unwrap(), "--results", r], None).expect_code(0);
    let link = sb.path("link.jsonl");
    std::fs::hard_link(&results, &link).unwrap();
    let before = (std::fs::read(&results).unwrap(), std::fs::read(&tasks).unwrap());
    let t = tasks.to_str().unwrap();
    let cases: [&[&str]; 6] = [
        &["--results", r, "--resume", "--events", r],
        &["--results", r, "--resume", "--report", r],
        &["--results", r, "--resume", "--events", link.to_str().unwrap()],
        &["--events", t],
        &["--report", t],
        &["--results", t],
    ];
    for extra in cases {
        let mut args = vec!["run", t];
        args.extend_from_slice(extra);
        let done = sb.run(&args, None);
        done.expect_code(2);
        assert!(done.stderr().contains("are the same file"), "{args:?}: {}", done.stderr());
        assert_eq!((std::fs::read(&results).unwrap(), std::fs::read(&tasks).unwrap()), before, "{args:?}");
    }
    // The input given on stdin is the same file too.
    let stdin = std::fs::File::open(&tasks).unwrap();
    let out = sb.cmd(&["run", "--events", t]).stdin(stdin).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&tasks).unwrap(), before.1);
    sb.assert_clean();
}

#[test]
fn an_events_file_is_appended_to_with_resume_and_never_overwritten() {
    let sb = Sandbox::new();
    let tasks = sb.write("tasks.jsonl", &noops(6));
    let half = sb.write("half.jsonl", &noops(3));
    let (results, events) = (sb.path("results.jsonl"), sb.path("events.jsonl"));
    let (r, e) = (results.to_str().unwrap(), events.to_str().unwrap());
    sb.run(&["run", half.to_str().unwrap(), "--results", r, "--events", e], None).expect_code(0);
    let first = std::fs::read(&events).unwrap();
    // Without --resume: refused, untouched (an events file typed for --results, say).
    let done = sb.run(
        &["run", tasks.to_str().unwrap(), "--results", sb.path("other.jsonl").to_str().unwrap(), "--events", e],
        None,
    );
    done.expect_code(2);
    assert!(done.stderr().contains("add --resume to append"), "{}", done.stderr());
    assert_eq!(std::fs::read(&events).unwrap(), first);
    // With it: this run's events follow the first run's.
    let report = sb.path("report.html");
    let done = sb.run(
        &[
            "run",
            tasks.to_str().unwrap(),
            "--results",
            r,
            "--resume",
            "--events",
            e,
            "--report",
            report.to_str().unwrap(),
        ],
        None,
    );
    done.expect_code(0);
    let text = std::fs::read_to_string(&events).unwrap();
    assert!(text.as_bytes().starts_with(&first));
    assert_eq!(text.matches("\"event\":\"shutdown\"").count(), 2, "{text}");
    let html = sb.path("replay.html");
    let out = sb.cmd(&["report", e, "-o", html.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("holds 2 runs"), "the page says which run it draws");
    sb.assert_clean();
}

#[test]
fn a_symlink_planted_in_a_sticky_world_writable_directory_is_not_followed() {
    let sb = Sandbox::new();
    let tasks = sb.write("tasks.jsonl", &noops(2));
    let shared = sb.path("shared-tmp");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let victim = sb.write("victim.txt", "precious\n");
    let link = shared.join("events.jsonl");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let me = nix::unistd::geteuid().as_raw();
    let other = if me == 65534 { 65533 } else { 65534 };
    if std::os::unix::fs::lchown(&link, Some(other), None).is_err() {
        eprintln!("SKIPPED: cannot give the symlink to another user (needs root)");
        return;
    }
    for flag in ["--events", "--report", "--results"] {
        let done = sb.run(&["run", tasks.to_str().unwrap(), flag, link.to_str().unwrap()], None);
        done.expect_code(2);
        assert!(done.stderr().contains("protected_symlinks"), "{flag}: {}", done.stderr());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n", "{flag}");
    }
    sb.assert_clean();
}

/// A tiny tmpfs mounted in the sandbox for one test, unmounted when dropped.
struct TinyFs {
    dir: PathBuf,
}

impl TinyFs {
    /// `None` (after printing SKIPPED) where it cannot be mounted (not root, no tmpfs).
    fn mount(sb: &Sandbox, kib: u32) -> Option<Self> {
        let dir = sb.path("full");
        std::fs::create_dir(&dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self { dir }),
            Ok(o) => {
                let why = String::from_utf8_lossy(&o.stderr).trim().to_string();
                eprintln!("SKIPPED: cannot mount a tmpfs for the full-disk test ({why}; needs root)");
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount for the full-disk test ({e})");
                None
            }
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Fills what is left with one file, so the next write fails with ENOSPC.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path("filler")).unwrap();
        let block = [0u8; 4096];
        while f.write_all(&block).is_ok() {}
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.dir).output();
    }
}

#[test]
fn events_and_report_on_a_full_disk_are_said_out_loud_with_exit_74() {
    let sb = Sandbox::new();
    let Some(fs) = TinyFs::mount(&sb, 64) else { return };
    let n = 3000;
    let tasks = sb.write("tasks.jsonl", &noops(n));
    let events = fs.path("events.jsonl");
    let done = sb.run(&["run", tasks.to_str().unwrap(), "-j", "2", "--events", events.to_str().unwrap()], None);
    done.expect_code(74);
    let err = done.stderr();
    assert!(err.contains(&format!("cannot write events to {}", events.display())), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(err.matches("cannot write events to").count(), 2, "said once when it happens, once at the end: {err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains("next: free the space or fix the path named above"), "the last line says what to do: {err}");
    // The run finished its tasks all the same.
    assert_one_record_each(&done.records(), n);
    std::fs::remove_file(&events).unwrap();

    // The report: the failed write leaves the old one as it was.
    let report = fs.path("report.html");
    std::fs::write(&report, "old report").unwrap();
    fs.fill();
    let done = sb.run(&["run", tasks.to_str().unwrap(), "-j", "2", "--report", report.to_str().unwrap()], None);
    done.expect_code(74);
    assert!(done.stderr().contains(&format!("cannot write the report {}", report.display())), "{}", done.stderr());
    assert_eq!(std::fs::read_to_string(&report).unwrap(), "old report");
    assert_one_record_each(&done.records(), n);

    // Results on a full disk: their own code, 74, not the restart limit's 3.
    let results = fs.path("results.jsonl");
    let done = sb.run(&["run", tasks.to_str().unwrap(), "-j", "2", "--results", results.to_str().unwrap()], None);
    done.expect_code(74);
    assert!(done.stderr().contains("cannot write results to"), "{}", done.stderr());
    drop(fs);
    sb.assert_clean();
}

#[test]
fn a_non_blocking_stdout_read_slowly_gets_every_record() {
    use std::io::Read;
    let sb = Sandbox::new();
    let n = 12_218;
    let tasks = sb.write("tasks.jsonl", &noops(n));
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    let flags = nix::fcntl::fcntl(&write_end, nix::fcntl::FcntlArg::F_GETFL).unwrap();
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&write_end, nix::fcntl::FcntlArg::F_SETFL(flags)).unwrap();
    let mut child = sb
        .cmd(&["run", tasks.to_str().unwrap(), "-j", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A slow reader: small reads with a pause between them, so the pipe is full most of the
    // time and the supervisor's writes meet EAGAIN.
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::from(read_end);
        let (mut all, mut buf) = (Vec::new(), [0u8; 2048]);
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => return all,
                Ok(k) => all.extend_from_slice(&buf[..k]),
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    });
    let mut status = None;
    wait_for("the run to end", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let out = String::from_utf8(reader.join().unwrap()).unwrap();
    assert_eq!(status.unwrap().code(), Some(0), "{err}");
    assert_one_record_each(&parse_records(&out), n);
    sb.assert_clean();
}

#[test]
fn a_results_file_deleted_mid_run_is_an_error_at_the_end() {
    let sb = Sandbox::new();
    let tasks = sb.write("tasks.jsonl", &sleeps(60, 20));
    let results = sb.path("results.jsonl");
    let run = sb.spawn(&["run", tasks.to_str().unwrap(), "-j", "2", "--results", results.to_str().unwrap()], None);
    wait_for("the first records", || std::fs::metadata(&results).is_ok_and(|m| m.len() > 0));
    std::fs::remove_file(&results).unwrap();
    let done = run.wait();
    done.expect_code(74);
    let err = done.stderr();
    assert!(err.contains("was deleted during the run"), "{err}");
    assert!(!err.contains("--resume continues"), "{err}");
    sb.assert_clean();
}

/// Waits until `pid` is stopped (state T).
fn wait_stopped(pid: u32) {
    wait_for("a process to stop", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('T')))
    });
}

/// How long the job stays stopped: past the 2 s heartbeat limit. This is the fault itself,
/// not a wait for something to happen.
const STOPPED_FOR: Duration = Duration::from_millis(3500);

#[test]
fn a_job_stopped_longer_than_the_heartbeat_limit_charges_no_task() {
    let sb = Sandbox::new();
    let tasks = sb.write("tasks.jsonl", &sleeps(6, 1500));
    let run = sb.spawn(&["run", tasks.to_str().unwrap(), "-j", "2", "--attempts", "1"], None);
    wait_for("two workers", || sb.workers().len() == 2);
    // The whole job at once, as `docker pause` or a cgroup freezer would.
    sb.signal_all(Signal::SIGSTOP);
    for (pid, _) in sb.tagged() {
        wait_stopped(pid);
    }
    std::thread::sleep(STOPPED_FOR);
    sb.signal_all(Signal::SIGCONT);
    let done = run.wait();
    done.expect_code(0);
    let recs = done.records();
    assert_one_record_each(&recs, 6);
    assert!(recs.iter().all(|r| r["status"] == "ok" && r.get("crashes").is_none()), "{recs:?}");
    sb.assert_clean();
}

#[test]
fn ctrl_z_stops_the_workers_and_the_timeouts_with_the_supervisor() {
    let sb = Sandbox::new();
    // Each task runs 2 s of its 3 s timeout; stopped 3.5 s in the middle, it must not time out.
    let tasks = sb.write("tasks.jsonl", &sleeps(2, 2000));
    let run = sb.spawn(&["run", tasks.to_str().unwrap(), "-j", "2", "--attempts", "1", "--timeout", "3s"], None);
    wait_for("two workers", || sb.workers().len() == 2);
    run.signal(Signal::SIGTSTP);
    wait_stopped(run.pid());
    // The workers are in process groups of their own: the supervisor stopped them itself.
    for pid in sb.workers() {
        wait_stopped(pid);
    }
    std::thread::sleep(STOPPED_FOR);
    run.signal(Signal::SIGCONT);
    let done = run.wait();
    done.expect_code(0);
    let recs = done.records();
    assert_one_record_each(&recs, 2);
    assert!(recs.iter().all(|r| r["status"] == "ok" && r.get("crashes").is_none()), "{recs:?}");
    sb.assert_clean();
}
