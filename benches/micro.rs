//! criterion micro benches: principal extraction, per-request cost of the layer (direct and
//! forwarded by a trusted proxy), an in-memory mTLS handshake with and without principal
//! extraction, and what several trust bundles add to verification and to a handshake.
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
    AllowAnyVerified, ConnectionInfo, MtlsAcceptor, MtlsAuthLayer, MtlsConfig, Principal,
    authorize_fn,
};

use support::{Pki, pki};

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

/// The layer on a trusted proxy's connection, each request forwarding the client's chain in
/// RFC 9440 headers (a cache hit after the first), against the layer on a direct connection
/// whose requests carry headers of the same size that nobody reads.
fn forwarded(c: &mut Criterion) {
    use tower_mtls::authorize::Matcher;
    use tower_mtls::forwarded::{ForwardedCertFormat, TrustedProxies};
    let pki = Pki::p256();
    let direct = support::connection_info(&pki);
    // The bench client is its own proxy here: what is measured is the lookup, not who it is.
    let acceptor = MtlsAcceptor::new(pki.config()).trusted_proxies(
        TrustedProxies::new(ForwardedCertFormat::Rfc9440)
            .proxy(Matcher::common_name("bench-client")),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ((_, proxy), _) = rt.block_on(support::mtls_duplex(
        &acceptor,
        pki.client_config(&[b"http/1.1"], false),
    ));
    assert!(proxy.is_trusted_proxy());
    let (forwarded_headers, padded) = support::rfc9440_headers(&pki);
    let request = |headers: &http::HeaderMap| {
        let mut req = Request::new(());
        *req.headers_mut() = headers.clone();
        req
    };
    let service = service_fn(support::hello::<()>);
    let mut on_direct =
        AddExtension::new(MtlsAuthLayer::new(AllowAnyVerified).layer(service), direct);
    let mut on_proxy =
        AddExtension::new(MtlsAuthLayer::new(AllowAnyVerified).layer(service), proxy);
    assert_eq!(
        support::call_now(&mut on_proxy, request(&forwarded_headers)).status(),
        200
    );
    let mut group = c.benchmark_group("forwarded");
    group.bench_function("request_copy_only", |b| {
        b.iter(|| black_box(request(&padded)))
    });
    group.bench_function("layer_direct", |b| {
        b.iter(|| support::call_now(&mut on_direct, request(&padded)))
    });
    group.bench_function("layer_forwarded_cache_hit", |b| {
        b.iter(|| support::call_now(&mut on_proxy, request(&forwarded_headers)))
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

/// What the `metrics` feature costs with a Prometheus recorder installed (the exporter's own
/// recorder, with no HTTP listener), next to the same work without one.
fn metrics_recorder(c: &mut Criterion) {
    let pki = Pki::p256();
    let info = support::connection_info(&pki);
    let service = service_fn(support::hello::<()>);
    let mut allow_any = AddExtension::new(
        MtlsAuthLayer::new(AllowAnyVerified).layer(service),
        info.clone(),
    );
    let config = pki.config();
    let client = pki.client_config(&[b"http/1.1"], false);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mtls = MtlsAcceptor::new(config);
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();

    let mut group = c.benchmark_group("metrics_recorder");
    group.bench_function("request_no_recorder", |b| {
        b.iter(|| support::call_now(&mut allow_any, Request::new(())))
    });
    metrics::with_local_recorder(&recorder, || {
        group.bench_function("request_prometheus_recorder", |b| {
            b.iter(|| support::call_now(&mut allow_any, Request::new(())))
        });
    });
    group.bench_function("handshake_no_recorder", |b| {
        b.iter(|| rt.block_on(support::mtls_duplex(&mtls, client.clone())))
    });
    metrics::with_local_recorder(&recorder, || {
        group.bench_function("handshake_prometheus_recorder", |b| {
            b.iter(|| rt.block_on(support::mtls_duplex(&mtls, client.clone())))
        });
    });
    group.finish();
}

/// The same P-256 client chain (leaf + intermediate) under four trust configurations: one
/// bundle (today's cost), four named bundles with the client's last (the issuer names settle
/// which bundle), two bundles whose roots share the client root's subject (path building
/// settles it), and two SPIFFE trust domains with an SVID of the same shape.
fn trust_bundles(c: &mut Criterion) {
    let pki = Pki::p256();
    let others: Vec<pki::Ca> = (0..3)
        .map(|i| pki::Ca::root(&format!("other root {i}")))
        .collect();
    let lookalike = pki::Ca::root("bench root CA");
    let svid = pki
        .intermediate
        .svid("spiffe://example.org/bench")
        .with_intermediate(&pki.intermediate);
    let base = || {
        MtlsConfig::builder()
            .server_cert_pem(pki.server.chain_pem())
            .server_key_pem(pki.server.key_pem.clone())
    };
    let named = others
        .iter()
        .enumerate()
        .fold(base(), |b, (i, ca)| {
            b.client_ca_bundle(&format!("other-{i}"), ca.pem())
        })
        .client_ca_bundle("corp", pki.root.pem());
    let variants = [
        (
            "one_bundle",
            base().client_ca_pem(pki.root.pem()),
            &pki.client,
        ),
        ("four_named_bundles", named, &pki.client),
        (
            "two_bundles_same_root_subject",
            base()
                .client_ca_bundle("lookalike", lookalike.pem())
                .client_ca_bundle("corp", pki.root.pem()),
            &pki.client,
        ),
        (
            "spiffe_two_trust_domains",
            base()
                .spiffe_bundle("example.org", pki.root.pem())
                .spiffe_bundle("other.example", others[0].pem()),
            &svid,
        ),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let mut verify = c.benchmark_group("trust_bundles_verify_chain");
    // The reference: rustls's own verifier over the one root, what a single bundle used before.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.root.der().clone()).expect("root");
    let webpki = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        std::sync::Arc::new(tower_mtls::tls::crypto_provider()),
    )
    .build()
    .expect("verifier");
    let (leaf, intermediates) = pki.client.chain.split_first().expect("chain");
    let now = rustls::pki_types::UnixTime::now();
    verify.bench_function("rustls_webpki_client_verifier", |b| {
        b.iter(|| webpki.verify_client_cert(black_box(leaf), intermediates, now))
    });
    for (name, builder, client) in &variants {
        let verifier = builder
            .build()
            .expect("config")
            .client_cert_verifier()
            .clone();
        let (leaf, intermediates) = client.chain.split_first().expect("chain");
        let now = rustls::pki_types::UnixTime::now();
        verifier
            .verify_client_cert(leaf, intermediates, now)
            .expect("verifies");
        verify.bench_function(*name, |b| {
            b.iter(|| verifier.verify_client_cert(black_box(leaf), intermediates, now))
        });
    }
    verify.finish();

    let mut handshake = c.benchmark_group("trust_bundles_handshake_in_memory");
    for (name, builder, client) in &variants {
        let acceptor = MtlsAcceptor::new(builder.build().expect("config"));
        let mut config = (*support::client::client_config(
            pki.root.der(),
            Some((client.chain.clone(), client.key())),
            &[b"http/1.1"],
        ))
        .clone();
        config.resumption = rustls::client::Resumption::disabled();
        let config = std::sync::Arc::new(config);
        let ((_, info), _) = rt.block_on(support::mtls_duplex(&acceptor, config.clone()));
        assert!(info.principal_unchecked().is_some(), "{name}");
        handshake.bench_function(*name, |b| {
            b.iter(|| rt.block_on(support::mtls_duplex(&acceptor, config.clone())))
        });
    }
    handshake.finish();
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
    targets = principal_extraction, per_request, forwarded, handshake, trust_bundles, metrics_recorder
}
criterion_main!(benches);
