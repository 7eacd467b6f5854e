//! `enos-sim`: a local EnOS IoT cloud for tests, examples, load and offline development.
//!
//! It plays the EnOS IoT hub on loopback: an MQTT 3.1.1 server on TCP and TLS (optionally
//! requiring client certificates), EnOS authentication (every sign method, dynamic
//! activation), an answer with state to every upstream operation, commands to devices and
//! sub-devices, fault injection, and a record of every packet. It reuses the device SDK's
//! codec and signing from [`enos_proto`]. The same cloud logic also runs as a client of an
//! external broker ([`responder`]).
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use enos_sim::{registry::defaults, Sim};
//!
//! // The built-in registry on an ephemeral loopback port.
//! let sim = Sim::builder().start().await?;
//! let url = sim.tcp_url().unwrap();
//! assert!(url.starts_with("tcp://127.0.0.1:"));
//! let device = enos_proto::DeviceKeys::new(defaults::DEVICE_PRODUCT, defaults::DEVICE).unwrap();
//! assert!(!sim.is_online(&device));
//! sim.shutdown();
//! # Ok::<(), std::io::Error>(())
//! # }).unwrap();
//! ```
//!
//! # Registry file
//!
//! ```json
//! {
//!   "products": [
//!     {"productKey": "pk", "productSecret": "ps", "dynamicActivation": true, "gateway": false,
//!      "tsl": {"measurepoints": {"temp": "float"}, "attributes": {"name": "string"},
//!              "events": {"overheat": {"level": "int"}}, "services": {"reset": {}}},
//!      "firmwares": [{"version": "1.1.0", "signMethod": "md5", "sign": "..", "fileUrl": "/f", "fileSize": 10}]}
//!   ],
//!   "devices": [
//!     {"productKey": "pk", "deviceKey": "dk", "deviceSecret": "ds", "gateway": "gpk/gdk"}
//!   ],
//!   "replyQos": 1,
//!   "commandQos": 1
//! }
//! ```
//!
//! # What it sends devices
//!
//! * **Replies** to their requests at `replyQos`, **commands and pushes** at `commandQos`
//!   (`--reply-qos`, `--command-qos`; 0 or 1, default 1). Which QoS EnOS uses is not known
//!   (spec §1, §9); 1 is the stricter case for a device, which must acknowledge each one.
//!   The vendor's SDKs do not set `TCP_NODELAY`, so with QoS 1 each of their requests
//!   waits about 40 ms for a delayed ACK: give them `--reply-qos 0`.
//! * **Command ids** are decimal numbers taken from the clock (epoch milliseconds times
//!   1,000, then counted up): never one of a device's own request ids, which count from 1,
//!   so that an SDK that keys its pending replies by id alone (the vendor's Node.js SDK)
//!   never takes a command for a late reply.
//! * **Sub-device commands** (`enable`, `disable`, `delete`) only for devices in the
//!   gateway's topology: naming another device, or none, is refused
//!   ([`CommandError::NotSubDevices`]; 404 from the admin API) and nothing is sent.
//!
//! # Using enos-sim with other SDKs
//!
//! Any EnOS device can use this cloud, not only those built on this SDK: point it at
//! `tcp://127.0.0.1:11883` with the built-in keys ([`registry::defaults`]) or a registry
//! file of its own. The vendor's Python SDK (`enos-mqtt-sdk-python` 0.1.1) is checked on
//! every CI run by `scripts/interop-python.sh`: every operation it has and every command
//! kind, directly and through mosquitto with `--responder`. What to know:
//!
//! * **Works as on EnOS**: logins (device secret, dynamic activation with the product
//!   secret), tags, attributes, measure point post / resume / batch, raw up and down,
//!   TSL template, topology, sub-device register, login, batch login and logout, posts
//!   on a sub-device's behalf, service invocation, measure point set and get, OTA
//!   upgrade, and sub-device enable / disable / delete.
//! * **What the vendor's SDKs get wrong, answered as EnOS answers it**:
//!   * the Python SDK's event post names its method `thing.event.%s.post` followed by the
//!     id, which is not the topic's method: code 1260;
//!   * its OTA requests name their methods `ota.inform`, `ota.progress` and
//!     `Ota.device.getversion`: code 1260 for each;
//!   * its batch posts send `allowOfflineSubDevice` and `skipInvalidMeasurepoints` as
//!     `""` (taken as false), and `""` for the keys of an entry it was not given keys
//!     for (taken as the topic's device);
//!   * its CONNECT timestamp is fractional, its batch login timestamp is in seconds, and
//!     its signatures are lower-case hex: all accepted, signed as sent;
//!   * it answers a command it has no handler for with the code as a string (`"1101"`),
//!     read as the number;
//!   * its sub-device register calls `encode()` on the device name: give it a
//!     `StringI18n`, as a plain string fails inside the SDK before anything is sent;
//!   * it needs `paho-mqtt` 1.x (`pip install paho-mqtt==1.6.1`): 2.x changed the client's
//!     constructor;
//!   * the Node.js SDK keys pending replies by id alone: command ids never collide with
//!     its request ids (above).
//! * **Through a plain broker** (`--responder`): the broker delivers only what a client
//!   subscribed, and the vendor's SDKs never subscribe their command topics (EnOS
//!   delivers them unasked), so the device must subscribe them itself. The broker does
//!   not say who published, so a topic of a sub-device in a gateway's topology is taken
//!   as the gateway's, acting for it: refused (1009) until the sub-device is logged in.
//!   The broker authenticates devices itself, so dynamic activation cannot happen there.
//!
//! # Security
//!
//! What the local cloud trusts, and what it refuses to any client:
//!
//! * **Logins.** A device proves itself by the signature of its CONNECT (with its device
//!   secret, or its product's secret for dynamic activation), compared in constant time.
//!   Over TLS with client certificates (`--client-ca`, [`pki::server_tls`]) a verified
//!   certificate may stand in for the signature, for the device it was issued to only:
//!   the common name of its subject, or one of its DNS subject alternative names, is the
//!   device key ([`pki::Ca::device_cert`] issues such certificates;
//!   [`pki::certificate_names`] reads them). Another device's certificate from the same
//!   CA is refused (CONNACK 5) and does not take the session over.
//! * **Secrets it issues** (dynamic activation, `thing.device.register`) come from the
//!   operating system's random source. Asset ids and generated device keys, which are not
//!   secret, come from a generator that [`registry::Registry::seed`] makes reproducible.
//! * **Subscriptions** are granted only within the device's own topics or those of its
//!   sub-devices (in its topology, or logged in through it), with both keys written out;
//!   anything wider, or another device's topics, gets 0x80 in the SUBACK.
//! * **Bounds on one client.** At most [`SimBuilder::max_pending_connects`] (1,024)
//!   connections wait for their CONNECT at once, each holding at most 64 KiB until
//!   [`SimBuilder::connect_timeout`] (10 s); past it a connection is closed when accepted.
//!   A packet after the CONNECT is at most 1 MiB. A gateway registers at most
//!   `max_registered_per_gateway` (10,000) devices in all and 1,000 per request (460 past
//!   either), and has at most `max_sub_devices_online` (200) sub-devices online.
//! * **Replayed CONNECTs.** A CONNECT's signature covers its timestamp, but EnOS is not
//!   known to check how old that is (spec §2), so by default neither does this cloud.
//!   [`SimBuilder::max_clock_skew`] (`--max-clock-skew SECONDS`) refuses a CONNECT (5)
//!   or a sub-device login (770) whose timestamp is further than that from this clock.
//! * **The admin API** (`enos-sim serve --admin`, default `127.0.0.1:18080`) listens on
//!   loopback only, and answers only requests that carry the token made at start (in a
//!   file only its owner can read), name the listener in `host` (and in `origin`, if
//!   any), send JSON bodies only and arrive within 10 s ([`admin`] says how). Its record
//!   of packets shows no device secret unless [`SimBuilder::record_secrets`] asks for
//!   them: activation pushes and registration replies are kept with `*` in their place.
//!   Its web console's page and code need no token (they hold no data); the page takes
//!   the token from its address's fragment, which browsers never send, keeps it in the
//!   tab's session storage and sends it with each call; its content security policy lets
//!   it load and call this listener only.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use enos_proto::codec::ConnectReturnCode;
use enos_proto::ops::Firmware;
use enos_proto::tls::rustls::ServerConfig;
use enos_proto::{DeviceKeys, PacketKind};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub mod admin;
mod cloud;
pub mod cloud_limits;
pub mod connect;
mod device_http;
mod diagnostics;
pub mod mosquitto;
pub mod pki;
pub mod proxy;
pub mod registry;
pub mod responder;
mod server;
mod thread;

pub use cloud::{
    Accepted, Cloud, Command, CommandDone, CommandError, CommandReply, CommandResponse, CommandToken, ConnId,
    ConnectInfo, Delivery, Handled, Issued, Outbound, SubDeviceAction,
};

pub use registry::Registry;
pub use thread::SimThread;

/// What a connection task is asked to do.
#[derive(Debug)]
pub(crate) enum ConnMsg {
    /// Publish this at QoS 1.
    Publish(Outbound),
    /// Write these bytes as they are (fault injection).
    Raw(Bytes),
}

/// A connection as the rest of the simulator reaches it: its message queue, and a close
/// signal that a full queue cannot hold back.
pub(crate) struct ConnHandle {
    pub(crate) tx: mpsc::Sender<ConnMsg>,
    pub(crate) close: Arc<tokio::sync::Notify>,
}

/// The direction of a recorded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the device.
    In,
    /// To the device.
    Out,
}

/// One packet in a device's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// When it passed.
    pub at: SystemTime,
    /// Which way.
    pub direction: Direction,
    /// Its kind.
    pub kind: PacketKind,
    /// Its topic (PUBLISH).
    pub topic: Option<String>,
    /// Its payload (PUBLISH).
    pub payload: Bytes,
}

pub(crate) enum ReplyFault {
    None,
    Drop,
    Delay(Duration),
}

#[derive(Default)]
struct Faults {
    refuse: u32,
    refuse_code: Option<ConnectReturnCode>,
    drop_replies: u32,
    delay: Option<Duration>,
    cut_after: HashMap<DeviceKeys, u64>,
}

/// How a command the cloud issued ended, for the caller waiting for it.
type CommandResult = Result<CommandReply, CommandError>;

struct Listener {
    addr: SocketAddr,
    tls: Option<Arc<ServerConfig>>,
    task: Option<JoinHandle<()>>,
}

pub(crate) struct Inner {
    cloud: Mutex<Cloud>,
    pub(crate) conns: Mutex<HashMap<ConnId, ConnHandle>>,
    /// The callers waiting for a command's result, by the command's token.
    waiters: Mutex<HashMap<CommandToken, oneshot::Sender<CommandResult>>>,
    /// The origin of the commands' clock ([`Inner::clock_ms`]).
    epoch: tokio::time::Instant,
    faults: Mutex<Faults>,
    record: Mutex<HashMap<DeviceKeys, VecDeque<Recorded>>>,
    record_limit: usize,
    record_secrets: bool,
    pub(crate) next_conn: AtomicU64,
    pub(crate) connect_timeout: Duration,
    /// Connections that have not logged in yet, and how many may be.
    pub(crate) pending_connects: std::sync::atomic::AtomicUsize,
    pub(crate) max_pending_connects: usize,
    listeners: Mutex<Vec<Listener>>,
    /// The device HTTP endpoint, when it runs: its address, whether over TLS, its task.
    http: Mutex<Option<(SocketAddr, bool, JoinHandle<()>)>>,
    /// Files devices posted, and firmware, served by the HTTP endpoint.
    pub(crate) files: Mutex<device_http::FileStore>,
    /// Grows at every packet a device sends or is sent, and at every disconnection.
    activity: AtomicU64,
}

/// The most payload bytes one record entry keeps.
pub const RECORD_PAYLOAD_BYTES: usize = 4096;

/// `payload` with the value of every `"deviceSecret"` string overwritten by `*` (its
/// length kept); `None` when it holds none.
fn redact_secrets(payload: &[u8]) -> Option<Vec<u8>> {
    const KEY: &[u8] = b"\"deviceSecret\"";
    let mut out: Option<Vec<u8>> = None;
    let mut from = 0;
    while let Some(i) = payload[from..].windows(KEY.len()).position(|w| w == KEY) {
        let mut at = from + i + KEY.len();
        while payload.get(at).is_some_and(|b| b.is_ascii_whitespace() || *b == b':') {
            at += 1;
        }
        if payload.get(at) == Some(&b'"') {
            let start = at + 1;
            let end = payload[start..].iter().position(|b| *b == b'"').map_or(payload.len(), |k| start + k);
            out.get_or_insert_with(|| payload.to_vec())[start..end].fill(b'*');
            at = end;
        }
        from = at;
    }
    out
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The wall clock in epoch milliseconds.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Inner {
    pub(crate) fn cloud(&self) -> MutexGuard<'_, Cloud> {
        lock(&self.cloud)
    }

    pub(crate) fn send(&self, conn: ConnId, msg: ConnMsg) -> bool {
        lock(&self.conns).get(&conn).is_some_and(|h| h.tx.try_send(msg).is_ok())
    }

    /// Asks a connection to close. Returns whether it exists.
    pub(crate) fn close(&self, conn: ConnId) -> bool {
        lock(&self.conns).get(&conn).map(|h| h.close.notify_one()).is_some()
    }

    pub(crate) fn record(
        &self,
        device: &DeviceKeys,
        direction: Direction,
        kind: PacketKind,
        topic: Option<&str>,
        payload: Bytes,
    ) {
        self.touched();
        if self.record_limit == 0 {
            return;
        }
        // A large payload is kept truncated, as a copy that holds no packet buffer alive.
        let payload = if payload.len() > RECORD_PAYLOAD_BYTES {
            Bytes::copy_from_slice(&payload[..RECORD_PAYLOAD_BYTES])
        } else {
            payload
        };
        let payload = match self.record_secrets {
            false => redact_secrets(&payload).map_or(payload, Bytes::from),
            true => payload,
        };
        let mut r = lock(&self.record);
        let q = r.entry(device.clone()).or_default();
        if q.len() >= self.record_limit {
            q.pop_front();
        }
        q.push_back(Recorded { at: SystemTime::now(), direction, kind, topic: topic.map(str::to_owned), payload });
    }

    /// Something a watcher of [`Sim::activity`] should see happened.
    pub(crate) fn touched(&self) {
        self.activity.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn take_refusal(&self) -> Option<ConnectReturnCode> {
        let mut f = lock(&self.faults);
        if f.refuse > 0 {
            f.refuse -= 1;
            return f.refuse_code;
        }
        None
    }

    pub(crate) fn cut_due(&self, device: &DeviceKeys, packets: u64) -> bool {
        let mut f = lock(&self.faults);
        if f.cut_after.get(device).is_some_and(|n| packets >= *n) {
            f.cut_after.remove(device);
            return true;
        }
        false
    }

    pub(crate) fn reply_fault(&self) -> ReplyFault {
        let mut f = lock(&self.faults);
        if f.drop_replies > 0 {
            f.drop_replies -= 1;
            return ReplyFault::Drop;
        }
        f.delay.map_or(ReplyFault::None, ReplyFault::Delay)
    }

    /// Handles a device's PUBLISH on connection `conn` in the cloud: the replies to send
    /// back. A command it answers wakes its caller.
    pub(crate) fn handle_publish(&self, conn: ConnId, topic: &str, payload: &Bytes) -> Handled {
        let mut cloud = self.cloud();
        let handled = cloud.publish(conn, topic, payload, unix_ms());
        self.deliver_command_results(&mut cloud);
        handled
    }

    /// Milliseconds on the commands' clock: monotonic, from the start of this cloud
    /// (tokio's clock, so that a test with paused time pauses it too).
    fn clock_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The instant of `ms` on the commands' clock.
    fn instant_at(&self, ms: u64) -> tokio::time::Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// Hands every command result the cloud has ready to the caller waiting for it (a
    /// caller that gave up has cancelled its command, so it has none). Called with the
    /// cloud locked after each input that can end a command: a device's publish, a
    /// deadline.
    pub(crate) fn deliver_command_results(&self, cloud: &mut Cloud) {
        let Some(mut done) = cloud.poll_command_done() else { return };
        let mut waiters = lock(&self.waiters);
        loop {
            if let Some(tx) = waiters.remove(&done.token) {
                let _ = tx.send(done.result);
            }
            match cloud.poll_command_done() {
                Some(next) => done = next,
                None => return,
            }
        }
    }

    /// Registers the caller of a command just issued. Called with the cloud still locked,
    /// so that no result of the command can come out before its caller waits for it.
    fn waiter(&self, issued: &Issued) -> Waiter<'_> {
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).insert(issued.token, tx);
        Waiter { inner: self, token: issued.token, rx, deadline_ms: issued.deadline_ms, timeout: issued.timeout }
    }
}

/// The caller of a command, waiting for its result. However the wait ends (a result, an
/// error, or the caller giving up), the cloud forgets the command when this drops: nothing
/// is left behind for a reply that never comes.
struct Waiter<'a> {
    inner: &'a Inner,
    token: CommandToken,
    rx: oneshot::Receiver<CommandResult>,
    deadline_ms: u64,
    timeout: Duration,
}

impl Waiter<'_> {
    /// The command's result: its reply, or its timeout at its deadline, when the cloud
    /// ends it.
    async fn result(mut self) -> CommandResult {
        let inner = self.inner;
        let timed_out = CommandError::TimedOut(self.timeout);
        // One timer per waiting caller; whichever fires first ends every command due.
        let mut wake = inner.instant_at(self.deadline_ms);
        loop {
            tokio::select! {
                biased;
                r = &mut self.rx => return r.unwrap_or(Err(timed_out)),
                () = tokio::time::sleep_until(wake) => {
                    let mut cloud = inner.cloud();
                    cloud.handle_timeout(inner.clock_ms());
                    inner.deliver_command_results(&mut cloud);
                    match cloud.poll_timeout() {
                        Some(next) => wake = inner.instant_at(next),
                        // Nothing is pending: this command's result was just handed over.
                        None => return self.rx.try_recv().unwrap_or(Err(timed_out)),
                    }
                }
            }
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut cloud = self.inner.cloud();
        cloud.cancel_command(self.token);
        lock(&self.inner.waiters).remove(&self.token);
    }
}

/// How to start a [`Sim`].
pub struct SimBuilder {
    registry: Registry,
    tcp: Option<SocketAddr>,
    tls: Option<(SocketAddr, Arc<ServerConfig>)>,
    record_limit: usize,
    record_secrets: bool,
    connect_timeout: Duration,
    max_pending_connects: usize,
    max_clock_skew: Option<Duration>,
    command_timeout: Duration,
    http: Option<(SocketAddr, Option<Arc<ServerConfig>>)>,
}

impl SimBuilder {
    /// Use this registry instead of the built-in one.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Listen for plain MQTT here (default `127.0.0.1:0`, an ephemeral port).
    pub fn tcp(mut self, addr: SocketAddr) -> Self {
        self.tcp = Some(addr);
        self
    }

    /// Also serve the device HTTP endpoint (extensions spec E1) on `addr`, e.g.
    /// `127.0.0.1:0`: devices log in and send their requests over HTTP there.
    pub fn http(mut self, addr: SocketAddr) -> Self {
        self.http = Some((addr, None));
        self
    }

    /// Serve the device HTTP endpoint over TLS (`https://`) on `addr`.
    pub fn https(mut self, addr: SocketAddr, config: Arc<ServerConfig>) -> Self {
        self.http = Some((addr, Some(config)));
        self
    }

    /// No plain TCP listener.
    pub fn no_tcp(mut self) -> Self {
        self.tcp = None;
        self
    }

    /// Listen for MQTT over TLS here, with this server configuration (see [`pki`] to
    /// make one, with or without client certificates).
    pub fn tls(mut self, addr: SocketAddr, config: Arc<ServerConfig>) -> Self {
        self.tls = Some((addr, config));
        self
    }

    /// Keep at most `n` packets per device in the record (0 records nothing; default
    /// 1000).
    pub fn record_limit(mut self, n: usize) -> Self {
        self.record_limit = n;
        self
    }

    /// Keep device secrets in the record (activation pushes, registration replies); by
    /// default their values are overwritten with `*`, so that the record (and the admin
    /// API that shows it) holds no secret.
    pub fn record_secrets(mut self, keep: bool) -> Self {
        self.record_secrets = keep;
        self
    }

    /// How long a new connection may take to send its CONNECT (default 10 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// How many connections may wait for their CONNECT at once (default 1,024): past it
    /// a new connection is closed as soon as it is accepted. Each may hold up to 64 KiB
    /// until its CONNECT deadline ([`connect_timeout`](Self::connect_timeout)).
    pub fn max_pending_connects(mut self, n: usize) -> Self {
        self.max_pending_connects = n;
        self
    }

    /// Refuse logins (CONNECTs, sub-device logins) whose timestamp is further than `skew`
    /// from this machine's clock: a captured CONNECT cannot be replayed later. Off by
    /// default, as EnOS is not known to check (spec §2).
    pub fn max_clock_skew(mut self, skew: Duration) -> Self {
        self.max_clock_skew = Some(skew);
        self
    }

    /// How long a command waits for the device's reply (default 10 s).
    pub fn command_timeout(mut self, d: Duration) -> Self {
        self.command_timeout = d;
        self
    }

    /// Binds the listeners and starts serving on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// The bind error of a listener.
    pub async fn start(self) -> std::io::Result<Sim> {
        let inner = Arc::new(Inner {
            cloud: Mutex::new({
                let mut c = Cloud::new(self.registry);
                c.max_clock_skew = self.max_clock_skew;
                c.command_timeout = self.command_timeout;
                c
            }),
            conns: Mutex::new(HashMap::new()),
            waiters: Mutex::new(HashMap::new()),
            epoch: tokio::time::Instant::now(),
            faults: Mutex::new(Faults::default()),
            record: Mutex::new(HashMap::new()),
            record_limit: self.record_limit,
            record_secrets: self.record_secrets,
            next_conn: AtomicU64::new(1),
            connect_timeout: self.connect_timeout,
            pending_connects: std::sync::atomic::AtomicUsize::new(0),
            max_pending_connects: self.max_pending_connects,
            listeners: Mutex::new(Vec::new()),
            http: Mutex::new(None),
            files: Mutex::new(device_http::FileStore::default()),
            activity: AtomicU64::new(0),
        });
        let sim = Sim { inner };
        for (addr, tls) in self.tcp.map(|a| (a, None)).into_iter().chain(self.tls.map(|(a, c)| (a, Some(c)))) {
            let listener = TcpListener::bind(addr).await?;
            let addr = listener.local_addr()?;
            tracing::info!(%addr, tls = tls.is_some(), "listening");
            let task = tokio::spawn(server::accept_loop(sim.inner.clone(), listener, tls.clone()));
            lock(&sim.inner.listeners).push(Listener { addr, tls, task: Some(task) });
        }
        if let Some((addr, tls)) = self.http {
            let listener = TcpListener::bind(addr).await?;
            let addr = listener.local_addr()?;
            tracing::info!(%addr, tls = tls.is_some(), "device HTTP endpoint listening");
            let secure = tls.is_some();
            let task = tokio::spawn(device_http::serve(sim.inner.clone(), listener, tls));
            *lock(&sim.inner.http) = Some((addr, secure, task));
        }
        Ok(sim)
    }
}

/// A running simulated cloud. Cloning gives another handle to the same cloud.
#[derive(Clone)]
pub struct Sim {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").field("listeners", &self.addrs()).finish_non_exhaustive()
    }
}

impl Sim {
    /// A builder with the built-in registry, plain TCP on an ephemeral loopback port, no
    /// TLS.
    pub fn builder() -> SimBuilder {
        SimBuilder {
            registry: Registry::builtin(),
            tcp: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            tls: None,
            record_limit: 1000,
            record_secrets: false,
            connect_timeout: Duration::from_secs(10),
            max_pending_connects: 1024,
            max_clock_skew: None,
            command_timeout: Duration::from_secs(10),
            http: None,
        }
    }

    fn addrs(&self) -> Vec<(SocketAddr, bool)> {
        lock(&self.inner.listeners).iter().map(|l| (l.addr, l.tls.is_some())).collect()
    }

    /// The plain TCP listener's address.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.addrs().into_iter().find(|(_, tls)| !tls).map(|(a, _)| a)
    }

    /// The TLS listener's address.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.addrs().into_iter().find(|(_, tls)| *tls).map(|(a, _)| a)
    }

    /// `tcp://127.0.0.1:PORT`, as a device's broker URL.
    pub fn tcp_url(&self) -> Option<String> {
        self.tcp_addr().map(|a| format!("tcp://{a}"))
    }

    /// `ssl://localhost:PORT`, as a device's broker URL (the test certificates name
    /// `localhost` and `127.0.0.1`).
    pub fn tls_url(&self) -> Option<String> {
        self.tls_addr().map(|a| format!("ssl://localhost:{}", a.port()))
    }

    /// The device HTTP endpoint's URL, when it runs: `http://127.0.0.1:PORT`
    /// ([`SimBuilder::http`]), or `https://localhost:PORT` ([`SimBuilder::https`]; the test
    /// certificates name `localhost`).
    pub fn http_url(&self) -> Option<String> {
        lock(&self.inner.http).as_ref().map(|(a, tls, _)| match tls {
            false => format!("http://{a}"),
            true => format!("https://localhost:{}", a.port()),
        })
    }

    /// Stores a file for device `keys` under `uri` (a firmware for an OTA upgrade's
    /// `fileUrl`, with category `ota`), served by the HTTP endpoint's downloads.
    ///
    /// # Errors
    ///
    /// When the store's bound (256 MiB in all) would be passed.
    pub fn add_file(
        &self,
        keys: &DeviceKeys,
        uri: &str,
        category: enos_proto::http::FileCategory,
        bytes: Bytes,
    ) -> Result<(), String> {
        lock(&self.inner.files).put(keys, uri, category, bytes)
    }

    /// A plain URL of a file stored for `keys` under `uri` on the device HTTP endpoint
    /// (ranges served, no session): a firmware at a plain URL.
    pub fn file_url(&self, keys: &DeviceKeys, uri: &str) -> Option<String> {
        let base = self.http_url()?;
        let mut files = lock(&self.inner.files);
        files.get(keys, uri)?;
        Some(format!("{base}/files/{}", files.token(keys, uri)))
    }

    /// The files stored for `keys`: (URI, category, size), by URI.
    pub fn files(&self, keys: &DeviceKeys) -> Vec<(String, enos_proto::http::FileCategory, usize)> {
        lock(&self.inner.files).list(keys)
    }

    /// The bytes of a file stored for `keys` under `uri`.
    pub fn file(&self, keys: &DeviceKeys, uri: &str) -> Option<Bytes> {
        lock(&self.inner.files).get(keys, uri).map(|(_, b)| b)
    }

    /// Runs `f` on the cloud's state: registry, sessions, raw reply bytes.
    pub fn with_cloud<R>(&self, f: impl FnOnce(&mut Cloud) -> R) -> R {
        let mut cloud = self.inner.cloud();
        let r = f(&mut cloud);
        self.inner.deliver_command_results(&mut cloud);
        r
    }

    /// A copy of what the cloud knows of a device.
    pub fn device(&self, keys: &DeviceKeys) -> Option<registry::Device> {
        self.inner.cloud().registry.devices.get(keys).cloned()
    }

    /// Whether a device is connected or logged in through a gateway.
    pub fn is_online(&self, keys: &DeviceKeys) -> bool {
        self.inner.cloud().is_online(keys)
    }

    /// Open device connections.
    pub fn connections(&self) -> usize {
        lock(&self.inner.conns).len()
    }

    /// The packets recorded for a device (its own connection's traffic), oldest first.
    pub fn record(&self, keys: &DeviceKeys) -> Vec<Recorded> {
        lock(&self.inner.record).get(keys).map(|q| q.iter().cloned().collect()).unwrap_or_default()
    }

    /// Forgets every device's record.
    pub fn clear_record(&self) {
        lock(&self.inner.record).clear();
    }

    /// A counter that grows whenever a device sends or is sent a packet, and whenever a
    /// connection ends: poll it to learn that something may have changed (the web console
    /// does, to refresh what it shows).
    pub fn activity(&self) -> u64 {
        self.inner.activity.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets how long commands wait for the device's reply.
    pub fn set_command_timeout(&self, d: Duration) {
        self.inner.cloud().command_timeout = d;
    }

    // ----- commands (spec §6, §7, §10): issued and correlated by the cloud -----

    /// Issues a command with `issue` in the cloud, which builds it and will correlate its
    /// reply, and registers its caller under the same lock.
    fn issue(
        &self,
        issue: impl FnOnce(&mut Cloud, u64) -> Result<Issued, CommandError>,
    ) -> Result<(Waiter<'_>, Issued), CommandError> {
        let mut cloud = self.inner.cloud();
        let issued = issue(&mut cloud, self.inner.clock_ms())?;
        Ok((self.inner.waiter(&issued), issued))
    }

    /// Sends a command the cloud issued, and waits for its result.
    async fn send_and_wait(&self, waiter: Waiter<'_>, issued: Issued) -> CommandResult {
        if !self.inner.send(issued.conn, ConnMsg::Publish(issued.message)) {
            return Err(CommandError::Congested);
        }
        waiter.result().await
    }

    /// Sends a JSON command and waits for its reply.
    async fn command(&self, keys: &DeviceKeys, command: Command) -> Result<CommandResponse, CommandError> {
        let (waiter, issued) = self.issue(|cloud, now_ms| cloud.issue_command(now_ms, keys, command))?;
        self.send_and_wait(waiter, issued).await?.into_envelope()
    }

    /// Invokes service `service_id` of a device or sub-device and waits for its reply.
    ///
    /// # Errors
    ///
    /// [`CommandError`] when the device is offline or does not answer in time.
    pub async fn invoke_service(
        &self,
        keys: &DeviceKeys,
        service_id: &str,
        params: Value,
    ) -> Result<CommandResponse, CommandError> {
        self.command(keys, Command::InvokeService { service_id: service_id.to_owned(), params }).await
    }

    /// Sets measure points (`{pointId: value}`) on a device.
    ///
    /// # Errors
    ///
    /// As [`Sim::invoke_service`].
    pub async fn set_measurepoints(&self, keys: &DeviceKeys, points: Value) -> Result<CommandResponse, CommandError> {
        self.command(keys, Command::SetMeasurepoints { points }).await
    }

    /// Sends traffic control (extensions spec E6) to a device with these `params`, and
    /// waits for its reply (on `…/traffic/control_reply`, or the vendor's Java SDK's on the
    /// command topic itself).
    ///
    /// # Errors
    ///
    /// As [`Sim::invoke_service`].
    pub async fn traffic_control(&self, keys: &DeviceKeys, params: Value) -> Result<CommandResponse, CommandError> {
        self.command(keys, Command::TrafficControl { params }).await
    }

    /// Reads measure points from a device.
    ///
    /// # Errors
    ///
    /// As [`Sim::invoke_service`].
    pub async fn get_measurepoints(&self, keys: &DeviceKeys, ids: &[&str]) -> Result<CommandResponse, CommandError> {
        let point_ids = ids.iter().map(|id| (*id).to_owned()).collect();
        self.command(keys, Command::GetMeasurepoints { point_ids }).await
    }

    /// Pushes an OTA upgrade; for an offline device it is queued until its next CONNECT
    /// (`Ok(None)`).
    ///
    /// # Errors
    ///
    /// As [`Sim::invoke_service`] when the device is online.
    pub async fn push_ota(
        &self,
        keys: &DeviceKeys,
        firmware: Firmware,
    ) -> Result<Option<CommandResponse>, CommandError> {
        let (waiter, issued) = {
            let mut cloud = self.inner.cloud();
            // Offline: queued in the cloud, and nothing to wait for.
            let Some(issued) = cloud.push_ota(self.inner.clock_ms(), keys, firmware)? else { return Ok(None) };
            (self.inner.waiter(&issued), issued)
        };
        self.send_and_wait(waiter, issued).await?.into_envelope().map(Some)
    }

    async fn sub_devices(
        &self,
        gateway: &DeviceKeys,
        action: SubDeviceAction,
        subs: &[DeviceKeys],
    ) -> Result<CommandResponse, CommandError> {
        let (waiter, issued) = self.issue(|cloud, now_ms| cloud.sub_devices_command(now_ms, gateway, action, subs))?;
        self.send_and_wait(waiter, issued).await?.into_envelope()
    }

    /// Enables sub-devices and tells their gateway.
    ///
    /// # Errors
    ///
    /// As [`Sim::invoke_service`], for the gateway.
    pub async fn enable_sub_devices(
        &self,
        gateway: &DeviceKeys,
        subs: &[DeviceKeys],
    ) -> Result<CommandResponse, CommandError> {
        self.sub_devices(gateway, SubDeviceAction::Enable, subs).await
    }

    /// Disables sub-devices (logging them out) and tells their gateway.
    ///
    /// # Errors
    ///
    /// As [`Sim::invoke_service`], for the gateway.
    pub async fn disable_sub_devices(
        &self,
        gateway: &DeviceKeys,
        subs: &[DeviceKeys],
    ) -> Result<CommandResponse, CommandError> {
        self.sub_devices(gateway, SubDeviceAction::Disable, subs).await
    }

    /// Deletes sub-devices (logging them out) and tells their gateway.
    ///
    /// # Errors
    ///
    /// As [`Sim::invoke_service`], for the gateway.
    pub async fn delete_sub_devices(
        &self,
        gateway: &DeviceKeys,
        subs: &[DeviceKeys],
    ) -> Result<CommandResponse, CommandError> {
        self.sub_devices(gateway, SubDeviceAction::Delete, subs).await
    }

    /// Sends a device its own state command, `thing.enable`, `thing.disable` or
    /// `thing.delete` (`what`: `enable`, `disable`, `delete`), and waits for its reply. The
    /// registry is left as it is: [`disable_device`](Sim::disable_device) is the state
    /// change.
    ///
    /// # Errors
    ///
    /// As [`Sim::invoke_service`].
    pub async fn send_device_state(&self, keys: &DeviceKeys, what: &str) -> Result<CommandResponse, CommandError> {
        self.command(keys, Command::DeviceState { what: what.to_owned() }).await
    }

    /// Disables a directly connected device: its connection is closed and later CONNECTs
    /// are refused. `enable_device` undoes it.
    pub fn disable_device(&self, keys: &DeviceKeys) {
        let conn = self.inner.cloud().disable_device(keys);
        if let Some(c) = conn {
            self.inner.close(c);
        }
    }

    /// Enables a device again.
    pub fn enable_device(&self, keys: &DeviceKeys) {
        self.inner.cloud().enable_device(keys);
    }

    /// Sends raw bytes down (`thing/model/down_raw`) and waits for the bytes the device
    /// answers on `down_raw_reply`.
    ///
    /// # Errors
    ///
    /// As [`Sim::invoke_service`].
    pub async fn send_down_raw(&self, keys: &DeviceKeys, payload: Bytes) -> Result<Bytes, CommandError> {
        let (waiter, issued) = self.issue(|cloud, now_ms| cloud.send_down_raw(now_ms, keys, payload))?;
        self.send_and_wait(waiter, issued).await?.into_raw()
    }

    // ----- fault injection -----

    /// Refuses the next `n` CONNECTs with `code` (whatever their credentials).
    pub fn refuse_next_connects(&self, n: u32, code: ConnectReturnCode) {
        let mut f = lock(&self.inner.faults);
        f.refuse = n;
        f.refuse_code = Some(code);
    }

    /// Closes a directly connected device's connection now. Returns whether it was
    /// connected.
    pub fn cut(&self, keys: &DeviceKeys) -> bool {
        let conn = self.inner.cloud().direct(keys);
        conn.is_some_and(|c| self.inner.close(c))
    }

    /// Closes a device's connection once it has sent `n` more packets... counted from its
    /// CONNECT (the n-th packet is not answered).
    pub fn cut_after(&self, keys: &DeviceKeys, n: u64) {
        lock(&self.inner.faults).cut_after.insert(keys.clone(), n);
    }

    /// Delays every reply to an upstream request by `d` (`None`: no delay).
    pub fn delay_replies(&self, d: Option<Duration>) {
        lock(&self.inner.faults).delay = d;
    }

    /// Drops the next `n` replies to upstream requests.
    pub fn drop_replies(&self, n: u32) {
        lock(&self.inner.faults).drop_replies = n;
    }

    /// Sends a malformed packet (a reserved packet type) to a device.
    pub fn send_malformed(&self, keys: &DeviceKeys) -> bool {
        let conn = self.inner.cloud().direct(keys);
        conn.is_some_and(|c| self.inner.send(c, ConnMsg::Raw(Bytes::from_static(&[0xf0, 0x00]))))
    }

    /// Stops every listener and closes every connection, as a broker going down.
    pub fn stop_listeners(&self) {
        for l in lock(&self.inner.listeners).iter_mut() {
            if let Some(t) = l.task.take() {
                t.abort();
            }
        }
        let conns: Vec<ConnId> = lock(&self.inner.conns).keys().copied().collect();
        for c in conns {
            self.inner.close(c);
        }
    }

    /// Starts the listeners again on the same addresses.
    ///
    /// # Errors
    ///
    /// The bind error (the port was taken meanwhile).
    pub async fn restart_listeners(&self) -> std::io::Result<()> {
        let stopped: Vec<(usize, SocketAddr, Option<Arc<ServerConfig>>)> = lock(&self.inner.listeners)
            .iter()
            .enumerate()
            .filter(|(_, l)| l.task.is_none())
            .map(|(i, l)| (i, l.addr, l.tls.clone()))
            .collect();
        for (i, addr, tls) in stopped {
            let listener = TcpListener::bind(addr).await?;
            let task = tokio::spawn(server::accept_loop(self.inner.clone(), listener, tls));
            if let Some(l) = lock(&self.inner.listeners).get_mut(i) {
                l.task = Some(task);
            }
        }
        Ok(())
    }

    /// Stops serving: listeners stop and connections close.
    pub fn shutdown(&self) {
        self.stop_listeners();
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}
