//! Task input for the command line: JSONL task lines and `--cmd` templates, parsed on a
//! reader thread and handed to the run as it needs them, so input of any length streams in
//! bounded memory. Every bad line is reported with its number and what is wrong.

pub mod error;
pub mod idset;
pub mod lines;
pub mod source;
pub mod sources;
pub mod template;

use std::borrow::Cow;
use std::io::{self, BufRead, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};

use serde::Deserialize;
use shared::hash::content_id;
use shared::task::{BuiltinTask, FaultKind};

use crate::engine::{FaultPlan, Job, JobBuilder};
use crate::input::error::{IdOrigin, InputError, Place, Problem};
use crate::input::source::{Admission, IdSet, Pull, TaskSource};
use crate::runtime::waker::{Waker, Wakeup, wake_pair};

pub use lines::MAX_LINE;
pub use template::{CmdTemplate, TemplateError};

/// A task line as written. Every field is optional here so that a missing one gets a message
/// naming it; the first unknown field is kept, so that it is refused by name (a misspelt
/// `fualt` must not pass silently).
#[derive(Default)]
struct Line<'a> {
    id: Option<IdField<'a>>,
    kind: Option<Text<'a>>,
    n: Option<u64>,
    ms: Option<u64>,
    cmd: Option<Text<'a>>,
    path: Option<Text<'a>>,
    offset: Option<u64>,
    len: Option<u64>,
    pattern: Option<Text<'a>>,
    fault: Option<Text<'a>>,
    fault_attempts: Option<u32>,
    unknown: Option<String>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Line<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Line<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a task object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut line = Line::default();
                // Keys are matched as they stand in the line, with no allocation (this runs a
                // million times a second).
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    match &*key {
                        "id" => line.id = map.next_value()?,
                        "kind" => line.kind = map.next_value()?,
                        "n" => line.n = map.next_value()?,
                        "ms" => line.ms = map.next_value()?,
                        "cmd" => line.cmd = map.next_value()?,
                        "path" => line.path = map.next_value()?,
                        "offset" => line.offset = map.next_value()?,
                        "len" => line.len = map.next_value()?,
                        "pattern" => line.pattern = map.next_value()?,
                        "fault" => line.fault = map.next_value()?,
                        "fault_attempts" => line.fault_attempts = map.next_value()?,
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            line.unknown.get_or_insert_with(|| key.into_owned());
                        }
                    }
                }
                Ok(line)
            }
        }
        d.deserialize_map(V)
    }
}

/// A string as written: borrowed from the line unless it has escapes. (serde's own `Cow`
/// always copies.)
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A task id as written: borrowed from the line unless it has escapes. Any other JSON type is
/// kept as the name of that type, so that it is refused by name.
enum IdField<'a> {
    Str(Cow<'a, str>),
    Other(String),
}

impl<'de: 'a, 'a> Deserialize<'de> for IdField<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = IdField<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(IdField::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(IdField::Str(Cow::Owned(v.to_string())))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(IdField::Other(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(IdField::Other(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(IdField::Other(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(IdField::Other(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(IdField::Other("an array".into()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(IdField::Other("an object".into()))
            }
        }
        d.deserialize_any(V)
    }
}

/// One parsed task line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedTask<'a> {
    /// Its id (given, or a hash of its content).
    pub id: Cow<'a, str>,
    /// How it got its id.
    pub origin: IdOrigin,
    /// The task.
    pub task: BuiltinTask,
    /// Its fault, if any.
    pub fault: Option<FaultPlan>,
    /// What it was, for records ([`crate::engine::Job::label`]); empty for JSONL tasks,
    /// which their given id names.
    pub label: String,
}

/// The fields that belong to one kind or another; each kind takes some of them.
const KIND_FIELDS: [&str; 7] = ["n", "ms", "cmd", "path", "offset", "len", "pattern"];

/// The built-in kinds and the fields of [`KIND_FIELDS`] each takes. A new kind is one row here
/// and one arm in [`parse_line`].
const KINDS: [(&str, &[&str]); 6] = [
    ("noop", &[]),
    ("sleep", &["ms"]),
    ("sum_squares", &["n"]),
    ("scan", &["path", "offset", "len", "pattern"]),
    ("shell", &["cmd"]),
    ("pipe", &["cmd", "path", "offset", "len"]),
];

/// A line that is not a task object: one that opens a JSON array (a whole file written as one
/// array, or an array on each line) gets its own problem, since its fix is the file's layout.
fn not_json(text: &[u8], e: serde_json::Error) -> Problem {
    if text.trim_ascii_start().starts_with(b"[") { Problem::Array } else { Problem::NotJson(e.into()) }
}

/// Checks that a scan task's pattern compiles. The tasks of one scan share their pattern, and
/// compiling it for each of thousands of lines took minutes: each distinct pattern is
/// compiled once per reader thread (the last 64 remembered).
fn check_pattern(pattern: &str) -> Result<(), Problem> {
    thread_local! {
        static GOOD: std::cell::RefCell<std::collections::HashSet<String>> = Default::default();
    }
    GOOD.with_borrow_mut(|good| {
        if good.contains(pattern) {
            return Ok(());
        }
        regex::bytes::Regex::new(pattern).map_err(Problem::BadPattern)?;
        if good.len() >= 64 {
            good.clear();
        }
        good.insert(pattern.to_string());
        Ok(())
    })
}

/// Parses one task line (without its newline). `Ok(None)` for a blank line.
pub fn parse_line(text: &[u8]) -> Result<Option<ParsedTask<'_>>, Problem> {
    // A byte-order mark, as some Windows editors write at the start of a file, is not content.
    let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let line: Line = serde_json::from_slice(text).map_err(|e| not_json(text, e))?;
    if let Some(field) = line.unknown {
        return Err(Problem::UnknownField(field));
    }
    let given = [
        line.n.is_some(),
        line.ms.is_some(),
        line.cmd.is_some(),
        line.path.is_some(),
        line.offset.is_some(),
        line.len.is_some(),
        line.pattern.is_some(),
    ];
    let name = line.kind.as_ref().map(|t| &*t.0).ok_or(Problem::MissingKind)?;
    let Some(&(kind, takes)) = KINDS.iter().find(|(k, _)| *k == name) else {
        return Err(Problem::UnknownKind(name.to_string()));
    };
    if let Some((field, _)) = KIND_FIELDS.iter().zip(given).find(|(f, g)| *g && !takes.contains(f)) {
        return Err(Problem::FieldNotForKind { kind, field });
    }
    let need = |v: Option<u64>, field| v.ok_or(Problem::MissingField { kind, field });
    let task = match kind {
        "noop" => BuiltinTask::Noop,
        "sleep" => BuiltinTask::Sleep { ms: need(line.ms, "ms")? },
        "sum_squares" => BuiltinTask::SumSquares { n: need(line.n, "n")? },
        "scan" => {
            let path = line.path.ok_or(Problem::MissingField { kind, field: "path" })?.0.into_owned();
            let pattern = line.pattern.ok_or(Problem::MissingField { kind, field: "pattern" })?.0.into_owned();
            check_pattern(&pattern)?;
            let (offset, len) = (line.offset.unwrap_or(0), need(line.len, "len")?);
            BuiltinTask::Scan { path, offset, len, pattern, group: None, lines: false, max_line: None }
        }
        "pipe" => BuiltinTask::Pipe {
            cmd: line.cmd.ok_or(Problem::MissingField { kind, field: "cmd" })?.0.into_owned(),
            path: line.path.ok_or(Problem::MissingField { kind, field: "path" })?.0.into_owned(),
            offset: line.offset.unwrap_or(0),
            len: need(line.len, "len")?,
        },
        _ => BuiltinTask::Shell { cmd: line.cmd.ok_or(Problem::MissingField { kind, field: "cmd" })?.0.into_owned() },
    };
    let fault = match (line.fault, line.fault_attempts) {
        (None, None) => None,
        (None, Some(_)) => return Err(Problem::AttemptsWithoutFault),
        (Some(f), attempts) => {
            let kind: FaultKind = f.0.parse()?;
            if attempts == Some(0) {
                return Err(Problem::ZeroFaultAttempts);
            }
            Some(FaultPlan { kind, attempts })
        }
    };
    let (id, origin) = match line.id {
        Some(IdField::Str(s)) if !s.is_empty() => (s, IdOrigin::Given),
        Some(IdField::Str(_)) => return Err(Problem::EmptyId),
        Some(IdField::Other(what)) => return Err(Problem::IdNotString(what)),
        None => {
            // The content, with keys in a fixed order, names the task: reordering or adding
            // lines does not change it, so resume still matches records to tasks.
            let mut value: serde_json::Value = serde_json::from_slice(text).map_err(|e| Problem::NotJson(e.into()))?;
            // `"id": null` means no id, as an absent one does: the same task, the same hash.
            if let Some(m) = value.as_object_mut() {
                m.remove("id");
            }
            (Cow::Owned(content_id(value.to_string().as_bytes())), IdOrigin::Content)
        }
    };
    Ok(Some(ParsedTask { id, origin, task, fault, label: String::new() }))
}

/// Quotes a string for /bin/sh, leaving plain words alone.
pub fn quote(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len() + 2);
    template::quote_into(s.as_bytes(), &mut out);
    String::from_utf8(out).expect("quoting a string adds only ASCII")
}

/// What turns input lines into shell commands with `--cmd`.
#[derive(Debug, Clone)]
pub struct CmdInput {
    /// The template.
    pub template: CmdTemplate,
    /// `--colsep`: splits each line into the arguments `{1}`, `{2}`, ...
    pub colsep: Option<regex::bytes::Regex>,
}

/// A `--cmd` setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    /// The template.
    #[error("bad --cmd template")]
    Template(#[from] TemplateError),
    /// The `--colsep` pattern.
    #[error("bad --colsep pattern")]
    Colsep(#[source] regex::Error),
}

/// What the reader produces from input lines.
#[derive(Debug, Clone)]
pub enum Format {
    /// JSONL task objects.
    Jsonl,
    /// Each line is the arguments of a shell command template.
    Cmd(CmdInput),
}

impl Format {
    /// `--cmd TEMPLATE` with `--colsep REGEX`, or JSONL without a template.
    pub fn new(cmd: Option<&str>, colsep: Option<&str>) -> Result<Self, CmdError> {
        let Some(t) = cmd else { return Ok(Format::Jsonl) };
        let template = CmdTemplate::new(t)?;
        let colsep = colsep.map(regex::bytes::Regex::new).transpose().map_err(CmdError::Colsep)?;
        Ok(Format::Cmd(CmdInput { template, colsep }))
    }

    /// A parser of this format's lines, read in order from the start of the input (a
    /// command's k-th occurrence is counted along the way).
    pub fn parser(&self) -> Parser<'_> {
        Parser { format: self, occurrences: Occurrences::default() }
    }
}

/// Names the occurrences of commands: the first of a command by its hash, the k-th after it by
/// the hash and `#k`. Reordering the input or adding lines then keeps every task's id as long
/// as the same command occurs as often before it, which is what resume needs; a first id is
/// 16 hex digits, so no `#k` id can be one. Exact in bounded memory for the first occurrences
/// (an [`IdSet`] spills to disk); only commands that repeat are counted in memory.
#[derive(Debug, Default)]
pub struct Occurrences {
    seen: IdSet,
    repeats: std::collections::HashMap<String, u64>,
}

impl Occurrences {
    /// The id of the next occurrence of the command `identity`, and its number (from 1).
    pub fn id(&mut self, identity: &[u8]) -> (String, u64) {
        let first = content_id(identity);
        if self.seen.insert(&first) {
            return (first, 1);
        }
        let k = self.repeats.entry(first.clone()).or_insert(1);
        *k += 1;
        (format!("{first}#{k}"), *k)
    }
}

/// A `--cmd` task's label: `"input":...,"seq":N,"cmd":...` as JSON object members. Input and
/// command are bytes; where one is not UTF-8, its JSON string has U+FFFD for each bad byte and
/// `input_b64`/`cmd_b64` beside it hold the exact bytes in base64 (RFC 4648, with padding).
pub fn label(input: &[u8], seq: u64, cmd: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(input.len() + cmd.len() + 32);
    let field = |s: &mut String, name: &str, bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        let _ = write!(s, "\"{name}\":{}", serde_json::to_string(&text).expect("strings serialize"));
        if let std::borrow::Cow::Owned(_) = text {
            let _ = write!(s, ",\"{name}_b64\":\"{}\"", base64(bytes));
        }
    };
    field(&mut s, "input", input);
    let _ = write!(s, ",\"seq\":{seq},");
    field(&mut s, "cmd", cmd);
    s
}

/// RFC 4648 base64 with padding.
fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A `--colsep` column without white space at its ends, as parallel trims columns (`--trim lr`,
/// its default with `--colsep`; Perl's `\s`: space, tab, LF, VT, FF, CR).
fn trim_column(c: &[u8]) -> &[u8] {
    let space = |b: &u8| b" \t\n\x0b\x0c\r".contains(b);
    let start = c.iter().position(|b| !space(b)).unwrap_or(c.len());
    let end = c.iter().rposition(|b| !space(b)).map_or(start, |i| i + 1);
    &c[start..end]
}

/// Parses an input's lines in order.
pub struct Parser<'f> {
    format: &'f Format,
    occurrences: Occurrences,
}

impl Parser<'_> {
    /// The task line `number` (from 1) describes; `None` for a blank line.
    pub fn line<'a>(&mut self, text: &'a [u8], number: u64) -> Result<Option<ParsedTask<'a>>, Problem> {
        let Format::Cmd(input) = self.format else { return parse_line(text) };
        // A line from Windows ends in CR; a file written by some editors starts with a BOM.
        let line = text.strip_suffix(b"\r").unwrap_or(text);
        let line = if number == 1 { line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line) } else { line };
        if line.is_empty() {
            return Ok(None);
        }
        match &input.colsep {
            Some(sep) => {
                let columns: Vec<&[u8]> = sep.split(line).map(trim_column).collect();
                self.command(input, line, &columns, number)
            }
            None => self.command(input, line, &[line], number),
        }
    }

    /// The task of one combination of `:::`/`::::` sources, the `seq`th (from 1).
    pub fn args(&mut self, args: &[&[u8]], seq: u64) -> Result<Option<ParsedTask<'static>>, Problem> {
        let Format::Cmd(input) = self.format else { unreachable!("input sources come only with --cmd") };
        let whole = args.join(&b'\t');
        match &input.colsep {
            Some(sep) => {
                let columns: Vec<&[u8]> = args.iter().flat_map(|a| sep.split(a)).map(trim_column).collect();
                self.command(input, &whole, &columns, seq)
            }
            None => self.command(input, &whole, args, seq),
        }
    }

    /// The task of the arguments `args` of the input `whole` (a line, or a combination of
    /// sources joined by tabs).
    fn command<'a>(
        &mut self,
        input: &CmdInput,
        whole: &[u8],
        args: &[&[u8]],
        seq: u64,
    ) -> Result<Option<ParsedTask<'a>>, Problem> {
        if args.iter().any(|a| a.contains(&0)) {
            return Err(Problem::Nul);
        }
        let rendered = input.template.render(args, seq);
        let identity = rendered.identity();
        let (id, _k) = self.occurrences.id(&identity);
        Ok(Some(ParsedTask {
            id: Cow::Owned(id),
            origin: IdOrigin::Command,
            task: BuiltinTask::ShellParts { parts: rendered.parts },
            fault: None,
            label: label(whole, seq, &identity),
        }))
    }
}

/// Reads lines (at most [`MAX_LINE`] bytes) and hands each with its number to `f`; stops at
/// the first error `f` returns.
pub fn for_each_line<R: BufRead>(
    mut r: R,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), Problem>,
) -> Result<(), InputError> {
    let mut buf = Vec::with_capacity(256);
    let mut number = 0;
    while let Some((text, _)) = next_line(&mut r, &mut buf, number + 1)? {
        number += 1;
        f(number, text).map_err(|e| InputError::new(Place::Line(number), e))?;
    }
    Ok(())
}

/// A line without its newline, and the bytes it took from the input.
type RawLine<'b> = (&'b [u8], usize);

/// Reads line `number` (at most [`MAX_LINE`] bytes) into `buf`; `None` at the end of the
/// input.
fn next_line<'b, R: BufRead>(r: &mut R, buf: &'b mut Vec<u8>, number: u64) -> Result<Option<RawLine<'b>>, InputError> {
    let at = Place::Line(number);
    match lines::read_line(r, buf, number) {
        Ok(line) => Ok(line.map(|l| (l.text, l.bytes))),
        Err(lines::LineError::TooLong { .. }) => Err(InputError::new(at, Problem::TooLong(MAX_LINE))),
        Err(lines::LineError::Read { source, .. }) => Err(InputError::new(at, Problem::Read(source))),
    }
}

/// Checks a whole file before any task runs: every line parses, no id repeats. Returns the
/// number of tasks.
pub fn validate<R: BufRead>(r: R, format: &Format, shard: Option<(u32, u32)>) -> Result<u64, InputError> {
    let mut admission = Admission::new(Default::default(), shard);
    let mut parser = format.parser();
    let mut count = 0;
    for_each_line(r, |number, text| {
        if let Some(t) = parser.line(text, number)?
            && admission.admit(&t.id, t.origin)?
        {
            count += 1;
        }
        Ok(())
    })?;
    Ok(count)
}

/// The first line before `before` whose task has the id `id`.
fn first_line_with<R: BufRead>(r: R, format: &Format, id: &str, before: u64) -> Option<u64> {
    let mut parser = format.parser();
    let mut found = None;
    // Stops at the first match: the error only carries the line out.
    let _ = for_each_line(r, |number, text| {
        if number >= before {
            return Err(Problem::ReaderStopped);
        }
        if let Ok(Some(t)) = parser.line(text, number)
            && t.id == id
        {
            found = Some(number);
            return Err(Problem::ReaderStopped);
        }
        Ok(())
    });
    found
}

/// What checking a whole file found: its task count, and the jobs of its first lines, kept
/// so that the run need not parse them again.
#[derive(Debug, Default)]
pub struct Checked {
    /// Tasks of this shard in the file.
    pub tasks: u64,
    /// The jobs kept, in file order.
    pub prefix: Prefix,
}

/// Jobs parsed while checking, from the start of the input up to `end_offset`.
#[derive(Debug, Default)]
pub struct Prefix {
    chunks: Vec<JobBuilder>,
    /// Byte offset where the kept jobs end (the next line to read).
    pub end_offset: u64,
    /// Lines before `end_offset`.
    pub end_line: u64,
    /// Whether the kept jobs are the whole input.
    pub complete: bool,
}

/// How many bytes of parsed jobs a whole-file check keeps for the run. A file of a million
/// tiny tasks then is parsed once, not twice (a test checks the benchmark's million no-ops
/// fit), and memory stays bounded for any file.
pub const KEEP_BYTES: usize = 32 << 20;

/// Checks a whole regular file before any task runs, on several threads when it is big:
/// each thread checks the lines that start in its share of the bytes, then ids repeated
/// across shares are looked for. Errors name the line as a sequential read would. The jobs
/// of the first lines, up to `keep` bytes of them, are kept for the run.
pub fn validate_file(
    file: &std::fs::File,
    format: &Format,
    shard: Option<(u32, u32)>,
    keep: usize,
) -> Result<Checked, InputError> {
    use std::io::Seek;
    // Standard input may be a file someone has already read from: check from where we are.
    let from = (&mut &*file).stream_position().unwrap_or(0);
    let len = file.metadata().map_err(|e| InputError::new(Place::Input, Problem::Read(e)))?.len();
    let size = len.saturating_sub(from);
    // A command's k-th occurrence is known only from every line before it: --cmd input is
    // checked in one pass, and keeps nothing (the run counts the occurrences again from the
    // start, and gets the same ids).
    let keep = if matches!(format, Format::Cmd(_)) { 0 } else { keep };
    let threads = if size < (4 << 20) || matches!(format, Format::Cmd(_)) {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get()).min(4)
    };
    let bounds: Vec<u64> = (0..=threads as u64).map(|i| from + size * i / threads as u64).collect();
    let parts: Vec<PartCheck> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (start, end) = (bounds[i], bounds[i + 1]);
                scope.spawn(move || check_part(file, start, end, i == 0, format, shard, keep / threads))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(InputError::new(Place::Input, Problem::ReaderStopped))))
            .collect()
    });
    let mut lines_before = 0;
    let mut checked = Checked { tasks: 0, prefix: Prefix { end_offset: from, complete: true, ..Prefix::default() } };
    let mut hashes = Vec::new();
    for part in parts {
        match part {
            Ok(p) => {
                // Kept jobs stay a prefix of the input: a share's are used only when every
                // share before it was kept whole.
                let prefix = &mut checked.prefix;
                if prefix.complete {
                    prefix.chunks.extend(p.kept);
                    match p.kept_until {
                        None => {
                            prefix.end_offset = p.end;
                            prefix.end_line = lines_before + p.lines;
                        }
                        Some((offset, line)) => {
                            prefix.end_offset = offset;
                            prefix.end_line = lines_before + line;
                            prefix.complete = false;
                        }
                    }
                }
                lines_before += p.lines;
                checked.tasks += p.tasks;
                hashes.push(p.ids);
            }
            Err(mut e) => {
                if let Place::Line(n) = &mut e.place {
                    *n += lines_before;
                }
                return Err(e);
            }
        }
    }
    if crate::input::idset::HashRuns::any_repeated(&mut hashes) {
        // An id repeats: a sequential read names the line of its second appearance. Its set
        // of ids is exact, so if it finds none, two ids only shared a hash and the file is fine.
        let read = || io::BufReader::with_capacity(1 << 20, PositionedReader { file, pos: from });
        if let Err(mut e) = validate(read(), format, shard) {
            // Name the line that had the id first too: one more pass, to the second one.
            if let (Place::Line(second), Problem::DuplicateId { id, first, .. }) = (e.place, &mut e.problem) {
                *first = first_line_with(read(), format, id, second);
            }
            return Err(e);
        }
    }
    Ok(checked)
}

/// What checking one share of a file found.
struct Part {
    lines: u64,
    tasks: u64,
    /// Hashes of the share's ids, for the duplicate check at the end.
    ids: crate::input::idset::HashRuns,
    /// Where the share's bytes end.
    end: u64,
    kept: Vec<JobBuilder>,
    /// Where keeping stopped (offset, lines before it in the share); `None`: all kept.
    kept_until: Option<(u64, u64)>,
}

/// A share's result, or its first error (its line counted within the share).
type PartCheck = Result<Part, InputError>;

/// Checks the lines that start in `start..end` (`first`: the share that begins the input),
/// keeping the jobs of its first lines up to `keep` bytes.
fn check_part(
    file: &std::fs::File,
    start: u64,
    end: u64,
    first: bool,
    format: &Format,
    shard: Option<(u32, u32)>,
    keep: usize,
) -> PartCheck {
    let mut reader =
        io::BufReader::with_capacity(1 << 20, PositionedReader { file, pos: if first { start } else { start - 1 } });
    let mut buf = Vec::with_capacity(256);
    let mut pos = if first { start } else { start - 1 };
    if !first {
        // The line holding byte start-1 belongs to the share before.
        pos +=
            reader.read_until(b'\n', &mut buf).map_err(|e| InputError::new(Place::Line(1), Problem::Read(e)))? as u64;
    }
    // Duplicates are looked for at the end, over every share at once.
    let mut admission = Admission::new(IdSet::default(), shard);
    admission.check_duplicates = false;
    let mut ids = crate::input::idset::HashRuns::default();
    let (mut lines, mut tasks) = (0u64, 0u64);
    let mut kept = Vec::new();
    let mut builder = JobBuilder::default();
    let mut parser = format.parser();
    let (mut kept_bytes, mut kept_until) = (0usize, None);
    while pos < end {
        let line_start = pos;
        let Some((text, n)) = next_line(&mut reader, &mut buf, lines + 1)? else { break };
        pos += n as u64;
        lines += 1;
        let at = |e| InputError::new(Place::Line(lines), e);
        let Some(t) = parser.line(text, lines).map_err(at)? else { continue };
        if !admission.admit(&t.id, t.origin).map_err(at)? {
            continue;
        }
        ids.push(&t.id);
        tasks += 1;
        if kept_until.is_none() {
            if kept_bytes >= keep {
                kept_until = Some((line_start, lines - 1));
                continue;
            }
            let before = builder.bytes();
            builder
                .push_labeled(&t.id, &t.label, t.fault, |b| shared::frame::append(&t.task, b))
                .map_err(|e| at(Problem::Encode(e.into())))?;
            if matches!(t.task, BuiltinTask::Shell { .. } | BuiltinTask::ShellParts { .. }) {
                builder.mark_command();
            }
            kept_bytes += builder.bytes() - before + JobBuilder::ENTRY_BYTES;
            if builder.len() == CHUNK {
                kept.push(std::mem::take(&mut builder));
            }
        }
    }
    if !builder.is_empty() {
        kept.push(builder);
    }
    Ok(Part { lines, tasks, ids, end: pos.max(end), kept, kept_until })
}

/// Reads a file from a position with `pread`, so threads share one descriptor.
struct PositionedReader<'a> {
    file: &'a std::fs::File,
    pos: u64,
}

impl Read for PositionedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(self.file, buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

enum Chunk {
    Jobs(Vec<Job>),
    End,
    Failed(InputError),
}

/// Task lines parsed on a reader thread.
pub struct LineSource {
    rx: Receiver<Chunk>,
    wake: Wakeup,
    /// The chunk being handed out. Taken as it came, not copied into a queue: a copy of
    /// every job was 48 instructions a task (callgrind, no-ops).
    ready: std::vec::IntoIter<Job>,
    end: Option<Pull>,
}

const CHUNK: usize = 1024;

impl LineSource {
    /// Starts reading `input` on a thread.
    pub fn spawn<R: Read + Send + 'static>(input: R, format: Format, admission: Admission) -> io::Result<Self> {
        Self::start(
            move |emit| {
                let reader = io::BufReader::with_capacity(256 << 10, input);
                emit.lines(reader, 0, &format)
            },
            admission,
        )
    }

    /// Starts reading a checked file: first the jobs its check kept, then the lines after
    /// them.
    pub fn spawn_checked(
        mut file: std::fs::File,
        format: Format,
        admission: Admission,
        prefix: Prefix,
    ) -> io::Result<Self> {
        use std::io::{Seek, SeekFrom};
        Self::start(
            move |emit| {
                for mut chunk in prefix.chunks {
                    emit.kept(&mut chunk)?;
                }
                if prefix.complete {
                    return Ok(());
                }
                file.seek(SeekFrom::Start(prefix.end_offset))
                    .map_err(|e| InputError::new(Place::Line(prefix.end_line + 1), Problem::Read(e)))?;
                emit.lines(io::BufReader::with_capacity(256 << 10, file), prefix.end_line, &format)
            },
            admission,
        )
    }

    /// Starts making tasks of the combinations of `:::`/`::::` input sources on a thread.
    pub fn spawn_rows(rows: sources::Rows, format: Format, admission: Admission) -> io::Result<Self> {
        Self::start(move |emit| emit.rows(rows, &format), admission)
    }

    fn start(
        produce: impl FnOnce(&mut Emitter) -> Result<(), Stop> + Send + 'static,
        admission: Admission,
    ) -> io::Result<Self> {
        let (wake, waker) = wake_pair()?;
        let (tx, rx) = sync_channel::<Chunk>(8);
        std::thread::Builder::new().name("bulkhead-input".into()).spawn(move || {
            let mut emit = Emitter { tx, waker, admission, builder: JobBuilder::default() };
            let result = produce(&mut emit);
            if emit.flush().is_err() {
                return;
            }
            let _ = match result {
                Ok(()) => emit.send(Chunk::End),
                Err(Stop::Bad(e)) => emit.send(Chunk::Failed(e)),
                Err(Stop::Unwanted) => false,
            };
        })?;
        Ok(Self { rx, wake, ready: Vec::new().into_iter(), end: None })
    }
}

/// The reader thread's side: admits jobs and sends them in chunks.
struct Emitter {
    tx: SyncSender<Chunk>,
    waker: Waker,
    admission: Admission,
    builder: JobBuilder,
}

/// Why the reader thread stops early.
enum Stop {
    /// A bad line: the run is told.
    Bad(InputError),
    /// The run stopped reading: nobody is left to tell.
    Unwanted,
}

impl From<InputError> for Stop {
    fn from(e: InputError) -> Self {
        Stop::Bad(e)
    }
}

impl Emitter {
    fn send(&self, c: Chunk) -> bool {
        let ok = self.tx.send(c).is_ok();
        self.waker.wake();
        ok
    }

    fn flush(&mut self) -> Result<(), Stop> {
        if self.builder.is_empty() {
            return Ok(());
        }
        let mut jobs = Vec::with_capacity(self.builder.len());
        self.builder.finish(&mut jobs);
        if self.send(Chunk::Jobs(jobs)) { Ok(()) } else { Err(Stop::Unwanted) }
    }

    /// Jobs parsed by the file's check: only resume's filter is left to apply.
    fn kept(&mut self, chunk: &mut JobBuilder) -> Result<(), Stop> {
        let mut jobs = Vec::with_capacity(chunk.len());
        chunk.finish(&mut jobs);
        if !self.admission.done.is_empty() {
            jobs.retain(|j| !self.admission.is_done(j.id()));
        }
        if self.send(Chunk::Jobs(jobs)) { Ok(()) } else { Err(Stop::Unwanted) }
    }

    /// Parses lines, numbering them after the `skipped` read before.
    fn lines<R: Read>(&mut self, mut reader: io::BufReader<R>, skipped: u64, format: &Format) -> Result<(), Stop> {
        let mut buf = Vec::with_capacity(256);
        let mut parser = format.parser();
        let mut number = skipped;
        loop {
            // Without a whole line in the buffer, the next read may wait on a slow producer (a
            // pipe, a terminal; producers that write in blocks end most writes mid-line): what
            // was parsed so far goes to the workers first, or it would wait for a full chunk
            // or the end.
            if !reader.buffer().contains(&b'\n') {
                self.flush()?;
            }
            let Some((text, _)) = next_line(&mut reader, &mut buf, number + 1)? else { return Ok(()) };
            number += 1;
            let at = |e| InputError::new(Place::Line(number), e);
            let parsed = parser.line(text, number).map_err(at)?;
            self.task(parsed, at)?;
        }
    }

    /// Makes a task of each combination of input sources, numbered from 1.
    fn rows(&mut self, rows: sources::Rows, format: &Format) -> Result<(), Stop> {
        let mut parser = format.parser();
        for (i, row) in rows.enumerate() {
            let seq = i as u64 + 1;
            let at = |e| InputError::new(Place::Job(seq), e);
            let args: Vec<&[u8]> = row.iter().map(Vec::as_slice).collect();
            let parsed = parser.args(&args, seq).map_err(at)?;
            self.task(parsed, at)?;
        }
        Ok(())
    }

    fn task(&mut self, parsed: Option<ParsedTask<'_>>, at: impl Fn(Problem) -> InputError) -> Result<(), Stop> {
        let Some(t) = parsed else { return Ok(()) };
        if !self.admission.admit(&t.id, t.origin).map_err(&at)? {
            return Ok(());
        }
        self.builder
            .push_labeled(&t.id, &t.label, t.fault, |buf| shared::frame::append(&t.task, buf))
            .map_err(|e| at(Problem::Encode(e.into())))?;
        if matches!(t.task, BuiltinTask::Shell { .. } | BuiltinTask::ShellParts { .. }) {
            self.builder.mark_command();
        }
        if self.builder.len() == CHUNK {
            self.flush()?;
        }
        Ok(())
    }
}

impl TaskSource for LineSource {
    fn pull(&mut self, max: usize, out: &mut Vec<Job>) -> Pull {
        // Empty the wake-up first: a chunk sent after this leaves its byte for the next poll.
        self.wake.drain();
        while out.len() < max {
            if self.ready.len() > 0 {
                out.extend(self.ready.by_ref().take(max - out.len()));
                continue;
            }
            if let Some(end) = &self.end {
                return end.clone();
            }
            match self.rx.try_recv() {
                Ok(Chunk::Jobs(jobs)) => self.ready = jobs.into_iter(),
                Ok(Chunk::End) => self.end = Some(Pull::End),
                Ok(Chunk::Failed(e)) => self.end = Some(Pull::Failed(Arc::new(e))),
                Err(TryRecvError::Empty) => return Pull::Pending,
                Err(TryRecvError::Disconnected) => {
                    return Pull::Failed(Arc::new(InputError::new(Place::Input, Problem::ReaderStopped)));
                }
            }
        }
        Pull::Ready
    }

    fn wake_fd(&self) -> Option<RawFd> {
        Some(self.wake.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &str) -> String {
        parse_line(line.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn the_spec_examples_parse() {
        let t = parse_line(br#"{"id":"a1","kind":"sum_squares","n":10000000}"#).unwrap().unwrap();
        assert_eq!(t.task, BuiltinTask::SumSquares { n: 10_000_000 });
        let t = parse_line(
            br#"{"id":"a4","kind":"scan","path":"access.log","offset":0,"len":8388608,"pattern":"status=(\\d{3})"}"#,
        )
        .unwrap()
        .unwrap();
        assert!(matches!(t.task, BuiltinTask::Scan { len: 8_388_608, .. }));
        let t =
            parse_line(br#"{"kind":"pipe","cmd":"wc -l","path":"a.log","offset":4096,"len":4096}"#).unwrap().unwrap();
        assert_eq!(t.task, BuiltinTask::Pipe { cmd: "wc -l".into(), path: "a.log".into(), offset: 4096, len: 4096 });
        assert!(err(r#"{"kind":"pipe","cmd":"wc -l","path":"a.log"}"#).contains("len"));
        let t =
            parse_line(br#"{"id":"a6","kind":"sleep","ms":100,"fault":"segv","fault_attempts":1}"#).unwrap().unwrap();
        assert_eq!(t.fault, Some(FaultPlan { kind: FaultKind::Segv, attempts: Some(1) }));
        assert_eq!(parse_line(b"   ").unwrap(), None);
    }

    #[test]
    fn scan_lines_sharing_a_pattern_check_each_once_and_a_bad_one_is_still_named() {
        // 3,000 identical patterns once took minutes to check (compiled per line).
        for i in 0..3000 {
            let line = format!(
                r#"{{"id":"s{i}","kind":"scan","path":"a.log","offset":{},"len":100,"pattern":"\" (\\d{{3}}) "}}"#,
                i * 100
            );
            assert!(parse_line(line.as_bytes()).unwrap().is_some());
        }
        let bad = parse_line(br#"{"kind":"scan","path":"a.log","len":1,"pattern":"(\\d{3}"}"#);
        assert!(matches!(bad, Err(Problem::BadPattern(_))), "{bad:?}");
    }

    #[test]
    fn a_null_id_is_no_id_and_a_byte_order_mark_is_not_content() {
        let plain = parse_line(br#"{"kind":"noop"}"#).unwrap().unwrap();
        assert_eq!(parse_line(br#"{"kind":"noop","id":null}"#).unwrap().unwrap().id, plain.id);
        assert_eq!(parse_line(b"\xEF\xBB\xBF{\"kind\":\"noop\"}").unwrap().unwrap(), plain);
    }

    #[test]
    fn content_ids_ignore_key_order() {
        let a = parse_line(br#"{"kind":"sleep","ms":5}"#).unwrap().unwrap();
        let b = parse_line(br#"{"ms":5, "kind":"sleep"}"#).unwrap().unwrap();
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, parse_line(br#"{"kind":"sleep","ms":6}"#).unwrap().unwrap().id);
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        assert!(err("{not json").starts_with("not a JSON task object"), "{}", err("{not json"));
        assert_eq!(
            err(r#"{"kind":"teleport"}"#),
            "unknown kind 'teleport' (expected noop, sleep, sum_squares, scan or shell)"
        );
        assert_eq!(err(r#"{"kind":"sleep"}"#), "kind 'sleep' needs field 'ms'");
        assert_eq!(err(r#"{"id":"x"}"#), "missing field 'kind'");
        assert!(err(r#"{"kind":"noop","fault":"segfault"}"#).starts_with("unknown fault 'segfault'"));
        assert_eq!(err(r#"{"kind":"noop","fualt":"segv"}"#), "unknown field 'fualt'");
        assert_eq!(err(r#"{"kind":"noop","id":{"a":[1]}}"#), "'id' must be a string, not an object");
        assert_eq!(err(r#"{"kind":"sleep","ms":1,"offset":3}"#), "field 'offset' does not apply to kind 'sleep'");
        assert!(matches!(
            parse_line(b"{\"kind\":\"scan\",\"path\":\"p\",\"len\":1,\"pattern\":\"(\"}"),
            Err(Problem::BadPattern(_))
        ));
        assert_eq!(err(r#"{"id":7,"kind":"noop"}"#), "'id' must be a string, not 7");
        assert_eq!(err(r#"{"kind":"noop","n":3}"#), "field 'n' does not apply to kind 'noop'");
        assert!(matches!(parse_line(b"[1,2]"), Err(Problem::Array)));
        assert!(matches!(parse_line(b"1"), Err(Problem::NotJson(_))));
    }

    #[test]
    fn validation_names_the_line_of_a_duplicate() {
        let input =
            "{\"id\":\"a\",\"kind\":\"noop\"}\n\n{\"id\":\"b\",\"kind\":\"noop\"}\n{\"id\":\"a\",\"kind\":\"noop\"}\n";
        let e = validate(input.as_bytes(), &Format::Jsonl, None).unwrap_err();
        assert_eq!(e.to_string(), "line 4: duplicate id 'a'");
        let first_three = input.lines().take(3).collect::<Vec<_>>().join("\n");
        assert_eq!(validate(first_three.as_bytes(), &Format::Jsonl, None).unwrap(), 2);
    }

    #[test]
    fn a_parallel_check_names_the_same_lines_as_a_sequential_one() {
        use std::io::Write as _;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let n = 140_000;
        for i in 0..n {
            writeln!(f, "{{\"id\":\"t{i}\",\"kind\":\"noop\"}}").unwrap();
        }
        f.flush().unwrap();
        let open = |p: &std::path::Path| std::fs::File::open(p).unwrap();
        assert_eq!(validate_file(&open(f.path()), &Format::Jsonl, None, KEEP_BYTES).unwrap().tasks, n);
        // A bad line deep in a later share, and a duplicate across shares.
        for (bad, line) in [("{\"id\":\"x\",\"kind\":\"nope\"}", n + 1), ("{\"id\":\"t3\",\"kind\":\"noop\"}", n + 1)] {
            let mut g = tempfile::NamedTempFile::new().unwrap();
            g.write_all(&std::fs::read(f.path()).unwrap()).unwrap();
            writeln!(g, "{bad}").unwrap();
            g.flush().unwrap();
            let err = validate_file(&open(g.path()), &Format::Jsonl, None, KEEP_BYTES).unwrap_err();
            assert_eq!(err.place, Place::Line(line), "{err:?}");
            if bad.contains("t3") {
                // Both lines are named: t3 was first given on line 4.
                assert_eq!(err.to_string(), format!("line {line}: duplicate id 't3', first given on line 4"));
            }
        }
    }

    proptest::proptest! {
        /// No line, however mangled, makes the parser panic.
        #[test]
        fn any_bytes_are_refused_or_parsed(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = parse_line(&bytes);
        }

        /// Valid task lines parse to what they say, whatever the key order and id.
        #[test]
        fn generated_tasks_parse_back(
            id in "[a-zA-Z0-9_\\-\"\\\\ é]{1,12}",
            ms in 0u64..1_000_000,
            fault in proptest::option::of(0usize..11),
            attempts in proptest::option::of(1u32..5),
            reorder in proptest::prelude::any::<bool>(),
        ) {
            let mut fields = vec![
                format!("\"id\":{}", serde_json::to_string(&id).unwrap()),
                "\"kind\":\"sleep\"".to_string(),
                format!("\"ms\":{ms}"),
            ];
            let kind = fault.map(|f| FaultKind::ALL[f]);
            if let Some(k) = kind {
                fields.push(format!("\"fault\":\"{k}\""));
                if let Some(a) = attempts {
                    fields.push(format!("\"fault_attempts\":{a}"));
                }
            }
            if reorder {
                fields.reverse();
            }
            let line = format!("{{{}}}", fields.join(","));
            let t = parse_line(line.as_bytes()).unwrap().unwrap();
            proptest::prop_assert_eq!(t.id.as_ref(), id.as_str());
            proptest::prop_assert_eq!(t.task, BuiltinTask::Sleep { ms });
            proptest::prop_assert_eq!(t.fault.map(|f| f.kind), kind);
        }
    }

    /// What the check keeps is costed per job as its bytes and its bookkeeping: the
    /// benchmark's million no-ops must fit in [`KEEP_BYTES`], or part of them is parsed twice.
    #[test]
    fn a_million_noops_are_kept_whole_by_the_check() {
        // The benchmark's file (ids t0 to t999999), costed as the check costs what it keeps:
        // all of it kept, nothing of it is parsed a second time during the run.
        let t = parse_line(br#"{"id":"t999999","kind":"noop"}"#).unwrap().unwrap();
        let mut b = JobBuilder::default();
        b.push_labeled(&t.id, &t.label, t.fault, |buf| shared::frame::append(&t.task, buf)).unwrap();
        let per_job = b.bytes() + JobBuilder::ENTRY_BYTES;
        assert!(per_job * 1_000_000 <= KEEP_BYTES, "{per_job} bytes a job");
    }

    /// A check keeps the jobs of the first lines only; the run reads the rest from where the
    /// kept ones end, and gets every task once, in order, with bad-line numbers still right.
    #[test]
    fn a_partly_kept_file_is_read_on_from_where_the_prefix_ends() {
        use std::io::Write as _;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        for i in 0..5000 {
            writeln!(f, "{{\"id\":\"t{i}\",\"kind\":\"sleep\",\"ms\":{i}}}").unwrap();
        }
        f.flush().unwrap();
        let open = || std::fs::File::open(f.path()).unwrap();
        for keep in [0, 1, 20_000, usize::MAX] {
            let checked = validate_file(&open(), &Format::Jsonl, None, keep).unwrap();
            assert_eq!(checked.tasks, 5000);
            assert_eq!(checked.prefix.complete, keep == usize::MAX, "keep {keep}");
            let mut admission = Admission::default();
            admission.check_duplicates = false;
            let mut src = LineSource::spawn_checked(open(), Format::Jsonl, admission, checked.prefix).unwrap();
            let mut jobs = Vec::new();
            loop {
                match src.pull(10_000, &mut jobs) {
                    Pull::End => break,
                    Pull::Failed(e) => panic!("{e}"),
                    Pull::Ready | Pull::Pending => std::thread::yield_now(),
                }
            }
            let ids: Vec<&str> = jobs.iter().map(|j| j.id()).collect();
            let expected: Vec<String> = (0..5000).map(|i| format!("t{i}")).collect();
            assert_eq!(ids, expected, "keep {keep}");
        }
    }

    /// A repeated command runs again under its occurrence's id, and the ids survive a
    /// reordering that keeps each command's occurrences counted the same.
    #[test]
    fn repeated_commands_are_tasks_of_their_own_with_stable_ids() {
        let format = Format::new(Some("echo {}"), None).unwrap();
        let ids = |input: &[&[u8]]| -> Vec<String> {
            let mut p = format.parser();
            input
                .iter()
                .enumerate()
                .filter_map(|(i, l)| p.line(l, i as u64 + 1).unwrap())
                .map(|t| t.id.into_owned())
                .collect()
        };
        let first = ids(&[b"a", b"b", b"a", b"\xff", b"a"]);
        assert_eq!(first.len(), 5);
        assert_eq!(first[2], format!("{}#2", first[0]));
        assert_eq!(first[4], format!("{}#3", first[0]));
        let reordered = ids(&[b"\xff", b"a", b"a", b"b", b"a", b"c"]);
        let mut a: Vec<_> = first.clone();
        let mut b: Vec<_> = reordered[..5].to_vec();
        a.sort();
        b.sort();
        assert_eq!(a, b);
        let Some(ParsedTask { task: BuiltinTask::ShellParts { parts }, .. }) =
            format.parser().line(b"x\xffy\r", 1).unwrap()
        else {
            panic!("a --cmd line is a shell task")
        };
        assert_eq!(parts, [b"echo 'x\xffy'".to_vec()]);
        assert!(matches!(format.parser().line(b"a\0b", 1), Err(Problem::Nul)));
    }

    #[test]
    fn a_cmd_task_is_labelled_by_input_seq_and_command_losslessly() {
        assert_eq!(label(b"a b", 3, b"echo 'a b'"), r#""input":"a b","seq":3,"cmd":"echo 'a b'""#);
        assert_eq!(
            label(b"caf\xe9", 1, b"echo caf\xe9"),
            r#""input":"caf\uFFFD","input_b64":"Y2Fm6Q==","seq":1,"cmd":"echo caf\uFFFD","cmd_b64":"ZWNobyBjYWbp""#
                .replace("\\uFFFD", "\u{FFFD}")
        );
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn colsep_splits_lines_into_positional_arguments() {
        let format = Format::new(Some("echo {2} {1} {}"), Some("\t")).unwrap();
        let t = format.parser().line(b" a b \t c", 1).unwrap().unwrap();
        assert_eq!(t.task, BuiltinTask::ShellParts { parts: vec![b"echo c 'a b' 'a b' c".to_vec()] });
        assert!(Format::new(Some("echo"), Some("(")).is_err());
    }
}
