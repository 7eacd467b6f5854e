//! The JSON envelopes of spec §4: upstream requests, replies to them, downstream commands
//! and the device's replies to commands.

use std::io::Write;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{EncodeError, RequestError};

/// The `version` the SDK sends, as the Node.js SDK does.
pub const VERSION: &str = "1.0";

/// Writes `{"id":"N","version":"1.0","params":..,"method":..[,extras]}` into `out`, the
/// params written in place by `params`.
pub(crate) fn write_request(
    out: &mut Vec<u8>,
    id: u32,
    method: &str,
    extras: &[(&str, bool)],
    params: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    out.extend_from_slice(b"{\"id\":\"");
    write_decimal(out, id);
    out.extend_from_slice(b"\",\"version\":\"1.0\",\"params\":");
    params(out)?;
    out.extend_from_slice(b",\"method\":");
    json_str(out, method)?;
    for (k, v) in extras {
        out.push(b',');
        json_str(out, k)?;
        let _ = write!(out, ":{v}");
    }
    out.push(b'}');
    Ok(())
}

/// `n` in decimal, without the formatting machinery.
fn write_decimal(out: &mut Vec<u8>, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Whether `s` needs no escape in a JSON string: no control character, quote or backslash.
/// Eight bytes at a time; a rare false "no" only sends the text the general way.
fn plain_json(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH != 0;
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let w = u64::from_le_bytes(w);
        let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH != 0;
        if control || zero_byte(w ^ (ONES * u64::from(b'"'))) || zero_byte(w ^ (ONES * u64::from(b'\\'))) {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
}

fn json_str(out: &mut Vec<u8>, s: &str) -> Result<(), EncodeError> {
    // Methods and ids are plain text: quoted as they are, serde only when escapes are due.
    if plain_json(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return Ok(());
    }
    serde_json::to_writer(out, s).map_err(|e| EncodeError::Json(e.to_string()))
}

/// Writes a command reply `{"id":..,"code":..,"data":..[,"message":..]}`; `message` only
/// when non-empty (spec §4). `id_json` is the command's id as it was sent, and
/// `data_json` valid JSON text.
pub(crate) fn write_command_reply(out: &mut Vec<u8>, id_json: &str, code: i32, data_json: &str, message: &str) {
    out.extend_from_slice(b"{\"id\":");
    out.extend_from_slice(id_json.as_bytes());
    let _ = write!(out, ",\"code\":{code},\"data\":");
    out.extend_from_slice(data_json.as_bytes());
    if !message.is_empty() {
        out.extend_from_slice(b",\"message\":");
        let _ = json_str(out, message);
    }
    out.push(b'}');
}

/// The reply to an upstream JSON request: `{id, code, data, message}`.
///
/// Its `Debug` output replaces the value of every `data` field whose name holds
/// `secret` (the device secrets of registrations and activating logins).
#[derive(Clone)]
pub struct JsonReply {
    /// The envelope id the reply echoes.
    pub id: String,
    /// 200 for success, anything else an error (spec §9).
    pub code: i32,
    /// The reply's `message`, if it had one.
    pub message: Option<String>,
    data: Data,
}

/// A reply's `data`: the common empty object is held without an allocation.
#[derive(Clone)]
enum Data {
    Absent,
    EmptyObject,
    Json(Box<RawValue>),
}

impl Data {
    fn from_raw(raw: Option<Box<RawValue>>) -> Data {
        match raw {
            None => Data::Absent,
            Some(r) if r.get() == "{}" => Data::EmptyObject,
            Some(r) => Data::Json(r),
        }
    }
}

impl std::fmt::Debug for JsonReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let data = self.data_json().map(|d| match serde_json::from_str::<serde_json::Value>(d) {
            Ok(mut v) => {
                redact(&mut v);
                v.to_string()
            }
            Err(_) => "<unreadable>".to_owned(),
        });
        f.debug_struct("JsonReply")
            .field("id", &self.id)
            .field("code", &self.code)
            .field("message", &self.message)
            .field("data", &data)
            .finish()
    }
}

fn redact(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if k.to_ascii_lowercase().contains("secret") {
                    *v = serde_json::Value::String("..".into());
                } else {
                    redact(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

impl PartialEq for JsonReply {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.code == other.code
            && self.message == other.message
            && self.data_json() == other.data_json()
    }
}

impl JsonReply {
    /// The `data` as JSON text (`None` when absent). A string that holds a JSON object or
    /// array has been replaced by that object or array, as the Node.js SDK does.
    pub fn data_json(&self) -> Option<&str> {
        match &self.data {
            Data::Absent => None,
            Data::EmptyObject => Some("{}"),
            Data::Json(r) => Some(r.get()),
        }
    }

    /// The `data` deserialized into `T`; an absent `data` reads as `null`.
    ///
    /// # Errors
    ///
    /// [`RequestError::BadReply`] when `data` does not have `T`'s shape.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, RequestError> {
        serde_json::from_str(self.data_json().unwrap_or("null"))
            .map_err(|e| RequestError::BadReply(format!("data: {e}")))
    }

    /// `Err(RequestError::Rejected)` unless the code is 200.
    ///
    /// # Errors
    ///
    /// As said.
    pub fn success(&self) -> Result<&Self, RequestError> {
        if self.code == 200 {
            Ok(self)
        } else {
            Err(RequestError::Rejected { code: self.code, message: self.message.clone().unwrap_or_default() })
        }
    }

    /// A reply built by hand (tests, simulators).
    pub fn new(
        id: impl Into<String>,
        code: i32,
        data: Option<&str>,
        message: Option<&str>,
    ) -> Result<Self, serde_json::Error> {
        let data = data.map(|d| RawValue::from_string(d.to_owned())).transpose()?;
        Ok(JsonReply {
            id: id.into(),
            code,
            message: message.map(str::to_owned),
            data: Data::from_raw(data.map(normalize_data)),
        })
    }
}

/// What ends a request successfully.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Reply {
    /// A JSON reply on the request's reply topic.
    Json(JsonReply),
    /// The bytes of a raw reply (`up_raw_reply`).
    Raw(Bytes),
    /// No reply was wanted: the request was acknowledged (QoS 1) or written to the
    /// transport (QoS 0).
    Delivered,
    /// Bytes of a stored file (HTTP transport).
    File(crate::http::FilePart),
}

impl Reply {
    /// The JSON reply, or `BadReply` for any other kind.
    ///
    /// # Errors
    ///
    /// As said.
    pub fn json(&self) -> Result<&JsonReply, RequestError> {
        match self {
            Reply::Json(j) => Ok(j),
            Reply::Raw(_) => Err(RequestError::BadReply("raw reply where JSON was expected".into())),
            Reply::Delivered => Err(RequestError::BadReply("no reply was requested".into())),
            Reply::File(_) => Err(RequestError::BadReply("file bytes where JSON was expected".into())),
        }
    }
}

/// An envelope id, as a string or an integer on the wire: its text, and its JSON as sent.
fn id_of(raw: Option<&RawValue>) -> Result<(String, String), String> {
    let Some(raw) = raw else { return Ok((String::new(), "\"\"".into())) };
    let t = raw.get();
    if t.starts_with('"') {
        let text = serde_json::from_str::<String>(t).map_err(|e| e.to_string())?;
        Ok((text, t.to_owned()))
    } else if serde_json::from_str::<u64>(t).is_ok() || serde_json::from_str::<i64>(t).is_ok() {
        Ok((t.to_owned(), t.to_owned()))
    } else if t == "null" {
        Ok((String::new(), "\"\"".into()))
    } else {
        Err(format!("id is neither a string nor an integer: {t}"))
    }
}

/// The envelope id the client generated, when `text` is exactly one (decimal, no sign, no
/// leading zero).
pub(crate) fn envelope_id(text: &str) -> Option<u32> {
    if text.is_empty() || text.starts_with('0') || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[derive(Deserialize)]
struct ReplyWire<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    code: Option<i64>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    message: Option<String>,
}

fn normalize_data(raw: Box<RawValue>) -> Box<RawValue> {
    let t = raw.get();
    if t.starts_with('"') {
        if let Ok(inner) = serde_json::from_str::<String>(t) {
            let trimmed = inner.trim_start();
            if trimmed.starts_with('{') || trimmed.starts_with('[') {
                if let Ok(v) = RawValue::from_string(inner) {
                    return v;
                }
            }
        }
    }
    raw
}

/// Envelopes are JSON objects (serde would also take a struct as an array).
fn is_object(payload: &[u8]) -> Result<(), String> {
    match payload.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        _ => Err("payload is not a JSON object".into()),
    }
}

/// Parses a reply payload.
///
/// # Errors
///
/// A description when the payload is not a JSON object with an integer `code`.
pub(crate) fn parse_reply(payload: &[u8]) -> Result<JsonReply, String> {
    if let Some(r) = fast_reply(payload) {
        return Ok(r);
    }
    is_object(payload)?;
    let wire: ReplyWire<'_> =
        serde_json::from_slice(payload).map_err(|e| format!("reply is not a JSON envelope: {e}"))?;
    let code = wire.code.ok_or("reply has no code")?;
    let code = i32::try_from(code).map_err(|_| format!("reply code {code} out of range"))?;
    let (id, _) = id_of(wire.id)?;
    let data = wire.data.filter(|d| d.get() != "null").map(|d| normalize_data(d.to_owned()));
    Ok(JsonReply { id, code, message: wire.message, data: Data::from_raw(data) })
}

/// The most common reply, compact and plain: `{"id":"N","code":C,"data":{}}`, in any key
/// order, with an optional `message` and no escapes or spaces. Read without serde;
/// anything else (`None`) goes the general way, which gives the same result.
fn fast_reply(p: &[u8]) -> Option<JsonReply> {
    struct Scan<'a>(&'a [u8], usize);
    impl<'a> Scan<'a> {
        fn byte(&mut self) -> Option<u8> {
            let b = *self.0.get(self.1)?;
            self.1 += 1;
            Some(b)
        }
        fn eat(&mut self, b: u8) -> Option<()> {
            (self.byte()? == b).then_some(())
        }
        /// A string's bytes, without escapes or control characters.
        fn plain_bytes(&mut self) -> Option<&'a [u8]> {
            self.eat(b'"')?;
            let rest = self.0.get(self.1..)?;
            let end = rest.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
            if rest[end] != b'"' {
                return None;
            }
            self.1 += end + 1;
            rest.get(..end)
        }
        /// A string without escapes or control characters.
        fn plain(&mut self) -> Option<&'a str> {
            std::str::from_utf8(self.plain_bytes()?).ok()
        }
        /// An integer's text (`-` then digits, no leading zero).
        fn integer(&mut self) -> Option<&'a str> {
            std::str::from_utf8(self.integer_bytes()?).ok()
        }
        /// An integer's bytes (`-` then digits, no leading zero).
        fn integer_bytes(&mut self) -> Option<&'a [u8]> {
            let start = self.1;
            if self.0.get(self.1) == Some(&b'-') {
                self.1 += 1;
            }
            let digits = self.1;
            while self.0.get(self.1).is_some_and(u8::is_ascii_digit) {
                self.1 += 1;
            }
            let n = self.1 - digits;
            if n == 0 || n > 18 || (n > 1 && self.0.get(digits) == Some(&b'0')) {
                return None;
            }
            let text = self.0.get(start..self.1)?;
            // `-0` is a float to serde: left to the general path.
            (text != b"-0").then_some(text)
        }
    }
    let mut s = Scan(p, 0);
    s.eat(b'{')?;
    let (mut id, mut code, mut data, mut message) = (None, None, false, None);
    loop {
        // Keys compared as bytes: only the values kept need to be checked as UTF-8.
        let key = s.plain_bytes()?;
        s.eat(b':')?;
        match key {
            b"id" if id.is_none() => {
                id = Some(if s.0.get(s.1) == Some(&b'"') { s.plain()? } else { s.integer()? });
            }
            b"code" if code.is_none() => code = Some(small_int(s.integer_bytes()?)?),
            b"data" if !data => {
                s.eat(b'{')?;
                s.eat(b'}')?;
                data = true;
            }
            b"message" if message.is_none() => message = Some(s.plain()?),
            _ => return None,
        }
        match s.byte()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    if s.1 != p.len() {
        return None;
    }
    let data = if data { Data::EmptyObject } else { Data::Absent };
    Some(JsonReply { id: id.unwrap_or_default().to_owned(), code: code?, message: message.map(str::to_owned), data })
}

/// The value of an integer's text as read by `fast_reply` (at most 18 digits), if it fits
/// an `i32`.
fn small_int(text: &[u8]) -> Option<i32> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let magnitude = digits.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
    i32::try_from(if negative { -magnitude } else { magnitude }).ok()
}

/// A downstream command's envelope `{id, version, method, params}`.
#[derive(Debug)]
pub(crate) struct CommandWire {
    pub(crate) id: String,
    /// The id exactly as sent (JSON text), to echo unchanged.
    pub(crate) id_json: String,
    /// The `method` as sent, when it is a string.
    pub(crate) method: Option<String>,
    pub(crate) params: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct CommandWireBorrowed<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

/// Parses a command payload; `Err` for anything without an id (it cannot be answered).
pub(crate) fn parse_command(payload: &[u8]) -> Result<CommandWire, String> {
    is_object(payload)?;
    let wire: CommandWireBorrowed<'_> =
        serde_json::from_slice(payload).map_err(|e| format!("command is not a JSON envelope: {e}"))?;
    if wire.id.is_none() {
        return Err("command has no id".into());
    }
    let (id, id_json) = id_of(wire.id)?;
    Ok(CommandWire {
        id,
        id_json,
        method: wire.method.map(std::borrow::Cow::into_owned),
        params: wire.params.map(|p| p.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_data_holding_json_is_parsed() {
        let r = parse_reply(br#"{"id":"1","code":200,"data":"{\"a\":1}"}"#).unwrap();
        assert_eq!(r.data_json(), Some(r#"{"a":1}"#));
        let r = parse_reply(br#"{"id":"1","code":200,"data":"plain"}"#).unwrap();
        assert_eq!(r.data_json(), Some(r#""plain""#));
    }

    #[test]
    fn debug_redacts_secrets_in_data() {
        let r =
            parse_reply(br#"{"id":"1","code":200,"data":[{"deviceKey":"d","deviceSecret":"S3cr3tValue"}]}"#).unwrap();
        let text = format!("{r:?}");
        assert!(!text.contains("S3cr3tValue"), "{text}");
        assert!(text.contains("deviceKey"));
    }

    #[test]
    fn plain_json_text_is_told_apart_from_text_to_escape() {
        for s in ["", "thing.measurepoint.post", "thing.event.overheat_alarm.post", "é, ü and 中文 as they are"] {
            assert!(plain_json(s.as_bytes()), "{s}");
        }
        // Every byte that needs an escape, at every position of an 8-byte word and after.
        for bad in (0u8..0x20).chain([b'"', b'\\']) {
            for at in 0..20 {
                let mut s = vec![b'a'; 20];
                s[at] = bad;
                assert!(!plain_json(&s), "{bad:#x} at {at}");
            }
        }
        // What the check lets through is exactly what serde writes unescaped.
        for b in 0u8..0x80 {
            let s = [b'x', b, b'y', b'z', b'x', b'x', b'x', b'x', b'x'];
            let text = std::str::from_utf8(&s).unwrap();
            let quoted = serde_json::to_string(text).unwrap();
            assert_eq!(plain_json(&s), quoted.len() == s.len() + 2, "{b:#x}");
        }
    }

    #[test]
    fn the_fast_path_reads_replies_as_serde_does() {
        let cases: &[&[u8]] = &[
            br#"{"id":"7","code":200,"data":{}}"#,
            br#"{"code":1204,"message":"Model validate failed","id":"9","data":{}}"#,
            br#"{"id":12,"code":-1,"data":{}}"#,
            br#"{"id":"7","code":200}"#,
            br#"{"id":"7","code":200,"data":{"a":1}}"#,
            br#"{"id":"7","code":200,"data":{},"extra":1}"#,
            br#"{"id":"a"b","code":200,"data":{}}"#,
            br#"{"id":"7","code":007,"data":{}}"#,
            br#"{"id":"7","code":200,"data":{}} "#,
            br#"{"id":"7","id":"8","code":200,"data":{}}"#,
            br#"{"id":"7","code":99999999999,"data":{}}"#,
            br#"{"id":"7","code":-0,"data":{}}"#,
            br#"{"id":"7","code":2147483647,"data":{}}"#,
            br#"{"id":"7","code":2147483648,"data":{}}"#,
            br#"{"id":"7","code":-2147483648,"data":{}}"#,
            br#"{"id":"7","code":-2147483649,"data":{}}"#,
            br#"{"id":"7","code":999999999999999999,"data":{}}"#,
            "{\"id\":\"é7\",\"code\":200,\"data\":{}}".as_bytes(),
            b"{\"id\":\"\xff\",\"code\":200,\"data\":{}}",
        ];
        for c in cases {
            let general = {
                let wire: Result<ReplyWire<'_>, _> = serde_json::from_slice(c);
                wire.ok().and_then(|w| {
                    let code = i32::try_from(w.code?).ok()?;
                    Some((id_of(w.id).ok()?.0, code, w.message, w.data.map(|d| d.get().to_owned())))
                })
            };
            if let Some(fast) = fast_reply(c) {
                let fast = (fast.id.clone(), fast.code, fast.message.clone(), fast.data_json().map(str::to_owned));
                assert_eq!(Some(fast), general, "{}", String::from_utf8_lossy(c));
            }
        }
        assert!(fast_reply(br#"{"id":"7","code":200,"data":{}}"#).is_some(), "the common reply takes the fast path");
    }

    #[test]
    fn numeric_ids_are_accepted() {
        let r = parse_reply(br#"{"id":42,"code":1204,"message":"Model validate failed"}"#).unwrap();
        assert_eq!((r.id.as_str(), r.code), ("42", 1204));
        assert_eq!(
            r.success().unwrap_err(),
            RequestError::Rejected { code: 1204, message: "Model validate failed".into() }
        );
    }

    #[test]
    fn bad_replies_are_errors() {
        assert!(parse_reply(b"not json").is_err());
        assert!(parse_reply(br#"{"id":"1"}"#).is_err());
        assert!(parse_reply(br#"[1,2]"#).is_err());
        assert!(parse_reply(br#"{"id":{},"code":200}"#).is_err());
        assert!(parse_reply(br#"{"id":1.5,"code":200}"#).is_err());
        assert_eq!(envelope_id("7"), Some(7));
        for not_ours in ["", "007", "+7", "-7", "7a", "99999999999"] {
            assert_eq!(envelope_id(not_ours), None, "{not_ours}");
        }
    }

    #[test]
    fn strings_are_escaped_only_when_needed() {
        for s in ["thing.tag.query", "a\"b", "back\\slash", "tab\there", "é"] {
            let mut fast = Vec::new();
            json_str(&mut fast, s).unwrap();
            assert_eq!(fast, serde_json::to_vec(s).unwrap(), "{s}");
        }
    }

    #[test]
    fn request_matches_node_order() {
        let mut out = Vec::new();
        write_request(&mut out, 7, "thing.x", &[("flag", false)], |o| {
            serde_json::to_writer(o, &serde_json::json!({"a":1})).map_err(|e| EncodeError::Json(e.to_string()))
        })
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"id":"7","version":"1.0","params":{"a":1},"method":"thing.x","flag":false}"#
        );
    }
}
