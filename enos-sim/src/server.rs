//! The MQTT 3.1.1 server: TCP and TLS listeners, one task per connection.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use enos_proto::codec::{self, ConnAck, ConnectReturnCode, Decoder, Packet, PubAck, QoS, SubAck, SubscribeReasonCode};
use enos_proto::tls::{rustls::ServerConfig, TlsLayer};
use enos_proto::{DeviceKeys, PacketKind};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cloud::{ConnId, ConnectInfo, Outbound};
use crate::connect::{parse_connect, ConnectError};
use crate::{ConnHandle, ConnMsg, Direction, Inner};

thread_local! {
    static READ_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 64 * 1024]);
}

/// How long one write may take before the peer is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Output bytes after which a connection stops decoding its input until they are written.
const MAX_PENDING_OUTPUT: usize = 1 << 20;

/// Largest packet a device may send (remaining length): above the 512 KiB payload limit,
/// so an oversize payload gets its 1008 reply rather than a closed connection.
const MAX_PACKET: usize = 1 << 20;

/// Largest CONNECT (remaining length): what a connection may buffer before it has logged
/// in. A CONNECT's fields take a few hundred bytes.
const MAX_CONNECT: usize = 64 * 1024;

pub(crate) async fn accept_loop(inner: Arc<Inner>, listener: TcpListener, tls: Option<Arc<ServerConfig>>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                // Connections that have not logged in yet are capped: past the cap a new
                // one is closed at once (each may hold up to MAX_CONNECT bytes until its
                // CONNECT deadline).
                if inner.pending_connects.fetch_add(1, Ordering::SeqCst) >= inner.max_pending_connects {
                    inner.pending_connects.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!(%peer, max = inner.max_pending_connects, "too many connections without a CONNECT: closed");
                    drop(stream);
                    continue;
                }
                let inner = inner.clone();
                let tls = tls.clone();
                tokio::spawn(async move { serve(inner, stream, peer, tls).await });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The byte pipe of one connection: plain, or through a TLS layer.
enum Pipe {
    Plain,
    Tls(Box<TlsLayer>),
}

struct Conn {
    id: ConnId,
    inner: Arc<Inner>,
    peer: SocketAddr,
    pipe: Pipe,
    decoder: Decoder,
    pending_connect: BytesMut,
    device: Option<DeviceKeys>,
    out: BytesMut,
    next_pkid: u16,
    keep_alive: Option<Duration>,
    last_in: Instant,
    packets_in: u64,
    close: bool,
    /// Decoding stopped because the output grew large; it resumes once written.
    backlog: bool,
    /// The QoS of replies and of commands, as the registry set them when it connected.
    delivery: crate::cloud::Delivery,
    /// The codec the device announced in its client id: every payload both ways.
    encoder: Option<enos_proto::compress::Encoder>,
}

async fn serve(inner: Arc<Inner>, stream: TcpStream, peer: SocketAddr, tls: Option<Arc<ServerConfig>>) {
    let mut waiting = true;
    serve_conn(&inner, stream, peer, tls, &mut waiting).await;
    if waiting {
        inner.pending_connects.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves one connection; `waiting` is cleared (and the count of connections waiting for
/// their CONNECT lowered) once it has logged in.
async fn serve_conn(
    inner: &Arc<Inner>,
    mut stream: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<ServerConfig>>,
    waiting: &mut bool,
) {
    let _ = stream.set_nodelay(true);
    let pipe = match tls {
        Some(config) => match TlsLayer::server(config) {
            Ok(t) => Pipe::Tls(Box::new(t)),
            Err(e) => {
                tracing::warn!(%peer, error = %e, "tls setup failed");
                return;
            }
        },
        None => Pipe::Plain,
    };
    let id = inner.next_conn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<ConnMsg>(1024);
    let close = Arc::new(tokio::sync::Notify::new());
    crate::lock(&inner.conns).insert(id, ConnHandle { tx, close: close.clone() });
    let mut c = Conn {
        id,
        inner: inner.clone(),
        peer,
        pipe,
        decoder: Decoder::new(MAX_PACKET),
        pending_connect: BytesMut::new(),
        device: None,
        out: BytesMut::new(),
        next_pkid: 1,
        keep_alive: None,
        last_in: Instant::now(),
        packets_in: 0,
        close: false,
        backlog: false,
        delivery: inner.cloud().delivery(),
        encoder: None,
    };
    let connect_deadline = Instant::now() + inner.connect_timeout;
    // One timer for the connection's life, moved only when the deadline comes earlier
    // than it is set for or when it fires: not re-armed for every packet.
    let timer = tokio::time::sleep_until(connect_deadline);
    tokio::pin!(timer);
    loop {
        if *waiting && c.device.is_some() {
            *waiting = false;
            inner.pending_connects.fetch_sub(1, Ordering::SeqCst);
        }
        let deadline = match (c.device.is_some(), c.keep_alive) {
            (false, _) => Some(connect_deadline),
            // MQTT: one and a half keep-alive periods without a packet end the session.
            (true, Some(ka)) => Some(c.last_in + ka + ka / 2),
            (true, None) => None,
        };
        let far = Instant::now() + Duration::from_secs(24 * 3600);
        if deadline.unwrap_or(far) < timer.deadline() {
            timer.as_mut().reset(deadline.unwrap_or(far));
        }
        tokio::select! {
            r = stream.readable() => {
                if r.is_err() {
                    break;
                }
                // One read buffer per worker thread, not per connection: an idle
                // connection holds no buffer at all.
                let eof = READ_BUF.with(|b| {
                    let mut b = b.borrow_mut();
                    match read_ready(&mut stream, &mut b) {
                        Ok(0) => true,
                        Ok(n) => {
                            c.receive(&b[..n]);
                            false
                        }
                        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                    }
                });
                if eof {
                    let _ = c.write(&mut stream).await;
                    break;
                }
            },
            m = rx.recv() => match m {
                Some(ConnMsg::Publish(o)) => c.publish(&o),
                Some(ConnMsg::Raw(bytes)) => c.out.extend_from_slice(&bytes),
                None => c.close = true,
            },
            _ = close.notified() => c.close = true,
            () = &mut timer => {
                let now = Instant::now();
                match deadline {
                    Some(d) if d <= now => {
                        tracing::info!(peer = %c.peer, "no packet in time: closing");
                        break;
                    }
                    d => timer.as_mut().reset(d.unwrap_or(far)),
                }
            }
        }
        if c.write(&mut stream).await.is_err() || c.close {
            break;
        }
        // Input left undecoded while the output was large: go on now that it is out.
        while c.backlog && !c.close {
            c.input(&[]);
            if c.write(&mut stream).await.is_err() {
                c.close = true;
            }
        }
        if c.close {
            break;
        }
    }
    let _ = stream.shutdown().await;
    crate::lock(&inner.conns).remove(&id);
    inner.cloud().disconnect(id);
    inner.touched();
    if let Some(d) = &c.device {
        tracing::info!(device = %d, "disconnected");
    }
}

/// Reads what the socket has, once it said it is readable. Through `poll_read`, so that a
/// short read tells the reactor the socket is drained (no second read ending in
/// `WouldBlock` for every packet); `WouldBlock` if there was nothing after all.
fn read_ready(stream: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    use tokio::io::AsyncRead;
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut rb = tokio::io::ReadBuf::new(buf);
    match std::pin::Pin::new(stream).poll_read(&mut cx, &mut rb) {
        std::task::Poll::Ready(Ok(())) => Ok(rb.filled().len()),
        std::task::Poll::Ready(Err(e)) => Err(e),
        std::task::Poll::Pending => Err(std::io::ErrorKind::WouldBlock.into()),
    }
}

/// Writes all of `bytes`: at once when the socket takes them (the usual case, no timer),
/// else waiting at most [`WRITE_TIMEOUT`], so that a peer that stops reading cannot hold
/// the task forever.
async fn write_all(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < bytes.len() {
        match stream.try_write(&bytes[done..]) {
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    if done == bytes.len() {
        return Ok(());
    }
    match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&bytes[done..])).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

impl Conn {
    async fn write(&mut self, stream: &mut TcpStream) -> std::io::Result<()> {
        let mut cipher = Vec::new();
        match &mut self.pipe {
            Pipe::Plain => {
                if self.out.is_empty() {
                    return Ok(());
                }
                let bytes = self.out.split();
                return write_all(stream, &bytes).await;
            }
            Pipe::Tls(t) => {
                if !self.out.is_empty() {
                    let bytes = self.out.split();
                    t.write_plaintext(&bytes).map_err(std::io::Error::other)?;
                }
                t.take_ciphertext(&mut cipher);
            }
        }
        if cipher.is_empty() {
            Ok(())
        } else {
            write_all(stream, &cipher).await
        }
    }

    /// Bytes from the socket: through TLS when there is a layer, then into the decoder.
    fn receive(&mut self, bytes: &[u8]) {
        match &mut self.pipe {
            Pipe::Plain => self.input(bytes),
            Pipe::Tls(t) => {
                let mut plain = Vec::new();
                match t.read_ciphertext(bytes, &mut plain) {
                    Ok(()) => self.input(&plain),
                    Err(e) => {
                        tracing::info!(peer = %self.peer, error = %e, "tls session refused");
                        self.close = true;
                    }
                }
            }
        }
    }

    /// The names in the client certificate the TLS layer verified (none without one).
    fn certificate_names(&self) -> Vec<String> {
        match &self.pipe {
            Pipe::Tls(t) => t
                .peer_certificates()
                .and_then(|c| c.first())
                .map_or_else(Vec::new, |c| crate::pki::certificate_names(c)),
            Pipe::Plain => Vec::new(),
        }
    }

    fn input(&mut self, data: &[u8]) {
        self.last_in = Instant::now();
        if self.device.is_none() {
            self.pending_connect.extend_from_slice(data);
            match parse_connect(&self.pending_connect, MAX_CONNECT) {
                Ok(None) => return,
                Ok(Some((p, used))) => {
                    let rest = self.pending_connect.split_off(used);
                    self.pending_connect = BytesMut::new();
                    self.on_connect(p);
                    if self.device.is_none() {
                        return;
                    }
                    self.decoder.feed(&rest);
                }
                Err(ConnectError::Protocol) => {
                    self.connack(ConnectReturnCode::RefusedProtocolVersion);
                    self.close = true;
                    return;
                }
                Err(ConnectError::Malformed(why)) => {
                    tracing::info!(peer = %self.peer, why, "malformed CONNECT");
                    self.close = true;
                    return;
                }
            }
        } else {
            self.decoder.feed(data);
        }
        self.backlog = false;
        while !self.close {
            if self.out.len() > MAX_PENDING_OUTPUT {
                self.backlog = true;
                break;
            }
            match self.decoder.next_packet() {
                Ok(Some(p)) => self.on_packet(p),
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(peer = %self.peer, error = %e, "bad packet: closing");
                    self.close = true;
                }
            }
        }
    }

    fn connack(&mut self, code: ConnectReturnCode) {
        let _ = codec::encode_packet(&mut self.out, &Packet::ConnAck(ConnAck::new(code, false)));
    }

    fn on_connect(&mut self, p: crate::connect::ConnectPacket) {
        if let Some(code) = self.inner.take_refusal() {
            tracing::info!(peer = %self.peer, code = code as u8, "connect refused by fault injection");
            self.connack(code);
            self.close = true;
            return;
        }
        let names = self.certificate_names();
        let info =
            ConnectInfo { client_id: &p.client_id, username: &p.username, password: &p.password, certificate: &names };
        let result = self.inner.cloud().connect(self.id, info);
        match result {
            Ok(accepted) => {
                for old in &accepted.takeover {
                    self.inner.close(*old);
                }
                // Only an accepted device gets a record: refused CONNECTs cannot grow it.
                self.inner.record(&accepted.device, Direction::In, PacketKind::Connect, None, Bytes::new());
                tracing::info!(device = %accepted.device, peer = %self.peer, "connected");
                self.device = Some(accepted.device);
                self.encoder = accepted.compression.map(enos_proto::compress::Encoder::new);
                self.keep_alive = (p.keep_alive > 0).then(|| Duration::from_secs(u64::from(p.keep_alive)));
                self.connack(ConnectReturnCode::Success);
                for o in accepted.push {
                    self.publish(&o);
                }
            }
            Err(code) => {
                tracing::info!(peer = %self.peer, user = %p.username, code = code as u8, "connect refused");
                self.connack(code);
                self.close = true;
            }
        }
    }

    /// Publishes `o` at the QoS the registry sets for replies or for commands (read once
    /// per connection: no lock per message).
    fn publish(&mut self, o: &Outbound) {
        let qos = self.delivery.qos(&o.topic);
        let pkid = if qos == QoS::AtLeastOnce {
            let id = self.next_pkid;
            self.next_pkid = if id == u16::MAX { 1 } else { id + 1 };
            id
        } else {
            0
        };
        if let Some(d) = &self.device {
            self.inner.record(d, Direction::Out, PacketKind::Publish, Some(&o.topic), o.payload.clone());
        }
        match &mut self.encoder {
            None => {
                let _ = codec::encode_publish(&mut self.out, &o.topic, &o.payload, qos, pkid, false);
            }
            Some(e) => {
                let mut z = Vec::new();
                e.compress(&o.payload, &mut z);
                let _ = codec::encode_publish(&mut self.out, &o.topic, &z, qos, pkid, false);
            }
        }
    }

    fn on_packet(&mut self, mut p: Packet) {
        let Some(device) = self.device.clone() else { return };
        self.packets_in += 1;
        if let (Some(c), Packet::Publish(pb)) = (self.encoder.as_ref().map(|e| e.codec()), &mut p) {
            // A compressing session compresses every payload (extensions spec E10); one that
            // does not decompress is acknowledged and dropped.
            match c.decompress(&pb.payload, MAX_PACKET) {
                Ok(plain) => pb.payload = Bytes::from(plain),
                Err(e) => {
                    tracing::info!(device = %device, topic = %pb.topic, error = %e, "payload dropped");
                    if pb.qos == QoS::AtLeastOnce {
                        let _ = codec::encode_packet(&mut self.out, &Packet::PubAck(PubAck::new(pb.pkid)));
                    }
                    return;
                }
            }
        }
        let (topic, payload) = match &p {
            Packet::Publish(pb) => (Some(pb.topic.as_str()), pb.payload.clone()),
            _ => (None, Bytes::new()),
        };
        tracing::trace!(device = %device, kind = %codec::kind(&p), topic = topic.unwrap_or(""), bytes = payload.len(), "packet in");
        self.inner.record(&device, Direction::In, codec::kind(&p), topic, payload);
        if self.inner.cut_due(&device, self.packets_in) {
            tracing::info!(device = %device, "cut by fault injection");
            self.close = true;
            return;
        }
        match p {
            Packet::Publish(pb) => {
                match pb.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => {
                        let _ = codec::encode_packet(&mut self.out, &Packet::PubAck(PubAck::new(pb.pkid)));
                    }
                    QoS::ExactlyOnce => {
                        self.close = true;
                        return;
                    }
                }
                let handled = self.inner.handle_publish(self.id, &pb.topic, &pb.payload);
                for r in handled.replies {
                    match self.inner.reply_fault() {
                        crate::ReplyFault::None => self.publish(&r),
                        crate::ReplyFault::Drop => tracing::info!(topic = %r.topic, "reply dropped by fault injection"),
                        crate::ReplyFault::Delay(d) => {
                            let inner = self.inner.clone();
                            let id = self.id;
                            tokio::spawn(async move {
                                tokio::time::sleep(d).await;
                                inner.send(id, ConnMsg::Publish(r));
                            });
                        }
                    }
                }
            }
            Packet::Subscribe(s) => {
                // Delivery follows ownership (spec §1.1), so a subscription never adds a
                // second copy; only well-formed filters within the device's own topics
                // (or its sub-devices') are granted.
                let cloud = self.inner.cloud();
                let codes = s
                    .filters
                    .iter()
                    .map(|f| {
                        if valid_filter(&f.path) && cloud.may_subscribe(self.id, &f.path) {
                            SubscribeReasonCode::Success(QoS::AtLeastOnce)
                        } else {
                            SubscribeReasonCode::Failure
                        }
                    })
                    .collect();
                let _ = codec::encode_packet(&mut self.out, &Packet::SubAck(SubAck::new(s.pkid, codes)));
            }
            Packet::Unsubscribe(u) => {
                let _ = codec::encode_packet(&mut self.out, &Packet::UnsubAck(codec::UnsubAck::new(u.pkid)));
            }
            Packet::PingReq => {
                let _ = codec::encode_packet(&mut self.out, &Packet::PingResp);
            }
            Packet::PubAck(_) => {}
            Packet::Disconnect => self.close = true,
            other => {
                tracing::info!(device = %device, kind = %codec::kind(&other), "unexpected packet: closing");
                self.close = true;
            }
        }
    }
}

/// MQTT filter rules: `#` only as the whole last level, `+` only as a whole level.
fn valid_filter(f: &str) -> bool {
    if f.is_empty() {
        return false;
    }
    let levels: Vec<&str> = f.split('/').collect();
    levels.iter().enumerate().all(|(i, l)| match *l {
        "#" => i + 1 == levels.len(),
        "+" => true,
        l => !l.contains(['#', '+']),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn filters() {
        for ok in ["/sys/pk/dk/#", "/sys/+/+/thing/service/+", "a", "#", "$share/g//sys/#"] {
            assert!(super::valid_filter(ok), "{ok}");
        }
        for bad in ["", "a/#/b", "a+/b", "a/b#"] {
            assert!(!super::valid_filter(bad), "{bad}");
        }
    }
}
