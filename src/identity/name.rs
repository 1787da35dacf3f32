//! X.509 distinguished names, parsed once, with a correct RFC 4514 string form — rendered
//! ([`DistinguishedName::as_rfc4514`]) and read back ([`DistinguishedName::parse_rfc4514`]).

use std::borrow::Cow;
use std::fmt;
use std::fmt::Write as _;
use std::sync::OnceLock;

use x509_parser::der_parser::asn1_rs::{Any, Tag, ToDer};
use x509_parser::der_parser::oid::Oid;
use x509_parser::oid_registry::{
    OID_DOMAIN_COMPONENT, OID_USERID, OID_X509_COMMON_NAME, OID_X509_COUNTRY_NAME,
    OID_X509_LOCALITY_NAME, OID_X509_ORGANIZATION_NAME, OID_X509_ORGANIZATIONAL_UNIT,
    OID_X509_STATE_OR_PROVINCE_NAME, OID_X509_STREET_ADDRESS,
};
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// OID of `commonName`.
pub const OID_COMMON_NAME: &str = "2.5.4.3";
/// OID of `organizationName`.
pub const OID_ORGANIZATION: &str = "2.5.4.10";
/// OID of `organizationalUnitName`.
pub const OID_ORGANIZATIONAL_UNIT: &str = "2.5.4.11";

// RFC 4514 section 3: the short names every implementation must recognise. Anything else is
// written as a dotted-decimal OID, which is what the RFC asks for.
const SHORT_NAMES: &[(&str, &str)] = &[
    (OID_COMMON_NAME, "CN"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    (OID_ORGANIZATION, "O"),
    (OID_ORGANIZATIONAL_UNIT, "OU"),
    ("2.5.4.6", "C"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
];

// The same attribute types as parsed OIDs, to name them without formatting the OID (the common
// case: every attribute of a typical name is one of these).
const KNOWN_OIDS: &[(Oid<'static>, &str)] = &[
    (OID_X509_COMMON_NAME, OID_COMMON_NAME),
    (OID_X509_LOCALITY_NAME, "2.5.4.7"),
    (OID_X509_STATE_OR_PROVINCE_NAME, "2.5.4.8"),
    (OID_X509_ORGANIZATION_NAME, OID_ORGANIZATION),
    (OID_X509_ORGANIZATIONAL_UNIT, OID_ORGANIZATIONAL_UNIT),
    (OID_X509_COUNTRY_NAME, "2.5.4.6"),
    (OID_X509_STREET_ADDRESS, "2.5.4.9"),
    (OID_DOMAIN_COMPONENT, "0.9.2342.19200300.100.1.25"),
    (OID_USERID, "0.9.2342.19200300.100.1.1"),
];

fn dotted(oid: &Oid<'_>) -> Cow<'static, str> {
    match KNOWN_OIDS.iter().find(|(known, _)| known == oid) {
        Some((_, dotted)) => Cow::Borrowed(dotted),
        None => Cow::Owned(oid.to_id_string()),
    }
}

/// The dotted OID of an RFC 4514 short name (`CN`, `o`, `OU`, ...; case-insensitive).
fn oid_of_short_name(name: &str) -> Option<&'static str> {
    SHORT_NAMES
        .iter()
        .find(|(_, short)| short.eq_ignore_ascii_case(name))
        .map(|(oid, _)| *oid)
}

/// A parsed distinguished name (subject or issuer).
///
/// Matching on names should use the parsed attributes ([`DistinguishedName::common_names`],
/// [`DistinguishedName::organizational_units`], ...), never substrings of the rendered string:
/// `CN=a\,OU=admins` is one attribute whose value contains a comma, not an OU.
#[derive(Clone)]
pub struct DistinguishedName {
    rdns: Vec<RelativeDistinguishedName>,
    // Rendered on first use: most connections never need the string form.
    rfc4514: OnceLock<String>,
}

// The string form is a function of the RDNs, rendered or not.
impl PartialEq for DistinguishedName {
    fn eq(&self, other: &Self) -> bool {
        self.rdns == other.rdns
    }
}

impl Eq for DistinguishedName {}

/// One RDN: usually a single attribute, several when written with `+` in RFC 4514.
///
/// Two RDNs are equal when they hold the same attributes, in any order (an RDN is a SET).
#[derive(Clone, Debug)]
pub struct RelativeDistinguishedName {
    attributes: Vec<Attribute>,
}

impl PartialEq for RelativeDistinguishedName {
    fn eq(&self, other: &Self) -> bool {
        same_multiset(&self.attributes, &other.attributes)
    }
}

impl Eq for RelativeDistinguishedName {}

/// Whether `a` and `b` hold the same items, counting repeats, in any order. Without
/// allocating: RDNs have one attribute, rarely a few; past 64 the order must match too.
fn same_multiset(a: &[Attribute], b: &[Attribute]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    if a.len() > 64 {
        return a == b;
    }
    let mut taken = 0u64;
    a.iter().all(|x| {
        let free = b
            .iter()
            .enumerate()
            .find(|(i, y)| taken & (1 << i) == 0 && x == *y);
        match free {
            Some((i, _)) => {
                taken |= 1 << i;
                true
            }
            None => false,
        }
    })
}

/// One `type=value` pair of a distinguished name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    oid: Cow<'static, str>,
    value: AttributeValue,
}

/// The value of a name attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttributeValue {
    /// A directory string (UTF8String, PrintableString, IA5String, BMPString, ...), decoded.
    Text(String),
    /// Anything that is not a decodable string: the DER encoding of the value, as RFC 4514
    /// renders it (`#` + hex).
    Der(Vec<u8>),
}

impl DistinguishedName {
    pub(crate) fn from_x509(name: &X509Name<'_>) -> Self {
        let rdns: Vec<RelativeDistinguishedName> = name
            .iter()
            .map(|rdn| RelativeDistinguishedName {
                attributes: rdn.iter().map(Attribute::from_x509).collect(),
            })
            .collect();
        DistinguishedName {
            rdns,
            rfc4514: OnceLock::new(),
        }
    }

    /// The RFC 4514 string form: last RDN first, `,` between RDNs, `+` inside one, special
    /// characters escaped. Computed once, on first use.
    pub fn as_rfc4514(&self) -> &str {
        self.rfc4514.get_or_init(|| render_rfc4514(&self.rdns))
    }

    /// The RDNs in certificate (ASN.1) order, which is the reverse of the string form.
    pub fn rdns(&self) -> &[RelativeDistinguishedName] {
        &self.rdns
    }

    /// Every attribute, in certificate order.
    pub fn attributes(&self) -> impl Iterator<Item = &Attribute> {
        self.rdns.iter().flat_map(|rdn| rdn.attributes.iter())
    }

    /// The text values of every attribute with this dotted OID, in certificate order.
    pub fn values_of<'a>(&'a self, oid: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.attributes()
            .filter(move |a| a.oid == oid)
            .filter_map(Attribute::text)
    }

    /// The `CN` values (a name may have none or several).
    pub fn common_names(&self) -> impl Iterator<Item = &str> {
        self.values_of(OID_COMMON_NAME)
    }

    /// The `O` values.
    pub fn organizations(&self) -> impl Iterator<Item = &str> {
        self.values_of(OID_ORGANIZATION)
    }

    /// The `OU` values.
    pub fn organizational_units(&self) -> impl Iterator<Item = &str> {
        self.values_of(OID_ORGANIZATIONAL_UNIT)
    }

    /// Whether the name has no attributes at all.
    pub fn is_empty(&self) -> bool {
        self.rdns.is_empty()
    }

    /// Reads the RFC 4514 string form, e.g. `CN=Issuing CA,O=Example` (the last RDN first, as
    /// [`as_rfc4514`](Self::as_rfc4514) writes it). Attribute types are the short names `CN`,
    /// `O`, `OU`, `C`, `L`, `ST`, `STREET`, `DC` and `UID` (any case); values are text, with
    /// RFC 4514 escapes (`\,`, `\2C`). Hex-encoded `#...` values are refused.
    ///
    /// ```
    /// use tower_mtls::identity::DistinguishedName;
    ///
    /// let dn = DistinguishedName::parse_rfc4514(r"CN=Issuing CA,O=Example\, Inc.")?;
    /// assert_eq!(dn.organizations().collect::<Vec<_>>(), ["Example, Inc."]);
    /// assert_eq!(dn.as_rfc4514(), r"CN=Issuing CA,O=Example\, Inc.");
    /// # Ok::<(), tower_mtls::identity::NameParseError>(())
    /// ```
    pub fn parse_rfc4514(dn: &str) -> Result<Self, NameParseError> {
        let mut rdns = Vec::new();
        for rdn in split_unescaped(dn, b',') {
            let mut attributes = Vec::new();
            for attr in split_unescaped(rdn, b'+') {
                let (kind, value) = attr.split_once('=').ok_or(NameParseError::NoEquals)?;
                let oid =
                    oid_of_short_name(kind.trim_start()).ok_or(NameParseError::UnknownType)?;
                if value.starts_with('#') {
                    return Err(NameParseError::HexValue);
                }
                let value = unescape_value(value).ok_or(NameParseError::BadEscape)?;
                attributes.push(Attribute {
                    oid: Cow::Borrowed(oid),
                    value: AttributeValue::Text(value),
                });
            }
            rdns.push(RelativeDistinguishedName { attributes });
        }
        if rdns.is_empty() {
            return Err(NameParseError::Empty);
        }
        // RFC 4514 writes the last RDN first.
        rdns.reverse();
        Ok(DistinguishedName {
            rdns,
            rfc4514: OnceLock::new(),
        })
    }
}

/// Why a string is not an RFC 4514 distinguished name this crate reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameParseError {
    /// The empty string.
    #[error("empty name")]
    Empty,
    /// An attribute without `=`.
    #[error("an attribute has no '='")]
    NoEquals,
    /// An attribute type that is not one of the short names.
    #[error("unknown attribute type (use CN, O, OU, C, L, ST, STREET, DC or UID)")]
    UnknownType,
    /// A `#`-prefixed hex-encoded value.
    #[error("hex-encoded (#...) values are not supported")]
    HexValue,
    /// A `\` not followed by a special character or two hex digits, or escapes that are not
    /// UTF-8.
    #[error("bad escape sequence")]
    BadEscape,
}

/// Splits on `sep` where it is not escaped with a backslash.
fn split_unescaped(s: &str, sep: u8) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let bytes = s.as_bytes();
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b if b == sep => {
                parts.push(&s[start..i]);
                start = i + 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    parts.push(&s[start..]);
    parts
}

/// RFC 4514 section 3: `\` before a special character, or two hex digits of a UTF-8 byte.
fn unescape_value(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let next = *bytes.get(i + 1)?;
        if b"\"+,;<>\\ #=".contains(&next) {
            out.push(next);
            i += 2;
        } else {
            let pair = value.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(pair, 16).ok()?);
            i += 3;
        }
    }
    String::from_utf8(out).ok()
}

impl fmt::Display for DistinguishedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_rfc4514())
    }
}

impl fmt::Debug for DistinguishedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DistinguishedName({:?})", self.as_rfc4514())
    }
}

impl RelativeDistinguishedName {
    /// The attributes of this RDN (more than one for a multi-valued RDN).
    pub fn attributes(&self) -> &[Attribute] {
        &self.attributes
    }
}

impl Attribute {
    fn from_x509(attr: &AttributeTypeAndValue<'_>) -> Self {
        Attribute {
            oid: dotted(attr.attr_type()),
            value: decode_value(attr.attr_value()),
        }
    }

    /// The attribute type as a dotted OID, e.g. `2.5.4.3`.
    pub fn oid(&self) -> &str {
        &self.oid
    }

    /// The RFC 4514 short name (`CN`, `O`, `OU`, `C`, `L`, `ST`, `STREET`, `DC`, `UID`), if any.
    pub fn short_name(&self) -> Option<&'static str> {
        SHORT_NAMES
            .iter()
            .find(|(oid, _)| *oid == self.oid)
            .map(|(_, name)| *name)
    }

    /// The value.
    pub fn value(&self) -> &AttributeValue {
        &self.value
    }

    /// The value when it is text.
    pub fn text(&self) -> Option<&str> {
        match &self.value {
            AttributeValue::Text(s) => Some(s),
            AttributeValue::Der(_) => None,
        }
    }
}

fn decode_value(any: &Any<'_>) -> AttributeValue {
    let data = any.data;
    let text = match any.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => std::str::from_utf8(data).ok().map(str::to_owned),
        Tag::BmpString => decode_utf16be(data),
        Tag::UniversalString => decode_utf32be(data),
        _ => None,
    };
    match text {
        Some(s) => AttributeValue::Text(s),
        // The DER of an attribute we already parsed always re-encodes; an empty vec would only
        // render as `#`, which still cannot be mistaken for a string value.
        None => AttributeValue::Der(any.to_der_vec().unwrap_or_default()),
    }
}

fn decode_utf16be(data: &[u8]) -> Option<String> {
    if data.len() % 2 != 0 {
        return None;
    }
    let units = data
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]));
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .ok()
}

fn decode_utf32be(data: &[u8]) -> Option<String> {
    if data.len() % 4 != 0 {
        return None;
    }
    data.chunks_exact(4)
        .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
        .collect()
}

fn render_rfc4514(rdns: &[RelativeDistinguishedName]) -> String {
    let mut out = String::new();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.attributes.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            out.push_str(attr.short_name().unwrap_or(&attr.oid));
            out.push('=');
            match &attr.value {
                AttributeValue::Text(s) => escape_value(s, &mut out),
                AttributeValue::Der(der) => {
                    out.push('#');
                    out.push_str(&hex::encode(der));
                }
            }
        }
    }
    out
}

/// RFC 4514 section 2.4. Multibyte UTF-8 is kept as is (the RFC allows it); ASCII control
/// characters are hex-escaped so that a logged name cannot forge log lines.
fn escape_value(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '#' if i == 0 => out.push_str("\\#"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\{:02X}", c as u8);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::der_parser::oid::Oid;
    use x509_parser::x509::RelativeDistinguishedName as X509Rdn;

    fn oid(s: &str) -> Oid<'static> {
        s.parse::<Oid>().unwrap()
    }

    fn attr<'a>(oid_str: &str, tag: Tag, data: &'a [u8]) -> AttributeTypeAndValue<'a> {
        AttributeTypeAndValue::new(oid(oid_str), Any::from_tag_and_data(tag, data))
    }

    fn name(rdns: Vec<Vec<AttributeTypeAndValue<'_>>>) -> DistinguishedName {
        let x509: X509Name = rdns
            .into_iter()
            .map(|attrs| attrs.into_iter().collect::<X509Rdn>())
            .collect();
        DistinguishedName::from_x509(&x509)
    }

    fn utf8(oid_str: &str, s: &'static str) -> AttributeTypeAndValue<'static> {
        attr(oid_str, Tag::Utf8String, s.as_bytes())
    }

    #[test]
    fn order_is_reversed_and_short_names_used() {
        let dn = name(vec![
            vec![attr("2.5.4.6", Tag::PrintableString, b"DE")],
            vec![utf8(OID_ORGANIZATION, "Example")],
            vec![utf8(OID_ORGANIZATIONAL_UNIT, "admins")],
            vec![utf8(OID_COMMON_NAME, "alice")],
        ]);
        assert_eq!(dn.as_rfc4514(), "CN=alice,OU=admins,O=Example,C=DE");
        assert_eq!(dn.to_string(), dn.as_rfc4514());
        assert_eq!(dn.common_names().collect::<Vec<_>>(), ["alice"]);
        assert_eq!(dn.organizational_units().collect::<Vec<_>>(), ["admins"]);
        assert_eq!(dn.organizations().collect::<Vec<_>>(), ["Example"]);
    }

    #[test]
    fn special_characters_are_escaped() {
        let dn = name(vec![vec![utf8(OID_COMMON_NAME, r#"a,b+c"d\e;f<g>h"#)]]);
        assert_eq!(dn.as_rfc4514(), r#"CN=a\,b\+c\"d\\e\;f\<g\>h"#);
        // the comma stays inside the one CN value
        assert_eq!(
            dn.common_names().collect::<Vec<_>>(),
            [r#"a,b+c"d\e;f<g>h"#]
        );
        assert_eq!(dn.rdns().len(), 1);
    }

    #[test]
    fn escaped_comma_does_not_create_an_rdn() {
        let dn = name(vec![vec![utf8(OID_COMMON_NAME, "x,OU=admins")]]);
        assert_eq!(dn.as_rfc4514(), r"CN=x\,OU=admins");
        assert_eq!(dn.organizational_units().count(), 0);
    }

    #[test]
    fn leading_hash_and_spaces() {
        let dn = name(vec![vec![utf8(OID_COMMON_NAME, "#x")]]);
        assert_eq!(dn.as_rfc4514(), r"CN=\#x");
        let dn = name(vec![vec![utf8(OID_COMMON_NAME, " a b ")]]);
        assert_eq!(dn.as_rfc4514(), r"CN=\ a b\ ");
        let dn = name(vec![vec![utf8(OID_COMMON_NAME, "a#b")]]);
        assert_eq!(dn.as_rfc4514(), "CN=a#b");
        let dn = name(vec![vec![utf8(OID_COMMON_NAME, " ")]]);
        assert_eq!(dn.as_rfc4514(), r"CN=\ ");
    }

    #[test]
    fn control_characters_are_hex_escaped() {
        let dn = name(vec![vec![utf8(OID_COMMON_NAME, "a\0b\nc")]]);
        assert_eq!(dn.as_rfc4514(), r"CN=a\00b\0Ac");
    }

    #[test]
    fn multibyte_utf8_is_kept() {
        let dn = name(vec![vec![utf8(OID_COMMON_NAME, "Jürgen 日本 ,")]]);
        assert_eq!(dn.as_rfc4514(), r"CN=Jürgen 日本 \,");
        // BMPString (UTF-16BE) and UniversalString (UTF-32BE) decode to the same text
        let bmp: Vec<u8> = "Jürgen"
            .encode_utf16()
            .flat_map(|u| u.to_be_bytes())
            .collect();
        let dn = name(vec![vec![attr(OID_COMMON_NAME, Tag::BmpString, &bmp)]]);
        assert_eq!(dn.as_rfc4514(), "CN=Jürgen");
        let ucs4: Vec<u8> = "日本"
            .chars()
            .flat_map(|c| (c as u32).to_be_bytes())
            .collect();
        let dn = name(vec![vec![attr(
            OID_COMMON_NAME,
            Tag::UniversalString,
            &ucs4,
        )]]);
        assert_eq!(dn.as_rfc4514(), "CN=日本");
    }

    #[test]
    fn multi_valued_rdn_and_several_cns() {
        let dn = name(vec![
            vec![utf8(OID_ORGANIZATION, "Example")],
            vec![
                utf8(OID_COMMON_NAME, "a"),
                utf8("0.9.2342.19200300.100.1.1", "42"),
            ],
            vec![utf8(OID_COMMON_NAME, "b")],
        ]);
        assert_eq!(dn.as_rfc4514(), "CN=b,CN=a+UID=42,O=Example");
        assert_eq!(dn.common_names().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(dn.rdns()[1].attributes().len(), 2);
    }

    #[test]
    fn unknown_types_use_dotted_oids_and_binary_values_hex() {
        let dn = name(vec![
            vec![utf8("1.2.840.113549.1.9.1", "a@example.org")],
            vec![attr("2.5.4.45", Tag::BitString, &[0x00, 0xab])],
        ]);
        assert_eq!(
            dn.as_rfc4514(),
            "2.5.4.45=#030200ab,1.2.840.113549.1.9.1=a@example.org"
        );
        assert_eq!(dn.attributes().nth(1).unwrap().text(), None);
    }

    #[test]
    fn no_cn_and_empty_name() {
        let dn = name(vec![vec![utf8(OID_ORGANIZATION, "Example")]]);
        assert_eq!(dn.common_names().count(), 0);
        let dn = name(vec![]);
        assert!(dn.is_empty());
        assert_eq!(dn.as_rfc4514(), "");
    }

    #[test]
    fn invalid_bmp_string_falls_back_to_der() {
        let dn = name(vec![vec![attr(
            OID_COMMON_NAME,
            Tag::BmpString,
            &[0xd8, 0x00],
        )]]);
        assert_eq!(dn.as_rfc4514(), "CN=#1e02d800");
        assert_eq!(dn.common_names().count(), 0);
    }
}
