//! Heap allocations per allowed request, counted by a global allocator that tallies every
//! call (`stats_alloc`). Prints a table; it measures, it does not assert.
//!
//! ```text
//! cargo bench --all-features --bench allocations
//! ```
//!
//! Everything runs on this one thread, with no runtime alive while counting, so the counts
//! are exactly what the code under test asks of the allocator.

#[path = "support/mod.rs"]
mod support;

use std::alloc::System;

use http::Request;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::service_fn;
use tower_http::add_extension::AddExtension;
use tower_layer::Layer;
use tower_mtls::{AllowAnyVerified, ConnectionInfo, MtlsAuthLayer, authorize_fn};
use tower_service::Service;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const REQUESTS: usize = 10_000;

/// Allocations and bytes per request of `service`, for requests made by `make` beforehand
/// (outside the counted region).
fn count<S>(service: &mut S, make: impl Fn() -> Request<()>) -> (f64, f64)
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    // One call first, so one-time lazies (tracing callsite registration, ...) are not counted.
    drop(support::call_now(service, make()));
    let requests: Vec<_> = (0..REQUESTS).map(|_| make()).collect();
    let region = Region::new(GLOBAL);
    for req in requests {
        drop(support::call_now(service, req));
    }
    let stats = region.change();
    let n = REQUESTS as f64;
    (
        (stats.allocations + stats.reallocations) as f64 / n,
        stats.bytes_allocated as f64 / n,
    )
}

fn row(label: &str, (allocs, bytes): (f64, f64)) {
    println!("{label:<58} {allocs:>8.2} {bytes:>10.1}");
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not. Both run this: it takes
    // well under a second.
    let pki = support::Pki::p256();
    let info = support::connection_info(&pki);
    let service = service_fn(support::hello::<()>);
    let with_info = || support::request_on(&info);
    let empty = || Request::new(());

    println!(
        "{:<58} {:>8} {:>10}",
        "heap allocations per allowed request", "allocs", "bytes"
    );
    println!("-- the layer's own share (request already carries ConnectionInfo)");
    row("no layer", count(&mut service.clone(), with_info));
    row(
        "MtlsAuthLayer + AllowAnyVerified",
        count(
            &mut MtlsAuthLayer::new(AllowAnyVerified).layer(service),
            with_info,
        ),
    );
    row(
        "MtlsAuthLayer + OU-matcher closure",
        count(
            &mut MtlsAuthLayer::new(authorize_fn(support::ou_matcher)).layer(service),
            with_info,
        ),
    );
    let on_path = |path: &'static str| {
        let info = &info;
        move || {
            let mut req = support::request_on(info);
            *req.uri_mut() = http::Uri::from_static(path);
            req
        }
    };
    row(
        "  same, canonical path /api/v1/orders/42/items",
        count(
            &mut MtlsAuthLayer::new(AllowAnyVerified).layer(service),
            on_path("/api/v1/orders/42/items"),
        ),
    );
    row(
        "  same, path rewritten to canonical (/caf%c3%a9 -> %C3%A9)",
        count(
            &mut MtlsAuthLayer::new(AllowAnyVerified).layer(service),
            on_path("/caf%c3%a9"),
        ),
    );
    println!("-- the whole per-request path (request as hyper hands it: no extensions)");
    row(
        "no layer, no ConnectionInfo",
        count(&mut service.clone(), empty),
    );
    row(
        "AddExtension<ConnectionInfo> (what serve_connection adds)",
        count(&mut AddExtension::new(service, info.clone()), empty),
    );
    row(
        "AddExtension<ConnectionInfo> + layer + AllowAnyVerified",
        count(
            &mut AddExtension::new(
                MtlsAuthLayer::new(AllowAnyVerified).layer(service),
                info.clone(),
            ),
            empty,
        ),
    );
    row(
        "AddExtension<ConnectionInfo> + layer + OU-matcher closure",
        count(
            &mut AddExtension::new(
                MtlsAuthLayer::new(authorize_fn(support::ou_matcher)).layer(service),
                info.clone(),
            ),
            empty,
        ),
    );
    println!("-- http::Extensions alone, for reference");
    row(
        "insert ConnectionInfo into empty Extensions",
        count(&mut insert_service::<ConnectionInfo>(info.clone()), empty),
    );
    let principal = info.principal_unchecked().expect("principal").clone();
    row(
        "insert Principal into Extensions holding ConnectionInfo",
        count(&mut insert_service(principal), with_info),
    );
}

/// A service that only inserts `value` into the request's extensions and drops the request.
fn insert_service<T: Clone + Send + Sync + 'static>(
    value: T,
) -> impl Service<Request<()>, Response = (), Error = std::convert::Infallible> + Clone {
    service_fn(move |mut req: Request<()>| {
        req.extensions_mut().insert(value.clone());
        drop(req);
        std::future::ready(Ok(()))
    })
}
