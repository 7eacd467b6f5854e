//! `enos integration`: the product's message-integration channel. The entries of a post
//! are read and checked (each named by its place) before anything connects, then sent
//! `--batch` per request, by kind: measure points, events, attributes.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use enos_transport_blocking::proto::ops::{IntegrationEntry, IntegrationKind, IntegrationPost};
use enos_transport_blocking::{Error, RequestError};
use serde_json::{json, Value};

use crate::commands::{envelope, raw_reply, Printed};
use crate::error::{exit, CliError};
use crate::output::Out;
use crate::session::Session;
use crate::{fsio, parse};

/// The kinds, in the order they are sent, with the field that holds each.
const KINDS: [(IntegrationKind, &str); 3] = [
    (IntegrationKind::Measurepoints, "measurepoints"),
    (IntegrationKind::Events, "events"),
    (IntegrationKind::Attributes, "attributes"),
];

/// Checked entries, by kind in sending order.
#[derive(Debug, PartialEq)]
pub struct Entries(Vec<(IntegrationKind, Vec<IntegrationEntry<Value>>)>);

/// Reads the entries of `input`: JSON (it starts with `[` or `{`), `-` for standard
/// input, else a file; a JSON array of entries, one entry, or one entry per line.
///
/// # Errors
///
/// [`CliError::Io`] for a file that cannot be read, [`CliError::Input`] naming the entry
/// (its index, or its file and line) that is not one, and why.
pub fn read(input: &str) -> Result<Entries, CliError> {
    let trimmed = input.trim_start();
    let (place, text) = if trimmed.starts_with('[') || trimmed.starts_with('{') {
        ("entries".to_owned(), input.to_owned())
    } else if input == "-" {
        let text = read_text(std::io::stdin().lock(), "standard input", MAX_INPUT)?;
        ("standard input".to_owned(), text)
    } else {
        let file = std::fs::File::open(input).map_err(|e| CliError::io(format!("reading {input}"), e))?;
        (input.to_owned(), read_text(file, input, MAX_INPUT)?)
    };
    let mut by_kind: Vec<(IntegrationKind, Vec<IntegrationEntry<Value>>)> =
        KINDS.iter().map(|(k, _)| (*k, Vec::new())).collect();
    let mut add = |(kind, e): (IntegrationKind, IntegrationEntry<Value>)| {
        if let Some((_, list)) = by_kind.iter_mut().find(|(k, _)| *k == kind) {
            list.push(e);
        }
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(list)) => {
            for (i, v) in list.into_iter().enumerate() {
                add(entry(v).map_err(|why| CliError::input(format!("{place}: entry {}", i + 1), why))?);
            }
        }
        Ok(v @ Value::Object(_)) => add(entry(v).map_err(|why| CliError::input(place.clone(), why))?),
        Ok(other) => {
            return Err(CliError::input(
                place,
                format!("expected entries (an array of objects), got {}", parse::kind(&other)),
            ))
        }
        // An array that does not parse: where, rather than each line's error.
        Err(e) if text.trim_start().starts_with('[') => {
            return Err(CliError::input(place, format!("not a JSON array of entries: {e}")));
        }
        // One entry per line.
        Err(_) => {
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let at = || format!("{place}:{}", i + 1);
                let v =
                    serde_json::from_str::<Value>(line).map_err(|e| CliError::input(at(), format!("not JSON: {e}")))?;
                add(entry(v).map_err(|why| CliError::input(at(), why))?);
            }
        }
    }
    by_kind.retain(|(_, list)| !list.is_empty());
    if by_kind.is_empty() {
        return Err(CliError::input(place, "no entry"));
    }
    Ok(Entries(by_kind))
}

/// The most input `integration post` reads (a file, or standard input).
const MAX_INPUT: u64 = 64 * 1024 * 1024;

/// All of `r` as text, at most `limit` bytes.
///
/// # Errors
///
/// [`CliError::Io`] when it cannot be read, [`CliError::Input`] when it is longer than
/// `limit` or is not UTF-8.
fn read_text(r: impl Read, place: &str, limit: u64) -> Result<String, CliError> {
    let bytes =
        fsio::read_limited(r, limit).map_err(|e| CliError::io(format!("reading {place}"), e))?.ok_or_else(|| {
            CliError::input(place, format!("longer than {} MiB, the most `integration post` reads", limit >> 20))
        })?;
    String::from_utf8(bytes).map_err(|e| CliError::input(place, format!("not UTF-8 text: {e}")))
}

/// One entry: `{"deviceKey", "time"?, and one of "measurepoints", "events", "attributes"}`.
fn entry(v: Value) -> Result<(IntegrationKind, IntegrationEntry<Value>), String> {
    let Value::Object(mut m) = v else {
        return Err(format!(
            "expected an entry {{\"deviceKey\", \"time\", \"measurepoints\"...}}, got {}",
            parse::kind(&v)
        ));
    };
    let device_key = match m.remove("deviceKey") {
        Some(Value::String(k)) if !k.is_empty() => k,
        Some(Value::String(_)) => return Err("deviceKey is empty".into()),
        Some(other) => return Err(format!("deviceKey: expected a string, got {}", parse::kind(&other))),
        None => return Err("no deviceKey".into()),
    };
    let time = match m.remove("time") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_u64().ok_or_else(|| format!("time: {n} is not epoch milliseconds"))?),
        Some(Value::String(t)) => Some(parse::time(&t).map_err(|e| format!("time: {e}"))?),
        Some(other) => {
            return Err(format!("time: expected epoch milliseconds or RFC 3339, got {}", parse::kind(&other)))
        }
    };
    let mut found = None;
    for (kind, field) in KINDS {
        if let Some(values) = m.remove(field) {
            if let Some((_, other)) = found {
                return Err(format!("{other} and {field} in one entry: give each its own"));
            }
            found = Some(((kind, values), field));
        }
    }
    if let Some(unknown) = m.keys().next() {
        return Err(format!(
            "unknown field `{unknown}` (an entry has deviceKey, time, and one of measurepoints, events, attributes)"
        ));
    }
    let Some(((kind, values), field)) = found else {
        return Err("no measurepoints, events or attributes".into());
    };
    let Value::Object(values) = values else {
        return Err(format!("{field}: expected an object, got {}", parse::kind(&values)));
    };
    match kind {
        IntegrationKind::Events => {
            if let Some((id, p)) = values.iter().find(|(_, p)| !p.is_object()) {
                return Err(format!("events: {id}: expected its parameters as an object, got {}", parse::kind(p)));
            }
        }
        IntegrationKind::Attributes if time.is_some() => {
            return Err("attributes have no time: leave it out".into());
        }
        _ => {}
    }
    Ok((kind, IntegrationEntry { device_key, time, values: Value::Object(values) }))
}

/// Sends the entries `batch` per request; every request is sent, and the exit code is 1
/// when the cloud refused one. Each request's result is printed as it is answered (with
/// `--json`, all of them in one document at the end); the first Ctrl-C or SIGTERM stops
/// after the request in flight.
///
/// # Errors
///
/// A request's error other than the cloud's refusal (timeout, connection lost, ...), or
/// [`CliError::Interrupted`], once what was answered is printed.
pub fn post(s: &Session, entries: Entries, batch: usize, out: Out) -> Result<Printed, CliError> {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        crate::signals::on_interrupt(move || stop.store(true, Ordering::SeqCst))?;
    }
    let channel = s.client.integration();
    let mut requests = Vec::new();
    let mut refused = 0usize;
    let total: usize = entries.0.iter().map(|(_, list)| list.len().div_ceil(batch.max(1))).sum();
    let done = if s.sending.need_reply { "ok" } else { "sent" };
    let mut failed = None;
    'all: for (kind, list) in entries.0 {
        let field = KINDS.iter().find(|(k, _)| *k == kind).map_or("", |(_, f)| f);
        for chunk in list.chunks(batch.max(1)) {
            if stop.load(Ordering::SeqCst) {
                failed =
                    Some(CliError::Interrupted(format!("{} of {total} requests sent, the rest not", requests.len())));
                break 'all;
            }
            let mut devices: Vec<&str> = chunk.iter().map(|e| e.device_key.as_str()).collect();
            devices.sort_unstable();
            devices.dedup();
            let what = format!(
                "{field}, {} entr{} of {}",
                chunk.len(),
                if chunk.len() == 1 { "y" } else { "ies" },
                devices.join(", ")
            );
            let post = IntegrationPost { kind, entries: chunk.to_vec() };
            let (text, mut doc) = match channel.post(post, s.untargeted()) {
                Ok(r) => (format!("{what}: {done} (code {})", r.code), envelope(&r, Value::Null)),
                Err(Error::Request(RequestError::Rejected { code, message })) => {
                    refused += 1;
                    (format!("{what}: refused with code {code}: {message}"), json!({"code": code, "message": message}))
                }
                Err(e) => {
                    failed = Some(CliError::from_request(e));
                    break 'all;
                }
            };
            if let Value::Object(o) = &mut doc {
                o.remove("data");
                o.insert("kind".into(), json!(field));
                o.insert("entries".into(), json!(chunk.len()));
                o.insert("devices".into(), json!(devices));
            }
            if !out.json {
                out.text(&text);
            }
            requests.push(doc);
        }
    }
    let doc = json!({"requests": requests, "refused": refused, "complete": failed.is_none()});
    if let Some(e) = failed {
        // What was answered before the error is printed, then the error.
        if out.json {
            out.doc(&doc);
        }
        return Err(e);
    }
    Ok(Printed::new("", doc, if refused == 0 { exit::OK } else { exit::REFUSED }).streamed())
}

/// Raw bytes on the channel: the cloud's raw reply, in hex.
///
/// # Errors
///
/// The request's error.
pub fn raw(s: &Session, bytes: Vec<u8>) -> Result<Printed, CliError> {
    Ok(raw_reply(&s.client.integration().up_raw(bytes, s.untargeted()).map_err(CliError::from_request)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_every_kind_are_grouped_in_sending_order() {
        let e = read(
            r#"[{"deviceKey":"d2","attributes":{"capacity":1}},
                {"deviceKey":"d1","time":"2024-05-01T12:00:00Z","measurepoints":{"temp":21.5}},
                {"deviceKey":"d2","time":5,"events":{"overheat":{"level":2}}},
                {"deviceKey":"d2","measurepoints":{"temp":19}}]"#,
        )
        .unwrap();
        let kinds: Vec<(IntegrationKind, usize)> = e.0.iter().map(|(k, l)| (*k, l.len())).collect();
        assert_eq!(
            kinds,
            [(IntegrationKind::Measurepoints, 2), (IntegrationKind::Events, 1), (IntegrationKind::Attributes, 1)]
        );
        assert_eq!(e.0[0].1[0].time, Some(1_714_564_800_000));
        assert_eq!(e.0[0].1[1].time, None);
        assert_eq!(e.0[1].1[0].values["overheat"]["level"], 2);
        // One entry alone.
        assert_eq!(read(r#"{"deviceKey":"d","measurepoints":{"a":1}}"#).unwrap().0.len(), 1);
        // One entry per line, a bad one named by file and line.
        let file = std::env::temp_dir().join(format!("enos-cli-integration-{}.jsonl", std::process::id()));
        let lines = "{\"deviceKey\":\"d1\",\"measurepoints\":{\"a\":1}}\n\n{\"deviceKey\":\"d2\",\"measurepoints\":{\"a\":2}}\n";
        std::fs::write(&file, lines).unwrap();
        let path = file.display().to_string();
        assert_eq!(read(&path).unwrap().0[0].1.len(), 2);
        std::fs::write(&file, format!("{lines}{{\"deviceKey\":3,\"measurepoints\":{{}}}}\n")).unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains(&format!("{path}:4: deviceKey: expected a string")), "{e}");
        let _ = std::fs::remove_file(&file);
    }

    #[test]
    fn a_bad_entry_is_named_with_its_place() {
        for (input, place, why) in [
            (r#"[{"deviceKey":"d","measurepoints":{}},{"measurepoints":{}}]"#, "entries: entry 2", "no deviceKey"),
            (r#"[{"deviceKey":"d"}]"#, "entry 1", "no measurepoints, events or attributes"),
            (r#"[{"deviceKey":"d","measurepoints":{},"events":{}}]"#, "entry 1", "give each its own"),
            (r#"[{"deviceKey":"d","measurepoints":{},"tme":1}]"#, "entry 1", "unknown field `tme`"),
            (r#"[{"deviceKey":"d","attributes":{},"time":1}]"#, "entry 1", "attributes have no time"),
            (r#"[{"deviceKey":"d","events":{"e":1}}]"#, "entry 1", "expected its parameters as an object"),
            (r#"[{"deviceKey":"d","measurepoints":[]}]"#, "entry 1", "expected an object, got an array"),
            (r#"[{"deviceKey":"d","time":"soon","measurepoints":{}}]"#, "entry 1", "time: \"soon\" is neither"),
            ("[]", "entries", "no entry"),
        ] {
            let e = read(input).unwrap_err();
            let text = e.to_string();
            assert!(e.exit_code() == 2 && text.contains(place) && text.contains(why), "{input}: {text}");
        }
        let e = read("/nonexistent/entries.jsonl").unwrap_err();
        assert_eq!(e.exit_code(), 5, "{e}");
        // An array that does not parse is placed where it breaks, not read as lines.
        let e = read("[{\"deviceKey\":\"d\",\n\"measurepoints\":{}},\n{\"deviceKey\" \"e\"}]").unwrap_err();
        assert!(
            e.exit_code() == 2 && e.to_string().contains("not a JSON array of entries: expected `:` at line 3 column"),
            "{e}"
        );
    }

    #[test]
    fn input_past_its_ceiling_is_refused() {
        assert_eq!(read_text(&b"0123456789"[..], "f", 10).unwrap(), "0123456789");
        let e = read_text(std::io::repeat(b'a'), "standard input", 2 << 20).unwrap_err();
        assert!(
            e.exit_code() == 2
                && e.to_string() == "standard input: longer than 2 MiB, the most `integration post` reads",
            "{e}"
        );
        assert!(read_text(&b"\xff"[..], "f", 10).unwrap_err().to_string().contains("not UTF-8"));
    }
}
