//! The stable contract between bulkhead's supervisor, its workers and the tools that read its
//! files: wire messages and their framing, task and result types, the status-page layout, the
//! stable id hash and the exit codes. No processes, threads or I/O policy live here.
#![warn(missing_docs)]

pub mod exit;
pub mod frame;
pub mod hash;
pub mod proto;
pub mod record;
pub mod shm;
pub mod stderr;
pub mod task;

pub use frame::{FrameError, FrameReader, MAX_FRAME};
pub use proto::PROTOCOL_VERSION;
