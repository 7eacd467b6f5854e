//! The async drivers, written once: an [`AsyncRuntime`] (how to spawn a task, and its
//! [`AsyncNet`]: a TCP dial, reads and writes that register a waker, a timer) is a
//! [`Runtime`] whose calls are futures, whose handlers are tasks, and whose connection is
//! a task running this module's loop. The tokio and smol drivers are that trait and a few
//! lines each of `AsyncNet`.
//!
//! One future per connection: each poll drains the core through the [`Link`], then polls
//! the socket (writes first, so a reply's PUBACK leaves before more is read), the dial
//! and the timer, all with the same waker. Any input goes into the core at once; the
//! loop never waits on application code.

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use enos_proto::options::Transport;
use enos_proto::CloseCause;

use enos_proto::Command;

use crate::handlers::{async_handler, handle_async, AsyncHandler, Responder};
use crate::session::{Closing, Link, Todo, WriteQueue, MAX_SLICES, WRITE_BACKLOG_HIGH};
use crate::{Error, IntoHandler, Runtime};

/// An async runtime, as an async driver gives it: where tasks run, and its sockets and
/// timer. Every `AsyncRuntime` is a [`Runtime`]: a call returns its future, a command
/// handler is a closure returning a future (run as a task of its own, its panic contained
/// and answered 1102), and a connection is a task running [`run`].
pub trait AsyncRuntime: Default + Send + Sync + 'static {
    /// The runtime's sockets and timer.
    type Net: AsyncNet;
    /// Runs `task` on the runtime.
    ///
    /// # Errors
    ///
    /// [`Error::Runtime`] when there is no runtime to run it on.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> Result<(), Error>;
}

impl<T: AsyncRuntime> Runtime for T {
    type Wait<F: Future> = F;
    fn wait<F: Future>(f: F) -> F {
        f
    }
    fn into_future<F>(f: F) -> impl Future<Output = F::Output> + Send
    where
        F: Future + Send,
        F::Output: Send,
    {
        f
    }

    type Handler = AsyncHandler;
    fn run_handler(&self, handler: &AsyncHandler, command: Command, responder: Responder) {
        // Not spawned, the handler's future is dropped and its responder answers 1102.
        if let Err(e) = self.spawn(handle_async(handler, command, responder)) {
            tracing::warn!(error = %e, "a command handler could not be started");
        }
    }

    fn start(&self, link: Link<Self>) -> Result<(), Error> {
        self.spawn(run::<T, T::Net>(link))
    }
}

impl<T: AsyncRuntime, Fut: Future<Output = ()> + Send + 'static> IntoHandler<Fut> for T {
    fn handler<F>(f: F) -> AsyncHandler
    where
        F: Fn(Command, Responder) -> Fut + Send + Sync + 'static,
    {
        async_handler(f)
    }
}

/// What an async runtime gives the connection loop.
pub trait AsyncNet: Send + 'static {
    /// A connected TCP socket.
    type Stream: Send + Unpin + 'static;
    /// A dial in progress.
    type Connecting: Future<Output = io::Result<Self::Stream>> + Send + Unpin + 'static;
    /// A timer that can be moved.
    type Timer: Send + Unpin + 'static;

    /// Dials the transport (with `TCP_NODELAY`: requests are small and latency counts).
    fn connect(transport: &Transport) -> Self::Connecting;
    /// A timer, not armed yet (far in the future).
    fn timer() -> Self::Timer;
    /// Moves the timer to `at`.
    fn set_timer(timer: &mut Self::Timer, at: Instant);
    /// Whether the timer has fired (registering the waker when not).
    fn poll_timer(timer: &mut Self::Timer, cx: &mut Context<'_>) -> Poll<()>;
    /// Reads what the socket has.
    fn poll_read(stream: &mut Self::Stream, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;
    /// Writes from these buffers in one system call.
    fn poll_write_vectored(
        stream: &mut Self::Stream,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>>;
    /// Shuts the write side down.
    fn poll_shutdown(stream: &mut Self::Stream, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// How long the last bytes (a DISCONNECT) may take after `close()`.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

/// Steps taken in one poll before the loop lets other tasks run.
const BUDGET: usize = 32;

thread_local! {
    /// One read buffer per thread, not per connection: an idle device holds none.
    static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0u8; 64 * 1024]);
}

/// Runs a client's connection until the client is closed: the future a driver spawns.
pub async fn run<R: Runtime, N: AsyncNet>(link: Link<R>) {
    let mut conn = Conn::<N> {
        stream: None,
        epoch: 0,
        connecting: None,
        wq: WriteQueue::default(),
        timer: N::timer(),
        armed: None,
        closing: None,
        finished: false,
        yielded: false,
    };
    std::future::poll_fn(|cx| conn.poll(cx, &link)).await;
}

struct Conn<N: AsyncNet> {
    stream: Option<N::Stream>,
    /// The transport's epoch, for its reports.
    epoch: u64,
    connecting: Option<N::Connecting>,
    wq: WriteQueue,
    timer: N::Timer,
    /// When the timer is set to fire; `None` when it has fired or was never set.
    armed: Option<Instant>,
    /// Flushing after `close()`, until this instant at most.
    closing: Option<Instant>,
    finished: bool,
    /// The loop let the application run once after handing it something.
    yielded: bool,
}

enum Step {
    /// Something happened: drain the core again.
    Progress,
    /// Every source is registered with the waker.
    Idle,
}

impl<N: AsyncNet> Conn<N> {
    fn poll<R: Runtime>(&mut self, cx: &mut Context<'_>, link: &Link<R>) -> Poll<()> {
        for _ in 0..BUDGET {
            let todo = link.poll(cx.waker(), &mut self.wq);
            self.act(cx, todo, link);
            // What the application does with a reply or a command it was just given (the
            // next request, the answer) usually follows at once: let it run before
            // writing, so that both leave in one segment and the peer wakes once.
            if todo.handed_over && !self.wq.is_empty() && !self.yielded {
                self.yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.yielded = false;
            match self.step(cx, link) {
                Step::Progress => continue,
                Step::Idle if self.finished && self.stream.is_none() && self.closing.is_none() => {
                    return Poll::Ready(())
                }
                Step::Idle => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn act<R: Runtime>(&mut self, cx: &mut Context<'_>, todo: Todo, link: &Link<R>) {
        match todo.close {
            Some(Closing::Flush) if self.stream.is_some() => {
                let deadline = Instant::now() + CLOSE_FLUSH;
                self.closing = Some(deadline);
                self.arm(deadline);
            }
            Some(_) => {
                // Only what the socket takes at once (a TLS alert): a lost peer gets no more.
                if let Some(s) = &mut self.stream {
                    let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                    let n = self.wq.slices(&mut slices);
                    let _ = N::poll_write_vectored(s, cx, &slices[..n]);
                }
                self.stream = None;
                self.wq.clear();
            }
            None => {}
        }
        if todo.close.is_some() {
            self.connecting = None;
        }
        if let Some(epoch) = todo.open {
            self.epoch = epoch;
            self.connecting = Some(N::connect(link.transport()));
        }
        self.finished = todo.finished;
        if let Some(at) = todo.wake_at {
            self.arm(at);
        }
    }

    /// Sets the timer when `at` comes before what it is set to (a later deadline needs
    /// no timer work: firing early is harmless, the core acts only on what is due and its
    /// next deadline re-arms the timer).
    fn arm(&mut self, at: Instant) {
        if self.armed.is_none_or(|a| at < a) {
            N::set_timer(&mut self.timer, at);
            self.armed = Some(at);
        }
    }

    fn step<R: Runtime>(&mut self, cx: &mut Context<'_>, link: &Link<R>) -> Step {
        if let Some(s) = &mut self.stream {
            if !self.wq.is_empty() {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let n = self.wq.slices(&mut slices);
                match N::poll_write_vectored(s, cx, &slices[..n]) {
                    Poll::Ready(Ok(0)) => return self.lost(link, io::Error::from(io::ErrorKind::WriteZero).into()),
                    Poll::Ready(Ok(k)) => {
                        self.wq.advance(k);
                        link.written(self.epoch, &mut self.wq);
                        return Step::Progress;
                    }
                    Poll::Ready(Err(e)) => return self.lost(link, e.into()),
                    Poll::Pending => {}
                }
            }
        }
        if let Some(deadline) = self.closing {
            if self.wq.is_empty() || Instant::now() >= deadline {
                let shut = match &mut self.stream {
                    Some(s) => N::poll_shutdown(s, cx).is_ready(),
                    None => true,
                };
                if shut || Instant::now() >= deadline {
                    self.stream = None;
                    self.closing = None;
                    self.wq.clear();
                    return Step::Progress;
                }
            }
        } else if let Some(s) = self.stream.as_mut().filter(|_| self.wq.bytes() < WRITE_BACKLOG_HIGH) {
            // Nothing is read while the peer does not take what is already owed to it
            // (acknowledgements, replies): a peer that sends and never reads cannot grow
            // the write queue. The write's readiness wakes this loop again.
            let read = READ_BUF.with(|b| {
                let mut b = b.borrow_mut();
                match N::poll_read(s, cx, &mut b) {
                    Poll::Ready(Ok(0)) => Some(Err(CloseCause::Eof)),
                    Poll::Ready(Ok(n)) => {
                        link.input(self.epoch, &b[..n]);
                        Some(Ok(()))
                    }
                    Poll::Ready(Err(e)) => Some(Err(e.into())),
                    Poll::Pending => None,
                }
            });
            match read {
                Some(Ok(())) => return Step::Progress,
                Some(Err(cause)) => return self.lost(link, cause),
                None => {}
            }
        }
        if let Some(c) = &mut self.connecting {
            if let Poll::Ready(r) = Pin::new(c).poll(cx) {
                self.connecting = None;
                match r {
                    Ok(s) => {
                        self.stream = Some(s);
                        link.connected(self.epoch);
                    }
                    Err(e) => {
                        link.closed(self.epoch, e.into());
                    }
                }
                return Step::Progress;
            }
        }
        if self.armed.is_some() && N::poll_timer(&mut self.timer, cx).is_ready() {
            self.armed = None;
            link.timeout();
            return Step::Progress;
        }
        Step::Idle
    }

    fn lost<R: Runtime>(&mut self, link: &Link<R>, cause: CloseCause) -> Step {
        self.stream = None;
        self.wq.clear();
        self.closing = None;
        link.closed(self.epoch, cause);
        Step::Progress
    }
}
