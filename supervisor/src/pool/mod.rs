//! The public face of the engine: build a [`Pool`] with a mode and policies, run a batch from
//! any iterator, get results as they finish. The `bulkhead` command line runs through this
//! same API; there is one engine.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::exit;
use shared::proto::TaskError;
use shared::record::{Conclusion, Crash, Record, RecordRef, Status};
use shared::task::BuiltinOutput;
use worker::Handler;

use crate::engine::config::{MAX_TASK_BYTES, RetryRules};
use crate::engine::inject::Inject;
use crate::engine::lifecycle::{RunEvent, Timed};
use crate::engine::restart::RestartPolicy;
use crate::engine::{
    Counts, Ending, Engine, EngineConfig, Finished, Interrupt, Mode, Seq, Sink, StopReason, WorkerLine,
};
use crate::input::source::{Admission, ChannelSource, IterSource, Pull, TaskSource, TaskSpec};
use crate::output::control::{ControlServer, StatusSnapshot};
use crate::output::events::{EventsError, EventsFile};
use crate::output::failure::OutputFailure;
use crate::output::files::{PathError, Role};
use crate::output::journal::{Journal, JournalError, ResultsTarget, Resumed};
use crate::output::progress::Progress;
use crate::runtime::process::ProcessBackend;
use crate::runtime::process::spawn::{SpawnConfig, WorkerProgram};
use crate::runtime::signals::Signals;
use crate::runtime::tally::TallyReport;
use crate::runtime::thread_mode::ThreadBackend;
use crate::runtime::{Backend, Hooks, PollSet, Runtime};
use worker::clock::mono_ns;

mod submit;
pub use submit::{Handle, JoinError, SubmitResult};

/// A task's final record: its status, attempts, output or error, and every crash.
///
/// ```
/// # use bulkhead::{Handler, Mode, Pool, TaskContext, TaskError};
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # struct Half;
/// # impl Handler for Half { type Task = u32; type Output = u32;
/// #   fn handle(&self, t: u32, _: &TaskContext<'_>) -> Result<u32, TaskError> {
/// #     if t % 2 == 0 { Ok(t / 2) } else { Err(TaskError::new("odd")) } } }
/// use bulkhead::{Status, TaskResult};
/// let pool = Pool::builder().mode(Mode::Thread).build(Half)?;
/// let results: Vec<TaskResult<u32>> = pool.run([4u32, 5])?.collect::<Result<_, _>>()?;
/// for r in &results {
///     match r.status {
///         Status::Ok => println!("task {}: {:?}", r.id, r.output),
///         Status::Failed => println!("task {} failed: {:?}", r.id, r.error),
///         Status::Quarantined => println!("task {} crashed: {:?}", r.id, r.crashes),
///     }
/// }
/// assert_eq!(results.iter().filter(|r| r.status == Status::Ok).count(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type TaskResult<O> = Record<O>;

/// Options for a [`Pool`].
#[derive(Clone)]
pub struct PoolBuilder {
    mode: Mode,
    workers: usize,
    threads_per_worker: u32,
    attempts: u32,
    timeout: Option<Duration>,
    stall_timeout: Option<Duration>,
    address_space_limit: Option<u64>,
    memory_limit: Option<u64>,
    restart: RestartPolicy,
    heartbeat: Duration,
    heartbeat_timeout: Duration,
    grace: Duration,
    retry_failed: bool,
    retry: RetryRules,
    timeout_percent: Option<u32>,
    inject: Option<Inject>,
    results: Option<ResultsTarget>,
    resume: bool,
    resume_failed: bool,
    events: Option<PathBuf>,
    handle_signals: bool,
    program: Option<WorkerProgram>,
    shard: Option<(u32, u32)>,
    control: Option<PathBuf>,
    progress: bool,
    expected_total: Option<u64>,
    reap_orphans: bool,
    seed: u64,
    content_ids: bool,
    max_task_bytes: usize,
    max_tasks_per_worker: Option<u64>,
    max_worker_memory: Option<u64>,
    halt: Option<crate::engine::halt::Halt>,
    skip_bad_records: bool,
    worker_output: WorkerOutput,
    worker_log_level: log::LevelFilter,
}

/// Where what a worker process writes on stderr goes, with its handler's `log` records (a
/// worker installs a logger that forwards them).
///
/// Each line is named by its worker and its task: `[worker 1 task 17] text` (a record:
/// `[worker 1 task 17] WARN target: message`). With several task threads per worker
/// ([`PoolBuilder::threads_per_worker`]) only `log` records name their task, since the
/// threads' raw writes share one stderr. Process mode only: in thread mode the handlers write
/// on this process's own stderr and log through this process's logger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkerOutput {
    /// Every line goes to this process's stderr as it comes, prefixed (the default).
    #[default]
    Forward,
    /// A task's lines are kept with its result, in [`TaskResult::log`] (over all its
    /// attempts, so a crashed attempt's last words are there too); nothing is printed for
    /// them. Lines that belong to no task still go to stderr, prefixed. Process mode only.
    Capture,
    /// Every line goes to this process's `log` (target `bulkhead::worker`): a record at its
    /// own level, a raw line at debug level. Tasks are not marked, so raw lines name only
    /// their worker.
    Log,
}

impl std::fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuilder").field("mode", &self.mode).field("workers", &self.workers).finish_non_exhaustive()
    }
}

impl Default for PoolBuilder {
    fn default() -> Self {
        Self {
            mode: Mode::Process,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            threads_per_worker: 1,
            attempts: 3,
            timeout: None,
            stall_timeout: None,
            address_space_limit: None,
            memory_limit: None,
            restart: RestartPolicy::default(),
            heartbeat: Duration::from_millis(250),
            heartbeat_timeout: Duration::from_secs(2),
            grace: Duration::from_secs(10),
            retry_failed: false,
            retry: RetryRules::default(),
            timeout_percent: None,
            inject: None,
            results: None,
            resume: false,
            resume_failed: false,
            events: None,
            handle_signals: false,
            program: None,
            shard: None,
            control: None,
            progress: false,
            expected_total: None,
            halt: None,
            reap_orphans: false,
            seed: 0,
            content_ids: false,
            max_task_bytes: MAX_TASK_BYTES,
            max_tasks_per_worker: None,
            max_worker_memory: None,
            skip_bad_records: false,
            worker_output: WorkerOutput::Forward,
            worker_log_level: log::LevelFilter::Info,
        }
    }
}

/// Why a pool could not be built or a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The results file cannot be used.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The events file cannot be used.
    #[error(transparent)]
    Events(#[from] EventsError),
    /// Output paths that would destroy a file (two roles on one file, an unsafe symlink).
    #[error(transparent)]
    Paths(#[from] PathError),
    /// A setting is out of range, or settings contradict each other.
    #[error("invalid setting")]
    Invalid(#[from] SettingError),
    /// The handler cannot be serialized for the workers (a field whose `Serialize` fails,
    /// or a configuration larger than a message may be).
    #[error("cannot serialize the handler '{name}' to send it to the workers")]
    Handler {
        /// The handler's name.
        name: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The system refused something the run needs.
    #[error("cannot {what}")]
    Io {
        /// What.
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A setting a pool cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    /// Workers out of range.
    #[error("workers must be 1 to {max}, not {given}")]
    Workers {
        /// What was asked for.
        given: usize,
        /// The most a pool takes.
        max: usize,
    },
    /// No attempt at all.
    #[error("attempts must be at least 1")]
    NoAttempts,
    /// Threads per worker out of range.
    #[error("threads per worker must be 1 to {max}, not {given}")]
    ThreadsPerWorker {
        /// What was asked for.
        given: u32,
        /// The most a worker's status page has room for.
        max: u32,
    },
    /// An address-space limit a worker cannot even start under.
    #[error("address-space limit {} is below the {} a worker needs to start", crate::engine::cause::size(*limit), crate::engine::cause::size(*min))]
    AddressSpaceLimitTooSmall {
        /// The limit, in bytes.
        limit: u64,
        /// The smallest that works, in bytes.
        min: u64,
    },
    /// Task threads whose stacks alone do not fit under the address-space limit: every worker
    /// would fail to start its threads.
    #[error(
        "{threads} task threads per worker reserve {} of stack ({} each), and a worker needs {} in all, over the address-space limit of {}",
        crate::engine::cause::size(*stacks),
        crate::engine::cause::size(worker::TASK_STACK_BYTES as u64),
        crate::engine::cause::size(*need),
        crate::engine::cause::size(*limit)
    )]
    StacksOverAddressSpace {
        /// Task threads per worker.
        threads: u32,
        /// Their stacks together, in bytes.
        stacks: u64,
        /// What the worker needs in all, in bytes.
        need: u64,
        /// The limit, in bytes.
        limit: u64,
    },
    /// A memory limit below what an idle worker alone keeps resident.
    #[error(
        "memory limit {} is below the {} a worker needs resident by itself",
        crate::engine::cause::size(*limit),
        crate::engine::cause::size(*min)
    )]
    MemoryLimitTooSmall {
        /// The limit, in bytes.
        limit: u64,
        /// The smallest that works, in bytes.
        min: u64,
    },
    /// A task timeout too short for any task to finish: dispatching a task and hearing its
    /// result alone take about a millisecond, so every task would be charged a timeout.
    #[error("timeout {given:?} is below the {min:?} a task needs to be started and heard from")]
    TimeoutTooShort {
        /// What was asked for.
        given: Duration,
        /// The shortest accepted.
        min: Duration,
    },
    /// A shard that does not exist.
    #[error("shard {k}/{n}: K must be below N")]
    Shard {
        /// The shard.
        k: u32,
        /// The shard count.
        n: u32,
    },
    /// Resume without a results file to resume from.
    #[error("resume needs a results file")]
    ResumeWithoutResults,
    /// A memory or address-space limit in thread mode, where the workers are threads of this
    /// process and nothing bounds one thread's memory.
    #[error("thread mode cannot apply {limit}: its workers share this process's memory (use process mode)")]
    LimitInThreadMode {
        /// Which limit.
        limit: &'static str,
    },
    /// Skipping bad records in thread mode, where a crash on a record ends this process and
    /// no attempt follows to skip it.
    #[error(
        "thread mode cannot skip bad records: a crash on a record ends this process, leaving no attempt to \
         skip it in (use process mode)"
    )]
    SkipBadRecordsInThreadMode,
    /// A worker recycled before it could run a single task.
    #[error("max tasks per worker must be at least 1")]
    NoTasksPerWorker,
    /// Capturing worker output in thread mode, where the handlers write on this process's
    /// own stderr.
    #[error(
        "thread mode cannot capture worker output: its handlers write on this process's own stderr (use process mode)"
    )]
    CaptureInThreadMode,
    /// A task input limit no task could meet, or one above what a message can carry.
    #[error("task input limit must be 1 to {max} bytes, not {given}")]
    TaskLimit {
        /// What was asked for.
        given: usize,
        /// The most a message carries.
        max: usize,
    },
}

/// The shortest task timeout a pool takes.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);

/// The largest serialized handler a handshake carries (the rest of its frame is small).
const MAX_CONFIG: usize = (shared::MAX_FRAME as usize) / 2;

/// The most workers a pool takes.
const MAX_WORKERS: usize = 4096;

/// The smallest address-space limit a worker is given: below it, start-up itself fails (the
/// small worker needs about 6 MiB of address space, `bulkhead` serving as its own about 8),
/// which would only show as workers dying at once until the restart limit.
pub const MIN_ADDRESS_SPACE_LIMIT: u64 = 16 << 20;

/// The smallest memory limit a pool takes: an idle worker keeps 2.6 MiB resident (the small
/// worker; `bulkhead` serving as its own, 3.3 MiB), and one running a task more (its stack,
/// buffers, a shell's `sh`); below 8 MiB the first sample of a busy worker would kill it.
pub const MIN_MEMORY_LIMIT: u64 = 8 << 20;

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> PoolError {
    let what = what.into();
    move |source| PoolError::Io { what, source }
}

impl PoolBuilder {
    /// Process (default) or thread mode.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().mode(Mode::Thread);
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }
    /// Worker processes (threads in thread mode); default: available cores.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().workers(4);
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }
    /// Hybrid mode: each worker process runs `t` tasks at once on threads (for
    /// waiting-bound work); a crash loses only that worker's tasks, which are re-run.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().workers(2).threads_per_worker(8);
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn threads_per_worker(mut self, t: u32) -> Self {
        self.threads_per_worker = t;
        self
    }
    /// Attempts per task before quarantine (crashes and timeouts count); default 3.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().attempts(5);
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn attempts(mut self, n: u32) -> Self {
        self.attempts = n;
        self
    }
    /// Per-task wall-clock limit. In process mode the worker running a late task is killed
    /// and replaced, and the attempt counts as a crash. In thread mode a thread cannot be
    /// killed: a late task's thread is abandoned, still running until the process exits, and
    /// replaced ([`build`](Self::build) warns of it through `log`).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().timeout(Duration::from_secs(30));
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }
    /// Address-space limit (`RLIMIT_AS`) of each worker process and of each process its tasks
    /// start, in bytes; at least [`MIN_ADDRESS_SPACE_LIMIT`]. An allocation past it fails,
    /// and the crash cause is `oom`. It bounds what a process *reserves*, not what it uses:
    /// programs that reserve address space they never touch fail under it (a JVM's thread
    /// stacks and heap, Go's allocator, V8, AddressSanitizer, an untouched large `mmap`), and
    /// it bounds each process alone, not a task's processes together.
    /// Process mode only: thread mode refuses it at [`build`](Self::build), since nothing
    /// bounds the memory of one thread.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().address_space_limit(2 << 30);
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn address_space_limit(mut self, bytes: u64) -> Self {
        self.address_space_limit = Some(bytes);
        self
    }
    /// The resident memory each worker and every process of its tasks may use together, in
    /// bytes; at least [`MIN_MEMORY_LIMIT`]. The supervisor samples the trees from `/proc`
    /// every few milliseconds; a tree found past the limit is killed whole, and the running
    /// task is charged a crash with cause `oom` (the limit and the peak seen). Address space
    /// that is reserved and never touched costs nothing here, unlike
    /// [`address_space_limit`](Self::address_space_limit). Process mode only.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().memory_limit(512 << 20);
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }
    /// Give up when more than `n` restarts happen within `period` (default 100 in 10 s).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().max_restarts(20, Duration::from_secs(60));
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn max_restarts(mut self, n: u32, period: Duration) -> Self {
        self.restart.max_restarts = n;
        self.restart.period_ns = period.as_nanos() as u64;
        self
    }
    /// How a slot whose workers keep dying without doing any good, and with no task to blame,
    /// is restarted (a worker that cannot start, dies before its handshake or between tasks:
    /// a program that would respawn in a tight loop): its first `immediate` such deaths in a
    /// row are replaced at once, then each replacement waits a backoff from `base`, doubling,
    /// up to `max` (with jitter, and kept short enough that a crash loop still reaches
    /// [`max_restarts`](Self::max_restarts)). A worker that finished a task or served a second
    /// resets the count. A worker killed by the task it was executing is replaced at once
    /// whatever this says: that task is charged an attempt, and its attempts bound how often
    /// it can happen. Default: 5, 10 ms, 2 s.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let builder = bulkhead::Pool::builder().restart_backoff(5, Duration::from_millis(10), Duration::from_secs(1));
    /// # let _ = builder;
    /// ```
    pub fn restart_backoff(mut self, immediate: u32, base: Duration, max: Duration) -> Self {
        self.restart.immediate_restarts = immediate;
        self.restart.backoff_base_ns = base.as_nanos() as u64;
        self.restart.backoff_max_ns = max.as_nanos() as u64;
        self
    }
    /// How often workers send heartbeats, and after how much silence one counts as
    /// unresponsive (default 250 ms and 2 s).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().heartbeat(Duration::from_millis(100), Duration::from_secs(1));
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn heartbeat(mut self, every: Duration, timeout: Duration) -> Self {
        self.heartbeat = every;
        self.heartbeat_timeout = timeout;
        self
    }
    /// Time running tasks get to finish after SIGINT, SIGTERM and the like (with
    /// [`handle_signals`](Self::handle_signals)); default 10 s.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().handle_signals(true).grace(Duration::from_secs(30));
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn grace(mut self, d: Duration) -> Self {
        self.grace = d;
        self
    }
    /// Kills a worker whose running task has reported no progress
    /// ([`TaskContext::progress`](crate::TaskContext::progress)) for `d`, its start included;
    /// the task is charged an attempt with cause `stalled`. A task that never reports
    /// progress is stalled once it runs `d`. Off by default.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().stall_timeout(Duration::from_secs(60));
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn stall_timeout(mut self, d: Duration) -> Self {
        self.stall_timeout = Some(d);
        self
    }

    /// Recycling: retire each worker once it has been handed `n` tasks and start a fresh
    /// one, charging no task and waiting no backoff (Python's `maxtasksperchild`). Each
    /// retirement is a `worker_retired` event. Off by default.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().max_tasks_per_worker(1_000);
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn max_tasks_per_worker(mut self, n: u64) -> Self {
        self.max_tasks_per_worker = Some(n);
        self
    }

    /// Recycling: retire a worker whose resident size, read from /proc after each task it
    /// finishes, is above `bytes`, once its queue is empty, and start a fresh one (Celery's
    /// `worker_max_memory_per_child`). Process mode only. Off by default.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().max_worker_memory(1 << 30);
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn max_worker_memory(mut self, bytes: u64) -> Self {
        self.max_worker_memory = Some(bytes);
        self
    }

    /// Poison records: when a worker dies while its task is on a record the handler reported
    /// with [`TaskContext::at`](crate::TaskContext::at), run the task again from the start
    /// with that record skipped (`at(i).skip()` is true for it). The task's record lists each
    /// one under `skipped` with the cause of its crash, and ends `ok` if the rest succeed.
    /// Each skip is charged an attempt, as the crash it was: a task can skip at most
    /// `attempts - 1` records, and one that kills its worker with no record reported is
    /// retried as before. Process mode only. Off by default.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().attempts(4).skip_bad_records(true);
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn skip_bad_records(mut self, yes: bool) -> Self {
        self.skip_bad_records = yes;
        self
    }

    /// Retry tasks whose handler returned an error, within the attempts.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().attempts(3).retry_failed(true);
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn retry_failed(mut self, yes: bool) -> Self {
        self.retry_failed = yes;
        self
    }
    /// Inject random faults.
    pub(crate) fn inject(mut self, inject: Inject) -> Self {
        self.inject = Some(inject);
        self
    }
    /// Write every final record to a results file (JSONL), which is also the journal for
    /// [`resume`](Self::resume).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().results(ResultsTarget::File("results.jsonl".into()));
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn results(mut self, target: ResultsTarget) -> Self {
        self.results = Some(target);
        self
    }
    /// Skip tasks that already have a final record in the results file.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().results(ResultsTarget::File("results.jsonl".into())).resume(true);
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn resume(mut self, yes: bool) -> Self {
        self.resume = yes;
        self
    }
    /// Resume, and run again the tasks whose last record in the results file is failed or
    /// quarantined; each new record says how many earlier ones it supersedes. This is the
    /// only way a task gets a second record; its last one is the one that counts.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().results(ResultsTarget::File("results.jsonl".into())).resume_failed(true);
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn resume_failed(mut self, yes: bool) -> Self {
        self.resume_failed = yes;
        self.resume |= yes;
        self
    }
    /// Attempts per crash cause, runs of failing tasks, exit codes that retry or fail; see
    /// [`decide`](crate::engine::blame::decide).
    pub(crate) fn retry_rules(mut self, rules: RetryRules) -> Self {
        self.retry = rules;
        self
    }
    /// A timeout of `percent` of the median time of the tasks that succeeded so far, once 5
    /// have; [`timeout`](Self::timeout), if given, is then its floor and the only limit
    /// before.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().timeout(Duration::from_secs(1)).timeout_percent(500);
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn timeout_percent(mut self, percent: u32) -> Self {
        self.timeout_percent = Some(percent);
        self
    }
    /// Write lifecycle events (JSONL) to a file.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().events("events.jsonl");
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn events(mut self, path: impl Into<PathBuf>) -> Self {
        self.events = Some(path.into());
        self
    }
    /// Handle SIGINT, SIGTERM, SIGHUP, SIGUSR1/2 and SIGALRM (those not inherited as ignored):
    /// start nothing new, let running tasks finish within the grace, then stop. Off by default
    /// in a library; the CLI turns it on.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().handle_signals(true);
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn handle_signals(mut self, yes: bool) -> Self {
        self.handle_signals = yes;
        self
    }
    /// The program to start as a worker; default: this executable.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().worker_program(WorkerProgram { exe: "/usr/local/bin/my-worker".into(), args: Vec::new() });
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn worker_program(mut self, program: WorkerProgram) -> Self {
        self.program = Some(program);
        self
    }
    /// Run only the tasks of shard `k` of `n` (by a stable hash of their id).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().shard(0, 4);
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn shard(mut self, k: u32, n: u32) -> Self {
        self.shard = Some((k, n));
        self
    }
    /// Answer `bulkhead status` on a control socket at this path.
    pub(crate) fn control_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.control = Some(path.into());
        self
    }
    /// Show live progress on stderr: a bar on a terminal (with the `progress-bar` feature,
    /// which `cli` turns on), a line every few seconds otherwise.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().progress(true);
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn progress(mut self, yes: bool) -> Self {
        self.progress = yes;
        self
    }
    /// Stops the run early at a rule (like GNU parallel's halt): see
    /// [`Halt`](crate::engine::halt::Halt). Each worker then holds only the tasks it runs, so
    /// that `soon` starts nothing after the rule is reached.
    pub(crate) fn halt(mut self, rule: crate::engine::halt::Halt) -> Self {
        self.halt = Some(rule);
        self
    }

    /// The number of tasks the run will have, where known (for the progress line and a
    /// halt rule's percentage).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().progress(true).expected_total(10_000);
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn expected_total(mut self, n: u64) -> Self {
        self.expected_total = Some(n);
        self
    }
    /// Process mode: become a child subreaper and reap what dead workers' tasks leave
    /// behind. This reaps every child of the process (`waitpid(-1)`), so only a program
    /// without other children should ask for it; the CLI does.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().reap_orphans(true);
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn reap_orphans(mut self, yes: bool) -> Self {
        self.reap_orphans = yes;
        self
    }
    /// Names each task given without an id by a hash of its content instead of its position
    /// in the input (`"0"`, `"1"`, ...): a resumed run then recognises a done task wherever
    /// it now stands, and equal tasks are one task (the second is refused as a duplicate).
    /// Off by default, so that equal values run as separate tasks.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().content_ids(true);
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn content_ids(mut self, yes: bool) -> Self {
        self.content_ids = yes;
        self
    }
    /// The largest task input, in bytes once encoded (postcard), up to and by default
    /// [`MAX_TASK_BYTES`] (what one message to a worker carries). A larger task fails alone
    /// when the run takes it in, with an error that names its size, and is never sent; the
    /// same in both modes.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().max_task_bytes(1 << 20);
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn max_task_bytes(mut self, bytes: usize) -> Self {
        self.max_task_bytes = bytes;
        self
    }
    /// Where worker processes' stderr and their handlers' `log` records go; default
    /// [`WorkerOutput::Forward`]: to this process's stderr, each line prefixed with its worker
    /// and task.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().worker_output(WorkerOutput::Capture);
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn worker_output(mut self, to: WorkerOutput) -> Self {
        self.worker_output = to;
        self
    }
    /// The most verbose `log` level a worker process forwards from its handler; default
    /// `Info`. `Off` installs no logger in the workers.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().worker_log_level(log::LevelFilter::Debug);
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn worker_log_level(mut self, level: log::LevelFilter) -> Self {
        self.worker_log_level = level;
        self
    }
    /// Seed for restart jitter.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bulkhead::{Mode, Pool, ResultsTarget, WorkerOutput, WorkerProgram};
    /// let builder = Pool::builder().seed(42);
    /// # let _ = (builder, Duration::ZERO, Mode::Process);
    /// ```
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Checks the settings against each other and their bounds.
    fn check(&self) -> Result<(), SettingError> {
        if self.workers == 0 || self.workers > MAX_WORKERS {
            return Err(SettingError::Workers { given: self.workers, max: MAX_WORKERS });
        }
        if self.attempts == 0 {
            return Err(SettingError::NoAttempts);
        }
        if self.threads_per_worker == 0 || self.threads_per_worker > shared::shm::MAX_SLOTS {
            let (given, max) = (self.threads_per_worker, shared::shm::MAX_SLOTS);
            return Err(SettingError::ThreadsPerWorker { given, max });
        }
        if self.address_space_limit.is_some() && self.mode == Mode::Thread {
            return Err(SettingError::LimitInThreadMode { limit: "an address-space limit" });
        }
        if (self.memory_limit.is_some() || self.max_worker_memory.is_some()) && self.mode == Mode::Thread {
            return Err(SettingError::LimitInThreadMode { limit: "a memory limit" });
        }
        if self.skip_bad_records && self.mode == Mode::Thread {
            return Err(SettingError::SkipBadRecordsInThreadMode);
        }
        if self.max_tasks_per_worker == Some(0) {
            return Err(SettingError::NoTasksPerWorker);
        }
        if self.worker_output == WorkerOutput::Capture && self.mode == Mode::Thread {
            return Err(SettingError::CaptureInThreadMode);
        }
        if let Some(limit) = self.memory_limit
            && limit < MIN_MEMORY_LIMIT
        {
            return Err(SettingError::MemoryLimitTooSmall { limit, min: MIN_MEMORY_LIMIT });
        }
        if let Some(limit) = self.address_space_limit
            && limit < MIN_ADDRESS_SPACE_LIMIT
        {
            return Err(SettingError::AddressSpaceLimitTooSmall { limit, min: MIN_ADDRESS_SPACE_LIMIT });
        }
        if let Some(limit) = self.address_space_limit
            && self.threads_per_worker > 1
        {
            // Each task thread reserves its stack and a guard page; the worker needs its own
            // start-up's worth besides.
            let stacks = u64::from(self.threads_per_worker) * (worker::TASK_STACK_BYTES as u64 + 4096);
            let need = stacks + MIN_ADDRESS_SPACE_LIMIT;
            if need > limit {
                let threads = self.threads_per_worker;
                return Err(SettingError::StacksOverAddressSpace { threads, stacks, need, limit });
            }
        }
        if self.max_task_bytes == 0 || self.max_task_bytes > MAX_TASK_BYTES {
            return Err(SettingError::TaskLimit { given: self.max_task_bytes, max: MAX_TASK_BYTES });
        }
        if let Some(given) = self.timeout.into_iter().chain(self.stall_timeout).min()
            && given < MIN_TIMEOUT
        {
            return Err(SettingError::TimeoutTooShort { given, min: MIN_TIMEOUT });
        }
        if let Some((k, n)) = self.shard
            && (n == 0 || k >= n)
        {
            return Err(SettingError::Shard { k, n });
        }
        Ok(())
    }

    /// Builds the pool for `handler`, the value every worker serves (each process mode
    /// worker gets a copy, serialized with its handshake). In a worker process that did not
    /// serve (no [`serve_if_worker`](crate::serve_if_worker) for this handler came first in
    /// `main`), it says so on stderr and exits the process, so that the program's own code
    /// does not run on in the worker; the pool that started the worker stops with the hint.
    ///
    /// ```
    /// # use bulkhead::{Handler, Mode, Pool, TaskContext, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Double;
    /// # impl Handler for Double { type Task = u32; type Output = u32;
    /// #   fn handle(&self, t: u32, _: &TaskContext<'_>) -> Result<u32, TaskError> { Ok(2 * t) } }
    /// // Thread mode, so that the example runs inside its doctest; process mode is the same call.
    /// let pool = Pool::builder().mode(Mode::Thread).workers(2).build(Double)?;
    /// assert_eq!(pool.submit(21)?.join()?.output, Some(42));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build<H: Handler>(self, handler: H) -> Result<Pool<H>, PoolError> {
        // A worker whose program got here without serving exits now, before the program's
        // own work runs a second time; the pool that started it names the missing call.
        worker::exit_if_unserved_worker();
        self.check()?;
        let program = match &self.program {
            Some(p) => p.clone(),
            None => WorkerProgram::current().map_err(io_err("find this executable to start workers"))?,
        };
        if let (Mode::Thread, Some(t)) = (self.mode, self.timeout) {
            log::warn!(
                "thread mode: a task past its {t:?} timeout cannot be stopped; its thread is abandoned, still \
                 running until the process exits, and replaced (process mode kills it)"
            );
        }
        // The workers serve this very value: it goes to each with its handshake.
        let config = postcard::to_stdvec(&handler)
            .map_err(|source| PoolError::Handler { name: H::name(), source: source.into() })?;
        if config.len() > MAX_CONFIG {
            let source = postcard::Error::SerializeBufferFull;
            return Err(PoolError::Handler { name: H::name(), source: source.into() });
        }
        Ok(Pool { handler: Arc::new(handler), config: config.into(), cfg: self, program, service: Default::default() })
    }
}

/// A pool of crash-isolated workers for one handler.
///
/// ```standalone_crate
/// use bulkhead::{Handler, Mode, Pool, TaskContext, TaskError};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Square;
/// impl Handler for Square {
///     type Task = u64;
///     type Output = u64;
///     fn handle(&self, n: u64, _: &TaskContext<'_>) -> Result<u64, TaskError> {
///         Ok(n * n)
///     }
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     bulkhead::serve_if_worker::<Square>(); // first: a worker never gets past this line
///     let pool = Pool::builder().mode(Mode::Process).workers(4).build(Square)?;
///     let results = pool.run(1..=100u64)?.collect::<Result<Vec<_>, _>>()?;
///     assert_eq!(results.len(), 100);
///     assert!(results.iter().all(|r| r.status == bulkhead::Status::Ok));
///     Ok(())
/// }
/// ```
pub struct Pool<H> {
    handler: Arc<H>,
    /// The handler, serialized for the workers' handshakes.
    config: Arc<[u8]>,
    cfg: PoolBuilder,
    program: WorkerProgram,
    /// The run behind [`Pool::submit`] (a `submit::Service<H>`), started by the first
    /// submission. Boxed because a `Pool<()>` (the builder's) has no handler types.
    service: std::sync::Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

impl Pool<()> {
    /// Starts building a pool.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }
}

impl<H: Handler> Pool<H> {
    /// Runs a batch of tasks; results come as they finish.
    ///
    /// ```
    /// # use bulkhead::{Handler, Mode, Pool, TaskContext, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Double;
    /// # impl Handler for Double { type Task = u32; type Output = u32;
    /// #   fn handle(&self, t: u32, _: &TaskContext<'_>) -> Result<u32, TaskError> { Ok(2 * t) } }
    /// let pool = Pool::builder().mode(Mode::Thread).workers(2).build(Double)?;
    /// let mut total = 0;
    /// for r in pool.run(1..=4u32)? {
    ///     total += r?.output.unwrap_or(0); // `?`: a run that stopped early ends with its error
    /// }
    /// assert_eq!(total, 20);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn run<'a, I>(&'a self, tasks: I) -> Result<Run<'a, H>, PoolError>
    where
        I: IntoIterator + 'a,
        I::IntoIter: Send,
        I::Item: Into<TaskSpec<H::Task>>,
    {
        self.start(|admission| Ok(Box::new(IterSource::<_, H::Task>::new(tasks.into_iter(), admission))))
    }

    /// Runs a batch fed while it runs: tasks sent through the [`TaskSender`](crate::TaskSender)
    /// of [`channel`](crate::channel) (from any thread) join the run as they come, and the run
    /// ends once the sender is dropped or closed and those sent are done.
    ///
    /// ```
    /// # use bulkhead::{Handler, Mode, Pool, TaskContext, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Double;
    /// # impl Handler for Double { type Task = u32; type Output = u32;
    /// #   fn handle(&self, t: u32, _: &TaskContext<'_>) -> Result<u32, TaskError> { Ok(2 * t) } }
    /// let pool = Pool::builder().mode(Mode::Thread).workers(2).build(Double)?;
    /// let (tx, source) = bulkhead::channel::<u32>()?;
    /// let mut run = pool.run_channel(source)?;
    /// tx.send(5);
    /// assert_eq!(run.next().and_then(|r| r.ok()?.output), Some(10));
    /// drop(tx); // no more tasks: the run ends
    /// assert!(run.next().is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn run_channel<'a>(&'a self, source: ChannelSource<H::Task>) -> Result<Run<'a, H>, PoolError> {
        self.start(|admission| Ok(Box::new(source.admit_with(admission))))
    }

    /// Runs a batch from a [`TaskSource`] built once the results file is read (so it knows
    /// which tasks are done).
    pub(crate) fn run_source<'a>(
        &'a self,
        source: impl FnOnce(Admission) -> io::Result<Box<dyn TaskSource + 'a>>,
    ) -> Result<Run<'a, H>, PoolError> {
        self.start(source)
    }

    /// `--dry-run`: reads the tasks as [`run_source`](Pool::run_source) would, resume and
    /// shard filtering included, and gives each job that would run to `each`; runs none.
    /// The input's first bad line, if any, ends it as the error.
    #[cfg_attr(not(feature = "cli"), expect(dead_code, reason = "only the command line (feature cli) uses it"))]
    pub(crate) fn dry_run_source<'a>(
        &self,
        source: impl FnOnce(Admission) -> io::Result<Box<dyn TaskSource + 'a>>,
        mut each: impl FnMut(&crate::engine::Job),
    ) -> Result<Result<(), Arc<crate::input::error::InputError>>, PoolError> {
        let c = &self.cfg;
        let resumed = match &c.results {
            Some(t) if c.resume => Journal::open(t, true)?.1,
            None if c.resume => return Err(SettingError::ResumeWithoutResults.into()),
            _ => Resumed::default(),
        };
        let mut admission = Admission::new(resumed.done, c.shard);
        admission.content_ids = c.content_ids;
        let mut src = source(admission).map_err(io_err("start reading the tasks"))?;
        let mut jobs = Vec::new();
        loop {
            jobs.clear();
            let pull = src.pull(1024, &mut jobs);
            jobs.iter().for_each(&mut each);
            match pull {
                Pull::Ready => {}
                Pull::Pending => {
                    if let Some(fd) = src.wake_fd() {
                        // SAFETY: the source keeps its wake descriptor open while it lives.
                        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                        let mut set = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
                        let _ = nix::poll::poll(&mut set, nix::poll::PollTimeout::NONE);
                    }
                }
                Pull::End => return Ok(Ok(())),
                Pull::Failed(e) => return Ok(Err(e)),
            }
        }
    }

    fn start<'a>(
        &'a self,
        source: impl FnOnce(Admission) -> io::Result<Box<dyn TaskSource + 'a>>,
    ) -> Result<Run<'a, H>, PoolError> {
        let c = &self.cfg;
        // First: a control path held by a live run refuses this one before anything here
        // touches that run's results or events files.
        let control = match &c.control {
            Some(path) => Some(ControlServer::bind(path).map_err(io_err(format!("listen on {}", path.display())))?),
            None => None,
        };
        let (journal, mut resumed, events) = open_outputs(c)?;
        let (previous, superseded) = take_superseded(c.resume_failed, &mut resumed);
        let mut admission = Admission::new(std::mem::take(&mut resumed.done), c.shard);
        admission.rerun = superseded.clone();
        admission.content_ids = c.content_ids;
        let src = source(admission).map_err(io_err("start reading the tasks"))?;
        let engine = Engine::new(c.engine_config(), mono_ns());
        let backend = self.backend()?;
        let signals = Signals::new(c.handle_signals).map_err(io_err("install signal handlers"))?;
        let progress = c.progress.then(|| Progress::new(c.expected_total));
        Ok(Run {
            runtime: Runtime::new(engine, backend, src, signals),
            sink: RunSink::new(journal, events, superseded, c.worker_output),
            hooks: RunHooks { control, progress, mode: c.mode },
            previous,
            started: Instant::now(),
            done: false,
            reported: false,
            pool_mode: c.mode,
        })
    }

    /// The workers of the pool's mode: processes of its worker program, or threads that
    /// share its handler.
    fn backend<'a>(&'a self) -> Result<Box<dyn Backend + 'a>, PoolError> {
        let c = &self.cfg;
        Ok(match c.mode {
            Mode::Process => Box::new(
                ProcessBackend::new(
                    SpawnConfig {
                        program: self.program.clone(),
                        handler: H::name().to_string(),
                        config: self.config.clone(),
                        threads: c.threads_per_worker,
                        heartbeat_ms: c.heartbeat.as_millis().clamp(10, u128::from(u32::MAX)) as u32,
                        address_space_limit: c.address_space_limit,
                        memory_limit: c.memory_limit,
                        drain_grace: c.handle_signals.then_some(c.grace),
                        task_marks: c.worker_output != WorkerOutput::Log,
                        log_level: c.worker_log_level,
                    },
                    c.workers,
                    c.reap_orphans,
                )
                .map_err(io_err("start the memory watch"))?,
            ),
            Mode::Thread => {
                Box::new(ThreadBackend::new(self.handler.clone(), c.workers).map_err(io_err("set up thread mode"))?)
            }
        })
    }

    /// The handler.
    ///
    /// ```
    /// # use bulkhead::{Handler, Mode, Pool, TaskContext, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Double;
    /// # impl Handler for Double { type Task = u32; type Output = u32;
    /// #   fn handle(&self, t: u32, _: &TaskContext<'_>) -> Result<u32, TaskError> { Ok(2 * t) } }
    /// let pool = Pool::builder().mode(Mode::Thread).build(Double)?;
    /// let _double: &Double = pool.handler();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn handler(&self) -> &H {
        &self.handler
    }
}

/// The run's outputs, opened: its journal with what an earlier run recorded (on resume),
/// and its events file. Before anything is opened, no output may overwrite another, nor
/// follow a planted symlink.
fn open_outputs(c: &PoolBuilder) -> Result<(Option<Journal>, Resumed, Option<EventsFile>), PoolError> {
    let mut paths = Vec::new();
    if let Some(ResultsTarget::File(p)) = &c.results {
        paths.push((Role::Results, p.as_path()));
    }
    if let Some(p) = &c.events {
        paths.push((Role::Events, p.as_path()));
    }
    crate::output::files::check(&paths)?;
    let (journal, resumed) = match &c.results {
        Some(t) => {
            let (j, r) = Journal::open(t, c.resume)?;
            (Some(j), r)
        }
        None if c.resume => {
            return Err(SettingError::ResumeWithoutResults.into());
        }
        None => (None, Resumed::default()),
    };
    let events = match &c.events {
        Some(p) => Some(EventsFile::open(p, c.resume)?),
        None => None,
    };
    Ok((journal, resumed, events))
}

/// The earlier runs' (ok, failed, quarantined) records, and with `resume_failed` the tasks
/// taken from `resumed` to run again, with the final records they have: those are not the
/// earlier runs' any more.
fn take_superseded(resume_failed: bool, resumed: &mut Resumed) -> ((u64, u64, u64), Arc<HashMap<String, u32>>) {
    let mut previous = (resumed.ok, resumed.failed, resumed.quarantined);
    if !resume_failed {
        return (previous, Arc::default());
    }
    for (_, status) in resumed.not_ok.values() {
        match status {
            Status::Failed => previous.1 -= 1,
            _ => previous.2 -= 1,
        }
    }
    let superseded = std::mem::take(&mut resumed.not_ok).into_iter().map(|(id, (n, _))| (id, n)).collect();
    (previous, Arc::new(superseded))
}

impl PoolBuilder {
    /// The engine's policies, in its units (nanoseconds).
    fn engine_config(&self) -> EngineConfig {
        let c = self;
        EngineConfig {
            workers: c.workers,
            threads_per_worker: if c.mode == Mode::Thread { 1 } else { c.threads_per_worker },
            attempts: c.attempts,
            timeout_ns: c.timeout.map(|d| d.as_nanos() as u64),
            stall_timeout_ns: c.stall_timeout.map(|d| d.as_nanos() as u64),
            heartbeat_timeout_ns: (c.mode == Mode::Process).then_some(c.heartbeat_timeout.as_nanos() as u64),
            drain_grace_ns: c.grace.as_nanos() as u64,
            restart: c.restart,
            retry_failed: c.retry_failed,
            retry: c.retry.clone(),
            timeout_percent: c.timeout_percent,
            inject: c.inject.clone(),
            seed: c.seed,
            max_task_bytes: c.max_task_bytes,
            max_tasks_per_worker: c.max_tasks_per_worker,
            max_worker_memory: c.max_worker_memory,
            halt: c.halt.map(|h| (h, c.expected_total)),
            // Under a halt rule a worker holds only what it runs: a task queued behind
            // the one that reaches the rule would start after it.
            queue_budget_ns: if c.halt.is_some() { 0 } else { EngineConfig::default().queue_budget_ns },
            memory_limit: c.memory_limit,
            skip_bad_records: c.skip_bad_records,
            ..EngineConfig::default()
        }
    }
}

/// A callback that sees every event.
type Observer = Box<dyn FnMut(&Timed) + Send>;

/// A task as it concluded, for whoever shows it as it ends (the command line prints a
/// command's output and a failure's line from it).
#[derive(Debug)]
#[cfg_attr(not(feature = "cli"), expect(dead_code, reason = "only the command line (feature cli) uses it"))]
pub(crate) struct Concluded<'a> {
    /// Its id.
    pub id: &'a str,
    /// Its place among the run's jobs, from 0.
    pub order: u64,
    /// The seq of its last attempt, `None` when it never ran.
    pub seq: Option<Seq>,
    /// What it was ([`crate::engine::Job::label`]): a shell-command task's input, seq and command.
    pub label: &'a str,
    /// How it ended.
    pub status: shared::record::Status,
    /// The error of a failed task.
    pub error: Option<&'a str>,
    /// A command's stderr, where the task has one.
    pub stderr: Option<&'a shared::record::Captured>,
    /// A command's stdout, where the task has one.
    pub stdout: Option<&'a shared::record::Captured>,
    /// Its crashes, oldest first.
    pub crashes: &'a [Crash],
}

/// A callback that sees every task as it concludes.
type ConcludedObserver = Box<dyn FnMut(&Concluded<'_>) + Send>;

struct RunSink<O> {
    journal: Option<Journal>,
    events: Option<EventsFile>,
    queue: VecDeque<TaskResult<O>>,
    collect: bool,
    /// The first few tasks that ended failed or quarantined, to name them at the end.
    first_bad: Vec<String>,
    observers: Vec<Observer>,
    /// Tasks run again by `resume_failed`, with the final records they have already.
    superseded: Arc<HashMap<String, u32>>,
    /// Each with whether it wants the tasks that ended ok too.
    concluded: Vec<(bool, ConcludedObserver)>,
    /// Whether any of `concluded` wants the ok ones: else an ok task skips them.
    concluded_ok: bool,
    worker_output: WorkerOutput,
    /// With [`WorkerOutput::Capture`]: each unfinished task's lines so far, by id.
    captured: HashMap<String, Vec<String>>,
}

impl<O> RunSink<O> {
    /// The sink of a run that writes `journal` and `events`; `superseded`: the tasks run
    /// again by `resume_failed`, with the final records they have.
    fn new(
        journal: Option<Journal>,
        events: Option<EventsFile>,
        superseded: Arc<HashMap<String, u32>>,
        worker_output: WorkerOutput,
    ) -> Self {
        RunSink {
            journal,
            events,
            queue: VecDeque::new(),
            collect: true,
            observers: Vec::new(),
            concluded: Vec::new(),
            concluded_ok: false,
            first_bad: Vec::new(),
            superseded,
            worker_output,
            captured: HashMap::new(),
        }
    }

    /// The record of the task `f` that ended as `end`, by `rule`: the one place its fields
    /// are filled, borrowed from the task, so that writing it costs no allocation. A
    /// command's streams are in the record's own fields whatever its status: a failed one's
    /// come with its error, an ok one's with its output.
    fn record<'a>(
        &self,
        f: &'a Finished<'_>,
        end: Conclusion<&'a O, &'a TaskError>,
        rule: Option<&'a str>,
    ) -> RecordRef<'a, O>
    where
        O: 'static,
    {
        let ms = f.micros.map(|m| m as f64 / 1000.0);
        let streams = match end {
            Conclusion::Ok(o) => (o as &dyn std::any::Any).downcast_ref::<BuiltinOutput>().and_then(|o| o.streams()),
            _ => None,
        };
        let mut record = RecordRef {
            peak_rss: f.peak_rss,
            leaked: f.leaked,
            rule,
            memory_factor: (f.memory_factor > 1).then_some(f.memory_factor),
            supersedes: self.superseded.get(f.id).copied(),
            skipped: &f.skipped,
            ..RecordRef::concluded(f.id, f.attempts, ms, end, &f.crashes)
        };
        if let Some((out, err)) = streams {
            (record.stdout, record.stderr) = (Some(out), Some(err));
        }
        record
    }

    /// Writes a worker's line on this process's stderr, prefixed. Stderr is where a
    /// failure would be told, so a failure to write there has nowhere to go and is dropped.
    fn forward(line: &WorkerLine<'_>) {
        use std::io::Write;
        let _ = writeln!(io::stderr().lock(), "{line}");
    }
}

impl<O: Serialize + DeserializeOwned + 'static> Sink for RunSink<O> {
    fn finished(&mut self, f: Finished<'_>) {
        // The output decoded here is owned (the collected record takes it); the rest stays
        // borrowed from `f` for the record.
        let decoded = match f.ending {
            Ending::Ok(bytes) => {
                Some(decode_output::<O>(bytes).map_err(|e| TaskError::new(format!("undecodable output: {e}"))))
            }
            Ending::Failed(_) | Ending::Quarantined => None,
        };
        let end = match (&f.ending, &decoded) {
            (_, Some(Ok(o))) => Conclusion::Ok(o),
            (_, Some(Err(e))) | (Ending::Failed(e), None) => Conclusion::Failed(e),
            (_, None) => Conclusion::Quarantined,
        };
        let ok = matches!(end, Conclusion::Ok(_));
        if !ok && self.first_bad.len() < FIRST_BAD {
            self.first_bad.push(format!("{}{}", f.id, crate::engine::job::describe(f.label)));
        }
        let rule = f.rule.map(|r| r.to_string());
        let record = self.record(&f, end, rule.as_deref());
        if !self.concluded.is_empty() && (!ok || self.concluded_ok) {
            let c = Concluded {
                id: f.id,
                order: f.order,
                seq: f.seq,
                label: f.label,
                status: record.status,
                error: record.error,
                stderr: record.stderr,
                stdout: record.stdout,
                crashes: &f.crashes,
            };
            for (ok_too, o) in &mut self.concluded {
                if *ok_too || !ok {
                    o(&c);
                }
            }
        }
        if let Some(j) = self.journal.as_mut() {
            j.write(&record, f.label);
        }
        // Only captured lines are kept by id: hashing every finished task's id to look in an
        // empty map was ~4% of the supervisor's time on 1M no-ops (perf, 2 workers).
        let log = if self.captured.is_empty() { Vec::new() } else { self.captured.remove(f.id).unwrap_or_default() };
        if self.collect {
            // The owned record is the one just written, with the output moved in (a task's
            // output need not be `Clone`) and the worker's captured lines.
            let written = record.to_record(None);
            self.queue.push_back(Record { output: decoded.and_then(Result::ok), log, ..written });
        }
    }

    fn worker_line(&mut self, line: WorkerLine<'_>) {
        match (self.worker_output, line.task) {
            (WorkerOutput::Capture, Some(id)) => self.captured.entry(id.to_string()).or_default().push(line.body()),
            (WorkerOutput::Forward | WorkerOutput::Capture, _) => Self::forward(&line),
            (WorkerOutput::Log, _) => {
                let level = line.record.map_or(log::Level::Debug, |(level, _)| level);
                log::log!(target: "bulkhead::worker", level, "{line}");
            }
        }
    }

    fn wants_events(&self) -> bool {
        self.events.is_some() || !self.observers.is_empty()
    }

    fn event(&mut self, t: f64, event: RunEvent) {
        let timed = Timed { t, event };
        if let Some(w) = self.events.as_mut() {
            w.write(&timed);
        }
        for o in &mut self.observers {
            o(&timed);
        }
    }

    fn flush(&mut self) {
        if let Some(j) = self.journal.as_mut() {
            j.flush();
        }
        if let Some(w) = self.events.as_mut() {
            w.flush();
        }
    }
}

/// A task's output from its postcard bytes, as `postcard::from_bytes` gives it; the
/// built-in kinds' empty output (every no-op's and sleep's) is made without serde, whose
/// decoding of it was 66 instructions a task of the event loop's (callgrind, 200,000
/// no-ops). A test checks both ways agree.
pub fn decode_output<O: DeserializeOwned + 'static>(bytes: &[u8]) -> Result<O, postcard::Error> {
    let mut made: Option<O> = None;
    if bytes == BuiltinOutput::NOTHING_POSTCARD
        && let Some(slot) = (&mut made as &mut dyn std::any::Any).downcast_mut::<Option<BuiltinOutput>>()
    {
        *slot = Some(BuiltinOutput::Nothing);
    }
    match made {
        Some(o) => Ok(o),
        None => postcard::from_bytes(bytes),
    }
}

struct RunHooks {
    control: Option<ControlServer>,
    progress: Option<Progress>,
    mode: Mode,
}

impl Hooks for RunHooks {
    fn poll_set(&self, set: &mut PollSet) {
        if let Some(c) = &self.control {
            c.poll_set(set);
        }
    }

    fn ready(&mut self, token: u32, engine: &Engine, backend: &dyn Backend, now: u64) {
        if let Some(c) = self.control.as_mut() {
            let mode = self.mode;
            c.ready(token, || StatusSnapshot::of(engine, backend, now, mode));
        }
    }

    fn before_wait(&mut self, engine: &Engine, now: u64) {
        if let Some(p) = self.progress.as_mut() {
            p.update(engine, now);
        }
    }

    fn max_wait_ns(&self) -> Option<u64> {
        self.progress.as_ref().map(Progress::interval_ns)
    }
}

/// A batch in progress. Iterate it for results as they finish, or call
/// [`finish`](Run::finish) to run it to the end.
///
/// Each item is a `Result`: `Ok` with a task's final record (`ok`, `failed` or
/// `quarantined`), and, when the run stopped before its end (it gave up on a crash loop, met
/// bad input, was interrupted, could not write its results), one last `Err` that says why and
/// lists every task the run had taken and did not conclude ([`RunError::not_run`]). So the
/// plain loop sees a stop:
///
/// ```standalone_crate
/// # use bulkhead::{Handler, Pool, TaskContext, TaskError};
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # struct Echo;
/// # impl Handler for Echo { type Task = u32; type Output = u32;
/// #   fn handle(&self, t: u32, _: &TaskContext<'_>) -> Result<u32, TaskError> { Ok(t) } }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # bulkhead::serve_if_worker::<Echo>();
/// let pool = Pool::builder().workers(2).build(Echo)?;
/// for r in pool.run(vec![5, 6, 5])? {
///     let r = r?; // a stopped run ends the loop with its error
///     println!("task {} ended {}", r.id, r.status);
/// }
/// # Ok(()) }
/// ```
pub struct Run<'a, H: Handler> {
    runtime: Runtime<'a>,
    sink: RunSink<H::Output>,
    hooks: RunHooks,
    previous: (u64, u64, u64),
    started: Instant,
    done: bool,
    /// The stop's error has been handed out.
    reported: bool,
    pool_mode: Mode,
}

/// A task the run took in and did not conclude, because the run stopped first.
#[derive(Debug, Clone, PartialEq)]
pub struct NotRun {
    /// The task's id.
    pub id: String,
    /// Attempts charged to it before the stop (its crashes).
    pub attempts: u32,
    /// Its crashes, oldest first.
    pub crashes: Vec<Crash>,
}

/// A run that stopped before every task it took had its outcome. Tasks the run never took
/// from its input (it reads ahead only a few thousand) are neither here nor in the records.
#[derive(Debug, thiserror::Error)]
#[error("{}; {} task(s) not run", stop_words(&self.summary), self.not_run.len())]
pub struct RunError {
    /// How the run ended: its stop reason and counts.
    pub summary: Box<Summary>,
    /// Every task the stop left behind, in no particular order.
    pub not_run: Vec<NotRun>,
}

/// What stopped a run, as the first words of its error.
fn stop_words(s: &Summary) -> String {
    if let Some(f) = s.output_failures.first() {
        return format!("an output was lost: {}", worker::ErrorChain(f));
    }
    match &s.stop {
        Some(why) => worker::ErrorChain(why).to_string(),
        None => "still running".to_string(),
    }
}

impl<'a, H: Handler> Run<'a, H> {
    /// Calls `f` with every event as it happens (for live displays).
    ///
    /// ```
    /// # use bulkhead::{Handler, Mode, Pool, TaskContext, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Double;
    /// # impl Handler for Double { type Task = u32; type Output = u32;
    /// #   fn handle(&self, t: u32, _: &TaskContext<'_>) -> Result<u32, TaskError> { Ok(2 * t) } }
    /// let pool = Pool::builder().mode(Mode::Thread).workers(1).build(Double)?;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let run = pool.run([1u32, 2])?.on_event(move |e| {
    ///     let _ = tx.send(format!("{:?}", e.event));
    /// });
    /// run.finish()?;
    /// assert!(rx.try_iter().count() > 0); // the run's start, workers, tasks, its end
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_event(mut self, f: impl FnMut(&Timed) + Send + 'static) -> Self {
        self.sink.observers.push(Box::new(f));
        self
    }

    /// Calls `f` with every task as it concludes, before its record is written; with
    /// `ok_too` false, only with those that did not end ok.
    #[cfg_attr(not(feature = "cli"), expect(dead_code, reason = "only the command line (feature cli) uses it"))]
    pub(crate) fn on_concluded(mut self, ok_too: bool, f: impl FnMut(&Concluded<'_>) + Send + 'static) -> Self {
        self.sink.concluded.push((ok_too, Box::new(f)));
        self.sink.concluded_ok |= ok_too;
        self
    }

    fn step(&mut self) {
        if self.done {
            return;
        }
        if !self.runtime.step(&mut self.sink, &mut self.hooks) {
            self.done = true;
            if let Some(j) = self.sink.journal.as_mut() {
                j.finish();
            }
            if let Some(e) = self.sink.events.as_mut() {
                e.flush();
            }
            if let Some(p) = self.hooks.progress.as_mut() {
                p.finish();
            }
            return;
        }
        // Results that cannot be written stop the run: every further task would lose its
        // record. (A closed pipe is the reader's choice, like `head`: the same stop, exit 141.)
        let failure = self.sink.journal.as_ref().and_then(Journal::failure);
        if let Some(OutputFailure::Results { path, error }) = failure
            && !self.runtime.engine.stop_reason().is_some_and(StopReason::is_fatal)
        {
            let now = mono_ns();
            let mut out = Vec::new();
            let why = StopReason::ResultsWriteFailed { path, error };
            self.runtime.engine.fatal(why, now, &mut self.sink, &mut out);
            // The actions are the kills of every worker; the next step performs them.
            for a in out {
                self.runtime.push_action(a);
            }
        }
    }

    /// Runs the batch to its end, discarding results as they come (they are in the results
    /// file, if one was given), and returns the summary; an error when the run stopped
    /// before its end, with the tasks it left behind.
    #[must_use = "a run that stopped early is only seen in this result"]
    ///
    /// ```
    /// # use bulkhead::{Handler, Mode, Pool, TaskContext, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Double;
    /// # impl Handler for Double { type Task = u32; type Output = u32;
    /// #   fn handle(&self, t: u32, _: &TaskContext<'_>) -> Result<u32, TaskError> { Ok(2 * t) } }
    /// let pool = Pool::builder().mode(Mode::Thread).build(Double)?;
    /// let summary = pool.run(0..100u32)?.finish()?; // the results are dropped; the counts stay
    /// assert_eq!(summary.counts.ok, 100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn finish(self) -> Result<Summary, RunError> {
        self.finish_unless(|| false)
    }

    /// [`finish`](Run::finish), interrupted as by SIGINT once `stop` says so (the command
    /// line's output could not be written: a closed pipe, as records on stdout are).
    pub(crate) fn finish_unless(mut self, mut stop: impl FnMut() -> bool) -> Result<Summary, RunError> {
        self.sink.collect = false;
        self.sink.queue.clear();
        let mut stopped = false;
        while !self.done {
            self.step();
            if !stopped && stop() {
                stopped = true;
                self.interrupt();
            }
        }
        match self.stopped_error() {
            Some(e) => Err(e),
            None => Ok(self.summary()),
        }
    }

    /// Once the run is done: its error, if it stopped short of its end.
    fn stopped_error(&self) -> Option<RunError> {
        let summary = self.summary();
        let completed = matches!(summary.stop, Some(StopReason::Completed) | None);
        if completed && summary.output_failures.is_empty() {
            return None;
        }
        let not_run = self
            .runtime
            .engine
            .unfinished()
            .map(|(id, attempts, crashes)| NotRun { id: id.to_string(), attempts, crashes: crashes.to_vec() })
            .collect();
        Some(RunError { summary: Box::new(summary), not_run })
    }

    /// Cancels the task `id`, if the run has it unfinished (false otherwise). A task no worker
    /// has begun ends at once, `failed` with the error "cancelled"; a task its worker is
    /// executing (or about to) ends so too, its worker killed and replaced at once, which
    /// charges nobody: the worker's other tasks go back uncharged. A task queued at a worker
    /// behind another may still end with the result the worker reports. Process mode stops a
    /// running task this way; thread mode cannot stop a thread, and abandons it as a timeout
    /// does.
    ///
    /// ```
    /// # use bulkhead::{Handler, Mode, Pool, TaskContext, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Double;
    /// # impl Handler for Double { type Task = u32; type Output = u32;
    /// #   fn handle(&self, t: u32, _: &TaskContext<'_>) -> Result<u32, TaskError> { Ok(2 * t) } }
    /// use bulkhead::{Status, TaskSpec};
    /// let pool = Pool::builder().mode(Mode::Thread).workers(1).build(Double)?;
    /// let mut run = pool.run((0..1000u32).map(|i| TaskSpec::with_id(format!("t{i}"), i)))?;
    /// let next = run.next(); // the run has begun
    /// if run.cancel("t999") {
    ///     // Not begun by a worker: it ends `failed` ("cancelled") without running.
    ///     let last = run.by_ref().filter_map(Result::ok).find(|r| r.id == "t999");
    ///     println!("{:?}", last.map(|r| r.status == Status::Failed));
    /// }
    /// # let _ = next;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cancel(&mut self, id: &str) -> bool {
        let now = mono_ns();
        let mut out = Vec::new();
        let found = self.runtime.engine.cancel(id, now, &mut self.sink, &mut out);
        for a in out {
            self.runtime.push_action(a);
        }
        found
    }

    /// Sends the run SIGINT-like: start nothing new, let running tasks finish.
    ///
    /// ```
    /// # use bulkhead::{Handler, Mode, Pool, TaskContext, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Double;
    /// # impl Handler for Double { type Task = u32; type Output = u32;
    /// #   fn handle(&self, t: u32, _: &TaskContext<'_>) -> Result<u32, TaskError> { Ok(2 * t) } }
    /// let pool = Pool::builder().mode(Mode::Thread).workers(1).build(Double)?;
    /// let mut run = pool.run(0..100_000u32)?;
    /// run.interrupt(); // as a Ctrl-C would: nothing new starts
    /// let stopped = run.by_ref().find_map(Result::err).expect("an interrupted run ends with its error");
    /// assert!(stopped.summary.stop.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn interrupt(&mut self) {
        let now = mono_ns();
        let mut out = Vec::new();
        self.runtime.engine.handle(crate::engine::Event::Interrupt(Interrupt::Int), now, &mut self.sink, &mut out);
        for a in out {
            self.runtime.push_action(a);
        }
    }

    /// Where the run stands.
    ///
    /// ```
    /// # use bulkhead::{Handler, Mode, Pool, TaskContext, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Double;
    /// # impl Handler for Double { type Task = u32; type Output = u32;
    /// #   fn handle(&self, t: u32, _: &TaskContext<'_>) -> Result<u32, TaskError> { Ok(2 * t) } }
    /// let pool = Pool::builder().mode(Mode::Thread).build(Double)?;
    /// let mut run = pool.run(0..10u32)?;
    /// let first = run.next();
    /// let so_far = run.summary(); // a run still going
    /// assert!(first.is_some() && so_far.stop.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn summary(&self) -> Summary {
        Summary {
            stop: self.runtime.engine.stop_reason().cloned(),
            counts: self.runtime.engine.counts().clone(),
            previous_ok: self.previous.0,
            previous_failed: self.previous.1,
            previous_quarantined: self.previous.2,
            elapsed: self.started.elapsed(),
            tally: (self.pool_mode == Mode::Thread).then(|| self.runtime.thread_report()).flatten(),
            output_failures: self.output_failures(),
            broken_pipe: self.sink.journal.as_ref().is_some_and(|j| j.broken_pipe()),
            first_bad: self.sink.first_bad.clone(),
            records_written: self.sink.journal.as_ref().map(Journal::written),
            resumable: self.sink.journal.as_ref().is_some_and(Journal::resumable),
        }
    }

    /// The outputs that are incomplete or gone (a closed results pipe is not among them: its
    /// reader chose to stop).
    fn output_failures(&self) -> Vec<OutputFailure> {
        let mut v = Vec::new();
        if let Some(j) = &self.sink.journal {
            if !j.broken_pipe() {
                v.extend(j.failure());
            }
            if self.done {
                v.extend(j.lost());
            }
        }
        v.extend(self.sink.events.as_ref().and_then(EventsFile::failure));
        v
    }
}

impl<H: Handler> Iterator for Run<'_, H> {
    type Item = Result<TaskResult<H::Output>, RunError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.sink.queue.pop_front() {
                return Some(Ok(r));
            }
            if self.done {
                if self.reported {
                    return None;
                }
                self.reported = true;
                return self.stopped_error().map(Err);
            }
            self.step();
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Why it stopped (`None` while running).
    pub stop: Option<StopReason>,
    /// What this run did.
    pub counts: Counts,
    /// `ok` records already in the results file when the run resumed it.
    pub previous_ok: u64,
    /// `failed` records already there.
    pub previous_failed: u64,
    /// `quarantined` records already there.
    pub previous_quarantined: u64,
    /// Wall-clock time.
    pub elapsed: Duration,
    /// Thread mode: the shared tally.
    pub tally: Option<TallyReport>,
    /// Outputs that are incomplete or gone: results that could not be written, a results
    /// file deleted or replaced during the run, events that could not be written (and, from
    /// the CLI, the report).
    pub output_failures: Vec<OutputFailure>,
    /// Whether the results' reader went away.
    pub broken_pipe: bool,
    /// The ids of the first tasks (at most 5) of this run that ended failed or quarantined.
    pub first_bad: Vec<String>,
    /// Records this run wrote whole to its results target, if it had one.
    pub records_written: Option<u64>,
    /// Whether `resume` can continue this batch: its results are in a regular file that is
    /// still at its path.
    pub resumable: bool,
}

/// How many failed tasks a summary names.
const FIRST_BAD: usize = 5;

impl Summary {
    /// The exit code of this ending: the one place where reasons become codes. When several
    /// apply, the first of this list wins:
    ///
    /// 1. 2, bad input: a bad line in streamed input stopped the run;
    /// 2. 141, the results' reader closed its pipe (as `head` does: SIGPIPE's 128 + 13);
    /// 3. 74, an output could not be written or was lost: results (the run stopped), a results
    ///    file deleted or replaced during the run, events, the report;
    /// 4. 3, the supervisor gave up: the restart limit, or a worker of another protocol version;
    /// 5. 130, 143, 128 + N: a signal stopped the run (resumable);
    /// 6. 1, a task failed or was quarantined, or thread mode's shared state was poisoned;
    /// 7. 0, every task ok.
    ///
    /// ```
    /// # use bulkhead::{Handler, Mode, Pool, TaskContext, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Double;
    /// # impl Handler for Double { type Task = u32; type Output = u32;
    /// #   fn handle(&self, t: u32, _: &TaskContext<'_>) -> Result<u32, TaskError> { Ok(2 * t) } }
    /// let pool = Pool::builder().mode(Mode::Thread).build(Double)?;
    /// let summary = pool.run(0..3u32)?.finish()?;
    /// assert_eq!(summary.exit_code(), 0); // all ok
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn exit_code(&self) -> i32 {
        if matches!(self.stop, Some(StopReason::BadInput(_))) {
            return exit::BAD_INPUT;
        }
        if self.broken_pipe {
            return exit::BROKEN_PIPE;
        }
        if !self.output_failures.is_empty() {
            return exit::OUTPUT_FAILED;
        }
        match &self.stop {
            Some(StopReason::BadInput(_)) => exit::BAD_INPUT,
            Some(StopReason::ResultsWriteFailed { .. }) => exit::OUTPUT_FAILED,
            Some(StopReason::RestartLimit(_) | StopReason::ProtocolMismatch { .. } | StopReason::NotServed { .. }) => {
                exit::GAVE_UP
            }
            Some(StopReason::Interrupted(Interrupt::Int)) => exit::INTERRUPTED,
            Some(StopReason::Interrupted(Interrupt::Term)) => exit::TERMINATED,
            Some(StopReason::Interrupted(Interrupt::Other(s))) => exit::SIGNAL_BASE + *s,
            Some(StopReason::Poisoned(_)) => exit::TASKS_FAILED,
            // A halt on failures has failures: exit 1, as a run that completed with them.
            Some(StopReason::Completed | StopReason::Halted(_)) | None => {
                let bad =
                    self.counts.failed + self.counts.quarantined + self.previous_failed + self.previous_quarantined;
                if bad > 0 { exit::TASKS_FAILED } else { exit::OK }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::SlotIndex;
    use shared::task::{BuiltinOutput, BuiltinTask};
    use worker::builtin::Builtin;

    #[test]
    fn outputs_decode_as_serde_decodes_them() {
        let outputs = [BuiltinOutput::Nothing, BuiltinOutput::Sum { sum: "14".into() }];
        for o in outputs {
            let bytes = postcard::to_stdvec(&o).unwrap();
            assert_eq!(decode_output::<BuiltinOutput>(&bytes).unwrap(), o);
        }
        // The empty output's bytes mean something else to another type, and serde says what.
        assert_eq!(decode_output::<u8>(BuiltinOutput::NOTHING_POSTCARD).unwrap(), 0);
        assert_eq!(decode_output::<String>(BuiltinOutput::NOTHING_POSTCARD).unwrap(), "");
        assert!(decode_output::<BuiltinOutput>(&[9]).is_err());
    }

    #[test]
    fn exit_codes_follow_the_documented_precedence() {
        let base = Summary {
            stop: Some(StopReason::Completed),
            counts: Counts::default(),
            previous_ok: 0,
            previous_failed: 0,
            previous_quarantined: 0,
            elapsed: Duration::ZERO,
            tally: None,
            output_failures: Vec::new(),
            broken_pipe: false,
            records_written: None,
            resumable: true,
            first_bad: Vec::new(),
        };
        let events = OutputFailure::Events {
            path: "e".into(),
            written: 1,
            error: Arc::new(io::Error::from(io::ErrorKind::StorageFull)),
        };
        let with = |stop: StopReason, lost: bool, failed: u64| {
            let mut s = base.clone();
            s.stop = Some(stop);
            s.counts.failed = failed;
            if lost {
                s.output_failures.push(events.clone());
            }
            s.exit_code()
        };
        let limit = StopReason::RestartLimit(crate::engine::RestartLimit {
            restarts: 11,
            max: 10,
            period_ns: 1,
            slot: SlotIndex(0),
            what: "x".into(),
        });
        assert_eq!(with(StopReason::Completed, false, 0), exit::OK);
        assert_eq!(with(StopReason::Completed, false, 1), exit::TASKS_FAILED);
        assert_eq!(with(StopReason::Completed, true, 1), exit::OUTPUT_FAILED);
        assert_eq!(with(StopReason::Interrupted(Interrupt::Term), false, 1), exit::TERMINATED);
        assert_eq!(with(StopReason::Interrupted(Interrupt::Term), true, 0), exit::OUTPUT_FAILED);
        assert_eq!(with(limit.clone(), false, 1), exit::GAVE_UP);
        assert_eq!(with(limit, true, 0), exit::OUTPUT_FAILED);
        let write = StopReason::ResultsWriteFailed { path: "r".into(), error: Arc::new(io::Error::other("full")) };
        assert_eq!(with(write, false, 0), exit::OUTPUT_FAILED);
        let bad = crate::input::error::InputError::new(
            crate::input::error::Place::Line(1),
            crate::input::error::Problem::MissingKind,
        );
        assert_eq!(with(StopReason::BadInput(Arc::new(bad)), true, 1), exit::BAD_INPUT);
        let mut piped = base.clone();
        piped.broken_pipe = true;
        piped.output_failures.push(events);
        assert_eq!(piped.exit_code(), exit::BROKEN_PIPE);
    }

    /// A run can be moved to another thread (to drive it from a thread pool, or hand it to a
    /// blocking task of an async runtime).
    #[test]
    fn a_run_is_send() {
        fn send<T: Send>(_: &T) {}
        let pool = Pool::builder().mode(Mode::Thread).workers(1).build(Builtin::default()).unwrap();
        let run = pool.run(vec![BuiltinTask::Noop]).unwrap();
        send(&run);
        let results = std::thread::scope(|s| s.spawn(move || run.count()).join().unwrap());
        assert_eq!(results, 1);
    }

    #[test]
    fn thread_mode_runs_an_iterator_in_process() {
        let pool = Pool::builder().mode(Mode::Thread).workers(2).build(Builtin::default()).unwrap();
        let tasks = (0..50u64).map(|n| TaskSpec::with_id(format!("s{n}"), BuiltinTask::SumSquares { n }));
        let results: Vec<_> = pool.run(tasks).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(results.len(), 50);
        let s3 = results.iter().find(|r| r.id == "s3").unwrap();
        assert_eq!(s3.output, Some(BuiltinOutput::Sum { sum: "5".into() }));
    }

    #[test]
    fn a_channel_feeds_a_running_batch_one_round_trip_at_a_time() {
        let pool = Pool::builder().mode(Mode::Thread).workers(1).build(Builtin::default()).unwrap();
        let (tx, source) = crate::channel::<BuiltinTask>().unwrap();
        let mut run = pool.run_channel(source).unwrap();
        for i in 0..20 {
            tx.send(TaskSpec::with_id(format!("t{i}"), BuiltinTask::Noop));
            let r = run.next().expect("a result per task").unwrap();
            assert_eq!(r.id, format!("t{i}"));
        }
        drop(tx);
        assert!(run.next().is_none());
        assert!(matches!(run.summary().stop, Some(StopReason::Completed)));
    }

    #[test]
    fn thread_mode_refuses_a_memory_limit_and_task_limits_are_checked() {
        let b = || Pool::builder().mode(Mode::Thread).workers(1);
        let refused = |r: Result<Pool<Builtin>, PoolError>| match r {
            Err(PoolError::Invalid(e)) => e,
            Err(e) => panic!("not a setting error: {e}"),
            Ok(_) => panic!("built"),
        };
        assert_eq!(
            refused(b().address_space_limit(1 << 30).build(Builtin::default())),
            SettingError::LimitInThreadMode { limit: "an address-space limit" }
        );
        assert_eq!(
            refused(b().skip_bad_records(true).build(Builtin::default())),
            SettingError::SkipBadRecordsInThreadMode
        );
        assert_eq!(
            refused(b().max_task_bytes(0).build(Builtin::default())),
            SettingError::TaskLimit { given: 0, max: MAX_TASK_BYTES }
        );
        let over = MAX_TASK_BYTES + 1;
        assert_eq!(
            refused(b().max_task_bytes(over).build(Builtin::default())),
            SettingError::TaskLimit { given: over, max: MAX_TASK_BYTES }
        );
        assert_eq!(
            refused(b().memory_limit(1 << 30).build(Builtin::default())),
            SettingError::LimitInThreadMode { limit: "a memory limit" }
        );
        assert!(Pool::builder().address_space_limit(1 << 30).build(Builtin::default()).is_ok());
    }

    #[test]
    fn a_task_over_the_input_limit_fails_alone_unrun() {
        let pool = Pool::builder().mode(Mode::Thread).workers(1).max_task_bytes(64).build(Builtin::default()).unwrap();
        let tasks = vec![BuiltinTask::Shell { cmd: "x".repeat(100) }, BuiltinTask::Noop];
        let mut results = pool.run(tasks).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
        results.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!((results[0].status, results[0].attempts), (shared::record::Status::Failed, 0));
        let error = results[0].error.as_deref().unwrap();
        assert!(error.contains("over the limit of 64 bytes"), "{error}");
        assert_eq!(results[1].status, shared::record::Status::Ok);
    }
}
