//! The metrics contract (feature `metrics`), with a recorder installed: real handshakes and
//! requests over TLS on 127.0.0.1 move exactly the counters, gauges and histogram they should.
//!
//! Each test runs its server and clients on one current-thread runtime inside
//! `metrics::with_local_recorder`, so its recorder sees only its own traffic.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use common::{Setup, client, expect_rejected};
use http::StatusCode;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower_mtls::authorize::{Matcher, PathPattern, Rule, RuleSet, Shadow};
use tower_mtls::tls::{ClientAuth, HandshakeFailure};
use tower_mtls::{AllowAnyVerified, MtlsAcceptor, MtlsAuthLayer};

/// What the recorder holds: `name{label=value,...}` → value (histograms: the sample count).
type Recorded = BTreeMap<String, f64>;

fn run<F: Future<Output = ()>>(test: impl FnOnce() -> F) -> Recorded {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || runtime.block_on(test()));
    // Once, at the end: the debugging recorder resets what it hands out.
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            let value = match value {
                DebugValue::Counter(n) => n as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(samples) => samples.len() as f64,
            };
            (name, value)
        })
        .collect()
}

fn get(recorded: &Recorded, series: &str) -> f64 {
    recorded.get(series).copied().unwrap_or(0.0)
}

#[test]
fn handshakes_by_result_kind_and_cause_and_the_gauges() {
    let recorded = run(|| async {
        let setup = Setup::new();
        let alice = setup.ca.client("alice", &[]);
        let stranger = common::pki::Ca::root("other CA").client("mallory", &[]);
        let mut expired_params = common::pki::client_params("old", &[]);
        expired_params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(10);
        expired_params.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        let expired = setup.ca.issue(expired_params);
        let acceptor = MtlsAcceptor::new(setup.config(ClientAuth::Required));
        let addr = common::start_whoami(acceptor.clone()).await;

        // Two full handshakes and one resumption (the second connection of one client config).
        let config = setup.client(Some(&alice));
        for _ in 0..2 {
            assert!(client::get_once(addr, config.clone(), "/").await.is_ok());
        }
        assert!(
            client::get_once(addr, setup.client(Some(&alice)), "/")
                .await
                .is_ok()
        );
        // Refused: an unknown issuer twice, no certificate, an expired one.
        for _ in 0..2 {
            assert!(
                client::get_once(addr, setup.client(Some(&stranger)), "/")
                    .await
                    .is_err()
            );
        }
        assert!(
            client::get_once(addr, setup.client(None), "/")
                .await
                .is_err()
        );
        assert!(
            client::get_once(addr, setup.client(Some(&expired)), "/")
                .await
                .is_err()
        );
        expect_rejected(&acceptor, HandshakeFailure::Expired).await;
        expect_rejected(&acceptor, HandshakeFailure::NoCertificate).await;
        // Every connection has closed by now.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while acceptor.stats().open_connections > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "connections still open"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert_eq!(
        get(
            &recorded,
            "tower_mtls_handshakes_total{kind=full,result=ok}"
        ),
        2.0,
        "{recorded:#?}"
    );
    assert_eq!(
        get(
            &recorded,
            "tower_mtls_handshakes_total{kind=resumed,result=ok}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &recorded,
            "tower_mtls_handshakes_total{kind=full,result=failed}"
        ),
        4.0
    );
    assert_eq!(
        get(
            &recorded,
            "tower_mtls_handshake_failures_total{cause=unknown_issuer}"
        ),
        2.0
    );
    assert_eq!(
        get(
            &recorded,
            "tower_mtls_handshake_failures_total{cause=no_certificate}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &recorded,
            "tower_mtls_handshake_failures_total{cause=expired}"
        ),
        1.0
    );
    // One sample per full handshake with a certificate.
    assert_eq!(
        get(&recorded, "tower_mtls_client_cert_remaining_seconds{}"),
        2.0
    );
    // Up and down again.
    assert_eq!(get(&recorded, "tower_mtls_open_connections{}"), 0.0);
    assert_eq!(get(&recorded, "tower_mtls_handshakes_in_flight{}"), 0.0);
    assert!(
        get(
            &recorded,
            "tower_mtls_server_cert_expiry_timestamp_seconds{}"
        ) > 1.0e9
    );
}

#[test]
fn requests_and_policy_decisions_by_rule() {
    let recorded = run(|| async {
        let setup = Setup::new();
        let admin = setup.ca.client("root", &["admins"]);
        let user = setup.ca.client("bob", &["users"]);
        let rules = RuleSet::new([
            Rule::allow("admins")
                .path(PathPattern::prefix("/admin").unwrap())
                .principal(Matcher::organizational_unit("admins")),
            Rule::allow("public").path(PathPattern::exact("/").unwrap()),
        ])
        .unwrap();
        // The shadow would let nobody into /admin.
        let candidate =
            RuleSet::new([Rule::allow("public").path(PathPattern::exact("/").unwrap())]).unwrap();
        let service = tower::ServiceBuilder::new()
            .layer(MtlsAuthLayer::new(Shadow::new(rules, candidate)))
            .service_fn(common::whoami);
        let acceptor = MtlsAcceptor::new(setup.config(ClientAuth::Optional));
        let (addr, _server) = common::start_acceptor(acceptor, service).await;

        let mut admin_conn = client::http1(addr, setup.client_h1(Some(&admin)))
            .await
            .unwrap();
        let mut user_conn = client::http1(addr, setup.client_h1(Some(&user)))
            .await
            .unwrap();
        let mut anonymous = client::http1(addr, setup.client_h1(None)).await.unwrap();
        let status = async |c: &mut _, path: &str| client::status1(c, path).await.unwrap();
        assert_eq!(status(&mut admin_conn, "/admin").await, StatusCode::OK);
        assert_eq!(status(&mut admin_conn, "/admin/x").await, StatusCode::OK);
        assert_eq!(status(&mut admin_conn, "/").await, StatusCode::OK);
        assert_eq!(
            status(&mut user_conn, "/admin").await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status(&mut user_conn, "/nowhere").await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status(&mut user_conn, "//admin").await,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(status(&mut anonymous, "/").await, StatusCode::UNAUTHORIZED);
    });
    assert_eq!(
        get(&recorded, "tower_mtls_requests_total{decision=allowed}"),
        3.0,
        "{recorded:#?}"
    );
    assert_eq!(
        get(&recorded, "tower_mtls_requests_total{decision=denied}"),
        2.0
    );
    assert_eq!(
        get(&recorded, "tower_mtls_requests_total{decision=bad_request}"),
        1.0
    );
    assert_eq!(
        get(
            &recorded,
            "tower_mtls_requests_total{decision=unauthenticated}"
        ),
        1.0
    );
    // The enforcing set and the shadow both decide every authorized request (6 in all).
    assert_eq!(
        get(
            &recorded,
            "tower_mtls_authz_decisions_total{decision=allow,rule=admins}"
        ),
        2.0
    );
    assert_eq!(
        get(
            &recorded,
            "tower_mtls_authz_decisions_total{decision=allow,rule=public}"
        ),
        2.0
    );
    assert_eq!(
        get(
            &recorded,
            "tower_mtls_authz_decisions_total{decision=deny,rule=default}"
        ),
        6.0
    );
    // The shadow disagreed on alice's two /admin requests, denying them by default.
    assert_eq!(
        get(
            &recorded,
            "tower_mtls_shadow_disagreements_total{rule=default}"
        ),
        2.0
    );
}

#[test]
fn reloads_by_source_and_result() {
    let recorded = run(|| async {
        let setup = Setup::new();
        let acceptor = MtlsAcceptor::new(setup.config(ClientAuth::Required));
        acceptor.reload(setup.config(ClientAuth::Required));
        acceptor.reload_from(&setup.builder()).unwrap();
        let broken = setup.builder().client_ca_pem("not a certificate");
        assert!(acceptor.reload_from(&broken).is_err());

        // The file watcher.
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, setup.ca.pem()).unwrap();
        let builder = tower_mtls::MtlsConfig::builder()
            .server_cert_pem(setup.server.chain_pem())
            .server_key_pem(setup.server.key_pem.clone())
            .client_ca_pem_file(&ca_file);
        let _watcher = acceptor.watch_files(builder, Duration::from_millis(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let generation = acceptor.generation();
        std::fs::write(
            &ca_file,
            format!("{}{}", setup.ca.pem(), common::pki::Ca::root("x").pem()),
        )
        .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while acceptor.generation() == generation {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the file change was not reloaded"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert_eq!(
        get(
            &recorded,
            "tower_mtls_reloads_total{result=applied,source=manual}"
        ),
        2.0,
        "{recorded:#?}"
    );
    assert_eq!(
        get(
            &recorded,
            "tower_mtls_reloads_total{result=refused,source=manual}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &recorded,
            "tower_mtls_reloads_total{result=applied,source=files}"
        ),
        1.0
    );
}

#[test]
fn connections_shed_by_cause() {
    let recorded = run(|| async {
        let setup = Setup::new();
        let acceptor = MtlsAcceptor::new(setup.config(ClientAuth::Required));
        let listener = tower_mtls::MtlsListener::builder(acceptor.clone())
            .max_connections_per_ip(1)
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let addr = listener.local_addr();
        let service = tower::ServiceBuilder::new()
            .layer(MtlsAuthLayer::new(AllowAnyVerified))
            .service_fn(common::whoami);
        tokio::spawn(tower_mtls::hyper::serve(listener, service));
        let alice = setup.ca.client("alice", &[]);
        let mut held = client::http1(addr, setup.client_h1(Some(&alice)))
            .await
            .unwrap();
        assert_eq!(
            client::status1(&mut held, "/").await.unwrap(),
            StatusCode::OK
        );
        // A second connection from the same address is over the cap.
        let second = client::get_once(addr, setup.client_h1(Some(&alice)), "/").await;
        assert!(second.is_err(), "{second:?}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while acceptor
            .stats()
            .shed(tower_mtls::tls::ShedCause::ConnectionsPerIp)
            == 0
        {
            assert!(tokio::time::Instant::now() < deadline, "nothing was shed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(held);
    });
    assert_eq!(
        get(
            &recorded,
            "tower_mtls_connections_shed_total{cause=connections_per_ip}"
        ),
        1.0,
        "{recorded:#?}"
    );
}

/// Every handshake failure cause and every shed cause has a stable snake_case label.
#[test]
fn labels_are_snake_case_and_distinct() {
    let mut seen = std::collections::BTreeSet::new();
    for cause in HandshakeFailure::ALL {
        let label = cause.label();
        assert!(
            label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{label}"
        );
        assert!(seen.insert(label), "{label} twice");
    }
    for cause in tower_mtls::tls::ShedCause::ALL {
        let label = cause.label();
        assert!(
            label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{label}"
        );
    }
    assert_eq!(HandshakeFailure::BadKeyUsage.label(), "bad_eku");
    assert_eq!(HandshakeFailure::CaUsedAsLeaf.label(), "ca_as_leaf");
}

#[test]
fn forwarded_identities_are_verified_once_per_connection_and_refusals_counted() {
    use tower_mtls::forwarded::{ForwardedCertFormat, TrustedProxies};
    let recorded = run(|| async {
        let setup = Setup::new();
        let proxy = setup.ca.client("edge-proxy", &[]);
        let alice = setup.ca.client("alice", &[]);
        let bob = setup.ca.client("bob", &[]);
        let stranger = common::pki::Ca::root("other CA").client("mallory", &[]);
        let acceptor = MtlsAcceptor::new(setup.config(ClientAuth::Required)).trusted_proxies(
            TrustedProxies::new(ForwardedCertFormat::Haproxy)
                .proxy(Matcher::common_name("edge-proxy")),
        );
        let addr = common::start_whoami(acceptor).await;
        let header = |who: &common::pki::Identity| common::forwarded_values::haproxy(&who.chain[0]);
        let request = |value: Option<String>| {
            let mut request = client::get("/");
            if let Some(value) = value {
                request
                    .headers_mut()
                    .insert("x-ssl-client-cert", value.parse().unwrap());
            }
            request
        };
        let mut via_proxy = client::http2(addr, setup.client(Some(&proxy)))
            .await
            .unwrap();
        // 20 requests for alice and 5 for bob on one connection: two verifications.
        for who in std::iter::repeat_n(&alice, 20).chain(std::iter::repeat_n(&bob, 5)) {
            let reply = client::send2(&mut via_proxy, request(Some(header(who))))
                .await
                .unwrap();
            assert_eq!(reply.status, StatusCode::OK);
        }
        // A stranger twice (verified once, then the refusal is remembered), nothing, garbage.
        for value in [
            Some(header(&stranger)),
            Some(header(&stranger)),
            None,
            Some("%%%".to_owned()),
        ] {
            let reply = client::send2(&mut via_proxy, request(value)).await.unwrap();
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        }
        // A direct client's header is removed, three times.
        let mut direct = client::http2(addr, setup.client(Some(&bob))).await.unwrap();
        for _ in 0..3 {
            let reply = client::send2(&mut direct, request(Some(header(&alice))))
                .await
                .unwrap();
            assert_eq!(reply.status, StatusCode::OK);
        }
    });
    let at = |series: &str| get(&recorded, series);
    assert_eq!(
        at("tower_mtls_forwarded_verifications_total{result=ok}"),
        2.0,
        "{recorded:#?}"
    );
    assert_eq!(
        at("tower_mtls_forwarded_verifications_total{result=failed}"),
        1.0
    );
    assert_eq!(
        at("tower_mtls_forwarded_failures_total{cause=unknown_issuer}"),
        2.0
    );
    assert_eq!(
        at("tower_mtls_forwarded_failures_total{cause=forwarded_cert_missing}"),
        1.0
    );
    assert_eq!(
        at("tower_mtls_forwarded_failures_total{cause=forwarded_cert_malformed}"),
        1.0
    );
    assert_eq!(at("tower_mtls_forwarded_headers_removed_total{}"), 3.0);
    assert_eq!(
        at("tower_mtls_requests_total{decision=unauthenticated}"),
        4.0
    );
}
