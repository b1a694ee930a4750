//! Section 10 of the suite: the library against `procspawn`, in this same process: 10,000 tiny
//! calls batched, 10,000 sequential round trips, cold start to first result, and time per
//! crash-and-replace over a loop of crashing calls. Both serve from this very executable, so
//! `main` calls [`serve`] first.

use std::time::{Duration, Instant};

use bulkhead::{Handler, Pool, Status, TaskContext, TaskError};
use serde::{Deserialize, Serialize};

/// The benchmark's handler: adds one, or crashes its worker.
#[derive(Serialize, Deserialize)]
pub struct Tiny;

/// A call.
#[derive(Serialize, Deserialize, Clone, Copy)]
pub enum Call {
    /// Returns its number plus one.
    Add(u64),
    /// Aborts the worker.
    Crash,
}

impl Handler for Tiny {
    type Task = Call;
    type Output = u64;
    fn handle(&self, call: Call, _: &TaskContext<'_>) -> Result<u64, TaskError> {
        match call {
            Call::Add(n) => Ok(n + 1),
            Call::Crash => std::process::abort(),
        }
    }
}

/// Serves as a bulkhead or a procspawn worker when started as one; returns otherwise.
pub fn serve() {
    bulkhead::serve_if_worker::<Tiny>();
    procspawn::init();
}

fn add_one(n: u64) -> u64 {
    n + 1
}

fn crash(_: ()) -> u64 {
    std::process::abort()
}

/// Sizes of the section.
pub struct LibSizes {
    pub batch: u64,
    pub round_trips: u64,
    pub cold_reps: usize,
    pub crashes: u64,
    pub reps: usize,
}

/// One figure of each system, seconds (or per-item seconds).
#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub batch_s: Vec<f64>,
    pub round_trip_us: Vec<f64>,
    pub cold_ms: Vec<f64>,
    pub crash_ms: Vec<f64>,
}

/// bulkhead's batch: `run` over the range, every record checked.
pub fn bh_batch(workers: usize, n: u64) -> Result<f64, String> {
    let pool = Pool::builder().workers(workers).build(Tiny).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let mut sum = 0u64;
    let mut count = 0u64;
    for r in pool.run((0..n).map(Call::Add)).map_err(|e| e.to_string())? {
        let r = r.map_err(|e| e.to_string())?;
        sum += r.output.ok_or_else(|| format!("task {} ended {}", r.id, r.status))?;
        count += 1;
    }
    let dt = t0.elapsed().as_secs_f64();
    check_sum(count, sum, n)?;
    Ok(dt)
}

fn check_sum(count: u64, sum: u64, n: u64) -> Result<(), String> {
    let want = n * (n + 1) / 2;
    if count != n || sum != want {
        return Err(format!("{count} results summing to {sum}; expected {n} summing to {want}"));
    }
    Ok(())
}

/// Calls procspawn has in flight at once in the batch. Each call in flight holds an IPC
/// channel's descriptors until it is joined, so 10,000 at once ran out of a 20,000-descriptor
/// limit (EMFILE, a panic inside procspawn's `spawn`); this many keep both workers busy.
const PS_IN_FLIGHT: usize = 1_000;

/// procspawn's batch: every call spawned on its pool, joined oldest first once
/// [`PS_IN_FLIGHT`] are waiting.
pub fn ps_batch(workers: usize, n: u64) -> Result<f64, String> {
    let pool = procspawn::Pool::new(workers).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let mut waiting = std::collections::VecDeque::with_capacity(PS_IN_FLIGHT);
    let mut sum = 0u64;
    let mut count = 0u64;
    for i in 0..n {
        if waiting.len() == PS_IN_FLIGHT {
            let h: procspawn::JoinHandle<u64> = waiting.pop_front().expect("the window is full");
            sum += h.join().map_err(|e| e.to_string())?;
            count += 1;
        }
        waiting.push_back(pool.spawn(i, add_one));
    }
    for h in waiting {
        sum += h.join().map_err(|e| e.to_string())?;
        count += 1;
    }
    let dt = t0.elapsed().as_secs_f64();
    pool.shutdown();
    check_sum(count, sum, n)?;
    Ok(dt)
}

/// bulkhead's round trips: `submit` then `join`, one at a time, 1 worker; µs each.
pub fn bh_round_trips(n: u64) -> Result<Vec<f64>, String> {
    let pool = Pool::builder().workers(1).build(Tiny).map_err(|e| e.to_string())?;
    // The first call starts the service and its worker: not a round trip.
    pool.submit(Call::Add(0)).map_err(|e| e.to_string())?.join().map_err(|e| e.to_string())?;
    let mut v = Vec::with_capacity(n as usize);
    for i in 0..n {
        let t0 = Instant::now();
        let r = pool.submit(Call::Add(i)).map_err(|e| e.to_string())?.join().map_err(|e| e.to_string())?;
        v.push(t0.elapsed().as_secs_f64() * 1e6);
        if r.output != Some(i + 1) {
            return Err(format!("round trip {i}: {:?}", r.output));
        }
    }
    Ok(v)
}

/// procspawn's round trips on a pool of 1; µs each.
pub fn ps_round_trips(n: u64) -> Result<Vec<f64>, String> {
    let pool = procspawn::Pool::new(1).map_err(|e| e.to_string())?;
    pool.spawn(0, add_one).join().map_err(|e| e.to_string())?;
    let mut v = Vec::with_capacity(n as usize);
    for i in 0..n {
        let t0 = Instant::now();
        let r = pool.spawn(i, add_one).join().map_err(|e| e.to_string())?;
        v.push(t0.elapsed().as_secs_f64() * 1e6);
        if r != i + 1 {
            return Err(format!("round trip {i}: {r}"));
        }
    }
    pool.shutdown();
    Ok(v)
}

/// From nothing to the first result: build a pool of 1, submit, join; ms.
pub fn bh_cold() -> Result<f64, String> {
    let t0 = Instant::now();
    let pool = Pool::builder().workers(1).build(Tiny).map_err(|e| e.to_string())?;
    let r = pool.submit(Call::Add(1)).map_err(|e| e.to_string())?.join().map_err(|e| e.to_string())?;
    let dt = t0.elapsed().as_secs_f64() * 1e3;
    if r.output != Some(2) {
        return Err(format!("cold start: {:?}", r.output));
    }
    Ok(dt)
}

/// procspawn's: a pool of 1, one call; ms.
pub fn ps_cold() -> Result<f64, String> {
    let t0 = Instant::now();
    let pool = procspawn::Pool::new(1).map_err(|e| e.to_string())?;
    let r = pool.spawn(1, add_one).join().map_err(|e| e.to_string())?;
    let dt = t0.elapsed().as_secs_f64() * 1e3;
    pool.shutdown();
    if r != 2 {
        return Err(format!("cold start: {r}"));
    }
    Ok(dt)
}

/// bulkhead: `n` crashing calls one after another on 1 worker (1 attempt each, so each
/// ends quarantined), then one call that must succeed on the last replacement; ms per crash.
/// `backoff`: `(immediate restarts, base)` of the restart backoff (`None`: the defaults).
pub fn bh_crash_loop(n: u64, backoff: Option<(u32, Duration)>) -> Result<f64, String> {
    let mut b = Pool::builder().workers(1).attempts(1);
    if let Some((after, base)) = backoff {
        b = b.restart_backoff(after, base, Duration::from_secs(2));
    }
    let pool = b.build(Tiny).map_err(|e| e.to_string())?;
    pool.submit(Call::Add(0)).map_err(|e| e.to_string())?.join().map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    for i in 0..n {
        let r = pool.submit(Call::Crash).map_err(|e| e.to_string())?.join().map_err(|e| e.to_string())?;
        if r.status != Status::Quarantined {
            return Err(format!("crash {i} ended {}", r.status));
        }
    }
    let dt = t0.elapsed().as_secs_f64() * 1e3 / n as f64;
    let ok = pool.submit(Call::Add(n)).map_err(|e| e.to_string())?.join().map_err(|e| e.to_string())?;
    if ok.output != Some(n + 1) {
        return Err(format!("the call after the crashes ended {}", ok.status));
    }
    Ok(dt)
}

/// procspawn: the same loop on a pool of 1, which replaces a dead process itself.
pub fn ps_crash_loop(n: u64) -> Result<f64, String> {
    let pool = procspawn::Pool::new(1).map_err(|e| e.to_string())?;
    pool.spawn(0, add_one).join().map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    for i in 0..n {
        if pool.spawn((), crash).join().is_ok() {
            return Err(format!("crash {i} returned"));
        }
    }
    let dt = t0.elapsed().as_secs_f64() * 1e3 / n as f64;
    let ok = pool.spawn(n, add_one).join().map_err(|e| format!("the call after the crashes: {e}"))?;
    pool.shutdown();
    if ok != n + 1 {
        return Err(format!("the call after the crashes returned {ok}"));
    }
    Ok(dt)
}
