//! Firmware upgrades (spec §7): the upgrade command (issued as a command by
//! [`Cloud::push_ota`], or queued for a device that is offline until it logs in), the device's reply that starts the task, and the
//! device's requests: its version, its progress, the firmwares of its product.

use bytes::Bytes;
use enos_proto::ops::Firmware;
use enos_proto::topic::Scope;
use enos_proto::DeviceKeys;
use serde_json::{json, Value};

use super::envelope::{text_of, Answer};
use super::{Cloud, Outbound};
use crate::registry::OtaTask;

impl Cloud {
    /// The OTA upgrade command for `keys` and its envelope id, recording the task.
    pub(super) fn ota_upgrade(&mut self, keys: &DeviceKeys, fw: Firmware) -> (String, Outbound) {
        if let Some(d) = self.registry.devices.get_mut(keys) {
            d.ota = Some(OtaTask { firmware: fw.clone(), started: false, step: None, done: false });
        }
        let id = self.command_id();
        let body = json!({"id": id, "version": "1.0", "method": "ota.device.upgrade", "params": fw});
        let message = Outbound {
            topic: enos_proto::topic::topic(Scope::Sys, keys, "ota/device/upgrade"),
            payload: Bytes::from(body.to_string()),
        };
        (id, message)
    }

    /// The OTA upgrade command queued for a device that logs in now: sent with its login,
    /// and nobody waits for its reply.
    pub(super) fn ota_push(&mut self, keys: &DeviceKeys, fw: Firmware) -> Outbound {
        self.ota_upgrade(keys, fw).1
    }

    /// Queues an OTA push for a device that is offline (sent at its next CONNECT).
    pub(super) fn queue_ota(&mut self, keys: &DeviceKeys, fw: Firmware) {
        self.pending_ota.insert(keys.clone(), fw);
    }

    /// The device answered its upgrade command: a success (200) starts the task.
    pub(super) fn ota_upgrade_replied(&mut self, keys: &DeviceKeys, succeeded: bool) {
        if let Some(task) = self.registry.devices.get_mut(keys).and_then(|d| d.ota.as_mut()) {
            task.started |= succeeded;
        }
    }

    /// `ota.device.inform`: the device's firmware version; the task ends when it is the
    /// one pushed.
    pub(super) fn ota_inform(&mut self, keys: &DeviceKeys, params: &Value) -> Answer {
        let Some(version) = params.get("version").and_then(Value::as_str) else { return Answer::bad_format() };
        if let Some(d) = self.registry.devices.get_mut(keys) {
            d.firmware_version = Some(version.to_owned());
            if let Some(t) = d.ota.as_mut() {
                if t.firmware.version == version {
                    t.done = true;
                }
            }
        }
        Answer::done()
    }

    /// `ota.device.progress`: a step of a started task (764 without a task, 765 before it
    /// started); step 100 ends it.
    pub(super) fn ota_progress(&mut self, keys: &DeviceKeys, params: &Value) -> Answer {
        let step = text_of(params.get("step")).unwrap_or_default();
        let Some(task) = self.registry.devices.get_mut(keys).and_then(|d| d.ota.as_mut()) else {
            return Answer::err(764, "Device task not found");
        };
        if !task.started {
            return Answer::err(765, "Device task not start");
        }
        task.done |= step == "100";
        task.step = Some(step);
        Answer::done()
    }

    /// `ota.device.getversion`: the firmwares of the device's product.
    pub(super) fn ota_versions(&self, keys: &DeviceKeys) -> Answer {
        let fws = self.registry.products.get(keys.product_key()).map(|p| &p.firmwares);
        Answer::ok(fws.map_or(Ok(Value::Array(Vec::new())), serde_json::to_value).unwrap_or(Value::Null))
    }
}
