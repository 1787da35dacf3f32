//! [`DecisionCache`]: remembers an (asynchronous) authorizer's decisions per certificate and
//! request class, never past the certificate's `notAfter` or a TTL, in bounded memory.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant, SystemTime};

use http::Method;
use pin_project_lite::pin_project;

use crate::authorize::authorizer::{AuthContext, Authorizer, Decision, Verdict};
use crate::identity::trust_bundle::TrustBundle;

/// Computes the request class part of a [`DecisionCache`] key. Closures
/// `Fn(&AuthContext<'_>) -> K` implement it.
pub trait RequestClassifier {
    /// The class.
    type Class: Hash + Eq + Clone + Send + 'static;
    /// The class of this request.
    fn classify(&self, ctx: &AuthContext<'_>) -> Self::Class;
}

impl<F, K> RequestClassifier for F
where
    F: Fn(&AuthContext<'_>) -> K,
    K: Hash + Eq + Clone + Send + 'static,
{
    type Class = K;
    fn classify(&self, ctx: &AuthContext<'_>) -> K {
        self(ctx)
    }
}

/// The default request class: method and path.
#[derive(Clone, Copy, Debug, Default)]
pub struct MethodAndPath;

impl RequestClassifier for MethodAndPath {
    type Class = (Method, Box<str>);
    fn classify(&self, ctx: &AuthContext<'_>) -> Self::Class {
        (ctx.method().clone(), ctx.path().into())
    }
}

/// Default time a decision is kept.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Default number of decisions kept.
pub const DEFAULT_CAPACITY: usize = 10_000;

// The bundle is part of who the certificate's names belong to: a reload can move a CA to
// another bundle, and the same certificate then means something else.
type Key<K> = ([u8; 32], TrustBundle, K);

struct Shared<K> {
    entries: Mutex<HashMap<Key<K>, (Decision, Instant)>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<K> Default for Shared<K> {
    fn default() -> Self {
        Shared {
            entries: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }
}

/// Wraps an authorizer and remembers its decisions per certificate and request class, never
/// past the certificate's `notAfter` or a TTL, in bounded memory.
///
/// The usual customer is a permission store behind a network hop. The store below has the
/// shape of a database call: it takes owned keys and is awaited, so the authorizer copies what
/// it needs out of the [`AuthContext`] before the `async` block.
///
/// ```
/// use std::collections::HashSet;
/// use std::sync::Arc;
/// use std::time::Duration;
/// use tower_mtls::authorize::DecisionCache;
/// use tower_mtls::{AuthContext, Decision, MtlsAuthLayer};
///
/// /// Grants by identity (SPIFFE ID or subject DN) and permission (`"GET /reports"`).
/// #[derive(Clone, Default)]
/// struct PermissionStore {
///     grants: Arc<HashSet<(String, String)>>,
/// }
///
/// impl PermissionStore {
///     async fn is_granted(&self, identity: String, permission: String) -> bool {
///         tokio::task::yield_now().await; // a real store would query its database here
///         self.grants.contains(&(identity, permission))
///     }
/// }
///
/// let store = PermissionStore::default();
/// let lookup = tower_mtls::authorize_fn(move |ctx: &AuthContext<'_>| {
///     let store = store.clone();
///     let identity = ctx.principal().to_string();
///     let permission = format!("{} {}", ctx.method(), ctx.path());
///     async move {
///         if store.is_granted(identity, permission).await {
///             Decision::allow("granted in the permission store")
///         } else {
///             Decision::deny("no grant in the permission store")
///         }
///     }
/// });
/// let layer = MtlsAuthLayer::new(
///     DecisionCache::new(lookup).ttl(Duration::from_secs(30)).capacity(10_000),
/// );
/// # let _ = layer;
/// ```
///
/// The cache key is the certificate's SHA-256 fingerprint, the
/// [trust bundle](crate::Principal::trust_bundle) that verified it and a *request class*, by default
/// the method and path. The class must capture everything the wrapped authorizer's decision
/// depends on besides the certificate (roles come from the certificate, so they are covered);
/// choose a coarser one with [`DecisionCache::classify_by`].
pub struct DecisionCache<A, C: RequestClassifier = MethodAndPath> {
    inner: A,
    classifier: C,
    ttl: Duration,
    capacity: usize,
    shared: Arc<Shared<C::Class>>,
}

impl<A: Authorizer> DecisionCache<A> {
    /// Caches `inner`'s decisions for [`DEFAULT_TTL`], at most [`DEFAULT_CAPACITY`] of them,
    /// keyed by certificate and [`MethodAndPath`].
    pub fn new(inner: A) -> Self {
        DecisionCache {
            inner,
            classifier: MethodAndPath,
            ttl: DEFAULT_TTL,
            capacity: DEFAULT_CAPACITY,
            shared: Arc::default(),
        }
    }
}

impl<A, C: RequestClassifier> DecisionCache<A, C> {
    /// Keep decisions at most `ttl` (and never past the certificate's `notAfter`).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Keep at most `capacity` decisions (0 disables caching).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Key decisions by `classifier`'s class instead of method and path. Starts empty.
    pub fn classify_by<C2: RequestClassifier>(self, classifier: C2) -> DecisionCache<A, C2> {
        DecisionCache {
            inner: self.inner,
            classifier,
            ttl: self.ttl,
            capacity: self.capacity,
            shared: Arc::default(),
        }
    }

    /// Hits, misses and the number of decisions held.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.shared.hits.load(Ordering::Relaxed),
            misses: self.shared.misses.load(Ordering::Relaxed),
            entries: lock(&self.shared.entries).len(),
        }
    }

    /// The wrapped authorizer.
    pub fn get_ref(&self) -> &A {
        &self.inner
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Entries are plain data; a panic while holding the lock cannot leave one half-written.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counters of a [`DecisionCache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheStats {
    /// Decisions answered from the cache.
    pub hits: u64,
    /// Decisions asked of the wrapped authorizer.
    pub misses: u64,
    /// Decisions held now (expired ones included until evicted).
    pub entries: usize,
}

impl<A, C> Authorizer for DecisionCache<A, C>
where
    A: Authorizer,
    C: RequestClassifier,
{
    type Future = CachedDecision<A::Future, C::Class>;

    fn authorize(&self, ctx: &AuthContext<'_>) -> Verdict<Self::Future> {
        let principal = ctx.principal();
        let key = (
            *principal.fingerprint_sha256(),
            principal.trust_bundle().clone(),
            self.classifier.classify(ctx),
        );
        let now = Instant::now();
        {
            let mut entries = lock(&self.shared.entries);
            match entries.get(&key) {
                Some((decision, expires)) if *expires > now => {
                    self.shared.hits.fetch_add(1, Ordering::Relaxed);
                    return Verdict::Now(decision.clone());
                }
                Some(_) => {
                    entries.remove(&key);
                }
                None => {}
            }
        }
        self.shared.misses.fetch_add(1, Ordering::Relaxed);
        // Never past notAfter: an expired certificate's decision must not outlive it, even if
        // the connection does.
        let expires = principal
            .not_after()
            .duration_since(SystemTime::now())
            .ok()
            .map(|left| left.min(self.ttl))
            .and_then(|keep| now.checked_add(keep));
        let insert = expires.filter(|_| self.capacity > 0).map(|expires| Insert {
            shared: self.shared.clone(),
            key,
            expires,
            capacity: self.capacity,
        });
        match self.inner.authorize(ctx) {
            Verdict::Now(decision) => {
                if let Some(insert) = insert {
                    insert.store(&decision);
                }
                Verdict::Now(decision)
            }
            Verdict::Later(inner) => Verdict::Later(CachedDecision { inner, insert }),
        }
    }
}

struct Insert<K> {
    shared: Arc<Shared<K>>,
    key: Key<K>,
    expires: Instant,
    capacity: usize,
}

impl<K: Hash + Eq + Clone> Insert<K> {
    fn store(self, decision: &Decision) {
        let mut entries = lock(&self.shared.entries);
        if entries.len() >= self.capacity && !entries.contains_key(&self.key) {
            let now = Instant::now();
            entries.retain(|_, (_, expires)| *expires > now);
            // Still full: drop the entry closest to expiry (O(n), only when full).
            if entries.len() >= self.capacity {
                let soonest = entries
                    .iter()
                    .min_by_key(|(_, (_, expires))| *expires)
                    .map(|(k, _)| k.clone());
                if let Some(k) = soonest {
                    entries.remove(&k);
                }
            }
        }
        entries.insert(self.key, (decision.clone(), self.expires));
    }
}

pin_project! {
    /// The future of a [`DecisionCache`] decision the wrapped authorizer makes asynchronously.
    pub struct CachedDecision<F, K> {
        #[pin]
        inner: F,
        insert: Option<Insert<K>>,
    }
}

impl<F, K> Future for CachedDecision<F, K>
where
    F: Future<Output = Decision>,
    K: Hash + Eq + Clone,
{
    type Output = Decision;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Decision> {
        let this = self.project();
        let decision = ready!(this.inner.poll(cx));
        if let Some(insert) = this.insert.take() {
            insert.store(&decision);
        }
        Poll::Ready(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{CertSpec, principal, request, shared_principal};
    use std::sync::atomic::AtomicUsize;

    /// An asynchronous authorizer that allows `/ok`, denies the rest, and counts its calls.
    fn counting_store() -> (impl Authorizer, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let authorizer = crate::authorize_fn(move |ctx: &AuthContext<'_>| {
            seen.fetch_add(1, Ordering::SeqCst);
            let ok = ctx.path() == "/ok";
            async move {
                tokio::task::yield_now().await;
                if ok {
                    Decision::allow("store says yes")
                } else {
                    Decision::deny("store says no")
                }
            }
        });
        (authorizer, calls)
    }

    async fn decide<A: Authorizer>(a: &A, p: &crate::Principal, path: &'static str) -> Decision {
        a.authorize(&request(p, Method::GET, path).context())
            .into_future()
            .await
    }

    #[tokio::test]
    async fn second_decision_comes_from_the_cache() {
        let (store, calls) = counting_store();
        let cache = DecisionCache::new(store);
        let p = shared_principal();
        assert!(decide(&cache, p, "/ok").await.is_allowed());
        assert!(decide(&cache, p, "/ok").await.is_allowed());
        assert!(!decide(&cache, p, "/no").await.is_allowed());
        assert!(!decide(&cache, p, "/no").await.is_allowed());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 2,
                misses: 2,
                entries: 2
            }
        );
        // another certificate is another key
        let other = principal(CertSpec::default());
        assert!(decide(&cache, &other, "/ok").await.is_allowed());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn entries_expire_after_the_ttl() {
        let (store, calls) = counting_store();
        let cache = DecisionCache::new(store).ttl(Duration::from_millis(30));
        let p = shared_principal();
        decide(&cache, p, "/ok").await;
        tokio::time::sleep(Duration::from_millis(60)).await;
        decide(&cache, p, "/ok").await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn entries_never_outlive_the_certificate() {
        let (store, calls) = counting_store();
        let cache = DecisionCache::new(store).ttl(Duration::from_secs(3600));
        let expired = principal(CertSpec {
            not_after: Some(time::OffsetDateTime::now_utc() - time::Duration::hours(1)),
            ..CertSpec::default()
        });
        decide(&cache, &expired, "/ok").await;
        decide(&cache, &expired, "/ok").await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "nothing cached past notAfter"
        );
        assert_eq!(cache.stats().entries, 0);

        // notAfter in ~2 s, TTL an hour: the entry goes when the certificate does.
        let soon = principal(CertSpec {
            not_after: Some(time::OffsetDateTime::now_utc() + time::Duration::seconds(2)),
            ..CertSpec::default()
        });
        decide(&cache, &soon, "/ok").await;
        decide(&cache, &soon, "/ok").await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        decide(&cache, &soon, "/ok").await;
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn size_is_bounded() {
        let (store, _) = counting_store();
        let cache = DecisionCache::new(store).capacity(2);
        let p = shared_principal();
        for path in ["/a", "/b", "/c", "/d"] {
            decide(&cache, p, path).await;
        }
        assert_eq!(cache.stats().entries, 2);
        let (store, calls) = counting_store();
        let off = DecisionCache::new(store).capacity(0);
        decide(&off, p, "/ok").await;
        decide(&off, p, "/ok").await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn coarser_request_classes() {
        let (store, calls) = counting_store();
        // One decision per certificate and method, whatever the path.
        let cache =
            DecisionCache::new(store).classify_by(|ctx: &AuthContext<'_>| ctx.method().clone());
        let p = shared_principal();
        assert!(decide(&cache, p, "/ok").await.is_allowed());
        assert!(decide(&cache, p, "/other").await.is_allowed());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
