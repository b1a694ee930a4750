//! End-to-end tests: the real `bulkhead` binary, real worker processes, real faults. Every
//! test ends by checking that no worker, zombie or socket file is left behind.

mod batch;
mod common;
mod deaths;
mod demo;
mod edges;
mod faults;
mod input;
mod k8s;
mod library;
mod memory;
mod scan;
mod slurm;
mod thread_mode;
mod words;
