//! [`ConnectionInfo`]: what the TLS handshake established, built once per connection.
//!
//! Every request of a connection carries the same `ConnectionInfo` in its extensions (an `Arc`
//! clone); [`MtlsAuthLayer`](crate::MtlsAuthLayer) reads it from there, on every stack.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use rustls::pki_types::CertificateDer;
use rustls::{CipherSuite, HandshakeKind, ProtocolVersion, ServerConnection};

use crate::identity::principal::{Principal, PrincipalError};
use crate::identity::roles::{RoleMapper, Roles};
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

impl ConnectionInfo {
    /// Reads a finished server connection. Must only be called after the handshake completed:
    /// before that rustls has verified nothing.
    pub(crate) fn from_connection(
        conn: &ServerConnection,
        peer_addr: SocketAddr,
        local_addr: Option<SocketAddr>,
        role_mapper: Option<&dyn RoleMapper>,
        trust: Arc<TrustState>,
        generation: u64,
    ) -> Result<Self, PrincipalError> {
        let principal = peer_chain(conn)
            .map(Principal::from_verified_chain)
            .transpose()?;
        let roles = match (&principal, role_mapper) {
            (Some(p), Some(mapper)) => mapper.roles(p),
            _ => Roles::none(),
        };
        let facts = Facts {
            local_addr,
            protocol_version: conn.protocol_version(),
            cipher_suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
            alpn_protocol: conn.alpn_protocol().map(<[u8]>::to_vec),
            server_name: conn.server_name().map(str::to_owned),
            handshake_kind: conn.handshake_kind(),
            ..Facts::new(peer_addr, principal, roles)
        };
        Ok(Self::from_facts(facts, Some((trust, generation))))
    }

    /// A connection of `facts`, verified under `trust` at `generation`; without a trust state
    /// it is never re-verified after reloads (its expiry is still checked).
    pub(crate) fn from_facts(facts: Facts, trust: Option<(Arc<TrustState>, u64)>) -> Self {
        let (trust, generation) = match trust {
            Some((trust, generation)) => (Some(trust), generation),
            None => (None, 0),
        };
        ConnectionInfo {
            inner: Arc::new(Details {
                facts,
                trust,
                checked: AtomicU64::new(generation << 1 | 1),
            }),
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
        let verdict = current
            .verify_client_chain(&principal.chain())
            .unwrap_or(Ok(()));
        self.inner.checked.store(
            current.generation << 1 | u64::from(verdict.is_ok()),
            Ordering::Release,
        );
        verdict.map_err(|error| {
            tracing::warn!(
                peer = %self.inner.facts.peer_addr,
                principal = %principal,
                generation = current.generation,
                %error,
                "open connection's certificate no longer verifies after reload"
            );
            StaleIdentity::NoLongerTrusted
        })
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
        let info = ConnectionInfo::from_facts(Facts::new(peer, Some(expired), Roles::none()), None);
        assert_eq!(
            info.verified_principal().unwrap_err(),
            StaleIdentity::Expired
        );
        assert!(info.principal_unchecked().is_some());
        let fresh = principal(CertSpec::default());
        let info = ConnectionInfo::from_facts(Facts::new(peer, Some(fresh), Roles::none()), None);
        assert!(info.verified_principal().unwrap().is_some());
        let anonymous = ConnectionInfo::from_facts(Facts::new(peer, None, Roles::none()), None);
        assert!(anonymous.verified_principal().unwrap().is_none());
    }
}
