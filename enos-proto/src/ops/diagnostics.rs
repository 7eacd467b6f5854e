//! The device's reports about itself that the vendor's newest Java SDK adds (extensions
//! spec E5): its log lines, the state of its network link, and the connection state of
//! the nodes behind it. Each is a request like any other: its reply's `data` carries
//! nothing the SDK reads.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::{unit_reply, write_json, EncodeContext, Operation};
use crate::envelope::Reply;
use crate::error::{EncodeError, RequestError};

/// `thing.log.post`: one device log entry.
///
/// `logs` is an object: the helpers fill the fields the vendor's SDK names (`traceId`,
/// `level`, `module`, `content`), and [`LogPost::field`] adds any other. What values
/// `level` takes is not known (spec E11); the vendor's example uses `"info"`.
///
/// The vendor's Java SDK publishes it at QoS 0; this SDK, like every request, at QoS 1
/// unless the request's options say otherwise.
///
/// ```
/// use enos_proto::ops::LogPost;
/// let log = LogPost::new().level("info").module("modbus").content(r#"{"slave":3}"#);
/// assert_eq!(log.logs["level"], "info");
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogPost {
    /// The log entry's fields.
    pub logs: Map<String, Value>,
    /// Epoch milliseconds; `None` stamps the request time.
    pub time: Option<u64>,
}

impl LogPost {
    /// An empty log entry, stamped with the request time.
    pub fn new() -> Self {
        LogPost::default()
    }

    /// Sets `traceId`.
    pub fn trace_id(self, v: impl Into<String>) -> Self {
        self.field("traceId", v.into())
    }

    /// Sets `level` (for example `"info"`).
    pub fn level(self, v: impl Into<String>) -> Self {
        self.field("level", v.into())
    }

    /// Sets `module`.
    pub fn module(self, v: impl Into<String>) -> Self {
        self.field("module", v.into())
    }

    /// Sets `content` (text; the vendor's example holds JSON text here).
    pub fn content(self, v: impl Into<String>) -> Self {
        self.field("content", v.into())
    }

    /// Sets any field of `logs`.
    pub fn field(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.logs.insert(key.into(), value.into());
        self
    }

    /// Stamps the entry with `unix_ms` rather than the request time.
    pub fn at(mut self, unix_ms: u64) -> Self {
        self.time = Some(unix_ms);
        self
    }
}

impl Operation for LogPost {
    type Data = ();
    fn write_path(&self, out: &mut String) {
        out.push_str("thing/log/post");
    }
    fn write_method(&self, out: &mut String) {
        out.push_str("thing.log.post");
    }
    fn write_params(&self, ctx: &EncodeContext<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        #[derive(Serialize)]
        struct Wire<'a> {
            logs: &'a Map<String, Value>,
            time: u64,
        }
        write_json(out, &Wire { logs: &self.logs, time: self.time.unwrap_or(ctx.unix_ms) })
    }
    fn parse_reply(reply: &Reply) -> Result<(), RequestError> {
        unit_reply(reply)
    }
}

/// `network.status.report`: the state of the device's network link. Every field but the
/// report time is optional and left out when `None`; their units are not stated by any
/// source (spec E11).
///
/// ```
/// use enos_proto::ops::NetworkStatusReport;
/// let mut r = NetworkStatusReport::new();
/// r.rssi = Some(-67.5);
/// r.network_type = Some("4G".into());
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct NetworkStatusReport {
    /// When the report was made, epoch milliseconds; `None` stamps the request time.
    #[serde(skip)]
    pub report_time: Option<u64>,
    /// When the figures were collected, epoch milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collect_time: Option<u64>,
    /// Received signal strength.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rssi: Option<f64>,
    /// Signal-to-noise ratio.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snr: Option<f64>,
    /// The share of packets lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet_loss_rate: Option<f64>,
    /// The kind of link, for example `"4G"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_type: Option<String>,
    /// What went wrong on the link, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_info: Option<String>,
}

impl NetworkStatusReport {
    /// A report with no figures, stamped with the request time.
    pub fn new() -> Self {
        NetworkStatusReport::default()
    }
}

impl Operation for NetworkStatusReport {
    type Data = ();
    fn write_path(&self, out: &mut String) {
        out.push_str("network/status/report");
    }
    fn write_method(&self, out: &mut String) {
        out.push_str("network.status.report");
    }
    fn write_params(&self, ctx: &EncodeContext<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            report_time: u64,
            #[serde(flatten)]
            rest: &'a NetworkStatusReport,
        }
        write_json(out, &Wire { report_time: self.report_time.unwrap_or(ctx.unix_ms), rest: self })
    }
    fn parse_reply(reply: &Reply) -> Result<(), RequestError> {
        unit_reply(reply)
    }
}

/// The state of a node in a [`ConnectionStatePost`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// Connected (1).
    Connected,
    /// Disconnected (2).
    Disconnected,
    /// Not known (3).
    Unknown,
}

impl NodeState {
    /// The number on the wire: 1, 2 or 3.
    pub fn code(self) -> u8 {
        match self {
            NodeState::Connected => 1,
            NodeState::Disconnected => 2,
            NodeState::Unknown => 3,
        }
    }
}

impl Serialize for NodeState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.code())
    }
}

/// One node (a device behind the reporting device, or the device itself) and its state.
/// Empty optional strings are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionNode {
    /// The node's id, unique in the report; not empty.
    pub node_id: String,
    /// Its state.
    pub state: NodeState,
    /// Its EnOS asset id; the vendor says EnOS fills it in for a root node without one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub asset_id: String,
    /// Its display name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Free text about the state.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub info: String,
}

impl ConnectionNode {
    /// Node `node_id` in `state`, with no asset id, name or information.
    pub fn new(node_id: impl Into<String>, state: NodeState) -> Self {
        ConnectionNode {
            node_id: node_id.into(),
            state,
            asset_id: String::new(),
            name: String::new(),
            info: String::new(),
        }
    }

    /// With its asset id.
    pub fn asset_id(mut self, v: impl Into<String>) -> Self {
        self.asset_id = v.into();
        self
    }

    /// With its name.
    pub fn name(mut self, v: impl Into<String>) -> Self {
        self.name = v.into();
        self
    }

    /// With information about its state.
    pub fn info(mut self, v: impl Into<String>) -> Self {
        self.info = v.into();
        self
    }
}

/// `connection.state.post`: the connection state of the nodes behind the device.
///
/// A full report ([`ConnectionStatePost::full`]) gives every node and the tree of
/// `relations` (parent node id to child node ids); an update
/// ([`ConnectionStatePost::update`]) gives only nodes whose state changed and no
/// relations: an update with relations is refused before it is sent.
///
/// ```
/// use enos_proto::ops::{ConnectionNode, ConnectionStatePost, NodeState};
/// let full = ConnectionStatePost::full(vec![
///     ConnectionNode::new("#001", NodeState::Connected).name("gateway"),
///     ConnectionNode::new("#002", NodeState::Disconnected).info("no heartbeat"),
/// ])
/// .relation("#001", ["#002"]);
/// assert!(full.is_full);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionStatePost {
    /// Whether this is a full snapshot (with relations) or an update.
    pub is_full: bool,
    /// The nodes.
    pub nodes: Vec<ConnectionNode>,
    /// Parent node id to its children's ids; only in a full report.
    pub relations: BTreeMap<String, Vec<String>>,
    /// Epoch milliseconds; `None` stamps the request time.
    pub report_time: Option<u64>,
}

impl ConnectionStatePost {
    /// A full snapshot of these nodes (add the tree with [`ConnectionStatePost::relation`]).
    pub fn full(nodes: Vec<ConnectionNode>) -> Self {
        ConnectionStatePost { is_full: true, nodes, relations: BTreeMap::new(), report_time: None }
    }

    /// An update of the nodes whose state changed.
    pub fn update(nodes: Vec<ConnectionNode>) -> Self {
        ConnectionStatePost { is_full: false, ..ConnectionStatePost::full(nodes) }
    }

    /// Adds `children` under `parent` in the relations.
    pub fn relation<S: Into<String>>(
        mut self,
        parent: impl Into<String>,
        children: impl IntoIterator<Item = S>,
    ) -> Self {
        self.relations.entry(parent.into()).or_default().extend(children.into_iter().map(Into::into));
        self
    }

    /// Stamps the report with `unix_ms` rather than the request time.
    pub fn at(mut self, unix_ms: u64) -> Self {
        self.report_time = Some(unix_ms);
        self
    }

    fn check(&self) -> Result<(), EncodeError> {
        if let Some(n) = self.nodes.iter().find(|n| n.node_id.is_empty()) {
            return Err(EncodeError::Invalid { what: "node id", value: n.node_id.clone() });
        }
        if !self.is_full && !self.relations.is_empty() {
            return Err(EncodeError::Invalid {
                what: "relations of a connection state update (only a full report has them)",
                value: self.relations.keys().cloned().collect::<Vec<_>>().join(","),
            });
        }
        Ok(())
    }
}

impl Operation for ConnectionStatePost {
    type Data = ();
    fn write_path(&self, out: &mut String) {
        out.push_str("connection/state/post");
    }
    fn write_method(&self, out: &mut String) {
        out.push_str("connection.state.post");
    }
    fn write_params(&self, ctx: &EncodeContext<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.check()?;
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            is_full: bool,
            nodes: &'a [ConnectionNode],
            relations: &'a BTreeMap<String, Vec<String>>,
            report_time: u64,
        }
        write_json(
            out,
            &Wire {
                is_full: self.is_full,
                nodes: &self.nodes,
                relations: &self.relations,
                report_time: self.report_time.unwrap_or(ctx.unix_ms),
            },
        )
    }
    fn parse_reply(reply: &Reply) -> Result<(), RequestError> {
        unit_reply(reply)
    }
}
