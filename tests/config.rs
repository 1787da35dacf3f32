//! Every configuration error, found at build time, with the file named.

mod common;

use std::path::{Path, PathBuf};

use common::Setup;
use common::pki::Ca;
use tower_mtls::tls::MtlsConfigBuilder;
use tower_mtls::tls::Origin;
use tower_mtls::{ConfigError, MtlsConfig};

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(setup: &Setup) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let files = Files { dir };
        files.write("server.pem", &setup.server.chain_pem());
        files.write("server-key.pem", &setup.server.key_pem);
        files.write("ca.pem", &setup.ca.pem());
        files
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
    fn builder(&self) -> MtlsConfigBuilder {
        MtlsConfig::builder()
            .server_cert_pem_file(self.path("server.pem"))
            .server_key_pem_file(self.path("server-key.pem"))
            .client_ca_pem_file(self.path("ca.pem"))
    }
}

/// A PEM block of `label` around DER that is a valid SEQUENCE but nothing of that kind.
fn junk_pem(label: &str) -> String {
    pem::encode(&pem::Pem::new(label, vec![0x30, 0x03, 0x02, 0x01, 0x00]))
}

fn names(err: &ConfigError, path: &Path) {
    let message = err.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "the error must name {}: {message}",
        path.display()
    );
}

#[test]
fn good_files_build() {
    let setup = Setup::new();
    let files = Files::new(&setup);
    files.builder().build().unwrap();
}

#[test]
fn missing_file() {
    let setup = Setup::new();
    let files = Files::new(&setup);
    let missing = files.path("nope.pem");
    let err = files
        .builder()
        .client_ca_pem_file(&missing)
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, ConfigError::Read { path, .. } if *path == missing),
        "{err}"
    );
    names(&err, &missing);
}

#[test]
fn file_without_pem_blocks() {
    let setup = Setup::new();
    let files = Files::new(&setup);
    let empty = files.write("empty-ca.pem", "");
    let err = files
        .builder()
        .client_ca_pem_file(&empty)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ConfigError::NoPem {
                expected: "CERTIFICATE",
                ..
            }
        ),
        "{err}"
    );
    names(&err, &empty);

    let text = files.write("key.txt", "this is not a key\n");
    let err = files
        .builder()
        .server_key_pem_file(&text)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ConfigError::NoPem {
                expected: "PRIVATE KEY",
                ..
            }
        ),
        "{err}"
    );
    names(&err, &text);
}

#[test]
fn corrupt_pem() {
    let setup = Setup::new();
    let files = Files::new(&setup);
    let bad = files.write(
        "bad.pem",
        "-----BEGIN CERTIFICATE-----\n!!!! not base64 !!!!\n-----END CERTIFICATE-----\n",
    );
    let err = files
        .builder()
        .server_cert_pem_file(&bad)
        .build()
        .unwrap_err();
    assert!(matches!(&err, ConfigError::Pem { .. }), "{err}");
    names(&err, &bad);
}

#[test]
fn pem_that_is_not_a_certificate() {
    let setup = Setup::new();
    let files = Files::new(&setup);
    let der = junk_pem("CERTIFICATE");
    let bad = files.write("garbage-cert.pem", &der);
    let err = files
        .builder()
        .client_ca_pem_file(&bad)
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, ConfigError::BadCertificate { index: 1, .. }),
        "{err}"
    );
    names(&err, &bad);
}

#[test]
fn key_that_does_not_match_the_certificate() {
    let setup = Setup::new();
    let files = Files::new(&setup);
    let other = files.write("other-key.pem", &setup.ca.server().key_pem);
    let err = files
        .builder()
        .server_key_pem_file(&other)
        .build()
        .unwrap_err();
    assert!(matches!(&err, ConfigError::KeyMismatch { .. }), "{err}");
    names(&err, &other);
    names(&err, &files.path("server.pem"));
}

#[test]
fn unusable_key() {
    let setup = Setup::new();
    let files = Files::new(&setup);
    let junk = junk_pem("PRIVATE KEY");
    let bad = files.write("junk-key.pem", &junk);
    let err = files
        .builder()
        .server_key_pem_file(&bad)
        .build()
        .unwrap_err();
    assert!(matches!(&err, ConfigError::UnusableKey { .. }), "{err}");
    names(&err, &bad);
}

#[test]
fn ca_bundle_holding_a_leaf() {
    let setup = Setup::new();
    let files = Files::new(&setup);
    let leaf = setup.ca.client("alice", &[]);
    let bundle = files.write(
        "bundle.pem",
        &format!("{}{}", setup.ca.pem(), leaf.chain_pem()),
    );
    let err = files
        .builder()
        .client_ca_pem_file(&bundle)
        .build()
        .unwrap_err();
    match &err {
        ConfigError::NotACa { index, subject, .. } => {
            assert_eq!(*index, 2);
            assert!(subject.contains("CN=alice"), "{subject}");
        }
        other => panic!("expected NotACa, got {other}"),
    }
    names(&err, &bundle);
}

#[test]
fn intermediates_file_holding_a_leaf() {
    let setup = Setup::new();
    let files = Files::new(&setup);
    let leaf = files.write(
        "intermediates.pem",
        &setup.ca.client("alice", &[]).chain_pem(),
    );
    let err = files
        .builder()
        .intermediates_pem_file(&leaf)
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, ConfigError::NotACa { index: 1, .. }),
        "{err}"
    );
    names(&err, &leaf);
}

#[test]
fn malformed_crl() {
    let setup = Setup::new();
    let files = Files::new(&setup);
    let junk = junk_pem("X509 CRL");
    let bad = files.write("bad.crl", &junk);
    let err = files.builder().crl_pem_file(&bad).build().unwrap_err();
    assert!(matches!(&err, ConfigError::BadCrl { .. }), "{err}");
    names(&err, &bad);

    let not_a_crl = files.write("cert-as.crl", &setup.ca.pem());
    let err = files
        .builder()
        .crl_pem_file(&not_a_crl)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ConfigError::NoPem {
                expected: "X509 CRL",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn missing_inputs() {
    let setup = Setup::new();
    let err = MtlsConfig::builder()
        .server_key_pem(setup.server.key_pem.clone())
        .client_ca_pem(setup.ca.pem())
        .build()
        .unwrap_err();
    assert!(
        matches!(err, ConfigError::Missing("server certificate")),
        "{err}"
    );
    let err = MtlsConfig::builder()
        .server_cert_pem(setup.server.chain_pem())
        .client_ca_pem(setup.ca.pem())
        .build()
        .unwrap_err();
    assert!(
        matches!(err, ConfigError::Missing("server private key")),
        "{err}"
    );
    let err = MtlsConfig::builder()
        .server_cert_pem(setup.server.chain_pem())
        .server_key_pem(setup.server.key_pem.clone())
        .build()
        .unwrap_err();
    assert!(
        matches!(err, ConfigError::Missing("client CA bundle")),
        "{err}"
    );
}

#[test]
fn in_memory_inputs_are_named_too() {
    let setup = Setup::new();
    let err = setup.builder().client_ca_pem("").build().unwrap_err();
    assert!(
        matches!(
            &err,
            ConfigError::NoPem {
                origin: Origin::Memory(_),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("client CA bundle"), "{err}");
}

#[test]
fn key_formats_pkcs8_sec1_pkcs1() {
    use rustls::pki_types::pem::PemObject;
    let ca = Ca::root("keys CA");
    // rcgen writes PKCS#8; SEC1 and PKCS#1 come from re-encoding with rustls-pki-types.
    let ec = rcgen::KeyPair::generate().unwrap();
    let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    for key in [ec, rsa] {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = ca.sign_with_key(params, &key);
        let pkcs8 = key.serialize_pem();
        MtlsConfig::builder()
            .server_cert_pem(common::pki::der_to_pem(&cert))
            .server_key_pem(pkcs8.clone())
            .client_ca_pem(ca.pem())
            .build()
            .unwrap();
        // The same key in its algorithm-specific form (SEC1 for EC, PKCS#1 for RSA).
        let der = rustls::pki_types::PrivateKeyDer::from_pem_slice(pkcs8.as_bytes()).unwrap();
        let specific = specific_form(&der, &key);
        MtlsConfig::builder()
            .server_cert_pem(common::pki::der_to_pem(&cert))
            .server_key_pem(specific)
            .client_ca_pem(ca.pem())
            .build()
            .unwrap();
    }
}

/// Re-encodes a PKCS#8 key as SEC1 (`EC PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`) by taking
/// the inner key from the PKCS#8 structure with x509-parser's DER reader.
fn specific_form(der: &rustls::pki_types::PrivateKeyDer<'_>, key: &rcgen::KeyPair) -> String {
    use x509_parser::der_parser::ber::parse_ber_sequence;
    let (_, seq) = parse_ber_sequence(der.secret_der()).unwrap();
    let items = seq.as_sequence().unwrap();
    let inner = items[2].as_slice().unwrap().to_vec(); // privateKey OCTET STRING
    let label = if key.algorithm() == &rcgen::PKCS_RSA_SHA256 {
        "RSA PRIVATE KEY"
    } else {
        "EC PRIVATE KEY"
    };
    pem::encode(&pem::Pem::new(label, inner))
}

#[test]
fn expired_server_certificate_builds_with_a_warning() {
    let ca = Ca::root("server CA");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(10);
    params.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let expired = ca.issue(params);
    let logs = common::LogCapture::default();
    let built = tracing::subscriber::with_default(logs.subscriber(), || {
        MtlsConfig::builder()
            .server_cert_pem(expired.chain_pem())
            .server_key_pem(expired.key_pem.clone())
            .client_ca_pem(ca.pem())
            .build()
    });
    assert!(built.is_ok());
    let text = logs.text();
    assert!(
        text.contains("server certificate has expired"),
        "logs: {text}"
    );
}

/// At every build: a warning for what expires within the windows, an error for what has
/// expired, nothing for what is far from it.
#[test]
fn expiring_certificates_and_crls_are_warned_about() {
    let setup = Setup::new();
    let build = |builder: MtlsConfigBuilder| {
        let logs = common::LogCapture::default();
        let built = tracing::subscriber::with_default(logs.subscriber(), || builder.build());
        assert!(built.is_ok(), "{:?}", built.err());
        logs.text()
    };
    let quiet = build(setup.builder().crl_pem(setup.ca.crl(&[])));
    assert!(
        !quiet.contains("expires_soon") && !quiet.contains("event=\"expired\""),
        "{quiet}"
    );

    // A CA that expires in 3 days, a CRL due in 2 hours.
    let mut params = common::pki::client_params("short CA", &[]);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(3);
    let short_ca = setup.ca.issue(params);
    let crl = setup.ca.crl_until(
        &[],
        time::OffsetDateTime::now_utc() + time::Duration::hours(2),
    );
    let text = build(
        setup
            .builder()
            .client_ca_pem(short_ca.chain_pem())
            .crl_pem(crl.clone()),
    );
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("expires_soon"))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("what=\"client CA\"") && l.contains("short CA")),
        "{text}"
    );
    assert!(lines.iter().any(|l| l.contains("what=\"CRL\"")), "{text}");
    // Narrower windows: nothing to say.
    let text = build(
        setup
            .builder()
            .client_ca_pem(short_ca.chain_pem())
            .crl_pem(crl)
            .expiry_warnings(
                std::time::Duration::from_secs(86_400),
                std::time::Duration::from_secs(60),
            ),
    );
    assert!(!text.contains("expires_soon"), "{text}");
}
