//! Handshake counters: every acceptor keeps them, [`HandshakeStats`] is a snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::tls::handshake_error::HandshakeFailure;

/// Counters of accepted and rejected handshakes, shared by clones of an acceptor.
#[derive(Debug, Default)]
pub(crate) struct HandshakeCounters {
    accepted: AtomicU64,
    resumed_validity_only: AtomicU64,
    resumed_reverified: AtomicU64,
    rejected: [AtomicU64; HandshakeFailure::ALL.len()],
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

    pub(crate) fn snapshot(&self) -> HandshakeStats {
        HandshakeStats {
            accepted: self.accepted.load(Ordering::Relaxed),
            resumed_validity_only: self.resumed_validity_only.load(Ordering::Relaxed),
            resumed_reverified: self.resumed_reverified.load(Ordering::Relaxed),
            rejected: HandshakeFailure::ALL
                .iter()
                .map(|c| (*c, self.rejected[c.index()].load(Ordering::Relaxed)))
                .collect(),
        }
    }
}

/// A snapshot of an acceptor's handshake counters.
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
    pub rejected: Vec<(HandshakeFailure, u64)>,
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
}
