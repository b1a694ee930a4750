//! The serve loop of a worker process: handshake, then run assigned tasks and stream their
//! results back, until told to shut down or the supervisor goes away.
//!
//! Results are batched: they are flushed when the worker is about to block for more work,
//! when a millisecond has passed since the last flush, or when the batch is large. Tiny tasks
//! thus share a frame and a system call, while a slow task's result leaves at once. What is
//! executing at any moment is published on the status page (one store per task), so the
//! supervisor knows which task to blame if the worker dies with results still unsent.

use std::collections::VecDeque;
use std::io::{self, IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use serde_bytes::Bytes;
use shared::frame::{self, FrameError, FrameReader, MAX_FRAME};
use shared::proto::{self, FromWorker, Hello, Outcome, PanicReport, Ready, ResultsBatch, ToWorker};
use shared::{PROTOCOL_VERSION, exit};

use crate::clock::mono_ns;
use crate::env;
use crate::error_chain::ErrorChain;
use crate::execute::{Executed, OwnedAssignment, execute, executing, panic_message};
use crate::fault::FaultSite;
use crate::handler::Handler;
use crate::startup::{self, StartupError};
use crate::statuspage::StatusPage;

/// Flush results at least this often while tasks keep coming.
const FLUSH_EVERY_NS: u64 = 1_000_000;
/// Flush results when the batch reaches this size.
const FLUSH_BYTES: usize = 256 << 10;

/// Why a worker stopped serving.
#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error("start-up failed")]
    Startup(#[from] StartupError),
    #[error("protocol version mismatch: supervisor speaks {supervisor}, this worker {PROTOCOL_VERSION}")]
    Version { supervisor: u32 },
    #[error("the supervisor expects handler '{expected}', this worker serves '{actual}'")]
    Handler { expected: String, actual: String },
    #[error("bad handshake: {0}")]
    Handshake(&'static str),
    #[error(
        "cannot decode the handler '{name}' the pool was built with: is this program of another build than the supervisor's?"
    )]
    Config {
        name: &'static str,
        #[source]
        source: postcard::Error,
    },
    #[error("connection to the supervisor failed")]
    Frame(#[from] FrameError),
    #[error("cannot map the status page")]
    Page(#[source] io::Error),
}

impl ServeError {
    fn exit_code(&self) -> i32 {
        match self {
            ServeError::Version { .. } | ServeError::Handler { .. } | ServeError::Config { .. } => {
                exit::WORKER_PROTOCOL_MISMATCH
            }
            _ => exit::WORKER_SETUP_FAILED,
        }
    }
}

/// If this process was started as a worker for handler `H`, serves tasks and exits; otherwise
/// returns at once and the program goes on as usual.
///
/// Call it first thing in `main`, before starting threads or touching the terminal: the
/// worker's start-up (parent-death signal, address-space limit, moving the socket off stdin) assumes
/// a fresh single-threaded process, and whatever runs before the call runs again in every
/// worker. The worker serves the handler value the pool was built with, which comes with the
/// handshake. A program with several handlers calls it once per handler type; only the one
/// the supervisor asked for serves. A worker that gets past every call (none serves the
/// handler asked for) exits when it reaches `PoolBuilder::build`, and the pool stops with a
/// message that names this function.
pub fn serve_if_worker<H: Handler>() {
    let Some(name) = std::env::var_os(env::WORKER) else {
        return;
    };
    if name != H::name() {
        return;
    }
    let code = match serve::<H>() {
        Ok(()) => 0,
        Err(ServeError::Frame(FrameError::Closed)) => 0,
        Err(e) => {
            eprintln!("bulkhead worker {}: {}", std::process::id(), ErrorChain(&e));
            e.exit_code()
        }
    };
    std::process::exit(code);
}

/// Called where a program builds a pool: in a worker process, that means no call to
/// [`serve_if_worker`] served the handler the supervisor asked for, so this worker says so
/// on stderr and exits with [`exit::WORKER_NOT_SERVED`] at once, before the program's own
/// code goes on to run a second time. Outside a worker it returns.
pub fn exit_if_unserved_worker() {
    let Some(name) = std::env::var_os(env::WORKER) else {
        return;
    };
    let name = name.to_string_lossy();
    eprintln!(
        "bulkhead worker {}: started as a worker for handler '{name}', this program built a pool instead of \
         serving: call bulkhead::serve_if_worker::<{name}>() as the first line of main",
        std::process::id()
    );
    std::process::exit(exit::WORKER_NOT_SERVED);
}

/// The worker's end of the connection, reachable from the panic hook, the heartbeat thread
/// and the faults.
struct Link {
    writer: Mutex<UnixStream>,
    page: StatusPage,
    last_write_ns: AtomicU64,
    disconnected: AtomicBool,
}

static LINK: OnceLock<Link> = OnceLock::new();

impl Link {
    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        w.write_all(bytes)?;
        self.last_write_ns.store(mono_ns(), Ordering::Relaxed);
        Ok(())
    }
}

impl FaultSite for Link {
    fn garbage(&self) -> bool {
        // An absurd length prefix, then bytes that decode as nothing.
        let _ = self.send(&[0xff, 0xff, 0xff, 0x7f, 0xde, 0xad, 0xbe, 0xef]);
        true
    }

    fn disconnect(&self) -> bool {
        self.disconnected.store(true, Ordering::SeqCst);
        let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let _ = w.shutdown(std::net::Shutdown::Both);
        true
    }
}

fn serve<H: Handler>() -> Result<(), ServeError> {
    let sock = startup::prepare()?;
    let mut reader = FrameReader::new(MAX_FRAME);
    let (hello, page_fd) = handshake(&sock, &mut reader, H::name())?;
    let handler: H =
        postcard::from_bytes(&hello.config).map_err(|source| ServeError::Config { name: H::name(), source })?;
    let page = StatusPage::open(&page_fd).map_err(ServeError::Page)?;
    drop(page_fd);
    let writer = sock.try_clone().map_err(|e| ServeError::Frame(FrameError::Io(e)))?;
    let link = LINK.get_or_init(|| Link {
        writer: Mutex::new(writer),
        page,
        last_write_ns: AtomicU64::new(mono_ns()),
        disconnected: AtomicBool::new(false),
    });
    startup::guard_children(&link.page)?;
    let output = startup::output();
    if let Some(level) = output.log_level {
        crate::logger::install(level);
    }
    install_panic_hook();
    let threads = hello.threads.clamp(1, link.page.slots().len() as u32);
    if threads > 1 {
        install_culprit_handlers();
    }
    let ready = frame::encode(&FromWorker::Ready(Ready { version: PROTOCOL_VERSION, pid: std::process::id() }))
        .expect("a Ready frame always encodes");
    link.send(&ready).map_err(|e| ServeError::Frame(FrameError::Io(e)))?;
    start_heartbeat(Duration::from_millis(u64::from(hello.heartbeat_ms.max(10))));
    let first_slot = crate::slot::first_from_env();
    crate::slot::set(first_slot);
    let result = if threads == 1 {
        serve_serial(&handler, &sock, &mut reader, link, output.task_marks)
    } else {
        serve_threaded(Arc::new(handler), &sock, &mut reader, link, threads as usize)
    };
    if link.disconnected.load(Ordering::SeqCst) {
        // The `disconnect` fault: stay alive with the socket closed, as a broken worker would.
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    result
}

/// Reads the hello frame (with the status page's fd attached) and checks it.
fn handshake(sock: &UnixStream, reader: &mut FrameReader, name: &str) -> Result<(Hello, OwnedFd), ServeError> {
    let mut page_fd = None;
    let mut buf = [0u8; 4096];
    let body = loop {
        if let Some(body) = reader.next_frame()? {
            break body.to_vec();
        }
        let (n, fd) = recv_with_fd(sock.as_raw_fd(), &mut buf).map_err(|e| ServeError::Frame(FrameError::Io(e)))?;
        if n == 0 {
            return Err(reader.at_eof().into());
        }
        if fd.is_some() {
            page_fd = fd;
        }
        reader.push(&buf[..n]);
    };
    match proto::peek_version(&body) {
        Some(PROTOCOL_VERSION) => {}
        Some(v) => return Err(ServeError::Version { supervisor: v }),
        None => return Err(ServeError::Handshake("the first frame is not a hello")),
    }
    let ToWorker::Hello(hello) = frame::decode::<ToWorker>(&body)? else {
        return Err(ServeError::Handshake("the first frame is not a hello"));
    };
    if hello.handler != name {
        return Err(ServeError::Handler { expected: hello.handler, actual: name.to_string() });
    }
    let page_fd = page_fd.ok_or(ServeError::Handshake("no status page came with the hello"))?;
    Ok((hello, page_fd))
}

fn recv_with_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    loop {
        match recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(msg) => {
                let mut got = None;
                for c in msg.cmsgs().map_err(io::Error::from)? {
                    if let ControlMessageOwned::ScmRights(fds) = c {
                        for raw in fds {
                            // SAFETY: the kernel just installed this descriptor for us.
                            let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                            got.get_or_insert(owned);
                        }
                    }
                }
                return Ok((msg.bytes, got));
            }
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // The default hook prints the message and location to stderr, whose tail the
        // supervisor keeps.
        default(info);
        let seq = executing();
        let message = panic_message(info.payload());
        if let Some(link) = LINK.get() {
            if let Some(seq) = seq {
                link.page.header().culprit.store(seq, Ordering::SeqCst);
            }
            let report = FromWorker::Panic(PanicReport { seq, message });
            if let Ok(bytes) = frame::encode(&report) {
                let _ = link.send(&bytes);
            }
        }
        // A panic must end the worker even on a helper thread, where unwinding would leave
        // the process alive and the task lost.
        std::process::abort();
    }));
}

fn start_heartbeat(every: Duration) {
    let beat = frame::encode(&FromWorker::Heartbeat).expect("a heartbeat always encodes");
    let every_ns = every.as_nanos() as u64;
    let spawned = std::thread::Builder::new().stack_size(64 << 10).spawn(move || {
        let Some(link) = LINK.get() else { return };
        loop {
            std::thread::sleep(every);
            if link.disconnected.load(Ordering::Relaxed) {
                return;
            }
            // Results are proof of life too; only beat when the line has been quiet.
            if mono_ns().saturating_sub(link.last_write_ns.load(Ordering::Relaxed)) + every_ns / 4 < every_ns {
                continue;
            }
            if link.send(&beat).is_err() {
                return;
            }
        }
    });
    if let Err(e) = spawned {
        eprintln!("bulkhead worker: cannot start the heartbeat thread: {e}");
    }
}

fn push_outcome(batch: &mut ResultsBatch, seq: u64, r: Executed, scratch: &[u8]) {
    let result = match r.error {
        None => Ok(Bytes::new(scratch)),
        Some(e) => Err(e),
    };
    batch
        .push(&Outcome { seq, micros: r.micros, result, peak_rss: r.peak_rss, leaked: r.leaked })
        .expect("outcomes always encode");
}

fn serve_serial<H: Handler>(
    handler: &H,
    sock: &UnixStream,
    reader: &mut FrameReader,
    link: &Link,
    task_marks: bool,
) -> Result<(), ServeError> {
    let slot = &link.page.slots()[0];
    let mut batch = ResultsBatch::default();
    let mut out = Vec::with_capacity(4096);
    let mut scratch = Vec::new();
    let mut last_flush = mono_ns();
    let mut read_sock = sock;
    loop {
        while let Some(body) = reader.next_frame()? {
            match proto::decode_to_worker(body)? {
                ToWorker::Run(assignments) => {
                    let mut start = None;
                    for a in &assignments {
                        // One task at a time: a mark before each names the owner of every
                        // stderr line up to the next (with several task threads, only the
                        // log records name theirs). The supervisor names the task it sent
                        // to an idle worker itself, and says so on the page.
                        if task_marks && link.page.header().unmarked.load(Ordering::Acquire) != a.seq {
                            crate::logger::mark_task_start(a.seq);
                        }
                        let r = execute(handler, a, slot, link, &mut scratch, start, |_| {});
                        let end = r.end_ns;
                        start = Some(end);
                        push_outcome(&mut batch, a.seq, r, &scratch);
                        if batch.bytes() >= FLUSH_BYTES || end - last_flush >= FLUSH_EVERY_NS {
                            flush(&mut batch, &mut out, link)?;
                            last_flush = end;
                        }
                    }
                }
                ToWorker::Shutdown => {
                    flush(&mut batch, &mut out, link)?;
                    return Ok(());
                }
                ToWorker::Hello(_) => return Err(ServeError::Handshake("a second hello")),
            }
        }
        // About to block for more work: everything finished so far goes out first.
        flush(&mut batch, &mut out, link)?;
        last_flush = mono_ns();
        match reader.fill_from(&mut read_sock) {
            Ok(0) => return Err(reader.at_eof().into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e).into()),
        }
    }
}

fn flush(batch: &mut ResultsBatch, out: &mut Vec<u8>, link: &Link) -> Result<(), ServeError> {
    if batch.is_empty() {
        return Ok(());
    }
    out.clear();
    batch.take_frame(out);
    link.send(out).map_err(|e| ServeError::Frame(FrameError::Io(e)))
}

struct Queue {
    tasks: Mutex<(VecDeque<OwnedAssignment>, bool)>,
    ready: Condvar,
}

/// Hybrid mode: `threads` threads take tasks from a shared queue, each on its own slot of the
/// status page, each sending its results as they finish (tasks here are waiting-bound, so
/// batching them buys little and would delay results).
fn serve_threaded<H: Handler>(
    handler: Arc<H>,
    sock: &UnixStream,
    reader: &mut FrameReader,
    link: &'static Link,
    threads: usize,
) -> Result<(), ServeError> {
    let queue = Arc::new(Queue { tasks: Mutex::new((VecDeque::new(), false)), ready: Condvar::new() });
    let mut joins = Vec::new();
    for i in 0..threads {
        let (queue, handler) = (queue.clone(), handler.clone());
        let first_slot = crate::slot::get();
        let spawned = std::thread::Builder::new().name(format!("task-{i}")).stack_size(crate::TASK_STACK_BYTES).spawn(
            move || {
                crate::slot::set(first_slot + i as u64);
                let slot = &link.page.slots()[i];
                let mut scratch = Vec::new();
                let mut batch = ResultsBatch::default();
                let mut out = Vec::new();
                loop {
                    let task = {
                        let mut q = queue.tasks.lock().unwrap_or_else(|e| e.into_inner());
                        loop {
                            if let Some(t) = q.0.pop_front() {
                                break Some(t);
                            }
                            if q.1 {
                                break None;
                            }
                            q = queue.ready.wait(q).unwrap_or_else(|e| e.into_inner());
                        }
                    };
                    let Some(t) = task else { return };
                    let r = execute(&*handler, &t.as_assignment(), slot, link, &mut scratch, None, |_| {});
                    push_outcome(&mut batch, t.seq, r, &scratch);
                    if flush(&mut batch, &mut out, link).is_err() {
                        return;
                    }
                }
            },
        );
        match spawned {
            Ok(j) => joins.push(j),
            Err(e) => return Err(ServeError::Frame(FrameError::Io(e))),
        }
    }
    let mut read_sock = sock;
    let result = 'outer: loop {
        loop {
            let body = match reader.next_frame() {
                Ok(Some(body)) => body,
                Ok(None) => break,
                Err(e) => break 'outer Err(e.into()),
            };
            match proto::decode_to_worker(body) {
                Ok(ToWorker::Run(assignments)) => {
                    let mut q = queue.tasks.lock().unwrap_or_else(|e| e.into_inner());
                    q.0.extend(assignments.iter().map(OwnedAssignment::copy));
                    drop(q);
                    queue.ready.notify_all();
                }
                Ok(ToWorker::Shutdown) => break 'outer Ok(()),
                Ok(ToWorker::Hello(_)) => {
                    break 'outer Err(ServeError::Handshake("a second hello"));
                }
                Err(e) => break 'outer Err(e.into()),
            }
        }
        match reader.fill_from(&mut read_sock) {
            Ok(0) => break Err(reader.at_eof().into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(FrameError::Io(e).into()),
        }
    };
    queue.tasks.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
    queue.ready.notify_all();
    if result.is_ok() {
        for j in joins {
            let _ = j.join();
        }
    }
    result
}

/// In hybrid mode several tasks execute at once, so the status page alone cannot say which
/// one killed the worker. These handlers record the task of the thread that took a fatal
/// signal, then hand the signal on (to Rust's stack-overflow reporter, or the default action).
fn install_culprit_handlers() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
    let action = SigAction::new(
        SigHandler::SigAction(on_fatal_signal),
        SaFlags::SA_ONSTACK | SaFlags::SA_SIGINFO | SaFlags::SA_NODEFER,
        SigSet::empty(),
    );
    let mut previous: [Option<SigAction>; 5] = [None; 5];
    for (i, sig) in FATAL.iter().enumerate() {
        // SAFETY: the handler only does async-signal-safe things (atomic stores, sigaction).
        if let Ok(old) = unsafe { sigaction(*sig, &action) } {
            previous[i] = Some(old);
        }
    }
    let _ = PREVIOUS.set(previous);
}

const FATAL: [nix::sys::signal::Signal; 5] = [
    nix::sys::signal::Signal::SIGSEGV,
    nix::sys::signal::Signal::SIGBUS,
    nix::sys::signal::Signal::SIGILL,
    nix::sys::signal::Signal::SIGFPE,
    nix::sys::signal::Signal::SIGABRT,
];

static PREVIOUS: OnceLock<[Option<nix::sys::signal::SigAction>; 5]> = OnceLock::new();

extern "C" fn on_fatal_signal(sig: libc::c_int, _info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    if let Some(seq) = executing()
        && let Some(link) = LINK.get()
    {
        let _ = link.page.header().culprit.compare_exchange(0, seq, Ordering::SeqCst, Ordering::SeqCst);
    }
    // Put the previous action back and return: the faulting instruction runs again (or
    // abort(3) raises again) and meets it.
    if let Some(previous) = PREVIOUS.get()
        && let Some(i) = FATAL.iter().position(|s| *s as libc::c_int == sig)
        && let Some(old) = previous[i]
    {
        // SAFETY: sigaction(2) is async-signal-safe.
        let _ = unsafe { nix::sys::signal::sigaction(FATAL[i], &old) };
        return;
    }
    // SAFETY: signal(2) to the default action is async-signal-safe.
    unsafe { libc::signal(sig, libc::SIG_DFL) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(version: u32, handler: &str) -> Vec<u8> {
        let h = Hello { version, handler: handler.into(), threads: 1, heartbeat_ms: 250, config: Vec::new() };
        frame::encode(&ToWorker::Hello(h)).unwrap()
    }

    /// The handshake refuses a supervisor of another protocol version before reading the rest
    /// of its hello (whose shape may differ), and a supervisor that wants another handler.
    #[test]
    fn a_hello_of_another_version_or_handler_is_refused() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        (&theirs).write_all(&hello(PROTOCOL_VERSION + 1, "builtin")).unwrap();
        let err = handshake(&ours, &mut FrameReader::new(MAX_FRAME), "builtin").unwrap_err();
        assert!(matches!(err, ServeError::Version { supervisor } if supervisor == PROTOCOL_VERSION + 1), "{err}");

        let (ours, theirs) = UnixStream::pair().unwrap();
        (&theirs).write_all(&hello(PROTOCOL_VERSION, "other")).unwrap();
        let err = handshake(&ours, &mut FrameReader::new(MAX_FRAME), "builtin").unwrap_err();
        assert!(matches!(&err, ServeError::Handler { expected, .. } if expected == "other"), "{err}");

        // A hello of the right version without its status page is refused too.
        let (ours, theirs) = UnixStream::pair().unwrap();
        (&theirs).write_all(&hello(PROTOCOL_VERSION, "builtin")).unwrap();
        let err = handshake(&ours, &mut FrameReader::new(MAX_FRAME), "builtin").unwrap_err();
        assert!(matches!(err, ServeError::Handshake(_)), "{err}");
    }
}
