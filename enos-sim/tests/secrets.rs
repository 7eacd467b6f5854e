//! The local cloud's own types that hold key material print only that they hold it.

use enos_proto::Secret;
use enos_sim::admin::AdminOptions;
use enos_sim::pki;
use enos_sim::registry::{defaults::*, Registry};

#[test]
fn keys_tokens_and_device_secrets_never_show_in_debug() {
    let ca = pki::Ca::new("debug ca").unwrap();
    let cert = ca.device_cert("demo_device").unwrap();
    let key_body = cert.key.lines().nth(1).unwrap().to_owned();
    let token = "f00dfeedf00dfeedf00dfeedf00dfeed";
    let options = AdminOptions { token: Secret::new(token), request_timeout: std::time::Duration::from_secs(1) };
    let registry = Registry::builtin();
    let device = registry.devices.get(&enos_proto::DeviceKeys::new(DEVICE_PRODUCT, DEVICE).unwrap()).unwrap();
    let shown = [
        format!("{ca:?}"),
        format!("{cert:?}"),
        format!("{options:?}"),
        format!("{registry:?}"),
        format!("{device:?}"),
        format!("{device:#?}"),
    ];
    for s in &shown {
        for secret in [key_body.as_str(), token, DEVICE_SECRET, DEVICE_PRODUCT_SECRET] {
            assert!(!s.contains(secret), "{s} shows a secret");
        }
        assert!(!s.contains(&format!("{:?}", &cert.key_der[10..20]).trim_matches(['[', ']']).to_owned()), "{s}");
    }
}
