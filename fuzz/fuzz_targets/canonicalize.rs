//! `canonicalize` and `canonicalize_pattern` on arbitrary text under every setting.
//!
//! Input: the first byte picks the settings, the rest is the path (UTF-8, like `Uri::path()`).
//! Checked: no panic; an accepted path is canonical (a second call borrows it unchanged), no
//! longer than the input, and free of everything the settings refuse; whatever the strict
//! settings accept, every setting accepts the same way; settings that change no structure only
//! change hex digits' case; a canonical pattern is a canonical path.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use percent_encoding::percent_decode_str;
use tower_mtls::authorize::canonical::{
    DotSegments, EncodedUnreserved, EscapedSlashesAction, MergeSlashes, PathNormalization,
    PathParameters, canonicalize, canonicalize_pattern,
};

#[path = "../support/settings.rs"]
mod settings;
use settings::settings;

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

/// Everything a canonical path under `o` must be, checked independently of the module's code.
fn assert_canonical(path: &str, o: &PathNormalization) {
    assert!(
        matches!(
            canonicalize(path, o),
            Ok(Cow::Borrowed(p)) if p == path
        ),
        "not a fixed point: {path:?} under {o}"
    );
    if path.is_empty() || path == "*" {
        return;
    }
    assert!(path.starts_with('/'), "{path:?}");
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = &bytes[i + 1..i + 3];
            assert!(
                hex.iter()
                    .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h)),
                "escape not uppercase hex in {path:?}"
            );
            let value = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
            assert!(
                value >= 0x20 && value != 0x7F,
                "encoded control in {path:?}"
            );
            if o.escaped_slashes_action() == EscapedSlashesAction::RejectRequest {
                assert!(value != b'/' && value != b'\\', "escaped slash in {path:?}");
            }
            if o.path_parameters_action() == PathParameters::Reject {
                assert!(value != b';', "%3B in {path:?}");
            }
            if o.encoded_unreserved_action() == EncodedUnreserved::Decode {
                assert!(!is_unreserved(value), "undecoded unreserved in {path:?}");
            }
            i += 3;
        } else {
            assert!(
                is_unreserved(b)
                    || b"/!$&'()*+,=:@".contains(&b)
                    || (b == b';' && o.path_parameters_action() == PathParameters::Keep),
                "raw {:?} in {path:?}",
                char::from(b)
            );
            i += 1;
        }
    }
    for segment in path.split('/') {
        let dots = segment.replace("%2E", ".");
        assert!(dots != "." && dots != "..", "dot segment in {path:?}");
    }
    if o.merge_slashes_action() != MergeSlashes::KeepUnchanged {
        assert!(!path.contains("//"), "'//' in {path:?}");
    }
    assert!(
        percent_decode_str(path).decode_utf8().is_ok(),
        "not UTF-8: {path:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(input) = std::str::from_utf8(rest) else {
        return;
    };
    let o = settings(selector);
    let strict = canonicalize(input, &PathNormalization::default());
    let result = canonicalize(input, &o);
    if let Ok(strict) = &strict {
        // Settings only relax what the strict ones refuse.
        assert_eq!(result.as_deref(), Ok(&**strict), "{input:?} under {o}");
    }
    if let Ok(canonical) = &result {
        assert!(canonical.len() <= input.len());
        assert_canonical(canonical, &o);
        if matches!(canonical, Cow::Borrowed(_)) {
            assert_eq!(&**canonical, input);
        }
        if o.merge_slashes_action() != MergeSlashes::Merge
            && o.dot_segments_action() == DotSegments::Reject
        {
            // No structure changed: the same bytes, spelled with uppercase hex or decoded.
            assert_eq!(
                percent_decode_str(input).collect::<Vec<u8>>(),
                percent_decode_str(canonical).collect::<Vec<u8>>(),
                "{input:?} -> {canonical:?}"
            );
        }
    }
    if let Ok(pattern) = canonicalize_pattern(input, &o) {
        assert_canonical(&pattern, &o);
    }
});
