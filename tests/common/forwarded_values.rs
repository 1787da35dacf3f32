//! How TLS-terminating proxies write a client certificate into a request header: the values
//! the forwarded-identity tests send as a proxy (or as a client forging one).

use base64::Engine as _;
use rustls::pki_types::CertificateDer;

/// Everything but unreserved characters percent-encoded, as nginx's `$ssl_client_escaped_cert`
/// and Envoy's XFCC `Cert`/`Chain` encode PEM.
pub fn url_encode(text: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(text, SET).to_string()
}

/// nginx's `$ssl_client_escaped_cert`: the certificate's PEM, URL-encoded.
pub fn nginx(cert: &CertificateDer<'_>) -> String {
    url_encode(&super::pki::der_to_pem(cert))
}

/// haproxy's `%[ssl_c_der,base64]`: the DER in standard, padded base64.
pub fn haproxy(der: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(der)
}
