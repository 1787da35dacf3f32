//! A throwaway PKI minted with rcgen, for the examples and the tests. Never for production.
#![allow(dead_code)]

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

/// A certificate chain (leaf first) and its private key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key_pem: String,
    key_der: Vec<u8>,
}

impl Identity {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// The chain as PEM, leaf first.
    pub fn chain_pem(&self) -> String {
        self.chain.iter().map(|c| der_to_pem(c)).collect()
    }

    /// This identity with `ca`'s certificate appended to its chain (an intermediate).
    pub fn with_intermediate(mut self, ca: &Ca) -> Self {
        self.chain.push(ca.der().clone());
        self
    }
}

/// Writes `ca.pem`, and `<name>.pem` (chain) plus `<name>-key.pem` for every identity, into
/// `dir` (created if missing).
pub fn write_pem_files(
    dir: &std::path::Path,
    ca: &Ca,
    identities: &[(&str, &Identity)],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    for (name, identity) in identities {
        std::fs::write(dir.join(format!("{name}.pem")), identity.chain_pem())?;
        std::fs::write(dir.join(format!("{name}-key.pem")), &identity.key_pem)?;
    }
    Ok(())
}

pub fn der_to_pem(der: &CertificateDer<'_>) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// A certificate authority that can issue leaves, intermediates and CRLs.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// Unique within the process (and, through the clock, across runs): all a test PKI needs.
fn random_serial() -> SerialNumber {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&nanos.to_be_bytes());
    bytes[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    bytes[0] = (bytes[0] & 0x7f) | 0x01; // positive, no leading zero byte
    SerialNumber::from_slice(&bytes)
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "tower-mtls demo");
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
    params.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
    params.serial_number = Some(random_serial());
    params
}

/// Leaf parameters for a client: CN, OUs, EKU clientAuth, valid from yesterday for 30 days.
pub fn client_params(cn: &str, ous: &[&str]) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "tower-mtls demo");
    // rcgen keeps one value per attribute type; a second OU goes in as a "custom" type with
    // the OU OID, which encodes exactly like a certificate with two OUs.
    assert!(ous.len() <= 2, "the test PKI supports at most two OUs");
    if let Some(ou) = ous.first() {
        dn.push(DnType::OrganizationalUnitName, *ou);
    }
    if let Some(ou) = ous.get(1) {
        dn.push(DnType::CustomDnType(vec![2, 5, 4, 11]), *ou);
    }
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
    params.not_after = OffsetDateTime::now_utc() + Duration::days(30);
    params.serial_number = Some(random_serial());
    params
}

/// Leaf parameters for an X509-SVID with SPIFFE ID `id` (its only URI SAN): key usage
/// `digitalSignature`, EKU clientAuth, CN from the ID's last segment.
pub fn svid_params(id: &str) -> CertificateParams {
    let cn = id.rsplit('/').next().unwrap_or("svid");
    let mut params = client_params(cn, &[]);
    params.subject_alt_names = vec![SanType::URI(id.try_into().expect("URI SAN"))];
    params
}

/// Leaf parameters for a server's X509-SVID `id` that is also valid for `localhost` (so that
/// ordinary TLS clients' server-name check passes): EKU serverAuth and clientAuth.
pub fn server_svid_params(id: &str) -> CertificateParams {
    let mut params = svid_params(id);
    params
        .subject_alt_names
        .push(SanType::DnsName("localhost".try_into().expect("DNS SAN")));
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params
}

impl Ca {
    /// A self-signed root.
    pub fn root(cn: &str) -> Ca {
        let key = KeyPair::generate().expect("key generation");
        Ca {
            issuer: CertifiedIssuer::self_signed(ca_params(cn), key).expect("self-signed CA"),
        }
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, cn: &str) -> Ca {
        let key = KeyPair::generate().expect("key generation");
        Ca {
            issuer: CertifiedIssuer::signed_by(ca_params(cn), key, &self.issuer)
                .expect("intermediate CA"),
        }
    }

    pub fn der(&self) -> &CertificateDer<'static> {
        self.issuer.der()
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Issues a leaf from `params`, with a fresh P-256 key.
    pub fn issue(&self, params: CertificateParams) -> Identity {
        self.issue_with_key_alg(params, &rcgen::PKCS_ECDSA_P256_SHA256)
    }

    /// Issues a leaf from `params`, with a fresh key for `alg` (for example
    /// `rcgen::PKCS_RSA_SHA256` for RSA-2048).
    pub fn issue_with_key_alg(
        &self,
        params: CertificateParams,
        alg: &'static rcgen::SignatureAlgorithm,
    ) -> Identity {
        let key = KeyPair::generate_for(alg).expect("key generation");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        Identity {
            chain: vec![cert.der().clone()],
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }

    /// Signs `params` for an existing key (to re-issue a certificate for the same key).
    pub fn sign_with_key(
        &self,
        params: CertificateParams,
        key: &KeyPair,
    ) -> CertificateDer<'static> {
        params
            .signed_by(key, &self.issuer)
            .expect("sign leaf")
            .der()
            .clone()
    }

    /// An X509-SVID for `id` (see [`svid_params`]).
    pub fn svid(&self, id: &str) -> Identity {
        self.issue(svid_params(id))
    }

    /// A client certificate with `cn` and `ous`.
    pub fn client(&self, cn: &str, ous: &[&str]) -> Identity {
        self.issue(client_params(cn, ous))
    }

    /// A client certificate with `cn` and `ous`, with a key for `alg`.
    pub fn client_with_key_alg(
        &self,
        cn: &str,
        ous: &[&str],
        alg: &'static rcgen::SignatureAlgorithm,
    ) -> Identity {
        self.issue_with_key_alg(client_params(cn, ous), alg)
    }

    /// A server certificate for `localhost`, `127.0.0.1` and `::1`.
    pub fn server(&self) -> Identity {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        params
            .subject_alt_names
            .push(SanType::IpAddress("::1".parse().expect("ip")));
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(365);
        self.issue(params)
    }

    /// A CRL revoking the certificates of `revoked` (each identity's own certificate).
    pub fn crl(&self, revoked: &[&Identity]) -> String {
        let ders: Vec<&CertificateDer<'static>> = revoked.iter().map(|id| &id.chain[0]).collect();
        self.crl_of(&ders)
    }

    /// A CRL revoking these certificates (leaves or intermediates).
    pub fn crl_of(&self, revoked: &[&CertificateDer<'static>]) -> String {
        self.crl_until(revoked, OffsetDateTime::now_utc() + Duration::days(7))
    }

    /// A CRL whose `nextUpdate` is `next_update` (in the past for a stale CRL).
    pub fn crl_until(
        &self,
        revoked: &[&CertificateDer<'static>],
        next_update: OffsetDateTime,
    ) -> String {
        use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams};
        let now = OffsetDateTime::now_utc();
        let revoked_certs = revoked
            .iter()
            .map(|der| {
                let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
                    .expect("own certificate parses");
                RevokedCertParams {
                    serial_number: SerialNumber::from_slice(cert.raw_serial()),
                    revocation_time: now - Duration::minutes(1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                }
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update: (now - Duration::minutes(5)).min(next_update - Duration::minutes(1)),
            next_update,
            crl_number: random_serial(),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.issuer)
            .expect("sign CRL")
            .pem()
            .expect("CRL PEM")
    }
}
