//! Resumed sessions: which trust configuration verified a session's chain, recorded in the
//! session itself, so that a resumption under that same configuration only needs the
//! time-dependent part of verification done again.
//!
//! rustls restores a resumed session's client chain without running the verifier, so the
//! acceptor re-checks it. Full re-verification (signatures, path building, CRLs) costs as much
//! as the rest of the resumed handshake. But when the configuration in force is the one that
//! already verified that exact chain, the verdict can only have changed with time: a
//! certificate's validity window. (CRL `nextUpdate` is time-dependent too; configurations that
//! enforce it always take the full path, see [`ResumedCheck`].)
//!
//! Every handshake stores a [`Tag`] in the resumption data of the sessions it issues, with
//! `ServerConnection::set_resumption_data`. rustls keeps that data *inside* the server-side
//! session value and hands it back through `received_resumption_data` only after it found
//! and accepted the session:
//!
//! - rustls-0.23.46 `src/server/tls13.rs`, `attempt_tls13_ticket_decryption`: the session value
//!   comes either from our `ticketer.decrypt` (an AEAD under the server's key) or from our
//!   `session_storage` (server memory). The client only ever holds an opaque identity.
//! - same file, around line 320-372: the session is used (and `received_resumption_data` set
//!   from its `application_data`) only after the PSK binder verified, i.e. the client proved
//!   it holds that session's resumption secret.
//! - `src/server/server_conn.rs`, `received_resumption_data`: "Integrity is guaranteed by
//!   rustls."
//!
//! So a client cannot forge or alter a tag. rustls 0.23 sets `received_resumption_data` for
//! TLS 1.3 only: TLS 1.2 resumptions always take the full path.
//!
//! The subtle part is *when* a tag is written. It has to be set before the handshake (the
//! `accept_with` closure), so it cannot depend on how the handshake goes; and a **resumed**
//! TLS 1.3 handshake issues new tickets, carrying the new tag, and tokio-rustls flushes them
//! to the client *before* the acceptor has re-checked the resumed chain. Were the tag just
//! "generation G", a revoked chain resuming from a session of an older generation would fail
//! its re-check and still leave the client holding fresh tickets that say "verified under G".
//! Hence the issuer id in every tag and the [`Registry`]: a tag vouches for its chain only once
//! the connection that wrote it has finished successfully. Until then the issuer is
//! *unresolved*; a connection that fails (or is dropped) leaves its issuer *distrusted*. Both
//! checks happen under one lock, in that order, so there is no window in which a leaked
//! ticket counts as verified.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use x509_parser::asn1_rs::{Any, Class, FromDer, Tag as Asn1Tag};
use x509_parser::certificate::Validity;
use x509_parser::time::ASN1Time;

/// Distrusted issuers remembered individually; beyond that the epoch moves on instead, which
/// distrusts every tag issued so far (they re-verify once) and keeps memory bounded.
const MAX_DISTRUSTED: usize = 1024;

const TAG_FORMAT: u8 = 1;
pub(crate) const TAG_LEN: usize = 1 + 4 * 8;

/// How a resumed session's chain is re-checked when the configuration that verified it is
/// still in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResumedCheck {
    /// Only the validity windows of the chain's certificates need checking, and only until
    /// `until` (the first `notAfter` among intermediates the configuration itself supplies,
    /// which path building may have used); after that, the full path.
    ValidityOnly { until: Option<SystemTime> },
    /// The verdict may change with time in other ways (CRL expiry enforced, or a verifier we
    /// did not build): always verify again.
    Full,
}

/// What the resumption data of a session says: written by the acceptor `instance`, under
/// trust `generation` and distrust `epoch`, by the connection `issuer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tag {
    instance: u64,
    generation: u64,
    epoch: u64,
    issuer: u64,
}

impl Tag {
    pub(crate) fn encode(&self) -> [u8; TAG_LEN] {
        let mut out = [0u8; TAG_LEN];
        out[0] = TAG_FORMAT;
        for (i, value) in [self.instance, self.generation, self.epoch, self.issuer]
            .into_iter()
            .enumerate()
        {
            out[1 + i * 8..9 + i * 8].copy_from_slice(&value.to_be_bytes());
        }
        out
    }

    /// `None` for anything but a tag of the current format (e.g. sessions without data).
    pub(crate) fn decode(data: &[u8]) -> Option<Tag> {
        let data: &[u8; TAG_LEN] = data.try_into().ok()?;
        if data[0] != TAG_FORMAT {
            return None;
        }
        let word = |i: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&data[1 + i * 8..9 + i * 8]);
            u64::from_be_bytes(bytes)
        };
        Some(Tag {
            instance: word(0),
            generation: word(1),
            epoch: word(2),
            issuer: word(3),
        })
    }
}

/// Which issuers' tags can be believed. Shared by every clone of an acceptor.
pub(crate) struct Registry {
    // Random per acceptor: tags from another acceptor (or process) never match.
    instance: u64,
    next_issuer: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    epoch: u64,
    unresolved: HashSet<u64>,
    distrusted: HashSet<u64>,
}

impl State {
    fn distrust(&mut self, issuer: u64) {
        if self.distrusted.len() >= MAX_DISTRUSTED {
            // Every tag issued so far carries an older epoch from now on.
            self.epoch += 1;
            self.distrusted.clear();
        } else {
            self.distrusted.insert(issuer);
        }
    }
}

impl Registry {
    pub(crate) fn new() -> Self {
        let mut random = [0u8; 8];
        // Without randomness, 0 still works: issuer ids, generations and epochs are checked
        // too; the instance only guards against tags from elsewhere.
        let _ = crate::tls::provider::crypto_provider()
            .secure_random
            .fill(&mut random);
        Registry {
            instance: u64::from_ne_bytes(random),
            next_issuer: AtomicU64::new(0),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // No code under this lock can panic halfway; a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new handshake under `generation`: its tag counts as unresolved until
    /// [`Issuing::vouch`] is called.
    pub(crate) fn begin(&self, generation: u64) -> Issuing<'_> {
        let issuer = self.next_issuer.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state();
        state.unresolved.insert(issuer);
        let tag = Tag {
            instance: self.instance,
            generation,
            epoch: state.epoch,
            issuer,
        };
        drop(state);
        Issuing {
            registry: self,
            tag,
            vouched: false,
        }
    }

    /// Whether `data` (a resumed session's resumption data) proves that the configuration of
    /// `generation` verified the session's chain in a connection that then succeeded.
    pub(crate) fn vouches(&self, data: Option<&[u8]>, generation: u64) -> bool {
        let Some(tag) = data.and_then(Tag::decode) else {
            return false;
        };
        if tag.instance != self.instance || tag.generation != generation {
            return false;
        }
        let state = self.state();
        tag.epoch == state.epoch
            && !state.unresolved.contains(&tag.issuer)
            && !state.distrusted.contains(&tag.issuer)
    }

    #[cfg(test)]
    fn epoch(&self) -> u64 {
        self.state().epoch
    }
}

/// A handshake in progress, as the registry sees it. Dropped without [`vouch`](Self::vouch)
/// (failed, refused, timed out, cancelled), its issuer is distrusted.
pub(crate) struct Issuing<'a> {
    registry: &'a Registry,
    tag: Tag,
    vouched: bool,
}

impl Issuing<'_> {
    pub(crate) fn tag(&self) -> Tag {
        self.tag
    }

    /// The connection succeeded: its chain was verified (by rustls, or re-checked by the
    /// acceptor) under the tag's generation, so its tickets may be believed.
    pub(crate) fn vouch(mut self) {
        self.vouched = true;
        self.registry.state().unresolved.remove(&self.tag.issuer);
    }
}

impl Drop for Issuing<'_> {
    fn drop(&mut self) {
        if self.vouched {
            return;
        }
        let mut state = self.registry.state();
        // Distrusted before it stops being unresolved, under the same lock.
        state.distrust(self.tag.issuer);
        state.unresolved.remove(&self.tag.issuer);
    }
}

/// Whether every certificate of `chain` is inside its validity window at `now` (what webpki
/// checks with the time; signatures and the rest are not looked at). Anything unparsable
/// counts as not valid, which sends the caller to full verification.
pub(crate) fn chain_valid_at(chain: &[CertificateDer<'_>], now: SystemTime) -> bool {
    let Ok(since_epoch) = now.duration_since(UNIX_EPOCH) else {
        return false;
    };
    let Some(now) = i64::try_from(since_epoch.as_secs())
        .ok()
        .and_then(|secs| ASN1Time::from_timestamp(secs).ok())
    else {
        return false;
    };
    chain
        .iter()
        .all(|cert| validity_of(cert.as_ref()).is_some_and(|v| v.is_valid_at(now)))
}

/// A certificate's validity window, read without parsing its names and extensions: the chain
/// of a session that vouches for itself was verified in full when the session was made, and
/// only its dates can have changed since. Walks the TBS with asn1-rs up to `validity`
/// (RFC 5280: `[0] version` if present, serial, signature algorithm, issuer, validity). A
/// certificate that does not read that way gives `None`, and the caller verifies the chain in
/// full instead.
fn validity_of(der: &[u8]) -> Option<Validity> {
    let sequence = |input| match Any::from_der(input) {
        Ok((rest, any)) if any.tag() == Asn1Tag::Sequence => Some((rest, any.data)),
        _ => None,
    };
    let skip = |input| Any::from_der(input).ok().map(|(rest, _)| rest);
    let (_, certificate) = sequence(der)?;
    let (_, tbs) = sequence(certificate)?;
    let (after_first, first) = Any::from_der(tbs).ok()?;
    let version_given = first.class() == Class::ContextSpecific && first.tag() == Asn1Tag(0);
    let after_serial = if version_given {
        skip(after_first)?
    } else {
        after_first
    };
    let after_issuer = skip(skip(after_serial)?)?;
    let (_, validity) = Validity::from_der(after_issuer).ok()?;
    Some(validity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{CertSpec, principal};
    use x509_parser::prelude::X509Certificate;

    #[test]
    fn validity_is_read_as_x509_parser_reads_it() {
        let not_after = time::OffsetDateTime::now_utc() + time::Duration::days(30);
        // The default window (1975 to 4096) and a two-day one ending in 30 days.
        for spec in [
            CertSpec::default(),
            CertSpec {
                not_after: Some(not_after),
                ous: vec!["a", "b"],
                dns: vec!["x.example"],
                ..CertSpec::default()
            },
        ] {
            let p = principal(spec);
            let der = p.leaf_der();
            let (_, full) = X509Certificate::from_der(der.as_ref()).unwrap();
            let quick = validity_of(der.as_ref()).unwrap();
            assert_eq!(quick.not_before, full.validity().not_before);
            assert_eq!(quick.not_after, full.validity().not_after);
            let at = |secs: i64| UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
            let (from, until) = (
                full.validity().not_before.timestamp(),
                full.validity().not_after.timestamp(),
            );
            let chain = std::slice::from_ref(&der);
            assert!(chain_valid_at(chain, at(from + (until - from) / 2)));
            assert!(!chain_valid_at(chain, at(from - 1)));
            assert!(!chain_valid_at(chain, at(until + 1)));
        }
    }

    #[test]
    fn unreadable_certificates_are_not_valid() {
        assert!(validity_of(b"").is_none());
        assert!(validity_of(&[0x30, 0x00]).is_none());
        assert!(validity_of(&[0x04, 0x02, 0x30, 0x00]).is_none());
        let p = principal(CertSpec::default());
        let der = p.leaf_der();
        for cut in [1, 4, 40, der.len() / 2] {
            let truncated = CertificateDer::from(&der.as_ref()[..der.len() - cut]);
            assert!(
                !chain_valid_at(&[truncated], SystemTime::now()),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn tags_round_trip_and_garbage_is_refused() {
        let tag = Tag {
            instance: 7,
            generation: 3,
            epoch: 1,
            issuer: u64::MAX,
        };
        assert_eq!(Tag::decode(&tag.encode()), Some(tag));
        assert_eq!(Tag::decode(b""), None);
        assert_eq!(Tag::decode(&tag.encode()[1..]), None);
        let mut other_format = tag.encode();
        other_format[0] = 2;
        assert_eq!(Tag::decode(&other_format), None);
    }

    #[test]
    fn a_tag_vouches_only_after_its_connection_succeeded() {
        let registry = Registry::new();
        let issuing = registry.begin(4);
        let data = issuing.tag().encode();
        assert!(!registry.vouches(Some(&data), 4), "unresolved");
        issuing.vouch();
        assert!(registry.vouches(Some(&data), 4));
        assert!(!registry.vouches(Some(&data), 5), "other generation");
        assert!(!registry.vouches(None, 4));

        let failed = registry.begin(4);
        let data = failed.tag().encode();
        drop(failed);
        assert!(!registry.vouches(Some(&data), 4), "distrusted");
    }

    #[test]
    fn another_acceptors_tags_are_not_believed() {
        let (a, b) = (Registry::new(), Registry::new());
        let issuing = a.begin(0);
        let data = issuing.tag().encode();
        issuing.vouch();
        assert!(a.vouches(Some(&data), 0));
        assert!(!b.vouches(Some(&data), 0) || a.instance == b.instance);
    }

    #[test]
    fn distrust_is_bounded_by_moving_the_epoch() {
        let registry = Registry::new();
        let good = registry.begin(0);
        let data = good.tag().encode();
        good.vouch();
        for _ in 0..=MAX_DISTRUSTED {
            drop(registry.begin(0));
        }
        assert_eq!(registry.epoch(), 1);
        assert!(registry.state().distrusted.len() < MAX_DISTRUSTED);
        assert!(
            !registry.vouches(Some(&data), 0),
            "older epochs re-verify once"
        );
        let fresh = registry.begin(0);
        let data = fresh.tag().encode();
        fresh.vouch();
        assert!(registry.vouches(Some(&data), 0));
    }
}
