use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    check_client_id, json_reply, unit_reply, write_json, Effect, EncodeContext, Operation, SessionEffect, SubDeviceInfo,
};
use crate::envelope::Reply;
use crate::error::{EncodeError, RequestError};
use crate::sign::{sign_device, SignMethod};
use crate::topic::{DeviceKeys, Scope};
use crate::Secret;

/// A sub-device's display name: a default and per-locale values (spec §5 row 13).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceName {
    /// The name shown when no locale matches.
    pub default_value: String,
    /// Names per locale, e.g. `en_US`.
    #[serde(default)]
    pub i18n_value: BTreeMap<String, String>,
}

impl DeviceName {
    /// A name with only a default value.
    pub fn new(default_value: impl Into<String>) -> Self {
        DeviceName { default_value: default_value.into(), i18n_value: BTreeMap::new() }
    }

    /// Adds a name for `locale`.
    pub fn with(mut self, locale: impl Into<String>, name: impl Into<String>) -> Self {
        self.i18n_value.insert(locale.into(), name.into());
        self
    }
}

/// One device to register (row 13).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubDeviceRegistration {
    /// The sub-device's product.
    pub product_key: String,
    /// The device key; the cloud generates one when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_key: Option<String>,
    /// The display name.
    pub device_name: DeviceName,
    /// The time zone, e.g. `+08:00`.
    pub timezone: String,
    /// Initial attribute values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_attributes: Option<serde_json::Map<String, serde_json::Value>>,
    /// A description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_desc: Option<String>,
}

impl SubDeviceRegistration {
    /// A registration of a device of `product_key` named `name`, time zone `+00:00`.
    pub fn new(product_key: impl Into<String>, name: DeviceName) -> Self {
        SubDeviceRegistration {
            product_key: product_key.into(),
            device_key: None,
            device_name: name,
            timezone: "+00:00".into(),
            device_attributes: None,
            device_desc: None,
        }
    }
}

/// A device the cloud registered, with its generated secret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredDevice {
    /// The asset id.
    #[serde(default)]
    pub asset_id: String,
    /// The product key.
    pub product_key: String,
    /// The device key (generated when the request had none).
    pub device_key: String,
    /// The device secret to log it in with.
    pub device_secret: Secret,
}

/// Row 13, `thing.device.register`: register sub-devices (at most 1000).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubDeviceRegister {
    /// The devices, in order; the reply lists them in the same order.
    pub devices: Vec<SubDeviceRegistration>,
}

impl SubDeviceRegister {
    /// Register these devices.
    pub fn new(devices: Vec<SubDeviceRegistration>) -> Self {
        SubDeviceRegister { devices }
    }
}

impl Operation for SubDeviceRegister {
    type Data = Vec<RegisteredDevice>;
    fn write_path(&self, out: &mut String) {
        out.push_str("thing/device/register");
    }
    fn gateway_only(&self) -> bool {
        true
    }
    fn write_method(&self, out: &mut String) {
        out.push_str("thing.device.register");
    }
    fn write_params(&self, _: &EncodeContext<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        write_json(out, &self.devices)
    }
    fn parse_reply(reply: &Reply) -> Result<Self::Data, RequestError> {
        json_reply(reply)
    }
}

/// A sub-device in the gateway's topology.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopoEntry {
    /// The product key.
    pub product_key: String,
    /// The device key.
    pub device_key: String,
    /// The asset id, when the cloud sends it.
    #[serde(default)]
    pub asset_id: Option<String>,
    /// The name, when the cloud sends it (a string or an i18n object).
    #[serde(default)]
    pub device_name: Option<serde_json::Value>,
}

/// Row 14, `thing.topo.get`: the gateway's sub-devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TopoGet;

impl Operation for TopoGet {
    type Data = Vec<TopoEntry>;
    fn write_path(&self, out: &mut String) {
        out.push_str("thing/topo/get");
    }
    fn gateway_only(&self) -> bool {
        true
    }
    fn write_method(&self, out: &mut String) {
        out.push_str("thing.topo.get");
    }
    fn write_params(&self, _: &EncodeContext<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(b"{}");
        Ok(())
    }
    fn parse_reply(reply: &Reply) -> Result<Self::Data, RequestError> {
        json_reply(reply)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SignedEntry<'a> {
    product_key: &'a str,
    device_key: &'a str,
    client_id: &'a str,
    timestamp: &'a str,
    sign_method: &'static str,
    sign: String,
}

impl<'a> SignedEntry<'a> {
    fn new(d: &'a SubDeviceInfo, timestamp: &'a str) -> Self {
        SignedEntry {
            product_key: d.keys.product_key(),
            device_key: d.keys.device_key(),
            client_id: d.client_id(),
            timestamp,
            sign_method: d.sign_method.label(),
            sign: sign_device(d.sign_method, d.client_id(), &d.keys, timestamp, &d.secret),
        }
    }
}

/// Row 15, `thing.topo.add`: add sub-devices to the gateway's topology, each entry signed
/// with that sub-device's secret (spec §8).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopoAdd {
    entries: Vec<(SubDeviceInfo, Option<u64>)>,
}

impl TopoAdd {
    /// Add these sub-devices, signed at the request time.
    pub fn new(devices: Vec<SubDeviceInfo>) -> Self {
        TopoAdd { entries: devices.into_iter().map(|d| (d, None)).collect() }
    }

    /// Add these sub-devices, each signed at the given epoch milliseconds.
    pub fn with_timestamps(devices: Vec<(SubDeviceInfo, u64)>) -> Self {
        TopoAdd { entries: devices.into_iter().map(|(d, t)| (d, Some(t))).collect() }
    }
}

impl Operation for TopoAdd {
    type Data = ();
    fn write_path(&self, out: &mut String) {
        out.push_str("thing/topo/add");
    }
    fn gateway_only(&self) -> bool {
        true
    }
    fn write_method(&self, out: &mut String) {
        out.push_str("thing.topo.add");
    }
    fn write_params(&self, ctx: &EncodeContext<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        for (d, _) in &self.entries {
            check_client_id(d.client_id())?;
        }
        let stamps: Vec<String> = self.entries.iter().map(|(_, t)| t.unwrap_or(ctx.unix_ms).to_string()).collect();
        let wire: Vec<SignedEntry<'_>> =
            self.entries.iter().zip(&stamps).map(|((d, _), ts)| SignedEntry::new(d, ts)).collect();
        write_json(out, &wire)
    }
    fn parse_reply(reply: &Reply) -> Result<(), RequestError> {
        unit_reply(reply)
    }
}

/// Row 16, `thing.topo.delete`: remove sub-devices from the topology (the cloud logs them
/// out).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopoDelete {
    /// The sub-devices.
    pub devices: Vec<DeviceKeys>,
}

impl TopoDelete {
    /// Remove these sub-devices.
    pub fn new(devices: Vec<DeviceKeys>) -> Self {
        TopoDelete { devices }
    }
}

impl Operation for TopoDelete {
    type Data = ();
    fn write_path(&self, out: &mut String) {
        out.push_str("thing/topo/delete");
    }
    fn gateway_only(&self) -> bool {
        true
    }
    fn write_method(&self, out: &mut String) {
        out.push_str("thing.topo.delete");
    }
    fn write_params(&self, _: &EncodeContext<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        write_json(out, &self.devices)
    }
    fn parse_reply(reply: &Reply) -> Result<(), RequestError> {
        unit_reply(reply)
    }
    fn session_effect(&self) -> SessionEffect {
        SessionEffect(Effect::Logout(self.devices.clone()))
    }
}

/// A sub-device the cloud logged in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginResult {
    /// The asset id, when the cloud sends it.
    #[serde(default)]
    pub asset_id: Option<String>,
    /// The product key.
    pub product_key: String,
    /// The device key.
    pub device_key: String,
    /// The device secret issued by dynamic activation (secure mode 3 only).
    #[serde(default)]
    pub device_secret: Option<Secret>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LoginWire<'a> {
    #[serde(flatten)]
    entry: SignedEntry<'a>,
    secure_mode: &'static str,
    clean_session: &'static str,
}

fn mode_text(d: &SubDeviceInfo) -> &'static str {
    if d.mode.number() == 3 {
        "3"
    } else {
        "2"
    }
}

/// Row 17, `combine.login`: log a sub-device in through the gateway (spec §8). After a
/// reconnect the core logs it in again by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubDeviceLogin {
    /// The sub-device and its secret.
    pub device: SubDeviceInfo,
    /// `cleanSession`: ask the cloud to drop the sub-device's queued messages.
    pub clean_session: bool,
}

impl SubDeviceLogin {
    /// Log in this sub-device (`cleanSession` false).
    pub fn new(device: SubDeviceInfo) -> Self {
        SubDeviceLogin { device, clean_session: false }
    }
}

impl Operation for SubDeviceLogin {
    type Data = LoginResult;
    fn scope(&self) -> Scope {
        Scope::ExtSession
    }
    fn write_path(&self, out: &mut String) {
        out.push_str("combine/login");
    }
    fn gateway_only(&self) -> bool {
        true
    }
    fn write_method(&self, out: &mut String) {
        out.push_str("combine.login");
    }
    fn write_params(&self, ctx: &EncodeContext<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        check_client_id(self.device.client_id())?;
        let ts = ctx.unix_ms.to_string();
        write_json(
            out,
            &LoginWire {
                entry: SignedEntry::new(&self.device, &ts),
                secure_mode: mode_text(&self.device),
                clean_session: if self.clean_session { "true" } else { "false" },
            },
        )
    }
    fn parse_reply(reply: &Reply) -> Result<LoginResult, RequestError> {
        reply.json()?.success()?.data()
    }
    fn session_effect(&self) -> SessionEffect {
        SessionEffect(Effect::Login { devices: vec![self.device.clone()], batch: false })
    }
}

/// The outcome of a batch login: who is in, who failed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchLoginResult {
    /// The sub-devices logged in.
    #[serde(default, rename = "loginedSubDevices")]
    pub logged_in: Vec<LoginResult>,
    /// The sub-devices refused.
    #[serde(default, rename = "failedSubDevices")]
    pub failed: Vec<DeviceKeys>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchWire<'a> {
    client_id: &'a str,
    sign_method: &'static str,
    timestamp: &'a str,
    sub_devices: Vec<BatchEntryWire<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchEntryWire<'a> {
    product_key: &'a str,
    device_key: &'a str,
    sign: String,
    secure_mode: &'static str,
}

/// Row 18, `combine.login.batch`: log several sub-devices in with one request. One
/// client id (the gateway's product key by default), timestamp and sign method for all;
/// each entry is signed with its own secret.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubDeviceBatchLogin {
    /// The sub-devices.
    pub devices: Vec<SubDeviceInfo>,
    /// The batch client id; the gateway's product key when `None`.
    pub client_id: Option<String>,
    /// The sign method of every entry.
    pub sign_method: SignMethod,
}

impl SubDeviceBatchLogin {
    /// Log in these sub-devices.
    pub fn new(devices: Vec<SubDeviceInfo>) -> Self {
        SubDeviceBatchLogin { devices, client_id: None, sign_method: SignMethod::Sha256 }
    }
}

impl Operation for SubDeviceBatchLogin {
    type Data = BatchLoginResult;
    fn scope(&self) -> Scope {
        Scope::ExtSession
    }
    fn write_path(&self, out: &mut String) {
        out.push_str("combine/login/batch");
    }
    fn gateway_only(&self) -> bool {
        true
    }
    fn write_method(&self, out: &mut String) {
        out.push_str("combine.login.batch");
    }
    fn write_params(&self, ctx: &EncodeContext<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let ts = ctx.unix_ms.to_string();
        let client_id = self.client_id.as_deref().unwrap_or(ctx.own.product_key());
        check_client_id(client_id)?;
        let sub_devices = self
            .devices
            .iter()
            .map(|d| BatchEntryWire {
                product_key: d.keys.product_key(),
                device_key: d.keys.device_key(),
                sign: sign_device(self.sign_method, client_id, &d.keys, &ts, &d.secret),
                secure_mode: mode_text(d),
            })
            .collect();
        write_json(out, &BatchWire { client_id, sign_method: self.sign_method.label(), timestamp: &ts, sub_devices })
    }
    fn parse_reply(reply: &Reply) -> Result<BatchLoginResult, RequestError> {
        let j = reply.json()?;
        // A partial failure (code 723) still carries both lists: the caller gets them.
        match (j.code, j.data::<Option<BatchLoginResult>>()) {
            (200, parsed) => parsed.map(Option::unwrap_or_default),
            (_, Ok(Some(r))) if !r.logged_in.is_empty() || !r.failed.is_empty() => Ok(r),
            _ => j.success().map(|_| BatchLoginResult::default()),
        }
    }
    fn session_effect(&self) -> SessionEffect {
        SessionEffect(Effect::Login { devices: self.devices.clone(), batch: true })
    }
}

/// Row 19, `combine.logout`: log a sub-device out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubDeviceLogout {
    /// The sub-device.
    pub device: DeviceKeys,
}

impl SubDeviceLogout {
    /// Log this sub-device out.
    pub fn new(device: DeviceKeys) -> Self {
        SubDeviceLogout { device }
    }
}

impl Operation for SubDeviceLogout {
    type Data = Option<DeviceKeys>;
    fn scope(&self) -> Scope {
        Scope::ExtSession
    }
    fn write_path(&self, out: &mut String) {
        out.push_str("combine/logout");
    }
    fn gateway_only(&self) -> bool {
        true
    }
    fn write_method(&self, out: &mut String) {
        out.push_str("combine.logout");
    }
    fn write_params(&self, _: &EncodeContext<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        write_json(out, &self.device)
    }
    fn parse_reply(reply: &Reply) -> Result<Option<DeviceKeys>, RequestError> {
        json_reply(reply)
    }
    fn session_effect(&self) -> SessionEffect {
        SessionEffect(Effect::Logout(vec![self.device.clone()]))
    }
}
