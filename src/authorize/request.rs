//! [`RequestMatcher`] and [`PathPattern`]: which requests a rule is about.

use std::fmt;

use http::Method;

use crate::authorize::canonical::{
    MethodError, PathNormalization, canonicalize_pattern, check_rule_method,
};
use crate::authorize::error::MatcherError;

/// A condition on the request's method and path. Empty lists mean "any".
///
/// Methods are compared case-sensitively, as HTTP says, and a matcher that lists `GET` also
/// matches `HEAD` (axum and hyper-based servers answer `HEAD` with the `GET` handler). A
/// method that is another spelling of a standard one (`delete`) is refused when the matcher
/// is put in a [`RuleSet`](crate::authorize::RuleSet) ([`check`](Self::check)): it could
/// never match, since [`MtlsAuthLayer`](crate::MtlsAuthLayer) refuses such requests.
///
/// Paths are compared with the request's **canonical** path (see [`PathPattern`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestMatcher {
    methods: Vec<Method>,
    paths: Vec<PathPattern>,
}

impl RequestMatcher {
    /// Every request.
    pub fn any() -> Self {
        RequestMatcher::default()
    }

    /// Also accept `method` (the first call restricts to it; `GET` also accepts `HEAD`).
    pub fn method(mut self, method: Method) -> Self {
        self.methods.push(method);
        self
    }

    /// Also accept paths matching `pattern` (the first call restricts to it).
    pub fn path(mut self, pattern: PathPattern) -> Self {
        self.paths.push(pattern);
        self
    }

    /// Whether a request with `method` and the canonical `path` matches.
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        (self.methods.is_empty()
            || self.methods.contains(method)
            || (method == Method::HEAD && self.methods.contains(&Method::GET)))
            && (self.paths.is_empty() || self.paths.iter().any(|p| p.matches(path)))
    }

    /// `Err` when a method is another spelling of a standard one (`delete`), which no request
    /// that reaches an authorizer has.
    pub fn check(&self) -> Result<(), MatcherError> {
        self.methods
            .iter()
            .try_for_each(|method| check_rule_method(method).map_err(MatcherError::from))
    }
}

impl From<MethodError> for MatcherError {
    fn from(error: MethodError) -> Self {
        match error {
            MethodError::Invalid { value } => MatcherError::Method { value },
            MethodError::NonStandardSpelling { value, standard } => {
                MatcherError::NonStandardMethod { value, standard }
            }
        }
    }
}

impl fmt::Display for RequestMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.methods.is_empty() {
            f.write_str("any method")?;
        } else {
            for (i, m) in self.methods.iter().enumerate() {
                f.write_str(if i == 0 { "" } else { "|" })?;
                f.write_str(m.as_str())?;
            }
        }
        if self.paths.is_empty() {
            return f.write_str(" any path");
        }
        for (i, p) in self.paths.iter().enumerate() {
            f.write_str(if i == 0 { " " } else { " or " })?;
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// One way to match a request path.
///
/// Patterns match the request's **canonical** path, the one [`MtlsAuthLayer`](crate::MtlsAuthLayer)
/// computes once per request (see [`canonical`](crate::authorize::canonical)), and are read the
/// same way: `/static/%70rivate` and `/static//private` mean `/static/private`, `/café` means
/// `/caf%C3%A9`. A pattern that no canonical path can match (`/a/../b`, `/a%2Fb` while
/// requests with `%2F` are refused, `/a?b`, a relative path) is an error. The constructors read
/// patterns for the layer's default settings; the `_with` ones for other
/// [`PathNormalization`]s (pass the layer's).
///
/// Matching is on segment boundaries:
///
/// | pattern | matches | does not match |
/// |---|---|---|
/// | `PathPattern::exact("/admin")` | `/admin` | `/admin/`, `/admin/x` |
/// | `PathPattern::prefix("/api")` | `/api`, `/api/`, `/api/x/y` | `/apix` |
/// | `PathPattern::glob("/api/*/items/**")` | `/api/v1/items`, `/api/v1/items/3/x` | `/api/items`, `/api/v1/v2/items` |
/// | `PathPattern::grpc("pkg.Orders/*")` | `/pkg.Orders/Get` | `/pkg.OrdersAdmin/Get` |
///
/// In a glob, `*` is exactly one non-empty segment and `**` any number of segments (at most one
/// `**` per glob, so matching stays linear in the path's length).
///
/// ```
/// use http::Method;
/// use tower_mtls::authorize::{PathPattern, RequestMatcher};
///
/// let reads = RequestMatcher::any()
///     .method(Method::GET)
///     .path(PathPattern::prefix("/api")?);
/// assert!(reads.matches(&Method::GET, "/api/orders/1"));
/// assert!(!reads.matches(&Method::GET, "/apix"));
/// assert!(!reads.matches(&Method::POST, "/api/orders"));
/// # Ok::<(), tower_mtls::authorize::MatcherError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPattern(Kind);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Exact(Box<str>),
    Prefix(Box<str>),
    Glob {
        source: Box<str>,
        segments: Box<[Segment]>,
    },
    Grpc {
        service: Box<str>,
        method: Option<Box<str>>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    One,
    AnyDepth,
}

/// `pattern` as the canonical path it means under `paths`, or why no request can match it.
fn canonical_pattern(pattern: &str, paths: &PathNormalization) -> Result<Box<str>, MatcherError> {
    canonicalize_pattern(pattern, paths)
        .map(Into::into)
        .map_err(|why| MatcherError::Path {
            value: pattern.to_owned(),
            why,
        })
}

impl PathPattern {
    /// The path equals `path`.
    pub fn exact(path: &str) -> Result<Self, MatcherError> {
        Self::exact_with(path, &PathNormalization::strict())
    }

    /// The path equals `path`, read for requests canonicalized under `paths`.
    pub fn exact_with(path: &str, paths: &PathNormalization) -> Result<Self, MatcherError> {
        Ok(PathPattern(Kind::Exact(canonical_pattern(path, paths)?)))
    }

    /// The path is `prefix` or below it, on segment boundaries (a trailing `/` is ignored).
    pub fn prefix(prefix: &str) -> Result<Self, MatcherError> {
        Self::prefix_with(prefix, &PathNormalization::strict())
    }

    /// [`prefix`](Self::prefix), read for requests canonicalized under `paths`.
    pub fn prefix_with(prefix: &str, paths: &PathNormalization) -> Result<Self, MatcherError> {
        let canonical = canonical_pattern(prefix, paths)?;
        Ok(PathPattern(Kind::Prefix(
            canonical.trim_end_matches('/').into(),
        )))
    }

    /// A glob of whole segments: `*` is one segment, `**` any number (at most one `**`).
    pub fn glob(glob: &str) -> Result<Self, MatcherError> {
        Self::glob_with(glob, &PathNormalization::strict())
    }

    /// [`glob`](Self::glob), read for requests canonicalized under `paths`.
    pub fn glob_with(glob: &str, paths: &PathNormalization) -> Result<Self, MatcherError> {
        let fail = |why| MatcherError::Glob {
            value: glob.to_owned(),
            why,
        };
        if !glob.starts_with('/') {
            return Err(fail("must start with '/'"));
        }
        let canonical = canonical_pattern(glob, paths)?;
        let segments: Box<[Segment]> = canonical
            .split('/')
            .skip(1)
            .map(|s| match s {
                "*" => Ok(Segment::One),
                "**" => Ok(Segment::AnyDepth),
                s if s.contains('*') => Err(fail("'*' and '**' must be whole segments")),
                s => Ok(Segment::Literal(s.into())),
            })
            .collect::<Result<_, _>>()?;
        if segments
            .iter()
            .filter(|s| matches!(s, Segment::AnyDepth))
            .count()
            > 1
        {
            return Err(fail("at most one '**' per glob"));
        }
        Ok(PathPattern(Kind::Glob {
            source: glob.into(),
            segments,
        }))
    }

    /// A gRPC method, `package.Service/Method` or `package.Service/*` (leading `/` optional).
    pub fn grpc(method: &str) -> Result<Self, MatcherError> {
        let fail = |why| MatcherError::Grpc {
            value: method.to_owned(),
            why,
        };
        let full = method.strip_prefix('/').unwrap_or(method);
        let (service, name) = full
            .split_once('/')
            .ok_or(fail("expected package.Service/Method"))?;
        let ident = |s: &str, dots: bool| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || (dots && b == b'.'))
        };
        if !ident(service, true) || service.starts_with('.') || service.ends_with('.') {
            return Err(fail("bad service name"));
        }
        let method = match name {
            "*" => None,
            n if ident(n, false) => Some(n.into()),
            _ => return Err(fail("bad method name (or '*')")),
        };
        Ok(PathPattern(Kind::Grpc {
            service: service.into(),
            method,
        }))
    }

    /// Whether `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        match &self.0 {
            Kind::Exact(p) => path == &**p,
            Kind::Prefix(p) => match path.strip_prefix(&**p) {
                Some(rest) => rest.is_empty() || rest.starts_with('/') || p.is_empty(),
                None => false,
            },
            Kind::Glob { segments, .. } => {
                path.starts_with('/') && glob_matches(segments, path[1..].split('/'))
            }
            Kind::Grpc { service, method } => {
                let Some((s, m)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
                    return false;
                };
                s == &**service
                    && !m.is_empty()
                    && !m.contains('/')
                    && method.as_deref().is_none_or(|want| m == want)
            }
        }
    }
}

/// Matches whole segments; `**` tries every split point, which is linear with one `**`.
fn glob_matches(pattern: &[Segment], mut path: std::str::Split<'_, char>) -> bool {
    match pattern.split_first() {
        None => path.next().is_none(),
        Some((Segment::Literal(lit), rest)) => {
            path.next() == Some(&**lit) && glob_matches(rest, path)
        }
        Some((Segment::One, rest)) => {
            path.next().is_some_and(|s| !s.is_empty()) && glob_matches(rest, path)
        }
        Some((Segment::AnyDepth, rest)) => loop {
            if glob_matches(rest, path.clone()) {
                return true;
            }
            if path.next().is_none() {
                return false;
            }
        },
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Exact(p) => write!(f, "path = {p:?}"),
            Kind::Prefix(p) if p.is_empty() => f.write_str("path_prefix = \"/\""),
            Kind::Prefix(p) => write!(f, "path_prefix = {p:?}"),
            Kind::Glob { source, .. } => write!(f, "path_glob = {source:?}"),
            Kind::Grpc { service, method } => {
                write!(
                    f,
                    "grpc = \"{service}/{}\"",
                    method.as_deref().unwrap_or("*")
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authorize::canonical::{EscapedSlashesAction, MergeSlashes, PathRejection};

    #[test]
    fn exact() {
        let p = PathPattern::exact("/admin").unwrap();
        assert!(p.matches("/admin"));
        assert!(!p.matches("/admin/"));
        assert!(!p.matches("/admin/x"));
        assert!(!p.matches("/Admin"));
        assert!(PathPattern::exact("admin").is_err());
        assert!(PathPattern::exact("/a?b").is_err());
    }

    #[test]
    fn prefix_on_segment_boundaries() {
        let p = PathPattern::prefix("/api").unwrap();
        for ok in ["/api", "/api/", "/api/x", "/api/x/y"] {
            assert!(p.matches(ok), "{ok}");
        }
        for no in ["/apix", "/ap", "/", "/x/api"] {
            assert!(!p.matches(no), "{no}");
        }
        assert_eq!(p, PathPattern::prefix("/api/").unwrap());
        let root = PathPattern::prefix("/").unwrap();
        assert!(root.matches("/") && root.matches("/anything/at/all"));
    }

    #[test]
    fn glob() {
        let p = PathPattern::glob("/api/*/items/**").unwrap();
        for ok in ["/api/v1/items", "/api/v1/items/3", "/api/v1/items/3/x"] {
            assert!(p.matches(ok), "{ok}");
        }
        for no in [
            "/api/items",
            "/api//items",
            "/api/v1/v2/items",
            "/api/v1/itemsx",
        ] {
            assert!(!p.matches(no), "{no}");
        }
        let mid = PathPattern::glob("/a/**/z").unwrap();
        assert!(mid.matches("/a/z") && mid.matches("/a/b/c/z"));
        assert!(!mid.matches("/a/b/c/zz"));
        let one = PathPattern::glob("/users/*").unwrap();
        assert!(one.matches("/users/42") && !one.matches("/users/42/x") && !one.matches("/users/"));
        for bad in ["api/*", "/a*", "/a/**/b/**", "/x/*y"] {
            assert!(
                matches!(PathPattern::glob(bad), Err(MatcherError::Glob { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn grpc() {
        let m = PathPattern::grpc("pkg.Orders/Get").unwrap();
        assert!(m.matches("/pkg.Orders/Get"));
        assert!(!m.matches("/pkg.Orders/GetAll"));
        assert!(!m.matches("/pkg.OrdersAdmin/Get"));
        assert!(!m.matches("/pkg.Orders/Get/x"));
        let svc = PathPattern::grpc("/pkg.Orders/*").unwrap();
        assert!(svc.matches("/pkg.Orders/List"));
        assert!(!svc.matches("/pkg.Orders/"));
        assert!(!svc.matches("/pkg.Ordersx/List"));
        for bad in [
            "pkg.Orders",
            "/Get",
            "pkg.Orders/",
            ".pkg/Get",
            "pkg.O/G*",
            "a b/Get",
        ] {
            assert!(
                matches!(PathPattern::grpc(bad), Err(MatcherError::Grpc { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn patterns_mean_the_canonical_path() {
        // Spellings requests may not use mean their canonical form.
        let p = PathPattern::exact("/static/%70rivate").unwrap();
        assert!(p.matches("/static/private"));
        assert_eq!(p, PathPattern::exact("/static//private").unwrap());
        assert_eq!(p.to_string(), r#"path = "/static/private""#);
        let p = PathPattern::prefix("//api//").unwrap();
        assert!(p.matches("/api/x") && !p.matches("/apix"));
        assert!(PathPattern::exact("/café").unwrap().matches("/caf%C3%A9"));
        let g = PathPattern::glob("/api/*/%73ecret/**").unwrap();
        assert!(g.matches("/api/v1/secret/x"));
        // What no request can have is an error.
        for (bad, why) in [
            ("/a/../b", PathRejection::DotSegment),
            ("/a/%2e", PathRejection::DotSegment),
            ("/a%2Fb", PathRejection::EncodedSlash),
            ("/a;b", PathRejection::PathParameter),
            ("/a?b", PathRejection::InvalidCharacter('?')),
            ("/a#b", PathRejection::InvalidCharacter('#')),
            ("admin", PathRejection::NotAbsolute),
            ("/a%zz", PathRejection::InvalidPercentEncoding),
        ] {
            for result in [
                PathPattern::exact(bad),
                PathPattern::prefix(bad),
                PathPattern::glob(bad),
            ] {
                assert!(
                    matches!(
                        &result,
                        Err(MatcherError::Path { why: w, .. }) if *w == why
                    ) || (bad == "admin" && matches!(result, Err(MatcherError::Glob { .. }))),
                    "{bad}: {result:?}"
                );
            }
        }
        // Under settings that keep a spelling, patterns keep it too.
        let keep = PathNormalization::strict()
            .merge_slashes(MergeSlashes::KeepUnchanged)
            .path_with_escaped_slashes_action(EscapedSlashesAction::KeepUnchanged);
        assert!(
            PathPattern::exact_with("/a%2fb", &keep)
                .unwrap()
                .matches("/a%2Fb")
        );
        let kept = PathPattern::prefix_with("/a//b", &keep).unwrap();
        assert!(kept.matches("/a//b/c") && !kept.matches("/a/b"));
        assert!(
            PathPattern::glob_with("/x/%2F/*", &keep)
                .unwrap()
                .matches("/x/%2F/y")
        );
    }

    #[test]
    fn get_covers_head_and_methods_are_case_sensitive() {
        let get = RequestMatcher::any().method(Method::GET);
        assert!(get.matches(&Method::GET, "/") && get.matches(&Method::HEAD, "/"));
        assert!(!get.matches(&Method::POST, "/"));
        let lower = Method::from_bytes(b"get").unwrap();
        assert!(!get.matches(&lower, "/"));
        let head = RequestMatcher::any().method(Method::HEAD);
        assert!(!head.matches(&Method::GET, "/"));
        assert!(get.check().is_ok());
        assert!(matches!(
            RequestMatcher::any().method(lower).check(),
            Err(MatcherError::NonStandardMethod { standard, .. }) if *standard == Method::GET
        ));
    }

    #[test]
    fn request_matcher_lists_are_one_of() {
        let m = RequestMatcher::any()
            .method(Method::GET)
            .method(Method::HEAD)
            .path(PathPattern::exact("/healthz").unwrap())
            .path(PathPattern::exact("/whoami").unwrap());
        assert!(m.matches(&Method::HEAD, "/whoami"));
        assert!(!m.matches(&Method::POST, "/whoami"));
        assert!(!m.matches(&Method::GET, "/admin"));
        assert!(RequestMatcher::any().matches(&Method::DELETE, "/x"));
        assert_eq!(
            m.to_string(),
            r#"GET|HEAD path = "/healthz" or path = "/whoami""#
        );
    }
}
