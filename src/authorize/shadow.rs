//! [`Shadow`]: run a candidate policy next to the enforcing one, log and count what it would
//! have decided, and never enforce it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::{Method, Uri};
use pin_project_lite::pin_project;

use crate::authorize::authorizer::{AuthContext, Authorizer, Decision, Verdict, VerdictFuture};
use crate::identity::connection::ConnectionInfo;
use crate::metrics;

/// Enforces `E`'s decisions and only logs and counts `S`'s: run a candidate policy next to
/// the enforcing one, and never enforce it.
///
/// ```
/// use tower_mtls::authorize::{RuleSet, Shadow};
/// use tower_mtls::{AllowAnyVerified, MtlsAuthLayer};
///
/// let candidate = RuleSet::from_toml_str(r#"
///     [[rule]]
///     name = "read-only"
///     action = "allow"
///     methods = ["GET", "HEAD"]
/// "#)?;
/// let shadow = Shadow::new(AllowAnyVerified, candidate).name("read-only-v1");
/// let counts = shadow.counters();
/// let layer = MtlsAuthLayer::new(shadow);
/// // ... later: how often would the candidate have said something else?
/// println!("{} disagreements", counts.snapshot().disagreed);
/// # let _ = layer;
/// # Ok::<(), tower_mtls::policy::PolicyError>(())
/// ```
///
/// Each shadow decision emits one `tracing` event (target `tower_mtls::shadow`): `info` when
/// it disagrees with the enforced one, `debug` when it agrees. Both authorizers are awaited
/// before the request goes on, so a shadow should be as fast as the enforcing one.
#[derive(Debug)]
pub struct Shadow<E, S> {
    enforcing: E,
    shadow: S,
    name: Arc<str>,
    counters: Arc<ShadowCounters>,
}

impl<E: Authorizer, S: Authorizer> Shadow<E, S> {
    /// Enforces `enforcing`, shadows `shadow`.
    pub fn new(enforcing: E, shadow: S) -> Self {
        Shadow {
            enforcing,
            shadow,
            name: Arc::from("shadow"),
            counters: Arc::default(),
        }
    }

    /// The shadow policy's name in log events (default `shadow`).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The live counters, to read now or later (an `Arc`; the layer keeps counting).
    pub fn counters(&self) -> Arc<ShadowCounters> {
        self.counters.clone()
    }
}

/// Running counts of shadow decisions.
#[derive(Debug, Default)]
pub struct ShadowCounters {
    allowed: AtomicU64,
    denied: AtomicU64,
    agreed: AtomicU64,
    disagreed: AtomicU64,
}

impl ShadowCounters {
    /// The counts at this moment.
    pub fn snapshot(&self) -> ShadowCounts {
        ShadowCounts {
            allowed: self.allowed.load(Ordering::Relaxed),
            denied: self.denied.load(Ordering::Relaxed),
            agreed: self.agreed.load(Ordering::Relaxed),
            disagreed: self.disagreed.load(Ordering::Relaxed),
        }
    }

    fn record(&self, shadow_allowed: bool, agreed: bool) {
        let verdict = if shadow_allowed {
            &self.allowed
        } else {
            &self.denied
        };
        verdict.fetch_add(1, Ordering::Relaxed);
        let agreement = if agreed {
            &self.agreed
        } else {
            &self.disagreed
        };
        agreement.fetch_add(1, Ordering::Relaxed);
    }
}

/// A snapshot of [`ShadowCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShadowCounts {
    /// The shadow would have allowed.
    pub allowed: u64,
    /// The shadow would have denied.
    pub denied: u64,
    /// The shadow decided as the enforcing authorizer did.
    pub agreed: u64,
    /// The shadow decided otherwise.
    pub disagreed: u64,
}

impl<E: Authorizer, S: Authorizer> Authorizer for Shadow<E, S> {
    type Future = ShadowDecision<VerdictFuture<E::Future>, VerdictFuture<S::Future>>;

    fn authorize(&self, ctx: &AuthContext<'_>) -> Verdict<Self::Future> {
        let report = Report {
            name: self.name.clone(),
            counters: self.counters.clone(),
            // Arc and Bytes clones: what the log event needs once both have decided.
            connection: ctx.connection().clone(),
            method: ctx.method().clone(),
            uri: ctx.uri().clone(),
        };
        match (self.enforcing.authorize(ctx), self.shadow.authorize(ctx)) {
            (Verdict::Now(enforced), Verdict::Now(shadow)) => {
                report.record(&enforced, &shadow);
                Verdict::Now(enforced)
            }
            (enforcing, shadow) => Verdict::Later(ShadowDecision {
                enforcing: enforcing.into_future(),
                enforced: None,
                shadow: shadow.into_future(),
                shadowed: None,
                report,
            }),
        }
    }
}

struct Report {
    name: Arc<str>,
    counters: Arc<ShadowCounters>,
    connection: ConnectionInfo,
    method: Method,
    uri: Uri,
}

impl Report {
    fn record(&self, enforced: &Decision, shadow: &Decision) {
        let agreed = enforced.is_allowed() == shadow.is_allowed();
        self.counters.record(shadow.is_allowed(), agreed);
        if !agreed {
            metrics::shadow_disagreement(shadow.rule_name().map(|name| &**name));
        }
        let principal = self
            .connection
            .principal_unchecked()
            .map(ToString::to_string)
            .unwrap_or_default();
        let verdict = |d: &Decision| if d.is_allowed() { "allow" } else { "deny" };
        macro_rules! event {
            ($level:ident) => {
                tracing::$level!(
                    target: "tower_mtls::shadow",
                    shadow = %self.name,
                    agreed,
                    shadow_decision = verdict(shadow),
                    shadow_reason = %shadow.reason(),
                    enforced_decision = verdict(enforced),
                    enforced_reason = %enforced.reason(),
                    peer = %self.connection.peer_addr(),
                    %principal,
                    method = %self.method,
                    path = self.uri.path(),
                    "shadow policy decision"
                )
            };
        }
        if agreed {
            event!(debug);
        } else {
            event!(info);
        }
    }
}

pin_project! {
    /// The future of a [`Shadow`] decision: the enforcing decision, once both have decided.
    pub struct ShadowDecision<EF, SF> {
        #[pin]
        enforcing: EF,
        enforced: Option<Decision>,
        #[pin]
        shadow: SF,
        shadowed: Option<Decision>,
        report: Report,
    }
}

impl<EF, SF> Future for ShadowDecision<EF, SF>
where
    EF: Future<Output = Decision>,
    SF: Future<Output = Decision>,
{
    type Output = Decision;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Decision> {
        let this = self.project();
        if this.enforced.is_none() {
            if let Poll::Ready(d) = this.enforcing.poll(cx) {
                *this.enforced = Some(d);
            }
        }
        if this.shadowed.is_none() {
            if let Poll::Ready(d) = this.shadow.poll(cx) {
                *this.shadowed = Some(d);
            }
        }
        match (this.enforced.take(), this.shadowed.as_ref()) {
            (Some(enforced), Some(shadow)) => {
                this.report.record(&enforced, shadow);
                Poll::Ready(enforced)
            }
            (enforced, _) => {
                *this.enforced = enforced;
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authorize::authorizer::AllowAnyVerified;
    use crate::authorize::rules::RuleSet;
    use crate::testing::{request, shared_principal};

    #[tokio::test]
    async fn shadow_is_counted_never_enforced() {
        let candidate = RuleSet::from_toml_str(
            "[[rule]]\nname = \"reads\"\naction = \"allow\"\nmethods = \"GET\"\n",
        )
        .unwrap();
        let shadow = Shadow::new(AllowAnyVerified, candidate).name("reads-only");
        let counters = shadow.counters();
        let p = shared_principal();
        for method in [Method::GET, Method::POST, Method::DELETE] {
            let request = request(p, method, "/x");
            let decision = shadow.authorize(&request.context()).await;
            assert!(
                decision.is_allowed(),
                "the shadow's deny must not be enforced"
            );
            assert_eq!(decision.reason(), "any verified client");
        }
        assert_eq!(
            counters.snapshot(),
            ShadowCounts {
                allowed: 1,
                denied: 2,
                agreed: 1,
                disagreed: 2
            }
        );
    }

    #[tokio::test]
    async fn a_slow_shadow_is_awaited_and_a_permissive_one_cannot_open_the_door() {
        let slow_allow = crate::authorize_fn(|_: &AuthContext<'_>| async {
            tokio::task::yield_now().await;
            Decision::allow("shadow allows")
        });
        let deny = crate::authorize_fn(|_: &AuthContext<'_>| Decision::deny("enforced deny"));
        let shadow = Shadow::new(deny, slow_allow);
        let request = request(shared_principal(), Method::GET, "/x");
        let decision = shadow.authorize(&request.context()).await;
        assert_eq!(decision, Decision::deny("enforced deny"));
        assert_eq!(shadow.counters().snapshot().disagreed, 1);
    }
}
