//! `enos ota download`: which firmware (the offered one of `--version`, else the highest
//! version, or the one `--firmware` describes), its download checked by the SDK as the
//! bytes arrive, and a progress line on standard error when it is a terminal. The SDK
//! writes the bytes to `PATH.part`: a download that is interrupted (Ctrl-C, SIGTERM)
//! leaves it behind.

use std::cmp::Ordering;
use std::path::Path;

use enos_transport_blocking::proto::ops::FirmwareError;
use enos_transport_blocking::{Error, Firmware, SubmitError};
use serde_json::json;

use crate::commands::Printed;
use crate::error::{CliError, NEEDS_HTTP};
use crate::output::ProgressLine;
use crate::session::Session;

/// The firmware `--firmware` describes, checked before anything connects.
///
/// # Errors
///
/// [`CliError::Input`] for JSON that is not a firmware, or a sign method the check does
/// not know.
pub fn parse(text: &str) -> Result<Firmware, CliError> {
    let fw: Firmware = serde_json::from_str(text).map_err(|e| {
        CliError::input(
            "--firmware",
            format!("expected {{\"version\", \"signMethod\", \"sign\", \"fileUrl\", \"fileSize\"}}: {e}"),
        )
    })?;
    if fw.file_url.is_empty() {
        return Err(CliError::input("--firmware", "fileUrl is empty"));
    }
    fw.check().map_err(|e| CliError::input("--firmware", e.to_string()))?;
    Ok(fw)
}

/// Of the firmwares the cloud offers: the one of `version`, else the highest version.
///
/// # Errors
///
/// [`CliError::NotFound`] when none is offered, or not that version.
pub fn choose(offered: Vec<Firmware>, version: Option<&str>) -> Result<Firmware, CliError> {
    let versions = || offered.iter().map(|f| f.version.as_str()).collect::<Vec<_>>().join(", ");
    match version {
        Some(v) => match offered.iter().find(|f| f.version == v) {
            Some(f) => Ok(f.clone()),
            None if offered.is_empty() => Err(CliError::NotFound(format!("the cloud offers no firmware, not {v}"))),
            None => Err(CliError::NotFound(format!("the cloud offers no firmware {v} (it offers {})", versions()))),
        },
        None => offered
            .iter()
            .max_by(|a, b| compare_versions(&a.version, &b.version))
            .cloned()
            .ok_or_else(|| CliError::NotFound("the cloud offers no firmware".into())),
    }
}

/// Versions compared part by part (parts split at `.`, `-`, `_` and `+`): numbers as
/// numbers, above any text. Where one version has more parts, a further number makes it
/// higher (`1.0.1` above `1.0`) and further text lower (`2.0.1-beta` below `2.0.1`).
fn compare_versions(a: &str, b: &str) -> Ordering {
    let parts = |v: &str| -> Vec<(Option<u64>, String)> {
        v.split(['.', '-', '_', '+']).map(|p| (p.parse::<u64>().ok(), p.to_owned())).collect()
    };
    let (a, b) = (parts(a), parts(b));
    for (x, y) in a.iter().zip(&b) {
        let o = match (x.0, y.0) {
            (Some(m), Some(n)) => m.cmp(&n),
            (Some(_), None) => Ordering::Greater,
            (None, Some(_)) => Ordering::Less,
            (None, None) => x.1.cmp(&y.1),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    let longer_is_higher = |rest: &[(Option<u64>, String)]| rest.first().is_none_or(|p| p.0.is_some());
    match a.len().cmp(&b.len()) {
        Ordering::Equal => Ordering::Equal,
        Ordering::Greater if longer_is_higher(&a[b.len()..]) => Ordering::Greater,
        Ordering::Greater => Ordering::Less,
        Ordering::Less if longer_is_higher(&b[a.len()..]) => Ordering::Less,
        Ordering::Less => Ordering::Greater,
    }
}

/// Downloads `fw` to `path`, checked; progress on standard error when it is a terminal.
///
/// # Errors
///
/// [`CliError::CheckFailed`] for a digest or size that does not match (nothing is left at
/// `path`), [`CliError::NotFound`] for a file the cloud does not have, [`CliError::Usage`]
/// for a URL this client cannot fetch, [`CliError::Io`] when `path` cannot be written, or
/// the download's error.
pub fn download(s: &Session, fw: &Firmware, path: &Path) -> Result<Printed, CliError> {
    let line = ProgressLine::new();
    let result = s.client.ota().download_firmware(fw, path, |got, total| {
        line.show(total == Some(got), || match total.filter(|t| *t > 0) {
            Some(t) => format!("firmware {}: {got}/{t} bytes ({}%)", fw.version, got.saturating_mul(100) / t),
            None => format!("firmware {}: {got} bytes", fw.version),
        });
    });
    line.clear();
    let bytes = result.map_err(|e| match e {
        Error::Firmware(FirmwareError::DirectUrl(url)) => CliError::Usage(format!(
            "firmware {} at {url} cannot be fetched: an https:// URL needs the CA that signs its host (--ca)",
            fw.version
        )),
        Error::Firmware(e) => CliError::CheckFailed(format!(
            "firmware {} failed its check: {e}; nothing was kept at {}",
            fw.version,
            path.display()
        )),
        Error::Submit(SubmitError::NeedsHttp) => CliError::Usage(format!(
            "firmware {} is a file of the cloud's storage ({}): {NEEDS_HTTP}",
            fw.version, fw.file_url
        )),
        e => CliError::from_file_request(e, || format!("file {} for firmware {}", fw.file_url, fw.version)),
    })?;
    let text = format!(
        "firmware {} downloaded to {} and checked: {bytes} bytes, {} {}",
        fw.version,
        path.display(),
        fw.sign_method,
        fw.sign
    );
    let doc = json!({
        "version": fw.version,
        "path": path,
        "bytes": bytes,
        "signMethod": fw.sign_method,
        "sign": fw.sign,
        "fileUrl": fw.file_url,
        "checked": true,
    });
    Ok(Printed::ok(text, doc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fw(version: &str) -> Firmware {
        Firmware { version: version.into(), ..Firmware::default() }
    }

    #[test]
    fn the_highest_version_or_the_one_asked_for() {
        let offered = vec![fw("1.10.0"), fw("1.9.3"), fw("2.0.1-beta"), fw("2.0.1"), fw("1.2")];
        assert_eq!(choose(offered.clone(), None).unwrap().version, "2.0.1");
        assert_eq!(choose(offered.clone(), Some("1.9.3")).unwrap().version, "1.9.3");
        let e = choose(offered, Some("9")).unwrap_err();
        assert!(e.to_string().contains("no firmware 9 (it offers 1.10.0, 1.9.3"), "{e}");
        assert_eq!(e.exit_code(), 1);
        assert!(choose(Vec::new(), None).unwrap_err().to_string().contains("offers no firmware"));
        assert_eq!(compare_versions("1.10", "1.9"), Ordering::Greater);
        assert_eq!(compare_versions("1.0", "1.0.1"), Ordering::Less);
    }

    #[test]
    fn a_firmware_given_is_checked_before_anything_connects() {
        let ok = r#"{"version":"2.0.1","signMethod":"SHA256","sign":"AB","fileUrl":"http://h/f","fileSize":3}"#;
        assert_eq!(parse(ok).unwrap().file_size, 3);
        let e = parse(r#"{"version":"2","signMethod":"crc32","sign":"AB","fileUrl":"u"}"#).unwrap_err();
        assert!(e.exit_code() == 2 && e.to_string().contains("crc32"), "{e}");
        assert!(parse(r#"{"version":"2","signMethod":"md5","sign":"AB"}"#)
            .unwrap_err()
            .to_string()
            .contains("fileUrl"));
        assert!(parse("[1]").unwrap_err().to_string().contains("expected {\"version\""));
    }
}
