//! The session over HTTP (extensions spec E1) in the core, against an in-memory server:
//! the login, requests as exchanges, the session's expiry and its early end, commands in
//! response headers, and connections the server closes.

use std::time::Duration;

use bytes::Bytes;
use enos_proto::http::{auth_sign, HttpMode, HttpTarget};
use enos_proto::ops::{MeasurepointPost, RawUp, TagQuery};
use enos_proto::{
    Client, CloseCause, CommandKind, Config, ConnectRefusal, Credentials, DeviceKeys, DisconnectCause, Event, Now,
    Output, Reply, RequestError, RequestId, RequestOptions, Secret, StartError,
};
use serde_json::{json, Value};

const SECRET: &str = "DS0123456789abcdefgh";

fn keys() -> DeviceKeys {
    DeviceKeys::new("pk1234ab", "dev_001").unwrap()
}

/// One request as the server read it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A server that logs devices in, answers requests as the cloud would, and can end
/// sessions early, close connections, and carry a command.
struct Server {
    buf: Vec<u8>,
    out: Vec<u8>,
    seen: Vec<Seen>,
    sessions: u32,
    current: Option<String>,
    secret: String,
    /// Close the connection after each response (`Connection: close`).
    close_after: bool,
    /// With `close_after`, also end the connection (else only the header says it will).
    eof_after: bool,
    /// A command for the next response: (topic, payload).
    command: Option<(String, String)>,
    /// Refuse every request as unauthorized, whatever the session.
    refuse_all: bool,
}

impl Server {
    fn new() -> Self {
        Server {
            buf: Vec::new(),
            out: Vec::new(),
            seen: Vec::new(),
            sessions: 0,
            current: None,
            secret: SECRET.into(),
            close_after: false,
            eof_after: true,
            command: None,
            refuse_all: false,
        }
    }

    fn receive(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Request::new(&mut headers);
            let Ok(httparse::Status::Complete(n)) = r.parse(&self.buf) else { return };
            let headers: Vec<(String, String)> = r
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                .collect();
            let len: usize = headers.iter().find(|(k, _)| k == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
            if self.buf.len() < n + len {
                return;
            }
            let seen = Seen {
                method: r.method.unwrap().to_owned(),
                path: r.path.unwrap().to_owned(),
                headers,
                body: self.buf[n..n + len].to_vec(),
            };
            self.buf.drain(..n + len);
            self.answer(&seen);
            self.seen.push(seen);
        }
    }

    fn respond(&mut self, status: u16, body: &[u8]) {
        let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
        if let Some((topic, payload)) = self.command.take() {
            head.push_str(&format!("command-payload: {payload}\r\ntopic: {topic}\r\n"));
        }
        if self.close_after {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        self.out.extend_from_slice(head.as_bytes());
        self.out.extend_from_slice(body);
    }

    fn answer(&mut self, r: &Seen) {
        if r.path == "/auth/pk1234ab/dev_001" {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            let lifetime = body["lifetime"].as_u64().unwrap();
            let want = auth_sign(&keys(), &Secret::new(self.secret.clone()), lifetime);
            if body["sign"] != want.as_str() {
                return self.respond(200, br#"{"code":401,"message":"auth failed"}"#);
            }
            self.sessions += 1;
            let id = format!("s-{}", self.sessions);
            self.current = Some(id.clone());
            let reply = json!({"code": 200, "message": "success", "data": {"sessionId": id}});
            return self.respond(200, reply.to_string().as_bytes());
        }
        let (path, query) = r.path.split_once('?').unwrap_or((&r.path, ""));
        let session = query.split('&').find_map(|kv| kv.strip_prefix("sessionId=")).unwrap_or_default();
        if Some(session) != self.current.as_deref() || self.refuse_all {
            return self.respond(401, br#"{"id":"","code":401,"message":"session invalid"}"#);
        }
        if let Some(op) = path.strip_prefix("/multipart/sys/pk1234ab/dev_001/file/") {
            let uri = query.split('&').find_map(|kv| kv.strip_prefix("fileUri=")).unwrap_or_default();
            let file: &[u8] = b"hello enos file\n";
            return match op {
                "download" if uri == "enos-connect://a.txt" => match r.headers.iter().find(|(k, _)| k == "range") {
                    Some((_, v)) => {
                        let (s, e) = v.strip_prefix("bytes=").unwrap().split_once('-').unwrap();
                        let (s, e): (usize, usize) =
                            (s.parse().unwrap(), e.parse::<usize>().unwrap().min(file.len() - 1));
                        let part = &file[s..=e];
                        let head = format!(
                            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {s}-{e}/{}\r\nContent-Length: {}\r\n\r\n",
                            file.len(),
                            part.len()
                        );
                        self.out.extend_from_slice(head.as_bytes());
                        self.out.extend_from_slice(part);
                    }
                    None => self.respond(200, file),
                },
                "download" => self.respond(404, b""),
                "download/url" => self.respond(200, br#"{"code":200,"message":"success","data":"http://h/f?sig=1"}"#),
                "delete" => self.respond(200, br#"{"code":200,"message":"success","data":{}}"#),
                _ => self.respond(404, b""),
            };
        }
        if let Some(topic) = path.strip_prefix("/multipart") {
            let ct = &r.headers.iter().find(|(k, _)| k == "content-type").unwrap().1;
            let boundary = ct.strip_prefix("multipart/form-data; boundary=").unwrap();
            assert!(String::from_utf8_lossy(&r.body).ends_with(&format!("--{boundary}--\r\n")));
            let reply = json!({"id": "x", "code": 200, "data": {"multipart": topic}});
            return self.respond(200, reply.to_string().as_bytes());
        }
        let topic = path.strip_prefix("/topic").unwrap();
        if topic.ends_with("_reply") {
            return self.respond(200, b"");
        }
        if topic.ends_with("/model/up_raw") {
            let echo = r.body.clone();
            return self.respond(200, &echo);
        }
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        let reply = json!({"id": body["id"], "code": 200, "data": {"seen": topic}});
        self.respond(200, reply.to_string().as_bytes());
    }
}

struct HttpPair {
    client: Client,
    server: Server,
    now: Now,
    events: Vec<Event>,
    link: bool,
    opens: usize,
    closes: usize,
}

impl HttpPair {
    fn new(lifetime: Duration, secret: &str) -> Self {
        let mut config = Config::new(keys(), Credentials::DeviceSecret(secret.into()));
        let mut mode = HttpMode::new(HttpTarget::parse("http://127.0.0.1:8080/").unwrap());
        mode.lifetime = lifetime;
        config.http = Some(mode);
        config.reconnect_jitter_percent = 0;
        let now = Now::new(Now::system().instant, 1_600_000_000_000);
        HttpPair {
            client: Client::new(config, now).unwrap(),
            server: Server::new(),
            now,
            events: Vec::new(),
            link: false,
            opens: 0,
            closes: 0,
        }
    }

    fn up(lifetime: Duration) -> Self {
        let mut p = HttpPair::new(lifetime, SECRET);
        p.drive();
        assert!(p.client.is_connected(), "{:?}", p.events);
        p
    }

    fn drive(&mut self) {
        for _ in 0..1000 {
            let mut dial = false;
            loop {
                match self.client.poll_output() {
                    Output::Transmit(b) => {
                        assert!(self.link, "bytes without a connection");
                        self.server.receive(&b);
                    }
                    Output::OpenTransport => {
                        self.opens += 1;
                        dial = true;
                    }
                    Output::CloseTransport => {
                        self.closes += 1;
                        self.link = false;
                        self.server.buf.clear();
                        self.server.out.clear();
                    }
                    Output::Event(e) => self.events.push(e),
                    Output::Wait(_) => break,
                }
            }
            if dial {
                self.link = true;
                self.client.handle_connected(self.now);
                continue;
            }
            if self.link && !self.server.out.is_empty() {
                let bytes = std::mem::take(&mut self.server.out);
                // In small pieces: the reader must not care.
                for c in bytes.chunks(5) {
                    self.client.handle_input(self.now, c);
                }
                if self.server.close_after && self.server.eof_after && self.link {
                    self.client.handle_closed(self.now, CloseCause::Eof);
                }
                continue;
            }
            return;
        }
        panic!("livelock");
    }

    fn advance(&mut self, d: Duration) {
        self.now = Now::new(self.now.instant + d, self.now.unix_ms + u64::try_from(d.as_millis()).unwrap());
        self.client.handle_timeout(self.now);
        self.drive();
    }

    fn response(&self, id: RequestId) -> Result<Reply, RequestError> {
        let r: Vec<_> = self
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Response { id: i, result } if *i == id => Some(result.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(r.len(), 1, "request {id:?} ended {} times: {:?}", r.len(), self.events);
        r[0].clone()
    }

    fn paths(&self) -> Vec<String> {
        self.server.seen.iter().map(|s| s.path.split('?').next().unwrap().to_owned()).collect()
    }

    fn connected_events(&self) -> usize {
        self.events.iter().filter(|e| matches!(e, Event::Connected { .. })).count()
    }
}

fn data(r: &Result<Reply, RequestError>) -> Value {
    match r {
        Ok(Reply::Json(j)) => serde_json::from_str(j.data_json().unwrap_or("null")).unwrap(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_device_logs_in_and_each_request_is_an_exchange_whose_response_is_its_reply() {
    let mut p = HttpPair::up(Duration::from_secs(300));
    assert!(p.events.iter().any(|e| matches!(e, Event::Started(Ok(())))));
    let login = &p.server.seen[0];
    assert_eq!((login.method.as_str(), login.path.as_str()), ("POST", "/auth/pk1234ab/dev_001"));
    assert!(login.headers.contains(&("host".into(), "127.0.0.1:8080".into())));
    let a = p.client.request(p.now, MeasurepointPost::new(json!({"temp": 21.5})), RequestOptions::new()).unwrap();
    let b = p.client.request(p.now, TagQuery::new(["site"]), RequestOptions::new()).unwrap();
    p.drive();
    assert_eq!(data(&p.response(a)), json!({"seen": "/sys/pk1234ab/dev_001/thing/measurepoint/post"}));
    let r = p.response(b);
    assert!(matches!(&r, Ok(Reply::Json(j)) if j.code == 200), "{r:?}");
    let post = &p.server.seen[1];
    assert_eq!(post.path, "/topic/sys/pk1234ab/dev_001/thing/measurepoint/post?sessionId=s-1");
    assert!(post.headers.contains(&("content-type".into(), "application/json; charset=utf-8".into())));
    let raw = p.client.request(p.now, RawUp::new(&b"\x01\x02"[..]), RequestOptions::new()).unwrap();
    p.drive();
    assert_eq!(p.response(raw), Ok(Reply::Raw(Bytes::from_static(b"\x01\x02"))));
    assert!(p.server.seen[3].headers.contains(&("content-type".into(), "application/octet-stream".into())));
    // One connection for all of it, and one session.
    assert_eq!((p.opens, p.server.sessions, p.connected_events()), (1, 1, 1));
}

#[test]
fn an_expired_session_is_renewed_before_the_next_request_without_news() {
    let mut p = HttpPair::up(Duration::from_secs(30));
    p.advance(Duration::from_secs(29));
    let a = p.client.request(p.now, MeasurepointPost::new(json!({"temp": 1})), RequestOptions::new()).unwrap();
    p.drive();
    assert!(p.response(a).is_ok());
    assert_eq!(p.server.sessions, 1, "not expired yet");
    p.advance(Duration::from_secs(2));
    let b = p.client.request(p.now, MeasurepointPost::new(json!({"temp": 2})), RequestOptions::new()).unwrap();
    p.drive();
    assert!(p.response(b).is_ok());
    assert_eq!(p.server.sessions, 2);
    assert_eq!(p.paths()[2..], ["/auth/pk1234ab/dev_001", "/topic/sys/pk1234ab/dev_001/thing/measurepoint/post"]);
    assert!(p.server.seen[3].path.ends_with("sessionId=s-2"));
    assert_eq!(p.connected_events(), 1, "a renewal is not a reconnect");
}

#[test]
fn a_request_refused_as_unauthorized_logs_in_again_and_goes_once_more() {
    let mut p = HttpPair::up(Duration::from_secs(300));
    // The cloud forgets the session early.
    p.server.current = None;
    let a = p.client.request(p.now, MeasurepointPost::new(json!({"temp": 1})), RequestOptions::new()).unwrap();
    p.drive();
    assert!(p.response(a).is_ok());
    let paths = p.paths();
    assert_eq!(
        paths[1..],
        [
            "/topic/sys/pk1234ab/dev_001/thing/measurepoint/post",
            "/auth/pk1234ab/dev_001",
            "/topic/sys/pk1234ab/dev_001/thing/measurepoint/post"
        ]
    );
    assert_eq!(p.server.sessions, 2);
}

#[test]
fn a_command_in_a_response_reaches_the_application_and_its_reply_is_posted() {
    let mut p = HttpPair::up(Duration::from_secs(300));
    let payload = r#"{"id":"9300","version":"1.0","params":{"delay":5},"method":"thing.service.restart"}"#;
    p.server.command = Some(("/sys/pk1234ab/dev_001/thing/service/restart".into(), payload.into()));
    let a = p.client.request(p.now, MeasurepointPost::new(json!({"temp": 1})), RequestOptions::new()).unwrap();
    p.drive();
    assert!(p.response(a).is_ok());
    let cmd = p
        .events
        .iter()
        .find_map(|e| if let Event::Command(c) = e { Some((**c).clone()) } else { None })
        .expect("the command");
    assert_eq!(cmd.kind, CommandKind::InvokeService { service_id: "restart".into(), params: json!({"delay": 5}) });
    p.client.reply(p.now, cmd.reply_to.ok(&json!({"result": "ok"})).unwrap()).unwrap();
    p.drive();
    let reply = p.server.seen.last().unwrap();
    assert_eq!(reply.path, "/topic/sys/pk1234ab/dev_001/thing/service/restart_reply?sessionId=s-1");
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body, json!({"id": "9300", "code": 200, "data": {"result": "ok"}}));
}

#[test]
fn a_connection_the_server_closes_between_exchanges_is_opened_again_quietly() {
    let mut p = HttpPair::up(Duration::from_secs(300));
    p.server.close_after = true;
    for i in 0..3 {
        let a = p.client.request(p.now, MeasurepointPost::new(json!({"temp": i})), RequestOptions::new()).unwrap();
        p.drive();
        assert!(p.response(a).is_ok(), "{i}");
        assert!(p.client.is_connected(), "{i}: the session outlives the connection");
    }
    assert_eq!(p.opens, 3, "one connection per exchange once the server closes each");
    assert_eq!(p.server.sessions, 1);
    assert!(!p.events.iter().any(|e| matches!(e, Event::Disconnected { .. })), "{:?}", p.events);
}

#[test]
fn a_response_that_says_connection_close_makes_the_client_close_and_dial_anew() {
    let mut p = HttpPair::up(Duration::from_secs(300));
    p.server.close_after = true;
    // The server says it closes but has not yet: the next request must not go on that
    // connection.
    p.server.eof_after = false;
    for i in 0..3 {
        let a = p.client.request(p.now, MeasurepointPost::new(json!({"temp": i})), RequestOptions::new()).unwrap();
        p.drive();
        assert!(p.response(a).is_ok(), "{i}");
    }
    assert_eq!((p.opens, p.closes), (3, 3), "each response closed its connection, and each request dialled");
    assert!(!p.events.iter().any(|e| matches!(e, Event::Disconnected { .. })), "{:?}", p.events);
}

#[test]
fn a_refused_login_ends_the_start_with_its_cause() {
    let mut p = HttpPair::new(Duration::from_secs(300), "wrong secret");
    p.drive();
    let started = p.events.iter().find_map(|e| if let Event::Started(r) = e { Some(r.clone()) } else { None });
    let refused = DisconnectCause::Refused(ConnectRefusal::NotAuthorized);
    assert!(matches!(&started, Some(Err(StartError::Failed(c))) if *c == refused), "{started:?}");
}

#[test]
fn a_connection_lost_during_an_exchange_sends_its_request_again() {
    let mut p = HttpPair::up(Duration::from_secs(300));
    let a = p.client.request(p.now, MeasurepointPost::new(json!({"temp": 1})), RequestOptions::new()).unwrap();
    // The request goes out; the connection breaks before the response.
    loop {
        match p.client.poll_output() {
            Output::Transmit(b) => p.server.receive(&b),
            Output::Event(e) => p.events.push(e),
            Output::Wait(_) => break,
            o => panic!("{o:?}"),
        }
    }
    assert_eq!(p.server.seen.len(), 2, "the request reached the server");
    p.server.out.clear();
    p.client.handle_closed(p.now, CloseCause::Eof);
    p.link = false;
    p.drive();
    p.advance(Duration::from_secs(5));
    assert!(p.response(a).is_ok(), "{:?}", p.events);
    assert_eq!(p.connected_events(), 2, "down, then up again");
}

#[test]
fn files_go_by_their_own_exchanges_and_a_client_on_mqtt_refuses_them() {
    use enos_proto::http::{
        ByteRange, FileCategory, FileDelete, FileDownload, FileDownloadUrl, FileUpload, MeasurepointFilePost,
    };
    let mut p = HttpPair::up(Duration::from_secs(300));
    let post =
        MeasurepointFilePost::new(vec![FileUpload::new("newFile", "a.txt", &b"hello"[..], [1; 8])]).point("temp", 1.5);
    let a = p.client.request(p.now, post.clone(), RequestOptions::new()).unwrap();
    let download = |range| FileDownload { uri: "enos-connect://a.txt".into(), category: FileCategory::Feature, range };
    let b = p.client.request(p.now, download(None), RequestOptions::new()).unwrap();
    let c =
        p.client.request(p.now, download(Some(ByteRange::Span { start: 6, end: 9 })), RequestOptions::new()).unwrap();
    let missing = FileDownload { uri: "enos-connect://nope".into(), category: FileCategory::Ota, range: None };
    let d = p.client.request(p.now, missing, RequestOptions::new()).unwrap();
    let url = FileDownloadUrl { uri: "enos-connect://a.txt".into(), category: FileCategory::Feature };
    let e = p.client.request(p.now, url, RequestOptions::new()).unwrap();
    let f = p.client.request(p.now, FileDelete { uri: "enos-connect://a.txt".into() }, RequestOptions::new()).unwrap();
    p.drive();
    assert_eq!(data(&p.response(a)), json!({"multipart": "/sys/pk1234ab/dev_001/thing/measurepoint/post"}));
    let Ok(Reply::File(whole)) = p.response(b) else { panic!() };
    assert_eq!((&whole.bytes[..], whole.total()), (&b"hello enos file\n"[..], Some(16)));
    let Ok(Reply::File(part)) = p.response(c) else { panic!() };
    assert_eq!((&part.bytes[..], part.total()), (&b"enos"[..], Some(16)));
    assert_eq!(p.response(d), Err(RequestError::HttpStatus(404)));
    assert_eq!(
        <FileDownloadUrl as enos_proto::Operation>::parse_reply(&p.response(e).unwrap()).unwrap(),
        "http://h/f?sig=1"
    );
    assert!(p.response(f).is_ok());
    let paths = p.paths();
    assert_eq!(paths[1], "/multipart/sys/pk1234ab/dev_001/thing/measurepoint/post");
    assert!(p.server.seen[3].headers.contains(&("range".into(), "bytes=6-9".into())));
    // A URI that would break the request line is refused before anything is queued.
    for bad in ["enos-connect://a b.txt", "enos-connect://a\r\nX: 1", "enos-connect://a#b"] {
        let r = p.client.request(p.now, FileDelete { uri: bad.into() }, RequestOptions::new());
        assert!(matches!(r, Err(enos_proto::SubmitError::Encode(enos_proto::EncodeError::Invalid { .. }))), "{bad:?}");
    }
    // Over MQTT there is no such exchange: refused before anything is queued.
    let mut mqtt = Client::new(Config::new(keys(), Credentials::DeviceSecret(SECRET.into())), p.now).unwrap();
    assert_eq!(mqtt.request(p.now, post, RequestOptions::new()), Err(enos_proto::SubmitError::NeedsHttp));
}

#[test]
fn a_request_refused_again_after_a_renewed_login_ends_with_the_refusal() {
    let mut p = HttpPair::up(Duration::from_secs(300));
    p.server.refuse_all = true;
    let a = p.client.request(p.now, MeasurepointPost::new(json!({"temp": 1})), RequestOptions::new()).unwrap();
    p.drive();
    assert_eq!(p.response(a), Err(RequestError::HttpStatus(401)));
    assert_eq!(p.server.sessions, 2, "one renewal, not a loop");
}
