//! Canonical request paths and method spellings: what a policy matches is what the
//! application serves.
//!
//! Routers and file servers read one request path in different ways: axum matches route
//! literals against the raw bytes and percent-decodes `{param}`s, tower-http's `ServeDir`
//! percent-decodes everything and collapses `//` and `/./`, servlet containers cut `;params`
//! off. A policy that matched the raw bytes would let `/static/%70rivate/x` or
//! `/static//private/x` walk past a DENY on `/static/private` in front of `ServeDir`.
//! [`canonicalize`] gives the one spelling a policy should match, and refuses (a
//! [`PathRejection`], answered with 400) every path whose meaning depends on who reads it.
//!
//! [`MtlsAuthLayer`](crate::MtlsAuthLayer) runs it once per request, with the settings of
//! [`MtlsAuthLayer::path_normalization`](crate::MtlsAuthLayer::path_normalization) (strict
//! unless you choose otherwise): the authorizer sees the result as
//! [`AuthContext::path`](crate::AuthContext::path), a refused path gets 400 (gRPC
//! `INVALID_ARGUMENT`) and one log event, and the inner service gets the request unchanged.
//! [`PathPattern`](crate::authorize::PathPattern)s and policy files read their patterns with
//! [`canonicalize_pattern`].
//!
//! ```
//! use std::borrow::Cow;
//! use tower_mtls::authorize::canonical::{
//!     MergeSlashes, PathNormalization, PathRejection, canonicalize, canonicalize_pattern,
//! };
//!
//! let strict = PathNormalization::default();
//! // The common case costs nothing: an already canonical path is borrowed.
//! assert!(matches!(canonicalize("/static/app.js", &strict), Ok(Cow::Borrowed(_))));
//! // Percent-encodings that stay are written with uppercase hex.
//! assert_eq!(canonicalize("/caf%c3%a9", &strict)?, "/caf%C3%A9");
//! // Spellings that routers and file servers read differently are refused.
//! assert_eq!(canonicalize("/static/%70rivate/x", &strict), Err(PathRejection::EncodedUnreserved));
//! assert_eq!(canonicalize("/static//private/x", &strict), Err(PathRejection::EmptySegment));
//! assert_eq!(canonicalize("/static/private%2Fx", &strict), Err(PathRejection::EncodedSlash));
//! assert_eq!(canonicalize("/pub/..%2fadmin", &strict), Err(PathRejection::DotSegment));
//!
//! // In front of services that decode before they route (ServeDir), decoding is sound.
//! let decoding = strict
//!     .merge_slashes(MergeSlashes::Merge)
//!     .encoded_unreserved(tower_mtls::authorize::canonical::EncodedUnreserved::Decode);
//! assert_eq!(canonicalize("/static//%70rivate/x", &decoding)?, "/static/private/x");
//!
//! // A policy pattern means what the canonical request path will be.
//! assert_eq!(canonicalize_pattern("/static//%70rivate", &strict)?, "/static/private");
//! assert_eq!(canonicalize_pattern("/café", &strict)?, "/caf%C3%A9");
//! # Ok::<(), PathRejection>(())
//! ```
//!
//! # What is canonical
//! A canonical path is `""` (authority-form, `CONNECT host:port`), `"*"` (asterisk-form,
//! `OPTIONS *`), or an RFC 3986 absolute path: `/`-separated segments of unreserved
//! characters (`A-Z a-z 0-9 - . _ ~`), sub-delimiters (`! $ & ' ( ) * + , ; =`), `:`, `@`
//! and percent-encodings with uppercase hex, with
//!
//! - no `.` or `..` segment, however spelled (`%2e`, `.%2E`), also between encoded slashes
//!   (`/a/..%2Fb`);
//! - no empty segment (`//`) and no percent-encoded unreserved character (`%70` for `p`),
//!   unless [configured](PathNormalization) otherwise;
//! - no `\`, `%2F` or `%5C` (unless configured), no `%00` or other encoded control character
//!   (C0, DEL, C1), no invalid percent-encoding (`%`, `%4`, `%zz`), no percent-encoded bytes
//!   that are not UTF-8 (`%FF`, a lone `%C3`);
//! - no `;` or `%3B` (unless configured);
//! - no character that RFC 3986 does not allow in a path, even where `http::Uri` lets it
//!   through: raw non-ASCII (`é`; clients send `%C3%A9`), `"`, `{`, `}`, `[`, `]`, `^`, `|`.
//!
//! A trailing slash is kept: `/admin/` is a different route from `/admin` for axum, and
//! `ServeDir` answers `/x/` with `x/index.html`, not with the file `x`.
//!
//! # Why refuse rather than normalize
//! The differential tests (`tests/canonical_paths.rs`) send every accepted path to axum and
//! `ServeDir` twice, as sent and canonicalized, and require the same route, parameters and
//! bytes. Two normalizations fail that test against axum, because axum matches route literals
//! against raw bytes: `/%61dmin` is a 404 to axum but `/admin` after decoding, and
//! `/static//private/x` reaches `/static/{*rest}` with `rest = "/private/x"` but
//! `/static/private/{*rest}` after merging. A router that prefers a literal route over a
//! parameter then runs a handler the policy never saw. Keeping those spellings instead fails
//! against `ServeDir`, which serves `private/x` for both. No single spelling is right for both
//! readers, so the default refuses them: RFC 3986 tells clients never to encode unreserved
//! characters, and browsers, curl and HTTP libraries do not send `//` or dot segments unless
//! asked to.
//!
//! # Choices, in the manner of Envoy
//! [`PathNormalization::default()`] is the safe choice; every other setting is safe only for
//! some applications:
//!
//! | setting | default | other choices, and when they are safe |
//! |---|---|---|
//! | [`merge_slashes`](PathNormalization::merge_slashes) | [`Reject`](MergeSlashes::Reject) | `Merge` (Envoy `merge_slashes: true`) when every service behind the layer collapses `//` (ServeDir); `KeepUnchanged` (Envoy's default) when none does (axum alone) |
//! | [`path_with_escaped_slashes_action`](PathNormalization::path_with_escaped_slashes_action) | [`RejectRequest`](EscapedSlashesAction::RejectRequest) | `KeepUnchanged` when `%2F`/`%5C` are data in a `{param}` and no service decodes them into separators (not ServeDir) |
//! | [`encoded_unreserved`](PathNormalization::encoded_unreserved) | [`Reject`](EncodedUnreserved::Reject) | `Decode` (half of Envoy's `normalize_path`) when every service decodes before it routes (ServeDir, handlers that serve from a decoded `{*rest}`) |
//! | [`dot_segments`](PathNormalization::dot_segments) | [`Reject`](DotSegments::Reject) | `Resolve` (RFC 3986 `remove_dot_segments`, the other half of `normalize_path`) only when the application resolves `..` the same way, clamped at the root; ServeDir refuses `..`, axum does not resolve it |
//! | [`path_parameters`](PathNormalization::path_parameters) | [`Reject`](PathParameters::Reject) | `Keep` when no service treats `;` as the start of parameters (Rust routers and ServeDir do not; Tomcat and Spring read `/admin;x` as `/admin`) |
//!
//! Encoded characters other than those above (`%20`, `%25`, `%3F`, `%40`, `%C3%A9`) are data
//! to every reader and stay encoded: RFC 3986 makes decoding them change the URI, and axum
//! would route them differently. A rule on a path that contains a sub-delimiter, `:` or `@`
//! matches only the spelling it is written in (`@` and `%40` are both valid and both stay);
//! rules on unreserved characters and `/` match every accepted spelling. A service that
//! percent-decodes twice turns `%252e` into `.`: such a service needs its own checks.
//!
//! # Methods
//! Methods are case-sensitive (RFC 9110), but some backends read them case-insensitively, so
//! `delete` is a different method to the policy and the same one to the backend.
//! [`is_nonstandard_spelling`] and [`check_request_method`] tell a request whose method is
//! another spelling of a standard one (`delete`, `DeLeTe`: refuse with 400);
//! [`parse_rule_method`] and [`check_rule_method`] refuse those spellings in rules. Extension
//! methods (`PROPFIND`, `purge`) are neither: they have no standard spelling to collide with.

use std::borrow::Cow;
use std::fmt;

use http::Method;
use percent_encoding::{AsciiSet, percent_encode_byte, utf8_percent_encode};

/// What to do with an empty segment (`//`); see the [module docs](self).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MergeSlashes {
    /// Refuse the path ([`PathRejection::EmptySegment`]).
    #[default]
    Reject,
    /// Merge runs of `/` into one, as ServeDir does (axum does not: `//admin` is a 404 there).
    Merge,
    /// Keep `//` as sent, as axum does (ServeDir does not: a rule on `/a/b` misses `/a//b`).
    KeepUnchanged,
}

/// What to do with a percent-encoded `/` or `\` (`%2F`, `%5C`); see the [module docs](self).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EscapedSlashesAction {
    /// Refuse the path ([`PathRejection::EncodedSlash`], [`PathRejection::EncodedBackslash`]).
    #[default]
    RejectRequest,
    /// Keep them as data (uppercase hex). Unsafe in front of a service that decodes them
    /// into separators: ServeDir serves `/a%2Fb` as the file `a/b`, which a rule on `/a/b`
    /// does not see.
    KeepUnchanged,
}

/// What to do with a percent-encoded unreserved character (`%70` for `p`); see the
/// [module docs](self).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EncodedUnreserved {
    /// Refuse the path ([`PathRejection::EncodedUnreserved`]).
    #[default]
    Reject,
    /// Decode it (RFC 3986 section 6.2.2.2). Unsafe in front of a router that matches raw
    /// bytes and prefers literal routes (axum): `/%61dmin` is not `/admin` there.
    Decode,
}

/// What to do with a `.` or `..` segment (also percent-encoded); see the [module docs](self).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DotSegments {
    /// Refuse the path ([`PathRejection::DotSegment`]).
    #[default]
    Reject,
    /// Resolve them (RFC 3986 `remove_dot_segments`, `..` clamped at the root). Unsafe unless
    /// the application resolves them the same way: ServeDir refuses `..`, axum routes it as a
    /// segment. A dot segment next to a kept `%2F` is still refused.
    Resolve,
}

/// What to do with `;` and `%3B` (path parameters); see the [module docs](self).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PathParameters {
    /// Refuse the path ([`PathRejection::PathParameter`]): servlet containers read
    /// `/admin;x` as `/admin`, and some decoded `%3B` before splitting.
    #[default]
    Reject,
    /// Keep them as data, as Rust routers and ServeDir read them.
    Keep,
}

/// How [`canonicalize`] treats the spellings that readers disagree on. The default is the
/// safe choice: refuse them all. See the [module docs](self) for when the others are safe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PathNormalization {
    merge_slashes: MergeSlashes,
    escaped_slashes: EscapedSlashesAction,
    encoded_unreserved: EncodedUnreserved,
    dot_segments: DotSegments,
    path_parameters: PathParameters,
}

impl PathNormalization {
    /// The safe choice, the same as `PathNormalization::default()`.
    pub const fn strict() -> Self {
        PathNormalization {
            merge_slashes: MergeSlashes::Reject,
            escaped_slashes: EscapedSlashesAction::RejectRequest,
            encoded_unreserved: EncodedUnreserved::Reject,
            dot_segments: DotSegments::Reject,
            path_parameters: PathParameters::Reject,
        }
    }

    /// What to do with `//`.
    pub const fn merge_slashes(mut self, action: MergeSlashes) -> Self {
        self.merge_slashes = action;
        self
    }

    /// What to do with `%2F` and `%5C` (the name is Envoy's).
    pub const fn path_with_escaped_slashes_action(mut self, action: EscapedSlashesAction) -> Self {
        self.escaped_slashes = action;
        self
    }

    /// What to do with percent-encoded unreserved characters.
    pub const fn encoded_unreserved(mut self, action: EncodedUnreserved) -> Self {
        self.encoded_unreserved = action;
        self
    }

    /// What to do with `.` and `..` segments.
    pub const fn dot_segments(mut self, action: DotSegments) -> Self {
        self.dot_segments = action;
        self
    }

    /// What to do with `;` and `%3B`.
    pub const fn path_parameters(mut self, action: PathParameters) -> Self {
        self.path_parameters = action;
        self
    }

    /// The setting for `//`.
    pub const fn merge_slashes_action(&self) -> MergeSlashes {
        self.merge_slashes
    }

    /// The setting for `%2F` and `%5C`.
    pub const fn escaped_slashes_action(&self) -> EscapedSlashesAction {
        self.escaped_slashes
    }

    /// The setting for percent-encoded unreserved characters.
    pub const fn encoded_unreserved_action(&self) -> EncodedUnreserved {
        self.encoded_unreserved
    }

    /// The setting for `.` and `..` segments.
    pub const fn dot_segments_action(&self) -> DotSegments {
        self.dot_segments
    }

    /// The setting for `;` and `%3B`.
    pub const fn path_parameters_action(&self) -> PathParameters {
        self.path_parameters
    }

    /// The settings a policy pattern is read with. A spelling that requests may not use can
    /// never match, so in a pattern it means its canonical form (`%70` is `p`, `//` is `/`);
    /// what stays refused (dot segments, `%2F` unless kept) is an error for the pattern.
    fn for_patterns(self) -> Self {
        PathNormalization {
            encoded_unreserved: EncodedUnreserved::Decode,
            merge_slashes: match self.merge_slashes {
                MergeSlashes::KeepUnchanged => MergeSlashes::KeepUnchanged,
                MergeSlashes::Reject | MergeSlashes::Merge => MergeSlashes::Merge,
            },
            dot_segments: DotSegments::Reject,
            ..self
        }
    }
}

/// Why [`canonicalize`] refused a path: one variant per cause, for the log. The client gets a
/// 400 (gRPC `INVALID_ARGUMENT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PathRejection {
    /// Not `""`, `"*"` or a path starting with `/`.
    NotAbsolute,
    /// A `.` or `..` segment, however spelled.
    DotSegment,
    /// `//` (with [`MergeSlashes::Reject`]).
    EmptySegment,
    /// A raw `\`.
    Backslash,
    /// `%2F` (with [`EscapedSlashesAction::RejectRequest`]).
    EncodedSlash,
    /// `%5C` (with [`EscapedSlashesAction::RejectRequest`]).
    EncodedBackslash,
    /// `%00`.
    EncodedNul,
    /// An encoded control character other than NUL: `%01`-`%1F`, `%7F`, `%C2%80`-`%C2%9F`.
    EncodedControl,
    /// An encoded unreserved character (with [`EncodedUnreserved::Reject`]).
    EncodedUnreserved,
    /// `;` or `%3B` (with [`PathParameters::Reject`]).
    PathParameter,
    /// A `%` not followed by two hex digits.
    InvalidPercentEncoding,
    /// Percent-encoded bytes that are not UTF-8.
    NotUtf8,
    /// A character RFC 3986 does not allow in a path (it must be percent-encoded).
    InvalidCharacter(char),
}

impl fmt::Display for PathRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        match self {
            PathRejection::InvalidCharacter(c) => write!(f, ": {c:?}"),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for PathRejection {}

impl PathRejection {
    /// A short, fixed description (no request bytes), for reasons and client messages.
    pub const fn as_str(&self) -> &'static str {
        match self {
            PathRejection::NotAbsolute => "request path does not start with '/'",
            PathRejection::DotSegment => "request path has a '.' or '..' segment",
            PathRejection::EmptySegment => "request path has an empty segment ('//')",
            PathRejection::Backslash => "request path has a '\\'",
            PathRejection::EncodedSlash => "request path has an encoded '/' (%2F)",
            PathRejection::EncodedBackslash => "request path has an encoded '\\' (%5C)",
            PathRejection::EncodedNul => "request path has an encoded NUL (%00)",
            PathRejection::EncodedControl => "request path has an encoded control character",
            PathRejection::EncodedUnreserved => {
                "request path has a percent-encoded unreserved character"
            }
            PathRejection::PathParameter => "request path has a ';' (path parameters)",
            PathRejection::InvalidPercentEncoding => "request path has an invalid percent-encoding",
            PathRejection::NotUtf8 => "request path has percent-encoded bytes that are not UTF-8",
            PathRejection::InvalidCharacter(_) => {
                "request path has a character that must be percent-encoded"
            }
        }
    }
}

/// The canonical form of a request path (`Uri::path()`), or why it has none; see the
/// [module docs](self).
///
/// Borrows `path` when it is already canonical, which is the common case: a request path
/// costs one scan and no allocation.
pub fn canonicalize<'a>(
    path: &'a str,
    options: &PathNormalization,
) -> Result<Cow<'a, str>, PathRejection> {
    // Authority-form (CONNECT) and asterisk-form (OPTIONS *) name no resource; only rules
    // without a path condition (or on the prefix "/") match them.
    if path.is_empty() || path == "*" {
        return Ok(Cow::Borrowed(path));
    }
    if !path.starts_with('/') {
        return Err(PathRejection::NotAbsolute);
    }
    if plainly_canonical(path.as_bytes()) || !scan(path, options)? {
        Ok(Cow::Borrowed(path))
    } else {
        Ok(Cow::Owned(rewrite(path, options)))
    }
}

/// What [`plainly_canonical`] needs to know of a byte, as bits: [`OTHER`] for every byte that
/// needs [`scan`], [`DOT`] for `.`; `0` for `/` and for the bytes a path may hold raw under every
/// setting (unreserved characters, sub-delimiters other than `;`, `:` and `@`).
static CLASSES: [u8; 256] = {
    let mut table = [OTHER; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'/' | b'-'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b'='
                    | b':'
                    | b'@'
            )
        {
            table[b] = 0;
        }
        b += 1;
    }
    table[b'.' as usize] = DOT;
    table
};
const OTHER: u8 = 1;
const DOT: u8 = 2;

/// Whether `segment` is a dot segment (`.` or `..`).
fn is_dots(segment: &[u8]) -> bool {
    matches!(segment, b"." | b"..")
}

/// The common case, quickly: a path (starting with `/`) of plain bytes only, with no `//` and
/// no dot segment, is canonical under every setting. `false` means "ask [`scan`]".
fn plainly_canonical(path: &[u8]) -> bool {
    // Without early exits, so that the loops stay short: the common answer is "yes".
    let classes = path
        .iter()
        .fold(0, |classes, &b| classes | CLASSES[usize::from(b)]);
    let double_slash = path
        .windows(2)
        .fold(false, |found, pair| found | (pair == b"//"));
    if classes & OTHER != 0 || double_slash {
        return false;
    }
    // Only a path with a `.` can have a dot segment.
    classes & DOT == 0 || !path.split(|&b| b == b'/').any(is_dots)
}

/// Characters a policy author may write raw that requests can only send percent-encoded: they
/// are encoded, so that the pattern means the path clients send. (Non-ASCII is always
/// encoded; `\`, `#`, `?` and control characters stay, to be refused.)
const PATTERN_ESCAPES: &AsciiSet = &AsciiSet::EMPTY
    .add(b' ')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'[')
    .add(b']')
    .add(b'^')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// The canonical form of a policy path pattern, read with the same function as request paths
/// under `options` (the request's settings), so that the pattern means what the canonical
/// request path will be: `/static/%70rivate` and `/static//private` are `/static/private`,
/// `/café` is `/caf%C3%A9`. An error means no request path could ever match the pattern as
/// written (a dot segment, `%2F` while requests with it are refused, a `;` while refused...).
///
/// The result is itself canonical: `canonicalize(result, options)` borrows it unchanged.
pub fn canonicalize_pattern<'a>(
    pattern: &'a str,
    options: &PathNormalization,
) -> Result<Cow<'a, str>, PathRejection> {
    if !pattern.starts_with('/') {
        return Err(PathRejection::NotAbsolute);
    }
    let options = options.for_patterns();
    match Cow::from(utf8_percent_encode(pattern, PATTERN_ESCAPES)) {
        Cow::Borrowed(pattern) => canonicalize(pattern, &options),
        Cow::Owned(encoded) => {
            canonicalize(&encoded, &options).map(|canonical| Cow::Owned(canonical.into_owned()))
        }
    }
}

/// One unit of a path: a separator, a raw ASCII character, or a percent-encoded byte.
#[derive(Clone, Copy)]
enum Unit {
    Slash,
    Raw(u8),
    Escape { byte: u8, lowercase: bool },
}

/// The unit at `at` and its length in bytes.
fn unit_at(path: &str, at: usize) -> Result<(Unit, usize), PathRejection> {
    let bytes = path.as_bytes();
    match bytes.get(at) {
        Some(b'/') => Ok((Unit::Slash, 1)),
        Some(b'%') => {
            let digit = |i: usize| {
                bytes
                    .get(at + i)
                    .and_then(|&b| (b as char).to_digit(16).map(|d| (d as u8, b)))
            };
            let (Some((high, h)), Some((low, l))) = (digit(1), digit(2)) else {
                return Err(PathRejection::InvalidPercentEncoding);
            };
            Ok((
                Unit::Escape {
                    byte: high << 4 | low,
                    lowercase: h.is_ascii_lowercase() || l.is_ascii_lowercase(),
                },
                3,
            ))
        }
        Some(&b) if b.is_ascii() => Ok((Unit::Raw(b), 1)),
        _ => {
            let c = path
                .get(at..)
                .and_then(|rest| rest.chars().next())
                .unwrap_or(char::REPLACEMENT_CHARACTER);
            Err(PathRejection::InvalidCharacter(c))
        }
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Sub-delimiters, `:` and `@`: the other characters RFC 3986 allows raw in a segment (`;`
/// is handled on its own).
fn is_sub_delim_or_colon_at(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
    )
}

/// The part of a segment between two separators, real (`/`) or encoded (`%2F`, `%5C`).
#[derive(Default)]
struct Piece {
    dots: usize,
    other: bool,
    encoded_unreserved: bool,
}

impl Piece {
    fn is_dot_segment(&self) -> bool {
        !self.other && (1..=2).contains(&self.dots)
    }

    fn is_empty(&self) -> bool {
        self.dots == 0 && !self.other
    }
}

/// Percent-encoded bytes at or above 0x80, which must spell whole UTF-8 characters.
#[derive(Default)]
struct Utf8Run {
    bytes: [u8; 4],
    len: usize,
}

impl Utf8Run {
    fn push(&mut self, byte: u8) -> Result<(), PathRejection> {
        let slot = self.bytes.get_mut(self.len).ok_or(PathRejection::NotUtf8)?;
        *slot = byte;
        self.len += 1;
        let pending = self.bytes.get(..self.len).unwrap_or_default();
        match std::str::from_utf8(pending) {
            Ok(s) => {
                self.len = 0;
                // C1 controls (U+0080-U+009F) are controls like %0A.
                if s.chars().any(char::is_control) {
                    return Err(PathRejection::EncodedControl);
                }
                Ok(())
            }
            // An incomplete character: wait for the next byte.
            Err(e) if e.error_len().is_none() => Ok(()),
            Err(_) => Err(PathRejection::NotUtf8),
        }
    }

    fn finish(&self) -> Result<(), PathRejection> {
        if self.len == 0 {
            Ok(())
        } else {
            Err(PathRejection::NotUtf8)
        }
    }
}

/// Validates `path` (which starts with `/`) and tells whether its canonical form differs.
fn scan(path: &str, options: &PathNormalization) -> Result<bool, PathRejection> {
    let mut rewrite = false;
    let mut utf8 = Utf8Run::default();
    let mut piece = Piece::default();
    // Whether the current piece started at a real `/` (not at `%2F`).
    let mut opened_by_slash = true;
    let mut at = 1;
    loop {
        let next = if at < path.len() {
            Some(unit_at(path, at)?)
        } else {
            None
        };
        let closing = match next {
            None => Some(true),
            Some((Unit::Slash, _)) => Some(true),
            Some((Unit::Escape { byte, .. }, _)) if byte == b'/' || byte == b'\\' => Some(false),
            Some(_) => None,
        };
        if !matches!(next, Some((Unit::Escape { byte, .. }, _)) if byte >= 0x80) {
            utf8.finish()?;
        }
        if let Some(closed_by_slash) = closing {
            if piece.is_dot_segment() {
                match options.dot_segments {
                    DotSegments::Resolve if opened_by_slash && closed_by_slash => rewrite = true,
                    _ => return Err(PathRejection::DotSegment),
                }
            } else if piece.encoded_unreserved {
                match options.encoded_unreserved {
                    EncodedUnreserved::Reject => return Err(PathRejection::EncodedUnreserved),
                    EncodedUnreserved::Decode => rewrite = true,
                }
            } else if piece.is_empty() && opened_by_slash && closed_by_slash && next.is_some() {
                match options.merge_slashes {
                    MergeSlashes::Reject => return Err(PathRejection::EmptySegment),
                    MergeSlashes::Merge => rewrite = true,
                    MergeSlashes::KeepUnchanged => {}
                }
            }
            piece = Piece::default();
            opened_by_slash = closed_by_slash;
        }
        let Some((unit, len)) = next else {
            return Ok(rewrite);
        };
        at += len;
        match unit {
            Unit::Slash => {}
            Unit::Raw(b'.') => piece.dots += 1,
            Unit::Raw(b) if is_unreserved(b) || is_sub_delim_or_colon_at(b) => piece.other = true,
            Unit::Raw(b';') => match options.path_parameters {
                PathParameters::Reject => return Err(PathRejection::PathParameter),
                PathParameters::Keep => piece.other = true,
            },
            Unit::Raw(b'\\') => return Err(PathRejection::Backslash),
            Unit::Raw(b) => return Err(PathRejection::InvalidCharacter(char::from(b))),
            Unit::Escape { byte, lowercase } => {
                rewrite |= lowercase;
                match byte {
                    0 => return Err(PathRejection::EncodedNul),
                    0x01..=0x1F | 0x7F => return Err(PathRejection::EncodedControl),
                    b'/' | b'\\' => match options.escaped_slashes {
                        EscapedSlashesAction::RejectRequest if byte == b'/' => {
                            return Err(PathRejection::EncodedSlash);
                        }
                        EscapedSlashesAction::RejectRequest => {
                            return Err(PathRejection::EncodedBackslash);
                        }
                        EscapedSlashesAction::KeepUnchanged => {}
                    },
                    b';' => match options.path_parameters {
                        PathParameters::Reject => return Err(PathRejection::PathParameter),
                        PathParameters::Keep => piece.other = true,
                    },
                    b'.' => {
                        piece.dots += 1;
                        piece.encoded_unreserved = true;
                    }
                    b if is_unreserved(b) => {
                        piece.other = true;
                        piece.encoded_unreserved = true;
                    }
                    0x80.. => {
                        piece.other = true;
                        utf8.push(byte)?;
                    }
                    _ => piece.other = true,
                }
            }
        }
    }
}

/// `Some(1)` for `.`, `Some(2)` for `..` (however spelled); `None` for any other segment.
fn dot_segment(segment: &str) -> Option<usize> {
    let mut rest = segment;
    let mut dots = 0;
    while !rest.is_empty() {
        rest = match rest.strip_prefix('.') {
            Some(r) => r,
            None => match rest.get(..3) {
                Some(e) if e.eq_ignore_ascii_case("%2e") => rest.get(3..).unwrap_or_default(),
                _ => return None,
            },
        };
        dots += 1;
    }
    (1..=2).contains(&dots).then_some(dots)
}

/// The canonical form of a path that [`scan`] accepted and found not canonical.
fn rewrite(path: &str, options: &PathNormalization) -> String {
    let mut out = String::with_capacity(path.len());
    let merge = options.merge_slashes == MergeSlashes::Merge;
    let mut segments = path.get(1..).unwrap_or_default().split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match dot_segment(segment) {
            // Only reached with `DotSegments::Resolve`: `scan` refuses them otherwise.
            Some(dots) => {
                if dots == 2 {
                    if let Some(parent) = out.rfind('/') {
                        out.truncate(parent);
                    }
                }
                if last {
                    out.push('/');
                }
            }
            // An empty segment other than the trailing slash: `//`, merged.
            None if merge && segment.is_empty() && !last => {}
            None => {
                out.push('/');
                push_segment(&mut out, segment, options);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn push_segment(out: &mut String, segment: &str, options: &PathNormalization) {
    let mut at = 0;
    while at < segment.len() {
        // `scan` accepted the path, so every unit parses.
        let Ok((unit, len)) = unit_at(segment, at) else {
            break;
        };
        match unit {
            Unit::Escape { byte, .. }
                if is_unreserved(byte)
                    && options.encoded_unreserved == EncodedUnreserved::Decode =>
            {
                out.push(char::from(byte));
            }
            Unit::Escape { byte, .. } => out.push_str(percent_encode_byte(byte)),
            Unit::Raw(b) => out.push(char::from(b)),
            Unit::Slash => out.push('/'),
        }
        at += len;
    }
}

/// The standard methods: RFC 9110's eight and PATCH (RFC 5789), the ones `http::Method` names.
static STANDARD_METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::CONNECT,
    Method::OPTIONS,
    Method::TRACE,
    Method::PATCH,
];

/// The standard method that `spelling` names when case is ignored (`"delete"` → `DELETE`).
pub fn standard_method(spelling: &str) -> Option<&'static Method> {
    STANDARD_METHODS
        .iter()
        .find(|m| m.as_str().eq_ignore_ascii_case(spelling))
}

/// Whether `method` is another spelling of a standard method (`delete`, `DeLeTe`, `get`).
/// Standard spellings (`DELETE`) and extension methods (`PROPFIND`, `purge`) are not.
pub fn is_nonstandard_spelling(method: &Method) -> bool {
    standard_method(method.as_str()).is_some_and(|standard| standard != method)
}

/// A request whose method is another spelling of a standard one: refuse it with 400, since
/// backends that read methods case-insensitively would run the standard method.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("request method is another spelling of {standard}")]
pub struct NonStandardMethod {
    /// The standard method it spells.
    pub standard: &'static Method,
}

/// `Err` for a request whose method is another spelling of a standard one.
pub fn check_request_method(method: &Method) -> Result<(), NonStandardMethod> {
    // The common case, without comparing text: a standard method in its standard spelling.
    if STANDARD_METHODS.contains(method) {
        return Ok(());
    }
    match standard_method(method.as_str()) {
        Some(standard) if standard != method => Err(NonStandardMethod { standard }),
        _ => Ok(()),
    }
}

/// A method a rule may not name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MethodError {
    /// Not an HTTP method token.
    #[error("{value:?} is not an HTTP method")]
    Invalid {
        /// The text given.
        value: String,
    },
    /// Another spelling of a standard method; HTTP methods are case-sensitive, so the rule
    /// would not match the standard one.
    #[error("method {value:?} is another spelling of {standard}: write {standard}")]
    NonStandardSpelling {
        /// The text given.
        value: String,
        /// The standard method it spells.
        standard: &'static Method,
    },
}

/// The method a rule (builder or policy file) names, refusing non-standard spellings of
/// standard methods (`delete`); extension methods (`PROPFIND`, `purge`) are taken as written.
pub fn parse_rule_method(spelling: &str) -> Result<Method, MethodError> {
    let method = Method::from_bytes(spelling.as_bytes()).map_err(|_| MethodError::Invalid {
        value: spelling.to_owned(),
    })?;
    check_rule_method(&method)?;
    Ok(method)
}

/// `Err` when a rule's method is another spelling of a standard method.
pub fn check_rule_method(method: &Method) -> Result<(), MethodError> {
    match standard_method(method.as_str()) {
        Some(standard) if standard != method => Err(MethodError::NonStandardSpelling {
            value: method.as_str().to_owned(),
            standard,
        }),
        _ => Ok(()),
    }
}

impl fmt::Display for PathNormalization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "merge_slashes={:?} escaped_slashes={:?} encoded_unreserved={:?} dot_segments={:?} path_parameters={:?}",
            self.merge_slashes,
            self.escaped_slashes,
            self.encoded_unreserved,
            self.dot_segments,
            self.path_parameters
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict(path: &str) -> Result<Cow<'_, str>, PathRejection> {
        canonicalize(path, &PathNormalization::default())
    }

    fn lenient() -> PathNormalization {
        PathNormalization::default()
            .merge_slashes(MergeSlashes::Merge)
            .encoded_unreserved(EncodedUnreserved::Decode)
            .dot_segments(DotSegments::Resolve)
            .path_with_escaped_slashes_action(EscapedSlashesAction::KeepUnchanged)
            .path_parameters(PathParameters::Keep)
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for path in [
            "/",
            "/admin",
            "/admin/",
            "/static/app.js",
            "/a/.../b",
            "/a/.hidden",
            "/users/@me",
            "/v1/things:cancel",
            "/caf%C3%A9",
            "/a%20b",
            "/100%25",
            "/q%3F",
            "/~user/x-y_z",
            "*",
            "",
        ] {
            assert!(
                matches!(strict(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path}: {:?}",
                strict(path)
            );
            assert!(matches!(
                canonicalize(path, &lenient()),
                Ok(Cow::Borrowed(_))
            ));
        }
    }

    /// Whatever the quick check calls canonical, the full scan does too, under every setting.
    #[test]
    fn the_quick_check_agrees_with_the_scan() {
        let settings = [PathNormalization::default(), lenient()];
        for path in [
            "/",
            "/a",
            "/a/",
            "/a/b.c",
            "/...",
            "/a/.../b",
            "/.hidden",
            "/a.",
            "/v1/x:y@z",
            "/!$&'()*+,=",
            "/~u/-_",
            "//",
            "/a//b",
            "/.",
            "/..",
            "/a/./b",
            "/a/..",
            "/a;b",
            "/a%41",
            "/a\\b",
            "/é",
            "/a b",
            "/a?b",
        ] {
            let quick = plainly_canonical(path.as_bytes());
            for options in &settings {
                if quick {
                    assert_eq!(scan(path, options), Ok(false), "{path}");
                }
            }
            let expected = matches!(strict(path), Ok(Cow::Borrowed(_)))
                && !path.contains(';')
                && matches!(canonicalize(path, &lenient()), Ok(Cow::Borrowed(_)));
            assert!(!quick || expected, "{path}");
        }
        for quick in ["/", "/a/b/", "/a/.../b", "/v1/x:y@z", "/a.b"] {
            assert!(plainly_canonical(quick.as_bytes()), "{quick}");
        }
        for slow in ["//", "/a/./b", "/..", "/a/.", "/a%41", "/a;b", "/é"] {
            assert!(!plainly_canonical(slow.as_bytes()), "{slow}");
        }
    }

    #[test]
    fn hex_is_uppercased() {
        assert_eq!(strict("/caf%c3%a9").unwrap(), "/caf%C3%A9");
        assert_eq!(strict("/a%2b%3a").unwrap(), "/a%2B%3A");
        assert_eq!(strict("/100%2a").unwrap(), "/100%2A");
        assert!(matches!(strict("/caf%c3%a9"), Ok(Cow::Owned(_))));
    }

    #[test]
    fn every_refusal_has_its_variant() {
        use PathRejection::*;
        for (path, why) in [
            ("admin", NotAbsolute),
            ("http://h/x", NotAbsolute),
            ("/.", DotSegment),
            ("/..", DotSegment),
            ("/a/../admin", DotSegment),
            ("/a/./b", DotSegment),
            ("/a/%2e", DotSegment),
            ("/a/%2E%2e/b", DotSegment),
            ("/a/.%2E", DotSegment),
            ("/a/..", DotSegment),
            ("/pub/..%2fadmin", DotSegment),
            ("//admin", EmptySegment),
            ("/static//private/x", EmptySegment),
            ("/a//", EmptySegment),
            ("/a\\b", Backslash),
            ("/static/private%2Fx", EncodedSlash),
            ("/static/private%2fx", EncodedSlash),
            ("/a%5Cb", EncodedBackslash),
            ("/a%5cb", EncodedBackslash),
            ("/a%00", EncodedNul),
            ("/a%0Ab", EncodedControl),
            ("/a%0d%0aSet-Cookie", EncodedControl),
            ("/a%1F", EncodedControl),
            ("/a%7F", EncodedControl),
            ("/a%C2%85", EncodedControl),
            ("/static/%70rivate", EncodedUnreserved),
            ("/%61dmin", EncodedUnreserved),
            ("/%7Euser", EncodedUnreserved),
            ("/a%2Ejs", EncodedUnreserved),
            ("/admin;x", PathParameter),
            ("/admin%3Bx", PathParameter),
            ("/admin%3bx", PathParameter),
            ("/a%", InvalidPercentEncoding),
            ("/a%4", InvalidPercentEncoding),
            ("/a%zz", InvalidPercentEncoding),
            ("/a%4g", InvalidPercentEncoding),
            ("/a%%41", InvalidPercentEncoding),
            ("/a%FF", NotUtf8),
            ("/a%C3", NotUtf8),
            ("/a%C3/b", NotUtf8),
            ("/a%C3x", NotUtf8),
            ("/a%A9", NotUtf8),
            ("/a%C0%80", NotUtf8),
            ("/a%ED%A0%80", NotUtf8),
            ("/a%F0%9F%98", NotUtf8),
            ("/café", InvalidCharacter('é')),
            ("/a b", InvalidCharacter(' ')),
            ("/a\"b", InvalidCharacter('"')),
            ("/a{b}", InvalidCharacter('{')),
            ("/a[0]", InvalidCharacter('[')),
            ("/a|b", InvalidCharacter('|')),
            ("/a^b", InvalidCharacter('^')),
            ("/a#frag", InvalidCharacter('#')),
            ("/a?q", InvalidCharacter('?')),
            ("/a\nb", InvalidCharacter('\n')),
            ("/a\0b", InvalidCharacter('\0')),
        ] {
            assert_eq!(strict(path), Err(why), "{path}");
            assert!(!why.as_str().is_empty());
        }
    }

    #[test]
    fn four_byte_characters_pass() {
        assert!(matches!(strict("/%F0%9F%98%80"), Ok(Cow::Borrowed(_))));
        assert_eq!(strict("/%f0%9f%98%80/x").unwrap(), "/%F0%9F%98%80/x");
    }

    #[test]
    fn merging_slashes() {
        let merge = PathNormalization::default().merge_slashes(MergeSlashes::Merge);
        assert_eq!(canonicalize("//admin", &merge).unwrap(), "/admin");
        assert_eq!(canonicalize("/a///b//", &merge).unwrap(), "/a/b/");
        assert_eq!(canonicalize("//", &merge).unwrap(), "/");
        let keep = PathNormalization::default().merge_slashes(MergeSlashes::KeepUnchanged);
        assert!(matches!(
            canonicalize("/a//b", &keep),
            Ok(Cow::Borrowed("/a//b"))
        ));
        assert_eq!(canonicalize("/a//%c3%a9", &keep).unwrap(), "/a//%C3%A9");
    }

    #[test]
    fn decoding_unreserved() {
        let decode = PathNormalization::default().encoded_unreserved(EncodedUnreserved::Decode);
        assert_eq!(
            canonicalize("/static/%70rivate/x", &decode).unwrap(),
            "/static/private/x"
        );
        assert_eq!(
            canonicalize("/%7Euser/%41%2d", &decode).unwrap(),
            "/~user/A-"
        );
        assert_eq!(canonicalize("/a%2Ejs", &decode).unwrap(), "/a.js");
        assert_eq!(canonicalize("/%2e%2e%2e", &decode).unwrap(), "/...");
        // Only unreserved characters: %25 stays, so nothing is decoded twice.
        assert_eq!(canonicalize("/%252e%2541", &decode).unwrap(), "/%252e%2541");
        assert_eq!(canonicalize("/%40%3a", &decode).unwrap(), "/%40%3A");
        // A dot segment is still a dot segment.
        assert_eq!(
            canonicalize("/a/%2e%2e/b", &decode),
            Err(PathRejection::DotSegment)
        );
    }

    #[test]
    fn resolving_dot_segments() {
        let resolve = PathNormalization::default().dot_segments(DotSegments::Resolve);
        for (path, canonical) in [
            ("/a/b/c/./../../g", "/a/g"),
            ("/./a", "/a"),
            ("/a/./", "/a/"),
            ("/a/.", "/a/"),
            ("/a/..", "/"),
            ("/..", "/"),
            ("/../../x", "/x"),
            ("/a/%2e%2E/admin", "/admin"),
            ("/a/.%2e/b/", "/b/"),
        ] {
            assert_eq!(canonicalize(path, &resolve).unwrap(), canonical, "{path}");
        }
        // RFC 3986: `..` after `//` removes the empty segment.
        let keep = resolve.merge_slashes(MergeSlashes::KeepUnchanged);
        assert_eq!(canonicalize("/a//..", &keep).unwrap(), "/a/");
        let merge = resolve.merge_slashes(MergeSlashes::Merge);
        assert_eq!(canonicalize("/a//../b", &merge).unwrap(), "/b");
        // Next to a kept %2F, a dot segment cannot be resolved without changing the meaning.
        let kept = resolve.path_with_escaped_slashes_action(EscapedSlashesAction::KeepUnchanged);
        assert_eq!(
            canonicalize("/pub/..%2Fadmin", &kept),
            Err(PathRejection::DotSegment)
        );
        assert_eq!(
            canonicalize("/pub%2F../admin", &kept),
            Err(PathRejection::DotSegment)
        );
        // Encoded unreserved characters are still refused outside dot segments.
        assert_eq!(
            canonicalize("/a/../%61", &resolve),
            Err(PathRejection::EncodedUnreserved)
        );
    }

    #[test]
    fn keeping_escaped_slashes_and_parameters() {
        let keep = PathNormalization::default()
            .path_with_escaped_slashes_action(EscapedSlashesAction::KeepUnchanged)
            .path_parameters(PathParameters::Keep);
        assert_eq!(
            canonicalize("/api/vhosts/%2f", &keep).unwrap(),
            "/api/vhosts/%2F"
        );
        assert!(matches!(
            canonicalize("/a%5Cb", &keep),
            Ok(Cow::Borrowed(_))
        ));
        assert_eq!(canonicalize("/a;b%3bc", &keep).unwrap(), "/a;b%3Bc");
        // A raw backslash is refused whatever the settings.
        assert_eq!(canonicalize("/a\\b", &keep), Err(PathRejection::Backslash));
    }

    #[test]
    fn canonical_forms_are_fixed_points() {
        let settings = [PathNormalization::default(), lenient()];
        for options in settings {
            for path in [
                "/a/b/c/./../../g",
                "/static//%70rivate/x/",
                "/%c3%a9//x",
                "/a/./%2e/b",
            ] {
                if let Ok(canonical) = canonicalize(path, &options) {
                    assert!(
                        matches!(canonicalize(&canonical, &options), Ok(Cow::Borrowed(p)) if p == canonical),
                        "{path} -> {canonical}"
                    );
                }
            }
        }
    }

    #[test]
    fn patterns_mean_what_requests_will_be() {
        let strict = PathNormalization::default();
        for (pattern, canonical) in [
            ("/static/%70rivate", "/static/private"),
            ("/static//private", "/static/private"),
            ("/static/private/", "/static/private/"),
            ("/café", "/caf%C3%A9"),
            ("/a b", "/a%20b"),
            ("/%c3%a9", "/%C3%A9"),
            ("/api/*/items/**", "/api/*/items/**"),
            ("/{json}", "/%7Bjson%7D"),
        ] {
            let got = canonicalize_pattern(pattern, &strict).unwrap();
            assert_eq!(got, canonical, "{pattern}");
            assert!(matches!(canonicalize(&got, &strict), Ok(Cow::Borrowed(_))));
        }
        assert!(matches!(
            canonicalize_pattern("/static/private", &strict),
            Ok(Cow::Borrowed(_))
        ));
        for (pattern, why) in [
            ("static", PathRejection::NotAbsolute),
            ("*", PathRejection::NotAbsolute),
            ("", PathRejection::NotAbsolute),
            ("/a/../b", PathRejection::DotSegment),
            ("/a/%2e", PathRejection::DotSegment),
            ("/a%2Fb", PathRejection::EncodedSlash),
            ("/a\\b", PathRejection::Backslash),
            ("/a;b", PathRejection::PathParameter),
            ("/a%00", PathRejection::EncodedNul),
            ("/a%zz", PathRejection::InvalidPercentEncoding),
            ("/a%FF", PathRejection::NotUtf8),
            ("/a?b", PathRejection::InvalidCharacter('?')),
            ("/a#b", PathRejection::InvalidCharacter('#')),
            ("/a\tb", PathRejection::InvalidCharacter('\t')),
        ] {
            assert_eq!(
                canonicalize_pattern(pattern, &strict),
                Err(why),
                "{pattern}"
            );
        }
        // Under settings that keep a spelling, the pattern keeps it too.
        let keep = strict
            .merge_slashes(MergeSlashes::KeepUnchanged)
            .path_with_escaped_slashes_action(EscapedSlashesAction::KeepUnchanged);
        assert_eq!(canonicalize_pattern("/a//b", &keep).unwrap(), "/a//b");
        assert_eq!(canonicalize_pattern("/a%2fb", &keep).unwrap(), "/a%2Fb");
        // Dot segments are an error in a pattern even when requests resolve them.
        let resolve = strict.dot_segments(DotSegments::Resolve);
        assert_eq!(
            canonicalize_pattern("/a/../b", &resolve),
            Err(PathRejection::DotSegment)
        );
    }

    #[test]
    fn methods() {
        for other in [
            "delete", "DeLeTe", "get", "Get", "head", "patch", "options", "connecT",
        ] {
            let m = Method::from_bytes(other.as_bytes()).unwrap();
            assert!(is_nonstandard_spelling(&m), "{other}");
            let standard = standard_method(other).unwrap();
            assert_eq!(
                check_request_method(&m),
                Err(NonStandardMethod { standard })
            );
            assert!(matches!(
                parse_rule_method(other),
                Err(MethodError::NonStandardSpelling { standard: s, .. }) if s == standard
            ));
            assert!(check_rule_method(&m).is_err());
        }
        for fine in [
            "GET", "DELETE", "PATCH", "CONNECT", "PROPFIND", "purge", "M-SEARCH",
        ] {
            let m = Method::from_bytes(fine.as_bytes()).unwrap();
            assert!(!is_nonstandard_spelling(&m), "{fine}");
            assert_eq!(check_request_method(&m), Ok(()));
            assert_eq!(parse_rule_method(fine).unwrap(), m);
        }
        assert_eq!(parse_rule_method("GET").unwrap(), Method::GET);
        for bad in ["", "GE T", "GET\n", "(GET)"] {
            assert!(
                matches!(parse_rule_method(bad), Err(MethodError::Invalid { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_rule_method("delete").unwrap_err().to_string(),
            "method \"delete\" is another spelling of DELETE: write DELETE"
        );
    }
}
