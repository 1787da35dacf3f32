//! Handshake and admission counters: every acceptor keeps them, [`HandshakeStats`] is a
//! snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::{self, Level};
use crate::tls::handshake_error::{HandshakeFailure, ShedCause};

/// Counters of accepted and rejected handshakes and of shed connections, shared by clones of
/// an acceptor and by the listeners that use it.
#[derive(Debug)]
pub(crate) struct HandshakeCounters {
    accepted: AtomicU64,
    resumed_validity_only: AtomicU64,
    resumed_reverified: AtomicU64,
    rejected: [AtomicU64; HandshakeFailure::ALL.len()],
    shed: [AtomicU64; ShedCause::ALL.len()],
    handshakes_in_flight: Gauge,
    open_connections: Gauge,
    anonymous_connections: Gauge,
}

/// A level that goes up and down (several listeners may share one acceptor), reported as the
/// metric of its `level` too.
#[derive(Debug)]
pub(crate) struct Gauge(AtomicU64, Level);

impl Gauge {
    const fn new(level: Level) -> Self {
        Gauge(AtomicU64::new(0), level)
    }
    pub(crate) fn up(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
        metrics::level(self.1, true);
    }
    pub(crate) fn down(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        metrics::level(self.1, false);
    }
    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for HandshakeCounters {
    fn default() -> Self {
        HandshakeCounters {
            accepted: AtomicU64::new(0),
            resumed_validity_only: AtomicU64::new(0),
            resumed_reverified: AtomicU64::new(0),
            rejected: std::array::from_fn(|_| AtomicU64::new(0)),
            shed: std::array::from_fn(|_| AtomicU64::new(0)),
            handshakes_in_flight: Gauge::new(Level::HandshakesInFlight),
            open_connections: Gauge::new(Level::OpenConnections),
            anonymous_connections: Gauge::new(Level::AnonymousConnections),
        }
    }
}

impl HandshakeCounters {
    pub(crate) fn record_accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// A resumed session's chain was re-checked: `full` with the verifier, or else only for
    /// validity (the configuration that verified it is still in force).
    pub(crate) fn record_resumed_check(&self, full: bool) {
        let counter = if full {
            &self.resumed_reverified
        } else {
            &self.resumed_validity_only
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_rejected(&self, cause: HandshakeFailure) {
        self.rejected[cause.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_shed(&self, cause: ShedCause) {
        self.shed[cause.index()].fetch_add(1, Ordering::Relaxed);
        metrics::shed(cause);
    }

    pub(crate) fn handshakes_in_flight(&self) -> &Gauge {
        &self.handshakes_in_flight
    }

    pub(crate) fn open_connections(&self) -> &Gauge {
        &self.open_connections
    }

    pub(crate) fn anonymous_connections(&self) -> &Gauge {
        &self.anonymous_connections
    }

    pub(crate) fn snapshot(&self) -> HandshakeStats {
        HandshakeStats {
            accepted: self.accepted.load(Ordering::Relaxed),
            resumed_validity_only: self.resumed_validity_only.load(Ordering::Relaxed),
            resumed_reverified: self.resumed_reverified.load(Ordering::Relaxed),
            rejected: HandshakeFailure::ALL
                .iter()
                .map(|c| (*c, self.rejected[c.index()].load(Ordering::Relaxed)))
                .collect(),
            shed: ShedCause::ALL
                .iter()
                .map(|c| (*c, self.shed[c.index()].load(Ordering::Relaxed)))
                .collect(),
            handshakes_in_flight: self.handshakes_in_flight.now(),
            open_connections: self.open_connections.now(),
            anonymous_connections: self.anonymous_connections.now(),
        }
    }
}

/// A snapshot of an acceptor's handshake counters, and of what the listeners using it hold
/// open.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandshakeStats {
    /// Handshakes that produced a connection.
    pub accepted: u64,
    /// Resumed sessions whose chain only needed its validity windows checked: the trust
    /// configuration that verified it in full is still the one in force. Counted whatever the
    /// outcome.
    pub resumed_validity_only: u64,
    /// Resumed sessions whose chain was verified again in full (after a reload, for TLS 1.2
    /// sessions, with CRL expiry enforced, or when the quick check did not pass). Counted
    /// whatever the outcome.
    pub resumed_reverified: u64,
    /// Failed handshakes per cause, every cause listed (in [`HandshakeFailure::ALL`] order).
    /// A handshake the listener shed counts as [`HandshakeFailure::Shed`].
    pub rejected: Vec<(HandshakeFailure, u64)>,
    /// Connections a listener closed to stay within its limits, per cause, every cause listed
    /// (in [`ShedCause::ALL`] order): handshakes shed and connections refused, including those
    /// refused before any handshake began.
    pub shed: Vec<(ShedCause, u64)>,
    /// TLS handshakes running now in the listeners of this acceptor.
    pub handshakes_in_flight: u64,
    /// Connections open now (handshake finished, not yet closed) in the listeners of this
    /// acceptor.
    pub open_connections: u64,
    /// Of those, connections without a client certificate.
    pub anonymous_connections: u64,
}

impl HandshakeStats {
    /// Failed handshakes of one cause.
    pub fn rejected(&self, cause: HandshakeFailure) -> u64 {
        self.rejected
            .iter()
            .find(|(c, _)| *c == cause)
            .map_or(0, |(_, n)| *n)
    }

    /// All failed handshakes.
    pub fn total_rejected(&self) -> u64 {
        self.rejected.iter().map(|(_, n)| n).sum()
    }

    /// Connections shed for one cause.
    pub fn shed(&self, cause: ShedCause) -> u64 {
        self.shed
            .iter()
            .find(|(c, _)| *c == cause)
            .map_or(0, |(_, n)| *n)
    }
}
