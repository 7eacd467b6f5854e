//! Shared fixtures of the benchmarks: a connected core and the cloud's bytes for it.
//!
//! ```
//! let mut c = enos_benches::connected_client();
//! assert!(c.is_connected());
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use enos_proto::codec::{self, ConnAck, ConnectReturnCode, Packet, PubAck, QoS, SubAck, SubscribeReasonCode};
use enos_proto::{Client, Config, Credentials, DeviceKeys, Now, Output};

/// A typical device's measure points as a typed struct (what the SDK recommends).
#[derive(Debug, Clone, Copy, serde::Serialize)]
#[allow(missing_docs)]
pub struct TypicalPoints {
    pub temp: f64,
    pub humidity: f64,
    pub pressure: f64,
    pub voltage: Quality,
    pub current: f64,
    pub power: f64,
    pub energy: f64,
    pub status: i32,
}

/// A value with its quality.
#[derive(Debug, Clone, Copy, serde::Serialize)]
#[allow(missing_docs)]
pub struct Quality {
    pub value: f64,
    pub quality: i32,
}

impl TypicalPoints {
    /// The same values as [`typical_points`].
    pub fn new() -> Self {
        TypicalPoints {
            temp: 21.5,
            humidity: 48.25,
            pressure: 1013.2,
            voltage: Quality { value: 229.8, quality: 9 },
            current: 4.71,
            power: 1082.3,
            energy: 123456.78,
            status: 1,
        }
    }
}

impl Default for TypicalPoints {
    fn default() -> Self {
        Self::new()
    }
}

/// A measure point post of about 200 bytes of JSON, as a device typically sends.
pub fn typical_points() -> serde_json::Value {
    serde_json::json!({
        "temp": 21.5, "humidity": 48.25, "pressure": 1013.2,
        "voltage": {"value": 229.8, "quality": 9}, "current": 4.71,
        "power": 1082.3, "energy": 123456.78, "status": 1
    })
}

/// A client whose session is up (CONNACK fed, outputs drained).
pub fn connected_client() -> Client {
    let now = Now::system();
    let mut config = Config::new(
        DeviceKeys::new("pk1234ab", "dev_001").expect("valid keys"),
        Credentials::DeviceSecret("DS0123456789abcdefgh".into()),
    );
    config.keep_alive = std::time::Duration::ZERO;
    let mut c = Client::new(config, now).expect("valid config");
    drain(&mut c);
    c.handle_connected(now);
    let mut b = BytesMut::new();
    codec::encode_packet(&mut b, &Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)))
        .expect("CONNACK encodes");
    c.handle_input(now, &b);
    drain(&mut c);
    c
}

/// The measure point post topic of the fixture device.
pub const POST_TOPIC: &str = "/sys/pk1234ab/dev_001/thing/measurepoint/post";

/// A [`connected_client`] whose first measure point post was answered, so its reply topic
/// is subscribed. Request `k` (counting from 0) of a loop after it has envelope id `k + 2`
/// and packet id `k + 3` (wrapping past 65,535 to 1); [`cycle_answer`]`(k)` answers it.
pub fn primed_client() -> Client {
    let mut client = connected_client();
    let now = Now::system();
    client
        .request(
            now,
            enos_proto::ops::MeasurepointPost::new(TypicalPoints::new()),
            enos_proto::RequestOptions::default(),
        )
        .expect("a post is accepted");
    let mut cloud = BytesMut::new();
    codec::encode_packet(
        &mut cloud,
        &Packet::SubAck(SubAck::new(1, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)])),
    )
    .expect("SUBACK encodes");
    codec::encode_packet(&mut cloud, &Packet::PubAck(PubAck::new(2))).expect("PUBACK encodes");
    codec::encode_publish(&mut cloud, &reply_topic(), br#"{"id":"1","code":200,"data":{}}"#, QoS::AtMostOnce, 0, false)
        .expect("reply encodes");
    client.handle_input(now, &cloud);
    drain(&mut client);
    client
}

/// The cloud's bytes answering request `k` after [`primed_client`]: its PUBACK and a
/// successful reply.
pub fn cycle_answer(k: u64) -> Bytes {
    let pkid = ((k + 2) % 65_535 + 1) as u16;
    let mut b = BytesMut::with_capacity(96);
    codec::encode_packet(&mut b, &Packet::PubAck(PubAck::new(pkid))).expect("PUBACK encodes");
    let body = format!(r#"{{"id":"{}","code":200,"data":{{}}}}"#, k + 2);
    codec::encode_publish(&mut b, &reply_topic(), body.as_bytes(), QoS::AtMostOnce, 0, false).expect("reply encodes");
    b.freeze()
}

fn reply_topic() -> String {
    format!("{POST_TOPIC}_reply")
}

/// Drains a client's outputs; returns the bytes it transmitted.
pub fn drain(c: &mut Client) -> usize {
    let mut n = 0;
    loop {
        match c.poll_output() {
            Output::Transmit(b) => n += b.len(),
            Output::Wait(_) => return n,
            _ => {}
        }
    }
}

/// The local cloud's side of the load: a [`enos_sim::Cloud`] with one device connected (its
/// measure point post topic) and one gateway connected with `subs` sub-devices in its
/// topology (its batch post topic), as connection 1 and 2.
pub struct CloudFixture {
    /// The cloud.
    pub cloud: enos_sim::Cloud,
    /// The device's measure point post topic (connection 1).
    pub post_topic: String,
    /// The gateway's batch post topic (connection 2).
    pub batch_topic: String,
    /// The sub-devices.
    pub subs: Vec<DeviceKeys>,
}

impl CloudFixture {
    /// A cloud with the device and the gateway connected, keeping no history (the last
    /// value of every point only), as the load tool runs it.
    pub fn new(subs: usize) -> CloudFixture {
        use enos_sim::registry::defaults::*;
        let mut registry = enos_sim::Registry::builtin();
        registry.history_limit = 0;
        let gateway = DeviceKeys::new(GATEWAY_PRODUCT, GATEWAY).expect("valid keys");
        let subs: Vec<DeviceKeys> =
            (0..subs).map(|i| DeviceKeys::new(SUB_PRODUCT, format!("sub_{i}")).expect("valid keys")).collect();
        for k in &subs {
            registry.add_device(k.clone(), Some(FLEET_SECRET.into())).expect("a new device");
            registry.add_topology(&gateway, k.clone());
        }
        let mut cloud = enos_sim::Cloud::new(registry);
        for (conn, (pk, dk, secret)) in
            [(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET), (GATEWAY_PRODUCT, GATEWAY, GATEWAY_SECRET)]
                .into_iter()
                .enumerate()
        {
            let keys = DeviceKeys::new(pk, dk).expect("valid keys");
            cloud.connect_with_secret(conn as u64 + 1, &keys, &secret.into()).expect("the fixture's devices connect");
        }
        CloudFixture {
            cloud,
            post_topic: format!("/sys/{DEVICE_PRODUCT}/{DEVICE}/thing/measurepoint/post"),
            batch_topic: format!("/sys/{GATEWAY_PRODUCT}/{GATEWAY}/thing/measurepoint/post/batch"),
            subs,
        }
    }

    /// The device's measure point post with envelope id `id`, as the SDK sends it.
    pub fn post(&self, id: u32) -> Bytes {
        let keys = DeviceKeys::new(enos_sim::registry::defaults::DEVICE_PRODUCT, enos_sim::registry::defaults::DEVICE)
            .expect("valid keys");
        let ctx = enos_proto::ops::EncodeContext { unix_ms: 1_600_000_000_000, own: &keys };
        enos_proto::ops::encode(&enos_proto::ops::MeasurepointPost::new(TypicalPoints::new()), &keys, id, &ctx)
            .expect("a post encodes")
            .payload
    }

    /// A batch post of `n` sub-devices' points starting at sub-device `from`, allowed for
    /// sub-devices in the topology that are not logged in.
    pub fn batch(&self, id: u32, from: usize, n: usize) -> Bytes {
        use enos_proto::ops::{BatchEntry, MeasurepointBatchPost};
        let gateway =
            DeviceKeys::new(enos_sim::registry::defaults::GATEWAY_PRODUCT, enos_sim::registry::defaults::GATEWAY)
                .expect("valid keys");
        let entries = (0..n)
            .map(|j| BatchEntry::of(self.subs[(from + j) % self.subs.len()].clone(), TypicalPoints::new(), None))
            .collect();
        let op = MeasurepointBatchPost::new(entries).allow_offline_sub_device(true);
        let ctx = enos_proto::ops::EncodeContext { unix_ms: 1_600_000_000_000, own: &gateway };
        enos_proto::ops::encode(&op, &gateway, id, &ctx).expect("a batch encodes").payload
    }
}

/// Where a driver's users run their code: tasks of its runtime, or threads.
pub trait LoadRuntime: enos_client::Runtime {
    /// Runs `f` to its end there.
    fn run(f: impl Future<Output = ()> + Send + 'static);
    /// Waits until `at` there.
    fn sleep_until(at: Instant) -> impl Future<Output = ()> + Send;
}

impl LoadRuntime for enos_transport_tokio::Tokio {
    fn run(f: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(f);
    }
    fn sleep_until(at: Instant) -> impl Future<Output = ()> + Send {
        tokio::time::sleep_until(at.into())
    }
}

impl LoadRuntime for enos_transport_smol::Smol {
    fn run(f: impl Future<Output = ()> + Send + 'static) {
        smol::spawn(f).detach();
    }
    async fn sleep_until(at: Instant) {
        smol::Timer::at(at).await;
    }
}

impl LoadRuntime for enos_transport_blocking::Blocking {
    fn run(f: impl Future<Output = ()> + Send + 'static) {
        std::thread::spawn(move || enos_transport_blocking::block_on(f));
    }
    // On the worker's own thread: blocking it is what the blocking driver's users do.
    async fn sleep_until(at: Instant) {
        std::thread::sleep(at.saturating_duration_since(Instant::now()))
    }
}

/// A field of this process's `/proc/self/status` in KiB (`"VmRSS:"`, `"VmHWM:"`); 0
/// where there is none.
pub fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}
