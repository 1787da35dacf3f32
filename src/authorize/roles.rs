//! Ready [`RoleMapper`]s for common certificate conventions, run once per connection.
//!
//! | mapper | certificate | roles |
//! |---|---|---|
//! | [`KubernetesRoles`] | `CN=alice, O=dev, O=ops` | `user:alice`, `group:dev`, `group:ops` |
//! | [`OrganizationalUnitRoles`] | `OU=admins` | `admins` |
//! | [`SpiffeServiceAccountRoles`] | `spiffe://td/ns/prod/sa/api` | `namespace:prod`, `serviceaccount:prod:api` |
//!
//! A pair of mappers is a mapper giving the roles of both.
//!
//! ```
//! use tower_mtls::MtlsAcceptor;
//! use tower_mtls::authorize::{Matcher, OrganizationalUnitRoles, Rule, SpiffeServiceAccountRoles};
//!
//! # fn acceptor(tls: tower_mtls::MtlsConfig) -> Result<(), tower_mtls::authorize::MatcherError> {
//! let acceptor = MtlsAcceptor::new(tls).role_mapper((
//!     OrganizationalUnitRoles,
//!     SpiffeServiceAccountRoles::in_trust_domain("example.org")?,
//! ));
//! let rule = Rule::allow("prod-api").principal(Matcher::role("serviceaccount:prod:api"));
//! # let _ = (acceptor, rule); Ok(()) }
//! ```

use crate::principal::Principal;
use crate::roles::{RoleMapper, Roles};
use crate::spiffe::validate_trust_domain;

use super::matchers::MatcherError;

/// Kubernetes client-certificate convention: the CN is the user, each O a group. Roles are
/// `user:<CN>` and `group:<O>`, prefixed so that a group can never pose as a user.
#[derive(Clone, Copy, Debug, Default)]
pub struct KubernetesRoles;

impl RoleMapper for KubernetesRoles {
    fn roles(&self, principal: &Principal) -> Roles {
        Roles::new(
            principal
                .common_names()
                .take(1)
                .map(|cn| format!("user:{cn}"))
                .chain(principal.organizations().map(|o| format!("group:{o}"))),
        )
    }
}

/// Each subject OU is a role, verbatim.
#[derive(Clone, Copy, Debug, Default)]
pub struct OrganizationalUnitRoles;

impl RoleMapper for OrganizationalUnitRoles {
    fn roles(&self, principal: &Principal) -> Roles {
        Roles::new(principal.organizational_units())
    }
}

/// The SPIFFE path convention of Istio and SPIRE on Kubernetes, `/ns/<ns>/sa/<sa>`: roles
/// `namespace:<ns>` and `serviceaccount:<ns>:<sa>`. Any other path gives no roles.
#[derive(Clone, Debug, Default)]
pub struct SpiffeServiceAccountRoles {
    trust_domain: Option<Box<str>>,
}

impl SpiffeServiceAccountRoles {
    /// For SPIFFE IDs of any trust domain.
    pub fn any_trust_domain() -> Self {
        SpiffeServiceAccountRoles { trust_domain: None }
    }

    /// Only for SPIFFE IDs of `trust_domain`; others get no roles.
    pub fn in_trust_domain(trust_domain: &str) -> Result<Self, MatcherError> {
        validate_trust_domain(trust_domain).map_err(|error| MatcherError::TrustDomain {
            value: trust_domain.to_owned(),
            error,
        })?;
        Ok(SpiffeServiceAccountRoles {
            trust_domain: Some(trust_domain.into()),
        })
    }
}

impl RoleMapper for SpiffeServiceAccountRoles {
    fn roles(&self, principal: &Principal) -> Roles {
        let Some(id) = principal.spiffe_id() else {
            return Roles::none();
        };
        if self
            .trust_domain
            .as_deref()
            .is_some_and(|td| !id.is_member_of(td))
        {
            return Roles::none();
        }
        let mut segments = id.segments();
        match (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Roles::new([
                format!("namespace:{ns}"),
                format!("serviceaccount:{ns}:{sa}"),
            ]),
            _ => Roles::none(),
        }
    }
}

impl<A: RoleMapper, B: RoleMapper> RoleMapper for (A, B) {
    fn roles(&self, principal: &Principal) -> Roles {
        let (a, b) = (self.0.roles(principal), self.1.roles(principal));
        Roles::new(a.iter().chain(b.iter()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authorize::testing::{CertSpec, principal};

    fn names(roles: Roles) -> Vec<String> {
        roles.iter().map(str::to_owned).collect()
    }

    #[test]
    fn kubernetes() {
        let p = principal(CertSpec {
            cn: Some("alice"),
            o: Some("system:masters"),
            ..CertSpec::default()
        });
        assert_eq!(
            names(KubernetesRoles.roles(&p)),
            ["user:alice", "group:system:masters"]
        );
    }

    #[test]
    fn organizational_units() {
        let p = principal(CertSpec {
            ous: vec!["admins", "ops"],
            ..CertSpec::default()
        });
        assert_eq!(names(OrganizationalUnitRoles.roles(&p)), ["admins", "ops"]);
    }

    #[test]
    fn spiffe_service_accounts() {
        let sa = |id: &'static str| {
            principal(CertSpec {
                uris: vec![id],
                ..CertSpec::default()
            })
        };
        let any = SpiffeServiceAccountRoles::any_trust_domain();
        let ours = SpiffeServiceAccountRoles::in_trust_domain("example.org").unwrap();
        let api = sa("spiffe://example.org/ns/prod/sa/api");
        assert_eq!(
            names(any.roles(&api)),
            ["namespace:prod", "serviceaccount:prod:api"]
        );
        assert_eq!(names(ours.roles(&api)), names(any.roles(&api)));
        let foreign = sa("spiffe://evil.org/ns/prod/sa/api");
        assert!(ours.roles(&foreign).is_empty());
        assert!(!any.roles(&foreign).is_empty());
        for other in [
            "spiffe://example.org/ns/prod/sa/api/x",
            "spiffe://example.org/ns/prod",
            "spiffe://example.org/sa/api/ns/prod",
        ] {
            assert!(any.roles(&sa(other)).is_empty(), "{other}");
        }
        assert!(SpiffeServiceAccountRoles::in_trust_domain("Example.org").is_err());
    }

    #[test]
    fn pairs_union_their_roles() {
        let p = principal(CertSpec {
            cn: Some("alice"),
            ous: vec!["admins"],
            uris: vec!["spiffe://example.org/ns/prod/sa/api"],
            ..CertSpec::default()
        });
        let both = (
            OrganizationalUnitRoles,
            SpiffeServiceAccountRoles::any_trust_domain(),
        );
        assert_eq!(
            names(both.roles(&p)),
            ["admins", "namespace:prod", "serviceaccount:prod:api"]
        );
    }
}
