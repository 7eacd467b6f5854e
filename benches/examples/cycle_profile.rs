//! The core's request cycle in a plain loop, for profilers (`valgrind --tool=callgrind`).
//!
//!     cargo build --release -p enos-benches --example cycle_profile
//!     valgrind --tool=callgrind target/release/examples/cycle_profile 200000

use bytes::BytesMut;
use enos_benches::{connected_client, TypicalPoints};
use enos_proto::codec::{self, Packet, PubAck, QoS, SubAck, SubscribeReasonCode};
use enos_proto::ops::MeasurepointPost;
use enos_proto::{Event, Now, Output, RequestOptions};

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let mut client = connected_client();
    let now = Now::system();
    let topic = "/sys/pk1234ab/dev_001/thing/measurepoint/post_reply";
    client.request(now, MeasurepointPost::new(TypicalPoints::new()), RequestOptions::default()).unwrap();
    let mut cloud = BytesMut::new();
    codec::encode_packet(
        &mut cloud,
        &Packet::SubAck(SubAck::new(1, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)])),
    )
    .unwrap();
    codec::encode_packet(&mut cloud, &Packet::PubAck(PubAck::new(2))).unwrap();
    codec::encode_publish(&mut cloud, topic, br#"{"id":"1","code":200,"data":{}}"#, QoS::AtMostOnce, 0, false).unwrap();
    client.handle_input(now, &cloud.split());
    enos_benches::drain(&mut client);
    let answers: Vec<bytes::Bytes> = (0..n)
        .map(|k| {
            let mut b = BytesMut::new();
            codec::encode_packet(&mut b, &Packet::PubAck(PubAck::new(((k + 2) % 65_535 + 1) as u16))).unwrap();
            let body = format!(r#"{{"id":"{}","code":200,"data":{{}}}}"#, k + 2);
            codec::encode_publish(&mut b, topic, body.as_bytes(), QoS::AtMostOnce, 0, false).unwrap();
            b.freeze()
        })
        .collect();
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
