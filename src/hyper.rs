//! Serving a tower service over mutual TLS with hyper-util (feature `hyper`).
//!
//! [`serve`] takes the finished connections of an [`MtlsListener`] (which runs every TLS
//! handshake in its own task, so a stalled client never holds up the accept loop), attaches
//! the connection's [`ConnectionInfo`] to every request, and serves HTTP/1.1 or HTTP/2 as the
//! client negotiated. A client that chose `http/1.1` in ALPN is served by hyper's HTTP/1.1
//! connection directly and must speak HTTP/1.1 (RFC 7301; the HTTP/2 preface is refused); one
//! that chose `h2`, or nothing, is served in whichever of the two it speaks.
//! [`serve_with_shutdown`] adds graceful shutdown; [`Server`] sets the HTTP timeouts
//! ([`HttpTimeouts`], all on by default).
//!
//! ```no_run
//! # async fn run(config: tower_mtls::MtlsConfig) -> std::io::Result<()> {
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use tower::ServiceBuilder;
//! use tower_mtls::{AllowAnyVerified, MtlsAcceptor, MtlsAuthLayer, MtlsListener, Principal};
//!
//! let service = ServiceBuilder::new()
//!     .layer(MtlsAuthLayer::new(AllowAnyVerified))
//!     .service_fn(|req: Request<hyper::body::Incoming>| async move {
//!         let who = req.extensions().get::<Principal>().map(|p| p.to_string());
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!("hello {who:?}")))))
//!     });
//! let listener = MtlsListener::bind("127.0.0.1:8443", MtlsAcceptor::new(config)).await?;
//! tower_mtls::hyper::serve(listener, service).await;
//! # Ok(())
//! # }
//! ```
//!
//! # Timeouts
//! hyper never closes an idle keep-alive connection by itself, and its header-read timeout is
//! silently off without a timer; this module sets both up, and more (see [`HttpTimeouts`] for
//! the defaults and where they come from):
//!
//! ```no_run
//! # async fn run(listener: tower_mtls::MtlsListener, service: tower::util::BoxCloneService<http::Request<hyper::body::Incoming>, http::Response<String>, std::convert::Infallible>) {
//! use std::time::Duration;
//! use tower_mtls::hyper::{HttpTimeouts, Server};
//!
//! let timeouts = HttpTimeouts::default()
//!     .header_read_timeout(Duration::from_secs(10))
//!     .idle_timeout(Duration::from_secs(30))
//!     .max_connection_age(Duration::from_secs(600));
//! Server::new(listener).timeouts(timeouts).serve(service).await;
//! # }
//! ```

use std::error::Error as StdError;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use atomic_waker::AtomicWaker;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tower_http::add_extension::AddExtension;
use tower_service::Service;
use tracing::Instrument;

use crate::audit::Escaped;
use crate::identity::connection::ConnectionInfo;
use crate::identity::lookup::remove_forwarded;
use crate::tls::accept_loop::{Accepted, Handoff};
use crate::tls::listener::MtlsListener;

/// Errors from serving one connection.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Default [`HttpTimeouts::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`HttpTimeouts::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// Default interval of [`HttpTimeouts::http2_keep_alive`].
pub const DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// Default timeout of [`HttpTimeouts::http2_keep_alive`].
pub const DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Default [`HttpTimeouts::max_connection_age`].
pub const DEFAULT_MAX_CONNECTION_AGE: Duration = Duration::from_secs(3600);
/// Default [`HttpTimeouts::graceful_close_timeout`].
pub const DEFAULT_GRACEFUL_CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP-level timeouts of [`Server`] (and of [`serve`], which uses the defaults).
///
/// | timeout | default | nginx | Envoy |
/// |---|---|---|---|
/// | [header read](Self::header_read_timeout) | 30 s | `client_header_timeout` 60 s | `request_headers_timeout` off |
/// | [idle](Self::idle_timeout) | 75 s | `keepalive_timeout` 75 s | `idle_timeout` 1 h |
/// | [HTTP/2 ping](Self::http2_keep_alive) | every 60 s, 20 s to answer | — | `connection_keepalive` off |
/// | [max connection age](Self::max_connection_age) | 1 h | `keepalive_time` 1 h | `max_connection_duration` off |
/// | [graceful close](Self::graceful_close_timeout) | 30 s | — | `drain_timeout` 5 s |
///
/// ```
/// use std::time::Duration;
/// use tower_mtls::hyper::HttpTimeouts;
///
/// let strict = HttpTimeouts::default()
///     .header_read_timeout(Duration::from_secs(5))
///     .idle_timeout(Duration::from_secs(15))
///     .http2_keep_alive(None, Duration::from_secs(20)); // no pings
/// # let _ = strict;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpTimeouts {
    header_read: Option<Duration>,
    idle: Option<Duration>,
    keep_alive_interval: Option<Duration>,
    keep_alive_timeout: Duration,
    max_age: Option<Duration>,
    graceful_close: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        HttpTimeouts {
            header_read: Some(DEFAULT_HEADER_READ_TIMEOUT),
            idle: Some(DEFAULT_IDLE_TIMEOUT),
            keep_alive_interval: Some(DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL),
            keep_alive_timeout: DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT,
            max_age: Some(DEFAULT_MAX_CONNECTION_AGE),
            graceful_close: DEFAULT_GRACEFUL_CLOSE_TIMEOUT,
        }
    }
}

impl HttpTimeouts {
    /// HTTP/1.1: a client must send a request's complete header within this time, or the
    /// connection is closed (default 30 s; `None` turns it off). hyper starts the timer
    /// whenever it waits for a request head, so it also bounds how long a kept-alive HTTP/1.1
    /// connection may sit between requests. (HTTP/2 has no per-request header timer; a
    /// connection on which no request completes is closed by the idle timeout.)
    pub fn header_read_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.header_read = timeout.into();
        self
    }

    /// A connection with no request in flight for this long is closed gracefully (default
    /// 75 s; `None` turns it off). A request is in flight from its header to the end of its
    /// response body.
    pub fn idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.idle = timeout.into();
        self
    }

    /// HTTP/2: send a PING every `interval` and close the connection if it is not answered
    /// within `timeout` (default every 60 s, 20 s to answer; `None` sends none). Finds dead
    /// peers on connections with long requests; pings do not count as activity for the idle
    /// timeout.
    pub fn http2_keep_alive(
        mut self,
        interval: impl Into<Option<Duration>>,
        timeout: Duration,
    ) -> Self {
        self.keep_alive_interval = interval.into();
        self.keep_alive_timeout = timeout;
        self
    }

    /// A connection open this long is closed gracefully (HTTP/2 GOAWAY, HTTP/1.1
    /// `Connection: close` after the response in progress), whatever it is doing: clients
    /// reconnect, and long-lived connections move to new server instances and new trust
    /// configurations (default 1 h; `None` turns it off).
    pub fn max_connection_age(mut self, age: impl Into<Option<Duration>>) -> Self {
        self.max_age = age.into();
        self
    }

    /// How long a connection asked to close (max age, idle,
    /// [`ConnectionInfo::request_close`]) may take to finish its requests in flight before it
    /// is dropped (default 30 s). Shutdown has its own drain timeout.
    pub fn graceful_close_timeout(mut self, timeout: Duration) -> Self {
        self.graceful_close = timeout;
        self
    }

    /// The HTTP builders for these timeouts, made once per server.
    fn builders(&self) -> Arc<Builders> {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(self.header_read);
        let mut auto = auto::Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read);
        auto.http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(self.keep_alive_interval)
            .keep_alive_timeout(self.keep_alive_timeout);
        Arc::new(Builders { h1, auto })
    }
}

/// The HTTP connection builders of one server, shared by its connections. A client that chose
/// `http/1.1` in ALPN is served by hyper's own HTTP/1.1 connection; the others have their first
/// bytes read to tell HTTP/2 from HTTP/1.1 (hyper-util's `auto`), which also serves clients
/// that offer `h2` and then speak HTTP/1.1 anyway.
struct Builders {
    h1: http1::Builder,
    auto: auto::Builder<TokioExecutor>,
}

/// The services [`serve`] and [`serve_connection`] take: a cloneable tower service of hyper
/// requests whose futures can move between threads. Implemented for every such service.
pub trait HttpService<B>:
    Service<
        Request<Incoming>,
        Response = Response<B>,
        Error: Into<BoxError>,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S, B> HttpService<B> for S
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
}

/// The response bodies [`serve`] can send. Implemented for every such body.
pub trait HttpBody: http_body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static {}

impl<B> HttpBody for B
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
}

/// Serves one finished TLS connection with the default [`HttpTimeouts`]: every request gets
/// `info` in its extensions, and HTTP/1.1 or HTTP/2 is spoken as the client chose.
pub async fn serve_connection<IO, S, B>(
    stream: TlsStream<IO>,
    info: ConnectionInfo,
    service: S,
) -> Result<(), BoxError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<B>,
    B: HttpBody,
{
    let timeouts = HttpTimeouts::default();
    // Never shut down: the sender lives as long as the connection.
    let (_serving, phase) = watch::channel(Phase::Serving);
    let service = AddExtension::new(service, info.clone());
    let stream = Box::new(stream);
    serve_one(
        &timeouts.builders(),
        &timeouts,
        service,
        stream,
        info,
        phase,
    )
    .await
}

/// Serves every connection of `listener` with `service` and the default [`HttpTimeouts`],
/// forever (or until the listener is closed).
pub async fn serve<S, B>(listener: MtlsListener, service: S)
where
    S: HttpService<B>,
    B: HttpBody,
{
    Server::new(listener).serve(service).await
}

/// Like [`serve`], until `shutdown` completes: then the listener stops accepting, open
/// connections are asked to finish (HTTP/2 GOAWAY, HTTP/1.1 `Connection: close` after the
/// current request), and any still open after `drain_timeout` are closed.
pub async fn serve_with_shutdown<S, B, F>(
    listener: MtlsListener,
    service: S,
    shutdown: F,
    drain_timeout: Duration,
) where
    S: HttpService<B>,
    B: HttpBody,
    F: Future<Output = ()>,
{
    Server::new(listener)
        .serve_with_shutdown(service, shutdown, drain_timeout)
        .await
}

/// [`serve`] with options: the [`HttpTimeouts`].
///
/// ```no_run
/// # async fn run(listener: tower_mtls::MtlsListener, service: tower::util::BoxCloneService<http::Request<hyper::body::Incoming>, http::Response<String>, std::convert::Infallible>) {
/// use std::time::Duration;
/// use tower_mtls::hyper::{HttpTimeouts, Server};
///
/// Server::new(listener)
///     .timeouts(HttpTimeouts::default().idle_timeout(Duration::from_secs(30)))
///     .serve_with_shutdown(service, async { let _ = tokio::signal::ctrl_c().await; }, Duration::from_secs(10))
///     .await;
/// # }
/// ```
#[derive(Debug)]
pub struct Server {
    listener: MtlsListener,
    timeouts: HttpTimeouts,
}

impl Server {
    /// Serves `listener`'s connections with the default [`HttpTimeouts`].
    pub fn new(listener: MtlsListener) -> Self {
        Server {
            listener,
            timeouts: HttpTimeouts::default(),
        }
    }

    /// Uses `timeouts`.
    pub fn timeouts(mut self, timeouts: HttpTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Serves every connection with `service`, forever (or until the listener is closed).
    pub async fn serve<S, B>(self, service: S)
    where
        S: HttpService<B>,
        B: HttpBody,
    {
        self.serve_with_shutdown(service, std::future::pending(), Duration::MAX)
            .await
    }

    /// Like [`serve`](Self::serve), until `shutdown` completes (see [`serve_with_shutdown`]).
    pub async fn serve_with_shutdown<S, B, F>(
        self,
        service: S,
        shutdown: F,
        drain_timeout: Duration,
    ) where
        S: HttpService<B>,
        B: HttpBody,
        F: Future<Output = ()>,
    {
        self.run(
            move |info: &ConnectionInfo| AddExtension::new(service.clone(), info.clone()),
            shutdown,
            drain_timeout,
        )
        .await
    }

    /// Serves every connection with the service `per_connection` makes for it (which attaches
    /// the connection's info to requests as its stack expects).
    pub(crate) async fn run<M, S, B, F>(
        self,
        per_connection: M,
        shutdown: F,
        drain_timeout: Duration,
    ) where
        M: Fn(&ConnectionInfo) -> S + Clone + Send + 'static,
        S: HttpService<B>,
        B: HttpBody,
        F: Future<Output = ()>,
    {
        let Server {
            mut listener,
            timeouts,
        } = self;
        let (phase, _) = watch::channel(Phase::Serving);
        let serving = Serving {
            builders: timeouts.builders(),
            timeouts,
            per_connection,
        };
        match listener.take_accept_loop() {
            // The usual case: each connection is served straight from its handshake's task.
            Some(accept_loop) => {
                let phase = &phase;
                let handoff = move || ServeConnection {
                    serving: serving.clone(),
                    phase: phase.subscribe(),
                    body: PhantomData,
                };
                accept_loop.run(handoff, shutdown).await;
            }
            // Somebody already took connections from this listener: keep taking them from it.
            None => {
                tokio::pin!(shutdown);
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Some(accepted) = accepted else { break };
                            let serving = serving.clone().serve(phase.subscribe(), accepted);
                            tokio::spawn(serving);
                        }
                        () = &mut shutdown => break,
                    }
                }
            }
        }
        listener.close();
        drop(listener);
        phase.send_replace(Phase::Draining);
        // Every connection (and handshake on its way to one) holds a receiver.
        if tokio::time::timeout(drain_timeout, phase.closed())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the drain timeout; closing them");
            phase.send_replace(Phase::Abort);
        }
    }
}

/// Where the server is in its life, as every connection sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Shutting down: finish what is in flight, then close.
    Draining,
    /// Past the drain timeout: close now.
    Abort,
}

/// Serves one finished connection in its handshake task (the listener's [`Handoff`] for
/// `serve`).
struct ServeConnection<M, B> {
    serving: Serving<M>,
    phase: watch::Receiver<Phase>,
    body: PhantomData<fn() -> B>,
}

impl<M, S, B> Handoff for ServeConnection<M, B>
where
    M: Fn(&ConnectionInfo) -> S + Clone + Send + 'static,
    S: HttpService<B>,
    B: HttpBody,
{
    fn deliver(self, accepted: Accepted) -> impl Future<Output = ()> + Send {
        // In a task of its own: the handshake's task ends here, and an idle connection holds
        // one task sized for serving, not also the frame of the task that ran its handshake.
        tokio::spawn(self.serving.serve(self.phase, accepted));
        std::future::ready(())
    }
}

/// What serving one connection needs.
#[derive(Clone)]
struct Serving<M> {
    builders: Arc<Builders>,
    timeouts: HttpTimeouts,
    per_connection: M,
}

impl<M> Serving<M> {
    /// The future that serves one connection. Not an `async fn`: the TLS stream (rustls's
    /// connection state, over a kilobyte) is boxed before any future holds it, so that it is
    /// stored once, in the box, rather than once in every nested future's saved arguments for
    /// as long as the connection lives.
    fn serve<S, B>(
        self,
        phase: watch::Receiver<Phase>,
        (stream, info): Accepted,
    ) -> impl Future<Output = ()> + Send + use<M, S, B>
    where
        M: Fn(&ConnectionInfo) -> S,
        S: HttpService<B>,
        B: HttpBody,
    {
        let Serving {
            builders,
            timeouts,
            per_connection,
        } = self;
        let stream = Box::new(stream);
        let service = per_connection(&info);
        let peer = info.peer_addr();
        // Everything logged while this connection is served — the handlers' events included —
        // is attributed to its peer and principal.
        let span = tracing::info_span!(
            "connection",
            peer = %peer,
            principal = info.principal_unchecked().map(|p| tracing::field::display(Escaped(p))),
        );
        async move {
            let served = serve_one(&builders, &timeouts, service, stream, info, phase)
                .instrument(span)
                .await;
            if let Err(err) = served {
                tracing::debug!(peer = %peer, error = %err, "connection ended with an error");
            }
        }
    }
}

/// Serves one connection until it ends, closing it gracefully when it is idle, too old, asked
/// to close or the server shuts down, and dropping it when that takes too long.
///
/// The timers and signals are watched by a task of their own ([`watch_connection`]), which
/// writes what to do into the connection's [`Control`] and wakes this one: the connection's
/// task then polls one atomic on each wake-up, instead of timers and shared notifications.
async fn serve_one<IO, S, B>(
    builders: &Builders,
    timeouts: &HttpTimeouts,
    service: S,
    stream: Box<TlsStream<IO>>,
    info: ConnectionInfo,
    phase: watch::Receiver<Phase>,
) -> Result<(), BoxError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<B>,
    B: HttpBody,
{
    let opened = Instant::now();
    let control = Arc::new(Control::new(opened));
    // A connection that is not a trusted proxy loses its forwarded-certificate headers here,
    // before any route sees them, whether or not a layer covers the route.
    let untrusted = info
        .forwarding()
        .filter(|forwarding| !forwarding.is_proxy())
        .map(|_| info.clone());
    let service = TowerToHyperService::new(Tracked {
        inner: service,
        control: control.clone(),
        untrusted,
    });
    let io = TokioIo::new(stream);
    let conn = match info.alpn_protocol() {
        Some(b"http/1.1") => Http::H1 {
            conn: builders.h1.serve_connection(io, service).with_upgrades(),
        },
        _ => Http::Auto {
            conn: builders.auto.serve_connection_with_upgrades(io, service),
        },
    };
    tokio::pin!(conn);
    let peer = info.peer_addr();
    let _watcher = AbortOnDrop(tokio::spawn(watch_connection(
        info,
        control.clone(),
        *timeouts,
        phase,
    )));
    let mut closing = false;
    // When to give up on a graceful close and drop the connection.
    let mut give_up: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            served = conn.as_mut() => return served,
            directive = control.next_directive() => match directive {
                Directive::Close(why) => {
                    if !closing {
                        tracing::debug!(peer = %peer, reason = why.as_str(), "closing the connection gracefully");
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    give_up = control.give_up();
                }
                Directive::Abort => return Ok(()),
            },
            () = sleep_until(give_up), if give_up.is_some() => {
                tracing::debug!(peer = %peer, "graceful close timed out; dropping the connection");
                return Ok(());
            }
        }
    }
}

pin_project! {
    /// One connection, in hyper's connection type for its protocol.
    #[project = HttpProj]
    enum Http<'a, I, S>
    where
        S: hyper::service::HttpService<Incoming>,
    {
        H1 { #[pin] conn: http1::UpgradeableConnection<I, S> },
        Auto { #[pin] conn: auto::UpgradeableConnection<'a, I, S, TokioExecutor> },
    }
}

impl<I, S, B> Http<'_, I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: 'static,
    S::Error: Into<BoxError>,
    B: HttpBody,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        match self.project() {
            HttpProj::H1 { conn } => conn.graceful_shutdown(),
            HttpProj::Auto { conn } => conn.graceful_shutdown(),
        }
    }
}

impl<I, S, B> Future for Http<'_, I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: 'static,
    S::Error: Into<BoxError>,
    B: HttpBody,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    type Output = Result<(), BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            HttpProj::H1 { conn } => conn.poll(cx).map_err(Into::into),
            HttpProj::Auto { conn } => conn.poll(cx),
        }
    }
}

/// What [`watch_connection`] tells the connection's task.
#[derive(Clone, Copy, Debug)]
enum Directive {
    /// Start a graceful close (and drop the connection at [`Control::give_up`], if set).
    Close(Close),
    /// Drop the connection now (past the drain timeout, or revoked and past its grace).
    Abort,
}

/// Watches one connection's timers (maximum age, idle) and signals (the server's phase, the
/// connection's [`ConnectionInfo::request_close`]) until the connection ends (its task aborts
/// this one when it does). One timer: the nearest of the deadlines.
async fn watch_connection(
    info: ConnectionInfo,
    control: Arc<Control>,
    timeouts: HttpTimeouts,
    mut phase: watch::Receiver<Phase>,
) {
    let opened = control.opened;
    let too_old = timeouts.max_age.map(|age| later(opened, age));
    let idle_check = timeouts.idle.map(|idle| later(opened, idle));
    let nearest = |a: Option<Instant>, b: Option<Instant>, now: Instant| match (a, b) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or_else(|| far(now)),
    };
    let timer = tokio::time::sleep_until(nearest(too_old, idle_check, opened));
    tokio::pin!(timer);
    let mut closing = false;
    let mut phase_open = true;
    loop {
        let why = tokio::select! {
            changed = phase.changed(), if phase_open => match changed.map(|()| *phase.borrow_and_update()) {
                Ok(Phase::Serving) => continue,
                Ok(Phase::Abort) => return control.tell(Directive::Abort),
                Ok(Phase::Draining) => Close::Shutdown,
                // The server is gone without a word: finish gracefully all the same.
                Err(_) => {
                    phase_open = false;
                    Close::Shutdown
                }
            },
            () = timer.as_mut(), if !closing => {
                let now = Instant::now();
                if too_old.is_some_and(|at| at <= now) {
                    Close::MaxAge
                } else {
                    let idle = timeouts.idle.unwrap_or(Duration::MAX);
                    match control.idle_until(idle, now) {
                        Some(again) => {
                            timer.as_mut().reset(nearest(too_old, Some(again), now));
                            continue;
                        }
                        None => Close::Idle,
                    }
                }
            }
            () = info.close_requested(), if !closing => Close::Requested,
            // Revoked, and the grace period is over.
            () = info.cut_requested() => return control.tell(Directive::Abort),
        };
        if !matches!(why, Close::Shutdown) {
            control.give_up_at(later(Instant::now(), timeouts.graceful_close));
        }
        control.tell(Directive::Close(why));
        closing = true;
    }
}

/// Aborts a task when dropped: the watcher ends with its connection.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why a connection is closed gracefully.
#[derive(Clone, Copy, Debug)]
#[repr(u8)]
enum Close {
    Shutdown = 0,
    MaxAge = 1,
    Idle = 2,
    Requested = 3,
}

impl Close {
    fn from_code(code: u8) -> Close {
        match code {
            1 => Close::MaxAge,
            2 => Close::Idle,
            3 => Close::Requested,
            _ => Close::Shutdown,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Close::Shutdown => "server shutting down",
            Close::MaxAge => "maximum connection age",
            Close::Idle => "idle",
            Close::Requested => "close requested",
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `start + after`, or a time too far away to matter when that overflows.
fn later(start: Instant, after: Duration) -> Instant {
    start.checked_add(after).unwrap_or_else(|| far(start))
}

/// A time too far after `start` to matter.
fn far(start: Instant) -> Instant {
    start + Duration::from_secs(100 * 365 * 24 * 3600)
}

/// What one connection's task and its watcher share: the requests in flight and when the last
/// one ended (what the idle timeout looks at, without a timer per request), and the watcher's
/// latest [`Directive`] with the waker of the connection's task.
struct Control {
    opened: Instant,
    in_flight: AtomicUsize,
    // Nanoseconds after `opened` at which the last request ended.
    last_end: AtomicU64,
    // `NONE`, `ABORT`, or `CLOSE + Close as u8`; an abort is never overwritten.
    directive: AtomicU8,
    // Nanoseconds after `opened` at which to drop a closing connection; `u64::MAX`: none.
    give_up: AtomicU64,
    // Set when `directive` changed and the connection's task has not read it yet.
    news: AtomicBool,
    waker: AtomicWaker,
}

const NONE: u8 = 0;
const ABORT: u8 = 1;
const CLOSE: u8 = 2;

impl Control {
    fn new(opened: Instant) -> Self {
        Control {
            opened,
            in_flight: AtomicUsize::new(0),
            last_end: AtomicU64::new(0),
            directive: AtomicU8::new(NONE),
            give_up: AtomicU64::new(u64::MAX),
            news: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        }
    }

    /// `None` if the connection has been idle for `idle` at `now`; otherwise when to look
    /// again.
    fn idle_until(&self, idle: Duration, now: Instant) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Some(later(now, idle));
        }
        let last_end = self.opened + Duration::from_nanos(self.last_end.load(Ordering::Acquire));
        let due = later(last_end, idle);
        (due > now).then_some(due)
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// The watcher's side: records `directive` and wakes the connection's task.
    fn tell(&self, directive: Directive) {
        let code = match directive {
            Directive::Abort => ABORT,
            Directive::Close(why) => CLOSE + why as u8,
        };
        let _ = self
            .directive
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (now != ABORT).then_some(code)
            });
        self.news.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Drop a closing connection at `at` at the latest.
    fn give_up_at(&self, at: Instant) {
        let nanos = at.saturating_duration_since(self.opened).as_nanos();
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX - 1);
        self.give_up.fetch_min(nanos, Ordering::AcqRel);
    }

    fn give_up(&self) -> Option<Instant> {
        let nanos = self.give_up.load(Ordering::Acquire);
        (nanos != u64::MAX).then(|| self.opened + Duration::from_nanos(nanos))
    }

    /// The connection's side: the next directive the watcher gives.
    fn next_directive(&self) -> impl Future<Output = Directive> + '_ {
        std::future::poll_fn(move |cx| {
            self.waker.register(cx.waker());
            if !self.news.swap(false, Ordering::AcqRel) {
                return Poll::Pending;
            }
            Poll::Ready(match self.directive.load(Ordering::Acquire) {
                ABORT => Directive::Abort,
                code => Directive::Close(Close::from_code(code.saturating_sub(CLOSE))),
            })
        })
    }
}

/// One request in flight, from its header to the end of its response body.
struct InFlight(Arc<Control>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let control = &self.0;
        let since = Instant::now().saturating_duration_since(control.opened);
        let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
        control.last_end.fetch_max(nanos, Ordering::AcqRel);
        control.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts the requests of one connection in flight (see [`Control`]).
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    control: Arc<Control>,
    // The connection, when it has trusted proxies configured and is not one.
    untrusted: Option<ConnectionInfo>,
}

impl<S, B> Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        if let Some(connection) = &self.untrusted
            && connection
                .forwarding()
                .is_some_and(|f| f.present_in(req.headers()))
        {
            let (method, path) = (req.method().clone(), req.uri().path().to_owned());
            remove_forwarded(connection, req.headers_mut(), &method, &path);
        }
        TrackedFuture {
            in_flight: Some(self.control.begin()),
            inner: self.inner.call(req),
        }
    }
}

pin_project! {
    struct TrackedFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let in_flight = this.in_flight.take();
        Poll::Ready(Ok(response.map(|inner| TrackedBody { inner, in_flight })))
    }
}

pin_project! {
    /// A response body that keeps its request in flight until it is sent or dropped.
    struct TrackedBody<B> {
        #[pin]
        inner: B,
        in_flight: Option<InFlight>,
    }
}

impl<B: http_body::Body> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if frame.is_none() {
            this.in_flight.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
