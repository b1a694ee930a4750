//! Who is to blame for a worker's death, and for what: a pure decision from what the reaper,
//! the status page and the worker itself reported, and the supervisor's own reason for
//! ending it; and, for each task charged or failed, whether it runs again, by which rule.
//! The engine then carries the verdicts out (charges, requeues, restarts, records).

use shared::proto::PanicReport;
use shared::record::CrashCause;

use crate::engine::EngineConfig;
use crate::engine::cause::{ExitCause, crash_cause};
use crate::engine::config::MAX_MEMORY_FACTOR;
use crate::engine::ids::Seq;
use crate::engine::slot::KillReason;

/// What is known of one worker's death.
#[derive(Debug, Clone, Copy)]
pub struct Death<'a> {
    /// The worker.
    pub pid: u32,
    /// How it ended.
    pub exit: ExitCause,
    /// Tasks its status page showed executing.
    pub executing: &'a [Seq],
    /// The record each executing task last reported being on (`cx.at`), by seq.
    pub records: &'a [(Seq, u64)],
    /// The task its status page names as the cause, in hybrid mode.
    pub culprit: Option<Seq>,
    /// The end of its stderr.
    pub stderr_tail: &'a str,
}

/// The decision about a death.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// It exited because it was asked to, with status 0.
    pub clean: bool,
    /// It counts as a crash (restart backoff, the intensity limit, charges).
    pub crash: bool,
    /// Its cause, as recorded.
    pub cause: CrashCause,
    /// The tasks (by sequence number) charged an attempt.
    pub blamed: Vec<Seq>,
}

/// Judges a death. `killed_for` is the supervisor's reason when it was ending the worker;
/// `panic` the worker's own report, if it sent one.
///
/// Whom to blame: the timed-out task; else the task the worker itself named (panic report,
/// or the fatal-signal handler in hybrid mode); else whatever the status page shows
/// executing. Tasks that were only queued at the worker are never blamed, and nobody is when
/// the supervisor ended the worker for a reason that is not the task's fault (shutdown,
/// drain, give-up).
pub fn judge(death: &Death<'_>, killed_for: Option<&KillReason>, panic: Option<&PanicReport>) -> Verdict {
    // A worker we were ending dies for our reason; any other death (a closed connection
    // included, which is usually the death arriving first) has the kernel's cause.
    let asked = matches!(killed_for, Some(KillReason::Shutdown | KillReason::Retire(_)));
    let clean = asked && death.exit == ExitCause::Exited(0);
    let crash = killed_for.is_none_or(KillReason::is_crash);
    let cause = crash_cause(death.exit, killed_for, panic, death.stderr_tail);
    let blamed = if !crash {
        Vec::new()
    } else if let Some(KillReason::Timeout { seq, .. } | KillReason::Stalled { seq, .. }) = killed_for {
        vec![*seq]
    } else if let Some(seq) = death.culprit.or(panic.and_then(|p| p.seq.map(Seq))) {
        vec![seq]
    } else {
        death.executing.to_vec()
    };
    Verdict { clean, crash, cause, blamed }
}

/// How one attempt of a task went wrong.
#[derive(Debug, Clone, Copy)]
pub enum Mishap<'a> {
    /// Its worker died of this while executing it (a timeout included).
    Crashed(&'a CrashCause),
    /// It ended with an error: a handler's, or a command's non-zero exit (with its status).
    Failed {
        /// A command's exit status.
        exit: Option<i32>,
    },
}

/// What becomes of a task after a mishap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// It runs again, with its memory limit multiplied by `memory_factor` (1: as it was).
    Retry {
        /// Of the limit the run was given.
        memory_factor: u32,
    },
    /// Its final record says failed.
    Fail,
    /// Its final record says quarantined: it crashed its worker on every attempt it was allowed.
    Quarantine,
}

/// The rule that decided, written in a final record as `rule` (`"panic=1"`, `"retries=1"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// `--attempts N`, the default for crashes (and for failures under `--retry-failed`).
    Attempts(u32),
    /// `--retry CAUSE=N`.
    Cause {
        /// The cause.
        cause: &'static str,
        /// Its attempts.
        attempts: u32,
    },
    /// `--retries N`: runs of a failing task.
    Retries(u32),
    /// `--retry-exit`: the command exited with this status, retried within `--attempts`.
    RetryExit(i32),
    /// `--fail-exit`: the command exited with this status and is never retried.
    FailExit(i32),
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::Attempts(n) => write!(f, "attempts={n}"),
            Rule::Cause { cause, attempts } => write!(f, "{cause}={attempts}"),
            Rule::Retries(n) => write!(f, "retries={n}"),
            Rule::RetryExit(c) => write!(f, "retry-exit={c}"),
            Rule::FailExit(c) => write!(f, "fail-exit={c}"),
        }
    }
}

/// The decision about a task after a mishap, and the rule that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// What becomes of it.
    pub next: Next,
    /// Why.
    pub rule: Rule,
}

/// Decides a task's future after `mishap` on its attempt number `used` (1 for the first);
/// `memory_factor` is the factor its attempt ran with (1 at first).
///
/// - A crash (any cause; for a command, any but a timeout) is retried while `used` is below
///   the cause's `--retry` attempts, else `--attempts`; then the task is quarantined. An
///   `oom` rule with a factor multiplies the next attempt's memory limit (up to 64 times).
/// - A failure (a handler's error, a command's non-zero exit) and a command's timeout end the
///   task as failed, unless the runs of `--retries` (or, with `--retry-failed`, `--attempts`)
///   are not used up; a `--fail-exit` status fails at once, a `--retry-exit` status is retried
///   within `--attempts`. A `--retry timeout=N` rule counts a command's timeouts instead.
pub fn decide(cfg: &EngineConfig, command: bool, mishap: Mishap<'_>, used: u32, memory_factor: u32) -> Decision {
    let rules = &cfg.retry;
    let failing =
        if cfg.retry_failed { Rule::Attempts(cfg.attempts.max(rules.retries)) } else { Rule::Retries(rules.retries) };
    let limit = |rule: Rule| match rule {
        Rule::Attempts(n) | Rule::Cause { attempts: n, .. } | Rule::Retries(n) => n,
        Rule::RetryExit(_) => cfg.attempts,
        Rule::FailExit(_) => 1,
    };
    let (rule, fail, factor) = match mishap {
        Mishap::Crashed(cause) => {
            let own = rules.by_cause.iter().find(|r| r.cause == cause.name());
            let by_cause = own.map(|r| Rule::Cause { cause: r.cause, attempts: r.attempts });
            let command_timeout = command && matches!(cause, CrashCause::Timeout { .. });
            let rule = match by_cause {
                Some(r) => r,
                None if command_timeout => failing,
                None => Rule::Attempts(cfg.attempts),
            };
            (rule, command_timeout, own.and_then(|r| r.memory_factor))
        }
        Mishap::Failed { exit } => {
            let rule = match exit {
                Some(c) if command && rules.fail_exit.contains(&c) => Rule::FailExit(c),
                Some(c) if command && rules.retry_exit.contains(&c) => Rule::RetryExit(c),
                _ => failing,
            };
            (rule, true, None)
        }
    };
    let next = if used < limit(rule) {
        let memory_factor = factor.map_or(memory_factor, |f| memory_factor.saturating_mul(f).min(MAX_MEMORY_FACTOR));
        Next::Retry { memory_factor }
    } else if fail {
        Next::Fail
    } else {
        Next::Quarantine
    };
    Decision { next, rule }
}

#[cfg(test)]
mod tests {
    use nix::sys::signal::Signal;

    use super::*;

    fn death(exit: ExitCause, executing: &[Seq]) -> Death<'_> {
        Death { pid: 7, exit, executing, records: &[], culprit: None, stderr_tail: "" }
    }

    const SEGV: ExitCause = ExitCause::Signaled { signal: Signal::SIGSEGV, core: false };

    #[test]
    fn an_unplanned_death_blames_what_the_page_shows_executing() {
        let v = judge(&death(SEGV, &[Seq(4), Seq(5)]), None, None);
        assert!(v.crash && !v.clean);
        assert_eq!(v.blamed, vec![Seq(4), Seq(5)]);
        assert_eq!(v.cause, CrashCause::Signal { signal: "SIGSEGV".into(), core: false, detail: None });
    }

    #[test]
    fn the_worker_s_own_word_narrows_the_blame() {
        let mut d = death(SEGV, &[Seq(4), Seq(5)]);
        d.culprit = Some(Seq(5));
        assert_eq!(judge(&d, None, None).blamed, vec![Seq(5)]);
        let report = PanicReport { seq: Some(4), message: "boom".into() };
        let v = judge(&death(ExitCause::Exited(101), &[Seq(4), Seq(5)]), None, Some(&report));
        assert_eq!((v.blamed, v.cause), (vec![Seq(4)], CrashCause::Panic { message: "boom".into() }));
    }

    #[test]
    fn a_timeout_blames_the_timed_out_task_whatever_else_ran() {
        let reason = KillReason::Timeout { seq: Seq(9), limit_ms: 100 };
        let v = judge(
            &death(ExitCause::Signaled { signal: Signal::SIGKILL, core: false }, &[Seq(8), Seq(9)]),
            Some(&reason),
            None,
        );
        assert_eq!((v.blamed, v.cause), (vec![Seq(9)], CrashCause::Timeout { limit_ms: 100 }));
    }

    #[test]
    fn a_stall_blames_the_stalled_task_alone() {
        let reason = KillReason::Stalled { seq: Seq(8), limit_ms: 500, progress: 41 };
        let v = judge(
            &death(ExitCause::Signaled { signal: Signal::SIGTERM, core: false }, &[Seq(8), Seq(9)]),
            Some(&reason),
            None,
        );
        assert!(v.crash);
        assert_eq!((v.blamed, v.cause), (vec![Seq(8)], CrashCause::Stalled { limit_ms: 500, progress: 41 }));
    }

    #[test]
    fn our_own_ends_charge_nobody() {
        let retire = KillReason::Retire(crate::engine::lifecycle::Retirement::Tasks { tasks: 5 });
        for reason in [KillReason::Shutdown, KillReason::Drain, KillReason::GiveUp, retire] {
            let v = judge(&death(ExitCause::Exited(0), &[Seq(1)]), Some(&reason), None);
            assert!(!v.crash && v.blamed.is_empty(), "{reason:?}");
            assert_eq!(v.clean, matches!(reason, KillReason::Shutdown | KillReason::Retire(_)));
        }
        // Asked to shut down but died of a signal: not clean, and still nobody's fault.
        let v = judge(&death(SEGV, &[Seq(1)]), Some(&KillReason::Shutdown), None);
        assert!(!v.clean && !v.crash);
    }

    fn cfg(rules: &str) -> EngineConfig {
        let mut c = EngineConfig::default();
        if !rules.is_empty() {
            c.retry.by_cause = crate::engine::config::parse_retry_rules(rules).unwrap();
        }
        c
    }

    fn panic_cause() -> CrashCause {
        CrashCause::Panic { message: "boom".into() }
    }

    fn segv_cause() -> CrashCause {
        CrashCause::Signal { signal: "SIGSEGV".into(), core: false, detail: None }
    }

    const RETRY: Next = Next::Retry { memory_factor: 1 };

    #[test]
    fn crashes_retry_within_attempts_then_quarantine() {
        let c = cfg("");
        let segv = segv_cause();
        assert_eq!(decide(&c, false, Mishap::Crashed(&segv), 2, 1), Decision { next: RETRY, rule: Rule::Attempts(3) });
        let d = decide(&c, false, Mishap::Crashed(&segv), 3, 1);
        assert_eq!(d, Decision { next: Next::Quarantine, rule: Rule::Attempts(3) });
        assert_eq!(d.rule.to_string(), "attempts=3");
    }

    #[test]
    fn a_cause_rule_decides_its_cause_only() {
        let c = cfg("panic=1");
        let (p, segv) = (panic_cause(), segv_cause());
        let d = decide(&c, false, Mishap::Crashed(&p), 1, 1);
        assert_eq!(d, Decision { next: Next::Quarantine, rule: Rule::Cause { cause: "panic", attempts: 1 } });
        assert_eq!(d.rule.to_string(), "panic=1");
        assert_eq!(decide(&c, false, Mishap::Crashed(&segv), 1, 1).next, RETRY);
        // A worker's death while running a command is a crash like any other.
        assert_eq!(decide(&c, true, Mishap::Crashed(&p), 1, 1).next, Next::Quarantine);
    }

    #[test]
    fn an_oom_rule_multiplies_the_memory_limit_up_to_the_cap() {
        let c = cfg("oom=3:x2");
        let oom = CrashCause::Oom { detail: "memory allocation of 1 bytes failed".into(), limit: None, peak: None };
        assert_eq!(decide(&c, false, Mishap::Crashed(&oom), 1, 1).next, Next::Retry { memory_factor: 2 });
        assert_eq!(decide(&c, false, Mishap::Crashed(&oom), 2, 2).next, Next::Retry { memory_factor: 4 });
        assert_eq!(decide(&c, false, Mishap::Crashed(&oom), 3, 4).next, Next::Quarantine);
        assert_eq!(decide(&c, false, Mishap::Crashed(&oom), 1, 48).next, Next::Retry { memory_factor: 64 });
        // Another cause keeps the factor the task has.
        assert_eq!(decide(&c, false, Mishap::Crashed(&segv_cause()), 1, 2).next, Next::Retry { memory_factor: 2 });
    }

    #[test]
    fn a_command_s_timeout_and_failure_fail_once_unless_retries_allow_more() {
        let mut c = cfg("");
        let t = CrashCause::Timeout { limit_ms: 100 };
        let failed = Mishap::Failed { exit: Some(1) };
        assert_eq!(decide(&c, true, Mishap::Crashed(&t), 1, 1), Decision { next: Next::Fail, rule: Rule::Retries(1) });
        assert_eq!(decide(&c, true, failed, 1, 1), Decision { next: Next::Fail, rule: Rule::Retries(1) });
        // A timeout of a task that is not a command stays a crash.
        assert_eq!(decide(&c, false, Mishap::Crashed(&t), 1, 1).next, RETRY);
        c.retry.retries = 2;
        assert_eq!(decide(&c, true, Mishap::Crashed(&t), 1, 1).next, RETRY);
        assert_eq!(decide(&c, true, failed, 2, 1), Decision { next: Next::Fail, rule: Rule::Retries(2) });
        // --retry timeout=N counts a command's timeouts instead.
        c.retry.by_cause = crate::engine::config::parse_retry_rules("timeout=3").unwrap();
        assert_eq!(decide(&c, true, Mishap::Crashed(&t), 2, 1).next, RETRY);
        let d = decide(&c, true, Mishap::Crashed(&t), 3, 1);
        assert_eq!(d, Decision { next: Next::Fail, rule: Rule::Cause { cause: "timeout", attempts: 3 } });
    }

    #[test]
    fn exit_codes_retry_or_fail_by_their_lists() {
        let mut c = cfg("");
        c.retry.retry_exit = vec![75, 143];
        c.retry.fail_exit = vec![2];
        c.retry.retries = 5;
        let exit = |code| Mishap::Failed { exit: Some(code) };
        assert_eq!(decide(&c, true, exit(2), 1, 1), Decision { next: Next::Fail, rule: Rule::FailExit(2) });
        assert_eq!(decide(&c, true, exit(75), 2, 1), Decision { next: RETRY, rule: Rule::RetryExit(75) });
        assert_eq!(decide(&c, true, exit(75), 3, 1), Decision { next: Next::Fail, rule: Rule::RetryExit(75) });
        assert_eq!(decide(&c, true, exit(1), 4, 1).next, RETRY);
        // A handler's error has no exit status: --retries alone, or --attempts with --retry-failed.
        c.retry.retries = 1;
        assert_eq!(decide(&c, false, Mishap::Failed { exit: None }, 1, 1).next, Next::Fail);
        c.retry_failed = true;
        let d = decide(&c, false, Mishap::Failed { exit: None }, 2, 1);
        assert_eq!(d, Decision { next: RETRY, rule: Rule::Attempts(3) });
    }
}
