//! What the three example servers share: the command line, the TLS configuration (from files or
//! a development PKI), the admin rule and the `/whoami` document.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use tower_mtls::tls::{ClientAuth, MtlsConfigBuilder};
use tower_mtls::{
    AuthContext, Decision, MtlsAcceptor, MtlsConfig, MtlsListener, Principal, SpiffeId,
};

use super::pki;

/// Command-line flags of the example servers.
#[derive(Parser, Debug)]
#[command(about = "tower-mtls example server", version)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Server certificate chain (PEM). Without it a development PKI is minted.
    #[arg(long, value_name = "PEM")]
    pub cert: Option<PathBuf>,
    /// Server private key (PEM: PKCS#8, SEC1 or PKCS#1).
    #[arg(long, value_name = "PEM")]
    pub key: Option<PathBuf>,
    /// CA bundle client certificates must chain to (repeatable).
    #[arg(long = "client-ca", value_name = "PEM")]
    pub client_ca: Vec<PathBuf>,
    /// CRL file (repeatable).
    #[arg(long, value_name = "PEM")]
    pub crl: Vec<PathBuf>,
    /// Whether clients must present a certificate.
    #[arg(long = "client-auth", value_enum, default_value_t = Mode::Required)]
    pub client_auth: Mode,
    /// OU whose members are admins (repeatable).
    #[arg(long = "admin-ou", value_name = "OU", default_values_t = vec!["admins".to_owned()])]
    pub admin_ou: Vec<String>,
    /// SPIFFE ID that is an admin (repeatable).
    #[arg(long = "admin-spiffe", value_name = "ID", value_parser = parse_spiffe)]
    pub admin_spiffe: Vec<SpiffeId>,
    /// Authorization policy file (TOML); replaces the --admin-* rules.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

fn parse_spiffe(s: &str) -> Result<SpiffeId, String> {
    SpiffeId::parse(s).map_err(|e| e.to_string())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Required,
    Optional,
}

/// Parses the flags, sets up logging, builds the TLS configuration and binds the listener, as
/// `name` (`grpc` selects the printed client commands). Every failure is printed and becomes exit
/// code 2.
pub async fn start(name: &str, grpc: bool) -> Result<(Args, MtlsListener), ExitCode> {
    let (args, config) = configure(name, grpc)?;
    let listener = bind(name, &args, config).await?;
    Ok((args, listener))
}

/// The first half of [`start`]: flags, logging, TLS configuration.
pub fn configure(name: &str, grpc: bool) -> Result<(Args, MtlsConfig), ExitCode> {
    let args = Args::parse();
    init_tracing();
    if args.policy.is_some() && name != "axum_server" {
        return Err(usage_error("--policy is supported by axum_server only"));
    }
    let config = tls_builder(&args, if grpc { "grpc" } else { "http" })
        .map_err(usage_error)?
        .build()
        .map_err(usage_error)?;
    Ok((args, config))
}

/// The second half of [`start`]: the listener.
pub async fn bind(name: &str, args: &Args, config: MtlsConfig) -> Result<MtlsListener, ExitCode> {
    let listener = MtlsListener::bind(args.listen, MtlsAcceptor::new(config))
        .await
        .map_err(|err| usage_error(format!("cannot listen on {}: {err}", args.listen)))?;
    println!("{name} listening on {}", listener.local_addr());
    tracing::info!(addr = %listener.local_addr(), "{name} listening");
    Ok(listener)
}

/// The one log line per request of the HTTP examples.
pub fn log_request(
    info: Option<&tower_mtls::ConnectionInfo>,
    method: &http::Method,
    path: &str,
    status: http::StatusCode,
    started: std::time::Instant,
) {
    tracing::info!(
        peer = info.map(|i| i.peer_addr().to_string()),
        principal = info.and_then(|i| i.principal_unchecked()).map(|p| p.to_string()),
        %method,
        path,
        status = status.as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
}

/// The exit code of a server that has stopped.
pub fn exit_code<E: std::fmt::Display>(served: Result<(), E>) -> ExitCode {
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Waits for Ctrl-C.
pub async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Prints `message` as a usage error and returns exit code 2.
pub fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_mtls=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// The TLS configuration from the flags, or from a freshly minted development PKI when no
/// `--cert` is given. `what` names the example in the printed instructions.
pub fn tls_builder(args: &Args, what: &str) -> Result<MtlsConfigBuilder, String> {
    let mode = match args.client_auth {
        Mode::Required => ClientAuth::Required,
        Mode::Optional => ClientAuth::Optional,
    };
    let builder = match &args.cert {
        Some(cert) => {
            let key = args.key.as_ref().ok_or("--cert needs --key")?;
            if args.client_ca.is_empty() {
                return Err("--cert needs at least one --client-ca".into());
            }
            let mut builder = MtlsConfig::builder()
                .server_cert_pem_file(cert)
                .server_key_pem_file(key);
            for ca in &args.client_ca {
                builder = builder.client_ca_pem_file(ca);
            }
            builder
        }
        None => {
            if args.key.is_some() || !args.client_ca.is_empty() {
                return Err("--key and --client-ca need --cert (without --cert a development PKI is minted)".into());
            }
            let dir = dev_pki()?;
            print_dev_instructions(&dir, args, what);
            MtlsConfig::builder()
                .server_cert_pem_file(dir.join("server.pem"))
                .server_key_pem_file(dir.join("server-key.pem"))
                .client_ca_pem_file(dir.join("ca.pem"))
        }
    };
    let mut builder = builder.client_auth(mode);
    for crl in &args.crl {
        builder = builder.crl_pem_file(crl);
    }
    Ok(builder)
}

/// Mints a CA, a server certificate for localhost and clients `alice` (OU=admins), `bob`
/// (OU=users) and `svc` (SPIFFE ID `spiffe://example.org/admin`) under
/// `target/tower-mtls-dev/`.
fn dev_pki() -> Result<PathBuf, String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tower-mtls-dev");
    let ca = pki::Ca::root("tower-mtls development CA");
    let server = ca.server();
    let alice = ca.client("alice", &["admins"]);
    let bob = ca.client("bob", &["users"]);
    let mut svc_params = pki::client_params("svc", &["services"]);
    svc_params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://example.org/admin"
            .try_into()
            .map_err(|e| format!("{e}"))?,
    )];
    let svc = ca.issue(svc_params);
    pki::write_pem_files(
        &dir,
        &ca,
        &[
            ("server", &server),
            ("alice", &alice),
            ("bob", &bob),
            ("svc", &svc),
        ],
    )
    .map_err(|e| format!("cannot write the development PKI to {}: {e}", dir.display()))?;
    Ok(dir)
}

fn print_dev_instructions(dir: &Path, args: &Args, what: &str) {
    let d = dir.display();
    let port = args.listen.port();
    let host = if args.listen.ip().is_loopback() {
        "localhost".to_owned()
    } else {
        args.listen.ip().to_string()
    };
    println!("No --cert given: minted a development PKI in {d}");
    println!(
        "(CA ca.pem; clients alice = OU admins, bob = OU users, svc = spiffe://example.org/admin,"
    );
    println!(" an admin too when started with --admin-spiffe spiffe://example.org/admin)");
    if what == "grpc" {
        println!("Try (grpcurl, https://github.com/fullstorydev/grpcurl):");
        println!(
            "  grpcurl -cacert {d}/ca.pem -cert {d}/alice.pem -key {d}/alice-key.pem {host}:{port} grpc.health.v1.Health/Check"
        );
        println!(
            "  grpcurl -cacert {d}/ca.pem -cert {d}/bob.pem -key {d}/bob-key.pem {host}:{port} grpc.health.v1.Health/Watch"
        );
    } else {
        println!("Try:");
        println!(
            "  curl --cacert {d}/ca.pem --cert {d}/alice.pem --key {d}/alice-key.pem https://{host}:{port}/whoami"
        );
        println!(
            "  curl --cacert {d}/ca.pem --cert {d}/alice.pem --key {d}/alice-key.pem https://{host}:{port}/admin"
        );
        println!(
            "  curl --cacert {d}/ca.pem --cert {d}/bob.pem --key {d}/bob-key.pem https://{host}:{port}/admin"
        );
        println!("  curl --cacert {d}/ca.pem https://{host}:{port}/healthz");
    }
}

/// Who is an admin: an OU among `ous`, or a SPIFFE ID among `spiffe_ids`.
#[derive(Clone, Debug)]
pub struct AdminRule {
    pub ous: Vec<String>,
    pub spiffe_ids: Vec<SpiffeId>,
}

impl AdminRule {
    pub fn from_args(args: &Args) -> Self {
        AdminRule {
            ous: args.admin_ou.clone(),
            spiffe_ids: args.admin_spiffe.clone(),
        }
    }

    pub fn is_admin(&self, principal: &Principal) -> bool {
        principal
            .organizational_units()
            .any(|ou| self.ous.iter().any(|admin| admin == ou))
            || principal
                .spiffe_id()
                .is_some_and(|id| self.spiffe_ids.contains(id))
    }

    /// Admins only for `admin_path` and below it (`/admin/x`, not `/administrator`); any
    /// verified client elsewhere.
    pub fn decide(&self, ctx: &AuthContext<'_>, admin_path: &str) -> Decision {
        let path = ctx.path();
        let under_admin = path
            .strip_prefix(admin_path)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if !under_admin {
            Decision::allow("verified client")
        } else if self.is_admin(ctx.principal()) {
            Decision::allow("admin OU or SPIFFE ID")
        } else {
            Decision::deny("not an admin")
        }
    }
}

/// The `/whoami` document.
pub fn whoami_json(p: &Principal) -> serde_json::Value {
    let not_after = time::OffsetDateTime::from(p.not_after())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    serde_json::json!({
        "subject": p.subject().to_string(),
        "common_name": p.common_name(),
        "organizational_units": p.organizational_units().collect::<Vec<_>>(),
        "spiffe_id": p.spiffe_id().map(|id| id.to_string()),
        "dns_names": p.dns_names().collect::<Vec<_>>(),
        "emails": p.emails().collect::<Vec<_>>(),
        "uris": p.uris().collect::<Vec<_>>(),
        "serial": p.serial(),
        "fingerprint_sha256": p.fingerprint_sha256_hex(),
        "not_after": not_after,
    })
}

/// A JSON error body.
pub fn error_json(status: u16, title: &str) -> String {
    serde_json::json!({ "type": "about:blank", "title": title, "status": status }).to_string()
}
