//! The sans-IO TLS layer: handshakes in memory, mutual TLS with PEM and PKCS#12
//! identities, and every refusal path.
#![cfg(feature = "tls")]

use enos_proto::options::ClientOptions;
use enos_proto::tls::{client_config, dangerous, server_config, Identity, TlsError, TlsLayer};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca { params, key, pem }
}

/// A leaf certificate for `names`, signed by `ca`: (cert PEM, key PEM).
fn leaf(ca: &Ca, names: &[&str], expired: bool) -> (String, String) {
    let mut params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    if expired {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Runs a handshake between two layers in memory, then sends `hello` both ways.
fn handshake(client: &mut TlsLayer, server: &mut TlsLayer) -> Result<(), TlsError> {
    let mut plain = Vec::new();
    for _ in 0..20 {
        let mut c2s = Vec::new();
        client.take_ciphertext(&mut c2s);
        server.read_ciphertext(&c2s, &mut plain)?;
        let mut s2c = Vec::new();
        server.take_ciphertext(&mut s2c);
        client.read_ciphertext(&s2c, &mut plain)?;
        if !client.is_handshaking() && !server.is_handshaking() && !client.wants_write() && !server.wants_write() {
            break;
        }
    }
    client.write_plaintext(b"hello from the device")?;
    let mut c2s = Vec::new();
    client.take_ciphertext(&mut c2s);
    // Delivered one byte at a time: the layer reassembles records.
    let mut got = Vec::new();
    for b in &c2s {
        server.read_ciphertext(std::slice::from_ref(b), &mut got)?;
    }
    assert_eq!(got, b"hello from the device");
    server.write_plaintext(b"hello from the cloud")?;
    let mut s2c = Vec::new();
    server.take_ciphertext(&mut s2c);
    let mut got = Vec::new();
    client.read_ciphertext(&s2c, &mut got)?;
    assert_eq!(got, b"hello from the cloud");
    Ok(())
}

#[test]
fn server_authentication_and_data_both_ways() {
    let ca = ca("test ca");
    let (cert, key) = leaf(&ca, &["localhost", "127.0.0.1"], false);
    let server = server_config(&Identity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap(), None).unwrap();
    for name in ["localhost", "127.0.0.1"] {
        let mut c = TlsLayer::client(client_config(ca.pem.as_bytes(), None).unwrap(), name).unwrap();
        let mut s = TlsLayer::server(server.clone()).unwrap();
        handshake(&mut c, &mut s).unwrap();
    }
}

#[test]
fn wrong_ca_or_wrong_name_is_refused() {
    let ca1 = ca("ca one");
    let ca2 = ca("ca two");
    let (cert, key) = leaf(&ca1, &["localhost"], false);
    let server = server_config(&Identity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap(), None).unwrap();
    let mut c = TlsLayer::client(client_config(ca2.pem.as_bytes(), None).unwrap(), "localhost").unwrap();
    let mut s = TlsLayer::server(server.clone()).unwrap();
    assert!(matches!(handshake(&mut c, &mut s), Err(TlsError::Session(m)) if m.contains("UnknownIssuer")));
    let mut c = TlsLayer::client(client_config(ca1.pem.as_bytes(), None).unwrap(), "example.org").unwrap();
    let mut s = TlsLayer::server(server).unwrap();
    assert!(
        matches!(handshake(&mut c, &mut s), Err(TlsError::Session(m)) if m.to_lowercase().contains("not valid for name"))
    );
}

#[test]
fn mutual_tls_with_pem_identity_and_refusals() {
    let ca = ca("device ca");
    let foreign = ca_foreign();
    let (scert, skey) = leaf(&ca, &["localhost"], false);
    let server =
        server_config(&Identity::from_pem(scert.as_bytes(), skey.as_bytes()).unwrap(), Some(ca.pem.as_bytes()))
            .unwrap();
    let (ccert, ckey) = leaf(&ca, &["dev_001"], false);
    let id = Identity::from_pem(ccert.as_bytes(), ckey.as_bytes()).unwrap();
    let mut c = TlsLayer::client(client_config(ca.pem.as_bytes(), Some(&id)).unwrap(), "localhost").unwrap();
    let mut s = TlsLayer::server(server.clone()).unwrap();
    handshake(&mut c, &mut s).unwrap();
    assert_eq!(s.peer_certificates().map(<[_]>::len), Some(1));

    // No client certificate.
    let mut c = TlsLayer::client(client_config(ca.pem.as_bytes(), None).unwrap(), "localhost").unwrap();
    let mut s = TlsLayer::server(server.clone()).unwrap();
    let e = handshake(&mut c, &mut s).unwrap_err();
    assert!(e.to_string().contains("peer sent no certificates"), "{e}");
    // A certificate from a foreign CA.
    let (fcert, fkey) = leaf(&foreign, &["dev_001"], false);
    let fid = Identity::from_pem(fcert.as_bytes(), fkey.as_bytes()).unwrap();
    let mut c = TlsLayer::client(client_config(ca.pem.as_bytes(), Some(&fid)).unwrap(), "localhost").unwrap();
    let mut s = TlsLayer::server(server.clone()).unwrap();
    let e = handshake(&mut c, &mut s).unwrap_err();
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    // An expired certificate from the right CA.
    let (ecert, ekey) = leaf(&ca, &["dev_001"], true);
    let eid = Identity::from_pem(ecert.as_bytes(), ekey.as_bytes()).unwrap();
    let mut c = TlsLayer::client(client_config(ca.pem.as_bytes(), Some(&eid)).unwrap(), "localhost").unwrap();
    let mut s = TlsLayer::server(server).unwrap();
    let e = handshake(&mut c, &mut s).unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");
}

fn ca_foreign() -> Ca {
    ca("foreign ca")
}

#[test]
fn bad_pem_is_a_typed_error() {
    assert!(matches!(Identity::from_pem(b"nothing", b"nothing"), Err(TlsError::Pem { what: "certificate", .. })));
    assert!(matches!(client_config(b"", None), Err(TlsError::Pem { what: "CA", .. })));
    let ca = ca("x");
    let (cert, _) = leaf(&ca, &["localhost"], false);
    let other = KeyPair::generate().unwrap().serialize_pem();
    let id = Identity::from_pem(cert.as_bytes(), other.as_bytes()).unwrap();
    assert!(matches!(server_config(&id, None), Err(TlsError::Config(_))), "key does not match the certificate");
    assert!(matches!(
        TlsLayer::client(client_config(ca.pem.as_bytes(), None).unwrap(), "not a name!"),
        Err(TlsError::ServerName(_))
    ));
}

#[test]
fn identity_debug_shows_no_key() {
    let ca = ca("x");
    let (cert, key) = leaf(&ca, &["localhost"], false);
    let id = Identity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let text = format!("{id:?}");
    assert!(!text.contains("PRIVATE") && !text.contains(&key[40..80]), "{text}");
}

#[cfg(feature = "pkcs12")]
#[test]
fn mutual_tls_with_pkcs12_identity_and_passphrase() {
    use enos_proto::Secret;
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
    let ca = ca("device ca");
    let (scert, skey) = leaf(&ca, &["localhost"], false);
    let server =
        server_config(&Identity::from_pem(scert.as_bytes(), skey.as_bytes()).unwrap(), Some(ca.pem.as_bytes()))
            .unwrap();
    let (ccert, ckey) = leaf(&ca, &["dev_001"], false);
    let pem_id = Identity::from_pem(ccert.as_bytes(), ckey.as_bytes()).unwrap();
    let key_der = rcgen::KeyPair::from_pem(&ckey).unwrap().serialize_der();
    let cert = Certificate::from_der(pem_id.certificates()[0].as_ref()).unwrap();
    let chain = PrivateKeyChain::new(b"id".to_vec(), PrivateKey::from_der(&key_der).unwrap(), vec![cert]);
    let mut store = KeyStore::new();
    store.add_entry("device", KeyStoreEntry::PrivateKeyChain(chain));
    let p12 = store.writer("correct horse").write().unwrap();

    let id = Identity::from_pkcs12(&p12, &Secret::new("correct horse")).unwrap();
    let mut c = TlsLayer::client(client_config(ca.pem.as_bytes(), Some(&id)).unwrap(), "localhost").unwrap();
    let mut s = TlsLayer::server(server).unwrap();
    handshake(&mut c, &mut s).unwrap();

    let e = Identity::from_pkcs12(&p12, &Secret::new("Tr0ub4dor&3")).unwrap_err();
    assert!(matches!(e, TlsError::Pkcs12(_)));
    let shown = format!("{e} {e:?}");
    assert!(shown.contains("PKCS#12") && !shown.contains("Tr0ub4dor"), "{shown}");
}

#[test]
fn large_writes_are_not_refused() {
    let ca = ca("x");
    let (cert, key) = leaf(&ca, &["localhost"], false);
    let server = server_config(&Identity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap(), None).unwrap();
    let mut c = TlsLayer::client(client_config(ca.pem.as_bytes(), None).unwrap(), "localhost").unwrap();
    let mut s = TlsLayer::server(server).unwrap();
    handshake(&mut c, &mut s).unwrap();
    let big = vec![7u8; 300 * 1024];
    c.write_plaintext(&big).unwrap();
    let mut wire = Vec::new();
    c.take_ciphertext(&mut wire);
    let mut got = Vec::new();
    s.read_ciphertext(&wire, &mut got).unwrap();
    assert_eq!(got.len(), big.len());
}

/// A `Client` with `Config::tls` against a server session in memory: the core runs the
/// handshake, seals what it sends and opens what it reads; the driver moves ciphertext.
mod in_the_core {
    use super::*;
    use bytes::BytesMut;
    use enos_proto::codec::{self, ConnAck, ConnectReturnCode, Decoder, Packet};
    use enos_proto::tls::TlsTarget;
    use enos_proto::{
        Client, CloseCause, Config, Credentials, DeviceKeys, DisconnectCause, Event, Now, Output, StartError,
    };

    struct Run {
        /// Ciphertext the client transmitted, not yet given to the server.
        to_server: Vec<u8>,
        events: Vec<Event>,
        /// `Transmit` (true) and `CloseTransport` (false) in the order they came.
        order: Vec<bool>,
    }

    fn drain(c: &mut Client, run: &mut Run) {
        loop {
            match c.poll_output() {
                Output::Transmit(b) => {
                    run.to_server.extend_from_slice(&b);
                    run.order.push(true);
                }
                Output::CloseTransport => run.order.push(false),
                Output::OpenTransport => {}
                Output::Event(e) => run.events.push(e),
                Output::Wait(_) => return,
            }
        }
    }

    fn setup(client_ca: &Ca, server_ca: &Ca) -> (Client, TlsLayer, Now, Run) {
        let (cert, key) = leaf(server_ca, &["localhost"], false);
        let server = server_config(&Identity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap(), None).unwrap();
        let mut config = Config::new(
            DeviceKeys::new("pk1234ab", "dev_001").unwrap(),
            Credentials::DeviceSecret("DS0123456789abcdefgh".into()),
        );
        config.tls = Some(TlsTarget::new(client_config(client_ca.pem.as_bytes(), None).unwrap(), "localhost"));
        let now = Now::system();
        let mut client = Client::new(config, now).unwrap();
        let mut run = Run { to_server: Vec::new(), events: Vec::new(), order: Vec::new() };
        drain(&mut client, &mut run);
        client.handle_connected(now);
        drain(&mut client, &mut run);
        (client, TlsLayer::server(server).unwrap(), now, run)
    }

    /// Moves ciphertext both ways until neither side has anything to say; returns the
    /// MQTT packets the server read.
    fn exchange(c: &mut Client, s: &mut TlsLayer, now: Now, run: &mut Run, dec: &mut Decoder) -> Vec<Packet> {
        let mut packets = Vec::new();
        for _ in 0..20 {
            let mut plain = Vec::new();
            let sent = std::mem::take(&mut run.to_server);
            if s.read_ciphertext(&sent, &mut plain).is_err() {
                break;
            }
            dec.feed(&plain);
            while let Ok(Some(p)) = dec.next_packet() {
                if matches!(p, Packet::Connect(_)) {
                    let mut b = BytesMut::new();
                    codec::encode_packet(&mut b, &Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)))
                        .unwrap();
                    s.write_plaintext(&b).unwrap();
                }
                packets.push(p);
            }
            let mut back = Vec::new();
            s.take_ciphertext(&mut back);
            if back.is_empty() && sent.is_empty() {
                break;
            }
            c.handle_input(now, &back);
            drain(c, run);
        }
        packets
    }

    #[test]
    fn the_handshake_runs_in_the_core_and_the_connect_follows_it() {
        let ca = ca("cloud ca");
        let (mut c, mut s, now, mut run) = setup(&ca, &ca);
        // The first bytes out are a TLS ClientHello, not an MQTT CONNECT.
        assert_eq!(run.to_server.first(), Some(&0x16), "a TLS handshake record");
        assert!(!c.is_connected());
        let mut dec = Decoder::new(1 << 20);
        let packets = exchange(&mut c, &mut s, now, &mut run, &mut dec);
        assert!(matches!(packets.first(), Some(Packet::Connect(_))), "{packets:?}");
        assert!(c.is_connected());
        assert_eq!(run.events, vec![Event::Connected { reconnect: false }, Event::Started(Ok(()))]);
        // close(): the DISCONNECT and a close_notify, sealed, before the transport closes.
        run.order.clear();
        c.close(now);
        drain(&mut c, &mut run);
        assert_eq!(run.order, [true, false]);
        let mut plain = Vec::new();
        s.read_ciphertext(&run.to_server, &mut plain).unwrap();
        dec.feed(&plain);
        assert_eq!(dec.next_packet().unwrap(), Some(Packet::Disconnect));
        assert!(s.peer_has_closed());
    }

    #[test]
    fn an_untrusted_server_ends_the_session_with_a_tls_cause_and_an_alert_goes_out_first() {
        let (trusted, other) = (ca("trusted"), ca("other"));
        let (mut c, mut s, now, mut run) = setup(&trusted, &other);
        run.order.clear();
        let mut dec = Decoder::new(1 << 20);
        let packets = exchange(&mut c, &mut s, now, &mut run, &mut dec);
        assert!(packets.is_empty(), "no CONNECT to an untrusted server: {packets:?}");
        // The first connection of a start: the start fails with it.
        match run.events.as_slice() {
            [Event::Disconnected { cause: DisconnectCause::Transport(CloseCause::Tls(m)), .. }, Event::Started(Err(StartError::Failed(DisconnectCause::Transport(CloseCause::Tls(_)))))] =>
            {
                assert!(m.contains("UnknownIssuer"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        // The alert for the server, then the close.
        assert_eq!(run.order, [true, false]);
        assert!(!c.is_connected());
    }

    #[test]
    fn a_close_notify_from_the_server_is_the_end_of_the_stream() {
        let ca = ca("cloud ca");
        let (mut c, mut s, now, mut run) = setup(&ca, &ca);
        let mut dec = Decoder::new(1 << 20);
        exchange(&mut c, &mut s, now, &mut run, &mut dec);
        assert!(c.is_connected());
        s.send_close_notify();
        let mut back = Vec::new();
        s.take_ciphertext(&mut back);
        c.handle_input(now, &back);
        drain(&mut c, &mut run);
        assert!(matches!(
            run.events.last(),
            Some(Event::Disconnected { cause: DisconnectCause::Transport(CloseCause::Eof), .. })
        ));
    }

    #[test]
    fn a_server_name_that_is_no_name_is_a_config_error() {
        let ca = ca("x");
        let mut config = Config::new(DeviceKeys::new("pk", "dk").unwrap(), Credentials::DeviceSecret("s".into()));
        config.tls = Some(TlsTarget::new(client_config(ca.pem.as_bytes(), None).unwrap(), "not a name!"));
        assert_eq!(config.validate().unwrap_err().field, "server_name");
    }
}

#[test]
fn accepting_any_server_name_still_verifies_the_chain_and_its_dates() {
    let ca1 = ca("edge ca");
    let ca2 = ca("another ca");
    let (cert, key) = leaf(&ca1, &["localhost"], false);
    let server = server_config(&Identity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap(), None).unwrap();
    let any_name = |ca: &Ca| dangerous::client_config_accepting_any_server_name(ca.pem.as_bytes(), None).unwrap();
    // An edge broker reached by an address its certificate does not name: accepted.
    let mut c = TlsLayer::client(any_name(&ca1), "10.0.0.7").unwrap();
    let mut s = TlsLayer::server(server.clone()).unwrap();
    handshake(&mut c, &mut s).unwrap();
    // A certificate of another CA: refused as ever.
    let mut c = TlsLayer::client(any_name(&ca2), "10.0.0.7").unwrap();
    let mut s = TlsLayer::server(server).unwrap();
    assert!(matches!(handshake(&mut c, &mut s), Err(TlsError::Session(m)) if m.contains("UnknownIssuer")));
    // An expired one: refused.
    let (cert, key) = leaf(&ca1, &["localhost"], true);
    let expired = server_config(&Identity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap(), None).unwrap();
    let mut c = TlsLayer::client(any_name(&ca1), "localhost").unwrap();
    let mut s = TlsLayer::server(expired).unwrap();
    let r = handshake(&mut c, &mut s);
    assert!(matches!(&r, Err(TlsError::Session(m)) if m.to_lowercase().contains("expired")), "{r:?}");
}

#[test]
fn client_options_check_the_server_name_unless_told_otherwise() {
    let ca1 = ca("edge ca");
    let (cert, key) = leaf(&ca1, &["edge.local"], false);
    let server = server_config(&Identity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap(), None).unwrap();
    let mut o = ClientOptions::new("ssl://10.0.0.7:18883", "pk", "dk");
    o.device_secret = Some("secret".into());
    o.ca = Some(ca1.pem.clone().into_bytes());
    let session = |o: &ClientOptions| {
        let target = o.build().unwrap().0.tls.unwrap();
        assert_eq!(target.server_name, "10.0.0.7");
        let mut c = TlsLayer::client(target.config.clone(), &target.server_name).unwrap();
        let mut s = TlsLayer::server(server.clone()).unwrap();
        handshake(&mut c, &mut s)
    };
    assert!(matches!(session(&o), Err(TlsError::Session(m)) if m.to_lowercase().contains("not valid for name")));
    o.dangerous_accept_any_server_name = true;
    session(&o).unwrap();
    assert!(format!("{o:?}").contains("dangerous_accept_any_server_name: true"));
}
