//! The local cloud answering measure point posts (or, with `batch`, a gateway's batches
//! of 100 sub-device posts, over 10,000 sub-devices or the number given) in a plain loop,
//! for profilers.
//!
//!     cargo build --release -p enos-benches --example sim_profile
//!     valgrind --tool=callgrind target/release/examples/sim_profile 100000
//!     valgrind --tool=callgrind target/release/examples/sim_profile 1000 batch
//!     target/release/examples/sim_profile 3000 batch 100

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let batch = args.next().as_deref() == Some("batch");
    let subs = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let mut f = enos_benches::CloudFixture::new(subs);
    let (conn, topic, payloads): (u64, String, Vec<bytes::Bytes>) = if batch {
        (2, f.batch_topic.clone(), (0..100).map(|i| f.batch(i as u32 + 1, i * 100, 100)).collect())
    } else {
        (1, f.post_topic.clone(), (0..1024).map(|i| f.post(i + 1)).collect())
    };
    let t = std::time::Instant::now();
    let mut ok = 0u64;
    for i in 0..n {
        let h = f.cloud.publish(conn, &topic, &payloads[i % payloads.len()], 1_600_000_000_000);
        ok += h.replies.iter().filter(|r| r.payload.windows(10).any(|w| w == b"\"code\":200")).count() as u64;
    }
    let secs = t.elapsed().as_secs_f64();
    println!("{ok} answered in {secs:.3} s: {:.2} µs each", secs * 1e6 / n as f64);
}
