//! Connection: connect, watch the connection's events, close.
//!
//!     cargo run -p enos-transport-tokio --example connection

#[path = "common/mod.rs"]
mod common;

use enos_transport_tokio::DeviceClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (options, _sim) = common::setup(false).await?;
    let client = DeviceClient::new(options)?;
    let mut events = client.events();
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            println!("event: {e:?}");
        }
    });
    client.connect().await?;
    println!("connected: {}, reconnected: {}", client.connected(), client.reconnected());
    client.close().await?;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    println!("connected: {}", client.connected());
    Ok(())
}
