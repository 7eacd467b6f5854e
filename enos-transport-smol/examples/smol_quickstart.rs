//! Quick start on smol (or async-std): a device against the built-in local cloud, no
//! account or network needed.
//!
//!     cargo run -p enos-transport-smol --example smol_quickstart
//!
//! It starts the local cloud on a runtime of its own, connects a device, posts measure
//! points, answers a service invocation from the cloud, and prints what happens. Replace
//! `smol::block_on` with `async_std::task::block_on` and it runs the same.

use enos_sim::registry::defaults::{DEVICE, DEVICE_PRODUCT, DEVICE_SECRET};
use enos_sim::{Sim, SimThread};
use enos_transport_smol::proto::DeviceKeys;
use enos_transport_smol::{ClientOptions, DeviceClient, RequestOptions};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. The local EnOS cloud, on an ephemeral loopback port.
    let sim = SimThread::start(Sim::builder())?;
    let url = sim.tcp_url().ok_or("no TCP listener")?;
    println!("local cloud listening on {url}");
    smol::block_on(async {
        // 2. A device with its device secret (secure mode 2).
        let mut options = ClientOptions::new(url, DEVICE_PRODUCT, DEVICE);
        options.device_secret = Some(DEVICE_SECRET.into());
        let client = DeviceClient::new(options)?;
        let mut events = client.events();
        smol::spawn(async move {
            while let Some(e) = events.recv().await {
                println!("event: {e:?}");
            }
        })
        .detach();
        client.connect().await?;
        println!("connected: {}", client.connected());

        // 3. Answer the cloud's "restart" service.
        client.device_command().on_invoke_service("restart", None, |cmd, res| async move {
            println!("service invoked: {:?}", cmd.kind);
            res.ok(json!({"result": "restarting"}));
        });

        // 4. Post measure points.
        for i in 0..3 {
            let points = json!({"temp": 20.0 + f64::from(i), "humidity": 45.5});
            let r = client.device_data().post_measurepoint(points, RequestOptions::new()).await?;
            println!("measure point post {i}: code {}", r.code);
        }
        let device = DeviceKeys::new(DEVICE_PRODUCT, DEVICE)?;
        let stored = sim.device(&device).ok_or("unknown device")?.measurepoints;
        println!("the cloud stored: temp = {}", stored["temp"].value);

        // 5. The cloud invokes a service; the handler above answers.
        let d = device.clone();
        let reply = sim.run(move |s| async move { s.invoke_service(&d, "restart", json!({"delay": 5})).await }).await?;
        println!("the cloud got the reply: code {} data {}", reply.code, reply.data);

        // 6. A service nobody handles is answered 1101.
        let reply =
            sim.run(move |s| async move { s.invoke_service(&device, "unknownService", json!({})).await }).await?;
        println!("unhandled service: code {} ({})", reply.code, reply.message.unwrap_or_default());

        client.close().await?;
        println!("closed; connected: {}", client.connected());
        Ok(())
    })
}
