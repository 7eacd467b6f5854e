use serde::{Deserialize, Serialize};

use super::{json_reply, unit_reply, write_json, EncodeContext, Operation};
use crate::envelope::Reply;
use crate::error::{EncodeError, RequestError};

/// The product's thing model as the cloud sends it (row 20). The inner shapes are not
/// specified, so they stay JSON.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TslTemplate {
    /// Attributes by identifier.
    pub tsl_attribute_map: serde_json::Map<String, serde_json::Value>,
    /// Measure points by identifier.
    pub tsl_measurepoint_map: serde_json::Map<String, serde_json::Value>,
    /// Events by identifier.
    pub tsl_event_map: serde_json::Map<String, serde_json::Value>,
    /// Services by identifier.
    pub tsl_service_map: serde_json::Map<String, serde_json::Value>,
}

/// A firmware offered to the device (rows 23 and the OTA upgrade push).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Firmware {
    /// The firmware version.
    pub version: String,
    /// The digest of the file (`md5`, `sha256`, ...).
    #[serde(default)]
    pub sign_method: String,
    /// The digest value.
    #[serde(default)]
    pub sign: String,
    /// Where to download it.
    #[serde(default)]
    pub file_url: String,
    /// Its size in bytes.
    #[serde(default)]
    pub file_size: u64,
}

macro_rules! simple_op {
    ($(#[$doc:meta])* $name:ident { $($field:ident : $ty:ty),* }, $path:literal, $method:literal, $data:ty, $parse:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
        pub struct $name {
            $(
                #[allow(missing_docs)]
                pub $field: $ty,
            )*
        }

        impl Operation for $name {
            type Data = $data;
            fn write_path(&self, out: &mut String) {
                out.push_str($path);
            }
            fn write_method(&self, out: &mut String) {
                out.push_str($method);
            }
            fn write_params(&self, _: &EncodeContext<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
                write_json(out, self)
            }
            fn parse_reply(reply: &Reply) -> Result<$data, RequestError> {
                $parse(reply)
            }
        }
    };
}

simple_op!(
    /// Row 20, `thing.tsltemplate.get`: the product's thing model.
    TslTemplateGet {},
    "thing/tsltemplate/get",
    "thing.tsltemplate.get",
    TslTemplate,
    json_reply
);
simple_op!(
    /// Row 21, `ota.device.inform`: report the running firmware `version`.
    OtaInform { version: String },
    "ota/device/inform",
    "ota.device.inform",
    (),
    unit_reply
);
simple_op!(
    /// Row 22, `ota.device.progress`: report an upgrade's progress. `step` is `"0"` to
    /// `"100"`, or `"-1"` failed, `"-2"` download failed, `"-3"` verification failed,
    /// `"-4"` burn failed, `"-5"` upgrade ignored; `desc` says what is happening.
    OtaProgress { step: String, desc: String },
    "ota/device/progress",
    "ota.device.progress",
    (),
    unit_reply
);
simple_op!(
    /// Row 23, `ota.device.getversion`: the firmwares available to the device.
    OtaGetVersion {},
    "ota/device/getversion",
    "ota.device.getversion",
    Vec<Firmware>,
    json_reply
);

impl OtaInform {
    /// Report `version`.
    pub fn new(version: impl Into<String>) -> Self {
        OtaInform { version: version.into() }
    }
}

impl OtaProgress {
    /// Report `step` with a description.
    pub fn new(step: impl Into<String>, desc: impl Into<String>) -> Self {
        OtaProgress { step: step.into(), desc: desc.into() }
    }
}
