//! [`ForwardedRefusal`]: why a trusted proxy's request has no forwarded identity.

use crate::forwarded::format::ForwardedCertError;
use crate::identity::principal::PrincipalError;
use crate::tls::handshake_error::HandshakeFailure;

/// Why a request on a trusted-proxy connection was refused (401): the forwarded certificate is
/// missing, malformed, or does not verify as a direct client's would.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardedRefusal {
    /// The proxy sent no forwarded-certificate header: the proxy's own identity is never the
    /// client's, so there is no client identity.
    #[error("no forwarded client certificate from the trusted proxy")]
    Missing,
    /// The header is not well-formed for its format.
    #[error("malformed forwarded client certificate: {0}")]
    Malformed(#[source] ForwardedCertError),
    /// The forwarded chain does not verify against the current trust configuration; `cause`
    /// classifies it as a handshake failure would be.
    #[error("forwarded client certificate does not verify: {cause}: {error}")]
    Unverified {
        /// The classification, as for a handshake.
        cause: HandshakeFailure,
        /// What the verifier said.
        #[source]
        error: rustls::Error,
    },
    /// The chain verified but cannot be parsed into a principal.
    #[error("forwarded client certificate verified but cannot be parsed: {0}")]
    Unparsable(#[source] PrincipalError),
    /// The acceptor has no verifier of this crate (built with
    /// [`MtlsAcceptor::from_server_config`](crate::MtlsAcceptor::from_server_config)), so
    /// forwarded chains cannot be verified and none is believed.
    #[error(
        "forwarded client certificates cannot be verified: the acceptor has no verifier of tower-mtls"
    )]
    NoVerifier,
}

impl ForwardedRefusal {
    /// A stable snake_case cause, for logs (`cause` of the `forwarded_identity_rejected` event)
    /// and the `cause` label of `tower_mtls_forwarded_failures_total`:
    /// `forwarded_cert_missing`, `forwarded_cert_malformed`, `forwarded_cert_unparsable`,
    /// `forwarded_cert_unverifiable`, or, for a chain that does not verify, the
    /// [`HandshakeFailure::label`] a direct client would get (`unknown_issuer`, `revoked`,
    /// `expired`, `bad_eku`, `unknown_trust_domain`, ...).
    pub fn label(&self) -> &'static str {
        match self {
            ForwardedRefusal::Missing => "forwarded_cert_missing",
            ForwardedRefusal::Malformed(_) => "forwarded_cert_malformed",
            ForwardedRefusal::Unverified { cause, .. } => cause.label(),
            ForwardedRefusal::Unparsable(_) => "forwarded_cert_unparsable",
            ForwardedRefusal::NoVerifier => "forwarded_cert_unverifiable",
        }
    }

    /// A copy, for the refusals that are remembered per certificate (the verification
    /// outcomes; a malformed header is not remembered).
    pub(crate) fn cached_copy(&self) -> Option<ForwardedRefusal> {
        match self {
            ForwardedRefusal::Unverified { cause, error } => Some(ForwardedRefusal::Unverified {
                cause: *cause,
                error: error.clone(),
            }),
            ForwardedRefusal::Unparsable(e) => Some(ForwardedRefusal::Unparsable(e.clone())),
            _ => None,
        }
    }
}
