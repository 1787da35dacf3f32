//! [`ReloadablePolicy`]: a [`RuleSet`] that can be replaced at runtime; a bad policy is refused
//! and the running one kept.
//!
//! ```no_run
//! use tower_mtls::MtlsAuthLayer;
//! use tower_mtls::authorize::ReloadablePolicy;
//!
//! let policy = ReloadablePolicy::from_toml_file("policy.toml")?;
//! let layer = MtlsAuthLayer::new(policy.clone());
//! // later, e.g. on SIGHUP: an invalid file is logged and refused, the old rules stay.
//! if let Err(e) = policy.reload_file("policy.toml") {
//!     eprintln!("{e}");
//! }
//! # let _ = layer;
//! # Ok::<(), tower_mtls::authorize::PolicyError>(())
//! ```

use std::future::Ready;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::policy::PolicyError;
use super::rules::RuleSet;
use super::{AuthContext, Authorizer, Decision, Verdict};

/// A shared, replaceable [`RuleSet`]. Clones share the same rules; per request it costs one
/// lock-free load (`arc-swap`), whatever the number of cores.
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

    /// Starts with the rules of a TOML policy file.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self, PolicyError> {
        RuleSet::from_toml_file(path).map(ReloadablePolicy::new)
    }

    /// The rules in force.
    pub fn current(&self) -> Arc<RuleSet> {
        self.current.load_full()
    }

    /// Puts `rules` in force.
    pub fn replace(&self, rules: RuleSet) {
        self.current.store(Arc::new(rules));
    }

    /// Compiles `toml_text` and puts it in force; on error logs why and keeps the old rules.
    pub fn reload_toml_str(&self, toml_text: &str) -> Result<(), PolicyError> {
        self.install(RuleSet::from_toml_str(toml_text), "<string>")
    }

    /// Reads and compiles a policy file and puts it in force; on error logs why and keeps the
    /// old rules.
    pub fn reload_file(&self, path: impl AsRef<Path>) -> Result<(), PolicyError> {
        let path = path.as_ref();
        self.install(RuleSet::from_toml_file(path), &path.display().to_string())
    }

    fn install(
        &self,
        compiled: Result<RuleSet, PolicyError>,
        source: &str,
    ) -> Result<(), PolicyError> {
        match compiled {
            Ok(rules) => {
                tracing::info!(source, rules = rules.rules().len(), "policy reloaded");
                self.replace(rules);
                Ok(())
            }
            Err(error) => {
                tracing::warn!(source, %error, "policy reload refused; keeping the rules in force");
                Err(error)
            }
        }
    }
}

impl Authorizer for ReloadablePolicy {
    type Future = Ready<Decision>;
    fn authorize(&self, ctx: &AuthContext<'_>) -> Verdict<Self::Future> {
        let rules = self.current.load();
        Verdict::Now(rules.decide(ctx.principal(), ctx.roles(), ctx.method(), ctx.path()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authorize::testing::shared_principal;
    use crate::roles::Roles;
    use http::Method;

    fn allowed(policy: &ReloadablePolicy, path: &str) -> bool {
        policy
            .current()
            .decide(shared_principal(), &Roles::none(), &Method::GET, path)
            .is_allowed()
    }

    #[test]
    fn bad_reload_keeps_the_old_rules() {
        let policy = ReloadablePolicy::new(
            RuleSet::from_toml_str("[[rule]]\nname = \"a\"\naction = \"allow\"\npath = \"/a\"\n")
                .unwrap(),
        );
        let shared = policy.clone();
        assert!(allowed(&shared, "/a"));
        let err = policy
            .reload_toml_str("[[rule]]\nname = \"b\"\naction = \"alow\"\npath = \"/b\"\n")
            .unwrap_err();
        assert_eq!(err.problems().len(), 1);
        assert!(allowed(&shared, "/a") && !allowed(&shared, "/b"));
        assert!(policy.reload_file("/nonexistent/policy.toml").is_err());
        assert!(allowed(&shared, "/a"));
        policy
            .reload_toml_str("[[rule]]\nname = \"b\"\naction = \"allow\"\npath = \"/b\"\n")
            .unwrap();
        assert!(!allowed(&shared, "/a") && allowed(&shared, "/b"));
    }
}
