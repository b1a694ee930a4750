//! The supervisor's state machine: which worker slots hold which workers, which tasks are
//! queued, in flight or finished, and what to do next.
//!
//! It owns all of the run's logical state and changes it in one place, [`Engine::handle`],
//! fed by events (frames, deaths reported by the reaper, timer ticks, signals) and answering
//! with [`Action`]s for the loop to perform (spawn, send, signal). It performs no I/O and
//! reads no clock, so it is tested by feeding events and checking actions, with no process
//! involved. Two things leave it through the [`Sink`] instead of as actions, because they
//! happen once per task and must not cost an allocation each: final records, whose output
//! bytes are borrowed from the frame they arrived in, and events.

pub mod blame;
pub mod cause;
pub mod config;
pub mod halt;
pub mod ids;
pub mod inject;
pub mod job;
pub mod lifecycle;
pub mod machine;
pub mod restart;
pub mod slot;
#[cfg(test)]
mod tests;
pub mod timeout;
pub mod types;

pub use cause::ExitCause;
pub use config::{EngineConfig, FaultPlan, MAX_INFLIGHT_PER_THREAD, Mode};
pub use ids::{Seq, SlotIndex};
pub use job::{Job, JobBuilder};
pub use machine::Engine;
pub use slot::{KillReason, SlotState};
pub use types::{
    Action, Counts, Ending, Event, Finished, Interrupt, Misuse, Poison, Probe, RestartLimit, Sink, SpawnError,
    StopReason, WorkerLine,
};
