//! Authentication in all three modes, TLS with PEM and PKCS#12 identities, every refusal
//! typed, reconnects, and a real mosquitto (plain, TLS, TLS with client certificates)
//! with the simulator in responder mode.

use std::time::Duration;

use enos_proto::codec::ConnectReturnCode;
use enos_sim::mosquitto::{Mosquitto, MosquittoTls};
use enos_sim::registry::defaults::*;
use enos_sim::responder::ResponderOptions;
use enos_sim::{pki, Sim};
use enos_transport_tokio::proto::{CloseCause, ConnectRefusal};
use enos_transport_tokio::{
    ClientEvent, ClientOptions, DeviceClient, DeviceKeys, DisconnectCause, Error, RequestError, RequestOptions,
    SecureMode,
};
use serde_json::json;

fn keys(pk: &str, dk: &str) -> DeviceKeys {
    DeviceKeys::new(pk, dk).unwrap()
}

fn opts(url: String, secret: &str) -> ClientOptions {
    let mut o = ClientOptions::new(url, DEVICE_PRODUCT, DEVICE);
    o.device_secret = Some(secret.into());
    o.reconnect_period = 1;
    o
}

#[tokio::test]
async fn secure_mode_2_and_wrong_secret() {
    let sim = Sim::builder().start().await.unwrap();
    let c = DeviceClient::new(opts(sim.tcp_url().unwrap(), DEVICE_SECRET)).unwrap();
    assert_eq!(c.connect().await.unwrap().unwrap().expose(), DEVICE_SECRET);
    assert!(matches!(c.connect().await, Err(Error::AlreadyStarted)));
    let bad = DeviceClient::new(opts(sim.tcp_url().unwrap(), "wrong")).unwrap();
    assert_eq!(bad.connect().await, Err(Error::Connect(DisconnectCause::Refused(ConnectRefusal::NotAuthorized))));
    assert!(!bad.connected());
}

#[tokio::test]
async fn dynamic_activation_returns_the_issued_secret() {
    let sim = Sim::builder().start().await.unwrap();
    let mut o = ClientOptions::new(sim.tcp_url().unwrap(), DEVICE_PRODUCT, ACTIVATING_DEVICE);
    o.secure_mode = SecureMode::ProductSecret;
    o.product_secret = Some(DEVICE_PRODUCT_SECRET.into());
    let c = DeviceClient::new(o).unwrap();
    let secret = c.connect().await.unwrap().unwrap();
    let dev = keys(DEVICE_PRODUCT, ACTIVATING_DEVICE);
    assert_eq!(sim.device(&dev).unwrap().secret.unwrap().expose(), secret.expose());
    c.device_data().post_measurepoint(json!({"temp": 1.0}), RequestOptions::new()).await.unwrap();
    // A reconnect uses mode 2 with the issued secret.
    let mut ev = c.events();
    sim.cut(&dev);
    loop {
        if let Some(ClientEvent::Connect { reconnect: true }) = ev.recv().await {
            break;
        }
    }
    assert!(c.reconnected());
    c.device_data().post_measurepoint(json!({"temp": 2.0}), RequestOptions::new()).await.unwrap();
}

struct Pki {
    ca: pki::Ca,
    device_ca: pki::Ca,
}

fn tls_sim_pki() -> Pki {
    Pki { ca: pki::Ca::new("cloud ca").unwrap(), device_ca: pki::Ca::new("device ca").unwrap() }
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

#[tokio::test]
async fn mutual_tls_with_pem_and_pkcs12_and_every_refusal() {
    let p = tls_sim_pki();
    let server = p.ca.server_cert().unwrap();
    let sim = Sim::builder()
        .no_tcp()
        .tls("127.0.0.1:0".parse().unwrap(), pki::server_tls(&server, Some(&p.device_ca)).unwrap())
        .start()
        .await
        .unwrap();
    let url = sim.tls_url().unwrap();
    let cert = p.device_ca.device_cert(DEVICE).unwrap();
    // PEM identity, certificate mode with the device secret.
    let mut o = opts(url.clone(), DEVICE_SECRET);
    o.secure_mode = SecureMode::Certificate;
    o.ca = Some(p.ca.pem.clone().into_bytes());
    o.cert = Some(cert.cert.clone().into_bytes());
    o.key = Some(cert.key.clone().into_bytes());
    let c = DeviceClient::new(o.clone()).unwrap();
    c.connect().await.unwrap();
    c.device_data().post_measurepoint(json!({"temp": 1.0}), RequestOptions::new()).await.unwrap();
    c.close().await.unwrap();
    // PKCS#12 identity with a passphrase, certificate only (no device secret).
    let mut o12 = o.clone();
    o12.cert = None;
    o12.key = None;
    o12.device_secret = None;
    o12.pfx = Some(p12(&cert, "pass phrase"));
    o12.passphrase = Some("pass phrase".into());
    let c = DeviceClient::new(o12.clone()).unwrap();
    assert!(c.connect().await.unwrap().is_none());
    c.device_data().post_measurepoint(json!({"temp": 2.0}), RequestOptions::new()).await.unwrap();
    c.close().await.unwrap();
    // A wrong passphrase is an options error naming pfx.
    o12.passphrase = Some("nope".into());
    assert!(matches!(DeviceClient::new(o12), Err(Error::Options(e)) if e.field == "pfx"));

    // Refusals, each typed: a CA that does not sign the server, a foreign client
    // certificate, an expired one.
    let tls_fail = |e: Result<Option<enos_transport_tokio::Secret>, Error>| match e {
        Err(Error::Connect(DisconnectCause::Transport(CloseCause::Tls(m)))) => m,
        Err(Error::Connect(DisconnectCause::Transport(c))) => format!("{c:?}"),
        other => panic!("not a transport refusal: {other:?}"),
    };
    let mut wrong_ca = o.clone();
    wrong_ca.ca = Some(pki::Ca::new("other").unwrap().pem.into_bytes());
    let m = tls_fail(DeviceClient::new(wrong_ca).unwrap().connect().await);
    assert!(m.contains("UnknownIssuer") || m.contains("unknown"), "{m}");
    let foreign = pki::Ca::new("foreign").unwrap().device_cert(DEVICE).unwrap();
    let mut f = o.clone();
    f.cert = Some(foreign.cert.into_bytes());
    f.key = Some(foreign.key.into_bytes());
    tls_fail(DeviceClient::new(f).unwrap().connect().await);
    let expired = p.device_ca.expired_device_cert(DEVICE).unwrap();
    let mut x = o.clone();
    x.cert = Some(expired.cert.into_bytes());
    x.key = Some(expired.key.into_bytes());
    tls_fail(DeviceClient::new(x).unwrap().connect().await);
    // Server authentication only, secure mode 2, against a listener without client CA.
    let sim2 = Sim::builder()
        .no_tcp()
        .tls("127.0.0.1:0".parse().unwrap(), pki::server_tls(&server, None).unwrap())
        .start()
        .await
        .unwrap();
    let mut s = opts(sim2.tls_url().unwrap(), DEVICE_SECRET);
    s.ca = Some(p.ca.pem.clone().into_bytes());
    DeviceClient::new(s).unwrap().connect().await.unwrap();
}

#[tokio::test]
async fn reconnect_completes_pending_work_and_commands_still_arrive() {
    let sim = Sim::builder().start().await.unwrap();
    let c = DeviceClient::new(opts(sim.tcp_url().unwrap(), DEVICE_SECRET)).unwrap();
    c.connect().await.unwrap();
    c.device_command().on_invoke_service("*", None, |_c, res| async move { res.ok(json!({"ok": 1})) });
    let dev = keys(DEVICE_PRODUCT, DEVICE);
    // The link is cut when the post arrives (the 2nd packet after CONNECT, after the
    // reply topic's SUBSCRIBE): unacknowledged, it is retransmitted and completes.
    sim.cut_after(&dev, 2);
    let mut ev = c.events();
    let c2 = c.clone();
    let post = tokio::spawn(async move {
        c2.device_data()
            .post_measurepoint(json!({"temp": 3.0}), RequestOptions::new().timeout(Duration::from_secs(10)))
            .await
    });
    let mut saw = (false, false);
    while !(saw.0 && saw.1) {
        match tokio::time::timeout(Duration::from_secs(10), ev.recv()).await.unwrap() {
            Some(ClientEvent::Close { .. }) => saw.0 = true,
            Some(ClientEvent::Connect { reconnect: true }) => saw.1 = true,
            _ => {}
        }
    }
    assert!(c.reconnected() && c.connected());
    let r = c.device_data().post_measurepoint(json!({"temp": 4.0}), RequestOptions::new()).await.unwrap();
    assert_eq!(r.code, 200);
    let _ = post.await.unwrap();
    assert_eq!(sim.invoke_service(&dev, "anything", json!({})).await.unwrap().data, json!({"ok": 1}));
    // Refused reconnects are typed events, then it gets back in.
    sim.refuse_next_connects(1, ConnectReturnCode::ServiceUnavailable);
    sim.cut(&dev);
    let mut refused = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ev.recv()).await.unwrap() {
            Some(ClientEvent::Close { cause: DisconnectCause::Refused(ConnectRefusal::ServerUnavailable) }) => {
                refused = true
            }
            Some(ClientEvent::Connect { reconnect: true }) if refused => break,
            _ => {}
        }
    }
}

async fn through_broker(broker: &Mosquitto, tls: Option<(&pki::Ca, Option<&pki::CertPem>)>) {
    let sim = Sim::builder().no_tcp().start().await.unwrap();
    let _r = sim.responder(ResponderOptions::new(broker.addr())).await.unwrap();
    // The responder uses the plain listener; the device the TLS one when there is one.
    let url = match broker.tls_addr() {
        Some(a) => format!("ssl://localhost:{}", a.port()),
        None => format!("tcp://{}", broker.addr()),
    };
    let mut o = opts(url, DEVICE_SECRET);
    o.subscribe_command_topics = true;
    if let Some((ca, cert)) = tls {
        o.ca = Some(ca.pem.clone().into_bytes());
        if let Some(cert) = cert {
            o.cert = Some(cert.cert.clone().into_bytes());
            o.key = Some(cert.key.clone().into_bytes());
        }
    }
    let c = DeviceClient::new(o).unwrap();
    c.connect().await.unwrap();
    c.device_data().update_tag([("via", "mosquitto")], RequestOptions::new()).await.unwrap();
    assert_eq!(c.device_data().query_tag(["via"], RequestOptions::new()).await.unwrap().data["via"], "mosquitto");
    c.device_command().on_set_measurepoint(None, |_c, res| async move { res.ok(json!({})) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let dev = keys(DEVICE_PRODUCT, DEVICE);
    assert_eq!(sim.set_measurepoints(&dev, json!({"temp_setpoint": 1})).await.unwrap().code, 200);
    c.close().await.unwrap();
}

#[tokio::test]
async fn against_mosquitto_plain_tls_and_client_certificates() {
    through_broker(&Mosquitto::start(None).unwrap(), None).await;
    let ca = pki::Ca::new("broker ca").unwrap();
    let server = ca.server_cert().unwrap();
    let files = |require| MosquittoTls {
        ca_pem: ca.pem.clone(),
        cert_pem: server.cert.clone(),
        key_pem: server.key.clone(),
        require_certificate: require,
    };
    through_broker(&Mosquitto::start(Some(files(false))).unwrap(), Some((&ca, None))).await;
    let broker = Mosquitto::start(Some(files(true))).unwrap();
    let client = ca.device_cert(DEVICE).unwrap();
    through_broker(&broker, Some((&ca, Some(&client)))).await;
    let mut o = opts(format!("ssl://localhost:{}", broker.tls_addr().unwrap().port()), DEVICE_SECRET);
    o.ca = Some(ca.pem.clone().into_bytes());
    // Without a certificate the broker refuses the handshake.
    o.cert = None;
    o.key = None;
    assert!(matches!(
        DeviceClient::new(o).unwrap().connect().await,
        Err(Error::Connect(DisconnectCause::Transport(_)))
    ));
}

#[tokio::test]
async fn lifecycle_close_is_idempotent_reconnect_after_close_and_drop_closes() {
    let sim = Sim::builder().start().await.unwrap();
    let dev = keys(DEVICE_PRODUCT, DEVICE);
    let c = DeviceClient::new(opts(sim.tcp_url().unwrap(), DEVICE_SECRET)).unwrap();
    c.close().await.unwrap();
    c.connect().await.unwrap();
    let mut ev = c.events();
    c.close().await.unwrap();
    c.close().await.unwrap();
    assert!(!c.connected());
    assert_eq!(
        c.device_data().post_measurepoint(json!({"temp": 1.0}), RequestOptions::new()).await,
        Err(Error::Closed)
    );
    // The events stream ends with the session.
    let mut last = None;
    while let Some(e) = ev.recv().await {
        last = Some(e);
    }
    assert!(matches!(last, Some(ClientEvent::Close { cause: DisconnectCause::Closed })));
    // A new session after close.
    c.connect().await.unwrap();
    assert!(c.connected() && !c.reconnected());
    c.device_data().post_measurepoint(json!({"temp": 2.0}), RequestOptions::new()).await.unwrap();
    // Dropping every handle closes the connection.
    drop(c);
    for _ in 0..100 {
        if !sim.is_online(&dev) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!sim.is_online(&dev));
}

#[tokio::test]
async fn after_activation_a_new_connect_uses_the_issued_secret() {
    let sim = Sim::builder().start().await.unwrap();
    let mut o = ClientOptions::new(sim.tcp_url().unwrap(), DEVICE_PRODUCT, ACTIVATING_DEVICE);
    o.secure_mode = SecureMode::ProductSecret;
    o.product_secret = Some(DEVICE_PRODUCT_SECRET.into());
    let c = DeviceClient::new(o).unwrap();
    let issued = c.connect().await.unwrap().unwrap();
    c.close().await.unwrap();
    // The cloud refuses a second activation; the client connects in mode 2 instead.
    assert_eq!(c.connect().await.unwrap().unwrap().expose(), issued.expose());
}

#[tokio::test]
async fn requests_time_out_each_at_its_own_deadline() {
    let sim = Sim::builder().start().await.unwrap();
    let c = DeviceClient::new(opts(sim.tcp_url().unwrap(), DEVICE_SECRET)).unwrap();
    c.connect().await.unwrap();
    sim.drop_replies(2);
    let started = tokio::time::Instant::now();
    // A long request first, then a shorter one: the shorter deadline is the earlier one.
    let data = c.device_data();
    let long = data.post_measurepoint(json!({"temp": 1.0}), RequestOptions::new().timeout(Duration::from_secs(3)));
    let short = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = c
            .device_data()
            .post_measurepoint(json!({"temp": 2.0}), RequestOptions::new().timeout(Duration::from_millis(300)))
            .await;
        (r, started.elapsed())
    };
    let (long, (short, short_at)) = tokio::join!(long, short);
    let long_at = started.elapsed();
    assert!(matches!(short, Err(Error::Request(RequestError::TimedOut(_)))), "{short:?}");
    assert!(matches!(long, Err(Error::Request(RequestError::TimedOut(_)))), "{long:?}");
    assert!(short_at >= Duration::from_millis(400) && short_at < Duration::from_millis(2500), "{short_at:?}");
    assert!(long_at >= Duration::from_secs(3), "{long_at:?}");
    // The session goes on.
    c.device_data().post_measurepoint(json!({"temp": 3.0}), RequestOptions::new()).await.unwrap();
}
