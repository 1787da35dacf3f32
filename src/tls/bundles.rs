//! [`TrustBundles`]: the client trust bundles of one configuration — the unnamed and named client
//! CA bundles, the SPIFFE trust domains' bundles — and which of them verifies a chain.
//!
//! Two questions, kept apart:
//!
//! - **Does the chain verify?** A certificate with a SPIFFE ID (when SPIFFE bundles are
//!   configured) is checked against its own trust domain's bundle only; any other certificate
//!   against the client CA bundles, all together. Each check is rustls's own
//!   `WebPkiClientVerifier` over exactly those anchors, so EKU, CA-as-leaf, CRL and error
//!   behaviour are rustls's.
//! - **Which bundle verified it?** For a SPIFFE ID: its trust domain's, the only one tried. With
//!   a single client CA bundle: that one. With several, the answer is the bundle of the trust
//!   anchor that terminates the verified path, which only path building with signatures can
//!   tell (two bundles may hold CAs of the same subject). A cheap look at names settles the
//!   common case first: a path ends at an anchor whose subject is the issuer of one of the
//!   chain's certificates (webpki compares those bytes exactly), so when the anchors named as
//!   issuers anywhere in the chain all belong to one bundle, that bundle it is. Otherwise
//!   webpki builds the path again, with the same anchors, intermediates, CRLs and key usage,
//!   and the anchor of the path it returns decides.
//!
//! rustls's `ClientCertVerifier` cannot hand a result to the connection, so the acceptor asks
//! the second question after the handshake, with the same snapshot ([`TrustBundles::bundle_of`]).

use std::borrow::Cow;
use std::sync::Arc;

use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, TrustAnchor, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, DistinguishedName, RootCertStore};
use webpki::{CertRevocationList, EndEntityCert, KeyUsage, OwnedCertRevocationList};
use x509_parser::certificate::X509CertificateParser;
use x509_parser::nom::Parser as _;

use crate::identity::trust_bundle::TrustBundle;
use crate::tls::config_error::{ConfigError, Origin};
use crate::tls::svid::{SpiffeRefusal, svid_id};

/// How revocation is checked, as configured.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RevocationRules {
    pub(crate) end_entity_only: bool,
    pub(crate) allow_unknown: bool,
    pub(crate) enforce_expiry: bool,
}

/// The checked certificates of every bundle, as the configuration read them.
pub(crate) struct BundleInputs {
    /// Client CA bundles in configuration order, one entry per name (`Unnamed` or `Named`).
    pub(crate) ca: Vec<(TrustBundle, Vec<TrustAnchor<'static>>)>,
    /// SPIFFE bundles, one entry per trust domain.
    pub(crate) spiffe: Vec<(Arc<str>, Vec<TrustAnchor<'static>>)>,
    pub(crate) intermediates: Vec<CertificateDer<'static>>,
    pub(crate) crls: Vec<CertificateRevocationListDer<'static>>,
    pub(crate) revocation: RevocationRules,
}

/// The trust bundles of one configuration, ready to verify client chains.
pub(crate) struct TrustBundles {
    ca: Option<CaBundles>,
    // Sorted by trust domain.
    spiffe: Vec<SpiffeBundle>,
    intermediates: Vec<CertificateDer<'static>>,
    hints: Vec<DistinguishedName>,
    algs: WebPkiSupportedAlgorithms,
    // Only path building among several client CA bundles uses these.
    crls: Vec<CertRevocationList<'static>>,
    revocation: RevocationRules,
}

/// The client CA bundles, verified together.
struct CaBundles {
    verifier: Arc<dyn ClientCertVerifier>,
    names: Vec<TrustBundle>,
    anchors: Vec<TrustAnchor<'static>>,
    // `subjects[i]` is `anchors[i]`'s subject with its SEQUENCE header, as in certificates.
    subjects: Vec<DistinguishedName>,
    // `owners[i]` is the index in `names` of the bundle `anchors[i]` came from.
    owners: Vec<usize>,
}

struct SpiffeBundle {
    trust_domain: Arc<str>,
    bundle: TrustBundle,
    verifier: Arc<dyn ClientCertVerifier>,
}

/// The anchors a chain is checked against.
#[derive(Clone, Copy)]
enum Selection<'a> {
    Ca(&'a CaBundles),
    Spiffe(&'a SpiffeBundle),
}

impl std::fmt::Debug for TrustBundles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ca: Vec<&TrustBundle> = self.ca.iter().flat_map(|ca| &ca.names).collect();
        let spiffe: Vec<&str> = self.spiffe.iter().map(|b| &*b.trust_domain).collect();
        f.debug_struct("TrustBundles")
            .field("client_ca_bundles", &ca)
            .field("spiffe_trust_domains", &spiffe)
            .field("intermediates", &self.intermediates.len())
            .field("crls", &self.crls.len())
            .finish_non_exhaustive()
    }
}

impl TrustBundles {
    /// Builds the verifiers. `inputs` holds the anchors of checked CA certificates; what is
    /// refused here is what only the set as a whole can get wrong.
    pub(crate) fn build(
        inputs: BundleInputs,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, ConfigError> {
        let BundleInputs {
            ca,
            mut spiffe,
            intermediates,
            crls,
            revocation,
        } = inputs;
        let ca = if ca.is_empty() {
            None
        } else {
            Some(CaBundles::build(ca, &crls, revocation, provider)?)
        };
        let mut all_anchors: Vec<TrustAnchor<'static>> = ca
            .iter()
            .flat_map(|ca| ca.anchors.iter().cloned())
            .collect();
        spiffe.sort_by(|a, b| a.0.cmp(&b.0));
        let mut spiffe_bundles = Vec::with_capacity(spiffe.len());
        for (trust_domain, anchors) in spiffe {
            all_anchors.extend(anchors.iter().cloned());
            spiffe_bundles.push(SpiffeBundle {
                verifier: webpki_verifier(anchors, &crls, revocation, provider)?,
                bundle: TrustBundle::SpiffeTrustDomain(trust_domain.clone()),
                trust_domain,
            });
        }
        let hints = RootCertStore { roots: all_anchors }.subjects();
        let crls = match &ca {
            Some(ca) if ca.names.len() > 1 => crls
                .iter()
                .map(|der| OwnedCertRevocationList::from_der(der.as_ref()).map(Into::into))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConfigError::BadCrl {
                    origin: Origin::Memory("CRL set"),
                    reason: e.to_string(),
                })?,
            _ => Vec::new(),
        };
        Ok(TrustBundles {
            ca,
            spiffe: spiffe_bundles,
            intermediates,
            hints,
            algs: provider.signature_verification_algorithms,
            crls,
            revocation,
        })
    }

    /// The subjects of every anchor, for the CertificateRequest (as `WebPkiClientVerifier`).
    pub(crate) fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    /// The signature algorithms chains and handshake signatures are verified with.
    pub(crate) fn algorithms(&self) -> &WebPkiSupportedAlgorithms {
        &self.algs
    }

    /// Whether the chain of `leaf` (with `intermediates`, the client's) verifies at `now`.
    pub(crate) fn check(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let intermediates = self.with_configured(intermediates);
        self.check_selected(self.select(leaf)?, leaf, &intermediates, now)
    }

    /// Verifies `chain` (leaf first) at `now` and says which bundle verified it.
    pub(crate) fn verify(
        &self,
        chain: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<&TrustBundle, rustls::Error> {
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or(rustls::Error::NoCertificatesPresented)?;
        let intermediates = self.with_configured(intermediates);
        let selection = self.select(leaf)?;
        self.check_selected(selection, leaf, &intermediates, now)?;
        self.attribute(selection, leaf, &intermediates, now)
    }

    /// Which bundle verified `chain` (leaf first), which **this** configuration has just
    /// verified at about `now`: only the answer is computed, not the verdict again (except
    /// when path building is the only way to the answer; an error then refuses the chain).
    pub(crate) fn bundle_of(
        &self,
        chain: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<&TrustBundle, rustls::Error> {
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or(rustls::Error::NoCertificatesPresented)?;
        let selection = self.select(leaf)?;
        if let Selection::Ca(ca) = selection
            && let [only] = &ca.names[..]
        {
            return Ok(only);
        }
        let intermediates = self.with_configured(intermediates);
        self.attribute(selection, leaf, &intermediates, now)
    }

    /// Which anchors `leaf` may chain to: its trust domain's when it carries a SPIFFE ID and
    /// SPIFFE bundles are configured, else the client CA bundles.
    fn select(&self, leaf: &CertificateDer<'_>) -> Result<Selection<'_>, rustls::Error> {
        if !self.spiffe.is_empty()
            && let Some(id) = svid_id(leaf)?
        {
            let td = id.trust_domain();
            return match self.spiffe.binary_search_by(|b| (*b.trust_domain).cmp(td)) {
                Ok(i) => Ok(Selection::Spiffe(&self.spiffe[i])),
                Err(_) => Err(SpiffeRefusal::UnknownTrustDomain(td.into()).into()),
            };
        }
        match &self.ca {
            Some(ca) => Ok(Selection::Ca(ca)),
            // Only SPIFFE bundles are configured (`build` needs at least one bundle).
            None => Err(SpiffeRefusal::NoSpiffeId.into()),
        }
    }

    fn check_selected(
        &self,
        selection: Selection<'_>,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let verifier = match selection {
            Selection::Ca(ca) => &ca.verifier,
            Selection::Spiffe(spiffe) => &spiffe.verifier,
        };
        verifier
            .verify_client_cert(leaf, intermediates, now)
            .map(|_| ())
    }

    /// The bundle whose anchor verified the chain; `intermediates` include the configured ones.
    fn attribute<'s>(
        &'s self,
        selection: Selection<'s>,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<&'s TrustBundle, rustls::Error> {
        let ca = match selection {
            Selection::Spiffe(spiffe) => return Ok(&spiffe.bundle),
            Selection::Ca(ca) => ca,
        };
        let owner = match only_candidate(ca, leaf, intermediates) {
            Some(owner) => owner,
            None => self.path_owner(ca, leaf, intermediates, now)?,
        };
        ca.names
            .get(owner)
            .ok_or_else(|| unattributable("no such bundle"))
    }

    /// Builds the path as the verifier did and returns the bundle index of its anchor.
    fn path_owner(
        &self,
        ca: &CaBundles,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<usize, rustls::Error> {
        let cert = EndEntityCert::try_from(leaf).map_err(webpki_error)?;
        let crls: Vec<&CertRevocationList<'_>> = self.crls.iter().collect();
        let revocation = webpki::RevocationOptionsBuilder::new(&crls)
            .ok()
            .map(|options| {
                options
                    .with_depth(if self.revocation.end_entity_only {
                        webpki::RevocationCheckDepth::EndEntity
                    } else {
                        webpki::RevocationCheckDepth::Chain
                    })
                    .with_status_policy(if self.revocation.allow_unknown {
                        webpki::UnknownStatusPolicy::Allow
                    } else {
                        webpki::UnknownStatusPolicy::Deny
                    })
                    .with_expiration_policy(if self.revocation.enforce_expiry {
                        webpki::ExpirationPolicy::Enforce
                    } else {
                        webpki::ExpirationPolicy::Ignore
                    })
                    .build()
            });
        let path = cert
            .verify_for_usage(
                self.algs.all,
                &ca.anchors,
                intermediates,
                now,
                KeyUsage::client_auth(),
                revocation,
                None,
            )
            .map_err(webpki_error)?;
        // The path's anchor is an element of the slice passed in: find it by address.
        let index = ca
            .anchors
            .iter()
            .position(|anchor| std::ptr::eq(anchor, path.anchor()))
            .ok_or_else(|| unattributable("the path ends at an unknown anchor"))?;
        ca.owners
            .get(index)
            .copied()
            .ok_or_else(|| unattributable("no such anchor"))
    }

    fn with_configured<'a>(
        &'a self,
        intermediates: &'a [CertificateDer<'a>],
    ) -> Cow<'a, [CertificateDer<'a>]> {
        if self.intermediates.is_empty() {
            Cow::Borrowed(intermediates)
        } else {
            let mut all = intermediates.to_vec();
            all.extend(self.intermediates.iter().cloned());
            Cow::Owned(all)
        }
    }
}

impl CaBundles {
    /// The bundles `ca`, in order, with one verifier over all their anchors.
    fn build(
        ca: Vec<(TrustBundle, Vec<TrustAnchor<'static>>)>,
        crls: &[CertificateRevocationListDer<'static>],
        revocation: RevocationRules,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, ConfigError> {
        let mut names: Vec<TrustBundle> = Vec::with_capacity(ca.len());
        let mut anchors: Vec<TrustAnchor<'static>> = Vec::new();
        let mut owners = Vec::new();
        for (owner, (name, bundle_anchors)) in ca.into_iter().enumerate() {
            for anchor in bundle_anchors {
                // The same CA in two bundles would make "which bundle" a coin toss.
                let elsewhere = anchors
                    .iter()
                    .zip(&owners)
                    .find(|(known, o)| **o != owner && same_anchor(known, &anchor));
                if let Some((_, first)) = elsewhere {
                    return Err(ConfigError::CaInTwoBundles {
                        first: names
                            .get(*first)
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                        second: name.to_string(),
                    });
                }
                anchors.push(anchor);
                owners.push(owner);
            }
            names.push(name);
        }
        let subjects = RootCertStore {
            roots: anchors.clone(),
        }
        .subjects();
        Ok(CaBundles {
            verifier: webpki_verifier(anchors.clone(), crls, revocation, provider)?,
            names,
            anchors,
            subjects,
            owners,
        })
    }
}

/// The one bundle that can hold the anchor of any path through these certificates, if there is
/// only one: anchors are found by the exact bytes of an issuer name. `None` when more than one
/// bundle (or none) has an anchor named as an issuer, or a certificate does not parse.
fn only_candidate(
    ca: &CaBundles,
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Option<usize> {
    let mut parser = X509CertificateParser::new().with_deep_parse_extensions(false);
    let mut owner = None;
    for cert in std::iter::once(leaf).chain(intermediates) {
        let (_, parsed) = parser.parse(cert.as_ref()).ok()?;
        let issuer = parsed.tbs_certificate.issuer.as_raw();
        for (subject, &candidate) in ca.subjects.iter().zip(&ca.owners) {
            if subject.as_ref() == issuer {
                match owner {
                    None => owner = Some(candidate),
                    Some(known) if known == candidate => {}
                    Some(_) => return None,
                }
            }
        }
    }
    owner
}

fn same_anchor(a: &TrustAnchor<'_>, b: &TrustAnchor<'_>) -> bool {
    a.subject == b.subject && a.subject_public_key_info == b.subject_public_key_info
}

fn webpki_verifier(
    anchors: Vec<TrustAnchor<'static>>,
    crls: &[CertificateRevocationListDer<'static>],
    rules: RevocationRules,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, ConfigError> {
    let roots = Arc::new(RootCertStore { roots: anchors });
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .with_crls(crls.iter().cloned())
        // Whether a certificate is needed at all is the outer verifier's decision.
        .allow_unauthenticated();
    if rules.end_entity_only {
        builder = builder.only_check_end_entity_revocation();
    }
    if rules.allow_unknown {
        builder = builder.allow_unknown_revocation_status();
    }
    if rules.enforce_expiry {
        builder = builder.enforce_revocation_expiration();
    }
    builder.build().map_err(|e| match e {
        rustls::server::VerifierBuilderError::InvalidCrl(err) => ConfigError::BadCrl {
            origin: Origin::Memory("CRL set"),
            reason: format!("{err:?}"),
        },
        other => ConfigError::Rustls(rustls::Error::General(other.to_string())),
    })
}

/// A webpki error of the attribution path. The handshake's verdict came from rustls with its
/// own error mapping; this only happens when the chain stopped verifying in between.
fn webpki_error(error: webpki::Error) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(error))))
}

fn unattributable(why: &'static str) -> rustls::Error {
    rustls::Error::General(format!(
        "cannot tell which trust bundle verified the chain: {why}"
    ))
}
