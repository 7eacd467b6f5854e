//! The EnOS IoT device SDK on smol, and on async-std: [`DeviceClient`] and
//! [`GatewayClient`], named like the vendor's Node.js SDK, over TCP and TLS (rustls,
//! inside the core).
//!
//! A thin driver: the API is `enos-client`'s, the protocol `enos-proto`'s; this crate
//! gives them smol's sockets and timers (`async-io`) and its global executor. Every call
//! that waits is a future.
//!
//! **async-std** runs on the same reactor (`async-io`), so this crate is its driver too:
//! it runs unchanged inside `async_std::task::block_on` or an `#[async_std::main]`, and
//! the tests run every scenario under both `smol::block_on` and
//! `async_std::task::block_on`.
//!
//! # Quick start, against the built-in local cloud
//!
//! ```
//! use enos_sim::{registry::defaults::*, SimThread};
//! use enos_transport_smol::{ClientOptions, DeviceClient, RequestOptions};
//! use serde_json::json;
//!
//! // The local cloud on its own thread: it needs no runtime of the caller's.
//! let sim = SimThread::start(enos_sim::Sim::builder())?;
//! smol::block_on(async {
//!     let mut options = ClientOptions::new(sim.tcp_url().unwrap(), DEVICE_PRODUCT, DEVICE);
//!     options.device_secret = Some(DEVICE_SECRET.into());
//!     let client = DeviceClient::new(options)?;
//!     client.connect().await?;
//!     let r = client.device_data().post_measurepoint(json!({"temp": 21.5}), RequestOptions::new()).await?;
//!     assert_eq!(r.code, 200);
//!     client.device_command().on_invoke_service("reset", None, |_cmd, res| async move {
//!         res.ok(json!({"done": true}));
//!     });
//!     let device = enos_proto::DeviceKeys::new(DEVICE_PRODUCT, DEVICE)?;
//!     let reply = sim.run(move |s| async move { s.invoke_service(&device, "reset", json!({})).await }).await?;
//!     assert_eq!(reply.data, json!({"done": true}));
//!     client.close().await?;
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Tasks, queues and their policies
//!
//! * `connect()` spawns one task for the connection on smol's global executor (its
//!   threads: `SMOL_THREADS`, one by default); it ends at `close()` or when the last
//!   handle is dropped. Each command handler runs on a task of its own there; a handler
//!   that panics answers 1102 and later commands are still handled. A handler that
//!   blocks its thread blocks that executor: answer from another thread through the
//!   `Responder` instead.
//! * The queues and their bounds are those of every driver: the core's request queue
//!   (`SubmitError::QueueFull` past it), requests waiting while more than
//!   [`WRITE_BACKLOG_HIGH`] bytes wait for the socket, at most 64 commands in the
//!   handlers' hands and 1,024 waiting (1102 past that), 1,024 events per subscriber.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use enos_client::async_loop::{AsyncNet, AsyncRuntime};
use enos_proto::options::Transport;
use smol::io::{AsyncRead, AsyncWrite};
use smol::net::TcpStream;

pub use enos_client::{
    BatchEntry, BatchLoginResult, ClientError, ClientEvent, ClientOptions, ConfigError, DeviceInfo, DeviceKeys,
    DisconnectCause, Error, Firmware, LoginResult, Outcome, Qos, RegisteredDevice, RequestError, RequestOptions,
    Responder, Response, Secret, SecureMode, SubDeviceInfo, SubmitError, TopoEntry, TslTemplate, DOWNLOAD_CHUNK,
    WRITE_BACKLOG_HIGH,
};
pub use enos_proto as proto;

/// smol (and async-std), as the client uses it: calls are futures, handlers and the
/// connection tasks on smol's global executor.
#[derive(Debug, Default, Clone, Copy)]
pub struct Smol;

/// A device's connection on smol or async-std: the seed's `DeviceClient`.
pub type DeviceClient = enos_client::DeviceClient<Smol>;
/// A gateway's connection on smol or async-std: the seed's `GatewayClient`.
pub type GatewayClient = enos_client::GatewayClient<Smol>;
/// A subscription to a client's events: a stream, or `recv().await`.
pub type Events = enos_client::Events<Smol>;
/// The seed's `deviceData`.
pub type DeviceData<'a> = enos_client::DeviceData<'a, Smol>;
/// The seed's `deviceCommand`.
pub type DeviceCommand<'a> = enos_client::DeviceCommand<'a, Smol>;
/// The seed's `subDeviceManagement`.
pub type SubDeviceManagement<'a> = enos_client::SubDeviceManagement<'a, Smol>;
/// OTA and the thing model.
pub type Ota<'a> = enos_client::Ota<'a, Smol>;
/// The integration channel's calls (`DeviceClient::integration`).
pub type Integration<'a> = enos_client::Integration<'a, Smol>;

impl AsyncRuntime for Smol {
    type Net = SmolNet;
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
        smol::spawn(task).detach();
        Ok(())
    }
}

/// smol's sockets and timer for the connection loop.
#[derive(Debug)]
pub struct SmolNet;

impl AsyncNet for SmolNet {
    type Stream = TcpStream;
    type Connecting = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;
    type Timer = smol::Timer;

    fn connect(t: &Transport) -> Self::Connecting {
        let (host, port) = (t.host.clone(), t.port);
        Box::pin(async move {
            let s = TcpStream::connect((host.as_str(), port)).await?;
            s.set_nodelay(true)?;
            Ok(s)
        })
    }

    fn timer() -> smol::Timer {
        smol::Timer::never()
    }

    fn set_timer(timer: &mut smol::Timer, at: Instant) {
        timer.set_at(at);
    }

    fn poll_timer(timer: &mut smol::Timer, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(timer).poll(cx).map(|_| ())
    }

    fn poll_read(s: &mut TcpStream, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(s).poll_read(cx, buf)
    }

    fn poll_write_vectored(s: &mut TcpStream, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(s).poll_write_vectored(cx, bufs)
    }

    fn poll_shutdown(s: &mut TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(s).poll_close(cx)
    }
}
