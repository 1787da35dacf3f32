//! SPIFFE IDs, parsed and validated per the SPIFFE ID specification.

use std::fmt;
use std::str::FromStr;

const SCHEME_PREFIX: &str = "spiffe://";
/// Longest SPIFFE ID the spec allows, in bytes.
pub const MAX_SPIFFE_ID_LEN: usize = 2048;
/// Longest trust domain name the spec allows, in bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// A validated SPIFFE ID.
///
/// A SPIFFE ID is `spiffe://<trust-domain><path>`. The rules enforced here are the ones of the
/// [SPIFFE ID spec](https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md) and of
/// go-spiffe's parser: lowercase scheme, a trust domain of `[a-z0-9._-]` only (no uppercase, no
/// port, no user info), a path of non-empty segments of `[A-Za-z0-9._-]` that are not `.` or
/// `..`, no trailing slash, no query, no fragment, no percent-encoding, and at most 2048 bytes in
/// all (255 for the trust domain).
///
/// ```
/// use tower_mtls::SpiffeId;
///
/// let id: SpiffeId = "spiffe://example.org/ns/prod/sa/api".parse()?;
/// assert_eq!(id.trust_domain(), "example.org");
/// assert_eq!(id.path(), "/ns/prod/sa/api");
/// assert_eq!(id.segments().collect::<Vec<_>>(), ["ns", "prod", "sa", "api"]);
///
/// assert!("spiffe://Example.org/api".parse::<SpiffeId>().is_err());
/// assert!("spiffe://example.org/api/".parse::<SpiffeId>().is_err());
/// # Ok::<(), tower_mtls::SpiffeIdError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    id: Box<str>,
    // Byte offset where the path starts (== id.len() when the path is empty).
    path_start: usize,
}

/// Why a string is not a valid SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    /// The string is empty.
    #[error("SPIFFE ID is empty")]
    Empty,
    /// Longer than [`MAX_SPIFFE_ID_LEN`].
    #[error("SPIFFE ID is {0} bytes long; at most 2048 are allowed")]
    TooLong(usize),
    /// The string does not start with `spiffe://` (lowercase).
    #[error("SPIFFE ID must start with \"spiffe://\"")]
    WrongScheme,
    /// Nothing between `spiffe://` and the path.
    #[error("SPIFFE ID has no trust domain")]
    MissingTrustDomain,
    /// Longer than [`MAX_TRUST_DOMAIN_LEN`].
    #[error("SPIFFE trust domain is {0} bytes long; at most 255 are allowed")]
    TrustDomainTooLong(usize),
    /// A character outside `[a-z0-9._-]` in the trust domain (uppercase, `:`, `@`, ...).
    #[error(
        "SPIFFE trust domain contains {0:?}; only lowercase letters, digits, '.', '-' and '_' are allowed"
    )]
    BadTrustDomainChar(char),
    /// A character outside `[A-Za-z0-9._-]` in the path (`?`, `#`, `%`, ...).
    #[error(
        "SPIFFE ID path contains {0:?}; only letters, digits, '.', '-' and '_' are allowed in segments"
    )]
    BadPathChar(char),
    /// `//` in the path.
    #[error("SPIFFE ID path has an empty segment")]
    EmptySegment,
    /// A `.` or `..` segment.
    #[error("SPIFFE ID path has a '.' or '..' segment")]
    DotSegment,
    /// The path ends with `/`.
    #[error("SPIFFE ID path ends with '/'")]
    TrailingSlash,
}

impl SpiffeId {
    /// Parses and validates a SPIFFE ID.
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong(s.len()));
        }
        let rest = s
            .strip_prefix(SCHEME_PREFIX)
            .ok_or(SpiffeIdError::WrongScheme)?;
        let td_len = rest.find('/').unwrap_or(rest.len());
        let (trust_domain, path) = rest.split_at(td_len);
        validate_trust_domain(trust_domain)?;
        validate_path(path)?;
        Ok(SpiffeId {
            id: s.into(),
            path_start: SCHEME_PREFIX.len() + td_len,
        })
    }

    /// The whole ID, `spiffe://trust.domain/path`.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The trust domain, e.g. `example.org`.
    pub fn trust_domain(&self) -> &str {
        &self.id[SCHEME_PREFIX.len()..self.path_start]
    }

    /// The path with its leading `/`, or `""` when the ID names the trust domain itself.
    pub fn path(&self) -> &str {
        &self.id[self.path_start..]
    }

    /// The path segments, without slashes.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.path().split('/').skip(1)
    }

    /// Whether this ID is in `trust_domain` (an exact, case-sensitive comparison: trust domains
    /// are lowercase by construction).
    pub fn is_member_of(&self, trust_domain: &str) -> bool {
        self.trust_domain() == trust_domain
    }
}

pub(crate) fn validate_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong(td.len()));
    }
    match td
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_'))
    {
        Some(c) => Err(SpiffeIdError::BadTrustDomainChar(c)),
        None => Ok(()),
    }
}

fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    if let Some(rest) = path.strip_suffix('/') {
        // `/` alone and `/a/` are a trailing slash; `/a//` is an empty segment first.
        if rest.ends_with('/') {
            return Err(SpiffeIdError::EmptySegment);
        }
        return Err(SpiffeIdError::TrailingSlash);
    }
    for segment in path.split('/').skip(1) {
        if segment.is_empty() {
            return Err(SpiffeIdError::EmptySegment);
        }
        if segment == "." || segment == ".." {
            return Err(SpiffeIdError::DotSegment);
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_'))
        {
            return Err(SpiffeIdError::BadPathChar(c));
        }
    }
    Ok(())
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SpiffeId::parse(s)
    }
}

impl TryFrom<&str> for SpiffeId {
    type Error = SpiffeIdError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        SpiffeId::parse(s)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({:?})", &*self.id)
    }
}

impl AsRef<str> for SpiffeId {
    fn as_ref(&self) -> &str {
        &self.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids() {
        let id = SpiffeId::parse("spiffe://example.org").unwrap();
        assert_eq!(id.trust_domain(), "example.org");
        assert_eq!(id.path(), "");
        assert_eq!(id.segments().count(), 0);

        let id = SpiffeId::parse("spiffe://td-1_x.example/ns/Prod/sa/a.b-c_d").unwrap();
        assert_eq!(id.trust_domain(), "td-1_x.example");
        assert_eq!(id.path(), "/ns/Prod/sa/a.b-c_d");
        assert_eq!(
            id.segments().collect::<Vec<_>>(),
            ["ns", "Prod", "sa", "a.b-c_d"]
        );
        assert!(id.is_member_of("td-1_x.example"));
        assert!(!id.is_member_of("example"));
        // dots inside a segment are fine, only whole-segment dots are not
        assert!(SpiffeId::parse("spiffe://example.org/.../a..b").is_ok());
    }

    #[test]
    fn invalid_ids() {
        use SpiffeIdError::*;
        let cases: &[(&str, SpiffeIdError)] = &[
            ("", Empty),
            ("https://example.org/a", WrongScheme),
            ("SPIFFE://example.org/a", WrongScheme),
            ("spiffe:/example.org/a", WrongScheme),
            ("spiffe://", MissingTrustDomain),
            ("spiffe:///path", MissingTrustDomain),
            ("spiffe://Example.org/a", BadTrustDomainChar('E')),
            ("spiffe://example.org:8080/a", BadTrustDomainChar(':')),
            ("spiffe://user@example.org/a", BadTrustDomainChar('@')),
            ("spiffe://example.org/", TrailingSlash),
            ("spiffe://example.org/a/", TrailingSlash),
            ("spiffe://example.org//a", EmptySegment),
            ("spiffe://example.org/a//b", EmptySegment),
            ("spiffe://example.org/a//", EmptySegment),
            ("spiffe://example.org/./a", DotSegment),
            ("spiffe://example.org/a/..", DotSegment),
            ("spiffe://example.org/a?x=1", BadPathChar('?')),
            ("spiffe://example.org/a#frag", BadPathChar('#')),
            ("spiffe://example.org/a%20b", BadPathChar('%')),
            ("spiffe://example.org/caf\u{e9}", BadPathChar('\u{e9}')),
            ("spiffe://example.org?x", BadTrustDomainChar('?')),
        ];
        for (input, want) in cases {
            assert_eq!(SpiffeId::parse(input).as_ref(), Err(want), "{input:?}");
        }
    }

    #[test]
    fn length_limits() {
        let base = "spiffe://example.org/";
        let ok = format!("{base}{}", "a".repeat(MAX_SPIFFE_ID_LEN - base.len()));
        assert_eq!(ok.len(), 2048);
        assert!(SpiffeId::parse(&ok).is_ok());
        let long = format!("{ok}b");
        assert_eq!(SpiffeId::parse(&long), Err(SpiffeIdError::TooLong(2049)));

        let td = "a".repeat(256);
        assert_eq!(
            SpiffeId::parse(&format!("spiffe://{td}/x")),
            Err(SpiffeIdError::TrustDomainTooLong(256))
        );
    }

    #[test]
    fn display_round_trips() {
        let s = "spiffe://example.org/ns/a";
        assert_eq!(SpiffeId::parse(s).unwrap().to_string(), s);
    }
}
