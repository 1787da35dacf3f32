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
use crate::tls::stats::HandshakeStats;

/// Default cap on TLS handshakes running at once.
pub const DEFAULT_MAX_HANDSHAKES_IN_FLIGHT: usize = 512;

/// A TCP listener that hands out finished TLS connections with their
/// [`ConnectionInfo`](crate::ConnectionInfo).
///
/// Usable through [`accept`](Self::accept) or as a `futures_core::Stream`; the accept loop
/// starts with the first call. [`hyper::serve`](crate::hyper::serve) takes a listener whose loop
/// has not started and serves each connection in the task that ran its handshake, without a
/// hop through a channel. Dropping the listener stops the accept loop and closes the socket.
///
/// The accept loop never waits on a handshake: each one runs in a spawned task under the
/// acceptor's timeout, at most [`max_handshakes_in_flight`](MtlsListenerBuilder::max_handshakes_in_flight)
/// at once, and finished connections come out in completion order. A client that connects and
/// sends nothing occupies one slot until the timeout, and holds nobody else back.
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

/// Options for an [`MtlsListener`].
#[derive(Clone, Debug)]
pub struct MtlsListenerBuilder {
    acceptor: MtlsAcceptor,
    max_in_flight: usize,
}

impl MtlsListenerBuilder {
    /// At most `n` handshakes run at once (default 512); further TCP connections wait in the
    /// kernel's accept queue. `0` is treated as 1.
    pub fn max_handshakes_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
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
                acceptor: self.acceptor,
                max_in_flight: self.max_in_flight,
            }),
        })
    }
}

impl MtlsListener {
    /// Options: see [`MtlsListenerBuilder`].
    pub fn builder(acceptor: MtlsAcceptor) -> MtlsListenerBuilder {
        MtlsListenerBuilder {
            acceptor,
            max_in_flight: DEFAULT_MAX_HANDSHAKES_IN_FLIGHT,
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
        let (tx, incoming) = mpsc::channel(accept_loop.max_in_flight);
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

    /// Handshake counters: accepted, and rejected per cause.
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
