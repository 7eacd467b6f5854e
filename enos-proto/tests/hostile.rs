//! Hostile input, one case per test: each ends in a typed error or the documented policy,
//! never a panic, a wedge or a lost request.

mod support;

use std::time::Duration;

use bytes::BytesMut;
use enos_proto::codec::{self, Packet, QoS};
use enos_proto::ops::{MeasurepointPost, TagQuery};
use enos_proto::{
    ClientError, DecodeError, DisconnectCause, Event, Operation, PacketKind, ProtocolError, RequestError,
    RequestOptions, SubmitError,
};
use serde_json::json;
use support::*;

const POST: &str = "/sys/pk1234ab/dev_001/thing/measurepoint/post";

fn post() -> MeasurepointPost<serde_json::Value> {
    MeasurepointPost::new(json!({"temp": 1.0}))
}

fn disconnected_by(p: &Pair) -> Vec<DisconnectCause> {
    p.events
        .iter()
        .filter_map(|e| if let Event::Disconnected { cause, .. } = e { Some(cause.clone()) } else { None })
        .collect()
}

#[test]
fn oversized_packet_length_ends_the_session_with_packet_too_large() {
    let mut p = Pair::connected(config());
    // PUBLISH announcing 2 MiB: refused from the header alone, before any body arrives.
    p.cloud.outbox.extend_from_slice(&[0x30, 0x80, 0x80, 0x80, 0x01]);
    p.drive();
    assert_eq!(
        disconnected_by(&p),
        [DisconnectCause::Decode(DecodeError::PacketTooLarge { size: 2_097_152, max: 1_048_576 })]
    );
}

#[test]
fn truncated_packet_then_eof_loses_no_request() {
    let mut p = Pair::connected(config());
    p.cloud.replies = Replies::Hold;
    let id = p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    p.drive();
    let held = p.cloud.held.remove(0);
    // The cloud's answer, taken as bytes to hand over piecemeal.
    p.cloud.answer(&held, "{}");
    let reply = p.cloud.outbox.split();
    // Half the reply, then the peer is gone.
    p.client.handle_input(p.now, &reply[..reply.len() / 2]);
    p.cut();
    assert!(p.responses(id).is_empty(), "not completed by half a packet");
    p.advance(Duration::from_secs(30));
    assert_eq!(p.response(id), Err(RequestError::TimedOut(Duration::from_secs(30))));
}

#[test]
fn invalid_utf8_topic_is_a_decode_error() {
    let mut p = Pair::connected(config());
    p.cloud.outbox.extend_from_slice(&[0x30, 0x05, 0x00, 0x02, 0xff, 0xfe, b'x']);
    p.drive();
    assert_eq!(disconnected_by(&p), [DisconnectCause::Decode(DecodeError::InvalidUtf8)]);
}

#[test]
fn a_connect_sent_to_the_client_is_a_protocol_error() {
    let mut p = Pair::connected(config());
    p.cloud.send(Packet::Connect(codec::Connect::new("evil")));
    p.drive();
    assert_eq!(disconnected_by(&p), [DisconnectCause::Protocol(ProtocolError::UnexpectedPacket(PacketKind::Connect))]);
}

#[test]
fn a_second_connack_is_a_protocol_error() {
    let mut p = Pair::connected(config());
    p.cloud.send(Packet::ConnAck(codec::ConnAck::new(codec::ConnectReturnCode::Success, false)));
    p.drive();
    assert_eq!(disconnected_by(&p), [DisconnectCause::Protocol(ProtocolError::UnexpectedPacket(PacketKind::ConnAck))]);
    // And the client comes back by itself.
    p.advance(Duration::from_secs(3));
    assert!(p.client.is_connected());
}

#[test]
fn a_qos2_publish_is_a_protocol_error() {
    let mut p = Pair::connected(config());
    p.cloud.outbox.extend_from_slice(&[0x34, 0x05, 0x00, 0x01, b't', 0x00, 0x01]);
    p.drive();
    assert_eq!(disconnected_by(&p), [DisconnectCause::Protocol(ProtocolError::QoS2Publish)]);
}

#[test]
fn puback_for_an_unknown_packet_id_is_reported_and_ignored() {
    let mut p = Pair::connected(config());
    p.cloud.send(Packet::PubAck(codec::PubAck::new(4242)));
    p.drive();
    assert!(p.client.is_connected());
    assert_eq!(p.count_events(|e| matches!(e, Event::Error(ClientError::UnknownPacketId(4242)))), 1);
}

#[test]
fn a_reply_with_an_unknown_id_is_reported_and_dropped() {
    let mut p = Pair::connected(config());
    p.cloud.replies = Replies::Hold;
    let id = p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    p.drive();
    p.cloud.reply(POST, "999", 200, "{}");
    p.drive();
    assert!(p.responses(id).is_empty());
    assert!(p.events.iter().any(|e| matches!(e, Event::Error(ClientError::UnmatchedReply { id, .. }) if id == "999")));
}

#[test]
fn a_reply_that_is_not_json_is_reported_and_the_request_times_out() {
    let mut p = Pair::connected(config());
    p.cloud.replies = Replies::Hold;
    let id = p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    p.drive();
    p.cloud.publish(&format!("{POST}_reply"), b"\x00\x01 not json", QoS::AtMostOnce);
    p.drive();
    assert!(p.events.iter().any(|e| matches!(e, Event::Error(ClientError::BadReply { .. }))));
    p.advance(Duration::from_secs(30));
    assert_eq!(p.response(id), Err(RequestError::TimedOut(Duration::from_secs(30))));
}

#[test]
fn json_of_the_wrong_shape_is_a_typed_error() {
    let mut p = Pair::connected(config());
    p.cloud.replies = Replies::Hold;
    let id = p.client.request(p.now, TagQuery::new(["a"]), RequestOptions::default()).unwrap();
    let other = p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    p.drive();
    let tag_topic = "/sys/pk1234ab/dev_001/thing/tag/query";
    let held: Vec<_> = std::mem::take(&mut p.cloud.held);
    let tag_req = held.iter().find(|h| h.topic == tag_topic).unwrap();
    // Tag values must be strings: an array is the wrong shape for the typed data.
    p.cloud.reply(tag_topic, &envelope_id(tag_req), 200, "[1,2,3]");
    // An envelope without a code is not a reply.
    p.cloud.publish(&format!("{POST}_reply"), br#"{"id":"2","data":{}}"#, QoS::AtMostOnce);
    p.drive();
    let Ok(reply) = p.response(id) else { panic!() };
    assert!(matches!(TagQuery::parse_reply(&reply), Err(RequestError::BadReply(_))));
    assert!(p.responses(other).is_empty());
    assert!(p
        .events
        .iter()
        .any(|e| matches!(e, Event::Error(ClientError::BadReply { reason, .. }) if reason.contains("no code"))));
}

#[test]
fn a_command_for_another_device_is_only_a_message() {
    let mut p = Pair::connected(config());
    p.cloud.publish("/sys/otherPK/other_dev/thing/service/reset", br#"{"id":"1","params":{}}"#, QoS::AtLeastOnce);
    p.drive();
    assert_eq!(p.count_events(|e| matches!(e, Event::Command(_))), 0);
    assert_eq!(p.count_events(|e| matches!(e, Event::Message { .. })), 1);
    assert!(p.cloud.publishes().iter().all(|x| !x.topic.contains("other_dev")), "no reply for someone else");
}

#[test]
fn a_flood_of_commands_in_one_read_is_bounded_answered_1102_past_the_queue_and_the_rest_handed_over_in_order() {
    // The core hands out at most `max_running_commands` unanswered commands, holds
    // `max_queued_commands` more, and answers the rest 1102 at once: memory stays bounded
    // whatever the cloud sends, and every command gets exactly one answer.
    let mut p = Pair::connected(config());
    let (running, queued) = (p.client.config().max_running_commands, p.client.config().max_queued_commands);
    let mut flood = BytesMut::new();
    for i in 0..10_000 {
        let body = format!(r#"{{"id":"{i}","version":"1.0","params":{{}},"method":"thing.service.go"}}"#);
        codec::encode_publish(
            &mut flood,
            "/sys/pk1234ab/dev_001/thing/service/go",
            body.as_bytes(),
            QoS::AtLeastOnce,
            (i % 60_000 + 1) as u16,
            false,
        )
        .unwrap();
    }
    p.client.handle_input(p.now, &flood);
    p.drive();
    let commands = |p: &Pair| -> Vec<enos_proto::Command> {
        p.events.iter().filter_map(|e| if let Event::Command(c) = e { Some((**c).clone()) } else { None }).collect()
    };
    let handed = commands(&p);
    assert_eq!(
        handed.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
        (0..running).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(p.cloud.count(|x| matches!(x, Packet::PubAck(_))), 10_000, "each QoS 1 command acknowledged");
    let full: Vec<String> = p
        .cloud
        .publishes()
        .iter()
        .filter(|x| x.topic.ends_with("_reply"))
        .map(|x| String::from_utf8_lossy(&x.payload).into_owned())
        .collect();
    assert_eq!(full.len(), 10_000 - running - queued);
    assert!(full.iter().all(|r| r.contains("\"code\":1102") && r.contains("command queue full")), "{}", full[0]);
    assert_eq!(full.first().map(|r| r.contains(&format!("\"id\":\"{}\"", running + queued))), Some(true));
    assert_eq!(p.count_events(|e| matches!(e, Event::Error(ClientError::CommandQueueFull { .. }))), full.len());
    // Each answer hands out the oldest held command, in order.
    p.events.clear();
    for c in &handed {
        p.client.reply(p.now, c.reply_to.ok_empty()).unwrap();
    }
    p.drive();
    let next = commands(&p);
    let ids: Vec<String> = next.iter().map(|c| c.id.clone()).collect();
    let oldest: Vec<String> = (running..2 * running).map(|i| i.to_string()).collect();
    assert_eq!(ids, oldest);
    // A dismissal (a raw command nobody handles) makes room too.
    p.events.clear();
    p.client.dismiss(p.now, &next[0].reply_to);
    p.drive();
    assert_eq!(commands(&p).iter().map(|c| c.id.clone()).collect::<Vec<_>>(), [(2 * running).to_string()]);
    // A second answer to the same command is refused and hands out nothing more.
    p.events.clear();
    let replies_before = p.cloud.publishes().len();
    p.client.reply(p.now, next[1].reply_to.ok_empty()).unwrap();
    assert_eq!(p.client.reply(p.now, next[1].reply_to.ok_empty()), Err(SubmitError::AlreadyAnswered));
    p.drive();
    assert_eq!(commands(&p).len(), 1);
    assert_eq!(p.cloud.publishes().len(), replies_before + 1, "one answer on the wire");
}

#[test]
fn a_command_its_handler_never_answers_is_answered_1102_at_its_deadline() {
    let commands = |p: &Pair| -> Vec<enos_proto::Command> {
        p.events.iter().filter_map(|e| if let Event::Command(c) = e { Some((**c).clone()) } else { None }).collect()
    };
    let mut c = config();
    c.max_running_commands = 1;
    let mut p = Pair::connected(c);
    let topic = "/sys/pk1234ab/dev_001/thing/service/restart";
    for id in ["1", "2"] {
        let body = format!(r#"{{"id":"{id}","version":"1.0","method":"thing.service.restart","params":{{}}}}"#);
        p.cloud.publish(topic, body.as_bytes(), QoS::AtMostOnce);
    }
    p.drive();
    let first = commands(&p);
    assert_eq!(first.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["1"], "the second waits for a place");
    p.events.clear();
    p.advance(Duration::from_secs(59));
    assert!(commands(&p).is_empty());
    p.advance(Duration::from_secs(1));
    // At 60 s: 1102 for the first, its place to the second.
    let replies = pubs_to(&p.cloud, &format!("{topic}_reply"));
    assert_eq!(replies.len(), 1);
    let r: serde_json::Value = serde_json::from_slice(&replies[0].payload).unwrap();
    assert_eq!((r["id"].as_str(), r["code"].as_i64()), (Some("1"), Some(1102)));
    assert!(r["message"].as_str().unwrap().contains("no answer within 60 s"), "{r}");
    assert!(p.events.contains(&Event::Error(ClientError::CommandTimedOut {
        topic: topic.into(),
        timeout: Duration::from_secs(60)
    })));
    assert_eq!(commands(&p).iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["2"]);
    // The handler's late answer is refused; nothing more goes out.
    assert_eq!(p.client.reply(p.now, first[0].reply_to.ok_empty()), Err(SubmitError::AlreadyAnswered));
    p.drive();
    assert_eq!(pubs_to(&p.cloud, &format!("{topic}_reply")).len(), 1);
}

#[test]
fn a_peer_that_never_answers_is_given_up_on_time() {
    let mut p = Pair::new(config());
    p.cloud.silent = true;
    let id = p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    p.drive();
    // No CONNACK ever: the connect timeout ends the attempt at 30 s, and the request,
    // queued, ends at its own 30 s timeout.
    p.advance(Duration::from_secs(30));
    assert!(disconnected_by(&p).iter().any(|c| matches!(c, DisconnectCause::ConnectTimeout(_))));
    assert_eq!(p.response(id), Err(RequestError::TimedOut(Duration::from_secs(30))));
}

#[test]
fn a_peer_that_trickles_one_byte_per_second_cannot_hold_a_request() {
    let mut p = Pair::connected(config());
    p.cloud.replies = Replies::Hold;
    let id = p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    p.drive();
    let held = p.cloud.held.remove(0);
    p.cloud.answer(&held, &format!(r#"{{"pad":"{}"}}"#, "x".repeat(100)));
    let reply = p.cloud.outbox.split();
    for b in reply.iter().take(40) {
        p.client.handle_input(p.now, std::slice::from_ref(b));
        p.advance(Duration::from_secs(1));
    }
    // Bytes keep coming, but the request's deadline does not move.
    assert_eq!(p.response(id), Err(RequestError::TimedOut(Duration::from_secs(30))));
}
