//! Results on standard output: text for a person, or one JSON document per result
//! (`--json`); notes and progress on standard error.

use std::io::Write;

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
        let mut stdout = std::io::stdout().lock();
        // A closed standard output (`enos ... | head -1`) is no error of the command.
        let _ = if self.json { writeln!(stdout, "{doc}") } else { writeln!(stdout, "{text}") };
        let _ = stdout.flush();
    }

    /// A note for the person at the terminal, on standard error (with `-v`).
    pub fn note(&self, text: &str) {
        if self.verbose > 0 {
            eprintln!("enos: {text}");
        }
    }
}

/// A JSON value as text for a person: strings bare, the rest as JSON.
pub fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
