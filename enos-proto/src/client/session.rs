//! The connection's life: CONNECT and CONNACK, keep-alive, loss and back-off, close.

use super::*;

impl Client {
    /// The CONNECT, signed at the last wall-clock time given.
    pub(super) fn send_connect(&mut self) {
        if self.http.is_some() {
            return self.http_ready();
        }
        let unix_ms = self.last_unix_ms;
        let (keys, method) = (&self.config.device, self.config.sign_method);
        let signed = crate::compress::signed_client_id(self.config.cid(), self.config.compression);
        let cid = signed.as_ref();
        let mut connect = match self.credentials.signing() {
            Some((mode, secret)) => {
                let f = connect_fields(keys, cid, mode, method, unix_ms, secret);
                let mut c = codec::Connect::new(f.client_id);
                c.set_login(f.username, f.password.expose().to_owned());
                c
            }
            None => {
                // Certificate only: the grammar of mode 2, with no password.
                let (client_id, username) = connect_identity(keys, cid, SecureMode::DeviceSecret, method, unix_ms);
                let mut c = codec::Connect::new(client_id);
                c.login = Some(codec::Login::new(username, String::new()));
                c
            }
        };
        connect.keep_alive = u16::try_from(self.config.keep_alive.as_secs()).unwrap_or(u16::MAX);
        connect.clean_session = true;
        self.state = State::AwaitConnack;
        self.last_received = self.now;
        if let Err(e) = codec::encode_packet(&mut self.out, &Packet::Connect(connect)) {
            // Only oversize fields can fail, and validate() bounds them.
            debug_assert!(false, "CONNECT did not encode: {e}");
        }
        self.sent();
    }

    /// A SUBSCRIBE went out: its SUBACK is due within the ping timeout, unless one is
    /// already awaited (then that one's deadline stands).
    pub(super) fn arm_suback(&mut self) {
        if self.timers.get(Timer::Suback).is_none() {
            self.timers.set(Timer::Suback, later(self.now, self.config.ping_timeout));
        }
    }

    /// Opens a transport now if the client is idle (after a failure with automatic
    /// reconnects disabled, or to skip the rest of a back-off). After
    /// [`close`](Client::close) it starts the client again: a fresh session with the
    /// same configuration and the credentials it had (a device secret issued by dynamic
    /// activation is kept), and an [`Event::Started`] to come.
    pub fn connect(&mut self, now: Now) {
        self.tick(now);
        match self.state {
            State::Idle => self.open_transport(),
            State::Closed => {
                self.starting = true;
                self.ever_connected = false;
                self.reconnected = false;
                self.failures = 0;
                self.logged_in.clear();
                self.topics.clear();
                self.decoder.reset();
                self.open_transport();
            }
            State::Dialing | State::Securing | State::AwaitConnack | State::Connected => {}
        }
    }

    /// Ends the client: command replies already accepted go out, every outstanding
    /// request ends with [`RequestError::Closed`], a DISCONNECT follows if the session is
    /// up, then [`Output::CloseTransport`] and [`Event::Disconnected`] with
    /// [`DisconnectCause::Closed`]. Later requests are refused with
    /// [`SubmitError::Closed`].
    pub fn close(&mut self, now: Now) {
        self.tick(now);
        self.end(DisconnectCause::Closed, Some(StartError::Closed));
    }

    /// Closes the client: a DISCONNECT if the session is up, every request ended, the
    /// transport closed, `Disconnected` with `cause`, and `Started(Err(start))` if the
    /// start was still pending.
    pub(super) fn end(&mut self, cause: DisconnectCause, start: Option<StartError>) {
        if self.state == State::Closed {
            return;
        }
        let had_transport = self.state != State::Idle;
        if self.state == State::Connected && self.http.is_none() {
            let replies: Vec<Outgoing> = self.outbox.replies().map(Outgoing::clone_reply).collect();
            for r in replies {
                self.transmit(r);
            }
            let _ = codec::encode_packet(&mut self.out, &Packet::Disconnect);
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_mut() {
            // The DISCONNECT is sealed first, then the close_notify alert follows it.
            if !self.out.is_empty() && tls.write_plaintext(&self.out).is_ok() {
                self.out.clear();
            }
            tls.send_close_notify();
        }
        self.shut();
        if had_transport {
            self.push_ctl(Output::CloseTransport);
        }
        #[cfg(feature = "tls")]
        {
            self.tls = None;
        }
        self.events.push_back(Event::Disconnected { cause, retry_at: None });
        if let Some(e) = start {
            self.started(Err(e));
        }
    }

    /// The start's outcome, once: `Event::Started` if the start is still pending.
    pub(super) fn started(&mut self, outcome: Result<(), StartError>) {
        if std::mem::replace(&mut self.starting, false) {
            self.events.push_back(Event::Started(outcome));
        }
    }

    /// The state of a closed client: nothing outstanding, queued or held.
    pub(super) fn shut(&mut self) {
        self.state = State::Closed;
        if let Some(h) = self.http.as_mut() {
            **h = http::HttpState::new();
        }
        self.timers.clear();
        for id in self.pending.ids() {
            self.finish(id, Err(RequestError::Closed));
        }
        self.outbox.clear();
        self.offline_closed();
        self.inflight.clear();
        self.subscribing.clear();
        self.running_commands.clear();
        self.command_deadlines.clear();
        self.unwritten.clear();
        (self.transmits, self.written) = (0, 0);
        self.held_commands.clear();
    }

    pub(super) fn open_transport(&mut self) {
        self.state = State::Dialing;
        self.timers.stop(Timer::Reconnect);
        self.timers.set(Timer::Connect, later(self.now, self.config.connect_timeout));
        self.push_ctl(Output::OpenTransport);
    }

    /// Something was written: the keep-alive counts from now.
    pub(super) fn sent(&mut self) {
        self.last_sent = self.now;
        self.arm_keep_alive();
    }

    /// A PINGREQ is due `keep_alive` after the last packet sent or received, whichever
    /// is older: so a link that only sends (QoS 0 telemetry) is still checked for a
    /// living peer.
    pub(super) fn arm_keep_alive(&mut self) {
        if !self.config.keep_alive.is_zero() && self.state == State::Connected && self.http.is_none() {
            let since = self.last_sent.min(self.last_received);
            self.timers.set(Timer::KeepAlive, later(since, self.config.keep_alive));
        }
    }

    pub(super) fn lost(&mut self, cause: DisconnectCause) {
        let refused = match &cause {
            DisconnectCause::Refused(r) => Some(*r),
            _ => None,
        };
        let was_up = self.state == State::Connected;
        self.http_lost();
        self.state = State::Idle;
        self.activation_open = false;
        (self.transmits, self.written) = (0, 0);
        self.timers.clear();
        self.decoder.reset();
        self.out.clear();
        #[cfg(feature = "tls")]
        if let Some(mut tls) = self.tls.take() {
            // What the TLS session still has to say (an alert after a failure) goes out
            // before the transport closes; unsent plaintext is dropped with the session.
            tls.take_ciphertext_into(&mut self.wire);
            if !self.wire.is_empty() {
                let alert = self.wire.split().freeze();
                self.ctl.push_back(Output::Transmit(alert));
            }
        }
        // Clean session: every subscription is gone with the connection.
        self.reply_subs = 0;
        for t in self.topics.values_mut() {
            t.sub = SubState::None;
        }
        self.subscribing.clear();
        self.to_subscribe.clear();
        if let Some(id) = self.relogin.take() {
            // A fresh re-login with fresh signatures follows the next CONNACK.
            self.finish(id, Err(RequestError::Closed));
        }
        if let Some(id) = self.relogin_retry.take() {
            self.finish(id, Err(RequestError::Closed));
        }
        // The re-login after the next CONNACK asks for every sub-device anyway (its timer
        // went with the others).
        self.unconfirmed.clear();
        // Resumes of stored records end with the link (their replies went with it): the
        // records stay, and the next session reads them again. The store is their queue.
        self.resumes_lost();
        // Unacknowledged QoS 1 publishes go out again, first, with DUP.
        let mut again: Vec<InFlight> = self.inflight.drain().map(|(_, f)| f).collect();
        again.sort_by_key(|f| f.seq);
        for f in again.into_iter().rev() {
            let mut out = f.out;
            // A request that ended before its PUBACK (reply or timeout) is not sent again.
            let Some(id) = out.req else { continue };
            let Some(r) = self.pending.get_mut(id) else { continue };
            r.stage = Stage::Queued;
            if r.raw {
                // It re-enters the raw FIFO when it goes out again.
                let topic = r.reply_topic.clone();
                if let Some(t) = self.topics.get_mut(&topic) {
                    t.raw_fifo.retain(|x| *x != id);
                }
            }
            out.dup = true;
            self.outbox.push_front(out);
        }
        self.store_unsent();
        // What the lost connection hides the outcome of ends here: QoS 0 requests whose
        // bytes were not reported written, and raw requests whose reply was due on it (raw
        // replies carry no id, so a later one could not be told from it). Raw requests
        // still unacknowledged left the FIFO above, to be sent again.
        let unwritten = self.unwritten.drain(..).map(|(_, id)| id);
        let orphans: Vec<RequestId> =
            unwritten.chain(self.topics.values_mut().flat_map(|t| t.raw_fifo.drain(..))).collect();
        for id in orphans {
            self.finish(id, Err(RequestError::ConnectionLost));
        }
        // Only a session that lasted resets the back-off: one accepted and dropped at once
        // (a broker that drops it, two processes taking the session from each other) counts
        // as a failure, so such a loop slows down like failed dials.
        let lasted = self
            .connected_at
            .take()
            .is_some_and(|t| was_up && self.now.saturating_duration_since(t) >= self.config.max_reconnect_period);
        self.failures = if lasted { 0 } else { self.failures.saturating_add(1) };
        if self.starting && !self.config.retry_first_connect {
            // The start fails with its first attempt: the client closes (the transport is
            // already gone, so closing adds no DISCONNECT).
            self.push_ctl(Output::CloseTransport);
            let start = match &cause {
                DisconnectCause::ConnectTimeout(d) => StartError::TimedOut(*d),
                other => StartError::Failed(other.clone()),
            };
            self.end(cause, Some(start));
            return;
        }
        let retry_at = self.backoff(refused);
        if let Some(at) = retry_at {
            self.timers.set(Timer::Reconnect, at);
        }
        #[cfg(feature = "tracing")]
        tracing::info!(device = %self.config.device, cause = %cause, "disconnected");
        self.push_ctl(Output::CloseTransport);
        self.events.push_back(Event::Disconnected { cause, retry_at });
    }

    pub(super) fn backoff(&mut self, refused: Option<ConnectRefusal>) -> Option<Instant> {
        if self.config.reconnect_period.is_zero() {
            return None;
        }
        let delay = if refused.is_some_and(ConnectRefusal::is_authentication) {
            self.jittered(self.config.max_reconnect_period)
        } else {
            self.delay(self.failures)
        };
        Some(later(self.now, delay))
    }

    /// The back-off after `attempts` failures in a row: the reconnect period doubled
    /// each time up to its maximum, jittered. A re-login retried while connected waits
    /// the same way (at least a second when reconnects are off).
    pub(super) fn delay(&mut self, attempts: u32) -> Duration {
        let base = self.config.reconnect_period.max(Duration::from_secs(1));
        let factor = 1u32 << attempts.saturating_sub(1).min(16);
        self.jittered(base.saturating_mul(factor).min(self.config.max_reconnect_period.max(base)))
    }

    pub(super) fn jittered(&mut self, delay: Duration) -> Duration {
        // xorshift64: deterministic for a seed, different across devices.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        // Jitter: this share of the delay is drawn at random (all of it by default: full
        // jitter, so a fleet cut at once comes back spread over the whole delay).
        let pct = u64::from(self.config.reconnect_jitter_percent.min(100));
        let span = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX).saturating_mul(pct) / 100;
        let jitter_ms = if span == 0 { 0 } else { self.rng % span.saturating_add(1) };
        delay.saturating_sub(Duration::from_millis(jitter_ms))
    }

    /// The session is up (a CONNACK, or an HTTP login): `Event::Connected`, a reconnect
    /// when it had been up before.
    pub(super) fn announce_up(&mut self) {
        self.connected_at = Some(self.now);
        let reconnect = self.ever_connected;
        self.ever_connected = true;
        self.reconnected |= reconnect;
        #[cfg(feature = "tracing")]
        tracing::info!(device = %self.config.device, reconnect, http = self.http.is_some(), "connected");
        self.events.push_back(Event::Connected { reconnect });
    }

    pub(super) fn on_connack(&mut self, code: ConnectReturnCode) {
        let refusal = match code {
            ConnectReturnCode::Success => None,
            ConnectReturnCode::RefusedProtocolVersion => Some(ConnectRefusal::UnacceptableProtocolVersion),
            ConnectReturnCode::BadClientId => Some(ConnectRefusal::IdentifierRejected),
            ConnectReturnCode::ServiceUnavailable => Some(ConnectRefusal::ServerUnavailable),
            ConnectReturnCode::BadUserNamePassword => Some(ConnectRefusal::BadUserNameOrPassword),
            ConnectReturnCode::NotAuthorized => Some(ConnectRefusal::NotAuthorized),
        };
        if let Some(r) = refusal {
            #[cfg(feature = "tracing")]
            tracing::warn!(device = %self.config.device, code = r.code(), "connection refused");
            self.lost(DisconnectCause::Refused(r));
            return;
        }
        self.state = State::Connected;
        // With dynamic activation, the start's deadline runs on until the secret comes.
        let activating = matches!(self.credentials, Credentials::ProductSecret(_));
        self.activation_open = activating;
        if !(self.starting && activating && !self.config.retry_first_connect) {
            self.timers.stop(Timer::Connect);
        }
        self.arm_keep_alive();
        self.announce_up();
        if !activating {
            self.started(Ok(()));
        }
        if self.config.subscribe_command_topics {
            let mut filters = command_filters(&self.config.device, true);
            for keys in self.logged_in.keys() {
                filters.extend(command_filters(keys, false));
            }
            self.subscribe_commands(filters);
        }
        // Topics no request refers to any more are forgotten; those with replies still
        // awaited are subscribed again.
        let used = self.pending.reply_topics();
        self.topics.retain(|k, _| used.contains(k));
        let sent = self.pending.awaited_topics();
        let awaited: Vec<Arc<str>> = self
            .topics
            .iter()
            .filter(|(k, t)| sent.contains(*k) || !t.raw_fifo.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for t in awaited {
            self.want_subscription(&t);
        }
        // Everything waiting goes through routing again: subscriptions first.
        let all = self.outbox.take_all();
        if !self.logged_in.is_empty() {
            let devices: Vec<SubDeviceInfo> = self.logged_in.values().cloned().collect();
            let op = SubDeviceBatchLogin::new(devices);
            // The re-login goes first; the rest waits for its reply (spec §8).
            match self.submit(self.last_unix_ms, &op, RequestOptions::default(), Origin::Relogin) {
                Ok(id) => {
                    self.relogin = Some(id);
                    self.relogin_asked = self.logged_in.keys().cloned().collect();
                }
                Err(e) => self.events.push_back(Event::Error(ClientError::ReloginFailed {
                    devices: self.logged_in.keys().cloned().collect(),
                    reason: e.to_string(),
                })),
            }
        }
        for out in all {
            self.route(out);
        }
    }
}
