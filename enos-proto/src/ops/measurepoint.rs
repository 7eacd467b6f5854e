use serde::Serialize;

use super::{unit_reply, write_json, EncodeContext, OfflineForm, Operation};
use crate::envelope::Reply;
use crate::error::{EncodeError, RequestError};
use crate::topic::DeviceKeys;

#[derive(Serialize)]
struct Points<'a, P> {
    measurepoints: &'a P,
    time: u64,
}

macro_rules! single_post {
    ($(#[$doc:meta])* $name:ident, $path:literal, $method:literal) => {
        $(#[$doc])*
        ///
        /// `P` is any value that serializes to a JSON object `{id: value}`, where a value
        /// with a quality is `{"value": v, "quality": q}`. `time` is epoch milliseconds;
        /// when `None`, the request's wall-clock time is sent.
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name<P = serde_json::Map<String, serde_json::Value>> {
            /// The measure points.
            pub points: P,
            /// Their time in epoch milliseconds; `None` stamps the request time.
            pub time: Option<u64>,
        }

        impl<P: Serialize> $name<P> {
            /// These points, stamped with the request time.
            pub fn new(points: P) -> Self {
                $name { points, time: None }
            }

            /// These points at `unix_ms`.
            pub fn at(points: P, unix_ms: u64) -> Self {
                $name { points, time: Some(unix_ms) }
            }
        }

        impl<P: Serialize> Operation for $name<P> {
            type Data = ();
            fn write_path(&self, out: &mut String) {
                out.push_str($path);
            }
            fn write_method(&self, out: &mut String) {
                out.push_str($method);
            }
            fn write_params(&self, ctx: &EncodeContext<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
                write_json(out, &Points { measurepoints: &self.points, time: self.time.unwrap_or(ctx.unix_ms) })
            }
            fn parse_reply(reply: &Reply) -> Result<(), RequestError> {
                unit_reply(reply)
            }
            fn offline_form(&self) -> Option<OfflineForm> {
                Some(OfflineForm(false))
            }
        }
    };
}

single_post!(
    /// Row 7, `thing.measurepoint.post`: report measure points.
    MeasurepointPost,
    "thing/measurepoint/post",
    "thing.measurepoint.post"
);
single_post!(
    /// Row 8, `thing.measurepoint.resume`: report measure points recorded while offline.
    MeasurepointResume,
    "thing/measurepoint/resume",
    "thing.measurepoint.resume"
);

/// One entry of a batch post or resume.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchEntry<P = serde_json::Map<String, serde_json::Value>> {
    /// The device the points belong to; `None` means the topic's device.
    pub device: Option<DeviceKeys>,
    /// The measure points, `{id: value}`.
    pub points: P,
    /// Their time in epoch milliseconds; `None` stamps the request time.
    pub time: Option<u64>,
}

impl<P> BatchEntry<P> {
    /// Points of the topic's own device.
    pub fn own(points: P, time: Option<u64>) -> Self {
        BatchEntry { device: None, points, time }
    }

    /// Points of another device (a sub-device of the gateway).
    pub fn of(device: DeviceKeys, points: P, time: Option<u64>) -> Self {
        BatchEntry { device: Some(device), points, time }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EntryWire<'a, P> {
    #[serde(skip_serializing_if = "Option::is_none")]
    product_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_key: Option<&'a str>,
    measurepoints: &'a P,
    time: u64,
}

fn write_entries<P: Serialize>(
    entries: &[BatchEntry<P>],
    ctx: &EncodeContext<'_>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let wire: Vec<EntryWire<'_, P>> = entries
        .iter()
        .map(|e| EntryWire {
            product_key: e.device.as_ref().map(DeviceKeys::product_key),
            device_key: e.device.as_ref().map(DeviceKeys::device_key),
            measurepoints: &e.points,
            time: e.time.unwrap_or(ctx.unix_ms),
        })
        .collect();
    write_json(out, &wire)
}

macro_rules! batch_post {
    ($(#[$doc:meta])* $name:ident, $path:literal, $method:literal) => {
        $(#[$doc])*
        ///
        /// `allowOfflineSubDevice` and `skipInvalidMeasurepoints` are always sent, as
        /// top-level fields beside `params`.
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name<P = serde_json::Map<String, serde_json::Value>> {
            /// The entries, in order.
            pub entries: Vec<BatchEntry<P>>,
            flags: [(&'static str, bool); 2],
        }

        impl<P: Serialize> $name<P> {
            /// A batch of entries, both flags false.
            pub fn new(entries: Vec<BatchEntry<P>>) -> Self {
                $name {
                    entries,
                    flags: [("allowOfflineSubDevice", false), ("skipInvalidMeasurepoints", false)],
                }
            }

            /// Accept entries of sub-devices that are offline (but in the topology).
            pub fn allow_offline_sub_device(mut self, allow: bool) -> Self {
                self.flags[0].1 = allow;
                self
            }

            /// Skip invalid points instead of refusing the whole batch.
            pub fn skip_invalid_measurepoints(mut self, skip: bool) -> Self {
                self.flags[1].1 = skip;
                self
            }
        }

        impl<P: Serialize> Operation for $name<P> {
            type Data = ();
            fn write_path(&self, out: &mut String) {
                out.push_str($path);
            }
            fn write_method(&self, out: &mut String) {
                out.push_str($method);
            }
            fn write_params(&self, ctx: &EncodeContext<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
                write_entries(&self.entries, ctx, out)
            }
            fn extras(&self) -> &[(&'static str, bool)] {
                &self.flags
            }
            fn parse_reply(reply: &Reply) -> Result<(), RequestError> {
                unit_reply(reply)
            }
            fn offline_form(&self) -> Option<OfflineForm> {
                Some(OfflineForm(true))
            }
        }
    };
}

batch_post!(
    /// Row 9, `thing.measurepoint.post.batch`: points of several devices (the gateway and
    /// its sub-devices) or several times in one request.
    MeasurepointBatchPost,
    "thing/measurepoint/post/batch",
    "thing.measurepoint.post.batch"
);
batch_post!(
    /// Row 10, `thing.measurepoint.resume.batch`: a batch of offline data.
    MeasurepointBatchResume,
    "thing/measurepoint/resume/batch",
    "thing.measurepoint.resume.batch"
);
