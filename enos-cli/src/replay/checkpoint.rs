//! The checkpoint of a replay, `FILE.enos-progress` beside the input: how far the rows
//! the cloud answered reach without a gap, and what it answered. Written to a temporary
//! file and renamed over the old one, so that it is whole whenever the process stops.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cli::Format;
use crate::error::CliError;

/// The version of the checkpoint's format.
const VERSION: u32 = 1;

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
    /// Rows done.
    pub rows: u64,
    /// Rows accepted.
    pub accepted: u64,
    /// Rows refused, by code.
    pub refused: BTreeMap<i32, Refusal>,
}

impl Checkpoint {
    /// A checkpoint at the start of the rows (after the header).
    pub fn new(device: String, format: Format, header: Option<String>, offset: u64, line: u64) -> Self {
        Checkpoint {
            version: VERSION,
            device,
            format,
            header,
            offset,
            line,
            rows: 0,
            accepted: 0,
            refused: BTreeMap::new(),
        }
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
        let cp: Checkpoint = serde_json::from_str(&text).map_err(|e| {
            CliError::Usage(format!("checkpoint {}: {e}; remove it, or replay with --restart", path.display()))
        })?;
        if cp.version != VERSION {
            return Err(CliError::Usage(format!(
                "checkpoint {}: version {} is not {VERSION}",
                path.display(),
                cp.version
            )));
        }
        Ok(Some(cp))
    }

    /// Writes the checkpoint atomically: a temporary file beside it, renamed over it.
    ///
    /// # Errors
    ///
    /// [`CliError::Io`].
    pub fn save(&self, path: &Path) -> Result<(), CliError> {
        let tmp = temp_path(path);
        let text = serde_json::to_vec_pretty(self).map_err(|e| CliError::io("checkpoint", e))?;
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| CliError::io(format!("checkpoint {}", path.display()), e))
    }
}

/// `FILE.enos-progress` beside `input`.
pub fn path_for(input: &Path) -> PathBuf {
    let mut name = input.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".enos-progress");
    input.with_file_name(name)
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
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
        let mut cp = Checkpoint::new("pk/dk".into(), Format::Csv, Some("time,t".into()), 7, 1);
        cp.refused.insert(1204, Refusal { rows: 3, message: "m".into() });
        cp.save(&path).unwrap();
        assert!(!temp_path(&path).exists());
        assert_eq!(Checkpoint::load(&path).unwrap(), Some(cp.clone()));
        assert_eq!(cp.refused_rows(), 3);
        std::fs::write(&path, "{").unwrap();
        assert!(Checkpoint::load(&path).unwrap_err().to_string().contains("--restart"));
    }
}
