//! [`FaultProxy`]: a TCP proxy on loopback that breaks the link between a device and
//! its cloud (or broker) on command: cuts at any byte (mid-packet included), delays,
//! stalls (a connection accepted and never answered), half-open links (traffic dropped,
//! nothing closed), and refusals (a cloud that is down).
//!
//! It moves bytes without reading them, so it works for plain TCP and TLS alike.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use enos_sim::proxy::FaultProxy;
//! use enos_sim::Sim;
//!
//! let sim = Sim::builder().start().await?;
//! let proxy = FaultProxy::start(sim.tcp_addr().unwrap()).await?;
//! // Devices dial proxy.url() instead of the cloud's; then, at any time:
//! proxy.cut_after(100); // every link ends once 100 more bytes went through it
//! proxy.set_half_open(true); // traffic vanishes, nothing closes
//! proxy.set_half_open(false);
//! proxy.cut(); // every link ends now
//! assert_eq!(proxy.stats().connections, 0);
//! # Ok::<(), std::io::Error>(())
//! # }).unwrap();
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::lock;

/// What the proxy has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyStats {
    /// Links open now.
    pub connections: u64,
    /// Links accepted in all.
    pub accepted: u64,
    /// Links the proxy ended (cuts, refusals).
    pub cuts: u64,
    /// Bytes forwarded from devices to the cloud.
    pub up_bytes: u64,
    /// Bytes forwarded from the cloud to devices.
    pub down_bytes: u64,
}

#[derive(Debug, Default)]
struct Policy {
    delay: Option<Duration>,
    /// Bytes (either way) each link may still carry before it is cut.
    cut_after: Option<u64>,
}

#[derive(Debug)]
struct Inner {
    upstream: SocketAddr,
    policy: Mutex<Policy>,
    half_open: AtomicBool,
    stall: AtomicBool,
    refuse: AtomicBool,
    /// Bumped to end every link open at that moment.
    generation: watch::Sender<u64>,
    connections: AtomicU64,
    accepted: AtomicU64,
    cuts: AtomicU64,
    up_bytes: AtomicU64,
    down_bytes: AtomicU64,
}

/// A fault-injecting TCP proxy in front of one upstream address, listening on
/// `127.0.0.1` on a free port. Dropping it stops it and ends its links.
#[derive(Debug)]
pub struct FaultProxy {
    inner: Arc<Inner>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// A proxy to `upstream`, on a free loopback port, on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// The bind error.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            upstream,
            policy: Mutex::new(Policy::default()),
            half_open: AtomicBool::new(false),
            stall: AtomicBool::new(false),
            refuse: AtomicBool::new(false),
            generation: watch::Sender::new(0),
            connections: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            up_bytes: AtomicU64::new(0),
            down_bytes: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept_loop(inner.clone(), listener));
        Ok(FaultProxy { inner, addr, task })
    }

    /// The address devices dial.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `tcp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("tcp://{}", self.addr)
    }

    /// Ends every open link now (the device sees its connection close).
    pub fn cut(&self) {
        self.inner.generation.send_modify(|g| *g += 1);
    }

    /// Ends each link once `bytes` more bytes (either way) went through it: the last
    /// chunk is cut at that byte, so a packet can end half sent. Applies to the links
    /// open now and to later ones, until [`clear_cut_after`](Self::clear_cut_after).
    pub fn cut_after(&self, bytes: u64) {
        lock(&self.inner.policy).cut_after = Some(bytes);
    }

    /// No more cuts after a number of bytes.
    pub fn clear_cut_after(&self) {
        lock(&self.inner.policy).cut_after = None;
    }

    /// Holds each chunk this long before forwarding it (`None`: no delay).
    pub fn set_delay(&self, d: Option<Duration>) {
        lock(&self.inner.policy).delay = d;
    }

    /// Half-open links: while on, bytes either way are read and dropped, and nothing is
    /// closed, as a NAT that forgot the flow or a cable pulled out far away.
    pub fn set_half_open(&self, on: bool) {
        self.inner.half_open.store(on, Ordering::SeqCst);
    }

    /// While on, new links are accepted and never answered (their bytes dropped).
    pub fn set_stall(&self, on: bool) {
        self.inner.stall.store(on, Ordering::SeqCst);
    }

    /// While on, new links are closed as soon as they are accepted: a cloud that is down.
    pub fn set_refuse(&self, on: bool) {
        self.inner.refuse.store(on, Ordering::SeqCst);
    }

    /// What it has done so far.
    pub fn stats(&self) -> ProxyStats {
        let i = &self.inner;
        ProxyStats {
            connections: i.connections.load(Ordering::SeqCst),
            accepted: i.accepted.load(Ordering::SeqCst),
            cuts: i.cuts.load(Ordering::SeqCst),
            up_bytes: i.up_bytes.load(Ordering::SeqCst),
            down_bytes: i.down_bytes.load(Ordering::SeqCst),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    loop {
        let Ok((device, _)) = listener.accept().await else { continue };
        inner.accepted.fetch_add(1, Ordering::SeqCst);
        if inner.refuse.load(Ordering::SeqCst) {
            inner.cuts.fetch_add(1, Ordering::SeqCst);
            drop(device);
            continue;
        }
        let _ = device.set_nodelay(true);
        tokio::spawn(link(inner.clone(), device));
    }
}

/// Counts a link open for as long as it lives.
struct Open(Arc<Inner>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn link(inner: Arc<Inner>, device: TcpStream) {
    inner.connections.fetch_add(1, Ordering::SeqCst);
    let _open = Open(inner.clone());
    let mut ended = inner.generation.subscribe();
    ended.mark_unchanged();
    if inner.stall.load(Ordering::SeqCst) {
        // Accepted, never answered: what the device sends is read and dropped.
        let (mut r, _w) = device.into_split();
        let mut buf = vec![0u8; 4096];
        tokio::select! {
            _ = async { while matches!(r.read(&mut buf).await, Ok(n) if n > 0) {} } => {}
            _ = ended.changed() => { inner.cuts.fetch_add(1, Ordering::SeqCst); }
        }
        return;
    }
    let Ok(cloud) = TcpStream::connect(inner.upstream).await else {
        inner.cuts.fetch_add(1, Ordering::SeqCst);
        return;
    };
    let _ = cloud.set_nodelay(true);
    // The bytes this link may still carry, shared by both directions.
    let budget = Arc::new(Mutex::new(lock(&inner.policy).cut_after));
    let (dr, dw) = device.into_split();
    let (cr, cw) = cloud.into_split();
    let up = pump(inner.clone(), dr, cw, budget.clone(), true);
    let down = pump(inner.clone(), cr, dw, budget, false);
    tokio::select! {
        cut = up => if cut { inner.cuts.fetch_add(1, Ordering::SeqCst); },
        cut = down => if cut { inner.cuts.fetch_add(1, Ordering::SeqCst); },
        _ = ended.changed() => { inner.cuts.fetch_add(1, Ordering::SeqCst); }
    }
    // Both halves drop here: the device and the cloud each see their link close.
}

/// Forwards one direction until EOF, an error or the link's byte budget runs out
/// (then true: the proxy cut it).
async fn pump(
    inner: Arc<Inner>,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    budget: Arc<Mutex<Option<u64>>>,
    up: bool,
) -> bool {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        if inner.half_open.load(Ordering::SeqCst) {
            continue;
        }
        let (delay, limit) = {
            let p = lock(&inner.policy);
            (p.delay, p.cut_after)
        };
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        // A budget set after the link opened applies from now.
        let allowed = {
            let mut b = lock(&budget);
            if b.is_none() {
                *b = limit;
            }
            match b.as_mut() {
                Some(left) => {
                    let take = (*left).min(n as u64) as usize;
                    *left -= take as u64;
                    Some(take)
                }
                None => None,
            }
        };
        let send = allowed.unwrap_or(n);
        if send > 0 && to.write_all(&buf[..send]).await.is_err() {
            return false;
        }
        let counter = if up { &inner.up_bytes } else { &inner.down_bytes };
        counter.fetch_add(send as u64, Ordering::SeqCst);
        if allowed.is_some_and(|a| a < n) || matches!(*lock(&budget), Some(0)) {
            let _ = to.flush().await;
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
        let mut all = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all)).await.expect("not closed");
        all
    }

    #[tokio::test]
    async fn forwards_both_ways_and_cuts_at_the_byte_it_was_told() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"hello");
        // 7 more bytes in all: 4 up, echoed as 3 down before the cut mid-chunk.
        proxy.cut_after(7);
        s.write_all(b"abcd").await.unwrap();
        let got = read_until_closed(&mut s).await;
        assert_eq!(got, b"abc", "cut after the seventh byte");
        assert_eq!(proxy.stats().cuts, 1);
        assert_eq!(proxy.stats().up_bytes + proxy.stats().down_bytes, 10 + 7);
    }

    #[tokio::test]
    async fn cut_ends_every_link_and_refuse_closes_new_ones() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
        a.write_all(b"x").await.unwrap();
        b.write_all(b"y").await.unwrap();
        let mut one = [0u8; 1];
        a.read_exact(&mut one).await.unwrap();
        b.read_exact(&mut one).await.unwrap();
        proxy.cut();
        assert!(read_until_closed(&mut a).await.is_empty());
        assert!(read_until_closed(&mut b).await.is_empty());
        proxy.set_refuse(true);
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(read_until_closed(&mut c).await.is_empty());
        assert_eq!(proxy.stats().cuts, 3);
    }

    #[tokio::test]
    async fn half_open_and_stalled_links_drop_traffic_and_stay_open() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        proxy.set_half_open(true);
        s.write_all(b"lost").await.unwrap();
        let mut buf = [0u8; 4];
        let r = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await;
        assert!(r.is_err(), "nothing came back, and the link did not close");
        proxy.set_half_open(false);
        s.write_all(b"back").await.unwrap();
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"back");
        proxy.set_stall(true);
        let mut t = TcpStream::connect(proxy.addr()).await.unwrap();
        t.write_all(b"hello?").await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(300), t.read(&mut buf)).await;
        assert!(r.is_err(), "a stalled link neither answers nor closes");
        assert_eq!(proxy.stats().connections, 2);
    }
}
