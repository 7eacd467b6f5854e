//! Commands the cloud sends devices (spec §6, §7, §10), and their replies correlated,
//! without IO or clocks: time comes in as `now_ms`, results go out as [`CommandDone`].
//!
//! ```text
//!  caller ──► Cloud::issue_command(now_ms, keys, Command)  ─► Issued { token, conn, message, deadline_ms }
//!             Cloud::send_down_raw / push_ota / sub_devices_command                    │
//!                                                                   IO layer sends `message` on `conn`
//!  device ──► Cloud::publish(conn, "…_reply", payload, _)  ─┐
//!  timer  ──► Cloud::handle_timeout(now_ms)                 ├─► Cloud::poll_command_done() ─► CommandDone { token, result }
//!  caller ──► Cloud::cancel_command(token)  (gave up: no result)
//!             Cloud::poll_timeout() ─► the earliest deadline, for the IO layer's timer
//! ```
//!
//! **Correlation.** A JSON command is answered on its topic + `_reply` with its envelope
//! id: the reply must name both (the vendor's Java SDK answers traffic control on the
//! command topic itself, taken as its reply). Command ids are unique in a cloud, so a
//! reply is looked up by id and its topic checked. Raw down has no id: its replies on
//! `…/thing/model/down_raw_reply` answer the commands on that topic oldest first. A reply
//! that answers no pending command (an unknown id, a late reply, a device's own stray
//! publish) is ignored.
//!
//! **Exactly once.** Every [`CommandToken`] ends exactly once: in one [`CommandDone`]
//! (the reply, or [`CommandError::TimedOut`] once `now_ms` reaches its deadline), or
//! silently when its caller cancels it. Nothing is ended twice: a reply after the
//! timeout, or a second reply, finds nothing pending.
//!
//! **Disconnects.** A command outlives its device's connection: when the device (or its
//! gateway) disconnects, its pending commands wait for their deadline, and a device that
//! reconnects and answers still answers them: a command received just before a cut is
//! answered after the reconnect, as the SDK's drivers do. A command to a device that is offline when it is issued
//! is refused at once ([`CommandError::Offline`]).
//!
//! **Time.** `now_ms` here is the IO layer's monotonic clock in milliseconds (any origin,
//! never running backwards, the same for every command call of one cloud); it is not the
//! wall clock that [`Cloud::publish`] takes as the time of posted data.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use enos_proto::ops::Firmware;
use enos_proto::topic::{topic, Scope};
use enos_proto::DeviceKeys;
use serde_json::{json, Value};

use super::{Cloud, ConnId, Outbound};

/// Identifies one command the cloud issued, from [`Issued`] to its [`CommandDone`]. Never
/// reused in a cloud's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommandToken(u64);

/// A JSON command to a device (spec §6): its topic, method and parameters.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Command {
    /// `thing.service.{service_id}`, a service invocation.
    InvokeService {
        /// The service's identifier in the thing model.
        service_id: String,
        /// Its input parameters.
        params: Value,
    },
    /// `thing.service.measurepoint.set`: `{pointId: value}`.
    SetMeasurepoints {
        /// The points and their values.
        points: Value,
    },
    /// `thing.service.measurepoint.get`: the points named.
    GetMeasurepoints {
        /// The points' identifiers.
        point_ids: Vec<String>,
    },
    /// `traffic.control` (extensions spec E6).
    TrafficControl {
        /// Its parameters.
        params: Value,
    },
    /// `thing.{what}` on `thing/{what}`: a device's own state command (`enable`, `disable`,
    /// `delete`; another name is sent as it is). The registry is left as it is.
    DeviceState {
        /// `enable`, `disable` or `delete`.
        what: String,
    },
}

impl Command {
    /// Its scope, topic path, method and parameters.
    fn into_parts(self) -> (Scope, String, String, Value) {
        match self {
            Command::InvokeService { service_id, params } => {
                (Scope::Sys, format!("thing/service/{service_id}"), format!("thing.service.{service_id}"), params)
            }
            Command::SetMeasurepoints { points } => {
                (Scope::Sys, "thing/service/measurepoint/set".into(), "thing.service.measurepoint.set".into(), points)
            }
            Command::GetMeasurepoints { point_ids } => (
                Scope::Sys,
                "thing/service/measurepoint/get".into(),
                "thing.service.measurepoint.get".into(),
                json!(point_ids),
            ),
            Command::TrafficControl { params } => {
                (Scope::Sys, "traffic/control".into(), "traffic.control".into(), params)
            }
            Command::DeviceState { what } => (Scope::Sys, format!("thing/{what}"), format!("thing.{what}"), json!({})),
        }
    }
}

/// A command issued: the IO layer publishes `message` on connection `conn`, and waits for
/// the [`CommandDone`] of `token`.
#[derive(Debug)]
#[non_exhaustive]
pub struct Issued {
    /// What its result will carry.
    pub token: CommandToken,
    /// The connection that carries it: the device's, or its gateway's.
    pub conn: ConnId,
    /// The command itself.
    pub message: Outbound,
    /// When it times out, on the commands' clock (`now_ms` at issue + `timeout`).
    pub deadline_ms: u64,
    /// How long it waits for a reply ([`Cloud::command_timeout`] when it was issued).
    pub timeout: Duration,
}

/// A device's reply to a command.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandResponse {
    /// The reply's code.
    pub code: i64,
    /// The reply's data.
    pub data: Value,
    /// The reply's message, if any.
    pub message: Option<String>,
}

/// Why a command got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The device is neither connected nor logged in through a gateway.
    #[error("device {0} is offline")]
    Offline(String),
    /// No reply within the command timeout.
    #[error("no reply within {0:?}")]
    TimedOut(Duration),
    /// The device's connection cannot take more.
    #[error("the device's connection is congested")]
    Congested,
    /// The reply is not a JSON reply envelope.
    #[error("unreadable reply: {0}")]
    BadReply(String),
    /// A sub-device command named no device, or devices that are not in the gateway's
    /// topology: the cloud addresses only a gateway's own sub-devices, so nothing is sent.
    #[error("not sub-devices of {gateway}: {}", if devices.is_empty() { "none named".to_owned() } else { devices.join(", ") })]
    NotSubDevices {
        /// The gateway.
        gateway: String,
        /// The devices named that are not in its topology (empty: none was named).
        devices: Vec<String>,
    },
}

/// What answered a command.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CommandReply {
    /// A JSON command's reply envelope.
    Envelope(CommandResponse),
    /// The bytes a device answered a raw down with.
    Raw(Bytes),
}

impl CommandReply {
    /// The reply envelope of a JSON command.
    ///
    /// # Errors
    ///
    /// [`CommandError::BadReply`] for raw bytes (the answer to a raw down).
    pub fn into_envelope(self) -> Result<CommandResponse, CommandError> {
        match self {
            CommandReply::Envelope(r) => Ok(r),
            CommandReply::Raw(_) => Err(CommandError::BadReply("raw bytes where a reply envelope was expected".into())),
        }
    }

    /// The bytes that answered a raw down.
    ///
    /// # Errors
    ///
    /// [`CommandError::BadReply`] for a reply envelope (the answer to a JSON command).
    pub fn into_raw(self) -> Result<Bytes, CommandError> {
        match self {
            CommandReply::Raw(b) => Ok(b),
            CommandReply::Envelope(_) => {
                Err(CommandError::BadReply("a reply envelope where raw bytes were expected".into()))
            }
        }
    }
}

/// A command ended: its reply, or why there is none.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CommandDone {
    /// The command.
    pub token: CommandToken,
    /// Its reply, or [`CommandError::TimedOut`].
    pub result: Result<CommandReply, CommandError>,
}

/// What a pending command waits for.
#[derive(Debug)]
enum Awaits {
    /// A reply envelope with this id on this topic.
    Envelope { reply_topic: String, id: String },
    /// Bytes on this topic (raw down).
    Raw { reply_topic: String },
}

#[derive(Debug)]
struct Pending {
    awaits: Awaits,
    deadline_ms: u64,
    timeout: Duration,
}

/// The commands waiting for a reply, indexed by token, by envelope id, by raw reply topic
/// (oldest first) and by deadline, and the results not yet taken.
#[derive(Debug, Default)]
pub(super) struct PendingCommands {
    next_token: u64,
    by_token: HashMap<CommandToken, Pending>,
    by_id: HashMap<String, CommandToken>,
    raw: HashMap<String, VecDeque<CommandToken>>,
    deadlines: BTreeSet<(u64, CommandToken)>,
    done: VecDeque<CommandDone>,
}

impl PendingCommands {
    fn insert(&mut self, awaits: Awaits, now_ms: u64, timeout: Duration) -> (CommandToken, u64) {
        let token = CommandToken(self.next_token);
        self.next_token += 1;
        // Rounded up: a command never times out before its whole timeout has passed.
        let timeout_ms = u64::try_from(timeout.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        let deadline_ms = now_ms.saturating_add(timeout_ms);
        match &awaits {
            Awaits::Envelope { id, .. } => {
                self.by_id.insert(id.clone(), token);
            }
            Awaits::Raw { reply_topic } => self.raw.entry(reply_topic.clone()).or_default().push_back(token),
        }
        self.deadlines.insert((deadline_ms, token));
        self.by_token.insert(token, Pending { awaits, deadline_ms, timeout });
        (token, deadline_ms)
    }

    /// Takes `token` out of every index.
    fn remove(&mut self, token: CommandToken) -> Option<Pending> {
        let pending = self.by_token.remove(&token)?;
        self.deadlines.remove(&(pending.deadline_ms, token));
        match &pending.awaits {
            Awaits::Envelope { id, .. } => {
                self.by_id.remove(id);
            }
            Awaits::Raw { reply_topic } => {
                if let Some(q) = self.raw.get_mut(reply_topic) {
                    q.retain(|t| *t != token);
                    if q.is_empty() {
                        self.raw.remove(reply_topic);
                    }
                }
            }
        }
        Some(pending)
    }

    /// The command a reply envelope with `id` on `reply_topic` answers, taken out.
    fn take_envelope(&mut self, reply_topic: &str, id: &str) -> Option<CommandToken> {
        let token = *self.by_id.get(id)?;
        let answers = matches!(&self.by_token.get(&token)?.awaits,
            Awaits::Envelope { reply_topic: t, .. } if t == reply_topic);
        answers.then(|| self.remove(token)).flatten().map(|_| token)
    }

    /// The oldest raw down on `reply_topic`'s command, taken out.
    fn take_raw(&mut self, reply_topic: &str) -> Option<CommandToken> {
        let token = *self.raw.get(reply_topic)?.front()?;
        self.remove(token).map(|_| token)
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some(&(deadline_ms, token)) = self.deadlines.first() {
            if deadline_ms > now_ms {
                break;
            }
            if let Some(p) = self.remove(token) {
                self.done.push_back(CommandDone { token, result: Err(CommandError::TimedOut(p.timeout)) });
            }
        }
    }
}

/// A reply envelope read as its caller gets it.
fn response_of(v: &Value) -> Result<CommandResponse, CommandError> {
    // A number, or its decimal text: the vendor's Python SDK sends its own error codes
    // (1101 no handler, 500 handler failed) as strings.
    let code = match v.get("code") {
        Some(Value::String(s)) => s.parse().ok(),
        Some(c) => c.as_i64(),
        None => None,
    };
    let code = code.ok_or_else(|| CommandError::BadReply("no code".into()))?;
    Ok(CommandResponse {
        code,
        data: v.get("data").cloned().unwrap_or(Value::Null),
        message: v.get("message").and_then(Value::as_str).map(str::to_owned),
    })
}

#[cfg(test)]
fn parse_response(payload: &[u8]) -> Result<CommandResponse, CommandError> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| CommandError::BadReply(e.to_string()))?;
    response_of(&v)
}

impl Cloud {
    /// A fresh command id: decimal, unique in this cloud, never one a device's own request
    /// counter reaches.
    pub(crate) fn command_id(&mut self) -> String {
        let id = self.next_command;
        self.next_command += 1;
        id.to_string()
    }

    /// Issues `command` to a device or sub-device at `now_ms` on the commands' clock: the
    /// message to publish, on the connection that carries it; its [`CommandDone`] comes
    /// out of [`poll_command_done`](Self::poll_command_done).
    ///
    /// # Errors
    ///
    /// [`CommandError::Offline`] when `keys` is neither connected nor logged in through
    /// a gateway: nothing is issued.
    pub fn issue_command(&mut self, now_ms: u64, keys: &DeviceKeys, command: Command) -> Result<Issued, CommandError> {
        let conn = self.route(keys).ok_or_else(|| CommandError::Offline(keys.to_string()))?;
        let (scope, path, method, params) = command.into_parts();
        Ok(self.issue_json(now_ms, conn, topic(scope, keys, &path), &method, params))
    }

    /// Issues a JSON command on `command_topic` through connection `conn`.
    pub(super) fn issue_json(
        &mut self,
        now_ms: u64,
        conn: ConnId,
        command_topic: String,
        method: &str,
        params: Value,
    ) -> Issued {
        let id = self.command_id();
        let body = json!({"id": id, "version": "1.0", "method": method, "params": params});
        self.issued_envelope(
            now_ms,
            conn,
            Outbound { topic: command_topic, payload: Bytes::from(body.to_string()) },
            id,
        )
    }

    /// Records a JSON command already written (`message`, whose envelope id is `id`) as
    /// pending.
    fn issued_envelope(&mut self, now_ms: u64, conn: ConnId, message: Outbound, id: String) -> Issued {
        let timeout = self.command_timeout;
        let reply_topic = format!("{}_reply", message.topic);
        let (token, deadline_ms) = self.commands.insert(Awaits::Envelope { reply_topic, id }, now_ms, timeout);
        Issued { token, conn, message, deadline_ms, timeout }
    }

    /// Sends raw bytes down (`thing/model/down_raw`); the bytes the device answers on
    /// `down_raw_reply` are its reply.
    ///
    /// # Errors
    ///
    /// [`CommandError::Offline`], as [`issue_command`](Self::issue_command).
    pub fn send_down_raw(&mut self, now_ms: u64, keys: &DeviceKeys, payload: Bytes) -> Result<Issued, CommandError> {
        let conn = self.route(keys).ok_or_else(|| CommandError::Offline(keys.to_string()))?;
        let message = Outbound { topic: topic(Scope::Sys, keys, "thing/model/down_raw"), payload };
        let timeout = self.command_timeout;
        let reply_topic = format!("{}_reply", message.topic);
        let (token, deadline_ms) = self.commands.insert(Awaits::Raw { reply_topic }, now_ms, timeout);
        Ok(Issued { token, conn, message, deadline_ms, timeout })
    }

    /// Pushes an OTA upgrade (`ota.device.upgrade`), recording the task; for a device that
    /// is offline it is queued until its next login (`Ok(None)`), and nothing waits.
    ///
    /// # Errors
    ///
    /// None today; the `Result` is that of every command.
    pub fn push_ota(
        &mut self,
        now_ms: u64,
        keys: &DeviceKeys,
        firmware: Firmware,
    ) -> Result<Option<Issued>, CommandError> {
        let Some(conn) = self.route(keys) else {
            self.queue_ota(keys, firmware);
            return Ok(None);
        };
        let (id, message) = self.ota_upgrade(keys, firmware);
        Ok(Some(self.issued_envelope(now_ms, conn, message, id)))
    }

    /// Forgets a pending command whose caller gave up (or whose message could not be
    /// sent): no [`CommandDone`] comes out for it, and a reply to it is ignored. Returns
    /// whether it was pending.
    pub fn cancel_command(&mut self, token: CommandToken) -> bool {
        self.commands.remove(token).is_some()
    }

    /// Ends every command whose deadline is `now_ms` or earlier with
    /// [`CommandError::TimedOut`].
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.commands.expire(now_ms);
    }

    /// The earliest deadline of a pending command, on the commands' clock: when
    /// [`handle_timeout`](Self::handle_timeout) next has something to do (`None`: no
    /// command is pending).
    pub fn poll_timeout(&self) -> Option<u64> {
        self.commands.deadlines.first().map(|(deadline_ms, _)| *deadline_ms)
    }

    /// The next command that ended (replied, or timed out), oldest first.
    pub fn poll_command_done(&mut self) -> Option<CommandDone> {
        self.commands.done.pop_front()
    }

    /// How many commands wait for a reply.
    pub fn pending_commands(&self) -> usize {
        self.commands.by_token.len()
    }

    /// A device's publish on a command's reply topic (the command's topic + `_reply`,
    /// `path` without it): what the reply changes here, and the pending command it ends.
    pub(super) fn device_replied(&mut self, keys: &DeviceKeys, scope: Scope, path: &str, topic: &str, payload: &Bytes) {
        if topic.ends_with("/thing/model/down_raw_reply") {
            if let Some(token) = self.commands.take_raw(topic) {
                self.commands.done.push_back(CommandDone { token, result: Ok(CommandReply::Raw(payload.clone())) });
            }
            return;
        }
        let Ok(reply) = serde_json::from_slice::<Value>(payload) else { return };
        let succeeded = reply.get("code").and_then(Value::as_i64) == Some(200);
        if scope == Scope::ExtSession && path == "thing/activate/info" && succeeded {
            if let Some(d) = self.registry.devices.get_mut(keys) {
                d.activated = true;
            }
        }
        if path == "ota/device/upgrade" {
            self.ota_upgrade_replied(keys, succeeded);
        }
        self.envelope_replied(topic, &reply);
    }

    /// A reply envelope on `reply_topic`: the pending command with its id ends with it.
    pub(super) fn envelope_replied(&mut self, reply_topic: &str, reply: &Value) {
        let id = match reply.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return,
        };
        if let Some(token) = self.commands.take_envelope(reply_topic, &id) {
            let result = response_of(reply).map(CommandReply::Envelope);
            self.commands.done.push_back(CommandDone { token, result });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::testing::connected;
    use crate::registry::defaults::*;

    fn device() -> DeviceKeys {
        DeviceKeys::new(DEVICE_PRODUCT, DEVICE).unwrap()
    }

    /// The id of a JSON command's envelope.
    fn id_of(issued: &Issued) -> String {
        let v: Value = serde_json::from_slice(&issued.message.payload).unwrap();
        v["id"].as_str().unwrap().to_owned()
    }

    fn reply_to(c: &mut Cloud, conn: ConnId, issued: &Issued, body: &str) {
        let topic = format!("{}_reply", issued.message.topic);
        let out = c.publish(conn, &topic, &Bytes::from(body.to_owned()), 1_000);
        assert!(out.replies.is_empty(), "a reply to a command is not answered");
    }

    fn restart() -> Command {
        Command::InvokeService { service_id: "restart".into(), params: json!({"delay": 5}) }
    }

    #[test]
    fn a_command_reply_code_is_a_number_or_its_decimal_text() {
        // The vendor's Python SDK answers a command it has no handler for with
        // {"code":"1101",...}.
        let r = parse_response(
            br#"{"id":"9","code":"1101","data":{},"message":"downstream command handler not registered"}"#,
        );
        assert_eq!(r.map(|r| r.code), Ok(1101));
        assert_eq!(parse_response(br#"{"id":"9","code":200,"data":{"x":1}}"#).map(|r| r.code), Ok(200));
        for bad in
            [&br#"{"id":"9","code":"two hundred"}"#[..], br#"{"id":"9"}"#, br#"{"id":"9","code":[200]}"#, b"nope"]
        {
            assert!(matches!(parse_response(bad), Err(CommandError::BadReply(_))), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_command_is_written_as_the_cloud_sends_it_and_its_reply_correlated() {
        let mut c = connected(false, 1_000);
        let issued = c.issue_command(5_000, &device(), restart()).unwrap();
        assert_eq!(issued.conn, 1);
        assert_eq!(issued.message.topic, format!("/sys/{DEVICE_PRODUCT}/{DEVICE}/thing/service/restart"));
        let id = id_of(&issued);
        let expected =
            format!(r#"{{"id":"{id}","method":"thing.service.restart","params":{{"delay":5}},"version":"1.0"}}"#);
        assert_eq!(issued.message.payload, expected.as_bytes());
        assert_eq!((issued.deadline_ms, issued.timeout), (15_000, Duration::from_secs(10)));
        assert_eq!((c.pending_commands(), c.poll_timeout()), (1, Some(15_000)));
        assert_eq!(c.poll_command_done(), None);

        reply_to(&mut c, 1, &issued, &format!(r#"{{"id":"{id}","code":200,"data":{{"ok":true}}}}"#));
        let done = c.poll_command_done().unwrap();
        assert_eq!(done.token, issued.token);
        let response = done.result.unwrap().into_envelope().unwrap();
        assert_eq!((response.code, response.data, response.message), (200, json!({"ok": true}), None));
        assert_eq!((c.pending_commands(), c.poll_timeout(), c.poll_command_done()), (0, None, None));
        // A second copy of the reply (a QoS 1 duplicate) finds nothing to end.
        reply_to(&mut c, 1, &issued, &format!(r#"{{"id":"{id}","code":200,"data":{{}}}}"#));
        assert_eq!(c.poll_command_done(), None);
    }

    #[test]
    fn a_reply_with_an_unknown_id_or_on_another_topic_is_ignored() {
        let mut c = connected(false, 1_000);
        let issued = c.issue_command(0, &device(), restart()).unwrap();
        let id = id_of(&issued);
        for body in [r#"{"id":"1","code":200,"data":{}}"#, r#"{"code":200,"data":{}}"#, "not json", ""] {
            reply_to(&mut c, 1, &issued, body);
        }
        // The right id on another command's reply topic.
        let other = format!("/sys/{DEVICE_PRODUCT}/{DEVICE}/thing/service/reset_reply");
        c.publish(1, &other, &Bytes::from(format!(r#"{{"id":"{id}","code":200}}"#)), 0);
        // The right reply, from a connection that is not the device's.
        let reply = format!(r#"{{"id":"{id}","code":200,"data":{{}}}}"#);
        c.publish(2, &format!("{}_reply", issued.message.topic), &Bytes::from(reply.clone()), 0);
        assert_eq!((c.poll_command_done(), c.pending_commands()), (None, 1));
        // A number id answers as its decimal text.
        reply_to(&mut c, 1, &issued, &reply.replace(&format!("\"{id}\""), &id));
        assert_eq!(c.poll_command_done().map(|d| d.token), Some(issued.token));
    }

    #[test]
    fn a_command_expires_at_its_deadline_exactly_once() {
        let mut c = connected(false, 1_000);
        c.command_timeout = Duration::from_millis(200);
        let issued = c.issue_command(1_000, &device(), restart()).unwrap();
        assert_eq!(issued.deadline_ms, 1_200);
        c.handle_timeout(1_199);
        assert_eq!(c.poll_command_done(), None);
        c.handle_timeout(1_200);
        let done = c.poll_command_done().unwrap();
        assert_eq!((done.token, done.result), (issued.token, Err(CommandError::TimedOut(Duration::from_millis(200)))));
        assert_eq!((c.pending_commands(), c.poll_timeout()), (0, None));
        // Later time, and the late reply, end nothing more.
        c.handle_timeout(60_000);
        let id = id_of(&issued);
        reply_to(&mut c, 1, &issued, &format!(r#"{{"id":"{id}","code":200}}"#));
        assert_eq!(c.poll_command_done(), None);
        // A timeout below a millisecond still waits a whole one.
        c.command_timeout = Duration::from_micros(1);
        assert_eq!(c.issue_command(7, &device(), restart()).unwrap().deadline_ms, 8);
    }

    #[test]
    fn commands_expire_in_deadline_order_and_a_cancelled_one_ends_silently() {
        let mut c = connected(false, 1_000);
        c.command_timeout = Duration::from_millis(100);
        let first = c.issue_command(0, &device(), restart()).unwrap();
        let cancelled = c.issue_command(10, &device(), restart()).unwrap();
        let last = c.send_down_raw(20, &device(), Bytes::from_static(b"\x01")).unwrap();
        assert!(c.cancel_command(cancelled.token));
        assert!(!c.cancel_command(cancelled.token));
        assert_eq!(c.poll_timeout(), Some(100));
        c.handle_timeout(1_000);
        let ended: Vec<CommandToken> = std::iter::from_fn(|| c.poll_command_done()).map(|d| d.token).collect();
        assert_eq!(ended, [first.token, last.token]);
    }

    #[test]
    fn a_disconnected_device_s_command_waits_for_its_deadline_and_may_be_answered_after_a_reconnect() {
        let mut c = connected(false, 1_000);
        let issued = c.issue_command(0, &device(), restart()).unwrap();
        c.disconnect(1);
        assert_eq!((c.poll_command_done(), c.pending_commands()), (None, 1));
        // Offline now: a new command is refused at once.
        assert_eq!(c.issue_command(0, &device(), restart()).err(), Some(CommandError::Offline(device().to_string())));
        // The device comes back on another connection and answers.
        c.connect_with_secret(3, &device(), &DEVICE_SECRET.into()).unwrap();
        let id = id_of(&issued);
        reply_to(&mut c, 3, &issued, &format!(r#"{{"id":"{id}","code":200}}"#));
        assert_eq!(c.poll_command_done().map(|d| d.token), Some(issued.token));
    }

    #[test]
    fn raw_down_replies_answer_their_topic_s_commands_oldest_first() {
        let mut c = connected(false, 1_000);
        let a = c.send_down_raw(0, &device(), Bytes::from_static(b"\x01")).unwrap();
        let b = c.send_down_raw(0, &device(), Bytes::from_static(b"\x02")).unwrap();
        assert_eq!(a.message.topic, format!("/sys/{DEVICE_PRODUCT}/{DEVICE}/thing/model/down_raw"));
        assert_eq!(&a.message.payload[..], b"\x01");
        let topic = format!("{}_reply", a.message.topic);
        for answer in [&b"\x0a"[..], b"\x0b", b"\x0c"] {
            let out = c.publish(1, &topic, &Bytes::copy_from_slice(answer), 0);
            assert!(out.replies.is_empty());
        }
        let ended: Vec<(CommandToken, Bytes)> = std::iter::from_fn(|| c.poll_command_done())
            .map(|d| (d.token, d.result.unwrap().into_raw().unwrap()))
            .collect();
        assert_eq!(ended, [(a.token, Bytes::from_static(b"\x0a")), (b.token, Bytes::from_static(b"\x0b"))]);
    }

    #[test]
    fn an_ota_push_waits_for_its_reply_and_an_offline_device_s_is_queued() {
        let mut c = connected(false, 1_000);
        let fw = Firmware { version: "2.0.0".into(), ..Default::default() };
        let issued = c.push_ota(0, &device(), fw.clone()).unwrap().unwrap();
        assert!(issued.message.topic.ends_with("/ota/device/upgrade"));
        let id = id_of(&issued);
        reply_to(&mut c, 1, &issued, &format!(r#"{{"id":"{id}","code":200,"data":{{}}}}"#));
        assert_eq!(c.poll_command_done().unwrap().result.unwrap().into_envelope().unwrap().code, 200);
        assert!(c.registry.devices[&device()].ota.as_ref().unwrap().started);
        // Offline: queued, pushed at its next CONNECT, and nothing waits for it.
        c.disconnect(1);
        assert!(c.push_ota(0, &device(), fw).unwrap().is_none());
        assert_eq!(c.pending_commands(), 0);
        let accepted = c.connect_with_secret(3, &device(), &DEVICE_SECRET.into()).unwrap();
        assert!(accepted.push.iter().any(|o| o.topic.ends_with("/ota/device/upgrade")));
    }

    #[test]
    fn a_traffic_control_reply_on_the_command_topic_is_taken_as_the_reply_and_not_echoed() {
        let mut c = connected(false, 1_000);
        let issued = c.issue_command(0, &device(), Command::TrafficControl { params: json!({}) }).unwrap();
        let topic = issued.message.topic.clone();
        assert_eq!(topic, enos_proto::topic::topic(Scope::Sys, &device(), "traffic/control"));
        let id = id_of(&issued);
        // The command itself, seen again (a broker's echo), is nobody's reply.
        let command =
            Bytes::from(format!(r#"{{"id":"{id}","version":"1.0","params":{{}},"method":"traffic.control"}}"#));
        let out = c.publish(1, &topic, &command, 1_000);
        assert!(out.replies.is_empty());
        assert_eq!(c.poll_command_done(), None);
        // The vendor's Java SDK's answer on the command topic.
        let j2 = Bytes::from(format!(r#"{{"code":200,"id":"{id}","message":""}}"#));
        let out = c.publish(1, &topic, &j2, 1_000);
        assert!(out.replies.is_empty());
        let done = c.poll_command_done().unwrap();
        assert_eq!((done.token, done.result.unwrap().into_envelope().unwrap().code), (issued.token, 200));
    }
}
