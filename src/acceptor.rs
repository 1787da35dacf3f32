//! [`MtlsAcceptor`]: the TLS handshake, with a timeout, ending in a [`ConnectionInfo`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::UnixTime;
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, HandshakeKind, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::MtlsConfig;
use crate::connection::{ConnectionInfo, peer_chain};
use crate::principal::PrincipalError;
use crate::roles::RoleMapper;

/// Default time a client has to complete the TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs server-side TLS handshakes and turns each finished one into a [`ConnectionInfo`].
///
/// The peer chain is read **after** the handshake completed, when rustls has verified it; a
/// resumed session's chain (which rustls restores without verifying again) is re-verified
/// against the current trust anchors, CRLs and clock, so revoking a certificate also ends its
/// resumptions. Every failed handshake emits one `tracing` event with the peer address and a
/// cause.
///
/// ```no_run
/// # async fn run(config: tower_mtls::MtlsConfig) -> std::io::Result<()> {
/// use tower_mtls::MtlsAcceptor;
///
/// let acceptor = MtlsAcceptor::new(config);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
/// loop {
///     let (tcp, peer) = listener.accept().await?;
///     let acceptor = acceptor.clone();
///     // The handshake runs in its own task: a slow client never holds up `accept`.
///     tokio::spawn(async move {
///         if let Ok((tls, info)) = acceptor.accept(tcp, peer).await {
///             println!("{:?} connected as {:?}", info.peer_addr(), info.principal());
///             // serve `tls`, attaching `info` to every request
/// #           drop(tls);
///         }
///     });
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct MtlsAcceptor {
    acceptor: TlsAcceptor,
    // Re-verifies resumed sessions; `None` when resumption is disabled instead.
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    handshake_timeout: Duration,
    role_mapper: Option<Arc<dyn RoleMapper>>,
}

impl std::fmt::Debug for MtlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsAcceptor")
            .field("handshake_timeout", &self.handshake_timeout)
            .field("reverifies_resumption", &self.verifier.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a connection did not become a [`ConnectionInfo`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The client did not finish the handshake in time.
    #[error("TLS handshake did not complete within {0:?}")]
    Timeout(Duration),
    /// The TLS handshake failed: the client's certificate was refused, versions or suites did
    /// not match, or the client sent an alert. [`AcceptError::cause`] classifies it.
    #[error("TLS handshake failed: {0}")]
    Tls(rustls::Error),
    /// A resumed session's client certificate no longer verifies (revoked, expired, or its CA
    /// is no longer trusted).
    #[error("resumed session refused: its client certificate no longer verifies: {0}")]
    ResumedCertificateRejected(rustls::Error),
    /// The connection failed during the handshake (reset, closed early).
    #[error("I/O error during the TLS handshake: {0}")]
    Io(io::Error),
    /// rustls verified the client's certificate but it cannot be parsed into a principal.
    #[error("client certificate verified but cannot be parsed: {0}")]
    Certificate(#[from] PrincipalError),
}

/// A short, stable classification of a failed handshake, for logs and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandshakeFailure {
    /// Handshake timeout.
    Timeout,
    /// Client certificate required but none sent.
    NoCertificate,
    /// Client certificate does not chain to a configured CA.
    UnknownIssuer,
    /// Client certificate (or a chain member) expired.
    Expired,
    /// Client certificate (or a chain member) not valid yet.
    NotYetValid,
    /// Revoked by a configured CRL.
    Revoked,
    /// No configured CRL covers the certificate.
    UnknownRevocationStatus,
    /// A configured CRL is past its `nextUpdate` (with expiry enforcement on).
    ExpiredCrl,
    /// The certificate's extended key usage does not allow client authentication.
    BadKeyUsage,
    /// A CA certificate presented as the client's own certificate.
    CaUsedAsLeaf,
    /// Bad signature, unsupported algorithm or malformed certificate.
    BadCertificate,
    /// The client offered only TLS versions this server does not accept.
    ProtocolVersion,
    /// No cipher suite, group or signature scheme in common.
    Incompatible,
    /// The client aborted with an alert (often: it refused the server's certificate).
    AlertReceived,
    /// A malformed or unexpected TLS message.
    Protocol,
    /// Connection reset or closed during the handshake.
    Io,
    /// Verified, but not parseable into a principal.
    UnparsableCertificate,
    /// A resumed session whose certificate no longer verifies.
    ResumptionRevoked,
}

impl HandshakeFailure {
    /// A short phrase for logs: `"unknown issuer"`, `"expired"`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::NoCertificate => "no client certificate",
            HandshakeFailure::UnknownIssuer => "unknown issuer",
            HandshakeFailure::Expired => "certificate expired",
            HandshakeFailure::NotYetValid => "certificate not yet valid",
            HandshakeFailure::Revoked => "certificate revoked",
            HandshakeFailure::UnknownRevocationStatus => "revocation status unknown",
            HandshakeFailure::ExpiredCrl => "CRL expired",
            HandshakeFailure::BadKeyUsage => "certificate not valid for client authentication",
            HandshakeFailure::CaUsedAsLeaf => "CA certificate used as client certificate",
            HandshakeFailure::BadCertificate => "bad certificate",
            HandshakeFailure::ProtocolVersion => "unsupported protocol version",
            HandshakeFailure::Incompatible => "no common cipher suite or parameters",
            HandshakeFailure::AlertReceived => "client sent an alert",
            HandshakeFailure::Protocol => "TLS protocol error",
            HandshakeFailure::Io => "connection error",
            HandshakeFailure::UnparsableCertificate => "unparsable client certificate",
            HandshakeFailure::ResumptionRevoked => "resumed session no longer valid",
        }
    }
}

impl std::fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AcceptError {
    /// What went wrong, in one word-ish.
    pub fn cause(&self) -> HandshakeFailure {
        match self {
            AcceptError::Timeout(_) => HandshakeFailure::Timeout,
            AcceptError::Tls(e) => classify(e),
            AcceptError::ResumedCertificateRejected(_) => HandshakeFailure::ResumptionRevoked,
            AcceptError::Io(_) => HandshakeFailure::Io,
            AcceptError::Certificate(_) => HandshakeFailure::UnparsableCertificate,
        }
    }

    fn from_io(e: io::Error) -> Self {
        // tokio-rustls reports TLS failures as `InvalidData` wrapping the rustls error.
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => AcceptError::Tls(tls.clone()),
            None => AcceptError::Io(e),
        }
    }
}

fn classify(e: &rustls::Error) -> HandshakeFailure {
    use rustls::Error as E;
    match e {
        E::NoCertificatesPresented => HandshakeFailure::NoCertificate,
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => HandshakeFailure::UnknownIssuer,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                HandshakeFailure::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                HandshakeFailure::NotYetValid
            }
            CertificateError::Revoked => HandshakeFailure::Revoked,
            CertificateError::UnknownRevocationStatus => HandshakeFailure::UnknownRevocationStatus,
            CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => HandshakeFailure::ExpiredCrl,
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                HandshakeFailure::BadKeyUsage
            }
            CertificateError::Other(other) => match other.0.downcast_ref::<webpki::Error>() {
                Some(webpki::Error::CaUsedAsEndEntity) => HandshakeFailure::CaUsedAsLeaf,
                #[allow(deprecated)]
                Some(
                    webpki::Error::RequiredEkuNotFound
                    | webpki::Error::RequiredEkuNotFoundContext(_),
                ) => HandshakeFailure::BadKeyUsage,
                _ => HandshakeFailure::BadCertificate,
            },
            _ => HandshakeFailure::BadCertificate,
        },
        E::InvalidCertRevocationList(_) => HandshakeFailure::UnknownRevocationStatus,
        E::PeerIncompatible(p) => {
            use rustls::PeerIncompatible as P;
            match p {
                P::Tls12NotOffered
                | P::Tls12NotOfferedOrEnabled
                | P::SupportedVersionsExtensionRequired
                | P::ServerTlsVersionIsDisabledByOurConfig => HandshakeFailure::ProtocolVersion,
                _ => HandshakeFailure::Incompatible,
            }
        }
        E::AlertReceived(_) => HandshakeFailure::AlertReceived,
        _ => HandshakeFailure::Protocol,
    }
}

impl MtlsAcceptor {
    /// An acceptor for a configuration built by [`MtlsConfig::builder`]. Session resumption
    /// stays on, and every resumed session's chain is verified again.
    pub fn new(config: MtlsConfig) -> Self {
        MtlsAcceptor {
            acceptor: TlsAcceptor::from(config.server_config),
            verifier: Some(config.verifier),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            role_mapper: None,
        }
    }

    /// An acceptor for a rustls configuration you built yourself. Its client verifier decides
    /// who gets in. Because the acceptor cannot re-verify a resumed session's chain without
    /// that verifier, **session resumption is switched off** in the copy of `config` it uses
    /// (rustls would otherwise restore a revoked certificate's identity without checking it).
    pub fn from_server_config(config: Arc<ServerConfig>) -> Self {
        let mut config = (*config).clone();
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        config.ticketer = Arc::new(NoTickets);
        MtlsAcceptor {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            verifier: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            role_mapper: None,
        }
    }

    /// How long a client has to complete the handshake (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Maps each connection's principal to [`Roles`](crate::Roles), once, at accept time.
    pub fn role_mapper(mut self, mapper: impl RoleMapper) -> Self {
        self.role_mapper = Some(Arc::new(mapper));
        self
    }

    /// The configured handshake timeout.
    pub fn get_handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// Accepts a TCP connection, reading both of its addresses.
    pub async fn accept_tcp(
        &self,
        tcp: TcpStream,
    ) -> Result<(TlsStream<TcpStream>, ConnectionInfo), AcceptError> {
        let peer = tcp.peer_addr().map_err(AcceptError::Io)?;
        let local = tcp.local_addr().ok();
        self.accept_with_addrs(tcp, peer, local).await
    }

    /// Runs the handshake on `io` (a freshly accepted connection from `peer_addr`) and returns
    /// the TLS stream with its [`ConnectionInfo`]. Fails on timeout, on any TLS error
    /// (including a client certificate rustls refused), and when a verified certificate cannot
    /// be parsed. Emits one `tracing` event on failure.
    pub async fn accept<IO>(
        &self,
        io: IO,
        peer_addr: SocketAddr,
    ) -> Result<(TlsStream<IO>, ConnectionInfo), AcceptError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.accept_with_addrs(io, peer_addr, None).await
    }

    /// [`accept`](Self::accept), also recording the server-side address of the connection.
    pub async fn accept_with_addrs<IO>(
        &self,
        io: IO,
        peer_addr: SocketAddr,
        local_addr: Option<SocketAddr>,
    ) -> Result<(TlsStream<IO>, ConnectionInfo), AcceptError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let result = self.handshake(io, peer_addr, local_addr).await;
        if let Err(err) = &result {
            tracing::warn!(
                peer = %peer_addr,
                cause = %err.cause(),
                error = %err,
                "TLS handshake failed"
            );
        }
        result
    }

    async fn handshake<IO>(
        &self,
        io: IO,
        peer_addr: SocketAddr,
        local_addr: Option<SocketAddr>,
    ) -> Result<(TlsStream<IO>, ConnectionInfo), AcceptError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let stream = tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(io))
            .await
            .map_err(|_| AcceptError::Timeout(self.handshake_timeout))?
            .map_err(AcceptError::from_io)?;
        let (_, conn) = stream.get_ref();
        if conn.handshake_kind() == Some(HandshakeKind::Resumed) {
            self.reverify_resumed(conn)?;
        }
        let info = ConnectionInfo::from_connection(
            conn,
            peer_addr,
            local_addr,
            self.role_mapper.as_deref(),
        )?;
        Ok((stream, info))
    }

    fn reverify_resumed(&self, conn: &rustls::ServerConnection) -> Result<(), AcceptError> {
        let Some(chain) = peer_chain(conn) else {
            return Ok(());
        };
        let Some(verifier) = &self.verifier else {
            // Resumption is disabled when there is no verifier; a resumed session here means
            // the configuration was changed behind our back. Refuse rather than trust it.
            return Err(AcceptError::ResumedCertificateRejected(
                rustls::Error::General("session resumption without a verifier".into()),
            ));
        };
        verifier
            .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
            .map(|_| ())
            .map_err(AcceptError::ResumedCertificateRejected)
    }
}

#[derive(Debug)]
struct NoTickets;

impl rustls::server::ProducesTickets for NoTickets {
    fn enabled(&self) -> bool {
        false
    }
    fn lifetime(&self) -> u32 {
        0
    }
    fn encrypt(&self, _plain: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn decrypt(&self, _cipher: &[u8]) -> Option<Vec<u8>> {
        None
    }
}
