//! A tour of every seed method on smol (or async-std), as a gateway, in the order of the seed's
//! documentation, printing each reply; then it answers commands.
//!
//!     cargo run -p enos-transport-smol --example smol_tour
//!
//! Against any broker (a real EnOS endpoint, or mosquitto with `enos-sim serve
//! --responder`) with `BROKER_URL`, `PK`, `DK`, `SECRET` (the gateway), `SUB_PK`,
//! `SUB_DK`, `SUB_SECRET` (its sub-device), `CA_FILE` for `ssl://`, `SUBSCRIBE_COMMANDS=1`
//! on a plain broker, and `COMMANDS=N` (commands to answer before exiting). Without a
//! broker it starts the built-in local cloud and sends itself two commands.

use std::sync::mpsc;

use enos_sim::registry::defaults::*;
use enos_sim::{Sim, SimThread};
use enos_transport_smol::proto::ops::{
    BatchEntry, DeviceName, MeasurepointBatchPost, MeasurepointBatchResume, SubDeviceRegistration,
};
use enos_transport_smol::proto::DeviceKeys;
use enos_transport_smol::{ClientOptions, GatewayClient, RequestOptions, Response, SubDeviceInfo};
use serde_json::json;

fn show<T: std::fmt::Debug, E: std::fmt::Display>(what: &str, r: Result<Response<T>, E>) {
    match r {
        Ok(r) => println!("{what:<28} code {} data {:?}", r.code, r.data),
        Err(e) => println!("{what:<28} error: {e}"),
    }
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The broker of the environment, or the local cloud.
    let sim = match env("BROKER_URL") {
        Some(_) => None,
        None => Some(SimThread::start(Sim::builder())?),
    };
    let url = env("BROKER_URL").or_else(|| sim.as_ref().and_then(|s| s.tcp_url())).ok_or("no broker")?;
    let mut options =
        ClientOptions::new(url, env("PK").unwrap_or(GATEWAY_PRODUCT.into()), env("DK").unwrap_or(GATEWAY.into()));
    options.device_secret = Some(env("SECRET").unwrap_or(GATEWAY_SECRET.into()).into());
    options.ca = env("CA_FILE").map(std::fs::read).transpose()?;
    options.subscribe_command_topics = env("SUBSCRIBE_COMMANDS").is_some();
    let sub = SubDeviceInfo::new(
        DeviceKeys::new(env("SUB_PK").unwrap_or(SUB_PRODUCT.into()), env("SUB_DK").unwrap_or(SUB_DEVICE_1.into()))?,
        env("SUB_SECRET").unwrap_or(SUB_DEVICE_1_SECRET.into()),
    );

    smol::block_on(tour(options, sub, sim))
}

async fn tour(
    options: ClientOptions,
    sub: SubDeviceInfo,
    sim: Option<SimThread>,
) -> Result<(), Box<dyn std::error::Error>> {
    let o = RequestOptions::new;
    let gw = GatewayClient::new(options)?;
    let mut events = gw.events();
    smol::spawn(async move {
        while let Some(e) = events.recv().await {
            println!("event: {e:?}");
        }
    })
    .detach();
    gw.connect().await?;
    println!("connected");
    let d = gw.device_data();

    // Tags, attributes.
    show("update_tag", d.update_tag([("tour", "yes")], o()).await);
    show("query_tag", d.query_tag(["tour"], o()).await);
    show("delete_tag", d.delete_tag(["tour"], o()).await);
    show("update_attribute", d.update_attribute(json!({"name": "tour gateway"}), o()).await);
    show("query_attribute", d.query_attribute(["name"], o()).await);
    show("delete_attribute", d.delete_attribute(["name"], o()).await);
    // Measure points.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    show("post_measurepoint", d.post_measurepoint(json!({"temp": 21.5}), o()).await);
    show("resume_measurepoint", d.resume_measurepoint(json!({"temp": 20.0}), now - 60_000, o()).await);
    // Sub-device management.
    let m = gw.sub_device_management();
    let mut reg =
        SubDeviceRegistration::new(sub.keys.product_key(), DeviceName::new("tour device").with("en_US", "tour device"));
    reg.device_key = Some(format!("tour_{}", now % 1_000_000));
    let registered = m.register_device(vec![reg], o()).await;
    let new_keys = registered
        .as_ref()
        .ok()
        .and_then(|r| r.data.first())
        .map(|r| DeviceKeys::new(r.product_key.clone(), r.device_key.clone()));
    show("register_device", registered);
    show("add_topo", m.add_topo(vec![sub.clone()], o()).await);
    show("get_topo", m.get_topo(o()).await);
    show("login_sub_device", m.login_sub_device(sub.clone(), o()).await);
    // Data on behalf of the sub-device (the seed's deviceInfo).
    show("post_measurepoint (sub)", d.post_measurepoint(json!({"temp": 19.5}), o().target(sub.keys.clone())).await);
    let entries = vec![
        BatchEntry::own(json!({"temp": 21.0}), None),
        BatchEntry::of(sub.keys.clone(), json!({"temp": 19.0}), None),
    ];
    show("batch_post_measurepoint", d.batch_post_measurepoint(MeasurepointBatchPost::new(entries.clone()), o()).await);
    show("batch_resume_measurepoint", d.batch_resume_measurepoint(MeasurepointBatchResume::new(entries), o()).await);
    show("post_event", d.post_event("overheat", json!({"level": 1, "msg": "tour"}), o()).await);
    show("up_raw_model", d.up_raw_model(vec![0x01, 0x02], o()).await);
    show("logout_sub_device", m.logout_sub_device(sub.keys.clone(), o()).await);
    show("batch_login_sub_device", m.batch_login_sub_device(vec![sub.clone()], o()).await);
    if let Some(Ok(k)) = new_keys {
        show("delete_topo", m.delete_topo(vec![k], o()).await);
    }
    // Beyond the seed: OTA and the thing model.
    show("ota report_version", gw.ota().report_version("1.0.0", o()).await);
    show("ota get_version", gw.ota().get_version(o()).await);
    let tsl = gw.ota().get_tsl_template(o()).await;
    show(
        "get_tsl_template",
        tsl.map(|r| Response { id: r.id, code: r.code, data: r.data.tsl_measurepoint_map.len(), message: r.message }),
    );

    // Commands: answer every service and measure point set, for the gateway and its
    // sub-device.
    let (done, answered) = mpsc::channel();
    let tx = std::sync::Mutex::new(done.clone());
    gw.device_command().on_invoke_service("*", None, move |c, res| {
        println!("command for {}: {:?}", c.device, c.kind);
        res.ok(json!({"answered_by": "tour"}));
        let _ = tx.lock().map(|t| t.send(()));
        async {}
    });
    let tx = std::sync::Mutex::new(done);
    gw.device_command().on_set_measurepoint(None, move |c, res| {
        println!("measure point set for {}: {:?}", c.device, c.kind);
        res.ok(json!({}));
        let _ = tx.lock().map(|t| t.send(()));
        async {}
    });
    let want = match &sim {
        Some(sim) => {
            let gw_keys = DeviceKeys::new(GATEWAY_PRODUCT, GATEWAY)?;
            let sk = sub.keys.clone();
            drop(sim.run(move |s| async move { s.invoke_service(&gw_keys, "restart", json!({"delay": 1})).await }));
            drop(sim.run(move |s| async move { s.set_measurepoints(&sk, json!({"temp_setpoint": 20})).await }));
            2
        }
        None => env("COMMANDS").and_then(|n| n.parse().ok()).unwrap_or(usize::MAX),
    };
    println!(
        "answering commands until {} are answered",
        if want == usize::MAX { "all".into() } else { want.to_string() }
    );
    let n = smol::unblock(move || answered.iter().take(want).count()).await;
    println!("{n} commands answered");
    gw.close().await?;
    Ok(())
}
