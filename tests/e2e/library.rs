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
    let cmd = sb.cmd(&[]);
    let out = std::process::Command::new(path)
        .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))))
        .current_dir(sb.dir.path())
        .output()
        .expect("run the example");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    text
}

#[test]
fn the_custom_task_example_runs_both_modes() {
    let sb = Sandbox::new();
    let text = run_example(&sb, "custom_task");
    assert!(text.contains("Process mode") && text.contains("Thread mode"), "{text}");
    assert_eq!(text.matches("longest 'impediment'").count(), 2, "{text}");
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
