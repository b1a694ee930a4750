//! `bulkhead scan` against a plain count: exact totals over ranges whose boundaries all fall
//! inside lines, with and without crashing workers, after a SIGKILLed supervisor resumes;
//! and lines without end (a file without newlines, /dev/zero) in bounded memory. And
//! `run --pipepart`, which cuts files the same way for any command: its blocks, concatenated
//! as the commands saw them, are the file, also after a SIGKILLed supervisor resumes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::common::*;

const PATTERN: &str = r#"" (\d{3}) "#;

/// A few MiB of access log whose line ends never fall on a multiple of `chunk`, so every
/// range boundary is inside a line. Deterministic.
fn access_log(path: &Path, lines: usize, chunk: u64) -> Vec<u8> {
    let mut text = Vec::new();
    let mut x = 17u64;
    for i in 0..lines {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let status = [200, 200, 200, 200, 304, 404, 500, 301][(x >> 33) as usize % 8];
        let path_len = (x >> 40) as usize % 60;
        let mut line = format!(
            "10.0.{}.{} - - [01/Dec/2026:10:00:00 +0000] \"GET /{} HTTP/1.1\" {status} {} \"-\" \"curl/8\"",
            (x >> 8) % 256,
            (x >> 16) % 256,
            "p".repeat(path_len),
            i * 7
        );
        // Never end a line just before a boundary: lengthen it by a byte instead.
        if ((text.len() + line.len() + 1) as u64).is_multiple_of(chunk) {
            line.push('x');
        }
        text.extend_from_slice(line.as_bytes());
        text.push(b'\n');
    }
    for k in 1..=(text.len() as u64 / chunk) {
        assert_ne!(text[(k * chunk - 1) as usize], b'\n', "boundary {k} falls between lines");
    }
    std::fs::write(path, &text).unwrap();
    text
}

/// The straightforward count: one line at a time, one thread.
fn plain_count(text: &[u8], pattern: &str) -> (u64, BTreeMap<String, u64>, String) {
    let re = regex::bytes::Regex::new(pattern).unwrap();
    let (mut n, mut counts, mut lines) = (0, BTreeMap::new(), String::new());
    for line in text.strip_suffix(b"\n").unwrap_or(text).split(|&b| b == b'\n') {
        if let Some(c) = re.captures(line) {
            n += 1;
            if let Some(g) = c.get(1) {
                *counts.entry(String::from_utf8_lossy(g.as_bytes()).into_owned()).or_insert(0) += 1;
            }
            lines.push_str(std::str::from_utf8(line).unwrap());
            lines.push('\n');
        }
    }
    (n, counts, lines)
}

/// The totals of a `scan --json` answer.
fn totals(stdout: &str) -> (u64, BTreeMap<String, u64>, serde_json::Value) {
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let counts = v["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["value"].as_str().unwrap().to_string(), x["count"].as_u64().unwrap()))
        .collect();
    (v["matched_lines"].as_u64().unwrap(), counts, v)
}

#[test]
fn scan_totals_equal_a_plain_count_with_every_boundary_inside_a_line() {
    let sb = Sandbox::new();
    let chunk = 4099;
    let text = access_log(&sb.path("access.log"), 30_000, chunk);
    let want = plain_count(&text, PATTERN);
    assert!(want.1.len() == 5 && want.0 == 30_000);
    let c = chunk.to_string();
    let done = sb.run(&["scan", "access.log", "-e", PATTERN, "-j", "2", "--chunk", &c, "--json"], None);
    done.expect_code(0);
    let (n, counts, v) = totals(&done.stdout());
    assert_eq!((n, counts), (want.0, want.1.clone()));
    assert_eq!(v["ranges"]["total"].as_u64().unwrap(), text.len() as u64 / chunk + 1);
    assert_eq!(v["ranges"]["complete"], true);
    // The table: sorted by count, with shares, and the total.
    let table = sb.run(&["scan", "access.log", "-e", PATTERN, "-j", "2", "--chunk", &c, "--top", "2"], None);
    let stdout = table.stdout();
    let rows: Vec<&str> = stdout.lines().map(str::trim_end).collect();
    let (top, _) = want.1.iter().max_by_key(|(_, n)| **n).unwrap();
    assert!(rows[1].starts_with(top.as_str()), "{rows:?}");
    assert!(rows[3].starts_with("(3 other values)"), "{rows:?}");
    assert!(rows[4].starts_with("total") && rows[4].contains("30,000") && rows[4].ends_with("100.0%"), "{rows:?}");
    // --lines: the matching lines, in file order, across ranges finishing in any order.
    let only_404 = r#"" 404 "#;
    let lines = sb.run(&["scan", "access.log", "-e", only_404, "-j", "2", "--chunk", &c, "--lines"], None);
    lines.expect_code(0);
    assert_eq!(lines.stdout(), plain_count(&text, only_404).2);
    // -i and a count of lines without a group.
    let count = sb.run(&["scan", "access.log", "-e", "CURL/8", "-i", "--chunk", &c], None);
    assert_eq!(count.stdout().trim(), "30000");
    sb.assert_clean();
}

#[test]
fn scan_totals_stay_exact_when_workers_crash() {
    let sb = Sandbox::new();
    let chunk = 8191;
    let text = access_log(&sb.path("access.log"), 20_000, chunk);
    let want = plain_count(&text, PATTERN);
    let c = chunk.to_string();
    let done = sb.run(
        &[
            "scan",
            "access.log",
            "-e",
            PATTERN,
            "-j",
            "2",
            "--chunk",
            &c,
            "--json",
            "--inject",
            "segv:0.05,panic:0.05",
            "--seed",
            "11",
            "--attempts",
            "10",
            "--results",
            "r.jsonl",
        ],
        None,
    );
    done.expect_code(0);
    assert!(done.stderr().contains("worker crashes"), "no fault landed: {}", done.stderr());
    let (n, counts, _) = totals(&done.stdout());
    assert_eq!((n, counts), (want.0, want.1));
    // One final record per range: a crashed range was retried, and counted once.
    let recs = read_records(&sb.path("r.jsonl"));
    assert_eq!(recs.len() as u64, text.len() as u64 / chunk + 1);
    assert!(recs.iter().any(|r| r["attempts"].as_u64().unwrap() > 1));
    sb.assert_clean();
}

#[test]
fn a_scan_resumed_after_a_sigkill_gives_the_same_totals() {
    let sb = Sandbox::new();
    let chunk = 1031;
    let text = access_log(&sb.path("access.log"), 30_000, chunk);
    let want = plain_count(&text, PATTERN);
    let c = chunk.to_string();
    let results = sb.path("r.jsonl");
    let records = || std::fs::read_to_string(&results).map(|t| t.lines().count()).unwrap_or(0);
    let mut kills = 0;
    let answer = loop {
        assert!(kills < 20, "the scan never completed");
        let mut args =
            vec!["scan", "access.log", "-e", PATTERN, "-j", "2", "--chunk", &c, "--json", "--results", "r.jsonl"];
        if kills > 0 {
            args.push("--resume");
        }
        let mut run = sb.spawn(&args, None);
        let target = records() + 300;
        let mut finished = false;
        wait_for("progress or the end", || {
            finished = run.exited();
            finished || records() >= target
        });
        if finished {
            let done = run.wait();
            done.expect_code(0);
            break done.stdout();
        }
        sb.kill_hard(&run);
        run.wait();
        kills += 1;
        sb.assert_nothing_alive();
    };
    assert!(kills >= 1, "the supervisor was never killed mid-scan");
    let (n, counts, v) = totals(&answer);
    assert_eq!((n, counts), (want.0, want.1));
    assert!(v["ranges"]["resumed"].as_u64().unwrap() > 0);
    sb.assert_clean();
}

#[test]
fn lines_without_end_are_cut_in_bounded_memory() {
    let sb = Sandbox::new();
    // 8 MiB without a newline, then two short lines; the workers may hold 64 MiB of address
    // space, so nothing reads the long line whole at --max-line 64K; nor at the default 1M.
    let mut f = std::fs::File::create(sb.path("one.line")).unwrap();
    f.write_all(&vec![b'a'; 8 << 20]).unwrap();
    f.write_all(b"\nb a\nnothing").unwrap();
    drop(f);
    for max_line in ["64K", "1M"] {
        let done = sb.run(
            &[
                "scan",
                "one.line",
                "-e",
                "a",
                "--max-line",
                max_line,
                "--chunk",
                "1M",
                "--address-space-limit",
                "64M",
                "--json",
            ],
            None,
        );
        done.expect_code(0);
        let v: serde_json::Value = serde_json::from_str(done.stdout().trim()).unwrap();
        assert_eq!((v["matched_lines"].as_u64(), v["long_lines"].as_u64()), (Some(2), Some(1)), "{v}");
        assert!(done.stderr().contains("longer than --max-line"), "{}", done.stderr());
    }
    // /dev/zero has no size to plan by: a clear refusal...
    let dev = sb.run(&["scan", "/dev/zero", "-e", "x"], None);
    dev.expect_code(2);
    assert!(dev.stderr().contains("/dev/zero is not a regular file"), "{}", dev.stderr());
    // ...and a scan task over 256 MiB of it is one cut line, under the same limit.
    let task = r#"{"id":"z","kind":"scan","path":"/dev/zero","offset":0,"len":268435456,"pattern":"x"}"#;
    let done = sb.run(&["run", "-", "--address-space-limit", "64M"], Some(task));
    done.expect_code(0);
    let out = &done.records()[0]["output"];
    assert_eq!((out["matched_lines"].as_u64(), out["long_lines"].as_u64()), (Some(0), Some(1)), "{out}");
    sb.assert_clean();
}

#[test]
fn shards_add_up_to_the_whole_through_their_results() {
    let sb = Sandbox::new();
    let chunk = 2053;
    let text = access_log(&sb.path("access.log"), 10_000, chunk);
    let want = plain_count(&text, PATTERN);
    let c = chunk.to_string();
    let mut all = String::new();
    let mut shares = 0;
    for k in 0..3 {
        let shard = format!("{k}/3");
        let out = format!("r-{k}.jsonl");
        let done = sb.run(
            &["scan", "access.log", "-e", PATTERN, "--chunk", &c, "--shard", &shard, "--results", &out, "--json"],
            None,
        );
        done.expect_code(0);
        shares += totals(&done.stdout()).0;
        all.push_str(&std::fs::read_to_string(sb.path(&out)).unwrap());
    }
    assert_eq!(shares, want.0);
    sb.write("all.jsonl", &all);
    let whole = sb.run(
        &["scan", "access.log", "-e", PATTERN, "--chunk", &c, "--results", "all.jsonl", "--resume", "--json"],
        None,
    );
    whole.expect_code(0);
    let (n, counts, v) = totals(&whole.stdout());
    assert_eq!((n, counts), (want.0, want.1));
    assert_eq!(v["ranges"]["ran"], 0, "every range was done: {v}");
    sb.assert_clean();
}

/// What the commands of `run --cmd 'cat > seen.{#}' --pipepart` saw, in block order: block
/// `k` wrote `seen.k`. A missing block is a failure.
fn seen_blocks(sb: &Sandbox, blocks: u64) -> Vec<u8> {
    let mut all = Vec::new();
    for k in 1..=blocks {
        let block = std::fs::read(sb.path(&format!("seen.{k}"))).unwrap_or_else(|e| panic!("block {k}: {e}"));
        // Each block is whole lines: the next one starts where a line does.
        assert!(block.is_empty() || block.ends_with(b"\n"), "block {k} ends inside a line");
        all.extend_from_slice(&block);
    }
    all
}

#[test]
fn pipepart_blocks_cover_the_file_exactly_once() {
    let sb = Sandbox::new();
    let block = 4099;
    let text = access_log(&sb.path("access.log"), 6_000, block);
    let blocks = (text.len() as u64).div_ceil(block);
    let b = block.to_string();
    let args = ["run", "--cmd", "cat > seen.{#}", "--pipepart", "access.log", "--block", &b, "-j", "2"];
    let done = sb.run(&[&args[..], &["--results", "r.jsonl"]].concat(), None);
    done.expect_code(0);
    assert_eq!(seen_blocks(&sb, blocks), text, "the blocks, concatenated, are not the file");
    assert!(!sb.path(&format!("seen.{}", blocks + 1)).exists());
    let recs = read_records(&sb.path("r.jsonl"));
    assert_eq!(recs.len() as u64, blocks);
    assert!(recs.iter().all(|r| r["status"] == "ok"), "{recs:?}");
    // With --output records, the command's output is in its record, as for any --cmd: here,
    // a count of its lines.
    let counted =
        sb.run(&["run", "--cmd", "wc -l", "--pipepart", "access.log", "--block", &b, "--output", "records"], None);
    counted.expect_code(0);
    let lines: u64 =
        counted.records().iter().map(|r| r["stdout"]["head"].as_str().unwrap().trim().parse::<u64>().unwrap()).sum();
    assert_eq!(lines, 6_000);
    // A replacement string for an input line has nothing to stand for: refused, nothing runs.
    let bad = sb.run(&["run", "--cmd", "cat {}", "--pipepart", "access.log"], None);
    bad.expect_code(2);
    assert!(bad.stderr().contains("--cmd has {}"), "{}", bad.stderr());
    sb.assert_clean();
}

/// The blocks' commands print as a `--cmd` run's: `cat` of every block with `-k` is the file
/// itself on stdout, byte for byte; each block's stderr goes to stderr, grouped; `--tag`
/// puts an empty tag (a block has no input line, as in GNU parallel) and a tab before each
/// line; the records go only to `--results`.
#[test]
fn pipepart_prints_the_blocks_output() {
    let sb = Sandbox::new();
    let block = 4099;
    let text = access_log(&sb.path("access.log"), 6_000, block);
    let blocks = (text.len() as u64).div_ceil(block);
    let b = block.to_string();
    let cmd = "cat; echo block {#} >&2";
    let args = ["run", "--cmd", cmd, "--pipepart", "access.log", "--block", &b, "-j", "2", "-k"];
    let done = sb.run(&[&args[..], &["--results", "r.jsonl"]].concat(), None);
    done.expect_code(0);
    assert!(done.output.stdout == text, "stdout is not the file, block by block");
    let want: String = (1..=blocks).map(|k| format!("block {k}\n")).collect();
    assert!(done.stderr().starts_with(&want), "{}", done.stderr());
    assert_eq!(read_records(&sb.path("r.jsonl")).len() as u64, blocks);
    let tagged = sb.run(&["run", "--cmd", "wc -l", "--pipepart", "access.log", "--block", &b, "-k", "--tag"], None);
    tagged.expect_code(0);
    let out = tagged.stdout();
    assert_eq!(out.lines().count() as u64, blocks, "{out}");
    let lines: u64 =
        out.lines().map(|l| l.strip_prefix('\t').unwrap_or_else(|| panic!("{l:?}")).parse::<u64>().unwrap()).sum();
    assert_eq!(lines, 6_000);
    sb.assert_clean();
}

#[test]
fn pipepart_resumed_after_a_sigkill_covers_each_block_once() {
    let sb = Sandbox::new();
    let block = 2053;
    let text = access_log(&sb.path("access.log"), 15_000, block);
    let blocks = (text.len() as u64).div_ceil(block);
    let b = block.to_string();
    let results = sb.path("r.jsonl");
    let records = || std::fs::read_to_string(&results).map(|t| t.lines().count()).unwrap_or(0);
    let mut kills = 0;
    loop {
        assert!(kills < 20, "the run never completed");
        let mut args = vec![
            "run",
            "--cmd",
            "cat > seen.{#}",
            "--pipepart",
            "access.log",
            "--block",
            &b,
            "-j",
            "2",
            "--results",
            "r.jsonl",
        ];
        if kills > 0 {
            args.push("--resume");
        }
        let mut run = sb.spawn(&args, None);
        let target = records() + 150;
        let mut finished = false;
        wait_for("progress or the end", || {
            finished = run.exited();
            finished || records() >= target
        });
        if finished {
            run.wait().expect_code(0);
            break;
        }
        sb.kill_hard(&run);
        run.wait();
        kills += 1;
        sb.assert_nothing_alive();
    }
    assert!(kills >= 1, "the supervisor was never killed mid-run");
    assert_eq!(seen_blocks(&sb, blocks), text, "the blocks, concatenated, are not the file");
    // Each block has one final record: the resumed runs ran only what had none. (A torn last
    // line of a killed run is no record, and is cut by the resume.)
    let recs = read_records(&results);
    let ids: std::collections::BTreeSet<_> = recs.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    assert_eq!((recs.len() as u64, ids.len() as u64), (blocks, blocks));
    sb.assert_clean();
}
