//! The named methods of the seed (`deviceData`, `deviceCommand`, `subDeviceManagement`)
//! and what the vendor's Java and Python SDKs add (`ota`), each a thin call of
//! [`DeviceClient::request`] with its typed operation, or a handler registration.

use std::collections::BTreeMap;
use std::future::Future;

use bytes::Bytes;
use enos_proto::http::{
    ByteRange, FileCategory, FileDelete, FileDownload, FileDownloadUrl, FilePart, MeasurepointFilePost, UrlGet,
};
use enos_proto::ops::{
    AttributeDelete, AttributeQuery, AttributeUpdate, BatchLoginResult, ConnectionStatePost, EventPost, Firmware,
    IntegrationPost, IntegrationRawUp, LogPost, LoginResult, MeasurepointBatchPost, MeasurepointBatchResume,
    MeasurepointPost, MeasurepointResume, NetworkStatusReport, OtaGetVersion, OtaInform, OtaProgress, RawUp,
    RegisteredDevice, SubDeviceBatchLogin, SubDeviceLogin, SubDeviceLogout, SubDeviceRegister, SubDeviceRegistration,
    TagDelete, TagQuery, TagUpdate, TopoAdd, TopoDelete, TopoEntry, TopoGet, TslTemplate, TslTemplateGet,
};
use enos_proto::{Command, DeviceKeys, RequestError, RequestOptions, SubDeviceInfo};
use serde::Serialize;

use crate::handlers::{Kind, Responder};
use crate::{DeviceClient, Error, IntoHandler, Response, Runtime};

/// How a named call ends: the typed response, or why not.
pub type Outcome<T> = Result<Response<T>, Error>;

/// The seed's `deviceData`: every method takes [`RequestOptions`] (`target` for a
/// sub-device — the seed's `deviceInfo` — `qos`, `need_reply`, `timeout`).
pub struct DeviceData<'a, R: Runtime> {
    c: &'a DeviceClient<R>,
}

impl<R: Runtime> Clone for DeviceData<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R: Runtime> Copy for DeviceData<'_, R> {}

impl<R: Runtime> std::fmt::Debug for DeviceData<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceData").field("device", self.c.device()).finish()
    }
}

impl<'a, R: Runtime> DeviceData<'a, R> {
    pub(crate) fn new(c: &'a DeviceClient<R>) -> Self {
        DeviceData { c }
    }

    /// `queryTag`: the tags asked for (all when empty).
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn query_tag<S: Into<String>>(
        &self,
        tags: impl IntoIterator<Item = S>,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<BTreeMap<String, String>>> + Send> {
        self.c.request(TagQuery::new(tags), o)
    }

    /// `updateTag`: upsert tags.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn update_tag<K: Into<String>, V: Into<String>>(
        &self,
        tags: impl IntoIterator<Item = (K, V)>,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<()>> + Send> {
        self.c.request(TagUpdate::new(tags), o)
    }

    /// `deleteTag`.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn delete_tag<S: Into<String>>(
        &self,
        tags: impl IntoIterator<Item = S>,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<()>> + Send> {
        self.c.request(TagDelete::new(tags), o)
    }

    /// `queryAttribute`: attribute values (all that have one when empty).
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn query_attribute<S: Into<String>>(
        &self,
        ids: impl IntoIterator<Item = S>,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<serde_json::Map<String, serde_json::Value>>> + Send> {
        self.c.request(AttributeQuery::new(ids), o)
    }

    /// `updateAttribute`: any value that serializes to `{id: value}`.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn update_attribute<A: Serialize + Send + 'static>(
        &self,
        attributes: A,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<()>> + Send> {
        self.c.request(AttributeUpdate::new(attributes), o)
    }

    /// `deleteAttribute`.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn delete_attribute<S: Into<String>>(
        &self,
        ids: impl IntoIterator<Item = S>,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<()>> + Send> {
        self.c.request(AttributeDelete::new(ids), o)
    }

    /// `postMeasurepoint`: any value that serializes to `{id: value}`, stamped now.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn post_measurepoint<P: Serialize + Send + 'static>(
        &self,
        points: P,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<()>> + Send> {
        self.c.request(MeasurepointPost::new(points), o)
    }

    /// `postMeasurepoint` with the points' time in epoch milliseconds.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn post_measurepoint_at<P: Serialize + Send + 'static>(
        &self,
        points: P,
        unix_ms: u64,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<()>> + Send> {
        self.c.request(MeasurepointPost::at(points, unix_ms), o)
    }

    /// `resumeMeasurepoint`: points recorded while offline, at their time.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn resume_measurepoint<P: Serialize + Send + 'static>(
        &self,
        points: P,
        unix_ms: u64,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<()>> + Send> {
        self.c.request(MeasurepointResume::at(points, unix_ms), o)
    }

    /// `batchPostMeasurepoint`: entries of several devices or times (build it with
    /// `MeasurepointBatchPost::new(..).allow_offline_sub_device(..)`).
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn batch_post_measurepoint<P: Serialize + Send + 'static>(
        &self,
        batch: MeasurepointBatchPost<P>,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<()>> + Send> {
        self.c.request(batch, o)
    }

    /// `batchResumeMeasurepoint`.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn batch_resume_measurepoint<P: Serialize + Send + 'static>(
        &self,
        batch: MeasurepointBatchResume<P>,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<()>> + Send> {
        self.c.request(batch, o)
    }

    /// `postEvent`: event `event_id` with any value that serializes to its parameters.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn post_event<E: Serialize + Send + 'static>(
        &self,
        event_id: &str,
        params: E,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<()>> + Send> {
        self.c.request(EventPost::new(event_id, params), o)
    }

    /// Device log (the vendor's newest Java SDK): one entry, built with [`LogPost`].
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn post_log(&self, log: LogPost, o: RequestOptions) -> R::Wait<impl Future<Output = Outcome<()>> + Send> {
        self.c.request(log, o)
    }

    /// Network status (the vendor's newest Java SDK): the state of the device's link.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn report_network_status(
        &self,
        report: NetworkStatusReport,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<()>> + Send> {
        self.c.request(report, o)
    }

    /// Connection state (the vendor's newest Java SDK): the state of the nodes behind the
    /// device, a full snapshot or an update.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request); an update with relations,
    /// or a node without an id, is refused before it is sent.
    pub fn post_connection_state(
        &self,
        state: ConnectionStatePost,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<()>> + Send> {
        self.c.request(state, o)
    }

    /// `upRawModel`: raw bytes up; the reply is the cloud's raw bytes.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn up_raw_model(
        &self,
        payload: impl Into<Bytes>,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<Bytes>> + Send> {
        self.c.request(RawUp::new(payload), o)
    }
}

/// The seed's `deviceCommand`: handlers for commands from the cloud. `device` scopes a
/// handler to one sub-device (the seed's `deviceInfo`); `None` takes the command for any
/// device of the connection. A handler is a closure of the command and its [`Responder`]:
/// with the async drivers it returns a future, run as a task of its own; with the blocking
/// driver it runs on one of the client's handler threads. It answers through the
/// `Responder` (1102 when it returns without answering or panics); a command without a
/// handler is answered 1101. A later registration for the same command and device
/// replaces the earlier one.
pub struct DeviceCommand<'a, R: Runtime> {
    c: &'a DeviceClient<R>,
}

impl<R: Runtime> Clone for DeviceCommand<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R: Runtime> Copy for DeviceCommand<'_, R> {}

impl<R: Runtime> std::fmt::Debug for DeviceCommand<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCommand").field("device", self.c.device()).finish()
    }
}

impl<'a, R: Runtime> DeviceCommand<'a, R> {
    pub(crate) fn new(c: &'a DeviceClient<R>) -> Self {
        DeviceCommand { c }
    }

    /// `onInvokeService`: service `service_id` (`"*"` for every service without a handler of
    /// its own).
    pub fn on_invoke_service<F, Out>(&self, service_id: &str, device: Option<DeviceKeys>, f: F)
    where
        F: Fn(Command, Responder) -> Out + Send + Sync + 'static,
        R: IntoHandler<Out>,
    {
        let id = (service_id != "*").then(|| service_id.to_owned());
        self.c.on(Kind::Service(id), device, f);
    }

    /// `onSetMeasurepoint`.
    pub fn on_set_measurepoint<F, Out>(&self, device: Option<DeviceKeys>, f: F)
    where
        F: Fn(Command, Responder) -> Out + Send + Sync + 'static,
        R: IntoHandler<Out>,
    {
        self.c.on(Kind::SetMeasurepoints, device, f);
    }

    /// Measure point get (Java and Python SDKs): answer `{point: value}`.
    pub fn on_get_measurepoint<F, Out>(&self, device: Option<DeviceKeys>, f: F)
    where
        F: Fn(Command, Responder) -> Out + Send + Sync + 'static,
        R: IntoHandler<Out>,
    {
        self.c.on(Kind::GetMeasurepoints, device, f);
    }

    /// Raw down: answer with [`Responder::raw`].
    pub fn on_down_raw_model<F, Out>(&self, device: Option<DeviceKeys>, f: F)
    where
        F: Fn(Command, Responder) -> Out + Send + Sync + 'static,
        R: IntoHandler<Out>,
    {
        self.c.on(Kind::RawDown, device, f);
    }

    /// OTA upgrade push.
    pub fn on_ota_upgrade<F, Out>(&self, device: Option<DeviceKeys>, f: F)
    where
        F: Fn(Command, Responder) -> Out + Send + Sync + 'static,
        R: IntoHandler<Out>,
    {
        self.c.on(Kind::OtaUpgrade, device, f);
    }

    /// `thing.enable` / `thing.disable` / `thing.delete` for the device itself.
    pub fn on_device_state<F, Out>(&self, f: F)
    where
        F: Fn(Command, Responder) -> Out + Send + Sync + 'static,
        R: IntoHandler<Out>,
    {
        self.c.on(Kind::Device, None, f);
    }

    /// Traffic control (the vendor's newest Java SDK): the cloud asks the device to limit
    /// its traffic. Its `method` and `params` come as sent; no source says what they hold
    /// or what the device must do. Without a handler it is answered 200.
    pub fn on_traffic_control<F, Out>(&self, device: Option<DeviceKeys>, f: F)
    where
        F: Fn(Command, Responder) -> Out + Send + Sync + 'static,
        R: IntoHandler<Out>,
    {
        self.c.on(Kind::TrafficControl, device, f);
    }
}

/// OTA and the thing model.
pub struct Ota<'a, R: Runtime> {
    c: &'a DeviceClient<R>,
}

impl<R: Runtime> Clone for Ota<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R: Runtime> Copy for Ota<'_, R> {}

impl<R: Runtime> std::fmt::Debug for Ota<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ota").field("device", self.c.device()).finish()
    }
}

impl<'a, R: Runtime> Ota<'a, R> {
    pub(crate) fn new(c: &'a DeviceClient<R>) -> Self {
        Ota { c }
    }

    /// Reports the running firmware version.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn report_version(
        &self,
        version: &str,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<()>> + Send> {
        self.c.request(OtaInform::new(version), o)
    }

    /// Downloads the firmware of an upgrade command to `path` and checks it as its bytes
    /// arrive: its digest (`signMethod` md5, sha1 or sha256, compared in any case) and its
    /// size (`fileSize`, when above zero). The bytes go to `path` + `.part`, which is
    /// renamed to `path` only once the check passed: a failed download or check leaves
    /// nothing at `path` (and removes the part file). Progress goes to `progress` (bytes,
    /// total when known) after each piece, and to the cloud as `ota.device.progress`
    /// (steps 20, 40, 60 and 80 while downloading; `-2` when the download fails, `-3` when
    /// the check fails). Installing, and reporting the new version, is the application's.
    ///
    /// A `fileUrl` of the cloud's storage (`enos-connect://...`) is fetched with the HTTP
    /// transport's file download (category `ota`); a plain `http://` or `https://` URL with
    /// plain GETs to its host (spec C15: so a device on MQTT gets its firmware too; over
    /// TLS with the client's own CA). Either way [`DOWNLOAD_CHUNK`] bytes per exchange.
    ///
    /// # Errors
    ///
    /// [`Error::Firmware`] for a failed check, an unsupported sign method, or an
    /// `https://` URL on a client with no CA,
    /// [`Error::Write`] when `path` cannot be written, or the download's error.
    pub fn download_firmware<'p>(
        &self,
        firmware: &Firmware,
        path: &'p std::path::Path,
        mut progress: impl FnMut(u64, Option<u64>) + Send + 'p,
    ) -> R::Wait<impl Future<Output = Result<u64, Error>> + Send + 'p> {
        let shared = self.c.shared().clone();
        let firmware = firmware.clone();
        R::wait(async move {
            let report = |step: &str, desc: &str| OtaProgress::new(step, desc);
            let check = firmware.check().map_err(Error::Firmware)?;
            // A plain URL is a plain GET to its host (spec C15); anything else is a file
            // of the cloud's storage.
            let plain = plain_url(&shared, &firmware.file_url)?;
            let part = std::path::PathBuf::from(format!("{}.part", path.display()));
            let write_error =
                |e: std::io::Error| Error::Write { what: part.display().to_string(), reason: e.to_string() };
            let file = std::fs::File::create(&part).map_err(write_error)?;
            let mut tee = CheckedWriter { file, check };
            let mut reported = 0u64;
            let mut on_piece = |got: u64, total: Option<u64>| {
                progress(got, total);
                let total = total.filter(|t| *t > 0)?;
                // A fifth of the way for each quarter downloaded: 20, 40, 60, 80 (installing
                // and 100 are the application's).
                let quarter = (got * 4 / total).min(4);
                (quarter > reported).then(|| {
                    reported = quarter;
                    report(&(quarter * 20).to_string(), "downloading")
                })
            };
            let url = &firmware.file_url;
            let got = match &plain {
                None => {
                    let make =
                        |range| FileDownload { uri: url.clone(), category: FileCategory::Ota, range: Some(range) };
                    download_into(&shared, &shared, url, make, &mut tee, &mut on_piece).await
                }
                Some((side, path)) => {
                    let got = match side.clone().connect().await {
                        Ok(_) => {
                            let make = |range| UrlGet { path: path.clone(), range: Some(range) };
                            download_into(side, &shared, url, make, &mut tee, &mut on_piece).await
                        }
                        Err(e) => Err(e),
                    };
                    side.clone().close().await;
                    got
                }
            };
            let CheckedWriter { file, check } = tee;
            let outcome = match got {
                Err(e) => Err((e, "-2", "download failed")),
                Ok(n) => match check.finish() {
                    Err(e) => Err((Error::Firmware(e), "-3", "verification failed")),
                    Ok(()) => file.sync_all().and_then(|()| std::fs::rename(&part, path)).map(|()| n).map_err(|e| {
                        (Error::Write { what: path.display().to_string(), reason: e.to_string() }, "-4", "write failed")
                    }),
                },
            };
            match outcome {
                Ok(n) => Ok(n),
                Err((e, step, desc)) => {
                    let _ = std::fs::remove_file(&part);
                    let _ = shared.call(report(step, desc), RequestOptions::new()).await;
                    Err(e)
                }
            }
        })
    }

    /// Reports an upgrade's progress (`"0"`..`"100"`, or a negative failure step).
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn report_progress(
        &self,
        step: &str,
        desc: &str,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<()>> + Send> {
        self.c.request(OtaProgress::new(step, desc), o)
    }

    /// The firmwares available to the device.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn get_version(&self, o: RequestOptions) -> R::Wait<impl Future<Output = Outcome<Vec<Firmware>>> + Send> {
        self.c.request(OtaGetVersion {}, o)
    }

    /// The product's thing model.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn get_tsl_template(&self, o: RequestOptions) -> R::Wait<impl Future<Output = Outcome<TslTemplate>> + Send> {
        self.c.request(TslTemplateGet {}, o)
    }
}

/// The seed's `subDeviceManagement`.
pub struct SubDeviceManagement<'a, R: Runtime> {
    c: &'a DeviceClient<R>,
}

impl<R: Runtime> Clone for SubDeviceManagement<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R: Runtime> Copy for SubDeviceManagement<'_, R> {}

impl<R: Runtime> std::fmt::Debug for SubDeviceManagement<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubDeviceManagement").field("device", self.c.device()).finish()
    }
}

impl<'a, R: Runtime> SubDeviceManagement<'a, R> {
    pub(crate) fn new(c: &'a DeviceClient<R>) -> Self {
        SubDeviceManagement { c }
    }

    /// `registerDevice`: at most 1,000; the reply gives each device's key and secret.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn register_device(
        &self,
        devices: Vec<SubDeviceRegistration>,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<Vec<RegisteredDevice>>> + Send> {
        self.c.request(SubDeviceRegister::new(devices), o)
    }

    /// `getTopo`: the gateway's sub-devices.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn get_topo(&self, o: RequestOptions) -> R::Wait<impl Future<Output = Outcome<Vec<TopoEntry>>> + Send> {
        self.c.request(TopoGet, o)
    }

    /// `addTopo`: each sub-device signed with its secret.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn add_topo(
        &self,
        devices: Vec<SubDeviceInfo>,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<()>> + Send> {
        self.c.request(TopoAdd::new(devices), o)
    }

    /// `deleteTopo`.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn delete_topo(
        &self,
        devices: Vec<DeviceKeys>,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<()>> + Send> {
        self.c.request(TopoDelete::new(devices), o)
    }

    /// `loginSubDevice`: logged in again by the client after every reconnect.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn login_sub_device(
        &self,
        device: SubDeviceInfo,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<LoginResult>> + Send> {
        self.c.request(SubDeviceLogin::new(device), o)
    }

    /// `batchLoginSubDevice`: the result lists who is in and who failed (also when the
    /// cloud answers 723 for a partial failure).
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn batch_login_sub_device(
        &self,
        devices: Vec<SubDeviceInfo>,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<BatchLoginResult>> + Send> {
        self.c.request(SubDeviceBatchLogin::new(devices), o)
    }

    /// `logoutSubDevice`.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn logout_sub_device(
        &self,
        device: DeviceKeys,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<Option<DeviceKeys>>> + Send> {
        self.c.request(SubDeviceLogout::new(device), o)
    }

    /// `onSubDevicesEnable`.
    pub fn on_sub_devices_enable<F, Out>(&self, f: F)
    where
        F: Fn(Command, Responder) -> Out + Send + Sync + 'static,
        R: IntoHandler<Out>,
    {
        self.c.on(Kind::EnableSubDevices, None, f);
    }

    /// `onSubDevicesDisable`.
    pub fn on_sub_devices_disable<F, Out>(&self, f: F)
    where
        F: Fn(Command, Responder) -> Out + Send + Sync + 'static,
        R: IntoHandler<Out>,
    {
        self.c.on(Kind::DisableSubDevices, None, f);
    }

    /// `onSubDevicesDelete`.
    pub fn on_sub_devices_delete<F, Out>(&self, f: F)
    where
        F: Fn(Command, Responder) -> Out + Send + Sync + 'static,
        R: IntoHandler<Out>,
    {
        self.c.on(Kind::DeleteSubDevices, None, f);
    }
}

/// The message-integration channel (secure mode 4; the vendor's newest Java and Python
/// SDKs): posts for many devices of one product through one connection, made with
/// `ClientOptions::integration_channel`. Each call is taken whole or refused with the
/// cloud's first error (1257 device not found, 1204 model validation failed).
pub struct Integration<'a, R: Runtime> {
    c: &'a DeviceClient<R>,
}

impl<R: Runtime> Clone for Integration<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R: Runtime> Copy for Integration<'_, R> {}

impl<R: Runtime> std::fmt::Debug for Integration<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Integration").field("product", &self.c.device().product_key()).finish()
    }
}

impl<'a, R: Runtime> Integration<'a, R> {
    pub(crate) fn new(c: &'a DeviceClient<R>) -> Self {
        Integration { c }
    }

    /// Posts measure points, events or attributes of many devices (build the post with
    /// `IntegrationPost::measurepoints().entry(..)`, `::events()` or `::attributes()`).
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn post<T: Serialize + Send + 'static>(
        &self,
        post: IntegrationPost<T>,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<()>> + Send> {
        self.c.request(post, o)
    }

    /// Raw bytes on the channel; the reply is the cloud's raw bytes.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn up_raw(
        &self,
        payload: impl Into<Bytes>,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<Bytes>> + Send> {
        self.c.request(IntegrationRawUp::new(payload), o)
    }
}

/// Bytes asked for per exchange by [`Files::download_to`]: a download never holds more
/// than this in memory.
pub const DOWNLOAD_CHUNK: u64 = 256 * 1024;

/// Stored files (the vendor's newest Java SDK; over the HTTP transport only: a client on
/// MQTT refuses them with `SubmitError::NeedsHttp`). A measure point post that carries
/// files, downloads whole, by range or streamed to a writer, direct download URLs, and
/// deletion.
pub struct Files<'a, R: Runtime> {
    c: &'a DeviceClient<R>,
}

impl<R: Runtime> Clone for Files<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R: Runtime> Copy for Files<'_, R> {}

impl<R: Runtime> std::fmt::Debug for Files<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Files").field("device", self.c.device()).finish()
    }
}

impl<'a, R: Runtime> Files<'a, R> {
    pub(crate) fn new(c: &'a DeviceClient<R>) -> Self {
        Files { c }
    }

    /// Posts measure points with files (FILE-type points, or struct members holding
    /// them). Files over 100 MB, or a request part over 512 KiB, are refused before
    /// anything is sent.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn post_measurepoint(
        &self,
        post: MeasurepointFilePost,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<()>> + Send> {
        self.c.request(post, o)
    }

    /// Stored file `uri`, whole or a byte range of it, in memory (see
    /// [`Files::download_to`] for a large one).
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request); a file the cloud does
    /// not have ends with `RequestError::HttpStatus(404)`.
    pub fn download(
        &self,
        uri: &str,
        category: FileCategory,
        range: Option<ByteRange>,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<FilePart>> + Send> {
        self.c.request(FileDownload { uri: uri.to_owned(), category, range }, o)
    }

    /// Stored file `uri` written to `writer` as it arrives, [`DOWNLOAD_CHUNK`] bytes per
    /// exchange (so never whole in memory): the number of bytes written.
    ///
    /// # Errors
    ///
    /// As [`Files::download`]; [`Error::Write`] when `writer` fails.
    pub fn download_to<'w, W: std::io::Write + Send>(
        &self,
        uri: &str,
        category: FileCategory,
        writer: &'w mut W,
    ) -> R::Wait<impl Future<Output = Result<u64, Error>> + Send + 'w> {
        let shared = self.c.shared().clone();
        let uri = uri.to_owned();
        R::wait(async move {
            let make = |range| FileDownload { uri: uri.clone(), category, range: Some(range) };
            download_into(&shared, &shared, &uri, make, writer, &mut |_, _| None).await
        })
    }

    /// A URL that downloads stored file `uri` without a session.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn download_url(
        &self,
        uri: &str,
        category: FileCategory,
        o: RequestOptions,
    ) -> R::Wait<impl Future<Output = Outcome<String>> + Send> {
        self.c.request(FileDownloadUrl { uri: uri.to_owned(), category }, o)
    }

    /// Deletes stored file `uri`.
    ///
    /// # Errors
    ///
    /// As [`DeviceClient::request`](crate::DeviceClient::request).
    pub fn delete(&self, uri: &str, o: RequestOptions) -> R::Wait<impl Future<Output = Outcome<()>> + Send> {
        self.c.request(FileDelete { uri: uri.to_owned() }, o)
    }
}

/// Downloads `what` range by range (each asked for with `make`) through `from`, into
/// `writer`, telling `progress` (bytes so far, the total when known) after each; the
/// progress reports it gives go to the cloud through `report_to`.
pub(crate) async fn download_into<R, W, O>(
    from: &std::sync::Arc<crate::session::Shared<R>>,
    report_to: &std::sync::Arc<crate::session::Shared<R>>,
    what: &str,
    make: impl Fn(ByteRange) -> O,
    writer: &mut W,
    progress: &mut (dyn FnMut(u64, Option<u64>) -> Option<OtaProgress> + Send),
) -> Result<u64, Error>
where
    R: Runtime,
    W: std::io::Write,
    O: enos_proto::Operation<Data = FilePart> + Send,
{
    let mut offset = 0u64;
    loop {
        let op = make(ByteRange::Span { start: offset, end: offset + DOWNLOAD_CHUNK - 1 });
        let reply = match from.call(op, RequestOptions::new()).await {
            Ok(r) => r,
            // An empty file has no byte to give.
            Err(Error::Request(RequestError::HttpStatus(416))) if offset == 0 => return Ok(0),
            Err(e) => return Err(e),
        };
        let part = O::parse_reply(&reply).map_err(Error::Request)?;
        writer.write_all(&part.bytes).map_err(|e| Error::Write { what: what.to_owned(), reason: e.to_string() })?;
        offset += part.bytes.len() as u64;
        let total = part.total();
        if let Some(report) = progress(offset, total) {
            // Progress for the cloud: its failure does not stop the download.
            let _ = report_to.call(report, RequestOptions::new()).await;
        }
        let done = match part.range {
            // A server that ignores ranges sends the whole file at once.
            None => true,
            Some(r) => part.bytes.is_empty() || r.total.is_some_and(|t| offset >= t),
        };
        if done {
            return Ok(offset);
        }
    }
}

/// A file that feeds a firmware check with what is written to it.
struct CheckedWriter {
    file: std::fs::File,
    check: enos_proto::ops::FirmwareCheck,
}

impl std::io::Write for CheckedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.check.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// For a firmware at a plain `http://` or `https://` URL: a client with no login for the
/// URL's host (over TLS with the client's own CA), and the path to GET; `None` for a file
/// of the cloud's storage.
#[allow(clippy::type_complexity)]
fn plain_url<R: Runtime>(
    main: &std::sync::Arc<crate::session::Shared<R>>,
    url: &str,
) -> Result<Option<(std::sync::Arc<crate::session::Shared<R>>, String)>, Error> {
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Ok(None);
    }
    let unsupported = || Error::Firmware(enos_proto::ops::FirmwareError::DirectUrl(url.to_owned()));
    let after = url.find("://").map_or(0, |i| i + 3);
    let (origin, path) = match url[after..].find('/') {
        Some(i) => url.split_at(after + i),
        None => (url, "/"),
    };
    let target = enos_proto::http::HttpTarget::parse(origin).map_err(|_| unsupported())?;
    let mut config =
        enos_proto::Config::new(main.config.device.clone(), enos_proto::Credentials::DeviceSecret("-".into()));
    config.tls = match (target.tls, &main.config.tls) {
        (false, _) => None,
        (true, Some(t)) => Some(enos_proto::tls::TlsTarget::new(t.config.clone(), target.host.clone())),
        // No CA to trust the host with.
        (true, None) => return Err(unsupported()),
    };
    let transport = enos_proto::options::Transport { host: target.host.clone(), port: target.port };
    let mut mode = enos_proto::http::HttpMode::new(target);
    mode.anonymous = true;
    config.http = Some(mode);
    config.request_timeout = main.config.request_timeout;
    Ok(Some((crate::session::Shared::new(config, transport, R::default()), path.to_owned())))
}
