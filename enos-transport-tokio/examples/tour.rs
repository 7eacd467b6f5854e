//! A tour of every seed method, as a gateway, in the order of the seed's documentation,
//! printing each reply; then it answers commands.
//!
//! Against any broker (a real EnOS endpoint, or mosquitto with `enos-sim serve
//! --responder`), by flags or environment variables:
//!
//!     BROKER_URL=tcp://127.0.0.1:11883 PK=demo_gw_pk DK=demo_gateway SECRET=demo_gateway_secret \
//!     SUB_PK=demo_sub_pk SUB_DK=demo_sub_1 SUB_SECRET=demo_sub_1_secret \
//!     cargo run -p enos-transport-tokio --example tour -- --commands 2
//!
//! `CA_FILE` for `ssl://`; `SUBSCRIBE_COMMANDS=1` on a plain broker such as mosquitto.
//! Flags override the environment: `--broker-url`, `--pk`, `--dk`, `--secret`, `--sub-pk`,
//! `--sub-dk`, `--sub-secret`, `--ca-file`, `--subscribe-commands`, `--commands N`
//! (commands to answer before exiting; 0 exits at once; without it, it answers until
//! Ctrl-C). Without a broker it starts the built-in local cloud and sends itself two
//! commands.

#[path = "common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use enos_transport_tokio::proto::ops::{
    BatchEntry, DeviceName, MeasurepointBatchPost, MeasurepointBatchResume, SubDeviceRegistration,
};
use enos_transport_tokio::proto::DeviceKeys;
use enos_transport_tokio::{GatewayClient, RequestOptions};
use serde_json::json;

fn show<T: std::fmt::Debug, E: std::fmt::Display>(what: &str, r: Result<enos_transport_tokio::Response<T>, E>) {
    match r {
        Ok(r) => println!("{what:<28} code {} data {:?}", r.code, r.data),
        Err(e) => println!("{what:<28} error: {e}"),
    }
}

fn flags() -> (Option<u64>, bool) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut commands = None;
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        let var = match args[i].as_str() {
            "--broker-url" => "BROKER_URL",
            "--pk" => "PK",
            "--dk" => "DK",
            "--secret" => "SECRET",
            "--sub-pk" => "SUB_PK",
            "--sub-dk" => "SUB_DK",
            "--sub-secret" => "SUB_SECRET",
            "--ca-file" => "CA_FILE",
            "--subscribe-commands" => {
                std::env::set_var("SUBSCRIBE_COMMANDS", "1");
                i += 1;
                continue;
            }
            "--commands" => {
                commands = value.parse().ok();
                i += 2;
                continue;
            }
            other => panic!("unknown flag {other}"),
        };
        std::env::set_var(var, value);
        i += 2;
    }
    (commands, std::env::var("BROKER_URL").is_ok())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (commands, _) = flags();
    let (options, sim) = common::setup(true).await?;
    let o = RequestOptions::new;
    let gw = GatewayClient::new(options)?;
    let mut events = gw.events();
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            println!("event: {e:?}");
        }
    });
    gw.connect().await?;
    println!("connected");
    let d = gw.device_data();
    let sub = common::sub_device();

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
    show(
        "get_tsl_template",
        gw.ota().get_tsl_template(o()).await.map(|r| enos_transport_tokio::Response {
            id: r.id,
            code: r.code,
            data: r.data.tsl_measurepoint_map.len(),
            message: r.message,
        }),
    );

    // Commands: answer every service and measure point set, for the gateway and its sub-device.
    let answered = Arc::new(AtomicU64::new(0));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let (a, t) = (answered.clone(), done_tx.clone());
    gw.device_command().on_invoke_service("*", None, move |c, res| {
        let (a, t) = (a.clone(), t.clone());
        async move {
            println!("command for {}: {:?}", c.device, c.kind);
            res.ok(json!({"answered_by": "tour"}));
            let _ = t.send(a.fetch_add(1, Ordering::Relaxed) + 1);
        }
    });
    let (a, t) = (answered.clone(), done_tx);
    gw.device_command().on_set_measurepoint(None, move |c, res| {
        let (a, t) = (a.clone(), t.clone());
        async move {
            println!("measure point set for {}: {:?}", c.device, c.kind);
            res.ok(json!({}));
            let _ = t.send(a.fetch_add(1, Ordering::Relaxed) + 1);
        }
    });
    let want = match (&sim, commands) {
        (Some(sim), _) => {
            let gw_keys =
                DeviceKeys::new(enos_sim::registry::defaults::GATEWAY_PRODUCT, enos_sim::registry::defaults::GATEWAY)?;
            let (s1, s2, sk) = (sim.clone(), sim.clone(), sub.keys.clone());
            tokio::spawn(async move { s1.invoke_service(&gw_keys, "restart", json!({"delay": 1})).await });
            tokio::spawn(async move { s2.set_measurepoints(&sk, json!({"temp_setpoint": 20})).await });
            Some(2)
        }
        (None, n) => n,
    };
    match want {
        Some(0) => {}
        Some(n) => {
            println!("answering commands until {n} are answered");
            while let Some(count) = done_rx.recv().await {
                if count >= n {
                    break;
                }
            }
        }
        None => {
            println!("answering commands until interrupted (Ctrl-C)");
            tokio::signal::ctrl_c().await?;
        }
    }
    println!("{} commands answered", answered.load(Ordering::Relaxed));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    gw.close().await?;
    Ok(())
}
