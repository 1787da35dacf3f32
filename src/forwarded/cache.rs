//! [`ForwardedCache`]: the forwarded identities one proxy connection has verified, by
//! fingerprint of the raw header values, each tied to the trust generation that verified it;
//! bounded in bytes, O(1) eviction.

use std::sync::{Mutex, PoisonError};

use crate::forwarded::format::ForwardedFingerprint;
use crate::forwarded::proxies::CACHE_ENTRY_BYTES;
use crate::forwarded::refusal::ForwardedRefusal;
use crate::identity::principal::Principal;
use crate::identity::roles::Roles;

/// A verified forwarded client: its principal (which names the proxy) and its roles.
#[derive(Clone, Debug)]
pub(crate) struct ForwardedIdentity {
    pub(crate) principal: Principal,
    pub(crate) roles: Roles,
}

/// What verifying one forwarded chain under one trust generation gave.
pub(crate) struct Verified {
    pub(crate) generation: u64,
    pub(crate) outcome: Result<ForwardedIdentity, ForwardedRefusal>,
}

impl Verified {
    fn weight(&self) -> u64 {
        let der = match &self.outcome {
            Ok(identity) => identity.principal.certificates().map(|c| c.len()).sum(),
            Err(_) => 0,
        };
        (CACHE_ENTRY_BYTES + der) as u64
    }
}

#[derive(Clone, Copy)]
struct Weight;

impl quick_cache::Weighter<ForwardedFingerprint, Verified> for Weight {
    fn weight(&self, _: &ForwardedFingerprint, entry: &Verified) -> u64 {
        entry.weight()
    }
}

type Entries = quick_cache::unsync::Cache<ForwardedFingerprint, Verified, Weight>;

/// One connection's cache. The lock is held for a lookup or an insert only, never while a
/// chain is verified; the table is allocated on first insert.
pub(crate) struct ForwardedCache {
    max_bytes: usize,
    entries: Mutex<Option<Entries>>,
}

/// What the cache knows of a fingerprint under the current generation.
pub(crate) enum Cached {
    Identity(ForwardedIdentity),
    Refused(ForwardedRefusal),
    Unknown,
}

/// Roughly what a forwarded chain weighs (a leaf and an intermediate), to size the table.
const TYPICAL_ENTRY_BYTES: usize = CACHE_ENTRY_BYTES + 2_048;

impl ForwardedCache {
    /// A cache of at most `max_bytes` (0: nothing is kept).
    pub(crate) fn new(max_bytes: usize) -> Self {
        ForwardedCache {
            max_bytes,
            entries: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Entries>> {
        // Plain data: a panic elsewhere cannot leave it half-changed.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The outcome remembered for `key`, if it was reached under `generation`.
    pub(crate) fn get(&self, key: &ForwardedFingerprint, generation: u64) -> Cached {
        let entries = self.lock();
        let Some(entry) = entries.as_ref().and_then(|e| e.get(key)) else {
            return Cached::Unknown;
        };
        if entry.generation != generation {
            return Cached::Unknown;
        }
        match &entry.outcome {
            Ok(identity) => Cached::Identity(identity.clone()),
            Err(refusal) => match refusal.cached_copy() {
                Some(copy) => Cached::Refused(copy),
                None => Cached::Unknown,
            },
        }
    }

    /// Remembers `verified` for `key` (replacing what an older generation left), evicting
    /// old entries to stay within the bound. An entry larger than the whole bound is not kept.
    pub(crate) fn insert(&self, key: ForwardedFingerprint, verified: Verified) {
        if self.max_bytes == 0 || verified.weight() > self.max_bytes as u64 {
            return;
        }
        let mut entries = self.lock();
        let entries = entries.get_or_insert_with(|| {
            let estimated = (self.max_bytes / TYPICAL_ENTRY_BYTES).clamp(1, 4_096);
            Entries::with_weighter(estimated, self.max_bytes as u64, Weight)
        });
        entries.insert(key, verified);
    }

    /// Entries and their total weight (tests).
    #[cfg(test)]
    fn usage(&self) -> (usize, u64) {
        self.lock()
            .as_ref()
            .map_or((0, 0), |e| (e.len(), e.weight()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forwarded::format::{ForwardedCertFormat, ForwardedCertHeader};
    use crate::testing::{CertSpec, principal};
    use crate::tls::handshake_error::HandshakeFailure;

    fn key(n: usize) -> ForwardedFingerprint {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "x-ssl-client-cert",
            http::HeaderValue::try_from(format!("AAAA{n}")).unwrap(),
        );
        ForwardedCertHeader::new(ForwardedCertFormat::Haproxy)
            .fingerprint(&headers)
            .unwrap()
            .unwrap()
    }

    fn identity() -> ForwardedIdentity {
        ForwardedIdentity {
            principal: principal(CertSpec::default()),
            roles: Roles::none(),
        }
    }

    #[test]
    fn entries_count_only_for_their_generation() {
        let cache = ForwardedCache::new(64 * 1024);
        cache.insert(
            key(1),
            Verified {
                generation: 3,
                outcome: Ok(identity()),
            },
        );
        assert!(matches!(cache.get(&key(1), 3), Cached::Identity(_)));
        assert!(matches!(cache.get(&key(1), 4), Cached::Unknown));
        assert!(matches!(cache.get(&key(2), 3), Cached::Unknown));
        cache.insert(
            key(1),
            Verified {
                generation: 4,
                outcome: Err(ForwardedRefusal::Unverified {
                    cause: HandshakeFailure::Revoked,
                    error: rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked),
                }),
            },
        );
        assert!(matches!(
            cache.get(&key(1), 4),
            Cached::Refused(ForwardedRefusal::Unverified {
                cause: HandshakeFailure::Revoked,
                ..
            })
        ));
        assert_eq!(
            cache.usage().0,
            1,
            "the new generation replaced the old entry"
        );
    }

    #[test]
    fn bounded_in_bytes_whatever_the_number_of_distinct_certificates() {
        let max = 32 * 1024;
        let cache = ForwardedCache::new(max);
        let one = Verified {
            generation: 0,
            outcome: Ok(identity()),
        }
        .weight();
        for n in 0..10_000 {
            cache.insert(
                key(n),
                Verified {
                    generation: 0,
                    outcome: Ok(identity()),
                },
            );
        }
        let (len, weight) = cache.usage();
        assert!(weight <= max as u64, "{weight} > {max}");
        assert!(len as u64 <= max as u64 / one, "{len} entries");
        assert!(len > 0);
        // The most recent one is there.
        assert!(matches!(cache.get(&key(9_999), 0), Cached::Identity(_)));
    }

    #[test]
    fn a_zero_bound_keeps_nothing() {
        let cache = ForwardedCache::new(0);
        cache.insert(
            key(1),
            Verified {
                generation: 0,
                outcome: Ok(identity()),
            },
        );
        assert!(matches!(cache.get(&key(1), 0), Cached::Unknown));
        assert_eq!(cache.usage(), (0, 0));
    }
}
