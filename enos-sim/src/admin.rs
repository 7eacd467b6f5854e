//! The loopback admin API (HTTP/1.1 + JSON) through which a person, or the `enos-sim`
//! subcommands run from another terminal, inspect the cloud and send commands.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /devices` | | `[{productKey, deviceKey, online, enabled, activated}]` |
//! | `GET /devices/{pk}/{dk}` | | tags, attributes, measure points, events, reports (log, network status, connection state), stored files, firmware |
//! | `GET /devices/{pk}/{dk}/points` | | `{point: {value, time}}` |
//! | `GET /devices/{pk}/{dk}/record` | | the packet record |
//! | `POST /devices/{pk}/{dk}/services/{id}` | params | `{code, data, message}` |
//! | `POST /devices/{pk}/{dk}/points/set` | `{point: value}` | `{code, data, message}` |
//! | `POST /devices/{pk}/{dk}/points/get` | `[point]` | `{code, data, message}` |
//! | `POST /devices/{pk}/{dk}/traffic-control` | params | `{code, data, message}` |
//! | `POST /devices/{pk}/{dk}/ota` | firmware | `{code, ..}` or `{queued: true}` |
//! | `POST /devices/{pk}/{dk}/raw` | `"hex"` | `{reply: "hex"}` |
//! | `POST /devices/{pk}/{dk}/cut` | | `{cut: bool}` |
//! | `POST /devices/{pk}/{dk}/enable`, `/disable` | | `{}` |
//! | `POST /gateways/{pk}/{dk}/sub-devices/{enable,disable,delete}` | `[{productKey, deviceKey}]` | `{code, ..}` |
//!
//! Errors: 400 bad request, 404 unknown route or device, 409 device offline, 504 no
//! reply in time; the body is `{"error": "..."}`.
//!
//! # Who may call it
//!
//! It listens on loopback only, and a web page in the developer's browser can reach
//! loopback too, so every request must also:
//!
//! * carry the token the server made at start (`authorization: Bearer TOKEN`), else 401.
//!   `enos-sim serve` prints it once and writes it to a file only its owner can read
//!   ([`token_file`]); the subcommands read it from there;
//! * name the listener in `host` (`127.0.0.1:PORT`, `localhost:PORT` or `[::1]:PORT`),
//!   and in `origin` when it has one, else 403: a page of another site, or one reached
//!   through a rebound DNS name, is refused;
//! * send a body only as `application/json`, else 415;
//! * arrive whole within the request timeout (10 s), else 408.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use enos_proto::ops::Firmware;
use enos_proto::{DeviceKeys, Secret};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{CommandError, CommandResponse, Direction, Sim};

const MAX_BODY: usize = 1 << 20;
const MAX_HEAD: usize = 64 * 1024;

/// How the admin API admits requests.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    /// The token every request must carry.
    pub token: Secret,
    /// How long a request may take to arrive whole (default 10 s).
    pub request_timeout: Duration,
}

impl AdminOptions {
    /// Options with a new random token.
    ///
    /// # Errors
    ///
    /// When the operating system's random source fails.
    pub fn new() -> std::io::Result<Self> {
        Ok(AdminOptions { token: new_token()?, request_timeout: Duration::from_secs(10) })
    }
}

/// A new token: 32 bytes from the operating system's random source, as hex.
///
/// # Errors
///
/// When that source fails.
pub fn new_token() -> std::io::Result<Secret> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut b).map_err(|_| std::io::Error::other("no random source"))?;
    Ok(Secret::new(hex(&b)))
}

/// Where `enos-sim serve` writes the token of the admin API on `port`, and where the
/// subcommands look for it: `$XDG_RUNTIME_DIR/enos-sim/admin-PORT.token`, or
/// `$HOME/.enos-sim/admin-PORT.token` without a runtime directory (`./.enos-sim/` without
/// a home either: never a folder shared with other users, such as `/tmp`).
pub fn token_file(port: u16) -> PathBuf {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => PathBuf::from(d).join("enos-sim"),
        None => std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from).join(".enos-sim"),
    };
    dir.join(format!("admin-{port}.token"))
}

/// Writes `token` to `path`, readable and writable by its owner only (its folder, when
/// made here, is the owner's only too).
///
/// # Errors
///
/// The file system's.
pub fn write_token(path: &Path, token: &Secret) -> std::io::Result<()> {
    #[cfg(unix)]
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        b.mode(0o700);
        b.create(dir)?;
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    o.mode(0o600);
    let mut f = o.open(path)?;
    // A file that was there before keeps its mode through `open`: narrow it.
    #[cfg(unix)]
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(token.expose().as_bytes())
}

/// Reads a token written by [`write_token`].
///
/// # Errors
///
/// The file system's.
pub fn read_token(path: &Path) -> std::io::Result<Secret> {
    Ok(Secret::new(std::fs::read_to_string(path)?.trim().to_owned()))
}

/// Serves the admin API on `addr` (loopback only); returns the bound address.
///
/// # Errors
///
/// The bind error, or `InvalidInput` for an address that is not loopback.
pub async fn serve(sim: Sim, addr: SocketAddr, options: AdminOptions) -> std::io::Result<SocketAddr> {
    if !addr.ip().is_loopback() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the admin API listens on loopback only"));
    }
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let port = bound.port();
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let (sim, options) = (sim.clone(), options.clone());
                    tokio::spawn(async move {
                        let _ = handle(sim, stream, port, &options).await;
                    });
                }
                // Out of descriptors, say: wait instead of spinning on the error.
                Err(e) => {
                    tracing::warn!(error = %e, "admin API: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok(bound)
}

/// A request as read: method, path, the headers that matter, the body.
struct Request {
    method: String,
    path: String,
    host: Option<String>,
    origin: Option<String>,
    content_type: Option<String>,
    authorization: Option<String>,
    body: Vec<u8>,
}

/// Reads one request; `Err` with the status to answer.
async fn read_request(s: &mut TcpStream) -> Result<Option<Request>, (u16, &'static str)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = s.read(&mut chunk).await.map_err(|_| (400, "read failed"))?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err((400, "header too large"));
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let (method, path) = (first.next().unwrap_or_default().to_owned(), first.next().unwrap_or_default().to_owned());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let len = match header("content-length") {
        Some(v) => v.parse::<usize>().map_err(|_| (400, "bad content-length"))?,
        None => 0,
    };
    if len > MAX_BODY {
        return Err((400, "body too large"));
    }
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.map_err(|_| (400, "read failed"))?;
        if n == 0 {
            return Err((400, "body cut short"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf.get(head_end..head_end + len).unwrap_or_default().to_vec();
    Ok(Some(Request {
        method,
        path,
        host: header("host"),
        origin: header("origin"),
        content_type: header("content-type"),
        authorization: header("authorization"),
        body,
    }))
}

/// Why a request is refused before it is routed, if it is.
fn refusal(r: &Request, port: u16, token: &Secret) -> Option<(u16, &'static str)> {
    use subtle::ConstantTimeEq;
    let ours = |value: &str, scheme: &str| {
        ["127.0.0.1", "localhost", "[::1]"].iter().any(|h| value.eq_ignore_ascii_case(&format!("{scheme}{h}:{port}")))
    };
    if !r.host.as_deref().is_some_and(|h| ours(h, "")) {
        return Some((403, "host is not this loopback listener"));
    }
    if r.origin.as_deref().is_some_and(|o| !ours(o, "http://")) {
        return Some((403, "requests from web pages of other origins are refused"));
    }
    let expected = format!("Bearer {}", token.expose());
    let given = r.authorization.as_deref().unwrap_or_default();
    if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        return Some((401, "missing or wrong token (authorization: Bearer TOKEN)"));
    }
    let json = r
        .content_type
        .as_deref()
        .is_some_and(|t| t.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if !r.body.is_empty() && !json {
        return Some((415, "a body must be application/json"));
    }
    None
}

async fn handle(sim: Sim, mut s: TcpStream, port: u16, options: &AdminOptions) -> std::io::Result<()> {
    let request = match tokio::time::timeout(options.request_timeout, read_request(&mut s)).await {
        Err(_) => return respond(&mut s, 408, &json!({"error": "request not received in time"})).await,
        Ok(Err((status, why))) => return respond(&mut s, status, &json!({"error": why})).await,
        Ok(Ok(None)) => return Ok(()),
        Ok(Ok(Some(r))) => r,
    };
    if let Some((status, why)) = refusal(&request, port, &options.token) {
        return respond(&mut s, status, &json!({"error": why})).await;
    }
    let (status, value) = route(&sim, &request.method, &request.path, &request.body).await;
    respond(&mut s, status, &value).await
}

async fn respond(s: &mut TcpStream, status: u16, v: &Value) -> std::io::Result<()> {
    let body = v.to_string();
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        415 => "Unsupported Media Type",
        _ => "Gateway Timeout",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    s.shutdown().await
}

fn err(status: u16, msg: impl std::fmt::Display) -> (u16, Value) {
    (status, json!({"error": msg.to_string()}))
}

fn command(r: Result<CommandResponse, CommandError>) -> (u16, Value) {
    match r {
        Ok(c) => (200, json!({"code": c.code, "data": c.data, "message": c.message})),
        Err(e @ CommandError::Offline(_)) => err(409, e),
        Err(e @ CommandError::TimedOut(_)) => err(504, e),
        Err(e @ CommandError::NotSubDevices { .. }) => err(404, e),
        Err(e) => err(409, e),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

async fn route(sim: &Sim, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let json_body = || -> Result<Value, (u16, Value)> {
        if body.is_empty() {
            Ok(json!({}))
        } else {
            serde_json::from_slice(body).map_err(|e| err(400, format!("body is not JSON: {e}")))
        }
    };
    let keys = |pk: &str, dk: &str| DeviceKeys::new(pk, dk).map_err(|e| err(400, e));
    macro_rules! tryv {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => return e,
            }
        };
    }
    match (method, parts.as_slice()) {
        ("GET", ["devices"]) => {
            let list: Vec<Value> = sim.with_cloud(|c| {
                let mut devices: Vec<&crate::registry::Device> = c.registry.devices.values().collect();
                devices.sort_by(|a, b| a.keys.cmp(&b.keys));
                devices
                    .into_iter()
                    .map(|d| {
                        json!({"productKey": d.keys.product_key(), "deviceKey": d.keys.device_key(),
                               "online": c.is_online(&d.keys), "enabled": d.enabled, "activated": d.activated})
                    })
                    .collect()
            });
            (200, Value::Array(list))
        }
        ("GET", ["devices", pk, dk, rest @ ..]) => {
            let k = tryv!(keys(pk, dk));
            let Some(d) = sim.device(&k) else { return err(404, format!("no device {k}")) };
            let points: serde_json::Map<String, Value> = d
                .measurepoints
                .iter()
                .map(|(p, s)| (p.to_string(), json!({"value": s.value, "time": s.time})))
                .collect();
            match rest {
                [] => (
                    200,
                    json!({"productKey": pk, "deviceKey": dk, "assetId": d.asset_id, "online": sim.is_online(&k),
                       "enabled": d.enabled, "activated": d.activated, "tags": d.tags, "attributes": d.attributes,
                       "measurepoints": points, "events": d.events.iter().map(|(e, p, t)| json!({"event": e, "params": p, "time": t})).collect::<Vec<_>>(),
                       "reports": d.reports.iter().map(|(m, p, t)| json!({"method": m, "params": p, "time": t})).collect::<Vec<_>>(),
                       "files": sim.files(&k).into_iter().map(|(uri, category, bytes)| json!({"uri": uri, "category": category.name(), "bytes": bytes})).collect::<Vec<_>>(),
                       "firmwareVersion": d.firmware_version}),
                ),
                ["points"] => (200, Value::Object(points)),
                ["record"] => {
                    let rec: Vec<Value> = sim
                        .record(&k)
                        .iter()
                        .map(|r| {
                            json!({"at": r.at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
                               "direction": if r.direction == Direction::In { "in" } else { "out" },
                               "kind": r.kind.to_string(), "topic": r.topic,
                               "payload": String::from_utf8_lossy(&r.payload)})
                        })
                        .collect();
                    (200, Value::Array(rec))
                }
                _ => err(404, "unknown route"),
            }
        }
        ("POST", ["devices", pk, dk, rest @ ..]) => {
            let k = tryv!(keys(pk, dk));
            if sim.device(&k).is_none() {
                return err(404, format!("no device {k}"));
            }
            match rest {
                ["services", id] => command(sim.invoke_service(&k, id, tryv!(json_body())).await),
                ["points", "set"] => command(sim.set_measurepoints(&k, tryv!(json_body())).await),
                ["traffic-control"] => command(sim.traffic_control(&k, tryv!(json_body())).await),
                ["points", "get"] => {
                    let ids: Vec<String> = tryv!(serde_json::from_value(tryv!(json_body())).map_err(|e| err(400, e)));
                    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                    command(sim.get_measurepoints(&k, &ids).await)
                }
                ["ota"] => {
                    let fw: Firmware = tryv!(serde_json::from_value(tryv!(json_body())).map_err(|e| err(400, e)));
                    match sim.push_ota(&k, fw).await {
                        Ok(None) => (200, json!({"queued": true})),
                        Ok(Some(r)) => command(Ok(r)),
                        Err(e) => command(Err(e)),
                    }
                }
                ["raw"] => {
                    let text: String = tryv!(serde_json::from_value(tryv!(json_body())).map_err(|e| err(400, e)));
                    let Some(bytes) = unhex(&text) else { return err(400, "body must be a hex string") };
                    match sim.send_down_raw(&k, Bytes::from(bytes)).await {
                        Ok(reply) => (200, json!({"reply": hex(&reply)})),
                        Err(e) => command(Err(e)),
                    }
                }
                ["cut"] => (200, json!({"cut": sim.cut(&k)})),
                ["disable"] => {
                    sim.disable_device(&k);
                    (200, json!({}))
                }
                ["enable"] => {
                    sim.enable_device(&k);
                    (200, json!({}))
                }
                _ => err(404, "unknown route"),
            }
        }
        ("POST", ["gateways", pk, dk, "sub-devices", what]) => {
            let g = tryv!(keys(pk, dk));
            let subs: Vec<DeviceKeys> = tryv!(serde_json::from_value(tryv!(json_body())).map_err(|e| err(400, e)));
            match *what {
                "enable" => command(sim.enable_sub_devices(&g, &subs).await),
                "disable" => command(sim.disable_sub_devices(&g, &subs).await),
                "delete" => command(sim.delete_sub_devices(&g, &subs).await),
                _ => err(404, "unknown route"),
            }
        }
        _ => err(404, "unknown route"),
    }
}

/// Calls the admin API at `addr` with its token (blocking): the status and the JSON
/// body.
///
/// # Errors
///
/// When the server cannot be reached or answers something that is not HTTP + JSON.
pub fn call(
    addr: SocketAddr,
    token: &Secret,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        token.expose(),
        body.len()
    )?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response");
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let value = serde_json::from_str(body).map_err(|_| bad())?;
    Ok((status, value))
}
