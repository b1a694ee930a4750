//! The `bulkhead` binary: serves as a worker when started as one, otherwise runs the command
//! line. Everything else is in the library.

fn main() {
    // First, before anything else: a worker never gets past this line.
    bulkhead::serve_if_worker::<worker::builtin::Builtin>();
    std::process::exit(bulkhead::__private::cli_main());
}
