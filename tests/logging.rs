//! Invariant 5: every rejection and every failed handshake emits exactly one tracing event, with
//! the peer address, the principal when there is one, and the reason; never key material.

mod common;

use common::{Setup, client, expect_rejected};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    for part in ["peer=127.0.0.1:", "cause=\"unknown_issuer\""] {
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

/// A flood of failed handshakes of one cause: a few events, then a summary with the number of
/// the others; every one is still counted.
#[tokio::test(flavor = "current_thread")]
async fn a_flood_of_one_cause_is_rate_limited_with_a_summary() {
    let logs = common::LogCapture::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());

    let setup = Setup::new();
    let acceptor = MtlsAcceptor::new(setup.config(ClientAuth::Required));
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(tower_mtls::AllowAnyVerified))
        .service_fn(common::whoami);
    let (addr, _server) = common::start_acceptor(acceptor.clone(), service).await;

    // Plain HTTP to a TLS port, all at once: a protocol error per connection.
    const FLOOD: u64 = 60;
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..FLOOD {
        flood.spawn(async move {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            let mut rest = Vec::new();
            let _ = tcp.read_to_end(&mut rest).await;
        });
    }
    flood.join_all().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while acceptor.stats().rejected(HandshakeFailure::Protocol) < FLOOD {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            acceptor.stats()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Summaries come when a one-second window ends, with no further event needed: wait until
    // every failure is either logged or summarized.
    let count = || {
        let logged = logs
            .lines("TLS handshake failed")
            .iter()
            .filter(|line| line.contains("cause=\"protocol\""))
            .count() as u64;
        let suppressed: u64 = logs
            .lines("similar events suppressed")
            .iter()
            .filter(|line| line.contains("cause=\"protocol\""))
            .filter_map(|line| line.split("suppressed=").nth(1))
            .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        (logged, suppressed)
    };
    while count().0 + count().1 < FLOOD {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?} of {FLOOD}:\n{}",
            count(),
            logs.text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (logged, suppressed) = count();
    assert_eq!(logged + suppressed, FLOOD);
    assert!(
        logged <= 30 && suppressed >= 30,
        "{logged} logged, {suppressed} suppressed"
    );
}

/// Peer-controlled text in a rejection event is escaped and truncated: a certificate name with
/// a newline and a right-to-left override, and a long path.
#[tokio::test(flavor = "current_thread")]
async fn peer_controlled_fields_are_escaped_and_truncated() {
    let logs = common::LogCapture::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());

    let setup = Setup::new();
    let mallory = setup
        .ca
        .client("mallory\n2024-01-01 INFO forged\u{202e}gnp.exe", &["users"]);
    let acceptor = MtlsAcceptor::new(setup.config(ClientAuth::Required));
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(tower_mtls::authorize_fn(
            |_: &AuthContext<'_>| Decision::deny("no"),
        )))
        .service_fn(common::whoami);
    let (addr, _server) = common::start_acceptor(acceptor, service).await;
    let path = format!("/{}", "a".repeat(4000));
    let reply = client::get_once(addr, setup.client(Some(&mallory)), &path)
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    let text = logs.text();
    let rejected = logs.lines("request rejected");
    assert_eq!(rejected.len(), 1, "{text}");
    let line = &rejected[0];
    assert!(
        line.contains("forged"),
        "the name stays on the event's line: {text}"
    );
    assert!(line.contains("\\u{202e}"), "{line}");
    assert!(!text.contains('\u{202e}'), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("2024-01-01")), "{text}");
    assert!(
        line.contains("…\" (+3745 bytes)"),
        "the path is cut: {line}"
    );
    assert!(line.len() < 1500, "{} bytes", line.len());
}

#[tokio::test(flavor = "current_thread")]
async fn spiffe_refusals_are_logged_once_each_with_their_cause() {
    let logs = common::LogCapture::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());

    let setup = Setup::new();
    let ours = common::pki::Ca::root("example.org CA");
    let config = tower_mtls::MtlsConfig::builder()
        .server_cert_pem(setup.server.chain_pem())
        .server_key_pem(setup.server.key_pem.clone())
        .spiffe_bundle("example.org", ours.pem())
        .build()
        .unwrap();
    let acceptor = MtlsAcceptor::new(config);
    let addr = common::start_whoami(acceptor.clone()).await;
    let mut two_uris = common::pki::svid_params("spiffe://example.org/a");
    two_uris.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://example.org/b".try_into().unwrap(),
    ));
    let refused = [
        (
            ours.svid("spiffe://elsewhere.example/x"),
            HandshakeFailure::UnknownTrustDomain,
        ),
        (ours.issue(two_uris), HandshakeFailure::InvalidSvid),
        (ours.client("alice", &[]), HandshakeFailure::NoSpiffeId),
    ];
    for (who, cause) in &refused {
        assert!(
            client::get_once(addr, setup.client(Some(who)), "/")
                .await
                .is_err()
        );
        expect_rejected(&acceptor, *cause).await;
    }

    let failed = logs.lines("TLS handshake failed");
    assert_eq!(failed.len(), 3, "{failed:#?}");
    for (line, (_, cause)) in failed.iter().zip(&refused) {
        let cause = format!("cause=\"{}\"", cause.label());
        assert!(line.contains(&cause), "missing {cause:?} in {line}");
        assert!(line.contains("peer=127.0.0.1:"), "{line}");
    }
    assert!(failed[0].contains("\"elsewhere.example\""), "{}", failed[0]);
    assert!(failed[1].contains("more than one URI SAN"), "{}", failed[1]);
}

/// `hyper::serve` runs each connection in a `connection` span: a handler's own event carries
/// the peer and the principal.
#[tokio::test(flavor = "current_thread")]
async fn handler_events_are_attributed_to_the_connection() {
    let logs = common::LogCapture::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(tower_mtls::AllowAnyVerified))
        .service_fn(|req| async move {
            tracing::info!("handler ran");
            common::whoami(req).await
        });
    let acceptor = MtlsAcceptor::new(setup.config(ClientAuth::Required));
    let (addr, _server) = common::start_acceptor(acceptor, service).await;
    assert!(
        client::get_once(addr, setup.client(Some(&alice)), "/")
            .await
            .is_ok()
    );
    let lines = logs.lines("handler ran");
    assert_eq!(lines.len(), 1, "{}", logs.text());
    assert!(
        lines[0].contains("connection{peer=127.0.0.1:"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("principal=CN=alice"), "{}", lines[0]);
}
