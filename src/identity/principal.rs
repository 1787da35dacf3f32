//! [`Principal`]: the identity of a client, parsed once per connection from its verified chain.

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509CertificateParser;
use x509_parser::extensions::{GeneralName, SubjectAlternativeName as X509San};
use x509_parser::nom::Parser as _;
use x509_parser::oid_registry::{OID_X509_EXT_EXTENDED_KEY_USAGE, OID_X509_EXT_SUBJECT_ALT_NAME};
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;

use crate::identity::name::DistinguishedName;
use crate::identity::spiffe_id::SpiffeId;
use crate::identity::trust_bundle::TrustBundle;

/// The verified identity of a TLS client.
///
/// Built by [`MtlsAcceptor`](crate::MtlsAcceptor) from the certificate chain that rustls has
/// verified, once per connection, and shared by every request on that connection (and by the
/// acceptor's other open connections that presented the very same chain, verified by the same
/// bundle: such a chain is parsed once). Cloning is an `Arc` clone. What a connection's
/// verification state is (a reload, a revocation) lives in its
/// [`ConnectionInfo`](crate::ConnectionInfo), never here.
///
/// ```
/// # fn show(principal: &tower_mtls::Principal) {
/// println!("subject {}", principal.subject());
/// if let Some(id) = principal.spiffe_id() {
///     println!("workload {} in {}", id.path(), id.trust_domain());
/// }
/// let is_admin = principal.organizational_units().any(|ou| ou == "admins");
/// # }
/// ```
#[derive(Clone)]
pub struct Principal {
    inner: Arc<Inner>,
}

struct Inner {
    subject: DistinguishedName,
    issuer: DistinguishedName,
    subject_alt_names: Vec<SubjectAltName>,
    spiffe_id: Option<SpiffeId>,
    /// Rendered on first use; `raw_serial` is where the serial's bytes are in the leaf's DER.
    serial: OnceLock<String>,
    raw_serial: std::ops::Range<usize>,
    /// Hashed on first use: most connections never need it, and hashing the leaf is a good
    /// part of building a principal.
    fingerprint_sha256: OnceLock<[u8; 32]>,
    /// Hashed on first use (only key pins need it); `spki` is where it is in the leaf's DER.
    spki_sha256: OnceLock<[u8; 32]>,
    spki: std::ops::Range<usize>,
    not_before: SystemTime,
    not_after: SystemTime,
    extended_key_usages: Vec<ExtendedKeyUsage>,
    trust_bundle: TrustBundle,
    /// The chain's DER, leaf first, in one allocation; `ends[i]` is where certificate `i` ends.
    der: Vec<u8>,
    ends: Vec<usize>,
    /// The trusted proxy whose connection forwarded this chain in a header (`None`: the
    /// chain came in the TLS handshake).
    forwarded_by: Option<Principal>,
}

/// One subject alternative name of the leaf certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SubjectAltName {
    /// `dNSName`.
    Dns(String),
    /// `uniformResourceIdentifier` (SPIFFE IDs are URI SANs).
    Uri(String),
    /// `rfc822Name`.
    Email(String),
    /// `iPAddress`.
    Ip(IpAddr),
    /// Any other kind (otherName, directoryName, registeredID, ...) or a SAN whose content is
    /// malformed; the string says which.
    Other(String),
}

/// An extended key usage of the leaf certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExtendedKeyUsage {
    /// `id-kp-serverAuth`.
    ServerAuth,
    /// `id-kp-clientAuth`.
    ClientAuth,
    /// `id-kp-codeSigning`.
    CodeSigning,
    /// `id-kp-emailProtection`.
    EmailProtection,
    /// `id-kp-timeStamping`.
    TimeStamping,
    /// `id-kp-OCSPSigning`.
    OcspSigning,
    /// `anyExtendedKeyUsage`.
    Any,
    /// Another usage, by dotted OID.
    Other(String),
}

/// Why a verified chain could not be turned into a [`Principal`].
///
/// rustls and x509-parser disagree very rarely, but when they do the connection is refused
/// rather than given a half-parsed identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrincipalError {
    /// The chain is empty.
    #[error("the peer presented an empty certificate chain")]
    EmptyChain,
    /// The leaf is not a well-formed X.509 certificate.
    #[error("the client certificate could not be parsed: {0}")]
    Malformed(String),
    /// Bytes after the certificate's DER encoding.
    #[error("the client certificate has trailing data after its DER encoding")]
    TrailingData,
    /// An extension that must appear at most once appears twice, or cannot be parsed.
    #[error("the client certificate has a malformed extension: {0}")]
    BadExtension(String),
}

impl Principal {
    /// Parses a principal from a certificate chain, leaf first.
    ///
    /// **The caller asserts that this chain has been verified** (by rustls, against trust
    /// anchors it chose). [`MtlsAcceptor`](crate::MtlsAcceptor) calls this only with the chain
    /// rustls returns after a successful handshake; everything else should get principals from
    /// there rather than from here.
    ///
    /// The principal's [`trust_bundle`](Self::trust_bundle) is [`TrustBundle::Unnamed`].
    pub fn from_verified_chain(chain: &[CertificateDer<'_>]) -> Result<Self, PrincipalError> {
        Self::from_chain_verified_by(chain, TrustBundle::Unnamed)
    }

    /// [`from_verified_chain`](Self::from_verified_chain) for a chain that `bundle` verified.
    pub(crate) fn from_chain_verified_by(
        chain: &[CertificateDer<'_>],
        bundle: TrustBundle,
    ) -> Result<Self, PrincipalError> {
        Self::build(chain, bundle, None)
    }

    /// A principal for a chain that a trusted proxy forwarded and that `bundle` verified, as
    /// a TLS peer's chain is verified.
    pub(crate) fn from_forwarded_chain(
        chain: &[CertificateDer<'_>],
        bundle: TrustBundle,
        proxy: Principal,
    ) -> Result<Self, PrincipalError> {
        Self::build(chain, bundle, Some(proxy))
    }

    fn build(
        chain: &[CertificateDer<'_>],
        bundle: TrustBundle,
        forwarded_by: Option<Principal>,
    ) -> Result<Self, PrincipalError> {
        let leaf = chain.first().ok_or(PrincipalError::EmptyChain)?;
        // Extensions are left unparsed: only SAN and EKU matter here, and they are parsed below
        // with x509-parser's own parsers (the rest is webpki's business, which verified them).
        let (rest, cert) = X509CertificateParser::new()
            .with_deep_parse_extensions(false)
            .parse(leaf.as_ref())
            .map_err(|e| PrincipalError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(PrincipalError::TrailingData);
        }
        let tbs = &cert.tbs_certificate;

        let mut subject_alt_names = Vec::new();
        let mut extended_key_usages = Vec::new();
        let mut seen_san = false;
        let mut seen_eku = false;
        for ext in tbs.extensions() {
            if ext.oid == OID_X509_EXT_SUBJECT_ALT_NAME {
                if std::mem::replace(&mut seen_san, true) {
                    return Err(PrincipalError::BadExtension(
                        "subjectAltName appears twice".into(),
                    ));
                }
                // Like x509-parser's deep parse: bytes after the SEQUENCE are ignored.
                let (_, san) = X509San::from_der(ext.value)
                    .map_err(|error| bad_extension(&ext.oid, &error))?;
                subject_alt_names = san.general_names.iter().map(convert_san).collect();
            } else if ext.oid == OID_X509_EXT_EXTENDED_KEY_USAGE {
                if std::mem::replace(&mut seen_eku, true) {
                    return Err(PrincipalError::BadExtension(
                        "extendedKeyUsage appears twice".into(),
                    ));
                }
                let (_, eku) = x509_parser::extensions::ExtendedKeyUsage::from_der(ext.value)
                    .map_err(|error| bad_extension(&ext.oid, &error))?;
                extended_key_usages = convert_eku(&eku);
            }
        }

        let spiffe_id = spiffe_id_of(&subject_alt_names);
        // x509-parser hands out sub-slices of its input: locate the SPKI and the serial in the leaf.
        let spki = range_in(leaf.as_ref(), tbs.subject_pki.raw, "SPKI")?;
        let raw_serial = range_in(leaf.as_ref(), tbs.raw_serial(), "serial number")?;
        let mut der = Vec::with_capacity(chain.iter().map(|c| c.len()).sum());
        let mut ends = Vec::with_capacity(chain.len());
        for cert in chain {
            der.extend_from_slice(cert);
            ends.push(der.len());
        }
        Ok(Principal {
            inner: Arc::new(Inner {
                subject: DistinguishedName::from_x509(tbs.subject()),
                issuer: DistinguishedName::from_x509(tbs.issuer()),
                subject_alt_names,
                spiffe_id,
                serial: OnceLock::new(),
                raw_serial,
                fingerprint_sha256: OnceLock::new(),
                spki_sha256: OnceLock::new(),
                spki,
                not_before: system_time(tbs.validity().not_before),
                not_after: system_time(tbs.validity().not_after),
                extended_key_usages,
                trust_bundle: bundle,
                der,
                ends,
                forwarded_by,
            }),
        })
    }

    /// The subject distinguished name.
    pub fn subject(&self) -> &DistinguishedName {
        &self.inner.subject
    }

    /// The issuer distinguished name (the CA that signed the leaf).
    pub fn issuer(&self) -> &DistinguishedName {
        &self.inner.issuer
    }

    /// The subject's `CN` values (none, one or several).
    pub fn common_names(&self) -> impl Iterator<Item = &str> {
        self.inner.subject.common_names()
    }

    /// The first subject `CN`, if any. Prefer SANs or the SPIFFE ID for identity decisions.
    pub fn common_name(&self) -> Option<&str> {
        self.common_names().next()
    }

    /// The subject's `O` values.
    pub fn organizations(&self) -> impl Iterator<Item = &str> {
        self.inner.subject.organizations()
    }

    /// The subject's `OU` values.
    pub fn organizational_units(&self) -> impl Iterator<Item = &str> {
        self.inner.subject.organizational_units()
    }

    /// All subject alternative names, in certificate order.
    pub fn subject_alt_names(&self) -> &[SubjectAltName] {
        &self.inner.subject_alt_names
    }

    /// The DNS SANs.
    pub fn dns_names(&self) -> impl Iterator<Item = &str> {
        self.sans(|san| match san {
            SubjectAltName::Dns(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// The URI SANs.
    pub fn uris(&self) -> impl Iterator<Item = &str> {
        self.sans(|san| match san {
            SubjectAltName::Uri(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// The email (rfc822Name) SANs.
    pub fn emails(&self) -> impl Iterator<Item = &str> {
        self.sans(|san| match san {
            SubjectAltName::Email(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// The IP address SANs.
    pub fn ip_addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.sans(|san| match san {
            SubjectAltName::Ip(ip) => Some(*ip),
            _ => None,
        })
    }

    fn sans<'a, T>(
        &'a self,
        pick: impl Fn(&'a SubjectAltName) -> Option<T> + 'a,
    ) -> impl Iterator<Item = T> + 'a {
        self.inner.subject_alt_names.iter().filter_map(pick)
    }

    /// The SPIFFE ID, present only when the leaf is a valid X509-SVID identity: exactly one URI
    /// SAN, and it is a valid `spiffe://` ID. Two URI SANs, or an invalid SPIFFE URI, give
    /// `None` rather than a guess.
    pub fn spiffe_id(&self) -> Option<&SpiffeId> {
        self.inner.spiffe_id.as_ref()
    }

    /// The bundle of trust anchors that verified the chain: a name in the certificate (a
    /// SPIFFE ID, an OU, the issuer DN) means something only together with it when the server
    /// trusts several bundles. A SPIFFE ID is always accepted from its own trust domain's
    /// bundle only, when SPIFFE bundles are configured.
    pub fn trust_bundle(&self) -> &TrustBundle {
        &self.inner.trust_bundle
    }

    /// The serial number, lowercase hex without leading zero bytes (`"0"` for zero).
    pub fn serial(&self) -> &str {
        self.inner.serial.get_or_init(|| {
            // The range was checked against the leaf when the principal was built.
            let raw = self.inner.der.get(self.inner.raw_serial.clone());
            serial_hex(raw.unwrap_or_default())
        })
    }

    /// SHA-256 of the leaf certificate's DER (computed on first use, then kept).
    pub fn fingerprint_sha256(&self) -> &[u8; 32] {
        self.inner
            .fingerprint_sha256
            .get_or_init(|| Sha256::digest(self.leaf_der().as_ref()).into())
    }

    /// [`fingerprint_sha256`](Self::fingerprint_sha256) as lowercase hex.
    pub fn fingerprint_sha256_hex(&self) -> String {
        hex::encode(self.fingerprint_sha256())
    }

    /// SHA-256 of the leaf's SubjectPublicKeyInfo, the value to pin a key by (it survives
    /// re-issuing a certificate for the same key).
    pub fn spki_sha256(&self) -> &[u8; 32] {
        self.inner.spki_sha256.get_or_init(|| {
            // The range was checked against the leaf when the principal was built.
            let spki = self
                .inner
                .der
                .get(self.inner.spki.clone())
                .unwrap_or_default();
            Sha256::digest(spki).into()
        })
    }

    /// Start of the validity window.
    pub fn not_before(&self) -> SystemTime {
        self.inner.not_before
    }

    /// End of the validity window.
    pub fn not_after(&self) -> SystemTime {
        self.inner.not_after
    }

    /// Whether `now` is inside the validity window.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.inner.not_before <= now && now <= self.inner.not_after
    }

    /// The extended key usages of the leaf (empty when it has no EKU extension).
    pub fn extended_key_usages(&self) -> &[ExtendedKeyUsage] {
        &self.inner.extended_key_usages
    }

    /// The DER certificates the client sent, leaf first, as rustls verified them.
    ///
    /// The principal keeps the chain in one buffer; this builds a small vector of borrowed
    /// views into it (leaf at index 0, never empty).
    pub fn chain(&self) -> Vec<CertificateDer<'_>> {
        self.certificates().collect()
    }

    /// The DER certificates the client sent, leaf first, without allocating.
    pub fn certificates(&self) -> impl ExactSizeIterator<Item = CertificateDer<'_>> + '_ {
        let (der, ends) = (self.inner.der.as_slice(), self.inner.ends.as_slice());
        ends.iter().enumerate().map(move |(i, &end)| {
            let start = i.checked_sub(1).and_then(|j| ends.get(j)).copied();
            CertificateDer::from(der.get(start.unwrap_or(0)..end).unwrap_or_default())
        })
    }

    /// The leaf certificate's DER.
    pub fn leaf_der(&self) -> CertificateDer<'_> {
        // `from_verified_chain` refuses an empty chain, so `ends` has at least one entry.
        let end = self.inner.ends.first().copied().unwrap_or_default();
        CertificateDer::from(self.inner.der.get(..end).unwrap_or_default())
    }

    /// The trusted proxy that forwarded this identity in a request header, when it did: the
    /// proxy's own verified principal (its connection's). `None` for a client that connected
    /// directly. See [`TrustedProxies`](crate::forwarded::TrustedProxies).
    pub fn forwarded_by(&self) -> Option<&Principal> {
        self.inner.forwarded_by.as_ref()
    }

    /// Whether this identity was forwarded by a trusted proxy rather than presented in the
    /// TLS handshake.
    pub fn is_forwarded(&self) -> bool {
        self.inner.forwarded_by.is_some()
    }

    /// Whether two handles share the same parsed identity: the same connection's, or those of
    /// connections that presented the very same chain, verified by the same trust bundle (an
    /// acceptor parses such a chain once and shares the principal while one of them is open).
    /// Not a comparison of identities: two different certificates of one subject give `false`.
    pub fn ptr_eq(a: &Principal, b: &Principal) -> bool {
        Arc::ptr_eq(&a.inner, &b.inner)
    }

    /// A handle that does not keep this principal alive.
    pub(crate) fn downgrade(&self) -> WeakPrincipal {
        WeakPrincipal(Arc::downgrade(&self.inner))
    }

    /// Whether this principal is the one [`from_chain_verified_by`](Self::from_chain_verified_by)
    /// makes of `chain` and `bundle`: the same certificates byte for byte, the same bundle, and
    /// not forwarded.
    pub(crate) fn is_of(&self, chain: &[CertificateDer<'_>], bundle: &TrustBundle) -> bool {
        self.inner.forwarded_by.is_none()
            && self.inner.trust_bundle == *bundle
            && self.inner.ends.len() == chain.len()
            && self
                .certificates()
                .zip(chain)
                .all(|(mine, theirs)| mine.as_ref() == theirs.as_ref())
    }
}

/// A [`Principal`] that does not keep it alive.
pub(crate) struct WeakPrincipal(Weak<Inner>);

impl WeakPrincipal {
    pub(crate) fn upgrade(&self) -> Option<Principal> {
        self.0.upgrade().map(|inner| Principal { inner })
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.0.strong_count() == 0
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("subject", &self.inner.subject.as_rfc4514())
            .field("issuer", &self.inner.issuer.as_rfc4514())
            .field("spiffe_id", &self.inner.spiffe_id)
            .field("subject_alt_names", &self.inner.subject_alt_names)
            .field("serial", &self.serial())
            .field("trust_bundle", &self.inner.trust_bundle)
            .field(
                "forwarded_by",
                &self
                    .inner
                    .forwarded_by
                    .as_ref()
                    .map(|p| p.subject().as_rfc4514()),
            )
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Principal {
    /// The SPIFFE ID when there is one, else the subject DN: what logs should show.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.spiffe_id {
            Some(id) => f.write_str(id.as_str()),
            None => f.write_str(self.inner.subject.as_rfc4514()),
        }
    }
}

fn convert_san(name: &GeneralName<'_>) -> SubjectAltName {
    match name {
        GeneralName::DNSName(s) => SubjectAltName::Dns((*s).to_owned()),
        GeneralName::URI(s) => SubjectAltName::Uri((*s).to_owned()),
        GeneralName::RFC822Name(s) => SubjectAltName::Email((*s).to_owned()),
        GeneralName::IPAddress(bytes) => match ip_from_bytes(bytes) {
            Some(ip) => SubjectAltName::Ip(ip),
            None => SubjectAltName::Other(format!("iPAddress of {} bytes", bytes.len())),
        },
        GeneralName::OtherName(oid, _) => {
            SubjectAltName::Other(format!("otherName {}", oid.to_id_string()))
        }
        GeneralName::DirectoryName(dn) => SubjectAltName::Other(format!(
            "directoryName {}",
            DistinguishedName::from_x509(dn)
        )),
        GeneralName::RegisteredID(oid) => {
            SubjectAltName::Other(format!("registeredID {}", oid.to_id_string()))
        }
        GeneralName::X400Address(_) => SubjectAltName::Other("x400Address".into()),
        GeneralName::EDIPartyName(_) => SubjectAltName::Other("ediPartyName".into()),
        GeneralName::Invalid(tag, _) => {
            SubjectAltName::Other(format!("malformed general name (tag {})", tag.0))
        }
    }
}

fn bad_extension(
    oid: &x509_parser::der_parser::oid::Oid<'_>,
    error: &impl fmt::Display,
) -> PrincipalError {
    PrincipalError::BadExtension(format!("{}: {error}", oid.to_id_string()))
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn convert_eku(eku: &x509_parser::extensions::ExtendedKeyUsage<'_>) -> Vec<ExtendedKeyUsage> {
    let flags = [
        (eku.server_auth, ExtendedKeyUsage::ServerAuth),
        (eku.client_auth, ExtendedKeyUsage::ClientAuth),
        (eku.code_signing, ExtendedKeyUsage::CodeSigning),
        (eku.email_protection, ExtendedKeyUsage::EmailProtection),
        (eku.time_stamping, ExtendedKeyUsage::TimeStamping),
        (eku.ocsp_signing, ExtendedKeyUsage::OcspSigning),
        (eku.any, ExtendedKeyUsage::Any),
    ];
    flags
        .into_iter()
        .filter_map(|(set, usage)| set.then_some(usage))
        .chain(
            eku.other
                .iter()
                .map(|oid| ExtendedKeyUsage::Other(oid.to_id_string())),
        )
        .collect()
}

fn spiffe_id_of(sans: &[SubjectAltName]) -> Option<SpiffeId> {
    let mut uris = sans.iter().filter_map(|san| match san {
        SubjectAltName::Uri(uri) => Some(uri),
        _ => None,
    });
    let uri = uris.next()?;
    if uris.next().is_some() {
        return None;
    }
    SpiffeId::parse(uri).ok()
}

/// Where `part` (a sub-slice x509-parser handed out) lies in `leaf`.
fn range_in(
    leaf: &[u8],
    part: &[u8],
    what: &str,
) -> Result<std::ops::Range<usize>, PrincipalError> {
    let outside = || PrincipalError::Malformed(format!("{what} outside the certificate"));
    let start = (part.as_ptr() as usize)
        .checked_sub(leaf.as_ptr() as usize)
        .ok_or_else(outside)?;
    let range = start..start.saturating_add(part.len());
    if leaf.get(range.clone()) != Some(part) {
        return Err(outside());
    }
    Ok(range)
}

fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    if start == raw.len() {
        return "0".into();
    }
    hex::encode(&raw[start..])
}

fn system_time(t: ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_strips_leading_zero_bytes() {
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8f01");
        assert_eq!(serial_hex(&[0x01]), "01");
        assert_eq!(serial_hex(&[0x00]), "0");
        assert_eq!(serial_hex(&[]), "0");
    }

    #[test]
    fn spiffe_id_needs_exactly_one_valid_uri_san() {
        let uri = |s: &str| SubjectAltName::Uri(s.into());
        let dns = SubjectAltName::Dns("spiffe://example.org/a".into());
        assert_eq!(
            spiffe_id_of(&[dns.clone(), uri("spiffe://example.org/a")]).map(|i| i.to_string()),
            Some("spiffe://example.org/a".into())
        );
        assert!(spiffe_id_of(&[dns]).is_none());
        assert!(
            spiffe_id_of(&[uri("spiffe://example.org/a"), uri("spiffe://example.org/b")]).is_none()
        );
        assert!(spiffe_id_of(&[uri("spiffe://Example.org/a")]).is_none());
    }

    #[test]
    fn empty_chain_and_garbage_are_errors() {
        assert_eq!(
            Principal::from_verified_chain(&[]).err(),
            Some(PrincipalError::EmptyChain)
        );
        let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01]);
        assert!(matches!(
            Principal::from_verified_chain(&[junk]),
            Err(PrincipalError::Malformed(_))
        ));
    }
}
