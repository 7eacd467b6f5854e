//! The message-integration channel (secure mode 4): one connection of a product posts
//! history for many of its devices. Each request is taken whole or refused with the
//! cloud's first error.
//!
//!     cargo run -p enos-transport-tokio --example integration
//!
//! Against your EnOS: `BROKER_URL`, `PK`, `PRODUCT_SECRET` (the product's channel must be
//! created in the console) and `DEVICES` (device keys of the product, comma-separated).

use enos_sim::registry::defaults::*;
use enos_sim::Sim;
use enos_transport_tokio::proto::ops::IntegrationPost;
use enos_transport_tokio::{ClientOptions, DeviceClient, Error, RequestError, RequestOptions};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut _sim = None;
    let (options, devices) = match env("BROKER_URL") {
        Some(url) => {
            let pk = env("PK").ok_or("PK is not set")?;
            let secret = env("PRODUCT_SECRET").ok_or("PRODUCT_SECRET is not set")?;
            let devices: Vec<String> =
                env("DEVICES").ok_or("DEVICES is not set")?.split(',').map(String::from).collect();
            (ClientOptions::integration_channel(url, pk, secret), devices)
        }
        None => {
            let sim = Sim::builder().start().await?;
            let url = sim.tcp_url().ok_or("no listener")?;
            println!("(no BROKER_URL: using the built-in local cloud at {url})");
            _sim = Some(sim);
            let devices = vec![DEVICE.to_owned(), ACTIVATING_DEVICE.to_owned()];
            (ClientOptions::integration_channel(url, DEVICE_PRODUCT, DEVICE_PRODUCT_SECRET), devices)
        }
    };
    let client = DeviceClient::new(options)?;
    client.connect().await?;
    let channel = client.integration();

    // An hour of history of every device, one value a minute: one request per device.
    let start = 1_600_000_000_000u64;
    for (i, dk) in devices.iter().enumerate() {
        let mut post = IntegrationPost::measurepoints();
        for minute in 0..60u32 {
            let temp = 20.0 + i as f64 + f64::from(minute) / 10.0;
            post = post.entry(dk.clone(), Some(start + u64::from(minute) * 60_000), json!({ "temp": temp }));
        }
        let r = channel.post(post, RequestOptions::new()).await?;
        println!("60 values of {dk}: code {}", r.code);
    }
    let events = IntegrationPost::events().entry(
        devices[0].clone(),
        Some(start),
        json!({"overheat": {"level": 2, "msg": "warm"}}),
    );
    println!("events: code {}", channel.post(events, RequestOptions::new()).await?.code);
    let attributes = IntegrationPost::attributes().entry(devices[0].clone(), None, json!({"name": "inverter-1"}));
    println!("attributes: code {}", channel.post(attributes, RequestOptions::new()).await?.code);

    // One unknown device refuses the whole request.
    let mixed = IntegrationPost::measurepoints().entry(devices[0].clone(), Some(start), json!({"temp": 1.0})).entry(
        "no_such_device",
        Some(start),
        json!({"temp": 1.0}),
    );
    match channel.post(mixed, RequestOptions::new()).await {
        Err(Error::Request(RequestError::Rejected { code, message, .. })) => {
            println!("refused whole: {code} {message}")
        }
        other => println!("unexpected: {other:?}"),
    }
    client.close().await?;
    Ok(())
}
