//! Responder mode against a real mosquitto started on a free loopback port: the SDK's
//! core talks to mosquitto, the simulator answers through it, alone or as two responders
//! sharing the load with a shared subscription.

mod support;

use enos_proto::ops::{MeasurepointPost, SubDeviceLogin, TagQuery, TagUpdate, TopoAdd};
use enos_proto::{CommandKind, Reply, RequestOptions, SubDeviceInfo};
use enos_sim::mosquitto::Mosquitto;
use enos_sim::registry::defaults::*;
use enos_sim::responder::ResponderOptions;
use enos_sim::Sim;
use serde_json::json;
use support::*;

fn device_config(pk: &str, dk: &str, secret: &str) -> enos_proto::Config {
    let mut c = config(pk, dk, secret);
    // A plain broker delivers commands only to subscribers.
    c.subscribe_command_topics = true;
    c
}

#[tokio::test]
async fn requests_and_commands_through_mosquitto() {
    let broker = Mosquitto::start(None).unwrap();
    let sim = Sim::builder().no_tcp().start().await.unwrap();
    let responder = sim.responder(ResponderOptions::new(broker.addr())).await.unwrap();
    let mut d =
        TestDevice::connect(broker.addr(), device_config(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET), None).await.unwrap();
    d.call(TagUpdate::new([("site", "lab")])).await.unwrap();
    assert_eq!(d.call(TagQuery::new(["site"])).await.unwrap()["site"], "lab");
    d.call(MeasurepointPost::new(json!({"temp": 20.5}))).await.unwrap();
    let dev = keys(DEVICE_PRODUCT, DEVICE);
    assert_eq!(sim.device(&dev).unwrap().measurepoints["temp"].value, 20.5);
    // A command through the broker.
    let s = sim.clone();
    let invoke = tokio::spawn(async move { s.invoke_service(&keys(DEVICE_PRODUCT, DEVICE), "reset", json!({})).await });
    let cmd = d.next_command().await;
    assert!(matches!(&cmd.kind, CommandKind::InvokeService { service_id, .. } if service_id == "reset"));
    d.reply(cmd.reply_to.ok(&json!({"done": true})).unwrap());
    assert_eq!(invoke.await.unwrap().unwrap().data, json!({"done": true}));

    // A gateway and a sub-device through the broker.
    let mut g = TestDevice::connect(broker.addr(), device_config(GATEWAY_PRODUCT, GATEWAY, GATEWAY_SECRET), None)
        .await
        .unwrap();
    let s1 = SubDeviceInfo::new(keys(SUB_PRODUCT, SUB_DEVICE_1), SUB_DEVICE_1_SECRET);
    g.call(TopoAdd::new(vec![s1.clone()])).await.unwrap();
    // The broker does not say who published on the sub-device's topic: the responder
    // takes it as the gateway's, and refuses it until the sub-device is logged in.
    let on_behalf = || RequestOptions::new().target(s1.keys.clone());
    let post = || MeasurepointPost::new(json!({"temp": 7.5}));
    let refused = g.request(post(), on_behalf()).await;
    assert!(matches!(&refused, Ok(Reply::Json(j)) if j.code == 1009), "{refused:?}");
    g.call(SubDeviceLogin::new(s1.clone())).await.unwrap();
    let accepted = g.request(post(), on_behalf()).await;
    assert!(matches!(&accepted, Ok(Reply::Json(j)) if j.code == 200), "{accepted:?}");
    // The login's reply made the gateway subscribe the sub-device's command topics before
    // it sent the post above: the broker took those subscriptions before that post, whose
    // reply has come back.
    let s = sim.clone();
    let k = s1.keys.clone();
    let invoke = tokio::spawn(async move { s.set_measurepoints(&k, json!({"temp_setpoint": 1.0})).await });
    let cmd = g.next_command().await;
    assert_eq!(cmd.device, s1.keys);
    g.reply(cmd.reply_to.ok_empty());
    assert_eq!(invoke.await.unwrap().unwrap().code, 200);
    assert!(responder.is_running());
}

#[tokio::test]
async fn two_responders_share_the_load() {
    let broker = Mosquitto::start(None).unwrap();
    let a = Sim::builder().no_tcp().start().await.unwrap();
    let b = Sim::builder().no_tcp().start().await.unwrap();
    let mut opts = ResponderOptions::new(broker.addr());
    opts.group = Some("cloud".into());
    opts.client_id = "responder-a".into();
    let _ra = a.responder(opts.clone()).await.unwrap();
    opts.client_id = "responder-b".into();
    let _rb = b.responder(opts).await.unwrap();
    let d =
        TestDevice::connect(broker.addr(), device_config(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET), None).await.unwrap();
    let n = 200;
    for i in 0..n {
        d.call(MeasurepointPost::at(json!({"temp": 1.0}), 1_600_000_000_000 + i)).await.unwrap();
    }
    let dev = keys(DEVICE_PRODUCT, DEVICE);
    let count = |s: &Sim| s.device(&dev).unwrap().history.len();
    let (ca, cb) = (count(&a), count(&b));
    assert_eq!(ca + cb, n as usize, "every request answered exactly once");
    assert!(ca > 0 && cb > 0, "both responders served: {ca} and {cb}");
}
