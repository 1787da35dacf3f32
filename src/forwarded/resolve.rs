//! [`Forwarding`]: what one connection does with forwarded-certificate headers — remove them
//! (not a trusted proxy), or verify the chain in them as the request's client (a trusted proxy).

use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderMap;
use rustls::pki_types::CertificateDer;

use crate::forwarded::cache::{
    Cached, ForwardedCache, ForwardedIdentity, RawKey, RawView, Verified,
};
use crate::forwarded::proxies::TrustedProxies;
use crate::forwarded::refusal::ForwardedRefusal;
use crate::identity::principal::Principal;
use crate::identity::roles::{RoleMapper, Roles};
use crate::metrics;
use crate::tls::handshake_error::{HandshakeFailure, classify};
use crate::tls::trust::TrustState;

/// One connection's forwarded-certificate state, decided at accept time.
pub(crate) struct Forwarding {
    config: Arc<TrustedProxies>,
    // `Some` only on a trusted-proxy connection.
    proxy: Option<ProxyState>,
}

struct ProxyState {
    cache: ForwardedCache,
    role_mapper: Option<Arc<dyn RoleMapper>>,
}

impl Forwarding {
    /// The state of a connection of `principal` (with `roles`) under `config`: a trusted
    /// proxy when its own verified principal matches one of the configured proxies.
    pub(crate) fn new(
        config: &Arc<TrustedProxies>,
        principal: Option<&Principal>,
        roles: &Roles,
        role_mapper: Option<&Arc<dyn RoleMapper>>,
    ) -> Self {
        let is_proxy = principal.is_some_and(|p| config.is_proxy(p, roles));
        Forwarding {
            proxy: is_proxy.then(|| ProxyState {
                cache: ForwardedCache::new(config.cache_byte_limit()),
                role_mapper: role_mapper.cloned(),
            }),
            config: config.clone(),
        }
    }

    /// Whether the connection is a trusted proxy.
    pub(crate) fn is_proxy(&self) -> bool {
        self.proxy.is_some()
    }

    /// The configuration.
    pub(crate) fn config(&self) -> &Arc<TrustedProxies> {
        &self.config
    }

    /// Whether `headers` hold any of the configured forwarded-certificate headers.
    pub(crate) fn present_in(&self, headers: &HeaderMap) -> bool {
        self.config
            .header()
            .header_names()
            .any(|name| headers.contains_key(name))
    }

    /// The client a trusted proxy forwarded in `headers`: verified under `trust`'s current
    /// snapshot like a TLS peer's chain (once per distinct header value and trust generation;
    /// then from the cache), its expiry checked on every request. `proxy` is the connection's
    /// own, already revalidated principal. Never called on a connection that is not a proxy
    /// (which gets [`ForwardedRefusal::Missing`]).
    pub(crate) fn resolve(
        &self,
        trust: Option<&TrustState>,
        proxy: &Principal,
        headers: &HeaderMap,
    ) -> Result<ForwardedIdentity, ForwardedRefusal> {
        let Some(state) = &self.proxy else {
            return Err(ForwardedRefusal::Missing);
        };
        let header = self.config.header();
        let lines = match header.lines(headers) {
            Ok(Some(lines)) => lines,
            Ok(None) => return Err(ForwardedRefusal::Missing),
            Err(error) => return Err(ForwardedRefusal::Malformed(error)),
        };
        let Some(trust) = trust else {
            return Err(ForwardedRefusal::NoVerifier);
        };
        match state.cache.get(&RawView(&lines), trust.generation()) {
            Cached::Identity(identity) => return still_valid(identity),
            Cached::Refused(refusal) => return Err(refusal),
            Cached::Unknown => {}
        }
        let chain = header
            .parse_lines(&lines)
            .map_err(ForwardedRefusal::Malformed)?;
        let (leaf, intermediates) = chain.into_parts();
        let mut certificates: Vec<CertificateDer<'static>> =
            Vec::with_capacity(1 + intermediates.len());
        certificates.push(leaf);
        certificates.extend(intermediates);

        let snapshot = trust.current();
        let outcome = match snapshot.verify_client_chain(&certificates) {
            None => return Err(ForwardedRefusal::NoVerifier),
            Some(Err(error)) => Err(ForwardedRefusal::Unverified {
                cause: classify(&error),
                error,
            }),
            Some(Ok(bundle)) => {
                Principal::from_forwarded_chain(&certificates, bundle.clone(), proxy.clone())
                    .map(|principal| ForwardedIdentity {
                        roles: state
                            .role_mapper
                            .as_ref()
                            .map_or_else(Roles::none, |mapper| mapper.roles(&principal)),
                        principal,
                    })
                    .map_err(ForwardedRefusal::Unparsable)
            }
        };
        metrics::forwarded_verification(outcome.is_ok());
        // A certificate that is not valid *yet* may be by its next request: not remembered.
        let remembered = match &outcome {
            Ok(identity) => Some(Ok(identity.clone())),
            Err(ForwardedRefusal::Unverified {
                cause: HandshakeFailure::NotYetValid,
                ..
            }) => None,
            Err(refusal) => refusal.cached_copy().map(Err),
        };
        if let Some(remembered) = remembered {
            state.cache.insert(
                RawKey::of(&lines),
                Verified {
                    generation: snapshot.generation,
                    outcome: remembered,
                },
            );
        }
        outcome
    }
}

/// A remembered identity is good for as long as its certificate is valid.
fn still_valid(identity: ForwardedIdentity) -> Result<ForwardedIdentity, ForwardedRefusal> {
    if SystemTime::now() > identity.principal.not_after() {
        return Err(ForwardedRefusal::Unverified {
            cause: HandshakeFailure::Expired,
            error: rustls::Error::InvalidCertificate(rustls::CertificateError::Expired),
        });
    }
    Ok(identity)
}
