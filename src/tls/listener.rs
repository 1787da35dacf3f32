//! [`MtlsListener`]: accepts TCP and runs every TLS handshake in its own task.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::tls::accept_loop::{AcceptLoop, Accepted, Handoff};
use crate::tls::acceptor::MtlsAcceptor;
use crate::tls::admission::{Admission, Limits};
use crate::tls::stats::HandshakeStats;

/// Default cap on TLS handshakes running at once.
pub const DEFAULT_MAX_HANDSHAKES_IN_FLIGHT: usize = 512;
/// Default cap on TLS handshakes running at once from one client address.
pub const DEFAULT_MAX_HANDSHAKES_IN_FLIGHT_PER_IP: usize = 256;
/// Default cap on open connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default cap on open connections from one client address.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;
/// Default cap on open connections without a client certificate.
pub const DEFAULT_MAX_ANONYMOUS_CONNECTIONS: usize = 1_000;
/// Default cap on open connections without a client certificate from one client address.
pub const DEFAULT_MAX_ANONYMOUS_CONNECTIONS_PER_IP: usize = 16;

/// A TCP listener that hands out finished TLS connections with their
/// [`ConnectionInfo`](crate::ConnectionInfo).
///
/// Usable through [`accept`](Self::accept) or as a `futures_core::Stream`; the accept loop
/// starts with the first call. [`hyper::serve`](crate::hyper::serve) takes a listener whose loop
/// has not started and serves each connection in the task that ran its handshake, without a
/// hop through a channel. Dropping the listener stops the accept loop and closes the socket.
///
/// The accept loop never waits on a handshake and never stops accepting: each handshake runs
/// in a spawned task under the acceptor's deadlines (ClientHello, then the whole handshake),
/// and finished connections come out in completion order. Its limits (see
/// [`MtlsListenerBuilder`]) hold whatever clients do:
///
/// - handshakes in flight are capped overall and per client address; at a cap the oldest
///   handshake still waiting for its ClientHello (else the oldest) is shed to make room, so a
///   flood of silent or half-sent connections holds nobody else back;
/// - open connections are capped overall and per client address, with lower caps for
///   connections without a client certificate; connections over a cap are closed at once.
///
/// Each closed connection is counted per [`ShedCause`](crate::tls::ShedCause) in
/// [`stats`](Self::stats). A connection's place is freed when it closes (precisely: when the
/// last clone of its [`ConnectionInfo`](crate::ConnectionInfo) is dropped, so do not keep
/// clones past the connection).
///
/// ```no_run
/// # async fn run(config: tower_mtls::MtlsConfig) -> std::io::Result<()> {
/// use tower_mtls::{MtlsAcceptor, MtlsListener};
///
/// let mut listener = MtlsListener::bind("127.0.0.1:8443", MtlsAcceptor::new(config)).await?;
/// while let Some((tls, info)) = listener.accept().await {
///     println!("{} connected as {:?}", info.peer_addr(), info.principal_unchecked());
/// #   drop(tls);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MtlsListener {
    local_addr: SocketAddr,
    acceptor: MtlsAcceptor,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Bound; nothing accepted yet.
    Idle(AcceptLoop),
    /// The accept loop runs and sends finished connections here.
    Running {
        incoming: mpsc::Receiver<Accepted>,
        accept_loop: JoinHandle<()>,
    },
    Closed,
}

/// Options for an [`MtlsListener`]: its caps on handshakes and connections.
///
/// ```no_run
/// # async fn run(acceptor: tower_mtls::MtlsAcceptor) -> std::io::Result<()> {
/// use tower_mtls::MtlsListener;
///
/// let listener = MtlsListener::builder(acceptor)
///     .max_connections(20_000)
///     .max_connections_per_ip(100)
///     .max_anonymous_connections_per_ip(4)
///     .bind("127.0.0.1:8443")
///     .await?;
/// # drop(listener); Ok(()) }
/// ```
///
/// | cap | default | at the cap |
/// |---|---|---|
/// | [handshakes in flight](Self::max_handshakes_in_flight) | 512 | oldest handshake shed |
/// | [… per client address](Self::max_handshakes_in_flight_per_ip) | 256 | the address's oldest handshake shed |
/// | [open connections](Self::max_connections) | 10,000 | new connection closed |
/// | [… per client address](Self::max_connections_per_ip) | 256 | new connection closed |
/// | [without a certificate](Self::max_anonymous_connections) | 1,000 | closed after its handshake |
/// | [… per client address](Self::max_anonymous_connections_per_ip) | 16 | closed after its handshake |
///
/// A client address is an IPv4 address or an IPv6 /64. Keep the caps on connections plus
/// handshakes below the process's file-descriptor limit (`ulimit -n`). `0` is treated as 1
/// everywhere.
#[derive(Clone, Debug)]
pub struct MtlsListenerBuilder {
    acceptor: MtlsAcceptor,
    limits: Limits,
}

impl MtlsListenerBuilder {
    /// At most `n` handshakes run at once (default 512). When a new TCP connection arrives at
    /// the cap, the oldest handshake still waiting for its ClientHello (else the oldest one) is
    /// closed to make room: the listener keeps accepting, and the kernel's backlog never fills
    /// with connections waiting for a slot.
    pub fn max_handshakes_in_flight(mut self, n: usize) -> Self {
        self.limits.max_handshakes = n.max(1);
        self
    }

    /// At most `n` handshakes from one client address run at once (default 256); at the cap,
    /// that address's own oldest handshake makes room (as for
    /// [`max_handshakes_in_flight`](Self::max_handshakes_in_flight)).
    pub fn max_handshakes_in_flight_per_ip(mut self, n: usize) -> Self {
        self.limits.max_handshakes_per_ip = n.max(1);
        self
    }

    /// At most `n` connections open at once (default 10,000); further TCP connections are
    /// closed as soon as they are accepted.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.limits.max_connections = n.max(1);
        self
    }

    /// At most `n` connections open at once from one client address (default 256); further
    /// ones from that address are closed.
    pub fn max_connections_per_ip(mut self, n: usize) -> Self {
        self.limits.max_connections_per_ip = n.max(1);
        self
    }

    /// At most `n` connections without a client certificate open at once (default 1,000;
    /// only [`ClientAuth::Optional`](crate::tls::ClientAuth::Optional) lets them in). Counted
    /// within [`max_connections`](Self::max_connections).
    pub fn max_anonymous_connections(mut self, n: usize) -> Self {
        self.limits.max_anonymous = n.max(1);
        self
    }

    /// At most `n` connections without a client certificate open at once from one client
    /// address (default 16).
    pub fn max_anonymous_connections_per_ip(mut self, n: usize) -> Self {
        self.limits.max_anonymous_per_ip = n.max(1);
        self
    }

    /// Binds `addr`.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> io::Result<MtlsListener> {
        self.from_tcp(TcpListener::bind(addr).await?)
    }

    /// Uses a bound listener.
    pub fn from_tcp(self, listener: TcpListener) -> io::Result<MtlsListener> {
        let local_addr = listener.local_addr()?;
        Ok(MtlsListener {
            local_addr,
            acceptor: self.acceptor.clone(),
            state: State::Idle(AcceptLoop {
                listener,
                local_addr,
                admission: Admission::new(self.limits, self.acceptor.counters()),
                acceptor: self.acceptor,
            }),
        })
    }
}

impl MtlsListener {
    /// Options: see [`MtlsListenerBuilder`].
    pub fn builder(acceptor: MtlsAcceptor) -> MtlsListenerBuilder {
        MtlsListenerBuilder {
            acceptor,
            limits: Limits {
                max_handshakes: DEFAULT_MAX_HANDSHAKES_IN_FLIGHT,
                max_handshakes_per_ip: DEFAULT_MAX_HANDSHAKES_IN_FLIGHT_PER_IP,
                max_connections: DEFAULT_MAX_CONNECTIONS,
                max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
                max_anonymous: DEFAULT_MAX_ANONYMOUS_CONNECTIONS,
                max_anonymous_per_ip: DEFAULT_MAX_ANONYMOUS_CONNECTIONS_PER_IP,
            },
        }
    }

    /// Binds `addr` with default options.
    pub async fn bind(addr: impl ToSocketAddrs, acceptor: MtlsAcceptor) -> io::Result<Self> {
        Self::builder(acceptor).bind(addr).await
    }

    /// Uses a bound listener with default options.
    pub fn from_tcp(listener: TcpListener, acceptor: MtlsAcceptor) -> io::Result<Self> {
        Self::builder(acceptor).from_tcp(listener)
    }

    /// The next finished connection, in completion order. `None` once the listener is closed.
    pub async fn accept(&mut self) -> Option<Accepted> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Option<Accepted>> {
        if matches!(self.state, State::Idle(_)) {
            self.start_channel();
        }
        match &mut self.state {
            State::Running { incoming, .. } => incoming.poll_recv(cx),
            State::Idle(_) | State::Closed => Poll::Ready(None),
        }
    }

    fn start_channel(&mut self) {
        let Some(accept_loop) = self.take_accept_loop() else {
            return;
        };
        let (tx, incoming) = mpsc::channel(accept_loop.admission.limits().max_handshakes);
        let stop = tx.clone();
        let accept_loop =
            tokio::spawn(accept_loop.run(move || ToChannel(tx.clone()), async move {
                stop.closed().await
            }));
        self.state = State::Running {
            incoming,
            accept_loop,
        };
    }

    /// The accept loop, not started, for serving connections straight from their handshake
    /// tasks; `None` (the listener unchanged) once the channel accept loop has started.
    pub(crate) fn take_accept_loop(&mut self) -> Option<AcceptLoop> {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Idle(accept_loop) => Some(accept_loop),
            other => {
                self.state = other;
                None
            }
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The acceptor, for [`reload`](MtlsAcceptor::reload) and [`stats`](MtlsAcceptor::stats).
    pub fn acceptor(&self) -> &MtlsAcceptor {
        &self.acceptor
    }

    /// Handshake counters (accepted, rejected per cause), connections shed per cause, and the
    /// handshakes and connections open now.
    pub fn stats(&self) -> HandshakeStats {
        self.acceptor.stats()
    }

    /// Stops accepting: the socket is closed, handshakes in flight are dropped, and connections
    /// already returned are not affected. [`accept`](Self::accept) then drains what had
    /// finished and returns `None`.
    pub fn close(&mut self) {
        match &mut self.state {
            State::Running {
                incoming,
                accept_loop,
            } => {
                accept_loop.abort();
                incoming.close();
            }
            State::Idle(_) => self.state = State::Closed,
            State::Closed => {}
        }
    }
}

impl Drop for MtlsListener {
    fn drop(&mut self) {
        if let State::Running { accept_loop, .. } = &self.state {
            accept_loop.abort();
        }
    }
}

impl futures_core::Stream for MtlsListener {
    type Item = Accepted;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_accept(cx)
    }
}

/// Hands finished connections to [`MtlsListener::accept`].
struct ToChannel(mpsc::Sender<Accepted>);

impl Handoff for ToChannel {
    async fn deliver(self, accepted: Accepted) {
        // A closed receiver means the listener is gone; the connection just drops.
        let _ = self.0.send(accepted).await;
    }
}
