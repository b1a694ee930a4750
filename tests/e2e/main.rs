//! End-to-end tests: the real `bulkhead` binary, real worker processes, real faults. Every
//! test ends by checking that no worker, zombie or socket file is left behind.

mod batch;
// Not every test module uses every helper of the harness.
#[allow(dead_code)]
mod common;
mod deaths;
mod demo;
mod faults;
mod input;
mod library;
mod scan;
mod slurm;
mod thread_mode;
