//! The example servers as real processes: the binaries cargo built for this test run.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::Setup;

/// `target/<profile>/examples/<name>`: cargo builds the examples before running tests.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Runs an example to its exit: its exit code and its stderr.
pub fn run_to_exit(name: &str, args: &[&str]) -> (i32, String) {
    let output = Command::new(example(name))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("run example");
    let code = output.status.code().unwrap_or(-1);
    (code, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// A running example server, killed on drop.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts example `name` on a free loopback port with `args`; returns once it listens.
pub fn start(name: &str, args: &[String]) -> Server {
    let mut child = Command::new(example(name))
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start example");
    let stdout = child.stdout.take().expect("stdout");
    // Owned by the guard from here on, so a panic below still kills the process.
    let mut server = Server {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.split(" listening on ").nth(1) {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the example printed its address");
    server.addr = addr.parse().expect("socket address");
    server
}

/// `--cert`, `--key` and `--client-ca` flags for `setup`, the files written into `dir`.
pub fn files(setup: &Setup, dir: &tempfile::TempDir) -> Vec<String> {
    let write = |name: &str, contents: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    };
    vec![
        "--cert".into(),
        write("server.pem", setup.server.chain_pem()),
        "--key".into(),
        write("server-key.pem", setup.server.key_pem.clone()),
        "--client-ca".into(),
        write("ca.pem", setup.ca.pem()),
    ]
}
