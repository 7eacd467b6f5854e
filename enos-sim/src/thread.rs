//! [`SimThread`]: the local cloud on a tokio runtime of its own, for programs and tests
//! that have no tokio runtime (smol, async-std, plain threads) or want the cloud apart
//! from theirs.

use std::future::Future;

use crate::{Sim, SimBuilder};

/// A running local cloud that owns its runtime (one worker thread). It dereferences to
/// [`Sim`], whose synchronous methods (`device`, `cut`, `record`, ...) work from any
/// thread; its async ones (commands to devices) run through [`run`](SimThread::run).
/// Dropped, it stops listening and its runtime ends.
///
/// ```
/// let sim = enos_sim::SimThread::start(enos_sim::Sim::builder())?;
/// assert!(sim.tcp_url().unwrap().starts_with("tcp://127.0.0.1:"));
/// // A command to a device that is not connected, awaited without any tokio runtime.
/// let keys = enos_proto::DeviceKeys::new("demo_pk", "demo_device")?;
/// let r = sim.block_on(move |s| async move { s.invoke_service(&keys, "reset", serde_json::json!({})).await });
/// assert!(matches!(r, Err(enos_sim::CommandError::Offline(_))));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SimThread {
    sim: Sim,
    handle: tokio::runtime::Handle,
    /// Taken when dropped: shut down in the background, so that dropping it inside
    /// another runtime's task does not block that task.
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for SimThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SimThread").field(&self.sim).finish()
    }
}

impl SimThread {
    /// Starts the cloud that `builder` describes on a runtime of its own.
    ///
    /// # Errors
    ///
    /// The runtime's creation error, or the bind error of a listener.
    pub fn start(builder: SimBuilder) -> std::io::Result<SimThread> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("enos-sim")
            .enable_all()
            .build()?;
        // Started from a thread of no runtime, so that a caller inside one is fine too.
        let sim = std::thread::scope(|s| s.spawn(|| runtime.block_on(builder.start())).join())
            .map_err(|_| std::io::Error::other("the local cloud panicked while starting"))??;
        Ok(SimThread { sim, handle: runtime.handle().clone(), runtime: Some(runtime) })
    }

    /// The cloud.
    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    /// Runs `f` with the cloud on the cloud's runtime; the future it gives back can be
    /// awaited on any runtime (or none: see [`block_on`](SimThread::block_on)).
    pub fn run<F, Fut, T>(&self, f: F) -> impl Future<Output = T> + Send + 'static
    where
        F: FnOnce(Sim) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let task = self.handle.spawn(f(self.sim.clone()));
        async move {
            match task.await {
                Ok(v) => v,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("the local cloud stopped during a call: {e}"),
            }
        }
    }

    /// Runs `f` with the cloud and waits for it on this thread. Not from inside an async
    /// task: there, await [`run`](SimThread::run).
    pub fn block_on<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce(Sim) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let fut = f(self.sim.clone());
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().unwrap_or_else(|_| panic!("the local cloud stopped during a call"))
    }
}

impl std::ops::Deref for SimThread {
    type Target = Sim;
    fn deref(&self) -> &Sim {
        &self.sim
    }
}

impl Drop for SimThread {
    fn drop(&mut self) {
        self.sim.shutdown();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
