//! End-to-end tests: the real `bulkhead` binary, real worker processes, real faults. Every
//! test ends by checking that no worker, zombie or socket file is left behind.

mod batch;
mod cmd_input;
mod common;
mod deaths;
mod demo;
mod edges;
mod faults;
mod input;
mod k8s;
mod library;
mod memory;
mod output;
mod parallel_diff;
mod retry;
mod scan;
mod slurm;
mod supervision;
mod thread_mode;
mod words;
