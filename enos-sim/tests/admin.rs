//! Who may call the admin API: its token, a loopback `host`, no foreign `origin`, JSON
//! bodies only, and requests that arrive in time.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use enos_proto::Secret;
use enos_sim::admin::{self, AdminOptions};
use enos_sim::registry::defaults::*;
use enos_sim::Sim;
use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

async fn start() -> (Sim, SocketAddr) {
    let sim = Sim::builder().start().await.unwrap();
    let options = AdminOptions { token: Secret::new(TOKEN), request_timeout: Duration::from_millis(300) };
    let addr = admin::serve(sim.clone(), "127.0.0.1:0".parse().unwrap(), options).await.unwrap();
    (sim, addr)
}

/// Sends `request` as is; the status and the JSON body of the answer.
async fn send(addr: SocketAddr, request: String) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await.expect("no answer").unwrap();
    let text = String::from_utf8(answer).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), serde_json::from_str(body).unwrap())
}

/// A request with these headers (each a whole `name: value` line) and body.
fn request(method: &str, path: &str, headers: &[String], body: &str) -> String {
    let mut r = format!("{method} {path} HTTP/1.1\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    format!("{r}content-length: {}\r\n\r\n{body}", body.len())
}

#[tokio::test]
async fn a_request_needs_the_token() {
    let (_sim, addr) = start().await;
    let host = format!("host: {addr}");
    let (status, body) = send(addr, request("GET", "/devices", std::slice::from_ref(&host), "")).await;
    assert_eq!(status, 401, "{body}");
    let wrong = "authorization: Bearer 0123456789abcdef0123456789abcdeX".to_owned();
    assert_eq!(send(addr, request("GET", "/devices", &[host.clone(), wrong], "")).await.0, 401);
    let right = format!("authorization: Bearer {TOKEN}");
    let (status, devices) = send(addr, request("GET", "/devices", &[host, right], "")).await;
    assert_eq!(status, 200);
    assert!(devices.as_array().is_some_and(|d| !d.is_empty()));
    // The client of the subcommands (a blocking one) sends it.
    let call = |token: &'static str| {
        tokio::task::spawn_blocking(move || admin::call(addr, &Secret::new(token), "GET", "/devices", None).unwrap().0)
    };
    assert_eq!(call(TOKEN).await.unwrap(), 200);
    assert_eq!(call("guess").await.unwrap(), 401);
}

#[tokio::test]
async fn other_hosts_and_origins_are_refused_even_with_the_token() {
    let (_sim, addr) = start().await;
    let auth = format!("authorization: Bearer {TOKEN}");
    let port = addr.port();
    for host in [format!("host: rebound.example:{port}"), format!("host: 127.0.0.1:{}", port + 1), String::new()] {
        let headers: Vec<String> = [host.clone(), auth.clone()].into_iter().filter(|h| !h.is_empty()).collect();
        let (status, body) = send(addr, request("GET", "/devices", &headers, "")).await;
        assert_eq!(status, 403, "{host:?}: {body}");
    }
    for origin in ["https://evil.example", "null", "http://127.0.0.1:1"] {
        let headers = [format!("host: localhost:{port}"), auth.clone(), format!("origin: {origin}")];
        let (status, body) = send(addr, request("POST", "/devices/demo_pk/demo_device/cut", &headers, "")).await;
        assert_eq!(status, 403, "{origin}: {body}");
    }
    // Its own origin, as a page it served would send: fine.
    let headers = [format!("host: localhost:{port}"), auth, format!("origin: http://localhost:{port}")];
    assert_eq!(send(addr, request("GET", "/devices", &headers, "")).await.0, 200);
}

#[tokio::test]
async fn a_body_must_be_json_and_arrive_in_time() {
    let (_sim, addr) = start().await;
    let base = vec![format!("host: {addr}"), format!("authorization: Bearer {TOKEN}")];
    let path = "/devices/demo_pk/demo_device/services/reset";
    // A form post, as an HTML form would send it across sites: refused before it is read.
    let mut form = base.clone();
    form.push("content-type: application/x-www-form-urlencoded".into());
    assert_eq!(send(addr, request("POST", path, &form, "a=b")).await.0, 415);
    let mut plain = base.clone();
    plain.push("content-type: text/plain".into());
    assert_eq!(send(addr, request("POST", path, &plain, "{}")).await.0, 415);
    // JSON gets through to the route (the device is offline: 409).
    let mut json_body = base.clone();
    json_body.push("content-type: application/json; charset=utf-8".into());
    assert_eq!(send(addr, request("POST", path, &json_body, &json!({}).to_string())).await.0, 409);
    // A body that stops half-way is answered 408 once its time is up.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = request("POST", path, &json_body, "{}").replace("content-length: 2", "content-length: 20");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await.expect("still waiting").unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"), "{}", String::from_utf8_lossy(&answer));
    // A head that stops half-way ends the connection once its time is up.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /devices HTTP/1.1\r\nhost: ").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await.expect("still waiting").unwrap();
}

#[tokio::test]
async fn the_console_s_assets_need_no_token_but_this_listener_s_host_and_hold_no_data() {
    let (_sim, addr) = start().await;
    for (path, kind) in [("/", "text/html"), ("/console.js", "text/javascript"), ("/console.css", "text/css")] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request("GET", path, &[format!("host: {addr}")], "").as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.unwrap();
        let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 200"), "{path}: {text}");
        assert!(text.contains(&format!("content-type: {kind}")), "{path}: {text}");
        assert!(text.contains("content-security-policy: default-src 'none'"), "{path}: {text}");
        assert!(!text.contains(TOKEN), "{path}");
        // A page of a rebound name gets nothing.
        let (status, _) =
            send(addr, request("GET", path, &[format!("host: rebound.example:{}", addr.port())], "")).await;
        assert_eq!(status, 403, "{path}");
    }
    // Every script and style the page loads is its own.
    let (status, _) = send(addr, request("GET", "/other.js", &[format!("host: {addr}")], "")).await;
    assert_eq!(status, 401, "anything else is the API's, and needs the token");
}

#[tokio::test]
async fn the_live_stream_tells_of_a_change_and_needs_the_token() {
    use enos_proto::ops::MeasurepointPost;
    let (sim, addr) = start().await;
    let host = format!("host: {addr}");
    assert_eq!(send(addr, request("GET", "/live", std::slice::from_ref(&host), "")).await.0, 401);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = format!("authorization: Bearer {TOKEN}");
    s.write_all(request("GET", "/live", &[host, auth], "").as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    // Reads until `pred` holds of what came so far.
    async fn until(s: &mut tokio::net::TcpStream, seen: &mut String, buf: &mut [u8], pred: impl Fn(&str) -> bool) {
        while !pred(seen) {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(buf)).await.expect("no event").unwrap();
            assert!(n > 0, "stream ended: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    until(&mut s, &mut seen, &mut buf, |t| t.contains("event: change")).await;
    assert!(seen.to_ascii_lowercase().contains("content-type: text/event-stream"), "{seen}");
    let first = seen.matches("event: change").count();
    // A device posts: the stream says so.
    let device = TestDevice::connect(sim.tcp_addr().unwrap(), config(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET), None)
        .await
        .unwrap();
    assert_eq!(device.json(MeasurepointPost::new(json!({"temp": 1.5}))).await.0, 200);
    until(&mut s, &mut seen, &mut buf, |t| t.matches("event: change").count() > first).await;
}

#[tokio::test]
async fn devices_name_their_gateway_and_a_gateway_its_sub_devices() {
    let mut registry = enos_sim::registry::Registry::builtin();
    let gateway = keys(GATEWAY_PRODUCT, GATEWAY);
    let subs = [keys(SUB_PRODUCT, SUB_DEVICE_1), keys(SUB_PRODUCT, SUB_DEVICE_2)];
    registry.topology.insert(gateway, subs.iter().cloned().collect());
    let sim = Sim::builder().registry(registry).start().await.unwrap();
    let options = AdminOptions { token: Secret::new(TOKEN), request_timeout: Duration::from_millis(300) };
    let addr = admin::serve(sim.clone(), "127.0.0.1:0".parse().unwrap(), options).await.unwrap();
    let headers = [format!("host: {addr}"), format!("authorization: Bearer {TOKEN}")];
    let (status, list) = send(addr, request("GET", "/devices", &headers, "")).await;
    assert_eq!(status, 200);
    let find = |dk: &str| list.as_array().unwrap().iter().find(|d| d["deviceKey"] == dk).cloned().unwrap();
    assert_eq!(find(GATEWAY)["subDevices"], 2);
    assert_eq!(find(GATEWAY)["gateway"], Value::Null);
    assert_eq!(find(SUB_DEVICE_1)["gateway"], format!("{GATEWAY_PRODUCT}/{GATEWAY}"));
    assert_eq!(find(DEVICE)["gateway"], Value::Null);
    let (status, gw) = send(addr, request("GET", &format!("/devices/{GATEWAY_PRODUCT}/{GATEWAY}"), &headers, "")).await;
    assert_eq!(status, 200);
    assert_eq!(
        gw["subDevices"],
        json!([format!("{SUB_PRODUCT}/{SUB_DEVICE_1}"), format!("{SUB_PRODUCT}/{SUB_DEVICE_2}")])
    );
}
