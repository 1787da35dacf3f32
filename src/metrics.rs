//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`).
//!
//! Install any `metrics` recorder (for Prometheus, `metrics-exporter-prometheus`) and the
//! crate reports what it does under the names below. Labels come from fixed sets — causes,
//! decisions, and the names of your own policy rules — never from certificate contents,
//! paths or addresses, so the number of series stays bounded. Without the feature, or
//! without a recorder, nothing is recorded and the calls cost nothing (without a recorder
//! the facade checks one atomic pointer).
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `tower_mtls_handshakes_total` | counter | `result` = `ok` \| `failed`, `kind` = `full` \| `resumed` | TLS handshakes that ended |
//! | `tower_mtls_handshake_failures_total` | counter | `cause` ([`HandshakeFailure::label`](crate::tls::HandshakeFailure::label)) | failed handshakes by cause |
//! | `tower_mtls_connections_shed_total` | counter | `cause` ([`ShedCause::label`](crate::tls::ShedCause::label)) | connections a listener closed to stay within its limits |
//! | `tower_mtls_requests_total` | counter | `decision` = `allowed` \| `unauthenticated` \| `denied` \| `bad_request` | requests that reached an `MtlsAuthLayer` |
//! | `tower_mtls_authz_decisions_total` | counter | `rule` (the policy rule's name, `default` when none matched), `decision` = `allow` \| `deny` | decisions of a `RuleSet` |
//! | `tower_mtls_shadow_disagreements_total` | counter | `rule` (the shadow decision's rule, `default` when none) | shadow decisions that differ from the enforced ones |
//! | `tower_mtls_reloads_total` | counter | `source` = `files` \| `manual` \| `spiffe`, `result` = `applied` \| `refused` | configuration reloads |
//! | `tower_mtls_revoked_connections_total` | counter | | open connections closed because their certificate no longer verified after a reload |
//! | `tower_mtls_workload_api_disconnects_total` | counter | | Workload API streams that broke or could not be opened |
//! | `tower_mtls_forwarded_headers_removed_total` | counter | | forwarded-certificate header lines removed from requests of connections that are not trusted proxies |
//! | `tower_mtls_forwarded_failures_total` | counter | `cause` ([`ForwardedRefusal::label`](crate::forwarded::ForwardedRefusal::label)) | requests of trusted proxies refused for their forwarded certificate |
//! | `tower_mtls_forwarded_verifications_total` | counter | `result` = `ok` \| `failed` | forwarded chains verified (once per distinct certificate per proxy connection and trust generation: the rest come from the cache) |
//! | `tower_mtls_log_events_suppressed_total` | counter | `event` (the audit event's name) | log events left out by the rate limits |
//! | `tower_mtls_open_connections` | gauge | | connections open in the listeners |
//! | `tower_mtls_anonymous_connections` | gauge | | of those, without a client certificate |
//! | `tower_mtls_handshakes_in_flight` | gauge | | handshakes running in the listeners |
//! | `tower_mtls_server_cert_expiry_timestamp_seconds` | gauge | | `notAfter` of the serving certificate (Unix time) |
//! | `tower_mtls_client_cert_remaining_seconds` | histogram | | at each full handshake, how long the client certificate has left |
//!
//! Counters and gauges are process-wide: several acceptors add to the same series.

use std::time::{Duration, SystemTime};

#[cfg(feature = "metrics")]
use std::sync::Arc;

use crate::tls::handshake_error::{HandshakeFailure, ShedCause};

/// Where a reload came from, for `tower_mtls_reloads_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReloadSource {
    /// The file watcher.
    Files,
    /// `reload` / `reload_from`.
    Manual,
    /// The SPIFFE Workload API.
    #[cfg_attr(not(feature = "spiffe"), allow(dead_code))]
    Spiffe,
}

impl ReloadSource {
    pub(crate) fn label(self) -> &'static str {
        match self {
            ReloadSource::Files => "files",
            ReloadSource::Manual => "manual",
            ReloadSource::Spiffe => "spiffe",
        }
    }
}

/// What the layer did with a request, for `tower_mtls_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestOutcome {
    Allowed,
    Unauthenticated,
    Denied,
    BadRequest,
}

/// A handshake that produced a connection; `remaining` is how long the client certificate has
/// left (full handshakes with a certificate only).
pub(crate) fn handshake_ok(resumed: bool, remaining: Option<Duration>) {
    #[cfg(feature = "metrics")]
    {
        metrics::counter!("tower_mtls_handshakes_total", "result" => "ok", "kind" => kind(resumed))
            .increment(1);
        if let Some(remaining) = remaining {
            metrics::histogram!("tower_mtls_client_cert_remaining_seconds")
                .record(remaining.as_secs_f64());
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (resumed, remaining);
}

/// A handshake that failed with `cause`; `resumed` when it was a resumption refused on its
/// re-check.
pub(crate) fn handshake_failed(cause: HandshakeFailure, resumed: bool) {
    #[cfg(feature = "metrics")]
    {
        metrics::counter!("tower_mtls_handshakes_total", "result" => "failed", "kind" => kind(resumed))
            .increment(1);
        metrics::counter!("tower_mtls_handshake_failures_total", "cause" => cause.label())
            .increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (cause, resumed);
}

#[cfg(feature = "metrics")]
fn kind(resumed: bool) -> &'static str {
    if resumed { "resumed" } else { "full" }
}

/// A connection a listener closed to stay within its limits.
pub(crate) fn shed(cause: ShedCause) {
    #[cfg(feature = "metrics")]
    metrics::counter!("tower_mtls_connections_shed_total", "cause" => cause.label()).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = cause;
}

/// A request through an `MtlsAuthLayer`.
pub(crate) fn request(outcome: RequestOutcome) {
    #[cfg(feature = "metrics")]
    {
        let decision = match outcome {
            RequestOutcome::Allowed => "allowed",
            RequestOutcome::Unauthenticated => "unauthenticated",
            RequestOutcome::Denied => "denied",
            RequestOutcome::BadRequest => "bad_request",
        };
        metrics::counter!("tower_mtls_requests_total", "decision" => decision).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = outcome;
}

/// A rule set's decision: `rule` decided it (`None`: no rule matched).
#[cfg(feature = "metrics")]
pub(crate) fn authz_decision(rule: Option<&Arc<str>>, allowed: bool) {
    let decision = if allowed { "allow" } else { "deny" };
    let rule: metrics::SharedString = match rule {
        Some(name) => name.clone().into(),
        None => "default".into(),
    };
    metrics::counter!("tower_mtls_authz_decisions_total", "rule" => rule, "decision" => decision)
        .increment(1);
}

/// A rule set's decision (nothing is recorded without the `metrics` feature).
#[cfg(not(feature = "metrics"))]
pub(crate) fn authz_decision(rule: Option<&std::sync::Arc<str>>, allowed: bool) {
    let _ = (rule, allowed);
}

/// A shadow decision that differs from the enforced one; `rule` decided the shadow's.
pub(crate) fn shadow_disagreement(rule: Option<&str>) {
    #[cfg(feature = "metrics")]
    {
        let rule: metrics::SharedString = rule.unwrap_or("default").to_owned().into();
        metrics::counter!("tower_mtls_shadow_disagreements_total", "rule" => rule).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = rule;
}

/// A reload from `source`, applied or refused.
pub(crate) fn reload(source: ReloadSource, applied: bool) {
    #[cfg(feature = "metrics")]
    {
        let result = if applied { "applied" } else { "refused" };
        metrics::counter!("tower_mtls_reloads_total", "source" => source.label(), "result" => result)
            .increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (source, applied);
}

/// Open connections closed after a reload because their certificate no longer verified.
pub(crate) fn revoked_connections(count: usize) {
    #[cfg(feature = "metrics")]
    metrics::counter!("tower_mtls_revoked_connections_total").increment(count as u64);
    #[cfg(not(feature = "metrics"))]
    let _ = count;
}

/// A Workload API stream broke or could not be opened.
#[cfg_attr(not(feature = "spiffe"), allow(dead_code))]
pub(crate) fn workload_api_disconnect() {
    #[cfg(feature = "metrics")]
    metrics::counter!("tower_mtls_workload_api_disconnects_total").increment(1);
}

/// Forwarded-certificate header lines removed from a request of a connection that is not a
/// trusted proxy.
pub(crate) fn forwarded_headers_removed(lines: usize) {
    #[cfg(feature = "metrics")]
    metrics::counter!("tower_mtls_forwarded_headers_removed_total").increment(lines as u64);
    #[cfg(not(feature = "metrics"))]
    let _ = lines;
}

/// A trusted proxy's request refused for its forwarded certificate (`cause`: the refusal's
/// label).
pub(crate) fn forwarded_failure(cause: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("tower_mtls_forwarded_failures_total", "cause" => cause).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = cause;
}

/// A forwarded chain verified (not from the cache).
pub(crate) fn forwarded_verification(ok: bool) {
    #[cfg(feature = "metrics")]
    {
        let result = if ok { "ok" } else { "failed" };
        metrics::counter!("tower_mtls_forwarded_verifications_total", "result" => result)
            .increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = ok;
}

/// Log events of `event` left out by the rate limits.
pub(crate) fn log_events_suppressed(event: &'static str, count: u64) {
    #[cfg(feature = "metrics")]
    metrics::counter!("tower_mtls_log_events_suppressed_total", "event" => event).increment(count);
    #[cfg(not(feature = "metrics"))]
    let _ = (event, count);
}

/// The serving certificate's `notAfter`.
pub(crate) fn server_cert_expiry(not_after: Option<SystemTime>) {
    #[cfg(feature = "metrics")]
    if let Some(secs) = not_after
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
    {
        metrics::gauge!("tower_mtls_server_cert_expiry_timestamp_seconds").set(secs);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = not_after;
}

/// The gauges the listeners keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    OpenConnections,
    AnonymousConnections,
    HandshakesInFlight,
}

/// One more (`up`) or one less of `level`.
pub(crate) fn level(level: Level, up: bool) {
    #[cfg(feature = "metrics")]
    {
        let gauge = match level {
            Level::OpenConnections => metrics::gauge!("tower_mtls_open_connections"),
            Level::AnonymousConnections => metrics::gauge!("tower_mtls_anonymous_connections"),
            Level::HandshakesInFlight => metrics::gauge!("tower_mtls_handshakes_in_flight"),
        };
        if up {
            gauge.increment(1.0);
        } else {
            gauge.decrement(1.0);
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (level, up);
}
