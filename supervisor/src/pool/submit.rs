//! Tasks submitted one at a time: [`Pool::submit`] hands back a [`Handle`] to join, join with a
//! timeout, cancel or (with the `async` feature) await. Behind it, one service thread per pool
//! runs a batch fed by a channel and files each result under its task's id until its handle
//! takes it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use worker::Handler;

use crate::input::source::{TaskSender, TaskSpec, channel};
use crate::pool::{Pool, PoolError, TaskResult};

/// Why a [`Handle`] gave no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// [`Handle::join_timeout`]: the task had not ended in time. It goes on; the handle can
    /// be joined again or cancelled.
    #[error("task {id} had not ended after {waited:?}")]
    Timeout {
        /// The task.
        id: String,
        /// How long the call waited.
        waited: Duration,
    },
    /// The task was cancelled.
    #[error("task {id} was cancelled")]
    Cancelled {
        /// The task.
        id: String,
    },
    /// The pool's run stopped before the task ended (it gave up on a crash loop, or could
    /// not write its results); `reason` says why.
    #[error("the pool stopped before task {id} ended: {reason}")]
    Stopped {
        /// The task.
        id: String,
        /// Why the pool stopped.
        reason: String,
    },
}

/// What the service thread and the handles share.
pub(crate) struct Shared<O> {
    state: Mutex<State<O>>,
    changed: Condvar,
}

struct State<O> {
    /// Results not yet taken, by id.
    done: HashMap<String, TaskResult<O>>,
    /// Ids cancelled and not yet passed to the run.
    cancels: Vec<String>,
    /// Ids cancelled: their handles answer `Cancelled` whatever the run says later.
    cancelled: HashSet<String>,
    /// Ids whose handles were dropped unjoined: their results are not kept.
    forgotten: HashSet<String>,
    /// Set when the run stopped: why.
    stopped: Option<String>,
    /// The pool is being dropped: the service stops.
    closing: bool,
    /// Async waiters, by id.
    #[cfg(feature = "async")]
    wakers: HashMap<String, std::task::Waker>,
}

impl<O> Shared<O> {
    fn lock(&self) -> MutexGuard<'_, State<O>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Files what the service learned and wakes every waiter.
    fn update(&self, f: impl FnOnce(&mut State<O>)) {
        let mut s = self.lock();
        f(&mut s);
        #[cfg(feature = "async")]
        for (_, w) in s.wakers.drain() {
            w.wake();
        }
        drop(s);
        self.changed.notify_all();
    }
}

/// The service thread of a pool that has had tasks submitted.
pub(crate) struct Service<H: Handler> {
    sender: TaskSender<H::Task>,
    shared: Arc<Shared<H::Output>>,
    next_id: u64,
    thread: Option<JoinHandle<()>>,
}

impl<H: Handler> Service<H> {
    /// Starts the service's run on a copy of `pool` (the same handler value and settings).
    pub(crate) fn start(pool: &Pool<H>) -> Result<Self, PoolError> {
        let (sender, source) = channel::<H::Task>().map_err(super::io_err("set up task submission"))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                done: HashMap::new(),
                cancels: Vec::new(),
                cancelled: HashSet::new(),
                forgotten: HashSet::new(),
                stopped: None,
                closing: false,
                #[cfg(feature = "async")]
                wakers: HashMap::new(),
            }),
            changed: Condvar::new(),
        });
        let copy = Pool {
            handler: pool.handler.clone(),
            config: pool.config.clone(),
            cfg: pool.cfg.clone(),
            program: pool.program.clone(),
            service: Mutex::new(None),
        };
        // The run starts here, so that a setting it refuses is this call's error.
        let (started_tx, started_rx) = std::sync::mpsc::channel::<Result<(), PoolError>>();
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("bulkhead-submit".into())
            .spawn(move || {
                let run = copy.run_channel(source);
                let mut run = match run {
                    Ok(run) => {
                        let _ = started_tx.send(Ok(()));
                        run
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                loop {
                    let (cancels, closing) = {
                        let mut s = theirs.lock();
                        (std::mem::take(&mut s.cancels), s.closing)
                    };
                    if closing {
                        // Dropping the run kills its workers.
                        return;
                    }
                    for id in cancels {
                        run.cancel(&id);
                    }
                    run.step();
                    let results: Vec<_> = run.sink.queue.drain(..).collect();
                    if !results.is_empty() {
                        theirs.update(|s| {
                            for r in results {
                                if !s.forgotten.remove(&r.id) {
                                    s.done.insert(r.id.clone(), r);
                                }
                            }
                        });
                    }
                    if run.done {
                        let reason = run
                            .stopped_error()
                            .map_or_else(|| "the pool was closed".to_string(), |e| worker::ErrorChain(&e).to_string());
                        theirs.update(|s| s.stopped = Some(reason));
                        return;
                    }
                }
            })
            .map_err(super::io_err("start the submission thread"))?;
        match started_rx.recv() {
            Ok(Ok(())) => Ok(Self { sender, shared, next_id: 0, thread: Some(thread) }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(PoolError::Io {
                    what: "start the submission thread".into(),
                    source: std::io::Error::other("it ended before its run started"),
                })
            }
        }
    }

    /// Submits one task, named by its submission number.
    pub(crate) fn submit(&mut self, task: H::Task) -> Handle<H::Output> {
        let id = self.next_id.to_string();
        self.next_id += 1;
        self.sender.send(TaskSpec::with_id(id.clone(), task));
        Handle { id, shared: self.shared.clone(), waker: self.sender.waker() }
    }
}

impl<H: Handler> Drop for Service<H> {
    fn drop(&mut self) {
        self.shared.update(|s| s.closing = true);
        self.sender.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.shared.update(|s| {
            s.stopped.get_or_insert_with(|| "the pool was dropped".to_string());
        });
    }
}

/// A task submitted with [`Pool::submit`]: join it for its result (the same record a batch
/// gives: `ok`, `failed` or `quarantined`), with a timeout, cancel it, or await it (with the
/// `async` feature). Dropping a handle leaves the task running; its result is dropped.
///
/// ```standalone_crate
/// # use bulkhead::{Handler, Pool, TaskContext, TaskError};
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # struct Echo;
/// # impl Handler for Echo { type Task = u32; type Output = u32;
/// #   fn handle(&self, t: u32, _: &TaskContext<'_>) -> Result<u32, TaskError> { Ok(t) } }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// bulkhead::serve_if_worker::<Echo>();
/// let pool = Pool::builder().workers(2).build(Echo)?;
/// let a = pool.submit(1)?;
/// let b = pool.submit(2)?;
/// assert_eq!(b.join()?.output, Some(2));
/// assert_eq!(a.join()?.output, Some(1));
/// # Ok(()) }
/// ```
pub struct Handle<O> {
    id: String,
    shared: Arc<Shared<O>>,
    /// Wakes the service thread for a cancel.
    waker: Arc<dyn Fn() + Send + Sync>,
}

impl<O> Drop for Handle<O> {
    fn drop(&mut self) {
        // A joined handle has taken its result; an unjoined one's result is not kept.
        let mut s = self.shared.lock();
        if s.done.remove(&self.id).is_none() && s.stopped.is_none() && !s.cancelled.contains(&self.id) {
            s.forgotten.insert(self.id.clone());
        }
        s.cancelled.remove(&self.id);
    }
}

impl<O> std::fmt::Debug for Handle<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").field("id", &self.id).finish_non_exhaustive()
    }
}

impl<O> Handle<O> {
    /// The task's id: its submission number in this pool, from `"0"`.
    ///
    /// ```
    /// # use bulkhead::{Handler, Mode, Pool, TaskContext, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Double;
    /// # impl Handler for Double { type Task = u32; type Output = u32;
    /// #   fn handle(&self, t: u32, _: &TaskContext<'_>) -> Result<u32, TaskError> { Ok(2 * t) } }
    /// let pool = Pool::builder().mode(Mode::Thread).build(Double)?;
    /// let h = pool.submit(1)?;
    /// let id = h.id().to_string();
    /// assert_eq!(h.join()?.id, id);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The result, or why there is none, if the task has ended.
    fn try_take(&self, s: &mut State<O>) -> Option<Result<TaskResult<O>, JoinError>> {
        if s.cancelled.contains(&self.id) {
            s.done.remove(&self.id);
            return Some(Err(JoinError::Cancelled { id: self.id.clone() }));
        }
        if let Some(r) = s.done.remove(&self.id) {
            return Some(Ok(r));
        }
        s.stopped.as_ref().map(|reason| Err(JoinError::Stopped { id: self.id.clone(), reason: reason.clone() }))
    }

    /// Waits for the task's end.
    ///
    /// ```
    /// # use bulkhead::{Handler, Mode, Pool, TaskContext, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Double;
    /// # impl Handler for Double { type Task = u32; type Output = u32;
    /// #   fn handle(&self, t: u32, _: &TaskContext<'_>) -> Result<u32, TaskError> { Ok(2 * t) } }
    /// let pool = Pool::builder().mode(Mode::Thread).build(Double)?;
    /// let r = pool.submit(4)?.join()?;
    /// assert_eq!(r.output, Some(8));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join(self) -> Result<TaskResult<O>, JoinError> {
        let mut s = self.shared.lock();
        loop {
            if let Some(r) = self.try_take(&mut s) {
                return r;
            }
            s = self.shared.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits at most `timeout` for the task's end; [`JoinError::Timeout`] leaves the task
    /// running and the handle usable.
    ///
    /// ```standalone_crate
    /// # use bulkhead::{Handler, JoinError, Pool, TaskContext, TaskError};
    /// # use std::time::Duration;
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Sleep;
    /// # impl Handler for Sleep { type Task = u64; type Output = ();
    /// #   fn handle(&self, ms: u64, _: &TaskContext<'_>) -> Result<(), TaskError> {
    /// #     std::thread::sleep(Duration::from_millis(ms)); Ok(()) } }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// bulkhead::serve_if_worker::<Sleep>();
    /// let pool = Pool::builder().workers(1).build(Sleep)?;
    /// let mut slow = pool.submit(60_000)?;
    /// assert!(matches!(slow.join_timeout(Duration::from_millis(50)), Err(JoinError::Timeout { .. })));
    /// slow.cancel(); // kills its worker; the pool replaces it
    /// assert!(matches!(slow.join(), Err(JoinError::Cancelled { .. })));
    /// # Ok(()) }
    /// ```
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<TaskResult<O>, JoinError> {
        let deadline = Instant::now() + timeout;
        let mut s = self.shared.lock();
        loop {
            if let Some(r) = self.try_take(&mut s) {
                return r;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(JoinError::Timeout { id: self.id.clone(), waited: timeout });
            }
            s = self.shared.changed.wait_timeout(s, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Cancels the task: a join answers [`JoinError::Cancelled`] from now on. A task no
    /// worker has begun never runs; one a worker process is executing is stopped by killing
    /// that worker, which the pool replaces at once, charging none of its other tasks. In
    /// thread mode a running task's thread cannot be stopped: it is abandoned and replaced.
    ///
    /// ```
    /// # use bulkhead::{Handler, Mode, Pool, TaskContext, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Double;
    /// # impl Handler for Double { type Task = u32; type Output = u32;
    /// #   fn handle(&self, t: u32, _: &TaskContext<'_>) -> Result<u32, TaskError> { Ok(2 * t) } }
    /// use bulkhead::JoinError;
    /// let pool = Pool::builder().mode(Mode::Thread).workers(1).build(Double)?;
    /// let handles: Vec<_> = (0..100u32).map(|i| pool.submit(i)).collect::<Result<_, _>>()?;
    /// handles[99].cancel(); // a join answers `Cancelled` from now on
    /// let mut last = None;
    /// for h in handles {
    ///     last = Some(h.join());
    /// }
    /// assert!(matches!(last, Some(Err(JoinError::Cancelled { .. }))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cancel(&self) {
        self.shared.update(|s| {
            if s.cancelled.insert(self.id.clone()) {
                s.cancels.push(self.id.clone());
            }
        });
        (self.waker)();
    }

    /// Whether the task has ended (a join would not wait).
    ///
    /// ```
    /// # use bulkhead::{Handler, Mode, Pool, TaskContext, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Double;
    /// # impl Handler for Double { type Task = u32; type Output = u32;
    /// #   fn handle(&self, t: u32, _: &TaskContext<'_>) -> Result<u32, TaskError> { Ok(2 * t) } }
    /// let pool = Pool::builder().mode(Mode::Thread).build(Double)?;
    /// let h = pool.submit(1)?;
    /// while !h.is_finished() {
    ///     std::thread::yield_now(); // other work here
    /// }
    /// assert_eq!(h.join()?.output, Some(2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_finished(&self) -> bool {
        let s = self.shared.lock();
        s.cancelled.contains(&self.id) || s.done.contains_key(&self.id) || s.stopped.is_some()
    }
}

/// Awaiting a handle waits for the task without blocking the executor's thread: the pool's
/// service thread wakes the task when the result is in. A waker-based future of std alone:
/// no runtime is assumed.
///
/// ```standalone_crate
/// # use bulkhead::{Handler, Pool, TaskContext, TaskError};
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # struct Echo;
/// # impl Handler for Echo { type Task = u32; type Output = u32;
/// #   fn handle(&self, t: u32, _: &TaskContext<'_>) -> Result<u32, TaskError> { Ok(t) } }
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #   struct W(std::thread::Thread);
/// #   impl std::task::Wake for W { fn wake(self: std::sync::Arc<Self>) { self.0.unpark() } }
/// #   let w = std::task::Waker::from(std::sync::Arc::new(W(std::thread::current())));
/// #   let mut f = std::pin::pin!(f);
/// #   loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut std::task::Context::from_waker(&w)) { return v } std::thread::park() } }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// bulkhead::serve_if_worker::<Echo>();
/// let pool = Pool::builder().workers(1).build(Echo)?;
/// let handle = pool.submit(7)?;
/// let record = block_on(async { handle.await })?; // any executor: tokio, smol, ...
/// assert_eq!(record.output, Some(7));
/// # Ok(()) }
/// ```
#[cfg(feature = "async")]
impl<O> std::future::Future for Handle<O> {
    type Output = Result<TaskResult<O>, JoinError>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let this = self.get_mut();
        let mut s = this.shared.lock();
        if let Some(r) = this.try_take(&mut s) {
            return std::task::Poll::Ready(r);
        }
        s.wakers.insert(this.id.clone(), cx.waker().clone());
        std::task::Poll::Pending
    }
}

/// The result of [`Pool::submit`] when the pool cannot take tasks.
pub type SubmitResult<O> = Result<Handle<O>, PoolError>;

impl<H: Handler> Pool<H> {
    /// Submits one task and returns its [`Handle`] at once, as `concurrent.futures`'
    /// `submit` does. The first submission starts the pool's service: a run of this pool's
    /// settings fed by submissions, on its own thread, with its workers kept until the pool
    /// is dropped (which kills them; unjoined handles then answer [`JoinError::Stopped`]).
    /// Tasks are named by submission number (`"0"`, `"1"`, ...). An error is the service's
    /// failure to start (its results file, say).
    ///
    /// ```standalone_crate
    /// # use bulkhead::{Handler, Pool, TaskContext, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Echo;
    /// # impl Handler for Echo { type Task = u32; type Output = u32;
    /// #   fn handle(&self, t: u32, _: &TaskContext<'_>) -> Result<u32, TaskError> { Ok(t) } }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// bulkhead::serve_if_worker::<Echo>();
    /// let pool = Pool::builder().workers(2).build(Echo)?;
    /// let handles: Vec<_> = (0..10).map(|n| pool.submit(n)).collect::<Result<_, _>>()?;
    /// let sum: u32 = handles.into_iter().map(|h| h.join().map(|r| r.output.unwrap_or(0))).sum::<Result<_, _>>()?;
    /// assert_eq!(sum, 45);
    /// # Ok(()) }
    /// ```
    pub fn submit(&self, task: H::Task) -> SubmitResult<H::Output> {
        let mut service = self.service.lock().unwrap_or_else(|e| e.into_inner());
        if service.is_none() {
            *service = Some(Box::new(Service::start(self)?));
        }
        let service = service.as_mut().and_then(|s| s.downcast_mut::<Service<H>>()).expect("this pool's service");
        Ok(service.submit(task))
    }
}
