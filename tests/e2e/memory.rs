//! Memory limits with real programs: `--memory-limit` (the resident memory of a worker and
//! its task's processes together, sampled by the supervisor) lets programs that reserve far
//! more than they touch run, and kills a task's tree that really uses too much, as `oom`
//! with the limit and the peak; `--address-space-limit` is the old `RLIMIT_AS`.

use crate::common::*;

/// `python3` for the tests' own allocating children, or `None` after printing SKIPPED.
fn python(test: &str) -> Option<&'static str> {
    let ok = std::process::Command::new("python3").arg("-c").arg("pass").output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: {test}: no python3 on PATH to allocate memory with");
    }
    ok.then_some("python3")
}

fn shell_task(id: &str, cmd: &str) -> String {
    serde_json::json!({"id": id, "kind": "shell", "cmd": cmd}).to_string() + "\n"
}

#[test]
fn programs_that_reserve_more_than_they_touch_run_under_a_memory_limit() {
    let sb = Sandbox::new();
    let Some(py) = python("an untouched 4 GiB mmap") else { return };
    // 4 GiB of anonymous address space, never touched: nothing resident.
    let mmap = format!("{py} -c 'import mmap; m = mmap.mmap(-1, 4 << 30); print(len(m))'");
    let mut input = shell_task("mmap", &mmap);
    let java = std::process::Command::new("java").arg("-version").output().is_ok_and(|o| o.status.success());
    if java {
        input += &shell_task("java", "java -version");
    } else {
        eprintln!(
            "SKIPPED: java -version under --memory-limit: no java on PATH (.ci/run installs default-jre-headless)"
        );
    }
    let done = sb.run(&["run", "-", "-j", "1", "--memory-limit", "512M"], Some(&input));
    done.expect_code(0);
    let recs = by_id(&done.records());
    assert!(recs.values().all(|r| r["status"] == "ok"), "{recs:?}");
    // The old limit, under its own name, breaks the same program: the mmap fails.
    let done = sb.run(&["run", "-", "-j", "1", "--address-space-limit", "512M"], Some(&shell_task("mmap", &mmap)));
    done.expect_code(1);
    let rec = &done.records()[0];
    assert_eq!(rec["status"], "failed", "{rec}");
    assert!(rec["stderr"]["head"].as_str().unwrap_or_default().contains("Cannot allocate memory"), "{rec}");
    sb.assert_clean();
}

/// Each child touches `CHUNK` bytes, then waits `PAUSE_S`: between two samples (10 ms apart)
/// a child grows by at most one chunk as long as the supervisor's sampler is less than the
/// pause late, so the peak seen is the limit plus at most one chunk per child.
const CHUNK: u64 = 8 << 20;
const PAUSE_S: &str = "0.2";

#[test]
fn a_task_tree_over_the_memory_limit_is_killed_as_oom_with_its_peak() {
    let sb = Sandbox::new();
    let Some(py) = python("three children over the memory limit") else { return };
    let alloc = sb.write(
        "alloc.py",
        "import sys, time\n\
         total, chunk, pause = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])\n\
         hoard = []\n\
         while len(hoard) * chunk < total:\n\
         \x20   b = bytearray(chunk)\n\
         \x20   for i in range(0, chunk, 4096): b[i] = 1\n\
         \x20   hoard.append(b)\n\
         \x20   time.sleep(pause)\n",
    );
    let child = format!("{py} {} 300000000 {CHUNK} {PAUSE_S}", alloc.display());
    let cmd = format!("{child} & {child} & {child} & wait");
    let done =
        sb.run(&["run", "-", "-j", "1", "--attempts", "1", "--memory-limit", "600M"], Some(&shell_task("big", &cmd)));
    done.expect_code(1);
    let rec = &done.records()[0];
    assert_eq!(rec["status"], "quarantined", "{rec}");
    let crash = &rec["crashes"][0];
    assert_eq!(crash["cause"], "oom", "{rec}");
    let limit = 600u64 << 20;
    assert_eq!(crash["limit"].as_u64(), Some(limit), "{rec}");
    let peak = crash["peak"].as_u64().unwrap();
    assert!(peak > limit, "peak {peak} is not past the limit: {rec}");
    // One sample's growth: a chunk per child, and a little for the interpreters' own pages.
    let bound = limit + 3 * CHUNK + (4 << 20);
    assert!(peak <= bound, "peak {peak} is more than one sample's growth past the limit ({bound}): {rec}");
    sb.assert_clean();
}

/// Whether `pid` runs (a zombie does not count: it is only waiting for its parent).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

#[test]
fn no_process_escapes_its_task_and_the_record_counts_them() {
    let sb = Sandbox::new();
    // A setsid child (a new session and group) and a double fork (an orphan at once), both
    // with their output away from the task's pipes; their pids on stdout.
    let escape = "setsid sleep 1000 >/dev/null 2>&1 & echo $!; (sleep 1000 >/dev/null 2>&1 & echo $!); echo done";
    // An escaped child that keeps the task's stdout open: the task ends when sh does (plus
    // the pipes' short grace), not when the child would.
    let holder = "setsid sleep 1000 & echo $!";
    let input = shell_task("escape", escape) + &shell_task("holder", holder) + &shell_task("clean", "echo ok");
    let done = sb.run(&["run", "-", "-j", "1"], Some(&input));
    done.expect_code(0);
    let recs = by_id(&done.records());
    assert_eq!(recs["escape"]["leaked"], 2, "{}", recs["escape"]);
    assert_eq!(recs["holder"]["leaked"], 1, "{}", recs["holder"]);
    assert!(recs["clean"].get("leaked").is_none(), "{}", recs["clean"]);
    let mut pids = Vec::new();
    for id in ["escape", "holder"] {
        let out = recs[id]["stdout"]["head"].as_str().unwrap().to_string();
        pids.extend(out.lines().filter_map(|l| l.parse::<u32>().ok()));
    }
    assert_eq!(pids.len(), 3, "{recs:?}");
    for pid in pids {
        assert!(!running(pid), "{pid} outlived its task");
    }
    sb.assert_clean();
}

#[test]
fn a_task_s_peak_memory_is_in_its_record_and_event() {
    let sb = Sandbox::new();
    let Some(py) = python("a task's peak memory") else { return };
    // 64 MiB touched and held for a while: samples (every 10 ms) must see it.
    let cmd = format!("{py} -c 'import time; b = bytearray(64 << 20); time.sleep(0.5)'");
    let done = sb.run(&["run", "-", "-j", "1", "--events", "events.jsonl"], Some(&shell_task("m", &cmd)));
    done.expect_code(0);
    let rec = &done.records()[0];
    let peak = rec["peak_rss"].as_u64().unwrap_or(0);
    assert!(peak > 64 << 20, "{rec}");
    let events = std::fs::read_to_string(sb.path("events.jsonl")).unwrap();
    let fin: serde_json::Value = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "task_finished")
        .unwrap();
    assert_eq!(fin["peak_rss"].as_u64(), Some(peak), "{fin}");
    sb.assert_clean();
}

#[test]
fn what_a_dead_worker_s_task_left_behind_is_stopped_by_the_supervisor() {
    let sb = Sandbox::new();
    // The task starts a setsid child, waits until it is surely sampled (`sleep` outlives many
    // 10 ms samples), then kills its own worker: the child is nobody's task any more.
    let cmd = "setsid sleep 1000 >/dev/null 2>&1 & sleep 0.5; kill -9 $PPID";
    let done = sb.run(&["run", "-", "-j", "1", "--attempts", "1"], Some(&shell_task("orphan", cmd)));
    done.expect_code(1);
    assert_eq!(done.records()[0]["status"], "quarantined");
    // Nothing of the task is left (the harness counts every process carrying the run's tag).
    sb.assert_clean();
}
