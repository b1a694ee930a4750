//! `--cmd` templates: GNU parallel's replacement strings over the arguments of one job (an
//! input line, its `--colsep` columns, or one combination of `:::`/`::::` sources), each
//! argument quoted for `/bin/sh`, with Perl's basename and dirname rules, as parallel has them.
//!
//! Everything but the job slot `{%}` is rendered here, as the line is read: the command is
//! then known whole before it runs, and its hash names the task. The slot is the worker's and
//! is known only where the command runs, so the rendered command is kept in parts with the
//! slot between them, and the worker joins them (the id hashes the parts joined by `{%}`,
//! the same in every run whatever worker gets the task).

/// How a replacement string changes its argument (GNU parallel's definitions in Perl).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transform {
    /// `{}`: as it is.
    Whole,
    /// `{.}`: `s:\.[^/.]*$::`, the last extension off.
    NoExt,
    /// `{/}`: `s:.*/::`, everything up to the last `/` off.
    Base,
    /// `{//}`: `File::Basename::dirname`.
    Dir,
    /// `{/.}`: `s:.*/::; s:\.[^/.]*$::`.
    BaseNoExt,
}

impl Transform {
    fn apply(self, arg: &[u8]) -> std::borrow::Cow<'_, [u8]> {
        use std::borrow::Cow;
        match self {
            Transform::Whole => Cow::Borrowed(arg),
            Transform::NoExt => Cow::Borrowed(no_ext(arg)),
            Transform::Base => Cow::Borrowed(base(arg)),
            Transform::Dir => Cow::Owned(dirname(arg)),
            Transform::BaseNoExt => Cow::Borrowed(no_ext(base(arg))),
        }
    }
}

/// `s:.*/::`: after the last slash (empty for `dir/`).
fn base(arg: &[u8]) -> &[u8] {
    match arg.iter().rposition(|&b| b == b'/') {
        Some(i) => &arg[i + 1..],
        None => arg,
    }
}

/// `s:\.[^/.]*$::`: the last dot and what follows it, if no `/` or `.` follows (so `.hidden`
/// becomes empty and `..` becomes `.`, as in parallel).
fn no_ext(arg: &[u8]) -> &[u8] {
    match arg.iter().rposition(|&b| b == b'.') {
        Some(i) if !arg[i + 1..].contains(&b'/') => &arg[..i],
        _ => arg,
    }
}

/// Perl's `File::Basename::dirname` on Unix: split after the last `/` (`./` when there is
/// none), strip trailing slashes but the first character; an empty base (`dir/`, `a/sub/`)
/// takes the dirname of what is left.
fn dirname(arg: &[u8]) -> Vec<u8> {
    fn fileparse(p: &[u8]) -> (&[u8], &[u8]) {
        match p.iter().rposition(|&b| b == b'/') {
            Some(i) => (&p[..=i], &p[i + 1..]),
            None => (b"./", p),
        }
    }
    fn strip_trailing_sep(d: &[u8]) -> &[u8] {
        // `s{(.)/*\z}{$1}s`: keeps the first character, so `/` stays `/`.
        let mut end = d.len();
        while end > 1 && d[end - 1] == b'/' {
            end -= 1;
        }
        &d[..end]
    }
    let (dir, base) = fileparse(arg);
    let mut dir = strip_trailing_sep(dir);
    if base.is_empty() {
        dir = strip_trailing_sep(fileparse(dir).0);
    }
    dir.to_vec()
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// Template text, copied as it is (other braces included: awk programs are full of them).
    Text(String),
    /// `{}`, `{.}`, ...: every argument, each quoted, separated by spaces.
    All(Transform),
    /// `{N}`, `{N.}`, ...: argument N (from 1); nothing when the job has fewer.
    Arg(usize, Transform),
    /// `{#}`: the job's sequence number, from 1.
    Seq,
    /// `{%}`: the job slot, from 1, filled in by the worker that runs it.
    Slot,
}

/// What is wrong with a `--cmd` template.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// GNU parallel's `{= perl expression =}`: there is no Perl here to run it, and passing
    /// it to the shell would run something else than was meant.
    #[error(
        "'{expr}' at byte {at} is a GNU parallel Perl expression ({{= ... =}}), which bulkhead cannot run; \
         compute the value in the command instead (e.g. \"$(echo {{}} | sed ...)\")"
    )]
    PerlExpression {
        /// The expression as written.
        expr: String,
        /// Its byte offset in the template.
        at: usize,
    },
}

/// A parsed `--cmd` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdTemplate {
    pieces: Vec<Piece>,
}

/// A rendered command: its bytes in parts, with the job slot to go between each two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The parts; one when the template has no `{%}`.
    pub parts: Vec<Vec<u8>>,
}

impl Rendered {
    /// The command as it names the task: the parts joined by `{%}`.
    pub fn identity(&self) -> Vec<u8> {
        self.parts.join(&b"{%}"[..])
    }
}

impl CmdTemplate {
    /// Parses a template. Without any replacement string, `{}` is appended (as parallel
    /// does); `{= ... =}` is refused.
    pub fn new(template: &str) -> Result<Self, TemplateError> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = template;
        while let Some(i) = rest.find('{') {
            text.push_str(&rest[..i]);
            let at = template.len() - rest.len() + i;
            rest = &rest[i..];
            if rest.starts_with("{=")
                && let Some(end) = rest[2..].find("=}")
            {
                return Err(TemplateError::PerlExpression { expr: rest[..end + 4].to_string(), at });
            }
            match replacement(rest) {
                Some((piece, len)) => {
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(piece);
                    rest = &rest[len..];
                }
                None => {
                    text.push('{');
                    rest = &rest[1..];
                }
            }
        }
        text.push_str(rest);
        let replaces = pieces.iter().any(|p| !matches!(p, Piece::Text(_)));
        if !replaces {
            text.push(' ');
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        if !replaces {
            pieces.push(Piece::All(Transform::Whole));
        }
        Ok(Self { pieces })
    }

    /// The command for a job with these arguments and sequence number `seq` (from 1).
    pub fn render(&self, args: &[&[u8]], seq: u64) -> Rendered {
        let mut parts = Vec::with_capacity(1);
        let mut out = Vec::with_capacity(64 + args.iter().map(|a| a.len() + 3).sum::<usize>());
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.extend_from_slice(t.as_bytes()),
                Piece::All(tr) => {
                    for (i, a) in args.iter().enumerate() {
                        if i > 0 {
                            out.push(b' ');
                        }
                        quote_into(&tr.apply(a), &mut out);
                    }
                }
                // A column or source the job does not have is nothing at all, not an empty
                // word, as in parallel (`printf %s {2}` on a one-column line prints nothing).
                Piece::Arg(n, tr) => {
                    if let Some(arg) = args.get(n - 1) {
                        quote_into(&tr.apply(arg), &mut out);
                    }
                }
                Piece::Seq => out.extend_from_slice(seq.to_string().as_bytes()),
                Piece::Slot => parts.push(std::mem::take(&mut out)),
            }
        }
        parts.push(out);
        Rendered { parts }
    }
}

/// The replacement string at the start of `s`, and its length.
fn replacement(s: &str) -> Option<(Piece, usize)> {
    const FIXED: [(&str, Transform); 5] = [
        ("}", Transform::Whole),
        (".}", Transform::NoExt),
        ("/}", Transform::Base),
        ("//}", Transform::Dir),
        ("/.}", Transform::BaseNoExt),
    ];
    let inner = &s[1..];
    if inner.starts_with("#}") {
        return Some((Piece::Seq, 3));
    }
    if inner.starts_with("%}") {
        return Some((Piece::Slot, 3));
    }
    let digits = inner.bytes().take_while(u8::is_ascii_digit).count();
    let after = &inner[digits..];
    let (suffix, tr) = FIXED.iter().find(|(suffix, _)| after.starts_with(suffix))?;
    let len = 1 + digits + suffix.len();
    if digits == 0 {
        return Some((Piece::All(*tr), len));
    }
    // `{0}` is no replacement string in parallel; nor is a number too big for any job.
    let n: usize = inner[..digits].parse().ok().filter(|&n| n > 0)?;
    Some((Piece::Arg(n, *tr), len))
}

/// Appends `arg` quoted for /bin/sh: plain words as they are, anything else in single quotes
/// (which keep every byte but the quote itself, written `'\''`).
pub fn quote_into(arg: &[u8], out: &mut Vec<u8>) {
    if !arg.is_empty() && arg.iter().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(b)) {
        out.extend_from_slice(arg);
        return;
    }
    out.push(b'\'');
    for &b in arg {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
}

/// A `-j` value that is no number of jobs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JobsError {
    /// Not one of the forms.
    #[error("'{0}' is not a number of jobs (N, N% of the cores, +N or -N relative to them)")]
    NotJobs(String),
    /// `0`, which parallel reads as "as many as possible": each job here is a worker process.
    #[error("'{0}': at least 1 job (each runs in a worker process)")]
    Zero(String),
}

/// `-j`: `N`, `N%` of the cores, `+N` or `-N` relative to them (at least 1), as parallel.
pub fn parse_jobs(s: &str, cores: usize) -> Result<usize, JobsError> {
    let bad = || JobsError::NotJobs(s.to_string());
    let n = if let Some(p) = s.strip_suffix('%') {
        let p: f64 = p.parse().map_err(|_| bad())?;
        if !(p.is_finite() && p > 0.0) {
            return Err(bad());
        }
        ((cores as f64 * p / 100.0).floor() as usize).max(1)
    } else if let Some(plus) = s.strip_prefix('+') {
        cores.saturating_add(plus.parse::<usize>().map_err(|_| bad())?)
    } else if let Some(minus) = s.strip_prefix('-') {
        cores.saturating_sub(minus.parse::<usize>().map_err(|_| bad())?).max(1)
    } else {
        let n: usize = s.parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(JobsError::Zero(s.to_string()));
        }
        n
    };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &str, args: &[&str], seq: u64) -> String {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        String::from_utf8(CmdTemplate::new(t).unwrap().render(&args, seq).identity()).unwrap()
    }

    /// Each row as GNU parallel 20221122 prints `{} {/} {//} {.} {/.}` for it.
    #[test]
    fn path_shapes_follow_perls_rules() {
        let rows = [
            (".", ".", ".", "", ""),
            ("..", "..", ".", ".", "."),
            ("a/.", ".", "a", "a/", ""),
            ("a/..", "..", "a", "a/.", "."),
            ("dir/", "", ".", "dir/", ""),
            ("dir/sub/", "", "dir", "dir/sub/", ""),
            ("a//b", "b", "a", "a//b", "b"),
            ("/", "", "/", "/", ""),
            ("/a", "a", "/", "/a", "a"),
            (".hidden", ".hidden", ".", "", ""),
            ("a.tar.gz", "a.tar.gz", ".", "a.tar", "a.tar"),
            ("x.", "x.", ".", "x", "x"),
            ("a/.b", ".b", "a", "a/", ""),
            ("a.b/c", "c", "a.b", "a.b/c", "c"),
            ("", "", ".", "", ""),
        ];
        for (arg, b, d, ne, bne) in rows {
            let a = arg.as_bytes();
            assert_eq!(base(a), b.as_bytes(), "{{/}} of {arg:?}");
            assert_eq!(dirname(a), d.as_bytes(), "{{//}} of {arg:?}");
            assert_eq!(no_ext(a), ne.as_bytes(), "{{.}} of {arg:?}");
            assert_eq!(no_ext(base(a)), bne.as_bytes(), "{{/.}} of {arg:?}");
        }
    }

    #[test]
    fn templates_work_like_gnu_parallel() {
        assert_eq!(render("gzip -9 {}", &["data/x.log"], 1), "gzip -9 data/x.log");
        assert_eq!(render("gzip -9 {}", &["it's here"], 1), r"gzip -9 'it'\''s here'");
        assert_eq!(render("echo {#}: {/.} in {//}", &["a/b/c.tar"], 7), "echo 7: c in a/b");
        assert_eq!(render("echo", &["$HOME"], 1), "echo '$HOME'");
        assert_eq!(render("mv {} {.}.bak", &["x.txt"], 1), "mv x.txt x.bak");
        assert_eq!(render("echo {#}", &["a"], 3), "echo 3");
        assert_eq!(render("echo", &["a", "b c"], 1), "echo a 'b c'");
        assert_eq!(render("echo {} / {2} {1} {3}x", &["a", "1"], 1), "echo a 1 / 1 a x");
        assert_eq!(render("echo {1.} {2//} {1/} {2/.}", &["a b.c", "d/e f.g"], 1), "echo 'a b' d 'a b.c' 'e f'");
        assert_eq!(render("echo {%}-{}", &["a"], 1), "echo {%}-a");
        let t = CmdTemplate::new("a{%}b{%}").unwrap();
        assert_eq!(t.render(&[b"x"], 1).parts, [b"a".to_vec(), b"b".to_vec(), Vec::new()]);
    }

    #[test]
    fn other_braces_stay_and_perl_expressions_are_refused() {
        let awk = "awk '{ s[$1] += $2 } END { for (k in s) print k, s[k] }' {}";
        assert_eq!(render(awk, &["f"], 1), awk.replace("{}", "f"));
        assert_eq!(render("echo {0} {x} {1x} {", &["a"], 1), "echo {0} {x} {1x} { a");
        assert_eq!(render("echo {=", &["a"], 1), "echo {= a");
        let e = CmdTemplate::new("echo {= s/a/b/ =} {}").unwrap_err();
        assert_eq!(e, TemplateError::PerlExpression { expr: "{= s/a/b/ =}".into(), at: 5 });
    }

    #[test]
    fn bytes_are_kept_and_quoted() {
        let t = CmdTemplate::new("printf %s {}").unwrap();
        assert_eq!(t.render(&[b"\xff\xfe"], 1).identity(), b"printf %s '\xff\xfe'");
    }

    #[test]
    fn jobs_are_counted_as_parallel_counts_them() {
        assert_eq!(parse_jobs("3", 8), Ok(3));
        assert_eq!(parse_jobs("50%", 8), Ok(4));
        assert_eq!(parse_jobs("200%", 2), Ok(4));
        assert_eq!(parse_jobs("1%", 2), Ok(1));
        assert_eq!(parse_jobs("+2", 2), Ok(4));
        assert_eq!(parse_jobs("-1", 2), Ok(1));
        assert_eq!(parse_jobs("-5", 2), Ok(1));
        assert!(parse_jobs("0", 2).is_err());
        assert!(parse_jobs("x%", 2).is_err());
        assert!(parse_jobs("-0%", 2).is_err());
    }
}
