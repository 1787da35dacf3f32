//! The SPIFFE Workload API as a source of X509-SVIDs, bundles and CRLs (feature `spiffe`).
//!
//! [`WorkloadApiClient`] connects to an agent (SPIRE, or anything speaking the
//! [Workload API](https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE_Workload_API.md))
//! over a Unix socket or TCP, keeps a `FetchX509SVID` stream open and turns every response into
//! a validated [`X509Material`]: the server's SVID (certificate chain and key), the bundles of
//! its own and of federated trust domains, and CRLs. Agent down or stream broken: it reconnects
//! with [`Backoff`] and says so in its [`WorkloadEvent`]s; an invalid response is refused and
//! the previous material stays current.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tower_mtls::workload_api::{Backoff, WorkloadApiClient, WorkloadEvent};
//!
//! let mut events = WorkloadApiClient::new("unix:///run/spire/agent.sock".parse()?)
//!     .backoff(Backoff::new(Duration::from_millis(500), Duration::from_secs(30)))
//!     .watch();
//! while let Some(event) = events.recv().await {
//!     match event {
//!         WorkloadEvent::Updated(material) => {
//!             let svid = material.svid();
//!             println!("{} until {:?}", svid.spiffe_id(), svid.not_after());
//!             for (trust_domain, certs) in material.bundles() {
//!                 println!("  trusts {trust_domain}: {} CA certificates", certs.len());
//!             }
//!         }
//!         WorkloadEvent::Refused(why) => eprintln!("refused an update: {why}"),
//!         WorkloadEvent::Disconnected(why) => eprintln!("Workload API: {why}"),
//!         WorkloadEvent::GaveUp(why) => return Err(why.into()),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # What is checked
//! Every SVID: a valid SPIFFE ID with a path; a chain of DER certificates, leaf first; a leaf
//! with exactly one URI SAN equal to that ID, not a CA, key usage `digitalSignature` and neither
//! `keyCertSign` nor `cRLSign`; intermediates that are CAs with `keyCertSign`; a PKCS#8 key
//! the crypto provider loads and whose public key is the leaf's; a hint of at most 1024 bytes.
//! Every bundle: a valid trust domain, at least one certificate, all parse; one trust domain
//! never gets two different bundles. Every CRL parses. Chains are **not** verified against the
//! bundles here and validity periods are not enforced: that is the TLS side's job (and
//! [`X509Svid::not_after`] says when the SVID stops being usable).
//!
//! # Protocol
//! Only `FetchX509SVID` is used: every one of its responses carries the SVIDs, the own bundle,
//! the federated bundles and the CRLs together, so one response is one consistent update
//! (`FetchX509Bundles` carries nothing more, and a second stream would make updates race).
//! Requests carry the `workload.spiffe.io: true` metadata. `PermissionDenied` (no identity for
//! this workload) and every other failure are retried with backoff; `InvalidArgument` and
//! `Unimplemented` are not (the specification's rule), they end the stream with
//! [`WorkloadEvent::GaveUp`]. A new stream must deliver its first response within
//! [`first_response_timeout`](WorkloadApiClient::first_response_timeout) (60 s), or it is
//! dropped and retried; after that, silence means nothing changed. The client sends no HTTP/2
//! keep-alive pings: grpc-go servers (SPIRE sets no keepalive policy, so grpc-go's default
//! applies) close connections that ping more often than every 5 minutes.
//!
//! The code generated from `workload.proto` (the X.509 subset) is committed; no `protoc` needed.

mod backoff;
mod client;
mod endpoint;
mod material;
mod source;
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
#[rustfmt::skip]
mod pb;

#[cfg(feature = "test-util")]
pub mod fake;

pub use backoff::Backoff;
pub use client::{SECURITY_HEADER, StreamError, WorkloadApiClient, WorkloadEvent, WorkloadEvents};
pub use endpoint::{ENDPOINT_ENV, Endpoint, EndpointError};
pub use material::{InvalidUpdate, MAX_HINT_LEN, SvidSelector, X509Material, X509Svid};
pub use source::{SourceError, SourceStats, WorkloadApiSource, WorkloadApiWatcher};
