//! A minimal device for the simulator's tests: the SDK's core driven over a tokio socket
//! (plain or TLS), with requests awaited and commands collected.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use enos_proto::codec::{self, Decoder, Packet};
use enos_proto::tls::rustls::ClientConfig;
use enos_proto::{
    Client, CloseCause, Command, CommandReply, Config, Credentials, DeviceKeys, Event, Now, Operation, Output, Reply,
    RequestError, RequestId, RequestOptions, SubmitError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

type Job = Box<dyn FnOnce(&mut Client, Now) -> Result<RequestId, SubmitError> + Send>;

enum Cmd {
    Request(Job, oneshot::Sender<Result<Reply, RequestError>>),
    Reply(CommandReply),
    Close,
}

/// A device driven by the core.
pub struct TestDevice {
    tx: mpsc::UnboundedSender<Cmd>,
    /// Every event but responses, in order.
    pub events: mpsc::UnboundedReceiver<Event>,
    pub keys: DeviceKeys,
}

pub fn keys(pk: &str, dk: &str) -> DeviceKeys {
    DeviceKeys::new(pk, dk).unwrap()
}

pub fn config(pk: &str, dk: &str, secret: &str) -> Config {
    let mut c = Config::new(keys(pk, dk), Credentials::DeviceSecret(secret.into()));
    c.reconnect_jitter_percent = 0;
    c.reconnect_period = Duration::from_millis(200);
    c.max_reconnect_period = Duration::from_millis(400);
    c.retry_first_connect = true;
    c
}

/// TLS for a test device: the CA to trust and the server name.
#[derive(Clone)]
pub struct Tls {
    pub config: Arc<ClientConfig>,
    pub name: String,
}

impl TestDevice {
    /// Starts a device against `addr`; it dials at once.
    pub fn start(addr: std::net::SocketAddr, config: Config, tls: Option<Tls>) -> TestDevice {
        let keys = config.device.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let (etx, erx) = mpsc::unbounded_channel();
        tokio::spawn(drive(addr, config, tls, rx, etx));
        TestDevice { tx, events: erx, keys }
    }

    /// Starts a device and waits for its first `Connected` (or the refusal).
    pub async fn connect(addr: std::net::SocketAddr, config: Config, tls: Option<Tls>) -> Result<TestDevice, Event> {
        let mut d = TestDevice::start(addr, config, tls);
        match d.next_event().await {
            Event::Connected { .. } => Ok(d),
            other => Err(other),
        }
    }

    /// The next event (not a response), within 5 s.
    pub async fn next_event(&mut self) -> Event {
        tokio::time::timeout(Duration::from_secs(5), self.events.recv())
            .await
            .expect("no event in 5 s")
            .expect("driver gone")
    }

    /// The next event if one comes within `d`.
    pub async fn event_within(&mut self, d: Duration) -> Option<Event> {
        tokio::time::timeout(d, self.events.recv()).await.ok().flatten()
    }

    /// The next command, within 5 s (other events are skipped).
    pub async fn next_command(&mut self) -> Command {
        loop {
            if let Event::Command(c) = self.next_event().await {
                return *c;
            }
        }
    }

    /// Sends a request and waits for its end.
    pub async fn request<O: Operation + Send + 'static>(
        &self,
        op: O,
        opts: RequestOptions,
    ) -> Result<Reply, RequestError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |c, now| c.request(now, op, opts));
        assert!(self.tx.send(Cmd::Request(job, tx)).is_ok(), "driver gone");
        rx.await.expect("request dropped")
    }

    /// Sends a request and returns its typed data.
    pub async fn call<O: Operation + Send + 'static>(&self, op: O) -> Result<O::Data, RequestError> {
        let reply = self.request(op, RequestOptions::default()).await?;
        O::parse_reply(&reply)
    }

    /// A request's raw JSON reply: (code, data, message).
    pub async fn json<O: Operation + Send + 'static>(&self, op: O) -> (i32, serde_json::Value, Option<String>) {
        match self.request(op, RequestOptions::default()).await {
            Ok(Reply::Json(j)) => {
                (j.code, j.data_json().map(|d| serde_json::from_str(d).unwrap()).unwrap_or_default(), j.message)
            }
            other => panic!("not a JSON reply: {other:?}"),
        }
    }

    pub fn reply(&self, r: CommandReply) {
        let _ = self.tx.send(Cmd::Reply(r));
    }

    pub fn close(&self) {
        let _ = self.tx.send(Cmd::Close);
    }
}

async fn dial(addr: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Writes what the core transmits, and closes, until the core waits.
async fn drain(
    core: &mut Client,
    link: &mut Option<TcpStream>,
    addr: std::net::SocketAddr,
    waiting: &mut HashMap<RequestId, oneshot::Sender<Result<Reply, RequestError>>>,
    events: &mpsc::UnboundedSender<Event>,
) -> Option<std::time::Instant> {
    loop {
        match core.poll_output() {
            Output::Transmit(b) => {
                if let Some(s) = link {
                    match s.write_all(&b).await {
                        Ok(()) => {
                            core.handle_written(Now::system(), 1);
                        }
                        Err(e) => {
                            *link = None;
                            core.handle_closed(Now::system(), e.into());
                        }
                    }
                }
            }
            Output::OpenTransport => match dial(addr).await {
                Ok(s) => {
                    *link = Some(s);
                    core.handle_connected(Now::system());
                }
                Err(e) => core.handle_closed(Now::system(), e.into()),
            },
            Output::CloseTransport => *link = None,
            Output::Event(Event::Response { id, result }) => {
                if let Some(tx) = waiting.remove(&id) {
                    let _ = tx.send(result);
                }
            }
            // The tests read the session's own events.
            Output::Event(Event::Started(_)) => {}
            Output::Event(e) => {
                let _ = events.send(e);
            }
            Output::Wait(at) => return at,
        }
    }
}

async fn drive(
    addr: std::net::SocketAddr,
    mut config: Config,
    tls: Option<Tls>,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    events: mpsc::UnboundedSender<Event>,
) {
    config.tls = tls.map(|t| enos_proto::tls::TlsTarget::new(t.config, t.name));
    let mut core = Client::new(config, Now::system()).unwrap();
    let mut link: Option<TcpStream> = None;
    let mut waiting: HashMap<RequestId, oneshot::Sender<Result<Reply, RequestError>>> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let wake = drain(&mut core, &mut link, addr, &mut waiting, &events).await;
        if core.is_closed() {
            return;
        }
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = async {
                match &mut link {
                    Some(s) => s.read(&mut buf).await,
                    None => std::future::pending().await,
                }
            } => match r {
                Ok(0) | Err(_) => {
                    link = None;
                    core.handle_closed(Now::system(), CloseCause::Eof);
                }
                Ok(n) => core.handle_input(Now::system(), &buf[..n]),
            },
            _ = sleep => core.handle_timeout(Now::system()),
            cmd = rx.recv() => match cmd {
                Some(Cmd::Request(job, tx)) => match job(&mut core, Now::system()) {
                    Ok(id) => { waiting.insert(id, tx); }
                    Err(e) => panic!("request refused: {e}"),
                },
                Some(Cmd::Reply(r)) => { let _ = core.reply(Now::system(), r); }
                Some(Cmd::Close) | None => core.close(Now::system()),
            },
        }
    }
}

/// Raw MQTT over a socket, for what the core would never send.
pub struct RawConn {
    pub s: TcpStream,
    dec: Decoder,
}

impl RawConn {
    pub async fn open(addr: std::net::SocketAddr) -> RawConn {
        RawConn { s: TcpStream::connect(addr).await.unwrap(), dec: Decoder::new(1 << 22) }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    pub async fn send_packet(&mut self, p: Packet) {
        let mut b = BytesMut::new();
        codec::encode_packet(&mut b, &p).unwrap();
        self.send(&b).await;
    }

    /// The next packet, or `None` when the server closed the connection (within 5 s).
    pub async fn next(&mut self) -> Option<Packet> {
        let mut buf = vec![0u8; 65536];
        loop {
            if let Ok(Some(p)) = self.dec.next_packet() {
                return Some(p);
            }
            let n = tokio::time::timeout(Duration::from_secs(5), self.s.read(&mut buf))
                .await
                .expect("silent server")
                .ok()?;
            if n == 0 {
                return None;
            }
            self.dec.feed(&buf[..n]);
        }
    }

    /// Sends a CONNECT with these fields and returns the CONNACK code.
    pub async fn connect(&mut self, client_id: &str, user: &str, password: &str) -> Option<u8> {
        let mut c = codec::Connect::new(client_id);
        c.set_login(user, password);
        self.send_packet(Packet::Connect(c)).await;
        match self.next().await? {
            Packet::ConnAck(a) => Some(a.code as u8),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn publish(&mut self, topic: &str, payload: &[u8]) {
        let mut b = BytesMut::new();
        codec::encode_publish(&mut b, topic, payload, codec::QoS::AtMostOnce, 0, false).unwrap();
        self.send(&b).await;
    }

    /// The next PUBLISH (skipping acknowledgements): topic and payload.
    pub async fn next_publish(&mut self) -> Option<(String, Bytes)> {
        loop {
            match self.next().await? {
                Packet::Publish(p) => return Some((p.topic, p.payload)),
                _ => continue,
            }
        }
    }
}

/// The signed CONNECT fields for a device at `ts`.
pub fn signed(pk: &str, dk: &str, secret: &str, mode: u8, method: &str, ts: u64) -> (String, String, String) {
    let keys = keys(pk, dk);
    let m = enos_proto::SignMethod::from_label(method).unwrap();
    let sign = enos_proto::sign::sign_device(m, dk, &keys, &ts.to_string(), &secret.into());
    (format!("{dk}|securemode={mode},signmethod={method},timestamp={ts}|"), format!("{dk}&{pk}"), sign)
}

/// `enos-sim serve` as a process of its own, on ephemeral ports; killed when dropped.
pub struct Served {
    child: std::process::Child,
    /// Its plain MQTT listener.
    pub mqtt: std::net::SocketAddr,
    /// Its admin API, as `--admin` takes it.
    pub admin: String,
    /// The web console's address, with the token.
    pub console: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the server writes its admin token and the subcommands read it, for this test
/// process (instead of the user's own runtime folder).
pub fn runtime_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("enos-sim-cli-test-{}", std::process::id()))
}

/// Starts `enos-sim serve` on ephemeral ports and reads where it listens.
pub fn serve() -> Served {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_enos-sim"))
        .args(["serve", "--tcp", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .env("XDG_RUNTIME_DIR", runtime_dir())
        .env_remove("ENOS_SIM_TOKEN_FILE")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut mqtt, mut admin, mut console) = (None, None, None);
    while mqtt.is_none() || admin.is_none() || console.is_none() {
        let line = lines.next().expect("enos-sim serve ended").unwrap();
        if let Some(a) = line.strip_prefix("MQTT (tcp) listening on tcp://") {
            mqtt = Some(a.parse().unwrap());
        }
        if let Some(a) = line.strip_prefix("admin API listening on ") {
            admin = Some(a.to_owned());
        }
        if let Some(a) = line.strip_prefix("web console: ") {
            console = Some(a.to_owned());
        }
    }
    // Whatever else it prints is read, so that its standard output never fills up.
    std::thread::spawn(move || lines.for_each(drop));
    Served { child, mqtt: mqtt.unwrap(), admin: admin.unwrap(), console: console.unwrap() }
}
