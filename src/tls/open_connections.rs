//! The open connections of an acceptor, re-checked after every reload: a connection whose
//! certificate no longer verifies (revoked by a new CRL, its CA or trust domain removed) is
//! asked to close at once and cut when its grace period is over, rather than only getting 401
//! on its next request (which an idle or streaming connection may never send).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::watch;

use crate::audit;
use crate::identity::connection::{ConnectionInfo, WeakConnectionInfo};
use crate::tls::trust::TrustState;

/// The registry: one weak reference per connection, so it never keeps one alive; references
/// to connections that are gone are dropped in batches, which keeps registration O(1)
/// amortized and the registry within twice the number of open connections (which the
/// listener's caps bound).
pub(crate) struct OpenConnections {
    list: Mutex<Registry>,
    sweeping: AtomicBool,
    grace_ms: AtomicU64,
}

struct Registry {
    connections: Vec<WeakConnectionInfo>,
    // Prune when the list reaches this length.
    prune_at: usize,
}

const MIN_PRUNE_AT: usize = 64;
// Connections re-verified between two yields of the sweeping task.
const SWEEP_BATCH: usize = 32;

impl OpenConnections {
    pub(crate) fn new(grace: Duration) -> Self {
        OpenConnections {
            list: Mutex::new(Registry {
                connections: Vec::new(),
                prune_at: MIN_PRUNE_AT,
            }),
            sweeping: AtomicBool::new(false),
            grace_ms: AtomicU64::new(millis(grace)),
        }
    }

    pub(crate) fn set_grace(&self, grace: Duration) {
        self.grace_ms.store(millis(grace), Ordering::Relaxed);
    }

    fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms.load(Ordering::Relaxed))
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        // Plain data; a panic elsewhere cannot leave it half-changed.
        self.list.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a new connection, and starts re-checking after reloads of `trust` on first use
    /// (must be called inside a Tokio runtime).
    pub(crate) fn register(self: &Arc<Self>, info: &ConnectionInfo, trust: &TrustState) {
        {
            let mut registry = self.registry();
            if registry.connections.len() >= registry.prune_at {
                registry.connections.retain(|weak| !weak.is_gone());
                registry.prune_at = (registry.connections.len() * 2).max(MIN_PRUNE_AT);
            }
            registry.connections.push(info.downgrade());
        }
        if !self.sweeping.swap(true, Ordering::AcqRel) {
            tokio::spawn(sweep_after_reloads(Arc::downgrade(self), trust.reloads()));
        }
    }

    /// The connections still open.
    fn snapshot(&self) -> Vec<ConnectionInfo> {
        let mut registry = self.registry();
        registry.connections.retain(|weak| !weak.is_gone());
        registry.prune_at = (registry.connections.len() * 2).max(MIN_PRUNE_AT);
        registry
            .connections
            .iter()
            .filter_map(WeakConnectionInfo::upgrade)
            .collect()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// After every reload, re-verifies every open connection against the new snapshot; those that
/// fail are asked to close now and cut after the grace period. Ends with the acceptor.
async fn sweep_after_reloads(open: Weak<OpenConnections>, mut reloads: watch::Receiver<u64>) {
    while reloads.changed().await.is_ok() {
        let generation = *reloads.borrow_and_update();
        let Some(open) = open.upgrade() else {
            return;
        };
        let connections = open.snapshot();
        let grace = open.grace();
        drop(open);
        let mut revoked = Vec::new();
        for (i, connection) in connections.into_iter().enumerate() {
            // `revalidate` re-verifies once per connection per reload and logs a failure.
            if connection.revalidate().is_err() {
                connection.request_close();
                revoked.push(connection.downgrade());
            }
            if i % SWEEP_BATCH == SWEEP_BATCH - 1 {
                tokio::task::yield_now().await;
            }
        }
        if revoked.is_empty() {
            continue;
        }
        audit::revoked_connections(generation, revoked.len(), grace);
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            for connection in revoked.iter().filter_map(WeakConnectionInfo::upgrade) {
                connection.cut();
            }
        });
    }
}
