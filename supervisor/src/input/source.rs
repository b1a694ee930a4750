//! Where a run's tasks come from: anything that can hand over a few jobs at a time, now or
//! later. An iterator in the library; a JSONL stream parsed on a reader thread in the CLI.
//! Input is pulled as the workers need it, never loaded whole, so a run over ten million
//! tasks holds only a few thousand.

use std::os::fd::RawFd;
use std::sync::Arc;

use serde::Serialize;
use shared::hash::content_id;

pub use crate::input::idset::IdSet;

use crate::engine::{FaultPlan, Job, JobBuilder};
use crate::input::error::{IdOrigin, InputError, Place, Problem};
use crate::runtime::waker::{Waker, Wakeup, wake_pair};

/// What a pull produced.
#[derive(Debug, Clone)]
pub enum Pull {
    /// Jobs were added; more may follow at once.
    Ready,
    /// Nothing more right now; the wake descriptor turns readable when there is.
    Pending,
    /// The input is exhausted.
    End,
    /// The input is broken (a bad line); nothing more will come.
    Failed(Arc<InputError>),
}

/// A stream of jobs for a run.
pub trait TaskSource: Send {
    /// Appends up to `max` jobs to `out`.
    fn pull(&mut self, max: usize, out: &mut Vec<Job>) -> Pull;
    /// A descriptor that turns readable when a `Pending` source has more.
    fn wake_fd(&self) -> Option<RawFd> {
        None
    }
}

/// One task for [`crate::Pool::run`], with an optional id and fault. A bare task converts into
/// one with neither: its id is then its position in the input, counted from 0 (`"0"`, `"1"`,
/// ...), or a hash of its content when the pool asks for content ids
/// ([`crate::PoolBuilder::content_ids`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec<T> {
    /// Unique in the batch; `None` for the task's position (or its content hash).
    pub id: Option<String>,
    /// The task.
    pub task: T,
    /// A fault to inject, for demos and tests.
    pub fault: Option<FaultPlan>,
}

impl<T> From<T> for TaskSpec<T> {
    fn from(task: T) -> Self {
        Self { id: None, task, fault: None }
    }
}

impl<T> TaskSpec<T> {
    /// A task with an id.
    ///
    /// ```
    /// # use bulkhead::{Handler, Mode, Pool, TaskContext, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Double;
    /// # impl Handler for Double { type Task = u32; type Output = u32;
    /// #   fn handle(&self, t: u32, _: &TaskContext<'_>) -> Result<u32, TaskError> { Ok(2 * t) } }
    /// use bulkhead::TaskSpec;
    /// let pool = Pool::builder().mode(Mode::Thread).build(Double)?;
    /// let tasks = [("a.log", 1u32), ("b.log", 2)].map(|(name, n)| TaskSpec::with_id(name, n));
    /// let mut ids: Vec<String> = pool.run(tasks)?.map(|r| r.map(|r| r.id)).collect::<Result<_, _>>()?;
    /// ids.sort();
    /// assert_eq!(ids, ["a.log", "b.log"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_id(id: impl Into<String>, task: T) -> Self {
        Self { id: Some(id.into()), task, fault: None }
    }
}

/// Decides, for each task read, whether it runs: duplicates are errors, tasks that already
/// have a final record (resume) and tasks of other shards are skipped.
#[derive(Debug)]
pub struct Admission {
    seen: IdSet,
    /// Check for duplicate ids; off when the whole input was checked beforehand.
    pub check_duplicates: bool,
    /// Ids that already have a final record.
    pub done: IdSet,
    /// Ids among `done` that run again all the same (`--resume-failed`: their last record is
    /// failed or quarantined), with their count of records.
    pub rerun: std::sync::Arc<std::collections::HashMap<String, u32>>,
    /// Only tasks of this shard `(k, n)` run.
    pub shard: Option<(u32, u32)>,
    /// Tasks skipped because they were done.
    pub skipped_done: u64,
    /// Tasks skipped because another shard runs them.
    pub skipped_shard: u64,
    /// Name a library task without an id by a hash of its content instead of its position,
    /// so that a resumed run knows it whatever its place in the input.
    pub content_ids: bool,
}

impl Default for Admission {
    fn default() -> Self {
        Self::new(IdSet::default(), None)
    }
}

impl Admission {
    /// An admission that skips the ids in `done`.
    pub fn new(done: IdSet, shard: Option<(u32, u32)>) -> Self {
        Self {
            seen: IdSet::default(),
            check_duplicates: true,
            done,
            rerun: Default::default(),
            shard,
            skipped_done: 0,
            skipped_shard: 0,
            content_ids: false,
        }
    }

    /// Whether the task has a final record that stands (not one `--resume-failed` reruns).
    pub fn is_done(&self, id: &str) -> bool {
        !self.done.is_empty() && self.done.contains(id) && !self.rerun.contains_key(id)
    }

    /// Ok(true): run it; Ok(false): skip it; Err: a duplicate id (`origin` says how the task got
    /// it, for the message).
    pub fn admit(&mut self, id: &str, origin: IdOrigin) -> Result<bool, Problem> {
        if let Some((k, n)) = self.shard
            && shared::hash::shard_of(id, n) != k
        {
            self.skipped_shard += 1;
            return Ok(false);
        }
        if self.check_duplicates && !self.seen.insert(id) {
            return Err(Problem::DuplicateId { id: id.to_string(), origin, first: None });
        }
        if self.is_done(id) {
            self.skipped_done += 1;
            return Ok(false);
        }
        Ok(true)
    }
}

/// Turns any iterator of tasks into a source, encoding each task as it is pulled.
pub struct IterSource<I, T> {
    iter: I,
    admission: Admission,
    index: u64,
    _task: std::marker::PhantomData<fn() -> T>,
}

impl<I, T> IterSource<I, T> {
    /// A source over `iter`, admitting through `admission`.
    pub fn new(iter: I, admission: Admission) -> Self {
        Self { iter, admission, index: 0, _task: std::marker::PhantomData }
    }
}

impl<I, T> TaskSource for IterSource<I, T>
where
    I: Iterator + Send,
    I::Item: Into<TaskSpec<T>>,
    T: Serialize,
{
    fn pull(&mut self, max: usize, out: &mut Vec<Job>) -> Pull {
        let mut chunk = Chunker::default();
        while chunk.len() < max {
            let Some(item) = self.iter.next() else {
                chunk.finish(out);
                return Pull::End;
            };
            self.index += 1;
            if let Err(e) = chunk.add(&mut self.admission, self.index, item.into()) {
                chunk.finish(out);
                return Pull::Failed(Arc::new(e));
            }
        }
        chunk.finish(out);
        Pull::Ready
    }
}

/// Encodes tasks into a chunk of jobs, naming and admitting each.
#[derive(Default)]
struct Chunker {
    builder: JobBuilder,
    scratch: Vec<u8>,
}

impl Chunker {
    fn len(&self) -> usize {
        self.builder.len()
    }

    /// Adds task number `index` (from 1), unless it is to be skipped; an error for a duplicate or a
    /// task that does not encode.
    fn add<T: Serialize>(
        &mut self,
        admission: &mut Admission,
        index: u64,
        spec: TaskSpec<T>,
    ) -> Result<(), InputError> {
        let at = |e| InputError::new(Place::Task(index), e);
        self.scratch.clear();
        shared::frame::append(&spec.task, &mut self.scratch).map_err(|e| at(Problem::Encode(e.into())))?;
        let (id, origin) = match spec.id {
            Some(id) => (id, IdOrigin::Given),
            None if admission.content_ids => (content_id(&self.scratch), IdOrigin::Content),
            None => ((index - 1).to_string(), IdOrigin::Position),
        };
        if admission.admit(&id, origin).map_err(at)? {
            let scratch = &self.scratch;
            self.builder
                .push_with(&id, spec.fault, |buf| {
                    buf.extend_from_slice(scratch);
                    Ok::<(), std::convert::Infallible>(())
                })
                .unwrap_or_else(|e| match e {});
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Job>) {
        self.builder.finish(out);
    }
}

/// The sending half of [`channel`]: submit tasks to a run while it runs, from any thread.
#[derive(Debug)]
pub struct TaskSender<T> {
    shared: std::sync::Arc<ChannelShared<T>>,
}

#[derive(Debug)]
struct ChannelShared<T> {
    queue: std::sync::Mutex<(std::collections::VecDeque<TaskSpec<T>>, bool)>,
    wake: Waker,
}

/// The receiving half of [`channel`], handed to [`crate::Pool::run_channel`].
#[derive(Debug)]
pub struct ChannelSource<T> {
    shared: std::sync::Arc<ChannelShared<T>>,
    wake: Wakeup,
    inner: IterState,
}

#[derive(Debug, Default)]
struct IterState {
    admission: Admission,
    index: u64,
}

/// A source fed while the run runs, like `concurrent.futures`' `submit`: send tasks through
/// the [`TaskSender`] (from this or another thread), iterate the run for results, and drop
/// the sender (or call [`TaskSender::close`]) when no more will come.
///
/// ```standalone_crate
/// # use bulkhead::{Pool, Handler, TaskContext, TaskError};
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # struct Echo;
/// # impl Handler for Echo { type Task = u32; type Output = u32;
/// #   fn handle(&self, t: u32, _: &TaskContext<'_>) -> Result<u32, TaskError> { Ok(t) } }
/// bulkhead::serve_if_worker::<Echo>();
/// let pool = Pool::builder().workers(2).build(Echo)?;
/// let (tx, source) = bulkhead::channel::<u32>()?;
/// let mut run = pool.run_channel(source)?;
/// tx.send(7);
/// let first = run.next(); // the result of task 7, one round trip later
/// assert_eq!(first.and_then(|r| r.ok()?.output), Some(7));
/// drop(tx);
/// assert!(run.next().is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn channel<T>() -> std::io::Result<(TaskSender<T>, ChannelSource<T>)> {
    let (read, write) = wake_pair()?;
    let shared = std::sync::Arc::new(ChannelShared { queue: Default::default(), wake: write });
    Ok((TaskSender { shared: shared.clone() }, ChannelSource { shared, wake: read, inner: IterState::default() }))
}

impl<T> TaskSender<T> {
    /// Submits a task.
    ///
    /// ```
    /// # use bulkhead::{Handler, Mode, Pool, TaskContext, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Double;
    /// # impl Handler for Double { type Task = u32; type Output = u32;
    /// #   fn handle(&self, t: u32, _: &TaskContext<'_>) -> Result<u32, TaskError> { Ok(2 * t) } }
    /// let pool = Pool::builder().mode(Mode::Thread).build(Double)?;
    /// let (tx, source) = bulkhead::channel::<u32>()?;
    /// let run = pool.run_channel(source)?;
    /// let feeder = std::thread::spawn(move || (0..10).for_each(|i| tx.send(i))); // dropped: closed
    /// let n = run.count();
    /// feeder.join().expect("the feeder");
    /// assert_eq!(n, 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send(&self, task: impl Into<TaskSpec<T>>) {
        self.shared.queue.lock().unwrap_or_else(|e| e.into_inner()).0.push_back(task.into());
        self.shared.wake.wake();
    }

    /// Wakes the run's loop without a task (for a request that goes by another way).
    pub(crate) fn waker(&self) -> std::sync::Arc<dyn Fn() + Send + Sync>
    where
        T: Send + 'static,
    {
        let shared = self.shared.clone();
        std::sync::Arc::new(move || shared.wake.wake())
    }

    /// No more tasks will come; the run ends when those sent are done.
    ///
    /// ```
    /// # use bulkhead::{Handler, Mode, Pool, TaskContext, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Double;
    /// # impl Handler for Double { type Task = u32; type Output = u32;
    /// #   fn handle(&self, t: u32, _: &TaskContext<'_>) -> Result<u32, TaskError> { Ok(2 * t) } }
    /// let pool = Pool::builder().mode(Mode::Thread).build(Double)?;
    /// let (tx, source) = bulkhead::channel::<u32>()?;
    /// let mut run = pool.run_channel(source)?;
    /// tx.send(1);
    /// tx.close();
    /// assert!(run.next().is_some());
    /// assert!(run.next().is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(&self) {
        self.shared.queue.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.shared.wake.wake();
    }
}

impl<T> Drop for TaskSender<T> {
    fn drop(&mut self) {
        self.close();
    }
}

impl<T> ChannelSource<T> {
    /// Uses the run's admission (resume and duplicate checks).
    pub(crate) fn admit_with(mut self, admission: Admission) -> Self {
        self.inner.admission = admission;
        self
    }
}

impl<T: Serialize + Send> TaskSource for ChannelSource<T> {
    fn pull(&mut self, max: usize, out: &mut Vec<Job>) -> Pull {
        self.wake.drain();
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        let mut chunk = Chunker::default();
        let state = loop {
            if chunk.len() >= max {
                break Pull::Ready;
            }
            let Some(spec) = q.0.pop_front() else {
                break if q.1 { Pull::End } else { Pull::Pending };
            };
            self.inner.index += 1;
            if let Err(e) = chunk.add(&mut self.inner.admission, self.inner.index, spec) {
                break Pull::Failed(Arc::new(e));
            }
        };
        chunk.finish(out);
        state
    }

    fn wake_fd(&self) -> Option<RawFd> {
        use std::os::fd::AsRawFd;
        Some(self.wake.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iter_source_names_tasks_by_position_so_equal_values_both_run() {
        let mut s: IterSource<_, u32> = IterSource::new(vec![5u32, 6, 5].into_iter(), Admission::default());
        let mut out = Vec::new();
        assert!(matches!(s.pull(10, &mut out), Pull::End));
        assert_eq!(out.iter().map(|j| j.id()).collect::<Vec<_>>(), ["0", "1", "2"]);
        // A given id that takes a position's name is a duplicate, named as such.
        let specs = vec![TaskSpec::from(5u32), TaskSpec::with_id("0", 6)];
        let mut s: IterSource<_, u32> = IterSource::new(specs.into_iter(), Admission::default());
        let Pull::Failed(e) = s.pull(10, &mut out) else { panic!("a duplicate must fail the pull") };
        assert!(matches!(&e.problem, Problem::DuplicateId { origin: IdOrigin::Given, .. }), "{e}");
    }

    #[test]
    fn iter_source_hashes_ids_when_asked_and_rejects_duplicates() {
        let admission = Admission { content_ids: true, ..Admission::default() };
        let mut s: IterSource<_, u32> = IterSource::new(vec![1u32, 2, 1].into_iter(), admission);
        let mut out = Vec::new();
        let pulled = s.pull(10, &mut out);
        let Pull::Failed(e) = pulled else { panic!("a duplicate must fail the pull, not {pulled:?}") };
        assert_eq!(e.place, Place::Task(3));
        assert!(matches!(&e.problem, Problem::DuplicateId { id, origin: IdOrigin::Content, .. } if id == out[0].id()));
        assert_eq!(out.len(), 2);
        let mut done = IdSet::default();
        done.insert("b");
        let specs = vec![TaskSpec::with_id("a", 1u8), TaskSpec::with_id("b", 2u8)];
        let mut s: IterSource<_, u8> = IterSource::new(specs.into_iter(), Admission::new(done, None));
        let mut out = Vec::new();
        assert!(matches!(s.pull(10, &mut out), Pull::End));
        assert_eq!(out.iter().map(|j| j.id()).collect::<Vec<_>>(), ["a"]);
    }
}
