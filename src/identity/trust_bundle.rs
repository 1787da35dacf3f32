//! [`TrustBundle`]: which configured bundle of trust anchors verified a client's chain.

use std::fmt;
use std::sync::Arc;

/// Longest bundle name accepted, in bytes (the longest SPIFFE trust domain name).
pub const MAX_BUNDLE_NAME_LEN: usize = 255;

/// The bundle of trust anchors that verified a [`Principal`](crate::Principal)'s chain.
///
/// With several bundles (a partner's CA next to your own, several SPIFFE trust domains, an old
/// and a new root during a migration) a name in a certificate means something only together
/// with the bundle that vouched for it: any of those CAs can put any name in a certificate it
/// issues. The acceptor decides the bundle from the trust anchor that actually verified the
/// chain — its key and the signatures, never its name — so two bundles holding CAs with the
/// same subject are not confused.
///
/// ```
/// use tower_mtls::identity::TrustBundle;
///
/// # fn show(principal: &tower_mtls::Principal) {
/// match principal.trust_bundle() {
///     TrustBundle::SpiffeTrustDomain(td) => println!("SVID of {td}"),
///     TrustBundle::Named(name) => println!("issued under the {name} bundle"),
///     TrustBundle::Unnamed => println!("issued under the default client CA bundle"),
///     _ => {}
/// }
/// // The name policies and `/whoami` use: the bundle's name, the bare trust domain, or none.
/// let name: Option<&str> = principal.trust_bundle().name();
/// # let _ = name;
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TrustBundle {
    /// The unnamed client CA bundle
    /// ([`client_ca_pem_file`](crate::tls::MtlsConfigBuilder::client_ca_pem_file)); also what
    /// a principal made outside a handshake says.
    #[default]
    Unnamed,
    /// A named client CA bundle
    /// ([`client_ca_bundle`](crate::tls::MtlsConfigBuilder::client_ca_bundle)).
    Named(Arc<str>),
    /// The X.509 bundle of a SPIFFE trust domain
    /// ([`spiffe_bundle`](crate::tls::MtlsConfigBuilder::spiffe_bundle)), by its bare name
    /// (`example.org`).
    SpiffeTrustDomain(Arc<str>),
}

impl TrustBundle {
    /// The bundle's name: the name it was configured with, or the bare trust domain of a SPIFFE
    /// bundle; `None` for the unnamed bundle. Bundle names and trust domains share one
    /// namespace (a configuration cannot use one name for both), so the name alone says which
    /// bundle it is.
    pub fn name(&self) -> Option<&str> {
        match self {
            TrustBundle::Unnamed => None,
            TrustBundle::Named(name) | TrustBundle::SpiffeTrustDomain(name) => Some(name),
        }
    }
}

impl fmt::Display for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrustBundle::Unnamed => f.write_str("the unnamed client CA bundle"),
            TrustBundle::Named(name) => write!(f, "client CA bundle {name:?}"),
            TrustBundle::SpiffeTrustDomain(td) => write!(f, "SPIFFE trust domain {td:?}"),
        }
    }
}

/// Checks a bundle name: 1 to 255 bytes of ASCII letters, digits, `.`, `-` and `_` (every
/// SPIFFE trust domain name is one), so that names print safely in logs and policies.
pub(crate) fn validate_bundle_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("a bundle name cannot be empty");
    }
    if name.len() > MAX_BUNDLE_NAME_LEN {
        return Err("a bundle name has at most 255 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err("a bundle name has only ASCII letters, digits, '.', '-' and '_'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(TrustBundle::Unnamed.name(), None);
        assert_eq!(TrustBundle::Named("partner".into()).name(), Some("partner"));
        assert_eq!(
            TrustBundle::SpiffeTrustDomain("example.org".into()).name(),
            Some("example.org")
        );
        assert_ne!(
            TrustBundle::Named("example.org".into()),
            TrustBundle::SpiffeTrustDomain("example.org".into())
        );
    }

    #[test]
    fn bundle_names_are_checked() {
        for good in ["partner", "example.org", "Old-Root_2024", &"a".repeat(255)] {
            assert!(validate_bundle_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "ca\n", "päd", "a/b", &"a".repeat(256), "x\"y"] {
            assert!(validate_bundle_name(bad).is_err(), "{bad:?}");
        }
    }
}
