//! Store-and-forward: measure point posts kept in the offline store while the session is
//! down, and sent as resumes once it is up (see [`crate::store`]).

use super::*;
use crate::store::{OfflineStore, WhenFull};

/// The version byte of a record's layout.
const RECORD_V1: u8 = 1;
const FLAG_BATCH: u8 = 1;
const FLAG_ALLOW_OFFLINE: u8 = 2;
const FLAG_SKIP_INVALID: u8 = 4;
/// Room for a resume's envelope around its stored parameters.
const ENVELOPE_ROOM: usize = 128;
/// Single posts' records sent together in one batch resume, at most.
pub(super) const RESUME_BATCH: usize = 100;

/// The core's side of the offline store.
#[derive(Debug, Default)]
pub(super) struct Offline {
    /// Records of this run's posts whose callers wait: record → their request.
    callers: HashMap<u64, RequestId, BuildHasherDefault<IdHasher>>,
    /// Records on their way as resumes: record → the resume request.
    sending: HashMap<u64, RequestId, BuildHasherDefault<IdHasher>>,
    /// Resumes on their way: request → the records it carries.
    groups: HashMap<RequestId, Vec<u64>, BuildHasherDefault<IdHasher>>,
    /// Records to send alone: the batch they were in was refused.
    alone: std::collections::HashSet<u64, BuildHasherDefault<IdHasher>>,
    /// The last record read for sending; records after it are read next.
    cursor: Option<u64>,
    /// Every record was read (until one is appended, or a resume fails).
    exhausted: bool,
    stats: OfflineStats,
}

/// What store-and-forward has done since the client was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OfflineStats {
    /// Posts kept in the store.
    pub stored: u64,
    /// Records whose resume the cloud accepted (200).
    pub delivered: u64,
    /// Records whose resume the cloud refused with another code (forgotten).
    pub rejected: u64,
    /// Records dropped to make room (`WhenFull::DropOldest`).
    pub dropped: u64,
    /// Records sent again after their resume timed out or its link was lost (each may
    /// reach the cloud twice).
    pub retried: u64,
}

/// A stored post, as the record keeps it.
#[derive(Debug)]
struct Record<'a> {
    batch: bool,
    flags: [(&'static str, bool); 2],
    device: DeviceKeys,
    params: &'a [u8],
}

/// Layout: version, flags, the topic device's product key and device key (each a u16
/// length and the bytes), then the JSON `params` as they were encoded at the post's time.
fn encode_record(out: &mut Vec<u8>, record: &Record<'_>) {
    let mut flags = if record.batch { FLAG_BATCH } else { 0 };
    if record.flags[0].1 {
        flags |= FLAG_ALLOW_OFFLINE;
    }
    if record.flags[1].1 {
        flags |= FLAG_SKIP_INVALID;
    }
    let (device, params) = (&record.device, record.params);
    out.clear();
    out.push(RECORD_V1);
    out.push(flags);
    for k in [device.product_key(), device.device_key()] {
        // Keys are at most a few dozen bytes (DeviceKeys validates them).
        out.extend_from_slice(&u16::try_from(k.len()).unwrap_or(u16::MAX).to_le_bytes());
        out.extend_from_slice(k.as_bytes());
    }
    out.extend_from_slice(params);
}

/// Whether a record keeps a batch post (read without decoding the rest).
fn is_batch_record(body: &[u8]) -> bool {
    body.get(1).is_some_and(|f| f & FLAG_BATCH != 0)
}

fn decode_record(body: &[u8]) -> Result<Record<'_>, String> {
    fn key(b: &[u8]) -> Option<(&str, &[u8])> {
        let n = usize::from(u16::from_le_bytes(b.get(..2)?.try_into().ok()?));
        let k = std::str::from_utf8(b.get(2..2 + n)?).ok()?;
        Some((k, &b[2 + n..]))
    }
    let (&version, rest) = body.split_first().ok_or("empty record")?;
    if version != RECORD_V1 {
        return Err(format!("record layout {version} unknown"));
    }
    let (&flags, rest) = rest.split_first().ok_or("record cut short")?;
    let (pk, rest) = key(rest).ok_or("record cut short")?;
    let (dk, params) = key(rest).ok_or("record cut short")?;
    let device = DeviceKeys::new(pk, dk).map_err(|e| e.to_string())?;
    if serde_json::from_slice::<serde::de::IgnoredAny>(params).is_err() {
        return Err("record parameters are not JSON".into());
    }
    Ok(Record {
        batch: flags & FLAG_BATCH != 0,
        flags: [
            ("allowOfflineSubDevice", flags & FLAG_ALLOW_OFFLINE != 0),
            ("skipInvalidMeasurepoints", flags & FLAG_SKIP_INVALID != 0),
        ],
        device,
        params,
    })
}

/// Appends a single post's parameters `{"measurepoints":..,"time":..}` as an entry of a
/// batch, naming `device` (none: the topic's device).
fn write_entry(out: &mut Vec<u8>, device: Option<&DeviceKeys>, params: &[u8]) {
    // The rest of the object, after its `{` (decode_record checked it is JSON).
    let rest = params.trim_ascii().strip_prefix(b"{").unwrap_or(b"}");
    let Some(device) = device else {
        out.push(b'{');
        out.extend_from_slice(rest);
        return;
    };
    out.extend_from_slice(b"{\"productKey\":");
    // Strings always serialize.
    let _ = serde_json::to_writer(&mut *out, device.product_key());
    out.extend_from_slice(b",\"deviceKey\":");
    let _ = serde_json::to_writer(&mut *out, device.device_key());
    if !rest.trim_ascii_start().starts_with(b"}") {
        out.push(b',');
    }
    out.extend_from_slice(rest);
}

/// A stored post sent as a resume.
struct Resume<'a>(&'a Record<'a>);

impl Operation for Resume<'_> {
    type Data = ();
    fn write_path(&self, out: &mut String) {
        out.push_str(if self.0.batch { "thing/measurepoint/resume/batch" } else { "thing/measurepoint/resume" });
    }
    fn write_method(&self, out: &mut String) {
        out.push_str(if self.0.batch { "thing.measurepoint.resume.batch" } else { "thing.measurepoint.resume" });
    }
    fn write_params(&self, _: &EncodeContext<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(self.0.params);
        Ok(())
    }
    fn extras(&self) -> &[(&'static str, bool)] {
        if self.0.batch {
            &self.0.flags
        } else {
            &[]
        }
    }
    fn parse_reply(reply: &Reply) -> Result<(), RequestError> {
        ops::unit_reply(reply)
    }
}

impl Client {
    /// What store-and-forward has done since the client was made.
    pub fn offline_stats(&self) -> OfflineStats {
        self.offline.stats
    }

    /// A measure point post made while the session is down: kept in the offline store.
    pub(super) fn store_post<O: Operation>(
        &mut self,
        unix_ms: u64,
        op: &O,
        form: ops::OfflineForm,
        opts: RequestOptions,
    ) -> Result<RequestId, SubmitError> {
        let Some(store) = self.config.offline_store.clone() else {
            return Err(SubmitError::OfflineStore("no offline store".into()));
        };
        if self.state == State::Closed {
            return Err(SubmitError::Closed);
        }
        if self.pending.len() >= self.config.max_outstanding_requests {
            return Err(SubmitError::TooManyRequests(self.config.max_outstanding_requests));
        }
        let device = opts.target.clone().unwrap_or_else(|| self.config.device.clone());
        // The parameters, stamped now (a post without a time gets the time it was made).
        self.body.clear();
        let ctx = EncodeContext { unix_ms, own: &self.config.device };
        op.write_params(&ctx, &mut self.body)?;
        let size = self.body.len() + ENVELOPE_ROOM;
        if size > self.config.max_payload_bytes {
            return Err(EncodeError::PayloadTooLarge { size, max: self.config.max_payload_bytes }.into());
        }
        let on = |flag: &str| op.extras().iter().any(|(name, on)| *name == flag && *on);
        let flags = [
            ("allowOfflineSubDevice", on("allowOfflineSubDevice")),
            ("skipInvalidMeasurepoints", on("skipInvalidMeasurepoints")),
        ];
        let body = std::mem::take(&mut self.body);
        let kept = self.keep(&store, &Record { batch: form.0, flags, device, params: &body });
        if body.capacity() <= BODY_KEEP {
            self.body = body;
        }
        let seq = kept?;
        let id = self.pending.next_id();
        self.pending.insert(
            id,
            Req {
                // Its end comes with its resume's: no deadline while stored.
                deadline: later(self.now, Duration::MAX),
                timeout: opts.timeout.unwrap_or(self.config.request_timeout),
                stage: Stage::Stored,
                reply_topic: Arc::from(""),
                envelope: None,
                wants_reply: opts.need_reply,
                effect: Effect::None,
                origin: Origin::App,
                bytes: 0,
                raw: false,
                offline: None,
            },
            false,
        );
        self.offline.callers.insert(seq, id);
        Ok(id)
    }

    /// Keeps `record` in the store, making room as the store's policy says; its number.
    fn keep(&mut self, store: &OfflineStore, record: &Record<'_>) -> Result<u64, SubmitError> {
        let mut body = Vec::with_capacity(record.params.len() + 64);
        encode_record(&mut body, record);
        self.make_room(store, body.len() as u64)?;
        let seq = store.with(|s| s.append(&body)).map_err(|e| SubmitError::OfflineStore(e.to_string()))?;
        self.offline.stats.stored += 1;
        self.offline.exhausted = false;
        Ok(seq)
    }

    /// The link is lost: posts that have not reached the cloud (queued, or sent and not
    /// acknowledged) move from the outbox to the store, where no timeout runs, to go out
    /// as resumes like those made offline. What the store cannot take stays queued.
    pub(super) fn store_unsent(&mut self) {
        if self.config.offline_store.is_none() {
            return;
        }
        for out in self.outbox.take_all() {
            if !self.store_outgoing(&out) {
                self.outbox.push(out);
            }
        }
    }

    /// Moves one queued post to the store; false when it is not a post or does not fit.
    fn store_outgoing(&mut self, out: &Outgoing) -> bool {
        #[derive(serde::Deserialize)]
        struct Envelope<'a> {
            #[serde(borrow)]
            params: &'a serde_json::value::RawValue,
            #[serde(rename = "allowOfflineSubDevice", default)]
            allow_offline: bool,
            #[serde(rename = "skipInvalidMeasurepoints", default)]
            skip_invalid: bool,
        }
        let Some(store) = self.config.offline_store.clone() else { return false };
        let Some(id) = out.req else { return false };
        let Some(form) = self.pending.get(id).filter(|r| r.origin == Origin::App).and_then(|r| r.offline) else {
            return false;
        };
        let Some(device) =
            topic::parse_topic(&out.topic).and_then(|t| DeviceKeys::new(t.product_key, t.device_key).ok())
        else {
            return false;
        };
        let Ok(envelope) = serde_json::from_slice::<Envelope<'_>>(&out.payload) else { return false };
        let record = Record {
            batch: form.0,
            flags: [
                ("allowOfflineSubDevice", envelope.allow_offline),
                ("skipInvalidMeasurepoints", envelope.skip_invalid),
            ],
            device,
            params: envelope.params.get().as_bytes(),
        };
        let Ok(seq) = self.keep(&store, &record) else { return false };
        // Its request now ends with its record's resume.
        let Some(req) = self.pending.get_mut(id) else { return false };
        req.stage = Stage::Stored;
        if let Some(e) = req.envelope.take() {
            self.by_envelope.remove(&e);
        }
        self.offline.callers.insert(seq, id);
        true
    }

    /// Room for a record of `bytes`: refused, or made by dropping the oldest records.
    fn make_room(&mut self, store: &OfflineStore, bytes: u64) -> Result<(), SubmitError> {
        loop {
            let (records, held, oldest) = store.with(|s| (s.len(), s.bytes(), s.oldest()));
            let fits = records < store.max_records && held.saturating_add(bytes) <= store.max_bytes;
            if fits {
                return Ok(());
            }
            let Some(seq) = oldest.filter(|_| store.when_full == WhenFull::DropOldest) else {
                return Err(SubmitError::OfflineStoreFull { records, bytes: held });
            };
            store.with(|s| s.remove(seq)).map_err(|e| SubmitError::OfflineStore(e.to_string()))?;
            self.offline.stats.dropped += 1;
            self.offline.alone.remove(&seq);
            #[cfg(feature = "tracing")]
            tracing::warn!(device = %self.config.device, seq, "offline store full: oldest record dropped");
            self.events.push_back(Event::Error(ClientError::OfflineDropped { seq }));
            if let Some(id) = self.offline.callers.remove(&seq) {
                self.finish(id, Err(RequestError::Dropped));
            }
        }
    }

    /// Sends stored records as resumes, oldest first, while fewer than `max_inflight`
    /// records are on their way (so that a lost link or a restart sends at most that many
    /// twice): once the session is up and a re-login is answered.
    /// Records of single posts go together, up to [`RESUME_BATCH`] in one batch resume
    /// within the payload limit; a record of a batch post, or one whose batch was refused,
    /// goes alone.
    pub(super) fn drain_offline(&mut self) {
        // Called on every flush: the cheap checks first.
        if self.offline.exhausted || self.state != State::Connected || self.relogin.is_some() {
            return;
        }
        let Some(store) = self.config.offline_store.clone() else { return };
        let window = usize::from(self.config.max_inflight);
        let mut records = Vec::new();
        while self.offline.sending.len() < window {
            records.clear();
            let want = window - self.offline.sending.len();
            if let Err(e) = store.with(|s| s.read(self.offline.cursor, want, &mut records)) {
                // Tried again when the next record is stored or the next session is up.
                self.offline.exhausted = true;
                let reason = format!("reading records failed: {e}");
                self.events.push_back(Event::Error(ClientError::OfflineStore { reason }));
                return;
            }
            if records.is_empty() {
                self.offline.exhausted = true;
                return;
            }
            let mut batch: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut bytes = 0;
            for (seq, body) in records.drain(..) {
                self.offline.cursor = Some(seq);
                if self.offline.sending.contains_key(&seq) {
                    continue;
                }
                let single = !is_batch_record(&body) && !self.offline.alone.contains(&seq);
                if single {
                    if batch.len() == RESUME_BATCH || bytes + body.len() + ENVELOPE_ROOM > self.config.max_payload_bytes
                    {
                        self.send_batch(&store, std::mem::take(&mut batch));
                        bytes = 0;
                    }
                    bytes += body.len() + 1;
                    batch.push((seq, body));
                } else {
                    // In order: what waits in the batch goes first.
                    self.send_batch(&store, std::mem::take(&mut batch));
                    bytes = 0;
                    self.send_record(&store, seq, &body);
                }
            }
            self.send_batch(&store, batch);
        }
    }

    /// Single posts' records in one batch resume (one record: as it is).
    fn send_batch(&mut self, store: &OfflineStore, batch: Vec<(u64, Vec<u8>)>) {
        if batch.len() <= 1 {
            for (seq, body) in batch {
                self.send_record(store, seq, &body);
            }
            return;
        }
        let mut params = Vec::with_capacity(batch.iter().map(|(_, b)| b.len() + 48).sum());
        let mut seqs = Vec::with_capacity(batch.len());
        params.push(b'[');
        for (seq, body) in &batch {
            match decode_record(body) {
                Ok(r) => {
                    if !seqs.is_empty() {
                        params.push(b',');
                    }
                    let own = (r.device != self.config.device).then_some(&r.device);
                    write_entry(&mut params, own, r.params);
                    seqs.push(*seq);
                }
                Err(reason) => self.forget_unreadable(store, *seq, &reason),
            }
        }
        params.push(b']');
        let record = Record {
            batch: true,
            flags: [("allowOfflineSubDevice", true), ("skipInvalidMeasurepoints", false)],
            device: self.config.device.clone(),
            params: &params,
        };
        self.send_group(seqs, &record);
    }

    /// A record that cannot be read is forgotten; its caller, if any, hears why.
    fn forget_unreadable(&mut self, store: &OfflineStore, seq: u64, reason: &str) {
        let _ = store.with(|s| s.remove(seq));
        self.offline.stats.rejected += 1;
        let reason = format!("record {seq} forgotten: {reason}");
        self.events.push_back(Event::Error(ClientError::OfflineStore { reason: reason.clone() }));
        if let Some(id) = self.offline.callers.remove(&seq) {
            self.finish(id, Err(RequestError::BadReply(reason)));
        }
    }

    fn send_record(&mut self, store: &OfflineStore, seq: u64, body: &[u8]) {
        let record = match decode_record(body) {
            Ok(r) => r,
            Err(reason) => return self.forget_unreadable(store, seq, &reason),
        };
        // History is history whether or not a sub-device is online now (it may not be
        // logged in yet after a restart): a sub-device's points go as an entry of the
        // gateway's batch resume, which takes them with `allowOfflineSubDevice`.
        let mut entry = Vec::new();
        let record = if !record.batch && record.device != self.config.device {
            entry.push(b'[');
            write_entry(&mut entry, Some(&record.device), record.params);
            entry.push(b']');
            Record { batch: true, flags: record.flags, device: self.config.device.clone(), params: &entry }
        } else {
            record
        };
        let mut record = record;
        if record.batch {
            record.flags[0].1 = true;
        }
        self.send_group(vec![seq], &record);
    }

    /// One resume carrying records `seqs`.
    fn send_group(&mut self, seqs: Vec<u64>, record: &Record<'_>) {
        if seqs.is_empty() {
            return;
        }
        let target = (record.device != self.config.device).then(|| record.device.clone());
        let opts = RequestOptions { target, ..RequestOptions::default() };
        match self.submit(self.last_unix_ms, &Resume(record), opts, Origin::Stored) {
            Ok(id) => {
                for seq in &seqs {
                    self.offline.sending.insert(*seq, id);
                }
                self.offline.groups.insert(id, seqs);
            }
            Err(e) => {
                // Only a closed client refuses the core's own request; they stay stored.
                let reason = format!("records {seqs:?} not sent: {e}");
                self.events.push_back(Event::Error(ClientError::OfflineStore { reason }));
            }
        }
    }

    /// Resume `id` ended: its records are delivered, refused, or sent again.
    pub(super) fn resumed(&mut self, id: RequestId, result: Result<Reply, RequestError>) {
        let Some(seqs) = self.offline.groups.remove(&id) else { return };
        for seq in &seqs {
            self.offline.sending.remove(seq);
        }
        let Some(store) = self.config.offline_store.clone() else { return };
        let code = match &result {
            Ok(Reply::Json(j)) => j.code,
            Ok(_) => 200,
            Err(_) => {
                // No verdict (timeout, lost, closed): the records stay, read again from
                // the oldest (records on their way are skipped).
                if !matches!(result, Err(RequestError::Closed)) {
                    self.offline.stats.retried += seqs.len() as u64;
                }
                self.offline.cursor = None;
                self.offline.exhausted = false;
                return;
            }
        };
        if code != 200 && seqs.len() > 1 {
            // A batch's code is for all of it: each record goes again alone, for a
            // verdict of its own.
            self.offline.alone.extend(seqs);
            self.offline.cursor = None;
            self.offline.exhausted = false;
            return;
        }
        for seq in seqs {
            self.offline.alone.remove(&seq);
            self.record_answered(&store, seq, code, &result);
        }
    }

    /// The cloud answered record `seq`'s resume with `code`: it is forgotten, and its
    /// caller (if one waits) gets the reply.
    fn record_answered(&mut self, store: &OfflineStore, seq: u64, code: i32, result: &Result<Reply, RequestError>) {
        if let Err(e) = store.with(|s| s.remove(seq)) {
            let reason = format!("record {seq} answered but not forgotten (it may be sent again): {e}");
            self.events.push_back(Event::Error(ClientError::OfflineStore { reason }));
        }
        if code == 200 {
            self.offline.stats.delivered += 1;
        } else {
            self.offline.stats.rejected += 1;
        }
        match self.offline.callers.remove(&seq) {
            Some(id) => {
                let wants_reply = self.pending.get(id).is_some_and(|r| r.wants_reply);
                let result = match result {
                    Ok(_) if code == 200 && !wants_reply => Ok(Reply::Delivered),
                    other => other.clone(),
                };
                self.finish(id, result);
            }
            None if code != 200 => {
                let message = match result {
                    Ok(Reply::Json(j)) => j.message.clone().unwrap_or_default(),
                    _ => String::new(),
                };
                self.events.push_back(Event::Error(ClientError::OfflineRejected { seq, code, message }));
            }
            None => {}
        }
    }

    /// The link is lost: every resume on its way ends without a verdict.
    pub(super) fn resumes_lost(&mut self) {
        let lost: Vec<RequestId> = self.offline.groups.keys().copied().collect();
        for id in lost {
            self.finish(id, Err(RequestError::ConnectionLost));
        }
    }

    /// The client closed: no caller waits any more (records stay in the store).
    pub(super) fn offline_closed(&mut self) {
        self.offline.callers.clear();
        self.offline.sending.clear();
        self.offline.groups.clear();
        self.offline.cursor = None;
        self.offline.exhausted = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written_and_damage_is_named() {
        let keys = DeviceKeys::new("pk", "sub-1").unwrap();
        let mut out = Vec::new();
        let params = br#"[{"measurepoints":{"a":1},"time":5}]"#;
        let flags = [("allowOfflineSubDevice", false), ("skipInvalidMeasurepoints", true)];
        encode_record(&mut out, &Record { batch: true, flags, device: keys.clone(), params });
        assert!(is_batch_record(&out));
        let r = decode_record(&out).unwrap();
        assert!(r.batch);
        assert_eq!(r.flags, [("allowOfflineSubDevice", false), ("skipInvalidMeasurepoints", true)]);
        assert_eq!(r.device, keys);
        assert_eq!(r.params, br#"[{"measurepoints":{"a":1},"time":5}]"#);
        for cut in 0..out.len() {
            assert!(decode_record(&out[..cut]).is_err(), "cut at {cut}");
        }
        let mut entry = b"[".to_vec();
        write_entry(&mut entry, Some(&keys), br#" {"measurepoints":{"a":1},"time":5} "#);
        entry.push(b',');
        write_entry(&mut entry, None, br#"{"measurepoints":{"b":2},"time":6}"#);
        entry.push(b',');
        write_entry(&mut entry, Some(&keys), b"{}");
        entry.push(b']');
        let v: serde_json::Value = serde_json::from_slice(&entry).unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                {"productKey":"pk","deviceKey":"sub-1","measurepoints":{"a":1},"time":5},
                {"measurepoints":{"b":2},"time":6},
                {"productKey":"pk","deviceKey":"sub-1"}
            ])
        );
        out[0] = 9;
        assert!(decode_record(&out).unwrap_err().contains("layout 9"));
    }
}
