//! [`DeviceClient`] and [`GatewayClient`]: the seed's clients, over any [`Runtime`].

use std::future::Future;
use std::sync::Arc;

use enos_proto::options::{ClientOptions, Transport};
use enos_proto::{Command, Config, DeviceKeys, Operation, RequestOptions, Secret};

use crate::api::{DeviceCommand, DeviceData, Files, Integration, Ota, SubDeviceManagement};
use crate::error::{typed, Error, Response};
use crate::events::Events;
use crate::handlers::{Kind, Responder};
use crate::session::Shared;
use crate::{IntoHandler, Runtime};

/// Closes the connection when the last handle goes.
struct Handle<R: Runtime> {
    shared: Arc<Shared<R>>,
}

impl<R: Runtime> Drop for Handle<R> {
    fn drop(&mut self) {
        self.shared.close_now();
    }
}

/// A device's connection to EnOS: the seed's `DeviceClient`. Cloning gives another
/// handle to the same connection; when the last handle is dropped the connection closes.
/// A handler that keeps a handle keeps the connection alive until
/// [`close`](Self::close).
///
/// Every call that waits returns `R::Wait<..>`: with an async runtime (tokio, smol) a
/// future to `.await`, with the blocking runtime the result itself.
pub struct DeviceClient<R: Runtime> {
    handle: Arc<Handle<R>>,
}

impl<R: Runtime> Clone for DeviceClient<R> {
    fn clone(&self) -> Self {
        DeviceClient { handle: self.handle.clone() }
    }
}

impl<R: Runtime> std::fmt::Debug for DeviceClient<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceClient")
            .field("device", &self.shared().config.device)
            .field("connected", &self.connected())
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> DeviceClient<R> {
    /// A client for these options (nothing connects before [`connect`](Self::connect)).
    ///
    /// # Errors
    ///
    /// [`Error::Options`] naming the option that cannot work, and why.
    pub fn new(options: ClientOptions) -> Result<Self, Error> {
        let (config, transport) = options.build()?;
        Ok(Self::from_parts(config, transport))
    }

    /// A client from a core configuration and a transport address, for settings beyond
    /// the seed's options (queue bounds, jitter, TLS set up by hand, ...).
    pub fn from_parts(config: Config, transport: Transport) -> Self {
        Self::with_runtime(config, transport, R::default())
    }

    /// The same, with a runtime set up by hand (the blocking runtime's handler threads).
    pub fn with_runtime(config: Config, transport: Transport, runtime: R) -> Self {
        DeviceClient { handle: Arc::new(Handle { shared: Shared::new(config, transport, runtime) }) }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared<R>> {
        &self.handle.shared
    }

    /// The device's keys.
    pub fn device(&self) -> &DeviceKeys {
        &self.shared().config.device
    }

    /// Connects, and ends once the session is up: with the device secret in use (in
    /// secure mode 3, the one the cloud issued, once activation completes; later connects
    /// use it in mode 2, across [`close`](Self::close) too). After that the client
    /// reconnects by itself every `reconnect_period` until [`close`](Self::close).
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] when the first attempt fails (refused credentials, unreachable
    /// broker, TLS), [`Error::ConnectTimeout`], [`Error::AlreadyStarted`],
    /// [`Error::Closed`] when `close()` interrupts it, [`Error::Runtime`] when the
    /// connection's I/O cannot be started. After an error the client is closed.
    pub fn connect(&self) -> R::Wait<impl Future<Output = Result<Option<Secret>, Error>> + Send> {
        R::wait(self.shared().clone().connect())
    }

    /// Closes the connection: outstanding requests end with [`Error::Closed`], a
    /// DISCONNECT goes out, event streams end; it ends once the connection is gone.
    /// Closing a closed client does nothing.
    ///
    /// # Errors
    ///
    /// None today; the `Result` leaves room.
    pub fn close(&self) -> R::Wait<impl Future<Output = Result<(), Error>> + Send> {
        let shared = self.shared().clone();
        R::wait(async move {
            shared.close().await;
            Ok(())
        })
    }

    /// Whether the session is up: the seed's `connected`.
    pub fn connected(&self) -> bool {
        self.shared().is_connected()
    }

    /// Whether the session has come back after a loss: the seed's `reconnected`.
    pub fn reconnected(&self) -> bool {
        self.shared().has_reconnected()
    }

    /// What store-and-forward has done (with `ClientOptions::offline_store`): posts
    /// stored while the session was down, delivered, refused, dropped, retried.
    pub fn offline_stats(&self) -> enos_proto::OfflineStats {
        self.shared().offline_stats()
    }

    /// A new subscription to the client's events; several may exist at once. Streams end
    /// when the client is closed.
    pub fn events(&self) -> Events<R> {
        self.shared().events()
    }

    /// Sends any operation and waits for its typed response.
    ///
    /// # Errors
    ///
    /// [`Error::Submit`] when refused at once, [`Error::Request`] when it ends without a
    /// successful reply (timeout, the cloud's error code, a reply of the wrong shape),
    /// [`Error::Closed`] when the client is closed, whenever that happens.
    pub fn request<O>(
        &self,
        op: O,
        opts: RequestOptions,
    ) -> R::Wait<impl Future<Output = Result<Response<O::Data>, Error>> + Send>
    where
        O: Operation + Send + 'static,
        O::Data: Send,
    {
        let shared = self.shared().clone();
        R::wait(async move { typed::<O>(shared.call(op, opts).await?) })
    }

    /// Device data: tags, attributes, measure points, events, raw data (the seed's
    /// `deviceData`).
    pub fn device_data(&self) -> DeviceData<'_, R> {
        DeviceData::new(self)
    }

    /// Command handlers (the seed's `deviceCommand`).
    pub fn device_command(&self) -> DeviceCommand<'_, R> {
        DeviceCommand::new(self)
    }

    /// OTA and the thing model (what the vendor's Java and Python SDKs add).
    pub fn ota(&self) -> Ota<'_, R> {
        Ota::new(self)
    }

    /// Stored files (the HTTP transport only).
    pub fn files(&self) -> Files<'_, R> {
        Files::new(self)
    }

    /// The message-integration channel, for a client made with
    /// `ClientOptions::integration_channel` (the vendor's newest SDKs).
    pub fn integration(&self) -> Integration<'_, R> {
        Integration::new(self)
    }

    pub(crate) fn on<F, Out>(&self, kind: Kind, device: Option<DeviceKeys>, f: F)
    where
        F: Fn(Command, Responder) -> Out + Send + Sync + 'static,
        R: IntoHandler<Out>,
    {
        self.shared().set_handler(kind, device, R::handler(f));
    }
}

/// A gateway's connection: everything a [`DeviceClient`] does, plus sub-device management
/// (the seed's `GatewayClient`).
pub struct GatewayClient<R: Runtime> {
    device: DeviceClient<R>,
}

impl<R: Runtime> Clone for GatewayClient<R> {
    fn clone(&self) -> Self {
        GatewayClient { device: self.device.clone() }
    }
}

impl<R: Runtime> std::fmt::Debug for GatewayClient<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("GatewayClient").field(&self.device).finish()
    }
}

impl<R: Runtime> std::ops::Deref for GatewayClient<R> {
    type Target = DeviceClient<R>;
    fn deref(&self) -> &DeviceClient<R> {
        &self.device
    }
}

impl<R: Runtime> GatewayClient<R> {
    /// A gateway client for these options.
    ///
    /// # Errors
    ///
    /// [`Error::Options`].
    pub fn new(options: ClientOptions) -> Result<Self, Error> {
        Ok(GatewayClient { device: DeviceClient::new(options)? })
    }

    /// A gateway client from a core configuration and a transport address.
    pub fn from_parts(config: Config, transport: Transport) -> Self {
        GatewayClient { device: DeviceClient::from_parts(config, transport) }
    }

    /// The seed's `subDeviceManagement`.
    pub fn sub_device_management(&self) -> SubDeviceManagement<'_, R> {
        SubDeviceManagement::new(&self.device)
    }
}
