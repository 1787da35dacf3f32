//! Loopback load harness: real sockets, real mTLS, 127.0.0.1 only, every run bounded in time
//! and count.
//!
//! It compares two servers that run side by side in this process, on one thread and one
//! current-thread tokio runtime, while the load generator runs on the main thread with its own
//! current-thread runtime (the machine has two cores: one each):
//!
//! * **A, bare**: tokio-rustls with client auth on the very same `ServerConfig`, hyper-util's
//!   auto builder, the same handler; it reads nothing from the certificate.
//! * **B, tower-mtls**: `tower_mtls::hyper::serve` (MtlsAcceptor → ConnectionInfo on every
//!   request → `MtlsAuthLayer<AllowAnyVerified>`), the same handler.
//!
//! ```text
//! cargo bench --all-features --bench load                       # keepalive (default)
//! cargo bench --all-features --bench load -- handshake
//! cargo bench --all-features --bench load -- memory
//! cargo bench --all-features --bench load -- forwarded          # proxy-forwarded vs direct
//! cargo bench --all-features --bench load -- all
//! cargo bench --all-features --bench load -- callgrind          # instruction counts (or benches/callgrind.sh)
//! cargo bench --all-features --bench load -- --quick            # smoke check, a few seconds
//! options: --rounds N  --secs S  --conns N  --memory-conns N  --only bare|mtls (to profile)
//! ```
//!
//! `handshake` runs twice: with session resumption **off** on both servers (no session cache,
//! no tickets: [`Resumption::off`](tower_mtls::tls::Resumption::off) for B, the very same
//! rustls `ServerConfig` for A), then with the defaults (a session cache, two TLS 1.3 tickets
//! after every full handshake), full and resumed.
//!
//! `callgrind` counts the instructions the server process executes, whatever else the machine
//! does: each stack runs alone in a child process under `valgrind --tool=callgrind`, driven
//! from here (natively) over loopback, once with a few operations and once with more; the
//! difference divided by the extra operations is the cost of one, without start-up (the median
//! of three such measurements). Operations: a full handshake with resumption off, a full
//! handshake with the defaults, a resumed handshake (each with one HTTP/1.1 request), and a
//! keep-alive request over HTTP/1.1 and HTTP/2.
//!
//! `forwarded` compares two tower-mtls servers instead: **A** serves direct clients, **B** has
//! trusted proxies and is called by a proxy connection that forwards the client's chain in
//! RFC 9440 headers on every request (the per-connection cache hit after the first); A's
//! requests carry a header of the same size under a name nobody reads, so the ratio is the
//! cost of the forwarded path itself.
//!
//! Without `--bench` (as `cargo test --benches` runs it) it prints how to run it and exits.

#[path = "support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::{ClientConfig, HandshakeKind, ServerConfig};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower::service_fn;
use tower_mtls::authorize::Matcher;
use tower_mtls::forwarded::{ForwardedCertFormat, TrustedProxies};
use tower_mtls::tls::Resumption;
use tower_mtls::{AllowAnyVerified, MtlsAcceptor, MtlsAuthLayer, MtlsConfig, MtlsListener};

use support::{Pki, client};

/// Hard caps, whatever the options say.
const MAX_REQUESTS_PER_ROUND: u64 = 20_000_000;
const MAX_SECS_PER_ROUND: f64 = 30.0;
const MAX_MEMORY_CONNS: usize = 5_000;
const SERVER_THREAD: &str = "load-server";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stack {
    Bare,
    Mtls,
}

impl Stack {
    fn name(self) -> &'static str {
        match self {
            Stack::Bare => "A bare",
            Stack::Mtls => "B tower-mtls",
        }
    }
    fn arg(self) -> &'static str {
        match self {
            Stack::Bare => "bare",
            Stack::Mtls => "mtls",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Proto {
    H1,
    H2,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::H1 => "HTTP/1.1",
            Proto::H2 => "HTTP/2",
        }
    }
    fn alpn(self) -> &'static [u8] {
        match self {
            Proto::H1 => b"http/1.1",
            Proto::H2 => b"h2",
        }
    }
}

struct Options {
    keepalive: bool,
    handshake: bool,
    memory: bool,
    forwarded: bool,
    callgrind: bool,
    rounds: usize,
    secs: f64,
    conns: usize,
    handshake_conns: usize,
    memory_conns: usize,
    /// Run one stack only (for profiling one side with perf).
    only: Option<Stack>,
}

impl Options {
    fn parse(args: &[String]) -> Options {
        let quick = args.iter().any(|a| a == "--quick");
        let mut o = Options {
            keepalive: false,
            handshake: false,
            memory: false,
            forwarded: false,
            callgrind: false,
            rounds: if quick { 1 } else { 3 },
            secs: if quick { 0.5 } else { 2.0 },
            conns: 32,
            handshake_conns: 8,
            memory_conns: if quick { 100 } else { 1_000 },
            only: None,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut number = |name: &str| -> f64 {
                it.next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{name} needs a number"))
            };
            match arg.as_str() {
                "keepalive" => o.keepalive = true,
                "handshake" => o.handshake = true,
                "memory" => o.memory = true,
                "forwarded" => o.forwarded = true,
                "callgrind" => o.callgrind = true,
                "all" => {
                    (o.keepalive, o.handshake, o.memory, o.forwarded) = (true, true, true, true)
                }
                "--rounds" => o.rounds = number("--rounds").max(1.0) as usize,
                "--secs" => o.secs = number("--secs").clamp(0.1, MAX_SECS_PER_ROUND),
                "--conns" => o.conns = number("--conns").max(1.0) as usize,
                "--memory-conns" => {
                    o.memory_conns = (number("--memory-conns") as usize).clamp(1, MAX_MEMORY_CONNS)
                }
                "--only" => {
                    o.only = match it.next().map(String::as_str) {
                        Some("bare") => Some(Stack::Bare),
                        Some("mtls") => Some(Stack::Mtls),
                        other => panic!("--only bare|mtls, got {other:?}"),
                    }
                }
                _ => {} // --bench, --quick, filters from cargo
            }
        }
        if !(o.keepalive || o.handshake || o.memory || o.forwarded || o.callgrind) {
            o.keepalive = true;
        }
        o
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--memory-server") {
        return memory_server(&args[i + 1..]);
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("load harness: not run without --bench; use `cargo bench --bench load`");
        return;
    }
    let options = Options::parse(&args);
    let started = Instant::now();
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
    let pki = Pki::p256();
    if options.handshake {
        // One pair of servers at a time: the server CPU is read off the one server thread.
        let off = pki.builder().resumption(Resumption::off()).build();
        let off = Servers::start(off.expect("server config"));
        let rt = current_thread_runtime();
        rt.block_on(handshakes(&off, &pki, "resumption off", false, &options));
        drop(rt);
        off.stop();
    }
    if options.keepalive || options.handshake {
        let servers = Servers::start(pki.config());
        let rt = current_thread_runtime();
        if options.keepalive {
            for proto in [Proto::H1, Proto::H2] {
                rt.block_on(keepalive(&servers, &pki, proto, &options));
            }
        }
        if options.handshake {
            for resume in [false, true] {
                let label = "resumption on (defaults)";
                rt.block_on(handshakes(&servers, &pki, label, resume, &options));
            }
        }
        drop(rt);
        servers.stop();
    }
    if options.forwarded {
        let servers = Servers::start_forwarded(pki.config());
        let rt = current_thread_runtime();
        for proto in [Proto::H1, Proto::H2] {
            rt.block_on(forwarded(&servers, &pki, proto, &options));
        }
        drop(rt);
        servers.stop();
    }
    if options.memory {
        memory(&pki, &options);
    }
    if options.callgrind {
        callgrind(&pki);
    }
    println!("total {:.1} s", started.elapsed().as_secs_f64());
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime")
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

// ---------------------------------------------------------------------------------------
// The two servers

type Body = Full<Bytes>;

async fn hello(_req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

/// A: tokio-rustls + hyper-util, shaped like `tower_mtls::hyper::serve` without the crate.
async fn serve_bare(listener: TcpListener, config: Arc<ServerConfig>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((tcp, _peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        // Like MtlsListener, so that B/A compares the crate and not a socket option.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = TowerToHyperService::new(service_fn(hello));
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            let _ = watcher.watch(conn.into_owned()).await;
        });
    }
}

/// B: the crate's own server path with the layer and the simplest authorizer.
async fn serve_mtls(listener: TcpListener, config: MtlsConfig) {
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(AllowAnyVerified))
        .service_fn(hello);
    // The load generator is one client address: lift the per-address cap for the memory run.
    let listener = MtlsListener::builder(MtlsAcceptor::new(config))
        .max_connections_per_ip(MAX_MEMORY_CONNS + 100)
        .from_tcp(listener)
        .expect("listener");
    tower_mtls::hyper::serve(listener, service).await;
}

/// The CN of the forwarded bench's proxy.
const PROXY_CN: &str = "bench-proxy";

/// B of the forwarded bench: tower-mtls with trusted proxies (RFC 9440), the same layer.
async fn serve_mtls_forwarded(listener: TcpListener, config: MtlsConfig) {
    let service = ServiceBuilder::new()
        .layer(MtlsAuthLayer::new(AllowAnyVerified))
        .service_fn(hello);
    let acceptor = MtlsAcceptor::new(config).trusted_proxies(
        TrustedProxies::new(ForwardedCertFormat::Rfc9440).proxy(Matcher::common_name(PROXY_CN)),
    );
    let listener = MtlsListener::from_tcp(listener, acceptor).expect("listener");
    tower_mtls::hyper::serve(listener, service).await;
}

fn bind() -> std::net::TcpListener {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    listener.set_nonblocking(true).expect("nonblocking");
    listener
}

/// Server `stack` of the pair; `forwarded`: the pair of the forwarded bench (A direct
/// tower-mtls, B with trusted proxies).
async fn serve(stack: Stack, listener: std::net::TcpListener, config: MtlsConfig, forwarded: bool) {
    let listener = TcpListener::from_std(listener).expect("listener");
    match (stack, forwarded) {
        (Stack::Bare, false) => serve_bare(listener, config.server_config().clone()).await,
        (Stack::Bare, true) | (Stack::Mtls, false) => serve_mtls(listener, config).await,
        (Stack::Mtls, true) => serve_mtls_forwarded(listener, config).await,
    }
}

/// Both servers on one thread with a current-thread runtime, for the life of the value.
struct Servers {
    bare: SocketAddr,
    mtls: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Servers {
    fn start(config: MtlsConfig) -> Servers {
        Self::start_pair(config, false)
    }

    fn start_pair(config: MtlsConfig, forwarded: bool) -> Servers {
        let (bare, mtls) = (bind(), bind());
        let addrs = (
            bare.local_addr().expect("addr"),
            mtls.local_addr().expect("addr"),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(SERVER_THREAD.into())
            .spawn(move || {
                let rt = current_thread_runtime();
                rt.block_on(async move {
                    tokio::spawn(serve(Stack::Bare, bare, config.clone(), forwarded));
                    tokio::spawn(serve(Stack::Mtls, mtls, config, forwarded));
                    let _ = stopped.await;
                });
                // Dropping the runtime cancels the accept loops and every connection.
            })
            .expect("server thread");
        Servers {
            bare: addrs.0,
            mtls: addrs.1,
            stop,
            thread,
        }
    }

    /// The forwarded bench's pair: A = tower-mtls for direct clients (in the `bare` slot),
    /// B = tower-mtls with trusted proxies.
    fn start_forwarded(config: MtlsConfig) -> Servers {
        Self::start_pair(config, true)
    }

    fn addr(&self, stack: Stack) -> SocketAddr {
        match stack {
            Stack::Bare => self.bare,
            Stack::Mtls => self.mtls,
        }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        self.thread.join().expect("server thread");
    }
}

/// CPU time the server thread has used so far (from /proc, Linux only; zero elsewhere).
fn server_cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim() == SERVER_THREAD {
            let stat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
            let ns = stat.split_whitespace().next().and_then(|v| v.parse().ok());
            return Duration::from_nanos(ns.unwrap_or(0));
        }
    }
    Duration::ZERO
}

// ---------------------------------------------------------------------------------------
// Measurement

/// One round against one stack.
struct Round {
    count: u64,
    elapsed: Duration,
    server_cpu: Duration,
    latencies: Vec<Duration>,
    resumed: u64,
}

impl Round {
    fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }
    fn cpu_per_op(&self) -> Duration {
        self.server_cpu / self.count.max(1) as u32
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Runs `rounds` A/B pairs, alternating which goes first, and prints the table.
async fn ab_rounds<F, Fut>(
    title: &str,
    unit: &str,
    labels: [&str; 2],
    options: &Options,
    mut run: F,
) where
    F: FnMut(Stack) -> Fut,
    Fut: std::future::Future<Output = Round>,
{
    println!("\n== {title}");
    println!(
        "{:<6} {:<14} {:>12} {:>9} {:>9} {:>14}",
        "round",
        "stack",
        format!("{unit}/s"),
        "p50 µs",
        "p99 µs",
        format!("server µs/{unit}")
    );
    let mut all: [Vec<Round>; 2] = [Vec::new(), Vec::new()];
    for round in 0..options.rounds {
        let order = if round % 2 == 0 {
            [Stack::Bare, Stack::Mtls]
        } else {
            [Stack::Mtls, Stack::Bare]
        };
        for stack in order {
            if options.only.is_some_and(|only| only != stack) {
                continue;
            }
            let mut r = run(stack).await;
            r.latencies.sort();
            let resumed = if r.resumed > 0 {
                format!("  ({} resumed)", r.resumed)
            } else {
                String::new()
            };
            println!(
                "{:<6} {:<14} {:>12.0} {:>9.1} {:>9.1} {:>14.2}{resumed}",
                round + 1,
                labels[(stack == Stack::Mtls) as usize],
                r.rate(),
                us(percentile(&r.latencies, 0.5)),
                us(percentile(&r.latencies, 0.99)),
                us(r.cpu_per_op()),
            );
            all[(stack == Stack::Mtls) as usize].push(r);
        }
    }
    let [a, b] = &all;
    if a.is_empty() || b.is_empty() {
        return;
    }
    let med = |rs: &[Round], f: &dyn Fn(&Round) -> f64| median(rs.iter().map(f).collect());
    let rate_ratio = median(a.iter().zip(b).map(|(a, b)| b.rate() / a.rate()).collect());
    let cpu_ratio = median(
        a.iter()
            .zip(b)
            .map(|(a, b)| us(b.cpu_per_op()) / us(a.cpu_per_op()).max(1e-9))
            .collect(),
    );
    for (label, rs) in [(labels[0], a), (labels[1], b)] {
        println!(
            "median {:<14} {:>12.0} {:>9.1} {:>9.1} {:>14.2}",
            label,
            med(rs, &Round::rate),
            med(rs, &|r| us(percentile(&r.latencies, 0.5))),
            med(rs, &|r| us(percentile(&r.latencies, 0.99))),
            med(rs, &|r| us(r.cpu_per_op())),
        );
    }
    println!(
        "ratio B/A: {unit}/s {rate_ratio:.3}, server CPU per {unit} {cpu_ratio:.3} (median of per-round ratios)"
    );
}

/// The labels of the bare-vs-crate comparisons.
const STACKS: [&str; 2] = ["A bare", "B tower-mtls"];

enum Sender {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

impl Sender {
    async fn open(addr: SocketAddr, config: Arc<ClientConfig>, proto: Proto) -> Sender {
        let sender = match proto {
            Proto::H1 => client::http1(addr, config).await.map(Sender::H1),
            Proto::H2 => client::http2(addr, config).await.map(Sender::H2),
        };
        sender.expect("connect")
    }

    async fn get(&mut self) -> StatusCode {
        self.get_with(&http::HeaderMap::new()).await
    }

    /// `GET /` with `headers` added.
    async fn get_with(&mut self, headers: &http::HeaderMap) -> StatusCode {
        let mut request = client::get("/");
        request
            .headers_mut()
            .extend(headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        let response = match self {
            Sender::H1(s) => {
                s.ready().await.expect("ready");
                s.send_request(request).await
            }
            Sender::H2(s) => {
                s.ready().await.expect("ready");
                s.send_request(request).await
            }
        }
        .expect("response");
        let status = response.status();
        response.into_body().collect().await.expect("body");
        status
    }
}

fn check_status(status: StatusCode) {
    // B answering 401/403 would be fast and wrong: only measure served requests.
    assert_eq!(
        status,
        StatusCode::OK,
        "the load must be served, not rejected"
    );
}

/// Keep-alive: `conns` connections opened first (not timed), then closed-loop requests on
/// each for the round's time.
async fn keepalive(servers: &Servers, pki: &Pki, proto: Proto, options: &Options) {
    let config = pki.client_config(&[proto.alpn()], false);
    let title = format!(
        "keep-alive {}: {} connections, {} rounds × {:.1} s per stack",
        proto.name(),
        options.conns,
        options.rounds,
        options.secs
    );
    let headers = Arc::new(http::HeaderMap::new());
    ab_rounds(&title, "req", STACKS, options, |stack| {
        keepalive_round(
            servers.addr(stack),
            config.clone(),
            headers.clone(),
            proto,
            options,
        )
    })
    .await;
}

/// One keep-alive round: `conns` connections opened and checked first (not timed), then
/// closed-loop requests with `headers` on each for the round's time.
async fn keepalive_round(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    headers: Arc<http::HeaderMap>,
    proto: Proto,
    options: &Options,
) -> Round {
    let mut senders = Vec::with_capacity(options.conns);
    for _ in 0..options.conns {
        senders.push(Sender::open(addr, config.clone(), proto).await);
    }
    for sender in &mut senders {
        check_status(sender.get_with(&headers).await);
    }
    timed(options, senders, move |mut sender| {
        let headers = headers.clone();
        async move {
            check_status(sender.get_with(&headers).await);
            (sender, false)
        }
    })
    .await
}

/// Keep-alive, forwarded: B's connections are a trusted proxy's, each request forwarding the
/// bench client's chain (leaf + intermediate) in `Client-Cert` / `Client-Cert-Chain`; A's are
/// the client's own, each request with an unread header of the same size.
async fn forwarded(servers: &Servers, pki: &Pki, proto: Proto, options: &Options) {
    let proxy = pki
        .intermediate
        .client(PROXY_CN, &["proxies"])
        .with_intermediate(&pki.intermediate);
    let proxy_config = client::client_config(
        pki.root.der(),
        Some((proxy.chain.clone(), proxy.key())),
        &[proto.alpn()],
    );
    let direct_config = pki.client_config(&[proto.alpn()], false);
    let (forwarded_headers, padded) = support::rfc9440_headers(pki);
    let header_bytes: usize = forwarded_headers.values().map(|v| v.len()).sum();
    let headers = [Arc::new(padded), Arc::new(forwarded_headers)];
    let title = format!(
        "keep-alive {}, forwarded by a trusted proxy (RFC 9440, {} header bytes): {} connections, {} rounds × {:.1} s per stack",
        proto.name(),
        header_bytes,
        options.conns,
        options.rounds,
        options.secs
    );
    let labels = ["A direct", "B forwarded"];
    ab_rounds(&title, "req", labels, options, |stack| {
        let config = match stack {
            Stack::Bare => direct_config.clone(),
            Stack::Mtls => proxy_config.clone(),
        };
        let headers = headers[(stack == Stack::Mtls) as usize].clone();
        keepalive_round(servers.addr(stack), config, headers, proto, options)
    })
    .await;
}

/// New connections: each op is TCP connect + mTLS handshake + one HTTP/1.1 request (so the
/// server has finished its side and the client has its tickets) + close.
async fn handshakes(servers: &Servers, pki: &Pki, label: &str, resume: bool, options: &Options) {
    let title = format!(
        "{label}, {} mTLS handshakes (+1 request each): {} concurrent, {} rounds × {:.1} s per stack",
        if resume { "resumed" } else { "new full" },
        options.handshake_conns,
        options.rounds,
        options.secs
    );
    ab_rounds(&title, "conn", STACKS, options, |stack| {
        // A fresh client session cache per round, primed by one full handshake.
        let config = pki.client_config(&[b"http/1.1"], resume);
        let addr = servers.addr(stack);
        async move {
            let workers = vec![(); options.handshake_conns];
            if resume {
                one_connection(addr, config.clone()).await;
            }
            let round = timed(options, workers, move |()| {
                let config = config.clone();
                async move { ((), one_connection(addr, config).await) }
            })
            .await;
            if resume {
                assert!(
                    round.resumed * 10 >= round.count * 9,
                    "expected resumptions, got {} of {}",
                    round.resumed,
                    round.count
                );
            }
            round
        }
    })
    .await;
}

/// One connection with one request; whether the TLS session was resumed.
async fn one_connection(addr: SocketAddr, config: Arc<ClientConfig>) -> bool {
    let tls = client::connect(addr, config).await.expect("connect");
    let resumed = tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
    let (sender, conn) = http1::handshake(TokioIo::new(tls))
        .await
        .expect("http1 handshake");
    let conn = tokio::spawn(conn);
    let mut sender = Sender::H1(sender);
    check_status(sender.get().await);
    drop(sender);
    let _ = conn.await;
    resumed
}

/// Runs `op` in a closed loop on every worker until the round's time or request cap is up.
async fn timed<W, F, Fut>(options: &Options, workers: Vec<W>, op: F) -> Round
where
    W: 'static,
    F: Fn(W) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = (W, bool)> + 'static,
{
    let count = Arc::new(AtomicU64::new(0));
    let resumed = Arc::new(AtomicU64::new(0));
    let cpu_before = server_cpu();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(options.secs);
    let local = tokio::task::LocalSet::new();
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut worker| {
            let (count, resumed, op) = (count.clone(), resumed.clone(), op.clone());
            local.spawn_local(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline
                    && count.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS_PER_ROUND
                {
                    let t = Instant::now();
                    let (w, was_resumed) = op(worker).await;
                    latencies.push(t.elapsed());
                    worker = w;
                    resumed.fetch_add(was_resumed as u64, Ordering::Relaxed);
                }
                latencies
            })
        })
        .collect();
    let latencies = local
        .run_until(async {
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await.expect("worker"));
            }
            all
        })
        .await;
    let elapsed = start.elapsed();
    Round {
        count: latencies.len() as u64,
        elapsed,
        server_cpu: server_cpu().saturating_sub(cpu_before),
        latencies,
        resumed: resumed.load(Ordering::Relaxed),
    }
}

// ---------------------------------------------------------------------------------------
// Memory: RSS per idle connection, with the server in a child process

fn memory(pki: &Pki, options: &Options) {
    // Client and server each hold one descriptor per connection.
    let limit = rlimit::increase_nofile_limit(options.memory_conns as u64 * 2 + 256)
        .expect("RLIMIT_NOFILE");
    let conns = options
        .memory_conns
        .min((limit as usize).saturating_sub(256) / 2);
    let dir = std::env::temp_dir().join(format!("tower-mtls-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("server.pem"), pki.server.chain_pem()).expect("write");
    std::fs::write(dir.join("server.key"), &pki.server.key_pem).expect("write");
    std::fs::write(dir.join("ca.pem"), pki.root.pem()).expect("write");
    println!(
        "\n== memory: RSS of the server process per idle mTLS connection ({conns} connections, each after one request)"
    );
    println!(
        "{:<14} {:<9} {:>12} {:>12} {:>14}",
        "stack", "protocol", "RSS before", "RSS after", "KiB/connection"
    );
    let rt = current_thread_runtime();
    for proto in [Proto::H1, Proto::H2] {
        for stack in [Stack::Bare, Stack::Mtls] {
            let child = ChildServer::spawn(stack, &dir);
            let config = pki.client_config(&[proto.alpn()], false);
            let (before, after) = rt.block_on(async {
                // Warm up: first handshakes initialize lazies and the allocator's arenas.
                let mut open = open_idle(child.addr, config.clone(), proto, 20).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                let before = child.rss_kib();
                open.extend(open_idle(child.addr, config, proto, conns).await);
                tokio::time::sleep(Duration::from_millis(500)).await;
                let after = child.rss_kib();
                drop(open);
                (before, after)
            });
            println!(
                "{:<14} {:<9} {:>9} KiB {:>9} KiB {:>14.1}",
                stack.name(),
                proto.name(),
                before,
                after,
                (after as f64 - before as f64) / conns as f64
            );
            child.finish();
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Opens `n` connections, 16 at a time, each after one served request; bounded to 60 s.
async fn open_idle(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    proto: Proto,
    n: usize,
) -> Vec<Sender> {
    let deadline = Duration::from_secs(60);
    tokio::time::timeout(deadline, async {
        let mut open = Vec::with_capacity(n);
        while open.len() < n {
            let batch = (n - open.len()).min(16);
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..batch {
                let config = config.clone();
                set.spawn(async move {
                    let mut sender = Sender::open(addr, config, proto).await;
                    check_status(sender.get().await);
                    sender
                });
            }
            while let Some(sender) = set.join_next().await {
                open.push(sender.expect("connection"));
            }
        }
        open
    })
    .await
    .expect("opening the idle connections took over 60 s")
}

/// The server child: this same binary, re-executed with `--memory-server`.
struct ChildServer {
    child: Child,
    addr: SocketAddr,
}

impl ChildServer {
    /// The server child of `stack`; under the command in `LOAD_MEMORY_WRAPPER` if set (say
    /// `valgrind --tool=dhat`, to see what the idle connections hold).
    fn spawn(stack: Stack, dir: &std::path::Path) -> ChildServer {
        let exe = std::env::current_exe().expect("current exe");
        let wrapper = std::env::var("LOAD_MEMORY_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut command = Command::new(program);
                command.args(words).arg(exe);
                command
            }
            None => Command::new(exe),
        };
        command.arg("--memory-server").arg(stack.arg()).arg(dir);
        Self::start(command)
    }

    /// Starts `command`, a `--memory-server` child, and reads the address it prints.
    fn start(mut command: Command) -> ChildServer {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn server child");
        let stdout = child.stdout.take().expect("child stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("child address");
        let addr = line.trim().parse().expect("child prints its address");
        ChildServer { child, addr }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("child /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Closes the child's stdin, which ends it normally (callgrind writes its counts then).
    fn finish(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The child: serves one stack on 127.0.0.1 until its stdin closes (the parent ended or
/// stopped it), and never longer than five minutes. Arguments: `bare|mtls DIR [on|off]`, the
/// last one session resumption (default on: the defaults).
fn memory_server(args: &[String]) {
    let stack = match args.first().map(String::as_str) {
        Some("bare") => Stack::Bare,
        Some("mtls") => Stack::Mtls,
        other => panic!("--memory-server bare|mtls DIR [on|off], got {other:?}"),
    };
    let dir = std::path::PathBuf::from(args.get(1).expect("--memory-server needs a directory"));
    let resumption = match args.get(2).map(String::as_str) {
        None | Some("on") => Resumption::default(),
        Some("off") => Resumption::off(),
        other => panic!("resumption on|off, got {other:?}"),
    };
    let config = MtlsConfig::builder()
        .server_cert_pem_file(dir.join("server.pem"))
        .server_key_pem_file(dir.join("server.key"))
        .client_ca_pem_file(dir.join("ca.pem"))
        .resumption(resumption)
        .build()
        .expect("server config");
    let listener = bind();
    println!("{}", listener.local_addr().expect("addr"));
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    let rt = current_thread_runtime();
    rt.block_on(async {
        tokio::select! {
            () = serve(stack, listener, config, false) => {}
            () = tokio::time::sleep(Duration::from_secs(300)) => {}
        }
    });
}

// ---------------------------------------------------------------------------------------
// Callgrind: instructions per operation in the server process

/// Operations counted ([`callgrind`]).
#[derive(Clone, Copy, Debug)]
enum Op {
    /// Full handshake + one HTTP/1.1 request, resumption off on the server.
    FullOff,
    /// Full handshake + one request, the default resumption settings (tickets issued, unused).
    FullOn,
    /// Resumed handshake + one request.
    Resumed,
    /// One request on a kept-alive connection.
    KeepAlive(Proto),
}

impl Op {
    fn name(self) -> String {
        match self {
            Op::FullOff => "full handshake, resumption off".into(),
            Op::FullOn => "full handshake, resumption on".into(),
            Op::Resumed => "resumed handshake".into(),
            Op::KeepAlive(proto) => format!("keep-alive request, {}", proto.name()),
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Op::FullOff => "full-off",
            Op::FullOn => "full-on",
            Op::Resumed => "resumed",
            Op::KeepAlive(Proto::H1) => "keepalive-h1",
            Op::KeepAlive(Proto::H2) => "keepalive-h2",
        }
    }

    /// Operations in the short and the long run.
    fn counts(self) -> (u64, u64) {
        match self {
            Op::KeepAlive(_) => (200, 2_200),
            _ => (20, 120),
        }
    }
}

/// Runs every [`Op`] against each stack under callgrind and prints instructions per op.
fn callgrind(pki: &Pki) {
    if Command::new("valgrind").arg("--version").output().is_err() {
        println!("\n== callgrind: valgrind not found, skipped");
        return;
    }
    // `LOAD_CALLGRIND_DIR`: keep the callgrind outputs there, for `callgrind_annotate`.
    let keep = std::env::var_os("LOAD_CALLGRIND_DIR").map(std::path::PathBuf::from);
    let dir = keep.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("tower-mtls-callgrind-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("server.pem"), pki.server.chain_pem()).expect("write");
    std::fs::write(dir.join("server.key"), &pki.server.key_pem).expect("write");
    std::fs::write(dir.join("ca.pem"), pki.root.pem()).expect("write");
    println!("\n== callgrind: instructions executed by the server process per operation");
    println!(
        "{:<36} {:>14} {:>14} {:>8}",
        "operation", "A bare", "B tower-mtls", "B/A"
    );
    let rt = current_thread_runtime();
    let ops = [
        Op::FullOff,
        Op::FullOn,
        Op::Resumed,
        Op::KeepAlive(Proto::H1),
        Op::KeepAlive(Proto::H2),
    ];
    for op in ops {
        // The median of three measurements: keep-alive rows move by a few percent from run to
        // run (timer and date-cache work depends on elapsed time), handshakes by a fraction.
        let [a, b] = [Stack::Bare, Stack::Mtls].map(|stack| {
            let (short, long) = op.counts();
            median(
                (0..3)
                    .map(|_| {
                        let few = rt.block_on(instructions(pki, &dir, stack, op, short));
                        let more = rt.block_on(instructions(pki, &dir, stack, op, long));
                        more.saturating_sub(few) as f64 / (long - short) as f64
                    })
                    .collect(),
            )
        });
        println!("{:<36} {:>14.0} {:>14.0} {:>8.3}", op.name(), a, b, b / a);
    }
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Instructions the server child of `stack` executed in all, start-up included, for `count`
/// operations `op`.
async fn instructions(pki: &Pki, dir: &std::path::Path, stack: Stack, op: Op, count: u64) -> u64 {
    let out = dir.join(format!("{}-{}-{count}.callgrind", stack.arg(), op.slug()));
    let mut command = Command::new("valgrind");
    command
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(std::env::current_exe().expect("current exe"))
        .arg("--memory-server")
        .arg(stack.arg())
        .arg(dir)
        .arg(if matches!(op, Op::FullOff) {
            "off"
        } else {
            "on"
        })
        .stderr(Stdio::null());
    let child = ChildServer::start(command);
    let deadline = Duration::from_secs(600);
    tokio::time::timeout(deadline, drive(pki, child.addr, op, count))
        .await
        .expect("the callgrind run took over 10 minutes");
    child.finish();
    let text = std::fs::read_to_string(&out).expect("callgrind output");
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("callgrind totals")
}

/// `count` operations `op` against `addr`, one after the other.
async fn drive(pki: &Pki, addr: SocketAddr, op: Op, count: u64) {
    match op {
        Op::FullOff | Op::FullOn => {
            let config = pki.client_config(&[b"http/1.1"], false);
            for _ in 0..count {
                assert!(!one_connection(addr, config.clone()).await);
            }
        }
        Op::Resumed => {
            let config = pki.client_config(&[b"http/1.1"], true);
            one_connection(addr, config.clone()).await;
            for _ in 0..count {
                assert!(one_connection(addr, config.clone()).await, "not resumed");
            }
        }
        Op::KeepAlive(proto) => {
            let config = pki.client_config(&[proto.alpn()], false);
            let mut sender = Sender::open(addr, config, proto).await;
            for _ in 0..count {
                check_status(sender.get().await);
            }
        }
    }
}
