//! Live progress on stderr: done, running, failed, crashed, restarts, rate, and an ETA when
//! the total is known. On a terminal an indicatif bar; when asked for (`--progress always`)
//! on something that is not one (a systemd journal, a Slurm log), a plain line every few
//! seconds instead, since redrawing a bar there only makes noise.

use std::io::Write;

#[cfg(feature = "progress-bar")]
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Without the `progress-bar` feature (and indicatif) there is no bar: the plain line serves
/// a terminal too.
#[cfg(not(feature = "progress-bar"))]
enum ProgressBar {}

#[cfg(not(feature = "progress-bar"))]
impl ProgressBar {
    fn set_message(&self, _: String) {
        match *self {}
    }
    fn set_position(&self, _: u64) {
        match *self {}
    }
    fn abandon(&self) {
        match *self {}
    }
}

use crate::engine::Engine;

/// Seconds between plain progress lines.
const PLAIN_EVERY_NS: u64 = 5_000_000_000;

/// A progress display.
pub struct Progress {
    bar: Option<ProgressBar>,
    total: Option<u64>,
    last_plain: u64,
}

impl Progress {
    /// A display for a batch of `total` tasks (if known).
    pub fn new(total: Option<u64>) -> Self {
        #[cfg(not(feature = "progress-bar"))]
        let bar = None;
        #[cfg(feature = "progress-bar")]
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let target = ProgressDrawTarget::stderr_with_hz(10);
            match total {
                Some(n) => {
                    let bar = ProgressBar::with_draw_target(Some(n), target);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "[{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} ETA {eta} {msg}",
                        )
                        .expect("valid template"),
                    );
                    bar
                }
                None => {
                    let bar = ProgressBar::with_draw_target(None, target);
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}").expect("valid template"),
                    );
                    bar
                }
            }
        });
        Self { bar, total, last_plain: 0 }
    }

    /// The counts, all from one reading of the engine. `done`: how the finished count is
    /// written, or `None` where a bar with a known total shows it as its position (said twice,
    /// from two readings of a moving count, the two disagree on screen). What is queued is named for what
    /// it is: while the input is open, tasks read ahead of need (a constant buffer, not a
    /// backlog); once it is all read, tasks still waiting for a worker.
    fn line(engine: &Engine, now: u64, done_text: Option<String>) -> String {
        let c = engine.counts();
        let done = c.finished();
        let secs = engine.secs(now).max(1e-9);
        let mut msg = done_text.map(|d| format!("{d} done, ")).unwrap_or_default();
        msg.push_str(&format!(
            "{} running, {} failed, {} crashed, {} restarts, {:.0}/s",
            engine.running(),
            c.failed + c.quarantined,
            c.crashes_total(),
            c.restarts,
            done as f64 / secs
        ));
        let queued = engine.queued();
        if engine.is_accepting() {
            msg.push_str(&format!(", {queued} read ahead"));
        } else if queued > 0 {
            msg.push_str(&format!(", {queued} waiting"));
        }
        msg
    }

    /// Redraws from the engine's counts.
    pub fn update(&mut self, engine: &Engine, now: u64) {
        match &self.bar {
            Some(bar) => {
                // The message first: setting the position may draw, and must draw this text.
                let done = self.total.is_none().then(|| engine.counts().finished().to_string());
                bar.set_message(Self::line(engine, now, done));
                bar.set_position(engine.counts().finished());
            }
            None => {
                if now.saturating_sub(self.last_plain) >= PLAIN_EVERY_NS {
                    self.last_plain = now;
                    let done = engine.counts().finished();
                    let done_text = match self.total {
                        Some(t) => format!("{done}/{t}"),
                        None => done.to_string(),
                    };
                    let mut line = format!("bulkhead: progress: {}", Self::line(engine, now, Some(done_text)));
                    if let Some(t) = self.total {
                        let rate = done as f64 / engine.secs(now).max(1e-9);
                        if rate > 0.0 && t > done {
                            line.push_str(&format!(", ETA {:.0}s", (t - done) as f64 / rate));
                        }
                    }
                    let _ = writeln!(std::io::stderr(), "{line}");
                }
            }
        }
    }

    /// How often the loop should wake to redraw.
    pub fn interval_ns(&self) -> u64 {
        if self.bar.is_some() { 100_000_000 } else { 1_000_000_000 }
    }

    /// Leaves the last state on screen.
    pub fn finish(&mut self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}
