//! Link flags for the executables only (not the library, not proc macros).
//!
//! Every worker is a fresh start of this executable, so what a start costs in memory is
//! paid once per worker. Packed relative relocations (RELR) shrink the ~300 KB of relocation
//! records the loader reads at each start to a few KB; an idle worker went from 3.5 MB to
//! about 3.2 MB resident. (Linking at a fixed address, `-no-pie`, would save another 250 KB of
//! private pages, but gives up address randomization of the executable; we keep PIE.)
fn main() {
    let linux_gnu = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if linux_gnu {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
