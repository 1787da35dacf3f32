//! The example servers' command-line contract, driven as black boxes: the binaries cargo built
//! for this test run, real processes, real clients. `cargo test` builds the examples first;
//! with `cargo test --test examples_cli` alone, run `cargo build --examples` before.

mod common;

use std::time::Duration;

use common::example_servers::{files, run_to_exit, start};
use common::{Setup, client, json};
use http::StatusCode;

/// Each of `cases` makes `name` exit with code 2 and a message, without a panic.
fn expect_usage_errors(name: &str, cases: &[&[&str]]) {
    for args in cases {
        let (code, stderr) = run_to_exit(name, args);
        assert_eq!(code, 2, "{name} {args:?}: {stderr}");
        assert!(!stderr.trim().is_empty(), "{name} {args:?} printed nothing");
        assert!(!stderr.contains("panicked"), "{name} {args:?}: {stderr}");
    }
}

#[test]
fn bad_flags_and_files_exit_2_with_a_message() {
    for name in ["axum_server", "hyper_server", "tonic_server"] {
        let cases: &[&[&str]] = &[
            &["--bogus"],
            &["--client-auth", "maybe"],
            &["--admin-spiffe", "https://example.org/admin"],
            &["--listen", "not-an-address"],
            &["--key", "key.pem"],
            &[
                "--cert",
                "/nonexistent/server.pem",
                "--key",
                "/nonexistent/key.pem",
            ],
        ];
        expect_usage_errors(name, cases);
        let (code, stderr) = run_to_exit(
            name,
            &[
                "--cert",
                "/nonexistent/server.pem",
                "--key",
                "/nonexistent/key.pem",
                "--client-ca",
                "/nonexistent/ca.pem",
            ],
        );
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(
            stderr.contains("/nonexistent/server.pem"),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn bad_limit_and_timeout_values_exit_2() {
    for name in ["axum_server", "hyper_server", "tonic_server"] {
        let cases: &[&[&str]] = &[
            &["--handshake-timeout", "0"],
            &["--handshake-timeout=-1"],
            &["--header-timeout", "soon"],
            &["--idle-timeout", "NaN"],
            &["--idle-timeout", "1e9"],
            &["--max-connections", "0"],
            &["--max-connections=-5"],
            &["--max-connections-per-ip", "many"],
            &["--max-connections-per-ip", "1.5"],
        ];
        for args in cases {
            let (code, stderr) = run_to_exit(name, args);
            assert_eq!(code, 2, "{name} {args:?}: {stderr}");
            let flag = args[0].split('=').next().unwrap_or_default();
            assert!(stderr.contains(flag), "{name} {args:?}: {stderr}");
            assert!(!stderr.contains("panicked"), "{name} {args:?}: {stderr}");
        }
    }
}

#[test]
fn unreadable_crl_exits_2_naming_the_file() {
    let setup = Setup::new();
    let dir = tempfile::tempdir().unwrap();
    let mut args = files(&setup, &dir);
    args.extend(["--crl".into(), "/nonexistent/clients.crl".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for name in ["axum_server", "hyper_server", "tonic_server"] {
        let (code, stderr) = run_to_exit(name, &args);
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(
            stderr.contains("/nonexistent/clients.crl"),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn malformed_spiffe_bundles_exit_2() {
    let setup = Setup::new();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, setup.ca.pem()).unwrap();
    let mut files = files(&setup, &dir);
    files.truncate(4); // --cert, --key: no --client-ca
    let bundle = bundle.display().to_string();
    let malformed = [
        "example.org".to_owned(),
        format!("Example.org={bundle}"),
        format!("={bundle}"),
        "example.org=".to_owned(),
        format!("spiffe://example.org={bundle}"),
        format!("example.org/ns={bundle}"),
    ];
    for name in ["axum_server", "hyper_server", "tonic_server"] {
        for value in &malformed {
            let mut args = files.clone();
            args.extend(["--spiffe-bundle".into(), value.clone()]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (code, stderr) = run_to_exit(name, &args);
            assert_eq!(code, 2, "{name} {value:?}: {stderr}");
            assert!(
                stderr.contains("--spiffe-bundle"),
                "{name} {value:?}: {stderr}"
            );
        }
        let mut args = files.clone();
        args.extend([
            "--spiffe-bundle".into(),
            "example.org=/nonexistent/bundle.pem".into(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stderr) = run_to_exit(name, &args);
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(
            stderr.contains("/nonexistent/bundle.pem"),
            "{name}: {stderr}"
        );
        // Not without --cert (the development PKI has no SPIFFE trust domain).
        let (code, stderr) =
            run_to_exit(name, &["--spiffe-bundle", &format!("example.org={bundle}")]);
        assert_eq!(code, 2, "{name}: {stderr}");
    }
}

async fn http_contract(name: &str) {
    let setup = Setup::new();
    let dir = tempfile::tempdir().unwrap();
    let alice = setup.ca.client("alice", &["admins"]);
    let bob = setup.ca.client("bob", &["users"]);
    let carol = setup.ca.client("carol", &["ops"]);
    let mut args = files(&setup, &dir);
    args.extend(["--client-auth".into(), "optional".into()]);
    args.extend([
        "--admin-ou".into(),
        "ops".into(),
        "--admin-ou".into(),
        "admins".into(),
    ]);
    let server = start(name, &args);
    let get = |id: Option<&common::pki::Identity>, path: &'static str| {
        let config = setup.client(id);
        let addr = server.addr;
        async move { client::get_once(addr, config, path).await.unwrap() }
    };

    let me = get(Some(&alice), "/whoami").await;
    assert_eq!(me.status, StatusCode::OK, "{name}");
    assert_eq!(json(&me)["subject"], "CN=alice,OU=admins,O=tower-mtls demo");
    assert_eq!(get(Some(&alice), "/admin").await.status, StatusCode::OK);
    assert_eq!(
        get(Some(&carol), "/admin").await.status,
        StatusCode::OK,
        "repeated --admin-ou"
    );
    assert_eq!(
        get(Some(&bob), "/admin").await.status,
        StatusCode::FORBIDDEN
    );
    let missing = get(Some(&bob), "/missing").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(json(&missing)["status"], 404);
    // Spellings that readers disagree on are refused before the policy, for admins too.
    for path in ["/%61dmin", "//admin", "/whoami/../admin"] {
        let refused = get(Some(&alice), path).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{name} {path}");
        assert_eq!(json(&refused)["status"], 400);
    }
    assert_eq!(get(None, "/healthz").await.status, StatusCode::OK);
    let anonymous = get(None, "/whoami").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(json(&anonymous)["status"], 401);
    assert_eq!(get(None, "/missing").await.status, StatusCode::UNAUTHORIZED);
    // A certificate from another CA never gets as far as HTTP.
    let mallory = common::pki::Ca::root("test CA").client("alice", &["admins"]);
    assert!(
        client::get_once(server.addr, setup.client(Some(&mallory)), "/whoami")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn hyper_server_contract() {
    http_contract("hyper_server").await;
}

#[tokio::test]
async fn axum_server_contract() {
    http_contract("axum_server").await;
}

/// Two SPIFFE trust domains (example.org and the federated partner.example), each with its
/// bundle file, plus the flags of a server that trusts both and no --client-ca.
struct TrustDomains {
    setup: Setup,
    ours: common::pki::Ca,
    partner: common::pki::Ca,
    args: Vec<String>,
}

impl TrustDomains {
    fn new(dir: &tempfile::TempDir) -> Self {
        let setup = Setup::new();
        let ours = common::pki::Ca::root("example.org CA");
        let partner = common::pki::Ca::root("partner.example CA");
        let mut args = files(&setup, dir);
        args.truncate(4); // --cert, --key
        for (td, ca) in [("example.org", &ours), ("partner.example", &partner)] {
            let path = dir.path().join(format!("{td}.bundle.pem"));
            std::fs::write(&path, ca.pem()).unwrap();
            args.extend(["--spiffe-bundle".into(), format!("{td}={}", path.display())]);
        }
        TrustDomains {
            setup,
            ours,
            partner,
            args,
        }
    }
}

async fn spiffe_contract(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let td = TrustDomains::new(&dir);
    let mut args = td.args.clone();
    args.extend(["--admin-spiffe".into(), "spiffe://example.org/admin".into()]);
    let server = start(name, &args);
    let get = |id: &common::pki::Identity, path: &'static str| {
        let config = td.setup.client(Some(id));
        let addr = server.addr;
        async move { client::get_once(addr, config, path).await }
    };

    let admin = td.ours.svid("spiffe://example.org/admin");
    let me = get(&admin, "/whoami").await.unwrap();
    assert_eq!(me.status, StatusCode::OK, "{name}");
    assert_eq!(json(&me)["trust_bundle"], "example.org");
    assert_eq!(json(&me)["spiffe_id"], "spiffe://example.org/admin");
    assert_eq!(get(&admin, "/admin").await.unwrap().status, StatusCode::OK);

    let billing = td.partner.svid("spiffe://partner.example/billing");
    let me = get(&billing, "/whoami").await.unwrap();
    assert_eq!(json(&me)["trust_bundle"], "partner.example");
    assert_eq!(
        get(&billing, "/admin").await.unwrap().status,
        StatusCode::FORBIDDEN
    );

    // Hostile certificates get no HTTP answer at all: the partner's CA claiming our admin,
    // an SVID with two URI SANs, a trust domain without a bundle, no SPIFFE ID.
    let mut two_uris = common::pki::svid_params("spiffe://example.org/admin");
    two_uris.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://example.org/other".try_into().unwrap(),
    ));
    let hostile = [
        td.partner.svid("spiffe://example.org/admin"),
        td.ours.issue(two_uris),
        td.ours.svid("spiffe://elsewhere.example/admin"),
        td.ours.client("alice", &["admins"]),
    ];
    for (i, id) in hostile.iter().enumerate() {
        let reply = get(id, "/healthz").await;
        assert!(reply.is_err(), "{name}: hostile #{i} got {reply:?}");
    }

    // With a --client-ca as well, certificates without a SPIFFE ID come in through it.
    let mut args = td.args.clone();
    args.extend(files(&td.setup, &dir).split_off(4)); // --client-ca
    let server = start(name, &args);
    let alice = td.setup.ca.client("alice", &["admins"]);
    let me = client::get_once(server.addr, td.setup.client(Some(&alice)), "/whoami")
        .await
        .unwrap();
    assert_eq!(me.status, StatusCode::OK, "{name}");
    assert_eq!(json(&me)["trust_bundle"], serde_json::Value::Null);
    let forged = td.setup.ca.svid("spiffe://example.org/admin");
    assert!(
        client::get_once(server.addr, td.setup.client(Some(&forged)), "/whoami")
            .await
            .is_err(),
        "{name}: the client CA issued a SPIFFE ID"
    );
}

/// `--spiffe-endpoint`: the server's identity and bundles come from a (fake) agent, and
/// follow its updates.
async fn spiffe_endpoint_contract(name: &str) {
    use tower_mtls::workload_api::fake::{FakeSvid, FakeWorkloadApi};
    let dir = tempfile::tempdir().unwrap();
    let ours = common::pki::Ca::root("example.org CA");
    let socket = dir.path().join("agent.sock");
    let agent = FakeWorkloadApi::unix(&socket).await.unwrap();
    let serve = |server: &common::pki::Identity| {
        let svid = FakeSvid::new("spiffe://example.org/server", &server.chain, &server.key());
        let bundle = [ours.der().clone()];
        agent.update(|state| {
            state
                .set_svids(vec![svid])
                .set_bundle("example.org", &bundle);
        });
    };
    let first = ours.issue(common::pki::server_svid_params(
        "spiffe://example.org/server",
    ));
    serve(&first);
    let server = start(
        name,
        &[
            "--spiffe-endpoint".into(),
            format!("unix:{}", socket.display()),
            "--admin-spiffe".into(),
            "spiffe://example.org/admin".into(),
        ],
    );
    let as_client = |id: &common::pki::Identity| {
        client::client_config(
            ours.der(),
            Some((id.chain.clone(), id.key())),
            &[b"http/1.1"],
        )
    };
    let admin = ours.svid("spiffe://example.org/admin");
    let me = client::get_once(server.addr, as_client(&admin), "/whoami")
        .await
        .unwrap();
    assert_eq!(me.status, StatusCode::OK, "{name}");
    assert_eq!(json(&me)["trust_bundle"], "example.org");
    let web = ours.svid("spiffe://example.org/web");
    let reply = client::get_once(server.addr, as_client(&web), "/admin")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{name}");
    // Another CA's SVID for our trust domain gets no HTTP answer.
    let forged = common::pki::Ca::root("example.org CA").svid("spiffe://example.org/admin");
    assert!(
        client::get_once(server.addr, as_client(&forged), "/healthz")
            .await
            .is_err()
    );

    // A rotation reaches new handshakes.
    let second = ours.issue(common::pki::server_svid_params(
        "spiffe://example.org/server",
    ));
    serve(&second);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let tls = client::connect(server.addr, as_client(&web)).await.unwrap();
        if tls.get_ref().1.peer_certificates().unwrap()[0] == second.chain[0] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}: the rotation was not applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// The fake agent runs on the runtime's workers while `start` blocks this thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_server_spiffe_endpoint() {
    spiffe_endpoint_contract("hyper_server").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_server_spiffe_endpoint() {
    spiffe_endpoint_contract("axum_server").await;
}

#[test]
fn spiffe_endpoint_flags_and_a_missing_agent_exit_2() {
    for name in ["axum_server", "hyper_server", "tonic_server"] {
        for args in [
            &["--spiffe-endpoint", "http://127.0.0.1:1"][..],
            &[
                "--spiffe-endpoint",
                "unix:/x.sock",
                "--cert",
                "a.pem",
                "--key",
                "b.pem",
            ],
            &[
                "--spiffe-endpoint",
                "unix:/x.sock",
                "--spiffe-bundle",
                "example.org=b.pem",
            ],
        ] {
            let (code, stderr) = run_to_exit(name, args);
            assert_eq!(code, 2, "{name} {args:?}: {stderr}");
            assert!(
                stderr.contains("--spiffe-endpoint"),
                "{name} {args:?}: {stderr}"
            );
        }
    }
    // No agent: the servers wait 30 s for a first SVID, then exit 2 (all three at once).
    let dir = tempfile::tempdir().unwrap();
    let socket = format!("unix:{}", dir.path().join("nobody.sock").display());
    let waiting: Vec<_> = ["axum_server", "hyper_server", "tonic_server"]
        .into_iter()
        .map(|name| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let (code, stderr) = run_to_exit(name, &["--spiffe-endpoint", &socket]);
                (name, code, stderr, started.elapsed())
            })
        })
        .collect();
    for thread in waiting {
        let (name, code, stderr, waited) = thread.join().unwrap();
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(stderr.contains("X509-SVID"), "{name}: {stderr}");
        assert!(
            waited >= Duration::from_secs(29),
            "{name} gave up after {waited:?}"
        );
    }
}

#[tokio::test]
async fn hyper_server_spiffe_bundles() {
    spiffe_contract("hyper_server").await;
}

#[tokio::test]
async fn axum_server_spiffe_bundles() {
    spiffe_contract("axum_server").await;
}

#[tokio::test]
async fn tonic_server_spiffe_bundles() {
    let dir = tempfile::tempdir().unwrap();
    let td = TrustDomains::new(&dir);
    let server = start("tonic_server", &td.args);
    let health = |id: &common::pki::Identity| {
        let config = td.setup.client(Some(id));
        let addr = server.addr;
        async move {
            let mut h2 = client::http2(addr, config).await?;
            let request = http::Request::post("/grpc.health.v1.Health/Check")
                .header("host", "localhost")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(http_body_util::Full::new(bytes::Bytes::from_static(&[
                    0, 0, 0, 0, 0,
                ])))
                .unwrap();
            client::send2(&mut h2, request).await
        }
    };
    let web = td.ours.svid("spiffe://example.org/web");
    let reply = health(&web).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers["content-type"], "application/grpc",
        "{reply:?}"
    );
    // Trailers-only means a refusal (grpc-status in the headers); a served call has a body.
    assert!(!reply.headers.contains_key("grpc-status"), "{reply:?}");
    assert!(!reply.body.is_empty(), "{reply:?}");
    let forged = td.partner.svid("spiffe://example.org/web");
    assert!(health(&forged).await.is_err());
}

#[tokio::test]
async fn required_mode_refuses_certificate_less_handshakes() {
    let setup = Setup::new();
    let dir = tempfile::tempdir().unwrap();
    let server = start("axum_server", &files(&setup, &dir));
    assert!(
        client::get_once(server.addr, setup.client(None), "/healthz")
            .await
            .is_err()
    );
    let alice = setup.ca.client("alice", &[]);
    let reply = client::get_once(server.addr, setup.client(Some(&alice)), "/healthz")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn axum_server_policy_file_gives_the_same_outcomes_as_the_flags() {
    let setup = Setup::new();
    let dir = tempfile::tempdir().unwrap();
    let mut svc_params = common::pki::client_params("svc", &["services"]);
    svc_params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://example.org/admin".try_into().unwrap(),
    )];
    let clients = [
        setup.ca.client("alice", &["admins"]),
        setup.ca.client("bob", &["users"]),
        setup.ca.issue(svc_params),
    ];
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/policy.toml");
    let mut with_flags = files(&setup, &dir);
    with_flags.extend(["--admin-spiffe".into(), "spiffe://example.org/admin".into()]);
    let mut with_policy = files(&setup, &dir);
    with_policy.extend(["--policy".into(), policy.into()]);
    let flags = start("axum_server", &with_flags);
    let policy = start("axum_server", &with_policy);

    let mut outcomes = Vec::new();
    for id in &clients {
        for path in ["/whoami", "/admin", "/admin/x", "/missing", "/healthz"] {
            let a = client::get_once(flags.addr, setup.client(Some(id)), path)
                .await
                .unwrap();
            let b = client::get_once(policy.addr, setup.client(Some(id)), path)
                .await
                .unwrap();
            assert_eq!(a.status, b.status, "{path}");
            outcomes.push(a.status.as_u16());
        }
    }
    // alice, bob, svc × whoami, admin, admin/x, missing, healthz
    assert_eq!(
        outcomes,
        [
            200, 200, 404, 404, 200, 200, 403, 403, 404, 200, 200, 200, 404, 404, 200
        ]
    );
}

#[test]
fn a_bad_policy_file_exits_2_naming_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
        [[rule]]
        name = "a"
        action = "allowed"

        [[rule]]
        name = "b"
        action = "allow"
        principal.spiffe_id = "spiffe://Example.org/x"
        "#,
    )
    .unwrap();
    let (code, stderr) = run_to_exit("axum_server", &["--policy", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("bad.toml"), "{stderr}");
    for problem in ["\"a\"", "\"b\""] {
        assert!(
            stderr.contains(problem),
            "the message must name rule {problem}: {stderr}"
        );
    }
    let (code, stderr) = run_to_exit("hyper_server", &["--policy", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
}

/// `--max-connections-per-ip`: the built binaries hold two verified connections from one
/// address open, close a third at once, and still serve another address.
#[tokio::test]
async fn the_per_ip_cap_flag_is_enforced() {
    let setup = Setup::new();
    let dir = tempfile::tempdir().unwrap();
    let alice = setup.ca.client("alice", &[]);
    let local = std::net::IpAddr::from([127, 0, 0, 1]);
    let other = std::net::IpAddr::from([127, 0, 0, 2]);
    for name in ["hyper_server", "axum_server", "tonic_server"] {
        let mut args = files(&setup, &dir);
        args.extend(["--max-connections-per-ip".into(), "2".into()]);
        let server = start(name, &args);
        let config = setup.client(Some(&alice));
        // Each connection answers a request before the next one opens: it is established.
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut h2 = client::http2_from(local, server.addr, config.clone())
                .await
                .unwrap();
            client::send2(&mut h2, client::get("/healthz"))
                .await
                .unwrap();
            held.push(h2);
        }
        let third = async {
            let mut h2 = client::http2_from(local, server.addr, config.clone()).await?;
            client::send2(&mut h2, client::get("/healthz")).await
        };
        assert!(
            third.await.is_err(),
            "{name}: a third connection was served"
        );
        let mut elsewhere = client::http2_from(other, server.addr, config.clone())
            .await
            .unwrap();
        client::send2(&mut elsewhere, client::get("/healthz"))
            .await
            .unwrap();
        for h2 in &mut held {
            client::send2(h2, client::get("/healthz")).await.unwrap();
        }
    }
}

/// `--idle-timeout` and `--header-timeout` on the HTTP servers: an idle HTTP/2 connection and
/// a half-sent HTTP/1.1 request header are closed, within a bounded wait.
#[tokio::test]
async fn the_timeout_flags_are_enforced() {
    let setup = Setup::new();
    let dir = tempfile::tempdir().unwrap();
    let alice = setup.ca.client("alice", &[]);
    for name in ["hyper_server", "axum_server"] {
        let mut args = files(&setup, &dir);
        args.extend([
            "--idle-timeout".into(),
            "0.3".into(),
            "--header-timeout".into(),
            "0.3".into(),
        ]);
        let server = start(name, &args);
        let mut h2 = client::http2(server.addr, setup.client(Some(&alice)))
            .await
            .unwrap();
        client::send2(&mut h2, client::get("/healthz"))
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !h2.is_closed() {
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: idle connection still open"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let mut tls = client::connect(server.addr, setup.client_h1(Some(&alice)))
            .await
            .unwrap();
        use tokio::io::AsyncWriteExt;
        tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n")
            .await
            .unwrap();
        assert!(
            client::closed_within(&mut tls, Duration::from_secs(10)).await,
            "{name}: half-sent header still open"
        );
    }
}

/// `--metrics ADDR`: after a bounded run of good and bad clients, the numbers in the
/// Prometheus text at `http://ADDR/metrics` are exactly what the clients saw.
async fn metrics_contract(name: &str) {
    let setup = Setup::new();
    let dir = tempfile::tempdir().unwrap();
    let metrics_addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let mut args = files(&setup, &dir);
    args.extend(["--metrics".into(), metrics_addr.to_string()]);
    let server = start(name, &args);
    let alice = setup.ca.client("alice", &["admins"]);
    let bob = setup.ca.client("bob", &["users"]);
    let mallory = common::pki::Ca::root("test CA").client("alice", &["admins"]);
    let (mut ok, mut denied, mut refused) = (0, 0, 0);
    for round in 0..5 {
        // A fresh client configuration each time: full handshakes only.
        let reply = client::get_once(server.addr, setup.client(Some(&alice)), "/admin").await;
        assert_eq!(reply.unwrap().status, StatusCode::OK);
        ok += 1;
        if round % 2 == 0 {
            let reply = client::get_once(server.addr, setup.client(Some(&bob)), "/admin").await;
            assert_eq!(reply.unwrap().status, StatusCode::FORBIDDEN);
            denied += 1;
        }
        let reply = client::get_once(server.addr, setup.client(Some(&mallory)), "/admin").await;
        assert!(reply.is_err());
        refused += 1;
    }
    let scrape = || async {
        let tcp = tokio::net::TcpStream::connect(metrics_addr).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let request = http::Request::get("/metrics")
            .header("host", "localhost")
            .body(http_body_util::Empty::<bytes::Bytes>::new())?;
        let response = sender.send_request(request).await?;
        use http_body_util::BodyExt;
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, client::BoxError>(String::from_utf8_lossy(&body).into_owned())
    };
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    // The server records a failed handshake a moment after the client sees it fail.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = scrape().await.unwrap();
        if value(
            &text,
            r#"tower_mtls_handshake_failures_total{cause="bad_signature"}"#,
        ) >= refused as f64
            || std::time::Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let expect = |series: &str, want: i32| {
        assert_eq!(
            value(&text, series),
            f64::from(want),
            "{name} {series}\n{text}"
        );
    };
    expect(
        r#"tower_mtls_handshakes_total{result="ok",kind="full"}"#,
        ok + denied,
    );
    expect(
        r#"tower_mtls_handshakes_total{result="failed",kind="full"}"#,
        refused,
    );
    // mallory's CA has the same name as ours: the signature gives it away.
    expect(
        r#"tower_mtls_handshake_failures_total{cause="bad_signature"}"#,
        refused,
    );
    expect(r#"tower_mtls_requests_total{decision="allowed"}"#, ok);
    expect(r#"tower_mtls_requests_total{decision="denied"}"#, denied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_server_metrics() {
    metrics_contract("hyper_server").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_server_metrics() {
    metrics_contract("axum_server").await;
}

#[test]
fn trusted_proxy_flags_that_do_not_go_together_exit_2() {
    for name in ["axum_server", "hyper_server", "tonic_server"] {
        let cases: &[&[&str]] = &[
            // A proxy without a format, a format without a proxy, a header without either.
            &["--trusted-proxy-cn", "edge"],
            &["--trusted-proxy-dns", "edge.example.org"],
            &["--trusted-proxy-spiffe", "spiffe://example.org/edge"],
            &["--forwarded-cert", "xfcc"],
            &["--forwarded-cert-header", "X-Client-Cert"],
            &[
                "--forwarded-cert",
                "xfcc",
                "--forwarded-cert-header",
                "X-Client-Cert",
            ],
            // Bad values.
            &["--trusted-proxy-cn", "edge", "--forwarded-cert", "pem"],
            &[
                "--trusted-proxy-dns",
                "a.*.org",
                "--forwarded-cert",
                "nginx",
            ],
            &[
                "--trusted-proxy-spiffe",
                "https://example.org/edge",
                "--forwarded-cert",
                "nginx",
            ],
            &[
                "--trusted-proxy-cn",
                "edge",
                "--forwarded-cert",
                "nginx",
                "--forwarded-cert-header",
                "bad header",
            ],
            &[
                "--trusted-proxy-cn",
                "edge",
                "--forwarded-cert",
                "nginx",
                "--forwarded-cert-header",
                "Host",
            ],
        ];
        expect_usage_errors(name, cases);
    }
}

/// A proxy's request forwarding `who` in haproxy's format (base64 DER), and a direct
/// client's request carrying the same header.
fn haproxy_header(who: &common::pki::Identity) -> String {
    common::forwarded_values::haproxy(&who.chain[0])
}

/// A CA, a proxy `edge-proxy` (named by `--trusted-proxy-cn`), alice (admin) and bob, and the
/// server flags with `extra`.
struct ProxiedFleet {
    setup: Setup,
    _dir: tempfile::TempDir,
    proxy: common::pki::Identity,
    alice: common::pki::Identity,
    bob: common::pki::Identity,
    args: Vec<String>,
}

impl ProxiedFleet {
    fn new(extra: &[&str]) -> Self {
        let setup = Setup::new();
        let dir = tempfile::tempdir().unwrap();
        let mut args = files(&setup, &dir);
        args.extend(["--trusted-proxy-cn", "edge-proxy"].map(String::from));
        args.extend(extra.iter().map(|a| a.to_string()));
        ProxiedFleet {
            proxy: setup.ca.client("edge-proxy", &["proxies"]),
            alice: setup.ca.client("alice", &["admins"]),
            bob: setup.ca.client("bob", &["users"]),
            setup,
            _dir: dir,
            args,
        }
    }
}

async fn forwarded_contract(name: &str) {
    let ProxiedFleet {
        setup,
        _dir,
        proxy,
        alice,
        bob,
        args,
    } = ProxiedFleet::new(&["--forwarded-cert", "haproxy"]);
    let server = start(name, &args);
    let send = |who: &common::pki::Identity, path: &'static str, forwarded: Option<String>| {
        let config = setup.client(Some(who));
        let addr = server.addr;
        async move {
            let mut request = client::get(path);
            if let Some(value) = forwarded {
                request
                    .headers_mut()
                    .insert("x-ssl-client-cert", value.parse().unwrap());
            }
            let mut sender = client::http1(addr, config).await.unwrap();
            client::send1(&mut sender, request).await.unwrap()
        }
    };

    let me = send(&proxy, "/whoami", Some(haproxy_header(&alice))).await;
    assert_eq!(me.status, StatusCode::OK, "{name}: {me:?}");
    assert_eq!(json(&me)["subject"], "CN=alice,OU=admins,O=tower-mtls demo");
    assert_eq!(
        json(&me)["forwarded_by"],
        "CN=edge-proxy,OU=proxies,O=tower-mtls demo"
    );
    assert_eq!(
        send(&proxy, "/admin", Some(haproxy_header(&alice)))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        send(&proxy, "/admin", Some(haproxy_header(&bob)))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let nobody = send(&proxy, "/whoami", None).await;
    assert_eq!(nobody.status, StatusCode::UNAUTHORIZED, "{name}");
    let garbled = send(&proxy, "/whoami", Some("not base64!".into())).await;
    assert_eq!(garbled.status, StatusCode::UNAUTHORIZED, "{name}");

    // A direct client naming the admin is itself.
    let spoof = send(&bob, "/whoami", Some(haproxy_header(&alice))).await;
    assert_eq!(spoof.status, StatusCode::OK);
    assert_eq!(json(&spoof)["subject"], "CN=bob,OU=users,O=tower-mtls demo");
    assert_eq!(json(&spoof)["forwarded_by"], serde_json::Value::Null);
    assert_eq!(
        send(&bob, "/admin", Some(haproxy_header(&alice)))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn hyper_server_forwarded_identities() {
    forwarded_contract("hyper_server").await;
}

#[tokio::test]
async fn axum_server_forwarded_identities() {
    forwarded_contract("axum_server").await;
}

#[tokio::test]
async fn tonic_server_forwarded_identities() {
    let ProxiedFleet {
        setup,
        _dir,
        proxy,
        alice,
        bob,
        args,
    } = ProxiedFleet::new(&[
        "--forwarded-cert",
        "xfcc",
        "--forwarded-cert-header",
        "x-client-cert",
    ]);
    let server = start("tonic_server", &args);
    let grpc = |who: &common::pki::Identity,
                method: &'static str,
                forwarded: Option<&common::pki::Identity>| {
        let config = setup.client(Some(who));
        let addr = server.addr;
        let xfcc = forwarded.map(|f| {
            let pem = common::pki::der_to_pem(&f.chain[0]);
            let escaped = common::forwarded_values::url_encode(&pem);
            format!("Hash=00;Cert=\"{escaped}\"")
        });
        async move {
            let mut h2 = client::http2(addr, config).await.unwrap();
            let mut request = http::Request::post(method)
                .header("host", "localhost")
                .header("content-type", "application/grpc")
                .header("te", "trailers");
            if let Some(xfcc) = xfcc {
                request = request.header("x-client-cert", xfcc);
            }
            let request = request
                .body(http_body_util::Full::new(bytes::Bytes::from_static(&[
                    0, 0, 0, 0, 0,
                ])))
                .unwrap();
            // Only the response head: Watch streams for as long as the server runs.
            h2.ready().await.unwrap();
            let reply = h2.send_request(request).await.unwrap();
            assert_eq!(reply.status(), StatusCode::OK);
            reply
                .headers()
                .get("grpc-status")
                .map(|s| s.to_str().unwrap().to_owned())
        }
    };
    const CHECK: &str = "/grpc.health.v1.Health/Check";
    const WATCH: &str = "/grpc.health.v1.Health/Watch";
    // A served call has no grpc-status in its headers (trailers-only refusals do).
    assert_eq!(grpc(&proxy, CHECK, Some(&bob)).await, None);
    assert_eq!(grpc(&proxy, WATCH, Some(&bob)).await.as_deref(), Some("7"));
    assert_eq!(grpc(&proxy, WATCH, Some(&alice)).await, None);
    assert_eq!(grpc(&proxy, CHECK, None).await.as_deref(), Some("16"));
    assert_eq!(grpc(&bob, WATCH, Some(&alice)).await.as_deref(), Some("7"));
}
