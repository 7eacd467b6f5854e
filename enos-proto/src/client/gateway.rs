//! The gateway's sub-device sessions: logins remembered, and restored after a reconnect.

use super::*;

impl Client {
    pub(super) fn apply_effect(&mut self, effect: &Effect, reply: &Reply) {
        let Reply::Json(j) = reply else { return };
        match effect {
            Effect::None => {}
            Effect::Logout(devices) => {
                if j.code == 200 {
                    for d in devices {
                        self.logged_in.remove(d);
                    }
                }
            }
            Effect::Login { devices, batch } => {
                let logged: Vec<LoginResult> = if *batch {
                    j.data::<BatchLoginResult>().map(|r| r.logged_in).unwrap_or_default()
                } else if j.code == 200 {
                    j.data::<LoginResult>().into_iter().collect()
                } else {
                    Vec::new()
                };
                let mut new_filters = Vec::new();
                for r in logged {
                    let Some(info) = devices.iter().find(|d| d.keys.is(&r.product_key, &r.device_key)) else {
                        continue;
                    };
                    let mut info = info.clone();
                    if let Some(secret) = r.device_secret.filter(|s| !s.is_empty()) {
                        info.secret = secret.clone();
                        info.mode = SecureMode::DeviceSecret;
                        self.events.push_back(Event::Activated {
                            device: info.keys.clone(),
                            device_secret: secret,
                            asset_id: r.asset_id.clone(),
                        });
                    }
                    if self.config.subscribe_command_topics && !self.logged_in.contains_key(&info.keys) {
                        new_filters.extend(command_filters(&info.keys, false));
                    }
                    self.logged_in.insert(info.keys.clone(), info);
                }
                if !new_filters.is_empty() && self.state == State::Connected {
                    self.subscribe_commands(new_filters);
                }
            }
        }
    }

    pub(super) fn relogin_done(&mut self, result: Result<Reply, RequestError>) {
        let asked = std::mem::take(&mut self.relogin_asked);
        // Lost with the connection: the next CONNACK logs them all in again.
        if matches!(result, Err(RequestError::Closed)) {
            return;
        }
        let (answer, reason) = match &result {
            Ok(reply) => {
                let r = reply.json().ok().and_then(|j| j.data::<BatchLoginResult>().ok()).unwrap_or_default();
                let reason = match reply {
                    Reply::Json(j) => format!("code {}: {}", j.code, j.message.as_deref().unwrap_or("")),
                    _ => "unexpected reply".into(),
                };
                (r, reason)
            }
            Err(e) => (BatchLoginResult::default(), e.to_string()),
        };
        // Only the devices the cloud names as failed are forgotten; those it neither
        // logged in nor named (a timeout, a code without data) are kept and retried.
        let named = |k: &DeviceKeys, list: &[LoginResult]| list.iter().any(|l| k.is(&l.product_key, &l.device_key));
        let (mut refused, mut unconfirmed) = (Vec::new(), Vec::new());
        for k in asked.into_iter().filter(|k| self.logged_in.contains_key(k)) {
            if answer.failed.contains(&k) {
                refused.push(k);
            } else if !named(&k, &answer.logged_in) {
                unconfirmed.push(k);
            }
        }
        for k in &refused {
            self.logged_in.remove(k);
        }
        if !refused.is_empty() {
            self.events
                .push_back(Event::Error(ClientError::ReloginFailed { devices: refused, reason: reason.clone() }));
        }
        if unconfirmed.is_empty() {
            self.relogin_failures = 0;
            return;
        }
        self.relogin_failures = self.relogin_failures.saturating_add(1);
        let retry_at = later(self.now, self.delay(self.relogin_failures));
        self.timers.set(Timer::Relogin, retry_at);
        self.unconfirmed = unconfirmed.clone();
        self.events.push_back(Event::Error(ClientError::ReloginRetry { devices: unconfirmed, reason, retry_at }));
    }

    /// Sends the retry of a re-login for the sub-devices still unconfirmed.
    pub(super) fn relogin_again(&mut self) {
        if self.state != State::Connected || self.relogin.is_some() || self.relogin_retry.is_some() {
            return;
        }
        let keys = std::mem::take(&mut self.unconfirmed);
        let devices: Vec<SubDeviceInfo> = keys.iter().filter_map(|k| self.logged_in.get(k).cloned()).collect();
        if devices.is_empty() {
            return;
        }
        let op = SubDeviceBatchLogin::new(devices);
        match self.submit(self.last_unix_ms, &op, RequestOptions::default(), Origin::Relogin) {
            Ok(id) => {
                self.relogin_retry = Some(id);
                self.relogin_asked = keys;
                // Internal requests wait first for the re-login after a reconnect; a
                // retry goes the way of any request instead.
                if let Some(out) = self.outbox.take_first() {
                    self.route(out);
                }
            }
            Err(e) => {
                self.events.push_back(Event::Error(ClientError::ReloginFailed { devices: keys, reason: e.to_string() }))
            }
        }
    }
}
