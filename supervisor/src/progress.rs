//! The live progress line on stderr (only on a terminal unless asked): done, running, failed,
//! crashed, restarts, rate, and ETA when the total is known.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::engine::Engine;

/// A progress display.
pub struct Progress {
    bar: ProgressBar,
    total: Option<u64>,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// A spinner for a batch of unknown size.
    pub fn new() -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
        bar.set_style(ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}").expect("valid template"));
        Self { bar, total: None }
    }

    /// A bar for `total` tasks.
    pub fn with_total(total: u64) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(10));
        bar.set_style(
            ProgressStyle::with_template("[{elapsed_precise}] {bar:30} {pos}/{len} ETA {eta} {msg}")
                .expect("valid template"),
        );
        Self { bar, total: Some(total) }
    }

    /// Redraws from the engine's counts.
    pub fn update(&mut self, engine: &Engine, now: u64) {
        let c = engine.counts();
        let done = c.finished();
        let secs = engine.secs(now).max(1e-9);
        self.bar.set_position(done);
        let mut msg = format!(
            "{done} done, {} running, {} failed, {} crashed, {} restarts, {:.0}/s",
            engine.running(),
            c.failed + c.quarantined,
            c.crashes_total(),
            c.restarts,
            done as f64 / secs
        );
        if self.total.is_none() {
            msg.push_str(&format!(", {} queued", engine.queued()));
        }
        self.bar.set_message(msg);
    }

    /// Leaves the last state on screen.
    pub fn finish(&mut self) {
        self.bar.abandon();
    }
}
