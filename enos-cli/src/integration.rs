//! `enos integration`: the product's message-integration channel. The entries of a post
//! are read and checked (each named by its place) before anything connects, then sent
//! `--batch` per request, by kind: measure points, events, attributes.

use std::io::Read;

use enos_transport_blocking::proto::ops::{IntegrationEntry, IntegrationKind, IntegrationPost};
use enos_transport_blocking::{Error, RequestError};
use serde_json::{json, Value};

use crate::commands::Printed;
use crate::error::{exit, CliError};
use crate::parse;
use crate::session::Session;

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
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| CliError::io("reading standard input", e))?;
        ("standard input".to_owned(), text)
    } else {
        let text = std::fs::read_to_string(input).map_err(|e| CliError::io(format!("reading {input}"), e))?;
        (input.to_owned(), text)
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
/// when the cloud refused one.
///
/// # Errors
///
/// A request's error other than the cloud's refusal (timeout, connection lost, ...).
pub fn post(s: &Session, entries: Entries, batch: usize) -> Result<Printed, CliError> {
    let channel = s.client.integration();
    let mut text = Vec::new();
    let mut requests = Vec::new();
    let mut refused = 0usize;
    let done = if s.sending.need_reply { "ok" } else { "sent" };
    for (kind, list) in entries.0 {
        let field = KINDS.iter().find(|(k, _)| *k == kind).map_or("", |(_, f)| f);
        for chunk in list.chunks(batch.max(1)) {
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
            let mut doc = json!({"kind": field, "entries": chunk.len(), "devices": devices});
            match channel.post(post, s.untargeted()) {
                Ok(r) => {
                    text.push(format!("{what}: {done} (code {})", r.code));
                    doc["code"] = json!(r.code);
                    doc["id"] = json!(r.id);
                    doc["message"] = json!(r.message);
                }
                Err(Error::Request(RequestError::Rejected { code, message })) => {
                    refused += 1;
                    text.push(format!("{what}: refused with code {code}: {message}"));
                    doc["code"] = json!(code);
                    doc["message"] = json!(message);
                }
                Err(e) => return Err(CliError::from_request(e)),
            }
            requests.push(doc);
        }
    }
    let doc = json!({"requests": requests, "refused": refused});
    Ok(Printed::new(text.join("\n"), doc, if refused == 0 { exit::OK } else { exit::REFUSED }))
}

/// Raw bytes on the channel: the cloud's raw reply, in hex.
///
/// # Errors
///
/// The request's error.
pub fn raw(s: &Session, bytes: Vec<u8>) -> Result<Printed, CliError> {
    let r = s.client.integration().up_raw(bytes, s.untargeted()).map_err(CliError::from_request)?;
    let hex = parse::to_hex(&r.data);
    Ok(Printed::ok(hex.clone(), json!({"code": r.code, "reply": hex})))
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
    }
}
