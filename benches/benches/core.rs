//! Core benchmarks: codec, signing, the request cycle and command dispatch.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use enos_benches::{connected_client, typical_points, TypicalPoints};
use enos_proto::codec::{self, Decoder, QoS};
use enos_proto::ops::{self, EncodeContext, MeasurepointPost};
use enos_proto::sign::{connect_fields, sign_device, SecureMode, SignMethod};
use enos_proto::{DeviceKeys, Event, Now, Output, RequestOptions, Secret};

use enos_benches::POST_TOPIC as TOPIC;

fn post_payload() -> bytes::Bytes {
    let keys = DeviceKeys::new("pk1234ab", "dev_001").unwrap();
    ops::encode(
        &MeasurepointPost::new(typical_points()),
        &keys,
        1,
        &EncodeContext { unix_ms: 1_600_000_000_000, own: &keys },
    )
    .unwrap()
    .payload
}

/// Compressing and decompressing a typical measure point post and a 100-entry batch, with
/// each codec: the cost a compressing session adds per payload, and what it saves.
fn compression_benches(c: &mut Criterion) {
    use enos_proto::compress::{Compression, Encoder};
    let single = post_payload().to_vec();
    let batch: Vec<u8> = {
        let mut b = b"{\"id\":\"1\",\"version\":\"1.0\",\"params\":[".to_vec();
        for i in 0..100 {
            if i > 0 {
                b.push(b',');
            }
            b.extend_from_slice(
                format!("{{\"time\":{},\"measurepoints\":", 1_600_000_000_000u64 + i * 1000).as_bytes(),
            );
            b.extend_from_slice(&serde_json::to_vec(&typical_points()).unwrap());
            b.push(b'}');
        }
        b.extend_from_slice(b"],\"method\":\"thing.measurepoint.resume.batch\"}");
        b
    };
    for (name, plain) in [("post", &single), ("batch of 100", &batch)] {
        for codec in [Compression::Gzip, Compression::Lz4] {
            let mut e = Encoder::new(codec);
            let mut wire = Vec::new();
            e.compress(plain, &mut wire);
            let mut g = c.benchmark_group(format!(
                "compression {} {name} ({} B to {} B)",
                codec.name(),
                plain.len(),
                wire.len()
            ));
            g.throughput(Throughput::Bytes(plain.len() as u64));
            g.bench_function("compress", |b| {
                b.iter(|| {
                    wire.clear();
                    e.compress(black_box(plain), &mut wire);
                })
            });
            g.bench_function("decompress", |b| b.iter(|| codec.decompress(black_box(&wire), 1 << 20).unwrap()));
            g.finish();
        }
    }
}

fn codec_benches(c: &mut Criterion) {
    let payload = post_payload();
    let n = 1000;
    let mut stream = BytesMut::new();
    for i in 0..n {
        codec::encode_publish(&mut stream, TOPIC, &payload, QoS::AtLeastOnce, (i % 60_000 + 1) as u16, false).unwrap();
    }
    let decode = |d: &mut Decoder| {
        d.feed(&stream);
        let mut count = 0;
        while let Ok(Some(p)) = d.next_packet() {
            black_box(&p);
            count += 1;
        }
        assert_eq!(count, n);
    };
    let mut out = BytesMut::with_capacity(stream.len());
    let encode = |out: &mut BytesMut| {
        out.clear();
        for i in 0..n {
            codec::encode_publish(out, TOPIC, &payload, QoS::AtLeastOnce, (i % 60_000 + 1) as u16, false).unwrap();
        }
        black_box(out.len());
    };
    // The same work measured twice: in packets per second, then in bytes per second.
    for (unit, throughput) in
        [("packets", Throughput::Elements(n as u64)), ("bytes", Throughput::Bytes(stream.len() as u64))]
    {
        let mut g = c.benchmark_group(format!("codec ({unit}/s, {} B per packet)", stream.len() / n));
        g.throughput(throughput);
        let mut d = Decoder::new(1 << 20);
        g.bench_function("decode 1000 measure point PUBLISH", |b| b.iter(|| decode(&mut d)));
        g.bench_function("encode 1000 measure point PUBLISH", |b| b.iter(|| encode(&mut out)));
        g.finish();
    }
}

fn sign_benches(c: &mut Criterion) {
    let keys = DeviceKeys::new("pk1234ab", "dev_001").unwrap();
    let secret = Secret::new("DS0123456789abcdefgh");
    let mut g = c.benchmark_group("sign");
    g.bench_function("connect password sha256", |b| {
        b.iter(|| {
            connect_fields(
                &keys,
                "dev_001",
                SecureMode::DeviceSecret,
                SignMethod::Sha256,
                black_box(1_600_000_000_000),
                &secret,
            )
        })
    });
    let sub = DeviceKeys::new("subPK01", "sub_dev_01").unwrap();
    g.bench_function("sub-device login sign sha256", |b| {
        b.iter(|| sign_device(SignMethod::Sha256, "sub_dev_01", &sub, black_box("1600000000456"), &secret))
    });
    g.finish();
}

/// Build a post, encode it, feed back the PUBACK and the reply, correlate it. The cloud's
/// bytes are prepared outside the measured loop (a ring of replies reused in turn).
fn cycle_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Elements(1));
    g.bench_function("request cycle, typed points", |b| {
        cycle(b, &mut enos_benches::primed_client(), enos_benches::cycle_answer, |c, now| {
            c.request(now, MeasurepointPost::new(TypicalPoints::new()), RequestOptions::default()).unwrap()
        })
    });
    let points = typical_points();
    g.bench_function("request cycle, serde_json::Value points", |b| {
        cycle(b, &mut enos_benches::primed_client(), enos_benches::cycle_answer, |c, now| {
            c.request(now, MeasurepointPost::new(&points), RequestOptions::default()).unwrap()
        })
    });
    g.finish();
}

/// The same request cycle on the HTTP transport: the request written as HTTP/1.1, the
/// response (head and reply body) read back, on a kept-alive connection.
fn http_cycle_bench(c: &mut Criterion) {
    use enos_proto::http::{HttpMode, HttpTarget};
    let keys = DeviceKeys::new("pk1234ab", "dev_001").unwrap();
    let mut config =
        enos_proto::Config::new(keys, enos_proto::Credentials::DeviceSecret("DS0123456789abcdefgh".into()));
    config.http = Some(HttpMode::new(HttpTarget::parse("http://127.0.0.1:8080").unwrap()));
    let now = Now::system();
    let mut client = enos_proto::Client::new(config, now).unwrap();
    // Dial, and log in.
    while !matches!(client.poll_output(), Output::Wait(_)) {}
    client.handle_connected(now);
    while !matches!(client.poll_output(), Output::Wait(_)) {}
    let login = r#"{"code":200,"message":"success","data":{"sessionId":"341a9fa5-2719-4322-a7e1-686555b9e678"}}"#;
    client.handle_input(now, format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{login}", login.len()).as_bytes());
    while !matches!(client.poll_output(), Output::Wait(_)) {}
    assert!(client.is_connected());
    let answer = |n: u64| {
        let body = format!(r#"{{"id":"{}","code":200,"data":{{}}}}"#, n + 1);
        format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
    };
    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Elements(1));
    g.bench_function("request cycle over HTTP, typed points", |b| {
        cycle(b, &mut client, answer, |c, now| {
            c.request(now, MeasurepointPost::new(TypicalPoints::new()), RequestOptions::default()).unwrap()
        })
    });
    g.finish();
}

/// One request, then its answer read, on `client`: `answer(n)` gives the bytes that
/// answer the `n`-th request (built outside the measured routine).
fn cycle<A: AsRef<[u8]>>(
    b: &mut criterion::Bencher<'_>,
    client: &mut enos_proto::Client,
    answer: impl Fn(u64) -> A,
    mut submit: impl FnMut(&mut enos_proto::Client, Now) -> enos_proto::RequestId,
) {
    let now = Now::system();
    let k = std::cell::Cell::new(0u64);
    let next = || {
        let n = k.get();
        k.set(n + 1);
        answer(n)
    };
    // By reference: the answer's buffer is freed outside the measured routine too (a
    // driver reads into a buffer it reuses).
    b.iter_batched_ref(
        next,
        |answer| {
            let id = submit(client, now);
            let mut sent = 0;
            loop {
                match client.poll_output() {
                    Output::Transmit(bytes) => sent += bytes.len(),
                    Output::Wait(_) => break,
                    _ => {}
                }
            }
            black_box(sent);
            client.handle_input(now, answer.as_ref());
            let mut done = None;
            loop {
                match client.poll_output() {
                    Output::Event(Event::Response { id: r, result }) => done = Some((r, result.is_ok())),
                    Output::Wait(_) => break,
                    _ => {}
                }
            }
            assert_eq!(done, Some((id, true)));
        },
        criterion::BatchSize::SmallInput,
    );
}

fn command_bench(c: &mut Criterion) {
    let mut client = connected_client();
    let now = Now::system();
    let mut wire = BytesMut::new();
    let body = br#"{"id":"9001","version":"1.0","params":{"delay":5,"mode":"soft"},"method":"thing.service.restart"}"#;
    let mut g = c.benchmark_group("command");
    g.throughput(Throughput::Elements(1));
    g.bench_function("service invocation parsed and answered", |b| {
        b.iter(|| {
            codec::encode_publish(
                &mut wire,
                "/sys/pk1234ab/dev_001/thing/service/restart",
                body,
                QoS::AtMostOnce,
                0,
                false,
            )
            .unwrap();
            client.handle_input(now, &wire.split());
            loop {
                match client.poll_output() {
                    Output::Event(Event::Command(cmd)) => {
                        let reply = cmd.reply_to.ok(&serde_json::json!({"result": "ok"})).unwrap();
                        client.reply(now, reply).unwrap();
                    }
                    Output::Transmit(b) => {
                        black_box(b);
                    }
                    Output::Wait(_) => break,
                    _ => {}
                }
            }
        })
    });
    g.finish();
}

/// The local cloud's side (no sockets): a device's measure point post answered, and a
/// gateway's batch of 100 sub-devices' posts answered; the cloud checks every point
/// against the model and stores it with a bounded history.
fn sim_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim");
    g.throughput(Throughput::Elements(1));
    let mut f = enos_benches::CloudFixture::new(10_000);
    let posts: Vec<bytes::Bytes> = (0..1024).map(|i| f.post(i + 1)).collect();
    let mut i = 0;
    g.bench_function("measure point post answered", |b| {
        b.iter(|| {
            i = (i + 1) % posts.len();
            let h = f.cloud.publish(1, &f.post_topic, &posts[i], 1_600_000_000_000);
            assert_eq!(h.replies.len(), 1);
            black_box(h)
        })
    });
    let batches: Vec<bytes::Bytes> = (0..100).map(|i| f.batch(i as u32 + 1, i * 100, 100)).collect();
    g.throughput(Throughput::Elements(100));
    g.bench_function("batch of 100 sub-device posts answered", |b| {
        b.iter(|| {
            i = (i + 1) % batches.len();
            let h = f.cloud.publish(2, &f.batch_topic, &batches[i], 1_600_000_000_000);
            assert_eq!(h.replies.len(), 1);
            black_box(h)
        })
    });
    // Floors for the figure above: the same batch's JSON only read, and read into typed
    // entries whose points are `Value`s (what storing them takes), with nothing checked or
    // stored.
    g.bench_function("batch of 100 read, nothing built", |b| {
        b.iter(|| {
            i = (i + 1) % batches.len();
            black_box(serde_json::from_slice::<serde::de::IgnoredAny>(&batches[i]).expect("valid JSON"))
        })
    });
    g.bench_function("batch of 100 read into typed entries", |b| {
        b.iter(|| {
            i = (i + 1) % batches.len();
            black_box(serde_json::from_slice::<BatchRead<'_>>(&batches[i]).expect("a batch"))
        })
    });
    g.finish();
}

/// A batch post read into typed entries, for the floor above.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct BatchRead<'a> {
    id: &'a str,
    #[serde(borrow)]
    params: Vec<EntryRead<'a>>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct EntryRead<'a> {
    #[serde(rename = "productKey")]
    product_key: &'a str,
    #[serde(rename = "deviceKey")]
    device_key: &'a str,
    #[serde(borrow)]
    measurepoints: std::collections::BTreeMap<&'a str, serde_json::Value>,
    time: u64,
}

criterion_group!(
    benches,
    codec_benches,
    compression_benches,
    sign_benches,
    cycle_bench,
    http_cycle_bench,
    command_bench,
    sim_bench
);
criterion_main!(benches);
