//! A whoami server for the resumption tests, and Alice, a client of its CA.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use tower_mtls::MtlsAcceptor;
use tower_mtls::tls::MtlsConfigBuilder;

use super::{Setup, client, json, start_whoami};

/// A whoami server on an acceptor built by `builder`, and Alice.
pub struct Served {
    pub setup: Setup,
    pub alice: super::pki::Identity,
    pub acceptor: MtlsAcceptor,
    pub addr: std::net::SocketAddr,
}

impl Served {
    pub async fn start(builder: impl FnOnce(&Setup) -> MtlsConfigBuilder) -> Served {
        super::init_tracing();
        let setup = Setup::new();
        let alice = setup.ca.client("alice", &[]);
        let acceptor = MtlsAcceptor::new(builder(&setup).build().unwrap());
        let addr = start_whoami(acceptor.clone()).await;
        Served {
            setup,
            alice,
            acceptor,
            addr,
        }
    }

    /// A new client process for Alice offering only `version` (its own session cache).
    pub fn alice(&self, version: &'static rustls::SupportedProtocolVersion) -> Arc<ClientConfig> {
        self.setup.client_versions(Some(&self.alice), &[version])
    }

    /// One request on a new connection: whether it was resumed, `None` if it failed.
    pub async fn resumed(&self, config: &Arc<ClientConfig>) -> Option<bool> {
        let reply = client::get_once(self.addr, config.clone(), "/")
            .await
            .ok()?;
        json(&reply)["resumed"].as_bool()
    }

    /// Resumed sessions checked so far (validity only or in full).
    pub fn resumed_checks(&self) -> u64 {
        let stats = self.acceptor.stats();
        stats.resumed_validity_only + stats.resumed_reverified
    }

    /// (validity only, in full), once `n` resumed checks have been counted in all (the server
    /// counts a moment after the client has its answer only when the handshake failed; allow
    /// for it).
    pub async fn checks(&self, n: u64) -> (u64, u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stats = self.acceptor.stats();
            if stats.resumed_validity_only + stats.resumed_reverified >= n {
                return (stats.resumed_validity_only, stats.resumed_reverified);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {n} resumption checks: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
