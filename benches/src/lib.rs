//! Shared fixtures of the benchmarks: a connected core and the cloud's bytes for it.
//!
//! ```
//! let mut c = enos_benches::connected_client();
//! assert!(c.is_connected());
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use bytes::BytesMut;
use enos_proto::codec::{self, ConnAck, ConnectReturnCode, Packet};
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
