//! The one reader of JSONL files: task files, results files, events files. It reads a line
//! at a time with one length cap, and it applies one rule for a last line cut short.
//!
//! The torn-last-line rule: a writer killed in the middle of a write (even by SIGKILL) leaves
//! at most its last line incomplete, and every line is written with its newline. So only a
//! line *without* its newline can be torn, and only the last line lacks one (a read that
//! stops without a newline stopped at the end of the file as it was at that moment: nothing
//! is judged from a length measured earlier). A newline-terminated line that does not parse
//! is somebody's data, wherever it is, and an error.

use std::io::{self, BufRead};

/// Longest line accepted, newline excluded: 16 MiB, the largest message a worker may send
/// (`shared::MAX_FRAME`), so any record or event the supervisor wrote can be read back.
pub const MAX_LINE: usize = 16 << 20;

/// Why a line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The input could not be read.
    #[error("read line {line}")]
    Read {
        /// The line, from 1.
        line: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The line is over [`MAX_LINE`].
    #[error("read line {line}: it is longer than {MAX_LINE} bytes")]
    TooLong {
        /// The line, from 1.
        line: u64,
    },
}

/// Why a line of a JSONL file is not one of its items: the one reason the readers of results
/// and events files give for a line they refuse.
#[derive(Debug, thiserror::Error)]
pub enum NotAnItem {
    /// The line is over the readers' cap (16 MiB).
    #[error("it is longer than {MAX_LINE} bytes")]
    TooLong,
    /// The line is not JSON of the item's shape. Shown as serde_json's reason and the column:
    /// the line number serde_json counts is within this one line, always 1, so the reader's
    /// own line number stands in for it.
    #[error("{} at column {}", json_reason(.0), .0.column())]
    Json(serde_json::Error),
}

/// serde_json's reason without the position it appends (" at line L column C").
fn json_reason(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

impl LineError {
    /// The line it happened on.
    pub fn line(&self) -> u64 {
        match self {
            LineError::Read { line, .. } | LineError::TooLong { line } => *line,
        }
    }
}

/// One line as read.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    /// Its number, from 1.
    pub number: u64,
    /// Its bytes, without the newline.
    pub text: &'a [u8],
    /// Whether it ended with a newline. One that did not is the last of the file as it was
    /// when it was read.
    pub terminated: bool,
    /// Bytes it took from the input, newline included.
    pub bytes: usize,
}

impl Line<'_> {
    /// Only spaces, tabs, `\r` or nothing: skipped by every reader.
    pub fn is_blank(&self) -> bool {
        self.text.iter().all(u8::is_ascii_whitespace)
    }
}

/// What a line is, once its reader has tried to parse it (see the module's rule).
#[derive(Debug)]
pub enum Judged<T, E> {
    /// It parsed.
    Item(T),
    /// It did not parse and has no newline: cut short by a killed writer, to be left out
    /// (and, where the reader repairs, cut off).
    Torn(E),
    /// It did not parse and is a whole line: an error.
    Bad(E),
}

impl<'a> Line<'a> {
    /// Applies the torn-last-line rule to this line's parse.
    pub fn judge<T, E>(&self, parsed: Result<T, E>) -> Judged<T, E> {
        match parsed {
            Ok(t) => Judged::Item(t),
            Err(e) if !self.terminated => Judged::Torn(e),
            Err(e) => Judged::Bad(e),
        }
    }
}

/// Reads one line of at most [`MAX_LINE`] bytes into `buf` (cleared first); `None` at the
/// end of the input. The low-level form of [`Lines`], for loops that look at the reader's
/// buffer between lines.
pub fn read_line<'b, R: BufRead>(r: &mut R, buf: &'b mut Vec<u8>, number: u64) -> Result<Option<Line<'b>>, LineError> {
    buf.clear();
    let n = io::Read::take(&mut *r, MAX_LINE as u64 + 1)
        .read_until(b'\n', buf)
        .map_err(|source| LineError::Read { line: number, source })?;
    if n == 0 {
        return Ok(None);
    }
    let terminated = buf.last() == Some(&b'\n');
    if !terminated && buf.len() > MAX_LINE {
        return Err(LineError::TooLong { line: number });
    }
    let text = if terminated { &buf[..buf.len() - 1] } else { &buf[..] };
    Ok(Some(Line { number, text, terminated, bytes: n }))
}

/// Numbered lines of a reader, with their byte offsets.
pub struct Lines<R> {
    reader: R,
    buf: Vec<u8>,
    number: u64,
    offset: u64,
}

impl<R: BufRead> Lines<R> {
    /// Lines of `reader` from its current position, numbered from 1.
    pub fn new(reader: R) -> Self {
        Self { reader, buf: Vec::with_capacity(256), number: 0, offset: 0 }
    }

    /// The next line, or `None` at the end.
    pub fn next_line(&mut self) -> Result<Option<Line<'_>>, LineError> {
        let line = read_line(&mut self.reader, &mut self.buf, self.number + 1)?;
        if let Some(l) = &line {
            self.number += 1;
            self.offset += l.bytes as u64;
        }
        Ok(line)
    }

    /// Bytes read so far: where the next line starts.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &[u8]) -> Vec<(u64, Vec<u8>, bool)> {
        let mut lines = Lines::new(text);
        let mut out = Vec::new();
        while let Some(l) = lines.next_line().unwrap() {
            out.push((l.number, l.text.to_vec(), l.terminated));
        }
        assert_eq!(lines.offset(), text.len() as u64);
        out
    }

    #[test]
    fn only_the_last_line_can_lack_its_newline() {
        assert_eq!(
            all(b"a\n\nbc\nd"),
            vec![(1, b"a".to_vec(), true), (2, vec![], true), (3, b"bc".to_vec(), true), (4, b"d".to_vec(), false)]
        );
        assert!(all(b"").is_empty());
    }

    #[test]
    fn the_rule_forgives_only_an_unterminated_bad_line() {
        let mut lines = Lines::new(&b"x\ny"[..]);
        let first = lines.next_line().unwrap().unwrap();
        assert!(matches!(first.judge::<(), _>(Err("bad")), Judged::Bad("bad")));
        let last = lines.next_line().unwrap().unwrap();
        assert!(matches!(last.judge::<(), _>(Err("bad")), Judged::Torn("bad")));
        assert!(matches!(last.judge::<u8, ()>(Ok(1)), Judged::Item(1)));
    }

    #[test]
    fn a_line_over_the_cap_is_an_error_naming_it() {
        let mut text = b"ok\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', MAX_LINE + 1));
        let mut lines = Lines::new(&text[..]);
        assert!(lines.next_line().unwrap().is_some());
        let err = lines.next_line().unwrap_err();
        assert_eq!(err.line(), 2);
        assert!(err.to_string().contains("longer than"), "{err}");
    }
}
