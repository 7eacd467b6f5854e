//! What the examples share: a broker to talk to. With `BROKER_URL` (and `PK`, `DK`,
//! `SECRET`, `CA_FILE` for `ssl://`) they use it; otherwise they start the built-in local
//! cloud in-process and use its demo devices.
#![allow(dead_code)]

use enos_sim::registry::defaults::*;
use enos_sim::Sim;
use enos_transport_tokio::ClientOptions;

/// The options of the example's device (or gateway with `gateway`), and the in-process
/// cloud when one was started.
pub async fn setup(gateway: bool) -> Result<(ClientOptions, Option<Sim>), Box<dyn std::error::Error>> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(url) = env("BROKER_URL") {
        let (pk, dk) = (env("PK").ok_or("PK is not set")?, env("DK").ok_or("DK is not set")?);
        let mut o = ClientOptions::new(url, pk, dk);
        o.device_secret = Some(env("SECRET").ok_or("SECRET is not set")?.into());
        if let Some(ca) = env("CA_FILE") {
            o.ca = Some(std::fs::read(ca)?);
        }
        o.subscribe_command_topics = env("SUBSCRIBE_COMMANDS").is_some();
        return Ok((o, None));
    }
    let sim = Sim::builder().start().await?;
    let url = sim.tcp_url().ok_or("no listener")?;
    let (pk, dk, secret) =
        if gateway { (GATEWAY_PRODUCT, GATEWAY, GATEWAY_SECRET) } else { (DEVICE_PRODUCT, DEVICE, DEVICE_SECRET) };
    let mut o = ClientOptions::new(url, pk, dk);
    o.device_secret = Some(secret.into());
    println!("(no BROKER_URL: using the built-in local cloud at {})", o.broker_url);
    Ok((o, Some(sim)))
}

/// The sub-device of the examples: `SUB_PK`, `SUB_DK`, `SUB_SECRET`, or the built-in one.
pub fn sub_device() -> enos_transport_tokio::SubDeviceInfo {
    let env = |k: &str, d: &str| std::env::var(k).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| d.to_owned());
    let keys = enos_transport_tokio::DeviceKeys::new(env("SUB_PK", SUB_PRODUCT), env("SUB_DK", SUB_DEVICE_1))
        .expect("SUB_PK and SUB_DK are valid keys");
    enos_transport_tokio::SubDeviceInfo::new(keys, env("SUB_SECRET", SUB_DEVICE_1_SECRET))
}
