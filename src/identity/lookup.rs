//! The one lookup of a request's verified identity, used by the layer and by every extractor,
//! so that each stack is looked up the same way: the connection's own principal, or, on a
//! trusted-proxy connection, the client the proxy forwarded (verified like a direct one).

use std::borrow::Cow;
use std::net::SocketAddr;

use http::HeaderMap;

use crate::audit;
use crate::forwarded::refusal::ForwardedRefusal;
use crate::identity::connection::ConnectionInfo;
use crate::identity::principal::Principal;
use crate::identity::roles::Roles;

/// The connection a request arrived on: `tower_mtls::hyper` and tonic put the
/// [`ConnectionInfo`] in the extensions as is; axum's `into_make_service_with_connect_info`
/// wraps it in `ConnectInfo`.
pub(crate) fn connection_of(extensions: &http::Extensions) -> Option<&ConnectionInfo> {
    extensions
        .get::<ConnectionInfo>()
        .or_else(|| crate::axum_connect_info(extensions))
}

/// Who a request is from: the connection's principal and roles, or the forwarded client's.
pub(crate) struct Identity<'a> {
    pub(crate) connection: &'a ConnectionInfo,
    pub(crate) principal: Cow<'a, Principal>,
    pub(crate) roles: Cow<'a, Roles>,
}

/// The verified, still-valid identity of a request, found by its extensions (and, on a
/// trusted-proxy connection, its forwarded-certificate headers).
pub(crate) fn authenticate<'a>(
    extensions: &'a http::Extensions,
    headers: &HeaderMap,
) -> Result<Identity<'a>, NoIdentity<'a>> {
    let Some(connection) = connection_of(extensions) else {
        return Err(NoIdentity {
            peer: None,
            principal: None,
            reason: "no ConnectionInfo on the request (is the service served by tower-mtls?)",
            forwarded: None,
        });
    };
    let Some(principal) = connection.principal_unchecked() else {
        return Err(NoIdentity {
            peer: Some(connection.peer_addr()),
            principal: None,
            reason: "no client certificate",
            forwarded: None,
        });
    };
    if let Err(stale) = connection.revalidate() {
        return Err(NoIdentity {
            peer: Some(connection.peer_addr()),
            principal: Some(principal),
            reason: stale.as_str(),
            forwarded: None,
        });
    }
    match connection.forwarding() {
        Some(forwarding) if forwarding.is_proxy() => {
            match forwarding.resolve(connection.trust(), principal, headers) {
                Ok(forwarded) => Ok(Identity {
                    connection,
                    principal: Cow::Owned(forwarded.principal),
                    roles: Cow::Owned(forwarded.roles),
                }),
                Err(refusal) => Err(NoIdentity {
                    peer: Some(connection.peer_addr()),
                    principal: Some(principal),
                    reason: "no valid forwarded client certificate",
                    forwarded: Some(Box::new(refusal)),
                }),
            }
        }
        _ => Ok(Identity {
            connection,
            principal: Cow::Borrowed(principal),
            roles: Cow::Borrowed(connection.roles()),
        }),
    }
}

/// Why a request has no verified identity, with what is known of it for the log.
pub(crate) struct NoIdentity<'a> {
    pub(crate) peer: Option<SocketAddr>,
    /// The connection's principal (the proxy's, for a forwarded refusal).
    pub(crate) principal: Option<&'a Principal>,
    pub(crate) reason: &'static str,
    /// Set when a trusted proxy's forwarded certificate was the problem.
    pub(crate) forwarded: Option<Box<ForwardedRefusal>>,
}

impl NoIdentity<'_> {
    /// The one event of this refusal.
    pub(crate) fn report(&self, method: &http::Method, path: &str) {
        match (&self.forwarded, self.principal) {
            (Some(refusal), Some(proxy)) => {
                audit::forwarded_rejected(self.peer, proxy, refusal, method, path);
            }
            _ => audit::unauthenticated(self.peer, self.principal, self.reason, method, path),
        }
    }
}

/// The connection of a request that carries forwarded-certificate headers it must not: the
/// connection has trusted proxies configured but is not one of them. `None` (nothing to do)
/// for everything else, which is the path every ordinary request takes at no cost.
pub(crate) fn untrusted_forwarded<'a>(
    extensions: &'a http::Extensions,
    headers: &HeaderMap,
) -> Option<&'a ConnectionInfo> {
    let connection = connection_of(extensions)?;
    let forwarding = connection.forwarding()?;
    (!forwarding.is_proxy() && forwarding.present_in(headers)).then_some(connection)
}

/// Removes every configured forwarded-certificate header from a request of `connection`,
/// which is not a trusted proxy (see [`untrusted_forwarded`]); logs and counts it once.
pub(crate) fn remove_forwarded(
    connection: &ConnectionInfo,
    headers: &mut HeaderMap,
    method: &http::Method,
    path: &str,
) {
    let Some(forwarding) = connection.forwarding() else {
        return;
    };
    let mut removed = 0;
    for name in forwarding.config().header().header_names() {
        if let http::header::Entry::Occupied(entry) = headers.entry(name) {
            removed += entry.remove_entry_mult().1.count();
        }
    }
    if removed > 0 {
        audit::forwarded_headers_removed(
            connection.peer_addr(),
            connection.principal_unchecked(),
            removed,
            method,
            path,
        );
    }
}
