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
