//! The admin API's client, for the `enos-sim` subcommands and for tests: one request per
//! connection, over hyper.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use enos_proto::Secret;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// How long a call may take, answer included (a command waits for its device).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer read (a packet record of large payloads stays well below).
const MAX_ANSWER: usize = 64 << 20;

fn invalid(what: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// Calls the admin API at `addr` with its token: the status and the JSON body.
///
/// # Errors
///
/// When the server cannot be reached, takes over a minute, or answers something that is
/// not HTTP and JSON.
pub async fn request(
    addr: SocketAddr,
    token: &Secret,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    let call = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
        let connection = tokio::spawn(connection);
        let mut authorization = HeaderValue::try_from(format!("Bearer {}", token.expose()))
            .map_err(|_| invalid("the token is not text"))?;
        authorization.set_sensitive(true);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, addr.to_string())
            .header(AUTHORIZATION, authorization)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()))))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let response = sender.send_request(request).await.map_err(std::io::Error::other)?;
        let status = response.status().as_u16();
        let bytes = Limited::new(response.into_body(), MAX_ANSWER).collect().await.map_err(invalid)?.to_bytes();
        connection.abort();
        let value = serde_json::from_slice(&bytes).map_err(|e| invalid(format!("the answer is not JSON: {e}")))?;
        Ok((status, value))
    };
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within a minute"))?
}

/// [`request`] for code without a runtime: it runs one of its own for the call, so it
/// must not be called from inside a tokio runtime (use `spawn_blocking` there, or
/// [`request`]).
///
/// # Errors
///
/// As [`request`].
pub fn call(
    addr: SocketAddr,
    token: &Secret,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(request(addr, token, method, path, body))
}
