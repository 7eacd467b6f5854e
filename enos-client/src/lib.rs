//! The EnOS device SDK's API, written once for every runtime: [`DeviceClient`] and
//! [`GatewayClient`] with every named method of the vendor's Node.js SDK
//! (`device_data().post_measurepoint`, `device_command().on_invoke_service`,
//! `sub_device_management().login_sub_device`, ...) and the Java and Python SDKs'
//! additions (`ota()`), the [`Error`], [`Response`] and [`ClientEvent`] types, the command
//! handlers and their [`Responder`].
//!
//! Everything here is runtime-neutral: it waits only on [`Waker`](std::task::Waker)s.
//! A driver supplies a [`Runtime`]: how a caller waits (`R::Wait`: the future itself, or
//! its output for the blocking driver), how a command handler runs, and the I/O of a
//! connection, which it drives through a [`Link`]. Use a driver crate:
//! `enos-transport-tokio`, `enos-transport-smol` (smol and async-std), or
//! `enos-transport-blocking` (plain threads). The protocol itself (sessions, TLS,
//! timeouts, the start's outcome, command queue bounds) is `enos-proto`'s.
//!
//! ```
//! use enos_client::{DeviceClient, Runtime};
//! use enos_proto::options::ClientOptions;
//! use serde_json::json;
//!
//! // Code written once over any runtime: with an async runtime, the post is a future;
//! // with the blocking one, its result.
//! fn post<R: Runtime>(client: &DeviceClient<R>) -> R::Wait<impl std::future::Future + Send> {
//!     client.device_data().post_measurepoint(json!({"temp": 21.5}), Default::default())
//! }
//! # let _ = post::<NoRuntime>;
//! # #[derive(Default)] struct NoRuntime;
//! # impl Runtime for NoRuntime {
//! #     type Wait<F: std::future::Future> = F;
//! #     fn wait<F: std::future::Future>(f: F) -> F { f }
//! #     fn into_future<F: std::future::Future + Send>(f: F) -> impl std::future::Future<Output = F::Output> + Send where F::Output: Send { f }
//! #     type Handler = ();
//! #     fn run_handler(&self, _: &(), _: enos_proto::Command, _: enos_client::Responder) {}
//! #     fn start(&self, _: enos_client::Link<Self>) -> Result<(), enos_client::Error> { Ok(()) }
//! # }
//! let options = ClientOptions::new("tcp://127.0.0.1:11883", "pk", "dk");
//! assert!(DeviceClient::<NoRuntime>::new(options).is_err(), "secure mode 2 needs a device secret");
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

use std::future::Future;
use std::sync::{Mutex, MutexGuard};

mod api;
pub mod async_loop;
mod client;
mod error;
mod events;
mod handlers;
mod oneshot;
mod session;

pub use api::{DeviceCommand, DeviceData, Files, Integration, Ota, Outcome, SubDeviceManagement, DOWNLOAD_CHUNK};
pub use client::{DeviceClient, GatewayClient};
pub use enos_proto as proto;
pub use enos_proto::ops::{
    BatchEntry, BatchLoginResult, Firmware, LoginResult, RegisteredDevice, TopoEntry, TslTemplate,
};
pub use enos_proto::options::ClientOptions;
pub use enos_proto::{
    ClientError, ConfigError, DeviceInfo, DeviceKeys, DisconnectCause, Qos, RequestError, RequestOptions, Secret,
    SecureMode, SubDeviceInfo, SubmitError,
};
pub use error::{Error, Response};
pub use events::{ClientEvent, Events, EVENTS_PER_SUBSCRIBER};
pub use handlers::{run_blocking, AsyncHandler, BlockingHandler, Responder};
pub use session::{Closing, Link, Todo, WriteQueue, MAX_SLICES, WRITE_BACKLOG_HIGH};

/// What a driver gives the client: how a caller waits, how a command handler runs, and
/// a connection's I/O.
pub trait Runtime: Default + Send + Sync + Sized + 'static {
    /// What a call returns for its work `F`: `F` itself for an async runtime (a future to
    /// `.await`), `F::Output` for a blocking one (the call waits).
    type Wait<F: Future>;
    /// Turns the work of a call into what the call returns.
    fn wait<F: Future>(f: F) -> Self::Wait<F>;
    /// What a call returned, as a future of its output: code written once for every
    /// runtime awaits any call this way (with the blocking runtime the call has already
    /// waited, and the future is ready).
    fn into_future<F>(waited: Self::Wait<F>) -> impl Future<Output = F::Output> + Send
    where
        F: Future + Send,
        F::Output: Send;

    /// A command handler as this runtime keeps it.
    type Handler: Clone + Send + Sync + 'static;
    /// Runs `handler` for `command` (a task, a handler thread); it answers through
    /// `responder`.
    fn run_handler(&self, handler: &Self::Handler, command: enos_proto::Command, responder: Responder);

    /// Starts the I/O of a connection (a task, a thread) that drives `link` until the
    /// client is closed.
    ///
    /// # Errors
    ///
    /// [`Error::Runtime`] when it cannot (no runtime to spawn on, no thread).
    fn start(&self, link: Link<Self>) -> Result<(), Error>;
}

/// The handlers a runtime takes: a closure of `(Command, Responder)` returning `Out`
/// (a future for the async runtimes, `()` for the blocking one).
#[diagnostic::on_unimplemented(
    message = "this runtime does not take a command handler returning `{Out}`",
    note = "the async drivers take closures returning a future (`|cmd, res| async move {{ .. }}`); the blocking driver takes closures returning `()`"
)]
pub trait IntoHandler<Out>: Runtime {
    /// The handler as the runtime keeps it.
    fn handler<F>(f: F) -> Self::Handler
    where
        F: Fn(enos_proto::Command, Responder) -> Out + Send + Sync + 'static;
}

/// A lock that a panic elsewhere does not poison for good: the state it guards is
/// consistent between calls.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
