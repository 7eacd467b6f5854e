//! The bounds the cloud keeps (spec §9 and the simulator's own). A leaf module: the cloud
//! and the registry both read it, and it reads neither.

/// Largest payload the cloud accepts (spec §9).
pub const MAX_PAYLOAD: usize = 512 * 1024;
/// Sub-devices online at once per gateway (spec §9): the default of
/// `Registry::max_sub_devices_online`.
pub const MAX_SUB_DEVICES_ONLINE: usize = 200;
/// Devices per register request (spec §9).
pub const MAX_REGISTER: usize = 1000;
/// Tags per device (a simulator bound: the spec sets none).
pub const MAX_TAGS: usize = 1000;
