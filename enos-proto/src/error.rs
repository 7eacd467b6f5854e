//! Every public error of the crate, layered by who is at fault: bytes that do not parse
//! ([`DecodeError`]), packets that parse but break the protocol ([`ProtocolError`]), a
//! refusal by the cloud ([`ConnectRefusal`]), the transport ([`CloseCause`]), a request's
//! end ([`RequestError`]), and local misuse ([`SubmitError`], [`EncodeError`],
//! [`ConfigError`]). All are `Clone + PartialEq` so tests can compare them, and none
//! carries a secret.

use std::time::Duration;

/// The kind of an MQTT control packet, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PacketKind {
    /// CONNECT
    Connect,
    /// CONNACK
    ConnAck,
    /// PUBLISH
    Publish,
    /// PUBACK
    PubAck,
    /// PUBREC
    PubRec,
    /// PUBREL
    PubRel,
    /// PUBCOMP
    PubComp,
    /// SUBSCRIBE
    Subscribe,
    /// SUBACK
    SubAck,
    /// UNSUBSCRIBE
    Unsubscribe,
    /// UNSUBACK
    UnsubAck,
    /// PINGREQ
    PingReq,
    /// PINGRESP
    PingResp,
    /// DISCONNECT
    Disconnect,
}

impl std::fmt::Display for PacketKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            PacketKind::Connect => "CONNECT",
            PacketKind::ConnAck => "CONNACK",
            PacketKind::Publish => "PUBLISH",
            PacketKind::PubAck => "PUBACK",
            PacketKind::PubRec => "PUBREC",
            PacketKind::PubRel => "PUBREL",
            PacketKind::PubComp => "PUBCOMP",
            PacketKind::Subscribe => "SUBSCRIBE",
            PacketKind::SubAck => "SUBACK",
            PacketKind::Unsubscribe => "UNSUBSCRIBE",
            PacketKind::UnsubAck => "UNSUBACK",
            PacketKind::PingReq => "PINGREQ",
            PacketKind::PingResp => "PINGRESP",
            PacketKind::Disconnect => "DISCONNECT",
        };
        f.write_str(s)
    }
}

/// Bytes from the network that are not a valid MQTT 3.1.1 packet. After one, the
/// connection cannot be trusted and is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The packet announces a remaining length above the configured limit.
    #[error("incoming packet of {size} bytes exceeds the limit of {max} bytes")]
    PacketTooLarge {
        /// The announced remaining length.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A topic or string field is not UTF-8.
    #[error("string field is not valid UTF-8")]
    InvalidUtf8,
    /// The packet does not follow the MQTT 3.1.1 grammar.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
}

/// A packet that parses but has no place in the protocol at this point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A packet a server never sends to a client, or one that came at the wrong time.
    #[error("unexpected {0} packet")]
    UnexpectedPacket(PacketKind),
    /// A PUBLISH with QoS 2, which EnOS never uses.
    #[error("publish with QoS 2 is not supported")]
    QoS2Publish,
}

/// Why the cloud refused a CONNECT (the CONNACK return code, MQTT 3.1.1 §3.2.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectRefusal {
    /// Code 1: the protocol level is not accepted.
    #[error("connection refused: unacceptable protocol version (code 1)")]
    UnacceptableProtocolVersion,
    /// Code 2: the client id was rejected (grammar or length).
    #[error("connection refused: identifier rejected (code 2)")]
    IdentifierRejected,
    /// Code 3: the server is unavailable.
    #[error("connection refused: server unavailable (code 3)")]
    ServerUnavailable,
    /// Code 4: malformed user name or password.
    #[error("connection refused: bad user name or password (code 4)")]
    BadUserNameOrPassword,
    /// Code 5: authentication failed (wrong signature, unknown or disabled device, ...).
    #[error("connection refused: not authorized (code 5)")]
    NotAuthorized,
}

impl ConnectRefusal {
    /// The CONNACK return code.
    pub fn code(self) -> u8 {
        match self {
            ConnectRefusal::UnacceptableProtocolVersion => 1,
            ConnectRefusal::IdentifierRejected => 2,
            ConnectRefusal::ServerUnavailable => 3,
            ConnectRefusal::BadUserNameOrPassword => 4,
            ConnectRefusal::NotAuthorized => 5,
        }
    }

    /// Whether this refusal is about credentials (codes 4 and 5, and 2 for a client id
    /// the cloud will never accept): retrying soon with the same credentials cannot help,
    /// so the core waits the longest back-off before it tries again.
    pub fn is_authentication(self) -> bool {
        matches!(
            self,
            ConnectRefusal::BadUserNameOrPassword | ConnectRefusal::NotAuthorized | ConnectRefusal::IdentifierRejected
        )
    }
}

/// How the driver's transport ended (the argument of `Client::handle_closed`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseCause {
    /// The peer closed the stream.
    #[error("connection closed by peer")]
    Eof,
    /// A socket error, or a failure to dial.
    #[error("transport error ({kind:?}): {message}")]
    Io {
        /// The I/O error kind.
        kind: std::io::ErrorKind,
        /// The error's text.
        message: String,
    },
    /// The TLS layer failed (handshake, certificate, alert).
    #[error("tls error: {0}")]
    Tls(String),
}

impl From<std::io::Error> for CloseCause {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            CloseCause::Eof
        } else {
            CloseCause::Io { kind: e.kind(), message: e.to_string() }
        }
    }
}

/// Why a session ended (`Event::Disconnected`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DisconnectCause {
    /// The application called `close`.
    #[error("closed by the application")]
    Closed,
    /// The transport ended or could not be opened.
    #[error(transparent)]
    Transport(CloseCause),
    /// The cloud refused the CONNECT.
    #[error(transparent)]
    Refused(ConnectRefusal),
    /// No transport or no CONNACK within the connect timeout.
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    /// No PINGRESP within the ping timeout: the peer is gone.
    #[error("no ping response within {0:?}")]
    PingTimeout(Duration),
    /// A SUBSCRIBE was not acknowledged within the ping timeout: the broker is not
    /// answering (requests behind that subscription could never go out).
    #[error("no subscribe acknowledgement within {0:?}")]
    SubscribeTimeout(Duration),
    /// The peer sent bytes that do not parse.
    #[error(transparent)]
    Decode(DecodeError),
    /// The peer broke the protocol.
    #[error(transparent)]
    Protocol(ProtocolError),
    /// An HTTP response that cannot be read (HTTP transport).
    #[error(transparent)]
    Http(crate::http::HttpError),
}

/// Why the first session of a start never came up (`Event::Started`). The client is
/// closed after it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The first attempt failed (refused, unreachable, TLS) and `Config::retry_first_connect`
    /// is off.
    #[error("connection failed: {0}")]
    Failed(DisconnectCause),
    /// No session, or with dynamic activation no device secret, within
    /// `Config::connect_timeout` of the start.
    #[error("no connection within {0:?}")]
    TimedOut(Duration),
    /// `close` came first.
    #[error("client closed")]
    Closed,
}

/// How a request ended, when it did not end with a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No reply (or no PUBACK) within the request's timeout.
    #[error("no reply within {0:?}")]
    TimedOut(Duration),
    /// The cloud answered with a code other than 200.
    #[error("cloud refused with code {code}: {message}")]
    Rejected {
        /// The reply's `code`.
        code: i32,
        /// The reply's `message` (empty when it had none).
        message: String,
    },
    /// The reply came but its `data` does not have the expected shape.
    #[error("reply did not parse: {0}")]
    BadReply(String),
    /// The broker refused the subscription to the reply topic, so no reply can arrive.
    #[error("subscription to the reply topic {0} was refused")]
    SubscribeRefused(String),
    /// The client was closed before the request ended.
    #[error("client closed")]
    Closed,
    /// The HTTP transport's response had this status, not 2xx (its body was not a reply).
    #[error("HTTP status {0}")]
    HttpStatus(u16),
    /// The connection closed after the request went out and before its reply, and that
    /// reply could not be told from a later request's on the next connection (raw
    /// replies carry no id, spec §7): whether the cloud took it is not known.
    #[error("connection lost before the reply, which carries no id to match it later")]
    ConnectionLost,
    /// The post was kept in the offline store, which dropped it to make room for newer
    /// ones (`WhenFull::DropOldest`): it was never sent.
    #[error("dropped from the full offline store before it was sent")]
    Dropped,
}

/// A request or reply the core refused to take (nothing was sent or queued).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The queue of requests waiting for the connection is full (count or bytes).
    #[error("request queue full ({queued} queued, {bytes} bytes)")]
    QueueFull {
        /// Requests waiting.
        queued: usize,
        /// Payload bytes waiting.
        bytes: usize,
    },
    /// Too many requests are outstanding (sent or queued, not yet ended).
    #[error("too many outstanding requests (limit {0})")]
    TooManyRequests(usize),
    /// The operation cannot target a sub-device (rows 13-19 always use the gateway's keys).
    #[error("this operation cannot be sent on behalf of a sub-device")]
    InvalidTarget,
    /// The client was closed.
    #[error("client closed")]
    Closed,
    /// The payload or topic cannot be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The command was already answered: by an earlier reply, or by the core with 1102
    /// when its handler did not answer within `Config::command_timeout`. Nothing is sent.
    #[error("the command was already answered")]
    AlreadyAnswered,
    /// An operation that exists over the HTTP transport only (files), on a client that
    /// speaks MQTT.
    #[error("this operation needs the HTTP transport (an http:// or https:// broker URL)")]
    NeedsHttp,
    /// The session is down and the offline store is full (`WhenFull::RejectNew`).
    #[error("offline store full ({records} records, {bytes} bytes)")]
    OfflineStoreFull {
        /// Records kept.
        records: usize,
        /// Their bytes.
        bytes: u64,
    },
    /// The session is down and the offline store could not keep the post.
    #[error("offline store failed: {0}")]
    OfflineStore(String),
}

/// A packet or payload that cannot be put on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// An MQTT string field is longer than 65,535 bytes.
    #[error("{field} is {len} bytes long, more than MQTT's 65535")]
    StringTooLong {
        /// Which field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The payload is above the configured maximum (EnOS accepts 512 KiB).
    #[error("payload of {size} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// The payload size.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The packet is above MQTT's maximum remaining length (268,435,455 bytes).
    #[error("packet too large for MQTT")]
    PacketTooLarge,
    /// A QoS 1 packet needs a packet id other than 0.
    #[error("packet id 0 is not allowed")]
    PacketIdZero,
    /// QoS 2, which EnOS never uses.
    #[error("QoS 2 is not supported")]
    QoS2,
    /// A field that EnOS would refuse: a client id over 64 characters or with `|`, or an
    /// identifier outside `[A-Za-z0-9_]+`.
    #[error("invalid {what}: {value:?}")]
    Invalid {
        /// Which field.
        what: &'static str,
        /// Its value.
        value: String,
    },
    /// The parameters could not be serialized to JSON.
    #[error("parameters do not serialize to JSON: {0}")]
    Json(String),
}

/// A configuration value that cannot work: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ConfigError {
    /// The field's name.
    pub field: &'static str,
    /// Why it is invalid.
    pub reason: String,
}

impl From<ConfigError> for std::io::Error {
    fn from(e: ConfigError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
    }
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        ConfigError { field, reason: reason.into() }
    }
}
