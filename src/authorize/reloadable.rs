//! [`ReloadablePolicy`]: a [`RuleSet`] that can be replaced at runtime.

use std::future::Ready;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::authorize::authorizer::{AuthContext, Authorizer, Decision, Verdict};
use crate::authorize::rules::RuleSet;

/// A shared, replaceable [`RuleSet`]. Clones share the same rules; per request it costs one
/// lock-free load (`arc-swap`), whatever the number of cores.
///
/// ```
/// use tower_mtls::MtlsAuthLayer;
/// use tower_mtls::authorize::{Matcher, ReloadablePolicy, Rule, RuleSet};
///
/// let policy = ReloadablePolicy::new(RuleSet::new([Rule::allow("everyone")])?);
/// let layer = MtlsAuthLayer::new(policy.clone());
/// // Later: every clone, and so the layer, decides with the new rules from now on.
/// policy.replace(RuleSet::new([
///     Rule::allow("admins").principal(Matcher::organizational_unit("admins")),
/// ])?);
/// # let _ = layer;
/// # Ok::<(), tower_mtls::authorize::RuleSetError>(())
/// ```
///
/// With the `policy` feature, the rules can come from a TOML file and be reloaded from it
/// (`from_toml_file`, `reload_file`; see the `policy` module), a bad file being refused and
/// the rules in force kept.
#[derive(Clone, Debug, Default)]
pub struct ReloadablePolicy {
    current: Arc<ArcSwap<RuleSet>>,
}

impl ReloadablePolicy {
    /// Starts with `rules`.
    pub fn new(rules: RuleSet) -> Self {
        ReloadablePolicy {
            current: Arc::new(ArcSwap::from_pointee(rules)),
        }
    }

    /// The rules in force.
    pub fn current(&self) -> Arc<RuleSet> {
        self.current.load_full()
    }

    /// Puts `rules` in force.
    pub fn replace(&self, rules: RuleSet) {
        self.current.store(Arc::new(rules));
    }
}

impl Authorizer for ReloadablePolicy {
    type Future = Ready<Decision>;
    fn authorize(&self, ctx: &AuthContext<'_>) -> Verdict<Self::Future> {
        let rules = self.current.load();
        Verdict::Now(rules.decide(ctx.principal(), ctx.roles(), ctx.method(), ctx.path()))
    }
}
