//! `enos-load`: load a broker with devices (or a gateway's sub-devices) posting measure
//! points through one of the SDK's drivers (`--driver tokio|smol|blocking`), and print
//! throughput, reply latency percentiles, CPU per request, connect rate, errors and memory.
//!
//! The requests are made where the driver's users make them: on tokio's worker threads
//! (`--load-threads`), on smol's global executor (`SMOL_THREADS`, one by default), or, for
//! the blocking driver, one thread per request kept in flight (`--window` threads per
//! device) besides each connection's two threads.
//!
//! Without `--broker` it runs the built-in local cloud in the same process, on threads of
//! its own (named `sim`), so the CPU of the devices (the rest of the process) and of the cloud are
//! measured apart.
//!
//!     cargo run --release -p enos-benches --bin enos-load -- --devices 1 --sequential --seconds 10
//!     cargo run --release -p enos-benches --bin enos-load -- --devices 1 --window 1000
//!     cargo run --release -p enos-benches --bin enos-load -- --devices 1000 --rate 1
//!     cargo run --release -p enos-benches --bin enos-load -- --devices 10000 --idle --broker tcp://127.0.0.1:11883
//!     cargo run --release -p enos-benches --bin enos-load -- --gateway-subs 10000 --batch 100 --window 16
//!     cargo run --release -p enos-benches --bin enos-load -- --rumqttc --window 1000   # the same through rumqttc
//!     cargo run --release -p enos-benches --bin enos-load -- --driver blocking --sequential

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use enos_benches::{status_kib, LoadRuntime, TypicalPoints};
use enos_client::{ClientOptions, DeviceClient, DeviceKeys, GatewayClient, RequestOptions, SubDeviceInfo};
use enos_proto::ops::{BatchEntry, MeasurepointBatchPost, MeasurepointPost};
use enos_sim::registry::defaults::*;
use enos_sim::{Registry, Sim};
use hdrhistogram::Histogram;

#[derive(Parser, Clone)]
#[command(name = "enos-load", about = "Load a broker with EnOS devices and measure")]
struct Args {
    /// Which driver the devices run on.
    #[arg(long, value_enum, default_value_t = Driver::Tokio)]
    driver: Driver,
    /// Broker URL; the built-in local cloud in-process when absent. An external
    /// `enos-sim serve --fleet N` has the devices this tool uses (demo_pk/load_i).
    #[arg(long)]
    broker: Option<String>,
    /// Number of devices.
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// One gateway with this many logged-in sub-devices, posting batches (instead of
    /// `--devices`).
    #[arg(long, default_value_t = 0)]
    gateway_subs: usize,
    /// Sub-device entries per batch in gateway mode.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Requests kept in flight per device (pipelining).
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// One request at a time per device (the same as --window 1).
    #[arg(long)]
    sequential: bool,
    /// Requests per second per device, instead of as fast as possible.
    #[arg(long)]
    rate: Option<f64>,
    /// Connect and stay idle (memory figures), no requests.
    #[arg(long)]
    idle: bool,
    /// Seconds of load after every device is connected.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Stop after this many requests in all (instead of --seconds).
    #[arg(long)]
    count: Option<u64>,
    /// Worker threads of the load.
    #[arg(long, default_value_t = 1)]
    load_threads: usize,
    /// Worker threads of the in-process cloud.
    #[arg(long, default_value_t = 1)]
    sim_threads: usize,
    /// Measure point posts the in-process cloud keeps per device as history (it checks and
    /// stores the last value of every point either way; the load reads no history).
    #[arg(long, default_value_t = 0)]
    history: usize,
    /// Devices connecting at once.
    #[arg(long, default_value_t = 256)]
    connect_parallelism: usize,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// A check of the accounting: the in-process cloud drops the first N replies of the
    /// load, and the run fails unless it counts exactly N timeouts (with any client).
    #[arg(long)]
    drop_replies: Option<u32>,
    /// Only measure the core: create this many connected sessions in memory (no sockets)
    /// and print `size_of` of a session and the heap each one holds.
    #[arg(long)]
    core_sessions: Option<usize>,
    /// CA (PEM) that signed the broker's certificate, for `ssl://`.
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// Instead of the SDK: a plain MQTT client (the codec over a socket, no session
    /// logic) doing the same sequential request and reply, for comparison.
    #[arg(long)]
    plain_mqtt: bool,
    /// Instead of the SDK: a hand-written client on the `rumqttc` crate doing the same
    /// requests (sequential, or `--window` in flight), for comparison.
    #[arg(long, conflicts_with = "plain_mqtt")]
    rumqttc: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Driver {
    Tokio,
    Smol,
    Blocking,
}

/// The measure point post topic of the device the comparison clients (`--plain-mqtt`,
/// `--rumqttc`) log in as.
fn comparison_topic() -> String {
    format!("/sys/{DEVICE_PRODUCT}/load_0/thing/measurepoint/post")
}

/// The CONNECT fields of the comparison clients' device.
fn comparison_login() -> Result<enos_proto::sign::ConnectFields, enos_proto::ConfigError> {
    let keys = DeviceKeys::new(DEVICE_PRODUCT, "load_0")?;
    Ok(enos_proto::sign::connect_fields(
        &keys,
        "load_0",
        enos_proto::SecureMode::DeviceSecret,
        enos_proto::SignMethod::Sha256,
        1,
        &FLEET_SECRET.into(),
    ))
}

/// A comparison client's measure point post, its points serialized each time as their
/// values change.
fn comparison_post(id: u64) -> Result<String, serde_json::Error> {
    let points = serde_json::to_string(&TypicalPoints::new())?;
    Ok(format!(
        r#"{{"id":"{id}","version":"1.0","params":{{"measurepoints":{points},"time":1}},"method":"thing.measurepoint.post"}}"#
    ))
}

/// A reply as the comparison clients read it, on their post's reply topic: the post id it
/// answers and whether its code is 200. `None` for anything else.
fn comparison_reply(topic: &str, payload: &[u8], reply_topic: &str) -> Option<(u64, bool)> {
    #[derive(serde::Deserialize)]
    struct Reply<'a> {
        id: &'a str,
        code: Option<i64>,
    }
    if topic != reply_topic {
        return None;
    }
    let r: Reply = serde_json::from_slice(payload).ok()?;
    Some((r.id.parse().ok()?, r.code == Some(200)))
}

/// How a comparison client's request ended.
enum Ended {
    Ok,
    Refused,
    TimedOut,
}

/// The plain MQTT client of `--plain-mqtt`: CONNECT, SUBSCRIBE the reply topic, then
/// publish a measure point post (the points serialized each time, as their values change)
/// and wait for its reply (its id and code checked) up to the request timeout, in a loop.
/// The reply's PUBACK leaves with the next post, in one write.
async fn plain_mqtt(
    url: &str,
    seconds: u64,
    timeout: Duration,
    stats: &Stats,
) -> Result<(), Box<dyn std::error::Error>> {
    use bytes::BytesMut;
    use enos_proto::codec::{self, Decoder, Packet, QoS};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.strip_prefix("tcp://").ok_or("plain MQTT needs tcp://")?;
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let f = comparison_login()?;
    let mut c = codec::Connect::new(f.client_id);
    c.set_login(f.username, f.password.expose().to_owned());
    let topic = comparison_topic();
    let reply_topic = format!("{topic}_reply");
    let mut out = BytesMut::new();
    codec::encode_packet(&mut out, &Packet::Connect(c))?;
    codec::encode_subscribe(&mut out, 1, [reply_topic.as_str()], QoS::AtLeastOnce)?;
    s.write_all(&out.split()).await?;
    let mut dec = Decoder::new(1 << 20);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match dec.next_packet()? {
            Some(Packet::SubAck(_)) => break,
            Some(_) => {}
            None => {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    return Err("the broker closed the connection".into());
                }
                dec.feed(&buf[..n]);
            }
        }
    }
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut id: u64 = 0;
    while Instant::now() < end {
        id += 1;
        // Timed from before the post is built, as the SDK's requests are.
        let started = Instant::now();
        let body = comparison_post(id)?;
        codec::encode_publish(&mut out, &topic, body.as_bytes(), QoS::AtLeastOnce, (id % 60_000 + 1) as u16, false)?;
        s.write_all(&out.split()).await?;
        stats.begin();
        let deadline = tokio::time::Instant::from_std(started + timeout);
        let ended = loop {
            match dec.next_packet() {
                Ok(Some(Packet::Publish(p))) => {
                    if p.pkid != 0 {
                        codec::encode_packet(&mut out, &Packet::PubAck(codec::PubAck::new(p.pkid)))?;
                    }
                    // A late reply to a post that already timed out is ignored; anything
                    // else that is not this post's reply is an error.
                    match comparison_reply(&p.topic, &p.payload, &reply_topic) {
                        Some((n, ok)) if n == id => break if ok { Ended::Ok } else { Ended::Refused },
                        Some((n, _)) if n < id => {}
                        _ => stats.wrong_reply(),
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                    Err(_) => break Ended::TimedOut,
                    Ok(Ok(n)) if n > 0 => dec.feed(&buf[..n]),
                    Ok(_) => {
                        stats.end(None, false);
                        return Err("the broker closed the connection".into());
                    }
                },
                Err(e) => {
                    stats.end(None, false);
                    return Err(e.into());
                }
            }
        };
        match ended {
            Ended::Ok => stats.end(Some(started), false),
            Ended::Refused => stats.end(None, false),
            Ended::TimedOut => stats.end(None, true),
        }
    }
    Ok(())
}

/// The `--rumqttc` client: what a user would write on `rumqttc` for the same job. One task
/// drives the event loop and publishes measure point posts (the points serialized each
/// time), keeping `window` in flight and matching each reply to its post by id (its code
/// checked); a post without its reply after the request timeout is counted as timed out
/// and leaves the window. When the time is up it stops posting and waits for the replies
/// still due. `rumqttc` acknowledges the replies itself.
async fn rumqttc_client(
    url: &str,
    seconds: u64,
    window: usize,
    timeout: Duration,
    stats: &Stats,
) -> Result<(), Box<dyn std::error::Error>> {
    use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet, QoS};
    let addr = url.strip_prefix("tcp://").ok_or("the rumqttc client needs tcp://")?;
    let (host, port) = addr.rsplit_once(':').ok_or("no port in the broker URL")?;
    let f = comparison_login()?;
    let mut o = MqttOptions::new(f.client_id, host.trim_matches(|c| c == '[' || c == ']'), port.parse()?);
    o.set_credentials(f.username, f.password.expose());
    o.set_keep_alive(Duration::from_secs(60));
    o.set_inflight(u16::try_from(window.clamp(1, 60_000))?);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(o, window.max(10));
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    events.set_network_options(net);
    let topic = comparison_topic();
    let reply_topic = format!("{topic}_reply");
    client.subscribe(reply_topic.as_str(), QoS::AtLeastOnce).await?;
    // In send order: the oldest is the first to time out.
    let mut sent: std::collections::BTreeMap<u64, Instant> = std::collections::BTreeMap::new();
    let (mut id, mut subscribed, window) = (0u64, false, window.max(1));
    let end = Instant::now() + Duration::from_secs(seconds);
    loop {
        let posting = Instant::now() < end;
        if !posting && sent.is_empty() {
            return Ok(());
        }
        // Wake at the end of the run or at the oldest post's deadline, whichever is first.
        let oldest = sent.first_key_value().map(|(_, t)| *t + timeout);
        let wake = match (posting, oldest) {
            (true, Some(o)) => o.min(end),
            (true, None) => end,
            (false, Some(o)) => o,
            (false, None) => return Ok(()),
        };
        match tokio::time::timeout_at(tokio::time::Instant::from_std(wake), events.poll()).await {
            Err(_) => {}
            Ok(event) => match event? {
                Event::Incoming(Packet::SubAck(_)) => subscribed = true,
                Event::Incoming(Packet::Publish(p)) => match comparison_reply(&p.topic, &p.payload, &reply_topic) {
                    Some((n, ok)) => match sent.remove(&n) {
                        Some(started) => stats.end(ok.then_some(started), false),
                        // A late reply to a post already counted as timed out.
                        None if n <= id => {}
                        None => stats.wrong_reply(),
                    },
                    None => stats.wrong_reply(),
                },
                _ => {}
            },
        }
        let now = Instant::now();
        while let Some((&n, &t)) = sent.first_key_value() {
            if now < t + timeout {
                break;
            }
            sent.remove(&n);
            stats.end(None, true);
        }
        if !subscribed || now >= end {
            continue;
        }
        while sent.len() < window {
            id += 1;
            // Timed from before the post is built, as the SDK's requests are.
            sent.insert(id, Instant::now());
            stats.begin();
            client.try_publish(topic.as_str(), QoS::AtLeastOnce, false, comparison_post(id)?)?;
        }
    }
}

/// CPU ticks (1/100 s) of the in-process cloud's threads that have exited (its runtime
/// ends idle blocking threads): added by each as it stops, so that no tick of the cloud's
/// is counted as the devices'.
static EXITED_SIM_TICKS: AtomicU64 = AtomicU64::new(0);

/// Called on each of the cloud's threads as it stops: adds its CPU to the cloud's.
fn sim_thread_stops() {
    let own = std::fs::read_to_string("/proc/thread-self/stat").ok().and_then(|s| stat_cpu(&s).map(|(_, t)| t));
    EXITED_SIM_TICKS.fetch_add(own.unwrap_or(0), Ordering::Relaxed);
}

/// CPU ticks (1/100 s) used by the in-process cloud, over the whole run: its threads that
/// run and those that exited.
fn sim_cpu_ticks() -> u64 {
    thread_cpu_ticks("sim") + EXITED_SIM_TICKS.load(Ordering::Relaxed)
}

/// CPU ticks (1/100 s) used by the devices: the whole process (threads that exited
/// included) but the in-process cloud.
fn device_cpu_ticks() -> u64 {
    let all = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| stat_cpu(&s).map(|(_, t)| t)).unwrap_or(0);
    all.saturating_sub(sim_cpu_ticks())
}

/// CPU ticks (1/100 s) used by this process's threads whose name starts with `prefix`.
fn thread_cpu_ticks(prefix: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return 0 };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|s| stat_cpu(&s).filter(|(name, _)| name.starts_with(prefix)).map(|(_, t)| t))
        .sum()
}

/// The name and the user + system CPU ticks of a `/proc/.../stat` line.
fn stat_cpu(stat: &str) -> Option<(&str, u64)> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let f: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    Some((stat.get(open + 1..close)?, f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?))
}

fn print_latency(h: &Mutex<Option<Histogram<u64>>>) -> Result<(), &'static str> {
    let h = h.lock().map_err(|_| "histogram lock")?;
    let h = h.as_ref().ok_or("no histogram")?;
    println!(
        "reply latency µs: p50 {}  p90 {}  p99 {}  max {}",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.max()
    );
    Ok(())
}

/// The run's accounting, the same for the SDK and the comparison clients: every request
/// begins once and ends once, as done, an error or a timeout; a reply that answers no
/// request is an error too.
#[derive(Default)]
struct Stats {
    done: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    /// Requests begun and not ended.
    inflight: AtomicU64,
    hist: Mutex<Option<Histogram<u64>>>,
    stop: AtomicBool,
}

impl Stats {
    fn new() -> Result<Stats, Box<dyn std::error::Error>> {
        let s = Stats::default();
        *s.hist.lock().map_err(|_| "histogram lock")? = Some(Histogram::new_with_bounds(1, 600_000_000, 3)?);
        Ok(s)
    }

    /// A request goes out.
    fn begin(&self) {
        self.inflight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request ended: done (its latency timed from `started`), or not (`None`), timed
    /// out or not.
    fn end(&self, done: Option<Instant>, timed_out: bool) {
        self.inflight.fetch_sub(1, Ordering::Relaxed);
        match done {
            Some(started) => {
                self.done.fetch_add(1, Ordering::Relaxed);
                let us = started.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
                if let Ok(mut h) = self.hist.lock() {
                    if let Some(h) = h.as_mut() {
                        let _ = h.record(us.max(1));
                    }
                }
            }
            None if timed_out => {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// An SDK request ended with this result.
    fn record(&self, started: Instant, r: Result<(), enos_client::Error>) {
        match r {
            Ok(()) => self.end(Some(started), false),
            Err(enos_client::Error::Request(enos_client::RequestError::TimedOut(_))) => self.end(None, true),
            Err(_) => self.end(None, false),
        }
    }

    /// A reply that answers no request (unknown id, unreadable).
    fn wrong_reply(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits (up to `limit`) for the requests still in flight to end; how many did not.
    async fn drain(&self, limit: Duration) -> u64 {
        let until = Instant::now() + limit;
        while self.inflight.load(Ordering::Relaxed) > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.inflight.load(Ordering::Relaxed)
    }

    /// The errors, timeouts and requests that never ended, as printed.
    fn failures(&self, unanswered: u64) -> String {
        format!(
            "errors {}, timeouts {}{}",
            self.errors.load(Ordering::Relaxed),
            self.timeouts.load(Ordering::Relaxed),
            if unanswered > 0 { format!(", {unanswered} never ended") } else { String::new() }
        )
    }
}

static CA: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();

fn options(url: &str, pk: &str, dk: &str, secret: &str, timeout: u64) -> ClientOptions {
    let mut o = ClientOptions::new(url, pk, dk);
    o.device_secret = Some(secret.into());
    o.request_timeout = timeout;
    o.ca = CA.get().cloned().flatten();
    o
}

/// What the SDK's run needs from `main`.
struct Run {
    args: Args,
    url: String,
    stats: Arc<Stats>,
    rss_start: u64,
    in_process: bool,
    /// Called once every device is connected, before the load starts.
    connected: Box<dyn FnOnce() -> Result<(), Box<dyn std::error::Error>> + Send>,
}

/// Connects the devices (or the gateway) on driver `R`, prints the connect figures, and
/// starts the load; when and at what CPU the load started (`None`: `--idle`).
async fn sdk<R: LoadRuntime>(run: Run) -> Result<Option<(Instant, (u64, u64))>, Box<dyn std::error::Error>> {
    let Run { args, url, stats, rss_start, in_process, connected: on_connected } = run;
    // Connect.
    let t0 = Instant::now();
    let mut clients: Vec<DeviceClient<R>> = Vec::new();
    let mut gateway: Option<(GatewayClient<R>, Vec<DeviceKeys>)> = None;
    if args.gateway_subs > 0 {
        let g = GatewayClient::<R>::new(options(&url, GATEWAY_PRODUCT, GATEWAY, GATEWAY_SECRET, args.timeout))?;
        R::into_future(g.connect()).await?;
        let subs: Vec<SubDeviceInfo> = (0..args.gateway_subs)
            .map(|i| {
                SubDeviceInfo::new(DeviceKeys::new(SUB_PRODUCT, format!("sub_{i}")).expect("valid keys"), FLEET_SECRET)
            })
            .collect();
        for chunk in subs.chunks(1000) {
            let login = g.sub_device_management().batch_login_sub_device(chunk.to_vec(), RequestOptions::new());
            let r = R::into_future(login).await?;
            if !r.data.failed.is_empty() {
                return Err(format!("{} sub-devices refused", r.data.failed.len()).into());
            }
        }
        let keys = subs.into_iter().map(|s| s.keys).collect();
        gateway = Some((g, keys));
    } else {
        // At most `connect_parallelism` at once, each where the driver runs user code.
        for first in (0..args.devices).step_by(args.connect_parallelism.max(1)) {
            let last = (first + args.connect_parallelism.max(1)).min(args.devices);
            let (tx, rx) = mpsc::channel();
            for i in first..last {
                let (url, timeout, tx) = (url.clone(), args.timeout, tx.clone());
                R::run(async move {
                    let o = options(&url, DEVICE_PRODUCT, &format!("load_{i}"), FLEET_SECRET, timeout);
                    let c = match DeviceClient::<R>::new(o) {
                        Ok(c) => R::into_future(c.connect()).await.ok().map(|_| c),
                        Err(_) => None,
                    };
                    let _ = tx.send(c);
                });
            }
            drop(tx);
            clients.extend(rx.into_iter().flatten());
        }
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    let connected = if gateway.is_some() { args.gateway_subs } else { clients.len() };
    println!(
        "connected {connected} {} in {connect_secs:.2} s: {:.0} per second{}",
        if gateway.is_some() { "sub-devices (one gateway)" } else { "devices" },
        connected as f64 / connect_secs,
        if gateway.is_none() && clients.len() < args.devices {
            format!(" ({} failed)", args.devices - clients.len())
        } else {
            String::new()
        }
    );
    let rss = status_kib("VmRSS:");
    println!(
        "resident memory: {} KiB at start, {} KiB connected: {:.1} KiB per {}{}",
        rss_start,
        rss,
        rss.saturating_sub(rss_start) as f64 / connected.max(1) as f64,
        if gateway.is_some() { "sub-device" } else { "device" },
        if in_process { " (this process also runs the cloud)" } else { "" }
    );
    if connected == 0 {
        return Err("no device connected: nothing to measure".into());
    }
    if args.idle {
        return Ok(None);
    }
    on_connected()?;

    // Load.
    let cpu0 = (device_cpu_ticks(), sim_cpu_ticks());
    let t1 = Instant::now();
    let interval = args.rate.map(|r| Duration::from_secs_f64(1.0 / r.max(0.001)));
    if let Some((g, keys)) = &gateway {
        let keys = Arc::new(keys.clone());
        for w in 0..args.window {
            let (g, keys, stats, batch) = (g.clone(), keys.clone(), stats.clone(), args.batch);
            R::run(async move {
                let mut next = w * batch;
                while !stats.stop.load(Ordering::Relaxed) {
                    // Timed from before the batch is built, as every request is.
                    let started = Instant::now();
                    let entries: Vec<BatchEntry<TypicalPoints>> = (0..batch)
                        .map(|j| BatchEntry::of(keys[(next + j) % keys.len()].clone(), TypicalPoints::new(), None))
                        .collect();
                    next += batch * 7;
                    stats.begin();
                    let r = R::into_future(g.request(MeasurepointBatchPost::new(entries), RequestOptions::new()));
                    stats.record(started, r.await.map(drop));
                }
            });
        }
    } else {
        for c in &clients {
            for _ in 0..args.window {
                let (c, stats) = (c.clone(), stats.clone());
                R::run(async move {
                    let mut tick = Instant::now();
                    while !stats.stop.load(Ordering::Relaxed) {
                        // At a rate, a request that is already due when the one before
                        // it ends (it waited behind a slow one) counts from when it was
                        // due, so that wait shows in its latency; one sent on time counts
                        // from when it goes, not from the timer's coarse wake-up.
                        let started = match interval {
                            Some(every) => {
                                let due = tick;
                                tick += every;
                                if Instant::now() >= due {
                                    due
                                } else {
                                    R::sleep_until(due).await;
                                    Instant::now()
                                }
                            }
                            None => Instant::now(),
                        };
                        stats.begin();
                        let r = R::into_future(
                            c.request(MeasurepointPost::new(TypicalPoints::new()), RequestOptions::new()),
                        );
                        stats.record(started, r.await.map(drop));
                    }
                });
            }
        }
    }
    Ok(Some((t1, cpu0)))
}

/// With `--drop-replies N`: the in-process cloud drops the next N replies.
fn drop_replies(n: Option<u32>, sim: &Option<Sim>) -> Result<(), Box<dyn std::error::Error>> {
    match (n, sim) {
        (Some(n), Some(sim)) => {
            sim.drop_replies(n);
            Ok(())
        }
        (Some(_), None) => Err("--drop-replies needs the in-process cloud".into()),
        (None, _) => Ok(()),
    }
}

/// With `--drop-replies N`, the run fails unless exactly N requests timed out and no other
/// failed: each lost reply must show, once.
fn dropped_as_timeouts(dropped: Option<u32>, stats: &Stats) -> Result<(), Box<dyn std::error::Error>> {
    let Some(n) = dropped else { return Ok(()) };
    let (timeouts, errors) = (stats.timeouts.load(Ordering::Relaxed), stats.errors.load(Ordering::Relaxed));
    if timeouts != u64::from(n) || errors != 0 {
        return Err(format!("{n} replies dropped, but counted {timeouts} timeouts and {errors} errors").into());
    }
    println!("the {n} dropped replies were counted as {n} timeouts");
    Ok(())
}

/// A run in which no request succeeded fails: its figures would mean nothing (a smoke run
/// in CI then shows it).
fn nothing_done(done: u64) -> Result<(), Box<dyn std::error::Error>> {
    if done == 0 {
        return Err("no request succeeded".into());
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = Args::parse();
    if args.sequential {
        args.window = 1;
    }
    let _ = CA.set(args.ca.as_ref().map(std::fs::read).transpose()?);
    if let Some(n) = args.core_sessions {
        let before = status_kib("VmRSS:");
        let sessions: Vec<enos_proto::Client> = (0..n).map(|_| enos_benches::connected_client()).collect();
        let after = status_kib("VmRSS:");
        println!(
            "core session: size_of::<Client>() = {} bytes; {n} connected idle sessions hold {:.2} KiB each (resident memory, heap included)",
            std::mem::size_of::<enos_proto::Client>(),
            after.saturating_sub(before) as f64 / n as f64
        );
        drop(sessions);
        return Ok(());
    }
    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.load_threads)
        .thread_name("load")
        .enable_all()
        .build()?;
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.sim_threads)
        .thread_name("sim")
        .on_thread_stop(sim_thread_stops)
        .enable_all()
        .build()?;
    let (url, sim) = match &args.broker {
        Some(u) => (u.clone(), None),
        None => {
            let mut registry = Registry::builtin();
            registry.add_fleet(args.devices);
            registry.max_sub_devices_online = args.gateway_subs.max(200);
            let gw = DeviceKeys::new(GATEWAY_PRODUCT, GATEWAY)?;
            for i in 0..args.gateway_subs {
                let k = DeviceKeys::new(SUB_PRODUCT, format!("sub_{i}"))?;
                registry.add_device(k.clone(), Some(FLEET_SECRET.into()))?;
                registry.add_topology(&gw, k);
            }
            registry.history_limit = args.history;
            let sim = sim_rt.block_on(Sim::builder().registry(registry).record_limit(0).start())?;
            (sim.tcp_url().ok_or("no listener")?, Some(sim))
        }
    };
    let rss_start = status_kib("VmRSS:");
    let stats = Arc::new(Stats::new()?);
    let in_process = sim.is_some();
    let sim_ref = sim.clone();
    load_rt.block_on(async move {
        if args.plain_mqtt || args.rumqttc {
            drop_replies(args.drop_replies, &sim_ref)?;
            let cpu0 = (device_cpu_ticks(), sim_cpu_ticks());
            let t1 = Instant::now();
            // On a worker of the load runtime, as the SDK's tasks are.
            let (url, seconds, window, s) = (url.clone(), args.seconds, args.window, stats.clone());
            let (rumqttc, timeout) = (args.rumqttc, Duration::from_secs(args.timeout));
            tokio::spawn(async move {
                let r = if rumqttc {
                    rumqttc_client(&url, seconds, window, timeout, &s).await
                } else {
                    plain_mqtt(&url, seconds, timeout, &s).await
                };
                r.map_err(|e| e.to_string())
            })
            .await??;
            let (done, secs) = (stats.done.load(Ordering::Relaxed), t1.elapsed().as_secs_f64());
            let cpu1 = (device_cpu_ticks(), sim_cpu_ticks());
            let per = |ticks: u64| ticks as f64 * 10_000.0 / done.max(1) as f64;
            let how = match (rumqttc, args.window) {
                (false, _) => "plain MQTT client, sequential".to_owned(),
                (true, 1) => "rumqttc client, sequential".to_owned(),
                (true, w) => format!("rumqttc client, window {w}"),
            };
            // The clients end every request they began before they return.
            let unanswered = stats.inflight.load(Ordering::Relaxed);
            println!(
                "{how}: {done} requests in {secs:.1} s: {:.0} requests/s; {}",
                done as f64 / secs,
                stats.failures(unanswered)
            );
            print_latency(&stats.hist)?;
            println!(
                "CPU per request: client {:.2} µs{}",
                per(cpu1.0 - cpu0.0),
                if in_process { format!(", local cloud {:.2} µs", per(cpu1.1 - cpu0.1)) } else { String::new() }
            );
            nothing_done(done)?;
            return dropped_as_timeouts(args.drop_replies, &stats);
        }
        let run = Run {
            args: args.clone(),
            url: url.clone(),
            stats: stats.clone(),
            rss_start,
            in_process,
            connected: Box::new(move || drop_replies(args.drop_replies, &sim_ref)),
        };
        let t1 = match args.driver {
            Driver::Tokio => sdk::<enos_transport_tokio::Tokio>(run).await?,
            Driver::Smol => sdk::<enos_transport_smol::Smol>(run).await?,
            Driver::Blocking => sdk::<enos_transport_blocking::Blocking>(run).await?,
        };
        let Some((t1, cpu0)) = t1 else { return Ok(()) };
        let gateway = args.gateway_subs > 0;
        let end = t1 + Duration::from_secs(args.seconds);
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let d = stats.done.load(Ordering::Relaxed);
            eprintln!(
                "  {:>5.1} s  {:>9} req/s  errors {}  timeouts {}",
                t1.elapsed().as_secs_f64(),
                d - last,
                stats.errors.load(Ordering::Relaxed),
                stats.timeouts.load(Ordering::Relaxed)
            );
            last = d;
            let done = args.count.is_some_and(|n| d >= n);
            if done || (args.count.is_none() && Instant::now() >= end) {
                break;
            }
        }
        let secs = t1.elapsed().as_secs_f64();
        let done = stats.done.load(Ordering::Relaxed);
        let cpu1 = (device_cpu_ticks(), sim_cpu_ticks());
        stats.stop.store(true, Ordering::Relaxed);
        // The requests in flight end (each by its timeout at the latest) before the
        // failures are counted: a lost reply shows as a timeout.
        let unanswered = stats.drain(Duration::from_secs(args.timeout + 2)).await;
        let per = |ticks: u64| ticks as f64 * 10_000.0 / done.max(1) as f64;
        let unit = if gateway { format!(" (batches of {} entries)", args.batch) } else { String::new() };
        println!(
            "{done} requests{unit} in {secs:.1} s: {:.0} requests/s; {}",
            done as f64 / secs,
            stats.failures(unanswered)
        );
        print_latency(&stats.hist)?;
        println!(
            "CPU per request: devices (SDK) {:.2} µs{}",
            per(cpu1.0 - cpu0.0),
            if in_process { format!(", local cloud {:.2} µs", per(cpu1.1 - cpu0.1)) } else { String::new() }
        );
        // Which side set the pace: a side near a whole core of its threads is the limit.
        let busy = |ticks: u64, threads: usize| ticks as f64 / (secs * 100.0 * threads.max(1) as f64) * 100.0;
        let (dev_busy, sim_busy) = (busy(cpu1.0 - cpu0.0, args.load_threads), busy(cpu1.1 - cpu0.1, args.sim_threads));
        if in_process {
            println!(
                "CPU use: devices {dev_busy:.0} % of their {} thread(s), local cloud {sim_busy:.0} % of its {}{}",
                args.load_threads,
                args.sim_threads,
                if sim_busy >= 90.0 { " (the local cloud set the pace)" } else { "" }
            );
        } else {
            println!("CPU use: devices {dev_busy:.0} % of their {} thread(s)", args.load_threads);
        }
        println!("peak resident memory: {} KiB", status_kib("VmHWM:"));
        nothing_done(done)?;
        dropped_as_timeouts(args.drop_replies, &stats)
    })?;
    drop(sim);
    Ok(())
}
