//! The built-in task kinds of the `bulkhead` binary, implemented through the same
//! [`Handler`] interface that users implement for their own tasks.

mod scan;
mod shell;

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
            BuiltinTask::SumSquares { n } => Ok(BuiltinOutput::Sum { sum: sum_squares(n)?.to_string() }),
            BuiltinTask::Scan { path, offset, len, pattern, group, lines, max_line } => {
                let p = self.pattern(pattern, group)?;
                scan::scan(&path, offset, len, &p, lines, max_line.unwrap_or(shared::task::SCAN_MAX_LINE))
            }
            BuiltinTask::Shell { cmd } => shell::run(&cmd, cx),
            BuiltinTask::Pipe { cmd, path, offset, len } => {
                let (file, start, stop) = scan::line_block(&path, offset, len)?;
                shell::run_fed(&cmd, Some(shell::Feed { file, path, start, stop }), cx)
            }
        }
    }
}

/// Sums `i*i` for `i < n` in a real loop. `black_box` on the counter keeps the compiler from
/// replacing the loop with the closed form, which it otherwise does.
pub fn sum_squares(n: u64) -> Result<u128, TaskError> {
    let mut acc: u128 = 0;
    let mut i: u64 = 0;
    while i < n {
        let x = u128::from(black_box(i));
        acc =
            acc.checked_add(x * x).ok_or_else(|| TaskError::new(format!("the sum for n = {n} overflows 128 bits")))?;
        i += 1;
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_squares_is_exact() {
        assert_eq!(sum_squares(0).unwrap(), 0);
        assert_eq!(sum_squares(4).unwrap(), 14);
        assert_eq!(sum_squares(10_000_000).unwrap(), 333_333_283_333_335_000_000);
    }
}
