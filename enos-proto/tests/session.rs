//! The session, against a fake cloud in bytes and simulated time.

mod support;

use std::time::Duration;

use enos_proto::codec::{Packet, QoS};
use enos_proto::ops::{
    MeasurepointPost, RawUp, SubDeviceBatchLogin, SubDeviceLogin, SubDeviceLogout, TagQuery, TopoGet,
};
use enos_proto::{
    ClientError, CloseCause, Config, ConnectRefusal, Credentials, DecodeError, DisconnectCause, Event, ProtocolError,
    Qos, Reply, RequestError, RequestOptions, SubDeviceInfo, SubmitError,
};
use serde_json::json;
use support::*;

const POST: &str = "/sys/pk1234ab/dev_001/thing/measurepoint/post";

fn post() -> MeasurepointPost<serde_json::Value> {
    MeasurepointPost::new(json!({"temp": 21.5}))
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn connect_accepted_reports_connected_once() {
    let p = Pair::connected(config());
    assert_eq!(p.events, vec![Event::Connected { reconnect: false }, Event::Started(Ok(()))]);
    assert!(p.client.is_connected() && !p.client.has_reconnected());
    assert_eq!(p.opens, 1);
}

#[test]
fn every_connack_refusal_is_typed_and_backs_off() {
    use enos_proto::codec::ConnectReturnCode as C;
    for (code, refusal, delay) in [
        (C::RefusedProtocolVersion, ConnectRefusal::UnacceptableProtocolVersion, secs(3)),
        (C::BadClientId, ConnectRefusal::IdentifierRejected, secs(60)),
        (C::ServiceUnavailable, ConnectRefusal::ServerUnavailable, secs(3)),
        (C::BadUserNamePassword, ConnectRefusal::BadUserNameOrPassword, secs(60)),
        (C::NotAuthorized, ConnectRefusal::NotAuthorized, secs(60)),
    ] {
        let mut p = Pair::new(config());
        p.cloud.connack = code;
        p.drive();
        let retry = p.now.instant + delay;
        assert_eq!(
            p.events,
            vec![Event::Disconnected { cause: DisconnectCause::Refused(refusal), retry_at: Some(retry) }],
            "{code:?}"
        );
        assert!(!p.client.is_connected());
        // No dial before the deadline: authentication refusals are not retried in a tight loop.
        p.advance(delay - Duration::from_millis(1));
        assert_eq!(p.opens, 1, "{code:?}");
        p.cloud.connack = C::Success;
        p.advance(Duration::from_millis(1));
        assert_eq!(p.opens, 2, "{code:?}");
        assert!(p.client.is_connected(), "{code:?}");
        // A first success after refusals is not a reconnect of an earlier session.
        assert_eq!(p.events[p.events.len() - 2..], [Event::Connected { reconnect: false }, Event::Started(Ok(()))]);
    }
}

#[test]
fn failed_dials_back_off_doubling_up_to_the_maximum() {
    let mut p = Pair::new(config());
    p.cloud.reachable = false;
    p.drive();
    let mut at = Vec::new();
    for _ in 0..7 {
        if let Some(Event::Disconnected { retry_at: Some(r), .. }) = p.events.last() {
            at.push(*r - p.now.instant);
        }
        let next = p.client.poll_timeout().unwrap();
        p.advance(next - p.now.instant);
    }
    assert_eq!(at, [3, 6, 12, 24, 48, 60, 60].map(secs));
}

#[test]
fn sessions_dropped_at_once_back_off_like_failed_dials_and_a_lasting_one_starts_over() {
    let mut p = Pair::connected(config());
    // Accepted, then dropped at once, again and again: the delay doubles.
    let mut at = Vec::new();
    for _ in 0..7 {
        p.cut();
        let Some(Event::Disconnected { retry_at: Some(r), .. }) = p.events.last().cloned() else { panic!() };
        at.push(r - p.now.instant);
        p.advance(r - p.now.instant);
        assert!(p.client.is_connected());
    }
    assert_eq!(at, [3, 6, 12, 24, 48, 60, 60].map(secs));
    // A session that lasts the longest delay starts the back-off over.
    p.advance(secs(60));
    p.cut();
    let Some(Event::Disconnected { retry_at: Some(r), .. }) = p.events.last().cloned() else { panic!() };
    assert_eq!(r - p.now.instant, secs(3));
}

#[test]
fn full_jitter_spreads_a_fleet_over_the_whole_delay() {
    // A thousand devices cut at the same moment, with the default jitter.
    let mut delays: Vec<Duration> = (0..1000)
        .map(|i| {
            let mut c = Config::new(keys("pk1234ab", &format!("dev_{i}")), Credentials::DeviceSecret("s".into()));
            c.retry_first_connect = true;
            assert_eq!(c.reconnect_jitter_percent, 100);
            let mut p = Pair::connected(c);
            p.cut();
            let Some(Event::Disconnected { retry_at: Some(r), .. }) = p.events.last().cloned() else { panic!() };
            r - p.now.instant
        })
        .collect();
    delays.sort();
    assert!(delays.iter().all(|d| *d <= secs(3)));
    // Each tenth of the delay holds about a tenth of the fleet.
    for tenth in 0..10u32 {
        let (lo, hi) = (secs(3) * tenth / 10, secs(3) * (tenth + 1) / 10);
        let n = delays.iter().filter(|d| **d >= lo && **d < hi).count();
        assert!((60..=140).contains(&n), "{n} devices between {lo:?} and {hi:?}");
    }
}

#[test]
fn a_subscribe_never_acknowledged_ends_the_session_and_the_request_goes_out_after() {
    let mut p = Pair::connected(config());
    p.cloud.auto_suback = false;
    let id = p.client.request(p.now, TagQuery::new(["a"]), RequestOptions::new().timeout(secs(120))).unwrap();
    p.drive();
    assert!(p.cloud.subscribed().contains(&"/sys/pk1234ab/dev_001/thing/tag/query_reply".to_owned()));
    p.advance(secs(29));
    assert!(p.client.is_connected());
    p.advance(secs(1));
    assert!(p.events.iter().any(|e| matches!(
        e,
        Event::Disconnected { cause: DisconnectCause::SubscribeTimeout(d), .. } if *d == secs(30)
    )));
    // Back with a broker that answers: the request goes out and gets its reply.
    p.cloud.auto_suback = true;
    p.advance(secs(3));
    assert!(p.client.is_connected());
    assert!(matches!(p.response(id), Ok(Reply::Json(_))));
}

#[test]
fn a_qos0_request_is_delivered_once_written_and_lost_with_unwritten_bytes() {
    let mut p = Pair::connected(config());
    let qos0 = || RequestOptions::new().qos(Qos::AtMostOnce).need_reply(false);
    // Handed to the transport, not yet written: not delivered.
    p.hold_writes = true;
    let a = p.client.request(p.now, post(), qos0()).unwrap();
    p.drive();
    assert_eq!(pubs_to(&p.cloud, "/sys/pk1234ab/dev_001/thing/measurepoint/post").len(), 1);
    assert!(p.responses(a).is_empty());
    // The transport reports the write: delivered.
    assert!(p.client.handle_written(p.now, 1));
    p.drive();
    assert_eq!(p.response(a), Ok(Reply::Delivered));
    // Unwritten when the link drops: it is not known to have left, and is not sent again.
    let b = p.client.request(p.now, post(), qos0()).unwrap();
    p.drive();
    p.cut();
    assert_eq!(p.response(b), Err(RequestError::ConnectionLost));
    p.hold_writes = false;
    p.advance(secs(3));
    assert!(p.client.is_connected());
    assert_eq!(pubs_to(&p.cloud, "/sys/pk1234ab/dev_001/thing/measurepoint/post").len(), 2);
    // Reports count from the new transport: the next one is delivered at its own write.
    let c = p.client.request(p.now, post(), qos0()).unwrap();
    p.drive();
    assert_eq!(p.response(c), Ok(Reply::Delivered));
}

#[test]
fn reconnect_disabled_stays_idle_until_asked() {
    let mut c = config();
    c.reconnect_period = Duration::ZERO;
    let mut p = Pair::connected(c);
    p.cut();
    assert!(matches!(p.events.last(), Some(Event::Disconnected { retry_at: None, .. })));
    p.advance(secs(3600));
    assert_eq!(p.opens, 1);
    p.client.connect(p.now);
    p.drive();
    assert!(p.client.is_connected());
    assert_eq!(p.events.last(), Some(&Event::Connected { reconnect: true }));
}

#[test]
fn request_subscribes_its_reply_topic_before_publishing() {
    let mut p = Pair::connected(config());
    let id = p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    p.drive();
    let kinds: Vec<&str> = p
        .cloud
        .received
        .iter()
        .map(|x| match x {
            Packet::Connect(_) => "connect",
            Packet::Subscribe(_) => "subscribe",
            Packet::Publish(_) => "publish",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["connect", "subscribe", "publish"]);
    assert_eq!(p.cloud.subscribed(), [format!("{POST}_reply")]);
    let Some(Packet::Subscribe(s)) = p.cloud.received.get(1) else { panic!() };
    assert_eq!(s.filters[0].qos, QoS::AtLeastOnce);
    assert!(matches!(p.response(id), Ok(Reply::Json(r)) if r.code == 200));
    // A second request on the same topic does not subscribe again.
    p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    p.drive();
    assert_eq!(p.cloud.subscribed().len(), 1);
}

#[test]
fn reply_split_across_reads_is_reassembled() {
    let mut p = Pair::connected(config());
    p.cloud.chunk = 1;
    let ids: Vec<_> = (0..3).map(|_| p.client.request(p.now, post(), RequestOptions::default()).unwrap()).collect();
    p.drive();
    for id in ids {
        assert!(matches!(p.response(id), Ok(Reply::Json(r)) if r.code == 200));
    }
}

#[test]
fn replies_out_of_order_reach_their_requests() {
    let mut p = Pair::connected(config());
    p.cloud.replies = Replies::Hold;
    let a = p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    let b = p.client.request(p.now, TagQuery::new(["floor"]), RequestOptions::default()).unwrap();
    let c = p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    p.drive();
    let held = std::mem::take(&mut p.cloud.held);
    assert_eq!(held.len(), 3);
    let by_id = |n: &str| held.iter().find(|h| envelope_id(h) == n).unwrap();
    // Envelope ids follow submission order: a=1, b=2, c=3. Answer c, b, then a.
    p.cloud.answer(by_id("3"), r#"{"n":"c"}"#);
    p.cloud.answer(by_id("2"), r#"{"floor":"3"}"#);
    p.cloud.answer(by_id("1"), r#"{"n":"a"}"#);
    p.drive();
    let data = |id| match p.response(id) {
        Ok(Reply::Json(r)) => r.data_json().unwrap().to_owned(),
        other => panic!("{other:?}"),
    };
    assert_eq!(data(a), r#"{"n":"a"}"#);
    assert_eq!(data(b), r#"{"floor":"3"}"#);
    assert_eq!(data(c), r#"{"n":"c"}"#);
    // The typed reply of the tag query.
    let Ok(reply) = p.response(b) else { panic!() };
    let tags = <TagQuery as enos_proto::Operation>::parse_reply(&reply).unwrap();
    assert_eq!(tags.get("floor").map(String::as_str), Some("3"));
}

#[test]
fn reply_with_right_id_on_wrong_topic_is_not_taken() {
    let mut p = Pair::connected(config());
    p.cloud.replies = Replies::Hold;
    let a = p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    p.client.request(p.now, TagQuery::new(["x"]), RequestOptions::default()).unwrap();
    p.drive();
    let held = std::mem::take(&mut p.cloud.held);
    let id = envelope_id(&held[0]);
    p.cloud.reply(&held[1].topic, &id, 200, "{}");
    p.drive();
    assert!(p.responses(a).is_empty());
    assert!(p.events.iter().any(|e| matches!(e, Event::Error(ClientError::UnmatchedReply { .. }))));
}

#[test]
fn request_times_out_and_late_reply_is_ignored() {
    let mut p = Pair::connected(config());
    p.cloud.replies = Replies::Hold;
    let id = p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    p.drive();
    p.advance(secs(30) - Duration::from_millis(1));
    assert!(p.responses(id).is_empty());
    p.advance(Duration::from_millis(1));
    assert_eq!(p.response(id), Err(RequestError::TimedOut(secs(30))));
    assert_eq!(p.client.outstanding_requests(), 0);
    let held = p.cloud.held.remove(0);
    p.cloud.answer(&held, "{}");
    p.drive();
    assert_eq!(p.responses(id).len(), 1);
    assert!(p.events.iter().any(|e| matches!(e, Event::Error(ClientError::UnmatchedReply { .. }))));
}

#[test]
fn per_request_timeout_overrides_the_default() {
    let mut p = Pair::connected(config());
    p.cloud.replies = Replies::Hold;
    let long = p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    let short = p.client.request(p.now, post(), RequestOptions::new().timeout(secs(2))).unwrap();
    p.drive();
    p.advance(secs(2));
    assert_eq!(p.response(short), Err(RequestError::TimedOut(secs(2))));
    assert!(p.responses(long).is_empty());
}

#[test]
fn keep_alive_pings_on_time_and_dead_peer_is_detected() {
    let mut p = Pair::connected(config());
    let pings = |p: &Pair| p.cloud.count(|x| matches!(x, Packet::PingReq));
    p.advance(secs(60) - Duration::from_millis(1));
    assert_eq!(pings(&p), 0);
    p.advance(Duration::from_millis(1));
    assert_eq!(pings(&p), 1, "PINGREQ at exactly t0 + keep_alive");
    p.advance(secs(60));
    assert_eq!(pings(&p), 2);
    // Traffic defers the ping: keep-alive counts from the last packet sent.
    p.advance(secs(30));
    p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    p.drive();
    p.advance(secs(59));
    assert_eq!(pings(&p), 2);
    p.advance(secs(1));
    assert_eq!(pings(&p), 3);
    // The peer goes silent: no PINGRESP within the ping timeout ends the session.
    p.cloud.auto_pingresp = false;
    p.advance(secs(60));
    assert_eq!(pings(&p), 4);
    p.advance(secs(30) - Duration::from_millis(1));
    assert!(p.client.is_connected());
    p.advance(Duration::from_millis(1));
    assert!(p
        .events
        .iter()
        .any(|e| matches!(e, Event::Disconnected { cause: DisconnectCause::PingTimeout(d), .. } if *d == secs(30))));
}

#[test]
fn keep_alive_zero_never_pings() {
    let mut c = config();
    c.keep_alive = Duration::ZERO;
    let mut p = Pair::connected(c);
    p.advance(secs(3600));
    assert_eq!(p.cloud.count(|x| matches!(x, Packet::PingReq)), 0);
    let Some(Packet::Connect(connect)) = p.cloud.received.first() else { panic!() };
    assert_eq!(connect.keep_alive, 0);
}

#[test]
fn connect_timeout_when_no_connack() {
    // The cloud accepts the socket but never answers the CONNECT.
    let mut p = Pair::new(config());
    let _ = p.client.poll_output();
    p.client.handle_connected(p.now);
    p.link = true;
    while !matches!(p.client.poll_output(), enos_proto::Output::Wait(_)) {}
    p.advance(secs(30));
    assert!(p
        .events
        .iter()
        .any(|e| matches!(e, Event::Disconnected { cause: DisconnectCause::ConnectTimeout(d), .. } if *d == secs(30))));
}

#[test]
fn qos1_publish_retransmitted_with_dup_after_reconnect() {
    let mut p = Pair::connected(config());
    p.cloud.auto_puback = false;
    p.cloud.replies = Replies::Hold;
    let id = p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    p.drive();
    assert_eq!(p.client.inflight(), 1);
    let first = pubs_to(&p.cloud, POST);
    assert_eq!(first.len(), 1);
    assert!(!first[0].dup);
    p.cut();
    p.cloud.auto_puback = true;
    p.cloud.replies = Replies::Ok;
    p.advance(secs(3));
    assert!(p.client.is_connected());
    assert!(p.client.has_reconnected());
    let sent = pubs_to(&p.cloud, POST);
    assert_eq!(sent.len(), 2);
    assert!(sent[1].dup, "retransmission carries DUP");
    assert_eq!(sent[1].payload, sent[0].payload, "same envelope id and body");
    assert!(matches!(p.response(id), Ok(Reply::Json(_))));
    // The reply topic was subscribed again on the new session before the retransmission.
    assert_eq!(p.cloud.subscribed().iter().filter(|t| t.ends_with("post_reply")).count(), 2);
    assert_eq!(p.events.iter().filter(|e| matches!(e, Event::Connected { reconnect: true })).count(), 1);
}

#[test]
fn requests_queued_offline_are_sent_on_reconnect() {
    let mut p = Pair::connected(config());
    p.cut();
    p.cloud.reachable = false;
    let ids: Vec<_> = (0..5).map(|_| p.client.request(p.now, post(), RequestOptions::default()).unwrap()).collect();
    p.drive();
    assert_eq!(p.client.queued_requests(), 5);
    assert_eq!(pubs_to(&p.cloud, POST).len(), 0);
    p.advance(secs(3));
    assert!(!p.client.is_connected());
    p.cloud.reachable = true;
    p.advance(secs(6));
    assert!(p.client.is_connected());
    assert_eq!(p.client.queued_requests(), 0);
    let sent = pubs_to(&p.cloud, POST);
    assert_eq!(sent.len(), 5);
    let envelope_ids: Vec<String> = sent.iter().map(|x| envelope_id(x)).collect();
    assert_eq!(envelope_ids, ["1", "2", "3", "4", "5"], "in order");
    for id in ids {
        assert!(matches!(p.response(id), Ok(Reply::Json(_))));
    }
}

#[test]
fn queued_requests_time_out_while_offline() {
    let mut p = Pair::connected(config());
    p.cloud.reachable = false;
    p.cut();
    let id = p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    p.advance(secs(30));
    assert_eq!(p.response(id), Err(RequestError::TimedOut(secs(30))));
    assert_eq!(p.client.outstanding_requests(), 0);
    p.cloud.reachable = true;
    p.advance(secs(120));
    assert_eq!(pubs_to(&p.cloud, POST).len(), 0, "an ended request is never sent");
}

#[test]
fn offline_queue_is_bounded() {
    let mut c = config();
    c.max_queued_requests = 3;
    let mut p = Pair::connected(c);
    p.cloud.reachable = false;
    p.cut();
    for _ in 0..3 {
        p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    }
    assert!(matches!(
        p.client.request(p.now, post(), RequestOptions::default()),
        Err(SubmitError::QueueFull { queued: 3, .. })
    ));
    let mut c = config();
    c.max_queued_bytes = 200;
    let mut p = Pair::new(c);
    p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    assert!(matches!(
        p.client.request(p.now, post(), RequestOptions::default()),
        Err(SubmitError::QueueFull { queued: 1, .. })
    ));
}

#[test]
fn outstanding_requests_are_bounded() {
    let mut c = config();
    c.max_outstanding_requests = 2;
    let mut p = Pair::connected(c);
    p.cloud.replies = Replies::Hold;
    p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    assert_eq!(p.client.request(p.now, post(), RequestOptions::default()), Err(SubmitError::TooManyRequests(2)));
}

#[test]
fn inflight_window_is_bounded() {
    let mut c = config();
    c.max_inflight = 2;
    let mut p = Pair::connected(c);
    p.cloud.auto_puback = false;
    p.cloud.replies = Replies::Hold;
    for _ in 0..5 {
        p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    }
    p.drive();
    assert_eq!(pubs_to(&p.cloud, POST).len(), 2);
    assert_eq!(p.client.inflight(), 2);
    assert_eq!(p.client.queued_requests(), 3);
    p.cloud.send(Packet::PubAck(enos_proto::codec::PubAck::new(2)));
    p.drive();
    assert_eq!(pubs_to(&p.cloud, POST).len(), 3);
}

#[test]
fn oversize_payload_is_refused_at_submission() {
    let mut p = Pair::connected(config());
    let big = "x".repeat(600 * 1024);
    let r = p.client.request(p.now, MeasurepointPost::new(json!({"blob": big})), RequestOptions::default());
    assert!(matches!(r, Err(SubmitError::Encode(enos_proto::EncodeError::PayloadTooLarge { max: 524_288, .. }))));
    assert_eq!(p.client.outstanding_requests(), 0);
}

#[test]
fn need_reply_false_ends_on_puback_or_hand_off() {
    let mut p = Pair::connected(config());
    p.cloud.replies = Replies::Hold;
    p.cloud.auto_puback = false;
    let q1 = p.client.request(p.now, post(), RequestOptions::new().need_reply(false)).unwrap();
    p.drive();
    assert!(p.cloud.subscribed().is_empty(), "no reply topic subscription");
    assert!(p.responses(q1).is_empty(), "ends at the PUBACK, not before");
    let Some(Packet::Publish(sent)) = p.cloud.received.last() else { panic!() };
    let pkid = sent.pkid;
    p.cloud.send(Packet::PubAck(enos_proto::codec::PubAck::new(pkid)));
    p.drive();
    assert_eq!(p.response(q1), Ok(Reply::Delivered));
    let q0 = p.client.request(p.now, post(), RequestOptions::new().need_reply(false).qos(Qos::AtMostOnce)).unwrap();
    p.drive();
    assert_eq!(p.response(q0), Ok(Reply::Delivered));
    let last = pubs_to(&p.cloud, POST);
    assert_eq!(last.last().unwrap().qos, QoS::AtMostOnce);
}

#[test]
fn qos0_request_still_gets_its_reply() {
    let mut p = Pair::connected(config());
    let id = p.client.request(p.now, post(), RequestOptions::new().qos(Qos::AtMostOnce)).unwrap();
    p.drive();
    assert_eq!(pubs_to(&p.cloud, POST)[0].qos, QoS::AtMostOnce);
    assert!(matches!(p.response(id), Ok(Reply::Json(_))));
}

#[test]
fn cloud_error_code_is_a_typed_rejection() {
    let mut p = Pair::connected(config());
    p.cloud.replies = Replies::Hold;
    let id = p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    p.drive();
    let held = p.cloud.held.remove(0);
    let payload = format!(r#"{{"id":"{}","code":1204,"message":"Model validate failed"}}"#, envelope_id(&held));
    p.cloud.publish(&format!("{POST}_reply"), payload.as_bytes(), QoS::AtLeastOnce);
    p.drive();
    let Ok(reply) = p.response(id) else { panic!() };
    assert_eq!(
        <MeasurepointPost as enos_proto::Operation>::parse_reply(&reply),
        Err(RequestError::Rejected { code: 1204, message: "Model validate failed".into() })
    );
}

#[test]
fn raw_replies_complete_oldest_first() {
    let mut p = Pair::connected(config());
    p.cloud.replies = Replies::Hold;
    let a = p.client.request(p.now, RawUp::new(&b"\x01"[..]), RequestOptions::default()).unwrap();
    let b = p.client.request(p.now, RawUp::new(&b"\x02"[..]), RequestOptions::default()).unwrap();
    p.drive();
    let topic = "/sys/pk1234ab/dev_001/thing/model/up_raw_reply";
    p.cloud.publish(topic, b"first", QoS::AtMostOnce);
    p.cloud.publish(topic, b"second", QoS::AtMostOnce);
    p.drive();
    assert_eq!(p.response(a), Ok(Reply::Raw(bytes::Bytes::from_static(b"first"))));
    assert_eq!(p.response(b), Ok(Reply::Raw(bytes::Bytes::from_static(b"second"))));
}

#[test]
fn a_raw_reply_lost_with_its_connection_never_completes_a_later_request() {
    let mut p = Pair::connected(config());
    p.cloud.replies = Replies::Hold;
    // Acknowledged, then the link is cut before its reply: the reply went with it.
    let a = p.client.request(p.now, RawUp::new(&b"\x01"[..]), RequestOptions::default()).unwrap();
    p.drive();
    assert!(p.responses(a).is_empty());
    p.cut();
    assert_eq!(p.response(a), Err(RequestError::ConnectionLost));
    // Back up: the next raw request gets its own reply, not the older one's place.
    p.advance(secs(3));
    assert!(p.client.is_connected());
    let b = p.client.request(p.now, RawUp::new(&b"\x02"[..]), RequestOptions::default()).unwrap();
    p.drive();
    p.cloud.publish("/sys/pk1234ab/dev_001/thing/model/up_raw_reply", b"for b", QoS::AtMostOnce);
    p.drive();
    assert_eq!(p.response(b), Ok(Reply::Raw(bytes::Bytes::from_static(b"for b"))));
    assert_eq!(p.responses(a).len(), 1);
}

#[test]
fn a_raw_request_cut_before_its_puback_goes_out_again_and_gets_its_reply() {
    let mut p = Pair::connected(config());
    p.cloud.replies = Replies::Hold;
    p.cloud.auto_puback = false;
    let a = p.client.request(p.now, RawUp::new(&b"\x01"[..]), RequestOptions::default()).unwrap();
    p.drive();
    p.cut();
    assert!(p.responses(a).is_empty(), "unacknowledged: it is sent again, not ended");
    p.cloud.auto_puback = true;
    p.advance(secs(3));
    assert!(p.client.is_connected());
    p.cloud.publish("/sys/pk1234ab/dev_001/thing/model/up_raw_reply", b"for a", QoS::AtMostOnce);
    p.drive();
    assert_eq!(p.response(a), Ok(Reply::Raw(bytes::Bytes::from_static(b"for a"))));
}

fn sub(dk: &str) -> SubDeviceInfo {
    SubDeviceInfo::new(keys("subPK01", dk), format!("secret-{dk}"))
}

#[test]
fn gateway_posts_on_behalf_of_a_sub_device() {
    let mut p = Pair::connected(gateway_config());
    let id = p.client.request(p.now, post(), RequestOptions::new().target(keys("subPK01", "sub_dev_01"))).unwrap();
    p.drive();
    let sent = pubs_to(&p.cloud, "/sys/subPK01/sub_dev_01/thing/measurepoint/post");
    assert_eq!(sent.len(), 1);
    assert!(p.cloud.subscribed().contains(&"/sys/subPK01/sub_dev_01/thing/measurepoint/post_reply".to_owned()));
    assert!(matches!(p.response(id), Ok(Reply::Json(_))));
    // Gateway-only operations refuse a target.
    assert_eq!(
        p.client.request(p.now, TopoGet, RequestOptions::new().target(keys("subPK01", "sub_dev_01"))),
        Err(SubmitError::InvalidTarget)
    );
}

#[test]
fn subscriptions_and_sub_device_logins_restored_after_reconnect() {
    let mut c = gateway_config();
    c.subscribe_command_topics = true;
    let mut p = Pair::connected(c);
    p.cloud.replies = Replies::Hold;
    let login = p
        .client
        .request(p.now, SubDeviceBatchLogin::new(vec![sub("a"), sub("b"), sub("c")]), RequestOptions::default())
        .unwrap();
    p.drive();
    let held = p.cloud.held.remove(0);
    // c is refused.
    p.cloud.answer(
        &held,
        r#"{"loginedSubDevices":[{"productKey":"subPK01","deviceKey":"a"},{"productKey":"subPK01","deviceKey":"b"}],"failedSubDevices":[{"productKey":"subPK01","deviceKey":"c"}]}"#,
    );
    p.drive();
    assert!(p.response(login).is_ok());
    let logged: Vec<String> = p.client.logged_in_sub_devices().map(|k| k.device_key().to_owned()).collect();
    assert_eq!(logged, ["a", "b"]);
    // The sub-devices' command topics are subscribed for the plain broker.
    assert!(p.cloud.subscribed().contains(&"/sys/subPK01/a/thing/service/#".to_owned()));
    let subs_before = p.cloud.subscribed().len();
    // A request is unacknowledged when the link drops.
    p.cloud.auto_puback = false;
    let pending = p.client.request(p.now, post(), RequestOptions::new().target(keys("subPK01", "a"))).unwrap();
    p.drive();
    p.cut();
    p.cloud.auto_puback = true;
    p.advance(Duration::from_millis(3000) + Duration::from_millis(500));
    assert!(p.client.is_connected());
    // After the reconnect: command topics again, the reply topics again, then one batch
    // re-login with fresh signatures, and nothing else until it is answered.
    let subs = p.cloud.subscribed();
    assert!(subs[subs_before..].contains(&"/sys/gwPK0001/gw_dev_01/thing/service/#".to_owned()));
    assert!(subs[subs_before..].contains(&"/sys/subPK01/b/thing/service/#".to_owned()));
    assert!(subs[subs_before..].contains(&"/ext/session/gwPK0001/gw_dev_01/combine/login/batch_reply".to_owned()));
    let relogin = p.cloud.held.pop().unwrap();
    assert_eq!(relogin.topic, "/ext/session/gwPK0001/gw_dev_01/combine/login/batch");
    let body = json(&relogin.payload);
    let devices: Vec<&str> =
        body["params"]["subDevices"].as_array().unwrap().iter().map(|d| d["deviceKey"].as_str().unwrap()).collect();
    assert_eq!(devices, ["a", "b"]);
    assert_eq!(body["params"]["clientId"], "gwPK0001");
    // Signed at the reconnect (3 s after the cut), not at the first login.
    assert_eq!(body["params"]["timestamp"], (T0_UNIX_MS + 3000).to_string(), "fresh timestamp");
    let on_behalf = "/sys/subPK01/a/thing/measurepoint/post";
    assert_eq!(pubs_to(&p.cloud, on_behalf).len(), 1, "the post waits for the re-login");
    // b is refused this time: it is no longer logged in, and the application is told.
    p.cloud.answer(&relogin, r#"{"loginedSubDevices":[{"productKey":"subPK01","deviceKey":"a"}],"failedSubDevices":[{"productKey":"subPK01","deviceKey":"b"}]}"#);
    p.drive();
    let logged: Vec<String> = p.client.logged_in_sub_devices().map(|k| k.device_key().to_owned()).collect();
    assert_eq!(logged, ["a"]);
    assert!(p.events.iter().any(
        |e| matches!(e, Event::Error(ClientError::ReloginFailed { devices, .. }) if devices == &[keys("subPK01", "b")])
    ));
    let sent = pubs_to(&p.cloud, on_behalf);
    assert_eq!(sent.len(), 2, "retransmitted after the re-login");
    assert!(sent[1].dup);
    let retry = p.cloud.held.pop().unwrap();
    p.cloud.answer(&retry, "{}");
    p.drive();
    assert!(p.response(pending).is_ok());
    // Logout forgets the sub-device: the next reconnect does not log it in.
    let out = p.client.request(p.now, SubDeviceLogout::new(keys("subPK01", "a")), RequestOptions::default()).unwrap();
    p.drive();
    let held = p.cloud.held.pop().unwrap();
    p.cloud.answer(&held, r#"{"productKey":"subPK01","deviceKey":"a"}"#);
    p.drive();
    assert!(p.response(out).is_ok());
    assert_eq!(p.client.logged_in_sub_devices().count(), 0);
    let before = p.cloud.publishes().len();
    p.cut();
    // The second cut of a session that did not last: the back-off has doubled.
    p.advance(secs(6));
    assert!(p.client.is_connected());
    assert!(p.cloud.publishes()[before..].iter().all(|x| !x.topic.contains("combine/login")));
}

#[test]
fn disabled_sub_device_is_forgotten() {
    let mut p = Pair::connected(gateway_config());
    let id = p.client.request(p.now, SubDeviceLogin::new(sub("a")), RequestOptions::default()).unwrap();
    p.cloud.replies = Replies::Hold;
    p.drive();
    let held = p.cloud.held.remove(0);
    p.cloud.answer(&held, r#"{"productKey":"subPK01","deviceKey":"a","assetId":"x"}"#);
    p.drive();
    assert!(p.response(id).is_ok());
    assert_eq!(p.client.logged_in_sub_devices().count(), 1);
    p.cloud.publish(
        "/ext/session/gwPK0001/gw_dev_01/combine/disable",
        br#"{"id":"5","version":"1.0","method":"combine.disable","params":[{"productKey":"subPK01","deviceKey":"a"}]}"#,
        QoS::AtLeastOnce,
    );
    p.drive();
    assert_eq!(p.client.logged_in_sub_devices().count(), 0);
}

#[test]
fn commands_for_logged_in_sub_devices_reach_the_gateway_and_others_do_not() {
    let mut p = Pair::connected(gateway_config());
    let cmd = br#"{"id":"9","version":"1.0","method":"thing.service.restart","params":{}}"#;
    p.cloud.publish("/sys/subPK01/a/thing/service/restart", cmd, QoS::AtLeastOnce);
    p.drive();
    assert_eq!(p.count_events(|e| matches!(e, Event::Command(_))), 0);
    assert_eq!(
        p.count_events(|e| matches!(e, Event::Message { .. })),
        1,
        "a command for another device is only a message"
    );
    let id = p.client.request(p.now, SubDeviceLogin::new(sub("a")), RequestOptions::default()).unwrap();
    p.cloud.replies = Replies::Hold;
    p.drive();
    let held = p.cloud.held.remove(0);
    p.cloud.answer(&held, r#"{"productKey":"subPK01","deviceKey":"a"}"#);
    p.drive();
    assert!(p.response(id).is_ok());
    p.cloud.publish("/sys/subPK01/a/thing/service/restart", cmd, QoS::AtLeastOnce);
    p.drive();
    assert_eq!(p.count_events(|e| matches!(e, Event::Command(c) if c.device == keys("subPK01", "a"))), 1);
}

#[test]
fn sub_device_dynamic_activation_through_login() {
    let mut p = Pair::connected(gateway_config());
    let info = SubDeviceInfo::with_product_secret(keys("subPK01", "sub_dev_03"), "SubProductSecret9");
    p.cloud.replies = Replies::Hold;
    let id = p.client.request(p.now, SubDeviceLogin::new(info), RequestOptions::default()).unwrap();
    p.drive();
    let held = p.cloud.held.remove(0);
    assert_eq!(json(&held.payload)["params"]["secureMode"], "3");
    p.cloud.answer(&held, r#"{"productKey":"subPK01","deviceKey":"sub_dev_03","deviceSecret":"IssuedSecret"}"#);
    p.drive();
    assert!(p.response(id).is_ok());
    assert!(p.events.iter().any(|e| matches!(e, Event::Activated { device, device_secret, .. }
        if *device == keys("subPK01", "sub_dev_03") && device_secret.expose() == "IssuedSecret")));
    // The re-login after a reconnect uses the issued secret in mode 2.
    p.cut();
    p.advance(secs(4));
    let relogin = p.cloud.held.pop().unwrap();
    let body = json(&relogin.payload);
    let entry = &body["params"]["subDevices"][0];
    assert_eq!(entry["secureMode"], "2");
    let ts = body["params"]["timestamp"].as_str().unwrap();
    let expected = enos_proto::sign::sign_device(
        enos_proto::SignMethod::Sha256,
        "gwPK0001",
        &keys("subPK01", "sub_dev_03"),
        ts,
        &"IssuedSecret".into(),
    );
    assert_eq!(entry["sign"], expected);
}

#[test]
fn dynamic_activation_replies_and_switches_to_mode_2() {
    let mut c = config();
    c.credentials = Credentials::ProductSecret("PSzyxw9876".into());
    let mut p = Pair::connected(c);
    let Some(Packet::Connect(first)) = p.cloud.received.first().cloned() else { panic!() };
    assert!(first.client_id.contains("securemode=3"));
    p.cloud.publish(
        "/ext/session/pk1234ab/dev_001/thing/activate/info",
        br#"{"id":"1","version":"1.0","method":"thing.activate.info","params":{"assetId":"As5et1d0","productKey":"pk1234ab","deviceKey":"dev_001","deviceSecret":"NewDeviceSecret12345"}}"#,
        QoS::AtLeastOnce,
    );
    p.drive();
    let reply = pubs_to(&p.cloud, "/ext/session/pk1234ab/dev_001/thing/activate/info_reply");
    assert_eq!(json(&reply[0].payload), json!({"id":"1","code":200,"data":{}}));
    assert!(p.events.iter().any(|e| matches!(e, Event::Activated { asset_id: Some(a), .. } if a == "As5et1d0")));
    // The session stays usable, and the next CONNECT is mode 2 with the issued secret.
    let id = p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    p.drive();
    assert!(p.response(id).is_ok());
    p.cut();
    p.advance(secs(4));
    second_connect_signs_mode_2_with(&p, "NewDeviceSecret12345");
}

/// The second CONNECT the cloud received is secure mode 2, signed with `secret`.
fn second_connect_signs_mode_2_with(p: &Pair, secret: &str) {
    let connects: Vec<_> =
        p.cloud.received.iter().filter_map(|x| if let Packet::Connect(c) = x { Some(c) } else { None }).collect();
    let second = connects[1];
    assert!(second.client_id.contains("securemode=2"));
    let ts: u64 = second.client_id.split("timestamp=").nth(1).unwrap().trim_end_matches('|').parse().unwrap();
    let f = enos_proto::sign::connect_fields(
        &keys("pk1234ab", "dev_001"),
        "dev_001",
        enos_proto::SecureMode::DeviceSecret,
        enos_proto::SignMethod::Sha256,
        ts,
        &secret.into(),
    );
    assert_eq!(second.login.as_ref().unwrap().password, f.password.expose());
}

#[test]
fn an_activation_push_to_a_device_not_activating_is_ignored_and_not_acknowledged() {
    let mut p = Pair::connected(config());
    p.cloud.publish(ACTIVATE_TOPIC, ACTIVATION, QoS::AtLeastOnce);
    p.drive();
    assert!(pubs_to(&p.cloud, "/ext/session/pk1234ab/dev_001/thing/activate/info_reply").is_empty());
    assert!(p
        .events
        .contains(&Event::Error(ClientError::UnexpectedActivation { device: keys("pk1234ab", "dev_001") })));
    assert!(!p.events.iter().any(|e| matches!(e, Event::Activated { .. })));
    // It keeps its own secret: the next CONNECT signs with it.
    p.cut();
    p.advance(secs(3));
    second_connect_signs_mode_2_with(&p, "DS0123456789abcdefgh");
}

#[test]
fn an_issued_secret_is_stored_before_the_push_is_acknowledged() {
    use std::sync::{Arc, Mutex};
    let reply_topic = "/ext/session/pk1234ab/dev_001/thing/activate/info_reply";
    // A store that fails: no acknowledgement, no switch to the new secret.
    let mut c = config();
    c.credentials = Credentials::ProductSecret("PSzyxw9876".into());
    c.secret_store = Some(enos_proto::SecretStore::new(|_, _| Err("disk full".into())));
    let mut p = Pair::connected(c);
    p.cloud.publish(ACTIVATE_TOPIC, ACTIVATION, QoS::AtLeastOnce);
    p.drive();
    assert!(pubs_to(&p.cloud, reply_topic).is_empty(), "not acknowledged");
    assert!(p.events.contains(&Event::Error(ClientError::ActivationNotStored {
        device: keys("pk1234ab", "dev_001"),
        reason: "disk full".into()
    })));
    assert!(!p.events.iter().any(|e| matches!(e, Event::Activated { .. })));
    // A store that keeps it: called with the device and its secret, then acknowledged.
    let kept: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut c = config();
    c.credentials = Credentials::ProductSecret("PSzyxw9876".into());
    let k = kept.clone();
    c.secret_store = Some(enos_proto::SecretStore::new(move |d, s| {
        k.lock().unwrap().push((d.to_string(), s.expose().to_owned()));
        Ok(())
    }));
    let mut p = Pair::connected(c);
    p.cloud.publish(ACTIVATE_TOPIC, ACTIVATION, QoS::AtLeastOnce);
    p.drive();
    assert_eq!(*kept.lock().unwrap(), [("pk1234ab/dev_001".to_owned(), "NewDeviceSecret12345".to_owned())]);
    assert_eq!(pubs_to(&p.cloud, reply_topic).len(), 1);
    assert!(p.events.iter().any(|e| matches!(e, Event::Activated { .. })));
    // The same push again on this session (its acknowledgement was lost): acknowledged
    // again.
    p.cloud.publish(ACTIVATE_TOPIC, ACTIVATION, QoS::AtLeastOnce);
    p.drive();
    assert_eq!(pubs_to(&p.cloud, reply_topic).len(), 2);
}

#[test]
fn certificate_mode_sends_mode_2_fields_or_user_name_only() {
    let mut c = config();
    c.credentials = Credentials::Certificate { device_secret: Some("DS0123456789abcdefgh".into()) };
    let p = Pair::connected(c);
    let Some(Packet::Connect(connect)) = p.cloud.received.first() else { panic!() };
    assert_eq!(connect.client_id, "dev_001|securemode=2,signmethod=sha256,timestamp=1600000000000|");
    assert_eq!(
        connect.login.as_ref().unwrap().password,
        "37C4A32570961CB4FDBD6871959C3685B6620E500448FAE910FBBC4B6A759527"
    );
    let mut c = config();
    c.credentials = Credentials::Certificate { device_secret: None };
    let p = Pair::connected(c);
    let Some(Packet::Connect(connect)) = p.cloud.received.first() else { panic!() };
    assert_eq!(connect.login.as_ref().unwrap().username, "dev_001&pk1234ab");
    assert_eq!(connect.login.as_ref().unwrap().password, "");
}

#[test]
fn timestamp_is_taken_at_each_connect_attempt() {
    let mut p = Pair::connected(config());
    p.cut();
    p.advance(secs(3));
    let ids: Vec<String> = p
        .cloud
        .received
        .iter()
        .filter_map(|x| if let Packet::Connect(c) = x { Some(c.client_id.clone()) } else { None })
        .collect();
    assert_eq!(ids[0], "dev_001|securemode=2,signmethod=sha256,timestamp=1600000000000|");
    assert_eq!(ids[1], "dev_001|securemode=2,signmethod=sha256,timestamp=1600000003000|");
}

#[test]
fn close_ends_every_request_once_and_refuses_more() {
    let mut p = Pair::connected(config());
    p.cloud.replies = Replies::Hold;
    let ids: Vec<_> = (0..3).map(|_| p.client.request(p.now, post(), RequestOptions::default()).unwrap()).collect();
    p.drive();
    p.client.close(p.now);
    p.drive();
    for id in &ids {
        assert_eq!(p.response(*id), Err(RequestError::Closed));
    }
    assert!(matches!(p.cloud.received.last(), Some(Packet::Disconnect)));
    assert!(matches!(p.events.last(), Some(Event::Disconnected { cause: DisconnectCause::Closed, retry_at: None })));
    assert_eq!(p.client.request(p.now, post(), RequestOptions::default()), Err(SubmitError::Closed));
    p.advance(secs(3600));
    assert_eq!(p.opens, 1, "no reconnect after close");
    p.client.close(p.now);
    p.drive();
    assert_eq!(p.count_events(|e| matches!(e, Event::Disconnected { .. })), 1);
}

#[test]
fn subscribe_refused_ends_waiting_requests() {
    let mut p = Pair::connected(config());
    p.cloud.refuse_subscriptions.push(format!("{POST}_reply"));
    let id = p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    p.drive();
    assert_eq!(p.response(id), Err(RequestError::SubscribeRefused(format!("{POST}_reply"))));
    assert_eq!(pubs_to(&p.cloud, POST).len(), 0);
}

#[test]
fn unexpected_packets_end_the_session_with_a_typed_cause() {
    let mut p = Pair::connected(config());
    p.cloud
        .send(Packet::ConnAck(enos_proto::codec::ConnAck::new(enos_proto::codec::ConnectReturnCode::Success, false)));
    p.drive();
    assert!(p.events.iter().any(|e| matches!(
        e,
        Event::Disconnected {
            cause: DisconnectCause::Protocol(ProtocolError::UnexpectedPacket(enos_proto::PacketKind::ConnAck)),
            ..
        }
    )));
    let mut p = Pair::connected(config());
    p.cloud.outbox.extend_from_slice(&[0x30, 0xff, 0xff, 0xff, 0x7f]);
    p.drive();
    assert!(p.events.iter().any(|e| matches!(
        e,
        Event::Disconnected { cause: DisconnectCause::Decode(DecodeError::PacketTooLarge { max: 1_048_576, .. }), .. }
    )));
}

#[test]
fn puback_for_unknown_packet_id_is_reported_and_ignored() {
    let mut p = Pair::connected(config());
    p.cloud.send(Packet::PubAck(enos_proto::codec::PubAck::new(999)));
    p.drive();
    assert!(p.client.is_connected());
    assert!(p.events.iter().any(|e| matches!(e, Event::Error(ClientError::UnknownPacketId(999)))));
}

#[test]
fn command_subscriptions_for_plain_brokers_and_own_replies_echoed_back_are_dropped() {
    let mut c = config();
    c.subscribe_command_topics = true;
    let mut p = Pair::connected(c);
    let subs = p.cloud.subscribed();
    assert!(subs.contains(&"/sys/pk1234ab/dev_001/thing/service/#".to_owned()));
    assert!(subs.contains(&"/ext/session/pk1234ab/dev_001/thing/activate/info".to_owned()));
    // No filter matches the device's own request topics.
    for s in &subs {
        let prefix = s.trim_end_matches('#');
        assert!(!POST.starts_with(prefix) || s == POST, "{s} would echo requests");
    }
    p.cloud.publish(
        "/sys/pk1234ab/dev_001/thing/service/restart",
        br#"{"id":"3","version":"1.0","method":"thing.service.restart","params":{}}"#,
        QoS::AtLeastOnce,
    );
    p.drive();
    let Some(Event::Command(cmd)) = p.events.iter().rev().find(|e| matches!(e, Event::Command(_))).cloned() else {
        panic!()
    };
    p.client.reply(p.now, cmd.reply_to.ok_empty()).unwrap();
    p.drive();
    // The broker echoes the reply back: it is not a command.
    p.cloud.publish(
        "/sys/pk1234ab/dev_001/thing/service/restart_reply",
        br#"{"id":"3","code":200,"data":{}}"#,
        QoS::AtMostOnce,
    );
    p.drive();
    assert_eq!(p.count_events(|e| matches!(e, Event::Command(_))), 1);
    assert_eq!(p.count_events(|e| matches!(e, Event::Message { .. })), 0, "the echo is not a message either");
}

#[test]
fn command_with_bad_params_is_answered_1102_and_bad_json_dropped() {
    let mut p = Pair::connected(config());
    let topic = "/sys/pk1234ab/dev_001/thing/service/measurepoint/set";
    p.cloud.publish(topic, br#"{"id":"4","version":"1.0","params":[1,2]}"#, QoS::AtLeastOnce);
    p.cloud.publish(topic, b"not json", QoS::AtLeastOnce);
    p.drive();
    let replies = pubs_to(&p.cloud, &format!("{topic}_reply"));
    assert_eq!(replies.len(), 1);
    let body = json(&replies[0].payload);
    assert_eq!(body["code"], 1102);
    assert!(body["message"].as_str().unwrap().starts_with("command handler execution failed, invalid params"));
    assert_eq!(p.count_events(|e| matches!(e, Event::Error(ClientError::BadCommand { .. }))), 2);
    assert_eq!(p.count_events(|e| matches!(e, Event::Command(_))), 0);
}

#[test]
fn reply_that_is_not_json_is_reported_and_request_times_out() {
    let mut p = Pair::connected(config());
    p.cloud.replies = Replies::Hold;
    let id = p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    p.drive();
    p.cloud.publish(&format!("{POST}_reply"), b"<html>", QoS::AtMostOnce);
    p.drive();
    assert!(p.events.iter().any(|e| matches!(e, Event::Error(ClientError::BadReply { .. }))));
    p.advance(secs(30));
    assert_eq!(p.response(id), Err(RequestError::TimedOut(secs(30))));
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let mut c = config();
    c.credentials = Credentials::ProductSecret("TopSecretProduct".into());
    let mut p = Pair::connected(c);
    p.client
        .request(
            p.now,
            SubDeviceLogin::new(SubDeviceInfo::new(keys("subPK01", "a"), "TopSecretSub")),
            RequestOptions::default(),
        )
        .unwrap();
    p.cloud.publish(
        "/ext/session/pk1234ab/dev_001/thing/activate/info",
        br#"{"id":"1","params":{"deviceSecret":"TopSecretIssued"}}"#,
        QoS::AtMostOnce,
    );
    p.drive();
    p.cut();
    let text = format!("{:?} {:?} {:?} {:?}", p.client, p.client.config(), p.events, p.client.credentials());
    for secret in ["TopSecretProduct", "TopSecretSub", "TopSecretIssued"] {
        assert!(!text.contains(secret), "{secret} leaked");
    }
    // Nor the CONNECT password, nor any error's message.
    let Some(Packet::Connect(c)) = p.cloud.received.first() else { panic!() };
    assert!(!text.contains(&c.login.as_ref().unwrap().password));
    let errors =
        [format!("{}", CloseCause::Eof), format!("{}", RequestError::Closed), format!("{:?}", SubmitError::Closed)];
    assert!(errors.iter().all(|e| !e.contains("TopSecret")));
}

#[test]
fn debug_of_a_client_with_unsent_bytes_and_secret_replies_hides_them() {
    // A CONNECT waiting in the output buffer holds the password.
    let mut p = Pair::new(gateway_config());
    let _ = p.client.poll_output();
    p.client.handle_connected(p.now);
    let pw = enos_proto::sign::connect_fields(
        &keys("gwPK0001", "gw_dev_01"),
        "gw_dev_01",
        enos_proto::SecureMode::DeviceSecret,
        enos_proto::SignMethod::Sha256,
        p.now.unix_ms,
        &"GwSecret".into(),
    )
    .password;
    assert!(!format!("{:?}", p.client).contains(pw.expose()));
    let enos_proto::Output::Transmit(bytes) = p.client.poll_output() else { panic!() };
    assert!(bytes.windows(pw.expose().len()).any(|w| w == pw.expose().as_bytes()), "the buffer did hold it");
    // A registration reply carries device secrets; even emit_all_messages does not copy it.
    let mut c = gateway_config();
    c.emit_all_messages = true;
    let mut p = Pair::connected(c);
    p.cloud.replies = Replies::Hold;
    let reg = enos_proto::ops::SubDeviceRegister::new(vec![enos_proto::ops::SubDeviceRegistration::new(
        "subPK01",
        enos_proto::ops::DeviceName::new("m"),
    )]);
    let id = p.client.request(p.now, reg, RequestOptions::default()).unwrap();
    p.drive();
    let held = p.cloud.held.remove(0);
    p.cloud
        .answer(&held, r#"[{"assetId":"a","productKey":"subPK01","deviceKey":"k","deviceSecret":"IssuedRegSecret"}]"#);
    p.drive();
    let Ok(reply) = p.response(id) else { panic!() };
    let devices = <enos_proto::ops::SubDeviceRegister as enos_proto::Operation>::parse_reply(&reply).unwrap();
    assert_eq!(devices[0].device_secret.expose(), "IssuedRegSecret");
    let text = format!("{:?} {:?}", p.events, devices);
    assert!(!text.contains("IssuedRegSecret"), "{text}");
}

#[test]
fn time_running_backwards_is_ignored() {
    let mut p = Pair::connected(config());
    p.advance(secs(10));
    let earlier = enos_proto::Now::new(p.start, T0_UNIX_MS);
    p.client.handle_timeout(earlier);
    p.client.request(earlier, post(), RequestOptions::default()).unwrap();
    p.drive();
    // The keep-alive still fires 60 s after the last packet, on the monotonic clock.
    p.advance(secs(60));
    assert_eq!(p.cloud.count(|x| matches!(x, Packet::PingReq)), 1);
}

#[test]
fn timed_out_requests_stop_counting_against_the_offline_queue() {
    let mut c = config();
    c.max_queued_requests = 4;
    let mut p = Pair::connected(c);
    p.cloud.reachable = false;
    p.cut();
    // Far more requests than the bound pass through the queue over time.
    for _ in 0..10 {
        for _ in 0..4 {
            p.client.request(p.now, post(), RequestOptions::default()).unwrap();
        }
        p.advance(secs(31));
        assert_eq!(p.client.queued_requests(), 0);
    }
    assert_eq!(p.client.outstanding_requests(), 0);
    p.cloud.reachable = true;
    p.advance(secs(120));
    assert!(p.client.is_connected());
    assert_eq!(pubs_to(&p.cloud, POST).len(), 0, "none of the ended requests goes out");
}

#[test]
fn a_link_that_only_sends_is_still_checked_for_a_living_peer() {
    let mut p = Pair::connected(config());
    // The peer is gone silently: nothing comes back any more.
    p.cloud.auto_pingresp = false;
    p.cloud.replies = Replies::Hold;
    // QoS 0 telemetry every 10 s, no reply wanted: the device never stops sending.
    for _ in 0..6 {
        p.client.request(p.now, post(), RequestOptions::new().qos(Qos::AtMostOnce).need_reply(false)).unwrap();
        p.advance(secs(10));
    }
    assert_eq!(p.cloud.count(|x| matches!(x, Packet::PingReq)), 1, "PINGREQ 60 s after the last packet received");
    for _ in 0..3 {
        p.client.request(p.now, post(), RequestOptions::new().qos(Qos::AtMostOnce).need_reply(false)).unwrap();
        p.advance(secs(10));
    }
    assert!(p.events.iter().any(|e| matches!(e, Event::Disconnected { cause: DisconnectCause::PingTimeout(_), .. })));
}

#[test]
fn late_replies_carrying_secrets_never_become_messages() {
    for emit_all in [false, true] {
        let mut c = gateway_config();
        c.emit_all_messages = emit_all;
        let mut p = Pair::connected(c);
        // A register, a login and a tag query that end at their timeout: their replies,
        // when they come, are late.
        p.cloud.replies = Replies::Hold;
        let short = || RequestOptions::new().timeout(secs(1));
        let reg = enos_proto::ops::SubDeviceRegistration::new("subPK01", enos_proto::ops::DeviceName::new("n"));
        let sub = SubDeviceInfo::new(keys("subPK01", "sub_dev_01"), "s");
        let ids = [
            p.client.request(p.now, enos_proto::ops::SubDeviceRegister::new(vec![reg]), short()).unwrap(),
            p.client.request(p.now, SubDeviceLogin::new(sub), short()).unwrap(),
            p.client.request(p.now, TagQuery::new(["a"]), short()).unwrap(),
        ];
        p.drive();
        p.advance(secs(2));
        for id in ids {
            assert!(matches!(p.response(id), Err(RequestError::TimedOut(_))));
        }
        let late: Vec<(String, String)> = p
            .cloud
            .held
            .iter()
            .map(|h| (format!("{}_reply", h.topic), json(&h.payload)["id"].as_str().unwrap().to_owned()))
            .collect();
        assert_eq!(late.len(), 3);
        p.events.clear();
        for (topic, id) in &late {
            let data = if topic.ends_with("register_reply") {
                json!([{"productKey": "subPK01", "deviceKey": "d", "deviceSecret": "LateSecret"}])
            } else if topic.ends_with("login_reply") {
                json!({"productKey": "subPK01", "deviceKey": "sub_dev_01", "deviceSecret": "LateSecret"})
            } else {
                json!({"a": "late tag"})
            };
            let reply = json!({"id": id, "code": 200, "data": data}).to_string();
            p.cloud.publish(topic, reply.as_bytes(), QoS::AtMostOnce);
        }
        p.drive();
        // Each is reported as unmatched; only the one without a secret is a message.
        let unmatched = p.count_events(|e| matches!(e, Event::Error(ClientError::UnmatchedReply { .. })));
        assert_eq!(unmatched, 3, "emit_all {emit_all}: {:?}", p.events);
        let messages: Vec<&str> = p
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Message { topic, .. } => Some(topic.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(messages, ["/sys/gwPK0001/gw_dev_01/thing/tag/query_reply"], "emit_all {emit_all}");
        assert!(!format!("{:?}", p.events).contains("LateSecret"));
    }
}

#[test]
fn relogin_goes_out_even_with_a_full_queue_and_a_timeout_keeps_the_devices() {
    let mut c = gateway_config();
    c.max_queued_requests = 2;
    let mut p = Pair::connected(c);
    let id = p.client.request(p.now, SubDeviceLogin::new(sub("a")), RequestOptions::default()).unwrap();
    p.cloud.replies = Replies::Hold;
    p.drive();
    let held = p.cloud.held.remove(0);
    p.cloud.answer(&held, r#"{"productKey":"subPK01","deviceKey":"a"}"#);
    p.drive();
    assert!(p.response(id).is_ok());
    p.cloud.reachable = false;
    p.cut();
    for _ in 0..2 {
        p.client.request(p.now, post(), RequestOptions::new().timeout(secs(300))).unwrap();
    }
    assert!(matches!(p.client.request(p.now, post(), RequestOptions::default()), Err(SubmitError::QueueFull { .. })));
    p.cloud.reachable = true;
    p.advance(secs(3));
    assert!(p.client.is_connected());
    let relogins = pubs_to(&p.cloud, "/ext/session/gwPK0001/gw_dev_01/combine/login/batch");
    assert_eq!(relogins.len(), 1, "the re-login is not refused by the full queue");
    // No answer: the sub-device is kept, and logged in again while connected, on the
    // back-off.
    p.advance(secs(30));
    let retry_at = p.events.iter().find_map(|e| match e {
        Event::Error(ClientError::ReloginRetry { devices, retry_at, .. }) if devices == &[keys("subPK01", "a")] => {
            Some(*retry_at)
        }
        _ => None,
    });
    assert_eq!(retry_at, Some(p.now.instant + secs(3)));
    assert!(!p.events.iter().any(|e| matches!(e, Event::Error(ClientError::ReloginFailed { .. }))));
    assert_eq!(p.client.logged_in_sub_devices().count(), 1);
    let gw_post = "/sys/gwPK0001/gw_dev_01/thing/measurepoint/post";
    assert_eq!(pubs_to(&p.cloud, gw_post).len(), 2, "the queue moves once the re-login has ended");
    p.advance(secs(3));
    assert_eq!(pubs_to(&p.cloud, "/ext/session/gwPK0001/gw_dev_01/combine/login/batch").len(), 2, "retried");
}

#[test]
fn a_relogin_answered_without_data_forgets_nobody_and_is_retried_until_confirmed() {
    let mut p = Pair::connected(gateway_config());
    p.cloud.replies = Replies::Hold;
    let login = p.client.request(p.now, SubDeviceBatchLogin::new(vec![sub("a"), sub("b")]), RequestOptions::default());
    p.drive();
    let held = p.cloud.held.remove(0);
    p.cloud.answer(
        &held,
        r#"{"loginedSubDevices":[{"productKey":"subPK01","deviceKey":"a"},{"productKey":"subPK01","deviceKey":"b"}]}"#,
    );
    p.drive();
    assert!(p.response(login.unwrap()).is_ok());
    p.cut();
    p.advance(secs(3));
    assert!(p.client.is_connected());
    // The cloud answers the re-login with an error and no data: nobody is named as
    // refused, so nobody is forgotten; both are tried again, 3 s then 6 s later.
    let batch = "/ext/session/gwPK0001/gw_dev_01/combine/login/batch";
    for (attempt, wait) in [(1, secs(3)), (2, secs(6))] {
        let relogin = p.cloud.held.pop().unwrap();
        assert_eq!(relogin.topic, batch);
        p.cloud.reply(&relogin.topic, &envelope_id(&relogin), 500, "{}");
        p.drive();
        assert_eq!(p.client.logged_in_sub_devices().count(), 2, "attempt {attempt}");
        assert!(!p.events.iter().any(|e| matches!(e, Event::Error(ClientError::ReloginFailed { .. }))));
        let retry_at = p.events.iter().rev().find_map(|e| match e {
            Event::Error(ClientError::ReloginRetry { devices, retry_at, .. }) => Some((devices.len(), *retry_at)),
            _ => None,
        });
        assert_eq!(retry_at, Some((2, p.now.instant + wait)), "attempt {attempt}");
        p.advance(wait);
        assert_eq!(pubs_to(&p.cloud, batch).len(), 2 + attempt, "attempt {attempt}");
    }
    // Other requests are not held back by a retry.
    let post_id = p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    p.drive();
    assert_eq!(pubs_to(&p.cloud, "/sys/gwPK0001/gw_dev_01/thing/measurepoint/post").len(), 1);
    // Now the cloud logs a in and names b as failed: b alone is forgotten, and no retry
    // follows.
    let relogin = p.cloud.held.iter().position(|h| h.topic == batch).map(|i| p.cloud.held.remove(i)).unwrap();
    p.cloud.answer(
        &relogin,
        r#"{"loginedSubDevices":[{"productKey":"subPK01","deviceKey":"a"}],"failedSubDevices":[{"productKey":"subPK01","deviceKey":"b"}]}"#,
    );
    p.drive();
    let logged: Vec<String> = p.client.logged_in_sub_devices().map(|k| k.device_key().to_owned()).collect();
    assert_eq!(logged, ["a"]);
    assert!(p.events.iter().any(
        |e| matches!(e, Event::Error(ClientError::ReloginFailed { devices, .. }) if devices == &[keys("subPK01", "b")])
    ));
    p.advance(secs(120));
    assert_eq!(pubs_to(&p.cloud, batch).len(), 4);
    let _ = post_id;
}

#[test]
fn a_raw_reply_never_completes_a_raw_request_not_yet_sent() {
    let mut p = Pair::connected(config());
    // The subscription to the reply topic is never answered: the request stays queued.
    p.cloud.auto_suback = false;
    let queued = p.client.request(p.now, RawUp::new(&b"\x01"[..]), RequestOptions::default()).unwrap();
    p.drive();
    assert_eq!(pubs_to(&p.cloud, "/sys/pk1234ab/dev_001/thing/model/up_raw").len(), 0);
    // A stray reply arrives on the raw reply topic: it belongs to nothing sent.
    p.cloud.publish("/sys/pk1234ab/dev_001/thing/model/up_raw_reply", b"stale", QoS::AtMostOnce);
    p.drive();
    assert!(p.responses(queued).is_empty());
    assert!(p.events.iter().any(|e| matches!(e, Event::Error(ClientError::UnmatchedReply { .. }))));
}

#[test]
fn output_debug_never_shows_transmitted_bytes() {
    let mut p = Pair::new(config());
    let _ = p.client.poll_output();
    p.client.handle_connected(p.now);
    let out = p.client.poll_output();
    let text = format!("{out:?}");
    assert!(text.starts_with("Transmit(") && text.ends_with(" bytes)"), "{text}");
}

#[test]
fn huge_durations_do_not_panic() {
    let mut c = config();
    c.max_reconnect_period = Duration::MAX;
    c.reconnect_period = Duration::from_secs(u64::MAX / 4);
    let mut p = Pair::connected(c);
    p.client.request(p.now, post(), RequestOptions::new().timeout(Duration::MAX)).unwrap();
    p.cut();
    p.advance(secs(10));
    assert!(!p.client.is_connected());
}

#[test]
fn close_sends_accepted_command_replies_and_stale_replies_are_dropped() {
    let mut p = Pair::connected(config());
    let cmd = br#"{"id":"1","version":"1.0","method":"thing.service.go","params":{}}"#;
    p.cloud.publish("/sys/pk1234ab/dev_001/thing/service/go", cmd, QoS::AtLeastOnce);
    p.drive();
    let Some(Event::Command(c)) = p.events.iter().find(|e| matches!(e, Event::Command(_))).cloned() else { panic!() };
    // Offline: the reply waits; after the request timeout it is worthless and dropped.
    p.cloud.reachable = false;
    p.cut();
    p.client.reply(p.now, c.reply_to.ok_empty()).unwrap();
    p.advance(secs(31));
    p.cloud.reachable = true;
    p.advance(secs(60));
    assert!(p.client.is_connected());
    assert!(pubs_to(&p.cloud, "/sys/pk1234ab/dev_001/thing/service/go_reply").is_empty());
    // Connected: a reply accepted just before close still goes out, before DISCONNECT.
    let cmd = br#"{"id":"2","version":"1.0","method":"thing.service.go","params":{}}"#;
    p.cloud.publish("/sys/pk1234ab/dev_001/thing/service/go", cmd, QoS::AtLeastOnce);
    p.drive();
    let Some(Event::Command(c)) = p.events.iter().rev().find(|e| matches!(e, Event::Command(_))).cloned() else {
        panic!()
    };
    assert_eq!(c.id, "2");
    p.cloud.auto_puback = false;
    p.client.request(p.now, post(), RequestOptions::new().need_reply(false)).unwrap();
    p.client.reply(p.now, c.reply_to.ok_empty()).unwrap();
    p.client.close(p.now);
    p.drive();
    assert_eq!(pubs_to(&p.cloud, "/sys/pk1234ab/dev_001/thing/service/go_reply").len(), 1);
    assert!(matches!(p.cloud.received.last(), Some(Packet::Disconnect)));
}

#[test]
fn command_ids_are_echoed_unchanged_and_reply_ids_must_match_exactly() {
    let mut p = Pair::connected(config());
    p.cloud.publish(
        "/sys/pk1234ab/dev_001/thing/service/go",
        br#"{"id":5,"version":"1.0","method":"thing.service.go","params":{}}"#,
        QoS::AtMostOnce,
    );
    p.drive();
    let Some(Event::Command(c)) = p.events.iter().find(|e| matches!(e, Event::Command(_))).cloned() else { panic!() };
    assert_eq!(c.id, "5");
    p.client.reply(p.now, c.reply_to.ok_empty()).unwrap();
    p.drive();
    let r = pubs_to(&p.cloud, "/sys/pk1234ab/dev_001/thing/service/go_reply");
    assert_eq!(json(&r[0].payload), json!({"id": 5, "code": 200, "data": {}}));
    p.cloud.replies = Replies::Hold;
    let id = p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    p.drive();
    let held = p.cloud.held.remove(0);
    let e = envelope_id(&held);
    p.cloud.reply(POST, &format!("0{e}"), 200, "{}");
    p.cloud.reply(POST, &format!("+{e}"), 200, "{}");
    p.drive();
    assert!(p.responses(id).is_empty());
    p.cloud.reply(POST, &e, 200, "{}");
    p.drive();
    assert!(p.response(id).is_ok());
}

#[test]
fn invalid_sub_device_client_ids_are_refused_at_submission() {
    let mut p = Pair::connected(gateway_config());
    let mut info = sub("a");
    info.client_id = Some("x".repeat(65));
    assert!(matches!(
        p.client.request(p.now, SubDeviceLogin::new(info), RequestOptions::default()),
        Err(SubmitError::Encode(enos_proto::EncodeError::Invalid { what: "client id", .. }))
    ));
    let mut batch = SubDeviceBatchLogin::new(vec![sub("a")]);
    batch.client_id = Some("a|b".into());
    assert!(matches!(p.client.request(p.now, batch, RequestOptions::default()), Err(SubmitError::Encode(_))));
}

// ----- a start: what a seed `connect()` waits for -----

fn seed_start(mut c: enos_proto::Config) -> enos_proto::Config {
    c.retry_first_connect = false;
    c
}

fn started(p: &Pair) -> Vec<&Result<(), enos_proto::StartError>> {
    p.events.iter().filter_map(|e| if let Event::Started(r) = e { Some(r) } else { None }).collect()
}

const ACTIVATION: &[u8] = br#"{"id":"1","version":"1.0","method":"thing.activate.info","params":{"assetId":"As5et1d0","productKey":"pk1234ab","deviceKey":"dev_001","deviceSecret":"NewDeviceSecret12345"}}"#;
const ACTIVATE_TOPIC: &str = "/ext/session/pk1234ab/dev_001/thing/activate/info";

#[test]
fn a_failed_first_connection_ends_the_start_and_closes_the_client() {
    use enos_proto::StartError;
    let mut p = Pair::new(seed_start(config()));
    p.cloud.connack = enos_proto::codec::ConnectReturnCode::NotAuthorized;
    let id = p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    p.drive();
    let refused = DisconnectCause::Refused(ConnectRefusal::NotAuthorized);
    assert_eq!(started(&p), [&Err(StartError::Failed(refused.clone()))]);
    assert!(p.events.contains(&Event::Disconnected { cause: refused, retry_at: None }));
    assert!(p.client.is_closed());
    assert_eq!(p.response(id), Err(RequestError::Closed));
    // No dial follows, however long.
    p.advance(secs(3600));
    assert_eq!(p.opens, 1);
    // An unreachable broker, and a silent one, end the start the same way.
    let mut p = Pair::new(seed_start(config()));
    p.cloud.reachable = false;
    p.drive();
    assert!(matches!(
        started(&p)[..],
        [Err(StartError::Failed(DisconnectCause::Transport(CloseCause::Io {
            kind: std::io::ErrorKind::ConnectionRefused,
            ..
        })))]
    ));
    let mut p = Pair::new(seed_start(config()));
    p.cloud.silent = true;
    p.drive();
    p.advance(secs(29));
    assert!(started(&p).is_empty());
    p.advance(secs(1));
    assert_eq!(started(&p), [&Err(StartError::TimedOut(secs(30)))]);
    assert!(p.client.is_closed());
}

#[test]
fn after_the_first_session_a_loss_is_retried_as_usual() {
    let mut p = Pair::connected(seed_start(config()));
    assert_eq!(started(&p), [&Ok(())]);
    p.cut();
    assert!(!p.client.is_closed());
    p.advance(secs(3));
    assert!(p.client.is_connected());
    assert_eq!(started(&p).len(), 1, "one start, one Started");
}

#[test]
fn the_start_deadline_covers_the_dynamic_activation() {
    use enos_proto::StartError;
    let mut c = seed_start(config());
    c.credentials = Credentials::ProductSecret("PSzyxw9876".into());
    // Connected, but no device secret yet: not started.
    let mut p = Pair::connected(c.clone());
    assert!(started(&p).is_empty());
    p.advance(secs(30));
    assert_eq!(started(&p), [&Err(StartError::TimedOut(secs(30)))]);
    assert!(p.client.is_closed());
    assert_eq!(p.cloud.count(|x| matches!(x, Packet::Disconnect)), 1, "a clean DISCONNECT");
    // The secret within the deadline starts the client; the deadline is gone with it.
    let mut p = Pair::connected(c);
    p.advance(secs(10));
    p.cloud.publish(ACTIVATE_TOPIC, ACTIVATION, QoS::AtLeastOnce);
    p.drive();
    assert_eq!(started(&p), [&Ok(())]);
    let at = p.events.iter().position(|e| matches!(e, Event::Activated { .. })).unwrap();
    assert!(matches!(p.events[at + 1], Event::Started(Ok(()))), "started once the secret is in");
    p.advance(secs(60));
    assert!(p.client.is_connected());
}

#[test]
fn a_client_started_again_after_close_keeps_the_issued_secret() {
    let mut c = seed_start(config());
    c.credentials = Credentials::ProductSecret("PSzyxw9876".into());
    let mut p = Pair::connected(c);
    p.cloud.publish(ACTIVATE_TOPIC, ACTIVATION, QoS::AtLeastOnce);
    p.drive();
    p.client.close(p.now);
    p.drive();
    assert!(p.client.is_closed());
    p.events.clear();
    p.client.connect(p.now);
    p.drive();
    // A fresh start in mode 2 with the issued secret: no second activation to wait for.
    assert_eq!(p.events, [Event::Connected { reconnect: false }, Event::Started(Ok(()))]);
    assert!(!p.client.has_reconnected());
    let connects: Vec<_> =
        p.cloud.received.iter().filter_map(|x| if let Packet::Connect(c) = x { Some(c) } else { None }).collect();
    assert!(connects[1].client_id.contains("securemode=2"), "{}", connects[1].client_id);
    let id = p.client.request(p.now, post(), RequestOptions::default()).unwrap();
    p.drive();
    assert!(p.response(id).is_ok());
}

#[test]
fn close_before_the_session_is_up_ends_the_start_as_closed() {
    let mut p = Pair::new(seed_start(config()));
    p.cloud.silent = true;
    p.drive();
    p.client.close(p.now);
    p.drive();
    assert_eq!(started(&p), [&Err(enos_proto::StartError::Closed)]);
}

#[test]
fn idle_reply_subscriptions_are_dropped_past_the_bound_and_come_back_when_used() {
    let mut c = gateway_config();
    c.max_reply_subscriptions = 8;
    let mut p = Pair::connected(c);
    let sub = |i: usize| keys("subPK001", &format!("sub_{i}"));
    // Posts on behalf of 40 sub-devices, one after the other: a reply topic each.
    for i in 0..40 {
        let id = p.client.request(p.now, post(), RequestOptions::new().target(sub(i))).unwrap();
        p.drive();
        assert!(p.response(id).is_ok(), "post {i}");
        let live = p.cloud.reply_subscriptions().len();
        assert!(live <= 8, "{live} reply topics subscribed after post {i}");
    }
    assert!(p.cloud.count(|x| matches!(x, Packet::Unsubscribe(_))) > 0);
    // The most recent stay; an evicted one is subscribed again when used.
    let live = p.cloud.reply_subscriptions();
    assert!(live.contains("/sys/subPK001/sub_39/thing/measurepoint/post_reply"));
    assert!(!live.contains("/sys/subPK001/sub_0/thing/measurepoint/post_reply"));
    let id = p.client.request(p.now, post(), RequestOptions::new().target(sub(0))).unwrap();
    p.drive();
    assert!(p.response(id).is_ok());
    assert!(p.cloud.reply_subscriptions().contains("/sys/subPK001/sub_0/thing/measurepoint/post_reply"));
}

#[test]
fn a_reply_topic_a_request_waits_on_is_never_unsubscribed() {
    let mut c = gateway_config();
    c.max_reply_subscriptions = 2;
    let mut p = Pair::connected(c);
    p.cloud.replies = Replies::Hold;
    // Four requests wait on four topics: none of those can go.
    let ids: Vec<_> = (0..4)
        .map(|i| {
            let id = p
                .client
                .request(p.now, post(), RequestOptions::new().target(keys("subPK001", &format!("s{i}"))))
                .unwrap();
            p.drive();
            id
        })
        .collect();
    assert_eq!(p.cloud.count(|x| matches!(x, Packet::Unsubscribe(_))), 0);
    for r in std::mem::take(&mut p.cloud.held) {
        p.cloud.answer(&r, "{}");
    }
    p.drive();
    assert!(ids.iter().all(|id| p.response(*id).is_ok()));
}
