//! An asynchronous permission-store lookup behind a `DecisionCache`, over real mTLS on
//! 127.0.0.1: alice and bob each call `/reports` three times; the store is asked once per
//! client, the other calls are answered from the cache.
//!
//! ```text
//! cargo run --example permission_store
//! ```

#[path = "support/client.rs"]
mod client;
#[path = "support/permission_store.rs"]
mod permission_store;
#[path = "support/pki.rs"]
mod pki;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use permission_store::PermissionStore;
use tower::ServiceBuilder;
use tower_mtls::authorize::DecisionCache;
use tower_mtls::tls::ClientAuth;
use tower_mtls::{MtlsAcceptor, MtlsAuthLayer, MtlsConfig, MtlsListener, Principal};

async fn handler(_: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"report\n"))))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let ca = pki::Ca::root("permission store example CA");
    let server = ca.server();
    let alice = ca.client("alice", &["finance"]);
    let bob = ca.client("bob", &["users"]);

    // The store grants alice (by the identity her certificate yields) `GET /reports`.
    let alice_identity = Principal::from_verified_chain(&alice.chain)?.to_string();
    let store = PermissionStore::granting([(alice_identity, "GET /reports".to_owned())]);
    let authorizer = DecisionCache::new(store.authorizer())
        .ttl(Duration::from_secs(30))
        .capacity(1_000);

    let tls = MtlsConfig::builder()
        .server_cert_pem(server.chain_pem())
        .server_key_pem(server.key_pem.clone())
        .client_ca_pem(ca.pem())
        .client_auth(ClientAuth::Required)
        .build()?;
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(authorizer))
        .service_fn(handler);
    let listener = MtlsListener::bind("127.0.0.1:0", MtlsAcceptor::new(tls)).await?;
    let addr = listener.local_addr();
    let server_task = tokio::spawn(tower_mtls::hyper::serve(listener, service));

    for round in 1..=3 {
        for (who, identity) in [("alice", &alice), ("bob", &bob)] {
            let config = client::client_config(
                ca.der(),
                Some((identity.chain.clone(), identity.key())),
                &[b"http/1.1"],
            );
            let reply = client::get_once(addr, config, "/reports").await?;
            println!(
                "round {round}: {who:<5} GET /reports -> {}",
                reply.status.as_u16()
            );
        }
    }
    println!("6 requests, {} permission-store queries", store.queries());
    server_task.abort();
    Ok(())
}
