//! A fake Workload API server for tests (feature `test-util`).
//!
//! [`FakeWorkloadApi`] speaks the real protocol (gRPC over HTTP/2, the `SpiffeWorkloadAPI`
//! service's `FetchX509SVID` and `FetchX509Bundles`) on a Unix socket or a TCP port, and behaves
//! like a SPIRE agent where it matters to a client: requests without the `workload.spiffe.io:
//! true` metadata get `InvalidArgument`; a workload without SVIDs gets `PermissionDenied` ("no
//! identity issued"); every change is pushed, as a complete response, on every open stream;
//! federated bundles are keyed by the trust domain's SPIFFE ID (`spiffe://example.org`). It can
//! also do what agents do on bad days: drop every stream, stop, and come back on the same
//! address.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use rcgen::{CertificateParams, CertifiedIssuer, IsCa, BasicConstraints, KeyPair,
//! #     KeyUsagePurpose, SanType};
//! # let mut ca_params = CertificateParams::default();
//! # ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
//! # ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
//! # let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
//! # let mut params = CertificateParams::default();
//! # params.subject_alt_names = vec![SanType::URI("spiffe://example.org/api".try_into()?)];
//! # params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
//! # let key_pair = KeyPair::generate()?;
//! # let leaf = params.signed_by(&key_pair, &ca)?;
//! # let (chain, key, ca) = (vec![leaf.der().clone()], key_pair.serialize_der().try_into()?,
//! #     ca.der().clone());
//! use std::time::Duration;
//! use tower_mtls::workload_api::fake::{FakeSvid, FakeWorkloadApi};
//! use tower_mtls::workload_api::{WorkloadApiClient, WorkloadEvent};
//!
//! let agent = FakeWorkloadApi::loopback().await?;
//! agent.update(|state| {
//!     state
//!         .set_svids(vec![FakeSvid::new("spiffe://example.org/api", &chain, &key)])
//!         .set_bundle("example.org", &[ca]);
//! });
//! let mut events = WorkloadApiClient::new(agent.endpoint()).watch();
//! loop {
//!     match tokio::time::timeout(Duration::from_secs(5), events.recv()).await? {
//!         Some(WorkloadEvent::Updated(material)) => {
//!             assert_eq!(material.svid().spiffe_id().as_str(), "spiffe://example.org/api");
//!             break;
//!         }
//!         Some(_) => continue,
//!         None => panic!("the client stopped"),
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
#[cfg(unix)]
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tonic::Status;

use super::pb;
use super::pb::spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer};
use super::{Endpoint, SECURITY_HEADER};

/// Why PEM given to the fake was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FakeError {
    /// The certificate PEM does not parse.
    #[error("certificate PEM: {0}")]
    CertificatePem(#[source] pem::Error),
    /// The certificate PEM holds no certificate.
    #[error("the certificate PEM holds no certificate")]
    NoCertificates,
    /// The key PEM does not parse (or holds no key).
    #[error("key PEM: {0}")]
    KeyPem(#[source] pem::Error),
    /// The key is not PKCS#8 (`BEGIN PRIVATE KEY`), the only encoding the Workload API carries.
    #[error("the key is not PKCS#8 (BEGIN PRIVATE KEY)")]
    NotPkcs8,
    /// The CRL PEM does not parse.
    #[error("CRL PEM: {0}")]
    CrlPem(#[source] pem::Error),
}

/// One SVID as the fake sends it: bytes, not validated (tests send broken ones on purpose).
#[derive(Clone)]
pub struct FakeSvid {
    spiffe_id: String,
    chain: Vec<u8>,
    key: Vec<u8>,
    hint: String,
}

impl FakeSvid {
    /// An SVID from a DER chain (leaf first) and a PKCS#8 key. The key's bytes are sent as they
    /// are; a PKCS#1 or SEC1 key will be refused by clients, as it would be from an agent.
    pub fn new(
        spiffe_id: impl Into<String>,
        chain: &[CertificateDer<'_>],
        key: &PrivateKeyDer<'_>,
    ) -> Self {
        FakeSvid {
            spiffe_id: spiffe_id.into(),
            chain: concat(chain.iter().map(|c| c.as_ref())),
            key: key.secret_der().to_vec(),
            hint: String::new(),
        }
    }

    /// An SVID from a PEM chain (leaf first) and a PEM PKCS#8 key.
    pub fn from_pem(
        spiffe_id: impl Into<String>,
        chain_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, FakeError> {
        let chain = certificates_from_pem(chain_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(FakeError::KeyPem)?;
        if !matches!(key, PrivateKeyDer::Pkcs8(_)) {
            return Err(FakeError::NotPkcs8);
        }
        Ok(FakeSvid::new(spiffe_id, &chain, &key))
    }

    /// An SVID from raw bytes: `chain` is the `x509_svid` field (concatenated DER, or anything),
    /// `key` the `x509_svid_key` field.
    pub fn from_raw(spiffe_id: impl Into<String>, chain: Vec<u8>, key: Vec<u8>) -> Self {
        FakeSvid {
            spiffe_id: spiffe_id.into(),
            chain,
            key,
            hint: String::new(),
        }
    }

    /// The same SVID with an operator hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = hint.into();
        self
    }

    /// The SPIFFE ID field as it will be sent.
    pub fn spiffe_id(&self) -> &str {
        &self.spiffe_id
    }

    /// The trust domain named by the SPIFFE ID field, read leniently (it may be invalid).
    fn trust_domain(&self) -> &str {
        let rest = self
            .spiffe_id
            .strip_prefix("spiffe://")
            .unwrap_or(&self.spiffe_id);
        rest.split('/').next().unwrap_or(rest)
    }
}

impl fmt::Debug for FakeSvid {
    // Never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeSvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("chain_bytes", &self.chain.len())
            .field("hint", &self.hint)
            .finish_non_exhaustive()
    }
}

/// What the fake serves. Change it with [`FakeWorkloadApi::update`]: all changes made in one
/// call go out as one response.
#[derive(Debug, Clone, Default)]
pub struct FakeState {
    svids: Vec<FakeSvid>,
    // Bare trust domain name → concatenated DER certificates.
    bundles: BTreeMap<String, Vec<u8>>,
    crls: Vec<Vec<u8>>,
}

impl FakeState {
    /// Replaces the SVIDs (the first is the default one). No SVIDs: every stream is ended with
    /// `PermissionDenied` and new ones are refused with it, as SPIRE does.
    pub fn set_svids(&mut self, svids: Vec<FakeSvid>) -> &mut Self {
        self.svids = svids;
        self
    }

    /// Sets the bundle of `trust_domain` (a bare name, `example.org`). An SVID of that trust
    /// domain carries it in its `bundle` field; otherwise it goes out as a federated bundle.
    pub fn set_bundle(&mut self, trust_domain: &str, certs: &[CertificateDer<'_>]) -> &mut Self {
        self.set_bundle_der(trust_domain, concat(certs.iter().map(|c| c.as_ref())))
    }

    /// Sets the bundle of `trust_domain` from PEM certificates.
    pub fn set_bundle_pem(
        &mut self,
        trust_domain: &str,
        pem: &[u8],
    ) -> Result<&mut Self, FakeError> {
        let certs = certificates_from_pem(pem)?;
        Ok(self.set_bundle(trust_domain, &certs))
    }

    /// Sets the bundle of `trust_domain` to these bytes, valid DER or not.
    pub fn set_bundle_der(&mut self, trust_domain: &str, der: Vec<u8>) -> &mut Self {
        self.bundles.insert(trust_domain.to_owned(), der);
        self
    }

    /// Removes the bundle of `trust_domain`.
    pub fn remove_bundle(&mut self, trust_domain: &str) -> &mut Self {
        self.bundles.remove(trust_domain);
        self
    }

    /// Replaces the CRLs.
    pub fn set_crls(&mut self, crls: &[CertificateRevocationListDer<'_>]) -> &mut Self {
        self.crls = crls.iter().map(|c| c.as_ref().to_vec()).collect();
        self
    }

    /// Replaces the CRLs with the ones in `pem`.
    pub fn set_crls_pem(&mut self, pem: &[u8]) -> Result<&mut Self, FakeError> {
        let crls = CertificateRevocationListDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(FakeError::CrlPem)?;
        Ok(self.set_crls(&crls))
    }

    /// Replaces the CRLs with these bytes, valid DER or not.
    pub fn set_crls_der(&mut self, crls: Vec<Vec<u8>>) -> &mut Self {
        self.crls = crls;
        self
    }

    fn svid_response(&self) -> Result<pb::X509svidResponse, Status> {
        if self.svids.is_empty() {
            return Err(no_identity());
        }
        let own: BTreeSet<&str> = self.svids.iter().map(FakeSvid::trust_domain).collect();
        Ok(pb::X509svidResponse {
            svids: self
                .svids
                .iter()
                .map(|svid| pb::X509svid {
                    spiffe_id: svid.spiffe_id.clone(),
                    x509_svid: svid.chain.clone(),
                    x509_svid_key: svid.key.clone(),
                    bundle: self
                        .bundles
                        .get(svid.trust_domain())
                        .cloned()
                        .unwrap_or_default(),
                    hint: svid.hint.clone(),
                })
                .collect(),
            crl: self.crls.clone(),
            federated_bundles: self
                .bundles
                .iter()
                .filter(|(td, _)| !own.contains(td.as_str()))
                .map(|(td, der)| (format!("spiffe://{td}"), der.clone()))
                .collect(),
        })
    }

    fn bundles_response(&self) -> Result<pb::X509BundlesResponse, Status> {
        // SPIRE's default: a workload without an identity gets no bundles either.
        if self.svids.is_empty() {
            return Err(no_identity());
        }
        Ok(pb::X509BundlesResponse {
            crl: self.crls.clone(),
            bundles: self
                .bundles
                .iter()
                .map(|(td, der)| (format!("spiffe://{td}"), der.clone()))
                .collect(),
        })
    }
}

fn no_identity() -> Status {
    Status::permission_denied("no identity issued")
}

fn concat<'a>(parts: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    parts.flatten().copied().collect()
}

fn certificates_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, FakeError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(FakeError::CertificatePem)?;
    if certs.is_empty() {
        return Err(FakeError::NoCertificates);
    }
    Ok(certs)
}

type Sender<T> = mpsc::UnboundedSender<Result<T, Status>>;

#[derive(Default)]
struct Streams {
    svid: Vec<Sender<pb::X509svidResponse>>,
    bundles: Vec<Sender<pb::X509BundlesResponse>>,
}

impl Streams {
    fn push(&mut self, state: &FakeState) {
        let svid = state.svid_response();
        let ended = svid.is_err();
        self.svid.retain(|tx| tx.send(svid.clone()).is_ok());
        if ended {
            self.svid.clear();
        }
        let bundles = state.bundles_response();
        let ended = bundles.is_err();
        self.bundles.retain(|tx| tx.send(bundles.clone()).is_ok());
        if ended {
            self.bundles.clear();
        }
    }

    fn end_all(&mut self, status: &Status) {
        for tx in self.svid.drain(..) {
            let _ = tx.send(Err(status.clone()));
        }
        for tx in self.bundles.drain(..) {
            let _ = tx.send(Err(status.clone()));
        }
    }

    fn open(&mut self) -> usize {
        self.svid.retain(|tx| !tx.is_closed());
        self.bundles.retain(|tx| !tx.is_closed());
        self.svid.len() + self.bundles.len()
    }
}

#[derive(Default)]
struct Inner {
    state: FakeState,
    streams: Streams,
}

#[derive(Default)]
struct Shared {
    inner: Mutex<Inner>,
    accepted: AtomicU64,
    refused: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A test that panicked while holding the lock leaves consistent data behind: every
        // mutation is a plain field assignment.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check_security_header<T>(&self, request: &tonic::Request<T>) -> Result<(), Status> {
        let mut values = request.metadata().get_all(SECURITY_HEADER).iter();
        // Exactly one value, and it is "true" (SPIRE's check).
        let ok = matches!(
            (values.next().map(|v| v.to_str()), values.next()),
            (Some(Ok("true")), None)
        );
        if ok {
            self.accepted.fetch_add(1, Ordering::Relaxed);
            Ok(())
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            Err(Status::invalid_argument(
                "security header missing from request",
            ))
        }
    }
}

/// The fake agent's gRPC service.
#[derive(Clone)]
struct Service(Arc<Shared>);

#[tonic::async_trait]
impl SpiffeWorkloadApi for Service {
    type FetchX509SVIDStream = Updates<pb::X509svidResponse>;
    type FetchX509BundlesStream = Updates<pb::X509BundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: tonic::Request<pb::X509svidRequest>,
    ) -> Result<tonic::Response<Self::FetchX509SVIDStream>, Status> {
        self.0.check_security_header(&request)?;
        let mut inner = self.0.lock();
        let first = inner.state.svid_response()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(Ok(first));
        inner.streams.svid.push(tx);
        Ok(tonic::Response::new(Updates { rx, ended: false }))
    }

    async fn fetch_x509_bundles(
        &self,
        request: tonic::Request<pb::X509BundlesRequest>,
    ) -> Result<tonic::Response<Self::FetchX509BundlesStream>, Status> {
        self.0.check_security_header(&request)?;
        let mut inner = self.0.lock();
        let first = inner.state.bundles_response()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(Ok(first));
        inner.streams.bundles.push(tx);
        Ok(tonic::Response::new(Updates { rx, ended: false }))
    }
}

/// One open stream's responses; ends after an error.
struct Updates<T> {
    rx: mpsc::UnboundedReceiver<Result<T, Status>>,
    ended: bool,
}

impl<T> futures_core::Stream for Updates<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let item = self.rx.poll_recv(cx);
        if matches!(item, Poll::Ready(Some(Err(_)))) {
            self.ended = true;
        }
        item
    }
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener),
}

/// A fake SPIFFE Workload API server. See the [module docs](self).
///
/// Dropping it stops the server (and removes its Unix socket).
pub struct FakeWorkloadApi {
    shared: Arc<Shared>,
    endpoint: Endpoint,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl FakeWorkloadApi {
    /// Serves on a Unix socket at `path` (which must not exist yet).
    #[cfg(unix)]
    pub async fn unix(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        let listener = tokio::net::UnixListener::bind(&path)?;
        Ok(Self::start(Endpoint::Unix(path), Listener::Unix(listener)))
    }

    /// Serves on TCP at `addr`; port 0 picks a free port ([`endpoint`](Self::endpoint) tells
    /// which).
    pub async fn tcp(addr: SocketAddr) -> io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        Ok(Self::start(Endpoint::Tcp(addr), Listener::Tcp(listener)))
    }

    /// Serves on a free TCP port of 127.0.0.1.
    pub async fn loopback() -> io::Result<Self> {
        Self::tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    fn start(endpoint: Endpoint, listener: Listener) -> Self {
        let shared = Arc::new(Shared::default());
        let server = tokio::spawn(serve(listener, Arc::clone(&shared)));
        FakeWorkloadApi {
            shared,
            endpoint,
            server: Mutex::new(Some(server)),
        }
    }

    /// Where it listens, for [`WorkloadApiClient::new`](super::WorkloadApiClient::new).
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    /// Changes what is served and pushes one new response on every open stream.
    pub fn update(&self, change: impl FnOnce(&mut FakeState)) {
        let mut inner = self.shared.lock();
        change(&mut inner.state);
        let Inner { state, streams } = &mut *inner;
        streams.push(state);
    }

    /// Shortcut for `update(|s| { s.set_svids(svids); })`.
    pub fn set_svids(&self, svids: Vec<FakeSvid>) {
        self.update(|state| {
            state.set_svids(svids);
        });
    }

    /// Shortcut for `update(|s| { s.set_bundle(trust_domain, certs); })`.
    pub fn set_bundle(&self, trust_domain: &str, certs: &[CertificateDer<'_>]) {
        self.update(|state| {
            state.set_bundle(trust_domain, certs);
        });
    }

    /// Shortcut for `update(|s| { s.remove_bundle(trust_domain); })`.
    pub fn remove_bundle(&self, trust_domain: &str) {
        self.update(|state| {
            state.remove_bundle(trust_domain);
        });
    }

    /// What is served now.
    pub fn state(&self) -> FakeState {
        self.shared.lock().state.clone()
    }

    /// Ends every open stream with `Unavailable` (the connections stay up).
    pub fn drop_streams(&self) {
        self.shared
            .lock()
            .streams
            .end_all(&Status::unavailable("stream dropped by the fake agent"));
    }

    /// Open `FetchX509SVID` and `FetchX509Bundles` streams.
    pub fn open_streams(&self) -> usize {
        self.shared.lock().streams.open()
    }

    /// Calls answered (the security header was right).
    pub fn accepted_requests(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Calls refused with `InvalidArgument` for a missing or wrong security header.
    pub fn refused_requests(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Stops listening and closes every connection, like an agent that went away. The state is
    /// kept for [`restart`](Self::restart).
    pub async fn stop(&self) {
        let server = self
            .server
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(server) = server {
            server.abort();
            let _ = server.await;
        }
        self.shared.lock().streams = Streams::default();
        self.remove_socket();
    }

    /// Listens again on the same address (after [`stop`](Self::stop); stops first if needed).
    pub async fn restart(&self) -> io::Result<()> {
        self.stop().await;
        let listener = match &self.endpoint {
            Endpoint::Tcp(addr) => Listener::Tcp(tokio::net::TcpListener::bind(addr).await?),
            #[cfg(unix)]
            Endpoint::Unix(path) => Listener::Unix(tokio::net::UnixListener::bind(path)?),
            #[cfg(not(unix))]
            Endpoint::Unix(_) => return Err(io::ErrorKind::Unsupported.into()),
        };
        let server = tokio::spawn(serve(listener, Arc::clone(&self.shared)));
        *self
            .server
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(server);
        Ok(())
    }

    fn remove_socket(&self) {
        if let Endpoint::Unix(path) = &self.endpoint {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl fmt::Debug for FakeWorkloadApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeWorkloadApi")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeWorkloadApi {
    fn drop(&mut self) {
        let server = self
            .server
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(server) = server {
            server.abort();
            self.remove_socket();
        }
    }
}

/// Accepts connections until aborted; aborting drops the `JoinSet`, which aborts every
/// connection.
async fn serve(listener: Listener, shared: Arc<Shared>) {
    let service = SpiffeWorkloadApiServer::new(Service(shared));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = accept(&listener) => match accepted {
                Ok(Accepted::Tcp(io)) => {
                    connections.spawn(serve_connection(io, service.clone()));
                }
                #[cfg(unix)]
                Ok(Accepted::Unix(io)) => {
                    connections.spawn(serve_connection(io, service.clone()));
                }
                // Out of file descriptors and the like: let the condition pass.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

enum Accepted {
    Tcp(tokio::net::TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> io::Result<Accepted> {
    match listener {
        Listener::Tcp(listener) => listener.accept().await.map(|(io, _)| Accepted::Tcp(io)),
        #[cfg(unix)]
        Listener::Unix(listener) => listener.accept().await.map(|(io, _)| Accepted::Unix(io)),
    }
}

async fn serve_connection<T>(io: T, service: SpiffeWorkloadApiServer<Service>)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let _ = http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
        .await;
}
