//! The Workload API client against the fake agent, over real Unix sockets and loopback TCP.

#[path = "../examples/support/pki.rs"]
mod pki;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;
use tokio::time::timeout;
use tower_mtls::SpiffeId;
use tower_mtls::workload_api::fake::{FakeSvid, FakeWorkloadApi};
use tower_mtls::workload_api::{
    Backoff, Endpoint, EndpointError, InvalidUpdate, StreamError, SvidSelector, WorkloadApiClient,
    WorkloadEvent, WorkloadEvents, X509Material,
};

/// Every await on the client is bounded by this.
const WAIT: Duration = Duration::from_secs(10);
/// More events than any test needs before the one it waits for.
const MAX_EVENTS: usize = 200;

fn fast(endpoint: Endpoint) -> WorkloadApiClient {
    WorkloadApiClient::new(endpoint)
        .backoff(Backoff::new(
            Duration::from_millis(5),
            Duration::from_millis(50),
        ))
        .connect_timeout(Duration::from_secs(2))
}

async fn next_event(events: &mut WorkloadEvents) -> WorkloadEvent {
    timeout(WAIT, events.recv())
        .await
        .expect("an event within the time limit")
        .expect("the client is still running")
}

/// Skips connection events up to the next update; anything else is a failure.
async fn next_update(events: &mut WorkloadEvents) -> Arc<X509Material> {
    for _ in 0..MAX_EVENTS {
        match next_event(events).await {
            WorkloadEvent::Updated(material) => return material,
            WorkloadEvent::Refused(why) => panic!("unexpected refusal: {why}"),
            WorkloadEvent::GaveUp(why) => panic!("the client gave up: {why}"),
            _ => {}
        }
    }
    panic!("no update within {MAX_EVENTS} events");
}

/// Skips connection events up to the next refusal; an update is a failure.
async fn next_refusal(events: &mut WorkloadEvents) -> InvalidUpdate {
    for _ in 0..MAX_EVENTS {
        match next_event(events).await {
            WorkloadEvent::Refused(why) => return why,
            WorkloadEvent::Updated(m) => panic!("unexpected update: {:?}", m.svid()),
            WorkloadEvent::GaveUp(why) => panic!("the client gave up: {why}"),
            _ => {}
        }
    }
    panic!("no refusal within {MAX_EVENTS} events");
}

/// Skips events up to the next disconnection.
async fn next_disconnect(events: &mut WorkloadEvents) -> StreamError {
    for _ in 0..MAX_EVENTS {
        match next_event(events).await {
            WorkloadEvent::Disconnected(why) => return why,
            WorkloadEvent::Updated(m) => panic!("unexpected update: {:?}", m.svid()),
            WorkloadEvent::GaveUp(why) => panic!("the client gave up: {why}"),
            _ => {}
        }
    }
    panic!("no disconnection within {MAX_EVENTS} events");
}

/// A trust domain's CA and SVIDs issued by it.
struct TrustDomain {
    name: &'static str,
    ca: pki::Ca,
}

impl TrustDomain {
    fn new(name: &'static str) -> Self {
        TrustDomain {
            name,
            ca: pki::Ca::root(&format!("{name} CA")),
        }
    }

    fn bundle(&self) -> Vec<CertificateDer<'static>> {
        vec![self.ca.der().clone()]
    }

    /// An X509-SVID for `spiffe://<name><path>`.
    fn svid(&self, path: &str) -> pki::Identity {
        self.ca
            .issue(svid_params(&[&format!("spiffe://{}{path}", self.name)]))
    }
}

fn svid_params(uris: &[&str]) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.subject_alt_names = uris
        .iter()
        .map(|uri| SanType::URI((*uri).try_into().expect("IA5 URI")))
        .collect();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = OffsetDateTime::now_utc() - time::Duration::days(1);
    params.not_after = OffsetDateTime::now_utc() + time::Duration::hours(1);
    params.serial_number = Some(SerialNumber::from_slice(&rand_serial()));
    params
}

fn rand_serial() -> [u8; 8] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let mut bytes = NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes();
    bytes[0] = 0x11;
    bytes
}

fn fake_svid(id: &str, identity: &pki::Identity) -> FakeSvid {
    FakeSvid::new(id, &identity.chain, &identity.key())
}

fn serve(agent: &FakeWorkloadApi, td: &TrustDomain, id: &str, identity: &pki::Identity) {
    agent.update(|state| {
        state
            .set_svids(vec![fake_svid(id, identity)])
            .set_bundle(td.name, &td.bundle());
    });
}

#[cfg(unix)]
#[tokio::test]
async fn first_svid_over_a_unix_socket_even_when_the_agent_starts_late() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("agent.sock");
    let endpoint: Endpoint = format!("unix://{}", path.display())
        .parse()
        .expect("endpoint");
    let mut events = fast(endpoint.clone()).watch();

    // No socket yet: the client reports it and keeps trying.
    let first = next_disconnect(&mut events).await;
    assert!(
        matches!(&first, StreamError::Connect { endpoint: e, .. } if *e == endpoint),
        "{first:?}"
    );
    assert!(matches!(
        next_event(&mut events).await,
        WorkloadEvent::Retrying { attempt: 1, .. }
    ));

    let td = TrustDomain::new("example.org");
    let id = "spiffe://example.org/ns/prod/sa/api";
    let identity = td.svid("/ns/prod/sa/api");
    let agent = FakeWorkloadApi::unix(&path).await.expect("fake agent");
    assert_eq!(agent.endpoint(), endpoint);
    agent.update(|state| {
        state
            .set_svids(vec![fake_svid(id, &identity).with_hint("internal")])
            .set_bundle(td.name, &td.bundle());
    });

    let material = next_update(&mut events).await;
    let svid = material.svid();
    assert_eq!(svid.spiffe_id().as_str(), id);
    assert_eq!(svid.cert_chain(), identity.chain.as_slice());
    assert_eq!(svid.private_key().secret_der(), identity.key().secret_der());
    assert_eq!(svid.hint(), Some("internal"));
    assert!(svid.not_before() < std::time::SystemTime::now());
    assert!(svid.not_after() > std::time::SystemTime::now());
    assert_eq!(material.trust_domain(), "example.org");
    assert_eq!(material.bundle("example.org"), Some(td.bundle().as_slice()));
    assert_eq!(material.bundles().len(), 1);
    assert_eq!(material.federated_bundles().count(), 0);
    assert!(material.crls().is_empty());
    // (More than one if the client called between bind and update and was told "no identity".)
    assert!(agent.accepted_requests() >= 1);
    assert_eq!(agent.refused_requests(), 0);
    assert!(Arc::ptr_eq(events.latest().expect("latest"), &material));

    // Dropping the events stops the client, which closes its stream.
    drop(events);
    wait_until(|| agent.open_streams() == 0).await;
    drop(agent);
    assert!(!path.exists(), "the fake removes its socket");
}

/// Waits (bounded) until `condition` holds.
async fn wait_until(condition: impl Fn() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 5 s");
}

#[tokio::test]
async fn rotations_arrive_in_order_over_loopback_tcp() {
    let td = TrustDomain::new("example.org");
    let id = "spiffe://example.org/api";
    let agent = FakeWorkloadApi::loopback().await.expect("fake agent");
    assert!(matches!(agent.endpoint(), Endpoint::Tcp(addr) if addr.ip().is_loopback()));
    let first = td.svid("/api");
    serve(&agent, &td, id, &first);
    let mut events = fast(agent.endpoint()).watch();
    assert!(matches!(
        next_event(&mut events).await,
        WorkloadEvent::Connected
    ));
    let material = next_update(&mut events).await;
    assert_eq!(material.svid().cert_chain(), first.chain.as_slice());

    // Three rotations pushed back to back: each one arrives, in order.
    let rotations: Vec<_> = (0..3).map(|_| td.svid("/api")).collect();
    for identity in &rotations {
        serve(&agent, &td, id, identity);
    }
    for identity in &rotations {
        let material = next_update(&mut events).await;
        assert_eq!(material.svid().cert_chain(), identity.chain.as_slice());
    }

    // An unchanged response on the same stream is not reported again: the next event is the
    // next real change.
    serve(&agent, &td, id, &rotations[2]);
    let last = td.svid("/api");
    serve(&agent, &td, id, &last);
    let material = next_update(&mut events).await;
    assert_eq!(material.svid().cert_chain(), last.chain.as_slice());
}

#[tokio::test]
async fn federated_bundles_come_and_go() {
    let own = TrustDomain::new("example.org");
    let partner = TrustDomain::new("partner.example");
    let other = TrustDomain::new("other.test");
    let agent = FakeWorkloadApi::loopback().await.expect("fake agent");
    let identity = own.svid("/api");
    agent.update(|state| {
        state
            .set_svids(vec![fake_svid("spiffe://example.org/api", &identity)])
            .set_bundle(own.name, &own.bundle())
            .set_bundle(partner.name, &partner.bundle())
            .set_bundle(other.name, &other.bundle());
    });
    let mut events = fast(agent.endpoint()).watch();
    let material = next_update(&mut events).await;
    let federated: Vec<_> = material.federated_bundles().map(|(td, _)| td).collect();
    assert_eq!(federated, ["other.test", "partner.example"]);
    assert_eq!(
        material.bundle("partner.example"),
        Some(partner.bundle().as_slice())
    );
    assert_eq!(material.bundles().len(), 3);

    // A bundle removed: the next material does not have it (absent means removed).
    agent.remove_bundle(partner.name);
    let material = next_update(&mut events).await;
    assert_eq!(material.bundle("partner.example"), None);
    let federated: Vec<_> = material.federated_bundles().map(|(td, _)| td).collect();
    assert_eq!(federated, ["other.test"]);

    // A federated CA rotated in (two certificates in one bundle).
    let next_ca = pki::Ca::root("other.test CA 2");
    agent.set_bundle(other.name, &[other.ca.der().clone(), next_ca.der().clone()]);
    let material = next_update(&mut events).await;
    assert_eq!(material.bundle("other.test").map(<[_]>::len), Some(2));
}

#[tokio::test]
async fn the_svid_is_chosen_by_spiffe_id_or_hint() {
    let td = TrustDomain::new("example.org");
    let a = td.svid("/a");
    let b = td.svid("/b");
    let agent = FakeWorkloadApi::loopback().await.expect("fake agent");
    agent.update(|state| {
        state
            .set_svids(vec![
                fake_svid("spiffe://example.org/a", &a).with_hint("internal"),
                fake_svid("spiffe://example.org/b", &b).with_hint("external"),
            ])
            .set_bundle(td.name, &td.bundle());
    });

    let cases = [
        (SvidSelector::First, "spiffe://example.org/a"),
        (
            SvidSelector::SpiffeId(SpiffeId::parse("spiffe://example.org/b").expect("id")),
            "spiffe://example.org/b",
        ),
        (
            SvidSelector::Hint("external".into()),
            "spiffe://example.org/b",
        ),
    ];
    for (selector, expected) in cases {
        let mut events = fast(agent.endpoint()).select_svid(selector).watch();
        let material = next_update(&mut events).await;
        assert_eq!(material.svid().spiffe_id().as_str(), expected);
        assert_eq!(material.svids().len(), 2);
    }

    let missing = SvidSelector::Hint("nope".into());
    let mut events = fast(agent.endpoint()).select_svid(missing.clone()).watch();
    assert_eq!(
        next_refusal(&mut events).await,
        InvalidUpdate::NoMatchingSvid(missing)
    );
}

#[tokio::test]
async fn invalid_updates_are_refused_and_the_last_good_material_stays() {
    let td = TrustDomain::new("example.org");
    let id = "spiffe://example.org/api";
    let good = td.svid("/api");
    let agent = FakeWorkloadApi::loopback().await.expect("fake agent");
    serve(&agent, &td, id, &good);
    let mut events = fast(agent.endpoint()).watch();
    let material = next_update(&mut events).await;

    let other_key = td.svid("/api");
    let two_uris = td
        .ca
        .issue(svid_params(&[id, "spiffe://example.org/admin"]));
    let mut ca_params = svid_params(&[id]);
    ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_leaf = td.ca.issue(ca_params);
    let mut no_ds = svid_params(&[id]);
    no_ds.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    let no_digital_signature = td.ca.issue(no_ds);
    let wrong_id = td.svid("/someone-else");
    let crl_pem = td.ca.crl(&[&wrong_id]);

    type Check = fn(&InvalidUpdate) -> bool;
    let bad: Vec<(&str, FakeSvid, Option<Vec<u8>>, Check)> = vec![
        (
            "URI SAN differs from spiffe_id",
            fake_svid(id, &wrong_id),
            None,
            |e| matches!(e, InvalidUpdate::UriSanMismatch { found, .. } if found == "spiffe://example.org/someone-else"),
        ),
        (
            "garbage certificate DER",
            FakeSvid::from_raw(
                id,
                b"not a certificate".to_vec(),
                good.key().secret_der().to_vec(),
            ),
            None,
            |e| matches!(e, InvalidUpdate::Certificate { position: 0, .. }),
        ),
        (
            "valid leaf followed by garbage",
            FakeSvid::from_raw(
                id,
                [good.chain[0].as_ref(), b"\x30\x03\x02\x01".as_slice()].concat(),
                good.key().secret_der().to_vec(),
            ),
            None,
            |e| matches!(e, InvalidUpdate::Certificate { position: 1, .. }),
        ),
        (
            "empty chain",
            FakeSvid::from_raw(id, Vec::new(), good.key().secret_der().to_vec()),
            None,
            |e| matches!(e, InvalidUpdate::EmptyChain { .. }),
        ),
        (
            "garbage key",
            FakeSvid::from_raw(id, good.chain[0].to_vec(), b"not a key".to_vec()),
            None,
            |e| matches!(e, InvalidUpdate::PrivateKey { .. }),
        ),
        (
            "someone else's key",
            FakeSvid::new(id, &good.chain, &other_key.key()),
            None,
            |e| matches!(e, InvalidUpdate::KeyMismatch { .. }),
        ),
        ("two URI SANs", fake_svid(id, &two_uris), None, |e| {
            matches!(e, InvalidUpdate::UriSanCount { found: 2, .. })
        }),
        ("CA leaf", fake_svid(id, &ca_leaf), None, |e| {
            matches!(e, InvalidUpdate::LeafIsCa { .. })
        }),
        (
            "no digitalSignature",
            fake_svid(id, &no_digital_signature),
            None,
            |e| matches!(e, InvalidUpdate::LeafWithoutDigitalSignature { .. }),
        ),
        (
            "leaf as intermediate",
            FakeSvid::new(
                id,
                &[good.chain[0].clone(), wrong_id.chain[0].clone()],
                &good.key(),
            ),
            None,
            |e| matches!(e, InvalidUpdate::IntermediateNotCa { position: 1, .. }),
        ),
        (
            "invalid SPIFFE ID",
            fake_svid("spiffe://Example.org/api", &good),
            None,
            |e| matches!(e, InvalidUpdate::SpiffeId { index: 0, .. }),
        ),
        (
            "trust domain ID",
            fake_svid("spiffe://example.org", &good),
            None,
            |e| matches!(e, InvalidUpdate::TrustDomainId { .. }),
        ),
        (
            "hint too long",
            fake_svid(id, &good).with_hint("h".repeat(1025)),
            None,
            |e| matches!(e, InvalidUpdate::HintTooLong { len: 1025, .. }),
        ),
        (
            "garbage own bundle",
            fake_svid(id, &good),
            Some(b"garbage".to_vec()),
            |e| matches!(e, InvalidUpdate::BundleCertificate { trust_domain, .. } if trust_domain == "example.org"),
        ),
        (
            "empty own bundle",
            fake_svid(id, &good),
            Some(Vec::new()),
            |e| matches!(e, InvalidUpdate::EmptyBundle { trust_domain } if trust_domain == "example.org"),
        ),
    ];
    for (what, svid, bundle, check) in bad {
        // One response per case (a second, partial fix would be refused again).
        agent.update(|state| {
            state
                .set_svids(vec![svid])
                .set_bundle(td.name, &td.bundle());
            if let Some(der) = bundle {
                state.set_bundle_der(td.name, der);
            }
        });
        let why = next_refusal(&mut events).await;
        assert!(check(&why), "{what}: {why:?}");
        // The last good material is still the current one.
        assert!(
            Arc::ptr_eq(events.latest().expect("latest"), &material),
            "{what}"
        );
    }

    // Bad federated bundles and CRLs are refused the same way.
    type StateChange = fn(&mut tower_mtls::workload_api::fake::FakeState);
    let bad_extras: Vec<(&str, StateChange, Check)> = vec![
        (
            "federated bundle key not a trust domain",
            |s| {
                s.set_bundle_der("Partner.Example", b"x".to_vec());
            },
            |e| matches!(e, InvalidUpdate::BadTrustDomain { key, .. } if key == "spiffe://Partner.Example"),
        ),
        (
            "garbage federated bundle",
            |s| {
                s.set_bundle_der("partner.example", b"garbage".to_vec());
            },
            |e| matches!(e, InvalidUpdate::BundleCertificate { trust_domain, .. } if trust_domain == "partner.example"),
        ),
        (
            "garbage CRL",
            |s| {
                s.set_crls_der(vec![b"garbage".to_vec()]);
            },
            |e| matches!(e, InvalidUpdate::Crl { index: 0, .. }),
        ),
    ];
    for (what, change, check) in bad_extras {
        agent.update(|state| {
            state
                .set_svids(vec![fake_svid(id, &good)])
                .set_bundle(td.name, &td.bundle())
                .remove_bundle("Partner.Example")
                .remove_bundle("partner.example")
                .set_crls_der(Vec::new());
            change(state);
        });
        let why = next_refusal(&mut events).await;
        assert!(check(&why), "{what}: {why:?}");
        assert!(
            Arc::ptr_eq(events.latest().expect("latest"), &material),
            "{what}"
        );
    }

    // And a valid CRL is delivered.
    agent.update(|state| {
        state.set_crls_pem(crl_pem.as_bytes()).expect("CRL PEM");
    });
    let material = next_update(&mut events).await;
    assert_eq!(material.crls().len(), 1);
}

#[tokio::test]
async fn an_agent_restart_is_reported_and_the_new_material_arrives() {
    let td = TrustDomain::new("example.org");
    let id = "spiffe://example.org/api";
    let before = td.svid("/api");
    let agent = FakeWorkloadApi::loopback().await.expect("fake agent");
    serve(&agent, &td, id, &before);
    let mut events = fast(agent.endpoint()).watch();
    assert_eq!(
        next_update(&mut events).await.svid().cert_chain(),
        before.chain.as_slice()
    );

    agent.stop().await;
    let broken = next_disconnect(&mut events).await;
    assert!(
        !matches!(broken, StreamError::Connect { .. }),
        "first the open stream breaks: {broken:?}"
    );
    // While the agent is down, connecting fails and the client keeps retrying.
    let refused = next_disconnect(&mut events).await;
    assert!(
        matches!(refused, StreamError::Connect { .. }),
        "{refused:?}"
    );
    let after = td.svid("/api");
    serve(&agent, &td, id, &after);
    agent.restart().await.expect("restart on the same port");
    let material = next_update(&mut events).await;
    assert_eq!(material.svid().cert_chain(), after.chain.as_slice());
}

#[tokio::test]
async fn dropped_streams_and_permission_denied_are_retried() {
    let td = TrustDomain::new("example.org");
    let id = "spiffe://example.org/api";
    let identity = td.svid("/api");
    let agent = FakeWorkloadApi::loopback().await.expect("fake agent");
    // No SVID yet: the agent says PermissionDenied, as SPIRE does for an unregistered workload.
    let mut events = fast(agent.endpoint()).watch();
    let denied = next_disconnect(&mut events).await;
    assert!(
        matches!(&denied, StreamError::NoIdentity { message } if message == "no identity issued"),
        "{denied:?}"
    );
    serve(&agent, &td, id, &identity);
    next_update(&mut events).await;

    agent.drop_streams();
    let dropped = next_disconnect(&mut events).await;
    assert!(
        matches!(
            &dropped,
            StreamError::Status {
                code: tonic::Code::Unavailable,
                ..
            }
        ),
        "{dropped:?}"
    );
    // The first response of the new stream is reported even though it did not change.
    let again = next_update(&mut events).await;
    assert_eq!(again.svid().cert_chain(), identity.chain.as_slice());

    // The identity removed while the stream is open: the stream ends with PermissionDenied.
    agent.set_svids(Vec::new());
    assert!(matches!(
        next_disconnect(&mut events).await,
        StreamError::NoIdentity { .. }
    ));
    assert_eq!(agent.refused_requests(), 0);
}

#[tokio::test]
async fn unimplemented_ends_the_stream() {
    // An HTTP/2 server that answers every call with gRPC status 12 (Unimplemented), like a
    // server without the Workload API.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        for _ in 0..10 {
            let Ok((io, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    let response = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .header("grpc-status", "12")
                        .body(Full::new(Bytes::new()))
                        .expect("response");
                    Ok::<_, std::convert::Infallible>(response)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(io), service)
                    .await;
            });
        }
    });
    let mut events = fast(Endpoint::Tcp(addr)).watch();
    match next_event(&mut events).await {
        WorkloadEvent::GaveUp(why) => {
            assert!(why.is_fatal());
            assert!(matches!(
                why,
                StreamError::Status {
                    code: tonic::Code::Unimplemented,
                    ..
                }
            ));
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
    assert!(timeout(WAIT, events.recv()).await.expect("ends").is_none());
    server.abort();
}

// The fake, spoken to without our client: raw gRPC over HTTP/2.

/// A call of `method` with these `workload.spiffe.io` values; the response's headers and, for
/// a streaming answer, its first message.
async fn raw_call(
    endpoint: &Endpoint,
    method: &str,
    security_header: &[&str],
) -> (http::response::Parts, Option<Bytes>) {
    let io = tokio::net::TcpStream::connect(endpoint.tcp_addr().expect("tcp"))
        .await
        .expect("connect");
    let (mut send, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost/SpiffeWorkloadAPI/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for value in security_header {
        request = request.header("workload.spiffe.io", *value);
    }
    // One empty message: no compression flag, length 0.
    let request = request
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .expect("request");
    let response = timeout(WAIT, send.send_request(request))
        .await
        .expect("in time")
        .expect("response");
    let (parts, mut body) = response.into_parts();
    if parts.headers.contains_key("grpc-status") {
        return (parts, None);
    }
    let frame = timeout(WAIT, body.frame())
        .await
        .expect("in time")
        .expect("a frame")
        .expect("frame ok");
    let data = frame.into_data().expect("a data frame");
    // gRPC framing: flag byte, 4-byte length, message.
    let message = data.slice(5..);
    (parts, Some(message))
}

#[derive(Clone, PartialEq, prost::Message)]
struct X509BundlesResponse {
    #[prost(bytes = "vec", repeated, tag = "1")]
    crl: Vec<Vec<u8>>,
    #[prost(map = "string, bytes", tag = "2")]
    bundles: HashMap<String, Vec<u8>>,
}

#[tokio::test]
async fn the_fake_refuses_calls_without_the_security_header() {
    let td = TrustDomain::new("example.org");
    let partner = TrustDomain::new("partner.example");
    let agent = FakeWorkloadApi::loopback().await.expect("fake agent");
    serve(&agent, &td, "spiffe://example.org/api", &td.svid("/api"));
    agent.set_bundle(partner.name, &partner.bundle());
    let endpoint = agent.endpoint();

    for (header, method) in [
        (&[][..], "FetchX509SVID"),
        (&["false"][..], "FetchX509SVID"),
        (&["true", "true"][..], "FetchX509SVID"),
        (&[][..], "FetchX509Bundles"),
    ] {
        let (parts, message) = raw_call(&endpoint, method, header).await;
        assert_eq!(parts.status, http::StatusCode::OK);
        assert_eq!(
            parts.headers.get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"3"[..]),
            "{method} with {header:?}"
        );
        assert!(message.is_none());
    }
    assert_eq!(agent.refused_requests(), 4);
    assert_eq!(agent.accepted_requests(), 0);

    // With the header, FetchX509Bundles streams every bundle, keyed by trust-domain SPIFFE ID.
    let (parts, message) = raw_call(&endpoint, "FetchX509Bundles", &["true"]).await;
    assert!(!parts.headers.contains_key("grpc-status"));
    let response = <X509BundlesResponse as prost::Message>::decode(message.expect("message"))
        .expect("decodes");
    let mut keys: Vec<_> = response.bundles.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["spiffe://example.org", "spiffe://partner.example"]);
    assert_eq!(
        response.bundles.get("spiffe://partner.example"),
        Some(&partner.ca.der().to_vec())
    );
    assert_eq!(agent.accepted_requests(), 1);

    // A method outside the X.509 subset is Unimplemented.
    let (parts, _) = raw_call(&endpoint, "FetchJWTSVID", &["true"]).await;
    assert_eq!(
        parts.headers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"12"[..])
    );
}

#[tokio::test]
async fn the_fake_takes_pem() {
    let td = TrustDomain::new("example.org");
    let identity = td.svid("/api");
    let svid = FakeSvid::from_pem(
        "spiffe://example.org/api",
        identity.chain_pem().as_bytes(),
        identity.key_pem.as_bytes(),
    )
    .expect("PEM");
    let agent = FakeWorkloadApi::loopback().await.expect("fake agent");
    agent.update(|state| {
        state
            .set_svids(vec![svid])
            .set_bundle_pem(td.name, td.ca.pem().as_bytes())
            .expect("bundle PEM");
    });
    let mut events = fast(agent.endpoint()).watch();
    let material = next_update(&mut events).await;
    assert_eq!(material.svid().cert_chain(), identity.chain.as_slice());
    assert_eq!(material.bundle("example.org"), Some(td.bundle().as_slice()));

    assert!(FakeSvid::from_pem("spiffe://x/y", b"", identity.key_pem.as_bytes()).is_err());
    assert!(FakeSvid::from_pem("spiffe://x/y", identity.chain_pem().as_bytes(), b"nope").is_err());
    let mut state = agent.state();
    assert!(state.set_bundle_pem("x", b"no PEM here").is_err());
}

#[test]
fn malformed_endpoints_are_refused() {
    assert_eq!(
        "tcp://localhost:8081".parse::<Endpoint>(),
        Err(EndpointError::TcpHostNotIp)
    );
    assert_eq!(
        "unix://host/agent.sock".parse::<Endpoint>(),
        Err(EndpointError::UnixAuthority)
    );
    assert_eq!(
        "http://127.0.0.1:8081".parse::<Endpoint>(),
        Err(EndpointError::UnsupportedScheme("http".into()))
    );
    assert_eq!(
        "tcp:127.0.0.1:8081".parse::<Endpoint>(),
        Ok(Endpoint::Tcp("127.0.0.1:8081".parse().expect("addr")))
    );
}

#[tokio::test]
async fn a_silent_agent_is_timed_out_and_retried() {
    // Accepts connections and never says a word (a hung agent).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..10 {
            match listener.accept().await {
                Ok((io, _)) => held.push(io),
                Err(_) => return,
            }
        }
    });
    let mut events = fast(Endpoint::Tcp(addr))
        .first_response_timeout(Duration::from_millis(200))
        .watch();
    let why = next_disconnect(&mut events).await;
    assert!(
        matches!(why, StreamError::FirstResponseTimeout { timeout } if timeout == Duration::from_millis(200)),
        "{why:?}"
    );
    assert!(matches!(
        next_event(&mut events).await,
        WorkloadEvent::Retrying { attempt: 1, .. }
    ));
    // And again on the next attempt: the count grows.
    assert!(matches!(
        next_disconnect(&mut events).await,
        StreamError::FirstResponseTimeout { .. }
    ));
    assert!(matches!(
        next_event(&mut events).await,
        WorkloadEvent::Retrying { attempt: 2, .. }
    ));
    server.abort();
}
