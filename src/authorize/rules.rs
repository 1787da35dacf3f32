//! [`Rule`] and [`RuleSet`]: explicit DENY rules first, then ALLOW rules, deny when nothing
//! matches.

use std::fmt;
use std::future::Ready;
use std::sync::Arc;

use http::Method;

use crate::authorize::authorizer::{AuthContext, Authorizer, Decision, Verdict};
use crate::authorize::error::MatcherError;
use crate::authorize::matcher::{MatchExplanation, Matcher};
use crate::authorize::reason::Reason;
use crate::authorize::request::{PathPattern, RequestMatcher};
use crate::identity::principal::Principal;
use crate::identity::roles::Roles;
use crate::metrics;

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Let the request through (unless a DENY rule matches too).
    Allow,
    /// Refuse the request, whatever ALLOW rules say.
    Deny,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        })
    }
}

/// One named rule: an action, a principal matcher and a request matcher.
///
/// A new rule matches every verified client and every request; narrow it with
/// [`principal`](Rule::principal), [`method`](Rule::method), [`path`](Rule::path).
#[derive(Clone, Debug)]
pub struct Rule {
    name: Arc<str>,
    action: Action,
    principal: Matcher,
    request: RequestMatcher,
    reason: Reason,
}

impl Rule {
    /// An ALLOW rule called `name`.
    pub fn allow(name: impl Into<Arc<str>>) -> Self {
        Rule::new(name.into(), Action::Allow)
    }

    /// A DENY rule called `name`.
    pub fn deny(name: impl Into<Arc<str>>) -> Self {
        Rule::new(name.into(), Action::Deny)
    }

    /// A rule with `action` called `name`.
    pub fn new(name: Arc<str>, action: Action) -> Self {
        let verb = match action {
            Action::Allow => "allowed",
            Action::Deny => "denied",
        };
        // The one allocation of the reason, shared by every decision this rule makes.
        let reason = Reason::of_rule(name.clone(), format!("{verb} by rule {name:?}"));
        Rule {
            name,
            action,
            principal: Matcher::any_verified(),
            request: RequestMatcher::any(),
            reason,
        }
    }

    /// Only for principals matching `matcher`.
    pub fn principal(mut self, matcher: Matcher) -> Self {
        self.principal = matcher;
        self
    }

    /// Only for requests matching `request` (replaces methods and paths set so far).
    pub fn request(mut self, request: RequestMatcher) -> Self {
        self.request = request;
        self
    }

    /// Also for `method` (the first call restricts the rule to it; `GET` also covers `HEAD`).
    /// Another spelling of a standard method (`delete`) makes [`RuleSet::new`] fail.
    pub fn method(mut self, method: Method) -> Self {
        self.request = self.request.method(method);
        self
    }

    /// Also for paths matching `pattern` (the first call restricts the rule to it).
    pub fn path(mut self, pattern: PathPattern) -> Self {
        self.request = self.request.path(pattern);
        self
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rule's action.
    pub fn action(&self) -> Action {
        self.action
    }

    /// Whether the rule applies to this principal and request (`path` canonical).
    pub fn matches(
        &self,
        principal: &Principal,
        roles: &Roles,
        method: &Method,
        path: &str,
    ) -> bool {
        self.request.matches(method, path) && self.principal.matches(principal, roles)
    }

    fn decision(&self) -> Decision {
        match self.action {
            Action::Allow => Decision::Allow {
                reason: self.reason.clone(),
            },
            Action::Deny => Decision::Deny {
                reason: self.reason.clone(),
            },
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?}: {} when {}",
            self.action, self.name, self.request, self.principal
        )
    }
}

/// Why [`RuleSet::new`] refused its rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleSetError {
    /// Two rules share a name (decisions would be ambiguous in the logs).
    #[error("two rules are called {name:?}")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// A rule names a method that no request reaching it can have: another spelling of a
    /// standard method (`delete`).
    #[error("rule {rule:?}: {error}")]
    Method {
        /// The rule's name.
        rule: String,
        /// What is wrong with the method.
        error: MatcherError,
    },
}

/// The reason when no rule allows (or the set is empty).
pub const NO_RULE_MATCHED: &str = "no rule allows this request";

/// Rules evaluated DENY first, then ALLOW, denying when none matches.
///
/// Rules match the **canonical** request path ([`AuthContext::path`]): every spelling of a
/// path that [`MtlsAuthLayer`](crate::MtlsAuthLayer) lets through has one canonical form, so a
/// DENY rule on `/admin` cannot be walked past by `/%61dmin` or `//admin` (the layer refuses
/// those with 400 by default, or canonicalizes them to `/admin` under settings that decode).
///
/// A `RuleSet` is an [`Authorizer`]: put it in front of a whole router, or build one per route.
/// Each decision's reason names the rule (computed once, when the rule is built, so a decision
/// allocates nothing).
///
/// ```
/// use http::Method;
/// use tower_mtls::authorize::{Matcher, PathPattern, Rule, RuleSet};
/// use tower_mtls::MtlsAuthLayer;
///
/// let rules = RuleSet::new([
///     Rule::allow("health")
///         .method(Method::GET)
///         .path(PathPattern::exact("/healthz")?),
///     Rule::allow("admin")
///         .path(PathPattern::prefix("/admin")?)
///         .principal(Matcher::organizational_unit("admins")),
///     Rule::deny("no-contractors-in-admin")
///         .path(PathPattern::prefix("/admin")?)
///         .principal(Matcher::organizational_unit("contractors")),
/// ])?;
/// let layer = MtlsAuthLayer::new(rules);
/// # let _ = layer;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    rules: Box<[Rule]>,
    // Indices into `rules`: every DENY rule, then every ALLOW rule, each in declared order.
    order: Box<[usize]>,
}

impl RuleSet {
    /// A rule set of `rules`; names must be unique, and methods standard spellings (`DELETE`,
    /// not `delete`) or extension methods.
    pub fn new(rules: impl IntoIterator<Item = Rule>) -> Result<Self, RuleSetError> {
        let rules: Box<[Rule]> = rules.into_iter().collect();
        for (i, rule) in rules.iter().enumerate() {
            if rules[..i].iter().any(|r| r.name == rule.name) {
                return Err(RuleSetError::DuplicateName {
                    name: rule.name.to_string(),
                });
            }
            rule.request.check().map_err(|error| RuleSetError::Method {
                rule: rule.name.to_string(),
                error,
            })?;
        }
        let by_action = |action| {
            rules
                .iter()
                .enumerate()
                .filter(move |(_, r)| r.action == action)
                .map(|(i, _)| i)
        };
        let order = by_action(Action::Deny)
            .chain(by_action(Action::Allow))
            .collect();
        Ok(RuleSet { rules, order })
    }

    /// The rules, in declared order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The decision for a principal (with its connection's roles), a method and a canonical
    /// path. Allocates nothing.
    ///
    /// `path` must be canonical, as [`AuthContext::path`] is: rules compare it byte for byte.
    /// To decide for a path from elsewhere, canonicalize it first
    /// ([`canonicalize`](crate::authorize::canonical::canonicalize)) and treat a refusal as
    /// a refusal.
    pub fn decide(
        &self,
        principal: &Principal,
        roles: &Roles,
        method: &Method,
        path: &str,
    ) -> Decision {
        let decision = self
            .order
            .iter()
            .map(|&i| &self.rules[i])
            .find(|rule| rule.matches(principal, roles, method, path))
            .map_or(Decision::deny(NO_RULE_MATCHED), Rule::decision);
        metrics::authz_decision(decision.rule_name(), decision.is_allowed());
        decision
    }

    /// Like [`decide`](RuleSet::decide), with every rule's verdict in evaluation order: for
    /// logs, tests and "why was I denied?" tooling. Allocates.
    pub fn explain(
        &self,
        principal: &Principal,
        roles: &Roles,
        method: &Method,
        path: &str,
    ) -> Explanation {
        let decision = self.decide(principal, roles, method, path);
        let mut steps = Vec::new();
        let mut deciding_rule = None;
        for &i in self.order.iter() {
            let rule = &self.rules[i];
            let request = rule.request.matches(method, path);
            let principal = rule.principal.explain(principal, roles);
            let matched = request && principal.matched;
            steps.push(Step {
                rule: rule.name.clone(),
                action: rule.action,
                request_matched: request,
                principal,
            });
            if matched {
                deciding_rule = Some(rule.name.clone());
                break;
            }
        }
        Explanation {
            decision,
            deciding_rule,
            steps,
        }
    }
}

impl Authorizer for RuleSet {
    type Future = Ready<Decision>;
    fn authorize(&self, ctx: &AuthContext<'_>) -> Verdict<Self::Future> {
        Verdict::Now(self.decide(ctx.principal(), ctx.roles(), ctx.method(), ctx.path()))
    }
}

/// What [`RuleSet::explain`] found.
#[derive(Clone, Debug)]
pub struct Explanation {
    /// The decision ([`RuleSet::decide`] returns the same).
    pub decision: Decision,
    /// The rule that decided; `None` when nothing matched.
    pub deciding_rule: Option<Arc<str>>,
    /// The rules looked at, in evaluation order, up to the deciding one.
    pub steps: Vec<Step>,
}

/// One rule's verdict in an [`Explanation`].
#[derive(Clone, Debug)]
pub struct Step {
    /// The rule's name.
    pub rule: Arc<str>,
    /// The rule's action.
    pub action: Action,
    /// Whether the method and path matched.
    pub request_matched: bool,
    /// Whether the principal matched, and which part decided.
    pub principal: MatchExplanation,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.decision.is_allowed() {
            "ALLOW"
        } else {
            "DENY"
        };
        writeln!(f, "{verdict}: {}", self.decision.reason())?;
        for step in &self.steps {
            let request = if step.request_matched {
                "request matched"
            } else {
                "request did not match"
            };
            writeln!(
                f,
                "  {} {:?}: {request}; principal {}",
                step.action, step.rule, step.principal
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{CertSpec, principal, shared_principal};
    use proptest::prelude::*;

    fn admin_rules() -> RuleSet {
        RuleSet::new([
            Rule::allow("public")
                .method(Method::GET)
                .path(PathPattern::exact("/healthz").unwrap())
                .path(PathPattern::exact("/whoami").unwrap()),
            Rule::allow("admin")
                .method(Method::GET)
                .path(PathPattern::exact("/admin").unwrap())
                .principal(Matcher::organizational_unit("admins")),
            Rule::deny("suspended").principal(Matcher::common_name("mallory")),
        ])
        .unwrap()
    }

    fn person(cn: &'static str, ou: &'static str) -> Principal {
        principal(CertSpec {
            cn: Some(cn),
            ous: vec![ou],
            ..CertSpec::default()
        })
    }

    #[test]
    fn deny_first_then_allow_then_default_deny() {
        let rules = admin_rules();
        let none = Roles::none();
        let alice = person("alice", "admins");
        let bob = person("bob", "users");
        let mallory = person("mallory", "admins");
        let d = rules.decide(&alice, &none, &Method::GET, "/admin");
        assert_eq!(d, Decision::allow("allowed by rule \"admin\""));
        let d = rules.decide(&bob, &none, &Method::GET, "/admin");
        assert_eq!(d, Decision::deny(NO_RULE_MATCHED));
        assert!(
            rules
                .decide(&bob, &none, &Method::GET, "/healthz")
                .is_allowed()
        );
        assert!(
            !rules
                .decide(&bob, &none, &Method::POST, "/healthz")
                .is_allowed()
        );
        let d = rules.decide(&mallory, &none, &Method::GET, "/healthz");
        assert_eq!(d, Decision::deny("denied by rule \"suspended\""));
        assert!(
            !RuleSet::default()
                .decide(&alice, &none, &Method::GET, "/")
                .is_allowed()
        );
    }

    #[test]
    fn reasons_are_shared_not_rebuilt() {
        let rules = admin_rules();
        let alice = person("alice", "admins");
        let a = rules.decide(&alice, &Roles::none(), &Method::GET, "/admin");
        let b = rules.decide(&alice, &Roles::none(), &Method::GET, "/admin");
        assert!(std::ptr::eq(a.reason().as_ptr(), b.reason().as_ptr()));
    }

    #[test]
    fn duplicate_names_are_refused() {
        let err = RuleSet::new([Rule::allow("a"), Rule::deny("a")]).unwrap_err();
        assert_eq!(err, RuleSetError::DuplicateName { name: "a".into() });
    }

    #[test]
    fn nonstandard_method_spellings_are_refused() {
        for spelling in ["delete", "DeLeTe", "get", "Head"] {
            let method = Method::from_bytes(spelling.as_bytes()).unwrap();
            let err = RuleSet::new([Rule::deny("no-deletes").method(method)]).unwrap_err();
            assert!(
                matches!(
                    &err,
                    RuleSetError::Method { rule, error: MatcherError::NonStandardMethod { .. } }
                        if rule == "no-deletes"
                ),
                "{spelling}: {err:?}"
            );
        }
        // Extension methods have no standard spelling to collide with.
        for extension in ["PROPFIND", "purge"] {
            let method = Method::from_bytes(extension.as_bytes()).unwrap();
            assert!(RuleSet::new([Rule::allow("ext").method(method)]).is_ok());
        }
    }

    #[test]
    fn a_rule_on_get_covers_head() {
        let rules = RuleSet::new([
            Rule::deny("no-reads-of-secrets")
                .method(Method::GET)
                .path(PathPattern::prefix("/secrets").unwrap())
                .principal(Matcher::any_verified()),
            Rule::allow("rest"),
        ])
        .unwrap();
        let p = person("bob", "users");
        let none = Roles::none();
        for method in [Method::GET, Method::HEAD] {
            assert!(
                !rules.decide(&p, &none, &method, "/secrets/x").is_allowed(),
                "{method}"
            );
        }
        assert!(
            rules
                .decide(&p, &none, &Method::POST, "/secrets/x")
                .is_allowed()
        );
        // HEAD does not cover GET.
        let head_only = RuleSet::new([Rule::allow("head").method(Method::HEAD)]).unwrap();
        assert!(!head_only.decide(&p, &none, &Method::GET, "/").is_allowed());
    }

    #[test]
    fn explain_walks_the_rules() {
        let rules = admin_rules();
        let bob = person("bob", "users");
        let e = rules.explain(&bob, &Roles::none(), &Method::GET, "/admin");
        assert!(!e.decision.is_allowed());
        assert_eq!(e.deciding_rule, None);
        assert_eq!(
            e.to_string(),
            "DENY: no rule allows this request\n  \
             deny \"suspended\": request matched; principal did not match: cn = \"mallory\"\n  \
             allow \"public\": request did not match; principal matched: any verified client\n  \
             allow \"admin\": request matched; principal did not match: ou = \"admins\"\n"
        );
        let alice = person("alice", "admins");
        let e = rules.explain(&alice, &Roles::none(), &Method::GET, "/admin");
        assert_eq!(e.deciding_rule.as_deref(), Some("admin"));
        assert_eq!(e.steps.len(), 3);
    }

    // DENY wins: for random rule sets over roles and methods, the result is ALLOW exactly when
    // no DENY rule matches and some ALLOW rule does, whatever the declared order.
    proptest! {
        #[test]
        fn deny_wins(
            specs in prop::collection::vec((any::<bool>(), "[a-c]", prop::option::of(0..2usize)), 0..8),
            roles in prop::collection::vec("[a-c]", 0..3),
            method_index in 0..2usize,
        ) {
            let methods = [Method::GET, Method::POST];
            let p = shared_principal();
            let roles = Roles::new(roles);
            let rules: Vec<Rule> = specs.iter().enumerate().map(|(i, (allow, role, method))| {
                let rule = if *allow { Rule::allow(format!("r{i}")) } else { Rule::deny(format!("r{i}")) };
                let rule = rule.principal(Matcher::role(role));
                match method {
                    Some(m) => rule.method(methods[*m].clone()),
                    None => rule,
                }
            }).collect();
            let method = &methods[method_index];
            let applies = |(_, role, m): &(bool, String, Option<usize>)| {
                roles.contains(role) && m.is_none_or(|m| m == method_index)
            };
            let any_deny = specs.iter().any(|s| !s.0 && applies(s));
            let any_allow = specs.iter().any(|s| s.0 && applies(s));
            let set = RuleSet::new(rules).unwrap();
            let decision = set.decide(p, &roles, method, "/x");
            prop_assert_eq!(decision.is_allowed(), !any_deny && any_allow);
            if any_deny {
                prop_assert!(decision.reason().starts_with("denied by rule"));
            }
        }
    }
}
