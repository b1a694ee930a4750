//! The interface task code implements, the same for built-in kinds and users' own tasks, in
//! process and in thread mode.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};

use shared::shm::PageSlot;

use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::proto::TaskError;

/// Runs tasks of one type. Implement it for your own task type; the built-in kinds of the
/// `bulkhead` binary implement it too ([`crate::builtin::Builtin`]).
///
/// A handler runs in worker processes (process mode) or on threads of the supervisor
/// (thread mode), so it must be `Send + Sync`. Its value is its configuration: the pool
/// serializes the handler it was built with and every worker process deserializes its own
/// copy from the handshake, so a field (a pattern, a flag) holds the same value in both
/// modes. A field that should not travel (a cache, a connection) is `#[serde(skip)]` and
/// starts from its `Default` in each worker.
///
/// ```
/// # use worker as bulkhead; // the `bulkhead` crate re-exports these; its users write this:
/// use bulkhead::{Handler, TaskContext, TaskError};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Multiply {
///     by: u64,
/// }
///
/// impl Handler for Multiply {
///     type Task = u64;
///     type Output = u64;
///     fn handle(&self, n: u64, _cx: &TaskContext<'_>) -> Result<u64, TaskError> {
///         n.checked_mul(self.by).ok_or_else(|| TaskError::new("overflow"))
///     }
/// }
/// ```
pub trait Handler: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// One task, as the supervisor sends it (postcard on the wire).
    type Task: Serialize + DeserializeOwned + Send + 'static;
    /// What a task produces.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// Names the handler so that a worker serves the handler its supervisor expects. The
    /// default, the type's name, suits any program; it is known before a worker has the
    /// handler's value, which comes with the handshake.
    fn name() -> &'static str {
        std::any::type_name::<Self>()
    }

    /// Runs one task. An `Err` is the task's own failure (recorded as `failed`); a panic or a
    /// crash is the worker's death, recorded as a crash and retried.
    fn handle(&self, task: Self::Task, cx: &TaskContext<'_>) -> Result<Self::Output, TaskError>;
}

/// What a handler may know and tell about the task it runs.
#[derive(Debug)]
pub struct TaskContext<'a> {
    attempt: u32,
    child_group: &'a AtomicI32,
    /// Whether a child group is declared (the worker's parent-death signal switched for it),
    /// apart from the cell's value: a spawn that publishes its group itself may fail before
    /// it stores anything, and the declaration must still be withdrawn exactly once.
    declared: AtomicBool,
    /// The status-page slot the task is published on, where its progress goes.
    page: Option<&'a PageSlot>,
    leaked: AtomicU32,
    /// Records to skip, sorted: those earlier attempts crashed on (`skip_bad_records`).
    skip: &'a [u64],
}

/// What [`TaskContext::at`] says about the record the handler is now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a record an earlier attempt crashed on is skipped only if the handler checks `.skip()`"]
pub struct At {
    skip: bool,
}

impl At {
    /// True when an earlier attempt crashed on this record and the run skips bad records:
    /// leave it out and go on to the next. Processing it anyway kills the worker again, and
    /// that crash is charged like any other.
    pub fn skip(self) -> bool {
        self.skip
    }
}

impl<'a> TaskContext<'a> {
    /// A context for attempt `attempt` whose child process group is published in
    /// `child_group`, with nowhere to report progress to. Engines build these; handlers only
    /// read them.
    pub fn new(attempt: u32, child_group: &'a AtomicI32) -> Self {
        Self {
            attempt,
            child_group,
            declared: AtomicBool::new(false),
            page: None,
            leaked: AtomicU32::new(0),
            skip: &[],
        }
    }

    /// A context for attempt `attempt` of the task published on `slot`: its child process
    /// group and its progress go there.
    #[doc(hidden)]
    pub fn on_page(attempt: u32, slot: &'a PageSlot) -> Self {
        Self {
            attempt,
            child_group: &slot.child_pgid,
            declared: AtomicBool::new(false),
            page: Some(slot),
            leaked: AtomicU32::new(0),
            skip: &[],
        }
    }

    /// The same context, telling the handler to skip the records in `skip` (sorted
    /// ascending, as the supervisor sends them).
    #[doc(hidden)]
    pub fn skipping(self, skip: &'a [u64]) -> Self {
        Self { skip, ..self }
    }

    /// Reports that the task is now on record `index` of the many it processes, and says
    /// whether to skip it. Call it before each record:
    ///
    /// ```
    /// # use worker as bulkhead;
    /// use bulkhead::{TaskContext, TaskError};
    ///
    /// fn handle(records: &[u64], cx: &TaskContext<'_>) -> Result<u64, TaskError> {
    ///     let mut sum = 0;
    ///     for (i, r) in records.iter().enumerate() {
    ///         if cx.at(i).skip() {
    ///             continue;
    ///         }
    ///         sum += r;
    ///     }
    ///     Ok(sum)
    /// }
    /// # let group = std::sync::atomic::AtomicI32::new(0);
    /// # assert_eq!(handle(&[1, 2, 3], &TaskContext::new(1, &group)).unwrap(), 6);
    /// ```
    ///
    /// It costs one store to the status page, no message. When the worker dies on a record
    /// (a segfault, an abort, a timeout), the supervisor reads the index from the page; with
    /// `skip_bad_records` it runs the task again from the start and `at` returns
    /// [`At::skip`] true for that record, which goes into the task's result as `skipped`
    /// with the cause of the crash.
    pub fn at(&self, index: usize) -> At {
        let index = index as u64;
        if let Some(p) = self.page {
            p.set_record(index);
        }
        At { skip: self.skip.binary_search(&index).is_ok() }
    }

    /// Reports `units` more work done (bytes read, iterations, records: whatever the task
    /// counts). It costs a clock read and two stores to the status page, no message: report
    /// as often as is natural. With `stall_timeout`, a task that reports nothing for that
    /// long is taken for wedged and its worker killed (cause `stalled`); the total shows in
    /// `bulkhead status`.
    pub fn progress(&self, units: u64) {
        if let Some(p) = self.page {
            p.advance(units, crate::clock::mono_ns());
        }
    }

    /// 1 for the first attempt, 2 after one crash, and so on.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Declares the process group `pgid` of child processes this task started, so that
    /// whatever ends the task ends them too: a timeout, a cancel, the memory limit, its
    /// worker's crash, a supervisor that dies. Children left in the worker's own process
    /// group (a plain `Command::spawn` in process mode) die with the worker anyway; declare
    /// those that run in a group of their own (`process_group(0)`, `setsid`), and in thread
    /// mode any at all: there a timed-out task's thread cannot be killed, but its declared
    /// group is. One group per task, declared as soon as it exists (a child that runs before
    /// its group is declared is out of reach meanwhile); the declaration ends with the task,
    /// or with [`clear_child_group`](Self::clear_child_group) once the children are gone.
    ///
    /// ```
    /// # use worker as bulkhead;
    /// use std::os::unix::process::CommandExt;
    /// use std::process::Command;
    ///
    /// use bulkhead::{TaskContext, TaskError};
    ///
    /// fn handle(seconds: u32, cx: &TaskContext<'_>) -> Result<i32, TaskError> {
    ///     // A group of its own, so that the tool does not get the terminal's signals.
    ///     let mut child = Command::new("sleep")
    ///         .arg(seconds.to_string())
    ///         .process_group(0)
    ///         .spawn()
    ///         .map_err(|e| TaskError::new(format!("cannot start sleep: {e}")))?;
    ///     // Its pid is its group's id: a timeout of this task now kills it too.
    ///     cx.set_child_group(child.id() as i32);
    ///     let status = child.wait().map_err(|e| TaskError::new(format!("cannot wait: {e}")))?;
    ///     cx.clear_child_group();
    ///     status.code().ok_or_else(|| TaskError::new(format!("sleep ended by {status}")))
    /// }
    /// # let group = std::sync::atomic::AtomicI32::new(0);
    /// # assert_eq!(handle(0, &TaskContext::new(1, &group)).unwrap(), 0);
    /// # assert_eq!(group.load(std::sync::atomic::Ordering::Acquire), 0);
    /// ```
    pub fn set_child_group(&self, pgid: i32) {
        self.declare_child_group();
        self.child_group.store(pgid, Ordering::Release);
    }

    /// For a spawn whose child publishes its own group: the cell it stores its pid in before
    /// it runs anything of its command. A group published by the parent after the spawn
    /// returns leaves a moment in which the command runs unknown to whoever kills the task;
    /// a command that kills its worker in that moment (or a timeout that strikes then) left
    /// its grandchildren running. [`clear_child_group`](Self::clear_child_group) withdraws it.
    pub(crate) fn child_group_cell(&self) -> &AtomicI32 {
        self.declare_child_group();
        self.child_group
    }

    fn declare_child_group(&self) {
        if !self.declared.swap(true, Ordering::AcqRel) {
            crate::startup::child_group_started();
        }
    }

    /// Counts processes the task's command left running (and the worker stopped).
    pub(crate) fn add_leaked(&self, n: u32) {
        self.leaked.fetch_add(n, Ordering::Relaxed);
    }

    /// Processes the task left running, as counted by [`add_leaked`](Self::add_leaked).
    pub(crate) fn leaked(&self) -> u32 {
        self.leaked.load(Ordering::Relaxed)
    }

    /// Withdraws the declaration of [`set_child_group`](Self::set_child_group) once the
    /// children are gone (a group whose id is reused later must not be killed for this
    /// task). The end of the task withdraws it too.
    pub fn clear_child_group(&self) {
        self.child_group.store(0, Ordering::Release);
        if self.declared.swap(false, Ordering::AcqRel) {
            crate::startup::child_group_finished();
        }
    }
}
