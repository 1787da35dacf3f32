//! Resumed sessions over real TLS: under the configuration that verified the chain only its
//! validity is checked again; after a reload the chain is verified again in full; a revoked or
//! expired chain never resumes into access, however many tickets the client holds.

mod common;

use std::time::Duration;

use common::pki::client_params;
use common::resumed::Served;
use common::{Setup, expect_rejected};
use tower_mtls::tls::HandshakeFailure;

const TLS13: &rustls::SupportedProtocolVersion = &rustls::version::TLS13;
const TLS12: &rustls::SupportedProtocolVersion = &rustls::version::TLS12;

#[tokio::test]
async fn tls13_resumption_under_the_same_configuration_checks_validity_only() {
    let served = Served::start(Setup::builder).await;
    let config = served.alice(TLS13);
    assert_eq!(served.resumed(&config).await, Some(false));
    for n in 1..=3 {
        assert_eq!(served.resumed(&config).await, Some(true), "resumption {n}");
    }
    assert_eq!(served.checks(3).await, (3, 0));
}

#[tokio::test]
async fn tls12_resumption_is_always_verified_in_full() {
    // rustls hands back resumption data for TLS 1.3 sessions only.
    let served = Served::start(Setup::builder).await;
    let config = served.alice(TLS12);
    assert_eq!(served.resumed(&config).await, Some(false));
    for n in 1..=2 {
        assert_eq!(served.resumed(&config).await, Some(true), "resumption {n}");
    }
    assert_eq!(served.checks(2).await, (0, 2));
}

#[tokio::test]
async fn a_reload_that_changes_nothing_relevant_resumes_after_full_verification() {
    let served = Served::start(Setup::builder).await;
    let bob = served.setup.ca.client("bob", &[]);
    for version in [TLS13, TLS12] {
        let config = served.alice(version);
        assert_eq!(served.resumed(&config).await, Some(false));
        // Bob's revocation does not concern Alice.
        let crl = served.setup.ca.crl(&[&bob]);
        served
            .acceptor
            .reload_from(&served.setup.builder().crl_pem(crl))
            .unwrap();
        let (quick, full) = served.checks(0).await;
        assert_eq!(served.resumed(&config).await, Some(true), "{version:?}");
        assert_eq!(served.checks(0).await, (quick, full + 1), "{version:?}");
    }
    // The tickets of a session verified again under the new configuration are believed.
    let config = served.alice(TLS13);
    assert_eq!(served.resumed(&config).await, Some(false));
    let (quick, full) = served.checks(0).await;
    assert_eq!(served.resumed(&config).await, Some(true));
    assert_eq!(served.checks(0).await, (quick + 1, full));
}

async fn revoked_never_resumes(version: &'static rustls::SupportedProtocolVersion) {
    let served = Served::start(Setup::builder).await;
    let config = served.alice(version);
    assert_eq!(served.resumed(&config).await, Some(false));
    assert_eq!(served.resumed(&config).await, Some(true), "control");

    let (quick, _) = served.checks(1).await;
    let crl = served.setup.ca.crl(&[&served.alice]);
    served
        .acceptor
        .reload_from(&served.setup.builder().crl_pem(crl))
        .unwrap();
    // A refused resumed handshake still issued (and flushed) new TLS 1.3 tickets before the
    // acceptor re-checked the chain: they name the *new* configuration, and must not be
    // believed. The client's cache hands out the newest ticket first.
    for attempt in 1..=4 {
        assert_eq!(
            served.resumed(&config).await,
            None,
            "attempt {attempt}: a revoked certificate got in"
        );
    }
    expect_rejected(&served.acceptor, HandshakeFailure::ResumptionRevoked).await;
    assert_eq!(served.checks(0).await.0, quick);
}

#[tokio::test]
async fn revoked_certificate_never_resumes_tls13() {
    revoked_never_resumes(TLS13).await;
}

#[tokio::test]
async fn revoked_certificate_never_resumes_tls12() {
    revoked_never_resumes(TLS12).await;
}

#[tokio::test]
async fn a_chain_that_expired_since_the_full_handshake_does_not_resume() {
    let served = Served::start(Setup::builder).await;
    let mut params = client_params("short-lived", &[]);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let short = served.setup.ca.issue(params);
    let config = served.setup.client_versions(Some(&short), &[TLS13]);

    assert_eq!(served.resumed(&config).await, Some(false));
    assert_eq!(served.resumed(&config).await, Some(true));
    assert_eq!(served.checks(1).await, (1, 0));

    tokio::time::sleep(Duration::from_millis(3200)).await;
    for attempt in 1..=3 {
        assert_eq!(
            served.resumed(&config).await,
            None,
            "attempt {attempt}: an expired certificate resumed"
        );
    }
    expect_rejected(&served.acceptor, HandshakeFailure::ResumptionRevoked).await;
}

#[tokio::test]
async fn crl_expiry_enforcement_verifies_every_resumption_in_full() {
    let served = Served::start(|setup| {
        setup
            .builder()
            .crl_pem(setup.ca.crl(&[]))
            .enforce_crl_expiry(true)
    })
    .await;
    let config = served.alice(TLS13);
    assert_eq!(served.resumed(&config).await, Some(false));
    assert_eq!(served.resumed(&config).await, Some(true));
    assert_eq!(served.checks(1).await, (0, 1));
}
