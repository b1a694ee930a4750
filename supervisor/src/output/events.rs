//! The events file (`--events`): every lifecycle step as a JSON line. A write failure (a full
//! disk, an I/O error) is said once on stderr with the path and the error; the run goes on,
//! and its end reports the file incomplete.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::lifecycle::Timed;
use crate::output::failure::OutputFailure;
use crate::output::journal::write_waiting;

/// Why the events file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// It holds events and `resume` was not asked for.
    #[error(
        "events file {path} already holds {bytes} bytes; add --resume to append this run to it, or name another file (it is never overwritten)"
    )]
    Exists {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// It cannot be opened.
    #[error("cannot open the events file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Flush to the file past this many buffered bytes.
const FLUSH_BYTES: usize = 256 << 10;

/// An open events file.
pub struct EventsFile {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
    /// Lines written whole.
    written: u64,
    error: Option<Arc<io::Error>>,
}

impl EventsFile {
    /// Opens `path` for appending. An existing non-empty file is refused without `resume`,
    /// and appended to with it: the stream then holds several runs, one after the other.
    pub fn open(path: &Path, resume: bool) -> Result<Self, EventsError> {
        let io_err = |source| EventsError::Io { path: path.to_path_buf(), source };
        let file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if meta.is_file() && meta.len() > 0 && !resume {
            return Err(EventsError::Exists { path: path.to_path_buf(), bytes: meta.len() });
        }
        if meta.is_file() && meta.len() > 0 {
            cut_torn_tail(&file, meta.len()).map_err(io_err)?;
        }
        Ok(Self { file, path: path.to_path_buf(), buf: Vec::with_capacity(FLUSH_BYTES), written: 0, error: None })
    }

    /// Buffers one event.
    pub fn write(&mut self, timed: &Timed) {
        if self.error.is_some() {
            return;
        }
        serde_json::to_writer(&mut self.buf, timed).expect("events serialize");
        self.buf.push(b'\n');
        if self.buf.len() >= FLUSH_BYTES {
            self.flush();
        }
    }

    /// Writes what is buffered; the first failure is said on stderr, and nothing more is
    /// written after it (a later line after a gap would look whole and be wrong).
    pub fn flush(&mut self) {
        if self.buf.is_empty() || self.error.is_some() {
            return;
        }
        let (done, result) = write_waiting(&self.file, &self.buf);
        self.written += self.buf[..done].iter().filter(|&&b| b == b'\n').count() as u64;
        self.buf.clear();
        if let Err(e) = result {
            let e = Arc::new(e);
            self.error = Some(e.clone());
            let failure =
                OutputFailure::Events { path: self.path.display().to_string(), written: self.written, error: e };
            log::error!("{}; the run goes on without its events", worker::ErrorChain(&failure));
        }
    }

    /// What was lost, if anything.
    pub fn failure(&self) -> Option<OutputFailure> {
        self.error.as_ref().map(|e| OutputFailure::Events {
            path: self.path.display().to_string(),
            written: self.written,
            error: e.clone(),
        })
    }
}

/// A run killed in the middle of a write leaves a last line without its newline; the next run
/// appended after it would fuse with it into one bad line. Cut it off (it was an event cut
/// short, which a report would skip anyway).
fn cut_torn_tail(file: &File, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut end = len;
    let mut chunk = vec![0u8; 64 << 10];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let part = &mut chunk[..(end - start) as usize];
        file.read_exact_at(part, start)?;
        if let Some(i) = part.iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep < len {
                log::warn!(
                    "events file: its last line ({} bytes) was cut short by a killed run; cutting it off",
                    len - keep
                );
                file.set_len(keep)?;
            }
            return Ok(());
        }
        end = start;
    }
    log::warn!("events file: it holds one line cut short by a killed run; cutting it off");
    file.set_len(0)
}

impl Drop for EventsFile {
    fn drop(&mut self) {
        self.flush();
    }
}
