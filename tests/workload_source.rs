//! The Workload API as the source of a server's identity and bundles, over real sockets: the
//! fake agent on a Unix socket, the acceptor reloaded by `WorkloadApiSource`, real mTLS
//! clients on 127.0.0.1.
#![cfg(unix)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{client, pki};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;
use tower_mtls::tls::HandshakeFailure;
use tower_mtls::workload_api::fake::{FakeSvid, FakeWorkloadApi};
use tower_mtls::workload_api::{
    Backoff, SourceError, StreamError, WorkloadApiClient, WorkloadApiSource,
};
use tower_mtls::{MtlsAcceptor, MtlsConfig};

const WAIT: Duration = Duration::from_secs(10);

/// A client that retries quickly, for tests.
fn fast(agent: &FakeWorkloadApi) -> WorkloadApiClient {
    WorkloadApiClient::new(agent.endpoint())
        .backoff(Backoff::new(
            Duration::from_millis(5),
            Duration::from_millis(50),
        ))
        .connect_timeout(Duration::from_secs(2))
}

/// The server's SVID: `spiffe://example.org/server`, also valid for `localhost` so that the
/// test clients' ordinary server-name check passes.
fn server_svid(ca: &pki::Ca, not_after: OffsetDateTime) -> pki::Identity {
    let mut params = pki::server_svid_params("spiffe://example.org/server");
    params.not_after = not_after;
    ca.issue(params)
}

fn in_an_hour() -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::hours(1)
}

fn svid(identity: &pki::Identity) -> FakeSvid {
    FakeSvid::new(
        "spiffe://example.org/server",
        &identity.chain,
        &identity.key(),
    )
}

/// An agent on a Unix socket in `dir`, serving `server` and the bundle `cas` for example.org.
async fn agent(
    dir: &tempfile::TempDir,
    server: &pki::Identity,
    cas: &[&pki::Ca],
) -> FakeWorkloadApi {
    let agent = FakeWorkloadApi::unix(dir.path().join("agent.sock"))
        .await
        .expect("fake agent");
    let bundle: Vec<CertificateDer<'static>> = cas.iter().map(|ca| ca.der().clone()).collect();
    agent.update(|state| {
        state
            .set_svids(vec![svid(server)])
            .set_bundle("example.org", &bundle);
    });
    agent
}

/// A client of example.org that trusts `server_cas` for the server's certificate.
fn workload(ca: &pki::Ca, path: &str, server_cas: &[&pki::Ca]) -> Arc<rustls::ClientConfig> {
    let me = ca.svid(&format!("spiffe://example.org{path}"));
    let mut roots = rustls::RootCertStore::empty();
    for ca in server_cas {
        roots.add(ca.der().clone()).unwrap();
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(tower_mtls::tls::crypto_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(me.chain.clone(), me.key())
            .unwrap();
    Arc::new(config)
}

/// The serial of the certificate the server presents to a fresh connection.
async fn served_serial(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) -> Vec<u8> {
    let tls = client::connect(addr, config).await.expect("handshake");
    let (_, conn) = tls.get_ref();
    let leaf = &conn.peer_certificates().expect("server chain")[0];
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).expect("server certificate");
    cert.raw_serial().to_vec()
}

fn serial_of(identity: &pki::Identity) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(&identity.chain[0]).unwrap();
    cert.raw_serial().to_vec()
}

async fn start(
    agent: &FakeWorkloadApi,
) -> (
    MtlsAcceptor,
    tower_mtls::workload_api::WorkloadApiWatcher,
    std::net::SocketAddr,
) {
    let (source, config) = WorkloadApiSource::connect(fast(agent), MtlsConfig::builder(), WAIT)
        .await
        .expect("first SVID");
    let acceptor = MtlsAcceptor::new(config);
    let watcher = source.follow(&acceptor);
    let addr = common::start_whoami(acceptor.clone()).await;
    (acceptor, watcher, addr)
}

/// Polls `condition` every 20 ms for up to 10 s.
async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_first_svid_serves_and_clients_are_bound_to_the_trust_domain() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Ca::root("example.org CA");
    let server = server_svid(&ca, in_an_hour());
    let agent = agent(&dir, &server, &[&ca]).await;
    let (_acceptor, _watcher, addr) = start(&agent).await;

    assert_eq!(
        served_serial(addr, workload(&ca, "/api", &[&ca])).await,
        serial_of(&server)
    );
    let reply = client::get_once(addr, workload(&ca, "/api", &[&ca]), "/")
        .await
        .expect("request");
    let me = common::json(&reply);
    assert_eq!(me["spiffe_id"], "spiffe://example.org/api");
    assert_eq!(me["trust_bundle"], "example.org");

    // Another CA's certificate claiming example.org is refused at the handshake.
    let impostor = pki::Ca::root("example.org CA");
    assert!(
        client::get_once(addr, workload(&impostor, "/api", &[&ca]), "/")
            .await
            .is_err()
    );
}

/// Every second for four seconds the agent rotates the server's SVID and adds a CA to the
/// bundle, while four clients send requests on keep-alive connections and on fresh ones: no
/// request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_fails_no_request() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let cas: Vec<pki::Ca> = (0..5)
        .map(|i| pki::Ca::root(&format!("example.org CA {i}")))
        .collect();
    let all_cas: Vec<&pki::Ca> = cas.iter().collect();
    let first = server_svid(&cas[0], in_an_hour());
    let agent = agent(&dir, &first, &[&cas[0]]).await;
    let (_acceptor, watcher, addr) = start(&agent).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for n in 0..4 {
        // Each client's own certificate is from the first CA, which every bundle keeps.
        let config = workload(&cas[0], &format!("/client{n}"), &all_cas);
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut sent = 0u32;
            while !stop.load(Ordering::Relaxed)
                && sent < 20_000
                && started.elapsed() < Duration::from_secs(20)
            {
                // A fresh connection every 25 requests: handshakes during rotations too.
                let result: Result<(), client::BoxError> = async {
                    let mut sender = client::http1(addr, config.clone()).await?;
                    for _ in 0..25 {
                        let status = client::status1(&mut sender, "/").await?;
                        if status != http::StatusCode::OK {
                            return Err(format!("status {status}").into());
                        }
                        sent += 1;
                    }
                    Ok(())
                }
                .await;
                match result {
                    Ok(()) => ok.fetch_add(25, Ordering::Relaxed),
                    Err(error) => {
                        eprintln!("client {n}: {error}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    let mut last = first;
    for round in 1..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        last = server_svid(&cas[round], in_an_hour());
        let bundle: Vec<CertificateDer<'static>> =
            cas[..=round].iter().map(|ca| ca.der().clone()).collect();
        let next = svid(&last);
        agent.update(|state| {
            state
                .set_svids(vec![next])
                .set_bundle("example.org", &bundle);
        });
    }
    eventually("the last rotation to be applied", async || {
        watcher.stats().applied >= 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in clients {
        task.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "failed requests");
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "too few requests to show anything"
    );
    assert_eq!(watcher.stats().refused, 0);
    assert_eq!(
        served_serial(addr, workload(&cas[0], "/api", &all_cas)).await,
        serial_of(&last)
    );
}

#[tokio::test]
async fn an_agent_restart_keeps_serving_then_applies_the_new_svid() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Ca::root("example.org CA");
    let first = server_svid(&ca, in_an_hour());
    let agent = agent(&dir, &first, &[&ca]).await;
    let (_acceptor, watcher, addr) = start(&agent).await;
    let config = workload(&ca, "/api", &[&ca]);

    agent.stop().await;
    eventually("the broken stream to be seen", async || {
        watcher.stats().disconnects > 0
    })
    .await;
    // The last good material stays while the SVID is valid.
    assert_eq!(served_serial(addr, config.clone()).await, serial_of(&first));

    let second = server_svid(&ca, in_an_hour());
    let next = svid(&second);
    agent.update(|state| {
        state.set_svids(vec![next]);
    });
    agent.restart().await.expect("restart");
    let want = serial_of(&second);
    eventually("the new SVID to be served", async || {
        served_serial(addr, config.clone()).await == want
    })
    .await;
}

#[tokio::test]
async fn a_removed_federated_bundle_refuses_its_clients() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Ca::root("example.org CA");
    let partner = pki::Ca::root("partner.org CA");
    let server = server_svid(&ca, in_an_hour());
    let agent = agent(&dir, &server, &[&ca]).await;
    agent.set_bundle("partner.org", &[partner.der().clone()]);
    // Set before the source connects: the first material holds both bundles.
    let (acceptor, watcher, addr) = start(&agent).await;

    // A new client configuration each time: no session to resume.
    let partner_client = || {
        let me = partner.svid("spiffe://partner.org/billing");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                tower_mtls::tls::crypto_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(me.chain.clone(), me.key())
            .unwrap(),
        )
    };
    let resuming = partner_client();
    let reply = client::get_once(addr, resuming.clone(), "/")
        .await
        .expect("partner");
    assert_eq!(common::json(&reply)["trust_bundle"], "partner.org");
    let mut open = client::http1(addr, partner_client())
        .await
        .expect("open connection");
    assert_eq!(
        client::status1(&mut open, "/").await.unwrap(),
        http::StatusCode::OK
    );

    let applied = watcher.stats().applied;
    agent.remove_bundle("partner.org");
    eventually("the removal to be applied", async || {
        watcher.stats().applied > applied
    })
    .await;

    assert!(
        client::get_once(addr, partner_client(), "/").await.is_err(),
        "new partner handshakes fail"
    );
    common::expect_rejected(&acceptor, HandshakeFailure::UnknownTrustDomain).await;
    assert!(
        client::get_once(addr, resuming, "/").await.is_err(),
        "and cannot resume"
    );
    common::expect_rejected(&acceptor, HandshakeFailure::ResumptionRevoked).await;
    // The connection that was already open no longer verifies.
    match client::status1(&mut open, "/").await {
        Ok(status) => assert_eq!(status, http::StatusCode::UNAUTHORIZED),
        Err(_closed) => {}
    }
    // example.org clients are unaffected.
    assert!(
        client::get_once(addr, workload(&ca, "/api", &[&ca]), "/")
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn an_expired_svid_without_a_replacement_fails_closed() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Ca::root("example.org CA");
    // X.509 times have whole seconds: two to three seconds from now.
    let expires = OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let server = server_svid(&ca, expires);
    let agent = agent(&dir, &server, &[&ca]).await;
    let (acceptor, _watcher, addr) = start(&agent).await;
    let config = workload(&ca, "/api", &[&ca]);
    assert!(client::get_once(addr, config.clone(), "/").await.is_ok());

    agent.stop().await;
    let wait = (expires - OffsetDateTime::now_utc()).unsigned_abs() + Duration::from_millis(1200);
    tokio::time::sleep(wait).await;
    assert!(client::get_once(addr, config, "/").await.is_err());
    common::expect_rejected(&acceptor, HandshakeFailure::ServerCertificateExpired).await;
}

#[tokio::test]
async fn no_agent_times_out_with_the_last_failure() {
    let dir = tempfile::tempdir().unwrap();
    let client = WorkloadApiClient::new(
        format!("unix://{}", dir.path().join("nobody.sock").display())
            .parse()
            .unwrap(),
    )
    .backoff(Backoff::new(
        Duration::from_millis(5),
        Duration::from_millis(20),
    ));
    let started = Instant::now();
    let error =
        WorkloadApiSource::connect(client, MtlsConfig::builder(), Duration::from_millis(300))
            .await
            .expect_err("no agent");
    assert!(started.elapsed() < WAIT);
    match error {
        SourceError::Timeout { waited, last } => {
            assert_eq!(waited, Duration::from_millis(300));
            assert!(
                matches!(last, Some(StreamError::Connect { .. })),
                "{last:?}"
            );
        }
        other => panic!("expected a timeout, got {other}"),
    }
}

#[tokio::test]
async fn material_that_does_not_build_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Ca::root("example.org CA");
    let server = server_svid(&ca, in_an_hour());
    let agent = agent(&dir, &server, &[&ca]).await;
    // The base configuration names a file that is not there: nothing can be built.
    let base = MtlsConfig::builder().client_ca_pem_file(dir.path().join("missing-ca.pem"));
    let error = WorkloadApiSource::connect(fast(&agent), base, Duration::from_millis(500))
        .await
        .expect_err("does not build");
    assert!(
        matches!(
            error,
            SourceError::Config(tower_mtls::ConfigError::Read { .. })
        ),
        "{error}"
    );
}
