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
use enos_proto::tls::TlsLayer;
use enos_proto::{Client, CloseCause, Command, CommandReply, Event, Now, Output, Reply, RequestId, SubmitError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

struct Link {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    tls: Option<Box<TlsLayer>>,
}

enum DialError {
    Io(std::io::Error),
    Tls(String),
}

type Dialing = Pin<Box<dyn Future<Output = Result<Link, DialError>> + Send>>;

thread_local! {
    static READ_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 64 * 1024]);
}

/// TCP (with TCP_NODELAY), then the TLS handshake when configured.
async fn dial(t: Transport) -> Result<Link, DialError> {
    let mut s = TcpStream::connect((t.host.as_str(), t.port)).await.map_err(DialError::Io)?;
    s.set_nodelay(true).map_err(DialError::Io)?;
    let tls = match &t.tls {
        None => None,
        Some(target) => {
            let mut layer = TlsLayer::client(target.config.clone(), &target.server_name)
                .map_err(|e| DialError::Tls(e.to_string()))?;
            let mut buf = vec![0u8; 16 * 1024];
            let mut plain = Vec::new();
            loop {
                let mut out = Vec::new();
                layer.take_ciphertext(&mut out);
                if !out.is_empty() {
                    s.write_all(&out).await.map_err(DialError::Io)?;
                }
                if !layer.is_handshaking() {
                    break;
                }
                let n = s.read(&mut buf).await.map_err(DialError::Io)?;
                if n == 0 {
                    return Err(DialError::Tls("connection closed during the handshake".into()));
                }
                if let Err(e) = layer.read_ciphertext(&buf[..n], &mut plain) {
                    let mut alert = Vec::new();
                    layer.take_ciphertext(&mut alert);
                    let _ = s.write_all(&alert).await;
                    return Err(DialError::Tls(e.to_string()));
                }
            }
            Some(Box::new(layer))
        }
    };
    let (rd, wr) = s.into_split();
    Ok(Link { rd, wr, tls })
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
    fn advance(&mut self, n: usize) {
        self.bytes = self.bytes.saturating_sub(n);
        if let Some(front) = self.q.front_mut() {
            if n >= front.len() {
                self.q.pop_front();
            } else {
                let _ = front.split_to(n);
            }
        }
    }
}

pub(crate) async fn drive(mut core: Client, transport: Transport, w: Wiring, shared: Arc<Shared>) {
    let Wiring { mut app, mut replies, commands, close } = w;
    // The link, in three parts so that reading and writing proceed side by side.
    let mut rd: Option<OwnedReadHalf> = None;
    let mut wr: Option<OwnedWriteHalf> = None;
    let mut tls: Option<Box<TlsLayer>> = None;
    let mut dialing: Option<Dialing> = None;
    let mut waiting: HashMap<RequestId, oneshot::Sender<Result<Reply, Error>>> = HashMap::new();
    let mut wq = WriteQueue::default();
    loop {
        // 1. Drain the core.
        let wake = loop {
            match core.poll_output() {
                Output::Transmit(bytes) => match (&wr, &mut tls) {
                    (Some(_), Some(t)) => {
                        let mut out = Vec::new();
                        match t.write_plaintext(&bytes) {
                            Ok(()) => {
                                t.take_ciphertext(&mut out);
                                wq.push(Bytes::from(out));
                            }
                            Err(e) => {
                                (rd, wr, tls) = (None, None, None);
                                wq.clear();
                                core.handle_closed(Now::system(), CloseCause::Tls(e.to_string()));
                            }
                        }
                    }
                    (Some(_), None) => wq.push(bytes),
                    (None, _) => {}
                },
                Output::OpenTransport => dialing = Some(Box::pin(dial(transport.clone()))),
                Output::CloseTransport => {
                    if let Some(mut w) = wr.take() {
                        // After close() the last bytes (a DISCONNECT) go out, briefly; after a
                        // loss nothing more is written to that peer.
                        if core.is_closed() {
                            if let Some(t) = &mut tls {
                                t.send_close_notify();
                                let mut out = Vec::new();
                                t.take_ciphertext(&mut out);
                                wq.push(Bytes::from(out));
                            }
                            let flush = async {
                                for b in wq.q.drain(..) {
                                    w.write_all(&b).await?;
                                }
                                w.shutdown().await
                            };
                            let _ = tokio::time::timeout(CLOSE_FLUSH, flush).await;
                        }
                    }
                    (rd, tls) = (None, None);
                    wq.clear();
                    dialing = None;
                }
                Output::Event(Event::Response { id, result }) => {
                    if let Some(tx) = waiting.remove(&id) {
                        let _ = tx.send(result.map_err(Error::from));
                    }
                }
                Output::Event(Event::Command(c)) => {
                    // Never wait on the handlers here: past the queue's bound a command is
                    // answered at once (1102) and the session goes on.
                    if let Err(mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c)) =
                        commands.try_send(c)
                    {
                        if !c.reply_to.is_raw() {
                            let _ = core.reply(Now::system(), c.reply_to.handler_failed("command queue full"));
                        }
                        tracing::warn!(topic = c.reply_to.topic(), "command queue full: answered 1102");
                    }
                }
                Output::Event(e) => shared.event(e),
                Output::Wait(at) => break at,
                _ => {}
            }
        };
        if core.is_closed() && rd.is_none() && dialing.is_none() {
            for (_, tx) in waiting.drain() {
                let _ = tx.send(Err(Error::Closed));
            }
            shared.end();
            return;
        }
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
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
                    let Some(r) = &rd else { return };
                    match r.try_read(&mut b) {
                        Ok(0) => lost = Some(CloseCause::Eof),
                        Ok(n) => match &mut tls {
                            Some(t) => {
                                let mut plain = Vec::new();
                                let res = t.read_ciphertext(&b[..n], &mut plain);
                                let mut out = Vec::new();
                                t.take_ciphertext(&mut out);
                                wq.push(Bytes::from(out));
                                match res {
                                    Ok(()) => core.handle_input(Now::system(), &plain),
                                    Err(e) => lost = Some(CloseCause::Tls(e.to_string())),
                                }
                            }
                            None => core.handle_input(Now::system(), &b[..n]),
                        },
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => lost = Some(e.into()),
                    }
                }),
            },
            r = async {
                match (&mut wr, wq.q.front()) {
                    (Some(w), Some(b)) => w.write(b).await,
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
                    Ok(l) => {
                        (rd, wr, tls) = (Some(l.rd), Some(l.wr), l.tls);
                        core.handle_connected(Now::system());
                    }
                    Err(DialError::Io(e)) => core.handle_closed(Now::system(), e.into()),
                    Err(DialError::Tls(m)) => core.handle_closed(Now::system(), CloseCause::Tls(m)),
                }
            },
            _ = sleep => core.handle_timeout(Now::system()),
            m = app.recv(), if room => match m {
                Some(AppMsg(job, tx)) => match job(&mut core, Now::system()) {
                    Ok(id) => {
                        waiting.insert(id, tx);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Error::from(e)));
                    }
                },
                // Every handle is gone: the client ends.
                None => core.close(Now::system()),
            },
            Some(r) = replies.recv(), if room => {
                if let Err(e) = core.reply(Now::system(), r) {
                    tracing::warn!(error = %e, "command reply not sent");
                }
            },
            _ = close.notified() => core.close(Now::system()),
        }
        if let Some(cause) = lost {
            // A TLS alert for the peer goes out if the socket takes it at once.
            if let (Some(w), CloseCause::Tls(_), Some(b)) = (&wr, &cause, wq.q.back()) {
                let _ = w.try_write(b);
            }
            (rd, wr, tls) = (None, None, None);
            wq.clear();
            core.handle_closed(Now::system(), cause);
        }
    }
}
