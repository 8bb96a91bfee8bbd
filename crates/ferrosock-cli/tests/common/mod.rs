//! What the command's test binaries share: starting `ferrosock` servers, reading /proc.
#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn ferrosock(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrosock"))
        .args(args)
        .output()
        .expect("ferrosock runs")
}

/// A server process, killed when dropped so that a failing test leaves nothing running.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Server {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// Starts `ferrosock ARGS` (a server) and returns it once it printed its address.
pub fn spawn(args: &[&str]) -> (Server, String) {
    let (server, addr, _) = spawn_logged(args);
    (server, addr)
}

/// What a server printed on stderr after its ready line, as it comes.
pub type Log = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// [`spawn`], keeping what the server prints on stderr afterwards.
pub fn spawn_logged(args: &[&str]) -> (Server, String, Log) {
    let (server, first, log) = spawn_ready(args, "warn");
    // "ferrosock serve: http://127.0.0.1:PORT/ ..." or "ferrosock echo: ws://127.0.0.1:PORT/"
    let addr = first
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_owned();
    (server, addr, log)
}

/// Starts `ferrosock ARGS` with `RUST_LOG=rust_log` and returns it with its ready line once
/// it printed it, keeping what it prints on stderr afterwards.
pub fn spawn_ready(args: &[&str], rust_log: &str) -> (Server, String, Log) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrosock"))
        .args(args)
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ferrosock starts");
    let stderr = child.stderr.take().unwrap();
    let log = Log::default();
    let first = match ready_line(stderr, Some(log.clone())) {
        Some(line) => line,
        None => {
            let _ = child.kill();
            panic!("ferrosock {args:?} printed no ready line within 30 s");
        }
    };
    (Server(child), first, log)
}

/// Reads `stderr` on a thread of its own until the server's ready line ("ferrosock serve: ..."
/// or "ferrosock echo: ..."), for at most 30 s; then keeps reading, as a terminal would, so
/// that the server never writes into a closed pipe, into `log` if given.
pub fn ready_line(stderr: std::process::ChildStderr, log: Option<Log>) -> Option<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
        let ready = lines.find(|line| line.starts_with("ferrosock "));
        let _ = tx.send(ready);
        for line in lines {
            if let Some(log) = &log {
                log.lock().unwrap().push(line);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30)).ok().flatten()
}

/// The public address in a ready line: the first after "://".
pub fn public_addr(ready: &str) -> std::net::SocketAddr {
    ready
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address in {ready:?}"))
}

/// The metrics listener's address in a ready line (`--metrics`): after "metrics http://".
pub fn metrics_addr(ready: &str) -> String {
    ready
        .split("metrics http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no metrics address in {ready:?}"))
        .to_owned()
}

/// Whether `program` runs (a peer from a Debian package); missing, the test that needs it is
/// skipped, except in CI, where it fails.
pub fn installed(program: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is missing (scripts/install-peers installs it)"
        );
        eprintln!("skipped: {program} is not installed");
    }
    found
}

pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

pub fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(started.elapsed() < limit, "did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The peak resident memory of process `pid`, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM")
}

/// A value of /proc/PID/status, in kB (VmRSS, VmHWM, ...).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The file descriptors process `pid` holds open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The threads of process `pid`.
pub fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

/// Polls `condition` every 20 ms until it holds; panics with `what` after `limit`.
pub fn eventually(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`eventually`] for async tests: waits on the runtime's timer, so that the test's other
/// tasks (and its clients answering pings) go on meanwhile.
pub async fn eventually_async(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let started = tokio::time::Instant::now();
    while !condition() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `f` on a thread of its own and returns what it returns, or panics after `secs`
/// seconds: a blocking wait (a pipe, a child) that cannot hang a test.
pub fn within_secs<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("not done within {secs} s"))
}

/// Runs `command` (a `ferrosock connect`) with `input` on its stdin until it exits, failing
/// the test after `limit`; returns its status, stdout and stderr.
pub fn run_with_input(
    mut command: Command,
    input: &str,
    limit: Duration,
) -> (std::process::ExitStatus, String, String) {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    eventually("connect to exit", limit, || {
        child.try_wait().unwrap().is_some()
    });
    let output = child.wait_with_output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status, text(&output.stdout), text(&output.stderr))
}
