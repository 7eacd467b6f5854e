//! One client's shared state: the core, who waits for what, the handlers and the event
//! subscribers, behind one lock; and [`Link`], the door a driver uses.
//!
//! Application calls (`request`, an answer through a `Responder`, `close`) go straight
//! into the core under the lock and wake the driver; the driver feeds the core what the
//! socket and the clock give, and drains it. Draining routes everything the core says:
//! a response to the caller waiting for it, a command to its handler (1101 when there is
//! none), the start's outcome to `connect()`, the rest to the event subscribers. Bytes
//! for the socket and what to do with the transport collect here until the driver takes
//! them, so whichever thread feeds the core, the one that writes learns of it.

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

use bytes::Bytes;
use enos_proto::options::Transport;
use enos_proto::{
    Client, CloseCause, Command, CommandReply, Config, Credentials, Event, Now, Operation, Output, Reply, ReplyTo,
    RequestId, RequestOptions, Secret,
};

use crate::events::{subscription, ClientEvent, Events, Subscriber};
use crate::handlers::{Answer, Handlers, Kind, Responder};
use crate::{lock, oneshot, Error, Runtime};

/// Bytes queued for the socket past which new requests wait: a peer that stops reading
/// slows the application down instead of growing memory.
pub const WRITE_BACKLOG_HIGH: usize = 256 * 1024;

/// Buffers handed to one vectored write at most.
pub const MAX_SLICES: usize = 64;

/// Bytes waiting for the socket, in order, with their total.
#[derive(Debug, Default)]
pub struct WriteQueue {
    q: VecDeque<Bytes>,
    bytes: usize,
    /// Buffers written whole since the last [`WriteQueue::take_completed`].
    completed: u64,
}

impl WriteQueue {
    /// Appends `b` (nothing for an empty buffer).
    pub fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.bytes += b.len();
            self.q.push_back(b);
        }
    }

    /// Moves everything of `other` to the end of this queue.
    pub fn append(&mut self, other: &mut WriteQueue) {
        self.bytes += std::mem::take(&mut other.bytes);
        self.q.append(&mut other.q);
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// The bytes waiting.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Forgets everything (the transport is gone).
    pub fn clear(&mut self) {
        self.q.clear();
        self.bytes = 0;
        self.completed = 0;
    }

    /// How many buffers were written whole since the last call.
    pub fn take_completed(&mut self) -> u64 {
        std::mem::take(&mut self.completed)
    }

    /// Fills `slices` from the front for one vectored write; how many were filled.
    pub fn slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, b) in slices.iter_mut().zip(&self.q) {
            *slot = IoSlice::new(b);
            n += 1;
        }
        n
    }

    /// One vectored write of what is queued (its first [`MAX_SLICES`] buffers) to a
    /// blocking writer; what was written leaves the queue.
    ///
    /// # Errors
    ///
    /// The writer's error; nothing leaves the queue then.
    pub fn write_to(&mut self, w: &mut impl std::io::Write) -> std::io::Result<usize> {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let n = self.slices(&mut slices);
        let written = w.write_vectored(&slices[..n])?;
        self.advance(written);
        Ok(written)
    }

    /// `n` bytes were written, from the front.
    pub fn advance(&mut self, mut n: usize) {
        self.bytes = self.bytes.saturating_sub(n);
        while n > 0 {
            let Some(front) = self.q.front_mut() else { break };
            if n >= front.len() {
                n -= front.len();
                self.q.pop_front();
                self.completed += 1;
            } else {
                let _ = front.split_to(n);
                n = 0;
            }
        }
    }
}

/// How to end the transport the core asked to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// After `close()`: write what is queued (the DISCONNECT), for at most a second, then
    /// shut the socket down.
    Flush,
    /// After a loss: write only what the socket takes at once (a TLS alert), then drop it.
    Drop,
}

/// What the driver must do, as gathered since it last asked. Deliberately exhaustive
/// (like the core's `Output`): a driver handles every field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Todo {
    /// Close the transport, before anything else.
    pub close: Option<Closing>,
    /// Dial a new transport; report on it with this epoch.
    pub open: Option<u64>,
    /// The core's next deadline: call [`Link::timeout`] then.
    pub wake_at: Option<Instant>,
    /// Replies or commands were handed to the application: what it does next (another
    /// request, an answer) usually follows at once, so a driver may let it run before
    /// writing, to send both in one segment.
    pub handed_over: bool,
    /// The client is closed: once the transport is closed, the driver ends.
    pub finished: bool,
}

struct State<H> {
    core: Option<Client>,
    /// A driver runs (from `connect()` to the driver's end).
    running: bool,
    /// Which transport reports are about: a report of an older one is ignored.
    epoch: u64,
    waiting: HashMap<RequestId, ReplySender>,
    start: Option<oneshot::Sender<Result<Option<Secret>, Error>>>,
    stopped: Vec<oneshot::Sender<()>>,
    /// Woken when the core has something new for the driver.
    driver: Option<Waker>,
    /// Callers waiting for the write backlog to fall.
    room: Vec<Waker>,
    backlog: usize,
    outbox: WriteQueue,
    todo: Todo,
    handlers: Handlers<H>,
    subscribers: Vec<Subscriber>,
}

/// Everything of one client, shared by its handles, its driver and its responders.
pub(crate) struct Shared<R: Runtime> {
    pub(crate) runtime: R,
    pub(crate) config: Config,
    pub(crate) transport: Transport,
    state: Mutex<State<R::Handler>>,
}

/// What draining gave the application, handed over once the lock is released (so that a
/// caller woken by its reply does not find the lock still held).
struct Routed<H> {
    responses: Vec<(ReplySender, Result<Reply, Error>)>,
    commands: Vec<(H, Command)>,
}

/// Where a request's end goes: the caller waiting for it.
type ReplySender = oneshot::Sender<Result<Reply, Error>>;

impl<H> Default for Routed<H> {
    fn default() -> Self {
        Routed { responses: Vec::new(), commands: Vec::new() }
    }
}

impl<R: Runtime> Shared<R> {
    pub(crate) fn new(config: Config, transport: Transport, runtime: R) -> Arc<Self> {
        Arc::new(Shared {
            runtime,
            config,
            transport,
            state: Mutex::new(State {
                core: None,
                running: false,
                epoch: 0,
                waiting: HashMap::new(),
                start: None,
                stopped: Vec::new(),
                driver: None,
                room: Vec::new(),
                backlog: 0,
                outbox: WriteQueue::default(),
                todo: Todo::default(),
                handlers: Handlers::default(),
                subscribers: Vec::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<R::Handler>> {
        lock(&self.state)
    }

    // ----- the application's side -----

    pub(crate) async fn connect(self: Arc<Self>) -> Result<Option<Secret>, Error> {
        let started = {
            let mut st = self.lock();
            if st.running {
                return Err(Error::AlreadyStarted);
            }
            let now = Now::system();
            match st.core.as_mut() {
                Some(core) => core.connect(now),
                None => st.core = Some(Client::new(self.config.clone(), now)?),
            }
            let (tx, rx) = oneshot::channel();
            st.start = Some(tx);
            st.running = true;
            rx
        };
        if let Err(e) = self.runtime.start(Link { shared: self.clone() }) {
            let mut st = self.lock();
            st.running = false;
            st.start = None;
            if let Some(core) = st.core.as_mut() {
                core.close(Now::system());
            }
            drop(st);
            self.end_session();
            return Err(e);
        }
        let outcome = started.await.unwrap_or(Err(Error::Closed));
        if outcome.is_err() {
            // The start failed and the client closed: once its driver is gone, a new
            // connect() may begin at once.
            self.stopped().await;
        }
        outcome
    }

    /// Closes and waits for the driver to end (the DISCONNECT written).
    pub(crate) async fn close(self: Arc<Self>) {
        self.close_now();
        self.stopped().await;
    }

    /// Closes without waiting.
    pub(crate) fn close_now(&self) {
        let mut st = self.lock();
        if let Some(core) = st.core.as_mut() {
            core.close(Now::system());
        }
        self.wake_driver(st);
    }

    /// Resolves once no driver runs.
    fn stopped(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut st = self.lock();
        if st.running {
            st.stopped.push(tx);
        } else {
            tx.send(());
        }
        rx
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.lock().core.as_ref().is_some_and(Client::is_connected)
    }

    pub(crate) fn has_reconnected(&self) -> bool {
        self.lock().core.as_ref().is_some_and(Client::has_reconnected)
    }

    pub(crate) fn offline_stats(&self) -> enos_proto::OfflineStats {
        self.lock().core.as_ref().map(Client::offline_stats).unwrap_or_default()
    }

    pub(crate) fn events(&self) -> Events<R> {
        let (sub, events) = subscription();
        self.lock().subscribers.push(sub);
        events
    }

    pub(crate) fn set_handler(&self, kind: Kind, device: Option<enos_proto::DeviceKeys>, h: R::Handler) {
        self.lock().handlers.set(kind, device, h);
    }

    /// Submits `op` once the write backlog has room, and waits for its end.
    pub(crate) async fn call<O: Operation + Send>(&self, op: O, opts: RequestOptions) -> Result<Reply, Error> {
        let mut op = Some((op, opts));
        let done = std::future::poll_fn(|cx| {
            let mut st = self.lock();
            if !st.running {
                return std::task::Poll::Ready(Err(Error::Closed));
            }
            if st.backlog >= WRITE_BACKLOG_HIGH {
                st.room.push(cx.waker().clone());
                return std::task::Poll::Pending;
            }
            let Some(core) = st.core.as_mut() else { return std::task::Poll::Ready(Err(Error::Closed)) };
            let Some((op, opts)) = op.take() else { return std::task::Poll::Ready(Err(Error::Closed)) };
            let id = match core.request(Now::system(), op, opts) {
                Ok(id) => id,
                Err(e) => return std::task::Poll::Ready(Err(Error::from(e))),
            };
            let (tx, rx) = oneshot::channel();
            st.waiting.insert(id, tx);
            self.wake_driver(st);
            std::task::Poll::Ready(Ok(rx))
        })
        .await?;
        done.await.unwrap_or(Err(Error::Closed))
    }

    /// Wakes the driver (after the lock is released).
    fn wake_driver(&self, mut st: MutexGuard<'_, State<R::Handler>>) {
        let waker = st.driver.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
    }

    // ----- draining the core -----

    /// Drains the core: routes events, collects bytes and transport orders.
    fn drain(st: &mut State<R::Handler>, routed: &mut Routed<R::Handler>) {
        let State { core, waiting, start: starting, handlers, subscribers, outbox, todo, epoch, .. } = st;
        let Some(core) = core.as_mut() else { return };
        loop {
            let event = match core.poll_output() {
                Output::Transmit(b) => {
                    outbox.push(b);
                    continue;
                }
                Output::OpenTransport => {
                    *epoch += 1;
                    todo.open = Some(*epoch);
                    continue;
                }
                Output::CloseTransport => {
                    // A dial not taken yet is not made; the transport of the current
                    // epoch closes, and its late reports are ignored.
                    *epoch += 1;
                    todo.open = None;
                    todo.close = Some(if core.is_closed() { Closing::Flush } else { Closing::Drop });
                    continue;
                }
                Output::Wait(at) => {
                    todo.wake_at = at;
                    return;
                }
                Output::Event(e) => e,
            };
            let broadcast = match event {
                Event::Response { id, result } => {
                    if let Some(tx) = waiting.remove(&id) {
                        routed.responses.push((tx, result.map_err(Error::from)));
                        todo.handed_over = true;
                    }
                    continue;
                }
                Event::Command(cmd) => {
                    match handlers.find(&cmd) {
                        Some(h) => {
                            routed.commands.push((h, *cmd));
                            todo.handed_over = true;
                        }
                        None => match cmd.unhandled_reply() {
                            Some(reply) => {
                                if let Err(e) = core.reply(Now::system(), reply) {
                                    tracing::warn!(error = %e, "the reply to an unhandled command was not sent");
                                }
                            }
                            None => core.dismiss(Now::system(), &cmd.reply_to),
                        },
                    }
                    continue;
                }
                Event::Started(outcome) => {
                    if let Some(tx) = starting.take() {
                        tx.send(outcome.map(|()| device_secret(core.credentials())).map_err(Error::from));
                    }
                    continue;
                }
                Event::Connected { reconnect } => ClientEvent::Connect { reconnect },
                Event::Disconnected { cause, .. } => ClientEvent::Close { cause },
                Event::Message { topic, payload } => ClientEvent::Message { topic, payload },
                Event::Activated { device, device_secret, .. } => ClientEvent::Activated { device, device_secret },
                Event::Error(e) => ClientEvent::Error(e),
            };
            subscribers.retain(|s| s.push(&broadcast));
        }
    }

    /// Hands responses to their callers and starts handlers, outside the lock.
    fn hand_over(self: &Arc<Self>, routed: Routed<R::Handler>) {
        for (tx, result) in routed.responses {
            tx.send(result);
        }
        for (h, cmd) in routed.commands {
            let to: Arc<dyn Answer> = self.clone();
            let responder = Responder::new(cmd.reply_to.clone(), to);
            self.runtime.run_handler(&h, cmd, responder);
        }
    }

    /// The driver is gone: waiters end, streams end, a new `connect()` may begin.
    fn end_session(&self) {
        let mut st = self.lock();
        st.running = false;
        let mut routed = Routed::default();
        if let Some(core) = st.core.as_mut() {
            if !core.is_closed() {
                core.close(Now::system());
            }
            Self::drain(&mut st, &mut routed);
        }
        st.outbox.clear();
        st.todo = Todo::default();
        st.backlog = 0;
        for (_, tx) in st.waiting.drain() {
            tx.send(Err(Error::Closed));
        }
        if let Some(tx) = st.start.take() {
            tx.send(Err(Error::Closed));
        }
        for s in st.subscribers.drain(..) {
            s.end();
        }
        let stopped = std::mem::take(&mut st.stopped);
        let room = std::mem::take(&mut st.room);
        drop(st);
        for tx in stopped {
            tx.send(());
        }
        for w in room {
            w.wake();
        }
        for (tx, result) in routed.responses {
            tx.send(result);
        }
        // Commands routed while closing have no session to answer in: dropped.
        drop(routed.commands);
    }
}

/// The device secret in use: the one given, or the one dynamic activation issued.
fn device_secret(c: &Credentials) -> Option<Secret> {
    match c {
        Credentials::DeviceSecret(s) => Some(s.clone()),
        Credentials::Certificate { device_secret } => device_secret.clone(),
        _ => None,
    }
}

impl<R: Runtime> Answer for Shared<R> {
    fn reply(&self, r: CommandReply) {
        let mut st = self.lock();
        if let Some(core) = st.core.as_mut() {
            if let Err(e) = core.reply(Now::system(), r) {
                tracing::warn!(error = %e, "command reply not sent");
            }
        }
        self.wake_driver(st);
    }

    fn dismiss(&self, to: &ReplyTo) {
        let mut st = self.lock();
        if let Some(core) = st.core.as_mut() {
            core.dismiss(Now::system(), to);
        }
        self.wake_driver(st);
    }
}

/// A driver's door into its client: feed the core what the transport and the clock give
/// ([`connected`](Link::connected), [`input`](Link::input), [`closed`](Link::closed),
/// [`timeout`](Link::timeout)), then [`poll`](Link::poll) for the bytes to write and
/// what to do next. Every method may be called from any thread. Dropping the link ends
/// the session: a driver drops it when [`Todo::finished`] came and its transport is
/// closed (or when it cannot go on).
pub struct Link<R: Runtime> {
    shared: Arc<Shared<R>>,
}

impl<R: Runtime> std::fmt::Debug for Link<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("device", &self.shared.config.device).finish_non_exhaustive()
    }
}

impl<R: Runtime> Link<R> {
    /// Where to dial.
    pub fn transport(&self) -> &Transport {
        &self.shared.transport
    }

    /// The client's configuration (its `connect_timeout` bounds a dial).
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Drains the core: the bytes to write are appended to `out`, and what to do comes
    /// back. `waker` is woken when the application gives the core something new.
    pub fn poll(&self, waker: &Waker, out: &mut WriteQueue) -> Todo {
        let mut routed = Routed::default();
        let mut st = self.shared.lock();
        match &st.driver {
            Some(w) if w.will_wake(waker) => {}
            _ => st.driver = Some(waker.clone()),
        }
        Shared::<R>::drain(&mut st, &mut routed);
        out.append(&mut st.outbox);
        let mut todo = std::mem::take(&mut st.todo);
        todo.finished = st.core.as_ref().is_none_or(Client::is_closed);
        let room = Self::backlog(&mut st, out.bytes());
        drop(st);
        for w in room {
            w.wake();
        }
        self.shared.hand_over(routed);
        todo
    }

    /// The transport of `epoch` is open (TCP connected).
    pub fn connected(&self, epoch: u64) -> bool {
        self.feed(Some(epoch), |c, now| c.handle_connected(now))
    }

    /// Bytes read from the transport of `epoch`.
    pub fn input(&self, epoch: u64, bytes: &[u8]) -> bool {
        self.feed(Some(epoch), |c, now| c.handle_input(now, bytes))
    }

    /// The transport of `epoch` ended (or its dial failed).
    pub fn closed(&self, epoch: u64, cause: CloseCause) -> bool {
        self.feed(Some(epoch), |c, now| c.handle_closed(now, cause))
    }

    /// The deadline of [`Todo::wake_at`] (or a later moment) has come.
    pub fn timeout(&self) -> bool {
        self.feed(None, |c, now| c.handle_timeout(now))
    }

    /// How many calls wait for their reply: a driver whose callers read the socket
    /// themselves learns from it whether anyone still needs a reader.
    pub fn calls_waiting(&self) -> usize {
        self.shared.lock().waiting.len()
    }

    /// A write to the transport of `epoch` completed: the core learns which of its
    /// buffers are written whole (a QoS 0 request ends delivered only then), and
    /// callers held back by the write backlog go on when it is low again.
    pub fn written(&self, epoch: u64, wq: &mut WriteQueue) {
        let done = wq.take_completed();
        let mut routed = Routed::default();
        let mut st = self.shared.lock();
        if done > 0 && st.epoch == epoch {
            let ended = st.core.as_mut().is_some_and(|c| c.handle_written(Now::system(), done));
            if ended {
                Shared::<R>::drain(&mut st, &mut routed);
            }
        }
        let room = Self::backlog(&mut st, wq.bytes());
        drop(st);
        for w in room {
            w.wake();
        }
        self.shared.hand_over(routed);
    }

    /// Wakes whoever polls this link (a thread that fed the core tells the writer).
    pub fn wake(&self) {
        let st = self.shared.lock();
        self.shared.wake_driver(st);
    }

    /// Feeds the core and routes what it says; whether the driver has something to do.
    fn feed(&self, epoch: Option<u64>, f: impl FnOnce(&mut Client, Now)) -> bool {
        let mut routed = Routed::default();
        let mut st = self.shared.lock();
        if epoch.is_some_and(|e| e != st.epoch) {
            return false;
        }
        let Some(core) = st.core.as_mut() else { return false };
        f(core, Now::system());
        Shared::<R>::drain(&mut st, &mut routed);
        let busy = !st.outbox.is_empty() || st.todo.close.is_some() || st.todo.open.is_some();
        drop(st);
        self.shared.hand_over(routed);
        busy
    }

    fn backlog(st: &mut State<R::Handler>, bytes: usize) -> Vec<Waker> {
        st.backlog = bytes;
        if bytes < WRITE_BACKLOG_HIGH {
            std::mem::take(&mut st.room)
        } else {
            Vec::new()
        }
    }
}

impl<R: Runtime> Drop for Link<R> {
    fn drop(&mut self) {
        self.shared.end_session();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_queue_advances_across_buffers() {
        let mut wq = WriteQueue::default();
        wq.push(Bytes::from_static(b"abcd"));
        wq.push(Bytes::new());
        wq.push(Bytes::from_static(b"efg"));
        let mut more = WriteQueue::default();
        more.push(Bytes::from_static(b"hij"));
        wq.append(&mut more);
        assert!(more.is_empty() && more.bytes() == 0);
        assert_eq!((wq.q.len(), wq.bytes()), (3, 10));
        // A vectored write that took the first buffer and part of the second.
        wq.advance(5);
        assert_eq!(wq.bytes(), 5);
        assert_eq!(wq.q.iter().map(|b| &b[..]).collect::<Vec<_>>(), [&b"fg"[..], b"hij"]);
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(wq.slices(&mut slices), 2);
        wq.advance(5);
        assert!(wq.is_empty());
        assert_eq!(wq.bytes(), 0);
    }
}
