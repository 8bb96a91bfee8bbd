//! `--metrics` and `--log-format json`, checked by real components: a Prometheus server
//! scraping `serve`, `promtool` reading its output, and headless Chromium showing the status
//! page.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use ferrosock_tests::RawClient;

/// The status code and body of an HTTP response.
fn status_and_body(response: &str) -> (u16, &str) {
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, body)
}

/// `serve --metrics` on free ports: the server, its public address and its metrics listener's.
fn serve_with_metrics() -> (Server, std::net::SocketAddr, String) {
    let (server, ready, _log) = spawn_ready(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ],
        "warn",
    );
    (server, public_addr(&ready), metrics_addr(&ready))
}

/// Percent-encodes a PromQL query for a URL.
fn encoded(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server scraping `target` every second, on a free loopback port, with its
/// data in a folder of its own.
struct Prometheus {
    _server: Server,
    addr: String,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = std::env::temp_dir().join(format!(
            "ferrosock-prometheus-{}-{}",
            std::process::id(),
            target.replace(':', "-")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let dir = TempDir(dir);
        let config = dir.0.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: ferrosock\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        let server = Server(child);
        let port = ferrosock_tests::listening_port(server.id(), Duration::from_secs(60));
        Prometheus {
            _server: server,
            addr: format!("127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// The value of an instant query that returns one sample, if it does.
    fn query(&self, query: &str) -> Option<String> {
        let response = http_get(
            &self.addr,
            &format!("/api/v1/query?query={}", encoded(query)),
        );
        let (_, body) = status_and_body(&response);
        let json: serde_json::Value = serde_json::from_str(body).ok()?;
        let value = json["data"]["result"].get(0)?["value"].get(1)?;
        value.as_str().map(str::to_owned)
    }
}

/// Prometheus scrapes `serve --metrics` and finds the clients held open and the messages
/// they sent; promtool accepts what it scraped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_connections_and_messages_of_serve() {
    if !installed("prometheus") || !installed("promtool") {
        return;
    }
    let (mut server, public, metrics) = serve_with_metrics();
    let prometheus = Prometheus::start(&metrics);
    const CLIENTS: usize = 5;
    const MESSAGES: usize = 7;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut client = RawClient::connect(public, "/echo").await;
        for i in 0..MESSAGES {
            client.send_text(&format!("message {i}")).await;
            client.recv_message().await;
        }
        clients.push(client);
    }
    let queries = [
        ("sum(ferrosock_connections{path=\"/echo\"})", CLIENTS),
        (
            "sum(ferrosock_messages_received_total{path=\"/echo\"})",
            CLIENTS * MESSAGES,
        ),
        (
            "sum(ferrosock_messages_sent_total{path=\"/echo\"})",
            CLIENTS * MESSAGES,
        ),
    ];
    for (query, expected) in queries {
        let expected = expected.to_string();
        let prometheus = &prometheus;
        // Prometheus starts, then scrapes every second: the first answers may be empty.
        eventually_async(
            &format!("Prometheus answering {expected} to {query}"),
            Duration::from_secs(90),
            || prometheus.query(query).as_deref() == Some(expected.as_str()),
        )
        .await;
    }
    // Ended connections are counted by code; the output then has every family.
    let mut first = clients.remove(0);
    first.send_close(1000, "").await;
    first.recv_close().await;
    let mut body = String::new();
    eventually_async("the close counted", Duration::from_secs(30), || {
        let response = http_get(&metrics, "/metrics");
        let (status, text) = status_and_body(&response);
        assert_eq!(status, 200, "{response}");
        body = text.to_owned();
        body.contains("ferrosock_connections_closed_total{path=\"/echo\",code=\"1000\"} 1\n")
    })
    .await;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), body.as_bytes()).unwrap();
    let checked = within_secs(60, move || promtool.wait_with_output().unwrap());
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    // Anything else on the metrics listener is 404, and the public port shows no metrics.
    assert_eq!(status_and_body(&http_get(&metrics, "/nothing")).0, 404);
    assert_eq!(status_and_body(&http_get(&metrics, "/metrics/x")).0, 404);
    assert_eq!(
        status_and_body(&http_get(&public.to_string(), "/metrics")).0,
        404
    );
    drop(prometheus);
    let _ = server.kill();
}

/// The metrics listener must be asked for: without `--metrics` the ready line names none.
#[test]
fn no_metrics_listener_unless_asked() {
    let (_server, ready, _log) = spawn_ready(&["echo", "--listen", "127.0.0.1:0"], "warn");
    assert!(!ready.contains("metrics"), "{ready}");
    let output = ferrosock(&[
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "not an address",
    ]);
    assert!(!output.status.success());
    let stderr = stderr_of(&output);
    assert!(stderr.contains("--metrics not an address"), "{stderr}");
}

/// `--log-format json`: every line is one JSON object, with a line per connection opened and
/// one per connection closed that tells its traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_a_line_per_connection_with_its_traffic() {
    let (_server, ready, log) = spawn_ready(
        &["echo", "--listen", "127.0.0.1:0", "--log-format", "json"],
        "info",
    );
    let public = public_addr(&ready);
    let mut client = RawClient::connect(public, "/anything").await;
    for _ in 0..3 {
        client.send_text("hello").await;
        client.recv_message().await;
    }
    client.send_close(1000, "").await;
    client.recv_close().await;
    drop(client);
    let closed = |lines: &[String]| {
        lines
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|line| line["message"] == "connection closed")
    };
    eventually_async("the line of the close", Duration::from_secs(30), || {
        closed(&log.lock().unwrap()).is_some()
    })
    .await;
    let lines = log.lock().unwrap().clone();
    for line in &lines {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok(), "not one JSON object: {line:?}");
    }
    let opened = lines
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["message"] == "connection opened")
        .expect("a line for the opening");
    let closed = closed(&lines).unwrap();
    assert_eq!(opened["id"], closed["id"]);
    for line in [&opened, &closed] {
        assert_eq!(line["target"], "ferrosock::connection", "{line}");
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["endpoint"], "*", "{line}");
        assert!(
            line["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{line}"
        );
    }
    assert_eq!(closed["code"], 1000, "{closed}");
    assert_eq!(closed["messages_in"], 3, "{closed}");
    assert_eq!(closed["messages_out"], 3, "{closed}");
    // Three masked texts of 5 bytes (6 + 5 each) and the close frame (6 + 2).
    assert_eq!(closed["bytes_in"], 3 * 11 + 8, "{closed}");
    // Three texts (2 + 5) and the close reply (2 + 2).
    assert_eq!(closed["bytes_out"], 3 * 7 + 4, "{closed}");
    assert!(closed["duration_ms"].is_u64(), "{closed}");
}

/// The status page in headless Chromium: it loads nothing from elsewhere, goes live over its
/// WebSocket and draws the echo endpoint's traffic, driven meanwhile by a client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_charts_live_traffic_in_chromium() {
    let root = ferrosock_tests::repo_root();
    let browser = root.join(".peers/node/node_modules/playwright-core");
    if !ferrosock_tests::peer_installed(&browser, "Chromium (playwright-core)") {
        return;
    }
    let (_server, public, metrics) = serve_with_metrics();
    let mut client = RawClient::connect(public, "/echo").await;
    let traffic = tokio::spawn(async move {
        loop {
            client.send_text("tick").await;
            client.recv_message().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let screenshot = root.join("target/status-page.png");
    let mut command = tokio::process::Command::new("node");
    command
        .arg(root.join("tests/interop/status_page.mjs"))
        .arg(format!("http://{metrics}/status"))
        .arg("/echo")
        .arg("--screenshot")
        .arg(&screenshot)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let output = ferrosock_tests::within_for(Duration::from_secs(90), "Chromium", command.output())
        .await
        .unwrap();
    traffic.abort();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.starts_with("PASS connections=1 "),
        "{stdout}"
    );
}
