//! A declarative policy file (TOML) that compiles to a [`RuleSet`].
//!
//! ```
//! use tower_mtls::authorize::RuleSet;
//!
//! let rules = RuleSet::from_toml_str(r#"
//!     [[rule]]
//!     name = "health"
//!     action = "allow"
//!     methods = ["GET"]
//!     path = ["/healthz", "/whoami"]
//!
//!     [[rule]]
//!     name = "admin"
//!     action = "allow"
//!     methods = "GET"
//!     path = "/admin"
//!     principal.any = [{ ou = "admins" }, { spiffe_id = "spiffe://example.org/admin" }]
//! "#)?;
//! assert_eq!(rules.rules().len(), 2);
//! # Ok::<(), tower_mtls::policy::PolicyError>(())
//! ```
//!
//! # Format
//! The file is a list of `[[rule]]` tables; nothing else is allowed at the top level. Every
//! key not listed here is an error, never ignored.
//!
//! | key | meaning |
//! |---|---|
//! | `name` | required, unique; decisions name it |
//! | `action` | required, `"allow"` or `"deny"` |
//! | `methods` | HTTP methods, uppercase (default: any); `GET` also covers `HEAD`; `get` or `Delete` is an error |
//! | `path`, `path_prefix`, `path_glob`, `grpc` | [`PathPattern`]s, matched against the canonical request path and read the same way (`/%70rivate` is `/private`; a pattern no request can match, like `/a/../b`, is an error); the rule applies when any one matches (default: any path) |
//! | `principal` | a principal table (default: any verified client) |
//!
//! A **principal table** holds one or more of the keys below; several keys must all match, a
//! list for one key means "one of". `any`, `all` (lists of principal tables) and `not` (one
//! table) nest.
//!
//! `spiffe_id`, `spiffe_trust_domain`, `spiffe_path_prefix`, `dns` (exact or `*.suffix`), `uri`,
//! `email`, `ip`, `cn`, `o`, `ou`, `issuer` (RFC 4514), `fingerprint_sha256`, `spki_sha256`
//! (hex, colons allowed), `serial` (hex), `role`, `trust_bundle` (the name of the bundle that
//! verified the chain: a named client CA bundle or a SPIFFE trust domain) — see [`Matcher`]
//! for each one's semantics.
//!
//! Every rule is checked, and every problem found is reported, with the rule's index and name
//! and the field ([`PolicyError::problems`]). Empty lists are errors: an empty `any` would
//! silently deny and an empty `all` silently allow.
//!
//! # Trusted proxies
//! [`TrustedProxies::from_toml_str`] reads the same principal tables for the proxies whose
//! connections may forward client certificates (a document of its own: it configures the
//! acceptor, not the authorizer, and is not reloaded with a [`ReloadablePolicy`]):
//!
//! ```
//! use tower_mtls::forwarded::{ForwardedCertFormat, TrustedProxies};
//!
//! let proxies = TrustedProxies::from_toml_str(r#"
//!     format = "xfcc"                          # rfc9440 | xfcc | nginx | haproxy
//!     header = "x-forwarded-client-cert"       # optional: the format's default header
//!     cache_max_bytes = 1048576                # optional, per proxy connection
//!
//!     [[proxy]]
//!     spiffe_id = "spiffe://example.org/ns/edge/sa/envoy"
//!
//!     [[proxy]]
//!     dns = "lb.example.org"
//!     trust_bundle = "infra"
//! "#)?;
//! assert_eq!(proxies.format(), ForwardedCertFormat::Xfcc);
//! assert_eq!(proxies.proxies().len(), 2);
//! # Ok::<(), tower_mtls::policy::PolicyError>(())
//! ```
//!
//! `format` and at least one `[[proxy]]` are required; each `[[proxy]]` is a principal table
//! (several keys must all match; any one proxy table makes a connection a proxy).

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use http::Method;
use serde::Deserialize;

use crate::authorize::canonical::parse_rule_method;
use crate::authorize::error::MatcherError;
use crate::authorize::matcher::{Matcher, all, any, not};
use crate::authorize::reloadable::ReloadablePolicy;
use crate::authorize::request::{PathPattern, RequestMatcher};
use crate::authorize::rules::{Action, Rule, RuleSet};
use crate::forwarded::format::{ForwardedCertFormat, ForwardedConfigError};
use crate::forwarded::proxies::TrustedProxies;
use crate::identity::spiffe_id::SpiffeId;

/// Everything wrong with a policy: one [`PolicyProblem`] per problem, never just the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    problems: Vec<PolicyProblem>,
}

impl PolicyError {
    /// The problems, in file order.
    pub fn problems(&self) -> &[PolicyProblem] {
        &self.problems
    }

    fn single(kind: PolicyErrorKind) -> Self {
        PolicyError {
            problems: vec![PolicyProblem {
                rule: None,
                field: None,
                kind,
            }],
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problems[..] {
            [one] => write!(f, "invalid policy: {one}"),
            many => {
                write!(f, "invalid policy: {} problems", many.len())?;
                many.iter().try_for_each(|p| write!(f, "\n  - {p}"))
            }
        }
    }
}

impl std::error::Error for PolicyError {}

/// One problem in a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblem {
    /// The rule it is in, if any.
    pub rule: Option<RuleLocation>,
    /// The field, as a path (`principal.any[1].spiffe_id`), when known.
    pub field: Option<String>,
    /// What is wrong.
    pub kind: PolicyErrorKind,
}

impl fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(rule) = &self.rule {
            write!(f, "{rule}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

/// Which `[[rule]]` a problem is in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleLocation {
    /// Position in the file, from 0.
    pub index: usize,
    /// The rule's `name`, when it has one.
    pub name: Option<String>,
}

impl fmt::Display for RuleLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "rule[{}] {name:?}", self.index),
            None => write!(f, "rule[{}]", self.index),
        }
    }
}

/// What is wrong, one variant per cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyErrorKind {
    /// The file could not be read.
    #[error("cannot read the policy file: {0}")]
    Io(String),
    /// Not TOML, or the top level is not a list of `[[rule]]` tables.
    #[error("{0}")]
    Syntax(String),
    /// A rule does not fit the format: an unknown field, a wrong type.
    #[error("{0}")]
    Schema(String),
    /// The rule has no `name` (or an empty one).
    #[error("missing `name`")]
    MissingName,
    /// Another rule has the same name.
    #[error("duplicate name; rule[{first_index}] has it already")]
    DuplicateName {
        /// The earlier rule with this name.
        first_index: usize,
    },
    /// The rule has no `action`.
    #[error("missing `action` (\"allow\" or \"deny\")")]
    MissingAction,
    /// `action` is neither `allow` nor `deny`.
    #[error("action {0:?} is neither \"allow\" nor \"deny\"")]
    BadAction(String),
    /// An empty list, which would silently match nothing (or everything).
    #[error("empty list")]
    EmptyList,
    /// A principal table without any matcher key.
    #[error("empty principal table; omit `principal` to match any verified client")]
    EmptyMatcher,
    /// A value that does not make a valid matcher.
    #[error(transparent)]
    Invalid(#[from] MatcherError),
    /// A trusted-proxies document without `format`.
    #[error("missing `format` (\"rfc9440\", \"xfcc\", \"nginx\" or \"haproxy\")")]
    MissingFormat,
    /// A trusted-proxies document without any `[[proxy]]`.
    #[error("no `[[proxy]]`: name at least one trusted proxy")]
    NoProxy,
    /// A forwarded-certificate format or header name that cannot be honored.
    #[error(transparent)]
    Forwarded(#[from] ForwardedConfigError),
}

impl RuleSet {
    /// Compiles a TOML policy; see the [policy module](crate::policy) for the format.
    pub fn from_toml_str(toml_text: &str) -> Result<RuleSet, PolicyError> {
        let doc: PolicyDoc = toml::from_str(toml_text)
            .map_err(|e| PolicyError::single(PolicyErrorKind::Syntax(e.to_string())))?;
        let mut compiler = Compiler::default();
        let mut rules = Vec::with_capacity(doc.rule.len());
        let mut names: Vec<(String, usize)> = Vec::new();
        for (index, value) in doc.rule.into_iter().enumerate() {
            let name = value
                .get("name")
                .and_then(toml::Value::as_str)
                .map(str::to_owned);
            compiler.location = RuleLocation {
                index,
                name: name.clone(),
            };
            if let Some(name) = name.filter(|n| !n.is_empty()) {
                match names.iter().find(|(n, _)| *n == name) {
                    Some((_, first_index)) => compiler.problem(
                        Some("name".into()),
                        PolicyErrorKind::DuplicateName {
                            first_index: *first_index,
                        },
                    ),
                    None => names.push((name, index)),
                }
            }
            match value.try_into::<RuleDoc>() {
                Ok(doc) => rules.extend(compiler.rule(doc)),
                Err(e) => compiler.problem(None, PolicyErrorKind::Schema(e.message().to_owned())),
            }
        }
        if !compiler.problems.is_empty() {
            return Err(PolicyError {
                problems: compiler.problems,
            });
        }
        // Names and methods were checked above with locations; this cannot fail, but stays an
        // error path.
        RuleSet::new(rules)
            .map_err(|error| PolicyError::single(PolicyErrorKind::Schema(error.to_string())))
    }

    /// Reads and compiles a TOML policy file.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<RuleSet, PolicyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            PolicyError::single(PolicyErrorKind::Io(format!("{}: {e}", path.display())))
        })?;
        RuleSet::from_toml_str(&text)
    }
}

/// Policy files for a [`ReloadablePolicy`]: a bad policy is refused and the running one kept.
///
/// ```no_run
/// use tower_mtls::MtlsAuthLayer;
/// use tower_mtls::authorize::ReloadablePolicy;
///
/// let policy = ReloadablePolicy::from_toml_file("policy.toml")?;
/// let layer = MtlsAuthLayer::new(policy.clone());
/// // later, e.g. on SIGHUP: an invalid file is logged and refused, the old rules stay.
/// if let Err(e) = policy.reload_file("policy.toml") {
///     eprintln!("{e}");
/// }
/// # let _ = layer;
/// # Ok::<(), tower_mtls::policy::PolicyError>(())
/// ```
impl ReloadablePolicy {
    /// Starts with the rules of a TOML policy file.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self, PolicyError> {
        RuleSet::from_toml_file(path).map(ReloadablePolicy::new)
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

impl TrustedProxies {
    /// Reads trusted proxies from TOML; see [the policy module](crate::policy#trusted-proxies)
    /// for the format. Every problem is reported, with its field (`proxy[1].dns`).
    pub fn from_toml_str(toml_text: &str) -> Result<TrustedProxies, PolicyError> {
        let doc: ProxiesDoc = toml::from_str(toml_text)
            .map_err(|e| PolicyError::single(PolicyErrorKind::Syntax(e.to_string())))?;
        let mut compiler = Compiler::default();
        let mut problems = Vec::new();
        let mut field = |field: &str, kind: PolicyErrorKind| {
            problems.push(PolicyProblem {
                rule: None,
                field: Some(field.to_owned()),
                kind,
            });
        };
        let format = match doc.format.as_deref().map(str::parse::<ForwardedCertFormat>) {
            Some(Ok(format)) => Some(format),
            Some(Err(e)) => {
                field("format", e.into());
                None
            }
            None => {
                field("format", PolicyErrorKind::MissingFormat);
                None
            }
        };
        if doc.proxy.is_empty() {
            field("proxy", PolicyErrorKind::NoProxy);
        }
        let matchers: Vec<Matcher> = doc
            .proxy
            .iter()
            .enumerate()
            .filter_map(|(i, table)| compiler.principal(table, &format!("proxy[{i}]")))
            .collect();
        let mut proxies = format.map(TrustedProxies::new);
        if let (Some(name), Some(p)) = (&doc.header, proxies.take()) {
            match p.header_name(name) {
                Ok(p) => proxies = Some(p),
                Err(e) => field("header", e.into()),
            }
        }
        problems.extend(
            compiler
                .problems
                .into_iter()
                .map(|p| PolicyProblem { rule: None, ..p }),
        );
        match proxies {
            Some(mut proxies) if problems.is_empty() => {
                if let Some(bytes) = doc.cache_max_bytes {
                    proxies = proxies.cache_max_bytes(bytes);
                }
                Ok(matchers.into_iter().fold(proxies, TrustedProxies::proxy))
            }
            _ => Err(PolicyError { problems }),
        }
    }

    /// Reads trusted proxies from a TOML file.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<TrustedProxies, PolicyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            PolicyError::single(PolicyErrorKind::Io(format!("{}: {e}", path.display())))
        })?;
        TrustedProxies::from_toml_str(&text)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProxiesDoc {
    format: Option<String>,
    header: Option<String>,
    cache_max_bytes: Option<usize>,
    #[serde(default)]
    proxy: Vec<PrincipalDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyDoc {
    #[serde(default)]
    rule: Vec<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDoc {
    name: Option<String>,
    action: Option<String>,
    principal: Option<PrincipalDoc>,
    methods: Option<Strings>,
    path: Option<Strings>,
    path_prefix: Option<Strings>,
    path_glob: Option<Strings>,
    grpc: Option<Strings>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalDoc {
    spiffe_id: Option<Strings>,
    spiffe_trust_domain: Option<Strings>,
    spiffe_path_prefix: Option<Strings>,
    dns: Option<Strings>,
    uri: Option<Strings>,
    email: Option<Strings>,
    ip: Option<Strings>,
    cn: Option<Strings>,
    o: Option<Strings>,
    ou: Option<Strings>,
    issuer: Option<Strings>,
    fingerprint_sha256: Option<Strings>,
    spki_sha256: Option<Strings>,
    serial: Option<Strings>,
    role: Option<Strings>,
    trust_bundle: Option<Strings>,
    any: Option<Vec<PrincipalDoc>>,
    all: Option<Vec<PrincipalDoc>>,
    not: Option<Box<PrincipalDoc>>,
}

/// A string or a list of strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum Strings {
    One(String),
    Many(Vec<String>),
}

impl Strings {
    fn as_slice(&self) -> &[String] {
        match self {
            Strings::One(s) => std::slice::from_ref(s),
            Strings::Many(v) => v,
        }
    }
}

type Leaf = fn(&str) -> Result<Matcher, MatcherError>;
type PathParser = fn(&str) -> Result<PathPattern, MatcherError>;
type Combine = fn(Vec<Matcher>) -> Matcher;

fn spiffe_id(value: &str) -> Result<SpiffeId, MatcherError> {
    SpiffeId::parse(value).map_err(|error| MatcherError::SpiffeId {
        value: value.to_owned(),
        error,
    })
}

fn method(value: &str) -> Result<Method, MatcherError> {
    // `Method::from_bytes("get")` is a valid *extension* method that never equals GET: named
    // as what it spells.
    let method = parse_rule_method(value)?;
    // Policy files take uppercase methods only, extension methods included.
    if !value.bytes().all(|b| b.is_ascii_uppercase() || b == b'-') {
        return Err(MatcherError::Method {
            value: value.to_owned(),
        });
    }
    Ok(method)
}

#[derive(Default)]
struct Compiler {
    problems: Vec<PolicyProblem>,
    location: RuleLocation,
}

impl Compiler {
    fn problem(&mut self, field: Option<String>, kind: PolicyErrorKind) {
        self.problems.push(PolicyProblem {
            rule: Some(self.location.clone()),
            field,
            kind,
        });
    }

    fn rule(&mut self, doc: RuleDoc) -> Option<Rule> {
        let before = self.problems.len();
        let name = doc.name.filter(|n| !n.is_empty());
        if name.is_none() {
            self.problem(Some("name".into()), PolicyErrorKind::MissingName);
        }
        let action = match doc.action.as_deref() {
            Some("allow") => Some(Action::Allow),
            Some("deny") => Some(Action::Deny),
            Some(other) => {
                self.problem(
                    Some("action".into()),
                    PolicyErrorKind::BadAction(other.to_owned()),
                );
                None
            }
            None => {
                self.problem(Some("action".into()), PolicyErrorKind::MissingAction);
                None
            }
        };
        let mut request = RequestMatcher::any();
        for m in self.values("methods", doc.methods.as_ref(), method) {
            request = request.method(m);
        }
        let paths: [(&str, &Option<Strings>, PathParser); 4] = [
            ("path", &doc.path, PathPattern::exact),
            ("path_prefix", &doc.path_prefix, PathPattern::prefix),
            ("path_glob", &doc.path_glob, PathPattern::glob),
            ("grpc", &doc.grpc, PathPattern::grpc),
        ];
        for (field, values, parse) in paths {
            for p in self.values(field, values.as_ref(), parse) {
                request = request.path(p);
            }
        }
        let principal = match &doc.principal {
            Some(p) => self.principal(p, "principal"),
            None => Some(Matcher::any_verified()),
        };
        if self.problems.len() != before {
            return None;
        }
        let (name, action, principal) = (name?, action?, principal?);
        Some(
            Rule::new(Arc::from(name), action)
                .request(request)
                .principal(principal),
        )
    }

    /// Parses every value of a list field, reporting each bad one at `field[i]`.
    fn values<T>(
        &mut self,
        field: &str,
        values: Option<&Strings>,
        parse: impl Fn(&str) -> Result<T, MatcherError>,
    ) -> Vec<T> {
        let Some(values) = values else {
            return Vec::new();
        };
        let values = values.as_slice();
        if values.is_empty() {
            self.problem(Some(field.to_owned()), PolicyErrorKind::EmptyList);
        }
        let mut out = Vec::with_capacity(values.len());
        for (i, value) in values.iter().enumerate() {
            match parse(value) {
                Ok(v) => out.push(v),
                Err(e) => {
                    let at = if values.len() > 1 {
                        format!("{field}[{i}]")
                    } else {
                        field.to_owned()
                    };
                    self.problem(Some(at), e.into());
                }
            }
        }
        out
    }

    fn principal(&mut self, doc: &PrincipalDoc, at: &str) -> Option<Matcher> {
        let before = self.problems.len();
        let leaves: [(&str, &Option<Strings>, Leaf); 15] = [
            (
                "spiffe_trust_domain",
                &doc.spiffe_trust_domain,
                Matcher::spiffe_member_of,
            ),
            ("spiffe_path_prefix", &doc.spiffe_path_prefix, |v| {
                spiffe_id(v).map(Matcher::spiffe_path_prefix)
            }),
            ("dns", &doc.dns, Matcher::dns_name),
            ("uri", &doc.uri, |v| Ok(Matcher::uri(v))),
            ("email", &doc.email, |v| Ok(Matcher::email(v))),
            ("ip", &doc.ip, |v| {
                v.parse::<IpAddr>()
                    .map(Matcher::ip)
                    .map_err(|_| MatcherError::IpAddress {
                        value: v.to_owned(),
                    })
            }),
            ("cn", &doc.cn, |v| Ok(Matcher::common_name(v))),
            ("o", &doc.o, |v| Ok(Matcher::organization(v))),
            ("ou", &doc.ou, |v| Ok(Matcher::organizational_unit(v))),
            ("issuer", &doc.issuer, Matcher::issuer),
            ("fingerprint_sha256", &doc.fingerprint_sha256, |v| {
                parse_sha256_hex(v).map(Matcher::fingerprint_sha256)
            }),
            ("spki_sha256", &doc.spki_sha256, |v| {
                parse_sha256_hex(v).map(Matcher::spki_sha256)
            }),
            ("serial", &doc.serial, Matcher::serial),
            ("role", &doc.role, |v| Ok(Matcher::role(v))),
            ("trust_bundle", &doc.trust_bundle, Matcher::trust_bundle),
        ];
        let mut parts = Vec::new();
        if doc.spiffe_id.is_some() {
            let ids = self.values(
                &format!("{at}.spiffe_id"),
                doc.spiffe_id.as_ref(),
                spiffe_id,
            );
            parts.push(Matcher::spiffe_id_one_of(ids));
        }
        for (key, values, leaf) in leaves {
            if values.is_some() {
                let mut one_of = self.values(&format!("{at}.{key}"), values.as_ref(), leaf);
                parts.push(match one_of.len() {
                    1 => one_of.remove(0),
                    _ => any(one_of),
                });
            }
        }
        let nested: [(&str, &Option<Vec<PrincipalDoc>>, Combine); 2] =
            [("any", &doc.any, any), ("all", &doc.all, all)];
        for (key, list, combine) in nested {
            let Some(list) = list else { continue };
            if list.is_empty() {
                self.problem(Some(format!("{at}.{key}")), PolicyErrorKind::EmptyList);
            }
            let items: Vec<Matcher> = list
                .iter()
                .enumerate()
                .filter_map(|(i, item)| self.principal(item, &format!("{at}.{key}[{i}]")))
                .collect();
            parts.push(combine(items));
        }
        if let Some(inner) = &doc.not {
            parts.extend(self.principal(inner, &format!("{at}.not")).map(not));
        }
        if parts.is_empty() {
            self.problem(Some(at.to_owned()), PolicyErrorKind::EmptyMatcher);
        }
        if self.problems.len() != before {
            return None;
        }
        Some(match parts.len() {
            1 => parts.remove(0),
            _ => all(parts),
        })
    }
}

/// Parses 64 hex digits (colons allowed, as `openssl x509 -fingerprint` prints them).
fn parse_sha256_hex(value: &str) -> Result<[u8; 32], MatcherError> {
    let digits: String = value.chars().filter(|c| *c != ':').collect();
    let mut out = [0u8; 32];
    hex::decode_to_slice(&digits, &mut out).map_err(|_| MatcherError::Sha256 {
        value: value.to_owned(),
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authorize::authorizer::Decision;
    use crate::authorize::canonical::PathRejection;
    use crate::identity::roles::Roles;
    use crate::identity::trust_bundle::TrustBundle;
    use crate::testing::{CertSpec, principal};

    fn problems(toml_text: &str) -> Vec<PolicyProblem> {
        RuleSet::from_toml_str(toml_text)
            .expect_err("policy should be refused")
            .problems
    }

    fn only(toml_text: &str) -> PolicyProblem {
        let mut all = problems(toml_text);
        assert_eq!(all.len(), 1, "{all:#?}");
        all.remove(0)
    }

    #[test]
    fn example_policy_file_loads_and_decides() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/policy.toml");
        let rules = RuleSet::from_toml_file(path).unwrap();
        let none = Roles::none();
        let alice = principal(CertSpec {
            cn: Some("alice"),
            ous: vec!["admins"],
            ..CertSpec::default()
        });
        let bob = principal(CertSpec {
            cn: Some("bob"),
            ous: vec!["users"],
            ..CertSpec::default()
        });
        let admin_workload = principal(CertSpec {
            uris: vec!["spiffe://example.org/admin"],
            ..CertSpec::default()
        });
        let get = Method::GET;
        // Like the flags: everything but /admin goes on to the router (404/405 there).
        for p in [&alice, &bob, &admin_workload] {
            assert!(rules.decide(p, &none, &get, "/healthz").is_allowed());
            assert!(rules.decide(p, &none, &get, "/whoami").is_allowed());
            assert!(
                rules
                    .decide(p, &none, &Method::POST, "/whoami")
                    .is_allowed()
            );
            assert!(rules.decide(p, &none, &get, "/other").is_allowed());
        }
        assert!(
            !rules
                .decide(&bob, &none, &Method::POST, "/admin")
                .is_allowed()
        );
        assert!(!rules.decide(&bob, &none, &get, "/admin/").is_allowed());
        assert!(!rules.decide(&bob, &none, &get, "/admin/x").is_allowed());
        assert!(
            rules
                .decide(&bob, &none, &get, "/administrator")
                .is_allowed()
        );
        assert!(rules.decide(&alice, &none, &get, "/admin").is_allowed());
        assert!(
            rules
                .decide(&admin_workload, &none, &get, "/admin")
                .is_allowed()
        );
        let d = rules.decide(&bob, &none, &get, "/admin");
        assert!(!d.is_allowed());
    }

    #[test]
    fn trust_bundle_key() {
        let rules = RuleSet::from_toml_str(
            r#"
            [[rule]]
            name = "corp admins"
            action = "allow"
            principal = { trust_bundle = "corp", ou = "admins" }

            [[rule]]
            name = "workloads"
            action = "allow"
            principal.trust_bundle = ["example.org", "partner.example"]
            "#,
        )
        .unwrap();
        let admin_of = |bundle| {
            principal(CertSpec {
                ous: vec!["admins"],
                bundle,
                ..CertSpec::default()
            })
        };
        let none = Roles::none();
        let get = Method::GET;
        let corp = admin_of(TrustBundle::Named("corp".into()));
        let partner = admin_of(TrustBundle::Named("partner".into()));
        let federated = admin_of(TrustBundle::SpiffeTrustDomain("partner.example".into()));
        assert!(rules.decide(&corp, &none, &get, "/").is_allowed());
        assert!(!rules.decide(&partner, &none, &get, "/").is_allowed());
        assert!(rules.decide(&federated, &none, &get, "/").is_allowed());
        assert!(
            !rules
                .decide(&admin_of(TrustBundle::Unnamed), &none, &get, "/")
                .is_allowed()
        );

        let p = only(
            r#"
            [[rule]]
            name = "a"
            action = "allow"
            principal.trust_bundle = "two words"
            "#,
        );
        assert_eq!(p.field.as_deref(), Some("principal.trust_bundle"));
        assert!(matches!(
            p.kind,
            PolicyErrorKind::Invalid(MatcherError::TrustBundle { .. })
        ));
    }

    #[test]
    fn unknown_field_is_an_error_with_rule_and_name() {
        let p = only(
            r#"
            [[rule]]
            name = "a"
            action = "allow"
            pathz = "/x"
            "#,
        );
        assert_eq!(
            p.rule,
            Some(RuleLocation {
                index: 0,
                name: Some("a".into())
            })
        );
        assert!(
            matches!(&p.kind, PolicyErrorKind::Schema(m) if m.contains("unknown field `pathz`")),
            "{p}"
        );
    }

    #[test]
    fn unknown_field_in_a_nested_principal_and_at_top_level() {
        let p = only(
            r#"
            [[rule]]
            name = "a"
            action = "allow"
            principal.any = [{ ou = "x" }, { organisational_unit = "y" }]
            "#,
        );
        assert!(p.to_string().contains("organisational_unit"), "{p}");
        let p = only("version = 2\n");
        assert!(
            matches!(&p.kind, PolicyErrorKind::Syntax(m) if m.contains("version")),
            "{p}"
        );
        assert_eq!(p.rule, None);
    }

    #[test]
    fn syntax_error() {
        let p = only("[[rule]\nname = ");
        assert!(matches!(p.kind, PolicyErrorKind::Syntax(_)));
    }

    #[test]
    fn bad_and_missing_action() {
        let p = only("[[rule]]\nname = \"a\"\naction = \"permit\"\n");
        assert_eq!(p.kind, PolicyErrorKind::BadAction("permit".into()));
        assert_eq!(p.field.as_deref(), Some("action"));
        let p = only("[[rule]]\nname = \"a\"\n");
        assert_eq!(p.kind, PolicyErrorKind::MissingAction);
    }

    #[test]
    fn missing_and_duplicate_names() {
        let all = problems(
            r#"
            [[rule]]
            action = "allow"
            [[rule]]
            name = "x"
            action = "allow"
            [[rule]]
            name = "x"
            action = "deny"
            [[rule]]
            name = ""
            action = "deny"
            "#,
        );
        let kinds: Vec<_> = all
            .iter()
            .map(|p| (p.rule.as_ref().map(|r| r.index), &p.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                (Some(0), &PolicyErrorKind::MissingName),
                (Some(2), &PolicyErrorKind::DuplicateName { first_index: 1 }),
                (Some(3), &PolicyErrorKind::MissingName),
            ]
        );
    }

    #[test]
    fn bad_spiffe_ids_glob_and_more_are_all_reported() {
        let err = RuleSet::from_toml_str(
            r#"
            [[rule]]
            name = "ids"
            action = "allow"
            path_glob = "/a/**/b/**"
            principal.spiffe_id = ["spiffe://example.org/ok", "spiffe://Example.org/bad"]
            principal.spiffe_trust_domain = "Bad.Domain"

            [[rule]]
            name = "more"
            action = "deny"
            methods = ["get"]
            path = "relative"
            grpc = "NoMethod"
            principal = { dns = "a.*.org", ip = "localhost", fingerprint_sha256 = "abc", issuer = "XX=1", serial = "zz", any = [] }
            "#,
        )
        .unwrap_err();
        let at: Vec<String> = err
            .problems()
            .iter()
            .map(|p| {
                format!(
                    "{}|{}",
                    p.rule.as_ref().unwrap().index,
                    p.field.as_deref().unwrap_or("")
                )
            })
            .collect();
        assert_eq!(
            at,
            [
                "0|path_glob",
                "0|principal.spiffe_id[1]",
                "0|principal.spiffe_trust_domain",
                "1|methods",
                "1|path",
                "1|grpc",
                "1|principal.dns",
                "1|principal.ip",
                "1|principal.issuer",
                "1|principal.fingerprint_sha256",
                "1|principal.serial",
                "1|principal.any",
            ]
        );
        let kinds = |i: usize| &err.problems()[i].kind;
        assert!(matches!(
            kinds(0),
            PolicyErrorKind::Invalid(MatcherError::Glob { .. })
        ));
        assert!(matches!(
            kinds(1),
            PolicyErrorKind::Invalid(MatcherError::SpiffeId { .. })
        ));
        assert!(matches!(
            kinds(2),
            PolicyErrorKind::Invalid(MatcherError::TrustDomain { .. })
        ));
        assert!(matches!(
            kinds(3),
            PolicyErrorKind::Invalid(MatcherError::NonStandardMethod { standard, .. })
                if *standard == Method::GET
        ));
        assert!(matches!(kinds(11), PolicyErrorKind::EmptyList));
        let text = err.to_string();
        assert!(
            text.starts_with("invalid policy: 12 problems\n  - rule[0] \"ids\": path_glob: "),
            "{text}"
        );
    }

    #[test]
    fn patterns_and_methods_mean_what_requests_will_be() {
        let rules = RuleSet::from_toml_str(
            r#"
            [[rule]]
            name = "private"
            action = "deny"
            methods = ["GET", "PROPFIND"]
            path_prefix = "/static/%70rivate"
            [[rule]]
            name = "rest"
            action = "allow"
            "#,
        )
        .unwrap();
        let p = principal(CertSpec::default());
        let none = Roles::none();
        for method in [Method::GET, Method::HEAD] {
            let d = rules.decide(&p, &none, &method, "/static/private/x");
            assert_eq!(d, Decision::deny("denied by rule \"private\""), "{method}");
        }
        assert!(
            rules
                .decide(&p, &none, &Method::POST, "/static/private/x")
                .is_allowed()
        );
        let all = problems(
            r#"
            [[rule]]
            name = "never"
            action = "deny"
            methods = ["Delete", "purge"]
            path = "/a/../admin"
            path_prefix = ["/ok", "/a%2Fb"]
            path_glob = "/x/%00/**"
            "#,
        );
        let found: Vec<(Option<&str>, &PolicyErrorKind)> =
            all.iter().map(|p| (p.field.as_deref(), &p.kind)).collect();
        assert!(
            matches!(
                found[..],
                [
                    (
                        Some("methods[0]"),
                        PolicyErrorKind::Invalid(MatcherError::NonStandardMethod { .. })
                    ),
                    (
                        Some("methods[1]"),
                        PolicyErrorKind::Invalid(MatcherError::Method { .. })
                    ),
                    (
                        Some("path"),
                        PolicyErrorKind::Invalid(MatcherError::Path {
                            why: PathRejection::DotSegment,
                            ..
                        })
                    ),
                    (
                        Some("path_prefix[1]"),
                        PolicyErrorKind::Invalid(MatcherError::Path {
                            why: PathRejection::EncodedSlash,
                            ..
                        })
                    ),
                    (
                        Some("path_glob"),
                        PolicyErrorKind::Invalid(MatcherError::Path {
                            why: PathRejection::EncodedNul,
                            ..
                        })
                    ),
                ]
            ),
            "{found:#?}"
        );
    }

    #[test]
    fn empty_principal_table_and_wrong_types() {
        let p = only("[[rule]]\nname = \"a\"\naction = \"allow\"\nprincipal = {}\n");
        assert_eq!(p.kind, PolicyErrorKind::EmptyMatcher);
        let p = only("[[rule]]\nname = \"a\"\naction = \"allow\"\npath = 3\n");
        assert!(matches!(p.kind, PolicyErrorKind::Schema(_)), "{p}");
    }

    #[test]
    fn principal_keys_combine_with_and_lists_with_or() {
        let rules = RuleSet::from_toml_str(
            r#"
            [[rule]]
            name = "ops"
            action = "allow"
            principal = { ou = ["ops", "sre"], cn = "alice", not = { role = "suspended" } }
            "#,
        )
        .unwrap();
        assert_eq!(
            rules.rules()[0].to_string(),
            r#"allow "ops": any method any path when all(cn = "alice", any(ou = "ops", ou = "sre"), not(role = "suspended"))"#
        );
    }

    #[test]
    fn sha256_pins_take_hex_with_or_without_colons() {
        let fp = [0xabu8; 32];
        assert_eq!(parse_sha256_hex(&hex::encode(fp)).unwrap(), fp);
        let colons: Vec<String> = fp.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(parse_sha256_hex(&colons.join(":")).unwrap(), fp);
        assert!(parse_sha256_hex("abcd").is_err());
    }

    #[test]
    fn io_error() {
        let err = RuleSet::from_toml_file("/nonexistent/policy.toml").unwrap_err();
        assert!(matches!(err.problems()[0].kind, PolicyErrorKind::Io(_)));
    }

    #[test]
    fn no_rules_denies_everything() {
        let rules = RuleSet::from_toml_str("").unwrap();
        let p = principal(CertSpec::default());
        assert!(
            !rules
                .decide(&p, &Roles::none(), &Method::GET, "/")
                .is_allowed()
        );
    }
}

#[cfg(test)]
mod reload_tests {
    use super::*;
    use crate::authorize::reloadable::ReloadablePolicy;
    use crate::identity::roles::Roles;
    use crate::testing::shared_principal;
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

    #[test]
    fn trusted_proxies_from_toml() {
        use crate::identity::roles::Roles;
        use crate::identity::trust_bundle::TrustBundle;
        use crate::testing::{CertSpec, principal};
        let proxies = TrustedProxies::from_toml_str(
            r#"
            format = "rfc9440"
            header = "X-Client-Cert"
            cache_max_bytes = 4096
            [[proxy]]
            cn = "edge"
            trust_bundle = "infra"
            [[proxy]]
            spiffe_id = ["spiffe://example.org/lb", "spiffe://example.org/lb2"]
            "#,
        )
        .unwrap();
        assert_eq!(proxies.format(), ForwardedCertFormat::Rfc9440);
        let names: Vec<&str> = proxies
            .header()
            .header_names()
            .map(|n| n.as_str())
            .collect();
        assert_eq!(names, ["x-client-cert", "x-client-cert-chain"]);
        assert_eq!(proxies.cache_byte_limit(), 4096);
        let none = Roles::none();
        let edge = |bundle| {
            principal(CertSpec {
                cn: Some("edge"),
                bundle,
                ..CertSpec::default()
            })
        };
        assert!(proxies.is_proxy(&edge(TrustBundle::Named("infra".into())), &none));
        assert!(!proxies.is_proxy(&edge(TrustBundle::Unnamed), &none));
        let lb = principal(CertSpec {
            uris: vec!["spiffe://example.org/lb2"],
            ..CertSpec::default()
        });
        assert!(proxies.is_proxy(&lb, &none));
    }

    #[test]
    fn trusted_proxies_problems_are_all_reported_with_their_field() {
        let err = TrustedProxies::from_toml_str(
            r#"
            format = "pem"
            [[proxy]]
            dns = "a.*.org"
            [[proxy]]
            "#,
        )
        .unwrap_err();
        let at: Vec<(Option<&str>, &PolicyErrorKind)> = err
            .problems()
            .iter()
            .map(|p| (p.field.as_deref(), &p.kind))
            .collect();
        assert!(
            matches!(
                at[..],
                [
                    (Some("format"), PolicyErrorKind::Forwarded(_)),
                    (Some("proxy[0].dns"), PolicyErrorKind::Invalid(_)),
                    (Some("proxy[1]"), PolicyErrorKind::EmptyMatcher),
                ]
            ),
            "{err}"
        );
        assert!(err.problems().iter().all(|p| p.rule.is_none()));

        let err = TrustedProxies::from_toml_str("header = \"Host\"\n").unwrap_err();
        let kinds: Vec<&PolicyErrorKind> = err.problems().iter().map(|p| &p.kind).collect();
        assert_eq!(
            kinds,
            [&PolicyErrorKind::MissingFormat, &PolicyErrorKind::NoProxy]
        );
        let err = TrustedProxies::from_toml_str(
            "format = \"nginx\"\nheader = \"Host\"\n[[proxy]]\ncn = \"x\"\n",
        )
        .unwrap_err();
        assert_eq!(err.problems()[0].field.as_deref(), Some("header"));
        let err = TrustedProxies::from_toml_str("format = \"nginx\"\nproxies = 1\n").unwrap_err();
        assert!(
            matches!(err.problems()[0].kind, PolicyErrorKind::Syntax(_)),
            "{err}"
        );
    }
}
