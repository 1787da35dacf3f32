//! The TLS side: configuration, handshakes, the listener, reloads.
//!
//! The entry points are at the crate root — [`MtlsConfig`](crate::MtlsConfig),
//! [`MtlsAcceptor`](crate::MtlsAcceptor), [`MtlsListener`](crate::MtlsListener) — and this
//! module holds what they are configured with and report.
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_mtls::tls::{ClientAuth, Resumption, RevocationScope, TlsVersions};
//! use tower_mtls::{MtlsAcceptor, MtlsConfig, MtlsListener};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = MtlsConfig::builder()
//!     .server_cert_pem_file("server.pem")
//!     .server_key_pem_file("server-key.pem")
//!     .client_ca_pem_file("clients-ca.pem")
//!     .crl_pem_file("clients.crl")
//!     .client_auth(ClientAuth::Required)              // the default
//!     .tls_versions(TlsVersions::Tls13Only)
//!     .revocation_scope(RevocationScope::FullChain)   // the default
//!     .resumption(Resumption::cache(1024))            // default: 256 sessions
//!     .build()?;
//! let acceptor = MtlsAcceptor::new(config)
//!     .client_hello_timeout(Duration::from_secs(2))
//!     .handshake_timeout(Duration::from_secs(5));
//! let listener = MtlsListener::builder(acceptor)
//!     .max_handshakes_in_flight(256)
//!     .max_connections_per_ip(100)
//!     .bind("127.0.0.1:8443")
//!     .await?;
//! println!("{:?}", listener.stats());
//! # Ok(()) }
//! ```
//!
//! Inside: the configuration is read and checked in `config` and `pem`; `bundles` holds the
//! client trust bundles (client CA bundles, SPIFFE trust domains) and says which one verified a
//! chain, `svid` the X509-SVID rules, `verifier` the rustls verifier over them; `trust` holds the
//! reloadable trust snapshot that both the acceptor and open connections verify against;
//! `session_resumption` holds the [`Resumption`] setting (off, a session cache, stateless
//! tickets), `resumption` decides when a resumed session needs its chain verified again;
//! `accept_loop` runs every handshake in its own task for the listener, after `admission`
//! let it in (caps per address and overall, shedding the oldest handshakes).

pub(crate) mod accept_loop;
pub(crate) mod acceptor;
pub(crate) mod admission;
pub(crate) mod bundles;
pub(crate) mod config;
pub(crate) mod config_error;
pub(crate) mod handshake_error;
pub(crate) mod listener;
pub(crate) mod open_connections;
pub(crate) mod pem;
pub(crate) mod provider;
pub(crate) mod resumption;
pub(crate) mod session_resumption;
pub(crate) mod stats;
pub(crate) mod stream;
pub(crate) mod svid;
pub(crate) mod trust;
pub(crate) mod verifier;
pub(crate) mod watch;

pub use accept_loop::Accepted;
pub use acceptor::{
    DEFAULT_CLIENT_HELLO_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_REVOKED_GRACE,
};
pub use config::{
    ClientAuth, DEFAULT_CERT_EXPIRY_WARNING, DEFAULT_CRL_EXPIRY_WARNING, MtlsConfigBuilder,
    RevocationScope, TlsVersions, UnknownRevocation,
};
pub use config_error::Origin;
pub use handshake_error::{HandshakeFailure, ShedCause};
pub use listener::{
    DEFAULT_MAX_ANONYMOUS_CONNECTIONS, DEFAULT_MAX_ANONYMOUS_CONNECTIONS_PER_IP,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_HANDSHAKES_IN_FLIGHT,
    DEFAULT_MAX_HANDSHAKES_IN_FLIGHT_PER_IP, MtlsListenerBuilder,
};
pub use provider::crypto_provider;
pub use session_resumption::Resumption;
pub use stats::HandshakeStats;
pub use stream::MtlsStream;
pub use watch::ReloadWatcher;
