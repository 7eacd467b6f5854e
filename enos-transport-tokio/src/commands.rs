//! Command handlers: registered per command kind (and per device for a gateway), run on
//! their own tasks, answered through a [`Responder`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use enos_proto::{Command, CommandKind, CommandReply, DeviceKeys, ReplyTo};
use serde::Serialize;
use tokio::sync::mpsc;

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
pub(crate) type Handler = Arc<dyn Fn(Command, Responder) -> BoxFuture + Send + Sync>;

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
    /// A kind no handler can be registered for: answered 1101.
    Other,
}

fn kind_of(c: &CommandKind) -> Kind {
    match c {
        CommandKind::InvokeService { service_id, .. } => Kind::Service(Some(service_id.clone())),
        CommandKind::SetMeasurepoints { .. } => Kind::SetMeasurepoints,
        CommandKind::GetMeasurepoints { .. } => Kind::GetMeasurepoints,
        CommandKind::EnableSubDevices { .. } => Kind::EnableSubDevices,
        CommandKind::DisableSubDevices { .. } => Kind::DisableSubDevices,
        CommandKind::DeleteSubDevices { .. } => Kind::DeleteSubDevices,
        CommandKind::OtaUpgrade { .. } => Kind::OtaUpgrade,
        CommandKind::RawDown { .. } => Kind::RawDown,
        CommandKind::EnableDevice { .. } | CommandKind::DisableDevice { .. } | CommandKind::DeleteDevice { .. } => {
            Kind::Device
        }
        _ => Kind::Other,
    }
}

/// Handlers by (command kind, device); a `None` device matches every device.
#[derive(Default)]
pub(crate) struct Handlers {
    map: HashMap<(Kind, Option<DeviceKeys>), Handler>,
}

impl Handlers {
    pub(crate) fn set(&mut self, kind: Kind, device: Option<DeviceKeys>, h: Handler) {
        self.map.insert((kind, device), h);
    }

    /// The most specific handler: this device, then any device; this service, then any
    /// service.
    fn find(&self, c: &Command) -> Option<Handler> {
        let kind = kind_of(&c.kind);
        let any_service = matches!(kind, Kind::Service(_)).then_some(Kind::Service(None));
        let device = Some(c.device.clone());
        [(Some(kind.clone()), device.clone()), (Some(kind), None), (any_service.clone(), device), (any_service, None)]
            .into_iter()
            .filter_map(|(k, d)| Some((k?, d)))
            .find_map(|k| self.map.get(&k).cloned())
    }
}

/// Handlers that may run at once: the reply channel's capacity, each running handler
/// holding one reserved slot for its answer. The next command waits for a slot; behind
/// it, the command queue (1,024) fills, and past that the driver answers 1102 at once.
pub const MAX_CONCURRENT_HANDLERS: usize = 64;

/// Runs each command's handler on its own task, or answers "no handler" (1101).
pub(crate) async fn dispatch(
    mut rx: mpsc::Receiver<Box<Command>>,
    handlers: Arc<RwLock<Handlers>>,
    replies: mpsc::Sender<CommandReply>,
) {
    while let Some(c) = rx.recv().await {
        let c = *c;
        // A reserved slot: the handler's answer can never be dropped for lack of room.
        let Ok(slot) = replies.clone().reserve_owned().await else { return };
        let handler = handlers.read().unwrap_or_else(|e| e.into_inner()).find(&c);
        let responder = Responder { reply_to: Some(c.reply_to.clone()), slot: Some(slot) };
        match handler {
            Some(h) => {
                tokio::spawn(h(c, responder));
            }
            // Raw down without a handler gets nothing (spec §7); JSON commands get 1101.
            None if c.reply_to.is_raw() => responder.dismiss(),
            None => {
                let r = c.reply_to.no_handler();
                responder.answer(r);
            }
        }
    }
}

/// Answers one command. Sending consumes it; dropped without an answer (a handler that
/// returned early or panicked), it answers code 1102, "command handler execution failed".
pub struct Responder {
    reply_to: Option<ReplyTo>,
    slot: Option<mpsc::OwnedPermit<CommandReply>>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder").field("reply_to", &self.reply_to.as_ref().map(ReplyTo::topic)).finish()
    }
}

impl Responder {
    fn answer(mut self, r: CommandReply) {
        self.reply_to = None;
        if let Some(slot) = self.slot.take() {
            slot.send(r);
        }
    }

    fn dismiss(mut self) {
        self.reply_to = None;
    }

    /// Answers with `code` and `data` (the seed's `response.send(code, data)`); codes
    /// defined by the device should be 2000 or above. Data that does not serialize
    /// answers 1102.
    pub fn send<T: Serialize>(mut self, code: i32, data: T) {
        if let Some(to) = self.reply_to.take() {
            let r = to.with_code(code, &data, "").unwrap_or_else(|e| to.handler_failed(&e.to_string()));
            self.answer(r);
        }
    }

    /// Answers 200 with `data`.
    pub fn ok<T: Serialize>(self, data: T) {
        self.send(200, data);
    }

    /// Answers `code` with `data` `{}` and `message`.
    pub fn error(mut self, code: i32, message: &str) {
        if let Some(to) = self.reply_to.take() {
            self.answer(to.error(code, message));
        }
    }

    /// Answers a raw down command with bytes.
    pub fn raw(mut self, payload: impl Into<Bytes>) {
        if let Some(to) = self.reply_to.take() {
            self.answer(to.raw(payload));
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let (Some(to), Some(slot)) = (self.reply_to.take(), self.slot.take()) {
            if !to.is_raw() {
                slot.send(to.handler_failed("the handler did not answer"));
            }
        }
    }
}
