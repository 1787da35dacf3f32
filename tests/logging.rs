//! Invariant 5: every rejection and every failed handshake emits exactly one tracing event, with
//! the peer address, the principal when there is one, and the reason; never key material.

mod common;

use common::{Setup, client, expect_rejected};
use http::StatusCode;
use tower::ServiceBuilder;
use tower_mtls::tls::{ClientAuth, HandshakeFailure};
use tower_mtls::{AuthContext, Decision, MtlsAcceptor, MtlsAuthLayer};

// A current-thread runtime: the server tasks run on this thread, under this subscriber.
#[tokio::test(flavor = "current_thread")]
async fn one_event_per_rejection_and_per_failed_handshake() {
    let logs = common::LogCapture::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());

    let setup = Setup::new();
    let bob = setup.ca.client("bob", &["users"]);
    let mallory = common::pki::Ca::root("other CA").client("mallory", &[]);
    let acceptor = MtlsAcceptor::new(setup.config(ClientAuth::Optional));
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(tower_mtls::authorize_fn(
            |_: &AuthContext<'_>| Decision::deny("bob may not"),
        )))
        .service_fn(common::whoami);
    let (addr, _server) = common::start_acceptor(acceptor.clone(), service).await;

    let reply = client::get_once(addr, setup.client(Some(&bob)), "/x")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = client::get_once(addr, setup.client(None), "/y")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = client::get_once(addr, setup.client(Some(&bob)), "/%61dmin")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        client::get_once(addr, setup.client(Some(&mallory)), "/z")
            .await
            .is_err()
    );
    expect_rejected(&acceptor, HandshakeFailure::UnknownIssuer).await;

    let rejected = logs.lines("request rejected");
    assert_eq!(rejected.len(), 3, "{rejected:#?}");
    let denied = &rejected[0];
    for part in [
        "peer=127.0.0.1:",
        "principal=CN=bob,OU=users",
        "status=403",
        "bob may not",
        "path=\"/x\"",
    ] {
        assert!(denied.contains(part), "missing {part:?} in {denied}");
    }
    let anonymous = &rejected[1];
    for part in [
        "peer=127.0.0.1:",
        "status=401",
        "no client certificate",
        "path=\"/y\"",
    ] {
        assert!(anonymous.contains(part), "missing {part:?} in {anonymous}");
    }

    let refused = &rejected[2];
    for part in [
        "peer=127.0.0.1:",
        "principal=CN=bob,OU=users",
        "status=400",
        "percent-encoded unreserved character",
        "path=\"/%61dmin\"",
    ] {
        assert!(refused.contains(part), "missing {part:?} in {refused}");
    }

    let failed = logs.lines("TLS handshake failed");
    assert_eq!(failed.len(), 1, "{failed:#?}");
    for part in ["peer=127.0.0.1:", "cause=unknown issuer"] {
        assert!(
            failed[0].contains(part),
            "missing {part:?} in {}",
            failed[0]
        );
    }

    let everything = logs.text();
    assert!(
        !everything.contains("PRIVATE KEY"),
        "key material in the logs"
    );
}
