//! A log scanner on the library, as a user would write it: a handler with configuration (a
//! pattern and a flag) that gives the same answers in worker processes and on threads, equal
//! task values that run as separate tasks, and the ways a run can end short, each seen by
//! the plain loop: a crash loop given up on, an interrupt, a task too large to send.
//!
//! ```text
//! cargo run --release --example scanner -- modes | duplicates | give-up | interrupt | oversized
//! ```

use std::time::Duration;

use bulkhead::{Handler, Mode, Pool, RunError, TaskContext, TaskError, TaskSpec};
use serde::{Deserialize, Serialize};

/// Counts the lines of a text that contain a pattern.
#[derive(Debug, Serialize, Deserialize)]
struct Grep {
    pattern: String,
    ignore_case: bool,
}

impl Handler for Grep {
    type Task = String;
    type Output = usize;

    fn handle(&self, text: String, _cx: &TaskContext<'_>) -> Result<usize, TaskError> {
        let pattern = if self.ignore_case { self.pattern.to_lowercase() } else { self.pattern.clone() };
        let hits = text
            .lines()
            .filter(|l| if self.ignore_case { l.to_lowercase().contains(&pattern) } else { l.contains(&pattern) })
            .count();
        Ok(hits)
    }
}

/// Squares a number, slowly when asked (`pause_ms`), or crashes its worker on every task.
#[derive(Debug, Serialize, Deserialize)]
struct Square {
    pause_ms: u64,
    abort: bool,
}

impl Handler for Square {
    type Task = u64;
    type Output = u64;

    fn handle(&self, n: u64, _cx: &TaskContext<'_>) -> Result<u64, TaskError> {
        if self.abort {
            // A bug that takes the whole worker down, every time.
            std::process::abort();
        }
        std::thread::sleep(Duration::from_millis(self.pause_ms));
        n.checked_mul(n).ok_or_else(|| TaskError::new("overflow"))
    }
}

fn logs() -> Vec<TaskSpec<String>> {
    [
        ("app.log", "ERROR disk full\ninfo started\nError: retry"),
        ("net.log", "warn slow\nerror timeout"),
        ("ok.log", "info all good"),
    ]
    .into_iter()
    .map(|(name, text)| TaskSpec::with_id(name, text.to_string()))
    .collect()
}

/// Prints how a stopped run ended: its reason and every task it left unrun.
fn report_stop(e: &RunError) {
    println!("error: {e}");
    for t in &e.not_run {
        println!("not run: {} after {} attempt(s), {} crash(es)", t.id, t.attempts, t.crashes.len());
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // First, one call per handler type: a worker serves the one it was started for.
    bulkhead::serve_if_worker::<Grep>();
    bulkhead::serve_if_worker::<Square>();

    match std::env::args().nth(1).as_deref().unwrap_or("modes") {
        "modes" => {
            for mode in [Mode::Process, Mode::Thread] {
                let grep = Grep { pattern: "error".into(), ignore_case: true };
                let pool = Pool::builder().mode(mode).workers(2).build(grep)?;
                let mut results = pool.run(logs())?.collect::<Result<Vec<_>, _>>()?;
                results.sort_by(|a, b| a.id.cmp(&b.id));
                let per_file: Vec<String> =
                    results.iter().map(|r| format!("{}={}", r.id, r.output.unwrap_or_default())).collect();
                let total: usize = results.iter().filter_map(|r| r.output).sum();
                println!("{mode:?}: {total} matching lines ({})", per_file.join(" "));
            }
        }
        "duplicates" => {
            let pool = Pool::builder().workers(2).build(Square { pause_ms: 0, abort: false })?;
            let mut results = pool.run(vec![5, 6, 5])?.collect::<Result<Vec<_>, _>>()?;
            results.sort_by(|a, b| a.id.cmp(&b.id));
            for r in results {
                println!("task {} = {:?}", r.id, r.output);
            }
        }
        "give-up" => {
            // Every worker dies on its first task: a crash loop, given up on after 3 restarts.
            let pool = Pool::builder()
                .workers(1)
                .attempts(100)
                .max_restarts(3, Duration::from_secs(60))
                .build(Square { pause_ms: 0, abort: true })?;
            let mut records = 0;
            for r in pool.run(1..=4u64)? {
                match r {
                    Ok(r) => {
                        records += 1;
                        println!("task {} {}", r.id, r.status);
                    }
                    Err(e) => report_stop(&e),
                }
            }
            println!("records: {records}");
        }
        "interrupt" => {
            let pool = Pool::builder().workers(1).build(Square { pause_ms: 300, abort: false })?;
            let mut run = pool.run(1..=6u64)?;
            let mut records = 0;
            while let Some(r) = run.next() {
                match r {
                    Ok(r) => {
                        records += 1;
                        println!("task {} {}", r.id, r.status);
                        if records == 1 {
                            // As Ctrl-C would: start nothing new, let the running task end.
                            run.interrupt();
                        }
                    }
                    Err(e) => report_stop(&e),
                }
            }
            println!("records: {records}");
        }
        "oversized" => {
            let pool = Pool::builder()
                .workers(1)
                .max_task_bytes(1 << 20)
                .build(Grep { pattern: "x".into(), ignore_case: false })?;
            let tasks = vec!["x small".to_string(), "x".repeat(2 << 20), "x also small".to_string()];
            let mut results = pool.run(tasks)?.collect::<Result<Vec<_>, _>>()?;
            results.sort_by(|a, b| a.id.cmp(&b.id));
            for r in results {
                match (&r.output, &r.error) {
                    (Some(n), _) => println!("task {} {} = {n}", r.id, r.status),
                    (None, e) => println!("task {} {}: {}", r.id, r.status, e.as_deref().unwrap_or("")),
                }
            }
        }
        other => return Err(format!("unknown scenario '{other}'").into()),
    }
    Ok(())
}
