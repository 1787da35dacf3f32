//! What the three example servers share: the command line, the TLS configuration (from files or
//! a development PKI), the admin rule and the `/whoami` document.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use tower_mtls::authorize::Matcher;
use tower_mtls::forwarded::{ForwardedCertFormat, TrustedProxies};
use tower_mtls::tls::{ClientAuth, MtlsConfigBuilder};
use tower_mtls::workload_api::{
    Endpoint, WorkloadApiClient, WorkloadApiSource, WorkloadApiWatcher,
};
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
    /// X.509 bundle of a SPIFFE trust domain, as TRUST_DOMAIN=PEM (repeatable: one per trust
    /// domain, federated ones included). A client certificate with a SPIFFE ID is then accepted
    /// only as a valid X509-SVID of its own trust domain's bundle; clients without one need a
    /// --client-ca.
    #[arg(long = "spiffe-bundle", value_name = "TRUST_DOMAIN=PEM", value_parser = parse_spiffe_bundle)]
    pub spiffe_bundle: Vec<SpiffeBundleArg>,
    /// The SPIFFE Workload API (`unix:/path/to/agent.sock` or `tcp:127.0.0.1:PORT`): the
    /// server's certificate and key and every SPIFFE bundle come from it and follow its updates
    /// (in place of --cert, --key and --spiffe-bundle; --client-ca and --crl still apply). The
    /// server waits up to 30 s for the first X509-SVID, then gives up with exit code 2.
    #[arg(long = "spiffe-endpoint", value_name = "ENDPOINT")]
    pub spiffe_endpoint: Option<Endpoint>,
    /// CRL file (repeatable).
    #[arg(long, value_name = "PEM")]
    pub crl: Vec<PathBuf>,
    /// Serve the Prometheus text format at http://ADDR/metrics (plain HTTP on its own
    /// listener; meant for loopback).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Whether clients must present a certificate.
    #[arg(long = "client-auth", value_enum, default_value_t = Mode::Required)]
    pub client_auth: Mode,
    /// OU whose members are admins (repeatable).
    #[arg(long = "admin-ou", value_name = "OU", default_values_t = vec!["admins".to_owned()])]
    pub admin_ou: Vec<String>,
    /// SPIFFE ID that is an admin (repeatable). With --spiffe-bundle, only an X509-SVID from
    /// that ID's own trust domain bundle can carry it.
    #[arg(long = "admin-spiffe", value_name = "ID", value_parser = parse_spiffe)]
    pub admin_spiffe: Vec<SpiffeId>,
    /// Authorization policy file (TOML); replaces the --admin-* rules.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Seconds a client has to complete the TLS handshake [default: the library's, 10].
    #[arg(long = "handshake-timeout", value_name = "SECS", value_parser = parse_secs)]
    pub handshake_timeout: Option<Duration>,
    /// Seconds a client has to send a request's header, and to send the next one on a
    /// kept-alive HTTP/1.1 connection [default: the library's, 30; HTTP servers only].
    #[arg(long = "header-timeout", value_name = "SECS", value_parser = parse_secs)]
    pub header_timeout: Option<Duration>,
    /// Seconds a connection may stay open with no request in flight [default: the library's,
    /// 75; HTTP servers only].
    #[arg(long = "idle-timeout", value_name = "SECS", value_parser = parse_secs)]
    pub idle_timeout: Option<Duration>,
    /// Connections open at once [default: the library's, 10000].
    #[arg(long = "max-connections", value_name = "N", value_parser = parse_count)]
    pub max_connections: Option<usize>,
    /// Connections open at once from one client address [default: the library's, 256].
    #[arg(long = "max-connections-per-ip", value_name = "N", value_parser = parse_count)]
    pub max_connections_per_ip: Option<usize>,
    /// A connection whose verified certificate has this SPIFFE ID is a trusted proxy
    /// (repeatable; any match makes a connection a proxy). Needs --forwarded-cert.
    #[arg(long = "trusted-proxy-spiffe", value_name = "ID", value_parser = parse_spiffe)]
    pub trusted_proxy_spiffe: Vec<SpiffeId>,
    /// A connection whose verified certificate has this DNS SAN (exact, or `*.suffix`) is a
    /// trusted proxy (repeatable).
    #[arg(long = "trusted-proxy-dns", value_name = "NAME", value_parser = parse_dns)]
    pub trusted_proxy_dns: Vec<Matcher>,
    /// A connection whose verified certificate has this subject CN is a trusted proxy
    /// (repeatable).
    #[arg(long = "trusted-proxy-cn", value_name = "CN")]
    pub trusted_proxy_cn: Vec<String>,
    /// How trusted proxies forward the client certificate: rfc9440 (Client-Cert and
    /// Client-Cert-Chain), xfcc (x-forwarded-client-cert), nginx or haproxy
    /// (X-SSL-Client-Cert). Required with a --trusted-proxy-*, refused without one. On every
    /// other connection the header is removed from requests.
    #[arg(long = "forwarded-cert", value_name = "FORMAT", value_parser = parse_forwarded_format)]
    pub forwarded_cert: Option<ForwardedCertFormat>,
    /// The header the forwarded certificate is read from instead of the format's default (for
    /// rfc9440 the leaf's; the chain is read from NAME-Chain).
    #[arg(long = "forwarded-cert-header", value_name = "NAME")]
    pub forwarded_cert_header: Option<String>,
}

impl Args {
    /// The HTTP timeouts: the library's defaults, with the flags given.
    /// The trusted proxies of the flags: `Ok(None)` without any `--trusted-proxy-*` or
    /// `--forwarded-cert*`; an error (a usage error) when they do not go together.
    pub fn trusted_proxies(&self) -> Result<Option<TrustedProxies>, String> {
        let named = !self.trusted_proxy_spiffe.is_empty()
            || !self.trusted_proxy_dns.is_empty()
            || !self.trusted_proxy_cn.is_empty();
        let format = match (named, self.forwarded_cert) {
            (false, None) => {
                return match self.forwarded_cert_header {
                    Some(_) => Err(
                        "--forwarded-cert-header needs --forwarded-cert and a --trusted-proxy-*"
                            .into(),
                    ),
                    None => Ok(None),
                };
            }
            (true, None) => {
                return Err(
                    "--trusted-proxy-* needs --forwarded-cert rfc9440|xfcc|nginx|haproxy".into(),
                );
            }
            (false, Some(_)) => {
                return Err("--forwarded-cert needs at least one --trusted-proxy-spiffe, --trusted-proxy-dns or --trusted-proxy-cn".into());
            }
            (true, Some(format)) => format,
        };
        let mut proxies = TrustedProxies::new(format);
        if let Some(name) = &self.forwarded_cert_header {
            proxies = proxies
                .header_name(name)
                .map_err(|e| format!("--forwarded-cert-header: {e}"))?;
        }
        for id in &self.trusted_proxy_spiffe {
            proxies = proxies.proxy(Matcher::spiffe_id(id.clone()));
        }
        for dns in &self.trusted_proxy_dns {
            proxies = proxies.proxy(dns.clone());
        }
        for cn in &self.trusted_proxy_cn {
            proxies = proxies.proxy(Matcher::common_name(cn));
        }
        Ok(Some(proxies))
    }

    pub fn http_timeouts(&self) -> tower_mtls::hyper::HttpTimeouts {
        let mut timeouts = tower_mtls::hyper::HttpTimeouts::default();
        if let Some(header) = self.header_timeout {
            timeouts = timeouts.header_read_timeout(header);
        }
        if let Some(idle) = self.idle_timeout {
            timeouts = timeouts.idle_timeout(idle);
        }
        timeouts
    }
}

fn parse_dns(s: &str) -> Result<Matcher, String> {
    Matcher::dns_name(s).map_err(|e| e.to_string())
}

fn parse_forwarded_format(s: &str) -> Result<ForwardedCertFormat, String> {
    s.parse()
        .map_err(|e: tower_mtls::forwarded::ForwardedConfigError| e.to_string())
}

fn parse_spiffe(s: &str) -> Result<SpiffeId, String> {
    SpiffeId::parse(s).map_err(|e| e.to_string())
}

/// One `--spiffe-bundle TRUST_DOMAIN=PEM`.
#[derive(Clone, Debug)]
pub struct SpiffeBundleArg {
    pub trust_domain: String,
    pub pem: PathBuf,
}

fn parse_spiffe_bundle(s: &str) -> Result<SpiffeBundleArg, String> {
    let (trust_domain, pem) = s
        .split_once('=')
        .ok_or("expected TRUST_DOMAIN=PEM, e.g. example.org=bundle.pem")?;
    // A trust domain is what a SPIFFE ID without a path is made of.
    let id = SpiffeId::parse(&format!("spiffe://{trust_domain}"))
        .map_err(|e| format!("{trust_domain:?} is not a SPIFFE trust domain: {e}"))?;
    if !id.path().is_empty() {
        return Err(format!(
            "{trust_domain:?} is not a SPIFFE trust domain: it has a path"
        ));
    }
    if pem.is_empty() {
        return Err("no PEM file after TRUST_DOMAIN=".into());
    }
    Ok(SpiffeBundleArg {
        trust_domain: trust_domain.to_owned(),
        pem: PathBuf::from(pem),
    })
}

/// A positive number of seconds (fractions allowed), at most a day.
fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(format!(
            "{s}: must be more than 0 and at most 86400 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A positive whole number.
fn parse_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?}: must be a whole number of at least 1")),
    }
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
    let (args, tls) = configure(name, grpc).await?;
    let listener = bind(name, &args, tls).await?;
    Ok((args, listener))
}

/// The TLS configuration, and the Workload API source it came from (`--spiffe-endpoint`).
pub struct Tls {
    config: MtlsConfig,
    source: Option<WorkloadApiSource>,
}

/// How long `--spiffe-endpoint` waits for the first X509-SVID.
const FIRST_SVID_WAIT: Duration = Duration::from_secs(30);

/// The Workload API follower of the process: it follows for as long as the server runs.
static FOLLOWING: OnceLock<WorkloadApiWatcher> = OnceLock::new();

/// The first half of [`start`]: flags, logging, TLS configuration.
pub async fn configure(name: &str, grpc: bool) -> Result<(Args, Tls), ExitCode> {
    let args = Args::parse();
    init_tracing();
    if args.policy.is_some() && name != "axum_server" {
        return Err(usage_error("--policy is supported by axum_server only"));
    }
    args.trusted_proxies().map_err(usage_error)?;
    if let Some(addr) = args.metrics {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .map_err(|err| usage_error(format!("--metrics {addr}: {err}")))?;
        println!("metrics on http://{addr}/metrics");
    }
    if grpc && (args.header_timeout.is_some() || args.idle_timeout.is_some()) {
        tracing::warn!(
            "--header-timeout and --idle-timeout do not apply to {name}: tonic's server has no \
             header-read or idle timeout (the handshake timeout and connection caps do apply)"
        );
    }
    let builder = tls_builder(&args, if grpc { "grpc" } else { "http" }).map_err(usage_error)?;
    let tls = match &args.spiffe_endpoint {
        None => Tls {
            config: builder.build().map_err(usage_error)?,
            source: None,
        },
        Some(endpoint) => {
            println!("waiting for an X509-SVID from the Workload API at {endpoint}");
            let client = WorkloadApiClient::new(endpoint.clone());
            let (source, config) = WorkloadApiSource::connect(client, builder, FIRST_SVID_WAIT)
                .await
                .map_err(usage_error)?;
            println!("serving as {}", source.material().svid().spiffe_id());
            Tls {
                config,
                source: Some(source),
            }
        }
    };
    Ok((args, tls))
}

/// The second half of [`start`]: the listener, with the handshake timeout and the connection
/// caps of the flags.
pub async fn bind(name: &str, args: &Args, tls: Tls) -> Result<MtlsListener, ExitCode> {
    let mut acceptor = MtlsAcceptor::new(tls.config);
    if let Some(timeout) = args.handshake_timeout {
        acceptor = acceptor.handshake_timeout(timeout);
    }
    if let Some(proxies) = args.trusted_proxies().map_err(usage_error)? {
        println!("trusted proxies: {proxies}");
        acceptor = acceptor.trusted_proxies(proxies);
    }
    if let Some(source) = tls.source {
        let _ = FOLLOWING.set(source.follow(&acceptor));
    }
    let mut listener = MtlsListener::builder(acceptor);
    if let Some(n) = args.max_connections {
        listener = listener.max_connections(n);
    }
    if let Some(n) = args.max_connections_per_ip {
        listener = listener.max_connections_per_ip(n);
    }
    let listener = listener
        .bind(args.listen)
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
    let builder = match (&args.spiffe_endpoint, &args.cert) {
        (Some(_), _) => {
            if args.cert.is_some() || args.key.is_some() || !args.spiffe_bundle.is_empty() {
                return Err("--spiffe-endpoint replaces --cert, --key and --spiffe-bundle: the Workload API gives the server's certificate, key and bundles".into());
            }
            let mut builder = MtlsConfig::builder();
            for ca in &args.client_ca {
                builder = builder.client_ca_pem_file(ca);
            }
            builder
        }
        (None, Some(cert)) => {
            let key = args.key.as_ref().ok_or("--cert needs --key")?;
            if args.client_ca.is_empty() && args.spiffe_bundle.is_empty() {
                return Err("--cert needs at least one --client-ca or --spiffe-bundle".into());
            }
            let mut builder = MtlsConfig::builder()
                .server_cert_pem_file(cert)
                .server_key_pem_file(key);
            for ca in &args.client_ca {
                builder = builder.client_ca_pem_file(ca);
            }
            for bundle in &args.spiffe_bundle {
                builder = builder.spiffe_bundle_file(&bundle.trust_domain, &bundle.pem);
            }
            builder
        }
        (None, None) => {
            if args.key.is_some() || !args.client_ca.is_empty() || !args.spiffe_bundle.is_empty() {
                return Err("--key, --client-ca and --spiffe-bundle need --cert (without --cert a development PKI is minted)".into());
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
        // The bundle that verified the chain: a SPIFFE trust domain, a named bundle, or null
        // for the unnamed --client-ca bundle.
        "trust_bundle": p.trust_bundle().name(),
        // The trusted proxy that forwarded this identity (its subject DN), or null for a
        // client that connected directly.
        "forwarded_by": p.forwarded_by().map(|proxy| proxy.subject().to_string()),
    })
}

/// A JSON error body.
pub fn error_json(status: u16, title: &str) -> String {
    serde_json::json!({ "type": "about:blank", "title": title, "status": status }).to_string()
}
