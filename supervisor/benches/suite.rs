//! The benchmark suite (being written).
fn main() {}
