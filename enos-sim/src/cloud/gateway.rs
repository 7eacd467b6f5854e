//! A gateway's operations (spec §8): its topology (get, add, delete), the registration of
//! new sub-devices, sub-device logins and logouts through its connection, and the cloud's
//! commands that enable, disable or delete its sub-devices.

use enos_proto::topic::{topic, Scope};
use enos_proto::DeviceKeys;
use serde_json::{json, Value};

use super::auth::SubDeviceSignature;
use super::envelope::{keys_of, text_of, Answer};
use super::{Cloud, CommandError, ConnId, Issued};
use crate::cloud_limits::MAX_REGISTER;
use crate::registry::Registry;

/// What the cloud does to a gateway's sub-devices, and tells the gateway with
/// `combine.enable`, `combine.disable` or `combine.delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubDeviceAction {
    /// Enabled: they may log in again.
    Enable,
    /// Disabled: logged out, and their logins refused.
    Disable,
    /// Deleted from the registry and from every topology, and logged out.
    Delete,
}

impl SubDeviceAction {
    /// Its name in the command's topic and method.
    fn name(self) -> &'static str {
        match self {
            SubDeviceAction::Enable => "enable",
            SubDeviceAction::Disable => "disable",
            SubDeviceAction::Delete => "delete",
        }
    }
}

impl Cloud {
    /// Enables, disables or deletes sub-devices of `gateway` in the registry (disabled and
    /// deleted ones are logged out wherever they are), and issues the command that tells
    /// the gateway, as [`issue_command`](Self::issue_command) does.
    ///
    /// # Errors
    ///
    /// Nothing changes and nothing is sent when `subs` is empty or names a device that is
    /// not in the gateway's topology ([`CommandError::NotSubDevices`]), or when the gateway
    /// is not connected itself ([`CommandError::Offline`]).
    pub fn sub_devices_command(
        &mut self,
        now_ms: u64,
        gateway: &DeviceKeys,
        action: SubDeviceAction,
        subs: &[DeviceKeys],
    ) -> Result<Issued, CommandError> {
        // Only the gateway's own sub-devices, all of them, and only while it is connected.
        let topology = self.registry.topology.get(gateway);
        let strangers: Vec<String> =
            subs.iter().filter(|s| !topology.is_some_and(|t| t.contains(*s))).map(ToString::to_string).collect();
        if subs.is_empty() || !strangers.is_empty() {
            return Err(CommandError::NotSubDevices { gateway: gateway.to_string(), devices: strangers });
        }
        let conn = self.direct(gateway).ok_or_else(|| CommandError::Offline(gateway.to_string()))?;
        for s in subs {
            if let Some(d) = self.registry.devices.get_mut(s) {
                match action {
                    SubDeviceAction::Enable => d.enabled = true,
                    SubDeviceAction::Disable => d.enabled = false,
                    SubDeviceAction::Delete => {}
                }
            }
        }
        if action != SubDeviceAction::Enable {
            self.log_out(subs);
        }
        if action == SubDeviceAction::Delete {
            for s in subs {
                self.registry.devices.remove(s);
                for t in self.registry.topology.values_mut() {
                    t.remove(s);
                }
            }
        }
        let what = action.name();
        let params = serde_json::to_value(subs).unwrap_or(Value::Null);
        let command_topic = topic(Scope::ExtSession, gateway, &format!("combine/{what}"));
        Ok(self.issue_json(now_ms, conn, command_topic, &format!("combine.{what}"), params))
    }

    /// `thing.topo.get`: the gateway's sub-devices, in key order.
    pub(super) fn topo_get(&self, gateway: &DeviceKeys) -> Answer {
        if !self.registry.is_gateway(gateway) {
            return Answer::err(700, "device is not a gateway");
        }
        let mut subs: Vec<&DeviceKeys> =
            self.registry.topology.get(gateway).map(|t| t.iter().collect()).unwrap_or_default();
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

    /// `thing.topo.add`: every sub-device checked (it exists, is no gateway, belongs to no
    /// other gateway, and signed with its own secret) before any is added.
    pub(super) fn topo_add(&mut self, gateway: &DeviceKeys, params: &Value) -> Answer {
        if !self.registry.is_gateway(gateway) {
            return Answer::err(1255, "add topo failure, the target is not a gateway");
        }
        let Some(list) = params.as_array() else { return Answer::bad_format() };
        let mut add = Vec::new();
        for e in list {
            let Some(sub) = keys_of(e) else { return Answer::err(1255, "add topo failure, missing keys") };
            let fail = |why: &str| Answer::err(1255, format!("add topo failure, {sub}: {why}"));
            if !self.registry.devices.contains_key(&sub) {
                return fail("sub-device does not exist");
            }
            if self.registry.is_gateway(&sub) {
                return fail("sub-device is a gateway");
            }
            if self.registry.gateway_of(&sub).is_some_and(|g| g != gateway) {
                return fail("sub-device belongs to another gateway");
            }
            let timestamp = text_of(e.get("timestamp")).unwrap_or_default();
            let signature = SubDeviceSignature {
                client_id: e.get("clientId").and_then(Value::as_str).unwrap_or_default(),
                timestamp: &timestamp,
                sign_method: e
                    .get("signMethod")
                    .or_else(|| e.get("signmethod"))
                    .and_then(Value::as_str)
                    .unwrap_or("sha256"),
                sign: e.get("sign").and_then(Value::as_str).unwrap_or_default(),
            };
            if !self.sub_device_sign_ok(&sub, &signature) {
                return fail("sign verify failed");
            }
            add.push(sub);
        }
        for sub in add {
            self.registry.add_topology(gateway, sub);
        }
        Answer::done()
    }

    /// `thing.topo.delete`: the sub-devices named leave the topology, and are logged out
    /// of this connection.
    pub(super) fn topo_delete(&mut self, conn: ConnId, gateway: &DeviceKeys, params: &Value) -> Answer {
        let Some(list) = params.as_array() else { return Answer::bad_format() };
        let subs: Vec<DeviceKeys> = list.iter().filter_map(keys_of).collect();
        let mut removed = Vec::new();
        if let Some(t) = self.registry.topology.get_mut(gateway) {
            removed = subs.into_iter().filter(|s| t.remove(s)).collect();
        }
        for s in &removed {
            self.sessions.log_out_from(conn, s);
        }
        Answer::done()
    }

    /// `thing.device.register`: new sub-devices, each with a new secret; all or nothing,
    /// within the bounds per request and per gateway.
    pub(super) fn register(&mut self, gateway: &DeviceKeys, params: &Value) -> Answer {
        if !self.registry.is_gateway(gateway) {
            return Answer::err(700, "device is not a gateway");
        }
        let Some(list) = params.as_array() else { return Answer::bad_format() };
        if list.len() > MAX_REGISTER {
            return Answer::err(460, format!("at most {MAX_REGISTER} devices per request"));
        }
        // Validate everything first: all or nothing.
        let mut plan = Vec::new();
        for e in list {
            let Some(pk) = e.get("productKey").and_then(Value::as_str) else { return Answer::bad_format() };
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

    /// `combine.login`: one sub-device logs in through this connection.
    pub(super) fn login(&mut self, conn: ConnId, gateway: &DeviceKeys, params: &Value) -> Answer {
        let Some(sub) = keys_of(params) else { return Answer::bad_format() };
        let timestamp = text_of(params.get("timestamp")).unwrap_or_default();
        let signature = SubDeviceSignature {
            client_id: params.get("clientId").and_then(Value::as_str).unwrap_or_default(),
            timestamp: &timestamp,
            sign_method: params.get("signMethod").and_then(Value::as_str).unwrap_or("sha256"),
            sign: params.get("sign").and_then(Value::as_str).unwrap_or_default(),
        };
        let mode = text_of(params.get("secureMode")).unwrap_or_else(|| "2".into());
        match self.log_in_sub_device(conn, gateway, &sub, &signature, &mode) {
            Ok(data) => Answer::ok(data),
            Err((code, message)) => Answer::err(code, message),
        }
    }

    /// `combine.login.batch`: each sub-device logs in on its own; 723 names those that
    /// failed, and why.
    pub(super) fn batch_login(&mut self, conn: ConnId, gateway: &DeviceKeys, params: &Value) -> Answer {
        let (Some(client_id), Some(timestamp), Some(list)) = (
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
        let sign_method = params.get("signMethod").and_then(Value::as_str).unwrap_or("sha256");
        let mut ok = Vec::new();
        let mut failed = Vec::new();
        let mut message = String::new();
        for e in list {
            let Some(sub) = keys_of(e) else { continue };
            let signature = SubDeviceSignature {
                client_id,
                timestamp: &timestamp,
                sign_method,
                sign: e.get("sign").and_then(Value::as_str).unwrap_or_default(),
            };
            let mode = text_of(e.get("secureMode")).unwrap_or_else(|| "2".into());
            match self.log_in_sub_device(conn, gateway, &sub, &signature, &mode) {
                Ok(data) => ok.push(data),
                Err((_, reason)) => {
                    message.push_str(&format!("{}&{} has error: {reason};", sub.product_key(), sub.device_key()));
                    failed.push(json!({"productKey": sub.product_key(), "deviceKey": sub.device_key()}));
                }
            }
        }
        let code = if failed.is_empty() { 200 } else { 723 };
        Answer { code, data: json!({"loginedSubDevices": ok, "failedSubDevices": failed}), message }
    }

    /// `combine.logout`: a sub-device logs out of this connection.
    pub(super) fn logout(&mut self, conn: ConnId, params: &Value) -> Answer {
        let Some(sub) = keys_of(params) else { return Answer::bad_format() };
        self.sessions.log_out_from(conn, &sub);
        Answer::ok(json!({"productKey": sub.product_key(), "deviceKey": sub.device_key()}))
    }
}
