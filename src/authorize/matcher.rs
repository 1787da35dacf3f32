//! [`Matcher`]: who a rule is about, decided on the typed fields of a [`Principal`].

use std::fmt;
use std::net::IpAddr;

use crate::authorize::error::MatcherError;
use crate::identity::name::DistinguishedName;
use crate::identity::principal::Principal;
use crate::identity::roles::Roles;
use crate::identity::spiffe_id::{SpiffeId, validate_trust_domain};
use crate::identity::trust_bundle::validate_bundle_name;

/// A condition on the verified identity (and the connection's [`Roles`]).
///
/// Build leaves with the associated functions, combine them with [`and`](Matcher::and),
/// [`or`](Matcher::or), [`any`], [`all`] and [`not`].
/// Matching never allocates.
///
/// Every matcher reads one typed field — the SPIFFE ID, the DNS SANs, the parsed subject
/// attributes, the issuer's parsed RDNs, a hash — and never a substring of a rendered string:
/// a URI SAN `spiffe://evil.org/x` is never a DNS name, an IP SAN `127.0.0.1` is not a DNS SAN
/// with the same text, and `CN=a\,OU=admins` has no OU.
///
/// ```
/// use tower_mtls::authorize::Matcher;
/// use tower_mtls::SpiffeId;
///
/// let admins = Matcher::spiffe_member_of("example.org")?
///     .and(Matcher::organizational_unit("admins"));
/// let ops = Matcher::spiffe_path_prefix("spiffe://example.org/ns/ops".parse::<SpiffeId>()?)
///     .or(Matcher::dns_name("*.ops.example.org")?);
/// println!("{admins} / {ops}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// DNS names compare ASCII case-insensitively; a `*.` pattern stands for exactly **one** label,
/// as in TLS server names: `*.example.org` matches `a.example.org`, not `example.org`, not
/// `a.b.example.org`, not `evilexample.org`. SAN values are taken literally (a certificate's own
/// `*.example.org` SAN is not expanded). Everything else compares exactly.
///
/// # Combining
/// [`any`], [`all`], [`not`], [`Matcher::and`], [`Matcher::or`], and [`Matcher::explain`].
///
/// `any([])` matches nobody and `all([])` matches everybody, as in logic; a rule set denies
/// when nothing allows, so an empty `any` can only ever take access away.
///
/// ```
/// use tower_mtls::authorize::{Matcher, all, any, not};
///
/// let operators = all([
///     Matcher::spiffe_member_of("example.org")?,
///     any([Matcher::organizational_unit("ops"), Matcher::role("oncall")]),
///     not(Matcher::organizational_unit("contractors")),
/// ]);
/// assert_eq!(
///     operators.to_string(),
///     r#"all(spiffe_trust_domain = "example.org", any(ou = "ops", role = "oncall"), not(ou = "contractors"))"#
/// );
/// # Ok::<(), tower_mtls::authorize::MatcherError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matcher(Node);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    AnyVerified,
    SpiffeIds(Box<[SpiffeId]>),
    SpiffeTrustDomain(Box<str>),
    SpiffePathPrefix(SpiffeId),
    DnsName(DnsPattern),
    Uri(Box<str>),
    Email(Box<str>),
    Ip(IpAddr),
    CommonName(Box<str>),
    Organization(Box<str>),
    OrganizationalUnit(Box<str>),
    Issuer(IssuerPattern),
    FingerprintSha256([u8; 32]),
    SpkiSha256([u8; 32]),
    Serial(Box<str>),
    Role(Box<str>),
    TrustBundle(Box<str>),
    Any(Box<[Matcher]>),
    All(Box<[Matcher]>),
    Not(Box<Matcher>),
}

impl Matcher {
    /// Every verified client.
    pub fn any_verified() -> Self {
        Matcher(Node::AnyVerified)
    }

    /// The SPIFFE ID is exactly `id` (go-spiffe `AuthorizeID`).
    pub fn spiffe_id(id: SpiffeId) -> Self {
        Matcher(Node::SpiffeIds(Box::new([id])))
    }

    /// The SPIFFE ID is one of `ids` (go-spiffe `AuthorizeOneOf`); none given matches nobody.
    pub fn spiffe_id_one_of(ids: impl IntoIterator<Item = SpiffeId>) -> Self {
        Matcher(Node::SpiffeIds(ids.into_iter().collect()))
    }

    /// The SPIFFE ID is in `trust_domain` (go-spiffe `AuthorizeMemberOf`).
    ///
    /// A SPIFFE ID is bound to its trust domain's bundle only when the server has SPIFFE
    /// bundles configured ([`spiffe_bundle`](crate::tls::MtlsConfigBuilder::spiffe_bundle));
    /// with client CA bundles alone, any of their CAs can issue any SPIFFE ID, and a rule
    /// should say which bundle it trusts for it ([`trust_bundle`](Self::trust_bundle)).
    pub fn spiffe_member_of(trust_domain: &str) -> Result<Self, MatcherError> {
        validate_trust_domain(trust_domain).map_err(|error| MatcherError::TrustDomain {
            value: trust_domain.to_owned(),
            error,
        })?;
        Ok(Matcher(Node::SpiffeTrustDomain(trust_domain.into())))
    }

    /// The SPIFFE ID is `prefix` or below it, on segment boundaries:
    /// `spiffe://example.org/ns/a` covers `/ns/a` and `/ns/a/x`, never `/ns/ab`.
    pub fn spiffe_path_prefix(prefix: SpiffeId) -> Self {
        Matcher(Node::SpiffePathPrefix(prefix))
    }

    /// A DNS SAN equals `pattern`, or, for `*.suffix`, is one label followed by `.suffix`.
    pub fn dns_name(pattern: &str) -> Result<Self, MatcherError> {
        DnsPattern::parse(pattern).map(|p| Matcher(Node::DnsName(p)))
    }

    /// A URI SAN equals `uri` exactly.
    pub fn uri(uri: &str) -> Self {
        Matcher(Node::Uri(uri.into()))
    }

    /// An email (rfc822Name) SAN equals `email`; the domain part compares case-insensitively.
    pub fn email(email: &str) -> Self {
        Matcher(Node::Email(email.into()))
    }

    /// An IP address SAN equals `ip`.
    pub fn ip(ip: IpAddr) -> Self {
        Matcher(Node::Ip(ip))
    }

    /// A subject `CN` equals `cn`.
    pub fn common_name(cn: &str) -> Self {
        Matcher(Node::CommonName(cn.into()))
    }

    /// A subject `O` equals `o`.
    pub fn organization(o: &str) -> Self {
        Matcher(Node::Organization(o.into()))
    }

    /// A subject `OU` equals `ou`.
    pub fn organizational_unit(ou: &str) -> Self {
        Matcher(Node::OrganizationalUnit(ou.into()))
    }

    /// The issuer DN has exactly the RDNs of `dn` (RFC 4514, e.g. `CN=Issuing CA,O=Example`),
    /// compared attribute by attribute on the parsed name, values exactly.
    ///
    /// The issuer DN is a *name*: when the server trusts several bundles, any of their CAs can
    /// mint a sub-CA whose subject copies it. Pair it with [`trust_bundle`](Self::trust_bundle)
    /// to mean "issued by that CA of that bundle".
    pub fn issuer(dn: &str) -> Result<Self, MatcherError> {
        IssuerPattern::parse(dn).map(|p| Matcher(Node::Issuer(p)))
    }

    /// The leaf certificate's SHA-256 is `hash` (a certificate pin).
    pub fn fingerprint_sha256(hash: [u8; 32]) -> Self {
        Matcher(Node::FingerprintSha256(hash))
    }

    /// The leaf's SubjectPublicKeyInfo SHA-256 is `hash` (a key pin).
    pub fn spki_sha256(hash: [u8; 32]) -> Self {
        Matcher(Node::SpkiSha256(hash))
    }

    /// The serial number is `serial` (hex; colons, case and leading zeros are ignored).
    pub fn serial(serial: &str) -> Result<Self, MatcherError> {
        let digits: String = serial
            .chars()
            .filter(|c| *c != ':')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(MatcherError::Serial {
                value: serial.to_owned(),
            });
        }
        Ok(Matcher(Node::Serial(canonical_serial(&digits).into())))
    }

    /// The connection has role `role` (see [`RoleMapper`](crate::identity::RoleMapper)).
    pub fn role(role: &str) -> Self {
        Matcher(Node::Role(role.into()))
    }

    /// The chain was verified by the trust bundle `name`: a named client CA bundle, or the
    /// bundle of the SPIFFE trust domain `name` (see
    /// [`Principal::trust_bundle`](crate::Principal::trust_bundle)). The unnamed client CA
    /// bundle has no name and matches no `trust_bundle`.
    ///
    /// ```
    /// use tower_mtls::authorize::Matcher;
    ///
    /// // OU=admins means admin only in certificates of our own CA, not of the partner's.
    /// let admins = Matcher::trust_bundle("corp")?.and(Matcher::organizational_unit("admins"));
    /// assert_eq!(admins.to_string(), r#"all(trust_bundle = "corp", ou = "admins")"#);
    /// # Ok::<(), tower_mtls::authorize::MatcherError>(())
    /// ```
    pub fn trust_bundle(name: &str) -> Result<Self, MatcherError> {
        validate_bundle_name(name).map_err(|why| MatcherError::TrustBundle {
            value: name.to_owned(),
            why,
        })?;
        Ok(Matcher(Node::TrustBundle(name.into())))
    }

    /// Whether this is [`any_verified`](Self::any_verified) itself (not a combination that
    /// happens to match everyone).
    pub(crate) fn is_any_verified(&self) -> bool {
        matches!(self.0, Node::AnyVerified)
    }

    /// Whether `principal` (with the connection's `roles`) matches.
    pub fn matches(&self, principal: &Principal, roles: &Roles) -> bool {
        match &self.0 {
            Node::AnyVerified => true,
            Node::SpiffeIds(ids) => principal.spiffe_id().is_some_and(|id| ids.contains(id)),
            Node::SpiffeTrustDomain(td) => {
                principal.spiffe_id().is_some_and(|id| id.is_member_of(td))
            }
            Node::SpiffePathPrefix(prefix) => principal
                .spiffe_id()
                .is_some_and(|id| spiffe_under(id, prefix)),
            Node::DnsName(pattern) => principal.dns_names().any(|name| pattern.matches(name)),
            Node::Uri(uri) => principal.uris().any(|u| u == &**uri),
            Node::Email(email) => principal.emails().any(|e| email_eq(e, email)),
            Node::Ip(ip) => principal.ip_addresses().any(|a| a == *ip),
            Node::CommonName(v) => principal.common_names().any(|x| x == &**v),
            Node::Organization(v) => principal.organizations().any(|x| x == &**v),
            Node::OrganizationalUnit(v) => principal.organizational_units().any(|x| x == &**v),
            Node::Issuer(pattern) => pattern.matches(principal),
            Node::FingerprintSha256(h) => principal.fingerprint_sha256() == h,
            Node::SpkiSha256(h) => principal.spki_sha256() == h,
            Node::Serial(s) => canonical_serial(principal.serial()) == &**s,
            Node::Role(role) => roles.contains(role),
            Node::TrustBundle(name) => principal.trust_bundle().name() == Some(&**name),
            Node::Any(ms) => ms.iter().any(|m| m.matches(principal, roles)),
            Node::All(ms) => ms.iter().all(|m| m.matches(principal, roles)),
            Node::Not(m) => !m.matches(principal, roles),
        }
    }
}

/// `Principal::serial` strips leading zero *bytes* (`0f`); a pin may be written `f` or `000f`.
fn canonical_serial(hex_digits: &str) -> &str {
    let trimmed = hex_digits.trim_start_matches('0');
    if trimmed.is_empty() { "0" } else { trimmed }
}

fn spiffe_under(id: &SpiffeId, prefix: &SpiffeId) -> bool {
    if id.trust_domain() != prefix.trust_domain() {
        return false;
    }
    match id.path().strip_prefix(prefix.path()) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

fn email_eq(have: &str, want: &str) -> bool {
    match (have.rsplit_once('@'), want.rsplit_once('@')) {
        (Some((hl, hd)), Some((wl, wd))) => hl == wl && hd.eq_ignore_ascii_case(wd),
        _ => have == want,
    }
}

/// Renders `bytes` as lowercase hex into `f` without allocating.
fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

fn write_list(f: &mut fmt::Formatter<'_>, name: &str, items: &[Matcher]) -> fmt::Result {
    write!(f, "{name}(")?;
    for (i, m) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{m}")?;
    }
    f.write_str(")")
}

impl fmt::Display for Matcher {
    /// The policy-file spelling of the matcher, for logs and explanations.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Node::AnyVerified => f.write_str("any verified client"),
            Node::SpiffeIds(ids) => match &ids[..] {
                [one] => write!(f, "spiffe_id = {:?}", one.as_str()),
                many => {
                    let names: Vec<&str> = many.iter().map(SpiffeId::as_str).collect();
                    write!(f, "spiffe_id in {names:?}")
                }
            },
            Node::SpiffeTrustDomain(td) => write!(f, "spiffe_trust_domain = {td:?}"),
            Node::SpiffePathPrefix(p) => write!(f, "spiffe_path_prefix = {:?}", p.as_str()),
            Node::DnsName(p) => write!(f, "dns = {:?}", p.as_str()),
            Node::Uri(v) => write!(f, "uri = {v:?}"),
            Node::Email(v) => write!(f, "email = {v:?}"),
            Node::Ip(v) => write!(f, "ip = \"{v}\""),
            Node::CommonName(v) => write!(f, "cn = {v:?}"),
            Node::Organization(v) => write!(f, "o = {v:?}"),
            Node::OrganizationalUnit(v) => write!(f, "ou = {v:?}"),
            Node::Issuer(p) => write!(f, "issuer = {:?}", p.source),
            Node::FingerprintSha256(h) => {
                f.write_str("fingerprint_sha256 = ")?;
                write_hex(f, h)
            }
            Node::SpkiSha256(h) => {
                f.write_str("spki_sha256 = ")?;
                write_hex(f, h)
            }
            Node::Serial(s) => write!(f, "serial = {s:?}"),
            Node::Role(r) => write!(f, "role = {r:?}"),
            Node::TrustBundle(name) => write!(f, "trust_bundle = {name:?}"),
            Node::Any(ms) => write_list(f, "any", ms),
            Node::All(ms) => write_list(f, "all", ms),
            Node::Not(m) => write!(f, "not({m})"),
        }
    }
}

/// A DNS name, or `*.` followed by a DNS name.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DnsPattern {
    source: Box<str>,
    wildcard: bool,
}

impl DnsPattern {
    fn parse(pattern: &str) -> Result<Self, MatcherError> {
        let fail = |why| MatcherError::DnsName {
            value: pattern.to_owned(),
            why,
        };
        let (wildcard, name) = match pattern.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, pattern),
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return Err(fail("no name"));
        }
        for label in name.split('.') {
            if label.is_empty() {
                return Err(fail("empty label"));
            }
            if label.len() > 63 {
                return Err(fail("label longer than 63 bytes"));
            }
            if label.contains('*') {
                return Err(fail("'*' is allowed only as a whole leftmost label"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(fail(
                    "only letters, digits, '-' and '_' are allowed in labels",
                ));
            }
        }
        let source = if wildcard {
            format!("*.{name}")
        } else {
            name.to_owned()
        };
        Ok(DnsPattern {
            source: source.into(),
            wildcard,
        })
    }

    fn as_str(&self) -> &str {
        &self.source
    }

    fn matches(&self, san: &str) -> bool {
        let san = san.strip_suffix('.').unwrap_or(san);
        if !self.wildcard {
            return san.eq_ignore_ascii_case(&self.source);
        }
        let suffix = &self.source[1..]; // ".example.org"
        if san.len() <= suffix.len() {
            return false;
        }
        // A peer's SAN may hold non-ASCII bytes: never split inside a character.
        let at = san.len() - suffix.len();
        if !san.is_char_boundary(at) {
            return false;
        }
        let (label, tail) = san.split_at(at);
        tail.eq_ignore_ascii_case(suffix) && !label.contains('.')
    }
}

/// An issuer DN pattern: the parsed name, and how it was written (for `Display`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct IssuerPattern {
    source: Box<str>,
    name: DistinguishedName,
}

impl IssuerPattern {
    fn parse(dn: &str) -> Result<Self, MatcherError> {
        let name = DistinguishedName::parse_rfc4514(dn).map_err(|error| {
            MatcherError::DistinguishedName {
                value: dn.to_owned(),
                error,
            }
        })?;
        Ok(IssuerPattern {
            source: dn.into(),
            name,
        })
    }

    /// Attribute by attribute on the parsed names, RDNs in order, values exactly.
    fn matches(&self, principal: &Principal) -> bool {
        principal.issuer() == &self.name
    }
}

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
    use crate::identity::trust_bundle::TrustBundle;
    use crate::testing::{CertSpec, principal};

    fn no_roles() -> Roles {
        Roles::none()
    }

    fn spiffe(s: &str) -> SpiffeId {
        s.parse().unwrap()
    }

    fn with_spiffe(id: &'static str) -> Principal {
        principal(CertSpec {
            uris: vec![id],
            ..CertSpec::default()
        })
    }

    #[test]
    fn spiffe_exact_and_one_of() {
        let p = with_spiffe("spiffe://example.org/ns/a");
        assert!(Matcher::spiffe_id(spiffe("spiffe://example.org/ns/a")).matches(&p, &no_roles()));
        assert!(!Matcher::spiffe_id(spiffe("spiffe://example.org/ns/ab")).matches(&p, &no_roles()));
        assert!(!Matcher::spiffe_id(spiffe("spiffe://example.org/ns")).matches(&p, &no_roles()));
        let one_of = Matcher::spiffe_id_one_of([
            spiffe("spiffe://example.org/x"),
            spiffe("spiffe://example.org/ns/a"),
        ]);
        assert!(one_of.matches(&p, &no_roles()));
        assert!(!Matcher::spiffe_id_one_of([]).matches(&p, &no_roles()));
    }

    #[test]
    fn spiffe_trust_domain_is_exact() {
        let p = with_spiffe("spiffe://example.org/ns/a");
        assert!(
            Matcher::spiffe_member_of("example.org")
                .unwrap()
                .matches(&p, &no_roles())
        );
        for td in ["example.or", "org", "xexample.org", "sub.example.org"] {
            assert!(
                !Matcher::spiffe_member_of(td)
                    .unwrap()
                    .matches(&p, &no_roles()),
                "{td}"
            );
        }
        assert!(matches!(
            Matcher::spiffe_member_of("Example.org"),
            Err(MatcherError::TrustDomain { .. })
        ));
    }

    #[test]
    fn spiffe_prefix_respects_segment_boundaries() {
        let a = with_spiffe("spiffe://example.org/ns/a");
        let ab = with_spiffe("spiffe://example.org/ns/ab");
        let a_x = with_spiffe("spiffe://example.org/ns/a/x");
        let other_td = with_spiffe("spiffe://evil.org/ns/a");
        let under_a = Matcher::spiffe_path_prefix(spiffe("spiffe://example.org/ns/a"));
        let under_ab = Matcher::spiffe_path_prefix(spiffe("spiffe://example.org/ns/ab"));
        assert!(under_a.matches(&a, &no_roles()));
        assert!(under_a.matches(&a_x, &no_roles()));
        assert!(!under_a.matches(&ab, &no_roles()));
        assert!(!under_a.matches(&other_td, &no_roles()));
        assert!(!under_ab.matches(&a, &no_roles()));
        assert!(under_ab.matches(&ab, &no_roles()));
        let whole_td = Matcher::spiffe_path_prefix(spiffe("spiffe://example.org"));
        assert!(whole_td.matches(&a_x, &no_roles()));
    }

    #[test]
    fn uri_san_spiffe_is_never_a_dns_name() {
        let p = with_spiffe("spiffe://evil.org/x");
        assert!(
            !Matcher::dns_name("evil.org")
                .unwrap()
                .matches(&p, &no_roles())
        );
        assert!(!Matcher::dns_name("*.org").unwrap().matches(&p, &no_roles()));
        assert!(Matcher::uri("spiffe://evil.org/x").matches(&p, &no_roles()));
        assert!(!Matcher::uri("spiffe://evil.org").matches(&p, &no_roles()));
    }

    #[test]
    fn dns_exact_and_wildcard_on_label_boundaries() {
        let p = |name: &'static str| {
            principal(CertSpec {
                dns: vec![name],
                ..CertSpec::default()
            })
        };
        let wild = Matcher::dns_name("*.example.org").unwrap();
        assert!(wild.matches(&p("a.example.org"), &no_roles()));
        assert!(wild.matches(&p("A.Example.ORG"), &no_roles()));
        assert!(!wild.matches(&p("example.org"), &no_roles()));
        assert!(!wild.matches(&p("evilexample.org"), &no_roles()));
        assert!(!wild.matches(&p("a.evilexample.org"), &no_roles()));
        assert!(!wild.matches(&p("a.b.example.org"), &no_roles()));
        let exact = Matcher::dns_name("api.example.org").unwrap();
        assert!(exact.matches(&p("API.example.org"), &no_roles()));
        assert!(!exact.matches(&p("xapi.example.org"), &no_roles()));
        assert!(!exact.matches(&p("a.api.example.org"), &no_roles()));
    }

    #[test]
    fn dns_pattern_validation() {
        for bad in [
            "",
            "*",
            "*.",
            "a.*.org",
            "a*.example.org",
            "**.example.org",
            "a..b",
            "a b.org",
        ] {
            assert!(
                matches!(Matcher::dns_name(bad), Err(MatcherError::DnsName { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(
            Matcher::dns_name("example.org.").unwrap(),
            Matcher::dns_name("example.org").unwrap()
        );
    }

    #[test]
    fn ip_san_and_dns_san_of_the_same_text_differ() {
        let ip_only = principal(CertSpec {
            ips: vec!["127.0.0.1".parse().unwrap()],
            ..CertSpec::default()
        });
        let dns_only = principal(CertSpec {
            dns: vec!["127.0.0.1"],
            ..CertSpec::default()
        });
        let ip = Matcher::ip("127.0.0.1".parse().unwrap());
        assert!(ip.matches(&ip_only, &no_roles()));
        assert!(!ip.matches(&dns_only, &no_roles()));
        // "127.0.0.1" is a valid DNS-name pattern syntactically; it only sees DNS SANs.
        let dns = Matcher::dns_name("127.0.0.1").unwrap();
        assert!(dns.matches(&dns_only, &no_roles()));
        assert!(!dns.matches(&ip_only, &no_roles()));
    }

    #[test]
    fn email_domain_is_case_insensitive_local_part_is_not() {
        let p = principal(CertSpec {
            emails: vec!["Alice@Example.org"],
            ..CertSpec::default()
        });
        assert!(Matcher::email("Alice@example.ORG").matches(&p, &no_roles()));
        assert!(!Matcher::email("alice@example.org").matches(&p, &no_roles()));
    }

    #[test]
    fn subject_attributes_are_parsed_not_substrings() {
        let p = principal(CertSpec {
            cn: Some("x,OU=admins"),
            ous: vec!["users"],
            o: Some("Example"),
            ..CertSpec::default()
        });
        assert!(!Matcher::organizational_unit("admins").matches(&p, &no_roles()));
        assert!(Matcher::organizational_unit("users").matches(&p, &no_roles()));
        assert!(Matcher::common_name("x,OU=admins").matches(&p, &no_roles()));
        assert!(!Matcher::common_name("x").matches(&p, &no_roles()));
        assert!(Matcher::organization("Example").matches(&p, &no_roles()));
        assert!(!Matcher::organization("example").matches(&p, &no_roles()));
    }

    #[test]
    fn issuer_compares_parsed_rdns() {
        let p = principal(CertSpec::default());
        // testing::principal self-signs, so issuer == subject: CN=test,O=tower-mtls test
        assert!(
            Matcher::issuer("CN=test,O=tower-mtls test")
                .unwrap()
                .matches(&p, &no_roles())
        );
        assert!(
            Matcher::issuer("cn=test, o=tower-mtls test")
                .unwrap()
                .matches(&p, &no_roles())
        );
        assert!(!Matcher::issuer("CN=test").unwrap().matches(&p, &no_roles()));
        assert!(
            !Matcher::issuer("CN=test,O=tower-mtls test,C=DE")
                .unwrap()
                .matches(&p, &no_roles())
        );
        assert!(
            !Matcher::issuer("CN=test\\,O=tower-mtls test")
                .unwrap()
                .matches(&p, &no_roles())
        );
        for bad in ["", "CN", "XX=a", "CN=#0101", "CN=a\\"] {
            assert!(
                matches!(
                    Matcher::issuer(bad),
                    Err(MatcherError::DistinguishedName { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn issuer_escapes_keep_one_attribute() {
        let pattern = IssuerPattern::parse(r"CN=a\,OU\=b\2C c").unwrap();
        assert_eq!(pattern.name.rdns().len(), 1);
        assert_eq!(
            pattern.name.common_names().collect::<Vec<_>>(),
            ["a,OU=b, c"]
        );
    }

    #[test]
    fn pins_and_serial() {
        let p = principal(CertSpec::default());
        let fp = *p.fingerprint_sha256();
        let spki = *p.spki_sha256();
        assert!(Matcher::fingerprint_sha256(fp).matches(&p, &no_roles()));
        assert!(!Matcher::fingerprint_sha256(spki).matches(&p, &no_roles()));
        assert!(Matcher::spki_sha256(spki).matches(&p, &no_roles()));

        let serial = p.serial().to_owned();
        assert!(Matcher::serial(&serial).unwrap().matches(&p, &no_roles()));
        assert!(
            Matcher::serial(&format!("00{}", serial.to_uppercase()))
                .unwrap()
                .matches(&p, &no_roles())
        );
        assert!(!Matcher::serial("1234").unwrap().matches(&p, &no_roles()));
        assert!(Matcher::serial("xyz").is_err());
    }

    #[test]
    fn roles() {
        let p = principal(CertSpec::default());
        let roles = Roles::new(["admins"]);
        assert!(Matcher::role("admins").matches(&p, &roles));
        assert!(!Matcher::role("admin").matches(&p, &roles));
        assert!(!Matcher::role("admins").matches(&p, &no_roles()));
    }

    #[test]
    fn trust_bundle_names_the_bundle_that_verified() {
        let with_bundle = |bundle| {
            principal(CertSpec {
                bundle,
                ..CertSpec::default()
            })
        };
        let partner = with_bundle(TrustBundle::Named("partner".into()));
        let td = with_bundle(TrustBundle::SpiffeTrustDomain("example.org".into()));
        let unnamed = with_bundle(TrustBundle::Unnamed);
        let m = |name| Matcher::trust_bundle(name).unwrap();
        assert!(m("partner").matches(&partner, &no_roles()));
        assert!(!m("partne").matches(&partner, &no_roles()));
        assert!(!m("Partner").matches(&partner, &no_roles()));
        assert!(m("example.org").matches(&td, &no_roles()));
        assert!(!m("partner").matches(&td, &no_roles()));
        assert!(!m("partner").matches(&unnamed, &no_roles()));
        assert_eq!(m("partner").to_string(), r#"trust_bundle = "partner""#);
        for bad in ["", "a b", "x\"y"] {
            assert!(
                matches!(
                    Matcher::trust_bundle(bad),
                    Err(MatcherError::TrustBundle { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn display_is_the_policy_spelling() {
        let m = Matcher::organizational_unit("admins")
            .or(Matcher::spiffe_id(spiffe("spiffe://example.org/admin")));
        assert_eq!(
            m.to_string(),
            r#"any(ou = "admins", spiffe_id = "spiffe://example.org/admin")"#
        );
    }
}

#[cfg(test)]
mod combinator_tests {
    use super::*;
    use crate::testing::{CertSpec, principal, shared_principal};
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
