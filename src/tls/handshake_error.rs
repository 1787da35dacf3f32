//! Why handshakes fail: [`AcceptError`] and its classification [`HandshakeFailure`].

use std::io;
use std::time::Duration;

use rustls::CertificateError;

use crate::identity::principal::PrincipalError;

/// Why a connection did not become a [`ConnectionInfo`](crate::ConnectionInfo).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The client did not finish the handshake in time.
    #[error("TLS handshake did not complete within {0:?}")]
    Timeout(Duration),
    /// The TLS handshake failed: the client's certificate was refused, versions or suites did
    /// not match, or the client sent an alert. [`AcceptError::cause`] classifies it.
    #[error("TLS handshake failed: {0}")]
    Tls(rustls::Error),
    /// A resumed session's client certificate no longer verifies (revoked, expired, or its CA
    /// is no longer trusted).
    #[error("resumed session refused: its client certificate no longer verifies: {0}")]
    ResumedCertificateRejected(rustls::Error),
    /// A session created without a client certificate (under optional client auth) was
    /// resumed after the configuration started requiring one: rustls does not ask again on
    /// resumption, so the acceptor refuses it.
    #[error("resumed session refused: it has no client certificate and one is now required")]
    ResumedWithoutCertificate,
    /// The connection failed during the handshake (reset, closed early).
    #[error("I/O error during the TLS handshake: {0}")]
    Io(io::Error),
    /// rustls verified the client's certificate but it cannot be parsed into a principal.
    #[error("client certificate verified but cannot be parsed: {0}")]
    Certificate(#[from] PrincipalError),
}

/// A short, stable classification of a failed handshake, for logs and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandshakeFailure {
    /// Handshake timeout.
    Timeout,
    /// Client certificate required but none sent.
    NoCertificate,
    /// Client certificate does not chain to a configured CA.
    UnknownIssuer,
    /// Client certificate (or a chain member) expired.
    Expired,
    /// Client certificate (or a chain member) not valid yet.
    NotYetValid,
    /// Revoked by a configured CRL.
    Revoked,
    /// No configured CRL covers the certificate.
    UnknownRevocationStatus,
    /// A configured CRL is past its `nextUpdate` (with expiry enforcement on).
    ExpiredCrl,
    /// The certificate's extended key usage does not allow client authentication.
    BadKeyUsage,
    /// A CA certificate presented as the client's own certificate.
    CaUsedAsLeaf,
    /// A certificate signature does not verify: typically a forged certificate whose issuer
    /// *name* matches a trusted CA.
    BadSignature,
    /// Unsupported algorithm or malformed certificate.
    BadCertificate,
    /// The client offered only TLS versions this server does not accept.
    ProtocolVersion,
    /// No cipher suite, group or signature scheme in common.
    Incompatible,
    /// The client aborted with an alert (often: it refused the server's certificate).
    AlertReceived,
    /// A malformed or unexpected TLS message.
    Protocol,
    /// Connection reset or closed during the handshake.
    Io,
    /// Verified, but not parseable into a principal.
    UnparsableCertificate,
    /// A resumed session whose certificate no longer verifies.
    ResumptionRevoked,
}

impl HandshakeFailure {
    /// A short phrase for logs: `"unknown issuer"`, `"expired"`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::NoCertificate => "no client certificate",
            HandshakeFailure::UnknownIssuer => "unknown issuer",
            HandshakeFailure::Expired => "certificate expired",
            HandshakeFailure::NotYetValid => "certificate not yet valid",
            HandshakeFailure::Revoked => "certificate revoked",
            HandshakeFailure::UnknownRevocationStatus => "revocation status unknown",
            HandshakeFailure::ExpiredCrl => "CRL expired",
            HandshakeFailure::BadKeyUsage => "certificate not valid for client authentication",
            HandshakeFailure::CaUsedAsLeaf => "CA certificate used as client certificate",
            HandshakeFailure::BadSignature => {
                "bad signature (issuer name matches a trusted CA, key does not)"
            }
            HandshakeFailure::BadCertificate => "bad certificate",
            HandshakeFailure::ProtocolVersion => "unsupported protocol version",
            HandshakeFailure::Incompatible => "no common cipher suite or parameters",
            HandshakeFailure::AlertReceived => "client sent an alert",
            HandshakeFailure::Protocol => "TLS protocol error",
            HandshakeFailure::Io => "connection error",
            HandshakeFailure::UnparsableCertificate => "unparsable client certificate",
            HandshakeFailure::ResumptionRevoked => "resumed session no longer valid",
        }
    }
}

impl std::fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AcceptError {
    /// What went wrong, classified.
    pub fn cause(&self) -> HandshakeFailure {
        match self {
            AcceptError::Timeout(_) => HandshakeFailure::Timeout,
            AcceptError::Tls(e) => classify(e),
            AcceptError::ResumedCertificateRejected(_) => HandshakeFailure::ResumptionRevoked,
            AcceptError::ResumedWithoutCertificate => HandshakeFailure::NoCertificate,
            AcceptError::Io(_) => HandshakeFailure::Io,
            AcceptError::Certificate(_) => HandshakeFailure::UnparsableCertificate,
        }
    }

    pub(crate) fn from_io(e: io::Error) -> Self {
        // tokio-rustls reports TLS failures as `InvalidData` wrapping the rustls error.
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => AcceptError::Tls(tls.clone()),
            None => AcceptError::Io(e),
        }
    }
}

fn classify(e: &rustls::Error) -> HandshakeFailure {
    use rustls::Error as E;
    match e {
        E::NoCertificatesPresented => HandshakeFailure::NoCertificate,
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => HandshakeFailure::UnknownIssuer,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                HandshakeFailure::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                HandshakeFailure::NotYetValid
            }
            CertificateError::Revoked => HandshakeFailure::Revoked,
            CertificateError::UnknownRevocationStatus => HandshakeFailure::UnknownRevocationStatus,
            CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => HandshakeFailure::ExpiredCrl,
            CertificateError::BadSignature => HandshakeFailure::BadSignature,
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                HandshakeFailure::BadKeyUsage
            }
            CertificateError::Other(other) => match other.0.downcast_ref::<webpki::Error>() {
                Some(webpki::Error::CaUsedAsEndEntity) => HandshakeFailure::CaUsedAsLeaf,
                #[allow(deprecated)]
                Some(
                    webpki::Error::RequiredEkuNotFound
                    | webpki::Error::RequiredEkuNotFoundContext(_),
                ) => HandshakeFailure::BadKeyUsage,
                _ => HandshakeFailure::BadCertificate,
            },
            _ => HandshakeFailure::BadCertificate,
        },
        E::InvalidCertRevocationList(_) => HandshakeFailure::UnknownRevocationStatus,
        E::PeerIncompatible(p) => {
            use rustls::PeerIncompatible as P;
            match p {
                // signature_algorithms is mandatory from TLS 1.2 on: a hello without it comes
                // from a TLS 1.0/1.1 client, and rustls checks it before the version.
                P::Tls12NotOffered
                | P::SignatureAlgorithmsExtensionRequired
                | P::Tls12NotOfferedOrEnabled
                | P::SupportedVersionsExtensionRequired
                | P::ServerTlsVersionIsDisabledByOurConfig => HandshakeFailure::ProtocolVersion,
                _ => HandshakeFailure::Incompatible,
            }
        }
        E::AlertReceived(_) => HandshakeFailure::AlertReceived,
        _ => HandshakeFailure::Protocol,
    }
}

impl HandshakeFailure {
    /// Every cause, in a fixed order (the order of [`HandshakeStats::rejected`](crate::tls::HandshakeStats::rejected)).
    pub const ALL: [HandshakeFailure; 19] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::NoCertificate,
        HandshakeFailure::UnknownIssuer,
        HandshakeFailure::Expired,
        HandshakeFailure::NotYetValid,
        HandshakeFailure::Revoked,
        HandshakeFailure::UnknownRevocationStatus,
        HandshakeFailure::ExpiredCrl,
        HandshakeFailure::BadKeyUsage,
        HandshakeFailure::CaUsedAsLeaf,
        HandshakeFailure::BadSignature,
        HandshakeFailure::BadCertificate,
        HandshakeFailure::ProtocolVersion,
        HandshakeFailure::Incompatible,
        HandshakeFailure::AlertReceived,
        HandshakeFailure::Protocol,
        HandshakeFailure::Io,
        HandshakeFailure::UnparsableCertificate,
        HandshakeFailure::ResumptionRevoked,
    ];

    pub(crate) fn index(self) -> usize {
        // ALL lists every variant once; the position is the counter slot.
        HandshakeFailure::ALL
            .iter()
            .position(|c| *c == self)
            .unwrap_or(0)
    }
}
