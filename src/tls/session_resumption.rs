//! [`Resumption`]: whether and how the server lets clients resume TLS sessions, and how many
//! TLS 1.3 tickets a full handshake issues.

use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::crypto::GetRandomFailed;
use rustls::server::{
    NoServerSessionStorage, ProducesTickets, ServerSessionMemoryCache, StoresServerSessions,
};
use rustls::ticketer::TicketRotator;

use crate::tls::config_error::ConfigError;
use crate::tls::provider::ticketer;

/// Sessions the default cache holds (rustls's default).
const DEFAULT_CACHE_SESSIONS: usize = 256;
/// The largest cache [`Resumption::cache`] accepts: rustls reserves the cache's table for every
/// session up front (on the order of 100 bytes a session), and a size beyond what memory holds
/// would make that allocation fail (a panic or an abort, not an error).
const MAX_CACHE_SESSIONS: usize = 1_000_000;
/// TLS 1.3 tickets a full handshake issues by default (rustls's default).
const DEFAULT_TLS13_TICKETS: usize = 2;
/// The longest ticket key rotation period that can be honoured: the providers' ticketers
/// (`rustls::crypto::{aws_lc_rs, ring}::Ticketer`) rotate their own key every 6 hours, and
/// rustls offers no public single-key ticketer to rotate at a longer period.
const MAX_ROTATION: Duration = Duration::from_secs(6 * 60 * 60);

/// Session resumption: how a client that connected before can skip the full handshake (no
/// certificate signatures, no key exchange by certificate), and what the server keeps for it.
/// Set it with [`MtlsConfigBuilder::resumption`](crate::tls::MtlsConfigBuilder::resumption).
///
/// | mode | nginx | server keeps | TLS 1.3 | TLS 1.2 |
/// | --- | --- | --- | --- | --- |
/// | [`off`](Self::off) | `ssl_session_cache off; ssl_session_tickets off;` | nothing | full handshakes | full handshakes |
/// | [`cache(n)`](Self::cache) (the default, `n` = 256) | `ssl_session_cache shared:SSL:…; ssl_session_tickets off;` | up to `n` sessions in memory | tickets naming a cached session | session IDs |
/// | [`tickets(period)`](Self::tickets) | `ssl_session_cache off; ssl_session_tickets on;` | two ticket keys | stateless tickets | RFC 5077 tickets |
///
/// **Resumed chains are always checked again**, whatever the mode: rustls restores a resumed
/// session's client certificate without verifying it, so the
/// [`MtlsAcceptor`](crate::MtlsAcceptor) re-verifies it against the trust configuration in
/// force (a certificate revoked by a reload does not resume; an expired one neither). Only the
/// cost and the place where session state lives differ between the modes.
///
/// The trade-offs:
///
/// - **CPU.** A resumption saves the signatures and the chain verification of a full
///   handshake, but every full handshake also *issues* resumption state: with TLS 1.3, by
///   default 2 tickets. Tickets a client never uses are pure cost — measured at about 2 % of
///   the server's CPU per full handshake for the 2 default tickets. For clients that connect
///   once, or hold one long-lived connection, [`off`](Self::off) or
///   [`tls13_tickets(0)`](Self::tls13_tickets) saves that.
/// - **Memory.** [`cache`](Self::cache) keeps each session in server memory: its secrets and
///   the client's certificate chain, so about the size of that chain (a few kilobytes); every
///   TLS 1.3 ticket is one cache entry. When full, the oldest entry makes room; a client whose
///   session was dropped just does a full handshake.
/// - **Several servers.** [`tickets`](Self::tickets) keeps no per-session state: the session
///   (with the client's chain, so tickets are about as large) is encrypted into the ticket,
///   under keys rustls generates **per process**. Behind a load
///   balancer, a client resumes only when it comes back to the same process (as with the
///   cache); keys are never shared or written anywhere, and a restart forgets them. Stateless
///   tickets protect past sessions less well than the cache (whoever obtains a ticket key can
///   decrypt the sessions of that key's tickets until the key is rotated away), hence the short
///   rotation period.
///
/// A [reload](crate::MtlsAcceptor::reload) keeps the session cache or the ticket keys when the
/// reloaded configuration has the same mode (same cache size, same rotation period), so
/// clients keep resuming across certificate and CRL reloads; a reload that changes the mode
/// starts with the new mode's empty cache or fresh keys (sessions of the old mode then do a
/// full handshake). The number of TLS 1.3 tickets is always the reloaded configuration's. After
/// a change from tickets to a cache, a TLS 1.2 client that keeps offering its old ticket may not
/// resume again (rustls's server allocates no session ID to a client that offered a ticket);
/// TLS 1.3 clients are not affected.
///
/// ```
/// use std::time::Duration;
/// use tower_mtls::MtlsConfig;
/// use tower_mtls::tls::Resumption;
///
/// // Today's behaviour, spelled out: 256 cached sessions, 2 TLS 1.3 tickets per handshake.
/// assert_eq!(Resumption::default(), Resumption::cache(256).tls13_tickets(2));
///
/// // Stateless tickets with keys rotated every hour, one TLS 1.3 ticket per handshake.
/// let builder = MtlsConfig::builder()
///     .server_cert_pem_file("server.pem")
///     .server_key_pem_file("server-key.pem")
///     .client_ca_pem_file("clients-ca.pem")
///     .resumption(Resumption::tickets(Duration::from_secs(3600)).tls13_tickets(1));
///
/// // Clients that connect once: no resumption state at all.
/// let once = MtlsConfig::builder().resumption(Resumption::off());
/// # let _ = (builder, once);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resumption {
    mode: Mode,
    tls13_tickets: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Off,
    Cache(usize),
    Tickets(Duration),
}

impl Resumption {
    /// No resumption: no session cache, no tickets, no TLS 1.3 tickets sent. Every connection
    /// does a full handshake. nginx: `ssl_session_cache off; ssl_session_tickets off;`.
    pub fn off() -> Self {
        Resumption {
            mode: Mode::Off,
            tls13_tickets: 0,
        }
    }

    /// A stateful session cache in server memory, of up to `sessions` sessions (the default
    /// is 256). TLS 1.2 clients resume by session ID; TLS 1.3 tickets are only a name for a
    /// cached session. nginx: `ssl_session_cache shared:SSL:…; ssl_session_tickets off;`.
    ///
    /// rustls reserves the table for `sessions` entries when the configuration is built (on the
    /// order of 100 bytes each); the sessions themselves take their memory as they come.
    ///
    /// `cache(0)` is refused by [`build`](crate::tls::MtlsConfigBuilder::build)
    /// ([`ConfigError::Resumption`]): use [`off`](Self::off) to turn resumption off. So is a
    /// cache of more than 1,000,000 sessions.
    pub fn cache(sessions: usize) -> Self {
        Resumption {
            mode: Mode::Cache(sessions),
            tls13_tickets: DEFAULT_TLS13_TICKETS,
        }
    }

    /// Stateless tickets: the session is encrypted into the ticket the client keeps (TLS 1.3
    /// tickets, and RFC 5077 tickets for TLS 1.2), the server keeps no session cache. A new
    /// ticket key is made every `rotate_every`, and tickets of the previous key are still
    /// accepted, so a ticket resumes for up to twice `rotate_every` (the lifetime the server
    /// announces). As in rustls, rotation happens at the first use of the keys once the period
    /// is over. nginx: `ssl_session_cache off; ssl_session_tickets on;` (with a rotated
    /// `ssl_session_ticket_key`).
    ///
    /// TLS 1.2 clients that do not support tickets do not resume in this mode.
    ///
    /// `rotate_every` must be whole seconds, from 1 second to 6 hours, else
    /// [`build`](crate::tls::MtlsConfigBuilder::build) fails with [`ConfigError::TicketKeys`]:
    /// the crypto provider's ticketer (rustls's `Ticketer`, the only one rustls offers without
    /// writing ticket crypto here) rotates its own key every 6 hours, so longer periods could
    /// not be honoured.
    pub fn tickets(rotate_every: Duration) -> Self {
        Resumption {
            mode: Mode::Tickets(rotate_every),
            tls13_tickets: DEFAULT_TLS13_TICKETS,
        }
    }

    /// How many TLS 1.3 tickets a full handshake issues (default 2, as in rustls). Clients
    /// use one ticket per resumption, so 2 lets a client open two connections at once and
    /// resume both; 0 turns TLS 1.3 resumption off while TLS 1.2 still resumes. Ignored for
    /// [`off`](Self::off), which sends none.
    pub fn tls13_tickets(mut self, n: usize) -> Self {
        if self.mode != Mode::Off {
            self.tls13_tickets = n;
        }
        self
    }

    /// Puts this setting into `config`: session storage, ticketer and TLS 1.3 ticket count.
    /// Fails for settings that cannot be honoured.
    pub(crate) fn apply(&self, config: &mut ServerConfig) -> Result<(), ConfigError> {
        let (storage, tickets): (Arc<dyn StoresServerSessions>, Arc<dyn ProducesTickets>) =
            match self.mode {
                Mode::Off => (Arc::new(NoServerSessionStorage {}), Arc::new(NoTickets)),
                Mode::Cache(0) => {
                    return Err(ConfigError::Resumption(
                        "a session cache of 0 sessions can store nothing; use \
                         Resumption::off() to turn session resumption off"
                            .into(),
                    ));
                }
                Mode::Cache(sessions) if sessions > MAX_CACHE_SESSIONS => {
                    return Err(ConfigError::Resumption(format!(
                        "a session cache of {sessions} sessions is over the limit of \
                         {MAX_CACHE_SESSIONS} (rustls reserves room for every session up front)"
                    )));
                }
                Mode::Cache(sessions) => {
                    (ServerSessionMemoryCache::new(sessions), Arc::new(NoTickets))
                }
                Mode::Tickets(period) => (
                    Arc::new(NoServerSessionStorage {}),
                    rotating_ticketer(period)?,
                ),
            };
        config.session_storage = storage;
        config.ticketer = tickets;
        config.send_tls13_tickets = self.tls13_tickets;
        Ok(())
    }

    /// Whether `other` keeps its sessions the same way (same mode, same size or period), so
    /// that a reload from one to the other can keep the session cache or ticket keys.
    pub(crate) fn same_storage(&self, other: &Resumption) -> bool {
        self.mode == other.mode
    }
}

impl Default for Resumption {
    /// `cache(256)` with 2 TLS 1.3 tickets per full handshake: rustls's defaults.
    fn default() -> Self {
        Resumption::cache(DEFAULT_CACHE_SESSIONS).tls13_tickets(DEFAULT_TLS13_TICKETS)
    }
}

/// Switches resumption off in `config`, whatever it was: for rustls configurations built
/// elsewhere, whose resumed sessions could not be verified again.
pub(crate) fn disable(config: &mut ServerConfig) {
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.ticketer = Arc::new(NoTickets);
    config.send_tls13_tickets = 0;
}

/// rustls's [`TicketRotator`] over the crypto provider's ticketer, making a new key every
/// `period`.
///
/// The provider's `Ticketer::new()` is itself a rotator (6 hours) around one fresh key, and the
/// only public way to get that key construction. Each rotation here makes a new one, which
/// starts with a new key; with `period` at most 6 hours the inner rotator never rotates while
/// it is in use, save after the server was idle past a rotation (where rustls's own rotator
/// also still holds the key from before the pause), so keys change every `period`.
fn rotating_ticketer(period: Duration) -> Result<Arc<dyn ProducesTickets>, ConfigError> {
    if period.is_zero() {
        return Err(ConfigError::TicketKeys(
            "the ticket key rotation period must be at least 1 second, not 0".into(),
        ));
    }
    if period > MAX_ROTATION {
        return Err(ConfigError::TicketKeys(format!(
            "a ticket key rotation period of {period:?} is over 6 hours, the longest the \
             crypto provider's ticketer keeps a key: it cannot be honoured"
        )));
    }
    if period.subsec_nanos() != 0 {
        return Err(ConfigError::TicketKeys(format!(
            "the ticket key rotation period must be whole seconds, not {period:?}"
        )));
    }
    let secs = u32::try_from(period.as_secs())
        .map_err(|_| ConfigError::TicketKeys(format!("rotation period {period:?} out of range")))?;
    let rotator = TicketRotator::new(secs, provider_keys)
        .map_err(|e| ConfigError::TicketKeys(format!("cannot make a ticket key: {e}")))?;
    Ok(Arc::new(rotator))
}

/// One new ticket key, for [`TicketRotator`].
fn provider_keys() -> Result<Box<dyn ProducesTickets>, GetRandomFailed> {
    match ticketer() {
        Ok(inner) => Ok(Box::new(ProviderTicketer(inner))),
        Err(error) => {
            tracing::error!(%error, "cannot make a TLS session ticket key");
            Err(GetRandomFailed)
        }
    }
}

/// The provider's ticketer, boxed for [`TicketRotator`].
#[derive(Debug)]
struct ProviderTicketer(Arc<dyn ProducesTickets>);

impl ProducesTickets for ProviderTicketer {
    fn enabled(&self) -> bool {
        self.0.enabled()
    }
    fn lifetime(&self) -> u32 {
        self.0.lifetime()
    }
    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.0.encrypt(plain)
    }
    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.0.decrypt(cipher)
    }
}

/// A ticketer that never issues tickets (rustls's own is not public).
#[derive(Debug)]
struct NoTickets;

impl ProducesTickets for NoTickets {
    fn enabled(&self) -> bool {
        false
    }
    fn lifetime(&self) -> u32 {
        0
    }
    fn encrypt(&self, _plain: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn decrypt(&self, _cipher: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls13_tickets_are_ignored_when_off() {
        assert_eq!(Resumption::off().tls13_tickets(5), Resumption::off());
        assert_ne!(
            Resumption::cache(10).tls13_tickets(5),
            Resumption::cache(10)
        );
    }

    #[test]
    fn the_rotator_rotates_to_a_new_key() {
        let rotator = rotating_ticketer(Duration::from_secs(1)).unwrap();
        assert!(rotator.enabled());
        assert_eq!(
            rotator.lifetime(),
            2,
            "previous key accepted for one more period"
        );
        let ticket = rotator.encrypt(b"session").unwrap();
        assert_eq!(rotator.decrypt(&ticket).as_deref(), Some(&b"session"[..]));
        // Two periods on, the key of `ticket` has been rotated out.
        // Rotation happens once a whole period is over, at second granularity.
        std::thread::sleep(Duration::from_millis(2100));
        let newer = rotator.encrypt(b"newer").unwrap();
        assert_eq!(
            rotator.decrypt(&ticket).as_deref(),
            Some(&b"session"[..]),
            "the previous key still decrypts"
        );
        std::thread::sleep(Duration::from_millis(2100));
        let _ = rotator.encrypt(b"roll");
        assert_eq!(rotator.decrypt(&ticket), None, "two rotations on");
        assert_eq!(rotator.decrypt(&newer).as_deref(), Some(&b"newer"[..]));
    }
}
