//! [`MtlsAcceptor`]: the TLS handshake, with a timeout, ending in a [`ConnectionInfo`]; and
//! hot reload of the configuration it uses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::{HandshakeKind, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use crate::audit;
use crate::authorize::matcher::Matcher;
use crate::forwarded::proxies::TrustedProxies;
use crate::identity::connection::{ConnectionInfo, Identification, peer_chain};
use crate::identity::roles::RoleMapper;
use crate::identity::shared_principals::SharedPrincipals;
use crate::identity::trust_bundle::TrustBundle;
use crate::metrics::{self, ReloadSource};
use crate::tls::admission::{HelloReceived, Lease};
use crate::tls::config::{MtlsConfig, MtlsConfigBuilder};
use crate::tls::config_error::ConfigError;
use crate::tls::handshake_error::AcceptError;
use crate::tls::open_connections::OpenConnections;
use crate::tls::resumption::{Registry, ResumedCheck, TAG_LEN, chain_valid_at};
use crate::tls::session_resumption;
use crate::tls::stats::{HandshakeCounters, HandshakeStats};
use crate::tls::trust::{Snapshot, TrustState};

/// Default of [`MtlsAcceptor::revoked_connection_grace`].
pub const DEFAULT_REVOKED_GRACE: Duration = Duration::from_secs(3);

/// Default time a client has to complete the TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default time a client has, from the TCP accept, to send its complete ClientHello.
pub const DEFAULT_CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(5);

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
/// - Two deadlines: the ClientHello must be complete within
///   [`client_hello_timeout`](Self::client_hello_timeout) (default 5 s; a client that sends
///   nothing and one that sends part of a record are both cut off there), the whole handshake
///   within [`handshake_timeout`](Self::handshake_timeout) (default 10 s).
/// - Every failed handshake emits one `tracing` event with the peer address and a cause, and
///   is counted ([`stats`](Self::stats)); the events are rate-limited per cause.
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
    client_hello_timeout: Duration,
    role_mapper: Option<Arc<dyn RoleMapper>>,
    proxies: Option<Arc<TrustedProxies>>,
}

/// What every clone of an acceptor shares.
struct Shared {
    // Also held by every connection, to re-verify it after a reload.
    trust: Arc<TrustState>,
    // Also held by the listeners' admission control.
    counters: Arc<HandshakeCounters>,
    // Which sessions' resumption data can be believed.
    resumption: Registry,
    // Re-checked after every reload.
    open: Arc<OpenConnections>,
    // Connections presenting the same chain share its principal.
    principals: SharedPrincipals,
}

impl std::fmt::Debug for MtlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsAcceptor")
            .field("handshake_timeout", &self.handshake_timeout)
            .field("client_hello_timeout", &self.client_hello_timeout)
            .field("generation", &self.shared.trust.generation())
            .field("role_mapper", &self.role_mapper.is_some())
            .field(
                "trusted_proxies",
                &self.proxies.as_deref().map(ToString::to_string),
            )
            .finish_non_exhaustive()
    }
}

impl MtlsAcceptor {
    /// An acceptor for a configuration built by [`MtlsConfig::builder`]. Session resumption
    /// is as the configuration's [`Resumption`](crate::tls::Resumption) says (by default a
    /// session cache), and every resumed session's chain is verified again.
    pub fn new(config: MtlsConfig) -> Self {
        Self::with_snapshot(Snapshot::from_config(config))
    }

    /// An acceptor for a rustls configuration you built yourself. Its client verifier decides
    /// who gets in. Because the acceptor cannot re-verify a resumed session's chain without
    /// that verifier, **session resumption is switched off** in the copy of `config` it uses
    /// (rustls would otherwise restore a revoked certificate's identity without checking it),
    /// and open connections are re-checked for expiry only. A later
    /// [`reload`](Self::reload) with an [`MtlsConfig`] brings this crate's verifier and that
    /// configuration's [`Resumption`](crate::tls::Resumption) setting.
    pub fn from_server_config(config: Arc<ServerConfig>) -> Self {
        let mut config = (*config).clone();
        session_resumption::disable(&mut config);
        Self::with_snapshot(Snapshot::without_verifier(Arc::new(config)))
    }

    fn with_snapshot(snapshot: Snapshot) -> Self {
        MtlsAcceptor {
            shared: Arc::new(Shared {
                trust: Arc::new(TrustState::new(snapshot)),
                counters: Arc::default(),
                resumption: Registry::new(),
                open: Arc::new(OpenConnections::new(DEFAULT_REVOKED_GRACE)),
                principals: SharedPrincipals::new(),
            }),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            client_hello_timeout: DEFAULT_CLIENT_HELLO_TIMEOUT,
            role_mapper: None,
            proxies: None,
        }
    }

    /// How long a client has to complete the handshake, counted from the TCP accept
    /// (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How long a client has, from the TCP accept, to send its complete ClientHello (default
    /// 5 s). A real client sends it in its first flight, one round trip after connecting;
    /// what waits longer holds a handshake slot for nothing. A value at or above the
    /// [`handshake_timeout`](Self::handshake_timeout) leaves only that one.
    pub fn client_hello_timeout(mut self, timeout: Duration) -> Self {
        self.client_hello_timeout = timeout;
        self
    }

    /// After a reload, how long a connection whose certificate no longer verifies may take to
    /// close gracefully before it is cut (default 3 s; shared by every clone of the acceptor).
    ///
    /// Every open connection is re-verified right after a reload (in a background task, at the
    /// cost of one chain verification each). One that fails is asked to close at once —
    /// [`tower_mtls::hyper`](crate::hyper) and [`tower_mtls::axum::serve`](crate::axum) send
    /// HTTP/2 GOAWAY, or close HTTP/1.1 after the response in flight — and cut when the grace
    /// period is over: the server drops it, and its [`MtlsStream`](crate::tls::MtlsStream) fails
    /// every read and write, which also ends connections served by tonic or by axum's own
    /// `serve` and long-running streams (a gRPC `Watch`, an upgraded connection). Until then its
    /// requests get 401.
    pub fn revoked_connection_grace(self, grace: Duration) -> Self {
        self.shared.open.set_grace(grace);
        self
    }

    /// The counters, for the admission control of the listeners using this acceptor.
    pub(crate) fn counters(&self) -> Arc<HandshakeCounters> {
        self.shared.counters.clone()
    }

    /// Maps each connection's principal to [`Roles`](crate::identity::Roles), once, at accept time.
    pub fn role_mapper(mut self, mapper: impl RoleMapper) -> Self {
        self.role_mapper = Some(Arc::new(mapper));
        self
    }

    /// Believes client certificates forwarded in request headers, from the connections whose
    /// own verified principal `proxies` names, and removes those headers from every other
    /// connection's requests: see [`TrustedProxies`]. Without this, request headers are never
    /// identity.
    ///
    /// ```
    /// # fn run(tls: tower_mtls::MtlsConfig) -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_mtls::MtlsAcceptor;
    /// use tower_mtls::authorize::Matcher;
    /// use tower_mtls::forwarded::{ForwardedCertFormat, TrustedProxies};
    ///
    /// let acceptor = MtlsAcceptor::new(tls).trusted_proxies(
    ///     TrustedProxies::new(ForwardedCertFormat::Nginx).proxy(Matcher::dns_name("edge.example.org")?),
    /// );
    /// # let _ = acceptor; Ok(()) }
    /// ```
    ///
    /// The forwarded chains are verified by this acceptor's trust configuration, so an
    /// acceptor built with [`from_server_config`](Self::from_server_config) (no verifier of
    /// this crate) refuses every forwarded certificate
    /// ([`ForwardedRefusal::NoVerifier`](crate::forwarded::ForwardedRefusal::NoVerifier)).
    pub fn trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        if !self.shared.trust.current().has_verifier() {
            tracing::warn!(
                "trusted proxies on an acceptor without a tower-mtls verifier: forwarded \
                 certificates cannot be verified and every one will be refused"
            );
        }
        if proxies.proxies().iter().any(Matcher::is_any_verified) {
            tracing::warn!(
                "a trusted proxy matcher is `any verified client`: every client may then claim \
                 to be any other by sending a forwarded certificate; name the proxies"
            );
        }
        self.proxies = Some(Arc::new(proxies));
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
    /// CRLs. The session cache (or the ticket keys) is carried over when `config` has the same
    /// [`Resumption`](crate::tls::Resumption) mode as the configuration in force (else the new
    /// mode starts afresh), and resumed sessions are re-verified against the new
    /// configuration, so a certificate revoked by the reload cannot resume.
    pub fn reload(&self, config: MtlsConfig) {
        self.reload_as(config, ReloadSource::Manual);
    }

    /// Builds a configuration from `builder` (reading its files again) and, if it is valid,
    /// [`reload`](Self::reload)s it. A bad configuration is refused, logged, and the current one
    /// stays in force.
    pub fn reload_from(&self, builder: &MtlsConfigBuilder) -> Result<(), ConfigError> {
        self.reload_from_as(builder, ReloadSource::Manual)
    }

    pub(crate) fn reload_as(&self, config: MtlsConfig, source: ReloadSource) {
        let generation = self.shared.trust.replace(config);
        audit::reload_applied(source, generation);
    }

    pub(crate) fn reload_from_as(
        &self,
        builder: &MtlsConfigBuilder,
        source: ReloadSource,
    ) -> Result<(), ConfigError> {
        match builder.build() {
            Ok(config) => {
                self.reload_as(config, source);
                Ok(())
            }
            Err(err) => {
                audit::reload_refused(source, &err);
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
        self.accept_leased(io, peer_addr, local_addr, None).await
    }

    /// [`accept_with_addrs`](Self::accept_with_addrs) for a connection the listener admitted:
    /// the handshake ends early if the admission sheds it, and the finished connection must
    /// still fit the listener's caps.
    pub(crate) async fn accept_leased<IO>(
        &self,
        io: IO,
        peer_addr: SocketAddr,
        local_addr: Option<SocketAddr>,
        lease: Option<Lease>,
    ) -> Result<(TlsStream<IO>, ConnectionInfo), AcceptError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let result = self.handshake(io, peer_addr, local_addr, lease).await;
        match &result {
            Ok((_, info)) => {
                self.shared.counters.record_accepted();
                let resumed = info.is_resumed();
                // How long the certificate has left, at full handshakes (a resumption says
                // nothing new about it).
                let remaining = info.principal_unchecked().filter(|_| !resumed).map(|p| {
                    p.not_after()
                        .duration_since(SystemTime::now())
                        .unwrap_or_default()
                });
                metrics::handshake_ok(resumed, remaining);
            }
            Err(err) => {
                self.shared.counters.record_rejected(err.cause());
                let resumed = matches!(
                    err,
                    AcceptError::ResumedCertificateRejected(_)
                        | AcceptError::ResumedWithoutCertificate
                );
                metrics::handshake_failed(err.cause(), resumed);
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
        mut lease: Option<Lease>,
    ) -> Result<(TlsStream<IO>, ConnectionInfo), AcceptError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        // One snapshot for the whole handshake: the config that verified the chain is the one
        // whose generation the connection records, and the one its tickets name.
        let current = self.shared.trust.current_full();
        if current.server_certificate_expired(SystemTime::now()) {
            return Err(AcceptError::ServerCertificateExpired);
        }
        let issuing = current
            .has_verifier()
            .then(|| self.shared.resumption.begin(current.generation));
        let hello = lease.as_ref().map(Lease::hello_hook);
        let tls = self.tls_handshake(
            &current,
            io,
            issuing.as_ref().map(|i| i.tag().encode()),
            hello,
        );
        let stream = match lease.as_mut() {
            Some(lease) => tokio::select! {
                stream = tls => stream?,
                cause = lease.shed() => return Err(AcceptError::Shed(cause)),
            },
            None => tls.await?,
        };
        let (_, conn) = stream.get_ref();
        let reverified = if conn.handshake_kind() == Some(HandshakeKind::Resumed) {
            self.recheck_resumed(&current, conn)?
        } else {
            None
        };
        // Which bundle verified the chain: rustls's verifier cannot say, so the snapshot that
        // ran this handshake works it out again (for free with one bundle).
        let trust_bundle = match (reverified, peer_chain(conn)) {
            (Some(bundle), _) => bundle,
            (None, Some(chain)) => current.bundle_of(chain).map_err(AcceptError::Tls)?,
            (None, None) => TrustBundle::Unnamed,
        };
        if let Some(lease) = lease.as_mut() {
            lease
                .establish(peer_chain(conn).is_none())
                .map_err(AcceptError::Shed)?;
        }
        let info = ConnectionInfo::from_connection(
            conn,
            peer_addr,
            local_addr,
            Identification {
                role_mapper: self.role_mapper.as_ref(),
                proxies: self.proxies.as_ref(),
                principals: &self.shared.principals,
            },
            (self.shared.trust.clone(), current.generation),
            trust_bundle,
            lease,
        )?;
        self.shared.open.register(&info, &self.shared.trust);
        if let Some(issuing) = issuing {
            issuing.vouch();
        }
        Ok((stream, info))
    }

    /// The TLS part: the ClientHello under its deadline, then the rest under the whole
    /// handshake's. Sessions this connection issues carry `resumption_tag`; they are believed
    /// only if the whole accept ends well (see `resumption`).
    async fn tls_handshake<IO>(
        &self,
        current: &Snapshot,
        io: IO,
        resumption_tag: Option<[u8; TAG_LEN]>,
        hello: Option<HelloReceived>,
    ) -> Result<TlsStream<IO>, AcceptError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let started = Instant::now();
        let hello_limit = self.client_hello_timeout.min(self.handshake_timeout);
        let hello_timeout = if self.client_hello_timeout < self.handshake_timeout {
            AcceptError::ClientHelloTimeout(self.client_hello_timeout)
        } else {
            AcceptError::Timeout(self.handshake_timeout)
        };
        let read_hello = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
        let start = tokio::time::timeout_at(deadline(started, hello_limit), read_hello)
            .await
            .map_err(|_| hello_timeout)?
            .map_err(AcceptError::from_io)?;
        if let Some(hello) = hello {
            hello.received();
        }
        let config = current.tls.config().clone();
        let accept = match resumption_tag {
            Some(tag) => start.into_stream_with(config, |conn| conn.set_resumption_data(&tag)),
            None => start.into_stream(config),
        };
        tokio::time::timeout_at(deadline(started, self.handshake_timeout), accept)
            .await
            .map_err(|_| AcceptError::Timeout(self.handshake_timeout))?
            .map_err(AcceptError::from_io)
    }

    /// Checks a resumed session's chain: in full with the current verifier, unless the session
    /// proves that this very configuration verified it, in which case only what time alone
    /// can change is checked. A full check also says which bundle verified the chain.
    fn recheck_resumed(
        &self,
        current: &Snapshot,
        conn: &rustls::ServerConnection,
    ) -> Result<Option<TrustBundle>, AcceptError> {
        let Some(chain) = peer_chain(conn) else {
            // rustls skips client authentication on resumption, including whether it is
            // mandatory: a session from optional mode resumes without a certificate after a
            // reload to required mode.
            return if current.requires_client_certificate() {
                Err(AcceptError::ResumedWithoutCertificate)
            } else {
                Ok(None)
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
            return Ok(None);
        }
        // Anything else, including a chain that is no longer valid, gets the verifier's
        // verdict (and its precise error).
        self.shared.counters.record_resumed_check(true);
        match current.verify_client_chain(chain) {
            Some(verdict) => verdict
                .map(|bundle| Some(bundle.clone()))
                .map_err(AcceptError::ResumedCertificateRejected),
            // Resumption is disabled when there is no verifier; a resumed session here means
            // the configuration was changed behind our back. Refuse rather than trust it.
            None => Err(AcceptError::ResumedCertificateRejected(
                rustls::Error::General("session resumption without a verifier".into()),
            )),
        }
    }
}

/// `start + timeout`, or a deadline too far away to matter when that overflows.
fn deadline(start: Instant, timeout: Duration) -> Instant {
    start
        .checked_add(timeout)
        .unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 24 * 3600))
}
