//! The device's HTTP transport as bytes (extensions spec E1, E2): where requests go, what
//! they carry, and an incremental reader of responses. No sockets: a caller writes what
//! [`HttpRequest::write`] gives and feeds what comes back to a [`ResponseReader`].
//!
//! A device logs in with `POST /auth/{pk}/{dk}` (signed with its device secret, for a
//! session lifetime), then sends the ordinary requests to `/topic{request topic}` with
//! `?sessionId=`: the response body is what MQTT would deliver on the reply topic. A
//! response may carry a command in its `command-payload` and `topic` headers; its reply
//! is posted to `/topic{command topic}_reply`. Files go to `/multipart{topic}`.
//!
//! ```
//! use enos_proto::http::{HttpTarget, ResponseReader, ReadItem};
//! let target = HttpTarget::parse("http://127.0.0.1:8080/").unwrap();
//! let request = target.publish("/sys/pk/dk/thing/measurepoint/post", "sid-1", br#"{"id":"1"}"#.to_vec(), false);
//! let mut wire = Vec::new();
//! request.write(&target, &mut wire);
//! assert!(wire.starts_with(b"POST /topic/sys/pk/dk/thing/measurepoint/post?sessionId=sid-1 HTTP/1.1\r\n"));
//!
//! let mut reader = ResponseReader::new();
//! reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
//! assert!(matches!(reader.read(), Ok(Some(ReadItem::Head(h))) if h.status == 200));
//! assert!(matches!(reader.read(), Ok(Some(ReadItem::Body(b))) if &b[..] == b"{}"));
//! assert!(matches!(reader.read(), Ok(Some(ReadItem::End { reusable: true }))));
//! ```

mod files;
mod multipart;
mod reader;

use bytes::Bytes;
use sha2::{Digest, Sha256};

pub use files::{ContentRange, FileDelete, FileDownload, FileDownloadUrl, FileExchange, FilePart, UrlGet};
pub use multipart::{FileUpload, MeasurepointFilePost, MAX_FILE_BYTES, MAX_MESSAGE_PART_BYTES};
pub use reader::{HttpError, ReadItem, ResponseHead, ResponseReader};

use crate::error::ConfigError;
use crate::topic::DeviceKeys;
use crate::Secret;

/// A session's lifetime when none is configured: 300,000 ms.
pub const DEFAULT_LIFETIME_MS: u64 = 300_000;
/// The response header that carries a command's payload.
pub const COMMAND_PAYLOAD_HEADER: &str = "command-payload";
/// The response header that carries a command's topic.
pub const COMMAND_TOPIC_HEADER: &str = "topic";
/// `Content-Type` of JSON bodies.
pub const JSON: &str = "application/json; charset=utf-8";
/// `Content-Type` of raw bodies and file parts.
pub const OCTETS: &str = "application/octet-stream";

/// Where the device's HTTP broker is: scheme, host, port and the path every request goes
/// below (the URL's path without its trailing `/`, spec C5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// `https`.
    pub tls: bool,
    /// Host name or address.
    pub host: String,
    /// Port (80 or 443 when the URL gives none).
    pub port: u16,
    /// The URL's path, without a trailing `/` (usually empty).
    pub base_path: String,
}

/// How the device reaches EnOS over HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpMode {
    /// The broker.
    pub target: HttpTarget,
    /// The session's lifetime: a new login follows once it has passed since the last.
    pub lifetime: std::time::Duration,
    /// The commands to receive in responses (none by default).
    pub accept_commands: Vec<CommandType>,
    /// No login: the session is up once connected, for plain GETs of the broker's files
    /// ([`UrlGet`]: a firmware at a plain URL, spec C15). Off by default.
    pub anonymous: bool,
}

impl HttpMode {
    /// The broker at `target`, sessions of 300 s, no commands asked for.
    pub fn new(target: HttpTarget) -> Self {
        HttpMode {
            target,
            lifetime: std::time::Duration::from_millis(DEFAULT_LIFETIME_MS),
            accept_commands: Vec::new(),
            anonymous: false,
        }
    }
}

/// The kinds of commands a device may ask to receive in its HTTP responses (E1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandType {
    /// OTA upgrade pushes: `CMD_OTA_UPGRADE`.
    OtaUpgrade,
    /// Queued service invocations: `CMD_PENDING_INVOKE`.
    PendingInvoke,
}

impl CommandType {
    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            CommandType::OtaUpgrade => "CMD_OTA_UPGRADE",
            CommandType::PendingInvoke => "CMD_PENDING_INVOKE",
        }
    }
}

/// What a stored file is (E2.3): a model feature, or firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileCategory {
    /// `feature`: a file posted as a measure point.
    Feature,
    /// `ota`: firmware.
    Ota,
}

impl FileCategory {
    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            FileCategory::Feature => "feature",
            FileCategory::Ota => "ota",
        }
    }
}

/// A byte range of a download (RFC 7233): `bytes=S-E`, `bytes=S-` or `bytes=-N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// From `start` to `end`, both included.
    Span {
        /// The first byte.
        start: u64,
        /// The last byte.
        end: u64,
    },
    /// From `start` to the end.
    From(u64),
    /// The last `n` bytes.
    Last(u64),
}

impl ByteRange {
    /// The `Range` header's value.
    pub fn header(self) -> String {
        match self {
            ByteRange::Span { start, end } => format!("bytes={start}-{end}"),
            ByteRange::From(start) => format!("bytes={start}-"),
            ByteRange::Last(n) => format!("bytes=-{n}"),
        }
    }
}

/// One HTTP/1.1 request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET` or `POST`.
    pub method: http::Method,
    /// Path and query below the target's base path, e.g. `/auth/pk/dk`.
    pub path: String,
    /// `Content-Type`, when the request has one.
    pub content_type: Option<String>,
    /// Other headers.
    pub headers: http::HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl HttpRequest {
    /// Writes the request as HTTP/1.1 bytes for `target`. A POST always says its
    /// `Content-Length`, zero included; the connection is kept open.
    pub fn write(&self, target: &HttpTarget, out: &mut Vec<u8>) {
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(target.base_path.as_bytes());
        out.extend_from_slice(self.path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(target.authority().as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(ct) = &self.content_type {
            header(out, "Content-Type", ct);
        }
        for (k, v) in &self.headers {
            out.extend_from_slice(k.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if self.method != http::Method::GET || !self.body.is_empty() {
            header(out, "Content-Length", &self.body.len().to_string());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
    }

    /// The whole URL of the request at `target` (for logs and the vectors).
    pub fn url(&self, target: &HttpTarget) -> String {
        format!("{}{}{}", target.origin(), target.base_path, self.path)
    }
}

fn header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

impl HttpTarget {
    /// Reads `http://host[:port][/path]` or `https://...`. A trailing `/` is dropped, so
    /// `https://host/` and `https://host` lead to the same requests (spec C5).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] on `broker_url` for another scheme, a bad port or host.
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::new("broker_url", format!("{url:?}: {why}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("expected http://host or https://host"))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (host, port) = host_port(authority, if tls { 443 } else { 80 }, &bad)?;
        if path.contains(['?', '#', ' ']) {
            return Err(bad("the URL's path may hold no query"));
        }
        Ok(HttpTarget { tls, host, port, base_path: path.trim_end_matches('/').to_owned() })
    }

    /// `host[:port]`, the `Host` header (the port left out when it is the scheme's).
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == if self.tls { 443 } else { 80 } {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// `scheme://authority`.
    pub fn origin(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.authority())
    }

    /// The login of `keys` with its device secret, for a session of `lifetime_ms`; it asks
    /// for the commands of `accept` in later responses (none: no such field).
    pub fn login(&self, keys: &DeviceKeys, secret: &Secret, lifetime_ms: u64, accept: &[CommandType]) -> HttpRequest {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            sign_method: &'static str,
            lifetime: u64,
            sign: &'a str,
            #[serde(skip_serializing_if = "<[&str]>::is_empty")]
            accept_command_types: &'a [&'static str],
        }
        let sign = auth_sign(keys, secret, lifetime_ms);
        let accept: Vec<&'static str> = accept.iter().map(|c| c.name()).collect();
        let body = Body { sign_method: "sha256", lifetime: lifetime_ms, sign: &sign, accept_command_types: &accept };
        HttpRequest {
            method: http::Method::POST,
            path: format!("/auth/{}/{}", keys.product_key(), keys.device_key()),
            content_type: Some(JSON.into()),
            headers: http::HeaderMap::new(),
            body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        }
    }

    /// A request published on `topic` (an MQTT request topic, or a command's reply topic):
    /// JSON, or raw bytes when `raw`.
    pub fn publish(&self, topic: &str, session: &str, body: impl Into<Bytes>, raw: bool) -> HttpRequest {
        HttpRequest {
            method: http::Method::POST,
            path: format!("/topic{topic}?sessionId={session}"),
            content_type: Some(if raw { OCTETS } else { JSON }.into()),
            headers: http::HeaderMap::new(),
            body: body.into(),
        }
    }

    /// A measure point post with files, as `multipart/form-data` with `boundary`.
    pub fn multipart(&self, topic: &str, session: &str, boundary: &str, body: impl Into<Bytes>) -> HttpRequest {
        HttpRequest {
            method: http::Method::POST,
            path: format!("/multipart{topic}?sessionId={session}"),
            content_type: Some(format!("multipart/form-data; boundary={boundary}")),
            headers: http::HeaderMap::new(),
            body: body.into(),
        }
    }

    /// A download of stored file `uri` of `category`, whole or a range of it (E2.3).
    pub fn download(
        &self,
        keys: &DeviceKeys,
        session: &str,
        uri: &str,
        category: FileCategory,
        range: Option<ByteRange>,
    ) -> HttpRequest {
        HttpRequest {
            method: http::Method::GET,
            path: format!("{}/download?sessionId={session}&fileUri={uri}&category={}", files(keys), category.name()),
            content_type: None,
            headers: range_header(range),
            body: Bytes::new(),
        }
    }

    /// The direct download URL of stored file `uri` (E2.4).
    pub fn download_url(&self, keys: &DeviceKeys, session: &str, uri: &str, category: FileCategory) -> HttpRequest {
        HttpRequest {
            method: http::Method::GET,
            path: format!(
                "{}/download/url?sessionId={session}&fileUri={uri}&category={}",
                files(keys),
                category.name()
            ),
            content_type: None,
            headers: http::HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    /// A plain GET of `path` (and query) at the target, with a byte range: no session.
    pub fn get(&self, path: &str, range: Option<ByteRange>) -> HttpRequest {
        HttpRequest {
            method: http::Method::GET,
            path: path.to_owned(),
            content_type: None,
            headers: range_header(range),
            body: Bytes::new(),
        }
    }

    /// The deletion of stored file `uri` (E2.5).
    pub fn delete_file(&self, keys: &DeviceKeys, session: &str, uri: &str) -> HttpRequest {
        HttpRequest {
            method: http::Method::POST,
            path: format!("{}/delete?sessionId={session}&fileUri={uri}", files(keys)),
            content_type: None,
            headers: http::HeaderMap::new(),
            body: Bytes::new(),
        }
    }
}

/// `host[:port]` or `[v6][:port]` of a URL, with `default_port` when none is given.
pub(crate) fn host_port(
    authority: &str,
    default_port: u16,
    bad: &dyn Fn(&str) -> ConfigError,
) -> Result<(String, u16), ConfigError> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed [ in the host"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad("invalid port"))?,
            None if after.is_empty() => default_port,
            None => return Err(bad("unexpected text after the host")),
        };
        (h.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad("invalid port"))?),
            None => (authority.to_owned(), default_port),
        }
    };
    if host.is_empty() || host.contains(['?', '#', '@', ' ']) {
        return Err(bad("invalid host"));
    }
    Ok((host, port))
}

/// A `Range` header for `range`, or none.
fn range_header(range: Option<ByteRange>) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    // Digits, `bytes=` and `-`: always a valid header value.
    if let Some(v) = range.and_then(|r| http::HeaderValue::try_from(r.header()).ok()) {
        h.insert(http::header::RANGE, v);
    }
    h
}

/// `/multipart/sys/{pk}/{dk}/file`.
fn files(keys: &DeviceKeys) -> String {
    format!("/multipart/sys/{}/{}/file", keys.product_key(), keys.device_key())
}

/// The login signature (E1.2): lower-case hex SHA-256 of
/// `deviceKey{dk}lifetime{L}productKey{pk}signMethodsha256{deviceSecret}`.
pub fn auth_sign(keys: &DeviceKeys, secret: &Secret, lifetime_ms: u64) -> String {
    let mut h = Sha256::new();
    for part in [
        "deviceKey",
        keys.device_key(),
        "lifetime",
        &lifetime_ms.to_string(),
        "productKey",
        keys.product_key(),
        "signMethod",
        "sha256",
        secret.expose(),
    ] {
        h.update(part.as_bytes());
    }
    lower_hex(&h.finalize())
}

pub(crate) fn lower_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_url_with_or_without_its_trailing_slash_leads_to_the_same_requests() {
        let a = HttpTarget::parse("https://iot-http.example.com/").unwrap();
        let b = HttpTarget::parse("https://iot-http.example.com").unwrap();
        assert_eq!(a, b);
        assert_eq!((a.port, a.authority().as_str()), (443, "iot-http.example.com"));
        let v6 = HttpTarget::parse("http://[::1]:8080/enos/").unwrap();
        assert_eq!((v6.host.as_str(), v6.port, v6.base_path.as_str()), ("::1", 8080, "/enos"));
        assert_eq!(v6.origin(), "http://[::1]:8080");
        for bad in ["tcp://h:1", "http://", "http://h:port", "http://h/p?q=1", "https://[::1"] {
            assert!(HttpTarget::parse(bad).is_err(), "{bad}");
        }
    }
}
