//! Every bad client credential, over real TLS on loopback: the handshake fails, the server
//! counts the right cause, and nothing reaches the service.

mod common;

use std::time::Duration;

use common::pki::{Ca, Identity, client_params};
use common::{Setup, client, expect_rejected, start_whoami};
use http::StatusCode;
use rcgen::{BasicConstraints, ExtendedKeyUsagePurpose, IsCa};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_mtls::MtlsAcceptor;
use tower_mtls::tls::{
    ClientAuth, HandshakeFailure, MtlsConfigBuilder, RevocationScope, TlsVersions,
    UnknownRevocation,
};

/// Serves with `builder`, connects as `identity`, and expects the handshake to fail for `cause`.
async fn assert_refused(
    builder: MtlsConfigBuilder,
    setup: &Setup,
    identity: Option<&Identity>,
    cause: HandshakeFailure,
) {
    common::init_tracing();
    let acceptor = MtlsAcceptor::new(builder.build().expect("config"));
    let addr = start_whoami(acceptor.clone()).await;
    let result = client::get_once(addr, setup.client(identity), "/whoami").await;
    assert!(
        result.is_err(),
        "expected a failed handshake, got {result:?}"
    );
    expect_rejected(&acceptor, cause).await;
    let stats = acceptor.stats();
    assert_eq!(stats.accepted, 0, "{stats:?}");
    assert_eq!(stats.total_rejected(), 1, "{stats:?}");
}

/// Serves with `builder` and expects `identity` to get 200.
async fn assert_accepted(builder: MtlsConfigBuilder, setup: &Setup, identity: &Identity) {
    common::init_tracing();
    let acceptor = MtlsAcceptor::new(builder.build().expect("config"));
    let addr = start_whoami(acceptor.clone()).await;
    let reply = client::get_once(addr, setup.client(Some(identity)), "/whoami")
        .await
        .expect("handshake");
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn no_certificate_when_required() {
    let setup = Setup::new();
    assert_refused(
        setup.builder(),
        &setup,
        None,
        HandshakeFailure::NoCertificate,
    )
    .await;
}

#[tokio::test]
async fn unknown_ca_with_the_real_roots_name() {
    let setup = Setup::new();
    let impostor = Ca::root("test CA"); // same subject DN as the real CA, other key
    let mallory = impostor.client("alice", &["admins"]);
    assert_refused(
        setup.builder(),
        &setup,
        Some(&mallory),
        HandshakeFailure::BadSignature, // webpki finds the root by name; the signature fails
    )
    .await;
}

#[tokio::test]
async fn unknown_ca_is_refused_in_optional_mode_too() {
    let setup = Setup::new();
    let mallory = Ca::root("other CA").client("mallory", &[]);
    let builder = setup.builder().client_auth(ClientAuth::Optional);
    assert_refused(
        builder,
        &setup,
        Some(&mallory),
        HandshakeFailure::UnknownIssuer,
    )
    .await;
}

#[tokio::test]
async fn missing_intermediate_is_refused_unless_configured() {
    let setup = Setup::new();
    let intermediate = setup.ca.intermediate("issuing CA");
    let alice = intermediate.client("alice", &[]); // chain without the intermediate
    assert_refused(
        setup.builder(),
        &setup,
        Some(&alice),
        HandshakeFailure::UnknownIssuer,
    )
    .await;

    let builder = setup.builder().intermediates_pem(intermediate.pem());
    assert_accepted(builder, &setup, &alice).await;
    // A client that sends the intermediate itself needs no configuration.
    let alice_full = intermediate
        .client("alice", &[])
        .with_intermediate(&intermediate);
    assert_accepted(setup.builder(), &setup, &alice_full).await;
}

fn validity(ca: &Ca, not_before: OffsetDateTime, not_after: OffsetDateTime) -> Identity {
    let mut params = client_params("alice", &[]);
    params.not_before = not_before;
    params.not_after = not_after;
    ca.issue(params)
}

#[tokio::test]
async fn expired_certificate() {
    let setup = Setup::new();
    let now = OffsetDateTime::now_utc();
    let old = validity(
        &setup.ca,
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    );
    assert_refused(
        setup.builder(),
        &setup,
        Some(&old),
        HandshakeFailure::Expired,
    )
    .await;
}

#[tokio::test]
async fn not_yet_valid_certificate() {
    let setup = Setup::new();
    let now = OffsetDateTime::now_utc();
    let early = validity(
        &setup.ca,
        now + time::Duration::days(1),
        now + time::Duration::days(30),
    );
    assert_refused(
        setup.builder(),
        &setup,
        Some(&early),
        HandshakeFailure::NotYetValid,
    )
    .await;
}

#[tokio::test]
async fn server_auth_only_eku() {
    let setup = Setup::new();
    let mut params = client_params("alice", &[]);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let wrong = setup.ca.issue(params);
    assert_refused(
        setup.builder(),
        &setup,
        Some(&wrong),
        HandshakeFailure::BadKeyUsage,
    )
    .await;
}

#[tokio::test]
async fn ca_certificate_used_as_client_certificate() {
    let setup = Setup::new();
    let mut params = client_params("sub CA", &[]);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_leaf = setup.ca.issue(params);
    assert_refused(
        setup.builder(),
        &setup,
        Some(&ca_leaf),
        HandshakeFailure::CaUsedAsLeaf,
    )
    .await;
}

#[tokio::test]
async fn revoked_leaf_in_both_scopes() {
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let crl = setup.ca.crl(&[&alice]);
    let full = setup.builder().crl_pem(crl.clone());
    assert_refused(full, &setup, Some(&alice), HandshakeFailure::Revoked).await;
    let leaf_only = setup
        .builder()
        .crl_pem(crl)
        .revocation_scope(RevocationScope::EndEntityOnly);
    assert_refused(leaf_only, &setup, Some(&alice), HandshakeFailure::Revoked).await;
    // Not every certificate of the CA is revoked.
    let bob = setup.ca.client("bob", &[]);
    assert_accepted(
        setup.builder().crl_pem(setup.ca.crl(&[&alice])),
        &setup,
        &bob,
    )
    .await;
}

#[tokio::test]
async fn revoked_intermediate() {
    let setup = Setup::new();
    let intermediate = setup.ca.intermediate("issuing CA");
    let alice = intermediate
        .client("alice", &[])
        .with_intermediate(&intermediate);
    let root_crl = setup.ca.crl_of(&[intermediate.der()]);
    let intermediate_crl = intermediate.crl(&[]);
    let full = setup
        .builder()
        .crl_pem(root_crl.clone())
        .crl_pem(intermediate_crl.clone());
    assert_refused(full, &setup, Some(&alice), HandshakeFailure::Revoked).await;
    // Leaf-only checking does not look at the intermediate: the documented trade-off.
    let leaf_only = setup
        .builder()
        .crl_pem(root_crl)
        .crl_pem(intermediate_crl)
        .revocation_scope(RevocationScope::EndEntityOnly);
    assert_accepted(leaf_only, &setup, &alice).await;
}

#[tokio::test]
async fn unknown_revocation_status() {
    let setup = Setup::new();
    let intermediate = setup.ca.intermediate("issuing CA");
    let alice = intermediate
        .client("alice", &[])
        .with_intermediate(&intermediate);
    // A CRL from the root only: nothing says whether the leaf (issued by the intermediate) is
    // revoked.
    let root_crl = setup.ca.crl(&[]);
    let strict = setup.builder().crl_pem(root_crl.clone());
    assert_refused(
        strict,
        &setup,
        Some(&alice),
        HandshakeFailure::UnknownRevocationStatus,
    )
    .await;
    let lenient = setup
        .builder()
        .crl_pem(root_crl)
        .unknown_revocation(UnknownRevocation::Allow);
    assert_accepted(lenient, &setup, &alice).await;
}

#[tokio::test]
async fn tls12_client_refused_by_tls13_only_server() {
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let acceptor = MtlsAcceptor::new(
        setup
            .builder()
            .tls_versions(TlsVersions::Tls13Only)
            .build()
            .unwrap(),
    );
    let addr = start_whoami(acceptor.clone()).await;
    let config = setup.client_versions(Some(&alice), &[&rustls::version::TLS12]);
    let result = client::get_once(addr, config, "/whoami").await;
    assert!(result.is_err());
    expect_rejected(&acceptor, HandshakeFailure::ProtocolVersion).await;
    // and TLS 1.2 works against the default configuration
    let acceptor = MtlsAcceptor::new(setup.builder().build().unwrap());
    let addr = start_whoami(acceptor).await;
    let config = setup.client_versions(Some(&alice), &[&rustls::version::TLS12]);
    let reply = client::get_once(addr, config, "/whoami").await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
}

/// A TLS 1.1 ClientHello, written by hand: no Rust TLS client can still send one. A real
/// TLS 1.1 client sends no signature_algorithms (a TLS 1.2 extension); `with_sigalgs` adds it
/// to check the version itself is refused too.
fn tls11_client_hello(with_sigalgs: bool) -> Vec<u8> {
    let mut body = vec![0x03, 0x02]; // client_version TLS 1.1
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // ECDHE-RSA-AES128-SHA, AES128-SHA
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    if with_sigalgs {
        let ext = [0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x01, 0x04, 0x03];
        body.extend_from_slice(&[0x00, ext.len() as u8]);
        body.extend_from_slice(&ext);
    }
    let mut handshake = vec![0x01, 0x00, 0x00, body.len() as u8];
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn tls11_client_refused() {
    tls11_refused(false).await;
}

#[tokio::test]
async fn tls11_client_with_tls12_extensions_refused() {
    tls11_refused(true).await;
}

async fn tls11_refused(with_sigalgs: bool) {
    common::init_tracing();
    let setup = Setup::new();
    let acceptor = MtlsAcceptor::new(setup.builder().build().unwrap());
    let addr = start_whoami(acceptor.clone()).await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&tls11_client_hello(with_sigalgs))
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut reply)).await;
    // The server answers with a fatal alert record (content type 21), not a ServerHello (22).
    assert_eq!(reply.first(), Some(&0x15), "reply: {reply:02x?}");
    expect_rejected(&acceptor, HandshakeFailure::ProtocolVersion).await;
}

#[tokio::test]
async fn garbage_instead_of_a_client_hello() {
    common::init_tracing();
    let setup = Setup::new();
    let acceptor = MtlsAcceptor::new(setup.builder().build().unwrap());
    let addr = start_whoami(acceptor.clone()).await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut reply)).await;
    expect_rejected(&acceptor, HandshakeFailure::Protocol).await;
    // and the server still serves real clients
    let alice = setup.ca.client("alice", &[]);
    let reply = client::get_once(addr, setup.client(Some(&alice)), "/whoami")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn stale_crl_is_refused_only_when_expiry_is_enforced() {
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let stale = setup
        .ca
        .crl_until(&[], OffsetDateTime::now_utc() - time::Duration::hours(1));
    let enforced = setup
        .builder()
        .crl_pem(stale.clone())
        .enforce_crl_expiry(true);
    assert_refused(enforced, &setup, Some(&alice), HandshakeFailure::ExpiredCrl).await;
    assert_accepted(setup.builder().crl_pem(stale), &setup, &alice).await;
}

#[tokio::test]
async fn client_that_hangs_up_mid_handshake() {
    common::init_tracing();
    let setup = Setup::new();
    let acceptor = MtlsAcceptor::new(setup.builder().build().unwrap());
    let addr = start_whoami(acceptor.clone()).await;
    // The first bytes of a TLS 1.3 ClientHello record, then the connection closes.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01])
        .await
        .unwrap();
    drop(tcp);
    expect_rejected(&acceptor, HandshakeFailure::Io).await;
    // and nobody else is affected
    let alice = setup.ca.client("alice", &[]);
    let reply = client::get_once(addr, setup.client(Some(&alice)), "/whoami")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
}
