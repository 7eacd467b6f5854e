//! Connection settings from three sources, in this order of precedence: flags, `ENOS_*`
//! environment variables, then a profile of the profile file (TOML). Secrets are held as
//! [`Secret`] from the moment they are read, so no `Debug`, error or `--verbose` line can
//! show one; the secrets dynamic activation and registration issue are kept in files of
//! the secrets folder, readable by their owner only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use enos_transport_blocking::proto::{SecretStore, SubDeviceInfo};
use enos_transport_blocking::{ClientOptions, DeviceKeys, Secret, SecureMode};
use serde::Deserialize;

use crate::error::{CliError, Missing};

/// The connection flags, on every subcommand. Its `Debug` says which secrets are set,
/// never what they are.
#[derive(Clone, Default, clap::Args)]
#[command(next_help_heading = "Connection (flags > ENOS_* environment > profile)")]
pub struct ConnArgs {
    /// Broker URL: tcp://host:port, or ssl://host:port for TLS; http:// or https:// for
    /// the HTTP transport (needed by `enos file`) [env: ENOS_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// Product key [env: ENOS_PRODUCT_KEY]
    #[arg(long, global = true, value_name = "PK")]
    pub product_key: Option<String>,
    /// Device key [env: ENOS_DEVICE_KEY]
    #[arg(long, global = true, value_name = "DK")]
    pub device_key: Option<String>,
    /// Device secret (secure mode 2); prefer the environment or a profile, which `ps` does
    /// not show [env: ENOS_DEVICE_SECRET]
    #[arg(long, global = true, value_name = "SECRET")]
    pub device_secret: Option<String>,
    /// Product secret: dynamic activation (secure mode 3); the issued device secret is kept
    /// in the secrets folder and used from then on. It also signs `enos integration` in
    /// as the product's integration channel [env: ENOS_PRODUCT_SECRET]
    #[arg(long, global = true, value_name = "SECRET")]
    pub product_secret: Option<String>,
    /// Client certificate chain (PEM) for X.509 authentication over ssl:// [env: ENOS_CERT]
    #[arg(long, global = true, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM) [env: ENOS_KEY]
    #[arg(long, global = true, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Client identity as PKCS#12 (.p12/.pfx), instead of --cert and --key [env: ENOS_PFX]
    #[arg(long, global = true, value_name = "FILE")]
    pub pfx: Option<PathBuf>,
    /// Passphrase of the PKCS#12 file [env: ENOS_PASSPHRASE]
    #[arg(long, global = true, value_name = "SECRET")]
    pub passphrase: Option<String>,
    /// CA certificates (PEM) that sign the broker, for ssl:// [env: ENOS_CA]
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// TLS server name, when it differs from the URL's host [env: ENOS_SERVER_NAME]
    #[arg(long, global = true, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Seconds a request may wait for its reply (default 30) [env: ENOS_TIMEOUT]
    #[arg(long, global = true, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Seconds the connection may take to come up (default 30) [env: ENOS_CONNECT_TIMEOUT]
    #[arg(long, global = true, value_name = "SECS")]
    pub connect_timeout: Option<u64>,
    /// A sub-device's secret, as pk/dk=SECRET (repeatable) [env: ENOS_SUB_SECRETS, comma-separated]
    #[arg(long, global = true, value_name = "PK/DK=SECRET")]
    pub sub_secret: Vec<String>,
    /// A sub-device product's secret, as pk=SECRET, for sub-devices that activate
    /// dynamically (repeatable) [env: ENOS_SUB_PRODUCT_SECRETS, comma-separated]
    #[arg(long, global = true, value_name = "PK=SECRET")]
    pub sub_product_secret: Vec<String>,
    /// Where issued device secrets are kept (default: `secrets` beside the profile file)
    /// [env: ENOS_SECRETS_DIR]
    #[arg(long, global = true, value_name = "DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// The profile to use from the profile file ($ENOS_CONFIG, else
    /// $XDG_CONFIG_HOME/enos/profiles.toml, else ~/.config/enos/profiles.toml); `default`
    /// when it has one [env: ENOS_PROFILE]
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,
}

impl std::fmt::Debug for ConnArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "..");
        // The keys before `=` only when they are keys: a malformed entry may hold its
        // secret anywhere.
        let keys = |list: &[String], is_key: fn(&str) -> bool| -> Vec<String> {
            list.iter()
                .map(|e| match e.split_once('=') {
                    Some((k, _)) if is_key(k) => format!("{k}=.."),
                    _ => "?=..".to_owned(),
                })
                .collect()
        };
        f.debug_struct("ConnArgs")
            .field("url", &self.url)
            .field("product_key", &self.product_key)
            .field("device_key", &self.device_key)
            .field("device_secret", &hidden(&self.device_secret))
            .field("product_secret", &hidden(&self.product_secret))
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("pfx", &self.pfx)
            .field("passphrase", &hidden(&self.passphrase))
            .field("ca", &self.ca)
            .field("server_name", &self.server_name)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("sub_secret", &keys(&self.sub_secret, |k| parse_keys(k).is_ok()))
            .field("sub_product_secret", &keys(&self.sub_product_secret, is_product_key))
            .field("secrets_dir", &self.secrets_dir)
            .field("profile", &self.profile)
            .finish()
    }
}

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A flag.
    Flag(&'static str),
    /// An environment variable.
    Env(&'static str),
    /// A key of a profile.
    Profile {
        /// The profile's name.
        name: String,
        /// The key.
        key: &'static str,
    },
    /// A secret kept by an earlier activation or registration.
    Kept(PathBuf),
    /// The built-in default.
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag(flag) => f.write_str(flag),
            Source::Env(var) => f.write_str(var),
            Source::Profile { name, key } => write!(f, "`{key}` of profile {name}"),
            Source::Kept(path) => write!(f, "the secret kept in {}", path.display()),
            Source::Default => f.write_str("the default"),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// Its source.
    pub source: Source,
}

/// One profile of the profile file. Unknown keys are refused, so that a typo is named
/// rather than ignored.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    url: Option<String>,
    product_key: Option<String>,
    device_key: Option<String>,
    device_secret: Option<Secret>,
    product_secret: Option<Secret>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    pfx: Option<PathBuf>,
    passphrase: Option<Secret>,
    ca: Option<PathBuf>,
    server_name: Option<String>,
    timeout: Option<u64>,
    connect_timeout: Option<u64>,
    secrets_dir: Option<PathBuf>,
    #[serde(default)]
    sub_devices: BTreeMap<String, Secret>,
    #[serde(default)]
    sub_products: BTreeMap<String, Secret>,
}

/// The settings of a run, resolved but not yet checked for completeness: a command that
/// needs no connection (`replay --dry-run`) needs none of them.
pub struct Settings {
    /// The broker URL.
    pub url: Option<Sourced<String>>,
    /// The product key.
    pub product_key: Option<Sourced<String>>,
    /// The device key.
    pub device_key: Option<Sourced<String>>,
    device_secret: Option<Sourced<Secret>>,
    product_secret: Option<Sourced<Secret>>,
    cert: Option<Sourced<PathBuf>>,
    key: Option<Sourced<PathBuf>>,
    pfx: Option<Sourced<PathBuf>>,
    passphrase: Option<Sourced<Secret>>,
    ca: Option<Sourced<PathBuf>>,
    server_name: Option<Sourced<String>>,
    /// Seconds a request may wait for its reply.
    pub request_timeout: Sourced<u64>,
    /// Seconds the connection may take.
    pub connect_timeout: Sourced<u64>,
    /// Where issued secrets are kept.
    pub secrets: Option<SecretFiles>,
    sub_devices: Vec<(DeviceKeys, Sourced<Secret>)>,
    sub_products: Vec<(String, Sourced<Secret>)>,
    /// The profile in use: its name and file.
    pub profile: Option<(String, PathBuf)>,
}

/// How the device authenticates, as chosen from the settings.
pub struct Credentials {
    /// The client options, ready to build a client.
    pub options: ClientOptions,
    /// What authenticates it, in words, with its source ("device secret from ENOS_DEVICE_SECRET").
    pub description: String,
}

const DEFAULT_TIMEOUT: u64 = 30;

/// The environment as the settings read it (a function, so tests need not change the
/// process's own).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment; an empty variable counts as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The profile file: `$ENOS_CONFIG`, else `$XDG_CONFIG_HOME/enos/profiles.toml`, else
/// `~/.config/enos/profiles.toml`.
pub fn profile_file(env: Env<'_>) -> Option<PathBuf> {
    if let Some(p) = env("ENOS_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let config =
        env("XDG_CONFIG_HOME").map(PathBuf::from).or_else(|| env("HOME").map(|h| Path::new(&h).join(".config")));
    config.map(|c| c.join("enos").join("profiles.toml"))
}

impl Settings {
    /// Resolves every setting from the flags, the environment and the profile file.
    ///
    /// # Errors
    ///
    /// [`CliError::Usage`] for a profile file that does not parse, a profile asked for
    /// that it lacks, or a value that is not what its setting takes.
    pub fn resolve(args: &ConnArgs, env: Env<'_>) -> Result<Self, CliError> {
        let file = profile_file(env);
        let asked = args
            .profile
            .clone()
            .map(|p| (p, Source::Flag("--profile")))
            .or_else(|| env("ENOS_PROFILE").map(|p| (p, Source::Env("ENOS_PROFILE"))));
        let (profile_name, profile) = load_profile(file.as_deref(), asked)?;
        let profile = profile.unwrap_or_default();
        let base = file.as_deref().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
        let pname = profile_name.clone().unwrap_or_default();
        let from_profile = |key: &'static str| Source::Profile { name: pname.clone(), key };

        macro_rules! pick {
            ($flag:expr, $flag_name:literal, $env:literal, $profile:expr, $key:literal, $conv:expr) => {{
                if let Some(v) = $flag {
                    Some(Sourced { value: $conv(v), source: Source::Flag($flag_name) })
                } else if let Some(v) = env($env) {
                    Some(Sourced { value: $conv(v.into()), source: Source::Env($env) })
                } else {
                    $profile.map(|v| Sourced { value: v, source: from_profile($key) })
                }
            }};
        }
        let text = |s: String| s;
        let secret = |s: String| Secret::new(s);
        let path = |p: PathBuf| p;
        // A relative path in a profile is relative to the profile file.
        let rel = |p: Option<PathBuf>| p.map(|p| if p.is_relative() { base.join(p) } else { p });

        let request_timeout = timeout_setting(
            env,
            (args.timeout, "--timeout", "ENOS_TIMEOUT"),
            profile.timeout.map(|v| Sourced { value: v, source: from_profile("timeout") }),
        )?;
        let connect_timeout = timeout_setting(
            env,
            (args.connect_timeout, "--connect-timeout", "ENOS_CONNECT_TIMEOUT"),
            profile.connect_timeout.map(|v| Sourced { value: v, source: from_profile("connect_timeout") }),
        )?;

        let secrets_dir = pick!(
            args.secrets_dir.clone(),
            "--secrets-dir",
            "ENOS_SECRETS_DIR",
            rel(profile.secrets_dir.clone()),
            "secrets_dir",
            path
        )
        .map(|s| s.value)
        .or_else(|| file.as_deref().and_then(Path::parent).map(|d| d.join("secrets")));

        let mut sub_devices =
            secret_list(env, (&args.sub_secret, "--sub-secret", "ENOS_SUB_SECRETS"), "pk/dk", |k| parse_keys(k).ok())?;
        for (keys, secret) in profile.sub_devices {
            let keys =
                parse_keys(&keys).map_err(|e| CliError::Usage(format!("sub_devices of profile {pname}: {e}")))?;
            sub_devices.push((keys, Sourced { value: secret, source: from_profile("sub_devices") }));
        }
        let mut sub_products = secret_list(
            env,
            (&args.sub_product_secret, "--sub-product-secret", "ENOS_SUB_PRODUCT_SECRETS"),
            "pk",
            |k| is_product_key(k).then(|| k.to_owned()),
        )?;
        for (pk, secret) in profile.sub_products {
            sub_products.push((pk, Sourced { value: secret, source: from_profile("sub_products") }));
        }

        Ok(Settings {
            url: pick!(args.url.clone(), "--url", "ENOS_URL", profile.url, "url", text),
            product_key: pick!(
                args.product_key.clone(),
                "--product-key",
                "ENOS_PRODUCT_KEY",
                profile.product_key,
                "product_key",
                text
            ),
            device_key: pick!(
                args.device_key.clone(),
                "--device-key",
                "ENOS_DEVICE_KEY",
                profile.device_key,
                "device_key",
                text
            ),
            device_secret: pick!(
                args.device_secret.clone(),
                "--device-secret",
                "ENOS_DEVICE_SECRET",
                profile.device_secret,
                "device_secret",
                secret
            ),
            product_secret: pick!(
                args.product_secret.clone(),
                "--product-secret",
                "ENOS_PRODUCT_SECRET",
                profile.product_secret,
                "product_secret",
                secret
            ),
            cert: pick!(args.cert.clone(), "--cert", "ENOS_CERT", rel(profile.cert), "cert", path),
            key: pick!(args.key.clone(), "--key", "ENOS_KEY", rel(profile.key), "key", path),
            pfx: pick!(args.pfx.clone(), "--pfx", "ENOS_PFX", rel(profile.pfx), "pfx", path),
            passphrase: pick!(
                args.passphrase.clone(),
                "--passphrase",
                "ENOS_PASSPHRASE",
                profile.passphrase,
                "passphrase",
                secret
            ),
            ca: pick!(args.ca.clone(), "--ca", "ENOS_CA", rel(profile.ca), "ca", path),
            server_name: pick!(
                args.server_name.clone(),
                "--server-name",
                "ENOS_SERVER_NAME",
                profile.server_name,
                "server_name",
                text
            ),
            request_timeout,
            connect_timeout,
            secrets: secrets_dir.map(|dir| SecretFiles { dir }),
            sub_devices,
            sub_products,
            profile: profile_name.zip(file),
        })
    }

    fn missing(&self, what: &str, ways: Vec<(&'static str, &'static str, &'static str)>) -> CliError {
        let profile =
            self.profile.as_ref().map(|(name, file)| format!("profile {name} of {} has none", file.display()));
        CliError::Missing(Missing { what: what.to_owned(), ways, profile })
    }

    /// The broker URL.
    ///
    /// # Errors
    ///
    /// [`CliError::Missing`] when no source gives it.
    pub fn url(&self) -> Result<&str, CliError> {
        self.url
            .as_ref()
            .map(|u| u.value.as_str())
            .ok_or_else(|| self.missing("the broker URL", vec![("--url", "ENOS_URL", "url")]))
    }

    /// The device's keys.
    ///
    /// # Errors
    ///
    /// [`CliError::Missing`] when a key is not given, [`CliError::Usage`] when one is
    /// not a valid key.
    pub fn device(&self) -> Result<DeviceKeys, CliError> {
        let pk = self.product_key.as_ref().ok_or_else(|| {
            self.missing("the product key", vec![("--product-key", "ENOS_PRODUCT_KEY", "product_key")])
        })?;
        let dk = self
            .device_key
            .as_ref()
            .ok_or_else(|| self.missing("the device key", vec![("--device-key", "ENOS_DEVICE_KEY", "device_key")]))?;
        DeviceKeys::new(&pk.value, &dk.value).map_err(|e| CliError::Usage(e.to_string()))
    }

    /// The client options: URL, keys, credentials (with the secret kept by an earlier
    /// activation when no device secret is given), TLS files read, timeouts.
    ///
    /// # Errors
    ///
    /// [`CliError::Missing`] naming the setting no source gives, [`CliError::Io`] for a
    /// file that cannot be read, [`CliError::Usage`] for options that cannot work
    /// together.
    pub fn credentials(&self) -> Result<Credentials, CliError> {
        let url = self.url()?;
        let device = self.device()?;
        let mut o = ClientOptions::new(url, device.product_key(), device.device_key());
        self.transport_options(&mut o)?;
        let kept = self.secrets.as_ref().and_then(|s| s.read(&device));
        let secret = self.device_secret.clone().or(kept);
        let described = |what: &str, source: &Source| format!("{what} (from {source})");
        let description = if o.cert.is_some() || o.pfx.is_some() {
            o.secure_mode = SecureMode::Certificate;
            let id = self.cert.as_ref().or(self.pfx.as_ref()).map(|c| c.source.clone()).unwrap_or(Source::Default);
            o.device_secret = secret.map(|s| s.value);
            described("client certificate", &id)
        } else if let Some(s) = secret {
            o.secure_mode = SecureMode::DeviceSecret;
            o.device_secret = Some(s.value);
            described("device secret", &s.source)
        } else if let Some(p) = &self.product_secret {
            o.secure_mode = SecureMode::ProductSecret;
            o.product_secret = Some(p.value.clone());
            let files = self.secrets_ready("dynamic activation")?.clone();
            o.secret_store = Some(SecretStore::new(move |keys, secret| {
                files.keep(keys, secret).map(drop).map_err(|e| e.to_string())
            }));
            described("product secret, dynamic activation", &p.source)
        } else {
            return Err(self.missing(
                "the device's credentials",
                vec![
                    ("--device-secret", "ENOS_DEVICE_SECRET", "device_secret"),
                    ("--product-secret", "ENOS_PRODUCT_SECRET", "product_secret"),
                    ("--cert and --key", "ENOS_CERT and ENOS_KEY", "cert` and `key"),
                ],
            ));
        };
        Ok(Credentials { options: o, description })
    }

    /// The options of the product's message-integration channel (secure mode 4): the URL,
    /// the product key and its secret, TLS files and timeouts. The device key and secret
    /// are not used.
    ///
    /// # Errors
    ///
    /// [`CliError::Missing`] naming the setting no source gives, [`CliError::Io`] for a
    /// file that cannot be read.
    pub fn channel_credentials(&self) -> Result<Credentials, CliError> {
        let url = self.url()?;
        let product = self.product_key.as_ref().ok_or_else(|| {
            self.missing("the product key", vec![("--product-key", "ENOS_PRODUCT_KEY", "product_key")])
        })?;
        let secret = self.product_secret.as_ref().ok_or_else(|| {
            self.missing(
                "the product secret, which signs the integration channel in",
                vec![("--product-secret", "ENOS_PRODUCT_SECRET", "product_secret")],
            )
        })?;
        let mut o = ClientOptions::integration_channel(url, &product.value, secret.value.clone());
        self.transport_options(&mut o)?;
        Ok(Credentials {
            options: o,
            description: format!("product secret, integration channel (from {})", secret.source),
        })
    }

    /// Sets what both kinds of connection share: timeouts, and the TLS files read.
    fn transport_options(&self, o: &mut ClientOptions) -> Result<(), CliError> {
        o.connection_timeout = self.connect_timeout.value;
        o.request_timeout = self.request_timeout.value;
        let read = |f: &Option<Sourced<PathBuf>>, what: &str| -> Result<Option<Vec<u8>>, CliError> {
            f.as_ref()
                .map(|p| {
                    std::fs::read(&p.value)
                        .map_err(|e| CliError::io(format!("{what} {} (from {})", p.value.display(), p.source), e))
                })
                .transpose()
        };
        o.ca = read(&self.ca, "CA file")?;
        o.cert = read(&self.cert, "certificate")?;
        o.key = read(&self.key, "private key")?;
        o.pfx = read(&self.pfx, "PKCS#12 file")?;
        o.passphrase = self.passphrase.as_ref().map(|p| p.value.clone());
        o.server_name = self.server_name.as_ref().map(|s| s.value.clone());
        Ok(())
    }

    /// How sub-device `keys` signs in: its device secret (given, or kept by an earlier
    /// registration or activation), else its product's secret (dynamic activation).
    ///
    /// # Errors
    ///
    /// [`CliError::Missing`] when no source has a secret for it.
    pub fn sub_device(&self, keys: &DeviceKeys) -> Result<SubDeviceInfo, CliError> {
        // Flags before the environment before the profile: the order they were read in.
        if let Some((_, s)) = self.sub_devices.iter().find(|(k, _)| k == keys) {
            return Ok(SubDeviceInfo::new(keys.clone(), s.value.clone()));
        }
        if let Some(s) = self.secrets.as_ref().and_then(|f| f.read(keys)) {
            return Ok(SubDeviceInfo::new(keys.clone(), s.value));
        }
        if let Some((_, s)) = self.sub_products.iter().find(|(pk, _)| pk == keys.product_key()) {
            return Ok(SubDeviceInfo::with_product_secret(keys.clone(), s.value.clone()));
        }
        Err(CliError::Missing(Missing {
            what: format!("the secret of sub-device {keys}"),
            ways: vec![
                ("--sub-secret PK/DK=SECRET", "ENOS_SUB_SECRETS", "sub_devices"),
                ("--sub-product-secret PK=SECRET", "ENOS_SUB_PRODUCT_SECRETS", "sub_products"),
            ],
            profile: self.profile.as_ref().map(|(name, file)| format!("profile {name} of {} has none", file.display())),
        }))
    }

    /// Whether the login of sub-device `keys` may have the cloud issue it a secret: no
    /// secret is known for it, and its product's is (dynamic activation).
    pub fn may_issue(&self, keys: &DeviceKeys) -> bool {
        !self.sub_devices.iter().any(|(k, _)| k == keys)
            && self.secrets.as_ref().and_then(|f| f.read(keys)).is_none()
            && self.sub_products.iter().any(|(pk, _)| pk == keys.product_key())
    }

    /// The secrets folder, made if need be and tried with a file, before `what` (a
    /// request that has the cloud issue a secret) is sent: a secret issued is not lost
    /// for want of a place to keep it.
    ///
    /// # Errors
    ///
    /// [`CliError::Usage`] when there is no secrets folder, [`CliError::Io`] when it
    /// cannot be made or written.
    pub fn secrets_ready(&self, what: &str) -> Result<&SecretFiles, CliError> {
        let files = self.secrets.as_ref().ok_or_else(|| {
            CliError::Usage(format!(
                "{what} has the cloud issue a device secret that must be kept, and there is no secrets folder: give --secrets-dir or ENOS_SECRETS_DIR"
            ))
        })?;
        files.check_writable().map_err(|e| {
            CliError::io(
                format!("the secrets folder {}, where {what} keeps the secret the cloud issues", files.dir.display()),
                e,
            )
        })?;
        Ok(files)
    }

    /// The settings in use, one line each, secrets named but never shown (`--verbose`).
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some((name, file)) = &self.profile {
            lines.push(format!("profile {name} from {}", file.display()));
        }
        let plain = |name: &str, v: &Option<Sourced<String>>| match v {
            Some(v) => format!("{name} = {} (from {})", v.value, v.source),
            None => format!("{name}: not set"),
        };
        let hidden = |name: &str, v: &Option<Sourced<Secret>>| match v {
            Some(v) => format!("{name}: set (from {})", v.source),
            None => format!("{name}: not set"),
        };
        let file = |name: &str, v: &Option<Sourced<PathBuf>>| match v {
            Some(v) => format!("{name} = {} (from {})", v.value.display(), v.source),
            None => format!("{name}: not set"),
        };
        lines.push(plain("url", &self.url));
        lines.push(plain("product key", &self.product_key));
        lines.push(plain("device key", &self.device_key));
        lines.push(hidden("device secret", &self.device_secret));
        lines.push(hidden("product secret", &self.product_secret));
        lines.push(file("cert", &self.cert));
        lines.push(file("key", &self.key));
        lines.push(file("pfx", &self.pfx));
        lines.push(hidden("passphrase", &self.passphrase));
        lines.push(file("ca", &self.ca));
        lines.push(plain("server name", &self.server_name));
        lines
            .push(format!("request timeout = {} s (from {})", self.request_timeout.value, self.request_timeout.source));
        lines
            .push(format!("connect timeout = {} s (from {})", self.connect_timeout.value, self.connect_timeout.source));
        match &self.secrets {
            Some(s) => lines.push(format!("secrets folder = {}", s.dir.display())),
            None => lines.push("secrets folder: none".into()),
        }
        for (keys, s) in &self.sub_devices {
            lines.push(format!("sub-device {keys} secret: set (from {})", s.source));
        }
        for (pk, s) in &self.sub_products {
            lines.push(format!("sub-device product {pk} secret: set (from {})", s.source));
        }
        lines
    }
}

/// The profile asked for (or `default`, when the file has one): its name and contents.
fn load_profile(
    file: Option<&Path>,
    asked: Option<(String, Source)>,
) -> Result<(Option<String>, Option<Profile>), CliError> {
    let text = match file.map(|f| (f, std::fs::read_to_string(f))) {
        Some((_, Ok(text))) => Some(text),
        Some((f, Err(e))) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(CliError::Usage(format!("profile file {}: {e}", f.display())));
        }
        _ => None,
    };
    let Some(text) = text else {
        return match asked {
            Some((name, source)) => Err(CliError::Usage(format!(
                "profile {name} (from {source}): no profile file at {}; set ENOS_CONFIG to the file",
                file.map_or_else(
                    || "$XDG_CONFIG_HOME/enos/profiles.toml or ~/.config/enos/profiles.toml".into(),
                    |f| f.display().to_string()
                )
            ))),
            None => Ok((None, None)),
        };
    };
    let file = file.map(Path::display).map(|d| d.to_string()).unwrap_or_default();
    let mut profiles: BTreeMap<String, Profile> = toml::from_str(&text)
        .map_err(|e| CliError::Usage(format!("profile file {file}: {}", toml_error(&text, &e))))?;
    match asked {
        Some((name, source)) => match profiles.remove(&name) {
            Some(p) => Ok((Some(name), Some(p))),
            None => {
                let known: Vec<&str> = profiles.keys().map(String::as_str).collect();
                Err(CliError::Usage(format!(
                    "profile {name} (from {source}) is not in {file}; it has: {}",
                    if known.is_empty() { "no profile".to_owned() } else { known.join(", ") }
                )))
            }
        },
        None => Ok(match profiles.remove("default") {
            Some(p) => (Some("default".to_owned()), Some(p)),
            None => (None, None),
        }),
    }
}

/// A profile file's parse error, said without the file's text: toml's own text quotes the
/// line, which may hold a secret (a mistyped `device_secrt = "..."`, an unclosed quote).
/// Where (line and column) and what; where the key is a secret's (or the table one of
/// sub-device secrets), no value either: "invalid type (the value is not shown),
/// expected a string".
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message();
    let Some(at) = e.span().map(|s| s.start.min(text.len())) else {
        return message.to_owned();
    };
    // A position inside a character (none should be) counts as a secret's.
    let Some(before) = text.get(..at) else {
        return "the file does not parse (where is not shown)".to_owned();
    };
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    let line_text = text[line_start..].split('\n').next().unwrap_or("");
    let table = before[..line_start].lines().rev().map(str::trim).find(|l| l.starts_with('[')).unwrap_or("");
    let (key, value) = line_text.split_once('=').unwrap_or((line_text, ""));
    let value = value.trim().trim_matches(['"', '\'']).trim();
    let secretish = |s: &str| {
        let s = s.to_ascii_lowercase();
        ["secr", "pass", "sub_devices", "sub_products"].iter().any(|w| s.contains(w))
    };
    let said = if secretish(key) || secretish(&before[line_start..]) || secretish(table) {
        let leaks = |m: &str| !value.is_empty() && m.contains(value);
        match message.split_once(": ") {
            // serde's "invalid type: string \"...\", expected a string" quotes the value.
            Some((head, _)) if head.starts_with("invalid ") => {
                let expected = message.rfind(", expected ").map_or("", |i| &message[i..]);
                let expected = if leaks(expected) { "" } else { expected };
                format!("{head} (the value is not shown){expected}")
            }
            _ if leaks(message) => "the value is not valid (it is not shown)".to_owned(),
            _ => message.to_owned(),
        }
    } else {
        message.to_owned()
    };
    format!("line {line}, column {column}: {said}")
}

/// A comma-separated list of an environment variable.
fn list(var: Option<String>) -> impl Iterator<Item = String> {
    var.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect::<Vec<_>>()
        .into_iter()
}

/// A timeout in seconds: the flag `(value, name, variable)`, else its environment
/// variable, else the profile's, else the default.
fn timeout_setting(
    env: Env<'_>,
    (flag, flag_name, var): (Option<u64>, &'static str, &'static str),
    profile: Option<Sourced<u64>>,
) -> Result<Sourced<u64>, CliError> {
    if let Some(v) = flag {
        return Ok(Sourced { value: v, source: Source::Flag(flag_name) });
    }
    if let Some(v) = env(var) {
        let n =
            v.trim().parse::<u64>().map_err(|_| CliError::Usage(format!("{var}: {v:?} is not a number of seconds")))?;
        return Ok(Sourced { value: n, source: Source::Env(var) });
    }
    Ok(profile.unwrap_or(Sourced { value: DEFAULT_TIMEOUT, source: Source::Default }))
}

/// The `KEY=SECRET` entries of a flag `(values, name, variable)`, then of its
/// comma-separated environment variable: each key as `key` reads it (`what` says what
/// it should be). An entry that is not one is named by its source only: nothing of it is
/// shown, since the secret may be anywhere in it.
fn secret_list<K>(
    env: Env<'_>,
    (flags, flag, var): (&[String], &'static str, &'static str),
    what: &str,
    key: impl Fn(&str) -> Option<K>,
) -> Result<Vec<(K, Sourced<Secret>)>, CliError> {
    let from_flags = flags.iter().map(|s| (s.clone(), Source::Flag(flag)));
    let from_env = list(env(var)).map(|s| (s, Source::Env(var)));
    from_flags
        .chain(from_env)
        .map(|(text, source)| {
            let bad = |why: String| CliError::Usage(format!("{source}: {why} (the entry is not shown)"));
            let (k, secret) = text.split_once('=').ok_or_else(|| bad(format!("expected {what}=SECRET, got no `=`")))?;
            let k = key(k).ok_or_else(|| bad(format!("expected {what} before `=`")))?;
            Ok((k, Sourced { value: Secret::new(secret), source }))
        })
        .collect()
}

/// Whether `text` can be a product key (the part before `=` of `--sub-product-secret`).
fn is_product_key(text: &str) -> bool {
    !text.is_empty() && !text.contains('/') && DeviceKeys::new(text, "_").is_ok()
}

/// `pk/dk` as device keys.
///
/// # Errors
///
/// What is wrong with it, in words.
pub fn parse_keys(text: &str) -> Result<DeviceKeys, String> {
    let (pk, dk) = text.split_once('/').ok_or_else(|| format!("{text:?} is not pk/dk"))?;
    DeviceKeys::new(pk, dk).map_err(|e| format!("{text:?}: {e}"))
}

/// The folder where issued device secrets are kept, one file per device
/// (`PK/DK.secret`, names escaped), written atomically and readable by their owner only.
#[derive(Debug, Clone)]
pub struct SecretFiles {
    /// The folder.
    pub dir: PathBuf,
}

impl SecretFiles {
    /// The file of `keys`'s secret.
    pub fn path(&self, keys: &DeviceKeys) -> PathBuf {
        self.dir.join(escape(keys.product_key())).join(format!("{}.secret", escape(keys.device_key())))
    }

    /// The secret kept for `keys`, if any.
    pub fn read(&self, keys: &DeviceKeys) -> Option<Sourced<Secret>> {
        let path = self.path(keys);
        let text = std::fs::read_to_string(&path).ok()?;
        let text = text.trim_end_matches(['\r', '\n']);
        (!text.is_empty()).then(|| Sourced { value: Secret::new(text), source: Source::Kept(path) })
    }

    /// Keeps `secret` for `keys`: written to a temporary file (mode 0600), synced and
    /// renamed over the old one. Its path.
    ///
    /// # Errors
    ///
    /// The I/O error.
    pub fn keep(&self, keys: &DeviceKeys, secret: &Secret) -> std::io::Result<PathBuf> {
        let path = self.path(keys);
        make_private_dir(path.parent().unwrap_or(&self.dir))?;
        let mut text = String::with_capacity(secret.expose().len() + 1);
        text.push_str(secret.expose());
        text.push('\n');
        crate::fsio::write_atomic(&path, ".tmp", text.as_bytes(), Some(0o600))?;
        Ok(path)
    }

    /// Checks that secrets can be kept: the folder exists (it is made when it does not)
    /// and a file can be written in it (one is, and removed). Done before a request that
    /// may have the cloud issue a secret, so that an issued secret is not lost.
    ///
    /// # Errors
    ///
    /// The I/O error.
    pub fn check_writable(&self) -> std::io::Result<()> {
        make_private_dir(&self.dir)?;
        let probe = self.dir.join(format!(".enos-probe-{}", std::process::id()));
        crate::fsio::write_atomic(&probe, ".tmp", b"", Some(0o600))?;
        std::fs::remove_file(&probe)
    }
}

/// Makes `dir` and its parents, readable by their owner only (when they are made).
fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// A key as a file name: letters, digits, `-` and `_` as they are, every other byte as
/// `%XX` (so `..` or a leading dot cannot name another folder).
fn escape(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name: &str| map.get(name).cloned()
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("enos-cli-settings-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn flags_beat_the_environment_which_beats_the_profile() {
        let dir = temp("precedence");
        let file = dir.join("profiles.toml");
        std::fs::write(
            &file,
            "[lab]\nurl = \"tcp://profile:1\"\nproduct_key = \"ppk\"\ndevice_key = \"pdk\"\ndevice_secret = \"profile-secret\"\nca = \"ca.pem\"\n",
        )
        .unwrap();
        let config = file.to_str().unwrap();
        let env = env_of(&[
            ("ENOS_CONFIG", config),
            ("ENOS_PROFILE", "lab"),
            ("ENOS_PRODUCT_KEY", "epk"),
            ("ENOS_URL", "tcp://env:2"),
        ]);
        let args = ConnArgs { url: Some("tcp://flag:3".into()), ..Default::default() };
        let s = Settings::resolve(&args, &env).unwrap();
        assert_eq!(s.url.as_ref().unwrap().value, "tcp://flag:3");
        assert_eq!(s.url.as_ref().unwrap().source, Source::Flag("--url"));
        assert_eq!(s.product_key.as_ref().unwrap().value, "epk");
        assert_eq!(s.device_key.as_ref().unwrap().source, Source::Profile { name: "lab".into(), key: "device_key" });
        assert_eq!(s.device_secret.as_ref().unwrap().value.expose(), "profile-secret");
        // A relative path of a profile is relative to its file.
        assert_eq!(s.ca.as_ref().unwrap().value, dir.join("ca.pem"));
        assert_eq!(s.secrets.as_ref().unwrap().dir, dir.join("secrets"));
        // Nothing `--verbose` shows holds a secret.
        let shown = s.describe().join("\n");
        assert!(!shown.contains("profile-secret"), "{shown}");
        assert!(shown.contains("device secret: set (from `device_secret` of profile lab)"), "{shown}");
    }

    #[test]
    fn profile_errors_are_named() {
        let dir = temp("errors");
        let file = dir.join("profiles.toml");
        std::fs::write(&file, "[lab]\nurll = \"x\"\n").unwrap();
        let config = file.to_str().unwrap();
        let env = env_of(&[("ENOS_CONFIG", config), ("ENOS_PROFILE", "lab")]);
        let e = Settings::resolve(&ConnArgs::default(), &env).err().unwrap();
        assert!(e.to_string().contains("unknown field `urll`"), "{e}");
        std::fs::write(&file, "[lab]\nurl = \"x\"\n").unwrap();
        let env = env_of(&[("ENOS_CONFIG", config), ("ENOS_PROFILE", "prod")]);
        let e = Settings::resolve(&ConnArgs::default(), &env).err().unwrap();
        assert!(
            e.to_string().contains("profile prod (from ENOS_PROFILE) is not in") && e.to_string().contains("lab"),
            "{e}"
        );
        // Without a profile asked for, a missing file is no error.
        let env = env_of(&[("ENOS_CONFIG", dir.join("none.toml").to_str().unwrap())]);
        assert!(Settings::resolve(&ConnArgs::default(), &env).unwrap().profile.is_none());
    }

    #[test]
    fn a_profile_that_does_not_parse_is_placed_without_its_text() {
        let dir = temp("parse");
        let file = dir.join("profiles.toml");
        let env = env_of(&[("ENOS_CONFIG", file.to_str().unwrap())]);
        for (text, want) in [
            (
                "[default]\nurl = \"u\"\ndevice_secrt = \"s3cret-typo\"\n",
                "line 3, column 1: unknown field `device_secrt`",
            ),
            ("[default]\ndevice_secret = \"s3cret-open\n", "profile file"),
            ("[default]\ndevice_secret = 424242\n", "invalid type (the value is not shown), expected a string"),
            ("[default.sub_devices]\n\"pk/dk\" = 9191919\n", "invalid type (the value is not shown)"),
            // A value that is no secret is said.
            ("[default]\ntimeout = \"soon\"\n", "invalid type: string \"soon\", expected u64"),
        ] {
            std::fs::write(&file, text).unwrap();
            let e = Settings::resolve(&ConnArgs::default(), &env).err().unwrap();
            let said = format!("{e} {e:?} {}", e.to_json());
            assert!(e.exit_code() == 2 && said.contains(want) && said.contains("line "), "{text:?}: {said}");
            for secret in ["s3cret", "424242", "9191919"] {
                assert!(!said.contains(secret), "{text:?}: {said}");
            }
        }
    }

    #[test]
    fn a_malformed_sub_secret_is_named_and_never_shown() {
        for (args, want) in [
            (
                ConnArgs { sub_secret: vec!["s3cret-a=pk/dk".into()], ..Default::default() },
                "--sub-secret: expected pk/dk before `=`",
            ),
            (ConnArgs { sub_secret: vec!["s3cret-b".into()], ..Default::default() }, "got no `=`"),
            (
                ConnArgs { sub_product_secret: vec!["s3cret/c=pk".into()], ..Default::default() },
                "--sub-product-secret: expected pk before `=`",
            ),
        ] {
            let shown = format!("{args:?}");
            assert!(!shown.contains("s3cret"), "{shown}");
            let e = Settings::resolve(&args, &env_of(&[])).err().unwrap();
            let said = format!("{e} {e:?}");
            assert!(said.contains(want) && !said.contains("s3cret"), "{said}");
        }
        let env = env_of(&[("ENOS_SUB_SECRETS", "pk/dk=good,s3cret-d=x/y")]);
        let e = Settings::resolve(&ConnArgs::default(), &env).err().unwrap().to_string();
        assert!(e.contains("ENOS_SUB_SECRETS: expected pk/dk before `=`") && !e.contains("s3cret"), "{e}");
    }

    #[test]
    fn missing_credentials_name_every_way() {
        let env = env_of(&[("ENOS_URL", "tcp://h:1"), ("ENOS_PRODUCT_KEY", "pk"), ("ENOS_DEVICE_KEY", "dk")]);
        let e = Settings::resolve(&ConnArgs::default(), &env).unwrap().credentials().err().unwrap();
        let text = e.to_string();
        for part in ["--device-secret", "ENOS_DEVICE_SECRET", "--product-secret", "ENOS_CERT"] {
            assert!(text.contains(part), "{text}");
        }
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn the_integration_channel_signs_in_with_the_product_secret_alone() {
        let env =
            env_of(&[("ENOS_URL", "tcp://h:1"), ("ENOS_PRODUCT_KEY", "pk"), ("ENOS_DEVICE_SECRET", "dev-s3cret")]);
        let e = Settings::resolve(&ConnArgs::default(), &env).unwrap().channel_credentials().err().unwrap();
        assert!(e.to_string().contains("the product secret") && e.to_string().contains("ENOS_PRODUCT_SECRET"), "{e}");
        let args = ConnArgs { product_secret: Some("prod-s3cret".into()), ..Default::default() };
        let c = Settings::resolve(&args, &env).unwrap().channel_credentials().unwrap();
        assert_eq!(c.options.secure_mode, SecureMode::Integration);
        assert_eq!(c.options.device_key, enos_transport_blocking::proto::INTEGRATION_DEVICE_KEY);
        assert_eq!(c.description, "product secret, integration channel (from --product-secret)");
        assert!(c.options.device_secret.is_none() && !format!("{:?}", c.options).contains("s3cret"));
    }

    #[test]
    fn a_secrets_folder_is_made_and_tried_before_it_is_needed() {
        let dir = temp("probe");
        let files = SecretFiles { dir: dir.join("made/secrets") };
        files.check_writable().unwrap();
        assert!(files.dir.is_dir());
        assert_eq!(std::fs::read_dir(&files.dir).unwrap().count(), 0, "the probe is left behind");
        // Under a file: no folder can be made there.
        std::fs::write(dir.join("plain"), "").unwrap();
        assert!(SecretFiles { dir: dir.join("plain/secrets") }.check_writable().is_err());
    }

    #[test]
    fn kept_secrets_are_private_files_with_safe_names() {
        let dir = temp("kept");
        let files = SecretFiles { dir: dir.clone() };
        let keys = DeviceKeys::new("..", "a.b").unwrap();
        let path = files.keep(&keys, &Secret::new("s3")).unwrap();
        assert!(path.starts_with(&dir) && path.ends_with("%2E%2E/a%2Eb.secret"), "{}", path.display());
        assert_eq!(files.read(&keys).unwrap().value.expose(), "s3");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
