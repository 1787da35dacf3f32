//! The request headers in which TLS-terminating proxies forward the client certificate, and
//! how they are read back into a certificate chain.
//!
//! ```
//! use base64::Engine as _;
//! use http::{HeaderMap, HeaderValue};
//! use tower_mtls::forwarded::{ForwardedCertFormat, ForwardedCertHeader};
//!
//! // What haproxy's `%[ssl_c_der,base64]` sends (any DER will do here: verifying it is the
//! // caller's job, not the parser's).
//! let der = b"\x30\x03\x02\x01\x01";
//! let mut headers = HeaderMap::new();
//! headers.insert(
//!     "x-ssl-client-cert",
//!     HeaderValue::try_from(base64::engine::general_purpose::STANDARD.encode(der))?,
//! );
//!
//! let format: ForwardedCertFormat = "haproxy".parse()?;
//! let reader = ForwardedCertHeader::new(format);
//! let chain = reader.parse(&headers)?.expect("the header is present");
//! assert_eq!(chain.leaf().as_ref(), der);
//! assert!(chain.intermediates().is_empty());
//!
//! // No header at all is not an error: the caller decides what a missing certificate means.
//! assert!(reader.parse(&HeaderMap::new())?.is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Formats
//! | format | default header | value |
//! | --- | --- | --- |
//! | [`Rfc9440`](ForwardedCertFormat::Rfc9440) | `Client-Cert`, `Client-Cert-Chain` | an RFC 9651 Byte Sequence (`:base64 DER:`) for the leaf; a List of them for the intermediates |
//! | [`Xfcc`](ForwardedCertFormat::Xfcc) | `x-forwarded-client-cert` | Envoy's `key=value;...` elements, comma-separated; `Cert=` / `Chain=` hold URL-encoded PEM |
//! | [`Nginx`](ForwardedCertFormat::Nginx) | `X-SSL-Client-Cert` | URL-encoded PEM of the leaf (`$ssl_client_escaped_cert`) |
//! | [`Haproxy`](ForwardedCertFormat::Haproxy) | `X-SSL-Client-Cert` | base64 DER of the leaf (`%[ssl_c_der,base64]`) |
//!
//! # What the parser checks, and what it leaves to verification
//! Parsing only extracts DER bytes: the certificates are **not** parsed as X.509 nor verified
//! here. A [`ForwardedChain`] is a claim made by a proxy; it must go through the same
//! verification as a TLS peer's chain before it names anyone. What is checked here is the
//! encoding, strictly: a value that is not well-formed for its format is refused with the cause,
//! never guessed at.
//!
//! - List-valued headers (`x-forwarded-client-cert`, `Client-Cert-Chain`) may arrive as several
//!   field lines; they are combined as RFC 9110 section 5.3 says, joined with `", "`. A header
//!   that carries one certificate (`Client-Cert`, nginx's, haproxy's) sent twice is
//!   [`Duplicate`](ForwardedCertError::Duplicate).
//! - Everything a peer controls is bounded: the total size of the values read
//!   ([`ForwardedCertHeader::max_bytes`], [`DEFAULT_MAX_BYTES`]) is checked before anything is
//!   decoded, and the number of certificates ([`ForwardedCertHeader::max_chain_len`],
//!   [`DEFAULT_MAX_CHAIN_LEN`]) while they are decoded.
//! - Values must be visible ASCII: every producer writes ASCII, so a byte of `obs-text`
//!   (0x80–0xFF) is refused ([`NotAscii`](ForwardedCertError::NotAscii)).
//! - An empty value is [`Empty`](ForwardedCertError::Empty), not "no certificate": a proxy
//!   without a client certificate to forward leaves the header out (nginx drops empty headers,
//!   Envoy removes XFCC); haproxy needs `if { ssl_c_used }` on its `set-header` for that.
//! - XFCC: only the **last** element counts, the one the proxy in front appended; the earlier
//!   ones were written by whoever was before it, possibly the client. The whole value must
//!   still be well-formed, so that no quoting trick in an earlier element can move the element
//!   boundaries.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use base64::Engine as _;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::{self, PemObject, SectionKind};
use sha2::{Digest, Sha256};

/// Default bound on the total size of the forwarded header values read for one request: 32 KiB.
pub const DEFAULT_MAX_BYTES: usize = 32 * 1024;
/// Default bound on the number of certificates in a forwarded chain, leaf included.
pub const DEFAULT_MAX_CHAIN_LEN: usize = 8;

/// How a proxy writes the client certificate into the request it forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ForwardedCertFormat {
    /// RFC 9440: `Client-Cert` (a Byte Sequence of the leaf's DER) and, optionally,
    /// `Client-Cert-Chain` (a List of Byte Sequences, the rest of the chain).
    Rfc9440,
    /// Envoy's `x-forwarded-client-cert`: the `Cert=` (leaf) and `Chain=` (leaf first, then
    /// the rest) fields of the last element, URL-encoded PEM.
    Xfcc,
    /// nginx's `$ssl_client_escaped_cert`: the URL-encoded PEM of the leaf.
    Nginx,
    /// haproxy's `%[ssl_c_der,base64]`: the base64 of the leaf's DER.
    Haproxy,
}

impl ForwardedCertFormat {
    /// Every format, in the order of their names in [`FromStr`].
    pub const ALL: [Self; 4] = [Self::Rfc9440, Self::Xfcc, Self::Nginx, Self::Haproxy];

    /// The format's name: `rfc9440`, `xfcc`, `nginx` or `haproxy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rfc9440 => "rfc9440",
            Self::Xfcc => "xfcc",
            Self::Nginx => "nginx",
            Self::Haproxy => "haproxy",
        }
    }

    /// The header this format is read from unless told otherwise (for [`Rfc9440`], the leaf
    /// header; the chain header is this name followed by `-Chain`).
    ///
    /// [`Rfc9440`]: ForwardedCertFormat::Rfc9440
    pub fn default_header(self) -> &'static str {
        match self {
            Self::Rfc9440 => "Client-Cert",
            Self::Xfcc => "x-forwarded-client-cert",
            Self::Nginx | Self::Haproxy => "X-SSL-Client-Cert",
        }
    }

    /// Whether the format can carry the intermediates (RFC 9440 and XFCC) or only the leaf
    /// (nginx, haproxy: verification then relies on the configured intermediates).
    pub fn carries_intermediates(self) -> bool {
        matches!(self, Self::Rfc9440 | Self::Xfcc)
    }

    fn default_header_name(self) -> HeaderName {
        match self {
            Self::Rfc9440 => HeaderName::from_static("client-cert"),
            Self::Xfcc => HeaderName::from_static("x-forwarded-client-cert"),
            Self::Nginx | Self::Haproxy => HeaderName::from_static("x-ssl-client-cert"),
        }
    }
}

impl fmt::Display for ForwardedCertFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ForwardedCertFormat {
    type Err = ForwardedConfigError;

    /// Parses `rfc9440`, `xfcc`, `nginx` or `haproxy` (ASCII case ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|format| format.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| ForwardedConfigError::UnknownFormat(s.into()))
    }
}

/// A forwarded-certificate configuration that cannot be honored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardedConfigError {
    /// Not one of `rfc9440`, `xfcc`, `nginx`, `haproxy`.
    #[error("unknown forwarded-certificate format {0:?}; expected rfc9440, xfcc, nginx or haproxy")]
    UnknownFormat(String),
    /// Not a valid HTTP field name.
    #[error("{0:?} is not a valid HTTP header name")]
    InvalidHeaderName(String),
    /// A header the HTTP stack itself needs (framing, connection, host, content type, `grpc-*`):
    /// forwarded certificates cannot live there, and stripping it from untrusted requests would
    /// break them.
    #[error("{0:?} cannot carry a forwarded certificate: HTTP itself needs that header")]
    ReservedHeaderName(String),
}

// Headers that are part of message framing or connection management (RFC 9110 section 7.6.1,
// RFC 9112), plus the ones every request of a gRPC or HTTP service relies on.
const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "content-type",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn checked_header_name(name: &str) -> Result<HeaderName, ForwardedConfigError> {
    let parsed = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ForwardedConfigError::InvalidHeaderName(name.into()))?;
    let lower = parsed.as_str();
    if RESERVED_HEADERS.contains(&lower) || lower.starts_with("grpc-") {
        return Err(ForwardedConfigError::ReservedHeaderName(name.into()));
    }
    Ok(parsed)
}

/// Reads the forwarded client certificate of one [`ForwardedCertFormat`] from request headers.
///
/// Cheap to clone; build it once from the configuration and share it.
#[derive(Debug, Clone)]
pub struct ForwardedCertHeader {
    format: ForwardedCertFormat,
    name: HeaderName,
    chain_name: Option<HeaderName>,
    max_bytes: usize,
    max_chain_len: usize,
}

impl ForwardedCertHeader {
    /// Reads `format` from its [default header](ForwardedCertFormat::default_header), with
    /// [`DEFAULT_MAX_BYTES`] and [`DEFAULT_MAX_CHAIN_LEN`].
    pub fn new(format: ForwardedCertFormat) -> Self {
        let name = format.default_header_name();
        let chain_name = match format {
            ForwardedCertFormat::Rfc9440 => Some(HeaderName::from_static("client-cert-chain")),
            _ => None,
        };
        Self {
            format,
            name,
            chain_name,
            max_bytes: DEFAULT_MAX_BYTES,
            max_chain_len: DEFAULT_MAX_CHAIN_LEN,
        }
    }

    /// Reads the certificate from `name` instead of the default header. For
    /// [`Rfc9440`](ForwardedCertFormat::Rfc9440) `name` is the leaf header and the chain is
    /// read from `name` followed by `-Chain`.
    ///
    /// # Errors
    /// [`InvalidHeaderName`](ForwardedConfigError::InvalidHeaderName) for a name that is not an
    /// HTTP field name; [`ReservedHeaderName`](ForwardedConfigError::ReservedHeaderName) for
    /// one HTTP itself needs (`host`, `content-length`, `te`, `grpc-*`, ...).
    pub fn header_name(mut self, name: &str) -> Result<Self, ForwardedConfigError> {
        self.name = checked_header_name(name)?;
        if self.chain_name.is_some() {
            self.chain_name = Some(checked_header_name(&format!("{name}-Chain"))?);
        }
        Ok(self)
    }

    /// Bounds the total size of the header values read for one request (the values of every
    /// field line of [`header_names`](Self::header_names), as if combined with `", "`). Larger
    /// is [`TooLarge`](ForwardedCertError::TooLarge), checked before anything is decoded.
    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Bounds the number of certificates in a forwarded chain, leaf included (values below 1
    /// count as 1). More is [`ChainTooLong`](ForwardedCertError::ChainTooLong).
    pub fn max_chain_len(mut self, max_chain_len: usize) -> Self {
        self.max_chain_len = max_chain_len.max(1);
        self
    }

    /// The format read.
    pub fn format(&self) -> ForwardedCertFormat {
        self.format
    }

    /// The header holding the leaf (RFC 9440, nginx, haproxy) or the XFCC list.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// The RFC 9440 chain header (`None` for the other formats).
    pub fn chain_name(&self) -> Option<&HeaderName> {
        self.chain_name.as_ref()
    }

    /// The bound set by [`max_bytes`](Self::max_bytes).
    pub fn byte_limit(&self) -> usize {
        self.max_bytes
    }

    /// The bound set by [`max_chain_len`](Self::max_chain_len).
    pub fn chain_len_limit(&self) -> usize {
        self.max_chain_len
    }

    /// Every header name this format reads: what must be removed from requests that do not
    /// come from a trusted proxy.
    pub fn header_names(&self) -> impl Iterator<Item = &HeaderName> {
        std::iter::once(&self.name).chain(self.chain_name.as_ref())
    }

    /// The fingerprint [`parse`](Self::parse) would return, without decoding anything: the
    /// presence, duplicate, size and ASCII checks only, then SHA-256 over the raw values.
    /// Meant as a cache key, so that a connection parses (and verifies) each distinct forwarded
    /// certificate once.
    ///
    /// # Errors
    /// [`Duplicate`](ForwardedCertError::Duplicate), [`TooLarge`](ForwardedCertError::TooLarge),
    /// [`NotAscii`](ForwardedCertError::NotAscii),
    /// [`ChainWithoutLeaf`](ForwardedCertError::ChainWithoutLeaf).
    pub fn fingerprint(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<ForwardedFingerprint>, ForwardedCertError> {
        Ok(self
            .lines(headers)?
            .map(|lines| lines.fingerprint(self.format)))
    }

    /// Reads the forwarded chain.
    ///
    /// `Ok(None)`: none of [`header_names`](Self::header_names) is present. `Ok(Some(chain))`:
    /// the chain as the proxy wrote it, leaf first, **not verified**. `Err`: present but not
    /// usable, with the cause.
    ///
    /// # Errors
    /// One [`ForwardedCertError`] variant per cause; the request should be refused.
    pub fn parse(&self, headers: &HeaderMap) -> Result<Option<ForwardedChain>, ForwardedCertError> {
        let Some(lines) = self.lines(headers)? else {
            return Ok(None);
        };
        self.parse_lines(&lines).map(Some)
    }

    /// [`parse`](Self::parse) of lines found by [`lines`](Self::lines).
    pub(crate) fn parse_lines(
        &self,
        lines: &Lines<'_>,
    ) -> Result<ForwardedChain, ForwardedCertError> {
        let fingerprint = lines.fingerprint(self.format);
        let (leaf, intermediates) = match self.format {
            ForwardedCertFormat::Rfc9440 => self.decode_rfc9440(lines)?,
            ForwardedCertFormat::Xfcc => self.decode_xfcc(lines)?,
            ForwardedCertFormat::Nginx => (self.decode_nginx(lines)?, Vec::new()),
            ForwardedCertFormat::Haproxy => (self.decode_haproxy(lines)?, Vec::new()),
        };
        Ok(ForwardedChain {
            leaf,
            intermediates,
            fingerprint,
        })
    }

    fn single_valued(&self) -> bool {
        !matches!(self.format, ForwardedCertFormat::Xfcc)
    }

    /// The field lines of the format's headers in `headers`, checked for what holds for every
    /// format before any decoding (presence, duplicates, size, ASCII): what a cache of parse
    /// results is keyed by.
    pub(crate) fn lines<'h>(
        &self,
        headers: &'h HeaderMap,
    ) -> Result<Option<Lines<'h>>, ForwardedCertError> {
        let mut budget = Budget {
            used: 0,
            lines: 0,
            limit: self.max_bytes,
        };
        let main = budget.take(headers.get_all(&self.name))?;
        let chain = match &self.chain_name {
            Some(name) => budget.take(headers.get_all(name))?,
            None => Vec::new(),
        };
        if main.is_empty() && chain.is_empty() {
            return Ok(None);
        }
        if main.len() > 1 && self.single_valued() {
            return Err(ForwardedCertError::Duplicate {
                header: self.name.clone(),
            });
        }
        for (name, values) in [(&self.name, &main), (self.chain_or_main(), &chain)] {
            if values.iter().any(|v| !v.as_bytes().is_ascii()) {
                return Err(ForwardedCertError::NotAscii {
                    header: name.clone(),
                });
            }
        }
        if main.is_empty() {
            return Err(ForwardedCertError::ChainWithoutLeaf {
                header: self.chain_or_main().clone(),
            });
        }
        Ok(Some(Lines { main, chain }))
    }

    fn chain_or_main(&self) -> &HeaderName {
        self.chain_name.as_ref().unwrap_or(&self.name)
    }

    fn empty(&self) -> ForwardedCertError {
        ForwardedCertError::Empty {
            header: self.name.clone(),
        }
    }

    /// The one value of a single-certificate header, OWS-trimmed, refused when empty.
    fn single_value<'h>(&self, lines: &Lines<'h>) -> Result<&'h [u8], ForwardedCertError> {
        let value = lines
            .main
            .first()
            .map_or(&b""[..], |v| trim_ows(v.as_bytes()));
        if value.is_empty() {
            return Err(self.empty());
        }
        Ok(value)
    }

    fn decode_rfc9440(
        &self,
        lines: &Lines<'_>,
    ) -> Result<(CertificateDer<'static>, Vec<CertificateDer<'static>>), ForwardedCertError> {
        let leaf_value = self.single_value(lines)?;
        let leaf_item: sfv::Item = sfv::Parser::new(leaf_value).parse().map_err(|e| {
            ForwardedCertError::StructuredField {
                header: self.name.clone(),
                detail: DecodeDetail(DecodeDetailInner::Sfv(e)),
            }
        })?;
        let leaf = byte_sequence(leaf_item, &self.name)?;

        let mut intermediates = Vec::new();
        if let (Some(chain_name), false) = (&self.chain_name, lines.chain.is_empty()) {
            let joined = join_list(&lines.chain);
            let list: sfv::List = sfv::Parser::new(joined.as_ref()).parse().map_err(|e| {
                ForwardedCertError::StructuredField {
                    header: chain_name.clone(),
                    detail: DecodeDetail(DecodeDetailInner::Sfv(e)),
                }
            })?;
            // RFC 9440's example leaves the leaf out of Client-Cert-Chain, while its text says
            // "the same order as in TLS" (leaf first): accept both, without repeating the leaf.
            let skip = usize::from(matches!(
                list.first(),
                Some(sfv::ListEntry::Item(sfv::Item {
                    bare_item: sfv::BareItem::ByteSequence(first),
                    params,
                })) if params.is_empty() && first.as_slice() == leaf.as_ref()
            ));
            if 1 + list.len() - skip > self.max_chain_len {
                return Err(ForwardedCertError::ChainTooLong {
                    limit: self.max_chain_len,
                });
            }
            for entry in list.into_iter().skip(skip) {
                match entry {
                    sfv::ListEntry::Item(item) => {
                        intermediates.push(byte_sequence(item, chain_name)?)
                    }
                    sfv::ListEntry::InnerList(_) => {
                        return Err(ForwardedCertError::NotAByteSequence {
                            header: chain_name.clone(),
                        });
                    }
                }
            }
        }
        Ok((leaf, intermediates))
    }

    fn decode_xfcc(
        &self,
        lines: &Lines<'_>,
    ) -> Result<(CertificateDer<'static>, Vec<CertificateDer<'static>>), ForwardedCertError> {
        let joined = join_list(&lines.main);
        let input = joined.as_ref();
        let pairs = last_xfcc_element(input)
            .map_err(|(problem, offset)| ForwardedCertError::Xfcc { problem, offset })?;
        if pairs.is_empty() {
            return Err(self.empty());
        }
        let mut cert = None;
        let mut chain = None;
        for pair in &pairs {
            let key = &input[pair.key.clone()];
            let (slot, name) = if key.eq_ignore_ascii_case(b"cert") {
                (&mut cert, "Cert")
            } else if key.eq_ignore_ascii_case(b"chain") {
                (&mut chain, "Chain")
            } else {
                continue;
            };
            if slot.replace(pair).is_some() {
                return Err(ForwardedCertError::XfccDuplicateKey { key: name });
            }
        }
        let leaf = match cert {
            Some(pair) => {
                let mut one = self.url_encoded_pem(&pair.value(input), CertCount::One)?;
                one.pop().ok_or_else(|| self.no_certificate())?
            }
            None => {
                let Some(pair) = chain else {
                    return Err(ForwardedCertError::XfccNoCertificate);
                };
                let mut all = self
                    .url_encoded_pem(&pair.value(input), CertCount::AtMost(self.max_chain_len))?
                    .into_iter();
                let leaf = all.next().ok_or_else(|| self.no_certificate())?;
                return Ok((leaf, all.collect()));
            }
        };
        let Some(pair) = chain else {
            return Ok((leaf, Vec::new()));
        };
        let mut all = self
            .url_encoded_pem(&pair.value(input), CertCount::AtMost(self.max_chain_len))?
            .into_iter();
        match all.next() {
            Some(first) if first == leaf => Ok((leaf, all.collect())),
            _ => Err(ForwardedCertError::XfccLeafMismatch),
        }
    }

    fn decode_nginx(
        &self,
        lines: &Lines<'_>,
    ) -> Result<CertificateDer<'static>, ForwardedCertError> {
        let value = self.single_value(lines)?;
        let mut one = self.url_encoded_pem(value, CertCount::One)?;
        one.pop().ok_or_else(|| self.no_certificate())
    }

    fn decode_haproxy(
        &self,
        lines: &Lines<'_>,
    ) -> Result<CertificateDer<'static>, ForwardedCertError> {
        let value = self.single_value(lines)?;
        let der = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|e| ForwardedCertError::Base64 {
                header: self.name.clone(),
                detail: DecodeDetail(DecodeDetailInner::Base64(e)),
            })?;
        if der.is_empty() {
            return Err(self.empty());
        }
        Ok(CertificateDer::from(der))
    }

    fn no_certificate(&self) -> ForwardedCertError {
        ForwardedCertError::NoCertificate {
            header: self.name.clone(),
        }
    }

    /// Percent-decodes `raw` (refusing a `%` not followed by two hex digits, which
    /// `percent-encoding` would pass through) and reads the PEM certificates in it.
    fn url_encoded_pem(
        &self,
        raw: &[u8],
        count: CertCount,
    ) -> Result<Vec<CertificateDer<'static>>, ForwardedCertError> {
        let header = &self.name;
        let bad_escape = raw.iter().enumerate().any(|(i, &b)| {
            b == b'%'
                && !(raw.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && raw.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        });
        if bad_escape {
            return Err(ForwardedCertError::PercentEncoding {
                header: header.clone(),
            });
        }
        let pem_text: Cow<'_, [u8]> = percent_encoding::percent_decode(raw).into();
        let mut certs = Vec::new();
        for section in <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(&pem_text) {
            let (kind, der) = section.map_err(|e| ForwardedCertError::Pem {
                header: header.clone(),
                detail: DecodeDetail(DecodeDetailInner::Pem(pem_problem(&e))),
            })?;
            if kind != SectionKind::Certificate {
                return Err(ForwardedCertError::UnexpectedPemSection {
                    header: header.clone(),
                });
            }
            if der.is_empty() {
                return Err(ForwardedCertError::Empty {
                    header: header.clone(),
                });
            }
            match count {
                CertCount::One if !certs.is_empty() => {
                    return Err(ForwardedCertError::MultipleCertificates {
                        header: header.clone(),
                    });
                }
                CertCount::AtMost(limit) if certs.len() == limit => {
                    return Err(ForwardedCertError::ChainTooLong { limit });
                }
                _ => certs.push(CertificateDer::from(der)),
            }
        }
        if certs.is_empty() {
            return Err(self.no_certificate());
        }
        Ok(certs)
    }
}

#[derive(Clone, Copy)]
enum CertCount {
    One,
    AtMost(usize),
}

/// The field lines found, in order.
pub(crate) struct Lines<'h> {
    main: Vec<&'h HeaderValue>,
    chain: Vec<&'h HeaderValue>,
}

impl<'h> Lines<'h> {
    /// The lines of the main header (the leaf's, or XFCC's).
    pub(crate) fn main(&self) -> &[&'h HeaderValue] {
        &self.main
    }

    /// The lines of the RFC 9440 chain header (empty for the other formats).
    pub(crate) fn chain(&self) -> &[&'h HeaderValue] {
        &self.chain
    }
}

impl Lines<'_> {
    fn fingerprint(&self, format: ForwardedCertFormat) -> ForwardedFingerprint {
        // Length-prefixed, so that no two different sets of lines hash the same input.
        let mut hash = Sha256::new();
        hash.update(b"tower-mtls forwarded certificate\0");
        hash.update(format.as_str().as_bytes());
        for values in [&self.main, &self.chain] {
            hash.update((values.len() as u64).to_be_bytes());
            for value in values {
                hash.update((value.len() as u64).to_be_bytes());
                hash.update(value.as_bytes());
            }
        }
        ForwardedFingerprint(hash.finalize().into())
    }
}

struct Budget {
    used: usize,
    lines: usize,
    limit: usize,
}

impl Budget {
    /// Collects the lines of one header, stopping as soon as the total passes the limit.
    fn take<'h>(
        &mut self,
        values: http::header::GetAll<'h, HeaderValue>,
    ) -> Result<Vec<&'h HeaderValue>, ForwardedCertError> {
        let mut lines = Vec::new();
        for value in values {
            let separator = if self.lines == 0 { 0 } else { 2 };
            self.lines += 1;
            self.used = self.used.saturating_add(value.len() + separator);
            if self.used > self.limit {
                return Err(ForwardedCertError::TooLarge { limit: self.limit });
            }
            lines.push(value);
        }
        Ok(lines)
    }
}

fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// Combines the lines of a list-valued field (RFC 9110 section 5.3); empty lines add no
/// member.
fn join_list<'h>(lines: &[&'h HeaderValue]) -> Cow<'h, [u8]> {
    let mut non_empty = lines
        .iter()
        .map(|v| trim_ows(v.as_bytes()))
        .filter(|v| !v.is_empty());
    let Some(first) = non_empty.next() else {
        return Cow::Borrowed(b"");
    };
    let mut rest = non_empty.peekable();
    if rest.peek().is_none() {
        return Cow::Borrowed(first);
    }
    let mut joined = first.to_vec();
    for value in rest {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(value);
    }
    Cow::Owned(joined)
}

fn byte_sequence(
    item: sfv::Item,
    header: &HeaderName,
) -> Result<CertificateDer<'static>, ForwardedCertError> {
    if !item.params.is_empty() {
        return Err(ForwardedCertError::UnexpectedParameters {
            header: header.clone(),
        });
    }
    match item.bare_item {
        sfv::BareItem::ByteSequence(der) if der.is_empty() => Err(ForwardedCertError::Empty {
            header: header.clone(),
        }),
        sfv::BareItem::ByteSequence(der) => Ok(CertificateDer::from(der)),
        _ => Err(ForwardedCertError::NotAByteSequence {
            header: header.clone(),
        }),
    }
}

fn pem_problem(error: &pem::Error) -> &'static str {
    // pki-types' Display quotes the offending line: peer bytes that have no place in logs.
    match error {
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a PEM body is not valid base64",
        pem::Error::SectionTooLarge => "a PEM section is too large",
        _ => "the PEM text is malformed",
    }
}

// ---------------------------------------------------------------------------------------------
// XFCC: element *( "," element ), element = pair *( ";" pair ), pair = key "=" value,
// value = quoted-string / *unquoted. OWS is allowed around "," and ";".

struct XfccPair {
    key: Range<usize>,
    value: Range<usize>,
    quoted: bool,
}

impl XfccPair {
    fn value<'a>(&self, input: &'a [u8]) -> Cow<'a, [u8]> {
        let raw = &input[self.value.clone()];
        if !self.quoted || !raw.contains(&b'\\') {
            return Cow::Borrowed(raw);
        }
        // The syntax pass has checked that every `\` is followed by a character.
        let mut out = Vec::with_capacity(raw.len());
        let mut bytes = raw.iter();
        while let Some(&b) = bytes.next() {
            if b == b'\\' {
                if let Some(&escaped) = bytes.next() {
                    out.push(escaped);
                }
            } else {
                out.push(b);
            }
        }
        Cow::Owned(out)
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_unquoted_value_char(b: u8) -> bool {
    // Envoy leaves URIs unquoted, and they may contain "="; everything else it quotes.
    (0x21..=0x7e).contains(&b) && !matches!(b, b'"' | b',' | b';' | b'\\')
}

fn skip_ows(input: &[u8], mut pos: usize) -> usize {
    while matches!(input.get(pos), Some(b' ' | b'\t')) {
        pos += 1;
    }
    pos
}

/// Checks the syntax of the whole value and returns the pairs of its last non-empty element.
fn last_xfcc_element(input: &[u8]) -> Result<Vec<XfccPair>, (XfccSyntax, usize)> {
    let mut last = Vec::new();
    let mut pos = skip_ows(input, 0);
    loop {
        let mut element = Vec::new();
        if !matches!(input.get(pos), None | Some(b',')) {
            loop {
                let (pair, next) = xfcc_pair(input, pos)?;
                element.push(pair);
                pos = skip_ows(input, next);
                match input.get(pos) {
                    None | Some(b',') => break,
                    Some(b';') => pos = skip_ows(input, pos + 1),
                    Some(_) => return Err((XfccSyntax::InvalidValue, pos)),
                }
            }
        }
        if !element.is_empty() {
            last = element;
        }
        match input.get(pos) {
            None => return Ok(last),
            _ => pos = skip_ows(input, pos + 1),
        }
    }
}

fn xfcc_pair(input: &[u8], start: usize) -> Result<(XfccPair, usize), (XfccSyntax, usize)> {
    let mut pos = start;
    while input.get(pos).copied().is_some_and(is_tchar) {
        pos += 1;
    }
    let key = start..pos;
    match input.get(pos) {
        Some(b'=') if key.is_empty() => return Err((XfccSyntax::EmptyKey, pos)),
        Some(b'=') => pos += 1,
        None | Some(b';' | b',') if key.is_empty() => return Err((XfccSyntax::EmptyKey, pos)),
        None | Some(b';' | b',' | b' ' | b'\t') => return Err((XfccSyntax::MissingValue, pos)),
        Some(_) => return Err((XfccSyntax::InvalidKey, pos)),
    }
    if input.get(pos) == Some(&b'"') {
        let open = pos;
        pos += 1;
        let value_start = pos;
        loop {
            match input.get(pos) {
                None => return Err((XfccSyntax::UnterminatedQuote, open)),
                Some(b'"') => break,
                Some(b'\\') => match input.get(pos + 1) {
                    Some(b'\t' | 0x20..=0x7e) => pos += 2,
                    _ => return Err((XfccSyntax::InvalidEscape, pos)),
                },
                Some(b'\t' | 0x20..=0x7e) => pos += 1,
                Some(_) => return Err((XfccSyntax::InvalidValue, pos)),
            }
        }
        let value = value_start..pos;
        let after = skip_ows(input, pos + 1);
        if !matches!(input.get(after), None | Some(b';' | b',')) {
            return Err((XfccSyntax::TextAfterQuotedValue, after));
        }
        Ok((
            XfccPair {
                key,
                value,
                quoted: true,
            },
            pos + 1,
        ))
    } else {
        let value_start = pos;
        while input.get(pos).copied().is_some_and(is_unquoted_value_char) {
            pos += 1;
        }
        Ok((
            XfccPair {
                key,
                value: value_start..pos,
                quoted: false,
            },
            pos,
        ))
    }
}

/// What is wrong with the syntax of an `x-forwarded-client-cert` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum XfccSyntax {
    /// A pair with no key: `=value`, `;;`, a trailing `;`.
    EmptyKey,
    /// A key with a character outside RFC 9110 `tchar`.
    InvalidKey,
    /// A key with no `=value`.
    MissingValue,
    /// A quoted value without its closing `"`.
    UnterminatedQuote,
    /// A `\` at the end of a quoted value, or before a control character.
    InvalidEscape,
    /// Something other than `;` or `,` after a quoted value.
    TextAfterQuotedValue,
    /// A character that has no place in a value (`"` or `\` in an unquoted value, a space
    /// inside one, a control character).
    InvalidValue,
}

impl fmt::Display for XfccSyntax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EmptyKey => "a pair has no key",
            Self::InvalidKey => "a key has a character outside tchar",
            Self::MissingValue => "a key has no value",
            Self::UnterminatedQuote => "a quoted value is not closed",
            Self::InvalidEscape => "a backslash escapes nothing",
            Self::TextAfterQuotedValue => "text follows a quoted value",
            Self::InvalidValue => "a value has a character it cannot have",
        })
    }
}

// ---------------------------------------------------------------------------------------------

/// A certificate chain as a proxy forwarded it: leaf first, **not verified**.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedChain {
    leaf: CertificateDer<'static>,
    intermediates: Vec<CertificateDer<'static>>,
    fingerprint: ForwardedFingerprint,
}

impl ForwardedChain {
    /// The client's own certificate (DER).
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.leaf
    }

    /// The rest of the chain as forwarded (DER), in the proxy's order; empty for formats that
    /// carry only the leaf. It may include a root: treat it like a TLS peer's intermediates,
    /// as candidates for path building, never as trust anchors.
    pub fn intermediates(&self) -> &[CertificateDer<'static>] {
        &self.intermediates
    }

    /// Every certificate, leaf first.
    pub fn certificates(&self) -> impl Iterator<Item = &CertificateDer<'static>> {
        std::iter::once(&self.leaf).chain(&self.intermediates)
    }

    /// The number of certificates, leaf included (at least 1).
    pub fn len(&self) -> usize {
        1 + self.intermediates.len()
    }

    /// Always `false`: a chain has a leaf. (Here for the `len`/`is_empty` pair.)
    pub fn is_empty(&self) -> bool {
        false
    }

    /// SHA-256 over the raw header values this chain was read from (the same value as
    /// [`ForwardedCertHeader::fingerprint`]).
    pub fn fingerprint(&self) -> ForwardedFingerprint {
        self.fingerprint
    }

    /// The leaf and the intermediates.
    pub fn into_parts(self) -> (CertificateDer<'static>, Vec<CertificateDer<'static>>) {
        (self.leaf, self.intermediates)
    }
}

/// SHA-256 of the raw forwarded header values (and the format name): equal fingerprints mean
/// byte-identical headers, so a parse and verification result can be reused.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ForwardedFingerprint([u8; 32]);

impl ForwardedFingerprint {
    /// The 32 digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ForwardedFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ForwardedFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ForwardedFingerprint({self})")
    }
}

/// Why the forwarded certificate headers of a request cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardedCertError {
    /// A header that carries one certificate appears more than once.
    #[error("{header} appears more than once")]
    Duplicate {
        /// The repeated header.
        header: HeaderName,
    },
    /// The values together are larger than [`ForwardedCertHeader::max_bytes`].
    #[error("forwarded certificate headers exceed {limit} bytes")]
    TooLarge {
        /// The configured bound.
        limit: usize,
    },
    /// More certificates than [`ForwardedCertHeader::max_chain_len`].
    #[error("forwarded certificate chain has more than {limit} certificates")]
    ChainTooLong {
        /// The configured bound.
        limit: usize,
    },
    /// A byte outside visible ASCII (obs-text, 0x80-0xFF).
    #[error("{header} has a byte outside visible ASCII")]
    NotAscii {
        /// The header.
        header: HeaderName,
    },
    /// An empty value, an empty certificate, or an XFCC value with no element.
    #[error("{header} is empty")]
    Empty {
        /// The header.
        header: HeaderName,
    },
    /// The RFC 9440 chain header without the leaf header.
    #[error("{header} is present without the leaf certificate header")]
    ChainWithoutLeaf {
        /// The chain header.
        header: HeaderName,
    },
    /// Not a structured field of the expected type (RFC 9651): an RFC 9440 value without its
    /// colons, bad base64 between them, a list where one item belongs, trailing text.
    #[error("{header} is not a valid structured field: {detail}")]
    StructuredField {
        /// The header.
        header: HeaderName,
        /// The structured-field parser's account.
        #[source]
        detail: DecodeDetail,
    },
    /// A well-formed structured field, but not a Byte Sequence (a token, a string, an inner
    /// list, ...).
    #[error("{header} holds something other than a byte sequence")]
    NotAByteSequence {
        /// The header.
        header: HeaderName,
    },
    /// Parameters on an RFC 9440 Byte Sequence, where none are defined.
    #[error("{header} has structured-field parameters where none belong")]
    UnexpectedParameters {
        /// The header.
        header: HeaderName,
    },
    /// Not standard, padded base64 (haproxy format).
    #[error("{header} is not valid base64: {detail}")]
    Base64 {
        /// The header.
        header: HeaderName,
        /// The base64 decoder's account.
        #[source]
        detail: DecodeDetail,
    },
    /// A `%` not followed by two hexadecimal digits.
    #[error("{header} has an invalid percent-encoding")]
    PercentEncoding {
        /// The header.
        header: HeaderName,
    },
    /// The URL-decoded text is not well-formed PEM.
    #[error("{header} is not valid PEM: {detail}")]
    Pem {
        /// The header.
        header: HeaderName,
        /// What is wrong with the PEM.
        #[source]
        detail: DecodeDetail,
    },
    /// PEM with no `CERTIFICATE` section.
    #[error("{header} holds no PEM certificate")]
    NoCertificate {
        /// The header.
        header: HeaderName,
    },
    /// A PEM section other than `CERTIFICATE` (a key, a CRL, ...).
    #[error("{header} holds a PEM section that is not a certificate")]
    UnexpectedPemSection {
        /// The header.
        header: HeaderName,
    },
    /// More than one certificate where only the leaf belongs (nginx, XFCC `Cert=`).
    #[error("{header} holds more than one certificate where only the leaf belongs")]
    MultipleCertificates {
        /// The header.
        header: HeaderName,
    },
    /// The `x-forwarded-client-cert` value is not well-formed.
    #[error("x-forwarded-client-cert is malformed at byte {offset}: {problem}")]
    Xfcc {
        /// What is wrong.
        problem: XfccSyntax,
        /// Byte offset in the combined value (field lines joined with `", "`).
        offset: usize,
    },
    /// `Cert` or `Chain` twice in the element that counts.
    #[error("the last x-forwarded-client-cert element has {key} twice")]
    XfccDuplicateKey {
        /// `"Cert"` or `"Chain"`.
        key: &'static str,
    },
    /// The element that counts has neither `Cert` nor `Chain` (the proxy was not configured
    /// to forward the certificate, only e.g. `Hash` or `Subject`).
    #[error("the last x-forwarded-client-cert element has no Cert or Chain")]
    XfccNoCertificate,
    /// `Cert` is not the first certificate of `Chain`.
    #[error("x-forwarded-client-cert Cert is not the first certificate of Chain")]
    XfccLeafMismatch,
}

/// What a decoder (structured fields, base64, PEM) said about a value it refused. Displays
/// without repeating the peer's bytes.
#[derive(Debug)]
pub struct DecodeDetail(DecodeDetailInner);

#[derive(Debug)]
enum DecodeDetailInner {
    Sfv(sfv::Error),
    Base64(base64::DecodeError),
    Pem(&'static str),
}

impl fmt::Display for DecodeDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            DecodeDetailInner::Sfv(e) => fmt::Display::fmt(e, f),
            DecodeDetailInner::Base64(e) => fmt::Display::fmt(e, f),
            DecodeDetailInner::Pem(problem) => f.write_str(problem),
        }
    }
}

impl std::error::Error for DecodeDetail {}
