//! The conformance suite on tokio (a multi-threaded runtime).

fn enter<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(f)
}

enos_conformance::suite!(enos_transport_tokio::Tokio, enter);
