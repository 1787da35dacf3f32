//! Hot reload, session resumption and long-lived connections: a certificate revoked (or a CA
//! removed) after the first handshake gets no further access, whichever way it comes back.

mod common;

use std::time::Duration;

use common::pki::{Ca, client_params};
use common::{Setup, client, expect_rejected, json, start_whoami};
use http::StatusCode;
use tower_mtls::tls::HandshakeFailure;
use tower_mtls::{ConfigError, MtlsAcceptor, MtlsConfig};

async fn resumption_is_reverified(version: &'static rustls::SupportedProtocolVersion) {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let acceptor = MtlsAcceptor::new(setup.builder().build().unwrap());
    let addr = start_whoami(acceptor.clone()).await;
    // One client config = one session cache, as in a real client process.
    let config = setup.client_versions(Some(&alice), &[version]);

    let first = client::get_once(addr, config.clone(), "/").await.unwrap();
    assert_eq!(json(&first)["resumed"], false);
    let second = client::get_once(addr, config.clone(), "/").await.unwrap();
    assert_eq!(
        json(&second)["resumed"],
        true,
        "control: the session must resume"
    );

    acceptor
        .reload_from(&setup.builder().crl_pem(setup.ca.crl(&[&alice])))
        .unwrap();
    let third = client::get_once(addr, config.clone(), "/").await;
    assert!(third.is_err(), "a revoked certificate resumed: {third:?}");
    expect_rejected(&acceptor, HandshakeFailure::ResumptionRevoked).await;
    // A fresh client (full handshake) is refused by the verifier itself.
    let fresh = setup.client_versions(Some(&alice), &[version]);
    assert!(client::get_once(addr, fresh, "/").await.is_err());
    expect_rejected(&acceptor, HandshakeFailure::Revoked).await;
}

#[tokio::test]
async fn revoked_certificate_cannot_resume_a_tls13_session() {
    resumption_is_reverified(&rustls::version::TLS13).await;
}

#[tokio::test]
async fn revoked_certificate_cannot_resume_a_tls12_session() {
    resumption_is_reverified(&rustls::version::TLS12).await;
}

/// After a reload, a connection whose certificate no longer verifies gets 401 until the server
/// has closed it, which it does within the revocation grace period (3 s by default).
async fn refused_then_closed(
    mut request: impl AsyncFnMut() -> Result<StatusCode, common::client::BoxError>,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match request().await {
            Ok(status) => assert_eq!(status, StatusCode::UNAUTHORIZED),
            Err(_closed) => return,
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the revoked connection is still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn revocation_reaches_connections_already_open() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let bob = setup.ca.client("bob", &[]);
    let acceptor = MtlsAcceptor::new(setup.builder().build().unwrap());
    let addr = start_whoami(acceptor.clone()).await;
    let mut a = client::http1(addr, setup.client_h1(Some(&alice)))
        .await
        .unwrap();
    let mut b = client::http2(addr, setup.client(Some(&bob))).await.unwrap();
    assert_eq!(client::status1(&mut a, "/").await.unwrap(), StatusCode::OK);
    assert_eq!(client::status2(&mut b, "/").await.unwrap(), StatusCode::OK);

    acceptor
        .reload_from(&setup.builder().crl_pem(setup.ca.crl(&[&alice])))
        .unwrap();
    refused_then_closed(async || client::status1(&mut a, "/").await).await;
    for _ in 0..3 {
        assert_eq!(
            client::status2(&mut b, "/").await.unwrap(),
            StatusCode::OK,
            "bob is not revoked"
        );
    }
}

#[tokio::test]
async fn removing_a_ca_reaches_connections_already_open() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let acceptor = MtlsAcceptor::new(setup.builder().build().unwrap());
    let addr = start_whoami(acceptor.clone()).await;
    let mut a = client::http2(addr, setup.client(Some(&alice)))
        .await
        .unwrap();
    assert_eq!(client::status2(&mut a, "/").await.unwrap(), StatusCode::OK);

    let other_ca = Ca::root("replacement CA");
    let builder = MtlsConfig::builder()
        .server_cert_pem(setup.server.chain_pem())
        .server_key_pem(setup.server.key_pem.clone())
        .client_ca_pem(other_ca.pem());
    acceptor.reload_from(&builder).unwrap();
    refused_then_closed(async || client::status2(&mut a, "/").await).await;
    // ... and a CA put back is trusted again, on a new connection.
    acceptor.reload_from(&setup.builder()).unwrap();
    let mut again = client::http2(addr, setup.client(Some(&alice)))
        .await
        .unwrap();
    assert_eq!(
        client::status2(&mut again, "/").await.unwrap(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn certificate_expiring_during_a_connection_gets_401() {
    common::init_tracing();
    let setup = Setup::new();
    let mut params = client_params("short-lived", &[]);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let short = setup.ca.issue(params);
    let acceptor = MtlsAcceptor::new(setup.builder().build().unwrap());
    let addr = start_whoami(acceptor).await;
    let mut conn = client::http2(addr, setup.client(Some(&short)))
        .await
        .unwrap();
    assert_eq!(
        client::status2(&mut conn, "/").await.unwrap(),
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(
        client::status2(&mut conn, "/").await.unwrap(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn server_certificate_swap_keeps_open_connections() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let acceptor = MtlsAcceptor::new(setup.builder().build().unwrap());
    let addr = start_whoami(acceptor.clone()).await;
    let mut open = client::http1(addr, setup.client_h1(Some(&alice)))
        .await
        .unwrap();
    assert_eq!(
        client::status1(&mut open, "/").await.unwrap(),
        StatusCode::OK
    );

    // A new server certificate from a new server CA.
    let new_server_ca = Ca::root("new server CA");
    let new_server = new_server_ca.server();
    let builder = MtlsConfig::builder()
        .server_cert_pem(new_server.chain_pem())
        .server_key_pem(new_server.key_pem.clone())
        .client_ca_pem(setup.ca.pem());
    acceptor.reload_from(&builder).unwrap();
    assert_eq!(acceptor.generation(), 1);

    // The open connection keeps working.
    assert_eq!(
        client::status1(&mut open, "/").await.unwrap(),
        StatusCode::OK
    );
    // New handshakes see the new certificate: a client trusting only the old one fails...
    assert!(
        client::get_once(addr, setup.client(Some(&alice)), "/")
            .await
            .is_err()
    );
    // (the client refused the server's certificate: the server counts its alert)
    expect_rejected(&acceptor, HandshakeFailure::AlertReceived).await;
    // ... and one trusting the new one succeeds.
    let trusting_new = common::client::client_config(
        new_server_ca.der(),
        Some((alice.chain.clone(), alice.key())),
        &[b"http/1.1"],
    );
    let reply = client::get_once(addr, trusting_new, "/").await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn bad_reload_is_refused_and_the_old_config_stays() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let acceptor = MtlsAcceptor::new(setup.builder().build().unwrap());
    let addr = start_whoami(acceptor.clone()).await;

    let other_key = setup.ca.server().key_pem;
    let bad = setup.builder().server_key_pem(other_key);
    let err = acceptor.reload_from(&bad).unwrap_err();
    assert!(matches!(err, ConfigError::KeyMismatch { .. }), "{err}");
    let err = acceptor
        .reload_from(&setup.builder().crl_pem("not a CRL"))
        .unwrap_err();
    assert!(matches!(err, ConfigError::NoPem { .. }), "{err}");
    assert_eq!(acceptor.generation(), 0);

    let reply = client::get_once(addr, setup.client(Some(&alice)), "/")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn file_watcher_reloads_rotated_files() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("server.pem"), setup.server.chain_pem()).unwrap();
    std::fs::write(path("server-key.pem"), &setup.server.key_pem).unwrap();
    std::fs::write(path("ca.pem"), setup.ca.pem()).unwrap();
    std::fs::write(path("crl.pem"), setup.ca.crl(&[])).unwrap();
    let builder = MtlsConfig::builder()
        .server_cert_pem_file(path("server.pem"))
        .server_key_pem_file(path("server-key.pem"))
        .client_ca_pem_file(path("ca.pem"))
        .crl_pem_file(path("crl.pem"));
    let acceptor = MtlsAcceptor::new(builder.build().unwrap());
    let _watcher = acceptor.watch_files(builder, Duration::from_millis(50));
    let addr = start_whoami(acceptor.clone()).await;
    let reply = client::get_once(addr, setup.client(Some(&alice)), "/")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);

    // A broken write is refused (and the server keeps working) ...
    std::fs::write(path("crl.pem"), "-----BEGIN X509 CRL-----\nnot base64!\n").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(acceptor.generation(), 0);
    let reply = client::get_once(addr, setup.client(Some(&alice)), "/")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);

    // ... and the rotated CRL takes effect.
    std::fs::write(path("crl.pem"), setup.ca.crl(&[&alice])).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while acceptor.generation() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no reload happened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        client::get_once(addr, setup.client(Some(&alice)), "/")
            .await
            .is_err()
    );
}

/// The way Kubernetes (and so cert-manager) rotates a mounted secret: the files are symlinks
/// into `..data`, itself a symlink to a timestamped directory, swapped atomically by rename.
#[cfg(unix)]
#[tokio::test]
async fn file_watcher_follows_a_kubernetes_style_symlink_swap() {
    use std::os::unix::fs::symlink;
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let write_version = |name: &str, crl: String| {
        let version = root.join(name);
        std::fs::create_dir(&version).unwrap();
        std::fs::write(version.join("tls.crt"), setup.server.chain_pem()).unwrap();
        std::fs::write(version.join("tls.key"), &setup.server.key_pem).unwrap();
        std::fs::write(version.join("ca.crt"), setup.ca.pem()).unwrap();
        std::fs::write(version.join("clients.crl"), crl).unwrap();
    };
    write_version("..v1", setup.ca.crl(&[]));
    symlink("..v1", root.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key", "ca.crt", "clients.crl"] {
        symlink(format!("..data/{file}"), root.join(file)).unwrap();
    }
    let builder = MtlsConfig::builder()
        .server_cert_pem_file(root.join("tls.crt"))
        .server_key_pem_file(root.join("tls.key"))
        .client_ca_pem_file(root.join("ca.crt"))
        .crl_pem_file(root.join("clients.crl"));
    let acceptor = MtlsAcceptor::new(builder.build().unwrap());
    let _watcher = acceptor.watch_files(builder, Duration::from_millis(50));
    let addr = start_whoami(acceptor.clone()).await;
    let reply = client::get_once(addr, setup.client(Some(&alice)), "/")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);

    // A new version revoking alice, then the atomic swap of `..data`.
    write_version("..v2", setup.ca.crl(&[&alice]));
    symlink("..v2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while acceptor.generation() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the swap was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        client::get_once(addr, setup.client(Some(&alice)), "/")
            .await
            .is_err()
    );
}
