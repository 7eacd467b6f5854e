//! Small parsers of what a user types: times (epoch milliseconds or RFC 3339), hex bytes,
//! JSON objects, `key=value` pairs, byte ranges, node states. Each error says what was
//! expected.

use enos_transport_blocking::proto::http::ByteRange;
use enos_transport_blocking::proto::ops::NodeState;
use serde_json::{Map, Value};

/// Epoch milliseconds from `1700000000000` or an RFC 3339 time
/// (`2024-05-01T12:00:00Z`, `2024-05-01 12:00:00.250+08:00`).
///
/// # Errors
///
/// What was expected, when `text` is neither.
pub fn time(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse::<u64>().map_err(|_| format!("{text:?} is too large for epoch milliseconds"));
    }
    rfc3339(t)
        .ok_or_else(|| format!("{text:?} is neither epoch milliseconds nor an RFC 3339 time (2024-05-01T12:00:00Z)"))
}

/// An RFC 3339 date and time with its offset, as epoch milliseconds (`None` before 1970).
fn rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        part.iter().all(u8::is_ascii_digit).then(|| part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let at = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt ") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if at(i, b".") {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        // Milliseconds: the first three digits, the rest dropped.
        let digits = &s[start..i.min(start + 3)];
        millis = digits.parse::<i64>().ok()? * 10i64.pow(3 - digits.len() as u32);
    }
    let offset_minutes = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && at(i + 3, b":") => {
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'-' {
                -(h * 60 + m)
            } else {
                h * 60 + m
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    u64::try_from(secs * 1000 + millis).ok()
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Bytes from hex (`0a1b`, `0x0a1b`, `0a 1b`, `0a:1b`).
///
/// # Errors
///
/// The first character that is not a hex digit, or an odd count of digits.
pub fn hex(text: &str) -> Result<Vec<u8>, String> {
    let t = text.trim();
    let skipped = if t.starts_with("0x") || t.starts_with("0X") { 2 } else { 0 };
    let mut digits = Vec::with_capacity(t.len());
    for (i, c) in t.char_indices().skip(skipped) {
        match c.to_digit(16) {
            Some(d) => digits.push(d as u8),
            None if c.is_whitespace() || c == ':' => {}
            None => return Err(format!("{c:?} at position {} is not a hex digit", i + 1)),
        }
    }
    if digits.len() % 2 == 1 {
        return Err(format!("{} hex digits: bytes need an even number", digits.len()));
    }
    Ok(digits.chunks_exact(2).map(|p| p[0] << 4 | p[1]).collect())
}

/// Bytes as lower-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A JSON object.
///
/// # Errors
///
/// Why the text is not one.
pub fn object(text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!("expected a JSON object {{...}}, got {}", kind(&other))),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

/// What kind of JSON value `v` is, in words.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `key=value` pairs, or one JSON object of strings.
///
/// # Errors
///
/// The first pair without `=`, or JSON that is not an object of strings.
pub fn pairs(args: &[String]) -> Result<Vec<(String, String)>, String> {
    if let [one] = args {
        if one.trim_start().starts_with('{') {
            return object(one)?
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    other => Err(format!("{k}: expected a string, got {}", kind(&other))),
                })
                .collect();
        }
    }
    args.iter()
        .map(|a| {
            a.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| format!("{a:?} is not key=value"))
        })
        .collect()
}

/// A byte range: `START-END` (both included), `START-` (to the end) or `-N` (the last N).
///
/// # Errors
///
/// What was expected, when `text` is none of them or is empty (END before START, `-0`).
pub fn range(text: &str) -> Result<ByteRange, String> {
    let expected = || format!("{text:?} is not START-END, START- or -N (bytes, from 0)");
    let (start, end) = text.trim().split_once('-').ok_or_else(expected)?;
    let number = |s: &str| s.parse::<u64>().map_err(|_| expected());
    match (start.trim(), end.trim()) {
        ("", "") => Err(expected()),
        ("", n) => match number(n)? {
            0 => Err(format!("{text:?}: the last 0 bytes are no bytes")),
            n => Ok(ByteRange::Last(n)),
        },
        (s, "") => Ok(ByteRange::From(number(s)?)),
        (s, e) => {
            let (start, end) = (number(s)?, number(e)?);
            if end < start {
                return Err(format!("{text:?}: the end comes before the start"));
            }
            Ok(ByteRange::Span { start, end })
        }
    }
}

/// A node's connection state: `connected`, `disconnected`, `unknown`, or 1, 2, 3.
///
/// # Errors
///
/// The states there are, when `text` is none of them.
pub fn node_state(text: &str) -> Result<NodeState, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "connected" | "1" => Ok(NodeState::Connected),
        "disconnected" | "2" => Ok(NodeState::Disconnected),
        "unknown" | "3" => Ok(NodeState::Unknown),
        _ => Err(format!("{text:?} is not a state: connected, disconnected or unknown (or 1, 2, 3)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(range("10-19"), Ok(ByteRange::Span { start: 10, end: 19 }));
        assert_eq!(range("0-0"), Ok(ByteRange::Span { start: 0, end: 0 }));
        assert_eq!(range("300-"), Ok(ByteRange::From(300)));
        assert_eq!(range("-100"), Ok(ByteRange::Last(100)));
        for bad in ["", "-", "10", "a-b", "19-10", "-0", "1-2-3", "--5"] {
            assert!(range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn node_states() {
        assert_eq!(node_state("Connected"), Ok(NodeState::Connected));
        assert_eq!(node_state("2"), Ok(NodeState::Disconnected));
        assert!(node_state("up").unwrap_err().contains("connected, disconnected or unknown"));
    }

    #[test]
    fn times() {
        assert_eq!(time("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert_eq!(time("2023-11-14T22:13:20.5Z"), Ok(1_700_000_000_500));
        assert_eq!(time("2023-11-14 22:13:20.123456Z"), Ok(1_700_000_000_123));
        assert_eq!(time("2023-11-15T06:13:20+08:00"), Ok(1_700_000_000_000));
        assert_eq!(time("2023-11-14T20:13:20-02:00"), Ok(1_700_000_000_000));
        assert_eq!(time("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000));
        for bad in [
            "",
            "soon",
            "2023-02-29T00:00:00Z",
            "2023-11-14T22:13:20",
            "2023-11-14T25:00:00Z",
            "1969-12-31T23:59:59Z",
            "2023-11-14T22:13:20.Z",
        ] {
            assert!(time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hex_in_and_out() {
        assert_eq!(hex("0x0A1b"), Ok(vec![0x0a, 0x1b]));
        assert_eq!(hex("0a 1b:ff"), Ok(vec![0x0a, 0x1b, 0xff]));
        assert_eq!(to_hex(&[0, 0xab]), "00ab");
        assert_eq!(hex("0g"), Err("'g' at position 2 is not a hex digit".into()));
        assert_eq!(hex("0x0g"), Err("'g' at position 4 is not a hex digit".into()));
        assert!(hex("abc").unwrap_err().contains("even"));
    }

    #[test]
    fn objects_and_pairs() {
        assert!(object("{\"a\":1}").is_ok());
        assert_eq!(object("[1]"), Err("expected a JSON object {...}, got an array".into()));
        assert!(object("{").unwrap_err().starts_with("not JSON"));
        assert_eq!(
            pairs(&["a=1".into(), "b=x=y".into()]),
            Ok(vec![("a".into(), "1".into()), ("b".into(), "x=y".into())])
        );
        assert_eq!(pairs(&["{\"a\":\"1\"}".into()]), Ok(vec![("a".into(), "1".into())]));
        assert!(pairs(&["a".into()]).is_err());
    }
}
