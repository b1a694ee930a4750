//! What can be wrong with a run's input, as data: the place (a line of a file or stream, or
//! the position of a task given to the library) and the problem, so that callers decide on
//! hints and exit codes by matching variants, never by reading messages.

use std::fmt;

/// Where in the input a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A line of a task file or stream, from 1.
    Line(u64),
    /// A task handed to the library, from 1 in submission order.
    Task(u64),
    /// A combination of `:::`/`::::` input sources, from 1 (its `{#}`).
    Job(u64),
    /// The input as a whole (it could not be read at all).
    Input,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Line(n) => write!(f, "line {n}"),
            Place::Task(n) => write!(f, "task {n}"),
            Place::Job(n) => write!(f, "job {n}"),
            Place::Input => f.write_str("the input"),
        }
    }
}

/// How a task got its id; a duplicate's hint depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdOrigin {
    /// Written in the task.
    Given,
    /// A hash of the task's content, because it had none.
    Content,
    /// A hash of the command a command template made of the line.
    Command,
    /// Its position in a library run's input, because it had none.
    Position,
}

/// What is wrong with one task.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// Not JSON, or JSON but not an object of the expected shape (the JSON parser's error,
    /// boxed so that no parser's type is part of the API).
    #[error("not a JSON task object")]
    NotJson(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A line that opens a JSON array: the input is one JSON document, not one task per line.
    #[error(
        "a JSON array, not a task object: the input must hold one task per line (JSON Lines); \
         `jq -c '.[]' FILE` turns an array into lines"
    )]
    Array,
    /// A field no task kind has (a misspelt `fualt` must not pass silently).
    #[error("unknown field '{0}'")]
    UnknownField(String),
    /// `id` of another JSON type.
    #[error("'id' must be a string, not {0}")]
    IdNotString(String),
    /// `"id": ""`.
    #[error("'id' must not be empty")]
    EmptyId,
    /// No `kind`.
    #[error("missing field 'kind'")]
    MissingKind,
    /// A `kind` that is not built in.
    #[error("unknown kind '{0}' (expected noop, sleep, sum_squares, scan or shell)")]
    UnknownKind(String),
    /// A field the kind needs is absent.
    #[error("kind '{kind}' needs field '{field}'")]
    MissingField {
        /// The task's kind.
        kind: &'static str,
        /// The field.
        field: &'static str,
    },
    /// A field of another kind.
    #[error("field '{field}' does not apply to kind '{kind}'")]
    FieldNotForKind {
        /// The task's kind.
        kind: &'static str,
        /// The field.
        field: &'static str,
    },
    /// A `scan` pattern that does not compile.
    #[error("bad pattern")]
    BadPattern(#[source] regex::Error),
    /// A fault name that is not known.
    #[error(transparent)]
    UnknownFault(#[from] shared::task::UnknownFault),
    /// `fault_attempts` without `fault`.
    #[error("field 'fault_attempts' needs a 'fault'")]
    AttemptsWithoutFault,
    /// `fault_attempts: 0`.
    #[error("'fault_attempts' must be at least 1")]
    ZeroFaultAttempts,
    /// A command argument with a NUL byte, which no command line can carry.
    #[error("holds a NUL byte, which no command line can carry")]
    Nul,
    /// An id seen before in the batch.
    #[error("duplicate id '{id}'{}{}", first_line(*.first), duplicate_hint(*.origin))]
    DuplicateId {
        /// The id.
        id: String,
        /// How the task got it.
        origin: IdOrigin,
        /// The line that had it first, where known (a file is read again to find it).
        first: Option<u64>,
    },
    /// A task that does not encode into a frame (the encoder's error, boxed).
    #[error("cannot encode it")]
    Encode(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A line over the length limit.
    #[error("line longer than {0} bytes")]
    TooLong(usize),
    /// The input could not be read.
    #[error("cannot read")]
    Read(#[source] std::io::Error),
    /// The reader thread ended without saying why (it panicked).
    #[error("the input reader stopped")]
    ReaderStopped,
}

fn first_line(first: Option<u64>) -> String {
    first.map(|n| format!(", first given on line {n}")).unwrap_or_default()
}

/// A repeated id is most often not a mistake in the ids themselves: say how it came about and
/// how to run both.
fn duplicate_hint(origin: IdOrigin) -> &'static str {
    match origin {
        IdOrigin::Given => "",
        IdOrigin::Content => {
            " (a task without an \"id\" is named by a hash of its content, so identical tasks are one \
             task; give each an \"id\" to run both)"
        }
        IdOrigin::Command => {
            " (with --cmd, a task's id is a hash of its command, with #k after it for the command's k-th \
             occurrence)"
        }
        IdOrigin::Position => " (a task without an id is named by its position from 0: a given id takes that name)",
    }
}

/// A problem at its place in the input. Its message names both (`line 3: bad pattern`); its
/// source is the problem's own cause (the JSON or regex error), so a printed chain says each
/// thing once.
#[derive(Debug)]
pub struct InputError {
    /// Where.
    pub place: Place,
    /// What.
    pub problem: Problem,
}

impl InputError {
    /// `problem` at `place`.
    pub fn new(place: Place, problem: Problem) -> Self {
        Self { place, problem }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.place, self.problem)
    }
}

impl std::error::Error for InputError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.problem)
    }
}
