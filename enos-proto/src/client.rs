//! [`Client`]: one device's or gateway's whole session, as a state machine.

use std::collections::{BTreeMap, HashMap, VecDeque};
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
use crate::pending::{IdHasher, Pending, Req, Stage};
use crate::secret::Secret;
use crate::sign::{connect_fields, connect_identity, SecureMode};
use crate::time::{Now, Timer, TimerTable};
use crate::topic::{self, DeviceKeys, Scope};

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

/// A publish waiting to go out, in flight, or kept for retransmission.
#[derive(Debug)]
struct Outgoing {
    /// The request it carries; `None` for a command reply.
    req: Option<RequestId>,
    topic: Arc<str>,
    payload: Bytes,
    qos: QoS,
    dup: bool,
    /// The reply topic that must be subscribed before this goes out.
    needs: Option<Arc<str>>,
    /// A command reply is worthless after this (the cloud stopped waiting).
    expires: Option<Instant>,
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
    /// Requests waiting for the subscription, in order.
    waiting: VecDeque<Outgoing>,
}

#[derive(Debug)]
enum SubPurpose {
    Replies(Vec<Arc<str>>),
    Commands,
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
    ready: VecDeque<Outgoing>,
    /// Live publishes waiting (in `ready` or a topic's `waiting`), and their bytes.
    queued: usize,
    queued_bytes: usize,
    /// Entries in the queues whose request has ended; compacted when they pile up.
    dead: usize,

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
    /// The re-login after a reconnect: its request, and its publish until sent.
    relogin: Option<RequestId>,
    relogin_out: Option<Outgoing>,
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
            .field("queued", &self.queued)
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
            ready: VecDeque::new(),
            queued: 0,
            queued_bytes: 0,
            dead: 0,
            running_commands: HashMap::default(),
            command_deadlines: VecDeque::new(),
            held_commands: VecDeque::new(),
            next_ticket: 1,
            logged_in: BTreeMap::new(),
            relogin: None,
            relogin_out: None,
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
        self.state == State::Connected
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
        self.queued
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

    /// The CONNECT, signed at the last wall-clock time given.
    fn send_connect(&mut self) {
        let unix_ms = self.last_unix_ms;
        let (keys, cid, method) = (&self.config.device, self.config.cid(), self.config.sign_method);
        let mut connect = match self.credentials.signing() {
            Some((mode, secret)) => {
                let f = connect_fields(keys, cid, mode, method, unix_ms, secret);
                let mut c = codec::Connect::new(f.client_id);
                c.set_login(f.username, f.password.expose().to_owned());
                c
            }
            None => {
                // Certificate only: the grammar of mode 2, with no password.
                let (client_id, username) = connect_identity(keys, cid, SecureMode::DeviceSecret, method, unix_ms);
                let mut c = codec::Connect::new(client_id);
                c.login = Some(codec::Login::new(username, String::new()));
                c
            }
        };
        connect.keep_alive = u16::try_from(self.config.keep_alive.as_secs()).unwrap_or(u16::MAX);
        connect.clean_session = true;
        self.state = State::AwaitConnack;
        self.last_received = self.now;
        if let Err(e) = codec::encode_packet(&mut self.out, &Packet::Connect(connect)) {
            // Only oversize fields can fail, and validate() bounds them.
            debug_assert!(false, "CONNECT did not encode: {e}");
        }
        self.sent();
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
            self.lost(DisconnectCause::Transport(cause));
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
            if let Some(req) = self.pending.get(id) {
                let timeout = req.timeout;
                self.finish(id, Err(RequestError::TimedOut(timeout)));
            }
        }
        self.expire_commands();
        self.flush();
    }

    fn tick(&mut self, now: Now) {
        // Monotonic time never runs backwards here, whatever the caller's clock did.
        if now.instant > self.now {
            self.now = now.instant;
        }
        self.last_unix_ms = now.unix_ms;
    }

    // ----- application commands -----

    /// Sends an upstream operation; the returned id ends in exactly one
    /// [`Event::Response`]. While disconnected the request waits in the queue, and its
    /// timeout runs from now.
    ///
    /// A sub-device login is remembered (and restored after each reconnect) when its
    /// reply says it succeeded, so a login sent with `need_reply = false` is not.
    ///
    /// # Errors
    ///
    /// Only synchronous refusals, and then nothing was queued:
    /// [`SubmitError::QueueFull`], [`SubmitError::TooManyRequests`],
    /// [`SubmitError::InvalidTarget`], [`SubmitError::Closed`], and
    /// [`SubmitError::Encode`] for parameters that cannot be encoded or a payload above
    /// [`Config::max_payload_bytes`].
    pub fn request<O: Operation>(&mut self, now: Now, op: O, opts: RequestOptions) -> Result<RequestId, SubmitError> {
        self.tick(now);
        let id = self.submit(now.unix_ms, &op, opts, false)?;
        self.flush();
        Ok(id)
    }

    /// The encoded body as the payload to keep until its PUBACK.
    fn payload_bytes(&mut self) -> Bytes {
        let len = self.body.len();
        if len > PAYLOAD_CHUNK {
            return Bytes::copy_from_slice(&self.body);
        }
        if self.payloads.capacity() < len {
            // Takes back the whole buffer once every payload split off it is gone;
            // otherwise a new one.
            self.payloads.reserve(PAYLOAD_CHUNK);
        }
        self.payloads.extend_from_slice(&self.body);
        self.payloads.split().freeze()
    }

    /// Encodes and registers a request. Internal requests (the re-login) skip the
    /// queue's limits and are kept aside in `relogin_out`.
    fn submit<O: Operation + ?Sized>(
        &mut self,
        unix_ms: u64,
        op: &O,
        opts: RequestOptions,
        internal: bool,
    ) -> Result<RequestId, SubmitError> {
        if self.state == State::Closed {
            return Err(SubmitError::Closed);
        }
        if op.gateway_only() && opts.target.is_some() {
            return Err(SubmitError::InvalidTarget);
        }
        if !internal {
            if self.pending.len() >= self.config.max_outstanding_requests {
                return Err(SubmitError::TooManyRequests(self.config.max_outstanding_requests));
            }
            self.check_queue_room(0)?;
        }
        let keys = opts.target.as_ref().unwrap_or(&self.config.device);
        self.scratch.clear();
        topic::write_topic(&mut self.scratch, op.scope(), keys, "");
        op.write_path(&mut self.scratch);
        if self.scratch.len() + 6 > usize::from(u16::MAX) {
            return Err(EncodeError::StringTooLong { field: "topic", len: self.scratch.len() }.into());
        }
        let raw = op.raw_payload();
        let envelope = if raw.is_none() { Some(self.next_envelope_id()) } else { None };
        let payload = match raw {
            Some(bytes) => bytes.clone(),
            None => {
                let ctx = EncodeContext { unix_ms, own: &self.config.device };
                // Written into a buffer kept for the next request, then copied into the
                // payload buffer (see `payloads`).
                self.body.clear();
                let payload = ops::encode_payload(op, envelope.unwrap_or(0), &ctx, &mut self.body, &mut self.method)
                    .map(|()| self.payload_bytes());
                if self.body.capacity() > BODY_KEEP {
                    self.body = Vec::new();
                }
                payload?
            }
        };
        if payload.len() > self.config.max_payload_bytes {
            return Err(EncodeError::PayloadTooLarge { size: payload.len(), max: self.config.max_payload_bytes }.into());
        }
        if !internal {
            self.check_queue_room(payload.len())?;
        }
        let (request_topic, reply_topic, subscribed) = self.intern_topic();
        let wants_reply = opts.need_reply;
        let id = self.pending.next_id();
        let timeout = opts.timeout.unwrap_or(self.config.request_timeout);
        let qos = match opts.qos {
            Qos::AtMostOnce => QoS::AtMostOnce,
            Qos::AtLeastOnce => QoS::AtLeastOnce,
        };
        if wants_reply {
            if let Some(e) = envelope {
                self.by_envelope.insert(e, id);
            }
        }
        self.pending.insert(
            id,
            Req {
                deadline: later(self.now, timeout),
                timeout,
                stage: Stage::Queued,
                reply_topic: reply_topic.clone(),
                envelope,
                wants_reply,
                effect: op.session_effect().0,
                internal,
                bytes: payload.len(),
                raw: envelope.is_none(),
            },
            timeout == self.config.request_timeout,
        );
        let out = Outgoing {
            req: Some(id),
            topic: request_topic,
            payload,
            qos,
            dup: false,
            needs: wants_reply.then_some(reply_topic),
            expires: None,
        };
        self.queued += 1;
        self.queued_bytes += out.payload.len();
        if internal {
            if let Some(t) = out.needs.clone() {
                self.want_subscription(&t);
            }
            self.relogin_out = Some(out);
        } else if subscribed {
            // Its reply topic is subscribed (just looked up): ready at once.
            self.ready.push_back(out);
        } else {
            self.route(out);
        }
        Ok(id)
    }

    fn check_queue_room(&self, bytes: usize) -> Result<(), SubmitError> {
        if self.queued >= self.config.max_queued_requests
            || self.queued_bytes.saturating_add(bytes) > self.config.max_queued_bytes
        {
            Err(SubmitError::QueueFull { queued: self.queued, bytes: self.queued_bytes })
        } else {
            Ok(())
        }
    }

    /// The request and reply topic for the topic in `scratch`, interned.
    fn intern_topic(&mut self) -> (Arc<str>, Arc<str>, bool) {
        self.scratch.push_str("_reply");
        if let Some((k, t)) = self.topics.get_key_value(self.scratch.as_str()) {
            return (t.request_topic.clone(), k.clone(), t.sub == SubState::Subscribed);
        }
        let reply: Arc<str> = Arc::from(self.scratch.as_str());
        let request: Arc<str> = Arc::from(&self.scratch[..self.scratch.len() - 6]);
        self.topics.insert(
            reply.clone(),
            TopicState {
                request_topic: request.clone(),
                sub: SubState::None,
                raw_fifo: VecDeque::new(),
                waiting: VecDeque::new(),
            },
        );
        (request, reply, false)
    }

    fn next_envelope_id(&mut self) -> u32 {
        loop {
            let id = self.next_envelope;
            self.next_envelope = if id == u32::MAX { 1 } else { id + 1 };
            if !self.by_envelope.contains_key(&id) {
                return id;
            }
        }
    }

    /// Sends the reply to a command (QoS 0, as the vendor SDKs do). While disconnected it
    /// waits in the queue, for at most [`Config::request_timeout`]: a reply later than
    /// that is dropped, since the cloud has stopped waiting for it.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Closed`], [`SubmitError::QueueFull`], or
    /// [`SubmitError::Encode`] for a payload above [`Config::max_payload_bytes`].
    pub fn reply(&mut self, now: Now, reply: CommandReply) -> Result<(), SubmitError> {
        self.tick(now);
        if self.state == State::Closed {
            return Err(SubmitError::Closed);
        }
        // One answer per command: a second one, or one after the core answered at the
        // deadline, is refused.
        if reply.ticket != 0 && !self.running_commands.contains_key(&reply.ticket) {
            return Err(SubmitError::AlreadyAnswered);
        }
        // The command is answered, whether or not its reply can be sent.
        self.answered(reply.ticket);
        if reply.payload.len() > self.config.max_payload_bytes {
            return Err(
                EncodeError::PayloadTooLarge { size: reply.payload.len(), max: self.config.max_payload_bytes }.into()
            );
        }
        if reply.topic.len() > usize::from(u16::MAX) {
            return Err(EncodeError::StringTooLong { field: "topic", len: reply.topic.len() }.into());
        }
        self.check_queue_room(reply.payload.len())?;
        self.queued += 1;
        self.queued_bytes += reply.payload.len();
        let out = Outgoing {
            req: None,
            topic: Arc::from(reply.topic),
            payload: reply.payload,
            qos: QoS::AtMostOnce,
            dup: false,
            needs: None,
            expires: Some(later(self.now, self.config.request_timeout)),
        };
        self.route(out);
        self.flush();
        Ok(())
    }

    /// Ends a command without a reply: for a raw down command nobody handles (spec §7).
    /// Like [`reply`](Client::reply), it makes room for the next held command.
    pub fn dismiss(&mut self, now: Now, reply_to: &ReplyTo) {
        self.tick(now);
        self.answered(reply_to.ticket);
    }

    /// A handed-out command was answered: the oldest held one is handed out in its place.
    fn answered(&mut self, ticket: u64) {
        if ticket != 0 && self.running_commands.remove(&ticket).is_some() {
            if let Some(cmd) = self.held_commands.pop_front() {
                self.hand_out(cmd);
            }
        }
    }

    /// A command for the application: handed out while fewer than
    /// `max_running_commands` are unanswered, held while fewer than
    /// `max_queued_commands` wait, answered 1102 past that.
    fn offer_command(&mut self, cmd: Command) {
        if self.running_commands.len() < self.config.max_running_commands {
            self.hand_out(cmd);
        } else if self.held_commands.len() < self.config.max_queued_commands {
            self.held_commands.push_back(cmd);
        } else {
            if !cmd.reply_to.is_raw() {
                self.reply_now(cmd.reply_to.handler_failed(command::REASON_QUEUE_FULL));
            }
            #[cfg(feature = "tracing")]
            tracing::warn!(device = %self.config.device, topic = cmd.reply_to.topic(), "command queue full: answered 1102");
            self.events.push_back(Event::Error(ClientError::CommandQueueFull { topic: command_topic(&cmd.reply_to) }));
        }
    }

    fn hand_out(&mut self, mut cmd: Command) {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        cmd.reply_to.ticket = ticket;
        self.running_commands.insert(ticket, cmd.reply_to.clone());
        self.command_deadlines.push_back((later(self.now, self.config.command_timeout), ticket));
        if self.command_deadlines.len() > 2 * self.running_commands.len() + crate::pending::SLACK {
            let running = &self.running_commands;
            self.command_deadlines.retain(|(_, t)| running.contains_key(t));
        }
        self.events.push_back(Event::Command(Box::new(cmd)));
    }

    /// A SUBSCRIBE went out: its SUBACK is due within the ping timeout, unless one is
    /// already awaited (then that one's deadline stands).
    fn arm_suback(&mut self) {
        if self.timers.get(Timer::Suback).is_none() {
            self.timers.set(Timer::Suback, later(self.now, self.config.ping_timeout));
        }
    }

    /// Answers 1102 the commands whose handlers let their deadline pass.
    fn expire_commands(&mut self) {
        while let Some(&(at, ticket)) = self.command_deadlines.front() {
            if at > self.now {
                break;
            }
            self.command_deadlines.pop_front();
            let Some(reply_to) = self.running_commands.get(&ticket).cloned() else { continue };
            let timeout = self.config.command_timeout;
            if !reply_to.is_raw() {
                let reason = format!("no answer within {} s", timeout.as_secs());
                self.reply_now(reply_to.handler_failed(&reason));
            }
            self.answered(ticket);
            self.events
                .push_back(Event::Error(ClientError::CommandTimedOut { topic: command_topic(&reply_to), timeout }));
        }
    }

    /// Opens a transport now if the client is idle (after a failure with automatic
    /// reconnects disabled, or to skip the rest of a back-off). After
    /// [`close`](Client::close) it starts the client again: a fresh session with the
    /// same configuration and the credentials it had (a device secret issued by dynamic
    /// activation is kept), and an [`Event::Started`] to come.
    pub fn connect(&mut self, now: Now) {
        self.tick(now);
        match self.state {
            State::Idle => self.open_transport(),
            State::Closed => {
                self.starting = true;
                self.ever_connected = false;
                self.reconnected = false;
                self.failures = 0;
                self.logged_in.clear();
                self.topics.clear();
                self.decoder.reset();
                self.open_transport();
            }
            State::Dialing | State::Securing | State::AwaitConnack | State::Connected => {}
        }
    }

    /// Ends the client: command replies already accepted go out, every outstanding
    /// request ends with [`RequestError::Closed`], a DISCONNECT follows if the session is
    /// up, then [`Output::CloseTransport`] and [`Event::Disconnected`] with
    /// [`DisconnectCause::Closed`]. Later requests are refused with
    /// [`SubmitError::Closed`].
    pub fn close(&mut self, now: Now) {
        self.tick(now);
        self.end(DisconnectCause::Closed, Some(StartError::Closed));
    }

    /// Closes the client: a DISCONNECT if the session is up, every request ended, the
    /// transport closed, `Disconnected` with `cause`, and `Started(Err(start))` if the
    /// start was still pending.
    fn end(&mut self, cause: DisconnectCause, start: Option<StartError>) {
        if self.state == State::Closed {
            return;
        }
        let had_transport = self.state != State::Idle;
        if self.state == State::Connected {
            let replies: Vec<Outgoing> = self.ready.iter().filter(|o| o.req.is_none()).map(clone_reply).collect();
            for r in replies {
                self.transmit(r);
            }
            let _ = codec::encode_packet(&mut self.out, &Packet::Disconnect);
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_mut() {
            // The DISCONNECT is sealed first, then the close_notify alert follows it.
            if !self.out.is_empty() && tls.write_plaintext(&self.out).is_ok() {
                self.out.clear();
            }
            tls.send_close_notify();
        }
        self.shut();
        if had_transport {
            self.push_ctl(Output::CloseTransport);
        }
        #[cfg(feature = "tls")]
        {
            self.tls = None;
        }
        self.events.push_back(Event::Disconnected { cause, retry_at: None });
        if let Some(e) = start {
            self.started(Err(e));
        }
    }

    /// The start's outcome, once: `Event::Started` if the start is still pending.
    fn started(&mut self, outcome: Result<(), StartError>) {
        if std::mem::replace(&mut self.starting, false) {
            self.events.push_back(Event::Started(outcome));
        }
    }

    /// The state of a closed client: nothing outstanding, queued or held.
    fn shut(&mut self) {
        self.state = State::Closed;
        self.timers.clear();
        for id in self.pending.ids() {
            self.finish(id, Err(RequestError::Closed));
        }
        self.ready.clear();
        for t in self.topics.values_mut() {
            t.waiting.clear();
        }
        self.inflight.clear();
        self.subscribing.clear();
        self.relogin_out = None;
        self.queued = 0;
        self.queued_bytes = 0;
        self.dead = 0;
        self.running_commands.clear();
        self.command_deadlines.clear();
        self.unwritten.clear();
        (self.transmits, self.written) = (0, 0);
        self.held_commands.clear();
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

    // ----- connection life -----

    fn open_transport(&mut self) {
        self.state = State::Dialing;
        self.timers.stop(Timer::Reconnect);
        self.timers.set(Timer::Connect, later(self.now, self.config.connect_timeout));
        self.push_ctl(Output::OpenTransport);
    }

    /// Something was written: the keep-alive counts from now.
    fn sent(&mut self) {
        self.last_sent = self.now;
        self.arm_keep_alive();
    }

    /// A PINGREQ is due `keep_alive` after the last packet sent or received, whichever
    /// is older: so a link that only sends (QoS 0 telemetry) is still checked for a
    /// living peer.
    fn arm_keep_alive(&mut self) {
        if !self.config.keep_alive.is_zero() && self.state == State::Connected {
            let since = self.last_sent.min(self.last_received);
            self.timers.set(Timer::KeepAlive, later(since, self.config.keep_alive));
        }
    }

    fn lost(&mut self, cause: DisconnectCause) {
        let refused = match &cause {
            DisconnectCause::Refused(r) => Some(*r),
            _ => None,
        };
        let was_up = self.state == State::Connected;
        self.state = State::Idle;
        self.activation_open = false;
        (self.transmits, self.written) = (0, 0);
        self.timers.clear();
        self.decoder.reset();
        self.out.clear();
        #[cfg(feature = "tls")]
        if let Some(mut tls) = self.tls.take() {
            // What the TLS session still has to say (an alert after a failure) goes out
            // before the transport closes; unsent plaintext is dropped with the session.
            tls.take_ciphertext_into(&mut self.wire);
            if !self.wire.is_empty() {
                let alert = self.wire.split().freeze();
                self.ctl.push_back(Output::Transmit(alert));
            }
        }
        // Clean session: every subscription is gone with the connection.
        for t in self.topics.values_mut() {
            t.sub = SubState::None;
        }
        self.subscribing.clear();
        self.to_subscribe.clear();
        if let Some(id) = self.relogin.take() {
            // A fresh re-login with fresh signatures follows the next CONNACK.
            self.relogin_out = None;
            self.finish(id, Err(RequestError::Closed));
        }
        if let Some(id) = self.relogin_retry.take() {
            self.finish(id, Err(RequestError::Closed));
        }
        // The re-login after the next CONNACK asks for every sub-device anyway (its timer
        // went with the others).
        self.unconfirmed.clear();
        // Unacknowledged QoS 1 publishes go out again, first, with DUP.
        let mut again: Vec<InFlight> = self.inflight.drain().map(|(_, f)| f).collect();
        again.sort_by_key(|f| f.seq);
        for f in again.into_iter().rev() {
            let mut out = f.out;
            // A request that ended before its PUBACK (reply or timeout) is not sent again.
            let Some(id) = out.req else { continue };
            let Some(r) = self.pending.get_mut(id) else { continue };
            r.stage = Stage::Queued;
            if r.raw {
                // It re-enters the raw FIFO when it goes out again.
                let topic = r.reply_topic.clone();
                if let Some(t) = self.topics.get_mut(&topic) {
                    t.raw_fifo.retain(|x| *x != id);
                }
            }
            out.dup = true;
            self.queued += 1;
            self.queued_bytes += out.payload.len();
            self.ready.push_front(out);
        }
        // What the lost connection hides the outcome of ends here: QoS 0 requests whose
        // bytes were not reported written, and raw requests whose reply was due on it (raw
        // replies carry no id, so a later one could not be told from it). Raw requests
        // still unacknowledged left the FIFO above, to be sent again.
        let unwritten = self.unwritten.drain(..).map(|(_, id)| id);
        let orphans: Vec<RequestId> =
            unwritten.chain(self.topics.values_mut().flat_map(|t| t.raw_fifo.drain(..))).collect();
        for id in orphans {
            self.finish(id, Err(RequestError::ConnectionLost));
        }
        // Only a session that lasted resets the back-off: one accepted and dropped at once
        // (a broker that drops it, two processes taking the session from each other) counts
        // as a failure, so such a loop slows down like failed dials.
        let lasted = self
            .connected_at
            .take()
            .is_some_and(|t| was_up && self.now.saturating_duration_since(t) >= self.config.max_reconnect_period);
        self.failures = if lasted { 0 } else { self.failures.saturating_add(1) };
        if self.starting && !self.config.retry_first_connect {
            // The start fails with its first attempt: the client closes (the transport is
            // already gone, so closing adds no DISCONNECT).
            self.push_ctl(Output::CloseTransport);
            let start = match &cause {
                DisconnectCause::ConnectTimeout(d) => StartError::TimedOut(*d),
                other => StartError::Failed(other.clone()),
            };
            self.end(cause, Some(start));
            return;
        }
        let retry_at = self.backoff(refused);
        if let Some(at) = retry_at {
            self.timers.set(Timer::Reconnect, at);
        }
        #[cfg(feature = "tracing")]
        tracing::info!(device = %self.config.device, cause = %cause, "disconnected");
        self.push_ctl(Output::CloseTransport);
        self.events.push_back(Event::Disconnected { cause, retry_at });
    }

    fn backoff(&mut self, refused: Option<ConnectRefusal>) -> Option<Instant> {
        if self.config.reconnect_period.is_zero() {
            return None;
        }
        let delay = if refused.is_some_and(ConnectRefusal::is_authentication) {
            self.jittered(self.config.max_reconnect_period)
        } else {
            self.delay(self.failures)
        };
        Some(later(self.now, delay))
    }

    /// The back-off after `attempts` failures in a row: the reconnect period doubled
    /// each time up to its maximum, jittered. A re-login retried while connected waits
    /// the same way (at least a second when reconnects are off).
    fn delay(&mut self, attempts: u32) -> Duration {
        let base = self.config.reconnect_period.max(Duration::from_secs(1));
        let factor = 1u32 << attempts.saturating_sub(1).min(16);
        self.jittered(base.saturating_mul(factor).min(self.config.max_reconnect_period.max(base)))
    }

    fn jittered(&mut self, delay: Duration) -> Duration {
        // xorshift64: deterministic for a seed, different across devices.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        // Jitter: this share of the delay is drawn at random (all of it by default: full
        // jitter, so a fleet cut at once comes back spread over the whole delay).
        let pct = u64::from(self.config.reconnect_jitter_percent.min(100));
        let span = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX).saturating_mul(pct) / 100;
        let jitter_ms = if span == 0 { 0 } else { self.rng % span.saturating_add(1) };
        delay.saturating_sub(Duration::from_millis(jitter_ms))
    }

    fn on_connack(&mut self, code: ConnectReturnCode) {
        let refusal = match code {
            ConnectReturnCode::Success => None,
            ConnectReturnCode::RefusedProtocolVersion => Some(ConnectRefusal::UnacceptableProtocolVersion),
            ConnectReturnCode::BadClientId => Some(ConnectRefusal::IdentifierRejected),
            ConnectReturnCode::ServiceUnavailable => Some(ConnectRefusal::ServerUnavailable),
            ConnectReturnCode::BadUserNamePassword => Some(ConnectRefusal::BadUserNameOrPassword),
            ConnectReturnCode::NotAuthorized => Some(ConnectRefusal::NotAuthorized),
        };
        if let Some(r) = refusal {
            #[cfg(feature = "tracing")]
            tracing::warn!(device = %self.config.device, code = r.code(), "connection refused");
            self.lost(DisconnectCause::Refused(r));
            return;
        }
        self.state = State::Connected;
        self.connected_at = Some(self.now);
        // With dynamic activation, the start's deadline runs on until the secret comes.
        let activating = matches!(self.credentials, Credentials::ProductSecret(_));
        self.activation_open = activating;
        if !(self.starting && activating && !self.config.retry_first_connect) {
            self.timers.stop(Timer::Connect);
        }
        self.arm_keep_alive();
        let reconnect = self.ever_connected;
        self.ever_connected = true;
        self.reconnected |= reconnect;
        #[cfg(feature = "tracing")]
        tracing::info!(device = %self.config.device, reconnect, "connected");
        self.events.push_back(Event::Connected { reconnect });
        if !activating {
            self.started(Ok(()));
        }
        if self.config.subscribe_command_topics {
            let mut filters = command_filters(&self.config.device, true);
            for keys in self.logged_in.keys() {
                filters.extend(command_filters(keys, false));
            }
            self.subscribe_commands(filters);
        }
        // Topics no request refers to any more are forgotten; those with replies still
        // awaited are subscribed again.
        let used = self.pending.reply_topics();
        self.topics.retain(|k, _| used.contains(k));
        let sent = self.pending.awaited_topics();
        let awaited: Vec<Arc<str>> = self
            .topics
            .iter()
            .filter(|(k, t)| sent.contains(*k) || !t.raw_fifo.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for t in awaited {
            self.want_subscription(&t);
        }
        // Everything waiting goes through routing again: subscriptions first.
        let mut all: Vec<Outgoing> = self.ready.drain(..).collect();
        for t in self.topics.values_mut() {
            all.extend(t.waiting.drain(..));
        }
        if !self.logged_in.is_empty() {
            let devices: Vec<SubDeviceInfo> = self.logged_in.values().cloned().collect();
            let op = SubDeviceBatchLogin::new(devices);
            // The re-login goes first; the rest waits for its reply (spec §8).
            match self.submit(self.last_unix_ms, &op, RequestOptions::default(), true) {
                Ok(id) => {
                    self.relogin = Some(id);
                    self.relogin_asked = self.logged_in.keys().cloned().collect();
                }
                Err(e) => self.events.push_back(Event::Error(ClientError::ReloginFailed {
                    devices: self.logged_in.keys().cloned().collect(),
                    reason: e.to_string(),
                })),
            }
        }
        for out in all {
            self.route(out);
        }
    }

    // ----- packets in -----

    fn on_packet(&mut self, packet: Packet) {
        match (self.state, packet) {
            (State::AwaitConnack, Packet::ConnAck(ack)) => self.on_connack(ack.code),
            (State::Connected, Packet::Publish(p)) => self.on_publish(p),
            (State::Connected, Packet::PubAck(ack)) => self.on_puback(ack.pkid),
            (State::Connected, Packet::SubAck(ack)) => self.on_suback(ack.pkid, &ack.return_codes),
            (State::Connected, Packet::PingResp) => self.timers.stop(Timer::PingResponse),
            (_, p) => self.lost(DisconnectCause::Protocol(ProtocolError::UnexpectedPacket(codec::kind(&p)))),
        }
    }

    fn on_puback(&mut self, pkid: u16) {
        let Some(f) = self.inflight.remove(&pkid) else {
            self.events.push_back(Event::Error(ClientError::UnknownPacketId(pkid)));
            return;
        };
        let Some(id) = f.out.req else { return };
        let Some(req) = self.pending.get_mut(id) else { return };
        if req.wants_reply {
            req.stage = Stage::Sent;
        } else {
            self.finish(id, Ok(Reply::Delivered));
        }
    }

    fn on_suback(&mut self, pkid: u16, codes: &[SubscribeReasonCode]) {
        let Some(purpose) = self.subscribing.remove(&pkid) else {
            self.events.push_back(Event::Error(ClientError::UnknownPacketId(pkid)));
            return;
        };
        // The broker answers: the next SUBACK due gets a full ping timeout from now.
        if self.subscribing.is_empty() {
            self.timers.stop(Timer::Suback);
        } else {
            self.timers.set(Timer::Suback, later(self.now, self.config.ping_timeout));
        }
        let SubPurpose::Replies(topics) = purpose else {
            if codes.contains(&SubscribeReasonCode::Failure) {
                self.events.push_back(Event::Error(ClientError::SubscribeRefused { topic: "command topics".into() }));
            }
            return;
        };
        for (i, topic) in topics.into_iter().enumerate() {
            let ok = !matches!(codes.get(i), Some(SubscribeReasonCode::Failure) | None);
            let Some(t) = self.topics.get_mut(&topic) else { continue };
            let waiting: Vec<Outgoing> = t.waiting.drain(..).collect();
            if ok {
                t.sub = SubState::Subscribed;
                self.ready.extend(waiting);
                continue;
            }
            t.sub = SubState::None;
            for out in waiting {
                if let Some(id) = out.req {
                    self.finish(id, Err(RequestError::SubscribeRefused(topic.to_string())));
                }
                self.take_dead(&out);
            }
            if self.relogin_out.as_ref().is_some_and(|o| o.needs.as_ref() == Some(&topic)) {
                if let Some(id) = self.relogin {
                    self.finish(id, Err(RequestError::SubscribeRefused(topic.to_string())));
                }
            }
            self.events.push_back(Event::Error(ClientError::SubscribeRefused { topic: topic.to_string() }));
        }
    }

    fn on_publish(&mut self, p: codec::Publish) {
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                let _ = codec::encode_packet(&mut self.out, &Packet::PubAck(codec::PubAck::new(p.pkid)));
                self.sent();
            }
            QoS::ExactlyOnce => {
                self.lost(DisconnectCause::Protocol(ProtocolError::QoS2Publish));
                return;
            }
        }
        if self.config.emit_all_messages && !carries_secret(&p.topic) {
            self.events.push_back(Event::Message { topic: p.topic.clone(), payload: p.payload.clone() });
        }
        if let Some((key, t)) = self.topics.get_key_value(p.topic.as_str()) {
            let key = key.clone();
            // Raw replies are never JSON (spec §7): the oldest raw request on the wire
            // takes them.
            if key.ends_with("/thing/model/up_raw_reply") {
                match t.raw_fifo.front().copied() {
                    Some(id) => self.finish(id, Ok(Reply::Raw(p.payload))),
                    None => self.unmatched(
                        p.topic,
                        p.payload,
                        ClientError::UnmatchedReply { topic: key.to_string(), id: String::new() },
                    ),
                }
                return;
            }
            match envelope::parse_reply(&p.payload) {
                Ok(reply) => {
                    let found = envelope::envelope_id(&reply.id)
                        .and_then(|e| self.by_envelope.get(&e).copied())
                        .filter(|id| self.pending.get(*id).is_some_and(|r| Arc::ptr_eq(&r.reply_topic, &key)));
                    match found {
                        Some(id) => self.finish(id, Ok(Reply::Json(reply))),
                        None => self.unmatched(
                            p.topic,
                            p.payload,
                            ClientError::UnmatchedReply { topic: key.to_string(), id: reply.id },
                        ),
                    }
                }
                Err(reason) => {
                    self.unmatched(p.topic, p.payload, ClientError::BadReply { topic: key.to_string(), reason })
                }
            }
            return;
        }
        let Some(parts) = topic::parse_topic(&p.topic) else {
            return self.message(p.topic, p.payload);
        };
        let device = if self.config.device.is(parts.product_key, parts.device_key) {
            self.config.device.clone()
        } else if let Some(k) =
            DeviceKeys::new(parts.product_key, parts.device_key).ok().filter(|k| self.logged_in.contains_key(k))
        {
            k
        } else {
            return self.message(p.topic, p.payload);
        };
        match command::classify(&p.topic, &parts, &device, p.payload.clone()) {
            None => self.message(p.topic, p.payload),
            Some(Inbound::Command(cmd)) => {
                if let CommandKind::DisableSubDevices { devices } | CommandKind::DeleteSubDevices { devices } =
                    &cmd.kind
                {
                    for d in devices {
                        self.logged_in.remove(d);
                    }
                }
                self.offer_command(cmd);
            }
            Some(Inbound::Activation { reply_to, device_secret, asset_id }) => {
                let Some(secret) = device_secret.filter(|s| !s.is_empty()) else {
                    self.events.push_back(Event::Error(ClientError::BadCommand {
                        topic: p.topic,
                        reason: "activation without a deviceSecret".into(),
                    }));
                    return;
                };
                let secret = Secret::new(secret);
                let own = device == self.config.device;
                // Only a device that is activating takes a secret: this session logged in
                // with the product secret, or the sub-device did (a repeat of the secret it
                // already took is acknowledged again).
                let activating = if own {
                    self.activation_open
                } else {
                    self.logged_in
                        .get(&device)
                        .is_some_and(|i| i.mode == SecureMode::ProductSecret || i.secret.expose() == secret.expose())
                };
                if !activating {
                    self.events.push_back(Event::Error(ClientError::UnexpectedActivation { device }));
                    return;
                }
                // The application keeps the secret before the cloud hears that it has it.
                if let Some(store) = &self.config.secret_store {
                    if let Err(reason) = store.keep(&device, &secret) {
                        self.events.push_back(Event::Error(ClientError::ActivationNotStored { device, reason }));
                        return;
                    }
                }
                self.reply_now(reply_to.ok_empty());
                if own {
                    self.credentials = Credentials::DeviceSecret(secret.clone());
                } else if let Some(info) = self.logged_in.get_mut(&device) {
                    info.secret = secret.clone();
                    info.mode = SecureMode::DeviceSecret;
                }
                self.events.push_back(Event::Activated { device, device_secret: secret, asset_id });
                if own && self.starting {
                    self.timers.stop(Timer::Connect);
                    self.started(Ok(()));
                }
            }
            Some(Inbound::Echo) => {}
            Some(Inbound::Bad { reason, reply }) => {
                if let Some(r) = reply {
                    self.reply_now(r);
                }
                self.events.push_back(Event::Error(ClientError::BadCommand { topic: p.topic, reason }));
            }
        }
    }

    /// A reply the core itself sends at once (activation, bad parameters).
    fn reply_now(&mut self, r: CommandReply) {
        if codec::encode_publish(&mut self.out, &r.topic, &r.payload, QoS::AtMostOnce, 0, false).is_ok() {
            self.sent();
        }
    }

    fn message(&mut self, topic: String, payload: Bytes) {
        if !self.config.emit_all_messages && !carries_secret(&topic) {
            self.events.push_back(Event::Message { topic, payload });
        }
    }

    fn unmatched(&mut self, topic: String, payload: Bytes, e: ClientError) {
        self.events.push_back(Event::Error(e));
        self.message(topic, payload);
    }

    // ----- requests -----

    /// Ends request `id` once: its state is freed and, unless internal, the application
    /// gets its `Event::Response`.
    fn finish(&mut self, id: RequestId, result: Result<Reply, RequestError>) {
        let Some(req) = self.pending.remove(id) else { return };
        if let Some(e) = req.envelope {
            // Removed in one lookup; put back in the rare case it was another request's.
            if let Some(other) = self.by_envelope.remove(&e) {
                if other != id {
                    self.by_envelope.insert(e, other);
                }
            }
        }
        if req.raw {
            if let Some(t) = self.topics.get_mut(&req.reply_topic) {
                t.raw_fifo.retain(|r| *r != id);
            }
        }
        match req.stage {
            Stage::InFlight(pkid) => {
                if let Some(f) = self.inflight.get_mut(&pkid) {
                    // Ended before its PUBACK: the packet id stays in use until then, but
                    // it will not be sent again.
                    f.out.req = None;
                }
            }
            Stage::Queued => {
                // Its publish stays in a queue until skipped; it no longer counts.
                self.queued = self.queued.saturating_sub(1);
                self.queued_bytes = self.queued_bytes.saturating_sub(req.bytes);
                if req.internal {
                    self.relogin_out = None;
                } else {
                    self.dead += 1;
                    if self.dead > self.queued + 64 {
                        self.compact();
                    }
                }
            }
            Stage::Sent => {}
        }
        if let Ok(reply) = &result {
            self.apply_effect(&req.effect, reply);
        }
        if req.internal {
            if self.relogin == Some(id) {
                self.relogin = None;
                self.relogin_done(result);
            } else if self.relogin_retry == Some(id) {
                self.relogin_retry = None;
                self.relogin_done(result);
            }
            return;
        }
        self.events.push_back(Event::Response { id, result });
    }

    /// Drops the publishes of ended requests from the queues.
    fn compact(&mut self) {
        let pending = &self.pending;
        let live = |o: &Outgoing| o.req.is_none_or(|id| pending.get(id).is_some());
        self.ready.retain(live);
        for t in self.topics.values_mut() {
            t.waiting.retain(live);
        }
        self.dead = 0;
    }

    /// A publish left a queue: counted off, unless its request already ended (and was
    /// counted off then).
    fn take_dead(&mut self, out: &Outgoing) -> bool {
        match out.req {
            Some(id) if self.pending.get(id).is_none() => {
                self.dead = self.dead.saturating_sub(1);
                true
            }
            _ => false,
        }
    }

    fn apply_effect(&mut self, effect: &Effect, reply: &Reply) {
        let Reply::Json(j) = reply else { return };
        match effect {
            Effect::None => {}
            Effect::Logout(devices) => {
                if j.code == 200 {
                    for d in devices {
                        self.logged_in.remove(d);
                    }
                }
            }
            Effect::Login { devices, batch } => {
                let logged: Vec<LoginResult> = if *batch {
                    j.data::<BatchLoginResult>().map(|r| r.logged_in).unwrap_or_default()
                } else if j.code == 200 {
                    j.data::<LoginResult>().into_iter().collect()
                } else {
                    Vec::new()
                };
                let mut new_filters = Vec::new();
                for r in logged {
                    let Some(info) = devices.iter().find(|d| d.keys.is(&r.product_key, &r.device_key)) else {
                        continue;
                    };
                    let mut info = info.clone();
                    if let Some(secret) = r.device_secret.filter(|s| !s.is_empty()) {
                        info.secret = secret.clone();
                        info.mode = SecureMode::DeviceSecret;
                        self.events.push_back(Event::Activated {
                            device: info.keys.clone(),
                            device_secret: secret,
                            asset_id: r.asset_id.clone(),
                        });
                    }
                    if self.config.subscribe_command_topics && !self.logged_in.contains_key(&info.keys) {
                        new_filters.extend(command_filters(&info.keys, false));
                    }
                    self.logged_in.insert(info.keys.clone(), info);
                }
                if !new_filters.is_empty() && self.state == State::Connected {
                    self.subscribe_commands(new_filters);
                }
            }
        }
    }

    fn relogin_done(&mut self, result: Result<Reply, RequestError>) {
        let asked = std::mem::take(&mut self.relogin_asked);
        // Lost with the connection: the next CONNACK logs them all in again.
        if matches!(result, Err(RequestError::Closed)) {
            return;
        }
        let (answer, reason) = match &result {
            Ok(reply) => {
                let r = reply.json().ok().and_then(|j| j.data::<BatchLoginResult>().ok()).unwrap_or_default();
                let reason = match reply {
                    Reply::Json(j) => format!("code {}: {}", j.code, j.message.as_deref().unwrap_or("")),
                    _ => "unexpected reply".into(),
                };
                (r, reason)
            }
            Err(e) => (BatchLoginResult::default(), e.to_string()),
        };
        // Only the devices the cloud names as failed are forgotten; those it neither
        // logged in nor named (a timeout, a code without data) are kept and retried.
        let named = |k: &DeviceKeys, list: &[LoginResult]| list.iter().any(|l| k.is(&l.product_key, &l.device_key));
        let (mut refused, mut unconfirmed) = (Vec::new(), Vec::new());
        for k in asked.into_iter().filter(|k| self.logged_in.contains_key(k)) {
            if answer.failed.contains(&k) {
                refused.push(k);
            } else if !named(&k, &answer.logged_in) {
                unconfirmed.push(k);
            }
        }
        for k in &refused {
            self.logged_in.remove(k);
        }
        if !refused.is_empty() {
            self.events
                .push_back(Event::Error(ClientError::ReloginFailed { devices: refused, reason: reason.clone() }));
        }
        if unconfirmed.is_empty() {
            self.relogin_failures = 0;
            return;
        }
        self.relogin_failures = self.relogin_failures.saturating_add(1);
        let retry_at = later(self.now, self.delay(self.relogin_failures));
        self.timers.set(Timer::Relogin, retry_at);
        self.unconfirmed = unconfirmed.clone();
        self.events.push_back(Event::Error(ClientError::ReloginRetry { devices: unconfirmed, reason, retry_at }));
    }

    /// Sends the retry of a re-login for the sub-devices still unconfirmed.
    fn relogin_again(&mut self) {
        if self.state != State::Connected || self.relogin.is_some() || self.relogin_retry.is_some() {
            return;
        }
        let keys = std::mem::take(&mut self.unconfirmed);
        let devices: Vec<SubDeviceInfo> = keys.iter().filter_map(|k| self.logged_in.get(k).cloned()).collect();
        if devices.is_empty() {
            return;
        }
        let op = SubDeviceBatchLogin::new(devices);
        match self.submit(self.last_unix_ms, &op, RequestOptions::default(), true) {
            Ok(id) => {
                self.relogin_retry = Some(id);
                self.relogin_asked = keys;
                // Internal requests are kept aside for the re-login after a reconnect;
                // a retry goes the way of any request instead.
                if let Some(out) = self.relogin_out.take() {
                    self.route(out);
                }
            }
            Err(e) => {
                self.events.push_back(Event::Error(ClientError::ReloginFailed { devices: keys, reason: e.to_string() }))
            }
        }
    }

    /// Where an outgoing publish waits: behind its reply topic's subscription, or ready.
    fn route(&mut self, out: Outgoing) {
        if self.take_dead(&out) {
            return;
        }
        if let Some(topic) = out.needs.clone() {
            let t = self.topics.entry(topic.clone()).or_insert_with(|| TopicState {
                request_topic: out.topic.clone(),
                sub: SubState::None,
                raw_fifo: VecDeque::new(),
                waiting: VecDeque::new(),
            });
            if t.sub != SubState::Subscribed {
                t.waiting.push_back(out);
                self.want_subscription(&topic);
                return;
            }
        }
        self.ready.push_back(out);
    }

    fn want_subscription(&mut self, topic: &Arc<str>) {
        if let Some(t) = self.topics.get_mut(topic) {
            if t.sub == SubState::None {
                t.sub = SubState::Pending;
                self.to_subscribe.push(topic.clone());
            }
        }
    }

    fn alloc_pkid(&mut self) -> u16 {
        // In flight and subscribing are bounded well below 65,535: a free id exists.
        loop {
            let id = self.next_pkid;
            self.next_pkid = if id == u16::MAX { 1 } else { id + 1 };
            if !self.inflight.contains_key(&id) && !self.subscribing.contains_key(&id) {
                return id;
            }
        }
    }

    fn subscribe_commands(&mut self, filters: Vec<String>) {
        for chunk in filters.chunks(MAX_FILTERS_PER_SUBSCRIBE) {
            let pkid = self.alloc_pkid();
            if codec::encode_subscribe(&mut self.out, pkid, chunk.iter().map(String::as_str), QoS::AtLeastOnce).is_ok()
            {
                self.subscribing.insert(pkid, SubPurpose::Commands);
                self.arm_suback();
                self.sent();
            }
        }
    }

    /// Sends what can go now: pending SUBSCRIBEs, the re-login, then (once the re-login
    /// is answered) ready publishes while the QoS 1 window has room.
    fn flush(&mut self) {
        if self.state != State::Connected {
            return;
        }
        while !self.to_subscribe.is_empty() && self.subscribing.len() < MAX_SUBSCRIBING {
            let n = self.to_subscribe.len().min(MAX_FILTERS_PER_SUBSCRIBE);
            let topics: Vec<Arc<str>> = self.to_subscribe.drain(..n).collect();
            let pkid = self.alloc_pkid();
            if codec::encode_subscribe(&mut self.out, pkid, topics.iter().map(|t| &**t), QoS::AtLeastOnce).is_ok() {
                self.subscribing.insert(pkid, SubPurpose::Replies(topics));
                self.arm_suback();
                self.sent();
            }
        }
        if self.relogin.is_some() {
            let subscribed = self.relogin_out.as_ref().is_some_and(|o| {
                o.needs.as_ref().is_none_or(|t| self.topics.get(t).is_some_and(|t| t.sub == SubState::Subscribed))
            });
            if subscribed && self.inflight.len() < usize::from(self.config.max_inflight) {
                if let Some(out) = self.relogin_out.take() {
                    self.transmit(out);
                }
            }
            // Nothing else moves until the re-login is answered (spec §8).
            return;
        }
        while let Some(out) = self.ready.pop_front() {
            if self.take_dead(&out) {
                continue;
            }
            if out.qos == QoS::AtLeastOnce && self.inflight.len() >= usize::from(self.config.max_inflight) {
                self.ready.push_front(out);
                break;
            }
            self.transmit(out);
        }
    }

    /// Puts one live publish on the wire.
    fn transmit(&mut self, out: Outgoing) {
        self.queued = self.queued.saturating_sub(1);
        self.queued_bytes = self.queued_bytes.saturating_sub(out.payload.len());
        if out.expires.is_some_and(|at| at <= self.now) {
            return;
        }
        let pkid = if out.qos == QoS::AtLeastOnce { self.alloc_pkid() } else { 0 };
        if codec::encode_publish(&mut self.out, &out.topic, &out.payload, out.qos, pkid, out.dup).is_err() {
            // Topic and payload sizes were checked at submission: nothing else can fail.
            debug_assert!(false, "a checked publish did not encode");
            return;
        }
        self.sent();
        let Some(id) = out.req else { return };
        let Some(req) = self.pending.get_mut(id) else { return };
        if req.raw && req.wants_reply {
            if let Some(t) = self.topics.get_mut(&req.reply_topic) {
                t.raw_fifo.push_back(id);
            }
        }
        if out.qos == QoS::AtLeastOnce {
            req.stage = Stage::InFlight(pkid);
            self.inflight_seq += 1;
            self.inflight.insert(pkid, InFlight { seq: self.inflight_seq, out });
        } else if req.wants_reply {
            req.stage = Stage::Sent;
        } else {
            // Delivered when the transmit that carries it is written, not before.
            req.stage = Stage::Sent;
            self.unwritten.push_back((self.transmits + 1, id));
        }
    }
}

/// A copy of a queued command reply (cheap: the topic and payload are shared).
fn clone_reply(o: &Outgoing) -> Outgoing {
    Outgoing {
        req: None,
        topic: o.topic.clone(),
        payload: o.payload.clone(),
        qos: o.qos,
        dup: o.dup,
        needs: None,
        expires: o.expires,
    }
}

/// Messages whose payload holds a secret the cloud issues (activation, the replies of
/// logins and registrations): never copied into `Event::Message`.
/// The topic a command came on: its reply topic without `_reply`.
fn command_topic(reply_to: &ReplyTo) -> String {
    let t = reply_to.topic();
    t.strip_suffix("_reply").unwrap_or(t).to_owned()
}

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
