//! The reloadable trust state: one snapshot (server certificate and key, client verifier,
//! resumption rules) with a generation number, read by the acceptor for every new handshake
//! and by [`ConnectionInfo`](crate::ConnectionInfo) to re-verify open connections after a reload.
//!
//! Both readers go through [`Snapshot::verify_client_chain`], so a chain is judged the same way
//! whether it arrives in a handshake, a resumed session or a connection that outlived a reload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use rustls::server::danger::ClientCertVerifier;
use tokio_rustls::TlsAcceptor;

use crate::identity::trust_bundle::TrustBundle;
use crate::metrics;
use crate::tls::config::MtlsConfig;
use crate::tls::resumption::ResumedCheck;
use crate::tls::session_resumption::Resumption;
use crate::tls::verifier::BundleVerifier;

/// The trust configuration in force, replaceable atomically.
pub(crate) struct TrustState {
    current: ArcSwap<Snapshot>,
    // Mirrors `current.generation`, so a request can check it with one atomic load.
    generation: AtomicU64,
    // Generations must name one configuration each: reloads take turns.
    reload_lock: Mutex<()>,
    // The generation again, for whoever re-checks open connections after a reload.
    reloaded: tokio::sync::watch::Sender<u64>,
}

/// One trust configuration, immutable once built.
pub(crate) struct Snapshot {
    pub(crate) tls: TlsAcceptor,
    server_config: Arc<ServerConfig>,
    // Re-verifies resumed sessions and open connections; `None` when resumption is disabled
    // instead (a rustls config without our verifier).
    verifier: Option<Arc<BundleVerifier>>,
    pub(crate) generation: u64,
    pub(crate) resumed_check: ResumedCheck,
    // What the session storage and ticketer of `server_config` were made from; `None` for a
    // rustls configuration built elsewhere (resumption forced off).
    resumption: Option<Resumption>,
    // The server leaf's notAfter (unknown for rustls configurations built elsewhere).
    server_not_after: Option<SystemTime>,
}

impl Snapshot {
    /// Generation 0 of a configuration this crate built.
    pub(crate) fn from_config(config: MtlsConfig) -> Self {
        Snapshot {
            tls: TlsAcceptor::from(config.server_config.clone()),
            server_config: config.server_config,
            verifier: Some(config.verifier),
            generation: 0,
            resumed_check: config.resumed_check,
            resumption: Some(config.resumption),
            server_not_after: config.server_not_after,
        }
    }

    /// Generation 0 of a rustls configuration built elsewhere: no verifier of ours.
    pub(crate) fn without_verifier(server_config: Arc<ServerConfig>) -> Self {
        Snapshot {
            tls: TlsAcceptor::from(server_config.clone()),
            server_config,
            verifier: None,
            generation: 0,
            resumed_check: ResumedCheck::Full,
            resumption: None,
            server_not_after: None,
        }
    }

    /// Whether the server certificate has expired at `now`: new handshakes are then refused.
    pub(crate) fn server_certificate_expired(&self, now: SystemTime) -> bool {
        self.server_not_after
            .is_some_and(|not_after| now > not_after)
    }

    /// Whether this configuration requires a client certificate (rustls checks it on full
    /// handshakes only). Snapshots without a verifier of ours do not resume at all.
    pub(crate) fn requires_client_certificate(&self) -> bool {
        self.verifier
            .as_ref()
            .is_some_and(|verifier| verifier.client_auth_mandatory())
    }

    /// Whether this snapshot can re-verify chains (and so allows resumption).
    pub(crate) fn has_verifier(&self) -> bool {
        self.verifier.is_some()
    }

    /// Verifies `chain` (leaf first) as a client chain under this snapshot, now, and says
    /// which trust bundle verified it. `None` when the snapshot has no verifier to ask.
    pub(crate) fn verify_client_chain(
        &self,
        chain: &[CertificateDer<'_>],
    ) -> Option<Result<&TrustBundle, rustls::Error>> {
        Some(self.verifier.as_ref()?.verify_chain(chain))
    }

    /// Which trust bundle verified `chain`, which a handshake under this very snapshot has
    /// just accepted. Without a verifier of ours (a rustls configuration built elsewhere), the
    /// bundle is unknown and reported as the unnamed one.
    pub(crate) fn bundle_of(
        &self,
        chain: &[CertificateDer<'_>],
    ) -> Result<TrustBundle, rustls::Error> {
        match &self.verifier {
            Some(verifier) => verifier.bundle_of(chain).cloned(),
            None => Ok(TrustBundle::Unnamed),
        }
    }
}

impl TrustState {
    pub(crate) fn new(snapshot: Snapshot) -> Self {
        metrics::server_cert_expiry(snapshot.server_not_after);
        TrustState {
            reloaded: tokio::sync::watch::Sender::new(snapshot.generation),
            generation: AtomicU64::new(snapshot.generation),
            current: ArcSwap::from_pointee(snapshot),
            reload_lock: Mutex::new(()),
        }
    }

    /// The generation in force: one atomic load.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The snapshot in force, for a short look.
    pub(crate) fn current(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The snapshot in force, to hold for a whole handshake.
    pub(crate) fn current_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Puts `config` in force as the next generation and returns that generation. When its
    /// [`Resumption`] keeps sessions the same way as the configuration in force (same mode,
    /// same size or period), the session cache and the ticket keys carry over: resumed
    /// sessions are re-verified against the new snapshot, so a certificate revoked by the
    /// reload cannot resume. Otherwise the new configuration's own (empty cache, fresh keys)
    /// are used. The TLS 1.3 ticket count is always the new one.
    pub(crate) fn replace(&self, config: MtlsConfig) -> u64 {
        let _turn = self
            .reload_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let old = self.current.load();
        let mut server_config = (*config.server_config).clone();
        let keep = old
            .resumption
            .as_ref()
            .is_some_and(|in_force| in_force.same_storage(&config.resumption));
        if keep {
            server_config.session_storage = old.server_config.session_storage.clone();
            server_config.ticketer = old.server_config.ticketer.clone();
        }
        let server_config = Arc::new(server_config);
        let generation = old.generation + 1;
        metrics::server_cert_expiry(config.server_not_after);
        self.current.store(Arc::new(Snapshot {
            tls: TlsAcceptor::from(server_config.clone()),
            server_config,
            verifier: Some(config.verifier),
            generation,
            resumed_check: config.resumed_check,
            resumption: Some(config.resumption),
            server_not_after: config.server_not_after,
        }));
        self.generation.store(generation, Ordering::Release);
        self.reloaded.send_replace(generation);
        generation
    }

    /// Changes with every reload.
    pub(crate) fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloaded.subscribe()
    }
}
