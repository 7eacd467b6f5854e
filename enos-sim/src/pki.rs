//! Test certificates made on the spot: a CA, a server certificate for `localhost` and
//! `127.0.0.1`, and device certificates, as PEM text (with `rcgen`).
//!
//! ```
//! let ca = enos_sim::pki::Ca::new("test ca").unwrap();
//! let server = ca.server_cert().unwrap();
//! let config = enos_sim::pki::server_tls(&server, Some(&ca)).unwrap();
//! # let _ = config;
//! ```

use std::sync::Arc;

use enos_proto::tls::rustls::ServerConfig;
use enos_proto::tls::{server_config, Identity, TlsError};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A certificate and its key, as PEM.
#[derive(Clone)]
pub struct CertPem {
    /// The certificate.
    pub cert: String,
    /// Its private key (PKCS#8).
    pub key: String,
    /// The key in DER (PKCS#8), for building PKCS#12 files.
    pub key_der: Vec<u8>,
}

impl std::fmt::Debug for CertPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertPem").finish_non_exhaustive()
    }
}

impl CertPem {
    /// The pair as a TLS identity.
    ///
    /// # Errors
    ///
    /// [`TlsError`] if the PEM does not parse (it always does when made here).
    pub fn identity(&self) -> Result<Identity, TlsError> {
        Identity::from_pem(self.cert.as_bytes(), self.key.as_bytes())
    }
}

/// A certificate authority.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    /// Its certificate, as PEM (what devices and servers trust).
    pub pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[error("certificate generation failed: {0}")]
pub struct PkiError(String);

fn err(e: rcgen::Error) -> PkiError {
    PkiError(e.to_string())
}

impl Ca {
    /// A new self-signed CA named `name`.
    ///
    /// # Errors
    ///
    /// [`PkiError`] if key generation fails.
    pub fn new(name: &str) -> Result<Self, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().map_err(err)?;
        let pem = params.self_signed(&key).map_err(err)?.pem();
        Ok(Ca { params, key, pem })
    }

    fn sign(&self, names: &[&str], common_name: &str, expired: bool) -> Result<CertPem, PkiError> {
        let mut params =
            CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).map_err(err)?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().map_err(err)?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).map_err(err)?;
        Ok(CertPem { cert: cert.pem(), key: key.serialize_pem(), key_der: key.serialize_der() })
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    ///
    /// # Errors
    ///
    /// [`PkiError`].
    pub fn server_cert(&self) -> Result<CertPem, PkiError> {
        self.sign(&["localhost", "127.0.0.1"], "localhost", false)
    }

    /// A device certificate with `name` as common name.
    ///
    /// # Errors
    ///
    /// [`PkiError`].
    pub fn device_cert(&self, name: &str) -> Result<CertPem, PkiError> {
        self.sign(&[name], name, false)
    }

    /// A device certificate that expired in 2001.
    ///
    /// # Errors
    ///
    /// [`PkiError`].
    pub fn expired_device_cert(&self, name: &str) -> Result<CertPem, PkiError> {
        self.sign(&[name], name, true)
    }
}

/// The names a certificate gives its holder: the common names of its subject and the DNS
/// names among its subject alternative names (nothing for bytes that are not a
/// certificate). The local cloud takes a verified client certificate in place of a
/// password only for a device whose key is one of these names.
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else { return Vec::new() };
    let mut names: Vec<String> =
        cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_owned).collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push((*dns).to_owned());
            }
        }
    }
    names
}

/// A server TLS configuration with `server`'s certificate; with `clients` given, every
/// client must present a certificate that CA signed.
///
/// # Errors
///
/// [`TlsError`] when rustls refuses the configuration.
pub fn server_tls(server: &CertPem, clients: Option<&Ca>) -> Result<Arc<ServerConfig>, TlsError> {
    server_config(&server.identity()?, clients.map(|c| c.pem.as_bytes()))
}
