//! axum 0.8: the example server's router over real TLS, with hyper clients.
// The example is included whole, with its own copy of the test PKI module.
#![allow(clippy::duplicate_mod)]

mod common;

#[allow(dead_code)]
#[path = "../examples/axum_server.rs"]
mod axum_server;

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use common::{Setup, client, json, serve_axum as serve};
use http::StatusCode;
use tokio::net::TcpStream;
use tower_mtls::axum::AnyVerifiedPrincipal;
use tower_mtls::tls::ClientAuth;
use tower_mtls::{
    AllowAnyVerified, ConnectionInfo, MtlsAcceptor, MtlsAuthLayer, MtlsListener, SpiffeId,
};

fn rule() -> axum_server::server::AdminRule {
    axum_server::server::AdminRule {
        ous: vec!["admins".into()],
        spiffe_ids: vec![SpiffeId::parse("spiffe://example.org/admin").unwrap()],
    }
}

#[tokio::test]
async fn example_router_statuses() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &["admins"]);
    let bob = setup.ca.client("bob", &["users"]);
    let mut svc_params = common::pki::client_params("svc", &[]);
    svc_params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://example.org/admin".try_into().unwrap(),
    )];
    let svc = setup.ca.issue(svc_params);
    let acceptor = MtlsAcceptor::new(setup.config(ClientAuth::Optional));
    let addr = serve(axum_server::app(rule()), acceptor).await;

    let get = |id: Option<&common::pki::Identity>, path: &'static str| {
        let config = setup.client(id);
        async move { client::get_once(addr, config, path).await.unwrap() }
    };
    let reply = get(Some(&alice), "/whoami").await;
    assert_eq!(reply.status, StatusCode::OK);
    let me = json(&reply);
    assert_eq!(me["common_name"], "alice");
    assert_eq!(me["subject"], "CN=alice,OU=admins,O=tower-mtls demo");
    assert_eq!(me["organizational_units"], serde_json::json!(["admins"]));
    assert!(me["not_after"].as_str().unwrap().ends_with('Z'));
    for key in [
        "spiffe_id",
        "dns_names",
        "emails",
        "uris",
        "serial",
        "fingerprint_sha256",
    ] {
        assert!(me.get(key).is_some(), "whoami lacks {key}");
    }

    assert_eq!(get(Some(&alice), "/admin").await.status, StatusCode::OK);
    assert_eq!(get(Some(&svc), "/admin").await.status, StatusCode::OK);
    let denied = get(Some(&bob), "/admin").await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(json(&denied)["status"], 403);
    let missing = get(Some(&bob), "/nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(json(&missing)["status"], 404);

    // Without a certificate: /healthz is public, everything else is 401 (even unknown paths).
    assert_eq!(get(None, "/healthz").await.status, StatusCode::OK);
    for path in ["/whoami", "/admin", "/nope"] {
        let reply = get(None, path).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(json(&reply)["status"], 401);
    }
}

/// Without a layer, "any verified client" is said explicitly: `AnyVerifiedPrincipal` (the
/// `Principal` extractor only yields what a layer allowed; see tests/request_confusion.rs).
#[tokio::test]
async fn any_verified_extractors_work_without_the_layer_and_reject_like_it() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let app = Router::new()
        .route(
            "/required",
            get(|AnyVerifiedPrincipal(p): AnyVerifiedPrincipal| async move {
                p.common_name().unwrap_or("").to_owned()
            }),
        )
        .route(
            "/optional",
            get(|p: Option<AnyVerifiedPrincipal>| async move {
                format!("{:?}", p.map(|p| p.0.to_string()))
            }),
        )
        .route(
            "/connection",
            get(|info: ConnectionInfo| async move { info.peer_addr().ip().to_string() }),
        );
    let addr = serve(app, MtlsAcceptor::new(setup.config(ClientAuth::Optional))).await;

    let reply = client::get_once(addr, setup.client(Some(&alice)), "/required")
        .await
        .unwrap();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "alice")
    );
    let reply = client::get_once(addr, setup.client(None), "/required")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.headers["content-type"], "application/problem+json");
    let reply = client::get_once(addr, setup.client(None), "/optional")
        .await
        .unwrap();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "None")
    );
    let reply = client::get_once(addr, setup.client(Some(&alice)), "/optional")
        .await
        .unwrap();
    assert!(reply.body.contains("CN=alice"), "{}", reply.body);
    let reply = client::get_once(addr, setup.client(None), "/connection")
        .await
        .unwrap();
    assert_eq!(reply.body, "127.0.0.1");
}

#[tokio::test]
async fn route_layer_protects_some_routes_only() {
    common::init_tracing();
    let setup = Setup::new();
    let app = Router::new()
        .route("/private", get(|| async { "secret" }))
        .route_layer(MtlsAuthLayer::new(AllowAnyVerified))
        .route("/public", get(|| async { "hello" }));
    let addr = serve(app, MtlsAcceptor::new(setup.config(ClientAuth::Optional))).await;
    let reply = client::get_once(addr, setup.client(None), "/public")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let reply = client::get_once(addr, setup.client(None), "/private")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn stalled_connections_do_not_block_axums_accept_loop() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &["admins"]);
    let timeout = Duration::from_secs(5);
    let acceptor = MtlsAcceptor::new(setup.config(ClientAuth::Required)).handshake_timeout(timeout);
    let addr = serve(axum_server::app(rule()), acceptor).await;
    let mut stalled = Vec::new();
    for _ in 0..100 {
        stalled.push(TcpStream::connect(addr).await.unwrap());
    }
    let started = Instant::now();
    let reply = client::get_once(addr, setup.client(Some(&alice)), "/whoami")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    drop(stalled);
}

#[tokio::test]
async fn http2_requests_carry_the_principal() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &["admins"]);
    let addr = serve(
        axum_server::app(rule()),
        MtlsAcceptor::new(setup.config(ClientAuth::Required)),
    )
    .await;
    let mut h2 = client::http2(addr, setup.client(Some(&alice)))
        .await
        .unwrap();
    for _ in 0..3 {
        let reply = client::send2(&mut h2, client::get("/whoami"))
            .await
            .unwrap();
        assert_eq!(json(&reply)["common_name"], "alice");
    }
}

/// `tower_mtls::axum::serve`: the example router's statuses, `ConnectInfo<ConnectionInfo>`,
/// the `ConnectionInfo` and `Principal` extractors, and the HTTP timeouts (an idle connection
/// is closed), with graceful shutdown.
#[tokio::test]
async fn tower_mtls_axum_serve_keeps_connect_info_and_adds_timeouts() {
    use axum::extract::ConnectInfo;
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &["admins"]);
    let bob = setup.ca.client("bob", &["users"]);
    let app = axum_server::app(rule()).route(
        "/peer",
        get(
            |ConnectInfo(info): ConnectInfo<ConnectionInfo>,
             direct: ConnectionInfo,
             // Not behind the app's layer: the explicit "any verified client" extractor.
             AnyVerifiedPrincipal(p): AnyVerifiedPrincipal| async move {
                assert_eq!(info.peer_addr(), direct.peer_addr());
                format!(
                    "{} {}",
                    info.peer_addr().ip(),
                    p.common_name().unwrap_or("?")
                )
            },
        ),
    );
    let listener = MtlsListener::bind(
        "127.0.0.1:0",
        MtlsAcceptor::new(setup.config(ClientAuth::Required)),
    )
    .await
    .unwrap();
    let addr = listener.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tower_mtls::axum::serve(listener, app)
            .timeouts(
                tower_mtls::hyper::HttpTimeouts::default().idle_timeout(Duration::from_millis(300)),
            )
            .with_graceful_shutdown(
                async {
                    let _ = stopped.await;
                },
                Duration::from_secs(2),
            ),
    );

    let reply = client::get_once(addr, setup.client(Some(&alice)), "/peer")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "127.0.0.1 alice");
    let admin = |id| client::get_once(addr, setup.client(Some(id)), "/admin");
    assert_eq!(admin(&alice).await.unwrap().status, StatusCode::OK);
    assert_eq!(admin(&bob).await.unwrap().status, StatusCode::FORBIDDEN);

    let mut idle = client::http2(addr, setup.client(Some(&alice)))
        .await
        .unwrap();
    assert_eq!(
        client::status2(&mut idle, "/whoami").await.unwrap(),
        StatusCode::OK
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !idle.is_closed() {
        assert!(Instant::now() < deadline, "the idle connection stayed open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("graceful shutdown")
        .unwrap();
    assert!(
        client::get_once(addr, setup.client(Some(&alice)), "/healthz")
            .await
            .is_err()
    );
}
