//! `DistinguishedName::parse_rfc4514` on arbitrary text.
//!
//! Checked: no panic; a name that parses renders (`as_rfc4514`) to text that parses back to
//! the same name, and that rendering is a fixed point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_mtls::identity::DistinguishedName;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(name) = DistinguishedName::parse_rfc4514(text) else {
        return;
    };
    let rendered = name.as_rfc4514();
    let again = DistinguishedName::parse_rfc4514(rendered)
        .unwrap_or_else(|e| panic!("{text:?} renders as {rendered:?}, which does not parse: {e}"));
    assert!(again == name, "{text:?} -> {rendered:?} -> another name");
    assert_eq!(again.as_rfc4514(), rendered, "rendering is not a fixed point");
    assert_eq!(name.to_string(), rendered);
    // Every attribute of the parsed name is text and survives the trip.
    let values: Vec<Option<&str>> = name.attributes().map(|a| a.text()).collect();
    let values_again: Vec<Option<&str>> = again.attributes().map(|a| a.text()).collect();
    assert_eq!(values, values_again);
});
