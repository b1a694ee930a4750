//! The HTML timeline report of a run, drawn from its events stream: one self-contained page
//! (inline CSS, SVG and a little JS; nothing is fetched) with a lane per worker slot, a bar per
//! task attempt coloured by outcome, a marker at every worker death, and a summary. What the
//! events mean is defined in `engine::lifecycle`; `events` reads them one at a time into the
//! `timeline` model, and `page` draws it.

mod events;
mod page;
mod timeline;

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

pub use events::ReportError;
pub use timeline::Timeline;

#[cfg(test)]
use crate::engine::lifecycle::Timed;

/// Renders a self-contained HTML page for the events of one run.
#[cfg(test)]
fn render(events: &[Timed], title: &str) -> String {
    let mut timeline = Timeline::new();
    for e in events {
        timeline.push(e);
    }
    timeline.to_html(title)
}

/// Reads an events file (JSON lines) and renders its page. A last line cut short by a killed
/// run is skipped with a note on the page; any other bad line is an error naming it.
pub fn render_file(path: &Path, title: &str) -> Result<String, ReportError> {
    let file = File::open(path).map_err(|source| ReportError::Io { path: path.to_path_buf(), source })?;
    let mut timeline = Timeline::new();
    events::read_events(BufReader::with_capacity(1 << 20, file), path, &mut timeline)?;
    Ok(timeline.to_html(title))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use std::path::PathBuf;

    use proptest::prelude::*;
    use shared::record::{CrashCause, Status};

    use super::events::*;
    use super::page::*;
    use super::timeline::*;
    use super::*;
    use crate::engine::SlotIndex;
    use crate::engine::lifecycle::{RunEvent, WorkerExit};

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata").join(name)
    }

    fn at(t: f64, event: RunEvent) -> Timed {
        Timed { t, event }
    }

    fn started(t: f64, worker: usize, pid: u32) -> Timed {
        at(t, RunEvent::WorkerStarted { worker: SlotIndex(worker), pid, ms: 2.0 })
    }

    fn dispatched(t: f64, id: &str, worker: usize, attempt: u32) -> Timed {
        at(t, RunEvent::TaskStarted { id: id.into(), worker: SlotIndex(worker), attempt, label: None })
    }

    fn finished(t: f64, id: &str, worker: usize, ms: f64) -> Timed {
        at(
            t,
            RunEvent::TaskFinished {
                id: id.into(),
                worker: SlotIndex(worker),
                status: Status::Ok,
                ms,
                label: None,
                peak_rss: None,
            },
        )
    }

    fn died(t: f64, worker: usize, pid: u32, cause: CrashCause, task: &str) -> Timed {
        at(
            t,
            RunEvent::WorkerExited {
                worker: SlotIndex(worker),
                pid,
                exit: WorkerExit::Died(Some(cause)),
                task: Some(task.into()),
            },
        )
    }

    fn requeued(t: f64, id: &str, worker: usize, charged: bool) -> Timed {
        at(
            t,
            RunEvent::TaskRequeued {
                id: id.into(),
                worker: SlotIndex(worker),
                charged,
                attempts: u32::from(charged),
                label: None,
            },
        )
    }

    fn segv() -> CrashCause {
        CrashCause::Signal { signal: "SIGSEGV".into(), core: false, detail: None }
    }

    fn count(html: &str, needle: &str) -> usize {
        html.matches(needle).count()
    }

    /// The unclean exits of an events file.
    fn deaths_in(path: &Path) -> usize {
        std::fs::read_to_string(path).unwrap().lines().filter(|l| l.contains("\"clean\":false")).count()
    }

    #[test]
    fn a_cmd_tasks_bars_name_its_input_and_seq() {
        let label = || {
            Some(crate::engine::lifecycle::TaskLabel {
                input: "logs/a.log".into(),
                input_b64: None,
                seq: 3,
                cmd: "gzip -9f logs/a.log".into(),
                cmd_b64: None,
            })
        };
        let events = [
            started(0.0, 0, 10),
            at(0.1, RunEvent::TaskStarted { id: "h".into(), worker: SlotIndex(0), attempt: 1, label: label() }),
            at(
                0.2,
                RunEvent::TaskFinished {
                    id: "h".into(),
                    worker: SlotIndex(0),
                    status: Status::Ok,
                    ms: 100.0,
                    label: label(),
                    peak_rss: None,
                },
            ),
        ];
        let html = render(&events, "run");
        assert!(html.contains("h #3 logs/a.log · attempt 1"), "{html}");
    }

    #[test]
    fn fixtures_have_a_lane_per_slot_and_a_marker_per_death() {
        for name in ["report-faults.jsonl", "report-kills.jsonl"] {
            let path = testdata(name);
            let html = render_file(&path, name).unwrap();
            assert_eq!(count(&html, "<rect class=\"lbg"), 2, "{name}: two worker slots");
            assert!(html.contains(">worker 0</text>") && html.contains(">worker 1</text>"), "{name}");
            assert_eq!(count(&html, "<g class=\"mk d "), deaths_in(&path), "{name}");
            assert!(html.contains("shutdown: <b class=\"good\">completed</b>"), "{name}");
            assert!(!html.contains("http://") && !html.contains("https://"), "{name}");
        }
        let html = render_file(&testdata("report-faults.jsonl"), "faults").unwrap();
        for cause in
            ["panicked: injected fault: panic", "killed by SIGKILL", "exited with status 3", "has overflowed its stack"]
        {
            assert!(html.contains(cause), "{cause}");
        }
        // The poison task crashed three times and was quarantined on the third.
        assert_eq!(count(&html, "<rect class=\"b crashed\""), 8);
        assert_eq!(count(&html, "<rect class=\"b quarantined\""), 1);
        assert!(html.contains("blamed task: poison (attempt 3, quarantined)"));
        let html = render_file(&testdata("report-kills.jsonl"), "kills").unwrap();
        for cause in [
            "timed out after 2000 ms",
            "unresponsive for 2000 ms",
            "closed its connection while alive",
            "out of memory",
        ] {
            assert!(html.contains(cause), "{cause}");
        }
    }

    #[test]
    fn an_attempt_runs_after_the_one_before_it_and_a_death_ends_the_executing_one() {
        // Prefetch: a, b and c are dispatched together; a finishes, b crashes the worker, c
        // was only queued there.
        let events = vec![
            started(0.0, 0, 10),
            dispatched(0.0, "a", 0, 1),
            dispatched(0.0, "b", 0, 1),
            dispatched(0.0, "c", 0, 1),
            finished(1.0, "a", 0, 400.0),
            died(1.5, 0, 10, segv(), "b"),
            requeued(1.5, "b", 0, true),
            requeued(1.5, "c", 0, false),
            at(1.5, RunEvent::WorkerRestarted { worker: SlotIndex(0), backoff_ms: 100.0 }),
            started(1.7, 0, 11),
            dispatched(1.7, "b", 0, 2),
            finished(2.0, "b", 0, 300.0),
            at(2.0, RunEvent::Shutdown { reason: "completed".into() }),
        ];
        let mut tl = Timeline::new();
        events.iter().for_each(|e| tl.push(e));
        let a = &tl.routine[0];
        assert_eq!((a.id.as_str(), a.start, a.end), ("a", 0.0, 0.4));
        // b started when a ended, not when it was dispatched.
        let b = &tl.kept[0];
        assert_eq!((b.id.as_str(), b.start, b.end, b.kind), ("b", 0.4, 1.5, BarKind::Crashed(0)));
        let death = &tl.exits[0];
        assert_eq!((death.free, death.free_ids.as_slice()), (1, &["c".to_string()][..]));
        assert_eq!(death.recovered, Some(1.7));
        assert_eq!(death.backoff_ms, Some(100.0));
        // The gap runs from the death to the spawn of the replacement (ready less its 2 ms).
        let down = &tl.lanes[0].downs[0];
        assert!(down.from == 1.5 && (down.to.unwrap() - 1.698).abs() < 1e-9);
        let html = tl.to_html("run");
        assert_eq!(count(&html, "<rect class=\"strip\""), 1);
        assert!(html.contains("replacement ready after 200.0 ms (backoff 100.0 ms)"));
        assert!(html.contains("blamed task: b (attempt 1, charged, requeued)"));
        assert_eq!(count(&html, "<rect class=\"b ok retry\""), 1);
        assert_eq!(count(&html, "<rect class=\"down\""), 1);
    }

    #[test]
    fn overlapping_attempts_get_rows_of_their_own() {
        // A hybrid worker runs two tasks at once.
        let events = [
            started(0.0, 0, 10),
            dispatched(0.0, "a", 0, 1),
            dispatched(0.0, "b", 0, 1),
            finished(1.0, "a", 0, 1000.0),
            finished(1.01, "b", 0, 1000.0),
        ];
        let mut tl = Timeline::new();
        events.iter().for_each(|e| tl.push(e));
        let page = Page::new(&tl);
        assert_eq!(page.lane_rows()[0].rows, 2);
        // Back to back, one row.
        let events = [started(0.0, 0, 10), dispatched(0.0, "a", 0, 1), dispatched(0.0, "b", 0, 1)];
        let mut tl = Timeline::new();
        events.iter().for_each(|e| tl.push(e));
        tl.push(&finished(0.5, "a", 0, 500.0));
        tl.push(&finished(1.0, "b", 0, 500.0));
        assert_eq!(Page::new(&tl).lane_rows()[0].rows, 1);
    }

    #[test]
    fn user_strings_are_escaped() {
        let id = "<script>alert(1)</script>";
        let message = "\"><img src=x onerror=alert(2)> see http://example.com/x & 'y'";
        let events = vec![
            started(0.0, 0, 10),
            dispatched(0.0, id, 0, 1),
            died(0.5, 0, 10, CrashCause::Panic { message: message.into() }, id),
            at(0.5, RunEvent::TaskQuarantined { id: id.into(), attempts: 1, label: None }),
            at(0.6, RunEvent::StatePoisoned { id: id.into(), worker: SlotIndex(0), message: message.into() }),
            at(0.7, RunEvent::Shutdown { reason: "<b>".into() }),
        ];
        let html = render(&events, "</title><script>alert(3)</script>");
        assert!(!html.contains("<script>alert"), "a script got through");
        assert!(!html.contains("<img"), "an element got through");
        assert!(html.contains("shutdown: <b class=\"bad\">&lt;b&gt;</b>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&quot;&gt;&lt;img src=x"));
        assert!(!html.contains("http://") && !html.contains("https://"), "a URL-looking string survived");
        assert_eq!(count(&html, "<script>"), 1, "only the page's own script");
    }

    #[test]
    fn run_strings_are_escaped_wherever_they_land() {
        // One hostile string as a task id, a panic message, a signal name, a queued task's id,
        // a poison message, the shutdown reason and the title: every place the page shows text
        // from the run.
        let p = "<script>alert(\"x&y\")</script>";
        let escaped = "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;";
        let signal_cut = "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/sc…";
        let queued = format!("{p}q");
        let signal = CrashCause::Signal { signal: p.into(), core: false, detail: None };
        let events = vec![
            started(0.0, 0, 10),
            dispatched(0.0, p, 0, 1),
            dispatched(0.0, &queued, 0, 1),
            died(0.5, 0, 10, CrashCause::Panic { message: p.into() }, p),
            requeued(0.5, p, 0, true),
            requeued(0.5, &queued, 0, false),
            at(0.5, RunEvent::WorkerRestarted { worker: SlotIndex(0), backoff_ms: 1.0 }),
            started(0.6, 0, 11),
            dispatched(0.6, p, 0, 2),
            died(0.7, 0, 11, signal, p),
            at(0.7, RunEvent::TaskQuarantined { id: p.into(), attempts: 2, label: None }),
            at(0.75, RunEvent::StatePoisoned { id: p.into(), worker: SlotIndex(0), message: p.into() }),
            at(0.8, RunEvent::Shutdown { reason: p.into() }),
        ];
        let html = render(&events, p);
        // Nowhere raw: not as markup, not as an attribute's quote, not as a bare ampersand.
        assert!(!html.contains(p), "the raw string got through");
        assert!(!html.contains("x&y") && !html.contains("(\"x"), "a quote or an ampersand got through");
        assert_eq!(count(&html, "<script>"), 1, "only the page's own script");
        // And escaped in each place, so that none of them passes by dropping the string.
        for place in [
            format!("<title>{escaped}</title>"),
            format!("<h1>{escaped}</h1>"),
            format!("shutdown: <b class=\"bad\">{escaped}</b>"),
            // A signal's name is cut short.
            format!("<small>({signal_cut} 1)</small>"),
            format!("<title>{escaped} · attempt 1 · worker 0\ncrashed its worker: panicked: {escaped}; requeued"),
            format!("blamed task: {escaped} (attempt 2, quarantined)"),
            format!("not charged:\n{escaped}q</title>"),
            format!("by task {escaped}: {escaped}</title>"),
            format!("<td>panicked: {escaped}</td><td><code>{escaped}</code></td>"),
            format!("<td>killed by {signal_cut}</td><td><code>{escaped}</code> <span class=\"tag q\">"),
            format!("<tr><td><code>{escaped}</code></td>"),
        ] {
            assert!(html.contains(&place), "not found escaped: {place}");
        }
    }

    #[test]
    fn long_user_strings_are_cut() {
        let id = "é".repeat(10_000);
        let events = vec![started(0.0, 0, 1), dispatched(0.0, &id, 0, 1), finished(0.1, &id, 0, 1.0)];
        let html = render(&events, "long");
        assert!(html.len() < 100_000);
        assert!(html.contains(&format!("{}…", "é".repeat(ID_CHARS))));
    }

    /// A big run of `tasks` over 4 workers, with a death every `every` tasks.
    fn big_run(tasks: usize, every: usize) -> (Vec<Timed>, usize) {
        let mut events = Vec::new();
        let mut pids = [100u32, 200, 300, 400];
        for (w, pid) in pids.iter().enumerate() {
            events.push(started(0.0, w, *pid));
        }
        let mut t = [0.0f64; 4];
        let mut deaths = 0;
        for i in 0..tasks {
            let w = i % 4;
            let id = format!("t{i}");
            events.push(dispatched(t[w], &id, w, 1));
            t[w] += 0.001;
            if i % every == every - 1 {
                deaths += 1;
                events.push(died(t[w], w, pids[w], CrashCause::Timeout { limit_ms: 1 }, &id));
                events.push(requeued(t[w], &id, w, true));
                pids[w] += 1;
                t[w] += 0.002;
                events.push(started(t[w], w, pids[w]));
                events.push(dispatched(t[w], &id, w, 2));
                t[w] += 0.001;
            }
            events.push(finished(t[w], &id, w, 1.0));
        }
        events.sort_by(|a, b| a.t.total_cmp(&b.t));
        (events, deaths)
    }

    #[test]
    fn a_big_run_is_drawn_as_bands_and_keeps_every_death() {
        let (events, deaths) = big_run(60_000, 97);
        let html = render(&events, "big");
        assert!(html.contains("too many to draw one by one"));
        assert_eq!(count(&html, "<rect class=\"b ok"), 0, "no single ok bars");
        assert!(count(&html, "<g class=\"bin\">") > 100);
        assert_eq!(count(&html, "<g class=\"mk d "), deaths);
        assert_eq!(count(&html, "<rect class=\"b crashed\""), deaths);
        assert!(html.len() < 2_000_000, "{} bytes", html.len());
        // Below the line, every attempt is a bar.
        let (events, deaths) = big_run(10_000, 97);
        let html = render(&events, "small");
        assert_eq!(count(&html, "<rect class=\"b ok"), 10_000);
        assert_eq!(count(&html, "<g class=\"mk d "), deaths);
    }

    fn events_file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn a_torn_last_line_is_skipped_with_a_note() {
        let good = std::fs::read_to_string(testdata("report-kills.jsonl")).unwrap();
        let f = events_file(&format!("{good}{{\"t\":2.75,\"event\":\"task_sta"));
        let html = render_file(f.path(), "torn").unwrap();
        assert!(html.contains("(line 47) was cut short"));
        assert_eq!(count(&html, "<g class=\"mk d "), 5);
        // A last line that is whole but lacks its newline is read as usual.
        let f = events_file(good.trim_end());
        let html = render_file(f.path(), "whole").unwrap();
        assert!(!html.contains("cut short") && html.contains("shutdown: <b class=\"good\">completed"));
    }

    #[test]
    fn a_bad_line_in_the_middle_is_an_error_naming_it() {
        let text = "{\"t\":0.1,\"event\":\"worker_started\",\"worker\":0,\"pid\":1,\"ms\":1.0}\n\n\
                    {\"t\":0.2,\"event\":\"task_started\",\"id\":\"a\"}\n\
                    {\"t\":0.3,\"event\":\"shutdown\",\"reason\":\"completed\"}\n";
        let f = events_file(text);
        let err = render_file(f.path(), "bad").unwrap_err();
        assert!(matches!(err, ReportError::BadLine { line: 3, .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("line 3: not an event (missing field `worker`"), "{msg}");
        // A torn line followed by more lines is not a torn last line.
        let f = events_file("{\"t\":0.1,\"ev\n{\"t\":0.3,\"event\":\"shutdown\",\"reason\":\"completed\"}\n");
        assert!(matches!(render_file(f.path(), "x"), Err(ReportError::BadLine { line: 1, .. })));
        // So is a bad last line with its newline: the writer finished it.
        let f = events_file("{\"t\":0.3,\"event\":\"shutdown\",\"reason\":\"completed\"}\nnope\n");
        assert!(matches!(render_file(f.path(), "x"), Err(ReportError::BadLine { line: 2, .. })));
        let missing = render_file(Path::new("/nonexistent/events.jsonl"), "x").unwrap_err();
        assert!(matches!(missing, ReportError::Io { .. }));
    }

    #[test]
    fn events_of_unknown_kinds_are_skipped() {
        let f = events_file(
            "{\"t\":0.1,\"event\":\"worker_started\",\"worker\":0,\"pid\":1,\"ms\":1.0}\n\
             {\"t\":0.2,\"event\":\"from_the_future\",\"x\":1}\n\
             {\"t\":0.3,\"event\":\"shutdown\",\"reason\":\"completed\"}\n",
        );
        let html = render_file(f.path(), "future").unwrap();
        assert!(html.contains(">worker 0</text>"));
    }

    #[test]
    fn an_empty_log_still_makes_a_page() {
        let html = render(&[], "empty");
        assert!(html.contains("nothing to draw"));
        assert!(html.ends_with("</html>\n"));
    }

    #[test]
    fn the_page_fetches_nothing() {
        let html = render_file(&testdata("report-faults.jsonl"), "faults").unwrap();
        assert!(html.contains("Content-Security-Policy\" content=\"default-src 'none'"));
        for needle in ["http:", "https:", "src=", "href=", "@import", "url(http", "<link"] {
            assert!(!html.contains(needle), "{needle}");
        }
    }

    fn any_event() -> impl Strategy<Value = Timed> {
        let id = prop::sample::select(vec!["a", "b", "c", "<x>"]).prop_map(String::from);
        let worker = (0usize..4).prop_map(SlotIndex);
        let t = prop_oneof![0.0f64..10.0, Just(f64::NAN), Just(f64::INFINITY), Just(-1.0), Just(1e300)];
        let ms = prop_oneof![0.0f64..5000.0, Just(f64::NAN), Just(-3.0), Just(1e308)];
        let cause = prop_oneof![
            Just(None),
            Just(Some(CrashCause::Panic { message: "boom".into() })),
            Just(Some(CrashCause::Exit { code: 3 })),
        ];
        let event = prop_oneof![
            (worker.clone(), any::<u32>(), ms.clone()).prop_map(|(worker, pid, ms)| RunEvent::WorkerStarted {
                worker,
                pid,
                ms
            }),
            (id.clone(), worker.clone(), 0u32..4).prop_map(|(id, worker, attempt)| RunEvent::TaskStarted {
                id,
                worker,
                attempt,
                label: None
            }),
            (id.clone(), worker.clone(), ms.clone(), any::<bool>()).prop_map(|(id, worker, ms, ok)| {
                RunEvent::TaskFinished {
                    id,
                    worker,
                    status: if ok { Status::Ok } else { Status::Failed },
                    ms,
                    label: None,
                    peak_rss: None,
                }
            }),
            (worker.clone(), any::<bool>(), cause, prop::option::of(id.clone())).prop_map(
                |(worker, clean, cause, task)| {
                    let exit = if clean { WorkerExit::Clean } else { WorkerExit::Died(cause) };
                    RunEvent::WorkerExited { worker, pid: 7, exit, task }
                }
            ),
            (id.clone(), worker.clone(), any::<bool>()).prop_map(|(id, worker, charged)| RunEvent::TaskRequeued {
                id,
                worker,
                charged,
                attempts: 1,
                label: None
            }),
            (id.clone(), 0u32..4).prop_map(|(id, attempts)| RunEvent::TaskQuarantined { id, attempts, label: None }),
            (worker.clone(), ms).prop_map(|(worker, backoff_ms)| RunEvent::WorkerRestarted { worker, backoff_ms }),
            (id, worker).prop_map(|(id, worker)| RunEvent::StatePoisoned { id, worker, message: "m".into() }),
            Just(RunEvent::Shutdown { reason: "interrupted".into() }),
        ];
        (t, event).prop_map(|(t, event)| Timed { t, event })
    }

    proptest! {
        #[test]
        fn any_sequence_of_events_makes_a_page(events in prop::collection::vec(any_event(), 0..60)) {
            let html = render(&events, "fuzz");
            prop_assert!(html.ends_with("</html>\n"));
            prop_assert!(!html.contains("NaN") && !html.contains("inf\""));
        }
    }

    /// Writes pages from the fixtures to /tmp for a look in a browser:
    /// `cargo test -p bulkhead --lib report::tests::write_pages -- --ignored`; more as
    /// `REPORT_PAGES=in.jsonl=out.html,...`.
    #[test]
    #[ignore]
    fn write_pages() {
        for (name, out) in [("report-faults.jsonl", "/tmp/report.html"), ("report-kills.jsonl", "/tmp/report2.html")] {
            let html = render_file(&testdata(name), name).unwrap();
            std::fs::write(out, html).unwrap();
        }
        for pair in std::env::var("REPORT_PAGES").unwrap_or_default().split(',').filter(|p| !p.is_empty()) {
            let (input, out) = pair.split_once('=').unwrap();
            std::fs::write(out, render_file(Path::new(input), input).unwrap()).unwrap();
        }
    }
}
