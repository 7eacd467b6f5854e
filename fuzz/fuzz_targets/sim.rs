//! The simulator's handling of a device's packets: its CONNECT parser on arbitrary bytes,
//! then the cloud logic on arbitrary publishes from an authenticated gateway.
//! Invariants: no panic; each JSON reply goes to the request topic + `_reply`, carries an
//! integer code and echoes the request's id; state stays within its bounds.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use enos_proto::DeviceKeys;
use enos_sim::connect::parse_connect;
use enos_sim::registry::defaults::*;
use enos_sim::{Cloud, Registry};
use libfuzzer_sys::fuzz_target;

const PATHS: [&str; 20] = [
    "thing/tag/query",
    "thing/tag/update",
    "thing/attribute/update",
    "thing/measurepoint/post",
    "thing/measurepoint/post/batch",
    "thing/event/{}/post",
    "thing/model/up_raw",
    "thing/device/register",
    "thing/topo/add",
    "thing/topo/delete",
    "thing/tsltemplate/get",
    "ota/device/progress",
    "ota/device/getversion",
    "thing/service/{}_reply",
    "thing/topo/get",
    "thing/attribute/query",
    "thing/measurepoint/resume/batch",
    "ota/device/inform",
    "thing/tag/delete",
    "{}",
];

#[derive(Debug, Arbitrary)]
struct Input {
    connect_bytes: Vec<u8>,
    publishes: Vec<(u8, bool, String, Vec<u8>)>,
}

fuzz_target!(|input: Input| {
    let _ = parse_connect(&input.connect_bytes, 1 << 20);
    let mut registry = Registry::builtin();
    registry.seed(7);
    registry.history_limit = 16;
    let mut cloud = Cloud::new(registry);
    let gw = DeviceKeys::new(GATEWAY_PRODUCT, GATEWAY).unwrap();
    cloud.connect_with_secret(1, &gw, &GATEWAY_SECRET.into()).expect("the gateway authenticates");
    for (path, ext, fill, payload) in input.publishes.into_iter().take(64) {
        let path = PATHS[usize::from(path) % PATHS.len()].replace("{}", &fill);
        let scope = if ext { "/ext/session" } else { "/sys" };
        let topic = format!("{scope}/{GATEWAY_PRODUCT}/{GATEWAY}/{path}");
        let handled = cloud.publish(1, &topic, &Bytes::from(payload.clone()), 1_600_000_000_000);
        for r in handled.replies {
            if r.topic.ends_with("/ota/device/upgrade") {
                continue;
            }
            assert_eq!(r.topic, format!("{topic}_reply"));
            if topic.ends_with("/thing/model/up_raw") && !payload.is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(&r.payload).expect("replies are JSON");
            assert!(v["code"].is_i64(), "integer code");
            if let Some(id) = serde_json::from_slice::<serde_json::Value>(&payload)
                .ok()
                .and_then(|p| p.get("id").and_then(|i| i.as_str().map(str::to_owned)))
            {
                assert_eq!(v["id"], id.as_str());
            }
        }
        let d = cloud.registry.devices.get(&gw).expect("the gateway is still registered");
        assert!(d.tags.len() <= enos_sim::cloud_limits::MAX_TAGS);
        assert!(d.history.len() <= 16 && d.events.len() <= 16);
    }
});
