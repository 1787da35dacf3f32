//! Hostile-load harness: a tower-mtls server (`tower_mtls::hyper::Server`, the layer, one
//! route) in a child process, attacked from 127.0.0.2 while real clients connect from
//! 127.0.0.1, on loopback only, every scenario bounded in count and time.
//!
//! Scenarios, in both client-auth modes (`required`, `optional`):
//!
//! * **flood**: silent sockets and sockets that send half a ClientHello, from one address;
//! * **slow headers**: verified clients that send half a request header;
//! * **idle**: verified HTTP/2 connections that go idle, against `max_connections_per_ip 100`
//!   (and, in optional mode, connections without a certificate against their own cap);
//! * **churn**: connect, handshake without a certificate, close, as fast as possible.
//!
//! During each one, real clients make one request per fresh connection (TLS handshake
//! included) and the harness reports their success rate and p50/p99 latency, the server's
//! open file descriptors and RSS (largest sample, every 100 ms), and how long the server kept
//! each kind of slow client. The server prints its counters (shed per cause) afterwards.
//!
//! ```text
//! cargo bench --all-features --bench hostile                  # scaled timeouts (header 2 s, idle 3 s)
//! cargo bench --all-features --bench hostile -- --defaults    # the library's timeouts (minutes)
//! cargo bench --all-features --bench hostile -- --quick       # smoke run, small counts
//! options: --mode required|optional (one only)  --flood N (silent and half each)
//! ```
//!
//! Without `--bench` (as `cargo test --benches` runs it) it prints how to run it and exits.

#[path = "support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tower::ServiceBuilder;
use tower_mtls::hyper::{HttpTimeouts, Server};
use tower_mtls::tls::{ClientAuth, ShedCause};
use tower_mtls::{AllowAnyVerified, MtlsAcceptor, MtlsAuthLayer, MtlsConfig, MtlsListener};

use support::{Pki, client};

const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
const ATTACKER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
/// Hard caps, whatever the options say.
const MAX_FLOOD: usize = 10_000;
const MAX_SCENARIO: Duration = Duration::from_secs(180);
/// The per-address cap the idle scenario runs against.
const PER_IP: usize = 100;
/// A TLS handshake record header announcing 512 bytes, and 6 of them.
const HALF_HELLO: [u8; 11] = [
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
];

struct Options {
    modes: Vec<ClientAuth>,
    flood: usize,
    slow: usize,
    idle: usize,
    churn_secs: f64,
    header: Duration,
    idle_timeout: Duration,
}

impl Options {
    fn parse(args: &[String]) -> Options {
        let quick = args.iter().any(|a| a == "--quick");
        let defaults = args.iter().any(|a| a == "--defaults");
        let mut o = Options {
            modes: vec![ClientAuth::Required, ClientAuth::Optional],
            flood: if quick { 1_000 } else { 5_000 },
            // Within the per-address cap, so that each one is a connection the server holds.
            slow: if quick { 50 } else { PER_IP },
            idle: if quick { 150 } else { 300 },
            churn_secs: if quick { 2.0 } else { 5.0 },
            header: if defaults {
                tower_mtls::hyper::DEFAULT_HEADER_READ_TIMEOUT
            } else {
                Duration::from_secs(2)
            },
            idle_timeout: if defaults {
                tower_mtls::hyper::DEFAULT_IDLE_TIMEOUT
            } else {
                Duration::from_secs(3)
            },
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--mode" => {
                    o.modes = match it.next().map(String::as_str) {
                        Some("required") => vec![ClientAuth::Required],
                        Some("optional") => vec![ClientAuth::Optional],
                        other => panic!("--mode required|optional, got {other:?}"),
                    }
                }
                "--flood" => {
                    o.flood = it
                        .next()
                        .and_then(|v| v.parse().ok())
                        .expect("--flood needs a number")
                }
                _ => {}
            }
        }
        o.flood = o.flood.min(MAX_FLOOD / 2 * 2);
        o
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--server") {
        return server_main(&args[i + 1..]);
    }
    if !args.iter().any(|a| a == "--bench") {
        println!(
            "hostile-load harness: not run without --bench; use `cargo bench --bench hostile`"
        );
        return;
    }
    let options = Options::parse(&args);
    let started = Instant::now();
    let limit = raise_fd_limit();
    println!(
        "machine: {} cores; RLIMIT_NOFILE {limit}; attackers from {ATTACKER}, real clients from {CLIENT}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!(
        "server timeouts: ClientHello {:?} (default), handshake {:?} (default), header {:?}, idle {:?}; max_connections_per_ip {PER_IP}",
        tower_mtls::tls::DEFAULT_CLIENT_HELLO_TIMEOUT,
        tower_mtls::tls::DEFAULT_HANDSHAKE_TIMEOUT,
        options.header,
        options.idle_timeout
    );
    let pki = Pki::p256();
    let dir = std::env::temp_dir().join(format!("tower-mtls-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("server.pem"), pki.server.chain_pem()).expect("write");
    std::fs::write(dir.join("server.key"), &pki.server.key_pem).expect("write");
    std::fs::write(dir.join("ca.pem"), pki.root.pem()).expect("write");
    let attackers = multi_thread_runtime();
    for mode in options.modes.clone() {
        println!("\n== client auth {mode:?}");
        println!(
            "{:<34} {:>9} {:>8} {:>8} {:>6} {:>8}  slow clients kept (p50 / max)",
            "scenario", "real ok", "p50 ms", "p99 ms", "fds", "RSS MiB"
        );
        let mut server = ChildServer::spawn(&dir, mode, &options);
        let real = pki.client_config(&[b"http/1.1"], false);
        // Warm up allocator arenas and lazies.
        run_real_clients(server.addr, real.clone(), Duration::from_millis(300));

        // 1. flood of silent and half-ClientHello sockets
        let flood = options.flood;
        let (report, kept) = during(&server, real.clone(), || {
            attackers.block_on(flood_hellos(server.addr, flood))
        });
        report.print(&format!("flood {flood} silent + {flood} half-hello"), &kept);

        // 2. slow request headers from verified clients
        let slow_config = pki.client_config(&[b"http/1.1"], false);
        let slow = options.slow;
        let (report, kept) = during(&server, real.clone(), || {
            attackers.block_on(slow_headers(server.addr, slow_config.clone(), slow))
        });
        report.print(&format!("{slow} half-sent request headers"), &kept);

        // 3. idle verified connections against the per-address cap
        let idle_config = pki.client_config(&[b"h2"], false);
        let n = options.idle;
        let (report, kept) = during(&server, real.clone(), || {
            attackers.block_on(idle_connections(server.addr, idle_config.clone(), n))
        });
        report.print(&format!("{n} idle verified h2 (cap {PER_IP}/ip)"), &kept);

        if mode == ClientAuth::Optional {
            let anonymous = support::client::client_config(pki.root.der(), None, &[b"h2"]);
            let (report, kept) = during(&server, real.clone(), || {
                attackers.block_on(idle_connections(server.addr, anonymous.clone(), n))
            });
            report.print(&format!("{n} idle anonymous h2"), &kept);
        }

        // 4. connection churn without a certificate
        let churn_config = support::client::client_config(pki.root.der(), None, &[b"http/1.1"]);
        let secs = options.churn_secs;
        let (report, kept) = during(&server, real.clone(), || {
            attackers.block_on(churn(server.addr, churn_config.clone(), secs))
        });
        report.print("connection churn (no certificate)", &kept);

        println!("server counters: {}", server.stats());
        server.stop();
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("\ntotal {:.1} s", started.elapsed().as_secs_f64());
}

fn multi_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit (at most 65,536), for the
/// attackers' sockets; the server child inherits it.
fn raise_fd_limit() -> u64 {
    let Ok((soft, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return 0;
    };
    let want = hard.min(65_536).max(soft);
    if rlimit::setrlimit(rlimit::Resource::NOFILE, want, hard).is_ok() {
        want
    } else {
        soft
    }
}

// ---------------------------------------------------------------------------------------
// Measurements

/// How long the server kept each slow client: from its connect to the server's close.
#[derive(Default)]
struct Kept {
    kinds: Vec<(&'static str, Vec<Duration>, usize)>,
    notes: Vec<String>,
}

impl Kept {
    fn add(&mut self, kind: &'static str, kept: Vec<Duration>, still_open: usize) {
        self.kinds.push((kind, kept, still_open));
    }

    fn render(&self) -> String {
        let mut parts: Vec<String> = self
            .kinds
            .iter()
            .map(|(kind, kept, open)| {
                let mut kept = kept.clone();
                kept.sort();
                let open = if *open > 0 {
                    format!(", {open} still open")
                } else {
                    String::new()
                };
                format!(
                    "{kind} {} / {}{open}",
                    secs(percentile(&kept, 0.5)),
                    secs(kept.last().copied())
                )
            })
            .collect();
        parts.extend(self.notes.iter().cloned());
        parts.join("; ")
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied()
}

struct Report {
    ok: usize,
    total: usize,
    latencies: Vec<Duration>,
    fds: usize,
    rss_kib: u64,
}

impl Report {
    fn print(&self, scenario: &str, kept: &Kept) {
        let mut l = self.latencies.clone();
        l.sort();
        let ms =
            |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e3));
        println!(
            "{:<34} {:>9} {:>8} {:>8} {:>6} {:>8.1}  {}",
            scenario,
            format!("{}/{}", self.ok, self.total),
            ms(percentile(&l, 0.5)),
            ms(percentile(&l, 0.99)),
            self.fds,
            self.rss_kib as f64 / 1024.0,
            kept.render()
        );
    }
}

/// Runs `attack` while real clients make requests and the server is sampled.
fn during(
    server: &ChildServer,
    real: Arc<ClientConfig>,
    attack: impl FnOnce() -> Kept,
) -> (Report, Kept) {
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new((0usize, 0u64)));
    let sampler = {
        let (stop, samples, pid) = (stop.clone(), samples.clone(), server.child.id());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (fds, rss) = (fd_count(pid), rss_kib(pid));
                let mut max = samples.lock().unwrap();
                max.0 = max.0.max(fds);
                max.1 = max.1.max(rss);
                drop(max);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let clients = {
        let (stop, addr) = (stop.clone(), server.addr);
        std::thread::spawn(move || real_clients_until(addr, real, &stop))
    };
    let kept = attack();
    stop.store(true, Ordering::Relaxed);
    let results = clients.join().expect("real clients");
    sampler.join().expect("sampler");
    let (fds, rss_kib) = *samples.lock().unwrap();
    let latencies: Vec<Duration> = results.iter().filter_map(|r| *r).collect();
    (
        Report {
            ok: latencies.len(),
            total: results.len(),
            latencies,
            fds,
            rss_kib,
        },
        kept,
    )
}

/// Real clients: four loops, each a fresh verified connection from 127.0.0.1 per request,
/// until `stop` (and at most `MAX_SCENARIO`); `None` for a failure or a 10-s timeout.
fn real_clients_until(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    stop: &AtomicBool,
) -> Vec<Option<Duration>> {
    let rt = current_thread_runtime();
    let started = Instant::now();
    rt.block_on(async {
        let results = Arc::new(Mutex::new(Vec::new()));
        let spawn = |loops: &mut tokio::task::JoinSet<()>| {
            let (config, results) = (config.clone(), results.clone());
            loops.spawn(async move {
                let t = Instant::now();
                let result =
                    tokio::time::timeout(Duration::from_secs(10), one_request(addr, config))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .map(|()| t.elapsed());
                results.lock().unwrap().push(result);
            });
        };
        let mut loops = tokio::task::JoinSet::new();
        for _ in 0..4 {
            spawn(&mut loops);
        }
        // Keep four requests going until told to stop.
        while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_SCENARIO {
            if loops.join_next().await.is_some() {
                spawn(&mut loops);
            }
        }
        while loops.join_next().await.is_some() {}
        std::mem::take(&mut *results.lock().unwrap())
    })
}

fn run_real_clients(addr: SocketAddr, config: Arc<ClientConfig>, for_: Duration) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(for_);
            stop.store(true, Ordering::Relaxed);
        });
        real_clients_until(addr, config, &stop);
    });
}

async fn one_request(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<(), client::BoxError> {
    let mut sender = client::http1_from(CLIENT, addr, config).await?;
    let status = client::status1(&mut sender, "/").await?;
    if status == StatusCode::OK {
        Ok(())
    } else {
        Err(format!("status {status}").into())
    }
}

async fn tcp_from(from: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(addr).await
}

/// Waits for the server to close `io`, at most `limit`: the time it took, or `None`.
async fn kept_until_closed<IO: tokio::io::AsyncRead + Unpin>(
    io: &mut IO,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    let mut buf = [0u8; 512];
    tokio::time::timeout(limit, async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// Collects what the attack tasks returned: kept times, and how many were still open.
async fn collect(
    mut set: tokio::task::JoinSet<Option<Option<Duration>>>,
) -> (Vec<Duration>, usize, usize) {
    let (mut kept, mut open, mut failed) = (Vec::new(), 0, 0);
    while let Some(done) = set.join_next().await {
        match done.ok().flatten() {
            Some(Some(d)) => kept.push(d),
            Some(None) => open += 1,
            None => failed += 1,
        }
    }
    (kept, open, failed)
}

// ---------------------------------------------------------------------------------------
// Attacks

/// `n` silent and `n` half-ClientHello sockets from one address, opened as fast as 64
/// connectors go, each held until the server closes it.
async fn flood_hellos(addr: SocketAddr, n: usize) -> Kept {
    let connecting = Arc::new(tokio::sync::Semaphore::new(64));
    let mut silent = tokio::task::JoinSet::new();
    let mut half = tokio::task::JoinSet::new();
    let started = Instant::now();
    let connect_times = Arc::new(Mutex::new(Vec::new()));
    for i in 0..2 * n {
        let permit = connecting.clone().acquire_owned().await.expect("semaphore");
        let connect_times = connect_times.clone();
        let task = async move {
            let t = Instant::now();
            let tcp = tokio::time::timeout(Duration::from_secs(10), tcp_from(ATTACKER, addr)).await;
            drop(permit);
            let Ok(Ok(mut tcp)) = tcp else {
                return None;
            };
            connect_times.lock().unwrap().push(t.elapsed());
            // Kept from here: the server has the connection (a dropped SYN's retry is not
            // the server holding it).
            let t = Instant::now();
            if i % 2 == 1 && tcp.write_all(&HALF_HELLO).await.is_err() {
                return Some(Some(t.elapsed()));
            }
            Some(kept_until_closed(&mut tcp, t, Duration::from_secs(60)).await)
        };
        if i % 2 == 0 {
            silent.spawn(task);
        } else {
            half.spawn(task);
        }
    }
    let opened = started.elapsed();
    let (silent_kept, silent_open, silent_failed) = collect(silent).await;
    let (half_kept, half_open, half_failed) = collect(half).await;
    let mut kept = Kept::default();
    kept.add("silent", silent_kept, silent_open);
    kept.add("half-hello", half_kept, half_open);
    let mut connects = connect_times.lock().unwrap().clone();
    connects.sort();
    kept.notes.push(format!(
        "{} sockets opened in {:.2} s, TCP connect p99 {:.1} ms, {} connects failed",
        2 * n,
        opened.as_secs_f64(),
        percentile(&connects, 0.99).map_or(0.0, |d| d.as_secs_f64() * 1e3),
        silent_failed + half_failed
    ));
    kept
}

/// `n` verified HTTP/1.1 connections that send half a request header, then wait.
async fn slow_headers(addr: SocketAddr, config: Arc<ClientConfig>, n: usize) -> Kept {
    let connecting = Arc::new(tokio::sync::Semaphore::new(16));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let permit = connecting.clone().acquire_owned().await.expect("semaphore");
        let config = config.clone();
        set.spawn(async move {
            let tls = client::connect_from(ATTACKER, addr, config).await;
            drop(permit);
            let mut tls = tls.ok()?;
            let t = Instant::now();
            tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nx-slow: ")
                .await
                .ok()?;
            Some(kept_until_closed(&mut tls, t, Duration::from_secs(120)).await)
        });
    }
    let (kept_times, open, failed) = collect(set).await;
    let mut kept = Kept::default();
    kept.add("half header", kept_times, open);
    if failed > 0 {
        kept.notes.push(format!("{failed} could not connect"));
    }
    kept
}

/// `n` HTTP/2 connections from one address, each after one request, then idle: how many the
/// server keeps, and for how long.
async fn idle_connections(addr: SocketAddr, config: Arc<ClientConfig>, n: usize) -> Kept {
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..n {
        let connected = async {
            let mut h2 = client::http2_from(ATTACKER, addr, config.clone()).await?;
            client::send2(&mut h2, client::get("/")).await?;
            Ok::<_, client::BoxError>(h2)
        };
        match tokio::time::timeout(Duration::from_secs(10), connected).await {
            Ok(Ok(h2)) => open.push((Instant::now(), h2)),
            _ => refused += 1,
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = open.iter().filter(|(_, h2)| !h2.is_closed()).count();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut kept_times = Vec::new();
    while !open.is_empty() && Instant::now() < deadline {
        open.retain(|(since, h2)| {
            if h2.is_closed() {
                kept_times.push(since.elapsed());
                false
            } else {
                true
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut kept = Kept::default();
    kept.add("idle", kept_times, open.len());
    kept.notes.push(format!(
        "{held} of {n} held open after the cap, {refused} refused"
    ));
    kept
}

/// 32 loops from one address: connect, TLS handshake without a certificate, close, for `secs`.
async fn churn(addr: SocketAddr, config: Arc<ClientConfig>, secs: f64) -> Kept {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let config = config.clone();
        set.spawn(async move {
            let (mut attempts, mut handshakes) = (0u64, 0u64);
            while Instant::now() < until {
                attempts += 1;
                let done = tokio::time::timeout(
                    Duration::from_secs(5),
                    client::connect_from(ATTACKER, addr, config.clone()),
                )
                .await;
                if matches!(done, Ok(Ok(_))) {
                    handshakes += 1;
                }
            }
            (attempts, handshakes)
        });
    }
    let (mut attempts, mut handshakes) = (0, 0);
    while let Some(Ok((a, h))) = set.join_next().await {
        attempts += a;
        handshakes += h;
    }
    let mut kept = Kept::default();
    kept.notes.push(format!(
        "{:.0} connections/s, {handshakes} of {attempts} handshakes completed on the client side",
        attempts as f64 / secs
    ));
    kept
}

// ---------------------------------------------------------------------------------------
// The server child

struct ChildServer {
    child: Child,
    addr: SocketAddr,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl ChildServer {
    fn spawn(dir: &std::path::Path, mode: ClientAuth, options: &Options) -> ChildServer {
        let exe = std::env::current_exe().expect("current exe");
        let mode = match mode {
            ClientAuth::Optional => "optional",
            _ => "required",
        };
        let mut child = Command::new(exe)
            .arg("--server")
            .arg(dir)
            .arg(mode)
            .arg(options.header.as_millis().to_string())
            .arg(options.idle_timeout.as_millis().to_string())
            .env("RUST_LOG", "off")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn server child");
        let stdin = child.stdin.take().expect("child stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("child stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("child address");
        let addr = line.trim().parse().expect("child prints its address");
        ChildServer {
            child,
            addr,
            stdin,
            stdout,
        }
    }

    /// The server's counters, one line.
    fn stats(&mut self) -> String {
        let mut line = String::new();
        if writeln!(self.stdin, "stats").is_ok() {
            let _ = self.stdout.read_line(&mut line);
        }
        line.trim().to_owned()
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The child: serves on 127.0.0.1 until its stdin closes, and never longer than 15 minutes;
/// answers `stats` on stdin with one line of counters.
fn server_main(args: &[String]) {
    let dir = std::path::PathBuf::from(&args[0]);
    let mode = match args.get(1).map(String::as_str) {
        Some("optional") => ClientAuth::Optional,
        _ => ClientAuth::Required,
    };
    let ms = |i: usize| {
        Duration::from_millis(args.get(i).and_then(|v| v.parse().ok()).unwrap_or(30_000))
    };
    let timeouts = HttpTimeouts::default()
        .header_read_timeout(ms(2))
        .idle_timeout(ms(3));
    let config = MtlsConfig::builder()
        .server_cert_pem_file(dir.join("server.pem"))
        .server_key_pem_file(dir.join("server.key"))
        .client_ca_pem_file(dir.join("ca.pem"))
        .client_auth(mode)
        .build()
        .expect("server config");
    let acceptor = MtlsAcceptor::new(config);
    let rt = multi_thread_runtime();
    rt.block_on(async move {
        let listener = MtlsListener::builder(acceptor.clone())
            .max_connections_per_ip(PER_IP)
            .bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("{}", listener.local_addr());
        let service = ServiceBuilder::new()
            .layer(MtlsAuthLayer::new(AllowAnyVerified))
            .service_fn(|_req: Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
        tokio::spawn(Server::new(listener).timeouts(timeouts).serve(service));
        let commands = tokio::task::spawn_blocking(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if line.trim() == "stats" {
                    let s = acceptor.stats();
                    let shed: Vec<String> = ShedCause::ALL
                        .iter()
                        .filter(|c| s.shed(**c) > 0)
                        .map(|c| format!("{c}: {}", s.shed(*c)))
                        .collect();
                    let rejected: Vec<String> = s
                        .rejected
                        .iter()
                        .filter(|(_, n)| *n > 0)
                        .map(|(c, n)| format!("{c}: {n}"))
                        .collect();
                    println!(
                        "accepted {}; rejected [{}]; shed [{}]; open now {}",
                        s.accepted,
                        rejected.join(", "),
                        shed.join(", "),
                        s.open_connections
                    );
                    let _ = std::io::stdout().flush();
                }
            }
        });
        tokio::select! {
            _ = commands => {}
            () = tokio::time::sleep(Duration::from_secs(900)) => {}
        }
    });
    std::process::exit(0);
}
