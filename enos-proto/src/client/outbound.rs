//! Requests out: encoding, the request table, routing through the outbox, and the wire.

use super::*;

impl Client {
    /// Sends an upstream operation; the returned id ends in exactly one
    /// [`Event::Response`]. While disconnected the request waits in the queue, and its
    /// timeout runs from now; with [`Config::offline_store`], a measure point post
    /// (single or batch) made while disconnected is kept in the store instead, and ends
    /// with the reply to its resume (see [`crate::store::OfflineStore`]).
    ///
    /// A sub-device login is remembered (and restored after each reconnect) when its
    /// reply says it succeeded, so a login sent with `need_reply = false` is not.
    ///
    /// # Errors
    ///
    /// Only synchronous refusals, and then nothing was queued:
    /// [`SubmitError::QueueFull`], [`SubmitError::TooManyRequests`],
    /// [`SubmitError::InvalidTarget`], [`SubmitError::Closed`], and
    /// [`SubmitError::Encode`] for parameters that cannot be encoded or a payload above
    /// [`Config::max_payload_bytes`]; for a post kept offline,
    /// [`SubmitError::OfflineStoreFull`] and [`SubmitError::OfflineStore`].
    pub fn request<O: Operation>(&mut self, now: Now, op: O, opts: RequestOptions) -> Result<RequestId, SubmitError> {
        self.tick(now);
        if let (Some(form), false) = (op.offline_form(), self.state == State::Connected) {
            if self.config.offline_store.is_some() {
                return self.store_post(now.unix_ms, &op, form, opts);
            }
        }
        let id = self.submit(now.unix_ms, &op, opts, Origin::App)?;
        self.flush();
        Ok(id)
    }

    /// The encoded body as the payload to keep until its PUBACK.
    pub(super) fn payload_bytes(&mut self) -> Bytes {
        let len = self.body.len();
        if len > PAYLOAD_CHUNK {
            return Bytes::copy_from_slice(&self.body);
        }
        if self.payloads.capacity() < len {
            // Takes back the whole buffer once every payload split off it is gone;
            // otherwise a new one.
            self.payloads.reserve(PAYLOAD_CHUNK);
        }
        self.payloads.extend_from_slice(&self.body);
        self.payloads.split().freeze()
    }

    /// Encodes and registers a request. The core's own requests skip the queue's limits
    /// (a re-login waits first in the outbox; resumes of stored records are bounded by
    /// the window they are sent in).
    pub(super) fn submit<O: Operation + ?Sized>(
        &mut self,
        unix_ms: u64,
        op: &O,
        opts: RequestOptions,
        origin: Origin,
    ) -> Result<RequestId, SubmitError> {
        let internal = origin != Origin::App;
        if self.state == State::Closed {
            return Err(SubmitError::Closed);
        }
        if op.gateway_only() && opts.target.is_some() {
            return Err(SubmitError::InvalidTarget);
        }
        if !internal {
            if self.pending.len() >= self.config.max_outstanding_requests {
                return Err(SubmitError::TooManyRequests(self.config.max_outstanding_requests));
            }
            self.check_queue_room(0)?;
        }
        let keys = opts.target.as_ref().unwrap_or(&self.config.device);
        self.scratch.clear();
        op.write_topic(keys, &mut self.scratch);
        if self.scratch.len() + 6 > usize::from(u16::MAX) {
            return Err(EncodeError::StringTooLong { field: "topic", len: self.scratch.len() }.into());
        }
        let raw = op.raw_payload();
        let envelope = if raw.is_none() { Some(self.next_envelope_id()) } else { None };
        let file = {
            let ctx = EncodeContext { unix_ms, own: &self.config.device };
            op.file_exchange(&ctx, envelope.unwrap_or(0)).transpose()?
        };
        if file.is_some() && self.http.is_none() {
            return Err(SubmitError::NeedsHttp);
        }
        let payload = match raw {
            Some(bytes) => bytes.clone(),
            // Carried by its own exchange, built at submission.
            None if file.is_some() => Bytes::new(),
            None => {
                let ctx = EncodeContext { unix_ms, own: &self.config.device };
                // Written into a buffer kept for the next request, then copied into the
                // payload buffer (see `payloads`).
                self.body.clear();
                let payload = ops::encode_payload(op, envelope.unwrap_or(0), &ctx, &mut self.body, &mut self.method)
                    .map(|()| self.payload_bytes());
                if self.body.capacity() > BODY_KEEP {
                    self.body = Vec::new();
                }
                payload?
            }
        };
        if payload.len() > self.config.max_payload_bytes {
            return Err(EncodeError::PayloadTooLarge { size: payload.len(), max: self.config.max_payload_bytes }.into());
        }
        if !internal {
            self.check_queue_room(payload.len())?;
        }
        let (request_topic, reply_topic, subscribed) = self.intern_topic();
        let wants_reply = opts.need_reply;
        let id = self.pending.next_id();
        let timeout = opts.timeout.unwrap_or(self.config.request_timeout);
        let qos = match opts.qos {
            Qos::AtMostOnce => QoS::AtMostOnce,
            Qos::AtLeastOnce => QoS::AtLeastOnce,
        };
        if wants_reply {
            if let Some(e) = envelope {
                self.by_envelope.insert(e, id);
            }
        }
        self.pending.insert(
            id,
            Req {
                deadline: later(self.now, timeout),
                timeout,
                stage: Stage::Queued,
                reply_topic: reply_topic.clone(),
                envelope,
                wants_reply,
                effect: op.session_effect().0,
                origin,
                bytes: payload.len(),
                raw: envelope.is_none(),
                offline: op.offline_form(),
            },
            timeout == self.config.request_timeout,
        );
        if let (Some(f), Some(h)) = (file, self.http.as_mut()) {
            h.files.insert(id, f);
        }
        let out = Outgoing {
            req: Some(id),
            topic: request_topic,
            payload,
            qos,
            dup: false,
            needs: (wants_reply && self.http.is_none()).then_some(reply_topic),
            expires: None,
        };
        if origin == Origin::Relogin {
            if let Some(t) = out.needs.clone() {
                self.want_subscription(&t);
            }
            self.outbox.set_first(out);
        } else if subscribed {
            // Its reply topic is subscribed (just looked up): ready at once.
            self.outbox.push(out);
        } else {
            self.route(out);
        }
        Ok(id)
    }

    pub(super) fn check_queue_room(&self, bytes: usize) -> Result<(), SubmitError> {
        self.outbox.room(bytes, self.config.max_queued_requests, self.config.max_queued_bytes)
    }

    /// The request and reply topic for the topic in `scratch`, interned.
    pub(super) fn intern_topic(&mut self) -> (Arc<str>, Arc<str>, bool) {
        self.scratch.push_str("_reply");
        self.uses += 1;
        if let Some((k, t)) = self.topics.get_key_value(self.scratch.as_str()) {
            t.used_at.set(self.uses);
            return (t.request_topic.clone(), k.clone(), t.sub == SubState::Subscribed);
        }
        let reply: Arc<str> = Arc::from(self.scratch.as_str());
        let request: Arc<str> = Arc::from(&self.scratch[..self.scratch.len() - 6]);
        let t = TopicState::new(request.clone());
        t.used_at.set(self.uses);
        self.topics.insert(reply.clone(), t);
        (request, reply, false)
    }

    pub(super) fn next_envelope_id(&mut self) -> u32 {
        loop {
            let id = self.next_envelope;
            self.next_envelope = if id == u32::MAX { 1 } else { id + 1 };
            if !self.by_envelope.contains_key(&id) {
                return id;
            }
        }
    }

    /// Ends request `id` once: its state is freed and, unless internal, the application
    /// gets its `Event::Response`.
    pub(super) fn finish(&mut self, id: RequestId, result: Result<Reply, RequestError>) {
        let Some(req) = self.pending.remove(id) else { return };
        if let Some(h) = self.http.as_mut() {
            h.ended(id);
        }
        if let Some(e) = req.envelope {
            // Removed in one lookup; put back in the rare case it was another request's.
            if let Some(other) = self.by_envelope.remove(&e) {
                if other != id {
                    self.by_envelope.insert(e, other);
                }
            }
        }
        if req.raw {
            if let Some(t) = self.topics.get_mut(&req.reply_topic) {
                t.raw_fifo.retain(|r| *r != id);
            }
        }
        match req.stage {
            Stage::InFlight(pkid) => {
                if let Some(f) = self.inflight.get_mut(&pkid) {
                    // Ended before its PUBACK: the packet id stays in use until then, but
                    // it will not be sent again.
                    f.out.req = None;
                }
            }
            // Its publish no longer counts, and is skipped when reached.
            Stage::Queued => self.outbox.cancel(id, req.bytes),
            Stage::Sent | Stage::Stored => {}
        }
        if let Ok(reply) = &result {
            self.apply_effect(&req.effect, reply);
        }
        match req.origin {
            Origin::App => self.events.push_back(Event::Response { id, result }),
            Origin::Relogin => {
                if self.relogin == Some(id) {
                    self.relogin = None;
                    self.relogin_done(result);
                } else if self.relogin_retry == Some(id) {
                    self.relogin_retry = None;
                    self.relogin_done(result);
                }
            }
            Origin::Stored => self.resumed(id, result),
        }
    }

    /// Where an outgoing publish waits: behind its reply topic's subscription, or ready.
    pub(super) fn route(&mut self, out: Outgoing) {
        if let Some(topic) = out.needs.clone() {
            let t = self.topics.entry(topic.clone()).or_insert_with(|| TopicState::new(out.topic.clone()));
            if t.sub != SubState::Subscribed {
                self.outbox.park(&topic, out);
                self.want_subscription(&topic);
                return;
            }
        }
        self.outbox.push(out);
    }

    pub(super) fn want_subscription(&mut self, topic: &Arc<str>) {
        if let Some(t) = self.topics.get_mut(topic) {
            if t.sub == SubState::None {
                t.sub = SubState::Pending;
                self.to_subscribe.push(topic.clone());
            }
        }
    }

    pub(super) fn alloc_pkid(&mut self) -> u16 {
        // In flight and subscribing are bounded well below 65,535: a free id exists.
        loop {
            let id = self.next_pkid;
            self.next_pkid = if id == u16::MAX { 1 } else { id + 1 };
            if !self.inflight.contains_key(&id) && !self.subscribing.contains_key(&id) {
                return id;
            }
        }
    }

    pub(super) fn subscribe_commands(&mut self, filters: Vec<String>) {
        for chunk in filters.chunks(MAX_FILTERS_PER_SUBSCRIBE) {
            let pkid = self.alloc_pkid();
            if codec::encode_subscribe(&mut self.out, pkid, chunk.iter().map(String::as_str), QoS::AtLeastOnce).is_ok()
            {
                self.subscribing.insert(pkid, SubPurpose::Commands);
                self.arm_suback();
                self.sent();
            }
        }
    }

    /// Past `Config::max_reply_subscriptions` reply topics subscribed, the least
    /// recently used ones that no live request waits on are unsubscribed, down to three
    /// quarters of the bound (so the scan is paid once per quarter of it). A later
    /// request on one subscribes it again.
    pub(super) fn evict_idle_replies(&mut self) {
        let max = self.config.max_reply_subscriptions.max(1);
        if self.reply_subs <= max || self.state != State::Connected {
            return;
        }
        let used = self.pending.reply_topics();
        let mut idle: Vec<(u64, Arc<str>)> = self
            .topics
            .iter()
            .filter(|(k, t)| t.sub == SubState::Subscribed && !used.contains(*k))
            .map(|(k, t)| (t.used_at.get(), k.clone()))
            .collect();
        idle.sort_unstable();
        let n = (self.reply_subs - max * 3 / 4).min(idle.len());
        let gone: Vec<Arc<str>> = idle.into_iter().take(n).map(|(_, k)| k).collect();
        for chunk in gone.chunks(MAX_FILTERS_PER_SUBSCRIBE) {
            let pkid = self.alloc_pkid();
            let topics = chunk.iter().map(|t| t.to_string()).collect();
            if codec::encode_packet(&mut self.out, &Packet::Unsubscribe(codec::Unsubscribe { pkid, topics })).is_ok() {
                self.subscribing.insert(pkid, SubPurpose::Unsubscribe);
                self.arm_suback();
                self.sent();
            }
        }
        for t in &gone {
            self.topics.remove(t);
        }
        self.reply_subs -= gone.len();
    }

    /// Sends what can go now: pending SUBSCRIBEs, the re-login, then (once the re-login
    /// is answered) ready publishes while the QoS 1 window has room.
    pub(super) fn flush(&mut self) {
        if self.http.is_some() {
            return self.http_flush();
        }
        if self.state != State::Connected {
            return;
        }
        // Stored records join the outbox first, so that the subscriptions their replies
        // need go out below.
        self.drain_offline();
        while !self.to_subscribe.is_empty() && self.subscribing.len() < MAX_SUBSCRIBING {
            let n = self.to_subscribe.len().min(MAX_FILTERS_PER_SUBSCRIBE);
            let topics: Vec<Arc<str>> = self.to_subscribe.drain(..n).collect();
            let pkid = self.alloc_pkid();
            if codec::encode_subscribe(&mut self.out, pkid, topics.iter().map(|t| &**t), QoS::AtLeastOnce).is_ok() {
                self.subscribing.insert(pkid, SubPurpose::Replies(topics));
                self.arm_suback();
                self.sent();
            }
        }
        if self.relogin.is_some() {
            let subscribed = self.outbox.first().is_some_and(|o| {
                o.needs.as_ref().is_none_or(|t| self.topics.get(t).is_some_and(|t| t.sub == SubState::Subscribed))
            });
            if subscribed && self.inflight.len() < usize::from(self.config.max_inflight) {
                if let Some(out) = self.outbox.take_first() {
                    self.transmit(out);
                }
            }
            // Nothing else moves until the re-login is answered (spec §8).
            return;
        }
        while let Some(out) = self.outbox.pop() {
            if out.qos == QoS::AtLeastOnce && self.inflight.len() >= usize::from(self.config.max_inflight) {
                self.outbox.push_front(out);
                break;
            }
            self.transmit(out);
        }
    }

    /// Writes one PUBLISH, its payload compressed when the session compresses (every
    /// payload the device sends goes through here).
    pub(super) fn write_publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        pkid: u16,
        dup: bool,
    ) -> Result<(), EncodeError> {
        let Some(encoder) = self.encoder.as_mut() else {
            return codec::encode_publish(&mut self.out, topic, payload, qos, pkid, dup);
        };
        let mut z = std::mem::take(&mut self.compressed);
        z.clear();
        encoder.compress(payload, &mut z);
        let r = codec::encode_publish(&mut self.out, topic, &z, qos, pkid, dup);
        self.compressed = z;
        r
    }

    /// Puts one live publish on the wire.
    pub(super) fn transmit(&mut self, out: Outgoing) {
        if out.expires.is_some_and(|at| at <= self.now) {
            return;
        }
        let pkid = if out.qos == QoS::AtLeastOnce { self.alloc_pkid() } else { 0 };
        if self.write_publish(&out.topic, &out.payload, out.qos, pkid, out.dup).is_err() {
            // Topic and payload sizes were checked at submission: nothing else can fail.
            debug_assert!(false, "a checked publish did not encode");
            return;
        }
        self.sent();
        let Some(id) = out.req else { return };
        let Some(req) = self.pending.get_mut(id) else { return };
        if req.raw && req.wants_reply {
            if let Some(t) = self.topics.get_mut(&req.reply_topic) {
                t.raw_fifo.push_back(id);
            }
        }
        if out.qos == QoS::AtLeastOnce {
            req.stage = Stage::InFlight(pkid);
            self.inflight_seq += 1;
            self.inflight.insert(pkid, InFlight { seq: self.inflight_seq, out });
        } else if req.wants_reply {
            req.stage = Stage::Sent;
        } else {
            // Delivered when the transmit that carries it is written, not before.
            req.stage = Stage::Sent;
            self.unwritten.push_back((self.transmits + 1, id));
        }
    }
}
