//! Trust bundles and SPIFFE trust domains over real TLS on loopback: a name in a certificate
//! is accepted only together with the bundle that verified it, a SPIFFE ID only from its own
//! trust domain's bundle, and reloads move open connections and resumed sessions along.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::pki::{Ca, Identity, svid_params};
use common::{Setup, client, expect_rejected, json, start_acceptor, start_whoami, whoami};
use http::StatusCode;
use rcgen::{BasicConstraints, IsCa, SanType};
use serde_json::Value;
use tower::ServiceBuilder;
use tower_mtls::authorize::RuleSet;
use tower_mtls::tls::{HandshakeFailure, MtlsConfigBuilder};
use tower_mtls::{MtlsAcceptor, MtlsAuthLayer, MtlsConfig};

const TLS13: &rustls::SupportedProtocolVersion = &rustls::version::TLS13;

/// The server's own certificate and key, and no client trust at all yet.
fn server_only(setup: &Setup) -> MtlsConfigBuilder {
    MtlsConfig::builder()
        .server_cert_pem(setup.server.chain_pem())
        .server_key_pem(setup.server.key_pem.clone())
}

/// Two SPIFFE trust domains with a CA each.
struct Domains {
    setup: Setup,
    ours: Ca,    // example.org
    partner: Ca, // partner.example
}

impl Domains {
    fn new() -> Self {
        Domains {
            setup: Setup::new(),
            ours: Ca::root("example.org CA"),
            partner: Ca::root("partner.example CA"),
        }
    }

    /// Both trust domains' bundles, nothing else.
    fn builder(&self) -> MtlsConfigBuilder {
        server_only(&self.setup)
            .spiffe_bundle("example.org", self.ours.pem())
            .spiffe_bundle("partner.example", self.partner.pem())
    }
}

async fn serve(builder: MtlsConfigBuilder) -> (MtlsAcceptor, SocketAddr) {
    common::init_tracing();
    let acceptor = MtlsAcceptor::new(builder.build().expect("config"));
    let addr = start_whoami(acceptor.clone()).await;
    (acceptor, addr)
}

/// `/whoami` as `who` on a fresh connection: the principal as JSON, or `None` when the
/// handshake (or the connection) failed.
async fn whoami_as(addr: SocketAddr, setup: &Setup, who: &Identity) -> Option<Value> {
    let reply = client::get_once(addr, setup.client(Some(who)), "/")
        .await
        .ok()?;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    Some(json(&reply))
}

/// Expects `who` to be refused in the handshake, for `cause`.
async fn refused(
    acceptor: &MtlsAcceptor,
    addr: SocketAddr,
    setup: &Setup,
    who: &Identity,
    cause: HandshakeFailure,
) {
    let before = acceptor.stats().rejected(cause);
    let answer = whoami_as(addr, setup, who).await;
    assert!(
        answer.is_none(),
        "expected a refused handshake ({cause:?}), got {answer:?}"
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while acceptor.stats().rejected(cause) == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no handshake refused for {cause:?}: {:?}",
            acceptor.stats()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_partner_svid_claiming_our_trust_domain_is_refused_at_the_handshake() {
    let d = Domains::new();
    let (acceptor, addr) = serve(d.builder()).await;
    let claim = d.partner.svid("spiffe://example.org/ns/prod/sa/admin");
    refused(
        &acceptor,
        addr,
        &d.setup,
        &claim,
        HandshakeFailure::UnknownIssuer,
    )
    .await;
    // A partner CA that even copies our CA's name is still not our CA.
    let lookalike = Ca::root("example.org CA").svid("spiffe://example.org/ns/prod/sa/admin");
    refused(
        &acceptor,
        addr,
        &d.setup,
        &lookalike,
        HandshakeFailure::BadSignature,
    )
    .await;
    // The partner's own workloads get in, as the partner's.
    let api = d.partner.svid("spiffe://partner.example/api");
    let me = whoami_as(addr, &d.setup, &api)
        .await
        .expect("partner workload");
    assert_eq!(me["spiffe_id"], "spiffe://partner.example/api");
    assert_eq!(me["trust_bundle"], "partner.example");
    assert_eq!(me["spiffe_bundle"], true);
    assert_eq!(acceptor.stats().accepted, 1);

    // The same CAs as *client CA bundles* instead: the claim verifies (by the partner's CA),
    // and the principal says so, which is what a policy must then look at.
    let (_, addr) = serve(
        server_only(&d.setup)
            .client_ca_bundle("ours", d.ours.pem())
            .client_ca_bundle("partner", d.partner.pem()),
    )
    .await;
    let me = whoami_as(addr, &d.setup, &claim).await.expect("CA bundles");
    assert_eq!(me["spiffe_id"], "spiffe://example.org/ns/prod/sa/admin");
    assert_eq!(me["trust_bundle"], "partner");
    assert_eq!(me["spiffe_bundle"], false);
}

#[tokio::test]
async fn federation_works_both_ways() {
    let d = Domains::new();
    let ours = d.ours.svid("spiffe://example.org/web");
    let theirs = d.partner.svid("spiffe://partner.example/billing");
    // Our server (own trust domain first) and the partner's (its own first).
    let (a, at_ours) = serve(d.builder()).await;
    let (b, at_partner) = serve(
        server_only(&d.setup)
            .spiffe_bundle("partner.example", d.partner.pem())
            .spiffe_bundle("example.org", d.ours.pem()),
    )
    .await;
    for addr in [at_ours, at_partner] {
        let me = whoami_as(addr, &d.setup, &ours)
            .await
            .expect("our workload");
        assert_eq!(me["trust_bundle"], "example.org");
        assert_eq!(me["spiffe_id"], "spiffe://example.org/web");
        let me = whoami_as(addr, &d.setup, &theirs)
            .await
            .expect("partner workload");
        assert_eq!(me["trust_bundle"], "partner.example");
    }
    // Each trust domain's CA speaks for its own trust domain only, on both servers.
    let ours_claiming_theirs = d.ours.svid("spiffe://partner.example/billing");
    refused(
        &a,
        at_ours,
        &d.setup,
        &ours_claiming_theirs,
        HandshakeFailure::UnknownIssuer,
    )
    .await;
    refused(
        &b,
        at_partner,
        &d.setup,
        &ours_claiming_theirs,
        HandshakeFailure::UnknownIssuer,
    )
    .await;
}

#[tokio::test]
async fn same_subject_anchors_in_two_bundles_are_told_apart() {
    let setup = Setup::new();
    // Three roots with one subject DN (CN=shared root, O=tower-mtls demo), three keys.
    let corp = Ca::root("shared root");
    let partner = Ca::root("shared root");
    let forged = Ca::root("shared root");
    let alice = corp.client("alice", &["admins"]);
    let bob = partner.client("alice", &["admins"]); // the same names, the other CA
    let mallory = forged.client("alice", &["admins"]);
    let corp_first = server_only(&setup)
        .client_ca_bundle("corp", corp.pem())
        .client_ca_bundle("partner", partner.pem());
    let partner_first = server_only(&setup)
        .client_ca_bundle("partner", partner.pem())
        .client_ca_bundle("corp", corp.pem());
    for builder in [corp_first, partner_first] {
        let (acceptor, addr) = serve(builder).await;
        let a = whoami_as(addr, &setup, &alice).await.expect("alice");
        let b = whoami_as(addr, &setup, &bob).await.expect("bob");
        assert_eq!(a["subject"], b["subject"]);
        assert_eq!(a["issuer"], b["issuer"]);
        assert_eq!(a["trust_bundle"], "corp");
        assert_eq!(b["trust_bundle"], "partner");
        refused(
            &acceptor,
            addr,
            &setup,
            &mallory,
            HandshakeFailure::BadSignature,
        )
        .await;
    }
    // The unnamed bundle next to a named one.
    let (_, addr) = serve(
        server_only(&setup)
            .client_ca_pem(corp.pem())
            .client_ca_bundle("partner", partner.pem()),
    )
    .await;
    let a = whoami_as(addr, &setup, &alice).await.expect("alice");
    assert_eq!(a["trust_bundle"], Value::Null);
    let b = whoami_as(addr, &setup, &bob).await.expect("bob");
    assert_eq!(b["trust_bundle"], "partner");
}

#[tokio::test]
async fn a_sub_ca_copying_our_issuer_dn_stays_the_partners() {
    common::init_tracing();
    let setup = Setup::new();
    let corp = Ca::root("corp root");
    let issuing = corp.intermediate("issuing CA");
    let partner = Ca::root("partner root");
    // The partner mints a sub-CA whose subject is our issuing CA's subject, byte for byte.
    let copycat = partner.intermediate("issuing CA");
    let alice = issuing
        .client("alice", &["admins"])
        .with_intermediate(&issuing);
    let mallory = copycat
        .client("alice", &["admins"])
        .with_intermediate(&copycat);
    let builder = || {
        server_only(&setup)
            .client_ca_bundle("corp", corp.pem())
            .client_ca_bundle("partner", partner.pem())
    };

    let (_, addr) = serve(builder()).await;
    let a = whoami_as(addr, &setup, &alice).await.expect("alice");
    let m = whoami_as(addr, &setup, &mallory).await.expect("mallory");
    assert_eq!(a["issuer"], "CN=issuing CA,O=tower-mtls demo");
    assert_eq!(a["issuer"], m["issuer"]);
    assert_eq!(a["trust_bundle"], "corp");
    assert_eq!(m["trust_bundle"], "partner");

    // A policy that means "issued by our issuing CA" says so with the bundle.
    let rules = RuleSet::from_toml_str(
        r#"
        [[rule]]
        name = "corp admins"
        action = "allow"
        principal = { issuer = "CN=issuing CA,O=tower-mtls demo", trust_bundle = "corp", ou = "admins" }
        "#,
    )
    .unwrap();
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(rules))
        .service_fn(whoami);
    let acceptor = MtlsAcceptor::new(builder().build().unwrap());
    let (addr, _server) = start_acceptor(acceptor, service).await;
    let status = |who: &Identity| {
        let config = setup.client(Some(who));
        async move { client::get_once(addr, config, "/").await.unwrap().status }
    };
    assert_eq!(status(&alice).await, StatusCode::OK);
    assert_eq!(status(&mallory).await, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn svid_rules_are_enforced_in_spiffe_mode() {
    let d = Domains::new();
    let (acceptor, addr) = serve(d.builder()).await;
    let mut two_uris = svid_params("spiffe://example.org/a");
    two_uris
        .subject_alt_names
        .push(SanType::URI("spiffe://example.org/b".try_into().unwrap()));
    let two_uris = d.ours.issue(two_uris);
    refused(
        &acceptor,
        addr,
        &d.setup,
        &two_uris,
        HandshakeFailure::InvalidSvid,
    )
    .await;

    let mut ca_leaf = svid_params("spiffe://example.org/a");
    ca_leaf.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_leaf = d.ours.issue(ca_leaf);
    refused(
        &acceptor,
        addr,
        &d.setup,
        &ca_leaf,
        HandshakeFailure::InvalidSvid,
    )
    .await;

    let mut no_path = svid_params("spiffe://example.org");
    no_path.subject_alt_names = vec![SanType::URI("spiffe://example.org".try_into().unwrap())];
    let no_path = d.ours.issue(no_path);
    refused(
        &acceptor,
        addr,
        &d.setup,
        &no_path,
        HandshakeFailure::InvalidSvid,
    )
    .await;

    let mut upper = svid_params("spiffe://example.org/a");
    upper.subject_alt_names = vec![SanType::URI("SPIFFE://example.org/a".try_into().unwrap())];
    let upper = d.ours.issue(upper);
    refused(
        &acceptor,
        addr,
        &d.setup,
        &upper,
        HandshakeFailure::InvalidSvid,
    )
    .await;

    assert_eq!(acceptor.stats().accepted, 0);
    assert_eq!(acceptor.stats().total_rejected(), 4);
}

#[tokio::test]
async fn a_spiffe_id_of_an_unconfigured_trust_domain_is_refused() {
    let d = Domains::new();
    let (acceptor, addr) = serve(d.builder()).await;
    let stranger = Ca::root("elsewhere CA").svid("spiffe://elsewhere.example/x");
    refused(
        &acceptor,
        addr,
        &d.setup,
        &stranger,
        HandshakeFailure::UnknownTrustDomain,
    )
    .await;
    // Even a CA we trust cannot vouch for a trust domain we have no bundle for.
    let ours = d.ours.svid("spiffe://elsewhere.example/x");
    refused(
        &acceptor,
        addr,
        &d.setup,
        &ours,
        HandshakeFailure::UnknownTrustDomain,
    )
    .await;
}

#[tokio::test]
async fn a_certificate_without_a_spiffe_id_needs_a_client_ca_bundle() {
    let d = Domains::new();
    let plain = d.ours.client("alice", &["admins"]);
    let (acceptor, addr) = serve(d.builder()).await;
    refused(
        &acceptor,
        addr,
        &d.setup,
        &plain,
        HandshakeFailure::NoSpiffeId,
    )
    .await;

    let (acceptor, addr) = serve(d.builder().client_ca_pem(d.setup.ca.pem())).await;
    // A client CA bundle speaks for certificates without a SPIFFE ID only ...
    let staff = d.setup.ca.client("bob", &["users"]);
    let me = whoami_as(addr, &d.setup, &staff).await.expect("client CA");
    assert_eq!(me["trust_bundle"], Value::Null);
    // ... and its CA cannot issue SVIDs; neither can a SPIFFE CA issue plain certificates.
    let svid_from_ca = d.setup.ca.svid("spiffe://example.org/web");
    refused(
        &acceptor,
        addr,
        &d.setup,
        &svid_from_ca,
        HandshakeFailure::UnknownIssuer,
    )
    .await;
    refused(
        &acceptor,
        addr,
        &d.setup,
        &plain,
        HandshakeFailure::UnknownIssuer,
    )
    .await;
}

#[tokio::test]
async fn crls_apply_to_every_bundle() {
    let d = Domains::new();
    let web = d.ours.svid("spiffe://example.org/web");
    let billing = d.partner.svid("spiffe://partner.example/billing");
    let shop = d.partner.svid("spiffe://partner.example/shop");
    let staff = d.setup.ca.client("bob", &[]);
    let gone = d.setup.ca.client("carol", &[]);
    let builder = d
        .builder()
        .client_ca_bundle("staff", d.setup.ca.pem())
        .crl_pem(d.ours.crl(&[]))
        .crl_pem(d.partner.crl(&[&billing]))
        .crl_pem(d.setup.ca.crl(&[&gone]));
    let (acceptor, addr) = serve(builder).await;
    assert!(whoami_as(addr, &d.setup, &web).await.is_some());
    assert!(whoami_as(addr, &d.setup, &shop).await.is_some());
    assert!(whoami_as(addr, &d.setup, &staff).await.is_some());
    refused(
        &acceptor,
        addr,
        &d.setup,
        &billing,
        HandshakeFailure::Revoked,
    )
    .await;
    refused(&acceptor, addr, &d.setup, &gone, HandshakeFailure::Revoked).await;
    // No CRL for a bundle's CA: its certificates' status is unknown, refused by default.
    let (acceptor, addr) = serve(d.builder().crl_pem(d.ours.crl(&[]))).await;
    refused(
        &acceptor,
        addr,
        &d.setup,
        &shop,
        HandshakeFailure::UnknownRevocationStatus,
    )
    .await;
}

/// One client process (its own TLS 1.3 session cache): whether the next connection resumed,
/// and as which bundle; `None` when it failed.
async fn session(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> Option<(bool, Value)> {
    let reply = client::get_once(addr, config.clone(), "/").await.ok()?;
    let me = json(&reply);
    Some((me["resumed"].as_bool()?, me["trust_bundle"].clone()))
}

#[tokio::test]
async fn reloading_another_bundle_set_rechecks_connections_and_sessions() {
    let d = Domains::new();
    let web = d.ours.svid("spiffe://example.org/web");
    let billing = d.partner.svid("spiffe://partner.example/billing");
    let staff = d.setup.ca.client("bob", &[]);
    let with_corp = |name: &str| d.builder().client_ca_bundle(name, d.setup.ca.pem());
    let (acceptor, addr) = serve(with_corp("corp")).await;

    let mut web_conn = client::http2(addr, d.setup.client(Some(&web)))
        .await
        .unwrap();
    let mut billing_conn = client::http1(addr, d.setup.client_h1(Some(&billing)))
        .await
        .unwrap();
    let mut staff_conn = client::http2(addr, d.setup.client(Some(&staff)))
        .await
        .unwrap();
    for (who, status) in [
        ("web", client::status2(&mut web_conn, "/").await),
        ("billing", client::status1(&mut billing_conn, "/").await),
        ("staff", client::status2(&mut staff_conn, "/").await),
    ] {
        assert_eq!(status.unwrap(), StatusCode::OK, "{who}");
    }
    let billing_sessions = d.setup.client_versions(Some(&billing), &[TLS13]);
    let staff_sessions = d.setup.client_versions(Some(&staff), &[TLS13]);
    assert_eq!(
        session(addr, &billing_sessions).await,
        Some((false, "partner.example".into()))
    );
    assert_eq!(
        session(addr, &billing_sessions).await,
        Some((true, "partner.example".into()))
    );
    assert_eq!(
        session(addr, &staff_sessions).await,
        Some((false, "corp".into()))
    );

    // Federation with the partner ends, and the corp bundle is renamed.
    acceptor
        .reload_from(
            &server_only(&d.setup)
                .spiffe_bundle("example.org", d.ours.pem())
                .client_ca_bundle("corp-2025", d.setup.ca.pem()),
        )
        .unwrap();
    assert_eq!(
        client::status2(&mut web_conn, "/").await.unwrap(),
        StatusCode::OK
    );
    // Refused until the server closes them (open connections are re-checked after a reload).
    let refused_or_closed = |result: Result<StatusCode, _>, why: &str| match result {
        Ok(status) => assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}"),
        Err(_closed) => {}
    };
    refused_or_closed(
        client::status1(&mut billing_conn, "/").await,
        "the partner's trust domain is gone",
    );
    refused_or_closed(
        client::status2(&mut staff_conn, "/").await,
        "a policy about bundle \"corp\" saw this connection; it is not in \"corp\" any more",
    );
    assert_eq!(
        session(addr, &billing_sessions).await,
        None,
        "a partner session resumed"
    );
    expect_rejected(&acceptor, HandshakeFailure::ResumptionRevoked).await;
    assert_eq!(
        session(addr, &staff_sessions).await,
        Some((true, "corp-2025".into())),
        "a resumed session is verified again, as the new bundle"
    );
    refused(
        &acceptor,
        addr,
        &d.setup,
        &billing,
        HandshakeFailure::UnknownTrustDomain,
    )
    .await;
}

#[test]
fn bundle_configurations_that_cannot_mean_one_thing_are_refused() {
    let d = Domains::new();
    let err = |builder: MtlsConfigBuilder| builder.build().expect_err("refused").to_string();
    assert!(
        err(d
            .builder()
            .client_ca_bundle("example.org", d.setup.ca.pem()))
        .contains("namespace")
    );
    assert!(
        err(server_only(&d.setup)
            .client_ca_bundle("a", d.ours.pem())
            .client_ca_bundle("b", d.ours.pem()))
        .contains("same CA")
    );
    assert!(
        err(server_only(&d.setup).client_ca_bundle("a b", d.ours.pem())).contains("bundle name")
    );
    assert!(
        err(server_only(&d.setup).spiffe_bundle("Example.org", d.ours.pem()))
            .contains("trust domain")
    );
    assert!(
        err(server_only(&d.setup).spiffe_bundle("spiffe://example.org", d.ours.pem()))
            .contains("trust domain")
    );
    let leaf = d.ours.svid("spiffe://example.org/x");
    assert!(
        err(server_only(&d.setup).spiffe_bundle("example.org", leaf.chain_pem()))
            .contains("not a CA")
    );
    assert!(err(server_only(&d.setup)).contains("no client CA bundle"));
    // The same CA in the unnamed bundle twice, or in two trust domains' bundles, is fine.
    server_only(&d.setup)
        .client_ca_pem(d.ours.pem())
        .client_ca_pem(d.ours.pem())
        .spiffe_bundle("example.org", d.ours.pem())
        .spiffe_bundle("also.example", d.ours.pem())
        .build()
        .unwrap();
}

/// What a Workload API source does with each update: DER material in, an atomic reload out.
#[tokio::test]
async fn a_snapshot_from_der_material_reloads_like_one_from_files() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};

    let d = Domains::new();
    let web = d.ours.svid("spiffe://example.org/web");
    let billing = d.partner.svid("spiffe://partner.example/billing");
    let (acceptor, addr) =
        serve(server_only(&d.setup).spiffe_bundle("example.org", d.ours.pem())).await;
    refused(
        &acceptor,
        addr,
        &d.setup,
        &billing,
        HandshakeFailure::UnknownTrustDomain,
    )
    .await;

    let der_crl =
        |pem: String| CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap();
    let from_der = |crls: Vec<CertificateRevocationListDer<'static>>| {
        MtlsConfig::builder()
            .server_cert_der(d.setup.server.chain.clone())
            .server_key_der(d.setup.server.key())
            .spiffe_bundle_der("example.org", vec![d.ours.der().clone()])
            .spiffe_bundle_der("partner.example", vec![d.partner.der().clone()])
            .crl_der(crls)
    };
    acceptor
        .reload_from(&from_der(vec![
            der_crl(d.ours.crl(&[&web])),
            der_crl(d.partner.crl(&[])),
        ]))
        .unwrap();
    let me = whoami_as(addr, &d.setup, &billing)
        .await
        .expect("federated now");
    assert_eq!(me["trust_bundle"], "partner.example");
    refused(&acceptor, addr, &d.setup, &web, HandshakeFailure::Revoked).await;
    // No CRLs this time: nothing is revoked.
    acceptor.reload_from(&from_der(Vec::new())).unwrap();
    assert!(whoami_as(addr, &d.setup, &web).await.is_some());

    // Bad material is refused, and the snapshot in force stays.
    let empty = from_der(Vec::new()).spiffe_bundle_der("other.example", Vec::new());
    assert!(acceptor.reload_from(&empty).is_err());
    let junk = from_der(Vec::new()).spiffe_bundle_der(
        "other.example",
        vec![CertificateDer::from(vec![0x30, 0x00])],
    );
    assert!(
        acceptor
            .reload_from(&junk)
            .unwrap_err()
            .to_string()
            .contains("SPIFFE bundle")
    );
    let leaf_as_ca = from_der(Vec::new()).spiffe_bundle_der("other.example", web.chain.clone());
    assert!(
        acceptor
            .reload_from(&leaf_as_ca)
            .unwrap_err()
            .to_string()
            .contains("not a CA")
    );
    assert_eq!(acceptor.generation(), 2);
    assert!(whoami_as(addr, &d.setup, &billing).await.is_some());
}
