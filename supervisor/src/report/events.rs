//! Reading an events file: one JSON line at a time into the timeline, a last line cut short
//! by a killed run forgiven with a note, any other bad line refused with its number.

use std::borrow::Cow;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::engine::lifecycle::{RunEvent, Timed};
use crate::input::lines::NotAnItem;
use crate::report::timeline::Timeline;

/// Why an events file cannot be turned into a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The file cannot be opened or read.
    #[error("cannot read events file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A line that is not the last one is not an event.
    #[error("events file {path}, line {line}: not an event ({reason})")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: u64,
        /// What is wrong.
        reason: NotAnItem,
    },
}

/// Feeds every event of `reader` to `timeline`, one line at a time, by the torn-last-line
/// rule of [`crate::input::lines`].
pub(super) fn read_events(reader: impl BufRead, path: &Path, timeline: &mut Timeline) -> Result<(), ReportError> {
    use crate::input::lines::{Judged, LineError, Lines};
    let bad = |line, reason| ReportError::BadLine { path: path.to_path_buf(), line, reason };
    let mut lines = Lines::new(reader);
    let mut torn: Option<(u64, NotAnItem)> = None;
    // `run --resume --events` appends each run to the stream: a run begins after a
    // `shutdown`, or where time goes back (a run killed before its shutdown). The page draws
    // the last run, and says so.
    let (mut runs, mut run_line, mut ended, mut last_t) = (1u64, 1u64, false, f64::NEG_INFINITY);
    loop {
        let line = match lines.next_line() {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(LineError::Read { source, .. }) => return Err(ReportError::Io { path: path.to_path_buf(), source }),
            Err(e @ LineError::TooLong { .. }) => return Err(bad(e.line(), NotAnItem::TooLong)),
        };
        if line.is_blank() {
            continue;
        }
        match line.judge(parse_line(line.text)) {
            Judged::Item(Some(event)) => {
                if ended || event.t < last_t {
                    *timeline = Timeline::new();
                    runs += 1;
                    run_line = line.number;
                }
                ended = matches!(event.event, RunEvent::Shutdown { .. });
                last_t = event.t;
                timeline.push(&event)
            }
            Judged::Item(None) => {}
            Judged::Bad(e) => return Err(bad(line.number, NotAnItem::Json(e))),
            Judged::Torn(e) => torn = Some((line.number, NotAnItem::Json(e))),
        }
    }
    if runs > 1 {
        timeline.note(format!(
            "The events file holds {runs} runs, one after the other (appended by --resume); this page draws the last one, from line {run_line}."
        ));
    }
    if let Some((line, reason)) = torn {
        log::warn!("events file {}: line {line} was cut short ({reason}); skipping it", path.display());
        timeline.note(format!(
            "The last line of the events file (line {line}) was cut short, probably by a killed run, and was skipped."
        ));
    }
    Ok(())
}

/// The event names this report knows; a line naming another is from a newer bulkhead and is
/// skipped rather than refused.
const KNOWN_EVENTS: [&str; 9] = [
    "worker_started",
    "task_started",
    "task_finished",
    "worker_exited",
    "task_requeued",
    "task_quarantined",
    "worker_restarted",
    "state_poisoned",
    "shutdown",
];

/// Parses one non-blank line: `Ok(None)` for an event of an unknown kind.
fn parse_line(text: &[u8]) -> Result<Option<Timed>, serde_json::Error> {
    #[derive(Deserialize)]
    struct Head<'a> {
        // Required, so that a line without a time is an error, not an event from the future.
        #[expect(dead_code, reason = "read only by serde, to refuse a line without a time")]
        t: f64,
        #[serde(borrow)]
        event: Cow<'a, str>,
    }
    match serde_json::from_slice::<Timed>(text) {
        Ok(e) => Ok(Some(e)),
        Err(e) => match serde_json::from_slice::<Head>(text) {
            Ok(head) if !KNOWN_EVENTS.contains(&&*head.event) => Ok(None),
            _ => Err(e),
        },
    }
}
