//! The web console in a real browser: `enos-sim serve` as a process, a device connected to
//! it, and headless Chromium driven through WebDriver (`chromedriver`, from Debian's
//! `chromium-driver`; `scripts/test.sh` installs it). The page must show the device
//! online, chart the values it posts as they come, and invoke a service with its button
//! and show the device's answer. A screenshot is written to
//! `target/tmp/enos-sim-console.png` (or `$ENOS_CONSOLE_SCREENSHOT`).
//!
//! WebDriver is JSON over HTTP: its few calls go through hyper's client, which the
//! simulator already uses.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use enos_proto::ops::MeasurepointPost;
use enos_proto::CommandKind;
use enos_sim::registry::defaults::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use support::*;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A chromedriver process on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    addr: SocketAddr,
    session: Option<String>,
    profile: std::path::PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// One WebDriver call: the answer's `value`, or the WebDriver error as text.
async fn webdriver(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()))))
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    conn.abort();
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{status}: {e}"))?;
    if status.is_success() {
        Ok(v["value"].clone())
    } else {
        Err(format!("{status}: {}", v["value"]))
    }
}

impl Driver {
    async fn start() -> Driver {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "the console test needs Debian's chromium and chromium-driver (`apt-get install chromium chromium-driver`; scripts/test.sh installs them)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver did not start");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let profile = std::env::temp_dir().join(format!("enos-sim-console-chromium-{}", std::process::id()));
        let mut d = Driver { child, addr, session: None, profile };
        let until = Instant::now() + Duration::from_secs(20);
        while webdriver(addr, "GET", "/status", None).await.is_err() {
            assert!(Instant::now() < until, "chromedriver not ready in 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--window-size=1400,1300".to_owned(),
            format!("--user-data-dir={}", d.profile.display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args}
        }}});
        let v = webdriver(addr, "POST", "/session", Some(caps)).await.expect("no browser session");
        d.session = Some(v["sessionId"].as_str().expect("a session id").to_owned());
        d
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let session = self.session.as_deref().unwrap_or_default();
        webdriver(self.addr, method, &format!("/session/{session}{path}"), body).await
    }

    /// The elements matching a CSS selector.
    async fn find(&self, css: &str) -> Vec<String> {
        let v = self.call("POST", "/elements", Some(json!({"using": "css selector", "value": css}))).await;
        v.ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).map(str::to_owned))
            .collect()
    }

    /// Waits up to 15 s for an element matching `css` whose text satisfies `pred`.
    async fn wait_text(&self, css: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + Duration::from_secs(15);
        let mut last = String::new();
        loop {
            for e in self.find(css).await {
                if let Ok(t) = self.call("GET", &format!("/element/{e}/text"), None).await {
                    last = t.as_str().unwrap_or_default().to_owned();
                    if pred(&last) {
                        return last;
                    }
                }
            }
            assert!(Instant::now() < until, "{what}: not seen in 15 s (last text at {css}: {last:?})");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits up to 15 s for an element matching `css` to exist.
    async fn wait_for(&self, css: &str, what: &str) -> String {
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(e) = self.find(css).await.into_iter().next() {
                return e;
            }
            assert!(Instant::now() < until, "{what}: no {css} in 15 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&self, css: &str) {
        let e = self.wait_for(css, "to click").await;
        self.call("POST", &format!("/element/{e}/click"), Some(json!({}))).await.unwrap();
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.wait_for(css, "to type into").await;
        self.call("POST", &format!("/element/{e}/clear"), Some(json!({}))).await.unwrap();
        self.call("POST", &format!("/element/{e}/value"), Some(json!({"text": text}))).await.unwrap();
    }

    async fn attribute(&self, css: &str, name: &str) -> String {
        let e = self.wait_for(css, "to read").await;
        let v = self.call("GET", &format!("/element/{e}/attribute/{name}"), None).await.unwrap();
        v.as_str().unwrap_or_default().to_owned()
    }

    async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let v = self.call("GET", "/screenshot", None).await.unwrap();
        base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap()
    }

    async fn quit(mut self) {
        if self.session.is_some() {
            let _ = self.call("DELETE", "", None).await;
            self.session = None;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_shows_a_device_online_charts_its_posts_live_and_invokes_its_service() {
    let sim = serve();
    let mut device = TestDevice::connect(sim.mqtt, config(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET), None).await.unwrap();
    // Values a minute apart in time, so that the chart spreads them.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let at = |i: u64| now - 60_000 + i * 15_000;
    device.call(MeasurepointPost::at(json!({"temp": 20.5}), at(0))).await.unwrap();
    let browser = Driver::start().await;
    browser.call("POST", "/url", Some(json!({"url": sim.console}))).await.unwrap();

    // The device is listed online; the token left the address bar.
    let name = format!("{DEVICE_PRODUCT}/{DEVICE}");
    let row = format!("li[data-device=\"{name}\"]");
    browser.wait_for(&format!("{row}.online"), "the device online").await;
    let url = browser.call("GET", "/url", None).await.unwrap();
    assert!(!url.as_str().unwrap().contains("token"), "{url}");
    browser.click(&row).await;
    browser.wait_text("#device-online", "the device's badge", |t| t == "online").await;
    let value = "div[data-point=\"temp\"] .value";
    browser.wait_text(value, "the first value", |t| t == "20.5").await;

    // Values posted after the page opened appear without a reload, in the value and in
    // the chart's samples.
    for (i, v) in [21.5, 23.0, 22.25].into_iter().enumerate() {
        device.call(MeasurepointPost::at(json!({"temp": v}), at(i as u64 + 1))).await.unwrap();
    }
    browser.wait_text(value, "a value posted later", |t| t == "22.25").await;
    let samples = browser.attribute("div[data-point=\"temp\"]", "data-samples").await;
    assert_eq!(samples, "4", "every posted value is charted");

    // A service invoked with the button: the device gets it and its answer is shown.
    browser.type_into("#service-id", "reset").await;
    browser.type_into("#service-params", r#"{"hard": true}"#).await;
    browser.click("#invoke").await;
    let cmd = device.next_command().await;
    assert!(
        matches!(&cmd.kind, CommandKind::InvokeService { service_id, params } if service_id == "reset" && params["hard"] == true),
        "{:?}",
        cmd.kind
    );
    device.reply(cmd.reply_to.ok(&json!({"done": true})).unwrap());
    browser.wait_text("#service-answer", "the device's answer", |t| t.contains("\"done\": true")).await;

    let shot = browser.screenshot().await;
    assert!(shot.starts_with(b"\x89PNG"), "a PNG");
    let path = std::env::var_os("ENOS_CONSOLE_SCREENSHOT").map_or_else(
        || std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("enos-sim-console.png"),
        std::path::PathBuf::from,
    );
    std::fs::write(&path, shot).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    println!("screenshot: {}", path.display());

    // Disabled from the page: the cloud closes its connection and refuses it again, and
    // the page shows it offline and disabled.
    browser.click("#toggle").await;
    browser.wait_text("#device-online", "the device's badge once disabled", |t| t == "offline").await;
    browser.wait_text("#device-enabled", "the device disabled", |t| t == "disabled").await;
    browser.wait_text("#toggle", "the button", |t| t == "Enable").await;
    browser.quit().await;
}
