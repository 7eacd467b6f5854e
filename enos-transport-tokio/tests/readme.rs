//! The README's "A device in a few lines", as written there, run against the in-process
//! local cloud: it connects, its post is stored, and the cloud's "reset" gets its answer.

#[path = "readme/device.rs"]
mod device;

use enos_sim::registry::defaults::{DEVICE, DEVICE_PRODUCT};
use enos_sim::Sim;
use enos_transport_tokio::proto::DeviceKeys;
use serde_json::json;

#[test]
fn the_readme_shows_this_code() {
    let readme = include_str!("../../README.md");
    let code = include_str!("readme/device.rs");
    assert!(readme.contains(&format!("```rust\n{code}```")), "README.md and tests/readme/device.rs differ");
}

#[tokio::test]
async fn the_readme_device_posts_and_answers_a_command() {
    let sim = Sim::builder().start().await.unwrap();
    let client = device::run(&sim.tcp_url().unwrap()).await.unwrap();
    let keys = DeviceKeys::new(DEVICE_PRODUCT, DEVICE).unwrap();
    assert_eq!(sim.device(&keys).unwrap().measurepoints["temp"].value, json!(21.5));
    let reply = sim.invoke_service(&keys, "reset", json!({})).await.unwrap();
    assert_eq!((reply.code, reply.data), (200, json!({"done": true})));
    client.close().await.unwrap();
}
