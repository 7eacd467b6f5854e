//! A client on the HTTP transport fed arbitrary response bytes (well-formed responses with
//! arbitrary statuses, headers, commands and bodies, or raw noise), time steps, closed
//! connections and application calls. Invariants: no panic, and every request ends
//! exactly once (by a final close at the latest).
#![no_main]

use std::collections::HashMap;
use std::time::Duration;

use arbitrary::Arbitrary;
use enos_proto::http::{ByteRange, FileCategory, FileDownload, HttpMode, HttpTarget};
use enos_proto::ops::{MeasurepointPost, RawUp, TagQuery};
use enos_proto::{Client, CloseCause, Config, Credentials, DeviceKeys, Event, Now, Output, RequestId, RequestOptions};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Action {
    Request {
        kind: u8,
        timeout_s: Option<u8>,
    },
    /// A response: status, a body shape, a command in its headers, closed after it.
    Response {
        status: u16,
        body: u8,
        command: bool,
        close: bool,
        chunked: bool,
    },
    Bytes(Vec<u8>),
    Advance(u16),
    Closed,
    Reply,
}

const BODIES: [&str; 6] = [
    r#"{"code":200,"message":"success","data":{"sessionId":"s1"}}"#,
    r#"{"id":"1","code":200,"data":{}}"#,
    r#"{"id":"2","code":401,"message":"session invalid"}"#,
    r#"{"code":402}"#,
    "not json",
    "",
];

/// Drains the client: a dial is taken at once; responses are counted; commands kept to
/// answer.
fn drain(
    c: &mut Client,
    now: Now,
    open: &mut bool,
    ended: &mut HashMap<RequestId, u32>,
    commands: &mut Vec<enos_proto::CommandReply>,
) {
    for _ in 0..10_000 {
        match c.poll_output() {
            Output::OpenTransport => {
                *open = true;
                c.handle_connected(now);
            }
            Output::CloseTransport => *open = false,
            Output::Event(Event::Response { id, .. }) => *ended.entry(id).or_default() += 1,
            Output::Event(Event::Command(cmd)) => commands.push(cmd.reply_to.ok_empty()),
            Output::Transmit(_) | Output::Event(_) => {}
            Output::Wait(_) => return,
        }
    }
    panic!("the client never went idle");
}

fuzz_target!(|actions: Vec<Action>| {
    let keys = DeviceKeys::new("pk", "dk").unwrap();
    let mut config = Config::new(keys, Credentials::DeviceSecret("secret".into()));
    config.http = Some(HttpMode::new(HttpTarget::parse("http://127.0.0.1:8080").unwrap()));
    config.retry_first_connect = true;
    let mut now = Now::system();
    let Ok(mut c) = Client::new(config, now) else { return };
    let mut ended: HashMap<RequestId, u32> = HashMap::new();
    let mut open = false;
    let mut commands = Vec::new();
    drain(&mut c, now, &mut open, &mut ended, &mut commands);
    for a in actions.into_iter().take(64) {
        match a {
            Action::Request { kind, timeout_s } => {
                let mut o = RequestOptions::new();
                if let Some(t) = timeout_s {
                    o = o.timeout(Duration::from_secs(u64::from(t) + 1));
                }
                let r = match kind % 4 {
                    0 => c.request(now, MeasurepointPost::new(serde_json::json!({"t": 1})), o),
                    1 => c.request(now, TagQuery::new(["a"]), o),
                    2 => c.request(now, RawUp::new(&b"\x01"[..]), o),
                    _ => c.request(
                        now,
                        FileDownload { uri: "u".into(), category: FileCategory::Ota, range: Some(ByteRange::From(3)) },
                        o,
                    ),
                };
                if let Ok(id) = r {
                    ended.entry(id).or_default();
                }
            }
            Action::Response { status, body, command, close, chunked } if open => {
                let body = BODIES[usize::from(body) % BODIES.len()];
                let mut head = format!("HTTP/1.1 {} X\r\n", status % 600);
                if command {
                    head.push_str(
                        "command-payload: {\"id\":\"9\",\"params\":{}}\r\ntopic: /sys/pk/dk/thing/service/x\r\n",
                    );
                }
                if close {
                    head.push_str("Connection: close\r\n");
                }
                let wire = if chunked {
                    format!("{head}Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n", body.len())
                } else {
                    format!("{head}Content-Length: {}\r\n\r\n{body}", body.len())
                };
                c.handle_input(now, wire.as_bytes());
            }
            Action::Bytes(b) if open => c.handle_input(now, &b),
            Action::Advance(ms) => {
                now =
                    Now::new(now.instant + Duration::from_millis(u64::from(ms) * 50), now.unix_ms + u64::from(ms) * 50);
                c.handle_timeout(now);
            }
            Action::Closed if open => {
                open = false;
                c.handle_closed(now, CloseCause::Eof);
            }
            Action::Reply => {
                if let Some(r) = commands.pop() {
                    let _ = c.reply(now, r);
                }
            }
            _ => {}
        }
        drain(&mut c, now, &mut open, &mut ended, &mut commands);
        assert!(ended.values().all(|n| *n <= 1), "a request ended twice");
    }
    c.close(now);
    drain(&mut c, now, &mut open, &mut ended, &mut commands);
    assert!(ended.values().all(|n| *n == 1), "a request did not end exactly once: {ended:?}");
});
