//! Test support (feature `test-util`): principals, connections and requests for unit tests of
//! your own [`Authorizer`]s and handlers, without TLS.
//!
//! A [`Principal`] made here comes from a certificate **nobody verified**: this module exists
//! for tests, and nothing in the serving path uses it.
//!
//! ```
//! # fn main() -> Result<(), tower_mtls::test_util::TestCertificateError> {
//! use http::Method;
//! use tower_mtls::test_util::{TestRequest, principal_from_pem};
//! use tower_mtls::{AuthContext, Decision};
//!
//! // The authorizer under test: admins may do anything, others may only read.
//! let authorizer = tower_mtls::authorize_fn(|ctx: &AuthContext<'_>| {
//!     if ctx.principal().organizational_units().any(|ou| ou == "admins") {
//!         Decision::allow("admin")
//!     } else if ctx.method() == Method::GET {
//!         Decision::allow("read-only")
//!     } else {
//!         Decision::deny("writes need OU=admins")
//!     }
//! });
//!
//! # let (alice_pem, bob_pem) = certs();
//! // Certificates from your test PKI (rcgen, files, ...).
//! let alice = principal_from_pem(alice_pem)?; // OU=admins
//! let bob = principal_from_pem(bob_pem)?;     // OU=users
//!
//! let delete = |who| TestRequest::new(who, Method::DELETE, "/orders/7".parse().unwrap());
//! assert!(delete(alice).decide_now(&authorizer).unwrap().is_allowed());
//! assert!(!delete(bob.clone()).decide_now(&authorizer).unwrap().is_allowed());
//! let read = TestRequest::new(bob, Method::GET, "/orders/7".parse().unwrap());
//! assert!(read.decide_now(&authorizer).unwrap().is_allowed());
//! # Ok(())
//! # }
//! # fn certs() -> (String, String) {
//! #     let cert = |ou: &str| {
//! #         let mut params = rcgen::CertificateParams::default();
//! #         params.distinguished_name.push(rcgen::DnType::CommonName, "test");
//! #         params.distinguished_name.push(rcgen::DnType::OrganizationalUnitName, ou);
//! #         let key = rcgen::KeyPair::generate().unwrap();
//! #         params.self_signed(&key).unwrap().pem()
//! #     };
//! #     (cert("admins"), cert("users"))
//! # }
//! ```
//!
//! Asynchronous authorizers: `request.decide(&authorizer).await`. Handlers and extractors that
//! read a [`ConnectionInfo`]: build one with [`connection_info`] and put it in the request's
//! extensions, as the servers of this crate do.

use std::net::SocketAddr;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::authorize::authorizer::{AuthContext, Authorizer, Decision, Verdict};
use crate::authorize::canonical::{
    NonStandardMethod, PathNormalization, PathRejection, canonicalize, check_request_method,
};
use crate::identity::connection::{ConnectionInfo, Facts};
use crate::identity::principal::{Principal, PrincipalError};
use crate::identity::roles::{RoleMapper, Roles};
use crate::identity::trust_bundle::TrustBundle;

/// The peer address of test connections: `127.0.0.1:0` unless set.
const TEST_PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// Why a test certificate could not become a [`Principal`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestCertificateError {
    /// The PEM text could not be read, or holds no `CERTIFICATE` block.
    #[error("no certificate in the PEM input: {0}")]
    Pem(String),
    /// The certificate does not parse.
    #[error(transparent)]
    Principal(#[from] PrincipalError),
}

/// A principal from a PEM chain, leaf first (any further certificates are its chain). **Not
/// verified**: for tests only. Its [trust bundle](Principal::trust_bundle) is the unnamed one.
pub fn principal_from_pem(pem: impl AsRef<[u8]>) -> Result<Principal, TestCertificateError> {
    principal_from_pem_in_bundle(pem, TrustBundle::Unnamed)
}

/// A principal from a PEM chain as if `bundle` had verified it, for authorizers that look at
/// [`Principal::trust_bundle`]. **Not verified**: for tests only.
///
/// ```
/// use tower_mtls::authorize::Matcher;
/// use tower_mtls::identity::{Roles, TrustBundle};
/// use tower_mtls::test_util::principal_from_pem_in_bundle;
///
/// # let key = rcgen::KeyPair::generate().unwrap();
/// # let pem = rcgen::CertificateParams::default().self_signed(&key).unwrap().pem();
/// let partner = principal_from_pem_in_bundle(&pem, TrustBundle::Named("partner".into()))?;
/// assert!(Matcher::trust_bundle("partner")?.matches(&partner, &Roles::none()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn principal_from_pem_in_bundle(
    pem: impl AsRef<[u8]>,
    bundle: TrustBundle,
) -> Result<Principal, TestCertificateError> {
    let chain = CertificateDer::pem_slice_iter(pem.as_ref())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TestCertificateError::Pem(e.to_string()))?;
    if chain.is_empty() {
        return Err(TestCertificateError::Pem("no CERTIFICATE block".into()));
    }
    Ok(Principal::from_chain_verified_by(&chain, bundle)?)
}

/// A principal from DER certificates, leaf first. **Not verified**: for tests only.
pub fn principal_from_der(chain: &[CertificateDer<'_>]) -> Result<Principal, PrincipalError> {
    Principal::from_verified_chain(chain)
}

/// A principal forwarded by the trusted proxy `proxy` (see
/// [`Principal::forwarded_by`]), from DER certificates, leaf first, as the layer builds it on a
/// proxy's connection. **Not verified**: for tests of authorizers that look at the proxy.
pub fn forwarded_principal_from_der(
    chain: &[CertificateDer<'_>],
    proxy: Principal,
) -> Result<Principal, PrincipalError> {
    Principal::from_forwarded_chain(chain, TrustBundle::Unnamed, proxy)
}

/// A connection of `principal` (or of a client without a certificate) with `roles`, from
/// `127.0.0.1:0`, for handlers and extractors that read a [`ConnectionInfo`]. It has no TLS
/// facts and is never re-verified; the certificate's expiry still counts.
pub fn connection_info(principal: Option<Principal>, roles: Roles) -> ConnectionInfo {
    ConnectionInfo::from_facts(Facts::new(TEST_PEER, principal, roles), None, None, None)
}

/// Why [`MtlsAuthLayer`](crate::MtlsAuthLayer) would refuse a request (400) before any
/// authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefusedRequest {
    /// The path has no canonical form under the settings.
    #[error("the layer refuses this path: {0}")]
    Path(PathRejection),
    /// The method is another spelling of a standard one.
    #[error("the layer refuses this method: {0}")]
    Method(NonStandardMethod),
}

/// A request as an [`Authorizer`] sees it, on a connection of a principal: with the canonical
/// path, as [`MtlsAuthLayer`](crate::MtlsAuthLayer) computes it.
#[derive(Debug)]
pub struct TestRequest {
    principal: Principal,
    connection: ConnectionInfo,
    method: Method,
    uri: Uri,
    path: String,
    headers: HeaderMap,
}

impl TestRequest {
    /// `method uri` from `principal`, on a connection without roles; the path canonicalized
    /// with the layer's default settings.
    ///
    /// # Panics
    /// When the layer would refuse the request before any authorizer runs: a path without a
    /// canonical form (`/a/../b`, `/%61dmin`) or a method like `delete`. Use
    /// [`try_new`](Self::try_new) to test those.
    pub fn new(principal: Principal, method: Method, uri: Uri) -> Self {
        match Self::try_new(principal, method, uri, &PathNormalization::strict()) {
            Ok(request) => request,
            Err(refused) => panic!("{refused}: no authorizer would see this request"),
        }
    }

    /// Like [`new`](Self::new), with the path canonicalized under `paths` (the layer's
    /// [`path_normalization`](crate::MtlsAuthLayer::path_normalization)); `Err` when the
    /// layer would refuse the request.
    pub fn try_new(
        principal: Principal,
        method: Method,
        uri: Uri,
        paths: &PathNormalization,
    ) -> Result<Self, RefusedRequest> {
        check_request_method(&method).map_err(RefusedRequest::Method)?;
        let path = canonicalize(uri.path(), paths)
            .map_err(RefusedRequest::Path)?
            .into_owned();
        Ok(TestRequest {
            connection: connection_info(Some(principal.clone()), Roles::none()),
            principal,
            method,
            uri,
            path,
            headers: HeaderMap::new(),
        })
    }

    /// The canonical path the authorizer sees.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The connection's roles.
    pub fn roles(mut self, roles: Roles) -> Self {
        let facts = Facts::new(
            self.connection.peer_addr(),
            Some(self.principal.clone()),
            roles,
        );
        self.connection = ConnectionInfo::from_facts(facts, None, None, None);
        self
    }

    /// The roles `mapper` gives the principal, as the acceptor would compute them.
    pub fn role_mapper(self, mapper: &impl RoleMapper) -> Self {
        let roles = mapper.roles(&self.principal);
        self.roles(roles)
    }

    /// The client's address.
    pub fn peer_addr(mut self, addr: SocketAddr) -> Self {
        let facts = Facts::new(
            addr,
            Some(self.principal.clone()),
            self.connection.roles().clone(),
        );
        self.connection = ConnectionInfo::from_facts(facts, None, None, None);
        self
    }

    /// Adds a request header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// The connection the request comes on.
    pub fn connection(&self) -> &ConnectionInfo {
        &self.connection
    }

    /// What an authorizer sees of this request.
    pub fn context(&self) -> AuthContext<'_> {
        AuthContext {
            principal: &self.principal,
            roles: self.connection.roles(),
            connection: &self.connection,
            method: &self.method,
            uri: &self.uri,
            path: &self.path,
            headers: &self.headers,
        }
    }

    /// `authorizer`'s decision, awaited if it takes a future.
    pub async fn decide<A: Authorizer>(&self, authorizer: &A) -> Decision {
        authorizer.authorize(&self.context()).await
    }

    /// `authorizer`'s decision if it decides on the spot ([`Verdict::Now`]); `None` if it
    /// answers with a future (use [`decide`](Self::decide)).
    pub fn decide_now<A: Authorizer>(&self, authorizer: &A) -> Option<Decision> {
        match authorizer.authorize(&self.context()) {
            Verdict::Now(decision) => Some(decision),
            Verdict::Later(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::shared_principal;

    #[test]
    fn authorizers_see_the_canonical_path_and_refused_requests_are_errors() {
        let p = shared_principal().clone();
        let request = TestRequest::new(p.clone(), Method::GET, "/caf%c3%a9".parse().unwrap());
        assert_eq!(request.path(), "/caf%C3%A9");
        assert_eq!(request.context().path(), "/caf%C3%A9");
        assert_eq!(request.context().uri().path(), "/caf%c3%a9");
        let strict = PathNormalization::strict();
        let refused = |method: Method, uri: &str| {
            TestRequest::try_new(p.clone(), method, uri.parse().unwrap(), &strict).unwrap_err()
        };
        assert_eq!(
            refused(Method::GET, "/%61dmin"),
            RefusedRequest::Path(PathRejection::EncodedUnreserved)
        );
        assert!(matches!(
            refused(Method::from_bytes(b"delete").unwrap(), "/x"),
            RefusedRequest::Method(NonStandardMethod { standard }) if *standard == Method::DELETE
        ));
        let decoding =
            strict.encoded_unreserved(crate::authorize::canonical::EncodedUnreserved::Decode);
        let decoded =
            TestRequest::try_new(p, Method::GET, "/%61dmin".parse().unwrap(), &decoding).unwrap();
        assert_eq!(decoded.context().path(), "/admin");
    }
}
