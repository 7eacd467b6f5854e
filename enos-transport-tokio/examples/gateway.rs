//! A gateway: topology, sub-device login, data on behalf of a sub-device, and the
//! sub-device commands.
//!
//!     cargo run -p enos-transport-tokio --example gateway

#[path = "common/mod.rs"]
mod common;

use enos_transport_tokio::{GatewayClient, RequestOptions};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (options, sim) = common::setup(true).await?;
    let gateway = GatewayClient::new(options)?;
    gateway.connect().await?;
    let sub = common::sub_device();
    let m = gateway.sub_device_management();
    println!("add_topo: code {}", m.add_topo(vec![sub.clone()], RequestOptions::new()).await?.code);
    println!("get_topo: {:?}", m.get_topo(RequestOptions::new()).await?.data);
    println!("login_sub_device: {:?}", m.login_sub_device(sub.clone(), RequestOptions::new()).await?.data);
    let r = gateway
        .device_data()
        .post_measurepoint(json!({"temp": 19.5}), RequestOptions::new().target(sub.keys.clone()))
        .await?;
    println!("post_measurepoint for {}: code {}", sub.keys, r.code);
    m.on_sub_devices_disable(|c, res| async move {
        println!("sub-devices disabled: {:?}", c.kind);
        res.ok(json!({}));
    });
    gateway.device_command().on_invoke_service("restart", Some(sub.keys.clone()), |c, res| async move {
        println!("restart for {}", c.device);
        res.ok(json!({}));
    });
    if let Some(sim) = sim {
        println!("cloud -> sub-device restart: {:?}", sim.invoke_service(&sub.keys, "restart", json!({})).await?);
    }
    println!("logout_sub_device: {:?}", m.logout_sub_device(sub.keys.clone(), RequestOptions::new()).await?.data);
    gateway.close().await?;
    Ok(())
}
