//! The `log` logger a worker process installs: each record becomes one line on stderr naming
//! the task that logged it, for the supervisor to pass on or keep with that task's result.

use std::io::Write;

use crate::execute::executing;

struct WorkerLogger;

impl log::Log for WorkerLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = Vec::new();
        let message = record.args().to_string();
        let seq = executing().unwrap_or(0);
        shared::stderr::encode_log(seq, record.level() as u8, record.target(), &message, &mut line);
        // One write for the whole record, so that another thread's line cannot split it. A
        // worker's stderr is its only channel besides the socket: a failure to write there has
        // nowhere else to be told.
        let _ = std::io::stderr().lock().write_all(&line);
    }

    fn flush(&self) {}
}

/// Installs the logger, forwarding records up to `level`. A logger the program installed
/// itself before serving stays (then its records go where it sends them).
pub(crate) fn install(level: log::LevelFilter) {
    static LOGGER: WorkerLogger = WorkerLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

/// Marks the start of task `seq` on stderr, so that the supervisor can name the task of
/// every raw line that follows.
pub(crate) fn mark_task_start(seq: u64) {
    let mut line = Vec::with_capacity(24);
    shared::stderr::encode_task_start(seq, &mut line);
    let _ = std::io::stderr().lock().write_all(&line);
}
