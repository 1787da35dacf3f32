//! Watching certificate, key, CA and CRL files and reloading when they change.

use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use crate::metrics::ReloadSource;
use crate::tls::acceptor::MtlsAcceptor;
use crate::tls::config::MtlsConfigBuilder;

/// A running file watcher; dropping it stops the watching.
///
/// cert-manager, spiffe-helper and Vault agent rotate credentials by rewriting files (often
/// through a symlink swap). [`MtlsAcceptor::watch_files`] polls the files a
/// [`MtlsConfigBuilder`] reads and, when their contents change, rebuilds the configuration and
/// reloads it; a half-written or inconsistent set is refused and retried at the next change.
///
/// ```no_run
/// # async fn run() -> Result<(), tower_mtls::ConfigError> {
/// use std::time::Duration;
/// use tower_mtls::{MtlsAcceptor, MtlsConfig};
///
/// let builder = MtlsConfig::builder()
///     .server_cert_pem_file("/var/run/tls/tls.crt")
///     .server_key_pem_file("/var/run/tls/tls.key")
///     .client_ca_pem_file("/var/run/tls/ca.crt");
/// let acceptor = MtlsAcceptor::new(builder.build()?);
/// let _watcher = acceptor.watch_files(builder, Duration::from_secs(10));
/// // ... serve with `acceptor`; dropping `_watcher` stops watching.
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ReloadWatcher {
    task: JoinHandle<()>,
}

impl Drop for ReloadWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MtlsAcceptor {
    /// Polls every `interval` the files `builder` reads; when any file's contents change,
    /// [`reload_from`](MtlsAcceptor::reload_from)s the builder. Must be called inside a Tokio
    /// runtime.
    pub fn watch_files(&self, builder: MtlsConfigBuilder, interval: Duration) -> ReloadWatcher {
        let acceptor = self.clone();
        let files = builder.files();
        let task = tokio::spawn(async move {
            let mut seen = fingerprint(&files);
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await; // the first tick is immediate
            loop {
                ticker.tick().await;
                let now = fingerprint(&files);
                if now != seen {
                    seen = now;
                    tracing::info!(files = files.len(), "TLS files changed; reloading");
                    // A refused reload is logged by `reload_from`; the next change retries.
                    let _ = acceptor.reload_from_as(&builder, ReloadSource::Files);
                }
            }
        });
        ReloadWatcher { task }
    }
}

/// A digest of every file's contents (a missing file counts as its own state).
fn fingerprint(files: &[PathBuf]) -> Vec<Option<[u8; 32]>> {
    files
        .iter()
        .map(|path| std::fs::read(path).ok().map(|b| Sha256::digest(&b).into()))
        .collect()
}
