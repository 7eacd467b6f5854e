//! What the integration tests share: a real `enos-sim` process on ephemeral ports, runs of
//! the real `enos` binary with a clean environment, temporary folders.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use serde_json::Value;

/// A folder removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("enos-cli-test-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `enos-sim` binary: beside this test's executable (`target/debug/enos-sim`), built
/// with cargo when it is not there yet (`ENOS_SIM_BIN` names another).
pub fn sim_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("ENOS_SIM_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().unwrap();
        // target/debug/deps/replay-1234 -> target/debug
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
        let bin = profile_dir.join(format!("enos-sim{}", std::env::consts::EXE_SUFFIX));
        if !bin.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = Command::new(cargo);
            build.args(["build", "-p", "enos-sim", "--bin", "enos-sim"]);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                build.arg("--release");
            }
            let status = build.status().expect("cargo runs");
            assert!(status.success(), "building enos-sim failed");
        }
        assert!(bin.exists(), "no enos-sim at {}", bin.display());
        bin
    })
}

/// A running `enos-sim serve`, killed when dropped.
pub struct Sim {
    child: Child,
    /// `tcp://127.0.0.1:PORT`.
    pub url: String,
    /// `ssl://127.0.0.1:PORT`, when started with TLS.
    pub tls_url: Option<String>,
    /// `http://127.0.0.1:PORT`, the device HTTP endpoint, when started with `--http`.
    pub http_url: Option<String>,
    /// The admin API's address.
    pub admin: String,
    /// Its runtime folder (the admin token).
    pub dir: TempDir,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sim {
    pub fn start() -> Self {
        Sim::start_with(&[])
    }

    /// `serve --tcp 127.0.0.1:0 --admin 127.0.0.1:0` and `extra`; waits for its addresses.
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = TempDir::new("sim");
        let mut child = Command::new(sim_binary())
            .args(["serve", "--tcp", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(extra)
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .env("XDG_RUNTIME_DIR", dir.path())
            .env_remove("ENOS_SIM_TOKEN_FILE")
            .env_remove("ENOS_SIM_TOKEN")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut url, mut tls_url, mut http_url, mut admin) = (None, None, None, None);
        let (wants_tls, wants_http) = (extra.contains(&"--tls"), extra.contains(&"--http"));
        while url.is_none() || admin.is_none() || (wants_tls && tls_url.is_none()) || (wants_http && http_url.is_none())
        {
            let line = lines.next().expect("enos-sim printed its addresses").unwrap();
            if let Some(a) = line.strip_prefix("device HTTP endpoint listening on ") {
                http_url = Some(a.to_owned());
            }
            if let Some(a) = line.strip_prefix("MQTT (tcp) listening on ") {
                url = Some(a.to_owned());
            }
            if let Some(a) = line.strip_prefix("MQTT (tls) listening on ") {
                tls_url = Some(a.to_owned());
            }
            if let Some(a) = line.strip_prefix("admin API listening on ") {
                admin = Some(a.to_owned());
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        Sim { child, url: url.unwrap(), tls_url, http_url, admin: admin.unwrap(), dir }
    }

    /// With the device HTTP endpoint (`--http 127.0.0.1:0`) and `extra`.
    pub fn start_with_http(extra: &[&str]) -> Self {
        let mut args = vec!["--http", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        Sim::start_with(&args)
    }

    /// Stops the server at once, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// An `enos-sim` subcommand against this server: (success, its JSON output).
    pub fn admin(&self, args: &[&str]) -> (bool, Value) {
        let out = Command::new(sim_binary())
            .arg("--admin")
            .arg(&self.admin)
            .args(args)
            .env("XDG_RUNTIME_DIR", self.dir.path())
            .env_remove("ENOS_SIM_TOKEN")
            .env_remove("ENOS_SIM_TOKEN_FILE")
            .output()
            .unwrap();
        (out.status.success(), serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
    }

    /// `enos-sim points pk/dk`.
    pub fn points(&self, device: &str) -> Value {
        let (ok, v) = self.admin(&["points", device]);
        assert!(ok, "points of {device}: {v}");
        v
    }
}

/// An `enos` command with a clean environment: no `ENOS_*` variable of the machine, and
/// `HOME` (so the profile file and the secrets folder) in `home`.
pub fn enos(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_enos"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ENOS_") {
            c.env_remove(k);
        }
    }
    c.env("HOME", home).env_remove("XDG_CONFIG_HOME").env_remove("RUST_LOG").current_dir(home);
    c
}

/// The environment of the built-in device `demo_pk/demo_device` on `sim`.
pub fn device_env(sim: &Sim) -> Vec<(&'static str, String)> {
    use enos_sim::registry::defaults::*;
    vec![
        ("ENOS_URL", sim.url.clone()),
        ("ENOS_PRODUCT_KEY", DEVICE_PRODUCT.into()),
        ("ENOS_DEVICE_KEY", DEVICE.into()),
        ("ENOS_DEVICE_SECRET", DEVICE_SECRET.into()),
    ]
}

/// The environment of a device whose broker is a loopback port nobody listens on.
pub fn closed_port_env() -> Vec<(&'static str, String)> {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    vec![
        ("ENOS_URL", format!("tcp://{closed}")),
        ("ENOS_PRODUCT_KEY", "pk".into()),
        ("ENOS_DEVICE_KEY", "dk".into()),
        ("ENOS_DEVICE_SECRET", "s".into()),
    ]
}

/// The environment of the built-in device on `sim`'s device HTTP endpoint (the HTTP
/// transport).
pub fn http_env(sim: &Sim) -> Vec<(&'static str, String)> {
    let mut env = device_env(sim);
    env[0].1 = sim.http_url.clone().expect("the sim was started with --http");
    env
}

/// The environment of the integration channel of the built-in device product on `sim`:
/// its key and secret, no device.
pub fn channel_env(sim: &Sim) -> Vec<(&'static str, String)> {
    use enos_sim::registry::defaults::*;
    vec![
        ("ENOS_URL", sim.url.clone()),
        ("ENOS_PRODUCT_KEY", DEVICE_PRODUCT.into()),
        ("ENOS_PRODUCT_SECRET", DEVICE_PRODUCT_SECRET.into()),
    ]
}

/// The environment of the built-in gateway, with its sub-devices' secrets.
pub fn gateway_env(sim: &Sim) -> Vec<(&'static str, String)> {
    use enos_sim::registry::defaults::*;
    vec![
        ("ENOS_URL", sim.url.clone()),
        ("ENOS_PRODUCT_KEY", GATEWAY_PRODUCT.into()),
        ("ENOS_DEVICE_KEY", GATEWAY.into()),
        ("ENOS_DEVICE_SECRET", GATEWAY_SECRET.into()),
        (
            "ENOS_SUB_SECRETS",
            format!(
                "{SUB_PRODUCT}/{SUB_DEVICE_1}={SUB_DEVICE_1_SECRET},{SUB_PRODUCT}/{SUB_DEVICE_2}={SUB_DEVICE_2_SECRET}"
            ),
        ),
    ]
}

/// How a run of `enos` ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Standard output as one JSON document.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// Everything printed.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `enos args` in `home` with `env`.
pub fn run(home: &Path, env: &[(&str, String)], args: &[&str]) -> Run {
    Run::from(run_raw(home, env, args))
}

/// How long one run of `enos` may take in a test before it is killed.
const RUN_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs `enos args` in `home` with `env`: its output as bytes. A run past [`RUN_LIMIT`]
/// (a loop that never ends) is killed, and the test fails saying so.
pub fn run_raw(home: &Path, env: &[(&str, String)], args: &[&str]) -> Output {
    use std::io::Read;
    let mut child = enos(home)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("enos {args:?} did not end within {RUN_LIMIT:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

/// Bytes of a file that are no text, and differ from one offset to the next for long.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + i / 251) % 256) as u8).collect()
}

/// A plain HTTP/1.1 server of one file (what a firmware's plain `fileUrl` names): `GET`
/// of any path, whole (200) or one range `bytes=S-E` / `bytes=S-` (206, or 416 past the
/// end), on kept-alive connections; it counts the requests.
pub struct FileServer {
    /// `http://127.0.0.1:PORT/PATH`.
    pub url: String,
    /// Requests answered.
    pub requests: std::sync::Arc<AtomicU32>,
}

impl FileServer {
    pub fn start(path: &str, body: Vec<u8>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}{path}", listener.local_addr().unwrap());
        let requests = std::sync::Arc::new(AtomicU32::new(0));
        let (count, body) = (requests.clone(), std::sync::Arc::new(body));
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (count, body) = (count.clone(), body.clone());
                std::thread::spawn(move || FileServer::serve(conn, &body, &count));
            }
        });
        FileServer { url, requests }
    }

    fn serve(conn: std::net::TcpStream, body: &[u8], count: &AtomicU32) {
        use std::io::Write;
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut conn = conn;
        loop {
            let mut range = None;
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(spec) = lower.strip_prefix("range:").and_then(|r| r.trim().strip_prefix("bytes=")) {
                    let (s, e) = spec.split_once('-').unwrap();
                    range = Some((s.parse::<usize>().unwrap(), e.parse::<usize>().ok()));
                }
            }
            count.fetch_add(1, Ordering::SeqCst);
            let len = body.len();
            let (status, part, head) = match range {
                None => ("200 OK", body, String::new()),
                Some((s, e)) if s < len => {
                    let e = e.unwrap_or(len - 1).min(len - 1);
                    ("206 Partial Content", &body[s..=e], format!("Content-Range: bytes {s}-{e}/{len}\r\n"))
                }
                Some(_) => ("416 Range Not Satisfiable", &body[..0], format!("Content-Range: bytes */{len}\r\n")),
            };
            let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n{head}\r\n", part.len());
            if conn.write_all(head.as_bytes()).and_then(|()| conn.write_all(part)).is_err() {
                return;
            }
        }
    }
}
