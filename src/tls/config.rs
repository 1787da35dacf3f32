//! Building a rustls [`ServerConfig`] for mutual TLS with secure defaults.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, TrustAnchor};
use rustls::server::ServerConfig;
use rustls::server::danger::ClientCertVerifier;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::identity::spiffe_id::validate_trust_domain;
use crate::identity::trust_bundle::{TrustBundle, validate_bundle_name};
use crate::tls::bundles::{BundleInputs, RevocationRules, TrustBundles};
use crate::tls::config_error::ConfigError;
use crate::tls::pem::{
    Der, Source, check_is_ca, server_not_after, warn_expiring_certs, warn_expiring_crls,
};
use crate::tls::provider::crypto_provider;
use crate::tls::resumption::ResumedCheck;
use crate::tls::session_resumption::Resumption;
use crate::tls::verifier::BundleVerifier;

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

/// Builder for a mutual-TLS server configuration. Start with [`MtlsConfig::builder`].
///
/// ```no_run
/// use tower_mtls::MtlsConfig;
/// use tower_mtls::tls::ClientAuth;
///
/// let tls = MtlsConfig::builder()
///     .server_cert_pem_file("/etc/tls/server-chain.pem")
///     .server_key_pem_file("/etc/tls/server-key.pem")
///     .client_ca_pem_file("/etc/tls/clients-ca.pem")
///     .crl_pem_file("/etc/tls/clients.crl")
///     .client_auth(ClientAuth::Required) // the default
///     .build()?;
/// let acceptor = tower_mtls::MtlsAcceptor::new(tls);
/// # Ok::<(), tower_mtls::ConfigError>(())
/// ```
///
/// Every input is read and checked in [`MtlsConfigBuilder::build`], so a wrong path, a key that
/// does not match the certificate or a bundle with no CA in it fails at start-up, with the file
/// named, not at the first handshake.
#[derive(Clone, Debug, Default)]
pub struct MtlsConfigBuilder {
    server_cert: Option<Source>,
    server_key: Option<Source>,
    // `None`: the unnamed bundle.
    client_cas: Vec<(Option<String>, Source)>,
    spiffe_bundles: Vec<(String, Source)>,
    intermediates: Vec<Source>,
    crls: Vec<Source>,
    client_auth: ClientAuth,
    versions: TlsVersions,
    revocation_scope: RevocationScope,
    unknown_revocation: UnknownRevocation,
    enforce_crl_expiry: bool,
    alpn: Option<Vec<Vec<u8>>>,
    expiry_warnings: ExpiryWarnings,
    resumption: Resumption,
}

/// Default window of [`MtlsConfigBuilder::expiry_warnings`] for certificates: 14 days.
pub const DEFAULT_CERT_EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);
/// Default window of [`MtlsConfigBuilder::expiry_warnings`] for CRLs: 1 day.
pub const DEFAULT_CRL_EXPIRY_WARNING: Duration = Duration::from_secs(86_400);

#[derive(Clone, Copy, Debug)]
struct ExpiryWarnings {
    certs: Duration,
    crls: Duration,
}

impl Default for ExpiryWarnings {
    fn default() -> Self {
        ExpiryWarnings {
            certs: DEFAULT_CERT_EXPIRY_WARNING,
            crls: DEFAULT_CRL_EXPIRY_WARNING,
        }
    }
}

/// A built mutual-TLS server configuration: the rustls [`ServerConfig`] plus the client
/// certificate verifier it uses, which the acceptor needs to re-verify resumed sessions and to
/// tell which trust bundle verified a chain.
#[derive(Clone, Debug)]
pub struct MtlsConfig {
    pub(crate) server_config: Arc<ServerConfig>,
    pub(crate) verifier: Arc<BundleVerifier>,
    // The same verifier, as rustls holds it.
    dyn_verifier: Arc<dyn ClientCertVerifier>,
    pub(crate) client_auth: ClientAuth,
    pub(crate) resumed_check: ResumedCheck,
    // What `server_config`'s session storage and ticketer were made from, so that a reload can
    // tell whether to keep the ones in use.
    pub(crate) resumption: Resumption,
    // After this, the acceptor refuses new handshakes rather than present an expired
    // certificate (a rotation that never came, or expired files).
    pub(crate) server_not_after: Option<SystemTime>,
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
        &self.dyn_verifier
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

    /// The server certificate chain (leaf first) as DER certificates, e.g. an X509-SVID from
    /// the SPIFFE Workload API.
    pub fn server_cert_der(mut self, chain: Vec<CertificateDer<'static>>) -> Self {
        self.server_cert = Some(Source::Der("server certificate", Der::Certs(chain)));
        self
    }

    /// The server private key as DER (PKCS#8, SEC1 or PKCS#1), e.g. an SVID's key.
    pub fn server_key_der(mut self, key: PrivateKeyDer<'static>) -> Self {
        self.server_key = Some(Source::Der("server key", Der::Key(Arc::new(key))));
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

    /// CA certificates that client certificates may chain to, from a PEM file: the **unnamed**
    /// client CA bundle (a principal it verified has
    /// [`TrustBundle::Unnamed`](crate::identity::TrustBundle::Unnamed)). Call again to add
    /// more certificates to it.
    pub fn client_ca_pem_file(mut self, path: impl AsRef<Path>) -> Self {
        self.client_cas
            .push((None, Source::File(path.as_ref().to_owned())));
        self
    }

    /// CA certificates of the unnamed client CA bundle, as PEM bytes; see
    /// [`client_ca_pem_file`](Self::client_ca_pem_file).
    pub fn client_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.client_cas
            .push((None, Source::Pem("client CA bundle", pem.into())));
        self
    }

    /// A **named** bundle of client CA certificates, as PEM bytes: a principal it verified
    /// carries the name ([`Principal::trust_bundle`](crate::Principal::trust_bundle), the
    /// policy key `trust_bundle`), so that names in certificates from a partner's CA can be
    /// told from the same names in your own. Calls with the same name add to that bundle.
    ///
    /// Names are 1 to 255 ASCII letters, digits, `.`, `-` and `_`, and share one namespace
    /// with SPIFFE trust domains: a bundle cannot be named like a configured trust domain. A CA
    /// (same subject and key) may not be in two client CA bundles.
    ///
    /// ```no_run
    /// use tower_mtls::MtlsConfig;
    ///
    /// let config = MtlsConfig::builder()
    ///     .server_cert_pem_file("server.pem")
    ///     .server_key_pem_file("server-key.pem")
    ///     .client_ca_pem_file("our-ca.pem")                     // unnamed
    ///     .client_ca_bundle_file("partner", "partner-ca.pem")  // named
    ///     .build()?;
    /// # Ok::<(), tower_mtls::ConfigError>(())
    /// ```
    pub fn client_ca_bundle(mut self, name: &str, pem: impl Into<Vec<u8>>) -> Self {
        self.client_cas.push((
            Some(name.to_owned()),
            Source::Pem("client CA bundle", pem.into()),
        ));
        self
    }

    /// A named client CA bundle from a PEM file; see [`client_ca_bundle`](Self::client_ca_bundle).
    pub fn client_ca_bundle_file(mut self, name: &str, path: impl AsRef<Path>) -> Self {
        self.client_cas.push((
            Some(name.to_owned()),
            Source::File(path.as_ref().to_owned()),
        ));
        self
    }

    /// The X.509 bundle (CA certificates, PEM bytes) of the SPIFFE trust domain `trust_domain`
    /// (`example.org`, no scheme). Call once per trust domain, your own and every federated
    /// one; calls with the same trust domain add to its bundle.
    ///
    /// With at least one SPIFFE bundle configured, a client certificate that carries a SPIFFE
    /// ID (a URI SAN with the `spiffe` scheme) is accepted only if it is a valid X509-SVID
    /// (exactly one URI SAN, a SPIFFE ID with a path, not a CA, `keyUsage` with
    /// `digitalSignature` and without `keyCertSign`/`cRLSign`) and chains to the bundle of
    /// **its own** trust domain; a SPIFFE ID of a trust domain without a bundle is refused in
    /// the handshake. A certificate without a SPIFFE ID is verified against the client CA
    /// bundles only, and refused when there are none. CRLs apply to every bundle.
    ///
    /// ```no_run
    /// use tower_mtls::MtlsConfig;
    ///
    /// let config = MtlsConfig::builder()
    ///     .server_cert_pem_file("svid.pem")
    ///     .server_key_pem_file("svid-key.pem")
    ///     .spiffe_bundle_file("example.org", "example.org.bundle.pem")
    ///     .spiffe_bundle_file("partner.example", "partner.bundle.pem") // federated
    ///     .build()?;
    /// # Ok::<(), tower_mtls::ConfigError>(())
    /// ```
    pub fn spiffe_bundle(mut self, trust_domain: &str, pem: impl Into<Vec<u8>>) -> Self {
        self.spiffe_bundles.push((
            trust_domain.to_owned(),
            Source::Pem("SPIFFE bundle", pem.into()),
        ));
        self
    }

    /// A SPIFFE trust domain's X.509 bundle as DER certificates (what the Workload API
    /// delivers); see [`spiffe_bundle`](Self::spiffe_bundle).
    pub fn spiffe_bundle_der(
        mut self,
        trust_domain: &str,
        certs: Vec<CertificateDer<'static>>,
    ) -> Self {
        self.spiffe_bundles.push((
            trust_domain.to_owned(),
            Source::Der("SPIFFE bundle", Der::Certs(certs)),
        ));
        self
    }

    /// A SPIFFE trust domain's X.509 bundle from a PEM file; see
    /// [`spiffe_bundle`](Self::spiffe_bundle).
    pub fn spiffe_bundle_file(mut self, trust_domain: &str, path: impl AsRef<Path>) -> Self {
        self.spiffe_bundles.push((
            trust_domain.to_owned(),
            Source::File(path.as_ref().to_owned()),
        ));
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
            .chain(self.client_cas.iter().map(|(_, source)| source))
            .chain(self.spiffe_bundles.iter().map(|(_, source)| source))
            .chain(&self.intermediates)
            .chain(&self.crls)
            .filter_map(|source| match source {
                Source::File(path) => Some(path.clone()),
                Source::Pem(..) | Source::Der(..) => None,
            })
            .collect()
    }

    /// A file of one or more PEM CRLs. Call again to add more files.
    pub fn crl_pem_file(mut self, path: impl AsRef<Path>) -> Self {
        self.crls.push(Source::File(path.as_ref().to_owned()));
        self
    }

    /// CRLs as DER (what the Workload API delivers). Call again to add more; an empty list
    /// adds none.
    pub fn crl_der(mut self, crls: Vec<CertificateRevocationListDer<'static>>) -> Self {
        if !crls.is_empty() {
            self.crls.push(Source::Der("CRL", Der::Crls(crls)));
        }
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

    /// How early [`build`](Self::build) warns — at start and at every reload — that the server
    /// certificate, a CA or intermediate certificate expires (`certs`, default 14 days) or that
    /// a CRL's `nextUpdate` comes (`crls`, default 1 day). Past that date it logs an error. The
    /// events are `expires_soon` and `expired`, with `what`, `file`, `name` and `not_after`.
    pub fn expiry_warnings(mut self, certs: Duration, crls: Duration) -> Self {
        self.expiry_warnings = ExpiryWarnings { certs, crls };
        self
    }

    /// Session resumption: [`Resumption::off`], a session cache ([`Resumption::cache`], the
    /// default: 256 sessions) or stateless tickets ([`Resumption::tickets`]), and how many TLS
    /// 1.3 tickets a full handshake issues. Resumed chains are verified again in every mode.
    /// A setting that cannot be honoured makes [`build`](Self::build) fail
    /// ([`ConfigError::Resumption`], [`ConfigError::TicketKeys`]).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use tower_mtls::MtlsConfig;
    /// use tower_mtls::tls::Resumption;
    ///
    /// let config = MtlsConfig::builder()
    ///     .server_cert_pem_file("server.pem")
    ///     .server_key_pem_file("server-key.pem")
    ///     .client_ca_pem_file("clients-ca.pem")
    ///     .resumption(Resumption::tickets(Duration::from_secs(3600)))
    ///     .build()?;
    /// # Ok::<(), tower_mtls::ConfigError>(())
    /// ```
    pub fn resumption(mut self, r: Resumption) -> Self {
        self.resumption = r;
        self
    }

    /// ALPN protocols to offer, most preferred first (default `h2`, `http/1.1`).
    pub fn alpn_protocols(mut self, protocols: Vec<Vec<u8>>) -> Self {
        self.alpn = Some(protocols);
        self
    }

    /// Reads and checks every input and builds the configuration.
    pub fn build(&self) -> Result<MtlsConfig, ConfigError> {
        let provider = Arc::new(crypto_provider());

        let cert_source = self
            .server_cert
            .as_ref()
            .ok_or(ConfigError::Missing("server certificate"))?;
        let key_source = self
            .server_key
            .as_ref()
            .ok_or(ConfigError::Missing("server private key"))?;
        if self.client_cas.is_empty() && self.spiffe_bundles.is_empty() {
            return Err(ConfigError::Missing("client CA bundle"));
        }

        let (cert_origin, chain) = cert_source.certs()?;
        let server_not_after = server_not_after(&cert_origin, &chain);
        let windows = self.expiry_warnings;
        warn_expiring_certs(
            "server certificate",
            &cert_origin,
            &chain[..chain.len().min(1)],
            windows.certs,
        );
        let (key_origin, key) = key_source.key()?;

        let mut ca: Vec<(TrustBundle, Vec<TrustAnchor<'static>>)> = Vec::new();
        for (name, source) in &self.client_cas {
            let bundle = match name {
                None => TrustBundle::Unnamed,
                Some(name) => {
                    validate_bundle_name(name).map_err(|why| ConfigError::BadBundleName {
                        name: name.clone(),
                        why,
                    })?;
                    TrustBundle::Named(name.as_str().into())
                }
            };
            let anchors = read_anchors(source, "client CA", windows.certs)?;
            match ca.iter_mut().find(|(known, _)| *known == bundle) {
                Some((_, known)) => known.extend(anchors),
                None => ca.push((bundle, anchors)),
            }
        }
        let mut spiffe: Vec<(Arc<str>, Vec<TrustAnchor<'static>>)> = Vec::new();
        for (trust_domain, source) in &self.spiffe_bundles {
            validate_trust_domain(trust_domain).map_err(|error| ConfigError::BadTrustDomain {
                value: trust_domain.clone(),
                error,
            })?;
            if ca.iter().any(|(b, _)| b.name() == Some(trust_domain)) {
                return Err(ConfigError::BundleNameClash {
                    name: trust_domain.clone(),
                });
            }
            let anchors = read_anchors(source, "SPIFFE bundle CA", windows.certs)?;
            match spiffe.iter_mut().find(|(td, _)| **td == **trust_domain) {
                Some((_, known)) => known.extend(anchors),
                None => spiffe.push((trust_domain.as_str().into(), anchors)),
            }
        }

        let mut intermediates = Vec::new();
        for source in &self.intermediates {
            let (origin, certs) = source.certs()?;
            for (i, ca) in certs.iter().enumerate() {
                check_is_ca(&origin, i + 1, ca)?;
            }
            warn_expiring_certs("intermediate certificate", &origin, &certs, windows.certs);
            intermediates.extend(certs);
        }

        let resumed_check = resumed_check(self.enforce_crl_expiry, &intermediates);

        let mut crls = Vec::new();
        for source in &self.crls {
            let (origin, found) = source.crls()?;
            warn_expiring_crls(&origin, &found, windows.crls);
            crls.extend(found);
        }

        let bundles = TrustBundles::build(
            BundleInputs {
                ca,
                spiffe,
                intermediates,
                crls,
                revocation: RevocationRules {
                    end_entity_only: self.revocation_scope == RevocationScope::EndEntityOnly,
                    allow_unknown: self.unknown_revocation == UnknownRevocation::Allow,
                    enforce_expiry: self.enforce_crl_expiry,
                },
            },
            &provider,
        )?;
        let verifier = Arc::new(BundleVerifier::new(
            bundles,
            self.client_auth == ClientAuth::Required,
        ));
        let dyn_verifier: Arc<dyn ClientCertVerifier> = verifier.clone();

        let versions: &[&'static rustls::SupportedProtocolVersion] = match self.versions {
            TlsVersions::Tls12And13 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersions::Tls13Only => &[&rustls::version::TLS13],
        };
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)?
            .with_client_cert_verifier(dyn_verifier.clone())
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
        self.resumption.apply(&mut config)?;

        Ok(MtlsConfig {
            server_config: Arc::new(config),
            verifier,
            dyn_verifier,
            client_auth: self.client_auth,
            resumed_check,
            resumption: self.resumption.clone(),
            server_not_after,
        })
    }
}

/// The trust anchors of the CA certificates in `source`, each checked to be a CA.
fn read_anchors(
    source: &Source,
    what: &str,
    warn_within: Duration,
) -> Result<Vec<TrustAnchor<'static>>, ConfigError> {
    let (origin, certs) = source.certs()?;
    warn_expiring_certs(what, &origin, &certs, warn_within);
    let mut anchors = Vec::with_capacity(certs.len());
    for (i, ca) in certs.iter().enumerate() {
        check_is_ca(&origin, i + 1, ca)?;
        let anchor =
            webpki::anchor_from_trusted_cert(ca).map_err(|e| ConfigError::BadCertificate {
                origin: origin.clone(),
                index: i + 1,
                reason: e.to_string(),
            })?;
        anchors.push(anchor.to_owned());
    }
    Ok(anchors)
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
