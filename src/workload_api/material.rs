//! What one Workload API response becomes once validated: SVIDs, bundles, CRLs.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::time::ASN1Time;

use super::pb;
use crate::identity::spiffe_id::{SpiffeId, SpiffeIdError};

/// Longest hint accepted, in bytes (the Workload API specification: servers SHOULD NOT support
/// longer ones).
pub const MAX_HINT_LEN: usize = 1024;

/// Longest raw string (a SPIFFE ID or a bundle key that failed to parse) kept in an error.
const MAX_ECHO_LEN: usize = 256;

/// Which of the workload's SVIDs is the server's own certificate.
///
/// ```
/// use tower_mtls::workload_api::SvidSelector;
///
/// let by_hint = SvidSelector::Hint("external".into());
/// assert_eq!(by_hint.to_string(), "hint \"external\"");
/// assert_eq!(SvidSelector::default(), SvidSelector::First);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SvidSelector {
    /// The first SVID of each response: the Workload API's default identity.
    #[default]
    First,
    /// The first SVID with exactly this SPIFFE ID.
    SpiffeId(SpiffeId),
    /// The first SVID with exactly this hint (the specification: with duplicate hints, the first
    /// one SHOULD be selected).
    Hint(String),
}

impl fmt::Display for SvidSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SvidSelector::First => f.write_str("the first SVID"),
            SvidSelector::SpiffeId(id) => write!(f, "SPIFFE ID {id}"),
            SvidSelector::Hint(hint) => write!(f, "hint {hint:?}"),
        }
    }
}

/// One validated X509-SVID: a SPIFFE ID, its certificate chain and its private key.
pub struct X509Svid {
    spiffe_id: SpiffeId,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    hint: Option<String>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl X509Svid {
    /// The SPIFFE ID: the leaf's one URI SAN.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The certificate chain, leaf first, intermediates (if any) after it; never empty.
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The private key (PKCS#8), checked to match the leaf's public key.
    pub fn private_key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }

    /// The operator's hint, if the agent sent one.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// The leaf's `notBefore`.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// The leaf's `notAfter`: after this, the SVID must not be served.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }
}

impl Clone for X509Svid {
    fn clone(&self) -> Self {
        X509Svid {
            spiffe_id: self.spiffe_id.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            hint: self.hint.clone(),
            not_before: self.not_before,
            not_after: self.not_after,
        }
    }
}

impl fmt::Debug for X509Svid {
    // Never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509Svid")
            .field("spiffe_id", &self.spiffe_id)
            .field("chain_len", &self.chain.len())
            .field("hint", &self.hint)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Everything one Workload API response carried, validated: the workload's SVIDs (one of them
/// selected as the server's), the bundles of its own and of federated trust domains, and CRLs.
///
/// Each response is complete (the specification: absent means removed), so a material replaces
/// the previous one as a whole.
#[derive(Debug, Clone)]
pub struct X509Material {
    // A copy of the selected entry of `svids`, so that reading it cannot fail.
    selected: X509Svid,
    svids: Vec<X509Svid>,
    bundles: BTreeMap<String, Vec<CertificateDer<'static>>>,
    crls: Vec<CertificateRevocationListDer<'static>>,
}

impl X509Material {
    /// The selected SVID (see [`SvidSelector`]): the server's certificate chain and key.
    pub fn svid(&self) -> &X509Svid {
        &self.selected
    }

    /// All SVIDs, in the agent's order.
    pub fn svids(&self) -> &[X509Svid] {
        &self.svids
    }

    /// The trust domain of the selected SVID.
    pub fn trust_domain(&self) -> &str {
        self.svid().spiffe_id().trust_domain()
    }

    /// Every bundle, keyed by bare trust domain name (`example.org`): the SVIDs' own trust
    /// domains and the federated ones.
    pub fn bundles(&self) -> &BTreeMap<String, Vec<CertificateDer<'static>>> {
        &self.bundles
    }

    /// The bundle of `trust_domain` (a bare name, `example.org`).
    pub fn bundle(&self, trust_domain: &str) -> Option<&[CertificateDer<'static>]> {
        self.bundles.get(trust_domain).map(Vec::as_slice)
    }

    /// The bundles of trust domains none of the SVIDs belongs to.
    pub fn federated_bundles(&self) -> impl Iterator<Item = (&str, &[CertificateDer<'static>])> {
        self.bundles
            .iter()
            .filter(|(td, _)| !self.svids.iter().any(|s| s.spiffe_id.is_member_of(td)))
            .map(|(td, certs)| (td.as_str(), certs.as_slice()))
    }

    /// The CRLs the agent sent (SPIRE sends none; other implementations may).
    pub fn crls(&self) -> &[CertificateRevocationListDer<'static>] {
        &self.crls
    }
}

/// Why a Workload API response was refused. The previous material stays current.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidUpdate {
    /// The response has no SVID (a server with nothing to give answers `PermissionDenied`).
    #[error("the response has no SVID")]
    NoSvids,
    /// An SVID's `spiffe_id` is not a SPIFFE ID.
    #[error("SVID #{index}: {spiffe_id:?} is not a SPIFFE ID: {source}")]
    SpiffeId {
        /// Position in the response.
        index: usize,
        /// The field as sent (truncated).
        spiffe_id: String,
        /// Why it does not parse.
        #[source]
        source: SpiffeIdError,
    },
    /// An SVID's SPIFFE ID has no path: it names a trust domain, not a workload.
    #[error("SVID #{index}: {spiffe_id} names a trust domain, not a workload")]
    TrustDomainId {
        /// Position in the response.
        index: usize,
        /// The ID.
        spiffe_id: SpiffeId,
    },
    /// An SVID without certificates.
    #[error("SVID {spiffe_id}: the certificate chain is empty")]
    EmptyChain {
        /// The SVID's ID.
        spiffe_id: SpiffeId,
    },
    /// A certificate of an SVID's chain does not parse.
    #[error("SVID {spiffe_id}: certificate {position} of the chain does not parse: {detail}")]
    Certificate {
        /// The SVID's ID.
        spiffe_id: SpiffeId,
        /// 0 for the leaf.
        position: usize,
        /// The parser's complaint.
        detail: String,
    },
    /// The leaf does not have exactly one URI SAN.
    #[error("SVID {spiffe_id}: the leaf has {found} URI SANs; an X509-SVID has exactly one")]
    UriSanCount {
        /// The SVID's ID.
        spiffe_id: SpiffeId,
        /// How many it has.
        found: usize,
    },
    /// The leaf's URI SAN is not the SVID's SPIFFE ID.
    #[error("SVID {spiffe_id}: the leaf's URI SAN is {found:?}")]
    UriSanMismatch {
        /// The SVID's ID.
        spiffe_id: SpiffeId,
        /// The leaf's URI SAN (truncated).
        found: String,
    },
    /// The leaf is a CA certificate.
    #[error("SVID {spiffe_id}: the leaf is a CA certificate")]
    LeafIsCa {
        /// The SVID's ID.
        spiffe_id: SpiffeId,
    },
    /// The leaf's key usage lacks `digitalSignature` (or the extension is missing).
    #[error("SVID {spiffe_id}: the leaf's key usage lacks digitalSignature")]
    LeafWithoutDigitalSignature {
        /// The SVID's ID.
        spiffe_id: SpiffeId,
    },
    /// The leaf's key usage allows signing certificates or CRLs.
    #[error("SVID {spiffe_id}: the leaf's key usage has keyCertSign or cRLSign")]
    LeafCanSignCertificates {
        /// The SVID's ID.
        spiffe_id: SpiffeId,
    },
    /// A certificate after the leaf is not a CA allowed to sign certificates.
    #[error("SVID {spiffe_id}: chain certificate {position} is not a CA with keyCertSign")]
    IntermediateNotCa {
        /// The SVID's ID.
        spiffe_id: SpiffeId,
        /// Position in the chain (1 is the first intermediate).
        position: usize,
    },
    /// The private key is not a PKCS#8 key the crypto provider can use.
    #[error("SVID {spiffe_id}: the private key is not usable: {detail}")]
    PrivateKey {
        /// The SVID's ID.
        spiffe_id: SpiffeId,
        /// The provider's complaint.
        detail: String,
    },
    /// The private key is not the leaf's (or the provider cannot tell).
    #[error("SVID {spiffe_id}: the private key does not match the leaf certificate")]
    KeyMismatch {
        /// The SVID's ID.
        spiffe_id: SpiffeId,
    },
    /// The hint is longer than [`MAX_HINT_LEN`].
    #[error("SVID {spiffe_id}: the hint is {len} bytes long; at most 1024 are accepted")]
    HintTooLong {
        /// The SVID's ID.
        spiffe_id: SpiffeId,
        /// Its length.
        len: usize,
    },
    /// A federated bundle's key is not a trust domain (`spiffe://example.org` or `example.org`).
    #[error("federated bundle key {key:?} is not a trust domain: {source}")]
    BadTrustDomain {
        /// The key as sent (truncated).
        key: String,
        /// Why it does not parse.
        #[source]
        source: SpiffeIdError,
    },
    /// A federated bundle's key is a SPIFFE ID with a path.
    #[error("federated bundle key {key:?} has a path; a trust domain has none")]
    TrustDomainWithPath {
        /// The key as sent (truncated).
        key: String,
    },
    /// A bundle without certificates.
    #[error("the bundle of {trust_domain} is empty")]
    EmptyBundle {
        /// Its trust domain.
        trust_domain: String,
    },
    /// A certificate of a bundle does not parse.
    #[error("the bundle of {trust_domain}: certificate {position} does not parse: {detail}")]
    BundleCertificate {
        /// Its trust domain.
        trust_domain: String,
        /// Position in the bundle.
        position: usize,
        /// The parser's complaint.
        detail: String,
    },
    /// The response carries two different bundles for one trust domain (two SVIDs of the same
    /// trust domain with different bundles, or a federated bundle for an SVID's own domain).
    #[error("the response has two different bundles for {trust_domain}")]
    ConflictingBundles {
        /// The trust domain.
        trust_domain: String,
    },
    /// A CRL does not parse.
    #[error("CRL #{index} does not parse: {detail}")]
    Crl {
        /// Position in the response.
        index: usize,
        /// The parser's complaint.
        detail: String,
    },
    /// No SVID matches the configured [`SvidSelector`].
    #[error("no SVID matches {0}")]
    NoMatchingSvid(SvidSelector),
}

fn echo(s: &str) -> String {
    s.chars().take(MAX_ECHO_LEN).collect()
}

/// Validates a `FetchX509SVID` response.
pub(crate) fn from_response(
    response: &pb::X509svidResponse,
    selector: &SvidSelector,
    provider: &CryptoProvider,
) -> Result<X509Material, InvalidUpdate> {
    if response.svids.is_empty() {
        return Err(InvalidUpdate::NoSvids);
    }
    let mut bundles: BTreeMap<String, Vec<CertificateDer<'static>>> = BTreeMap::new();
    let mut svids = Vec::with_capacity(response.svids.len());
    for (index, raw) in response.svids.iter().enumerate() {
        let svid = validate_svid(index, raw, provider)?;
        let own = parse_bundle(svid.spiffe_id.trust_domain(), &raw.bundle)?;
        insert_bundle(&mut bundles, svid.spiffe_id.trust_domain(), own)?;
        svids.push(svid);
    }
    for (key, der) in &response.federated_bundles {
        let trust_domain = trust_domain_of_key(key)?;
        let certs = parse_bundle(&trust_domain, der)?;
        insert_bundle(&mut bundles, &trust_domain, certs)?;
    }
    let crls = response
        .crl
        .iter()
        .enumerate()
        .map(|(index, der)| parse_crl(index, der))
        .collect::<Result<Vec<_>, _>>()?;
    let selected = svids
        .iter()
        .find(|svid| match selector {
            SvidSelector::First => true,
            SvidSelector::SpiffeId(id) => svid.spiffe_id == *id,
            SvidSelector::Hint(hint) => svid.hint.as_deref() == Some(hint.as_str()),
        })
        .cloned()
        .ok_or_else(|| InvalidUpdate::NoMatchingSvid(selector.clone()))?;
    Ok(X509Material {
        selected,
        svids,
        bundles,
        crls,
    })
}

fn insert_bundle(
    bundles: &mut BTreeMap<String, Vec<CertificateDer<'static>>>,
    trust_domain: &str,
    certs: Vec<CertificateDer<'static>>,
) -> Result<(), InvalidUpdate> {
    match bundles.get(trust_domain) {
        Some(existing) if *existing != certs => Err(InvalidUpdate::ConflictingBundles {
            trust_domain: trust_domain.to_owned(),
        }),
        Some(_) => Ok(()),
        None => {
            bundles.insert(trust_domain.to_owned(), certs);
            Ok(())
        }
    }
}

/// SPIRE keys federated bundles by the trust domain's SPIFFE ID (`spiffe://example.org`);
/// go-spiffe also accepts the bare name, and so do we.
fn trust_domain_of_key(key: &str) -> Result<String, InvalidUpdate> {
    let id = if key.starts_with("spiffe://") {
        SpiffeId::parse(key)
    } else {
        SpiffeId::parse(&format!("spiffe://{key}"))
    }
    .map_err(|source| InvalidUpdate::BadTrustDomain {
        key: echo(key),
        source,
    })?;
    if !id.path().is_empty() {
        return Err(InvalidUpdate::TrustDomainWithPath { key: echo(key) });
    }
    Ok(id.trust_domain().to_owned())
}

fn validate_svid(
    index: usize,
    raw: &pb::X509svid,
    provider: &CryptoProvider,
) -> Result<X509Svid, InvalidUpdate> {
    let spiffe_id = SpiffeId::parse(&raw.spiffe_id).map_err(|source| InvalidUpdate::SpiffeId {
        index,
        spiffe_id: echo(&raw.spiffe_id),
        source,
    })?;
    if spiffe_id.path().is_empty() {
        return Err(InvalidUpdate::TrustDomainId { index, spiffe_id });
    }
    if raw.hint.len() > MAX_HINT_LEN {
        return Err(InvalidUpdate::HintTooLong {
            spiffe_id,
            len: raw.hint.len(),
        });
    }
    let chain = split_certificates(&raw.x509_svid).map_err(|(position, detail)| {
        InvalidUpdate::Certificate {
            spiffe_id: spiffe_id.clone(),
            position,
            detail,
        }
    })?;
    let Some(leaf_der) = chain.first() else {
        return Err(InvalidUpdate::EmptyChain { spiffe_id });
    };

    // Each certificate was parsed once by `split_certificates`; parsing again here keeps the
    // borrowed x509-parser views local instead of threading lifetimes through.
    let leaf = parse_one(leaf_der).map_err(|detail| InvalidUpdate::Certificate {
        spiffe_id: spiffe_id.clone(),
        position: 0,
        detail,
    })?;
    check_leaf(&spiffe_id, &leaf)?;
    for (position, der) in chain.iter().enumerate().skip(1) {
        let cert = parse_one(der).map_err(|detail| InvalidUpdate::Certificate {
            spiffe_id: spiffe_id.clone(),
            position,
            detail,
        })?;
        if !is_signing_ca(&cert) {
            return Err(InvalidUpdate::IntermediateNotCa {
                spiffe_id,
                position,
            });
        }
    }

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(raw.x509_svid_key.clone()));
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|error| InvalidUpdate::PrivateKey {
            spiffe_id: spiffe_id.clone(),
            detail: error.to_string(),
        })?;
    // The same comparison rustls makes in `CertifiedKey::keys_match`, except that a provider
    // unable to produce the public key is a refusal here: a mismatched key would only show up as
    // failed handshakes.
    let matches = signing_key
        .public_key()
        .is_some_and(|spki| spki.as_ref() == leaf.tbs_certificate.subject_pki.raw);
    if !matches {
        return Err(InvalidUpdate::KeyMismatch { spiffe_id });
    }

    let not_before = system_time(leaf.validity().not_before);
    let not_after = system_time(leaf.validity().not_after);
    Ok(X509Svid {
        spiffe_id,
        chain,
        key,
        hint: (!raw.hint.is_empty()).then(|| raw.hint.clone()),
        not_before,
        not_after,
    })
}

fn check_leaf(spiffe_id: &SpiffeId, leaf: &X509Certificate<'_>) -> Result<(), InvalidUpdate> {
    let certificate_error = |error: x509_parser::error::X509Error| InvalidUpdate::Certificate {
        spiffe_id: spiffe_id.clone(),
        position: 0,
        detail: error.to_string(),
    };
    let uris: Vec<&str> = match leaf.subject_alternative_name().map_err(certificate_error)? {
        Some(san) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    };
    match uris.as_slice() {
        [uri] if *uri == spiffe_id.as_str() => {}
        [uri] => {
            return Err(InvalidUpdate::UriSanMismatch {
                spiffe_id: spiffe_id.clone(),
                found: echo(uri),
            });
        }
        other => {
            return Err(InvalidUpdate::UriSanCount {
                spiffe_id: spiffe_id.clone(),
                found: other.len(),
            });
        }
    }
    let is_ca = leaf
        .basic_constraints()
        .map_err(certificate_error)?
        .is_some_and(|bc| bc.value.ca);
    if is_ca {
        return Err(InvalidUpdate::LeafIsCa {
            spiffe_id: spiffe_id.clone(),
        });
    }
    let key_usage = leaf.key_usage().map_err(certificate_error)?;
    let Some(key_usage) = key_usage.map(|ku| ku.value) else {
        return Err(InvalidUpdate::LeafWithoutDigitalSignature {
            spiffe_id: spiffe_id.clone(),
        });
    };
    if !key_usage.digital_signature() {
        return Err(InvalidUpdate::LeafWithoutDigitalSignature {
            spiffe_id: spiffe_id.clone(),
        });
    }
    if key_usage.key_cert_sign() || key_usage.crl_sign() {
        return Err(InvalidUpdate::LeafCanSignCertificates {
            spiffe_id: spiffe_id.clone(),
        });
    }
    Ok(())
}

fn is_signing_ca(cert: &X509Certificate<'_>) -> bool {
    let ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    let cert_sign = matches!(cert.key_usage(), Ok(Some(ku)) if ku.value.key_cert_sign());
    ca && cert_sign
}

fn parse_one<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, String> {
    match x509_parser::parse_x509_certificate(der.as_ref()) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err("trailing bytes after the certificate".into()),
        Err(error) => Err(error.to_string()),
    }
}

/// Splits concatenated DER certificates (the Workload API's encoding of chains and bundles),
/// checking that each one parses. On error: the failing position and the parser's complaint.
fn split_certificates(mut der: &[u8]) -> Result<Vec<CertificateDer<'static>>, (usize, String)> {
    let mut certs = Vec::new();
    while !der.is_empty() {
        let position = certs.len();
        let rest = match x509_parser::parse_x509_certificate(der) {
            Ok((rest, _)) => rest,
            Err(error) => return Err((position, error.to_string())),
        };
        let (one, rest) = der
            .split_at_checked(der.len() - rest.len())
            .ok_or_else(|| (position, "parser overran its input".to_owned()))?;
        certs.push(CertificateDer::from(one.to_vec()));
        der = rest;
    }
    Ok(certs)
}

fn parse_bundle(
    trust_domain: &str,
    der: &[u8],
) -> Result<Vec<CertificateDer<'static>>, InvalidUpdate> {
    let certs =
        split_certificates(der).map_err(|(position, detail)| InvalidUpdate::BundleCertificate {
            trust_domain: trust_domain.to_owned(),
            position,
            detail,
        })?;
    if certs.is_empty() {
        return Err(InvalidUpdate::EmptyBundle {
            trust_domain: trust_domain.to_owned(),
        });
    }
    Ok(certs)
}

fn parse_crl(
    index: usize,
    der: &[u8],
) -> Result<CertificateRevocationListDer<'static>, InvalidUpdate> {
    match x509_parser::parse_x509_crl(der) {
        Ok(([], _)) => Ok(CertificateRevocationListDer::from(der.to_vec())),
        Ok(_) => Err(InvalidUpdate::Crl {
            index,
            detail: "trailing bytes after the CRL".into(),
        }),
        Err(error) => Err(InvalidUpdate::Crl {
            index,
            detail: error.to_string(),
        }),
    }
}

fn system_time(time: ASN1Time) -> SystemTime {
    let seconds = time.timestamp();
    let offset = Duration::from_secs(seconds.unsigned_abs());
    let shifted = if seconds >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(offset)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(offset)
    };
    shifted.unwrap_or(SystemTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose,
        SanType,
    };

    struct Pki {
        ca: CertifiedIssuer<'static, KeyPair>,
    }

    impl Pki {
        fn new() -> Self {
            let mut params = CertificateParams::default();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
            let key = KeyPair::generate().expect("key");
            Pki {
                ca: CertifiedIssuer::self_signed(params, key).expect("CA"),
            }
        }

        fn svid(&self, id: &str) -> pb::X509svid {
            let mut params = CertificateParams::default();
            params.subject_alt_names = vec![SanType::URI(id.try_into().expect("IA5"))];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &self.ca).expect("leaf");
            pb::X509svid {
                spiffe_id: id.to_owned(),
                x509_svid: cert.der().to_vec(),
                x509_svid_key: key.serialize_der(),
                bundle: self.ca.der().to_vec(),
                hint: String::new(),
            }
        }
    }

    fn validate(response: &pb::X509svidResponse) -> Result<X509Material, InvalidUpdate> {
        from_response(
            response,
            &SvidSelector::First,
            &crate::tls::provider::crypto_provider(),
        )
    }

    #[test]
    fn federated_keys_may_be_bare_names_and_duplicates_must_agree() {
        let own = Pki::new();
        let partner = Pki::new();
        let mut response = pb::X509svidResponse {
            svids: vec![
                own.svid("spiffe://example.org/a"),
                own.svid("spiffe://example.org/b"),
            ],
            ..Default::default()
        };
        response
            .federated_bundles
            .insert("partner.example".into(), partner.ca.der().to_vec());
        let material = validate(&response).expect("valid");
        assert_eq!(material.svids().len(), 2);
        assert_eq!(
            material
                .federated_bundles()
                .map(|(td, _)| td)
                .collect::<Vec<_>>(),
            ["partner.example"]
        );

        // The same bundle for the own trust domain again (federated) is harmless...
        response
            .federated_bundles
            .insert("spiffe://example.org".into(), own.ca.der().to_vec());
        assert!(validate(&response).is_ok());
        // ...a different one is refused.
        response
            .federated_bundles
            .insert("spiffe://example.org".into(), partner.ca.der().to_vec());
        assert_eq!(
            validate(&response).err(),
            Some(InvalidUpdate::ConflictingBundles {
                trust_domain: "example.org".into()
            })
        );
        response.federated_bundles.remove("spiffe://example.org");

        // Two SVIDs of one trust domain with different bundles.
        let mut conflicting = response.clone();
        if let Some(second) = conflicting.svids.get_mut(1) {
            second.bundle = partner.ca.der().to_vec();
        }
        assert!(matches!(
            validate(&conflicting),
            Err(InvalidUpdate::ConflictingBundles { .. })
        ));

        response.federated_bundles.insert(
            "spiffe://partner.example/workload".into(),
            partner.ca.der().to_vec(),
        );
        assert!(matches!(
            validate(&response),
            Err(InvalidUpdate::TrustDomainWithPath { key }) if key == "spiffe://partner.example/workload"
        ));
    }

    #[test]
    fn an_empty_response_and_empty_federated_bundles_are_refused() {
        assert_eq!(
            validate(&pb::X509svidResponse::default()).err(),
            Some(InvalidUpdate::NoSvids)
        );
        let own = Pki::new();
        let mut response = pb::X509svidResponse {
            svids: vec![own.svid("spiffe://example.org/a")],
            ..Default::default()
        };
        response
            .federated_bundles
            .insert("spiffe://partner.example".into(), Vec::new());
        assert_eq!(
            validate(&response).err(),
            Some(InvalidUpdate::EmptyBundle {
                trust_domain: "partner.example".into()
            })
        );
    }

    #[test]
    fn errors_do_not_echo_unbounded_input() {
        let own = Pki::new();
        let mut svid = own.svid("spiffe://example.org/a");
        svid.spiffe_id = format!("spiffe://{}", "X".repeat(10_000));
        let response = pb::X509svidResponse {
            svids: vec![svid],
            ..Default::default()
        };
        match validate(&response) {
            Err(InvalidUpdate::SpiffeId { spiffe_id, .. }) => {
                assert_eq!(spiffe_id.len(), MAX_ECHO_LEN);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let own = Pki::new();
        let raw = own.svid("spiffe://example.org/a");
        let response = pb::X509svidResponse {
            svids: vec![raw.clone()],
            ..Default::default()
        };
        let material = validate(&response).expect("valid");
        let debug = format!("{material:?}");
        assert!(debug.contains("spiffe://example.org/a"));
        let key_hex = hex::encode(&raw.x509_svid_key);
        assert!(!debug.contains(&key_hex[key_hex.len() - 32..]));
        assert!(!debug.to_lowercase().contains("private"));
    }
}
