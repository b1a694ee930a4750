//! What a run leaves for people and programs: the results journal, the progress line, the
//! control socket that answers `bulkhead status`, and the private run directory it lives in.

#[cfg(feature = "cli")]
pub mod commands;
pub mod control;
pub mod events;
pub mod failure;
pub mod files;
pub mod journal;
pub mod progress;
pub mod rundir;
