//! Identities forwarded by TLS-terminating proxies, over real TLS on loopback: the "proxy" is a
//! real hyper (or tonic) client presenting the proxy's own certificate and writing the
//! forwarded-certificate header itself, as nginx, haproxy or Envoy would.
//!
//! - Only a connection whose own verified certificate names a trusted proxy is believed; every
//!   other connection loses the headers before the handler, whatever it claims.
//! - The forwarded chain is verified like a direct one: unknown CAs, wrong EKU, revocation by a
//!   reload (on the same open connection), intermediates from the forwarded chain.
//! - Missing, malformed or unverifiable certificates from the proxy: 401 with their own cause,
//!   never the proxy's identity.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use common::{LogCapture, Setup, client, pki};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower_mtls::authorize::Matcher;
use tower_mtls::forwarded::{ForwardedCertFormat, TrustedProxies};
use tower_mtls::tls::ClientAuth;
use tower_mtls::{AuthContext, Decision, MtlsAcceptor, MtlsAuthLayer, MtlsListener, Principal};

const PROXY_CN: &str = "edge-proxy";

type Http2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// Every configured header name, lowercase.
const FORWARDED_HEADERS: [&str; 4] = [
    "client-cert",
    "client-cert-chain",
    "x-forwarded-client-cert",
    "x-ssl-client-cert",
];

struct Fleet {
    setup: Setup,
    proxy: pki::Identity,
    alice: pki::Identity,
    bob: pki::Identity,
}

impl Fleet {
    fn new() -> Self {
        let setup = Setup::new();
        Fleet {
            proxy: setup.ca.client(PROXY_CN, &["proxies"]),
            alice: setup.ca.client("alice", &["admins"]),
            bob: setup.ca.client("bob", &["users"]),
            setup,
        }
    }

    fn acceptor(&self, format: ForwardedCertFormat) -> MtlsAcceptor {
        MtlsAcceptor::new(self.setup.config(ClientAuth::Required)).trusted_proxies(proxies(format))
    }
}

fn proxies(format: ForwardedCertFormat) -> TrustedProxies {
    TrustedProxies::new(format).proxy(Matcher::common_name(PROXY_CN))
}

fn pem_of(der: &[u8]) -> String {
    pki::der_to_pem(&rustls::pki_types::CertificateDer::from(der.to_vec()))
}

use common::forwarded_values::{haproxy as b64, url_encode};

/// One XFCC element for `chain` (leaf first) as Envoy writes it with `Cert` and `Chain`.
fn xfcc_element(chain: &[rustls::pki_types::CertificateDer<'static>]) -> String {
    let leaf = url_encode(&pem_of(&chain[0]));
    let all: String = chain.iter().map(|c| pem_of(c)).collect();
    format!(
        "By=spiffe://example.org/edge;Hash=00ff;Cert=\"{leaf}\";Chain=\"{}\";Subject=\"CN=x\"",
        url_encode(&all)
    )
}

/// The header lines a proxy of `format` writes for `chain` (leaf first).
fn forwarded(
    format: ForwardedCertFormat,
    chain: &[rustls::pki_types::CertificateDer<'static>],
) -> Vec<(&'static str, String)> {
    match format {
        ForwardedCertFormat::Rfc9440 => {
            let mut lines = vec![("client-cert", format!(":{}:", b64(&chain[0])))];
            if chain.len() > 1 {
                let rest: Vec<String> =
                    chain[1..].iter().map(|c| format!(":{}:", b64(c))).collect();
                lines.push(("client-cert-chain", rest.join(", ")));
            }
            lines
        }
        ForwardedCertFormat::Xfcc => vec![("x-forwarded-client-cert", xfcc_element(chain))],
        ForwardedCertFormat::Nginx => {
            vec![("x-ssl-client-cert", url_encode(&pem_of(&chain[0])))]
        }
        ForwardedCertFormat::Haproxy => vec![("x-ssl-client-cert", b64(&chain[0]))],
        _ => unreachable!("a format this test does not know"),
    }
}

fn request(path: &str, lines: &[(&str, String)]) -> Request<Full<Bytes>> {
    let mut builder = Request::get(path).header("host", "localhost");
    for (name, value) in lines {
        builder = builder.header(*name, value.as_str());
    }
    builder.body(Full::default()).unwrap()
}

/// `/admin` for OU=admins only; anything else for any verified client.
fn admin_rule(ctx: &AuthContext<'_>) -> Decision {
    if ctx.path() != "/admin"
        || ctx
            .principal()
            .organizational_units()
            .any(|o| o == "admins")
    {
        Decision::allow("ok")
    } else {
        Decision::deny("not an admin")
    }
}

/// The principal the layer allowed, who forwarded it, and which forwarded headers the
/// handler still sees.
async fn echo<B>(req: Request<B>) -> Result<Response<Full<Bytes>>, Infallible> {
    let seen: Vec<&str> = FORWARDED_HEADERS
        .into_iter()
        .filter(|name| req.headers().contains_key(*name))
        .collect();
    let principal = req.extensions().get::<Principal>();
    let body = serde_json::json!({
        "cn": principal.and_then(|p| p.common_name()),
        "forwarded_by": principal.and_then(|p| p.forwarded_by()).map(|p| p.subject().to_string()),
        "headers": seen,
    });
    Ok(Response::new(Full::new(Bytes::from(body.to_string()))))
}

async fn serve_hyper(acceptor: MtlsAcceptor) -> SocketAddr {
    let service = tower::ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(tower_mtls::authorize_fn(admin_rule)))
        .service_fn(echo);
    common::start_acceptor(acceptor, service).await.0
}

/// axum's own `serve`: no connection-level stripping, only the layer's.
async fn serve_axum_own(acceptor: MtlsAcceptor) -> SocketAddr {
    let app = axum::Router::new()
        .route("/whoami", axum::routing::get(echo::<axum::body::Body>))
        .route("/admin", axum::routing::get(echo::<axum::body::Body>))
        .layer(MtlsAuthLayer::new(tower_mtls::authorize_fn(admin_rule)));
    common::serve_axum(app, acceptor).await
}

async fn h2(addr: SocketAddr, setup: &Setup, who: &pki::Identity) -> Http2 {
    client::http2(addr, setup.client(Some(who))).await.unwrap()
}

async fn send(
    sender: &mut Http2,
    path: &str,
    lines: &[(&str, String)],
) -> (StatusCode, serde_json::Value) {
    let reply = client::send2(sender, request(path, lines)).await.unwrap();
    let json = serde_json::from_str(&reply.body).unwrap_or(serde_json::Value::Null);
    (reply.status, json)
}

#[tokio::test]
async fn each_format_through_a_trusted_proxy_names_the_forwarded_client() {
    common::init_tracing();
    let fleet = Fleet::new();
    let proxy_dn = Principal::from_verified_chain(&fleet.proxy.chain)
        .unwrap()
        .subject()
        .to_string();
    for format in ForwardedCertFormat::ALL {
        let addr = serve_hyper(fleet.acceptor(format)).await;
        let mut proxy = h2(addr, &fleet.setup, &fleet.proxy).await;
        let alice = forwarded(format, &fleet.alice.chain);
        let bob = forwarded(format, &fleet.bob.chain);

        let (status, json) = send(&mut proxy, "/whoami", &alice).await;
        assert_eq!(status, StatusCode::OK, "{format}");
        assert_eq!(json["cn"], "alice", "{format}");
        assert_eq!(json["forwarded_by"], proxy_dn.as_str(), "{format}");
        // Admin rules apply to the forwarded identity, not to the proxy's.
        assert_eq!(send(&mut proxy, "/admin", &alice).await.0, StatusCode::OK);
        assert_eq!(
            send(&mut proxy, "/admin", &bob).await.0,
            StatusCode::FORBIDDEN
        );
        let (_, json) = send(&mut proxy, "/whoami", &bob).await;
        assert_eq!(
            json["cn"], "bob",
            "{format}: another client on the same connection"
        );
    }
}

#[tokio::test]
async fn a_direct_client_cannot_claim_anyone_and_its_handler_never_sees_the_header() {
    common::init_tracing();
    let fleet = Fleet::new();
    for format in ForwardedCertFormat::ALL {
        for axum_own in [false, true] {
            let acceptor = fleet.acceptor(format);
            let addr = if axum_own {
                serve_axum_own(acceptor).await
            } else {
                serve_hyper(acceptor).await
            };
            let mut bob = h2(addr, &fleet.setup, &fleet.bob).await;
            // Every format's header at once, naming the admin.
            let spoofed: Vec<(&str, String)> = ForwardedCertFormat::ALL
                .into_iter()
                .flat_map(|f| forwarded(f, &fleet.alice.chain))
                .collect();
            let (status, json) = send(&mut bob, "/whoami", &spoofed).await;
            assert_eq!(status, StatusCode::OK, "{format}");
            assert_eq!(json["cn"], "bob", "{format}: its own identity");
            assert_eq!(json["forwarded_by"], serde_json::Value::Null);
            let seen = json["headers"].as_array().unwrap();
            for name in proxies(format).header().header_names() {
                assert!(
                    !seen.iter().any(|s| s == name.as_str()),
                    "{format}: handler saw {name}: {json}"
                );
            }
            assert_eq!(
                send(&mut bob, "/admin", &spoofed).await.0,
                StatusCode::FORBIDDEN,
                "{format}"
            );
        }
    }
}

#[tokio::test]
async fn headers_are_removed_before_routes_no_layer_covers() {
    // tower_mtls::hyper::serve (and tower_mtls::axum::serve) strip per connection, so a
    // public route outside the layer does not see them either.
    common::init_tracing();
    let fleet = Fleet::new();
    let addr = common::start_acceptor(
        fleet.acceptor(ForwardedCertFormat::Xfcc),
        tower::service_fn(echo::<hyper::body::Incoming>),
    )
    .await
    .0;
    let mut bob = h2(addr, &fleet.setup, &fleet.bob).await;
    let spoofed = forwarded(ForwardedCertFormat::Xfcc, &fleet.alice.chain);
    let (status, json) = send(&mut bob, "/public", &spoofed).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["headers"], serde_json::json!([]));
    // Headers of other formats are not this server's business and pass.
    let other = forwarded(ForwardedCertFormat::Haproxy, &fleet.alice.chain);
    let (_, json) = send(&mut bob, "/public", &other).await;
    assert_eq!(json["headers"], serde_json::json!(["x-ssl-client-cert"]));
}

#[tokio::test]
async fn a_trusted_proxy_without_a_valid_header_gets_401_never_its_own_identity() {
    common::init_tracing();
    let fleet = Fleet::new();
    let other_ca = pki::Ca::root("someone else's CA");
    let stranger = other_ca.client("mallory", &["admins"]);
    let server_cert = fleet.setup.server.chain.clone();
    let capture = LogCapture::default();
    let _log = tracing::subscriber::set_default(capture.subscriber());

    let addr = serve_hyper(fleet.acceptor(ForwardedCertFormat::Rfc9440)).await;
    let mut proxy = h2(addr, &fleet.setup, &fleet.proxy).await;
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("forwarded_cert_missing", vec![]),
        (
            "forwarded_cert_malformed",
            vec![("client-cert", b64(&fleet.alice.chain[0]))], // no colons
        ),
        (
            "forwarded_cert_malformed",
            vec![
                ("client-cert", format!(":{}:", b64(&fleet.alice.chain[0]))),
                ("client-cert", format!(":{}:", b64(&fleet.bob.chain[0]))),
            ],
        ),
        (
            "unknown_issuer",
            forwarded(ForwardedCertFormat::Rfc9440, &stranger.chain),
        ),
        // A server certificate (EKU serverAuth only) is no client certificate.
        (
            "bad_eku",
            forwarded(ForwardedCertFormat::Rfc9440, &server_cert),
        ),
        // Not DER at all: the verifier refuses it, as in a handshake.
        (
            "bad_certificate",
            vec![("client-cert", ":AAAA:".to_owned())],
        ),
    ];
    for (cause, lines) in &cases {
        let (status, _) = send(&mut proxy, "/whoami", lines).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{cause}");
        let events = capture.lines("forwarded_identity_rejected");
        assert!(
            events
                .iter()
                .any(|l| l.contains(&format!("cause=\"{cause}\""))
                    || l.contains(&format!("cause={cause}"))),
            "{cause}: {events:#?}"
        );
    }
    // Nothing was believed: the proxy's own name never appears as a client.
    assert!(capture.lines("request_rejected").is_empty());
    let events = capture.lines("forwarded_identity_rejected");
    assert!(events.iter().all(|l| l.contains(PROXY_CN)), "{events:#?}");
}

#[tokio::test]
async fn only_what_the_proxy_appended_counts() {
    common::init_tracing();
    let fleet = Fleet::new();
    // XFCC: the client sent an element naming alice; the proxy appended bob's.
    let addr = serve_hyper(fleet.acceptor(ForwardedCertFormat::Xfcc)).await;
    let mut proxy = h2(addr, &fleet.setup, &fleet.proxy).await;
    let value = format!(
        "{},{}",
        xfcc_element(&fleet.alice.chain),
        xfcc_element(&fleet.bob.chain)
    );
    let (status, json) = send(&mut proxy, "/whoami", &[("x-forwarded-client-cert", value)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["cn"], "bob");
    // ... also when the client's element arrived as its own field line.
    let lines = [
        ("x-forwarded-client-cert", xfcc_element(&fleet.alice.chain)),
        ("x-forwarded-client-cert", xfcc_element(&fleet.bob.chain)),
    ];
    assert_eq!(
        send(&mut proxy, "/admin", &lines).await.0,
        StatusCode::FORBIDDEN
    );

    // nginx / haproxy replace the header; a client's copy that survived next to the proxy's
    // would make it appear twice: malformed, refused.
    let addr = serve_hyper(fleet.acceptor(ForwardedCertFormat::Haproxy)).await;
    let mut proxy = h2(addr, &fleet.setup, &fleet.proxy).await;
    let twice = [
        ("x-ssl-client-cert", b64(&fleet.alice.chain[0])),
        ("x-ssl-client-cert", b64(&fleet.bob.chain[0])),
    ];
    assert_eq!(
        send(&mut proxy, "/whoami", &twice).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn forwarded_intermediates_are_used_for_path_building() {
    common::init_tracing();
    let fleet = Fleet::new();
    let issuing = fleet.setup.ca.intermediate("issuing CA");
    let carol = issuing
        .client("carol", &["admins"])
        .with_intermediate(&issuing);
    for format in [ForwardedCertFormat::Rfc9440, ForwardedCertFormat::Xfcc] {
        let addr = serve_hyper(fleet.acceptor(format)).await;
        let mut proxy = h2(addr, &fleet.setup, &fleet.proxy).await;
        let (status, json) = send(&mut proxy, "/whoami", &forwarded(format, &carol.chain)).await;
        assert_eq!(status, StatusCode::OK, "{format}: {json}");
        assert_eq!(json["cn"], "carol");
        // The leaf alone does not chain to the root.
        let leaf_only = forwarded(format, &carol.chain[..1]);
        assert_eq!(
            send(&mut proxy, "/whoami", &leaf_only).await.0,
            StatusCode::UNAUTHORIZED,
            "{format}"
        );
    }
    // Leaf-only formats rely on the configured intermediates.
    let acceptor = MtlsAcceptor::new(
        fleet
            .setup
            .builder()
            .intermediates_pem(issuing.pem())
            .build()
            .unwrap(),
    )
    .trusted_proxies(proxies(ForwardedCertFormat::Nginx));
    let addr = serve_hyper(acceptor).await;
    let mut proxy = h2(addr, &fleet.setup, &fleet.proxy).await;
    let (status, json) = send(
        &mut proxy,
        "/whoami",
        &forwarded(ForwardedCertFormat::Nginx, &carol.chain),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
}

#[tokio::test]
async fn a_reload_reaches_forwarded_identities_on_the_open_proxy_connection() {
    common::init_tracing();
    let fleet = Fleet::new();
    let acceptor = fleet.acceptor(ForwardedCertFormat::Haproxy);
    let addr = serve_hyper(acceptor.clone()).await;
    let mut proxy = h2(addr, &fleet.setup, &fleet.proxy).await;
    let alice = forwarded(ForwardedCertFormat::Haproxy, &fleet.alice.chain);
    let bob = forwarded(ForwardedCertFormat::Haproxy, &fleet.bob.chain);
    for _ in 0..3 {
        assert_eq!(send(&mut proxy, "/admin", &alice).await.0, StatusCode::OK);
    }
    // Revoke alice: the cached identity is verified again under the new generation.
    acceptor.reload(
        fleet
            .setup
            .builder()
            .crl_pem(fleet.setup.ca.crl(&[&fleet.alice]))
            .build()
            .unwrap(),
    );
    assert_eq!(
        send(&mut proxy, "/admin", &alice).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(send(&mut proxy, "/whoami", &bob).await.0, StatusCode::OK);

    // Revoke the proxy: nobody it forwards is believed.
    acceptor.reload(
        fleet
            .setup
            .builder()
            .crl_pem(fleet.setup.ca.crl(&[&fleet.proxy]))
            .build()
            .unwrap(),
    );
    let revoked = client::send2(&mut proxy, request("/whoami", &bob)).await;
    assert!(
        revoked
            .as_ref()
            .map_or(true, |r| r.status == StatusCode::UNAUTHORIZED),
        "{revoked:?}"
    );
}

#[tokio::test]
async fn spiffe_forwarded_identities_are_bound_to_their_trust_domain() {
    common::init_tracing();
    let fleet = Fleet::new();
    let td_ca = pki::Ca::root("example.org SPIFFE CA");
    let other_td = pki::Ca::root("partner SPIFFE CA");
    let svc = td_ca.svid("spiffe://example.org/svc");
    let forged = other_td.svid("spiffe://example.org/svc");
    let config = fleet
        .setup
        .builder()
        .spiffe_bundle("example.org", td_ca.pem())
        .spiffe_bundle("partner.example", other_td.pem())
        .build()
        .unwrap();
    let acceptor = MtlsAcceptor::new(config).trusted_proxies(proxies(ForwardedCertFormat::Xfcc));
    let addr = serve_hyper(acceptor).await;
    let mut proxy = h2(addr, &fleet.setup, &fleet.proxy).await;
    let (status, _) = send(
        &mut proxy,
        "/whoami",
        &forwarded(ForwardedCertFormat::Xfcc, &svc.chain),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(
        &mut proxy,
        "/whoami",
        &forwarded(ForwardedCertFormat::Xfcc, &forged.chain),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "an SVID of another trust domain's CA"
    );
}

#[tokio::test]
async fn axum_extractors_yield_the_forwarded_identity() {
    common::init_tracing();
    let fleet = Fleet::new();
    async fn layer_principal(p: Principal) -> String {
        p.common_name().unwrap_or("?").to_owned()
    }
    async fn any_verified(
        tower_mtls::axum::AnyVerifiedPrincipal(p): tower_mtls::axum::AnyVerifiedPrincipal,
    ) -> String {
        p.common_name().unwrap_or("?").to_owned()
    }
    let app = axum::Router::new()
        .route("/layer", axum::routing::get(layer_principal))
        .route_layer(MtlsAuthLayer::new(tower_mtls::AllowAnyVerified))
        .route("/any", axum::routing::get(any_verified));
    let addr = common::serve_axum(app, fleet.acceptor(ForwardedCertFormat::Nginx)).await;
    let mut proxy = h2(addr, &fleet.setup, &fleet.proxy).await;
    let alice = forwarded(ForwardedCertFormat::Nginx, &fleet.alice.chain);
    for path in ["/layer", "/any"] {
        let reply = client::send2(&mut proxy, request(path, &alice))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.body, "alice", "{path}");
        let reply = client::send2(&mut proxy, request(path, &[])).await.unwrap();
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{path}: the proxy is nobody"
        );
    }
    // A direct client on the uncovered route: its own identity, whatever it sends.
    let mut bob = h2(addr, &fleet.setup, &fleet.bob).await;
    let reply = client::send2(&mut bob, request("/any", &alice))
        .await
        .unwrap();
    assert_eq!(reply.body, "bob");
}

mod grpc {
    use super::*;
    use std::sync::Mutex;
    use tonic::Code;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    /// Health behind the layer (Watch for admins only), recording the principal handlers get.
    async fn serve(acceptor: MtlsAcceptor) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = MtlsListener::bind("127.0.0.1:0", acceptor).await.unwrap();
        let addr = listener.local_addr();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let authz = tower_mtls::authorize_fn(|ctx: &AuthContext<'_>| match ctx.grpc_method() {
            Some((_, "Watch"))
                if !ctx
                    .principal()
                    .organizational_units()
                    .any(|o| o == "admins") =>
            {
                Decision::deny("admins only")
            }
            _ => Decision::allow("ok"),
        });
        let (reporter, health) = tonic_health::server::health_reporter();
        tokio::spawn(async move {
            let _reporter = reporter;
            tonic::transport::Server::builder()
                .layer(MtlsAuthLayer::new(authz))
                .layer(tower::layer::layer_fn(move |inner| Recorder {
                    inner,
                    seen: record.clone(),
                }))
                .add_service(health)
                .serve_with_incoming(tower_mtls::tonic::incoming(listener))
                .await
                .unwrap();
        });
        (addr, seen)
    }

    /// Records the CN of the principal the tonic helper finds in each request.
    #[derive(Clone)]
    struct Recorder<S> {
        inner: S,
        seen: Arc<Mutex<Vec<String>>>,
    }

    impl<S, B> tower::Service<http::Request<B>> for Recorder<S>
    where
        S: tower::Service<http::Request<B>>,
    {
        type Response = S::Response;
        type Error = S::Error;
        type Future = S::Future;
        fn poll_ready(
            &mut self,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            self.inner.poll_ready(cx)
        }
        fn call(&mut self, req: http::Request<B>) -> Self::Future {
            // What a handler's `tonic::Request` carries: the same extensions.
            let mut probe = http::Request::new(());
            *probe.extensions_mut() = req.extensions().clone();
            let probe = tonic::Request::from_http(probe);
            if let Some(p) = tower_mtls::tonic::principal(&probe) {
                self.seen
                    .lock()
                    .unwrap()
                    .push(p.common_name().unwrap_or("?").to_owned());
            }
            self.inner.call(req)
        }
    }

    fn check() -> HealthCheckRequest {
        HealthCheckRequest {
            service: String::new(),
        }
    }

    #[allow(clippy::result_large_err)]
    fn with_cert(
        value: Option<String>,
    ) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
        move |mut req: tonic::Request<()>| {
            if let Some(value) = &value {
                req.metadata_mut()
                    .insert("x-ssl-client-cert", value.parse().unwrap());
            }
            Ok(req)
        }
    }

    #[tokio::test]
    async fn grpc_through_a_trusted_proxy() {
        common::init_tracing();
        let fleet = Fleet::new();
        let (addr, seen) = serve(fleet.acceptor(ForwardedCertFormat::Haproxy)).await;
        let proxy = common::tonic_channel(addr, fleet.setup.client(Some(&fleet.proxy))).await;
        let alice = Some(b64(&fleet.alice.chain[0]));
        let bob = Some(b64(&fleet.bob.chain[0]));

        let mut as_alice = HealthClient::with_interceptor(proxy.clone(), with_cert(alice.clone()));
        as_alice.check(check()).await.unwrap();
        let mut watch = as_alice.watch(check()).await.unwrap().into_inner();
        assert!(watch.message().await.unwrap().is_some());

        let mut as_bob = HealthClient::with_interceptor(proxy.clone(), with_cert(bob));
        as_bob.check(check()).await.unwrap();
        assert_eq!(
            as_bob.watch(check()).await.unwrap_err().code(),
            Code::PermissionDenied
        );

        let mut nobody = HealthClient::with_interceptor(proxy, with_cert(None));
        assert_eq!(
            nobody.check(check()).await.unwrap_err().code(),
            Code::Unauthenticated
        );

        // A direct client naming alice in the metadata is itself.
        let direct = common::tonic_channel(addr, fleet.setup.client(Some(&fleet.bob))).await;
        let mut spoof = HealthClient::with_interceptor(direct, with_cert(alice));
        spoof.check(check()).await.unwrap();
        assert_eq!(
            spoof.watch(check()).await.unwrap_err().code(),
            Code::PermissionDenied
        );

        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen, ["alice", "alice", "bob", "bob"]);
    }
}

#[test]
fn test_util_builds_forwarded_principals_for_authorizer_tests() {
    let fleet = Fleet::new();
    let proxy = tower_mtls::test_util::principal_from_der(&fleet.proxy.chain).unwrap();
    let alice =
        tower_mtls::test_util::forwarded_principal_from_der(&fleet.alice.chain, proxy).unwrap();
    assert!(alice.is_forwarded());
    assert_eq!(alice.common_name(), Some("alice"));
    assert_eq!(
        alice.forwarded_by().and_then(|p| p.common_name()),
        Some(PROXY_CN)
    );
    let direct = tower_mtls::test_util::principal_from_der(&fleet.alice.chain).unwrap();
    assert!(!direct.is_forwarded() && direct.forwarded_by().is_none());
}
