//! A command run's own output: grouped per command, in completion or input order (`-k`),
//! byte for byte however large; the failure line; a killed command's partial output;
//! `--halt`; `--dry-run`.

use crate::common::*;

/// Nothing of the commands' output is left in the temp directory after a run.
fn assert_no_spool(sb: &Sandbox) {
    let left: Vec<_> = std::fs::read_dir(sb.path("tmp")).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "spool files left behind: {left:?}");
}

/// The first command waits for a file the test creates only once the others have their
/// records: with -k its output still comes first, each command's lines together; without,
/// it comes last.
#[test]
fn output_is_grouped_per_command_and_keep_order_waits_for_a_slow_first() {
    for keep in [true, false] {
        let sb = Sandbox::new();
        let results = sb.path("results.jsonl");
        let cmd = "if [ {} = 1 ]; then while [ ! -e go ]; do sleep 0.01; done; fi; \
                   echo {}-a; echo {}-e >&2; echo {}-b";
        let mut args = vec!["run", "-j", "3", "--results", results.to_str().unwrap(), "--cmd", cmd];
        if keep {
            args.push("-k");
        }
        let run = sb.spawn(&args, Some("1\n2\n3\n4\n"));
        wait_for("the three quick commands' records", || {
            std::fs::read_to_string(&results).is_ok_and(|t| t.lines().count() == 3)
        });
        std::fs::write(sb.path("go"), "").unwrap();
        let done = run.wait();
        done.expect_code(0);
        let out = done.stdout();
        let groups: Vec<&str> = out.split_inclusive("-b\n").collect();
        assert_eq!(groups.len(), 4, "{out}");
        for g in &groups {
            let n = &g[..1];
            assert_eq!(*g, format!("{n}-a\n{n}-b\n"), "a command's lines together: {out}");
        }
        if keep {
            assert_eq!(out, "1-a\n1-b\n2-a\n2-b\n3-a\n3-b\n4-a\n4-b\n");
            assert!(done.stderr().starts_with("1-e\n2-e\n3-e\n4-e\n"), "{}", done.stderr());
        } else {
            assert_eq!(groups[3], "1-a\n1-b\n", "the slow one finished last: {out}");
        }
        // Records went to --results only.
        assert_eq!(read_records(&results).len(), 4);
        sb.assert_clean();
        assert_no_spool(&sb);
    }
}

/// Output far larger than any buffer, not UTF-8, from two commands at once: each comes out
/// whole and byte for byte, one after the other; the record keeps a head and the sizes.
#[test]
fn large_binary_output_is_byte_exact_and_not_interleaved() {
    let sb = Sandbox::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut data = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    let (a, b) = (data(3 << 20), data(5 << 20));
    std::fs::write(sb.path("a.bin"), &a).unwrap();
    std::fs::write(sb.path("b.bin"), &b).unwrap();
    let results = sb.path("results.jsonl");
    let done =
        sb.run(&["run", "-j", "2", "--results", results.to_str().unwrap(), "--cmd", "cat {}"], Some("a.bin\nb.bin\n"));
    done.expect_code(0);
    let out = &done.output.stdout;
    let ab = [a.as_slice(), b.as_slice()].concat();
    let ba = [b.as_slice(), a.as_slice()].concat();
    assert!(*out == ab || *out == ba, "stdout of {} bytes is neither a+b nor b+a", out.len());
    let recs = read_records(&results);
    let big = recs.iter().find(|r| r["stdout"]["bytes"] == 5u64 << 20).expect("b's record");
    assert_eq!(big["stdout"]["cut"], true);
    assert_eq!(big["stdout"]["head_bytes"], 4096);
    sb.assert_clean();
    assert_no_spool(&sb);
}

/// `--output records` puts the records on stdout, as a JSONL run does by default; the
/// commands' own output is then only in the records' heads.
#[test]
fn output_records_prints_records_instead() {
    let sb = Sandbox::new();
    let done = sb.run(&["run", "--output", "records", "--cmd", "echo hi {}"], Some("x\n"));
    done.expect_code(0);
    let recs = done.records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["stdout"]["head"], "hi x\n");
    assert_eq!(recs[0]["output"], serde_json::json!({"exit": 0}));
    sb.assert_clean();
}

/// A failed command gets one line on stderr: its number, its id, its exit status and its
/// stderr's last line.
#[test]
fn a_failed_command_says_so_on_stderr() {
    let sb = Sandbox::new();
    let done = sb.run(&["run", "-j", "1", "--cmd", "echo first >&2; echo the last words >&2; exit {}"], Some("0\n3\n"));
    done.expect_code(1);
    let err = done.stderr();
    let line = err.lines().find(|l| l.starts_with("bulkhead: #2 failed (")).unwrap_or_else(|| panic!("{err}"));
    assert!(line.ends_with("): exit status 3: the last words"), "{line}");
    assert_eq!(err.lines().filter(|l| l.contains(" failed (")).count(), 1, "{err}");
    sb.assert_clean();
}

/// A command killed for its `--timeout`, and one whose worker died (quarantined), show what
/// they printed before, grouped, before their failure line; the spool keeps nothing.
#[test]
fn a_killed_commands_partial_output_is_shown() {
    let sb = Sandbox::new();
    let cmd = "echo {}-out; echo {}-err >&2; if [ {} = crash ]; then kill -9 $PPID; fi; sleep 60; echo {}-never";
    let done =
        sb.run(&["run", "-j", "2", "-k", "--timeout", "2", "--attempts", "1", "--cmd", cmd], Some("slow\ncrash\n"));
    done.expect_code(1);
    assert_eq!(done.stdout(), "slow-out\ncrash-out\n");
    let err = done.stderr();
    for (name, why) in [("slow", "timed out"), ("crash", "quarantined after 1 attempt(s)")] {
        let at = err.find(&format!("{name}-err\n")).unwrap_or_else(|| panic!("{name}'s stderr is missing:\n{err}"));
        let line = err.lines().find(|l| l.contains(&format!(" failed ({name}): "))).unwrap_or_else(|| panic!("{err}"));
        assert!(line.contains(why) && line.ends_with(&format!(": {name}-err")), "{line}");
        assert!(at < err.find(line).unwrap(), "{name}'s stderr comes before its failure line:\n{err}");
    }
    assert!(!err.contains("never"), "{err}");
    sb.assert_clean();
    assert_no_spool(&sb);
}

/// The bytes a command writes into its spool files count as its progress: with
/// `--stall-timeout`, one that prints every 200 ms runs on past the limit (3 s, 15 times
/// that interval, so that a loaded machine does not make it look stalled), one that goes
/// quiet is killed as stalled, having printed its first line.
#[test]
fn a_commands_spooled_output_counts_as_progress() {
    let sb = Sandbox::new();
    let results = sb.path("results.jsonl");
    let cmd = "if [ {} = chatty ]; then for i in $(seq 20); do echo tick $i; sleep 0.2; done; \
               else echo started; exec sleep 600; fi";
    let args = ["run", "-j", "2", "--stall-timeout", "3s", "--attempts", "1", "--results"];
    let done = sb.run(&[&args[..], &[results.to_str().unwrap(), "--cmd", cmd]].concat(), Some("chatty\nquiet\n"));
    done.expect_code(1);
    let recs: Vec<_> = read_records(&results);
    let by_input = |i: &str| recs.iter().find(|r| r["input"] == i).unwrap_or_else(|| panic!("{recs:?}")).clone();
    assert_eq!(by_input("chatty")["status"], "ok", "{recs:?}");
    let quiet = by_input("quiet");
    assert_eq!(causes(&quiet), ["stalled"], "{quiet}");
    assert_eq!(quiet["crashes"][0]["progress"], "started\n".len(), "{quiet}");
    assert!(done.stdout().contains("tick 20\n") && done.stdout().contains("started\n"), "{}", done.stdout());
    sb.assert_clean();
    assert_no_spool(&sb);
}

/// `--halt now,fail=1`: the failure stops the run at once; the command still running is
/// killed, charged nothing and left without a record, for --resume.
#[test]
fn halt_now_kills_what_runs_and_leaves_it_for_resume() {
    let sb = Sandbox::new();
    let results = sb.path("results.jsonl");
    let r = results.to_str().unwrap();
    let cmd = "if [ {} = 1 ]; then touch started; while [ ! -e never ]; do sleep 0.01; done; fi; exit {}";
    let (run, mut stdin) = sb.spawn_stdin(&["run", "-j", "2", "--results", r, "--halt", "now,fail=1", "--cmd", cmd]);
    use std::io::Write;
    stdin.write_all(b"1\n").unwrap();
    stdin.flush().unwrap();
    wait_for("the first command to start", || sb.path("started").exists());
    stdin.write_all(b"2\n3\n").unwrap();
    drop(stdin);
    let done = run.wait();
    done.expect_code(1);
    assert!(done.stderr().contains("halted by --halt now,fail=1"), "{}", done.stderr());
    let recs = read_records(&results);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["status"], "failed");
    sb.assert_clean();
    // The killed one runs again with --resume (it would wait forever: let it through).
    std::fs::write(sb.path("never"), "").unwrap();
    let again = sb.run(&["run", "--results", r, "--resume", "--cmd", cmd], Some("1\n2\n3\n"));
    again.expect_code(1);
    assert_eq!(read_records(&results).len(), 3);
    sb.assert_clean();
}

/// `--halt soon,fail=1`: nothing new starts after the failure, and the command still running
/// finishes (it waits for a file the test creates once the failure is recorded).
#[test]
fn halt_soon_lets_what_runs_finish_and_starts_nothing() {
    let sb = Sandbox::new();
    let results = sb.path("results.jsonl");
    let r = results.to_str().unwrap();
    let cmd = "if [ {} = 1 ]; then while [ ! -e go ]; do sleep 0.01; done; fi; echo ran {}; test {} != 2";
    let run =
        sb.spawn(&["run", "-j", "2", "--results", r, "--halt", "soon,fail=1", "--cmd", cmd], Some("1\n2\n3\n4\n"));
    wait_for("the failure's record", || std::fs::read_to_string(&results).is_ok_and(|t| t.contains("failed")));
    std::fs::write(sb.path("go"), "").unwrap();
    let done = run.wait();
    done.expect_code(1);
    let recs = read_records(&results);
    assert_eq!(recs.len(), 2, "{recs:?}");
    let mut out: Vec<&str> =
        done.output.stdout.split(|b| *b == b'\n').map(|l| std::str::from_utf8(l).unwrap()).collect();
    out.sort();
    assert_eq!(out, ["", "ran 1", "ran 2"]);
    sb.assert_clean();
}

/// `--dry-run` prints the commands that would run, after --resume's filtering, and runs none.
#[test]
fn dry_run_prints_the_commands_and_runs_none() {
    let sb = Sandbox::new();
    let results = sb.path("results.jsonl");
    let r = results.to_str().unwrap();
    sb.run(&["run", "--results", r, "--cmd", "touch {}.made"], Some("a\n")).expect_code(0);
    let done = sb.run(&["run", "--results", r, "--resume", "--dry-run", "--cmd", "touch {}.made"], Some("a\nb\nc\n"));
    done.expect_code(0);
    assert_eq!(done.stdout(), "touch b.made\ntouch c.made\n");
    assert!(sb.path("a.made").exists());
    assert!(!sb.path("b.made").exists() && !sb.path("c.made").exists(), "a dry run ran a command");
    assert_eq!(read_records(&results).len(), 1);
    sb.assert_clean();
}

/// `--tag`: each line of a command's stdout and stderr starts with its input line and a tab,
/// a last line without its newline too.
#[test]
fn tag_puts_the_input_line_before_each_output_line() {
    let sb = Sandbox::new();
    let done = sb.run(&["run", "-k", "--tag", "--cmd", "printf 'x\\ny'; echo {}-e >&2"], Some("a b\nc\n"));
    done.expect_code(0);
    assert_eq!(done.stdout(), "a b\tx\na b\tyc\tx\nc\ty");
    assert!(done.stderr().starts_with("a b\ta b-e\nc\tc-e\n"), "{}", done.stderr());
    sb.assert_clean();
    assert_no_spool(&sb);
}

/// A worker's next command takes over its last one's spool files only where nobody reads
/// them: with -k, output past its head held behind a slow first command comes out whole,
/// each command's own, however many commands its worker ran meanwhile; and a command killed
/// after its worker's earlier one shows only what it printed itself.
#[test]
fn spool_files_taken_over_never_mix_two_commands_output() {
    let sb = Sandbox::new();
    let results = sb.path("results.jsonl");
    let cmd = "if [ {} = 1 ]; then while [ ! -e go ]; do sleep 0.01; done; fi; \
               if [ $(( {} % 2 )) = 0 ]; then yes {} | head -c 6000; else echo {}; fi";
    let r = results.to_str().unwrap();
    let run = sb.spawn(&["run", "-j", "2", "-k", "--results", r, "--cmd", cmd], Some("1\n2\n3\n4\n5\n6\n7\n"));
    wait_for("the six quick commands' records", || {
        std::fs::read_to_string(&results).is_ok_and(|t| t.lines().count() == 6)
    });
    std::fs::write(sb.path("go"), "").unwrap();
    let done = run.wait();
    done.expect_code(0);
    let expected: String = (1..=7)
        .map(|n| match n % 2 {
            0 => format!("{n}\n").repeat(3000),
            _ => format!("{n}\n"),
        })
        .collect();
    assert!(
        done.stdout() == expected,
        "stdout of {} bytes is not each command's own output in order",
        done.stdout().len()
    );
    sb.assert_clean();
    assert_no_spool(&sb);

    // One worker: the second command runs in the files of the first, and is killed.
    let sb = Sandbox::new();
    let cmd = "echo {}-out; if [ {} = slow ]; then echo {}-err >&2; sleep 60; fi";
    let done = sb.run(&["run", "-j", "1", "--timeout", "2", "--attempts", "1", "--cmd", cmd], Some("first\nslow\n"));
    done.expect_code(1);
    assert_eq!(done.stdout(), "first-out\nslow-out\n");
    let err = done.stderr();
    let line = err.lines().find(|l| l.contains(" failed (slow): ")).unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("timed out") && line.ends_with(": slow-err"), "{line}");
    sb.assert_clean();
    assert_no_spool(&sb);
}
