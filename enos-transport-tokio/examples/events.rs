//! Events: post an event of the thing model.
//!
//!     cargo run -p enos-transport-tokio --example events

#[path = "common/mod.rs"]
mod common;

use enos_transport_tokio::{DeviceClient, RequestOptions};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (options, _sim) = common::setup(false).await?;
    let client = DeviceClient::new(options)?;
    client.connect().await?;
    let r =
        client.device_data().post_event("overheat", json!({"level": 3, "msg": "hot"}), RequestOptions::new()).await?;
    println!("post_event: code {}", r.code);
    client.close().await?;
    Ok(())
}
