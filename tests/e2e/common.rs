//! The harness of the end-to-end tests: runs the real `bulkhead` binary in a private
//! directory, with a tag in its environment that its workers and their children inherit,
//! and checks after each run that nothing is left: no process carrying the tag, no zombie
//! reparented to the test process (which is a child subreaper, so orphans come here), no
//! socket file. Waiting is always on a condition with one bounded timeout, never a sleep.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");
/// The one global bound on any wait.
pub const PATIENCE: Duration = Duration::from_secs(60);

static SUPERVISORS: Mutex<Option<HashSet<u32>>> = Mutex::new(None);
/// Processes of runs a test killed on purpose: their zombies come to us, as to init.
static EXPECTED_ORPHANS: Mutex<Option<HashSet<u32>>> = Mutex::new(None);
static SUBREAPER: Once = Once::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Waits until `cond` holds, polling; panics with `what` after [`PATIENCE`].
pub fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    wait_for_up_to(what, PATIENCE, cond);
}

/// [`wait_for`] with a longer bound, for an outside system whose own settings say it takes
/// longer (a Slurm cluster's scheduling intervals).
pub fn wait_for_up_to(what: &str, patience: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    while !cond() {
        assert!(start.elapsed() < patience, "timed out waiting for {what} ({} s)", patience.as_secs());
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// One test's sandbox.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub tag: String,
}

impl Sandbox {
    pub fn new() -> Self {
        SUBREAPER.call_once(|| {
            nix::sys::prctl::set_child_subreaper(true).expect("become a child subreaper");
        });
        let dir = tempfile::Builder::new().prefix("bh-e2e-").tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("run")).unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let tag = format!("{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        Self { dir, tag }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A `bulkhead` command in the sandbox.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.dir.path())
            .env("BULKHEAD_TEST_TAG", &self.tag)
            .env("XDG_RUNTIME_DIR", self.path("run"))
            .env("TMPDIR", self.path("tmp"))
            .env_remove("RUST_LOG")
            .env_remove("RUST_BACKTRACE");
        c
    }

    /// Starts `bulkhead`, registered so the zombie check knows it is ours to reap.
    pub fn spawn(&self, args: &[&str], stdin: Option<&str>) -> Running {
        self.spawn_exe(Path::new(BIN), args, stdin)
    }

    /// Starts `bulkhead` with more variables in its environment, as an engine sets them
    /// (`JOB_COMPLETION_INDEX`).
    pub fn spawn_env(&self, args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut c = self.cmd(args);
        c.envs(env.iter().copied()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = spawn_ours(&mut c);
        Running { child: Some(child) }
    }

    /// Starts another executable (a copy of `bulkhead`, an example) the same way.
    pub fn spawn_exe(&self, exe: &Path, args: &[&str], stdin: Option<&str>) -> Running {
        let mut c = self.cmd(args);
        let envs: Vec<_> = c.get_envs().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))).collect();
        let mut c = if exe == Path::new(BIN) {
            c
        } else {
            let mut other = Command::new(exe);
            other
                .args(args)
                .current_dir(self.dir.path())
                .envs(envs)
                .env_remove("RUST_LOG")
                .env_remove("RUST_BACKTRACE");
            let _ = &mut c;
            other
        };
        c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_ours(&mut c);
        if let Some(input) = stdin {
            let mut w = child.stdin.take().unwrap();
            let input = input.to_string();
            std::thread::spawn(move || {
                let _ = w.write_all(input.as_bytes());
            });
        }
        Running { child: Some(child) }
    }

    /// Starts `bulkhead` with its stdin a pipe that the test writes to and closes when it
    /// likes (a slow producer).
    pub fn spawn_stdin(&self, args: &[&str]) -> (Running, std::process::ChildStdin) {
        let mut c = self.cmd(args);
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = spawn_ours(&mut c);
        let stdin = child.stdin.take().unwrap();
        (Running { child: Some(child) }, stdin)
    }

    /// Runs `bulkhead` to the end.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Done {
        self.spawn(args, stdin).wait()
    }

    /// Pids of live processes carrying this sandbox's tag (the supervisor, workers, their
    /// children).
    pub fn tagged(&self) -> Vec<(u32, String)> {
        let needle = format!("BULKHEAD_TEST_TAG={}", self.tag);
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                out.push((pid, comm.trim().to_string()));
            }
        }
        out
    }

    /// Live workers of this sandbox.
    pub fn workers(&self) -> Vec<u32> {
        self.tagged().into_iter().filter(|(_, c)| c == "bulkhead-worker").map(|(p, _)| p).collect()
    }

    /// Sends `sig` to every process of this sandbox, as a cluster engine or systemd signals
    /// every process of a job.
    pub fn signal_all(&self, sig: nix::sys::signal::Signal) {
        for (pid, _) in self.tagged() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
        }
    }

    /// SIGKILLs the supervisor of `run`; its processes' zombies are then expected here. It is
    /// stopped first, so that no worker it starts between the census and the kill escapes it.
    pub fn kill_hard(&self, run: &Running) {
        run.signal(nix::sys::signal::Signal::SIGSTOP);
        let pid = run.pid();
        // Stopped, or already ended on its own (a zombie until waited for).
        wait_for("the supervisor to stop", || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
                s.rsplit_once(')').is_some_and(|(_, rest)| matches!(rest.trim_start().chars().next(), Some('T' | 'Z')))
            })
        });
        let mut expected = EXPECTED_ORPHANS.lock().unwrap();
        expected.get_or_insert_with(HashSet::new).extend(self.tagged().into_iter().map(|(p, _)| p));
        run.signal(nix::sys::signal::Signal::SIGKILL);
    }

    /// After a supervisor was SIGKILLed: its workers and their children must die by
    /// themselves (parent-death signal), leaving nothing alive. What they leave dead is
    /// reparented to init (here: to this test process, a subreaper) and reaped there, as
    /// init would; the next run reclaims the runtime directory.
    pub fn assert_nothing_alive(&self) {
        wait_for("every process of the killed run to die", || {
            let _ = orphan_zombies();
            self.tagged().is_empty()
        });
        let _ = orphan_zombies();
    }

    /// Asserts that nothing of the run is left: no tagged process, no orphan zombie, no
    /// socket file, no runtime directory.
    pub fn assert_clean(&self) {
        // Workers of a SIGKILLed supervisor die by their parent-death signal, a moment later.
        let start = Instant::now();
        while !self.tagged().is_empty() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(self.tagged().is_empty(), "processes left behind: {:?}", self.tagged());
        let zombies = orphan_zombies();
        assert!(zombies.is_empty(), "zombies left behind: {zombies:?}");
        let sockets = find_sockets(self.dir.path());
        assert!(sockets.is_empty(), "socket files left behind: {sockets:?}");
        let leftovers: Vec<_> = std::fs::read_dir(self.path("run")).unwrap().flatten().map(|e| e.path()).collect();
        assert!(leftovers.is_empty(), "runtime directories left behind: {leftovers:?}");
    }
}

/// Starts `c` as a child that a test waits for itself, registered so that the zombie check of a
/// test running at the same time does not take it for an orphan and reap it: the lock is held
/// from the spawn to the registration, and the check asks again under it before reaping.
fn spawn_ours(c: &mut Command) -> Child {
    let mut ours = SUPERVISORS.lock().unwrap();
    let child = c.spawn().unwrap_or_else(|e| panic!("start {:?}: {e}", c.get_program()));
    ours.get_or_insert_with(HashSet::new).insert(child.id());
    child
}

/// Runs `c` to the end with its output collected (any program: a tool the test asks, a
/// setup script), as [`spawn_ours`] starts it. Not bounded: for programs that end by
/// themselves.
pub fn output_of(c: &mut Command) -> Output {
    let child = spawn_ours(c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()));
    let pid = child.id();
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("wait for {:?}: {e}", c.get_program()));
    SUPERVISORS.lock().unwrap().get_or_insert_with(HashSet::new).remove(&pid);
    out
}

/// Zombies whose parent is this test process and that are not supervisors a test is about
/// to wait for: orphans of a run, reparented here because we are a subreaper. They are
/// reaped as they are reported, so one test's leak does not fail the next.
///
/// An orphan is told from a child of our own by its process group: what a run leaves
/// (workers, their tasks' children) lives in process groups of its own, while everything
/// the tests start themselves (supervisors, `bulkhead status`, `sh`, `kill`) inherits the
/// test process's group. Tests run in parallel, so another test's child that has exited but
/// that its test has not yet waited for is a zombie here too: it must be neither reported
/// nor reaped (which would steal its exit status).
fn orphan_zombies() -> Vec<(u32, String)> {
    let me = std::process::id();
    let my_group = nix::unistd::getpgrp().as_raw().to_string();
    let ours = SUPERVISORS.lock().unwrap().clone().unwrap_or_default();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        if fields.len() > 2
            && fields[0] == "Z"
            && fields[1] == me.to_string()
            && fields[2] != my_group
            && !ours.contains(&pid)
        {
            let name = stat[stat.find('(').unwrap() + 1..close].to_string();
            // Asked again under the lock: a test may have started it since the census.
            let ours = SUPERVISORS.lock().unwrap();
            if ours.as_ref().is_some_and(|s| s.contains(&pid)) {
                continue;
            }
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
            drop(ours);
            // Asked now, not before the scan: a test registers its run's processes before it
            // kills them, so one that is a zombie already is registered by now; a copy taken
            // before the scan missed those that another test killed during it.
            let expected = EXPECTED_ORPHANS.lock().unwrap().as_ref().is_some_and(|e| e.contains(&pid));
            if !expected {
                out.push((pid, name));
            }
        }
    }
    out
}

fn find_sockets(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_socket() {
            out.push(e.path());
        } else if t.is_dir() {
            out.extend(find_sockets(&e.path()));
        }
    }
    out
}

/// A running `bulkhead`.
pub struct Running {
    pub child: Option<Child>,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Whether it has exited (the status is kept for `wait`).
    pub fn exited(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_some()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig).unwrap();
    }

    /// Waits for the end (bounded), collecting its output.
    pub fn wait(mut self) -> Done {
        let mut child = self.child.take().unwrap();
        let pid = child.id();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let reader = |p: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut p) = p {
                    let _ = p.read_to_end(&mut buf);
                }
                buf
            })
        };
        let out = reader(stdout.map(|s| Box::new(s) as Box<dyn std::io::Read + Send>));
        let err = reader(stderr.map(|s| Box::new(s) as Box<dyn std::io::Read + Send>));
        let mut status = None;
        wait_for("bulkhead to exit", || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        SUPERVISORS.lock().unwrap().get_or_insert_with(HashSet::new).remove(&pid);
        let output = Output { status: status.unwrap(), stdout: out.join().unwrap(), stderr: err.join().unwrap() };
        Done { output }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A test that failed while its run was live (or dropped it on purpose): the
            // SIGKILLed supervisor's workers come here as orphans, expected ones, which must
            // not fail the next test's check.
            let mut expected = EXPECTED_ORPHANS.lock().unwrap();
            expected.get_or_insert_with(HashSet::new).extend(processes_of_run(c.id()));
            drop(expected);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The processes carrying the test tag that the run of `supervisor` carries.
fn processes_of_run(supervisor: u32) -> Vec<u32> {
    let Ok(env) = std::fs::read(format!("/proc/{supervisor}/environ")) else { return Vec::new() };
    let Some(tag) = env.split(|b| *b == 0).find(|kv| kv.starts_with(b"BULKHEAD_TEST_TAG=")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        if std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == tag)) {
            out.push(pid);
        }
    }
    out
}

/// A finished `bulkhead`.
pub struct Done {
    pub output: Output,
}

impl Done {
    pub fn status(&self) -> ExitStatus {
        self.output.status
    }
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    /// Result records from stdout.
    pub fn records(&self) -> Vec<serde_json::Value> {
        parse_records(&self.stdout())
    }
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), Some(code), "exit status {:?}\nstderr:\n{}", self.status(), self.stderr());
        self
    }
}

pub fn parse_records(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

pub fn read_records(path: &Path) -> Vec<serde_json::Value> {
    parse_records(&std::fs::read_to_string(path).unwrap_or_default())
}

/// Records by id; panics if an id has two.
pub fn by_id(records: &[serde_json::Value]) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut m = std::collections::BTreeMap::new();
    for r in records {
        let id = r["id"].as_str().expect("id").to_string();
        assert!(m.insert(id.clone(), r.clone()).is_none(), "two records for {id}");
    }
    m
}

/// The causes of a record's crashes.
pub fn causes(r: &serde_json::Value) -> Vec<String> {
    r["crashes"]
        .as_array()
        .map(|a| a.iter().map(|c| c["cause"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// JSONL of `n` tasks made by `f(i)`.
pub fn tasks(n: usize, f: impl Fn(usize) -> String) -> String {
    (0..n).map(|i| f(i) + "\n").collect()
}
