//! [`ConnectionInfo`]: what the TLS handshake established, built once per connection.
//!
//! Every request of a connection carries the same `ConnectionInfo` in its extensions (an `Arc`
//! clone); [`MtlsAuthLayer`](crate::MtlsAuthLayer) reads it from there, on every stack.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use rustls::pki_types::CertificateDer;
use rustls::{CipherSuite, HandshakeKind, ProtocolVersion, ServerConnection};

use crate::audit;
use crate::forwarded::proxies::TrustedProxies;
use crate::forwarded::resolve::Forwarding;
use crate::identity::principal::{Principal, PrincipalError};
use crate::identity::roles::{RoleMapper, Roles};
use crate::identity::shared_principals::SharedPrincipals;
use crate::identity::trust_bundle::TrustBundle;
use crate::tls::admission::Lease;
use crate::tls::trust::TrustState;

/// The facts of one TLS connection, shared by all its requests. Cloning is an `Arc` clone.
#[derive(Clone)]
pub struct ConnectionInfo {
    inner: Arc<Details>,
}

struct Details {
    facts: Facts,
    // `None` only for connections made up in tests (see `test_util`).
    trust: Option<Arc<TrustState>>,
    // `generation << 1 | verified`: the trust generation the chain was last checked against,
    // and whether it passed. One atomic load per request while nothing was reloaded.
    checked: AtomicU64,
    // The connection's place in its listener's counts, freed with the last clone (`None`
    // outside a listener).
    _lease: Option<Lease>,
    close: CloseSignal,
    // `None` when no trusted proxies are configured. Boxed: 200 bytes that every connection
    // would otherwise carry, proxies or not.
    forwarding: Option<Box<Forwarding>>,
}

/// A graceful close asked for by anyone holding the connection's info, and the hard cut that
/// may follow it (after a revocation, when the graceful close took too long).
#[derive(Default)]
struct CloseSignal {
    requested: AtomicBool,
    notify: tokio::sync::Notify,
    cut: AtomicBool,
    cut_notify: tokio::sync::Notify,
    // The task polling the connection's IO through an `MtlsStream`, woken by a cut.
    io_waker: atomic_waker::AtomicWaker,
}

/// A [`ConnectionInfo`] that does not keep the connection's state alive.
#[derive(Clone)]
pub(crate) struct WeakConnectionInfo(std::sync::Weak<Details>);

impl WeakConnectionInfo {
    /// The connection, if anything still holds it.
    pub(crate) fn upgrade(&self) -> Option<ConnectionInfo> {
        self.0.upgrade().map(|inner| ConnectionInfo { inner })
    }

    /// Whether the connection is gone.
    pub(crate) fn is_gone(&self) -> bool {
        self.0.strong_count() == 0
    }
}

/// What a handshake established, as plain data.
pub(crate) struct Facts {
    pub(crate) peer_addr: SocketAddr,
    pub(crate) local_addr: Option<SocketAddr>,
    pub(crate) protocol_version: Option<ProtocolVersion>,
    pub(crate) cipher_suite: Option<CipherSuite>,
    pub(crate) alpn_protocol: Option<Vec<u8>>,
    pub(crate) server_name: Option<String>,
    pub(crate) handshake_kind: Option<HandshakeKind>,
    pub(crate) principal: Option<Principal>,
    pub(crate) roles: Roles,
}

impl Facts {
    /// A connection from `peer_addr` of which nothing else is known.
    pub(crate) fn new(peer_addr: SocketAddr, principal: Option<Principal>, roles: Roles) -> Self {
        Facts {
            peer_addr,
            local_addr: None,
            protocol_version: None,
            cipher_suite: None,
            alpn_protocol: None,
            server_name: None,
            handshake_kind: None,
            principal,
            roles,
        }
    }
}

impl StaleIdentity {
    /// A short phrase for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            StaleIdentity::Expired => "client certificate expired",
            StaleIdentity::NoLongerTrusted => "client certificate no longer trusted",
        }
    }
}

/// Why the identity of an open connection is no longer accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StaleIdentity {
    /// The client certificate's `notAfter` has passed since the handshake.
    #[error("client certificate expired")]
    Expired,
    /// After a reload, the chain no longer verifies (revoked, or its CA removed).
    #[error("client certificate no longer verifies against the current trust configuration")]
    NoLongerTrusted,
}

/// The verified peer chain of a finished handshake: the one place that names rustls's accessor
/// (renamed in rustls 0.24).
pub(crate) fn peer_chain(conn: &ServerConnection) -> Option<&[CertificateDer<'static>]> {
    conn.peer_certificates().filter(|chain| !chain.is_empty())
}

/// How the acceptor turns a verified principal into what requests see: roles, and whether
/// the connection is a trusted proxy.
#[derive(Clone, Copy)]
pub(crate) struct Identification<'a> {
    pub(crate) role_mapper: Option<&'a Arc<dyn RoleMapper>>,
    pub(crate) proxies: Option<&'a Arc<TrustedProxies>>,
    // The principals of the acceptor's other open connections, to share.
    pub(crate) principals: &'a SharedPrincipals,
}

impl ConnectionInfo {
    /// Reads a finished server connection. Must only be called after the handshake completed:
    /// before that rustls has verified nothing. `trust` is the state and generation that
    /// verified the chain, `trust_bundle` the bundle whose anchor did.
    pub(crate) fn from_connection(
        conn: &ServerConnection,
        peer_addr: SocketAddr,
        local_addr: Option<SocketAddr>,
        identification: Identification<'_>,
        trust: (Arc<TrustState>, u64),
        trust_bundle: TrustBundle,
        lease: Option<Lease>,
    ) -> Result<Self, PrincipalError> {
        let principal = peer_chain(conn)
            .map(|chain| identification.principals.get_or_parse(chain, trust_bundle))
            .transpose()?;
        let roles = match (&principal, identification.role_mapper) {
            (Some(p), Some(mapper)) => mapper.roles(p),
            _ => Roles::none(),
        };
        let forwarding = identification.proxies.map(|proxies| {
            Forwarding::new(
                proxies,
                principal.as_ref(),
                &roles,
                identification.role_mapper,
            )
        });
        let facts = Facts {
            local_addr,
            protocol_version: conn.protocol_version(),
            cipher_suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
            alpn_protocol: conn.alpn_protocol().map(<[u8]>::to_vec),
            server_name: conn.server_name().map(str::to_owned),
            handshake_kind: conn.handshake_kind(),
            ..Facts::new(peer_addr, principal, roles)
        };
        Ok(Self::from_facts(facts, Some(trust), lease, forwarding))
    }

    /// A connection of `facts`, verified under `trust` at `generation`; without a trust state
    /// it is never re-verified after reloads (its expiry is still checked). `lease` is its place
    /// in a listener's counts, freed with the last clone; `forwarding` what it does with
    /// forwarded-certificate headers.
    pub(crate) fn from_facts(
        facts: Facts,
        trust: Option<(Arc<TrustState>, u64)>,
        lease: Option<Lease>,
        forwarding: Option<Forwarding>,
    ) -> Self {
        let (trust, generation) = match trust {
            Some((trust, generation)) => (Some(trust), generation),
            None => (None, 0),
        };
        ConnectionInfo {
            inner: Arc::new(Details {
                facts,
                trust,
                checked: AtomicU64::new(generation << 1 | 1),
                _lease: lease,
                close: CloseSignal::default(),
                forwarding: forwarding.map(Box::new),
            }),
        }
    }

    /// Asks the server to close this connection gracefully. [`tower_mtls::hyper`](crate::hyper)
    /// and [`tower_mtls::axum::serve`](crate::axum) then send HTTP/2 GOAWAY, or close an
    /// HTTP/1.1 connection after the response in progress (`Connection: close`), and drop the
    /// connection if its requests in flight have not finished within the graceful-close
    /// timeout. Other servers can watch [`close_requested`](Self::close_requested).
    ///
    /// The listener's own reasons to close a connection (its maximum age, for example) use
    /// the same path.
    pub fn request_close(&self) {
        let close = &self.inner.close;
        close.requested.store(true, Ordering::Release);
        close.notify.notify_waiters();
    }

    /// Ends the connection now: servers of this crate drop it, and an
    /// [`MtlsStream`](crate::tls::MtlsStream) fails every read and write from then on (tonic,
    /// axum's own `serve`, and anything else that drives the stream get an I/O error). Used when
    /// a connection whose certificate no longer verifies did not finish closing gracefully in
    /// time. Implies [`request_close`](Self::request_close).
    pub fn cut(&self) {
        self.request_close();
        let close = &self.inner.close;
        close.cut.store(true, Ordering::Release);
        close.cut_notify.notify_waiters();
        close.io_waker.wake();
    }

    /// Whether [`cut`](Self::cut) was called on this connection.
    pub fn is_cut(&self) -> bool {
        self.inner.close.cut.load(Ordering::Acquire)
    }

    /// Completes once [`cut`](Self::cut) is called (immediately if it already was): for a
    /// server loop of your own, the cue to drop the connection now.
    pub async fn cut_requested(&self) {
        let close = &self.inner.close;
        loop {
            let notified = close.cut_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if close.cut.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Whether the connection was cut, registering `waker` to be woken when it is: what the
    /// connection's IO checks before each read and write.
    pub(crate) fn poll_cut(&self, waker: &std::task::Waker) -> bool {
        let close = &self.inner.close;
        close.io_waker.register(waker);
        close.cut.load(Ordering::Acquire)
    }

    /// This connection, not kept alive by the reference.
    pub(crate) fn downgrade(&self) -> WeakConnectionInfo {
        WeakConnectionInfo(Arc::downgrade(&self.inner))
    }

    /// Whether [`request_close`](Self::request_close) was called on this connection.
    pub fn is_close_requested(&self) -> bool {
        self.inner.close.requested.load(Ordering::Acquire)
    }

    /// Completes once [`request_close`](Self::request_close) is called on this connection
    /// (immediately if it already was): the cue for a server loop to start closing it.
    pub async fn close_requested(&self) {
        let close = &self.inner.close;
        loop {
            let notified = close.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a request between the two is not missed.
            notified.as_mut().enable();
            if close.requested.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Whether the connection's identity is still acceptable *now*: the leaf certificate has
    /// not expired since the handshake, and, if the acceptor was reloaded since, the chain
    /// still verifies against the new trust anchors and CRLs (checked once per connection per
    /// reload). [`MtlsAuthLayer`](crate::MtlsAuthLayer) calls this for every request and
    /// answers 401 on failure. Always `Ok` for a connection without a principal.
    pub fn revalidate(&self) -> Result<(), StaleIdentity> {
        let Some(principal) = &self.inner.facts.principal else {
            return Ok(());
        };
        if SystemTime::now() > principal.not_after() {
            return Err(StaleIdentity::Expired);
        }
        let Some(trust) = &self.inner.trust else {
            return Ok(());
        };
        let generation = trust.generation();
        let checked = self.inner.checked.load(Ordering::Acquire);
        if checked >> 1 != generation {
            return self.reverify(trust, principal);
        }
        if checked & 1 == 1 {
            Ok(())
        } else {
            Err(StaleIdentity::NoLongerTrusted)
        }
    }

    #[cold]
    fn reverify(&self, trust: &TrustState, principal: &Principal) -> Result<(), StaleIdentity> {
        let current = trust.current();
        // The identity is only still good if the *same* bundle vouches for it: a name that a
        // reload moved to another bundle is not the name the authorizer saw.
        let verdict = match current.verify_client_chain(&principal.chain()) {
            None => Ok(()),
            Some(Ok(bundle)) if bundle == principal.trust_bundle() => Ok(()),
            Some(Ok(bundle)) => Err(rustls::Error::General(format!(
                "now verified by {bundle}, not by {}",
                principal.trust_bundle()
            ))),
            Some(Err(error)) => Err(error),
        };
        self.inner.checked.store(
            current.generation << 1 | u64::from(verdict.is_ok()),
            Ordering::Release,
        );
        verdict.map_err(|error| {
            audit::identity_revoked(
                self.inner.facts.peer_addr,
                principal,
                current.generation,
                &error,
            );
            StaleIdentity::NoLongerTrusted
        })
    }

    /// Whether this connection's own verified principal is one of the acceptor's
    /// [`TrustedProxies`]: its requests' client is then the certificate the proxy forwards,
    /// verified per request (see [`MtlsAuthLayer`](crate::MtlsAuthLayer)), and
    /// [`principal_unchecked`](Self::principal_unchecked) and
    /// [`verified_principal`](Self::verified_principal) are the **proxy's** identity.
    pub fn is_trusted_proxy(&self) -> bool {
        self.inner
            .forwarding
            .as_deref()
            .is_some_and(Forwarding::is_proxy)
    }

    /// What the connection does with forwarded-certificate headers (`None`: no trusted
    /// proxies are configured).
    pub(crate) fn forwarding(&self) -> Option<&Forwarding> {
        self.inner.forwarding.as_deref()
    }

    /// The trust state that verifies this connection's chains (`None` for made-up ones).
    pub(crate) fn trust(&self) -> Option<&TrustState> {
        self.inner.trust.as_deref()
    }

    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.inner.facts.peer_addr
    }

    /// The server's address of this connection, when known.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.facts.local_addr
    }

    /// The negotiated TLS version.
    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.inner.facts.protocol_version
    }

    /// The negotiated cipher suite.
    pub fn cipher_suite(&self) -> Option<CipherSuite> {
        self.inner.facts.cipher_suite
    }

    /// The negotiated ALPN protocol (`h2`, `http/1.1`), if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.inner.facts.alpn_protocol.as_deref()
    }

    /// The SNI host name the client asked for, if any.
    pub fn server_name(&self) -> Option<&str> {
        self.inner.facts.server_name.as_deref()
    }

    /// Full handshake, full with HelloRetryRequest, or resumed.
    pub fn handshake_kind(&self) -> Option<HandshakeKind> {
        self.inner.facts.handshake_kind
    }

    /// Whether the session was resumed (its client chain was then re-verified by
    /// [`MtlsAcceptor`](crate::MtlsAcceptor) against the current trust settings).
    pub fn is_resumed(&self) -> bool {
        self.inner.facts.handshake_kind == Some(HandshakeKind::Resumed)
    }

    /// The client identity verified **at handshake time, not re-checked**: the certificate may
    /// have expired, or a reload may have revoked it, since. Fine for logs; for access use
    /// [`verified_principal`](Self::verified_principal), or the principal
    /// [`MtlsAuthLayer`](crate::MtlsAuthLayer) puts in the request. `None` when the client sent
    /// no certificate (possible only with
    /// [`ClientAuth::Optional`](crate::tls::ClientAuth::Optional)).
    pub fn principal_unchecked(&self) -> Option<&Principal> {
        self.inner.facts.principal.as_ref()
    }

    /// The client identity, if it is still acceptable now ([`revalidate`](Self::revalidate)):
    /// `Ok(None)` without a client certificate, `Err` when it expired or no longer verifies.
    /// This is "any verified client", with no authorization.
    pub fn verified_principal(&self) -> Result<Option<&Principal>, StaleIdentity> {
        self.revalidate()?;
        Ok(self.principal_unchecked())
    }

    /// The roles the acceptor's [`RoleMapper`] gave the principal (none without a mapper or
    /// without a principal).
    pub fn roles(&self) -> &Roles {
        &self.inner.facts.roles
    }
}

impl fmt::Debug for ConnectionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.inner.facts;
        f.debug_struct("ConnectionInfo")
            .field("peer_addr", &d.peer_addr)
            .field("local_addr", &d.local_addr)
            .field("protocol_version", &d.protocol_version)
            .field("cipher_suite", &d.cipher_suite)
            .field(
                "alpn_protocol",
                &d.alpn_protocol.as_deref().map(String::from_utf8_lossy),
            )
            .field("server_name", &d.server_name)
            .field("handshake_kind", &d.handshake_kind)
            .field("principal", &d.principal)
            .field("roles", &d.roles)
            .field("trusted_proxy", &self.is_trusted_proxy())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{CertSpec, principal};

    #[test]
    fn verified_principal_revalidates_and_the_unchecked_one_does_not() {
        let peer = SocketAddr::from(([127, 0, 0, 1], 1));
        let expired = principal(CertSpec {
            not_after: Some(time::OffsetDateTime::now_utc() - time::Duration::hours(1)),
            ..CertSpec::default()
        });
        let info = ConnectionInfo::from_facts(
            Facts::new(peer, Some(expired), Roles::none()),
            None,
            None,
            None,
        );
        assert_eq!(
            info.verified_principal().unwrap_err(),
            StaleIdentity::Expired
        );
        assert!(info.principal_unchecked().is_some());
        let fresh = principal(CertSpec::default());
        let info = ConnectionInfo::from_facts(
            Facts::new(peer, Some(fresh), Roles::none()),
            None,
            None,
            None,
        );
        assert!(info.verified_principal().unwrap().is_some());
        let anonymous =
            ConnectionInfo::from_facts(Facts::new(peer, None, Roles::none()), None, None, None);
        assert!(anonymous.verified_principal().unwrap().is_none());
    }
}
