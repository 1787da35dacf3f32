//! [`ForwardedCache`]: the forwarded identities one proxy connection has verified, by the raw
//! header values they came in, each tied to the trust generation that verified it; bounded in
//! bytes, O(1) eviction.
//!
//! The key is the values themselves, compared exactly: a lookup hashes them with the cache's
//! fast seeded hasher and compares bytes, with no copy and no cryptographic digest on the hit
//! path (which every request of a proxy takes).

use std::hash::{Hash, Hasher};
use std::sync::{Mutex, PoisonError};

use http::HeaderValue;

use crate::forwarded::format::Lines;
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

/// The raw values of the forwarded headers of one request, owned: the main header's field
/// lines, then the chain header's.
#[derive(PartialEq, Eq)]
pub(crate) struct RawKey {
    main: Box<[Box<[u8]>]>,
    chain: Box<[Box<[u8]>]>,
}

impl RawKey {
    pub(crate) fn of(lines: &Lines<'_>) -> Self {
        let own = |values: &[&HeaderValue]| values.iter().map(|v| v.as_bytes().into()).collect();
        RawKey {
            main: own(lines.main()),
            chain: own(lines.chain()),
        }
    }

    fn bytes(&self) -> usize {
        self.main
            .iter()
            .chain(self.chain.iter())
            .map(|v| v.len())
            .sum()
    }
}

/// Both key forms feed the hasher the same calls, so they hash alike.
fn hash_lines<'v, H: Hasher>(
    main: impl ExactSizeIterator<Item = &'v [u8]>,
    chain: impl ExactSizeIterator<Item = &'v [u8]>,
    state: &mut H,
) {
    state.write_usize(main.len());
    main.for_each(|v| v.hash(state));
    state.write_usize(chain.len());
    chain.for_each(|v| v.hash(state));
}

impl Hash for RawKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_lines(
            self.main.iter().map(|v| &**v),
            self.chain.iter().map(|v| &**v),
            state,
        );
    }
}

/// The lines of a request, borrowed, to look a [`RawKey`] up without copying them.
pub(crate) struct RawView<'a, 'h>(pub(crate) &'a Lines<'h>);

impl Hash for RawView<'_, '_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_lines(
            self.0.main().iter().map(|v| v.as_bytes()),
            self.0.chain().iter().map(|v| v.as_bytes()),
            state,
        );
    }
}

impl quick_cache::Equivalent<RawKey> for RawView<'_, '_> {
    fn equivalent(&self, key: &RawKey) -> bool {
        let same = |values: &[&HeaderValue], owned: &[Box<[u8]>]| {
            values.len() == owned.len()
                && values.iter().zip(owned).all(|(v, o)| v.as_bytes() == &**o)
        };
        same(self.0.main(), &key.main) && same(self.0.chain(), &key.chain)
    }
}

#[derive(Clone, Copy)]
struct Weight;

impl quick_cache::Weighter<RawKey, Verified> for Weight {
    fn weight(&self, key: &RawKey, entry: &Verified) -> u64 {
        key.bytes() as u64 + entry.weight()
    }
}

type Entries = quick_cache::unsync::Cache<RawKey, Verified, Weight>;

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
    pub(crate) fn get(&self, key: &RawView<'_, '_>, generation: u64) -> Cached {
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
    pub(crate) fn insert(&self, key: RawKey, verified: Verified) {
        if self.max_bytes == 0 || (key.bytes() as u64 + verified.weight()) > self.max_bytes as u64 {
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

    fn headers(n: usize) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "client-cert",
            http::HeaderValue::try_from(format!(":AAAA{n}:")).unwrap(),
        );
        headers.append("client-cert-chain", http::HeaderValue::from_static(":AA:"));
        headers
    }

    fn with_lines<T>(n: usize, f: impl FnOnce(&Lines<'_>) -> T) -> T {
        let headers = headers(n);
        let lines = ForwardedCertHeader::new(ForwardedCertFormat::Rfc9440)
            .lines(&headers)
            .unwrap()
            .unwrap();
        f(&lines)
    }

    fn key(n: usize) -> RawKey {
        with_lines(n, RawKey::of)
    }

    fn get(cache: &ForwardedCache, n: usize, generation: u64) -> Cached {
        with_lines(n, |lines| cache.get(&RawView(lines), generation))
    }

    #[test]
    fn borrowed_and_owned_keys_hash_and_compare_alike() {
        use std::hash::BuildHasher;
        let hasher = quick_cache::DefaultHashBuilder::default();
        with_lines(7, |lines| {
            let owned = RawKey::of(lines);
            assert_eq!(hasher.hash_one(&owned), hasher.hash_one(RawView(lines)));
            assert!(quick_cache::Equivalent::equivalent(&RawView(lines), &owned));
            assert!(!quick_cache::Equivalent::equivalent(
                &RawView(lines),
                &key(8)
            ));
        });
        // The same bytes split differently between the headers are another key.
        let mut moved = http::HeaderMap::new();
        moved.insert("client-cert", http::HeaderValue::from_static(":AAAA7:"));
        moved.append("client-cert", http::HeaderValue::from_static(":AA:"));
        let reader = ForwardedCertHeader::new(ForwardedCertFormat::Xfcc)
            .header_name("client-cert")
            .unwrap();
        let lines = reader.lines(&moved).unwrap().unwrap();
        assert!(!quick_cache::Equivalent::equivalent(
            &RawView(&lines),
            &key(7)
        ));
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
        assert!(matches!(get(&cache, 1, 3), Cached::Identity(_)));
        assert!(matches!(get(&cache, 1, 4), Cached::Unknown));
        assert!(matches!(get(&cache, 2, 3), Cached::Unknown));
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
            get(&cache, 1, 4),
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
        .weight()
            + key(0).bytes() as u64;
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
        assert!(matches!(get(&cache, 9_999, 0), Cached::Identity(_)));
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
        assert!(matches!(get(&cache, 1, 0), Cached::Unknown));
        assert_eq!(cache.usage(), (0, 0));
    }
}
