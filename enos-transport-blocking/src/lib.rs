//! The EnOS IoT device SDK for code without an async runtime: [`DeviceClient`] and
//! [`GatewayClient`], named like the vendor's Node.js SDK, over `std::net` TCP and TLS
//! (rustls, inside the core). No tokio, no async-io, no executor.
//!
//! Every call blocks until its reply or its timeout. The client is `Send + Sync`: share
//! it (or clones of it) between threads, each call waits on its own.
//!
//! # Quick start, against the built-in local cloud
//!
//! ```
//! use enos_sim::{registry::defaults::*, Sim, SimThread};
//! use enos_transport_blocking::{ClientOptions, DeviceClient, RequestOptions};
//! use serde_json::json;
//!
//! let sim = SimThread::start(Sim::builder())?;
//! let mut options = ClientOptions::new(sim.tcp_url().unwrap(), DEVICE_PRODUCT, DEVICE);
//! options.device_secret = Some(DEVICE_SECRET.into());
//! let client = DeviceClient::new(options)?;
//! client.connect()?;
//!
//! // Post measure points; the reply is typed (the seed's `{id, code, data, message}`).
//! let r = client.device_data().post_measurepoint(json!({"temp": 21.5}), RequestOptions::new())?;
//! assert_eq!(r.code, 200);
//!
//! // Answer a service invocation from the cloud, on a handler thread.
//! client.device_command().on_invoke_service("reset", None, |_cmd, res| res.ok(json!({"done": true})));
//! let device = enos_proto::DeviceKeys::new(DEVICE_PRODUCT, DEVICE)?;
//! let reply = sim.block_on(move |s| async move { s.invoke_service(&device, "reset", json!({})).await })?;
//! assert_eq!(reply.data, json!({"done": true}));
//! client.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Threads, queues and their policies
//!
//! * A connected client has two threads: one dials and reads, one keeps the core's
//!   timers, acts on what the core asks of the transport, and finishes writes the socket
//!   does not take at once. The bytes of a request are written by the thread that makes
//!   it, so a request wakes no other thread on its way out; and a call waits for its
//!   reply by reading the socket itself while no other thread reads it, so that the reply
//!   wakes no other thread either (what it reads for others it hands to them). The
//!   reading thread reads while no call waits, and takes the socket back at most 10 ms
//!   after the last call ended: a command that comes just then waits that long. Both
//!   threads end at `close()` or when the last handle is dropped. A thread costs what its
//!   stack touches (they are started with 256 KiB of stack) and a kernel stack: see
//!   `benches/README.md` for the figure.
//! * Command handlers run on the client's own handler threads: at most
//!   [`HANDLER_THREADS`] by default ([`Blocking::with_handler_threads`]), started when
//!   commands come and ended after a minute without one. A handler that panics answers
//!   1102; the thread goes on with the next command.
//! * The queues and their bounds are those of every driver: the core's request queue
//!   (`SubmitError::QueueFull` past it), calls waiting while more than
//!   [`WRITE_BACKLOG_HIGH`] bytes wait for the socket, at most 64 commands in the
//!   handlers' hands and 1,024 waiting (1102 past that), 1,024 events per subscriber.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::io::ErrorKind::{Interrupted, TimedOut, WouldBlock};
use std::io::{self, Read};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use enos_client::{run_blocking, BlockingHandler, Closing, IntoHandler, Link, Todo, WriteQueue};
use enos_proto::options::Transport;
use enos_proto::{CloseCause, Command};

pub use enos_client::{
    BatchEntry, BatchLoginResult, ClientError, ClientEvent, ClientOptions, ConfigError, DeviceInfo, DeviceKeys,
    DisconnectCause, Error, Firmware, LoginResult, Outcome, Qos, RegisteredDevice, RequestError, RequestOptions,
    Responder, Response, Secret, SecureMode, SubDeviceInfo, SubmitError, TopoEntry, TslTemplate, DOWNLOAD_CHUNK,
    WRITE_BACKLOG_HIGH,
};
pub use enos_proto as proto;

/// A device's connection on plain threads: the seed's `DeviceClient`.
pub type DeviceClient = enos_client::DeviceClient<Blocking>;
/// A gateway's connection on plain threads: the seed's `GatewayClient`.
pub type GatewayClient = enos_client::GatewayClient<Blocking>;
/// A subscription to a client's events: `recv()` blocks, `try_recv()` does not.
pub type Events = enos_client::Events<Blocking>;
/// The seed's `deviceData`.
pub type DeviceData<'a> = enos_client::DeviceData<'a, Blocking>;
/// The seed's `deviceCommand`.
pub type DeviceCommand<'a> = enos_client::DeviceCommand<'a, Blocking>;
/// The seed's `subDeviceManagement`.
pub type SubDeviceManagement<'a> = enos_client::SubDeviceManagement<'a, Blocking>;
/// OTA and the thing model.
pub type Ota<'a> = enos_client::Ota<'a, Blocking>;
/// The integration channel's calls (`DeviceClient::integration`).
pub type Integration<'a> = enos_client::Integration<'a, Blocking>;

/// Handler threads a client starts at most, by default.
pub const HANDLER_THREADS: usize = 4;
/// How long a handler thread waits for a command before it ends.
const HANDLER_IDLE: Duration = Duration::from_secs(60);
/// Stack of the connection threads: reserved, and only touched as used. A compressing
/// session builds its codec's state (some 200 KiB for GZIP, made on the stack before it
/// is boxed in unoptimized builds) on them.
const STACK: usize = 1024 * 1024;
/// How long one write may block before the writer looks at its timers again.
const WRITE_SLICE: Duration = Duration::from_millis(50);
/// The longest the keeping thread sleeps.
const KEEPER_NAP: Duration = Duration::from_secs(1);
/// How long the reading thread leaves the socket to the callers before it reads again.
const TURN_NAP: Duration = Duration::from_millis(10);
/// How long the last bytes (a DISCONNECT) may take after `close()`.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Plain threads, as the client uses them: calls block, handlers run on the client's
/// handler threads, a connection is two threads.
#[derive(Clone)]
pub struct Blocking {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Blocking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blocking").field("handler_threads", &self.pool.max).finish()
    }
}

impl Default for Blocking {
    fn default() -> Self {
        Blocking::with_handler_threads(HANDLER_THREADS)
    }
}

impl Blocking {
    /// A runtime whose clients run at most `n` (at least one) command handlers at once.
    /// Give it to [`DeviceClient::with_runtime`](enos_client::DeviceClient::with_runtime).
    pub fn with_handler_threads(n: usize) -> Self {
        let pool = Pool { max: n.max(1), state: Mutex::new(PoolState::default()), ready: Condvar::new() };
        Blocking { pool: Arc::new(pool) }
    }
}

impl enos_client::Runtime for Blocking {
    type Wait<F: Future> = F::Output;
    fn wait<F: Future>(f: F) -> F::Output {
        run(f, true)
    }
    fn into_future<F>(output: F::Output) -> impl Future<Output = F::Output> + Send
    where
        F: Future + Send,
        F::Output: Send,
    {
        std::future::ready(output)
    }

    type Handler = BlockingHandler;
    fn run_handler(&self, handler: &BlockingHandler, command: Command, responder: Responder) {
        Pool::execute(&self.pool, (handler.clone(), command, responder));
    }

    fn start(&self, link: Link<Self>) -> Result<(), Error> {
        let spawn = |name: &str| thread::Builder::new().name(name.into()).stack_size(STACK);
        let conn = Arc::new_cyclic(|me| Conn {
            link,
            wire: Wire::default(),
            out: Mutex::new(Out::default()),
            dirty: AtomicBool::new(false),
            keeper: OnceLock::new(),
            waker: Waker::from(Arc::new(Flush(me.clone()))),
        });
        let reader = Arc::downgrade(&conn);
        spawn("enos-read").spawn(move || read_loop(&reader)).map_err(|e| Error::Runtime(e.to_string()))?;
        // If this one cannot start, the reader ends with the connection.
        spawn("enos-keep").spawn(move || keep_loop(&conn)).map_err(|e| Error::Runtime(e.to_string()))?;
        Ok(())
    }
}

impl IntoHandler<()> for Blocking {
    fn handler<F>(f: F) -> BlockingHandler
    where
        F: Fn(Command, Responder) + Send + Sync + 'static,
    {
        Arc::new(f)
    }
}

/// Handlers that answer at once may also return `std::future::ready(())`, so that code
/// written for every driver registers the same closures.
impl IntoHandler<std::future::Ready<()>> for Blocking {
    fn handler<F>(f: F) -> BlockingHandler
    where
        F: Fn(Command, Responder) -> std::future::Ready<()> + Send + Sync + 'static,
    {
        // A `Ready` future has run its work when it is made; nothing is left to poll.
        Arc::new(move |c, r| drop(f(c, r)))
    }
}

/// Wakes a thread parked in [`block_on`].
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future on this thread, parking it while the future waits: how a blocking call
/// waits for its reply. The futures of `enos-client` need nothing but their waker.
pub fn block_on<F: Future>(f: F) -> F::Output {
    run(f, false)
}

thread_local! {
    /// The connection this thread last woke to write (a request it made).
    static WROTE: Cell<Option<Weak<Conn>>> = const { Cell::new(None) };
}

/// Runs `f` on this thread. With `reads`, as a call waits: a caller whose request went
/// out reads the socket itself while nobody else does, so that its reply wakes no other
/// thread; otherwise, and while another reads, it parks.
fn run<F: Future>(f: F, reads: bool) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    let (mut conn, mut turn) = (None, None);
    WROTE.take();
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        follow(&mut conn, &mut turn, WROTE.take().filter(|_| reads));
        if turn.is_none() {
            turn = conn.as_ref().and_then(Weak::upgrade).and_then(|c| c.take_turn());
        }
        match &turn {
            Some(t) if t.read() => {}
            Some(_) => turn = None,
            None => thread::park(),
        }
    }
}

/// A waiting caller reads the connection it last wrote to (`wrote`, when it wrote). A turn
/// it holds on another connection is given back: a future that calls two clients (a
/// firmware fetched from one host while progress goes to the cloud) must read the reply
/// of its latest call, not sit out a read slice on the socket of the one before.
fn follow<C, T>(conn: &mut Option<Weak<C>>, turn: &mut Option<T>, wrote: Option<Weak<C>>) {
    let Some(w) = wrote else { return };
    if !conn.as_ref().is_some_and(|c| c.ptr_eq(&w)) {
        *turn = None;
    }
    *conn = Some(w);
}

// ----- handler threads -----

type Job = (BlockingHandler, Command, Responder);

struct Pool {
    max: usize,
    state: Mutex<PoolState>,
    ready: Condvar,
}

#[derive(Default)]
struct PoolState {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
}

impl Pool {
    /// Queues a job (the core bounds how many exist) and starts a thread when none is
    /// idle and fewer than `max` run.
    fn execute(pool: &Arc<Pool>, job: Job) {
        let mut st = lock(&pool.state);
        st.jobs.push_back(job);
        if st.idle > 0 || st.threads >= pool.max {
            pool.ready.notify_one();
            return;
        }
        st.threads += 1;
        drop(st);
        let p = pool.clone();
        if let Err(e) = thread::Builder::new().name("enos-handler".into()).spawn(move || p.work()) {
            tracing::warn!(error = %e, "no handler thread");
            let mut st = lock(&pool.state);
            st.threads -= 1;
            if st.threads == 0 {
                // Nobody to run them: their responders answer 1102.
                let jobs = std::mem::take(&mut st.jobs);
                drop(st);
                drop(jobs);
            }
        }
    }

    fn work(&self) {
        let mut st = lock(&self.state);
        loop {
            if let Some((h, command, responder)) = st.jobs.pop_front() {
                drop(st);
                run_blocking(&h, command, responder);
                st = lock(&self.state);
                continue;
            }
            st.idle += 1;
            let (guard, wait) = self.ready.wait_timeout(st, HANDLER_IDLE).unwrap_or_else(|e| e.into_inner());
            st = guard;
            st.idle -= 1;
            if wait.timed_out() && st.jobs.is_empty() {
                st.threads -= 1;
                return;
            }
        }
    }
}

// ----- a connection: the reading thread, the keeping thread, and writes where they come -----

/// One connection's threads and what they share.
struct Conn {
    link: Link<Blocking>,
    wire: Wire,
    /// The write side: whoever holds it drains the core and writes.
    out: Mutex<Out>,
    /// The core may have new bytes: set before anyone tries for `out`.
    dirty: AtomicBool,
    /// The keeping thread, woken when it has work.
    keeper: OnceLock<Thread>,
    /// The link's waker, a [`Flush`] of this connection.
    waker: Waker,
}

#[derive(Default)]
struct Out {
    wq: WriteQueue,
    stream: Option<Arc<TcpStream>>,
    epoch: u64,
    /// The core's next deadline.
    wake_at: Option<Instant>,
    /// Until when the keeping thread sleeps: woken only for a deadline before it.
    sleeping_until: Option<Instant>,
    /// A write found the socket full: the keeping thread finishes it.
    stalled: bool,
    finished: bool,
}

/// What the reading thread and the others share: dial orders, the current transport and
/// whose turn it is to read it, and the end.
#[derive(Default)]
struct Wire {
    state: Mutex<WireState>,
    changed: Condvar,
}

#[derive(Default)]
struct WireState {
    /// A dial asked for, by epoch.
    dial: Option<u64>,
    /// The current transport, and who reads it.
    read: Option<Reading>,
    /// Transports of this epoch and before are closed.
    closed: u64,
    exit: bool,
}

/// A transport (read by one thread at a time, written by whoever holds `out`) and who
/// reads it.
struct Reading {
    epoch: u64,
    stream: Arc<TcpStream>,
    by: Reader,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// Nobody: a caller that waits for its reply takes the turn.
    Free,
    /// The connection's reading thread.
    Thread,
    /// A caller waiting for its reply.
    Caller,
}

/// A turn at reading a transport: the reading thread's, or a caller's (given back when
/// dropped).
struct Turn {
    conn: Weak<Conn>,
    epoch: u64,
    stream: Arc<TcpStream>,
    by: Reader,
}

impl Turn {
    /// Reads once and feeds the core; `false` once the transport has ended (or, for the
    /// reading thread, once it is no longer its turn). A caller reads no longer than
    /// until the core's next deadline, and keeps that deadline itself.
    #[inline(never)] // its buffer is on the stack only while it reads
    fn read(&self) -> bool {
        if self.by == Reader::Caller {
            let Some(c) = self.conn.upgrade() else { return false };
            let wake_at = lock(&c.out).wake_at;
            let left = wake_at.map_or(KEEPER_NAP, |at| at.saturating_duration_since(Instant::now()).min(KEEPER_NAP));
            if left.is_zero() {
                c.link.timeout();
                c.flush();
                return true;
            }
            let _ = self.stream.set_read_timeout(Some(left));
        }
        if self.conn.upgrade().is_some_and(|c| lock(&c.out).wq.bytes() >= WRITE_BACKLOG_HIGH) {
            thread::sleep(TURN_NAP); // the peer takes nothing: read nothing more from it
            return true;
        }
        let mut buf = [0u8; 4 * 1024];
        let read = (&*self.stream).read(&mut buf);
        let Some(c) = self.conn.upgrade() else { return false };
        let cause = match read {
            Ok(0) => CloseCause::Eof,
            Ok(n) => {
                let asked = self.by == Reader::Thread && c.link.calls_waiting() > 0;
                if c.link.input(self.epoch, &buf[..n]) {
                    c.flush();
                }
                return !asked || c.pass_turn(self.epoch);
            }
            Err(e) if matches!(e.kind(), WouldBlock | TimedOut | Interrupted) => {
                // For the reading thread: a caller's timeout, left on the socket.
                if self.by == Reader::Thread {
                    let _ = self.stream.set_read_timeout(None);
                }
                return true;
            }
            Err(e) => e.into(),
        };
        if c.link.closed(self.epoch, cause) {
            c.flush();
        }
        // Nobody reads it any more (the core's order to close it may still be on its way).
        lock(&c.wire.state).read.take_if(|r| r.epoch == self.epoch);
        c.wire.changed.notify_all();
        false
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(c) = self.conn.upgrade().filter(|_| self.by == Reader::Caller) else { return };
        let mut st = lock(&c.wire.state);
        if let Some(r) = st.read.as_mut().filter(|r| r.epoch == self.epoch && r.by == Reader::Caller) {
            r.by = Reader::Free;
            // Calls still wait and none of their callers may be reading: the thread reads.
            if c.link.calls_waiting() > 0 {
                c.wire.changed.notify_all();
            }
        }
    }
}

/// The link's waker: the thread that wakes it (a caller with a new request, the reader
/// with a PUBACK, a responder with an answer) writes what the core has.
struct Flush(Weak<Conn>);

impl Wake for Flush {
    fn wake(self: Arc<Self>) {
        if let Some(c) = self.0.upgrade() {
            WROTE.set(Some(self.0.clone()));
            c.flush();
        }
    }
}

impl Conn {
    /// The turn at reading, when nobody has it.
    fn take_turn(self: &Arc<Self>) -> Option<Turn> {
        let mut st = lock(&self.wire.state);
        let r = st.read.as_mut().filter(|r| r.by == Reader::Free)?;
        r.by = Reader::Caller;
        Some(Turn { conn: Arc::downgrade(self), epoch: r.epoch, stream: r.stream.clone(), by: Reader::Caller })
    }

    /// The reading thread's read ended the last call waiting: the turn is left to the
    /// next caller, and the thread takes it back once the socket has been left alone for
    /// [`TURN_NAP`] or a caller gives it back with calls waiting. `false` once this
    /// transport is over.
    fn pass_turn(&self, epoch: u64) -> bool {
        let mut st = lock(&self.wire.state);
        if self.link.calls_waiting() > 0 {
            return true;
        }
        match st.read.as_mut() {
            Some(r) if r.epoch == epoch => r.by = Reader::Free,
            _ => return false,
        }
        loop {
            st = self.wire.changed.wait_timeout(st, TURN_NAP).unwrap_or_else(|e| e.into_inner()).0;
            if st.exit {
                return false;
            }
            let Some(r) = st.read.as_mut().filter(|r| r.epoch == epoch) else { return false };
            if r.by == Reader::Free {
                r.by = Reader::Thread;
                return true;
            }
        }
    }

    fn wake_keeper(&self) {
        if let Some(t) = self.keeper.get() {
            t.unpark();
        }
    }

    /// Drains the core and writes, unless another thread is at it (which then sees
    /// `dirty` and goes round once more).
    fn flush(&self) {
        self.dirty.store(true, Ordering::SeqCst);
        while self.dirty.load(Ordering::SeqCst) {
            let Ok(mut out) = self.out.try_lock() else { return };
            self.dirty.store(false, Ordering::SeqCst);
            self.step(&mut out, &self.waker);
        }
    }

    /// One round: drain, act on the transport, write what the socket takes.
    fn step(&self, out: &mut Out, waker: &Waker) {
        let todo = self.link.poll(waker, &mut out.wq);
        self.act(out, todo);
        let before = out.stalled;
        out.stalled = !self.write(out);
        if (out.stalled && !before) || out.finished {
            self.wake_keeper();
        }
    }

    fn act(&self, out: &mut Out, todo: Todo) {
        if let Some(how) = todo.close {
            let current = {
                let mut st = lock(&self.wire.state);
                st.closed = out.epoch;
                st.read.take().map(|r| r.stream)
            };
            self.wire.changed.notify_all();
            if let Some(s) = out.stream.take().or(current) {
                let until = Instant::now() + if how == Closing::Flush { CLOSE_FLUSH } else { Duration::ZERO };
                write_until(&s, &mut out.wq, until);
                // The reader's blocking read ends with it.
                let _ = s.shutdown(Shutdown::Both);
            }
            out.wq.clear();
            out.stalled = false;
        }
        if let Some(e) = todo.open {
            out.epoch = e;
            let mut st = lock(&self.wire.state);
            st.dial = Some(e);
            self.wire.changed.notify_all();
        }
        if todo.finished {
            out.finished = true;
            lock(&self.wire.state).exit = true;
            self.wire.changed.notify_all();
        }
        if todo.wake_at.is_some_and(|at| out.sleeping_until.is_some_and(|s| at < s)) {
            out.sleeping_until = None;
            self.wake_keeper();
        }
        out.wake_at = todo.wake_at;
    }

    /// Writes what is queued; `false` when the socket did not take it all in time.
    fn write(&self, out: &mut Out) -> bool {
        if out.stream.is_none() {
            let st = lock(&self.wire.state);
            out.stream = st.read.as_ref().filter(|r| r.epoch == out.epoch).map(|r| r.stream.clone());
        }
        while !out.wq.is_empty() {
            let Some(s) = out.stream.as_deref() else { return true };
            let e = match out.wq.write_to(&mut { s }) {
                Ok(0) => io::ErrorKind::WriteZero.into(),
                Ok(_) => {
                    self.link.written(out.epoch, &mut out.wq);
                    continue;
                }
                Err(e) if matches!(e.kind(), WouldBlock | TimedOut) => return false,
                Err(e) if e.kind() == Interrupted => continue,
                Err(e) => e,
            };
            if let Some(s) = out.stream.take() {
                let _ = s.shutdown(Shutdown::Both);
            }
            out.wq.clear();
            self.link.closed(out.epoch, e.into());
            self.dirty.store(true, Ordering::SeqCst);
        }
        true
    }
}

/// Keeps the core's timers and finishes stalled writes; ends the connection when the
/// client is closed.
fn keep_loop(conn: &Arc<Conn>) {
    let _ = conn.keeper.set(thread::current());
    loop {
        let now = Instant::now();
        let (wake_at, stalled) = {
            let mut out = lock(&conn.out);
            conn.dirty.store(false, Ordering::SeqCst);
            conn.step(&mut out, &conn.waker);
            if out.finished {
                return;
            }
            // Sleeps at most a second, so that a new request's deadline (seconds away)
            // needs no wake-up: only one sooner than that does.
            out.sleeping_until = Some(out.wake_at.map_or(now + KEEPER_NAP, |at| at.min(now + KEEPER_NAP)));
            (out.sleeping_until, out.stalled)
        };
        if conn.dirty.load(Ordering::SeqCst) {
            continue;
        }
        match wake_at {
            Some(at) if at <= now => drop(conn.link.timeout()),
            // A stalled write is tried again at once: it waits in the kernel for a slice.
            _ if stalled => {}
            Some(at) => thread::park_timeout(at - now),
            None => thread::park(),
        }
    }
}

/// Dials, then reads while it has the turn, until the transport ends; again at each
/// dial asked for.
fn read_loop(conn: &Weak<Conn>) {
    while let Some(c) = conn.upgrade() {
        let wanted = |s: &mut WireState| !s.exit && s.dial.is_none();
        let mut st = c.wire.changed.wait_while(lock(&c.wire.state), wanted).unwrap_or_else(|e| e.into_inner());
        let Some(epoch) = st.dial.take().filter(|_| !st.exit) else { return };
        drop(st);
        let (transport, timeout) = (c.link.transport().clone(), c.link.config().connect_timeout);
        drop(c);
        let dialed = dial(&transport, timeout);
        let Some(c) = conn.upgrade() else { return };
        let stream = match dialed {
            Ok(s) => Arc::new(s),
            Err(e) => {
                if c.link.closed(epoch, e.into()) {
                    c.flush();
                }
                continue;
            }
        };
        {
            let mut st = lock(&c.wire.state);
            if st.exit {
                return;
            }
            // Closed while it was dialed: dropped unused.
            if st.closed >= epoch {
                continue;
            }
            st.read = Some(Reading { epoch, stream: stream.clone(), by: Reader::Thread });
        }
        if c.link.connected(epoch) {
            c.flush();
        }
        drop(c);
        let turn = Turn { conn: conn.clone(), epoch, stream, by: Reader::Thread };
        while turn.read() {}
    }
}

/// TCP to the first address of the host that answers within `timeout`, with TCP_NODELAY.
fn dial(t: &Transport, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{} resolves to no address", t.host));
    for addr in (t.host.as_str(), t.port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                s.set_nodelay(true)?;
                s.set_write_timeout(Some(WRITE_SLICE))?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Writes what is queued until `until` (at least one attempt).
fn write_until(mut s: &TcpStream, wq: &mut WriteQueue, until: Instant) {
    while !wq.is_empty() {
        let r = wq.write_to(&mut s);
        let again = r.as_ref().map_or_else(|e| matches!(e.kind(), Interrupted | WouldBlock), |k| *k > 0);
        if !again || Instant::now() >= until {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_reads_the_connection_of_its_latest_call_and_gives_back_a_turn_on_another() {
        let (a, b) = (Arc::new(1u8), Arc::new(2u8));
        let (mut conn, mut turn) = (None, None);
        follow(&mut conn, &mut turn, Some(Arc::downgrade(&a)));
        assert!(conn.as_ref().is_some_and(|c| c.ptr_eq(&Arc::downgrade(&a))));
        turn = Some("turn on a");
        // Nothing written since: the turn is kept.
        follow(&mut conn, &mut turn, None);
        assert_eq!(turn, Some("turn on a"));
        // Written to the same connection again: kept.
        follow(&mut conn, &mut turn, Some(Arc::downgrade(&a)));
        assert_eq!(turn, Some("turn on a"));
        // A call on another connection: the turn on the first is given back.
        follow(&mut conn, &mut turn, Some(Arc::downgrade(&b)));
        assert_eq!(turn, None);
        assert!(conn.as_ref().is_some_and(|c| c.ptr_eq(&Arc::downgrade(&b))));
    }
}
