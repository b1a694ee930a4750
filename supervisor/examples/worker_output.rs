//! What a handler prints and logs in a worker process reaches the program: by default on its
//! stderr, each line named by its worker and task; or kept with each task's result, a crashed
//! attempt's last words included.
//!
//! ```text
//! cargo run --example worker_output -- forward | capture | one-by-one
//! ```

use bulkhead::{Handler, Pool, Status, TaskContext, TaskError, WorkerOutput};
use serde::{Deserialize, Serialize};

/// Checks a reading; says what it does on stderr and through `log`, and crashes its worker on
/// a reading of 13 (a bug in a library it calls, say).
#[derive(Serialize, Deserialize)]
struct Check;

impl Handler for Check {
    type Task = u32;
    type Output = u32;

    fn handle(&self, reading: u32, _cx: &TaskContext<'_>) -> Result<u32, TaskError> {
        eprintln!("checking reading {reading}");
        if reading % 2 == 1 {
            log::warn!("reading {reading} is odd");
        }
        log::debug!("not forwarded at the default level");
        if reading == 13 {
            eprintln!("about to crash on {reading}");
            std::process::abort();
        }
        Ok(reading * 10)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    bulkhead::serve_if_worker::<Check>();
    let section = std::env::args().nth(1).unwrap_or_else(|| "forward".into());
    match section.as_str() {
        "forward" => {
            let pool = Pool::builder().workers(2).build(Check)?;
            for r in pool.run([1u32, 2, 3])? {
                let r = r?;
                println!("task {} {} {:?}", r.id, r.status, r.output);
            }
        }
        "capture" => {
            let pool = Pool::builder().workers(2).attempts(2).worker_output(WorkerOutput::Capture).build(Check)?;
            let mut results = pool.run([1u32, 2, 13])?.collect::<Result<Vec<_>, _>>()?;
            results.sort_by(|a, b| a.id.cmp(&b.id));
            for r in results {
                println!("task {} {}", r.id, r.status);
                for line in &r.log {
                    println!("  | {line}");
                }
                assert_eq!(r.status == Status::Quarantined, r.id == "2");
            }
        }
        "one-by-one" => {
            // One task at a time to one worker, each sent when the last came back: the case
            // where the supervisor, not a mark on stderr, names the task of the lines.
            let pool = Pool::builder().workers(1).worker_output(WorkerOutput::Capture).build(Check)?;
            let (tx, source) = bulkhead::channel::<u32>()?;
            let mut run = pool.run_channel(source)?;
            for reading in [1u32, 2, 3, 4] {
                tx.send(reading);
                let r = run.next().ok_or("the run ended early")??;
                println!("task {} {}", r.id, r.status);
                for line in &r.log {
                    println!("  | {line}");
                }
            }
            drop(tx);
            run.finish()?;
        }
        other => return Err(format!("unknown section '{other}': forward, capture or one-by-one").into()),
    }
    Ok(())
}
