//! Decision time of a 100-rule policy, for an allowed and a denied request.
//!
//! ```text
//! cargo bench --bench policy
//! ```
//!
//! Before timing, it also counts heap allocations per decision (there should be none).

use std::alloc::System;
use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Method;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower_mtls::Principal;
use tower_mtls::authorize::RuleSet;
use tower_mtls::identity::Roles;

/// Counts allocations so the bench can show that a decision makes none.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// 10 DENY rules that look at every request, 89 service rules (path prefix + OU or SPIFFE
/// prefix), and a health rule: 100 in all.
fn hundred_rule_policy() -> String {
    let mut toml = String::new();
    for i in 0..10 {
        let _ = write!(
            toml,
            "[[rule]]\nname = \"suspended-{i}\"\naction = \"deny\"\n\
             principal.any = [{{ cn = \"suspended-{i}\" }}, {{ spiffe_id = \"spiffe://example.org/suspended/{i}\" }}]\n\n"
        );
    }
    for i in 0..89 {
        let _ = write!(
            toml,
            "[[rule]]\nname = \"svc-{i}\"\naction = \"allow\"\nmethods = [\"GET\", \"POST\"]\n\
             path_prefix = \"/svc/{i}\"\n\
             principal.any = [{{ ou = \"team-{i}\" }}, {{ spiffe_path_prefix = \"spiffe://example.org/ns/team-{i}\" }}]\n\n"
        );
    }
    toml.push_str(
        "[[rule]]\nname = \"health\"\naction = \"allow\"\nmethods = \"GET\"\npath = \"/healthz\"\n",
    );
    toml
}

fn principal(ou: &str, spiffe: &str) -> Principal {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "bench");
    dn.push(DnType::OrganizationalUnitName, ou);
    dn.push(DnType::CommonName, "bench-client");
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(spiffe.try_into().expect("URI"))];
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("certificate");
    Principal::from_verified_chain(&[cert.der().clone()]).expect("principal")
}

fn allocations_per_decision(rules: &RuleSet, p: &Principal, roles: &Roles, path: &str) -> f64 {
    const N: usize = 10_000;
    let region = Region::new(GLOBAL);
    for _ in 0..N {
        black_box(rules.decide(black_box(p), roles, &Method::GET, black_box(path)));
    }
    let change = region.change();
    (change.allocations + change.reallocations) as f64 / N as f64
}

fn decisions(c: &mut Criterion) {
    let rules = RuleSet::from_toml_str(&hundred_rule_policy()).expect("policy compiles");
    assert_eq!(rules.rules().len(), 100);
    let roles = Roles::none();
    // Allowed by the 89th ALLOW rule (after all 10 DENY rules and 88 other ALLOW rules).
    let allowed = principal("users", "spiffe://example.org/ns/team-88/sa/api");
    let allowed_path = "/svc/88/items/1";
    // Denied: the path matches svc-88, the identity does not, nothing else matches.
    let denied = principal("team-1", "spiffe://example.org/ns/team-1/sa/api");
    assert!(
        rules
            .decide(&allowed, &roles, &Method::GET, allowed_path)
            .is_allowed()
    );
    assert!(
        !rules
            .decide(&denied, &roles, &Method::GET, allowed_path)
            .is_allowed()
    );

    println!(
        "allocations per decision: allowed {}, denied {}",
        allocations_per_decision(&rules, &allowed, &roles, allowed_path),
        allocations_per_decision(&rules, &denied, &roles, allowed_path),
    );

    let mut group = c.benchmark_group("policy_100_rules");
    group.bench_function("allowed", |b| {
        b.iter(|| {
            rules.decide(
                black_box(&allowed),
                &roles,
                &Method::GET,
                black_box(allowed_path),
            )
        })
    });
    group.bench_function("denied", |b| {
        b.iter(|| {
            rules.decide(
                black_box(&denied),
                &roles,
                &Method::GET,
                black_box(allowed_path),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);
