//! What a worker writes on its stderr besides its handler's own bytes, and how the supervisor
//! reads it back: a mark before each task, so that the lines that follow are known to be that
//! task's, and the handler's `log` records, one line each with the task that logged it.
//!
//! Both travel in the stderr pipe itself, in order with everything else written there, which
//! a separate channel could not keep. A line of this kind starts with the byte 0x1e (ASCII
//! record separator), which text a program prints does not start with.

/// The first byte of a line the worker wrote for the supervisor.
pub const MARK: u8 = 0x1e;

/// One line of a worker's stderr, read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// The task of this seq starts: what follows is its output.
    TaskStart(u64),
    /// A `log` record of the handler, logged while task `seq` ran (0: outside any task).
    Log {
        /// The task's seq, 0 outside a task.
        seq: u64,
        /// `log::Level` as a number: 1 error to 5 trace.
        level: u8,
        /// The record's target.
        target: &'a str,
        /// One line of its message.
        message: &'a str,
    },
    /// Anything else: bytes the program itself wrote.
    Raw(&'a [u8]),
}

/// Appends the mark for the start of task `seq`, newline included.
pub fn encode_task_start(seq: u64, out: &mut Vec<u8>) {
    out.push(MARK);
    out.push(b'T');
    out.extend_from_slice(seq.to_string().as_bytes());
    out.push(b'\n');
}

/// Appends a log record, one line per line of its message.
pub fn encode_log(seq: u64, level: u8, target: &str, message: &str, out: &mut Vec<u8>) {
    let head = format!("L{seq} {level} {target}\u{1f}");
    for line in message.split('\n') {
        out.push(MARK);
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
}

/// Reads one line (without its newline). A line that starts with the mark but does not parse
/// is taken as raw bytes: nothing the program wrote is dropped.
pub fn parse(line: &[u8]) -> Line<'_> {
    let Some(rest) = line.strip_prefix(&[MARK]) else {
        return Line::Raw(line);
    };
    let parsed = match rest.split_first() {
        Some((b'T', seq)) => std::str::from_utf8(seq).ok().and_then(|s| s.parse().ok()).map(Line::TaskStart),
        Some((b'L', body)) => parse_log(body),
        _ => None,
    };
    parsed.unwrap_or(Line::Raw(line))
}

fn parse_log(body: &[u8]) -> Option<Line<'_>> {
    let body = std::str::from_utf8(body).ok()?;
    let (head, message) = body.split_once('\u{1f}')?;
    let mut parts = head.splitn(3, ' ');
    let seq = parts.next()?.parse().ok()?;
    let level = parts.next()?.parse().ok().filter(|l| (1..=5).contains(l))?;
    let target = parts.next()?;
    Some(Line::Log { seq, level, target, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_and_records_read_back_and_anything_else_is_raw() {
        let mut out = Vec::new();
        encode_task_start(42, &mut out);
        encode_log(42, 2, "scanner::match", "two\nlines", &mut out);
        let lines: Vec<Line<'_>> = out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(parse).collect();
        assert_eq!(
            lines,
            [
                Line::TaskStart(42),
                Line::Log { seq: 42, level: 2, target: "scanner::match", message: "two" },
                Line::Log { seq: 42, level: 2, target: "scanner::match", message: "lines" },
            ]
        );
        assert_eq!(parse(b"plain words"), Line::Raw(b"plain words"));
        // A mark that does not parse is kept whole, as the program's own bytes.
        assert_eq!(parse(b"\x1eTnot-a-number"), Line::Raw(b"\x1eTnot-a-number"));
        assert_eq!(parse(b"\x1eL1 9 t\x1fm"), Line::Raw(b"\x1eL1 9 t\x1fm"));
    }
}
