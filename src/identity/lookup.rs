//! The one lookup of a request's verified identity, used by the layer and by every extractor,
//! so that each stack is looked up the same way.

use std::net::SocketAddr;

use crate::identity::connection::ConnectionInfo;
use crate::identity::principal::Principal;

/// The connection a request arrived on: `tower_mtls::hyper` and tonic put the
/// [`ConnectionInfo`] in the extensions as is; axum's `into_make_service_with_connect_info`
/// wraps it in `ConnectInfo`.
pub(crate) fn connection_of(extensions: &http::Extensions) -> Option<&ConnectionInfo> {
    extensions
        .get::<ConnectionInfo>()
        .or_else(|| crate::axum_connect_info(extensions))
}

/// The verified, still-valid identity of a request, found by its extensions.
pub(crate) fn authenticate(
    extensions: &http::Extensions,
) -> Result<(&ConnectionInfo, &Principal), NoIdentity<'_>> {
    let Some(connection) = connection_of(extensions) else {
        return Err(NoIdentity {
            peer: None,
            principal: None,
            reason: "no ConnectionInfo on the request (is the service served by tower-mtls?)",
        });
    };
    let Some(principal) = connection.principal_unchecked() else {
        return Err(NoIdentity {
            peer: Some(connection.peer_addr()),
            principal: None,
            reason: "no client certificate",
        });
    };
    match connection.revalidate() {
        Ok(()) => Ok((connection, principal)),
        Err(stale) => Err(NoIdentity {
            peer: Some(connection.peer_addr()),
            principal: Some(principal),
            reason: stale.as_str(),
        }),
    }
}

/// Why a request has no verified identity, with what is known of it for the log.
pub(crate) struct NoIdentity<'a> {
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) principal: Option<&'a Principal>,
    pub(crate) reason: &'static str,
}
