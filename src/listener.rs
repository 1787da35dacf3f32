//! [`MtlsListener`]: accepts TCP and runs every TLS handshake in its own task.
//!
//! The accept loop never waits on a handshake: each one runs in a spawned task under the
//! acceptor's timeout, at most [`max_handshakes_in_flight`](MtlsListenerBuilder::max_handshakes_in_flight)
//! at once, and finished connections come out in completion order. A client that connects and
//! sends nothing occupies one slot until the timeout, and holds nobody else back.
//!
//! ```no_run
//! # async fn run(config: tower_mtls::MtlsConfig) -> std::io::Result<()> {
//! use tower_mtls::{MtlsAcceptor, MtlsListener};
//!
//! let mut listener = MtlsListener::bind("127.0.0.1:8443", MtlsAcceptor::new(config)).await?;
//! while let Some((tls, info)) = listener.accept().await {
//!     println!("{} connected as {:?}", info.peer_addr(), info.principal());
//! #   drop(tls);
//! }
//! # Ok(()) }
//! ```

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;

use crate::acceptor::MtlsAcceptor;
use crate::connection::ConnectionInfo;
use crate::failure::HandshakeStats;

/// Default cap on TLS handshakes running at once.
pub const DEFAULT_MAX_HANDSHAKES_IN_FLIGHT: usize = 512;

/// A finished mutual-TLS connection.
pub type Accepted = (TlsStream<TcpStream>, ConnectionInfo);

/// A TCP listener that hands out finished TLS connections with their [`ConnectionInfo`].
///
/// Usable through [`accept`](Self::accept) or as a `futures_core::Stream`; the accept loop
/// starts with the first call. [`hyper::serve`](crate::hyper::serve) takes a listener whose loop
/// has not started and serves each connection in the task that ran its handshake, without a
/// hop through a channel. Dropping the listener stops the accept loop and closes the socket.
#[derive(Debug)]
pub struct MtlsListener {
    local_addr: SocketAddr,
    acceptor: MtlsAcceptor,
    max_in_flight: usize,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Bound; nothing accepted yet.
    Idle(TcpListener),
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
        Ok(MtlsListener {
            local_addr: listener.local_addr()?,
            acceptor: self.acceptor,
            max_in_flight: self.max_in_flight,
            state: State::Idle(listener),
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
        let State::Idle(listener) = std::mem::replace(&mut self.state, State::Closed) else {
            return;
        };
        let (tx, incoming) = mpsc::channel(self.max_in_flight);
        let stop = tx.clone();
        let accept_loop = tokio::spawn(accept_loop(
            listener,
            self.local_addr,
            self.acceptor.clone(),
            self.max_in_flight,
            move || tx.clone(),
            |tx: mpsc::Sender<Accepted>, accepted| async move {
                // A closed receiver means the listener is gone; the connection just drops.
                let _ = tx.send(accepted).await;
            },
            async move { stop.closed().await },
        ));
        self.state = State::Running {
            incoming,
            accept_loop,
        };
    }

    /// The socket and the settings, for serving connections straight from their handshake
    /// tasks; `None` (the listener unchanged) once the channel accept loop has started.
    pub(crate) fn take_idle(&mut self) -> Option<(TcpListener, SocketAddr, MtlsAcceptor, usize)> {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Idle(listener) => Some((
                listener,
                self.local_addr,
                self.acceptor.clone(),
                self.max_in_flight,
            )),
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

/// Accepts TCP connections until `stop` completes, running each handshake in its own task
/// (at most `max_in_flight` at once) and handing each finished connection to `deliver`, in
/// that same task, together with a `slot` made for it in the loop (a channel sender, or what
/// serving the connection needs).
pub(crate) async fn accept_loop<Slot, MakeSlot, Deliver, Delivered>(
    listener: TcpListener,
    listening_on: SocketAddr,
    acceptor: MtlsAcceptor,
    max_in_flight: usize,
    mut make_slot: MakeSlot,
    deliver: Deliver,
    stop: impl Future<Output = ()>,
) where
    MakeSlot: FnMut() -> Slot,
    Slot: Send + 'static,
    Deliver: FnOnce(Slot, Accepted) -> Delivered + Clone + Send + 'static,
    Delivered: Future<Output = ()> + Send,
{
    // Bound to one address, every connection's local address is that one: no need for a
    // getsockname per connection. A wildcard bind has to ask, connection by connection.
    let fixed_local = (!listening_on.ip().is_unspecified()).then_some(listening_on);
    let slots = Arc::new(Semaphore::new(max_in_flight));
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return, // the semaphore is never closed; defensive
            },
            () = &mut stop => return,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning, keep serving.
                    tracing::warn!(error = %err, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => return,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let slot = make_slot();
        let deliver = deliver.clone();
        tokio::spawn(async move {
            let local = fixed_local.or_else(|| tcp.local_addr().ok());
            let result = acceptor.accept_with_addrs(tcp, peer, local).await;
            drop(permit);
            if let Ok(accepted) = result {
                deliver(slot, accepted).await;
            }
        });
    }
}
