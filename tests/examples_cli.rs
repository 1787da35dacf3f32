//! The example servers' command-line contract, driven as black boxes: the binaries cargo built
//! for this test run, real processes, real clients. `cargo test` builds the examples first;
//! with `cargo test --test examples_cli` alone, run `cargo build --examples` before.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Setup, client, json};
use http::StatusCode;

/// `target/<profile>/examples/<name>`: cargo builds the examples before running tests.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

fn run_to_exit(name: &str, args: &[&str]) -> (i32, String) {
    let output = Command::new(example(name))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("run example");
    let code = output.status.code().unwrap_or(-1);
    (code, String::from_utf8_lossy(&output.stderr).into_owned())
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
        for args in cases {
            let (code, stderr) = run_to_exit(name, args);
            assert_eq!(code, 2, "{name} {args:?}: {stderr}");
            assert!(!stderr.trim().is_empty(), "{name} {args:?} printed nothing");
            assert!(!stderr.contains("panicked"), "{name} {args:?}: {stderr}");
        }
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

/// A running example server, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(name: &str, args: &[String]) -> Server {
    let mut child = Command::new(example(name))
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start example");
    let stdout = child.stdout.take().expect("stdout");
    // Owned by the guard from here on, so a panic below still kills the process.
    let mut server = Server {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.split(" listening on ").nth(1) {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the example printed its address");
    server.addr = addr.parse().expect("socket address");
    server
}

fn files(setup: &Setup, dir: &tempfile::TempDir) -> Vec<String> {
    let write = |name: &str, contents: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    };
    vec![
        "--cert".into(),
        write("server.pem", setup.server.chain_pem()),
        "--key".into(),
        write("server-key.pem", setup.server.key_pem.clone()),
        "--client-ca".into(),
        write("ca.pem", setup.ca.pem()),
    ]
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
