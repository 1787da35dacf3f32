//! [`TrustedProxies`]: which connections may forward a client certificate, and in which
//! header format.

use std::fmt;

use crate::authorize::matcher::Matcher;
use crate::forwarded::format::{ForwardedCertFormat, ForwardedCertHeader, ForwardedConfigError};
use crate::identity::principal::Principal;
use crate::identity::roles::Roles;

/// Default of [`TrustedProxies::cache_max_bytes`]: 1 MiB per proxy connection.
pub const DEFAULT_CACHE_MAX_BYTES: usize = 1024 * 1024;

/// What one cached forwarded identity costs against [`TrustedProxies::cache_max_bytes`]
/// besides its certificates' DER: the parsed names, the key and the cache's own tables.
pub const CACHE_ENTRY_BYTES: usize = 512;

/// The TLS-terminating proxies (nginx, haproxy, Envoy, a load balancer) whose connections may
/// forward a client certificate in a request header, and the header format they use.
///
/// A connection is a trusted proxy when its **own verified** principal matches one of the
/// [`proxy`](Self::proxy) matchers (the Kubernetes front-proxy model: the header counts only on
/// a connection whose certificate names an allowed proxy). Give it to
/// [`MtlsAcceptor::trusted_proxies`](crate::MtlsAcceptor::trusted_proxies); then, for every
/// request through [`MtlsAuthLayer`](crate::MtlsAuthLayer):
///
/// - **On a trusted-proxy connection** the forwarded chain is the client: it is verified
///   exactly like a TLS peer's chain, by the acceptor's *current* trust configuration (bundles,
///   SPIFFE trust domains, intermediates — the forwarded ones too, for path building — CRLs,
///   EKU, validity), and becomes the request's [`Principal`], with
///   [`forwarded_by`](Principal::forwarded_by) naming the proxy. A request without the header,
///   or with one that is malformed or does not verify, gets **401**: the proxy's own identity
///   is never a client identity. Each distinct forwarded certificate is parsed and verified
///   once per connection and generation of the trust configuration (a per-connection cache
///   bounded by [`cache_max_bytes`](Self::cache_max_bytes)).
/// - **On every other connection** every header of the format is removed from the request
///   before the inner service sees it (logged and counted), and the identity stays the
///   connection's own.
///
/// ```
/// use tower_mtls::authorize::Matcher;
/// use tower_mtls::forwarded::{ForwardedCertFormat, TrustedProxies};
/// use tower_mtls::SpiffeId;
///
/// let proxies = TrustedProxies::new(ForwardedCertFormat::Xfcc)
///     .proxy(Matcher::spiffe_id("spiffe://example.org/ns/edge/sa/envoy".parse::<SpiffeId>()?))
///     .proxy(Matcher::dns_name("lb.example.org")?);
/// assert_eq!(proxies.to_string(), r#"xfcc from any(spiffe_id = "spiffe://example.org/ns/edge/sa/envoy", dns = "lb.example.org")"#);
/// // let acceptor = MtlsAcceptor::new(tls).trusted_proxies(proxies);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Name proxies narrowly: a matcher that every client matches
/// ([`Matcher::any_verified`]) would let every client claim to be any other.
#[derive(Clone, Debug)]
pub struct TrustedProxies {
    proxies: Vec<Matcher>,
    header: ForwardedCertHeader,
    cache_max_bytes: usize,
}

impl TrustedProxies {
    /// Proxies that forward in `format`, from its default header. No connection is a proxy
    /// until [`proxy`](Self::proxy) names one: until then the format's headers are only
    /// removed from every request.
    pub fn new(format: ForwardedCertFormat) -> Self {
        Self::from_header(ForwardedCertHeader::new(format))
    }

    /// Proxies that forward as `header` reads (its format, header name and bounds).
    pub fn from_header(header: ForwardedCertHeader) -> Self {
        TrustedProxies {
            proxies: Vec::new(),
            header,
            cache_max_bytes: DEFAULT_CACHE_MAX_BYTES,
        }
    }

    /// Reads the certificate from `name` instead of the format's default header (for
    /// [`Rfc9440`](ForwardedCertFormat::Rfc9440), the leaf header; the chain header is `name`
    /// followed by `-Chain`). See [`ForwardedCertHeader::header_name`].
    ///
    /// # Errors
    /// An invalid header name, or one HTTP itself needs.
    pub fn header_name(mut self, name: &str) -> Result<Self, ForwardedConfigError> {
        self.header = self.header.header_name(name)?;
        Ok(self)
    }

    /// A connection whose verified principal (and roles) match `matcher` is a trusted proxy.
    /// Several calls add alternatives: any match makes the connection a proxy.
    pub fn proxy(mut self, matcher: Matcher) -> Self {
        self.proxies.push(matcher);
        self
    }

    /// Bounds the memory each proxy connection spends on remembering verified forwarded
    /// identities (default [`DEFAULT_CACHE_MAX_BYTES`]); each costs [`CACHE_ENTRY_BYTES`]
    /// plus its certificates' DER. When full, a new one evicts an old one in O(1). 0 turns
    /// the cache off: every request is then verified again.
    pub fn cache_max_bytes(mut self, bytes: usize) -> Self {
        self.cache_max_bytes = bytes;
        self
    }

    /// The header reader.
    pub fn header(&self) -> &ForwardedCertHeader {
        &self.header
    }

    /// The format read.
    pub fn format(&self) -> ForwardedCertFormat {
        self.header.format()
    }

    /// The proxy matchers, in the order given.
    pub fn proxies(&self) -> &[Matcher] {
        &self.proxies
    }

    /// The bound set by [`cache_max_bytes`](Self::cache_max_bytes).
    pub fn cache_byte_limit(&self) -> usize {
        self.cache_max_bytes
    }

    /// Whether a connection of `principal` with `roles` is a trusted proxy.
    pub fn is_proxy(&self, principal: &Principal, roles: &Roles) -> bool {
        self.proxies.iter().any(|m| m.matches(principal, roles))
    }
}

impl fmt::Display for TrustedProxies {
    /// `FORMAT from MATCHER`, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} from ", self.header.format())?;
        match &self.proxies[..] {
            [] => f.write_str("nobody"),
            [one] => write!(f, "{one}"),
            many => {
                f.write_str("any(")?;
                for (i, m) in many.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{m}")?;
                }
                f.write_str(")")
            }
        }
    }
}
