//! [`ClientOptions`]: the seed's `clientOptions`, checked once and turned into the core's
//! [`Config`] (TLS included: the core runs the handshake) and the [`Transport`] address
//! that any driver dials (feature `tls`).
//!
//! ```
//! use enos_proto::options::ClientOptions;
//! use enos_proto::SecureMode;
//!
//! let mut o = ClientOptions::new("tcp://127.0.0.1:11883", "pk", "dk");
//! o.secure_mode = SecureMode::DeviceSecret;
//! o.device_secret = Some("secret".into());
//! let (config, transport) = o.build()?;
//! assert_eq!((transport.host.as_str(), transport.port), ("127.0.0.1", 11883));
//! assert_eq!(config.keep_alive.as_secs(), 60);
//! # Ok::<(), enos_proto::ConfigError>(())
//! ```

use std::time::Duration;

use crate::config::{Config, Credentials};
use crate::error::ConfigError;
use crate::secret::Secret;
use crate::sign::SecureMode;
use crate::tls::{client_config, Identity, TlsTarget};
use crate::topic::DeviceKeys;

/// The options of a device or gateway client, named after the seed's `clientOptions`.
/// Times are in seconds, with the seed's defaults; 0 disables `reconnect_period` and
/// `keep_alive`.
///
/// Its `Debug` names the key material it holds (private key, PKCS#12 file, secrets)
/// without showing it.
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// `tcp://host:port` (plain, default port 11883) or `ssl://host:port` (TLS, default
    /// port 18883) for MQTT; `http://host[:port]` or `https://...` for the HTTP transport
    /// (the same requests, replies and commands over HTTP/1.1; device secret only).
    pub broker_url: String,
    /// How the device authenticates.
    pub secure_mode: SecureMode,
    /// The product key.
    pub product_key: String,
    /// The device key.
    pub device_key: String,
    /// The device secret (secure mode 2, and certificate mode when known).
    pub device_secret: Option<Secret>,
    /// The product secret (secure mode 3, dynamic activation).
    pub product_secret: Option<Secret>,
    /// The CA certificates (PEM) that verify the broker over `ssl://`.
    pub ca: Option<Vec<u8>>,
    /// The client certificate chain (PEM) for mutual TLS.
    pub cert: Option<Vec<u8>>,
    /// The client private key (PEM).
    pub key: Option<Vec<u8>>,
    /// The client identity as PKCS#12 (`.pfx`/`.p12`), instead of `cert` and `key`.
    pub pfx: Option<Vec<u8>>,
    /// The PKCS#12 passphrase.
    pub passphrase: Option<Secret>,
    /// The TLS server name when it differs from the URL's host.
    pub server_name: Option<String>,
    /// Accept a broker whose certificate does not name the host it is reached by (an
    /// EnOS edge broker reached by IP address), as the vendor's Java and Python SDKs do by
    /// default. Off by default. The chain is still verified against `ca`; what is given
    /// up is that any server with a certificate from that CA, for any name, can pose as
    /// the broker: use it only with a CA that signs nothing but your brokers (see
    /// [`crate::tls::dangerous`]).
    pub dangerous_accept_any_server_name: bool,
    /// Seconds for the transport and the CONNACK (30).
    pub connection_timeout: u64,
    /// Seconds between reconnect attempts (3, doubling up to 60 on repeated failures);
    /// 0 disables automatic reconnects.
    pub reconnect_period: u64,
    /// MQTT keep-alive in seconds (60); 0 disables it.
    pub keep_alive: u64,
    /// Seconds a request may wait for its reply (30).
    pub request_timeout: u64,
    /// The client id signed in; the device key when `None`.
    pub client_id: Option<String>,
    /// Subscribe the command topics (needed on a plain broker such as mosquitto).
    pub subscribe_command_topics: bool,
    /// With dynamic activation (secure mode 3): where the issued device secret is kept
    /// before the cloud's push is acknowledged (see [`crate::SecretStore`]).
    pub secret_store: Option<crate::SecretStore>,
    /// Store-and-forward: measure point posts made while the session is down are kept
    /// here and sent as resumes once it is up (see [`crate::store::OfflineStore`]).
    pub offline_store: Option<crate::store::OfflineStore>,
    /// Payload compression, GZIP or LZ4 (the vendor's newest Java SDK); `None` by
    /// default. The cloud must support the codec. See [`crate::compress`].
    pub compression: Option<crate::compress::Compression>,
    /// With an `http://` or `https://` broker URL (the HTTP transport): how long, in
    /// seconds, a login's session lasts before the next login; 300 by default.
    pub http_session_lifetime: u64,
    /// With the HTTP transport: the commands to ask for in responses at login
    /// (`acceptCommandTypes`); none by default, and then the field is not sent.
    pub http_accept_commands: Vec<crate::http::CommandType>,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Certificates are public, but as byte lists they are noise: their size will do.
        let bytes = |b: &Option<Vec<u8>>| b.as_ref().map(|b| format!("{} bytes", b.len()));
        let hidden = |b: &Option<Vec<u8>>| b.as_ref().map(|_| "..");
        f.debug_struct("ClientOptions")
            .field("broker_url", &self.broker_url)
            .field("secure_mode", &self.secure_mode)
            .field("product_key", &self.product_key)
            .field("device_key", &self.device_key)
            .field("device_secret", &self.device_secret)
            .field("product_secret", &self.product_secret)
            .field("ca", &bytes(&self.ca))
            .field("cert", &bytes(&self.cert))
            .field("key", &hidden(&self.key))
            .field("pfx", &hidden(&self.pfx))
            .field("passphrase", &self.passphrase)
            .field("server_name", &self.server_name)
            .field("dangerous_accept_any_server_name", &self.dangerous_accept_any_server_name)
            .field("connection_timeout", &self.connection_timeout)
            .field("reconnect_period", &self.reconnect_period)
            .field("keep_alive", &self.keep_alive)
            .field("request_timeout", &self.request_timeout)
            .field("client_id", &self.client_id)
            .field("subscribe_command_topics", &self.subscribe_command_topics)
            .field("secret_store", &self.secret_store)
            .field("offline_store", &self.offline_store)
            .field("compression", &self.compression)
            .field("http_session_lifetime", &self.http_session_lifetime)
            .field("http_accept_commands", &self.http_accept_commands)
            .finish()
    }
}

impl ClientOptions {
    /// Options for the message-integration channel of product `product_key` (secure mode
    /// 4, extensions spec E4): one connection that posts for many devices of the product.
    pub fn integration_channel(
        broker_url: impl Into<String>,
        product_key: impl Into<String>,
        product_secret: impl Into<Secret>,
    ) -> Self {
        let mut o = ClientOptions::new(broker_url, product_key, crate::INTEGRATION_DEVICE_KEY);
        o.secure_mode = SecureMode::Integration;
        o.product_secret = Some(product_secret.into());
        o
    }

    /// Options for `broker_url` and a device, with every default (secure mode 2, no
    /// secret yet).
    pub fn new(broker_url: impl Into<String>, product_key: impl Into<String>, device_key: impl Into<String>) -> Self {
        ClientOptions {
            broker_url: broker_url.into(),
            secure_mode: SecureMode::DeviceSecret,
            product_key: product_key.into(),
            device_key: device_key.into(),
            device_secret: None,
            product_secret: None,
            ca: None,
            cert: None,
            key: None,
            pfx: None,
            passphrase: None,
            server_name: None,
            dangerous_accept_any_server_name: false,
            connection_timeout: 30,
            reconnect_period: 3,
            keep_alive: 60,
            request_timeout: 30,
            client_id: None,
            subscribe_command_topics: false,
            secret_store: None,
            offline_store: None,
            compression: None,
            http_session_lifetime: 300,
            http_accept_commands: Vec::new(),
        }
    }

    /// Checks every option and builds the core's configuration and the transport.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the option and why: a bad URL, keys, a missing secret
    /// for the secure mode, `ssl://` without a CA, a certificate without its key, a
    /// PKCS#12 file that does not open with its passphrase, ...
    pub fn build(&self) -> Result<(Config, Transport), ConfigError> {
        let keys = DeviceKeys::new(self.product_key.clone(), self.device_key.clone())?;
        let scheme = self.broker_url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        let http = match scheme.as_deref() {
            Some("http" | "https") => Some(crate::http::HttpTarget::parse(&self.broker_url)?),
            _ => None,
        };
        let (tls, host, port) = match &http {
            Some(t) => (t.tls, t.host.clone(), t.port),
            None => parse_url(&self.broker_url)?,
        };
        let credentials = match self.secure_mode {
            SecureMode::DeviceSecret => Credentials::DeviceSecret(
                self.device_secret
                    .clone()
                    .ok_or_else(|| ConfigError::new("device_secret", "secure mode 2 needs it"))?,
            ),
            SecureMode::ProductSecret => Credentials::ProductSecret(
                self.product_secret
                    .clone()
                    .ok_or_else(|| ConfigError::new("product_secret", "secure mode 3 needs it"))?,
            ),
            SecureMode::Integration => {
                if keys.device_key() != crate::INTEGRATION_DEVICE_KEY {
                    return Err(ConfigError::new("device_key", "the integration channel's is %channel%"));
                }
                Credentials::IntegrationChannel(
                    self.product_secret
                        .clone()
                        .ok_or_else(|| ConfigError::new("product_secret", "the integration channel needs it"))?,
                )
            }
            _ => {
                if !tls {
                    return Err(ConfigError::new("broker_url", "certificate mode needs ssl://"));
                }
                if self.cert.is_none() && self.pfx.is_none() {
                    return Err(ConfigError::new("cert", "certificate mode needs cert and key, or pfx"));
                }
                Credentials::Certificate { device_secret: self.device_secret.clone() }
            }
        };
        let mut config = Config::new(keys, credentials);
        config.client_id = self.client_id.clone();
        config.connect_timeout = secs("connection_timeout", self.connection_timeout, false)?;
        config.reconnect_period = secs("reconnect_period", self.reconnect_period, true)?;
        config.max_reconnect_period = config.max_reconnect_period.max(config.reconnect_period);
        config.keep_alive = secs("keep_alive", self.keep_alive, true)?;
        config.request_timeout = secs("request_timeout", self.request_timeout, false)?;
        config.subscribe_command_topics = self.subscribe_command_topics;
        config.secret_store = self.secret_store.clone();
        config.offline_store = self.offline_store.clone();
        config.compression = self.compression;
        config.http = http.map(|target| {
            let mut mode = crate::http::HttpMode::new(target);
            mode.lifetime = Duration::from_secs(self.http_session_lifetime.max(1));
            mode.accept_commands = self.http_accept_commands.clone();
            mode
        });
        config.tls = if tls {
            let ca = self
                .ca
                .as_deref()
                .ok_or_else(|| ConfigError::new("ca", "ssl:// and https:// need the CA that signed the broker"))?;
            let identity = self.identity()?;
            let cfg = if self.dangerous_accept_any_server_name {
                crate::tls::dangerous::client_config_accepting_any_server_name(ca, identity.as_ref())
            } else {
                client_config(ca, identity.as_ref())
            };
            let cfg = cfg.map_err(|e| ConfigError::new("ca", e.to_string()))?;
            Some(TlsTarget::new(cfg, self.server_name.clone().unwrap_or_else(|| host.clone())))
        } else {
            if self.cert.is_some() || self.pfx.is_some() {
                return Err(ConfigError::new("broker_url", "a client certificate needs ssl://"));
            }
            None
        };
        config.validate()?;
        Ok((config, Transport { host, port }))
    }

    fn identity(&self) -> Result<Option<Identity>, ConfigError> {
        match (&self.cert, &self.key, &self.pfx) {
            (Some(_), _, Some(_)) => Err(ConfigError::new("pfx", "give cert and key, or pfx, not both")),
            (Some(cert), Some(key), None) => {
                Identity::from_pem(cert, key).map(Some).map_err(|e| ConfigError::new("cert", e.to_string()))
            }
            (Some(_), None, None) => Err(ConfigError::new("key", "cert needs its private key")),
            (None, Some(_), None) => Err(ConfigError::new("cert", "key needs its certificate")),
            (None, _, Some(pfx)) => pkcs12(pfx, self.passphrase.as_ref()).map(Some),
            (None, None, None) => Ok(None),
        }
    }
}

#[cfg(feature = "pkcs12")]
fn pkcs12(pfx: &[u8], passphrase: Option<&Secret>) -> Result<Identity, ConfigError> {
    let empty = Secret::new("");
    Identity::from_pkcs12(pfx, passphrase.unwrap_or(&empty)).map_err(|e| ConfigError::new("pfx", e.to_string()))
}

#[cfg(not(feature = "pkcs12"))]
fn pkcs12(_: &[u8], _: Option<&Secret>) -> Result<Identity, ConfigError> {
    Err(ConfigError::new("pfx", "PKCS#12 needs the pkcs12 feature"))
}

fn secs(field: &'static str, n: u64, zero_ok: bool) -> Result<Duration, ConfigError> {
    if n == 0 && !zero_ok {
        return Err(ConfigError::new(field, "must be above zero"));
    }
    if n > 24 * 3600 {
        return Err(ConfigError::new(field, "must be at most a day"));
    }
    Ok(Duration::from_secs(n))
}

/// `(tls, host, port)` of a broker URL.
fn parse_url(url: &str) -> Result<(bool, String, u16), ConfigError> {
    let bad = |why: &str| ConfigError::new("broker_url", format!("{url:?}: {why}"));
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("expected tcp://host:port or ssl://host:port"))?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "tcp" | "mqtt" => false,
        "ssl" | "tls" | "mqtts" => true,
        _ => return Err(bad("the scheme must be tcp or ssl")),
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = crate::http::host_port(rest, if tls { 18883 } else { 11883 }, &bad)?;
    if host.contains('/') {
        return Err(bad("invalid host"));
    }
    Ok((tls, host, port))
}

/// Where a driver connects: a TCP address. Whatever runs over it (TLS, then MQTT) is the
/// core's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    /// The broker's host name or address.
    pub host: String,
    /// Its port.
    pub port: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(url: &str) -> ClientOptions {
        let mut o = ClientOptions::new(url, "pk", "dk");
        o.device_secret = Some("s".into());
        o
    }

    #[test]
    fn urls() {
        assert_eq!(parse_url("tcp://h:1").unwrap(), (false, "h".into(), 1));
        assert_eq!(parse_url("ssl://h").unwrap(), (true, "h".into(), 18883));
        assert_eq!(parse_url("tcp://[::1]:9").unwrap(), (false, "::1".into(), 9));
        for bad in ["h:1", "http://h:1", "tcp://:1", "tcp://h:x", "tcp://[::1"] {
            assert_eq!(parse_url(bad).unwrap_err().field, "broker_url", "{bad}");
        }
    }

    #[test]
    fn each_invalid_option_is_named() {
        assert_eq!(opts("tcp://h:1").build().unwrap().1.port, 1);
        let mut o = opts("tcp://h:1");
        o.device_secret = None;
        assert_eq!(o.build().unwrap_err().field, "device_secret");
        let mut o = opts("tcp://h:1");
        o.secure_mode = SecureMode::ProductSecret;
        assert_eq!(o.build().unwrap_err().field, "product_secret");
        assert_eq!(opts("ssl://h:1").build().unwrap_err().field, "ca");
        let mut o = opts("tcp://h:1");
        o.connection_timeout = 0;
        assert_eq!(o.build().unwrap_err().field, "connection_timeout");
        let mut o = opts("tcp://h:1");
        o.product_key = "a/b".into();
        assert_eq!(o.build().unwrap_err().field, "product key");
        let mut o = opts("tcp://h:1");
        o.secure_mode = SecureMode::Certificate;
        assert_eq!(o.build().unwrap_err().field, "broker_url");
        let mut o = opts("tcp://h:1");
        o.cert = Some(b"x".to_vec());
        assert_eq!(o.build().unwrap_err().field, "broker_url");
    }

    #[test]
    fn zero_disables_reconnect_and_keep_alive() {
        let mut o = opts("tcp://h:1");
        o.reconnect_period = 0;
        o.keep_alive = 0;
        let (c, _) = o.build().unwrap();
        assert!(c.reconnect_period.is_zero() && c.keep_alive.is_zero());
    }
}
