//! The message-integration channel (secure mode 4, extensions spec E4 and E10): one
//! connection of a product posts measure points, events and attributes for its devices on
//! `/sys/{pk}/integration/...`. A request is taken whole, or refused with its first error:
//! 1257 for a device the product does not have, 1204 for a value its model refuses.

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::{accepts_point, id_of, reply, Answer, Cloud, Handled, Outbound};
use crate::cloud_limits::MAX_PAYLOAD;
use crate::registry::Device;
use enos_proto::DeviceKeys;

/// What a channel topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Measurepoints,
    Events,
    Attributes,
    Raw,
}

/// A checked entry: the device and its values, with their time.
struct Entry {
    keys: DeviceKeys,
    time: u64,
    values: Map<String, Value>,
}

impl Cloud {
    /// Handles one PUBLISH of an integration-channel session of product `pk`; topics
    /// outside `/sys/{pk}/integration/` are not the channel's, and ignored.
    pub(super) fn integration_publish(&mut self, pk: &str, topic: &str, payload: &Bytes, now_ms: u64) -> Handled {
        let mut out = Handled::default();
        let path =
            topic.strip_prefix("/sys/").and_then(|t| t.strip_prefix(pk)).and_then(|t| t.strip_prefix("/integration/"));
        let kind = match path {
            Some("measurepoint/post") => Kind::Measurepoints,
            Some("event/post") => Kind::Events,
            Some("attribute/post") => Kind::Attributes,
            Some("model/up_raw") => Kind::Raw,
            _ => return out,
        };
        if payload.is_empty() {
            out.replies.push(reply(topic, "", &Answer::err(1251, "Payload is empty")));
            return out;
        }
        if payload.len() > MAX_PAYLOAD {
            out.replies.push(reply(topic, "", &Answer::err(1008, "Msg size is too large, discard the message")));
            return out;
        }
        if kind == Kind::Raw {
            let body = self.raw_reply.clone().unwrap_or_else(|| payload.clone());
            out.replies.push(Outbound { topic: format!("{topic}_reply"), payload: body });
            return out;
        }
        let Ok(body) = serde_json::from_slice::<Value>(payload) else {
            out.replies.push(reply(topic, "", &Answer::err(1220, "Payload format error")));
            return out;
        };
        let id = id_of(&body);
        let method = match kind {
            Kind::Measurepoints => "integration.measurepoint.post",
            Kind::Events => "integration.event.post",
            _ => "integration.attribute.post",
        };
        let answer = if body.get("method").and_then(Value::as_str) != Some(method) {
            Answer::err(1260, "Methods not consistent")
        } else {
            match self.check_entries(pk, kind, body.get("params"), now_ms) {
                Ok(entries) => {
                    self.store_entries(kind, entries);
                    Answer::ok(json!({}))
                }
                Err(a) => a,
            }
        };
        out.replies.push(reply(topic, &id, &answer));
        out
    }

    /// Every entry checked before any is stored: the first error refuses the request.
    fn check_entries(&self, pk: &str, kind: Kind, params: Option<&Value>, now_ms: u64) -> Result<Vec<Entry>, Answer> {
        let bad = || Answer::err(1220, "Payload format error");
        let list = params.and_then(Value::as_array).ok_or_else(bad)?;
        let product = self.registry.products.get(pk).ok_or_else(bad)?;
        let field = match kind {
            Kind::Measurepoints => "measurepoints",
            Kind::Events => "events",
            _ => "attributes",
        };
        let mut entries = Vec::with_capacity(list.len());
        for e in list {
            let dk = e.get("deviceKey").and_then(Value::as_str).ok_or_else(bad)?;
            let keys = DeviceKeys::new(pk, dk).map_err(|_| Answer::err(1257, "Device not found"))?;
            if !self.registry.devices.contains_key(&keys) {
                return Err(Answer::err(1257, "Device not found"));
            }
            let values = e.get(field).and_then(Value::as_object).ok_or_else(bad)?;
            let time = match e.get("time") {
                None => now_ms,
                Some(t) => t.as_u64().ok_or_else(bad)?,
            };
            for (k, v) in values {
                let ok = match kind {
                    Kind::Measurepoints => accepts_point(Some(&product.tsl.measurepoints), k, v),
                    Kind::Events => product.tsl.events.get(k).is_some_and(|model| {
                        v.as_object().is_some_and(|p| p.iter().all(|(n, x)| model.get(n).is_some_and(|t| t.accepts(x))))
                    }),
                    _ => product.tsl.attributes.get(k).is_some_and(|t| t.accepts(v)),
                };
                if !ok {
                    return Err(Answer::err(1204, format!("Model validate failed: {dk} {k}")));
                }
            }
            entries.push(Entry { keys, time, values: values.clone() });
        }
        Ok(entries)
    }

    /// Stores checked entries: measure points as history (as a resume), events, and
    /// attribute values.
    fn store_entries(&mut self, kind: Kind, entries: Vec<Entry>) {
        let limit = self.registry.history_limit;
        for e in entries {
            match kind {
                Kind::Measurepoints => {
                    let points = e.values.iter().map(|(k, v)| (k.as_str(), Cow::Borrowed(v)));
                    self.store_points(&e.keys, points, e.time, true);
                }
                Kind::Events => {
                    if let Some(d) = self.registry.devices.get_mut(&e.keys) {
                        for (event, params) in e.values {
                            Device::keep(&mut d.events, (event, params, e.time), limit);
                        }
                    }
                }
                _ => {
                    if let Some(d) = self.registry.devices.get_mut(&e.keys) {
                        d.attributes.extend(e.values);
                    }
                }
            }
        }
    }
}

/// The connection is an integration channel's (its device key is `%channel%`).
pub(super) fn is_channel(keys: &DeviceKeys) -> bool {
    keys.device_key() == enos_proto::INTEGRATION_DEVICE_KEY
}
