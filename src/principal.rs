//! [`Principal`]: the identity of a client, parsed once per connection from its verified chain.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;

use crate::name::DistinguishedName;
use crate::spiffe::SpiffeId;

/// The verified identity of a TLS client.
///
/// Built by [`MtlsAcceptor`](crate::MtlsAcceptor) from the certificate chain that rustls has
/// verified, once per connection, and shared by every request on that connection. Cloning is an
/// `Arc` clone.
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
    serial: String,
    fingerprint_sha256: [u8; 32],
    spki_sha256: [u8; 32],
    not_before: SystemTime,
    not_after: SystemTime,
    extended_key_usages: Vec<ExtendedKeyUsage>,
    chain: Vec<CertificateDer<'static>>,
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
    pub fn from_verified_chain(chain: &[CertificateDer<'_>]) -> Result<Self, PrincipalError> {
        let leaf = chain.first().ok_or(PrincipalError::EmptyChain)?;
        let (rest, cert) = X509Certificate::from_der(leaf.as_ref())
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
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    if std::mem::replace(&mut seen_san, true) {
                        return Err(PrincipalError::BadExtension(
                            "subjectAltName appears twice".into(),
                        ));
                    }
                    subject_alt_names.extend(san.general_names.iter().map(convert_san));
                }
                ParsedExtension::ExtendedKeyUsage(eku) => {
                    if std::mem::replace(&mut seen_eku, true) {
                        return Err(PrincipalError::BadExtension(
                            "extendedKeyUsage appears twice".into(),
                        ));
                    }
                    extended_key_usages = convert_eku(eku);
                }
                ParsedExtension::ParseError { error } => {
                    return Err(PrincipalError::BadExtension(format!(
                        "{}: {error}",
                        ext.oid.to_id_string()
                    )));
                }
                _ => {}
            }
        }

        let spiffe_id = spiffe_id_of(&subject_alt_names);
        Ok(Principal {
            inner: Arc::new(Inner {
                subject: DistinguishedName::from_x509(tbs.subject()),
                issuer: DistinguishedName::from_x509(tbs.issuer()),
                subject_alt_names,
                spiffe_id,
                serial: serial_hex(tbs.raw_serial()),
                fingerprint_sha256: Sha256::digest(leaf.as_ref()).into(),
                spki_sha256: Sha256::digest(tbs.subject_pki.raw).into(),
                not_before: system_time(tbs.validity().not_before),
                not_after: system_time(tbs.validity().not_after),
                extended_key_usages,
                chain: chain.iter().map(|c| c.clone().into_owned()).collect(),
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

    /// The serial number, lowercase hex without leading zero bytes (`"0"` for zero).
    pub fn serial(&self) -> &str {
        &self.inner.serial
    }

    /// SHA-256 of the leaf certificate's DER.
    pub fn fingerprint_sha256(&self) -> &[u8; 32] {
        &self.inner.fingerprint_sha256
    }

    /// [`fingerprint_sha256`](Self::fingerprint_sha256) as lowercase hex.
    pub fn fingerprint_sha256_hex(&self) -> String {
        hex::encode(self.inner.fingerprint_sha256)
    }

    /// SHA-256 of the leaf's SubjectPublicKeyInfo, the value to pin a key by (it survives
    /// re-issuing a certificate for the same key).
    pub fn spki_sha256(&self) -> &[u8; 32] {
        &self.inner.spki_sha256
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
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.inner.chain
    }

    /// The leaf certificate's DER.
    pub fn leaf_der(&self) -> &CertificateDer<'static> {
        // `from_verified_chain` refuses an empty chain.
        &self.inner.chain[0]
    }

    /// Whether two handles share the same parsed identity (same connection).
    pub fn ptr_eq(a: &Principal, b: &Principal) -> bool {
        Arc::ptr_eq(&a.inner, &b.inner)
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("subject", &self.inner.subject.as_rfc4514())
            .field("issuer", &self.inner.issuer.as_rfc4514())
            .field("spiffe_id", &self.inner.spiffe_id)
            .field("subject_alt_names", &self.inner.subject_alt_names)
            .field("serial", &self.inner.serial)
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
