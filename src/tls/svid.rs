//! The X509-SVID rules for client certificates that carry a SPIFFE ID, and the refusals that
//! come from SPIFFE trust domains.
//!
//! What is enforced on the leaf, from the X509-SVID specification
//! (<https://github.com/spiffe/spiffe/blob/main/standards/X509-SVID.md>):
//!
//! - exactly one URI SAN (§2, §5.2), and it is a valid SPIFFE ID with a non-root path (§3.1,
//!   §5.2);
//! - not a CA: `basicConstraints` `cA` is false or the extension is absent, which RFC 5280
//!   reads the same way (§4.1, §5.2);
//! - a `keyUsage` extension with `digitalSignature` and without `keyCertSign` or `cRLSign`
//!   (§4.3, §5.2) — like the `spiffe` crate, unlike go-spiffe, which only checks the two bits
//!   that must be absent. Its criticality is not checked: neither library does.
//! - `extendedKeyUsage`, when present, must allow client authentication: webpki checks it for
//!   every client certificate. `serverAuth` (which §4.4 asks issuers to set too) is not
//!   required: this side only authenticates clients.
//!
//! A certificate "carries a SPIFFE ID" when any of its URI SANs has the scheme `spiffe`, in
//! any case: `SPIFFE://example.org/x` is refused as an invalid SVID rather than let through as
//! a certificate without one.

use rustls::CertificateError;
use rustls::pki_types::CertificateDer;
use x509_parser::certificate::X509CertificateParser;
use x509_parser::extensions::{BasicConstraints, GeneralName, KeyUsage, SubjectAlternativeName};
use x509_parser::nom::Parser as _;
use x509_parser::oid_registry::{
    OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_KEY_USAGE, OID_X509_EXT_SUBJECT_ALT_NAME,
};
use x509_parser::prelude::FromDer;

use crate::identity::spiffe_id::SpiffeId;

/// Why the SPIFFE rules refused a client certificate. Travels inside
/// `rustls::Error::InvalidCertificate(CertificateError::Other(..))`, where
/// [`HandshakeFailure`](crate::tls::HandshakeFailure) finds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SpiffeRefusal {
    /// A valid SVID of a trust domain without a configured bundle. The name passed SPIFFE ID
    /// validation (`[a-z0-9._-]`, at most 255 bytes), so it is safe to log.
    #[error("SPIFFE ID of trust domain {0:?}, for which no bundle is configured")]
    UnknownTrustDomain(Box<str>),
    /// A certificate with a `spiffe` URI SAN that breaks an X509-SVID rule.
    #[error("not a valid X509-SVID: {0}")]
    InvalidSvid(&'static str),
    /// A certificate without a SPIFFE ID where only SPIFFE bundles are configured.
    #[error(
        "client certificate without a SPIFFE ID, and no client CA bundle for such certificates"
    )]
    NoSpiffeId,
}

impl From<SpiffeRefusal> for rustls::Error {
    fn from(refusal: SpiffeRefusal) -> Self {
        rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
            std::sync::Arc::new(refusal),
        )))
    }
}

/// The SPIFFE ID of a client certificate that is a valid X509-SVID leaf; `None` for one that
/// carries no SPIFFE ID at all; an error for one that carries a SPIFFE ID but is no valid SVID
/// (or cannot be parsed).
pub(crate) fn svid_id(leaf: &CertificateDer<'_>) -> Result<Option<SpiffeId>, rustls::Error> {
    let invalid = |why| rustls::Error::from(SpiffeRefusal::InvalidSvid(why));
    let bad_encoding = || rustls::Error::InvalidCertificate(CertificateError::BadEncoding);
    let (rest, cert) = X509CertificateParser::new()
        .with_deep_parse_extensions(false)
        .parse(leaf.as_ref())
        .map_err(|_| bad_encoding())?;
    if !rest.is_empty() {
        return Err(bad_encoding());
    }
    let mut uris = Vec::new();
    let mut basic_constraints = None;
    let mut key_usage = None;
    let mut seen_san = false;
    for ext in cert.tbs_certificate.extensions() {
        if ext.oid == OID_X509_EXT_SUBJECT_ALT_NAME {
            if std::mem::replace(&mut seen_san, true) {
                return Err(bad_encoding());
            }
            let (_, san) =
                SubjectAlternativeName::from_der(ext.value).map_err(|_| bad_encoding())?;
            uris = san
                .general_names
                .into_iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some(uri),
                    _ => None,
                })
                .collect();
        } else if ext.oid == OID_X509_EXT_BASIC_CONSTRAINTS {
            if basic_constraints.is_some() {
                return Err(bad_encoding());
            }
            basic_constraints = Some(BasicConstraints::from_der(ext.value).map(|(_, bc)| bc));
        } else if ext.oid == OID_X509_EXT_KEY_USAGE {
            if key_usage.is_some() {
                return Err(bad_encoding());
            }
            key_usage = Some(KeyUsage::from_der(ext.value).map(|(_, ku)| ku));
        }
    }
    if !uris.iter().any(|uri| has_spiffe_scheme(uri)) {
        return Ok(None);
    }
    let [uri] = uris[..] else {
        return Err(invalid("more than one URI SAN"));
    };
    let id = SpiffeId::parse(uri).map_err(|_| invalid("the URI SAN is not a valid SPIFFE ID"))?;
    if id.path().is_empty() {
        return Err(invalid("the SPIFFE ID of a leaf needs a path"));
    }
    match basic_constraints {
        Some(Ok(bc)) if bc.ca => return Err(invalid("the certificate is a CA")),
        Some(Err(_)) => return Err(invalid("malformed basicConstraints")),
        _ => {}
    }
    match key_usage {
        None => return Err(invalid("no keyUsage extension")),
        Some(Err(_)) => return Err(invalid("malformed keyUsage")),
        Some(Ok(ku)) if !ku.digital_signature() => {
            return Err(invalid("keyUsage without digitalSignature"));
        }
        Some(Ok(ku)) if ku.key_cert_sign() || ku.crl_sign() => {
            return Err(invalid("keyUsage with keyCertSign or cRLSign"));
        }
        Some(Ok(_)) => {}
    }
    Ok(Some(id))
}

fn has_spiffe_scheme(uri: &str) -> bool {
    uri.split_once(':')
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("spiffe"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints as Bc, CertificateParams, IsCa, KeyPair, KeyUsagePurpose, SanType,
    };

    fn leaf(uris: &[&str], edit: impl FnOnce(&mut CertificateParams)) -> CertificateDer<'static> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = uris
            .iter()
            .map(|u| SanType::URI((*u).try_into().unwrap()))
            .collect();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        edit(&mut params);
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn refusal(result: Result<Option<SpiffeId>, rustls::Error>) -> String {
        match result {
            Err(e) => e.to_string(),
            Ok(id) => panic!("accepted as {id:?}"),
        }
    }

    #[test]
    fn a_valid_svid_gives_its_id() {
        let der = leaf(&["spiffe://example.org/ns/a"], |_| {});
        let id = svid_id(&der).unwrap().unwrap();
        assert_eq!(id.trust_domain(), "example.org");
        let explicit_not_ca = leaf(&["spiffe://example.org/a"], |p| {
            p.is_ca = IsCa::ExplicitNoCa
        });
        assert!(svid_id(&explicit_not_ca).unwrap().is_some());
    }

    #[test]
    fn certificates_without_a_spiffe_uri_carry_no_id() {
        assert_eq!(svid_id(&leaf(&[], |_| {})).unwrap(), None);
        let https = leaf(&["https://example.org/a", "urn:x:y"], |p| {
            p.key_usages.clear()
        });
        assert_eq!(svid_id(&https).unwrap(), None);
    }

    #[test]
    fn broken_svids_are_refused() {
        type Case = (
            &'static [&'static str],
            fn(&mut CertificateParams),
            &'static str,
        );
        let cases: [Case; 8] = [
            (
                &["spiffe://example.org/a", "spiffe://example.org/b"],
                |_| {},
                "more than one URI SAN",
            ),
            (
                &["spiffe://example.org/a", "https://example.org/"],
                |_| {},
                "more than one URI SAN",
            ),
            (&["SPIFFE://example.org/a"], |_| {}, "not a valid SPIFFE ID"),
            (&["spiffe://Example.org/a"], |_| {}, "not a valid SPIFFE ID"),
            (&["spiffe://example.org"], |_| {}, "needs a path"),
            (
                &["spiffe://example.org/a"],
                |p| p.is_ca = IsCa::Ca(Bc::Unconstrained),
                "is a CA",
            ),
            (
                &["spiffe://example.org/a"],
                |p| p.key_usages.clear(),
                "no keyUsage",
            ),
            (
                &["spiffe://example.org/a"],
                |p| {
                    p.key_usages
                        .extend([KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign])
                },
                "keyCertSign or cRLSign",
            ),
        ];
        for (uris, edit, why) in cases {
            let message = refusal(svid_id(&leaf(uris, edit)));
            assert!(message.contains(why), "{uris:?}: {message}");
        }
        let no_digital_signature = leaf(&["spiffe://example.org/a"], |p| {
            p.key_usages = vec![KeyUsagePurpose::KeyEncipherment]
        });
        assert!(refusal(svid_id(&no_digital_signature)).contains("without digitalSignature"));
    }

    #[test]
    fn garbage_is_a_bad_encoding() {
        let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert_eq!(
            svid_id(&junk).unwrap_err(),
            rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
        );
    }
}
