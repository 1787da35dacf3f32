//! [`DecisionCache`]: remembers an (asynchronous) authorizer's decisions per certificate and
//! request class, never past the certificate's `notAfter` or a TTL, in memory bounded in
//! bytes.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant, SystemTime};

use http::Method;
use pin_project_lite::pin_project;
use sha2::{Digest, Sha256};

use crate::authorize::authorizer::{AuthContext, Authorizer, Decision, Verdict};
use crate::authorize::reason::Reason;

/// Computes the request class part of a [`DecisionCache`] key. Closures
/// `Fn(&AuthContext<'_>) -> K` implement it.
///
/// The cache keeps only a SHA-256 digest of the certificate and the class, so the class's
/// `Hash` must feed everything that tells two classes apart (derived impls do).
pub trait RequestClassifier {
    /// The class.
    type Class: Hash + Eq + Clone + Send + 'static;
    /// The class of this request.
    fn classify(&self, ctx: &AuthContext<'_>) -> Self::Class;
    /// Feeds the class of this request to `state`: what the cache key is made of. The default
    /// hashes [`classify`](Self::classify)'s result; override it to skip building the class.
    fn hash_class<H: Hasher>(&self, ctx: &AuthContext<'_>, state: &mut H) {
        self.classify(ctx).hash(state);
    }
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
    // The same bytes as hashing the class, without copying the path.
    fn hash_class<H: Hasher>(&self, ctx: &AuthContext<'_>, state: &mut H) {
        (ctx.method(), ctx.path()).hash(state);
    }
}

/// Default time a decision is kept.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Default number of decisions kept (with reasons that are static strings; see
/// [`DEFAULT_MAX_BYTES`]).
pub const DEFAULT_CAPACITY: usize = 10_000;
/// What one decision costs against the byte budget, besides its reason's text: the 32-byte
/// key, the decision and its expiry, and the cache's own tables (measured at 170–265 bytes
/// per entry).
pub const ENTRY_BYTES: usize = 256;
/// Default bound on the memory the cache holds: [`DEFAULT_CAPACITY`] decisions (2.5 MB).
pub const DEFAULT_MAX_BYTES: usize = DEFAULT_CAPACITY * ENTRY_BYTES;

/// SHA-256 of the certificate fingerprint, its trust bundle and the request class: fixed size
/// whatever the path, and collision-free in practice, so a client cannot make two classes share
/// a decision. The bundle is part of who the certificate's names belong to: a reload can move a
/// CA to another bundle, and the same certificate then means something else.
type Key = [u8; 32];
type Entry = (Decision, Instant);

/// The budget weight of an entry: fixed, plus its reason's own heap text.
#[derive(Clone, Copy, Debug)]
struct EntryWeight;

impl quick_cache::Weighter<Key, Entry> for EntryWeight {
    fn weight(&self, _key: &Key, (decision, _): &Entry) -> u64 {
        let reason = match decision {
            Decision::Allow { reason } | Decision::Deny { reason } => reason,
        };
        (ENTRY_BYTES + reason_heap_bytes(reason)) as u64
    }
}

fn reason_heap_bytes(reason: &Reason) -> usize {
    if reason.is_static() { 0 } else { reason.len() }
}

struct Shared {
    // Sharded, each shard behind its own lock (hits take a read lock on one shard); eviction
    // is O(1) (CLOCK-Pro). `None`: caching disabled.
    entries: Option<quick_cache::sync::Cache<Key, Entry, EntryWeight>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Shared {
    fn new(max_bytes: usize) -> Arc<Self> {
        let entries = (max_bytes >= ENTRY_BYTES).then(|| {
            quick_cache::sync::Cache::with_weighter(
                max_bytes / ENTRY_BYTES,
                max_bytes as u64,
                EntryWeight,
            )
        });
        Arc::new(Shared {
            entries,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }
}

/// Feeds `std::hash::Hash` output into SHA-256, to key entries by a digest of the class.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    /// Unused: the key is the whole digest (see [`key_of`]).
    fn finish(&self) -> u64 {
        0
    }
}

fn key_of<C: RequestClassifier>(classifier: &C, ctx: &AuthContext<'_>) -> Key {
    let mut hasher = Sha256Hasher(Sha256::new());
    hasher.write(ctx.principal().fingerprint_sha256());
    ctx.principal().trust_bundle().hash(&mut hasher);
    classifier.hash_class(ctx, &mut hasher);
    hasher.0.finalize().into()
}

/// Wraps an authorizer and remembers its decisions per certificate and request class, never
/// past the certificate's `notAfter` or a TTL, in memory bounded in bytes.
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
///     DecisionCache::new(lookup).ttl(Duration::from_secs(30)).max_bytes(8 << 20),
/// );
/// # let _ = layer;
/// ```
///
/// The cache key is a SHA-256 digest of the certificate's fingerprint, the
/// [trust bundle](crate::Principal::trust_bundle) that verified it and a *request class*, by
/// default the method and path: a key is 32 bytes however long the path, and what a client
/// sends never sits in the cache. The class must capture everything the wrapped authorizer's
/// decision depends on besides the certificate (roles come from the certificate, so they are
/// covered); choose a coarser one with [`DecisionCache::classify_by`].
///
/// Memory is bounded in bytes ([`max_bytes`](Self::max_bytes), default [`DEFAULT_MAX_BYTES`]):
/// each decision counts [`ENTRY_BYTES`] plus the text of a reason that is not a static string.
/// When full, a new decision evicts old ones in O(1) (quick_cache's CLOCK-Pro, which also
/// keeps frequently used decisions over one-off ones); lookups lock one shard of the cache
/// for reading, never the whole cache.
pub struct DecisionCache<A, C: RequestClassifier = MethodAndPath> {
    inner: A,
    classifier: C,
    ttl: Duration,
    shared: Arc<Shared>,
    max_bytes: usize,
}

/// Clones share the cached decisions and the counters.
impl<A: Clone, C: RequestClassifier + Clone> Clone for DecisionCache<A, C> {
    fn clone(&self) -> Self {
        DecisionCache {
            inner: self.inner.clone(),
            classifier: self.classifier.clone(),
            ttl: self.ttl,
            shared: self.shared.clone(),
            max_bytes: self.max_bytes,
        }
    }
}

impl<A: Authorizer> DecisionCache<A> {
    /// Caches `inner`'s decisions for [`DEFAULT_TTL`], in at most [`DEFAULT_MAX_BYTES`], keyed
    /// by certificate and [`MethodAndPath`].
    pub fn new(inner: A) -> Self {
        DecisionCache {
            inner,
            classifier: MethodAndPath,
            ttl: DEFAULT_TTL,
            shared: Shared::new(DEFAULT_MAX_BYTES),
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

impl<A, C: RequestClassifier> DecisionCache<A, C> {
    /// Keep decisions at most `ttl` (and never past the certificate's `notAfter`).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Hold at most `max_bytes` of decisions (see [`ENTRY_BYTES`]; below one entry disables
    /// caching). Starts empty.
    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self.shared = Shared::new(max_bytes);
        self
    }

    /// Keep at most about `capacity` decisions: [`max_bytes`](Self::max_bytes) of `capacity`
    /// entries whose reasons are static strings (0 disables caching). Starts empty.
    pub fn capacity(self, capacity: usize) -> Self {
        self.max_bytes(capacity.saturating_mul(ENTRY_BYTES))
    }

    /// Key decisions by `classifier`'s class instead of method and path. Starts empty.
    pub fn classify_by<C2: RequestClassifier>(self, classifier: C2) -> DecisionCache<A, C2> {
        DecisionCache {
            inner: self.inner,
            classifier,
            ttl: self.ttl,
            shared: Shared::new(self.max_bytes),
            max_bytes: self.max_bytes,
        }
    }

    /// Hits, misses, and the decisions held with their weight.
    pub fn stats(&self) -> CacheStats {
        let entries = self.shared.entries.as_ref();
        CacheStats {
            hits: self.shared.hits.load(Ordering::Relaxed),
            misses: self.shared.misses.load(Ordering::Relaxed),
            entries: entries.map_or(0, |e| e.len()),
            bytes: entries.map_or(0, |e| e.weight()),
        }
    }

    /// The wrapped authorizer.
    pub fn get_ref(&self) -> &A {
        &self.inner
    }
}

/// Counters of a [`DecisionCache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Decisions answered from the cache.
    pub hits: u64,
    /// Decisions asked of the wrapped authorizer.
    pub misses: u64,
    /// Decisions held now (expired ones included until evicted or looked up).
    pub entries: usize,
    /// Their weight against [`DecisionCache::max_bytes`].
    pub bytes: u64,
}

impl<A, C> Authorizer for DecisionCache<A, C>
where
    A: Authorizer,
    C: RequestClassifier,
{
    type Future = CachedDecision<A::Future>;

    fn authorize(&self, ctx: &AuthContext<'_>) -> Verdict<Self::Future> {
        let Some(entries) = &self.shared.entries else {
            self.shared.misses.fetch_add(1, Ordering::Relaxed);
            return match self.inner.authorize(ctx) {
                Verdict::Now(decision) => Verdict::Now(decision),
                Verdict::Later(inner) => Verdict::Later(CachedDecision {
                    inner,
                    insert: None,
                }),
            };
        };
        let key = key_of(&self.classifier, ctx);
        let now = Instant::now();
        if let Some((decision, expires)) = entries.get(&key) {
            if expires > now {
                self.shared.hits.fetch_add(1, Ordering::Relaxed);
                return Verdict::Now(decision);
            }
            // Expired: drop it, unless someone has just put a fresh one in its place.
            entries.remove_if(&key, |(_, expires)| *expires <= now);
        }
        self.shared.misses.fetch_add(1, Ordering::Relaxed);
        // Never past notAfter: an expired certificate's decision must not outlive it, even if
        // the connection does.
        let expires = ctx
            .principal()
            .not_after()
            .duration_since(SystemTime::now())
            .ok()
            .map(|left| left.min(self.ttl))
            .and_then(|keep| now.checked_add(keep));
        let insert = expires.map(|expires| Insert {
            shared: self.shared.clone(),
            key,
            expires,
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

struct Insert {
    shared: Arc<Shared>,
    key: Key,
    expires: Instant,
}

impl Insert {
    fn store(self, decision: &Decision) {
        if let Some(entries) = &self.shared.entries {
            entries.insert(self.key, (decision.clone(), self.expires));
        }
    }
}

pin_project! {
    /// The future of a [`DecisionCache`] decision the wrapped authorizer makes asynchronously.
    pub struct CachedDecision<F> {
        #[pin]
        inner: F,
        insert: Option<Insert>,
    }
}

impl<F> Future for CachedDecision<F>
where
    F: Future<Output = Decision>,
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
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.entries), (2, 2, 2));
        assert_eq!(
            stats.bytes,
            2 * ENTRY_BYTES as u64,
            "static reasons weigh nothing more"
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

    /// One verified client sending ever new 60 KiB paths: the cache stays within its byte
    /// budget, holds no path, and the client's hot entry survives the flood.
    #[tokio::test]
    async fn unique_long_paths_stay_within_the_byte_budget() {
        let (store, calls) = counting_store();
        let budget = 100 * ENTRY_BYTES;
        let cache = DecisionCache::new(store).max_bytes(budget);
        let p = shared_principal();
        for _ in 0..3 {
            decide(&cache, p, "/ok").await; // hot
        }
        let long = "a".repeat(60 * 1024); // close to what `http::Uri` takes
        for i in 0..500 {
            let uri = http::Uri::try_from(format!("/{i}/{long}")).unwrap();
            let req = crate::test_util::TestRequest::new(p.clone(), Method::GET, uri);
            let decision = cache.authorize(&req.context()).into_future().await;
            assert!(!decision.is_allowed());
        }
        let stats = cache.stats();
        assert!(stats.bytes <= budget as u64, "{stats:?}");
        assert!(stats.entries <= 100, "{stats:?}");
        let before = calls.load(Ordering::SeqCst);
        decide(&cache, p, "/ok").await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            before,
            "the hot decision was kept"
        );
    }

    #[tokio::test]
    async fn owned_reasons_count_their_bytes() {
        let long_reason = crate::authorize_fn(|ctx: &AuthContext<'_>| {
            Decision::deny(format!(
                "{} is not allowed {}",
                ctx.path(),
                "x".repeat(1000)
            ))
        });
        let cache = DecisionCache::new(long_reason).max_bytes(10 * (ENTRY_BYTES + 1024));
        let p = shared_principal();
        for path in ["/a", "/b", "/c"] {
            decide(&cache, p, path).await;
        }
        let stats = cache.stats();
        assert_eq!(stats.entries, 3);
        assert!(stats.bytes >= 3 * (ENTRY_BYTES as u64 + 1000), "{stats:?}");
    }

    #[test]
    fn keys_are_digests_of_certificate_and_class() {
        let p = shared_principal();
        let other = principal(CertSpec::default());
        let key = |p: &crate::Principal, method: Method, path: &'static str| {
            key_of(&MethodAndPath, &request(p, method, path).context())
        };
        assert_eq!(key(p, Method::GET, "/a"), key(p, Method::GET, "/a"));
        assert_ne!(key(p, Method::GET, "/a"), key(p, Method::POST, "/a"));
        assert_ne!(key(p, Method::GET, "/a"), key(p, Method::GET, "/b"));
        assert_ne!(key(p, Method::GET, "/a"), key(&other, Method::GET, "/a"));
        // The shortcut hashes exactly what the class would.
        let ctx_req = request(p, Method::GET, "/a");
        let ctx = ctx_req.context();
        let by_class = |ctx: &AuthContext<'_>| MethodAndPath.classify(ctx);
        assert_eq!(key_of(&MethodAndPath, &ctx), key_of(&by_class, &ctx));
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
