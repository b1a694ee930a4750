//! Reading an events file: one JSON line at a time into the timeline, a last line cut short
//! by a killed run forgiven with a note, any other bad line refused with its number.

use std::borrow::Cow;
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::engine::lifecycle::Timed;
use crate::report::timeline::Timeline;

/// Longest events line read; a real one is a few hundred bytes.
const MAX_LINE: usize = 16 << 20;

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
        reason: String,
    },
}

/// Feeds every event of `reader` to `timeline`, one line at a time.
pub(super) fn read_events(mut reader: impl BufRead, path: &Path, timeline: &mut Timeline) -> Result<(), ReportError> {
    let bad = |line, reason| ReportError::BadLine { path: path.to_path_buf(), line, reason };
    let mut buf = Vec::new();
    let mut number = 0u64;
    // A bad line without a newline is forgiven only if nothing follows it: that is what a
    // writer killed mid-line leaves.
    let mut torn: Option<(u64, String)> = None;
    loop {
        buf.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|source| ReportError::Io { path: path.to_path_buf(), source })?;
        if n == 0 {
            break;
        }
        number += 1;
        let complete = buf.last() == Some(&b'\n');
        if !complete && buf.len() > MAX_LINE {
            return Err(bad(number, format!("longer than {MAX_LINE} bytes")));
        }
        let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if let Some((line, reason)) = torn.take() {
            return Err(bad(line, reason));
        }
        match parse_line(text) {
            Ok(Some(event)) => timeline.push(&event),
            Ok(None) => {}
            Err(reason) if complete => return Err(bad(number, reason)),
            Err(reason) => torn = Some((number, reason)),
        }
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
fn parse_line(text: &[u8]) -> Result<Option<Timed>, String> {
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
            _ => {
                // serde_json counts lines within the text, always 1 here: name the column only.
                let msg = e.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg);
                Err(format!("{msg} at column {}", e.column()))
            }
        },
    }
}
