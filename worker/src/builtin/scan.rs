//! The `scan` kind: regex over a byte range of a file, aligned to whole lines, so that tasks
//! over consecutive ranges count every line exactly once.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};

use regex::bytes::Regex;
use shared::proto::TaskError;
use shared::task::BuiltinOutput;

/// Counts lines matching `re` and the values of its first capture group, over the lines whose
/// first byte lies in `offset..offset + len`.
pub(super) fn scan(path: &str, offset: u64, len: u64, re: &Regex) -> Result<BuiltinOutput, TaskError> {
    let open_err = |e: std::io::Error| TaskError::new(format!("cannot read {path}: {e}"));
    let mut file = File::open(path).map_err(open_err)?;
    let end = offset.saturating_add(len);
    // A line starting before `offset` belongs to the previous range: start after the first
    // newline at or after offset-1.
    let mut pos = offset;
    if offset > 0 {
        file.seek(SeekFrom::Start(offset - 1)).map_err(open_err)?;
        let mut reader = BufReader::with_capacity(64 << 10, &mut file);
        let mut skipped = Vec::new();
        let n = reader.read_until(b'\n', &mut skipped).map_err(open_err)?;
        pos = offset - 1 + n as u64;
    }
    file.seek(SeekFrom::Start(pos)).map_err(open_err)?;
    let mut reader = BufReader::with_capacity(256 << 10, file.take(u64::MAX));
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut matched_lines = 0u64;
    let mut line = Vec::with_capacity(256);
    while pos < end {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(open_err)?;
        if n == 0 {
            break;
        }
        pos += n as u64;
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if let Some(caps) = re.captures(text) {
            matched_lines += 1;
            if let Some(g) = caps.get(1) {
                *counts.entry(String::from_utf8_lossy(g.as_bytes()).into_owned()).or_insert(0) += 1;
            }
        }
    }
    Ok(BuiltinOutput::Scan { matched_lines, counts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn consecutive_ranges_count_every_line_once() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let mut expected: BTreeMap<String, u64> = BTreeMap::new();
        for i in 0..1000 {
            let status = [200, 404, 500][i % 3];
            writeln!(f, "GET /x/{i} status={status} bytes={}", i * 7).unwrap();
            *expected.entry(status.to_string()).or_default() += 1;
        }
        f.flush().unwrap();
        let size = f.as_file().metadata().unwrap().len();
        let re = Regex::new(r"status=(\d{3})").unwrap();
        let path = f.path().to_str().unwrap();
        for chunk in [1u64, 7, 100, 4096, size] {
            let mut total: BTreeMap<String, u64> = BTreeMap::new();
            let mut lines = 0;
            let mut off = 0;
            while off < size {
                let BuiltinOutput::Scan { matched_lines, counts } = scan(path, off, chunk, &re).unwrap() else {
                    unreachable!()
                };
                lines += matched_lines;
                for (k, v) in counts {
                    *total.entry(k).or_default() += v;
                }
                off += chunk;
            }
            assert_eq!(lines, 1000, "chunk {chunk}");
            assert_eq!(total, expected, "chunk {chunk}");
        }
    }
}
