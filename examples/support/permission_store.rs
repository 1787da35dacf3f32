//! An in-memory permission store with the shape of a database call, and the authorizer that
//! asks it: shared by the `permission_store` example and the tests.
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tower_mtls::{AuthContext, Authorizer, Decision};

/// Grants by identity (the principal's display form: SPIFFE ID or subject DN) and permission
/// (`"GET /reports"`).
#[derive(Clone, Default)]
pub struct PermissionStore {
    grants: Arc<HashSet<(String, String)>>,
    queries: Arc<AtomicUsize>,
}

impl PermissionStore {
    pub fn granting(grants: impl IntoIterator<Item = (String, String)>) -> Self {
        PermissionStore {
            grants: Arc::new(grants.into_iter().collect()),
            queries: Arc::default(),
        }
    }

    /// How many lookups reached the store.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    /// Owned keys in, an awaited answer out: what a database client looks like.
    pub async fn is_granted(&self, identity: String, permission: String) -> bool {
        self.queries.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2)).await; // the round trip
        self.grants.contains(&(identity, permission))
    }

    /// An authorizer asking this store about `"<METHOD> <path>"` for the caller.
    pub fn authorizer(&self) -> impl Authorizer<Future: Send + 'static> + Send + Sync + 'static {
        let store = self.clone();
        tower_mtls::authorize_fn(move |ctx: &AuthContext<'_>| {
            // Copy what the lookup needs before awaiting: the context borrows the request.
            let store = store.clone();
            let identity = ctx.principal().to_string();
            let permission = format!("{} {}", ctx.method(), ctx.path());
            async move {
                if store.is_granted(identity, permission).await {
                    Decision::allow("granted in the permission store")
                } else {
                    Decision::deny("no grant in the permission store")
                }
            }
        })
    }
}
