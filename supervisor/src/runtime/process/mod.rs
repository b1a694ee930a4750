//! The process backend: the supervisor's side of each worker process. It owns the OS
//! resources of a worker (socket, stderr pipe, status page) and turns what happens on them
//! into engine events: frames, a closed or broken connection, a reaped status with the tasks
//! the status page showed executing, the last words on stderr.

pub mod memwatch;
pub mod reap;
pub mod spawn;

use std::io::{self, PipeReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::socket::{MsgFlags, recv};
use nix::unistd::Pid;
use shared::PROTOCOL_VERSION;
use shared::frame::{self, FrameError, FrameReader, MAX_FRAME};
use shared::proto::{self, FromWorker, ToWorker};
use shared::shm::{self, PageState};
use worker::statuspage::StatusPage;

use crate::engine::ExitCause;
use crate::engine::{Engine, Event, Misuse, Probe, Seq, SlotIndex, SpawnError, StopReason, WorkerLine};
use crate::runtime::process::memwatch::MemWatch;
use crate::runtime::process::spawn::{SpawnConfig, spawn_worker};
use crate::runtime::{Backend, Cx, PollSet};

/// Bytes of a worker's stderr kept for classifying its death.
const TAIL_BYTES: usize = 8 << 10;
/// A stderr line longer than this is passed on in pieces of this size.
const LINE_BYTES: usize = 64 << 10;
/// Assignments per frame.
const BATCH: usize = 1024;
/// Reads per readiness, so one chatty worker cannot starve the others.
const READS_PER_WAKE: usize = 16;
/// The poll token of the memory watch's wake-up (the workers' are `slot * 2` and `+ 1`).
const MEMWATCH_TOKEN: u32 = u32::MAX;

struct Conn {
    pid: u32,
    sock: UnixStream,
    stderr: Option<PipeReader>,
    page: Arc<StatusPage>,
    reader: FrameReader,
    out: Vec<u8>,
    out_pos: usize,
    tail: Vec<u8>,
    reading: bool,
    /// The stderr line read so far.
    line: Vec<u8>,
    /// The task whose start the worker marked last on stderr.
    marked: Option<Seq>,
    /// The worker answered its hello: it serves.
    ready: bool,
}

/// Worker processes, one per slot.
pub struct ProcessBackend {
    cfg: SpawnConfig,
    conns: Vec<Option<Conn>>,
    /// The process is a child subreaper and reaps every child, orphans of its workers'
    /// tasks included.
    reap_any: bool,
    /// Samples the workers' trees: their tasks' peaks, and `--memory-limit`. `None` only
    /// when its thread could not be started (said in the log; a memory limit then fails
    /// the build instead).
    watch: Option<MemWatch>,
}

impl ProcessBackend {
    /// A backend with `slots` empty slots. With `reap_orphans`, the process becomes a child
    /// subreaper: what a dead worker's task left behind is reparented here and reaped, not
    /// left to init. That takes `waitpid(-1)`, which would steal the statuses of other
    /// children of the program, so only a program that has none (the CLI) asks for it.
    pub fn new(cfg: SpawnConfig, slots: usize, reap_orphans: bool) -> io::Result<Self> {
        let reap_any = reap_orphans && nix::sys::prctl::set_child_subreaper(true).is_ok();
        let watch = match MemWatch::start(slots) {
            Ok(w) => Some(w),
            Err(e) if cfg.memory_limit.is_none() => {
                log::warn!("no memory watch (tasks' peak memory is not recorded): {e}");
                None
            }
            Err(e) => return Err(e),
        };
        Ok(Self { cfg, conns: (0..slots).map(|_| None).collect(), reap_any, watch })
    }

    /// Reaps whatever has ended: with `reap_any` every child, otherwise the known workers.
    fn collect_ended(&mut self) -> Vec<(SlotIndex, ExitCause)> {
        let mut ended = Vec::new();
        if self.reap_any {
            while let Some((pid, exit)) = reap::try_reap_any() {
                match self.conns.iter().position(|c| c.as_ref().is_some_and(|c| c.pid == pid)) {
                    Some(slot) => ended.push((SlotIndex(slot), exit)),
                    None => log::debug!("reaped orphan {pid}: {exit:?}"),
                }
            }
        } else {
            for (slot, conn) in SlotIndex::all(self.conns.len()).zip(&self.conns) {
                if let Some(c) = conn
                    && let Some(exit) = reap::try_reap(c.pid)
                {
                    ended.push((slot, exit));
                }
            }
        }
        ended
    }

    fn read_frames(&mut self, slot: SlotIndex, cx: &mut Cx<'_>) {
        // A worker writes a task's stderr before it sends the task's result, so reading the
        // pipe first gives every line its task while that task is still in flight.
        if self.cfg.task_marks {
            self.read_stderr(slot, cx);
        }
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        for _ in 0..READS_PER_WAKE {
            if !conn.reading {
                return;
            }
            match conn.reader.fill_from(&mut conn.sock) {
                Ok(0) => {
                    conn.reading = false;
                    let detail = match conn.reader.at_eof() {
                        FrameError::Closed => None,
                        e => Some(e.to_string()),
                    };
                    cx.engine.handle(Event::ChannelEnded { slot, detail }, cx.now, cx.sink, cx.out);
                    return;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    conn.reading = false;
                    let detail = Some(format!("socket error: {e}"));
                    cx.engine.handle(Event::ChannelEnded { slot, detail }, cx.now, cx.sink, cx.out);
                    return;
                }
            }
            loop {
                let body = match conn.reader.next_frame() {
                    Ok(Some(body)) => body,
                    Ok(None) => break,
                    Err(e) => {
                        conn.reading = false;
                        cx.engine.handle(
                            Event::ChannelEnded { slot, detail: Some(e.to_string()) },
                            cx.now,
                            cx.sink,
                            cx.out,
                        );
                        return;
                    }
                };
                if proto::peek_version(body).is_some() {
                    conn.ready = true;
                }
                if let Err(e) = deliver(slot, body, cx, self.watch.as_ref().filter(|_| self.cfg.memory_limit.is_some()))
                {
                    conn.reading = false;
                    // The detail goes into the crash record: the error with its causes.
                    let detail = worker::ErrorChain(&e).to_string();
                    cx.engine.handle(Event::ChannelEnded { slot, detail: Some(detail) }, cx.now, cx.sink, cx.out);
                    return;
                }
            }
        }
    }

    fn read_stderr(&mut self, slot: SlotIndex, cx: &mut Cx<'_>) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        let mut buf = [0u8; 4096];
        loop {
            let Some(pipe) = conn.stderr.as_mut() else {
                return;
            };
            match pipe.read(&mut buf) {
                Ok(0) => {
                    conn.stderr = None;
                    conn.end_line(slot, cx);
                    return;
                }
                Ok(n) => {
                    for &b in &buf[..n] {
                        if b == b'\n' {
                            conn.end_line(slot, cx);
                        } else {
                            conn.line.push(b);
                            if conn.line.len() >= LINE_BYTES {
                                conn.end_line(slot, cx);
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    fn flush_out(&mut self, slot: SlotIndex) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        while conn.out_pos < conn.out.len() {
            // MSG_NOSIGNAL: a library user's program may have SIGPIPE at its default, and a
            // worker that died must not take the supervisor with it.
            let sent = nix::sys::socket::send(
                conn.sock.as_raw_fd(),
                &conn.out[conn.out_pos..],
                nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
            )
            .map_err(io::Error::from);
            match sent {
                Ok(n) => conn.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    // The worker is gone; its death is reported by the reaper.
                    conn.out_pos = conn.out.len();
                }
            }
        }
        conn.out.clear();
        conn.out_pos = 0;
    }

    /// Tells the engine of the trees the memory watch found over their limit (and killed).
    fn over_memory(&mut self, cx: &mut Cx<'_>) {
        for b in self.watch.as_ref().map(MemWatch::take_breaches).unwrap_or_default() {
            log::debug!("memory watch: killed {} processes of worker {} (pid {})", b.killed, b.slot, b.pid);
            let ev = Event::OverMemory { slot: b.slot, pid: b.pid, limit: b.limit, peak: b.peak };
            cx.engine.handle(ev, cx.now, cx.sink, cx.out);
        }
    }

    /// Signals the worker's process group and every child group its tasks published.
    fn signal_groups(conn: &Conn, signal: Signal) {
        let _ = killpg(Pid::from_raw(conn.pid as i32), signal);
        for s in conn.page.slots() {
            let pgid = s.child_pgid.load(std::sync::atomic::Ordering::Acquire);
            if pgid > 0 {
                let _ = killpg(Pid::from_raw(pgid), signal);
            }
        }
    }
}

impl Conn {
    /// The stderr line read so far is complete (or the pipe ended): a task's start mark, a
    /// `log` record, or the program's own words, which are also kept for classifying a death.
    fn end_line(&mut self, slot: SlotIndex, cx: &mut Cx<'_>) {
        if self.line.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.line);
        match shared::stderr::parse(&line) {
            shared::stderr::Line::TaskStart(seq) => self.marked = Some(Seq(seq)),
            shared::stderr::Line::Log { seq, level, target, message } => {
                let task = cx.engine.inflight_id(slot, Seq(seq));
                let record = Some((log_level(level), target));
                cx.sink.worker_line(WorkerLine { slot, pid: self.pid, task, record, text: message });
            }
            shared::stderr::Line::Raw(bytes) => {
                self.tail.extend_from_slice(bytes);
                self.tail.push(b'\n');
                if self.tail.len() > TAIL_BYTES {
                    let cut = self.tail.len() - TAIL_BYTES;
                    self.tail.drain(..cut);
                }
                let text = String::from_utf8_lossy(bytes);
                let task = self.marked.and_then(|seq| cx.engine.inflight_id(slot, seq));
                cx.sink.worker_line(WorkerLine { slot, pid: self.pid, task, record: None, text: &text });
            }
        }
        // The buffer is reused for the next line.
        self.line = line;
        self.line.clear();
    }
}

/// A level as the worker's line numbers it (1 error to 5 trace).
fn log_level(n: u8) -> log::Level {
    match n {
        1 => log::Level::Error,
        2 => log::Level::Warn,
        3 => log::Level::Info,
        4 => log::Level::Debug,
        _ => log::Level::Trace,
    }
}

/// Hands one frame from a worker to the engine; an error describes a protocol violation.
/// `watch` is the memory watch when tasks have limits, to be told which ended.
fn deliver(slot: SlotIndex, body: &[u8], cx: &mut Cx<'_>, watch: Option<&MemWatch>) -> Result<(), frame::FrameError> {
    if let Some(version) = proto::peek_version(body)
        && version != PROTOCOL_VERSION
    {
        let why = crate::engine::StopReason::ProtocolMismatch { slot, theirs: version, ours: PROTOCOL_VERSION };
        cx.engine.fatal(why, cx.now, cx.sink, cx.out);
        return Ok(());
    }
    let msg = proto::decode_from_worker(body)?;
    let ev = match msg {
        FromWorker::Ready(_) => Event::Ready { slot },
        FromWorker::Results(outcomes) => {
            if let Some(w) = watch {
                w.task_done(slot, outcomes.iter().map(|o| Seq(o.seq)));
            }
            cx.engine.handle(Event::Outcomes { slot, outcomes: &outcomes }, cx.now, cx.sink, cx.out);
            return Ok(());
        }
        FromWorker::Heartbeat => Event::Heartbeat { slot },
        FromWorker::Panic(report) => Event::Panic { slot, report },
    };
    cx.engine.handle(ev, cx.now, cx.sink, cx.out);
    Ok(())
}

impl Probe for ProcessBackend {
    fn page(&self, slot: SlotIndex) -> Option<&[shm::PageSlot]> {
        self.conns.get(slot.0)?.as_ref().map(|c| c.page.slots())
    }

    fn resident(&self, slot: SlotIndex) -> Option<u64> {
        let pid = self.conns.get(slot.0)?.as_ref()?.pid;
        match crate::runtime::procfs::resident_bytes(Pid::from_raw(pid as i32)) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                // Gone between its last result and this read: its death is reported anyway.
                log::debug!("worker {slot} (pid {pid}): cannot read its resident size: {e}");
                None
            }
        }
    }
}

impl Backend for ProcessBackend {
    fn spawn(&mut self, slot: SlotIndex) -> Result<u32, SpawnError> {
        let s = spawn_worker(&self.cfg, slot)
            .map_err(|source| SpawnError::Process { exe: self.cfg.program.exe.clone(), source })?;
        let pid = s.pid;
        let page = Arc::new(s.page);
        if let Some(w) = &self.watch {
            w.watch(slot, pid, page.clone());
        }
        self.conns[slot] = Some(Conn {
            pid,
            sock: s.sock,
            stderr: Some(s.stderr),
            page,
            reader: FrameReader::new(MAX_FRAME),
            out: Vec::new(),
            out_pos: 0,
            tail: Vec::new(),
            reading: true,
            line: Vec::new(),
            marked: None,
            ready: false,
        });
        Ok(pid)
    }

    fn dispatch(&mut self, slot: SlotIndex, engine: &mut Engine) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        // Tasks have limits only under --memory-limit; without one the watch needs no word
        // per task (a lock it may hold while it reads /proc, and a map it would search).
        let limited = self.watch.as_ref().filter(|_| self.cfg.memory_limit.is_some());
        // An idle worker's stderr was read to its end with the frame of its last result (and
        // it writes nothing between tasks), so the next task's lines are known to be its own
        // without a mark on stderr: the worker skips that one (one task thread only; a line
        // left unfinished keeps the mark, so that it ends as its own task's).
        if self.cfg.task_marks
            && self.cfg.threads == 1
            && conn.line.is_empty()
            && let Some(seq) = engine.next_unsent_alone(slot)
        {
            conn.page.header().unmarked.store(seq.0, std::sync::atomic::Ordering::Release);
            conn.marked = Some(seq);
        }
        let mut sent = Vec::new();
        while engine.has_unsent(slot) {
            // A frame the worker can read: by count, and by bytes (many large tasks would
            // otherwise add up past the frame limit and kill the worker that reads it).
            let n = engine.unsent_fitting(slot, BATCH, MAX_FRAME as usize - 64, 32);
            let batch = engine.take_unsent(slot, n).inspect(|a| {
                if limited.is_some() {
                    sent.push(Seq(a.seq));
                }
            });
            proto::encode_run(&mut conn.out, batch).expect("assignments always encode");
        }
        if let Some(w) = limited {
            w.limit_task(slot, engine.task_memory_limits(slot, &sent));
        }
        self.flush_out(slot);
    }

    fn shutdown(&mut self, slot: SlotIndex) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        frame::encode_into(&ToWorker::Shutdown, &mut conn.out).expect("shutdown always encodes");
        self.flush_out(slot);
    }

    fn kill(&mut self, slot: SlotIndex, pid: u32, signal: Signal) {
        let Some(conn) = self.conns[slot].as_ref() else {
            return;
        };
        if conn.pid != pid {
            return;
        }
        Self::signal_groups(conn, signal);
        if signal != Signal::SIGKILL {
            // A stopped worker only acts on the signal once continued.
            Self::signal_groups(conn, Signal::SIGCONT);
        }
    }

    fn poll_set(&self, set: &mut PollSet) {
        if let Some(w) = &self.watch {
            set.push(w.wakeup().as_raw_fd(), PollFlags::POLLIN, MEMWATCH_TOKEN);
        }
        for (slot, conn) in self.conns.iter().enumerate() {
            let Some(conn) = conn else { continue };
            let mut events = PollFlags::empty();
            if conn.reading {
                events |= PollFlags::POLLIN;
            }
            if conn.out_pos < conn.out.len() {
                events |= PollFlags::POLLOUT;
            }
            if !events.is_empty() {
                set.push(conn.sock.as_raw_fd(), events, (slot * 2) as u32);
            }
            if let Some(e) = &conn.stderr {
                set.push(e.as_raw_fd(), PollFlags::POLLIN, (slot * 2 + 1) as u32);
            }
        }
    }

    fn ready(&mut self, token: u32, revents: PollFlags, cx: &mut Cx<'_>) {
        if token == MEMWATCH_TOKEN {
            self.over_memory(cx);
            return;
        }
        let slot = SlotIndex((token / 2) as usize);
        if token % 2 == 1 {
            self.read_stderr(slot, cx);
            return;
        }
        if revents.contains(PollFlags::POLLOUT) {
            self.flush_out(slot);
        }
        if revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            self.read_frames(slot, cx);
        }
    }

    fn reap(&mut self, cx: &mut Cx<'_>) {
        // A worker the watch killed must die of the memory limit, not of its SIGKILL: the
        // breach is taken before the deaths (the watch records it before its kill returns).
        self.over_memory(cx);
        for (slot, exit) in self.collect_ended() {
            let pid = self.conns[slot].as_ref().expect("an ended slot has a connection").pid;
            // What the worker sent before dying (results, a panic report) comes first.
            while self.conns[slot].as_ref().is_some_and(|c| c.reading) {
                self.read_frames(slot, cx);
                if self.conns[slot].as_ref().is_some_and(|c| c.reading) && would_block(&self.conns[slot]) {
                    break;
                }
            }
            self.read_stderr(slot, cx);
            // Last words without a newline (a worker killed mid-line) are words too.
            if let Some(conn) = self.conns[slot].as_mut() {
                conn.end_line(slot, cx);
            }
            let conn = self.conns[slot].take().expect("checked above");
            let left = self.watch.as_ref().map(|w| w.unwatch(slot)).unwrap_or_default();
            let (mut executing, mut records) = (Vec::new(), Vec::new());
            for s in conn.page.slots() {
                if let PageState::Running { seq, .. } = s.read() {
                    executing.push(Seq(seq));
                    records.extend(s.record().map(|index| (Seq(seq), index)));
                }
            }
            let culprit = match conn.page.header().culprit.load(std::sync::atomic::Ordering::SeqCst) {
                0 => None,
                seq => Some(Seq(seq)),
            };
            // Its task's children die with it, and anything left in its own group.
            Self::signal_groups(&conn, Signal::SIGKILL);
            // And what left the groups (setsid, a double fork): the tree the memory watch saw
            // last, whose orphans have come here (or to init) since.
            let leaked = left.iter().filter(|&&p| kill(Pid::from_raw(p), Signal::SIGKILL).is_ok()).count();
            if leaked > 0 {
                log::info!("worker {slot} (pid {pid}) died leaving {leaked} processes of its tasks: killed");
            }
            let stderr_tail = String::from_utf8_lossy(&conn.tail).into_owned();
            let conn_ready = conn.ready;
            drop(conn);
            // Only while the run goes on: a stop already decided keeps its reason.
            if !conn_ready
                && cx.engine.stop_reason().is_none()
                && let Some(why) = misuse(&self.cfg, slot, pid, &exit, &stderr_tail)
            {
                // Every replacement would end the same way: stop now, with the reason,
                // rather than after the restart limit.
                cx.engine.fatal(why, cx.now, cx.sink, cx.out);
            }
            cx.engine.handle(
                Event::Reaped { slot, pid, exit, executing, records, culprit, stderr_tail },
                cx.now,
                cx.sink,
                cx.out,
            );
        }
    }

    fn live(&self) -> usize {
        self.conns.iter().flatten().count()
    }

    fn freeze(&mut self, stop: bool) {
        for conn in self.conns.iter().flatten() {
            Self::signal_groups(conn, if stop { Signal::SIGSTOP } else { Signal::SIGCONT });
        }
    }

    fn kill_all(&mut self) {
        for conn in self.conns.iter_mut() {
            if let Some(c) = conn.take() {
                Self::signal_groups(&c, Signal::SIGKILL);
                let _ = reap::reap_blocking(c.pid);
            }
        }
        if self.reap_any {
            reap::reap_orphans(std::time::Duration::from_secs(1));
        }
    }
}

/// The run's error when a worker ended before its handshake in a way that every replacement
/// would repeat: its program built a pool instead of serving, exited cleanly without serving,
/// or refused the handshake (another build, another handler); `None` for any other death.
fn misuse(cfg: &SpawnConfig, slot: SlotIndex, pid: u32, exit: &ExitCause, stderr_tail: &str) -> Option<StopReason> {
    let said = stderr_tail.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("nothing").trim().to_string();
    let (exe, handler) = (cfg.program.exe.display().to_string(), cfg.handler.clone());
    let misuse = match exit {
        ExitCause::Exited(shared::exit::WORKER_NOT_SERVED) => Misuse::BuiltAPool { handler, exe },
        ExitCause::Exited(0) => Misuse::ExitedEarly { handler, exe, said },
        ExitCause::Exited(shared::exit::WORKER_PROTOCOL_MISMATCH) => Misuse::Refused { said },
        _ => return None,
    };
    Some(StopReason::NotServed { slot, pid, misuse })
}

/// Whether the socket has nothing more to read right now (the dead worker's data is all in).
fn would_block(conn: &Option<Conn>) -> bool {
    let Some(c) = conn else { return true };
    let mut probe = [0u8; 1];
    matches!(recv(c.sock.as_raw_fd(), &mut probe, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT), Err(Errno::EAGAIN))
}

impl Drop for ProcessBackend {
    fn drop(&mut self) {
        self.kill_all();
    }
}
