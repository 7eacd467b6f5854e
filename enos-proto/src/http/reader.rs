//! An incremental reader of HTTP/1.1 responses: the head parsed by `httparse`, then the
//! body as it arrives (by `Content-Length`, chunked, or until the connection closes), so a
//! large download is never held whole.

use bytes::{Buf, Bytes, BytesMut};

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Headers read at most.
const MAX_HEADERS: usize = 64;

/// A response's status line and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: http::StatusCode,
    /// The headers.
    pub headers: http::HeaderMap,
}

impl ResponseHead {
    /// The first header called `name`, in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
    }

    /// `Content-Length`, when sent and valid.
    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length").and_then(|v| v.trim().parse().ok())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }
}

/// What the reader found next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadItem {
    /// The head of a response.
    Head(ResponseHead),
    /// Bytes of its body, in order.
    Body(Bytes),
    /// The response is complete; `reusable` says whether the connection may carry the
    /// next request.
    End {
        /// Whether the connection stays usable.
        reusable: bool,
    },
}

/// Why a response cannot be read: the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// Bytes that are not an HTTP/1.1 response.
    #[error("malformed HTTP response: {0}")]
    Malformed(&'static str),
    /// A head larger than 16 KiB.
    #[error("HTTP response head larger than 16 KiB")]
    HeadTooLarge,
    /// The connection closed before the response was complete.
    #[error("the connection closed in the middle of an HTTP response")]
    Truncated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Fixed(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    UntilClose,
}

/// Reads responses one after another from the bytes of one connection.
#[derive(Debug)]
pub struct ResponseReader {
    buf: BytesMut,
    state: State,
    reusable: bool,
}

impl Default for ResponseReader {
    fn default() -> Self {
        ResponseReader::new()
    }
}

impl ResponseReader {
    /// A reader at the start of a connection.
    pub fn new() -> Self {
        ResponseReader { buf: BytesMut::new(), state: State::Head, reusable: true }
    }

    /// Adds bytes received.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Whether the reader is between responses with nothing buffered.
    pub fn is_idle(&self) -> bool {
        self.state == State::Head && self.buf.is_empty()
    }

    /// The next item, `None` until more bytes arrive.
    ///
    /// # Errors
    ///
    /// An [`HttpError`] for bytes that cannot be a response.
    pub fn read(&mut self) -> Result<Option<ReadItem>, HttpError> {
        loop {
            match self.state {
                State::Head => {
                    let Some(head) = self.head()? else { return Ok(None) };
                    // Interim responses (100 Continue) carry nothing for us.
                    if head.status.is_informational() {
                        continue;
                    }
                    return Ok(Some(ReadItem::Head(head)));
                }
                State::Fixed(0) => return Ok(Some(self.end())),
                State::Fixed(n) => {
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(self.buf.len());
                    self.state = State::Fixed(n - take as u64);
                    return Ok(Some(ReadItem::Body(self.buf.split_to(take).freeze())));
                }
                State::UntilClose => {
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(ReadItem::Body(self.buf.split().freeze())));
                }
                State::ChunkSize => match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.buf.advance(used);
                        self.state = if size == 0 { State::Trailers } else { State::ChunkData(size) };
                    }
                    Ok(httparse::Status::Partial) => {
                        if self.buf.len() > 1024 {
                            return Err(HttpError::Malformed("chunk size line too long"));
                        }
                        return Ok(None);
                    }
                    Err(_) => return Err(HttpError::Malformed("bad chunk size")),
                },
                State::ChunkData(n) => {
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(self.buf.len());
                    let left = n - take as u64;
                    self.state = if left == 0 { State::ChunkEnd } else { State::ChunkData(left) };
                    return Ok(Some(ReadItem::Body(self.buf.split_to(take).freeze())));
                }
                State::ChunkEnd => {
                    if self.buf.len() < 2 {
                        return Ok(None);
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err(HttpError::Malformed("chunk not ended by CRLF"));
                    }
                    self.buf.advance(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    // Trailer fields, if any, then an empty line.
                    let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                        if self.buf.len() > MAX_HEAD {
                            return Err(HttpError::HeadTooLarge);
                        }
                        return Ok(None);
                    };
                    self.buf.advance(at + 2);
                    if at == 0 {
                        return Ok(Some(self.end()));
                    }
                }
            }
        }
    }

    /// The connection closed: ends a body read until close, or reports a truncated one.
    ///
    /// # Errors
    ///
    /// [`HttpError::Truncated`] when a response was under way.
    pub fn closed(&mut self) -> Result<Option<ReadItem>, HttpError> {
        match self.state {
            State::UntilClose if self.buf.is_empty() => {
                self.reusable = false;
                Ok(Some(self.end()))
            }
            State::Head if self.buf.is_empty() => Ok(None),
            _ => Err(HttpError::Truncated),
        }
    }

    fn end(&mut self) -> ReadItem {
        let reusable = self.reusable && self.state != State::UntilClose;
        self.state = State::Head;
        self.reusable = true;
        ReadItem::End { reusable }
    }

    fn head(&mut self) -> Result<Option<ResponseHead>, HttpError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut r = httparse::Response::new(&mut headers);
        let used = match r.parse(&self.buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if self.buf.len() > MAX_HEAD {
                    return Err(HttpError::HeadTooLarge);
                }
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
            Err(_) => return Err(HttpError::Malformed("bad status line or header")),
        };
        let code = r.code.ok_or(HttpError::Malformed("no status"))?;
        let status = http::StatusCode::from_u16(code).map_err(|_| HttpError::Malformed("bad status code"))?;
        let http10 = r.version == Some(0);
        let mut headers = http::HeaderMap::with_capacity(r.headers.len());
        for h in r.headers.iter() {
            let name =
                http::HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| HttpError::Malformed("bad header name"))?;
            let value = http::HeaderValue::from_bytes(h.value).map_err(|_| HttpError::Malformed("bad header value"))?;
            headers.append(name, value);
        }
        self.buf.advance(used);
        let head = ResponseHead { status, headers };
        let close = head.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        self.reusable = !close && !http10;
        let chunked = head.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        self.state = if status.is_informational() {
            State::Head
        } else if status == http::StatusCode::NO_CONTENT || status == http::StatusCode::NOT_MODIFIED {
            State::Fixed(0)
        } else if chunked {
            State::ChunkSize
        } else if let Some(n) = head.header("content-length") {
            State::Fixed(n.trim().parse().map_err(|_| HttpError::Malformed("bad Content-Length"))?)
        } else {
            State::UntilClose
        };
        Ok(Some(head))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads everything from `wire`, fed `step` bytes at a time, then closed.
    fn read_all(wire: &[u8], step: usize) -> Result<Vec<ReadItem>, HttpError> {
        let mut r = ResponseReader::new();
        let mut items = Vec::new();
        for chunk in wire.chunks(step.max(1)) {
            r.feed(chunk);
            while let Some(i) = r.read()? {
                items.push(i);
            }
        }
        if let Some(i) = r.closed()? {
            items.push(i);
        }
        // Body pieces joined, for comparison whatever the step.
        let mut joined: Vec<ReadItem> = Vec::new();
        for i in items {
            match (joined.last_mut(), i) {
                (Some(ReadItem::Body(b)), ReadItem::Body(more)) => {
                    let mut v = b.to_vec();
                    v.extend_from_slice(&more);
                    *b = Bytes::from(v);
                }
                (_, i) => joined.push(i),
            }
        }
        Ok(joined)
    }

    fn body(items: &[ReadItem]) -> Vec<u8> {
        items.iter().filter_map(|i| if let ReadItem::Body(b) = i { Some(b.to_vec()) } else { None }).flatten().collect()
    }

    #[test]
    fn every_framing_reads_the_same_whatever_the_pieces_the_bytes_come_in() {
        let fixed = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec();
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3;x=1\r\nllo\r\n0\r\nT: 1\r\n\r\n"
                .to_vec();
        let close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello".to_vec();
        for step in [1, 2, 3, 7, 1000] {
            for (wire, reusable) in [(&fixed, true), (&chunked, true), (&close, false)] {
                let items = read_all(wire, step).unwrap();
                assert!(matches!(&items[0], ReadItem::Head(h) if h.status == 200));
                assert_eq!(body(&items), b"hello", "step {step}");
                assert_eq!(items.last(), Some(&ReadItem::End { reusable }), "step {step}");
            }
        }
    }

    #[test]
    fn responses_follow_each_other_on_one_connection() {
        let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-1/4\r\nContent-Length: 2\r\n\r\nab";
        let items = read_all(wire, 5).unwrap();
        let statuses: Vec<u16> = items
            .iter()
            .filter_map(|i| if let ReadItem::Head(h) = i { Some(h.status.as_u16()) } else { None })
            .collect();
        assert_eq!(statuses, [204, 206]);
        assert_eq!(body(&items), b"ab");
        let ReadItem::Head(h) = &items[2] else { panic!() };
        assert_eq!(h.header("content-range"), Some("bytes 0-1/4"));
    }

    #[test]
    fn a_truncated_or_malformed_response_is_an_error() {
        assert_eq!(read_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", 4), Err(HttpError::Truncated));
        assert!(matches!(read_all(b"SMTP 220 hello\r\n\r\n", 4), Err(HttpError::Malformed(_))));
        assert!(matches!(read_all(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", 4), Err(HttpError::Malformed(_))));
        assert!(matches!(
            read_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 4),
            Err(HttpError::Malformed(_))
        ));
        let huge = [b"HTTP/1.1 200 OK\r\nX: ".to_vec(), vec![b'a'; 20_000]].concat();
        assert_eq!(read_all(&huge, 4096), Err(HttpError::HeadTooLarge));
    }
}
