//! A connected client for one run of a command: connect with the settings, log a
//! sub-device in for `--as`, send requests with the run's options, close.

use enos_transport_blocking::proto::ops::LoginResult;
use enos_transport_blocking::{DeviceKeys, GatewayClient, Qos, RequestOptions, SecureMode};

use crate::error::CliError;
use crate::output::Out;
use crate::settings::{Credentials, Settings};

/// The options every request of a run is sent with.
#[derive(Debug, Clone, Copy)]
pub struct Sending {
    /// QoS of the requests.
    pub qos: Qos,
    /// Whether to wait for the cloud's reply.
    pub need_reply: bool,
}

/// A connected gateway (or device: a device is a gateway that manages no sub-device).
pub struct Session {
    /// The client.
    pub client: GatewayClient,
    /// The broker URL.
    pub url: String,
    /// The device's own keys.
    pub device: DeviceKeys,
    /// How requests are sent.
    pub sending: Sending,
    /// The sub-device `--as` names, once logged in.
    pub target: Option<DeviceKeys>,
}

impl Session {
    /// Connects with `settings`, then logs `as_device` in when given.
    ///
    /// # Errors
    ///
    /// [`CliError::Missing`] for a setting no source gives, [`CliError::Connect`] or
    /// [`CliError::TimedOut`] when the connection does not come up, or the sub-device
    /// login's error.
    pub fn open(
        settings: &Settings,
        out: Out,
        sending: Sending,
        as_device: Option<&DeviceKeys>,
    ) -> Result<Self, CliError> {
        let creds = settings.credentials()?;
        let device = settings.device()?;
        let mut session = Session::connect(settings, creds, device, out, sending)?;
        if let Some(sub) = as_device {
            session.login(settings, sub, out)?;
            session.target = Some(sub.clone());
        }
        Ok(session)
    }

    /// Connects as the product's message-integration channel (secure mode 4).
    ///
    /// # Errors
    ///
    /// [`CliError::Missing`] for a setting no source gives (the URL, the product key or
    /// secret), [`CliError::Connect`] or [`CliError::TimedOut`] when the connection does
    /// not come up.
    pub fn open_channel(settings: &Settings, out: Out, sending: Sending) -> Result<Self, CliError> {
        let creds = settings.channel_credentials()?;
        let device = DeviceKeys::new(&creds.options.product_key, &creds.options.device_key)
            .map_err(|e| CliError::Usage(e.to_string()))?;
        Session::connect(settings, creds, device, out, sending)
    }

    fn connect(
        settings: &Settings,
        creds: Credentials,
        device: DeviceKeys,
        out: Out,
        sending: Sending,
    ) -> Result<Self, CliError> {
        let url = creds.options.broker_url.clone();
        let mode = creds.options.secure_mode;
        let fail = |e| CliError::from_connect(e, &url, &device.to_string(), &creds.description);
        let client = GatewayClient::new(creds.options.clone()).map_err(fail)?;
        out.note(&format!("connecting to {url} as {device} with the {}", creds.description));
        let activated = client.connect().map_err(fail)?;
        if mode == SecureMode::ProductSecret && activated.is_some() {
            if let Some(files) = &settings.secrets {
                out.note(&format!("activated: the issued device secret is kept in {}", files.path(&device).display()));
            }
        }
        out.note("connected");
        Ok(Session { client, url, device, sending, target: None })
    }

    /// The options of a request: the run's QoS and reply, for the `--as` sub-device.
    pub fn opts(&self) -> RequestOptions {
        let o = RequestOptions::new().qos(self.sending.qos).need_reply(self.sending.need_reply);
        match &self.target {
            Some(t) => o.target(t.clone()),
            None => o,
        }
    }

    /// The options of a request for the connected device itself (or, in a batch, for the
    /// devices its entries name): the run's QoS and reply, no target.
    pub fn untargeted(&self) -> RequestOptions {
        RequestOptions::new().qos(self.sending.qos).need_reply(self.sending.need_reply)
    }

    /// The options of a file operation (HTTP only: no QoS, always a reply), for the
    /// device itself.
    pub fn file_opts(&self) -> RequestOptions {
        RequestOptions::new()
    }

    /// The options of a gateway's own request (topology, logins, registration): always
    /// with a reply.
    pub fn own_opts(&self) -> RequestOptions {
        RequestOptions::new().qos(self.sending.qos)
    }

    /// Logs sub-device `keys` in, with the secret the settings have for it; a secret
    /// issued by its dynamic activation is kept in the secrets folder (tried before the
    /// login is sent).
    ///
    /// # Errors
    ///
    /// [`CliError::Missing`] when no secret is known for it, the secrets folder's error
    /// when it activates, or the login's error.
    pub fn login(&self, settings: &Settings, keys: &DeviceKeys, out: Out) -> Result<LoginResult, CliError> {
        let info = settings.sub_device(keys)?;
        if settings.may_issue(keys) {
            settings.secrets_ready(&format!("the login of {keys}"))?;
        }
        out.note(&format!("logging sub-device {keys} in"));
        let r = self
            .client
            .sub_device_management()
            .login_sub_device(info, self.own_opts())
            .map_err(CliError::from_request)?;
        if let Some(secret) = &r.data.device_secret {
            keep_secret(settings, keys, secret, out)?;
        }
        Ok(r.data)
    }

    /// Closes the connection (a DISCONNECT goes out).
    pub fn close(self) {
        let _ = self.client.close();
    }
}

/// Keeps an issued device secret in the secrets folder: its path.
///
/// # Errors
///
/// [`CliError::Usage`] when there is no secrets folder, [`CliError::Io`] when the file
/// cannot be written.
pub fn keep_secret(
    settings: &Settings,
    keys: &DeviceKeys,
    secret: &enos_transport_blocking::Secret,
    out: Out,
) -> Result<std::path::PathBuf, CliError> {
    let files = settings.secrets.as_ref().ok_or_else(|| {
        CliError::Usage(format!(
            "the cloud issued a device secret for {keys}, and there is no secrets folder to keep it in: give --secrets-dir or ENOS_SECRETS_DIR"
        ))
    })?;
    let path = files
        .keep(keys, secret)
        .map_err(|e| CliError::io(format!("keeping the secret of {keys} in {}", files.dir.display()), e))?;
    out.note(&format!("the device secret of {keys} is kept in {}", path.display()));
    Ok(path)
}
