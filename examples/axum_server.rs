//! An axum 0.8 server protected by tower-mtls.
//!
//! ```text
//! cargo run --example axum_server                      # development PKI, prints curl commands
//! cargo run --example axum_server -- --cert server.pem --key server-key.pem --client-ca ca.pem
//! ```
//!
//! Routes: `GET /healthz` (anyone who completed the handshake), `GET /whoami` (any verified
//! client), `GET /admin` (OU in `--admin-ou` or SPIFFE ID in `--admin-spiffe`). No verified
//! identity → 401, a path without a canonical form (`/%61dmin`, `//admin`, `/a/../b`) or a
//! method spelled `get` → 400, denied → 403, unknown path → 404 (after authentication); every
//! error is JSON.

#[path = "support/pki.rs"]
mod pki;
#[path = "support/server.rs"]
pub mod server;

use std::process::ExitCode;

use axum::Json;
use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_mtls::authorize::ReloadablePolicy;
use tower_mtls::{AuthContext, Authorizer, ConnectionInfo, MtlsAuthLayer, Principal};

use server::AdminRule;

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn whoami(principal: Principal) -> Json<serde_json::Value> {
    Json(server::whoami_json(&principal))
}

async fn admin(principal: Principal) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "admin": true, "subject": principal.subject().to_string() }))
}

async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "Not Found")
}

async fn method_not_allowed() -> Response {
    json_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}

fn json_error(status: StatusCode, title: &str) -> Response {
    (
        status,
        [("content-type", "application/problem+json")],
        server::error_json(status.as_u16(), title),
    )
        .into_response()
}

/// One log line per request, with the peer and the identity.
async fn log_request(info: Option<ConnectionInfo>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    server::log_request(info.as_ref(), &method, &path, response.status(), started);
    response
}

/// The application: `/healthz` public, the rest behind the layer.
pub fn app(rule: AdminRule) -> Router {
    app_with(tower_mtls::authorize_fn(move |ctx: &AuthContext<'_>| {
        rule.decide(ctx, "/admin")
    }))
}

/// The application with any authorizer (`--policy` passes a reloadable policy file).
pub fn app_with<A>(authz: A) -> Router
where
    A: Authorizer + Send + Sync + 'static,
    A::Future: Send + 'static,
{
    let protected = Router::new()
        .route("/whoami", get(whoami))
        .route("/admin", get(admin))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(MtlsAuthLayer::new(authz));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(protected)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(log_request))
}

#[tokio::main]
async fn main() -> ExitCode {
    let (args, tls) = match server::configure("axum_server", false).await {
        Ok(configured) => configured,
        Err(code) => return code,
    };
    // `--policy` replaces the --admin-* rules; SIGHUP reloads it (a bad file is refused and
    // the rules in force stay).
    let policy = match &args.policy {
        Some(path) => match ReloadablePolicy::from_toml_file(path) {
            Ok(policy) => Some(policy),
            Err(err) => return server::usage_error(format!("{}: {err}", path.display())),
        },
        None => None,
    };
    let listener = match server::bind("axum_server", &args, tls).await {
        Ok(listener) => listener,
        Err(code) => return code,
    };
    let app = match (&policy, &args.policy) {
        (Some(policy), Some(path)) => {
            reload_on_sighup(policy.clone(), path.clone());
            app_with(policy.clone())
        }
        _ => app(AdminRule::from_args(&args)),
    };
    // `tower_mtls::axum::serve`, not `axum::serve`: it has the HTTP timeouts (header read, idle,
    // max connection age) and puts `ConnectInfo<ConnectionInfo>` in every request.
    tower_mtls::axum::serve(listener, app)
        .timeouts(args.http_timeouts())
        .with_graceful_shutdown(server::ctrl_c(), std::time::Duration::from_secs(10))
        .await;
    ExitCode::SUCCESS
}

#[cfg(unix)]
fn reload_on_sighup(policy: ReloadablePolicy, path: std::path::PathBuf) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; the policy will not be reloaded");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            // `reload_file` logs and keeps the old rules when the new file is bad.
            if policy.reload_file(&path).is_ok() {
                tracing::info!(file = %path.display(), "policy reloaded");
            }
        }
    });
}

#[cfg(not(unix))]
fn reload_on_sighup(_policy: ReloadablePolicy, _path: std::path::PathBuf) {}
