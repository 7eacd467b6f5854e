//! The message-integration channel (secure mode 4, extensions spec E4): a third-party
//! system posts measure points, events and attributes for many devices of one product
//! through one connection, on `/sys/{pk}/integration/...`.
//!
//! Each request names its devices by device key in its entries; the cloud takes a request
//! whole or refuses it with the first error (`1257` device not found, `1204` model
//! validation failed). Connect with [`crate::Credentials::IntegrationChannel`] (the
//! product secret) and the device key [`crate::INTEGRATION_DEVICE_KEY`].

use bytes::Bytes;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::{unit_reply, write_json, EncodeContext, Operation, RawUp};
use crate::envelope::Reply;
use crate::error::{EncodeError, RequestError};
use crate::topic::DeviceKeys;

/// What an [`IntegrationPost`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntegrationKind {
    /// `integration.measurepoint.post`: `{point: value}` per entry, at its time.
    Measurepoints,
    /// `integration.event.post`: `{eventId: {param: value}}` per entry, at its time.
    Events,
    /// `integration.attribute.post`: `{attribute: value}` per entry, without a time.
    Attributes,
}

impl IntegrationKind {
    fn noun(self) -> &'static str {
        match self {
            IntegrationKind::Measurepoints => "measurepoint",
            IntegrationKind::Events => "event",
            IntegrationKind::Attributes => "attribute",
        }
    }

    fn field(self) -> &'static str {
        match self {
            IntegrationKind::Measurepoints => "measurepoints",
            IntegrationKind::Events => "events",
            IntegrationKind::Attributes => "attributes",
        }
    }
}

/// One device's values in an [`IntegrationPost`].
#[derive(Debug, Clone, PartialEq)]
pub struct IntegrationEntry<T> {
    /// The device, of the channel's product.
    pub device_key: String,
    /// Epoch milliseconds (ignored for attributes); `None` stamps the request time.
    pub time: Option<u64>,
    /// The values: anything that serializes to a JSON object.
    pub values: T,
}

/// A post on the integration channel: entries of several devices, or of one device at
/// several times. `T` is any value that serializes to the entry's object.
///
/// ```
/// use enos_proto::ops::IntegrationPost;
/// use serde_json::json;
/// let post = IntegrationPost::measurepoints()
///     .entry("dev_001", Some(1_600_000_000_000), json!({"temp": 21.5}))
///     .entry("dev_001", Some(1_600_000_060_000), json!({"temp": 22.5}))
///     .entry("dev_002", Some(1_600_000_000_000), json!({"temp": 19.25}));
/// assert_eq!(post.entries.len(), 3);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct IntegrationPost<T = serde_json::Value> {
    /// What the entries carry.
    pub kind: IntegrationKind,
    /// The entries, in order.
    pub entries: Vec<IntegrationEntry<T>>,
}

impl<T: Serialize> IntegrationPost<T> {
    /// An empty post of `kind`.
    pub fn new(kind: IntegrationKind) -> Self {
        IntegrationPost { kind, entries: Vec::new() }
    }

    /// Measure points of many devices.
    pub fn measurepoints() -> Self {
        IntegrationPost::new(IntegrationKind::Measurepoints)
    }

    /// Events of many devices.
    pub fn events() -> Self {
        IntegrationPost::new(IntegrationKind::Events)
    }

    /// Attributes of many devices.
    pub fn attributes() -> Self {
        IntegrationPost::new(IntegrationKind::Attributes)
    }

    /// Adds an entry for `device_key` at `time` (ignored for attributes).
    pub fn entry(mut self, device_key: impl Into<String>, time: Option<u64>, values: T) -> Self {
        self.entries.push(IntegrationEntry { device_key: device_key.into(), time, values });
        self
    }
}

struct Entries<'a, T> {
    post: &'a IntegrationPost<T>,
    now: u64,
}

impl<T: Serialize> Serialize for Entries<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let kind = self.post.kind;
        let mut seq = s.serialize_seq(Some(self.post.entries.len()))?;
        for e in &self.post.entries {
            seq.serialize_element(&Entry { kind, entry: e, now: self.now })?;
        }
        seq.end()
    }
}

struct Entry<'a, T> {
    kind: IntegrationKind,
    entry: &'a IntegrationEntry<T>,
    now: u64,
}

impl<T: Serialize> Serialize for Entry<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let timed = self.kind != IntegrationKind::Attributes;
        let mut m = s.serialize_map(Some(2 + usize::from(timed)))?;
        m.serialize_entry("deviceKey", &self.entry.device_key)?;
        if timed {
            m.serialize_entry("time", &self.entry.time.unwrap_or(self.now))?;
        }
        m.serialize_entry(self.kind.field(), &self.entry.values)?;
        m.end()
    }
}

/// `/sys/{pk}/integration/{path}`: the channel's topics name the product only.
fn write_product_topic(keys: &DeviceKeys, path: &str, out: &mut String) {
    out.push_str("/sys/");
    out.push_str(keys.product_key());
    out.push_str("/integration/");
    out.push_str(path);
}

impl<T: Serialize> Operation for IntegrationPost<T> {
    type Data = ();
    fn write_topic(&self, keys: &DeviceKeys, out: &mut String) {
        write_product_topic(keys, "", out);
        self.write_path(out);
    }
    fn write_path(&self, out: &mut String) {
        out.push_str(self.kind.noun());
        out.push_str("/post");
    }
    fn write_method(&self, out: &mut String) {
        out.push_str("integration.");
        out.push_str(self.kind.noun());
        out.push_str(".post");
    }
    fn write_params(&self, ctx: &EncodeContext<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if let Some(e) = self.entries.iter().find(|e| DeviceKeys::new("p", &e.device_key).is_err()) {
            return Err(EncodeError::Invalid { what: "device key", value: e.device_key.clone() });
        }
        write_json(out, &Entries { post: self, now: ctx.unix_ms })
    }
    fn parse_reply(reply: &Reply) -> Result<(), RequestError> {
        unit_reply(reply)
    }
}

/// Raw bytes on the integration channel (`/sys/{pk}/integration/model/up_raw`); what they
/// must hold depends on the product's parsing script (spec E11). The reply is bytes,
/// matched to requests oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationRawUp(pub RawUp);

impl IntegrationRawUp {
    /// Send these bytes.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        IntegrationRawUp(RawUp::new(payload))
    }
}

impl Operation for IntegrationRawUp {
    type Data = Bytes;
    fn write_topic(&self, keys: &DeviceKeys, out: &mut String) {
        write_product_topic(keys, "", out);
        self.write_path(out);
    }
    fn write_path(&self, out: &mut String) {
        out.push_str("model/up_raw");
    }
    fn write_method(&self, _: &mut String) {}
    fn write_params(&self, ctx: &EncodeContext<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.0.write_params(ctx, out)
    }
    fn raw_payload(&self) -> Option<&Bytes> {
        self.0.raw_payload()
    }
    fn parse_reply(reply: &Reply) -> Result<Bytes, RequestError> {
        RawUp::parse_reply(reply)
    }
}
