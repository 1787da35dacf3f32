//! [`ConfigError`]: why a configuration cannot be built, naming the input at fault.

use std::fmt;
use std::path::PathBuf;

use rustls::pki_types::pem;

use crate::identity::spiffe_id::SpiffeIdError;

/// Where an input came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A file.
    File(PathBuf),
    /// Bytes passed in memory, with what they were.
    Memory(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Memory(what) => write!(f, "<{what} given in memory>"),
        }
    }
}

/// A configuration that cannot be built, with the input at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No PEM block of the expected kind in the input.
    #[error("{origin}: no {expected} PEM block found")]
    NoPem {
        /// The input.
        origin: Origin,
        /// What was looked for (`CERTIFICATE`, `PRIVATE KEY`, `X509 CRL`).
        expected: &'static str,
    },
    /// A PEM block that cannot be decoded.
    #[error("{origin}: invalid PEM: {source}")]
    Pem {
        /// The input.
        origin: Origin,
        /// The PEM error.
        source: pem::Error,
    },
    /// A required input was not given.
    #[error("no {0} configured")]
    Missing(&'static str),
    /// The private key does not belong to the server certificate.
    #[error("the private key in {key} does not match the certificate in {cert}")]
    KeyMismatch {
        /// The certificate input.
        cert: Origin,
        /// The key input.
        key: Origin,
    },
    /// The key is of a type or curve the crypto provider cannot use.
    #[error("the private key in {origin} cannot be used: {reason}")]
    UnusableKey {
        /// The key input.
        origin: Origin,
        /// Why.
        reason: String,
    },
    /// A certificate that is not a well-formed X.509 certificate.
    #[error("{origin}: certificate #{index} is not valid X.509: {reason}")]
    BadCertificate {
        /// The input.
        origin: Origin,
        /// Position of the certificate in the input, from 1.
        index: usize,
        /// The parse error.
        reason: String,
    },
    /// A client trust bundle contains a certificate that is not a CA.
    #[error(
        "{origin}: certificate #{index} ({subject}) is not a CA certificate; a client trust bundle must hold CA certificates only"
    )]
    NotACa {
        /// The input.
        origin: Origin,
        /// Position in the input, from 1.
        index: usize,
        /// Its subject.
        subject: String,
    },
    /// A CRL that cannot be parsed.
    #[error("{origin}: invalid CRL: {reason}")]
    BadCrl {
        /// The input.
        origin: Origin,
        /// Why.
        reason: String,
    },
    /// A client CA bundle name that is not 1 to 255 ASCII letters, digits, `.`, `-`, `_`.
    #[error("invalid client CA bundle name {name:?}: {why}")]
    BadBundleName {
        /// The name.
        name: String,
        /// Why.
        why: &'static str,
    },
    /// A SPIFFE bundle for something that is not a trust domain name.
    #[error("invalid SPIFFE trust domain {value:?}: {error}")]
    BadTrustDomain {
        /// The input.
        value: String,
        /// Why.
        error: SpiffeIdError,
    },
    /// A client CA bundle and a SPIFFE trust domain of the same name: policies could not tell
    /// them apart.
    #[error(
        "{name:?} names both a client CA bundle and a SPIFFE trust domain; bundle names and trust domains share one namespace"
    )]
    BundleNameClash {
        /// The name.
        name: String,
    },
    /// The same CA (subject and key) in two client CA bundles: which bundle verified a
    /// certificate it issued could not be told.
    #[error("the same CA certificate is in {first} and in {second}")]
    CaInTwoBundles {
        /// The bundle it is in first.
        first: String,
        /// The other bundle.
        second: String,
    },
    /// A [`Resumption`](crate::tls::Resumption) setting that cannot be honoured, e.g.
    /// `Resumption::cache(0)` (use `Resumption::off()` instead) or a cache of more than
    /// 1,000,000 sessions.
    #[error("invalid session resumption setting: {0}")]
    Resumption(String),
    /// Session ticket keys cannot be made as asked: a rotation period of
    /// [`Resumption::tickets`](crate::tls::Resumption::tickets) that is 0, not whole seconds
    /// or over 6 hours, or the crypto provider's ticketer failed.
    #[error("session ticket keys: {0}")]
    TicketKeys(String),
    /// rustls refused the configuration.
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}
