//! The loopback admin API (HTTP/1.1 + JSON) through which a person, or the `enos-sim`
//! subcommands run from another terminal, inspect the cloud and send commands.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /devices` | | `[{productKey, deviceKey, online, enabled, activated}]` |
//! | `GET /devices/{pk}/{dk}` | | tags, attributes, measure points, events, firmware |
//! | `GET /devices/{pk}/{dk}/points` | | `{point: {value, time}}` |
//! | `GET /devices/{pk}/{dk}/record` | | the packet record |
//! | `POST /devices/{pk}/{dk}/services/{id}` | params | `{code, data, message}` |
//! | `POST /devices/{pk}/{dk}/points/set` | `{point: value}` | `{code, data, message}` |
//! | `POST /devices/{pk}/{dk}/points/get` | `[point]` | `{code, data, message}` |
//! | `POST /devices/{pk}/{dk}/ota` | firmware | `{code, ..}` or `{queued: true}` |
//! | `POST /devices/{pk}/{dk}/raw` | `"hex"` | `{reply: "hex"}` |
//! | `POST /devices/{pk}/{dk}/cut` | | `{cut: bool}` |
//! | `POST /devices/{pk}/{dk}/enable`, `/disable` | | `{}` |
//! | `POST /gateways/{pk}/{dk}/sub-devices/{enable,disable,delete}` | `[{productKey, deviceKey}]` | `{code, ..}` |
//!
//! Errors: 400 bad request, 404 unknown route or device, 409 device offline, 504 no
//! reply in time; the body is `{"error": "..."}`.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use enos_proto::ops::Firmware;
use enos_proto::DeviceKeys;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{CommandError, CommandResponse, Direction, Sim};

const MAX_BODY: usize = 1 << 20;

/// Serves the admin API on `addr` (loopback only); returns the bound address.
///
/// # Errors
///
/// The bind error, or `InvalidInput` for an address that is not loopback.
pub async fn serve(sim: Sim, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    if !addr.ip().is_loopback() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the admin API listens on loopback only"));
    }
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let sim = sim.clone();
            tokio::spawn(async move {
                let _ = handle(sim, stream).await;
            });
        }
    });
    Ok(bound)
}

async fn handle(sim: Sim, mut s: TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return respond(&mut s, 400, &json!({"error": "header too large"})).await;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let (method, path) = (first.next().unwrap_or_default().to_owned(), first.next().unwrap_or_default().to_owned());
    let len = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    if len > MAX_BODY {
        return respond(&mut s, 400, &json!({"error": "body too large"})).await;
    }
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf.get(head_end..head_end + len).unwrap_or_default();
    let (status, value) = route(&sim, &method, &path, body).await;
    respond(&mut s, status, &value).await
}

async fn respond(s: &mut TcpStream, status: u16, v: &Value) -> std::io::Result<()> {
    let body = v.to_string();
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
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

/// Calls the admin API at `addr` (blocking): the status and the JSON body.
///
/// # Errors
///
/// When the server cannot be reached or answers something that is not HTTP + JSON.
pub fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<(u16, Value)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
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
