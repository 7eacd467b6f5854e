//! [`Config`]: who the device is, how it authenticates, and every limit and timer of the
//! session, with the vendor SDKs' defaults.

use std::sync::Arc;
use std::time::Duration;

use crate::error::ConfigError;
use crate::secret::Secret;
use crate::sign::{SecureMode, SignMethod};
use crate::topic::DeviceKeys;

/// How the device authenticates (spec §2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials {
    /// Secure mode 2: the device secret signs every CONNECT.
    DeviceSecret(Secret),
    /// Secure mode 3: dynamic activation with the product secret. The cloud pushes a
    /// device secret after the first CONNECT; the core reports it
    /// (`Event::Activated`) and uses mode 2 with it from then on.
    ProductSecret(Secret),
    /// X.509: a client certificate on a TLS transport (set up by the driver). The
    /// CONNECT carries the mode-2 fields when the device secret is known, as the vendor
    /// SDKs do, and only the user name when it is not.
    Certificate {
        /// The device secret, when known.
        device_secret: Option<Secret>,
    },
    /// Secure mode 4, the message-integration channel of a product (extensions spec E4):
    /// signed with the product secret, with the device key
    /// [`INTEGRATION_DEVICE_KEY`]; the client id is the product key. The product must
    /// have its channel created in the console.
    IntegrationChannel(Secret),
}

/// The device key of an integration-channel connection: `%channel%`.
pub const INTEGRATION_DEVICE_KEY: &str = "%channel%";

impl Credentials {
    pub(crate) fn signing(&self) -> Option<(SecureMode, &Secret)> {
        match self {
            Credentials::DeviceSecret(s) => Some((SecureMode::DeviceSecret, s)),
            Credentials::ProductSecret(s) => Some((SecureMode::ProductSecret, s)),
            Credentials::Certificate { device_secret } => device_secret.as_ref().map(|s| (SecureMode::DeviceSecret, s)),
            Credentials::IntegrationChannel(s) => Some((SecureMode::Integration, s)),
        }
    }
}

/// Where the application keeps a device secret that dynamic activation issued. The core
/// calls it with the device and its new secret when the cloud pushes them, and
/// acknowledges the push only once it returns `Ok`: a program that stops in between has
/// either kept the secret, or the cloud has not taken the device as activated and issues
/// a new one at its next login. `Err(reason)` leaves the push unacknowledged
/// ([`crate::ClientError::ActivationNotStored`]).
///
/// ```
/// use enos_proto::SecretStore;
/// let store = SecretStore::new(|device, secret| {
///     std::fs::write(format!("/tmp/{}.secret", device.device_key()), secret.expose()).map_err(|e| e.to_string())
/// });
/// # let _ = store;
/// ```
#[derive(Clone)]
pub struct SecretStore(Arc<StoreFn>);

type StoreFn = dyn Fn(&DeviceKeys, &Secret) -> Result<(), String> + Send + Sync;

impl SecretStore {
    /// A store that calls `keep`.
    pub fn new(keep: impl Fn(&DeviceKeys, &Secret) -> Result<(), String> + Send + Sync + 'static) -> Self {
        SecretStore(Arc::new(keep))
    }

    /// Keeps `secret` for `device`.
    ///
    /// # Errors
    ///
    /// The store's own reason, when it could not keep it.
    pub fn keep(&self, device: &DeviceKeys, secret: &Secret) -> Result<(), String> {
        (self.0)(device, secret)
    }
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretStore(..)")
    }
}

/// Two stores are equal when they are the same store.
impl PartialEq for SecretStore {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SecretStore {}

/// The configuration of a [`Client`](crate::Client).
///
/// Build it with [`Config::new`], then change the public fields you need; every field
/// has the default of the vendor's Node.js SDK where it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// The device (or gateway) keys.
    pub device: DeviceKeys,
    /// How it authenticates.
    pub credentials: Credentials,
    /// The client id in front of the first `|` of the MQTT client id (at most 64
    /// characters); the device key when `None`, as every vendor SDK does.
    pub client_id: Option<String>,
    /// The sign method of the CONNECT password; `sha256` by default.
    pub sign_method: SignMethod,
    /// MQTT keep-alive: a PINGREQ goes out when nothing was sent for this long. 60 s by
    /// default; zero disables it.
    pub keep_alive: Duration,
    /// How long a PINGRESP may take before the peer is declared dead. 30 s by default.
    pub ping_timeout: Duration,
    /// How long the transport and the CONNACK may take; for the first session of a start,
    /// the dynamic activation too. 30 s by default.
    pub connect_timeout: Duration,
    /// Whether a failed first connection is retried like a lost one. Off by default, as
    /// in the seed: the first attempt that fails (or `connect_timeout`) ends the start
    /// with `Event::Started(Err(..))` and closes the client. On, the client dials on its
    /// back-off until it gets in, with no deadline.
    pub retry_first_connect: bool,
    /// The first delay before a reconnect. 3 s by default; zero disables automatic
    /// reconnects.
    pub reconnect_period: Duration,
    /// The delay doubles on each failed attempt up to this, and a refused
    /// authentication waits this long at once. 60 s by default.
    pub max_reconnect_period: Duration,
    /// How much of each reconnect delay is drawn at random, in percent: the delay is
    /// taken uniformly between (100 − this) % and 100 % of it, so a fleet cut at once
    /// does not come back in one burst. 100 by default (full jitter); 0 makes delays
    /// exact. The back-off starts over only after a session that lasted
    /// `max_reconnect_period`: a session dropped sooner counts as a failed attempt.
    pub reconnect_jitter_percent: u8,
    /// Seed of the jitter's generator; derived from the device keys by default, so runs
    /// are reproducible and devices differ.
    pub jitter_seed: u64,
    /// Where a secret issued by dynamic activation is kept before the push is
    /// acknowledged. Without one, the secret is handed over only by
    /// [`crate::Event::Activated`], after the acknowledgement has gone out.
    pub secret_store: Option<SecretStore>,
    /// Store-and-forward (see [`crate::store`]): measure point posts made while the
    /// session is down are kept in this store with their time, and sent oldest first
    /// as resumes once it is up again. `None` by default: such posts wait in the queue
    /// like any request, for at most their timeout.
    pub offline_store: Option<crate::store::OfflineStore>,
    /// How long a request may take before it ends with `RequestError::TimedOut`. 30 s by
    /// default (per request with `RequestOptions::timeout`).
    pub request_timeout: Duration,
    /// Reply topics kept subscribed at once (one per operation and device a request was
    /// made for): past it, the least recently used ones that no request waits on are
    /// unsubscribed (a later request subscribes again, one round trip). 1,024 by default.
    pub max_reply_subscriptions: usize,
    /// QoS 1 publishes awaiting their PUBACK at once. 256 by default.
    pub max_inflight: u16,
    /// Requests waiting to be sent (offline, or behind a full window): past this count a
    /// new request is refused with `SubmitError::QueueFull`. QoS 1 publishes that were in
    /// flight when a connection dropped come back to the front of the queue whatever its
    /// size (they are never dropped), so it holds at most this plus `max_inflight`.
    /// 10,000 by default.
    pub max_queued_requests: usize,
    /// The same bound in payload bytes. 16 MiB by default.
    pub max_queued_bytes: usize,
    /// Requests not yet ended (queued, sent or awaiting a reply): past this a new one is
    /// refused with `SubmitError::TooManyRequests`. 100,000 by default.
    pub max_outstanding_requests: usize,
    /// Largest payload the core sends. 512 KiB by default, the EnOS limit.
    pub max_payload_bytes: usize,
    /// Largest packet (remaining length) the core accepts; a larger one ends the
    /// connection with `DecodeError::PacketTooLarge`. 1 MiB by default.
    pub max_packet_bytes: usize,
    /// Commands handed to the application (`Event::Command`) and not yet answered with
    /// `Client::reply` or `Client::dismiss`, at most; the next ones wait in the core. 64
    /// by default.
    pub max_running_commands: usize,
    /// Commands waiting behind those, at most; past it a command is answered 1102 at once
    /// (`ClientError::CommandQueueFull`). 1,024 by default.
    pub max_queued_commands: usize,
    /// How long the application may take to answer a command handed to it. Past it the
    /// core answers 1102 (`command handler execution failed, no answer within ...`),
    /// frees its place for the next command and refuses a late answer
    /// ([`crate::SubmitError::AlreadyAnswered`]). 60 s by default.
    pub command_timeout: Duration,
    /// Subscribe the device's and logged-in sub-devices' command topics after each
    /// CONNACK. EnOS delivers commands without a subscription; a plain broker such as
    /// mosquitto needs one. Off by default.
    pub subscribe_command_topics: bool,
    /// Report every inbound message as `Event::Message`, not only those that are
    /// neither replies nor commands. Off by default.
    pub emit_all_messages: bool,
    /// The HTTP transport (extensions spec E1) instead of MQTT: requests, replies and
    /// commands over HTTP/1.1 exchanges, the session opened by a login with the device
    /// secret. `None` (MQTT) by default.
    pub http: Option<crate::http::HttpMode>,
    /// Payload compression (extensions spec E7): announced in the client id, and applied
    /// to every PUBLISH payload in both directions. `None` (no compression) by default;
    /// the cloud must support the codec.
    pub compression: Option<crate::compress::Compression>,
    /// TLS over the transport (feature `tls`): when set, the core runs the handshake
    /// after `handle_connected`, takes ciphertext in and gives ciphertext out; the
    /// CONNECT follows the handshake. `None` (plain TCP) by default.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::TlsTarget>,
}

impl Config {
    /// A configuration with every default.
    pub fn new(device: DeviceKeys, credentials: Credentials) -> Self {
        let jitter_seed =
            fnv1a(device.product_key().as_bytes(), fnv1a(device.device_key().as_bytes(), 0xcbf2_9ce4_8422_2325));
        Config {
            device,
            credentials,
            client_id: None,
            sign_method: SignMethod::Sha256,
            keep_alive: Duration::from_secs(60),
            ping_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            retry_first_connect: false,
            reconnect_period: Duration::from_secs(3),
            max_reconnect_period: Duration::from_secs(60),
            reconnect_jitter_percent: 100,
            jitter_seed,
            secret_store: None,
            offline_store: None,
            request_timeout: Duration::from_secs(30),
            max_inflight: 256,
            max_queued_requests: 10_000,
            max_queued_bytes: 16 << 20,
            max_outstanding_requests: 100_000,
            max_payload_bytes: 512 << 10,
            max_packet_bytes: 1 << 20,
            max_running_commands: 64,
            max_reply_subscriptions: 1024,
            max_queued_commands: 1024,
            command_timeout: Duration::from_secs(60),
            subscribe_command_topics: false,
            emit_all_messages: false,
            compression: None,
            http: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// The client id in front of the first `|`: `client_id`, or by default the device key
    /// (the product key on the integration channel).
    pub fn cid(&self) -> &str {
        let default = match self.credentials {
            Credentials::IntegrationChannel(_) => self.device.product_key(),
            _ => self.device.device_key(),
        };
        self.client_id.as_deref().unwrap_or(default)
    }

    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that cannot work, and why.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let cid = self.cid();
        if cid.is_empty() || cid.chars().count() > 64 || cid.contains(['|', ',', '=']) {
            return Err(ConfigError::new("client_id", "must be 1 to 64 characters without '|', ',' or '='"));
        }
        match &self.credentials {
            Credentials::IntegrationChannel(_) if self.device.device_key() != INTEGRATION_DEVICE_KEY => {
                return Err(ConfigError::new("device", "the integration channel's device key is %channel%"));
            }
            Credentials::DeviceSecret(s) | Credentials::ProductSecret(s) | Credentials::IntegrationChannel(s)
                if s.is_empty() =>
            {
                return Err(ConfigError::new("credentials", "the secret is empty"));
            }
            _ => {}
        }
        if let Some(http) = &self.http {
            if !http.anonymous && !matches!(self.credentials, Credentials::DeviceSecret(_)) {
                return Err(ConfigError::new("credentials", "the HTTP transport logs in with a device secret only"));
            }
            if self.compression.is_some() || self.offline_store.is_some() {
                let field = if self.compression.is_some() { "compression" } else { "offline_store" };
                return Err(ConfigError::new(field, "is for MQTT; the HTTP transport has none"));
            }
        }
        if self.keep_alive > Duration::from_secs(u64::from(u16::MAX)) {
            return Err(ConfigError::new("keep_alive", "must be at most 65535 s"));
        }
        for (field, d) in [
            ("ping_timeout", self.ping_timeout),
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(field, "must be above zero"));
            }
        }
        if self.command_timeout.is_zero() {
            return Err(ConfigError::new("command_timeout", "must be above zero"));
        }
        if self.reconnect_jitter_percent > 100 {
            return Err(ConfigError::new("reconnect_jitter_percent", "must be at most 100"));
        }
        if self.max_reconnect_period < self.reconnect_period {
            return Err(ConfigError::new("max_reconnect_period", "must not be below reconnect_period"));
        }
        if self.max_inflight == 0 || self.max_inflight > 60_000 {
            return Err(ConfigError::new("max_inflight", "must be 1 to 60000"));
        }
        if self.max_running_commands == 0 {
            return Err(ConfigError::new("max_running_commands", "must be above zero"));
        }
        if self.max_outstanding_requests == 0 {
            return Err(ConfigError::new("max_outstanding_requests", "must be above zero"));
        }
        if self.max_packet_bytes < 1024 {
            return Err(ConfigError::new("max_packet_bytes", "must be at least 1024"));
        }
        if self.max_payload_bytes == 0 || self.max_payload_bytes > crate::codec::MAX_REMAINING_LENGTH / 2 {
            return Err(ConfigError::new("max_payload_bytes", "must be 1 byte to 128 MiB"));
        }
        #[cfg(feature = "tls")]
        if let Some(t) = &self.tls {
            if rustls_pki_types::ServerName::try_from(t.server_name.as_str()).is_err() {
                return Err(ConfigError::new(
                    "server_name",
                    format!("{:?} is not a DNS name or an IP address", t.server_name),
                ));
            }
        }
        Ok(())
    }
}

fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::new(DeviceKeys::new("pk", "dk").unwrap(), Credentials::DeviceSecret("s".into()))
    }

    #[test]
    fn defaults_are_valid_and_follow_the_seed() {
        let c = config();
        c.validate().unwrap();
        assert_eq!(
            (c.keep_alive, c.connect_timeout, c.reconnect_period, c.request_timeout),
            (Duration::from_secs(60), Duration::from_secs(30), Duration::from_secs(3), Duration::from_secs(30))
        );
        assert_eq!(c.sign_method, SignMethod::Sha256);
    }

    #[test]
    fn invalid_fields_are_named() {
        let mut c = config();
        c.client_id = Some("x".repeat(65));
        assert_eq!(c.validate().unwrap_err().field, "client_id");
        let mut c = config();
        c.credentials = Credentials::DeviceSecret("".into());
        assert_eq!(c.validate().unwrap_err().field, "credentials");
        let mut c = config();
        c.max_inflight = 0;
        assert_eq!(c.validate().unwrap_err().field, "max_inflight");
    }
}
