//! A task type of your own, run crash-isolated in worker processes and then on threads; the
//! mode is chosen in code on one line.
//!
//! ```text
//! cargo run --release --example custom_task
//! ```

use bulkhead::{Handler, Mode, Pool, TaskContext, TaskError, TaskSpec};
use serde::{Deserialize, Serialize};

/// A piece of text to analyse.
#[derive(Debug, Serialize, Deserialize)]
struct Document {
    title: String,
    text: String,
}

/// What the analysis found.
#[derive(Debug, Serialize, Deserialize)]
struct Stats {
    words: usize,
    longest: String,
    worker_pid: u32,
}

#[derive(Serialize, Deserialize)]
struct Analyse;

impl Handler for Analyse {
    type Task = Document;
    type Output = Stats;

    fn handle(&self, doc: Document, _cx: &TaskContext<'_>) -> Result<Stats, TaskError> {
        if doc.text.trim().is_empty() {
            return Err(TaskError::new(format!("'{}' is empty", doc.title)));
        }
        let words: Vec<&str> = doc.text.split_whitespace().collect();
        let longest = words.iter().max_by_key(|w| w.len()).copied().unwrap_or_default();
        Ok(Stats { words: words.len(), longest: longest.to_string(), worker_pid: std::process::id() })
    }
}

fn documents() -> Vec<TaskSpec<Document>> {
    [
        ("seneca", "we suffer more often in imagination than in reality"),
        ("epictetus", "it is not things that disturb us but our judgements about things"),
        ("aurelius", "the impediment to action advances action what stands in the way becomes the way"),
        ("blank", "   "),
    ]
    .into_iter()
    .map(|(title, text)| TaskSpec::with_id(title, Document { title: title.into(), text: text.into() }))
    .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // First thing in main: when this program is started as a worker, this line serves tasks
    // and never returns.
    bulkhead::serve_if_worker::<Analyse>();

    for mode in [Mode::Process, Mode::Thread] {
        // The one line that chooses isolation.
        let pool = Pool::builder().mode(mode).workers(2).build(Analyse)?;
        println!("{mode:?} mode (this program is pid {}):", std::process::id());
        let mut results = pool.run(documents())?.collect::<Result<Vec<_>, _>>()?;
        results.sort_by(|a, b| a.id.cmp(&b.id));
        for r in &results {
            match (&r.output, &r.error) {
                (Some(s), _) => {
                    println!("  {:<10} {} words, longest '{}', ran in pid {}", r.id, s.words, s.longest, s.worker_pid)
                }
                (None, Some(e)) => println!("  {:<10} {}: {e}", r.id, r.status),
                (None, None) => println!("  {:<10} {}", r.id, r.status),
            }
        }
        assert_eq!(results.len(), 4);
    }
    Ok(())
}
