//! Key material never shows in `Debug`: every public options and configuration type that
//! holds a secret, a private key or a PKCS#12 file prints that it holds one, not what.
#![cfg(feature = "tls")]

use enos_proto::options::ClientOptions;
use enos_proto::tls::{client_config, Identity, TlsTarget};
use enos_proto::{Credentials, SecureMode};
use rcgen::{CertificateParams, DnType, KeyPair};

const DEVICE_SECRET: &str = "dev1ce-secret-7f3a9c0e";
const PRODUCT_SECRET: &str = "pr0duct-secret-91b2d4f6";
const PASSPHRASE: &str = "p4ssphrase-c0de-5e8a";
/// Stands for a PKCS#12 file: its bytes must not print either.
const PFX: &[u8] = b"0\x82\x0b\xdcPKCS12-BODY-3c1f9a77e2d04b6a";

/// A self-signed certificate and its private key, as PEM.
fn identity_pem() -> (String, String) {
    let mut params = CertificateParams::new(vec!["demo_device".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "demo_device");
    let key = KeyPair::generate().unwrap();
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

/// Whether `debug` shows any part of `secret` 12 bytes long from its middle: as text, or
/// as the list of numbers that `Debug` prints for bytes.
fn shows(debug: &str, secret: &[u8]) -> bool {
    let at = secret.len() / 2;
    let window = &secret[at.saturating_sub(6)..(at + 6).min(secret.len())];
    let list = format!("{window:?}");
    debug.contains(&*String::from_utf8_lossy(window)) || debug.contains(list.trim_matches(['[', ']']))
}

fn assert_hides(what: &str, debug: &str, key_pem: &str) {
    for (name, secret) in [
        ("device secret", DEVICE_SECRET.as_bytes()),
        ("product secret", PRODUCT_SECRET.as_bytes()),
        ("passphrase", PASSPHRASE.as_bytes()),
        ("PKCS#12 file", PFX),
        ("private key", key_pem.as_bytes()),
    ] {
        assert!(!shows(debug, secret), "{what} shows its {name}: {debug}");
    }
}

#[test]
fn the_helper_sees_a_secret_as_text_and_as_bytes() {
    assert!(shows(&format!("{:?}", DEVICE_SECRET), DEVICE_SECRET.as_bytes()));
    assert!(shows(&format!("{:?}", PFX.to_vec()), PFX));
    assert!(!shows("ClientOptions { key: Some(..) }", PFX));
}

#[test]
fn options_and_configuration_print_no_secret_and_no_key() {
    let (cert, key) = identity_pem();
    let mut o = ClientOptions::new("ssl://127.0.0.1:18883", "demo_pk", "demo_device");
    o.device_secret = Some(DEVICE_SECRET.into());
    o.product_secret = Some(PRODUCT_SECRET.into());
    o.ca = Some(cert.clone().into_bytes());
    o.cert = Some(cert.clone().into_bytes());
    o.key = Some(key.clone().into_bytes());
    o.passphrase = Some(PASSPHRASE.into());
    let (config, transport) = o.build().unwrap();
    o.pfx = Some(PFX.to_vec());
    o.secure_mode = SecureMode::ProductSecret;
    assert_hides("ClientOptions", &format!("{o:?}"), &key);
    assert_hides("ClientOptions ({:#?})", &format!("{o:#?}"), &key);
    assert_hides("Config", &format!("{config:?}"), &key);
    assert_hides("Transport", &format!("{transport:?}"), &key);

    let identity = Identity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    assert_hides("Identity", &format!("{identity:?}"), &key);
    let target = TlsTarget::new(client_config(cert.as_bytes(), Some(&identity)).unwrap(), "localhost");
    assert_hides("TlsTarget", &format!("{target:?}"), &key);
    for c in [
        Credentials::DeviceSecret(DEVICE_SECRET.into()),
        Credentials::ProductSecret(PRODUCT_SECRET.into()),
        Credentials::Certificate { device_secret: Some(DEVICE_SECRET.into()) },
    ] {
        assert_hides("Credentials", &format!("{c:?}"), &key);
    }
}
