//! criterion micro benches: principal extraction, per-request cost of the layer, and an
//! in-memory mTLS handshake with and without principal extraction.
//!
//! ```text
//! cargo bench --all-features --bench micro
//! ```

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use tower::service_fn;
use tower::util::MapRequestLayer;
use tower_http::add_extension::AddExtension;
use tower_layer::Layer;
use tower_mtls::{
    AllowAnyVerified, ConnectionInfo, MtlsAcceptor, MtlsAuthLayer, Principal, authorize_fn,
};

use support::Pki;

fn principal_extraction(c: &mut Criterion) {
    let mut group = c.benchmark_group("principal_extraction");
    for (name, alg) in [
        (
            "p256_leaf_with_intermediate",
            &rcgen::PKCS_ECDSA_P256_SHA256,
        ),
        ("rsa2048_leaf_with_intermediate", &rcgen::PKCS_RSA_SHA256),
    ] {
        let pki = Pki::new(alg);
        let chain = pki.client.chain.clone();
        assert_eq!(chain.len(), 2, "leaf and intermediate");
        group.bench_function(name, |b| {
            b.iter(|| Principal::from_verified_chain(black_box(&chain)).expect("parses"))
        });
    }
    group.finish();
}

fn per_request(c: &mut Criterion) {
    let pki = Pki::p256();
    let info = support::connection_info(&pki);
    let service = service_fn(support::hello::<()>);

    // Every variant gets a request as hyper hands it over (no extensions) and wraps the same
    // service; `AddExtension` is what `tower_mtls::hyper::serve_connection` puts in front of
    // the user's service, so "connection_info" is the per-connection plumbing's share and the
    // difference to the layered variants is the layer's.
    let mut bare = service;
    let mut connection = AddExtension::new(service, info.clone());
    let mut allow_any = AddExtension::new(
        MtlsAuthLayer::new(AllowAnyVerified).layer(service),
        info.clone(),
    );
    let mut ou = AddExtension::new(
        MtlsAuthLayer::new(authorize_fn(support::ou_matcher)).layer(service),
        info.clone(),
    );
    // Two hand-written lower bounds that explain the layer's cost: only find the principal
    // (what any identity check must do), and find it and insert a clone (what makes
    // `extensions().get::<Principal>()` work in handlers).
    let mut lookup_only = AddExtension::new(
        MapRequestLayer::new(|req: Request<()>| {
            assert!(principal_of(&req).is_some());
            req
        })
        .layer(service),
        info.clone(),
    );
    let mut lookup_insert = AddExtension::new(
        MapRequestLayer::new(|mut req: Request<()>| {
            let principal = principal_of(&req).cloned().expect("principal");
            req.extensions_mut().insert(principal);
            req
        })
        .layer(service),
        info.clone(),
    );
    // Measure the allow path, not a rejection.
    assert_eq!(
        support::call_now(&mut allow_any, Request::new(())).status(),
        200
    );
    assert_eq!(support::call_now(&mut ou, Request::new(())).status(), 200);

    let mut group = c.benchmark_group("per_request");
    group.bench_function("service", |b| {
        b.iter(|| support::call_now(&mut bare, Request::new(())))
    });
    group.bench_function("connection_info", |b| {
        b.iter(|| support::call_now(&mut connection, Request::new(())))
    });
    group.bench_function("connection_info_find_principal", |b| {
        b.iter(|| support::call_now(&mut lookup_only, Request::new(())))
    });
    group.bench_function("connection_info_find_and_insert_principal", |b| {
        b.iter(|| support::call_now(&mut lookup_insert, Request::new(())))
    });
    group.bench_function("connection_info_layer_allow_any_verified", |b| {
        b.iter(|| support::call_now(&mut allow_any, Request::new(())))
    });
    group.bench_function("connection_info_layer_ou_closure", |b| {
        b.iter(|| support::call_now(&mut ou, Request::new(())))
    });
    // A longer path, as real routes have: the layer reads (and canonicalizes) every byte.
    let api = http::Uri::from_static("/api/v1/orders/42/items");
    let api_request = || {
        let mut req = Request::new(());
        *req.uri_mut() = api.clone();
        req
    };
    group.bench_function("connection_info_api_path", |b| {
        b.iter(|| support::call_now(&mut connection, api_request()))
    });
    group.bench_function("connection_info_layer_allow_any_verified_api_path", |b| {
        b.iter(|| support::call_now(&mut allow_any, api_request()))
    });
    group.finish();
}

fn principal_of<B>(req: &Request<B>) -> Option<&Principal> {
    req.extensions()
        .get::<ConnectionInfo>()
        .and_then(ConnectionInfo::principal_unchecked)
}

fn handshake(c: &mut Criterion) {
    let pki = Pki::p256();
    let config = pki.config();
    let client = pki.client_config(&[b"http/1.1"], false);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let bare = tokio_rustls::TlsAcceptor::from(config.server_config().clone());
    let mtls = MtlsAcceptor::new(config);

    let mut group = c.benchmark_group("handshake_in_memory");
    group.bench_function("bare_tokio_rustls", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (client_io, server_io) = tokio::io::duplex(64 * 1024);
                let (server, client) = tokio::join!(
                    bare.accept(server_io),
                    support::client_handshake(client.clone(), client_io)
                );
                (server.expect("server handshake"), client)
            })
        })
    });
    group.bench_function("mtls_acceptor_with_principal", |b| {
        b.iter(|| rt.block_on(support::mtls_duplex(&mtls, client.clone())))
    });
    group.finish();
}

fn config() -> Criterion {
    // A shared two-core machine: shorter runs, more of them, beat one long noisy one.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = principal_extraction, per_request, handshake
}
criterion_main!(benches);
