//! Who is connected where: one session per device connection, the devices online, and the
//! sub-devices logged in through each gateway's connection.
//!
//! [`Sessions`] owns the four tables and keeps them consistent: a connection's device and
//! its logged-in sub-devices point back at it, and a connection that closes or is taken
//! over takes its entries with it.

use std::collections::{HashMap, HashSet};

use enos_proto::DeviceKeys;

use super::{integration, Cloud, ConnId};

/// One connection's session.
#[derive(Debug)]
pub(super) struct Session {
    /// The device that connected (or the integration channel's keys).
    pub(super) device: DeviceKeys,
    /// Its MQTT client id (empty for a session without a CONNECT).
    client_id: String,
    /// The sub-devices logged in through it.
    pub(super) subs: HashSet<DeviceKeys>,
}

/// The sessions, and the devices and sub-devices online through them.
#[derive(Debug, Default)]
pub(super) struct Sessions {
    by_conn: HashMap<ConnId, Session>,
    by_client_id: HashMap<String, ConnId>,
    online: HashMap<DeviceKeys, ConnId>,
    sub_online: HashMap<DeviceKeys, ConnId>,
}

impl Sessions {
    /// The session of connection `conn`.
    pub(super) fn get(&self, conn: ConnId) -> Option<&Session> {
        self.by_conn.get(&conn)
    }

    /// The sub-devices logged in through connection `conn`.
    pub(super) fn subs_of(&self, conn: ConnId) -> Option<&HashSet<DeviceKeys>> {
        self.by_conn.get(&conn).map(|s| &s.subs)
    }

    /// The connection of a directly connected device.
    pub(super) fn direct(&self, keys: &DeviceKeys) -> Option<ConnId> {
        self.online.get(keys).copied()
    }

    /// The connection that carries `keys`' commands: its own, or its gateway's.
    pub(super) fn route(&self, keys: &DeviceKeys) -> Option<ConnId> {
        self.online.get(keys).or_else(|| self.sub_online.get(keys)).copied()
    }

    /// Opens the session of an accepted CONNECT; the connections with its client id or
    /// its device are closed and returned (taken over).
    pub(super) fn open(&mut self, conn: ConnId, keys: &DeviceKeys, client_id: &str) -> Vec<ConnId> {
        let mut takeover: Vec<ConnId> =
            [self.by_client_id.get(client_id).copied(), self.online.get(keys).copied()].into_iter().flatten().collect();
        takeover.dedup();
        for old in &takeover {
            self.close(*old);
        }
        self.by_conn
            .insert(conn, Session { device: keys.clone(), client_id: client_id.to_owned(), subs: HashSet::new() });
        self.by_client_id.insert(client_id.to_owned(), conn);
        self.online.insert(keys.clone(), conn);
        takeover
    }

    /// A session without a CONNECT (a device seen on a shared broker, or logged in over
    /// HTTP); an existing session of `conn` is kept.
    pub(super) fn attach(&mut self, conn: ConnId, keys: &DeviceKeys) {
        self.by_conn.entry(conn).or_insert_with(|| Session {
            device: keys.clone(),
            client_id: String::new(),
            subs: HashSet::new(),
        });
        self.online.insert(keys.clone(), conn);
    }

    /// Connection `conn` is gone: its device and sub-devices go offline.
    pub(super) fn close(&mut self, conn: ConnId) {
        if let Some(s) = self.by_conn.remove(&conn) {
            if self.by_client_id.get(&s.client_id) == Some(&conn) {
                self.by_client_id.remove(&s.client_id);
            }
            if self.online.get(&s.device) == Some(&conn) {
                self.online.remove(&s.device);
            }
            for sub in s.subs {
                if self.sub_online.get(&sub) == Some(&conn) {
                    self.sub_online.remove(&sub);
                }
            }
        }
    }

    /// Logs `sub` in through connection `conn`, out of any other.
    pub(super) fn log_in(&mut self, conn: ConnId, sub: &DeviceKeys) {
        if let Some(old) = self.sub_online.insert(sub.clone(), conn) {
            if old != conn {
                if let Some(s) = self.by_conn.get_mut(&old) {
                    s.subs.remove(sub);
                }
            }
        }
        if let Some(s) = self.by_conn.get_mut(&conn) {
            s.subs.insert(sub.clone());
        }
    }

    /// Logs a sub-device out of connection `conn`, and only of it.
    pub(super) fn log_out_from(&mut self, conn: ConnId, sub: &DeviceKeys) {
        if self.sub_online.get(sub) == Some(&conn) {
            self.sub_online.remove(sub);
        }
        if let Some(s) = self.by_conn.get_mut(&conn) {
            s.subs.remove(sub);
        }
    }

    /// Logs sub-devices out wherever they are logged in.
    pub(super) fn log_out(&mut self, subs: &[DeviceKeys]) {
        for sub in subs {
            if let Some(conn) = self.sub_online.get(sub).copied() {
                self.log_out_from(conn, sub);
            }
        }
    }
}

impl Cloud {
    /// The connection that carries `keys`' commands: its own, or its gateway's.
    pub(crate) fn route(&self, keys: &DeviceKeys) -> Option<ConnId> {
        self.sessions.route(keys)
    }

    /// Whether `keys` is connected, or logged in through a gateway.
    pub fn is_online(&self, keys: &DeviceKeys) -> bool {
        self.route(keys).is_some()
    }

    /// The connection of a directly connected device (not of a logged-in sub-device).
    pub(crate) fn direct(&self, keys: &DeviceKeys) -> Option<ConnId> {
        self.sessions.direct(keys)
    }

    /// A device seen on a shared broker (responder mode), or logged in over HTTP: a
    /// session without a CONNECT.
    pub(crate) fn attach(&mut self, conn: ConnId, keys: &DeviceKeys) {
        self.sessions.attach(conn, keys);
    }

    /// The connection is gone: its device and sub-devices go offline. Commands sent
    /// through it stay pending until their deadline: a device that reconnects in time may
    /// still answer them (see the commands module).
    pub fn disconnect(&mut self, conn: ConnId) {
        self.sessions.close(conn);
    }

    /// Logs sub-devices out wherever they are logged in (the cloud's own decision:
    /// disable, delete).
    pub(crate) fn log_out(&mut self, subs: &[DeviceKeys]) {
        self.sessions.log_out(subs);
    }

    /// Whether the connection `conn` may subscribe to `filter`: only within the topics
    /// of its own device (`/sys/{pk}/{dk}/...`, `/ext/session/{pk}/{dk}/...`) or of a
    /// sub-device in its topology or logged in through it, with both keys written out (no
    /// wildcard for them). Anything wider could match another device's messages.
    pub fn may_subscribe(&self, conn: ConnId, filter: &str) -> bool {
        let Some(session) = self.sessions.get(conn) else { return false };
        if integration::is_channel(&session.device) {
            // The channel's own topics only.
            let pk = session.device.product_key();
            return filter
                .strip_prefix("/sys/")
                .and_then(|f| f.strip_prefix(pk))
                .is_some_and(|f| f.starts_with("/integration/"));
        }
        let mut levels = filter.split('/');
        let owner = match (levels.next(), levels.next()) {
            (Some(""), Some("sys")) => (levels.next(), levels.next()),
            (Some(""), Some("ext")) if levels.next() == Some("session") => (levels.next(), levels.next()),
            _ => return false,
        };
        let (Some(pk), Some(dk)) = owner else { return false };
        if [pk, dk].iter().any(|l| l.contains(['+', '#'])) {
            return false;
        }
        let Ok(keys) = DeviceKeys::new(pk, dk) else { return false };
        keys == session.device
            || session.subs.contains(&keys)
            || self.registry.topology.get(&session.device).is_some_and(|t| t.contains(&keys))
    }
}
