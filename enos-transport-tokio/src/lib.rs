//! The EnOS IoT device SDK on tokio: [`DeviceClient`] and [`GatewayClient`], named like
//! the vendor's Node.js SDK, over TCP and TLS (rustls, inside the core).
//!
//! A thin driver: the API is `enos-client`'s, the protocol `enos-proto`'s; this crate
//! gives them tokio's sockets, timer and tasks. Every call that waits is a future.
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
//! # Tasks, queues and their policies
//!
//! * `connect()` spawns one task for the connection on the current runtime; it ends at
//!   `close()` or when the last handle is dropped. Each command handler runs on a task of
//!   its own; a handler that panics answers 1102 and later commands are still handled.
//! * Requests wait in the core's bounded queue while disconnected (typed
//!   `SubmitError::QueueFull` past it); every request ends with its reply or a typed error.
//!   While more than [`WRITE_BACKLOG_HIGH`] bytes wait for the socket, new requests wait.
//! * At most [`MAX_CONCURRENT_HANDLERS`] commands are in the handlers' hands at once
//!   (`Config::max_running_commands`); 1,024 more wait in the core, and past that a
//!   command is answered 1102 at once: a flood of commands does not grow memory or stall
//!   requests, and every command gets exactly one answer.
//! * Events ([`DeviceClient::events`]) go to each subscriber's queue of 1,024; a
//!   subscriber that falls behind misses events (counted in [`Events::missed`]), never
//!   responses or commands.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use enos_client::async_loop::{AsyncNet, AsyncRuntime};
use enos_proto::options::Transport;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub use enos_client::{
    BatchEntry, BatchLoginResult, ClientError, ClientEvent, ClientOptions, ConfigError, DeviceInfo, DeviceKeys,
    DisconnectCause, Error, Firmware, LoginResult, Outcome, Qos, RegisteredDevice, RequestError, RequestOptions,
    Responder, Response, Secret, SecureMode, SubDeviceInfo, SubmitError, TopoEntry, TslTemplate, DOWNLOAD_CHUNK,
    WRITE_BACKLOG_HIGH,
};
pub use enos_proto as proto;

/// The tokio runtime, as the client uses it: calls are futures, handlers tasks, the
/// connection a task on the runtime `connect()` is called from.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tokio;

/// A device's connection on tokio: the seed's `DeviceClient`.
pub type DeviceClient = enos_client::DeviceClient<Tokio>;
/// A gateway's connection on tokio: the seed's `GatewayClient`.
pub type GatewayClient = enos_client::GatewayClient<Tokio>;
/// A subscription to a client's events: a [`futures_core::Stream`], or `recv().await`.
pub type Events = enos_client::Events<Tokio>;
/// The seed's `deviceData`.
pub type DeviceData<'a> = enos_client::DeviceData<'a, Tokio>;
/// The seed's `deviceCommand`.
pub type DeviceCommand<'a> = enos_client::DeviceCommand<'a, Tokio>;
/// The seed's `subDeviceManagement`.
pub type SubDeviceManagement<'a> = enos_client::SubDeviceManagement<'a, Tokio>;
/// OTA and the thing model.
pub type Ota<'a> = enos_client::Ota<'a, Tokio>;
/// The integration channel's calls (`DeviceClient::integration`).
pub type Integration<'a> = enos_client::Integration<'a, Tokio>;

/// Commands in the handlers' hands at once: the core's default
/// `Config::max_running_commands`.
pub const MAX_CONCURRENT_HANDLERS: usize = 64;

impl AsyncRuntime for Tokio {
    type Net = TokioNet;
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
        let rt = tokio::runtime::Handle::try_current().map_err(|e| Error::Runtime(e.to_string()))?;
        rt.spawn(task);
        Ok(())
    }
}

/// tokio's sockets and timer for the connection loop.
#[derive(Debug)]
pub struct TokioNet;

impl AsyncNet for TokioNet {
    type Stream = TcpStream;
    type Connecting = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;
    type Timer = Pin<Box<tokio::time::Sleep>>;

    fn connect(t: &Transport) -> Self::Connecting {
        let (host, port) = (t.host.clone(), t.port);
        Box::pin(async move {
            let s = TcpStream::connect((host.as_str(), port)).await?;
            s.set_nodelay(true)?;
            Ok(s)
        })
    }

    fn timer() -> Self::Timer {
        Box::pin(tokio::time::sleep(std::time::Duration::from_secs(86_400)))
    }

    fn set_timer(timer: &mut Self::Timer, at: Instant) {
        timer.as_mut().reset(at.into());
    }

    fn poll_timer(timer: &mut Self::Timer, cx: &mut Context<'_>) -> Poll<()> {
        timer.as_mut().poll(cx)
    }

    fn poll_read(s: &mut TcpStream, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut rb = ReadBuf::new(buf);
        Pin::new(s).poll_read(cx, &mut rb).map_ok(|()| rb.filled().len())
    }

    fn poll_write_vectored(s: &mut TcpStream, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(s).poll_write_vectored(cx, bufs)
    }

    fn poll_shutdown(s: &mut TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(s).poll_shutdown(cx)
    }
}
