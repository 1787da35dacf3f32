//! The crate's own unit-test fixtures: principals minted with rcgen (a self-signed leaf with
//! exactly the fields a test names), turned into principals and requests with the public
//! [`test_util`](crate::test_util), as users of the crate would.

use std::net::IpAddr;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

use crate::identity::principal::Principal;
use crate::identity::trust_bundle::TrustBundle;
use crate::test_util::{TestRequest, principal_from_pem_in_bundle};

#[derive(Default)]
pub(crate) struct CertSpec {
    pub cn: Option<&'static str>,
    pub o: Option<&'static str>,
    pub ous: Vec<&'static str>,
    pub dns: Vec<&'static str>,
    pub uris: Vec<&'static str>,
    pub emails: Vec<&'static str>,
    pub ips: Vec<IpAddr>,
    pub not_after: Option<time::OffsetDateTime>,
    /// The bundle the principal says verified it (default: unnamed).
    pub bundle: TrustBundle,
}

pub(crate) fn principal(spec: CertSpec) -> Principal {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::OrganizationName,
        spec.o.unwrap_or("tower-mtls test"),
    );
    for (i, ou) in spec.ous.iter().enumerate() {
        // rcgen keeps one value per type; further OUs go in under the OU OID as a custom type.
        let kind = if i == 0 {
            DnType::OrganizationalUnitName
        } else {
            DnType::CustomDnType(vec![2, 5, 4, 11])
        };
        dn.push(kind, *ou);
    }
    dn.push(DnType::CommonName, spec.cn.unwrap_or("test"));
    params.distinguished_name = dn;
    let sans = spec
        .dns
        .iter()
        .map(|d| SanType::DnsName((*d).try_into().unwrap()))
        .chain(
            spec.uris
                .iter()
                .map(|u| SanType::URI((*u).try_into().unwrap())),
        )
        .chain(
            spec.emails
                .iter()
                .map(|e| SanType::Rfc822Name((*e).try_into().unwrap())),
        )
        .chain(spec.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.subject_alt_names = sans.collect();
    if let Some(not_after) = spec.not_after {
        params.not_before = not_after - time::Duration::days(2);
        params.not_after = not_after;
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    principal_from_pem_in_bundle(cert.pem(), spec.bundle).unwrap()
}

/// One default principal for the whole test run (minting a key per proptest case is slow).
pub(crate) fn shared_principal() -> &'static Principal {
    static P: std::sync::OnceLock<Principal> = std::sync::OnceLock::new();
    P.get_or_init(|| principal(CertSpec::default()))
}

/// `method path` from `principal`, through the public test support.
pub(crate) fn request(
    principal: &Principal,
    method: http::Method,
    path: &'static str,
) -> TestRequest {
    TestRequest::new(principal.clone(), method, http::Uri::from_static(path))
}
