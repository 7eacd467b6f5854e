//! The outbox: every publish waiting to go out, and the counts that bound it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::codec::QoS;
use crate::error::SubmitError;
use crate::event::RequestId;
use crate::pending::{IdHasher, SLACK};

/// A publish waiting to go out, in flight, or kept for retransmission.
#[derive(Debug)]
pub(super) struct Outgoing {
    /// The request it carries; `None` for a command reply.
    pub(super) req: Option<RequestId>,
    pub(super) topic: Arc<str>,
    pub(super) payload: Bytes,
    pub(super) qos: QoS,
    pub(super) dup: bool,
    /// The reply topic that must be subscribed before this goes out.
    pub(super) needs: Option<Arc<str>>,
    /// A command reply is worthless after this (the cloud stopped waiting).
    pub(super) expires: Option<Instant>,
}

impl Outgoing {
    /// A copy of a command reply (cheap: the topic and payload are shared).
    pub(super) fn clone_reply(&self) -> Outgoing {
        Outgoing {
            req: None,
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            qos: self.qos,
            dup: self.dup,
            needs: None,
            expires: self.expires,
        }
    }
}

type Ids<V> = HashMap<Arc<str>, V, BuildHasherDefault<IdHasher>>;

/// Publishes waiting to be sent: the re-login that goes before all others, those ready
/// in order, and those parked behind the subscription of their reply topic.
///
/// It owns its counts: every entry is counted in when it enters and out when it leaves
/// or its request ends ([`cancel`](Outbox::cancel)), so [`len`](Outbox::len) and
/// [`bytes`](Outbox::bytes) are always the live entries, which the queue limits bound.
/// A cancelled entry stays in its deque (removing it from the middle would cost a scan)
/// until it is reached or, when such entries outnumber the live ones, swept at once.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    first: Option<Outgoing>,
    ready: VecDeque<Outgoing>,
    parked: Ids<VecDeque<Outgoing>>,
    /// Requests that ended while their entry was still in a deque.
    cancelled: HashSet<RequestId, BuildHasherDefault<IdHasher>>,
    len: usize,
    bytes: usize,
}

impl Outbox {
    /// Live entries.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Payload bytes of the live entries.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether one more entry of `bytes` fits within `max_len` entries and `max_bytes`.
    pub(super) fn room(&self, bytes: usize, max_len: usize, max_bytes: usize) -> Result<(), SubmitError> {
        if self.len >= max_len || self.bytes.saturating_add(bytes) > max_bytes {
            Err(SubmitError::QueueFull { queued: self.len, bytes: self.bytes })
        } else {
            Ok(())
        }
    }

    fn count_in(&mut self, out: &Outgoing) {
        self.len += 1;
        self.bytes += out.payload.len();
    }

    fn count_out(&mut self, out: &Outgoing) {
        debug_assert!(self.len > 0 && self.bytes >= out.payload.len(), "outbox counts out of step");
        self.len -= 1;
        self.bytes -= out.payload.len();
    }

    /// Queued last, behind every ready entry.
    pub(super) fn push(&mut self, out: Outgoing) {
        self.count_in(&out);
        self.ready.push_back(out);
    }

    /// Queued first (a retransmission, or one the window had no room for).
    pub(super) fn push_front(&mut self, out: Outgoing) {
        self.count_in(&out);
        self.ready.push_front(out);
    }

    /// Parked until `reply_topic` is subscribed.
    pub(super) fn park(&mut self, reply_topic: &Arc<str>, out: Outgoing) {
        self.count_in(&out);
        self.parked.entry(reply_topic.clone()).or_default().push_back(out);
    }

    /// `reply_topic` is subscribed: what was parked behind it is ready, in order.
    pub(super) fn unpark(&mut self, reply_topic: &str) {
        if let Some(parked) = self.parked.remove(reply_topic) {
            self.ready.extend(parked);
        }
    }

    /// The live requests parked behind `reply_topic`, oldest first.
    pub(super) fn parked_requests(&self, reply_topic: &str) -> Vec<RequestId> {
        self.parked
            .get(reply_topic)
            .into_iter()
            .flatten()
            .filter_map(|o| o.req)
            .filter(|id| !self.cancelled.contains(id))
            .collect()
    }

    /// Forgets what is parked behind `reply_topic`, once its requests have ended.
    pub(super) fn drop_parked(&mut self, reply_topic: &str) {
        for out in self.parked.remove(reply_topic).into_iter().flatten() {
            self.discard(out);
        }
    }

    /// An entry leaves without going out: counted out unless its request already was.
    fn discard(&mut self, out: Outgoing) {
        if !out.req.is_some_and(|id| self.cancelled.remove(&id)) {
            self.count_out(&out);
        }
    }

    /// The next ready entry whose request has not ended.
    pub(super) fn pop(&mut self) -> Option<Outgoing> {
        while let Some(out) = self.ready.pop_front() {
            if out.req.is_some_and(|id| self.cancelled.remove(&id)) {
                continue;
            }
            self.count_out(&out);
            return Some(out);
        }
        None
    }

    /// The publish that goes before all others (the re-login after a reconnect).
    pub(super) fn set_first(&mut self, out: Outgoing) {
        if let Some(old) = self.first.take() {
            self.count_out(&old);
        }
        self.count_in(&out);
        self.first = Some(out);
    }

    pub(super) fn first(&self) -> Option<&Outgoing> {
        self.first.as_ref()
    }

    pub(super) fn take_first(&mut self) -> Option<Outgoing> {
        let out = self.first.take()?;
        self.count_out(&out);
        Some(out)
    }

    /// Request `id`, whose entry is in the outbox, ended: it no longer counts, and its
    /// entry is skipped when reached.
    pub(super) fn cancel(&mut self, id: RequestId, bytes: usize) {
        if self.first.as_ref().is_some_and(|o| o.req == Some(id)) {
            self.take_first();
            return;
        }
        debug_assert!(self.len > 0 && self.bytes >= bytes, "outbox counts out of step");
        self.len -= 1;
        self.bytes -= bytes;
        self.cancelled.insert(id);
        if self.cancelled.len() > self.len + SLACK {
            self.sweep();
        }
    }

    /// Drops every cancelled entry at once.
    fn sweep(&mut self) {
        let cancelled = &self.cancelled;
        let live = |o: &Outgoing| o.req.is_none_or(|id| !cancelled.contains(&id));
        self.ready.retain(live);
        for q in self.parked.values_mut() {
            q.retain(live);
        }
        self.parked.retain(|_, q| !q.is_empty());
        self.cancelled.clear();
    }

    /// Takes every live ready and parked entry out, ready ones first, to be routed again
    /// (the subscriptions they wait for are gone with a connection).
    pub(super) fn take_all(&mut self) -> Vec<Outgoing> {
        self.sweep();
        let mut all: Vec<Outgoing> = self.ready.drain(..).collect();
        for (_, q) in self.parked.drain() {
            all.extend(q);
        }
        for out in &all {
            self.len -= 1;
            self.bytes -= out.payload.len();
        }
        all
    }

    /// The command replies waiting, for a last send before the session closes.
    pub(super) fn replies(&self) -> impl Iterator<Item = &Outgoing> {
        self.ready.iter().filter(|o| o.req.is_none())
    }

    /// Empties it (the client closed).
    pub(super) fn clear(&mut self) {
        *self = Outbox::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(id: u64, bytes: usize) -> Outgoing {
        Outgoing {
            req: Some(RequestId(id)),
            topic: Arc::from("t"),
            payload: Bytes::from(vec![0u8; bytes]),
            qos: QoS::AtLeastOnce,
            dup: false,
            needs: None,
            expires: None,
        }
    }

    #[test]
    fn counts_follow_entries_through_every_way_in_and_out() {
        let mut o = Outbox::default();
        let topic: Arc<str> = Arc::from("r");
        o.push(out(1, 10));
        o.push_front(out(2, 20));
        o.park(&topic, out(3, 30));
        o.set_first(out(4, 40));
        assert_eq!((o.len(), o.bytes()), (4, 100));
        // A ready entry and a parked one end while queued.
        o.cancel(RequestId(1), 10);
        o.cancel(RequestId(3), 30);
        assert_eq!((o.len(), o.bytes()), (2, 60));
        assert!(o.parked_requests("r").is_empty());
        o.drop_parked("r");
        assert_eq!((o.len(), o.bytes()), (2, 60));
        // The first one ends: gone at once.
        o.cancel(RequestId(4), 40);
        assert!(o.first().is_none());
        assert_eq!(o.pop().and_then(|x| x.req), Some(RequestId(2)));
        assert!(o.pop().is_none(), "the cancelled entry is skipped");
        assert_eq!((o.len(), o.bytes()), (0, 0));
    }

    #[test]
    fn cancelled_entries_are_swept_before_they_outnumber_live_ones() {
        let mut o = Outbox::default();
        o.push(out(0, 1));
        for i in 1..10_000 {
            o.push(out(i, 1));
            o.cancel(RequestId(i), 1);
            assert!(o.ready.len() <= 2 * o.len() + SLACK + 1, "{} entries for {} live", o.ready.len(), o.len());
        }
        let all = o.take_all();
        assert_eq!(all.len(), 1);
        assert_eq!((o.len(), o.bytes()), (0, 0));
    }

    #[test]
    fn unparked_entries_follow_the_ready_ones_in_order() {
        let mut o = Outbox::default();
        let topic: Arc<str> = Arc::from("r");
        o.park(&topic, out(1, 1));
        o.park(&topic, out(2, 1));
        o.push(out(3, 1));
        assert_eq!(o.parked_requests("r"), vec![RequestId(1), RequestId(2)]);
        o.unpark("r");
        let order: Vec<u64> = std::iter::from_fn(|| o.pop()).filter_map(|x| x.req).map(|r| r.0).collect();
        assert_eq!(order, vec![3, 1, 2]);
    }
}
