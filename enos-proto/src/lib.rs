//! The sans-IO core of the EnOS IoT device SDK.
//!
//! `enos-proto` speaks the EnOS device protocol (MQTT 3.1.1 with EnOS signing, topics and
//! JSON envelopes) as a pure state machine. It has no sockets, no clocks, no threads, no
//! async and no callbacks: bytes and time go in, bytes to send, events and correlated
//! replies come out. A driver (`enos-transport-tokio`, `enos-transport-smol`,
//! `enos-transport-blocking`, all on the runtime-neutral API of `enos-client`) moves bytes
//! between a socket and a [`Client`]; anyone can write another (see "Your own event loop"
//! below).
//!
//! ```text
//!  socket ──► Client::handle_input(now, &[u8])  ─┐
//!  socket ──► Client::handle_written(now, n)     │
//!  dialer ──► Client::handle_connected / _closed ├─► Client::poll_output() ─► Output::Transmit(bytes) ──► socket
//!  timer  ──► Client::handle_timeout(now)        │                          Output::OpenTransport / CloseTransport ──► dialer
//!  app    ──► Client::request(now, op, opts)    ─┘                          Output::Event(Connected, Response, Command, ..) ──► app
//!             Client::reply(now, reply)                                     Output::Wait(deadline) ──► timer
//! ```
//!
//! # Example
//!
//! A whole exchange with no network: the bytes the cloud would send are built with the
//! crate's own [`codec`].
//!
//! ```
//! use std::time::Instant;
//! use bytes::BytesMut;
//! use enos_proto::codec::{self, ConnAck, ConnectReturnCode, Packet, PubAck, QoS, SubAck, SubscribeReasonCode};
//! use enos_proto::ops::MeasurepointPost;
//! use enos_proto::{Client, Config, Credentials, DeviceKeys, Event, Now, Output, Reply, RequestOptions};
//!
//! // Drain outputs up to the next event.
//! fn next_event(c: &mut Client) -> Option<Event> {
//!     loop {
//!         match c.poll_output() {
//!             Output::Event(e) => return Some(e),
//!             Output::Wait(_) => return None,
//!             _ => {}
//!         }
//!     }
//! }
//!
//! let now = Now::new(Instant::now(), 1_600_000_000_000);
//! let keys = DeviceKeys::new("pk1234ab", "dev_001")?;
//! let config = Config::new(keys, Credentials::DeviceSecret("DS0123456789abcdefgh".into()));
//! let mut client = Client::new(config, now)?;
//! assert!(matches!(client.poll_output(), Output::OpenTransport));
//!
//! // The transport is up: the CONNECT goes out; the cloud accepts it.
//! client.handle_connected(now);
//! assert!(matches!(client.poll_output(), Output::Transmit(_)));
//! let mut cloud = BytesMut::new();
//! codec::encode_packet(&mut cloud, &Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)))?;
//! client.handle_input(now, &cloud.split());
//! assert_eq!(next_event(&mut client), Some(Event::Connected { reconnect: false }));
//! // The start is done: what a seed `connect()` waits for.
//! assert_eq!(next_event(&mut client), Some(Event::Started(Ok(()))));
//!
//! // A measure point post: first the SUBSCRIBE to its reply topic (packet id 1)...
//! let points = serde_json::json!({"temp": 21.5});
//! let id = client.request(now, MeasurepointPost::new(points), RequestOptions::default())?;
//! assert!(matches!(client.poll_output(), Output::Transmit(_)));
//! codec::encode_packet(&mut cloud, &Packet::SubAck(SubAck::new(1, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)])))?;
//! client.handle_input(now, &cloud.split());
//! // ...then the PUBLISH (packet id 2), its PUBACK, and the reply.
//! assert!(matches!(client.poll_output(), Output::Transmit(_)));
//! codec::encode_packet(&mut cloud, &Packet::PubAck(PubAck::new(2)))?;
//! let reply = br#"{"id":"1","code":200,"data":{}}"#;
//! codec::encode_publish(&mut cloud, "/sys/pk1234ab/dev_001/thing/measurepoint/post_reply", reply, QoS::AtMostOnce, 0, false)?;
//! client.handle_input(now, &cloud.split());
//! match next_event(&mut client) {
//!     Some(Event::Response { id: done, result: Ok(Reply::Json(r)) }) => {
//!         assert_eq!((done, r.code), (id, 200));
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Time
//!
//! Every input takes a [`Now`]: a monotonic `instant` that drives every deadline
//! (keep-alive, ping response, connect timeout, reconnect back-off, request timeouts),
//! and `unix_ms`, the wall clock, read only where EnOS wants it (the CONNECT and
//! sub-device signatures at each attempt, and the default `time` of measure points and
//! events). The core never reads a clock: [`Now::system`] is for drivers. Tests build
//! `Now` values by hand and run hours of protocol time in microseconds.
//!
//! # TLS
//!
//! With the `tls` feature and [`Config::tls`] set, TLS is part of the session: after
//! [`Client::handle_connected`] the core runs the handshake (rustls, ring), every
//! [`Output::Transmit`] is ciphertext and [`Client::handle_input`] takes ciphertext. A
//! driver moves bytes between a TCP socket and the core and never touches rustls; a TLS
//! failure ends the session like any other, with
//! [`CloseCause::Tls`](crate::CloseCause::Tls), its alert for the peer handed out first.
//!
//! # Your own event loop
//!
//! Where none of the drivers fits (an event loop of your own, a single thread, a socket
//! the platform gives you), drive the core directly: one loop that does what
//! [`Client::poll_output`] asks until [`Output::Wait`], then waits for bytes or that
//! deadline. Over a plain `std::net::TcpStream`, with the read timeout as the timer, a
//! device that connects, posts a measure point once started, and answers every command:
//!
//! ```no_run
//! use std::io::{ErrorKind, Read, Write};
//! use std::net::TcpStream;
//! use enos_proto::ops::MeasurepointPost;
//! use enos_proto::{Client, CloseCause, Config, Credentials, DeviceKeys, Event, Now, Output, RequestOptions};
//! use serde_json::json;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = DeviceKeys::new("demo_pk", "demo_device")?;
//! let config = Config::new(keys, Credentials::DeviceSecret("demo_device_secret".into()));
//! let mut client = Client::new(config, Now::system())?;
//! let mut socket: Option<TcpStream> = None;
//! let mut buf = [0u8; 16 * 1024];
//! loop {
//!     // 1. Do what the core asks, until it waits.
//!     let deadline = loop {
//!         match client.poll_output() {
//!             Output::Transmit(bytes) => match socket.as_mut().map(|s| s.write_all(&bytes)) {
//!                 // Written whole: a QoS 0 request in it counts as delivered.
//!                 Some(Ok(())) => {
//!                     client.handle_written(Now::system(), 1);
//!                 }
//!                 Some(Err(e)) => {
//!                     socket = None;
//!                     client.handle_closed(Now::system(), e.into());
//!                 }
//!                 None => {}
//!             },
//!             Output::OpenTransport => match TcpStream::connect("127.0.0.1:11883") {
//!                 Ok(s) => {
//!                     s.set_nodelay(true)?;
//!                     socket = Some(s);
//!                     client.handle_connected(Now::system());
//!                 }
//!                 Err(e) => client.handle_closed(Now::system(), e.into()),
//!             },
//!             Output::CloseTransport => socket = None,
//!             Output::Event(Event::Started(Ok(()))) => {
//!                 let post = MeasurepointPost::new(json!({"temp": 21.5}));
//!                 client.request(Now::system(), post, RequestOptions::default())?;
//!             }
//!             Output::Event(Event::Started(Err(e))) => return Err(e.into()),
//!             Output::Event(Event::Response { id, result }) => println!("request {id:?}: {result:?}"),
//!             Output::Event(Event::Command(cmd)) => {
//!                 // Every command is answered (or, raw and unwanted, dismissed).
//!                 let reply = cmd.reply_to.ok(&json!({"done": true}))?;
//!                 client.reply(Now::system(), reply)?;
//!             }
//!             Output::Event(other) => println!("{other:?}"),
//!             Output::Wait(at) => break at,
//!         }
//!     };
//!     // 2. Wait for bytes, or for the deadline: the read timeout is the timer.
//!     let now = Now::system();
//!     let wait = deadline.map(|at| at.saturating_duration_since(now.instant));
//!     let Some(s) = socket.as_mut() else {
//!         std::thread::sleep(wait.unwrap_or(std::time::Duration::from_secs(1)));
//!         client.handle_timeout(Now::system());
//!         continue;
//!     };
//!     if wait.is_some_and(|d| d.is_zero()) {
//!         client.handle_timeout(now);
//!         continue;
//!     }
//!     s.set_read_timeout(wait)?;
//!     match s.read(&mut buf) {
//!         Ok(0) => {
//!             socket = None;
//!             client.handle_closed(Now::system(), CloseCause::Eof);
//!         }
//!         Ok(n) => client.handle_input(Now::system(), &buf[..n]),
//!         Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
//!             client.handle_timeout(Now::system())
//!         }
//!         Err(e) => {
//!             socket = None;
//!             client.handle_closed(Now::system(), e.into());
//!         }
//!     }
//! }
//! # }
//! ```
//!
//! The same loop runs against the local cloud in `enos-sim/tests/own_loop.rs`. With
//! [`Config::tls`] set, it speaks TLS: the core seals and opens the bytes.
//! A request made while the loop is blocked in `read` waits for the next turn: a loop that
//! takes requests from other threads wakes itself (the async drivers and
//! `enos-transport-blocking` show how).
//!
//! # Guarantees
//!
//! * Every request ends exactly once, in an [`Event::Response`]: reply, PUBACK when no
//!   reply is wanted, or a typed [`RequestError`] (timeout, refused subscription, close).
//! * Nothing from the network can panic the core: bad bytes end the connection with a
//!   typed [`DisconnectCause`]; bad replies and commands become [`Event::Error`].
//! * Every queue has a bound from [`Config`] and a typed refusal past it.
//! * Secrets ([`Secret`]) never appear in `Debug` output, logs or errors.

#![forbid(unsafe_code, unused_must_use)]
#![warn(missing_docs, unreachable_pub)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod client;
pub mod codec;
pub mod command;
pub mod compress;
mod config;
pub mod envelope;
mod error;
mod event;
pub mod http;
pub mod ops;
#[cfg(feature = "tls")]
pub mod options;
mod packet;
mod pending;
mod secret;
pub mod sign;
pub mod store;
mod time;
#[cfg(feature = "tls")]
pub mod tls;
pub mod topic;

pub use client::{Client, OfflineStats};
pub use command::{Command, CommandKind, CommandReply, ReplyTo};
pub use config::{Config, Credentials, SecretStore, INTEGRATION_DEVICE_KEY};
pub use envelope::{JsonReply, Reply};
pub use error::{
    CloseCause, ConfigError, ConnectRefusal, DecodeError, DisconnectCause, EncodeError, PacketKind, ProtocolError,
    RequestError, StartError, SubmitError,
};
pub use event::{ClientError, Event, Output, Qos, RequestId, RequestOptions};
pub use ops::{Operation, SubDeviceInfo};
pub use secret::Secret;
pub use sign::{SecureMode, SignMethod};
pub use time::Now;
pub use topic::DeviceKeys;

/// The seed's name for a device's keys.
pub type DeviceInfo = DeviceKeys;
