//! Authentication (spec §2, §3), TLS, commands, subscriptions, faults and the record.

mod support;

use std::time::Duration;

use enos_proto::codec::{ConnectReturnCode, Packet, QoS, Subscribe, SubscribeFilter};
use enos_proto::ops::{Firmware, MeasurepointPost, SubDeviceLogin, TagQuery, TopoAdd};
use enos_proto::tls::client_config;
use enos_proto::{CloseCause, CommandKind, ConnectRefusal, Credentials, DisconnectCause, Event, SubDeviceInfo};
use enos_sim::registry::defaults::*;
use enos_sim::{pki, CommandError, Direction, Sim};
use serde_json::json;
use support::*;

fn dev() -> enos_proto::DeviceKeys {
    keys(DEVICE_PRODUCT, DEVICE)
}

#[tokio::test]
async fn every_sign_method_is_accepted_in_any_case() {
    let sim = Sim::builder().start().await.unwrap();
    for method in ["sha256", "SHA256", "hmacsha256", "sha1", "hmacsha1", "md5", "HmacMD5"] {
        let mut raw = RawConn::open(sim.tcp_addr().unwrap()).await;
        let (id, user, pw) =
            signed(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET, 2, &method.to_lowercase(), 1_600_000_000_000);
        let id = id.replace(&format!("signmethod={}", method.to_lowercase()), &format!("signmethod={method}"));
        // Lower-case hex, as the Python SDK sends it, is accepted too.
        assert_eq!(raw.connect(&id, &user, &pw.to_lowercase()).await, Some(0), "{method}");
    }
}

#[tokio::test]
async fn every_refusal_has_its_connack_code() {
    let sim = Sim::builder().start().await.unwrap();
    let addr = sim.tcp_addr().unwrap();
    let (id, user, pw) = signed(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET, 2, "sha256", 5);
    let cases: Vec<(&str, String, String, String, u8)> = vec![
        ("wrong secret", id.clone(), user.clone(), signed(DEVICE_PRODUCT, DEVICE, "nope", 2, "sha256", 5).2, 5),
        ("unknown device", id.replace(DEVICE, "ghost"), format!("ghost&{DEVICE_PRODUCT}"), pw.clone(), 5),
        ("no securemode", format!("{DEVICE}|signmethod=sha256,timestamp=5|"), user.clone(), pw.clone(), 2),
        (
            "client id over 64",
            format!("{}|securemode=2,signmethod=sha256,timestamp=5|", "x".repeat(65)),
            user.clone(),
            pw.clone(),
            2,
        ),
        ("user name without &", id.clone(), DEVICE.to_owned(), pw.clone(), 4),
        ("unknown sign method", id.replace("sha256", "sha512"), user.clone(), pw.clone(), 5),
        (
            "timestamp differs from the signed one",
            id.replace("timestamp=5", "timestamp=6"),
            user.clone(),
            pw.clone(),
            5,
        ),
        ("mode 3 on an activated device", id.replace("securemode=2", "securemode=3"), user.clone(), pw.clone(), 5),
    ];
    for (what, id, user, pw, code) in cases {
        let mut raw = RawConn::open(addr).await;
        assert_eq!(raw.connect(&id, &user, &pw).await, Some(code), "{what}");
        assert!(raw.next().await.is_none(), "{what}: the connection is closed after a refusal");
    }
    // Protocol level 5: code 1. Level 3 (MQIsdp): accepted.
    let mut raw = RawConn::open(addr).await;
    raw.send(&[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0, 0]).await;
    assert!(matches!(raw.next().await, Some(Packet::ConnAck(a)) if a.code as u8 == 1));
    let mut raw = RawConn::open(addr).await;
    let mut body = vec![0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0xc2, 0, 60];
    for s in [&id, &user, &pw] {
        body.extend_from_slice(&(s.len() as u16).to_be_bytes());
        body.extend_from_slice(s.as_bytes());
    }
    let mut pkt = vec![0x10];
    let mut len = body.len();
    loop {
        let b = (len % 128) as u8;
        len /= 128;
        pkt.push(if len > 0 { b | 0x80 } else { b });
        if len == 0 {
            break;
        }
    }
    pkt.extend_from_slice(&body);
    raw.send(&pkt).await;
    assert!(matches!(raw.next().await, Some(Packet::ConnAck(a)) if a.code as u8 == 0));
    // A disabled device: 5, through the SDK as a typed refusal.
    sim.disable_device(&dev());
    let mut d = TestDevice::start(addr, config(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET), None);
    assert!(matches!(
        d.next_event().await,
        Event::Disconnected { cause: DisconnectCause::Refused(ConnectRefusal::NotAuthorized), .. }
    ));
    sim.enable_device(&dev());
}

#[tokio::test]
async fn a_client_that_never_sends_connect_is_closed() {
    let sim = Sim::builder().connect_timeout(Duration::from_millis(200)).start().await.unwrap();
    let mut raw = RawConn::open(sim.tcp_addr().unwrap()).await;
    assert!(raw.next().await.is_none());
    // Nor may the first packet be anything else.
    let mut raw = RawConn::open(sim.tcp_addr().unwrap()).await;
    raw.send(&[0xc0, 0x00]).await;
    assert!(raw.next().await.is_none());
}

#[tokio::test]
async fn connections_waiting_for_their_connect_are_capped() {
    use tokio::io::AsyncReadExt;
    let sim = Sim::builder().max_pending_connects(2).start().await.unwrap();
    let addr = sim.tcp_addr().unwrap();
    let first = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _second = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A third that says nothing either is closed at once (not after the CONNECT deadline).
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut b = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), third.read(&mut b)).await.expect("still open");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // Room again once one goes; a device that has logged in no longer counts.
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let device = loop {
        if let Ok(d) = TestDevice::connect(addr, config(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET), None).await {
            break d;
        }
        assert!(tokio::time::Instant::now() < deadline, "no room after a silent connection left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    TestDevice::connect(addr, config(GATEWAY_PRODUCT, GATEWAY, GATEWAY_SECRET), None).await.unwrap();
    device.call(MeasurepointPost::new(json!({"temp": 1.0}))).await.unwrap();
}

#[tokio::test]
async fn a_freshness_window_refuses_replayed_connects() {
    let login = |sim: &Sim, ts: u64| {
        let addr = sim.tcp_addr().unwrap();
        async move {
            let mut raw = RawConn::open(addr).await;
            let (id, user, pw) = signed(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET, 2, "sha256", ts);
            raw.connect(&id, &user, &pw).await
        }
    };
    // Off by default (EnOS is not known to check): any timestamp is taken.
    let sim = Sim::builder().start().await.unwrap();
    assert_eq!(login(&sim, 5).await, Some(0));
    // With a window of a minute: a CONNECT signed ten minutes ago (or ahead) is refused.
    let sim = Sim::builder().max_clock_skew(Duration::from_secs(60)).start().await.unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert_eq!(login(&sim, now - 600_000).await, Some(5));
    assert_eq!(login(&sim, now + 600_000).await, Some(5));
    assert_eq!(login(&sim, now - 5_000).await, Some(0));
    // The SDK signs with its clock: it logs in.
    TestDevice::connect(sim.tcp_addr().unwrap(), config(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET), None).await.unwrap();
}

#[tokio::test]
async fn a_connect_over_64_kib_is_refused_before_its_bytes_are_buffered() {
    let sim = Sim::builder().start().await.unwrap();
    let mut raw = RawConn::open(sim.tcp_addr().unwrap()).await;
    // A CONNECT header announcing 100,000 bytes: closed at once, not kept open (holding
    // what comes) until the CONNECT deadline.
    raw.send(&[0x10, 0xa0, 0x8d, 0x06]).await;
    assert!(raw.next().await.is_none());
}

#[tokio::test]
async fn a_client_silent_for_one_and_a_half_keep_alives_is_closed() {
    let sim = Sim::builder().start().await.unwrap();
    let mut raw = RawConn::open(sim.tcp_addr().unwrap()).await;
    let (id, user, pw) = signed(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET, 2, "sha256", 5);
    let mut c = enos_proto::codec::Connect::new(id);
    c.keep_alive = 1;
    c.set_login(user, pw);
    raw.send_packet(Packet::Connect(c)).await;
    assert!(matches!(raw.next().await, Some(Packet::ConnAck(_))));
    // Packets within the period keep the session, each moving the deadline on.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(900)).await;
        raw.send_packet(Packet::PingReq).await;
        assert!(matches!(raw.next().await, Some(Packet::PingResp)));
    }
    let silent = std::time::Instant::now();
    assert!(raw.next().await.is_none());
    let waited = silent.elapsed();
    assert!(waited >= Duration::from_millis(1400), "closed after {waited:?}");
}

#[tokio::test]
async fn dynamic_activation_then_mode_2_and_no_second_activation() {
    let sim = Sim::builder().start().await.unwrap();
    let addr = sim.tcp_addr().unwrap();
    let new = keys(DEVICE_PRODUCT, ACTIVATING_DEVICE);
    let mut c = config(DEVICE_PRODUCT, ACTIVATING_DEVICE, "unused");
    c.credentials = Credentials::ProductSecret(DEVICE_PRODUCT_SECRET.into());
    let mut d = TestDevice::connect(addr, c.clone(), None).await.unwrap();
    let secret = match d.next_event().await {
        Event::Activated { device, device_secret, asset_id } => {
            assert_eq!(device, new);
            assert!(asset_id.is_some());
            device_secret
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(secret.expose().len(), 20);
    // The device replied: the cloud marks it activated.
    for _ in 0..50 {
        if sim.device(&new).unwrap().activated {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(sim.device(&new).unwrap().activated);
    d.close();
    // Mode 2 with the issued secret works; mode 3 again is refused.
    TestDevice::connect(addr, config(DEVICE_PRODUCT, ACTIVATING_DEVICE, secret.expose()), None).await.unwrap();
    let mut again = TestDevice::start(addr, c, None);
    assert!(matches!(
        again.next_event().await,
        Event::Disconnected { cause: DisconnectCause::Refused(ConnectRefusal::NotAuthorized), .. }
    ));
}

#[tokio::test]
async fn a_second_connection_with_the_same_client_id_takes_over() {
    let sim = Sim::builder().start().await.unwrap();
    let addr = sim.tcp_addr().unwrap();
    let mut first = TestDevice::connect(addr, config(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET), None).await.unwrap();
    let _second = TestDevice::connect(addr, config(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET), None).await.unwrap();
    let e = first.next_event().await;
    assert!(matches!(e, Event::Disconnected { cause: DisconnectCause::Transport(CloseCause::Eof), .. }), "{e:?}");
}

#[tokio::test]
async fn commands_reach_the_device_and_its_sub_devices() {
    let sim = Sim::builder().start().await.unwrap();
    let addr = sim.tcp_addr().unwrap();
    let mut d = TestDevice::connect(addr, config(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET), None).await.unwrap();
    let s = sim.clone();
    let invoke = tokio::spawn(async move { s.invoke_service(&dev(), "restart", json!({"delay": 5})).await });
    let cmd = d.next_command().await;
    assert!(
        matches!(&cmd.kind, CommandKind::InvokeService { service_id, params } if service_id == "restart" && params["delay"] == 5)
    );
    d.reply(cmd.reply_to.ok(&json!({"result": "ok"})).unwrap());
    let r = invoke.await.unwrap().unwrap();
    assert_eq!((r.code, r.data.clone()), (200, json!({"result": "ok"})));

    let s = sim.clone();
    let set = tokio::spawn(async move { s.set_measurepoints(&dev(), json!({"temp_setpoint": 22.5})).await });
    let cmd = d.next_command().await;
    assert!(matches!(&cmd.kind, CommandKind::SetMeasurepoints { points } if points["temp_setpoint"] == 22.5));
    d.reply(cmd.reply_to.ok_empty());
    assert_eq!(set.await.unwrap().unwrap().code, 200);

    let s = sim.clone();
    let get = tokio::spawn(async move { s.get_measurepoints(&dev(), &["temp"]).await });
    let cmd = d.next_command().await;
    assert!(matches!(&cmd.kind, CommandKind::GetMeasurepoints { point_ids } if point_ids == &["temp"]));
    d.reply(cmd.reply_to.ok(&json!({"temp": 21.5})).unwrap());
    assert_eq!(get.await.unwrap().unwrap().data, json!({"temp": 21.5}));

    // No handler: the device's 1101 reaches the caller.
    let s = sim.clone();
    let none = tokio::spawn(async move { s.invoke_service(&dev(), "unknownSvc", json!({})).await });
    let cmd = d.next_command().await;
    d.reply(cmd.reply_to.no_handler());
    let r = none.await.unwrap().unwrap();
    assert_eq!((r.code, r.message.as_deref()), (1101, Some("downstream command handler not registered")));

    // Raw down.
    let s = sim.clone();
    let raw = tokio::spawn(async move { s.send_down_raw(&dev(), bytes::Bytes::from_static(b"\x03\x00")).await });
    let cmd = d.next_command().await;
    assert!(matches!(&cmd.kind, CommandKind::RawDown { payload } if &payload[..] == b"\x03\x00"));
    d.reply(cmd.reply_to.raw(&b"\x04"[..]));
    assert_eq!(&raw.await.unwrap().unwrap()[..], b"\x04");

    // OTA push: the task starts when the device accepts it; progress is then allowed.
    let s = sim.clone();
    let fw = Firmware { version: "2.0.0".into(), file_size: 10, ..Default::default() };
    let ota = tokio::spawn(async move { s.push_ota(&dev(), fw).await });
    let cmd = d.next_command().await;
    assert!(matches!(&cmd.kind, CommandKind::OtaUpgrade { firmware } if firmware.version == "2.0.0"));
    d.reply(cmd.reply_to.ok_empty());
    assert_eq!(ota.await.unwrap().unwrap().unwrap().code, 200);
    d.call(enos_proto::ops::OtaProgress::new("100", "done")).await.unwrap();
    assert!(sim.device(&dev()).unwrap().ota.unwrap().done);

    // No reply in time, and an offline device.
    sim.set_command_timeout(Duration::from_millis(200));
    let s = sim.clone();
    let late = tokio::spawn(async move { s.invoke_service(&dev(), "reset", json!({})).await });
    let _ignored = d.next_command().await;
    assert_eq!(late.await.unwrap(), Err(CommandError::TimedOut(Duration::from_millis(200))));
    let ghost = keys(DEVICE_PRODUCT, ACTIVATING_DEVICE);
    assert!(matches!(sim.invoke_service(&ghost, "reset", json!({})).await, Err(CommandError::Offline(_))));
    // OTA to an offline device is queued until it connects.
    assert_eq!(sim.push_ota(&ghost, Firmware { version: "3".into(), ..Default::default() }).await, Ok(None));
}

#[tokio::test]
async fn command_ids_never_equal_the_devices_own_request_ids() {
    let sim = Sim::builder().start().await.unwrap();
    let mut d = TestDevice::connect(sim.tcp_addr().unwrap(), config(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET), None)
        .await
        .unwrap();
    // The device's own requests are numbered 1, 2, 3, ... as every SDK does.
    for i in 0..5 {
        d.call(MeasurepointPost::new(json!({"temp": f64::from(i)}))).await.unwrap();
    }
    let mut ids = Vec::new();
    for _ in 0..3 {
        let s = sim.clone();
        let invoke = tokio::spawn(async move { s.invoke_service(&dev(), "reset", json!({})).await });
        let cmd = d.next_command().await;
        ids.push(cmd.reply_to.id().to_owned());
        d.reply(cmd.reply_to.ok_empty());
        invoke.await.unwrap().unwrap();
    }
    for id in &ids {
        let n: u64 = id.parse().unwrap_or_else(|_| panic!("{id} is not decimal"));
        assert!(n > 1_000_000 && n < 1 << 53, "command id {id} could be a device's request id");
    }
    ids.dedup();
    assert_eq!(ids.len(), 3, "{ids:?}");
}

#[tokio::test]
async fn every_command_ends_once_and_none_is_left_pending() {
    let sim = Sim::builder().command_timeout(Duration::from_millis(300)).start().await.unwrap();
    let mut d = TestDevice::connect(sim.tcp_addr().unwrap(), config(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET), None)
        .await
        .unwrap();
    let pending = || sim.with_cloud(|c| c.pending_commands());
    // A caller that gives up: the cloud forgets its command.
    let s = sim.clone();
    let given_up = tokio::spawn(async move { s.invoke_service(&dev(), "reset", json!({})).await });
    let _unanswered = d.next_command().await;
    assert_eq!(pending(), 1);
    given_up.abort();
    assert!(given_up.await.unwrap_err().is_cancelled());
    assert_eq!(pending(), 0);
    // Answered, and unanswered: each ends once.
    let s = sim.clone();
    let answered = tokio::spawn(async move { s.invoke_service(&dev(), "reset", json!({})).await });
    let cmd = d.next_command().await;
    d.reply(cmd.reply_to.ok_empty());
    assert_eq!(answered.await.unwrap().unwrap().code, 200);
    let s = sim.clone();
    let late = tokio::spawn(async move { s.invoke_service(&dev(), "reset", json!({})).await });
    let _unanswered = d.next_command().await;
    assert_eq!(late.await.unwrap(), Err(CommandError::TimedOut(Duration::from_millis(300))));
    assert_eq!(pending(), 0);
    // A device cut while its command is pending: the command waits for its deadline (the
    // device could reconnect and answer), then times out.
    let s = sim.clone();
    let cut = tokio::spawn(async move { s.invoke_service(&dev(), "reset", json!({})).await });
    let _unanswered = d.next_command().await;
    assert!(sim.cut(&dev()));
    assert_eq!(cut.await.unwrap(), Err(CommandError::TimedOut(Duration::from_millis(300))));
    assert_eq!(pending(), 0);
}

#[tokio::test]
async fn sub_device_commands_for_devices_outside_the_topology_are_refused() {
    let mut registry = enos_sim::registry::Registry::builtin();
    let gw = keys(GATEWAY_PRODUCT, GATEWAY);
    let s1 = keys(SUB_PRODUCT, SUB_DEVICE_1);
    registry.add_topology(&gw, s1.clone());
    let sim = Sim::builder().registry(registry).start().await.unwrap();
    let mut g = TestDevice::connect(sim.tcp_addr().unwrap(), config(GATEWAY_PRODUCT, GATEWAY, GATEWAY_SECRET), None)
        .await
        .unwrap();
    let s2 = keys(SUB_PRODUCT, SUB_DEVICE_2);
    for (subs, named) in [
        (vec![s2.clone()], vec![s2.to_string()]),
        (vec![s1.clone(), s2.clone()], vec![s2.to_string()]),
        (vec![], vec![]),
    ] {
        let e = sim.disable_sub_devices(&gw, &subs).await.unwrap_err();
        assert_eq!(e, CommandError::NotSubDevices { gateway: gw.to_string(), devices: named }, "{subs:?}");
    }
    // Nothing was changed or sent: the sub-device in the topology is still enabled, and the
    // gateway got no command.
    assert!(sim.device(&s1).unwrap().enabled);
    assert!(g.event_within(Duration::from_millis(200)).await.is_none());
    // Its own sub-device: the gateway gets the command.
    let s = sim.clone();
    let (g2, s1c) = (gw.clone(), s1.clone());
    let disable = tokio::spawn(async move { s.disable_sub_devices(&g2, &[s1c]).await });
    let cmd = g.next_command().await;
    g.reply(cmd.reply_to.ok_empty());
    disable.await.unwrap().unwrap();
    assert!(!sim.device(&s1).unwrap().enabled);
}

#[tokio::test]
async fn the_qos_of_replies_and_of_commands_is_a_setting() {
    for (reply_qos, command_qos) in [(1u8, 1u8), (0, 1), (1, 0), (0, 0)] {
        let mut registry = enos_sim::registry::Registry::builtin();
        registry.reply_qos = reply_qos.try_into().unwrap();
        registry.command_qos = command_qos.try_into().unwrap();
        let sim = Sim::builder().registry(registry).start().await.unwrap();
        let mut raw = RawConn::open(sim.tcp_addr().unwrap()).await;
        let (id, user, pw) = signed(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET, 2, "sha256", 9);
        assert_eq!(raw.connect(&id, &user, &pw).await, Some(0));
        let topic = format!("/sys/{DEVICE_PRODUCT}/{DEVICE}/thing/measurepoint/post");
        raw.publish(&topic, br#"{"id":"1","version":"1.0","params":{"measurepoints":{"temp":1.0},"time":5},"method":"thing.measurepoint.post"}"#).await;
        let Some(Packet::Publish(reply)) = raw.next().await else { panic!("no reply") };
        assert!(reply.topic.ends_with("_reply"));
        assert_eq!(reply.qos as u8, reply_qos, "reply");
        let s = sim.clone();
        let invoke = tokio::spawn(async move { s.invoke_service(&dev(), "reset", json!({})).await });
        let Some(Packet::Publish(cmd)) = raw.next().await else { panic!("no command") };
        assert_eq!(cmd.qos as u8, command_qos, "command");
        invoke.abort();
    }
    // A registry file sets them too, and refuses QoS 2.
    let r = enos_sim::registry::Registry::from_json(r#"{"replyQos": 0, "commandQos": 1}"#).unwrap();
    assert_eq!((r.reply_qos as u8, r.command_qos as u8), (0, 1));
    assert!(enos_sim::registry::Registry::from_json(r#"{"replyQos": 2}"#).is_err());
}

#[tokio::test]
async fn sub_device_commands_go_through_the_gateway() {
    let sim = Sim::builder().start().await.unwrap();
    let addr = sim.tcp_addr().unwrap();
    let mut g = TestDevice::connect(addr, config(GATEWAY_PRODUCT, GATEWAY, GATEWAY_SECRET), None).await.unwrap();
    let s1 = SubDeviceInfo::new(keys(SUB_PRODUCT, SUB_DEVICE_1), SUB_DEVICE_1_SECRET);
    g.call(TopoAdd::new(vec![s1.clone()])).await.unwrap();
    g.call(SubDeviceLogin::new(s1.clone())).await.unwrap();
    let s = sim.clone();
    let k = s1.keys.clone();
    let invoke = tokio::spawn(async move { s.invoke_service(&k, "restart", json!({"delay": 1})).await });
    let cmd = g.next_command().await;
    assert_eq!(cmd.device, s1.keys);
    assert_eq!(cmd.reply_to.topic(), format!("/sys/{SUB_PRODUCT}/{SUB_DEVICE_1}/thing/service/restart_reply"));
    g.reply(cmd.reply_to.ok_empty());
    assert_eq!(invoke.await.unwrap().unwrap().code, 200);

    for what in ["disable", "enable", "delete"] {
        let s = sim.clone();
        let gw = keys(GATEWAY_PRODUCT, GATEWAY);
        let k = s1.keys.clone();
        let call = tokio::spawn(async move {
            match what {
                "disable" => s.disable_sub_devices(&gw, &[k]).await,
                "enable" => s.enable_sub_devices(&gw, &[k]).await,
                _ => s.delete_sub_devices(&gw, &[k]).await,
            }
        });
        let cmd = g.next_command().await;
        match (&cmd.kind, what) {
            (CommandKind::DisableSubDevices { devices }, "disable")
            | (CommandKind::EnableSubDevices { devices }, "enable")
            | (CommandKind::DeleteSubDevices { devices }, "delete") => {
                assert_eq!(devices, std::slice::from_ref(&s1.keys))
            }
            (k, w) => panic!("{w}: {k:?}"),
        }
        g.reply(cmd.reply_to.ok_empty());
        assert_eq!(call.await.unwrap().unwrap().code, 200);
        if what == "disable" {
            assert!(!sim.is_online(&s1.keys), "disabled sub-devices are logged out");
            let e = g.call(SubDeviceLogin::new(s1.clone())).await.unwrap_err();
            assert!(matches!(e, enos_proto::RequestError::Rejected { code: 770, .. }));
        }
    }
    assert!(sim.device(&s1.keys).is_none(), "deleted");
}

#[tokio::test]
async fn subscriptions_are_granted_and_never_duplicate_a_delivery() {
    let sim = Sim::builder().start().await.unwrap();
    let mut c = config(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET);
    c.subscribe_command_topics = true;
    let mut d = TestDevice::connect(sim.tcp_addr().unwrap(), c, None).await.unwrap();
    let s = sim.clone();
    let invoke = tokio::spawn(async move { s.invoke_service(&dev(), "reset", json!({})).await });
    let cmd = d.next_command().await;
    d.reply(cmd.reply_to.ok_empty());
    invoke.await.unwrap().unwrap();
    // A duplicate would go out with the first, before the reply to any later request on
    // this connection: after one round trip, none can still come.
    d.call(TagQuery::new(["x"])).await.unwrap();
    while let Some(e) = d.event_within(Duration::ZERO).await {
        assert!(!matches!(e, Event::Command(_)), "a second delivery: {e:?}");
    }
    let commands_in = sim
        .record(&dev())
        .iter()
        .filter(|r| {
            r.direction == Direction::Out && r.topic.as_deref().is_some_and(|t| t.ends_with("/thing/service/reset"))
        })
        .count();
    assert_eq!(commands_in, 1);
    // A malformed filter is refused in its SUBACK.
    let mut raw = RawConn::open(sim.tcp_addr().unwrap()).await;
    let (id, user, pw) = signed(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET, 2, "sha256", 9);
    raw.connect(&id, &user, &pw).await;
    let mut sub = Subscribe::empty_subscribe();
    sub.pkid = 3;
    sub.filters = vec![
        SubscribeFilter::new("/sys/a/#/b".into(), QoS::AtLeastOnce),
        SubscribeFilter::new("/sys/#".into(), QoS::AtLeastOnce),
    ];
    raw.send_packet(Packet::Subscribe(sub)).await;
    let Some(Packet::SubAck(ack)) = raw.next().await else { panic!() };
    assert_eq!(ack.return_codes.len(), 2);
    assert_eq!(ack.return_codes[0], enos_proto::codec::SubscribeReasonCode::Failure);
}

#[tokio::test]
async fn subscriptions_outside_the_devices_own_topics_are_refused() {
    let mut registry = enos_sim::registry::Registry::builtin();
    let gw = keys(GATEWAY_PRODUCT, GATEWAY);
    registry.add_topology(&gw, keys(SUB_PRODUCT, SUB_DEVICE_1));
    let sim = Sim::builder().registry(registry).start().await.unwrap();
    let mut raw = RawConn::open(sim.tcp_addr().unwrap()).await;
    let (id, user, pw) = signed(GATEWAY_PRODUCT, GATEWAY, GATEWAY_SECRET, 2, "sha256", 9);
    assert_eq!(raw.connect(&id, &user, &pw).await, Some(0));
    let cases = [
        (format!("/sys/{GATEWAY_PRODUCT}/{GATEWAY}/#"), true),
        (format!("/sys/{GATEWAY_PRODUCT}/{GATEWAY}/thing/measurepoint/post_reply"), true),
        (format!("/ext/session/{GATEWAY_PRODUCT}/{GATEWAY}/#"), true),
        (format!("/sys/{SUB_PRODUCT}/{SUB_DEVICE_1}/thing/service/+"), true),
        // Another device, one outside the topology, and filters wide enough to match others.
        (format!("/sys/{DEVICE_PRODUCT}/{DEVICE}/#"), false),
        (format!("/sys/{SUB_PRODUCT}/{SUB_DEVICE_2}/#"), false),
        (format!("/ext/session/{DEVICE_PRODUCT}/{DEVICE}/#"), false),
        (format!("/sys/{GATEWAY_PRODUCT}/+/#"), false),
        ("/sys/+/+/thing/service/#".to_owned(), false),
        ("/sys/#".to_owned(), false),
        ("#".to_owned(), false),
        ("/ota/device/request".to_owned(), false),
    ];
    let mut sub = Subscribe::empty_subscribe();
    sub.pkid = 4;
    sub.filters = cases.iter().map(|(f, _)| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce)).collect();
    raw.send_packet(Packet::Subscribe(sub)).await;
    let Some(Packet::SubAck(ack)) = raw.next().await else { panic!("no SUBACK") };
    assert_eq!(ack.return_codes.len(), cases.len());
    for ((filter, granted), code) in cases.iter().zip(&ack.return_codes) {
        let ok = *code == enos_proto::codec::SubscribeReasonCode::Success(QoS::AtLeastOnce);
        assert_eq!(ok, *granted, "{filter}: {code:?}");
    }
}

#[tokio::test]
async fn tls_with_and_without_client_certificates() {
    let ca = pki::Ca::new("sim ca").unwrap();
    let server = ca.server_cert().unwrap();
    let device_ca = pki::Ca::new("device ca").unwrap();
    let sim = Sim::builder()
        .no_tcp()
        .tls("127.0.0.1:0".parse().unwrap(), pki::server_tls(&server, Some(&device_ca)).unwrap())
        .start()
        .await
        .unwrap();
    let addr = sim.tls_addr().unwrap();
    // A device certificate from the device CA: accepted, and it may stand in for the password.
    let cert = device_ca.device_cert(DEVICE).unwrap();
    let tls = Tls {
        config: client_config(ca.pem.as_bytes(), Some(&cert.identity().unwrap())).unwrap(),
        name: "localhost".into(),
    };
    let d = TestDevice::connect(addr, config(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET), Some(tls.clone())).await.unwrap();
    d.call(MeasurepointPost::new(json!({"temp": 1.0}))).await.unwrap();
    let mut c = config(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET);
    c.credentials = Credentials::Certificate { device_secret: None };
    TestDevice::connect(addr, c, Some(tls)).await.unwrap();
    // No certificate, a foreign one, an expired one: the handshake fails, with the alert
    // the cloud sent.
    let foreign = pki::Ca::new("foreign").unwrap().device_cert(DEVICE).unwrap();
    let expired = device_ca.expired_device_cert(DEVICE).unwrap();
    for (id, alert) in [
        (None, "CertificateRequired"),
        (Some(foreign.identity().unwrap()), "UnknownCA"),
        (Some(expired.identity().unwrap()), "CertificateExpired"),
    ] {
        let tls = Tls { config: client_config(ca.pem.as_bytes(), id.as_ref()).unwrap(), name: "localhost".into() };
        let mut d = TestDevice::start(addr, config(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET), Some(tls));
        let e = d.next_event().await;
        assert!(
            matches!(&e, Event::Disconnected { cause: DisconnectCause::Transport(CloseCause::Tls(m)), .. } if m.contains(alert)),
            "{alert}: {e:?}"
        );
    }
    // A client that does not trust the server's CA.
    let other = pki::Ca::new("other").unwrap();
    let tls = Tls {
        config: client_config(other.pem.as_bytes(), Some(&cert.identity().unwrap())).unwrap(),
        name: "localhost".into(),
    };
    let mut d = TestDevice::start(addr, config(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET), Some(tls));
    let e = d.next_event().await;
    assert!(
        matches!(&e, Event::Disconnected { cause: DisconnectCause::Transport(CloseCause::Tls(m)), .. } if m.contains("UnknownIssuer")),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_client_certificate_logs_in_only_as_the_device_it_names() {
    let ca = pki::Ca::new("sim ca").unwrap();
    let device_ca = pki::Ca::new("device ca").unwrap();
    let sim = Sim::builder()
        .no_tcp()
        .tls("127.0.0.1:0".parse().unwrap(), pki::server_tls(&ca.server_cert().unwrap(), Some(&device_ca)).unwrap())
        .start()
        .await
        .unwrap();
    let addr = sim.tls_addr().unwrap();
    let tls = |cert: &pki::CertPem| Tls {
        config: client_config(ca.pem.as_bytes(), Some(&cert.identity().unwrap())).unwrap(),
        name: "localhost".into(),
    };
    let by_certificate = || {
        let mut c = config(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET);
        c.credentials = Credentials::Certificate { device_secret: None };
        c
    };
    // The device, with its own certificate and no password.
    let mut device =
        TestDevice::connect(addr, by_certificate(), Some(tls(&device_ca.device_cert(DEVICE).unwrap()))).await.unwrap();
    // Another device's certificate, from the same CA, offered as this device: refused, and the
    // device stays connected (no takeover).
    let other = tls(&device_ca.device_cert(SUB_DEVICE_1).unwrap());
    let mut impostor = TestDevice::start(addr, by_certificate(), Some(other.clone()));
    assert!(matches!(
        impostor.next_event().await,
        Event::Disconnected { cause: DisconnectCause::Refused(ConnectRefusal::NotAuthorized), .. }
    ));
    device.call(MeasurepointPost::new(json!({"temp": 1.0}))).await.unwrap();
    assert!(device.event_within(Duration::from_millis(300)).await.is_none(), "the device was disturbed");
    // With the device's own signature, another device's certificate does not matter.
    TestDevice::connect(addr, config(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET), Some(other)).await.unwrap();
}

#[tokio::test]
async fn faults_refuse_cut_delay_drop_malformed_restart() {
    let sim = Sim::builder().start().await.unwrap();
    let addr = sim.tcp_addr().unwrap();
    sim.refuse_next_connects(2, ConnectReturnCode::ServiceUnavailable);
    let mut d = TestDevice::start(addr, config(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET), None);
    for _ in 0..2 {
        assert!(matches!(
            d.next_event().await,
            Event::Disconnected { cause: DisconnectCause::Refused(ConnectRefusal::ServerUnavailable), .. }
        ));
    }
    assert!(matches!(d.next_event().await, Event::Connected { .. }));
    // Cut now: the device reconnects by itself.
    assert!(sim.cut(&dev()));
    assert!(matches!(d.next_event().await, Event::Disconnected { .. }));
    assert!(matches!(d.next_event().await, Event::Connected { reconnect: true }));
    // Dropped reply: the request times out; delayed reply: it arrives late.
    sim.drop_replies(1);
    let r = d
        .request(
            MeasurepointPost::new(json!({"temp": 1.0})),
            enos_proto::RequestOptions::new().timeout(Duration::from_millis(300)),
        )
        .await;
    assert!(matches!(r, Err(enos_proto::RequestError::TimedOut(_))));
    sim.delay_replies(Some(Duration::from_millis(150)));
    let t = std::time::Instant::now();
    d.call(MeasurepointPost::new(json!({"temp": 1.0}))).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(150));
    sim.delay_replies(None);
    // Cut after N packets.
    sim.cut_after(&dev(), 2);
    let _ = d.call(MeasurepointPost::new(json!({"temp": 1.0}))).await;
    assert!(matches!(d.next_event().await, Event::Disconnected { .. }));
    assert!(matches!(d.next_event().await, Event::Connected { .. }));
    // A malformed packet: the SDK ends the session with a typed decode error.
    assert!(sim.send_malformed(&dev()));
    assert!(matches!(d.next_event().await, Event::Disconnected { cause: DisconnectCause::Decode(_), .. }));
    assert!(matches!(d.next_event().await, Event::Connected { .. }));
    // The broker goes down and comes back on the same port.
    sim.stop_listeners();
    assert!(matches!(d.next_event().await, Event::Disconnected { .. }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    sim.restart_listeners().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(std::time::Instant::now() < deadline, "not back 20 s after the listeners came back");
        match d.next_event().await {
            Event::Connected { reconnect: true } => break,
            Event::Disconnected { .. } => continue,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(sim.tcp_addr(), Some(addr));
}

#[tokio::test]
async fn every_packet_is_recorded_per_device() {
    let sim = Sim::builder().start().await.unwrap();
    let d = TestDevice::connect(sim.tcp_addr().unwrap(), config(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET), None)
        .await
        .unwrap();
    d.call(MeasurepointPost::new(json!({"temp": 1.0}))).await.unwrap();
    let rec = sim.record(&dev());
    let kinds: Vec<_> = rec.iter().map(|r| (r.direction, r.kind)).collect();
    use enos_proto::PacketKind as K;
    assert_eq!(kinds[0], (Direction::In, K::Connect));
    assert!(kinds.contains(&(Direction::In, K::Subscribe)));
    let post = rec.iter().find(|r| r.topic.as_deref().is_some_and(|t| t.ends_with("/measurepoint/post"))).unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&post.payload).unwrap()["params"]["measurepoints"]["temp"],
        1.0
    );
    assert!(rec
        .iter()
        .any(|r| r.direction == Direction::Out && r.topic.as_deref().is_some_and(|t| t.ends_with("post_reply"))));
    sim.clear_record();
    assert!(sim.record(&dev()).is_empty());
}

#[tokio::test]
async fn many_devices_at_once() {
    let sim = Sim::builder().record_limit(0).start().await.unwrap();
    let addr = sim.tcp_addr().unwrap();
    let n = 200;
    sim.with_cloud(|c| {
        for i in 0..n {
            let k = keys(DEVICE_PRODUCT, &format!("load_{i}"));
            c.registry.add_device(k, Some("s".into())).unwrap();
        }
    });
    let mut devices = Vec::new();
    for i in 0..n {
        devices.push(TestDevice::connect(addr, config(DEVICE_PRODUCT, &format!("load_{i}"), "s"), None).await.unwrap());
    }
    assert_eq!(sim.connections(), n);
    let mut calls = Vec::new();
    for d in &devices {
        calls.push(d.call(MeasurepointPost::new(json!({"temp": 1.0}))));
    }
    for c in calls {
        c.await.unwrap();
    }
}

#[tokio::test]
async fn ota_progress_before_the_task_starts_is_765() {
    let sim = Sim::builder().start().await.unwrap();
    let mut d = TestDevice::connect(sim.tcp_addr().unwrap(), config(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET), None)
        .await
        .unwrap();
    let s = sim.clone();
    let ota =
        tokio::spawn(
            async move { s.push_ota(&dev(), Firmware { version: "2.0.0".into(), ..Default::default() }).await },
        );
    let cmd = d.next_command().await;
    // The device declines the upgrade: the task never starts.
    d.reply(cmd.reply_to.error(2001, "battery low"));
    assert_eq!(ota.await.unwrap().unwrap().unwrap().code, 2001);
    let e = d.call(enos_proto::ops::OtaProgress::new("10", "downloading")).await.unwrap_err();
    assert!(matches!(e, enos_proto::RequestError::Rejected { code: 765, .. }));
}

#[tokio::test]
async fn an_unanswered_activation_is_pushed_again_at_the_next_mode_3_connect() {
    let sim = Sim::builder().start().await.unwrap();
    let addr = sim.tcp_addr().unwrap();
    let (id, user, pw) = signed(DEVICE_PRODUCT, ACTIVATING_DEVICE, DEVICE_PRODUCT_SECRET, 3, "sha256", 7);
    for _ in 0..2 {
        let mut raw = RawConn::open(addr).await;
        assert_eq!(raw.connect(&id, &user, &pw).await, Some(0));
        let (topic, body) = raw.next_publish().await.unwrap();
        assert!(topic.ends_with("/thing/activate/info"));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["params"]["deviceSecret"].as_str().unwrap().len(), 20);
        // No reply: not activated.
    }
    assert!(!sim.device(&keys(DEVICE_PRODUCT, ACTIVATING_DEVICE)).unwrap().activated);
}

#[tokio::test]
async fn refused_connects_leave_no_record_and_large_payloads_pass_tls() {
    let ca = pki::Ca::new("ca").unwrap();
    let server = ca.server_cert().unwrap();
    let sim = Sim::builder()
        .tls("127.0.0.1:0".parse().unwrap(), pki::server_tls(&server, None).unwrap())
        .start()
        .await
        .unwrap();
    for i in 0..20 {
        let mut raw = RawConn::open(sim.tcp_addr().unwrap()).await;
        let _ = raw
            .connect(&format!("x{i}|securemode=2,signmethod=sha256,timestamp=1|"), &format!("x{i}&nope"), "pw")
            .await;
    }
    assert!(sim.record(&keys("nope", "x1")).is_empty());
    let tls = Tls { config: client_config(ca.pem.as_bytes(), None).unwrap(), name: "localhost".into() };
    let d = TestDevice::connect(sim.tls_addr().unwrap(), config(DEVICE_PRODUCT, DEVICE, DEVICE_SECRET), Some(tls))
        .await
        .unwrap();
    let big = bytes::Bytes::from(vec![9u8; 200 * 1024]);
    assert_eq!(d.call(enos_proto::ops::RawUp::new(big.clone())).await.unwrap(), big);
}
