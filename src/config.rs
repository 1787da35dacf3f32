//! Building a rustls [`ServerConfig`] for mutual TLS with secure defaults.
//!
//! ```no_run
//! use tower_mtls::{ClientAuth, MtlsConfig};
//!
//! let tls = MtlsConfig::builder()
//!     .server_cert_pem_file("/etc/tls/server-chain.pem")
//!     .server_key_pem_file("/etc/tls/server-key.pem")
//!     .client_ca_pem_file("/etc/tls/clients-ca.pem")
//!     .crl_pem_file("/etc/tls/clients.crl")
//!     .client_auth(ClientAuth::Required) // the default
//!     .build()?;
//! let acceptor = tower_mtls::MtlsAcceptor::new(tls);
//! # Ok::<(), tower_mtls::ConfigError>(())
//! ```
//!
//! Every input is read and checked in [`MtlsConfigBuilder::build`], so a wrong path, a key that
//! does not match the certificate or a bundle with no CA in it fails at start-up, with the file
//! named, not at the first handshake.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::resumption::ResumedCheck;

/// Whether clients must present a certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// A handshake without a valid client certificate fails (the default).
    #[default]
    Required,
    /// Clients may connect without a certificate; requests from them reach
    /// [`MtlsAuthLayer`](crate::MtlsAuthLayer), which answers 401. A certificate that *is*
    /// presented is still verified, and a bad one still fails the handshake.
    Optional,
}

/// Which TLS versions to accept. TLS 1.1 and older are never offered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsVersions {
    /// TLS 1.3 and TLS 1.2 (the default).
    #[default]
    Tls12And13,
    /// TLS 1.3 only.
    Tls13Only,
}

/// Which certificates of a client chain are checked against the CRLs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RevocationScope {
    /// Every certificate of the chain below the trust anchor (the default).
    #[default]
    FullChain,
    /// Only the client's own certificate.
    EndEntityOnly,
}

/// What to do with a certificate whose revocation status no configured CRL covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnknownRevocation {
    /// Refuse the handshake (the default, when CRLs are configured).
    #[default]
    Deny,
    /// Accept the certificate.
    Allow,
}

/// Where an input came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A file.
    File(PathBuf),
    /// Bytes passed in memory, with what they were.
    Memory(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Memory(what) => write!(f, "<{what} given in memory>"),
        }
    }
}

/// A configuration that cannot be built, with the input at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No PEM block of the expected kind in the input.
    #[error("{origin}: no {expected} PEM block found")]
    NoPem {
        /// The input.
        origin: Origin,
        /// What was looked for (`CERTIFICATE`, `PRIVATE KEY`, `X509 CRL`).
        expected: &'static str,
    },
    /// A PEM block that cannot be decoded.
    #[error("{origin}: invalid PEM: {source}")]
    Pem {
        /// The input.
        origin: Origin,
        /// The PEM error.
        source: pem::Error,
    },
    /// A required input was not given.
    #[error("no {0} configured")]
    Missing(&'static str),
    /// The private key does not belong to the server certificate.
    #[error("the private key in {key} does not match the certificate in {cert}")]
    KeyMismatch {
        /// The certificate input.
        cert: Origin,
        /// The key input.
        key: Origin,
    },
    /// The key is of a type or curve the crypto provider cannot use.
    #[error("the private key in {origin} cannot be used: {reason}")]
    UnusableKey {
        /// The key input.
        origin: Origin,
        /// Why.
        reason: String,
    },
    /// A certificate that is not a well-formed X.509 certificate.
    #[error("{origin}: certificate #{index} is not valid X.509: {reason}")]
    BadCertificate {
        /// The input.
        origin: Origin,
        /// Position of the certificate in the input, from 1.
        index: usize,
        /// The parse error.
        reason: String,
    },
    /// A client trust bundle contains a certificate that is not a CA.
    #[error(
        "{origin}: certificate #{index} ({subject}) is not a CA certificate; a client trust bundle must hold CA certificates only"
    )]
    NotACa {
        /// The input.
        origin: Origin,
        /// Position in the input, from 1.
        index: usize,
        /// Its subject.
        subject: String,
    },
    /// A CRL that cannot be parsed.
    #[error("{origin}: invalid CRL: {reason}")]
    BadCrl {
        /// The input.
        origin: Origin,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

#[derive(Clone, Debug)]
enum Source {
    File(PathBuf),
    Pem(&'static str, Vec<u8>),
}

impl Source {
    fn origin(&self) -> Origin {
        match self {
            Source::File(p) => Origin::File(p.clone()),
            Source::Pem(what, _) => Origin::Memory(what),
        }
    }

    fn read(&self) -> Result<(Origin, Vec<u8>), ConfigError> {
        match self {
            Source::File(path) => std::fs::read(path)
                .map(|bytes| (self.origin(), bytes))
                .map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                }),
            Source::Pem(_, bytes) => Ok((self.origin(), bytes.clone())),
        }
    }
}

/// Builder for a mutual-TLS server configuration. Start with [`MtlsConfig::builder`].
#[derive(Clone, Debug, Default)]
pub struct MtlsConfigBuilder {
    server_cert: Option<Source>,
    server_key: Option<Source>,
    client_cas: Vec<Source>,
    intermediates: Vec<Source>,
    crls: Vec<Source>,
    client_auth: ClientAuth,
    versions: TlsVersions,
    revocation_scope: RevocationScope,
    unknown_revocation: UnknownRevocation,
    enforce_crl_expiry: bool,
    alpn: Option<Vec<Vec<u8>>>,
}

/// A built mutual-TLS server configuration: the rustls [`ServerConfig`] plus the client
/// certificate verifier it uses, which the acceptor needs to re-verify resumed sessions.
#[derive(Clone, Debug)]
pub struct MtlsConfig {
    pub(crate) server_config: Arc<ServerConfig>,
    pub(crate) verifier: Arc<dyn ClientCertVerifier>,
    pub(crate) client_auth: ClientAuth,
    pub(crate) resumed_check: ResumedCheck,
}

impl MtlsConfig {
    /// A builder with secure defaults: client certificates required, TLS 1.2 and 1.3, ALPN
    /// `h2` and `http/1.1`, CRLs checked for the whole chain with unknown status denied.
    pub fn builder() -> MtlsConfigBuilder {
        MtlsConfigBuilder::default()
    }

    /// The rustls configuration, e.g. for a `tokio_rustls::TlsAcceptor` of your own. Prefer
    /// [`MtlsAcceptor`](crate::MtlsAcceptor), which also re-verifies resumed sessions.
    pub fn server_config(&self) -> &Arc<ServerConfig> {
        &self.server_config
    }

    /// The client certificate verifier.
    pub fn client_cert_verifier(&self) -> &Arc<dyn ClientCertVerifier> {
        &self.verifier
    }

    /// Whether client certificates are required or optional.
    pub fn client_auth(&self) -> ClientAuth {
        self.client_auth
    }
}

impl MtlsConfigBuilder {
    /// The server certificate chain (leaf first), from a PEM file.
    pub fn server_cert_pem_file(mut self, path: impl AsRef<Path>) -> Self {
        self.server_cert = Some(Source::File(path.as_ref().to_owned()));
        self
    }

    /// The server certificate chain (leaf first), as PEM bytes.
    pub fn server_cert_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.server_cert = Some(Source::Pem("server certificate", pem.into()));
        self
    }

    /// The server private key (PKCS#8, SEC1 or PKCS#1), from a PEM file.
    pub fn server_key_pem_file(mut self, path: impl AsRef<Path>) -> Self {
        self.server_key = Some(Source::File(path.as_ref().to_owned()));
        self
    }

    /// The server private key (PKCS#8, SEC1 or PKCS#1), as PEM bytes.
    pub fn server_key_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.server_key = Some(Source::Pem("server key", pem.into()));
        self
    }

    /// A bundle of CA certificates that client certificates must chain to. Call again to add
    /// more bundles.
    pub fn client_ca_pem_file(mut self, path: impl AsRef<Path>) -> Self {
        self.client_cas.push(Source::File(path.as_ref().to_owned()));
        self
    }

    /// A bundle of client CA certificates as PEM bytes. Call again to add more.
    pub fn client_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.client_cas
            .push(Source::Pem("client CA bundle", pem.into()));
        self
    }

    /// Intermediate CA certificates to complete client chains with, for clients that send only
    /// their own certificate. They are not trust anchors: a chain must still end at a
    /// certificate from a [client CA bundle](Self::client_ca_pem_file).
    pub fn intermediates_pem_file(mut self, path: impl AsRef<Path>) -> Self {
        self.intermediates
            .push(Source::File(path.as_ref().to_owned()));
        self
    }

    /// Intermediate CA certificates as PEM bytes; see
    /// [`intermediates_pem_file`](Self::intermediates_pem_file).
    pub fn intermediates_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.intermediates
            .push(Source::Pem("intermediate certificates", pem.into()));
        self
    }

    /// Every file this builder reads, for watching them for changes.
    pub fn files(&self) -> Vec<PathBuf> {
        self.server_cert
            .iter()
            .chain(&self.server_key)
            .chain(&self.client_cas)
            .chain(&self.intermediates)
            .chain(&self.crls)
            .filter_map(|source| match source {
                Source::File(path) => Some(path.clone()),
                Source::Pem(..) => None,
            })
            .collect()
    }

    /// A file of one or more PEM CRLs. Call again to add more files.
    pub fn crl_pem_file(mut self, path: impl AsRef<Path>) -> Self {
        self.crls.push(Source::File(path.as_ref().to_owned()));
        self
    }

    /// One or more PEM CRLs as bytes. Call again to add more.
    pub fn crl_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.crls.push(Source::Pem("CRL", pem.into()));
        self
    }

    /// Required (default) or optional client certificates.
    pub fn client_auth(mut self, mode: ClientAuth) -> Self {
        self.client_auth = mode;
        self
    }

    /// TLS 1.2 and 1.3 (default) or 1.3 only.
    pub fn tls_versions(mut self, versions: TlsVersions) -> Self {
        self.versions = versions;
        self
    }

    /// Check CRLs for the whole chain (default) or the client's own certificate only.
    pub fn revocation_scope(mut self, scope: RevocationScope) -> Self {
        self.revocation_scope = scope;
        self
    }

    /// Deny (default) or allow certificates whose revocation status no CRL covers.
    pub fn unknown_revocation(mut self, policy: UnknownRevocation) -> Self {
        self.unknown_revocation = policy;
        self
    }

    /// Treat a CRL past its `nextUpdate` as unusable (off by default, as in rustls).
    pub fn enforce_crl_expiry(mut self, enforce: bool) -> Self {
        self.enforce_crl_expiry = enforce;
        self
    }

    /// ALPN protocols to offer, most preferred first (default `h2`, `http/1.1`).
    pub fn alpn_protocols(mut self, protocols: Vec<Vec<u8>>) -> Self {
        self.alpn = Some(protocols);
        self
    }

    /// Reads and checks every input and builds the configuration.
    pub fn build(&self) -> Result<MtlsConfig, ConfigError> {
        let provider = Arc::new(crate::crypto_provider());

        let cert_source = self
            .server_cert
            .as_ref()
            .ok_or(ConfigError::Missing("server certificate"))?;
        let key_source = self
            .server_key
            .as_ref()
            .ok_or(ConfigError::Missing("server private key"))?;
        if self.client_cas.is_empty() {
            return Err(ConfigError::Missing("client CA bundle"));
        }

        let (cert_origin, cert_pem) = cert_source.read()?;
        let chain = read_certs(&cert_origin, &cert_pem)?;
        warn_if_expired(&cert_origin, &chain);
        let (key_origin, key_pem) = key_source.read()?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
            pem::Error::NoItemsFound => ConfigError::NoPem {
                origin: key_origin.clone(),
                expected: "PRIVATE KEY",
            },
            source => ConfigError::Pem {
                origin: key_origin.clone(),
                source,
            },
        })?;

        let mut roots = RootCertStore::empty();
        for source in &self.client_cas {
            let (origin, bytes) = source.read()?;
            for (i, ca) in read_certs(&origin, &bytes)?.into_iter().enumerate() {
                check_is_ca(&origin, i + 1, &ca)?;
                roots.add(ca).map_err(|e| ConfigError::BadCertificate {
                    origin: origin.clone(),
                    index: i + 1,
                    reason: e.to_string(),
                })?;
            }
        }

        let mut intermediates = Vec::new();
        for source in &self.intermediates {
            let (origin, bytes) = source.read()?;
            let certs = read_certs(&origin, &bytes)?;
            for (i, ca) in certs.iter().enumerate() {
                check_is_ca(&origin, i + 1, ca)?;
            }
            intermediates.extend(certs);
        }

        let resumed_check = resumed_check(self.enforce_crl_expiry, &intermediates);

        let mut crls = Vec::new();
        for source in &self.crls {
            let (origin, bytes) = source.read()?;
            let found = read_crls(&origin, &bytes)?;
            for (i, crl) in found.iter().enumerate() {
                // rustls only reports "invalid CRL" for the whole set; parse each one here
                // so the error names the file.
                webpki_crl_check(&origin, i + 1, crl)?;
            }
            crls.extend(found);
        }

        let mut verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .with_crls(crls);
        if self.revocation_scope == RevocationScope::EndEntityOnly {
            verifier = verifier.only_check_end_entity_revocation();
        }
        if self.unknown_revocation == UnknownRevocation::Allow {
            verifier = verifier.allow_unknown_revocation_status();
        }
        if self.enforce_crl_expiry {
            verifier = verifier.enforce_revocation_expiration();
        }
        if self.client_auth == ClientAuth::Optional {
            verifier = verifier.allow_unauthenticated();
        }
        let mut verifier = verifier.build().map_err(|e| match e {
            rustls::server::VerifierBuilderError::InvalidCrl(err) => ConfigError::BadCrl {
                origin: Origin::Memory("CRL set"),
                reason: format!("{err:?}"),
            },
            other => ConfigError::Rustls(rustls::Error::General(other.to_string())),
        })?;
        if !intermediates.is_empty() {
            verifier = Arc::new(WithIntermediates {
                inner: verifier,
                intermediates,
            });
        }

        let versions: &[&'static rustls::SupportedProtocolVersion] = match self.versions {
            TlsVersions::Tls12And13 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersions::Tls13Only => &[&rustls::version::TLS13],
        };
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)?
            .with_client_cert_verifier(verifier.clone())
            .with_single_cert(chain, key)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => ConfigError::KeyMismatch {
                    cert: cert_origin.clone(),
                    key: key_origin.clone(),
                },
                other => ConfigError::UnusableKey {
                    origin: key_origin.clone(),
                    reason: other.to_string(),
                },
            })?;
        config.alpn_protocols = self
            .alpn
            .clone()
            .unwrap_or_else(|| vec![b"h2".to_vec(), b"http/1.1".to_vec()]);

        Ok(MtlsConfig {
            server_config: Arc::new(config),
            verifier,
            client_auth: self.client_auth,
            resumed_check,
        })
    }
}

/// What may change, with time alone, in the verdict of the verifier `build` makes: the
/// validity windows of the chain, of the configured intermediates path building can add, and,
/// with expiry enforced, of the CRLs. The last one is not worth modelling: such configurations
/// re-verify resumed sessions in full.
fn resumed_check(enforce_crl_expiry: bool, intermediates: &[CertificateDer<'_>]) -> ResumedCheck {
    if enforce_crl_expiry {
        return ResumedCheck::Full;
    }
    let mut until = None::<SystemTime>;
    for der in intermediates {
        let Ok((_, cert)) = X509Certificate::from_der(der) else {
            return ResumedCheck::Full;
        };
        let secs = cert.validity().not_after.timestamp();
        let not_after = UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
        until = Some(until.map_or(not_after, |t| t.min(not_after)));
    }
    ResumedCheck::ValidityOnly { until }
}

/// Completes client chains with configured intermediates before webpki builds the path.
#[derive(Debug)]
struct WithIntermediates {
    inner: Arc<dyn ClientCertVerifier>,
    intermediates: Vec<CertificateDer<'static>>,
}

impl ClientCertVerifier for WithIntermediates {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let mut all: Vec<CertificateDer<'_>> = intermediates.to_vec();
        all.extend(self.intermediates.iter().cloned());
        self.inner.verify_client_cert(end_entity, &all, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn read_certs(origin: &Origin, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ConfigError::Pem {
            origin: origin.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(ConfigError::NoPem {
            origin: origin.clone(),
            expected: "CERTIFICATE",
        });
    }
    for (i, cert) in certs.iter().enumerate() {
        parse_cert(origin, i + 1, cert)?;
    }
    Ok(certs)
}

fn read_crls(
    origin: &Origin,
    bytes: &[u8],
) -> Result<Vec<CertificateRevocationListDer<'static>>, ConfigError> {
    let crls = CertificateRevocationListDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ConfigError::Pem {
            origin: origin.clone(),
            source,
        })?;
    if crls.is_empty() {
        return Err(ConfigError::NoPem {
            origin: origin.clone(),
            expected: "X509 CRL",
        });
    }
    Ok(crls)
}

fn webpki_crl_check(
    origin: &Origin,
    index: usize,
    crl: &CertificateRevocationListDer<'_>,
) -> Result<(), ConfigError> {
    use x509_parser::revocation_list::CertificateRevocationList;
    match CertificateRevocationList::from_der(crl.as_ref()) {
        Ok(([], _)) => Ok(()),
        Ok(_) => Err(ConfigError::BadCrl {
            origin: origin.clone(),
            reason: format!("CRL #{index} has trailing data"),
        }),
        Err(e) => Err(ConfigError::BadCrl {
            origin: origin.clone(),
            reason: format!("CRL #{index}: {e}"),
        }),
    }
}

fn parse_cert<'a>(
    origin: &Origin,
    index: usize,
    der: &'a CertificateDer<'_>,
) -> Result<X509Certificate<'a>, ConfigError> {
    let bad = |reason: String| ConfigError::BadCertificate {
        origin: origin.clone(),
        index,
        reason,
    };
    match X509Certificate::from_der(der.as_ref()) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(bad("trailing data after the certificate".into())),
        Err(e) => Err(bad(e.to_string())),
    }
}

fn check_is_ca(origin: &Origin, index: usize, der: &CertificateDer<'_>) -> Result<(), ConfigError> {
    let cert = parse_cert(origin, index, der)?;
    if cert.is_ca() {
        Ok(())
    } else {
        Err(ConfigError::NotACa {
            origin: origin.clone(),
            index,
            subject: crate::name::DistinguishedName::from_x509(cert.subject()).to_string(),
        })
    }
}

fn warn_if_expired(origin: &Origin, chain: &[CertificateDer<'_>]) {
    let Some(Ok(cert)) = chain.first().map(|leaf| parse_cert(origin, 1, leaf)) else {
        return;
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let validity = cert.validity();
    if validity.not_after.timestamp() < now {
        tracing::warn!(file = %origin, not_after = %validity.not_after, "the server certificate has expired; clients will refuse it");
    } else if validity.not_before.timestamp() > now {
        tracing::warn!(file = %origin, not_before = %validity.not_before, "the server certificate is not valid yet; clients will refuse it");
    }
}

/// The crypto provider this crate builds every rustls object with: aws-lc-rs when its feature
/// is on, else ring. The process-wide default provider is never consulted, so enabling both
/// features (or another crate installing a default) cannot make rustls panic.
pub fn crypto_provider() -> CryptoProvider {
    #[cfg(feature = "aws-lc-rs")]
    {
        rustls::crypto::aws_lc_rs::default_provider()
    }
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    {
        rustls::crypto::ring::default_provider()
    }
}
