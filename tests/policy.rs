//! Authorization policies over real TLS on loopback: the example policy file, roles computed
//! per connection, a cached permission-store lookup, and a reload that keeps the old rules.

mod common;

use common::permission_store::PermissionStore;
use common::{Setup, client, start, start_acceptor, whoami};
use http::StatusCode;
use tower::ServiceBuilder;
use tower_mtls::authorize::{DecisionCache, PathPattern};
use tower_mtls::authorize::{Matcher, ReloadablePolicy, Rule, RuleSet};
use tower_mtls::identity::OrganizationalUnitRoles;
use tower_mtls::tls::ClientAuth;
use tower_mtls::{MtlsAcceptor, MtlsAuthLayer};

const EXAMPLE_POLICY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/policy.toml");

async fn status(
    addr: std::net::SocketAddr,
    setup: &Setup,
    who: &common::pki::Identity,
    path: &str,
) -> StatusCode {
    client::get_once(addr, setup.client(Some(who)), path)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .status
}

#[tokio::test]
async fn example_policy_file_gives_200_and_403() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &["admins"]);
    let bob = setup.ca.client("bob", &["users"]);
    let mut params = common::pki::client_params("admin-workload", &[]);
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://example.org/admin".try_into().unwrap(),
    )];
    let workload = setup.ca.issue(params);

    let rules = RuleSet::from_toml_file(EXAMPLE_POLICY).expect("example policy loads");
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(rules))
        .service_fn(whoami);
    let (addr, _server) = start(setup.config(ClientAuth::Required), service).await;

    assert_eq!(status(addr, &setup, &alice, "/admin").await, StatusCode::OK);
    assert_eq!(
        status(addr, &setup, &workload, "/admin").await,
        StatusCode::OK
    );
    assert_eq!(
        status(addr, &setup, &bob, "/admin").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(status(addr, &setup, &bob, "/healthz").await, StatusCode::OK);
    assert_eq!(status(addr, &setup, &bob, "/whoami").await, StatusCode::OK);
    // Unknown paths go on to the service, as with the flags (the router answers 404).
    assert_eq!(
        status(addr, &setup, &bob, "/elsewhere").await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn rules_match_roles_computed_per_connection() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &["ops", "admins"]);
    let bob = setup.ca.client("bob", &["users"]);
    let rules = RuleSet::new([Rule::allow("ops-api")
        .path(PathPattern::prefix("/ops").unwrap())
        .principal(Matcher::role("ou:ops"))])
    .unwrap();
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(rules))
        .service_fn(whoami);
    let acceptor =
        MtlsAcceptor::new(setup.config(ClientAuth::Required)).role_mapper(OrganizationalUnitRoles);
    let (addr, _server) = start_acceptor(acceptor, service).await;

    assert_eq!(status(addr, &setup, &alice, "/ops/x").await, StatusCode::OK);
    assert_eq!(
        status(addr, &setup, &alice, "/opsx").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(addr, &setup, &bob, "/ops/x").await,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn cached_permission_store_is_asked_once_per_certificate_and_request() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &["admins"]);
    let bob = setup.ca.client("bob", &["users"]);
    let alice_id = tower_mtls::Principal::from_verified_chain(&alice.chain)
        .unwrap()
        .to_string();
    let store = PermissionStore::granting([(alice_id, "GET /reports".to_owned())]);
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(DecisionCache::new(store.authorizer())))
        .service_fn(whoami);
    let (addr, _server) = start(setup.config(ClientAuth::Required), service).await;

    for _ in 0..3 {
        assert_eq!(
            status(addr, &setup, &alice, "/reports").await,
            StatusCode::OK
        );
        assert_eq!(
            status(addr, &setup, &bob, "/reports").await,
            StatusCode::FORBIDDEN
        );
    }
    assert_eq!(store.queries(), 2, "one lookup per client");
}

#[tokio::test]
async fn reload_over_live_connections_keeps_old_rules_on_error() {
    common::init_tracing();
    let setup = Setup::new();
    let bob = setup.ca.client("bob", &["users"]);
    let policy = ReloadablePolicy::from_toml_file(EXAMPLE_POLICY).unwrap();
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(policy.clone()))
        .service_fn(whoami);
    let (addr, _server) = start(setup.config(ClientAuth::Required), service).await;
    assert_eq!(
        status(addr, &setup, &bob, "/admin").await,
        StatusCode::FORBIDDEN
    );

    let broken = "[[rule]]\nname = \"all\"\naction = \"allow\"\nprincipal = { ou = [] }\n";
    assert!(policy.reload_toml_str(broken).is_err());
    assert_eq!(
        status(addr, &setup, &bob, "/admin").await,
        StatusCode::FORBIDDEN
    );

    let open = "[[rule]]\nname = \"users-admin\"\naction = \"allow\"\npath = \"/admin\"\nprincipal.ou = \"users\"\n";
    policy.reload_toml_str(open).unwrap();
    assert_eq!(status(addr, &setup, &bob, "/admin").await, StatusCode::OK);
}
