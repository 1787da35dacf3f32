//! `Principal::from_verified_chain` on arbitrary DER.
//!
//! Input: certificates, each as a 2-byte big-endian length and that many bytes (up to four;
//! a short last one takes what is left). Checked: no panic, in parsing or in any accessor;
//! the chain is kept whole, leaf first; a subject or issuer that renders to text the RFC 4514
//! parser reads parses back to the same name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_mtls::Principal;
use tower_mtls::identity::DistinguishedName;
use tower_mtls::rustls::pki_types::CertificateDer;

fn chain(mut data: &[u8]) -> Vec<CertificateDer<'static>> {
    let mut chain = Vec::new();
    while chain.len() < 4 && data.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([data[0], data[1]]));
        let rest = &data[2..];
        let (cert, tail) = rest.split_at(len.min(rest.len()));
        chain.push(CertificateDer::from(cert.to_vec()));
        data = tail;
    }
    chain
}

fn round_trips(name: &DistinguishedName) {
    let rendered = name.as_rfc4514();
    if let Ok(parsed) = DistinguishedName::parse_rfc4514(rendered) {
        assert!(
            parsed == *name,
            "{rendered:?} parses to another name than the certificate's"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let chain = chain(data);
    let Ok(principal) = Principal::from_verified_chain(&chain) else {
        return;
    };
    round_trips(principal.subject());
    round_trips(principal.issuer());
    let _ = principal.to_string();
    let _ = format!("{principal:?}");
    let _ = principal.common_names().count();
    let _ = principal.common_name();
    let _ = principal.organizations().count();
    let _ = principal.organizational_units().count();
    let _ = principal.subject_alt_names().len();
    let _ = principal.dns_names().count();
    let _ = principal.uris().count();
    let _ = principal.emails().count();
    let _ = principal.ip_addresses().count();
    if let Some(id) = principal.spiffe_id() {
        assert!(tower_mtls::SpiffeId::parse(id.as_str()).is_ok());
    }
    let _ = principal.serial();
    assert_eq!(principal.fingerprint_sha256_hex().len(), 64);
    let _ = principal.spki_sha256();
    let _ = principal.is_valid_at(principal.not_before());
    let _ = principal.not_after();
    let _ = principal.extended_key_usages();
    assert_eq!(principal.chain().len(), chain.len());
    assert_eq!(principal.leaf_der().as_ref(), chain[0].as_ref());
});
