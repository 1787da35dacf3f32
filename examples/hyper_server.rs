//! A hand-built hyper-util + tower stack protected by tower-mtls: the same routes and flags as
//! `axum_server`, without a framework.
//!
//! ```text
//! cargo run --example hyper_server                      # development PKI, prints curl commands
//! cargo run --example hyper_server -- --cert server.pem --key server-key.pem --client-ca ca.pem
//! ```

#[path = "support/pki.rs"]
mod pki;
#[path = "support/server.rs"]
mod server;

use std::convert::Infallible;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tower::{ServiceBuilder, ServiceExt};
use tower_mtls::{AuthContext, ConnectionInfo, MtlsAuthLayer, Principal};

use server::AdminRule;

type Body = Full<Bytes>;

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("static header"),
    );
    response
}

fn problem(status: StatusCode, title: &str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(server::error_json(
        status.as_u16(),
        title,
    ))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        "application/problem+json".parse().expect("static header"),
    );
    response
}

/// The routes behind the layer: the principal is always there.
async fn protected_routes(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let Some(principal) = req.extensions().get::<Principal>() else {
        return Ok(problem(StatusCode::UNAUTHORIZED, "Unauthorized"));
    };
    let known = matches!(req.uri().path(), "/whoami" | "/admin");
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/whoami") => {
            json(StatusCode::OK, &server::whoami_json(principal))
        }
        (&Method::GET | &Method::HEAD, "/admin") => json(
            StatusCode::OK,
            &serde_json::json!({ "admin": true, "subject": principal.subject().to_string() }),
        ),
        _ if known => problem(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed"),
        _ => problem(StatusCode::NOT_FOUND, "Not Found"),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let (args, listener) = match server::start("hyper_server", false).await {
        Ok(started) => started,
        Err(code) => return code,
    };

    let rule = AdminRule::from_args(&args);
    let authz = tower_mtls::authorize_fn(move |ctx: &AuthContext<'_>| rule.decide(ctx, "/admin"));
    let protected = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(authz))
        .service_fn(protected_routes);
    // `/healthz` is answered before the layer: it only needs a finished handshake.
    let app = tower::service_fn(move |req: Request<Incoming>| {
        let protected = protected.clone();
        async move {
            let started = Instant::now();
            let info = req.extensions().get::<ConnectionInfo>().cloned();
            let (method, path) = (req.method().clone(), req.uri().path().to_owned());
            let response = if path == "/healthz" {
                if matches!(method, Method::GET | Method::HEAD) {
                    json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
                } else {
                    problem(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
                }
            } else {
                protected.oneshot(req).await?
            };
            server::log_request(info.as_ref(), &method, &path, response.status(), started);
            Ok::<_, Infallible>(response)
        }
    });
    tower_mtls::hyper::Server::new(listener)
        .timeouts(args.http_timeouts())
        .serve_with_shutdown(app, server::ctrl_c(), Duration::from_secs(10))
        .await;
    ExitCode::SUCCESS
}
