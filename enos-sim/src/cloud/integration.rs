//! The message-integration channel (secure mode 4, extensions spec E4 and E10): one
//! connection of a product posts measure points, events and attributes for its devices on
//! `/sys/{pk}/integration/...`. A request is taken whole, or refused with its first error:
//! 1257 for a device the product does not have, 1204 for a value its model refuses.

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::envelope::{id_of, reply, Answer};
use super::points::accepts_point;
use super::{Cloud, Handled, Outbound};
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

#[cfg(test)]
mod tests {
    use enos_proto::codec::ConnectReturnCode;
    use enos_proto::sign::SignMethod;

    use super::*;
    use crate::cloud::{Accepted, ConnectInfo};
    use crate::registry::defaults::*;
    use crate::registry::Registry;

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
