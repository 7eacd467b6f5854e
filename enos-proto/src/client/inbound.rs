//! Packets in: acknowledgements, replies, and commands handed to the application and answered.

use super::*;

impl Client {
    /// Sends the reply to a command (QoS 0, as the vendor SDKs do). While disconnected it
    /// waits in the queue, for at most [`Config::request_timeout`]: a reply later than
    /// that is dropped, since the cloud has stopped waiting for it.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Closed`], [`SubmitError::QueueFull`], or
    /// [`SubmitError::Encode`] for a payload above [`Config::max_payload_bytes`].
    pub fn reply(&mut self, now: Now, reply: CommandReply) -> Result<(), SubmitError> {
        self.tick(now);
        if self.state == State::Closed {
            return Err(SubmitError::Closed);
        }
        // One answer per command: a second one, or one after the core answered at the
        // deadline, is refused.
        if reply.ticket != 0 && !self.running_commands.contains_key(&reply.ticket) {
            return Err(SubmitError::AlreadyAnswered);
        }
        // The command is answered, whether or not its reply can be sent.
        self.answered(reply.ticket);
        if reply.payload.len() > self.config.max_payload_bytes {
            return Err(
                EncodeError::PayloadTooLarge { size: reply.payload.len(), max: self.config.max_payload_bytes }.into()
            );
        }
        if reply.topic.len() > usize::from(u16::MAX) {
            return Err(EncodeError::StringTooLong { field: "topic", len: reply.topic.len() }.into());
        }
        self.check_queue_room(reply.payload.len())?;
        let out = self.reply_outgoing(reply);
        self.route(out);
        self.flush();
        Ok(())
    }

    /// Ends a command without a reply: for a raw down command nobody handles (spec §7).
    /// Like [`reply`](Client::reply), it makes room for the next held command.
    pub fn dismiss(&mut self, now: Now, reply_to: &ReplyTo) {
        self.tick(now);
        self.answered(reply_to.ticket);
    }

    /// A handed-out command was answered: the oldest held one is handed out in its place.
    pub(super) fn answered(&mut self, ticket: u64) {
        if ticket != 0 && self.running_commands.remove(&ticket).is_some() {
            if let Some(cmd) = self.held_commands.pop_front() {
                self.hand_out(cmd);
            }
        }
    }

    /// A command for the application: handed out while fewer than
    /// `max_running_commands` are unanswered, held while fewer than
    /// `max_queued_commands` wait, answered 1102 past that.
    pub(super) fn offer_command(&mut self, cmd: Command) {
        if self.running_commands.len() < self.config.max_running_commands {
            self.hand_out(cmd);
        } else if self.held_commands.len() < self.config.max_queued_commands {
            self.held_commands.push_back(cmd);
        } else {
            if !cmd.reply_to.is_raw() {
                self.reply_now(cmd.reply_to.handler_failed(command::REASON_QUEUE_FULL));
            }
            #[cfg(feature = "tracing")]
            tracing::warn!(device = %self.config.device, topic = cmd.reply_to.topic(), "command queue full: answered 1102");
            self.events.push_back(Event::Error(ClientError::CommandQueueFull { topic: command_topic(&cmd.reply_to) }));
        }
    }

    pub(super) fn hand_out(&mut self, mut cmd: Command) {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        cmd.reply_to.ticket = ticket;
        self.running_commands.insert(ticket, cmd.reply_to.clone());
        self.command_deadlines.push_back((later(self.now, self.config.command_timeout), ticket));
        if self.command_deadlines.len() > 2 * self.running_commands.len() + crate::pending::SLACK {
            let running = &self.running_commands;
            self.command_deadlines.retain(|(_, t)| running.contains_key(t));
        }
        self.events.push_back(Event::Command(Box::new(cmd)));
    }

    /// Answers 1102 the commands whose handlers let their deadline pass.
    pub(super) fn expire_commands(&mut self) {
        while let Some(&(at, ticket)) = self.command_deadlines.front() {
            if at > self.now {
                break;
            }
            self.command_deadlines.pop_front();
            let Some(reply_to) = self.running_commands.get(&ticket).cloned() else { continue };
            let timeout = self.config.command_timeout;
            if !reply_to.is_raw() {
                let reason = format!("no answer within {} s", timeout.as_secs());
                self.reply_now(reply_to.handler_failed(&reason));
            }
            self.answered(ticket);
            self.events
                .push_back(Event::Error(ClientError::CommandTimedOut { topic: command_topic(&reply_to), timeout }));
        }
    }

    pub(super) fn on_packet(&mut self, packet: Packet) {
        match (self.state, packet) {
            (State::AwaitConnack, Packet::ConnAck(ack)) => self.on_connack(ack.code),
            (State::Connected, Packet::Publish(p)) => self.on_publish(p),
            (State::Connected, Packet::PubAck(ack)) => self.on_puback(ack.pkid),
            (State::Connected, Packet::SubAck(ack)) => self.on_suback(ack.pkid, &ack.return_codes),
            (State::Connected, Packet::UnsubAck(ack)) => self.on_unsuback(ack.pkid),
            (State::Connected, Packet::PingResp) => self.timers.stop(Timer::PingResponse),
            (_, p) => self.lost(DisconnectCause::Protocol(ProtocolError::UnexpectedPacket(codec::kind(&p)))),
        }
    }

    pub(super) fn on_puback(&mut self, pkid: u16) {
        let Some(f) = self.inflight.remove(&pkid) else {
            self.events.push_back(Event::Error(ClientError::UnknownPacketId(pkid)));
            return;
        };
        let Some(id) = f.out.req else { return };
        let Some(req) = self.pending.get_mut(id) else { return };
        if req.wants_reply {
            req.stage = Stage::Sent;
        } else {
            self.finish(id, Ok(Reply::Delivered));
        }
    }

    pub(super) fn on_suback(&mut self, pkid: u16, codes: &[SubscribeReasonCode]) {
        let Some(purpose) = self.subscribing.remove(&pkid) else {
            self.events.push_back(Event::Error(ClientError::UnknownPacketId(pkid)));
            return;
        };
        self.sub_answered();
        let topics = match purpose {
            SubPurpose::Replies(topics) => topics,
            SubPurpose::Unsubscribe => {
                self.events.push_back(Event::Error(ClientError::UnknownPacketId(pkid)));
                return;
            }
            SubPurpose::Commands => {
                if codes.contains(&SubscribeReasonCode::Failure) {
                    let topic = "command topics".into();
                    self.events.push_back(Event::Error(ClientError::SubscribeRefused { topic }));
                }
                return;
            }
        };
        for (i, topic) in topics.into_iter().enumerate() {
            let ok = !matches!(codes.get(i), Some(SubscribeReasonCode::Failure) | None);
            let Some(t) = self.topics.get_mut(&topic) else { continue };
            if ok {
                t.sub = SubState::Subscribed;
                self.reply_subs += 1;
                self.outbox.unpark(&topic);
                continue;
            }
            t.sub = SubState::None;
            for id in self.outbox.parked_requests(&topic) {
                self.finish(id, Err(RequestError::SubscribeRefused(topic.to_string())));
            }
            self.outbox.drop_parked(&topic);
            if self.outbox.first().is_some_and(|o| o.needs.as_ref() == Some(&topic)) {
                if let Some(id) = self.relogin {
                    self.finish(id, Err(RequestError::SubscribeRefused(topic.to_string())));
                }
            }
            self.events.push_back(Event::Error(ClientError::SubscribeRefused { topic: topic.to_string() }));
        }
        self.evict_idle_replies();
    }

    pub(super) fn on_unsuback(&mut self, pkid: u16) {
        match self.subscribing.remove(&pkid) {
            Some(SubPurpose::Unsubscribe) => self.sub_answered(),
            other => {
                // Not an UNSUBSCRIBE's: still awaited as what it is.
                if let Some(p) = other {
                    self.subscribing.insert(pkid, p);
                }
                self.events.push_back(Event::Error(ClientError::UnknownPacketId(pkid)));
            }
        }
    }

    /// The broker answered a SUBSCRIBE or an UNSUBSCRIBE: the next answer due gets a
    /// full ping timeout from now.
    fn sub_answered(&mut self) {
        if self.subscribing.is_empty() {
            self.timers.stop(Timer::Suback);
        } else {
            self.timers.set(Timer::Suback, later(self.now, self.config.ping_timeout));
        }
    }

    pub(super) fn on_publish(&mut self, mut p: codec::Publish) {
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                let _ = codec::encode_packet(&mut self.out, &Packet::PubAck(codec::PubAck::new(p.pkid)));
                self.sent();
            }
            QoS::ExactlyOnce => {
                self.lost(DisconnectCause::Protocol(ProtocolError::QoS2Publish));
                return;
            }
        }
        if let Some(c) = self.config.compression {
            // Everything the cloud sends a compressing session is compressed; what does
            // not decompress is dropped, as the vendor's SDK does.
            match c.decompress(&p.payload, self.config.max_packet_bytes) {
                Ok(plain) => p.payload = Bytes::from(plain),
                Err(error) => {
                    self.events.push_back(Event::Error(ClientError::BadCompressedPayload { topic: p.topic, error }));
                    return;
                }
            }
        }
        if self.config.emit_all_messages && !carries_secret(&p.topic) {
            self.events.push_back(Event::Message { topic: p.topic.clone(), payload: p.payload.clone() });
        }
        if let Some((key, t)) = self.topics.get_key_value(p.topic.as_str()) {
            let key = key.clone();
            // Raw replies (a device's, or the integration channel's) are never JSON
            // (spec §7): the oldest raw request on the wire takes them.
            if key.ends_with("/model/up_raw_reply") {
                match t.raw_fifo.front().copied() {
                    Some(id) => self.finish(id, Ok(Reply::Raw(p.payload))),
                    None => self.unmatched(
                        p.topic,
                        p.payload,
                        ClientError::UnmatchedReply { topic: key.to_string(), id: String::new() },
                    ),
                }
                return;
            }
            match envelope::parse_reply(&p.payload) {
                Ok(reply) => {
                    let found = envelope::envelope_id(&reply.id)
                        .and_then(|e| self.by_envelope.get(&e).copied())
                        .filter(|id| self.pending.get(*id).is_some_and(|r| Arc::ptr_eq(&r.reply_topic, &key)));
                    match found {
                        Some(id) => self.finish(id, Ok(Reply::Json(reply))),
                        None => self.unmatched(
                            p.topic,
                            p.payload,
                            ClientError::UnmatchedReply { topic: key.to_string(), id: reply.id },
                        ),
                    }
                }
                Err(reason) => {
                    self.unmatched(p.topic, p.payload, ClientError::BadReply { topic: key.to_string(), reason })
                }
            }
            return;
        }
        let Some(parts) = topic::parse_topic(&p.topic) else {
            return self.message(p.topic, p.payload);
        };
        let device = if self.config.device.is(parts.product_key, parts.device_key) {
            self.config.device.clone()
        } else if let Some(k) =
            DeviceKeys::new(parts.product_key, parts.device_key).ok().filter(|k| self.logged_in.contains_key(k))
        {
            k
        } else {
            return self.message(p.topic, p.payload);
        };
        match command::classify(&p.topic, &parts, &device, p.payload.clone()) {
            None => self.message(p.topic, p.payload),
            Some(Inbound::Command(cmd)) => {
                if let CommandKind::DisableSubDevices { devices } | CommandKind::DeleteSubDevices { devices } =
                    &cmd.kind
                {
                    for d in devices {
                        self.logged_in.remove(d);
                    }
                }
                self.offer_command(cmd);
            }
            Some(Inbound::Activation { reply_to, device_secret, asset_id }) => {
                let Some(secret) = device_secret.filter(|s| !s.is_empty()) else {
                    self.events.push_back(Event::Error(ClientError::BadCommand {
                        topic: p.topic,
                        reason: "activation without a deviceSecret".into(),
                    }));
                    return;
                };
                let secret = Secret::new(secret);
                let own = device == self.config.device;
                // Only a device that is activating takes a secret: this session logged in
                // with the product secret, or the sub-device did (a repeat of the secret it
                // already took is acknowledged again).
                let activating = if own {
                    self.activation_open
                } else {
                    self.logged_in
                        .get(&device)
                        .is_some_and(|i| i.mode == SecureMode::ProductSecret || i.secret.expose() == secret.expose())
                };
                if !activating {
                    self.events.push_back(Event::Error(ClientError::UnexpectedActivation { device }));
                    return;
                }
                // The application keeps the secret before the cloud hears that it has it.
                if let Some(store) = &self.config.secret_store {
                    if let Err(reason) = store.keep(&device, &secret) {
                        self.events.push_back(Event::Error(ClientError::ActivationNotStored { device, reason }));
                        return;
                    }
                }
                self.reply_now(reply_to.ok_empty());
                if own {
                    self.credentials = Credentials::DeviceSecret(secret.clone());
                } else if let Some(info) = self.logged_in.get_mut(&device) {
                    info.secret = secret.clone();
                    info.mode = SecureMode::DeviceSecret;
                }
                self.events.push_back(Event::Activated { device, device_secret: secret, asset_id });
                if own && self.starting {
                    self.timers.stop(Timer::Connect);
                    self.started(Ok(()));
                }
            }
            Some(Inbound::Echo) => {}
            Some(Inbound::Bad { reason, reply }) => {
                if let Some(r) = reply {
                    self.reply_now(r);
                }
                self.events.push_back(Event::Error(ClientError::BadCommand { topic: p.topic, reason }));
            }
        }
    }

    /// A reply the core itself sends at once (activation, bad parameters).
    pub(super) fn reply_now(&mut self, r: CommandReply) {
        if self.http.is_some() {
            // Over HTTP a reply is an exchange of its own, after the one under way.
            let out = self.reply_outgoing(r);
            self.outbox.push(out);
            return;
        }
        if self.write_publish(&r.topic, &r.payload, QoS::AtMostOnce, 0, false).is_ok() {
            self.sent();
        }
    }

    /// A command's reply as a queued publish: QoS 0, no reply awaited, dropped if it has
    /// not left within the request timeout.
    fn reply_outgoing(&self, r: CommandReply) -> Outgoing {
        Outgoing {
            req: None,
            topic: Arc::from(r.topic),
            payload: r.payload,
            qos: QoS::AtMostOnce,
            dup: false,
            needs: None,
            expires: Some(later(self.now, self.config.request_timeout)),
        }
    }

    pub(super) fn message(&mut self, topic: String, payload: Bytes) {
        if !self.config.emit_all_messages && !carries_secret(&topic) {
            self.events.push_back(Event::Message { topic, payload });
        }
    }

    pub(super) fn unmatched(&mut self, topic: String, payload: Bytes, e: ClientError) {
        self.events.push_back(Event::Error(e));
        self.message(topic, payload);
    }
}
