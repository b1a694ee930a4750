//! GNU parallel's input sources: the arguments after `:::` and the lines of the files after
//! `::::`, made into jobs as parallel makes them: every combination, the last source varying
//! fastest, or with `--link` the n-th of each together (a shorter source starting over).
//! The sources are held in memory (they are command-line arguments, or files read whole);
//! the combinations are made one at a time as the run pulls them.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// What is wrong with the input sources of a command line.
#[derive(Debug, thiserror::Error)]
pub enum SourcesError {
    /// A `::::` file that cannot be read.
    #[error("cannot read the input source {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `::: ` or `::::` with nothing after it.
    #[error("'{0}' needs at least one argument after it")]
    Empty(String),
    /// `:::+` or `::::+` (parallel's linking of one source to the one before).
    #[error("'{0}' (linking one source to the one before) is not supported; --link pairs all sources")]
    LinkMarker(String),
}

/// The input sources of a command line, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    sources: Vec<Vec<Vec<u8>>>,
}

impl Sources {
    /// Parses `::: a b ::: c` and `:::: FILE...` (`-` is standard input); `words` starts with
    /// one of the markers. Each file after `::::` is a source of its own, as in parallel; its
    /// lines lose a trailing CR, and blank ones are skipped, as lines of a task file are.
    pub fn parse(words: &[OsString]) -> Result<Self, SourcesError> {
        enum Mode {
            Args,
            Files,
        }
        let mut sources: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut mode = None;
        let mut marker = String::new();
        let mut fresh = false;
        for w in words {
            let b = w.as_bytes();
            match b {
                b":::" | b"::::" => {
                    if fresh {
                        return Err(SourcesError::Empty(marker));
                    }
                    marker = w.to_string_lossy().into_owned();
                    mode = Some(if b == b":::" { Mode::Args } else { Mode::Files });
                    if b == b":::" {
                        sources.push(Vec::new());
                    }
                    fresh = true;
                }
                b":::+" | b"::::+" => return Err(SourcesError::LinkMarker(w.to_string_lossy().into_owned())),
                _ => {
                    fresh = false;
                    match mode {
                        Some(Mode::Args) => sources.last_mut().expect("a ::: source was opened").push(b.to_vec()),
                        Some(Mode::Files) => sources.push(read_lines(w)?),
                        None => unreachable!("the words start with a marker"),
                    }
                }
            }
        }
        if fresh {
            return Err(SourcesError::Empty(marker));
        }
        Ok(Self { sources })
    }

    /// The jobs: every combination, or the n-th of each with `link`.
    pub fn rows(self, link: bool) -> Rows {
        let lens: Vec<usize> = self.sources.iter().map(Vec::len).collect();
        let total = if lens.contains(&0) {
            0
        } else if link {
            lens.iter().copied().max().unwrap_or(0)
        } else {
            lens.iter().try_fold(1usize, |a, &n| a.checked_mul(n)).unwrap_or(usize::MAX)
        };
        Rows { sources: self.sources, link, next: 0, total }
    }
}

/// The lines of a `::::` file (`-`: standard input).
fn read_lines(path: &OsString) -> Result<Vec<Vec<u8>>, SourcesError> {
    let read = if path == "-" {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut v).map(|_| v)
    } else {
        std::fs::read(path)
    };
    let bytes = read.map_err(|source| SourcesError::Read { path: path.into(), source })?;
    Ok(bytes
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

/// The jobs of a set of sources, one at a time.
#[derive(Debug)]
pub struct Rows {
    sources: Vec<Vec<Vec<u8>>>,
    link: bool,
    next: usize,
    total: usize,
}

impl Rows {
    /// How many jobs there are in all.
    pub fn total(&self) -> usize {
        self.total
    }
}

impl Iterator for Rows {
    type Item = Vec<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.total {
            return None;
        }
        let i = self.next;
        self.next += 1;
        let mut row = vec![Vec::new(); self.sources.len()];
        if self.link {
            for (cell, s) in row.iter_mut().zip(&self.sources) {
                cell.clone_from(&s[i % s.len()]);
            }
        } else {
            // Mixed radix, the last source the fastest digit.
            let mut rest = i;
            for (cell, s) in row.iter_mut().zip(&self.sources).rev() {
                cell.clone_from(&s[rest % s.len()]);
                rest /= s.len();
            }
        }
        Some(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<OsString> {
        s.split(' ').map(OsString::from).collect()
    }

    fn rows(s: &str, link: bool) -> Vec<String> {
        Sources::parse(&words(s))
            .unwrap()
            .rows(link)
            .map(|r| r.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>().join(" "))
            .collect()
    }

    #[test]
    fn sources_combine_as_in_parallel() {
        assert_eq!(rows("::: a b ::: 1 2", false), ["a 1", "a 2", "b 1", "b 2"]);
        assert_eq!(rows("::: a b c ::: 1 2", true), ["a 1", "b 2", "c 1"]);
        assert_eq!(rows("::: a", false), ["a"]);
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, b"x\r\n\ny\n").unwrap();
        let spec = format!("::: a :::: {}", f.path().display());
        assert_eq!(rows(&spec, false), ["a x", "a y"]);
    }

    #[test]
    fn bad_sources_are_named() {
        assert!(matches!(Sources::parse(&words(":::")), Err(SourcesError::Empty(m)) if m == ":::"));
        assert!(matches!(Sources::parse(&words("::: ::: a")), Err(SourcesError::Empty(_))));
        assert!(matches!(Sources::parse(&words("::: a :::+ b")), Err(SourcesError::LinkMarker(_))));
        let e = Sources::parse(&words(":::: /nonexistent/x")).unwrap_err();
        assert_eq!(e.to_string(), "cannot read the input source /nonexistent/x");
    }
}
