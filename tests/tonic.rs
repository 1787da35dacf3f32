//! tonic 0.14: the example's health service behind MtlsAuthLayer, called by a real tonic
//! client presenting client certificates.
// The example is included whole, with its own copy of the test PKI module.
#![allow(clippy::duplicate_mod)]

mod common;

#[allow(dead_code)]
#[path = "../examples/tonic_server.rs"]
mod tonic_server;

use std::net::SocketAddr;

use common::Setup;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower_mtls::tls::ClientAuth;
use tower_mtls::{MtlsAcceptor, MtlsAuthLayer, MtlsListener};

async fn serve(setup: &Setup) -> SocketAddr {
    let acceptor = MtlsAcceptor::new(setup.config(ClientAuth::Optional));
    let listener = MtlsListener::bind("127.0.0.1:0", acceptor).await.unwrap();
    let addr = listener.local_addr();
    let rule = tonic_server::server::AdminRule {
        ous: vec!["admins".into()],
        spiffe_ids: vec![],
    };
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(async move {
        // keep the reporter alive with the server
        let _reporter = _reporter;
        tonic::transport::Server::builder()
            .layer(MtlsAuthLayer::new(tonic_server::authorizer(rule)))
            .add_service(health)
            .serve_with_incoming(tower_mtls::tonic::incoming(listener))
            .await
            .unwrap();
    });
    addr
}

fn check() -> HealthCheckRequest {
    HealthCheckRequest {
        service: String::new(),
    }
}

#[tokio::test]
async fn verified_client_gets_serving() {
    common::init_tracing();
    let setup = Setup::new();
    let bob = setup.ca.client("bob", &["users"]);
    let addr = serve(&setup).await;
    let mut health = HealthClient::new(common::tonic_channel(addr, setup.client(Some(&bob))).await);
    let reply = health.check(check()).await.unwrap();
    assert_eq!(reply.into_inner().status, ServingStatus::Serving as i32);
}

#[tokio::test]
async fn no_certificate_is_unauthenticated() {
    common::init_tracing();
    let setup = Setup::new();
    let addr = serve(&setup).await;
    let mut health = HealthClient::new(common::tonic_channel(addr, setup.client(None)).await);
    let status = health.check(check()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.code() as i32, 16);
    assert_eq!(
        status.message(),
        "a verified client certificate is required"
    );
}

#[tokio::test]
async fn watch_is_for_admins_only() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &["admins"]);
    let bob = setup.ca.client("bob", &["users"]);
    let addr = serve(&setup).await;

    let mut as_bob = HealthClient::new(common::tonic_channel(addr, setup.client(Some(&bob))).await);
    let status = as_bob.watch(check()).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.code() as i32, 7);
    assert!(!status.message().is_empty());

    let mut as_alice =
        HealthClient::new(common::tonic_channel(addr, setup.client(Some(&alice))).await);
    let mut stream = as_alice.watch(check()).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
}

#[tokio::test]
async fn handlers_read_the_principal_from_the_request() {
    // The helper reads what the layer inserted; the same request type tonic handlers get.
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let principal = tower_mtls::Principal::from_verified_chain(&alice.chain).unwrap();
    let mut request = tonic::Request::new(());
    assert!(tower_mtls::tonic::principal(&request).is_none());
    request.extensions_mut().insert(principal);
    assert_eq!(
        tower_mtls::tonic::principal(&request).and_then(|p| p.common_name()),
        Some("alice")
    );
}
