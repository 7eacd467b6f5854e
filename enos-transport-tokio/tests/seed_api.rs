//! Every seed method end to end against the simulator on loopback: the request on the
//! wire, the reply typed, the state changed in the cloud.

use std::time::Duration;

use enos_proto::ops::{BatchEntry, DeviceName, MeasurepointBatchPost, MeasurepointBatchResume, SubDeviceRegistration};
use enos_sim::registry::defaults::*;
use enos_sim::{Direction, Sim};
use enos_transport_tokio::proto::CommandKind;
use enos_transport_tokio::{
    ClientOptions, DeviceClient, DeviceKeys, Error, GatewayClient, RequestError, RequestOptions, SubDeviceInfo,
};
use serde_json::json;

fn keys(pk: &str, dk: &str) -> DeviceKeys {
    DeviceKeys::new(pk, dk).unwrap()
}

fn options(sim: &Sim, pk: &str, dk: &str, secret: &str) -> ClientOptions {
    let mut o = ClientOptions::new(sim.tcp_url().unwrap(), pk, dk);
    o.device_secret = Some(secret.into());
    o
}

async fn device(sim: &Sim) -> DeviceClient {
    let c = DeviceClient::new(options(sim, DEVICE_PRODUCT, DEVICE, DEVICE_SECRET)).unwrap();
    c.connect().await.unwrap();
    c
}

fn o() -> RequestOptions {
    RequestOptions::new()
}

#[tokio::test]
async fn tags_attributes_measure_points_events_raw() {
    let sim = Sim::builder().start().await.unwrap();
    let c = device(&sim).await;
    let dev = keys(DEVICE_PRODUCT, DEVICE);
    let d = c.device_data();

    assert_eq!(d.update_tag([("site", "lab"), ("floor", "3")], o()).await.unwrap().code, 200);
    let tags = d.query_tag(["site"], o()).await.unwrap();
    assert_eq!(tags.data["site"], "lab");
    d.delete_tag(["floor"], o()).await.unwrap();
    assert_eq!(sim.device(&dev).unwrap().tags.len(), 1);

    d.update_attribute(json!({"name": "inverter-1", "capacity": 100.5}), o()).await.unwrap();
    assert_eq!(d.query_attribute(["name"], o()).await.unwrap().data["name"], "inverter-1");
    d.delete_attribute(["capacity"], o()).await.unwrap();
    assert!(!sim.device(&dev).unwrap().attributes.contains_key("capacity"));

    // Any Serialize value: a struct.
    #[derive(serde::Serialize)]
    struct Points {
        temp: f64,
        status: i32,
    }
    d.post_measurepoint(Points { temp: 21.5, status: 1 }, o()).await.unwrap();
    d.post_measurepoint_at(json!({"humidity": 40.0}), 1_600_000_000_000, o()).await.unwrap();
    d.resume_measurepoint(json!({"temp": 18.0}), 1_500_000_000_000, o()).await.unwrap();
    let stored = sim.device(&dev).unwrap();
    assert_eq!(stored.measurepoints["temp"].value, 21.5);
    assert_eq!(stored.measurepoints["humidity"].time, 1_600_000_000_000);
    assert_eq!(stored.history.back().unwrap().0, "resume");
    let e = d.post_measurepoint(json!({"temp": "hot"}), o()).await.unwrap_err();
    assert!(matches!(e, Error::Request(RequestError::Rejected { code: 1204, .. })));

    d.post_event("overheat", json!({"level": 3, "msg": "hot"}), o()).await.unwrap();
    assert_eq!(sim.device(&dev).unwrap().events.len(), 1);
    let raw = d.up_raw_model(&b"\x01\x02"[..], o()).await.unwrap();
    assert_eq!(&raw.data[..], b"\x01\x02");

    // QoS 0, and without waiting for the reply.
    d.post_measurepoint(json!({"temp": 1.0}), o().qos(enos_transport_tokio::Qos::AtMostOnce)).await.unwrap();
    let r = d.post_measurepoint(json!({"temp": 2.0}), o().need_reply(false)).await.unwrap();
    assert_eq!(r.id, "");

    // The requests went on the wire to the right topics.
    let topics: Vec<String> =
        sim.record(&dev).into_iter().filter(|r| r.direction == Direction::In).filter_map(|r| r.topic).collect();
    for t in [
        "thing/tag/update",
        "thing/attribute/query",
        "thing/measurepoint/resume",
        "thing/event/overheat/post",
        "thing/model/up_raw",
    ] {
        assert!(topics.iter().any(|x| x.ends_with(t)), "{t}");
    }

    let ota = c.ota();
    ota.report_version("1.0.0", o()).await.unwrap();
    assert_eq!(ota.get_version(o()).await.unwrap().data[0].version, "1.1.0");
    assert!(ota.get_tsl_template(o()).await.unwrap().data.tsl_measurepoint_map.contains_key("temp"));
    c.close().await.unwrap();
    assert!(matches!(c.device_data().query_tag(["x"], o()).await, Err(Error::Closed)));
}

#[tokio::test]
async fn gateway_manages_sub_devices_and_posts_for_them() {
    let sim = Sim::builder().start().await.unwrap();
    let g = GatewayClient::new(options(&sim, GATEWAY_PRODUCT, GATEWAY, GATEWAY_SECRET)).unwrap();
    g.connect().await.unwrap();
    let m = g.sub_device_management();
    let mut reg = SubDeviceRegistration::new(SUB_PRODUCT, DeviceName::new("meter").with("en_US", "meter"));
    reg.device_key = Some("meter_1".into());
    let registered = m.register_device(vec![reg], o()).await.unwrap().data;
    let meter = SubDeviceInfo::new(keys(SUB_PRODUCT, "meter_1"), registered[0].device_secret.clone());
    let s1 = SubDeviceInfo::new(keys(SUB_PRODUCT, SUB_DEVICE_1), SUB_DEVICE_1_SECRET);
    m.add_topo(vec![meter.clone(), s1.clone()], o()).await.unwrap();
    assert_eq!(m.get_topo(o()).await.unwrap().data.len(), 2);
    let login = m.login_sub_device(meter.clone(), o()).await.unwrap().data;
    assert_eq!(login.device_key, "meter_1");
    let batch = m.batch_login_sub_device(vec![s1.clone()], o()).await.unwrap().data;
    assert_eq!(batch.logged_in.len(), 1);
    // On behalf of a sub-device (the seed's deviceInfo).
    g.device_data().post_measurepoint(json!({"temp": 5.5}), o().target(meter.keys.clone())).await.unwrap();
    assert_eq!(sim.device(&meter.keys).unwrap().measurepoints["temp"].value, 5.5);
    let entries =
        vec![BatchEntry::own(json!({"temp": 1.0}), None), BatchEntry::of(s1.keys.clone(), json!({"temp": 2.0}), None)];
    g.device_data().batch_post_measurepoint(MeasurepointBatchPost::new(entries.clone()), o()).await.unwrap();
    g.device_data()
        .batch_resume_measurepoint(MeasurepointBatchResume::new(entries).skip_invalid_measurepoints(true), o())
        .await
        .unwrap();
    assert_eq!(sim.device(&s1.keys).unwrap().measurepoints["temp"].value, 2.0);
    assert_eq!(m.logout_sub_device(meter.keys.clone(), o()).await.unwrap().data, Some(meter.keys.clone()));
    m.delete_topo(vec![meter.keys.clone()], o()).await.unwrap();
    assert_eq!(m.get_topo(o()).await.unwrap().data.len(), 1);
    // Gateway-only operations refuse a target.
    let e = m.get_topo(o().target(s1.keys.clone())).await.unwrap_err();
    assert!(matches!(e, Error::Submit(enos_transport_tokio::SubmitError::InvalidTarget)));
}

#[tokio::test]
async fn commands_reach_handlers_and_the_cloud_gets_the_replies() {
    let sim = Sim::builder().start().await.unwrap();
    let g = GatewayClient::new(options(&sim, GATEWAY_PRODUCT, GATEWAY, GATEWAY_SECRET)).unwrap();
    g.connect().await.unwrap();
    let gw = keys(GATEWAY_PRODUCT, GATEWAY);
    let s1 = SubDeviceInfo::new(keys(SUB_PRODUCT, SUB_DEVICE_1), SUB_DEVICE_1_SECRET);
    let m = g.sub_device_management();
    m.add_topo(vec![s1.clone()], o()).await.unwrap();
    m.login_sub_device(s1.clone(), o()).await.unwrap();

    let cmd = g.device_command();
    cmd.on_invoke_service("restart", None, |c, res| async move {
        let CommandKind::InvokeService { params, .. } = &c.kind else { unreachable!() };
        res.ok(json!({"device": c.device.to_string(), "delay": params["delay"]}));
    });
    // A handler for one sub-device only wins over the general one.
    cmd.on_invoke_service("restart", Some(s1.keys.clone()), |_c, res| async move { res.ok(json!({"sub": true})) });
    cmd.on_set_measurepoint(None, |c, res| async move {
        let CommandKind::SetMeasurepoints { points } = &c.kind else { unreachable!() };
        res.ok(json!({"applied": points.len()}));
    });
    cmd.on_get_measurepoint(None, |_c, res| async move { res.ok(json!({"temp": 21.5})) });
    cmd.on_down_raw_model(None, |c, res| async move {
        let CommandKind::RawDown { payload } = &c.kind else { unreachable!() };
        res.raw(payload.iter().rev().copied().collect::<Vec<u8>>());
    });
    cmd.on_invoke_service("slow", None, |_c, res| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        res.ok(json!({}));
    });
    // A handler that forgets to answer: 1102.
    cmd.on_invoke_service("forgetful", None, |_c, _res| async move {});
    let (en_tx, mut en_rx) = tokio::sync::mpsc::unbounded_channel();
    let tx = en_tx.clone();
    m.on_sub_devices_enable(move |c, res| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(("enable", c.kind.clone()));
            res.ok(json!({}));
        }
    });
    let tx = en_tx.clone();
    m.on_sub_devices_disable(move |c, res| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(("disable", c.kind.clone()));
            res.ok(json!({}));
        }
    });
    let tx = en_tx;
    m.on_sub_devices_delete(move |c, res| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(("delete", c.kind.clone()));
            res.ok(json!({}));
        }
    });

    // A slow handler does not stall the connection: other commands and requests go on.
    let s = sim.clone();
    let g2 = gw.clone();
    let slow = tokio::spawn(async move { s.invoke_service(&g2, "slow", json!({})).await });
    let r = sim.invoke_service(&gw, "restart", json!({"delay": 5})).await.unwrap();
    assert_eq!(r.data, json!({"device": gw.to_string(), "delay": 5}));
    g.device_data().post_measurepoint(json!({"temp": 1.0}), o()).await.unwrap();
    assert!(!slow.is_finished());
    assert_eq!(slow.await.unwrap().unwrap().code, 200);

    let r = sim.invoke_service(&s1.keys, "restart", json!({})).await.unwrap();
    assert_eq!(r.data, json!({"sub": true}));
    assert_eq!(sim.set_measurepoints(&gw, json!({"a": 1, "b": 2})).await.unwrap().data, json!({"applied": 2}));
    assert_eq!(sim.set_measurepoints(&s1.keys, json!({"a": 1})).await.unwrap().code, 200);
    assert_eq!(sim.get_measurepoints(&gw, &["temp"]).await.unwrap().data, json!({"temp": 21.5}));
    assert_eq!(&sim.send_down_raw(&gw, bytes::Bytes::from_static(b"\x01\x02")).await.unwrap()[..], b"\x02\x01");
    let r = sim.invoke_service(&gw, "nobody", json!({})).await.unwrap();
    assert_eq!(r.code, 1101);
    let r = sim.invoke_service(&gw, "forgetful", json!({})).await.unwrap();
    assert_eq!(r.code, 1102);

    for what in ["disable", "enable", "delete"] {
        let r = match what {
            "disable" => sim.disable_sub_devices(&gw, std::slice::from_ref(&s1.keys)).await,
            "enable" => sim.enable_sub_devices(&gw, std::slice::from_ref(&s1.keys)).await,
            _ => sim.delete_sub_devices(&gw, std::slice::from_ref(&s1.keys)).await,
        };
        assert_eq!(r.unwrap().code, 200);
        let (got, kind) = en_rx.recv().await.unwrap();
        assert_eq!(got, what);
        assert!(format!("{kind:?}").contains(SUB_DEVICE_1));
    }
}

#[tokio::test]
async fn a_flood_of_commands_faster_than_the_handler_is_bounded_and_answered() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let sim = Sim::builder().start().await.unwrap();
    let c = device(&sim).await;
    let (now, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (n2, m2) = (now.clone(), max.clone());
    c.device_command().on_invoke_service("slow", None, move |_c, res| {
        let (now, max) = (n2.clone(), m2.clone());
        async move {
            let running = now.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(running, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            res.ok(json!({}));
        }
    });
    let dev = keys(DEVICE_PRODUCT, DEVICE);
    let calls: Vec<_> = (0..300)
        .map(|_| {
            let (s, d) = (sim.clone(), dev.clone());
            tokio::spawn(async move { s.invoke_service(&d, "slow", json!({})).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().code, 200);
    }
    let peak = max.load(Ordering::SeqCst);
    assert!(peak <= enos_transport_tokio::MAX_CONCURRENT_HANDLERS, "{peak} handlers at once");
    assert!(peak > 1, "handlers do run side by side");
    // Requests still flow.
    c.device_data().post_measurepoint(json!({"temp": 1.0}), o()).await.unwrap();
}

#[tokio::test]
async fn commands_past_the_queue_are_answered_1102_at_once_and_the_rest_after() {
    use std::sync::Arc;
    let sim = Sim::builder().command_timeout(Duration::from_secs(30)).start().await.unwrap();
    let c = device(&sim).await;
    // Handlers that wait until released: the running ones and the queue fill up.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    c.device_command().on_invoke_service("stuck", None, move |_c, res| {
        let g = g.clone();
        async move {
            let _ = g.acquire().await;
            res.ok(json!({}));
        }
    });
    let dev = keys(DEVICE_PRODUCT, DEVICE);
    // What is taken: the running handlers and the core's queue behind them.
    let capacity = enos_transport_tokio::MAX_CONCURRENT_HANDLERS + 1024;
    let total = capacity + 20;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..total {
        let (s, d, tx) = (sim.clone(), dev.clone(), tx.clone());
        tokio::spawn(async move {
            let _ = tx.send(s.invoke_service(&d, "stuck", json!({})).await.map(|r| r.code));
        });
        // Paced, so that the cloud's own queue to the connection (1,024) keeps up.
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The ones past the queue come back at once, while every handler is still waiting.
    for _ in 0..total - capacity {
        let code = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap().unwrap();
        assert_eq!(code, 1102);
    }
    // Requests still flow meanwhile.
    c.device_data().post_measurepoint(json!({"temp": 1.0}), o()).await.unwrap();
    gate.add_permits(total);
    for _ in 0..capacity {
        let code = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.unwrap().unwrap().unwrap();
        assert_eq!(code, 200);
    }
    // Each command was answered once.
    drop(tx);
    assert!(rx.recv().await.is_none());
}
