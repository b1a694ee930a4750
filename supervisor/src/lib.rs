//! bulkhead: run batches over crash-isolated worker processes.
#![warn(missing_docs)]

pub mod cli;
pub mod compare;
pub mod control;
pub mod demo;
pub mod engine;
pub mod events;
pub mod idset;
pub mod inject;
pub mod input;
pub mod journal;
pub mod pool;
pub mod process;
pub mod progress;
pub mod reap;
pub mod report;
pub mod restart;
pub mod rundir;
pub mod runloop;
pub mod shard;
pub mod signals;
pub mod source;
pub mod spawn;
pub mod thread_mode;
pub mod units;

pub use pool::{Mode, Pool, PoolBuilder, PoolError, Run, Summary, TaskResult};
pub use source::{ChannelSource, TaskSender, TaskSpec, channel};
pub use worker::{Handler, TaskContext, TaskError, serve_if_worker};
