//! Reply and command parsing, for every downstream kind: a connected gateway (with a
//! logged-in sub-device and requests waiting on their reply topics) receives a PUBLISH
//! on a topic built from a template and arbitrary text, with an arbitrary payload.
//! Invariants: no panic; every command handed over has its reply topic (topic + `_reply`);
//! every reply the core sends by itself echoes the command's id as sent; the session
//! stays up; every request still ends exactly once.
#![no_main]

use std::collections::HashMap;
use std::time::Instant;

use arbitrary::Arbitrary;
use bytes::BytesMut;
use enos_proto::codec::{self, ConnAck, ConnectReturnCode, Decoder, Packet, QoS, SubAck, SubscribeReasonCode};
use enos_proto::ops::{MeasurepointPost, RawUp, SubDeviceLogin, TagQuery};
use enos_proto::{
    Client, Config, Credentials, DeviceKeys, Event, Now, Output, RequestId, RequestOptions, SubDeviceInfo,
};
use libfuzzer_sys::fuzz_target;

const TEMPLATES: [&str; 16] = [
    "/sys/gp/gd/thing/service/{}",
    "/sys/gp/gd/thing/service/measurepoint/set",
    "/sys/gp/gd/thing/service/measurepoint/get",
    "/sys/gp/gd/thing/model/down_raw",
    "/sys/gp/gd/ota/device/upgrade",
    "/sys/gp/gd/thing/{}",
    "/ext/session/gp/gd/combine/{}",
    "/ext/session/gp/gd/thing/activate/info",
    "/sys/sp/sd/thing/service/{}",
    "/sys/gp/gd/thing/measurepoint/post_reply",
    "/sys/gp/gd/thing/tag/query_reply",
    "/sys/gp/gd/thing/model/up_raw_reply",
    "/ext/session/gp/gd/combine/login_reply",
    "/sys/sp/sd/thing/measurepoint/post_reply",
    "/sys/{}/gd/thing/service/x",
    "{}",
];

#[derive(Debug, Arbitrary)]
struct Message {
    template: u8,
    fill: String,
    payload: Vec<u8>,
    qos1: bool,
}

fn drain(
    c: &mut Client,
    sent: &mut BytesMut,
    ended: &mut HashMap<RequestId, u32>,
    commands: &mut Vec<enos_proto::Command>,
) {
    loop {
        match c.poll_output() {
            Output::Transmit(b) => sent.extend_from_slice(&b),
            Output::Event(Event::Response { id, .. }) => *ended.entry(id).or_default() += 1,
            Output::Event(Event::Command(cmd)) => commands.push(*cmd),
            Output::Wait(_) => return,
            _ => {}
        }
    }
}

fuzz_target!(|msgs: Vec<Message>| {
    let mut now = Now::new(Instant::now(), 1_600_000_000_000);
    let config = Config::new(DeviceKeys::new("gp", "gd").unwrap(), Credentials::DeviceSecret("s".into()));
    let mut c = Client::new(config, now).unwrap();
    let (mut sent, mut ended, mut commands) = (BytesMut::new(), HashMap::new(), Vec::new());
    drain(&mut c, &mut sent, &mut ended, &mut commands);
    c.handle_connected(now);
    let mut wire = BytesMut::new();
    codec::encode_packet(&mut wire, &Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false))).unwrap();
    c.handle_input(now, &wire.split());
    let sub = SubDeviceInfo::new(DeviceKeys::new("sp", "sd").unwrap(), "x");
    let mut ids = vec![c.request(now, SubDeviceLogin::new(sub), RequestOptions::new()).unwrap()];
    ids.push(c.request(now, TagQuery::new(["a"]), RequestOptions::new()).unwrap());
    ids.push(c.request(now, RawUp::new(&b"r"[..]), RequestOptions::new()).unwrap());
    let target = RequestOptions::new().target(DeviceKeys::new("sp", "sd").unwrap());
    ids.push(c.request(now, MeasurepointPost::new(serde_json::json!({"t": 1})), target).unwrap());
    codec::encode_packet(
        &mut wire,
        &Packet::SubAck(SubAck::new(1, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce); 4])),
    )
    .unwrap();
    c.handle_input(now, &wire.split());
    // The login succeeds, so commands for the sub-device are accepted.
    codec::encode_publish(
        &mut wire,
        "/ext/session/gp/gd/combine/login_reply",
        br#"{"id":"1","code":200,"data":{"productKey":"sp","deviceKey":"sd"}}"#,
        QoS::AtMostOnce,
        0,
        false,
    )
    .unwrap();
    c.handle_input(now, &wire.split());
    drain(&mut c, &mut sent, &mut ended, &mut commands);
    sent.clear();
    for m in msgs.into_iter().take(64) {
        let template = TEMPLATES[usize::from(m.template) % TEMPLATES.len()];
        let topic = template.replace("{}", &m.fill);
        if topic.is_empty() || topic.len() > 1024 {
            continue;
        }
        let (qos, pkid) = if m.qos1 { (QoS::AtLeastOnce, 9) } else { (QoS::AtMostOnce, 0) };
        if codec::encode_publish(&mut wire, &topic, &m.payload, qos, pkid, false).is_err() {
            continue;
        }
        c.handle_input(now, &wire.split());
        let before = commands.len();
        drain(&mut c, &mut sent, &mut ended, &mut commands);
        assert!(c.is_connected(), "a publish ended the session");
        for cmd in &commands[before..] {
            assert_eq!(cmd.reply_to.topic(), format!("{topic}_reply"), "reply topic");
            assert_eq!(cmd.device.to_string().contains('/'), true);
        }
        // What the core sent by itself (PUBACKs, 1102 and activation replies).
        let mut d = Decoder::new(1 << 22);
        d.feed(&sent.split());
        while let Ok(Some(p)) = d.next_packet() {
            if let Packet::Publish(p) = p {
                assert_eq!(p.topic, format!("{topic}_reply"));
                let reply: serde_json::Value = serde_json::from_slice(&p.payload).expect("the core's reply is JSON");
                let sent_id: serde_json::Value = serde_json::from_slice::<serde_json::Value>(&m.payload)
                    .ok()
                    .and_then(|v| v.get("id").cloned())
                    .unwrap_or_default();
                assert_eq!(reply["id"], sent_id, "the id is echoed as sent");
            }
        }
    }
    // Past every deadline (the default 30 s), the client never closed: each request has
    // ended, once, by itself; closing then ends nothing twice.
    for _ in 0..4 {
        now = now.advanced(std::time::Duration::from_secs(10));
        c.handle_timeout(now);
        drain(&mut c, &mut sent, &mut ended, &mut commands);
    }
    assert_eq!(c.outstanding_requests(), 0, "requests outstanding past every deadline");
    for id in &ids {
        assert_eq!(ended.get(id), Some(&1), "request {id:?} did not end exactly once");
    }
    c.close(now);
    drain(&mut c, &mut sent, &mut ended, &mut commands);
    assert!(ended.values().all(|n| *n == 1), "a request ended again at close");
});
