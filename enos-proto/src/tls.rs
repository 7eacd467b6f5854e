//! TLS as one sans-IO layer over rustls (feature `tls`): ciphertext in and out, plaintext
//! to and from the core. Every driver, including one you write, gets TLS by moving bytes
//! only, and certificates and keys come in as bytes (PEM, or PKCS#12 with the `pkcs12`
//! feature). The crypto provider is ring; there is no OpenSSL anywhere.
//!
//! The server is always verified: its chain against the CAs given, its dates, and its
//! name against the host dialed. The vendor's Java and Python SDKs skip the name check
//! by default (spec E8); here that takes an explicit, loudly named choice, for edge
//! brokers reached by IP address: [`dangerous::client_config_accepting_any_server_name`]
//! (`ClientOptions::dangerous_accept_any_server_name`).
//!
//! ```
//! # use enos_proto::tls::{client_config, TlsLayer};
//! # let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap().cert.pem();
//! let config = client_config(ca.as_bytes(), None)?;
//! let mut tls = TlsLayer::client(config, "localhost")?;
//! let mut hello = Vec::new();
//! tls.take_ciphertext(&mut hello); // the ClientHello, for the socket
//! assert!(!hello.is_empty() && tls.is_handshaking());
//! # Ok::<(), enos_proto::tls::TlsError>(())
//! ```

use std::fmt;
use std::io::Read;
use std::sync::Arc;

pub use rustls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Why a TLS setup or session failed. Never holds key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM input holds no usable certificate or key.
    #[error("invalid PEM {what}: {reason}")]
    Pem {
        /// `certificate`, `private key` or `CA`.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A PKCS#12 file cannot be read (wrong passphrase, unsupported algorithm, no key).
    #[error("invalid PKCS#12 identity: {0}")]
    Pkcs12(String),
    /// rustls refused the configuration (e.g. a key that does not match its certificate).
    #[error("tls configuration refused: {0}")]
    Config(String),
    /// The server name is not a valid DNS name or IP address.
    #[error("invalid server name {0:?}")]
    ServerName(String),
    /// The session failed: handshake, certificate verification, or an alert.
    #[error("tls session failed: {0}")]
    Session(String),
}

/// A certificate chain and its private key: a client's identity for mutual TLS, or a
/// server's. Its `Debug` shows only the number of certificates.
#[derive(Clone)]
pub struct Identity {
    certs: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("certificates", &self.certs.len()).finish_non_exhaustive()
    }
}

impl Identity {
    /// An identity from a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or
    /// SEC1).
    ///
    /// # Errors
    ///
    /// [`TlsError::Pem`] when either holds nothing usable.
    pub fn from_pem(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let certs = certs_from_pem(cert_chain_pem, "certificate")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| TlsError::Pem { what: "private key", reason: e.to_string() })?;
        Ok(Identity { certs, key: Arc::new(key) })
    }

    /// An identity from a PKCS#12 (`.pfx`, `.p12`) file and its passphrase: OpenSSL 3
    /// default files (PBES2/AES) and legacy ones (RC2/3DES) alike.
    ///
    /// # Errors
    ///
    /// [`TlsError::Pkcs12`] for a wrong passphrase or a file without a key and its
    /// certificate.
    #[cfg(feature = "pkcs12")]
    pub fn from_pkcs12(der: &[u8], passphrase: &crate::Secret) -> Result<Self, TlsError> {
        use p12_keystore::{KeyStore, Pkcs12ImportPolicy};
        // The crate's error text never includes the passphrase.
        let store = KeyStore::from_pkcs12(der, passphrase.expose(), Pkcs12ImportPolicy::Relaxed)
            .map_err(|e| TlsError::Pkcs12(e.to_string()))?;
        let (_, chain) = store.private_key_chain().ok_or_else(|| TlsError::Pkcs12("no private key".into()))?;
        let certs: Vec<CertificateDer<'static>> =
            chain.certs().iter().map(|c| CertificateDer::from(c.as_der().to_vec())).collect();
        if certs.is_empty() {
            return Err(TlsError::Pkcs12("no certificate for the private key".into()));
        }
        let key =
            PrivateKeyDer::try_from(chain.key().as_der().to_vec()).map_err(|e| TlsError::Pkcs12(e.to_string()))?;
        Ok(Identity { certs, key: Arc::new(key) })
    }

    /// The certificate chain, leaf first.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }
}

/// Every certificate in a PEM input.
///
/// # Errors
///
/// [`TlsError::Pem`] when there is none or one does not parse.
pub fn certs_from_pem(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem { what, reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Pem { what, reason: "no certificate found".into() });
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(ca_pem, "CA")? {
        roots.add(cert).map_err(|e| TlsError::Pem { what: "CA", reason: e.to_string() })?;
    }
    Ok(roots)
}

/// A client configuration that verifies the server against the CA certificates in
/// `ca_pem` (never disabled), with an optional client identity for mutual TLS.
///
/// # Errors
///
/// [`TlsError::Pem`] for a CA that does not parse, [`TlsError::Config`] for an identity
/// rustls refuses.
pub fn client_config(ca_pem: &[u8], identity: Option<&Identity>) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(ca_pem)?);
    with_identity(builder, identity)
}

/// A client configuration with its server verification chosen, and `identity` for
/// mutual TLS when given.
fn with_identity(
    builder: rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>,
    identity: Option<&Identity>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.certs.clone(), id.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Configurations that turn off part of the server's verification. Each says what it
/// gives up; none is ever a default.
pub mod dangerous {
    use super::*;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::pki_types::UnixTime;
    use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

    /// Like [`client_config`], but a server whose certificate does not name the host it
    /// was reached by is accepted: the vendor's Java and Python SDKs connect this way by
    /// default (spec E8), and EnOS edge brokers reached by IP address need it.
    ///
    /// The certificate chain is still verified against the CAs in `ca_pem`, with its
    /// dates and signatures. What is given up: any server holding a certificate from one
    /// of those CAs, for any name, can pose as this broker. Use it only with a CA that
    /// signs nothing but your brokers (an edge CA of your own), never with a public one.
    ///
    /// # Errors
    ///
    /// As [`client_config`].
    pub fn client_config_accepting_any_server_name(
        ca_pem: &[u8],
        identity: Option<&Identity>,
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let chain = WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca_pem)?), provider())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerName(chain)));
        with_identity(builder, identity)
    }

    /// The WebPKI verifier with its verdict on the server's name set aside (the chain is
    /// verified before the name, so any other failure still refuses).
    #[derive(Debug)]
    struct AnyServerName(Arc<WebPkiServerVerifier>);

    impl ServerCertVerifier for AnyServerName {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp_response: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }
}

/// A server configuration with `identity`; when `client_ca_pem` is given, every client
/// must present a certificate signed by one of those CAs.
///
/// # Errors
///
/// [`TlsError::Pem`] or [`TlsError::Config`] as for [`client_config`].
pub fn server_config(identity: &Identity, client_ca_pem: Option<&[u8]>) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca_pem {
        Some(ca) => {
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(identity.certs.clone(), identity.key.clone_key())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// Where a [`Client`](crate::Client) speaks TLS: the rustls client configuration (the CA
/// that must sign the broker, the client identity for mutual TLS) and the name the
/// broker's certificate must carry. Set as [`Config::tls`](crate::Config::tls), the
/// handshake runs inside the core: a driver moves ciphertext only.
#[derive(Clone)]
pub struct TlsTarget {
    /// The rustls client configuration (CA, client identity).
    pub config: Arc<ClientConfig>,
    /// The name the server certificate must carry (a DNS name or an IP address).
    pub server_name: String,
}

impl TlsTarget {
    /// A target for `server_name` with this configuration.
    pub fn new(config: Arc<ClientConfig>, server_name: impl Into<String>) -> Self {
        TlsTarget { config, server_name: server_name.into() }
    }
}

impl fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTarget").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

/// Two targets are equal when they name the same server with the same configuration
/// object (configurations are compared by identity: they hold keys, not values to compare).
impl PartialEq for TlsTarget {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config) && self.server_name == other.server_name
    }
}

impl Eq for TlsTarget {}

/// One TLS session as a byte pipe: [`read_ciphertext`](TlsLayer::read_ciphertext) with
/// what the socket gave, [`write_plaintext`](TlsLayer::write_plaintext) with what the
/// core transmits, and [`take_ciphertext`](TlsLayer::take_ciphertext) for the socket.
pub struct TlsLayer {
    conn: rustls::Connection,
    peer_closed: bool,
}

impl fmt::Debug for TlsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsLayer").field("handshaking", &self.conn.is_handshaking()).finish_non_exhaustive()
    }
}

impl TlsLayer {
    /// A client session to `server_name` (a DNS name or an IP address).
    ///
    /// # Errors
    ///
    /// [`TlsError::ServerName`] or [`TlsError::Config`].
    pub fn client(config: Arc<ClientConfig>, server_name: &str) -> Result<Self, TlsError> {
        let name =
            ServerName::try_from(server_name.to_owned()).map_err(|_| TlsError::ServerName(server_name.into()))?;
        let mut conn = rustls::ClientConnection::new(config, name).map_err(|e| TlsError::Config(e.to_string()))?;
        // The caller drains ciphertext after every write: no limit is needed, and a
        // limit would refuse a large payload.
        conn.set_buffer_limit(None);
        Ok(TlsLayer { conn: conn.into(), peer_closed: false })
    }

    /// A server session.
    ///
    /// # Errors
    ///
    /// [`TlsError::Config`].
    pub fn server(config: Arc<ServerConfig>) -> Result<Self, TlsError> {
        let mut conn = rustls::ServerConnection::new(config).map_err(|e| TlsError::Config(e.to_string()))?;
        conn.set_buffer_limit(None);
        Ok(TlsLayer { conn: conn.into(), peer_closed: false })
    }

    /// Ciphertext from the socket; the plaintext it carried is appended to `plaintext`.
    ///
    /// # Errors
    ///
    /// [`TlsError::Session`] when the peer's bytes fail (bad handshake, a certificate
    /// that does not verify, an alert). Take the ciphertext afterwards: it may hold the
    /// alert for the peer.
    pub fn read_ciphertext(&mut self, mut input: &[u8], plaintext: &mut Vec<u8>) -> Result<(), TlsError> {
        while !input.is_empty() {
            let n = self.conn.read_tls(&mut input).map_err(|e| TlsError::Session(e.to_string()))?;
            let state = self.conn.process_new_packets().map_err(|e| TlsError::Session(e.to_string()))?;
            self.peer_closed |= state.peer_has_closed();
            let avail = state.plaintext_bytes_to_read();
            if avail > 0 {
                let start = plaintext.len();
                plaintext.resize(start + avail, 0);
                let got =
                    self.conn.reader().read(&mut plaintext[start..]).map_err(|e| TlsError::Session(e.to_string()))?;
                plaintext.truncate(start + got);
            }
            if n == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Plaintext to send; it is encrypted once the handshake allows.
    ///
    /// # Errors
    ///
    /// [`TlsError::Session`] when the session can no longer send.
    pub fn write_plaintext(&mut self, data: &[u8]) -> Result<(), TlsError> {
        use std::io::Write;
        self.conn.writer().write_all(data).map_err(|e| TlsError::Session(e.to_string()))
    }

    /// Appends the ciphertext to send to `out`.
    pub fn take_ciphertext(&mut self, out: &mut Vec<u8>) {
        self.write_tls_to(out);
    }

    /// Appends the ciphertext to send to `out` (a reused buffer: no allocation once it has
    /// grown to the size of a drain).
    pub fn take_ciphertext_into(&mut self, out: &mut bytes::BytesMut) {
        use bytes::BufMut;
        self.write_tls_to(&mut out.writer());
    }

    fn write_tls_to(&mut self, out: &mut impl std::io::Write) {
        while self.conn.wants_write() {
            match self.conn.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Whether the peer ended the session cleanly (a close_notify alert came in).
    pub fn peer_has_closed(&self) -> bool {
        self.peer_closed
    }

    /// Whether the handshake is still going on.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether there is ciphertext to send.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// The peer's certificate chain, once the handshake presented one.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// Queues a close_notify alert.
    pub fn send_close_notify(&mut self) {
        self.conn.send_close_notify();
    }
}
