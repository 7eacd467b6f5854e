//! The MQTT 3.1.1 packets of [`codec`](crate::codec), as this crate's own types.
//!
//! They mirror the packets of the MQTT crate the codec is built on today, field for field,
//! and are converted at the codec's edge ([`to_wire`], [`from_wire`]): no type of that
//! crate is part of this crate's API, so it can be replaced without breaking users.

use bytes::Bytes;

/// An MQTT quality of service.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    /// At most once.
    AtMostOnce = 0,
    /// At least once (PUBACK).
    AtLeastOnce = 1,
    /// Exactly once (never used by EnOS).
    ExactlyOnce = 2,
}

/// A CONNECT's user name and password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

impl Login {
    /// A login.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Login { username: username.into(), password: password.into() }
    }
}

/// A CONNECT's will.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Its topic.
    pub topic: String,
    /// Its message.
    pub message: Bytes,
    /// Its QoS.
    pub qos: QoS,
    /// Whether it is retained.
    pub retain: bool,
}

/// CONNECT (protocol level 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Keep-alive, in seconds.
    pub keep_alive: u16,
    /// The client id.
    pub client_id: String,
    /// Clean session.
    pub clean_session: bool,
    /// The will.
    pub last_will: Option<LastWill>,
    /// User name and password.
    pub login: Option<Login>,
}

impl Connect {
    /// A CONNECT for `client_id`: clean session, keep-alive 10 s, no login, no will.
    pub fn new(client_id: impl Into<String>) -> Self {
        Connect { keep_alive: 10, client_id: client_id.into(), clean_session: true, last_will: None, login: None }
    }

    /// Sets the user name and password.
    pub fn set_login(&mut self, username: impl Into<String>, password: impl Into<String>) -> &mut Self {
        self.login = Some(Login { username: username.into(), password: password.into() });
        self
    }
}

/// A CONNACK's return code.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectReturnCode {
    /// Accepted.
    Success = 0,
    /// Unacceptable protocol version.
    RefusedProtocolVersion,
    /// Identifier rejected.
    BadClientId,
    /// Server unavailable.
    ServiceUnavailable,
    /// Bad user name or password.
    BadUserNamePassword,
    /// Not authorized.
    NotAuthorized,
}

/// CONNACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Session present.
    pub session_present: bool,
    /// The return code.
    pub code: ConnectReturnCode,
}

impl ConnAck {
    /// A CONNACK.
    pub fn new(code: ConnectReturnCode, session_present: bool) -> Self {
        ConnAck { session_present, code }
    }
}

/// PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Redelivery.
    pub dup: bool,
    /// Its QoS.
    pub qos: QoS,
    /// Retained.
    pub retain: bool,
    /// Its topic.
    pub topic: String,
    /// Its packet id (0 at QoS 0).
    pub pkid: u16,
    /// Its payload.
    pub payload: Bytes,
}

impl Publish {
    /// A PUBLISH of `payload` on `topic` (packet id 0, to be set for QoS 1).
    pub fn new(topic: impl Into<String>, qos: QoS, payload: impl Into<Vec<u8>>) -> Self {
        Publish::from_bytes(topic, qos, Bytes::from(payload.into()))
    }

    /// The same, from a `Bytes` payload (not copied).
    pub fn from_bytes(topic: impl Into<String>, qos: QoS, payload: Bytes) -> Self {
        Publish { dup: false, qos, retain: false, topic: topic.into(), pkid: 0, payload }
    }
}

macro_rules! ack {
    ($(#[$doc:meta] $name:ident),+) => {$(
        #[$doc]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name {
            /// The packet id it answers.
            pub pkid: u16,
        }

        impl $name {
            /// The packet for `pkid`.
            pub fn new(pkid: u16) -> Self {
                $name { pkid }
            }
        }
    )+};
}

ack!(
    /// PUBACK.
    PubAck,
    /// PUBREC.
    PubRec,
    /// PUBREL.
    PubRel,
    /// PUBCOMP.
    PubComp,
    /// UNSUBACK.
    UnsubAck
);

/// One filter of a SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// The topic filter.
    pub path: String,
    /// The QoS asked for.
    pub qos: QoS,
}

impl SubscribeFilter {
    /// A filter.
    pub fn new(path: String, qos: QoS) -> Self {
        SubscribeFilter { path, qos }
    }
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Its packet id.
    pub pkid: u16,
    /// Its filters.
    pub filters: Vec<SubscribeFilter>,
}

impl Subscribe {
    /// A SUBSCRIBE of one filter (packet id 0, to be set).
    pub fn new(path: impl Into<String>, qos: QoS) -> Self {
        Subscribe { pkid: 0, filters: vec![SubscribeFilter::new(path.into(), qos)] }
    }

    /// A SUBSCRIBE with no filter yet.
    pub fn empty_subscribe() -> Self {
        Subscribe { pkid: 0, filters: Vec::new() }
    }

    /// Adds a filter.
    pub fn add(&mut self, path: String, qos: QoS) -> &mut Self {
        self.filters.push(SubscribeFilter::new(path, qos));
        self
    }
}

/// One return code of a SUBACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeReasonCode {
    /// Granted at this QoS.
    Success(QoS),
    /// Refused (0x80).
    Failure,
}

/// SUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// The packet id it answers.
    pub pkid: u16,
    /// One code per filter, in order.
    pub return_codes: Vec<SubscribeReasonCode>,
}

impl SubAck {
    /// A SUBACK.
    pub fn new(pkid: u16, return_codes: Vec<SubscribeReasonCode>) -> Self {
        SubAck { pkid, return_codes }
    }
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Its packet id.
    pub pkid: u16,
    /// The filters to drop.
    pub topics: Vec<String>,
}

impl Unsubscribe {
    /// An UNSUBSCRIBE of one filter (packet id 0, to be set).
    pub fn new(topic: impl Into<String>) -> Self {
        Unsubscribe { pkid: 0, topics: vec![topic.into()] }
    }
}

/// An MQTT 3.1.1 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT.
    Connect(Connect),
    /// CONNACK.
    ConnAck(ConnAck),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK.
    PubAck(PubAck),
    /// PUBREC.
    PubRec(PubRec),
    /// PUBREL.
    PubRel(PubRel),
    /// PUBCOMP.
    PubComp(PubComp),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK.
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK.
    UnsubAck(UnsubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect,
}

// ----- the edge with the MQTT crate underneath -----

use mqttbytes::v4 as w;

fn qos_to(q: QoS) -> mqttbytes::QoS {
    match q {
        QoS::AtMostOnce => mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => mqttbytes::QoS::ExactlyOnce,
    }
}

fn qos_from(q: mqttbytes::QoS) -> QoS {
    match q {
        mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
        mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
        mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn code_to(c: ConnectReturnCode) -> w::ConnectReturnCode {
    match c {
        ConnectReturnCode::Success => w::ConnectReturnCode::Success,
        ConnectReturnCode::RefusedProtocolVersion => w::ConnectReturnCode::RefusedProtocolVersion,
        ConnectReturnCode::BadClientId => w::ConnectReturnCode::BadClientId,
        ConnectReturnCode::ServiceUnavailable => w::ConnectReturnCode::ServiceUnavailable,
        ConnectReturnCode::BadUserNamePassword => w::ConnectReturnCode::BadUserNamePassword,
        ConnectReturnCode::NotAuthorized => w::ConnectReturnCode::NotAuthorized,
    }
}

fn code_from(c: w::ConnectReturnCode) -> ConnectReturnCode {
    match c {
        w::ConnectReturnCode::Success => ConnectReturnCode::Success,
        w::ConnectReturnCode::RefusedProtocolVersion => ConnectReturnCode::RefusedProtocolVersion,
        w::ConnectReturnCode::BadClientId => ConnectReturnCode::BadClientId,
        w::ConnectReturnCode::ServiceUnavailable => ConnectReturnCode::ServiceUnavailable,
        w::ConnectReturnCode::BadUserNamePassword => ConnectReturnCode::BadUserNamePassword,
        w::ConnectReturnCode::NotAuthorized => ConnectReturnCode::NotAuthorized,
    }
}

fn reason_to(r: SubscribeReasonCode) -> w::SubscribeReasonCode {
    match r {
        SubscribeReasonCode::Success(q) => w::SubscribeReasonCode::Success(qos_to(q)),
        SubscribeReasonCode::Failure => w::SubscribeReasonCode::Failure,
    }
}

fn reason_from(r: w::SubscribeReasonCode) -> SubscribeReasonCode {
    match r {
        w::SubscribeReasonCode::Success(q) => SubscribeReasonCode::Success(qos_from(q)),
        w::SubscribeReasonCode::Failure => SubscribeReasonCode::Failure,
    }
}

/// A CONNECT as the MQTT crate writes it.
pub(crate) fn connect_to(c: &Connect) -> w::Connect {
    let mut out = w::Connect::new(c.client_id.clone());
    out.keep_alive = c.keep_alive;
    out.clean_session = c.clean_session;
    out.login = c.login.as_ref().map(|l| w::Login { username: l.username.clone(), password: l.password.clone() });
    out.last_will = c.last_will.as_ref().map(|l| w::LastWill {
        topic: l.topic.clone(),
        message: l.message.clone(),
        qos: qos_to(l.qos),
        retain: l.retain,
    });
    out
}

/// A packet as the MQTT crate writes it (PUBLISH is written by the codec itself).
pub(crate) fn to_wire(p: &Packet) -> w::Packet {
    match p {
        Packet::Connect(c) => w::Packet::Connect(connect_to(c)),
        Packet::ConnAck(a) => w::Packet::ConnAck(w::ConnAck::new(code_to(a.code), a.session_present)),
        Packet::Publish(p) => {
            let mut out = w::Publish::from_bytes(p.topic.clone(), qos_to(p.qos), p.payload.clone());
            (out.dup, out.retain, out.pkid) = (p.dup, p.retain, p.pkid);
            w::Packet::Publish(out)
        }
        Packet::PubAck(a) => w::Packet::PubAck(w::PubAck::new(a.pkid)),
        Packet::PubRec(a) => w::Packet::PubRec(w::PubRec::new(a.pkid)),
        Packet::PubRel(a) => w::Packet::PubRel(w::PubRel::new(a.pkid)),
        Packet::PubComp(a) => w::Packet::PubComp(w::PubComp::new(a.pkid)),
        Packet::Subscribe(s) => {
            let mut out = w::Subscribe::empty_subscribe();
            out.pkid = s.pkid;
            for f in &s.filters {
                out.add(f.path.clone(), qos_to(f.qos));
            }
            w::Packet::Subscribe(out)
        }
        Packet::SubAck(a) => {
            w::Packet::SubAck(w::SubAck::new(a.pkid, a.return_codes.iter().map(|r| reason_to(*r)).collect()))
        }
        Packet::Unsubscribe(u) => w::Packet::Unsubscribe(w::Unsubscribe { pkid: u.pkid, topics: u.topics.clone() }),
        Packet::UnsubAck(a) => w::Packet::UnsubAck(w::UnsubAck::new(a.pkid)),
        Packet::PingReq => w::Packet::PingReq,
        Packet::PingResp => w::Packet::PingResp,
        Packet::Disconnect => w::Packet::Disconnect,
    }
}

/// A packet the MQTT crate read, as this crate's own.
pub(crate) fn from_wire(p: w::Packet) -> Packet {
    match p {
        w::Packet::Connect(c) => Packet::Connect(Connect {
            keep_alive: c.keep_alive,
            client_id: c.client_id,
            clean_session: c.clean_session,
            last_will: c.last_will.map(|l| LastWill {
                topic: l.topic,
                message: l.message,
                qos: qos_from(l.qos),
                retain: l.retain,
            }),
            login: c.login.map(|l| Login { username: l.username, password: l.password }),
        }),
        w::Packet::ConnAck(a) => Packet::ConnAck(ConnAck::new(code_from(a.code), a.session_present)),
        w::Packet::Publish(p) => Packet::Publish(Publish {
            dup: p.dup,
            qos: qos_from(p.qos),
            retain: p.retain,
            topic: p.topic,
            pkid: p.pkid,
            payload: p.payload,
        }),
        w::Packet::PubAck(a) => Packet::PubAck(PubAck::new(a.pkid)),
        w::Packet::PubRec(a) => Packet::PubRec(PubRec::new(a.pkid)),
        w::Packet::PubRel(a) => Packet::PubRel(PubRel::new(a.pkid)),
        w::Packet::PubComp(a) => Packet::PubComp(PubComp::new(a.pkid)),
        w::Packet::Subscribe(s) => Packet::Subscribe(Subscribe {
            pkid: s.pkid,
            filters: s.filters.into_iter().map(|f| SubscribeFilter::new(f.path, qos_from(f.qos))).collect(),
        }),
        w::Packet::SubAck(a) => {
            Packet::SubAck(SubAck::new(a.pkid, a.return_codes.into_iter().map(reason_from).collect()))
        }
        w::Packet::Unsubscribe(u) => Packet::Unsubscribe(Unsubscribe { pkid: u.pkid, topics: u.topics }),
        w::Packet::UnsubAck(a) => Packet::UnsubAck(UnsubAck::new(a.pkid)),
        w::Packet::PingReq => Packet::PingReq,
        w::Packet::PingResp => Packet::PingResp,
        w::Packet::Disconnect => Packet::Disconnect,
    }
}
