//! What the core gives out ([`Output`], [`Event`]) and what a request carries in
//! ([`RequestOptions`]).

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::command::Command;
use crate::envelope::Reply;
use crate::error::{DisconnectCause, RequestError, StartError};
use crate::secret::Secret;
use crate::topic::DeviceKeys;

/// Identifies one request for the life of a `Client`: increasing, never reused. It is
/// neither the MQTT packet id nor the envelope id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub(crate) u64);

impl RequestId {
    /// The id as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// The QoS of an upstream request. EnOS never uses QoS 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Qos {
    /// At most once: no PUBACK, nothing retransmitted. A request without a reply ends
    /// `Delivered` once its bytes were written to the transport (the driver reports it,
    /// `Client::handle_written`): that says they left this device, not that the broker
    /// took them. Bytes still unwritten when the link drops end it `ConnectionLost`.
    AtMostOnce,
    /// At least once (the default): retransmitted with DUP after a reconnect until the
    /// PUBACK comes.
    #[default]
    AtLeastOnce,
}

/// How to send one request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestOptions {
    /// QoS 1 by default.
    pub qos: Qos,
    /// Wait for the cloud's reply (the default). When false, the request ends at its
    /// PUBACK (QoS 1) or once written to the transport (QoS 0), and its reply topic is
    /// not subscribed: the seed's `needReply = false`.
    pub need_reply: bool,
    /// The request's timeout; `Config::request_timeout` when `None`.
    pub timeout: Option<Duration>,
    /// Send on behalf of this logged-in sub-device (rows 1-12 and 20-23): the topic
    /// carries its keys. The seed's `deviceInfo` argument.
    pub target: Option<DeviceKeys>,
}

impl Default for RequestOptions {
    fn default() -> Self {
        RequestOptions { qos: Qos::AtLeastOnce, need_reply: true, timeout: None, target: None }
    }
}

impl RequestOptions {
    /// The defaults: QoS 1, reply wanted, default timeout, the device itself.
    pub fn new() -> Self {
        Self::default()
    }

    /// With this QoS.
    pub fn qos(mut self, qos: Qos) -> Self {
        self.qos = qos;
        self
    }

    /// With or without waiting for the reply.
    pub fn need_reply(mut self, need_reply: bool) -> Self {
        self.need_reply = need_reply;
        self
    }

    /// With this timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// On behalf of this sub-device.
    pub fn target(mut self, sub_device: DeviceKeys) -> Self {
        self.target = Some(sub_device);
        self
    }
}

/// What the driver must do next. Its `Debug` shows the size of a transmission, never
/// its bytes (a CONNECT carries the password).
///
/// Deliberately exhaustive: a driver must act on every variant, so a new one is a
/// breaking change that stops every driver from compiling instead of being dropped by a
/// `_ =>` arm.
pub enum Output {
    /// Write all of these bytes to the transport, in order.
    Transmit(Bytes),
    /// Open a transport (TCP, then TLS if configured); then call
    /// `Client::handle_connected` or `Client::handle_closed`.
    OpenTransport,
    /// Drop the transport (or the dial in progress). The core has already accounted for
    /// it: do not call `handle_closed` for it.
    CloseTransport,
    /// Hand this to the application.
    Event(Event),
    /// Drained: nothing to do before this instant (`None`: nothing until new input).
    Wait(Option<Instant>),
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Transmit(b) => write!(f, "Transmit({} bytes)", b.len()),
            Output::OpenTransport => f.write_str("OpenTransport"),
            Output::CloseTransport => f.write_str("CloseTransport"),
            Output::Event(e) => f.debug_tuple("Event").field(e).finish(),
            Output::Wait(at) => f.debug_tuple("Wait").field(at).finish(),
        }
    }
}

/// Something the application should know.
///
/// Deliberately exhaustive, like [`Output`]: whoever routes events (a driver, the
/// client layer) matches every variant, so a new one cannot be dropped unnoticed.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The first session of a start ([`Client::new`](crate::Client::new), or
    /// [`Client::connect`](crate::Client::connect) after a close) is up and, with dynamic
    /// activation, the device secret issued: what the seed's `connect()` waits for. Or it
    /// never will be, and the client is closed. Comes once per start.
    Started(Result<(), StartError>),
    /// The session is up (the seed's `connect` event). `reconnect` is true for every
    /// session after the first.
    Connected {
        /// Whether an earlier session existed.
        reconnect: bool,
    },
    /// The session ended (the seed's `close` event); `retry_at` is when the core will
    /// dial again, `None` when it will not by itself.
    Disconnected {
        /// Why.
        cause: DisconnectCause,
        /// The reconnect deadline.
        retry_at: Option<Instant>,
    },
    /// Request `id` ended: every id ends exactly once.
    Response {
        /// The request.
        id: RequestId,
        /// Its reply, or why it has none.
        result: Result<Reply, RequestError>,
    },
    /// A command from the cloud for the device or a sub-device. Answer it with
    /// `Client::reply` and a reply built from [`Command::reply_to`].
    Command(Box<Command>),
    /// An inbound message that is neither a reply nor a command (or every message, with
    /// `Config::emit_all_messages`): the seed's `message` event.
    Message {
        /// Its topic.
        topic: String,
        /// Its payload.
        payload: Bytes,
    },
    /// Dynamic activation gave `device` its secret: persist it. For the device itself
    /// the core already uses it for every later CONNECT; for a sub-device, for its
    /// re-logins.
    Activated {
        /// The device activated.
        device: DeviceKeys,
        /// Its new device secret.
        device_secret: Secret,
        /// Its asset id, when sent.
        asset_id: Option<String>,
    },
    /// A problem that did not end the session (the seed's `error` event).
    Error(ClientError),
}

/// A problem the core noticed and survived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A PUBACK or SUBACK for a packet id nothing waits for; ignored.
    #[error("acknowledgement for unknown packet id {0}")]
    UnknownPacketId(u16),
    /// A reply whose id matches no outstanding request on its topic (late, duplicate
    /// or foreign); dropped.
    #[error("reply on {topic} with unknown id {id:?}")]
    UnmatchedReply {
        /// The reply topic.
        topic: String,
        /// The id it carried.
        id: String,
    },
    /// A message on a reply topic that is not a reply envelope; dropped (its request
    /// ends at its timeout).
    #[error("unreadable reply on {topic}: {reason}")]
    BadReply {
        /// The reply topic.
        topic: String,
        /// What is wrong.
        reason: String,
    },
    /// A message of a compressing session whose payload does not decompress, or would
    /// be larger than `Config::max_packet_bytes` once decompressed; dropped (a reply's
    /// request ends at its timeout).
    #[error("undecodable compressed payload on {topic}: {error}")]
    BadCompressedPayload {
        /// Its topic.
        topic: String,
        /// Why.
        error: crate::compress::CompressionError,
    },
    /// A command that could not be handed over: unreadable (dropped, no reply
    /// possible) or with parameters of the wrong shape (answered with code 1102).
    #[error("bad command on {topic}: {reason}")]
    BadCommand {
        /// The command topic.
        topic: String,
        /// What is wrong.
        reason: String,
    },
    /// The broker refused a subscription.
    #[error("subscription to {topic} refused")]
    SubscribeRefused {
        /// The topic filter.
        topic: String,
    },
    /// A command came while `Config::max_queued_commands` others waited for the
    /// application: answered 1102 at once (raw ones dropped), never queued.
    #[error("command on {topic} answered 1102: the command queue is full")]
    CommandQueueFull {
        /// The command topic.
        topic: String,
    },
    /// A command's handler did not answer within `Config::command_timeout`: the core
    /// answered it 1102 (a raw one is dropped) and handed out the next; a later answer
    /// is refused.
    #[error("command on {topic} not answered within {timeout:?}: answered 1102")]
    CommandTimedOut {
        /// The command topic.
        topic: String,
        /// The deadline it had.
        timeout: Duration,
    },
    /// The cloud refused to log these sub-devices in again after a reconnect (it named
    /// them in `failedSubDevices`): they are forgotten. A re-login that could not be sent
    /// also ends here, for the devices it was for.
    #[error("re-login of {} sub-device(s) failed: {reason}", devices.len())]
    ReloginFailed {
        /// The sub-devices concerned.
        devices: Vec<DeviceKeys>,
        /// Why.
        reason: String,
    },
    /// An activation push came for a device that is not activating (the session did
    /// not log in with the product secret, or the sub-device already has its secret):
    /// ignored and not acknowledged.
    #[error("activation push for {device}, which is not activating")]
    UnexpectedActivation {
        /// The device the push named.
        device: DeviceKeys,
    },
    /// The secret store refused a secret issued by dynamic activation: the push is not
    /// acknowledged, so the cloud does not take the device as activated, and the device
    /// keeps its product secret.
    #[error("the issued secret of {device} could not be stored: {reason}")]
    ActivationNotStored {
        /// The device activated.
        device: DeviceKeys,
        /// The store's reason.
        reason: String,
    },
    /// A re-login did not confirm these sub-devices (no answer in time, or an answer that
    /// neither logged them in nor named them as failed): they are kept, and logged in
    /// again at `retry_at` (the reconnect back-off, while connected) or at the next
    /// reconnect, whichever is first.
    #[error("re-login of {} sub-device(s) not confirmed ({reason}); tried again", devices.len())]
    ReloginRetry {
        /// The sub-devices concerned.
        devices: Vec<DeviceKeys>,
        /// Why.
        reason: String,
        /// When the next attempt goes out.
        retry_at: Instant,
    },
    /// A record of the offline store was dropped to make room (`WhenFull::DropOldest`):
    /// its data will not reach the cloud. Its request, if its caller still waits, ends
    /// with `RequestError::Dropped`.
    #[error("offline record {seq} dropped: the offline store is full")]
    OfflineDropped {
        /// The record's number in the store.
        seq: u64,
    },
    /// The cloud refused a record of the offline store that no request waits for (one
    /// stored by an earlier run of the program): it is forgotten.
    #[error("offline record {seq} refused with code {code}: {message}")]
    OfflineRejected {
        /// The record's number in the store.
        seq: u64,
        /// The reply's code.
        code: i32,
        /// The reply's message.
        message: String,
    },
    /// The offline store failed to read or forget a record (it is tried again on the
    /// next connection), or holds a record the core cannot read (it is forgotten).
    #[error("offline store: {reason}")]
    OfflineStore {
        /// What failed.
        reason: String,
    },
}
