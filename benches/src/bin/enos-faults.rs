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
use enos_client::{ClientOptions, DeviceClient, DeviceKeys, Error, RequestError, RequestOptions};
use enos_proto::store::OfflineStore;
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
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
    } else {
        println!(
            "| driver | posts | delivered | duplicates | failed (reasons) | failed, yet in the cloud | lost | cuts | longest outage | stored offline | peak RSS | seconds |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    }
    for d in drivers {
        let mut registry = Registry::builtin();
        registry.history_limit = usize::try_from(args.posts * 4).unwrap_or(usize::MAX).max(1_000);
        let sim = SimThread::start(Sim::builder().registry(registry))?;
        let upstream = sim.tcp_addr().ok_or("the cloud has no TCP listener")?;
        let proxy = Arc::new(proxy_rt.block_on(FaultProxy::start(upstream))?);
        let run = Run { args: args.clone(), sim, proxy, device: DeviceKeys::new(DEVICE_PRODUCT, DEVICE)? };
        let result = match (d, args.half_open) {
            (Driver::Tokio, false) => {
                let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
                let _g = rt.enter();
                posts::<enos_transport_tokio::Tokio>(&run, "tokio")
            }
            (Driver::Smol, false) => posts::<enos_transport_smol::Smol>(&run, "smol"),
            (Driver::Blocking, false) => posts::<enos_transport_blocking::Blocking>(&run, "blocking"),
            (Driver::Tokio, true) => {
                let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
                let _g = rt.enter();
                half_open::<enos_transport_tokio::Tokio>(&run, "tokio")
            }
            (Driver::Smol, true) => half_open::<enos_transport_smol::Smol>(&run, "smol"),
            (Driver::Blocking, true) => half_open::<enos_transport_blocking::Blocking>(&run, "blocking"),
            (Driver::All, _) => unreachable!("expanded above"),
        };
        match result {
            Ok(Some(row)) => {
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
                failed |= row.lost > 0;
            }
            Ok(None) => {}
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

/// Cuts the link `args.cuts` times over `span`: half at once, half after a random number
/// of bytes (mid-packet, most often); after each, with a chance of one in two, the cloud
/// refuses reconnects for up to half the time to the next cut.
/// Returns the longest time the session took to come back after a cut.
fn cut_loop<R: LoadRuntime>(proxy: &FaultProxy, c: &DeviceClient<R>, args: &Args, span: Duration) -> Duration {
    let mut rng = args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut rand = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n.max(1)
    };
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
    for k in 0..args.cuts {
        let at = start + every * u32::try_from(k + 1).unwrap_or(u32::MAX);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        back(cut_at);
        let before = proxy.stats().cuts;
        if k % 2 == 0 {
            proxy.cut();
        } else {
            proxy.cut_after(rand(4_000));
        }
        let wait = Instant::now() + Duration::from_secs(1);
        while proxy.stats().cuts == before && Instant::now() < wait {
            std::thread::sleep(Duration::from_millis(1));
        }
        proxy.clear_cut_after();
        if proxy.stats().cuts == before {
            // Too little traffic for the bytes drawn: cut now.
            proxy.cut();
        }
        cut_at = Some(Instant::now());
        if rand(2) == 0 {
            proxy.set_refuse(true);
            let most = u64::try_from(every.as_millis() / 2).unwrap_or(u64::MAX).max(1);
            std::thread::sleep(Duration::from_millis(rand(most)));
            proxy.set_refuse(false);
        }
    }
    back(cut_at);
    longest
}

fn posts<R: LoadRuntime>(run: &Run, name: &'static str) -> Result<Option<Row>, Box<dyn std::error::Error>> {
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
    let history = run.sim.sim().device(&run.device).ok_or("the device is not in the cloud")?.history;
    let mut seen = vec![0u64; args.posts as usize];
    for (_, point, stamped) in &history {
        if point == "temp" {
            if let Some(i) = stamped.value.as_f64().map(|v| v as usize).filter(|i| *i < seen.len()) {
                seen[i] += 1;
            }
        }
    }
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
        row.duplicates += seen[i].saturating_sub(1);
        match o {
            Some(Ok(())) if seen[i] > 0 => row.delivered += 1,
            Some(Ok(())) => row.lost += 1,
            Some(Err(r)) => {
                *row.failed.entry(r.clone()).or_default() += 1;
                row.failed_but_arrived += u64::from(seen[i] > 0);
            }
            None => return Err(format!("{name}: post {i} never ended").into()),
        }
    }
    drop(outcomes);
    enos_transport_blocking::block_on(R::into_future(c.close()))?;
    Ok(Some(row))
}

/// A link that goes silent without closing: the keep-alive must find it, and the session
/// come back; a post made meanwhile arrives.
fn half_open<R: LoadRuntime>(run: &Run, name: &'static str) -> Result<Option<Row>, Box<dyn std::error::Error>> {
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
    let arrived =
        run.sim.sim().device(&run.device).is_some_and(|d| d.measurepoints.get("temp").is_some_and(|p| p.value == 1.5));
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
    Ok(None)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
