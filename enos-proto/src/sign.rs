//! EnOS signing (spec §2.2 and §8): the CONNECT client id, username and password, and the
//! sub-device signature used by login, batch login and topo add.
//!
//! EnOS "sign methods" are plain digests, whatever their label says: `SIGN(SM, params,
//! secret)` is the upper-case hex digest of the parameters sorted by name, each written as
//! `name || value`, followed by the secret.

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::secret::Secret;
use crate::topic::DeviceKeys;

/// A sign method label and the digest it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum SignMethod {
    /// `sha256`: SHA-256. The default, as the Node.js SDK sends it.
    #[default]
    Sha256,
    /// `sha1`: SHA-1.
    Sha1,
    /// `md5`: MD5.
    Md5,
    /// `hmacsha256`: the label the Python SDK sends; computed as plain SHA-256.
    HmacSha256,
    /// `hmacsha1`: the label the Java SDK sends; computed as plain SHA-1.
    HmacSha1,
    /// `hmacmd5`: computed as plain MD5.
    HmacMd5,
}

impl SignMethod {
    /// The label as it goes on the wire.
    pub fn label(self) -> &'static str {
        match self {
            SignMethod::Sha256 => "sha256",
            SignMethod::Sha1 => "sha1",
            SignMethod::Md5 => "md5",
            SignMethod::HmacSha256 => "hmacsha256",
            SignMethod::HmacSha1 => "hmacsha1",
            SignMethod::HmacMd5 => "hmacmd5",
        }
    }

    /// Parses a label, ignoring ASCII case.
    pub fn from_label(label: &str) -> Option<Self> {
        [
            SignMethod::Sha256,
            SignMethod::Sha1,
            SignMethod::Md5,
            SignMethod::HmacSha256,
            SignMethod::HmacSha1,
            SignMethod::HmacMd5,
        ]
        .into_iter()
        .find(|m| m.label().eq_ignore_ascii_case(label))
    }

    /// Upper-case hex of this method's digest of `data`.
    pub fn digest_hex(self, data: &[u8]) -> String {
        match self {
            SignMethod::Sha256 | SignMethod::HmacSha256 => upper_hex(&Sha256::digest(data)),
            SignMethod::Sha1 | SignMethod::HmacSha1 => upper_hex(&Sha1::digest(data)),
            SignMethod::Md5 | SignMethod::HmacMd5 => upper_hex(&Md5::digest(data)),
        }
    }
}

fn upper_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

/// `SIGN(method, params, secret)` of spec §2.2 for any parameter set: the parameters are
/// sorted by name (byte order), concatenated as `name || value`, the secret appended, and
/// the digest returned in upper-case hex.
pub fn sign(method: SignMethod, params: &[(&str, &str)], secret: &Secret) -> String {
    let mut sorted: Vec<&(&str, &str)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut s =
        String::with_capacity(params.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() + secret.expose().len());
    for (k, v) in sorted {
        s.push_str(k);
        s.push_str(v);
    }
    s.push_str(secret.expose());
    method.digest_hex(s.as_bytes())
}

/// The signature of a device over the four parameters EnOS signs (`clientId`,
/// `deviceKey`, `productKey`, `timestamp`): the CONNECT password, and the `sign` of a
/// sub-device login, batch login entry or topo add entry.
pub fn sign_device(method: SignMethod, client_id: &str, keys: &DeviceKeys, timestamp: &str, secret: &Secret) -> String {
    sign(
        method,
        &[
            ("clientId", client_id),
            ("deviceKey", keys.device_key()),
            ("productKey", keys.product_key()),
            ("timestamp", timestamp),
        ],
        secret,
    )
}

/// How a device authenticates (spec §2.3): the seed's `SECURE_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SecureMode {
    /// Mode 2 (`VIA_DEVICE_SECRET`): signed with the device secret.
    DeviceSecret,
    /// Mode 3 (`VIA_PRODUCT_SECRET`): dynamic activation, signed with the product secret.
    ProductSecret,
    /// X.509 (`VIA_CERT`): a client certificate on TLS; the CONNECT carries the mode-2
    /// fields when the device secret is known.
    Certificate,
    /// Mode 4: the message-integration channel of a product, signed with its product
    /// secret (extensions spec E4).
    Integration,
}

impl SecureMode {
    /// The number EnOS uses on the wire (2, 3 for dynamic activation, 4 for the
    /// integration channel).
    pub fn number(self) -> u8 {
        match self {
            SecureMode::DeviceSecret | SecureMode::Certificate => 2,
            SecureMode::ProductSecret => 3,
            SecureMode::Integration => 4,
        }
    }
}

/// The three CONNECT fields of a secret-based connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectFields {
    /// `CID|securemode=M,signmethod=SM,timestamp=TS|`
    pub client_id: String,
    /// `deviceKey&productKey`
    pub username: String,
    /// The signature: a [`Secret`], so it never shows in `Debug`.
    pub password: Secret,
}

/// The CONNECT client id and user name of spec §2.1 for one attempt at `timestamp_ms`
/// (what a certificate-only CONNECT sends, with no password).
pub fn connect_identity(
    keys: &DeviceKeys,
    cid: &str,
    mode: SecureMode,
    method: SignMethod,
    timestamp_ms: u64,
) -> (String, String) {
    let client_id =
        format!("{cid}|securemode={},signmethod={},timestamp={timestamp_ms}|", mode.number(), method.label());
    (client_id, format!("{}&{}", keys.device_key(), keys.product_key()))
}

/// Builds the CONNECT fields of spec §2.1 for one attempt at `timestamp_ms`.
pub fn connect_fields(
    keys: &DeviceKeys,
    cid: &str,
    mode: SecureMode,
    method: SignMethod,
    timestamp_ms: u64,
    secret: &Secret,
) -> ConnectFields {
    let (client_id, username) = connect_identity(keys, cid, mode, method, timestamp_ms);
    let password = Secret::new(sign_device(method, cid, keys, &timestamp_ms.to_string(), secret));
    ConnectFields { client_id, username, password }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_ignoring_case() {
        for m in [
            SignMethod::Sha256,
            SignMethod::Sha1,
            SignMethod::Md5,
            SignMethod::HmacSha256,
            SignMethod::HmacSha1,
            SignMethod::HmacMd5,
        ] {
            assert_eq!(SignMethod::from_label(&m.label().to_uppercase()), Some(m));
        }
        assert_eq!(SignMethod::from_label("sha512"), None);
    }

    #[test]
    fn params_are_sorted_by_name() {
        let s = Secret::new("S");
        assert_eq!(sign(SignMethod::Md5, &[("b", "2"), ("a", "1")], &s), SignMethod::Md5.digest_hex(b"a1b2S"));
    }
}
