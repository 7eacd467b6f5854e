//! Commands: service invocation, measure point set and get, with the cloud's view.
//!
//!     cargo run -p enos-transport-tokio --example commands

#[path = "common/mod.rs"]
mod common;

use enos_transport_tokio::proto::{CommandKind, DeviceKeys};
use enos_transport_tokio::DeviceClient;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (options, sim) = common::setup(false).await?;
    let keys = DeviceKeys::new(options.product_key.clone(), options.device_key.clone())?;
    let client = DeviceClient::new(options)?;
    client.connect().await?;
    let cmd = client.device_command();
    cmd.on_invoke_service("restart", None, |c, res| async move {
        println!("invoke_service: {:?}", c.kind);
        res.ok(json!({"result": "ok"}));
    });
    cmd.on_set_measurepoint(None, |c, res| async move {
        if let CommandKind::SetMeasurepoints { points } = &c.kind {
            println!("set_measurepoint: {points:?}");
        }
        res.ok(json!({}));
    });
    cmd.on_get_measurepoint(None, |_c, res| async move { res.ok(json!({"temp": 21.5})) });
    // A handler may answer an error code of its own (2000 and above).
    cmd.on_invoke_service("selfTest", None, |_c, res| async move { res.error(2001, "sensor missing") });
    match sim {
        Some(sim) => {
            println!("cloud -> restart: {:?}", sim.invoke_service(&keys, "restart", json!({"delay": 5})).await?);
            println!("cloud -> set: {:?}", sim.set_measurepoints(&keys, json!({"temp_setpoint": 22.5})).await?);
            println!("cloud -> get: {:?}", sim.get_measurepoints(&keys, &["temp"]).await?);
            println!("cloud -> selfTest: {:?}", sim.invoke_service(&keys, "selfTest", json!({})).await?);
            println!("cloud -> unknown: {:?}", sim.invoke_service(&keys, "unknown", json!({})).await?);
        }
        None => {
            println!("answering commands for 60 s");
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        }
    }
    client.close().await?;
    Ok(())
}
