//! A device's own state, as its requests read and write it (spec §5): tags, attributes,
//! events, diagnostic reports, and its product's thing model (TSL template); and whether
//! it is enabled.

use enos_proto::DeviceKeys;
use serde_json::{Map, Value};

use super::envelope::Answer;
use super::ops::Op;
use super::{Cloud, ConnId};
use crate::cloud_limits::MAX_TAGS;
use crate::diagnostics;
use crate::registry::Device;

/// Which of a device's named values a request reads or deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    Tags,
    Attributes,
}

impl Field {
    /// The parameter that lists the names.
    fn param(self) -> &'static str {
        match self {
            Field::Tags => "tags",
            Field::Attributes => "attributes",
        }
    }
}

impl Cloud {
    fn device_mut(&mut self, keys: &DeviceKeys) -> Option<&mut Device> {
        self.registry.devices.get_mut(keys)
    }

    /// Disables a device: its later CONNECTs and logins are refused, and a sub-device is
    /// logged out (its gateway stays connected). Returns the connection of a directly
    /// connected device, for the IO layer to close.
    pub fn disable_device(&mut self, keys: &DeviceKeys) -> Option<ConnId> {
        if let Some(d) = self.device_mut(keys) {
            d.enabled = false;
        }
        self.log_out(std::slice::from_ref(keys));
        self.direct(keys)
    }

    /// Enables a device again.
    pub fn enable_device(&mut self, keys: &DeviceKeys) {
        if let Some(d) = self.device_mut(keys) {
            d.enabled = true;
        }
    }

    /// `thing.tag.query`, `thing.attribute.query`: the values named (all of them when the
    /// list is empty).
    pub(super) fn query(&self, keys: &DeviceKeys, field: Field, params: &Value) -> Answer {
        let Some(wanted) = params.get(field.param()).and_then(Value::as_array) else { return Answer::bad_format() };
        let Some(d) = self.registry.devices.get(keys) else { return Answer::bad_format() };
        let all: Map<String, Value> = match field {
            Field::Tags => d.tags.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect(),
            Field::Attributes => d.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
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

    /// `thing.tag.delete`, `thing.attribute.delete`: the values named are removed.
    pub(super) fn delete(&mut self, keys: &DeviceKeys, field: Field, params: &Value) -> Answer {
        let Some(list) = params.get(field.param()).and_then(Value::as_array) else { return Answer::bad_format() };
        if let Some(d) = self.device_mut(keys) {
            for k in list.iter().filter_map(Value::as_str) {
                match field {
                    Field::Tags => {
                        d.tags.remove(k);
                    }
                    Field::Attributes => {
                        d.attributes.remove(k);
                    }
                }
            }
        }
        Answer::done()
    }

    /// `thing.tag.update`: tags set (a value that is not a string is kept as its JSON
    /// text), at most [`MAX_TAGS`] per device.
    pub(super) fn tag_update(&mut self, keys: &DeviceKeys, params: &Value) -> Answer {
        let Some(entries) = params.as_array() else { return Answer::bad_format() };
        let mut tags = Vec::new();
        for e in entries {
            let Some(k) = e.get("tagKey").and_then(Value::as_str) else { return Answer::bad_format() };
            let v = match e.get("tagValue") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            tags.push((k.to_owned(), v));
        }
        let Some(d) = self.device_mut(keys) else { return Answer::bad_format() };
        let new = tags.iter().filter(|(k, _)| !d.tags.contains_key(k)).count();
        if d.tags.len() + new > MAX_TAGS {
            return Answer::err(460, format!("at most {MAX_TAGS} tags per device"));
        }
        d.tags.extend(tags);
        Answer::done()
    }

    /// `thing.attribute.update`: every value checked against the model before any is set.
    pub(super) fn attribute_update(&mut self, keys: &DeviceKeys, params: &Value) -> Answer {
        let Some(attrs) = params.get("attributes").and_then(Value::as_object) else {
            return Answer::err(1207, "Attribute update data format error");
        };
        let model = self.registry.products.get(keys.product_key()).map(|p| &p.tsl.attributes);
        if let Some((k, _)) = attrs.iter().find(|(k, v)| !model.and_then(|m| m.get(*k)).is_some_and(|t| t.accepts(v))) {
            return Answer::err(1204, format!("Model validate failed: attribute {k}"));
        }
        if let Some(d) = self.device_mut(keys) {
            d.attributes.extend(attrs.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Answer::done()
    }

    /// `thing.event.{id}.post`: the event's parameters checked against the model, then
    /// kept in the device's bounded event history.
    pub(super) fn event_post(&mut self, keys: &DeviceKeys, event: &str, params: &Value, now_ms: u64) -> Answer {
        let model = self.registry.products.get(keys.product_key()).and_then(|p| p.tsl.events.get(event));
        let Some(model) = model else {
            return Answer::err(1204, format!("Model validate failed: event {event}"));
        };
        let Some(values) = params.get("events").and_then(Value::as_object) else { return Answer::bad_format() };
        if let Some((k, _)) = values.iter().find(|(k, v)| !model.get(*k).is_some_and(|t| t.accepts(v))) {
            return Answer::err(1204, format!("Model validate failed: event parameter {k}"));
        }
        let time = params.get("time").and_then(Value::as_u64).unwrap_or(now_ms);
        let limit = self.registry.history_limit;
        if let Some(d) = self.device_mut(keys) {
            Device::keep(&mut d.events, (event.to_owned(), Value::Object(values.clone()), time), limit);
        }
        Answer::done()
    }

    /// A diagnostic report (`thing.log.post`, `network.status.report`,
    /// `connection.state.post`): its shape checked, then kept in the device's bounded
    /// history of reports.
    pub(super) fn report(&mut self, op: &Op, keys: &DeviceKeys, params: &Value, now_ms: u64) -> Answer {
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
            Device::keep(&mut d.reports, (op.method().into_owned(), params.clone(), now_ms), limit);
        }
        Answer::done()
    }

    /// `thing.tsltemplate.get`: the product's thing model.
    pub(super) fn tsl_get(&self, keys: &DeviceKeys) -> Answer {
        match self.registry.products.get(keys.product_key()) {
            Some(p) => Answer::ok(p.tsl.template()),
            None => Answer::bad_format(),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use enos_proto::topic::Scope;

    use super::*;
    use crate::cloud::testing::connected;
    use crate::registry::defaults::*;

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
}
