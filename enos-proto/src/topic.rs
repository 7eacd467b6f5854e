//! Device keys and topics (spec §1.2): `/sys/{pk}/{dk}/<path>` and
//! `/ext/session/{pk}/{dk}/<path>`; a reply topic is the request topic plus `_reply`.

use std::fmt;

use crate::error::ConfigError;

/// A device's identity: product key and device key.
///
/// Keys are non-empty and contain none of `/`, `+`, `#`, `&`, `|` (spec §9), so topics
/// built from them split safely.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DeviceKeys {
    /// `{product key}/{device key}` in one allocation (neither key holds a `/`): one
    /// memory access to compare or hash a device's keys.
    text: Box<str>,
    /// Where the product key ends.
    split: u16,
}

impl DeviceKeys {
    /// Checks and wraps a product key and a device key.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the key that is empty or holds a forbidden character.
    pub fn new(product_key: impl AsRef<str>, device_key: impl AsRef<str>) -> Result<Self, ConfigError> {
        let (product_key, device_key) = (product_key.as_ref(), device_key.as_ref());
        check_key("product key", product_key)?;
        check_key("device key", device_key)?;
        let mut text = String::with_capacity(product_key.len() + 1 + device_key.len());
        text.push_str(product_key);
        text.push('/');
        text.push_str(device_key);
        // A valid key is at most 256 bytes.
        let split = u16::try_from(product_key.len()).map_err(|_| ConfigError::new("product key", "is too long"))?;
        Ok(DeviceKeys { text: text.into_boxed_str(), split })
    }

    /// The product key.
    pub fn product_key(&self) -> &str {
        self.text.get(..usize::from(self.split)).unwrap_or_default()
    }

    /// The device key.
    pub fn device_key(&self) -> &str {
        self.text.get(usize::from(self.split) + 1..).unwrap_or_default()
    }

    /// Whether these are the keys `pk`/`dk`.
    pub fn is(&self, pk: &str, dk: &str) -> bool {
        self.product_key() == pk && self.device_key() == dk
    }
}

/// Ordered by product key, then device key.
impl Ord for DeviceKeys {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.product_key(), self.device_key()).cmp(&(other.product_key(), other.device_key()))
    }
}

impl PartialOrd for DeviceKeys {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for DeviceKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for DeviceKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeysWire<'a> {
    #[serde(borrow)]
    product_key: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    device_key: std::borrow::Cow<'a, str>,
}

/// Serialized as `{"productKey": .., "deviceKey": ..}`, the shape EnOS uses in params.
impl serde::Serialize for DeviceKeys {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        KeysWire { product_key: self.product_key().into(), device_key: self.device_key().into() }.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = KeysWire::deserialize(d)?;
        DeviceKeys::new(w.product_key, w.device_key).map_err(serde::de::Error::custom)
    }
}

/// Whether `key` is acceptable as a product or device key.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty() && !key.contains(['/', '+', '#', '&', '|']) && key.len() <= 256
}

fn check_key(field: &'static str, key: &str) -> Result<(), ConfigError> {
    if key.is_empty() {
        Err(ConfigError::new(field, "is empty"))
    } else if !is_valid_key(key) {
        Err(ConfigError::new(field, format!("{key:?} holds one of / + # & | or is over 256 bytes")))
    } else {
        Ok(())
    }
}

/// The two topic families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `/sys/{pk}/{dk}/...`
    Sys,
    /// `/ext/session/{pk}/{dk}/...`
    ExtSession,
}

impl Scope {
    fn prefix(self) -> &'static str {
        match self {
            Scope::Sys => "/sys/",
            Scope::ExtSession => "/ext/session/",
        }
    }
}

/// Appends `/{scope}/{pk}/{dk}/{path}` to `out`.
pub fn write_topic(out: &mut String, scope: Scope, keys: &DeviceKeys, path: &str) {
    out.push_str(scope.prefix());
    out.push_str(keys.product_key());
    out.push('/');
    out.push_str(keys.device_key());
    out.push('/');
    out.push_str(path);
}

/// `/{scope}/{pk}/{dk}/{path}` as a new string.
pub fn topic(scope: Scope, keys: &DeviceKeys, path: &str) -> String {
    let mut s = String::with_capacity(16 + keys.product_key().len() + keys.device_key().len() + path.len());
    write_topic(&mut s, scope, keys, path);
    s
}

/// A device topic split into its parts, borrowing from the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicParts<'a> {
    /// `/sys/` or `/ext/session/`.
    pub scope: Scope,
    /// The product key.
    pub product_key: &'a str,
    /// The device key.
    pub device_key: &'a str,
    /// Everything after `/{pk}/{dk}/`.
    pub path: &'a str,
}

/// Splits a device topic, or `None` when it is not one.
pub fn parse_topic(topic: &str) -> Option<TopicParts<'_>> {
    let (scope, rest) = if let Some(rest) = topic.strip_prefix("/sys/") {
        (Scope::Sys, rest)
    } else if let Some(rest) = topic.strip_prefix("/ext/session/") {
        (Scope::ExtSession, rest)
    } else {
        return None;
    };
    let mut it = rest.splitn(3, '/');
    let product_key = it.next()?;
    let device_key = it.next()?;
    let path = it.next()?;
    if product_key.is_empty() || device_key.is_empty() || path.is_empty() {
        return None;
    }
    Some(TopicParts { scope, product_key, device_key, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(DeviceKeys::new("pk", "dk").is_ok());
        assert_eq!(DeviceKeys::new("", "dk").unwrap_err().field, "product key");
        assert_eq!(DeviceKeys::new("pk", "a/b").unwrap_err().field, "device key");
        assert!(DeviceKeys::new("p&k", "dk").is_err());
    }

    #[test]
    fn keys_keep_both_parts_and_order_by_product_key_first() {
        let k = DeviceKeys::new("pk", "dk").unwrap();
        assert_eq!((k.product_key(), k.device_key(), k.to_string()), ("pk", "dk", "pk/dk".to_owned()));
        assert!(k.is("pk", "dk") && !k.is("pk/dk", "") && !k.is("p", "k/dk"));
        // "a" < "a!" although "a/z" > "a!/a" as text.
        let (a, b) = (DeviceKeys::new("a", "z").unwrap(), DeviceKeys::new("a!", "a").unwrap());
        assert!(a < b);
        assert!(DeviceKeys::new("a", "b").unwrap() < DeviceKeys::new("a", "c").unwrap());
        assert_ne!(DeviceKeys::new("ab", "c").unwrap(), DeviceKeys::new("a", "bc").unwrap());
        let longest = "k".repeat(256);
        let k = DeviceKeys::new(&longest, &longest).unwrap();
        assert_eq!((k.product_key(), k.device_key()), (longest.as_str(), longest.as_str()));
    }

    #[test]
    fn topics_round_trip() {
        let k = DeviceKeys::new("pk", "dk").unwrap();
        let t = topic(Scope::ExtSession, &k, "combine/login");
        assert_eq!(t, "/ext/session/pk/dk/combine/login");
        let p = parse_topic(&t).unwrap();
        assert_eq!((p.scope, p.product_key, p.device_key, p.path), (Scope::ExtSession, "pk", "dk", "combine/login"));
        assert!(parse_topic("/sys/pk/dk").is_none());
        assert!(parse_topic("/other/pk/dk/x").is_none());
    }
}
