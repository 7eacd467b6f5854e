//! Property tests: packets round-trip, chunking does not matter, and no input sequence
//! panics the core or loses a request.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use enos_proto::codec::{
    self, ConnAck, Connect, ConnectReturnCode, Decoder, Login, Packet, PubAck, Publish, QoS, SubAck, Subscribe,
    SubscribeFilter, SubscribeReasonCode,
};
use enos_proto::ops::{MeasurepointPost, RawUp, SubDeviceLogin, TagQuery};
use enos_proto::{Client, CloseCause, Event, Now, Output, Qos, RequestError, RequestId, RequestOptions, SubDeviceInfo};
use proptest::prelude::*;
use support::*;

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..max).prop_map(|v| v.into_iter().collect())
}

fn pkid() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn connack_code() -> impl Strategy<Value = ConnectReturnCode> {
    prop_oneof![
        Just(ConnectReturnCode::Success),
        Just(ConnectReturnCode::RefusedProtocolVersion),
        Just(ConnectReturnCode::BadClientId),
        Just(ConnectReturnCode::ServiceUnavailable),
        Just(ConnectReturnCode::BadUserNamePassword),
        Just(ConnectReturnCode::NotAuthorized),
    ]
}

/// Every packet kind the core sends or receives.
fn packet() -> impl Strategy<Value = Packet> {
    prop_oneof![
        (
            text(80),
            any::<u16>(),
            proptest::option::of((text(40).prop_filter("non-empty", |u| !u.is_empty()), text(70)))
        )
            .prop_map(|(id, ka, login)| {
                let mut c = Connect::new(id);
                c.keep_alive = ka;
                c.login = login.map(|(u, p)| Login::new(u, p));
                Packet::Connect(c)
            }),
        (connack_code(), any::<bool>()).prop_map(|(c, s)| Packet::ConnAck(ConnAck::new(c, s))),
        (
            text(60).prop_filter("non-empty", |t| !t.is_empty()),
            any::<bool>(),
            pkid(),
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(topic, qos1, pkid, dup, retain, payload)| {
                let mut p = Publish::from_bytes(
                    topic,
                    if qos1 { QoS::AtLeastOnce } else { QoS::AtMostOnce },
                    Bytes::from(payload),
                );
                p.pkid = if qos1 { pkid } else { 0 };
                p.dup = dup;
                p.retain = retain;
                Packet::Publish(p)
            }),
        pkid().prop_map(|id| Packet::PubAck(PubAck::new(id))),
        (pkid(), proptest::collection::vec(text(40).prop_filter("non-empty", |t| !t.is_empty()), 1..5)).prop_map(
            |(id, filters)| {
                let mut s = Subscribe::empty_subscribe();
                s.pkid = id;
                s.filters = filters.into_iter().map(|f| SubscribeFilter::new(f, QoS::AtLeastOnce)).collect();
                Packet::Subscribe(s)
            }
        ),
        (pkid(), proptest::collection::vec(any::<bool>(), 1..5)).prop_map(|(id, ok)| {
            Packet::SubAck(SubAck::new(
                id,
                ok.into_iter()
                    .map(
                        |o| {
                            if o {
                                SubscribeReasonCode::Success(QoS::AtLeastOnce)
                            } else {
                                SubscribeReasonCode::Failure
                            }
                        },
                    )
                    .collect(),
            ))
        }),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        Just(Packet::Disconnect),
    ]
}

/// Splits `bytes` at the given cut points.
fn chunks(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    let mut last = 0;
    for p in points.into_iter().chain([bytes.len()]) {
        out.push(bytes[last..p].to_vec());
        last = p;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_packet_round_trips_in_any_chunking(packets in proptest::collection::vec(packet(), 1..6), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let mut wire = BytesMut::new();
        for p in &packets {
            codec::encode_packet(&mut wire, p).unwrap();
        }
        let mut d = Decoder::new(1 << 20);
        let mut decoded = Vec::new();
        for c in chunks(&wire, &cuts) {
            d.feed(&c);
            while let Some(p) = d.next_packet().unwrap() {
                decoded.push(p);
            }
        }
        prop_assert_eq!(decoded, packets);
        prop_assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let mut d = Decoder::new(4096);
        for c in chunks(&bytes, &cuts) {
            d.feed(&c);
            while let Ok(Some(p)) = d.next_packet() {
                // Whatever decodes re-encodes to a packet that decodes the same.
                let mut again = BytesMut::new();
                if codec::encode_packet(&mut again, &p).is_ok() {
                    let mut d2 = Decoder::new(1 << 20);
                    d2.feed(&again);
                    prop_assert_eq!(d2.next_packet().unwrap(), Some(p));
                }
            }
        }
    }

    /// A generated session (requests, the cloud's replies, commands, acknowledgements and
    /// pings in any order, time moving between them) gives the same events and the same
    /// bytes out whether each burst of the cloud's bytes arrives whole or cut anywhere.
    #[test]
    fn the_cloud_stream_in_any_chunking_gives_the_same_events(
        steps in proptest::collection::vec(step(), 1..60),
        cuts in proptest::collection::vec(any::<usize>(), 0..80),
    ) {
        let start = Now::new(Now::system().instant, T0_UNIX_MS);
        let (whole_events, whole_tx) = run_session(start, &steps, &[]);
        let (events, tx) = run_session(start, &steps, &cuts);
        prop_assert_eq!(events, whole_events);
        prop_assert_eq!(tx, whole_tx);
    }
}

/// One step of a generated session: the device asks, the cloud sends, or time moves.
#[derive(Debug, Clone)]
enum Step {
    Request(u8),
    Cloud(Vec<Packet>),
    Advance(u16),
}

/// Something the cloud sends a connected device: a reply (matching or not), a command at
/// QoS 0 or 1, an acknowledgement, a ping response, or a message on another topic.
fn cloud_packet() -> impl Strategy<Value = Packet> {
    let publish = |topic: String, body: Vec<u8>, qos1: bool, pkid: u16| {
        let qos = if qos1 { QoS::AtLeastOnce } else { QoS::AtMostOnce };
        let mut p = Publish::new(topic, qos, body);
        p.pkid = if qos1 { pkid } else { 0 };
        Packet::Publish(p)
    };
    prop_oneof![
        4 => (0usize..4, 1u32..10, prop_oneof![Just(200), Just(1204)], any::<bool>(), 1u16..50).prop_map(move |(t, id, code, qos1, pkid)| {
            let body = if t == 2 {
                vec![9, id as u8]
            } else {
                format!(r#"{{"id":"{id}","code":{code},"data":{{"loginedSubDevices":[],"a":"b"}}}}"#).into_bytes()
            };
            publish(TOPICS[t].to_owned(), body, qos1, pkid)
        }),
        2 => (0usize..6, 0usize..3, any::<bool>(), 1u16..50).prop_map(move |(t, b, qos1, pkid)| publish(COMMANDS[t].to_owned(), BODIES[b].to_vec(), qos1, pkid)),
        2 => (1u16..12).prop_map(|p| Packet::PubAck(PubAck::new(p))),
        2 => (1u16..12, any::<bool>()).prop_map(|(p, ok)| Packet::SubAck(SubAck::new(p, vec![if ok { SubscribeReasonCode::Success(QoS::AtLeastOnce) } else { SubscribeReasonCode::Failure }]))),
        1 => Just(Packet::PingResp),
        1 => Just(publish("/other/topic".into(), b"hello".to_vec(), false, 0)),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (0u8..4).prop_map(Step::Request),
        5 => proptest::collection::vec(cloud_packet(), 1..6).prop_map(Step::Cloud),
        2 => (0u16..20_000).prop_map(Step::Advance),
    ]
}

/// Runs a generated session on a connected client, each burst of the cloud's bytes cut
/// at `cuts` (positions taken modulo the burst's length, so every burst is cut
/// somewhere when there are cuts): its events and every byte it sent.
fn run_session(start: Now, steps: &[Step], cuts: &[usize]) -> (Vec<Event>, Vec<u8>) {
    let mut now = start;
    let mut c = Client::new(config(), now).unwrap();
    let _ = c.poll_output();
    c.handle_connected(now);
    let mut connack = BytesMut::new();
    codec::encode_packet(&mut connack, &Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false))).unwrap();
    c.handle_input(now, &connack);
    let mut events = Vec::new();
    let mut tx = Vec::new();
    let drain = |c: &mut Client, events: &mut Vec<Event>, tx: &mut Vec<u8>| loop {
        match c.poll_output() {
            Output::Transmit(b) => tx.extend_from_slice(&b),
            Output::Event(e) => events.push(e),
            Output::Wait(_) => break,
            _ => {}
        }
    };
    drain(&mut c, &mut events, &mut tx);
    let mut cut = cuts.iter().copied().cycle();
    for step in steps {
        match step {
            Step::Request(kind) => {
                let o = RequestOptions::new();
                let _ = match kind {
                    0 => c.request(now, MeasurepointPost::new(serde_json::json!({"t": 1})), o),
                    1 => c.request(now, TagQuery::new(["a"]), o),
                    2 => c.request(now, RawUp::new(&b"r"[..]), o),
                    _ => c.request(now, SubDeviceLogin::new(SubDeviceInfo::new(keys("subPK01", "a"), "s")), o),
                };
            }
            Step::Cloud(packets) => {
                let mut burst = BytesMut::new();
                for p in packets {
                    codec::encode_packet(&mut burst, p).unwrap();
                }
                let these: Vec<usize> =
                    if cuts.is_empty() { Vec::new() } else { (0..3).filter_map(|_| cut.next()).collect() };
                for chunk in chunks(&burst, &these) {
                    c.handle_input(now, &chunk);
                    drain(&mut c, &mut events, &mut tx);
                }
            }
            Step::Advance(ms) => {
                now = now.advanced(Duration::from_millis(u64::from(*ms)));
                c.handle_timeout(now);
            }
        }
        drain(&mut c, &mut events, &mut tx);
    }
    (events, tx)
}

#[derive(Debug, Clone)]
enum Action {
    Request { kind: u8, qos0: bool, need_reply: bool, timeout_s: Option<u8> },
    Bytes(Vec<u8>),
    ConnAck(u8),
    SubAck(u16, bool),
    PubAck(u16),
    Reply { topic: u8, id: u32, code: i32 },
    Command(u8, u8),
    PingResp,
    Advance(u16),
    Connected,
    Closed,
    ReplyToCommand,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (0u8..4, any::<bool>(), any::<bool>(), proptest::option::of(1u8..60))
            .prop_map(|(kind, qos0, need_reply, timeout_s)| Action::Request { kind, qos0, need_reply, timeout_s }),
        1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Action::Bytes),
        2 => (0u8..7).prop_map(Action::ConnAck),
        2 => (0u16..12, any::<bool>()).prop_map(|(p, ok)| Action::SubAck(p, ok)),
        3 => (0u16..12).prop_map(Action::PubAck),
        3 => (0u8..4, 0u32..12, prop_oneof![Just(200), Just(723), Just(1204)]).prop_map(|(topic, id, code)| Action::Reply { topic, id, code }),
        2 => (0u8..6, 0u8..3).prop_map(|(t, b)| Action::Command(t, b)),
        1 => Just(Action::PingResp),
        3 => (0u16..40_000).prop_map(Action::Advance),
        2 => Just(Action::Connected),
        1 => Just(Action::Closed),
        1 => Just(Action::ReplyToCommand),
    ]
}

const TOPICS: [&str; 4] = [
    "/sys/pk1234ab/dev_001/thing/measurepoint/post_reply",
    "/sys/pk1234ab/dev_001/thing/tag/query_reply",
    "/sys/pk1234ab/dev_001/thing/model/up_raw_reply",
    "/ext/session/pk1234ab/dev_001/combine/login_reply",
];

const COMMANDS: [&str; 6] = [
    "/sys/pk1234ab/dev_001/thing/service/restart",
    "/sys/pk1234ab/dev_001/thing/service/measurepoint/set",
    "/sys/pk1234ab/dev_001/thing/model/down_raw",
    "/ext/session/pk1234ab/dev_001/combine/disable",
    "/ext/session/pk1234ab/dev_001/thing/activate/info",
    "/sys/subPK01/a/thing/service/x",
];

const BODIES: [&[u8]; 3] = [
    br#"{"id":"1","version":"1.0","params":{"a":1}}"#,
    b"{not json",
    br#"{"id":"2","params":[{"productKey":"subPK01","deviceKey":"a"}]}"#,
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// No sequence of network input, time and application calls panics the core, lets a
    /// queue pass its bound, or ends a request other than exactly once.
    #[test]
    fn no_input_sequence_panics_or_loses_a_request(actions in proptest::collection::vec(action(), 0..120)) {
        let start = Now::system().instant;
        let mut now = Now::new(start, T0_UNIX_MS);
        let mut cfg = config();
        cfg.max_queued_requests = 8;
        cfg.max_inflight = 3;
        cfg.max_outstanding_requests = 12;
        let limits = (cfg.max_queued_requests, usize::from(cfg.max_inflight));
        let mut c = Client::new(cfg, now).unwrap();
        let mut ids: Vec<RequestId> = Vec::new();
        let mut ended: HashMap<RequestId, usize> = HashMap::new();
        let mut commands: Vec<enos_proto::Command> = Vec::new();
        let mut closed_ends = 0usize;
        let drain = |c: &mut Client, ended: &mut HashMap<RequestId, usize>, commands: &mut Vec<enos_proto::Command>, closed_ends: &mut usize| loop {
            match c.poll_output() {
                Output::Event(Event::Response { id, result }) => {
                    *ended.entry(id).or_default() += 1;
                    *closed_ends += usize::from(matches!(result, Err(RequestError::Closed)));
                }
                Output::Event(Event::Command(cmd)) => commands.push(*cmd),
                Output::Wait(_) => break,
                _ => {}
            }
        };
        for a in actions {
            let mut wire = BytesMut::new();
            match a {
                Action::Request { kind, qos0, need_reply, timeout_s } => {
                    let mut o = RequestOptions::new().need_reply(need_reply).qos(if qos0 { Qos::AtMostOnce } else { Qos::AtLeastOnce });
                    if let Some(t) = timeout_s {
                        o = o.timeout(Duration::from_secs(u64::from(t)));
                    }
                    let r = match kind {
                        0 => c.request(now, MeasurepointPost::new(serde_json::json!({"t": 1})), o),
                        1 => c.request(now, TagQuery::new(["a"]), o),
                        2 => c.request(now, RawUp::new(&b"r"[..]), o),
                        _ => c.request(now, SubDeviceLogin::new(SubDeviceInfo::new(keys("subPK01", "a"), "s")), o),
                    };
                    if let Ok(id) = r {
                        ids.push(id);
                    }
                }
                Action::Bytes(b) => c.handle_input(now, &b),
                Action::ConnAck(code) => {
                    wire.extend_from_slice(&[0x20, 0x02, 0x00, code]);
                    c.handle_input(now, &wire);
                }
                Action::SubAck(p, ok) => {
                    codec::encode_packet(&mut wire, &Packet::SubAck(SubAck::new(p.max(1), vec![if ok { SubscribeReasonCode::Success(QoS::AtLeastOnce) } else { SubscribeReasonCode::Failure }; 2]))).unwrap();
                    c.handle_input(now, &wire);
                }
                Action::PubAck(p) => {
                    codec::encode_packet(&mut wire, &Packet::PubAck(PubAck::new(p.max(1)))).unwrap();
                    c.handle_input(now, &wire);
                }
                Action::Reply { topic, id, code } => {
                    let body = format!(r#"{{"id":"{id}","code":{code},"data":{{"loginedSubDevices":[{{"productKey":"subPK01","deviceKey":"a"}}]}}}}"#);
                    codec::encode_publish(&mut wire, TOPICS[usize::from(topic) % 4], body.as_bytes(), QoS::AtLeastOnce, 9, false).unwrap();
                    c.handle_input(now, &wire);
                }
                Action::Command(t, b) => {
                    codec::encode_publish(&mut wire, COMMANDS[usize::from(t) % 6], BODIES[usize::from(b) % 3], QoS::AtMostOnce, 0, false).unwrap();
                    c.handle_input(now, &wire);
                }
                Action::PingResp => c.handle_input(now, &[0xd0, 0x00]),
                Action::Advance(ms) => {
                    now = now.advanced(Duration::from_millis(u64::from(ms)));
                    c.handle_timeout(now);
                }
                Action::Connected => c.handle_connected(now),
                Action::Closed => c.handle_closed(now, CloseCause::Eof),
                Action::ReplyToCommand => {
                    if let Some(cmd) = commands.pop() {
                        let _ = c.reply(now, cmd.reply_to.ok_empty());
                    }
                }
            }
            drain(&mut c, &mut ended, &mut commands, &mut closed_ends);
            prop_assert!(c.queued_requests() <= limits.0 + limits.1, "queue over its bound");
            prop_assert!(c.inflight() <= limits.1, "window over its bound");
            prop_assert!(ended.values().all(|n| *n == 1), "a request ended twice");
        }
        // Past the latest deadline (a minute at most, here), and with the client never
        // closed, every request has ended by itself, once: none waits for ever.
        for _ in 0..13 {
            now = now.advanced(Duration::from_secs(10));
            c.handle_timeout(now);
            drain(&mut c, &mut ended, &mut commands, &mut closed_ends);
        }
        prop_assert_eq!(c.outstanding_requests(), 0, "requests still outstanding past every deadline");
        for id in &ids {
            prop_assert_eq!(ended.get(id).copied(), Some(1), "request {:?} did not end exactly once", id);
        }
        prop_assert_eq!(ended.len(), ids.len());
        prop_assert_eq!(closed_ends, 0, "a request ended as closed although nothing closed the client");
        // Closing then ends nothing twice.
        c.close(now);
        drain(&mut c, &mut ended, &mut commands, &mut closed_ends);
        prop_assert!(ended.values().all(|n| *n == 1), "a request ended again at close");
    }
}
