//! Tasks one at a time: submit, join in any order, join with a timeout a task that hangs,
//! cancel it (its worker is killed and replaced), and await a handle from async code.
//!
//! ```text
//! cargo run --example submit -- join | hang | async
//! ```

use std::time::Duration;

use bulkhead::{Handler, JoinError, Pool, TaskContext, TaskError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
enum Job {
    /// Doubles a number.
    Double(u32),
    /// Never ends (a deadlock in a library it calls, say).
    Hang,
}

/// Does a job; answers with the result and the pid of the worker that did it.
#[derive(Serialize, Deserialize)]
struct Worker;

impl Handler for Worker {
    type Task = Job;
    type Output = (u32, u32);

    fn handle(&self, job: Job, _cx: &TaskContext<'_>) -> Result<(u32, u32), TaskError> {
        match job {
            Job::Double(n) => Ok((n * 2, std::process::id())),
            Job::Hang => loop {
                std::thread::park();
            },
        }
    }
}

/// Runs a future to its end on this thread, parking while it is pending: the smallest
/// executor, to show that a handle wakes whoever awaits it.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    let mut pending = 0;
    loop {
        if let std::task::Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            println!("ready after {pending} pending poll(s)");
            return v;
        }
        pending += 1;
        std::thread::park();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    bulkhead::serve_if_worker::<Worker>();
    let section = std::env::args().nth(1).unwrap_or_else(|| "join".into());
    match section.as_str() {
        "join" => {
            let pool = Pool::builder().workers(2).build(Worker)?;
            let handles: Vec<_> = (1..=5).map(|n| pool.submit(Job::Double(n))).collect::<Result<_, _>>()?;
            // Joined in reverse: each result waits under its own id.
            for h in handles.into_iter().rev() {
                let id = h.id().to_string();
                let r = h.join()?;
                println!("task {id} {} {}", r.status, r.output.map_or(0, |o| o.0));
            }
        }
        "hang" => {
            let pool = Pool::builder().workers(1).build(Worker)?;
            let before = pool.submit(Job::Double(1))?.join()?.output.expect("ok").1;
            println!("worker before: pid {before}");
            let mut stuck = pool.submit(Job::Hang)?;
            match stuck.join_timeout(Duration::from_millis(300)) {
                Err(JoinError::Timeout { id, .. }) => println!("task {id} timed out, still running"),
                other => return Err(format!("expected a timeout, got {other:?}").into()),
            }
            // Queued behind the hanging task on the only worker.
            let after = pool.submit(Job::Double(21))?;
            stuck.cancel();
            match stuck.join() {
                Err(e @ JoinError::Cancelled { .. }) => println!("{e}"),
                other => return Err(format!("expected a cancel, got {other:?}").into()),
            }
            let r = after.join()?;
            let (value, pid) = r.output.expect("ok");
            println!("task {} {} {value} attempts {} worker after: pid {pid}", r.id, r.status, r.attempts);
        }
        "async" => {
            let pool = Pool::builder().workers(1).build(Worker)?;
            let handle = pool.submit(Job::Double(50))?;
            let r = block_on(handle)?;
            println!("awaited task {} {} {}", r.id, r.status, r.output.map_or(0, |o| o.0));
        }
        other => return Err(format!("unknown section '{other}': join, hang or async").into()),
    }
    Ok(())
}
