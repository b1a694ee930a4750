//! The control socket: `bulkhead status` from another terminal gets a snapshot of a running
//! batch, like `supervisorctl status` or `pueue status`.
//!
//! It answers on connect, with one JSON line, and closes: there is no request to parse, so
//! nothing a client sends can confuse the supervisor, and a slow client costs nothing. Only
//! the supervisor's own user is answered; anyone else is dropped at once (peer credentials).
//! The socket file lives in a fresh private directory (0700) and is itself 0600.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use interprocess::local_socket::traits::{Listener as _, Stream as _, StreamCommon as _};
use interprocess::local_socket::{GenericFilePath, Listener, ListenerNonblockingMode, ListenerOptions, ToFsName};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::engine::{Mode, Probe, SlotIndex};
use crate::runtime::PollSet;
use shared::shm::PageState;

/// What `bulkhead status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    /// The supervisor's pid.
    pub pid: u32,
    /// `process` or `thread`.
    pub mode: String,
    /// Seconds since the run started.
    pub elapsed_s: f64,
    /// Tasks with a final record in this run.
    pub done: u64,
    /// Of which ok.
    pub ok: u64,
    /// Of which failed.
    pub failed: u64,
    /// Of which quarantined.
    pub quarantined: u64,
    /// Tasks assigned to workers.
    pub running: usize,
    /// Tasks read and waiting for a worker.
    pub queued: usize,
    /// Worker restarts.
    pub restarts: u64,
    /// Worker deaths by cause.
    pub crashes: BTreeMap<String, u64>,
    /// Finished tasks per second since the start.
    pub rate: f64,
    /// Why the run is stopping, if it is.
    pub stopping: Option<String>,
    /// Each worker slot.
    pub workers: Vec<WorkerStatus>,
    /// The supervisor's command line, to tell one run of a user from another.
    #[serde(default)]
    pub command: Vec<String>,
    /// When the run started, in seconds since the Unix epoch.
    #[serde(default)]
    pub started_unix: f64,
    /// The directory it was started in.
    #[serde(default)]
    pub cwd: String,
}

/// One worker slot in a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// The slot.
    pub slot: SlotIndex,
    /// Its worker's pid, if it has one.
    pub pid: Option<u32>,
    /// `serving`, `starting`, `backoff`, `terminating`...
    pub state: String,
    /// Tasks assigned to it.
    pub tasks: usize,
    /// The progress its running tasks have reported (summed over its threads), read from
    /// its status page; `None` when it runs nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u64>,
    /// Seconds since a running task of it last reported progress (or started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_s: Option<f64>,
    /// The task it runs, if any: its id, and what it was (a `--cmd` task's input, seq, cmd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<CurrentTask>,
}

/// The task a worker runs, in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentTask {
    /// Its id.
    pub id: String,
    /// What it was.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub label: Option<crate::engine::lifecycle::TaskLabel>,
}

/// The progress of what `slot`'s worker is running, and the seconds since it last moved.
fn running_progress(probe: &dyn Probe, slot: SlotIndex, now: u64) -> (Option<u64>, Option<f64>) {
    let mut found: Option<(u64, u64)> = None;
    for p in probe.page(slot).unwrap_or_default() {
        if let PageState::Running { started_ns, .. } = p.read() {
            let (units, at) = p.progress();
            let (sum, latest) = found.unwrap_or((0, 0));
            found = Some((sum + units, latest.max(at.max(started_ns))));
        }
    }
    match found {
        Some((units, at)) => (Some(units), Some(now.saturating_sub(at) as f64 / 1e9)),
        None => (None, None),
    }
}

impl StatusSnapshot {
    /// The engine's state at `now`, with the progress `probe` reads on the status pages.
    pub fn of(engine: &Engine, probe: &dyn Probe, now: u64, mode: Mode) -> Self {
        let c = engine.counts();
        let elapsed_s = engine.secs(now);
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Self {
            command: std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect(),
            started_unix: (wall.as_secs_f64() - elapsed_s).max(0.0),
            cwd: std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
            pid: std::process::id(),
            mode: if mode == Mode::Thread { "thread" } else { "process" }.into(),
            elapsed_s,
            done: c.finished(),
            ok: c.ok,
            failed: c.failed,
            quarantined: c.quarantined,
            running: engine.running(),
            queued: engine.queued(),
            restarts: c.restarts,
            crashes: c.crashes.iter().map(|(k, v)| ((*k).to_string(), *v)).collect(),
            rate: if elapsed_s > 0.0 { c.finished() as f64 / elapsed_s } else { 0.0 },
            stopping: engine.stop_reason().map(|r| r.word().to_string()),
            workers: SlotIndex::all(engine.slots().len())
                .zip(engine.slots())
                .map(|(slot, s)| {
                    let (progress, quiet_s) = running_progress(probe, slot, now);
                    WorkerStatus {
                        slot,
                        pid: s.state.pid(),
                        state: s.state.label().into(),
                        tasks: s.inflight(),
                        progress,
                        quiet_s,
                        current: s.current().map(|j| CurrentTask {
                            id: j.id().to_string(),
                            label: crate::engine::lifecycle::TaskLabel::of(j.label()),
                        }),
                    }
                })
                .collect(),
        }
    }
}

/// A listening control socket; its file is removed on drop.
pub struct ControlServer {
    listener: Listener,
    path: PathBuf,
    uid: u32,
    /// Connections dropped, by the stranger's uid (`None`: credentials unreadable). Each
    /// stranger is logged once, at its first try; a thousand tries make one line and a count.
    refused: BTreeMap<Option<u32>, u64>,
}

impl ControlServer {
    /// Listens at `path` (mode 0600). A stale socket left by a killed run is replaced; anything
    /// else there (a file, the socket of a live run) is left alone and refused.
    pub fn bind(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::FileTypeExt;
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
            Ok(m) if !m.file_type().is_socket() => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket; refusing to replace it", path.display()),
                ));
            }
            Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("{} is the control socket of a running supervisor", path.display()),
                    ));
                }
                // Nobody listens: a killed run's leftover. (Gone already: another run took it.)
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => match std::fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                },
                Err(e) => return Err(e),
            },
        }
        let name = path.to_fs_name::<GenericFilePath>()?;
        let listener = ListenerOptions::new()
            .name(name)
            .mode(0o600)
            .reclaim_name(true)
            .nonblocking(ListenerNonblockingMode::Accept)
            .create_sync()?;
        Ok(Self { listener, path: path.to_path_buf(), uid: nix::unistd::geteuid().as_raw(), refused: BTreeMap::new() })
    }

    /// Adds the listening socket to the poll set.
    pub fn poll_set(&self, set: &mut PollSet) {
        let Listener::UdSocket(l) = &self.listener;
        set.push(l.as_fd().as_raw_fd(), nix::poll::PollFlags::POLLIN, 0);
    }

    /// Accepts waiting connections and answers those of our user with a snapshot.
    pub fn ready(&mut self, _token: u32, snapshot: impl Fn() -> StatusSnapshot) {
        loop {
            let stream = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("control socket: accept failed: {e}");
                    return;
                }
            };
            let creds = stream.peer_creds().ok();
            let uid = creds.as_ref().and_then(|c| c.euid());
            if uid != Some(self.uid) {
                let tries = self.refused.entry(uid).or_insert(0);
                *tries += 1;
                if *tries == 1 {
                    let who = match uid {
                        Some(u) => format!("uid {u}"),
                        None => "a peer whose credentials cannot be read".into(),
                    };
                    let pid = creds.and_then(|c| c.pid()).map(|p| format!(" (pid {p})")).unwrap_or_default();
                    log::warn!(
                        "control socket: refused a connection from {who}{pid}: it answers only uid {}; \
                         further tries from {who} are counted, not logged",
                        self.uid
                    );
                }
                continue;
            }
            let mut line = serde_json::to_vec(&snapshot()).expect("snapshots serialize");
            line.push(b'\n');
            let mut stream = stream;
            // The answer is small; a client that does not read it loses it, we do not wait.
            let _ = stream.set_nonblocking(true);
            let _ = stream.write_all(&line);
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        // The count of what was not logged, once per stranger, beside its one warning.
        for (uid, tries) in self.refused.iter().filter(|(_, t)| **t > 1) {
            let who = uid.map_or("peers of unknown uid".to_string(), |u| format!("uid {u}"));
            eprintln!("bulkhead: control socket: refused {tries} connections from {who} in all");
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
