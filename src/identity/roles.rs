//! Roles: what a principal is, in your application's words, computed once per connection.

use std::fmt;
use std::sync::Arc;

use crate::identity::principal::Principal;
use crate::identity::spiffe_id::{SpiffeIdError, validate_trust_domain};

/// A set of role or group names. Cloning is an `Arc` clone.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Roles(Arc<[String]>);

impl Roles {
    /// Roles from names; duplicates are dropped, order is kept.
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut out: Vec<String> = Vec::new();
        for name in names {
            let name = name.into();
            if !out.contains(&name) {
                out.push(name);
            }
        }
        Roles(out.into())
    }

    /// No roles.
    pub fn none() -> Self {
        Roles::default()
    }

    /// Whether `role` is one of them (exact, case-sensitive).
    pub fn contains(&self, role: &str) -> bool {
        self.0.iter().any(|r| r == role)
    }

    /// The role names.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Debug for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Turns a principal into roles, once per connection. Closures `Fn(&Principal) -> Roles`
/// implement it.
///
/// A [`RoleMapper`] given to [`MtlsAcceptor::role_mapper`](crate::MtlsAcceptor::role_mapper)
/// runs once per connection, right after the principal is parsed; the result is kept in the
/// [`ConnectionInfo`](crate::ConnectionInfo) and costs nothing per request.
///
/// ```
/// use tower_mtls::Principal;
/// use tower_mtls::identity::Roles;
///
/// // OU = role
/// let mapper = |p: &Principal| Roles::new(p.organizational_units());
/// # let _ = mapper;
/// ```
///
/// # Ready mappers
///
/// | mapper | certificate | roles |
/// |---|---|---|
/// | [`KubernetesRoles`] | `CN=alice, O=dev, O=ops` | `user:alice`, `group:dev`, `group:ops` |
/// | [`OrganizationalUnitRoles`] | `OU=admins` | `ou:admins` |
/// | [`SpiffeServiceAccountRoles`] | `spiffe://td/ns/prod/sa/api` | `namespace:prod`, `serviceaccount:prod:api` |
///
/// **Every role of a shipped mapper starts with its namespace** (`user:`, `group:`, `ou:`,
/// `namespace:`, `serviceaccount:`), and no two mappers, and no two fields of one mapper,
/// share a namespace. So mappers combine without one certificate field posing as another:
/// `OU=serviceaccount:prod:api` becomes `ou:serviceaccount:prod:api`, never the service
/// account's role, and `O=user:root` becomes `group:user:root`. (SPIFFE path segments cannot
/// contain `:`, so `serviceaccount:<ns>:<sa>` is unambiguous.) Give roles of your own mappers
/// a namespace of their own too (`app:`).
///
/// A pair of mappers is a mapper giving the roles of both.
///
/// ```
/// use tower_mtls::MtlsAcceptor;
/// use tower_mtls::authorize::{Matcher, Rule};
/// use tower_mtls::identity::{OrganizationalUnitRoles, SpiffeServiceAccountRoles};
///
/// # fn acceptor(tls: tower_mtls::MtlsConfig) -> Result<(), tower_mtls::SpiffeIdError> {
/// let acceptor = MtlsAcceptor::new(tls).role_mapper((
///     OrganizationalUnitRoles,
///     SpiffeServiceAccountRoles::in_trust_domain("example.org")?,
/// ));
/// let rule = Rule::allow("prod-api").principal(Matcher::role("serviceaccount:prod:api"));
/// # let _ = (acceptor, rule); Ok(()) }
/// ```
pub trait RoleMapper: Send + Sync + 'static {
    /// The roles of `principal`.
    fn roles(&self, principal: &Principal) -> Roles;
}

impl<F> RoleMapper for F
where
    F: Fn(&Principal) -> Roles + Send + Sync + 'static,
{
    fn roles(&self, principal: &Principal) -> Roles {
        self(principal)
    }
}

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

/// Each subject OU is a role `ou:<OU>`: `OU=admins` gives `ou:admins`. The prefix keeps OU
/// values (which the CA's requester often chooses) from posing as other mappers' roles.
#[derive(Clone, Copy, Debug, Default)]
pub struct OrganizationalUnitRoles;

impl RoleMapper for OrganizationalUnitRoles {
    fn roles(&self, principal: &Principal) -> Roles {
        Roles::new(
            principal
                .organizational_units()
                .map(|ou| format!("ou:{ou}")),
        )
    }
}

/// The SPIFFE path convention of Istio and SPIRE on Kubernetes, `/ns/<ns>/sa/<sa>`: roles
/// `namespace:<ns>` and `serviceaccount:<ns>:<sa>`. Any other path gives no roles.
///
/// The roles do not name the trust domain: with [`any_trust_domain`](Self::any_trust_domain),
/// `prod:api` of every trusted domain has the same roles. When several trust domains are
/// trusted, use [`in_trust_domain`](Self::in_trust_domain) (one mapper per domain you mean).
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
    pub fn in_trust_domain(trust_domain: &str) -> Result<Self, SpiffeIdError> {
        validate_trust_domain(trust_domain)?;
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
    use crate::testing::{CertSpec, principal};

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
        assert_eq!(
            names(OrganizationalUnitRoles.roles(&p)),
            ["ou:admins", "ou:ops"]
        );
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
            ["ou:admins", "namespace:prod", "serviceaccount:prod:api"]
        );
    }

    /// The issue's collision: an OU spelled like another mapper's role stays an OU role.
    #[test]
    fn certificate_fields_cannot_pose_as_other_mappers_roles() {
        let p = principal(CertSpec {
            cn: Some("group:admins"),
            o: Some("user:root"),
            // (The fixture holds at most two OUs.)
            ous: vec!["serviceaccount:prod:api", "user:alice"],
            uris: vec!["spiffe://example.org/ns/dev/sa/web"],
            ..CertSpec::default()
        });
        let all = (
            (OrganizationalUnitRoles, KubernetesRoles),
            SpiffeServiceAccountRoles::any_trust_domain(),
        );
        let roles = all.roles(&p);
        assert_eq!(
            names(roles.clone()),
            [
                "ou:serviceaccount:prod:api",
                "ou:user:alice",
                "user:group:admins",
                "group:user:root",
                "namespace:dev",
                "serviceaccount:dev:web",
            ]
        );
        for forged in [
            "serviceaccount:prod:api",
            "user:alice",
            "group:admins",
            "user:root",
        ] {
            assert!(!roles.contains(forged), "{forged}");
        }
    }
}
