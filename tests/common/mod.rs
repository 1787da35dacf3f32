//! Shared test setup: a real mTLS server on 127.0.0.1 and real hyper clients.
#![allow(dead_code)]

#[path = "../../examples/support/client.rs"]
pub mod client;
pub mod example_servers;
pub mod forwarded_values;
#[path = "../../examples/support/permission_store.rs"]
pub mod permission_store;
#[path = "../../examples/support/pki.rs"]
pub mod pki;
pub mod resumed;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use rustls::ClientConfig;
use tower_mtls::tls::{ClientAuth, HandshakeFailure, MtlsConfigBuilder};
use tower_mtls::{AllowAnyVerified, MtlsAcceptor, MtlsAuthLayer, MtlsConfig, Principal};

pub use client::Reply;

/// A CA, a server certificate and helpers to make clients of that CA.
pub struct Setup {
    pub ca: pki::Ca,
    pub server: pki::Identity,
}

impl Setup {
    pub fn new() -> Self {
        let ca = pki::Ca::root("test CA");
        let server = ca.server();
        Setup { ca, server }
    }

    /// A builder with the server identity and the client CA, client auth required.
    pub fn builder(&self) -> MtlsConfigBuilder {
        MtlsConfig::builder()
            .server_cert_pem(self.server.chain_pem())
            .server_key_pem(self.server.key_pem.clone())
            .client_ca_pem(self.ca.pem())
    }

    pub fn config(&self, mode: ClientAuth) -> MtlsConfig {
        self.builder()
            .client_auth(mode)
            .build()
            .expect("server config")
    }

    /// A client config offering only `versions` (HTTP/1.1).
    pub fn client_versions(
        &self,
        identity: Option<&pki::Identity>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        client::client_config_versions(
            self.ca.der(),
            identity.map(|id| (id.chain.clone(), id.key())),
            &[b"http/1.1"],
            versions,
        )
    }

    /// A client config presenting `identity` (or none), offering HTTP/1.1 and h2.
    pub fn client(&self, identity: Option<&pki::Identity>) -> Arc<ClientConfig> {
        client::client_config(
            self.ca.der(),
            identity.map(|id| (id.chain.clone(), id.key())),
            &[b"h2", b"http/1.1"],
        )
    }

    pub fn client_h1(&self, identity: Option<&pki::Identity>) -> Arc<ClientConfig> {
        client::client_config(
            self.ca.der(),
            identity.map(|id| (id.chain.clone(), id.key())),
            &[b"http/1.1"],
        )
    }
}

/// Starts `tower_mtls::hyper::serve` on an ephemeral loopback port.
pub async fn start<S, B>(
    config: MtlsConfig,
    service: S,
) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    S: tower_mtls::hyper::HttpService<B>,
    B: tower_mtls::hyper::HttpBody,
{
    start_acceptor(MtlsAcceptor::new(config), service).await
}

/// Like [`start`], with an acceptor of the test's own.
pub async fn start_acceptor<S, B>(
    acceptor: MtlsAcceptor,
    service: S,
) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    S: tower_mtls::hyper::HttpService<B>,
    B: tower_mtls::hyper::HttpBody,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let task = tokio::spawn(async move {
        let listener = tower_mtls::MtlsListener::from_tcp(listener, acceptor).expect("listener");
        tower_mtls::hyper::serve(listener, service).await;
    });
    (addr, task)
}

/// A handler that answers with the principal it sees, as JSON.
pub async fn whoami(
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let resumed = req
        .extensions()
        .get::<tower_mtls::ConnectionInfo>()
        .map(|info| info.is_resumed());
    let body = match req.extensions().get::<Principal>() {
        Some(p) => {
            let mut json = principal_json(p);
            json["resumed"] = serde_json::json!(resumed);
            json.to_string()
        }
        None => "null".to_owned(),
    };
    Ok(Response::new(Full::new(Bytes::from(body))))
}

pub fn principal_json(p: &Principal) -> serde_json::Value {
    serde_json::json!({
        "subject": p.subject().to_string(),
        "issuer": p.issuer().to_string(),
        "common_name": p.common_name(),
        "organizational_units": p.organizational_units().collect::<Vec<_>>(),
        "spiffe_id": p.spiffe_id().map(|id| id.to_string()),
        "dns_names": p.dns_names().collect::<Vec<_>>(),
        "uris": p.uris().collect::<Vec<_>>(),
        "emails": p.emails().collect::<Vec<_>>(),
        "ips": p.ip_addresses().map(|ip| ip.to_string()).collect::<Vec<_>>(),
        "serial": p.serial(),
        "fingerprint_sha256": p.fingerprint_sha256_hex(),
        "trust_bundle": p.trust_bundle().name(),
        "spiffe_bundle": matches!(p.trust_bundle(), tower_mtls::identity::TrustBundle::SpiffeTrustDomain(_)),
    })
}

pub fn json(reply: &Reply) -> serde_json::Value {
    serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", reply.body))
}

/// Installs a tracing subscriber once, so failures show the crate's events.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// An authorizer that allows everything and counts its calls.
pub fn counting_allow() -> (
    impl Fn(&tower_mtls::AuthContext<'_>) -> tower_mtls::Decision + Clone,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    let authorizer = move |_: &tower_mtls::AuthContext<'_>| {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tower_mtls::Decision::allow("test")
    };
    (authorizer, calls)
}

/// Serves [`whoami`] behind `MtlsAuthLayer::new(AllowAnyVerified)` with `acceptor`.
pub async fn start_whoami(acceptor: MtlsAcceptor) -> SocketAddr {
    let service = tower::ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(AllowAnyVerified))
        .service_fn(whoami);
    start_acceptor(acceptor, service).await.0
}

/// Waits (up to 5 s) until the acceptor has counted a failed handshake of `cause`; the server
/// records it a moment after the client sees the connection fail.
pub async fn expect_rejected(acceptor: &MtlsAcceptor, cause: HandshakeFailure) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let stats = acceptor.stats();
        if stats.rejected(cause) > 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no handshake rejected for {cause:?}; stats: {stats:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A tracing writer that keeps everything written, for tests that check log events.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// A subscriber writing plain text (no colours) at INFO and above into this capture.
    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + use<> {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish()
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The captured lines containing `needle`.
    pub fn lines(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

/// Serves an axum app over `acceptor` on an ephemeral loopback port, with `ConnectionInfo` in
/// every request, the way the axum docs of the crate say.
pub async fn serve_axum(app: axum::Router, acceptor: MtlsAcceptor) -> SocketAddr {
    let listener = tower_mtls::MtlsListener::bind("127.0.0.1:0", acceptor)
        .await
        .unwrap();
    let addr = listener.local_addr();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<tower_mtls::ConnectionInfo>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// A directory for `ServeDir` with `private/x`, `public/x` and `x`, each file holding its own
/// name.
pub fn site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["private/x", "public/x", "x"] {
        let file = dir.path().join(name);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, format!("/{name}")).unwrap();
    }
    dir
}

/// A tonic channel over this crate's test rustls client (so it presents `config`'s client
/// certificate).
pub async fn tonic_channel(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let config = config.clone();
            async move {
                let tls = client::connect(addr, config).await?;
                Ok::<_, client::BoxError>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .unwrap()
}
