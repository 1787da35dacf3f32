//! What every bench shares: a throwaway PKI (root → intermediate → client), the server
//! configuration, client configurations, a real `ConnectionInfo` from an in-memory handshake,
//! and the trivial service that every variant wraps.
#![allow(dead_code)]

#[path = "../../examples/support/client.rs"]
pub mod client;
#[path = "../../examples/support/pki.rs"]
pub mod pki;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio_rustls::TlsConnector;
use tower_mtls::tls::MtlsConfigBuilder;
use tower_mtls::{AuthContext, ConnectionInfo, Decision, MtlsAcceptor, MtlsConfig};
use tower_service::Service;

/// Client leaves are issued by an intermediate, so the client sends a two-certificate chain
/// and the server verifies two signatures: the common shape of a real deployment.
pub struct Pki {
    pub root: pki::Ca,
    pub intermediate: pki::Ca,
    pub server: pki::Identity,
    pub client: pki::Identity,
}

impl Pki {
    /// A PKI whose client leaf has a key for `alg` (CAs and server are P-256).
    pub fn new(alg: &'static rcgen::SignatureAlgorithm) -> Pki {
        let root = pki::Ca::root("bench root CA");
        let intermediate = root.intermediate("bench intermediate CA");
        let server = root.server();
        let client = intermediate
            .client_with_key_alg("bench-client", &["benchers"], alg)
            .with_intermediate(&intermediate);
        Pki {
            root,
            intermediate,
            server,
            client,
        }
    }

    /// A P-256 PKI.
    pub fn p256() -> Pki {
        Pki::new(&rcgen::PKCS_ECDSA_P256_SHA256)
    }

    pub fn config(&self) -> MtlsConfig {
        self.builder().build().expect("server config")
    }

    /// The server configuration, to change before building.
    pub fn builder(&self) -> MtlsConfigBuilder {
        MtlsConfig::builder()
            .server_cert_pem(self.server.chain_pem())
            .server_key_pem(self.server.key_pem.clone())
            .client_ca_pem(self.root.pem())
    }

    /// A client presenting the client identity, offering `alpn`. Without `resume`, every
    /// connection is a full handshake (rustls clients resume by default).
    pub fn client_config(&self, alpn: &[&[u8]], resume: bool) -> Arc<ClientConfig> {
        let config = client::client_config(
            self.root.der(),
            Some((self.client.chain.clone(), self.client.key())),
            alpn,
        );
        if resume {
            return config;
        }
        let mut config = (*config).clone();
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    }
}

/// A fixed, fake peer address for in-memory connections.
pub fn peer_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40000))
}

/// Drives the client side of a TLS handshake over `io`.
pub async fn client_handshake<IO>(
    config: Arc<ClientConfig>,
    io: IO,
) -> tokio_rustls::client::TlsStream<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from("localhost").expect("server name");
    TlsConnector::from(config)
        .connect(name, io)
        .await
        .expect("client handshake")
}

/// One full mTLS handshake over an in-memory pipe through `acceptor`; returns both ends.
pub async fn mtls_duplex(
    acceptor: &MtlsAcceptor,
    client: Arc<ClientConfig>,
) -> (
    (
        tokio_rustls::server::TlsStream<DuplexStream>,
        ConnectionInfo,
    ),
    tokio_rustls::client::TlsStream<DuplexStream>,
) {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let (server, client) = tokio::join!(
        acceptor.accept(server_io, peer_addr()),
        client_handshake(client, client_io)
    );
    (server.expect("server handshake"), client)
}

/// A real `ConnectionInfo`, from one in-memory handshake with the P-256 client.
pub fn connection_info(pki: &Pki) -> ConnectionInfo {
    let acceptor = MtlsAcceptor::new(pki.config());
    let client = pki.client_config(&[b"http/1.1"], false);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ((_, info), _) = rt.block_on(mtls_duplex(&acceptor, client));
    assert!(
        info.principal_unchecked().is_some(),
        "the handshake yields a principal"
    );
    info
}

/// A request as the connection service leaves it: `info` in its extensions.
pub fn request_on(info: &ConnectionInfo) -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut().insert(info.clone());
    req
}

/// The synchronous OU matcher every closure variant uses.
pub fn ou_matcher(ctx: &AuthContext<'_>) -> Decision {
    if ctx
        .principal()
        .organizational_units()
        .any(|ou| ou == "benchers")
    {
        Decision::allow("OU=benchers")
    } else {
        Decision::deny("needs OU=benchers")
    }
}

/// The trivial handler behind every variant: a static body, nothing read from the request.
pub async fn hello<B>(_req: Request<B>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

/// Readies and calls `service` once, polling its future with a no-op waker: every service
/// here completes on the first poll, so no executor cost is measured.
pub fn call_now<S, R>(service: &mut S, req: R) -> S::Response
where
    S: Service<R>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    match service.poll_ready(&mut cx) {
        Poll::Ready(ready) => ready.expect("ready"),
        Poll::Pending => panic!("the bench services are always ready"),
    }
    let future = pin!(service.call(req));
    match future.poll(&mut cx) {
        Poll::Ready(response) => response.expect("response"),
        Poll::Pending => panic!("the bench services complete on the first poll"),
    }
}

/// The RFC 9440 headers a proxy writes for the bench client's chain (`Client-Cert`, the leaf;
/// `Client-Cert-Chain`, the intermediate), and headers of the same sizes that nothing reads.
pub fn rfc9440_headers(pki: &Pki) -> (http::HeaderMap, http::HeaderMap) {
    use base64::Engine as _;
    let b64 = |der: &[u8]| base64::engine::general_purpose::STANDARD.encode(der);
    let leaf = format!(":{}:", b64(&pki.client.chain[0]));
    let chain = format!(":{}:", b64(&pki.client.chain[1]));
    let mut forwarded = http::HeaderMap::new();
    forwarded.insert("client-cert", leaf.parse().expect("header"));
    forwarded.insert("client-cert-chain", chain.parse().expect("header"));
    let mut padded = http::HeaderMap::new();
    padded.insert("x-padding", "x".repeat(leaf.len()).parse().expect("header"));
    padded.insert(
        "x-padding-2",
        "x".repeat(chain.len()).parse().expect("header"),
    );
    (forwarded, padded)
}
