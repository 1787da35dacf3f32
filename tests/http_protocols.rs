//! Which HTTP connection serves a TLS connection in `tower_mtls::hyper`: hyper's own HTTP/1.1
//! connection when the client chose `http/1.1` in ALPN, hyper-util's auto-detection otherwise.
//! Both keep the layer, the connection's identity and HTTP upgrades; what a client speaks must
//! match what it chose.

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Setup, client};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceBuilder;
use tower_mtls::tls::ClientAuth;
use tower_mtls::{AllowAnyVerified, MtlsAuthLayer, Principal};

/// `/` answers with the client's CN; `/upgrade` switches to an echo protocol.
async fn handler(
    mut req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/upgrade" {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 5];
                if io.read_exact(&mut buf).await.is_ok() {
                    let _ = io.write_all(&buf).await;
                    let _ = io.flush().await;
                }
            }
        });
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        response
            .headers_mut()
            .insert("connection", http::HeaderValue::from_static("upgrade"));
        response
            .headers_mut()
            .insert("upgrade", http::HeaderValue::from_static("echo"));
        return Ok(response);
    }
    let cn = req
        .extensions()
        .get::<Principal>()
        .and_then(|p| p.common_name().map(str::to_owned))
        .unwrap_or_default();
    Ok(Response::new(Full::new(Bytes::from(cn))))
}

async fn server(setup: &Setup) -> std::net::SocketAddr {
    common::init_tracing();
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(AllowAnyVerified))
        .service_fn(handler);
    common::start(setup.config(ClientAuth::Required), service)
        .await
        .0
}

fn client_with_alpn(
    setup: &Setup,
    id: &common::pki::Identity,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    client::client_config(setup.ca.der(), Some((id.chain.clone(), id.key())), alpn)
}

#[tokio::test]
async fn every_alpn_choice_is_served_with_the_identity() {
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let addr = server(&setup).await;
    // http/1.1 chosen: hyper's HTTP/1.1 connection.
    let mut h1 = client::http1(addr, client_with_alpn(&setup, &alice, &[b"http/1.1"]))
        .await
        .unwrap();
    for _ in 0..3 {
        let reply = client::send1(&mut h1, client::get("/")).await.unwrap();
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "alice")
        );
    }
    // h2 chosen.
    let mut h2 = client::http2(addr, client_with_alpn(&setup, &alice, &[b"h2"]))
        .await
        .unwrap();
    let reply = client::send2(&mut h2, client::get("/")).await.unwrap();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "alice")
    );
    // No ALPN at all: told apart by the first bytes, HTTP/1.1 and HTTP/2 (prior knowledge).
    let none = client_with_alpn(&setup, &alice, &[]);
    let mut h1 = client::http1(addr, none.clone()).await.unwrap();
    let reply = client::send1(&mut h1, client::get("/")).await.unwrap();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "alice")
    );
    let mut h2 = client::http2(addr, none).await.unwrap();
    let reply = client::send2(&mut h2, client::get("/")).await.unwrap();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "alice")
    );
}

#[tokio::test]
async fn a_client_that_chose_h2_and_speaks_http1_is_still_served() {
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let addr = server(&setup).await;
    let config = client_with_alpn(&setup, &alice, &[b"h2", b"http/1.1"]);
    let tls = client::connect(addr, config).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let reply = client::send1(&mut sender, client::get("/")).await.unwrap();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "alice")
    );
}

#[tokio::test]
async fn a_client_that_chose_http1_cannot_switch_to_h2() {
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let addr = server(&setup).await;
    let tls = client::connect(addr, client_with_alpn(&setup, &alice, &[b"http/1.1"]))
        .await
        .unwrap();
    let h2 = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await;
    let served = match h2 {
        Ok((mut sender, conn)) => {
            tokio::spawn(conn);
            let request = tokio::time::timeout(
                Duration::from_secs(5),
                client::send2(&mut sender, client::get("/")),
            );
            matches!(request.await, Ok(Ok(reply)) if reply.status == StatusCode::OK)
        }
        Err(_) => false,
    };
    assert!(!served, "HTTP/2 spoken on a connection that chose http/1.1");
}

/// HTTP/1.1 upgrades (WebSocket and the like) work on both connection kinds.
#[tokio::test]
async fn upgrades_work_with_and_without_alpn() {
    let setup = Setup::new();
    let alice = setup.ca.client("alice", &[]);
    let addr = server(&setup).await;
    for alpn in [&[&b"http/1.1"[..]][..], &[]] {
        let tls = client::connect(addr, client_with_alpn(&setup, &alice, alpn))
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn.with_upgrades());
        let request = Request::get("/upgrade")
            .header("host", "localhost")
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::SWITCHING_PROTOCOLS,
            "{alpn:?}"
        );
        let upgraded = hyper::upgrade::on(response).await.unwrap();
        let mut io = TokioIo::new(upgraded);
        io.write_all(b"hello").await.unwrap();
        let mut echoed = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut echoed))
            .await
            .expect("echo within 5 s")
            .unwrap();
        assert_eq!(&echoed, b"hello", "{alpn:?}");
    }
}
