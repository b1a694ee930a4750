//! The memory watch: a thread of the supervisor that samples, every [`SAMPLE_INTERVAL`], the
//! resident memory of each worker and of every process of its tasks' trees together, from
//! `/proc`, and kills a tree that has gone past its `--memory-limit` at once, from that thread,
//! before it tells the event loop (which then charges the running task with cause `oom`).
//!
//! The tree is found by parent pids. `/proc/PID/task/TID/children` would list a process's
//! children directly, but kernels built without `CONFIG_PROC_CHILDREN` (this project's
//! development VM among them) lack it, so the watch keeps a table of every pid's parent and
//! reads `/proc/PID/stat` only for a pid it has not seen before (or whose parent has died,
//! which re-parents it): a sample then costs one `readdir` of `/proc` plus one `statm` read
//! per process of the trees. Orphans of a task stay in its worker's tree because the worker
//! is a child subreaper.
//!
//! The sample also keeps, on each busy status-page slot, the largest sum seen while that slot's
//! task ran (its peak), which the worker reports with the task's result.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use shared::shm::PageState;
use worker::procs::ProcTable;
use worker::statuspage::StatusPage;

use crate::runtime::procfs;
use crate::runtime::waker::{Waker, Wakeup, wake_pair};

/// How often the trees are sampled. A task allocating 1 GiB/s grows ~10 MiB between two
/// samples; the supervisor's cost is measured in the benchmark's memory section.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(10);

/// A tree found over its limit, and already killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breach {
    /// The worker's slot.
    pub slot: usize,
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
    task_limits: HashMap<u64, u64>,
    /// Found over its limit and killed: not sampled again.
    breached: bool,
    /// The tree at the last sample, the worker first: what to clean up after its death.
    last_tree: Vec<i32>,
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
    pub fn watch(&self, slot: usize, pid: u32, page: Arc<StatusPage>) {
        self.shared.lock().workers[slot] =
            Some(Watched { pid, page, task_limits: HashMap::new(), breached: false, last_tree: Vec::new() });
    }

    /// Stops watching `slot`'s worker (it died); returns the rest of its tree as last
    /// sampled: processes its tasks may have left behind.
    pub fn unwatch(&self, slot: usize) -> Vec<i32> {
        let w = self.shared.lock().workers[slot].take();
        w.map(|w| w.last_tree.into_iter().skip(1).collect()).unwrap_or_default()
    }

    /// While task `seq` runs on `slot`'s worker, its tree is held to `limit` bytes.
    pub fn limit_task(&self, slot: usize, tasks: impl IntoIterator<Item = (u64, u64)>) {
        if let Some(w) = self.shared.lock().workers[slot].as_mut() {
            w.task_limits.extend(tasks);
        }
    }

    /// Task `seq` on `slot` has ended.
    pub fn task_done(&self, slot: usize, seqs: impl IntoIterator<Item = u64>) {
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
    let mut table = ProcTable::default();
    let mut state = shared.lock();
    loop {
        state = shared.cv.wait_timeout(state, SAMPLE_INTERVAL).unwrap_or_else(|e| e.into_inner()).0;
        if state.stop {
            return;
        }
        if state.workers.iter().flatten().all(|w| w.breached) {
            continue;
        }
        // The event loop takes this lock to start, feed and reap workers, so /proc is read
        // without it: held through a sample, it stopped the loop 15 times in a 300-task crash
        // run, for 0.3 to 108 ms, median 2 ms (strace -T on the loaded 2-core VM), inside the
        // worker-start and crash-to-replacement figures.
        let roots: Vec<(usize, u32)> = state
            .workers
            .iter()
            .enumerate()
            .filter_map(|(i, w)| w.as_ref().filter(|w| !w.breached).map(|w| (i, w.pid)))
            .collect();
        drop(state);
        let refreshed = table.refresh(false).is_ok();
        let sampled: Vec<(usize, u32, Vec<i32>, u64)> = if refreshed {
            roots
                .into_iter()
                .map(|(slot, pid)| {
                    let tree = table.tree(pid as i32);
                    let total = tree.iter().filter_map(|&p| procfs::resident_bytes(Pid::from_raw(p)).ok()).sum();
                    (slot, pid, tree, total)
                })
                .collect()
        } else {
            Vec::new()
        };
        state = shared.lock();
        let before = state.breaches.len();
        let State { workers, breaches, .. } = &mut *state;
        for (slot, pid, tree, total) in sampled {
            // A worker reaped (or replaced) while its tree was read is not this sample's.
            let Some(w) = workers[slot].as_mut().filter(|w| !w.breached && w.pid == pid) else { continue };
            w.last_tree = tree;
            if let Some(b) = sample(&w.last_tree, total, slot, w) {
                w.breached = true;
                breaches.push(b);
            }
        }
        if breaches.len() > before {
            shared.waker.wake();
        }
    }
}

/// Judges one worker's sampled tree, `total` resident bytes: keeps the peaks on its page, and
/// kills the tree when it is over the limit of the tasks it runs.
fn sample(tree: &[i32], total: u64, slot: usize, w: &Watched) -> Option<Breach> {
    // The tree is shared by the tasks it runs: it is held to the largest of their limits.
    let mut limit = None::<u64>;
    for s in w.page.slots() {
        if let PageState::Running { seq, .. } = s.read() {
            s.peak_rss.fetch_max(total, Ordering::AcqRel);
            if let Some(&l) = w.task_limits.get(&seq) {
                limit = Some(limit.map_or(l, |m| m.max(l)));
            }
        }
    }
    let limit = limit?;
    if total <= limit {
        return None;
    }
    // Killed here, at once: every sample interval the loop would take to act is more memory.
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
    Some(Breach { slot, pid: w.pid, limit, peak: total, killed: tree.len() })
}
