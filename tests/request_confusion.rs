//! Invariant 7 over real TLS: what the policy sees is what the application serves. An axum app
//! built the way users build them (`nest`, `nest_service(ServeDir)`, a `{*rest}` route, HEAD)
//! behind a DENY-list policy: every spelling of a denied resource is denied (403) or refused
//! (400), every allowed one is served. Also: nested routers, method spellings, extractors that
//! cannot widen access, and resumption across a reload to required client certificates.

mod common;

use std::net::SocketAddr;
use std::path::Path as FsPath;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::get;
use bytes::Bytes;
use common::{Setup, client, pki, serve_axum as serve, site};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceBuilder;
use tower_http::services::ServeDir;
use tower_mtls::authorize::RuleSet;
use tower_mtls::authorize::canonical::{EncodedUnreserved, MergeSlashes, PathNormalization};
use tower_mtls::axum::AnyVerifiedPrincipal;
use tower_mtls::tls::{ClientAuth, HandshakeFailure};
use tower_mtls::{MtlsAcceptor, MtlsAuthLayer, Principal};

/// The shape of `examples/policy.toml`: DENY rules for what is private, then "any verified
/// client" for the rest.
const POLICY: &str = r#"
[[rule]]
name = "private-is-for-admins"
action = "deny"
path_prefix = ["/api/admin", "/static/private", "/download/private"]
principal.not.ou = "admins"

[[rule]]
name = "reports-are-read-by-admins"
action = "deny"
methods = "GET"
path_prefix = "/api/reports"
principal.not.ou = "admins"

[[rule]]
name = "verified-clients"
action = "allow"
"#;

/// The app: the layer on a nested router, in front of ServeDir under `nest_service`, and as a
/// `route_layer` over a `{*rest}` route.
fn app(root: &FsPath, paths: PathNormalization) -> Router {
    let policy = Arc::new(RuleSet::from_toml_str(POLICY).unwrap());
    let layer = MtlsAuthLayer::new(policy).path_normalization(paths);
    let api = Router::new()
        .route("/admin", get(|| async { "admin" }))
        .route(
            "/admin/{*rest}",
            get(|Path(rest): Path<String>| async move { format!("admin:{rest}") }),
        )
        .route(
            "/reports",
            get(|| async { "reports" }).post(|| async { "report filed" }),
        )
        .route(
            "/items/{id}",
            get(|Path(id): Path<String>| async move { format!("item:{id}") }),
        )
        .layer(layer.clone());
    let files = ServiceBuilder::new()
        .layer(layer.clone())
        .map_response(|response: http::Response<_>| response.map(Body::new))
        .service(ServeDir::new(root));
    Router::new()
        .route(
            "/download/{*rest}",
            get(|Path(rest): Path<String>| async move { format!("download:{rest}") }),
        )
        .route(
            "/whoami",
            get(|p: Principal| async move { p.common_name().unwrap_or("").to_owned() }),
        )
        .route_layer(layer)
        .nest("/api", api)
        .nest_service("/static", files)
}

/// One client's keep-alive connection; paths `http::Uri` cannot carry go over a raw socket.
struct Client {
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    h1: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    async fn new(addr: SocketAddr, setup: &Setup, who: &pki::Identity) -> Client {
        let config = setup.client_h1(Some(who));
        let h1 = client::http1(addr, config.clone()).await.unwrap();
        Client { addr, config, h1 }
    }

    /// Status and body of `method path`.
    async fn send(&mut self, method: &str, path: &str) -> (StatusCode, String) {
        let Ok(uri) = path.parse::<http::Uri>() else {
            return self.raw(method, path).await;
        };
        let request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(uri)
            .header("host", "localhost")
            .body(Full::default())
            .unwrap();
        if self.h1.is_closed() {
            self.h1 = client::http1(self.addr, self.config.clone()).await.unwrap();
        }
        let reply = client::send1(&mut self.h1, request).await.unwrap();
        (reply.status, reply.body)
    }

    /// A request line written byte for byte, on its own connection.
    async fn raw(&self, method: &str, path: &str) -> (StatusCode, String) {
        let mut tls = client::connect(self.addr, self.config.clone())
            .await
            .unwrap();
        let request =
            format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response).await;
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .and_then(|code| StatusCode::from_u16(code).ok())
            .unwrap_or_else(|| panic!("no status line for {path:?}: {text:?}"));
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        (status, body)
    }
}

/// Spellings of the denied resources that routers or ServeDir may resolve to them, and what
/// each gets: 400 from the layer, or 404 where axum matches no route (it matches route
/// literals on the raw bytes, so `/api/%61dmin` reaches no handler and no layer).
const DENIED_SPELLINGS: &[(&str, StatusCode)] = &[
    // ServeDir decodes and collapses: each of these could serve `private/x`.
    ("/static/%70rivate/x", StatusCode::BAD_REQUEST),
    ("/static/priv%61te/x", StatusCode::BAD_REQUEST),
    ("/static//private/x", StatusCode::BAD_REQUEST),
    ("/static/private//x", StatusCode::BAD_REQUEST),
    ("/static/private%2fx", StatusCode::BAD_REQUEST),
    ("/static/private%2Fx", StatusCode::BAD_REQUEST),
    ("/static/private%5Cx", StatusCode::BAD_REQUEST),
    ("/static/private\\x", StatusCode::BAD_REQUEST),
    ("/static/./private/x", StatusCode::BAD_REQUEST),
    ("/static/private/./x", StatusCode::BAD_REQUEST),
    ("/static/public/../private/x", StatusCode::BAD_REQUEST),
    ("/static/public/%2e%2e/private/x", StatusCode::BAD_REQUEST),
    ("/static/public/..%2Fprivate/x", StatusCode::BAD_REQUEST),
    ("/static/private;/x", StatusCode::BAD_REQUEST),
    ("/static/private%3B/x", StatusCode::BAD_REQUEST),
    ("/static/private/x%00", StatusCode::BAD_REQUEST),
    // The nested router's `/admin`, spelled otherwise: no route.
    ("/api/%61dmin", StatusCode::NOT_FOUND),
    ("/api//admin", StatusCode::NOT_FOUND),
    ("/api/./admin", StatusCode::NOT_FOUND),
    ("/api/items/../admin", StatusCode::NOT_FOUND),
    ("/api/admin%2Fx", StatusCode::NOT_FOUND),
    ("/api/admin;x", StatusCode::NOT_FOUND),
    // The `{*rest}` parameter is decoded by axum.
    ("/download/%70rivate/x", StatusCode::BAD_REQUEST),
    ("/download/private%2Fx", StatusCode::BAD_REQUEST),
    ("/download//private/x", StatusCode::BAD_REQUEST),
    ("/download/public/../private/x", StatusCode::BAD_REQUEST),
    ("/download/pr%69vate/x", StatusCode::BAD_REQUEST),
];

#[tokio::test]
async fn every_spelling_of_a_denied_resource_is_denied_or_refused() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &["admins"]);
    let bob = setup.ca.client("bob", &["users"]);
    let site = site();
    let acceptor = MtlsAcceptor::new(setup.config(ClientAuth::Required));
    let addr = serve(app(site.path(), PathNormalization::default()), acceptor).await;
    let mut alice = Client::new(addr, &setup, &alice).await;
    let mut bob = Client::new(addr, &setup, &bob).await;

    // Allowed: served, to bob too.
    for (method, path, body) in [
        ("GET", "/whoami", "bob"),
        ("GET", "/api/items/1", "item:1"),
        ("GET", "/api/items/caf%C3%A9", "item:café"),
        ("GET", "/api/items/a%20b", "item:a b"),
        ("POST", "/api/reports", "report filed"),
        ("GET", "/static/public/x", "/public/x"),
        ("GET", "/static/x", "/x"),
        ("GET", "/download/public/x", "download:public/x"),
        ("HEAD", "/static/public/x", ""),
        ("HEAD", "/api/items/1", ""),
    ] {
        assert_eq!(
            bob.send(method, path).await,
            (StatusCode::OK, body.to_owned()),
            "{method} {path}"
        );
    }
    // Denied in their canonical spelling, whatever the method that reads them (HEAD is
    // answered by the GET handler, so a rule on GET covers it).
    for (method, path) in [
        ("GET", "/api/admin"),
        ("HEAD", "/api/admin"),
        ("GET", "/api/admin/x"),
        ("GET", "/api/reports"),
        ("HEAD", "/api/reports"),
        ("GET", "/static/private/x"),
        ("HEAD", "/static/private/x"),
        ("GET", "/static/private/"),
        ("GET", "/download/private/x"),
        ("HEAD", "/download/private/x"),
    ] {
        assert_eq!(
            bob.send(method, path).await.0,
            StatusCode::FORBIDDEN,
            "{method} {path}"
        );
    }
    // Every other spelling: refused by the layer before the policy, for admins too (the
    // default settings decode nothing), or matched by no route at all; never served.
    for (path, expected) in DENIED_SPELLINGS {
        for client in [&mut bob, &mut alice] {
            let (status, body) = client.send("GET", path).await;
            assert_eq!(status, *expected, "GET {path}: {body:?}");
        }
    }
    // Not routes either: never served.
    for path in ["/api/admin/", "/api/ADMIN", "//static/private/x"] {
        assert_eq!(
            bob.send("GET", path).await.0,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    // Other spellings of standard methods, on covered routes.
    for (method, path) in [
        ("get", "/api/admin"),
        ("Get", "/static/private/x"),
        ("head", "/api/reports"),
        ("DeLeTe", "/api/items/1"),
        ("get", "/static/public/x"),
    ] {
        assert_eq!(
            bob.send(method, path).await.0,
            StatusCode::BAD_REQUEST,
            "{method} {path}"
        );
    }
    // The admin reads the private resources in their canonical spelling.
    for (path, body) in [
        ("/api/admin", "admin"),
        ("/api/admin/x", "admin:x"),
        ("/api/reports", "reports"),
        ("/static/private/x", "/private/x"),
        ("/download/private/x", "download:private/x"),
    ] {
        assert_eq!(
            alice.send("GET", path).await,
            (StatusCode::OK, body.to_owned()),
            "{path}"
        );
    }
}

/// In front of ServeDir, the decoding settings serve what the strict ones refuse, and the
/// policy still sees the file ServeDir serves.
#[tokio::test]
async fn decoding_settings_judge_the_file_serve_dir_serves() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &["admins"]);
    let bob = setup.ca.client("bob", &["users"]);
    let site = site();
    let decoding = PathNormalization::default()
        .merge_slashes(MergeSlashes::Merge)
        .encoded_unreserved(EncodedUnreserved::Decode);
    let acceptor = MtlsAcceptor::new(setup.config(ClientAuth::Required));
    let addr = serve(app(site.path(), decoding), acceptor).await;
    let mut alice = Client::new(addr, &setup, &alice).await;
    let mut bob = Client::new(addr, &setup, &bob).await;
    for path in [
        "/static/private/x",
        "/static/%70rivate/x",
        "/static/priv%61te/x",
        "/static//private/x",
        "/static/private//x",
        "/static/%70riv%61te//x",
    ] {
        assert_eq!(
            bob.send("GET", path).await.0,
            StatusCode::FORBIDDEN,
            "{path}"
        );
        assert_eq!(
            alice.send("GET", path).await,
            (StatusCode::OK, "/private/x".to_owned()),
            "{path}"
        );
    }
    assert_eq!(
        bob.send("GET", "/static/p%75blic//x").await,
        (StatusCode::OK, "/public/x".to_owned())
    );
    // What no setting can make safe stays refused.
    for path in [
        "/static/private%2Fx",
        "/static/public/../private/x",
        "/static/private%5Cx",
    ] {
        assert_eq!(
            bob.send("GET", path).await.0,
            StatusCode::BAD_REQUEST,
            "{path}"
        );
    }
}

/// The issue's case: `nest("/api", api.layer(..))` with a rule on `/api/admin`. Without
/// `OriginalUri` the layer would see `/admin` and the DENY would never match.
#[tokio::test]
async fn layers_inside_nest_and_nest_service_judge_the_full_path() {
    common::init_tracing();
    let setup = Setup::new();
    let bob = setup.ca.client("bob", &["users"]);
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let record = seen.clone();
    let recording = MtlsAuthLayer::new(tower_mtls::authorize_fn(
        move |ctx: &tower_mtls::AuthContext<'_>| {
            record
                .lock()
                .unwrap()
                .push((ctx.path().to_owned(), ctx.uri().path().to_owned()));
            tower_mtls::Decision::allow("recorded")
        },
    ));
    let inner = Router::new()
        .route(
            "/admin",
            get(|uri: http::Uri| async move { uri.path().to_owned() }),
        )
        .layer(recording.clone());
    let deeper = Router::new().nest("/v1", inner);
    let service = ServiceBuilder::new()
        .layer(recording)
        .service(tower::service_fn(|req: Request<Body>| async move {
            Ok::<_, std::convert::Infallible>(http::Response::new(Body::from(
                req.uri().path().to_owned(),
            )))
        }));
    let app = Router::new()
        .nest("/api", deeper)
        .nest_service("/svc", service);
    let addr = serve(app, MtlsAcceptor::new(setup.config(ClientAuth::Required))).await;
    let mut bob = Client::new(addr, &setup, &bob).await;
    // Handlers keep seeing what nest gives them; the authorizer sees the full path.
    assert_eq!(
        bob.send("GET", "/api/v1/admin").await,
        (StatusCode::OK, "/admin".to_owned())
    );
    assert_eq!(
        bob.send("GET", "/svc/files/a").await,
        (StatusCode::OK, "/files/a".to_owned())
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [
            ("/api/v1/admin".to_owned(), "/api/v1/admin".to_owned()),
            ("/svc/files/a".to_owned(), "/svc/files/a".to_owned()),
        ]
    );
    // The canonical path is computed from the full path; the original stays in `uri()`.
    seen.lock().unwrap().clear();
    assert_eq!(bob.send("GET", "/svc/caf%c3%a9").await.0, StatusCode::OK);
    assert_eq!(
        *seen.lock().unwrap(),
        [("/svc/caf%C3%A9".to_owned(), "/svc/caf%c3%a9".to_owned())]
    );
    assert_eq!(
        bob.send("GET", "/svc/%61dmin").await.0,
        StatusCode::BAD_REQUEST
    );
}

/// The classic axum slip: a route added after `route_layer` is not covered. `Principal` must
/// not quietly mean "any verified client" there.
#[tokio::test]
async fn extractors_cannot_widen_access() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &["admins"]);
    let bob = setup.ca.client("bob", &["users"]);
    let admins_only = tower_mtls::authorize_fn(|ctx: &tower_mtls::AuthContext<'_>| {
        if ctx
            .principal()
            .organizational_units()
            .any(|ou| ou == "admins")
        {
            tower_mtls::Decision::allow("admin")
        } else {
            tower_mtls::Decision::deny("admins only")
        }
    });
    let name = |p: Principal| async move { p.common_name().unwrap_or("").to_owned() };
    let app = Router::new()
        .route("/covered", get(name))
        .route_layer(MtlsAuthLayer::new(admins_only))
        .route("/uncovered", get(name))
        .route(
            "/any",
            get(|AnyVerifiedPrincipal(p): AnyVerifiedPrincipal| async move {
                p.common_name().unwrap_or("").to_owned()
            }),
        )
        .route(
            "/optional",
            get(|p: Option<Principal>| async move { format!("{:?}", p.map(|p| p.to_string())) }),
        )
        .route(
            "/optional-any",
            get(|p: Option<AnyVerifiedPrincipal>| async move {
                format!("{:?}", p.map(|p| p.0.to_string()))
            }),
        );
    let addr = serve(app, MtlsAcceptor::new(setup.config(ClientAuth::Optional))).await;
    let get = |who: Option<&pki::Identity>, path: &'static str| {
        let config = setup.client_h1(who);
        async move { client::get_once(addr, config, path).await.unwrap() }
    };

    assert_eq!(get(Some(&alice), "/covered").await.body, "alice");
    assert_eq!(
        get(Some(&bob), "/covered").await.status,
        StatusCode::FORBIDDEN
    );
    // Not behind the layer: no principal was allowed for this request, for anyone.
    for who in [Some(&alice), Some(&bob), None] {
        let reply = get(who, "/uncovered").await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(reply.headers["content-type"], "application/problem+json");
        assert!(!reply.body.contains("bob") && !reply.body.contains("alice"));
        assert_eq!(get(who, "/optional").await.body, "None");
    }
    // Saying "any verified client" explicitly works, and still needs one.
    assert_eq!(get(Some(&bob), "/any").await.body, "bob");
    let anonymous = get(None, "/any").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.headers["content-type"],
        "application/problem+json"
    );
    assert!(
        get(Some(&bob), "/optional-any")
            .await
            .body
            .contains("CN=bob")
    );
    assert_eq!(get(None, "/optional-any").await.body, "None");
}

/// gRPC callers get `INVALID_ARGUMENT` (3) for a path without a canonical form.
#[tokio::test]
async fn grpc_requests_with_unusable_paths_get_invalid_argument() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &["admins"]);
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(tower_mtls::AllowAnyVerified))
        .service_fn(common::whoami);
    let (addr, _server) = common::start(setup.config(ClientAuth::Required), service).await;
    let mut h2 = client::http2(addr, setup.client(Some(&alice)))
        .await
        .unwrap();
    let grpc = |path: &str| {
        Request::post(path)
            .header("content-type", "application/grpc")
            .body(Full::default())
            .unwrap()
    };
    for path in [
        "/pkg.Orders/%47et",
        "/pkg.Orders//Get",
        "/pkg.Orders/../Admin/Get",
    ] {
        let reply = client::send2(&mut h2, grpc(path)).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.headers["grpc-status"], "3", "{path}");
    }
    let reply = client::send2(&mut h2, grpc("/pkg.Orders/Get"))
        .await
        .unwrap();
    assert!(reply.headers.get("grpc-status").is_none());
}

const TLS13: &rustls::SupportedProtocolVersion = &rustls::version::TLS13;
const TLS12: &rustls::SupportedProtocolVersion = &rustls::version::TLS12;

/// rustls resumes a session without asking for a certificate again, even when client auth is
/// now mandatory: a session made under optional mode must not resume after a reload to
/// required mode.
#[tokio::test]
async fn a_certificateless_session_does_not_resume_once_certificates_are_required() {
    let logs = common::LogCapture::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());
    let setup = Setup::new();
    let acceptor = MtlsAcceptor::new(setup.config(ClientAuth::Optional));
    let addr = common::start_whoami(acceptor.clone()).await;

    for version in [TLS13, TLS12] {
        acceptor
            .reload_from(&setup.builder().client_auth(ClientAuth::Optional))
            .unwrap();
        let anonymous = setup.client_versions(None, &[version]);
        // Optional mode: the connection is made (the layer answers 401), and resumes.
        for _ in 0..2 {
            let reply = client::get_once(addr, anonymous.clone(), "/")
                .await
                .unwrap();
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{version:?}");
        }
        let tls = client::connect(addr, anonymous.clone()).await.unwrap();
        assert_eq!(
            tls.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed),
            "{version:?}: the client resumes in optional mode"
        );
        drop(tls);

        acceptor
            .reload_from(&setup.builder().client_auth(ClientAuth::Required))
            .unwrap();
        let before = acceptor.stats().rejected(HandshakeFailure::NoCertificate);
        // The client resumes its session; the acceptor refuses it.
        let mut tls = client::connect(addr, anonymous.clone()).await.unwrap();
        assert_eq!(
            tls.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed),
            "{version:?}"
        );
        let _ = tls
            .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await;
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response).await;
        assert!(
            response.is_empty(),
            "{version:?}: {:?}",
            String::from_utf8_lossy(&response)
        );
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while acceptor.stats().rejected(HandshakeFailure::NoCertificate) == before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{version:?}: not refused"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    let refused = logs.lines("has no client certificate and one is now required");
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert!(
        refused
            .iter()
            .all(|line| line.contains("cause=\"no_certificate\""))
    );
}
