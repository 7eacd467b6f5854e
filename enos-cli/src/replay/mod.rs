//! `enos replay FILE`: backfill history through resumes, with a window of requests in
//! flight, a rate limit, a checkpoint after every answered request, and a summary.
//!
//! Three kinds of thread: one reads the file into batches (and keeps the rate), `--window`
//! workers each send one batch at a time and wait for its reply (the blocking client is
//! shared between threads; each call waits on its own), and the main thread collects the
//! outcomes. Batches are answered in any order; the checkpoint moves over a batch only
//! once every batch before it is answered, so that it never skips a row. A worker decides
//! whether to send a batch in the same locked section as it takes it, so that once the
//! replay stops the batches not sent are always the last ones: after Ctrl-C every row
//! sent was answered, and the checkpoint is exact. After a request that fails (no reply
//! in time, the connection lost) the checkpoint stops before it, and the requests after
//! it that were answered are sent again by `--resume`.

mod checkpoint;
mod input;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use enos_transport_blocking::proto::ops::{BatchEntry, MeasurepointBatchResume};
use enos_transport_blocking::DeviceKeys;
use serde_json::{json, Value};

pub use checkpoint::{path_for, Checkpoint, Refusal};
pub use input::{Position, Reader, Row};

use crate::cli::ReplayArgs;
use crate::error::{exit, CliError};
use crate::fsio::Durability;
use crate::output::{Out, ProgressLine};
use crate::session::{Sending, Session};
use crate::settings::Settings;

/// Rows sent in one request.
struct Batch {
    seq: u64,
    rows: Vec<Row>,
    /// Where the input stands after its last row.
    end: Position,
}

/// How a batch ended.
enum Outcome {
    Accepted,
    Refused {
        code: i32,
        message: String,
    },
    /// No answer (a timeout, a lost connection): the replay stops.
    Failed(CliError),
    /// Not sent: the replay was stopping.
    NotSent,
}

/// A batch's outcome, for the collector.
struct Done {
    seq: u64,
    rows: u64,
    end: Position,
    outcome: Outcome,
}

/// What this run did.
#[derive(Default)]
struct Tally {
    requests: u64,
    sent: u64,
    accepted: u64,
    refused: BTreeMap<i32, Refusal>,
    unanswered: u64,
}

impl Tally {
    fn refused_rows(&self) -> u64 {
        self.refused.values().map(|r| r.rows).sum()
    }
}

/// What makes the threads stop: Ctrl-C, `--stop-after`, an error.
#[derive(Default)]
struct Stopping {
    /// Send nothing more.
    now: AtomicBool,
    /// Interrupted (Ctrl-C, `--stop-after`): the replay is not complete.
    interrupted: AtomicBool,
    /// The reader reached the end of the file.
    exhausted: AtomicBool,
    /// The first error that stops the replay.
    error: Mutex<Option<CliError>>,
}

impl Stopping {
    fn fail(&self, e: CliError) {
        let mut slot = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        slot.get_or_insert(e);
        self.now.store(true, Ordering::SeqCst);
    }
}

/// Runs `enos replay`: the exit code (0 done, 1 rows refused, 130 interrupted, or the
/// code of the error that stopped it).
///
/// # Errors
///
/// Errors before anything is sent: the file, its rows, the checkpoint, the settings, the
/// connection.
pub fn run(
    args: &ReplayArgs,
    settings: impl FnOnce() -> Result<Settings, CliError>,
    out: Out,
    sending: Sending,
    as_device: Option<&DeviceKeys>,
) -> Result<u8, CliError> {
    let cp_path = path_for(&args.file);
    let file_name = args.file.display().to_string();
    let mut reader = Reader::open(&args.file, args.format)?;
    let start = reader.position();
    let existing = if args.restart { None } else { Checkpoint::load(&cp_path)? };
    let resumed = resume_from(existing, args.resume, &mut reader, start, &cp_path, &file_name)?;

    // Every row is checked before the first is sent.
    let from = reader.position();
    let mut total = 0u64;
    while reader.next()?.is_some() {
        total += 1;
    }
    reader.rewind(from)?;
    if args.dry_run {
        let text = format!("{file_name}: {total} rows to send, from line {} ({:?})", from.line + 1, reader.format);
        out.result(
            &text,
            &json!({"file": file_name, "rows": total, "fromLine": from.line + 1, "format": reader.format}),
        );
        return Ok(exit::OK);
    }

    let settings = settings()?;
    settings.url()?;
    let device = match as_device {
        Some(t) => format!("{} as {t}", settings.device()?),
        None => settings.device()?.to_string(),
    };
    if let Some(cp) = resumed.as_ref().filter(|cp| cp.device != device) {
        return Err(CliError::Usage(format!(
            "{}: that replay went to {}, not {device}; start over with --restart",
            cp_path.display(),
            cp.device
        )));
    }
    let resumed_from = resumed.as_ref().map(|cp| cp.line + 1);
    let mut cp =
        resumed.unwrap_or_else(|| Checkpoint::new(device.clone(), reader.format, reader.header.clone(), start));
    // Saved before anything connects: a checkpoint that cannot be written is found before
    // a row is sent.
    cp.save(&cp_path, Durability::Synced)?;
    let session = match Session::open(&settings, out, sending, as_device) {
        Ok(s) => s,
        Err(e) => {
            // Nothing was sent: a new checkpoint has nothing to keep.
            if resumed_from.is_none() {
                let _ = std::fs::remove_file(&cp_path);
            }
            return Err(e);
        }
    };
    let rows_before = cp.rows;

    let stopping = Arc::new(Stopping::default());
    {
        let s = stopping.clone();
        crate::signals::on_interrupt(move || {
            s.interrupted.store(true, Ordering::SeqCst);
            s.now.store(true, Ordering::SeqCst);
        })?;
    }
    let started = Instant::now();
    let mut tally = Tally::default();
    let progress = Progress::new(total, started);
    send_all(args, reader, &session, &mut cp, &cp_path, &mut tally, &stopping, &progress);
    progress.line.clear();
    let elapsed = started.elapsed();
    session.close();

    let error = stopping.error.lock().unwrap_or_else(PoisonError::into_inner).take();
    let interrupted = stopping.interrupted.load(Ordering::SeqCst);
    let complete =
        error.is_none() && !interrupted && stopping.exhausted.load(Ordering::SeqCst) && cp.rows == rows_before + total;
    let kept = if complete {
        let _ = std::fs::remove_file(&cp_path);
        None
    } else {
        if let Err(e) = cp.save(&cp_path, Durability::Synced) {
            eprintln!("enos: {e}");
        }
        Some(cp_path.clone())
    };
    let summary =
        Summary { file: &file_name, device: &device, tally: &tally, cp: &cp, elapsed, resumed_from, complete };
    out.result(
        &summary.text(interrupted, error.as_ref(), kept.is_some()),
        &summary.json(error.as_ref(), kept.as_deref()),
    );
    if let Some(e) = error {
        eprintln!("enos: {e}");
        return Ok(e.exit_code());
    }
    if interrupted {
        eprintln!("enos: interrupted after line {}; go on with: enos replay {file_name} --resume", cp.line);
        return Ok(exit::INTERRUPTED);
    }
    Ok(if cp.refused_rows() > 0 { exit::REFUSED } else { exit::OK })
}

/// The checkpoint to go on from, if any, checked against the file as it is now (its
/// format, header, size, and the hash of its bytes before the checkpoint), with the
/// reader moved to it.
///
/// # Errors
///
/// [`CliError::Usage`] for a checkpoint and no `--resume` or `--restart`, or one that
/// does not fit the file.
fn resume_from(
    existing: Option<Checkpoint>,
    resume: bool,
    reader: &mut Reader,
    start: Position,
    cp_path: &Path,
    file_name: &str,
) -> Result<Option<Checkpoint>, CliError> {
    let changed = |what: String| {
        CliError::Usage(format!("{}: {what}: the file changed; start over with --restart", cp_path.display()))
    };
    match (existing, resume) {
        (Some(cp), true) => {
            if cp.format != reader.format || cp.header != reader.header {
                return Err(CliError::Usage(format!(
                    "{}: made for another format or header than {file_name} has now; start over with --restart",
                    cp_path.display()
                )));
            }
            if cp.offset < start.offset || cp.offset > reader.size {
                return Err(changed(format!(
                    "it stopped at byte {} and {file_name} has {} bytes",
                    cp.offset, reader.size
                )));
            }
            let hash = reader.hash_of_first(cp.offset)?;
            if !cp.hash_is(hash) {
                return Err(changed(format!(
                    "the first {} bytes of {file_name} (up to line {}, the rows already sent) are not what they were",
                    cp.offset, cp.line
                )));
            }
            reader.rewind(Position { offset: cp.offset, line: cp.line, hash })?;
            Ok(Some(cp))
        }
        (Some(cp), false) => Err(CliError::Usage(format!(
            "{}: a replay of {file_name} stopped after line {} ({} rows answered); go on with --resume, or start over with --restart",
            cp_path.display(),
            cp.line,
            cp.rows
        ))),
        (None, true) => {
            eprintln!("enos: no checkpoint {}: nothing to resume, replaying from the first row", cp_path.display());
            Ok(None)
        }
        (None, false) => Ok(None),
    }
}

/// Sends the rows of `reader` with the threads of a replay (a reader, `--window` workers,
/// this one collecting), until the end of the file, a stop or an error.
#[allow(clippy::too_many_arguments)]
fn send_all(
    args: &ReplayArgs,
    reader: Reader,
    session: &Session,
    cp: &mut Checkpoint,
    cp_path: &Path,
    tally: &mut Tally,
    stopping: &Stopping,
    progress: &Progress,
) {
    let window = usize::try_from(args.window).unwrap_or(8);
    let (work_tx, work_rx) = mpsc::sync_channel::<Batch>(window);
    let work_rx = Mutex::new(work_rx);
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    std::thread::scope(|scope| {
        let batch_rows = usize::try_from(args.batch).unwrap_or(100);
        let (rate, stop_after) = (args.rate, args.stop_after);
        scope.spawn(move || produce(reader, batch_rows, rate, stop_after, &work_tx, stopping));
        for _ in 0..window {
            let (done_tx, work_rx) = (done_tx.clone(), &work_rx);
            let skip_invalid = args.skip_invalid;
            scope.spawn(move || {
                while let Some((batch, go)) = take(work_rx, stopping, || {}) {
                    let rows = batch.rows.len() as u64;
                    let outcome = if go { send(session, batch.rows, skip_invalid) } else { Outcome::NotSent };
                    if done_tx.send(Done { seq: batch.seq, rows, end: batch.end, outcome }).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        collect(&done_rx, cp, cp_path, tally, stopping, progress);
    });
}

/// The next batch, and whether to send it (`false` once the replay stops). The stop is
/// read in the same locked section as the batch is taken, so batches are decided in
/// their order: once one is not sent, no later one is. (`taken` runs between the two,
/// in that section.)
fn take(work: &Mutex<mpsc::Receiver<Batch>>, stopping: &Stopping, taken: impl FnOnce()) -> Option<(Batch, bool)> {
    let work = work.lock().unwrap_or_else(PoisonError::into_inner);
    let batch = work.recv().ok()?;
    taken();
    let go = !stopping.now.load(Ordering::SeqCst);
    drop(work);
    Some((batch, go))
}

/// Reads rows into batches and hands them to the workers, at most `rate` rows a second,
/// until the end of the file, `stop_after` rows, or a stop.
fn produce(
    mut reader: Reader,
    batch_rows: usize,
    rate: f64,
    stop_after: Option<u64>,
    work: &mpsc::SyncSender<Batch>,
    stopping: &Stopping,
) {
    let start = Instant::now();
    let mut dispatched = 0u64;
    for seq in 0.. {
        if stopping.now.load(Ordering::SeqCst) {
            return;
        }
        let room = stop_after
            .map_or(batch_rows, |n| usize::try_from(n.saturating_sub(dispatched)).unwrap_or(0).min(batch_rows));
        let mut rows = Vec::with_capacity(room);
        while rows.len() < room {
            match reader.next() {
                Ok(Some(row)) => rows.push(row),
                Ok(None) => break,
                Err(e) => return stopping.fail(e),
            }
        }
        if rows.is_empty() {
            if room == 0 {
                stopping.interrupted.store(true, Ordering::SeqCst);
            } else {
                stopping.exhausted.store(true, Ordering::SeqCst);
            }
            return;
        }
        if rate > 0.0 {
            let Some(due) =
                Duration::try_from_secs_f64(dispatched as f64 / rate).ok().and_then(|d| start.checked_add(d))
            else {
                return stopping.fail(CliError::Usage(format!(
                    "--rate {rate}: row {dispatched} would be due further ahead than this clock reaches"
                )));
            };
            while let Some(wait) = due.checked_duration_since(Instant::now()).filter(|w| !w.is_zero()) {
                if stopping.now.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(wait.min(Duration::from_millis(50)));
            }
        }
        dispatched += rows.len() as u64;
        let batch = Batch { seq, rows, end: reader.position() };
        if work.send(batch).is_err() {
            return;
        }
    }
}

/// Sends one batch: a single resume for one row of the connected device (or of the `--as`
/// sub-device), else a batch resume whose entries name their sub-devices.
fn send(s: &Session, rows: Vec<Row>, skip_invalid: bool) -> Outcome {
    let data = s.client.device_data();
    let result = match <[Row; 1]>::try_from(rows) {
        Ok([row]) if row.device.is_none() => data.resume_measurepoint(row.points, row.time, s.opts()),
        rows => {
            let rows = match rows {
                Ok(one) => Vec::from(one),
                Err(many) => many,
            };
            let default = s.target.as_ref();
            let mut subs = false;
            let entries: Vec<BatchEntry> = rows
                .into_iter()
                .map(|r| match r.device.as_ref().or(default) {
                    Some(d) if *d != s.device => {
                        subs = true;
                        BatchEntry::of(d.clone(), r.points, Some(r.time))
                    }
                    _ => BatchEntry::own(r.points, Some(r.time)),
                })
                .collect();
            let batch = MeasurepointBatchResume::new(entries)
                .allow_offline_sub_device(subs)
                .skip_invalid_measurepoints(skip_invalid);
            data.batch_resume_measurepoint(batch, s.untargeted())
        }
    };
    match result.map_err(CliError::from_request) {
        Ok(_) => Outcome::Accepted,
        Err(CliError::Refused { code, message }) => Outcome::Refused { code, message },
        Err(e) => Outcome::Failed(e),
    }
}

/// Collects the outcomes until every worker is done: counts them, moves the checkpoint
/// over each batch once all before it are answered, and shows the progress.
/// How often a replay's checkpoint is synced to the disk, at most.
const SYNC_EVERY: Duration = Duration::from_secs(1);

fn collect(
    done: &mpsc::Receiver<Done>,
    cp: &mut Checkpoint,
    cp_path: &Path,
    tally: &mut Tally,
    stopping: &Stopping,
    progress: &Progress,
) {
    let mut waiting: BTreeMap<u64, Done> = BTreeMap::new();
    let mut next = 0u64;
    let mut last_sync = Instant::now();
    loop {
        let d = match done.recv_timeout(Duration::from_millis(200)) {
            Ok(d) => d,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                progress.show(tally);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        match &d.outcome {
            Outcome::Accepted => {
                tally.requests += 1;
                tally.sent += d.rows;
                tally.accepted += d.rows;
            }
            Outcome::Refused { code, message } => {
                tally.requests += 1;
                tally.sent += d.rows;
                let r = tally.refused.entry(*code).or_insert_with(|| Refusal { rows: 0, message: message.clone() });
                r.rows += d.rows;
            }
            Outcome::Failed(e) => {
                tally.requests += 1;
                tally.sent += d.rows;
                tally.unanswered += d.rows;
                stopping.fail(e.clone());
            }
            Outcome::NotSent => {}
        }
        waiting.insert(d.seq, d);
        let mut moved = false;
        while let Some(d) = waiting.get(&next) {
            match &d.outcome {
                Outcome::Accepted => cp.accepted += d.rows,
                Outcome::Refused { code, message } => {
                    let r = cp.refused.entry(*code).or_insert_with(|| Refusal { rows: 0, message: message.clone() });
                    r.rows += d.rows;
                }
                Outcome::Failed(_) | Outcome::NotSent => break,
            }
            cp.rows += d.rows;
            cp.advance(d.end);
            waiting.remove(&next);
            next += 1;
            moved = true;
        }
        if moved {
            // Synced to the disk at most once a second: a sync per request would cost more
            // than sending it. Between syncs the checkpoint is whole however the process
            // ends; only a power loss can take it back to the last synced one (or leave
            // it empty, and --resume then asks for --restart).
            let durability = if last_sync.elapsed() >= SYNC_EVERY {
                last_sync = Instant::now();
                Durability::Synced
            } else {
                Durability::Renamed
            };
            if let Err(e) = cp.save(cp_path, durability) {
                stopping.fail(e);
            }
        }
        progress.show(tally);
    }
}

/// The progress line of a replay.
struct Progress {
    line: ProgressLine,
    total: u64,
    started: Instant,
}

impl Progress {
    fn new(total: u64, started: Instant) -> Self {
        Progress { line: ProgressLine::new(), total, started }
    }

    fn show(&self, t: &Tally) {
        let answered = t.accepted + t.refused_rows();
        self.line.show(answered == self.total, || {
            let pct = if self.total == 0 { 100.0 } else { answered as f64 * 100.0 / self.total as f64 };
            let rate = answered as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
            format!(
                "{answered}/{} rows ({pct:.0}%), {} accepted, {} refused, {rate:.0} rows/s",
                self.total,
                t.accepted,
                t.refused_rows()
            )
        });
    }
}

/// The closing summary.
struct Summary<'a> {
    file: &'a str,
    device: &'a str,
    tally: &'a Tally,
    cp: &'a Checkpoint,
    elapsed: Duration,
    resumed_from: Option<u64>,
    complete: bool,
}

impl Summary<'_> {
    fn rows_per_second(&self) -> f64 {
        let answered = self.tally.accepted + self.tally.refused_rows();
        answered as f64 / self.elapsed.as_secs_f64().max(1e-6)
    }

    fn text(&self, interrupted: bool, error: Option<&CliError>, kept: bool) -> String {
        let t = self.tally;
        let state = match (self.complete, interrupted, error) {
            (true, _, _) => "complete".to_owned(),
            (_, _, Some(_)) => format!("stopped by an error after line {}", self.cp.line),
            (_, true, _) => format!("interrupted after line {}", self.cp.line),
            _ => format!("stopped after line {}", self.cp.line),
        };
        let mut lines = vec![format!("replay of {} to {}: {state}", self.file, self.device)];
        if let Some(line) = self.resumed_from {
            lines.push(format!("  resumed at line {line}"));
        }
        lines.push(format!(
            "  sent {} rows in {} requests: {} accepted, {} refused{}",
            t.sent,
            t.requests,
            t.accepted,
            t.refused_rows(),
            if t.unanswered > 0 { format!(", {} unanswered", t.unanswered) } else { String::new() }
        ));
        for (code, r) in &t.refused {
            lines.push(format!("  refused with code {code}: {} rows ({})", r.rows, r.message));
        }
        lines.push(format!("  elapsed {:.2} s, {:.0} rows/s", self.elapsed.as_secs_f64(), self.rows_per_second()));
        if self.resumed_from.is_some() {
            lines.push(format!("  all runs: {} accepted, {} refused", self.cp.accepted, self.cp.refused_rows()));
        }
        if kept {
            lines.push(format!("  progress kept in {}.enos-progress (enos replay {} --resume)", self.file, self.file));
        }
        lines.join("\n")
    }

    fn json(&self, error: Option<&CliError>, kept: Option<&std::path::Path>) -> Value {
        let t = self.tally;
        let refused = |m: &BTreeMap<i32, Refusal>| -> Vec<Value> {
            m.iter().map(|(code, r)| json!({"code": code, "rows": r.rows, "message": r.message})).collect()
        };
        json!({
            "file": self.file,
            "device": self.device,
            "complete": self.complete,
            "resumedFromLine": self.resumed_from,
            "requests": t.requests,
            "rows": {"sent": t.sent, "accepted": t.accepted, "refused": t.refused_rows(), "unanswered": t.unanswered},
            "refused": refused(&t.refused),
            "elapsedMs": self.elapsed.as_millis() as u64,
            "rowsPerSecond": (self.rows_per_second() * 10.0).round() / 10.0,
            "total": {"rows": self.cp.rows, "accepted": self.cp.accepted, "refused": self.cp.refused_rows(), "refusedByCode": refused(&self.cp.refused), "line": self.cp.line},
            "checkpoint": kept,
            "stopped": error.map(|e| e.to_json()["error"].clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker that took a batch and has not yet decided whether to send it holds up the
    /// others: a batch after it cannot be sent while it is not.
    #[test]
    fn batches_not_sent_after_a_stop_are_the_last_ones() {
        let (tx, rx) = mpsc::sync_channel(4);
        for seq in 0..2 {
            tx.send(Batch { seq, rows: Vec::new(), end: Position::START }).unwrap();
        }
        drop(tx);
        let work = Mutex::new(rx);
        let stopping = Stopping::default();
        let (paused_tx, paused_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        std::thread::scope(|s| {
            // The first worker takes batch 0 and is held before it decides.
            let first = s.spawn(|| {
                take(&work, &stopping, move || {
                    paused_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                })
            });
            paused_rx.recv().unwrap();
            // Another takes batch 1, if it can, and decides.
            let second = s.spawn(|| take(&work, &stopping, || {}));
            std::thread::sleep(Duration::from_millis(200));
            // Ctrl-C; then the first worker decides.
            stopping.now.store(true, Ordering::SeqCst);
            go_tx.send(()).unwrap();
            let (first, second) = (first.join().unwrap().unwrap(), second.join().unwrap().unwrap());
            assert_eq!((first.0.seq, first.1), (0, false));
            assert_eq!((second.0.seq, second.1), (1, false), "batch 1 was sent and batch 0 not");
        });
        assert!(take(&work, &stopping, || {}).is_none());
    }
}
