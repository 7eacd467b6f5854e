//! Every upstream operation answered with state, and every error code of spec §10, driven
//! by the SDK's core over loopback.

mod support;

use enos_proto::ops::*;
use enos_proto::{Qos, Reply, RequestError, RequestOptions, SubDeviceInfo};
use enos_sim::registry::defaults::*;
use enos_sim::Sim;
use serde_json::json;
use support::*;

async fn sim() -> Sim {
    Sim::builder().start().await.unwrap()
}

async fn device(sim: &Sim) -> TestDevice {
    TestDevice::connect(sim.tcp_addr().unwrap(), config(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET), None).await.unwrap()
}

async fn gateway(sim: &Sim) -> TestDevice {
    TestDevice::connect(sim.tcp_addr().unwrap(), config(GATEWAY_PRODUCT, GATEWAY, GATEWAY_SECRET), None).await.unwrap()
}

fn sub(dk: &str, secret: &str) -> SubDeviceInfo {
    SubDeviceInfo::new(keys(SUB_PRODUCT, dk), secret)
}

fn own() -> enos_proto::DeviceKeys {
    keys(DEVICE_PRODUCT, DEVICE)
}

#[tokio::test]
async fn tags_update_query_delete() {
    let sim = sim().await;
    let d = device(&sim).await;
    d.call(TagUpdate::new([("location", "Shanghai"), ("floor", "3")])).await.unwrap();
    let all = d.call(TagQuery::new(Vec::<String>::new())).await.unwrap();
    assert_eq!(all.len(), 2);
    let one = d.call(TagQuery::new(["floor", "missing"])).await.unwrap();
    assert_eq!(one.into_iter().collect::<Vec<_>>(), [("floor".to_owned(), "3".to_owned())]);
    d.call(TagDelete::new(["floor", "never-there"])).await.unwrap();
    assert_eq!(sim.device(&own()).unwrap().tags.keys().collect::<Vec<_>>(), ["location"]);
    // An entry without tagKey: 1220.
    let (code, _, _) = d.json(RawJson::sys("thing/tag/update", "thing.tag.update", json!([{"tagValue": "x"}]))).await;
    assert_eq!(code, 1220);
}

#[tokio::test]
async fn attributes_are_validated_against_the_model_atomically() {
    let sim = sim().await;
    let d = device(&sim).await;
    d.call(AttributeUpdate::new(json!({"name": "inverter-1", "capacity": 100.5}))).await.unwrap();
    let got = d.call(AttributeQuery::new(["capacity"])).await.unwrap();
    assert_eq!(got["capacity"], 100.5);
    // One bad attribute rejects all.
    let e = d.call(AttributeUpdate::new(json!({"name": "x", "capacity": "big"}))).await.unwrap_err();
    assert!(matches!(e, RequestError::Rejected { code: 1204, .. }));
    let e = d.call(AttributeUpdate::new(json!({"unknown": 1}))).await.unwrap_err();
    assert!(matches!(e, RequestError::Rejected { code: 1204, .. }));
    assert_eq!(sim.device(&own()).unwrap().attributes["name"], "inverter-1");
    let (code, _, _) =
        d.json(RawJson::sys("thing/attribute/update", "thing.attribute.update", json!({"attributes": [1]}))).await;
    assert_eq!(code, 1207);
    d.call(AttributeDelete::new(["capacity"])).await.unwrap();
    assert_eq!(d.call(AttributeQuery::new(Vec::<String>::new())).await.unwrap().len(), 1);
}

#[tokio::test]
async fn measure_points_post_and_resume_are_recorded_with_their_times() {
    let sim = sim().await;
    let d = device(&sim).await;
    d.call(MeasurepointPost::at(json!({"temp": 21.5, "voltage": {"value": 229.8, "quality": 9}}), 1_600_000_000_000))
        .await
        .unwrap();
    d.call(MeasurepointResume::at(json!({"temp": 19.0}), 1_500_000_000_000)).await.unwrap();
    let dev = sim.device(&own()).unwrap();
    assert_eq!(dev.measurepoints["temp"].value, 21.5, "resume does not change the last value");
    assert_eq!(dev.measurepoints["temp"].time, 1_600_000_000_000);
    assert_eq!(dev.history.len(), 3);
    assert_eq!(dev.history[2].0, "resume");
    // Server time when absent; wrong types and unknown points: 1204.
    let e = d.call(MeasurepointPost::new(json!({"temp": "hot"}))).await.unwrap_err();
    assert!(matches!(e, RequestError::Rejected { code: 1204, .. }));
    let e = d.call(MeasurepointPost::new(json!({"nope": 1}))).await.unwrap_err();
    assert!(matches!(e, RequestError::Rejected { code: 1204, .. }));
    let (code, _, _) =
        d.json(RawJson::sys("thing/measurepoint/post", "thing.measurepoint.post", json!({"measurepoints": [1]}))).await;
    assert_eq!(code, 1206);
}

#[tokio::test]
async fn events_are_validated_and_recorded() {
    let sim = sim().await;
    let d = device(&sim).await;
    d.call(EventPost::new("overheat", json!({"level": 3, "msg": "hot"}))).await.unwrap();
    let e = d.call(EventPost::new("flood", json!({}))).await.unwrap_err();
    assert!(matches!(e, RequestError::Rejected { code: 1204, .. }));
    let e = d.call(EventPost::new("overheat", json!({"level": "high"}))).await.unwrap_err();
    assert!(matches!(e, RequestError::Rejected { code: 1204, .. }));
    let events = sim.device(&own()).unwrap().events;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "overheat");
}

#[tokio::test]
async fn raw_up_echoes_or_answers_the_configured_bytes() {
    let sim = sim().await;
    let d = device(&sim).await;
    assert_eq!(d.call(RawUp::new(&b"\x01\x02"[..])).await.unwrap(), &b"\x01\x02"[..]);
    sim.with_cloud(|c| c.raw_reply = Some(bytes::Bytes::from_static(b"\xc8")));
    assert_eq!(d.call(RawUp::new(&b"\x01"[..])).await.unwrap(), &b"\xc8"[..]);
}

#[tokio::test]
async fn issued_device_secrets_do_not_follow_the_registry_seed() {
    // Two clouds seeded alike give the same asset ids, and unrelated secrets.
    let mut issued = Vec::new();
    for _ in 0..2 {
        let mut registry = enos_sim::registry::Registry::builtin();
        registry.seed(7);
        let sim = Sim::builder().registry(registry).start().await.unwrap();
        let g = gateway(&sim).await;
        let one = SubDeviceRegistration::new(SUB_PRODUCT, DeviceName::new("anon"));
        let reg = g.call(SubDeviceRegister::new(vec![one])).await.unwrap();
        issued.push((reg[0].asset_id.clone(), reg[0].device_secret.expose().to_owned()));
    }
    assert_eq!(issued[0].0, issued[1].0, "asset ids follow the seed");
    assert_ne!(issued[0].1, issued[1].1, "a secret followed the seed");
    assert!(issued.iter().all(|(_, s)| s.len() == 20 && s.bytes().all(|b| b.is_ascii_alphanumeric())));
}

#[tokio::test]
async fn the_record_holds_no_device_secret_unless_asked_to() {
    for keep in [false, true] {
        let sim = Sim::builder().record_secrets(keep).start().await.unwrap();
        let g = gateway(&sim).await;
        let one = SubDeviceRegistration::new(SUB_PRODUCT, DeviceName::new("anon"));
        let secret = g.call(SubDeviceRegister::new(vec![one])).await.unwrap()[0].device_secret.expose().to_owned();
        // And the activation push of a device that activates dynamically.
        let mut c = config(DEVICE_PRODUCT, ACTIVATING_DEVICE, "unused");
        c.credentials = enos_proto::Credentials::ProductSecret(DEVICE_PRODUCT_SECRET.into());
        let mut d = TestDevice::connect(sim.tcp_addr().unwrap(), c, None).await.unwrap();
        let issued = loop {
            if let enos_proto::Event::Activated { device_secret, .. } = d.next_event().await {
                break device_secret.expose().to_owned();
            }
        };
        let payloads: Vec<String> = [keys(GATEWAY_PRODUCT, GATEWAY), keys(DEVICE_PRODUCT, ACTIVATING_DEVICE)]
            .iter()
            .flat_map(|k| sim.record(k))
            .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
            .collect();
        for s in [&secret, &issued] {
            assert_eq!(payloads.iter().any(|p| p.contains(s.as_str())), keep, "keep {keep}: {payloads:?}");
        }
        if !keep {
            assert!(payloads.iter().any(|p| p.contains(r#""deviceSecret":"********************""#)), "{payloads:?}");
        }
    }
}

#[tokio::test]
async fn a_gateway_registers_at_most_its_quota_across_requests() {
    let mut registry = enos_sim::registry::Registry::builtin();
    registry.max_registered_per_gateway = 3;
    let sim = Sim::builder().registry(registry).start().await.unwrap();
    let g = gateway(&sim).await;
    let named = |dks: &[&str]| -> Vec<SubDeviceRegistration> {
        dks.iter()
            .map(|dk| {
                let mut r = SubDeviceRegistration::new(SUB_PRODUCT, DeviceName::new(*dk));
                r.device_key = Some((*dk).to_owned());
                r
            })
            .collect()
    };
    assert_eq!(g.call(SubDeviceRegister::new(named(&["q1", "q2"]))).await.unwrap().len(), 2);
    // Past the quota a request is refused whole: nothing of it is registered.
    let e = g.call(SubDeviceRegister::new(named(&["q3", "q4"]))).await.unwrap_err();
    assert!(matches!(&e, RequestError::Rejected { code: 460, message } if message.contains("at most 3")), "{e:?}");
    assert!(sim.device(&keys(SUB_PRODUCT, "q3")).is_none());
    assert_eq!(g.call(SubDeviceRegister::new(named(&["q3"]))).await.unwrap().len(), 1);
    let e = g.call(SubDeviceRegister::new(named(&["q4"]))).await.unwrap_err();
    assert!(matches!(e, RequestError::Rejected { code: 460, .. }), "{e:?}");
}

#[tokio::test]
async fn register_topo_login_logout_as_a_gateway() {
    let sim = sim().await;
    let g = gateway(&sim).await;
    // Register two devices, one with a generated key.
    let mut named = SubDeviceRegistration::new(SUB_PRODUCT, DeviceName::new("meter 9").with("en_US", "meter 9"));
    named.device_key = Some("meter_9".into());
    let anon = SubDeviceRegistration::new(SUB_PRODUCT, DeviceName::new("anon"));
    let reg = g.call(SubDeviceRegister::new(vec![named.clone(), anon])).await.unwrap();
    assert_eq!(reg.len(), 2);
    assert_eq!(reg[0].device_key, "meter_9");
    assert_eq!(reg[1].device_key.len(), 10);
    assert_eq!(reg[0].device_secret.expose().len(), 20);
    assert_eq!(reg[0].asset_id.len(), 8);
    // Registering it again: 706; unknown product: 602; too many: 460.
    let e = g.call(SubDeviceRegister::new(vec![named])).await.unwrap_err();
    assert!(matches!(e, RequestError::Rejected { code: 706, .. }));
    let e = g
        .call(SubDeviceRegister::new(vec![SubDeviceRegistration::new("nope", DeviceName::new("x"))]))
        .await
        .unwrap_err();
    assert!(matches!(e, RequestError::Rejected { code: 602, .. }));
    let many = vec![SubDeviceRegistration::new(SUB_PRODUCT, DeviceName::new("x")); 1001];
    let e = g.call(SubDeviceRegister::new(many)).await.unwrap_err();
    assert!(matches!(e, RequestError::Rejected { code: 460, .. }));
    // A device that is not a gateway: 700.
    let d = device(&sim).await;
    let e = d.call(SubDeviceRegister::new(vec![])).await.unwrap_err();
    assert!(matches!(e, RequestError::Rejected { code: 700, .. }));

    let s1 = sub(SUB_DEVICE_1, SUB_DEVICE_1_SECRET);
    let s2 = sub(SUB_DEVICE_2, SUB_DEVICE_2_SECRET);
    // Login before topo add: 1212.
    let e = g.call(SubDeviceLogin::new(s1.clone())).await.unwrap_err();
    assert!(matches!(e, RequestError::Rejected { code: 1212, .. }));
    // Topo add with a wrong signature: 1255, nothing added.
    let bad = sub(SUB_DEVICE_2, "wrong");
    let e = g.call(TopoAdd::new(vec![s1.clone(), bad])).await.unwrap_err();
    assert!(matches!(e, RequestError::Rejected { code: 1255, ref message } if message.starts_with("add topo failure")));
    assert!(g.call(TopoGet).await.unwrap().is_empty());
    g.call(TopoAdd::new(vec![s1.clone(), s2.clone()])).await.unwrap();
    let topo = g.call(TopoGet).await.unwrap();
    assert_eq!(topo.len(), 2);
    assert!(topo[0].asset_id.is_some());
    // Adding a gateway as a sub-device: 1255.
    let gw_as_sub = SubDeviceInfo::new(keys(GATEWAY_PRODUCT, GATEWAY), GATEWAY_SECRET);
    let e = g.call(TopoAdd::new(vec![gw_as_sub])).await.unwrap_err();
    assert!(matches!(e, RequestError::Rejected { code: 1255, .. }));

    // Login with a wrong secret: 770; right: logged in.
    let e = g.call(SubDeviceLogin::new(sub(SUB_DEVICE_1, "wrong"))).await.unwrap_err();
    assert!(matches!(e, RequestError::Rejected { code: 770, .. }));
    let r = g.call(SubDeviceLogin::new(s1.clone())).await.unwrap();
    assert_eq!(r.device_key, SUB_DEVICE_1);
    assert!(sim.is_online(&s1.keys));
    // On behalf of the logged-in sub-device.
    g.request(MeasurepointPost::new(json!({"temp": 1.5})), RequestOptions::new().target(s1.keys.clone()))
        .await
        .unwrap();
    assert_eq!(sim.device(&s1.keys).unwrap().measurepoints["temp"].value, 1.5);
    // On behalf of one not logged in: 1009.
    let r = g
        .request(MeasurepointPost::new(json!({"temp": 1.5})), RequestOptions::new().target(s2.keys.clone()))
        .await
        .unwrap();
    assert!(matches!(r, Reply::Json(j) if j.code == 1009));
    // Batch login with an unknown device: both lists come back.
    let r = g.call(SubDeviceBatchLogin::new(vec![s2.clone(), sub("ghost", "x")])).await.unwrap();
    assert_eq!(r.logged_in.len(), 1);
    assert_eq!(r.failed, [keys(SUB_PRODUCT, "ghost")]);
    // Logout, then topo delete logs out.
    let out = g.call(SubDeviceLogout::new(s1.keys.clone())).await.unwrap();
    assert_eq!(out, Some(s1.keys.clone()));
    assert!(!sim.is_online(&s1.keys));
    g.call(TopoDelete::new(vec![s2.keys.clone()])).await.unwrap();
    assert!(!sim.is_online(&s2.keys));
    assert_eq!(g.call(TopoGet).await.unwrap().len(), 1);
}

#[tokio::test]
async fn batch_login_reports_each_failure_with_723() {
    let sim = sim().await;
    let g = gateway(&sim).await;
    let s1 = sub(SUB_DEVICE_1, SUB_DEVICE_1_SECRET);
    let s2 = sub(SUB_DEVICE_2, SUB_DEVICE_2_SECRET);
    g.call(TopoAdd::new(vec![s1.clone(), s2.clone()])).await.unwrap();
    let r = g
        .request(SubDeviceBatchLogin::new(vec![s1, sub(SUB_DEVICE_2, "bad")]), RequestOptions::default())
        .await
        .unwrap();
    let Reply::Json(j) = &r else { panic!() };
    assert_eq!(j.code, 723);
    assert_eq!(j.message.as_deref(), Some("demo_sub_pk&demo_sub_2 has error: sign verify failed;"));
    let typed = <SubDeviceBatchLogin as enos_proto::Operation>::parse_reply(&r).unwrap();
    assert_eq!((typed.logged_in.len(), typed.failed.len()), (1, 1));
}

#[tokio::test]
async fn sub_device_dynamic_activation_through_login() {
    let sim = sim().await;
    let g = gateway(&sim).await;
    let s1 = sub(SUB_DEVICE_1, SUB_DEVICE_1_SECRET);
    g.call(TopoAdd::new(vec![s1.clone()])).await.unwrap();
    let mode3 = SubDeviceInfo::with_product_secret(s1.keys.clone(), SUB_PRODUCT_SECRET);
    let r = g.call(SubDeviceLogin::new(mode3)).await.unwrap();
    assert_eq!(r.device_secret.unwrap().expose(), SUB_DEVICE_1_SECRET);
}

#[tokio::test]
async fn batch_post_honours_allow_offline_and_skip_invalid() {
    let sim = sim().await;
    let g = gateway(&sim).await;
    let s1 = sub(SUB_DEVICE_1, SUB_DEVICE_1_SECRET);
    g.call(TopoAdd::new(vec![s1.clone()])).await.unwrap();
    let entries = || {
        vec![
            BatchEntry::own(json!({"temp": 1.0}), Some(1)),
            BatchEntry::of(s1.keys.clone(), json!({"temp": 2.0}), Some(2)),
        ]
    };
    // s1 is offline: 1212 for the whole request, unless allowed.
    let e = g.call(MeasurepointBatchPost::new(entries())).await.unwrap_err();
    assert!(matches!(e, RequestError::Rejected { code: 1212, .. }));
    assert!(sim.device(&keys(GATEWAY_PRODUCT, GATEWAY)).unwrap().measurepoints.is_empty(), "nothing stored");
    g.call(MeasurepointBatchPost::new(entries()).allow_offline_sub_device(true)).await.unwrap();
    assert_eq!(sim.device(&s1.keys).unwrap().measurepoints["temp"].value, 2.0);
    // An invalid point: 1204, or skipped.
    let bad = || vec![BatchEntry::own(json!({"temp": 5.0, "nope": 1}), None)];
    let e = g.call(MeasurepointBatchPost::new(bad())).await.unwrap_err();
    assert!(matches!(e, RequestError::Rejected { code: 1204, .. }));
    g.call(MeasurepointBatchResume::new(bad()).skip_invalid_measurepoints(true)).await.unwrap();
    let gw = sim.device(&keys(GATEWAY_PRODUCT, GATEWAY)).unwrap();
    assert_eq!(gw.history.back().unwrap().0, "resume");
    assert!(!gw.history.iter().any(|(_, k, _)| k == "nope"));
    let (code, _, _) = g
        .json(RawJson::sys("thing/measurepoint/post/batch", "thing.measurepoint.post.batch", json!({"not": "a list"})))
        .await;
    assert_eq!(code, 1206);
}

#[tokio::test]
async fn tsl_template_and_ota() {
    let sim = sim().await;
    let d = device(&sim).await;
    let tsl = d.call(TslTemplateGet {}).await.unwrap();
    assert_eq!(tsl.tsl_measurepoint_map["temp"]["dataType"], "FLOAT");
    assert!(tsl.tsl_service_map.contains_key("reset"));
    d.call(OtaInform::new("1.0.0")).await.unwrap();
    assert_eq!(sim.device(&own()).unwrap().firmware_version.as_deref(), Some("1.0.0"));
    let e = d.call(OtaProgress::new("10", "downloading")).await.unwrap_err();
    assert!(matches!(e, RequestError::Rejected { code: 764, .. }));
    let versions = d.call(OtaGetVersion {}).await.unwrap();
    assert_eq!(versions[0].version, "1.1.0");
}

#[tokio::test]
async fn envelope_errors_1220_1251_1260_1008() {
    let sim = sim().await;
    let d = device(&sim).await;
    let (code, _, msg) = d.json(RawJson::sys("thing/tag/query", "thing.attribute.query", json!({"tags": []}))).await;
    assert_eq!((code, msg.as_deref()), (1260, Some("Methods not consistent")));
    let big = "x".repeat(600 * 1024);
    let mut c = config(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET);
    c.max_payload_bytes = 1 << 20;
    drop(d);
    let d = TestDevice::connect(sim.tcp_addr().unwrap(), c, None).await.unwrap();
    let (code, _, _) =
        d.json(RawJson::sys("thing/tag/update", "thing.tag.update", json!([{"tagKey": "k", "tagValue": big}]))).await;
    assert_eq!(code, 1008);
    // Raw bytes for what the SDK never sends.
    let mut raw = RawConn::open(sim.tcp_addr().unwrap()).await;
    let (id, user, pw) = signed(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET, 2, "sha256", 1);
    assert_eq!(raw.connect(&id, &user, &pw).await, Some(0));
    let t = format!("/sys/{DEVICE_PRODUCT}/{DEVICE}/thing/tag/query");
    raw.publish(&t, b"").await;
    let (topic, body) = raw.next_publish().await.unwrap();
    assert_eq!(topic, format!("{t}_reply"));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["code"], 1251);
    raw.publish(&t, b"{oops").await;
    let (_, body) = raw.next_publish().await.unwrap();
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["code"], 1220);
    // Another device's topic: a known device gets 1009; unknown keys are dropped.
    raw.publish(
        &format!("/sys/{GATEWAY_PRODUCT}/{GATEWAY}/thing/tag/query"),
        br#"{"id":"5","method":"thing.tag.query","params":{"tags":[]}}"#,
    )
    .await;
    let (topic, body) = raw.next_publish().await.unwrap();
    assert!(topic.contains(GATEWAY));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["code"], 1009);
}

#[tokio::test]
async fn qos0_requests_are_answered_too() {
    let sim = sim().await;
    let d = device(&sim).await;
    let r = d.request(TagQuery::new(Vec::<String>::new()), RequestOptions::new().qos(Qos::AtMostOnce)).await.unwrap();
    assert!(matches!(r, Reply::Json(j) if j.code == 200));
}

/// An operation with a hand-written method and params, to send what the typed
/// operations refuse to build.
struct RawJson {
    path: &'static str,
    method: &'static str,
    params: serde_json::Value,
}

impl RawJson {
    fn sys(path: &'static str, method: &'static str, params: serde_json::Value) -> Self {
        RawJson { path, method, params }
    }
}

impl enos_proto::Operation for RawJson {
    type Data = ();
    fn write_path(&self, out: &mut String) {
        out.push_str(self.path);
    }
    fn write_method(&self, out: &mut String) {
        out.push_str(self.method);
    }
    fn write_params(&self, _: &EncodeContext<'_>, out: &mut Vec<u8>) -> Result<(), enos_proto::EncodeError> {
        serde_json::to_writer(out, &self.params).map_err(|e| enos_proto::EncodeError::Json(e.to_string()))
    }
    fn parse_reply(_: &Reply) -> Result<(), RequestError> {
        Ok(())
    }
}

#[tokio::test]
async fn history_is_bounded_per_device() {
    let mut r = enos_sim::Registry::builtin();
    r.history_limit = 3;
    let sim = Sim::builder().registry(r).start().await.unwrap();
    let d = device(&sim).await;
    for i in 0..5u64 {
        d.call(MeasurepointPost::at(json!({"temp": i as f64}), 1_000 + i)).await.unwrap();
        d.call(EventPost::new("overheat", json!({"level": i}))).await.unwrap();
    }
    let dev = sim.device(&own()).unwrap();
    let times: Vec<u64> = dev.history.iter().map(|(_, _, s)| s.time).collect();
    assert_eq!(times, [1_002, 1_003, 1_004]);
    assert_eq!(dev.events.len(), 3);
    assert_eq!(dev.measurepoints["temp"].value, 4.0);
}

#[tokio::test]
async fn a_gateway_cannot_log_out_another_gateways_sub_device() {
    let mut r = enos_sim::Registry::builtin();
    r.add_device(keys(GATEWAY_PRODUCT, "gw2"), Some("gw2_secret".into())).unwrap();
    let sim = Sim::builder().registry(r).start().await.unwrap();
    let g1 = gateway(&sim).await;
    let g2 =
        TestDevice::connect(sim.tcp_addr().unwrap(), config(GATEWAY_PRODUCT, "gw2", "gw2_secret"), None).await.unwrap();
    let s1 = sub(SUB_DEVICE_1, SUB_DEVICE_1_SECRET);
    g2.call(TopoAdd::new(vec![s1.clone()])).await.unwrap();
    g2.call(SubDeviceLogin::new(s1.clone())).await.unwrap();
    g1.call(SubDeviceLogout::new(s1.keys.clone())).await.unwrap();
    g1.call(TopoDelete::new(vec![s1.keys.clone()])).await.unwrap();
    assert!(sim.is_online(&s1.keys), "still logged in through gw2");
    // Disabling the sub-device logs it out; its gateway stays connected.
    sim.disable_device(&s1.keys);
    assert!(!sim.is_online(&s1.keys));
    assert!(sim.is_online(&keys(GATEWAY_PRODUCT, "gw2")));
    assert!(!sim.cut(&s1.keys), "a sub-device has no connection of its own to cut");
}

#[tokio::test]
async fn raw_up_is_checked_for_empty_payloads_and_tags_are_bounded() {
    let sim = sim().await;
    let d = device(&sim).await;
    let r = d.request(RawUp::new(bytes::Bytes::new()), RequestOptions::default()).await.unwrap();
    assert_eq!(
        r,
        Reply::Raw(bytes::Bytes::from_static(br#"{"id":"","code":1251,"data":{},"message":"Payload is empty"}"#))
    );
    let many: Vec<(String, String)> = (0..1001).map(|i| (format!("t{i}"), "v".to_owned())).collect();
    let e = d.call(TagUpdate::new(many)).await.unwrap_err();
    assert!(matches!(e, RequestError::Rejected { code: 460, .. }));
}
