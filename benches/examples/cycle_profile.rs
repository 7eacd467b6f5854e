//! The core's request cycle in a plain loop, for profilers (`valgrind --tool=callgrind`).
//!
//!     cargo build --release -p enos-benches --example cycle_profile
//!     valgrind --tool=callgrind target/release/examples/cycle_profile 200000

use enos_benches::TypicalPoints;
use enos_proto::ops::MeasurepointPost;
use enos_proto::{Event, Now, Output, RequestOptions};

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let mut client = enos_benches::primed_client();
    let now = Now::system();
    let answers: Vec<bytes::Bytes> = (0..n).map(enos_benches::cycle_answer).collect();
    let t = std::time::Instant::now();
    let mut ok = 0u64;
    for a in &answers {
        client.request(now, MeasurepointPost::new(TypicalPoints::new()), RequestOptions::default()).unwrap();
        while !matches!(client.poll_output(), Output::Wait(_)) {}
        client.handle_input(now, a);
        loop {
            match client.poll_output() {
                Output::Event(Event::Response { result: Ok(_), .. }) => ok += 1,
                Output::Wait(_) => break,
                _ => {}
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!("{ok} cycles in {secs:.3} s: {:.0} cycles/s ({:.0} ns each)", ok as f64 / secs, secs * 1e9 / ok as f64);
}
