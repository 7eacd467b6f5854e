//! The sans-IO TLS layer: handshakes in memory, mutual TLS with PEM and PKCS#12
//! identities, and every refusal path.
#![cfg(feature = "tls")]

use enos_proto::tls::{client_config, server_config, Identity, TlsError, TlsLayer};
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
    assert!(handshake(&mut c, &mut s).is_err());
    // A certificate from a foreign CA.
    let (fcert, fkey) = leaf(&foreign, &["dev_001"], false);
    let fid = Identity::from_pem(fcert.as_bytes(), fkey.as_bytes()).unwrap();
    let mut c = TlsLayer::client(client_config(ca.pem.as_bytes(), Some(&fid)).unwrap(), "localhost").unwrap();
    let mut s = TlsLayer::server(server.clone()).unwrap();
    assert!(handshake(&mut c, &mut s).is_err());
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

    let e = Identity::from_pkcs12(&p12, &Secret::new("wrong")).unwrap_err();
    assert!(matches!(e, TlsError::Pkcs12(_)));
    assert!(!e.to_string().contains("wrong"));
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
