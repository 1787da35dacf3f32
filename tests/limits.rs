//! Hostile load, over real TLS on loopback: the ClientHello deadline, the admission caps per
//! client address and overall (both client-auth modes), the HTTP timeouts (header read, idle,
//! maximum age with GOAWAY / `Connection: close`), a close asked for by the application, and
//! a `DecisionCache` that stays bounded. Attackers and clients use their own 127.0.0.x source
//! addresses. Timeouts are hundreds of milliseconds; every wait is bounded.

mod common;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Setup, client};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tower_mtls::authorize::DecisionCache;
use tower_mtls::hyper::{HttpTimeouts, Server};
use tower_mtls::tls::{ClientAuth, HandshakeFailure, MtlsListenerBuilder, ShedCause};
use tower_mtls::{
    AuthContext, ConnectionInfo, Decision, MtlsAcceptor, MtlsAuthLayer, MtlsListener,
};

/// The longest any wait here may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);
/// Long enough for a connection that should stay open to show it would not be closed.
const STAYS_OPEN: Duration = Duration::from_millis(150);

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// `/slow` answers after 600 ms, `/close` asks for its connection to be closed, the rest
/// answers at once.
async fn handler(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    match req.uri().path() {
        "/slow" => tokio::time::sleep(Duration::from_millis(600)).await,
        "/hang" => tokio::time::sleep(Duration::from_secs(60)).await,
        "/close" => {
            if let Some(info) = req.extensions().get::<ConnectionInfo>() {
                info.request_close();
            }
        }
        _ => {}
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

async fn serve(listener: MtlsListenerBuilder, timeouts: HttpTimeouts) -> SocketAddr {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = listener.from_tcp(tcp).unwrap();
    let addr = listener.local_addr();
    tokio::spawn(
        Server::new(listener)
            .timeouts(timeouts)
            .serve(tower::service_fn(handler)),
    );
    addr
}

/// No timeout of its own gets in the way of the one under test.
fn no_timeouts() -> HttpTimeouts {
    HttpTimeouts::default()
        .header_read_timeout(None)
        .idle_timeout(None)
        .max_connection_age(None)
}

/// A TCP connection from 127.0.0.`last` that sends `bytes`, then nothing.
async fn stalled_from(last: u8, addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip(last), 0)).unwrap();
    let mut tcp = socket.connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    tcp
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An HTTP/1.1 connection from 127.0.0.`last` that has answered one request, or the error.
async fn served_h1(
    last: u8,
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, client::BoxError> {
    let mut sender = client::http1_from(ip(last), addr, config).await?;
    let status = client::status1(&mut sender, "/").await?;
    assert_eq!(status, StatusCode::OK);
    Ok(sender)
}

#[tokio::test]
async fn silent_and_half_sent_hellos_are_cut_at_the_client_hello_deadline() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let acceptor = MtlsAcceptor::new(setup.config(ClientAuth::Required))
        .client_hello_timeout(Duration::from_millis(300))
        .handshake_timeout(Duration::from_secs(60));
    let addr = serve(MtlsListener::builder(acceptor.clone()), no_timeouts()).await;

    let mut silent = stalled_from(2, addr, b"").await;
    // A handshake record header announcing 512 bytes, and the first 6 of them.
    let mut half = stalled_from(
        2,
        addr,
        &[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ],
    )
    .await;
    let reply = client::get_once(addr, setup.client(Some(&alice)), "/")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);

    assert!(client::closed_within(&mut silent, WAIT).await);
    assert!(client::closed_within(&mut half, WAIT).await);
    until("two ClientHello timeouts", || {
        acceptor
            .stats()
            .rejected(HandshakeFailure::ClientHelloTimeout)
            == 2
    })
    .await;
    let stats = acceptor.stats();
    assert_eq!(stats.rejected(HandshakeFailure::Timeout), 0, "{stats:?}");
    assert_eq!(stats.accepted, 1);
}

#[tokio::test]
async fn a_flooding_address_sheds_its_own_handshakes_not_anothers() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let acceptor = MtlsAcceptor::new(setup.config(ClientAuth::Required))
        .client_hello_timeout(Duration::from_secs(60))
        .handshake_timeout(Duration::from_secs(60));
    let listener = MtlsListener::builder(acceptor.clone()).max_handshakes_in_flight_per_ip(3);
    let addr = serve(listener, no_timeouts()).await;

    let mut flood = Vec::new();
    for _ in 0..5 {
        flood.push(stalled_from(2, addr, b"").await);
    }
    let mut bystanders = Vec::new();
    for _ in 0..3 {
        bystanders.push(stalled_from(3, addr, b"").await);
    }
    until("two handshakes shed", || {
        let stats = acceptor.stats();
        stats.shed(ShedCause::HandshakesInFlightPerIp) == 2 && stats.handshakes_in_flight == 6
    })
    .await;
    for oldest in &mut flood[..2] {
        assert!(client::closed_within(oldest, WAIT).await);
    }
    for held in flood[2..].iter_mut().chain(&mut bystanders) {
        assert!(!client::closed_within(held, STAYS_OPEN).await);
    }
    // A real client from the flooding address still gets in, in place of its oldest.
    served_h1(2, addr, setup.client(Some(&alice)))
        .await
        .unwrap();
    assert_eq!(acceptor.stats().shed(ShedCause::HandshakesInFlightPerIp), 3);
    assert!(client::closed_within(&mut flood[2], WAIT).await);
}

#[tokio::test]
async fn open_connection_caps_overall_and_per_address_in_both_modes() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    for mode in [ClientAuth::Required, ClientAuth::Optional] {
        let acceptor = MtlsAcceptor::new(setup.config(mode));
        let listener = MtlsListener::builder(acceptor.clone())
            .max_connections_per_ip(2)
            .max_connections(3);
        let addr = serve(listener, no_timeouts()).await;
        let config = setup.client(Some(&alice));

        let first = served_h1(2, addr, config.clone()).await.unwrap();
        let _second = served_h1(2, addr, config.clone()).await.unwrap();
        assert!(
            served_h1(2, addr, config.clone()).await.is_err(),
            "{mode:?}"
        );
        let _third = served_h1(3, addr, config.clone()).await.unwrap();
        assert!(
            served_h1(4, addr, config.clone()).await.is_err(),
            "{mode:?}"
        );
        let stats = acceptor.stats();
        assert_eq!(stats.open_connections, 3, "{mode:?} {stats:?}");
        assert_eq!(stats.shed(ShedCause::ConnectionsPerIp), 1, "{stats:?}");
        assert_eq!(stats.shed(ShedCause::Connections), 1, "{stats:?}");

        // A closed connection frees its place.
        drop(first);
        until("the closed connection to be counted out", || {
            acceptor.stats().open_connections == 2
        })
        .await;
        served_h1(4, addr, config.clone()).await.unwrap();
    }
}

#[tokio::test]
async fn connections_without_a_certificate_have_lower_caps() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let acceptor = MtlsAcceptor::new(setup.config(ClientAuth::Optional));
    let listener = MtlsListener::builder(acceptor.clone())
        .max_anonymous_connections_per_ip(1)
        .max_anonymous_connections(2);
    let addr = serve(listener, no_timeouts()).await;
    let anonymous = setup.client(None);

    let _a = served_h1(2, addr, anonymous.clone()).await.unwrap();
    assert!(served_h1(2, addr, anonymous.clone()).await.is_err());
    // A verified client from the same address is not held to the anonymous caps.
    let _verified = served_h1(2, addr, setup.client(Some(&alice)))
        .await
        .unwrap();
    let _b = served_h1(3, addr, anonymous.clone()).await.unwrap();
    assert!(served_h1(4, addr, anonymous.clone()).await.is_err());
    let stats = acceptor.stats();
    assert_eq!(
        stats.shed(ShedCause::AnonymousConnectionsPerIp),
        1,
        "{stats:?}"
    );
    assert_eq!(stats.shed(ShedCause::AnonymousConnections), 1, "{stats:?}");
    assert_eq!(stats.rejected(HandshakeFailure::Shed), 2);
    assert_eq!(
        (stats.open_connections, stats.anonymous_connections),
        (3, 2)
    );
}

#[tokio::test]
async fn a_half_sent_request_header_is_closed_at_the_header_timeout() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let acceptor = MtlsAcceptor::new(setup.config(ClientAuth::Required));
    let timeouts = no_timeouts().header_read_timeout(Duration::from_millis(300));
    let addr = serve(MtlsListener::builder(acceptor), timeouts).await;

    let mut slow = client::connect(addr, setup.client_h1(Some(&alice)))
        .await
        .unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nx-slow: ")
        .await
        .unwrap();
    assert!(client::closed_within(&mut slow, WAIT).await);
    // A whole request is still served.
    let reply = client::get_once(addr, setup.client_h1(Some(&alice)), "/")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn idle_connections_are_closed_and_busy_ones_are_not() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let acceptor = MtlsAcceptor::new(setup.config(ClientAuth::Required));
    let timeouts = no_timeouts().idle_timeout(Duration::from_millis(300));
    let addr = serve(MtlsListener::builder(acceptor.clone()), timeouts).await;

    let mut h1 = client::http1(addr, setup.client_h1(Some(&alice)))
        .await
        .unwrap();
    assert_eq!(client::status1(&mut h1, "/").await.unwrap(), StatusCode::OK);
    let mut h2 = client::http2(addr, setup.client(Some(&alice)))
        .await
        .unwrap();
    assert_eq!(client::status2(&mut h2, "/").await.unwrap(), StatusCode::OK);
    // Longer than the idle timeout, but in flight all along.
    let mut busy = client::http2(addr, setup.client(Some(&alice)))
        .await
        .unwrap();
    assert_eq!(
        client::status2(&mut busy, "/slow").await.unwrap(),
        StatusCode::OK
    );

    until("the idle connections to close", || {
        h1.is_closed() && h2.is_closed()
    })
    .await;
    until("the busy one to close once idle", || busy.is_closed()).await;
    until("the server to count them out", || {
        acceptor.stats().open_connections == 0
    })
    .await;
}

#[tokio::test]
async fn max_age_sends_goaway_on_h2_and_connection_close_on_h1() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let acceptor = MtlsAcceptor::new(setup.config(ClientAuth::Required));
    let timeouts = no_timeouts().max_connection_age(Duration::from_millis(300));
    let addr = serve(MtlsListener::builder(acceptor), timeouts).await;

    // The requests in flight when the age is reached are answered: the close is graceful.
    let mut h2 = client::http2(addr, setup.client(Some(&alice)))
        .await
        .unwrap();
    let in_flight = tokio::spawn({
        let mut h2 = h2.clone();
        async move { client::status2(&mut h2, "/slow").await }
    });
    let mut h1 = client::http1(addr, setup.client_h1(Some(&alice)))
        .await
        .unwrap();
    let reply = client::send1(&mut h1, client::get("/slow")).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers.get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    assert_eq!(in_flight.await.unwrap().unwrap(), StatusCode::OK);
    until("both connections to close", || {
        h1.is_closed() && h2.is_closed()
    })
    .await;
    assert!(
        client::status2(&mut h2, "/").await.is_err(),
        "GOAWAY: no new streams"
    );
}

#[tokio::test]
async fn request_close_closes_the_connection_gracefully() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let acceptor = MtlsAcceptor::new(setup.config(ClientAuth::Required));
    let addr = serve(MtlsListener::builder(acceptor), no_timeouts()).await;

    let mut h1 = client::http1(addr, setup.client_h1(Some(&alice)))
        .await
        .unwrap();
    // The response is usually written before the serving loop sees the request (so without
    // `Connection: close`); the connection closes right after.
    assert_eq!(
        client::status1(&mut h1, "/close").await.unwrap(),
        StatusCode::OK
    );
    let mut h2 = client::http2(addr, setup.client(Some(&alice)))
        .await
        .unwrap();
    assert_eq!(
        client::status2(&mut h2, "/close").await.unwrap(),
        StatusCode::OK
    );
    until("both connections to close", || {
        h1.is_closed() && h2.is_closed()
    })
    .await;
}

#[tokio::test]
async fn a_graceful_close_that_takes_too_long_is_cut() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let acceptor = MtlsAcceptor::new(setup.config(ClientAuth::Required));
    let timeouts = no_timeouts()
        .max_connection_age(Duration::from_millis(200))
        .graceful_close_timeout(Duration::from_millis(300));
    let addr = serve(MtlsListener::builder(acceptor.clone()), timeouts).await;

    let mut h2 = client::http2(addr, setup.client(Some(&alice)))
        .await
        .unwrap();
    let hung = tokio::time::timeout(WAIT, client::status2(&mut h2, "/hang"))
        .await
        .expect("the connection was dropped after the graceful-close timeout");
    assert!(hung.is_err(), "{hung:?}");
    until("the server to count it out", || {
        acceptor.stats().open_connections == 0
    })
    .await;
}

#[tokio::test]
async fn a_decision_cache_under_unique_paths_stays_bounded_over_tls() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let store = tower_mtls::authorize_fn(move |_: &AuthContext<'_>| {
        seen.fetch_add(1, Ordering::SeqCst);
        async { Decision::allow("store") }
    });
    let cache = DecisionCache::new(store).capacity(50);
    let cache_stats = {
        let cache = cache.clone();
        move || cache.stats()
    };
    let service = tower::ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(cache))
        .service_fn(handler);
    let listener = MtlsListener::bind(
        "127.0.0.1:0",
        MtlsAcceptor::new(setup.config(ClientAuth::Required)),
    )
    .await
    .unwrap();
    let addr = listener.local_addr();
    tokio::spawn(tower_mtls::hyper::serve(listener, service));

    let mut h2 = client::http2(addr, setup.client(Some(&alice)))
        .await
        .unwrap();
    for _ in 0..3 {
        client::status2(&mut h2, "/hot").await.unwrap();
    }
    let padding = "p".repeat(2000);
    for i in 0..300 {
        let path = format!("/unique/{i}/{padding}");
        assert_eq!(
            client::status2(&mut h2, &path).await.unwrap(),
            StatusCode::OK
        );
    }
    let stats = cache_stats();
    assert!(stats.entries <= 50, "{stats:?}");
    assert!(
        stats.bytes <= 50 * tower_mtls::authorize::ENTRY_BYTES as u64,
        "{stats:?}"
    );
    let before = calls.load(Ordering::SeqCst);
    client::status2(&mut h2, "/hot").await.unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before,
        "the hot decision survived the flood"
    );
}
