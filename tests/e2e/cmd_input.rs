//! `run --cmd` input as GNU parallel users write it: lines as bytes, every line run (repeats
//! included, each under its own stable id), replacement strings, `:::` sources, `--colsep`
//! columns, the job slot `{%}`, other braces left alone, `{= =}` refused. The commands
//! write what they got into files named by `{#}`, so the checks read what the commands saw,
//! whatever stdout carries.

use crate::common::*;

/// Bytes of the file `name` in the sandbox.
fn bytes(sb: &Sandbox, name: &str) -> Vec<u8> {
    std::fs::read(sb.path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn a_line_that_is_not_utf8_runs_with_its_exact_bytes() {
    let sb = Sandbox::new();
    let input = sb.path("names");
    std::fs::write(&input, b"caf\xe9.txt\nplain\n").unwrap();
    // From a checked file, and from a pipe.
    let (results, events) = (sb.path("r.jsonl"), sb.path("e.jsonl"));
    let done = sb.run(
        &[
            "run",
            "-j",
            "2",
            "--cmd",
            "printf %s {} > {#}.seen",
            input.to_str().unwrap(),
            "--results",
            results.to_str().unwrap(),
            "--events",
            events.to_str().unwrap(),
        ],
        None,
    );
    done.expect_code(0);
    assert_eq!(bytes(&sb, "1.seen"), b"caf\xe9.txt");
    assert_eq!(bytes(&sb, "2.seen"), b"plain");
    // Records and events say what each task was, the raw bytes in base64 where not UTF-8.
    let recs = by_id(&read_records(&results));
    let cafe = recs.values().find(|r| r["seq"] == 1).expect("a record with seq 1");
    assert_eq!(cafe["input"], "caf\u{FFFD}.txt");
    assert_eq!(cafe["input_b64"], "Y2Fm6S50eHQ=");
    assert_eq!(cafe["cmd"], "printf %s 'caf\u{FFFD}.txt' > 1.seen");
    let plain = recs.values().find(|r| r["seq"] == 2).expect("a record with seq 2");
    assert_eq!((plain["input"].as_str(), plain.get("input_b64")), (Some("plain"), None));
    let text = std::fs::read_to_string(&events).unwrap();
    let finished: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "task_finished" || e["event"] == "task_started")
        .collect();
    assert_eq!(finished.len(), 4);
    assert!(finished.iter().all(|e| e["seq"].is_u64() && e["input"].is_string() && e["cmd"].is_string()), "{text}");
    let (run, mut stdin) = sb.spawn_stdin(&["run", "--cmd", "printf %s {.} > piped.{#}"]);
    std::io::Write::write_all(&mut stdin, b"\xff\xfe.log\n").unwrap();
    drop(stdin);
    run.wait().expect_code(0);
    assert_eq!(bytes(&sb, "piped.1"), b"\xff\xfe");
    sb.assert_clean();
}

#[test]
fn repeated_lines_each_run_and_resume_after_the_input_is_reordered() {
    let sb = Sandbox::new();
    let results = sb.path("done.jsonl");
    let args = ["run", "-j", "2", "--cmd", "echo {} >> ran.log", "--results", results.to_str().unwrap()];
    sb.run(&args, Some("a\na\nb\n")).expect_code(0);
    let mut ran = String::from_utf8(bytes(&sb, "ran.log")).unwrap().lines().map(String::from).collect::<Vec<_>>();
    ran.sort();
    assert_eq!(ran, ["a", "a", "b"]);
    let recs = read_records(&results);
    let ids: std::collections::BTreeSet<_> = recs.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 3, "each occurrence is a task of its own: {recs:?}");
    // Reordered, with one line added and one more repeat: only the new ones run.
    let mut resume = args.to_vec();
    resume.push("--resume");
    sb.run(&resume, Some("b\na\nc\na\na\n")).expect_code(0);
    let ran = String::from_utf8(bytes(&sb, "ran.log")).unwrap();
    let mut new: Vec<&str> = ran.lines().skip(3).collect();
    new.sort();
    assert_eq!(new, ["a", "c"], "{ran}");
    assert_eq!(read_records(&results).len(), 5);
    sb.assert_clean();
}

#[test]
fn input_sources_columns_and_the_job_slot() {
    let sb = Sandbox::new();
    sb.run(&["run", "-j", "2", "--cmd", "echo {1}-{2} {%} > {#}.out", ":::", "a", "b", ":::", "1", "2"], None)
        .expect_code(0);
    let mut slots = std::collections::BTreeSet::new();
    for (n, want) in [(1, "a-1"), (2, "a-2"), (3, "b-1"), (4, "b-2")] {
        let text = String::from_utf8(bytes(&sb, &format!("{n}.out"))).unwrap();
        let (got, slot) = text.trim_end().split_once(' ').unwrap();
        assert_eq!(got, want);
        slots.insert(slot.to_string());
    }
    assert!(slots.iter().all(|s| s == "1" || s == "2"), "two workers are slots 1 and 2: {slots:?}");
    sb.run(&["run", "--link", "--cmd", "echo {2}{1} > link.{#}", ":::", "a", "b", "c", ":::", "1", "2"], None)
        .expect_code(0);
    assert_eq!(bytes(&sb, "link.3"), b"1c\n");
    // Every word after ::: is an argument, as in parallel, options included.
    sb.run(&["run", "--cmd", "printf %s {} > dash.{#}", ":::", "-n", "--jobs"], None).expect_code(0);
    assert_eq!((bytes(&sb, "dash.1"), bytes(&sb, "dash.2")), (b"-n".to_vec(), b"--jobs".to_vec()));
    sb.run(&["run", "--colsep", ",", "--cmd", "echo {2} {1} > col.{#}"], Some("a,b\nx y,z\n")).expect_code(0);
    assert_eq!(bytes(&sb, "col.1"), b"b a\n");
    assert_eq!(bytes(&sb, "col.2"), b"z x y\n");
    sb.assert_clean();
}

#[test]
fn an_awk_programs_braces_are_left_alone() {
    let sb = Sandbox::new();
    let awk = "awk 'BEGIN { n[\"k\"] = 2; for (k in n) print k, n[k], \"{}\" }' > {#}.awk";
    sb.run(&["run", "--cmd", awk, ":::", "line"], None).expect_code(0);
    assert_eq!(bytes(&sb, "1.awk"), b"k 2 line\n");
    sb.assert_clean();
}

#[test]
fn a_perl_expression_is_refused_before_anything_runs() {
    let sb = Sandbox::new();
    let done = sb.run(&["run", "--cmd", "touch ran; echo {= s/a/b/ =}", ":::", "a"], None);
    done.expect_code(2);
    assert!(done.stderr().contains("'{= s/a/b/ =}' at byte 16 is a GNU parallel Perl expression"), "{}", done.stderr());
    assert!(!sb.path("ran").exists());
    sb.assert_clean();
}

#[test]
fn jobs_take_a_share_of_the_cores_and_parallels_spellings() {
    let sb = Sandbox::new();
    for j in [["-j", "50%"], ["--jobs", "+1"], ["-P", "-1"]] {
        let done = sb.run(&["run", j[0], j[1], "--cmd", "true", ":::", "a"], None);
        done.expect_code(0);
    }
    let done = sb.run(&["run", "-j", "lots", "--cmd", "true", ":::", "a"], None);
    done.expect_code(2);
    assert!(done.stderr().contains("'lots' is not a number of jobs"), "{}", done.stderr());
    let done = sb.run(&["run", "--workerz", "2"], None);
    done.expect_code(2);
    assert!(done.stderr().contains("--workers"), "an unknown flag gets the nearest: {}", done.stderr());
    sb.assert_clean();
}

#[test]
fn status_names_the_running_command_by_input_seq_and_cmd() {
    let sb = Sandbox::new();
    let cmd = "touch started; while [ ! -e release ]; do sleep 0.01; done; echo {}";
    let run = sb.spawn(&["run", "-j", "1", "--cmd", cmd], Some("first line\n"));
    wait_for("the command to start", || sb.path("started").exists());
    let mut snap = serde_json::Value::Null;
    wait_for("a status snapshot with the running task", || {
        let json = sb.run(&["status", "--json"], None);
        snap = serde_json::from_str(&json.stdout()).unwrap_or_default();
        !snap["workers"][0]["current"].is_null()
    });
    let current = &snap["workers"][0]["current"];
    assert_eq!(current["input"], "first line");
    assert_eq!(current["seq"], 1);
    assert_eq!(current["cmd"], cmd.replace("{}", "'first line'"));
    let text = sb.run(&["status"], None).stdout();
    assert!(text.contains("#1 first line: touch started"), "{text}");
    std::fs::write(sb.path("release"), "").unwrap();
    run.wait().expect_code(0);
    sb.assert_clean();
}

#[test]
fn help_teaches_and_a_plain_file_without_cmd_gets_a_hint() {
    let sb = Sandbox::new();
    let help = sb.run(&["run", "--help"], None);
    help.expect_code(0);
    let text = help.stdout();
    for needle in ["\"kind\":\"sleep\"", "input_b64", "Exit codes", "Examples:", "--jobs", "-P", "--colsep", ":::"] {
        assert!(text.contains(needle), "--help lacks {needle}: {text}");
    }
    let names = sb.write("names.txt", "a.log\nb.log\n");
    let done = sb.run(&["run", names.to_str().unwrap()], None);
    done.expect_code(2);
    assert!(done.stderr().contains("runs with --cmd TEMPLATE"), "{}", done.stderr());
    // From a pipe, the same hint after the bad line.
    let done = sb.run(&["run"], Some("a.log\n"));
    done.expect_code(2);
    assert!(done.stderr().contains("runs with --cmd TEMPLATE"), "{}", done.stderr());
    sb.assert_clean();
}
