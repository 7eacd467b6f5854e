//! Command handlers: registered per command kind (and per device for a gateway), run by
//! the runtime, answered through a [`Responder`].
//!
//! How many commands run at once and how many wait is the core's
//! (`Config::max_running_commands`, `Config::max_queued_commands`, 1102 past them).
//! Here: which handler takes a command (1101 when none does), and the guarantee that a
//! handler that returns without answering, or panics, answers 1102.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use enos_proto::command::{REASON_NOT_ANSWERED, REASON_PANICKED};
use enos_proto::{Command, CommandKind, CommandReply, DeviceKeys, ReplyTo};
use serde::Serialize;

/// Which commands a handler takes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// A service; `None` for every service without a handler of its own.
    Service(Option<String>),
    SetMeasurepoints,
    GetMeasurepoints,
    EnableSubDevices,
    DisableSubDevices,
    DeleteSubDevices,
    OtaUpgrade,
    Device,
    RawDown,
    TrafficControl,
}

fn kind_of(c: &CommandKind) -> Option<Kind> {
    Some(match c {
        CommandKind::InvokeService { service_id, .. } => Kind::Service(Some(service_id.clone())),
        CommandKind::SetMeasurepoints { .. } => Kind::SetMeasurepoints,
        CommandKind::GetMeasurepoints { .. } => Kind::GetMeasurepoints,
        CommandKind::EnableSubDevices { .. } => Kind::EnableSubDevices,
        CommandKind::DisableSubDevices { .. } => Kind::DisableSubDevices,
        CommandKind::DeleteSubDevices { .. } => Kind::DeleteSubDevices,
        CommandKind::OtaUpgrade { .. } => Kind::OtaUpgrade,
        CommandKind::RawDown { .. } => Kind::RawDown,
        CommandKind::TrafficControl { .. } => Kind::TrafficControl,
        CommandKind::EnableDevice { .. } | CommandKind::DisableDevice { .. } | CommandKind::DeleteDevice { .. } => {
            Kind::Device
        }
        // A kind no handler can be registered for yet: answered as `unhandled_reply` says.
        _ => return None,
    })
}

/// Handlers by (command kind, device); a `None` device matches every device.
pub(crate) struct Handlers<H> {
    map: HashMap<(Kind, Option<DeviceKeys>), H>,
}

impl<H> Default for Handlers<H> {
    fn default() -> Self {
        Handlers { map: HashMap::new() }
    }
}

impl<H: Clone> Handlers<H> {
    pub(crate) fn set(&mut self, kind: Kind, device: Option<DeviceKeys>, h: H) {
        self.map.insert((kind, device), h);
    }

    /// The most specific handler: this device, then any device; this service, then any
    /// service.
    pub(crate) fn find(&self, c: &Command) -> Option<H> {
        let kind = kind_of(&c.kind)?;
        let any_service = matches!(kind, Kind::Service(_)).then_some(Kind::Service(None));
        let device = Some(c.device.clone());
        [(Some(kind.clone()), device.clone()), (Some(kind), None), (any_service.clone(), device), (any_service, None)]
            .into_iter()
            .filter_map(|(k, d)| Some((k?, d)))
            .find_map(|k| self.map.get(&k).cloned())
    }
}

/// Where a [`Responder`]'s answer goes: the client's session.
pub(crate) trait Answer: Send + Sync {
    /// Sends the reply.
    fn reply(&self, r: CommandReply);
    /// Ends the command without a reply (raw down).
    fn dismiss(&self, to: &ReplyTo);
}

/// Answers one command. Sending consumes it; dropped without an answer (a handler that
/// returned early) it answers code 1102, "command handler execution failed, the handler
/// did not answer"; when its handler panicked, "..., the handler panicked". A raw down
/// command dropped unanswered gets no reply (spec §7).
///
/// A `Responder` is `Send`: a handler may hand it to another task or thread and answer
/// from there.
pub struct Responder {
    reply_to: Option<ReplyTo>,
    to: Arc<dyn Answer>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder").field("reply_to", &self.reply_to.as_ref().map(ReplyTo::topic)).finish()
    }
}

thread_local! {
    /// A caught panic is being cleaned up on this thread: a `Responder` dropped now
    /// belongs to a handler that panicked.
    static UNWOUND: Cell<bool> = const { Cell::new(false) };
}

impl Responder {
    pub(crate) fn new(reply_to: ReplyTo, to: Arc<dyn Answer>) -> Self {
        Responder { reply_to: Some(reply_to), to }
    }

    /// Answers with `code` and `data` (the seed's `response.send(code, data)`); codes
    /// defined by the device should be 2000 or above. Data that does not serialize
    /// answers 1102.
    pub fn send<T: Serialize>(mut self, code: i32, data: T) {
        if let Some(to) = self.reply_to.take() {
            let r = to.with_code(code, &data, "").unwrap_or_else(|e| to.handler_failed(&e.to_string()));
            self.to.reply(r);
        }
    }

    /// Answers 200 with `data`.
    pub fn ok<T: Serialize>(self, data: T) {
        self.send(200, data);
    }

    /// Answers `code` with `data` `{}` and `message`.
    pub fn error(mut self, code: i32, message: &str) {
        if let Some(to) = self.reply_to.take() {
            self.to.reply(to.error(code, message));
        }
    }

    /// Answers a raw down command with bytes.
    pub fn raw(mut self, payload: impl Into<Bytes>) {
        if let Some(to) = self.reply_to.take() {
            self.to.reply(to.raw(payload));
        }
    }

    /// The command's reply address (topic and id).
    pub fn reply_to(&self) -> Option<&ReplyTo> {
        self.reply_to.as_ref()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let Some(to) = self.reply_to.take() else { return };
        if to.is_raw() {
            self.to.dismiss(&to);
            return;
        }
        let panicked = std::thread::panicking() || UNWOUND.with(Cell::get);
        self.to.reply(to.handler_failed(if panicked { REASON_PANICKED } else { REASON_NOT_ANSWERED }));
    }
}

/// A future that contains a panic of the handler future inside it: the panic is logged,
/// the future (and its [`Responder`]) dropped as a panicked handler's, and the task ends
/// normally, so every later command is still dispatched.
pub(crate) struct Guarded<F> {
    inner: Option<Pin<Box<F>>>,
}

impl<F: Future<Output = ()>> Guarded<F> {
    /// Guards `f`.
    pub(crate) fn new(f: F) -> Self {
        Guarded { inner: Some(Box::pin(f)) }
    }
}

impl<F: Future<Output = ()>> Future for Guarded<F> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(()) };
        match catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(())) => {
                self.inner = None;
                Poll::Ready(())
            }
            Err(_) => {
                tracing::warn!("a command handler panicked: answered 1102");
                drop_as_panicked(self.inner.take());
                Poll::Ready(())
            }
        }
    }
}

/// Drops what a panicked handler left, so that its `Responder` answers "panicked".
pub(crate) fn drop_as_panicked<T>(leftover: T) {
    UNWOUND.with(|u| u.set(true));
    drop(leftover);
    UNWOUND.with(|u| u.set(false));
}

/// A handler as the async runtimes keep it: called with the command, it gives the future
/// that handles it.
pub type AsyncHandler = Arc<dyn Fn(Command, Responder) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A handler closure as the async runtimes keep it (their `IntoHandler` for futures).
pub(crate) fn async_handler<F, Fut>(f: F) -> AsyncHandler
where
    F: Fn(Command, Responder) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move |c, r| Box::pin(f(c, r)))
}

/// The future that handles `command`, for an async runtime to spawn: the handler's panic
/// is contained both when it is called and while its future runs (and answered 1102).
pub(crate) fn handle_async(
    h: &AsyncHandler,
    command: Command,
    responder: Responder,
) -> Guarded<Pin<Box<dyn Future<Output = ()> + Send>>> {
    match catch_unwind(AssertUnwindSafe(|| h(command, responder))) {
        Ok(f) => Guarded::new(f),
        Err(_) => {
            tracing::warn!("a command handler panicked: answered 1102");
            Guarded { inner: None }
        }
    }
}

/// A handler as the blocking runtime keeps it: called on a handler thread.
pub type BlockingHandler = Arc<dyn Fn(Command, Responder) + Send + Sync>;

/// Runs a blocking handler; a panic is contained (and answered 1102).
pub fn run_blocking(h: &BlockingHandler, command: Command, responder: Responder) {
    if catch_unwind(AssertUnwindSafe(|| h(command, responder))).is_err() {
        tracing::warn!("a command handler panicked: answered 1102");
    }
}
