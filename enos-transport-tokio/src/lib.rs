//! The EnOS IoT device SDK on tokio: [`DeviceClient`] and [`GatewayClient`], named like
//! the vendor's Node.js SDK, over TCP and TLS (rustls).
//!
//! A thin driver: one task moves bytes between the socket and the sans-IO core
//! ([`enos_proto`]), wakes on the core's deadline, and hands responses, events and
//! commands to the application. Every protocol decision is the core's.
//!
//! # Quick start, against the built-in local cloud
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use enos_sim::{registry::defaults::*, Sim};
//! use enos_transport_tokio::{ClientOptions, DeviceClient, RequestOptions};
//! use serde_json::json;
//!
//! let sim = Sim::builder().start().await?;
//! let mut options = ClientOptions::new(sim.tcp_url().unwrap(), DEVICE_PRODUCT, DEVICE);
//! options.device_secret = Some(DEVICE_SECRET.into());
//! let client = DeviceClient::new(options)?;
//! client.connect().await?;
//!
//! // Post measure points; the reply is typed (the seed's `{id, code, data, message}`).
//! let r = client.device_data().post_measurepoint(json!({"temp": 21.5}), RequestOptions::new()).await?;
//! assert_eq!(r.code, 200);
//!
//! // Answer a service invocation from the cloud.
//! client.device_command().on_invoke_service("reset", None, |_cmd, res| async move {
//!     res.ok(json!({"done": true}));
//! });
//! let device = enos_proto::DeviceKeys::new(DEVICE_PRODUCT, DEVICE)?;
//! let reply = sim.invoke_service(&device, "reset", json!({})).await?;
//! assert_eq!(reply.data, json!({"done": true}));
//! client.close().await?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # Queues and their policies
//!
//! * Requests wait in the core's bounded queue while disconnected (typed
//!   `SubmitError::QueueFull` past it); every request ends with its reply or a typed error.
//! * Commands go to a queue of 1,024 for the handlers; each handler runs on its own task,
//!   at most [`MAX_CONCURRENT_HANDLERS`] at once. When the queue is full a command is
//!   answered at once with code 1102 (handler failed): a flood of commands does not grow
//!   memory or stall requests, and every command gets exactly one answer.
//! * Events ([`DeviceClient::events`]) go to each subscriber's queue of 1,024; a
//!   subscriber that falls behind misses events (counted in [`Events::missed`]), never
//!   responses or commands.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use enos_proto::ops::{
    AttributeDelete, AttributeQuery, AttributeUpdate, EventPost, MeasurepointBatchPost, MeasurepointBatchResume,
    MeasurepointPost, MeasurepointResume, OtaGetVersion, OtaInform, OtaProgress, RawUp, SubDeviceBatchLogin,
    SubDeviceLogin, SubDeviceLogout, SubDeviceRegister, SubDeviceRegistration, TagDelete, TagQuery, TagUpdate, TopoAdd,
    TopoDelete, TopoGet, TslTemplateGet,
};
use enos_proto::options::Transport;
use enos_proto::{Client, Command, Config, Credentials, Event, Now, Operation, Reply};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

mod commands;
mod driver;

pub use commands::{Responder, MAX_CONCURRENT_HANDLERS};
pub use enos_proto as proto;
pub use enos_proto::ops::{
    BatchEntry, BatchLoginResult, Firmware, LoginResult, RegisteredDevice, TopoEntry, TslTemplate,
};
pub use enos_proto::options::ClientOptions;
pub use enos_proto::{
    ClientError, ConfigError, DeviceInfo, DeviceKeys, DisconnectCause, Qos, RequestError, RequestOptions, Secret,
    SecureMode, SubDeviceInfo, SubmitError,
};

use commands::{Handler, Handlers, Kind};
use driver::{AppMsg, Job};

/// What can go wrong with a client call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An option cannot work (which, and why).
    #[error(transparent)]
    Options(#[from] ConfigError),
    /// The core refused the request at once (queue full, invalid target, ...).
    #[error(transparent)]
    Submit(SubmitError),
    /// The request ended without a successful reply.
    #[error(transparent)]
    Request(RequestError),
    /// The first connection failed (refused, unreachable, TLS): `connect()` gives up.
    #[error("connection failed: {0}")]
    Connect(DisconnectCause),
    /// No connection or activation within the connection timeout.
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    /// `connect()` was called twice.
    #[error("already connected or connecting")]
    AlreadyStarted,
    /// The client is closed (or was never connected).
    #[error("client closed")]
    Closed,
}

impl From<SubmitError> for Error {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Closed => Error::Closed,
            e => Error::Submit(e),
        }
    }
}

impl From<RequestError> for Error {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::Closed => Error::Closed,
            e => Error::Request(e),
        }
    }
}

/// The seed's response: `{id, code, data, message}` with `data` typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Response<T> {
    /// The envelope id (empty for raw and for requests sent without waiting).
    pub id: String,
    /// 200 on success.
    pub code: i32,
    /// The typed `data`.
    pub data: T,
    /// The message, if any.
    pub message: Option<String>,
}

/// What happened to the connection (the seed's events).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// Connected (`reconnect` after the first time): the seed's `connect`.
    Connect {
        /// Whether it is a reconnection.
        reconnect: bool,
    },
    /// The connection ended: the seed's `close`.
    Close {
        /// Why.
        cause: DisconnectCause,
    },
    /// A message that is neither a reply nor a command: the seed's `message`.
    Message {
        /// Its topic.
        topic: String,
        /// Its payload.
        payload: Bytes,
    },
    /// A device secret issued by dynamic activation: persist it.
    Activated {
        /// The device activated.
        device: DeviceKeys,
        /// Its secret.
        device_secret: Secret,
    },
    /// A problem that did not end the session: the seed's `error`.
    Error(ClientError),
}

impl ClientEvent {
    pub(crate) fn from_core(e: Event) -> Option<Self> {
        Some(match e {
            Event::Connected { reconnect } => ClientEvent::Connect { reconnect },
            Event::Disconnected { cause, .. } => ClientEvent::Close { cause },
            Event::Message { topic, payload } => ClientEvent::Message { topic, payload },
            Event::Activated { device, device_secret, .. } => ClientEvent::Activated { device, device_secret },
            Event::Error(e) => ClientEvent::Error(e),
            _ => return None,
        })
    }
}

/// A subscription to a client's events: a [`futures_core::Stream`], or [`Events::recv`].
pub struct Events {
    rx: mpsc::Receiver<ClientEvent>,
    missed: Arc<AtomicU64>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("missed", &self.missed()).finish_non_exhaustive()
    }
}

impl Events {
    /// The next event; `None` once the client is gone.
    pub async fn recv(&mut self) -> Option<ClientEvent> {
        self.rx.recv().await
    }

    /// Events this subscriber missed because it fell behind.
    pub fn missed(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }
}

impl futures_core::Stream for Events {
    type Item = ClientEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ClientEvent>> {
        self.rx.poll_recv(cx)
    }
}

type Subscriber = (mpsc::Sender<ClientEvent>, Arc<AtomicU64>);
type Subscribers = Arc<Mutex<Vec<Subscriber>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one session (one `connect()` to its `close()`) shares between its driver and the
/// handles.
pub(crate) struct Shared {
    connected: AtomicBool,
    reconnected: AtomicBool,
    subscribers: Subscribers,
    /// The first outcome of `connect()`.
    first: Mutex<Option<oneshot::Sender<Result<(), DisconnectCause>>>>,
    /// The activation `connect()` waits for in secure mode 3.
    activation: Mutex<Option<oneshot::Sender<Secret>>>,
    /// The device secret issued by activation, kept for the next `connect()`.
    activated: Arc<Mutex<Option<Secret>>>,
    own: DeviceKeys,
}

impl Shared {
    fn event(&self, e: Event) {
        let Some(e) = ClientEvent::from_core(e) else { return };
        match &e {
            ClientEvent::Connect { reconnect } => {
                self.connected.store(true, Ordering::Relaxed);
                if *reconnect {
                    self.reconnected.store(true, Ordering::Relaxed);
                }
                if let Some(tx) = lock(&self.first).take() {
                    let _ = tx.send(Ok(()));
                }
            }
            ClientEvent::Close { cause } => {
                self.connected.store(false, Ordering::Relaxed);
                if let Some(tx) = lock(&self.first).take() {
                    let _ = tx.send(Err(cause.clone()));
                }
            }
            ClientEvent::Activated { device, device_secret } if *device == self.own => {
                *lock(&self.activated) = Some(device_secret.clone());
                if let Some(tx) = lock(&self.activation).take() {
                    let _ = tx.send(device_secret.clone());
                }
            }
            _ => {}
        }
        let mut subs = lock(&self.subscribers);
        subs.retain(|(tx, missed)| match tx.try_send(e.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                missed.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    /// The session is over: event streams end.
    fn end(&self) {
        self.connected.store(false, Ordering::Relaxed);
        lock(&self.subscribers).clear();
    }
}

struct Running {
    app: mpsc::Sender<AppMsg>,
    close: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
    shared: Arc<Shared>,
}

struct Inner {
    config: Config,
    transport: Transport,
    handlers: Arc<RwLock<Handlers>>,
    subscribers: Subscribers,
    activated: Arc<Mutex<Option<Secret>>>,
    running: Mutex<Option<Running>>,
    /// The last session's state, for `connected()` and `reconnected()`.
    last: Mutex<Option<Arc<Shared>>>,
}

/// A device's connection to EnOS: the seed's `DeviceClient`. Cloning gives another
/// handle to the same connection; when the last handle is dropped the connection closes.
/// A handler that keeps a handle keeps the connection alive until [`close`](Self::close).
#[derive(Clone)]
pub struct DeviceClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DeviceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceClient")
            .field("device", &self.inner.config.device)
            .field("connected", &self.connected())
            .finish_non_exhaustive()
    }
}

impl DeviceClient {
    /// A client for these options (nothing connects before [`connect`](Self::connect)).
    ///
    /// # Errors
    ///
    /// [`Error::Options`] naming the option that cannot work, and why.
    pub fn new(options: ClientOptions) -> Result<Self, Error> {
        let (config, transport) = options.build()?;
        Ok(Self::from_parts(config, transport))
    }

    /// A client from a core configuration and a transport, for settings beyond the
    /// seed's options (queue bounds, jitter, ...).
    pub fn from_parts(config: Config, transport: Transport) -> Self {
        DeviceClient {
            inner: Arc::new(Inner {
                config,
                transport,
                handlers: Arc::new(RwLock::new(Handlers::default())),
                subscribers: Arc::new(Mutex::new(Vec::new())),
                activated: Arc::new(Mutex::new(None)),
                running: Mutex::new(None),
                last: Mutex::new(None),
            }),
        }
    }

    /// Connects, and resolves once the session is up: with the device secret (in secure
    /// mode 3, the one the cloud issued, once activation completes; later connects use
    /// it in mode 2). After that the client reconnects by itself every
    /// `reconnect_period` until [`close`](Self::close).
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] when the first attempt fails (refused credentials, unreachable
    /// broker, TLS), [`Error::ConnectTimeout`], [`Error::AlreadyStarted`],
    /// [`Error::Closed`] when `close()` interrupts it.
    pub async fn connect(&self) -> Result<Option<Secret>, Error> {
        let (first_tx, first_rx) = oneshot::channel();
        let (act_tx, act_rx) = oneshot::channel();
        let mut config = self.inner.config.clone();
        if let Some(s) = lock(&self.inner.activated).clone() {
            config.credentials = Credentials::DeviceSecret(s);
        }
        let credentials = config.credentials.clone();
        let me = {
            let mut running = lock(&self.inner.running);
            if running.is_some() {
                return Err(Error::AlreadyStarted);
            }
            let shared = Arc::new(Shared {
                connected: AtomicBool::new(false),
                reconnected: AtomicBool::new(false),
                subscribers: self.inner.subscribers.clone(),
                first: Mutex::new(Some(first_tx)),
                activation: Mutex::new(Some(act_tx)),
                activated: self.inner.activated.clone(),
                own: config.device.clone(),
            });
            let core = Client::new(config, Now::system())?;
            let (app_tx, app_rx) = mpsc::channel(1024);
            let (cmd_tx, cmd_rx) = mpsc::channel(1024);
            let (reply_tx, reply_rx) = mpsc::channel(MAX_CONCURRENT_HANDLERS);
            let close = Arc::new(tokio::sync::Notify::new());
            let wiring = driver::Wiring { app: app_rx, replies: reply_rx, commands: cmd_tx, close: close.clone() };
            let task = tokio::spawn(driver::drive(core, self.inner.transport.clone(), wiring, shared.clone()));
            tokio::spawn(commands::dispatch(cmd_rx, self.inner.handlers.clone(), reply_tx));
            *lock(&self.inner.last) = Some(shared.clone());
            *running = Some(Running { app: app_tx, close, task, shared: shared.clone() });
            shared
        };
        // One deadline for the connection and the activation.
        let deadline = tokio::time::Instant::now() + self.inner.config.connect_timeout;
        let timeout = self.inner.config.connect_timeout;
        let outcome = match tokio::time::timeout_at(deadline, first_rx).await {
            Ok(Ok(Ok(()))) => match credentials {
                Credentials::ProductSecret(_) => match tokio::time::timeout_at(deadline, act_rx).await {
                    Ok(Ok(secret)) => Ok(Some(secret)),
                    Ok(Err(_)) => Err(Error::Closed),
                    Err(_) => Err(Error::ConnectTimeout(timeout)),
                },
                Credentials::DeviceSecret(s) => Ok(Some(s)),
                Credentials::Certificate { device_secret } => Ok(device_secret),
                _ => Ok(None),
            },
            Ok(Ok(Err(DisconnectCause::Closed))) | Ok(Err(_)) => Err(Error::Closed),
            Ok(Ok(Err(cause))) => Err(Error::Connect(cause)),
            Err(_) => Err(Error::ConnectTimeout(timeout)),
        };
        if outcome.is_err() {
            // Only this session is torn down, not one a later connect() started.
            let mine = {
                let mut running = lock(&self.inner.running);
                match running.as_ref() {
                    Some(r) if Arc::ptr_eq(&r.shared, &me) => running.take(),
                    _ => None,
                }
            };
            if let Some(r) = mine {
                Self::stop(r).await;
            }
        }
        outcome
    }

    async fn stop(r: Running) {
        r.close.notify_one();
        let mut task = r.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
            task.abort();
        }
    }

    /// Closes the connection: outstanding requests end with [`Error::Closed`], a
    /// DISCONNECT goes out, event streams end. Closing a closed client does nothing.
    ///
    /// # Errors
    ///
    /// None today; the `Result` leaves room.
    pub async fn close(&self) -> Result<(), Error> {
        let running = lock(&self.inner.running).take();
        if let Some(r) = running {
            Self::stop(r).await;
        }
        Ok(())
    }

    /// Whether the session is up: the seed's `connected`.
    pub fn connected(&self) -> bool {
        lock(&self.inner.last).as_ref().is_some_and(|s| s.connected.load(Ordering::Relaxed))
    }

    /// Whether the session has come back after a loss: the seed's `reconnected`.
    pub fn reconnected(&self) -> bool {
        lock(&self.inner.last).as_ref().is_some_and(|s| s.reconnected.load(Ordering::Relaxed))
    }

    /// A new subscription to the client's events; several may exist at once. Streams end
    /// when the client is closed.
    pub fn events(&self) -> Events {
        let (tx, rx) = mpsc::channel(1024);
        let missed = Arc::new(AtomicU64::new(0));
        lock(&self.inner.subscribers).push((tx, missed.clone()));
        Events { rx, missed }
    }

    /// Sends any operation and waits for its typed response.
    ///
    /// # Errors
    ///
    /// [`Error::Submit`] when refused at once, [`Error::Request`] when it ends without a
    /// successful reply (timeout, the cloud's error code, a reply of the wrong shape),
    /// [`Error::Closed`] when the client is closed, whenever that happens.
    pub async fn request<O: Operation + Send + 'static>(
        &self,
        op: O,
        opts: RequestOptions,
    ) -> Result<Response<O::Data>, Error> {
        let app = lock(&self.inner.running).as_ref().map(|r| r.app.clone()).ok_or(Error::Closed)?;
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |core: &mut Client, now| core.request(now, op, opts));
        app.send(AppMsg(job, tx)).await.map_err(|_| Error::Closed)?;
        let reply = rx.await.map_err(|_| Error::Closed)??;
        let data = O::parse_reply(&reply)?;
        Ok(match reply {
            Reply::Json(j) => Response { id: j.id, code: j.code, data, message: j.message },
            _ => Response { id: String::new(), code: 200, data, message: None },
        })
    }

    /// Device data: tags, attributes, measure points, events, raw data (the seed's
    /// `deviceData`).
    pub fn device_data(&self) -> DeviceData<'_> {
        DeviceData { c: self }
    }

    /// Command handlers (the seed's `deviceCommand`).
    pub fn device_command(&self) -> DeviceCommand<'_> {
        DeviceCommand { c: self }
    }

    /// OTA and the thing model (what the vendor's Java and Python SDKs add).
    pub fn ota(&self) -> Ota<'_> {
        Ota { c: self }
    }

    fn on<F, Fut>(&self, kind: Kind, device: Option<DeviceKeys>, f: F)
    where
        F: Fn(Command, Responder) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let h: Handler = Arc::new(move |c, r| Box::pin(f(c, r)));
        self.inner.handlers.write().unwrap_or_else(|e| e.into_inner()).set(kind, device, h);
    }
}

/// The seed's `deviceData`: every method takes [`RequestOptions`] (`target` for a
/// sub-device — the seed's `deviceInfo` — `qos`, `need_reply`, `timeout`).
#[derive(Debug, Clone, Copy)]
pub struct DeviceData<'a> {
    c: &'a DeviceClient,
}

type Res<T> = Result<Response<T>, Error>;

impl DeviceData<'_> {
    /// `queryTag`: the tags asked for (all when empty).
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`].
    pub async fn query_tag<S: Into<String>>(
        &self,
        tags: impl IntoIterator<Item = S>,
        o: RequestOptions,
    ) -> Res<std::collections::BTreeMap<String, String>> {
        self.c.request(TagQuery::new(tags), o).await
    }

    /// `updateTag`: upsert tags.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`].
    pub async fn update_tag<K: Into<String>, V: Into<String>>(
        &self,
        tags: impl IntoIterator<Item = (K, V)>,
        o: RequestOptions,
    ) -> Res<()> {
        self.c.request(TagUpdate::new(tags), o).await
    }

    /// `deleteTag`.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`].
    pub async fn delete_tag<S: Into<String>>(&self, tags: impl IntoIterator<Item = S>, o: RequestOptions) -> Res<()> {
        self.c.request(TagDelete::new(tags), o).await
    }

    /// `queryAttribute`: attribute values (all that have one when empty).
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`].
    pub async fn query_attribute<S: Into<String>>(
        &self,
        ids: impl IntoIterator<Item = S>,
        o: RequestOptions,
    ) -> Res<serde_json::Map<String, serde_json::Value>> {
        self.c.request(AttributeQuery::new(ids), o).await
    }

    /// `updateAttribute`: any value that serializes to `{id: value}`.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`].
    pub async fn update_attribute<A: Serialize + Send + 'static>(&self, attributes: A, o: RequestOptions) -> Res<()> {
        self.c.request(AttributeUpdate::new(attributes), o).await
    }

    /// `deleteAttribute`.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`].
    pub async fn delete_attribute<S: Into<String>>(
        &self,
        ids: impl IntoIterator<Item = S>,
        o: RequestOptions,
    ) -> Res<()> {
        self.c.request(AttributeDelete::new(ids), o).await
    }

    /// `postMeasurepoint`: any value that serializes to `{id: value}`, stamped now.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`].
    pub async fn post_measurepoint<P: Serialize + Send + 'static>(&self, points: P, o: RequestOptions) -> Res<()> {
        self.c.request(MeasurepointPost::new(points), o).await
    }

    /// `postMeasurepoint` with the points' time in epoch milliseconds.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`].
    pub async fn post_measurepoint_at<P: Serialize + Send + 'static>(
        &self,
        points: P,
        unix_ms: u64,
        o: RequestOptions,
    ) -> Res<()> {
        self.c.request(MeasurepointPost::at(points, unix_ms), o).await
    }

    /// `resumeMeasurepoint`: points recorded while offline, at their time.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`].
    pub async fn resume_measurepoint<P: Serialize + Send + 'static>(
        &self,
        points: P,
        unix_ms: u64,
        o: RequestOptions,
    ) -> Res<()> {
        self.c.request(MeasurepointResume::at(points, unix_ms), o).await
    }

    /// `batchPostMeasurepoint`: entries of several devices or times (build it with
    /// `MeasurepointBatchPost::new(..).allow_offline_sub_device(..)`).
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`].
    pub async fn batch_post_measurepoint<P: Serialize + Send + 'static>(
        &self,
        batch: MeasurepointBatchPost<P>,
        o: RequestOptions,
    ) -> Res<()> {
        self.c.request(batch, o).await
    }

    /// `batchResumeMeasurepoint`.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`].
    pub async fn batch_resume_measurepoint<P: Serialize + Send + 'static>(
        &self,
        batch: MeasurepointBatchResume<P>,
        o: RequestOptions,
    ) -> Res<()> {
        self.c.request(batch, o).await
    }

    /// `postEvent`: event `event_id` with any value that serializes to its parameters.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`].
    pub async fn post_event<E: Serialize + Send + 'static>(
        &self,
        event_id: &str,
        params: E,
        o: RequestOptions,
    ) -> Res<()> {
        self.c.request(EventPost::new(event_id, params), o).await
    }

    /// `upRawModel`: raw bytes up; the reply is the cloud's raw bytes.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`].
    pub async fn up_raw_model(&self, payload: impl Into<Bytes>, o: RequestOptions) -> Res<Bytes> {
        self.c.request(RawUp::new(payload), o).await
    }
}

/// The seed's `deviceCommand`: handlers for commands from the cloud. `device` scopes a
/// handler to one sub-device (the seed's `deviceInfo`); `None` takes the command for any
/// device of the connection. A handler runs on its own task and answers through its
/// [`Responder`]; a command without a handler is answered 1101.
#[derive(Debug, Clone, Copy)]
pub struct DeviceCommand<'a> {
    c: &'a DeviceClient,
}

impl DeviceCommand<'_> {
    /// `onInvokeService`: service `service_id` (`"*"` for every service without a handler of
    /// its own).
    pub fn on_invoke_service<F, Fut>(&self, service_id: &str, device: Option<DeviceKeys>, f: F)
    where
        F: Fn(Command, Responder) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let id = (service_id != "*").then(|| service_id.to_owned());
        self.c.on(Kind::Service(id), device, f);
    }

    /// `onSetMeasurepoint`.
    pub fn on_set_measurepoint<F, Fut>(&self, device: Option<DeviceKeys>, f: F)
    where
        F: Fn(Command, Responder) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.c.on(Kind::SetMeasurepoints, device, f);
    }

    /// Measure point get (Java and Python SDKs): answer `{point: value}`.
    pub fn on_get_measurepoint<F, Fut>(&self, device: Option<DeviceKeys>, f: F)
    where
        F: Fn(Command, Responder) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.c.on(Kind::GetMeasurepoints, device, f);
    }

    /// Raw down: answer with [`Responder::raw`].
    pub fn on_down_raw_model<F, Fut>(&self, device: Option<DeviceKeys>, f: F)
    where
        F: Fn(Command, Responder) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.c.on(Kind::RawDown, device, f);
    }

    /// OTA upgrade push.
    pub fn on_ota_upgrade<F, Fut>(&self, device: Option<DeviceKeys>, f: F)
    where
        F: Fn(Command, Responder) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.c.on(Kind::OtaUpgrade, device, f);
    }

    /// `thing.enable` / `thing.disable` / `thing.delete` for the device itself.
    pub fn on_device_state<F, Fut>(&self, f: F)
    where
        F: Fn(Command, Responder) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.c.on(Kind::Device, None, f);
    }
}

/// OTA and the thing model.
#[derive(Debug, Clone, Copy)]
pub struct Ota<'a> {
    c: &'a DeviceClient,
}

impl Ota<'_> {
    /// Reports the running firmware version.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`].
    pub async fn report_version(&self, version: &str, o: RequestOptions) -> Res<()> {
        self.c.request(OtaInform::new(version), o).await
    }

    /// Reports an upgrade's progress (`"0"`..`"100"`, or a negative failure step).
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`].
    pub async fn report_progress(&self, step: &str, desc: &str, o: RequestOptions) -> Res<()> {
        self.c.request(OtaProgress::new(step, desc), o).await
    }

    /// The firmwares available to the device.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`].
    pub async fn get_version(&self, o: RequestOptions) -> Res<Vec<Firmware>> {
        self.c.request(OtaGetVersion {}, o).await
    }

    /// The product's thing model.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`].
    pub async fn get_tsl_template(&self, o: RequestOptions) -> Res<TslTemplate> {
        self.c.request(TslTemplateGet {}, o).await
    }
}

/// A gateway's connection: everything a [`DeviceClient`] does, plus sub-device management
/// (the seed's `GatewayClient`).
#[derive(Clone, Debug)]
pub struct GatewayClient {
    device: DeviceClient,
}

impl std::ops::Deref for GatewayClient {
    type Target = DeviceClient;
    fn deref(&self) -> &DeviceClient {
        &self.device
    }
}

impl GatewayClient {
    /// A gateway client for these options.
    ///
    /// # Errors
    ///
    /// [`Error::Options`].
    pub fn new(options: ClientOptions) -> Result<Self, Error> {
        Ok(GatewayClient { device: DeviceClient::new(options)? })
    }

    /// The seed's `subDeviceManagement`.
    pub fn sub_device_management(&self) -> SubDeviceManagement<'_> {
        SubDeviceManagement { c: &self.device }
    }
}

/// The seed's `subDeviceManagement`.
#[derive(Debug, Clone, Copy)]
pub struct SubDeviceManagement<'a> {
    c: &'a DeviceClient,
}

impl SubDeviceManagement<'_> {
    /// `registerDevice`: at most 1,000; the reply gives each device's key and secret.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`].
    pub async fn register_device(
        &self,
        devices: Vec<SubDeviceRegistration>,
        o: RequestOptions,
    ) -> Res<Vec<RegisteredDevice>> {
        self.c.request(SubDeviceRegister::new(devices), o).await
    }

    /// `getTopo`: the gateway's sub-devices.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`].
    pub async fn get_topo(&self, o: RequestOptions) -> Res<Vec<TopoEntry>> {
        self.c.request(TopoGet, o).await
    }

    /// `addTopo`: each sub-device signed with its secret.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`].
    pub async fn add_topo(&self, devices: Vec<SubDeviceInfo>, o: RequestOptions) -> Res<()> {
        self.c.request(TopoAdd::new(devices), o).await
    }

    /// `deleteTopo`.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`].
    pub async fn delete_topo(&self, devices: Vec<DeviceKeys>, o: RequestOptions) -> Res<()> {
        self.c.request(TopoDelete::new(devices), o).await
    }

    /// `loginSubDevice`: logged in again by the client after every reconnect.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`].
    pub async fn login_sub_device(&self, device: SubDeviceInfo, o: RequestOptions) -> Res<LoginResult> {
        self.c.request(SubDeviceLogin::new(device), o).await
    }

    /// `batchLoginSubDevice`: the result lists who is in and who failed (also when the
    /// cloud answers 723 for a partial failure).
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`].
    pub async fn batch_login_sub_device(
        &self,
        devices: Vec<SubDeviceInfo>,
        o: RequestOptions,
    ) -> Res<BatchLoginResult> {
        self.c.request(SubDeviceBatchLogin::new(devices), o).await
    }

    /// `logoutSubDevice`.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`].
    pub async fn logout_sub_device(&self, device: DeviceKeys, o: RequestOptions) -> Res<Option<DeviceKeys>> {
        self.c.request(SubDeviceLogout::new(device), o).await
    }

    /// `onSubDevicesEnable`.
    pub fn on_sub_devices_enable<F, Fut>(&self, f: F)
    where
        F: Fn(Command, Responder) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.c.on(Kind::EnableSubDevices, None, f);
    }

    /// `onSubDevicesDisable`.
    pub fn on_sub_devices_disable<F, Fut>(&self, f: F)
    where
        F: Fn(Command, Responder) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.c.on(Kind::DisableSubDevices, None, f);
    }

    /// `onSubDevicesDelete`.
    pub fn on_sub_devices_delete<F, Fut>(&self, f: F)
    where
        F: Fn(Command, Responder) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.c.on(Kind::DeleteSubDevices, None, f);
    }
}
