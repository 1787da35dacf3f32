//! Who the client is: the [`Principal`](crate::Principal) parsed once per connection from the
//! verified chain, its names, its roles, and the [`ConnectionInfo`](crate::ConnectionInfo)
//! every request of the connection carries.
//!
//! ```
//! use tower_mtls::Principal;
//! use tower_mtls::identity::{KubernetesRoles, RoleMapper, Roles};
//!
//! fn describe(principal: &Principal) -> String {
//!     let roles: Roles = KubernetesRoles.roles(principal); // `user:<CN>`, `group:<O>`
//!     format!(
//!         "{} issued by {}, roles {:?}",
//!         principal.subject(),     // a parsed DistinguishedName, RFC 4514 when printed
//!         principal.issuer(),
//!         roles.iter().collect::<Vec<_>>(),
//!     )
//! }
//! # let _ = describe;
//! ```

pub(crate) mod connection;
pub(crate) mod lookup;
pub(crate) mod name;
pub(crate) mod principal;
pub(crate) mod roles;
pub(crate) mod shared_principals;
pub(crate) mod spiffe_id;
pub(crate) mod trust_bundle;

pub use connection::StaleIdentity;
pub use name::{
    Attribute, AttributeValue, DistinguishedName, NameParseError, OID_COMMON_NAME,
    OID_ORGANIZATION, OID_ORGANIZATIONAL_UNIT, RelativeDistinguishedName,
};
pub use principal::{ExtendedKeyUsage, SubjectAltName};
pub use roles::{
    KubernetesRoles, OrganizationalUnitRoles, RoleMapper, Roles, SpiffeServiceAccountRoles,
};
pub use spiffe_id::{MAX_SPIFFE_ID_LEN, MAX_TRUST_DOMAIN_LEN};
pub use trust_bundle::{MAX_BUNDLE_NAME_LEN, TrustBundle};
