//! A client fed an arbitrary sequence of inbound bytes, packets, time steps and
//! application calls. Invariants: no panic, queues within their bounds, and every
//! request ends exactly once, by itself by its deadline (checked past every deadline,
//! before a final close, which then ends nothing twice).
#![no_main]

use std::collections::HashMap;
use std::time::Duration;

use arbitrary::Arbitrary;
use bytes::BytesMut;
use enos_proto::codec::{self, Packet, PubAck, QoS, SubAck, SubscribeReasonCode};
use enos_proto::ops::{MeasurepointPost, RawUp, SubDeviceLogin, TagQuery};
use enos_proto::{
    Client, CloseCause, Config, Credentials, DeviceKeys, Event, Now, Output, Qos, RequestId, RequestOptions,
    SubDeviceInfo,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Action {
    Request { kind: u8, qos: Qos, need_reply: bool, timeout_s: Option<u8> },
    Bytes(Vec<u8>),
    ConnAck(u8),
    SubAck(u16, bool),
    PubAck(u16),
    Reply { topic: u8, id: u8, code: u16, data: u8 },
    Command { topic: u8, body: u8, qos1: bool },
    PingResp,
    Advance(u16),
    Connected,
    Closed,
    ReplyToCommand,
}

const TOPICS: [&str; 5] = [
    "/sys/pk/dk/thing/measurepoint/post_reply",
    "/sys/pk/dk/thing/tag/query_reply",
    "/sys/pk/dk/thing/model/up_raw_reply",
    "/ext/session/pk/dk/combine/login_reply",
    "/sys/sub/a/thing/measurepoint/post_reply",
];
const DATA: [&str; 4] =
    ["{}", r#"{"loginedSubDevices":[{"productKey":"sub","deviceKey":"a"}]}"#, r#""{\"a\":1}""#, "[1,2]"];
const COMMANDS: [&str; 7] = [
    "/sys/pk/dk/thing/service/restart",
    "/sys/pk/dk/thing/service/measurepoint/set",
    "/sys/pk/dk/thing/service/measurepoint/get",
    "/sys/pk/dk/thing/model/down_raw",
    "/ext/session/pk/dk/combine/disable",
    "/ext/session/pk/dk/thing/activate/info",
    "/sys/sub/a/thing/service/x",
];
const BODIES: [&[u8]; 5] = [
    br#"{"id":"1","version":"1.0","params":{"a":1}}"#,
    b"{not json",
    br#"{"id":"2","params":[{"productKey":"sub","deviceKey":"a"}]}"#,
    br#"{"id":3,"params":["a","b"]}"#,
    br#"{"id":"4","params":{"deviceSecret":"x","assetId":"y"}}"#,
];

fuzz_target!(|actions: Vec<Action>| {
    let mut now = Now::new(Now::system().instant, 1_600_000_000_000);
    let mut cfg = Config::new(DeviceKeys::new("pk", "dk").unwrap(), Credentials::ProductSecret("s".into()));
    cfg.max_queued_requests = 8;
    cfg.max_inflight = 3;
    cfg.max_outstanding_requests = 16;
    let (max_queued, max_inflight) = (cfg.max_queued_requests, usize::from(cfg.max_inflight));
    let mut c = Client::new(cfg, now).unwrap();
    let mut ids: Vec<RequestId> = Vec::new();
    let mut ended: HashMap<RequestId, usize> = HashMap::new();
    let mut commands: Vec<enos_proto::Command> = Vec::new();
    let drain = |c: &mut Client, ended: &mut HashMap<RequestId, usize>, commands: &mut Vec<enos_proto::Command>| loop {
        match c.poll_output() {
            Output::Event(Event::Response { id, .. }) => *ended.entry(id).or_default() += 1,
            Output::Event(Event::Command(cmd)) => commands.push(*cmd),
            Output::Wait(_) => break,
            _ => {}
        }
    };
    for a in actions.into_iter().take(400) {
        let mut wire = BytesMut::new();
        match a {
            Action::Request { kind, qos, need_reply, timeout_s } => {
                let mut o = RequestOptions::new().need_reply(need_reply).qos(qos);
                if let Some(t) = timeout_s {
                    o = o.timeout(Duration::from_secs(u64::from(t).max(1)));
                }
                if kind % 5 == 4 {
                    o = o.target(DeviceKeys::new("sub", "a").unwrap());
                }
                let r = match kind % 4 {
                    0 => c.request(now, MeasurepointPost::new(serde_json::json!({"t": 1})), o),
                    1 => c.request(now, TagQuery::new(["a"]), o),
                    2 => c.request(now, RawUp::new(&b"r"[..]), o),
                    _ => c.request(
                        now,
                        SubDeviceLogin::new(SubDeviceInfo::new(DeviceKeys::new("sub", "a").unwrap(), "s")),
                        o,
                    ),
                };
                if let Ok(id) = r {
                    ids.push(id);
                }
            }
            Action::Bytes(b) => c.handle_input(now, &b),
            Action::ConnAck(code) => c.handle_input(now, &[0x20, 0x02, 0x00, code % 7]),
            Action::SubAck(p, ok) => {
                let code =
                    if ok { SubscribeReasonCode::Success(QoS::AtLeastOnce) } else { SubscribeReasonCode::Failure };
                codec::encode_packet(&mut wire, &Packet::SubAck(SubAck::new(p.max(1), vec![code; 3]))).unwrap();
                c.handle_input(now, &wire);
            }
            Action::PubAck(p) => {
                codec::encode_packet(&mut wire, &Packet::PubAck(PubAck::new(p.max(1)))).unwrap();
                c.handle_input(now, &wire);
            }
            Action::Reply { topic, id, code, data } => {
                let body = format!(r#"{{"id":"{id}","code":{code},"data":{}}}"#, DATA[usize::from(data) % DATA.len()]);
                let t = TOPICS[usize::from(topic) % TOPICS.len()];
                codec::encode_publish(&mut wire, t, body.as_bytes(), QoS::AtLeastOnce, 9, false).unwrap();
                c.handle_input(now, &wire);
            }
            Action::Command { topic, body, qos1 } => {
                let t = COMMANDS[usize::from(topic) % COMMANDS.len()];
                let b = BODIES[usize::from(body) % BODIES.len()];
                let qos = if qos1 { QoS::AtLeastOnce } else { QoS::AtMostOnce };
                codec::encode_publish(&mut wire, t, b, qos, if qos1 { 5 } else { 0 }, false).unwrap();
                c.handle_input(now, &wire);
            }
            Action::PingResp => c.handle_input(now, &[0xd0, 0x00]),
            Action::Advance(ms) => {
                now = now.advanced(Duration::from_millis(u64::from(ms) * 8));
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
        drain(&mut c, &mut ended, &mut commands);
        assert!(c.queued_requests() <= max_queued + max_inflight, "queue over its bound");
        assert!(c.inflight() <= max_inflight, "window over its bound");
        assert!(ended.values().all(|n| *n == 1), "a request ended twice");
    }
    // Past every deadline (a request's timeout is at most 255 s here), with the client
    // never closed: nothing is outstanding, and every request ended once.
    for _ in 0..27 {
        now = now.advanced(Duration::from_secs(10));
        c.handle_timeout(now);
        drain(&mut c, &mut ended, &mut commands);
    }
    assert_eq!(c.outstanding_requests(), 0, "requests outstanding past every deadline");
    for id in &ids {
        assert_eq!(ended.get(id).copied(), Some(1), "request {id:?} did not end exactly once");
    }
    assert_eq!(ended.len(), ids.len());
    c.close(now);
    drain(&mut c, &mut ended, &mut commands);
    assert!(ended.values().all(|n| *n == 1), "a request ended again at close");
});
