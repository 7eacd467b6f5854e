//! Authentication (spec §2, §3, §10): a CONNECT's client id, user name and signature
//! checked against the registry (device secret, dynamic activation with the product
//! secret, a client certificate, the integration channel), the activation push, and the
//! login of a sub-device through its gateway.

use bytes::Bytes;
use enos_proto::codec::ConnectReturnCode;
use enos_proto::compress::{ClientId, Compression};
use enos_proto::sign::{sign_device, SignMethod};
use enos_proto::topic::Scope;
use enos_proto::{DeviceKeys, Secret};
use serde_json::{json, Value};

use super::{Cloud, ConnId, Outbound};
use crate::registry::Registry;

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

/// What a verified CONNECT logs in as.
enum Login {
    /// The product's message-integration channel (secure mode 4).
    Channel,
    /// A device; `activating` when it logged in with its product's secret (secure mode 3)
    /// and is to be sent its device secret.
    Device { activating: bool },
}

/// Whether `sign` is the signature of these fields, `SIGN(method, {clientId, deviceKey,
/// productKey, timestamp}, secret)` (hex, in either case), compared in constant time.
fn sign_ok(method: &str, client_id: &str, keys: &DeviceKeys, timestamp: &str, secret: &Secret, sign: &str) -> bool {
    use subtle::ConstantTimeEq;
    SignMethod::from_label(method).is_some_and(|m| {
        let expected = sign_device(m, client_id, keys, timestamp, secret).to_ascii_lowercase();
        bool::from(expected.as_bytes().ct_eq(sign.to_ascii_lowercase().as_bytes()))
    })
}

impl Cloud {
    /// Authenticates a CONNECT (spec §2, §3, §10) for connection `conn`: the device, or
    /// the CONNACK refusal.
    ///
    /// # Errors
    ///
    /// The CONNACK return code of the refusal.
    pub fn connect(&mut self, conn: ConnId, c: ConnectInfo<'_>) -> Result<Accepted, ConnectReturnCode> {
        // CID[{ip=..,version=..,compress=..}]|securemode=M,signmethod=SM,timestamp=TS|
        let Some(id) = ClientId::parse(c.client_id) else { return Err(ConnectReturnCode::BadClientId) };
        // LZO, or a codec not known: refused as the spec's choice says.
        let compression = id.compression().map_err(|_| ConnectReturnCode::BadClientId)?;
        if !self.fresh(id.timestamp) {
            return Err(ConnectReturnCode::NotAuthorized);
        }
        // The signature covers the client id with its block; the length limit does not.
        if id.cid.is_empty() || id.cid.chars().count() > 64 {
            return Err(ConnectReturnCode::BadClientId);
        }
        let Some((dk, pk)) = c.username.split_once('&').filter(|(_, pk)| !pk.contains('&')) else {
            return Err(ConnectReturnCode::BadUserNamePassword);
        };
        let keys = DeviceKeys::new(pk, dk).map_err(|_| ConnectReturnCode::NotAuthorized)?;
        let mut push = Vec::new();
        if let Login::Device { activating } = self.verify(&keys, &id, &c)? {
            if activating {
                push.push(self.activation_push(&keys)?);
            }
            if let Some(fw) = self.pending_ota.remove(&keys) {
                push.push(self.ota_push(&keys, fw));
            }
        }
        let takeover = self.sessions.open(conn, &keys, c.client_id);
        Ok(Accepted { device: keys, takeover, push, compression })
    }

    /// Checks a CONNECT's credentials for `keys` against the registry.
    fn verify(&self, keys: &DeviceKeys, id: &ClientId<'_>, c: &ConnectInfo<'_>) -> Result<Login, ConnectReturnCode> {
        let (cid, method, ts) = (id.signed, id.sign_method, id.timestamp);
        let refused = ConnectReturnCode::NotAuthorized;
        let product = self.registry.products.get(keys.product_key()).ok_or(refused)?;
        if id.secure_mode == "4" {
            // The product's message-integration channel (extensions spec E4, E10).
            let channel = product.integration_channel && keys.device_key() == enos_proto::INTEGRATION_DEVICE_KEY;
            if !channel || !sign_ok(method, cid, keys, ts, &product.secret, c.password) {
                return Err(refused);
            }
            return Ok(Login::Channel);
        }
        let device = self.registry.devices.get(keys).ok_or(refused)?;
        if !device.enabled {
            return Err(refused);
        }
        match id.secure_mode {
            "2" => {
                let verified = match &device.secret {
                    Some(secret) => sign_ok(method, cid, keys, ts, secret, c.password),
                    None => false,
                };
                // A verified client certificate may stand in for the password, for the
                // device it was issued to only.
                let by_certificate = c.password.is_empty() && c.certificate.iter().any(|n| n == keys.device_key());
                if !(verified || by_certificate) {
                    return Err(refused);
                }
                Ok(Login::Device { activating: false })
            }
            "3" => {
                if !product.dynamic_activation
                    || (device.activated && !self.registry.allow_reactivation)
                    || !sign_ok(method, cid, keys, ts, &product.secret, c.password)
                {
                    return Err(refused);
                }
                Ok(Login::Device { activating: true })
            }
            _ => Err(refused),
        }
    }

    /// The activation push (`thing.activate.info`) that gives a device logging in with its
    /// product's secret its own secret: the one it has, or a new one.
    fn activation_push(&mut self, keys: &DeviceKeys) -> Result<Outbound, ConnectReturnCode> {
        let device = self.registry.devices.get_mut(keys).ok_or(ConnectReturnCode::NotAuthorized)?;
        let secret = match &device.secret {
            Some(s) => s.clone(),
            None => {
                let s = Registry::random_secret(20).ok_or(ConnectReturnCode::ServiceUnavailable)?;
                device.secret = Some(s.clone());
                s
            }
        };
        let asset = device.asset_id.clone();
        let id = self.command_id();
        let body = json!({"id": id, "version": "1.0", "method": "thing.activate.info",
            "params": {"assetId": asset, "productKey": keys.product_key(), "deviceKey": keys.device_key(), "deviceSecret": secret.expose()}});
        Ok(Outbound {
            topic: enos_proto::topic::topic(Scope::ExtSession, keys, "thing/activate/info"),
            payload: Bytes::from(body.to_string()),
        })
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

    /// Whether a login's timestamp (epoch milliseconds, possibly with a fraction) is within
    /// [`max_clock_skew`](Self::max_clock_skew) of now.
    fn fresh(&self, ts: &str) -> bool {
        let Some(window) = self.max_clock_skew else { return true };
        let now = crate::unix_ms() as f64;
        ts.parse::<f64>().is_ok_and(|t| t.is_finite() && (t - now).abs() <= window.as_millis() as f64)
    }

    /// One sub-device login through `gateway`'s connection `conn` (spec §8): the data of
    /// its success (with its new secret when it activates, secure mode 3), or the code and
    /// message of its refusal.
    pub(super) fn log_in_sub_device(
        &mut self,
        conn: ConnId,
        gateway: &DeviceKeys,
        sub: &DeviceKeys,
        signature: &SubDeviceSignature<'_>,
        mode: &str,
    ) -> Result<Value, (i32, String)> {
        let SubDeviceSignature { client_id, timestamp: ts, sign_method: method, sign } = *signature;
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
        let logged_in = self.sessions.subs_of(conn);
        let already = logged_in.is_some_and(|s| s.contains(sub));
        let max = self.registry.max_sub_devices_online;
        if !already && logged_in.is_some_and(|s| s.len() >= max) {
            return Err((1212, format!("at most {max} sub-devices online per gateway")));
        }
        self.sessions.log_in(conn, sub);
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

    /// Whether `signature` is a sub-device's, made with its device secret (a topology
    /// add, spec §8).
    pub(super) fn sub_device_sign_ok(&self, sub: &DeviceKeys, signature: &SubDeviceSignature<'_>) -> bool {
        let SubDeviceSignature { client_id, timestamp, sign_method, sign } = *signature;
        let secret = self.registry.devices.get(sub).and_then(|d| d.secret.as_ref());
        secret.is_some_and(|s| sign_ok(sign_method, client_id, sub, timestamp, s, sign))
    }
}

/// The signed fields of a sub-device's login or topology add, as the gateway sent them.
#[derive(Debug, Clone, Copy)]
pub(super) struct SubDeviceSignature<'a> {
    pub(super) client_id: &'a str,
    pub(super) timestamp: &'a str,
    pub(super) sign_method: &'a str,
    pub(super) sign: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::defaults::*;

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
}
