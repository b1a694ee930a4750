//! The stable 64-bit hash behind content ids and shard assignment.
//!
//! It must give the same value on every machine and in every future version, because ids
//! derived from it are written to results files and matched again on `--resume`, and shards
//! are chosen by it on different nodes. So it is spelled out here (FNV-1a, then the
//! splitmix64 finalizer to spread the bits) rather than taken from `std`, whose
//! `DefaultHasher` may change between releases.

/// Hashes bytes to 64 bits, stably across machines and versions.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// The splitmix64 finalizer: a bijection that spreads every input bit over the output.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The id given to a task that has none: 16 hex digits of the stable hash of its content.
pub fn content_id(content: &[u8]) -> String {
    format!("{:016x}", stable_hash(content))
}

/// The shard (0..`shards`) a task id belongs to.
pub fn shard_of(id: &str, shards: u32) -> u32 {
    // Reduce with a multiply-shift instead of a modulo so every shard gets an equal share of
    // the hash space.
    ((u128::from(stable_hash(id.as_bytes())) * u128::from(shards)) >> 64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_pinned() {
        // These values are part of the results-file contract: changing them breaks resume.
        assert_eq!(stable_hash(b""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(content_id(b"t1"), "09aae104e6d9854d");
        assert_eq!(content_id(br#"{"kind":"noop"}"#), content_id(br#"{"kind":"noop"}"#));
        assert_ne!(content_id(b"a"), content_id(b"b"));
    }

    #[test]
    fn shards_are_balanced() {
        let mut counts = [0u32; 4];
        for i in 0..40_000 {
            counts[shard_of(&format!("t{i}"), 4) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }
}
