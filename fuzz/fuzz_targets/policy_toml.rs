//! `RuleSet::from_toml_str` on arbitrary text.
//!
//! Checked: no panic; a refusal lists at least one problem and renders; an accepted policy
//! compiles the same way twice (same rules, same rendering), and its rules decide and explain
//! a few requests without panicking, `explain` agreeing with `decide`.
#![no_main]

use std::sync::OnceLock;

use http::Method;
use libfuzzer_sys::fuzz_target;
use tower_mtls::Principal;
use tower_mtls::authorize::RuleSet;
use tower_mtls::identity::Roles;

fn principal() -> &'static Principal {
    static PRINCIPAL: OnceLock<Principal> = OnceLock::new();
    PRINCIPAL.get_or_init(|| {
        let pem = include_bytes!("../../tests/fixtures/forwarded/pki/client.pem");
        tower_mtls::test_util::principal_from_pem(pem).expect("fixture certificate")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let rules = match RuleSet::from_toml_str(text) {
        Ok(rules) => rules,
        Err(error) => {
            assert!(!error.problems().is_empty(), "an error without problems");
            let _ = error.to_string();
            return;
        }
    };
    let again = RuleSet::from_toml_str(text).expect("accepted once, accepted twice");
    let rendered: Vec<String> = rules.rules().iter().map(ToString::to_string).collect();
    let rendered_again: Vec<String> = again.rules().iter().map(ToString::to_string).collect();
    assert_eq!(rendered, rendered_again);
    let roles = Roles::new(["ou:admins", "role"]);
    for method in [Method::GET, Method::HEAD, Method::DELETE] {
        for path in ["/", "/admin", "/admin/x", "/a/b/c", "/pkg.Service/Method", ""] {
            for roles in [&roles, &Roles::none()] {
                let decision = rules.decide(principal(), roles, &method, path);
                let explained = rules.explain(principal(), roles, &method, path);
                assert_eq!(decision, explained.decision);
                let _ = explained.to_string();
            }
        }
    }
});
