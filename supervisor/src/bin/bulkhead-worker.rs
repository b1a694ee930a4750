//! `bulkhead-worker`: the worker of the built-in task kinds, a small executable so that each
//! worker process costs little memory (an idle one ~2.6 MB resident, against ~3.3 MB for the
//! full `bulkhead`). `bulkhead` starts it when it finds it beside itself with the same build
//! id, and serves as its own worker otherwise. Started by hand, it says so.

fn main() {
    worker::serve_if_worker::<worker::builtin::Builtin>();
    if std::env::args().nth(1).as_deref() == Some("--build-id") {
        println!("{}", worker::BUILD_ID);
        return;
    }
    eprintln!("bulkhead-worker: bulkhead starts this program as a worker; run `bulkhead` instead");
    std::process::exit(shared::exit::BAD_INPUT);
}
