//! `enos-faults`: a device keeps posting measure points while its link to the local cloud
//! is cut again and again, through a fault-injecting proxy; then every post is looked up
//! in the cloud. Prints one table row per driver: posts sent, delivered, duplicated,
//! failed (with reasons), silently lost (must be 0), cuts, and peak memory.
//!
//! Half the cuts end the link at once, half after a random number of bytes (most often
//! mid-packet); after each, the cloud refuses reconnects for a while with a chance of
//! one in two, so that posts made meanwhile go to the offline store and come back as
//! resumes. A post that ends `Ok` must be in the cloud; one that ends with an error
//! may be there (a reply lost with its link) or not; one that never ends fails the run.
//!
//!     cargo run --release -p enos-benches --bin enos-faults -- --driver all
//!     cargo run --release -p enos-benches --bin enos-faults -- --posts 2000 --cuts 10 --driver tokio
//!     cargo run --release -p enos-benches --bin enos-faults -- --half-open --driver all

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use enos_benches::{status_kib, LoadRuntime};
use enos_client::{
    ClientOptions, DeviceClient, DeviceKeys, Error, GatewayClient, RequestError, RequestOptions, SubDeviceInfo,
};
use enos_proto::ops::{BatchEntry, MeasurepointBatchPost};
use enos_proto::store::{FileStore, Fsync, OfflineStore};
use enos_sim::proxy::FaultProxy;
use enos_sim::registry::defaults::*;
use enos_sim::{Registry, Sim, SimThread};

#[derive(Parser, Clone)]
#[command(name = "enos-faults", about = "Posts through a link that keeps breaking, then every post looked up")]
struct Args {
    /// Which driver the device runs on (`all`: each in turn).
    #[arg(long, value_enum, default_value_t = Driver::All)]
    driver: Driver,
    /// Measure point posts in all.
    #[arg(long, default_value_t = 10_000)]
    posts: u64,
    /// Cuts of the link, spread over the posts.
    #[arg(long, default_value_t = 50)]
    cuts: u64,
    /// Posts made per second, whatever the link does.
    #[arg(long, default_value_t = 2_000.0)]
    rate: f64,
    /// Seed of the cut points.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds the whole run may take before it fails.
    #[arg(long, default_value_t = 600)]
    deadline: u64,
    /// Instead: a half-open link (traffic dropped, nothing closed) must be found by the
    /// keep-alive, and the session come back.
    #[arg(long)]
    half_open: bool,
    /// Instead: the device runs as a child process with a file store, and is killed
    /// (SIGKILL) this many times while it posts or sends what it stored; every post its
    /// store accepted must reach the cloud.
    #[arg(long)]
    kills: Option<u32>,
    /// Instead: a gateway with this many logged-in sub-devices through `--cuts` cuts; all
    /// must be logged in again after each, and a batch post of all of them arrive.
    #[arg(long)]
    gateway_subs: Option<usize>,
    /// (The child of --kills.) Its store file.
    #[arg(long, hide = true)]
    child_store: Option<std::path::PathBuf>,
    /// (The child of --kills.) The cloud's URL.
    #[arg(long, hide = true, default_value = "")]
    child_url: String,
    /// (The child of --kills.) The values it posts, from..to.
    #[arg(long, hide = true, default_value_t = 0)]
    child_from: u64,
    #[arg(long, hide = true, default_value_t = 0)]
    child_to: u64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Driver {
    Tokio,
    Smol,
    Blocking,
    All,
}

/// How each post ended, by index; `None` while it has not.
type Outcomes = Arc<Mutex<Vec<Option<Result<(), String>>>>>;

/// The time of post `i`: its index is its value and its time.
const T0: u64 = 1_700_000_000_000;

struct Run {
    args: Args,
    sim: SimThread,
    proxy: Arc<FaultProxy>,
    device: DeviceKeys,
}

/// A row of the table.
struct Row {
    driver: &'static str,
    sent: u64,
    delivered: u64,
    duplicates: u64,
    failed: BTreeMap<String, u64>,
    failed_but_arrived: u64,
    lost: u64,
    cuts: u64,
    stored: u64,
    peak_kib: u64,
    longest_outage: Duration,
    seconds: f64,
}

/// Runs `$f::<Runtime>($args)` on the runtime of driver `$d` (tokio entered for it).
macro_rules! on_driver {
    ($d:expr, $f:ident($($a:expr),*)) => {
        match $d {
            Driver::Tokio => {
                let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
                let _g = rt.enter();
                $f::<enos_transport_tokio::Tokio>($($a),*)
            }
            Driver::Smol => $f::<enos_transport_smol::Smol>($($a),*),
            Driver::Blocking => $f::<enos_transport_blocking::Blocking>($($a),*),
            Driver::All => unreachable!("expanded before"),
        }
    };
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if let Some(path) = &args.child_store {
        return on_driver!(args.driver, child(&args, path));
    }
    let proxy_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name("proxy").enable_all().build()?;
    let drivers: Vec<Driver> = match args.driver {
        Driver::All => vec![Driver::Tokio, Driver::Smol, Driver::Blocking],
        d => vec![d],
    };
    let mut failed = false;
    if args.half_open {
        println!("| driver | half-open link found by | session back after |");
        println!("|---|---|---|");
    } else if args.gateway_subs.is_some() {
        println!("| driver | sub-devices | cuts | all logged in again after | slowest re-login | batch posts of all delivered | seconds |");
        println!("|---|---|---|---|---|---|---|");
    } else if args.kills.is_some() {
        println!("| driver | device runs | SIGKILLs | posts the store accepted | in the cloud | duplicates | lost | torn bytes cut off on reopening | seconds |");
        println!("|---|---|---|---|---|---|---|---|---|");
    } else {
        println!(
            "| driver | posts | delivered | duplicates | failed (reasons) | failed, yet in the cloud | lost | cuts | longest outage | stored offline | peak RSS | seconds |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    }
    for d in drivers {
        let mut registry = Registry::builtin();
        registry.history_limit = usize::try_from(args.posts * 4).unwrap_or(usize::MAX).max(1_000);
        if let Some(n) = args.gateway_subs {
            registry.history_limit = 4;
            registry.max_sub_devices_online = registry.max_sub_devices_online.max(n);
            let gw = DeviceKeys::new(GATEWAY_PRODUCT, GATEWAY)?;
            for i in 0..n {
                let k = DeviceKeys::new(SUB_PRODUCT, format!("sub_{i}"))?;
                registry.add_device(k.clone(), Some(FLEET_SECRET.into()))?;
                registry.add_topology(&gw, k);
            }
        }
        let sim = SimThread::start(Sim::builder().registry(registry))?;
        let upstream = sim.tcp_addr().ok_or("the cloud has no TCP listener")?;
        let proxy = Arc::new(proxy_rt.block_on(FaultProxy::start(upstream))?);
        let run = Run { args: args.clone(), sim, proxy, device: DeviceKeys::new(DEVICE_PRODUCT, DEVICE)? };
        let result = if args.half_open {
            on_driver!(d, half_open(&run, d))
        } else if args.kills.is_some() {
            kills(&run, d)
        } else if args.gateway_subs.is_some() {
            on_driver!(d, gateway(&run, d))
        } else {
            on_driver!(d, posts(&run, d))
        };
        match result {
            Ok(ok) => failed |= !ok,
            Err(e) => {
                eprintln!("{d:?}: {e}");
                failed = true;
            }
        }
    }
    if failed {
        return Err("a post was lost, or the run did not finish".into());
    }
    Ok(())
}

fn name(d: Driver) -> &'static str {
    match d {
        Driver::Tokio => "tokio",
        Driver::Smol => "smol",
        Driver::Blocking => "blocking",
        Driver::All => "all",
    }
}

/// The device, through the proxy, with store-and-forward in memory and quick reconnects.
fn client<R: LoadRuntime>(run: &Run, keep_alive: Duration) -> Result<DeviceClient<R>, Box<dyn std::error::Error>> {
    let mut o = ClientOptions::new(run.proxy.url(), DEVICE_PRODUCT, DEVICE);
    o.device_secret = Some(DEVICE_SECRET.into());
    o.offline_store = Some(OfflineStore::memory());
    let (mut config, transport) = o.build()?;
    config.reconnect_period = Duration::from_millis(100);
    config.max_reconnect_period = Duration::from_millis(800);
    config.request_timeout = Duration::from_secs(5);
    config.keep_alive = keep_alive;
    config.ping_timeout = keep_alive;
    config.max_queued_requests = 100_000;
    Ok(DeviceClient::<R>::from_parts(config, transport))
}

/// The reason of a failed post, as the table counts it.
fn reason(e: &Error) -> String {
    match e {
        Error::Request(RequestError::TimedOut(_)) => "timed out".into(),
        Error::Request(RequestError::Rejected { code, .. }) => format!("refused {code}"),
        Error::Request(RequestError::Dropped) => "dropped".into(),
        Error::Request(RequestError::ConnectionLost) => "connection lost".into(),
        other => other.to_string(),
    }
}

/// The seeded generator of the cut points and kill times (xorshift64).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number below `n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Cut number `k` of every open link: at once when `k` is even, else once a random number
/// of bytes went through it (mid-packet, most often), `traffic` giving it something to
/// carry; when no link ended within `wait`, at once.
fn cut(proxy: &FaultProxy, k: u64, rng: &mut Rng, wait: Duration, traffic: impl FnOnce()) {
    let before = proxy.stats().cuts;
    if k % 2 == 0 {
        proxy.cut();
    } else {
        proxy.cut_after(rng.below(4_000));
        traffic();
    }
    let until = Instant::now() + wait;
    while proxy.stats().cuts == before && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    proxy.clear_cut_after();
    if proxy.stats().cuts == before {
        // Too little traffic for the bytes drawn: cut now.
        proxy.cut();
    }
}

/// How many times each value of `temp` is in the device's history in the cloud.
fn arrivals(run: &Run) -> Result<BTreeMap<u64, u64>, Box<dyn std::error::Error>> {
    let history = run.sim.sim().device(&run.device).ok_or("the device is not in the cloud")?.history;
    let mut count = BTreeMap::new();
    for (_, point, stamped) in &history {
        if let Some(v) = stamped.value.as_f64().filter(|_| point == "temp") {
            *count.entry(v as u64).or_default() += 1;
        }
    }
    Ok(count)
}

/// Cuts the link `args.cuts` times over `span`: half at once, half after a random number
/// of bytes (mid-packet, most often); after each, with a chance of one in two, the cloud
/// refuses reconnects for up to half the time to the next cut.
/// Returns the longest time the session took to come back after a cut.
fn cut_loop<R: LoadRuntime>(proxy: &FaultProxy, c: &DeviceClient<R>, args: &Args, span: Duration) -> Duration {
    let mut rng = Rng::new(args.seed);
    let start = Instant::now();
    let every = span / u32::try_from(args.cuts + 1).unwrap_or(u32::MAX);
    let mut longest = Duration::ZERO;
    let mut cut_at: Option<Instant> = None;
    // A cut needs a link: waits for the session to be back from the last one.
    let mut back = |cut_at: Option<Instant>| {
        let wait = Instant::now() + Duration::from_secs(30);
        while !c.connected() && Instant::now() < wait {
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Some(t) = cut_at {
            longest = longest.max(t.elapsed());
        }
    };
    // The proxy counts the cuts that ended a link: an attempt that found none open (the
    // session between two links) is made again, up to twice as many attempts in all.
    let base = proxy.stats().cuts;
    let mut k = 0;
    while proxy.stats().cuts - base < args.cuts && k < 2 * args.cuts {
        k += 1;
        let at = start + every * u32::try_from(k.min(args.cuts)).unwrap_or(u32::MAX);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        back(cut_at);
        // The posts flowing give the link its traffic.
        cut(proxy, k, &mut rng, Duration::from_secs(1), || {});
        cut_at = Some(Instant::now());
        if rng.below(2) == 0 {
            proxy.set_refuse(true);
            let most = u64::try_from(every.as_millis() / 2).unwrap_or(u64::MAX).max(1);
            std::thread::sleep(Duration::from_millis(rng.below(most)));
            proxy.set_refuse(false);
        }
    }
    back(cut_at);
    longest
}

/// Prints the run's row; whether nothing was lost.
fn posts<R: LoadRuntime>(run: &Run, d: Driver) -> Result<bool, Box<dyn std::error::Error>> {
    let name = name(d);
    let args = &run.args;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.deadline);
    let c = client::<R>(run, Duration::from_secs(5))?;
    enos_transport_blocking::block_on(R::into_future(c.connect()))?;
    let outcomes: Outcomes = Arc::new(Mutex::new(vec![None; args.posts as usize]));
    let ended = Arc::new(AtomicU64::new(0));
    // The cuts, on a clock of their own: spread over the time the posts take.
    let span = Duration::from_secs_f64(args.posts as f64 / args.rate);
    let cutter = {
        let (proxy, c, args) = (run.proxy.clone(), c.clone(), args.clone());
        std::thread::spawn(move || cut_loop(&proxy, &c, &args, span))
    };
    // The posts, at a steady rate whatever the link does (open loop): made while the
    // link is down, they go to the offline store.
    for i in 0..args.posts {
        let at = started + Duration::from_secs_f64(i as f64 / args.rate);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        let (c, outcomes, ended) = (c.clone(), outcomes.clone(), ended.clone());
        R::run(async move {
            let points = serde_json::json!({ "temp": i as f64 });
            let r = R::into_future(c.device_data().post_measurepoint_at(points, T0 + i, RequestOptions::new())).await;
            lock(&outcomes)[i as usize] = Some(r.map(drop).map_err(|e| reason(&e)));
            ended.fetch_add(1, Ordering::SeqCst);
        });
    }
    let longest_outage = cutter.join().map_err(|_| "the cut thread panicked")?;
    while ended.load(Ordering::SeqCst) < args.posts {
        if Instant::now() > deadline {
            let open = args.posts - ended.load(Ordering::SeqCst);
            return Err(format!("{name}: {open} posts never ended").into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let seconds = started.elapsed().as_secs_f64();
    let stats = c.offline_stats();
    // Every post, looked up in the cloud's history by its value.
    let count = arrivals(run)?;
    let seen = |i: usize| count.get(&(i as u64)).copied().unwrap_or(0);
    let outcomes = lock(&outcomes);
    let mut row = Row {
        driver: name,
        sent: args.posts,
        delivered: 0,
        duplicates: 0,
        failed: BTreeMap::new(),
        failed_but_arrived: 0,
        lost: 0,
        cuts: run.proxy.stats().cuts,
        stored: stats.stored,
        peak_kib: status_kib("VmHWM:"),
        longest_outage,
        seconds,
    };
    for (i, o) in outcomes.iter().enumerate() {
        row.duplicates += seen(i).saturating_sub(1);
        match o {
            Some(Ok(())) if seen(i) > 0 => row.delivered += 1,
            Some(Ok(())) => row.lost += 1,
            Some(Err(r)) => {
                *row.failed.entry(r.clone()).or_default() += 1;
                row.failed_but_arrived += u64::from(seen(i) > 0);
            }
            None => return Err(format!("{name}: post {i} never ended").into()),
        }
    }
    drop(outcomes);
    enos_transport_blocking::block_on(R::into_future(c.close()))?;
    let reasons: Vec<String> = row.failed.iter().map(|(r, n)| format!("{n} {r}")).collect();
    let failed_n: u64 = row.failed.values().sum();
    println!(
        "| {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} ms | {} | {:.1} MiB | {:.1} |",
        row.driver,
        row.sent,
        row.delivered,
        row.duplicates,
        failed_n,
        if reasons.is_empty() { "none".into() } else { reasons.join(", ") },
        row.failed_but_arrived,
        row.lost,
        row.cuts,
        row.longest_outage.as_millis(),
        row.stored,
        row.peak_kib as f64 / 1024.0,
        row.seconds
    );
    Ok(row.lost == 0)
}

/// A link that goes silent without closing: the keep-alive must find it, and the session
/// come back; a post made meanwhile arrives.
fn half_open<R: LoadRuntime>(run: &Run, d: Driver) -> Result<bool, Box<dyn std::error::Error>> {
    let name = name(d);
    let keep_alive = Duration::from_secs(1);
    let c = client::<R>(run, keep_alive)?;
    enos_transport_blocking::block_on(R::into_future(c.connect()))?;
    // A first post subscribes its reply topic: what follows waits on nothing but the link.
    let warm = c.device_data().post_measurepoint(serde_json::json!({ "temp": 0.5 }), RequestOptions::new());
    enos_transport_blocking::block_on(R::into_future(warm))?;
    let started = Instant::now();
    run.proxy.set_half_open(true);
    let post = {
        let c = c.clone();
        std::thread::spawn(move || {
            let points = serde_json::json!({ "temp": 1.5 });
            enos_transport_blocking::block_on(R::into_future(
                c.device_data().post_measurepoint(points, RequestOptions::new()),
            ))
        })
    };
    while c.connected() {
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!("{name}: the half-open link was never found").into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let found = started.elapsed();
    run.proxy.set_half_open(false);
    while !c.connected() {
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!("{name}: the session never came back").into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let back = started.elapsed();
    let r = post.join().map_err(|_| "the post's thread panicked")?;
    // A post moved to the offline store comes back as a resume: in the history, not the
    // last values.
    let arrived = run
        .sim
        .sim()
        .device(&run.device)
        .is_some_and(|d| d.history.iter().any(|(_, point, v)| point == "temp" && v.value == 1.5));
    println!(
        "| {name} | {:.2} s (keep-alive {} s) | {:.2} s; the post made on the dead link: {} |",
        found.as_secs_f64(),
        keep_alive.as_secs(),
        back.as_secs_f64(),
        match (&r, arrived) {
            (Ok(_), true) => "delivered".to_string(),
            (Err(e), a) => format!("{} ({})", reason(e), if a { "in the cloud" } else { "not in the cloud" }),
            (Ok(_), false) => return Err(format!("{name}: the post ended Ok and is not in the cloud").into()),
        }
    );
    enos_transport_blocking::block_on(R::into_future(c.close()))?;
    Ok(true)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The device of `--kills`, in a process of its own: a file store, the cloud reached
/// through the parent's proxy. It posts values `from..to` one after the other, printing
/// `stored I` once post I is in the store (the cloud is away while it posts), then
/// `posted`, and goes on sending what it stored until it is killed; with nothing to post
/// it prints `drained` once the store is empty, and exits.
fn child<R: LoadRuntime>(args: &Args, path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let file = FileStore::open(path, Fsync::Always)?;
    println!("recovered {}", file.recovered());
    let store = OfflineStore::new(file);
    let mut o = ClientOptions::new(args.child_url.clone(), DEVICE_PRODUCT, DEVICE);
    o.device_secret = Some(DEVICE_SECRET.into());
    o.offline_store = Some(store.clone());
    let (mut config, transport) = o.build()?;
    config.retry_first_connect = true;
    config.reconnect_period = Duration::from_millis(50);
    config.max_reconnect_period = Duration::from_millis(200);
    config.request_timeout = Duration::from_secs(5);
    let c = DeviceClient::<R>::from_parts(config, transport);
    {
        let c = c.clone();
        R::run(async move {
            let _ = R::into_future(c.connect()).await;
        });
    }
    // The connect call starts the client (its first dial waits for the cloud).
    std::thread::sleep(Duration::from_millis(50));
    for i in args.child_from..args.child_to {
        let before = c.offline_stats().stored;
        let c2 = c.clone();
        R::run(async move {
            let points = serde_json::json!({ "temp": i as f64 });
            let r = R::into_future(c2.device_data().post_measurepoint_at(points, T0 + i, RequestOptions::new())).await;
            println!("{} {i}", if r.is_ok() { "ok" } else { "err" });
        });
        let wait = Instant::now() + Duration::from_secs(2);
        while c.offline_stats().stored == before && Instant::now() < wait {
            std::thread::sleep(Duration::from_micros(100));
        }
        if c.offline_stats().stored > before {
            println!("stored {i}");
        }
    }
    println!("posted");
    let mut delivered = 0;
    loop {
        if args.child_from == args.child_to && store.is_empty() {
            println!("drained");
            return Ok(());
        }
        let now = c.offline_stats().delivered;
        if now != delivered {
            delivered = now;
            println!("delivered {now}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The lines a child printed, read on a thread of their own.
struct ChildOut {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl ChildOut {
    fn spawn(d: Driver, path: &std::path::Path, url: &str, from: u64, to: u64) -> std::io::Result<ChildOut> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args(["--driver", name(d), "--child-url", url])
            .arg("--child-store")
            .arg(path)
            .args(["--child-from", &from.to_string(), "--child-to", &to.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let out = child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout"))?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(ChildOut { child, lines })
    }

    /// The next line within `d`.
    fn next(&self, d: Duration) -> Option<String> {
        self.lines.recv_timeout(d).ok()
    }

    /// SIGKILL, then every line it printed before it died.
    fn kill(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.lines.iter().collect()
    }
}

/// `--kills N`: the device is killed N times (the first while it posts, the others while
/// it sends what it stored), restarted on its store file each time; then a last run sends
/// what is left. Every post the store accepted (`stored I`) must be in the cloud.
fn kills(run: &Run, d: Driver) -> Result<bool, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let kills = run.args.kills.unwrap_or(3).max(1);
    let dir = std::env::temp_dir().join(format!("enos-faults-{}-{}", std::process::id(), name(d)));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("offline.log");
    let per_run = (run.args.posts / u64::from(kills)).max(1);
    let mut rng = Rng::new(run.args.seed);
    let mut accepted = std::collections::BTreeSet::new();
    let mut recovered = 0u64;
    let mut read = |lines: &[String], accepted: &mut std::collections::BTreeSet<u64>| {
        for l in lines {
            if let Some(i) = l.strip_prefix("stored ").and_then(|n| n.parse::<u64>().ok()) {
                accepted.insert(i);
            }
            if let Some(n) = l.strip_prefix("recovered ").and_then(|n| n.parse::<u64>().ok()) {
                recovered += n;
            }
        }
    };
    let wait = Duration::from_secs(30);
    for k in 0..u64::from(kills) {
        // The cloud is away while the device posts: every post goes to its store.
        run.proxy.set_refuse(true);
        run.proxy.cut();
        let (from, to) = (k * per_run, (k + 1) * per_run);
        let child = ChildOut::spawn(d, &path, &run.proxy.url(), from, to)?;
        let mut seen = Vec::new();
        if k == 0 {
            // Killed while it posts.
            let stop_after = 1 + rng.below(per_run.max(2) - 1);
            let mut stored = 0;
            while stored < stop_after {
                let Some(l) = child.next(wait) else { return Err("the device stopped printing".into()) };
                stored += u64::from(l.starts_with("stored "));
                let posted = l == "posted";
                seen.push(l);
                if posted {
                    break;
                }
            }
        } else {
            // Killed while it sends what it stored (this run's and the last runs' records).
            loop {
                let Some(l) = child.next(wait) else { return Err("the device stopped printing".into()) };
                let posted = l == "posted";
                seen.push(l);
                if posted {
                    break;
                }
            }
            run.proxy.set_refuse(false);
            // Once some (not all) of them are through.
            let stop_after = 1 + rng.below(per_run / 2);
            loop {
                let Some(l) = child.next(wait) else { return Err("the device stopped printing".into()) };
                let through = l.strip_prefix("delivered ").and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
                seen.push(l);
                if through >= stop_after {
                    break;
                }
            }
        }
        seen.extend(child.kill());
        read(&seen, &mut accepted);
    }
    // The last run: the cloud is there, and nothing new is posted.
    run.proxy.set_refuse(false);
    let last = ChildOut::spawn(d, &path, &run.proxy.url(), 0, 0)?;
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(run.args.deadline);
    loop {
        let Some(l) = last.next(deadline.saturating_duration_since(Instant::now())) else {
            return Err("the last run never emptied its store".into());
        };
        let done = l == "drained";
        seen.push(l);
        if done {
            break;
        }
    }
    seen.extend(last.kill());
    read(&seen, &mut accepted);
    let count = arrivals(run)?;
    let arrived = accepted.iter().filter(|i| count.contains_key(i)).count() as u64;
    let duplicates: u64 = count.values().map(|n| n - 1).sum();
    let lost = accepted.len() as u64 - arrived;
    println!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} |",
        name(d),
        kills + 1,
        kills,
        accepted.len(),
        arrived,
        duplicates,
        lost,
        recovered,
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(lost == 0 && !accepted.is_empty())
}

/// `--gateway-subs N`: a gateway with N logged-in sub-devices through `--cuts` cuts; after
/// each, every sub-device must be logged in again in the cloud, and a batch post of all of
/// them must arrive.
fn gateway<R: LoadRuntime>(run: &Run, d: Driver) -> Result<bool, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let n = run.args.gateway_subs.unwrap_or(1_000);
    let mut o = ClientOptions::new(run.proxy.url(), GATEWAY_PRODUCT, GATEWAY);
    o.device_secret = Some(GATEWAY_SECRET.into());
    let (mut config, transport) = o.build()?;
    config.reconnect_period = Duration::from_millis(100);
    config.max_reconnect_period = Duration::from_millis(800);
    config.request_timeout = Duration::from_secs(10);
    let g = GatewayClient::<R>::from_parts(config, transport);
    enos_transport_blocking::block_on(R::into_future(g.connect()))?;
    let subs: Vec<SubDeviceInfo> = (0..n)
        .map(|i| DeviceKeys::new(SUB_PRODUCT, format!("sub_{i}")).map(|k| SubDeviceInfo::new(k, FLEET_SECRET)))
        .collect::<Result<_, _>>()?;
    for chunk in subs.chunks(1000) {
        let login = g.sub_device_management().batch_login_sub_device(chunk.to_vec(), RequestOptions::new());
        let r = enos_transport_blocking::block_on(R::into_future(login))?;
        if !r.data.failed.is_empty() {
            return Err(format!("{} sub-devices refused", r.data.failed.len()).into());
        }
    }
    let keys: Vec<DeviceKeys> = subs.into_iter().map(|s| s.keys).collect();
    let all_online = || run.sim.sim().with_cloud(|cloud| keys.iter().all(|k| cloud.is_online(k)));
    let (mut relogged, mut delivered, mut slowest) = (0, 0, Duration::ZERO);
    let mut rng = Rng::new(run.args.seed);
    for k in 0..run.args.cuts {
        // A post gives the link the traffic to be cut in.
        cut(&run.proxy, k, &mut rng, Duration::from_secs(2), || {
            let _ = enos_transport_blocking::block_on(R::into_future(
                g.device_data().post_measurepoint(serde_json::json!({"temp": 0.5}), RequestOptions::new()),
            ));
        });
        let cut_at = Instant::now();
        // The cloud forgets the logins with the link; the gateway's re-login restores them.
        let wait = Instant::now() + Duration::from_secs(30);
        while !(g.connected() && all_online()) && Instant::now() < wait {
            std::thread::sleep(Duration::from_millis(5));
        }
        if !all_online() {
            eprintln!("{}: after cut {k}, not every sub-device is logged in again", name(d));
            continue;
        }
        relogged += 1;
        slowest = slowest.max(cut_at.elapsed());
        let value = k as f64 + 1.0;
        let entries =
            keys.iter().map(|s| BatchEntry::of(s.clone(), serde_json::json!({ "temp": value }), None)).collect();
        let post = g.device_data().batch_post_measurepoint(MeasurepointBatchPost::new(entries), RequestOptions::new());
        if enos_transport_blocking::block_on(R::into_future(post)).is_ok()
            && run.sim.sim().with_cloud(|cloud| {
                keys.iter().all(|s| {
                    cloud
                        .registry
                        .devices
                        .get(s)
                        .is_some_and(|d| d.measurepoints.get("temp").is_some_and(|p| p.value == value))
                })
            })
        {
            delivered += 1;
        }
    }
    enos_transport_blocking::block_on(R::into_future(g.close()))?;
    println!(
        "| {} | {n} | {} | {relogged} | {} ms | {delivered} | {:.1} |",
        name(d),
        run.args.cuts,
        slowest.as_millis(),
        started.elapsed().as_secs_f64()
    );
    Ok(relogged == run.args.cuts && delivered == run.args.cuts)
}
