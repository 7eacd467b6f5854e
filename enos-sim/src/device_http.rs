//! The device HTTP endpoint (extensions spec E1, E10), served with hyper beside MQTT.
//!
//! `POST /auth/{pk}/{dk}` checks the login's signature (any case; `lifetime` a number or a
//! string, 300,000 ms when absent) and opens a session; `POST /topic{T}?sessionId=..` runs
//! the same logic as an MQTT PUBLISH on `T` and answers with what MQTT would deliver on
//! `T_reply`. A session ends once `lifetime` passes without a request; a call on an ended
//! or unknown session is answered HTTP 401 `{"id","code":401,"message":"session invalid"}`.
//! Commands for a device logged in over HTTP wait for its next response, one per response,
//! in its `command-payload` and `topic` headers. A leading `//` in a path is read as `/`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::cloud::{ConnId, Outbound};
use crate::{lock, ConnHandle, ConnMsg, Direction, Inner};
use enos_proto::{DeviceKeys, PacketKind, Secret};

/// Largest request body read (a file post's parts included).
const MAX_BODY: usize = 101 * 1024 * 1024;
/// Commands that wait for a device's next response, at most.
const MAX_WAITING_COMMANDS: usize = 64;

struct Session {
    keys: DeviceKeys,
    conn: ConnId,
    lifetime: Duration,
    last: Instant,
    commands: mpsc::Receiver<ConnMsg>,
}

/// The HTTP sessions, by id.
#[derive(Default)]
pub(crate) struct Sessions {
    by_id: HashMap<String, Session>,
}

type Shared = Arc<Mutex<Sessions>>;

/// Serves the device HTTP endpoint on `listener` until the task is dropped.
pub(crate) async fn serve(inner: Arc<Inner>, listener: TcpListener) {
    let sessions: Shared = Arc::default();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let (inner, sessions) = (inner.clone(), sessions.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (inner, sessions) = (inner.clone(), sessions.clone());
                async move { Ok::<_, std::convert::Infallible>(handle(&inner, &sessions, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

fn bytes_response(body: Bytes) -> Response<Full<Bytes>> {
    Response::new(Full::new(body))
}

fn invalid_session(id: &str) -> Response<Full<Bytes>> {
    json_response(StatusCode::UNAUTHORIZED, &json!({"id": id, "code": 401, "message": "session invalid"}))
}

async fn handle(inner: &Arc<Inner>, sessions: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return json_response(StatusCode::PAYLOAD_TOO_LARGE, &json!({"code": 1008, "message": "too large"})),
    };
    let mut path = parts.uri.path();
    while path.starts_with("//") {
        path = &path[1..];
    }
    let query = parts.uri.query().unwrap_or_default();
    if parts.method != hyper::Method::POST {
        return json_response(StatusCode::NOT_FOUND, &json!({"code": 404, "message": "unknown route"}));
    }
    if let Some(rest) = path.strip_prefix("/auth/") {
        return login(inner, sessions, rest, &body);
    }
    if let Some(topic) = path.strip_prefix("/topic") {
        let session = query.split('&').find_map(|kv| kv.strip_prefix("sessionId=")).unwrap_or_default();
        return publish(inner, sessions, session, topic, body);
    }
    json_response(StatusCode::NOT_FOUND, &json!({"code": 404, "message": "unknown route"}))
}

/// `POST /auth/{pk}/{dk}`.
fn login(inner: &Arc<Inner>, sessions: &Shared, keys: &str, body: &[u8]) -> Response<Full<Bytes>> {
    let refused = |code: i64, message: &str| json_response(StatusCode::OK, &json!({"code": code, "message": message}));
    let Some(keys) = keys.split_once('/').and_then(|(pk, dk)| DeviceKeys::new(pk, dk).ok()) else {
        return refused(402, "device not found");
    };
    let Ok(body) = serde_json::from_slice::<Value>(body) else { return refused(400, "bad request") };
    let lifetime = match body.get("lifetime") {
        None => Some(enos_proto::http::DEFAULT_LIFETIME_MS),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        Some(_) => None,
    };
    let (Some(lifetime), Some(sign)) = (lifetime, body.get("sign").and_then(Value::as_str)) else {
        return refused(400, "bad request");
    };
    let secret: Option<Secret> = {
        let cloud = inner.cloud();
        match cloud.registry.devices.get(&keys) {
            Some(d) if d.enabled => d.secret.clone(),
            _ => return refused(402, "device not found"),
        }
    };
    let ok = secret.is_some_and(|s| {
        use subtle::ConstantTimeEq;
        let want = enos_proto::http::auth_sign(&keys, &s, lifetime);
        bool::from(want.as_bytes().ct_eq(sign.to_ascii_lowercase().as_bytes()))
    });
    if !ok {
        return refused(401, "auth failed");
    }
    let Some(id) = crate::registry::Registry::random_secret(16).map(|s| s.expose().to_owned()) else {
        return refused(500, "no session");
    };
    let conn = inner.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel(MAX_WAITING_COMMANDS);
    lock(&inner.conns).insert(conn, ConnHandle { tx, close: Arc::default() });
    inner.cloud().attach(conn, &keys);
    inner.record(&keys, Direction::In, PacketKind::Connect, None, Bytes::new());
    let session = Session { keys, conn, lifetime: Duration::from_millis(lifetime), last: Instant::now(), commands: rx };
    let mut s = lock(sessions);
    expire(inner, &mut s);
    s.by_id.insert(id.clone(), session);
    json_response(StatusCode::OK, &json!({"code": 200, "message": "success", "data": {"sessionId": id}}))
}

/// Ends the sessions whose lifetime passed without a request.
fn expire(inner: &Arc<Inner>, s: &mut Sessions) {
    let now = Instant::now();
    let gone: Vec<String> =
        s.by_id.iter().filter(|(_, v)| now.duration_since(v.last) >= v.lifetime).map(|(k, _)| k.clone()).collect();
    for id in gone {
        if let Some(v) = s.by_id.remove(&id) {
            end(inner, v.conn);
        }
    }
}

fn end(inner: &Arc<Inner>, conn: ConnId) {
    lock(&inner.conns).remove(&conn);
    inner.cloud().disconnect(conn);
}

/// `POST /topic{T}?sessionId=..`: the PUBLISH on `T`, answered with its reply.
fn publish(inner: &Arc<Inner>, sessions: &Shared, session: &str, topic: &str, body: Bytes) -> Response<Full<Bytes>> {
    let id_of = |b: &[u8]| {
        serde_json::from_slice::<Value>(b).ok().and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned))
    };
    let (keys, conn, command) = {
        let mut s = lock(sessions);
        expire(inner, &mut s);
        let Some(v) = s.by_id.get_mut(session) else {
            return invalid_session(&id_of(&body).unwrap_or_default());
        };
        v.last = Instant::now();
        let command = match v.commands.try_recv() {
            Ok(ConnMsg::Publish(o)) => Some(o),
            _ => None,
        };
        (v.keys.clone(), v.conn, command)
    };
    inner.record(&keys, Direction::In, PacketKind::Publish, Some(topic), body.clone());
    let handled = inner.cloud().publish(conn, topic, &body, crate::unix_ms());
    if let Some((t, payload)) = handled.command_reply {
        inner.command_replied(&t, payload);
    }
    let reply_topic = format!("{topic}_reply");
    let reply = handled.replies.into_iter().find(|r| r.topic == reply_topic);
    let mut response = match reply {
        Some(r) => {
            inner.record(&keys, Direction::Out, PacketKind::Publish, Some(&r.topic), r.payload.clone());
            bytes_response(r.payload)
        }
        // A command's reply, or a topic that has none: an empty 200.
        None => bytes_response(Bytes::new()),
    };
    if let Some(Outbound { topic, payload }) = command {
        inner.record(&keys, Direction::Out, PacketKind::Publish, Some(&topic), payload.clone());
        let h = response.headers_mut();
        if let (Ok(p), Ok(t)) =
            (hyper::header::HeaderValue::from_bytes(&payload), hyper::header::HeaderValue::from_str(&topic))
        {
            h.insert(enos_proto::http::COMMAND_PAYLOAD_HEADER, p);
            h.insert(enos_proto::http::COMMAND_TOPIC_HEADER, t);
        }
    }
    response
}
