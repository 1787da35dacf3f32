//! The tracing events of refusals: one event per rejected request and per failed handshake,
//! with the peer address and a reason, and nothing else a client sent that could be key
//! material.

use std::fmt;
use std::net::SocketAddr;

use crate::identity::lookup::NoIdentity;
use crate::identity::principal::Principal;
use crate::reject::Rejection;
use crate::tls::handshake_error::AcceptError;

/// The one event of a request without a verified identity.
pub(crate) fn unauthenticated(failure: &NoIdentity<'_>, method: &http::Method, path: &str) {
    request_rejected(
        failure.peer,
        failure.principal,
        Rejection::Unauthenticated,
        failure.reason,
        method,
        path,
    );
}

/// The one event of a request the authorizer denied.
pub(crate) fn forbidden(
    peer: SocketAddr,
    principal: &Principal,
    reason: &str,
    method: &http::Method,
    path: &str,
) {
    request_rejected(
        Some(peer),
        Some(principal),
        Rejection::Forbidden,
        reason,
        method,
        path,
    );
}

/// The one event of a request refused for its spelling (a path without a canonical form, a
/// non-standard spelling of a standard method), before the authorizer ran.
pub(crate) fn bad_request(
    peer: SocketAddr,
    principal: &Principal,
    reason: &str,
    method: &http::Method,
    path: &str,
) {
    request_rejected(
        Some(peer),
        Some(principal),
        Rejection::BadRequest,
        reason,
        method,
        path,
    );
}

fn request_rejected(
    peer: Option<SocketAddr>,
    principal: Option<&Principal>,
    rejection: Rejection,
    reason: &str,
    method: &http::Method,
    path: &str,
) {
    tracing::warn!(
        peer = %OptionalPeer(peer),
        principal = principal.map(tracing::field::display),
        status = rejection.status().as_u16(),
        reason,
        %method,
        path,
        "request rejected"
    );
}

/// The one event of a failed handshake.
pub(crate) fn handshake_failed(peer: SocketAddr, error: &AcceptError) {
    tracing::warn!(peer = %peer, cause = %error.cause(), error = %error, "TLS handshake failed");
}

struct OptionalPeer(Option<SocketAddr>);

impl fmt::Display for OptionalPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}
