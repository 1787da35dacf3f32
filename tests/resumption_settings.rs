//! The [`Resumption`] settings over real TLS: off, a session cache, stateless tickets, the
//! number of TLS 1.3 tickets; in every mode a chain revoked by a reload does not resume; what
//! a reload does to the cache and the ticket keys; settings that cannot be honoured.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::resumed::Served;
use common::{Setup, client, expect_rejected, json, start_whoami};
use rustls::ClientConfig;
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Tls12ClientSessionValue, Tls12Resumption,
    Tls13ClientSessionValue,
};
use rustls::pki_types::ServerName;
use tower_mtls::tls::{HandshakeFailure, Resumption};
use tower_mtls::{ConfigError, MtlsAcceptor};

const TLS13: &rustls::SupportedProtocolVersion = &rustls::version::TLS13;
const TLS12: &rustls::SupportedProtocolVersion = &rustls::version::TLS12;
const BOTH: [&rustls::SupportedProtocolVersion; 2] = [TLS13, TLS12];

/// A client session store that counts what the server gave it.
#[derive(Debug)]
struct CountingStore {
    inner: ClientSessionMemoryCache,
    tls13_tickets: AtomicUsize,
    tls12_sessions: AtomicUsize,
}

impl CountingStore {
    fn new() -> Arc<Self> {
        Arc::new(CountingStore {
            inner: ClientSessionMemoryCache::new(64),
            tls13_tickets: AtomicUsize::new(0),
            tls12_sessions: AtomicUsize::new(0),
        })
    }

    fn tls13_tickets(&self) -> usize {
        self.tls13_tickets.load(Ordering::SeqCst)
    }

    fn tls12_sessions(&self) -> usize {
        self.tls12_sessions.load(Ordering::SeqCst)
    }
}

impl ClientSessionStore for CountingStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: rustls::NamedGroup) {
        self.inner.set_kx_hint(server_name, group);
    }
    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(server_name)
    }
    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.tls12_sessions.fetch_add(1, Ordering::SeqCst);
        self.inner.set_tls12_session(server_name, value);
    }
    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.inner.tls12_session(server_name)
    }
    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.inner.remove_tls12_session(server_name);
    }
    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.tls13_tickets.fetch_add(1, Ordering::SeqCst);
        self.inner.insert_tls13_ticket(server_name, value);
    }
    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(server_name)
    }
}

/// A server whose configuration has `resumption`.
async fn start(resumption: Resumption) -> Served {
    Served::start(|setup| setup.builder().resumption(resumption)).await
}

/// A new client process for Alice offering only `version`, with its own counting store,
/// resuming TLS 1.2 with `tls12`.
fn counting_with(
    served: &Served,
    version: &'static rustls::SupportedProtocolVersion,
    tls12: Tls12Resumption,
) -> (Arc<ClientConfig>, Arc<CountingStore>) {
    let store = CountingStore::new();
    let mut config = (*served.alice(version)).clone();
    config.resumption = rustls::client::Resumption::store(store.clone()).tls12_resumption(tls12);
    (Arc::new(config), store)
}

/// [`counting_with`] rustls's default for TLS 1.2: session IDs or tickets.
fn counting(
    served: &Served,
    version: &'static rustls::SupportedProtocolVersion,
) -> (Arc<ClientConfig>, Arc<CountingStore>) {
    counting_with(served, version, Tls12Resumption::SessionIdOrTickets)
}

/// A reload with the same PKI and `resumption`; the CRL revokes `revoked`.
fn reload(served: &Served, resumption: Resumption, revoked: &[&common::pki::Identity]) {
    let builder = served
        .setup
        .builder()
        .crl_pem(served.setup.ca.crl(revoked))
        .resumption(resumption);
    served.acceptor.reload_from(&builder).unwrap();
}

#[tokio::test]
async fn off_never_resumes_and_issues_no_session_state() {
    let served = start(Resumption::off()).await;
    for version in BOTH {
        let (config, store) = counting(&served, version);
        for attempt in 1..=3 {
            assert_eq!(
                served.resumed(&config).await,
                Some(false),
                "{version:?} attempt {attempt}"
            );
        }
        assert_eq!(
            store.tls13_tickets(),
            0,
            "{version:?}: TLS 1.3 tickets sent"
        );
        assert_eq!(
            store.tls12_sessions(),
            0,
            "{version:?}: a session ID or ticket"
        );
    }
    assert_eq!(served.resumed_checks(), 0);
}

#[tokio::test]
async fn off_ignores_a_tls13_ticket_count() {
    assert_eq!(Resumption::off().tls13_tickets(4), Resumption::off());
    let served = start(Resumption::off().tls13_tickets(4)).await;
    let (config, store) = counting(&served, TLS13);
    assert_eq!(served.resumed(&config).await, Some(false));
    assert_eq!(served.resumed(&config).await, Some(false));
    assert_eq!(store.tls13_tickets(), 0);
}

#[tokio::test]
async fn the_default_is_a_cache_with_two_tls13_tickets() {
    assert_eq!(Resumption::default(), Resumption::cache(256));
    assert_eq!(
        Resumption::default(),
        Resumption::cache(256).tls13_tickets(2)
    );
    let served = Served::start(Setup::builder).await;
    let (config, store) = counting(&served, TLS13);
    assert_eq!(served.resumed(&config).await, Some(false));
    assert_eq!(store.tls13_tickets(), 2);
    assert_eq!(served.resumed(&config).await, Some(true));
    // A TLS 1.2 client that resumes by session ID only: the server keeps a cache.
    let (config, store) = counting_with(&served, TLS12, Tls12Resumption::SessionIdOnly);
    assert_eq!(served.resumed(&config).await, Some(false));
    assert_eq!(store.tls12_sessions(), 1);
    assert_eq!(served.resumed(&config).await, Some(true));
}

#[tokio::test]
async fn a_cache_resumes_tls13_and_tls12_sessions() {
    let served = start(Resumption::cache(16)).await;
    for version in BOTH {
        let (config, _) = counting(&served, version);
        assert_eq!(served.resumed(&config).await, Some(false), "{version:?}");
        for n in 1..=2 {
            assert_eq!(served.resumed(&config).await, Some(true), "{version:?} {n}");
        }
    }
    // Session IDs, which need the server's cache.
    let (config, _) = counting_with(&served, TLS12, Tls12Resumption::SessionIdOnly);
    assert_eq!(served.resumed(&config).await, Some(false));
    assert_eq!(served.resumed(&config).await, Some(true));
    assert_eq!(served.resumed_checks(), 5);
}

#[tokio::test]
async fn a_cache_of_one_session_keeps_only_the_newest() {
    // Each TLS 1.3 ticket is one cache entry: with room for one, only the newest resumes.
    let served = start(Resumption::cache(1).tls13_tickets(1)).await;
    let (first, _) = counting(&served, TLS13);
    let (second, _) = counting(&served, TLS13);
    assert_eq!(served.resumed(&first).await, Some(false));
    assert_eq!(served.resumed(&second).await, Some(false));
    assert_eq!(served.resumed(&first).await, Some(false), "evicted");
    // `first` got a new ticket from that full handshake, evicting `second`'s.
    assert_eq!(served.resumed(&first).await, Some(true));
    assert_eq!(
        served.resumed(&second).await,
        Some(false),
        "evicted by `first`"
    );
}

/// Alice resumes, her certificate is revoked by a reload keeping `resumption`, and none of her
/// tickets or sessions gets her in again.
async fn revoked_never_resumes(resumption: Resumption) {
    for version in BOTH {
        let served = start(resumption.clone()).await;
        let (config, _) = counting(&served, version);
        assert_eq!(served.resumed(&config).await, Some(false), "{version:?}");
        assert_eq!(
            served.resumed(&config).await,
            Some(true),
            "{version:?} control"
        );
        reload(&served, resumption.clone(), &[&served.alice]);
        for attempt in 1..=4 {
            assert_eq!(
                served.resumed(&config).await,
                None,
                "{version:?} attempt {attempt}: a revoked certificate got in"
            );
        }
        expect_rejected(&served.acceptor, HandshakeFailure::ResumptionRevoked).await;
    }
}

#[tokio::test]
async fn a_cache_refuses_a_chain_revoked_by_a_reload() {
    revoked_never_resumes(Resumption::cache(16)).await;
}

#[tokio::test]
async fn tickets_refuse_a_chain_revoked_by_a_reload() {
    revoked_never_resumes(Resumption::tickets(Duration::from_secs(3600))).await;
}

#[tokio::test]
async fn tickets_resume_tls13_and_tls12_sessions_without_a_cache() {
    let served = start(Resumption::tickets(Duration::from_secs(600))).await;
    for version in BOTH {
        let (config, store) = counting(&served, version);
        assert_eq!(served.resumed(&config).await, Some(false), "{version:?}");
        for n in 1..=2 {
            assert_eq!(served.resumed(&config).await, Some(true), "{version:?} {n}");
        }
        if version == TLS13 {
            assert!(store.tls13_tickets() >= 2, "{}", store.tls13_tickets());
        }
    }
    // Stateless: no server cache, so a client resuming by session ID only never resumes.
    let (config, store) = counting_with(&served, TLS12, Tls12Resumption::SessionIdOnly);
    assert_eq!(served.resumed(&config).await, Some(false));
    assert_eq!(served.resumed(&config).await, Some(false));
    assert_eq!(
        store.tls12_sessions(),
        0,
        "the server allocated a session ID"
    );
}

#[tokio::test]
async fn tickets_stay_valid_across_a_reload() {
    let resumption = Resumption::tickets(Duration::from_secs(600));
    let served = start(resumption.clone()).await;
    let bob = served.setup.ca.client("bob", &[]);
    for version in BOTH {
        let (config, _) = counting(&served, version);
        assert_eq!(served.resumed(&config).await, Some(false), "{version:?}");
        // Bob's revocation does not concern Alice; the ticket keys carry over.
        reload(&served, resumption.clone(), &[&bob]);
        assert_eq!(served.resumed(&config).await, Some(true), "{version:?}");
    }
    assert_eq!(served.acceptor.generation(), 2);
}

#[tokio::test]
async fn no_tls13_tickets_with_a_cache_still_resumes_tls12() {
    let served = start(Resumption::cache(16).tls13_tickets(0)).await;
    let (config, store) = counting(&served, TLS13);
    assert_eq!(served.resumed(&config).await, Some(false));
    assert_eq!(served.resumed(&config).await, Some(false));
    assert_eq!(store.tls13_tickets(), 0);
    let (config, store) = counting(&served, TLS12);
    assert_eq!(served.resumed(&config).await, Some(false));
    assert_eq!(served.resumed(&config).await, Some(true));
    // The client stores the session after the full handshake and again after the resumed one.
    assert_eq!(store.tls12_sessions(), 2);
}

#[tokio::test]
async fn a_full_handshake_issues_the_tls13_tickets_asked_for() {
    for base in [
        Resumption::cache(64),
        Resumption::tickets(Duration::from_secs(600)),
    ] {
        for n in [1, 3] {
            let served = start(base.clone().tls13_tickets(n)).await;
            let (config, store) = counting(&served, TLS13);
            assert_eq!(served.resumed(&config).await, Some(false));
            assert_eq!(store.tls13_tickets(), n, "{base:?}");
            // Up to `n` connections can resume on those tickets (each also brings new ones).
            assert_eq!(served.resumed(&config).await, Some(true), "{base:?} {n}");
        }
    }
}

#[tokio::test]
async fn a_reload_with_the_same_mode_keeps_the_cache_and_takes_the_new_ticket_count() {
    let served = start(Resumption::cache(16)).await;
    let (config, _) = counting(&served, TLS13);
    assert_eq!(served.resumed(&config).await, Some(false));
    reload(&served, Resumption::cache(16).tls13_tickets(1), &[]);
    assert_eq!(
        served.resumed(&config).await,
        Some(true),
        "the cache carried over"
    );
    let (config, store) = counting(&served, TLS13);
    assert_eq!(served.resumed(&config).await, Some(false));
    assert_eq!(store.tls13_tickets(), 1, "the reloaded ticket count");
}

#[tokio::test]
async fn a_reload_that_changes_the_mode_starts_afresh() {
    let served = start(Resumption::cache(16)).await;
    let (tls13, _) = counting(&served, TLS13);
    let (tls12, _) = counting(&served, TLS12);
    for config in [&tls13, &tls12] {
        assert_eq!(served.resumed(config).await, Some(false));
    }

    // Cache → tickets: the cached sessions are gone, stateless tickets from now on.
    reload(&served, Resumption::tickets(Duration::from_secs(600)), &[]);
    for config in [&tls13, &tls12] {
        assert_eq!(served.resumed(config).await, Some(false), "old session");
        assert_eq!(served.resumed(config).await, Some(true), "new ticket");
    }
    let (ids_only, _) = counting_with(&served, TLS12, Tls12Resumption::SessionIdOnly);
    assert_eq!(served.resumed(&ids_only).await, Some(false));
    assert_eq!(served.resumed(&ids_only).await, Some(false), "no cache");

    // Another rotation period: fresh keys, the old tickets no longer decrypt.
    reload(&served, Resumption::tickets(Duration::from_secs(1200)), &[]);
    for config in [&tls13, &tls12] {
        assert_eq!(served.resumed(config).await, Some(false), "old keys");
        assert_eq!(served.resumed(config).await, Some(true), "new keys");
    }

    // Tickets → off: nothing resumes, nothing is issued.
    reload(&served, Resumption::off(), &[]);
    let (fresh, store) = counting(&served, TLS13);
    for config in [&tls13, &tls12, &fresh, &fresh] {
        assert_eq!(served.resumed(config).await, Some(false));
    }
    assert_eq!(store.tls13_tickets(), 0);

    // Off → cache: resumption is back.
    reload(&served, Resumption::cache(16), &[]);
    assert_eq!(served.resumed(&tls13).await, Some(false));
    assert_eq!(served.resumed(&tls13).await, Some(true));
    // A rustls TLS 1.2 client still holding a ticket gets no session ID from a rustls server
    // (it offered a ticket), so only a client without one resumes from the cache.
    assert_eq!(served.resumed(&tls12).await, Some(false));
    let (tls12, _) = counting(&served, TLS12);
    assert_eq!(served.resumed(&tls12).await, Some(false));
    assert_eq!(served.resumed(&tls12).await, Some(true));
}

#[tokio::test]
async fn a_reload_onto_an_acceptor_from_a_rustls_config_brings_resumption() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let rustls_config = setup.config(tower_mtls::tls::ClientAuth::Required);
    let acceptor = MtlsAcceptor::from_server_config(rustls_config.server_config().clone());
    let addr = start_whoami(acceptor.clone()).await;
    let config = setup.client_versions(Some(&alice), &[TLS13]);
    let resumed = |config: Arc<ClientConfig>| async move {
        let reply = client::get_once(addr, config, "/").await.ok()?;
        json(&reply)["resumed"].as_bool()
    };
    assert_eq!(resumed(config.clone()).await, Some(false));
    assert_eq!(resumed(config.clone()).await, Some(false), "forced off");
    acceptor.reload_from(&setup.builder()).unwrap();
    assert_eq!(resumed(config.clone()).await, Some(false));
    assert_eq!(
        resumed(config.clone()).await,
        Some(true),
        "the reloaded setting"
    );
}

fn build_error(resumption: Resumption) -> ConfigError {
    let setup = Setup::new();
    match setup.builder().resumption(resumption).build() {
        Ok(_) => panic!("built"),
        Err(e) => e,
    }
}

#[test]
fn settings_that_cannot_be_honoured_fail_the_build() {
    let e = build_error(Resumption::cache(0));
    assert!(matches!(e, ConfigError::Resumption(_)), "{e:?}");
    assert!(e.to_string().contains("Resumption::off()"), "{e}");

    for huge in [1_000_001, usize::MAX] {
        let e = build_error(Resumption::cache(huge));
        assert!(matches!(e, ConfigError::Resumption(_)), "{e:?}");
        assert!(e.to_string().contains("over the limit"), "{e}");
    }

    let e = build_error(Resumption::tickets(Duration::ZERO));
    assert!(matches!(e, ConfigError::TicketKeys(_)), "{e:?}");
    assert!(e.to_string().contains("at least 1 second"), "{e}");

    let e = build_error(Resumption::tickets(Duration::from_millis(1500)));
    assert!(matches!(e, ConfigError::TicketKeys(_)), "{e:?}");
    assert!(e.to_string().contains("whole seconds"), "{e}");

    for huge in [
        Duration::from_secs(6 * 3600 + 1),
        Duration::from_secs(u64::from(u32::MAX) + 1),
        Duration::MAX,
    ] {
        let e = build_error(Resumption::tickets(huge));
        assert!(matches!(e, ConfigError::TicketKeys(_)), "{e:?}");
        assert!(e.to_string().contains("over 6 hours"), "{e}");
    }
}

#[test]
fn the_limits_themselves_are_accepted() {
    let setup = Setup::new();
    for ok in [
        Resumption::cache(1),
        Resumption::cache(1_000_000),
        Resumption::tickets(Duration::from_secs(1)),
        Resumption::tickets(Duration::from_secs(6 * 3600)),
        Resumption::off(),
    ] {
        setup
            .builder()
            .resumption(ok.clone())
            .build()
            .unwrap_or_else(|e| panic!("{ok:?}: {e}"));
    }
}
