//! Revocation reaches connections that are already open, whatever they are doing: after a
//! reload that revokes a client, its idle connections, its long-running responses and its gRPC
//! `Watch` stream end within the revocation grace period, on every stack; other clients'
//! connections stay.

mod common;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Setup, client};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tower_mtls::tls::ClientAuth;
use tower_mtls::{AllowAnyVerified, MtlsAcceptor, MtlsAuthLayer, MtlsListener};

const GRACE: Duration = Duration::from_millis(500);
/// Far above the grace period: what "within the bound" is checked against on a busy machine.
const BOUND: Duration = Duration::from_secs(10);

/// A response body that sends a chunk every 50 ms for up to a minute.
struct Ticker {
    interval: tokio::time::Interval,
    left: u32,
}

impl http_body::Body for Ticker {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        match self.interval.poll_tick(cx) {
            Poll::Ready(_) => {
                self.left -= 1;
                Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
                    b"tick\n",
                )))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

fn ticker() -> Ticker {
    Ticker {
        interval: tokio::time::interval(Duration::from_millis(50)),
        left: 1200,
    }
}

type Boxed = http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>;

async fn streaming<B>(_req: Request<B>) -> Result<Response<Boxed>, std::convert::Infallible> {
    Ok(Response::new(ticker().boxed_unsync()))
}

fn revoking(setup: &Setup, who: &[&common::pki::Identity]) -> tower_mtls::MtlsConfig {
    setup.builder().crl_pem(setup.ca.crl(who)).build().unwrap()
}

/// Reads `body` until it ends or fails; how long that took after `since`.
async fn until_it_ends<B>(mut body: B, since: &std::sync::Mutex<Option<Instant>>) -> Duration
where
    B: http_body::Body + Unpin,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(deadline.into(), body.frame()).await {
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => break,
            Err(_) => panic!("the stream did not end within a minute"),
        }
    }
    since
        .lock()
        .unwrap()
        .map_or(Duration::ZERO, |t| t.elapsed())
}

/// A streaming response of a revoked client on `tower_mtls::hyper::serve` ends within the
/// grace period (GOAWAY does not end it: the cut does); another client's stream goes on.
#[tokio::test]
async fn a_long_running_http2_response_of_a_revoked_client_ends() {
    common::init_tracing();
    let setup = Setup::new();
    let (alice, bob) = (setup.ca.client("alice", &[]), setup.ca.client("bob", &[]));
    let acceptor =
        MtlsAcceptor::new(setup.config(ClientAuth::Required)).revoked_connection_grace(GRACE);
    let service = tower::ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(AllowAnyVerified))
        .service_fn(streaming);
    let (addr, _server) = common::start_acceptor(acceptor.clone(), service).await;

    let mut a = client::http2(addr, setup.client(Some(&alice)))
        .await
        .unwrap();
    let mut b = client::http2(addr, setup.client(Some(&bob))).await.unwrap();
    let stream_a = a.send_request(client::get("/")).await.unwrap();
    let stream_b = b.send_request(client::get("/")).await.unwrap();
    assert_eq!(stream_a.status(), StatusCode::OK);
    let (mut body_a, mut body_b) = (stream_a.into_body(), stream_b.into_body());
    body_a.frame().await.unwrap().unwrap();
    body_b.frame().await.unwrap().unwrap();

    let reloaded = std::sync::Mutex::new(None);
    let ended = until_it_ends(body_a, &reloaded);
    tokio::pin!(ended);
    // Let the stream run a little, then revoke alice.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut ended)
            .await
            .is_err(),
        "alice's stream ended before the reload"
    );
    *reloaded.lock().unwrap() = Some(Instant::now());
    acceptor.reload(revoking(&setup, &[&alice]));
    let took = ended.await;
    assert!(
        took < BOUND,
        "alice's stream ended {took:?} after the reload"
    );
    // Bob's stream still delivers.
    for _ in 0..3 {
        body_b.frame().await.unwrap().unwrap();
    }
}

/// On axum's own `serve` (the crate cannot tell it to close a connection), the revoked
/// client's connection is cut at the IO level: idle connections and running responses alike.
#[tokio::test]
async fn axums_own_serve_cuts_a_revoked_clients_connection() {
    common::init_tracing();
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let bob = setup.ca.client("bob", &[]);
    let acceptor =
        MtlsAcceptor::new(setup.config(ClientAuth::Required)).revoked_connection_grace(GRACE);
    let listener = MtlsListener::bind("127.0.0.1:0", acceptor.clone())
        .await
        .unwrap();
    let addr = listener.local_addr();
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(|| async { axum::body::Body::new(ticker()) }),
        )
        .route("/hello", axum::routing::get(|| async { "hello" }))
        .layer(MtlsAuthLayer::new(AllowAnyVerified));
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<tower_mtls::ConnectionInfo>(),
        )
        .await
    });

    let mut streaming = client::http2(addr, setup.client(Some(&alice)))
        .await
        .unwrap();
    let mut idle = client::http1(addr, setup.client_h1(Some(&alice)))
        .await
        .unwrap();
    let mut other = client::http1(addr, setup.client_h1(Some(&bob)))
        .await
        .unwrap();
    assert_eq!(
        client::status1(&mut idle, "/hello").await.unwrap(),
        StatusCode::OK
    );
    let mut body = streaming
        .send_request(client::get("/"))
        .await
        .unwrap()
        .into_body();
    body.frame().await.unwrap().unwrap();

    let reloaded = std::sync::Mutex::new(Some(Instant::now()));
    acceptor.reload(revoking(&setup, &[&alice]));
    let took = until_it_ends(body, &reloaded).await;
    assert!(took < BOUND, "the stream ended {took:?} after the reload");
    let deadline = Instant::now() + BOUND;
    while client::status1(&mut idle, "/hello").await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the idle connection is still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!streaming.is_ready() || streaming.ready().await.is_err());
    assert_eq!(
        client::status1(&mut other, "/hello").await.unwrap(),
        StatusCode::OK
    );
}

/// A gRPC `Watch` stream of a revoked admin, served by tonic's own server through
/// `tower_mtls::tonic::incoming`, ends within the bound; another client's channel still works.
#[tokio::test]
async fn a_grpc_watch_stream_of_a_revoked_client_ends() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    common::init_tracing();
    let setup = Setup::new();
    let admin = setup.ca.client("root", &["admins"]);
    let other = setup.ca.client("other", &["admins"]);
    let acceptor =
        MtlsAcceptor::new(setup.config(ClientAuth::Required)).revoked_connection_grace(GRACE);
    let listener = MtlsListener::bind("127.0.0.1:0", acceptor.clone())
        .await
        .unwrap();
    let addr = listener.local_addr();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(
            "grpc.health.v1.Health",
            tonic_health::ServingStatus::Serving,
        )
        .await;
    tokio::spawn(async move {
        let _reporter = reporter;
        tonic::transport::Server::builder()
            .layer(MtlsAuthLayer::new(AllowAnyVerified))
            .add_service(health)
            .serve_with_incoming(tower_mtls::tonic::incoming(listener))
            .await
    });
    let channel = |config: Arc<rustls::ClientConfig>| async move {
        tonic::transport::Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                let config = config.clone();
                async move {
                    let tls = client::connect(addr, config).await?;
                    Ok::<_, common::client::BoxError>(TokioIo::new(tls))
                }
            }))
            .await
            .unwrap()
    };
    let mut watching = HealthClient::new(channel(setup.client(Some(&admin))).await);
    let mut others = HealthClient::new(channel(setup.client(Some(&other))).await);
    let request = || HealthCheckRequest {
        service: "grpc.health.v1.Health".into(),
    };
    let mut stream = watching.watch(request()).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);

    let reloaded = Instant::now();
    acceptor.reload(revoking(&setup, &[&admin]));
    let ended = tokio::time::timeout(BOUND, async {
        while let Ok(Some(_)) = stream.message().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the Watch stream is still open {BOUND:?} after the reload"
    );
    assert!(reloaded.elapsed() < BOUND);
    let check = others.check(request()).await.unwrap().into_inner();
    assert_eq!(check.status(), ServingStatus::Serving);
}
