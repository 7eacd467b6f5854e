//! The JSON envelopes of requests and replies as the cloud reads and writes them: the
//! answer to one operation, the reply written from it, and the fields read from a request.

use bytes::Bytes;
use enos_proto::DeviceKeys;
use serde_json::{json, Value};

use super::Outbound;

/// The result of one operation: code, data, message.
pub(super) struct Answer {
    pub(super) code: i32,
    pub(super) data: Value,
    pub(super) message: String,
}

impl Answer {
    /// Success (200) with `data`.
    pub(super) fn ok(data: Value) -> Self {
        Answer { code: 200, data, message: String::new() }
    }

    /// Success (200) with empty data, `{}`.
    pub(super) fn done() -> Self {
        Answer::ok(json!({}))
    }

    /// A refusal with `code`, empty data and `message`.
    pub(super) fn err(code: i32, message: impl Into<String>) -> Self {
        Answer { code, data: json!({}), message: message.into() }
    }

    /// The refusal of a request whose parameters do not have the shape of its operation.
    pub(super) fn bad_format() -> Self {
        Answer::err(1220, "Payload format error")
    }
}

/// The reply `{"id":..,"code":..,"data":..[,"message":..]}` on `<topic>_reply`, written
/// straight out (no JSON tree built for it).
pub(super) fn reply(topic: &str, id: &str, a: &Answer) -> Outbound {
    use std::io::Write;
    let mut body = Vec::with_capacity(48 + id.len() + a.message.len());
    body.extend_from_slice(b"{\"id\":");
    // Writing JSON into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut body, id);
    let _ = write!(body, ",\"code\":{},\"data\":", a.code);
    let _ = serde_json::to_writer(&mut body, &a.data);
    if !a.message.is_empty() {
        body.extend_from_slice(b",\"message\":");
        let _ = serde_json::to_writer(&mut body, &a.message);
    }
    body.push(b'}');
    let mut reply_topic = String::with_capacity(topic.len() + 6);
    reply_topic.push_str(topic);
    reply_topic.push_str("_reply");
    Outbound { topic: reply_topic, payload: Bytes::from(body) }
}

/// The device keys an object names (`productKey`, `deviceKey`), when both are valid.
pub(super) fn keys_of(v: &Value) -> Option<DeviceKeys> {
    DeviceKeys::new(v.get("productKey")?.as_str()?, v.get("deviceKey")?.as_str()?).ok()
}

/// A timestamp as signed: a JSON string or number, as its decimal text.
pub(super) fn text_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The id of a request envelope as its reply echoes it (empty when it has none).
pub(super) fn id_of(v: &Value) -> String {
    v.get("id").map(id_text).unwrap_or_default()
}

/// An envelope id as the reply echoes it: a string as it is, a number as its text.
pub(super) fn id_text(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}
