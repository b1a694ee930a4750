//! What the supervisor says: summaries checked against the records, progress, hints on the
//! last line, refusals that name their reason, one warning per stranger on the control socket.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use crate::common::*;

fn summary_number(text: &str, before: &str) -> u64 {
    let at = text.find(before).unwrap_or_else(|| panic!("no '{before}' in:\n{text}"));
    let head = &text[..at];
    let digits: String = head.chars().rev().skip_while(|c| *c == ' ').take_while(char::is_ascii_digit).collect();
    digits.chars().rev().collect::<String>().parse().unwrap_or_else(|_| panic!("no number before '{before}':\n{text}"))
}

/// (1) A poisoned thread-mode run: the summary's trusted, untrusted and never-ran counts add
/// up to the records and the input, and match the tally.
#[test]
fn a_poisoned_thread_run_says_which_results_to_trust() {
    let sb = Sandbox::new();
    let n = 2000;
    let tasks = sb.write("tasks.jsonl", &tasks(n, |i| format!("{{\"id\":\"t{i}\",\"kind\":\"noop\"}}")));
    let done = sb.run(
        &["run", tasks.to_str().unwrap(), "--mode", "thread", "-j", "4", "--inject", "panic:0.01", "--seed", "3"],
        None,
    );
    done.expect_code(1);
    let err = done.stderr();
    let records = done.records();
    assert!(!err.contains(&format!("{n} tasks: {n} ok")), "{err}");
    let trusted = summary_number(&err, "ran before the poison");
    let untrusted = summary_number(&err, "ran after it");
    let never = summary_number(&err, "never ran");
    assert_eq!(trusted + untrusted, records.len() as u64, "{err}");
    assert_eq!(never, n as u64 - records.len() as u64, "{err}");
    let refused = summary_number(&err, "later updates refused");
    assert_eq!(untrusted, refused, "every refused update is one untrusted record: {err}");
    assert!(err.lines().last().unwrap().contains("--mode process"), "{err}");
    sb.assert_clean();
}

/// (2) The crash-loop demo calls its unfinished tasks what they are, not "lost".
#[test]
fn the_crash_loop_demo_says_never_finished_not_lost() {
    let sb = Sandbox::new();
    let done = sb.run(&["demo", "crash-loop"], None);
    done.expect_code(0);
    let out = done.stdout();
    assert!(!out.contains(" lost"), "{out}");
    let unfinished = summary_number(&out, "never finished: the run gave up");
    let quarantined = summary_number(&out, "quarantined,");
    assert_eq!(unfinished + quarantined + summary_number(&out, "ok,") + summary_number(&out, "failed,"), 40, "{out}");
    sb.assert_clean();
}

/// (3) The plain progress line says "read ahead" while input streams in, never "queued".
#[test]
fn progress_calls_the_read_ahead_what_it_is() {
    let sb = Sandbox::new();
    let (run, mut stdin) = sb.spawn_stdin(&["run", "-j", "1", "--progress", "always"]);
    std::io::Write::write_all(&mut stdin, tasks(100, |i| format!("{{\"id\":\"t{i}\",\"kind\":\"noop\"}}")).as_bytes())
        .unwrap();
    drop(stdin);
    let done = run.wait();
    done.expect_code(0);
    let err = done.stderr();
    let progress: Vec<&str> = err.lines().filter(|l| l.starts_with("bulkhead: progress: ")).collect();
    assert!(!progress.is_empty(), "{err}");
    assert!(progress.iter().all(|l| !l.contains("queued")), "{err}");
    assert!(progress[0].contains("read ahead"), "{err}");
    sb.assert_clean();
}

/// (4) Off a terminal no control-socket line (with -v there is one); a JSON array file is
/// named as such; `status` tells runs apart by command line, start time and directory.
#[test]
fn quiet_by_default_and_status_tells_runs_apart() {
    let sb = Sandbox::new();
    let input = tasks(3, |i| format!("{{\"id\":\"t{i}\",\"kind\":\"noop\"}}"));
    let quiet = sb.run(&["run", "-j", "1"], Some(&input));
    quiet.expect_code(0);
    assert!(!quiet.stderr().contains("control socket"), "{}", quiet.stderr());
    let verbose = sb.run(&["run", "-j", "1", "-v"], Some(&input));
    assert!(verbose.stderr().contains("control socket"), "{}", verbose.stderr());
    let array = sb.write("tasks.json", "[{\"id\":\"a\",\"kind\":\"noop\"},\n{\"id\":\"b\",\"kind\":\"noop\"}]\n");
    let refused = sb.run(&["run", array.to_str().unwrap()], None);
    refused.expect_code(2);
    assert!(refused.stderr().contains("one task per line"), "{}", refused.stderr());
    let run = sb.spawn(
        &["run", "-j", "1", "--results", "r.jsonl"],
        Some(&tasks(200, |i| format!("{{\"id\":\"s{i}\",\"kind\":\"sleep\",\"ms\":20}}"))),
    );
    let mut text = String::new();
    wait_for("status to answer", || {
        let s = sb.run(&["status"], None);
        text = s.stdout();
        s.code() == Some(0)
    });
    assert!(text.contains("command: ") && text.contains("run -j 1 --results r.jsonl"), "{text}");
    assert!(text.contains("started: ") && text.contains(&format!("in {}", sb.dir.path().display())), "{text}");
    run.signal(nix::sys::signal::Signal::SIGTERM);
    let done = run.wait();
    done.expect_code(143);
    assert!(done.stderr().lines().last().unwrap().contains("--resume"), "{}", done.stderr());
    sb.assert_clean();
}

/// (5a) Settings below their floor are refused with the reason; 0 and 1 get one message.
#[test]
fn too_small_settings_are_refused_with_one_reason() {
    let sb = Sandbox::new();
    for t in ["0", "0.5ms"] {
        let d = sb.run(&["run", "--timeout", t], Some("{\"kind\":\"noop\"}\n"));
        d.expect_code(2);
        assert!(d.stderr().contains("is below the 10ms"), "{}", d.stderr());
    }
    for m in ["0", "1"] {
        let d = sb.run(&["run", "--address-space-limit", m], Some("{\"kind\":\"noop\"}\n"));
        d.expect_code(2);
        assert!(d.stderr().contains("is below the 16 MiB a worker needs"), "{}", d.stderr());
        let d = sb.run(&["run", "--memory-limit", m], Some("{\"kind\":\"noop\"}\n"));
        d.expect_code(2);
        assert!(d.stderr().contains("is below the 8 MiB a worker needs resident by itself"), "{}", d.stderr());
    }
    // Thread stacks that cannot fit: refused with the numbers, not 100 workers dying at start.
    let d = sb
        .run(&["run", "--threads-per-worker", "1024", "--address-space-limit", "512M"], Some("{\"kind\":\"noop\"}\n"));
    d.expect_code(2);
    let want = "1024 task threads per worker reserve 2.0 GiB of stack (2 MiB each), and a worker needs 2.0 GiB in all, \
                over the address-space limit of 512 MiB";
    assert!(d.stderr().contains(want), "{}", d.stderr());
    assert!(d.records().is_empty());
    sb.assert_clean();
}

/// (5b) A FIFO for results: the run says it waits for a reader before it blocks.
#[test]
fn a_fifo_results_file_says_what_it_waits_for() {
    let sb = Sandbox::new();
    let fifo = sb.path("results.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let log = sb.path("stderr.log");
    let mut child = sb
        .cmd(&["run", "-j", "1", "--results", fifo.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    {
        let mut w = child.stdin.take().unwrap();
        std::io::Write::write_all(&mut w, b"{\"id\":\"a\",\"kind\":\"noop\"}\n").unwrap();
    }
    wait_for("the FIFO message", || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("is a FIFO: waiting for a reader")
    });
    let mut text = String::new();
    std::fs::File::open(&fifo).unwrap().read_to_string(&mut text).unwrap();
    let mut status = None;
    wait_for("bulkhead to exit", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(status.unwrap().code(), Some(0), "{}", std::fs::read_to_string(&log).unwrap());
    assert_eq!(parse_records(&text).len(), 1, "{text}");
    sb.assert_clean();
}

/// (5c) More workers than the process limit allows: the run goes on with those that started
/// and says so. RLIMIT_NPROC does not bind root, so the supervisor runs as `nobody`.
#[test]
fn more_workers_than_the_process_limit_run_with_those_allowed() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED: needs root to run the supervisor as another user under its own ulimit -u");
        return;
    }
    let sb = Sandbox::new();
    let nobody = 65534;
    for p in [sb.dir.path().to_path_buf(), sb.path("run"), sb.path("tmp")] {
        std::os::unix::fs::chown(&p, Some(nobody), Some(nobody)).unwrap();
    }
    // Other processes of `nobody` count against the limit too; leave room for 40 of ours.
    let others = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::metadata(e.path()).is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == nobody))
        .count() as u64;
    let limit = others + 40;
    let mut cmd = sb.cmd(&["run", "-j", "100"]);
    cmd.uid(nobody).gid(nobody);
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NPROC, limit, limit)
                .map_err(std::io::Error::from)
        });
    }
    let out = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            let mut w = c.stdin.take().unwrap();
            std::io::Write::write_all(
                &mut w,
                tasks(300, |i| format!("{{\"id\":\"t{i}\",\"kind\":\"noop\"}}")).as_bytes(),
            )?;
            drop(w);
            c.wait_with_output()
        })
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(parse_records(&String::from_utf8_lossy(&out.stdout)).len(), 300, "{err}");
    assert!(
        err.contains("the system allows no more processes") && err.contains(&format!("ulimit -u is {limit}")),
        "{err}"
    );
    let retired = summary_number(&err, "workers not started (the system's process limit)");
    assert!(retired > 0 && retired < 100, "{err}");
    assert_eq!(err.matches("allows no more processes").count(), 1, "said once: {err}");
    sb.assert_clean();
}

/// (6) A thousand refused connections from another uid: one warning and one count.
#[test]
fn a_stranger_is_warned_about_once_and_counted() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED: needs root to connect to the control socket as another user");
        return;
    }
    let sb = Sandbox::new();
    let nobody = 65534;
    let open = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
    std::fs::set_permissions(sb.dir.path(), open).unwrap();
    let socket = sb.path("control.sock");
    let (run, stdin) = sb.spawn_stdin(&["run", "-j", "1", "--control", socket.to_str().unwrap()]);
    wait_for("the control socket", || socket.exists());
    let mode = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o666);
    std::fs::set_permissions(&socket, mode).unwrap();
    let tries = 1000;
    let script = format!(
        "i=0; while [ $i -lt {tries} ]; do {BIN} status --socket {} >/dev/null 2>&1; i=$((i+1)); done",
        socket.display()
    );
    let status = std::process::Command::new("/bin/sh").args(["-c", &script]).uid(nobody).gid(nobody).status().unwrap();
    assert!(status.success());
    drop(stdin);
    let done = run.wait();
    done.expect_code(0);
    let err = done.stderr();
    let warns: Vec<&str> = err.lines().filter(|l| l.contains("refused a connection from uid 65534")).collect();
    assert_eq!(warns.len(), 1, "{err}");
    assert!(err.contains(&format!("refused {tries} connections from uid 65534 in all")), "{err}");
    sb.assert_clean();
}

/// (7) Each failing ending's last line says what to do next.
#[test]
fn a_failed_runs_last_line_says_what_to_do_next() {
    let sb = Sandbox::new();
    let last = |d: &Done| d.stderr().lines().last().unwrap_or_default().to_string();
    // Exit 1: which tasks, where their records are.
    let d = sb.run(
        &["run", "-j", "1", "--results", "r1.jsonl", "--attempts", "1"],
        Some("{\"id\":\"bad\",\"kind\":\"shell\",\"cmd\":\"exit 3\"}\n{\"id\":\"good\",\"kind\":\"noop\"}\n"),
    );
    d.expect_code(1);
    let l = last(&d);
    assert!(
        l.contains("next: 1 task(s) did not end ok (bad)") && l.contains("in r1.jsonl") && l.contains("--retries"),
        "{l}"
    );
    // Exit 2 from a stream: the line.
    let d = sb.run(
        &["run", "-j", "1", "--results", "r2.jsonl"],
        Some("{\"id\":\"a\",\"kind\":\"noop\"}\n{\"id\":\"b\",\"kind\":\"nope\"}\n"),
    );
    d.expect_code(2);
    assert!(last(&d).contains("next: fix line 2 of the input"), "{}", d.stderr());
    // Exit 3: the causes, --max-restarts.
    let doomed = tasks(20, |i| format!("{{\"id\":\"d{i}\",\"kind\":\"noop\",\"fault\":\"segv\"}}"));
    let d = sb.run(&["run", "-j", "1", "--max-restarts", "2/10s", "--results", "r3.jsonl"], Some(&doomed));
    d.expect_code(3);
    assert!(last(&d).contains("--max-restarts") && last(&d).contains("--resume"), "{}", d.stderr());
    sb.assert_clean();
}

/// Runs `bulkhead ARGS` on a terminal of its own (a pty from util-linux's `script`, whose own
/// standard input is /dev/null, so the run reads an end of input there): what the terminal
/// showed, escape codes and all. `None` where `script` cannot be run.
fn on_a_terminal(sb: &Sandbox, args: &str) -> Option<String> {
    let base = sb.cmd(&[]);
    let mut c = Command::new("script");
    c.args(["-qec", &format!("{BIN} {args}"), "/dev/null"]).current_dir(sb.dir.path());
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    if Command::new("script").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        return None;
    }
    let out = output_of(&mut c);
    assert!(out.status.success(), "script {args}: {out:?}");
    Some(String::from_utf8_lossy(&out.stdout).replace('\r', "\n"))
}

/// The words only a terminal gets: the notice that tasks are read from it, the control
/// socket's path, and a bar that counts the tasks once (its text does not say "N done" beside
/// the bar's own N/total, which once disagreed: 23/40 against "22 done").
#[test]
fn on_a_terminal_it_says_what_it_waits_for_and_the_bar_counts_once() {
    let sb = Sandbox::new();
    let Some(waiting) = on_a_terminal(&sb, "run -j 1") else {
        eprintln!("SKIPPED: no `script` (util-linux) here to give a run a terminal");
        return;
    };
    assert!(waiting.contains("reading tasks from standard input (a terminal)"), "{waiting}");
    assert!(waiting.contains("control socket"), "on a terminal the socket is named: {waiting}");
    sb.write("tasks.jsonl", &tasks(40, |i| format!("{{\"id\":\"t{i}\",\"kind\":\"sleep\",\"ms\":20}}")));
    let shown = on_a_terminal(&sb, "run tasks.jsonl -j 1 --results r.jsonl").unwrap();
    let bars: Vec<&str> = shown.lines().filter(|l| l.contains("/40")).collect();
    assert!(!bars.is_empty(), "a bar with the known total: {shown}");
    assert!(bars.iter().all(|l| !l.contains(" done")), "the bar's text repeats its count: {bars:?}");
    assert!(!shown.contains("reading tasks from standard input"), "a task file is no terminal: {shown}");
    assert_eq!(read_records(&sb.path("r.jsonl")).len(), 40);
    sb.assert_clean();
}
