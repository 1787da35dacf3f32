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

/// A connection of `principal` (or of a client without a certificate) with `roles`, from
/// `127.0.0.1:0`, for handlers and extractors that read a [`ConnectionInfo`]. It has no TLS
/// facts and is never re-verified; the certificate's expiry still counts.
pub fn connection_info(principal: Option<Principal>, roles: Roles) -> ConnectionInfo {
    ConnectionInfo::from_facts(Facts::new(TEST_PEER, principal, roles), None, None)
}

/// A request as an [`Authorizer`] sees it, on a connection of a principal.
#[derive(Debug)]
pub struct TestRequest {
    principal: Principal,
    connection: ConnectionInfo,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl TestRequest {
    /// `method uri` from `principal`, on a connection without roles.
    pub fn new(principal: Principal, method: Method, uri: Uri) -> Self {
        TestRequest {
            connection: connection_info(Some(principal.clone()), Roles::none()),
            principal,
            method,
            uri,
            headers: HeaderMap::new(),
        }
    }

    /// The connection's roles.
    pub fn roles(mut self, roles: Roles) -> Self {
        let facts = Facts::new(
            self.connection.peer_addr(),
            Some(self.principal.clone()),
            roles,
        );
        self.connection = ConnectionInfo::from_facts(facts, None, None);
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
        self.connection = ConnectionInfo::from_facts(facts, None, None);
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
            connection: &self.connection,
            method: &self.method,
            uri: &self.uri,
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
