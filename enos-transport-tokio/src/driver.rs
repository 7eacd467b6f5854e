//! The loop: bytes between the socket and the core, the core's deadline, the
//! application's messages. No protocol decision is taken here.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use enos_proto::options::Transport;
use enos_proto::tls::TlsLayer;
use enos_proto::{Client, CloseCause, Command, CommandReply, Event, Now, Output, Reply, RequestId, SubmitError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::{ClientEvent, Error, Shared};

/// A request: how to submit it to the core, and where its end goes.
pub(crate) type Job = Box<dyn FnOnce(&mut Client, Now) -> Result<RequestId, SubmitError> + Send>;

pub(crate) enum AppMsg {
    Request(Job, oneshot::Sender<Result<Reply, Error>>),
    Reply(CommandReply),
    Close(oneshot::Sender<()>),
}

struct Link {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    tls: Option<Box<TlsLayer>>,
}

type Dialing = Pin<Box<dyn Future<Output = std::io::Result<Link>> + Send>>;

thread_local! {
    static READ_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 64 * 1024]);
}

/// TCP (with TCP_NODELAY), then the TLS handshake when configured.
async fn dial(t: Transport) -> std::io::Result<Link> {
    let mut s = TcpStream::connect((t.host.as_str(), t.port)).await?;
    s.set_nodelay(true)?;
    let tls = match &t.tls {
        None => None,
        Some(target) => {
            let mut layer =
                TlsLayer::client(target.config.clone(), &target.server_name).map_err(std::io::Error::other)?;
            let mut buf = vec![0u8; 16 * 1024];
            let mut plain = Vec::new();
            loop {
                let mut out = Vec::new();
                layer.take_ciphertext(&mut out);
                if !out.is_empty() {
                    s.write_all(&out).await?;
                }
                if !layer.is_handshaking() {
                    break;
                }
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "tls handshake: connection closed",
                    ));
                }
                if let Err(e) = layer.read_ciphertext(&buf[..n], &mut plain) {
                    let mut alert = Vec::new();
                    layer.take_ciphertext(&mut alert);
                    let _ = s.write_all(&alert).await;
                    return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, e));
                }
            }
            Some(Box::new(layer))
        }
    };
    let (rd, wr) = s.into_split();
    Ok(Link { rd, wr, tls })
}

fn close_cause(e: std::io::Error) -> CloseCause {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        CloseCause::Tls(e.to_string())
    } else {
        e.into()
    }
}

pub(crate) async fn drive(
    mut core: Client,
    transport: Transport,
    mut app: mpsc::Receiver<AppMsg>,
    shared: Arc<Shared>,
    commands: mpsc::Sender<Box<Command>>,
) {
    // The link, in three parts so that reading and writing proceed side by side.
    let mut rd: Option<OwnedReadHalf> = None;
    let mut wr: Option<OwnedWriteHalf> = None;
    let mut tls: Option<Box<TlsLayer>> = None;
    let mut dialing: Option<Dialing> = None;
    let mut waiting: HashMap<RequestId, oneshot::Sender<Result<Reply, Error>>> = HashMap::new();
    let mut wq: VecDeque<Bytes> = VecDeque::new();
    let mut closing: Option<oneshot::Sender<()>> = None;
    loop {
        // 1. Drain the core.
        let wake = loop {
            match core.poll_output() {
                Output::Transmit(bytes) => match (&wr, &mut tls) {
                    (Some(_), Some(t)) => {
                        if t.write_plaintext(&bytes).is_ok() {
                            let mut out = Vec::new();
                            t.take_ciphertext(&mut out);
                            wq.push_back(Bytes::from(out));
                        }
                    }
                    (Some(_), None) => wq.push_back(bytes),
                    (None, _) => {}
                },
                Output::OpenTransport => dialing = Some(Box::pin(dial(transport.clone()))),
                Output::CloseTransport => {
                    // Best effort: what is queued (a DISCONNECT) goes out first.
                    if let Some(mut w) = wr.take() {
                        for b in wq.drain(..) {
                            if w.write_all(&b).await.is_err() {
                                break;
                            }
                        }
                        let _ = w.shutdown().await;
                    }
                    rd = None;
                    tls = None;
                    wq.clear();
                    dialing = None;
                }
                Output::Event(Event::Response { id, result }) => {
                    if let Some(tx) = waiting.remove(&id) {
                        let _ = tx.send(result.map_err(Error::Request));
                    }
                }
                Output::Event(Event::Command(c)) => {
                    // Handlers run on their own tasks; a full queue holds the loop (and so
                    // the socket) until the dispatcher catches up.
                    let _ = commands.send(c).await;
                }
                Output::Event(e) => shared.event(ClientEvent::from_core(e)),
                Output::Wait(at) => break at,
                _ => {}
            }
        };
        if core.is_closed() && rd.is_none() && dialing.is_none() {
            for (_, tx) in waiting.drain() {
                let _ = tx.send(Err(Error::Closed));
            }
            if let Some(tx) = closing.take() {
                let _ = tx.send(());
            }
            return;
        }
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
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
                                if !out.is_empty() {
                                    wq.push_back(Bytes::from(out));
                                }
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
                match (&mut wr, wq.front()) {
                    (Some(w), Some(b)) => w.write(b).await,
                    _ => std::future::pending().await,
                }
            } => match r {
                Ok(n) => {
                    if let Some(front) = wq.front_mut() {
                        if n >= front.len() {
                            wq.pop_front();
                        } else {
                            let _ = front.split_to(n);
                        }
                    }
                }
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
                        rd = Some(l.rd);
                        wr = Some(l.wr);
                        tls = l.tls;
                        core.handle_connected(Now::system());
                    }
                    Err(e) => core.handle_closed(Now::system(), close_cause(e)),
                }
            },
            _ = sleep => core.handle_timeout(Now::system()),
            m = app.recv() => match m {
                Some(AppMsg::Request(job, tx)) => match job(&mut core, Now::system()) {
                    Ok(id) => {
                        waiting.insert(id, tx);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Error::Submit(e)));
                    }
                },
                Some(AppMsg::Reply(r)) => {
                    if let Err(e) = core.reply(Now::system(), r) {
                        tracing::warn!(error = %e, "command reply not sent");
                    }
                }
                Some(AppMsg::Close(tx)) => {
                    closing = Some(tx);
                    core.close(Now::system());
                }
                None => core.close(Now::system()),
            },
        }
        if let Some(cause) = lost {
            rd = None;
            wr = None;
            tls = None;
            wq.clear();
            core.handle_closed(Now::system(), cause);
        }
    }
}
