//! A deterministic harness: a [`Client`] and a [`FakeCloud`] that plays EnOS's side in
//! bytes, with simulated time. Nothing sleeps; time moves only when a test says so.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use enos_proto::codec::{
    self, ConnAck, ConnectReturnCode, Decoder, Packet, PubAck, Publish, QoS, SubAck, SubscribeReasonCode, UnsubAck,
};
use enos_proto::{
    Client, CloseCause, Config, Credentials, DeviceKeys, Event, Now, Output, Reply, RequestError, RequestId,
};

/// How the fake cloud answers requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replies {
    /// `{"id":..,"code":200,"data":{}}` at once (raw up: the bytes echoed).
    Ok,
    /// Keep them in `held` for the test to answer.
    Hold,
}

/// The cloud's side of the connection.
pub struct FakeCloud {
    decoder: Decoder,
    /// Every packet the client sent, in order, across connections.
    pub received: Vec<Packet>,
    /// Bytes waiting to reach the client.
    pub outbox: BytesMut,
    pub connack: ConnectReturnCode,
    /// Accept dials (false: the dial fails).
    pub reachable: bool,
    pub auto_suback: bool,
    pub auto_puback: bool,
    pub auto_pingresp: bool,
    pub replies: Replies,
    /// Requests held by `Replies::Hold`.
    pub held: Vec<Publish>,
    /// Deliver to the client in chunks of this many bytes.
    pub chunk: usize,
    /// Refuse these reply topics' SUBSCRIBEs.
    pub refuse_subscriptions: Vec<String>,
    /// Answer nothing at all.
    pub silent: bool,
    /// The codec of a compressing session: what the client sends is decompressed before
    /// it is kept in `received`, and what the cloud publishes is compressed.
    pub compression: Option<enos_proto::compress::Compression>,
    /// The payloads of the client's PUBLISHes as they were on the wire.
    pub wire_payloads: Vec<bytes::Bytes>,
}

impl FakeCloud {
    fn new() -> Self {
        FakeCloud {
            decoder: Decoder::new(1 << 22),
            received: Vec::new(),
            outbox: BytesMut::new(),
            connack: ConnectReturnCode::Success,
            reachable: true,
            auto_suback: true,
            auto_puback: true,
            auto_pingresp: true,
            replies: Replies::Ok,
            held: Vec::new(),
            chunk: usize::MAX,
            refuse_subscriptions: Vec::new(),
            silent: false,
            compression: None,
            wire_payloads: Vec::new(),
        }
    }

    pub fn send(&mut self, p: Packet) {
        codec::encode_packet(&mut self.outbox, &p).unwrap();
    }

    /// Publishes `payload` on `topic` to the client at `qos` (packet id 77 for QoS 1).
    pub fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS) {
        let mut compressed = Vec::new();
        let payload = match self.compression {
            Some(c) => {
                c.compress(payload, &mut compressed);
                &compressed[..]
            }
            None => payload,
        };
        codec::encode_publish(
            &mut self.outbox,
            topic,
            payload,
            qos,
            if qos == QoS::AtMostOnce { 0 } else { 77 },
            false,
        )
        .unwrap();
    }

    /// Replies `{"id":id,"code":code,"data":data}` to a request on `topic`.
    pub fn reply(&mut self, request_topic: &str, id: &str, code: i32, data: &str) {
        let payload = format!(r#"{{"id":"{id}","code":{code},"data":{data}}}"#);
        self.publish(&format!("{request_topic}_reply"), payload.as_bytes(), QoS::AtMostOnce);
    }

    /// Answers a held request with 200 and `data`.
    pub fn answer(&mut self, p: &Publish, data: &str) {
        let id = envelope_id(p);
        self.reply(&p.topic, &id, 200, data);
    }

    fn receive(&mut self, bytes: &[u8]) {
        self.decoder.feed(bytes);
        while let Some(mut p) = self.decoder.next_packet().expect("client sent a bad packet") {
            if let Packet::Publish(pb) = &mut p {
                self.wire_payloads.push(pb.payload.clone());
                if let Some(c) = self.compression {
                    pb.payload = c.decompress(&pb.payload, 1 << 22).expect("a payload that does not decompress").into();
                }
            }
            self.on_packet(&p);
            self.received.push(p);
        }
    }

    fn on_packet(&mut self, p: &Packet) {
        if self.silent {
            return;
        }
        match p {
            Packet::Connect(_) => self.send(Packet::ConnAck(ConnAck::new(self.connack, false))),
            Packet::Subscribe(s) if self.auto_suback => {
                let codes = s
                    .filters
                    .iter()
                    .map(|f| {
                        if self.refuse_subscriptions.contains(&f.path) {
                            SubscribeReasonCode::Failure
                        } else {
                            SubscribeReasonCode::Success(QoS::AtLeastOnce)
                        }
                    })
                    .collect();
                self.send(Packet::SubAck(SubAck::new(s.pkid, codes)));
            }
            Packet::PingReq if self.auto_pingresp => self.send(Packet::PingResp),
            Packet::Unsubscribe(u) if self.auto_suback => self.send(Packet::UnsubAck(UnsubAck::new(u.pkid))),
            Packet::Publish(p) => {
                if p.qos == QoS::AtLeastOnce && self.auto_puback {
                    self.send(Packet::PubAck(PubAck::new(p.pkid)));
                }
                if p.topic.ends_with("_reply") {
                    return;
                }
                match self.replies {
                    Replies::Hold => self.held.push(p.clone()),
                    Replies::Ok if p.topic.ends_with("/thing/model/up_raw") => {
                        let t = format!("{}_reply", p.topic);
                        self.publish(&t, &p.payload.clone(), QoS::AtMostOnce);
                    }
                    Replies::Ok => {
                        let id = envelope_id(p);
                        self.reply(&p.topic, &id, 200, "{}");
                    }
                }
            }
            _ => {}
        }
    }

    /// The PUBLISH packets the client sent.
    pub fn publishes(&self) -> Vec<&Publish> {
        self.received.iter().filter_map(|p| if let Packet::Publish(p) = p { Some(p) } else { None }).collect()
    }

    /// Topic filters of every SUBSCRIBE the client sent.
    pub fn subscribed(&self) -> Vec<String> {
        self.received
            .iter()
            .filter_map(|p| if let Packet::Subscribe(s) = p { Some(s) } else { None })
            .flat_map(|s| s.filters.iter().map(|f| f.path.clone()))
            .collect()
    }

    /// Reply topics subscribed now: those of every SUBSCRIBE, less those of every
    /// UNSUBSCRIBE since, on the current connection.
    pub fn reply_subscriptions(&self) -> std::collections::BTreeSet<String> {
        let mut live = std::collections::BTreeSet::new();
        for p in &self.received {
            match p {
                Packet::Connect(_) => live.clear(),
                Packet::Subscribe(s) => live.extend(s.filters.iter().map(|f| f.path.clone())),
                Packet::Unsubscribe(u) => {
                    for t in &u.topics {
                        live.remove(t);
                    }
                }
                _ => {}
            }
        }
        live.retain(|t| t.ends_with("_reply"));
        live
    }

    pub fn count(&self, f: impl Fn(&Packet) -> bool) -> usize {
        self.received.iter().filter(|p| f(p)).count()
    }
}

/// The `id` of a request envelope.
pub fn envelope_id(p: &Publish) -> String {
    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap_or_default();
    v.get("id").and_then(|i| i.as_str()).unwrap_or("").to_owned()
}

/// A client wired to a fake cloud.
pub struct Pair {
    pub client: Client,
    pub cloud: FakeCloud,
    pub now: Now,
    pub start: Instant,
    /// Every event, in order.
    pub events: Vec<Event>,
    /// Whether the transport is up.
    pub link: bool,
    pub dialing: bool,
    pub opens: usize,
    pub closes: usize,
    /// The transport does not report its writes (they stay in its buffer).
    pub hold_writes: bool,
}

pub const T0_UNIX_MS: u64 = 1_600_000_000_000;

pub fn keys(pk: &str, dk: &str) -> DeviceKeys {
    DeviceKeys::new(pk, dk).unwrap()
}

/// A device `pk1234ab/dev_001` with the vectors' device secret, jitter off, and a first
/// connection retried like any other (the tests of a start set it back).
pub fn config() -> Config {
    let mut c = Config::new(keys("pk1234ab", "dev_001"), Credentials::DeviceSecret("DS0123456789abcdefgh".into()));
    c.reconnect_jitter_percent = 0;
    c.retry_first_connect = true;
    c
}

/// The vectors' gateway `gwPK0001/gw_dev_01`.
pub fn gateway_config() -> Config {
    let mut c = Config::new(keys("gwPK0001", "gw_dev_01"), Credentials::DeviceSecret("GwSecret".into()));
    c.reconnect_jitter_percent = 0;
    c.retry_first_connect = true;
    c
}

impl Pair {
    /// A client that has not dialed yet.
    pub fn new(config: Config) -> Pair {
        let start = Now::system().instant;
        let now = Now::new(start, T0_UNIX_MS);
        Pair {
            client: Client::new(config, now).unwrap(),
            cloud: FakeCloud::new(),
            now,
            start,
            events: Vec::new(),
            link: false,
            dialing: false,
            opens: 0,
            closes: 0,
            hold_writes: false,
        }
    }

    /// A client whose session is up.
    pub fn connected(config: Config) -> Pair {
        let mut p = Pair::new(config);
        p.drive();
        assert!(p.client.is_connected(), "not connected: {:?}", p.events);
        p
    }

    /// Runs both sides until neither has anything to do at the current time.
    pub fn drive(&mut self) {
        for _ in 0..10_000 {
            let mut progressed = false;
            loop {
                match self.client.poll_output() {
                    Output::Transmit(b) => {
                        assert!(self.link, "transmit without a transport");
                        self.cloud.receive(&b);
                        if !self.hold_writes {
                            self.client.handle_written(self.now, 1);
                        }
                        progressed = true;
                    }
                    Output::OpenTransport => {
                        self.opens += 1;
                        self.dialing = true;
                        progressed = true;
                    }
                    Output::CloseTransport => {
                        self.closes += 1;
                        self.link = false;
                        self.dialing = false;
                        self.cloud.outbox.clear();
                        self.cloud.decoder = Decoder::new(1 << 22);
                        progressed = true;
                    }
                    Output::Event(e) => {
                        self.events.push(e);
                        progressed = true;
                    }
                    Output::Wait(_) => break,
                }
            }
            if self.dialing {
                self.dialing = false;
                if self.cloud.reachable {
                    self.link = true;
                    self.client.handle_connected(self.now);
                } else {
                    self.client.handle_closed(
                        self.now,
                        CloseCause::Io { kind: std::io::ErrorKind::ConnectionRefused, message: "refused".into() },
                    );
                }
                continue;
            }
            if self.link && !self.cloud.outbox.is_empty() {
                let bytes = self.cloud.outbox.split().freeze();
                for c in bytes.chunks(self.cloud.chunk.max(1)) {
                    self.client.handle_input(self.now, c);
                }
                continue;
            }
            if !progressed {
                return;
            }
        }
        panic!("livelock: the pair never went idle");
    }

    /// Moves time forward by `d`, firing every deadline on the way, in order.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now.instant + d;
        loop {
            self.drive();
            match self.client.poll_timeout() {
                Some(at) if at <= end => {
                    let at = at.max(self.now.instant);
                    self.set_time(at);
                    self.client.handle_timeout(self.now);
                }
                _ => break,
            }
        }
        self.set_time(end);
        self.client.handle_timeout(self.now);
        self.drive();
    }

    fn set_time(&mut self, at: Instant) {
        let ms = u64::try_from((at - self.start).as_millis()).unwrap();
        self.now = Now::new(at, T0_UNIX_MS + ms);
    }

    /// The peer vanishes: the transport closes under the client.
    pub fn cut(&mut self) {
        self.link = false;
        self.cloud.outbox.clear();
        self.cloud.decoder = Decoder::new(1 << 22);
        self.client.handle_closed(self.now, CloseCause::Eof);
        self.drive();
    }

    /// The responses of request `id`, all of them (a correct client has one).
    pub fn responses(&self, id: RequestId) -> Vec<&Result<Reply, RequestError>> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Response { id: i, result } if *i == id => Some(result),
                _ => None,
            })
            .collect()
    }

    /// The one response of `id`.
    pub fn response(&self, id: RequestId) -> Result<Reply, RequestError> {
        let r = self.responses(id);
        assert_eq!(r.len(), 1, "request {id:?} ended {} times: {:?}", r.len(), self.events);
        r[0].clone()
    }

    pub fn ms(&self) -> Duration {
        self.now.instant - self.start
    }

    /// Events of a kind.
    pub fn count_events(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|e| f(e)).count()
    }
}

pub fn json(b: &Bytes) -> serde_json::Value {
    serde_json::from_slice(b).unwrap()
}

pub fn pubs_to<'a>(cloud: &'a FakeCloud, topic: &str) -> Vec<&'a Publish> {
    cloud.publishes().into_iter().filter(|p| p.topic == topic).collect()
}

pub fn queue<T>(v: Vec<T>) -> VecDeque<T> {
    v.into()
}
