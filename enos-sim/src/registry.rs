//! The simulated cloud's registry: products (with their thing model) and devices, loaded
//! from a JSON file or built in.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;

use enos_proto::ops::Firmware;
use enos_proto::{DeviceKeys, Secret};
use serde::Deserialize;
use serde_json::Value;

/// The type of a thing-model value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// A JSON integer.
    Int,
    /// Any JSON number.
    #[serde(alias = "double")]
    Float,
    /// A JSON string.
    #[serde(alias = "date")]
    String,
    /// A boolean (or 0 / 1).
    Bool,
    /// An integer from an enumeration.
    Enum,
    /// A JSON array.
    Array,
    /// A JSON object.
    #[serde(alias = "object")]
    Struct,
    /// Anything.
    Any,
}

impl DataType {
    /// Whether `v` has this type.
    pub fn accepts(self, v: &Value) -> bool {
        match self {
            DataType::Int | DataType::Enum => v.is_i64() || v.is_u64(),
            DataType::Float => v.is_number(),
            DataType::String => v.is_string(),
            DataType::Bool => v.is_boolean() || matches!(v.as_u64(), Some(0 | 1)),
            DataType::Array => v.is_array(),
            DataType::Struct => v.is_object(),
            DataType::Any => true,
        }
    }

    fn label(self) -> &'static str {
        match self {
            DataType::Int => "INT",
            DataType::Float => "FLOAT",
            DataType::String => "STRING",
            DataType::Bool => "BOOL",
            DataType::Enum => "ENUM",
            DataType::Array => "ARRAY",
            DataType::Struct => "STRUCT",
            DataType::Any => "ANY",
        }
    }
}

/// A product's thing model (TSL): identifiers and their types.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Tsl {
    /// Attributes.
    pub attributes: BTreeMap<String, DataType>,
    /// Measure points.
    pub measurepoints: BTreeMap<String, DataType>,
    /// Events, with the types of their output parameters.
    pub events: BTreeMap<String, BTreeMap<String, DataType>>,
    /// Services, with the types of their input parameters.
    pub services: BTreeMap<String, BTreeMap<String, DataType>>,
}

impl Tsl {
    /// The model as `thing.tsltemplate.get` returns it.
    pub fn template(&self) -> Value {
        fn map(m: &BTreeMap<String, DataType>) -> Value {
            m.iter().map(|(k, t)| (k.clone(), serde_json::json!({ "identifier": k, "dataType": t.label() }))).collect()
        }
        fn nested(m: &BTreeMap<String, BTreeMap<String, DataType>>) -> Value {
            m.iter()
                .map(|(k, params)| {
                    let params: Vec<Value> = params
                        .iter()
                        .map(|(p, t)| serde_json::json!({"identifier": p, "dataType": t.label()}))
                        .collect();
                    (k.clone(), serde_json::json!({ "identifier": k, "params": params }))
                })
                .collect()
        }
        serde_json::json!({
            "tslAttributeMap": map(&self.attributes),
            "tslMeasurepointMap": map(&self.measurepoints),
            "tslEventMap": nested(&self.events),
            "tslServiceMap": nested(&self.services),
        })
    }
}

/// A product.
#[derive(Debug, Clone)]
pub struct Product {
    /// The product key.
    pub key: String,
    /// The product secret (dynamic activation, sub-device mode 3 logins).
    pub secret: Secret,
    /// Whether dynamic activation (secure mode 3) is allowed.
    pub dynamic_activation: bool,
    /// Whether its devices are gateways.
    pub gateway: bool,
    /// Whether its message-integration channel exists (secure mode 4): one connection
    /// posting for all its devices, signed with the product secret.
    pub integration_channel: bool,
    /// The thing model.
    pub tsl: Tsl,
    /// Firmwares offered to its devices (`ota.device.getversion`).
    pub firmwares: Vec<Firmware>,
}

/// An OTA task of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtaTask {
    /// The firmware pushed.
    pub firmware: Firmware,
    /// Whether the device accepted the push (replied 200): progress is allowed.
    pub started: bool,
    /// The last progress step reported.
    pub step: Option<String>,
    /// Whether the task is done (step 100, or the version reported).
    pub done: bool,
}

/// A value with the time it was reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped {
    /// The value.
    pub value: Value,
    /// Epoch milliseconds (the device's `time`, or the server time).
    pub time: u64,
}

/// A device and everything the cloud knows of it.
#[derive(Debug, Clone)]
pub struct Device {
    /// Its keys.
    pub keys: DeviceKeys,
    /// Its device secret, when issued.
    pub secret: Option<Secret>,
    /// Its asset id.
    pub asset_id: String,
    /// Its display name.
    pub name: Value,
    /// Whether it may connect or log in.
    pub enabled: bool,
    /// Whether dynamic activation completed.
    pub activated: bool,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Attribute values.
    pub attributes: BTreeMap<String, Value>,
    /// The last value of each measure point. The cloud keys the points it stores with
    /// names shared between the devices of its registry: a large fleet keeps one copy of
    /// each name, and a device's points are found without reading a name of its own.
    pub measurepoints: BTreeMap<Arc<str>, Stamped>,
    /// Measure point posts and resumes, oldest first: (`post` or `resume`, point, value).
    /// The oldest are dropped past [`Registry::history_limit`].
    pub history: VecDeque<(&'static str, String, Stamped)>,
    /// Events posted, oldest first: (event id, params, time); bounded the same way.
    pub events: VecDeque<(String, Value, u64)>,
    /// The device's reports about itself (log, network status, connection state), oldest
    /// first: (method, params, time received); bounded the same way.
    pub reports: VecDeque<(String, Value, u64)>,
    /// The firmware version last reported.
    pub firmware_version: Option<String>,
    /// The current OTA task.
    pub ota: Option<OtaTask>,
}

impl Device {
    /// Appends to a bounded history, dropping the oldest entry past `limit`.
    pub(crate) fn keep<T>(q: &mut VecDeque<T>, item: T, limit: usize) {
        if q.len() >= limit {
            q.pop_front();
        }
        if limit > 0 {
            q.push_back(item);
        }
    }

    /// Records a measure point post (`resume` false) or resume in the bounded history; past
    /// `limit` the oldest entry is dropped and its allocation reused.
    pub(crate) fn remember(&mut self, resume: bool, point: &str, value: Stamped, limit: usize) {
        if limit == 0 {
            self.history.clear();
            return;
        }
        let kind = if resume { "resume" } else { "post" };
        let mut entry = if self.history.len() >= limit { self.history.pop_front() } else { None };
        while self.history.len() >= limit {
            self.history.pop_front();
        }
        match &mut entry {
            Some((k, name, v)) => {
                *k = kind;
                name.clear();
                name.push_str(point);
                *v = value;
            }
            None => entry = Some((kind, point.to_owned(), value)),
        }
        self.history.extend(entry);
    }

    fn new(keys: DeviceKeys, secret: Option<Secret>, asset_id: String) -> Self {
        Device {
            keys,
            secret,
            asset_id,
            name: Value::Null,
            enabled: true,
            activated: false,
            tags: BTreeMap::new(),
            attributes: BTreeMap::new(),
            measurepoints: BTreeMap::new(),
            history: VecDeque::new(),
            events: VecDeque::new(),
            reports: VecDeque::new(),
            firmware_version: None,
            ota: None,
        }
    }
}

/// Products, devices and the gateways' topologies.
#[derive(Clone, Default)]
pub struct Registry {
    /// Products by key.
    pub products: BTreeMap<String, Product>,
    /// Devices by keys (hashed: looked up for every request and every batch entry).
    pub devices: HashMap<DeviceKeys, Device>,
    /// Each gateway's sub-devices.
    pub topology: BTreeMap<DeviceKeys, HashSet<DeviceKeys>>,
    /// Whether a device may run dynamic activation again once activated (default no).
    pub allow_reactivation: bool,
    /// Measure point values and events kept per device (default 1,000 each).
    pub history_limit: usize,
    /// Sub-devices online at once per gateway (spec §9: 200).
    pub max_sub_devices_online: usize,
    /// Devices a gateway may register in all (`thing.device.register`, across requests;
    /// default 10,000): past it a request is refused whole with 460, so that one client
    /// cannot grow the registry without bound.
    pub max_registered_per_gateway: usize,
    /// Devices each gateway has registered.
    pub(crate) registered: HashMap<DeviceKeys, usize>,
    /// The QoS of replies to the devices' requests (`replyQos` in a registry file,
    /// `--reply-qos`; default 1). Which QoS EnOS uses is not known (spec §1, §9). With 1, a
    /// device must acknowledge each reply; the vendor's SDKs, which do not set
    /// `TCP_NODELAY`, then wait about 40 ms for a delayed ACK per request, so give them 0.
    pub reply_qos: DeliveryQos,
    /// The QoS of commands and pushes to devices (`commandQos`, `--command-qos`; default 1).
    pub command_qos: DeliveryQos,
    rng: u64,
    /// The measure point names stored, each once.
    pub(crate) point_names: HashSet<Arc<str>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("products", &self.products.len())
            .field("devices", &self.devices.len())
            .field("gateways", &self.topology.len())
            .finish_non_exhaustive()
    }
}

/// Why a registry could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The JSON does not describe a registry.
    #[error("invalid registry: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileProduct {
    product_key: String,
    #[serde(default)]
    product_secret: String,
    #[serde(default)]
    dynamic_activation: bool,
    #[serde(default)]
    gateway: bool,
    #[serde(default)]
    integration_channel: bool,
    #[serde(default)]
    tsl: Tsl,
    #[serde(default)]
    firmwares: Vec<Firmware>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileDevice {
    product_key: String,
    device_key: String,
    #[serde(default)]
    device_secret: Option<String>,
    #[serde(default)]
    asset_id: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
    /// `pk/dk` of the gateway whose topology holds this device.
    #[serde(default)]
    gateway: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct File {
    #[serde(default)]
    products: Vec<FileProduct>,
    #[serde(default)]
    devices: Vec<FileDevice>,
    #[serde(default)]
    allow_reactivation: bool,
    #[serde(default)]
    reply_qos: Option<DeliveryQos>,
    #[serde(default)]
    command_qos: Option<DeliveryQos>,
}

/// The QoS at which the cloud publishes to devices: 0 or 1 (QoS 2 is never used).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "u8")]
pub enum DeliveryQos {
    /// QoS 0: sent once, no PUBACK.
    AtMostOnce,
    /// QoS 1: the device answers with a PUBACK (the default).
    #[default]
    AtLeastOnce,
}

impl From<DeliveryQos> for enos_proto::codec::QoS {
    fn from(q: DeliveryQos) -> Self {
        match q {
            DeliveryQos::AtMostOnce => enos_proto::codec::QoS::AtMostOnce,
            DeliveryQos::AtLeastOnce => enos_proto::codec::QoS::AtLeastOnce,
        }
    }
}

impl TryFrom<u8> for DeliveryQos {
    type Error = String;
    fn try_from(q: u8) -> Result<Self, String> {
        match q {
            0 => Ok(DeliveryQos::AtMostOnce),
            1 => Ok(DeliveryQos::AtLeastOnce),
            other => Err(format!("QoS {other}: the cloud publishes at 0 or 1")),
        }
    }
}

/// The one copy of `name` in `names`, made the first time.
pub(crate) fn intern(names: &mut HashSet<Arc<str>>, name: &str) -> Arc<str> {
    match names.get(name) {
        Some(known) => known.clone(),
        None => {
            let new: Arc<str> = name.into();
            names.insert(new.clone());
            new
        }
    }
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

impl Registry {
    /// An empty registry. Generated secrets and asset ids differ from run to run (see
    /// [`Registry::seed`] for reproducible ones).
    pub fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let seed = std::collections::hash_map::RandomState::new().build_hasher().finish();
        Registry {
            rng: seed | 1,
            history_limit: 1_000,
            max_sub_devices_online: crate::cloud_limits::MAX_SUB_DEVICES_ONLINE,
            max_registered_per_gateway: 10_000,
            ..Default::default()
        }
    }

    /// A new device secret: alphanumeric, from the operating system's random source
    /// (never from the seeded generator of [`random_text`](Self::random_text)); `None`
    /// only when that source fails.
    pub fn random_secret(len: usize) -> Option<Secret> {
        use ring::rand::SecureRandom;
        let rng = ring::rand::SystemRandom::new();
        let mut text = String::with_capacity(len);
        let mut bytes = [0u8; 64];
        while text.len() < len {
            rng.fill(&mut bytes).ok()?;
            // Bytes past the last multiple of the alphabet's size are skipped: no bias.
            let fair = 256 - 256 % ALNUM.len();
            text.extend(
                bytes
                    .iter()
                    .filter(|b| usize::from(**b) < fair)
                    .map(|b| char::from(ALNUM[usize::from(*b) % ALNUM.len()])),
            );
        }
        text.truncate(len);
        Some(Secret::new(text))
    }

    /// How many devices `gateway` has registered.
    pub fn registered_by(&self, gateway: &DeviceKeys) -> usize {
        self.registered.get(gateway).copied().unwrap_or(0)
    }

    /// Random alphanumeric text that is not secret (asset ids, generated device keys):
    /// reproducible after [`seed`](Self::seed).
    pub fn random_text(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| {
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                char::from(ALNUM[(self.rng % ALNUM.len() as u64) as usize])
            })
            .collect()
    }

    /// Seeds the generator of asset ids and generated device keys (for reproducible
    /// runs); secrets never come from it.
    pub fn seed(&mut self, seed: u64) {
        self.rng = seed | 1;
    }

    /// Adds or replaces a product.
    pub fn add_product(&mut self, product: Product) {
        self.products.insert(product.key.clone(), product);
    }

    /// Adds a device (its product must exist); a fresh asset id is generated.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Invalid`] when the product does not exist.
    pub fn add_device(&mut self, keys: DeviceKeys, secret: Option<Secret>) -> Result<&mut Device, RegistryError> {
        if !self.products.contains_key(keys.product_key()) {
            return Err(RegistryError::Invalid(format!("device {keys}: no product {}", keys.product_key())));
        }
        let asset = self.random_text(8);
        Ok(self.devices.entry(keys.clone()).or_insert_with(|| Device::new(keys, secret, asset)))
    }

    /// Puts `sub` in `gateway`'s topology.
    pub fn add_topology(&mut self, gateway: &DeviceKeys, sub: DeviceKeys) {
        self.topology.entry(gateway.clone()).or_default().insert(sub);
    }

    /// The gateway whose topology holds `sub`.
    pub fn gateway_of(&self, sub: &DeviceKeys) -> Option<&DeviceKeys> {
        self.topology.iter().find(|(_, subs)| subs.contains(sub)).map(|(g, _)| g)
    }

    /// Whether `keys` is a gateway device.
    pub fn is_gateway(&self, keys: &DeviceKeys) -> bool {
        self.products.get(keys.product_key()).is_some_and(|p| p.gateway)
    }

    /// Loads a registry from a JSON file (see the crate docs for its shape).
    ///
    /// # Errors
    ///
    /// [`RegistryError`] when the file cannot be read or does not describe a registry.
    pub fn from_file(path: &Path) -> Result<Self, RegistryError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| RegistryError::Io { path: path.display().to_string(), source })?;
        Self::from_json(&text)
    }

    /// Loads a registry from JSON text.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Invalid`] naming what is wrong.
    pub fn from_json(text: &str) -> Result<Self, RegistryError> {
        let file: File = serde_json::from_str(text).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        let mut r = Registry::new();
        r.allow_reactivation = file.allow_reactivation;
        r.reply_qos = file.reply_qos.unwrap_or_default();
        r.command_qos = file.command_qos.unwrap_or_default();
        for p in file.products {
            if !enos_proto::topic::is_valid_key(&p.product_key) {
                return Err(RegistryError::Invalid(format!("product key {:?}", p.product_key)));
            }
            r.add_product(Product {
                key: p.product_key,
                secret: Secret::new(p.product_secret),
                dynamic_activation: p.dynamic_activation,
                gateway: p.gateway,
                integration_channel: p.integration_channel,
                tsl: p.tsl,
                firmwares: p.firmwares,
            });
        }
        for d in file.devices {
            let keys =
                DeviceKeys::new(d.product_key, d.device_key).map_err(|e| RegistryError::Invalid(e.to_string()))?;
            let device = r.add_device(keys.clone(), d.device_secret.map(Secret::new))?;
            device.enabled = d.enabled;
            if let Some(a) = d.asset_id {
                device.asset_id = a;
            }
            if let Some(g) = d.gateway {
                let (pk, dk) =
                    g.split_once('/').ok_or_else(|| RegistryError::Invalid(format!("gateway {g:?} is not pk/dk")))?;
                let gw = DeviceKeys::new(pk, dk).map_err(|e| RegistryError::Invalid(e.to_string()))?;
                r.add_topology(&gw, keys);
            }
        }
        for (gw, _) in r.topology.iter() {
            if !r.devices.contains_key(gw) {
                return Err(RegistryError::Invalid(format!("gateway {gw} is not a device")));
            }
        }
        Ok(r)
    }

    /// The built-in registry of the quick start: a device, a gateway, and two devices of a
    /// sub-device product, with known secrets (see [`defaults`]).
    pub fn builtin() -> Self {
        use defaults::*;
        let mut r = Registry::new();
        let tsl = Tsl {
            attributes: [("name", DataType::String), ("capacity", DataType::Float), ("location", DataType::String)]
                .map(|(k, t)| (k.to_owned(), t))
                .into(),
            measurepoints: [
                ("temp", DataType::Float),
                ("humidity", DataType::Float),
                ("pressure", DataType::Float),
                ("voltage", DataType::Float),
                ("current", DataType::Float),
                ("power", DataType::Float),
                ("energy", DataType::Float),
                ("status", DataType::Int),
                ("branchCurr", DataType::Array),
                ("temp_setpoint", DataType::Float),
                // FILE-type points: their value is the stored file's URI.
                ("newFile", DataType::String),
                ("snapshot", DataType::Struct),
            ]
            .map(|(k, t)| (k.to_owned(), t))
            .into(),
            events: [(
                "overheat".to_owned(),
                [("level", DataType::Int), ("msg", DataType::String)].map(|(k, t)| (k.to_owned(), t)).into(),
            )]
            .into(),
            services: [
                ("reset".to_owned(), BTreeMap::new()),
                ("restart".to_owned(), [("delay".to_owned(), DataType::Int)].into()),
            ]
            .into(),
        };
        let firmware = Firmware {
            version: "1.1.0".into(),
            sign_method: "md5".into(),
            sign: "9E107D9D372BB6826BD81D3542A419D6".into(),
            file_url: "/firmware/demo-1.1.0.bin".into(),
            file_size: 1024,
        };
        for (key, secret, gateway) in [
            (DEVICE_PRODUCT, DEVICE_PRODUCT_SECRET, false),
            (GATEWAY_PRODUCT, GATEWAY_PRODUCT_SECRET, true),
            (SUB_PRODUCT, SUB_PRODUCT_SECRET, false),
        ] {
            r.add_product(Product {
                key: key.into(),
                secret: Secret::new(secret),
                dynamic_activation: true,
                gateway,
                // The device product's channel exists: integration posts for its devices.
                integration_channel: key == DEVICE_PRODUCT,
                tsl: tsl.clone(),
                firmwares: vec![firmware.clone()],
            });
        }
        let ok =
            |pk: &str, dk: &str| DeviceKeys::new(pk, dk).unwrap_or_else(|_| unreachable!("built-in keys are valid"));
        for (pk, dk, secret) in [
            (DEVICE_PRODUCT, DEVICE, DEVICE_SECRET),
            (GATEWAY_PRODUCT, GATEWAY, GATEWAY_SECRET),
            (SUB_PRODUCT, SUB_DEVICE_1, SUB_DEVICE_1_SECRET),
            (SUB_PRODUCT, SUB_DEVICE_2, SUB_DEVICE_2_SECRET),
        ] {
            let _ = r.add_device(ok(pk, dk), Some(Secret::new(secret)));
        }
        // A device that activates dynamically: it holds only the product secret.
        let _ = r.add_device(ok(DEVICE_PRODUCT, ACTIVATING_DEVICE), None);
        r
    }
}

impl Registry {
    /// Adds `n` devices of the built-in device product, `load_0` .. `load_{n-1}`, all with
    /// the secret [`defaults::FLEET_SECRET`]: a fleet for load runs.
    pub fn add_fleet(&mut self, n: usize) {
        for i in 0..n {
            if let Ok(keys) = DeviceKeys::new(defaults::DEVICE_PRODUCT, format!("load_{i}")) {
                let _ = self.add_device(keys, Some(Secret::new(defaults::FLEET_SECRET)));
            }
        }
    }
}

/// The keys and secrets of the built-in registry, for examples and tests. They protect
/// nothing: the built-in cloud runs on loopback for offline work.
pub mod defaults {
    /// The device product.
    pub const DEVICE_PRODUCT: &str = "demo_pk";
    /// Its product secret.
    pub const DEVICE_PRODUCT_SECRET: &str = "demo_product_secret";
    /// A device of it.
    pub const DEVICE: &str = "demo_device";
    /// That device's secret.
    pub const DEVICE_SECRET: &str = "demo_device_secret";
    /// A device of it with no secret yet: it activates with the product secret.
    pub const ACTIVATING_DEVICE: &str = "demo_device_new";
    /// The gateway product.
    pub const GATEWAY_PRODUCT: &str = "demo_gw_pk";
    /// Its product secret.
    pub const GATEWAY_PRODUCT_SECRET: &str = "demo_gw_product_secret";
    /// The gateway.
    pub const GATEWAY: &str = "demo_gateway";
    /// The gateway's secret.
    pub const GATEWAY_SECRET: &str = "demo_gateway_secret";
    /// The sub-device product.
    pub const SUB_PRODUCT: &str = "demo_sub_pk";
    /// Its product secret.
    pub const SUB_PRODUCT_SECRET: &str = "demo_sub_product_secret";
    /// A sub-device.
    pub const SUB_DEVICE_1: &str = "demo_sub_1";
    /// Its secret.
    pub const SUB_DEVICE_1_SECRET: &str = "demo_sub_1_secret";
    /// Another sub-device.
    pub const SUB_DEVICE_2: &str = "demo_sub_2";
    /// Its secret.
    pub const SUB_DEVICE_2_SECRET: &str = "demo_sub_2_secret";
    /// The secret of every device of a load fleet (`Registry::add_fleet`).
    pub const FLEET_SECRET: &str = "load_secret";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_format_round_trip() {
        let r = Registry::from_json(
            r#"{"products":[{"productKey":"gp","productSecret":"s","gateway":true},
                            {"productKey":"sp","tsl":{"measurepoints":{"t":"float"}}}],
                "devices":[{"productKey":"gp","deviceKey":"g","deviceSecret":"x"},
                           {"productKey":"sp","deviceKey":"s1","gateway":"gp/g","enabled":false}]}"#,
        )
        .unwrap();
        let g = DeviceKeys::new("gp", "g").unwrap();
        let s = DeviceKeys::new("sp", "s1").unwrap();
        assert!(r.is_gateway(&g));
        assert_eq!(r.gateway_of(&s), Some(&g));
        assert!(!r.devices[&s].enabled);
        assert_eq!(r.products["sp"].tsl.measurepoints["t"], DataType::Float);
    }

    #[test]
    fn bad_files_say_why() {
        assert!(Registry::from_json(r#"{"devices":[{"productKey":"nope","deviceKey":"d"}]}"#).is_err());
        assert!(Registry::from_json(r#"{"products":[{"productKey":"a/b"}]}"#).is_err());
        assert!(Registry::from_json(r#"{"unknown":1}"#).is_err());
    }

    #[test]
    fn builtin_has_the_quick_start_devices() {
        let r = Registry::builtin();
        assert_eq!(r.devices.len(), 5);
        assert!(r.is_gateway(&DeviceKeys::new(defaults::GATEWAY_PRODUCT, defaults::GATEWAY).unwrap()));
    }
}
