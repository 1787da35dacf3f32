//! A real mTLS HTTP client (hyper over tokio-rustls), for the examples and the tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client config trusting `server_ca`, presenting `identity` if given, offering `alpn`.
pub fn client_config(
    server_ca: &CertificateDer<'static>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    client_config_versions(server_ca, identity, alpn, rustls::DEFAULT_VERSIONS)
}

/// [`client_config`] offering only `versions`.
pub fn client_config_versions(
    server_ca: &CertificateDer<'static>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(server_ca.clone()).expect("server CA");
    let builder = ClientConfig::builder_with_provider(Arc::new(tower_mtls::tls::crypto_provider()))
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .expect("client identity"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Connects and completes the TLS handshake.
pub async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> Result<TlsStream<TcpStream>, BoxError> {
    let tcp = TcpStream::connect(addr).await?;
    // As curl and browsers do: without it, a request sent right after the handshake can wait
    // for a delayed ACK (40 ms) when the server has nothing to send in between.
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost")?;
    Ok(TlsConnector::from(config).connect(name, tcp).await?)
}

/// [`connect`] from the loopback address `from` (127.0.0.x: another client address).
pub async fn connect_from(
    from: std::net::IpAddr,
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> Result<TlsStream<TcpStream>, BoxError> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let tcp = socket.connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost")?;
    Ok(TlsConnector::from(config).connect(name, tcp).await?)
}

/// An HTTP/1.1 keep-alive connection from the loopback address `from`.
pub async fn http1_from(
    from: std::net::IpAddr,
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> Result<http1::SendRequest<Full<Bytes>>, BoxError> {
    let tls = connect_from(from, addr, config).await?;
    let (sender, conn) = http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// An HTTP/2 connection from the loopback address `from`.
pub async fn http2_from(
    from: std::net::IpAddr,
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> Result<http2::SendRequest<Full<Bytes>>, BoxError> {
    let tls = connect_from(from, addr, config).await?;
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Whether the server closes `io` (EOF or an error) within `wait`, reading and discarding
/// whatever it sends meanwhile.
pub async fn closed_within<IO>(io: &mut IO, wait: std::time::Duration) -> bool
where
    IO: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    tokio::time::timeout(wait, async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// An HTTP/1.1 keep-alive connection.
pub async fn http1(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> Result<http1::SendRequest<Full<Bytes>>, BoxError> {
    let tls = connect(addr, config).await?;
    let (sender, conn) = http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// An HTTP/2 connection (the config must offer `h2`).
pub async fn http2(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> Result<http2::SendRequest<Full<Bytes>>, BoxError> {
    let tls = connect(addr, config).await?;
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "localhost")
        .body(Full::default())
        .expect("request")
}

async fn read(resp: http::Response<hyper::body::Incoming>) -> Result<Reply, BoxError> {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

pub async fn send1(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<Reply, BoxError> {
    sender.ready().await?;
    read(sender.send_request(req).await?).await
}

pub async fn send2(
    sender: &mut http2::SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<Reply, BoxError> {
    sender.ready().await?;
    read(sender.send_request(req).await?).await
}

/// The status of `GET path` on an open HTTP/1.1 connection.
pub async fn status1(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    path: &str,
) -> Result<StatusCode, BoxError> {
    Ok(send1(sender, get(path)).await?.status)
}

/// The status of `GET path` on an open HTTP/2 connection.
pub async fn status2(
    sender: &mut http2::SendRequest<Full<Bytes>>,
    path: &str,
) -> Result<StatusCode, BoxError> {
    Ok(send2(sender, get(path)).await?.status)
}

/// One request on a fresh HTTP/1.1 connection.
pub async fn get_once(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    path: &str,
) -> Result<Reply, BoxError> {
    let mut sender = http1(addr, config).await?;
    send1(&mut sender, get(path)).await
}
