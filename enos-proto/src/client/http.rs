//! The session over HTTP (extensions spec E1): the same requests, replies and commands as
//! over MQTT, carried by HTTP/1.1 exchanges on one kept-alive connection, one at a time.
//!
//! The login (`POST /auth/{pk}/{dk}`, signed with the device secret) stands where MQTT
//! has its CONNECT: once it is answered with a session id the session is up (`Connected`).
//! Each request then goes to `/topic{request topic}?sessionId=..`, and the response's body
//! is its reply. A session older than its lifetime is renewed before the next request; a
//! request refused as unauthorized (HTTP 401, or code 401) renews it and goes once more.
//! A command rides on any response, in its `command-payload` and `topic` headers; its
//! reply is posted to `/topic{command topic}_reply`. A connection the server closes
//! between exchanges is opened again when there is something to send: that is not a loss.

use super::*;
use crate::http::{
    ContentRange, FileExchange, FilePart, HttpMode, HttpRequest, ReadItem, ResponseHead, ResponseReader,
};

/// What the exchange on the wire is for.
#[derive(Debug)]
enum Exchange {
    Login,
    /// A request or a command's reply, kept to go again after a renewed login.
    Publish {
        out: Outgoing,
    },
}

/// The HTTP side of a [`Client`] in HTTP mode.
#[derive(Debug)]
pub(super) struct HttpState {
    reader: ResponseReader,
    /// The session id, and when it was issued.
    session: Option<(String, Instant)>,
    exchange: Option<Exchange>,
    head: Option<ResponseHead>,
    body: BytesMut,
    /// How the requests that are not publishes (files) are carried.
    pub(super) files: HashMap<RequestId, FileExchange>,
    /// Requests already sent again after a renewed login: a second refusal ends them.
    renewed: HashSet<RequestId>,
}

impl HttpState {
    pub(super) fn new() -> Self {
        HttpState {
            reader: ResponseReader::new(),
            session: None,
            exchange: None,
            head: None,
            body: BytesMut::new(),
            files: HashMap::new(),
            renewed: HashSet::new(),
        }
    }

    /// Request `id` ended: what was kept for it goes.
    pub(super) fn ended(&mut self, id: RequestId) {
        self.files.remove(&id);
        self.renewed.remove(&id);
    }

    /// Whether a session id is held.
    pub(super) fn logged_in(&self) -> bool {
        self.session.is_some()
    }
}

impl Client {
    fn http_mode(&self) -> Option<&HttpMode> {
        self.config.http.as_ref()
    }

    /// The transport (and TLS) is up: log in, or go on with the session held.
    pub(super) fn http_ready(&mut self) {
        let anonymous = self.http_mode().is_some_and(|m| m.anonymous);
        let now = self.now;
        let Some(h) = self.http.as_mut() else { return };
        h.reader = ResponseReader::new();
        h.head = None;
        h.body.clear();
        if anonymous && h.session.is_none() {
            // No login: a session with no id.
            h.session = Some((String::new(), now));
        }
        if h.session.is_some() {
            self.http_up();
            self.flush();
        } else {
            self.state = State::AwaitConnack;
            self.http_login();
        }
    }

    fn http_login(&mut self) {
        // A login unanswered within the connect timeout ends the connection, whether it
        // opens the session or renews it.
        self.timers.set(Timer::Connect, later(self.now, self.config.connect_timeout));
        let (Some(mode), Some((_, secret))) = (self.http_mode(), self.credentials.signing()) else { return };
        let lifetime = u64::try_from(mode.lifetime.as_millis()).unwrap_or(u64::MAX);
        let request = mode.target.login(&self.config.device, secret, lifetime, &mode.accept_commands);
        self.http_send(&request, Exchange::Login);
    }

    fn http_send(&mut self, request: &HttpRequest, exchange: Exchange) {
        let Some(mode) = self.config.http.as_ref() else { return };
        let mut bytes = Vec::with_capacity(request.body.len() + 256);
        request.write(&mode.target, &mut bytes);
        self.out.extend_from_slice(&bytes);
        if let Some(h) = self.http.as_mut() {
            h.exchange = Some(exchange);
        }
        self.sent();
    }

    /// Sends the next request, if the session is up and nothing is on the wire; renews
    /// an expired session first. Opens the connection again when the server closed it.
    pub(super) fn http_flush(&mut self) {
        let Some(h) = self.http.as_ref() else { return };
        if h.exchange.is_some() {
            return;
        }
        if self.state == State::Idle
            && h.logged_in()
            && self.outbox.len() > 0
            && self.timers.get(Timer::Reconnect).is_none()
        {
            self.open_transport();
            return;
        }
        if self.state != State::Connected {
            return;
        }
        let lifetime = self.http_mode().map_or(Duration::MAX, |m| if m.anonymous { Duration::MAX } else { m.lifetime });
        let expired = h.session.as_ref().is_none_or(|(_, at)| self.now.saturating_duration_since(*at) >= lifetime);
        if expired && self.outbox.len() > 0 {
            if let Some(h) = self.http.as_mut() {
                h.session = None;
            }
            self.state = State::AwaitConnack;
            self.http_login();
            return;
        }
        while let Some(out) = self.outbox.pop() {
            if out.expires.is_some_and(|at| at <= self.now) {
                continue;
            }
            if let Some(req) = out.req.and_then(|id| self.pending.get_mut(id)) {
                req.stage = Stage::Sent;
            } else if out.req.is_some() {
                continue;
            }
            self.http_publish(out);
            return;
        }
    }

    fn http_publish(&mut self, out: Outgoing) {
        let Some((session, _)) = self.http.as_ref().and_then(|h| h.session.clone()) else { return };
        let Some(mode) = self.http_mode() else { return };
        let (target, device) = (&mode.target, &self.config.device);
        let file = out.req.and_then(|id| self.http.as_ref().and_then(|h| h.files.get(&id)));
        let request = match file {
            Some(FileExchange::Post { body, boundary }) => {
                target.multipart(&out.topic, &session, boundary, body.clone())
            }
            Some(FileExchange::Download { uri, category, range }) => {
                target.download(device, &session, uri, *category, *range)
            }
            Some(FileExchange::DownloadUrl { uri, category }) => target.download_url(device, &session, uri, *category),
            Some(FileExchange::Delete { uri }) => target.delete_file(device, &session, uri),
            Some(FileExchange::Get { path, range }) => target.get(path, *range),
            None => {
                let raw = out.topic.ends_with("/model/up_raw") || out.topic.ends_with("/model/down_raw_reply");
                target.publish(&out.topic, &session, out.payload.clone(), raw)
            }
        };
        self.http_send(&request, Exchange::Publish { out });
    }

    /// Response bytes in.
    pub(super) fn http_input(&mut self, bytes: &[u8]) {
        let max = self.config.max_packet_bytes;
        let Some(h) = self.http.as_mut() else { return };
        h.reader.feed(bytes);
        loop {
            let Some(h) = self.http.as_mut() else { return };
            match h.reader.read() {
                Ok(None) => return,
                Ok(Some(ReadItem::Head(head))) => {
                    self.last_received = self.now;
                    h.head = Some(head);
                    h.body.clear();
                }
                Ok(Some(ReadItem::Body(b))) => {
                    if h.body.len() + b.len() > max {
                        let size = h.body.len() + b.len();
                        self.lost(DisconnectCause::Decode(crate::DecodeError::PacketTooLarge { size, max }));
                        return;
                    }
                    h.body.extend_from_slice(&b);
                }
                Ok(Some(ReadItem::End { reusable })) => {
                    let head = h.head.take();
                    let body = h.body.split().freeze();
                    let exchange = h.exchange.take();
                    if let (Some(head), Some(exchange)) = (head, exchange) {
                        self.http_command(&head);
                        self.http_response(exchange, &head, body);
                    }
                    // A response that ends its connection: the next exchange dials anew.
                    if !reusable && self.state != State::Closed {
                        self.http_idle();
                    }
                    self.flush();
                }
                Err(e) => {
                    self.lost(DisconnectCause::Http(e));
                    return;
                }
            }
        }
    }

    /// A command carried in a response's headers goes the way of one that came by MQTT.
    fn http_command(&mut self, head: &ResponseHead) {
        let (Some(payload), Some(topic)) =
            (head.header(crate::http::COMMAND_PAYLOAD_HEADER), head.header(crate::http::COMMAND_TOPIC_HEADER))
        else {
            return;
        };
        let p = codec::Publish::new(topic, QoS::AtMostOnce, payload.as_bytes().to_vec());
        self.on_publish(p);
    }

    fn http_response(&mut self, exchange: Exchange, head: &ResponseHead, body: Bytes) {
        match exchange {
            Exchange::Login => self.http_logged_in(head, &body),
            Exchange::Publish { out } => {
                let unauthorized = head.status == 401
                    || (head.is_success() && envelope::parse_reply(&body).is_ok_and(|r| r.code == 401));
                // A request goes once more after a renewed login; a command's reply does not.
                let again =
                    unauthorized && out.req.is_some_and(|id| self.http.as_mut().is_some_and(|h| h.renewed.insert(id)));
                if again {
                    // The session ended early: log in again, then the same request once more.
                    if let Some(h) = self.http.as_mut() {
                        h.session = None;
                    }
                    self.outbox.push_front(Outgoing { dup: true, ..out });
                    self.state = State::AwaitConnack;
                    self.http_login();
                    return;
                }
                let Some(id) = out.req else { return };
                if self.pending.get(id).is_none() {
                    return;
                }
                let (raw, wants_reply) = self.pending.get(id).map_or((false, true), |r| (r.raw, r.wants_reply));
                let download = self.http.as_ref().is_some_and(|h| {
                    matches!(h.files.get(&id), Some(FileExchange::Download { .. } | FileExchange::Get { .. }))
                });
                let result = if !head.is_success() {
                    Err(RequestError::HttpStatus(head.status.as_u16()))
                } else if download {
                    let range = head.header("content-range").and_then(ContentRange::parse);
                    Ok(Reply::File(FilePart { bytes: body, range }))
                } else if !wants_reply {
                    Ok(Reply::Delivered)
                } else if raw {
                    Ok(Reply::Raw(body))
                } else {
                    envelope::parse_reply(&body).map(Reply::Json).map_err(RequestError::BadReply)
                };
                self.finish(id, result);
            }
        }
    }

    /// The login's answer: a session id, or a refusal.
    fn http_logged_in(&mut self, head: &ResponseHead, body: &[u8]) {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Data {
            session_id: String,
        }
        #[derive(serde::Deserialize)]
        struct Login {
            code: i64,
            data: Option<Data>,
        }
        let login = serde_json::from_slice::<Login>(body).ok();
        let session = match login {
            Some(Login { code: 200, data: Some(d) }) if head.is_success() && !d.session_id.is_empty() => d.session_id,
            _ => {
                // A wrong signature (401) or an unknown device (402): refused, as a CONNACK
                // would be; anything else is not a login the device can use either.
                self.lost(DisconnectCause::Refused(ConnectRefusal::NotAuthorized));
                return;
            }
        };
        if let Some(h) = self.http.as_mut() {
            h.session = Some((session, self.now));
        }
        self.http_up();
    }

    /// A session is held and a connection is up. Announced when it was down (at the start,
    /// or after a loss); a renewed login or a connection opened again is not news.
    fn http_up(&mut self) {
        self.state = State::Connected;
        self.timers.stop(Timer::Connect);
        if self.connected_at.is_none() {
            self.announce_up();
            self.started(Ok(()));
        }
    }

    /// The server closes the connection after this response: drop it quietly; the next
    /// request opens another.
    fn http_idle(&mut self) {
        #[cfg(feature = "tls")]
        {
            self.tls = None;
        }
        self.state = State::Idle;
        self.timers.stop(Timer::Connect);
        self.push_ctl(Output::CloseTransport);
    }

    /// The transport ended: between exchanges, quietly (the session lives on); during one,
    /// as a loss (its request goes again on the next connection).
    pub(super) fn http_closed(&mut self, cause: CloseCause) {
        let busy = self.http.as_ref().is_some_and(|h| h.exchange.is_some() || !h.reader.is_idle());
        if self.state == State::Connected && !busy {
            self.http_idle();
            self.flush();
            return;
        }
        self.lost(DisconnectCause::Transport(cause));
    }

    /// What a loss does to the exchange under way: its request goes again, first.
    pub(super) fn http_lost(&mut self) {
        let Some(h) = self.http.as_mut() else { return };
        h.reader = ResponseReader::new();
        h.head = None;
        h.body.clear();
        if let Some(Exchange::Publish { out }) = h.exchange.take() {
            if let Some(req) = out.req.and_then(|id| self.pending.get_mut(id)) {
                req.stage = Stage::Queued;
                self.outbox.push_front(Outgoing { dup: true, ..out });
            }
        }
    }

    /// A request whose deadline passed while it was on the wire leaves the connection
    /// waiting for a response nobody wants: drop the connection, so the next request is
    /// not held behind it.
    pub(super) fn http_abandon_stale(&mut self) {
        let stale = match self.http.as_ref().and_then(|h| h.exchange.as_ref()) {
            Some(Exchange::Publish { out: Outgoing { req: Some(id), .. } }) => self.pending.get(*id).is_none(),
            _ => false,
        };
        if stale && self.state == State::Connected {
            if let Some(h) = self.http.as_mut() {
                h.exchange = None;
                h.reader = ResponseReader::new();
            }
            self.http_idle();
        }
    }
}
