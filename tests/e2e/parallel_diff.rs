//! The differential test: `run --cmd` against GNU parallel as the oracle, on a corpus of
//! awkward input lines times a set of templates. Both run the same template through
//! `/bin/sh` in directories of the same content, each command writing its stdout into
//! `out/{#}`, and every file is compared byte for byte (so the comparison holds whatever
//! `bulkhead run` prints on its own stdout). GNU parallel comes from Debian's package
//! (`.ci/peers-setup.sh parallel`); where it cannot be had the test says SKIPPED (and fails with
//! BULKHEAD_REQUIRE_PARALLEL=1, which `.ci/run` sets once it installed it).
//!
//! Deliberate differences, fed to the oracle as bulkhead reads its input:
//! - A line's trailing CR is dropped (a file written on Windows): parallel keeps it in the
//!   argument. The oracle gets the line without it.
//! - An empty line is no task: parallel runs it with an empty argument. The corpus has none
//!   in the middle (its `{#}` would differ from there on); a unit test pins the rule.
//! - `{= perl =}` is refused (no Perl here); other differences are in quoting inside a
//!   template's own quotes (`'{}'`, `"{}"`), where each tool's quoting shows: such templates
//!   are left out.
//! - A command whose worker died (quarantined) has no counterpart in parallel, which has no
//!   worker; its partial output is shown as parallel shows a job it killed for `--timeout`
//!   (tests/e2e/output.rs). Killed jobs themselves print as parallel's do: checked here.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::*;

/// The awkward lines: shell syntax, globs, options, whitespace, unicode, bytes that are no
/// UTF-8, and path shapes.
const CORPUS: &[&[u8]] = &[
    b"plain",
    b"it's",
    b"say \"hi\"",
    b"$(echo injected)",
    b"`echo tick`",
    b"$HOME",
    b"*",
    b"*.txt",
    b"?",
    b"[ab]",
    b"-n",
    b"--help",
    b"a\tb",
    b"two  spaces",
    b" lead and trail ",
    b"\xc3\xbcn\xc3\xafc\xc3\xb8d\xc3\xa9 \xe2\x9c\x93",
    b"caf\xe9 \xff\xfe",
    b"crlf line\r",
    b";ls|cat&",
    b"back\\slash",
    b"~",
    b"!bang",
    b"#hash",
    b"{}",
    b"{1}",
    b".hidden",
    b"a.tar.gz",
    b"dir/",
    b"dir/sub/",
    b"a//b",
    b"..",
    b".",
    b"a/.",
    b"a/..",
    b"/",
    b"/abs/path.x",
    b"x.",
    b"a.b/c",
];

/// Templates; each gets ` > out/{#}` so every command's stdout lands in a file of its own.
const TEMPLATES: &[&str] = &[
    "printf '%s\\n' {}",
    "printf '%s\\n' {.}",
    "printf '%s\\n' {/}",
    "printf '%s\\n' {//}",
    "printf '%s\\n' {/.}",
    "echo {#} {}",
    "printf '[%s]' {} {.} {/} {//} {/.}; echo",
    "echo x{}y",
    "printf '<%s>\\n' {1} {1/} {1//} {1.} {1/.}",
    "awk 'BEGIN { n[\"k\"] = 1; for (k in n) printf \"%s=%s\\n\", k, ARGV[1] }' {}",
    "printf '%s\\n' \"$(printf %s {} | wc -c)\"",
    "test -n {} && printf '%s\\n' ok{/.}ok",
    "for a in {} {}; do printf '(%s)' \"$a\"; done; echo",
];

/// GNU parallel, or why not.
fn oracle() -> Option<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let setup = output_of(Command::new("sh").arg(root.join(".ci/peers-setup.sh")).arg("parallel"));
    if setup.status.success() {
        return Some(());
    }
    let why = String::from_utf8_lossy(&setup.stderr).lines().last().unwrap_or("the setup script failed").to_string();
    let required = std::env::var("BULKHEAD_REQUIRE_PARALLEL").is_ok_and(|v| v == "1");
    assert!(!required, "BULKHEAD_REQUIRE_PARALLEL=1 but GNU parallel cannot be had: {why}");
    let _ = writeln!(std::io::stderr(), "SKIPPED: differential test against GNU parallel: {why}");
    None
}

/// A fresh directory `name` with an empty `out/`; the same in both runs, since a glob that
/// reached the shell would list it.
fn fresh(sb: &Sandbox, name: &str) -> std::path::PathBuf {
    let dir = sb.path(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("out")).unwrap();
    dir
}

/// Every file under `dir/out`, by name.
fn outputs(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir.join("out"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect()
}

/// Runs GNU parallel on `input` with `args` in `dir`.
fn run_parallel(dir: &Path, args: &[&str], input: &[u8]) {
    let mut c = Command::new("parallel");
    c.arg("--will-cite")
        .args(["-j", "2"])
        .args(args)
        .current_dir(dir)
        .env("PARALLEL_SHELL", "/bin/sh")
        .env("HOME", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("start parallel");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.code().is_some(), "parallel died: {}", String::from_utf8_lossy(&out.stderr));
}

/// Runs bulkhead on the input file `input` with `args` in `dir`.
fn run_bulkhead(sb: &Sandbox, dir: &Path, args: &[&str], input: Option<&Path>) {
    let mut c = sb.cmd(&["run", "-j", "2"]);
    c.args(args).current_dir(dir).env("HOME", dir).stdin(Stdio::null());
    if let Some(i) = input {
        c.arg(i);
    }
    let out = output_of(&mut c);
    // Some commands fail on purpose (`test -n`), for both.
    assert!(matches!(out.status.code(), Some(0 | 1)), "bulkhead: {}", String::from_utf8_lossy(&out.stderr));
}

fn compare(sb: &Sandbox, what: &str, ours: &[&str], theirs: &[&str], input: &[u8], oracle_input: &[u8]) {
    let (a, b) = (fresh(sb, "bulkhead"), fresh(sb, "parallel"));
    let file = sb.path("corpus");
    std::fs::write(&file, input).unwrap();
    run_bulkhead(sb, &a, ours, (!input.is_empty()).then_some(file.as_path()));
    run_parallel(&b, theirs, oracle_input);
    let (got, want) = (outputs(&a), outputs(&b));
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{what}: the jobs that ran");
    for (name, want) in &want {
        let got = &got[name];
        assert!(
            got == want,
            "{what}: job {name}: bulkhead wrote {:?}, GNU parallel {:?}",
            String::from_utf8_lossy(got),
            String::from_utf8_lossy(want)
        );
    }
}

#[test]
fn run_cmd_matches_gnu_parallel_on_awkward_lines() {
    if oracle().is_none() {
        return;
    }
    let sb = Sandbox::new();
    let input: Vec<u8> = CORPUS.iter().flat_map(|l| l.iter().copied().chain([b'\n'])).collect();
    // Deliberate: bulkhead drops a trailing CR.
    let oracle_input: Vec<u8> =
        CORPUS.iter().flat_map(|l| l.strip_suffix(b"\r").unwrap_or(l).iter().copied().chain([b'\n'])).collect();
    for t in TEMPLATES {
        let t = format!("{t} > out/{{#}}");
        compare(&sb, &t, &["--cmd", &t], &[&t], &input, &oracle_input);
    }
    let t = "printf '%s|%s|%s\\n' {2} {1} {3} > out/{#}";
    compare(&sb, "--colsep", &["--colsep", "\\t", "--cmd", t], &["--colsep", "\\t", t], &input, &oracle_input);
    sb.assert_clean();
}

#[test]
fn input_sources_match_gnu_parallel() {
    if oracle().is_none() {
        return;
    }
    let sb = Sandbox::new();
    let t = "printf '%s-%s %s\\n' {1} {2} {2/} > out/{#}";
    let sources = [":::", "a", "it's", "$(x)", ":::", "dir/", "a//b", "*", "c.d"];
    for link in [false, true] {
        let mut ours = vec!["--cmd", t];
        let mut theirs = vec![t];
        if link {
            ours.insert(0, "--link");
            theirs.insert(0, "--link");
        }
        ours.extend(sources);
        theirs.extend(sources);
        compare(&sb, &format!("::: link={link}"), &ours, &theirs, b"", b"");
    }
    sb.assert_clean();
}

/// What a killed job prints, on stdout, byte for byte: a job killed by `--timeout` shows
/// its partial output, grouped and in its turn with `-k`; a job killed by `--halt now`
/// shows none (in bulkhead it is left for --resume, which shows its output then). Its stderr
/// goes out as far as it got in both.
#[test]
fn killed_jobs_print_as_in_gnu_parallel() {
    if oracle().is_none() {
        return;
    }
    let sb = Sandbox::new();
    // Each job prints before it may be killed; `started` tells the failing job that the
    // other one has printed (a redirection, not `touch`: the failing job may see the file while
    // `touch` still runs, and parallel then orphans it to this test process, a subreaper, where
    // it is left a zombie). The one killed is an exec'd `sleep`, no child of a shell that
    // parallel would orphan when it kills the shell.
    let timeout_cmd = "echo start {}; echo err {} >&2; if [ {} = 0 ]; then echo end {}; else exec sleep {}; fi";
    let halt_cmd = "if [ {} = 1 ]; then while [ ! -e started ]; do sleep 0.01; done; echo fail {}; exit 1; fi; \
                    echo partial {}; echo err {} >&2; : > started; exec sleep 30";
    let cases: [(&str, &[&str], &str, [&str; 2]); 2] = [
        ("--timeout", &["-k", "--timeout", "2"], timeout_cmd, ["30", "0"]),
        ("--halt now", &["--halt", "now,fail=1"], halt_cmd, ["1", "2"]),
    ];
    for (what, flags, cmd, inputs) in cases {
        let args: Vec<&str> = [flags, &[cmd, ":::"], &inputs[..]].concat();
        let dir = fresh(&sb, "theirs");
        let theirs = output_of(
            Command::new("parallel")
                .arg("--will-cite")
                .args(["-j", "2"])
                .args(&args)
                .current_dir(&dir)
                .env("PARALLEL_SHELL", "/bin/sh")
                .env("HOME", &dir)
                .stdin(Stdio::null()),
        );
        let dir = fresh(&sb, "ours");
        let ours_args: Vec<&str> = [&["run", "-j", "2"], flags, &["--cmd", cmd, ":::"], &inputs[..]].concat();
        let ours = output_of(sb.cmd(&ours_args).current_dir(&dir).env("HOME", &dir).stdin(Stdio::null()));
        assert_eq!(ours.status.code(), Some(1), "{what}: {}", String::from_utf8_lossy(&ours.stderr));
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&theirs.stdout),
            "{what}: stdout differs from GNU parallel's (its stderr: {})",
            String::from_utf8_lossy(&theirs.stderr)
        );
        let (ours_err, theirs_err) = (String::from_utf8_lossy(&ours.stderr), String::from_utf8_lossy(&theirs.stderr));
        for line in ["err 30", "err 0", "err 1", "err 2"] {
            let seen = |t: &str| t.lines().any(|l| l == line);
            assert_eq!(seen(&ours_err), seen(&theirs_err), "{what}: {line:?} on stderr:\n{ours_err}\n--\n{theirs_err}");
        }
    }
    sb.assert_clean();
}
