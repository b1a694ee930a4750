//! The HTML timeline of a run, drawn from its events stream (to be written).

use crate::events::Timed;

/// Renders a self-contained HTML page for the events of one run.
pub fn render(events: &[Timed], title: &str) -> String {
    let _ = events;
    format!("<!doctype html><title>{title}</title>")
}
