//! Tags: update, query, delete.
//!
//!     cargo run -p enos-transport-tokio --example tags

#[path = "common/mod.rs"]
mod common;

use enos_transport_tokio::{DeviceClient, RequestOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (options, _sim) = common::setup(false).await?;
    let client = DeviceClient::new(options)?;
    client.connect().await?;
    let data = client.device_data();
    let r = data.update_tag([("location", "Shanghai"), ("floor", "3")], RequestOptions::new()).await?;
    println!("update_tag: code {}", r.code);
    let r = data.query_tag(Vec::<String>::new(), RequestOptions::new()).await?;
    println!("query_tag: {:?}", r.data);
    let r = data.delete_tag(["floor"], RequestOptions::new()).await?;
    println!("delete_tag: code {}", r.code);
    println!("query_tag: {:?}", data.query_tag(["location", "floor"], RequestOptions::new()).await?.data);
    client.close().await?;
    Ok(())
}
