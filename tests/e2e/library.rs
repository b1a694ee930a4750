//! The library's examples: a user's own task type in process and thread mode, and a crashing
//! handler contained. `cargo test` builds examples, so they are run as built.

use std::path::PathBuf;

use crate::common::*;

/// Runs an example in the sandbox (with its tag, so leftovers are found) and returns stdout.
fn run_example(sb: &Sandbox, name: &str) -> String {
    let path = PathBuf::from(BIN).parent().unwrap().join("examples").join(name);
    assert!(
        path.exists(),
        "{} is not built: `cargo test --workspace` builds the examples; a filtered run needs `cargo build --examples` first",
        path.display()
    );
    // Started like bulkhead itself (tag, sandbox, bounded wait), only another program.
    let done = sb.spawn_exe(&path, &[], None).wait();
    let text = done.stdout();
    assert!(done.status().success(), "{text}\n{}", done.stderr());
    text
}

/// The pids an example's section printed: the program's own, and each result's worker.
fn section_pids(text: &str, heading: &str) -> (u32, Vec<u32>) {
    let section = text.split(heading).nth(1).unwrap_or_else(|| panic!("no '{heading}' in {text}"));
    let pid_after = |line: &str, key: &str| -> Option<u32> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    let me = pid_after(section.lines().next().unwrap(), "this program is pid ").expect("the program's pid");
    let workers = section
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| pid_after(l, "ran in pid "))
        .collect();
    (me, workers)
}

#[test]
fn the_custom_task_example_runs_both_modes() {
    let sb = Sandbox::new();
    let text = run_example(&sb, "custom_task");
    assert!(text.contains("Process mode") && text.contains("Thread mode"), "{text}");
    assert_eq!(text.matches("longest 'impediment'").count(), 2, "{text}");
    // The one line really changes where the code runs: other processes, then this one.
    let (me, workers) = section_pids(&text, "Process mode");
    assert_eq!(workers.len(), 3, "{text}");
    assert!(workers.iter().all(|w| *w != me), "process mode ran in the program itself: {text}");
    let (me, workers) = section_pids(&text, "Thread mode");
    assert_eq!(workers.len(), 3, "{text}");
    assert!(workers.iter().all(|w| *w == me), "thread mode ran elsewhere: {text}");
    sb.assert_clean();
}

#[test]
fn the_crash_example_contains_a_segfaulting_handler() {
    let sb = Sandbox::new();
    let text = run_example(&sb, "crash");
    assert!(text.contains("segfault  quarantined"), "{text}");
    assert_eq!(text.matches("killed by SIGSEGV").count(), 3, "{text}");
    assert!(text.contains("3 ok, 2 failed, 1 quarantined"), "{text}");
    sb.assert_clean();
}

fn worker_exes(sb: &Sandbox) -> Vec<String> {
    sb.workers()
        .into_iter()
        .filter_map(|p| std::fs::read_link(format!("/proc/{p}/exe")).ok())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// The built-in kinds run in the small `bulkhead-worker` beside `bulkhead` when it is of the
/// same build, and in `bulkhead` itself when it is not (a stale one is never started).
#[test]
fn the_small_worker_is_used_only_when_it_is_of_the_same_build() {
    let input = "{\"id\":\"s\",\"kind\":\"sleep\",\"ms\":60000}\n";
    let sb = Sandbox::new();
    let run = sb.spawn(&["run", "-j", "1"], Some(input));
    wait_for("a worker running bulkhead-worker", || worker_exes(&sb) == ["bulkhead-worker"]);
    sb.kill_hard(&run);
    let _ = run.wait();
    sb.assert_nothing_alive();

    // A copy of bulkhead beside a bulkhead-worker from "another build".
    let dir = sb.path("install");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(BIN, dir.join("bulkhead")).unwrap();
    let fake = dir.join("bulkhead-worker");
    std::fs::write(&fake, "#!/bin/sh\necho 0.0.0-stale\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let run = sb.spawn_exe(&dir.join("bulkhead"), &["run", "-j", "1"], Some(input));
    // The stale one answers --build-id (it runs, briefly, under its name); the worker that
    // serves is bulkhead itself.
    wait_for("a worker running bulkhead, not the stale bulkhead-worker", || worker_exes(&sb) == ["bulkhead"]);
    sb.kill_hard(&run);
    let _ = run.wait();
    sb.assert_nothing_alive();
}

/// Runs the scanner example's `scenario` and returns its stdout.
fn scanner(sb: &Sandbox, scenario: &str) -> String {
    let path = PathBuf::from(BIN).parent().unwrap().join("examples").join("scanner");
    assert!(path.exists(), "{} is not built: `cargo build --examples` first", path.display());
    let done = sb.spawn_exe(&path, &[scenario], None).wait();
    assert!(done.status().success(), "{}\n{}", done.stdout(), done.stderr());
    done.stdout()
}

/// A handler with fields (a pattern, a flag) is the handler the workers run: the same counts
/// in worker processes as on threads, and the counts of that configuration (case ignored:
/// "ERROR", "Error" and "error" all match), not of a default one.
#[test]
fn a_configured_handler_gives_the_same_answers_in_both_modes() {
    let sb = Sandbox::new();
    let text = scanner(&sb, "modes");
    let expected = "3 matching lines (app.log=2 net.log=1 ok.log=0)";
    assert!(text.contains(&format!("Process: {expected}")), "{text}");
    assert!(text.contains(&format!("Thread: {expected}")), "{text}");
    sb.assert_clean();
}

/// `run(vec![5, 6, 5])`: three tasks named by position, each with its own result.
#[test]
fn equal_task_values_run_as_separate_tasks() {
    let sb = Sandbox::new();
    let text = scanner(&sb, "duplicates");
    assert_eq!(text, "task 0 = Some(25)\ntask 1 = Some(36)\ntask 2 = Some(25)\n");
    sb.assert_clean();
}

/// A crash loop: the plain loop ends with the give-up as an error, and every task has its
/// outcome, the one that crashed the workers with its crashes.
#[test]
fn a_give_up_is_an_error_of_the_loop_with_every_task_not_run() {
    let sb = Sandbox::new();
    let text = scanner(&sb, "give-up");
    assert!(text.contains("error: gave up: workers died 4 times"), "{text}");
    assert!(text.contains("4 task(s) not run"), "{text}");
    assert!(text.contains("not run: 0 after 4 attempt(s), 4 crash(es)"), "{text}");
    for id in 1..=3 {
        assert!(text.contains(&format!("not run: {id} after 0 attempt(s)")), "{text}");
    }
    assert!(text.contains("records: 0"), "{text}");
    sb.assert_clean();
}

/// An interrupt after the first result: the running task ends, the rest are not run, and
/// records plus tasks not run are all six.
#[test]
fn an_interrupt_is_an_error_of_the_loop_with_every_task_accounted_for() {
    let sb = Sandbox::new();
    let text = scanner(&sb, "interrupt");
    assert!(text.contains("error: interrupted by SIGINT"), "{text}");
    let records = text.lines().filter(|l| l.starts_with("task ") && l.ends_with(" ok")).count();
    let not_run = text.lines().filter(|l| l.starts_with("not run: ")).count();
    assert!(records >= 1 && not_run >= 1, "{text}");
    assert_eq!(records + not_run, 6, "{text}");
    assert!(text.contains(&format!("records: {records}")), "{text}");
    sb.assert_clean();
}

/// A task over the input limit (a builder setting here, 1 MiB) fails alone, unrun, with its
/// size and the limit; the others run.
#[test]
fn an_oversized_input_fails_only_its_task() {
    let sb = Sandbox::new();
    let text = scanner(&sb, "oversized");
    assert!(text.contains("task 0 ok = 1"), "{text}");
    assert!(text.contains("task 2 ok = 1"), "{text}");
    assert!(
        text.contains("task 1 failed: task input of 2097156 bytes is over the limit of 1048576 bytes a task may have"),
        "{text}"
    );
    sb.assert_clean();
}

/// A program that builds a pool without `serve_if_worker` first: the run stops at its first
/// workers with the hint (the call to add, and where), not after a hundred restarts, and the
/// program's own code ran once per worker started at most (one file per start of `main`).
#[test]
fn forgetting_serve_if_worker_fails_at_the_first_worker_with_the_hint() {
    let sb = Sandbox::new();
    let path = PathBuf::from(BIN).parent().unwrap().join("examples").join("forgot_serve");
    assert!(path.exists(), "{} is not built: `cargo build --examples` first", path.display());
    let done = sb.spawn_exe(&path, &[], None).wait();
    let text = done.stdout();
    assert_eq!(done.code(), Some(1), "{text}\n{}", done.stderr());
    assert!(text.contains("did not serve handler 'forgot_serve::Count'"), "{text}");
    assert!(
        text.contains("call bulkhead::serve_if_worker::<forgot_serve::Count>() as the first line of main"),
        "{text}"
    );
    assert!(text.contains("10 task(s) not run"), "{text}");
    let starts = std::fs::read_dir(sb.dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("started-"))
        .count();
    // The program itself, and at most one worker per slot (2) before the stop.
    assert!((2..=3).contains(&starts), "{starts} starts of main: {text}");
    println!("forgot_serve: {}", text.trim());
    sb.assert_clean();
}

/// Runs an example's `section`; returns (stdout, stderr) of a successful run.
fn example_section(sb: &Sandbox, name: &str, section: &str) -> (String, String) {
    let path = PathBuf::from(BIN).parent().unwrap().join("examples").join(name);
    assert!(path.exists(), "{} is not built: `cargo build --examples` first", path.display());
    let done = sb.spawn_exe(&path, &[section], None).wait();
    assert!(done.status().success(), "{}\n{}", done.stdout(), done.stderr());
    (done.stdout(), done.stderr())
}

/// By default what a handler writes on stderr and logs in a worker process reaches the
/// program's stderr, each line named by its worker and task; debug records stay below the
/// default level.
#[test]
fn worker_stderr_and_log_lines_reach_the_parent_named_by_task() {
    let sb = Sandbox::new();
    let (out, err) = example_section(&sb, "worker_output", "forward");
    assert_eq!(out.lines().filter(|l| l.contains(" ok ")).count(), 3, "{out}");
    let line_of = |task: &str, text: &str| {
        err.lines().any(|l| l.starts_with("[worker ") && l.contains(&format!(" task {task}] ")) && l.ends_with(text))
    };
    for (task, reading) in [("0", 1), ("1", 2), ("2", 3)] {
        assert!(line_of(task, &format!("checking reading {reading}")), "no stderr line of task {task}:\n{err}");
    }
    assert!(line_of("0", "WARN worker_output: reading 1 is odd"), "no log record of task 0:\n{err}");
    assert!(line_of("2", "WARN worker_output: reading 3 is odd"), "no log record of task 2:\n{err}");
    assert!(!err.contains("reading 2 is odd") && !err.contains("not forwarded"), "{err}");
    // The worker's own marks are not shown.
    assert!(!err.contains('\u{1e}'), "{err:?}");
    sb.assert_clean();
}

/// Captured, a task's lines are in its result, not on stderr; a task whose worker crashed
/// on every attempt keeps each attempt's last words.
#[test]
fn captured_worker_output_is_kept_with_each_task_result() {
    let sb = Sandbox::new();
    let (out, err) = example_section(&sb, "worker_output", "capture");
    let section = |id: &str| -> Vec<String> {
        let start = format!("task {id} ");
        out.lines()
            .skip_while(|l| !l.starts_with(&start))
            .skip(1)
            .take_while(|l| l.starts_with("  | "))
            .map(|l| l[4..].to_string())
            .collect()
    };
    // A task sent to the worker that then crashed on 13 may have run twice (run again,
    // uncharged, when its result was not read before the death): its lines are each run's.
    let runs_of = |id: &str, run: &[&str]| {
        let lines = section(id);
        !lines.is_empty() && lines.len() % run.len() == 0 && lines.chunks(run.len()).all(|c| c == run)
    };
    assert!(runs_of("0", &["checking reading 1", "WARN worker_output: reading 1 is odd"]), "{out}");
    assert!(runs_of("1", &["checking reading 2"]), "{out}");
    assert!(out.contains("task 2 quarantined"), "{out}");
    let crashed = section("2");
    assert_eq!(crashed.iter().filter(|l| *l == "about to crash on 13").count(), 2, "both attempts' words: {out}");
    assert!(!err.contains("checking reading"), "captured lines were printed too: {err}");
    sb.assert_clean();
}

/// Tasks sent one at a time to one worker (the supervisor names each task's lines itself,
/// with no mark from the worker) each keep exactly their own lines.
#[test]
fn one_task_at_a_time_keeps_each_tasks_own_lines() {
    let sb = Sandbox::new();
    let (out, _) = example_section(&sb, "worker_output", "one-by-one");
    let expected = "task 0 ok\n  | checking reading 1\n  | WARN worker_output: reading 1 is odd\n\
                    task 1 ok\n  | checking reading 2\n\
                    task 2 ok\n  | checking reading 3\n  | WARN worker_output: reading 3 is odd\n\
                    task 3 ok\n  | checking reading 4\n";
    assert_eq!(out, expected);
    sb.assert_clean();
}

/// Submitted tasks are joined in any order, each with its own result.
#[test]
fn submitted_tasks_join_in_any_order() {
    let sb = Sandbox::new();
    let (out, _) = example_section(&sb, "submit", "join");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["task 4 ok 10", "task 3 ok 8", "task 2 ok 6", "task 1 ok 4", "task 0 ok 2"], "{out}");
    sb.assert_clean();
}

/// A hanging task times out of `join_timeout` and goes on; cancelled, its worker is killed
/// and replaced, and the task queued behind it runs in the new worker, uncharged.
#[test]
fn a_hanging_task_times_out_of_join_and_cancel_replaces_its_worker() {
    let sb = Sandbox::new();
    let (out, _) = example_section(&sb, "submit", "hang");
    assert!(out.contains("task 1 timed out, still running"), "{out}");
    assert!(out.contains("task 1 was cancelled"), "{out}");
    let pid_after = |key: &str| -> u32 {
        let rest = &out[out.find(key).unwrap_or_else(|| panic!("no '{key}' in {out}")) + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    assert!(out.contains("task 2 ok 42 attempts 1 "), "{out}");
    assert_ne!(pid_after("worker before: pid "), pid_after("worker after: pid "), "the hung worker was not replaced");
    sb.assert_clean();
}

/// A handle is a future: awaited, it is pending until the service thread wakes it.
#[test]
fn a_submitted_task_can_be_awaited() {
    let sb = Sandbox::new();
    let (out, _) = example_section(&sb, "submit", "async");
    assert!(out.contains("awaited task 0 ok 100"), "{out}");
    sb.assert_clean();
}
