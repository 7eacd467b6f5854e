//! Downstream commands (spec §6, §7): typed requests from the cloud, and the replies the
//! device sends back.

use bytes::Bytes;
use serde::Serialize;

use crate::envelope::{self, CommandWire};
use crate::error::EncodeError;
use crate::ops::Firmware;
use crate::topic::{DeviceKeys, Scope, TopicParts};

/// Code of the reply when no handler is registered (spec §4).
pub const CODE_NO_HANDLER: i32 = 1101;
/// Code of the reply when the handler failed (spec §4).
pub const CODE_HANDLER_FAILED: i32 = 1102;
/// Message of the no-handler reply.
pub const MESSAGE_NO_HANDLER: &str = "downstream command handler not registered";
/// Why a command past the bound of `Config::max_queued_commands` is answered 1102.
pub const REASON_QUEUE_FULL: &str = "command queue full";
/// Why a command whose handler ended without answering is answered 1102.
pub const REASON_NOT_ANSWERED: &str = "the handler did not answer";
/// Why a command whose handler panicked is answered 1102.
pub const REASON_PANICKED: &str = "the handler panicked";

/// What the cloud asks, with its typed parameters.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CommandKind {
    /// `thing.service.{serviceId}`: invoke a TSL service.
    InvokeService {
        /// The service id, from the topic.
        service_id: String,
        /// The service's input parameters.
        params: serde_json::Value,
    },
    /// `thing.service.measurepoint.set`: set measure points.
    SetMeasurepoints {
        /// `{pointId: value}`.
        points: serde_json::Map<String, serde_json::Value>,
    },
    /// `thing.service.measurepoint.get`: read measure points; reply `{pointId: value}`.
    GetMeasurepoints {
        /// The point ids asked for.
        point_ids: Vec<String>,
    },
    /// `combine.enable`: these sub-devices were enabled.
    EnableSubDevices {
        /// The sub-devices.
        devices: Vec<DeviceKeys>,
    },
    /// `combine.disable`: these sub-devices were disabled (and logged out).
    DisableSubDevices {
        /// The sub-devices.
        devices: Vec<DeviceKeys>,
    },
    /// `combine.delete`: these sub-devices were deleted (and logged out).
    DeleteSubDevices {
        /// The sub-devices.
        devices: Vec<DeviceKeys>,
    },
    /// `ota.device.upgrade`: a firmware to install.
    OtaUpgrade {
        /// The firmware.
        firmware: Firmware,
    },
    /// `thing.enable` for the device itself.
    EnableDevice {
        /// The parameters as sent.
        params: serde_json::Value,
    },
    /// `thing.disable` for the device itself.
    DisableDevice {
        /// The parameters as sent.
        params: serde_json::Value,
    },
    /// `thing.delete` for the device itself.
    DeleteDevice {
        /// The parameters as sent.
        params: serde_json::Value,
    },
    /// `traffic/control` (extensions spec E6): the cloud asks the device to limit its
    /// traffic. No source defines its `method` or `params`, nor what the device must do
    /// (spec E11): both are handed over as sent. Without a handler it is answered 200,
    /// since what an error would mean is not known.
    TrafficControl {
        /// The `method` as sent (empty when absent).
        method: String,
        /// The parameters as sent (`{}` when absent).
        params: serde_json::Value,
    },
    /// `thing/model/down_raw`: opaque bytes; the reply is bytes too.
    RawDown {
        /// The bytes.
        payload: Bytes,
    },
}

/// A command from the cloud to the device or to one of its sub-devices.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// What is asked.
    pub kind: CommandKind,
    /// The device addressed: the client's own keys, or a logged-in sub-device's.
    pub device: DeviceKeys,
    /// The command's envelope id (empty for raw down).
    pub id: String,
    /// Where and how to answer it.
    pub reply_to: ReplyTo,
}

impl Command {
    /// The reply for a command no handler takes: none for raw down (spec §7), 200 for
    /// traffic control (extensions spec C13), 1101 for every other command.
    pub fn unhandled_reply(&self) -> Option<CommandReply> {
        match self.kind {
            CommandKind::RawDown { .. } => None,
            CommandKind::TrafficControl { .. } => Some(self.reply_to.ok_empty()),
            _ => Some(self.reply_to.no_handler()),
        }
    }
}

/// The address of a command's reply: its topic and the id to echo, and the command's
/// place among those the application holds (see `Client::reply`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    topic: String,
    id: String,
    /// The id as the command sent it (JSON text): echoed unchanged.
    id_json: String,
    raw: bool,
    /// Which handed-out command this answers (0: none the core counts).
    pub(crate) ticket: u64,
}

/// A reply to a command, ready for `Client::reply`: published at QoS 0 on `topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandReply {
    /// `<command topic>_reply`.
    pub topic: String,
    /// The exact payload.
    pub payload: Bytes,
    /// The command it answers, for the core's count of unanswered commands.
    pub(crate) ticket: u64,
}

impl ReplyTo {
    /// The reply topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The id the reply echoes.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the command is raw (its reply is bytes, not JSON).
    pub fn is_raw(&self) -> bool {
        self.raw
    }

    /// Success (code 200) with `data` as the reply's `data`.
    ///
    /// # Errors
    ///
    /// [`EncodeError::Json`] when `data` does not serialize.
    pub fn ok<T: Serialize + ?Sized>(&self, data: &T) -> Result<CommandReply, EncodeError> {
        self.with_code(200, data, "")
    }

    /// Success (code 200) with `data` `{}`.
    pub fn ok_empty(&self) -> CommandReply {
        self.json_reply(200, "{}", "")
    }

    /// A reply with any code, `data` and `message` (the message is left out when empty).
    /// Device-defined error codes should be 2000 or above.
    ///
    /// # Errors
    ///
    /// [`EncodeError::Json`] when `data` does not serialize.
    pub fn with_code<T: Serialize + ?Sized>(
        &self,
        code: i32,
        data: &T,
        message: &str,
    ) -> Result<CommandReply, EncodeError> {
        let data = serde_json::to_string(data).map_err(|e| EncodeError::Json(e.to_string()))?;
        Ok(self.json_reply(code, &data, message))
    }

    /// An error reply: `code`, `data` `{}` and `message`.
    pub fn error(&self, code: i32, message: &str) -> CommandReply {
        self.json_reply(code, "{}", message)
    }

    /// The reply for a command nobody handles: code 1101.
    pub fn no_handler(&self) -> CommandReply {
        self.error(CODE_NO_HANDLER, MESSAGE_NO_HANDLER)
    }

    /// The reply for a handler that failed: code 1102, `command handler execution
    /// failed, <reason>`.
    pub fn handler_failed(&self, reason: &str) -> CommandReply {
        self.error(CODE_HANDLER_FAILED, &format!("command handler execution failed, {reason}"))
    }

    /// A raw reply (for raw down): the bytes as they are.
    pub fn raw(&self, payload: impl Into<Bytes>) -> CommandReply {
        CommandReply { topic: self.topic.clone(), payload: payload.into(), ticket: self.ticket }
    }

    fn json_reply(&self, code: i32, data_json: &str, message: &str) -> CommandReply {
        let mut out = Vec::with_capacity(48 + self.id.len() + data_json.len() + message.len());
        envelope::write_command_reply(&mut out, &self.id_json, code, data_json, message);
        CommandReply { topic: self.topic.clone(), payload: Bytes::from(out), ticket: self.ticket }
    }
}

/// What an inbound message on a device's own topic turned out to be.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A command for the application.
    Command(Command),
    /// The dynamic activation push (spec §3).
    Activation { reply_to: ReplyTo, device_secret: Option<String>, asset_id: Option<String> },
    /// A command that cannot be handed over; `reply` answers it when it has an id.
    Bad { reason: String, reply: Option<CommandReply> },
    /// The device's own reply to a command, echoed back by a plain broker: dropped.
    Echo,
}

fn reply_topic(topic: &str) -> String {
    let mut t = String::with_capacity(topic.len() + 6);
    t.push_str(topic);
    t.push_str("_reply");
    t
}

/// Classifies a message on a device topic of `device`; `None` when the topic is not a
/// command topic (a reply, or something unknown).
pub(crate) fn classify(topic: &str, parts: &TopicParts<'_>, device: &DeviceKeys, payload: Bytes) -> Option<Inbound> {
    if let Some(base) = parts.path.strip_suffix("_reply") {
        let command = TopicParts { path: base, ..*parts };
        return is_command_path(&command).then_some(Inbound::Echo);
    }
    enum K {
        Service(String),
        Set,
        Get,
        SubEnable,
        SubDisable,
        SubDelete,
        Ota,
        Enable,
        Disable,
        Delete,
        Raw,
        Activate,
        Traffic,
    }
    let kind = match (parts.scope, parts.path) {
        (Scope::Sys, "thing/service/measurepoint/set") => K::Set,
        (Scope::Sys, "thing/service/measurepoint/get") => K::Get,
        (Scope::Sys, "thing/model/down_raw") => K::Raw,
        (Scope::Sys, "ota/device/upgrade") => K::Ota,
        (Scope::Sys, "thing/enable") => K::Enable,
        (Scope::Sys, "thing/disable") => K::Disable,
        (Scope::Sys, "thing/delete") => K::Delete,
        (Scope::Sys, "traffic/control") => K::Traffic,
        (Scope::ExtSession, "combine/enable") => K::SubEnable,
        (Scope::ExtSession, "combine/disable") => K::SubDisable,
        (Scope::ExtSession, "combine/delete") => K::SubDelete,
        (Scope::ExtSession, "thing/activate/info") => K::Activate,
        (Scope::Sys, path) => {
            let id = path.strip_prefix("thing/service/")?;
            if id.is_empty() || id.contains('/') {
                return None;
            }
            K::Service(id.to_owned())
        }
        _ => return None,
    };
    if let K::Raw = kind {
        return Some(Inbound::Command(Command {
            kind: CommandKind::RawDown { payload },
            device: device.clone(),
            id: String::new(),
            reply_to: ReplyTo {
                topic: reply_topic(topic),
                id: String::new(),
                id_json: String::new(),
                raw: true,
                ticket: 0,
            },
        }));
    }
    let wire = match envelope::parse_command(&payload) {
        Ok(w) => w,
        // No id, nothing to answer: dropped without a reply (spec §4).
        Err(reason) => return Some(Inbound::Bad { reason, reply: None }),
    };
    let CommandWire { id, id_json, method, params } = wire;
    let reply_to = ReplyTo { topic: reply_topic(topic), id: id.clone(), id_json, raw: false, ticket: 0 };
    let text = params.as_deref().map_or("null", |p| p.get());
    if let K::Activate = kind {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Act {
            device_secret: Option<String>,
            asset_id: Option<String>,
        }
        return Some(match serde_json::from_str::<Act>(text) {
            Ok(a) => Inbound::Activation { reply_to, device_secret: a.device_secret, asset_id: a.asset_id },
            Err(e) => bad_params(&reply_to, &e),
        });
    }
    let typed: Result<CommandKind, serde_json::Error> = (|| {
        Ok(match kind {
            K::Service(service_id) => CommandKind::InvokeService { service_id, params: object_or_empty(text)? },
            K::Set => CommandKind::SetMeasurepoints { points: serde_json::from_str(text)? },
            K::Get => CommandKind::GetMeasurepoints { point_ids: serde_json::from_str(text)? },
            K::SubEnable => CommandKind::EnableSubDevices { devices: serde_json::from_str(text)? },
            K::SubDisable => CommandKind::DisableSubDevices { devices: serde_json::from_str(text)? },
            K::SubDelete => CommandKind::DeleteSubDevices { devices: serde_json::from_str(text)? },
            K::Ota => CommandKind::OtaUpgrade { firmware: serde_json::from_str(text)? },
            K::Enable => CommandKind::EnableDevice { params: object_or_empty(text)? },
            K::Disable => CommandKind::DisableDevice { params: object_or_empty(text)? },
            K::Delete => CommandKind::DeleteDevice { params: object_or_empty(text)? },
            K::Traffic => {
                CommandKind::TrafficControl { method: method.unwrap_or_default(), params: object_or_empty(text)? }
            }
            K::Raw | K::Activate => return Err(serde::de::Error::custom("handled above")),
        })
    })();
    Some(match typed {
        Ok(kind) => Inbound::Command(Command { kind, device: device.clone(), id, reply_to }),
        Err(e) => bad_params(&reply_to, &e),
    })
}

/// Whether a topic path is one the cloud sends commands on.
fn is_command_path(parts: &TopicParts<'_>) -> bool {
    match (parts.scope, parts.path) {
        (Scope::Sys, p) => {
            matches!(
                p,
                "thing/model/down_raw"
                    | "ota/device/upgrade"
                    | "thing/enable"
                    | "thing/disable"
                    | "thing/delete"
                    | "traffic/control"
            ) || p.strip_prefix("thing/service/").is_some_and(|rest| !rest.is_empty())
        }
        (Scope::ExtSession, p) => {
            matches!(p, "combine/enable" | "combine/disable" | "combine/delete" | "thing/activate/info")
        }
    }
}

/// Parameters of the wrong shape: the handler cannot run, so the core answers with the
/// handler-failed reply itself.
fn bad_params(reply_to: &ReplyTo, e: &serde_json::Error) -> Inbound {
    let reason = format!("invalid params: {e}");
    Inbound::Bad { reply: Some(reply_to.handler_failed(&reason)), reason }
}

/// Absent or `null` params read as `{}`.
fn object_or_empty(text: &str) -> Result<serde_json::Value, serde_json::Error> {
    if text == "null" {
        Ok(serde_json::Value::Object(serde_json::Map::new()))
    } else {
        serde_json::from_str(text)
    }
}
