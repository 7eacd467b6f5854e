//! The one-shot subcommands: every argument is checked before anything connects, then one
//! request (or a few), and the typed reply printed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use enos_transport_blocking::proto::http::{ByteRange, FileCategory};
use enos_transport_blocking::proto::ops::{
    ConnectionNode, ConnectionStatePost, DeviceName, LogPost, LoginResult, NetworkStatusReport, SubDeviceRegistration,
    TslTemplate,
};
use enos_transport_blocking::{DeviceKeys, Firmware, Response};
use serde_json::{json, Map, Value};

use crate::cli::{AttributeCmd, Cmd, FileCmd, IntegrationCmd, OtaCmd, TagCmd, TopoCmd};
use crate::error::CliError;
use crate::files::FilePost;
use crate::integration::Entries;
use crate::output::{plain, Out};
use crate::session::{keep_secret, Session};
use crate::settings::{parse_keys, Settings};
use crate::{files, firmware, integration, parse};

/// A one-shot operation, its arguments checked.
#[derive(Debug)]
pub enum Prepared {
    /// `connect`.
    Connect,
    /// `post`.
    Post(Map<String, Value>, Option<u64>),
    /// `resume`.
    Resume(Map<String, Value>, Option<u64>),
    /// `tag get`.
    TagGet(Vec<String>),
    /// `tag update`.
    TagUpdate(Vec<(String, String)>),
    /// `tag delete`.
    TagDelete(Vec<String>),
    /// `attribute get`.
    AttributeGet(Vec<String>),
    /// `attribute update`.
    AttributeUpdate(Map<String, Value>),
    /// `attribute delete`.
    AttributeDelete(Vec<String>),
    /// `event`.
    Event(String, Map<String, Value>),
    /// `raw`.
    Raw(Vec<u8>),
    /// `log`.
    Log(LogPost),
    /// `network`.
    Network(NetworkStatusReport),
    /// `ota version`.
    OtaVersion(String),
    /// `ota firmwares`.
    OtaFirmwares,
    /// `ota progress`.
    OtaProgress(String, String),
    /// `ota download`: the version wanted, or the firmware given; where to write it.
    OtaDownload(Option<String>, Option<Box<Firmware>>, PathBuf),
    /// `file post`.
    FilePost(Box<FilePost>),
    /// `file download`: the URI, its category, the range (and as it was typed), where to.
    FileDownload(String, FileCategory, Option<(ByteRange, String)>, Option<PathBuf>),
    /// `file url`.
    FileUrl(String, FileCategory),
    /// `file delete`.
    FileDelete(String),
    /// `connection-state`.
    ConnectionState(ConnectionStatePost),
    /// `integration post`: the entries, per request.
    IntegrationPost(Entries, usize),
    /// `integration raw`.
    IntegrationRaw(Vec<u8>),
    /// `tsl`.
    Tsl,
    /// `topo get`.
    TopoGet,
    /// `topo add`.
    TopoAdd(Vec<DeviceKeys>),
    /// `topo delete`.
    TopoDelete(Vec<DeviceKeys>),
    /// `login`.
    Login(Vec<DeviceKeys>),
    /// `logout`.
    Logout(DeviceKeys),
    /// `register`.
    Register(Box<SubDeviceRegistration>),
}

fn keys_of(list: &[String]) -> Result<Vec<DeviceKeys>, CliError> {
    list.iter().map(|d| parse_keys(d).map_err(|e| CliError::input("device", e))).collect()
}

fn time_of(at: Option<&String>) -> Result<Option<u64>, CliError> {
    at.map(|t| parse::time(t).map_err(|e| CliError::input("--at", e))).transpose()
}

impl Prepared {
    /// Checks the arguments of a one-shot subcommand (`listen` and `replay` are not),
    /// and reads the files it sends.
    ///
    /// # Errors
    ///
    /// [`CliError::Input`] naming the argument that does not parse, [`CliError::Usage`]
    /// for arguments that cannot work together (with `out`'s `--json`), [`CliError::Io`]
    /// for a file that cannot be read.
    pub fn from(cmd: &Cmd, out: Out) -> Result<Option<Self>, CliError> {
        let object = |what: &str, text: &str| parse::object(text).map_err(|e| CliError::input(what, e));
        Ok(Some(match cmd {
            Cmd::Connect => Prepared::Connect,
            Cmd::Post { points, at } => Prepared::Post(object("points", points)?, time_of(at.as_ref())?),
            Cmd::Resume { points, at } => Prepared::Resume(object("points", points)?, time_of(at.as_ref())?),
            Cmd::Tag(TagCmd::Get { keys }) => Prepared::TagGet(keys.clone()),
            Cmd::Tag(TagCmd::Update { tags }) => {
                Prepared::TagUpdate(parse::pairs(tags).map_err(|e| CliError::input("tags", e))?)
            }
            Cmd::Tag(TagCmd::Delete { keys }) => Prepared::TagDelete(keys.clone()),
            Cmd::Attribute(AttributeCmd::Get { ids }) => Prepared::AttributeGet(ids.clone()),
            Cmd::Attribute(AttributeCmd::Update { attributes }) => {
                Prepared::AttributeUpdate(object("attributes", attributes)?)
            }
            Cmd::Attribute(AttributeCmd::Delete { ids }) => Prepared::AttributeDelete(ids.clone()),
            Cmd::Event { id, params } => Prepared::Event(id.clone(), object("params", params)?),
            Cmd::Raw { hex } => Prepared::Raw(parse::hex(hex).map_err(|e| CliError::input("hex", e))?),
            Cmd::Log { content, level, module, trace_id, at } => {
                let mut log = LogPost::new().content(content.clone());
                if let Some(l) = level {
                    log = log.level(l.clone());
                }
                if let Some(m) = module {
                    log = log.module(m.clone());
                }
                if let Some(t) = trace_id {
                    log = log.trace_id(t.clone());
                }
                if let Some(at) = time_of(at.as_ref())? {
                    log = log.at(at);
                }
                Prepared::Log(log)
            }
            Cmd::Network { rssi, snr, packet_loss, network_type, error } => {
                let mut r = NetworkStatusReport::new();
                r.rssi = *rssi;
                r.snr = *snr;
                r.packet_loss_rate = *packet_loss;
                r.network_type = network_type.clone();
                r.error_info = error.clone();
                Prepared::Network(r)
            }
            Cmd::Ota(OtaCmd::Version { version }) => Prepared::OtaVersion(version.clone()),
            Cmd::Ota(OtaCmd::Firmwares) => Prepared::OtaFirmwares,
            Cmd::Ota(OtaCmd::Progress { step, desc }) => Prepared::OtaProgress(step.clone(), desc.clone()),
            Cmd::Ota(OtaCmd::Download { version, firmware, output }) => {
                let given = firmware.as_deref().map(firmware::parse).transpose()?;
                Prepared::OtaDownload(version.clone(), given.map(Box::new), output.clone())
            }
            Cmd::File(FileCmd::Post { points, files, at }) => {
                Prepared::FilePost(Box::new(files::prepare_post(points, files, time_of(at.as_ref())?)?))
            }
            Cmd::File(FileCmd::Download { uri, output, range, category }) => {
                let to_stdout = output.as_ref().is_none_or(|p| p.as_os_str() == "-");
                if to_stdout && out.json {
                    return Err(CliError::Usage(
                        "--json prints its document on standard output: give -o PATH for the file's bytes".into(),
                    ));
                }
                let range = range
                    .as_ref()
                    .map(|r| {
                        parse::range(r).map(|b| (b, r.trim().to_owned())).map_err(|e| CliError::input("--range", e))
                    })
                    .transpose()?;
                Prepared::FileDownload(uri.clone(), (*category).into(), range, output.clone())
            }
            Cmd::File(FileCmd::Url { uri, category }) => Prepared::FileUrl(uri.clone(), (*category).into()),
            Cmd::File(FileCmd::Delete { uri }) => Prepared::FileDelete(uri.clone()),
            Cmd::ConnectionState { nodes, full, relation, at } => {
                Prepared::ConnectionState(connection_state(nodes, *full, relation, time_of(at.as_ref())?)?)
            }
            Cmd::Integration(IntegrationCmd::Post { input, batch }) => {
                Prepared::IntegrationPost(integration::read(input)?, usize::try_from(*batch).unwrap_or(100))
            }
            Cmd::Integration(IntegrationCmd::Raw { hex }) => {
                Prepared::IntegrationRaw(parse::hex(hex).map_err(|e| CliError::input("hex", e))?)
            }
            Cmd::Tsl => Prepared::Tsl,
            Cmd::Topo(TopoCmd::Get) => Prepared::TopoGet,
            Cmd::Topo(TopoCmd::Add { devices }) => Prepared::TopoAdd(keys_of(devices)?),
            Cmd::Topo(TopoCmd::Delete { devices }) => Prepared::TopoDelete(keys_of(devices)?),
            Cmd::Login { devices } => Prepared::Login(keys_of(devices)?),
            Cmd::Logout { device } => Prepared::Logout(parse_keys(device).map_err(|e| CliError::input("device", e))?),
            Cmd::Register { device, name, timezone, attributes, desc } => {
                let (product, key) = match device.split_once('/') {
                    Some(_) => {
                        let keys = parse_keys(device).map_err(|e| CliError::input("device", e))?;
                        (keys.product_key().to_owned(), Some(keys.device_key().to_owned()))
                    }
                    None if device.is_empty() => return Err(CliError::input("device", "the product key is empty")),
                    None => (device.clone(), None),
                };
                let mut r = SubDeviceRegistration::new(product, DeviceName::new(name.clone()));
                r.device_key = key;
                r.timezone = timezone.clone();
                r.device_attributes = attributes.as_deref().map(|a| object("--attributes", a)).transpose()?;
                r.device_desc = desc.clone();
                Prepared::Register(Box::new(r))
            }
            Cmd::Listen(_) | Cmd::Replay(_) => return Ok(None),
        }))
    }

    /// Why the operation cannot be sent for a sub-device (`--as`), if it cannot.
    pub fn not_for_sub_devices(&self) -> Option<&'static str> {
        match self {
            Prepared::TopoGet
            | Prepared::TopoAdd(_)
            | Prepared::TopoDelete(_)
            | Prepared::Login(_)
            | Prepared::Logout(_)
            | Prepared::Register(_) => Some("topology, logins and registration are the gateway's own"),
            Prepared::FilePost(_) | Prepared::FileDownload(..) | Prepared::FileUrl(..) | Prepared::FileDelete(_) => {
                Some("stored files are the connected device's own")
            }
            Prepared::OtaDownload(..) => Some("a firmware download is the connected device's own"),
            Prepared::IntegrationPost(..) | Prepared::IntegrationRaw(_) => {
                Some("the integration channel names the devices in its entries")
            }
            Prepared::Connect
            | Prepared::Post(..)
            | Prepared::Resume(..)
            | Prepared::TagGet(_)
            | Prepared::TagUpdate(_)
            | Prepared::TagDelete(_)
            | Prepared::AttributeGet(_)
            | Prepared::AttributeUpdate(_)
            | Prepared::AttributeDelete(_)
            | Prepared::Event(..)
            | Prepared::Raw(_)
            | Prepared::Log(_)
            | Prepared::Network(_)
            | Prepared::OtaVersion(_)
            | Prepared::OtaFirmwares
            | Prepared::OtaProgress(..)
            | Prepared::ConnectionState(_)
            | Prepared::Tsl => None,
        }
    }

    /// The command's name when what it prints is the cloud's reply (so `--no-reply`
    /// cannot apply to it).
    pub fn reply_is_output(&self) -> Option<&'static str> {
        match self {
            Prepared::TagGet(_) => Some("tag get"),
            Prepared::AttributeGet(_) => Some("attribute get"),
            Prepared::Raw(_) => Some("raw"),
            Prepared::OtaFirmwares => Some("ota firmwares"),
            Prepared::OtaDownload(..) => Some("ota download"),
            Prepared::Tsl => Some("tsl"),
            Prepared::IntegrationRaw(_) => Some("integration raw"),
            _ => None,
        }
    }

    /// What of the operation may have the cloud issue a secret (to keep in the secrets
    /// folder, which is tried before it is sent): a registration; a login or topology
    /// addition of a sub-device that activates with its product's secret.
    pub fn issues_secrets(&self, settings: &Settings) -> Option<String> {
        let activating = |devices: &[DeviceKeys]| devices.iter().find(|d| settings.may_issue(d)).cloned();
        match self {
            Prepared::Register(_) => Some("the registration".to_owned()),
            Prepared::Login(devices) => activating(devices).map(|d| format!("the login of {d}")),
            Prepared::TopoAdd(devices) => activating(devices).map(|d| format!("the topology addition of {d}")),
            _ => None,
        }
    }

    /// Whether the operation goes over the product's integration channel rather than as
    /// the device.
    pub fn is_channel(&self) -> bool {
        matches!(self, Prepared::IntegrationPost(..) | Prepared::IntegrationRaw(_))
    }
}

/// A connection state report from `ID=STATE` arguments (or one JSON array of nodes) and
/// `PARENT=CHILD,...` relations.
fn connection_state(
    nodes: &[String],
    full: bool,
    relations: &[String],
    at: Option<u64>,
) -> Result<ConnectionStatePost, CliError> {
    let list = match nodes {
        [one] if one.trim_start().starts_with('[') => json_nodes(one).map_err(|e| CliError::input("nodes", e))?,
        _ => nodes
            .iter()
            .map(|n| {
                let bad = |why: String| CliError::input(format!("node {n:?}"), why);
                let (id, state) = n.rsplit_once('=').ok_or_else(|| bad("expected ID=STATE".into()))?;
                if id.is_empty() {
                    return Err(bad("the node id is empty".into()));
                }
                Ok(ConnectionNode::new(id, parse::node_state(state).map_err(bad)?))
            })
            .collect::<Result<_, _>>()?,
    };
    let mut post = if full { ConnectionStatePost::full(list) } else { ConnectionStatePost::update(list) };
    for r in relations {
        let bad = |why: &str| CliError::input(format!("--relation {r:?}"), why);
        let (parent, children) = r.split_once('=').ok_or_else(|| bad("expected PARENT=CHILD[,CHILD...]"))?;
        let children: Vec<&str> = children.split(',').map(str::trim).collect();
        if parent.is_empty() || children.iter().any(|c| c.is_empty()) {
            return Err(bad("a node id is empty"));
        }
        post = post.relation(parent, children);
    }
    if let Some(at) = at {
        post = post.at(at);
    }
    Ok(post)
}

/// Nodes as a JSON array of `{"nodeId", "state", "assetId"?, "name"?, "info"?}`.
fn json_nodes(text: &str) -> Result<Vec<ConnectionNode>, String> {
    let Value::Array(list) = serde_json::from_str::<Value>(text).map_err(|e| format!("not JSON: {e}"))? else {
        return Err("expected a JSON array of nodes".into());
    };
    list.into_iter()
        .enumerate()
        .map(|(i, v)| {
            let at = |why: String| format!("node {}: {why}", i + 1);
            let Value::Object(mut m) = v else {
                return Err(at(format!("expected an object, got {}", parse::kind(&v))));
            };
            let mut text = |key: &str| -> Result<Option<String>, String> {
                match m.remove(key) {
                    None => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s)),
                    Some(other) => Err(at(format!("{key}: expected a string, got {}", parse::kind(&other)))),
                }
            };
            let id = text("nodeId")?.filter(|s| !s.is_empty()).ok_or_else(|| at("no nodeId".into()))?;
            let (asset, name, info) = (text("assetId")?, text("name")?, text("info")?);
            let state = match m.remove("state") {
                Some(Value::String(s)) => parse::node_state(&s),
                Some(Value::Number(n)) => parse::node_state(&n.to_string()),
                Some(other) => Err(format!("expected a state, got {}", parse::kind(&other))),
                None => Err("no state".into()),
            }
            .map_err(|e| at(format!("state: {e}")))?;
            if let Some(k) = m.keys().next() {
                return Err(at(format!("unknown field `{k}` (a node has nodeId, state, assetId, name, info)")));
            }
            let mut node = ConnectionNode::new(id, state);
            node.asset_id = asset.unwrap_or_default();
            node.name = name.unwrap_or_default();
            node.info = info.unwrap_or_default();
            Ok(node)
        })
        .collect()
}

/// The reply envelope as JSON, with `data`.
pub fn envelope<T>(r: &Response<T>, data: Value) -> Value {
    json!({"code": r.code, "id": r.id, "message": r.message, "data": data})
}

/// A raw reply: its bytes in hex, as text and as `{"code", "reply"}`.
pub fn raw_reply<B: AsRef<[u8]>>(r: &Response<B>) -> Printed {
    let hex = parse::to_hex(r.data.as_ref());
    Printed::ok(hex.clone(), json!({"code": r.code, "reply": hex}))
}

/// What a run prints: text, JSON, and the exit code.
pub struct Printed {
    /// For a person; `None` when it was printed already (or the output was the bytes).
    text: Option<String>,
    /// For `--json`; `None` when the output was the bytes.
    doc: Option<Value>,
    exit: u8,
}

impl Printed {
    /// A result with `exit` as the exit code.
    pub fn new(text: impl Into<String>, doc: Value, exit: u8) -> Self {
        Printed { text: Some(text.into()), doc: Some(doc), exit }
    }

    /// A success.
    pub fn ok(text: impl Into<String>, doc: Value) -> Self {
        Printed::new(text, doc, crate::error::exit::OK)
    }

    /// Prints nothing: the run's output was the bytes it wrote (a download to standard
    /// output).
    pub fn quiet(self) -> Self {
        Printed { text: None, doc: None, ..self }
    }

    /// Prints its text no more: it was printed as the work went (the JSON still is).
    pub fn streamed(self) -> Self {
        Printed { text: None, ..self }
    }

    /// Prints it: the document with `--json`, else the text.
    pub fn print(&self, out: Out) {
        match (out.json, &self.text, &self.doc) {
            (true, _, Some(doc)) => out.doc(doc),
            (false, Some(text), _) => out.text(text),
            _ => {}
        }
    }
}

/// Runs a prepared operation on a connected session and prints its result: the exit code.
///
/// # Errors
///
/// The request's error.
pub fn run(op: Prepared, s: &Session, settings: &Settings, out: Out) -> Result<u8, CliError> {
    let p = execute(op, s, settings, out)?;
    p.print(out);
    Ok(p.exit)
}

fn execute(op: Prepared, s: &Session, settings: &Settings, out: Out) -> Result<Printed, CliError> {
    let data = s.client.device_data();
    let ota = s.client.ota();
    let req = CliError::from_request;
    let done = if s.sending.need_reply { "ok" } else { "sent" };
    let unit = |r: Response<()>| Printed::ok(format!("{done} (code {})", r.code), envelope(&r, json!({})));
    Ok(match op {
        Prepared::Connect => {
            let who = s.target.as_ref().map_or_else(|| s.device.to_string(), |t| format!("{} (as {t})", s.device));
            Printed::ok(
                format!("connected to {} as {who}", s.url),
                json!({"connected": true, "url": s.url, "device": s.device.to_string(), "as": s.target.as_ref().map(ToString::to_string)}),
            )
        }
        Prepared::Post(points, Some(at)) => unit(data.post_measurepoint_at(points, at, s.opts()).map_err(req)?),
        Prepared::Post(points, None) => unit(data.post_measurepoint(points, s.opts()).map_err(req)?),
        Prepared::Resume(points, at) => {
            let at = at.unwrap_or_else(now_ms);
            unit(data.resume_measurepoint(points, at, s.opts()).map_err(req)?)
        }
        Prepared::TagGet(keys) => {
            let r = data.query_tag(keys, s.opts()).map_err(req)?;
            let text = lines(r.data.iter().map(|(k, v)| format!("{k} = {v}")), "(no tags)");
            let doc = envelope(&r, json!(r.data));
            Printed::ok(text, doc)
        }
        Prepared::TagUpdate(tags) => unit(data.update_tag(tags, s.opts()).map_err(req)?),
        Prepared::TagDelete(keys) => unit(data.delete_tag(keys, s.opts()).map_err(req)?),
        Prepared::AttributeGet(ids) => {
            let r = data.query_attribute(ids, s.opts()).map_err(req)?;
            let text = lines(r.data.iter().map(|(k, v)| format!("{k} = {}", plain(v))), "(no attributes)");
            let doc = envelope(&r, Value::Object(r.data.clone()));
            Printed::ok(text, doc)
        }
        Prepared::AttributeUpdate(attrs) => unit(data.update_attribute(attrs, s.opts()).map_err(req)?),
        Prepared::AttributeDelete(ids) => unit(data.delete_attribute(ids, s.opts()).map_err(req)?),
        Prepared::Event(id, params) => unit(data.post_event(&id, params, s.opts()).map_err(req)?),
        Prepared::Raw(bytes) => raw_reply(&data.up_raw_model(bytes, s.opts()).map_err(req)?),
        Prepared::Log(log) => unit(data.post_log(log, s.opts()).map_err(req)?),
        Prepared::Network(report) => unit(data.report_network_status(report, s.opts()).map_err(req)?),
        Prepared::OtaVersion(v) => unit(ota.report_version(&v, s.opts()).map_err(req)?),
        Prepared::OtaProgress(step, desc) => unit(ota.report_progress(&step, &desc, s.opts()).map_err(req)?),
        Prepared::OtaDownload(version, given, path) => {
            let fw = match given {
                Some(fw) => *fw,
                None => firmware::choose(ota.get_version(s.opts()).map_err(req)?.data, version.as_deref())?,
            };
            out.note(&format!("downloading firmware {} from {}", fw.version, fw.file_url));
            firmware::download(s, &fw, &path)?
        }
        Prepared::FilePost(p) => files::post(s, *p)?,
        Prepared::FileDownload(uri, category, range, to) => files::download(s, &uri, category, range, to.as_deref())?,
        Prepared::FileUrl(uri, category) => files::url(s, &uri, category)?,
        Prepared::FileDelete(uri) => files::delete(s, &uri)?,
        Prepared::ConnectionState(state) => unit(data.post_connection_state(state, s.opts()).map_err(req)?),
        Prepared::IntegrationPost(entries, batch) => integration::post(s, entries, batch, out)?,
        Prepared::IntegrationRaw(bytes) => integration::raw(s, bytes)?,
        Prepared::OtaFirmwares => {
            let r = ota.get_version(s.opts()).map_err(req)?;
            let text = lines(
                r.data.iter().map(|f| {
                    format!("{}  {} {}  {} bytes  {}", f.version, f.sign_method, f.sign, f.file_size, f.file_url)
                }),
                "(no firmware offered)",
            );
            let list = serde_json::to_value(&r.data).unwrap_or(Value::Null);
            Printed::ok(text, envelope(&r, list))
        }
        Prepared::Tsl => {
            let r = ota.get_tsl_template(s.opts()).map_err(req)?;
            Printed::ok(tsl_text(&r.data), envelope(&r, tsl_json(&r.data)))
        }
        op @ (Prepared::TopoGet
        | Prepared::TopoAdd(_)
        | Prepared::TopoDelete(_)
        | Prepared::Login(_)
        | Prepared::Logout(_)
        | Prepared::Register(_)) => gateway(op, s, settings, out)?,
    })
}

/// The gateway's own operations: its topology, the logins of its sub-devices, their
/// registration. A secret the cloud issues is kept in the secrets folder.
fn gateway(op: Prepared, s: &Session, settings: &Settings, out: Out) -> Result<Printed, CliError> {
    let subs = s.client.sub_device_management();
    let req = CliError::from_request;
    let unit = |r: Response<()>| Printed::ok(format!("ok (code {})", r.code), envelope(&r, json!({})));
    Ok(match op {
        Prepared::TopoGet => {
            let r = subs.get_topo(s.own_opts()).map_err(req)?;
            let list: Vec<Value> = r
                .data
                .iter()
                .map(|e| json!({"productKey": e.product_key, "deviceKey": e.device_key, "assetId": e.asset_id, "deviceName": e.device_name}))
                .collect();
            let text = lines(
                r.data.iter().map(|e| {
                    let mut line = format!("{}/{}", e.product_key, e.device_key);
                    if let Some(a) = &e.asset_id {
                        line.push_str(&format!("  asset {a}"));
                    }
                    if let Some(n) = &e.device_name {
                        line.push_str(&format!("  {}", plain(n)));
                    }
                    line
                }),
                "(no sub-device)",
            );
            Printed::ok(text, envelope(&r, Value::Array(list)))
        }
        Prepared::TopoAdd(devices) => {
            let infos = devices.iter().map(|d| settings.sub_device(d)).collect::<Result<Vec<_>, _>>()?;
            unit(subs.add_topo(infos, s.own_opts()).map_err(req)?)
        }
        Prepared::TopoDelete(devices) => unit(subs.delete_topo(devices, s.own_opts()).map_err(req)?),
        Prepared::Login(mut devices) if devices.len() == 1 => {
            let Some(device) = devices.pop() else { return Err(CliError::Usage("no sub-device to log in".into())) };
            let r = s.login(settings, &device, out)?;
            let (text, doc) = login_entry(&r, settings);
            Printed::ok(format!("logged in {text}"), json!({"code": 200, "data": doc}))
        }
        Prepared::Login(devices) => {
            let infos = devices.iter().map(|d| settings.sub_device(d)).collect::<Result<Vec<_>, _>>()?;
            let r = subs.batch_login_sub_device(infos, s.own_opts()).map_err(req)?;
            let mut text = Vec::new();
            let mut logged_in = Vec::new();
            // Every issued secret is tried, whatever became of the one before.
            let mut first_error = None;
            for e in &r.data.logged_in {
                if let (Some(secret), Ok(keys)) = (&e.device_secret, DeviceKeys::new(&e.product_key, &e.device_key)) {
                    if let Err(err) = keep_secret(settings, &keys, secret, out) {
                        eprintln!("enos: {err}");
                        first_error.get_or_insert(err);
                    }
                }
                let (t, doc) = login_entry(e, settings);
                text.push(format!("logged in {t}"));
                logged_in.push(doc);
            }
            if let Some(e) = first_error {
                return Err(e);
            }
            for f in &r.data.failed {
                text.push(format!("refused {f}"));
            }
            let failed: Vec<String> = r.data.failed.iter().map(ToString::to_string).collect();
            let doc = envelope(&r, json!({"loggedIn": logged_in, "failed": failed}));
            Printed::new(text.join("\n"), doc, if failed.is_empty() { 0 } else { crate::error::exit::REFUSED })
        }
        Prepared::Logout(device) => {
            let r = subs.logout_sub_device(device.clone(), s.own_opts()).map_err(req)?;
            let doc = envelope(&r, json!({"device": r.data.as_ref().map(ToString::to_string)}));
            Printed::ok(format!("logged out {device}"), doc)
        }
        Prepared::Register(reg) => {
            let r = subs.register_device(vec![*reg], s.own_opts()).map_err(req)?;
            let mut text = Vec::new();
            let mut list = Vec::new();
            let mut first_error = None;
            for d in &r.data {
                let keys =
                    DeviceKeys::new(&d.product_key, &d.device_key).map_err(|e| CliError::BadReply(e.to_string()))?;
                let path = match keep_secret(settings, &keys, &d.device_secret, out) {
                    Ok(path) => path,
                    Err(e) => {
                        eprintln!("enos: {e}");
                        first_error.get_or_insert(e);
                        continue;
                    }
                };
                text.push(format!(
                    "registered {keys} (asset {}); its secret is kept in {}",
                    d.asset_id,
                    path.display()
                ));
                list.push(json!({"productKey": d.product_key, "deviceKey": d.device_key, "assetId": d.asset_id, "secretFile": path}));
            }
            if let Some(e) = first_error {
                return Err(e);
            }
            Printed::ok(text.join("\n"), envelope(&r, Value::Array(list)))
        }
        _ => return Err(CliError::Usage("not an operation of the gateway's own".into())),
    })
}

/// A logged-in sub-device: text, and JSON (where its issued secret is kept, never the secret).
fn login_entry(r: &LoginResult, settings: &Settings) -> (String, Value) {
    let keys = format!("{}/{}", r.product_key, r.device_key);
    let file = match (&r.device_secret, &settings.secrets, DeviceKeys::new(&r.product_key, &r.device_key)) {
        (Some(_), Some(files), Ok(k)) => Some(files.path(&k)),
        _ => None,
    };
    let mut text = keys.clone();
    if let Some(a) = &r.asset_id {
        text.push_str(&format!(" (asset {a})"));
    }
    if let Some(f) = &file {
        text.push_str(&format!("; its issued secret is kept in {}", f.display()));
    }
    (text, json!({"device": keys, "assetId": r.asset_id, "secretFile": file}))
}

fn lines(items: impl Iterator<Item = String>, empty: &str) -> String {
    let all: Vec<String> = items.collect();
    if all.is_empty() {
        empty.to_owned()
    } else {
        all.join("\n")
    }
}

fn tsl_json(t: &TslTemplate) -> Value {
    json!({
        "tslAttributeMap": t.tsl_attribute_map,
        "tslMeasurepointMap": t.tsl_measurepoint_map,
        "tslEventMap": t.tsl_event_map,
        "tslServiceMap": t.tsl_service_map,
    })
}

fn tsl_text(t: &TslTemplate) -> String {
    let section = |name: &str, m: &Map<String, Value>| {
        let ids: BTreeMap<&str, String> = m
            .iter()
            .map(|(k, v)| {
                let ty = v.get("dataType").and_then(Value::as_str).map(|t| format!(" ({t})")).unwrap_or_default();
                (k.as_str(), format!("{k}{ty}"))
            })
            .collect();
        let list: Vec<String> = ids.into_values().collect();
        format!("{name:<14} {}", if list.is_empty() { "-".to_owned() } else { list.join(", ") })
    };
    [
        section("attributes:", &t.tsl_attribute_map),
        section("measurepoints:", &t.tsl_measurepoint_map),
        section("events:", &t.tsl_event_map),
        section("services:", &t.tsl_service_map),
    ]
    .join("\n")
}

/// The wall clock in epoch milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
