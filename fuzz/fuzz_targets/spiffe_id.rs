//! `SpiffeId::parse` on arbitrary text.
//!
//! Checked: no panic; an accepted ID is the input unchanged, splits into trust domain and
//! path that rebuild it, re-parses to itself, and obeys the SPIFFE grammar checked here on its
//! own: lowercase trust domain of `[a-z0-9._-]`, path segments non-empty, not `.` or `..`, of
//! `[A-Za-z0-9._-]` (so never `:`, which role names rely on).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_mtls::SpiffeId;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(id) = SpiffeId::parse(text) else {
        return;
    };
    assert_eq!(id.as_str(), text);
    assert_eq!(id.to_string(), text);
    assert_eq!(format!("spiffe://{}{}", id.trust_domain(), id.path()), text);
    assert_eq!(SpiffeId::parse(id.as_str()).as_ref(), Ok(&id));
    assert!(id.is_member_of(id.trust_domain()));
    let td = id.trust_domain();
    assert!(!td.is_empty() && td.len() <= 255, "{td:?}");
    assert!(
        td.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)),
        "{td:?}"
    );
    let path = id.path();
    assert!(path.is_empty() || path.starts_with('/'), "{path:?}");
    if !path.is_empty() {
        for segment in id.segments() {
            assert!(!segment.is_empty() && segment != "." && segment != "..", "{text:?}");
            assert!(
                segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
                "{segment:?}"
            );
        }
    }
});
