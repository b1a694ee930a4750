//! Deciding a crash's cause from everything known about the death: the supervisor's own
//! reason for killing the worker, a panic report, the kernel's status, and the worker's last
//! words on stderr (the only place an allocation failure or a stack overflow is named).

use nix::sys::signal::Signal;
use shared::proto::PanicReport;
use shared::record::CrashCause;

use super::slot::KillReason;
use nix::sys::wait::WaitStatus;

/// How a process ended, as the kernel reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCause {
    /// It called exit with this status.
    Exited(i32),
    /// A signal ended it.
    Signaled {
        /// The signal.
        signal: Signal,
        /// Whether a core was dumped (only when RLIMIT_CORE allows).
        core: bool,
    },
}

impl ExitCause {
    /// The one conversion from a raw wait status; `None` for statuses that are not an end
    /// (stopped, continued, still running).
    pub fn from_wait(status: WaitStatus) -> Option<Self> {
        match status {
            WaitStatus::Exited(_, code) => Some(ExitCause::Exited(code)),
            WaitStatus::Signaled(_, signal, core) => Some(ExitCause::Signaled { signal, core }),
            _ => None,
        }
    }
}

/// The cause to record for a worker death.
pub fn crash_cause(
    exit: ExitCause,
    killed_for: Option<&KillReason>,
    panic: Option<&PanicReport>,
    stderr_tail: &str,
) -> CrashCause {
    match killed_for {
        Some(KillReason::Timeout { limit_ms, .. }) => {
            return CrashCause::Timeout { limit_ms: *limit_ms };
        }
        Some(KillReason::Stalled { limit_ms, progress, .. }) => {
            return CrashCause::Stalled { limit_ms: *limit_ms, progress: *progress };
        }
        Some(KillReason::Unresponsive { silent_ms }) => {
            return CrashCause::Unresponsive { silent_ms: *silent_ms };
        }
        Some(KillReason::Protocol { detail }) => {
            return CrashCause::Protocol { detail: detail.clone() };
        }
        Some(&KillReason::Memory { limit, peak }) => {
            let detail = format!(
                "the worker and its task's processes reached {} resident, past the memory limit of {}",
                size(peak),
                size(limit)
            );
            return CrashCause::Oom { detail, limit: Some(limit), peak: Some(peak) };
        }
        _ => {}
    }
    if let Some(p) = panic {
        return CrashCause::Panic { message: p.message.clone() };
    }
    match exit {
        ExitCause::Exited(code) => CrashCause::Exit { code },
        ExitCause::Signaled { signal, core } => {
            if signal == Signal::SIGABRT
                && let Some(line) = last_line_with(stderr_tail, "memory allocation of")
            {
                return CrashCause::Oom { detail: line, limit: None, peak: None };
            }
            let detail = match signal {
                Signal::SIGABRT | Signal::SIGSEGV | Signal::SIGBUS => {
                    last_line_with(stderr_tail, "overflowed its stack")
                }
                _ => None,
            };
            CrashCause::Signal { signal: signal.as_str().to_string(), core, detail }
        }
    }
}

/// A size as a person reads it: bytes below a KiB, else the largest binary unit.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1 << 10 {
        return format!("{bytes} byte{}", if bytes == 1 { "" } else { "s" });
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if v.fract() == 0.0 { format!("{v:.0} {}", UNITS[unit]) } else { format!("{v:.1} {}", UNITS[unit]) }
}

fn last_line_with(text: &str, needle: &str) -> Option<String> {
    text.lines().rev().find(|l| l.contains(needle)).map(|l| l.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_told_apart() {
        let abrt = ExitCause::Signaled { signal: Signal::SIGABRT, core: false };
        assert_eq!(
            crash_cause(abrt, None, None, "memory allocation of 16777216 bytes failed\n"),
            CrashCause::Oom { detail: "memory allocation of 16777216 bytes failed".into(), limit: None, peak: None }
        );
        let CrashCause::Signal { signal, detail, .. } = crash_cause(
            abrt,
            None,
            None,
            "\nthread 'main' has overflowed its stack\nfatal runtime error: stack overflow\n",
        ) else {
            panic!()
        };
        assert_eq!(signal, "SIGABRT");
        assert_eq!(detail.as_deref(), Some("thread 'main' has overflowed its stack"));
        let report = PanicReport { seq: Some(3), message: "boom".into() };
        assert_eq!(crash_cause(abrt, None, Some(&report), ""), CrashCause::Panic { message: "boom".into() });
        let kill = ExitCause::Signaled { signal: Signal::SIGKILL, core: false };
        assert_eq!(
            crash_cause(kill, Some(&KillReason::Timeout { seq: crate::engine::Seq(1), limit_ms: 2000 }), None, ""),
            CrashCause::Timeout { limit_ms: 2000 }
        );
        assert_eq!(crash_cause(ExitCause::Exited(3), None, None, ""), CrashCause::Exit { code: 3 });
        let over = KillReason::Memory { limit: 600 << 20, peak: 630 << 20 };
        let CrashCause::Oom { detail, limit, peak } = crash_cause(kill, Some(&over), None, "") else { panic!() };
        assert_eq!((limit, peak), (Some(600 << 20), Some(630 << 20)));
        assert!(detail.contains("630 MiB resident, past the memory limit of 600 MiB"), "{detail}");
    }
}
