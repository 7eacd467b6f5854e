//! The table of requests not yet ended, and their deadlines.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::event::RequestId;
use crate::ops::Effect;

/// Deadline entries of ended requests (or answered commands) tolerated beyond twice the
/// live ones, before a sweep.
pub(crate) const SLACK: usize = 64;

/// A fast hasher for the core's own keys (request and envelope ids, packet ids, topics
/// the core built itself): a multiply per 8 bytes. Not for keys an attacker chooses in
/// bulk; the core's tables hold only what it created.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
        for b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Waiting for the connection, the window or a subscription.
    Queued,
    /// Published at QoS 1, awaiting its PUBACK.
    InFlight(u16),
    /// On the wire; awaiting its reply.
    Sent,
    /// Kept in the offline store; it ends with the reply to the record's resume.
    Stored,
}

/// Whom a request's end is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The application: its `Event::Response`.
    App,
    /// The core's re-login of sub-devices.
    Relogin,
    /// The core's resume of offline records.
    Stored,
}

#[derive(Debug)]
pub(crate) struct Req {
    pub(crate) deadline: Instant,
    pub(crate) timeout: Duration,
    pub(crate) stage: Stage,
    pub(crate) reply_topic: Arc<str>,
    pub(crate) envelope: Option<u32>,
    pub(crate) wants_reply: bool,
    pub(crate) effect: Effect,
    pub(crate) origin: Origin,
    /// Payload bytes, for the queue's accounting while the request is queued.
    pub(crate) bytes: usize,
    /// Whether it is a raw request (replies matched per topic, oldest first).
    pub(crate) raw: bool,
    /// A post the offline store may take, if its link is lost before it reached the cloud.
    pub(crate) offline: Option<crate::ops::OfflineForm>,
}

/// Requests by id, with two deadline queues: one in order for the default timeout (its
/// deadlines never decrease), a heap for the others. Entries of ended requests are
/// dropped lazily from the fronts, and all at once when the queues hold more than twice
/// the live requests (plus [`SLACK`]): a request that waits long at the front (a lost
/// reply, a long timeout) cannot keep the entries of every request ended behind it.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    next: u64,
    reqs: HashMap<RequestId, Req, BuildHasherDefault<IdHasher>>,
    in_order: VecDeque<(Instant, RequestId)>,
    others: BinaryHeap<Reverse<(Instant, RequestId)>>,
}

impl Pending {
    pub(crate) fn next_id(&mut self) -> RequestId {
        self.next += 1;
        RequestId(self.next)
    }

    pub(crate) fn insert(&mut self, id: RequestId, req: Req, default_timeout: bool) {
        let at = req.deadline;
        // The in-order queue stays sorted only while deadlines do not decrease.
        if default_timeout && self.in_order.back().is_none_or(|(last, _)| *last <= at) {
            self.in_order.push_back((at, id));
        } else {
            self.others.push(Reverse((at, id)));
        }
        self.reqs.insert(id, req);
        if self.in_order.len() + self.others.len() > 2 * self.reqs.len() + SLACK {
            // Amortized: after this the queues hold only live entries, and at least as many
            // insertions as there are live requests come before the next sweep.
            let reqs = &self.reqs;
            self.in_order.retain(|(_, id)| reqs.contains_key(id));
            self.others.retain(|Reverse((_, id))| reqs.contains_key(id));
        }
    }

    /// Deadline entries kept at most: twice the live requests plus this.
    #[cfg(test)]
    fn deadline_entries(&self) -> usize {
        self.in_order.len() + self.others.len()
    }

    pub(crate) fn get(&self, id: RequestId) -> Option<&Req> {
        self.reqs.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: RequestId) -> Option<&mut Req> {
        self.reqs.get_mut(&id)
    }

    pub(crate) fn remove(&mut self, id: RequestId) -> Option<Req> {
        self.reqs.remove(&id)
    }

    pub(crate) fn len(&self) -> usize {
        self.reqs.len()
    }

    /// The reply topics of every live request.
    pub(crate) fn reply_topics(&self) -> std::collections::HashSet<Arc<str>> {
        self.reqs.values().map(|r| r.reply_topic.clone()).collect()
    }

    /// The reply topics of the requests sent and awaiting their reply.
    pub(crate) fn awaited_topics(&self) -> std::collections::HashSet<Arc<str>> {
        self.reqs.values().filter(|r| r.stage == Stage::Sent && r.wants_reply).map(|r| r.reply_topic.clone()).collect()
    }

    /// Every live id, oldest first.
    pub(crate) fn ids(&self) -> Vec<RequestId> {
        let mut v: Vec<RequestId> = self.reqs.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// The next live request whose deadline is at or before `now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<RequestId> {
        loop {
            let front = self.in_order.front().copied();
            let top = self.others.peek().map(|r| r.0);
            let (at, id, from_heap) = match (front, top) {
                (Some(a), Some(b)) if b.0 < a.0 => (b.0, b.1, true),
                (Some(a), _) => (a.0, a.1, false),
                (None, Some(b)) => (b.0, b.1, true),
                (None, None) => return None,
            };
            if at > now {
                return None;
            }
            if from_heap {
                self.others.pop();
            } else {
                self.in_order.pop_front();
            }
            if self.reqs.contains_key(&id) {
                return Some(id);
            }
        }
    }

    /// Drops deadline entries of requests that have ended, from the fronts.
    pub(crate) fn prune(&mut self) {
        while let Some((_, id)) = self.in_order.front() {
            if self.reqs.contains_key(id) {
                break;
            }
            self.in_order.pop_front();
        }
        while let Some(Reverse((_, id))) = self.others.peek() {
            if self.reqs.contains_key(id) {
                break;
            }
            self.others.pop();
        }
        if self.reqs.is_empty() {
            self.in_order.clear();
            self.others.clear();
        }
    }

    /// The earliest deadline at the fronts (it may belong to a request that has ended
    /// since the last prune; an early wake-up is harmless).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let a = self.in_order.front().map(|(at, _)| *at);
        let b = self.others.peek().map(|r| r.0 .0);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(deadline: Instant) -> Req {
        Req {
            deadline,
            timeout: Duration::from_secs(30),
            stage: Stage::Sent,
            reply_topic: Arc::from("t"),
            envelope: None,
            wants_reply: true,
            effect: Effect::None,
            origin: Origin::App,
            bytes: 0,
            raw: false,
            offline: None,
        }
    }

    #[test]
    fn deadline_entries_stay_bounded_behind_a_long_wait() {
        let t0 = crate::time::Now::system().instant;
        let mut p = Pending::default();
        // One request waits an hour at the front of each queue.
        let stuck = p.next_id();
        p.insert(stuck, req(t0 + Duration::from_secs(3600)), true);
        let stuck_other = p.next_id();
        p.insert(stuck_other, req(t0 + Duration::from_secs(3600)), false);
        // Then 100,000 requests each end before the next begins.
        for i in 0..100_000u64 {
            let id = p.next_id();
            p.insert(id, req(t0 + Duration::from_secs(3600) + Duration::from_millis(i)), i % 2 == 0);
            p.remove(id);
            p.prune();
            assert!(
                p.deadline_entries() <= 2 * (p.len() + 1) + SLACK,
                "{} entries for {} live",
                p.deadline_entries(),
                p.len()
            );
        }
        // The waiting ones still expire, in order, and nothing else does.
        assert_eq!(p.pop_expired(t0 + Duration::from_secs(3601)), Some(stuck));
        assert_eq!(p.pop_expired(t0 + Duration::from_secs(3601)), Some(stuck_other));
    }
}
