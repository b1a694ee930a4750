//! A handler with a bug that crashes on some inputs: in process mode the crash is contained,
//! the task retried and, crashing every time, quarantined with every cause; the rest of the
//! batch completes.
//!
//! ```text
//! cargo run --release --example crash
//! ```

use bulkhead::{Handler, Mode, Pool, Status, TaskContext, TaskError, TaskSpec};

#[derive(serde::Serialize, serde::Deserialize)]
struct Parse;

impl Handler for Parse {
    type Task = String;
    type Output = i64;

    fn handle(&self, input: String, cx: &TaskContext<'_>) -> Result<i64, TaskError> {
        match input.as_str() {
            // A bug in a C library, say: a real invalid memory access.
            "segfault" => {
                let bad = std::hint::black_box(0x10usize) as *mut u8;
                // SAFETY: deliberately unsound; this is the crash being demonstrated.
                unsafe { std::ptr::write_volatile(bad, 1) };
                unreachable!()
            }
            // A bug that only shows the first time (a race, a flaky dependency).
            "flaky" if cx.attempt() == 1 => panic!("index out of bounds: the len is 3 but the index is 7"),
            text => text.trim().parse::<i64>().map_err(|e| TaskError::new(format!("'{text}': {e}"))),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    bulkhead::serve_if_worker::<Parse>();

    let inputs = ["12", "flaky", "-7", "segfault", "forty", "30"];
    let pool = Pool::builder().mode(Mode::Process).workers(2).attempts(3).build(Parse)?;
    let tasks = inputs.iter().map(|s| TaskSpec::with_id(*s, s.to_string()));
    let mut run = pool.run(tasks)?;
    for r in run.by_ref() {
        let r = r?;
        print!("{:<9} {:<12} attempts {}", r.id, r.status.to_string(), r.attempts);
        if let Some(v) = r.output {
            print!("  = {v}");
        }
        if let Some(e) = &r.error {
            print!("  ({e})");
        }
        for c in &r.crashes {
            print!("\n          crash on attempt {}: {}", c.attempt, c.cause);
        }
        println!();
        if r.id == "segfault" {
            assert_eq!(r.status, Status::Quarantined);
        }
    }
    let s = run.summary();
    println!(
        "{} ok, {} failed, {} quarantined; {} worker deaths, all contained",
        s.counts.ok,
        s.counts.failed,
        s.counts.quarantined,
        s.counts.crashes_total()
    );
    Ok(())
}
