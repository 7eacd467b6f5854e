//! Attributes: update (any `Serialize` value), query, delete.
//!
//!     cargo run -p enos-transport-tokio --example attributes

#[path = "common/mod.rs"]
mod common;

use enos_transport_tokio::{DeviceClient, RequestOptions};

#[derive(serde::Serialize)]
struct Nameplate {
    name: &'static str,
    capacity: f64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (options, _sim) = common::setup(false).await?;
    let client = DeviceClient::new(options)?;
    client.connect().await?;
    let data = client.device_data();
    let r = data.update_attribute(Nameplate { name: "inverter-1", capacity: 100.5 }, RequestOptions::new()).await?;
    println!("update_attribute: code {}", r.code);
    println!("query_attribute: {:?}", data.query_attribute(Vec::<String>::new(), RequestOptions::new()).await?.data);
    data.delete_attribute(["capacity"], RequestOptions::new()).await?;
    println!("after delete: {:?}", data.query_attribute(Vec::<String>::new(), RequestOptions::new()).await?.data);
    // A value the thing model refuses is a typed error with the cloud's code.
    match data.update_attribute(serde_json::json!({"capacity": "large"}), RequestOptions::new()).await {
        Ok(r) => println!("accepted: {}", r.code),
        Err(e) => println!("refused: {e}"),
    }
    client.close().await?;
    Ok(())
}
