//! Stored files (extensions spec E2): a measure point post that carries files, a download
//! of a stored file (whole or a byte range), its direct download URL, and its deletion.
//! They exist over the HTTP transport only: a client on MQTT refuses them with
//! [`crate::SubmitError::NeedsHttp`].

use bytes::Bytes;

use super::{ByteRange, FileCategory, MeasurepointFilePost};
use crate::envelope::Reply;
use crate::error::{EncodeError, RequestError};
use crate::ops::{unit_reply, EncodeContext, Operation};

/// How an HTTP-only operation is carried.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileExchange {
    /// `POST /multipart{topic}`: the body, and the boundary that separates its parts.
    Post { body: Bytes, boundary: String },
    /// `GET .../file/download`.
    Download { uri: String, category: FileCategory, range: Option<ByteRange> },
    /// `GET .../file/download/url`.
    DownloadUrl { uri: String, category: FileCategory },
    /// `POST .../file/delete`.
    Delete { uri: String },
    /// A plain `GET` of a path at the target.
    Get { path: String, range: Option<ByteRange> },
}

/// A byte range as a response's `Content-Range` gives it: `bytes START-END/TOTAL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// The first byte sent.
    pub start: u64,
    /// The last byte sent.
    pub end: u64,
    /// The whole file's size, when known.
    pub total: Option<u64>,
}

impl ContentRange {
    /// Reads `bytes S-E/T` (or `/*`).
    pub fn parse(v: &str) -> Option<ContentRange> {
        let rest = v.trim().strip_prefix("bytes ")?;
        let (span, total) = rest.split_once('/')?;
        let (start, end) = span.split_once('-')?;
        let total = if total == "*" { None } else { Some(total.parse().ok()?) };
        Some(ContentRange { start: start.parse().ok()?, end: end.parse().ok()?, total })
    }
}

/// Bytes of a stored file: the whole of it (`range` `None`), or the range the response
/// names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePart {
    /// The bytes.
    pub bytes: Bytes,
    /// Which bytes of the file they are, for a range.
    pub range: Option<ContentRange>,
}

impl FilePart {
    /// The whole file's size, when the response says it (or the part is the whole file).
    pub fn total(&self) -> Option<u64> {
        match self.range {
            Some(r) => r.total,
            None => Some(self.bytes.len() as u64),
        }
    }
}

fn http_only() -> Result<(), EncodeError> {
    Ok(())
}

/// A file URI or path as it goes into a request line: refused when it would not be a
/// valid one (spaces, control characters, a fragment), before anything is sent.
fn checked(what: &'static str, text: &str, in_query: bool) -> Result<String, EncodeError> {
    let candidate = if in_query { format!("/f?fileUri={text}") } else { text.to_owned() };
    match http::uri::PathAndQuery::try_from(candidate.as_str()) {
        Ok(p) if p.as_str() == candidate && !text.contains('#') && (in_query || text.starts_with('/')) => {
            Ok(text.to_owned())
        }
        _ => Err(EncodeError::Invalid { what, value: text.to_owned() }),
    }
}

fn file_part(reply: &Reply) -> Result<FilePart, RequestError> {
    match reply {
        Reply::File(p) => Ok(p.clone()),
        _ => Err(RequestError::BadReply("a file's bytes were expected".into())),
    }
}

impl Operation for MeasurepointFilePost {
    type Data = ();
    fn write_path(&self, out: &mut String) {
        out.push_str("thing/measurepoint/post");
    }
    fn write_method(&self, out: &mut String) {
        out.push_str("thing.measurepoint.post");
    }
    fn write_params(&self, _: &EncodeContext<'_>, _: &mut Vec<u8>) -> Result<(), EncodeError> {
        http_only()
    }
    fn file_exchange(&self, ctx: &EncodeContext<'_>, id: u32) -> Option<Result<FileExchange, EncodeError>> {
        Some((|| {
            // A boundary that none of the parts holds.
            let mut n = u64::from(id);
            loop {
                let boundary = format!("enos-part-{n:016x}");
                let hit = |b: &[u8]| b.windows(boundary.len()).any(|w| w == boundary.as_bytes());
                if !self.files.iter().any(|f| hit(&f.content)) {
                    let body = self.body(id, ctx.unix_ms, &boundary)?;
                    if !hit(&self.message(id, ctx.unix_ms)?) {
                        return Ok(FileExchange::Post { body: Bytes::from(body), boundary });
                    }
                }
                n = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            }
        })())
    }
    fn parse_reply(reply: &Reply) -> Result<(), RequestError> {
        unit_reply(reply)
    }
}

/// A download of stored file `uri` (E2.3): all of it, or a byte range. Its reply holds the
/// bytes in memory: a large file is downloaded in ranges (the clients' `download_to`
/// does so), each at most `Config::max_packet_bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDownload {
    /// The file's URI, e.g. `enos-connect://AAECAwQFBgc.txt`.
    pub uri: String,
    /// A model feature's file, or firmware.
    pub category: FileCategory,
    /// The bytes wanted; `None` for all.
    pub range: Option<ByteRange>,
}

impl Operation for FileDownload {
    type Data = FilePart;
    fn write_path(&self, out: &mut String) {
        out.push_str("file/download");
    }
    fn write_method(&self, _: &mut String) {}
    fn write_params(&self, _: &EncodeContext<'_>, _: &mut Vec<u8>) -> Result<(), EncodeError> {
        http_only()
    }
    fn file_exchange(&self, _: &EncodeContext<'_>, _: u32) -> Option<Result<FileExchange, EncodeError>> {
        Some(checked("file URI", &self.uri, true).map(|uri| FileExchange::Download {
            uri,
            category: self.category,
            range: self.range,
        }))
    }
    fn parse_reply(reply: &Reply) -> Result<FilePart, RequestError> {
        file_part(reply)
    }
}

/// The direct download URL of stored file `uri` (E2.4): a URL to GET without a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDownloadUrl {
    /// The file's URI.
    pub uri: String,
    /// A model feature's file, or firmware.
    pub category: FileCategory,
}

impl Operation for FileDownloadUrl {
    type Data = String;
    fn write_path(&self, out: &mut String) {
        out.push_str("file/download/url");
    }
    fn write_method(&self, _: &mut String) {}
    fn write_params(&self, _: &EncodeContext<'_>, _: &mut Vec<u8>) -> Result<(), EncodeError> {
        http_only()
    }
    fn file_exchange(&self, _: &EncodeContext<'_>, _: u32) -> Option<Result<FileExchange, EncodeError>> {
        Some(checked("file URI", &self.uri, true).map(|uri| FileExchange::DownloadUrl { uri, category: self.category }))
    }
    fn parse_reply(reply: &Reply) -> Result<String, RequestError> {
        reply.json()?.success()?.data()
    }
}

/// The deletion of stored file `uri` (E2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDelete {
    /// The file's URI.
    pub uri: String,
}

impl Operation for FileDelete {
    type Data = ();
    fn write_path(&self, out: &mut String) {
        out.push_str("file/delete");
    }
    fn write_method(&self, _: &mut String) {}
    fn write_params(&self, _: &EncodeContext<'_>, _: &mut Vec<u8>) -> Result<(), EncodeError> {
        http_only()
    }
    fn file_exchange(&self, _: &EncodeContext<'_>, _: u32) -> Option<Result<FileExchange, EncodeError>> {
        Some(checked("file URI", &self.uri, true).map(|uri| FileExchange::Delete { uri }))
    }
    fn parse_reply(reply: &Reply) -> Result<(), RequestError> {
        unit_reply(reply)
    }
}

/// A plain GET of `path` (with its query) at the broker, a byte range of it or all: a
/// firmware at a plain `http://` URL (spec C15). Sent by a client in anonymous HTTP mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlGet {
    /// The path and query, e.g. `/firmware/fw_2.0.1.bin?sig=1`.
    pub path: String,
    /// The bytes wanted; `None` for all.
    pub range: Option<ByteRange>,
}

impl Operation for UrlGet {
    type Data = FilePart;
    fn write_topic(&self, _: &crate::topic::DeviceKeys, out: &mut String) {
        out.push_str(&self.path);
    }
    fn write_path(&self, out: &mut String) {
        out.push_str(&self.path);
    }
    fn write_method(&self, _: &mut String) {}
    fn write_params(&self, _: &EncodeContext<'_>, _: &mut Vec<u8>) -> Result<(), EncodeError> {
        http_only()
    }
    fn file_exchange(&self, _: &EncodeContext<'_>, _: u32) -> Option<Result<FileExchange, EncodeError>> {
        Some(checked("path", &self.path, false).map(|path| FileExchange::Get { path, range: self.range }))
    }
    fn parse_reply(reply: &Reply) -> Result<FilePart, RequestError> {
        file_part(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_content_range_reads_with_or_without_its_total() {
        assert_eq!(ContentRange::parse("bytes 0-7/16"), Some(ContentRange { start: 0, end: 7, total: Some(16) }));
        assert_eq!(ContentRange::parse("bytes 8-15/*"), Some(ContentRange { start: 8, end: 15, total: None }));
        assert_eq!(ContentRange::parse("items 0-1/2"), None);
    }
}
