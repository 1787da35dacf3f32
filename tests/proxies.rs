//! Real TLS-terminating proxies in front of the example servers: nginx and haproxy (Debian's
//! `nginx-light` and `haproxy` packages) terminate the client's mTLS and forward its
//! certificate in a header, over an mTLS connection of their own with the proxy's client
//! certificate; the example server believes the header only from that proxy.
//!
//! ```text
//! client --mTLS--> nginx / haproxy --mTLS (CN=proxy.internal)--> example server
//!                  + X-SSL-Client-Cert / Client-Cert
//! ```
//!
//! The proxies here verify little on purpose (nginx `optional_no_ca`, haproxy
//! `crt-ignore-err all`, no CRLs), so that revoked, expired and unknown-CA certificates reach
//! the example server and are refused *there*, by the same verification as a direct client.
//! The proxy's certificate has `OU=admins`: its own identity must never count as the client's.
//!
//! Without nginx or haproxy installed these tests print `SKIPPED` and pass, unless
//! `TOWER_MTLS_REQUIRE_PROXIES` is set (`.ci/run` installs both and sets it), when they fail.

mod common;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::example_servers::{Server, files, start};
use common::forwarded_values;
use common::pki::{Ca, Identity, client_params};
use common::{Setup, client, json};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};

const PROXY_CN: &str = "proxy.internal";
const PROXY_DN: &str = "CN=proxy.internal,OU=admins,O=tower-mtls demo";

/// Whether `tool` is installed; when it is not, says so loudly, and fails where CI requires
/// the proxy tests.
fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        assert!(
            std::env::var_os("TOWER_MTLS_REQUIRE_PROXIES").is_none(),
            "{tool} is not installed, and TOWER_MTLS_REQUIRE_PROXIES says these tests must run \
             (apt-get install -y nginx-light haproxy)"
        );
        eprintln!(
            "SKIPPED: {tool} is not installed, so the tests of forwarded identities behind \
             {tool} did not run (apt-get install -y nginx-light haproxy; CI runs them)"
        );
    }
    found
}

/// The fleet's PKI: one CA for servers, proxy and clients, plus a stranger's CA.
struct Fleet {
    setup: Setup,
    dir: tempfile::TempDir,
    proxy: Identity,
    alice: Identity,
    bob: Identity,
    revoked: Identity,
    expired: Identity,
    stranger: Identity,
}

impl Fleet {
    fn new() -> Self {
        let setup = Setup::new();
        let dir = tempfile::tempdir().unwrap();
        let proxy = setup.ca.client(PROXY_CN, &["admins"]);
        let alice = setup.ca.client("alice", &["admins"]);
        let bob = setup.ca.client("bob", &["users"]);
        let revoked = setup.ca.client("carol", &["admins"]);
        let mut params = client_params("dave", &["admins"]);
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
        params.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        let expired = setup.ca.issue(params);
        // Another name than the fleet's CA: nginx refuses a same-named issuer whose signature
        // fails by itself, and the point here is what the upstream does.
        let stranger = Ca::root("stranger CA").client("mallory", &["admins"]);
        let fleet = Fleet {
            setup,
            dir,
            proxy,
            alice,
            bob,
            revoked,
            expired,
            stranger,
        };
        fleet.write("crl.pem", &fleet.setup.ca.crl(&[&fleet.revoked]));
        fleet.write("ca.pem", &fleet.setup.ca.pem());
        fleet.write("server.pem", &fleet.setup.server.chain_pem());
        fleet.write("server-key.pem", &fleet.setup.server.key_pem);
        fleet.write(
            "server-bundle.pem",
            &format!(
                "{}{}",
                fleet.setup.server.chain_pem(),
                fleet.setup.server.key_pem
            ),
        );
        fleet.write("proxy.pem", &fleet.proxy.chain_pem());
        fleet.write("proxy-key.pem", &fleet.proxy.key_pem);
        fleet.write(
            "proxy-bundle.pem",
            &format!("{}{}", fleet.proxy.chain_pem(), fleet.proxy.key_pem),
        );
        fleet
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// An example server that trusts the CA, honours the CRL and believes `format`'s header
    /// from the proxy (and only from it).
    fn upstream(&self, example: &str, format: &str, extra: &[&str]) -> Server {
        let mut args = files(&self.setup, &self.dir);
        args.extend(["--crl".into(), self.path("crl.pem").display().to_string()]);
        args.extend(["--trusted-proxy-cn".into(), PROXY_CN.into()]);
        args.extend(["--forwarded-cert".into(), format.into()]);
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        start(example, &args)
    }

    fn client(&self, identity: Option<&Identity>) -> std::sync::Arc<rustls::ClientConfig> {
        self.setup.client_h1(identity)
    }
}

/// A loopback port nobody listens on (for a proxy to bind).
fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap()
}

/// `text` as a configuration file: lines without their indentation, each ended by a newline.
fn config_file(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| format!("{line}\n"))
        .collect()
}

/// A proxy process, stopped by its pid on drop.
struct Proxy {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    fn spawn(mut command: Command, port: u16, log: PathBuf) -> Proxy {
        let out = std::fs::File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start the proxy");
        let mut proxy = Proxy {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect_timeout(&proxy.addr, Duration::from_millis(200)).is_err()
        {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!("the proxy exited ({status}): {}", proxy.output());
            }
            assert!(
                Instant::now() < deadline,
                "the proxy never listened: {}",
                proxy.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        proxy
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// nginx in front of `upstream`: `X-SSL-Client-Cert: $ssl_client_escaped_cert`, over
    /// HTTP/1.1 (`proxy_pass`) or gRPC (`grpc_pass`).
    fn nginx(fleet: &Fleet, upstream: SocketAddr, grpc: bool) -> Proxy {
        let port = free_port();
        let prefix = fleet.path("nginx");
        std::fs::create_dir_all(prefix.join("logs")).unwrap();
        let p = |name: &str| fleet.path(name).display().to_string();
        let tmp = |name: &str| prefix.join(name).display().to_string();
        let pass = if grpc {
            format!(
                "grpc_pass grpcs://{upstream};
                grpc_ssl_certificate {proxy};
                grpc_ssl_certificate_key {proxy_key};
                grpc_ssl_trusted_certificate {ca};
                grpc_ssl_verify on;
                grpc_ssl_name localhost;
                grpc_ssl_server_name on;
                grpc_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;",
                proxy = p("proxy.pem"),
                proxy_key = p("proxy-key.pem"),
                ca = p("ca.pem"),
            )
        } else {
            format!(
                "proxy_pass https://{upstream};
                proxy_http_version 1.1;
                proxy_ssl_certificate {proxy};
                proxy_ssl_certificate_key {proxy_key};
                proxy_ssl_trusted_certificate {ca};
                proxy_ssl_verify on;
                proxy_ssl_name localhost;
                proxy_ssl_server_name on;
                proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;",
                proxy = p("proxy.pem"),
                proxy_key = p("proxy-key.pem"),
                ca = p("ca.pem"),
            )
        };
        let conf = format!(
            "daemon off;
            master_process off;
            pid {pid};
            error_log {error_log} warn;
            events {{ worker_connections 64; }}
            http {{
                access_log off;
                client_body_temp_path {body};
                proxy_temp_path {proxy_tmp};
                fastcgi_temp_path {fastcgi};
                uwsgi_temp_path {uwsgi};
                scgi_temp_path {scgi};
                server {{
                    listen 127.0.0.1:{port} ssl http2;
                    ssl_certificate {cert};
                    ssl_certificate_key {key};
                    ssl_client_certificate {ca};
                    ssl_verify_client optional_no_ca;
                    location / {{
                        {pass}
                    }}
                }}
            }}
            ",
            pid = tmp("nginx.pid"),
            error_log = tmp("logs/error.log"),
            body = tmp("body"),
            proxy_tmp = tmp("proxy"),
            fastcgi = tmp("fastcgi"),
            uwsgi = tmp("uwsgi"),
            scgi = tmp("scgi"),
            cert = p("server.pem"),
            key = p("server-key.pem"),
            ca = p("ca.pem"),
        );
        let conf_path = fleet.write("nginx.conf", &config_file(&conf));
        let mut command = Command::new("nginx");
        command
            .arg("-p")
            .arg(&prefix)
            .arg("-e")
            .arg(prefix.join("logs/error.log"))
            .arg("-c")
            .arg(&conf_path);
        Proxy::spawn(command, port, fleet.path("nginx.out"))
    }

    /// haproxy in front of `upstream`, setting `header: value` (a sample expression) on
    /// every request, HTTP/2 to the upstream.
    fn haproxy(fleet: &Fleet, upstream: SocketAddr, header: &str, value: &str) -> Proxy {
        let port = free_port();
        let p = |name: &str| fleet.path(name).display().to_string();
        let conf = format!(
            "global
                log stderr format raw local0 warning
            defaults
                mode http
                log global
                timeout connect 5s
                timeout client 30s
                timeout server 30s
            frontend mtls
                bind 127.0.0.1:{port} ssl crt {server} ca-file {ca} verify optional crt-ignore-err all ca-ignore-err all alpn h2,http/1.1
                http-request del-header Client-Cert-Chain
                http-request set-header {header} {value}
                default_backend app
            backend app
                server app {upstream} ssl crt {proxy} ca-file {ca} verify required sni str(localhost) alpn h2
            ",
            server = p("server-bundle.pem"),
            proxy = p("proxy-bundle.pem"),
            ca = p("ca.pem"),
        );
        let conf_path = fleet.write("haproxy.cfg", &config_file(&conf));
        let mut command = Command::new("haproxy");
        command.arg("-db").arg("-f").arg(&conf_path);
        Proxy::spawn(command, port, fleet.path("haproxy.out"))
    }
}

/// `GET path` on a fresh HTTP/1.1 connection to `addr`, with extra `headers`.
async fn get(
    addr: SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<client::Reply, client::BoxError> {
    let mut sender = client::http1(addr, config).await?;
    let mut request = client::get(path);
    for (name, value) in headers {
        request.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    client::send1(&mut sender, request).await
}

/// The contract through a proxy at `front`, with `upstream` behind it: what an operator
/// relies on. `spoof` is the forwarded header a client would forge (name, value for alice).
async fn forwarded_contract(
    fleet: &Fleet,
    front: SocketAddr,
    upstream: SocketAddr,
    spoof: (&str, String),
    what: &str,
) {
    let status = |id: Option<&Identity>, path: &'static str| {
        let config = fleet.client(id);
        async move { get(front, config, path, &[]).await.unwrap().status }
    };

    // An admin through the proxy: its own identity, and who forwarded it.
    let me = get(front, fleet.client(Some(&fleet.alice)), "/whoami", &[])
        .await
        .unwrap();
    assert_eq!(me.status, StatusCode::OK, "{what}: {me:?}");
    assert_eq!(json(&me)["subject"], "CN=alice,OU=admins,O=tower-mtls demo");
    assert_eq!(json(&me)["forwarded_by"], PROXY_DN, "{what}");
    assert_eq!(status(Some(&fleet.alice), "/admin").await, StatusCode::OK);

    // A non-admin through the proxy: 403, even when it sends a header naming alice (the
    // proxy replaces it, and only what the proxy set counts).
    assert_eq!(
        status(Some(&fleet.bob), "/admin").await,
        StatusCode::FORBIDDEN,
        "{what}"
    );
    let spoofed = [(spoof.0, spoof.1.as_str())];
    let me = get(front, fleet.client(Some(&fleet.bob)), "/whoami", &spoofed)
        .await
        .unwrap();
    assert_eq!(json(&me)["subject"], "CN=bob,OU=users,O=tower-mtls demo");
    let reply = get(front, fleet.client(Some(&fleet.bob)), "/admin", &spoofed)
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{what}");

    // No client certificate: the proxy forwards none, and its own (admin) identity is not
    // the client's.
    for path in ["/whoami", "/admin"] {
        assert_eq!(
            status(None, path).await,
            StatusCode::UNAUTHORIZED,
            "{what} {path}"
        );
    }
    // A stranger's CA, and a certificate the upstream's CRL revokes: the proxy let them
    // through, the upstream verifies them like direct clients.
    for id in [&fleet.stranger, &fleet.revoked] {
        assert_eq!(
            status(Some(id), "/admin").await,
            StatusCode::UNAUTHORIZED,
            "{what}"
        );
    }

    // Straight to the upstream: the proxy's own certificate without a forwarded header is
    // nobody, and a client that is not the proxy keeps its own identity whatever it sends.
    for path in ["/whoami", "/admin"] {
        let reply = get(upstream, fleet.client(Some(&fleet.proxy)), path, &[])
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what} {path}");
    }
    let me = get(
        upstream,
        fleet.client(Some(&fleet.bob)),
        "/whoami",
        &spoofed,
    )
    .await
    .unwrap();
    assert_eq!(me.status, StatusCode::OK, "{what}");
    assert_eq!(json(&me)["subject"], "CN=bob,OU=users,O=tower-mtls demo");
    assert_eq!(json(&me)["forwarded_by"], serde_json::Value::Null);
    let reply = get(upstream, fleet.client(Some(&fleet.bob)), "/admin", &spoofed)
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{what}");
}

#[tokio::test]
async fn nginx_in_front_of_hyper_server() {
    if !have("nginx") {
        return;
    }
    let fleet = Fleet::new();
    let upstream = fleet.upstream("hyper_server", "nginx", &[]);
    let nginx = Proxy::nginx(&fleet, upstream.addr, false);
    let spoof = (
        "X-SSL-Client-Cert",
        forwarded_values::nginx(&fleet.alice.chain[0]),
    );
    forwarded_contract(&fleet, nginx.addr, upstream.addr, spoof, "nginx").await;
    // nginx refuses an expired certificate itself (400): it never reaches the upstream.
    let reply = get(
        nginx.addr,
        fleet.client(Some(&fleet.expired)),
        "/admin",
        &[],
    )
    .await
    .unwrap();
    assert_ne!(reply.status, StatusCode::OK, "{}", nginx.output());
}

#[tokio::test]
async fn haproxy_in_front_of_axum_server() {
    if !have("haproxy") {
        return;
    }
    let fleet = Fleet::new();
    let upstream = fleet.upstream("axum_server", "haproxy", &[]);
    let haproxy = Proxy::haproxy(
        &fleet,
        upstream.addr,
        "X-SSL-Client-Cert",
        "%[ssl_c_der,base64]",
    );
    let spoof = (
        "X-SSL-Client-Cert",
        forwarded_values::haproxy(&fleet.alice.chain[0]),
    );
    forwarded_contract(&fleet, haproxy.addr, upstream.addr, spoof, "haproxy").await;
    // haproxy was told to ignore certificate errors: the upstream refuses the expired one.
    let reply = get(
        haproxy.addr,
        fleet.client(Some(&fleet.expired)),
        "/admin",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        haproxy.output()
    );
}

/// RFC 9440's `Client-Cert` (a structured-field byte sequence), as haproxy can write it, under
/// an overridden header name; a client-sent chain header is removed by haproxy.
#[tokio::test]
async fn haproxy_rfc9440_in_front_of_hyper_server() {
    if !have("haproxy") {
        return;
    }
    let fleet = Fleet::new();
    let upstream = fleet.upstream(
        "hyper_server",
        "rfc9440",
        &["--forwarded-cert-header", "X-Client-Cert"],
    );
    let haproxy = Proxy::haproxy(
        &fleet,
        upstream.addr,
        "X-Client-Cert",
        ":%[ssl_c_der,base64]:",
    );
    let spoof = (
        "X-Client-Cert",
        format!(":{}:", forwarded_values::haproxy(&fleet.alice.chain[0])),
    );
    forwarded_contract(
        &fleet,
        haproxy.addr,
        upstream.addr,
        spoof,
        "haproxy rfc9440",
    )
    .await;
}

/// A gRPC call through `front`: the response head and, once the call ends, its grpc-status
/// (from the headers of a trailers-only response, or from the trailers).
async fn grpc(
    front: SocketAddr,
    fleet: &Fleet,
    id: Option<&Identity>,
    method: &str,
) -> (StatusCode, Option<String>) {
    let config = common::client::client_config(
        fleet.setup.ca.der(),
        id.map(|id| (id.chain.clone(), id.key())),
        &[b"h2"],
    );
    let mut h2 = client::http2(front, config).await.unwrap();
    let request = Request::post(format!("/grpc.health.v1.Health/{method}"))
        .header("host", "localhost")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .unwrap();
    h2.ready().await.unwrap();
    let response = h2.send_request(request).await.unwrap();
    let status = response.status();
    let header = |map: &http::HeaderMap| {
        map.get("grpc-status")
            .map(|v| v.to_str().unwrap_or_default().to_owned())
    };
    if let Some(code) = header(response.headers()) {
        return (status, Some(code));
    }
    if method == "Watch" {
        // A stream that was let through stays open: its first message is enough.
        // (A proxy may send an empty DATA frame before the trailers of a refusal.)
        let mut body = response.into_body();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
                .await
                .expect("a first message or the trailers")
                .expect("a frame")
                .unwrap();
            if let Some(trailers) = frame.trailers_ref() {
                return (status, header(trailers));
            }
            if frame.data_ref().is_some_and(|data| !data.is_empty()) {
                return (status, None);
            }
        }
    }
    let collected = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .expect("the call ended")
        .unwrap();
    (status, collected.trailers().and_then(header))
}

/// gRPC through nginx (`grpc_pass`) and haproxy (h2 both ways) to tonic_server: the
/// forwarded certificate is metadata of the same, lowercase, name.
#[tokio::test]
async fn grpc_through_nginx_and_haproxy() {
    if !have("nginx") || !have("haproxy") {
        return;
    }
    let fleet = Fleet::new();
    let behind_nginx = fleet.upstream("tonic_server", "nginx", &[]);
    let nginx = Proxy::nginx(&fleet, behind_nginx.addr, true);
    let behind_haproxy = fleet.upstream("tonic_server", "haproxy", &[]);
    let haproxy = Proxy::haproxy(
        &fleet,
        behind_haproxy.addr,
        "X-SSL-Client-Cert",
        "%[ssl_c_der,base64]",
    );
    for (front, what) in [(nginx.addr, "nginx"), (haproxy.addr, "haproxy")] {
        let ok = Some("0".to_owned());
        let (status, code) = grpc(front, &fleet, Some(&fleet.bob), "Check").await;
        assert_eq!((status, code), (StatusCode::OK, ok.clone()), "{what}");
        // Watch is for admins: bob is denied (7), alice is served.
        let (_, code) = grpc(front, &fleet, Some(&fleet.bob), "Watch").await;
        assert_eq!(code.as_deref(), Some("7"), "{what}");
        let (status, code) = grpc(front, &fleet, Some(&fleet.alice), "Watch").await;
        assert_eq!((status, code), (StatusCode::OK, None), "{what}");
        // No certificate, a revoked one, a stranger's: unauthenticated (16), although the
        // proxy's own certificate would be an admin's.
        for id in [None, Some(&fleet.revoked), Some(&fleet.stranger)] {
            let (_, code) = grpc(front, &fleet, id, "Watch").await;
            assert_eq!(code.as_deref(), Some("16"), "{what}");
        }
    }
}

/// Without `--trusted-proxy-*` a proxy is only a client: the header it sets names nobody, the
/// identity is the proxy's own.
#[tokio::test]
async fn without_trusted_proxies_the_header_is_not_believed() {
    if !have("nginx") || !have("haproxy") {
        return;
    }
    let fleet = Fleet::new();
    let upstream = start("hyper_server", &files(&fleet.setup, &fleet.dir));
    let nginx = Proxy::nginx(&fleet, upstream.addr, false);
    let haproxy = Proxy::haproxy(
        &fleet,
        upstream.addr,
        "X-SSL-Client-Cert",
        "%[ssl_c_der,base64]",
    );
    for proxy in [&nginx, &haproxy] {
        let me = get(proxy.addr, fleet.client(Some(&fleet.bob)), "/whoami", &[])
            .await
            .unwrap();
        assert_eq!(me.status, StatusCode::OK, "{}", proxy.output());
        assert_eq!(json(&me)["subject"], PROXY_DN);
        assert_eq!(json(&me)["forwarded_by"], serde_json::Value::Null);
    }
}
