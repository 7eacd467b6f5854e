//! Results on standard output: text for a person, or one JSON document per result
//! (`--json`); notes and progress on standard error.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How results are printed.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    /// One JSON document per result.
    pub json: bool,
    /// Notes on standard error (`-v`).
    pub verbose: u8,
}

impl Out {
    /// Prints a result: `doc` with `--json` (on one line), else `text`.
    pub fn result(&self, text: &str, doc: &Value) {
        if self.json {
            self.doc(doc);
        } else {
            self.text(text);
        }
    }

    /// Prints `text` (a line for a person), whatever `--json` says.
    pub fn text(&self, text: &str) {
        line(text);
    }

    /// Prints `doc` on one line, whatever `--json` says.
    pub fn doc(&self, doc: &Value) {
        line(doc);
    }

    /// A note for the person at the terminal, on standard error (with `-v`).
    pub fn note(&self, text: &str) {
        if self.verbose > 0 {
            eprintln!("enos: {text}");
        }
    }
}

fn line(what: impl std::fmt::Display) {
    let mut stdout = std::io::stdout().lock();
    // A closed standard output (`enos ... | head -1`) is no error of the command.
    let _ = writeln!(stdout, "{what}");
    let _ = stdout.flush();
}

/// A JSON value as text for a person: strings bare, the rest as JSON.
pub fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A progress line on standard error, rewritten in place at most five times a second;
/// only when standard error is a terminal.
pub struct ProgressLine {
    on: bool,
    last: Mutex<Option<Instant>>,
}

impl ProgressLine {
    /// A line that shows when standard error is a terminal.
    pub fn new() -> Self {
        ProgressLine { on: std::io::stderr().is_terminal(), last: Mutex::new(None) }
    }

    /// Shows `text()`, unless the line was shown less than 200 ms ago (`last`, the last
    /// piece of the work, always shows).
    pub fn show(&self, last: bool, text: impl FnOnce() -> String) {
        if !self.on {
            return;
        }
        let mut shown = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !last && shown.is_some_and(|l| l.elapsed() < Duration::from_millis(200)) {
            return;
        }
        *shown = Some(Instant::now());
        eprint!("\r{}\x1b[K", text());
    }

    /// Clears the line, when it was shown.
    pub fn clear(&self) {
        let shown = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.on && shown.is_some() {
            eprint!("\r\x1b[K");
        }
    }
}
