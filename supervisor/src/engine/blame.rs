//! Who is to blame for a worker's death, and for what: a pure decision from what the reaper,
//! the status page and the worker itself reported, and the supervisor's own reason for
//! ending it. The engine then carries the verdict out (charges, requeues, restarts).

use shared::proto::PanicReport;
use shared::record::CrashCause;

use crate::engine::cause::{ExitCause, crash_cause};
use crate::engine::slot::KillReason;

/// What is known of one worker's death.
#[derive(Debug, Clone, Copy)]
pub struct Death<'a> {
    /// The worker.
    pub pid: u32,
    /// How it ended.
    pub exit: ExitCause,
    /// Tasks its status page showed executing.
    pub executing: &'a [u64],
    /// The task its status page names as the cause, in hybrid mode.
    pub culprit: Option<u64>,
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
    pub blamed: Vec<u64>,
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
    } else if let Some(seq) = death.culprit.or(panic.and_then(|p| p.seq)) {
        vec![seq]
    } else {
        death.executing.to_vec()
    };
    Verdict { clean, crash, cause, blamed }
}

#[cfg(test)]
mod tests {
    use nix::sys::signal::Signal;

    use super::*;

    fn death(exit: ExitCause, executing: &[u64]) -> Death<'_> {
        Death { pid: 7, exit, executing, culprit: None, stderr_tail: "" }
    }

    const SEGV: ExitCause = ExitCause::Signaled { signal: Signal::SIGSEGV, core: false };

    #[test]
    fn an_unplanned_death_blames_what_the_page_shows_executing() {
        let v = judge(&death(SEGV, &[4, 5]), None, None);
        assert!(v.crash && !v.clean);
        assert_eq!(v.blamed, vec![4, 5]);
        assert_eq!(v.cause, CrashCause::Signal { signal: "SIGSEGV".into(), core: false, detail: None });
    }

    #[test]
    fn the_worker_s_own_word_narrows_the_blame() {
        let mut d = death(SEGV, &[4, 5]);
        d.culprit = Some(5);
        assert_eq!(judge(&d, None, None).blamed, vec![5]);
        let report = PanicReport { seq: Some(4), message: "boom".into() };
        let v = judge(&death(ExitCause::Exited(101), &[4, 5]), None, Some(&report));
        assert_eq!((v.blamed, v.cause), (vec![4], CrashCause::Panic { message: "boom".into() }));
    }

    #[test]
    fn a_timeout_blames_the_timed_out_task_whatever_else_ran() {
        let reason = KillReason::Timeout { seq: 9, limit_ms: 100 };
        let v =
            judge(&death(ExitCause::Signaled { signal: Signal::SIGKILL, core: false }, &[8, 9]), Some(&reason), None);
        assert_eq!((v.blamed, v.cause), (vec![9], CrashCause::Timeout { limit_ms: 100 }));
    }

    #[test]
    fn a_stall_blames_the_stalled_task_alone() {
        let reason = KillReason::Stalled { seq: 8, limit_ms: 500, progress: 41 };
        let v =
            judge(&death(ExitCause::Signaled { signal: Signal::SIGTERM, core: false }, &[8, 9]), Some(&reason), None);
        assert!(v.crash);
        assert_eq!((v.blamed, v.cause), (vec![8], CrashCause::Stalled { limit_ms: 500, progress: 41 }));
    }

    #[test]
    fn our_own_ends_charge_nobody() {
        let retire = KillReason::Retire(crate::engine::lifecycle::Retirement::Tasks { tasks: 5 });
        for reason in [KillReason::Shutdown, KillReason::Drain, KillReason::GiveUp, retire] {
            let v = judge(&death(ExitCause::Exited(0), &[1]), Some(&reason), None);
            assert!(!v.crash && v.blamed.is_empty(), "{reason:?}");
            assert_eq!(v.clean, matches!(reason, KillReason::Shutdown | KillReason::Retire(_)));
        }
        // Asked to shut down but died of a signal: not clean, and still nobody's fault.
        let v = judge(&death(SEGV, &[1]), Some(&KillReason::Shutdown), None);
        assert!(!v.clean && !v.crash);
    }
}
