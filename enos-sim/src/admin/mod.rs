//! The loopback admin API (HTTP/1.1 + JSON, served by hyper) through which a person, the
//! web console ([`console`](self#the-web-console)) or the `enos-sim` subcommands run from
//! another terminal inspect the cloud and send commands.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /devices` | | `[{productKey, deviceKey, online, enabled, activated, gateway, subDevices}]` (`gateway`: a sub-device's, as `pk/dk`; `subDevices`: a gateway's count) |
//! | `GET /devices/{pk}/{dk}` | | tags, attributes, measure points, their `history`, events, reports (log, network status, connection state), stored files, firmware, `gateway`, `subDevices` |
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
//! | `GET /live` | | server-sent events: `change` when something may have changed |
//! | `GET /`, `/console.js`, `/console.css` | | the web console (no token needed) |
//!
//! Errors: 400 bad request, 404 unknown route or device, 409 device offline, 503 too many
//! live streams, 504 no reply in time; the body is `{"error": "..."}`.
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
//! * arrive whole within the request timeout (10 s): a head that does not ends the
//!   connection, a body that does not is answered 408.
//!
//! The console's page, script and style sheet hold no data and need no token, but they
//! too are served to the listener's own names only.
//!
//! # The web console
//!
//! `http://127.0.0.1:PORT/#token=TOKEN` (printed by `enos-sim serve`) opens a page that
//! lists devices and gateways with their sub-devices and whether they are online; for a
//! device, each measure point with a chart of its values, events, reports, tags,
//! attributes and the packet record, refreshed as `GET /live` says something changed;
//! and forms that invoke a service, set measure points, push a firmware, cut the
//! connection, and enable or disable the device. Every asset is in the binary.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use enos_proto::ops::Firmware;
use enos_proto::{DeviceKeys, Secret};
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::{CommandError, CommandResponse, Direction, Sim};

mod client;
mod console;
mod live;

pub use client::{call, request};

/// The largest request body read.
const MAX_BODY: usize = 1 << 20;

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

/// Serves the admin API, and the web console, on `addr` (loopback only); returns the
/// bound address.
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
    let shared = Arc::new(Shared { sim, port: bound.port(), options, live: Arc::default() });
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let timeout = shared.options.request_timeout;
                        let service = hyper::service::service_fn(move |req| {
                            let shared = shared.clone();
                            async move { Ok::<_, std::convert::Infallible>(handle(&shared, req).await) }
                        });
                        // One request per connection: a head that does not arrive whole in
                        // time ends the connection.
                        let _ = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(timeout)
                            .keep_alive(false)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
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

/// What every request of one admin API shares.
struct Shared {
    sim: Sim,
    port: u16,
    options: AdminOptions,
    /// Live streams (`GET /live`) open now.
    live: Arc<AtomicUsize>,
}

/// A response's body: JSON or a page's asset, whole, or the live stream.
type Body = Either<Full<Bytes>, live::Stream>;

fn header(h: &HeaderMap, name: hyper::header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Whether `host` names this listener (`127.0.0.1`, `localhost` or `[::1]` at its port),
/// and `origin` too when the request has one.
fn loopback_host(h: &HeaderMap, port: u16) -> Result<(), (u16, &'static str)> {
    let ours = |value: &str, scheme: &str| {
        ["127.0.0.1", "localhost", "[::1]"].iter().any(|h| value.eq_ignore_ascii_case(&format!("{scheme}{h}:{port}")))
    };
    if !header(h, HOST).is_some_and(|v| ours(v, "")) {
        return Err((403, "host is not this loopback listener"));
    }
    if header(h, ORIGIN).is_some_and(|o| !ours(o, "http://")) {
        return Err((403, "requests from web pages of other origins are refused"));
    }
    Ok(())
}

/// Why a request for the API is refused before its body is read, if it is.
fn refusal(h: &HeaderMap, has_body: bool, port: u16, token: &Secret) -> Result<(), (u16, &'static str)> {
    use subtle::ConstantTimeEq;
    loopback_host(h, port)?;
    let expected = format!("Bearer {}", token.expose());
    let given = header(h, AUTHORIZATION).unwrap_or_default();
    if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        return Err((401, "missing or wrong token (authorization: Bearer TOKEN)"));
    }
    let json = header(h, CONTENT_TYPE)
        .is_some_and(|t| t.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if has_body && !json {
        return Err((415, "a body must be application/json"));
    }
    Ok(())
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    if parts.method == Method::GET {
        if let Some(asset) = console::asset(parts.uri.path()) {
            // The page and its code hold no data: they need no token (the page asks for
            // it), but they are served to this listener's own names only.
            return match loopback_host(&parts.headers, shared.port) {
                Ok(()) => asset.map(Either::Left),
                Err((status, why)) => respond(status, &json!({"error": why})),
            };
        }
    }
    let has_body = body.size_hint().upper() != Some(0);
    if let Err((status, why)) = refusal(&parts.headers, has_body, shared.port, &shared.options.token) {
        return respond(status, &json!({"error": why}));
    }
    let body = match tokio::time::timeout(shared.options.request_timeout, Limited::new(body, MAX_BODY).collect()).await
    {
        Err(_) => return respond(408, &json!({"error": "request not received in time"})),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return respond(400, &json!({"error": "body too large"}))
        }
        Ok(Err(_)) => return respond(400, &json!({"error": "body cut short"})),
        Ok(Ok(b)) => b.to_bytes(),
    };
    if parts.method == Method::GET && parts.uri.path() == "/live" {
        return live::open(&shared.sim, &shared.live)
            .unwrap_or_else(|(status, why)| respond(status, &json!({"error": why})));
    }
    let (status, value) = route(&shared.sim, parts.method.as_str(), parts.uri.path(), &body).await;
    respond(status, &value)
}

fn respond(status: u16, v: &Value) -> Response<Body> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(v.to_string()))));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
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

/// Each sub-device's gateway, for a whole list at once
/// ([`Registry::gateway_of`](crate::registry::Registry::gateway_of) finds one).
fn gateways(r: &crate::registry::Registry) -> std::collections::HashMap<&DeviceKeys, &DeviceKeys> {
    r.topology.iter().flat_map(|(g, subs)| subs.iter().map(move |s| (s, g))).collect()
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
                let gateway_of = gateways(&c.registry);
                let mut devices: Vec<&crate::registry::Device> = c.registry.devices.values().collect();
                devices.sort_by(|a, b| a.keys.cmp(&b.keys));
                devices
                    .into_iter()
                    .map(|d| {
                        json!({"productKey": d.keys.product_key(), "deviceKey": d.keys.device_key(),
                               "online": c.is_online(&d.keys), "enabled": d.enabled, "activated": d.activated,
                               "gateway": gateway_of.get(&d.keys).map(ToString::to_string),
                               "subDevices": c.registry.topology.get(&d.keys).map_or(0, |s| s.len())})
                    })
                    .collect()
            });
            (200, Value::Array(list))
        }
        ("GET", ["devices", pk, dk, rest @ ..]) => {
            let k = tryv!(keys(pk, dk));
            let Some(d) = sim.device(&k) else { return err(404, format!("no device {k}")) };
            let (gateway, mut subs) = sim.with_cloud(|c| {
                let subs: Vec<String> =
                    c.registry.topology.get(&k).map_or_else(Vec::new, |s| s.iter().map(ToString::to_string).collect());
                (c.registry.gateway_of(&k).map(ToString::to_string), subs)
            });
            subs.sort();
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
                       "history": d.history.iter().map(|(kind, p, s)| json!({"kind": kind, "point": p, "value": s.value, "time": s.time})).collect::<Vec<_>>(),
                       "gateway": gateway, "subDevices": subs,
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
