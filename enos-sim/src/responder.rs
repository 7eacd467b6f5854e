//! Responder mode: the same cloud logic as a client of an external broker (mosquitto, or
//! a broker cluster through MQTT shared subscriptions), answering requests and pushing
//! commands.
//!
//! The responder subscribes the request topic of every upstream operation, level by level
//! so that it never receives its own replies (as `$share/GROUP/...` with a group, so
//! several responders split the load), answers each request on its `_reply` topic, and
//! publishes commands on the devices' command topics. Devices must subscribe those
//! themselves (`Config::subscribe_command_topics` in the SDK), as a plain broker delivers
//! nothing unsubscribed. The devices' replies to commands are subscribed without a group
//! by every responder, so the one that sent a command always sees its reply.
//!
//! A plain broker does not say who published, so a topic of a device in a gateway's
//! topology is taken as the gateway's, acting for that sub-device: as on EnOS, a post
//! for it is refused (1009) until the gateway has logged it in.
//!
//! What a plain broker cannot give: it authenticates devices itself (the EnOS signature
//! is not checked here), dynamic activation has no CONNECT to start from, and each
//! responder keeps its own state, so with shared subscriptions a state written through
//! one responder is read back only through the same one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use enos_proto::codec::{self, Connect, ConnectReturnCode, Decoder, Packet, PubAck, QoS};
use enos_proto::topic::parse_topic;
use enos_proto::DeviceKeys;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::cloud::ConnId;
use crate::{lock, ConnHandle, ConnMsg, Inner, Sim};

/// The request topics of every upstream operation (spec §5).
const REQUEST_FILTERS: &[&str] = &[
    "/sys/+/+/thing/tag/query",
    "/sys/+/+/thing/tag/update",
    "/sys/+/+/thing/tag/delete",
    "/sys/+/+/thing/attribute/query",
    "/sys/+/+/thing/attribute/update",
    "/sys/+/+/thing/attribute/delete",
    "/sys/+/+/thing/measurepoint/post",
    "/sys/+/+/thing/measurepoint/resume",
    "/sys/+/+/thing/measurepoint/post/batch",
    "/sys/+/+/thing/measurepoint/resume/batch",
    "/sys/+/+/thing/event/+/post",
    "/sys/+/+/thing/model/up_raw",
    "/sys/+/+/thing/device/register",
    "/sys/+/+/thing/topo/get",
    "/sys/+/+/thing/topo/add",
    "/sys/+/+/thing/topo/delete",
    "/sys/+/+/thing/tsltemplate/get",
    "/sys/+/+/ota/device/inform",
    "/sys/+/+/ota/device/progress",
    "/sys/+/+/ota/device/getversion",
    "/ext/session/+/+/combine/login",
    "/ext/session/+/+/combine/login/batch",
    "/ext/session/+/+/combine/logout",
];

/// The topics of the devices' replies to commands (spec §6, §7). `thing/service/+` also
/// matches the service commands themselves: the cloud ignores those.
const COMMAND_REPLY_FILTERS: &[&str] = &[
    "/sys/+/+/thing/service/+",
    "/sys/+/+/thing/service/measurepoint/+",
    "/sys/+/+/thing/model/down_raw_reply",
    "/sys/+/+/ota/device/upgrade_reply",
    "/sys/+/+/thing/enable_reply",
    "/sys/+/+/thing/disable_reply",
    "/sys/+/+/thing/delete_reply",
    "/ext/session/+/+/combine/enable_reply",
    "/ext/session/+/+/combine/disable_reply",
    "/ext/session/+/+/combine/delete_reply",
    "/ext/session/+/+/thing/activate/info_reply",
];

/// How to reach the broker.
#[derive(Debug, Clone)]
pub struct ResponderOptions {
    /// The broker's address.
    pub broker: SocketAddr,
    /// The shared-subscription group; `None` subscribes plainly (one responder).
    pub group: Option<String>,
    /// The responder's MQTT client id.
    pub client_id: String,
    /// User name and password for the broker, if it wants them.
    pub login: Option<(String, String)>,
}

impl ResponderOptions {
    /// A responder on `broker`, subscribing plainly, client id `enos-sim-responder`.
    pub fn new(broker: SocketAddr) -> Self {
        ResponderOptions { broker, group: None, client_id: "enos-sim-responder".into(), login: None }
    }
}

/// Why the responder could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResponderError {
    /// The broker cannot be reached.
    #[error("cannot reach the broker: {0}")]
    Io(#[from] std::io::Error),
    /// The broker refused the CONNECT.
    #[error("the broker refused the connection (code {0})")]
    Refused(u8),
    /// The broker answered something else than the protocol expects.
    #[error("unexpected answer from the broker")]
    Protocol,
}

/// A running responder; dropping it stops it.
#[derive(Debug)]
pub struct Responder {
    task: JoinHandle<()>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Responder {
    /// Whether it is still serving (the broker connection is up).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Sim {
    /// Connects the cloud to an external broker as a responder.
    ///
    /// # Errors
    ///
    /// [`ResponderError`] when the broker cannot be reached or refuses.
    pub async fn responder(&self, opts: ResponderOptions) -> Result<Responder, ResponderError> {
        let mut s = TcpStream::connect(opts.broker).await?;
        s.set_nodelay(true)?;
        let mut out = BytesMut::new();
        let mut c = Connect::new(opts.client_id.clone());
        c.keep_alive = 60;
        if let Some((u, p)) = &opts.login {
            c.set_login(u.clone(), p.clone());
        }
        let _ = codec::encode_packet(&mut out, &Packet::Connect(c));
        let requests: Vec<String> = REQUEST_FILTERS
            .iter()
            .map(|f| match &opts.group {
                Some(g) => format!("$share/{g}/{f}"),
                None => (*f).to_owned(),
            })
            .collect();
        let _ = codec::encode_subscribe(&mut out, 1, requests.iter().map(String::as_str), QoS::AtLeastOnce);
        let _ = codec::encode_subscribe(&mut out, 2, COMMAND_REPLY_FILTERS.iter().copied(), QoS::AtLeastOnce);
        s.write_all(&out).await?;
        let mut dec = Decoder::new(1 << 22);
        let mut buf = vec![0u8; 65536];
        let mut acked = (false, 0);
        while !(acked.0 && acked.1 == 2) {
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .map_err(|_| ResponderError::Protocol)??;
            if n == 0 {
                return Err(ResponderError::Protocol);
            }
            dec.feed(&buf[..n]);
            while let Some(p) = dec.next_packet().map_err(|_| ResponderError::Protocol)? {
                match p {
                    Packet::ConnAck(a) if a.code == ConnectReturnCode::Success => acked.0 = true,
                    Packet::ConnAck(a) => return Err(ResponderError::Refused(a.code as u8)),
                    Packet::SubAck(a) if a.return_codes.iter().all(|c| *c != codec::SubscribeReasonCode::Failure) => {
                        acked.1 += 1
                    }
                    Packet::SubAck(_) => return Err(ResponderError::Protocol),
                    _ => {}
                }
            }
        }
        tracing::info!(broker = %opts.broker, group = ?opts.group, "responder connected");
        let task = tokio::spawn(serve(self.inner().clone(), s, dec));
        Ok(Responder { task })
    }
}

async fn serve(inner: Arc<Inner>, mut s: TcpStream, mut dec: Decoder) {
    let (tx, mut rx) = mpsc::channel::<ConnMsg>(4096);
    // One session per device seen, all delivered through this one connection.
    let mut sessions = Sessions { inner: inner.clone(), by_device: HashMap::new() };
    let mut buf = vec![0u8; 65536];
    let mut out = BytesMut::new();
    let mut pkid: u16 = 1;
    let mut ping = tokio::time::interval(Duration::from_secs(30));
    // At the registry's QoS for replies or for commands, as on the cloud's own listener.
    let delivery = inner.cloud().delivery();
    let mut publish = |out: &mut BytesMut, topic: &str, payload: &[u8]| {
        let qos = delivery.qos(topic);
        let id = match qos {
            QoS::AtMostOnce => 0,
            _ => {
                pkid = if pkid == u16::MAX { 1 } else { pkid + 1 };
                pkid
            }
        };
        let _ = codec::encode_publish(out, topic, payload, qos, id, false);
    };
    loop {
        tokio::select! {
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    dec.feed(&buf[..n]);
                    loop {
                        match dec.next_packet() {
                            Ok(Some(Packet::Publish(p))) => {
                                if p.qos == QoS::AtLeastOnce {
                                    let _ = codec::encode_packet(&mut out, &Packet::PubAck(PubAck::new(p.pkid)));
                                }
                                let Some(parts) = parse_topic(&p.topic) else { continue };
                                let Ok(keys) = DeviceKeys::new(parts.product_key, parts.device_key) else { continue };
                                // Only registered devices get a session: topics of unknown keys
                                // cannot grow the tables. A plain broker does not say who
                                // published: a device in a gateway's topology acts through
                                // its gateway, so its topics are handled in the gateway's
                                // session, and a post for it while it is not logged in is
                                // refused (1009) as on the cloud's own listener.
                                let owner = {
                                    let cloud = inner.cloud();
                                    if !cloud.registry.devices.contains_key(&keys) {
                                        continue;
                                    }
                                    cloud.registry.gateway_of(&keys).cloned().unwrap_or(keys)
                                };
                                let conn = *sessions.by_device.entry(owner.clone()).or_insert_with(|| {
                                    let id = inner.next_conn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    lock(&inner.conns).insert(id, ConnHandle { tx: tx.clone(), close: Arc::new(tokio::sync::Notify::new()) });
                                    id
                                });
                                inner.cloud().attach(conn, &owner);
                                let handled = inner.handle_publish(conn, &p.topic, &p.payload);
                                for r in handled.replies {
                                    publish(&mut out, &r.topic, &r.payload);
                                }
                            }
                            Ok(Some(_)) => {}
                            Ok(None) => break,
                            Err(e) => {
                                tracing::warn!(error = %e, "bad packet from the broker");
                                return;
                            }
                        }
                    }
                }
            },
            m = rx.recv() => match m {
                Some(ConnMsg::Publish(o)) => publish(&mut out, &o.topic, &o.payload),
                // Faults that close or corrupt a device's own connection have no meaning here.
                Some(ConnMsg::Raw(_)) | None => {}
            },
            _ = ping.tick() => {
                let _ = codec::encode_packet(&mut out, &Packet::PingReq);
            }
        }
        if !out.is_empty() && s.write_all(&out.split()).await.is_err() {
            break;
        }
    }
    tracing::info!("responder disconnected from the broker");
}

/// The devices a responder serves; they go offline when it stops, however it stops
/// (the broker gone, a bad packet, or the task aborted by dropping the `Responder`).
struct Sessions {
    inner: Arc<Inner>,
    by_device: HashMap<DeviceKeys, ConnId>,
}

impl Drop for Sessions {
    fn drop(&mut self) {
        let mut conns = lock(&self.inner.conns);
        for id in self.by_device.values() {
            conns.remove(id);
        }
        drop(conns);
        let mut cloud = self.inner.cloud();
        for id in self.by_device.values() {
            cloud.disconnect(*id);
        }
    }
}
