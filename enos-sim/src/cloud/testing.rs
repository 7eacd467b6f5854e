//! What the cloud's unit tests share: a cloud with a device and a gateway connected.

use enos_proto::DeviceKeys;

use super::Cloud;
use crate::registry::defaults::*;
use crate::registry::Registry;

pub(super) fn sub(i: usize) -> DeviceKeys {
    DeviceKeys::new(SUB_PRODUCT, format!("s{i}")).unwrap()
}

/// The device connected as connection 1, the gateway as 2 with sub-devices s0..s2 in
/// its topology (s3 exists outside it).
pub(super) fn connected(fast_paths: bool, history_limit: usize) -> Cloud {
    let mut registry = Registry::builtin();
    registry.history_limit = history_limit;
    let gateway = DeviceKeys::new(GATEWAY_PRODUCT, GATEWAY).unwrap();
    for i in 0..4 {
        registry.add_device(sub(i), Some(FLEET_SECRET.into())).unwrap();
        if i < 3 {
            registry.add_topology(&gateway, sub(i));
        }
    }
    let mut c = Cloud::new(registry);
    c.fast_paths = fast_paths;
    for (conn, pk, dk, secret) in
        [(1, DEVICE_PRODUCT, DEVICE, DEVICE_SECRET), (2, GATEWAY_PRODUCT, GATEWAY, GATEWAY_SECRET)]
    {
        c.connect_with_secret(conn, &DeviceKeys::new(pk, dk).unwrap(), &secret.into()).unwrap();
    }
    c
}
