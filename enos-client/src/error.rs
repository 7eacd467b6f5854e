//! [`Error`], what a client call can end with, and [`Response`], what it gives on success.

use std::time::Duration;

use enos_proto::{ConfigError, DisconnectCause, Operation, Reply, RequestError, StartError, SubmitError};

/// What can go wrong with a client call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An option cannot work (which, and why).
    #[error(transparent)]
    Options(#[from] ConfigError),
    /// The core refused the request at once (queue full, invalid target, ...).
    #[error(transparent)]
    Submit(SubmitError),
    /// The request ended without a successful reply.
    #[error(transparent)]
    Request(RequestError),
    /// The first connection failed (refused, unreachable, TLS): `connect()` gives up.
    #[error("connection failed: {0}")]
    Connect(DisconnectCause),
    /// No connection (and, with dynamic activation, no device secret) within the
    /// connection timeout.
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    /// `connect()` was called while the client was connected or connecting.
    #[error("already connected or connecting")]
    AlreadyStarted,
    /// The connection's I/O could not be started (no runtime to run it on, no thread).
    #[error("the connection could not be started: {0}")]
    Runtime(String),
    /// The client is closed (or was never connected).
    #[error("client closed")]
    Closed,
    /// A downloaded firmware failed its check (its digest or size), or names a sign
    /// method not supported; nothing was installed.
    #[error(transparent)]
    Firmware(enos_proto::ops::FirmwareError),
    /// Writing a downloaded file failed: what failed, and why.
    #[error("writing {what}: {reason}")]
    Write {
        /// The file or writer.
        what: String,
        /// The I/O error.
        reason: String,
    },
}

impl From<SubmitError> for Error {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Closed => Error::Closed,
            e => Error::Submit(e),
        }
    }
}

impl From<RequestError> for Error {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::Closed => Error::Closed,
            e => Error::Request(e),
        }
    }
}

impl From<StartError> for Error {
    fn from(e: StartError) -> Self {
        match e {
            StartError::Failed(cause) => Error::Connect(cause),
            StartError::TimedOut(d) => Error::ConnectTimeout(d),
            StartError::Closed => Error::Closed,
            // A cause added later reads as the failure it is.
            other => Error::Runtime(other.to_string()),
        }
    }
}

/// The seed's response: `{id, code, data, message}` with `data` typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Response<T> {
    /// The envelope id (empty for raw replies and for requests sent without waiting).
    pub id: String,
    /// 200 on success.
    pub code: i32,
    /// The typed `data`.
    pub data: T,
    /// The message, if any.
    pub message: Option<String>,
}

/// The typed response of operation `O` from its reply.
pub(crate) fn typed<O: Operation>(reply: Reply) -> Result<Response<O::Data>, Error> {
    let data = O::parse_reply(&reply)?;
    Ok(match reply {
        Reply::Json(j) => Response { id: j.id, code: j.code, data, message: j.message },
        _ => Response { id: String::new(), code: 200, data, message: None },
    })
}
