//! The built-in task kinds of the `bulkhead` binary, implemented through the same
//! [`Handler`] interface that users implement for their own tasks.

mod scan;
mod shell;
mod shell_spawn;

pub use scan::{MAX_MAX_LINE, Pattern, PatternError};

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared::proto::TaskError;
use shared::task::{BuiltinOutput, BuiltinTask};

use crate::handler::{Handler, TaskContext};

pub use shell::HEAD_BYTES;

/// The handler for [`BuiltinTask`]s. It has no configuration: what travels to a worker is
/// nothing, and each worker starts with its own empty cache.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Builtin {
    /// Where shell commands write their whole output (see [`Builtin::spooling`]); `None`:
    /// only the heads are kept, in the record.
    #[serde(default)]
    spool: Option<std::path::PathBuf>,
    /// Compiled patterns by source and counted group: scan tasks over ranges of one file
    /// share a pattern, and compiling it per task would cost more than scanning a small range.
    #[serde(skip)]
    patterns: Mutex<PatternCache>,
}

/// Compiled patterns by (pattern, counted group).
type PatternCache = HashMap<(String, Option<String>), Arc<scan::Pattern>>;

impl Builtin {
    /// The name both sides use for this handler.
    pub const NAME: &'static str = "bulkhead-builtin";

    /// A handler whose shell commands write their stdout and stderr straight into the files
    /// `DIR/SEQ/out` and `DIR/SEQ/err` (SEQ: the assignment's seq), which the supervisor reads
    /// and removes where the record's heads do not hold them whole; where they do, the task
    /// thread's next command takes the directory over (renamed, emptied). The command writes
    /// into the file itself, so no byte of it passes through the worker's memory, however
    /// much it prints.
    pub fn spooling(dir: std::path::PathBuf) -> Self {
        Self { spool: Some(dir), patterns: Mutex::default() }
    }

    fn pattern(&self, pattern: String, group: Option<String>) -> Result<Arc<scan::Pattern>, TaskError> {
        let mut cache = self.patterns.lock().unwrap_or_else(|e| e.into_inner());
        let key = (pattern, group);
        if let Some(p) = cache.get(&key) {
            return Ok(p.clone());
        }
        let p = Arc::new(scan::Pattern::new(&key.0, key.1.as_deref()).map_err(|e| TaskError::new(e.to_string()))?);
        if cache.len() >= 64 {
            cache.clear();
        }
        cache.insert(key, p.clone());
        Ok(p)
    }
}

impl Handler for Builtin {
    type Task = BuiltinTask;
    type Output = BuiltinOutput;

    fn name() -> &'static str {
        Self::NAME
    }

    fn handle(&self, task: BuiltinTask, cx: &TaskContext<'_>) -> Result<BuiltinOutput, TaskError> {
        match task {
            BuiltinTask::Noop => Ok(BuiltinOutput::Nothing),
            BuiltinTask::Sleep { ms } => {
                std::thread::sleep(Duration::from_millis(ms));
                Ok(BuiltinOutput::Nothing)
            }
            BuiltinTask::SumSquares { n } => {
                Ok(BuiltinOutput::Sum { sum: sum_squares(n, &|done| cx.progress(done))?.to_string() })
            }
            BuiltinTask::Scan { path, offset, len, pattern, group, lines, max_line } => {
                let p = self.pattern(pattern, group)?;
                let max_line = max_line.unwrap_or(shared::task::SCAN_MAX_LINE);
                scan::scan(&path, offset, len, &p, lines, max_line, &|bytes| cx.progress(bytes))
            }
            BuiltinTask::Shell { cmd } => shell::run(&cmd, self.spool.as_deref(), cx),
            BuiltinTask::ShellParts { parts } => {
                use std::os::unix::ffi::OsStrExt;
                let slot = crate::slot::get().to_string();
                let cmd = parts.join(slot.as_bytes());
                shell::run(std::ffi::OsStr::from_bytes(&cmd), self.spool.as_deref(), cx)
            }
            BuiltinTask::Pipe { cmd, path, offset, len } => {
                let (file, start, stop) = scan::line_block(&path, offset, len)?;
                shell::run_fed(&cmd, self.spool.as_deref(), Some(shell::Feed { file, path, start, stop }), cx)
            }
        }
    }
}

/// Iterations of [`sum_squares`] between two progress reports: a few milliseconds of work,
/// so a report costs nothing measurable and a stall limit of a fraction of a second still sees
/// the loop moving.
const SUM_PROGRESS_EVERY: u64 = 1 << 20;

/// Sums `i*i` for `i < n` in a real loop, telling `progress` of every
/// 2^20 iterations done. `black_box` on the counter keeps the compiler from
/// replacing the loop with the closed form, which it otherwise does.
pub fn sum_squares(n: u64, progress: &dyn Fn(u64)) -> Result<u128, TaskError> {
    let mut acc: u128 = 0;
    let mut i: u64 = 0;
    while i < n {
        let x = u128::from(black_box(i));
        acc =
            acc.checked_add(x * x).ok_or_else(|| TaskError::new(format!("the sum for n = {n} overflows 128 bits")))?;
        i += 1;
        if i.is_multiple_of(SUM_PROGRESS_EVERY) {
            progress(SUM_PROGRESS_EVERY);
        }
    }
    progress(n % SUM_PROGRESS_EVERY);
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_squares_is_exact() {
        let none = |_| {};
        assert_eq!(sum_squares(0, &none).unwrap(), 0);
        assert_eq!(sum_squares(4, &none).unwrap(), 14);
        let done = std::cell::Cell::new(0);
        assert_eq!(sum_squares(10_000_000, &|n| done.set(done.get() + n)).unwrap(), 333_333_283_333_335_000_000);
        assert_eq!(done.get(), 10_000_000, "every iteration is reported once");
    }
}
