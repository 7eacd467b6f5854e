//! A small load run against the simulator: N devices, each keeping a window of measure
//! point posts in flight, driven by the SDK's core on tokio. It prints requests answered
//! per second, reply latency percentiles, the connect rate, and memory.
//!
//! In-process (the simulator in the same process):
//!     cargo run --release -p enos-sim --example sim_load -- --devices 100 --window 100 --seconds 10
//! Against a simulator in another process (for 10,000 devices: each process has its own
//! file descriptor limit):
//!     enos-sim serve --fleet 10000 --record 0 &
//!     cargo run --release -p enos-sim --example sim_load -- --addr 127.0.0.1:11883 --sim-pid $! --devices 10000 --window 1

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use enos_proto::ops::MeasurepointPost;
use enos_proto::{Client, CloseCause, Config, Credentials, DeviceKeys, Event, Now, Output, RequestOptions};
use enos_sim::registry::defaults::{DEVICE_PRODUCT, FLEET_SECRET};
use enos_sim::{Registry, Sim};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

struct Args {
    addr: Option<SocketAddr>,
    sim_pid: Option<u32>,
    devices: usize,
    window: usize,
    seconds: u64,
}

fn args() -> Args {
    let mut a = Args { addr: None, sim_pid: None, devices: 100, window: 100, seconds: 10 };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < v.len() {
        let val = &v[i + 1];
        match v[i].as_str() {
            "--addr" => a.addr = Some(val.parse().expect("--addr host:port")),
            "--sim-pid" => a.sim_pid = Some(val.parse().expect("--sim-pid N")),
            "--devices" => a.devices = val.parse().expect("--devices N"),
            "--window" => a.window = val.parse().expect("--window N"),
            "--seconds" => a.seconds = val.parse().expect("--seconds N"),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

fn cpu_ms(pid: &str) -> u64 {
    // utime + stime in clock ticks (100 per second on Linux).
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
        * 10
}

#[derive(Default)]
struct Stats {
    done: AtomicU64,
    errors: AtomicU64,
}

struct Shared {
    stats: Stats,
    lat: Mutex<Vec<u32>>,
    connected: AtomicU64,
    stop: std::sync::atomic::AtomicBool,
}

async fn device(
    addr: SocketAddr,
    i: usize,
    window: usize,
    sh: Arc<Shared>,
    mut go: tokio::sync::watch::Receiver<bool>,
) {
    let stats = &sh.stats;
    let mut config = Config::new(
        DeviceKeys::new(DEVICE_PRODUCT, format!("load_{i}")).unwrap(),
        Credentials::DeviceSecret(FLEET_SECRET.into()),
    );
    config.reconnect_period = Duration::ZERO;
    let mut core = Client::new(config, Now::system()).unwrap();
    let mut s: Option<TcpStream> = None;
    let mut buf = vec![0u8; 16 * 1024];
    let mut started = std::collections::HashMap::new();
    let mut samples = Vec::new();
    let mut running = false;
    let points = serde_json::json!({"temp": 21.5, "humidity": 48.25, "pressure": 1013.2, "voltage": 229.8, "current": 4.71, "power": 1082.3, "energy": 123456.78, "status": 1});
    loop {
        if running {
            if sh.stop.load(Ordering::Relaxed) {
                break;
            }
            while started.len() < window {
                let now = Now::system();
                match core.request(now, MeasurepointPost::new(&points), RequestOptions::default()) {
                    Ok(id) => {
                        started.insert(id, now.instant);
                    }
                    Err(_) => break,
                }
            }
        }
        let wake = loop {
            match core.poll_output() {
                Output::Transmit(b) => {
                    if let Some(st) = &mut s {
                        if st.write_all(&b).await.is_err() {
                            s = None;
                            core.handle_closed(Now::system(), CloseCause::Eof);
                        }
                    }
                }
                Output::OpenTransport => match TcpStream::connect(addr).await {
                    Ok(st) => {
                        let _ = st.set_nodelay(true);
                        s = Some(st);
                        core.handle_connected(Now::system());
                    }
                    Err(e) => core.handle_closed(Now::system(), e.into()),
                },
                Output::CloseTransport => s = None,
                Output::Event(Event::Connected { .. }) => {
                    sh.connected.fetch_add(1, Ordering::Relaxed);
                    let _ = go.wait_for(|g| *g).await;
                    running = true;
                }
                Output::Event(Event::Response { id, result }) => {
                    if let Some(t0) = started.remove(&id) {
                        if result.is_ok() {
                            stats.done.fetch_add(1, Ordering::Relaxed);
                            samples.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        } else {
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Output::Event(Event::Disconnected { .. }) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    sh.lat.lock().await.extend(samples);
                    return;
                }
                Output::Wait(at) => break at,
                _ => {}
            }
        };
        let Some(st) = &mut s else { break };
        // Wake at least every 100 ms to see the stop flag.
        let cap = Instant::now() + Duration::from_millis(100);
        let sleep = tokio::time::sleep_until(wake.unwrap_or(cap).min(cap).into());
        tokio::select! {
            r = st.read(&mut buf) => match r {
                Ok(0) | Err(_) => core.handle_closed(Now::system(), CloseCause::Eof),
                Ok(n) => core.handle_input(Now::system(), &buf[..n]),
            },
            _ = sleep => core.handle_timeout(Now::system()),
        }
    }
    sh.lat.lock().await.extend(samples);
}

fn pct(v: &[u32], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() - 1) as f64 * p) as usize] as f64 / 1000.0
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let (addr, sim) = match a.addr {
            Some(addr) => (addr, None),
            None => {
                let mut r = Registry::builtin();
                r.add_fleet(a.devices);
                let sim = Sim::builder().registry(r).record_limit(0).start().await.unwrap();
                (sim.tcp_addr().unwrap(), Some(sim))
            }
        };
        let sim_pid = a.sim_pid.map(|p| p.to_string()).unwrap_or_else(|| "self".into());
        let rss_before = rss_kib(&sim_pid);
        let sh = Arc::new(Shared {
            stats: Stats::default(),
            lat: Mutex::new(Vec::new()),
            connected: AtomicU64::new(0),
            stop: std::sync::atomic::AtomicBool::new(false),
        });
        let (go_tx, go_rx) = tokio::sync::watch::channel(false);
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..a.devices {
            let (sh, go) = (sh.clone(), go_rx.clone());
            let window = a.window;
            tasks.push(tokio::spawn(async move { device(addr, i, window, sh, go).await }));
        }
        // The measured phase starts once every device is connected.
        while (sh.connected.load(Ordering::Relaxed) as usize) < a.devices {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if t0.elapsed() > Duration::from_secs(120) {
                println!("only {} of {} devices connected in 120 s", sh.connected.load(Ordering::Relaxed), a.devices);
                break;
            }
        }
        let connect_time = t0.elapsed();
        let rss_connected = rss_kib(&sim_pid);
        println!(
            "connected {} devices in {:.2} s: {:.0} connects/s",
            a.devices,
            connect_time.as_secs_f64(),
            a.devices as f64 / connect_time.as_secs_f64()
        );
        println!(
            "simulator resident memory: {} KiB before, {} KiB with the devices connected: {:.1} KiB per device{}",
            rss_before,
            rss_connected,
            (rss_connected.saturating_sub(rss_before)) as f64 / a.devices as f64,
            if sim.is_some() { " (in-process: clients included)" } else { "" }
        );
        if a.window == 0 {
            return;
        }
        let cpu0 = (cpu_ms("self"), cpu_ms(&sim_pid));
        let t1 = Instant::now();
        let end = t1 + Duration::from_secs(a.seconds);
        let _ = go_tx.send(true);
        let stats = &sh.stats;
        let mut last = 0;
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let d = stats.done.load(Ordering::Relaxed);
            eprintln!("  {:>4.0} s  {:>9} req/s", t1.elapsed().as_secs_f64(), d - last);
            last = d;
        }
        let secs = t1.elapsed().as_secs_f64();
        let done = stats.done.load(Ordering::Relaxed);
        let cpu1 = (cpu_ms("self"), cpu_ms(&sim_pid));
        sh.stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let mut v = std::mem::take(&mut *sh.lat.lock().await);
        v.sort_unstable();
        println!(
            "{} devices, window {}: {:.0} requests answered/s over {:.1} s ({} requests, {} errors)",
            a.devices,
            a.window,
            done as f64 / secs,
            secs,
            done,
            stats.errors.load(Ordering::Relaxed)
        );
        println!(
            "reply latency ms (sample of {}): p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}",
            v.len(),
            pct(&v, 0.5),
            pct(&v, 0.9),
            pct(&v, 0.99),
            v.last().copied().unwrap_or(0) as f64 / 1000.0
        );
        if sim.is_none() {
            println!(
                "CPU per request: load process {:.2} µs, simulator {:.2} µs",
                (cpu1.0 - cpu0.0) as f64 * 1000.0 / done.max(1) as f64,
                (cpu1.1 - cpu0.1) as f64 * 1000.0 / done.max(1) as f64
            );
        } else {
            println!(
                "CPU per request (simulator and clients together): {:.2} µs",
                (cpu1.0 - cpu0.0) as f64 * 1000.0 / done.max(1) as f64
            );
        }
        drop(sim);
    });
}
