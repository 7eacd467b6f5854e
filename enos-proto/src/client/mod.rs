//! [`Client`]: one device's or gateway's whole session, as a state machine.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::codec::{self, ConnectReturnCode, Decoder, Packet, QoS, SubscribeReasonCode};
use crate::command::{self, Command, CommandKind, CommandReply, Inbound, ReplyTo};
use crate::config::{Config, Credentials};
use crate::envelope::{self, Reply};
use crate::error::{
    CloseCause, ConfigError, ConnectRefusal, DisconnectCause, EncodeError, ProtocolError, RequestError, StartError,
    SubmitError,
};
use crate::event::{ClientError, Event, Output, Qos, RequestId, RequestOptions};
use crate::ops::{
    self, BatchLoginResult, Effect, EncodeContext, LoginResult, Operation, SubDeviceBatchLogin, SubDeviceInfo,
};
use crate::pending::{IdHasher, Origin, Pending, Req, Stage};
use crate::secret::Secret;
use crate::sign::{connect_fields, connect_identity, SecureMode};
use crate::time::{Now, Timer, TimerTable};
use crate::topic::{self, DeviceKeys, Scope};

mod gateway;
mod http;
mod inbound;
mod offline;
mod outbound;
mod outbox;
mod session;

pub use offline::OfflineStats;
use outbox::{Outbox, Outgoing};

/// The most filters in one SUBSCRIBE packet.
const MAX_FILTERS_PER_SUBSCRIBE: usize = 64;
/// SUBSCRIBE packets awaiting their SUBACK at once; with `max_inflight` at most 60,000,
/// packet ids never run out.
const MAX_SUBSCRIBING: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No transport; maybe a reconnect deadline armed.
    Idle,
    /// `OpenTransport` emitted, waiting for `handle_connected` or `handle_closed`.
    Dialing,
    /// The transport is up and the TLS handshake is running (the CONNECT follows it).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    Securing,
    /// CONNECT sent, waiting for CONNACK.
    AwaitConnack,
    /// CONNACK accepted.
    Connected,
    /// `close` was called: terminal.
    Closed,
}

#[derive(Debug)]
struct InFlight {
    seq: u64,
    out: Outgoing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubState {
    None,
    Pending,
    Subscribed,
}

#[derive(Debug)]
struct TopicState {
    request_topic: Arc<str>,
    sub: SubState,
    /// Raw requests on the wire awaiting a reply on this topic, oldest first.
    raw_fifo: VecDeque<RequestId>,
    /// When a request last used it (a count of requests), for the eviction of idle
    /// subscriptions.
    used_at: std::cell::Cell<u64>,
}

impl TopicState {
    fn new(request_topic: Arc<str>) -> Self {
        TopicState { request_topic, sub: SubState::None, raw_fifo: VecDeque::new(), used_at: Default::default() }
    }
}

#[derive(Debug)]
enum SubPurpose {
    Replies(Vec<Arc<str>>),
    Commands,
    /// An UNSUBSCRIBE of idle reply topics.
    Unsubscribe,
}

/// A point in time `d` after `now`, far in the future when that overflows.
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Capacity of the request body buffer past which it is not kept for the next request
/// (one large payload does not hold memory for the session's life).
const BODY_KEEP: usize = 16 * 1024;
/// Size of the buffers request payloads are split off (larger payloads get their own).
const PAYLOAD_CHUNK: usize = 1024;

/// One device's or gateway's EnOS session: MQTT, signing, requests, commands, timers.
///
/// `Client` is a pure state machine: no sockets, no clocks, no threads. A driver feeds it
/// and drains it; its methods fall in four groups.
///
/// * **Inputs from the transport and the clock** (`handle_*`):
///   [`handle_connected`](Client::handle_connected),
///   [`handle_input`](Client::handle_input), [`handle_closed`](Client::handle_closed),
///   [`handle_timeout`](Client::handle_timeout).
/// * **Commands from the application**: [`request`](Client::request),
///   [`reply`](Client::reply), [`connect`](Client::connect), [`close`](Client::close).
/// * **Output** (`poll_*`): [`poll_output`](Client::poll_output) until it returns
///   [`Output::Wait`], then sleep until that instant or the next input;
///   [`poll_timeout`](Client::poll_timeout) peeks at the next deadline.
/// * **Getters**: [`is_connected`](Client::is_connected),
///   [`has_reconnected`](Client::has_reconnected),
///   [`logged_in_sub_devices`](Client::logged_in_sub_devices), ...
///
/// Any call order is correct: outputs queue up until polled. Network trouble is never an
/// error of a `handle_*` call: the core ends the session, emits
/// [`Event::Disconnected`] and asks for [`Output::CloseTransport`], then reconnects on
/// its back-off deadline.
///
/// Every [`RequestId`] returned by [`request`](Client::request) ends in exactly one
/// [`Event::Response`]: the reply, the acknowledgement when no reply is wanted, or a
/// typed error (timeout, a refused subscription, [`close`](Client::close)).
///
/// Its `Debug` output is a summary: it never shows buffered bytes (a CONNECT password,
/// login signatures) or secrets.
pub struct Client {
    config: Config,
    credentials: Credentials,
    state: State,
    timers: TimerTable,
    decoder: Decoder,
    out: BytesMut,
    /// The HTTP side of a client in HTTP mode.
    http: Option<Box<http::HttpState>>,
    /// A compressing session's encoder, and its scratch space: the payload being
    /// compressed.
    encoder: Option<crate::compress::Encoder>,
    compressed: Vec<u8>,
    ctl: VecDeque<Output>,
    events: VecDeque<Event>,
    now: Instant,
    last_unix_ms: u64,
    last_sent: Instant,
    last_received: Instant,

    /// The first session of this start has not come up yet (`Event::Started` is due).
    starting: bool,
    ever_connected: bool,
    reconnected: bool,
    /// Failed or short-lived sessions in a row: the exponent of the back-off.
    failures: u32,
    /// Transmit outputs handed to the driver on this transport, and how many of them the
    /// driver reported written (`handle_written`).
    transmits: u64,
    written: u64,
    /// QoS 0 requests without a reply, each with the transmit that carries its last byte:
    /// delivered once that transmit is written.
    unwritten: VecDeque<(u64, RequestId)>,
    /// When the current session's CONNACK came.
    connected_at: Option<Instant>,
    /// This session logged in with the product secret: an activation push is expected.
    activation_open: bool,
    rng: u64,

    next_pkid: u16,
    inflight: HashMap<u16, InFlight, BuildHasherDefault<IdHasher>>,
    inflight_seq: u64,
    subscribing: HashMap<u16, SubPurpose, BuildHasherDefault<IdHasher>>,
    to_subscribe: Vec<Arc<str>>,

    pending: Pending,
    next_envelope: u32,
    by_envelope: HashMap<u32, RequestId, BuildHasherDefault<IdHasher>>,
    topics: HashMap<Arc<str>, TopicState, BuildHasherDefault<IdHasher>>,
    /// Reply topics subscribed on this connection.
    reply_subs: usize,
    /// Requests made, the clock of `TopicState::used_at`.
    uses: u64,
    /// Publishes waiting to be sent, with their counts.
    outbox: Outbox,
    /// Store-and-forward's state.
    offline: offline::Offline,

    /// Commands handed to the application and not answered yet, by ticket.
    /// Commands handed out and not answered, by ticket, with where their answer goes.
    running_commands: HashMap<u64, ReplyTo, BuildHasherDefault<IdHasher>>,
    /// Their deadlines in the order they were handed out (entries of answered ones are
    /// skipped, and swept as the request deadlines are).
    command_deadlines: VecDeque<(Instant, u64)>,
    /// Commands waiting for one of those to be answered, oldest first.
    held_commands: VecDeque<Command>,
    next_ticket: u64,

    logged_in: BTreeMap<DeviceKeys, SubDeviceInfo>,
    /// The re-login after a reconnect (its publish waits first in the outbox).
    relogin: Option<RequestId>,
    /// The sub-devices the re-login in flight (the one after a reconnect, or a retry)
    /// asks for.
    relogin_asked: Vec<DeviceKeys>,
    /// A retry of a re-login that did not confirm every sub-device: it does not hold the
    /// other traffic back, as the first one after a reconnect does.
    relogin_retry: Option<RequestId>,
    /// The sub-devices still unconfirmed, and how many attempts failed in a row.
    unconfirmed: Vec<DeviceKeys>,
    relogin_failures: u32,

    /// The TLS session of the transport, when `Config::tls` is set.
    #[cfg(feature = "tls")]
    tls: Option<Box<crate::tls::TlsLayer>>,
    /// Ciphertext waiting to be handed out (TLS only).
    #[cfg(feature = "tls")]
    wire: BytesMut,
    /// Plaintext decrypted from the last input (TLS only), kept for the next.
    #[cfg(feature = "tls")]
    plain: Vec<u8>,

    scratch: String,
    method: String,
    /// The JSON body of the request being encoded, kept between requests.
    body: Vec<u8>,
    /// Where request payloads live until their PUBACK: each is split off this buffer, so
    /// that once the payloads before it are dropped the same memory serves the next ones
    /// (no allocation per request; a few per buffer when many are in flight).
    payloads: BytesMut,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("device", &self.config.device)
            .field("state", &self.state)
            .field("reconnected", &self.reconnected)
            .field("outstanding", &self.pending.len())
            .field("queued", &self.outbox.len())
            .field("queued_bytes", &self.outbox.bytes())
            .field("inflight", &self.inflight.len())
            .field("logged_in_sub_devices", &self.logged_in.len())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `config`. Its first output is [`Output::OpenTransport`].
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field that cannot work.
    pub fn new(config: Config, now: Now) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut c = Client {
            credentials: config.credentials.clone(),
            state: State::Idle,
            timers: TimerTable::default(),
            decoder: Decoder::new(config.max_packet_bytes),
            out: BytesMut::new(),
            http: config.http.as_ref().map(|_| Box::new(http::HttpState::new())),
            encoder: config.compression.map(crate::compress::Encoder::new),
            compressed: Vec::new(),
            ctl: VecDeque::new(),
            events: VecDeque::new(),
            now: now.instant,
            last_unix_ms: now.unix_ms,
            last_sent: now.instant,
            last_received: now.instant,
            starting: true,
            ever_connected: false,
            reconnected: false,
            failures: 0,
            transmits: 0,
            written: 0,
            unwritten: VecDeque::new(),
            connected_at: None,
            activation_open: false,
            rng: config.jitter_seed | 1,
            next_pkid: 1,
            inflight: HashMap::default(),
            inflight_seq: 0,
            subscribing: HashMap::default(),
            to_subscribe: Vec::new(),
            pending: Pending::default(),
            next_envelope: 1,
            by_envelope: HashMap::default(),
            topics: HashMap::default(),
            reply_subs: 0,
            uses: 0,
            outbox: Outbox::default(),
            offline: offline::Offline::default(),
            running_commands: HashMap::default(),
            command_deadlines: VecDeque::new(),
            held_commands: VecDeque::new(),
            next_ticket: 1,
            logged_in: BTreeMap::new(),
            relogin: None,
            relogin_asked: Vec::new(),
            relogin_retry: None,
            unconfirmed: Vec::new(),
            relogin_failures: 0,
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "tls")]
            wire: BytesMut::new(),
            #[cfg(feature = "tls")]
            plain: Vec::new(),
            scratch: String::new(),
            method: String::new(),
            body: Vec::new(),
            payloads: BytesMut::new(),
            config,
        };
        c.open_transport();
        Ok(c)
    }

    // ----- getters -----

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The device's own keys.
    pub fn device(&self) -> &DeviceKeys {
        &self.config.device
    }

    /// Whether the session is up (CONNACK accepted and not lost since): the seed's
    /// `connected`.
    pub fn is_connected(&self) -> bool {
        // Over HTTP the session outlives a connection closed between exchanges.
        let http_up = self.state == State::Idle
            && self.connected_at.is_some()
            && self.http.as_ref().is_some_and(|h| h.logged_in());
        self.state == State::Connected || http_up
    }

    /// Whether the session has come back at least once after a loss: the seed's
    /// `reconnected`.
    pub fn has_reconnected(&self) -> bool {
        self.reconnected
    }

    /// Whether [`close`](Client::close) was called.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The credentials the next CONNECT will use (mode 2 after a dynamic activation).
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Sub-devices logged in through this gateway, restored after each reconnect.
    pub fn logged_in_sub_devices(&self) -> impl Iterator<Item = &DeviceKeys> {
        self.logged_in.keys()
    }

    /// Requests not yet ended.
    pub fn outstanding_requests(&self) -> usize {
        self.pending.len()
    }

    /// Publishes waiting to be sent (offline, behind the window, or for a subscription).
    pub fn queued_requests(&self) -> usize {
        self.outbox.len()
    }

    /// QoS 1 publishes awaiting their PUBACK.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    // ----- inputs -----

    /// The transport asked for by [`Output::OpenTransport`] is open (TCP connected): the
    /// CONNECT goes out, signed at `now.unix_ms`. With [`Config::tls`] the TLS handshake
    /// goes out first, and the CONNECT once it has completed.
    pub fn handle_connected(&mut self, now: Now) {
        self.tick(now);
        if self.state != State::Dialing {
            return;
        }
        self.decoder.reset();
        self.out.clear();
        #[cfg(feature = "tls")]
        if let Some(target) = &self.config.tls {
            match crate::tls::TlsLayer::client(target.config.clone(), &target.server_name) {
                Ok(layer) => {
                    self.tls = Some(Box::new(layer));
                    self.state = State::Securing;
                }
                Err(e) => self.lost(DisconnectCause::Transport(CloseCause::Tls(e.to_string()))),
            }
            return;
        }
        self.send_connect();
    }

    /// The oldest `transmits` [`Output::Transmit`] buffers not yet reported have been
    /// written to the transport whole, in the order they were handed out. A driver
    /// reports them as its writes complete: a QoS 0 request without a reply ends
    /// [`Reply::Delivered`] only then, and one whose bytes were still unwritten when the
    /// transport closed ends [`RequestError::ConnectionLost`]. Reports for a transport
    /// that has closed must not be made. Whether a request ended (its response waits in
    /// [`poll_output`](Client::poll_output)): without one there is nothing new to drain.
    pub fn handle_written(&mut self, now: Now, transmits: u64) -> bool {
        self.tick(now);
        self.written = self.written.saturating_add(transmits).min(self.transmits);
        let mut ended = false;
        while let Some(&(seq, id)) = self.unwritten.front() {
            if seq > self.written {
                break;
            }
            self.unwritten.pop_front();
            if self.pending.get(id).is_some() {
                self.finish(id, Ok(Reply::Delivered));
                ended = true;
            }
        }
        ended
    }

    /// Bytes read from the transport, in any chunking (ciphertext with [`Config::tls`]).
    pub fn handle_input(&mut self, now: Now, bytes: &[u8]) {
        self.tick(now);
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return self.handle_ciphertext(bytes);
        }
        self.handle_plaintext(bytes);
    }

    /// Ciphertext in: decrypted, the handshake moved on (the CONNECT sent once it is
    /// done), the plaintext read as MQTT. A TLS failure ends the session, its alert for
    /// the peer handed out first.
    #[cfg(feature = "tls")]
    fn handle_ciphertext(&mut self, bytes: &[u8]) {
        let Some(tls) = self.tls.as_mut() else { return };
        let mut plain = std::mem::take(&mut self.plain);
        plain.clear();
        let read = tls.read_ciphertext(bytes, &mut plain);
        let (handshaking, peer_closed) = (tls.is_handshaking(), tls.peer_has_closed());
        match read {
            Err(e) => self.lost(DisconnectCause::Transport(CloseCause::Tls(e.to_string()))),
            Ok(()) => {
                if self.state == State::Securing && !handshaking {
                    self.send_connect();
                }
                if !plain.is_empty() {
                    self.handle_plaintext(&plain);
                }
                if peer_closed && matches!(self.state, State::Securing | State::AwaitConnack | State::Connected) {
                    self.lost(DisconnectCause::Transport(CloseCause::Eof));
                }
            }
        }
        // A large read does not hold its buffer for the session's life.
        if plain.capacity() <= BODY_KEEP * 4 {
            self.plain = plain;
        }
    }

    fn handle_plaintext(&mut self, bytes: &[u8]) {
        if !matches!(self.state, State::AwaitConnack | State::Connected) {
            return;
        }
        if self.http.is_some() {
            return self.http_input(bytes);
        }
        self.decoder.feed(bytes);
        loop {
            if !matches!(self.state, State::AwaitConnack | State::Connected) {
                return;
            }
            match self.decoder.next_packet() {
                // Each packet's consequences go out before the next is read, so the
                // chunking of the input never changes the output.
                Ok(Some(packet)) => {
                    self.last_received = self.now;
                    self.arm_keep_alive();
                    self.on_packet(packet);
                    self.flush();
                }
                Ok(None) => break,
                Err(e) => {
                    self.lost(DisconnectCause::Decode(e));
                    return;
                }
            }
        }
    }

    /// The transport ended (EOF, error, or a failed dial).
    pub fn handle_closed(&mut self, now: Now, cause: CloseCause) {
        self.tick(now);
        if matches!(self.state, State::Dialing | State::Securing | State::AwaitConnack | State::Connected) {
            if self.http.is_some() {
                self.http_closed(cause);
            } else {
                self.lost(DisconnectCause::Transport(cause));
            }
        }
    }

    /// Time has passed: fire what is due. Early or repeated calls do nothing.
    pub fn handle_timeout(&mut self, now: Now) {
        self.tick(now);
        let now = self.now;
        let due: Vec<Timer> = self.timers.expired(now).collect();
        for timer in due {
            match timer {
                Timer::Connect => {
                    if matches!(self.state, State::Dialing | State::Securing | State::AwaitConnack) {
                        self.lost(DisconnectCause::ConnectTimeout(self.config.connect_timeout));
                    } else if self.state == State::Connected && self.starting {
                        // Up, but the activation did not come in time.
                        let d = self.config.connect_timeout;
                        self.end(DisconnectCause::ConnectTimeout(d), Some(StartError::TimedOut(d)));
                    }
                }
                Timer::KeepAlive => {
                    if self.state == State::Connected && self.timers.get(Timer::PingResponse).is_none() {
                        let _ = codec::encode_packet(&mut self.out, &Packet::PingReq);
                        self.timers.set(Timer::PingResponse, later(now, self.config.ping_timeout));
                        self.sent();
                    }
                }
                Timer::PingResponse => {
                    if self.state == State::Connected {
                        self.lost(DisconnectCause::PingTimeout(self.config.ping_timeout));
                    }
                }
                Timer::Reconnect => {
                    if self.state == State::Idle {
                        self.open_transport();
                    }
                }
                Timer::Relogin => self.relogin_again(),
                Timer::Suback => {
                    if self.state == State::Connected && !self.subscribing.is_empty() {
                        self.lost(DisconnectCause::SubscribeTimeout(self.config.ping_timeout));
                    }
                }
            }
        }
        while let Some(id) = self.pending.pop_expired(now) {
            // A post moved to the offline store waits for its resume, with no deadline.
            if let Some(req) = self.pending.get(id).filter(|r| r.stage != Stage::Stored) {
                let timeout = req.timeout;
                self.finish(id, Err(RequestError::TimedOut(timeout)));
            }
        }
        self.expire_commands();
        self.http_abandon_stale();
        self.flush();
    }

    fn tick(&mut self, now: Now) {
        // Monotonic time never runs backwards here, whatever the caller's clock did.
        if now.instant > self.now {
            self.now = now.instant;
        }
        self.last_unix_ms = now.unix_ms;
    }

    // ----- output -----

    /// The next thing for the driver to do. Call it until it returns [`Output::Wait`].
    #[must_use]
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.ctl.pop_front() {
            return o;
        }
        if let Some(bytes) = self.take_wire() {
            return Output::Transmit(bytes);
        }
        // Sealing can end the session (a TLS session that no longer sends).
        if let Some(o) = self.ctl.pop_front() {
            return o;
        }
        if let Some(e) = self.events.pop_front() {
            return Output::Event(e);
        }
        self.pending.prune();
        Output::Wait(self.poll_timeout())
    }

    /// The next deadline, without draining anything.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        // A command deadline at the front may belong to one answered since: an early
        // wake-up is harmless.
        let command = self.command_deadlines.front().map(|(at, _)| *at);
        [self.timers.next(), self.pending.next_deadline(), command].into_iter().flatten().min()
    }

    fn push_ctl(&mut self, o: Output) {
        if let Some(bytes) = self.take_wire() {
            self.ctl.push_back(Output::Transmit(bytes));
        }
        self.ctl.push_back(o);
    }

    /// The bytes for the transport: what was encoded, sealed by TLS when it is on (with
    /// the handshake's and alerts' records).
    fn take_wire(&mut self) -> Option<Bytes> {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_mut() {
            if !self.out.is_empty() {
                let sealed = tls.write_plaintext(&self.out);
                self.out.clear();
                if let Err(e) = sealed {
                    self.lost(DisconnectCause::Transport(CloseCause::Tls(e.to_string())));
                    return None;
                }
            }
            tls.take_ciphertext_into(&mut self.wire);
            let bytes = (!self.wire.is_empty()).then(|| self.wire.split().freeze());
            self.transmits += u64::from(bytes.is_some());
            return bytes;
        }
        let bytes = (!self.out.is_empty()).then(|| self.out.split().freeze());
        self.transmits += u64::from(bytes.is_some());
        bytes
    }
}

/// The topic a command came on: its reply topic without `_reply`.
fn command_topic(reply_to: &ReplyTo) -> String {
    let t = reply_to.topic();
    t.strip_suffix("_reply").unwrap_or(t).to_owned()
}

/// Messages whose payload holds a secret the cloud issues (activation, the replies of
/// logins and registrations): never copied into `Event::Message`.
fn carries_secret(topic: &str) -> bool {
    ["/thing/activate/info", "/combine/login_reply", "/combine/login/batch_reply", "/thing/device/register_reply"]
        .iter()
        .any(|t| topic.ends_with(t))
}

/// The filters that carry a device's commands, for brokers that need a subscription.
/// They never match the device's own requests; replies the device sends to commands do
/// match `thing/service/#` and are recognised and dropped by their `_reply` suffix.
fn command_filters(keys: &DeviceKeys, own: bool) -> Vec<String> {
    let mut v: Vec<String> = [
        "thing/service/#",
        "thing/model/down_raw",
        "ota/device/upgrade",
        "thing/enable",
        "thing/disable",
        "thing/delete",
    ]
    .iter()
    .map(|p| topic::topic(Scope::Sys, keys, p))
    .collect();
    if own {
        for p in ["combine/enable", "combine/disable", "combine/delete", "thing/activate/info"] {
            v.push(topic::topic(Scope::ExtSession, keys, p));
        }
    }
    v
}
