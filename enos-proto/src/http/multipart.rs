//! A measure point post that carries files (extensions spec E2.2): `multipart/form-data`
//! with the request as its first part (`enos-message`) and one `enos-file` part per file.
//! A file-valued point (or struct member) holds `local://{fileName}`; the request's
//! `files` object describes each file.

use std::collections::BTreeMap;

use bytes::Bytes;
use md5::{Digest, Md5};
use serde::Serialize;
use serde_json::{Map, Value};

use super::lower_hex;
use crate::error::EncodeError;

/// Largest request part (`enos-message`): 512 KiB (spec C19).
pub const MAX_MESSAGE_PART_BYTES: usize = 512 * 1024;
/// Largest file: 100 MB (spec C19).
pub const MAX_FILE_BYTES: u64 = 100 * 1024 * 1024;

/// One file of a [`MeasurepointFilePost`].
#[derive(Clone, PartialEq, Eq)]
pub struct FileUpload {
    /// The measure point it is the value of (a FILE-type point, or a struct holding one).
    pub measurepoint: String,
    /// The struct member that holds it, when the point is a struct.
    pub struct_member: Option<String>,
    /// The name of the file where it came from (its base name is sent).
    pub original_name: String,
    /// Its bytes.
    pub content: Bytes,
    /// Eight random bytes: the file's name on the wire is their URL-safe base64 (as the
    /// vendor's SDK names files), then the original's extension.
    pub name_seed: [u8; 8],
}

impl std::fmt::Debug for FileUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileUpload")
            .field("measurepoint", &self.measurepoint)
            .field("struct_member", &self.struct_member)
            .field("original_name", &self.original_name)
            .field("bytes", &self.content.len())
            .finish_non_exhaustive()
    }
}

impl FileUpload {
    /// File `original_name` with `content` as the value of measure point `measurepoint`.
    pub fn new(
        measurepoint: impl Into<String>,
        original_name: impl Into<String>,
        content: impl Into<Bytes>,
        name_seed: [u8; 8],
    ) -> Self {
        FileUpload {
            measurepoint: measurepoint.into(),
            struct_member: None,
            original_name: original_name.into(),
            content: content.into(),
            name_seed,
        }
    }

    /// As member `member` of a struct measure point.
    pub fn in_struct(mut self, member: impl Into<String>) -> Self {
        self.struct_member = Some(member.into());
        self
    }

    /// The base name of the original (after the last `/` or `\`).
    pub fn base_name(&self) -> &str {
        self.original_name.rsplit(['/', '\\']).next().unwrap_or_default()
    }

    /// `.ext` of the original, or empty.
    pub fn extension(&self) -> &str {
        let base = self.base_name();
        base.rfind('.').map_or("", |i| &base[i..])
    }

    /// The file's name on the wire.
    pub fn file_name(&self) -> String {
        let mut s = base64url(&self.name_seed);
        s.push_str(self.extension());
        s
    }

    /// The lower-case hex MD5 of its bytes.
    pub fn md5(&self) -> String {
        lower_hex(&Md5::digest(&self.content))
    }
}

/// A measure point post with files (`thing.measurepoint.post`, over HTTP only).
#[derive(Debug, Clone, PartialEq)]
pub struct MeasurepointFilePost {
    /// The other points, and the other members of a struct that holds a file.
    pub points: Map<String, Value>,
    /// The files.
    pub files: Vec<FileUpload>,
    /// Epoch milliseconds; `None` stamps the request time.
    pub time: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FileMeta<'a> {
    feature_id: &'a str,
    file_name: String,
    original_filename: &'a str,
    file_length: String,
    file_ext: &'a str,
    md5: String,
}

impl MeasurepointFilePost {
    /// These files (and no other points), stamped with the request time.
    pub fn new(files: Vec<FileUpload>) -> Self {
        MeasurepointFilePost { points: Map::new(), files, time: None }
    }

    /// With another point (or the other members of a struct point).
    pub fn point(mut self, id: impl Into<String>, value: impl Into<Value>) -> Self {
        self.points.insert(id.into(), value.into());
        self
    }

    /// Stamped with `unix_ms`.
    pub fn at(mut self, unix_ms: u64) -> Self {
        self.time = Some(unix_ms);
        self
    }

    /// The first part: the request with envelope id `id`.
    ///
    /// # Errors
    ///
    /// [`EncodeError::PayloadTooLarge`] for a file over [`MAX_FILE_BYTES`] or a request
    /// over [`MAX_MESSAGE_PART_BYTES`]; [`EncodeError::Invalid`] for a file of a struct
    /// point whose other value is not an object.
    pub fn message(&self, id: u32, unix_ms: u64) -> Result<Vec<u8>, EncodeError> {
        if let Some(f) = self.files.iter().find(|f| f.content.len() as u64 > MAX_FILE_BYTES) {
            return Err(EncodeError::PayloadTooLarge {
                size: f.content.len(),
                max: usize::try_from(MAX_FILE_BYTES).unwrap_or(usize::MAX),
            });
        }
        let mut points = self.points.clone();
        let mut files = BTreeMap::new();
        for f in &self.files {
            let name = f.file_name();
            let reference = Value::String(format!("local://{name}"));
            match &f.struct_member {
                None => {
                    points.insert(f.measurepoint.clone(), reference);
                }
                Some(member) => {
                    let slot = points.entry(f.measurepoint.clone()).or_insert_with(|| Value::Object(Map::new()));
                    let Some(obj) = slot.as_object_mut() else {
                        return Err(EncodeError::Invalid {
                            what: "struct measure point",
                            value: f.measurepoint.clone(),
                        });
                    };
                    obj.insert(member.clone(), reference);
                }
            }
            let meta = FileMeta {
                feature_id: &f.measurepoint,
                file_name: name.clone(),
                original_filename: f.base_name(),
                file_length: f.content.len().to_string(),
                file_ext: f.extension(),
                md5: f.md5(),
            };
            files.insert(name, meta);
        }
        #[derive(Serialize)]
        struct Params<'a> {
            measurepoints: &'a Map<String, Value>,
            time: u64,
        }
        #[derive(Serialize)]
        struct Message<'a> {
            id: String,
            version: &'static str,
            params: Params<'a>,
            method: &'static str,
            files: BTreeMap<String, FileMeta<'a>>,
        }
        let message = Message {
            id: id.to_string(),
            version: "1.0",
            params: Params { measurepoints: &points, time: self.time.unwrap_or(unix_ms) },
            method: "thing.measurepoint.post",
            files,
        };
        let out = serde_json::to_vec(&message).map_err(|e| EncodeError::Json(e.to_string()))?;
        if out.len() > MAX_MESSAGE_PART_BYTES {
            return Err(EncodeError::PayloadTooLarge { size: out.len(), max: MAX_MESSAGE_PART_BYTES });
        }
        Ok(out)
    }

    /// The whole `multipart/form-data` body with `boundary` (which must not occur in any
    /// part).
    ///
    /// # Errors
    ///
    /// As [`MeasurepointFilePost::message`].
    pub fn body(&self, id: u32, unix_ms: u64, boundary: &str) -> Result<Vec<u8>, EncodeError> {
        let message = self.message(id, unix_ms)?;
        let size: usize = self.files.iter().map(|f| f.content.len() + 256).sum::<usize>() + message.len() + 256;
        let mut out = Vec::with_capacity(size);
        let start = |out: &mut Vec<u8>| {
            out.extend_from_slice(b"--");
            out.extend_from_slice(boundary.as_bytes());
            out.extend_from_slice(b"\r\n");
        };
        start(&mut out);
        out.extend_from_slice(b"Content-Disposition: form-data; name=\"enos-message\"\r\n\r\n");
        out.extend_from_slice(&message);
        out.extend_from_slice(b"\r\n");
        for f in &self.files {
            start(&mut out);
            let name = quoted(&f.file_name());
            out.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"enos-file\"; filename=\"{name}\"\r\n").as_bytes(),
            );
            out.extend_from_slice(format!("Content-MD5: {}\r\n", f.md5()).as_bytes());
            out.extend_from_slice(b"Content-Type: application/octet-stream\r\n\r\n");
            out.extend_from_slice(&f.content);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--");
        out.extend_from_slice(boundary.as_bytes());
        out.extend_from_slice(b"--\r\n");
        Ok(out)
    }
}

/// A file name inside a quoted header parameter: `"`, CR and LF written as `%22`, `%0D`
/// and `%0A`, as the vendor's SDK writes them.
fn quoted(name: &str) -> String {
    name.replace('"', "%22").replace('\r', "%0D").replace('\n', "%0A")
}

/// URL-safe base64 without padding (RFC 4648 §5).
fn base64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            s.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_the_seed_in_url_safe_base64_and_the_extension() {
        assert_eq!(base64url(&[0, 1, 2, 3, 4, 5, 6, 7]), "AAECAwQFBgc");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64url(b"foobar"), "Zm9vYmFy");
        let f = FileUpload::new("p", "dir/sub\\cam.1.JPG", &b"x"[..], [7, 6, 5, 4, 3, 2, 1, 0]);
        assert_eq!((f.base_name(), f.extension(), f.file_name().as_str()), ("cam.1.JPG", ".JPG", "BwYFBAMCAQA.JPG"));
        assert_eq!(FileUpload::new("p", "README", &b""[..], [0; 8]).extension(), "");
        assert_eq!(quoted("a\"b\r\nc"), "a%22b%0D%0Ac");
    }

    #[test]
    fn an_oversized_file_or_request_is_refused_before_anything_is_sent() {
        let big = Bytes::from(vec![0u8; (MAX_FILE_BYTES + 1) as usize]);
        let post = MeasurepointFilePost::new(vec![FileUpload::new("p", "a.bin", big, [0; 8])]);
        assert!(matches!(post.message(1, 0), Err(EncodeError::PayloadTooLarge { .. })));
        let post = MeasurepointFilePost::new(vec![]).point("text", "x".repeat(MAX_MESSAGE_PART_BYTES));
        assert!(matches!(post.body(1, 0, "b"), Err(EncodeError::PayloadTooLarge { .. })));
    }
}
