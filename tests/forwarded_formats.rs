//! The forwarded-certificate header formats, on real samples: what nginx 1.22 and haproxy 2.6
//! really sent (captured on loopback, see tests/fixtures/forwarded/README.md), RFC 9440's
//! Appendix A, Envoy's documented XFCC examples and Envoy's encoding of real certificates; and
//! on hostile inputs.

use std::path::PathBuf;

use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use rustls::pki_types::CertificateDer;
use tower_mtls::forwarded::{
    DEFAULT_MAX_BYTES, DEFAULT_MAX_CHAIN_LEN, ForwardedCertError, ForwardedCertFormat,
    ForwardedCertHeader, ForwardedChain, ForwardedConfigError, XfccSyntax,
};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn fixture_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/forwarded")
        .join(rel)
}

fn fixture(rel: &str) -> String {
    let path = fixture_path(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A one-line fixture value, without its final newline.
fn value(rel: &str) -> String {
    fixture(rel).trim_end_matches('\n').to_owned()
}

/// The certificates of a PEM fixture, read with the `pem` crate (not the code under test).
fn certs(rel: &str) -> Vec<CertificateDer<'static>> {
    let parsed = pem::parse_many(fixture(rel)).expect("fixture PEM");
    assert!(!parsed.is_empty(), "{rel} holds no PEM");
    parsed
        .into_iter()
        .map(|p| {
            assert_eq!(p.tag(), "CERTIFICATE");
            CertificateDer::from(p.into_contents())
        })
        .collect()
}

fn cert(rel: &str) -> CertificateDer<'static> {
    let mut all = certs(rel);
    assert_eq!(all.len(), 1, "{rel} should hold one certificate");
    all.remove(0)
}

/// PEM with LF line endings, as OpenSSL's PEM_write (nginx, Envoy) writes it.
fn pem_block(tag: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(tag, der.to_vec()), config)
}

fn pem_text(der: &[u8]) -> String {
    pem_block("CERTIFICATE", der)
}

/// Envoy's URL encoding of PEM (its `urlEncodedPemEncodedPeerCertificate`).
fn envoy_url_encode(pem: &str) -> String {
    pem.replace('\n', "%0A")
        .replace(' ', "%20")
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

/// The header block of a captured request (`request.txt`), every field line kept, in order.
fn captured_request(rel: &str) -> HeaderMap {
    let raw = fixture(rel);
    let mut lines = raw.split("\r\n");
    let request_line = lines.next().expect("request line");
    assert!(
        request_line.starts_with("GET /fixture HTTP/1."),
        "{request_line}"
    );
    let mut headers = HeaderMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').expect("field line");
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value.trim_matches([' ', '\t'])).expect("value"),
        );
    }
    headers
}

fn headers(lines: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in lines {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    map
}

fn reader(format: ForwardedCertFormat) -> ForwardedCertHeader {
    ForwardedCertHeader::new(format)
}

fn parse_ok(reader: &ForwardedCertHeader, map: &HeaderMap) -> ForwardedChain {
    match reader.parse(map) {
        Ok(Some(chain)) => chain,
        Ok(None) => panic!("expected a chain, got none"),
        Err(e) => panic!("expected a chain, got {e}"),
    }
}

fn parse_err(reader: &ForwardedCertHeader, map: &HeaderMap) -> ForwardedCertError {
    match reader.parse(map) {
        Err(e) => e,
        Ok(other) => panic!("expected an error, got {:?}", other.map(|c| c.len())),
    }
}

fn one(
    format: ForwardedCertFormat,
    value: &str,
) -> Result<Option<ForwardedChain>, ForwardedCertError> {
    reader(format).parse(&headers(&[(format.default_header(), value)]))
}

fn one_err(format: ForwardedCertFormat, value: &str) -> ForwardedCertError {
    match one(format, value) {
        Err(e) => e,
        Ok(other) => panic!(
            "expected an error for {value:.80}, got {:?}",
            other.map(|c| c.len())
        ),
    }
}

use ForwardedCertFormat::{Haproxy, Nginx, Rfc9440, Xfcc};

// ----------------------------------------------------------------------------- real samples

#[test]
fn nginx_escaped_cert_as_captured() {
    let map = captured_request("nginx/request.txt");
    assert_eq!(map.get_all("x-ssl-client-cert").iter().count(), 1);
    let chain = parse_ok(&reader(Nginx), &map);
    assert_eq!(chain.leaf(), &cert("pki/client.pem"));
    assert!(chain.intermediates().is_empty());
    assert_eq!(chain.len(), 1);
}

#[test]
fn nginx_replaces_a_client_sent_header_and_the_proxy_value_parses() {
    let map = captured_request("nginx/request-client-sent-header.txt");
    let values: Vec<_> = map.get_all("x-ssl-client-cert").iter().collect();
    assert_eq!(
        values.len(),
        1,
        "nginx forwarded the client's own header too"
    );
    assert!(!values[0].as_bytes().starts_with(b"spoofed"));
    assert_eq!(
        parse_ok(&reader(Nginx), &map).leaf(),
        &cert("pki/client.pem")
    );
}

#[test]
fn haproxy_base64_der_as_captured() {
    let map = captured_request("haproxy/request.txt");
    let chain = parse_ok(&reader(Haproxy), &map);
    assert_eq!(chain.leaf(), &cert("pki/client.pem"));
    assert!(chain.intermediates().is_empty());
}

#[test]
fn haproxy_replaces_a_client_sent_header_and_the_proxy_value_parses() {
    let map = captured_request("haproxy/request-client-sent-header.txt");
    assert_eq!(map.get_all("x-ssl-client-cert").iter().count(), 1);
    assert_eq!(
        parse_ok(&reader(Haproxy), &map).leaf(),
        &cert("pki/client.pem")
    );
}

#[test]
fn haproxy_without_a_client_certificate_sends_an_empty_value_which_is_refused() {
    let map = captured_request("haproxy/request-no-client-cert.txt");
    assert_eq!(
        map.get("x-ssl-client-cert").map(HeaderValue::as_bytes),
        Some(&b""[..])
    );
    assert!(matches!(
        parse_err(&reader(Haproxy), &map),
        ForwardedCertError::Empty { header } if header == "x-ssl-client-cert"
    ));
}

#[test]
fn nginx_and_haproxy_captures_are_not_each_others_format() {
    // Same header name, different encodings: a mix-up is refused, never misread.
    let nginx = captured_request("nginx/request.txt");
    let haproxy = captured_request("haproxy/request.txt");
    assert!(matches!(
        parse_err(&reader(Haproxy), &nginx),
        ForwardedCertError::Base64 { .. }
    ));
    assert!(matches!(
        parse_err(&reader(Nginx), &haproxy),
        ForwardedCertError::NoCertificate { .. }
    ));
}

fn rfc9440_example() -> (String, String, Vec<CertificateDer<'static>>) {
    (
        value("rfc9440/client-cert.txt"),
        value("rfc9440/client-cert-chain.txt"),
        certs("rfc9440/chain.pem"),
    )
}

#[test]
fn rfc9440_appendix_a_leaf_and_chain() {
    let (leaf, chain, expected) = rfc9440_example();
    assert_eq!(expected.len(), 3);
    let map = headers(&[("Client-Cert", &leaf), ("Client-Cert-Chain", &chain)]);
    let got = parse_ok(&reader(Rfc9440), &map);
    assert_eq!(got.leaf(), &expected[0]);
    assert_eq!(got.intermediates(), &expected[1..]);
    assert_eq!(got.certificates().cloned().collect::<Vec<_>>(), expected);
}

#[test]
fn rfc9440_appendix_a_leaf_alone() {
    let (leaf, _, expected) = rfc9440_example();
    let got = parse_ok(&reader(Rfc9440), &headers(&[("Client-Cert", &leaf)]));
    assert_eq!(got.leaf(), &expected[0]);
    assert!(got.intermediates().is_empty());
}

#[test]
fn rfc9440_chain_split_over_field_lines_is_combined() {
    let (leaf, chain, expected) = rfc9440_example();
    let (first, second) = chain.split_once(", ").expect("two members");
    let map = headers(&[
        ("Client-Cert-Chain", first),
        ("Client-Cert", &leaf),
        ("Client-Cert-Chain", second),
    ]);
    let got = parse_ok(&reader(Rfc9440), &map);
    assert_eq!(got.intermediates(), &expected[1..]);
    assert_eq!(
        got.fingerprint(),
        reader(Rfc9440).fingerprint(&map).unwrap().unwrap(),
        "parse and fingerprint agree"
    );
}

#[test]
fn rfc9440_chain_that_repeats_the_leaf_first_does_not_repeat_it() {
    let (leaf, chain, expected) = rfc9440_example();
    let with_leaf = format!("{leaf}, {chain}");
    let map = headers(&[("Client-Cert", &leaf), ("Client-Cert-Chain", &with_leaf)]);
    let got = parse_ok(&reader(Rfc9440), &map);
    assert_eq!(got.leaf(), &expected[0]);
    assert_eq!(got.intermediates(), &expected[1..]);
}

#[test]
fn rfc9440_empty_chain_line_means_no_intermediates() {
    let (leaf, _, expected) = rfc9440_example();
    let mut map = headers(&[("Client-Cert", &leaf)]);
    map.append("client-cert-chain", HeaderValue::from_static(""));
    let got = parse_ok(&reader(Rfc9440), &map);
    assert_eq!(got.leaf(), &expected[0]);
    assert!(got.intermediates().is_empty());
}

#[test]
fn xfcc_envoy_documented_examples_parse_but_carry_no_certificate() {
    // The three examples of Envoy's header documentation (Hash/Subject/URI/DNS only, two
    // elements in the second): well-formed, so the only complaint is the missing Cert/Chain.
    let examples = fixture("xfcc/envoy-docs-examples.txt");
    let examples: Vec<&str> = examples.lines().collect();
    assert_eq!(examples.len(), 3);
    for example in examples {
        assert!(
            matches!(
                one_err(Xfcc, example),
                ForwardedCertError::XfccNoCertificate
            ),
            "{example}"
        );
    }
}

#[test]
fn xfcc_envoy_documented_examples_with_a_real_certificate() {
    // Example 3 of Envoy's docs (quoted Subject, URI and two DNS) with the Cert field Envoy
    // adds when `set_current_client_cert_details` asks for it, and a real certificate.
    let bob = cert("pki/bob.pem");
    let example = fixture("xfcc/envoy-docs-examples.txt")
        .lines()
        .nth(2)
        .unwrap()
        .to_owned();
    let with_cert = format!("{example};Cert=\"{}\"", envoy_url_encode(&pem_text(&bob)));
    let chain = one(Xfcc, &with_cert).unwrap().unwrap();
    assert_eq!(chain.leaf(), &bob);
    // Example 2 (two elements): a Cert in the first element only is not the proxy's.
    let example2 = fixture("xfcc/envoy-docs-examples.txt")
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    let (first, second) = example2.split_once(',').unwrap();
    let spoof = format!(
        "{first};Cert=\"{}\",{second}",
        envoy_url_encode(&pem_text(&bob))
    );
    assert!(matches!(
        one_err(Xfcc, &spoof),
        ForwardedCertError::XfccNoCertificate
    ));
}

#[test]
fn xfcc_sanitize_set_cert_and_chain() {
    let chain = one(Xfcc, &value("xfcc/sanitize-set-alice.txt"))
        .unwrap()
        .unwrap();
    assert_eq!(chain.leaf(), &cert("pki/client.pem"));
    assert_eq!(chain.intermediates(), &[cert("pki/intermediate.pem")]);
}

#[test]
fn xfcc_cert_only() {
    // Its Subject is quoted and holds `\"`, `\,` and `,`, `=`: all inside the value.
    let raw = value("xfcc/cert-only-bob.txt");
    assert!(raw.contains(r#"Subject="CN=bob \"the builder\"\, jr,OU=users"#));
    let chain = one(Xfcc, &raw).unwrap().unwrap();
    assert_eq!(chain.leaf(), &cert("pki/bob.pem"));
    assert!(chain.intermediates().is_empty());
}

#[test]
fn xfcc_only_the_last_element_counts() {
    // A client sent an element naming alice (an admin); the proxy appended bob's.
    let raw = value("xfcc/append-forward-spoofed-then-bob.txt");
    let chain = one(Xfcc, &raw).unwrap().unwrap();
    assert_eq!(chain.leaf(), &cert("pki/bob.pem"));
    assert_eq!(chain.intermediates(), &[cert("pki/intermediate.pem")]);
    assert_ne!(chain.leaf(), &cert("pki/client.pem"));
}

#[test]
fn xfcc_field_lines_are_combined_and_the_last_line_counts() {
    let alice = value("xfcc/sanitize-set-alice.txt");
    let bob = value("xfcc/cert-only-bob.txt");
    let map = headers(&[
        ("x-forwarded-client-cert", &alice),
        ("X-Forwarded-Client-Cert", &bob),
    ]);
    assert_eq!(parse_ok(&reader(Xfcc), &map).leaf(), &cert("pki/bob.pem"));
    let map = headers(&[
        ("x-forwarded-client-cert", &bob),
        ("x-forwarded-client-cert", &alice),
    ]);
    assert_eq!(
        parse_ok(&reader(Xfcc), &map).leaf(),
        &cert("pki/client.pem")
    );
}

#[test]
fn xfcc_keys_are_case_insensitive_and_chain_alone_gives_the_leaf() {
    let alice = cert("pki/client.pem");
    let inter = cert("pki/intermediate.pem");
    let chain_pem = format!("{}{}", pem_text(&alice), pem_text(&inter));
    let raw = format!("hash=00;CHAIN=\"{}\"", envoy_url_encode(&chain_pem));
    let got = one(Xfcc, &raw).unwrap().unwrap();
    assert_eq!(got.leaf(), &alice);
    assert_eq!(got.intermediates(), &[inter]);
    let raw = format!("cErT=\"{}\"", envoy_url_encode(&pem_text(&alice)));
    assert_eq!(one(Xfcc, &raw).unwrap().unwrap().leaf(), &alice);
}

#[test]
fn xfcc_quoted_pairs_in_a_value_are_unescaped() {
    let bob = cert("pki/bob.pem");
    let encoded = envoy_url_encode(&pem_text(&bob));
    // `\-` is a quoted-pair for `-`; left escaped, the BEGIN line would not be PEM.
    let escaped = encoded.replace("-----BEGIN", "\\-----BEGIN");
    assert_ne!(escaped, encoded);
    let raw = format!("Subject=\"a\\\"b\";Cert=\"{escaped}\"");
    assert_eq!(one(Xfcc, &raw).unwrap().unwrap().leaf(), &bob);
}

#[test]
fn xfcc_tolerates_ows_and_empty_list_elements() {
    let bob = value("xfcc/cert-only-bob.txt");
    let raw = format!(" , {bob} ,  ");
    assert_eq!(
        one(Xfcc, &raw).unwrap().unwrap().leaf(),
        &cert("pki/bob.pem")
    );
    let spaced = bob.replace(';', " ; ");
    assert_eq!(
        one(Xfcc, &spaced).unwrap().unwrap().leaf(),
        &cert("pki/bob.pem")
    );
}

#[test]
fn nginx_style_full_escaping_and_envoy_style_partial_escaping_both_decode() {
    let bob = cert("pki/bob.pem");
    let pem = pem_text(&bob);
    let everything: String = pem.bytes().map(|b| format!("%{b:02X}")).collect();
    assert_eq!(one(Nginx, &everything).unwrap().unwrap().leaf(), &bob);
    assert_eq!(
        one(Nginx, &envoy_url_encode(&pem)).unwrap().unwrap().leaf(),
        &bob
    );
}

// --------------------------------------------------------------------------- configuration

#[test]
fn format_names_round_trip() {
    for format in ForwardedCertFormat::ALL {
        assert_eq!(
            format.to_string().parse::<ForwardedCertFormat>().unwrap(),
            format
        );
    }
    assert_eq!("XFCC".parse::<ForwardedCertFormat>().unwrap(), Xfcc);
    assert_eq!(
        "envoy".parse::<ForwardedCertFormat>().unwrap_err(),
        ForwardedConfigError::UnknownFormat("envoy".into())
    );
    assert!("".parse::<ForwardedCertFormat>().is_err());
}

#[test]
fn default_headers_and_header_names() {
    let names = |r: ForwardedCertHeader| {
        r.header_names()
            .map(|n| n.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(reader(Rfc9440)), ["client-cert", "client-cert-chain"]);
    assert_eq!(names(reader(Xfcc)), ["x-forwarded-client-cert"]);
    assert_eq!(names(reader(Nginx)), ["x-ssl-client-cert"]);
    assert_eq!(names(reader(Haproxy)), ["x-ssl-client-cert"]);
    assert_eq!(Rfc9440.default_header(), "Client-Cert");
    assert_eq!(Xfcc.default_header(), "x-forwarded-client-cert");
    assert_eq!(Nginx.default_header(), "X-SSL-Client-Cert");
    assert_eq!(Haproxy.default_header(), "X-SSL-Client-Cert");
    assert!(Rfc9440.carries_intermediates() && Xfcc.carries_intermediates());
    assert!(!Nginx.carries_intermediates() && !Haproxy.carries_intermediates());
    let r = reader(Xfcc);
    assert_eq!(
        (r.byte_limit(), r.chain_len_limit()),
        (DEFAULT_MAX_BYTES, DEFAULT_MAX_CHAIN_LEN)
    );
    assert_eq!(r.chain_name(), None);
}

#[test]
fn header_name_override_is_where_the_certificate_is_read() {
    let (leaf, chain, expected) = rfc9440_example();
    let r = reader(Rfc9440).header_name("X-Client-Cert").unwrap();
    assert_eq!(r.name(), "x-client-cert");
    assert_eq!(
        r.chain_name().map(HeaderName::as_str),
        Some("x-client-cert-chain")
    );
    // The default names are no longer read at all.
    assert!(
        r.parse(&headers(&[("Client-Cert", &leaf)]))
            .unwrap()
            .is_none()
    );
    let map = headers(&[("x-client-cert", &leaf), ("X-Client-Cert-Chain", &chain)]);
    assert_eq!(parse_ok(&r, &map).intermediates(), &expected[1..]);

    let captured = captured_request("haproxy/request.txt");
    let moved = headers(&[("ssl-der", captured["x-ssl-client-cert"].to_str().unwrap())]);
    let r = reader(Haproxy).header_name("SSL-DER").unwrap();
    assert_eq!(parse_ok(&r, &moved).leaf(), &cert("pki/client.pem"));
    assert!(reader(Haproxy).parse(&moved).unwrap().is_none());
}

#[test]
fn header_name_override_refuses_invalid_and_reserved_names() {
    for bad in ["", "bad header", "x:y", "é"] {
        assert_eq!(
            reader(Nginx).header_name(bad).unwrap_err(),
            ForwardedConfigError::InvalidHeaderName(bad.into())
        );
    }
    for reserved in [
        "Host",
        "content-length",
        "Transfer-Encoding",
        "te",
        "connection",
        "grpc-status",
        "content-type",
    ] {
        assert_eq!(
            reader(Xfcc).header_name(reserved).unwrap_err(),
            ForwardedConfigError::ReservedHeaderName(reserved.into())
        );
    }
}

#[test]
fn absent_headers_are_none_not_errors() {
    for format in ForwardedCertFormat::ALL {
        let map = headers(&[("x-unrelated", "1"), ("client-certificate", "x")]);
        assert!(reader(format).parse(&map).unwrap().is_none(), "{format}");
        assert!(
            reader(format).fingerprint(&map).unwrap().is_none(),
            "{format}"
        );
    }
}

#[test]
fn fingerprints_tell_distinct_values_apart_and_repeat_for_equal_ones() {
    let alice = value("xfcc/sanitize-set-alice.txt");
    let bob = value("xfcc/cert-only-bob.txt");
    let fp = |v: &str| {
        reader(Xfcc)
            .fingerprint(&headers(&[("x-forwarded-client-cert", v)]))
            .unwrap()
            .unwrap()
    };
    assert_eq!(fp(&alice), fp(&alice));
    assert_ne!(fp(&alice), fp(&bob));
    assert_eq!(
        fp(&alice),
        one(Xfcc, &alice).unwrap().unwrap().fingerprint()
    );
    assert_eq!(fp(&alice).to_string().len(), 64);
    // The same bytes under another format are another key.
    let value = value("rfc9440/client-cert.txt");
    let nginx_fp = reader(Nginx)
        .header_name("client-cert")
        .unwrap()
        .fingerprint(&headers(&[("client-cert", &value)]));
    let rfc_fp = reader(Rfc9440).fingerprint(&headers(&[("client-cert", &value)]));
    assert_ne!(nginx_fp.unwrap(), rfc_fp.unwrap());
    // One line vs. the same text split over two lines: different raw input, different key.
    let (a, b) = alice.split_once(';').unwrap();
    let split = reader(Xfcc).fingerprint(&headers(&[
        ("x-forwarded-client-cert", a),
        ("x-forwarded-client-cert", b),
    ]));
    assert_ne!(split.unwrap().unwrap(), fp(&alice));
}

// ---------------------------------------------------------------------------- hostile input

#[test]
fn a_single_certificate_header_sent_twice_is_malformed() {
    let (leaf, _, _) = rfc9440_example();
    let haproxy = captured_request("haproxy/request.txt")["x-ssl-client-cert"]
        .to_str()
        .unwrap()
        .to_owned();
    let nginx = captured_request("nginx/request.txt")["x-ssl-client-cert"]
        .to_str()
        .unwrap()
        .to_owned();
    for (format, v) in [(Rfc9440, &leaf), (Haproxy, &haproxy), (Nginx, &nginx)] {
        let name = format.default_header();
        let err = parse_err(&reader(format), &headers(&[(name, v), (name, v)]));
        assert!(
            matches!(&err, ForwardedCertError::Duplicate { header } if header == name.to_ascii_lowercase().as_str()),
            "{format}: {err}"
        );
        // Also when one of the two is empty: two lines are two lines.
        let err = parse_err(&reader(format), &headers(&[(name, ""), (name, v)]));
        assert!(
            matches!(err, ForwardedCertError::Duplicate { .. }),
            "{format}: {err}"
        );
    }
}

#[test]
fn rfc9440_values_that_are_not_byte_sequences() {
    let (leaf, _, _) = rfc9440_example();
    let bare = leaf.trim_matches(':').to_owned();
    for bad in [
        bare.clone(),                 // no colons
        format!(":{bare}"),           // no closing colon
        format!("{bare}:"),           // no opening colon
        format!("{leaf}, {leaf}"),    // a list where one item belongs
        format!("{leaf} trailing"),   // trailing text
        ":M!IB:".to_owned(),          // not base64
        "(:AAAA: :AAAA:)".to_owned(), // an inner list is no item
        format!(":{bare}:;"),         // a parameter without a key
    ] {
        let err = one_err(Rfc9440, &bad);
        assert!(
            matches!(&err, ForwardedCertError::StructuredField { header, .. } if header == "client-cert"),
            "{bad}: {err}"
        );
        assert!(std::error::Error::source(&err).is_some());
    }
    for not_bytes in ["token", "\"a string\"", "42", "?1", "@1659578233"] {
        let err = one_err(Rfc9440, not_bytes);
        assert!(
            matches!(err, ForwardedCertError::NotAByteSequence { .. }),
            "{not_bytes}: {err}"
        );
    }
    let err = one_err(Rfc9440, &format!("{leaf};by=proxy"));
    assert!(
        matches!(err, ForwardedCertError::UnexpectedParameters { .. }),
        "{err}"
    );
    assert!(matches!(
        one_err(Rfc9440, "::"),
        ForwardedCertError::Empty { .. }
    ));
    assert!(matches!(
        one_err(Rfc9440, ""),
        ForwardedCertError::Empty { .. }
    ));
}

#[test]
fn rfc9440_chain_members_that_are_not_plain_byte_sequences() {
    let (leaf, chain, _) = rfc9440_example();
    let first = chain.split_once(", ").unwrap().0.to_owned();
    let cases = [
        (format!("{first}, (:AAAA:)"), "inner list"),
        (format!("{first};x=1"), "parameters"),
        (format!("{first}, token"), "token"),
        (format!("{first},, {first}"), "empty member"),
        (first.trim_matches(':').to_owned(), "no colons"),
        ("::".to_owned(), "empty sequence"),
    ];
    for (bad, what) in cases {
        let err = parse_err(
            &reader(Rfc9440),
            &headers(&[("Client-Cert", &leaf), ("Client-Cert-Chain", &bad)]),
        );
        let ok = match what {
            "inner list" | "token" => {
                matches!(err, ForwardedCertError::NotAByteSequence { ref header } if header == "client-cert-chain")
            }
            "parameters" => matches!(err, ForwardedCertError::UnexpectedParameters { .. }),
            "empty sequence" => {
                matches!(err, ForwardedCertError::Empty { ref header } if header == "client-cert-chain")
            }
            _ => {
                matches!(err, ForwardedCertError::StructuredField { ref header, .. } if header == "client-cert-chain")
            }
        };
        assert!(ok, "{what}: {err}");
    }
}

#[test]
fn rfc9440_chain_without_leaf_is_malformed() {
    let (_, chain, _) = rfc9440_example();
    let err = parse_err(&reader(Rfc9440), &headers(&[("Client-Cert-Chain", &chain)]));
    assert!(
        matches!(err, ForwardedCertError::ChainWithoutLeaf { header } if header == "client-cert-chain")
    );
}

#[test]
fn haproxy_values_that_are_not_base64() {
    for bad in [
        "MIIB!!!!",
        "MIIBCg=",
        "MIIB Cg==",
        "-----BEGIN%20CERTIFICATE-----",
        "==",
    ] {
        let err = one_err(Haproxy, bad);
        assert!(
            matches!(err, ForwardedCertError::Base64 { .. }),
            "{bad}: {err}"
        );
    }
}

#[test]
fn nginx_values_with_bad_percent_encoding() {
    let good = envoy_url_encode(&pem_text(&cert("pki/bob.pem")));
    for bad in [
        format!("{good}%"),
        format!("{good}%2"),
        format!("%G0{good}"),
        good.replacen("%0A", "%0Z", 1),
    ] {
        let err = one_err(Nginx, &bad);
        assert!(
            matches!(err, ForwardedCertError::PercentEncoding { .. }),
            "{err}"
        );
    }
}

type ErrorCheck = fn(&ForwardedCertError) -> bool;

#[test]
fn pem_without_a_certificate_or_with_something_else() {
    let bob = cert("pki/bob.pem");
    let key = pem_block("PRIVATE KEY", &[0x30, 0x00]);
    let body_only = B64.encode(bob.as_ref());
    let cases: Vec<(String, ErrorCheck)> = vec![
        ("just some text".into(), |e| {
            matches!(e, ForwardedCertError::NoCertificate { .. })
        }),
        (body_only, |e| {
            matches!(e, ForwardedCertError::NoCertificate { .. })
        }),
        (key.clone(), |e| {
            matches!(e, ForwardedCertError::UnexpectedPemSection { .. })
        }),
        (format!("{}{key}", pem_text(&bob)), |e| {
            matches!(e, ForwardedCertError::UnexpectedPemSection { .. })
        }),
        (
            pem_text(&bob).replace("-----END CERTIFICATE-----", ""),
            |e| matches!(e, ForwardedCertError::Pem { .. }),
        ),
        (pem_text(&bob).replacen("MII", "M!I", 1), |e| {
            matches!(e, ForwardedCertError::Pem { .. })
        }),
        (
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into(),
            |e| matches!(e, ForwardedCertError::Empty { .. }),
        ),
    ];
    for (pem, expected) in cases {
        let nginx = one_err(Nginx, &envoy_url_encode(&pem));
        assert!(expected(&nginx), "nginx {pem:?}: {nginx}");
        let xfcc = one_err(Xfcc, &format!("Cert=\"{}\"", envoy_url_encode(&pem)));
        assert!(expected(&xfcc), "xfcc {pem:?}: {xfcc}");
    }
}

#[test]
fn pem_errors_do_not_repeat_the_peers_bytes() {
    let bad = "-----BEGIN CERTIFICATE----SECRET-LOOKING-LINE\nAAAA\n-----END CERTIFICATE-----\n";
    let err = one_err(Nginx, &envoy_url_encode(bad));
    assert!(matches!(err, ForwardedCertError::Pem { .. }), "{err}");
    let shown = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(!shown.contains("SECRET"), "{shown}");
}

#[test]
fn two_certificates_where_only_the_leaf_belongs() {
    let two = format!(
        "{}{}",
        pem_text(&cert("pki/bob.pem")),
        pem_text(&cert("pki/intermediate.pem"))
    );
    let err = one_err(Nginx, &envoy_url_encode(&two));
    assert!(
        matches!(err, ForwardedCertError::MultipleCertificates { .. }),
        "{err}"
    );
    let err = one_err(Xfcc, &format!("By=x;Cert=\"{}\"", envoy_url_encode(&two)));
    assert!(
        matches!(err, ForwardedCertError::MultipleCertificates { .. }),
        "{err}"
    );
}

#[test]
fn oversize_values_are_refused_before_decoding() {
    let big = "A".repeat(DEFAULT_MAX_BYTES + 1);
    for format in ForwardedCertFormat::ALL {
        let err = one_err(format, &big);
        assert!(
            matches!(err, ForwardedCertError::TooLarge { limit } if limit == DEFAULT_MAX_BYTES),
            "{format}: {err}"
        );
        let err = reader(format)
            .fingerprint(&headers(&[(format.default_header(), &big)]))
            .unwrap_err();
        assert!(matches!(err, ForwardedCertError::TooLarge { .. }));
    }
    // Exactly the limit is not too large (it fails later, for what it is).
    let exact = "!".repeat(DEFAULT_MAX_BYTES);
    assert!(matches!(
        one_err(Haproxy, &exact),
        ForwardedCertError::Base64 { .. }
    ));
    // Many lines count together, separators included.
    let line = "x".repeat(1000);
    let mut map = HeaderMap::new();
    for _ in 0..40 {
        map.append(
            "x-forwarded-client-cert",
            HeaderValue::from_str(&line).unwrap(),
        );
    }
    assert!(matches!(
        parse_err(&reader(Xfcc), &map),
        ForwardedCertError::TooLarge { .. }
    ));
    // Empty lines are not free.
    let mut map = headers(&[("Client-Cert", ":AAAA:")]);
    for _ in 0..20_000 {
        map.append("client-cert-chain", HeaderValue::from_static(""));
    }
    assert!(matches!(
        parse_err(&reader(Rfc9440), &map),
        ForwardedCertError::TooLarge { .. }
    ));
    // And the bound is configurable: the real nginx sample is ~900 bytes.
    let captured = captured_request("nginx/request.txt");
    assert!(matches!(
        parse_err(&reader(Nginx).max_bytes(512), &captured),
        ForwardedCertError::TooLarge { limit: 512 }
    ));
    assert!(
        reader(Nginx)
            .max_bytes(4096)
            .parse(&captured)
            .unwrap()
            .is_some()
    );
}

#[test]
fn too_long_chains_are_refused() {
    let (leaf, chain, _) = rfc9440_example();
    let member = chain.split_once(", ").unwrap().0.to_owned();
    let eight = [member.as_str(); DEFAULT_MAX_CHAIN_LEN].join(", ");
    let err = parse_err(
        &reader(Rfc9440),
        &headers(&[("Client-Cert", &leaf), ("Client-Cert-Chain", &eight)]),
    );
    assert!(
        matches!(err, ForwardedCertError::ChainTooLong { limit } if limit == DEFAULT_MAX_CHAIN_LEN),
        "{err}"
    );
    let seven = [member.as_str(); DEFAULT_MAX_CHAIN_LEN - 1].join(", ");
    let got = parse_ok(
        &reader(Rfc9440),
        &headers(&[("Client-Cert", &leaf), ("Client-Cert-Chain", &seven)]),
    );
    assert_eq!(got.len(), DEFAULT_MAX_CHAIN_LEN);

    let inter = pem_text(&cert("pki/intermediate.pem"));
    let leaf_pem = pem_text(&cert("pki/bob.pem"));
    let nine = format!("{leaf_pem}{}", inter.repeat(DEFAULT_MAX_CHAIN_LEN));
    let err = one_err(Xfcc, &format!("Chain=\"{}\"", envoy_url_encode(&nine)));
    assert!(
        matches!(err, ForwardedCertError::ChainTooLong { .. }),
        "{err}"
    );

    let alice = value("xfcc/sanitize-set-alice.txt");
    let map = headers(&[("x-forwarded-client-cert", &alice)]);
    assert_eq!(parse_ok(&reader(Xfcc).max_chain_len(2), &map).len(), 2);
    let err = parse_err(&reader(Xfcc).max_chain_len(1), &map);
    assert!(
        matches!(err, ForwardedCertError::ChainTooLong { limit: 1 }),
        "{err}"
    );
    assert_eq!(reader(Xfcc).max_chain_len(0).chain_len_limit(), 1);
}

#[test]
fn xfcc_unbalanced_quotes_are_malformed() {
    let bob = value("xfcc/cert-only-bob.txt");
    // An earlier element that opens a quote it never closes shifts every later quote: the
    // whole value is refused rather than re-cut somewhere else.
    for bad in [
        format!("By=evil;Subject=\"unclosed,{bob}"),
        format!("By=evil;Subject=\"a\\\",{bob}"),
        "Cert=\"abc".to_owned(),
        format!("{bob};Subject=\""),
    ] {
        match one_err(Xfcc, &bad) {
            ForwardedCertError::Xfcc { .. } => {}
            other => panic!("{bad:.60}: {other}"),
        }
    }
    let err = one_err(Xfcc, "By=x;Subject=\"open");
    assert!(
        matches!(
            err,
            ForwardedCertError::Xfcc {
                problem: XfccSyntax::UnterminatedQuote,
                offset: 13
            }
        ),
        "{err}"
    );
}

#[test]
fn xfcc_a_quote_trick_in_an_earlier_element_cannot_inject_a_leaf() {
    // The client tries to make the proxy's ",<element>" part of its own quoted value and to
    // provide the "last" element itself.
    let alice = envoy_url_encode(&pem_text(&cert("pki/client.pem")));
    let proxy = value("xfcc/cert-only-bob.txt");
    let tricks = [
        format!("Cert=\"{alice}\";x=\""), // opens a quote the proxy's first quote closes
        format!("x=\",Cert=\"{alice}\""),
        format!("Cert=\"{alice}\",x=\""),
    ];
    for trick in tricks {
        // Each shifts the quoting of the proxy's element, which then no longer parses.
        let err = one_err(Xfcc, &format!("{trick},{proxy}"));
        assert!(
            matches!(
                err,
                ForwardedCertError::Xfcc {
                    problem: XfccSyntax::TextAfterQuotedValue,
                    ..
                }
            ),
            "{trick:.40}: {err}"
        );
    }
}

#[test]
fn xfcc_syntax_errors_name_their_cause() {
    let cases = [
        ("Cert", XfccSyntax::MissingValue),
        ("By=x;Cert", XfccSyntax::MissingValue),
        ("By=x;;Hash=y", XfccSyntax::EmptyKey),
        ("By=x;", XfccSyntax::EmptyKey),
        ("=x", XfccSyntax::EmptyKey),
        ("C@rt=x", XfccSyntax::InvalidKey),
        ("Cert=\"x\"y", XfccSyntax::TextAfterQuotedValue),
        ("Subject=\"x\\", XfccSyntax::InvalidEscape),
        ("By=a\"b", XfccSyntax::InvalidValue),
        ("By=a b", XfccSyntax::InvalidValue),
        ("By=a\\b", XfccSyntax::InvalidValue),
    ];
    for (bad, expected) in cases {
        match one_err(Xfcc, bad) {
            ForwardedCertError::Xfcc { problem, .. } => assert_eq!(problem, expected, "{bad}"),
            other => panic!("{bad}: {other}"),
        }
    }
}

#[test]
fn xfcc_cert_and_chain_must_agree_and_appear_once() {
    let alice = pem_text(&cert("pki/client.pem"));
    let bob = pem_text(&cert("pki/bob.pem"));
    let inter = pem_text(&cert("pki/intermediate.pem"));
    let mismatch = format!(
        "Cert=\"{}\";Chain=\"{}\"",
        envoy_url_encode(&bob),
        envoy_url_encode(&format!("{alice}{inter}"))
    );
    assert!(matches!(
        one_err(Xfcc, &mismatch),
        ForwardedCertError::XfccLeafMismatch
    ));
    let twice = format!("Cert=\"{0}\";cert=\"{0}\"", envoy_url_encode(&bob));
    assert!(matches!(
        one_err(Xfcc, &twice),
        ForwardedCertError::XfccDuplicateKey { key: "Cert" }
    ));
    let chain = envoy_url_encode(&format!("{bob}{inter}"));
    let twice = format!("Chain=\"{chain}\";Chain=\"{chain}\"");
    assert!(matches!(
        one_err(Xfcc, &twice),
        ForwardedCertError::XfccDuplicateKey { key: "Chain" }
    ));
}

#[test]
fn xfcc_empty_values() {
    for empty in ["", " ", ",", " , ,"] {
        assert!(
            matches!(one_err(Xfcc, empty), ForwardedCertError::Empty { .. }),
            "{empty:?}"
        );
    }
    assert!(matches!(
        one_err(Xfcc, "Cert=\"\""),
        ForwardedCertError::NoCertificate { .. }
    ));
    assert!(matches!(
        one_err(Xfcc, "Cert="),
        ForwardedCertError::NoCertificate { .. }
    ));
}

#[test]
fn obs_text_and_non_utf8_bytes_are_refused() {
    let bob = value("xfcc/cert-only-bob.txt");
    let (leaf, _, _) = rfc9440_example();
    for format in ForwardedCertFormat::ALL {
        for raw in [
            b"\xff\xfe".to_vec(),
            "Subject=\"caf\u{e9}\"".as_bytes().to_vec(),
            [bob.as_bytes(), b"\x80"].concat(),
        ] {
            let mut map = HeaderMap::new();
            map.insert(
                HeaderName::from_bytes(format.default_header().as_bytes()).unwrap(),
                HeaderValue::from_bytes(&raw).unwrap(),
            );
            let err = parse_err(&reader(format), &map);
            assert!(
                matches!(err, ForwardedCertError::NotAscii { .. }),
                "{format}: {err}"
            );
        }
    }
    let mut map = headers(&[("Client-Cert", &leaf)]);
    map.insert(
        "client-cert-chain",
        HeaderValue::from_bytes(b":\xc3\xa9:").unwrap(),
    );
    let err = parse_err(&reader(Rfc9440), &map);
    assert!(
        matches!(err, ForwardedCertError::NotAscii { header } if header == "client-cert-chain")
    );
}

// ------------------------------------------------------------------------------- no panics

fn real_values() -> Vec<(ForwardedCertFormat, String)> {
    vec![
        (Rfc9440, value("rfc9440/client-cert.txt")),
        (Xfcc, value("xfcc/append-forward-spoofed-then-bob.txt")),
        (
            Nginx,
            captured_request("nginx/request.txt")["x-ssl-client-cert"]
                .to_str()
                .unwrap()
                .to_owned(),
        ),
        (
            Haproxy,
            captured_request("haproxy/request.txt")["x-ssl-client-cert"]
                .to_str()
                .unwrap()
                .to_owned(),
        ),
    ]
}

fn parse_any(lines: &[Vec<u8>], chain_lines: &[Vec<u8>]) {
    for format in ForwardedCertFormat::ALL {
        let r = reader(format);
        let mut map = HeaderMap::new();
        for line in lines {
            if let Ok(v) = HeaderValue::from_bytes(line) {
                map.append(r.name().clone(), v);
            }
        }
        for line in chain_lines {
            if let Ok(v) = HeaderValue::from_bytes(line) {
                map.append("client-cert-chain", v);
            }
        }
        let parsed = r.parse(&map);
        let fingerprint = r.fingerprint(&map);
        // The two agree on presence and on the key.
        match (&parsed, &fingerprint) {
            (Ok(Some(chain)), Ok(Some(fp))) => assert_eq!(chain.fingerprint(), *fp),
            (Ok(None), Ok(None)) | (Err(_), _) => {}
            other => panic!("parse and fingerprint disagree: {other:?}"),
        }
        if let Ok(Some(chain)) = parsed {
            assert!(chain.len() <= r.chain_len_limit());
            assert!(!chain.leaf().is_empty());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_header_bytes_never_panic(
        lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..4),
        chain in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..3),
    ) {
        parse_any(&lines, &chain);
    }

    #[test]
    fn mutated_real_values_never_panic(
        which in 0usize..4,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), prop_oneof![
            Just(b'"'), Just(b','), Just(b';'), Just(b'='), Just(b'\\'), Just(b'%'),
            Just(b':'), Just(b' '), any::<u8>(),
        ], 0u8..3), 1..6),
    ) {
        let (_, original) = real_values().swap_remove(which);
        let mut bytes = original.into_bytes();
        for (at, byte, op) in edits {
            if bytes.is_empty() { break; }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => { bytes.remove(i); }
            }
        }
        parse_any(&[bytes.clone()], &[]);
        parse_any(&[bytes.clone(), bytes], &[]);
    }
}

#[test]
fn errors_and_chains_can_cross_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<ForwardedCertError>();
    send_sync::<ForwardedChain>();
    send_sync::<ForwardedCertHeader>();
    let err: Box<dyn std::error::Error + Send + Sync> = Box::new(one_err(Rfc9440, "x"));
    assert!(err.to_string().contains("client-cert"));
}
