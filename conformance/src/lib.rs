//! One suite for every driver: each scenario is written once, generic over the
//! [`Runtime`], and [`suite!`] makes a test of each for a runtime and the way that runtime
//! is entered. `tests/` instantiates it for tokio, smol, async-std (with the smol driver)
//! and plain threads (the blocking driver); nothing else differs between them.
//!
//! A scenario awaits every call through `Runtime::into_future` (with the blocking driver
//! the call has already waited); it runs calls side by side on plain threads; it talks to
//! a local cloud on its own runtime ([`SimThread`]); its handlers answer at once or from a
//! thread of their own; every wait ends with a failure at a deadline.
//!
//! ```
//! // In tests/my_runtime.rs:
//! // enos_conformance::suite!(my_driver::MyRuntime, my_driver::block_on);
//! ```

#![forbid(unsafe_code)]
#![allow(missing_docs)]

use std::future::{Future, Ready};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use enos_client::{
    ClientEvent, ClientOptions, DeviceClient, DisconnectCause, Error, Events, GatewayClient, IntoHandler, RequestError,
    RequestOptions, Responder, Runtime, SecureMode, SubDeviceInfo,
};
use enos_proto::codec::ConnectReturnCode;
use enos_proto::compress::Compression;
use enos_proto::ops::{
    BatchEntry, ConnectionNode, ConnectionStatePost, DeviceName, Firmware, IntegrationPost, LogPost,
    MeasurepointBatchPost, MeasurepointBatchResume, NetworkStatusReport, NodeState, SubDeviceRegistration,
};
use enos_proto::store::OfflineStore;
use enos_proto::{
    CloseCause, Command, CommandKind, ConnectRefusal, DecodeError, DeviceKeys, PacketKind, Qos, SubmitError,
};
use enos_sim::mosquitto::{Mosquitto, MosquittoTls};
use enos_sim::registry::defaults::*;
use enos_sim::responder::ResponderOptions;
use enos_sim::{pki, Direction, Sim, SimThread};
use serde_json::json;
use smol::stream::StreamExt;

/// A runtime the suite can run on: any whose handlers may answer at once.
pub trait Rt: Runtime + IntoHandler<Ready<()>> {}
impl<R: Runtime + IntoHandler<Ready<()>>> Rt for R {}

/// Makes one `#[test]` per scenario for runtime `$rt`, each entered with `$enter` (a
/// function that runs a future to its end: `smol::block_on`, ...).
#[macro_export]
macro_rules! suite {
    ($rt:ty, $enter:path) => {
        $crate::suite!(@each $rt, $enter,
            seed_data_methods_and_ota_calls_with_typed_replies,
            gateway_manages_sub_devices_and_posts_for_them,
            every_command_kind_reaches_its_handler_for_the_device_and_a_sub_device,
            a_flood_of_commands_is_bounded_and_each_gets_exactly_one_answer,
            a_handler_that_panics_answers_1102_and_later_commands_still_run,
            calls_from_many_threads_at_once_each_end_with_their_own_reply,
            a_command_after_a_run_of_calls_reaches_its_handler,
            device_reports_reach_the_cloud_and_traffic_control_is_answered,
            compressed_sessions_carry_requests_commands_and_raw_data_with_gzip_and_lz4,
            the_integration_channel_posts_for_many_devices_each_request_whole_or_refused,
            over_http_and_https_a_device_posts_answers_commands_in_responses_and_renews_its_session,
            over_http_files_are_posted_downloaded_by_range_and_deleted_and_firmware_is_checked,
            secure_mode_2_and_a_refused_connect,
            dynamic_activation_keeps_the_issued_secret_across_a_reconnect_and_a_close,
            x509_with_pem_and_pkcs12_over_tls_and_each_refusal_typed,
            a_reconnect_restores_subscriptions_logins_and_queued_requests,
            posts_made_while_the_cloud_is_away_are_kept_and_resumed_at_their_time,
            requests_time_out_each_at_its_own_deadline,
            close_ends_each_request_in_flight_exactly_once,
            close_is_idempotent_a_client_connects_again_and_dropping_it_closes,
            malformed_bytes_end_the_session_with_a_typed_cause_and_it_comes_back,
            a_peer_that_sends_and_never_reads_is_read_no_further,
            against_mosquitto_plain_tls_and_client_certificates
        );
    };
    (@each $rt:ty, $enter:path, $($name:ident),+) => {
        $(
            #[test]
            fn $name() {
                $enter($crate::$name::<$rt>());
            }
        )+
    };
}

/// Awaits a call, whatever the runtime: a future's output, or the blocking call's result.
macro_rules! w {
    ($call:expr) => {
        R::into_future($call).await
    };
}

const WAIT: Duration = Duration::from_secs(15);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn keys(pk: &str, dk: &str) -> DeviceKeys {
    DeviceKeys::new(pk, dk).unwrap()
}

fn o() -> RequestOptions {
    RequestOptions::new()
}

fn cloud() -> SimThread {
    SimThread::start(Sim::builder()).unwrap()
}

fn options(url: String, pk: &str, dk: &str, secret: &str) -> ClientOptions {
    let mut o = ClientOptions::new(url, pk, dk);
    o.device_secret = Some(secret.into());
    o.reconnect_period = 1;
    o
}

fn device_options(sim: &SimThread) -> ClientOptions {
    options(sim.tcp_url().unwrap(), DEVICE_PRODUCT, DEVICE, DEVICE_SECRET)
}

async fn device<R: Rt>(sim: &SimThread) -> DeviceClient<R> {
    let c = DeviceClient::<R>::new(device_options(sim)).unwrap();
    w!(c.connect()).unwrap();
    c
}

async fn gateway<R: Rt>(sim: &SimThread) -> GatewayClient<R> {
    let g = GatewayClient::<R>::new(options(sim.tcp_url().unwrap(), GATEWAY_PRODUCT, GATEWAY, GATEWAY_SECRET)).unwrap();
    w!(g.connect()).unwrap();
    g
}

/// The demo gateway with its sub-device in its topology and logged in.
async fn gateway_with_sub_device<R: Rt>(sim: &SimThread) -> (GatewayClient<R>, DeviceKeys, SubDeviceInfo) {
    let g = gateway::<R>(sim).await;
    let s1 = SubDeviceInfo::new(keys(SUB_PRODUCT, SUB_DEVICE_1), SUB_DEVICE_1_SECRET);
    let m = g.sub_device_management();
    w!(m.add_topo(vec![s1.clone()], o())).unwrap();
    w!(m.login_sub_device(s1.clone(), o())).unwrap();
    (g, keys(GATEWAY_PRODUCT, GATEWAY), s1)
}

/// `f`'s output, or a failure naming `what` after `d`.
async fn within<T>(d: Duration, what: &str, f: impl Future<Output = T>) -> T {
    let timer = async {
        smol::Timer::after(d).await;
        None
    };
    smol::future::or(async { Some(f.await) }, timer).await.unwrap_or_else(|| panic!("{what}: nothing within {d:?}"))
}

/// The next event that `pick` takes, skipping others; a failure at the deadline or when
/// the stream ends.
async fn next_event<R: Rt>(events: &mut Events<R>, what: &str, pick: impl Fn(&ClientEvent) -> bool) -> ClientEvent {
    within(WAIT, what, async {
        loop {
            match events.next().await {
                Some(e) if pick(&e) => return e,
                Some(_) => {}
                None => panic!("{what}: the event stream ended"),
            }
        }
    })
    .await
}

/// Waits (without blocking a runtime thread) until `cond` holds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    within(WAIT, what, async {
        while !cond() {
            smol::Timer::after(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Runs `f` on a thread of its own (a call side by side with others); `f` may block.
fn side<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> thread::JoinHandle<T> {
    thread::spawn(f)
}

/// A handler that answers before it returns, in a form every runtime takes.
fn now<F>(f: F) -> impl Fn(Command, Responder) -> Ready<()> + Send + Sync + 'static
where
    F: Fn(Command, Responder) + Send + Sync + 'static,
{
    move |c, r| {
        f(c, r);
        std::future::ready(())
    }
}

/// Answers service `echo` with its parameters.
fn answer_echo<R: Rt>(c: &DeviceClient<R>) {
    c.device_command().on_invoke_service(
        "echo",
        None,
        now(|c, res| {
            let CommandKind::InvokeService { params, .. } = &c.kind else { panic!("{:?}", c.kind) };
            res.ok(params.clone());
        }),
    );
}

/// Over HTTP a command rides on a response: posts until `call` (the cloud's command) ends.
async fn while_posting<R: Rt, T>(c: &DeviceClient<R>, what: &str, call: impl Future<Output = T>) -> T {
    let mut call = Box::pin(call);
    within(WAIT, what, async {
        loop {
            w!(c.device_data().post_measurepoint(json!({"temp": 1.0}), o())).unwrap();
            if let std::task::Poll::Ready(r) =
                std::future::poll_fn(|cx| std::task::Poll::Ready(call.as_mut().poll(cx))).await
            {
                return r;
            }
            smol::Timer::after(Duration::from_millis(20)).await;
        }
    })
    .await
}

// ----- the seed's methods -----

pub async fn seed_data_methods_and_ota_calls_with_typed_replies<R: Rt>() {
    let sim = cloud();
    let c = device::<R>(&sim).await;
    let dev = keys(DEVICE_PRODUCT, DEVICE);
    let d = c.device_data();

    assert_eq!(w!(d.update_tag([("site", "lab"), ("floor", "3")], o())).unwrap().code, 200);
    assert_eq!(w!(d.query_tag(["site"], o())).unwrap().data["site"], "lab");
    w!(d.delete_tag(["floor"], o())).unwrap();
    assert_eq!(sim.device(&dev).unwrap().tags.len(), 1);

    w!(d.update_attribute(json!({"name": "inverter-1", "capacity": 100.5}), o())).unwrap();
    assert_eq!(w!(d.query_attribute(["name"], o())).unwrap().data["name"], "inverter-1");
    w!(d.delete_attribute(["capacity"], o())).unwrap();
    assert!(!sim.device(&dev).unwrap().attributes.contains_key("capacity"));

    // Any Serialize value: a struct.
    #[derive(serde::Serialize)]
    struct Points {
        temp: f64,
        status: i32,
    }
    w!(d.post_measurepoint(Points { temp: 21.5, status: 1 }, o())).unwrap();
    w!(d.post_measurepoint_at(json!({"humidity": 40.0}), 1_600_000_000_000, o())).unwrap();
    w!(d.resume_measurepoint(json!({"temp": 18.0}), 1_500_000_000_000, o())).unwrap();
    let stored = sim.device(&dev).unwrap();
    assert_eq!(stored.measurepoints["temp"].value, 21.5);
    assert_eq!(stored.measurepoints["humidity"].time, 1_600_000_000_000);
    assert_eq!(stored.history.back().unwrap().0, "resume");
    let e = w!(d.post_measurepoint(json!({"temp": "hot"}), o())).unwrap_err();
    assert!(matches!(e, Error::Request(RequestError::Rejected { code: 1204, .. })), "{e:?}");

    w!(d.post_event("overheat", json!({"level": 3, "msg": "hot"}), o())).unwrap();
    assert_eq!(sim.device(&dev).unwrap().events.len(), 1);
    let raw = w!(d.up_raw_model(&b"\x01\x02"[..], o())).unwrap();
    assert_eq!(&raw.data[..], b"\x01\x02");

    // QoS 0, and without waiting for the reply.
    assert_eq!(w!(d.post_measurepoint(json!({"temp": 1.0}), o().qos(Qos::AtMostOnce))).unwrap().code, 200);
    let r = w!(d.post_measurepoint(json!({"temp": 2.0}), o().need_reply(false))).unwrap();
    assert_eq!(r.id, "");
    // QoS 0 without a reply ends once the driver has written it (it reports its writes;
    // without that report this would wait for the request timeout).
    let started = std::time::Instant::now();
    w!(d.post_measurepoint(json!({"temp": 3.0}), o().qos(Qos::AtMostOnce).need_reply(false).timeout(secs(20))))
        .unwrap();
    assert!(started.elapsed() < secs(5), "delivered at its write, not at its timeout");

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
    w!(ota.report_version("1.0.0", o())).unwrap();
    // Progress without an upgrade under way: the cloud's typed refusal.
    let e = w!(ota.report_progress("50", "downloading", o())).unwrap_err();
    assert!(matches!(e, Error::Request(RequestError::Rejected { code: 764, .. })), "{e:?}");
    assert_eq!(w!(ota.get_version(o())).unwrap().data[0].version, "1.1.0");
    assert!(w!(ota.get_tsl_template(o())).unwrap().data.tsl_measurepoint_map.contains_key("temp"));
    w!(c.close()).unwrap();
    assert_eq!(w!(c.device_data().query_tag(["x"], o())), Err(Error::Closed));
}

pub async fn gateway_manages_sub_devices_and_posts_for_them<R: Rt>() {
    let sim = cloud();
    let g = gateway::<R>(&sim).await;
    let m = g.sub_device_management();
    let mut reg = SubDeviceRegistration::new(SUB_PRODUCT, DeviceName::new("meter").with("en_US", "meter"));
    reg.device_key = Some("meter_1".into());
    let registered = w!(m.register_device(vec![reg], o())).unwrap().data;
    let meter = SubDeviceInfo::new(keys(SUB_PRODUCT, "meter_1"), registered[0].device_secret.clone());
    let s1 = SubDeviceInfo::new(keys(SUB_PRODUCT, SUB_DEVICE_1), SUB_DEVICE_1_SECRET);
    w!(m.add_topo(vec![meter.clone(), s1.clone()], o())).unwrap();
    assert_eq!(w!(m.get_topo(o())).unwrap().data.len(), 2);
    assert_eq!(w!(m.login_sub_device(meter.clone(), o())).unwrap().data.device_key, "meter_1");
    assert_eq!(w!(m.batch_login_sub_device(vec![s1.clone()], o())).unwrap().data.logged_in.len(), 1);
    // On behalf of a sub-device (the seed's deviceInfo).
    w!(g.device_data().post_measurepoint(json!({"temp": 5.5}), o().target(meter.keys.clone()))).unwrap();
    assert_eq!(sim.device(&meter.keys).unwrap().measurepoints["temp"].value, 5.5);
    let entries =
        vec![BatchEntry::own(json!({"temp": 1.0}), None), BatchEntry::of(s1.keys.clone(), json!({"temp": 2.0}), None)];
    w!(g.device_data().batch_post_measurepoint(MeasurepointBatchPost::new(entries.clone()), o())).unwrap();
    let resume = MeasurepointBatchResume::new(entries).skip_invalid_measurepoints(true);
    w!(g.device_data().batch_resume_measurepoint(resume, o())).unwrap();
    assert_eq!(sim.device(&s1.keys).unwrap().measurepoints["temp"].value, 2.0);
    assert_eq!(w!(m.logout_sub_device(meter.keys.clone(), o())).unwrap().data, Some(meter.keys.clone()));
    w!(m.delete_topo(vec![meter.keys.clone()], o())).unwrap();
    assert_eq!(w!(m.get_topo(o())).unwrap().data.len(), 1);
    // Gateway-only operations refuse a target.
    let e = w!(m.get_topo(o().target(s1.keys.clone()))).unwrap_err();
    assert_eq!(e, Error::Submit(SubmitError::InvalidTarget));
}

// ----- commands -----

pub async fn every_command_kind_reaches_its_handler_for_the_device_and_a_sub_device<R: Rt>() {
    let sim = cloud();
    let (g, gw, s1) = gateway_with_sub_device::<R>(&sim).await;
    let m = g.sub_device_management();

    let cmd = g.device_command();
    cmd.on_invoke_service(
        "restart",
        None,
        now(|c, res| {
            let CommandKind::InvokeService { params, .. } = &c.kind else { panic!("{:?}", c.kind) };
            res.ok(json!({"device": c.device.to_string(), "delay": params["delay"]}));
        }),
    );
    // A handler for one sub-device wins over the general one.
    cmd.on_invoke_service("restart", Some(s1.keys.clone()), now(|_c, res| res.ok(json!({"sub": true}))));
    cmd.on_set_measurepoint(
        None,
        now(|c, res| {
            let CommandKind::SetMeasurepoints { points } = &c.kind else { panic!("{:?}", c.kind) };
            res.ok(json!({"applied": points.len()}));
        }),
    );
    cmd.on_get_measurepoint(None, now(|_c, res| res.ok(json!({"temp": 21.5}))));
    cmd.on_down_raw_model(
        None,
        now(|c, res| {
            let CommandKind::RawDown { payload } = &c.kind else { panic!("{:?}", c.kind) };
            res.raw(payload.iter().rev().copied().collect::<Vec<u8>>());
        }),
    );
    cmd.on_ota_upgrade(
        None,
        now(|c, res| {
            let CommandKind::OtaUpgrade { firmware } = &c.kind else { panic!("{:?}", c.kind) };
            res.ok(json!({"version": firmware.version}));
        }),
    );
    // A slow handler answers from a thread of its own, later.
    cmd.on_invoke_service(
        "slow",
        None,
        now(|_c, res| {
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(300));
                res.ok(json!({}));
            });
        }),
    );
    // A handler that forgets to answer: 1102.
    cmd.on_invoke_service("forgetful", None, now(|_c, _res| {}));
    let (tx, rx) = mpsc::channel();
    for what in ["enable", "disable", "delete"] {
        let tx = std::sync::Mutex::new(tx.clone());
        let h = now(move |c, res| {
            let _ = tx.lock().unwrap().send((what, c.kind.clone()));
            res.ok(json!({}));
        });
        match what {
            "enable" => m.on_sub_devices_enable(h),
            "disable" => m.on_sub_devices_disable(h),
            _ => m.on_sub_devices_delete(h),
        }
    }

    // A slow handler does not stall the connection: other commands and requests go on.
    let slow = sim.run({
        let gw = gw.clone();
        move |s| async move { s.invoke_service(&gw, "slow", json!({})).await }
    });
    let started = Instant::now();
    let r = sim.run({
        let gw = gw.clone();
        move |s| async move { s.invoke_service(&gw, "restart", json!({"delay": 5})).await }
    });
    assert_eq!(r.await.unwrap().data, json!({"device": gw.to_string(), "delay": 5}));
    w!(g.device_data().post_measurepoint(json!({"temp": 1.0}), o())).unwrap();
    assert!(started.elapsed() < Duration::from_millis(300), "the slow handler held the others up");
    assert_eq!(within(WAIT, "the slow handler", slow).await.unwrap().code, 200);

    let invoke = |dev: DeviceKeys, service: &'static str| {
        sim.run(move |s| async move { s.invoke_service(&dev, service, json!({})).await })
    };
    assert_eq!(invoke(s1.keys.clone(), "restart").await.unwrap().data, json!({"sub": true}));
    let set =
        |dev: DeviceKeys| sim.run(move |s| async move { s.set_measurepoints(&dev, json!({"a": 1, "b": 2})).await });
    assert_eq!(set(gw.clone()).await.unwrap().data, json!({"applied": 2}));
    assert_eq!(set(s1.keys.clone()).await.unwrap().code, 200);
    let get = sim.run({
        let gw = gw.clone();
        move |s| async move { s.get_measurepoints(&gw, &["temp"]).await }
    });
    assert_eq!(get.await.unwrap().data, json!({"temp": 21.5}));
    let raw = sim.run({
        let gw = gw.clone();
        move |s| async move { s.send_down_raw(&gw, bytes::Bytes::from_static(b"\x01\x02")).await }
    });
    assert_eq!(&raw.await.unwrap()[..], b"\x02\x01");
    let firmware = Firmware { version: "2.0.0".into(), ..Firmware::default() };
    let ota = sim.run({
        let gw = gw.clone();
        move |s| async move { s.push_ota(&gw, firmware).await }
    });
    assert_eq!(ota.await.unwrap().unwrap().data, json!({"version": "2.0.0"}));
    // The device's own state commands.
    let (state_tx, state_rx) = mpsc::channel();
    let state_tx = std::sync::Mutex::new(state_tx);
    cmd.on_device_state(now(move |c, res| {
        let _ = state_tx.lock().unwrap().send(c.kind.clone());
        res.ok(json!({}));
    }));
    for what in ["disable", "enable", "delete"] {
        let gw = gw.clone();
        let r = sim.run(move |s| async move { s.send_device_state(&gw, what).await }).await.unwrap();
        assert_eq!(r.code, 200, "{what}");
        let kind = state_rx.recv_timeout(WAIT).unwrap();
        match what {
            "disable" => assert!(matches!(kind, CommandKind::DisableDevice { .. }), "{kind:?}"),
            "enable" => assert!(matches!(kind, CommandKind::EnableDevice { .. }), "{kind:?}"),
            _ => assert!(matches!(kind, CommandKind::DeleteDevice { .. }), "{kind:?}"),
        }
    }
    let r = invoke(gw.clone(), "nobody").await.unwrap();
    assert_eq!((r.code, r.message.as_deref()), (1101, Some("downstream command handler not registered")));
    let r = invoke(gw.clone(), "forgetful").await.unwrap();
    assert_eq!(r.code, 1102);
    assert!(r.message.unwrap_or_default().contains("did not answer"));

    for what in ["disable", "enable", "delete"] {
        let subs = vec![s1.keys.clone()];
        let gw = gw.clone();
        let r = sim
            .run(move |s| async move {
                match what {
                    "disable" => s.disable_sub_devices(&gw, &subs).await,
                    "enable" => s.enable_sub_devices(&gw, &subs).await,
                    _ => s.delete_sub_devices(&gw, &subs).await,
                }
            })
            .await;
        assert_eq!(r.unwrap().code, 200);
        let (got, kind) = rx.recv_timeout(WAIT).unwrap();
        assert_eq!(got, what);
        assert!(format!("{kind:?}").contains(SUB_DEVICE_1));
    }
}

pub async fn a_flood_of_commands_is_bounded_and_each_gets_exactly_one_answer<R: Rt>() {
    let sim = SimThread::start(Sim::builder().command_timeout(Duration::from_secs(30))).unwrap();
    let c = device::<R>(&sim).await;
    // Handlers that hold their answer until released: the running ones and the core's
    // queue behind them fill up.
    let (held_tx, held_rx) = mpsc::channel::<Responder>();
    let held_tx = std::sync::Mutex::new(held_tx);
    let running = Arc::new(AtomicUsize::new(0));
    let r2 = running.clone();
    c.device_command().on_invoke_service(
        "stuck",
        None,
        now(move |_c, res| {
            r2.fetch_add(1, Ordering::SeqCst);
            let _ = held_tx.lock().unwrap().send(res);
        }),
    );
    let dev = keys(DEVICE_PRODUCT, DEVICE);
    let (running_max, queued_max) = (64, 1024);
    let capacity = running_max + queued_max;
    let total = capacity + 20;
    // Each call reports its code when it ends, in the order they end (the cloud's tasks
    // need not send the commands in the order they were made).
    let (codes_tx, codes) = mpsc::channel();
    for i in 0..total {
        let (dev, tx) = (dev.clone(), codes_tx.clone());
        drop(sim.run(move |s| async move {
            let _ = tx.send(s.invoke_service(&dev, "stuck", json!({})).await.map(|r| r.code));
        }));
        // Paced, so that the cloud's own queue to the connection (1,024) keeps up.
        if i % 100 == 99 {
            smol::Timer::after(Duration::from_millis(20)).await;
        }
    }
    until("64 handlers running", || running.load(Ordering::SeqCst) == running_max).await;
    // Those past the queue come back at once with 1102, while every handler still holds on.
    let early: Vec<_> = (0..total - capacity).map(|_| codes.recv_timeout(WAIT).expect("a 1102")).collect();
    assert_eq!(early, vec![Ok(1102); total - capacity]);
    assert_eq!(running.load(Ordering::SeqCst), running_max, "at most 64 in the handlers' hands");
    assert!(codes.try_recv().is_err(), "no held command answered yet");
    // Requests still flow meanwhile.
    w!(c.device_data().post_measurepoint(json!({"temp": 1.0}), o())).unwrap();
    // Answering each held command hands out the next, until all are answered: once each.
    let answering = side(move || {
        for _ in 0..capacity {
            held_rx.recv_timeout(WAIT).expect("a held command").ok(json!({}));
        }
    });
    let late: Vec<_> = (0..capacity).map(|_| codes.recv_timeout(WAIT).expect("a held command's answer")).collect();
    assert_eq!(late, vec![Ok(200); capacity]);
    answering.join().unwrap();
    assert_eq!(running.load(Ordering::SeqCst), capacity, "each handler ran once");
}

pub async fn a_handler_that_panics_answers_1102_and_later_commands_still_run<R: Rt>() {
    let sim = cloud();
    let c = device::<R>(&sim).await;
    c.device_command().on_invoke_service("boom", None, now(|_c, _res| panic!("a handler's bug")));
    c.device_command().on_invoke_service("fine", None, now(|_c, res| res.ok(json!({"fine": true}))));
    let dev = keys(DEVICE_PRODUCT, DEVICE);
    for _ in 0..3 {
        let d = dev.clone();
        let r = sim.run(move |s| async move { s.invoke_service(&d, "boom", json!({})).await }).await.unwrap();
        assert_eq!(r.code, 1102);
        assert!(r.message.unwrap_or_default().contains("panicked"));
        let d = dev.clone();
        let r = sim.run(move |s| async move { s.invoke_service(&d, "fine", json!({})).await }).await.unwrap();
        assert_eq!(r.data, json!({"fine": true}));
    }
    assert!(c.connected());
}

/// Threads share one client, each asking in turn for what it has just set: a reply that
/// reached another caller would carry another thread's key.
pub async fn calls_from_many_threads_at_once_each_end_with_their_own_reply<R: Rt>() {
    let sim = cloud();
    let c = device::<R>(&sim).await;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let c = c.clone();
            side(move || {
                smol::block_on(async {
                    let (d, key) = (c.device_data(), format!("thread{t}"));
                    for i in 0..25 {
                        let value = format!("{t}.{i}");
                        w!(d.update_tag([(key.as_str(), value.as_str())], o())).unwrap();
                        let r = w!(d.query_tag([key.as_str()], o())).unwrap();
                        assert_eq!(r.data.get(&key), Some(&value), "thread {t}, call {i}: {:?}", r.data);
                    }
                })
            })
        })
        .collect();
    within(WAIT * 2, "eight threads' calls", async {
        for t in threads {
            while !t.is_finished() {
                smol::Timer::after(Duration::from_millis(10)).await;
            }
            t.join().unwrap();
        }
    })
    .await;
}

/// Calls one after another, then silence from the application: a command that comes
/// then is still read and answered (with the blocking driver the callers read the socket
/// while they wait, and its own thread must take it back).
pub async fn a_command_after_a_run_of_calls_reaches_its_handler<R: Rt>() {
    let sim = cloud();
    let c = device::<R>(&sim).await;
    c.device_command().on_invoke_service("ping", None, now(|_c, res| res.ok(json!({"pong": true}))));
    let dev = keys(DEVICE_PRODUCT, DEVICE);
    for round in 0..3 {
        for i in 0..20 {
            w!(c.device_data().post_measurepoint(json!({"temp": f64::from(i)}), o())).unwrap();
        }
        let d = dev.clone();
        let command = sim.run(move |s| async move { s.invoke_service(&d, "ping", json!({})).await });
        let r = within(secs(5), "the command after the calls", command).await.unwrap();
        assert_eq!(r.data, json!({"pong": true}), "round {round}");
    }
}

// ----- what the vendor's newest SDK adds -----

pub async fn device_reports_reach_the_cloud_and_traffic_control_is_answered<R: Rt>() {
    let sim = cloud();
    let c = device::<R>(&sim).await;
    let dev = keys(DEVICE_PRODUCT, DEVICE);
    let d = c.device_data();
    let log = LogPost::new().trace_id("t-1").level("info").module("modbus").content("slave 3 timed out");
    w!(d.post_log(log.at(1_600_000_000_000), o())).unwrap();
    let mut net = NetworkStatusReport::new();
    net.rssi = Some(-67.5);
    net.network_type = Some("4G".into());
    w!(d.report_network_status(net, o())).unwrap();
    let nodes = vec![
        ConnectionNode::new("#1", NodeState::Connected).name("gateway"),
        ConnectionNode::new("#2", NodeState::Disconnected).info("no heartbeat"),
    ];
    w!(d.post_connection_state(ConnectionStatePost::full(nodes).relation("#1", ["#2"]), o())).unwrap();
    let update = ConnectionStatePost::update(vec![ConnectionNode::new("#2", NodeState::Connected)]);
    w!(d.post_connection_state(update, o())).unwrap();
    // An update with relations is refused before it is sent.
    let bad = ConnectionStatePost::update(vec![ConnectionNode::new("#2", NodeState::Connected)]).relation("#1", ["#2"]);
    let e = w!(d.post_connection_state(bad, o())).unwrap_err();
    assert!(matches!(e, Error::Submit(SubmitError::Encode(_))), "{e:?}");

    let reports = sim.device(&dev).unwrap().reports;
    let methods: Vec<&str> = reports.iter().map(|(m, _, _)| m.as_str()).collect();
    assert_eq!(methods, ["thing.log.post", "network.status.report", "connection.state.post", "connection.state.post"]);
    assert_eq!(reports[0].1["logs"]["module"], "modbus");
    assert_eq!(reports[0].1["time"], 1_600_000_000_000u64);
    assert_eq!(reports[1].1["rssi"], -67.5);
    assert_eq!(reports[2].1["relations"], json!({"#1": ["#2"]}));
    assert_eq!(reports[3].1["nodes"], json!([{"nodeId": "#2", "state": 1}]));

    // Without a handler, traffic control is answered 200.
    let traffic = |params: serde_json::Value| {
        let d = dev.clone();
        sim.run(move |s| async move { s.traffic_control(&d, params).await })
    };
    let r = within(secs(5), "traffic control without a handler", traffic(json!({}))).await.unwrap();
    assert_eq!((r.code, r.data), (200, json!({})));
    // With one, it takes the method and params as sent and answers as it likes.
    c.device_command().on_traffic_control(
        None,
        now(|c, res| {
            let CommandKind::TrafficControl { method, params } = &c.kind else { panic!("{:?}", c.kind) };
            res.ok(json!({"method": method, "limit": params["limit"]}));
        }),
    );
    let r = within(secs(5), "traffic control with a handler", traffic(json!({"limit": 10}))).await.unwrap();
    assert_eq!((r.code, r.data), (200, json!({"method": "traffic.control", "limit": 10})));
    let replies: Vec<String> =
        sim.record(&dev).into_iter().filter(|r| r.direction == Direction::In).filter_map(|r| r.topic).collect();
    assert_eq!(replies.iter().filter(|t| t.ends_with("/traffic/control_reply")).count(), 2);
}

pub async fn compressed_sessions_carry_requests_commands_and_raw_data_with_gzip_and_lz4<R: Rt>() {
    let sim = cloud();
    let dev = keys(DEVICE_PRODUCT, DEVICE);
    for codec in [Compression::Gzip, Compression::Lz4] {
        let mut options = device_options(&sim);
        options.compression = Some(codec);
        let c = DeviceClient::<R>::new(options).unwrap();
        w!(c.connect()).unwrap();
        answer_echo(&c);
        let text = "compressible ".repeat(100);
        w!(c.device_data().post_measurepoint(json!({"temp": 30.5}), o())).unwrap();
        assert_eq!(sim.device(&dev).unwrap().measurepoints["temp"].value, 30.5, "{codec:?}");
        assert_eq!(w!(c.device_data().update_tag([("note", text.as_str())], o())).unwrap().code, 200);
        assert_eq!(w!(c.device_data().query_tag(["note"], o())).unwrap().data["note"], text, "{codec:?}");
        let raw = w!(c.device_data().up_raw_model(&b"\x01\x02\x03"[..], o())).unwrap();
        assert_eq!(&raw.data[..], b"\x01\x02\x03", "{codec:?}");
        let d = dev.clone();
        let params = json!({"text": text});
        let call = sim.run(move |s| async move { s.invoke_service(&d, "echo", params).await });
        let r = within(secs(5), "a command to a compressing device", call).await.unwrap();
        assert_eq!(r.data["text"], text, "{codec:?}");
        w!(c.close()).unwrap();
    }
}

pub async fn the_integration_channel_posts_for_many_devices_each_request_whole_or_refused<R: Rt>() {
    let sim = cloud();
    let url = sim.tcp_url().unwrap();
    let c = DeviceClient::<R>::new(ClientOptions::integration_channel(&url, DEVICE_PRODUCT, DEVICE_PRODUCT_SECRET))
        .unwrap();
    w!(c.connect()).unwrap();
    let (dev, new) = (keys(DEVICE_PRODUCT, DEVICE), keys(DEVICE_PRODUCT, ACTIVATING_DEVICE));
    let i = c.integration();
    let history = IntegrationPost::measurepoints()
        .entry(DEVICE, Some(1_000), json!({"temp": 1.5}))
        .entry(DEVICE, Some(2_000), json!({"temp": 2.5}))
        .entry(ACTIVATING_DEVICE, Some(1_000), json!({"temp": 3.5}));
    assert_eq!(w!(i.post(history, o())).unwrap().code, 200);
    let times: Vec<u64> = sim.device(&dev).unwrap().history.iter().map(|(_, _, s)| s.time).collect();
    assert_eq!(times, [1_000, 2_000]);
    assert_eq!(sim.device(&new).unwrap().history.len(), 1);
    // One unknown device refuses the whole request.
    let mixed = IntegrationPost::measurepoints().entry(DEVICE, Some(3_000), json!({"temp": 4.5})).entry(
        "no_such_device",
        Some(3_000),
        json!({"temp": 5.5}),
    );
    let e = w!(i.post(mixed, o())).unwrap_err();
    assert!(matches!(e, Error::Request(RequestError::Rejected { code: 1257, .. })), "{e:?}");
    assert_eq!(sim.device(&dev).unwrap().history.len(), 2);
    let events = IntegrationPost::events().entry(DEVICE, Some(4_000), json!({"overheat": {"level": 2, "msg": "warm"}}));
    w!(i.post(events, o())).unwrap();
    assert_eq!(sim.device(&dev).unwrap().events.back().unwrap().2, 4_000);
    let attributes = IntegrationPost::attributes().entry(ACTIVATING_DEVICE, None, json!({"name": "meter-7"}));
    w!(i.post(attributes, o())).unwrap();
    assert_eq!(sim.device(&new).unwrap().attributes["name"], "meter-7");
    assert_eq!(&w!(i.up_raw(&b"\x07\x08"[..], o())).unwrap().data[..], b"\x07\x08");
    // A product without a channel, or the wrong secret, is refused at CONNECT.
    for (pk, secret) in [(GATEWAY_PRODUCT, GATEWAY_PRODUCT_SECRET), (DEVICE_PRODUCT, "wrong")] {
        let bad = DeviceClient::<R>::new(ClientOptions::integration_channel(&url, pk, secret)).unwrap();
        assert_eq!(w!(bad.connect()), Err(Error::Connect(DisconnectCause::Refused(ConnectRefusal::NotAuthorized))));
    }
}

pub async fn over_http_and_https_a_device_posts_answers_commands_in_responses_and_renews_its_session<R: Rt>() {
    let sim = SimThread::start(Sim::builder().http(([127, 0, 0, 1], 0).into())).unwrap();
    let dev = keys(DEVICE_PRODUCT, DEVICE);
    let mut http = options(sim.http_url().unwrap(), DEVICE_PRODUCT, DEVICE, DEVICE_SECRET);
    http.http_session_lifetime = 1;
    let c = DeviceClient::<R>::new(http).unwrap();
    w!(c.connect()).unwrap();
    assert!(c.connected());
    let d = c.device_data();
    w!(d.post_measurepoint(json!({"temp": 31.5}), o())).unwrap();
    assert_eq!(sim.device(&dev).unwrap().measurepoints["temp"].value, 31.5);
    w!(d.update_tag([("site", "http")], o())).unwrap();
    assert_eq!(w!(d.query_tag(["site"], o())).unwrap().data["site"], "http");
    assert_eq!(&w!(d.up_raw_model(&b"\x05\x06"[..], o())).unwrap().data[..], b"\x05\x06");
    let e = w!(d.post_measurepoint(json!({"temp": "hot"}), o())).unwrap_err();
    assert!(matches!(e, Error::Request(RequestError::Rejected { code: 1204, .. })), "{e:?}");

    // A command waits for the device's next response, rides on it, and is answered.
    answer_echo(&c);
    let d2 = dev.clone();
    let call = sim.run(move |s| async move { s.invoke_service(&d2, "echo", json!({"n": 7})).await });
    let answered = while_posting(&c, "a command over HTTP", call).await.unwrap();
    assert_eq!(answered.data, json!({"n": 7}));

    // Past its lifetime the session is renewed, without a disconnect.
    let logins = || sim.record(&dev).iter().filter(|r| r.kind == PacketKind::Connect).count();
    let before = logins();
    smol::Timer::after(Duration::from_millis(1100)).await;
    w!(c.device_data().post_measurepoint(json!({"temp": 2.0}), o())).unwrap();
    assert_eq!(logins(), before + 1);
    assert!(c.connected());
    // A wrong secret is refused at the login.
    let bad = DeviceClient::<R>::new(options(sim.http_url().unwrap(), DEVICE_PRODUCT, DEVICE, "wrong")).unwrap();
    assert_eq!(w!(bad.connect()), Err(Error::Connect(DisconnectCause::Refused(ConnectRefusal::NotAuthorized))));

    // Over TLS (https://): the same exchanges, through the core's TLS layer.
    let ca = pki::Ca::new("cloud ca").unwrap();
    let config = pki::server_tls(&ca.server_cert().unwrap(), None).unwrap();
    let tls = SimThread::start(Sim::builder().no_tcp().https(([127, 0, 0, 1], 0).into(), config)).unwrap();
    let secure = |ca: &pki::Ca| {
        let mut o = options(tls.http_url().unwrap(), DEVICE_PRODUCT, DEVICE, DEVICE_SECRET);
        o.ca = Some(ca.pem.clone().into_bytes());
        DeviceClient::<R>::new(o).unwrap()
    };
    let s = secure(&ca);
    w!(s.connect()).unwrap();
    w!(s.device_data().post_measurepoint(json!({"temp": 41.5}), o())).unwrap();
    assert_eq!(tls.device(&dev).unwrap().measurepoints["temp"].value, 41.5);
    w!(s.close()).unwrap();
    let other = secure(&pki::Ca::new("another ca").unwrap());
    match w!(other.connect()) {
        Err(Error::Connect(DisconnectCause::Transport(CloseCause::Tls(_)))) => {}
        e => panic!("{e:?}"),
    }
}

pub async fn over_http_files_are_posted_downloaded_by_range_and_deleted_and_firmware_is_checked<R: Rt>() {
    use enos_proto::http::{ByteRange, FileCategory, FileUpload, MeasurepointFilePost, ReadItem, ResponseReader};
    use sha2::Digest;
    let sim = SimThread::start(Sim::builder().http(([127, 0, 0, 1], 0).into())).unwrap();
    let dev = keys(DEVICE_PRODUCT, DEVICE);
    let c = DeviceClient::<R>::new(options(sim.http_url().unwrap(), DEVICE_PRODUCT, DEVICE, DEVICE_SECRET)).unwrap();
    w!(c.connect()).unwrap();
    let f = c.files();
    // Larger than one download exchange, so a download takes several.
    let log: Vec<u8> = (0..600 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let post = MeasurepointFilePost::new(vec![
        FileUpload::new("newFile", "/var/log/run.bin", log.clone(), [1; 8]),
        FileUpload::new("snapshot", "cam.jpg", &b"\xff\xd8\xff\xe0"[..], [2; 8]).in_struct("img"),
    ])
    .point("snapshot", json!({"label": "cam1"}))
    .point("temp", 20.5);
    w!(f.post_measurepoint(post, o())).unwrap();
    let uri = "enos-connect://AQEBAQEBAQE.bin";
    let stored = sim.device(&dev).unwrap();
    assert_eq!(stored.measurepoints["newFile"].value, uri);
    assert_eq!(
        stored.measurepoints["snapshot"].value,
        json!({"img": "enos-connect://AgICAgICAgI.jpg", "label": "cam1"})
    );
    assert_eq!(&sim.file(&dev, uri).unwrap()[..], &log[..]);

    let part =
        w!(f.download(uri, FileCategory::Feature, Some(ByteRange::Span { start: 10, end: 19 }), o())).unwrap().data;
    assert_eq!((&part.bytes[..], part.total()), (&log[10..20], Some(log.len() as u64)));
    let mut out = Vec::new();
    assert_eq!(w!(f.download_to(uri, FileCategory::Feature, &mut out)).unwrap(), log.len() as u64);
    assert!(out == log, "the streamed download equals the file");
    // The direct URL serves the file without a session.
    let url = w!(f.download_url(uri, FileCategory::Feature, o())).unwrap().data;
    let (host, path) = url.strip_prefix("http://").unwrap().split_once('/').unwrap();
    let body = side({
        let (host, path) = (host.to_owned(), path.to_owned());
        move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(&host).unwrap();
            write!(s, "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
            let mut wire = Vec::new();
            s.read_to_end(&mut wire).unwrap();
            let mut r = ResponseReader::new();
            r.feed(&wire);
            let mut body = Vec::new();
            while let Ok(Some(item)) = r.read() {
                if let ReadItem::Body(b) = item {
                    body.extend_from_slice(&b);
                }
            }
            body
        }
    })
    .join()
    .unwrap();
    assert!(body == log, "the direct URL serves the file");
    w!(f.delete(uri, o())).unwrap();
    let e = w!(f.download(uri, FileCategory::Feature, None, o())).unwrap_err();
    assert_eq!(e, Error::Request(RequestError::HttpStatus(404)));

    // Firmware: the upgrade accepted, then the file downloaded, checked and kept.
    let image: Vec<u8> = (0..300 * 1024u32).map(|i| (i % 253) as u8).collect();
    let fw_uri = "enos-connect://fw_2.0.1.bin";
    sim.add_file(&dev, fw_uri, FileCategory::Ota, image.clone().into()).unwrap();
    let firmware = Firmware {
        version: "2.0.1".into(),
        sign_method: "SHA256".into(),
        sign: sha2::Sha256::digest(&image).iter().map(|b| format!("{b:02X}")).collect(),
        file_url: fw_uri.into(),
        file_size: image.len() as u64,
    };
    c.device_command().on_ota_upgrade(None, now(|_c, res| res.ok(json!({}))));
    let (d2, fw2) = (dev.clone(), firmware.clone());
    let push = sim.run(move |s| async move { s.push_ota(&d2, fw2).await });
    while_posting(&c, "the upgrade command over HTTP", push).await.unwrap();
    let dir = std::env::temp_dir().join(format!("enos-fw-{}-{}", std::process::id(), std::any::type_name::<R>().len()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fw.bin");
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    let n = w!(c.ota().download_firmware(&firmware, &path, move |_, _| {
        s2.fetch_add(1, Ordering::SeqCst);
    }))
    .unwrap();
    assert_eq!(n, image.len() as u64);
    assert!(std::fs::read(&path).unwrap() == image);
    assert!(seen.load(Ordering::SeqCst) >= 2, "progress for the application");
    assert_eq!(sim.device(&dev).unwrap().ota.unwrap().step.as_deref(), Some("80"), "progress for the cloud");
    // A digest that does not match: nothing at the path, no part file, step -3.
    let bad = Firmware { sign: "00".repeat(32), ..firmware.clone() };
    let other = dir.join("bad.bin");
    let e = w!(c.ota().download_firmware(&bad, &other, |_, _| {})).unwrap_err();
    assert!(matches!(e, Error::Firmware(enos_proto::ops::FirmwareError::DigestMismatch { .. })), "{e:?}");
    assert!(!other.exists() && !dir.join("bad.bin.part").exists());
    assert_eq!(sim.device(&dev).unwrap().ota.unwrap().step.as_deref(), Some("-3"));

    // Over MQTT files have no exchange: refused before anything is sent.
    let mqtt = device::<R>(&sim).await;
    let e = w!(mqtt.files().delete(uri, o())).unwrap_err();
    assert_eq!(e, Error::Submit(SubmitError::NeedsHttp));
    // A firmware at a plain URL is fetched with plain GETs, by a device on MQTT too.
    let plain = Firmware { file_url: sim.file_url(&dev, fw_uri).unwrap(), ..firmware.clone() };
    let path = dir.join("plain.bin");
    std::fs::create_dir_all(&dir).unwrap();
    assert_eq!(w!(mqtt.ota().download_firmware(&plain, &path, |_, _| {})).unwrap(), image.len() as u64);
    assert!(std::fs::read(&path).unwrap() == image);
    let _ = std::fs::remove_dir_all(&dir);
}

// ----- authentication -----

pub async fn secure_mode_2_and_a_refused_connect<R: Rt>() {
    let sim = cloud();
    let c = DeviceClient::<R>::new(device_options(&sim)).unwrap();
    assert_eq!(w!(c.connect()).unwrap().unwrap().expose(), DEVICE_SECRET);
    assert!(c.connected());
    assert_eq!(w!(c.connect()), Err(Error::AlreadyStarted));
    let bad = DeviceClient::<R>::new(options(sim.tcp_url().unwrap(), DEVICE_PRODUCT, DEVICE, "wrong")).unwrap();
    assert_eq!(w!(bad.connect()), Err(Error::Connect(DisconnectCause::Refused(ConnectRefusal::NotAuthorized))));
    assert!(!bad.connected());
    // The refused client is closed, and may try again.
    assert_eq!(w!(bad.device_data().post_measurepoint(json!({"temp": 1.0}), o())), Err(Error::Closed));
    assert_eq!(w!(bad.connect()), Err(Error::Connect(DisconnectCause::Refused(ConnectRefusal::NotAuthorized))));
    // Nobody listening: a typed transport cause.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gone = DeviceClient::<R>::new(options(format!("tcp://127.0.0.1:{port}"), DEVICE_PRODUCT, DEVICE, "x")).unwrap();
    match w!(gone.connect()) {
        Err(Error::Connect(DisconnectCause::Transport(CloseCause::Io { kind, .. }))) => {
            assert_eq!(kind, std::io::ErrorKind::ConnectionRefused)
        }
        other => panic!("{other:?}"),
    }
}

pub async fn dynamic_activation_keeps_the_issued_secret_across_a_reconnect_and_a_close<R: Rt>() {
    let sim = cloud();
    let mut o3 = ClientOptions::new(sim.tcp_url().unwrap(), DEVICE_PRODUCT, ACTIVATING_DEVICE);
    o3.secure_mode = SecureMode::ProductSecret;
    o3.product_secret = Some(DEVICE_PRODUCT_SECRET.into());
    o3.reconnect_period = 1;
    let c = DeviceClient::<R>::new(o3).unwrap();
    let mut ev = c.events();
    let secret = w!(c.connect()).unwrap().unwrap();
    let dev = keys(DEVICE_PRODUCT, ACTIVATING_DEVICE);
    assert_eq!(sim.device(&dev).unwrap().secret.unwrap().expose(), secret.expose());
    match next_event(&mut ev, "the activation", |e| matches!(e, ClientEvent::Activated { .. })).await {
        ClientEvent::Activated { device, device_secret } => {
            assert_eq!((device, device_secret.expose()), (dev.clone(), secret.expose()))
        }
        other => panic!("{other:?}"),
    }
    w!(c.device_data().post_measurepoint(json!({"temp": 1.0}), o())).unwrap();
    // A reconnect uses mode 2 with the issued secret (the cloud refuses a second activation).
    sim.cut(&dev);
    next_event(&mut ev, "the reconnect", |e| matches!(e, ClientEvent::Connect { reconnect: true })).await;
    assert!(c.reconnected());
    w!(c.device_data().post_measurepoint(json!({"temp": 2.0}), o())).unwrap();
    // So does a new connect() after close().
    w!(c.close()).unwrap();
    assert_eq!(w!(c.connect()).unwrap().unwrap().expose(), secret.expose());
    w!(c.device_data().post_measurepoint(json!({"temp": 3.0}), o())).unwrap();
}

struct Pki {
    ca: pki::Ca,
    device_ca: pki::Ca,
}

fn p12(cert: &pki::CertPem, passphrase: &str) -> Vec<u8> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
    let der = cert.identity().unwrap().certificates()[0].to_vec();
    let chain = PrivateKeyChain::new(
        b"k".to_vec(),
        PrivateKey::from_der(&cert.key_der).unwrap(),
        vec![Certificate::from_der(&der).unwrap()],
    );
    let mut store = KeyStore::new();
    store.add_entry("device", KeyStoreEntry::PrivateKeyChain(chain));
    store.writer(passphrase).write().unwrap()
}

pub async fn x509_with_pem_and_pkcs12_over_tls_and_each_refusal_typed<R: Rt>() {
    let p = Pki { ca: pki::Ca::new("cloud ca").unwrap(), device_ca: pki::Ca::new("device ca").unwrap() };
    let server = p.ca.server_cert().unwrap();
    let tls_sim = |clients: Option<&pki::Ca>| {
        let config = pki::server_tls(&server, clients).unwrap();
        SimThread::start(Sim::builder().no_tcp().tls("127.0.0.1:0".parse().unwrap(), config)).unwrap()
    };
    let sim = tls_sim(Some(&p.device_ca));
    let cert = p.device_ca.device_cert(DEVICE).unwrap();
    // PEM identity, certificate mode with the device secret.
    let mut o = options(sim.tls_url().unwrap(), DEVICE_PRODUCT, DEVICE, DEVICE_SECRET);
    o.secure_mode = SecureMode::Certificate;
    o.ca = Some(p.ca.pem.clone().into_bytes());
    o.cert = Some(cert.cert.clone().into_bytes());
    o.key = Some(cert.key.clone().into_bytes());
    let c = DeviceClient::<R>::new(o.clone()).unwrap();
    w!(c.connect()).unwrap();
    w!(c.device_data().post_measurepoint(json!({"temp": 1.0}), RequestOptions::new())).unwrap();
    w!(c.close()).unwrap();
    // PKCS#12 identity with a passphrase, certificate only (no device secret).
    let mut o12 = o.clone();
    o12.cert = None;
    o12.key = None;
    o12.device_secret = None;
    o12.pfx = Some(p12(&cert, "pass phrase"));
    o12.passphrase = Some("pass phrase".into());
    let c = DeviceClient::<R>::new(o12.clone()).unwrap();
    assert!(w!(c.connect()).unwrap().is_none());
    w!(c.device_data().post_measurepoint(json!({"temp": 2.0}), RequestOptions::new())).unwrap();
    w!(c.close()).unwrap();
    // A wrong passphrase is an options error naming pfx.
    o12.passphrase = Some("nope".into());
    assert!(matches!(DeviceClient::<R>::new(o12), Err(Error::Options(e)) if e.field == "pfx"));

    // Refusals, each typed with its TLS cause: a CA that does not sign the server, no
    // client certificate, a foreign one, an expired one.
    async fn tls_refusal<R: Rt>(o: ClientOptions) -> String {
        match w!(DeviceClient::<R>::new(o).unwrap().connect()) {
            Err(Error::Connect(DisconnectCause::Transport(CloseCause::Tls(m)))) => m,
            other => panic!("not a TLS refusal: {other:?}"),
        }
    }
    let mut wrong_ca = o.clone();
    wrong_ca.ca = Some(pki::Ca::new("other").unwrap().pem.into_bytes());
    let m = tls_refusal::<R>(wrong_ca).await;
    assert!(m.contains("UnknownIssuer"), "{m}");
    let foreign = pki::Ca::new("foreign").unwrap().device_cert(DEVICE).unwrap();
    let mut f = o.clone();
    f.cert = Some(foreign.cert.into_bytes());
    f.key = Some(foreign.key.into_bytes());
    let m = tls_refusal::<R>(f).await;
    assert!(m.contains("UnknownCA"), "{m}");
    let expired = p.device_ca.expired_device_cert(DEVICE).unwrap();
    let mut x = o.clone();
    x.cert = Some(expired.cert.into_bytes());
    x.key = Some(expired.key.into_bytes());
    let m = tls_refusal::<R>(x).await;
    assert!(m.contains("CertificateExpired"), "{m}");
    let mut none = o.clone();
    none.secure_mode = SecureMode::DeviceSecret;
    none.cert = None;
    none.key = None;
    let m = tls_refusal::<R>(none).await;
    assert!(m.contains("CertificateRequired"), "{m}");
    // Server authentication only, secure mode 2, against a listener without a client CA.
    let sim2 = tls_sim(None);
    let mut s = options(sim2.tls_url().unwrap(), DEVICE_PRODUCT, DEVICE, DEVICE_SECRET);
    s.ca = Some(p.ca.pem.clone().into_bytes());
    let c = DeviceClient::<R>::new(s.clone()).unwrap();
    w!(c.connect()).unwrap();
    assert_eq!(w!(c.device_data().query_tag(Vec::<String>::new(), RequestOptions::new())).unwrap().code, 200);
    w!(c.close()).unwrap();
    // A broker reached by a name its certificate does not hold (an edge broker by IP):
    // refused, unless the options say, loudly, to accept any name; the chain is still
    // verified either way.
    let mut edge = s.clone();
    edge.server_name = Some("edge.example".into());
    let m = tls_refusal::<R>(edge.clone()).await;
    assert!(m.to_lowercase().contains("not valid for name"), "{m}");
    edge.dangerous_accept_any_server_name = true;
    let c = DeviceClient::<R>::new(edge.clone()).unwrap();
    w!(c.connect()).unwrap();
    assert_eq!(w!(c.device_data().query_tag(Vec::<String>::new(), RequestOptions::new())).unwrap().code, 200);
    w!(c.close()).unwrap();
    edge.ca = Some(pki::Ca::new("other").unwrap().pem.into_bytes());
    let m = tls_refusal::<R>(edge).await;
    assert!(m.contains("UnknownIssuer"), "{m}");
}

// ----- faults -----

pub async fn a_reconnect_restores_subscriptions_logins_and_queued_requests<R: Rt>() {
    let sim = cloud();
    let (g, gw, s1) = gateway_with_sub_device::<R>(&sim).await;
    g.device_command().on_invoke_service("*", None, now(|c, res| res.ok(json!({"who": c.device.to_string()}))));
    let mut ev = g.events();

    // The link is cut when the post arrives (the reply topic's SUBSCRIBE, then the post's
    // PUBLISH): unacknowledged, it is sent again and completes.
    // Counted from the CONNECT: what the device sent, and the PUBACKs it still owes for
    // the cloud's QoS 1 replies (they may be on their way).
    let record = sim.record(&gw);
    let connect = record.iter().rposition(|r| r.kind == PacketKind::Connect).unwrap();
    let after = &record[connect + 1..];
    let count = |d: Direction, k: PacketKind| after.iter().filter(|r| r.direction == d && r.kind == k).count();
    let sent = after.iter().filter(|r| r.direction == Direction::In).count();
    let owed = count(Direction::Out, PacketKind::Publish) - count(Direction::In, PacketKind::PubAck);
    sim.cut_after(&gw, (sent + owed) as u64 + 2);
    let post = {
        let g = g.clone();
        side(move || {
            smol::block_on(async { w!(g.device_data().post_measurepoint(json!({"temp": 3.0}), o().timeout(secs(10)))) })
        })
    };
    next_event(&mut ev, "the cut", |e| matches!(e, ClientEvent::Close { .. })).await;
    assert!(!post.is_finished(), "the cut hit the post in flight");
    // Requested while offline: queued, sent after the reconnect.
    let queued = {
        let g = g.clone();
        side(move || smol::block_on(async { w!(g.device_data().post_event("overheat", json!({"level": 1}), o())) }))
    };
    next_event(&mut ev, "the reconnect", |e| matches!(e, ClientEvent::Connect { reconnect: true })).await;
    assert!(g.reconnected() && g.connected());
    assert_eq!(post.join().unwrap().unwrap().code, 200, "the post the cut hit");
    assert_eq!(queued.join().unwrap().unwrap().code, 200, "the request made while offline");
    let posts =
        sim.record(&gw).into_iter().filter(|r| r.topic.as_deref().is_some_and(|t| t.ends_with("measurepoint/post")));
    assert_eq!(posts.count(), 2, "the post went out again after the cut");
    assert_eq!(sim.device(&gw).unwrap().measurepoints["temp"].value, 3.0);
    // The sub-device is logged in again: posts on its behalf and commands for it work.
    until("the sub-device's login", || sim.is_online(&s1.keys)).await;
    w!(g.device_data().post_measurepoint(json!({"temp": 4.0}), o().target(s1.keys.clone()))).unwrap();
    let s = s1.keys.clone();
    let r = sim.run(move |sim| async move { sim.invoke_service(&s, "x", json!({})).await }).await.unwrap();
    assert_eq!(r.data, json!({"who": s1.keys.to_string()}));
    // Refused reconnects are typed events, then it gets back in.
    sim.refuse_next_connects(1, ConnectReturnCode::ServiceUnavailable);
    sim.cut(&gw);
    next_event(&mut ev, "the refusal", |e| {
        matches!(e, ClientEvent::Close { cause: DisconnectCause::Refused(ConnectRefusal::ServerUnavailable) })
    })
    .await;
    next_event(&mut ev, "back in", |e| matches!(e, ClientEvent::Connect { reconnect: true })).await;
    w!(g.device_data().post_measurepoint(json!({"temp": 5.0}), o())).unwrap();
}

pub async fn posts_made_while_the_cloud_is_away_are_kept_and_resumed_at_their_time<R: Rt>() {
    let sim = cloud();
    let store = OfflineStore::memory();
    let mut options = device_options(&sim);
    options.offline_store = Some(store.clone());
    let c = DeviceClient::<R>::new(options).unwrap();
    w!(c.connect()).unwrap();
    let dev = keys(DEVICE_PRODUCT, DEVICE);
    let mut ev = c.events();
    // The cloud goes away: the link is cut and every reconnect refused until it is back.
    sim.refuse_next_connects(u32::MAX, ConnectReturnCode::ServiceUnavailable);
    sim.cut(&dev);
    next_event(&mut ev, "the cut", |e| matches!(e, ClientEvent::Close { .. })).await;
    const T: u64 = 1_700_000_000_000;
    // One after the other (each waits for its resume): stored in this order.
    let mut posts = Vec::new();
    for i in 0..3u64 {
        let c = c.clone();
        posts.push(side(move || {
            let points = json!({"temp": i as f64});
            smol::block_on(async { w!(c.device_data().post_measurepoint_at(points, T + i, o())) })
        }));
        until("the post kept in the store", || store.len() == i as usize + 1).await;
    }
    assert!(posts.iter().all(|p| !p.is_finished()), "a stored post waits for its resume");
    sim.refuse_next_connects(0, ConnectReturnCode::ServiceUnavailable);
    next_event(&mut ev, "the reconnect", |e| matches!(e, ClientEvent::Connect { reconnect: true })).await;
    for p in posts {
        assert_eq!(p.join().unwrap().unwrap().code, 200, "each caller ends with its resume's reply");
    }
    let sent = |path: &str| -> Vec<serde_json::Value> {
        sim.record(&dev)
            .into_iter()
            .filter(|r| r.direction == Direction::In && r.topic.as_deref().is_some_and(|t| t.ends_with(path)))
            .map(|r| serde_json::from_slice(&r.payload).unwrap())
            .collect()
    };
    // Together in one batch resume, oldest first, each at its own time.
    let batches = sent("measurepoint/resume/batch");
    assert_eq!(batches.len(), 1, "{batches:?}");
    let times: Vec<u64> =
        batches[0]["params"].as_array().unwrap().iter().map(|e| e["time"].as_u64().unwrap()).collect();
    assert_eq!(times, vec![T, T + 1, T + 2]);
    assert!(sent("measurepoint/post").is_empty());
    assert!(store.is_empty(), "delivered records are forgotten");
    // Up again: a post is a post.
    w!(c.device_data().post_measurepoint(json!({"temp": 9.0}), o())).unwrap();
    assert_eq!(sent("measurepoint/post").len(), 1);
}

pub async fn requests_time_out_each_at_its_own_deadline<R: Rt>() {
    let sim = cloud();
    let c = device::<R>(&sim).await;
    sim.drop_replies(2);
    let started = Instant::now();
    // A long request first, then a shorter one: the shorter deadline is the earlier one.
    let long = {
        let c = c.clone();
        side(move || {
            let r = smol::block_on(async {
                w!(c.device_data().post_measurepoint(json!({"temp": 1.0}), o().timeout(secs(3))))
            });
            (r, started.elapsed())
        })
    };
    smol::Timer::after(Duration::from_millis(100)).await;
    let short = w!(c.device_data().post_measurepoint(json!({"temp": 2.0}), o().timeout(Duration::from_millis(300))));
    let short_at = started.elapsed();
    let (long, long_at) = long.join().unwrap();
    assert_eq!(short, Err(Error::Request(RequestError::TimedOut(Duration::from_millis(300)))));
    assert_eq!(long, Err(Error::Request(RequestError::TimedOut(secs(3)))));
    assert!(short_at >= Duration::from_millis(400) && short_at < Duration::from_millis(2500), "{short_at:?}");
    assert!(long_at >= secs(3), "{long_at:?}");
    // The session goes on.
    w!(c.device_data().post_measurepoint(json!({"temp": 3.0}), o())).unwrap();
}

pub async fn close_ends_each_request_in_flight_exactly_once<R: Rt>() {
    let sim = cloud();
    let c = device::<R>(&sim).await;
    sim.drop_replies(8);
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let c = c.clone();
            side(move || {
                smol::block_on(async {
                    w!(c.device_data().post_measurepoint(json!({"temp": f64::from(i)}), o().timeout(secs(30))))
                })
            })
        })
        .collect();
    // Every post is on the wire (or queued) before the close.
    let dev = keys(DEVICE_PRODUCT, DEVICE);
    until("eight posts on the wire", || {
        sim.record(&dev).iter().filter(|r| r.topic.as_deref().is_some_and(|t| t.ends_with("measurepoint/post"))).count()
            >= 8
    })
    .await;
    let closed_at = Instant::now();
    w!(c.close()).unwrap();
    for call in calls {
        // A thread's call ends once: with `Closed`, soon after the close.
        assert_eq!(call.join().unwrap(), Err(Error::Closed));
    }
    assert!(closed_at.elapsed() < secs(5), "{:?}", closed_at.elapsed());
    assert!(!c.connected());
    assert_eq!(w!(c.device_data().post_measurepoint(json!({"temp": 9.0}), o())), Err(Error::Closed));
}

pub async fn close_is_idempotent_a_client_connects_again_and_dropping_it_closes<R: Rt>() {
    let sim = cloud();
    let dev = keys(DEVICE_PRODUCT, DEVICE);
    let c = DeviceClient::<R>::new(device_options(&sim)).unwrap();
    w!(c.close()).unwrap();
    w!(c.connect()).unwrap();
    let mut ev = c.events();
    w!(c.close()).unwrap();
    w!(c.close()).unwrap();
    assert!(!c.connected());
    assert_eq!(w!(c.device_data().post_measurepoint(json!({"temp": 1.0}), o())), Err(Error::Closed));
    // The events stream ends with the session, its last event the close.
    let last = within(WAIT, "the end of the events", async {
        let mut last = None;
        while let Some(e) = ev.next().await {
            last = Some(e);
        }
        last
    })
    .await;
    assert_eq!(last, Some(ClientEvent::Close { cause: DisconnectCause::Closed }));
    // A new session after close.
    w!(c.connect()).unwrap();
    assert!(c.connected() && !c.reconnected());
    w!(c.device_data().post_measurepoint(json!({"temp": 2.0}), o())).unwrap();
    // Dropping every handle closes the connection.
    drop(c);
    until("the device offline", || !sim.is_online(&dev)).await;
}

pub async fn malformed_bytes_end_the_session_with_a_typed_cause_and_it_comes_back<R: Rt>() {
    let sim = cloud();
    let c = device::<R>(&sim).await;
    let mut ev = c.events();
    assert!(sim.send_malformed(&keys(DEVICE_PRODUCT, DEVICE)));
    next_event(&mut ev, "the decode error", |e| {
        matches!(e, ClientEvent::Close { cause: DisconnectCause::Decode(DecodeError::Malformed(_)) })
    })
    .await;
    next_event(&mut ev, "the reconnect", |e| matches!(e, ClientEvent::Connect { reconnect: true })).await;
    w!(c.device_data().post_measurepoint(json!({"temp": 1.0}), o())).unwrap();
}

// ----- a real broker -----

/// A peer that floods the device with QoS 1 commands and never reads what the device owes
/// it (PUBACKs, replies): the device stops reading once its write queue is full, so the
/// peer's writes block. Without that, the device would read for ever and queue without
/// bound.
pub async fn a_peer_that_sends_and_never_reads_is_read_no_further<R: Rt>() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = side(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).unwrap(); // the CONNECT (its content does not matter here)
        s.write_all(&[0x20, 0x02, 0x00, 0x00]).unwrap();
        s.set_write_timeout(Some(secs(2))).unwrap();
        let mut burst = bytes::BytesMut::new();
        let topic = format!("/sys/{DEVICE_PRODUCT}/{DEVICE}/thing/service/flood");
        for i in 0..1000u32 {
            let body = format!(r#"{{"id":"{i}","version":"1.0","method":"thing.service.flood","params":{{}}}}"#);
            let pkid = (i % 60_000 + 1) as u16;
            let qos = enos_proto::codec::QoS::AtLeastOnce;
            enos_proto::codec::encode_publish(&mut burst, &topic, body.as_bytes(), qos, pkid, false).unwrap();
        }
        let (mut written, limit) = (0usize, 256 << 20);
        while written < limit {
            match s.write(&burst) {
                Ok(n) => written += n,
                Err(_) => break, // blocked for 2 s: the device reads no more
            }
        }
        written
    });
    let c = DeviceClient::<R>::new(options(format!("tcp://{addr}"), DEVICE_PRODUCT, DEVICE, DEVICE_SECRET)).unwrap();
    let _ = w!(c.connect());
    until("the peer's writes to block", || peer.is_finished()).await;
    let written = peer.join().unwrap();
    assert!(written < 64 << 20, "the device read {written} bytes from a peer that takes nothing");
    drop(c);
}

async fn through_broker<R: Rt>(broker: &Mosquitto, tls: Option<(&pki::Ca, Option<&pki::CertPem>)>) {
    let sim = SimThread::start(Sim::builder().no_tcp()).unwrap();
    let addr = broker.addr();
    let _responder = sim.run(move |s| async move { s.responder(ResponderOptions::new(addr)).await }).await.unwrap();
    // The responder uses the plain listener; the device the TLS one when there is one.
    let url = match broker.tls_addr() {
        Some(a) => format!("ssl://localhost:{}", a.port()),
        None => format!("tcp://{}", broker.addr()),
    };
    let mut o = options(url, DEVICE_PRODUCT, DEVICE, DEVICE_SECRET);
    o.subscribe_command_topics = true;
    if let Some((ca, cert)) = tls {
        o.ca = Some(ca.pem.clone().into_bytes());
        if let Some(cert) = cert {
            o.cert = Some(cert.cert.clone().into_bytes());
            o.key = Some(cert.key.clone().into_bytes());
        }
    }
    let c = DeviceClient::<R>::new(o).unwrap();
    w!(c.connect()).unwrap();
    w!(c.device_data().update_tag([("via", "mosquitto")], RequestOptions::new())).unwrap();
    assert_eq!(w!(c.device_data().query_tag(["via"], RequestOptions::new())).unwrap().data["via"], "mosquitto");
    c.device_command().on_set_measurepoint(None, now(|_c, res| res.ok(json!({}))));
    // The client subscribed its command topics when it connected, before the tag calls
    // above: the broker took those subscriptions before it passed on the calls, whose
    // replies have come back. A command now reaches the device at the first attempt.
    let dev = keys(DEVICE_PRODUCT, DEVICE);
    let r = sim.run(move |s| async move { s.set_measurepoints(&dev, json!({"temp_setpoint": 1})).await }).await;
    assert_eq!(r.map(|r| r.code), Ok(200));
    w!(c.close()).unwrap();
}

pub async fn against_mosquitto_plain_tls_and_client_certificates<R: Rt>() {
    through_broker::<R>(&Mosquitto::start(None).unwrap(), None).await;
    let ca = pki::Ca::new("broker ca").unwrap();
    let server = ca.server_cert().unwrap();
    let files = |require| MosquittoTls {
        ca_pem: ca.pem.clone(),
        cert_pem: server.cert.clone(),
        key_pem: server.key.clone(),
        require_certificate: require,
    };
    through_broker::<R>(&Mosquitto::start(Some(files(false))).unwrap(), Some((&ca, None))).await;
    let broker = Mosquitto::start(Some(files(true))).unwrap();
    let client = ca.device_cert(DEVICE).unwrap();
    through_broker::<R>(&broker, Some((&ca, Some(&client)))).await;
    // Without a certificate the broker refuses the handshake.
    let mut o = options(
        format!("ssl://localhost:{}", broker.tls_addr().unwrap().port()),
        DEVICE_PRODUCT,
        DEVICE,
        DEVICE_SECRET,
    );
    o.ca = Some(ca.pem.clone().into_bytes());
    match w!(DeviceClient::<R>::new(o).unwrap().connect()) {
        Err(Error::Connect(DisconnectCause::Transport(
            CloseCause::Tls(_) | CloseCause::Eof | CloseCause::Io { .. },
        ))) => {}
        other => panic!("{other:?}"),
    }
}
