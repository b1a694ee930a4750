//! One task's execution, the same in a worker process and on a thread of the supervisor
//! (thread mode): publish it on the status page, decode it, run the handler, inject its
//! fault, encode the output within the output limit.
//!
//! Both modes call [`execute`], so a task fails the same way in both: an output too large for
//! a frame is the task's error in thread mode too, and a payload that does not decode reads
//! the same.

use std::any::Any;
use std::cell::Cell;

use shared::frame::{self, MAX_FRAME};
use shared::proto::{Assignment, TaskError};
use shared::shm::PageSlot;
use shared::task::FaultKind;

use crate::clock::mono_ns;
use crate::fault::{self, FaultSite};
use crate::handler::{Handler, TaskContext};

/// Outputs larger than this (encoded) are replaced by an error: half a frame, so that the
/// output and the rest of its results batch always fit one frame.
pub const MAX_OUTPUT: usize = (MAX_FRAME as usize) / 2;

thread_local! {
    /// The seq this thread is executing, 0 when idle; for the panic hook and the fatal-signal
    /// handlers, which must name the task that took the thread down.
    pub(crate) static CURRENT: Cell<u64> = const { Cell::new(0) };
}

/// The seq of the task the calling thread is executing. It stays set when the task unwinds
/// (a panic), so that whoever catches the panic can name the task.
pub fn executing() -> Option<u64> {
    let seq = CURRENT.with(Cell::get);
    (seq != 0).then_some(seq)
}

/// How one task went.
#[derive(Debug)]
pub struct Executed {
    /// The clock when it finished: the start of a task that follows at once.
    pub end_ns: u64,
    /// How long it ran.
    pub micros: u64,
    /// `None`: it succeeded, and its encoded output is in the scratch buffer.
    pub error: Option<TaskError>,
    /// The peak the supervisor's memory samples left on the page (0: none fell within it).
    pub peak_rss: u64,
    /// Processes its command left running, stopped.
    pub leaked: u32,
}

/// Runs one task on `slot`, publishing it there while it runs, and returns how it went; the
/// encoded output is left in `scratch`.
///
/// `start_ns` is the clock when the task starts: the end of the previous task when it follows
/// at once, which saves a clock read per task in a batch of tiny ones. `settle` runs after
/// the output is encoded, while the task is still published as executing: bookkeeping of the
/// caller that a crash must blame on this task (thread mode's shared tally).
pub fn execute<H: Handler>(
    handler: &H,
    a: &Assignment<'_>,
    slot: &PageSlot,
    site: &dyn FaultSite,
    scratch: &mut Vec<u8>,
    start_ns: Option<u64>,
    settle: impl FnOnce(&Executed),
) -> Executed {
    let t0 = start_ns.unwrap_or_else(mono_ns);
    slot.peak_rss.store(0, std::sync::atomic::Ordering::Relaxed);
    slot.begin(a.seq, t0);
    CURRENT.with(|c| c.set(a.seq));
    let cx = TaskContext::on_page(a.attempt, slot).skipping(&a.skip);
    let result = match postcard::from_bytes::<H::Task>(a.payload) {
        Ok(task) => handler.handle(task, &cx),
        Err(e) => Err(TaskError::new(format!("cannot decode the task for handler '{}': {e}", H::name()))),
    };
    cx.clear_child_group();
    if let Some(kind) = a.fault {
        fault::inject(kind, site);
    }
    scratch.clear();
    let result = result.and_then(|out| match frame::append(&out, scratch) {
        Ok(()) if scratch.len() <= MAX_OUTPUT => Ok(()),
        Ok(()) => Err(TaskError::new(format!("output of {} bytes exceeds the limit of {MAX_OUTPUT}", scratch.len()))),
        Err(e) => Err(TaskError::new(format!("cannot encode the output: {e}"))),
    });
    let t1 = mono_ns();
    let peak_rss = slot.peak_rss.swap(0, std::sync::atomic::Ordering::AcqRel);
    let leaked = cx.leaked();
    let done = Executed { end_ns: t1, micros: (t1 - t0) / 1000, error: result.err(), peak_rss, leaked };
    settle(&done);
    CURRENT.with(|c| c.set(0));
    slot.end(a.seq);
    done
}

/// An assignment copied out of the read buffer, for another thread.
#[derive(Debug, Clone)]
pub struct OwnedAssignment {
    /// As in [`Assignment::seq`].
    pub seq: u64,
    /// As in [`Assignment::attempt`].
    pub attempt: u32,
    /// As in [`Assignment::fault`].
    pub fault: Option<FaultKind>,
    /// As in [`Assignment::payload`].
    pub payload: Vec<u8>,
    /// As in [`Assignment::skip`].
    pub skip: Vec<u64>,
}

impl OwnedAssignment {
    /// Copies `a`.
    pub fn copy(a: &Assignment<'_>) -> Self {
        Self { seq: a.seq, attempt: a.attempt, fault: a.fault, payload: a.payload.to_vec(), skip: a.skip.clone() }
    }

    /// Borrows it back as an assignment.
    pub fn as_assignment(&self) -> Assignment<'_> {
        Assignment {
            seq: self.seq,
            attempt: self.attempt,
            fault: self.fault,
            payload: &self.payload,
            skip: self.skip.clone(),
        }
    }
}

/// The message of a panic payload: what `panic!` was given when it was a string.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Bytes;

    impl Handler for Bytes {
        type Task = usize;
        type Output = Vec<u8>;
        fn handle(&self, n: usize, _cx: &TaskContext<'_>) -> Result<Vec<u8>, TaskError> {
            Ok(vec![7; n])
        }
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct SumRecords;

    impl Handler for SumRecords {
        type Task = Vec<u64>;
        type Output = u64;
        fn handle(&self, records: Vec<u64>, cx: &TaskContext<'_>) -> Result<u64, TaskError> {
            let mut sum = 0;
            for (i, r) in records.iter().enumerate() {
                if cx.at(i).skip() {
                    continue;
                }
                sum += r;
            }
            Ok(sum)
        }
    }

    struct NoSite;

    impl FaultSite for NoSite {
        fn garbage(&self) -> bool {
            false
        }
        fn disconnect(&self) -> bool {
            false
        }
    }

    fn slot() -> PageSlot {
        PageSlot::default()
    }

    fn run(payload: &[u8], settle: impl FnOnce(&Executed)) -> (Executed, Vec<u8>) {
        let a = Assignment { seq: 5, attempt: 1, fault: None, payload, skip: Vec::new() };
        let mut scratch = Vec::new();
        let done = execute(&Bytes, &a, &slot(), &NoSite, &mut scratch, None, settle);
        (done, scratch)
    }

    /// The output is encoded into the scratch buffer; one larger than the limit is the task's
    /// error, in whichever mode runs it.
    #[test]
    fn an_output_over_the_limit_is_the_tasks_error() {
        let (done, scratch) = run(&postcard::to_stdvec(&3usize).unwrap(), |_| {});
        assert!(done.error.is_none());
        assert_eq!(postcard::from_bytes::<Vec<u8>>(&scratch).unwrap(), vec![7; 3]);

        let (done, _) = run(&postcard::to_stdvec(&(MAX_OUTPUT + 1)).unwrap(), |_| {});
        let err = done.error.expect("too large").to_string();
        assert!(err.contains(&format!("exceeds the limit of {MAX_OUTPUT}")), "{err}");
    }

    /// A payload that is not the handler's task type is the task's error, naming the handler.
    #[test]
    fn a_payload_that_does_not_decode_is_the_tasks_error() {
        let (done, _) = run(&[], |_| {});
        let err = done.error.expect("undecodable").to_string();
        assert!(err.starts_with("cannot decode the task for handler '"), "{err}");
    }

    /// `settle` runs while the task is still published; after it, the thread is idle again.
    #[test]
    fn settle_sees_the_task_still_executing() {
        let mut seen = None;
        let (done, _) = run(&postcard::to_stdvec(&1usize).unwrap(), |_| seen = executing());
        assert!(done.error.is_none());
        assert_eq!(seen, Some(5));
        assert_eq!(executing(), None);
    }

    /// The records in the assignment's skip list are left out; the last record reported is
    /// on the page until the next task starts.
    #[test]
    fn at_reports_the_record_and_skips_the_listed_ones() {
        let payload = postcard::to_stdvec(&(0..50u64).collect::<Vec<_>>()).unwrap();
        let a = Assignment { seq: 9, attempt: 2, fault: None, payload: &payload, skip: vec![3, 37] };
        let (slot, mut scratch) = (slot(), Vec::new());
        let done = execute(&SumRecords, &a, &slot, &NoSite, &mut scratch, None, |_| {});
        assert!(done.error.is_none());
        assert_eq!(postcard::from_bytes::<u64>(&scratch).unwrap(), (0..50).sum::<u64>() - 3 - 37);
        assert_eq!(slot.record(), Some(49));
    }

    #[test]
    fn panic_messages_of_both_string_kinds() {
        let err = std::panic::catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(&*err), "plain");
        let n = 3;
        let err = std::panic::catch_unwind(|| panic!("formatted {n}")).unwrap_err();
        assert_eq!(panic_message(&*err), "formatted 3");
        let err = std::panic::catch_unwind(|| std::panic::panic_any(1u8)).unwrap_err();
        assert_eq!(panic_message(&*err), "non-string panic payload");
    }
}
