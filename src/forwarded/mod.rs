//! Client certificates forwarded by TLS-terminating proxies (nginx, haproxy, Envoy, RFC 9440
//! load balancers) in request headers.
//!
//! Only the header formats live here so far: [`ForwardedCertHeader`] reads a request's
//! forwarded chain, leaf first, without verifying it. Believing it is another matter: a
//! forwarded chain counts only on a connection whose own verified identity is a trusted proxy,
//! and only after the same verification as a direct client's chain.
//!
//! ```
//! use http::HeaderMap;
//! use tower_mtls::forwarded::{ForwardedCertFormat, ForwardedCertHeader};
//!
//! let reader = ForwardedCertHeader::new(ForwardedCertFormat::Rfc9440).header_name("X-Client-Cert")?;
//! let names: Vec<&str> = reader.header_names().map(|name| name.as_str()).collect();
//! assert_eq!(names, ["x-client-cert", "x-client-cert-chain"]);
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("x-client-cert", "not-a-byte-sequence".parse()?);
//! assert!(reader.parse(&headers).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod format;

pub use format::{
    DEFAULT_MAX_BYTES, DEFAULT_MAX_CHAIN_LEN, DecodeDetail, ForwardedCertError,
    ForwardedCertFormat, ForwardedCertHeader, ForwardedChain, ForwardedConfigError,
    ForwardedFingerprint, XfccSyntax,
};
