//! The five-minute tour: mint a throwaway PKI, start an mTLS server on 127.0.0.1, and call it
//! as `alice` (OU=admins), as `bob` (OU=users) and with no certificate.
//!
//! ```text
//! cargo run --example quickstart             # prints a table and exits
//! cargo run --example quickstart -- --serve  # keeps serving, prints curl commands
//! ```

#[path = "support/client.rs"]
mod client;
#[path = "support/pki.rs"]
mod pki;

use std::convert::Infallible;
use std::path::PathBuf;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::ServiceBuilder;
use tower_mtls::tls::ClientAuth;
use tower_mtls::{
    AuthContext, Decision, MtlsAcceptor, MtlsAuthLayer, MtlsConfig, MtlsListener, Principal,
};

/// `/admin` needs OU=admins; everything else is open to any verified client.
fn policy(ctx: &AuthContext<'_>) -> Decision {
    if ctx.path() != "/admin" {
        return Decision::allow("verified client");
    }
    if ctx
        .principal()
        .organizational_units()
        .any(|ou| ou == "admins")
    {
        Decision::allow("OU=admins")
    } else {
        Decision::deny("/admin needs OU=admins")
    }
}

async fn handler(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // The layer only lets requests through with a verified principal in the extensions.
    let who = req
        .extensions()
        .get::<Principal>()
        .map(|p| p.subject().to_string())
        .unwrap_or_default();
    let body = match req.uri().path() {
        "/admin" => format!("{{\"admin\":true,\"subject\":{who:?}}}\n"),
        _ => format!("{{\"subject\":{who:?}}}\n"),
    };
    Ok(Response::new(Full::new(Bytes::from(body))))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let serve_forever = std::env::args().any(|a| a == "--serve");

    // 1. A throwaway PKI: one CA, a server certificate for localhost, two clients.
    let ca = pki::Ca::root("tower-mtls quickstart CA");
    let server = ca.server();
    let alice = ca.client("alice", &["admins"]);
    let bob = ca.client("bob", &["users"]);

    // 2. The server: optional client auth (so the no-certificate call reaches the layer and
    //    gets 401 instead of a failed handshake), an authorizer, and the layer.
    let tls = MtlsConfig::builder()
        .server_cert_pem(server.chain_pem())
        .server_key_pem(server.key_pem.clone())
        .client_ca_pem(ca.pem())
        .client_auth(ClientAuth::Optional)
        .build()?;
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(tower_mtls::authorize_fn(policy)))
        .service_fn(handler);
    let listener = tokio::net::TcpListener::bind(if serve_forever {
        "127.0.0.1:8443"
    } else {
        "127.0.0.1:0"
    })
    .await?;
    let addr = listener.local_addr()?;
    let listener = MtlsListener::from_tcp(listener, MtlsAcceptor::new(tls))?;
    let server_task = tokio::spawn(tower_mtls::hyper::serve(listener, service));

    if serve_forever {
        let dir = write_pem_files(&ca, &server, &alice, &bob)?;
        let d = dir.display();
        println!("serving https://localhost:{} (Ctrl-C to stop)", addr.port());
        println!("PEM files in {d}\n");
        println!(
            "curl --cacert {d}/ca.pem --cert {d}/alice.pem --key {d}/alice-key.pem https://localhost:{}/admin",
            addr.port()
        );
        println!(
            "curl --cacert {d}/ca.pem --cert {d}/bob.pem --key {d}/bob-key.pem https://localhost:{}/admin",
            addr.port()
        );
        println!(
            "curl --cacert {d}/ca.pem https://localhost:{}/admin",
            addr.port()
        );
        tokio::signal::ctrl_c().await?;
        server_task.abort();
        return Ok(());
    }

    // 3. Real mTLS calls over loopback.
    let ca_der = ca.der().clone();
    let calls = [
        ("alice (OU=admins)", Some(&alice), StatusCode::OK),
        ("bob (OU=users)", Some(&bob), StatusCode::FORBIDDEN),
        ("no certificate", None, StatusCode::UNAUTHORIZED),
    ];
    println!("tower-mtls quickstart: server on https://{addr}\n");
    println!(
        "{:<20} {:<10} {:<8} {:<8}",
        "caller", "path", "status", "expected"
    );
    let mut all_as_expected = true;
    for (who, identity, expected) in calls {
        let config = client::client_config(
            &ca_der,
            identity.map(|id| (id.chain.clone(), id.key())),
            &[b"http/1.1"],
        );
        let reply = client::get_once(addr, config, "/admin").await?;
        all_as_expected &= reply.status == expected;
        println!(
            "{:<20} {:<10} {:<8} {:<8}",
            who,
            "/admin",
            reply.status.as_u16(),
            expected.as_u16()
        );
    }
    server_task.abort();
    if all_as_expected {
        println!("\nall statuses as expected. Next: cargo run --example quickstart -- --serve");
        Ok(())
    } else {
        Err("a status differed from the expected one".into())
    }
}

fn write_pem_files(
    ca: &pki::Ca,
    server: &pki::Identity,
    alice: &pki::Identity,
    bob: &pki::Identity,
) -> std::io::Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tower-mtls-quickstart");
    pki::write_pem_files(
        &dir,
        ca,
        &[("server", server), ("alice", alice), ("bob", bob)],
    )?;
    Ok(dir)
}
