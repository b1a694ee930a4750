//! Bad input: every kind of bad line in `CASES` (not a JSON object, an unknown kind, a missing
//! field, a duplicate id, an unknown fault) is refused with its line and exit code 2, and
//! nothing is lost.

use crate::common::*;

const CASES: &[(&str, &str)] = &[
    ("{\"id\":\"a\",\"kind\":\"noop\"", "not a JSON task object"),
    ("{\"id\":\"a\",\"kind\":\"teleport\"}", "unknown kind 'teleport'"),
    ("{\"id\":\"a\",\"kind\":\"sleep\"}", "kind 'sleep' needs field 'ms'"),
    ("{\"id\":\"a\"}", "missing field 'kind'"),
    ("{\"id\":\"ok1\",\"kind\":\"noop\"}", "duplicate id 'ok1'"),
    ("{\"id\":\"a\",\"kind\":\"noop\",\"fault\":\"segfault\"}", "unknown fault 'segfault'"),
];

fn batch_with(bad: &str) -> String {
    format!(
        "{{\"id\":\"ok1\",\"kind\":\"noop\"}}\n{{\"id\":\"ok2\",\"kind\":\"noop\"}}\n{bad}\n{{\"id\":\"ok3\",\"kind\":\"noop\"}}\n"
    )
}

/// From a regular file the whole file is checked first: nothing runs.
#[test]
fn a_bad_line_in_a_file_is_named_and_nothing_runs() {
    for (bad, msg) in CASES {
        let sb = Sandbox::new();
        let tasks = sb.write("tasks.jsonl", &batch_with(bad));
        let results = sb.path("results.jsonl");
        let done = sb.run(&["run", tasks.to_str().unwrap(), "--results", results.to_str().unwrap()], None);
        done.expect_code(2);
        let err = done.stderr();
        assert!(err.contains("line 3") && err.contains(msg), "for {bad}: {err}");
        assert!(read_records(&results).is_empty(), "nothing may run before the file is checked");
        sb.assert_clean();
    }
}

/// From a pipe, lines are checked as they stream: what came before the bad line runs, then
/// the run stops with exit 2.
#[test]
fn a_bad_line_in_a_pipe_stops_dispatch() {
    for (bad, msg) in CASES {
        let sb = Sandbox::new();
        let done = sb.run(&["run", "-j", "1"], Some(&batch_with(bad)));
        done.expect_code(2);
        let err = done.stderr();
        assert!(err.contains("line 3") && err.contains(msg), "for {bad}: {err}");
        let ids: Vec<String> = done.records().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
        assert!(!ids.contains(&"ok3".to_string()), "ran past the bad line: {ids:?}");
        sb.assert_clean();
    }
}

#[test]
fn an_existing_results_file_is_never_truncated() {
    let sb = Sandbox::new();
    let results = sb.write("results.jsonl", "{\"id\":\"x\",\"status\":\"ok\",\"attempts\":1}\n");
    let done = sb.run(&["run", "--results", results.to_str().unwrap()], Some("{\"id\":\"a\",\"kind\":\"noop\"}\n"));
    done.expect_code(2);
    assert!(done.stderr().contains("--resume"), "{}", done.stderr());
    assert_eq!(std::fs::read_to_string(&results).unwrap(), "{\"id\":\"x\",\"status\":\"ok\",\"attempts\":1}\n");
    sb.assert_clean();
}

#[test]
fn bad_flags_are_usage_errors() {
    let sb = Sandbox::new();
    for args in [
        &["run", "--timeout", "2 fortnights"][..],
        &["run", "--address-space-limit", "lots"],
        &["run", "--max-restarts", "10"],
        &["run", "--mode", "fibers"],
        &["run", "--inject", "segv:2"],
        &["run", "--workers", "0"],
        &["run", "/nonexistent/tasks.jsonl"],
        // Paths and settings a run cannot start with: nothing runs, and exit 1 (tasks failed)
        // would be a lie.
        &["run", "--address-space-limit", "2M"],
        &["run", "--events", "/nonexistent/events.jsonl"],
        &["run", "--report", "/nonexistent/report.html"],
        &["run", "--control", "/nonexistent/control.sock"],
        // {shard} in a path of a run that is not a shard would name a file "{shard}".
        &["run", "--results", "results-{shard}.jsonl"],
    ] {
        let done = sb.run(args, Some("{\"id\":\"a\",\"kind\":\"noop\"}\n"));
        done.expect_code(2);
        assert!(!done.stderr().is_empty());
        assert!(done.records().is_empty(), "{args:?} ran a task");
    }
    sb.assert_clean();
}
