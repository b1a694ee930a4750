//! The built-in task kinds, their outputs, and the faults any task can carry.
//!
//! Tasks cross the wire postcard-encoded as [`BuiltinTask`]; outputs come back as
//! [`BuiltinOutput`], which serializes to postcard as a tagged enum and to JSON (results
//! files) in a plain shape, e.g. `{"sum":"333"}` or `null`, with no tag to unwrap.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::record::Captured;

/// A way for a task to make its worker misbehave, for demos and tests. Each does the real
/// thing: a `segv` is an invalid memory access, an `oom` really allocates until a limit
/// stops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FaultKind {
    /// `panic!` on the task's thread.
    Panic,
    /// `std::process::abort()`.
    Abort,
    /// A write to an unmapped address.
    Segv,
    /// SIGKILL to itself.
    Kill,
    /// Exits mid-task with status 3.
    Exit,
    /// A busy loop that never ends.
    Hang,
    /// SIGSTOP to itself: frozen, neither dead nor answering.
    Freeze,
    /// Allocates and touches memory until the address-space limit stops it (never more than
    /// 1 GiB of the host's memory: it sets a limit itself when none is set).
    Oom,
    /// Unbounded recursion.
    StackOverflow,
    /// Writes bytes that are not a frame (an absurd length prefix) to its socket.
    Garbage,
    /// Closes its socket and keeps running.
    Disconnect,
}

impl FaultKind {
    /// Every fault, in wire order.
    pub const ALL: [FaultKind; 11] = [
        FaultKind::Panic,
        FaultKind::Abort,
        FaultKind::Segv,
        FaultKind::Kill,
        FaultKind::Exit,
        FaultKind::Hang,
        FaultKind::Freeze,
        FaultKind::Oom,
        FaultKind::StackOverflow,
        FaultKind::Garbage,
        FaultKind::Disconnect,
    ];

    /// The name used in task files and `--inject`.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Panic => "panic",
            FaultKind::Abort => "abort",
            FaultKind::Segv => "segv",
            FaultKind::Kill => "kill",
            FaultKind::Exit => "exit",
            FaultKind::Hang => "hang",
            FaultKind::Freeze => "freeze",
            FaultKind::Oom => "oom",
            FaultKind::StackOverflow => "stack_overflow",
            FaultKind::Garbage => "garbage",
            FaultKind::Disconnect => "disconnect",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fault name that is not one of [`FaultKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown fault '{0}' (expected one of: panic, abort, segv, kill, exit, hang, freeze, oom, stack_overflow, garbage, disconnect)"
)]
pub struct UnknownFault(pub String);

impl FromStr for FaultKind {
    type Err = UnknownFault;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| UnknownFault(s.to_string()))
    }
}

/// The built-in task kinds of the `bulkhead` binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuiltinTask {
    /// Does nothing; measures the machinery.
    Noop,
    /// Waits, like a task blocked on I/O.
    Sleep {
        /// Milliseconds to wait.
        ms: u64,
    },
    /// Sums `i*i` for `i < n` in a real loop: the CPU-bound case.
    SumSquares {
        /// Bound of the sum.
        n: u64,
    },
    /// Counts regex matches over a byte range of a file, aligned to whole lines.
    Scan {
        /// The file.
        path: String,
        /// Start of the range; a line belongs to the range that holds its first byte.
        offset: u64,
        /// Length of the range in bytes.
        len: u64,
        /// A regex, matched against each line (without its newline).
        pattern: String,
        /// The capture group whose values are counted: a name, or `None` for the first group
        /// (none counted when the pattern has no group), or [`SCAN_LINES_ONLY`] for none.
        group: Option<String>,
        /// Also return the matching lines themselves, in file order.
        lines: bool,
        /// Longest line searched whole, in bytes ([`SCAN_MAX_LINE`] when `None`): a longer
        /// line is counted in `long_lines` and only its first `max_line` bytes are searched.
        max_line: Option<u64>,
    },
    /// Runs `/bin/sh -c cmd` in its own process group.
    Shell {
        /// The command line.
        cmd: String,
    },
    /// A `shell` task made by `run --cmd`: the command's exact bytes (input lines are bytes,
    /// not always UTF-8), in parts with the worker's job slot (GNU parallel's `{%}`, from 1)
    /// to go between each two, since only the worker knows it.
    ShellParts {
        /// The command in parts; one part when it has no `{%}`.
        parts: Vec<Vec<u8>>,
    },
    /// Runs `/bin/sh -c cmd` as `shell` does, with a line-aligned block of a file as its
    /// standard input, which the worker reads from the file itself (GNU parallel's
    /// `--pipepart`): the lines whose first byte lies in `offset..offset + len`.
    Pipe {
        /// The command line.
        cmd: String,
        /// The file.
        path: String,
        /// Start of the block; a line belongs to the block that holds its first byte.
        offset: u64,
        /// Length of the block in bytes.
        len: u64,
    },
}

impl BuiltinTask {
    /// The kind's name as written in task files.
    pub fn kind(&self) -> &'static str {
        match self {
            BuiltinTask::Noop => "noop",
            BuiltinTask::Sleep { .. } => "sleep",
            BuiltinTask::SumSquares { .. } => "sum_squares",
            BuiltinTask::Scan { .. } => "scan",
            BuiltinTask::Shell { .. } | BuiltinTask::ShellParts { .. } => "shell",
            BuiltinTask::Pipe { .. } => "pipe",
        }
    }
}

/// What a built-in task produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuiltinOutput {
    /// Nothing (`noop`, `sleep`); `null` in JSON.
    Nothing,
    /// The exact sum of squares as a decimal string.
    Sum {
        /// The sum.
        sum: String,
    },
    /// Counts from a scan.
    Scan {
        /// Lines that matched.
        matched_lines: u64,
        /// How often each value of the counted capture group occurred (lossy UTF-8).
        counts: BTreeMap<String, u64>,
        /// Lines longer than the task's `max_line`, whichever matched: each was cut.
        long_lines: u64,
        /// With `lines`: the matching lines, each followed by a newline (lossy UTF-8; a cut
        /// line as far as it was searched).
        lines: Option<String>,
    },
    /// A shell command that exited 0. In JSON only `{"exit":0}`: a record carries the
    /// streams in its own `stdout` and `stderr` fields, where a failed command's are too.
    Shell {
        /// Its exit status (0).
        exit: i32,
        /// Its standard output's head and size.
        stdout: Captured,
        /// Its standard error's head and size.
        stderr: Captured,
    },
}

impl BuiltinOutput {
    /// Postcard's bytes of [`BuiltinOutput::Nothing`], its variant's index alone: what every
    /// no-op and sleep sends back, which the supervisor takes without serde (a test checks
    /// the bytes are serde's).
    pub const NOTHING_POSTCARD: &'static [u8] = &[0];

    /// A shell command's two streams, which a record shows in its own fields.
    pub fn streams(&self) -> Option<(&Captured, &Captured)> {
        match self {
            BuiltinOutput::Shell { stdout, stderr, .. } => Some((stdout, stderr)),
            _ => None,
        }
    }
}

/// A scan's `group` that counts no group, only lines, whatever groups the pattern has: no
/// group can be named so (`(?P<>...)` is not a regex), and counting lines alone runs no
/// captures.
pub const SCAN_LINES_ONLY: &str = "";

/// The longest line a `scan` task searches whole unless it says otherwise: 1 MiB. Its read
/// buffer holds one such line beside a block of reading, so it bounds the task's memory.
pub const SCAN_MAX_LINE: u64 = 1 << 20;

/// The postcard form: a plain tagged enum.
#[derive(Serialize, Deserialize)]
enum Tagged {
    Nothing,
    Sum { sum: String },
    Scan { matched_lines: u64, counts: BTreeMap<String, u64>, long_lines: u64, lines: Option<String> },
    Shell { exit: i32, stdout: Captured, stderr: Captured },
}

/// The JSON form: untagged, so a result line shows the output itself.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Plain {
    Nothing(()),
    Sum {
        sum: String,
    },
    Scan {
        matched_lines: u64,
        counts: BTreeMap<String, u64>,
        // Records written before these fields existed read as 0 and no lines.
        #[serde(default)]
        long_lines: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lines: Option<String>,
    },
    Shell {
        exit: i32,
        // In the record's own fields, not in its output (see `BuiltinOutput::Shell`).
        #[serde(default, skip_serializing)]
        stdout: Captured,
        #[serde(default, skip_serializing)]
        stderr: Captured,
    },
}

impl From<BuiltinOutput> for Tagged {
    fn from(o: BuiltinOutput) -> Self {
        match o {
            BuiltinOutput::Nothing => Tagged::Nothing,
            BuiltinOutput::Sum { sum } => Tagged::Sum { sum },
            BuiltinOutput::Scan { matched_lines, counts, long_lines, lines } => {
                Tagged::Scan { matched_lines, counts, long_lines, lines }
            }
            BuiltinOutput::Shell { exit, stdout, stderr } => Tagged::Shell { exit, stdout, stderr },
        }
    }
}

impl Serialize for BuiltinOutput {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Borrowing mirrors would avoid the clone, but outputs are small and this runs once
        // per task in the worker, far from the hot loop's cost.
        if s.is_human_readable() {
            match self {
                BuiltinOutput::Nothing => s.serialize_unit(),
                BuiltinOutput::Sum { sum } => Plain::Sum { sum: sum.clone() }.serialize(s),
                BuiltinOutput::Scan { matched_lines, counts, long_lines, lines } => Plain::Scan {
                    matched_lines: *matched_lines,
                    counts: counts.clone(),
                    long_lines: *long_lines,
                    lines: lines.clone(),
                }
                .serialize(s),
                BuiltinOutput::Shell { exit, stdout, stderr } => {
                    Plain::Shell { exit: *exit, stdout: stdout.clone(), stderr: stderr.clone() }.serialize(s)
                }
            }
        } else {
            match self {
                BuiltinOutput::Nothing => Tagged::Nothing.serialize(s),
                other => Tagged::from(other.clone()).serialize(s),
            }
        }
    }
}

impl<'de> Deserialize<'de> for BuiltinOutput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            Ok(match Plain::deserialize(d)? {
                Plain::Nothing(()) => BuiltinOutput::Nothing,
                Plain::Sum { sum } => BuiltinOutput::Sum { sum },
                Plain::Scan { matched_lines, counts, long_lines, lines } => {
                    BuiltinOutput::Scan { matched_lines, counts, long_lines, lines }
                }
                Plain::Shell { exit, stdout, stderr } => BuiltinOutput::Shell { exit, stdout, stderr },
            })
        } else {
            Ok(match Tagged::deserialize(d)? {
                Tagged::Nothing => BuiltinOutput::Nothing,
                Tagged::Sum { sum } => BuiltinOutput::Sum { sum },
                Tagged::Scan { matched_lines, counts, long_lines, lines } => {
                    BuiltinOutput::Scan { matched_lines, counts, long_lines, lines }
                }
                Tagged::Shell { exit, stdout, stderr } => BuiltinOutput::Shell { exit, stdout, stderr },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_the_bytes_written_by_hand() {
        assert_eq!(postcard::to_stdvec(&BuiltinOutput::Nothing).unwrap(), BuiltinOutput::NOTHING_POSTCARD);
        assert_eq!(
            postcard::from_bytes::<BuiltinOutput>(BuiltinOutput::NOTHING_POSTCARD).unwrap(),
            BuiltinOutput::Nothing
        );
    }

    #[test]
    fn outputs_have_both_shapes() {
        let sum = BuiltinOutput::Sum { sum: "333333283333335000000".into() };
        assert_eq!(serde_json::to_string(&sum).unwrap(), r#"{"sum":"333333283333335000000"}"#);
        assert_eq!(serde_json::to_string(&BuiltinOutput::Nothing).unwrap(), "null");
        let scan = BuiltinOutput::Scan {
            matched_lines: 3,
            counts: BTreeMap::from([("200".to_string(), 2), ("404".to_string(), 1)]),
            long_lines: 1,
            lines: Some("a 200\n".into()),
        };
        // An older record, without long_lines and lines, still reads.
        assert_eq!(
            serde_json::from_str::<BuiltinOutput>(r#"{"matched_lines":1,"counts":{}}"#).unwrap(),
            BuiltinOutput::Scan { matched_lines: 1, counts: BTreeMap::new(), long_lines: 0, lines: None }
        );
        for o in [sum, BuiltinOutput::Nothing, scan] {
            let bytes = postcard::to_stdvec(&o).unwrap();
            assert_eq!(postcard::from_bytes::<BuiltinOutput>(&bytes).unwrap(), o);
            let json = serde_json::to_string(&o).unwrap();
            assert_eq!(serde_json::from_str::<BuiltinOutput>(&json).unwrap(), o);
        }
    }

    /// A command's streams travel whole over the wire, and stay out of the JSON output, which
    /// a record shows in its own fields.
    #[test]
    fn shell_streams_are_not_in_the_json_output() {
        let o = BuiltinOutput::Shell { exit: 0, stdout: Captured::of(b"a", 1), stderr: Captured::default() };
        let bytes = postcard::to_stdvec(&o).unwrap();
        assert_eq!(postcard::from_bytes::<BuiltinOutput>(&bytes).unwrap(), o);
        assert_eq!(serde_json::to_string(&o).unwrap(), r#"{"exit":0}"#);
        assert_eq!(o.streams().map(|(out, _)| out.head.as_str()), Some("a"));
    }

    #[test]
    fn fault_names_round_trip() {
        for k in FaultKind::ALL {
            assert_eq!(k.as_str().parse::<FaultKind>().unwrap(), k);
        }
        assert!("segfault".parse::<FaultKind>().is_err());
    }
}
