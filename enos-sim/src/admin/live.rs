//! `GET /live`: a stream of server-sent events that tells the web console when something
//! changed, so that it fetches again what it shows.
//!
//! The stream says `event: change` with the cloud's activity counter ([`Sim::activity`])
//! at most four times a second, only when it grew, and a comment every 15 s to keep the
//! connection open. At most [`MAX_LIVE`] streams are open at once; past that a request is
//! answered 503.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Either;
use hyper::body::Frame;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::Response;
use tokio::sync::mpsc;

use super::Body;
use crate::Sim;

/// Live streams open at once, at most.
pub const MAX_LIVE: usize = 16;
/// How often the activity counter is read.
const TICK: Duration = Duration::from_millis(250);
/// How long a stream may stay silent before a comment keeps it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The body of a live response: what the stream's task sends.
pub struct Stream {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for Stream {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// Counts a stream open while it lives.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Opens a live stream; `Err` with the status to answer when too many are open.
pub(super) fn open(sim: &Sim, live: &Arc<AtomicUsize>) -> Result<Response<Body>, (u16, &'static str)> {
    if live.fetch_add(1, Ordering::Relaxed) >= MAX_LIVE {
        live.fetch_sub(1, Ordering::Relaxed);
        return Err((503, "too many live streams open"));
    }
    let open = Open(live.clone());
    let (tx, rx) = mpsc::channel(2);
    let sim = sim.clone();
    tokio::spawn(async move {
        let _open = open;
        let mut seen = None;
        let mut silent = Duration::ZERO;
        // The stream ends when the page goes: its body, and so `rx`, is dropped.
        loop {
            let now = sim.activity();
            let message = if seen != Some(now) {
                seen = Some(now);
                silent = Duration::ZERO;
                Some(format!("event: change\ndata: {{\"activity\":{now}}}\n\n"))
            } else if silent >= KEEP_ALIVE {
                silent = Duration::ZERO;
                Some(": still here\n\n".to_owned())
            } else {
                None
            };
            if let Some(m) = message {
                if tx.send(Bytes::from(m)).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(TICK) => silent += TICK,
                () = tx.closed() => return,
            }
        }
    });
    let mut r = Response::new(Either::Right(Stream { rx }));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}
