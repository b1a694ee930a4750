//! `bulkhead status`: asks running supervisors for a snapshot over their control sockets.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use interprocess::local_socket::traits::Stream as _;
use interprocess::local_socket::{GenericFilePath, Stream, ToFsName};

use super::StatusArgs;
use crate::output::control::StatusSnapshot;
use crate::output::rundir;

pub(super) fn status(args: StatusArgs) -> i32 {
    let sockets: Vec<PathBuf> = match args.socket {
        Some(p) => vec![p],
        None => rundir::list(&rundir::base_dir())
            .into_iter()
            .filter(|(pid, _)| rundir::alive(*pid))
            .map(|(_, dir)| dir.join(rundir::CONTROL_SOCKET))
            .filter(|p| p.exists())
            .collect(),
    };
    if sockets.is_empty() {
        eprintln!("bulkhead: no running batch found (give --socket PATH if it uses --control)");
        return 1;
    }
    let mut code = 0;
    for path in sockets {
        match query(&path) {
            Ok(snap) if args.json => {
                println!("{}", serde_json::to_string(&snap).expect("serializes"))
            }
            Ok(snap) => print_snapshot(&path, &snap),
            Err(e) => {
                eprintln!("bulkhead: {}: {}", path.display(), worker::ErrorChain(&e));
                code = 1;
            }
        }
    }
    code
}

/// Why a run's control socket gave no snapshot.
#[derive(Debug, thiserror::Error)]
enum QueryError {
    /// The path is not a socket name.
    #[error("not a socket path")]
    Name(#[source] std::io::Error),
    /// Nobody answers there.
    #[error("cannot connect")]
    Connect(#[source] std::io::Error),
    /// The answer could not be read.
    #[error("cannot read")]
    Read(#[source] std::io::Error),
    /// The answer is not a snapshot.
    #[error("unexpected answer")]
    Answer(#[source] serde_json::Error),
}

fn query(path: &Path) -> Result<StatusSnapshot, QueryError> {
    let name = path.to_fs_name::<GenericFilePath>().map_err(QueryError::Name)?;
    let stream = Stream::connect(name).map_err(QueryError::Connect)?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).map_err(QueryError::Read)?;
    serde_json::from_str(&line).map_err(QueryError::Answer)
}

fn print_snapshot(path: &Path, s: &StatusSnapshot) {
    println!("batch of pid {} ({} mode), running {:.1}s   [{}]", s.pid, s.mode, s.elapsed_s, path.display());
    // Several runs of one user on one machine: what tells them apart is how each was started.
    if !s.command.is_empty() {
        println!("  command: {}", shell_words(&s.command));
        println!("  started: {}   in {}", started(s.started_unix), s.cwd);
    }
    println!(
        "  tasks: {} done ({} ok, {} failed, {} quarantined), {} running, {} queued, {:.0}/s",
        s.done, s.ok, s.failed, s.quarantined, s.running, s.queued, s.rate
    );
    let crashes: Vec<String> = s.crashes.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!(
        "  crashes: {}   restarts: {}",
        if crashes.is_empty() { "none".to_string() } else { crashes.join(", ") },
        s.restarts
    );
    if let Some(why) = &s.stopping {
        println!("  stopping: {why}");
    }
    println!("  WORKER PID      STATE        TASKS  PROGRESS                  RUNNING");
    for w in &s.workers {
        let pid = w.pid.map_or("-".to_string(), |p| p.to_string());
        let progress = match (w.progress, w.quiet_s) {
            (Some(n), Some(q)) => format!("{n} (last moved {q:.1}s ago)"),
            _ => "-".to_string(),
        };
        let running = match &w.current {
            Some(c) => match &c.label {
                Some(l) => format!("#{} {}: {} ({})", l.seq, l.input, l.cmd, c.id),
                None => c.id.clone(),
            },
            None => String::new(),
        };
        println!("  {:<6} {:<8} {:<12} {:<6} {progress:<25} {running}", w.slot, pid, w.state, w.tasks);
    }
}

/// A command line as a shell would take it back: words with spaces or quotes in single quotes.
fn shell_words(words: &[String]) -> String {
    let quote = |w: &String| {
        if !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%{}".contains(c)) {
            w.clone()
        } else {
            format!("'{}'", w.replace('\'', "'\\''"))
        }
    };
    words.iter().map(quote).collect::<Vec<_>>().join(" ")
}

/// A start time as local wall-clock time (`date`'s format), and how long ago.
fn started(unix: f64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    let t = unix as libc::time_t;
    // SAFETY: localtime_r writes only into the struct it is given.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals; localtime_r keeps neither.
    let ok = !unsafe { libc::localtime_r(&t, &mut tm) }.is_null();
    let ago = (now - unix).max(0.0);
    if ok {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} ({ago:.0}s ago)",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec
        )
    } else {
        format!("{ago:.0}s ago")
    }
}
