//! Request paths through `canonicalize` and a DENY-list `RuleSet`, as `MtlsAuthLayer` runs
//! them.
//!
//! Input: the first byte picks the settings, the rest is the request path. Checked: no panic;
//! under the settings documented as safe in front of a file server that decodes and collapses
//! paths (the strict defaults, and `Merge` + `Decode`), no accepted spelling of a denied
//! resource is allowed. "The resource a path names" is computed independently, the way
//! tower-http's `ServeDir` reads a path: percent-decode everything, split on `/`, drop empty
//! and `.` segments (a trailing `/` still names another resource), refuse `..`.
#![no_main]

use std::sync::OnceLock;

use http::Method;
use libfuzzer_sys::fuzz_target;
use percent_encoding::percent_decode_str;
use tower_mtls::Principal;
use tower_mtls::authorize::canonical::{
    EncodedUnreserved, MergeSlashes, PathNormalization, canonicalize,
};
use tower_mtls::authorize::RuleSet;
use tower_mtls::identity::Roles;

#[path = "../support/settings.rs"]
mod settings;
use settings::settings;

const POLICY: &str = r#"
[[rule]]
name = "private-files"
action = "deny"
path_prefix = "/static/private"

[[rule]]
name = "admin-page"
action = "deny"
path = "/admin"

[[rule]]
name = "secrets"
action = "deny"
methods = "GET"
path_glob = "/api/*/secret/**"

[[rule]]
name = "everything-else"
action = "allow"
"#;

struct Fixture {
    rules: RuleSet,
    principal: Principal,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let pem = include_bytes!("../../tests/fixtures/forwarded/pki/client.pem");
        Fixture {
            rules: RuleSet::from_toml_str(POLICY).expect("policy"),
            principal: tower_mtls::test_util::principal_from_pem(pem).expect("certificate"),
        }
    })
}

/// Whether the settings are documented as safe in front of ServeDir.
fn safe_for_file_servers(o: &PathNormalization) -> bool {
    let strict = PathNormalization::default();
    let decoding = strict
        .merge_slashes(MergeSlashes::Merge)
        .encoded_unreserved(EncodedUnreserved::Decode);
    *o == strict || *o == decoding
}

/// The segments a decoding file server serves for `path`, and whether it ends with `/`;
/// `None` when it would refuse the path (`..`).
fn served(path: &str) -> Option<(Vec<String>, bool)> {
    let decoded = percent_decode_str(path).decode_utf8_lossy();
    let trailing = decoded.ends_with('/');
    let mut segments = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => return None,
            s => segments.push(s.to_owned()),
        }
    }
    Some((segments, trailing))
}

/// Which DENY rule should refuse a GET of what `path` serves, by the rules' intent.
fn denied_resource(path: &str) -> Option<&'static str> {
    let (segments, trailing) = served(path)?;
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["static", "private", ..] => Some("private-files"),
        ["admin"] if !trailing => Some("admin-page"),
        ["api", _, "secret", ..] => Some("secrets"),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(path) = std::str::from_utf8(rest) else {
        return;
    };
    let o = settings(selector);
    let Ok(canonical) = canonicalize(path, &o) else {
        return;
    };
    let f = fixture();
    let none = Roles::none();
    for method in [Method::GET, Method::HEAD] {
        let decision = f.rules.decide(&f.principal, &none, &method, &canonical);
        if safe_for_file_servers(&o)
            && let Some(rule) = denied_resource(path)
        {
            assert!(
                !decision.is_allowed(),
                "{method} {path:?} (canonical {canonical:?}, under {o}) reaches what rule {rule:?} denies, and is allowed"
            );
        }
    }
});
