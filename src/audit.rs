//! The tracing events of refusals: one event per rejected request, per failed handshake and
//! per connection the listener refused, with the peer address and a reason, and nothing else
//! a client sent that could be key material.
//!
//! Two things keep a hostile client from flooding the logs through them:
//!
//! - **Rate limits per cause.** Each kind of event (403, 401, each handshake failure cause,
//!   each shed cause) may log [`BUDGET`] events per [`WINDOW`]; the rest are counted, and a
//!   `"similar events suppressed"` summary with their number follows when the window ends.
//!   Counters ([`HandshakeStats`](crate::tls::HandshakeStats)) still count every one.
//! - **Escaped, truncated fields.** Whatever a peer chose (paths, methods, certificate names,
//!   reasons and errors that may quote them) is cut at [`MAX_FIELD_CHARS`] characters, and
//!   control characters, Unicode line and paragraph separators, bidirectional controls and
//!   invisible format characters are written as `\u{..}` escapes, whatever the subscriber's
//!   format: no forged log lines, no text that reads differently than it is.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::forwarded::refusal::ForwardedRefusal;
use crate::identity::principal::Principal;
use crate::metrics::{self, ReloadSource};
use crate::reject::Rejection;
use crate::tls::config_error::ConfigError;
use crate::tls::handshake_error::{AcceptError, HandshakeFailure, ShedCause};

/// Events of one kind logged per window; the rest are summarized.
const BUDGET: u32 = 10;
/// The rate-limit window.
const WINDOW: Duration = Duration::from_secs(1);
/// Characters of one peer-controlled field kept in a log event.
const MAX_FIELD_CHARS: usize = 256;

/// The one event of a request without a verified identity (`reason` says why; `principal` is
/// the connection's when it stopped verifying).
pub(crate) fn unauthenticated(
    peer: Option<SocketAddr>,
    principal: Option<&Principal>,
    reason: &str,
    method: &http::Method,
    path: &str,
) {
    request_rejected(
        peer,
        principal,
        Rejection::Unauthenticated,
        reason,
        method,
        path,
    );
}

/// The one event of a request the authorizer denied.
pub(crate) fn forbidden(
    peer: SocketAddr,
    principal: &Principal,
    reason: &str,
    method: &http::Method,
    path: &str,
) {
    request_rejected(
        Some(peer),
        Some(principal),
        Rejection::Forbidden,
        reason,
        method,
        path,
    );
}

/// The one event of a request refused for its spelling (a path without a canonical form, a
/// non-standard spelling of a standard method), before the authorizer ran.
pub(crate) fn bad_request(
    peer: SocketAddr,
    principal: &Principal,
    reason: &str,
    method: &http::Method,
    path: &str,
) {
    request_rejected(
        Some(peer),
        Some(principal),
        Rejection::BadRequest,
        reason,
        method,
        path,
    );
}

fn request_rejected(
    peer: Option<SocketAddr>,
    principal: Option<&Principal>,
    rejection: Rejection,
    reason: &str,
    method: &http::Method,
    path: &str,
) {
    let kind = match rejection {
        Rejection::Unauthenticated => Kind::Unauthenticated,
        Rejection::Forbidden => Kind::Forbidden,
        Rejection::BadRequest => Kind::BadRequest,
    };
    if !LIMITER.admit(kind, Instant::now()) {
        return;
    }
    let principal = principal.map(|p| p.to_string());
    tracing::warn!(
        event = "request_rejected",
        peer = %OptionalPeer(peer),
        principal = principal.as_deref().map(|p| tracing::field::display(Untrusted(p))),
        status = rejection.status().as_u16(),
        cause = rejection.label(),
        reason = ?Untrusted(reason),
        method = %Untrusted(method.as_str()),
        path = ?Untrusted(path),
        "request rejected"
    );
}

/// The one event of a request on a trusted-proxy connection refused for its forwarded
/// certificate (401): missing, malformed, or not verifying; `proxy` is the connection's own
/// principal. `cause` is [`ForwardedRefusal::label`].
pub(crate) fn forwarded_rejected(
    peer: Option<SocketAddr>,
    proxy: &Principal,
    refusal: &ForwardedRefusal,
    method: &http::Method,
    path: &str,
) {
    metrics::forwarded_failure(refusal.label());
    if !LIMITER.admit(Kind::ForwardedRejected, Instant::now()) {
        return;
    }
    let error = refusal.to_string();
    tracing::warn!(
        event = "forwarded_identity_rejected",
        peer = %OptionalPeer(peer),
        proxy = %Escaped(proxy),
        status = Rejection::Unauthenticated.status().as_u16(),
        cause = refusal.label(),
        error = %Untrusted(&error),
        method = %Untrusted(method.as_str()),
        path = ?Untrusted(path),
        "request from a trusted proxy rejected: no valid forwarded client certificate"
    );
}

/// Forwarded-certificate headers removed from a request of a connection that is not a
/// trusted proxy (`removed`: how many field lines).
pub(crate) fn forwarded_headers_removed(
    peer: SocketAddr,
    principal: Option<&Principal>,
    removed: usize,
    method: &http::Method,
    path: &str,
) {
    metrics::forwarded_headers_removed(removed);
    if !LIMITER.admit(Kind::ForwardedHeadersRemoved, Instant::now()) {
        return;
    }
    tracing::warn!(
        event = "forwarded_headers_removed",
        peer = %peer,
        principal = principal.map(|p| tracing::field::display(Escaped(p))),
        removed,
        method = %Untrusted(method.as_str()),
        path = ?Untrusted(path),
        "forwarded client certificate headers removed: the connection is not a trusted proxy"
    );
}

/// The one event of a failed handshake.
pub(crate) fn handshake_failed(peer: SocketAddr, error: &AcceptError) {
    let cause = error.cause();
    if !LIMITER.admit(Kind::Handshake(cause), Instant::now()) {
        return;
    }
    let error = error.to_string();
    tracing::warn!(
        event = "handshake_failed",
        peer = %peer,
        cause = cause.label(),
        error = %Untrusted(&error),
        "TLS handshake failed: {cause}"
    );
}

/// The one event of a TCP connection the listener closed before any handshake.
pub(crate) fn connection_refused(peer: SocketAddr, cause: ShedCause) {
    if !LIMITER.admit(Kind::Refused(cause), Instant::now()) {
        return;
    }
    tracing::warn!(
        event = "connection_refused",
        peer = %peer,
        cause = cause.label(),
        "connection refused: {cause}"
    );
}

/// `accept()` itself failed (out of file descriptors, typically).
pub(crate) fn accept_failed(error: &std::io::Error) {
    if !LIMITER.admit(Kind::AcceptFailed, Instant::now()) {
        return;
    }
    tracing::warn!(event = "accept_failed", %error, "TCP accept failed");
}

/// A new configuration is in force.
pub(crate) fn reload_applied(source: ReloadSource, generation: u64) {
    metrics::reload(source, true);
    tracing::info!(
        event = "reload_applied",
        source = source.label(),
        generation,
        "TLS configuration reloaded"
    );
}

/// A new configuration was refused; the one in force stays.
pub(crate) fn reload_refused(source: ReloadSource, error: &ConfigError) {
    metrics::reload(source, false);
    tracing::error!(
        event = "reload_refused",
        source = source.label(),
        %error,
        "TLS configuration reload refused; keeping the current one"
    );
}

/// An open connection's certificate no longer verifies after a reload.
pub(crate) fn identity_revoked(
    peer: SocketAddr,
    principal: &Principal,
    generation: u64,
    error: &rustls::Error,
) {
    let error = error.to_string();
    tracing::warn!(
        event = "identity_revoked",
        peer = %peer,
        principal = %Escaped(principal),
        generation,
        error = %Untrusted(&error),
        "open connection's certificate no longer verifies after reload"
    );
}

/// Open connections that no longer verify after a reload are being closed.
pub(crate) fn revoked_connections(generation: u64, connections: usize, grace: Duration) {
    metrics::revoked_connections(connections);
    tracing::warn!(
        event = "connections_revoked",
        generation,
        connections,
        grace_ms = grace.as_millis() as u64,
        "closing open connections whose certificate no longer verifies"
    );
}

/// A certificate or CRL of the configuration expires soon, or has expired (`what`: `server
/// certificate`, `client CA`, `intermediate`, `CRL`).
pub(crate) fn expiry(what: &str, origin: &dyn fmt::Display, name: &str, until: SystemTime) {
    let now = SystemTime::now();
    let not_after = humantime_utc(until);
    match until.duration_since(now) {
        Err(_) => tracing::error!(
            event = "expired",
            what,
            file = %origin,
            name = %Untrusted(name),
            not_after,
            "{what} has expired"
        ),
        Ok(left) => tracing::warn!(
            event = "expires_soon",
            what,
            file = %origin,
            name = %Untrusted(name),
            not_after,
            days_left = left.as_secs() / 86_400,
            "{what} expires soon"
        ),
    }
}

/// `t` as RFC 3339 UTC (seconds), without a date-time crate.
fn humantime_utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

struct OptionalPeer(Option<SocketAddr>);

impl fmt::Display for OptionalPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

/// Text a peer chose, for a log field: truncated, with every character that could forge a
/// line or change how the line reads escaped. `Debug` quotes it (and escapes quotes and
/// backslashes), `Display` does not.
pub(crate) struct Untrusted<'a>(pub(crate) &'a str);

impl Untrusted<'_> {
    fn write(&self, f: &mut fmt::Formatter<'_>, quoted: bool) -> fmt::Result {
        if quoted {
            f.write_char('"')?;
        }
        let mut chars = self.0.char_indices();
        for (_, c) in chars.by_ref().take(MAX_FIELD_CHARS) {
            if needs_escape(c) || (quoted && matches!(c, '"' | '\\')) {
                write!(f, "\\u{{{:x}}}", u32::from(c))?;
            } else {
                f.write_char(c)?;
            }
        }
        let cut = chars.next().map(|(at, _)| self.0.len() - at);
        if let Some(rest) = cut {
            f.write_char('…')?;
            if quoted {
                f.write_char('"')?;
            }
            write!(f, " (+{rest} bytes)")
        } else if quoted {
            f.write_char('"')
        } else {
            Ok(())
        }
    }
}

/// A value whose text a peer chose (a certificate's names), written as [`Untrusted`] text
/// when, and only when, it is formatted.
pub(crate) struct Escaped<'a, T>(pub(crate) &'a T);

impl<T: fmt::Display> fmt::Display for Escaped<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Untrusted(&self.0.to_string()).write(f, false)
    }
}

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, false)
    }
}

impl fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, true)
    }
}

/// Characters that end or forge a log line, or make it display differently than it reads:
/// C0/C1 controls (newlines, escape sequences, NEL), Unicode line and paragraph separators,
/// bidirectional embeddings, overrides, isolates and marks, and zero-width or invisible
/// format characters.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00ad}'
                | '\u{061c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
        )
}

/// What an event is about: each kind has its own budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Unauthenticated,
    Forbidden,
    BadRequest,
    AcceptFailed,
    ForwardedRejected,
    ForwardedHeadersRemoved,
    Handshake(HandshakeFailure),
    Refused(ShedCause),
}

/// The kinds before the per-cause ones.
const PLAIN_KINDS: usize = 6;
const KINDS: usize = PLAIN_KINDS + HandshakeFailure::ALL.len() + ShedCause::ALL.len();

impl Kind {
    fn index(self) -> usize {
        match self {
            Kind::Unauthenticated => 0,
            Kind::Forbidden => 1,
            Kind::BadRequest => 2,
            Kind::AcceptFailed => 3,
            Kind::ForwardedRejected => 4,
            Kind::ForwardedHeadersRemoved => 5,
            Kind::Handshake(cause) => PLAIN_KINDS + cause.index(),
            Kind::Refused(cause) => PLAIN_KINDS + HandshakeFailure::ALL.len() + cause.index(),
        }
    }

    fn all() -> impl Iterator<Item = Kind> {
        [
            Kind::Unauthenticated,
            Kind::Forbidden,
            Kind::BadRequest,
            Kind::AcceptFailed,
            Kind::ForwardedRejected,
            Kind::ForwardedHeadersRemoved,
        ]
        .into_iter()
        .chain(HandshakeFailure::ALL.into_iter().map(Kind::Handshake))
        .chain(ShedCause::ALL.into_iter().map(Kind::Refused))
    }

    fn summarize(self, suppressed: u64) {
        let (suppressed_event, cause) = match self {
            Kind::Unauthenticated => ("request_rejected", "unauthenticated"),
            Kind::Forbidden => ("request_rejected", "forbidden"),
            Kind::BadRequest => ("request_rejected", "bad_request"),
            Kind::AcceptFailed => ("accept_failed", ""),
            Kind::ForwardedRejected => ("forwarded_identity_rejected", ""),
            Kind::ForwardedHeadersRemoved => ("forwarded_headers_removed", ""),
            Kind::Handshake(cause) => ("handshake_failed", cause.label()),
            Kind::Refused(cause) => ("connection_refused", cause.label()),
        };
        metrics::log_events_suppressed(suppressed_event, suppressed);
        tracing::warn!(
            event = "events_suppressed",
            suppressed_event,
            cause,
            suppressed,
            window_ms = WINDOW.as_millis() as u64,
            "{suppressed} similar events suppressed"
        );
    }
}

static LIMITER: Limiter = Limiter::new(WINDOW, BUDGET);

/// Fixed-window budgets, one per [`Kind`]: lock-free, and bounded (no key a peer chooses).
struct Limiter {
    start: OnceLock<Instant>,
    window: Duration,
    budget: u32,
    kinds: [Budget; KINDS],
    // A task that writes the summaries at the end of the window is on its way.
    flush_scheduled: AtomicBool,
}

struct Budget {
    window: AtomicU64,
    used: AtomicU32,
    suppressed: AtomicU64,
}

impl Budget {
    const fn new() -> Self {
        Budget {
            window: AtomicU64::new(0),
            used: AtomicU32::new(0),
            suppressed: AtomicU64::new(0),
        }
    }
}

impl Limiter {
    const fn new(window: Duration, budget: u32) -> Self {
        Limiter {
            start: OnceLock::new(),
            window,
            budget,
            kinds: [const { Budget::new() }; KINDS],
            flush_scheduled: AtomicBool::new(false),
        }
    }

    fn window_at(&self, now: Instant) -> u64 {
        let start = *self.start.get_or_init(|| now);
        let elapsed = now.saturating_duration_since(start).as_nanos();
        (elapsed / self.window.as_nanos().max(1)) as u64
    }

    /// Whether an event of `kind` may be logged now; if not it is counted for the summary.
    fn admit(&'static self, kind: Kind, now: Instant) -> bool {
        let admitted = self.take(kind, now);
        if !admitted {
            self.schedule_flush(now);
        }
        admitted
    }

    fn take(&self, kind: Kind, now: Instant) -> bool {
        let budget = &self.kinds[kind.index()];
        self.roll(kind, self.window_at(now));
        if budget.used.fetch_add(1, Ordering::Relaxed) < self.budget {
            true
        } else {
            budget.suppressed.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Starts window `current` for `kind` if it has not started yet, summarizing what the
    /// previous one suppressed.
    fn roll(&self, kind: Kind, current: u64) {
        let budget = &self.kinds[kind.index()];
        let seen = budget.window.load(Ordering::Relaxed);
        if seen < current
            && budget
                .window
                .compare_exchange(seen, current, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            budget.used.store(0, Ordering::Relaxed);
            let suppressed = budget.suppressed.swap(0, Ordering::Relaxed);
            if suppressed > 0 {
                kind.summarize(suppressed);
            }
        }
    }

    /// Writes the summaries when the window ends even if no further event comes: a task on
    /// the current runtime, one at a time.
    fn schedule_flush(&'static self, now: Instant) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // the next event of the kind writes the summary
        };
        if self.flush_scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let next = self.window_at(now) + 1;
        let start = *self.start.get_or_init(|| now);
        let wake = start
            + self
                .window
                .saturating_mul(u32::try_from(next).unwrap_or(u32::MAX));
        runtime.spawn(async move {
            // Cleared however the task ends, including with its runtime.
            let _clear = ClearOnDrop(&self.flush_scheduled);
            tokio::time::sleep_until((wake + Duration::from_millis(5)).into()).await;
            let current = self.window_at(Instant::now());
            for kind in Kind::all() {
                self.roll(kind, current);
            }
        });
    }
}

struct ClearOnDrop(&'static AtomicBool);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(text: &str) -> (String, String) {
        (
            format!("{:?}", Untrusted(text)),
            Untrusted(text).to_string(),
        )
    }

    #[test]
    fn controls_separators_and_bidi_are_escaped() {
        let (quoted, plain) = shown(
            "/a\nb\r\x1b[31m\u{85}\u{2028}\u{2029}\u{202e}gpj.exe\u{2066}\u{200b}\u{feff}\"\\",
        );
        assert_eq!(
            quoted,
            r#""/a\u{a}b\u{d}\u{1b}[31m\u{85}\u{2028}\u{2029}\u{202e}gpj.exe\u{2066}\u{200b}\u{feff}\u{22}\u{5c}""#
        );
        assert_eq!(
            plain,
            r#"/a\u{a}b\u{d}\u{1b}[31m\u{85}\u{2028}\u{2029}\u{202e}gpj.exe\u{2066}\u{200b}\u{feff}"\"#
        );
        // Ordinary non-ASCII text stays readable.
        assert_eq!(shown("/café/日本").1, "/café/日本");
    }

    #[test]
    fn long_fields_are_cut_and_say_by_how_much() {
        let long = format!("/{}", "é".repeat(10_000));
        let (quoted, plain) = shown(&long);
        assert_eq!(
            plain.chars().count(),
            MAX_FIELD_CHARS + 1 + " (+19490 bytes)".len()
        );
        assert!(plain.ends_with("é… (+19490 bytes)"), "{plain}");
        assert!(quoted.ends_with("é…\" (+19490 bytes)"), "{quoted}");
        let exact = "x".repeat(MAX_FIELD_CHARS);
        assert_eq!(shown(&exact).1, exact);
    }

    #[test]
    fn each_kind_has_its_own_budget_per_window() {
        static LIMITER: Limiter = Limiter::new(Duration::from_millis(100), 3);
        let t0 = Instant::now();
        let flood = Kind::Handshake(HandshakeFailure::Protocol);
        let admitted = (0..10).filter(|_| LIMITER.take(flood, t0)).count();
        assert_eq!(admitted, 3);
        assert!(
            LIMITER.take(Kind::Forbidden, t0),
            "another kind is not held back"
        );
        assert_eq!(
            LIMITER.kinds[flood.index()]
                .suppressed
                .load(Ordering::Relaxed),
            7
        );
        // The next window starts afresh and takes the count for its summary.
        let t1 = t0 + Duration::from_millis(150);
        assert!(LIMITER.take(flood, t1));
        assert_eq!(
            LIMITER.kinds[flood.index()]
                .suppressed
                .load(Ordering::Relaxed),
            0
        );
    }

    #[test]
    fn kinds_are_numbered_densely() {
        let indices: Vec<usize> = Kind::all().map(Kind::index).collect();
        assert_eq!(indices, (0..KINDS).collect::<Vec<_>>());
    }
}
