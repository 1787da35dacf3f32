//! [`WorkloadApiSource`]: the Workload API as the source of an acceptor's server certificate,
//! key and SPIFFE bundles, every update applied as an atomic reload.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;

use crate::metrics::{self, ReloadSource};
use crate::tls::acceptor::MtlsAcceptor;
use crate::tls::config::{MtlsConfig, MtlsConfigBuilder};
use crate::tls::config_error::ConfigError;
use crate::workload_api::client::{StreamError, WorkloadApiClient, WorkloadEvent, WorkloadEvents};
use crate::workload_api::material::X509Material;

/// Keeps an [`MtlsAcceptor`] in step with the SPIFFE Workload API: the server's certificate
/// chain and key are the selected X509-SVID, and every trust domain's bundle (the own one and
/// the federated ones) becomes a [`spiffe_bundle`](MtlsConfigBuilder::spiffe_bundle); CRLs the
/// agent sends are honored.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use tower_mtls::workload_api::{WorkloadApiClient, WorkloadApiSource};
/// use tower_mtls::{MtlsAcceptor, MtlsConfig, MtlsListener};
///
/// let client = WorkloadApiClient::from_env()?; // SPIFFE_ENDPOINT_SOCKET
/// // What does not come from the agent: client auth mode, CRL files, a CA for non-SPIFFE clients.
/// let base = MtlsConfig::builder();
/// let (source, config) = WorkloadApiSource::connect(client, base, Duration::from_secs(30)).await?;
/// let acceptor = MtlsAcceptor::new(config);
/// let _following = source.follow(&acceptor); // keep it: dropping it stops following
/// let listener = MtlsListener::bind("127.0.0.1:8443", acceptor).await?;
/// # drop(listener); Ok(()) }
/// ```
///
/// Each update is one [`reload`](MtlsAcceptor::reload_from): new handshakes use the new SVID
/// and bundles, resumed sessions are re-verified against them, and open connections are
/// re-checked (a client whose trust domain lost its bundle gets 401). Material that does not
/// build (the agent sent a key that does not match its certificate, say) is refused, logged,
/// and the current configuration stays. The base builder's files (`--client-ca`, `--crl`) are
/// read again at every update. It should not hold SPIFFE bundles of its own: the agent's
/// replace them.
///
/// Agent down or stream broken: the client reconnects with backoff and the last good
/// material stays in force **while the server SVID is valid**. Once it has expired with no
/// replacement, the acceptor refuses new handshakes
/// ([`HandshakeFailure::ServerCertificateExpired`](crate::tls::HandshakeFailure::ServerCertificateExpired))
/// and an error is logged: it fails closed rather than presenting an expired certificate.
#[derive(Debug)]
pub struct WorkloadApiSource {
    events: WorkloadEvents,
    base: MtlsConfigBuilder,
    current: Arc<X509Material>,
}

/// Why [`WorkloadApiSource::connect`] has no configuration to give.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// No usable X509-SVID arrived within the wait; `last` is the last stream failure seen.
    #[error("no X509-SVID from the Workload API within {waited:?}{}", last.as_ref().map(|e| format!(" (last: {e})")).unwrap_or_default())]
    Timeout {
        /// How long it waited.
        waited: Duration,
        /// The last reason the stream failed, if it did.
        last: Option<StreamError>,
    },
    /// The agent answered with a code the specification says not to retry.
    #[error("the Workload API refused the client: {0}")]
    GaveUp(StreamError),
    /// The first SVID and bundles do not build into a configuration.
    #[error("the Workload API's material cannot be used: {0}")]
    Config(#[from] ConfigError),
}

/// The running follower of [`WorkloadApiSource::follow`]; dropping it stops following (the
/// acceptor keeps the configuration it has).
#[derive(Debug)]
pub struct WorkloadApiWatcher {
    task: JoinHandle<()>,
    counters: Arc<Counters>,
}

impl Drop for WorkloadApiWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a [`WorkloadApiWatcher`] has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SourceStats {
    /// Updates applied as reloads.
    pub applied: u64,
    /// Updates refused: invalid material from the agent, or material that did not build.
    pub refused: u64,
    /// Times the stream broke or could not be opened.
    pub disconnects: u64,
}

#[derive(Debug, Default)]
struct Counters {
    applied: AtomicU64,
    refused: AtomicU64,
    disconnects: AtomicU64,
}

impl WorkloadApiWatcher {
    /// The counters.
    pub fn stats(&self) -> SourceStats {
        SourceStats {
            applied: self.counters.applied.load(Ordering::Relaxed),
            refused: self.counters.refused.load(Ordering::Relaxed),
            disconnects: self.counters.disconnects.load(Ordering::Relaxed),
        }
    }
}

impl WorkloadApiSource {
    /// Starts `client` and waits, up to `wait`, for the first material that builds into a
    /// configuration with `base` (the client retries with its backoff meanwhile); returns the
    /// source, to [`follow`](Self::follow) further updates, and that configuration.
    pub async fn connect(
        client: WorkloadApiClient,
        base: MtlsConfigBuilder,
        wait: Duration,
    ) -> Result<(Self, MtlsConfig), SourceError> {
        let mut events = client.watch();
        let mut last_failure = None;
        let mut last_build_error = None;
        let first = tokio::time::timeout(wait, async {
            while let Some(event) = events.recv().await {
                match event {
                    WorkloadEvent::Updated(material) => match builder_for(&base, &material).build()
                    {
                        Ok(config) => return Ok((material, config)),
                        Err(error) => {
                            tracing::warn!(%error, "the Workload API's first material does not build; waiting for the next");
                            last_build_error = Some(error);
                        }
                    },
                    WorkloadEvent::Disconnected(error) => {
                        tracing::info!(%error, "waiting for the Workload API");
                        last_failure = Some(error);
                    }
                    WorkloadEvent::GaveUp(error) => return Err(SourceError::GaveUp(error)),
                    WorkloadEvent::Refused(why) => {
                        tracing::warn!(error = %why, "the Workload API sent invalid material");
                    }
                    _ => {}
                }
            }
            Err(SourceError::Timeout {
                waited: wait,
                last: None,
            })
        })
        .await;
        let (current, config) = match first {
            Ok(Ok(found)) => found,
            Ok(Err(error)) => return Err(error),
            Err(_elapsed) => {
                return Err(match last_build_error {
                    Some(error) => SourceError::Config(error),
                    None => SourceError::Timeout {
                        waited: wait,
                        last: last_failure,
                    },
                });
            }
        };
        tracing::info!(
            spiffe_id = %current.svid().spiffe_id(),
            bundles = current.bundles().len(),
            "X509-SVID from the Workload API"
        );
        Ok((
            WorkloadApiSource {
                events,
                base,
                current,
            },
            config,
        ))
    }

    /// The material in force.
    pub fn material(&self) -> &Arc<X509Material> {
        &self.current
    }

    /// Applies every further update to `acceptor` (and its clones), in a task; call inside a
    /// Tokio runtime.
    pub fn follow(self, acceptor: &MtlsAcceptor) -> WorkloadApiWatcher {
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(follow(self, acceptor.clone(), counters.clone()));
        WorkloadApiWatcher { task, counters }
    }
}

/// `base` with the material's SVID as the server identity and its bundles and CRLs.
fn builder_for(base: &MtlsConfigBuilder, material: &X509Material) -> MtlsConfigBuilder {
    let svid = material.svid();
    let builder = base
        .clone()
        .server_cert_der(svid.cert_chain().to_vec())
        .server_key_der(svid.private_key().clone_key())
        .crl_der(material.crls().to_vec());
    material
        .bundles()
        .iter()
        .fold(builder, |builder, (trust_domain, certs)| {
            builder.spiffe_bundle_der(trust_domain, certs.clone())
        })
}

async fn follow(mut source: WorkloadApiSource, acceptor: MtlsAcceptor, counters: Arc<Counters>) {
    // Logged once when the SVID in force runs out with nothing to replace it; the acceptor
    // itself refuses handshakes from then on.
    let mut expiry_logged = false;
    loop {
        let expires = source.current.svid().not_after();
        let until_expiry = expires
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let event = tokio::select! {
            event = source.events.recv() => event,
            () = tokio::time::sleep(until_expiry), if !expiry_logged => {
                expiry_logged = true;
                log_expired(&source.current);
                continue;
            }
        };
        match event {
            Some(WorkloadEvent::Updated(material)) => {
                // `reload_from` logs a refusal and keeps the configuration in force.
                match acceptor
                    .reload_from_as(&builder_for(&source.base, &material), ReloadSource::Spiffe)
                {
                    Ok(()) => {
                        counters.applied.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(
                            spiffe_id = %material.svid().spiffe_id(),
                            bundles = material.bundles().len(),
                            "Workload API update applied"
                        );
                        source.current = material;
                        expiry_logged = false;
                    }
                    Err(_) => {
                        counters.refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Some(WorkloadEvent::Refused(why)) => {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %why, "Workload API update refused; the current material stays");
            }
            Some(WorkloadEvent::Disconnected(error)) => {
                counters.disconnects.fetch_add(1, Ordering::Relaxed);
                metrics::workload_api_disconnect();
                tracing::warn!(%error, until = ?source.current.svid().not_after(), "Workload API stream broken; the current material stays while the SVID is valid");
            }
            Some(WorkloadEvent::GaveUp(error)) => {
                tracing::error!(%error, "the Workload API refused the client for good; the current material stays until the SVID expires");
            }
            Some(_) => {}
            // The client stopped (after giving up): only the expiry is left to report.
            None => {
                if !expiry_logged {
                    tokio::time::sleep(until_expiry).await;
                    log_expired(&source.current);
                }
                return;
            }
        }
    }
}

fn log_expired(material: &X509Material) {
    tracing::error!(
        spiffe_id = %material.svid().spiffe_id(),
        "the server's X509-SVID has expired and the Workload API sent no replacement; new handshakes are refused"
    );
}
