//! `enos file`: stored files, over the HTTP transport. A post reads every file it names
//! before anything connects; a download goes range by range (never more than
//! [`CHUNK`] bytes in memory) to standard output, or to `PATH.part`, renamed to `PATH`
//! once complete, so that a failed download does not touch `PATH` (an interrupted one,
//! Ctrl-C or SIGTERM, leaves `PATH.part` behind).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use enos_transport_blocking::proto::http::{
    ByteRange, ContentRange, FileCategory, FilePart, FileUpload, MeasurepointFilePost, MAX_FILE_BYTES,
};
use enos_transport_blocking::{Error, RequestError, DOWNLOAD_CHUNK};
use serde_json::{json, Value};

use crate::cli::FileKind;
use crate::commands::{envelope, Printed};
use crate::error::CliError;
use crate::fsio::{self, AtomicFile};
use crate::parse;
use crate::session::Session;

/// Bytes asked for per exchange: as many as the SDK's own streamed downloads ask for.
const CHUNK: u64 = DOWNLOAD_CHUNK;

/// The scheme of the URI the cloud keeps a posted file under.
const STORED: &str = "enos-connect://";

/// What `local://` in a point's value says: the rest names a file.
const LOCAL: &str = "local://";

impl From<FileKind> for FileCategory {
    fn from(k: FileKind) -> Self {
        match k {
            FileKind::Feature => FileCategory::Feature,
            FileKind::Ota => FileCategory::Ota,
        }
    }
}

/// A measure point post with its files read.
#[derive(Debug)]
pub struct FilePost {
    post: MeasurepointFilePost,
    /// Per file: the point (and struct member) it is the value of, and where it was read.
    sources: Vec<(String, Option<String>, PathBuf)>,
}

/// Reads the files a post names: every `local://NAME` value (of a point, or of a member
/// of a struct point) is the file `--file NAME=PATH` gives, else the file `NAME`.
///
/// # Errors
///
/// [`CliError::Input`] for points that are not a JSON object, a `--file` that is not
/// `NAME=PATH` or names no `local://` value, a file over 100 MB; [`CliError::Usage`]
/// when no value is a file; [`CliError::Io`] for a file that cannot be read.
pub fn prepare_post(points: &str, files: &[String], at: Option<u64>) -> Result<FilePost, CliError> {
    let mut points = parse::object(points).map_err(|e| CliError::input("points", e))?;
    let mut named: BTreeMap<String, (PathBuf, bool)> = BTreeMap::new();
    for f in files {
        let bad = |why: &str| CliError::input(format!("--file {f:?}"), why);
        let (name, path) = f.split_once('=').ok_or_else(|| bad("expected NAME=PATH"))?;
        if name.is_empty() || path.is_empty() {
            return Err(bad("expected NAME=PATH, neither empty"));
        }
        if named.insert(name.to_owned(), (PathBuf::from(path), false)).is_some() {
            return Err(bad("this NAME is given twice"));
        }
    }
    // (point, struct member, NAME) of every file value, in the points' order.
    let mut wanted: Vec<(String, Option<String>, String)> = Vec::new();
    let local = |v: &Value| v.as_str().and_then(|s| s.strip_prefix(LOCAL)).map(str::to_owned);
    for (id, value) in points.iter_mut() {
        if let Some(name) = local(value) {
            wanted.push((id.clone(), None, name));
        } else if let Value::Object(members) = value {
            let files: Vec<(String, String)> =
                members.iter().filter_map(|(m, v)| local(v).map(|n| (m.clone(), n))).collect();
            for (member, name) in files {
                members.remove(&member);
                wanted.push((id.clone(), Some(member), name));
            }
        }
    }
    points.retain(|_, v| local(v).is_none());
    if wanted.is_empty() {
        return Err(CliError::Usage(
            "no value is a file: give one as \"local://NAME\" (points without files go with `enos post`)".into(),
        ));
    }
    let mut post = MeasurepointFilePost::new(Vec::new());
    let mut sources = Vec::new();
    for (i, (point, member, name)) in wanted.into_iter().enumerate() {
        let place = |p: &Path| format!("{} (of {LOCAL}{name})", p.display());
        if name.is_empty() {
            return Err(CliError::input(format!("points: {point}"), format!("{LOCAL} names no file")));
        }
        let path = match named.get_mut(&name) {
            Some((path, used)) => {
                *used = true;
                path.clone()
            }
            None => PathBuf::from(&name),
        };
        let content = read_file(&path, MAX_FILE_BYTES).map_err(|e| match e {
            Unreadable::Io(e) => CliError::io(place(&path), e),
            Unreadable::Why(why) => CliError::input(place(&path), why),
        })?;
        let mut upload = FileUpload::new(point.clone(), path.display().to_string(), content, name_seed(i));
        if let Some(m) = &member {
            upload = upload.in_struct(m.clone());
        }
        post.files.push(upload);
        sources.push((point, member, path));
    }
    if let Some((name, _)) = named.iter().find(|(_, (_, used))| !used) {
        return Err(CliError::input(format!("--file {name}=..."), format!("no value is \"{LOCAL}{name}\"")));
    }
    // What is left are the other points, and the other members of struct points.
    post.points = points;
    post.time = at;
    Ok(FilePost { post, sources })
}

/// Why a file cannot go up.
enum Unreadable {
    Io(std::io::Error),
    Why(String),
}

/// The bytes of the regular file `path`, at most `limit` of them: opened once, and read
/// no further than one byte past the limit (a device or a file that grows as it is read
/// cannot get past it).
fn read_file(path: &Path, limit: u64) -> Result<Vec<u8>, Unreadable> {
    let file = std::fs::File::open(path).map_err(Unreadable::Io)?;
    if !file.metadata().map_err(Unreadable::Io)?.is_file() {
        return Err(Unreadable::Why("not a regular file".into()));
    }
    fsio::read_limited(file, limit)
        .map_err(Unreadable::Io)?
        .ok_or_else(|| Unreadable::Why(format!("more than {limit} bytes, the most a file may have")))
}

/// Eight bytes no other file of this run or of another run shares, in all likelihood:
/// the file's name on the wire is made of them. `RandomState` is seeded from the
/// system's random source once per process.
fn name_seed(index: usize) -> [u8; 8] {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.write_usize(index);
    h.finish().to_le_bytes()
}

/// Sends a prepared post; prints each file's URI in the cloud.
///
/// # Errors
///
/// The request's error.
pub fn post(s: &Session, p: FilePost) -> Result<Printed, CliError> {
    let uploaded: Vec<(String, Option<String>, PathBuf, usize, String)> = p
        .post
        .files
        .iter()
        .zip(&p.sources)
        .map(|(f, (point, member, path))| {
            (point.clone(), member.clone(), path.clone(), f.content.len(), format!("{STORED}{}", f.file_name()))
        })
        .collect();
    let r = s.client.files().post_measurepoint(p.post, s.file_opts()).map_err(CliError::from_request)?;
    let mut text = Vec::new();
    let mut list = Vec::new();
    for (point, member, path, bytes, uri) in uploaded {
        let at = member.as_ref().map_or_else(|| point.clone(), |m| format!("{point}.{m}"));
        text.push(format!("{at} = {uri} ({}, {bytes} bytes)", path.display()));
        list.push(json!({"point": point, "member": member, "file": path, "bytes": bytes, "uri": uri}));
    }
    text.push(format!("ok (code {})", r.code));
    Ok(Printed::ok(text.join("\n"), envelope(&r, json!({"files": list}))))
}

/// Where downloaded bytes go: standard output, or `PATH.part`, renamed to `PATH` once
/// complete (and removed when the download fails).
enum Sink {
    Stdout,
    File(AtomicFile),
}

impl Sink {
    fn write(&mut self, bytes: &[u8]) -> Result<(), CliError> {
        match self {
            Sink::Stdout => {
                let mut o = std::io::stdout().lock();
                o.write_all(bytes).and_then(|()| o.flush()).map_err(|e| CliError::io("writing to standard output", e))
            }
            Sink::File(file) => {
                file.write_all(bytes).map_err(|e| CliError::io(format!("writing {}", file.temp_path().display()), e))
            }
        }
    }
}

/// How much a ranged download got.
struct Got {
    bytes: u64,
    start: u64,
    total: Option<u64>,
}

/// Downloads stored file `uri` (all of it, or `range`) to `output` (standard output when
/// `None` or `-`).
///
/// # Errors
///
/// [`CliError::NotFound`] for a file the cloud does not have, [`CliError::Refused`] for a
/// range outside the file, [`CliError::Io`] when the output cannot be written, or the
/// request's error.
pub fn download(
    s: &Session,
    uri: &str,
    category: FileCategory,
    range: Option<(ByteRange, String)>,
    output: Option<&Path>,
) -> Result<Printed, CliError> {
    let to_file = output.filter(|p| p.as_os_str() != "-");
    let mut sink = match to_file {
        None => Sink::Stdout,
        Some(path) => Sink::File(
            AtomicFile::create(path, ".part", None)
                .map_err(|e| CliError::io(format!("creating {}", fsio::with_suffix(path, ".part").display()), e))?,
        ),
    };
    // A failure drops the sink, and with it the part written.
    let got = fetch(s, uri, category, range.as_ref(), &mut sink)?;
    if let (Sink::File(file), Some(path)) = (sink, to_file) {
        file.commit().map_err(|e| CliError::io(format!("writing {}", path.display()), e))?;
    }
    let end = (got.bytes > 0).then(|| got.start + (got.bytes - 1));
    let span = match (&range, end) {
        (Some(_), Some(end)) => {
            let of = got.total.map(|t| format!(" (of {t})")).unwrap_or_default();
            format!("bytes {}-{end}{of}", got.start)
        }
        (Some(_), None) => "no bytes".to_owned(),
        (None, _) => format!("{} bytes", got.bytes),
    };
    let text = match to_file {
        Some(p) => format!("{span} of {uri} written to {}", p.display()),
        // The bytes were the output; a note would mix with them.
        None => String::new(),
    };
    let doc = json!({
        "uri": uri,
        "path": to_file,
        "bytes": got.bytes,
        "range": range.as_ref().map(|_| json!({"start": got.start, "end": end, "total": got.total})),
    });
    let printed = Printed::ok(text, doc);
    Ok(if to_file.is_none() { printed.quiet() } else { printed })
}

/// The bytes of `uri` into `sink`.
fn fetch(
    s: &Session,
    uri: &str,
    category: FileCategory,
    range: Option<&(ByteRange, String)>,
    sink: &mut Sink,
) -> Result<Got, CliError> {
    let files = s.client.files();
    let opts = s.file_opts();
    let text = range.map(|(_, t)| t.as_str());
    let fail = |e: Error| file_error(e, uri, category, text);
    let Some(&(range, _)) = range else {
        // Whole: the SDK streams it range by range.
        let mut w = SinkWriter { sink, failed: None };
        let n = files.download_to(uri, category, &mut w);
        if let Some(e) = w.failed {
            return Err(e);
        }
        let n = n.map_err(fail)?;
        return Ok(Got { bytes: n, start: 0, total: Some(n) });
    };
    let get = |r: ByteRange| files.download(uri, category, Some(r), opts.clone()).map(|r| r.data);
    // A part that is the whole file (a server that ignores ranges): the bytes wanted of it.
    let from_whole = |part: FilePart, sink: &mut Sink, first: u64, last: Option<u64>| -> Result<Got, CliError> {
        let len = part.bytes.len() as u64;
        let (from, to) = (first.min(len), last.map_or(len, |l| l.saturating_add(1).min(len)));
        let bytes = part.bytes.get(from as usize..to as usize).unwrap_or_default();
        sink.write(bytes)?;
        Ok(Got { bytes: to.saturating_sub(from), start: from, total: Some(len) })
    };
    let (first, last) = match range {
        ByteRange::Span { start, end } => (start, Some(end)),
        ByteRange::From(start) => (start, None),
        ByteRange::Last(n) if n <= CHUNK => {
            let part = get(range).map_err(fail)?;
            let Some(r) = part.range else {
                let len = part.bytes.len() as u64;
                return from_whole(part, sink, len.saturating_sub(n), None);
            };
            sink.write(&part.bytes)?;
            return Ok(Got { bytes: part.bytes.len() as u64, start: r.start, total: r.total });
        }
        ByteRange::Last(n) => {
            // The file's size first, from its last byte; then the bytes, range by range.
            let probe = get(ByteRange::Last(1)).map_err(fail)?;
            let total = match probe.range {
                Some(r) => r.total.unwrap_or(r.end.saturating_add(1)),
                None => {
                    let len = probe.bytes.len() as u64;
                    return from_whole(probe, sink, len.saturating_sub(n), None);
                }
            };
            (total.saturating_sub(n), Some(total.saturating_sub(1)))
        }
    };
    let mut next = first;
    let mut got = Got { bytes: 0, start: first, total: None };
    loop {
        let end = next.saturating_add(CHUNK - 1);
        let end = last.map_or(end, |l| l.min(end));
        let part = match get(ByteRange::Span { start: next, end }) {
            Ok(p) => p,
            // Past the end of a file whose size was not said.
            Err(Error::Request(RequestError::HttpStatus(416))) if got.bytes > 0 => return Ok(got),
            Err(e) => return Err(fail(e)),
        };
        let Some(r) = checked_part(part.range, part.bytes.len(), (next, end), got.bytes, uri)? else {
            return from_whole(part, sink, first, last);
        };
        if got.bytes == 0 {
            got.start = r.start;
        }
        sink.write(&part.bytes)?;
        got.bytes += part.bytes.len() as u64;
        got.total = r.total.or(got.total);
        next = r.end.saturating_add(1);
        let done = part.bytes.is_empty() || last.is_some_and(|l| next > l) || got.total.is_some_and(|t| next >= t);
        if done {
            return Ok(got);
        }
    }
}

/// The range of a part asked for as bytes `next..=end` when `written` bytes were written
/// before it: `None` for a whole file (a server that ignores ranges), taken only as the
/// first part (later, its bytes would repeat those written).
///
/// # Errors
///
/// [`CliError::BadReply`] for a whole file after the first part, or a part that is not
/// the bytes asked for (each part starts where the last ended, so the download always
/// moves on).
fn checked_part(
    range: Option<ContentRange>,
    len: usize,
    (next, end): (u64, u64),
    written: u64,
    uri: &str,
) -> Result<Option<ContentRange>, CliError> {
    let Some(r) = range else {
        if written > 0 {
            return Err(CliError::BadReply(format!(
                "asked for bytes {next}-{end} of {uri}, got a whole file ({len} bytes) without a range after {written} bytes of it were written"
            )));
        }
        return Ok(None);
    };
    if r.start != next || r.end < r.start || r.end > end || len as u64 != r.end - r.start + 1 {
        return Err(CliError::BadReply(format!(
            "asked for bytes {next}-{end} of {uri}, got bytes {}-{} ({len} of them)",
            r.start, r.end
        )));
    }
    Ok(Some(r))
}

/// A [`Sink`] as an `io::Write` for the SDK's streamed download; a failure of the sink is
/// kept whole, so that it is reported as what it is.
struct SinkWriter<'a> {
    sink: &'a mut Sink,
    failed: Option<CliError>,
}

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.sink.write(buf) {
            Ok(()) => Ok(buf.len()),
            Err(e) => {
                let io = std::io::Error::other(e.to_string());
                self.failed = Some(e);
                Err(io)
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The error of a file operation on `uri`, said in its terms.
pub fn file_error(e: Error, uri: &str, category: FileCategory, range: Option<&str>) -> CliError {
    match e {
        Error::Request(RequestError::HttpStatus(416)) => CliError::Refused {
            code: 416,
            message: format!("the range {} is outside the file {uri}", range.unwrap_or("asked for")),
        },
        e => CliError::from_file_request(e, || format!("file {uri} of category {}", category.name())),
    }
}

/// A download URL of stored file `uri`.
///
/// # Errors
///
/// [`CliError::NotFound`] for a file the cloud does not have, or the request's error.
pub fn url(s: &Session, uri: &str, category: FileCategory) -> Result<Printed, CliError> {
    let r =
        s.client.files().download_url(uri, category, s.file_opts()).map_err(|e| file_error(e, uri, category, None))?;
    Ok(Printed::ok(r.data.clone(), envelope(&r, json!(r.data))))
}

/// Deletes stored file `uri`.
///
/// # Errors
///
/// [`CliError::NotFound`] for a file the cloud does not have, or the request's error.
pub fn delete(s: &Session, uri: &str) -> Result<Printed, CliError> {
    let r = s
        .client
        .files()
        .delete(uri, s.file_opts())
        .map_err(|e| CliError::from_file_request(e, || format!("file {uri}")))?;
    Ok(Printed::ok(format!("deleted {uri}"), envelope(&r, json!({}))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("enos-cli-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (n, b) in files {
            std::fs::write(dir.join(n), b).unwrap();
        }
        dir
    }

    #[test]
    fn local_values_become_files_of_points_and_struct_members() {
        let dir = temp("post", &[("a.jpg", b"aaaa"), ("cam.png", b"cc")]);
        let a = dir.join("a.jpg").display().to_string();
        let points =
            format!(r#"{{"newFile":"local://{a}","snapshot":{{"img":"local://cam","label":"cam1"}},"temp":20.5}}"#);
        let cam = format!("cam={}", dir.join("cam.png").display());
        let p = prepare_post(&points, &[cam], Some(7)).unwrap();
        assert_eq!(p.post.files.len(), 2);
        assert_eq!(
            (p.post.files[0].measurepoint.as_str(), p.post.files[0].struct_member.as_deref()),
            ("newFile", None)
        );
        assert_eq!(&p.post.files[0].content[..], b"aaaa");
        assert!(p.post.files[0].file_name().ends_with(".jpg"));
        assert_eq!(p.post.files[1].struct_member.as_deref(), Some("img"));
        assert!(p.post.files[1].file_name().ends_with(".png"));
        assert_ne!(p.post.files[0].name_seed, p.post.files[1].name_seed);
        // The other points and struct members stay; the file values are the SDK's to write.
        assert_eq!(Value::Object(p.post.points.clone()), json!({"snapshot": {"label": "cam1"}, "temp": 20.5}));
        assert_eq!(p.post.time, Some(7));
    }

    #[test]
    fn what_cannot_be_posted_is_named() {
        let dir = temp("bad", &[("a.bin", b"a")]);
        let a = dir.join("a.bin").display().to_string();
        let one = format!(r#"{{"newFile":"local://{a}"}}"#);
        let e = prepare_post(r#"{"temp":1}"#, &[], None).unwrap_err();
        assert!(e.to_string().contains("no value is a file") && e.exit_code() == 2, "{e}");
        let e = prepare_post(&one, &["x=y".into()], None).unwrap_err();
        assert!(e.to_string().contains("no value is \"local://x\""), "{e}");
        let e = prepare_post(&one, &["novalue".into()], None).unwrap_err();
        assert!(e.to_string().contains("expected NAME=PATH"), "{e}");
        let e = prepare_post(r#"{"newFile":"local://nope.bin"}"#, &[], None).unwrap_err();
        assert!(e.exit_code() == 5 && e.to_string().contains("nope.bin (of local://nope.bin)"), "{e}");
        let e = prepare_post(r#"{"newFile":"local://"}"#, &[], None).unwrap_err();
        assert!(e.to_string().contains("names no file"), "{e}");
    }

    #[test]
    fn a_file_is_read_once_and_no_further_than_its_limit() {
        let dir = temp("limit", &[("ten", b"0123456789"), ("eleven", b"0123456789a")]);
        assert!(matches!(read_file(&dir.join("ten"), 10), Ok(b) if b == b"0123456789"));
        let Err(Unreadable::Why(why)) = read_file(&dir.join("eleven"), 10) else { panic!("read past its limit") };
        assert_eq!(why, "more than 10 bytes, the most a file may have");
        // A device that never ends, or a folder, is not a file to post.
        #[cfg(unix)]
        assert!(matches!(read_file(Path::new("/dev/zero"), 10), Err(Unreadable::Why(w)) if w == "not a regular file"));
        assert!(matches!(read_file(&dir, 10), Err(Unreadable::Why(_) | Unreadable::Io(_))));
        let e = prepare_post(r#"{"f":"local://dir"}"#, &[format!("dir={}", dir.display())], None).unwrap_err();
        assert_eq!(e.exit_code(), if cfg!(unix) { 2 } else { 5 }, "{e}");
    }

    #[test]
    fn a_whole_file_is_taken_only_as_the_first_part() {
        let range = |start, end| Some(ContentRange { start, end, total: Some(100) });
        // The first part: ranged as asked, or the whole file from a server that ignores ranges.
        assert_eq!(checked_part(range(0, 9), 10, (0, 9), 0, "u").unwrap(), range(0, 9));
        assert_eq!(checked_part(None, 100, (0, 9), 0, "u").unwrap(), None);
        // A later part without its range would repeat the bytes written.
        let e = checked_part(None, 100, (10, 19), 10, "u").unwrap_err();
        assert!(matches!(e, CliError::BadReply(_)) && e.to_string().contains("after 10 bytes"), "{e}");
        // Not the bytes asked for.
        assert!(checked_part(range(11, 19), 9, (10, 19), 10, "u").is_err());
        assert!(checked_part(range(10, 19), 5, (10, 19), 10, "u").is_err());
        assert!(checked_part(range(10, 29), 20, (10, 19), 10, "u").is_err());
    }
}
