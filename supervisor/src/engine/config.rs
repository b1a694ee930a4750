//! The policies a run's engine is built with, in engine units (nanoseconds), and the
//! isolation mode.

use shared::task::FaultKind;

use crate::engine::inject::Inject;
use crate::engine::restart::RestartPolicy;

/// The most tasks in flight on one worker thread; beyond this, queueing only adds latency.
pub const MAX_INFLIGHT_PER_THREAD: usize = 4096;

/// The largest task input a worker can be sent: one task must fit in one message frame
/// (16 MiB) beside the few bytes of its assignment (sequence number, attempt, fault, lengths:
/// at most 33).
pub const MAX_TASK_BYTES: usize = shared::MAX_FRAME as usize - 64;

/// Tasks that must have succeeded before a relative timeout (`--timeout 300%`) applies.
pub const TIMEOUT_SAMPLES: u64 = 5;

/// A fault carried by a task, and on which attempts it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultPlan {
    /// The fault.
    pub kind: FaultKind,
    /// Fires on attempts `1..=n`; `None` on every attempt (a poison task).
    pub attempts: Option<u32>,
}

/// The policies of a run, in engine units (nanoseconds).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Worker slots.
    pub workers: usize,
    /// Tasks one worker runs at once (hybrid mode above 1).
    pub threads_per_worker: u32,
    /// Attempts per task before quarantine.
    pub attempts: u32,
    /// Per-task wall-clock limit; with `timeout_percent`, its floor (and the only limit until
    /// enough tasks have succeeded).
    pub timeout_ns: Option<u64>,
    /// A per-task limit of this percentage of the median time of the tasks that succeeded
    /// so far, once [`TIMEOUT_SAMPLES`] have.
    pub timeout_percent: Option<u32>,
    /// How long a running task may report no progress before its worker is killed as
    /// stalled (`None`: never).
    pub stall_timeout_ns: Option<u64>,
    /// Silence after which a worker counts as unresponsive (`None`: never, thread mode).
    pub heartbeat_timeout_ns: Option<u64>,
    /// SIGTERM to SIGKILL.
    pub term_grace_ns: u64,
    /// How long a closed or broken connection waits for the death that explains it.
    pub protocol_grace_ns: u64,
    /// How long a new worker may take to become ready.
    pub start_timeout_ns: u64,
    /// How long running tasks may finish after SIGINT/SIGTERM.
    pub drain_grace_ns: u64,
    /// Restart backoff and intensity.
    pub restart: RestartPolicy,
    /// Retry tasks whose handler reported an error, within `attempts`.
    pub retry_failed: bool,
    /// Attempts by crash cause, runs of a failing task, exit codes that retry or fail.
    pub retry: RetryRules,
    /// Random faults.
    pub inject: Option<Inject>,
    /// Work to keep queued per worker thread, by the measured task duration.
    pub queue_budget_ns: u64,
    /// Seed for backoff jitter.
    pub seed: u64,
    /// The largest encoded task input; a larger task fails when it is taken in, unrun.
    pub max_task_bytes: usize,
    /// Tasks one worker runs before it is retired and replaced (`None`: no limit).
    pub max_tasks_per_worker: Option<u64>,
    /// Resident bytes above which a worker is retired between tasks (`None`: no limit).
    pub max_worker_memory: Option<u64>,
    /// A `--halt` rule, with the run's total where known.
    pub halt: Option<(super::halt::Halt, Option<u64>)>,
    /// The resident memory a task's worker and process tree may use together, in bytes.
    pub memory_limit: Option<u64>,
    /// After a crash on a record the handler reported (`cx.at(index)`), run the task again
    /// skipping that record (`--skip-bad-records`).
    pub skip_bad_records: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            workers: 2,
            threads_per_worker: 1,
            attempts: 3,
            timeout_ns: None,
            timeout_percent: None,
            stall_timeout_ns: None,
            heartbeat_timeout_ns: Some(2_000_000_000),
            term_grace_ns: 500_000_000,
            protocol_grace_ns: 200_000_000,
            start_timeout_ns: 10_000_000_000,
            drain_grace_ns: 10_000_000_000,
            restart: RestartPolicy::default(),
            retry_failed: false,
            retry: RetryRules::default(),
            inject: None,
            queue_budget_ns: 2_000_000,
            seed: 0,
            max_task_bytes: MAX_TASK_BYTES,
            max_tasks_per_worker: None,
            max_worker_memory: None,
            halt: None,
            memory_limit: None,
            skip_bad_records: false,
        }
    }
}

/// How tasks are isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Each worker is a process: a crash ends only that worker, which is replaced, and its
    /// task is retried.
    #[default]
    Process,
    /// Each worker is a thread of this process: cheaper, but a crash ends everything and a
    /// panic poisons the shared state.
    Thread,
}

/// The crash causes a `--retry` rule may name, as records write them.
pub const RETRY_CAUSES: [&str; 8] =
    ["signal", "panic", "oom", "timeout", "stalled", "unresponsive", "protocol", "exit"];

/// The most a memory limit is multiplied by over a task's retries after running out of memory.
pub const MAX_MEMORY_FACTOR: u32 = 64;

/// Attempts for the tasks whose worker died of one cause (`--retry panic=1`, `oom=2:x2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CauseRule {
    /// One of [`RETRY_CAUSES`].
    pub cause: &'static str,
    /// Attempts in all, after which a task whose last attempt died of this cause is set aside.
    pub attempts: u32,
    /// For `oom`: the memory limit of the task's next attempt is multiplied by this.
    pub memory_factor: Option<u32>,
}

/// The retry rules beyond `--attempts`. The one decision that applies them is
/// [`decide`](crate::engine::blame::decide).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryRules {
    /// Per crash cause; a cause without a rule gets `--attempts`.
    pub by_cause: Vec<CauseRule>,
    /// Runs in all of a task that failed (a command's non-zero exit or timeout, a handler's
    /// error), GNU parallel's `--retries`: 1, no retry.
    pub retries: u32,
    /// A command exiting with one of these is retried within `--attempts`.
    pub retry_exit: Vec<i32>,
    /// A command exiting with one of these fails at once, whatever else allows.
    pub fail_exit: Vec<i32>,
}

impl Default for RetryRules {
    fn default() -> Self {
        Self { by_cause: Vec::new(), retries: 1, retry_exit: Vec::new(), fail_exit: Vec::new() }
    }
}

/// Why `--retry` was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RetryRuleError {
    /// Not `CAUSE=N`.
    #[error("parse '{0}': expected CAUSE=N or oom=N:xF (e.g. panic=1,oom=2:x2)")]
    Shape(String),
    /// A cause no worker dies of.
    #[error("parse '{rule}': unknown cause '{cause}' (one of {})", RETRY_CAUSES.join(", "))]
    Cause {
        /// The rule.
        rule: String,
        /// The cause it names.
        cause: String,
    },
    /// Zero attempts, or not a number.
    #[error("parse '{0}': attempts must be a whole number of at least 1")]
    Attempts(String),
    /// A factor on another cause than `oom`, or not a whole number from 2.
    #[error("parse '{0}': a memory factor (:xF, F from 2 to {MAX_MEMORY_FACTOR}) belongs to oom only")]
    Factor(String),
    /// The same cause twice.
    #[error("parse '{0}': the cause is given twice")]
    Twice(String),
}

/// Parses `--retry`: `CAUSE=N[,CAUSE=N...]`, and `oom=N:xF` for a larger memory limit on each
/// retry of a task that ran out of memory.
pub fn parse_retry_rules(spec: &str) -> Result<Vec<CauseRule>, RetryRuleError> {
    let mut rules: Vec<CauseRule> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let shape = || RetryRuleError::Shape(part.to_string());
        let (cause, rest) = part.split_once('=').ok_or_else(shape)?;
        let cause = cause.trim();
        let Some(&name) = RETRY_CAUSES.iter().find(|c| **c == cause) else {
            return Err(RetryRuleError::Cause { rule: part.to_string(), cause: cause.to_string() });
        };
        let (n, factor) = match rest.split_once(':') {
            Some((n, f)) => (n, Some(f)),
            None => (rest, None),
        };
        let attempts = n.trim().parse::<u32>().ok().filter(|&n| n >= 1);
        let attempts = attempts.ok_or_else(|| RetryRuleError::Attempts(part.to_string()))?;
        let memory_factor = match factor {
            None => None,
            Some(f) => {
                let f = f.trim().strip_prefix('x').and_then(|f| f.parse::<u32>().ok());
                match f {
                    Some(f) if name == "oom" && (2..=MAX_MEMORY_FACTOR).contains(&f) => Some(f),
                    _ => return Err(RetryRuleError::Factor(part.to_string())),
                }
            }
        };
        if rules.iter().any(|r| r.cause == name) {
            return Err(RetryRuleError::Twice(part.to_string()));
        }
        rules.push(CauseRule { cause: name, attempts, memory_factor });
    }
    if rules.is_empty() {
        return Err(RetryRuleError::Shape(spec.to_string()));
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_rules_parse_and_bad_ones_are_named() {
        let r = parse_retry_rules("panic=1, oom=2:x2").unwrap();
        assert_eq!(
            r,
            vec![
                CauseRule { cause: "panic", attempts: 1, memory_factor: None },
                CauseRule { cause: "oom", attempts: 2, memory_factor: Some(2) }
            ]
        );
        assert!(matches!(parse_retry_rules("segv=1"), Err(RetryRuleError::Cause { .. })));
        assert!(matches!(parse_retry_rules("panic=0"), Err(RetryRuleError::Attempts(_))));
        assert!(matches!(parse_retry_rules("panic=2:x2"), Err(RetryRuleError::Factor(_))));
        assert!(matches!(parse_retry_rules("oom=2:x1"), Err(RetryRuleError::Factor(_))));
        assert!(matches!(parse_retry_rules("panic=1,panic=2"), Err(RetryRuleError::Twice(_))));
        assert!(matches!(parse_retry_rules("panic"), Err(RetryRuleError::Shape(_))));
        assert!(parse_retry_rules("").is_err());
    }
}
