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

/// Serves the device HTTP endpoint on `listener` (over TLS with `tls`) until the task is
/// dropped.
pub(crate) async fn serve(
    inner: Arc<Inner>,
    listener: TcpListener,
    tls: Option<Arc<enos_proto::tls::rustls::ServerConfig>>,
) {
    let sessions: Shared = Arc::default();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let (inner, sessions, acceptor) = (inner.clone(), sessions.clone(), acceptor.clone());
        tokio::spawn(async move {
            let handshake_timeout = inner.connect_timeout;
            let service = hyper::service::service_fn(move |req| {
                let (inner, sessions) = (inner.clone(), sessions.clone());
                async move { Ok::<_, std::convert::Infallible>(handle(&inner, &sessions, req).await) }
            });
            let http = hyper::server::conn::http1::Builder::new();
            match acceptor {
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
                Some(a) => {
                    let handshake = tokio::time::timeout(handshake_timeout, a.accept(stream)).await;
                    if let Ok(Ok(tls)) = handshake {
                        let _ = http.serve_connection(TokioIo::new(tls), service).await;
                    }
                }
            }
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
    let param = |name: &str| {
        query.split('&').find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('='))).unwrap_or_default()
    };
    let post = parts.method == hyper::Method::POST;
    if let (false, Some(token)) = (post, path.strip_prefix("/files/")) {
        // A direct download URL: no session.
        let found = lock(&inner.files).by_token(token);
        let range = parts.headers.get(hyper::header::RANGE).and_then(|h| h.to_str().ok());
        return match found {
            Some(bytes) => ranged(bytes, range),
            None => not_found(),
        };
    }
    if let (true, Some(rest)) = (post, path.strip_prefix("/auth/")) {
        return login(inner, sessions, rest, &body);
    }
    if let (true, Some(topic)) = (post, path.strip_prefix("/topic")) {
        return publish(inner, sessions, param("sessionId"), topic, body);
    }
    if let Some(rest) = path.strip_prefix("/multipart") {
        let Some((keys, conn, command)) = session_of(inner, sessions, param("sessionId")) else {
            return invalid_session("");
        };
        let mut response =
            if let Some(op) = rest.strip_prefix(&format!("/sys/{}/{}/file/", keys.product_key(), keys.device_key())) {
                // `fileUrl` is the older pages' spelling (spec C7).
                let uri = match param("fileUri") {
                    "" => param("fileUrl"),
                    u => u,
                };
                let host = parts.headers.get(hyper::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
                let range = parts.headers.get(hyper::header::RANGE).and_then(|h| h.to_str().ok());
                file_op(inner, &keys, op, post, uri, param("category"), range, host)
            } else if post {
                multipart_post(inner, &keys, conn, rest, &parts.headers, &body)
            } else {
                not_found()
            };
        attach_command(inner, &keys, &mut response, command);
        return response;
    }
    json_response(StatusCode::NOT_FOUND, &json!({"code": 404, "message": "unknown route"}))
}

fn not_found() -> Response<Full<Bytes>> {
    let mut r = bytes_response(Bytes::new());
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}

/// The session `id` names, kept alive, with a command waiting for its device.
fn session_of(inner: &Arc<Inner>, sessions: &Shared, id: &str) -> Option<(DeviceKeys, ConnId, Option<Outbound>)> {
    let mut s = lock(sessions);
    expire(inner, &mut s);
    let v = s.by_id.get_mut(id)?;
    v.last = Instant::now();
    let command = match v.commands.try_recv() {
        Ok(ConnMsg::Publish(o)) => Some(o),
        _ => None,
    };
    Some((v.keys.clone(), v.conn, command))
}

/// Puts a waiting command in a response's headers.
fn attach_command(
    inner: &Arc<Inner>,
    keys: &DeviceKeys,
    response: &mut Response<Full<Bytes>>,
    command: Option<Outbound>,
) {
    if let Some(Outbound { topic, payload }) = command {
        inner.record(keys, Direction::Out, PacketKind::Publish, Some(&topic), payload.clone());
        let h = response.headers_mut();
        if let (Ok(p), Ok(t)) =
            (hyper::header::HeaderValue::from_bytes(&payload), hyper::header::HeaderValue::from_str(&topic))
        {
            h.insert(enos_proto::http::COMMAND_PAYLOAD_HEADER, p);
            h.insert(enos_proto::http::COMMAND_TOPIC_HEADER, t);
        }
    }
}

/// Download, download URL and delete of a stored file of the session's device (E2.3-E2.5).
#[allow(clippy::too_many_arguments)]
fn file_op(
    inner: &Arc<Inner>,
    keys: &DeviceKeys,
    op: &str,
    post: bool,
    uri: &str,
    category: &str,
    range: Option<&str>,
    host: &str,
) -> Response<Full<Bytes>> {
    let mut files = lock(&inner.files);
    match (op, post) {
        ("delete", true) => match files.remove(keys, uri) {
            true => json_response(StatusCode::OK, &json!({"code": 200, "message": "success", "data": {}})),
            false => not_found(),
        },
        ("download" | "download/url", false) => {
            let Some((cat, bytes)) = files.get(keys, uri).filter(|(c, _)| c.name() == category) else {
                return not_found();
            };
            let _ = cat;
            if op == "download/url" {
                let token = files.token(keys, uri);
                return json_response(
                    StatusCode::OK,
                    &json!({"code": 200, "message": "success", "data": format!("http://{host}/files/{token}")}),
                );
            }
            drop(files);
            ranged(bytes, range)
        }
        _ => not_found(),
    }
}

/// The whole file, or the single range asked for (RFC 7233): 206, or 416 when it cannot
/// be satisfied. `Content-Length` is always sent.
fn ranged(bytes: Bytes, range: Option<&str>) -> Response<Full<Bytes>> {
    let total = bytes.len() as u64;
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")).filter(|s| !s.contains(',')) else {
        let mut r = bytes_response(bytes);
        r.headers_mut().insert(hyper::header::ACCEPT_RANGES, hyper::header::HeaderValue::from_static("bytes"));
        return r;
    };
    let span = spec.split_once('-').and_then(|(s, e)| match (s.trim(), e.trim()) {
        ("", n) => {
            let n = n.parse::<u64>().ok().filter(|n| *n > 0)?;
            Some((total.saturating_sub(n), total.checked_sub(1)?))
        }
        (s, "") => Some((s.parse().ok()?, total.checked_sub(1)?)),
        (s, e) => Some((s.parse().ok()?, e.parse::<u64>().ok()?.min(total.checked_sub(1)?))),
    });
    match span {
        Some((start, end)) if start <= end && start < total => {
            let body = bytes.slice(start as usize..=end as usize);
            let mut r = bytes_response(body);
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            let h = r.headers_mut();
            if let Ok(v) = hyper::header::HeaderValue::from_str(&format!("bytes {start}-{end}/{total}")) {
                h.insert(hyper::header::CONTENT_RANGE, v);
            }
            h.insert(hyper::header::ACCEPT_RANGES, hyper::header::HeaderValue::from_static("bytes"));
            r
        }
        _ => {
            let mut r = bytes_response(Bytes::new());
            *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            if let Ok(v) = hyper::header::HeaderValue::from_str(&format!("bytes */{total}")) {
                r.headers_mut().insert(hyper::header::CONTENT_RANGE, v);
            }
            r
        }
    }
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
    inner.touched();
}

/// `POST /topic{T}?sessionId=..`: the PUBLISH on `T`, answered with its reply.
fn publish(inner: &Arc<Inner>, sessions: &Shared, session: &str, topic: &str, body: Bytes) -> Response<Full<Bytes>> {
    let Some((keys, conn, command)) = session_of(inner, sessions, session) else {
        let id = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned));
        return invalid_session(&id.unwrap_or_default());
    };
    let mut response = run_publish(inner, &keys, conn, topic, body);
    attach_command(inner, &keys, &mut response, command);
    response
}

/// Runs a PUBLISH on `topic` as the session's connection: its reply's payload, or an
/// empty 200 for a topic that has no reply (a command's reply).
fn run_publish(inner: &Arc<Inner>, keys: &DeviceKeys, conn: ConnId, topic: &str, body: Bytes) -> Response<Full<Bytes>> {
    inner.record(keys, Direction::In, PacketKind::Publish, Some(topic), body.clone());
    let handled = inner.handle_publish(conn, topic, &body);
    let reply_topic = format!("{topic}_reply");
    match handled.replies.into_iter().find(|r| r.topic == reply_topic) {
        Some(r) => {
            inner.record(keys, Direction::Out, PacketKind::Publish, Some(&r.topic), r.payload.clone());
            bytes_response(r.payload)
        }
        None => bytes_response(Bytes::new()),
    }
}

/// A measure point post with files (E2.2): every file's part present, its MD5 and length
/// as the request says (else 1220), every `local://` reference with a part (else 1206),
/// the request part at most 512 KiB and each file at most 100 MB (else 1008). The files
/// are stored as `enos-connect://{fileName}`, and the points posted with those URIs.
fn multipart_post(
    inner: &Arc<Inner>,
    keys: &DeviceKeys,
    conn: ConnId,
    topic: &str,
    headers: &hyper::HeaderMap,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let reply = |id: &str, code: i64, message: &str| {
        let mut v = json!({"id": id, "code": code, "data": {}});
        if !message.is_empty() {
            v["message"] = json!(message);
        }
        json_response(StatusCode::OK, &v)
    };
    let boundary = headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').find_map(|p| p.trim().strip_prefix("boundary=")))
        .map(|b| b.trim_matches('"').to_owned());
    let Some(parts) = boundary.as_deref().and_then(|b| split_multipart(body, b)) else {
        return reply("", 1220, "Payload format error");
    };
    let Some((first, files)) = parts.split_first().filter(|(p, _)| p.name == "enos-message") else {
        return reply("", 1220, "Payload format error");
    };
    if first.body.len() > enos_proto::http::MAX_MESSAGE_PART_BYTES {
        return reply("", 1008, "Msg size is too large, discard the message");
    }
    let Ok(mut message) = serde_json::from_slice::<Value>(first.body) else {
        return reply("", 1220, "Payload format error");
    };
    let id = message.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
    let meta = message.as_object_mut().and_then(|m| m.remove("files")).unwrap_or(Value::Null);
    for f in files {
        if f.body.len() as u64 > enos_proto::http::MAX_FILE_BYTES {
            return reply(&id, 1008, "File size is too large");
        }
        let Some(m) = meta.get(&f.filename) else {
            return reply(&id, 1220, "Payload format error: a file not in files");
        };
        let md5 = md5_hex(f.body);
        let length = m.get("fileLength").and_then(Value::as_str).and_then(|l| l.parse::<usize>().ok());
        if m.get("md5").and_then(Value::as_str) != Some(md5.as_str())
            || f.content_md5.as_deref().is_some_and(|h| !h.eq_ignore_ascii_case(&md5))
            || length != Some(f.body.len())
        {
            return reply(&id, 1220, "Payload format error: a file's md5 or length");
        }
    }
    // Every local:// reference names a part; each becomes its stored URI.
    let mut missing = false;
    if let Some(points) = message.pointer_mut("/params/measurepoints").and_then(Value::as_object_mut) {
        for v in points.values_mut() {
            let mut fix = |v: &mut Value| {
                if let Some(name) = v.as_str().and_then(|s| s.strip_prefix("local://")) {
                    if files.iter().any(|f| f.filename == name) {
                        *v = Value::String(format!("enos-connect://{name}"));
                    } else {
                        missing = true;
                    }
                }
            };
            match v {
                Value::Object(members) => members.values_mut().for_each(&mut fix),
                v => fix(v),
            }
        }
    }
    if missing {
        return reply(&id, 1206, "A local file reference has no file part");
    }
    {
        let mut store = lock(&inner.files);
        for f in files {
            let uri = format!("enos-connect://{}", f.filename);
            if let Err(e) =
                store.put(keys, &uri, enos_proto::http::FileCategory::Feature, Bytes::copy_from_slice(f.body))
            {
                return reply(&id, 1008, &e);
            }
        }
    }
    run_publish(inner, keys, conn, topic, Bytes::from(message.to_string()))
}

struct Part<'a> {
    name: String,
    filename: String,
    content_md5: Option<String>,
    body: &'a [u8],
}

/// The parts of a `multipart/form-data` body.
fn split_multipart<'a>(body: &'a [u8], boundary: &str) -> Option<Vec<Part<'a>>> {
    let delimiter = format!("--{boundary}");
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let mut rest = &body[find(body, delimiter.as_bytes())? + delimiter.len()..];
    let mut parts = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Some(parts);
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let head_end = find(rest, b"\r\n\r\n")?;
        let head = std::str::from_utf8(&rest[..head_end]).ok()?;
        let after = &rest[head_end + 4..];
        let end = find(after, format!("\r\n{delimiter}").as_bytes())?;
        let (mut name, mut filename, mut content_md5) = (String::new(), String::new(), None);
        for line in head.split("\r\n") {
            let (k, v) = line.split_once(':')?;
            if k.eq_ignore_ascii_case("content-disposition") {
                for p in v.split(';').map(str::trim) {
                    if let Some(n) = p.strip_prefix("name=") {
                        name = n.trim_matches('"').to_owned();
                    } else if let Some(f) = p.strip_prefix("filename=") {
                        filename = f.trim_matches('"').replace("%22", "\"").replace("%0D", "\r").replace("%0A", "\n");
                    }
                }
            } else if k.eq_ignore_ascii_case("content-md5") {
                content_md5 = Some(v.trim().to_owned());
            }
        }
        parts.push(Part { name, filename, content_md5, body: &after[..end] });
        rest = &after[end + 2 + delimiter.len()..];
    }
}

fn md5_hex(b: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// Files by device and URI, bounded in all (256 MiB), with the tokens of direct URLs.
#[derive(Default)]
pub(crate) struct FileStore {
    files: HashMap<(DeviceKeys, String), (enos_proto::http::FileCategory, Bytes)>,
    bytes: usize,
    tokens: HashMap<String, (DeviceKeys, String)>,
}

/// Bytes the file store holds at most.
const MAX_STORED_BYTES: usize = 256 * 1024 * 1024;

impl FileStore {
    pub(crate) fn put(
        &mut self,
        keys: &DeviceKeys,
        uri: &str,
        category: enos_proto::http::FileCategory,
        bytes: Bytes,
    ) -> Result<(), String> {
        let old = self.files.get(&(keys.clone(), uri.to_owned())).map_or(0, |(_, b)| b.len());
        if self.bytes - old + bytes.len() > MAX_STORED_BYTES {
            return Err(format!("the file store is full ({MAX_STORED_BYTES} bytes)"));
        }
        self.bytes = self.bytes - old + bytes.len();
        self.files.insert((keys.clone(), uri.to_owned()), (category, bytes));
        Ok(())
    }

    pub(crate) fn list(&self, keys: &DeviceKeys) -> Vec<(String, enos_proto::http::FileCategory, usize)> {
        let mut v: Vec<_> = self
            .files
            .iter()
            .filter(|((k, _), _)| k == keys)
            .map(|((_, u), (c, b))| (u.clone(), *c, b.len()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    pub(crate) fn get(&self, keys: &DeviceKeys, uri: &str) -> Option<(enos_proto::http::FileCategory, Bytes)> {
        self.files.get(&(keys.clone(), uri.to_owned())).cloned()
    }

    pub(crate) fn remove(&mut self, keys: &DeviceKeys, uri: &str) -> bool {
        let key = (keys.clone(), uri.to_owned());
        self.tokens.retain(|_, v| *v != key);
        match self.files.remove(&key) {
            Some((_, b)) => {
                self.bytes -= b.len();
                true
            }
            None => false,
        }
    }

    pub(crate) fn token(&mut self, keys: &DeviceKeys, uri: &str) -> String {
        let token = crate::registry::Registry::random_secret(20).map(|s| s.expose().to_owned()).unwrap_or_default();
        self.tokens.insert(token.clone(), (keys.clone(), uri.to_owned()));
        token
    }

    pub(crate) fn by_token(&self, token: &str) -> Option<Bytes> {
        let (keys, uri) = self.tokens.get(token)?;
        self.get(keys, uri).map(|(_, b)| b)
    }
}
