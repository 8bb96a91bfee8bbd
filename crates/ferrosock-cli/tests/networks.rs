//! `ferrosock connect` on real networks: through proxies (flag and environment), over HTTP/2 to
//! Hypercorn, and reconnecting across a `ferrosock serve` restart.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use ferrosock_tests::net_peers::{Hypercorn, Microsocks, Tinyproxy};
use ferrosock_tests::TestPki;

/// The proxy variables, so that the caller's environment never leaks into a test.
const PROXY_VARS: [&str; 8] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

fn command(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferrosock"));
    command.arg("connect").args(args);
    for var in PROXY_VARS {
        command.env_remove(var);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// Runs `ferrosock connect ARGS` with `env`, feeding it `input`; returns its status, stdout and
/// stderr.
fn connect(
    args: &[&str],
    env: &[(&str, String)],
    input: &str,
) -> (std::process::ExitStatus, String, String) {
    run_with_input(command(args, env), input, Duration::from_secs(60))
}

/// `ferrosock serve` with TLS, and the port it listens on.
fn serve_tls(pki: &TestPki) -> (Server, String) {
    let (server, addr) = spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        pki.cert.to_str().unwrap(),
        "--tls-key",
        pki.key.to_str().unwrap(),
    ]);
    let port = addr.rsplit(':').next().unwrap().to_owned();
    (server, port)
}

#[test]
fn connect_through_socks5_and_through_https_proxy_from_the_environment() {
    let pki = TestPki::generate("cli-proxies");
    let ca = pki.ca.to_str().unwrap();
    let (_server, port) = serve_tls(&pki);
    let url = format!("wss://localhost:{port}/echo");
    let Some(socks) = Microsocks::start(Some(("user", "pass"))) else {
        return;
    };
    let Some(tinyproxy) = Tinyproxy::start(Some(("env", "var"))) else {
        return;
    };

    // --proxy socks5://user:pass@...
    let proxy = format!("socks5://user:pass@127.0.0.1:{}", socks.port);
    let (status, stdout, stderr) =
        connect(&[&url, "--ca", ca, "--proxy", &proxy], &[], "via socks\n");
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout, "via socks\n", "{stderr}");
    assert!(socks.log().contains(&format!(":{port}")), "{}", socks.log());

    // HTTPS_PROXY=http://... for wss://
    let env = [(
        "HTTPS_PROXY",
        format!("http://env:var@127.0.0.1:{}", tinyproxy.port),
    )];
    let (status, stdout, stderr) = connect(&[&url, "--ca", ca], &env, "via env\n");
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout, "via env\n", "{stderr}");
    let connects = |log: String| log.matches(&format!("CONNECT localhost:{port}")).count();
    assert_eq!(connects(tinyproxy.log()), 1, "{}", tinyproxy.log());

    // --no-proxy, and NO_PROXY, go direct: the proxy sees nothing more.
    let (status, stdout, _) = connect(&[&url, "--ca", ca, "--no-proxy"], &env, "direct\n");
    assert!(status.success());
    assert_eq!(stdout, "direct\n");
    let mut bypass = env.to_vec();
    bypass.push(("NO_PROXY", "example.com,localhost".to_owned()));
    let (status, stdout, _) = connect(&[&url, "--ca", ca], &bypass, "bypassed\n");
    assert!(status.success());
    assert_eq!(stdout, "bypassed\n");
    assert_eq!(connects(tinyproxy.log()), 1);

    // A 407 is one line that says so, without the credentials.
    let env = [(
        "HTTPS_PROXY",
        format!("http://env:wrong@127.0.0.1:{}", tinyproxy.port),
    )];
    let (status, stdout, stderr) = connect(&[&url, "--ca", ca], &env, "x\n");
    assert_eq!(status.code(), Some(1));
    assert_eq!(stdout, "");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("refused the tunnel"), "{stderr}");
    assert!(!stderr.contains("wrong"), "{stderr}");
}

#[test]
fn a_bad_proxy_flag_is_one_line() {
    for (args, expected) in [
        (
            vec!["ws://127.0.0.1:1/", "--proxy", "ftp://u:secret@proxy:21"],
            "unknown scheme",
        ),
        (
            vec!["ws://127.0.0.1:1/", "--proxy", "http://p:1", "--no-proxy"],
            "cannot be used with",
        ),
        (
            vec!["ws://127.0.0.1:1/", "--max-attempts", "3"],
            "--reconnect",
        ),
    ] {
        let output = command(&args, &[]).stdin(Stdio::null()).output().unwrap();
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("secret"), "{stderr}");
    }
    // A proxy variable that names no proxy fails the connection, clearly.
    let env = [("HTTP_PROXY", "gopher://proxy:70".to_owned())];
    let (status, _, stderr) = connect(&["ws://127.0.0.1:1/"], &env, "");
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("HTTP_PROXY"), "{stderr}");
}

#[test]
fn connect_http2_to_hypercorn() {
    let pki = TestPki::generate("cli-hypercorn");
    let Some(hypercorn) = Hypercorn::start(Some(&pki)) else {
        return;
    };
    let url = format!("wss://localhost:{}/x", hypercorn.port);
    let ca = pki.ca.to_str().unwrap();
    let (status, stdout, stderr) =
        connect(&[&url, "--ca", ca, "--http2"], &[], "request\nh2 echo\n");
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout, "2\nh2 echo\n", "{stderr}");
    let (status, stdout, stderr) = connect(&[&url, "--ca", ca], &[], "request\n");
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout, "1.1\n", "without --http2, HTTP/1.1");
}

/// Lines of a child's pipe, read on a thread as they come.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line that contains `text`, returning the lines seen meanwhile.
fn wait_for(lines: &mpsc::Receiver<String>, text: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(text);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(_) => panic!("no line with {text:?}; saw {seen:?}"),
        }
    }
}

struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn connect_reconnect_survives_a_serve_restart() {
    let (server, addr) = spawn(&["serve", "--listen", "127.0.0.1:0"]);
    let mut client = {
        let mut child = command(&[&format!("ws://{addr}/echo"), "--reconnect"], &[])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        Client { child, stdin }
    };
    let stdout = lines_of(client.child.stdout.take().unwrap());
    let stderr = lines_of(client.child.stderr.take().unwrap());
    let mut say = |line: &str| {
        let stdin = client.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    };
    say("before");
    wait_for(&stdout, "before");

    drop(server); // killed
    wait_for(&stderr, "reconnecting in");
    let (_server, again) = spawn(&["serve", "--listen", &addr]);
    assert_eq!(again, addr);
    wait_for(&stderr, "reconnected");
    say("after");
    wait_for(&stdout, "after");

    client.stdin = None; // end of input: connect closes and exits
    let started = Instant::now();
    let status = loop {
        if let Some(status) = client.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "connect did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}
