//! Why handshakes fail: [`AcceptError`] and its classification [`HandshakeFailure`].

use std::io;
use std::time::Duration;

use rustls::CertificateError;

use crate::identity::principal::PrincipalError;
use crate::tls::svid::SpiffeRefusal;

/// Why a connection did not become a [`ConnectionInfo`](crate::ConnectionInfo).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The client did not finish the handshake in time.
    #[error("TLS handshake did not complete within {0:?}")]
    Timeout(Duration),
    /// The server's certificate has expired; no handshake was attempted.
    #[error("the server certificate has expired; refusing new handshakes")]
    ServerCertificateExpired,
    /// The client did not send a complete ClientHello in time (it sent nothing, or part of a
    /// record): see [`MtlsAcceptor::client_hello_timeout`](crate::MtlsAcceptor::client_hello_timeout).
    #[error("no complete ClientHello within {0:?}")]
    ClientHelloTimeout(Duration),
    /// The listener closed the connection to stay within its limits: see [`ShedCause`].
    #[error("connection shed: {0}")]
    Shed(ShedCause),
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
    /// No complete ClientHello before the ClientHello deadline.
    ClientHelloTimeout,
    /// Closed by the listener's admission control during or right after the handshake (the
    /// [`ShedCause`] counters say why).
    Shed,
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
    /// A valid X509-SVID whose SPIFFE ID names a trust domain without a configured bundle.
    UnknownTrustDomain,
    /// A certificate with a `spiffe` URI SAN that is not a valid X509-SVID (two URI SANs, an
    /// invalid SPIFFE ID, a CA, a wrong key usage).
    InvalidSvid,
    /// A certificate without a SPIFFE ID where only SPIFFE bundles are configured.
    NoSpiffeId,
    /// The server's own certificate has expired (files not renewed, or a Workload API SVID
    /// with no replacement): the server refuses new handshakes rather than present it.
    ServerCertificateExpired,
}

impl HandshakeFailure {
    /// A stable snake_case name, for metric labels and machine-readable logs:
    /// `"unknown_issuer"`, `"expired"`, `"bad_eku"`, ... (the `cause` label of
    /// `tower_mtls_handshake_failures_total`). Never changes for a cause.
    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::ClientHelloTimeout => "client_hello_timeout",
            HandshakeFailure::Shed => "shed",
            HandshakeFailure::NoCertificate => "no_certificate",
            HandshakeFailure::UnknownIssuer => "unknown_issuer",
            HandshakeFailure::Expired => "expired",
            HandshakeFailure::NotYetValid => "not_yet_valid",
            HandshakeFailure::Revoked => "revoked",
            HandshakeFailure::UnknownRevocationStatus => "unknown_revocation_status",
            HandshakeFailure::ExpiredCrl => "expired_crl",
            HandshakeFailure::BadKeyUsage => "bad_eku",
            HandshakeFailure::CaUsedAsLeaf => "ca_as_leaf",
            HandshakeFailure::BadSignature => "bad_signature",
            HandshakeFailure::BadCertificate => "bad_certificate",
            HandshakeFailure::ProtocolVersion => "protocol_version",
            HandshakeFailure::Incompatible => "incompatible",
            HandshakeFailure::AlertReceived => "alert_received",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::Io => "io",
            HandshakeFailure::UnparsableCertificate => "unparsable_certificate",
            HandshakeFailure::ResumptionRevoked => "resumption_revoked",
            HandshakeFailure::UnknownTrustDomain => "unknown_trust_domain",
            HandshakeFailure::InvalidSvid => "invalid_svid",
            HandshakeFailure::NoSpiffeId => "no_spiffe_id",
            HandshakeFailure::ServerCertificateExpired => "server_certificate_expired",
        }
    }

    /// A short phrase for logs: `"unknown issuer"`, `"expired"`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::ClientHelloTimeout => "no ClientHello in time",
            HandshakeFailure::Shed => "shed by the listener's limits",
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
            HandshakeFailure::UnknownTrustDomain => "SPIFFE ID of a trust domain without a bundle",
            HandshakeFailure::InvalidSvid => "not a valid X509-SVID",
            HandshakeFailure::NoSpiffeId => "no SPIFFE ID (only SPIFFE bundles configured)",
            HandshakeFailure::ServerCertificateExpired => "server certificate expired",
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
            AcceptError::ServerCertificateExpired => HandshakeFailure::ServerCertificateExpired,
            AcceptError::ClientHelloTimeout(_) => HandshakeFailure::ClientHelloTimeout,
            AcceptError::Shed(_) => HandshakeFailure::Shed,
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

/// The classification of a verifier's error (also used for forwarded chains).
pub(crate) fn classify(e: &rustls::Error) -> HandshakeFailure {
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
            CertificateError::Other(other) if other.0.is::<SpiffeRefusal>() => {
                spiffe_cause(other.0.downcast_ref::<SpiffeRefusal>())
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

fn spiffe_cause(refusal: Option<&SpiffeRefusal>) -> HandshakeFailure {
    match refusal {
        Some(SpiffeRefusal::UnknownTrustDomain(_)) => HandshakeFailure::UnknownTrustDomain,
        Some(SpiffeRefusal::InvalidSvid(_)) => HandshakeFailure::InvalidSvid,
        Some(SpiffeRefusal::NoSpiffeId) | None => HandshakeFailure::NoSpiffeId,
    }
}

impl HandshakeFailure {
    /// Every cause, in a fixed order (the order of [`HandshakeStats::rejected`](crate::tls::HandshakeStats::rejected)).
    pub const ALL: [HandshakeFailure; 25] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::ClientHelloTimeout,
        HandshakeFailure::Shed,
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
        HandshakeFailure::UnknownTrustDomain,
        HandshakeFailure::InvalidSvid,
        HandshakeFailure::NoSpiffeId,
        HandshakeFailure::ServerCertificateExpired,
    ];

    pub(crate) fn index(self) -> usize {
        // ALL lists every variant once; the position is the counter slot.
        HandshakeFailure::ALL
            .iter()
            .position(|c| *c == self)
            .unwrap_or(0)
    }
}

/// Why the listener closed a connection it had accepted, without serving it: the limits of
/// [`MtlsListenerBuilder`](crate::tls::MtlsListenerBuilder) at work. Each cause has a counter
/// ([`HandshakeStats::shed`](crate::tls::HandshakeStats::shed)).
///
/// ```
/// use tower_mtls::tls::ShedCause;
///
/// assert_eq!(ShedCause::ConnectionsPerIp.as_str(), "too many connections from this address");
/// assert_eq!(ShedCause::ALL.len(), 6);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ShedCause {
    /// A handshake in flight was closed to make room for a new connection: the cap on
    /// handshakes in flight was reached (the oldest handshake still waiting for its
    /// ClientHello goes first, else the oldest one).
    HandshakesInFlight,
    /// Like [`HandshakesInFlight`](Self::HandshakesInFlight), for the cap per client address:
    /// the address's own oldest handshake made room for its new connection.
    HandshakesInFlightPerIp,
    /// A new connection was refused: the cap on open connections was reached.
    Connections,
    /// A new connection was refused: its address had as many open connections as allowed.
    ConnectionsPerIp,
    /// A connection without a client certificate was closed after its handshake: the cap on
    /// such connections was reached.
    AnonymousConnections,
    /// Like [`AnonymousConnections`](Self::AnonymousConnections), per client address.
    AnonymousConnectionsPerIp,
}

impl ShedCause {
    /// A stable snake_case name, for metric labels and machine-readable logs (the `cause`
    /// label of `tower_mtls_connections_shed_total`).
    pub fn label(self) -> &'static str {
        match self {
            ShedCause::HandshakesInFlight => "handshakes_in_flight",
            ShedCause::HandshakesInFlightPerIp => "handshakes_in_flight_per_ip",
            ShedCause::Connections => "connections",
            ShedCause::ConnectionsPerIp => "connections_per_ip",
            ShedCause::AnonymousConnections => "anonymous_connections",
            ShedCause::AnonymousConnectionsPerIp => "anonymous_connections_per_ip",
        }
    }

    /// Every cause, in a fixed order (the order of
    /// [`HandshakeStats::shed`](crate::tls::HandshakeStats::shed)).
    pub const ALL: [ShedCause; 6] = [
        ShedCause::HandshakesInFlight,
        ShedCause::HandshakesInFlightPerIp,
        ShedCause::Connections,
        ShedCause::ConnectionsPerIp,
        ShedCause::AnonymousConnections,
        ShedCause::AnonymousConnectionsPerIp,
    ];

    /// A short phrase for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ShedCause::HandshakesInFlight => "too many handshakes in flight",
            ShedCause::HandshakesInFlightPerIp => "too many handshakes in flight from this address",
            ShedCause::Connections => "too many open connections",
            ShedCause::ConnectionsPerIp => "too many connections from this address",
            ShedCause::AnonymousConnections => "too many connections without a certificate",
            ShedCause::AnonymousConnectionsPerIp => {
                "too many connections without a certificate from this address"
            }
        }
    }

    pub(crate) fn index(self) -> usize {
        // ALL lists every variant once; the position is the counter slot.
        ShedCause::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }
}

impl std::fmt::Display for ShedCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
