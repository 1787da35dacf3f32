//! A tonic 0.14 gRPC server protected by tower-mtls, serving the standard health service.
//!
//! ```text
//! cargo run --example tonic_server                      # development PKI, prints grpcurl commands
//! cargo run --example tonic_server -- --cert server.pem --key server-key.pem --client-ca ca.pem
//! ```
//!
//! `grpc.health.v1.Health/Check` is allowed for any verified client, `Watch` only for admins
//! (`--admin-ou`, `--admin-spiffe`). No identity → UNAUTHENTICATED (16), denied →
//! PERMISSION_DENIED (7).

#[path = "support/pki.rs"]
mod pki;
#[path = "support/server.rs"]
pub mod server;

use std::process::ExitCode;

use tonic_health::ServingStatus;
use tower_mtls::{AuthContext, ConnectionInfo, Decision, MtlsAuthLayer};

use server::AdminRule;

/// Check: any verified client; Watch (and anything else): admins only.
pub fn authorizer(rule: AdminRule) -> impl Fn(&AuthContext<'_>) -> Decision + Clone {
    move |ctx: &AuthContext<'_>| match ctx.grpc_method() {
        Some(("grpc.health.v1.Health", "Check")) => Decision::allow("health check"),
        _ if rule.is_admin(ctx.principal()) => Decision::allow("admin OU or SPIFFE ID"),
        _ => Decision::deny("admins only"),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let (args, listener) = match server::start("tonic_server", true).await {
        Ok(started) => started,
        Err(code) => return code,
    };

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("grpc.health.v1.Health", ServingStatus::Serving)
        .await;
    let log_request = |req: http::Request<tonic::body::Body>| {
        let info = req.extensions().get::<ConnectionInfo>();
        tracing::info!(
            peer = info.map(|i| i.peer_addr().to_string()),
            principal = info
                .and_then(|i| i.principal_unchecked())
                .map(|p| p.to_string()),
            path = req.uri().path(),
            "request"
        );
        req
    };
    // tonic's server has its own HTTP/2 settings: give it the library's ping and maximum
    // connection age. (It has no header-read or idle timeout; the listener's handshake
    // timeout and connection caps apply as for the other servers.)
    let served = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(tower_mtls::hyper::DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(tower_mtls::hyper::DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT))
        .max_connection_age(tower_mtls::hyper::DEFAULT_MAX_CONNECTION_AGE)
        .max_connection_age_grace(tower_mtls::hyper::DEFAULT_GRACEFUL_CLOSE_TIMEOUT)
        .layer(tower::ServiceBuilder::new().map_request(log_request))
        .layer(MtlsAuthLayer::new(authorizer(AdminRule::from_args(&args))))
        .add_service(health)
        .serve_with_incoming_shutdown(tower_mtls::tonic::incoming(listener), server::ctrl_c())
        .await;
    server::exit_code(served)
}
