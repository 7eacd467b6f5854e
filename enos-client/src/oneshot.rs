//! One value from one place to one waiter, on any runtime: the waiter is a future that
//! only keeps a [`Waker`], so tokio, smol and a thread parked in `block_on` all wait on
//! it alike.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::lock;

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    /// The sender is gone without a value.
    dropped: bool,
}

/// The sending half: [`send`](Sender::send) once; dropping it unsent ends the wait with
/// `None`.
pub(crate) struct Sender<T> {
    slot: Option<Arc<Mutex<Slot<T>>>>,
}

/// The waiting half: a future of `Some(value)`, or `None` when the sender was dropped.
pub(crate) struct Receiver<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Mutex::new(Slot { value: None, waker: None, dropped: false }));
    (Sender { slot: Some(slot.clone()) }, Receiver { slot })
}

impl<T> Sender<T> {
    /// Hands the value over and wakes the waiter.
    pub(crate) fn send(mut self, value: T) {
        if let Some(slot) = self.slot.take() {
            let waker = {
                let mut s = lock(&slot);
                s.value = Some(value);
                s.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let waker = {
                let mut s = lock(&slot);
                s.dropped = true;
                s.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut s = lock(&self.slot);
        if let Some(v) = s.value.take() {
            return Poll::Ready(Some(v));
        }
        if s.dropped {
            return Poll::Ready(None);
        }
        match &mut s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            other => *other = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_sent_before_or_after_the_wait_arrives_once() {
        let (tx, rx) = channel();
        tx.send(7);
        assert_eq!(futures_lite::future::block_on(rx), Some(7));
        let (tx, rx) = channel();
        let t = std::thread::spawn(move || futures_lite::future::block_on(rx));
        std::thread::sleep(std::time::Duration::from_millis(20));
        tx.send("late");
        assert_eq!(t.join().unwrap(), Some("late"));
    }

    #[test]
    fn a_dropped_sender_ends_the_wait_with_none() {
        let (tx, rx) = channel::<u8>();
        let t = std::thread::spawn(move || futures_lite::future::block_on(rx));
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(tx);
        assert_eq!(t.join().unwrap(), None);
    }
}
