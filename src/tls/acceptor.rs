//! [`MtlsAcceptor`]: the TLS handshake, with a timeout, ending in a [`ConnectionInfo`]; and
//! hot reload of the configuration it uses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::{HandshakeKind, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::audit;
use crate::identity::connection::{ConnectionInfo, peer_chain};
use crate::identity::roles::RoleMapper;
use crate::tls::config::{MtlsConfig, MtlsConfigBuilder};
use crate::tls::config_error::ConfigError;
use crate::tls::handshake_error::AcceptError;
use crate::tls::resumption::{Registry, ResumedCheck, chain_valid_at};
use crate::tls::stats::{HandshakeCounters, HandshakeStats};
use crate::tls::trust::{Snapshot, TrustState};

/// Default time a client has to complete the TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs server-side TLS handshakes and turns each finished one into a [`ConnectionInfo`].
///
/// - The peer chain is read **after** the handshake completed, when rustls has verified it.
/// - A resumed session's chain (which rustls restores without verifying again) is re-verified
///   against the *current* trust anchors, CRLs and clock, so revoking a certificate also ends
///   its resumptions. When the configuration that verified the chain in full is provably still
///   the one in force, only the certificates' validity windows are checked again (see
///   [`HandshakeStats::resumed_validity_only`]). A session made without a client
///   certificate (optional client auth) does not resume once a reload made certificates
///   required ([`AcceptError::ResumedWithoutCertificate`]).
/// - [`reload`](Self::reload) swaps certificates, anchors and CRLs atomically for new
///   handshakes; connections already open are re-checked lazily on their next request (see
///   [`ConnectionInfo::revalidate`]).
/// - Every failed handshake emits one `tracing` event with the peer address and a cause, and
///   is counted ([`stats`](Self::stats)).
///
/// Clones share the configuration, the counters and the reload state.
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
///             println!("{:?} connected as {:?}", info.peer_addr(), info.principal_unchecked());
///             // serve `tls`, attaching `info` to every request
/// #           drop(tls);
///         }
///     });
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct MtlsAcceptor {
    shared: Arc<Shared>,
    handshake_timeout: Duration,
    role_mapper: Option<Arc<dyn RoleMapper>>,
}

/// What every clone of an acceptor shares.
struct Shared {
    // Also held by every connection, to re-verify it after a reload.
    trust: Arc<TrustState>,
    counters: HandshakeCounters,
    // Which sessions' resumption data can be believed.
    resumption: Registry,
}

impl std::fmt::Debug for MtlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsAcceptor")
            .field("handshake_timeout", &self.handshake_timeout)
            .field("generation", &self.shared.trust.generation())
            .field("role_mapper", &self.role_mapper.is_some())
            .finish_non_exhaustive()
    }
}

impl MtlsAcceptor {
    /// An acceptor for a configuration built by [`MtlsConfig::builder`]. Session resumption
    /// stays on, and every resumed session's chain is verified again.
    pub fn new(config: MtlsConfig) -> Self {
        Self::with_snapshot(Snapshot::from_config(config))
    }

    /// An acceptor for a rustls configuration you built yourself. Its client verifier decides
    /// who gets in. Because the acceptor cannot re-verify a resumed session's chain without
    /// that verifier, **session resumption is switched off** in the copy of `config` it uses
    /// (rustls would otherwise restore a revoked certificate's identity without checking it),
    /// and open connections are re-checked for expiry only.
    pub fn from_server_config(config: Arc<ServerConfig>) -> Self {
        let mut config = (*config).clone();
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        config.ticketer = Arc::new(NoTickets);
        Self::with_snapshot(Snapshot::without_verifier(Arc::new(config)))
    }

    fn with_snapshot(snapshot: Snapshot) -> Self {
        MtlsAcceptor {
            shared: Arc::new(Shared {
                trust: Arc::new(TrustState::new(snapshot)),
                counters: HandshakeCounters::default(),
                resumption: Registry::new(),
            }),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            role_mapper: None,
        }
    }

    /// How long a client has to complete the handshake (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Maps each connection's principal to [`Roles`](crate::identity::Roles), once, at accept time.
    pub fn role_mapper(mut self, mapper: impl RoleMapper) -> Self {
        self.role_mapper = Some(Arc::new(mapper));
        self
    }

    /// Handshake counters: accepted, and rejected per cause.
    pub fn stats(&self) -> HandshakeStats {
        self.shared.counters.snapshot()
    }

    /// How many times the configuration has been replaced.
    pub fn generation(&self) -> u64 {
        self.shared.trust.generation()
    }

    /// Replaces the configuration for every new handshake, atomically. Open connections keep
    /// their TLS session; their next request is re-checked against the new trust anchors and
    /// CRLs. The session cache is carried over, and resumed sessions are re-verified against
    /// the new configuration, so a certificate revoked by the reload cannot resume.
    pub fn reload(&self, config: MtlsConfig) {
        let generation = self.shared.trust.replace(config);
        tracing::info!(generation, "TLS configuration reloaded");
    }

    /// Builds a configuration from `builder` (reading its files again) and, if it is valid,
    /// [`reload`](Self::reload)s it. A bad configuration is refused, logged, and the current one
    /// stays in force.
    pub fn reload_from(&self, builder: &MtlsConfigBuilder) -> Result<(), ConfigError> {
        match builder.build() {
            Ok(config) => {
                self.reload(config);
                Ok(())
            }
            Err(err) => {
                tracing::error!(error = %err, "TLS configuration reload refused; keeping the current one");
                Err(err)
            }
        }
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
        match &result {
            Ok(_) => self.shared.counters.record_accepted(),
            Err(err) => {
                self.shared.counters.record_rejected(err.cause());
                audit::handshake_failed(peer_addr, err);
            }
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
        // One snapshot for the whole handshake: the config that verified the chain is the one
        // whose generation the connection records, and the one its tickets name.
        let current = self.shared.trust.current_full();
        let (accept, issuing) = if current.has_verifier() {
            // Sessions this connection issues say who verified their chain; they are believed
            // only if this call ends well (see `resumption`).
            let issuing = self.shared.resumption.begin(current.generation);
            let tag = issuing.tag().encode();
            let accept = current
                .tls
                .accept_with(io, |conn| conn.set_resumption_data(&tag));
            (accept, Some(issuing))
        } else {
            (current.tls.accept(io), None)
        };
        let stream = tokio::time::timeout(self.handshake_timeout, accept)
            .await
            .map_err(|_| AcceptError::Timeout(self.handshake_timeout))?
            .map_err(AcceptError::from_io)?;
        let (_, conn) = stream.get_ref();
        if conn.handshake_kind() == Some(HandshakeKind::Resumed) {
            self.recheck_resumed(&current, conn)?;
        }
        let info = ConnectionInfo::from_connection(
            conn,
            peer_addr,
            local_addr,
            self.role_mapper.as_deref(),
            self.shared.trust.clone(),
            current.generation,
        )?;
        if let Some(issuing) = issuing {
            issuing.vouch();
        }
        Ok((stream, info))
    }

    /// Checks a resumed session's chain: in full with the current verifier, unless the session
    /// proves that this very configuration verified it, in which case only what time alone
    /// can change is checked.
    fn recheck_resumed(
        &self,
        current: &Snapshot,
        conn: &rustls::ServerConnection,
    ) -> Result<(), AcceptError> {
        let Some(chain) = peer_chain(conn) else {
            // rustls skips client authentication on resumption, including whether it is
            // mandatory: a session from optional mode resumes without a certificate after a
            // reload to required mode.
            return if current.requires_client_certificate() {
                Err(AcceptError::ResumedWithoutCertificate)
            } else {
                Ok(())
            };
        };
        let now = SystemTime::now();
        let validity_only = match current.resumed_check {
            ResumedCheck::ValidityOnly { until } => until.is_none_or(|until| now < until),
            ResumedCheck::Full => false,
        };
        // `received_resumption_data` is what this acceptor stored in the session, returned by
        // rustls only for a session it found in our own store or decrypted from our own
        // ticket: the client cannot forge it (see `resumption`).
        if validity_only
            && self
                .shared
                .resumption
                .vouches(conn.received_resumption_data(), current.generation)
            && chain_valid_at(chain, now)
        {
            self.shared.counters.record_resumed_check(false);
            return Ok(());
        }
        // Anything else, including a chain that is no longer valid, gets the verifier's
        // verdict (and its precise error).
        self.shared.counters.record_resumed_check(true);
        match current.verify_client_chain(chain) {
            Some(verdict) => verdict.map_err(AcceptError::ResumedCertificateRejected),
            // Resumption is disabled when there is no verifier; a resumed session here means
            // the configuration was changed behind our back. Refuse rather than trust it.
            None => Err(AcceptError::ResumedCertificateRejected(
                rustls::Error::General("session resumption without a verifier".into()),
            )),
        }
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
