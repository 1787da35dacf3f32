//! The listener under hostile timing: stalled clients, the in-flight cap, graceful shutdown.

mod common;

use std::time::{Duration, Instant};

use common::{Setup, client, expect_rejected};
use http::StatusCode;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tower::ServiceBuilder;
use tower_mtls::tls::{HandshakeFailure, ShedCause};
use tower_mtls::{AllowAnyVerified, MtlsAcceptor, MtlsAuthLayer, MtlsListener};

/// Runs `serve_with_shutdown` in a task; sending on the returned channel starts the shutdown.
fn serve_until_stopped<S, B>(
    listener: MtlsListener,
    service: S,
    drain_timeout: Duration,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
)
where
    S: tower_mtls::hyper::HttpService<B>,
    B: tower_mtls::hyper::HttpBody,
{
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tower_mtls::hyper::serve_with_shutdown(
        listener,
        service,
        async {
            let _ = stopped.await;
        },
        drain_timeout,
    ));
    (stop, server)
}

#[tokio::test]
async fn stalled_clients_do_not_delay_a_real_one() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let timeout = Duration::from_secs(3);
    let acceptor = MtlsAcceptor::new(setup.builder().build().unwrap()).handshake_timeout(timeout);
    let addr = common::start_whoami(acceptor.clone()).await;

    // 200 connections that never send a ClientHello.
    let mut stalled = Vec::new();
    for _ in 0..200 {
        stalled.push(TcpStream::connect(addr).await.unwrap());
    }
    let opened = Instant::now();

    let started = Instant::now();
    let reply = client::get_once(addr, setup.client(Some(&alice)), "/")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let took = started.elapsed();
    assert!(
        took < timeout / 2,
        "a real client waited {took:?} behind stalled ones"
    );

    // The stalled ones are closed at the timeout, not before and not much after.
    let mut first = stalled.pop().unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(timeout * 3, first.read(&mut buf))
        .await
        .expect("stalled connection was never closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "expected EOF");
    let closed_after = opened.elapsed();
    assert!(
        closed_after >= timeout - Duration::from_millis(500),
        "closed too early: {closed_after:?}"
    );
    expect_rejected(&acceptor, HandshakeFailure::Timeout).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while acceptor.stats().rejected(HandshakeFailure::Timeout) < 200 {
        assert!(Instant::now() < deadline, "{:?}", acceptor.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(acceptor.stats().accepted, 1);
}

#[tokio::test]
async fn a_full_in_flight_cap_sheds_the_oldest_stalled_handshake() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    // Long deadlines: whatever closes the stalled connections here is the shedding.
    let acceptor = MtlsAcceptor::new(setup.builder().build().unwrap())
        .client_hello_timeout(Duration::from_secs(60))
        .handshake_timeout(Duration::from_secs(60));
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = MtlsListener::builder(acceptor.clone())
        .max_handshakes_in_flight(2)
        .from_tcp(tcp)
        .unwrap();
    let addr = listener.local_addr();
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(AllowAnyVerified))
        .service_fn(common::whoami);
    tokio::spawn(tower_mtls::hyper::serve(listener, service));

    let mut oldest = TcpStream::connect(addr).await.unwrap();
    let mut newer = TcpStream::connect(addr).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while acceptor.stats().handshakes_in_flight < 2 {
        assert!(Instant::now() < deadline, "{:?}", acceptor.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Both slots are taken by clients that sent nothing: a real client still gets in.
    let reply = client::get_once(addr, setup.client(Some(&alice)), "/")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(10), oldest.read(&mut buf))
        .await
        .expect("the oldest stalled handshake was shed")
        .unwrap_or(0);
    assert_eq!(n, 0, "expected EOF");
    let stats = acceptor.stats();
    assert_eq!(stats.shed(ShedCause::HandshakesInFlight), 1, "{stats:?}");
    assert_eq!(stats.rejected(HandshakeFailure::Shed), 1);
    assert_eq!(stats.rejected(HandshakeFailure::Timeout), 0);
    // The newer one still holds its slot.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), newer.read(&mut buf))
            .await
            .is_err(),
        "the newer stalled handshake is still in flight"
    );
}

#[tokio::test]
async fn graceful_shutdown_stops_accepting_and_drains() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let acceptor = MtlsAcceptor::new(setup.builder().build().unwrap());
    let listener = MtlsListener::bind("127.0.0.1:0", acceptor).await.unwrap();
    let addr = listener.local_addr();
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(AllowAnyVerified))
        .service_fn(common::whoami);
    let (stop, server) = serve_until_stopped(listener, service, Duration::from_secs(2));

    let mut open = client::http1(addr, setup.client_h1(Some(&alice)))
        .await
        .unwrap();
    assert_eq!(
        client::status1(&mut open, "/").await.unwrap(),
        StatusCode::OK
    );
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve_with_shutdown returns within the drain timeout")
        .unwrap();
    assert!(
        client::get_once(addr, setup.client(Some(&alice)), "/")
            .await
            .is_err(),
        "the listener must be closed"
    );
}

#[tokio::test]
async fn drain_timeout_closes_connections_that_do_not_finish() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let acceptor = MtlsAcceptor::new(setup.builder().build().unwrap());
    let listener = MtlsListener::bind("127.0.0.1:0", acceptor).await.unwrap();
    let addr = listener.local_addr();
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(AllowAnyVerified))
        .service_fn(|_req: http::Request<hyper::body::Incoming>| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::<
                bytes::Bytes,
            >::default()))
        });
    let (stop, server) = serve_until_stopped(listener, service, Duration::from_millis(500));
    let mut slow = client::http1(addr, setup.client_h1(Some(&alice)))
        .await
        .unwrap();
    let in_flight = tokio::spawn(async move { client::send1(&mut slow, client::get("/")).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve_with_shutdown gave up on the slow request after the drain timeout")
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    let outcome = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("the slow request ends when its connection is closed")
        .unwrap();
    assert!(
        outcome.is_err(),
        "the request cannot have completed: {outcome:?}"
    );
}

#[tokio::test]
async fn serve_keeps_serving_a_listener_already_accepted_from() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let acceptor = MtlsAcceptor::new(setup.builder().build().unwrap());
    let mut listener = MtlsListener::bind("127.0.0.1:0", acceptor).await.unwrap();
    let addr = listener.local_addr();
    let config = setup.client(Some(&alice));
    let first = tokio::spawn(client::connect(addr, config.clone()));
    let (_tls, info) = listener.accept().await.expect("first connection");
    assert_eq!(
        info.principal_unchecked().and_then(|p| p.common_name()),
        Some("alice")
    );
    first.await.unwrap().unwrap();

    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(AllowAnyVerified))
        .service_fn(common::whoami);
    tokio::spawn(tower_mtls::hyper::serve(listener, service));
    let reply = client::get_once(addr, config, "/").await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
}

/// Connections presenting the same chain share one parsed principal while one of them is
/// open; another client, or the same certificate from another bundle's acceptor, does not.
#[tokio::test]
async fn connections_with_the_same_chain_share_one_principal() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &["admins"]);
    let bob = setup.ca.client("bob", &[]);
    let acceptor = MtlsAcceptor::new(setup.builder().build().unwrap());
    let mut listener = MtlsListener::bind("127.0.0.1:0", acceptor).await.unwrap();
    let addr = listener.local_addr();
    let mut open = Vec::new();
    for id in [&alice, &alice, &bob] {
        let client = tokio::spawn(client::connect(addr, setup.client(Some(id))));
        let (tls, info) = listener.accept().await.expect("connection");
        open.push((client.await.unwrap().unwrap(), tls, info));
    }
    let principal = |i: usize| open[i].2.principal_unchecked().unwrap().clone();
    assert!(tower_mtls::Principal::ptr_eq(&principal(0), &principal(1)));
    assert!(!tower_mtls::Principal::ptr_eq(&principal(0), &principal(2)));
    assert_eq!(principal(1).common_name(), Some("alice"));
    assert_eq!(principal(2).common_name(), Some("bob"));
    // Each connection still has its own facts.
    assert_ne!(open[0].2.peer_addr(), open[1].2.peer_addr());

    // Another acceptor (say, another listener) parses its own.
    let other = MtlsAcceptor::new(setup.builder().build().unwrap());
    let mut other = MtlsListener::bind("127.0.0.1:0", other).await.unwrap();
    let client = tokio::spawn(client::connect(
        other.local_addr(),
        setup.client(Some(&alice)),
    ));
    let (_tls, info) = other.accept().await.expect("connection");
    client.await.unwrap().unwrap();
    let theirs = info.principal_unchecked().unwrap();
    assert!(!tower_mtls::Principal::ptr_eq(theirs, &principal(0)));
    assert_eq!(
        theirs.fingerprint_sha256(),
        principal(0).fingerprint_sha256()
    );
}
