//! Jobs as the engine holds them: an id, a postcard payload for the handler, maybe a fault,
//! maybe a label (what the task was, for people: a `--cmd` task's input line, number and
//! command, as JSON fields that records carry beside the id).
//!
//! The bytes of many jobs share one allocation (a chunk, filled by whoever reads the input),
//! and each job keeps the chunk alive by reference count. A million tasks thus cost a
//! thousand allocations, not several million, and the reader thread that allocates no longer
//! hands the event loop millions of small blocks to free: in the first profile of a
//! million-task run, a quarter of the time was the allocator.

use std::sync::Arc;

use shared::task::FaultKind;

use super::FaultPlan;

/// One task: an id unique in the batch, the handler's task encoded with postcard, and maybe a
/// fault to inject.
#[derive(Clone)]
pub struct Job {
    chunk: Arc<[u8]>,
    start: u32,
    id_len: u32,
    payload_len: u32,
    label_len: u32,
    /// A fault the task carries.
    pub fault: Option<FaultPlan>,
    /// It is a shell command: a non-zero exit or a timeout fails it (retried only within
    /// `--retries`), while a death of its worker stays a crash.
    pub command: bool,
}

impl Job {
    /// A job in a chunk of its own.
    #[cfg(test)]
    pub fn new(id: &str, payload: &[u8], fault: Option<FaultPlan>) -> Self {
        let mut b = JobBuilder::default();
        b.push_with(id, fault, |buf| {
            buf.extend_from_slice(payload);
            Ok::<(), std::convert::Infallible>(())
        })
        .unwrap_or_else(|e| match e {});
        let mut out = Vec::with_capacity(1);
        b.finish(&mut out);
        out.pop().expect("one job was pushed")
    }

    /// The same job, marked as a shell command.
    #[cfg(test)]
    pub fn into_command(mut self) -> Self {
        self.command = true;
        self
    }

    /// The task's id.
    #[inline]
    pub fn id(&self) -> &str {
        let s = self.start as usize;
        let bytes = &self.chunk[s..s + self.id_len as usize];
        // SAFETY: `JobBuilder` copies the id from a `&str`, so these bytes are valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    /// The task, postcard-encoded.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let s = self.start as usize + self.id_len as usize;
        &self.chunk[s..s + self.payload_len as usize]
    }

    /// The length of [`payload`](Self::payload), without slicing the chunk.
    #[inline]
    pub fn payload_len(&self) -> usize {
        self.payload_len as usize
    }

    /// Its label: JSON object members (`"input":"a.log","seq":3,"cmd":"gzip a.log"`), or
    /// empty for a task that is named by its id alone.
    #[inline]
    pub fn label(&self) -> &str {
        let s = self.start as usize + self.id_len as usize + self.payload_len as usize;
        let bytes = &self.chunk[s..s + self.label_len as usize];
        // SAFETY: `JobBuilder` copies the label from a `&str`, so these bytes are valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id())
            .field("payload", &self.payload())
            .field("fault", &self.fault)
            .field("command", &self.command)
            .finish()
    }
}

impl PartialEq for Job {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
            && self.payload() == other.payload()
            && self.fault == other.fault
            && self.command == other.command
    }
}

impl Eq for Job {}

/// A label ([`Job::label`]) for people: ` (#3 a.log)` after the id; empty for none.
pub fn describe(label: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Named {
        seq: u64,
        input: String,
    }
    match serde_json::from_str::<Named>(&format!("{{{label}}}")) {
        Ok(n) if !label.is_empty() => format!(" (#{} {})", n.seq, n.input),
        _ => String::new(),
    }
}

/// Collects jobs into one chunk.
#[derive(Debug, Default)]
pub struct JobBuilder {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
}

/// A collected job's lengths and flags. Its bytes start where the job before it ended, so
/// no offset is kept, and its fault is kept in its two parts: 24 bytes, where a tuple of the
/// same was 32, and the budget of jobs a file's check keeps for the run counts these: at 32,
/// a million no-ops no longer fitted it, and 58% of them were parsed a second time while the
/// run went (the reader thread's 243 ms of CPU taken from the workers and the loop, perf,
/// 2 cores).
#[derive(Debug)]
struct Entry {
    id_len: u32,
    payload_len: u32,
    label_len: u32,
    fault_attempts: Option<u32>,
    fault: Option<FaultKind>,
    command: bool,
}

impl JobBuilder {
    /// Bytes of bookkeeping per job, besides its id and payload.
    pub const ENTRY_BYTES: usize = std::mem::size_of::<Entry>();

    /// Bytes of ids and payloads collected so far.
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Jobs collected so far.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when none were collected.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds a job whose payload `write` appends to the buffer it is given; on error nothing is
    /// added.
    pub fn push_with<E>(
        &mut self,
        id: &str,
        fault: Option<FaultPlan>,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.push_labeled(id, "", fault, write)
    }

    /// [`push_with`](Self::push_with) for a job with a label (see [`Job::label`]).
    pub fn push_labeled<E>(
        &mut self,
        id: &str,
        label: &str,
        fault: Option<FaultPlan>,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(id.as_bytes());
        if let Err(e) = write(&mut self.bytes) {
            self.bytes.truncate(start);
            return Err(e);
        }
        let payload_len = self.bytes.len() - start - id.len();
        self.bytes.extend_from_slice(label.as_bytes());
        self.entries.push(Entry {
            id_len: id.len() as u32,
            payload_len: payload_len as u32,
            label_len: label.len() as u32,
            fault_attempts: fault.and_then(|f| f.attempts),
            fault: fault.map(|f| f.kind),
            command: false,
        });
        Ok(())
    }

    /// Marks the job added last as a shell command (see [`Job::command`]).
    pub fn mark_command(&mut self) {
        if let Some(e) = self.entries.last_mut() {
            e.command = true;
        }
    }

    /// Moves the collected jobs into `out`, sharing one allocation, and empties the builder.
    pub fn finish(&mut self, out: &mut Vec<Job>) {
        if self.entries.is_empty() {
            return;
        }
        let chunk: Arc<[u8]> = Arc::from(std::mem::take(&mut self.bytes));
        let mut start = 0u32;
        out.extend(self.entries.drain(..).map(|e| {
            let job = Job {
                chunk: chunk.clone(),
                start,
                id_len: e.id_len,
                payload_len: e.payload_len,
                label_len: e.label_len,
                fault: e.fault.map(|kind| FaultPlan { kind, attempts: e.fault_attempts }),
                command: e.command,
            };
            start += e.id_len + e.payload_len + e.label_len;
            job
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_share_a_chunk_and_keep_their_bytes() {
        let mut b = JobBuilder::default();
        for i in 0..3u8 {
            b.push_with(&format!("id-{i}"), None, |buf| {
                buf.extend_from_slice(&[i; 3]);
                Ok::<(), ()>(())
            })
            .unwrap();
        }
        assert!(
            b.push_with("bad", None, |buf| {
                buf.push(9);
                Err(())
            })
            .is_err()
        );
        let mut jobs = Vec::new();
        b.finish(&mut jobs);
        assert_eq!(jobs.len(), 3);
        assert_eq!(jobs[2].id(), "id-2");
        assert_eq!(jobs[2].payload(), &[2, 2, 2]);
        assert!(Arc::ptr_eq(&jobs[0].chunk, &jobs[2].chunk));
        assert_eq!(Job::new("x", &[1], None).payload(), &[1]);
        b.push_labeled("l", "\"seq\":1", None, |buf| {
            buf.push(7);
            Ok::<(), ()>(())
        })
        .unwrap();
        b.finish(&mut jobs);
        assert_eq!((jobs[3].id(), jobs[3].label(), jobs[3].payload()), ("l", "\"seq\":1", &[7][..]));
        // A fault and the command mark come back as given, each job's bytes where the last ended.
        let plan = FaultPlan { kind: FaultKind::Segv, attempts: Some(2) };
        for (id, fault) in [("f1", Some(plan)), ("f2", Some(FaultPlan { attempts: None, ..plan })), ("f3", None)] {
            b.push_labeled(id, "x", fault, |buf| {
                buf.extend_from_slice(id.as_bytes());
                Ok::<(), ()>(())
            })
            .unwrap();
            b.mark_command();
        }
        b.finish(&mut jobs);
        let got: Vec<_> = jobs[4..].iter().map(|j| (j.id(), j.payload(), j.label(), j.fault, j.command)).collect();
        assert_eq!(
            got,
            [
                ("f1", &b"f1"[..], "x", Some(plan), true),
                ("f2", &b"f2"[..], "x", Some(FaultPlan { attempts: None, ..plan }), true),
                ("f3", &b"f3"[..], "x", None, true),
            ]
        );
    }
}
