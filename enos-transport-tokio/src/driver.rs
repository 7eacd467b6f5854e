//! The loop: bytes between the socket and the core, the core's deadline, the
//! application's messages. No protocol decision is taken here, and the loop never waits
//! on application code.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use enos_proto::options::Transport;
use enos_proto::{Client, CloseCause, Command, CommandReply, Event, Now, Output, Reply, RequestId, SubmitError};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::{Error, Shared};

/// A request: how to submit it to the core, and where its end goes.
pub(crate) type Job = Box<dyn FnOnce(&mut Client, Now) -> Result<RequestId, SubmitError> + Send>;

pub(crate) struct AppMsg(pub(crate) Job, pub(crate) oneshot::Sender<Result<Reply, Error>>);

/// The channels between the driver and the rest of the client.
pub(crate) struct Wiring {
    pub(crate) app: mpsc::Receiver<AppMsg>,
    pub(crate) replies: mpsc::Receiver<CommandReply>,
    pub(crate) commands: mpsc::Sender<Box<Command>>,
    pub(crate) close: Arc<Notify>,
}

/// Bytes queued for the socket past which the driver takes no new request or reply:
/// a peer that stops reading slows the application down instead of growing memory.
const WRITE_QUEUE_HIGH: usize = 256 * 1024;
/// How long the last bytes (a DISCONNECT) may take after `close()`.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

type Dialing = Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send>>;

/// Lets the tasks already woken run once, then goes on: the task wakes itself and is
/// scheduled behind them. (Unlike `tokio::task::yield_now`, which also polls the reactor
/// once, a system call, before coming back.)
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if std::mem::replace(&mut self.0, true) {
            return std::task::Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// Requests (and command answers) taken at most after letting the application run, before
/// the core's output is written.
const TAKE_AFTER_YIELD: usize = 64;

/// Buffers handed to one vectored write at most.
const MAX_SLICES: usize = 64;

/// Reads what the socket has, once it said it is readable. Through `poll_read`, so that a
/// short read tells the reactor the socket is drained (no second read ending in
/// `WouldBlock` for every packet); `WouldBlock` if there was nothing after all.
fn read_ready(r: &mut OwnedReadHalf, buf: &mut [u8]) -> std::io::Result<usize> {
    use tokio::io::AsyncRead;
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut rb = tokio::io::ReadBuf::new(buf);
    match Pin::new(r).poll_read(&mut cx, &mut rb) {
        std::task::Poll::Ready(Ok(())) => Ok(rb.filled().len()),
        std::task::Poll::Ready(Err(e)) => Err(e),
        std::task::Poll::Pending => Err(std::io::ErrorKind::WouldBlock.into()),
    }
}

thread_local! {
    static READ_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 64 * 1024]);
}

/// TCP, with TCP_NODELAY (TLS, when configured, is the core's).
async fn dial(t: Transport) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect((t.host.as_str(), t.port)).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// The write queue and its size.
#[derive(Default)]
struct WriteQueue {
    q: VecDeque<Bytes>,
    bytes: usize,
}

impl WriteQueue {
    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.bytes += b.len();
            self.q.push_back(b);
        }
    }
    fn clear(&mut self) {
        self.q.clear();
        self.bytes = 0;
    }
    /// `n` bytes were written, from the front.
    fn advance(&mut self, mut n: usize) {
        self.bytes = self.bytes.saturating_sub(n);
        while n > 0 {
            let Some(front) = self.q.front_mut() else { break };
            if n >= front.len() {
                n -= front.len();
                self.q.pop_front();
            } else {
                let _ = front.split_to(n);
                n = 0;
            }
        }
    }
}

pub(crate) async fn drive(mut core: Client, transport: Transport, w: Wiring, shared: Arc<Shared>) {
    let Wiring { mut app, mut replies, commands, close } = w;
    // The link, in three parts so that reading and writing proceed side by side.
    let mut rd: Option<OwnedReadHalf> = None;
    let mut wr: Option<OwnedWriteHalf> = None;
    let mut dialing: Option<Dialing> = None;
    let mut waiting: HashMap<RequestId, oneshot::Sender<Result<Reply, Error>>> = HashMap::new();
    let mut wq = WriteQueue::default();
    // A reply or a command was just handed to the application (see step 1b).
    let mut handed_over = false;
    // One timer for the client's life, moved only when the core's deadline comes earlier
    // than it is armed for (a new request's timeout is later than the one before: no timer
    // work per request). Firing early is harmless: the core acts only on what is due, and
    // its next deadline re-arms the timer.
    let timer = tokio::time::sleep(Duration::from_secs(86_400));
    tokio::pin!(timer);
    let mut armed: Option<std::time::Instant> = None;
    loop {
        // 1. Drain the core.
        let wake = loop {
            match core.poll_output() {
                Output::Transmit(bytes) => {
                    if wr.is_some() {
                        wq.push(bytes);
                    }
                }
                Output::OpenTransport => dialing = Some(Box::pin(dial(transport.clone()))),
                Output::CloseTransport => {
                    if let Some(mut w) = wr.take() {
                        // After close() the last bytes (a DISCONNECT) go out, briefly; after a
                        // loss, only what the socket takes at once (a TLS alert).
                        if core.is_closed() {
                            let flush = async {
                                for b in wq.q.drain(..) {
                                    w.write_all(&b).await?;
                                }
                                w.shutdown().await
                            };
                            let _ = tokio::time::timeout(CLOSE_FLUSH, flush).await;
                        } else {
                            for b in wq.q.drain(..) {
                                if w.try_write(&b).ok() != Some(b.len()) {
                                    break;
                                }
                            }
                        }
                    }
                    rd = None;
                    wq.clear();
                    dialing = None;
                }
                Output::Event(Event::Response { id, result }) => {
                    if let Some(tx) = waiting.remove(&id) {
                        handed_over |= tx.send(result.map_err(Error::from)).is_ok();
                    }
                }
                Output::Event(Event::Command(c)) => {
                    // Never wait on the handlers here: past the queue's bound a command is
                    // answered at once (1102) and the session goes on.
                    let sent = commands.try_send(c);
                    handed_over |= sent.is_ok();
                    if let Err(mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c)) = sent {
                        if !c.reply_to.is_raw() {
                            let _ = core.reply(Now::system(), c.reply_to.handler_failed("command queue full"));
                        }
                        tracing::warn!(topic = c.reply_to.topic(), "command queue full: answered 1102");
                    }
                }
                Output::Event(e) => shared.event(e),
                Output::Wait(at) => break at,
            }
        };
        if core.is_closed() && rd.is_none() && dialing.is_none() {
            for (_, tx) in waiting.drain() {
                let _ = tx.send(Err(Error::Closed));
            }
            shared.end();
            return;
        }
        // 1b. What the application does with a reply or a command it was just given (the
        // next request, the command's answer) usually follows at once: give it that chance
        // before writing, so that it leaves in the same segment as what is queued (the
        // reply's PUBACK), and the peer is woken once instead of twice.
        if std::mem::take(&mut handed_over) && !wq.q.is_empty() {
            YieldOnce(false).await;
            let mut took = false;
            if wq.bytes < WRITE_QUEUE_HIGH {
                // One reading of the clock for what was taken at this moment.
                let now = Now::system();
                for _ in 0..TAKE_AFTER_YIELD {
                    match app.try_recv() {
                        Ok(m) => submit(&mut core, &mut waiting, m, now),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            core.close(now);
                            break;
                        }
                    }
                    took = true;
                }
                for _ in 0..TAKE_AFTER_YIELD {
                    let Ok(r) = replies.try_recv() else { break };
                    send_reply(&mut core, r, now);
                    took = true;
                }
            }
            if took {
                continue;
            }
        }
        if let Some(at) = wake {
            if armed.is_none_or(|a| at < a) {
                timer.as_mut().reset(at.into());
                armed = Some(at);
            }
        }
        let room = wq.bytes < WRITE_QUEUE_HIGH;
        // 2. Wait for exactly one thing.
        let mut lost: Option<CloseCause> = None;
        tokio::select! {
            r = async {
                match &rd {
                    Some(r) => r.readable().await,
                    None => std::future::pending().await,
                }
            } => match r {
                Err(e) => lost = Some(e.into()),
                // One read buffer per worker thread, not per connection: an idle device
                // holds no read buffer at all.
                Ok(()) => READ_BUF.with(|b| {
                    let mut b = b.borrow_mut();
                    let Some(r) = &mut rd else { return };
                    match read_ready(r, &mut b) {
                        Ok(0) => lost = Some(CloseCause::Eof),
                        Ok(n) => core.handle_input(Now::system(), &b[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => lost = Some(e.into()),
                    }
                }),
            },
            r = async {
                match (&mut wr, wq.q.is_empty()) {
                    // Everything queued in one system call.
                    (Some(w), false) => {
                        let slices: Vec<std::io::IoSlice<'_>> =
                            wq.q.iter().take(MAX_SLICES).map(|b| std::io::IoSlice::new(b)).collect();
                        w.write_vectored(&slices).await
                    }
                    _ => std::future::pending().await,
                }
            } => match r {
                Ok(n) => wq.advance(n),
                Err(e) => lost = Some(e.into()),
            },
            r = async {
                match &mut dialing {
                    Some(d) => d.await,
                    None => std::future::pending().await,
                }
            } => {
                dialing = None;
                match r {
                    Ok(s) => {
                        let (r, w) = s.into_split();
                        (rd, wr) = (Some(r), Some(w));
                        core.handle_connected(Now::system());
                    }
                    Err(e) => core.handle_closed(Now::system(), e.into()),
                }
            },
            () = &mut timer, if armed.is_some() => {
                armed = None;
                core.handle_timeout(Now::system());
            },
            m = app.recv(), if room => match m {
                Some(m) => submit(&mut core, &mut waiting, m, Now::system()),
                // Every handle is gone: the client ends.
                None => core.close(Now::system()),
            },
            Some(r) = replies.recv(), if room => send_reply(&mut core, r, Now::system()),
            _ = close.notified() => core.close(Now::system()),
        }
        if let Some(cause) = lost {
            (rd, wr) = (None, None);
            wq.clear();
            core.handle_closed(Now::system(), cause);
        }
    }
}

/// A request from the application into the core; its end goes to `waiting`.
fn submit(
    core: &mut Client,
    waiting: &mut HashMap<RequestId, oneshot::Sender<Result<Reply, Error>>>,
    m: AppMsg,
    now: Now,
) {
    let AppMsg(job, tx) = m;
    match job(core, now) {
        Ok(id) => {
            waiting.insert(id, tx);
        }
        Err(e) => {
            let _ = tx.send(Err(Error::from(e)));
        }
    }
}

/// A handler's answer to a command, into the core.
fn send_reply(core: &mut Client, r: CommandReply, now: Now) {
    if let Err(e) = core.reply(now, r) {
        tracing::warn!(error = %e, "command reply not sent");
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
        wq.push(Bytes::from_static(b"hij"));
        assert_eq!((wq.q.len(), wq.bytes), (3, 10));
        // A vectored write that took the first buffer and part of the second.
        wq.advance(5);
        assert_eq!(wq.bytes, 5);
        assert_eq!(wq.q.iter().map(|b| &b[..]).collect::<Vec<_>>(), [&b"fg"[..], b"hij"]);
        wq.advance(2);
        assert_eq!(wq.q.iter().map(|b| &b[..]).collect::<Vec<_>>(), [&b"hij"[..]]);
        wq.advance(3);
        assert!(wq.q.is_empty());
        assert_eq!(wq.bytes, 0);
    }
}
