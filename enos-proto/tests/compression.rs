//! A compressing session (extensions spec E7) in the core: every payload it sends is
//! compressed with its codec, every payload it receives is decompressed, and one that
//! does not decompress is dropped with a typed error.

mod support;

use std::time::Duration;

use enos_proto::codec::QoS;
use enos_proto::compress::{Compression, CompressionError};
use enos_proto::ops::{MeasurepointPost, RawUp};
use enos_proto::{ClientError, CommandKind, Event, Reply, RequestError, RequestOptions};
use serde_json::json;
use support::*;

const POST: &str = "/sys/pk1234ab/dev_001/thing/measurepoint/post";

fn compressing(c: Compression) -> Pair {
    let mut config = config();
    config.compression = Some(c);
    let mut p = Pair::new(config);
    p.cloud.compression = Some(c);
    p.drive();
    assert!(p.client.is_connected(), "{:?}", p.events);
    p
}

#[test]
fn every_payload_is_compressed_both_ways_with_the_announced_codec() {
    for codec in [Compression::Gzip, Compression::Lz4] {
        let mut p = compressing(codec);
        let Some(enos_proto::codec::Packet::Connect(connect)) = p.cloud.received.first() else { panic!() };
        assert!(connect.client_id.starts_with(&format!("dev_001{{compress={}}}|", codec.name())));

        // A request and its reply.
        let points = json!({"temp": 21.5, "note": "x".repeat(400)});
        let id = p.client.request(p.now, MeasurepointPost::new(points.clone()), RequestOptions::new()).unwrap();
        p.drive();
        assert!(matches!(p.response(id), Ok(Reply::Json(r)) if r.code == 200), "{codec:?}");
        let sent = p.cloud.publishes().into_iter().find(|x| x.topic == POST).unwrap().payload.clone();
        let wire = p.cloud.wire_payloads.last().unwrap().clone();
        assert_eq!(
            codec.decompress(&wire, 1 << 20).unwrap(),
            sent,
            "{codec:?}: the wire carries the compressed request"
        );
        assert!(wire.len() < sent.len(), "{codec:?}: {} of {} bytes", wire.len(), sent.len());

        // Raw bytes up, and the raw reply back.
        let id = p.client.request(p.now, RawUp::new(&b"\x00\x01\x02"[..]), RequestOptions::new()).unwrap();
        p.drive();
        assert!(matches!(p.response(id), Ok(Reply::Raw(b)) if &b[..] == b"\x00\x01\x02"), "{codec:?}");

        // A command, and its reply.
        let body = r#"{"id":"9","version":"1.0","method":"thing.service.reset","params":{"delay":3}}"#;
        p.cloud.publish("/sys/pk1234ab/dev_001/thing/service/reset", body.as_bytes(), QoS::AtLeastOnce);
        p.drive();
        let cmd = p
            .events
            .iter()
            .find_map(|e| if let Event::Command(c) = e { Some((**c).clone()) } else { None })
            .expect("the command was read");
        assert_eq!(cmd.kind, CommandKind::InvokeService { service_id: "reset".into(), params: json!({"delay": 3}) });
        p.client.reply(p.now, cmd.reply_to.ok_empty()).unwrap();
        p.drive();
        let reply = p.cloud.publishes().last().unwrap().payload.clone();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&reply).unwrap(),
            json!({"id":"9","code":200,"data":{}})
        );
    }
}

#[test]
fn a_payload_that_does_not_decompress_is_dropped_with_a_typed_error() {
    let mut p = compressing(Compression::Lz4);
    p.cloud.replies = Replies::Hold;
    let options = RequestOptions::new().timeout(Duration::from_secs(5));
    let id = p.client.request(p.now, MeasurepointPost::new(json!({"temp": 1})), options).unwrap();
    p.drive();
    let held = p.cloud.held.remove(0);
    // The cloud forgets to compress its reply.
    p.cloud.compression = None;
    p.cloud.answer(&held, "{}");
    p.drive();
    let error = p.events.iter().find_map(|e| match e {
        Event::Error(ClientError::BadCompressedPayload { topic, error }) => Some((topic.clone(), error.clone())),
        _ => None,
    });
    let (topic, error) = error.expect("a typed error");
    assert_eq!(topic, format!("{POST}_reply"));
    assert!(matches!(error, CompressionError::Corrupt { codec: "LZ4", .. }), "{error:?}");
    assert!(p.responses(id).is_empty(), "the request waits on");
    p.advance(Duration::from_secs(6));
    assert!(matches!(p.response(id), Err(RequestError::TimedOut(_))));
}
