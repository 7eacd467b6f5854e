//! Time as the core sees it: [`Now`], and the table of protocol timers.

use std::time::{Duration, Instant};

/// The time of an input: a monotonic instant for every deadline, and the wall clock in
/// Unix milliseconds for what EnOS wants stamped (CONNECT and sub-device signatures,
/// measure point times).
///
/// The core never reads a clock itself; drivers call [`Now::system`] at each input, tests
/// build `Now` values by hand and move time as fast as they like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for timers. The core ignores any step backwards.
    pub instant: Instant,
    /// Wall-clock time in milliseconds since the Unix epoch. It may jump freely.
    pub unix_ms: u64,
}

impl Now {
    /// A `Now` from its two parts.
    pub fn new(instant: Instant, unix_ms: u64) -> Self {
        Now { instant, unix_ms }
    }

    /// Reads the system's monotonic and wall clocks. The only place in this crate that
    /// reads a clock; drivers and examples use it, the core never does.
    #[allow(clippy::disallowed_methods)]
    pub fn system() -> Self {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Now { instant: Instant::now(), unix_ms }
    }

    /// This time moved forward by `d` on both clocks (for tests and harnesses).
    pub fn advanced(self, d: Duration) -> Self {
        Now {
            instant: self.instant + d,
            unix_ms: self.unix_ms.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

/// The protocol's timers. Request deadlines are kept per request in the pending table;
/// the earliest of them is one more wake-up (see `Client::poll_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// The transport and the CONNACK must arrive by then.
    Connect = 0,
    /// Send a PINGREQ when nothing has been sent since `keep_alive`.
    KeepAlive = 1,
    /// A PINGRESP must arrive by then, or the peer is dead.
    PingResponse = 2,
    /// Open a new transport at this time (reconnect back-off).
    Reconnect = 3,
    /// Log in again the sub-devices a re-login did not confirm.
    Relogin = 4,
    /// A SUBACK must arrive by then (re-armed by each SUBACK while others are due).
    Suback = 5,
}

const TIMER_COUNT: usize = 6;

/// One optional deadline per [`Timer`].
#[derive(Debug, Clone, Default)]
pub(crate) struct TimerTable {
    at: [Option<Instant>; TIMER_COUNT],
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.at[timer as usize] = Some(at);
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.at[timer as usize] = None;
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.at[timer as usize]
    }

    pub(crate) fn clear(&mut self) {
        self.at = [None; TIMER_COUNT];
    }

    /// The earliest armed deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// Disarms and returns the timers due at `now`, in table order.
    pub(crate) fn expired(&mut self, now: Instant) -> impl Iterator<Item = Timer> {
        const ALL: [Timer; TIMER_COUNT] =
            [Timer::Connect, Timer::KeepAlive, Timer::PingResponse, Timer::Reconnect, Timer::Relogin, Timer::Suback];
        let mut due = [None; TIMER_COUNT];
        for (slot, timer) in due.iter_mut().zip(ALL) {
            if matches!(self.at[timer as usize], Some(at) if at <= now) {
                self.at[timer as usize] = None;
                *slot = Some(timer);
            }
        }
        due.into_iter().flatten()
    }
}
