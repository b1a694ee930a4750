//! A set of task ids in bounded memory, exact: duplicate-id checks and resume over ten
//! million tasks must fit the supervisor's 64 MiB with everything else, and ten million ids
//! take 80 MB as bare 64-bit hashes.
//!
//! Ids are kept as 64-bit stable hashes. The newest sit in an in-memory hash set; when it
//! fills, they are sorted and appended to an unnamed temporary file as one run, and added to
//! a split-block Bloom filter (16 bits an id, about 0.06% false positives), rebuilt larger
//! from the runs as the set grows. A lookup that the Bloom filter cannot rule out reads, for
//! each run, the one 2 KiB stretch a sparse in-memory index points to. So a lookup costs one
//! cache miss nearly always, and memory stays around 2 bytes an id.
//!
//! Two distinct ids collide with odds of about n²/2^65 (3 in a million for ten million
//! tasks), in which case the second is taken for a duplicate.

use std::collections::HashSet;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::os::unix::fs::FileExt;

use shared::hash::{mix64, stable_hash};

/// A hasher for keys that already are good 64-bit hashes.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Ids held in memory before they are spilled.
const HOT_MAX: usize = 1 << 18;
/// Keys between two entries of a run's in-memory index.
const FENCE: usize = 256;
/// Bloom filter bits per id.
const BITS_PER_ID: u64 = 16;

/// A set of task ids. See the module documentation.
#[derive(Debug, Default)]
pub struct IdSet {
    hot: HashSet<u64, BuildHasherDefault<IdHasher>>,
    cold: Option<Cold>,
}

#[derive(Debug)]
struct Cold {
    file: File,
    end: u64,
    runs: Vec<Run>,
    bloom: Bloom,
    count: u64,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Run {
    offset: u64,
    count: u64,
    /// Every FENCE-th key, so a lookup reads one stretch of the run.
    fences: Vec<u64>,
}

impl Clone for IdSet {
    /// Clones the ids in memory; a spilled set is re-read from its file.
    fn clone(&self) -> Self {
        let mut copy = IdSet::default();
        self.for_each_hash(|h| {
            copy.insert_hash(h);
        });
        copy
    }
}

impl IdSet {
    /// Adds `id`; false if it was there.
    pub fn insert(&mut self, id: &str) -> bool {
        self.insert_hash(stable_hash(id.as_bytes()))
    }

    /// Whether `id` is there.
    pub fn contains(&self, id: &str) -> bool {
        self.contains_hash(stable_hash(id.as_bytes()))
    }

    /// Adds a hash; false if it was there.
    pub fn insert_hash(&mut self, h: u64) -> bool {
        if self.contains_hash(h) {
            return false;
        }
        self.hot.insert(h);
        if self.hot.len() >= HOT_MAX
            && let Err(e) = self.spill()
        {
            // Without a temporary file the set stays exact in memory; only its bound is lost.
            log::warn!("cannot spill task ids to a temporary file ({e}); keeping them in memory");
        }
        true
    }

    /// Whether a hash is there.
    pub fn contains_hash(&self, h: u64) -> bool {
        self.hot.contains(&h) || self.cold.as_ref().is_some_and(|c| c.bloom.maybe(h) && c.on_disk(h))
    }

    /// Ids held.
    pub fn len(&self) -> usize {
        self.hot.len() + self.cold.as_ref().map_or(0, |c| c.count as usize)
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with every hash held.
    fn for_each_hash(&self, mut f: impl FnMut(u64)) {
        for &h in &self.hot {
            f(h);
        }
        if let Some(c) = &self.cold {
            c.for_each(&mut f);
        }
    }

    fn spill(&mut self) -> io::Result<()> {
        if self.cold.is_none() {
            self.cold = Some(Cold::new()?);
        }
        let cold = self.cold.as_mut().expect("just made");
        let mut keys: Vec<u64> = self.hot.iter().copied().collect();
        keys.sort_unstable();
        cold.append(&keys)?;
        self.hot.clear();
        Ok(())
    }
}

impl Cold {
    fn new() -> io::Result<Self> {
        Ok(Self {
            file: tempfile::tempfile()?,
            end: 0,
            runs: Vec::new(),
            bloom: Bloom::with_capacity(0),
            count: 0,
            buf: Vec::new(),
        })
    }

    fn append(&mut self, keys: &[u64]) -> io::Result<()> {
        self.buf.clear();
        for k in keys {
            self.buf.extend_from_slice(&k.to_le_bytes());
        }
        self.file.write_all_at(&self.buf, self.end)?;
        self.runs.push(Run {
            offset: self.end,
            count: keys.len() as u64,
            fences: keys.iter().step_by(FENCE).copied().collect(),
        });
        self.end += self.buf.len() as u64;
        self.count += keys.len() as u64;
        if self.count > self.bloom.capacity {
            // Rebuild half again as large from everything spilled so far; the old filter goes
            // first, or both would be in memory at once.
            self.bloom = Bloom::with_capacity(0);
            let mut bloom = Bloom::with_capacity(self.count * 3 / 2);
            self.for_each(&mut |h| bloom.insert(h));
            self.bloom = bloom;
        } else {
            for &k in keys {
                self.bloom.insert(k);
            }
        }
        Ok(())
    }

    fn on_disk(&self, h: u64) -> bool {
        let mut stretch = vec![0u8; FENCE * 8];
        self.runs.iter().any(|run| {
            // The stretch that would hold h starts at the last fence at or below it.
            let i = run.fences.partition_point(|&f| f <= h);
            if i == 0 {
                return false;
            }
            let first = (i - 1) * FENCE;
            let n = (run.count as usize - first).min(FENCE);
            let bytes = &mut stretch[..n * 8];
            if self.file.read_exact_at(bytes, run.offset + first as u64 * 8).is_err() {
                return false;
            }
            bytes.chunks_exact(8).any(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")) == h)
        })
    }

    fn for_each(&self, f: &mut dyn FnMut(u64)) {
        let mut buf = vec![0u8; 64 << 10];
        for run in &self.runs {
            let mut done = 0u64;
            while done < run.count {
                let n = ((run.count - done) as usize).min(buf.len() / 8);
                if self.file.read_exact_at(&mut buf[..n * 8], run.offset + done * 8).is_err() {
                    return;
                }
                for c in buf[..n * 8].chunks_exact(8) {
                    f(u64::from_le_bytes(c.try_into().expect("8 bytes")));
                }
                done += n as u64;
            }
        }
    }
}

/// A split-block Bloom filter: each id sets one bit in each of the 8 words of one 64-byte
/// block, so a lookup touches one cache line.
#[derive(Debug)]
struct Bloom {
    blocks: Vec<[u64; 8]>,
    capacity: u64,
}

impl Bloom {
    fn with_capacity(ids: u64) -> Self {
        let ids = ids.max(HOT_MAX as u64 * 2);
        let blocks = (ids * BITS_PER_ID).div_ceil(512) as usize;
        Self { blocks: vec![[0; 8]; blocks], capacity: ids }
    }

    fn place(&self, h: u64) -> (usize, u64) {
        let block = ((u128::from(h >> 32) * self.blocks.len() as u128) >> 32) as usize;
        (block, mix64(h))
    }

    fn insert(&mut self, h: u64) {
        let (b, bits) = self.place(h);
        for (w, word) in self.blocks[b].iter_mut().enumerate() {
            *word |= 1 << ((bits >> (w * 6)) & 63);
        }
    }

    fn maybe(&self, h: u64) -> bool {
        let (b, bits) = self.place(h);
        self.blocks[b].iter().enumerate().all(|(w, word)| word & (1 << ((bits >> (w * 6)) & 63)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spilled_set_stays_exact() {
        let mut s = IdSet::default();
        let n = HOT_MAX * 3 + 1234;
        for i in 0..n {
            assert!(s.insert(&format!("t{i}")), "t{i} is new");
        }
        assert!(s.cold.as_ref().is_some_and(|c| c.runs.len() == 3));
        assert_eq!(s.len(), n);
        for i in (0..n).step_by(997) {
            assert!(s.contains(&format!("t{i}")));
            assert!(!s.insert(&format!("t{i}")), "t{i} is a duplicate");
        }
        let mut false_positives = 0;
        for i in 0..20_000 {
            let id = format!("other{i}");
            assert!(!s.contains(&id));
            if s.cold.as_ref().unwrap().bloom.maybe(stable_hash(id.as_bytes())) {
                false_positives += 1;
            }
        }
        assert!(false_positives < 60, "{false_positives} of 20000 reached the disk");
        assert_eq!(s.clone().len(), n);
    }
}

/// Id hashes collected to answer one question at the end, "does any repeat?", in bounded
/// memory: sorted runs of up to 512k hashes (4 MiB), spilled to an unnamed temporary file,
/// merged once. Cheaper than an [`IdSet`] when membership is not needed along the way (a
/// whole-file check), and sequential where a set is random access.
#[derive(Debug, Default)]
pub struct HashRuns {
    buf: Vec<u64>,
    file: Option<File>,
    end: u64,
    runs: Vec<(u64, u64)>,
}

/// Hashes per run.
const RUN_LEN: usize = 1 << 19;

impl HashRuns {
    /// Adds an id.
    pub fn push(&mut self, id: &str) {
        self.buf.push(stable_hash(id.as_bytes()));
        if self.buf.len() >= RUN_LEN
            && let Err(e) = self.spill()
        {
            log::warn!("cannot spill task ids to a temporary file ({e}); keeping them in memory");
        }
    }

    fn spill(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            self.file = Some(tempfile::tempfile()?);
        }
        self.buf.sort_unstable();
        let bytes: Vec<u8> = self.buf.iter().flat_map(|h| h.to_le_bytes()).collect();
        self.file.as_ref().expect("just made").write_all_at(&bytes, self.end)?;
        self.runs.push((self.end, self.buf.len() as u64));
        self.end += bytes.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Whether any hash occurs twice across all `sets`.
    pub fn any_repeated(sets: &mut [HashRuns]) -> bool {
        let mut cursors: Vec<RunCursor<'_>> = Vec::new();
        for s in sets.iter_mut() {
            s.buf.sort_unstable();
        }
        for s in sets.iter() {
            if s.buf.windows(2).any(|w| w[0] == w[1]) {
                return true;
            }
            cursors.push(RunCursor::memory(&s.buf));
            if let Some(f) = &s.file {
                cursors.extend(s.runs.iter().map(|&(offset, len)| RunCursor::disk(f, offset, len)));
            }
        }
        // A k-way merge: a repeat shows as the same value twice in a row.
        let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<(u64, usize)>> =
            cursors.iter_mut().enumerate().filter_map(|(i, c)| c.next().map(|v| std::cmp::Reverse((v, i)))).collect();
        let mut last = None;
        while let Some(std::cmp::Reverse((v, i))) = heap.pop() {
            if last == Some(v) {
                return true;
            }
            last = Some(v);
            if let Some(n) = cursors[i].next() {
                heap.push(std::cmp::Reverse((n, i)));
            }
        }
        false
    }
}

/// Reads one sorted run, from memory or in 64 KiB stretches from the file.
struct RunCursor<'a> {
    memory: &'a [u64],
    file: Option<&'a File>,
    offset: u64,
    left: u64,
    block: Vec<u64>,
    at: usize,
}

impl<'a> RunCursor<'a> {
    fn memory(v: &'a [u64]) -> Self {
        Self { memory: v, file: None, offset: 0, left: 0, block: Vec::new(), at: 0 }
    }

    fn disk(file: &'a File, offset: u64, len: u64) -> Self {
        Self { memory: &[], file: Some(file), offset, left: len, block: Vec::new(), at: 0 }
    }

    fn next(&mut self) -> Option<u64> {
        if let Some((first, rest)) = self.memory.split_first() {
            self.memory = rest;
            return Some(*first);
        }
        if self.at == self.block.len() {
            let file = self.file?;
            if self.left == 0 {
                return None;
            }
            let n = self.left.min(8192) as usize;
            let mut bytes = vec![0u8; n * 8];
            file.read_exact_at(&mut bytes, self.offset).ok()?;
            self.offset += bytes.len() as u64;
            self.left -= n as u64;
            self.block = bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
            self.at = 0;
        }
        self.at += 1;
        self.block.get(self.at - 1).copied()
    }
}

#[cfg(test)]
mod run_tests {
    use super::*;

    #[test]
    fn repeats_are_found_within_and_across_spilled_runs() {
        let mut a = HashRuns::default();
        let mut b = HashRuns::default();
        for i in 0..RUN_LEN * 2 + 10 {
            a.push(&format!("a{i}"));
        }
        for i in 0..1000 {
            b.push(&format!("b{i}"));
        }
        assert!(a.file.is_some() && a.runs.len() == 2);
        let mut sets = [a, b];
        assert!(!HashRuns::any_repeated(&mut sets));
        sets[1].push("a5");
        assert!(HashRuns::any_repeated(&mut sets));
        let mut c = HashRuns::default();
        c.push("x");
        c.push("x");
        assert!(HashRuns::any_repeated(&mut [c]));
    }
}
