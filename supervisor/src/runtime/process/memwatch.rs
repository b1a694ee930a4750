//! The memory watch: a thread of the supervisor that samples, every [`SAMPLE_INTERVAL`], the
//! resident memory of each worker and of every process of its tasks' trees together, from
//! `/proc`, and kills a tree that has gone past its `--memory-limit` at once, from that thread,
//! before it tells the event loop (which then charges the running task with cause `oom`).
//!
//! The tree is found by parent pids, and kept: a process belongs to a worker's tree if its
//! parent did when it was made, and stays in it until it is reaped (orphans of a task are
//! re-parented to the worker, a child subreaper, so they never leave). So a sample looks only
//! at the pids handed out since the last one: `/proc/loadavg` names the last pid the kernel
//! handed out, pids are handed out in increasing order (wrapping at `pid_max`), and the
//! `stat` of each new one says its parent (or that it is a thread). A sample in which no pid
//! was handed out reads only `loadavg` and the trees' `statm`. `/proc` is listed whole only every
//! 100 samples (1 s), when more pids were handed out than are worth probing one by
//! one, or at the first sample (a worker added later is probed for from its own pid on); the
//! listing of `/proc` costs the kernel a walk over every
//! task of the machine, which was most of a sample's cost. Each process of a tree has its
//! `statm` open, read with one `pread` per sample.
//!
//! A tree that grows fast near its limit is sampled every [`FAST_INTERVAL`] instead, and the
//! tree that grew most is read first; a tree so far from its limit (or with none) that even a
//! fast allocator could not reach it before is read less often, down to every
//! [`SLOW_INTERVAL`].
//!
//! The sample also keeps, on each busy status-page slot, the largest sum seen while that slot's
//! task ran (its peak), which the worker reports with the task's result.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use shared::shm::PageState;
use worker::statuspage::StatusPage;

use crate::engine::{Seq, SlotIndex};
use crate::runtime::procfs::{self, LastPid, Statm};
use crate::runtime::waker::{Waker, Wakeup, wake_pair};

/// How often the trees are sampled. A task allocating 1 GiB/s grows ~10 MiB between two
/// samples; the supervisor's cost is measured in the benchmark's memory section.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(10);

/// How often the trees are sampled while one of them, at the rate it grew between its last
/// two samples, would reach its limit within 40 ms: at 1 GiB/s, from 40 MiB under
/// the limit on, so that it is found ~2 MiB past it when the thread wakes on time.
pub const FAST_INTERVAL: Duration = Duration::from_millis(2);

/// See [`FAST_INTERVAL`]: four sample intervals.
const FAST_WITHIN: Duration = Duration::from_millis(40);

/// The longest a tree goes unread: one far from its limit (or with none) is read only when a
/// fast allocator could have reached the limit since, up to this; its peak is then this coarse.
/// Reading each tree process's `statm` every 10 ms was most of the watch's cost: 2.5% of a
/// core for 16 busy trees of 3 processes on the 2-core VM.
pub const SLOW_INTERVAL: Duration = Duration::from_millis(50);

/// The growth a tree far from its limit is assumed capable of, to decide when to read it
/// next: above the fastest allocator measured on the 2-core VM (5.98 GiB/s, touching fresh
/// 2 MiB pages as fast as it could).
const FAST_ALLOCATOR: f64 = 8.0 * (1u64 << 30) as f64;

/// `/proc` is listed whole every this many samples (1 s), whatever the pids say: what the
/// probes of new pids could miss (a fork that had its pid but was not yet in `/proc` for a
/// few samples) is found then.
const FULL_SCAN_EVERY: u32 = 100;

/// More new pids than this in one interval and `/proc` is listed instead of probed.
const MAX_PROBES: i32 = 256;

/// A new pid not yet in `/proc` (a fork in progress, or one that already ended) is looked
/// for again at this many samples.
const PENDING_SAMPLES: u8 = 3;

/// At most this many `statm` descriptors are kept open (beyond it a tree's processes are
/// read by path), well under the 1024 descriptors a process is allowed by default.
const MAX_KEPT: usize = 256;

/// A tree found over its limit, and already killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breach {
    /// The worker's slot.
    pub slot: SlotIndex,
    /// The worker.
    pub pid: u32,
    /// The limit it was held to, in bytes.
    pub limit: u64,
    /// The resident bytes of the tree at the sample that found it over.
    pub peak: u64,
    /// Processes of the tree, the worker included, that were killed.
    pub killed: usize,
}

struct Watched {
    pid: u32,
    page: Arc<StatusPage>,
    /// The limit of each task (by seq) given to this worker, while it may run.
    task_limits: HashMap<Seq, u64>,
    /// Found over its limit and killed: not sampled again.
    breached: bool,
    /// The tree at the last sample, the worker first: what to clean up after its death.
    last_tree: Vec<i32>,
    /// The processes of the tree, the worker first once the sampler has seen it.
    members: Vec<Member>,
    /// The tree's resident bytes at the last sample, and when it was taken.
    last: Option<(u64, Instant)>,
    /// How fast the tree grew between the last two samples, in bytes per second.
    rate: f64,
    /// When it is to be read next ([`SLOW_INTERVAL`]).
    due: Instant,
}

/// A process of a tree.
#[derive(Debug)]
struct Member {
    pid: i32,
    /// Its `statm`, kept open; `None` past [`MAX_KEPT`] (read by path then).
    statm: Option<Statm>,
}

impl Member {
    fn resident(&self) -> std::io::Result<u64> {
        match &self.statm {
            Some(s) => s.resident(),
            None => procfs::resident_bytes(Pid::from_raw(self.pid)),
        }
    }
}

#[derive(Default)]
struct State {
    workers: Vec<Option<Watched>>,
    breaches: Vec<Breach>,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
    waker: Waker,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The watch and its thread; dropping it stops the thread.
pub struct MemWatch {
    shared: Arc<Shared>,
    wakeup: Wakeup,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MemWatch {
    /// Starts the sampling thread for `slots` worker slots.
    pub fn start(slots: usize) -> std::io::Result<Self> {
        let (wakeup, waker) = wake_pair()?;
        let state = State { workers: (0..slots).map(|_| None).collect(), ..State::default() };
        let shared = Arc::new(Shared { state: Mutex::new(state), cv: Condvar::new(), waker });
        let theirs = shared.clone();
        let thread =
            std::thread::Builder::new().name("bulkhead-memwatch".into()).spawn(move || sample_loop(&theirs))?;
        Ok(Self { shared, wakeup, thread: Some(thread) })
    }

    /// Watches the worker `pid` in `slot` (replacing any earlier one there).
    pub fn watch(&self, slot: SlotIndex, pid: u32, page: Arc<StatusPage>) {
        self.shared.lock().workers[slot] = Some(Watched {
            pid,
            page,
            task_limits: HashMap::new(),
            breached: false,
            last_tree: Vec::new(),
            members: Vec::new(),
            last: None,
            rate: 0.0,
            due: Instant::now(),
        });
    }

    /// Stops watching `slot`'s worker (it died); returns the rest of its tree as last
    /// sampled: processes its tasks may have left behind.
    pub fn unwatch(&self, slot: SlotIndex) -> Vec<i32> {
        let w = self.shared.lock().workers[slot].take();
        w.map(|w| w.last_tree.into_iter().skip(1).collect()).unwrap_or_default()
    }

    /// While task `seq` runs on `slot`'s worker, its tree is held to `limit` bytes.
    pub fn limit_task(&self, slot: SlotIndex, tasks: impl IntoIterator<Item = (Seq, u64)>) {
        if let Some(w) = self.shared.lock().workers[slot].as_mut() {
            w.task_limits.extend(tasks);
        }
    }

    /// Task `seq` on `slot` has ended.
    pub fn task_done(&self, slot: SlotIndex, seqs: impl IntoIterator<Item = Seq>) {
        if let Some(w) = self.shared.lock().workers[slot].as_mut() {
            for seq in seqs {
                w.task_limits.remove(&seq);
            }
        }
    }

    /// The descriptor the event loop polls: readable when a breach is waiting.
    pub fn wakeup(&self) -> &Wakeup {
        &self.wakeup
    }

    /// The breaches found since the last call.
    pub fn take_breaches(&self) -> Vec<Breach> {
        self.wakeup.drain();
        std::mem::take(&mut self.shared.lock().breaches)
    }
}

impl Drop for MemWatch {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sample_loop(shared: &Shared) {
    let mut trees = Trees::new();
    let mut state = shared.lock();
    let mut wait = SAMPLE_INTERVAL;
    loop {
        state = shared.cv.wait_timeout(state, wait).unwrap_or_else(|e| e.into_inner()).0;
        if state.stop {
            return;
        }
        wait = SAMPLE_INTERVAL;
        if state.workers.iter().flatten().all(|w| w.breached) {
            continue;
        }
        let before = state.breaches.len();
        let State { workers, breaches, .. } = &mut *state;
        trees.discover(workers);
        // The tree that grew most is read first: it is the one a late read costs most.
        let mut order: Vec<usize> = (0..workers.len()).filter(|&s| workers[s].is_some()).collect();
        let rate = |s: usize| workers[s].as_ref().map_or(0.0, |w| w.rate);
        order.sort_by(|&a, &b| rate(b).total_cmp(&rate(a)));
        for slot in order {
            let Some(w) = workers[slot].as_mut().filter(|w| !w.breached) else { continue };
            // The tree as last found (kept current every wake-up, read or not): what to clean
            // up after the worker's death.
            w.last_tree.clear();
            w.last_tree.extend(w.members.iter().map(|m| m.pid));
            if w.last_tree.first() != Some(&(w.pid as i32)) {
                w.last_tree.insert(0, w.pid as i32);
            }
            if Instant::now() < w.due {
                continue;
            }
            let (total, limit) = read_tree(w, &mut trees);
            let now = Instant::now();
            if let Some((then, at)) = w.last {
                let dt = now.duration_since(at).as_secs_f64();
                w.rate = if dt > 0.0 { total.saturating_sub(then) as f64 / dt } else { w.rate };
            }
            w.last = Some((total, now));
            // Read again when the fastest allocator could have used up the headroom.
            let headroom = limit.map_or(f64::INFINITY, |l| l.saturating_sub(total) as f64);
            let soon = Duration::from_secs_f64((headroom / FAST_ALLOCATOR.max(w.rate)).min(1.0));
            w.due = now + soon.clamp(SAMPLE_INTERVAL, SLOW_INTERVAL);
            let Some(limit) = limit else { continue };
            if total > limit {
                breaches.push(kill_tree(&w.last_tree, SlotIndex(slot), w, limit, total));
                w.breached = true;
            } else if ((limit - total) as f64) < w.rate * FAST_WITHIN.as_secs_f64() {
                wait = FAST_INTERVAL;
                w.due = now;
            }
        }
        if breaches.len() > before {
            shared.waker.wake();
        }
    }
}

/// Which process belongs to which worker's tree.
struct Trees {
    last_pid: Option<LastPid>,
    pid_max: i32,
    /// The last pid seen handed out, at the last probe.
    seen: Option<i32>,
    /// New pids not (yet) in `/proc`, with the samples left to look again.
    pending: Vec<(i32, u8)>,
    /// Each tree's processes: pid → (slot, the worker's pid).
    member_of: HashMap<i32, (usize, u32)>,
    since_scan: u32,
    kept: usize,
}

impl Trees {
    fn new() -> Self {
        let last_pid = LastPid::open()
            .inspect_err(|e| log::debug!("memory watch: no /proc/loadavg ({e}): /proc is listed every sample"))
            .ok();
        Self {
            last_pid,
            pid_max: procfs::pid_max().unwrap_or(1 << 22),
            seen: None,
            pending: Vec::new(),
            member_of: HashMap::new(),
            since_scan: 0,
            kept: 0,
        }
    }

    /// Brings the trees up to date with the processes made since the last sample.
    fn discover(&mut self, workers: &mut [Option<Watched>]) {
        // The workers themselves: each tree's first member. A new one's children may have been
        // made before it was watched, but never before it: their pids come after its own, so
        // the probes start at the earliest new worker's pid (a replacement after a crash is
        // found by a few probes; listing /proc for it cost every crash-and-replace a read of
        // every process's `stat`, ~90 opens on the 2-core VM, while procspawn made ~280
        // system calls a crash in all).
        let mut new_root = false;
        let mut first_root: Option<i32> = None;
        for (slot, w) in workers.iter_mut().enumerate() {
            if let Some(w) = w.as_mut().filter(|w| w.members.is_empty()) {
                self.member_of.insert(w.pid as i32, (slot, w.pid));
                w.members.push(Member { pid: w.pid as i32, statm: None });
                new_root = true;
                first_root = Some(first_root.map_or(w.pid as i32, |r| r.min(w.pid as i32)));
            }
        }
        // Descriptors of a worker no longer watched were closed with it.
        self.kept = workers.iter().flatten().flat_map(|w| &w.members).filter(|m| m.statm.is_some()).count();
        let now = self.last_pid.as_ref().and_then(|l| l.read().ok());
        self.since_scan += 1;
        // Probe the pids after `from`: the last one seen, or just before a new worker's own.
        let from = match (self.seen, first_root) {
            (Some(seen), Some(root)) => {
                // Which comes first, counting back from `now` (pids wrap at pid_max)?
                let back = |p: i32| now.map_or(i32::MAX, |n| (n - p).rem_euclid(self.pid_max));
                Some(if back(root - 1) > back(seen) { root - 1 } else { seen })
            }
            (seen, None) => seen,
            (None, Some(_)) => None,
        };
        let probes = match (from, now) {
            (Some(from), Some(now)) => (now - from).rem_euclid(self.pid_max),
            _ => i32::MAX,
        };
        let mut found = Vec::new();
        // A first watch (nothing seen yet) lists /proc too: probes need a starting point.
        if (new_root && self.seen.is_none()) || self.since_scan >= FULL_SCAN_EVERY || probes > MAX_PROBES {
            self.since_scan = 0;
            self.pending.clear();
            // What is left of workers no longer watched.
            self.member_of.retain(|_, &mut (slot, root)| workers[slot].as_ref().is_some_and(|w| w.pid == root));
            let mut pids = Vec::new();
            match worker::procs::all_pids(&mut pids) {
                Ok(()) => {
                    for pid in pids {
                        // A member keeps its place: its descriptor says when it is gone.
                        if !self.member_of.contains_key(&pid) {
                            self.probe(pid, &mut found);
                        }
                    }
                }
                Err(e) => log::debug!("memory watch: cannot list /proc: {e}"),
            }
        } else if let (Some(from), Some(_)) = (from, now) {
            for (pid, left) in std::mem::take(&mut self.pending) {
                if left > 0 {
                    self.probe_again(pid, left - 1, &mut found);
                }
            }
            // The first `known` probes (from a new worker's pid up to the last seen) cover pids
            // already handed out at the last sample: their members stay as they are.
            let known = match (self.seen, now) {
                (Some(seen), Some(now)) => probes - (now - seen).rem_euclid(self.pid_max),
                _ => 0,
            };
            for i in 1..=probes {
                let pid = (from + i).rem_euclid(self.pid_max);
                match self.member_of.get(&pid) {
                    // A watched worker itself: it holds its pid while it is watched.
                    Some(&(slot, root))
                        if root as i32 == pid && workers[slot].as_ref().is_some_and(|w| w.pid == root) =>
                    {
                        continue;
                    }
                    Some(_) if i <= known => continue,
                    _ => {}
                }
                if i > known {
                    // A pid handed out again: what had it before is gone.
                    self.forget(pid, workers);
                }
                self.probe_again(pid, PENDING_SAMPLES, &mut found);
            }
        }
        self.seen = now;
        // Parents first: a child whose parent is new too joins once its parent has.
        loop {
            let before = found.len();
            found.retain(|&(pid, ppid)| {
                let Some(&(slot, root)) = self.member_of.get(&ppid) else { return true };
                // (A parent of a worker no longer watched: in no tree.)
                if let Some(w) = workers[slot].as_mut().filter(|w| w.pid == root) {
                    self.member_of.insert(pid, (slot, root));
                    w.members.push(Member { pid, statm: None });
                }
                false
            });
            if found.len() == before {
                break;
            }
        }
        // The new members' descriptors.
        for w in workers.iter_mut().flatten() {
            for i in 0..w.members.len() {
                if w.members[i].statm.is_none() && self.kept < MAX_KEPT {
                    let pid = w.members[i].pid;
                    if let Ok(s) = Statm::open(Pid::from_raw(pid)) {
                        w.members[i].statm = Some(s);
                        self.kept += 1;
                    }
                }
            }
        }
    }

    /// Reads a new pid's parent into `found`; a pid not in `/proc` is looked for again later
    /// (`left` more samples), a thread's id never.
    fn probe_again(&mut self, pid: i32, left: u8, found: &mut Vec<(i32, i32)>) {
        if !self.probe(pid, found) && left > 0 {
            self.pending.push((pid, left));
        }
    }

    /// Reads `pid`'s parent into `found` (false if it is not in `/proc`).
    fn probe(&mut self, pid: i32, found: &mut Vec<(i32, i32)>) -> bool {
        if pid <= 0 {
            return true;
        }
        match worker::procs::stat(Pid::from_raw(pid)) {
            Ok(s) if s.thread => true,
            Ok(s) => {
                found.push((pid, s.ppid.as_raw()));
                true
            }
            Err(_) => false,
        }
    }

    /// Drops what is known of `pid` (it is gone, or its number was handed out again).
    fn forget(&mut self, pid: i32, workers: &mut [Option<Watched>]) {
        if let Some((slot, root)) = self.member_of.remove(&pid)
            && let Some(w) = workers[slot].as_mut().filter(|w| w.pid == root)
            && pid != root as i32
        {
            w.members.retain(|m| m.pid != pid);
        }
    }

    /// A member's process was reaped.
    fn gone(&mut self, m: &Member) {
        self.member_of.remove(&m.pid);
    }
}

/// Reads one worker's tree: its resident bytes, and the limit it is held to now (the largest
/// of the limits of the tasks it runs); keeps the peaks on its page. A process reaped since the
/// last sample leaves the tree.
fn read_tree(w: &mut Watched, trees: &mut Trees) -> (u64, Option<u64>) {
    let mut total = 0u64;
    let root = w.pid as i32;
    w.members.retain(|m| match m.resident() {
        Ok(b) => {
            total += b;
            true
        }
        // The worker itself stays: its death is the reaper's to tell.
        Err(_) if m.pid == root => true,
        Err(_) => {
            trees.gone(m);
            false
        }
    });
    // The tree is shared by the tasks it runs: it is held to the largest of their limits.
    let mut limit = None::<u64>;
    for s in w.page.slots() {
        if let PageState::Running { seq, .. } = s.read() {
            s.peak_rss.fetch_max(total, Ordering::AcqRel);
            if let Some(&l) = w.task_limits.get(&Seq(seq)) {
                limit = Some(limit.map_or(l, |m| m.max(l)));
            }
        }
    }
    (total, limit)
}

/// Kills a tree found over its limit, at once: every sample interval the loop would take to
/// act is more memory.
fn kill_tree(tree: &[i32], slot: SlotIndex, w: &Watched, limit: u64, total: u64) -> Breach {
    let _ = killpg(Pid::from_raw(w.pid as i32), Signal::SIGKILL);
    for s in w.page.slots() {
        let pgid = s.child_pgid.load(Ordering::Acquire);
        if pgid > 0 {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
    for &p in tree {
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
    Breach { slot, pid: w.pid, limit, peak: total, killed: tree.len() }
}
