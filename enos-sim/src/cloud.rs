//! The cloud's logic (spec §10), independent of how messages arrive: sessions, CONNECT
//! authentication, and the answer to every upstream operation, with state.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use enos_proto::codec::ConnectReturnCode;
use enos_proto::compress::{ClientId, Compression};
use enos_proto::ops::Firmware;
use enos_proto::sign::{sign_device, SignMethod};
use enos_proto::topic::{parse_topic, Scope};
use enos_proto::{DeviceKeys, Secret};
use serde::de::MapAccess;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::cloud_limits::{MAX_PAYLOAD, MAX_REGISTER, MAX_TAGS};
use crate::diagnostics;

mod integration;
use crate::registry::{DataType, Device, OtaTask, Registry, Stamped};

/// One entry of a batch post as the cloud reads it.
enum BatchEntry<'p> {
    /// Not an entry the cloud can read (1206).
    Malformed,
    /// Points for a device: the sub-device's keys, or `None` for the gateway itself.
    Entry { keys: Option<DeviceKeys>, points: Vec<(&'p str, Cow<'p, Value>)>, time: Option<u64> },
}

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
    /// Replies (and pushes) for the publishing connection.
    pub replies: Vec<Outbound>,
    /// A device's reply to a command: (reply topic, payload).
    pub command_reply: Option<(String, Bytes)>,
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

/// The fields of a CONNECT that authentication looks at.
#[derive(Debug, Clone, Copy)]
pub struct ConnectInfo<'a> {
    /// The MQTT client id.
    pub client_id: &'a str,
    /// The user name (`deviceKey&productKey`).
    pub username: &'a str,
    /// The password (the signature).
    pub password: &'a str,
    /// The names of the client certificate the TLS layer verified (its common names and
    /// DNS names, [`crate::pki::certificate_names`]); empty without one.
    pub certificate: &'a [String],
}

/// An accepted CONNECT.
#[derive(Debug)]
#[non_exhaustive]
pub struct Accepted {
    /// The device.
    pub device: DeviceKeys,
    /// Connections this one takes over (same client id, or the same device).
    pub takeover: Vec<ConnId>,
    /// Messages to push at once (the activation push, a queued OTA upgrade).
    pub push: Vec<Outbound>,
    /// The payload codec the device announced (extensions spec E7).
    pub compression: Option<Compression>,
}

#[derive(Debug)]
struct Session {
    device: DeviceKeys,
    client_id: String,
    subs: HashSet<DeviceKeys>,
}

/// The simulated cloud's state and logic.
#[derive(Debug)]
pub struct Cloud {
    /// Products, devices, topologies.
    pub registry: Registry,
    sessions: HashMap<ConnId, Session>,
    by_client_id: HashMap<String, ConnId>,
    online: HashMap<DeviceKeys, ConnId>,
    sub_online: HashMap<DeviceKeys, ConnId>,
    /// Bytes answered to every raw up (`None`: echo the request).
    pub raw_reply: Option<Bytes>,
    next_command: u64,
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

/// The upstream operations of spec §5.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    TagQuery,
    TagUpdate,
    TagDelete,
    AttributeQuery,
    AttributeUpdate,
    AttributeDelete,
    Post,
    Resume,
    BatchPost,
    BatchResume,
    Event(String),
    RawUp,
    Register,
    TopoGet,
    TopoAdd,
    TopoDelete,
    Login,
    BatchLogin,
    Logout,
    TslGet,
    OtaInform,
    OtaProgress,
    OtaGetVersion,
    LogPost,
    NetworkStatus,
    ConnectionState,
}

fn classify(scope: Scope, path: &str) -> Option<Op> {
    Some(match (scope, path) {
        (Scope::Sys, "thing/tag/query") => Op::TagQuery,
        (Scope::Sys, "thing/tag/update") => Op::TagUpdate,
        (Scope::Sys, "thing/tag/delete") => Op::TagDelete,
        (Scope::Sys, "thing/attribute/query") => Op::AttributeQuery,
        (Scope::Sys, "thing/attribute/update") => Op::AttributeUpdate,
        (Scope::Sys, "thing/attribute/delete") => Op::AttributeDelete,
        (Scope::Sys, "thing/measurepoint/post") => Op::Post,
        (Scope::Sys, "thing/measurepoint/resume") => Op::Resume,
        (Scope::Sys, "thing/measurepoint/post/batch") => Op::BatchPost,
        (Scope::Sys, "thing/measurepoint/resume/batch") => Op::BatchResume,
        (Scope::Sys, "thing/model/up_raw") => Op::RawUp,
        (Scope::Sys, "thing/device/register") => Op::Register,
        (Scope::Sys, "thing/topo/get") => Op::TopoGet,
        (Scope::Sys, "thing/topo/add") => Op::TopoAdd,
        (Scope::Sys, "thing/topo/delete") => Op::TopoDelete,
        (Scope::Sys, "thing/tsltemplate/get") => Op::TslGet,
        (Scope::Sys, "ota/device/inform") => Op::OtaInform,
        (Scope::Sys, "ota/device/progress") => Op::OtaProgress,
        (Scope::Sys, "ota/device/getversion") => Op::OtaGetVersion,
        (Scope::Sys, "thing/log/post") => Op::LogPost,
        (Scope::Sys, "network/status/report") => Op::NetworkStatus,
        (Scope::Sys, "connection/state/post") => Op::ConnectionState,
        (Scope::ExtSession, "combine/login") => Op::Login,
        (Scope::ExtSession, "combine/login/batch") => Op::BatchLogin,
        (Scope::ExtSession, "combine/logout") => Op::Logout,
        (Scope::Sys, p) => {
            let id = p.strip_prefix("thing/event/")?.strip_suffix("/post")?;
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return None;
            }
            Op::Event(id.to_owned())
        }
        _ => return None,
    })
}

impl Op {
    fn method(&self) -> String {
        match self {
            Op::Event(id) => format!("thing.event.{id}.post"),
            Op::TagQuery => "thing.tag.query".into(),
            Op::TagUpdate => "thing.tag.update".into(),
            Op::TagDelete => "thing.tag.delete".into(),
            Op::AttributeQuery => "thing.attribute.query".into(),
            Op::AttributeUpdate => "thing.attribute.update".into(),
            Op::AttributeDelete => "thing.attribute.delete".into(),
            Op::Post => "thing.measurepoint.post".into(),
            Op::Resume => "thing.measurepoint.resume".into(),
            Op::BatchPost => "thing.measurepoint.post.batch".into(),
            Op::BatchResume => "thing.measurepoint.resume.batch".into(),
            Op::RawUp => String::new(),
            Op::Register => "thing.device.register".into(),
            Op::TopoGet => "thing.topo.get".into(),
            Op::TopoAdd => "thing.topo.add".into(),
            Op::TopoDelete => "thing.topo.delete".into(),
            Op::Login => "combine.login".into(),
            Op::BatchLogin => "combine.login.batch".into(),
            Op::Logout => "combine.logout".into(),
            Op::TslGet => "thing.tsltemplate.get".into(),
            Op::OtaInform => "ota.device.inform".into(),
            Op::OtaProgress => "ota.device.progress".into(),
            Op::OtaGetVersion => "ota.device.getversion".into(),
            Op::LogPost => "thing.log.post".into(),
            Op::NetworkStatus => "network.status.report".into(),
            Op::ConnectionState => "connection.state.post".into(),
        }
    }
}

/// The result of one operation: code, data, message.
struct Answer {
    code: i32,
    data: Value,
    message: String,
}

impl Answer {
    fn ok(data: Value) -> Self {
        Answer { code: 200, data, message: String::new() }
    }
    fn err(code: i32, message: impl Into<String>) -> Self {
        Answer { code, data: json!({}), message: message.into() }
    }
}

/// The reply `{"id":..,"code":..,"data":..[,"message":..]}` on `<topic>_reply`, written
/// straight out (no JSON tree built for it).
fn reply(topic: &str, id: &str, a: &Answer) -> Outbound {
    use std::io::Write;
    let mut body = Vec::with_capacity(48 + id.len() + a.message.len());
    body.extend_from_slice(b"{\"id\":");
    // Writing JSON into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut body, id);
    let _ = write!(body, ",\"code\":{},\"data\":", a.code);
    let _ = serde_json::to_writer(&mut body, &a.data);
    if !a.message.is_empty() {
        body.extend_from_slice(b",\"message\":");
        let _ = serde_json::to_writer(&mut body, &a.message);
    }
    body.push(b'}');
    let mut reply_topic = String::with_capacity(topic.len() + 6);
    reply_topic.push_str(topic);
    reply_topic.push_str("_reply");
    Outbound { topic: reply_topic, payload: Bytes::from(body) }
}

fn keys_of(v: &Value) -> Option<DeviceKeys> {
    DeviceKeys::new(v.get("productKey")?.as_str()?, v.get("deviceKey")?.as_str()?).ok()
}

/// A timestamp as signed: a JSON string or number, as its decimal text.
fn text_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether `sign` is `SIGN(method, {clientId, deviceKey, productKey, timestamp}, secret)`,
/// ignoring case.
/// Whether `sign` is the signature of these fields (hex, in either case), compared in
/// constant time.
fn sign_ok(method: &str, client_id: &str, keys: &DeviceKeys, timestamp: &str, secret: &Secret, sign: &str) -> bool {
    use subtle::ConstantTimeEq;
    SignMethod::from_label(method).is_some_and(|m| {
        let expected = sign_device(m, client_id, keys, timestamp, secret).to_ascii_lowercase();
        bool::from(expected.as_bytes().ct_eq(sign.to_ascii_lowercase().as_bytes()))
    })
}

impl Cloud {
    /// A cloud over `registry`.
    pub fn new(registry: Registry) -> Self {
        Cloud {
            registry,
            sessions: HashMap::new(),
            by_client_id: HashMap::new(),
            online: HashMap::new(),
            sub_online: HashMap::new(),
            raw_reply: None,
            // Commands are numbered from the clock (epoch milliseconds times 1,000): far
            // above any device's own request counter, which starts at 1, so that an SDK
            // that keys its pending replies by id alone (the vendor's Node.js SDK) never
            // takes a command for the reply to one of its requests. Still a decimal under
            // 2^53, as JavaScript reads numbers exactly.
            next_command: crate::unix_ms().saturating_mul(1000).max(1),
            pending_ota: HashMap::new(),
            pushes: Vec::new(),
            fast_paths: true,
            max_clock_skew: None,
        }
    }

    /// The connection that carries `keys`' commands: its own, or its gateway's.
    pub(crate) fn route(&self, keys: &DeviceKeys) -> Option<ConnId> {
        self.online.get(keys).or_else(|| self.sub_online.get(keys)).copied()
    }

    /// Whether `keys` is connected, or logged in through a gateway.
    pub fn is_online(&self, keys: &DeviceKeys) -> bool {
        self.route(keys).is_some()
    }

    /// Whether a login's timestamp (epoch milliseconds, possibly with a fraction) is within
    /// [`max_clock_skew`](Self::max_clock_skew) of now.
    fn fresh(&self, ts: &str) -> bool {
        let Some(window) = self.max_clock_skew else { return true };
        let now = crate::unix_ms() as f64;
        ts.parse::<f64>().is_ok_and(|t| t.is_finite() && (t - now).abs() <= window.as_millis() as f64)
    }

    /// The QoS the registry sets for what the cloud publishes (a connection takes it once).
    pub fn delivery(&self) -> Delivery {
        Delivery { reply: self.registry.reply_qos.into(), command: self.registry.command_qos.into() }
    }

    /// A fresh command id: decimal, unique in this cloud, never one a device's own request
    /// counter reaches.
    pub(crate) fn command_id(&mut self) -> String {
        let id = self.next_command;
        self.next_command += 1;
        id.to_string()
    }

    /// Authenticates a CONNECT (spec §2, §3, §10) for connection `conn`: the device, or
    /// the CONNACK refusal.
    ///
    /// # Errors
    ///
    /// The CONNACK return code of the refusal.
    pub fn connect(&mut self, conn: ConnId, c: ConnectInfo<'_>) -> Result<Accepted, ConnectReturnCode> {
        // CID[{ip=..,version=..,compress=..}]|securemode=M,signmethod=SM,timestamp=TS|
        let Some(id) = ClientId::parse(c.client_id) else { return Err(ConnectReturnCode::BadClientId) };
        // The signature covers the client id with its block; the length limit does not.
        let (cid, mode, method, ts) = (id.signed, id.secure_mode, id.sign_method, id.timestamp);
        // LZO, or a codec not known: refused as the spec's choice says.
        let compression = id.compression().map_err(|_| ConnectReturnCode::BadClientId)?;
        if !self.fresh(ts) {
            return Err(ConnectReturnCode::NotAuthorized);
        }
        if id.cid.is_empty() || id.cid.chars().count() > 64 {
            return Err(ConnectReturnCode::BadClientId);
        }
        let Some((dk, pk)) = c.username.split_once('&').filter(|(_, pk)| !pk.contains('&')) else {
            return Err(ConnectReturnCode::BadUserNamePassword);
        };
        let keys = DeviceKeys::new(pk, dk).map_err(|_| ConnectReturnCode::NotAuthorized)?;
        let product = self.registry.products.get(pk).ok_or(ConnectReturnCode::NotAuthorized)?;
        let (dynamic_activation, product_secret) = (product.dynamic_activation, product.secret.clone());
        if mode == "4" {
            // The product's message-integration channel (extensions spec E4, E10).
            let channel = product.integration_channel && dk == enos_proto::INTEGRATION_DEVICE_KEY;
            if !channel || !sign_ok(method, cid, &keys, ts, &product_secret, c.password) {
                return Err(ConnectReturnCode::NotAuthorized);
            }
            return Ok(self.open_session(conn, keys, c.client_id, Vec::new(), compression));
        }
        let allow_reactivation = self.registry.allow_reactivation;
        let device = self.registry.devices.get(&keys).ok_or(ConnectReturnCode::NotAuthorized)?;
        if !device.enabled {
            return Err(ConnectReturnCode::NotAuthorized);
        }
        let activating = match mode {
            "2" => {
                let verified = match &device.secret {
                    Some(secret) => sign_ok(method, cid, &keys, ts, secret, c.password),
                    None => false,
                };
                // A verified client certificate may stand in for the password, for the
                // device it was issued to only.
                let by_certificate = c.password.is_empty() && c.certificate.iter().any(|n| n == keys.device_key());
                if !(verified || by_certificate) {
                    return Err(ConnectReturnCode::NotAuthorized);
                }
                false
            }
            "3" => {
                if !dynamic_activation
                    || (device.activated && !allow_reactivation)
                    || !sign_ok(method, cid, &keys, ts, &product_secret, c.password)
                {
                    return Err(ConnectReturnCode::NotAuthorized);
                }
                true
            }
            _ => return Err(ConnectReturnCode::NotAuthorized),
        };
        let mut push = Vec::new();
        if activating {
            let secret = match &device.secret {
                Some(s) => s.clone(),
                None => {
                    let s = Registry::random_secret(20).ok_or(ConnectReturnCode::ServiceUnavailable)?;
                    if let Some(d) = self.registry.devices.get_mut(&keys) {
                        d.secret = Some(s.clone());
                    }
                    s
                }
            };
            let asset = self.registry.devices.get(&keys).map(|d| d.asset_id.clone()).unwrap_or_default();
            let id = self.command_id();
            let body = json!({"id": id, "version": "1.0", "method": "thing.activate.info",
                "params": {"assetId": asset, "productKey": pk, "deviceKey": dk, "deviceSecret": secret.expose()}});
            push.push(Outbound {
                topic: enos_proto::topic::topic(Scope::ExtSession, &keys, "thing/activate/info"),
                payload: Bytes::from(body.to_string()),
            });
        }
        if let Some(fw) = self.pending_ota.remove(&keys) {
            push.push(self.ota_push(&keys, fw));
        }
        Ok(self.open_session(conn, keys, c.client_id, push, compression))
    }

    /// Opens the session of an accepted CONNECT: it takes over the connections with its
    /// client id or its device.
    fn open_session(
        &mut self,
        conn: ConnId,
        keys: DeviceKeys,
        client_id: &str,
        push: Vec<Outbound>,
        compression: Option<Compression>,
    ) -> Accepted {
        let mut takeover: Vec<ConnId> = [self.by_client_id.get(client_id).copied(), self.online.get(&keys).copied()]
            .into_iter()
            .flatten()
            .collect();
        takeover.dedup();
        for old in &takeover {
            self.disconnect(*old);
        }
        self.sessions
            .insert(conn, Session { device: keys.clone(), client_id: client_id.to_owned(), subs: HashSet::new() });
        self.by_client_id.insert(client_id.to_owned(), conn);
        self.online.insert(keys.clone(), conn);
        Accepted { device: keys, takeover, push, compression }
    }

    /// Connects `keys` as connection `conn` with a CONNECT signed by its device secret
    /// (secure mode 2, SHA-256), as a device would send it: for tests, benchmarks and tools
    /// that drive the cloud without sockets.
    ///
    /// # Errors
    ///
    /// The CONNACK return code of the refusal (an unknown device, a wrong secret, ...).
    pub fn connect_with_secret(
        &mut self,
        conn: ConnId,
        keys: &DeviceKeys,
        secret: &Secret,
    ) -> Result<Accepted, ConnectReturnCode> {
        let f = enos_proto::sign::connect_fields(
            keys,
            keys.device_key(),
            enos_proto::SecureMode::DeviceSecret,
            SignMethod::Sha256,
            1,
            secret,
        );
        let info = ConnectInfo {
            client_id: &f.client_id,
            username: &f.username,
            password: f.password.expose(),
            certificate: &[],
        };
        self.connect(conn, info)
    }

    /// Whether the connection `conn` may subscribe to `filter`: only within the topics
    /// of its own device (`/sys/{pk}/{dk}/...`, `/ext/session/{pk}/{dk}/...`) or of a
    /// sub-device in its topology or logged in through it, with both keys written out (no
    /// wildcard for them). Anything wider could match another device's messages.
    pub fn may_subscribe(&self, conn: ConnId, filter: &str) -> bool {
        let Some(session) = self.sessions.get(&conn) else { return false };
        if integration::is_channel(&session.device) {
            // The channel's own topics only.
            let pk = session.device.product_key();
            return filter
                .strip_prefix("/sys/")
                .and_then(|f| f.strip_prefix(pk))
                .is_some_and(|f| f.starts_with("/integration/"));
        }
        let mut levels = filter.split('/');
        let owner = match (levels.next(), levels.next()) {
            (Some(""), Some("sys")) => (levels.next(), levels.next()),
            (Some(""), Some("ext")) if levels.next() == Some("session") => (levels.next(), levels.next()),
            _ => return false,
        };
        let (Some(pk), Some(dk)) = owner else { return false };
        if [pk, dk].iter().any(|l| l.contains(['+', '#'])) {
            return false;
        }
        let Ok(keys) = DeviceKeys::new(pk, dk) else { return false };
        keys == session.device
            || session.subs.contains(&keys)
            || self.registry.topology.get(&session.device).is_some_and(|t| t.contains(&keys))
    }

    /// A device seen on a shared broker (responder mode): a session without a CONNECT.
    pub(crate) fn attach(&mut self, conn: ConnId, keys: &DeviceKeys) {
        self.sessions.entry(conn).or_insert_with(|| Session {
            device: keys.clone(),
            client_id: String::new(),
            subs: HashSet::new(),
        });
        self.online.insert(keys.clone(), conn);
    }

    /// The connection is gone: its device and sub-devices go offline.
    pub fn disconnect(&mut self, conn: ConnId) {
        if let Some(s) = self.sessions.remove(&conn) {
            if self.by_client_id.get(&s.client_id) == Some(&conn) {
                self.by_client_id.remove(&s.client_id);
            }
            if self.online.get(&s.device) == Some(&conn) {
                self.online.remove(&s.device);
            }
            for sub in s.subs {
                if self.sub_online.get(&sub) == Some(&conn) {
                    self.sub_online.remove(&sub);
                }
            }
        }
    }

    /// Logs sub-devices out wherever they are logged in (the cloud's own decision:
    /// disable, delete).
    pub(crate) fn log_out(&mut self, subs: &[DeviceKeys]) {
        for sub in subs {
            if let Some(conn) = self.sub_online.get(sub).copied() {
                self.log_out_from(conn, sub);
            }
        }
    }

    /// Logs a sub-device out of connection `conn`, and only of it (a gateway's request).
    fn log_out_from(&mut self, conn: ConnId, sub: &DeviceKeys) {
        if self.sub_online.get(sub) == Some(&conn) {
            self.sub_online.remove(sub);
        }
        if let Some(s) = self.sessions.get_mut(&conn) {
            s.subs.remove(sub);
        }
    }

    /// The connection of a directly connected device (not of a logged-in sub-device).
    pub(crate) fn direct(&self, keys: &DeviceKeys) -> Option<ConnId> {
        self.online.get(keys).copied()
    }

    /// The OTA upgrade command for `keys`, recording the task.
    pub(crate) fn ota_push(&mut self, keys: &DeviceKeys, fw: Firmware) -> Outbound {
        if let Some(d) = self.registry.devices.get_mut(keys) {
            d.ota = Some(OtaTask { firmware: fw.clone(), started: false, step: None, done: false });
        }
        let id = self.command_id();
        let body = json!({"id": id, "version": "1.0", "method": "ota.device.upgrade", "params": fw});
        Outbound {
            topic: enos_proto::topic::topic(Scope::Sys, keys, "ota/device/upgrade"),
            payload: Bytes::from(body.to_string()),
        }
    }

    /// Queues an OTA push for a device that is offline (sent at its next CONNECT).
    pub(crate) fn queue_ota(&mut self, keys: &DeviceKeys, fw: Firmware) {
        self.pending_ota.insert(keys.clone(), fw);
    }

    /// Handles one PUBLISH from connection `conn` (spec §10): the replies to send back.
    pub fn publish(&mut self, conn: ConnId, topic: &str, payload: &Bytes, now_ms: u64) -> Handled {
        let mut out = Handled::default();
        let Some(session) = self.sessions.get(&conn) else { return out };
        if integration::is_channel(&session.device) {
            let pk = session.device.product_key().to_owned();
            return self.integration_publish(&pk, topic, payload, now_ms);
        }
        let Some(parts) = parse_topic(topic) else { return out };
        let Ok(keys) = DeviceKeys::new(parts.product_key, parts.device_key) else { return out };
        let own = keys == session.device || session.subs.contains(&keys);
        if let Some(path) = parts.path.strip_suffix("_reply") {
            if own {
                if parts.scope == Scope::ExtSession && path == "thing/activate/info" {
                    let ok = serde_json::from_slice::<Value>(payload).ok().and_then(|v| v.get("code")?.as_i64())
                        == Some(200);
                    if ok {
                        if let Some(d) = self.registry.devices.get_mut(&keys) {
                            d.activated = true;
                        }
                    }
                }
                if path == "ota/device/upgrade" {
                    let ok = serde_json::from_slice::<Value>(payload).ok().and_then(|v| v.get("code")?.as_i64())
                        == Some(200);
                    if let Some(task) = self.registry.devices.get_mut(&keys).and_then(|d| d.ota.as_mut()) {
                        task.started |= ok;
                    }
                }
                out.command_reply = Some((topic.to_owned(), payload.clone()));
            }
            return out;
        }
        if own && parts.scope == Scope::Sys && parts.path == "traffic/control" {
            // The vendor's Java SDK answers traffic control on the command topic itself
            // (extensions spec C13): taken as the reply, and never sent back.
            let answered = serde_json::from_slice::<Value>(payload).ok().is_some_and(|v| v.get("code").is_some());
            if answered {
                out.command_reply = Some((format!("{topic}_reply"), payload.clone()));
            }
            return out;
        }
        let Some(op) = classify(parts.scope, parts.path) else { return out };
        if !own {
            // Optional 1009 for a known device that is not logged in through here.
            if self.registry.devices.contains_key(&keys) && op != Op::RawUp {
                let id = serde_json::from_slice::<Value>(payload).ok().map(|v| id_of(&v)).unwrap_or_default();
                out.replies.push(reply(topic, &id, &Answer::err(1009, "Publish to topic with no write permission")));
            }
            return out;
        }
        if payload.is_empty() {
            out.replies.push(reply(topic, "", &Answer::err(1251, "Payload is empty")));
            return out;
        }
        if op == Op::RawUp {
            // Raw payloads are never JSON (spec §7): only the size applies.
            if payload.len() > MAX_PAYLOAD {
                out.replies.push(reply(topic, "", &Answer::err(1008, "Msg size is too large, discard the message")));
            } else {
                let body = self.raw_reply.clone().unwrap_or_else(|| payload.clone());
                out.replies.push(Outbound { topic: format!("{topic}_reply"), payload: body });
            }
            return out;
        }
        if self.fast_paths && payload.len() <= MAX_PAYLOAD {
            let fast = match op {
                Op::Post | Op::Resume => self
                    .fast_post(&keys, &op.method(), payload, now_ms, op == Op::Resume)
                    .map(|id| (id, Answer::ok(json!({})))),
                Op::BatchPost | Op::BatchResume => {
                    self.fast_batch(conn, &keys, &op.method(), payload, now_ms, op == Op::BatchResume)
                }
                _ => None,
            };
            if let Some((id, answer)) = fast {
                out.replies.push(reply(topic, &id, &answer));
                return out;
            }
        }
        let Ok(body) = serde_json::from_slice::<Value>(payload) else {
            out.replies.push(reply(topic, "", &Answer::err(1220, "Payload format error")));
            return out;
        };
        let Some(obj) = body.as_object() else {
            out.replies.push(reply(topic, "", &Answer::err(1220, "Payload format error")));
            return out;
        };
        let id = id_of(&body);
        if obj.get("method").and_then(Value::as_str) != Some(op.method().as_str()) {
            out.replies.push(reply(topic, &id, &Answer::err(1260, "Methods not consistent")));
            return out;
        }
        if payload.len() > MAX_PAYLOAD {
            out.replies.push(reply(topic, &id, &Answer::err(1008, "Msg size is too large, discard the message")));
            return out;
        }
        // The parameters are taken out of the body, not copied: a batch can be large.
        let mut body = body;
        let Some(obj) = body.as_object_mut() else { return out };
        let params = obj.remove("params").unwrap_or(Value::Null);
        let answer = self.answer(conn, &op, &keys, &params, obj, now_ms);
        out.replies.push(reply(topic, &id, &answer));
        out.replies.append(&mut self.pushes);
        out
    }

    /// The most common request, a valid measure point post or resume, read without a JSON
    /// tree of its envelope and stored: its reply id. `None` sends the request the general
    /// way (which gives every error its code and stores the same when it is valid).
    fn fast_post(
        &mut self,
        keys: &DeviceKeys,
        method: &str,
        payload: &[u8],
        now_ms: u64,
        resume: bool,
    ) -> Option<String> {
        let (id, envelope) = FastEnvelope::<FastEntry<'_>>::read(payload, method)?;
        let params = envelope.params?;
        let points = params.points;
        let model = self.point_model(keys);
        if !points.iter().all(|(k, v)| accepts_point(model, k, v)) {
            return None;
        }
        let time = params.time.as_ref().and_then(Value::as_u64).unwrap_or(now_ms);
        self.store_points(keys, points.0.into_iter().map(|(k, v)| (k, Cow::Owned(v))), time, resume);
        Some(id)
    }

    /// A batch post read without a JSON tree (point names borrowed), then checked and
    /// stored as the general way does: the reply id and the answer. `None` when it cannot
    /// be read so; the general way then reads it and gives its error.
    fn fast_batch(
        &mut self,
        conn: ConnId,
        keys: &DeviceKeys,
        method: &str,
        payload: &[u8],
        now_ms: u64,
        resume: bool,
    ) -> Option<(String, Answer)> {
        let (id, envelope) = FastEnvelope::<Vec<FastEntry<'_>>>::read(payload, method)?;
        let flag = |v: &Option<Value>| v.as_ref().and_then(Value::as_bool).unwrap_or(false);
        let flags = (flag(&envelope.allow_offline), flag(&envelope.skip_invalid));
        let params = envelope.params?;
        let entries = params
            .into_iter()
            .map(|e| BatchEntry::Entry {
                points: e.points.0.into_iter().map(|(k, v)| (k, Cow::Owned(v))).collect(),
                time: e.time.as_ref().and_then(Value::as_u64),
                keys: e.keys,
            })
            .collect();
        Some((id, self.batch_entries(conn, keys, entries, flags, now_ms, resume)))
    }

    fn device_mut(&mut self, keys: &DeviceKeys) -> Option<&mut Device> {
        self.registry.devices.get_mut(keys)
    }

    fn answer(
        &mut self,
        conn: ConnId,
        op: &Op,
        keys: &DeviceKeys,
        params: &Value,
        env: &Map<String, Value>,
        now_ms: u64,
    ) -> Answer {
        let bad = || Answer::err(1220, "Payload format error");
        match op {
            Op::TagQuery | Op::AttributeQuery => {
                let field = if *op == Op::TagQuery { "tags" } else { "attributes" };
                let Some(wanted) = params.get(field).and_then(Value::as_array) else { return bad() };
                let Some(d) = self.registry.devices.get(keys) else { return bad() };
                let all: Map<String, Value> = if *op == Op::TagQuery {
                    d.tags.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect()
                } else {
                    d.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
                };
                let data: Map<String, Value> = if wanted.is_empty() {
                    all
                } else {
                    wanted
                        .iter()
                        .filter_map(Value::as_str)
                        .filter_map(|k| all.get(k).map(|v| (k.to_owned(), v.clone())))
                        .collect()
                };
                Answer::ok(Value::Object(data))
            }
            Op::TagUpdate => {
                let Some(entries) = params.as_array() else { return bad() };
                let mut tags = Vec::new();
                for e in entries {
                    let Some(k) = e.get("tagKey").and_then(Value::as_str) else { return bad() };
                    let v = match e.get("tagValue") {
                        Some(Value::String(s)) => s.clone(),
                        Some(other) => other.to_string(),
                        None => String::new(),
                    };
                    tags.push((k.to_owned(), v));
                }
                let Some(d) = self.device_mut(keys) else { return bad() };
                let new = tags.iter().filter(|(k, _)| !d.tags.contains_key(k)).count();
                if d.tags.len() + new > MAX_TAGS {
                    return Answer::err(460, format!("at most {MAX_TAGS} tags per device"));
                }
                d.tags.extend(tags);
                Answer::ok(json!({}))
            }
            Op::TagDelete | Op::AttributeDelete => {
                let field = if *op == Op::TagDelete { "tags" } else { "attributes" };
                let Some(list) = params.get(field).and_then(Value::as_array) else { return bad() };
                if let Some(d) = self.device_mut(keys) {
                    for k in list.iter().filter_map(Value::as_str) {
                        if *op == Op::TagDelete {
                            d.tags.remove(k);
                        } else {
                            d.attributes.remove(k);
                        }
                    }
                }
                Answer::ok(json!({}))
            }
            Op::AttributeUpdate => {
                let Some(attrs) = params.get("attributes").and_then(Value::as_object) else {
                    return Answer::err(1207, "Attribute update data format error");
                };
                let tsl = self
                    .registry
                    .products
                    .get(keys.product_key())
                    .map(|p| p.tsl.attributes.clone())
                    .unwrap_or_default();
                for (k, v) in attrs {
                    if !tsl.get(k).is_some_and(|t| t.accepts(v)) {
                        return Answer::err(1204, format!("Model validate failed: attribute {k}"));
                    }
                }
                if let Some(d) = self.device_mut(keys) {
                    d.attributes.extend(attrs.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                Answer::ok(json!({}))
            }
            Op::Post | Op::Resume => {
                let Some(points) = params.get("measurepoints").and_then(Value::as_object) else {
                    return Answer::err(1206, "Measurepoint post data format error");
                };
                let time = params.get("time").and_then(Value::as_u64).unwrap_or(now_ms);
                if let Err(k) = self.check_points(keys, points) {
                    return Answer::err(1204, format!("Model validate failed: measurepoint {k}"));
                }
                let points = points.iter().map(|(k, v)| (k.as_str(), Cow::Borrowed(v)));
                self.store_points(keys, points, time, *op == Op::Resume);
                Answer::ok(json!({}))
            }
            Op::BatchPost | Op::BatchResume => self.batch(conn, keys, params, env, now_ms, *op == Op::BatchResume),
            Op::Event(event) => {
                let model =
                    self.registry.products.get(keys.product_key()).and_then(|p| p.tsl.events.get(event)).cloned();
                let Some(model) = model else {
                    return Answer::err(1204, format!("Model validate failed: event {event}"));
                };
                let Some(values) = params.get("events").and_then(Value::as_object) else { return bad() };
                for (k, v) in values {
                    if !model.get(k).is_some_and(|t| t.accepts(v)) {
                        return Answer::err(1204, format!("Model validate failed: event parameter {k}"));
                    }
                }
                let time = params.get("time").and_then(Value::as_u64).unwrap_or(now_ms);
                let limit = self.registry.history_limit;
                if let Some(d) = self.device_mut(keys) {
                    Device::keep(&mut d.events, (event.clone(), Value::Object(values.clone()), time), limit);
                }
                Answer::ok(json!({}))
            }
            Op::LogPost | Op::NetworkStatus | Op::ConnectionState => {
                let check = match op {
                    Op::LogPost => diagnostics::check_log,
                    Op::NetworkStatus => diagnostics::check_network_status,
                    _ => diagnostics::check_connection_state,
                };
                if let Err(why) = check(params) {
                    return Answer::err(1220, format!("Payload format error: {why}"));
                }
                let limit = self.registry.history_limit;
                if let Some(d) = self.device_mut(keys) {
                    Device::keep(&mut d.reports, (op.method(), params.clone(), now_ms), limit);
                }
                Answer::ok(json!({}))
            }
            Op::RawUp => Answer::err(1260, "raw payload on a JSON path"),
            Op::Register => self.register(keys, params),
            Op::TopoGet => {
                if !self.registry.is_gateway(keys) {
                    return Answer::err(700, "device is not a gateway");
                }
                // In key order.
                let mut subs: Vec<&DeviceKeys> =
                    self.registry.topology.get(keys).map(|t| t.iter().collect()).unwrap_or_default();
                subs.sort();
                let data: Vec<Value> = subs
                    .into_iter()
                    .map(|s| {
                        let d = self.registry.devices.get(s);
                        json!({"productKey": s.product_key(), "deviceKey": s.device_key(),
                               "assetId": d.map(|d| d.asset_id.clone()), "deviceName": d.map(|d| d.name.clone())})
                    })
                    .collect();
                Answer::ok(Value::Array(data))
            }
            Op::TopoAdd => self.topo_add(keys, params),
            Op::TopoDelete => {
                let Some(list) = params.as_array() else { return bad() };
                let subs: Vec<DeviceKeys> = list.iter().filter_map(keys_of).collect();
                let mut removed = Vec::new();
                if let Some(t) = self.registry.topology.get_mut(keys) {
                    removed = subs.into_iter().filter(|s| t.remove(s)).collect();
                }
                for s in &removed {
                    self.log_out_from(conn, s);
                }
                Answer::ok(json!({}))
            }
            Op::Login => {
                let Some(sub) = keys_of(params) else { return bad() };
                let client_id = params.get("clientId").and_then(Value::as_str).unwrap_or_default();
                let ts = text_of(params.get("timestamp")).unwrap_or_default();
                let method = params.get("signMethod").and_then(Value::as_str).unwrap_or("sha256");
                let sign = params.get("sign").and_then(Value::as_str).unwrap_or_default();
                let mode = text_of(params.get("secureMode")).unwrap_or_else(|| "2".into());
                match self.login(conn, keys, &sub, client_id, &ts, method, sign, &mode) {
                    Ok(data) => Answer::ok(data),
                    Err((code, message)) => Answer::err(code, message),
                }
            }
            Op::BatchLogin => {
                let (Some(client_id), Some(ts), Some(list)) = (
                    params.get("clientId").and_then(Value::as_str),
                    text_of(params.get("timestamp")),
                    params.get("subDevices").and_then(Value::as_array),
                ) else {
                    return Answer {
                        code: 1220,
                        data: json!({"loginedSubDevices": [], "failedSubDevices": []}),
                        message: "Payload format error".into(),
                    };
                };
                let method = params.get("signMethod").and_then(Value::as_str).unwrap_or("sha256").to_owned();
                let mut ok = Vec::new();
                let mut failed = Vec::new();
                let mut message = String::new();
                for e in list {
                    let Some(sub) = keys_of(e) else { continue };
                    let sign = e.get("sign").and_then(Value::as_str).unwrap_or_default();
                    let mode = text_of(e.get("secureMode")).unwrap_or_else(|| "2".into());
                    match self.login(conn, keys, &sub, client_id, &ts, &method, sign, &mode) {
                        Ok(data) => ok.push(data),
                        Err((_, reason)) => {
                            message.push_str(&format!(
                                "{}&{} has error: {reason};",
                                sub.product_key(),
                                sub.device_key()
                            ));
                            failed.push(json!({"productKey": sub.product_key(), "deviceKey": sub.device_key()}));
                        }
                    }
                }
                let code = if failed.is_empty() { 200 } else { 723 };
                Answer { code, data: json!({"loginedSubDevices": ok, "failedSubDevices": failed}), message }
            }
            Op::Logout => {
                let Some(sub) = keys_of(params) else { return bad() };
                self.log_out_from(conn, &sub);
                Answer::ok(json!({"productKey": sub.product_key(), "deviceKey": sub.device_key()}))
            }
            Op::TslGet => match self.registry.products.get(keys.product_key()) {
                Some(p) => Answer::ok(p.tsl.template()),
                None => bad(),
            },
            Op::OtaInform => {
                let Some(version) = params.get("version").and_then(Value::as_str) else { return bad() };
                if let Some(d) = self.device_mut(keys) {
                    d.firmware_version = Some(version.to_owned());
                    if let Some(t) = d.ota.as_mut() {
                        if t.firmware.version == version {
                            t.done = true;
                        }
                    }
                }
                Answer::ok(json!({}))
            }
            Op::OtaProgress => {
                let step = text_of(params.get("step")).unwrap_or_default();
                let Some(task) = self.device_mut(keys).and_then(|d| d.ota.as_mut()) else {
                    return Answer::err(764, "Device task not found");
                };
                if !task.started {
                    return Answer::err(765, "Device task not start");
                }
                task.done |= step == "100";
                task.step = Some(step);
                Answer::ok(json!({}))
            }
            Op::OtaGetVersion => {
                let fws =
                    self.registry.products.get(keys.product_key()).map(|p| p.firmwares.clone()).unwrap_or_default();
                Answer::ok(serde_json::to_value(fws).unwrap_or(Value::Null))
            }
        }
    }

    /// `Err(point)` for the first point the model does not accept.
    fn check_points(&self, keys: &DeviceKeys, points: &Map<String, Value>) -> Result<(), String> {
        let model = self.point_model(keys);
        match points.iter().find(|(k, v)| !accepts_point(model, k, v)) {
            Some((k, _)) => Err(k.clone()),
            None => Ok(()),
        }
    }

    /// The measure points of the model of `keys`'s product.
    fn point_model(&self, keys: &DeviceKeys) -> Option<&BTreeMap<String, DataType>> {
        self.registry.products.get(keys.product_key()).map(|p| &p.tsl.measurepoints)
    }

    /// Stores points as a post's last values (not a resume's) and in the history, where a
    /// post's points go in name order however they were sent; a value the request owns is
    /// moved, not copied, where one place takes it.
    fn store_points<'a>(
        &mut self,
        keys: &DeviceKeys,
        points: impl Iterator<Item = (&'a str, Cow<'a, Value>)>,
        time: u64,
        resume: bool,
    ) {
        let limit = self.registry.history_limit;
        let Registry { devices, point_names, .. } = &mut self.registry;
        let Some(d) = devices.get_mut(keys) else { return };
        if limit == 0 {
            d.history.clear();
        }
        let mut points: Vec<(&str, Cow<'_, Value>)> = points.collect();
        if limit > 0 {
            points.sort_by(|a, b| a.0.cmp(b.0));
        }
        for (k, v) in points {
            let (last, history) = match (resume, limit > 0) {
                (false, true) => (Some(v.clone().into_owned()), Some(v.into_owned())),
                (false, false) => (Some(v.into_owned()), None),
                (true, true) => (None, Some(v.into_owned())),
                (true, false) => (None, None),
            };
            if let Some(value) = last {
                // The point's shared name is looked up only the first time the device stores it.
                match d.measurepoints.get_mut(k) {
                    Some(last) => *last = Stamped { value, time },
                    None => {
                        d.measurepoints.insert(crate::registry::intern(point_names, k), Stamped { value, time });
                    }
                }
            }
            if let Some(value) = history {
                d.remember(resume, k, Stamped { value, time }, limit);
            }
        }
    }

    /// A batch post read from its JSON tree.
    fn batch(
        &mut self,
        conn: ConnId,
        topic_keys: &DeviceKeys,
        params: &Value,
        env: &Map<String, Value>,
        now_ms: u64,
        resume: bool,
    ) -> Answer {
        let Some(list) = params.as_array() else { return Answer::err(1206, "Measurepoint post data format error") };
        let entries = list
            .iter()
            .map(|e| {
                let Some(points) = e.get("measurepoints").and_then(Value::as_object) else {
                    return BatchEntry::Malformed;
                };
                // An empty key counts as absent: the vendor's Python SDK sends `""` for
                // the keys it was not given.
                let key = |name| e.get(name).filter(|v| v.as_str() != Some(""));
                let keys = match (key("productKey"), key("deviceKey")) {
                    (None, None) => None,
                    _ => match keys_of(e) {
                        Some(k) => Some(k),
                        None => return BatchEntry::Malformed,
                    },
                };
                let points = points.iter().map(|(k, v)| (k.as_str(), Cow::Borrowed(v))).collect();
                BatchEntry::Entry { keys, points, time: e.get("time").and_then(Value::as_u64) }
            })
            .collect();
        let flag = |name: &str| env.get(name).and_then(Value::as_bool).unwrap_or(false);
        let flags = (flag("allowOfflineSubDevice"), flag("skipInvalidMeasurepoints"));
        self.batch_entries(conn, topic_keys, entries, flags, now_ms, resume)
    }

    /// A batch post's entries, however they were read: everything is checked, in order,
    /// before anything is stored. `flags`: allow offline sub-devices, skip invalid points.
    fn batch_entries(
        &mut self,
        conn: ConnId,
        topic_keys: &DeviceKeys,
        entries: Vec<BatchEntry<'_>>,
        (allow_offline, skip_invalid): (bool, bool),
        now_ms: u64,
        resume: bool,
    ) -> Answer {
        // What the gateway may post for, looked up once per batch; the model once per run
        // of entries of one product.
        let in_topology = self.registry.topology.get(topic_keys);
        let logged_in = self.sessions.get(&conn).map(|s| &s.subs);
        let mut model: Option<(&str, PointTypes<'_>)> = None;
        let mut accepted = Vec::with_capacity(entries.len());
        for e in entries {
            let BatchEntry::Entry { keys, mut points, time } = e else {
                return Answer::err(1206, "Measurepoint post data format error");
            };
            let device = keys.unwrap_or_else(|| topic_keys.clone());
            if device != *topic_keys {
                let permitted = in_topology.is_some_and(|t| t.contains(&device))
                    && (allow_offline || logged_in.is_some_and(|s| s.contains(&device)));
                if !permitted {
                    return Answer::err(1212, "No sub-device permission");
                }
            }
            let types = match &mut model {
                Some((pk, types)) if *pk == device.product_key() => types,
                _ => {
                    let p = self.registry.products.get_key_value(device.product_key());
                    let m = p.map(|(_, p)| &p.tsl.measurepoints);
                    let pk = p.map_or("", |(pk, _)| pk.as_str());
                    &mut model.insert((pk, PointTypes { model: m, by_place: Vec::new() })).1
                }
            };
            let mut place = 0;
            let mut accepts = |k: &str, v: &Value| {
                place += 1;
                types.of(place - 1, k).is_some_and(|t| accepts_value(t, v))
            };
            if skip_invalid {
                points.retain(|(k, v)| accepts(k, v));
            } else if let Some(k) = points.iter().filter(|(k, v)| !accepts(k, v)).map(|(k, _)| *k).min() {
                // The first refused in name order, as the general way names it.
                return Answer::err(1204, format!("Model validate failed: measurepoint {k}"));
            }
            accepted.push((device, points, time.unwrap_or(now_ms)));
        }
        for (device, points, time) in accepted {
            self.store_points(&device, points.into_iter(), time, resume);
        }
        Answer::ok(json!({}))
    }

    fn register(&mut self, gateway: &DeviceKeys, params: &Value) -> Answer {
        if !self.registry.is_gateway(gateway) {
            return Answer::err(700, "device is not a gateway");
        }
        let Some(list) = params.as_array() else { return Answer::err(1220, "Payload format error") };
        if list.len() > MAX_REGISTER {
            return Answer::err(460, format!("at most {MAX_REGISTER} devices per request"));
        }
        // Validate everything first: all or nothing.
        let mut plan = Vec::new();
        for e in list {
            let Some(pk) = e.get("productKey").and_then(Value::as_str) else {
                return Answer::err(1220, "Payload format error");
            };
            if !self.registry.products.contains_key(pk) {
                return Answer::err(602, format!("product {pk} does not exist"));
            }
            let dk = match e.get("deviceKey").and_then(Value::as_str) {
                Some(dk) => dk.to_owned(),
                None => self.registry.random_text(10),
            };
            let Ok(keys) = DeviceKeys::new(pk, dk) else { return Answer::err(460, "invalid device key") };
            if self.registry.devices.contains_key(&keys) || plan.iter().any(|(k, _)| *k == keys) {
                return Answer::err(706, format!("device {keys} already exists"));
            }
            plan.push((keys, e.get("deviceName").cloned().unwrap_or(Value::Null)));
        }
        let (max, before) = (self.registry.max_registered_per_gateway, self.registry.registered_by(gateway));
        if before + plan.len() > max {
            return Answer::err(460, format!("a gateway registers at most {max} devices ({before} so far)"));
        }
        *self.registry.registered.entry(gateway.clone()).or_default() += plan.len();
        let mut data = Vec::new();
        for (keys, name) in plan {
            let Some(secret) = Registry::random_secret(20) else {
                return Answer::err(500, "no random source for device secrets");
            };
            if let Ok(d) = self.registry.add_device(keys.clone(), Some(secret.clone())) {
                d.name = name;
                data.push(json!({"assetId": d.asset_id, "productKey": keys.product_key(), "deviceKey": keys.device_key(), "deviceSecret": secret.expose()}));
            }
        }
        Answer::ok(Value::Array(data))
    }

    fn topo_add(&mut self, gateway: &DeviceKeys, params: &Value) -> Answer {
        if !self.registry.is_gateway(gateway) {
            return Answer::err(1255, "add topo failure, the target is not a gateway");
        }
        let Some(list) = params.as_array() else { return Answer::err(1220, "Payload format error") };
        let mut add = Vec::new();
        for e in list {
            let Some(sub) = keys_of(e) else { return Answer::err(1255, "add topo failure, missing keys") };
            let fail = |why: &str| Answer::err(1255, format!("add topo failure, {sub}: {why}"));
            let Some(d) = self.registry.devices.get(&sub) else { return fail("sub-device does not exist") };
            if self.registry.is_gateway(&sub) {
                return fail("sub-device is a gateway");
            }
            if self.registry.gateway_of(&sub).is_some_and(|g| g != gateway) {
                return fail("sub-device belongs to another gateway");
            }
            let client_id = e.get("clientId").and_then(Value::as_str).unwrap_or_default();
            let ts = text_of(e.get("timestamp")).unwrap_or_default();
            let method =
                e.get("signMethod").or_else(|| e.get("signmethod")).and_then(Value::as_str).unwrap_or("sha256");
            let sign = e.get("sign").and_then(Value::as_str).unwrap_or_default();
            let verified = d.secret.as_ref().is_some_and(|s| sign_ok(method, client_id, &sub, &ts, s, sign));
            if !verified {
                return fail("sign verify failed");
            }
            add.push(sub);
        }
        for sub in add {
            self.registry.add_topology(gateway, sub);
        }
        Answer::ok(json!({}))
    }

    /// One sub-device login through `gateway`'s connection `conn`.
    #[allow(clippy::too_many_arguments)]
    fn login(
        &mut self,
        conn: ConnId,
        gateway: &DeviceKeys,
        sub: &DeviceKeys,
        client_id: &str,
        ts: &str,
        method: &str,
        sign: &str,
        mode: &str,
    ) -> Result<Value, (i32, String)> {
        if !self.registry.topology.get(gateway).is_some_and(|t| t.contains(sub)) {
            return Err((1212, "No sub-device permission".into()));
        }
        let fail = || (770, "sign verify failed".to_owned());
        if !self.fresh(ts) {
            return Err((770, "timestamp outside the allowed clock skew".into()));
        }
        let Some(device) = self.registry.devices.get(sub) else { return Err(fail()) };
        if !device.enabled {
            return Err((770, "Device is disable".into()));
        }
        let mut issued = None;
        match mode {
            "3" => {
                let product = self.registry.products.get(sub.product_key()).ok_or_else(fail)?;
                let again = device.activated && !self.registry.allow_reactivation;
                if again || !product.dynamic_activation || !sign_ok(method, client_id, sub, ts, &product.secret, sign) {
                    return Err(fail());
                }
                issued = Some(match &device.secret {
                    Some(s) => s.clone(),
                    None => Registry::random_secret(20).ok_or_else(fail)?,
                });
            }
            _ => {
                if !device.secret.as_ref().is_some_and(|s| sign_ok(method, client_id, sub, ts, s, sign)) {
                    return Err(fail());
                }
            }
        }
        let already = self.sessions.get(&conn).is_some_and(|s| s.subs.contains(sub));
        let max = self.registry.max_sub_devices_online;
        if !already && self.sessions.get(&conn).is_some_and(|s| s.subs.len() >= max) {
            return Err((1212, format!("at most {max} sub-devices online per gateway")));
        }
        if let Some(old) = self.sub_online.insert(sub.clone(), conn) {
            if old != conn {
                if let Some(s) = self.sessions.get_mut(&old) {
                    s.subs.remove(sub);
                }
            }
        }
        if let Some(s) = self.sessions.get_mut(&conn) {
            s.subs.insert(sub.clone());
        }
        if let Some(fw) = self.pending_ota.remove(sub) {
            let push = self.ota_push(sub, fw);
            self.pushes.push(push);
        }
        let d = self.registry.devices.get_mut(sub).ok_or_else(fail)?;
        let mut data = json!({"assetId": d.asset_id, "productKey": sub.product_key(), "deviceKey": sub.device_key()});
        if let Some(secret) = issued {
            d.secret = Some(secret.clone());
            d.activated = true;
            data["deviceSecret"] = Value::String(secret.expose().to_owned());
        }
        Ok(data)
    }
}

fn id_of(v: &Value) -> String {
    v.get("id").map(id_text).unwrap_or_default()
}

/// Measure points read from a JSON object with their names borrowed, in the order sent. A
/// name given twice is an error (the general way keeps the last, as a JSON tree's map does).
struct PointsIn<'a>(Vec<(&'a str, Value)>);

impl<'a> PointsIn<'a> {
    fn iter(&self) -> impl Iterator<Item = (&'a str, &Value)> + '_ {
        self.0.iter().map(|(k, v)| (*k, v))
    }
}

impl<'de: 'a, 'a> FromObject<'de> for PointsIn<'a> {
    fn from_object<A: MapAccess<'de>>(mut m: A) -> Result<Self, A::Error> {
        let mut points: Vec<(&'a str, Value)> = Vec::with_capacity(m.size_hint().unwrap_or(8));
        while let Some((k, v)) = m.next_entry::<&'de str, Value>()? {
            points.push((k, v));
        }
        if has_repeated_name(&points) {
            return Err(serde::de::Error::custom("a measure point twice"));
        }
        Ok(PointsIn(points))
    }
}

/// Whether two points have the same name: compared pairwise when there are few (no
/// allocation), sorted when there are many.
fn has_repeated_name(points: &[(&str, Value)]) -> bool {
    if points.len() <= 16 {
        return points.iter().enumerate().any(|(i, (a, _))| points[..i].iter().any(|(b, _)| a == b));
    }
    let mut names: Vec<&str> = points.iter().map(|(k, _)| *k).collect();
    names.sort_unstable();
    names.windows(2).any(|w| w[0] == w[1])
}

/// What the fast paths read from a JSON object, and from nothing else.
trait FromObject<'de>: Sized {
    fn from_object<A: MapAccess<'de>>(m: A) -> Result<Self, A::Error>;
}

/// Reads a [`FromObject`] type: anything but an object is an error.
struct ObjectOnly<T>(std::marker::PhantomData<T>);

impl<'de, T: FromObject<'de>> serde::de::Visitor<'de> for ObjectOnly<T> {
    type Value = T;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<T, A::Error> {
        T::from_object(m)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for PointsIn<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectOnly(std::marker::PhantomData))
    }
}

/// A request's envelope as the fast paths read it.
#[derive(Deserialize)]
struct FastEnvelope<'a, P> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    // Text with escapes does not borrow: an error, and so the general way.
    method: Option<&'a str>,
    params: Option<P>,
    #[serde(rename = "allowOfflineSubDevice")]
    allow_offline: Option<Value>,
    #[serde(rename = "skipInvalidMeasurepoints")]
    skip_invalid: Option<Value>,
}

impl<'a, P: Deserialize<'a>> FastEnvelope<'a, P> {
    /// The reply id and the envelope of a JSON object whose method is `method`.
    fn read(payload: &'a [u8], method: &str) -> Option<(String, Self)> {
        if !starts_object(payload) {
            return None;
        }
        let envelope: Self = serde_json::from_slice(payload).ok()?;
        if envelope.method != Some(method) {
            return None;
        }
        let id = match envelope.id {
            None => String::new(),
            Some(raw) => id_text(&serde_json::from_str(raw.get()).ok()?),
        };
        Some((id, envelope))
    }
}

/// Whether JSON text is an object (serde would also read a struct from an array).
fn starts_object(text: &[u8]) -> bool {
    text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Measure points with their time as the fast paths read them: the `params` of a post
/// ([`Cloud::fast_post`], which ignores keys there as the general way does) and an entry of
/// a batch ([`Cloud::fast_batch`]). An object only (a derived reader would take an array
/// too), each field at most once, `productKey` and `deviceKey` both or neither (valid
/// keys), `measurepoints` present, point names borrowed. Anything else is an error there,
/// and so goes the general way.
struct FastEntry<'a> {
    keys: Option<DeviceKeys>,
    points: PointsIn<'a>,
    time: Option<Value>,
}

impl<'de: 'a, 'a> FromObject<'de> for FastEntry<'a> {
    fn from_object<A: MapAccess<'de>>(mut m: A) -> Result<Self, A::Error> {
        use serde::de::Error;
        let twice = || A::Error::custom("a field twice");
        let (mut pk, mut dk, mut points, mut time) = (None, None, None, None);
        while let Some(key) = m.next_key::<&'de str>()? {
            match key {
                "productKey" if pk.is_none() => pk = Some(m.next_value::<&'de str>()?),
                "deviceKey" if dk.is_none() => dk = Some(m.next_value::<&'de str>()?),
                "measurepoints" if points.is_none() => points = Some(m.next_value()?),
                "time" if time.is_none() => time = Some(m.next_value::<Value>()?),
                "productKey" | "deviceKey" | "measurepoints" | "time" => return Err(twice()),
                _ => {
                    m.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        let (pk, dk) = (pk.filter(|k| !k.is_empty()), dk.filter(|k| !k.is_empty()));
        let keys = match (pk, dk) {
            (None, None) => None,
            (Some(pk), Some(dk)) => Some(DeviceKeys::new(pk, dk).map_err(A::Error::custom)?),
            _ => return Err(A::Error::custom("one key of two")),
        };
        let points = points.ok_or_else(|| A::Error::custom("no measurepoints"))?;
        Ok(FastEntry { keys, points, time })
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for FastEntry<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectOnly(std::marker::PhantomData))
    }
}

/// Whether a measure point model accepts this value.
fn accepts_point(model: Option<&BTreeMap<String, DataType>>, point: &str, value: &Value) -> bool {
    model.and_then(|m| m.get(point)).is_some_and(|t| accepts_value(*t, value))
}

/// Whether a measure point of type `t` accepts this value, with or without a quality.
fn accepts_value(t: DataType, value: &Value) -> bool {
    // A value with a quality is {"value": v, "quality": q}.
    let inner = match value {
        Value::Object(o) if o.contains_key("value") => &o["value"],
        v => v,
    };
    t.accepts(inner)
}

/// The types of a batch's measure points by their place in an entry. The entries of one
/// product usually name the same points in the same order, so a name is looked up in the
/// model once per batch rather than once per entry.
struct PointTypes<'m> {
    model: Option<&'m BTreeMap<String, DataType>>,
    by_place: Vec<(&'m str, DataType)>,
}

impl PointTypes<'_> {
    /// The type of the point `name`, the `place`-th of its entry; `None` when the model has
    /// no such point.
    fn of(&mut self, place: usize, name: &str) -> Option<DataType> {
        if let Some((known, t)) = self.by_place.get(place) {
            if *known == name {
                return Some(*t);
            }
        }
        let (known, t) = self.model?.get_key_value(name)?;
        if let Some(slot) = self.by_place.get_mut(place) {
            *slot = (known.as_str(), *t);
        } else if place == self.by_place.len() {
            self.by_place.push((known.as_str(), *t));
        }
        Some(*t)
    }
}

/// An envelope id as the reply echoes it: a string as it is, a number as its text.
fn id_text(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::defaults::*;

    fn sub(i: usize) -> DeviceKeys {
        DeviceKeys::new(SUB_PRODUCT, format!("s{i}")).unwrap()
    }

    /// The device connected as connection 1, the gateway as 2 with sub-devices s0..s2 in
    /// its topology (s3 exists outside it).
    fn connected(fast_paths: bool, history_limit: usize) -> Cloud {
        let mut registry = Registry::builtin();
        registry.history_limit = history_limit;
        let gateway = DeviceKeys::new(GATEWAY_PRODUCT, GATEWAY).unwrap();
        for i in 0..4 {
            registry.add_device(sub(i), Some(FLEET_SECRET.into())).unwrap();
            if i < 3 {
                registry.add_topology(&gateway, sub(i));
            }
        }
        let mut c = Cloud::new(registry);
        c.fast_paths = fast_paths;
        for (conn, pk, dk, secret) in
            [(1, DEVICE_PRODUCT, DEVICE, DEVICE_SECRET), (2, GATEWAY_PRODUCT, GATEWAY, GATEWAY_SECRET)]
        {
            c.connect_with_secret(conn, &DeviceKeys::new(pk, dk).unwrap(), &secret.into()).unwrap();
        }
        c
    }

    /// Runs `body` on `topic` through a cloud with the fast paths and one without, with
    /// and without a history: the same replies, and the same last values and history for
    /// every device.
    fn same_both_ways(conn: ConnId, topic: &str, body: &str) {
        for history in [1_000, 0] {
            let mut fast = connected(true, history);
            let mut general = connected(false, history);
            let payload = Bytes::from(body.to_owned());
            let a = fast.publish(conn, topic, &payload, 1_000);
            let b = general.publish(conn, topic, &payload, 1_000);
            let replies =
                |h: &Handled| h.replies.iter().map(|o| (o.topic.clone(), o.payload.clone())).collect::<Vec<_>>();
            assert_eq!(replies(&a), replies(&b), "{body}");
            for (k, da) in &fast.registry.devices {
                let db = &general.registry.devices[k];
                assert_eq!(da.measurepoints, db.measurepoints, "{k}: {body}");
                assert_eq!(da.history, db.history, "{k}: {body}");
                assert!(history > 0 || da.history.is_empty());
            }
        }
    }

    #[test]
    fn the_fast_batch_path_answers_and_stores_as_the_general_one() {
        let topic = format!("/sys/{GATEWAY_PRODUCT}/{GATEWAY}/thing/measurepoint/post/batch");
        let resume_topic = format!("/sys/{GATEWAY_PRODUCT}/{GATEWAY}/thing/measurepoint/resume/batch");
        let m = "thing.measurepoint.post.batch";
        let e = |i: usize, points: &str| {
            format!(r#"{{"productKey":"{SUB_PRODUCT}","deviceKey":"s{i}","measurepoints":{points}}}"#)
        };
        let batch = |entries: &[String], flags: &str| {
            format!(r#"{{"id":"7","version":"1.0","params":[{}],"method":"{m}"{flags}}}"#, entries.join(","))
        };
        let allow = r#","allowOfflineSubDevice":true"#;
        let ok = r#"{"temp":1.5,"status":2}"#;
        let bad = r#"{"temp":1.5,"nope":2}"#;
        let one = |entry: String| batch(&[entry], allow);
        let mut cases = vec![
            batch(&[e(0, ok), e(1, ok)], allow),
            batch(&[e(0, ok), e(1, ok)], ""),
            batch(&[e(0, ok), e(3, ok)], allow),
            batch(&[e(0, ok), e(1, bad)], allow),
            batch(&[e(0, ok), e(1, bad)], &format!(r#"{allow},"skipInvalidMeasurepoints":true"#)),
            batch(&[e(0, bad), e(1, "[1]")], allow),
            batch(&[e(0, ok), e(1, "[1]")], allow),
            batch(&[e(0, r#"{"status":2,"temp":1.5,"humidity":3}"#)], allow),
            batch(&[e(0, ok), e(1, r#"{"status":2.5,"temp":1}"#)], allow),
            batch(&[e(0, r#"{"zz":1,"aa":1}"#)], allow),
            batch(&[e(0, r#"{"temp":"hot","humidity":"wet","status":1}"#)], allow),
            batch(
                &[
                    e(0, ok),
                    e(1, r#"{"status":2,"temp":1}"#),
                    e(2, r#"{"temp":1.5,"voltage":{"value":2,"quality":9}}"#),
                ],
                allow,
            ),
            batch(&[e(0, r#"{"temp":"hot","temp":1.5}"#)], allow),
            batch(&[e(0, r#"{"temp":1.5,"temp":"hot"}"#)], allow),
            one(format!(r#"{{"productKey":"{SUB_PRODUCT}","measurepoints":{ok}}}"#)),
            batch(&[format!(r#"{{"measurepoints":{ok},"time":5}}"#)], ""),
            one(format!(r#"{{"productKey":"{SUB_PRODUCT}","deviceKey":null,"measurepoints":{ok}}}"#)),
            one(format!(r#"{{"productKey":"x","productKey":"{SUB_PRODUCT}","deviceKey":"s0","measurepoints":{ok}}}"#)),
            one(format!(r#"{{"productKey":"{SUB_PRODUCT}","deviceKey":"s0","measurepoints":{ok},"time":9,"x":[1]}}"#)),
            batch(&[e(2, ok)], r#","allowOfflineSubDevice":"true""#),
            batch(&[], ""),
            format!(r#"{{"id":"8","params":{{"a":1}},"method":"{m}"}}"#),
            format!(r#"{{"id":"9","params":null,"method":"{m}"}}"#),
            format!(r#"{{"id":"10","params":[{}],"method":"thing.measurepoint.post"}}"#, e(0, ok)),
        ];
        cases.push(cases[0].replace("\"7\"", "\"\\u0037\""));
        for body in &cases {
            same_both_ways(2, &topic, body);
        }
        let resume = batch(&[e(0, ok), e(1, ok)], allow).replace("post.batch", "resume.batch");
        same_both_ways(2, &resume_topic, &resume);
        // The first case went the fast way.
        let mut c = connected(true, 1_000);
        let gw = DeviceKeys::new(GATEWAY_PRODUCT, GATEWAY).unwrap();
        let (id, answer) = c.fast_batch(2, &gw, m, cases[0].as_bytes(), 1_000, false).unwrap();
        assert_eq!((id.as_str(), answer.code), ("7", 200));
    }

    #[test]
    fn a_batch_entry_with_empty_keys_is_the_topic_device_both_ways() {
        // As the vendor's Python SDK sends a batch for the device itself: `""` for the
        // keys it was not given (resume entries carry only the device key), and `""` flags.
        let gw = DeviceKeys::new(GATEWAY_PRODUCT, GATEWAY).unwrap();
        for (topic, method, entry) in [
            ("post/batch", "thing.measurepoint.post.batch", r#""productKey":"","deviceKey":"","#),
            ("resume/batch", "thing.measurepoint.resume.batch", r#""deviceKey":"","#),
        ] {
            let topic = format!("/sys/{GATEWAY_PRODUCT}/{GATEWAY}/thing/measurepoint/{topic}");
            let body = format!(
                r#"{{"id":"3","version":"1.0","method":"{method}","params":[{{{entry}"measurepoints":{{"temp":4.5}},"time":1600000000000}}],"allowOfflineSubDevice":"","skipInvalidMeasurepoints":""}}"#
            );
            same_both_ways(2, &topic, &body);
            for fast in [true, false] {
                let mut c = connected(fast, 1_000);
                let h = c.publish(2, &topic, &Bytes::from(body.clone()), 1_000);
                let reply: Value = serde_json::from_slice(&h.replies[0].payload).unwrap();
                assert_eq!(reply["code"], 200, "{body}: {reply}");
                // Stored for the gateway itself: a post as its latest value, a resume
                // in its history only.
                let d = &c.registry.devices[&gw];
                let latest = d.measurepoints.iter().map(|(p, s)| (p.as_ref(), s));
                let history = d.history.iter().map(|(_, p, s)| (p.as_str(), s));
                assert!(latest.chain(history).any(|(p, s)| p == "temp" && s.value == json!(4.5)), "{body}");
            }
        }
    }

    #[test]
    fn the_fast_post_path_answers_and_stores_as_the_general_one() {
        let keys = DeviceKeys::new(DEVICE_PRODUCT, DEVICE).unwrap();
        let post = format!("/sys/{DEVICE_PRODUCT}/{DEVICE}/thing/measurepoint/post");
        let resume = format!("/sys/{DEVICE_PRODUCT}/{DEVICE}/thing/measurepoint/resume");
        let m = "thing.measurepoint.post";
        let cases: Vec<(&str, String)> = vec![
            (&post, format!(r#"{{"id":"1","version":"1.0","params":{{"measurepoints":{{"temp":1.5,"status":2}},"time":77}},"method":"{m}"}}"#)),
            (&post, format!(r#"{{"id":12,"params":{{"measurepoints":{{"voltage":{{"value":2.5,"quality":9}}}}}},"method":"{m}"}}"#)),
            (&post, format!(r#"{{"params":{{"measurepoints":{{"temp":1}},"time":"77"}},"method":"{m}"}}"#)),
            (&post, format!(" \n{{\"id\":\"a\\\"b\",\"params\":{{\"measurepoints\":{{\"te\\u006dp\":3.5}}}},\"method\":\"{m}\"}}")),
            (&post, format!(r#"{{"id":"2","params":{{"measurepoints":{{"temp":1,"temp":2}}}},"method":"{m}"}}"#)),
            (&post, format!(r#"{{"id":"3","id":"4","params":{{"measurepoints":{{"temp":1}}}},"method":"{m}"}}"#)),
            (&post, format!(r#"{{"id":"5","params":{{"measurepoints":{{"nope":1}}}},"method":"{m}"}}"#)),
            (&post, format!(r#"{{"id":"6","params":{{"measurepoints":{{"temp":"hot"}}}},"method":"{m}"}}"#)),
            (&post, format!(r#"{{"id":"6a","params":{{"measurepoints":{{"temp":"hot","temp":1}}}},"method":"{m}"}}"#)),
            (&post, format!(r#"{{"id":"6b","params":{{"measurepoints":{{"status":3,"temp":1,"humidity":2.5}}}},"method":"{m}"}}"#)),
            (&post, format!(r#"{{"id":"7","params":{{"measurepoints":[1]}},"method":"{m}"}}"#)),
            (&post, format!(r#"{{"id":"8","params":[{{"temp":1}},1],"method":"{m}"}}"#)),
            (&post, format!(r#"{{"id":"9","params":null,"method":"{m}"}}"#)),
            (&post, format!(r#"["10",{{"measurepoints":{{"temp":1}}}},"{m}"]"#)),
            (&post, r#"{"id":"11","params":{"measurepoints":{"temp":1}},"method":"thing.event.x.post"}"#.to_owned()),
            (&post, r#"{"id":"12","params":{"measurepoints":{"temp":1}}}"#.to_owned()),
            (&post, format!(r#"{{"id":"13","params":{{"measurepoints":{{"temp":1}},"extra":true}},"method":"{m}","x":1}}"#)),
            (&post, format!(r#"{{"id":"14","params":{{"measurepoints":{{}}}},"method":"{m}"}}"#)),
            (&post, format!(r#"{{"id":1.5e2,"params":{{"measurepoints":{{"temp":1}}}},"method":"{m}"}}"#)),
            (&post, "not json".to_owned()),
            (&resume, r#"{"id":"15","params":{"measurepoints":{"temp":4.5},"time":9},"method":"thing.measurepoint.resume"}"#.to_owned()),
        ];
        let mut took_fast = 0;
        for (topic, body) in &cases {
            same_both_ways(1, topic, body);
            let method = if topic.ends_with("resume") { "thing.measurepoint.resume" } else { m };
            took_fast +=
                usize::from(connected(true, 1_000).fast_post(&keys, method, body.as_bytes(), 1_000, false).is_some());
        }
        // Eight of the valid ones went the fast way (a duplicate envelope field, a point
        // named twice and a name with escapes go the general way, which accepts them too).
        assert_eq!(took_fast, 8);
    }

    #[test]
    fn device_reports_are_kept_and_a_wrong_shape_is_refused_1220() {
        let mut c = connected(false, 1_000);
        let keys = DeviceKeys::new(DEVICE_PRODUCT, DEVICE).unwrap();
        let topic = |path: &str| enos_proto::topic::topic(Scope::Sys, &keys, path);
        let cases = [
            (
                "thing/log/post",
                r#"{"id":"1","params":{"logs":{"level":"info"},"time":5},"method":"thing.log.post"}"#,
                200,
            ),
            ("thing/log/post", r#"{"id":"2","params":{"logs":"text"},"method":"thing.log.post"}"#, 1220),
            (
                "network/status/report",
                r#"{"id":"3","params":{"reportTime":5,"rssi":-60},"method":"network.status.report"}"#,
                200,
            ),
            ("network/status/report", r#"{"id":"4","params":{"rssi":-60},"method":"network.status.report"}"#, 1220),
            (
                "connection/state/post",
                r##"{"id":"5","params":{"isFull":false,"nodes":[{"nodeId":"#1","state":2}],"relations":{},"reportTime":5},"method":"connection.state.post"}"##,
                200,
            ),
            (
                "connection/state/post",
                r##"{"id":"6","params":{"isFull":false,"nodes":[],"relations":{"#1":["#2"]}},"method":"connection.state.post"}"##,
                1220,
            ),
        ];
        for (path, body, code) in cases {
            let out = c.publish(1, &topic(path), &Bytes::from(body), 1_000);
            let r: Value = serde_json::from_slice(&out.replies[0].payload).unwrap();
            assert_eq!(r["code"], code, "{body}");
            assert_eq!(out.replies[0].topic, format!("{}_reply", topic(path)));
        }
        let kept = &c.registry.devices[&keys].reports;
        let methods: Vec<&str> = kept.iter().map(|(m, _, _)| m.as_str()).collect();
        assert_eq!(methods, ["thing.log.post", "network.status.report", "connection.state.post"]);
    }

    #[test]
    fn a_traffic_control_reply_on_the_command_topic_is_taken_as_the_reply_and_not_echoed() {
        let mut c = connected(false, 1_000);
        let keys = DeviceKeys::new(DEVICE_PRODUCT, DEVICE).unwrap();
        let topic = enos_proto::topic::topic(Scope::Sys, &keys, "traffic/control");
        let j2 = Bytes::from_static(br#"{"code":200,"id":"9200","message":""}"#);
        let out = c.publish(1, &topic, &j2, 1_000);
        assert!(out.replies.is_empty());
        assert_eq!(out.command_reply, Some((format!("{topic}_reply"), j2)));
        // The command itself, seen again (a broker's echo), is nobody's reply.
        let command = Bytes::from_static(br#"{"id":"9200","version":"1.0","params":{},"method":"traffic.control"}"#);
        let out = c.publish(1, &topic, &command, 1_000);
        assert!(out.replies.is_empty() && out.command_reply.is_none());
    }

    #[test]
    fn a_client_id_block_is_signed_its_codec_taken_and_lzo_refused() {
        let keys = DeviceKeys::new(DEVICE_PRODUCT, DEVICE).unwrap();
        let connect = |c: &mut Cloud, signed: &str, lower: bool| {
            let sign = enos_proto::sign::sign_device(SignMethod::Sha256, signed, &keys, "1", &DEVICE_SECRET.into());
            let password = if lower { sign.to_lowercase() } else { sign };
            let client_id = format!("{signed}|securemode=2,signmethod=sha256,timestamp=1|");
            let info = ConnectInfo {
                client_id: &client_id,
                username: "demo_device&demo_pk",
                password: &password,
                certificate: &[],
            };
            c.connect(7, info).map(|a| a.compression)
        };
        let mut c = Cloud::new(Registry::builtin());
        // The vendor's Java form: ip and version too, lower-case hex.
        let java = format!("{DEVICE}{{ip=192.168.1.10,version=enos-mqtt-2.2.16,compress=GZIP}}");
        assert_eq!(connect(&mut c, &java, true), Ok(Some(Compression::Gzip)));
        assert_eq!(connect(&mut c, &format!("{DEVICE}{{compress=lz4}}"), false), Ok(Some(Compression::Lz4)));
        assert_eq!(connect(&mut c, &format!("{DEVICE}{{compress=DEFAULT}}"), false), Ok(None));
        assert_eq!(connect(&mut c, &format!("{DEVICE}{{compress=LZO}}"), false), Err(ConnectReturnCode::BadClientId));
        // The block is part of what is signed: a signature over the bare id is refused.
        let sign = enos_proto::sign::sign_device(SignMethod::Sha256, DEVICE, &keys, "1", &DEVICE_SECRET.into());
        let client_id = format!("{DEVICE}{{compress=GZIP}}|securemode=2,signmethod=sha256,timestamp=1|");
        let info =
            ConnectInfo { client_id: &client_id, username: "demo_device&demo_pk", password: &sign, certificate: &[] };
        assert_eq!(c.connect(8, info).map(|a| a.compression), Err(ConnectReturnCode::NotAuthorized));
        // The 64-character limit is the id's without its block.
        let long = format!("{}{{compress=GZIP}}", "d".repeat(64));
        assert_eq!(connect(&mut c, &long, false), Ok(Some(Compression::Gzip)));
    }

    /// Connects the built-in device product's integration channel as connection 9.
    fn channel(c: &mut Cloud, pk: &str, secret: &str) -> Result<Accepted, ConnectReturnCode> {
        let keys = DeviceKeys::new(pk, enos_proto::INTEGRATION_DEVICE_KEY).unwrap();
        let f = enos_proto::sign::connect_fields(
            &keys,
            pk,
            enos_proto::SecureMode::Integration,
            SignMethod::Sha256,
            1,
            &secret.into(),
        );
        let info = ConnectInfo {
            client_id: &f.client_id,
            username: &f.username,
            password: f.password.expose(),
            certificate: &[],
        };
        c.connect(9, info)
    }

    #[test]
    fn the_integration_channel_needs_the_product_s_channel_and_secret() {
        let mut c = Cloud::new(Registry::builtin());
        assert!(channel(&mut c, DEVICE_PRODUCT, DEVICE_PRODUCT_SECRET).is_ok());
        assert_eq!(channel(&mut c, DEVICE_PRODUCT, "wrong").err(), Some(ConnectReturnCode::NotAuthorized));
        // The gateway product has no channel.
        assert_eq!(
            channel(&mut c, GATEWAY_PRODUCT, GATEWAY_PRODUCT_SECRET).err(),
            Some(ConnectReturnCode::NotAuthorized)
        );
        assert!(c.may_subscribe(9, "/sys/demo_pk/integration/measurepoint/post_reply"));
        assert!(!c.may_subscribe(9, "/sys/demo_pk/demo_device/thing/measurepoint/post_reply"));
    }

    #[test]
    fn an_integration_request_is_taken_whole_or_refused_with_its_first_error() {
        let mut c = Cloud::new(Registry::builtin());
        channel(&mut c, DEVICE_PRODUCT, DEVICE_PRODUCT_SECRET).unwrap();
        let topic = "/sys/demo_pk/integration/measurepoint/post";
        let post = |c: &mut Cloud, params: Value| {
            let body =
                json!({"id": "1", "version": "1.0", "params": params, "method": "integration.measurepoint.post"});
            let out = c.publish(9, topic, &Bytes::from(body.to_string()), 5_000);
            assert_eq!(out.replies[0].topic, format!("{topic}_reply"));
            serde_json::from_slice::<Value>(&out.replies[0].payload).unwrap()["code"].as_i64().unwrap()
        };
        let dev = DeviceKeys::new(DEVICE_PRODUCT, DEVICE).unwrap();
        let new = DeviceKeys::new(DEVICE_PRODUCT, ACTIVATING_DEVICE).unwrap();
        let entry =
            |dk: &str, t: u64, temp: Value| json!({"deviceKey": dk, "time": t, "measurepoints": {"temp": temp}});
        // An unknown device, then a value of the wrong type: nothing of either is kept.
        assert_eq!(post(&mut c, json!([entry(DEVICE, 1_000, json!(1.5)), entry("nobody", 1_000, json!(2.5))])), 1257);
        assert_eq!(
            post(&mut c, json!([entry(DEVICE, 1_000, json!(1.5)), entry(ACTIVATING_DEVICE, 1_000, json!("hot"))])),
            1204
        );
        assert!(c.registry.devices[&dev].history.is_empty());
        let ok = json!([
            entry(DEVICE, 1_000, json!(1.5)),
            entry(DEVICE, 2_000, json!(2.5)),
            entry(ACTIVATING_DEVICE, 1_000, json!(3.5))
        ]);
        assert_eq!(post(&mut c, ok), 200);
        let history: Vec<(&str, u64)> =
            c.registry.devices[&dev].history.iter().map(|(kind, _, s)| (*kind, s.time)).collect();
        assert_eq!(history, [("resume", 1_000), ("resume", 2_000)]);
        assert_eq!(c.registry.devices[&new].history.len(), 1);

        let events = json!({"id": "2", "version": "1.0", "method": "integration.event.post",
            "params": [{"deviceKey": DEVICE, "time": 7, "events": {"overheat": {"level": 3}}}]});
        let out = c.publish(9, "/sys/demo_pk/integration/event/post", &Bytes::from(events.to_string()), 5_000);
        assert_eq!(serde_json::from_slice::<Value>(&out.replies[0].payload).unwrap()["code"], 200);
        assert_eq!(c.registry.devices[&dev].events.back().map(|(e, _, t)| (e.as_str(), *t)), Some(("overheat", 7)));
        let attrs = json!({"id": "3", "version": "1.0", "method": "integration.attribute.post",
            "params": [{"deviceKey": DEVICE, "attributes": {"name": "inverter-9"}}]});
        let out = c.publish(9, "/sys/demo_pk/integration/attribute/post", &Bytes::from(attrs.to_string()), 5_000);
        assert_eq!(serde_json::from_slice::<Value>(&out.replies[0].payload).unwrap()["code"], 200);
        assert_eq!(c.registry.devices[&dev].attributes["name"], "inverter-9");
        // A device topic is not the channel's.
        let stray = c.publish(9, "/sys/demo_pk/demo_device/thing/measurepoint/post", &Bytes::from("{}"), 5_000);
        assert!(stray.replies.is_empty());
    }
}
