//! [`ClientEvent`], the seed's events, and [`Events`], a subscription to them.

use std::collections::VecDeque;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use enos_proto::{ClientError, DeviceKeys, DisconnectCause, Secret};

use crate::{lock, Runtime};

/// What happened to the connection (the seed's events).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// Connected (`reconnect` after the first time): the seed's `connect`.
    Connect {
        /// Whether it is a reconnection.
        reconnect: bool,
    },
    /// The connection ended: the seed's `close`.
    Close {
        /// Why.
        cause: DisconnectCause,
    },
    /// A message that is neither a reply nor a command: the seed's `message`.
    Message {
        /// Its topic.
        topic: String,
        /// Its payload.
        payload: Bytes,
    },
    /// A device secret issued by dynamic activation (for the device, or a sub-device at
    /// its login): persist it. The client already uses it for every later connection.
    Activated {
        /// The device activated.
        device: DeviceKeys,
        /// Its secret.
        device_secret: Secret,
    },
    /// A problem that did not end the session: the seed's `error`.
    Error(ClientError),
}

/// Events a subscriber holds before it misses some: a subscriber that falls behind
/// loses events (counted in [`Events::missed`]), never responses or commands.
///
/// News that cannot be had again ([`ClientEvent::is_news`]: an issued secret, sub-devices
/// the cloud refused to log in again, offline records dropped or refused) is not lost
/// that way: when the queue is full, the oldest other event makes room for it. Only
/// when this many such events wait unread is one missed.
pub const EVENTS_PER_SUBSCRIBER: usize = 1024;

impl ClientEvent {
    /// Whether it is news that cannot be had again, kept for a subscriber that falls
    /// behind (see [`EVENTS_PER_SUBSCRIBER`]).
    pub fn is_news(&self) -> bool {
        matches!(
            self,
            ClientEvent::Activated { .. }
                | ClientEvent::Error(
                    ClientError::ReloginFailed { .. }
                        | ClientError::ActivationNotStored { .. }
                        | ClientError::OfflineDropped { .. }
                        | ClientError::OfflineRejected { .. }
                )
        )
    }
}

#[derive(Default)]
struct Queue {
    items: VecDeque<ClientEvent>,
    ended: bool,
    missed: u64,
    waker: Option<Waker>,
}

/// The client's side of a subscription.
#[derive(Clone)]
pub(crate) struct Subscriber(Arc<Mutex<Queue>>);

impl Subscriber {
    /// Queues an event; `false` once the subscription is dropped.
    pub(crate) fn push(&self, e: &ClientEvent) -> bool {
        if Arc::strong_count(&self.0) == 1 {
            return false;
        }
        let waker = {
            let mut q = lock(&self.0);
            if q.items.len() >= EVENTS_PER_SUBSCRIBER {
                // News takes the place of the oldest other event, while news is fewer
                // than the bound.
                let other = if e.is_news() { q.items.iter().position(|x| !x.is_news()) } else { None };
                match other {
                    Some(i) => {
                        q.items.remove(i);
                    }
                    None => {
                        q.missed += 1;
                        return true;
                    }
                }
                q.missed += 1;
            }
            q.items.push_back(e.clone());
            q.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// The client is closed: the stream ends once drained.
    pub(crate) fn end(&self) {
        let waker = {
            let mut q = lock(&self.0);
            q.ended = true;
            q.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A subscription to a client's events ([`DeviceClient::events`](crate::DeviceClient::events)):
/// [`recv`](Events::recv) (a future, or a blocking call with the blocking driver),
/// [`try_recv`](Events::try_recv), or a [`futures_core::Stream`]. It ends when the client
/// is closed.
pub struct Events<R> {
    queue: Arc<Mutex<Queue>>,
    _runtime: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for Events<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("missed", &self.missed()).finish_non_exhaustive()
    }
}

pub(crate) fn subscription<R>() -> (Subscriber, Events<R>) {
    let queue = Arc::new(Mutex::new(Queue::default()));
    (Subscriber(queue.clone()), Events { queue, _runtime: PhantomData })
}

impl<R: Runtime> Events<R> {
    /// The next event; `None` once the client is closed and every event was taken.
    pub fn recv(&mut self) -> R::Wait<impl Future<Output = Option<ClientEvent>> + Send + '_> {
        R::wait(std::future::poll_fn(move |cx| self.poll_event(cx)))
    }
}

impl<R> Events<R> {
    /// The next event if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<ClientEvent> {
        lock(&self.queue).items.pop_front()
    }

    /// Events this subscriber missed because it fell behind.
    pub fn missed(&self) -> u64 {
        lock(&self.queue).missed
    }

    fn poll_event(&self, cx: &mut Context<'_>) -> Poll<Option<ClientEvent>> {
        let mut q = lock(&self.queue);
        if let Some(e) = q.items.pop_front() {
            return Poll::Ready(Some(e));
        }
        if q.ended {
            return Poll::Ready(None);
        }
        q.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<R> futures_core::Stream for Events<R> {
    type Item = ClientEvent;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ClientEvent>> {
        self.poll_event(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(i: usize) -> ClientEvent {
        ClientEvent::Message { topic: format!("t/{i}"), payload: Bytes::new() }
    }

    #[test]
    fn a_subscriber_that_falls_behind_misses_messages_but_not_news() {
        let (sub, mut events) = subscription::<()>();
        for i in 0..EVENTS_PER_SUBSCRIBER + 10 {
            assert!(sub.push(&message(i)));
        }
        let refused = ClientEvent::Error(ClientError::ReloginFailed {
            devices: vec![DeviceKeys::new("pk", "sub").unwrap()],
            reason: "code 1009".into(),
        });
        sub.push(&refused);
        assert_eq!(events.missed(), 11, "ten messages past the bound, and one making room");
        let mut got = Vec::new();
        while let Some(e) = events.try_recv() {
            got.push(e);
        }
        assert_eq!(got.len(), EVENTS_PER_SUBSCRIBER);
        assert_eq!(got.last(), Some(&refused));
        // The oldest message made room for it.
        assert_eq!(got.first(), Some(&message(1)));
    }

    #[test]
    fn news_is_bounded_too() {
        let (sub, mut events) = subscription::<()>();
        let news = ClientEvent::Error(ClientError::OfflineDropped { seq: 1 });
        for _ in 0..EVENTS_PER_SUBSCRIBER + 5 {
            sub.push(&news);
        }
        assert_eq!(events.missed(), 5);
        let mut n = 0;
        while events.try_recv().is_some() {
            n += 1;
        }
        assert_eq!(n, EVENTS_PER_SUBSCRIBER);
    }
}
