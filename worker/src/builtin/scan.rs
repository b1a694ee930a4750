//! The `scan` kind: regex over a byte range of a file, aligned to whole lines, so that tasks
//! over consecutive ranges count every line exactly once. It searches whole buffers, as
//! ripgrep does, not line by line, and its memory is its read buffer whatever the file holds.
//!
//! How: a block of the file is read into a buffer that holds one longest line beside it; the
//! regex, compiled in multi-line mode, runs over all the complete lines in the buffer at once
//! (`find_at`); each match is widened to the line around it, which is counted, captured only
//! then, and the search goes on at the next line. A match that runs over a newline is only a
//! candidate: its line is checked alone with the pattern as written. A pattern that cannot
//! match a newline needs only where its match ends (a forward search, as ripgrep's line
//! counting does), not where it starts (a second, backward search per match): the line around
//! that end is the match's line, and the captures come from the few bytes before it that the
//! longest match can span. A line longer than the
//! task's `max_line` is counted in `long_lines`, searched in its first `max_line` bytes as if
//! it ended there, and the rest is skipped without being kept.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::os::unix::fs::FileExt;

use regex::bytes::Regex;
use regex_automata::meta;
use regex_automata::util::captures::Captures;
use regex_automata::{Anchored, Input};
use shared::proto::TaskError;
use shared::task::BuiltinOutput;

/// Bytes read at once: large enough that the read calls cost little beside the search
/// (`cat` reads the 1 GiB benchmark log in ~0.2 s), small enough to stay in the L2 cache
/// while the regex runs over it. Plain reads rather than `mmap`: a file truncated while
/// mapped kills the reader with SIGBUS, mapped pages count against `--address-space-limit`
/// (and, once touched, against `--memory-limit`). Measured (1 GiB log, `-c -j 1`, paired runs
/// on a loaded 2-core VM): mapping saved 6% of the wall time (half the 0.2 s of system time)
/// and doubled the worker's peak resident memory.
const READ_BLOCK: usize = 256 << 10;

/// Reads past a range's end, while its last line is finished, go this far at a time: lines
/// are short, and reading a whole block there would read ahead into the next range's work.
const TAIL_BLOCK: usize = 16 << 10;

/// The most match text a task remembers the captures of: a pattern whose matches are all
/// different (an IP address, a timestamp) stops remembering there, after a few thousand.
const MEMO_BYTES: usize = 64 << 10;

/// The longest match text remembered under an inline key (no allocation, no pointer to
/// follow, compared word by word); longer texts are remembered by their bytes on the heap.
/// Also the longest match a pattern may have for its captures to come from a forward search
/// alone: the bytes before a match's end that hold the whole match are the key.
const SHORT_KEY: usize = 31;

/// The most matching-line text one task returns, under the 16 MiB frame with room to spare.
pub const MAX_LINES_BYTES: usize = 12 << 20;

/// Longest `max_line` a task may ask for: the buffer holds one, so it bounds a task's memory.
pub const MAX_MAX_LINE: u64 = 64 << 20;

/// A pattern compiled for scanning: once per worker and pattern, not per task.
#[derive(Debug)]
pub struct Pattern {
    /// The pattern as written, matched against one line at a time: the meaning of a match.
    line: Regex,
    /// The same in multi-line mode (`^` and `$` at every line), over whole buffers. The
    /// engine underneath `regex`, for its anchored searches: once a match is found, its
    /// captures are an anchored search over the match alone, not a second search of the line.
    buffer: meta::Regex,
    /// The capture group whose values are counted.
    group: Option<usize>,
    /// The pattern anchors at the text's very start or end (`\A`, `\z`, `(?-m)`), which a
    /// buffer search cannot see at every line: such patterns are run line by line.
    per_line: bool,
    /// The pattern looks at nothing around a match (no `^`, `$`, `\b`): its captures over a
    /// match are then a function of the match's text alone, and are remembered by it.
    context_free: bool,
    /// Matches are found by a forward search alone (their ends): the pattern matches no
    /// newline, so a match never crosses lines and the line around its end holds it. With a
    /// counted group, the pattern is also context-free and no match is longer than this many
    /// bytes, so the captures come from an unanchored search over that many bytes before the
    /// end, and are remembered by those bytes. `None`: matches are found whole.
    half: Option<usize>,
}

/// Why a pattern cannot be scanned with.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    /// Not a regex.
    #[error("bad pattern: {0}")]
    Regex(#[from] regex::Error),
    /// Not a regex in multi-line mode either (the same parser: never seen).
    #[error("bad pattern: {0}")]
    MultiLine(#[from] Box<regex_automata::meta::BuildError>),
    /// `group` names no group of the pattern.
    #[error("the pattern has no capture group named '{0}'")]
    NoGroup(String),
}

impl Pattern {
    /// Compiles `pattern`; `group` names the counted group, `None` the first one if any.
    pub fn new(pattern: &str, group: Option<&str>) -> Result<Self, PatternError> {
        let line = Regex::new(pattern)?;
        let buffer = meta::Regex::builder()
            .syntax(regex_automata::util::syntax::Config::new().multi_line(true))
            .build(pattern)
            .map_err(Box::new)?;
        let group = match group {
            Some(shared::task::SCAN_LINES_ONLY) => None,
            Some(name) => Some(
                line.capture_names()
                    .position(|n| n == Some(name))
                    .ok_or_else(|| PatternError::NoGroup(name.to_string()))?,
            ),
            None => (line.captures_len() > 1).then_some(1),
        };
        // Conservative: any mention of these sends the pattern down the slower exact path.
        let per_line = pattern.contains(r"\A")
            || pattern.contains(r"\z")
            || Regex::new(r"\(\?[a-zA-Z]*-[a-zA-Z]*m").expect("a valid regex").is_match(pattern.as_bytes());
        let hir = regex_automata::util::syntax::parse(pattern).ok();
        let context_free = hir.as_ref().is_some_and(|h| h.properties().look_set().is_empty());
        let half = match &hir {
            Some(h) if !per_line && !can_match_newline(h) => match (group, h.properties().maximum_len()) {
                (None, _) => Some(0),
                (Some(_), Some(max)) if context_free && max <= SHORT_KEY => Some(max),
                _ => None,
            },
            _ => None,
        };
        Ok(Self { line, buffer, group, per_line, context_free, half })
    }

    /// Whether a group's values are counted (the pattern has one, or one was named).
    pub fn counts_group(&self) -> bool {
        self.group.is_some()
    }
}

/// Whether any text `h` matches holds a newline (conservatively: any class or literal in it
/// holds one, even where the rest of the pattern could never match).
fn can_match_newline(h: &regex_syntax::hir::Hir) -> bool {
    use regex_syntax::hir::{Class, HirKind};
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => false,
        HirKind::Literal(l) => l.0.contains(&b'\n'),
        HirKind::Class(Class::Unicode(c)) => c.ranges().iter().any(|r| r.start() <= '\n' && '\n' <= r.end()),
        HirKind::Class(Class::Bytes(c)) => c.ranges().iter().any(|r| r.start() <= b'\n' && b'\n' <= r.end()),
        HirKind::Repetition(r) => r.max != Some(0) && can_match_newline(&r.sub),
        HirKind::Capture(c) => can_match_newline(&c.sub),
        HirKind::Concat(v) | HirKind::Alternation(v) => v.iter().any(can_match_newline),
    }
}

/// A map keyed by raw bytes (group values, match texts), hashed by [`ValueHasher`].
type ByBytes<V> = HashMap<Vec<u8>, V, BuildHasherDefault<ValueHasher>>;

/// A text of at most [`SHORT_KEY`] bytes as a map key: its bytes, zero-padded, and its length
/// in the last byte, hashed a word at a time.
#[derive(PartialEq, Eq)]
struct ShortKey([u64; 4]);

impl std::hash::Hash for ShortKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        for w in self.0 {
            h.write_u64(w);
        }
    }
}

impl ShortKey {
    /// Built in registers from loads of the text itself: copying it into a zeroed array and
    /// reading that back as words stalled on every key (a narrow store, then a wide load of
    /// the same bytes, which the CPU cannot forward; 23% of the capture path, profiled).
    fn new(text: &[u8]) -> Option<Self> {
        let n = text.len();
        if n > SHORT_KEY {
            return None;
        }
        let word = |i: usize| le_word(&text[(i * 8).min(n)..(i * 8 + 8).min(n)]);
        Some(Self([word(0), word(1), word(2), word(3) | (n as u64) << 56]))
    }

    fn bytes(&self) -> Vec<u8> {
        let b: Vec<u8> = self.0.iter().flat_map(|w| w.to_le_bytes()).collect();
        b[..usize::from(b[31])].to_vec()
    }
}

/// Up to 8 bytes as a little-endian word, zero-padded, with no more than three loads and no
/// store: two overlapping 4-byte loads for 4 to 7 bytes, the first, middle and last byte for
/// 1 to 3 (which covers them all).
fn le_word(b: &[u8]) -> u64 {
    let n = b.len();
    let u32_at = |i: usize| u64::from(u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes")));
    match n {
        8.. => u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
        4..=7 => u32_at(0) | u32_at(n - 4) << (8 * (n - 4)),
        1..=3 => u64::from(b[0]) | u64::from(b[n / 2]) << (8 * (n / 2)) | u64::from(b[n - 1]) << (8 * (n - 1)),
        0 => 0,
    }
}

/// What is remembered of a match text: how often it was seen, and where the counted group
/// lies in it (`None`: the group took no part).
type Memo = (u64, Option<(u32, u32)>);

/// Where the search found a line's match.
#[derive(Clone, Copy)]
enum Found {
    /// Not known: the line is captured with the pattern as written.
    Line,
    /// Exactly `start..end` of the line.
    Match(usize, usize),
    /// Ending at `end`, starting in `start..=end`, where `start` is `end` less the longest a
    /// match can be (or the line's start): the first match in there is the one found.
    Window(usize, usize),
}

/// What a scan adds up, for one task.
struct Tally<'p> {
    pattern: &'p Pattern,
    matched_lines: u64,
    long_lines: u64,
    /// Raw group values: looking a value up borrows the buffer; only a new value allocates.
    counts: ByBytes<u64>,
    /// For a context-free pattern: the texts of matches seen (or, with [`Found::Window`], of
    /// the windows they were found in), each with its count and where the group lies in it.
    /// A match seen before costs one lookup and no captures; a count by status code has a
    /// handful of distinct matches. Short texts in `short`, the rest in `long`. At most
    /// [`MEMO_BYTES`] of text, in `memo_bytes`; later new texts are captured each time.
    short: HashMap<ShortKey, Memo, BuildHasherDefault<ValueHasher>>,
    long: ByBytes<Memo>,
    memo_bytes: usize,
    lines: Option<Vec<u8>>,
    /// Capture slots of the line regex and of the buffer regex (each regex fills its own),
    /// and the buffer regex's scratch space, kept rather than taken from its pool per search.
    line_locs: regex::bytes::CaptureLocations,
    buffer_caps: Captures,
    cache: meta::Cache,
    max_line: usize,
}

impl<'p> Tally<'p> {
    fn new(pattern: &'p Pattern, want_lines: bool, max_line: usize) -> Self {
        Self {
            pattern,
            matched_lines: 0,
            long_lines: 0,
            counts: HashMap::default(),
            short: HashMap::default(),
            long: HashMap::default(),
            memo_bytes: 0,
            lines: want_lines.then(Vec::new),
            line_locs: pattern.line.capture_locations(),
            buffer_caps: pattern.buffer.create_captures(),
            cache: pattern.buffer.create_cache(),
            max_line,
        }
    }

    /// The remembered captures of a match text, if any.
    fn remembered(&mut self, text: &[u8]) -> Option<&mut Memo> {
        match ShortKey::new(text) {
            Some(k) => self.short.get_mut(&k),
            None => self.long.get_mut(text),
        }
    }

    /// A line that matched, and where the search found the match in it (when it lies within
    /// the line: its captures are then the line's own).
    fn matched(&mut self, line: &[u8], found: Found) -> Result<(), TaskError> {
        self.matched_lines += 1;
        if let Some(g) = self.pattern.group {
            // Captures run only here, on one line, and over the match alone when known: the
            // highest-priority match anchored at its start and ending by its end is that match.
            let memo = match found {
                Found::Match(s, e) if self.pattern.context_free => Some((s, e)),
                Found::Window(s, e) => Some((s, e)),
                _ => None,
            };
            if let Some((s, e)) = memo
                && let Some((n, _)) = self.remembered(&line[s..e])
            {
                *n += 1;
            } else {
                let span = match found {
                    Found::Match(s, e) | Found::Window(s, e) => {
                        let anchored = if matches!(found, Found::Match(..)) { Anchored::Yes } else { Anchored::No };
                        let input = Input::new(line).range(s..e).anchored(anchored);
                        self.pattern.buffer.search_captures_with(&mut self.cache, &input, &mut self.buffer_caps);
                        self.buffer_caps.get_group(g).map(|sp| (sp.start, sp.end))
                    }
                    Found::Line => {
                        self.pattern.line.captures_read(&mut self.line_locs, line).and(self.line_locs.get(g))
                    }
                };
                match memo {
                    Some((s, e)) if self.memo_bytes + (e - s) <= MEMO_BYTES => {
                        self.memo_bytes += e - s;
                        let at = span.map(|(a, b)| ((a - s) as u32, (b - s) as u32));
                        match ShortKey::new(&line[s..e]) {
                            Some(k) => self.short.insert(k, (1, at)),
                            None => self.long.insert(line[s..e].to_vec(), (1, at)),
                        };
                    }
                    _ => {
                        if let Some((a, b)) = span {
                            count(&mut self.counts, &line[a..b], 1);
                        }
                    }
                }
            }
        }
        if let Some(out) = self.lines.as_mut() {
            if out.len() + line.len() + 1 > MAX_LINES_BYTES {
                return Err(TaskError::new(format!(
                    "the matching lines of this range exceed {} MiB: scan smaller ranges",
                    MAX_LINES_BYTES >> 20
                )));
            }
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        Ok(())
    }

    /// One line searched alone with the pattern as written.
    fn line(&mut self, line: &[u8]) -> Result<(), TaskError> {
        if self.pattern.line.is_match(line) { self.matched(line, Found::Line) } else { Ok(()) }
    }

    /// A line longer than `max_line`: its first `max_line` bytes are searched.
    fn long_line(&mut self, line: &[u8]) -> Result<(), TaskError> {
        self.long_lines += 1;
        self.line(&line[..self.max_line.min(line.len())])
    }

    /// Whole lines (each ending in a newline, but for a file's last), starting at a line.
    fn lines(&mut self, text: &[u8]) -> Result<(), TaskError> {
        let mut from = 0;
        while from < text.len() {
            match find_long_line(text, from, self.max_line) {
                Some((start, end)) => {
                    self.short_lines(&text[from..start])?;
                    self.long_line(&text[start..end])?;
                    from = end + 1;
                }
                None => {
                    self.short_lines(&text[from..])?;
                    break;
                }
            }
        }
        Ok(())
    }

    /// Whole lines, none longer than `max_line`.
    fn short_lines(&mut self, text: &[u8]) -> Result<(), TaskError> {
        if self.pattern.per_line {
            for line in text.split_inclusive(|&b| b == b'\n') {
                self.line(line.strip_suffix(b"\n").unwrap_or(line))?;
            }
            return Ok(());
        }
        if let Some(window) = self.pattern.half {
            return self.short_lines_forward(text, window);
        }
        let mut pos = 0;
        while pos < text.len() {
            let Some(m) = self.pattern.buffer.search_with(&mut self.cache, &Input::new(text).range(pos..)) else {
                break;
            };
            if m.start() == text.len() && text.ends_with(b"\n") {
                // An empty match after the last newline: that is no line.
                break;
            }
            let start = memchr::memrchr(b'\n', &text[pos..m.start()]).map_or(pos, |i| pos + i + 1);
            let end = memchr::memchr(b'\n', &text[m.start()..]).map_or(text.len(), |i| m.start() + i);
            let line = &text[start..end];
            if m.end() <= end {
                // Within one line, a match of the multi-line regex is a match of the line.
                self.matched(line, Found::Match(m.start() - start, m.end() - start))?;
            } else {
                self.line(line)?;
            }
            pos = end + 1;
        }
        Ok(())
    }

    /// [`Self::short_lines`] for a pattern that matches no newline: each match is found by
    /// its end alone, and its captures (if any) lie in the `window` bytes before that end.
    fn short_lines_forward(&mut self, text: &[u8], window: usize) -> Result<(), TaskError> {
        let mut pos = 0;
        while pos < text.len() {
            let Some(m) = self.pattern.buffer.search_half_with(&mut self.cache, &Input::new(text).range(pos..)) else {
                break;
            };
            let at = m.offset();
            if at == text.len() && text.ends_with(b"\n") {
                // An empty match after the last newline (a longer one would hold it): no line.
                break;
            }
            // No newline in the match: the last one before its end comes before its start. The
            // line's start matters only to print the line; else only as far back as the
            // window, where the captures are (`text[from..]` then stands for the line).
            let from = if self.lines.is_some() { pos } else { pos.max(at.saturating_sub(window)) };
            let start = memchr::memrchr(b'\n', &text[from..at]).map_or(from, |i| from + i + 1);
            let end = memchr::memchr(b'\n', &text[at..]).map_or(text.len(), |i| at + i);
            let at = at - start;
            self.matched(&text[start..end], Found::Window(at.saturating_sub(window), at))?;
            pos = end + 1;
        }
        Ok(())
    }

    fn finish(mut self) -> BuiltinOutput {
        for (key, (n, at)) in std::mem::take(&mut self.short) {
            if let Some((a, b)) = at {
                count(&mut self.counts, &key.bytes()[a as usize..b as usize], n);
            }
        }
        for (text, (n, at)) in std::mem::take(&mut self.long) {
            if let Some((a, b)) = at {
                count(&mut self.counts, &text[a as usize..b as usize], n);
            }
        }
        let mut counts = BTreeMap::new();
        for (k, v) in self.counts {
            // Two raw values may read the same once made valid UTF-8: they add up.
            *counts.entry(String::from_utf8_lossy(&k).into_owned()).or_insert(0) += v;
        }
        BuiltinOutput::Scan {
            matched_lines: self.matched_lines,
            counts,
            long_lines: self.long_lines,
            lines: self.lines.map(|l| String::from_utf8_lossy(&l).into_owned()),
        }
    }
}

/// Adds `n` to the count of `value`; only a value not seen before allocates.
fn count(counts: &mut ByBytes<u64>, value: &[u8], n: u64) {
    match counts.get_mut(value) {
        Some(c) => *c += n,
        None => {
            counts.insert(value.to_vec(), n);
        }
    }
}

/// A hasher for group values, which are short and come one per matching line: std's SipHash
/// took 11% of a count by status code (profiled), this multiply-rotate (as in rustc's
/// FxHasher) a fraction of that. The map is the worker's own, so no one chooses its keys to
/// collide but the file's author, who only slows their own scan.
#[derive(Default)]
struct ValueHasher(u64);

impl Hasher for ValueHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let mut last = [0u8; 8];
        last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.write_u64(u64::from_le_bytes(last) ^ bytes.len() as u64);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0xf135_7aea_2e62_a9c5).rotate_left(26);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The first line in `text[from..]` longer than `max_line` (start, end before its newline).
/// It looks at one byte in every `max_line / 2`: a longer run without a newline covers a
/// whole aligned half, so halves that hold a newline (all of them, in ordinary text) cost one
/// short `memchr` each.
fn find_long_line(text: &[u8], from: usize, max_line: usize) -> Option<(usize, usize)> {
    let half = (max_line / 2).max(1);
    let mut block = from;
    while block < text.len() {
        let block_end = (block + half).min(text.len());
        if memchr::memchr(b'\n', &text[block..block_end]).is_none() {
            let start = memchr::memrchr(b'\n', &text[from..block]).map_or(from, |i| from + i + 1);
            let end = memchr::memchr(b'\n', &text[block_end..]).map_or(text.len(), |i| block_end + i);
            if end - start > max_line {
                return Some((start, end));
            }
            block = end + 1;
        } else {
            block = block_end;
        }
    }
    None
}

/// A file being read at known positions, with the errors named.
struct Source<'a> {
    file: File,
    path: &'a str,
}

impl Source<'_> {
    /// Reads at `pos` into `buf`; 0 at the end of the file.
    fn read(&self, buf: &mut [u8], pos: u64) -> Result<usize, TaskError> {
        loop {
            match self.file.read_at(buf, pos) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TaskError::new(format!("cannot read {} at byte {pos}: {e}", self.path))),
            }
        }
    }

    /// Skips to just after the next newline at or after `pos`; `None` when no line starts
    /// after one before `end` (or the file ends first). Reads a block at a time into `buf`,
    /// keeping nothing, so a line of any length costs no memory. Returns the position and
    /// how many bytes after it are already in `buf[..n]`.
    fn skip_line(&self, mut pos: u64, end: u64, buf: &mut [u8]) -> Result<Option<(u64, usize)>, TaskError> {
        while pos < end {
            let want = buf.len().min(usize::try_from(end - pos).unwrap_or(usize::MAX));
            let n = self.read(&mut buf[..want], pos)?;
            if n == 0 {
                return Ok(None);
            }
            if let Some(i) = memchr::memchr(b'\n', &buf[..n]) {
                let next = pos + i as u64 + 1;
                if next >= end {
                    return Ok(None);
                }
                buf.copy_within(i + 1..n, 0);
                return Ok(Some((next, n - i - 1)));
            }
            pos += n as u64;
        }
        Ok(None)
    }
}

/// The lines whose first byte lies in `offset..offset + len`, by the rule of a scan range, as
/// a part of the open file: `(file, start, stop)`, bytes `start..stop` (`stop` is `u64::MAX`
/// where the block runs to the file's end; `start == stop` where no line starts in it). Finding
/// both ends reads past them only to the next newline, a small block at a time.
pub(super) fn line_block(path: &str, offset: u64, len: u64) -> Result<(File, u64, u64), TaskError> {
    let file = File::open(path).map_err(|e| TaskError::new(format!("cannot open {path}: {e}")))?;
    let src = Source { file, path };
    let end = offset.saturating_add(len);
    if len == 0 {
        return Ok((src.file, offset, offset));
    }
    let mut buf = vec![0u8; TAIL_BLOCK];
    let start = if offset == 0 {
        0
    } else {
        match src.skip_line(offset - 1, end, &mut buf)? {
            Some((p, _)) => p,
            None => return Ok((src.file, offset, offset)),
        }
    };
    // The next block starts at the first line starting at or after `end`; this one ends there.
    let stop = src.skip_line(end - 1, u64::MAX, &mut buf)?.map_or(u64::MAX, |(p, _)| p);
    Ok((src.file, start, stop))
}

/// Counts the lines matching `pattern` whose first byte lies in `offset..offset + len`, the
/// values of its counted group, and (with `want_lines`) returns those lines. Each block read
/// is reported to `progress` in bytes.
pub(super) fn scan(
    path: &str,
    offset: u64,
    len: u64,
    pattern: &Pattern,
    want_lines: bool,
    max_line: u64,
    progress: &dyn Fn(u64),
) -> Result<BuiltinOutput, TaskError> {
    if max_line == 0 || max_line > MAX_MAX_LINE {
        return Err(TaskError::new(format!("max_line must be 1 to {MAX_MAX_LINE} bytes, not {max_line}")));
    }
    let max_line = max_line as usize;
    let file = File::open(path).map_err(|e| TaskError::new(format!("cannot open {path}: {e}")))?;
    let src = Source { file, path };
    let end = offset.saturating_add(len);
    let mut tally = Tally::new(pattern, want_lines, max_line);
    // One block of reading beside the longest line that is kept whole (and one byte, to see
    // that a line is longer than that).
    let mut buf = vec![0u8; READ_BLOCK + max_line + 1];
    // A line starting before `offset` belongs to the range before: this one starts after the
    // first newline at or after offset-1.
    let (mut pos, mut filled) = if offset == 0 {
        (0, 0)
    } else {
        match src.skip_line(offset - 1, end, &mut buf[..READ_BLOCK])? {
            Some(p) => p,
            None => return Ok(tally.finish()),
        }
    };
    // Invariant: buf[..filled] holds the bytes from `pos`, a line's start before `end`.
    while pos < end {
        let room = buf.len() - filled;
        let read_to = pos + filled as u64;
        let want = if read_to < end {
            room.min(READ_BLOCK).min(usize::try_from(end - read_to).unwrap_or(usize::MAX))
        } else {
            room.min(TAIL_BLOCK)
        };
        let n = src.read(&mut buf[filled..filled + want], read_to)?;
        progress(n as u64);
        filled += n;
        let eof = n == 0;
        // The whole lines in the buffer, as far as lines starting before `end` go.
        let mut whole = if eof { filled } else { memchr::memrchr(b'\n', &buf[..filled]).map_or(0, |i| i + 1) };
        let past_end = pos + whole as u64 >= end;
        if past_end && whole > 0 {
            let last = usize::try_from(end - 1 - pos).unwrap_or(usize::MAX).min(whole - 1);
            whole = memchr::memchr(b'\n', &buf[last..whole]).map_or(whole, |i| last + i + 1);
        }
        tally.lines(&buf[..whole])?;
        if eof || past_end {
            break;
        }
        buf.copy_within(whole..filled, 0);
        pos += whole as u64;
        filled -= whole;
        if filled > max_line {
            // A line longer than any kept whole, its end not yet read: cut it, skip the rest.
            tally.long_line(&buf[..filled])?;
            match src.skip_line(pos + filled as u64, end, &mut buf[..READ_BLOCK])? {
                Some((p, n)) => (pos, filled) = (p, n),
                None => break,
            }
        }
    }
    Ok(tally.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn run(path: &str, off: u64, len: u64, p: &Pattern, max_line: u64) -> (u64, BTreeMap<String, u64>, u64, String) {
        match scan(path, off, len, p, true, max_line, &|_| {}).unwrap() {
            BuiltinOutput::Scan { matched_lines, counts, long_lines, lines } => {
                (matched_lines, counts, long_lines, lines.unwrap())
            }
            other => panic!("not a scan output: {other:?}"),
        }
    }

    /// The meaning of a scan, spelled out: each line alone, cut at `max_line`.
    fn by_lines(text: &[u8], p: &Pattern, max_line: usize) -> (u64, BTreeMap<String, u64>, u64, String) {
        let (mut n, mut counts, mut long, mut out) = (0, BTreeMap::new(), 0, Vec::new());
        let body = text.strip_suffix(b"\n").unwrap_or(text);
        if text.is_empty() {
            return (0, counts, 0, String::new());
        }
        for line in body.split(|&b| b == b'\n') {
            let line = if line.len() > max_line {
                long += 1;
                &line[..max_line]
            } else {
                line
            };
            if let Some(c) = p.line.captures(line) {
                n += 1;
                if let Some(g) = p.group.and_then(|g| c.get(g)) {
                    *counts.entry(String::from_utf8_lossy(g.as_bytes()).into_owned()).or_insert(0) += 1;
                }
                out.extend_from_slice(line);
                out.push(b'\n');
            }
        }
        (n, counts, long, String::from_utf8_lossy(&out).into_owned())
    }

    /// Runs consecutive ranges of `chunk` bytes over the file and adds them up.
    fn in_ranges(
        path: &str,
        size: u64,
        chunk: u64,
        p: &Pattern,
        max_line: u64,
    ) -> (u64, BTreeMap<String, u64>, u64, String) {
        let (mut n, mut counts, mut long, mut out) = (0, BTreeMap::new(), 0, String::new());
        let mut off = 0;
        while off < size {
            let (a, c, l, o) = run(path, off, chunk, p, max_line);
            n += a;
            long += l;
            out.push_str(&o);
            for (k, v) in c {
                *counts.entry(k).or_insert(0) += v;
            }
            off += chunk;
        }
        (n, counts, long, out)
    }

    fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f.flush().unwrap();
        f
    }

    #[test]
    fn consecutive_ranges_count_every_line_once() {
        let mut text = Vec::new();
        let mut expected: BTreeMap<String, u64> = BTreeMap::new();
        for i in 0..1000 {
            let status = [200, 404, 500][i % 3];
            writeln!(text, "GET /x/{i} status={status} bytes={}", i * 7).unwrap();
            *expected.entry(status.to_string()).or_default() += 1;
        }
        let f = file(&text);
        let p = Pattern::new(r"status=(\d{3})", None).unwrap();
        let path = f.path().to_str().unwrap();
        for chunk in [1u64, 7, 100, 4096, text.len() as u64] {
            let (lines, total, long, _) = in_ranges(path, text.len() as u64, chunk, &p, SCAN_MAX);
            assert_eq!(lines, 1000, "chunk {chunk}");
            assert_eq!(total, expected, "chunk {chunk}");
            assert_eq!(long, 0);
        }
    }

    const SCAN_MAX: u64 = shared::task::SCAN_MAX_LINE;

    #[test]
    fn buffer_search_means_what_each_line_alone_means() {
        // Lines of every length around max_line, patterns that anchor, cross newlines, match
        // empty, or only in a cut-off part; any chunk size and max_line agree with by_lines.
        let mut text = Vec::new();
        let mut seed = 7u64;
        for i in 0..400u64 {
            seed = shared::hash::mix64(seed ^ i);
            let len = (seed % 90) as usize;
            let line: Vec<u8> = (0..len).map(|j| b"ab c\tGET 404x"[(j + i as usize) % 13]).collect();
            text.extend_from_slice(&line);
            text.push(b'\n');
        }
        text.extend_from_slice(b"tail without newline GET");
        let f = file(&text);
        let path = f.path().to_str().unwrap();
        for pat in [
            r"GET",
            r"^ab",
            r"x$",
            r"\s+4",
            r"[^q]{70}",
            r"(?P<w>[a-c]+)\t",
            r"q*",
            r"\Ab",
            r"(4)0(4)",
            r"(?-m)^a",
            r"(a|ab)(b c|\tG|b)",
            r"(4)?0(4|x)?",
            r"([a-c]{1,3}) ",
            r"(?i)(g)et",
            r"(x?)",
        ] {
            for max_line in [1u64, 13, 50, 200] {
                let group = if pat.contains("?P<w>") { Some("w") } else { None };
                let p = Pattern::new(pat, group).unwrap();
                let want = by_lines(&text, &p, max_line as usize);
                for chunk in [1u64, 5, 64, 333, 100_000] {
                    let got = in_ranges(path, text.len() as u64, chunk, &p, max_line);
                    assert_eq!(got, want, "pattern {pat} max_line {max_line} chunk {chunk}");
                }
            }
        }
    }

    #[test]
    fn a_line_longer_than_the_buffer_is_cut_and_counted_in_bounded_memory() {
        // 3 MiB without a newline, then short lines: max_line 1 KiB keeps the buffer small.
        let mut text = vec![b'z'; 3 << 20];
        text.extend_from_slice(b"zz\nshort z\nlast");
        let f = file(&text);
        let path = f.path().to_str().unwrap();
        let p = Pattern::new("z+", None).unwrap();
        for chunk in [1u64 << 20, 4 << 20, 10_000] {
            let (n, _, long, lines) = in_ranges(path, text.len() as u64, chunk, &p, 1024);
            assert_eq!((n, long), (2, 1), "chunk {chunk}");
            assert_eq!(lines.len(), 1024 + 1 + "short z\n".len());
        }
    }

    #[test]
    fn remembered_captures_past_their_limit_and_lines_only_count_the_same() {
        // 30,000 distinct matches: more text than the memo keeps, so both paths run.
        let text: String = (0..30_000).map(|i| format!("x v{} y\n", i * 7 % 1000 + i)).collect();
        let f = file(text.as_bytes());
        let path = f.path().to_str().unwrap();
        let p = Pattern::new(r"v(\d+) ", None).unwrap();
        assert!(p.context_free);
        let want = by_lines(text.as_bytes(), &p, 1 << 20);
        assert_eq!(want.0, 30_000);
        assert_eq!(in_ranges(path, text.len() as u64, 100_000, &p, 1 << 20), want);
        // Lines only: the same lines, no counts.
        let only = Pattern::new(r"v(\d+) ", Some(shared::task::SCAN_LINES_ONLY)).unwrap();
        let (n, counts, _, _) = in_ranges(path, text.len() as u64, 100_000, &only, 1 << 20);
        assert_eq!((n, counts.len()), (30_000, 0));
        assert!(!Pattern::new(r"\b(\d+)", None).unwrap().context_free);
    }

    #[test]
    fn short_keys_hold_their_text_exactly() {
        let text: Vec<u8> = (1..=40u8).collect();
        let mut seen = HashMap::new();
        for n in 0..=SHORT_KEY {
            for from in [0, 3, 9] {
                let k = ShortKey::new(&text[from..from + n]).unwrap();
                assert_eq!(k.bytes(), &text[from..from + n], "{n} bytes from {from}");
                // Equal keys only for equal texts.
                let was = seen.insert(k.0, &text[from..from + n]);
                assert!(was.is_none_or(|t| t == &text[from..from + n]), "{n} bytes from {from}");
            }
        }
        // Trailing zero bytes are not padding: the length tells them apart.
        assert!(ShortKey::new(b"a") != ShortKey::new(b"a\0"));
        assert!(ShortKey::new(&text[..SHORT_KEY + 1]).is_none());
    }

    #[test]
    fn patterns_that_match_no_newline_are_found_by_a_forward_search() {
        // The benchmark's status code: 2 bytes, three Unicode digits of up to 4 bytes, 1 byte.
        assert_eq!(Pattern::new(r#"" (\d{3}) "#, None).unwrap().half, Some(15));
        assert_eq!(Pattern::new(r"\bGET\b", None).unwrap().half, Some(0));
        for (pat, group) in [(r"a\sb", None), (r"[^x]", None), (r"a\n", None), (r"v(\d+)", None), (r"\b(\d)", None)] {
            assert_eq!(Pattern::new(pat, group).unwrap().half, None, "{pat}");
        }
        // The captures of a window are those of the match: a long prefix before it varies.
        let text: String = (0..3000).map(|i| format!("{} id=7{} end\n", "p".repeat(i % 40), i % 3)).collect();
        let f = file(text.as_bytes());
        let p = Pattern::new(r"id=(\d{2}) ", None).unwrap();
        assert!(p.half.is_some());
        let want = by_lines(text.as_bytes(), &p, 1 << 20);
        assert_eq!(want.1.len(), 3);
        assert_eq!(in_ranges(f.path().to_str().unwrap(), text.len() as u64, 4096, &p, 1 << 20), want);
    }

    #[test]
    fn line_blocks_tile_the_file_at_line_starts() {
        let text = b"a\nbb\n\nccc\ndddd\neeeee".to_vec();
        let f = file(&text);
        let path = f.path().to_str().unwrap();
        for len in 1..=text.len() as u64 + 1 {
            let mut next = 0;
            for offset in (0..text.len() as u64).step_by(len as usize) {
                let (_, start, stop) = line_block(path, offset, len).unwrap();
                if start == stop {
                    continue;
                }
                assert_eq!(start, next, "len {len} offset {offset}");
                assert!(start == 0 || text[start as usize - 1] == b'\n');
                next = stop.min(text.len() as u64);
            }
            assert_eq!(next, text.len() as u64, "len {len}");
        }
    }

    #[test]
    fn dev_zero_ends_at_the_range_end() {
        let p = Pattern::new("x", None).unwrap();
        let (n, _, long, _) = run("/dev/zero", 0, 8 << 20, &p, 4096);
        assert_eq!((n, long), (0, 1));
        // A range starting inside the endless line has no line of its own.
        assert_eq!(run("/dev/zero", 1 << 20, 8 << 20, &p, 4096).2, 0);
    }

    #[test]
    fn bad_groups_and_sizes_are_named() {
        assert!(matches!(Pattern::new("a(b)", Some("x")), Err(PatternError::NoGroup(_))));
        assert!(matches!(Pattern::new("a(", None), Err(PatternError::Regex(_))));
        let p = Pattern::new("a", None).unwrap();
        let e = scan("/dev/null", 0, 1, &p, false, 0, &|_| {}).unwrap_err();
        assert!(e.message.contains("max_line"), "{}", e.message);
        let e = scan("/nonexistent/x", 0, 1, &p, false, 10, &|_| {}).unwrap_err();
        assert!(e.message.contains("cannot open /nonexistent/x"), "{}", e.message);
    }
}
