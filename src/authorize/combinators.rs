//! [`any`], [`all`], [`not`], [`Matcher::and`], [`Matcher::or`], and [`Matcher::explain`].
//!
//! `any([])` matches nobody and `all([])` matches everybody, as in logic; a rule set denies
//! when nothing allows, so an empty `any` can only ever take access away.
//!
//! ```
//! use tower_mtls::authorize::{Matcher, all, any, not};
//!
//! let operators = all([
//!     Matcher::spiffe_member_of("example.org")?,
//!     any([Matcher::organizational_unit("ops"), Matcher::role("oncall")]),
//!     not(Matcher::organizational_unit("contractors")),
//! ]);
//! assert_eq!(
//!     operators.to_string(),
//!     r#"all(spiffe_trust_domain = "example.org", any(ou = "ops", role = "oncall"), not(ou = "contractors"))"#
//! );
//! # Ok::<(), tower_mtls::authorize::MatcherError>(())
//! ```

use std::fmt;

use super::matchers::{Matcher, Node};
use crate::principal::Principal;
use crate::roles::Roles;

/// Matches when at least one of `matchers` does; `any([])` matches nobody.
pub fn any(matchers: impl IntoIterator<Item = Matcher>) -> Matcher {
    Matcher(Node::Any(matchers.into_iter().collect()))
}

/// Matches when every one of `matchers` does; `all([])` matches everybody.
pub fn all(matchers: impl IntoIterator<Item = Matcher>) -> Matcher {
    Matcher(Node::All(matchers.into_iter().collect()))
}

/// Matches when `matcher` does not. `not(not(m))` is `m` again.
pub fn not(matcher: Matcher) -> Matcher {
    match matcher.0 {
        Node::Not(inner) => *inner,
        other => Matcher(Node::Not(Box::new(Matcher(other)))),
    }
}

impl std::ops::Not for Matcher {
    type Output = Matcher;
    fn not(self) -> Matcher {
        not(self)
    }
}

impl Matcher {
    /// Both `self` and `other` (flattens chains: `a.and(b).and(c)` is one `all`).
    pub fn and(self, other: Matcher) -> Matcher {
        match self.0 {
            Node::All(items) => all(items.into_vec().into_iter().chain([other])),
            node => all([Matcher(node), other]),
        }
    }

    /// `self` or `other` (flattens chains: `a.or(b).or(c)` is one `any`).
    pub fn or(self, other: Matcher) -> Matcher {
        match self.0 {
            Node::Any(items) => any(items.into_vec().into_iter().chain([other])),
            node => any([Matcher(node), other]),
        }
    }

    /// Whether `principal` matches, and which part of the matcher decided it, for logs and
    /// tests. Allocates; use [`matches`](Matcher::matches) on the request path.
    pub fn explain(&self, principal: &Principal, roles: &Roles) -> MatchExplanation {
        let (matched, deciding) = self.deciding_part(principal, roles);
        MatchExplanation {
            matched,
            because: deciding.to_string(),
        }
    }

    /// The outcome and the smallest part of `self` that settles it: the first matching item
    /// of a successful `any`, the first failing item of a failed `all`.
    fn deciding_part<'m>(&'m self, principal: &Principal, roles: &Roles) -> (bool, Deciding<'m>) {
        match &self.0 {
            Node::Any(items) => {
                for item in items.iter() {
                    let (hit, part) = item.deciding_part(principal, roles);
                    if hit {
                        return (true, part);
                    }
                }
                (false, Deciding::Whole(self))
            }
            Node::All(items) => {
                for item in items.iter() {
                    let (hit, part) = item.deciding_part(principal, roles);
                    if !hit {
                        return (false, part);
                    }
                }
                (true, Deciding::Whole(self))
            }
            Node::Not(inner) => {
                let (hit, part) = inner.deciding_part(principal, roles);
                (!hit, Deciding::Negated(Box::new(part)))
            }
            _ => (self.matches(principal, roles), Deciding::Whole(self)),
        }
    }
}

enum Deciding<'m> {
    Whole(&'m Matcher),
    Negated(Box<Deciding<'m>>),
}

impl fmt::Display for Deciding<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Deciding::Whole(m) => write!(f, "{m}"),
            Deciding::Negated(inner) => write!(f, "not({inner})"),
        }
    }
}

/// The result of [`Matcher::explain`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatchExplanation {
    /// Whether the matcher matched.
    pub matched: bool,
    /// The part of the matcher that decided, in policy-file spelling.
    pub because: String,
}

impl fmt::Display for MatchExplanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.matched {
            "matched"
        } else {
            "did not match"
        };
        write!(f, "{verb}: {}", self.because)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authorize::testing::{CertSpec, principal, shared_principal};
    use proptest::prelude::{
        Just, ProptestConfig, Strategy, prop, prop_assert, prop_assert_eq, prop_oneof, proptest,
    };

    fn role_matcher() -> impl Strategy<Value = Matcher> {
        let leaf = prop_oneof![
            "[a-c]".prop_map(|r| Matcher::role(&r)),
            Just(Matcher::any_verified()),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(any),
                prop::collection::vec(inner.clone(), 0..4).prop_map(all),
                inner.clone().prop_map(not),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| a.and(b)),
                (inner.clone(), inner).prop_map(|(a, b)| a.or(b)),
            ]
        })
    }

    fn roles() -> impl Strategy<Value = Roles> {
        prop::collection::vec("[a-c]", 0..3).prop_map(Roles::new)
    }

    /// The matcher's meaning, written independently of `matches`.
    fn model(m: &Matcher, roles: &Roles) -> bool {
        match &m.0 {
            Node::AnyVerified => true,
            Node::Role(r) => roles.iter().any(|x| x == &**r),
            Node::Any(items) => items.iter().fold(false, |acc, i| acc | model(i, roles)),
            Node::All(items) => items.iter().fold(true, |acc, i| acc & model(i, roles)),
            Node::Not(inner) => !model(inner, roles),
            _ => unreachable!("only role and constant leaves are generated"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn double_negation_is_identity(m in role_matcher(), roles in roles()) {
            let p = shared_principal();
            let twice = not(not(m.clone()));
            prop_assert_eq!(&twice, &m);
            // also through the operator, and semantically when built without the shortcut
            let wrapped = Matcher(Node::Not(Box::new(Matcher(Node::Not(Box::new(m.clone()))))));
            prop_assert_eq!(wrapped.matches(p, &roles), m.matches(p, &roles));
            prop_assert_eq!((!!m.clone()).matches(p, &roles), m.matches(p, &roles));
        }

        #[test]
        fn evaluation_agrees_with_the_model(m in role_matcher(), roles in roles()) {
            let p = shared_principal();
            prop_assert_eq!(m.matches(p, &roles), model(&m, &roles));
            prop_assert_eq!(m.explain(p, &roles).matched, model(&m, &roles));
        }

        #[test]
        fn and_or_agree_with_all_any(a in role_matcher(), b in role_matcher(), roles in roles()) {
            let p = shared_principal();
            prop_assert_eq!(
                a.clone().and(b.clone()).matches(p, &roles),
                a.matches(p, &roles) && b.matches(p, &roles)
            );
            prop_assert_eq!(
                a.clone().or(b.clone()).matches(p, &roles),
                a.matches(p, &roles) || b.matches(p, &roles)
            );
        }

        #[test]
        fn empty_any_denies_and_empty_all_allows(roles in roles()) {
            let p = shared_principal();
            prop_assert!(!any([]).matches(p, &roles));
            prop_assert!(all([]).matches(p, &roles));
        }
    }

    #[test]
    fn explain_names_the_deciding_part() {
        let p = principal(CertSpec {
            ous: vec!["users"],
            ..CertSpec::default()
        });
        let roles = Roles::new(["oncall"]);
        let m = Matcher::organizational_unit("admins").or(Matcher::role("oncall"));
        let e = m.explain(&p, &roles);
        assert!(e.matched);
        assert_eq!(e.to_string(), r#"matched: role = "oncall""#);

        let m = Matcher::organizational_unit("users").and(not(Matcher::role("oncall")));
        let e = m.explain(&p, &roles);
        assert!(!e.matched);
        assert_eq!(e.to_string(), r#"did not match: not(role = "oncall")"#);

        let e = any([]).explain(&p, &roles);
        assert_eq!(e.to_string(), "did not match: any()");
    }
}
