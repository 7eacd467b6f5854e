//! The checkpoint of a replay, `FILE.enos-progress` beside the input: how far the rows
//! the cloud answered reach without a gap (and a hash of the bytes up to there, so that a
//! file changed since is not resumed), and what the cloud answered. Written to a
//! temporary file, synced and renamed over the old one, so that it is whole whenever the
//! process stops.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::input::Position;
use crate::cli::Format;
use crate::error::CliError;
use crate::fsio::{self, Durability};

/// The version of the checkpoint's format.
const VERSION: u32 = 2;

/// Rows the cloud refused with one code.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// How many rows.
    pub rows: u64,
    /// The cloud's message (the first one).
    pub message: String,
}

/// Where a replay stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// The format's version.
    pub version: u32,
    /// The device the rows went to, `pk/dk` (and ` as pk/dk` for a sub-device).
    pub device: String,
    /// The input's format.
    pub format: Format,
    /// The CSV header, which must not have changed.
    pub header: Option<String>,
    /// Bytes of the input done: every row before is answered.
    pub offset: u64,
    /// The last line done.
    pub line: u64,
    /// The FNV-1a hash (64 bits, in hex) of the input's bytes before `offset`.
    pub hash: String,
    /// Rows done.
    pub rows: u64,
    /// Rows accepted.
    pub accepted: u64,
    /// Rows refused, by code.
    pub refused: BTreeMap<i32, Refusal>,
}

impl Checkpoint {
    /// A checkpoint at the start of the rows, `at` (after the header).
    pub fn new(device: String, format: Format, header: Option<String>, at: Position) -> Self {
        Checkpoint {
            version: VERSION,
            device,
            format,
            header,
            offset: at.offset,
            line: at.line,
            hash: hex(at.hash),
            rows: 0,
            accepted: 0,
            refused: BTreeMap::new(),
        }
    }

    /// Moves the checkpoint to `at`.
    pub fn advance(&mut self, at: Position) {
        self.offset = at.offset;
        self.line = at.line;
        self.hash = hex(at.hash);
    }

    /// Whether `hash` is that of the bytes before the checkpoint.
    pub fn hash_is(&self, hash: u64) -> bool {
        self.hash == hex(hash)
    }

    /// Rows refused, whatever the code.
    pub fn refused_rows(&self) -> u64 {
        self.refused.values().map(|r| r.rows).sum()
    }

    /// The checkpoint of `input`, if it has one.
    ///
    /// # Errors
    ///
    /// [`CliError::Io`] when it cannot be read, [`CliError::Usage`] when it does not parse.
    pub fn load(path: &Path) -> Result<Option<Self>, CliError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CliError::io(format!("checkpoint {}", path.display()), e)),
        };
        // The version first: an older checkpoint lacks fields of this one.
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        if let Ok(Versioned { version }) = serde_json::from_str(&text) {
            if version != VERSION {
                return Err(CliError::Usage(format!(
                    "checkpoint {}: version {version} is not {VERSION}; start over with --restart",
                    path.display()
                )));
            }
        }
        let cp: Checkpoint = serde_json::from_str(&text).map_err(|e| {
            CliError::Usage(format!("checkpoint {}: {e}; remove it, or replay with --restart", path.display()))
        })?;
        if cp.version != VERSION {
            return Err(CliError::Usage(format!(
                "checkpoint {}: version {} is not {VERSION}; start over with --restart",
                path.display(),
                cp.version
            )));
        }
        Ok(Some(cp))
    }

    /// Writes the checkpoint atomically: a temporary file beside it, renamed over it (and
    /// removed when that fails), synced to the disk first when `durability` says so.
    ///
    /// # Errors
    ///
    /// [`CliError::Io`].
    pub fn save(&self, path: &Path, durability: Durability) -> Result<(), CliError> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| CliError::io("checkpoint", e))?;
        fsio::write_atomic_as(path, ".tmp", &text, None, durability)
            .map_err(|e| CliError::io(format!("checkpoint {}", path.display()), e))
    }
}

/// `FILE.enos-progress` beside `input`.
pub fn path_for(input: &Path) -> PathBuf {
    fsio::with_suffix(input, ".enos-progress")
}

fn hex(hash: u64) -> String {
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_whole_and_loaded_back() {
        let dir = std::env::temp_dir().join(format!("enos-cli-checkpoint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("data.csv");
        let path = path_for(&input);
        assert_eq!(path, dir.join("data.csv.enos-progress"));
        let _ = std::fs::remove_file(&path);
        assert_eq!(Checkpoint::load(&path).unwrap(), None);
        let mut cp = Checkpoint::new(
            "pk/dk".into(),
            Format::Csv,
            Some("time,t".into()),
            Position { offset: 7, line: 1, hash: 0xab },
        );
        assert!(cp.hash_is(0xab) && cp.hash == "00000000000000ab");
        cp.refused.insert(1204, Refusal { rows: 3, message: "m".into() });
        cp.save(&path, Durability::Synced).unwrap();
        assert!(!fsio::with_suffix(&path, ".tmp").exists());
        assert_eq!(Checkpoint::load(&path).unwrap(), Some(cp.clone()));
        assert_eq!(cp.refused_rows(), 3);
        std::fs::write(&path, "{").unwrap();
        assert!(Checkpoint::load(&path).unwrap_err().to_string().contains("--restart"));
        // One of an earlier format is named by its version.
        std::fs::write(&path, r#"{"version":1,"offset":7}"#).unwrap();
        let e = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(e.contains("version 1 is not 2; start over with --restart"), "{e}");
    }
}
