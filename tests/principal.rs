//! Principal parsing from real (rcgen-minted) certificates.

mod common;

use common::pki::{Ca, client_params};
use rcgen::{DnType, SanType};
use sha2::{Digest, Sha256};
use tower_mtls::identity::{ExtendedKeyUsage, SubjectAltName};
use tower_mtls::{Principal, PrincipalError};

fn parse(ca: &Ca, params: rcgen::CertificateParams) -> Principal {
    let id = ca.issue(params);
    Principal::from_verified_chain(&id.chain).expect("parses")
}

#[test]
fn several_common_names_and_escaping_in_a_real_certificate() {
    let ca = Ca::root("unit CA");
    let mut params = client_params("first, with comma", &["admins"]);
    params
        .distinguished_name
        .push(DnType::CustomDnType(vec![2, 5, 4, 3]), "#second+");
    let p = parse(&ca, params);
    assert_eq!(
        p.common_names().collect::<Vec<_>>(),
        ["first, with comma", "#second+"]
    );
    assert_eq!(p.common_name(), Some("first, with comma"));
    assert_eq!(
        p.subject().as_rfc4514(),
        r"CN=\#second\+,CN=first\, with comma,OU=admins,O=tower-mtls demo"
    );
    // The escaped comma did not create an extra RDN: O, OU, CN, CN.
    assert_eq!(p.subject().rdns().len(), 4);
}

#[test]
fn no_common_name() {
    let ca = Ca::root("unit CA");
    let mut params = client_params("x", &[]);
    params.distinguished_name.remove(DnType::CommonName);
    let p = parse(&ca, params);
    assert_eq!(p.common_name(), None);
    assert_eq!(p.subject().as_rfc4514(), "O=tower-mtls demo");
}

#[test]
fn every_san_type_in_order_and_typed() {
    let ca = Ca::root("unit CA");
    let mut params = client_params("svc", &[]);
    params.subject_alt_names = vec![
        SanType::DnsName("a.example.org".try_into().unwrap()),
        SanType::IpAddress("10.1.2.3".parse().unwrap()),
        SanType::URI("https://example.org/x".try_into().unwrap()),
        SanType::Rfc822Name("svc@example.org".try_into().unwrap()),
        SanType::DnsName("b.example.org".try_into().unwrap()),
        SanType::IpAddress("2001:db8::1".parse().unwrap()),
        SanType::Rfc822Name("ops@example.org".try_into().unwrap()),
        SanType::OtherName((
            vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3],
            rcgen::OtherNameValue::Utf8String("upn@example.org".into()),
        )),
    ];
    let p = parse(&ca, params);
    assert_eq!(
        p.subject_alt_names(),
        &[
            SubjectAltName::Dns("a.example.org".into()),
            SubjectAltName::Ip("10.1.2.3".parse().unwrap()),
            SubjectAltName::Uri("https://example.org/x".into()),
            SubjectAltName::Email("svc@example.org".into()),
            SubjectAltName::Dns("b.example.org".into()),
            SubjectAltName::Ip("2001:db8::1".parse().unwrap()),
            SubjectAltName::Email("ops@example.org".into()),
            SubjectAltName::Other("otherName 1.3.6.1.4.1.311.20.2.3".into()),
        ]
    );
    assert_eq!(
        p.dns_names().collect::<Vec<_>>(),
        ["a.example.org", "b.example.org"]
    );
    assert_eq!(p.emails().count(), 2);
    assert_eq!(p.ip_addresses().count(), 2);
    // A non-SPIFFE URI SAN is not a SPIFFE ID.
    assert!(p.spiffe_id().is_none());
}

fn with_uris(uris: &[&str]) -> Principal {
    let ca = Ca::root("unit CA");
    let mut params = client_params("svc", &[]);
    params.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI((*u).try_into().unwrap()))
        .collect();
    parse(&ca, params)
}

#[test]
fn spiffe_id_valid_and_invalid() {
    let p = with_uris(&["spiffe://example.org/ns/prod/sa/api"]);
    let id = p.spiffe_id().expect("valid SVID");
    assert_eq!(id.trust_domain(), "example.org");
    assert_eq!(id.path(), "/ns/prod/sa/api");
    assert_eq!(p.to_string(), "spiffe://example.org/ns/prod/sa/api");

    for bad in [
        "spiffe://Example.org/api",     // uppercase trust domain
        "spiffe://example.org//api",    // empty segment
        "spiffe://example.org/api?x=1", // query
        "spiffe://example.org/api/",    // trailing slash
    ] {
        let p = with_uris(&[bad]);
        assert!(p.spiffe_id().is_none(), "{bad} must not be a SPIFFE ID");
        assert_eq!(p.uris().collect::<Vec<_>>(), [bad], "still a URI SAN");
    }

    let long = format!("spiffe://example.org/{}", "a".repeat(2100));
    assert!(with_uris(&[&long]).spiffe_id().is_none());

    // Two URI SANs: an X509-SVID has exactly one, so no SPIFFE ID at all.
    let p = with_uris(&["spiffe://example.org/a", "spiffe://example.org/b"]);
    assert!(p.spiffe_id().is_none());
    let p = with_uris(&["spiffe://example.org/a", "https://example.org/"]);
    assert!(p.spiffe_id().is_none());
}

#[test]
fn fingerprints_serial_validity_and_ekus() {
    let ca = Ca::root("unit CA");
    let params = client_params("alice", &["admins"]);
    let not_after = params.not_after;
    let id = ca.issue(params);
    let p = Principal::from_verified_chain(&id.chain).unwrap();

    let expected: [u8; 32] = Sha256::digest(id.chain[0].as_ref()).into();
    assert_eq!(p.fingerprint_sha256(), &expected);
    assert_eq!(p.fingerprint_sha256_hex(), hex::encode(expected));

    let (_, cert) = x509_parser::parse_x509_certificate(id.chain[0].as_ref()).unwrap();
    let spki: [u8; 32] = Sha256::digest(cert.tbs_certificate.subject_pki.raw).into();
    assert_eq!(p.spki_sha256(), &spki);
    assert_eq!(p.serial(), cert.serial.to_str_radix(16));

    let secs = p
        .not_after()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(secs, not_after.unix_timestamp());
    assert!(p.is_valid_at(std::time::SystemTime::now()));
    assert_eq!(p.extended_key_usages(), &[ExtendedKeyUsage::ClientAuth]);
    assert_eq!(p.chain().len(), 1);
    assert_eq!(p.leaf_der(), id.chain[0]);
    assert_eq!(p.issuer().as_rfc4514(), "CN=unit CA,O=tower-mtls demo");
}

#[test]
fn same_key_reissued_keeps_the_spki_pin_but_not_the_fingerprint() {
    let ca = Ca::root("unit CA");
    let key = rcgen::KeyPair::generate().unwrap();
    let issue = |cn: &str| {
        let params = client_params(cn, &[]);
        let der = ca.sign_with_key(params, &key);
        Principal::from_verified_chain(&[der]).unwrap()
    };
    let a = issue("a");
    let b = issue("b");
    assert_eq!(a.spki_sha256(), b.spki_sha256());
    assert_ne!(a.fingerprint_sha256(), b.fingerprint_sha256());
}

/// A leaf with an extra raw extension (rcgen writes its own SAN only when `with_san`).
fn with_extension(
    ca: &Ca,
    oid: &[u64],
    content: Vec<u8>,
    with_san: bool,
) -> Result<Principal, PrincipalError> {
    let mut params = client_params("alice", &[]);
    if with_san {
        params.subject_alt_names = vec![SanType::DnsName("a.example".try_into().unwrap())];
    }
    params
        .custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(oid, content));
    Principal::from_verified_chain(&ca.issue(params).chain)
}

const SAN: &[u64] = &[2, 5, 29, 17];
const EKU: &[u64] = &[2, 5, 29, 37];

#[test]
fn duplicated_or_malformed_san_and_eku_are_refused() {
    let ca = Ca::root("unit CA");
    // a second SAN extension next to the one rcgen writes: SEQUENCE { dNSName "b" }
    let san_b = vec![0x30, 0x03, 0x82, 0x01, b'b'];
    let e = with_extension(&ca, SAN, san_b.clone(), true).expect_err("refused");
    assert!(
        matches!(&e, PrincipalError::BadExtension(m) if m.contains("subjectAltName appears twice")),
        "{e}"
    );
    // a second EKU extension next to the one client_params asks for
    let eku_server = vec![
        0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01,
    ];
    let e = with_extension(&ca, EKU, eku_server, false).expect_err("refused");
    assert!(
        matches!(&e, PrincipalError::BadExtension(m) if m.contains("extendedKeyUsage appears twice")),
        "{e}"
    );
    // a SAN whose dNSName claims more bytes than there are
    let e =
        with_extension(&ca, SAN, vec![0x30, 0x03, 0x82, 0x05, b'b'], false).expect_err("refused");
    assert!(
        matches!(&e, PrincipalError::BadExtension(m) if m.starts_with("2.5.29.17")),
        "{e}"
    );
    // the only SAN, well-formed, is read
    let p = with_extension(&ca, SAN, san_b, false).expect("parses");
    assert_eq!(p.dns_names().collect::<Vec<_>>(), ["b"]);
}

#[test]
fn malformed_eku_is_refused() {
    let ca = Ca::root("unit CA");
    let mut params = client_params("alice", &[]);
    params.extended_key_usages.clear();
    // an OCTET STRING where the SEQUENCE OF OID belongs
    params
        .custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(
            EKU,
            vec![0x04, 0x00],
        ));
    let id = ca.issue(params);
    let e = Principal::from_verified_chain(&id.chain).expect_err("refused");
    assert!(
        matches!(&e, PrincipalError::BadExtension(m) if m.starts_with("2.5.29.37")),
        "{e}"
    );
}

#[test]
fn chain_with_intermediate_round_trips() {
    let root = Ca::root("unit root");
    let intermediate = root.intermediate("unit intermediate");
    let id = intermediate
        .issue(client_params("alice", &[]))
        .with_intermediate(&intermediate);
    assert_eq!(id.chain.len(), 2);
    let p = Principal::from_verified_chain(&id.chain).unwrap();
    assert_eq!(p.chain(), id.chain);
    assert_eq!(p.certificates().len(), 2);
    assert_eq!(p.leaf_der(), id.chain[0]);
}
