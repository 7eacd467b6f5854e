//! Typed upstream operations (spec §5): one type per operation, each knowing its topic,
//! method, parameters and the type of its reply's `data`.
//!
//! A client sends any of them through `Client::request`; a gateway sends rows 1-12 and
//! 20-23 on behalf of a logged-in sub-device with `RequestOptions::target`.

use bytes::Bytes;
use serde::Serialize;

use crate::envelope::Reply;
use crate::error::{EncodeError, RequestError};
use crate::sign::{SecureMode, SignMethod};
use crate::topic::{DeviceKeys, Scope};
use crate::Secret;

mod attribute;
mod diagnostics;
mod event;
mod firmware_check;
mod integration;
mod measurepoint;
mod ota;
mod raw;
mod sub_device;
mod tag;

pub use attribute::{AttributeDelete, AttributeQuery, AttributeUpdate};
pub use diagnostics::{ConnectionNode, ConnectionStatePost, LogPost, NetworkStatusReport, NodeState};
pub use event::EventPost;
pub use firmware_check::{FirmwareCheck, FirmwareError};
pub use integration::{IntegrationEntry, IntegrationKind, IntegrationPost, IntegrationRawUp};
pub use measurepoint::{
    BatchEntry, MeasurepointBatchPost, MeasurepointBatchResume, MeasurepointPost, MeasurepointResume,
};
pub use ota::{Firmware, OtaGetVersion, OtaInform, OtaProgress, TslTemplate, TslTemplateGet};
pub use raw::RawUp;
pub use sub_device::{
    BatchLoginResult, DeviceName, LoginResult, RegisteredDevice, SubDeviceBatchLogin, SubDeviceLogin, SubDeviceLogout,
    SubDeviceRegister, SubDeviceRegistration, TopoAdd, TopoDelete, TopoEntry, TopoGet,
};
pub use tag::{TagDelete, TagQuery, TagUpdate};

/// What an operation may use while it encodes itself.
#[derive(Debug, Clone, Copy)]
pub struct EncodeContext<'a> {
    /// Wall-clock time of the request (`time` defaults, signature timestamps).
    pub unix_ms: u64,
    /// The keys of the connected device or gateway itself.
    pub own: &'a DeviceKeys,
}

/// One upstream operation of spec §5.
///
/// The core builds the topic `/{scope}/{pk}/{dk}/{path}` from the target's keys and, for
/// JSON operations, the envelope `{"id","version","params","method"[,extras]}`.
pub trait Operation {
    /// The typed `data` of a successful reply.
    type Data;

    /// The topic family: `/sys/` for most operations, `/ext/session/` for logins.
    fn scope(&self) -> Scope {
        Scope::Sys
    }

    /// Appends the whole topic for `keys`: `/{scope}/{pk}/{dk}/{path}` unless the
    /// operation's topics are of another form (the integration channel's name the
    /// product only).
    fn write_topic(&self, keys: &DeviceKeys, out: &mut String) {
        crate::topic::write_topic(out, self.scope(), keys, "");
        self.write_path(out);
    }

    /// Appends the topic path below `/{pk}/{dk}/`, e.g. `thing/tag/query`.
    fn write_path(&self, out: &mut String);

    /// Whether the operation always uses the gateway's own keys (rows 13-19).
    fn gateway_only(&self) -> bool {
        false
    }

    /// Appends the JSON `method`.
    fn write_method(&self, out: &mut String);

    /// Appends the JSON `params`: valid JSON text (it goes into the envelope as it is).
    ///
    /// # Errors
    ///
    /// An [`EncodeError`] when the parameters cannot be written.
    fn write_params(&self, ctx: &EncodeContext<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError>;

    /// Extra top-level boolean fields of the envelope (the batch flags).
    fn extras(&self) -> &[(&'static str, bool)] {
        &[]
    }

    /// For raw operations: the bytes to publish as they are, with no envelope. Their
    /// replies are matched per topic, oldest first.
    fn raw_payload(&self) -> Option<&Bytes> {
        None
    }

    /// The typed `data` of a reply.
    ///
    /// # Errors
    ///
    /// [`RequestError::Rejected`] for a code other than 200, [`RequestError::BadReply`]
    /// for `data` of the wrong shape.
    fn parse_reply(reply: &Reply) -> Result<Self::Data, RequestError>;

    /// What a successful reply changes in the session (logins to restore after a
    /// reconnect). Only the crate's own operations have one.
    #[doc(hidden)]
    fn session_effect(&self) -> SessionEffect {
        SessionEffect(Effect::None)
    }

    /// For an operation carried over the HTTP transport only (files, extensions spec E2):
    /// its exchange, with envelope id `id`. Only the crate's file operations have one.
    #[doc(hidden)]
    fn file_exchange(
        &self,
        _ctx: &EncodeContext<'_>,
        _id: u32,
    ) -> Option<Result<crate::http::FileExchange, EncodeError>> {
        None
    }

    /// Whether the core may keep it in the offline store while the session is down, to
    /// send it later as a resume. Only the crate's measure point posts have one.
    #[doc(hidden)]
    fn offline_form(&self) -> Option<OfflineForm> {
        None
    }
}

/// How a stored post goes out later: as a single or a batch resume.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfflineForm(pub(crate) bool);

/// What a successful reply changes in the core's session state.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct SessionEffect(pub(crate) Effect);

#[derive(Debug, Clone)]
pub(crate) enum Effect {
    None,
    /// These sub-devices are logged in once the reply says so (`batch`: the reply is a
    /// batch login's). A login sent without waiting for its reply is not tracked.
    Login {
        devices: Vec<SubDeviceInfo>,
        batch: bool,
    },
    /// These sub-devices are no longer logged in.
    Logout(Vec<DeviceKeys>),
}

/// An operation encoded for the wire: its topic and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// `/{scope}/{pk}/{dk}/{path}`; the reply comes on this plus `_reply`.
    pub topic: String,
    /// The envelope (JSON operations) or the bytes as given (raw up).
    pub payload: Bytes,
}

/// Encodes `op` for `keys` (the device itself, or a sub-device it acts for) with
/// envelope id `id`, as the client does for each request. Simulators, benchmarks and
/// tests use it to see the exact bytes.
///
/// # Errors
///
/// An [`EncodeError`] when the parameters do not serialize.
pub fn encode<O: Operation + ?Sized>(
    op: &O,
    keys: &DeviceKeys,
    id: u32,
    ctx: &EncodeContext<'_>,
) -> Result<Encoded, EncodeError> {
    let mut topic = String::new();
    op.write_topic(keys, &mut topic);
    let mut payload = Vec::new();
    encode_payload(op, id, ctx, &mut payload, &mut String::new())?;
    Ok(Encoded { topic, payload: op.raw_payload().cloned().unwrap_or_else(|| Bytes::from(payload)) })
}

/// Writes the JSON envelope of `op` with id `id` into `out` (nothing for raw operations).
pub(crate) fn encode_payload<O: Operation + ?Sized>(
    op: &O,
    id: u32,
    ctx: &EncodeContext<'_>,
    out: &mut Vec<u8>,
    method: &mut String,
) -> Result<(), EncodeError> {
    if op.raw_payload().is_some() {
        return Ok(());
    }
    method.clear();
    op.write_method(method);
    crate::envelope::write_request(out, id, method, op.extras(), |out| op.write_params(ctx, out))
}

/// `data` of a successful reply, ignored (`{}`).
pub(crate) fn unit_reply(reply: &Reply) -> Result<(), RequestError> {
    match reply {
        Reply::Delivered => Ok(()),
        r => r.json()?.success().map(drop),
    }
}

/// `data` of a successful reply, deserialized.
pub(crate) fn json_reply<T: serde::de::DeserializeOwned + Default>(reply: &Reply) -> Result<T, RequestError> {
    match reply {
        Reply::Delivered => Ok(T::default()),
        r => {
            let j = r.json()?.success()?;
            if j.data_json().is_none() {
                Ok(T::default())
            } else {
                j.data()
            }
        }
    }
}

pub(crate) fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), EncodeError> {
    serde_json::to_writer(JsonOut(out), value).map_err(|e| EncodeError::Json(e.to_string()))
}

/// The JSON writer's output. serde_json writes punctuation one or two bytes at a time;
/// those are pushed here rather than copied with a call to `memcpy` each.
struct JsonOut<'a>(&'a mut Vec<u8>);

impl std::io::Write for JsonOut<'_> {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    #[inline]
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if buf.len() <= 2 {
            for &b in buf {
                self.0.push(b);
            }
        } else {
            self.0.extend_from_slice(buf);
        }
        Ok(())
    }

    #[inline]
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// TSL identifiers (measure points, events, services) are `[A-Za-z0-9_]+`.
pub(crate) fn check_identifier(what: &'static str, id: &str) -> Result<(), EncodeError> {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(())
    } else {
        Err(EncodeError::Invalid { what, value: id.to_owned() })
    }
}

/// A sub-device's identity and the secret it signs with (the seed's `SubDeviceInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubDeviceInfo {
    /// Product key and device key.
    pub keys: DeviceKeys,
    /// The device secret (secure mode 2) or the product secret (secure mode 3).
    pub secret: Secret,
    /// Which secret [`SubDeviceInfo::secret`] is.
    pub mode: SecureMode,
    /// The sign method; `sha256` by default.
    pub sign_method: SignMethod,
    /// The client id signed in; the device key when `None` (as the Node.js SDK does).
    pub client_id: Option<String>,
}

impl SubDeviceInfo {
    /// A sub-device that signs with its device secret (secure mode 2), `sha256`.
    pub fn new(keys: DeviceKeys, device_secret: impl Into<Secret>) -> Self {
        SubDeviceInfo {
            keys,
            secret: device_secret.into(),
            mode: SecureMode::DeviceSecret,
            sign_method: SignMethod::Sha256,
            client_id: None,
        }
    }

    /// A sub-device that activates with its product secret (secure mode 3).
    pub fn with_product_secret(keys: DeviceKeys, product_secret: impl Into<Secret>) -> Self {
        SubDeviceInfo { mode: SecureMode::ProductSecret, ..SubDeviceInfo::new(keys, product_secret) }
    }

    pub(crate) fn client_id(&self) -> &str {
        self.client_id.as_deref().unwrap_or(self.keys.device_key())
    }
}

/// A client id EnOS accepts: 1 to 64 characters, no `|`.
pub(crate) fn check_client_id(id: &str) -> Result<(), EncodeError> {
    if id.is_empty() || id.chars().count() > 64 || id.contains('|') {
        Err(EncodeError::Invalid { what: "client id", value: id.to_owned() })
    } else {
        Ok(())
    }
}
