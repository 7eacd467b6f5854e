//! Store-and-forward: where measure point posts made while the cloud cannot be reached
//! are kept until they are delivered as `resume` requests.
//!
//! The core decides what is stored, when it is sent and when it is forgotten; a
//! [`RecordStore`] only keeps numbered records. Two come with the crate:
//!
//! * [`MemoryStore`]: records live as long as the process;
//! * [`FileStore`]: an append-only file of checksummed records that survives a restart
//!   of the program (or of the device).
//!
//! ```
//! use enos_proto::store::{FileStore, Fsync, OfflineStore};
//!
//! let dir = std::env::temp_dir().join(format!("enos-store-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let store = OfflineStore::new(FileStore::open(dir.join("offline.log"), Fsync::Always)?);
//! // config.offline_store = Some(store);
//! # drop(store);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # The file format
//!
//! An 8-byte header `ENOSOFF1`, then records, each `len: u32` (little-endian, the bytes
//! after the checksum), `crc: u32` (CRC-32 of those bytes), then `kind: u8`,
//! `seq: u64` and the body. Kind 1 keeps a body under its sequence number; kind 2 (no
//! body) says that record `seq` is delivered or dropped. Appends are the only writes,
//! so a crash can only leave the last record incomplete: on opening, a record that runs
//! past the end or fails its checksum ends the file there (it is cut off, and
//! [`FileStore::recovered`] says how many bytes were), and every record before it is
//! kept. When removed records take more room than the live ones (and at least
//! [`COMPACT_MIN_BYTES`]), the live records are written to a new file, synced, and
//! renamed over the old one, so the file is either the old one or the new one whole.
//!
//! # Durability ([`Fsync`])
//!
//! A record is handed to the operating system before `append` returns, so it survives
//! the program being killed whatever the policy. Surviving a power cut needs the data
//! on the disk: [`Fsync::Always`] syncs each record before `append` returns (the
//! default: what the core counts as stored is on the disk), [`Fsync::Every`] every n
//! records, and [`Fsync::Never`] leaves it to the operating system (seconds of data
//! may be lost in a power cut). Removals are never synced on their own: a removal lost
//! in a power cut sends that record once more (a duplicate, never a loss).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Numbered records, kept in order until removed: the storage under store-and-forward.
///
/// Sequence numbers grow with each append (across restarts for a persistent store).
/// The core calls these from its own methods, so they should return quickly; an error
/// is reported to the application and nothing the store still holds is forgotten.
pub trait RecordStore: Send {
    /// Keeps `body`; returns its sequence number, greater than any before it.
    ///
    /// # Errors
    ///
    /// The store could not keep it (then it keeps nothing of it).
    fn append(&mut self, body: &[u8]) -> io::Result<u64>;

    /// Appends to `out`, oldest first, at most `max` records whose sequence number is
    /// greater than `after` (all when `None`).
    ///
    /// # Errors
    ///
    /// The records could not be read.
    fn read(&mut self, after: Option<u64>, max: usize, out: &mut Vec<(u64, Vec<u8>)>) -> io::Result<()>;

    /// Forgets record `seq` (delivered or dropped); unknown numbers are ignored.
    ///
    /// # Errors
    ///
    /// The removal could not be recorded (the record may come back after a restart).
    fn remove(&mut self, seq: u64) -> io::Result<()>;

    /// The oldest record's sequence number.
    fn oldest(&self) -> Option<u64>;

    /// Records kept.
    fn len(&self) -> usize;

    /// Whether it keeps no record.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the bodies kept.
    fn bytes(&self) -> u64;
}

/// What a post does when the offline store is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// The new post is refused with `SubmitError::OfflineStoreFull`; what is stored
    /// stays.
    #[default]
    RejectNew,
    /// The oldest records make room: each one's request ends with
    /// `RequestError::Dropped` (when its caller is still waiting) and is reported as
    /// `ClientError::OfflineDropped`.
    DropOldest,
}

/// Store-and-forward for a client: a [`RecordStore`] with its bounds, what
/// `Config::offline_store` holds. Clones share the store.
///
/// While the session is down, a measure point post (single or batch) is kept here as
/// a record, with the time it was made, instead of waiting in memory for its timeout.
/// Once the session is up again (and a gateway's sub-devices are logged back in), the
/// records are sent oldest first as resumes, at most `max_inflight` requests at a time:
/// records of single posts together, up to 100 in one `thing.measurepoint.resume.batch`
/// (a sub-device's entry naming it, with `allowOfflineSubDevice`), a batch post's as its
/// own batch resume. A record is forgotten when the cloud answers its resume: with 200
/// it is delivered, with another code it is refused for good (and the caller gets that
/// code); a refused batch is first split, each record sent again alone for a verdict of
/// its own. A resume that times out or whose connection drops is sent again, so a record
/// reaches the cloud at least once. The request of a stored post ends with the reply of
/// its resume, so it has no timeout of its own while stored.
#[derive(Clone)]
pub struct OfflineStore {
    store: Arc<Mutex<dyn RecordStore>>,
    pub(crate) max_records: usize,
    pub(crate) max_bytes: u64,
    pub(crate) when_full: WhenFull,
}

impl OfflineStore {
    /// Store-and-forward into `store`, holding at most 100,000 records and 64 MiB,
    /// refusing new posts when full.
    pub fn new(store: impl RecordStore + 'static) -> Self {
        OfflineStore {
            store: Arc::new(Mutex::new(store)),
            max_records: 100_000,
            max_bytes: 64 * 1024 * 1024,
            when_full: WhenFull::RejectNew,
        }
    }

    /// Store-and-forward in memory: records live as long as the process.
    pub fn memory() -> Self {
        OfflineStore::new(MemoryStore::default())
    }

    /// At most `n` records.
    #[must_use]
    pub fn max_records(mut self, n: usize) -> Self {
        self.max_records = n;
        self
    }

    /// At most `n` bytes of records.
    #[must_use]
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = n;
        self
    }

    /// What a post does when the store is full.
    #[must_use]
    pub fn when_full(mut self, policy: WhenFull) -> Self {
        self.when_full = policy;
        self
    }

    /// Runs `f` on the store. A store whose user panicked is still used: both stores
    /// of this crate keep their records whole at every step.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut dyn RecordStore) -> R) -> R {
        let mut guard = self.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut *guard)
    }

    /// Records kept.
    pub fn len(&self) -> usize {
        self.with(|s| s.len())
    }

    /// Whether it keeps no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the records kept.
    pub fn bytes(&self) -> u64 {
        self.with(|s| s.bytes())
    }
}

impl std::fmt::Debug for OfflineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfflineStore")
            .field("max_records", &self.max_records)
            .field("max_bytes", &self.max_bytes)
            .field("when_full", &self.when_full)
            .finish_non_exhaustive()
    }
}

/// Two handles are equal when they share the store and its bounds.
impl PartialEq for OfflineStore {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.store, &other.store)
            && (self.max_records, self.max_bytes, self.when_full)
                == (other.max_records, other.max_bytes, other.when_full)
    }
}

impl Eq for OfflineStore {}

/// Records in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: BTreeMap<u64, Vec<u8>>,
    next: u64,
    bytes: u64,
}

impl RecordStore for MemoryStore {
    fn append(&mut self, body: &[u8]) -> io::Result<u64> {
        self.next += 1;
        self.records.insert(self.next, body.to_vec());
        self.bytes += body.len() as u64;
        Ok(self.next)
    }

    fn read(&mut self, after: Option<u64>, max: usize, out: &mut Vec<(u64, Vec<u8>)>) -> io::Result<()> {
        let from = after.map_or(0, |a| a.saturating_add(1));
        out.extend(self.records.range(from..).take(max).map(|(s, b)| (*s, b.clone())));
        Ok(())
    }

    fn remove(&mut self, seq: u64) -> io::Result<()> {
        if let Some(b) = self.records.remove(&seq) {
            self.bytes -= b.len() as u64;
        }
        Ok(())
    }

    fn oldest(&self) -> Option<u64> {
        self.records.keys().next().copied()
    }

    fn len(&self) -> usize {
        self.records.len()
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// When a [`FileStore`] syncs its file to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fsync {
    /// After each appended record, before `append` returns.
    #[default]
    Always,
    /// After every n appended records (and when the store is dropped).
    Every(u32),
    /// Never: the operating system writes the file back when it chooses.
    Never,
}

const MAGIC: &[u8; 8] = b"ENOSOFF1";
const KIND_RECORD: u8 = 1;
const KIND_REMOVED: u8 = 2;
/// Bytes before a record's body: length, checksum, kind, sequence number.
const HEAD: u64 = 4 + 4 + 1 + 8;
/// The largest record body a file may hold; a longer length is damage.
pub const MAX_RECORD_BYTES: u32 = 16 * 1024 * 1024;
/// Dead bytes (removed records and removal marks) below this never trigger compaction.
pub const COMPACT_MIN_BYTES: u64 = 1024 * 1024;

/// Records in an append-only file (see the [module docs](self) for the format).
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    file: File,
    fsync: Fsync,
    /// Live records: sequence number → (offset of the body, its length).
    index: BTreeMap<u64, (u64, u32)>,
    next: u64,
    /// Where the next record goes (the end of the valid records).
    end: u64,
    live_bytes: u64,
    unsynced: u32,
    recovered: u64,
}

impl FileStore {
    /// Opens the store at `path`, creating it if missing. A damaged tail (a record cut
    /// short by a crash, or failing its checksum) is cut off, and every record before it
    /// is kept.
    ///
    /// # Errors
    ///
    /// The file cannot be opened, read or written, or it is not such a store.
    pub fn open(path: impl AsRef<Path>, fsync: Fsync) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        let size = file.metadata()?.len();
        if size < MAGIC.len() as u64 {
            // New, or cut before its header was whole: nothing can have been stored.
            file.set_len(0)?;
            file.write_all(MAGIC)?;
            file.sync_all()?;
        } else {
            let mut magic = [0u8; 8];
            file.read_exact(&mut magic)?;
            if &magic != MAGIC {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "not an offline store file"));
            }
        }
        let mut store = FileStore {
            path,
            file,
            fsync,
            index: BTreeMap::new(),
            next: 0,
            end: MAGIC.len() as u64,
            live_bytes: 0,
            unsynced: 0,
            recovered: 0,
        };
        store.scan(size.max(MAGIC.len() as u64))?;
        Ok(store)
    }

    /// Reads every record, rebuilding the index; cuts the file at the first damaged one.
    fn scan(&mut self, size: u64) -> io::Result<()> {
        let mut data = Vec::new();
        self.file.seek(SeekFrom::Start(0))?;
        self.file.read_to_end(&mut data)?;
        let mut at = MAGIC.len();
        while let Some((kind, seq, body)) = parse_record(&data[at..]) {
            let body_at = at as u64 + HEAD;
            match kind {
                KIND_RECORD => {
                    // `parse_record` bounds the length by MAX_RECORD_BYTES.
                    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
                    self.index.insert(seq, (body_at, len));
                    self.live_bytes += u64::from(len);
                }
                _ => {
                    if let Some((_, len)) = self.index.remove(&seq) {
                        self.live_bytes -= u64::from(len);
                    }
                }
            }
            self.next = self.next.max(seq);
            at += HEAD as usize + body.len();
        }
        self.end = at as u64;
        if self.end < size {
            self.recovered = size - self.end;
            self.file.set_len(self.end)?;
            self.file.sync_all()?;
        }
        self.file.seek(SeekFrom::Start(self.end))?;
        Ok(())
    }

    /// Bytes cut off the end when the file was opened (a record torn by a crash).
    pub fn recovered(&self) -> u64 {
        self.recovered
    }

    /// The file's length: live records, removed ones not yet compacted, removal marks.
    pub fn file_len(&self) -> u64 {
        self.end
    }

    fn write_record(&mut self, kind: u8, seq: u64, body: &[u8]) -> io::Result<()> {
        let mut rec = Vec::with_capacity(HEAD as usize + body.len());
        encode_record(&mut rec, kind, seq, body);
        self.file.seek(SeekFrom::Start(self.end))?;
        if let Err(e) = self.file.write_all(&rec) {
            // Whatever part was written is cut off again: the file ends with whole records.
            let _ = self.file.set_len(self.end);
            return Err(e);
        }
        self.end += rec.len() as u64;
        Ok(())
    }

    fn sync_policy(&mut self) -> io::Result<()> {
        match self.fsync {
            Fsync::Always => self.file.sync_data(),
            Fsync::Every(n) => {
                self.unsynced += 1;
                if self.unsynced >= n.max(1) {
                    self.unsynced = 0;
                    self.file.sync_data()
                } else {
                    Ok(())
                }
            }
            Fsync::Never => Ok(()),
        }
    }

    /// Rewrites the live records into a fresh file when removed ones take more room.
    fn maybe_compact(&mut self) -> io::Result<()> {
        let live_file = MAGIC.len() as u64 + self.index.len() as u64 * HEAD + self.live_bytes;
        let dead = self.end - live_file;
        if dead < COMPACT_MIN_BYTES || dead < live_file {
            return Ok(());
        }
        self.compact()
    }

    /// Writes the live records to `<path>.compact`, syncs it, and renames it over the
    /// file: a crash leaves either file whole.
    pub fn compact(&mut self) -> io::Result<()> {
        let tmp = self.path.with_extension("compact");
        let mut out = File::create(&tmp)?;
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(MAGIC);
        let mut index = BTreeMap::new();
        let mut at = MAGIC.len() as u64;
        let mut body = Vec::new();
        let entries: Vec<(u64, (u64, u32))> = self.index.iter().map(|(s, v)| (*s, *v)).collect();
        for (seq, (off, len)) in entries {
            self.read_body(off, len, &mut body)?;
            encode_record(&mut buf, KIND_RECORD, seq, &body);
            index.insert(seq, (at + HEAD, len));
            at += HEAD + u64::from(len);
            if buf.len() >= 64 * 1024 {
                out.write_all(&buf)?;
                buf.clear();
            }
        }
        out.write_all(&buf)?;
        out.sync_all()?;
        drop(out);
        std::fs::rename(&tmp, &self.path)?;
        sync_dir(&self.path);
        self.file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        self.index = index;
        self.end = at;
        Ok(())
    }

    fn read_body(&mut self, off: u64, len: u32, out: &mut Vec<u8>) -> io::Result<()> {
        out.clear();
        out.resize(len as usize, 0);
        self.file.seek(SeekFrom::Start(off))?;
        self.file.read_exact(out)
    }
}

impl Drop for FileStore {
    fn drop(&mut self) {
        if self.unsynced > 0 {
            let _ = self.file.sync_data();
        }
    }
}

impl RecordStore for FileStore {
    fn append(&mut self, body: &[u8]) -> io::Result<u64> {
        let len = u32::try_from(body.len())
            .ok()
            .filter(|l| *l <= MAX_RECORD_BYTES)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "record larger than MAX_RECORD_BYTES"))?;
        let seq = self.next + 1;
        let body_at = self.end + HEAD;
        self.write_record(KIND_RECORD, seq, body)?;
        // Its number is used even if the sync fails: a record that reaches the disk anyway
        // comes back after a restart under a number of its own (sent once more, never
        // mistaken for another).
        self.next = seq;
        self.sync_policy()?;
        self.index.insert(seq, (body_at, len));
        self.live_bytes += u64::from(len);
        Ok(seq)
    }

    fn read(&mut self, after: Option<u64>, max: usize, out: &mut Vec<(u64, Vec<u8>)>) -> io::Result<()> {
        let from = after.map_or(0, |a| a.saturating_add(1));
        let wanted: Vec<(u64, (u64, u32))> = self.index.range(from..).take(max).map(|(s, v)| (*s, *v)).collect();
        for (seq, (off, len)) in wanted {
            let mut body = Vec::new();
            self.read_body(off, len, &mut body)?;
            out.push((seq, body));
        }
        Ok(())
    }

    fn remove(&mut self, seq: u64) -> io::Result<()> {
        let Some(&(_, len)) = self.index.get(&seq) else { return Ok(()) };
        self.write_record(KIND_REMOVED, seq, &[])?;
        self.index.remove(&seq);
        self.live_bytes -= u64::from(len);
        self.maybe_compact()
    }

    fn oldest(&self) -> Option<u64> {
        self.index.keys().next().copied()
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn bytes(&self) -> u64 {
        self.live_bytes
    }
}

fn encode_record(out: &mut Vec<u8>, kind: u8, seq: u64, body: &[u8]) {
    let len = 1 + 8 + body.len();
    let start = out.len();
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(kind);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The record at the start of `data`: its kind, sequence number and body; `None` when
/// it is incomplete, fails its checksum, or is not a record.
fn parse_record(data: &[u8]) -> Option<(u8, u64, &[u8])> {
    let len = u32::from_le_bytes(data.get(0..4)?.try_into().ok()?);
    if !(9..=MAX_RECORD_BYTES.saturating_add(9)).contains(&len) {
        return None;
    }
    let crc = u32::from_le_bytes(data.get(4..8)?.try_into().ok()?);
    let rest = data.get(8..8 + len as usize)?;
    if crc32fast::hash(rest) != crc {
        return None;
    }
    let kind = rest[0];
    let seq = u64::from_le_bytes(rest[1..9].try_into().ok()?);
    match kind {
        KIND_RECORD => Some((kind, seq, &rest[9..])),
        KIND_REMOVED if len == 9 => Some((kind, seq, &[])),
        _ => None,
    }
}

/// Makes a rename durable (Unix: sync the directory); elsewhere a no-op.
fn sync_dir(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let p = std::env::temp_dir().join(format!("enos-store-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn file(&self) -> PathBuf {
            self.0.join("offline.log")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn all(s: &mut dyn RecordStore) -> Vec<(u64, Vec<u8>)> {
        let mut v = Vec::new();
        s.read(None, usize::MAX, &mut v).unwrap();
        v
    }

    fn check_store(s: &mut dyn RecordStore) {
        let a = s.append(b"one").unwrap();
        let b = s.append(b"two").unwrap();
        let c = s.append(b"three").unwrap();
        assert!(a < b && b < c);
        assert_eq!((s.len(), s.bytes(), s.oldest()), (3, 11, Some(a)));
        s.remove(b).unwrap();
        s.remove(b).unwrap();
        assert_eq!(all(s), vec![(a, b"one".to_vec()), (c, b"three".to_vec())]);
        let mut after = Vec::new();
        s.read(Some(a), 10, &mut after).unwrap();
        assert_eq!(after, vec![(c, b"three".to_vec())]);
        s.remove(a).unwrap();
        assert_eq!((s.len(), s.bytes(), s.oldest()), (1, 5, Some(c)));
    }

    #[test]
    fn memory_store_keeps_records_in_order_until_removed() {
        check_store(&mut MemoryStore::default());
    }

    #[test]
    fn file_store_keeps_records_in_order_until_removed_and_across_reopening() {
        let dir = TempDir::new("order");
        let mut s = FileStore::open(dir.file(), Fsync::Always).unwrap();
        check_store(&mut s);
        drop(s);
        let mut s = FileStore::open(dir.file(), Fsync::Never).unwrap();
        assert_eq!(all(&mut s), vec![(3, b"three".to_vec())]);
        assert_eq!(s.recovered(), 0);
        // Numbers keep growing after a reopening.
        assert_eq!(s.append(b"four").unwrap(), 4);
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_every_earlier_one_kept() {
        let dir = TempDir::new("torn");
        let mut s = FileStore::open(dir.file(), Fsync::Always).unwrap();
        for i in 0..10u8 {
            s.append(&[i; 100]).unwrap();
        }
        s.remove(1).unwrap();
        let whole = s.file_len();
        drop(s);
        // Every way the last record can be torn: each length short of whole.
        let bytes = std::fs::read(dir.file()).unwrap();
        let last = {
            let mut s = FileStore::open(dir.file(), Fsync::Always).unwrap();
            s.append(&[10; 100]).unwrap();
            s.file_len()
        };
        let full = std::fs::read(dir.file()).unwrap();
        assert_eq!(full.len() as u64, last);
        for cut in whole..last {
            std::fs::write(dir.file(), &full[..cut as usize]).unwrap();
            let mut s = FileStore::open(dir.file(), Fsync::Always).unwrap();
            assert_eq!(s.recovered(), cut - whole, "cut at {cut}");
            let seqs: Vec<u64> = all(&mut s).into_iter().map(|(q, _)| q).collect();
            assert_eq!(seqs, (2..=10).collect::<Vec<_>>(), "cut at {cut}");
            // The store goes on from there.
            assert_eq!(s.append(b"next").unwrap(), 11);
        }
        // A flipped bit in the last record: cut off too, the rest kept.
        let mut bad = full.clone();
        let n = bad.len();
        bad[n - 3] ^= 0x40;
        std::fs::write(dir.file(), &bad).unwrap();
        let mut s = FileStore::open(dir.file(), Fsync::Always).unwrap();
        assert_eq!(s.recovered(), last - whole);
        assert_eq!(all(&mut s).len(), 9);
        assert_eq!(bytes.len() as u64, whole);
    }

    #[test]
    fn compaction_keeps_live_records_and_bounds_the_file() {
        let dir = TempDir::new("compact");
        let mut s = FileStore::open(dir.file(), Fsync::Never).unwrap();
        let body = vec![7u8; 1000];
        let mut max_len = 0;
        // A queue that stays about 100 records deep while 10,000 go through it.
        for i in 0..10_000u64 {
            let seq = s.append(&body).unwrap();
            assert_eq!(seq, i + 1);
            if seq > 100 {
                s.remove(seq - 100).unwrap();
            }
            max_len = max_len.max(s.file_len());
        }
        let live = 100 * (HEAD + 1000) + 8;
        assert!(max_len <= 2 * live + COMPACT_MIN_BYTES + 2 * HEAD + 1000, "file grew to {max_len}");
        let kept: Vec<u64> = all(&mut s).into_iter().map(|(q, _)| q).collect();
        assert_eq!(kept, (9_901..=10_000).collect::<Vec<_>>());
        drop(s);
        let mut s = FileStore::open(dir.file(), Fsync::Never).unwrap();
        let kept: Vec<u64> = all(&mut s).into_iter().map(|(q, _)| q).collect();
        assert_eq!(kept, (9_901..=10_000).collect::<Vec<_>>());
        assert!(!dir.file().with_extension("compact").exists());
    }

    #[test]
    fn a_file_that_is_not_a_store_is_refused() {
        let dir = TempDir::new("foreign");
        std::fs::write(dir.file(), b"something else entirely").unwrap();
        let e = FileStore::open(dir.file(), Fsync::Always).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // And untouched.
        assert_eq!(std::fs::read(dir.file()).unwrap(), b"something else entirely");
    }
}
