//! The cloud's logic (spec §10), independent of how messages arrive: sessions, CONNECT
//! authentication, and the answer to every upstream operation, with state.
//!
//! [`Cloud`] does no IO and keeps no timer: the server, the responder and the HTTP
//! endpoint move the bytes and call it, and the simulator's facade ([`crate::Sim`]) wakes
//! it at its deadlines and hands the results of commands to their callers. Its methods:
//!
//! * inputs: [`connect`](Cloud::connect), [`publish`](Cloud::publish) (a device's
//!   PUBLISH), [`disconnect`](Cloud::disconnect), and time,
//!   [`handle_timeout`](Cloud::handle_timeout);
//! * commands to devices: [`issue_command`](Cloud::issue_command),
//!   [`send_down_raw`](Cloud::send_down_raw), [`push_ota`](Cloud::push_ota),
//!   [`sub_devices_command`](Cloud::sub_devices_command), [`cancel_command`](Cloud::cancel_command);
//! * outputs: what `connect` and `publish` return (replies and pushes for that connection),
//!   [`poll_command_done`](Cloud::poll_command_done) and [`poll_timeout`](Cloud::poll_timeout).
//!
//! One module per concern:
//!
//! | module | what |
//! |---|---|
//! | `mod.rs` | [`Cloud`], and a device's publish dispatched to the operation it names |
//! | `auth` | CONNECT and sub-device login checks, the activation push |
//! | `session` | who is connected where; subscriptions allowed |
//! | `ops` | the upstream operations, told apart by topic |
//! | `envelope` | request fields read, replies written |
//! | `thing` | tags, attributes, events, reports, the thing model |
//! | `points` | measure points: checked, stored, batches |
//! | `fast` | the fast way of reading posts and batch posts |
//! | `gateway` | topology, register, sub-device login and logout |
//! | `commands` | commands to devices issued, their replies correlated, their deadlines |
//! | `ota` | firmware upgrades |
//! | `integration` | the message-integration channel |

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use enos_proto::ops::Firmware;
use enos_proto::topic::{parse_topic, Scope};
use enos_proto::DeviceKeys;
use serde_json::{Map, Value};

use crate::cloud_limits::MAX_PAYLOAD;
use crate::registry::Registry;

mod auth;
mod commands;
mod envelope;
mod fast;
mod gateway;
mod integration;
mod ops;
mod ota;
mod points;
mod session;
#[cfg(test)]
mod testing;
mod thing;

pub use auth::{Accepted, ConnectInfo};
use commands::PendingCommands;
pub use commands::{Command, CommandDone, CommandError, CommandReply, CommandResponse, CommandToken, Issued};
use envelope::{id_text, reply, Answer};
pub use gateway::SubDeviceAction;
use ops::{classify, Op};
use session::Sessions;
use thing::Field;

/// Identifies one device connection (or, in responder mode, one device seen on the
/// broker).
pub type ConnId = u64;

/// A message the cloud publishes. Its `Debug` shows the payload's size only (an
/// activation push or a login reply carries a device secret).
#[derive(Clone, PartialEq, Eq)]
pub struct Outbound {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Bytes,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound").field("topic", &self.topic).field("payload_bytes", &self.payload.len()).finish()
    }
}

/// What handling one inbound publish produced.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Handled {
    /// Replies (and pushes) for the publishing connection. A device's reply to a command
    /// is not answered: it ends the command ([`Cloud::poll_command_done`]).
    pub replies: Vec<Outbound>,
}

/// The QoS the cloud publishes at: replies at one, commands and pushes at the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// For replies to devices' requests.
    pub reply: enos_proto::codec::QoS,
    /// For commands and pushes.
    pub command: enos_proto::codec::QoS,
}

impl Delivery {
    /// The QoS to publish on `topic` at: a reply's (a topic ending in `_reply`), or a
    /// command's.
    pub fn qos(&self, topic: &str) -> enos_proto::codec::QoS {
        if topic.ends_with("_reply") {
            self.reply
        } else {
            self.command
        }
    }
}

/// The simulated cloud's state and logic.
#[derive(Debug)]
pub struct Cloud {
    /// Products, devices, topologies.
    pub registry: Registry,
    sessions: Sessions,
    /// Bytes answered to every raw up (`None`: echo the request).
    pub raw_reply: Option<Bytes>,
    next_command: u64,
    /// Commands waiting for their reply.
    commands: PendingCommands,
    /// How long a command waits for its reply (default 10 s); a command takes the value
    /// it is issued with.
    pub command_timeout: Duration,
    pending_ota: HashMap<DeviceKeys, Firmware>,
    /// Commands to push on the connection being answered (a queued OTA at login).
    pushes: Vec<Outbound>,
    /// Whether measure point posts and batch posts are read the fast way first (off in the
    /// tests that check it against the general one).
    fast_paths: bool,
    /// How far a login's timestamp may be from this clock (`None`, the default: any
    /// timestamp, as EnOS is not known to check; spec §2). With a window, a CONNECT or a
    /// sub-device login replayed later than that is refused.
    pub max_clock_skew: Option<std::time::Duration>,
}

impl Cloud {
    /// A cloud over `registry`.
    pub fn new(registry: Registry) -> Self {
        Cloud {
            registry,
            sessions: Sessions::default(),
            raw_reply: None,
            // Commands are numbered from the clock (epoch milliseconds times 1,000): far
            // above any device's own request counter, which starts at 1, so that an SDK
            // that keys its pending replies by id alone (the vendor's Node.js SDK) never
            // takes a command for the reply to one of its requests. Still a decimal under
            // 2^53, as JavaScript reads numbers exactly.
            next_command: crate::unix_ms().saturating_mul(1000).max(1),
            commands: PendingCommands::default(),
            command_timeout: Duration::from_secs(10),
            pending_ota: HashMap::new(),
            pushes: Vec::new(),
            fast_paths: true,
            max_clock_skew: None,
        }
    }

    /// The QoS the registry sets for what the cloud publishes (a connection takes it once).
    pub fn delivery(&self) -> Delivery {
        Delivery { reply: self.registry.reply_qos.into(), command: self.registry.command_qos.into() }
    }

    /// Handles one PUBLISH from connection `conn` (spec §10): the replies to send back.
    /// `now_ms` is the wall clock (epoch milliseconds): the time of points and events
    /// posted without one.
    pub fn publish(&mut self, conn: ConnId, topic: &str, payload: &Bytes, now_ms: u64) -> Handled {
        let mut out = Handled::default();
        let Some(session) = self.sessions.get(conn) else { return out };
        if integration::is_channel(&session.device) {
            let pk = session.device.product_key().to_owned();
            return self.integration_publish(&pk, topic, payload, now_ms);
        }
        let Some(parts) = parse_topic(topic) else { return out };
        let Ok(keys) = DeviceKeys::new(parts.product_key, parts.device_key) else { return out };
        let own = keys == session.device || session.subs.contains(&keys);
        if let Some(path) = parts.path.strip_suffix("_reply") {
            if own {
                self.device_replied(&keys, parts.scope, path, topic, payload);
            }
            return out;
        }
        if own && parts.scope == Scope::Sys && parts.path == "traffic/control" {
            // The vendor's Java SDK answers traffic control on the command topic itself
            // (extensions spec C13): taken as the reply, and never sent back.
            if let Some(answer) = serde_json::from_slice::<Value>(payload).ok().filter(|v| v.get("code").is_some()) {
                self.envelope_replied(&format!("{topic}_reply"), &answer);
            }
            return out;
        }
        let Some(op) = classify(parts.scope, parts.path) else { return out };
        if !own {
            // Optional 1009 for a known device that is not logged in through here.
            if self.registry.devices.contains_key(&keys) && op != Op::RawUp {
                let id = serde_json::from_slice::<Value>(payload).ok().map(|v| envelope::id_of(&v)).unwrap_or_default();
                out.replies.push(reply(topic, &id, &Answer::err(1009, "Publish to topic with no write permission")));
            }
            return out;
        }
        out.replies.push(self.request(conn, &op, &keys, topic, payload, now_ms));
        // Pushes a request caused (a queued upgrade of a sub-device that logged in) follow
        // its reply.
        out.replies.append(&mut self.pushes);
        out
    }

    /// One request of the connection's own device (or of a sub-device logged in through
    /// it): its reply.
    fn request(
        &mut self,
        conn: ConnId,
        op: &Op,
        keys: &DeviceKeys,
        topic: &str,
        payload: &Bytes,
        now_ms: u64,
    ) -> Outbound {
        if payload.is_empty() {
            return reply(topic, "", &Answer::err(1251, "Payload is empty"));
        }
        if *op == Op::RawUp {
            // Raw payloads are never JSON (spec §7): only the size applies.
            if payload.len() > MAX_PAYLOAD {
                return reply(topic, "", &Answer::err(1008, "Msg size is too large, discard the message"));
            }
            let body = self.raw_reply.clone().unwrap_or_else(|| payload.clone());
            return Outbound { topic: format!("{topic}_reply"), payload: body };
        }
        if self.fast_paths && payload.len() <= MAX_PAYLOAD {
            let fast = match op {
                Op::Post | Op::Resume => self
                    .fast_post(keys, &op.method(), payload, now_ms, *op == Op::Resume)
                    .map(|id| (id, Answer::done())),
                Op::BatchPost | Op::BatchResume => {
                    self.fast_batch(conn, keys, &op.method(), payload, now_ms, *op == Op::BatchResume)
                }
                _ => None,
            };
            if let Some((id, answer)) = fast {
                return reply(topic, &id, &answer);
            }
        }
        // The general way: the envelope read into a JSON tree, checked, then answered.
        let Ok(Value::Object(mut envelope)) = serde_json::from_slice::<Value>(payload) else {
            return reply(topic, "", &Answer::bad_format());
        };
        let id = envelope.get("id").map(id_text).unwrap_or_default();
        if envelope.get("method").and_then(Value::as_str) != Some(&*op.method()) {
            return reply(topic, &id, &Answer::err(1260, "Methods not consistent"));
        }
        if payload.len() > MAX_PAYLOAD {
            return reply(topic, &id, &Answer::err(1008, "Msg size is too large, discard the message"));
        }
        // The parameters are taken out of the envelope, not copied: a batch can be large.
        let params = envelope.remove("params").unwrap_or(Value::Null);
        let answer = self.answer(conn, op, keys, &params, &envelope, now_ms);
        reply(topic, &id, &answer)
    }

    /// The answer to one operation, from its parameters and the rest of its envelope.
    fn answer(
        &mut self,
        conn: ConnId,
        op: &Op,
        keys: &DeviceKeys,
        params: &Value,
        envelope: &Map<String, Value>,
        now_ms: u64,
    ) -> Answer {
        match op {
            Op::TagQuery => self.query(keys, Field::Tags, params),
            Op::AttributeQuery => self.query(keys, Field::Attributes, params),
            Op::TagUpdate => self.tag_update(keys, params),
            Op::TagDelete => self.delete(keys, Field::Tags, params),
            Op::AttributeDelete => self.delete(keys, Field::Attributes, params),
            Op::AttributeUpdate => self.attribute_update(keys, params),
            Op::Post => self.post(keys, params, now_ms, false),
            Op::Resume => self.post(keys, params, now_ms, true),
            Op::BatchPost => self.batch(conn, keys, params, envelope, now_ms, false),
            Op::BatchResume => self.batch(conn, keys, params, envelope, now_ms, true),
            Op::Event(event) => self.event_post(keys, event, params, now_ms),
            Op::LogPost | Op::NetworkStatus | Op::ConnectionState => self.report(op, keys, params, now_ms),
            Op::RawUp => Answer::err(1260, "raw payload on a JSON path"),
            Op::Register => self.register(keys, params),
            Op::TopoGet => self.topo_get(keys),
            Op::TopoAdd => self.topo_add(keys, params),
            Op::TopoDelete => self.topo_delete(conn, keys, params),
            Op::Login => self.login(conn, keys, params),
            Op::BatchLogin => self.batch_login(conn, keys, params),
            Op::Logout => self.logout(conn, params),
            Op::TslGet => self.tsl_get(keys),
            Op::OtaInform => self.ota_inform(keys, params),
            Op::OtaProgress => self.ota_progress(keys, params),
            Op::OtaGetVersion => self.ota_versions(keys),
        }
    }
}
