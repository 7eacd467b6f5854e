//! Verifying a downloaded firmware (extensions spec E3, C14) as its bytes arrive: the
//! digest its upgrade command names (MD5, SHA-1 or SHA-256, compared in any case) and,
//! when the command gives one, its size. Nothing need be held in memory but the digest.

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::Firmware;

/// Why a firmware is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FirmwareError {
    /// A sign method other than md5, sha1 or sha256.
    #[error("firmware sign method {0:?} is not supported (md5, sha1, sha256 are)")]
    UnsupportedSignMethod(String),
    /// The file's size differs from the command's `fileSize`.
    #[error("firmware is {got} bytes, the upgrade says {expected}")]
    SizeMismatch {
        /// The size the command gave.
        expected: u64,
        /// The size received.
        got: u64,
    },
    /// A firmware at a plain URL this client cannot fetch: an `https://` one on a client
    /// with no CA to trust its host with, or one that does not parse.
    #[error("firmware at {0} cannot be fetched by this client (https needs a CA)")]
    DirectUrl(String),
    /// The file's digest differs from the command's `sign`.
    #[error("firmware digest {got} does not match the upgrade's sign {expected}")]
    DigestMismatch {
        /// The command's `sign`.
        expected: String,
        /// The digest of the bytes received.
        got: String,
    },
}

enum Hasher {
    Md5(Md5),
    Sha1(Sha1),
    Sha256(Sha256),
}

/// A digest and a byte count over a firmware's bytes, fed as they are downloaded.
///
/// ```
/// use enos_proto::ops::Firmware;
/// let fw = Firmware { version: "2.0.1".into(), sign_method: "md5".into(),
///     sign: "9980777E5BE61B6E70BFC47EC96B8ED6".into(), file_url: String::new(), file_size: 30 };
/// let mut check = fw.check().unwrap();
/// check.update(b"EnOS OTA test ");
/// check.update(b"firmware v2.0.1\n");
/// assert!(check.finish().is_ok());
/// ```
pub struct FirmwareCheck {
    hasher: Hasher,
    expected: String,
    size: u64,
    received: u64,
}

impl std::fmt::Debug for FirmwareCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirmwareCheck").field("received", &self.received).finish_non_exhaustive()
    }
}

impl Firmware {
    /// A check of this firmware's bytes.
    ///
    /// # Errors
    ///
    /// [`FirmwareError::UnsupportedSignMethod`] for a method other than md5, sha1, sha256.
    pub fn check(&self) -> Result<FirmwareCheck, FirmwareError> {
        let hasher = match self.sign_method.to_ascii_lowercase().as_str() {
            "md5" => Hasher::Md5(Md5::new()),
            "sha1" => Hasher::Sha1(Sha1::new()),
            "sha256" => Hasher::Sha256(Sha256::new()),
            _ => return Err(FirmwareError::UnsupportedSignMethod(self.sign_method.clone())),
        };
        Ok(FirmwareCheck { hasher, expected: self.sign.to_ascii_lowercase(), size: self.file_size, received: 0 })
    }
}

impl FirmwareCheck {
    /// Adds the next bytes of the file.
    pub fn update(&mut self, bytes: &[u8]) {
        self.received += bytes.len() as u64;
        match &mut self.hasher {
            Hasher::Md5(h) => h.update(bytes),
            Hasher::Sha1(h) => h.update(bytes),
            Hasher::Sha256(h) => h.update(bytes),
        }
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Whether the whole file matched: its size (when the command gave one above zero)
    /// and its digest.
    ///
    /// # Errors
    ///
    /// [`FirmwareError::SizeMismatch`] or [`FirmwareError::DigestMismatch`].
    pub fn finish(self) -> Result<(), FirmwareError> {
        if self.size > 0 && self.size != self.received {
            return Err(FirmwareError::SizeMismatch { expected: self.size, got: self.received });
        }
        let got = crate::http::lower_hex(&match self.hasher {
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
        });
        if got != self.expected {
            return Err(FirmwareError::DigestMismatch { expected: self.expected, got });
        }
        Ok(())
    }
}
