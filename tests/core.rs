//! The core data path over real TLS on loopback: verified identity → Principal → layer →
//! handler, with 401/403 and gRPC rejections.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Setup, client, json, start, whoami};
use http::{Request, StatusCode};
use sha2::{Digest, Sha256};
use tower::ServiceBuilder;
use tower_mtls::tls::ClientAuth;
use tower_mtls::{AllowAnyVerified, AuthContext, Decision, MtlsAuthLayer};

fn admins_only(ctx: &AuthContext<'_>) -> Decision {
    if ctx
        .principal()
        .organizational_units()
        .any(|ou| ou == "admins")
    {
        Decision::allow("admin")
    } else {
        Decision::deny("not an admin")
    }
}

/// Serves [`whoami`] behind the layer with [`admins_only`].
async fn start_admins_only(setup: &Setup, mode: ClientAuth) -> std::net::SocketAddr {
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(tower_mtls::authorize_fn(admins_only)))
        .service_fn(whoami);
    start(setup.config(mode), service).await.0
}

#[tokio::test]
async fn verified_client_reaches_handler_with_its_principal() {
    common::init_tracing();
    let setup = Setup::new();
    let mut params = common::pki::client_params("alice", &["admins", "ops"]);
    params.subject_alt_names = vec![
        rcgen::SanType::DnsName("alice.example.org".try_into().unwrap()),
        rcgen::SanType::DnsName("a.example.org".try_into().unwrap()),
        rcgen::SanType::URI("spiffe://example.org/ns/prod/sa/alice".try_into().unwrap()),
        rcgen::SanType::Rfc822Name("alice@example.org".try_into().unwrap()),
        rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()),
        rcgen::SanType::IpAddress("::1".parse().unwrap()),
    ];
    let alice = setup.ca.issue(params);
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(AllowAnyVerified))
        .service_fn(whoami);
    let (addr, _server) = start(setup.config(ClientAuth::Required), service).await;

    let reply = client::get_once(addr, setup.client(Some(&alice)), "/whoami")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let p = json(&reply);
    assert_eq!(p["subject"], "CN=alice,OU=ops,OU=admins,O=tower-mtls demo");
    assert_eq!(p["issuer"], "CN=test CA,O=tower-mtls demo");
    assert_eq!(p["common_name"], "alice");
    assert_eq!(
        p["organizational_units"],
        serde_json::json!(["admins", "ops"])
    );
    assert_eq!(p["spiffe_id"], "spiffe://example.org/ns/prod/sa/alice");
    assert_eq!(
        p["dns_names"],
        serde_json::json!(["alice.example.org", "a.example.org"])
    );
    assert_eq!(p["emails"], serde_json::json!(["alice@example.org"]));
    assert_eq!(p["ips"], serde_json::json!(["127.0.0.1", "::1"]));
    let fingerprint = hex::encode(Sha256::digest(alice.chain[0].as_ref()));
    assert_eq!(p["fingerprint_sha256"], fingerprint);
    let (_, cert) = x509_parser::parse_x509_certificate(alice.chain[0].as_ref()).unwrap();
    let serial = cert.serial.to_str_radix(16);
    assert_eq!(p["serial"], serial);
}

#[tokio::test]
async fn optional_auth_without_certificate_gets_401_problem_json() {
    common::init_tracing();
    let setup = Setup::new();
    let (authorizer, calls) = common::counting_allow();
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(authorizer))
        .service_fn(whoami);
    let (addr, _server) = start(setup.config(ClientAuth::Optional), service).await;

    let reply = client::get_once(addr, setup.client(None), "/whoami")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.headers["content-type"], "application/problem+json");
    let body = json(&reply);
    assert_eq!(body["status"], 401);
    assert_eq!(body["title"], "Unauthorized");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "authorizer must not run without identity"
    );
}

#[tokio::test]
async fn required_auth_without_certificate_fails_the_handshake() {
    common::init_tracing();
    let setup = Setup::new();
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(AllowAnyVerified))
        .service_fn(whoami);
    let (addr, _server) = start(setup.config(ClientAuth::Required), service).await;
    // With TLS 1.3 the client learns of the refusal on its first read.
    let result = client::get_once(addr, setup.client(None), "/whoami").await;
    assert!(
        result.is_err(),
        "expected a failed handshake, got {result:?}"
    );
}

#[tokio::test]
async fn authorizer_denial_is_403_and_allow_reaches_handler() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &["admins"]);
    let bob = setup.ca.client("bob", &["users"]);
    let addr = start_admins_only(&setup, ClientAuth::Required).await;

    let reply = client::get_once(addr, setup.client(Some(&bob)), "/x")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.headers["content-type"], "application/problem+json");
    assert_eq!(json(&reply)["status"], 403);
    assert!(
        !reply.body.contains("admin"),
        "the reason must not leak: {}",
        reply.body
    );

    let reply = client::get_once(addr, setup.client(Some(&alice)), "/x")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(json(&reply)["common_name"], "alice");
}

#[tokio::test]
async fn grpc_requests_get_grpc_statuses() {
    common::init_tracing();
    let setup = Setup::new();
    let bob = setup.ca.client("bob", &["users"]);
    let addr = start_admins_only(&setup, ClientAuth::Optional).await;

    let grpc = || {
        Request::post("/grpc.health.v1.Health/Check")
            .header("content-type", "application/grpc+proto")
            .header("te", "trailers")
            .body(http_body_util::Full::default())
            .unwrap()
    };
    let mut anonymous = client::http2(addr, setup.client(None)).await.unwrap();
    let reply = client::send2(&mut anonymous, grpc()).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/grpc");
    assert_eq!(reply.headers["grpc-status"], "16");
    assert!(!reply.headers["grpc-message"].is_empty());

    let mut bob = client::http2(addr, setup.client(Some(&bob))).await.unwrap();
    let reply = client::send2(&mut bob, grpc()).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["grpc-status"], "7");
    assert!(reply.body.is_empty());
}

#[tokio::test]
async fn certificate_from_unknown_ca_never_reaches_the_layer() {
    common::init_tracing();
    let setup = Setup::new();
    // Same subject name as the real CA, different key.
    let impostor_ca = common::pki::Ca::root("test CA");
    let mallory = impostor_ca.client("alice", &["admins"]);
    let (authorizer, calls) = common::counting_allow();
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(authorizer))
        .service_fn(whoami);
    // Optional mode: a *presented* bad certificate must still fail the handshake.
    let (addr, _server) = start(setup.config(ClientAuth::Optional), service).await;
    let result = client::get_once(addr, setup.client(Some(&mallory)), "/x").await;
    assert!(
        result.is_err(),
        "expected a failed handshake, got {result:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn identity_headers_are_ignored() {
    common::init_tracing();
    let setup = Setup::new();
    let bob = setup.ca.client("bob", &["users"]);
    let addr = start_admins_only(&setup, ClientAuth::Optional).await;
    let spoof = |req: &mut Request<_>| {
        let h = req.headers_mut();
        h.insert(
            "x-forwarded-client-cert",
            "Subject=\"CN=alice,OU=admins\"".parse().unwrap(),
        );
        h.insert("x-ssl-client-s-dn", "CN=alice,OU=admins".parse().unwrap());
        h.insert(
            "x-client-cert",
            "-----BEGIN CERTIFICATE-----".parse().unwrap(),
        );
    };

    let mut req = client::get("/x");
    spoof(&mut req);
    let mut anonymous = client::http1(addr, setup.client_h1(None)).await.unwrap();
    let reply = client::send1(&mut anonymous, req).await.unwrap();
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    let mut req = client::get("/x");
    spoof(&mut req);
    let mut as_bob = client::http1(addr, setup.client_h1(Some(&bob)))
        .await
        .unwrap();
    let reply = client::send1(&mut as_bob, req).await.unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn interleaved_keep_alive_connections_keep_their_own_identity() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &["admins"]);
    let bob = setup.ca.client("bob", &["users"]);
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(AllowAnyVerified))
        .service_fn(whoami);
    let (addr, _server) = start(setup.config(ClientAuth::Required), service).await;

    // HTTP/1.1: two keep-alive connections, 50 requests alternating between them.
    let mut a = client::http1(addr, setup.client_h1(Some(&alice)))
        .await
        .unwrap();
    let mut b = client::http1(addr, setup.client_h1(Some(&bob)))
        .await
        .unwrap();
    for i in 0..50 {
        let (sender, want) = if i % 2 == 0 {
            (&mut a, "alice")
        } else {
            (&mut b, "bob")
        };
        let reply = client::send1(sender, client::get("/whoami")).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(json(&reply)["common_name"], want, "request {i}");
    }

    // HTTP/2: one connection per identity, 50 requests in flight at once across both.
    let a2 = client::http2(addr, setup.client(Some(&alice)))
        .await
        .unwrap();
    let b2 = client::http2(addr, setup.client(Some(&bob))).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (mut sender, want) = if i % 2 == 0 {
            (a2.clone(), "alice")
        } else {
            (b2.clone(), "bob")
        };
        tasks.spawn(async move {
            let reply = client::send2(&mut sender, client::get("/whoami"))
                .await
                .unwrap();
            (i, want, reply)
        });
    }
    let mut done = 0;
    while let Some(joined) = tasks.join_next().await {
        let (i, want, reply) = joined.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(json(&reply)["common_name"], want, "h2 request {i}");
        done += 1;
    }
    assert_eq!(done, 50);
}

#[tokio::test]
async fn asynchronous_authorizer_decides_after_awaiting() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &["admins"]);
    let bob = setup.ca.client("bob", &["users"]);
    let store: Arc<Vec<[u8; 32]>> = Arc::new(vec![Sha256::digest(alice.chain[0].as_ref()).into()]);
    let authorizer = tower_mtls::authorize_fn(move |ctx: &AuthContext<'_>| {
        let fingerprint = *ctx.principal().fingerprint_sha256();
        let store = store.clone();
        async move {
            // the shape of a database call
            tokio::time::sleep(Duration::from_millis(5)).await;
            if store.contains(&fingerprint) {
                Decision::allow("in permission store")
            } else {
                Decision::deny("not in permission store")
            }
        }
    });
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(authorizer))
        .service_fn(whoami);
    let (addr, _server) = start(setup.config(ClientAuth::Required), service).await;
    let reply = client::get_once(addr, setup.client(Some(&alice)), "/")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let reply = client::get_once(addr, setup.client(Some(&bob)), "/")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn connection_info_describes_the_tls_session() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &["admins"]);
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(AllowAnyVerified))
        .service_fn(|req: Request<hyper::body::Incoming>| async move {
            let info = req
                .extensions()
                .get::<tower_mtls::ConnectionInfo>()
                .unwrap();
            let body = serde_json::json!({
                "version": format!("{:?}", info.protocol_version()),
                "alpn": info.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()),
                "sni": info.server_name(),
                "peer_ip": info.peer_addr().ip().to_string(),
                "local": info.local_addr().map(|a| a.to_string()),
                "resumed": info.is_resumed(),
                "same_principal": tower_mtls::Principal::ptr_eq(
                    info.principal_unchecked().unwrap(),
                    req.extensions().get::<tower_mtls::Principal>().unwrap(),
                ),
            });
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from(body.to_string()),
            )))
        });
    let (addr, _server) = start(setup.config(ClientAuth::Required), service).await;
    let mut h2 = client::http2(addr, setup.client(Some(&alice)))
        .await
        .unwrap();
    let reply = client::send2(&mut h2, client::get("/")).await.unwrap();
    let info = json(&reply);
    assert_eq!(info["version"], "Some(TLSv1_3)");
    assert_eq!(info["alpn"], "h2");
    assert_eq!(info["sni"], "localhost");
    assert_eq!(info["peer_ip"], "127.0.0.1");
    assert_eq!(info["local"], addr.to_string());
    assert_eq!(info["resumed"], false);
    assert_eq!(info["same_principal"], true);
}

#[tokio::test]
async fn roles_are_mapped_once_per_connection() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &["admins", "ops"]);
    let mapped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = mapped.clone();
    let acceptor = tower_mtls::MtlsAcceptor::new(setup.config(ClientAuth::Required)).role_mapper(
        move |p: &tower_mtls::Principal| {
            count.fetch_add(1, Ordering::SeqCst);
            tower_mtls::identity::Roles::new(
                p.organizational_units().map(|ou| format!("role:{ou}")),
            )
        },
    );
    let authorizer = tower_mtls::authorize_fn(|ctx: &AuthContext<'_>| {
        if ctx.roles().contains("role:admins") {
            Decision::allow("role:admins")
        } else {
            Decision::deny("needs role:admins")
        }
    });
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(authorizer))
        .service_fn(whoami);
    let (addr, _server) = common::start_acceptor(acceptor, service).await;
    let mut conn = client::http1(addr, setup.client_h1(Some(&alice)))
        .await
        .unwrap();
    for _ in 0..5 {
        assert_eq!(
            client::status1(&mut conn, "/").await.unwrap(),
            StatusCode::OK
        );
    }
    assert_eq!(
        mapped.load(Ordering::SeqCst),
        1,
        "one mapping per connection"
    );
}
