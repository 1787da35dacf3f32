//! Roles: what a principal is, in your application's words, computed once per connection.
//!
//! A [`RoleMapper`] given to [`MtlsAcceptor::role_mapper`](crate::MtlsAcceptor::role_mapper)
//! runs once per connection, right after the principal is parsed; the result is kept in the
//! [`ConnectionInfo`](crate::ConnectionInfo) and costs nothing per request.
//!
//! ```
//! use tower_mtls::{Principal, Roles};
//!
//! // OU = role
//! let mapper = |p: &Principal| Roles::new(p.organizational_units());
//! # let _ = mapper;
//! ```

use std::fmt;
use std::sync::Arc;

use crate::principal::Principal;

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
