//! [`MatcherError`]: why a piece of authorization vocabulary (a matcher, a path pattern, a
//! method) could not be built from its arguments.

use http::Method;

use crate::authorize::canonical::PathRejection;
use crate::identity::name::NameParseError;
use crate::identity::spiffe_id::SpiffeIdError;

/// Why a matcher could not be built from its arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MatcherError {
    /// Not a valid SPIFFE ID.
    #[error("invalid SPIFFE ID {value:?}: {error}")]
    SpiffeId {
        /// The input.
        value: String,
        /// Why.
        error: SpiffeIdError,
    },
    /// Not a valid SPIFFE trust domain name.
    #[error("invalid SPIFFE trust domain {value:?}: {error}")]
    TrustDomain {
        /// The input.
        value: String,
        /// Why.
        error: SpiffeIdError,
    },
    /// Not a valid trust bundle name.
    #[error("invalid trust bundle name {value:?}: {why}")]
    TrustBundle {
        /// The input.
        value: String,
        /// Why.
        why: &'static str,
    },
    /// Not a DNS name or a `*.suffix` pattern.
    #[error("invalid DNS name pattern {value:?}: {why}")]
    DnsName {
        /// The input.
        value: String,
        /// Why.
        why: &'static str,
    },
    /// Not an RFC 4514 distinguished name this crate can read.
    #[error("invalid distinguished name {value:?}: {error}")]
    DistinguishedName {
        /// The input.
        value: String,
        /// Why.
        error: NameParseError,
    },
    /// Not an IP address.
    #[error("invalid IP address {value:?}")]
    IpAddress {
        /// The input.
        value: String,
    },
    /// Not 32 bytes of hex (colons allowed).
    #[error("invalid SHA-256 hash {value:?}: expected 64 hex digits")]
    Sha256 {
        /// The input.
        value: String,
    },
    /// Not a hex serial number.
    #[error("invalid serial number {value:?}: expected hex digits")]
    Serial {
        /// The input.
        value: String,
    },
    /// An empty string where a value is needed.
    #[error("empty value")]
    Empty,
    /// Not an HTTP method token.
    #[error("invalid HTTP method {value:?}")]
    Method {
        /// The input.
        value: String,
    },
    /// Another spelling of a standard method (`delete`): HTTP methods are case-sensitive, so a
    /// rule on it would never see `DELETE`, and the layer refuses such requests.
    #[error("method {value:?} is another spelling of {standard}: write {standard}")]
    NonStandardMethod {
        /// The input.
        value: String,
        /// The standard method it spells.
        standard: &'static Method,
    },
    /// A path pattern (exact, prefix or glob) that no canonical request path can match: not
    /// absolute, a dot segment, an encoding requests may not use (see
    /// [`canonicalize_pattern`](crate::authorize::canonical::canonicalize_pattern)).
    #[error("path pattern {value:?} can never match a request: {why}")]
    Path {
        /// The input.
        value: String,
        /// Why no request path can match it.
        why: PathRejection,
    },
    /// Not a glob this crate understands.
    #[error("invalid path glob {value:?}: {why}")]
    Glob {
        /// The input.
        value: String,
        /// Why.
        why: &'static str,
    },
    /// Not a gRPC `package.Service/Method` (or `package.Service/*`).
    #[error("invalid gRPC method {value:?}: {why}")]
    Grpc {
        /// The input.
        value: String,
        /// Why.
        why: &'static str,
    },
}
