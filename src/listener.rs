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
/// Usable through [`accept`](Self::accept) or as a `futures_core::Stream`. Dropping it stops
/// the accept loop and closes the socket.
#[derive(Debug)]
pub struct MtlsListener {
    incoming: mpsc::Receiver<Accepted>,
    local_addr: SocketAddr,
    acceptor: MtlsAcceptor,
    accept_loop: JoinHandle<()>,
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

    /// Binds `addr` and starts accepting.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> io::Result<MtlsListener> {
        self.from_tcp(TcpListener::bind(addr).await?)
    }

    /// Starts accepting on a bound listener.
    pub fn from_tcp(self, listener: TcpListener) -> io::Result<MtlsListener> {
        let local_addr = listener.local_addr()?;
        let (tx, incoming) = mpsc::channel(self.max_in_flight);
        let accept_loop = tokio::spawn(accept_loop(
            listener,
            local_addr,
            self.acceptor.clone(),
            Arc::new(Semaphore::new(self.max_in_flight)),
            tx,
        ));
        Ok(MtlsListener {
            incoming,
            local_addr,
            acceptor: self.acceptor,
            accept_loop,
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

    /// Binds `addr` with default options and starts accepting.
    pub async fn bind(addr: impl ToSocketAddrs, acceptor: MtlsAcceptor) -> io::Result<Self> {
        Self::builder(acceptor).bind(addr).await
    }

    /// Starts accepting on a bound listener with default options.
    pub fn from_tcp(listener: TcpListener, acceptor: MtlsAcceptor) -> io::Result<Self> {
        Self::builder(acceptor).from_tcp(listener)
    }

    /// The next finished connection, in completion order. `None` once the listener is closed.
    pub async fn accept(&mut self) -> Option<Accepted> {
        self.incoming.recv().await
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
        self.accept_loop.abort();
        self.incoming.close();
    }
}

impl Drop for MtlsListener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl futures_core::Stream for MtlsListener {
    type Item = Accepted;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_recv(cx)
    }
}

async fn accept_loop(
    listener: TcpListener,
    listening_on: SocketAddr,
    acceptor: MtlsAcceptor,
    slots: Arc<Semaphore>,
    tx: mpsc::Sender<Accepted>,
) {
    // Bound to one address, every connection's local address is that one: no need for a
    // getsockname per connection. A wildcard bind has to ask, connection by connection.
    let fixed_local = (!listening_on.ip().is_unspecified()).then_some(listening_on);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return, // the semaphore is never closed; defensive
            },
            () = tx.closed() => return,
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
            () = tx.closed() => return,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let local = fixed_local.or_else(|| tcp.local_addr().ok());
            let result = acceptor.accept_with_addrs(tcp, peer, local).await;
            drop(permit);
            if let Ok(accepted) = result {
                // A closed receiver means the listener is gone; the connection just drops.
                let _ = tx.send(accepted).await;
            }
        });
    }
}
