//! Connections that present the same chain, verified by the same trust bundle, share one
//! [`Principal`]: parsed once and held once, however many connections a client keeps open
//! (gRPC channels, HTTP/1.1 connection pools, HTTP/2 clients that open one connection per
//! worker).
//!
//! The table holds weak handles only: a principal lives exactly as long as one of its
//! connections (or a clone a handler kept), and a chain seen again after that is parsed
//! again. It is bounded: dead entries are swept whenever it has doubled since the last sweep,
//! and past [`MAX_ENTRIES`] live ones new principals are simply not shared.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rustls::pki_types::CertificateDer;

use crate::identity::principal::{Principal, PrincipalError, WeakPrincipal};
use crate::identity::trust_bundle::TrustBundle;

/// Live principals remembered at most (a few dozen bytes each).
pub(crate) const MAX_ENTRIES: usize = 65_536;
/// The table is first swept of dead entries at this size.
const FIRST_SWEEP: usize = 1_024;

/// The principals of one acceptor's open connections, by chain.
pub(crate) struct SharedPrincipals {
    table: Mutex<Table>,
    // Seeded per process: a client cannot aim chains at one slot.
    hasher: quick_cache::DefaultHashBuilder,
    max_entries: usize,
}

struct Table {
    // A hash collision only costs sharing: the entry is compared byte for byte before use,
    // and the newer chain takes the slot.
    entries: HashMap<u64, WeakPrincipal>,
    sweep_at: usize,
    // New principals not shared since the table was found full of live ones: it is swept
    // again only after a quarter of its size of them, so that a full table costs O(1) per
    // handshake, amortized.
    unshared: usize,
}

impl SharedPrincipals {
    pub(crate) fn new() -> Self {
        Self::with_max_entries(MAX_ENTRIES)
    }

    fn with_max_entries(max_entries: usize) -> Self {
        SharedPrincipals {
            table: Mutex::new(Table {
                entries: HashMap::new(),
                sweep_at: FIRST_SWEEP.min(max_entries),
                unshared: 0,
            }),
            hasher: quick_cache::DefaultHashBuilder::default(),
            max_entries,
        }
    }

    /// The principal of `chain` as `bundle` verified it: an open connection's if one presented
    /// the same chain, else a new one (then shared).
    pub(crate) fn get_or_parse(
        &self,
        chain: &[CertificateDer<'_>],
        bundle: TrustBundle,
    ) -> Result<Principal, PrincipalError> {
        let key = {
            let mut hasher = self.hasher.build_hasher();
            for cert in chain {
                hasher.write_usize(cert.len());
                hasher.write(cert.as_ref());
            }
            hasher.finish()
        };
        let known = self
            .lock()
            .entries
            .get(&key)
            .and_then(WeakPrincipal::upgrade);
        if let Some(principal) = known.filter(|p| p.is_of(chain, &bundle)) {
            return Ok(principal);
        }
        // Parsed outside the lock.
        let principal = Principal::from_chain_verified_by(chain, bundle)?;
        let mut table = self.lock();
        let full = table.entries.len() >= self.max_entries;
        if table.entries.len() >= table.sweep_at
            && (!full || table.unshared >= self.max_entries / 4)
        {
            table.entries.retain(|_, weak| !weak.is_dead());
            let len = table.entries.len();
            table.sweep_at = (len * 2).max(FIRST_SWEEP).min(self.max_entries);
            table.unshared = 0;
        }
        if table.entries.len() < self.max_entries || table.entries.contains_key(&key) {
            table.entries.insert(key, principal.downgrade());
        } else {
            table.unshared += 1;
        }
        Ok(principal)
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

impl std::fmt::Debug for SharedPrincipals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPrincipals")
            .field("entries", &self.lock().entries.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{CertSpec, principal};

    /// A self-signed leaf of common name `cn`, as a chain.
    fn chain_der(cn: &'static str) -> Vec<CertificateDer<'static>> {
        let spec = CertSpec {
            cn: Some(cn),
            ..CertSpec::default()
        };
        principal(spec)
            .certificates()
            .map(|c| c.into_owned())
            .collect()
    }

    #[test]
    fn the_same_chain_and_bundle_share_one_principal_while_it_lives() {
        let shared = SharedPrincipals::new();
        let alice = chain_der("alice");
        let bob = chain_der("bob");
        let a1 = shared.get_or_parse(&alice, TrustBundle::Unnamed).unwrap();
        let a2 = shared.get_or_parse(&alice, TrustBundle::Unnamed).unwrap();
        assert!(Principal::ptr_eq(&a1, &a2));
        let b = shared.get_or_parse(&bob, TrustBundle::Unnamed).unwrap();
        assert!(!Principal::ptr_eq(&a1, &b));
        assert_eq!(b.common_name(), Some("bob"));
        // Another bundle verified it: another principal (it says which bundle).
        let other = TrustBundle::Named("partners".into());
        let a3 = shared.get_or_parse(&alice, other.clone()).unwrap();
        assert!(!Principal::ptr_eq(&a1, &a3));
        assert_eq!(a3.trust_bundle(), &other);
        // Gone with its last handle; the next one is parsed anew.
        drop((a1, a2, a3));
        let a4 = shared.get_or_parse(&alice, TrustBundle::Unnamed).unwrap();
        assert_eq!(a4.common_name(), Some("alice"));
        assert_eq!(a4.trust_bundle(), &TrustBundle::Unnamed);
    }

    #[test]
    fn a_bad_chain_is_an_error_and_not_remembered() {
        let shared = SharedPrincipals::new();
        let garbage = [CertificateDer::from(vec![0x30, 0x03, 0x01, 0x01, 0xff])];
        assert!(shared.get_or_parse(&garbage, TrustBundle::Unnamed).is_err());
        assert!(shared.get_or_parse(&[], TrustBundle::Unnamed).is_err());
        assert_eq!(shared.len(), 0);
    }

    #[test]
    fn the_table_is_swept_and_bounded() {
        let shared = SharedPrincipals::with_max_entries(4);
        let names = ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "client-7"];
        let chains: Vec<_> = names.into_iter().map(chain_der).collect();
        // Live principals beyond the bound are still served, just not shared.
        let live: Vec<_> = chains
            .iter()
            .map(|c| shared.get_or_parse(c, TrustBundle::Unnamed).unwrap())
            .collect();
        assert_eq!(shared.len(), 4);
        let again = shared
            .get_or_parse(&chains[7], TrustBundle::Unnamed)
            .unwrap();
        assert!(!Principal::ptr_eq(&again, &live[7]));
        assert_eq!(again.common_name(), Some("client-7"));
        // Once they are gone, the sweep makes room again.
        drop((live, again));
        let fresh = shared
            .get_or_parse(&chains[0], TrustBundle::Unnamed)
            .unwrap();
        let shared_again = shared
            .get_or_parse(&chains[0], TrustBundle::Unnamed)
            .unwrap();
        assert!(Principal::ptr_eq(&fresh, &shared_again));
        assert!(shared.len() <= 4);
    }
}
