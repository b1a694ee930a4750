//! Computes the build id: a hash of the sources of the code that runs in a worker (this crate
//! and the protocol crate). `bulkhead` uses a separate `bulkhead-worker` executable only when
//! its build id is its own, so a stale one left by another build is never started.

use std::path::Path;

fn hash_dir(dir: &Path, h: &mut u64) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            hash_dir(&p, h);
        } else if let Ok(bytes) = std::fs::read(&p) {
            for b in p.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default().iter().chain(&bytes) {
                *h = (*h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
}

fn main() {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for dir in ["src", "../shared/src"] {
        hash_dir(Path::new(dir), &mut h);
        println!("cargo:rerun-if-changed={dir}");
    }
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rustc-env=BULKHEAD_BUILD_ID={version}-{h:016x}");
}
