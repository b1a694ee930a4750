//! The mistake the library must catch at once: a program that builds a process pool without
//! calling `bulkhead::serve_if_worker` first in `main`. Its first worker reaches the pool's
//! `build`, says so and exits; the run stops there with an error that names the missing call.
//!
//! ```text
//! cargo run --example forgot_serve
//! ```

use std::time::Instant;

use bulkhead::{Handler, Pool, TaskContext, TaskError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Count;

impl Handler for Count {
    type Task = u32;
    type Output = u32;
    fn handle(&self, n: u32, _cx: &TaskContext<'_>) -> Result<u32, TaskError> {
        Ok(n + 1)
    }
}

fn main() {
    // Work with a side effect, done before the pool (and, by mistake, with no
    // serve_if_worker before it): each start of this program leaves a file, so that the
    // starts can be counted.
    let _ = std::fs::write(format!("started-{}", std::process::id()), "");
    let started = Instant::now();
    let pool = match Pool::builder().workers(2).build(Count) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot build the pool: {e}");
            std::process::exit(2);
        }
    };
    let outcome = pool.run(0..10u32).map_err(|e| e.to_string()).and_then(|run| {
        for r in run {
            r.map_err(|e| e.to_string())?;
        }
        Ok(())
    });
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match outcome {
        Ok(()) => println!("all ran ({ms:.0} ms)"),
        Err(e) => {
            println!("error after {ms:.0} ms: {e}");
            std::process::exit(1);
        }
    }
}
