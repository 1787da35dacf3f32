//! The accept loop behind [`MtlsListener`](crate::MtlsListener): TCP accepts, admission, and
//! every TLS handshake in a task of its own.
//!
//! The loop never waits on a handshake, and never stops calling `accept()`: the admission
//! decides at once whether a new connection gets a handshake (shedding an older one if a cap
//! is reached) or is closed. What happens to a finished connection is up to a [`Handoff`],
//! made in the loop for each TCP connection and moved into its handshake task: a channel
//! sender for [`MtlsListener::accept`](crate::MtlsListener::accept), or, for
//! [`hyper::serve`](crate::hyper), what serving the connection needs: it is served at once,
//! straight from its handshake task, in a task of its own (no channel, no accept loop in
//! between; the handshake's task then ends, so an idle connection holds one task, not two).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

use crate::audit;
use crate::identity::connection::ConnectionInfo;
use crate::tls::acceptor::MtlsAcceptor;
use crate::tls::admission::Admission;

/// A finished mutual-TLS connection.
pub type Accepted = (TlsStream<TcpStream>, ConnectionInfo);

/// Where one finished connection goes.
pub(crate) trait Handoff: Send + 'static {
    /// Takes the connection, in its handshake task.
    fn deliver(self, accepted: Accepted) -> impl Future<Output = ()> + Send;
}

/// A bound socket and the settings of its accept loop; [`run`](Self::run) starts it.
#[derive(Debug)]
pub(crate) struct AcceptLoop {
    pub(crate) listener: TcpListener,
    pub(crate) local_addr: SocketAddr,
    pub(crate) acceptor: MtlsAcceptor,
    pub(crate) admission: Admission,
}

impl AcceptLoop {
    /// Accepts TCP connections until `stop` completes, running each admitted handshake in its
    /// own task and giving each finished connection to the handoff `handoff_for` made for it.
    pub(crate) async fn run<H: Handoff>(
        self,
        mut handoff_for: impl FnMut() -> H,
        stop: impl Future<Output = ()>,
    ) {
        let AcceptLoop {
            listener,
            local_addr,
            acceptor,
            admission,
        } = self;
        // Bound to one address, every connection's local address is that one: no need for a
        // getsockname per connection. A wildcard bind has to ask, connection by connection.
        let fixed_local = (!local_addr.ip().is_unspecified()).then_some(local_addr);
        tokio::pin!(stop);
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(err) => {
                        // EMFILE and friends: back off instead of spinning, keep serving.
                        audit::accept_failed(&err);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut stop => return,
            };
            let lease = match admission.admit(peer.ip()) {
                Ok(lease) => lease,
                Err(cause) => {
                    // Closed at once, before any TLS work.
                    drop(tcp);
                    audit::connection_refused(peer, cause);
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let handoff = handoff_for();
            tokio::spawn(async move {
                let local = fixed_local.or_else(|| tcp.local_addr().ok());
                // The handshake boxed: the task's own future stays a few words and is not
                // copied about when the task is spawned or polled.
                let handshake = Box::pin(acceptor.accept_leased(tcp, peer, local, Some(lease)));
                let Ok(accepted) = handshake.await else {
                    return;
                };
                handoff.deliver(accepted).await;
            });
        }
    }
}
