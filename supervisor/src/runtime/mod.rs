//! The runtime: the one thread that owns the engine and performs its actions ([`event_loop`]),
//! over a backend of worker processes ([`process`]) or of threads ([`thread_mode`]), with the
//! signals that reach the run ([`signals`]).

pub mod event_loop;
pub mod process;
pub(crate) mod procfs;
pub mod signals;
pub mod tally;
pub mod thread_mode;
pub mod waker;

pub use event_loop::{Backend, Cx, Hooks, PollSet, Runtime};
