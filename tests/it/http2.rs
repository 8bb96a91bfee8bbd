//! WebSockets over HTTP/2 (RFC 8441) on ferrosock's `WebServer`, driven by Python's `h2`
//! package by hand (tests/interop/h2_client.py): SETTINGS, extended CONNECT through the
//! upgrade core (refusals, subprotocols, compression), many WebSockets on one connection with
//! one stalled past its stream window, RST_STREAM, bad frames, too many streams, GOAWAY after
//! the closes, Rapid Reset; over h2c (prior knowledge) and TLS (ALPN).

use std::future::IntoFuture;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};

use ferrosock::{
    ConnectionEvent, ConnectionHandler, DataType, MessageEvent, ServerHandler, ServerOptions,
    TerminateEvent, WebServer, WebServerOptions, WebSocketConnection, WebSocketServer,
};
use ferrosock_tests::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

/// Echoes (text as text, binary as binary, compressed when negotiated); refuses URLs with
/// `refuse`; counts `on_connection`; reports each connection's close code and HTTP version.
struct Echo {
    seen: AtomicUsize,
    /// The HTTP version of each request that reached `on_connection`.
    versions: std::sync::Mutex<Vec<http::Version>>,
    /// The `host` each of them showed.
    hosts: std::sync::Mutex<Vec<String>>,
    ended: mpsc::UnboundedSender<String>,
}

struct EchoConnection;

impl ServerHandler for Echo {
    type Connection = EchoConnection;

    fn on_connection(
        &self,
        _: &WebSocketServer<Self>,
        e: ConnectionEvent,
    ) -> Option<EchoConnection> {
        self.seen.fetch_add(1, Ordering::SeqCst);
        self.versions.lock().unwrap().push(e.request.http_version());
        let host = e
            .request
            .headers()
            .get("host")
            .unwrap_or("(none)")
            .to_owned();
        self.hosts.lock().unwrap().push(host);
        (!e.request.url().contains("refuse")).then_some(EchoConnection)
    }
}

impl ConnectionHandler for EchoConnection {
    type Server = Echo;

    fn on_message(&self, ws: &WebSocketConnection<Echo>, event: MessageEvent) {
        let _ = ws.send(event.data);
    }

    fn on_terminate(&self, ws: &WebSocketConnection<Echo>, event: TerminateEvent) {
        let _ = ws
            .wss()
            .handler()
            .ended
            .send(format!("terminate {}", event.code));
    }
}

struct Server {
    web: WebServer,
    wss: WebSocketServer<Echo>,
    ended: mpsc::UnboundedReceiver<String>,
    pki: Option<TestPki>,
}

async fn server(options: WebServerOptions, tls: bool) -> Server {
    let pki = tls.then(|| TestPki::generate("http2"));
    let mut options = options
        .listen("127.0.0.1:0")
        .asset("/", "text/html", "<!doctype html><title>h2</title>")
        .asset("/page.html", "text/html", PAGE);
    if let Some(pki) = &pki {
        options = options.tls(&pki.cert, &pki.key);
    }
    let web = WebServer::start(options).await.unwrap();
    let (tx, ended) = mpsc::unbounded_channel();
    let echo = Echo {
        seen: AtomicUsize::new(0),
        versions: std::sync::Mutex::new(Vec::new()),
        hosts: std::sync::Mutex::new(Vec::new()),
        ended: tx,
    };
    let wss = WebSocketServer::new(
        &web,
        echo,
        ServerOptions::default()
            .path("/echo")
            .data_type(DataType::Auto)
            .protocols(["chat", "stomp"]),
    )
    .unwrap();
    Server {
        web,
        wss,
        ended,
        pki,
    }
}

/// The page Chromium loads: a WebSocket to /echo on the page's own origin, echoing a text.
const PAGE: &str = r#"<!doctype html><title>loading</title><script>
const ws = new WebSocket(location.origin.replace(/^http/, 'ws') + '/echo', ['chat']);
ws.onopen = () => ws.send('over the same connection');
ws.onmessage = (e) => { document.title = `DONE ${e.data} (${ws.protocol}) ${ws.extensions.split(';')[0]}`; ws.close(1000); };
ws.onerror = () => { document.title = 'FAIL the WebSocket failed'; };
</script>"#;

/// The h2 client script running one scenario; its stdout lines as they come.
struct Script {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Script {
    /// Starts a scenario against `server`, or `None` when Python is not installed (outside CI).
    fn start(scenario: &str, server: &Server) -> Option<Script> {
        let python = repo_root().join(".peers/py/bin/python");
        if !peer_installed(&python, "Python (with h2)") {
            return None;
        }
        let mut command = tokio::process::Command::new(python);
        command
            .arg(repo_root().join("tests/interop/h2_client.py"))
            .arg(scenario)
            .arg(server.web.local_addr().to_string())
            .arg("--path")
            .arg("/echo");
        if let Some(pki) = &server.pki {
            command.arg("--tls").arg(&pki.ca);
        }
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("python starts");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Some(Script { child, lines })
    }

    /// The next line of output.
    async fn line(&mut self) -> String {
        within("the h2 client's next line", self.lines.next_line())
            .await
            .unwrap()
            .unwrap_or_else(|| "(end of output)".to_owned())
    }

    /// Every line until `DONE`; fails on `FAIL` or an unsuccessful exit.
    async fn rest(mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await;
            assert!(!line.starts_with("FAIL"), "{line} (after {lines:?})");
            if line == "DONE" {
                break;
            }
            assert_ne!(line, "(end of output)", "the script stopped: {lines:?}");
            lines.push(line);
        }
        let status = within("the h2 client to exit", self.child.wait())
            .await
            .unwrap();
        assert!(status.success());
        lines
    }
}

async fn run(scenario: &str, server: &Server) -> Option<Vec<String>> {
    Some(Script::start(scenario, server)?.rest().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_settings_echo_subprotocol_compression_and_files() {
    let server = server(WebServerOptions::default(), false).await;
    let Some(lines) = run("basics", &server).await else {
        return;
    };
    assert_eq!(
        lines,
        [
            "enable_connect_protocol: 1",
            "max_concurrent_streams: 128",
            "status: 200 protocol: chat deflate: True",
            "echo: hello κόσμε",
            "compressed echo: 2 5000 True",
            "close: 1000",
            "ended: True",
            "GET /: 200",
            "GET /nope: 404",
        ]
    );
    // `:authority` is the request's host, as HTTP/1.1's Host header would be.
    let authority = server.web.local_addr().to_string();
    assert_eq!(*server.wss.handler().hosts.lock().unwrap(), [authority]);
}

/// A connection that opens no stream is not kept: GOAWAY after the handshake timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_streams_gets_goaway() {
    let options = WebServerOptions::default().handshake_timeout(std::time::Duration::from_secs(1));
    let server = server(options, false).await;
    let Some(lines) = run("idle", &server).await else {
        return;
    };
    assert_eq!(lines, ["goaway: True"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_alpn_chooses_h2() {
    let server = server(WebServerOptions::default(), true).await;
    let Some(lines) = run("basics", &server).await else {
        return;
    };
    assert_eq!(lines[2], "status: 200 protocol: chat deflate: True");
    assert_eq!(lines[3], "echo: hello κόσμε");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_offering_only_http_1_1_gets_http_1_1_and_its_upgrade() {
    let server = server(WebServerOptions::default(), true).await;
    let Some(lines) = run("alpn-fallback", &server).await else {
        return;
    };
    assert_eq!(
        lines,
        ["alpn: http/1.1", "answer: HTTP/1.1 101 Switching Protocols"]
    );
    assert_eq!(
        *server.wss.handler().versions.lock().unwrap(),
        [http::Version::HTTP_11]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_bad_requests_answer_on_their_stream_only() {
    let server = server(WebServerOptions::default(), false).await;
    let Some(lines) = run("refusals", &server).await else {
        return;
    };
    assert_eq!(
        lines,
        [
            "refused by on_connection: 403",
            "no such path: 404",
            "no :protocol: 400",
            ":protocol webtransport: 400",
            "no sec-websocket-version: 426",
            "protocol not a token: 400",
            "after them: 200 still fine",
        ]
    );
    // Only the requests that passed the checks reached on_connection.
    assert_eq!(server.wss.handler().seen.load(Ordering::SeqCst), 2);
}

/// The client's stream windows are 64 KiB (65,535 bytes); the server's are 256 KiB
/// (`http2_stream_window`), its connection window 128 × 256 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_websockets_on_one_connection_and_one_stalled_past_its_window() {
    let server = server(WebServerOptions::default(), false).await;
    let Some(lines) = run("many", &server).await else {
        return;
    };
    assert_eq!(
        lines,
        [
            "others echoed while one stalls: 99",
            "stalled stream got at most its window: True",
            "stalled stream caught up: 10",
            "closes: [1000]",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rst_stream_ends_only_that_websocket_with_1006() {
    let mut server = server(WebServerOptions::default(), false).await;
    let Some(mut script) = Script::start("reset", &server) else {
        return;
    };
    assert_eq!(script.line().await, "kept: after the reset");
    assert_eq!(script.line().await, "READY");
    assert_eq!(script.rest().await, ["close: 1000"]);
    // The cut one ended with 1006, the kept one closed normally, in whichever order.
    let mut ended = Vec::new();
    for _ in 0..2 {
        ended.push(
            within("the streams' ends", server.ended.recv())
                .await
                .unwrap(),
        );
    }
    ended.sort();
    assert_eq!(ended, ["terminate 1000", "terminate 1006"]);
}

/// RFC 8441 §5: where RFC 6455 drops the TCP connection (`terminate_with_timeout(0)`), the
/// stream ends with RST_STREAM(CANCEL), not END_STREAM; the HTTP/2 connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_websocket_resets_its_stream_with_cancel() {
    let mut server = server(WebServerOptions::default(), false).await;
    let Some(mut script) = Script::start("abort", &server) else {
        return;
    };
    assert_eq!(script.line().await, "READY");
    let terminating = server.wss.terminate_with_timeout(std::time::Duration::ZERO);
    assert_eq!(
        script.rest().await,
        ["resets: ['CANCEL'] ended first: False", "then GET /: 200"]
    );
    within("the termination", terminating.into_future()).await;
    for _ in 0..2 {
        let ended = within("a connection's end", server.ended.recv()).await;
        assert_eq!(ended.as_deref(), Some("terminate 1006"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_that_is_not_websocket_frames_fails_that_stream_with_1002() {
    let server = server(WebServerOptions::default(), false).await;
    let Some(lines) = run("bad-frames", &server).await else {
        return;
    };
    assert_eq!(lines, ["bad stream close: 1002", "kept: fine"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_limit_are_refused() {
    let server = server(WebServerOptions::default().http2_max_streams(4), false).await;
    let Some(lines) = run("too-many", &server).await else {
        return;
    };
    assert_eq!(
        lines,
        [
            "max_concurrent_streams: 4",
            "one more: reset REFUSED_STREAM",
            "first: fine",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_sends_every_websocket_its_1001_then_goaway() {
    let server = server(WebServerOptions::default(), false).await;
    let Some(mut script) = Script::start("shutdown", &server) else {
        return;
    };
    assert_eq!(script.line().await, "READY");
    let stopping = tokio::spawn({
        let web = server.web.clone();
        async move { web.stop().await }
    });
    assert_eq!(
        script.rest().await,
        ["closes: [1001]", "goaway after every close: True"]
    );
    within("the web server to stop", stopping).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_cannot_run_on_connection_faster_than_the_limit() {
    let options = WebServerOptions::default()
        .http2_max_streams(16)
        .http2_websockets_per_second(1);
    let server = server(options, false).await;
    let started = std::time::Instant::now();
    let Some(lines) = run("rapid-reset", &server).await else {
        return;
    };
    let elapsed = started.elapsed();
    // "OPENED 320 REFUSED n IN s": 320 WebSockets opened and reset, 8 at a time.
    let words: Vec<&str> = lines[0].split(' ').collect();
    let (opened, refused): (usize, usize) = (words[1].parse().unwrap(), words[3].parse().unwrap());
    assert_eq!(opened, 320, "{lines:?}");
    let seen = server.wss.handler().seen.load(Ordering::SeqCst);
    // A burst of 16, then 1 per second over the time the script ran (measured on this
    // machine, however slow), whatever the back-to-back resets that followed did.
    let bound = 16 + elapsed.as_secs_f64().ceil() as usize;
    assert!(
        seen <= bound,
        "{seen} on_connection calls in {elapsed:?}: {lines:?}"
    );
    // Every open of the first part that was not refused with 429 reached on_connection (the
    // back-to-back part may add some).
    assert!(seen + refused >= opened, "{seen} + {refused} < {opened}");
    assert!(refused > 0, "{lines:?}");
    // The server still serves other connections.
    let Some(lines) = run("refusals", &server).await else {
        return;
    };
    assert_eq!(lines.last().unwrap(), "after them: 200 still fine");
}

/// Chromium loads a page over https, HTTP/2 (ALPN), and opens its WebSocket on the same
/// connection (RFC 8441): the server's request says HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_opens_its_websocket_over_the_pages_http2_connection() {
    let browser = repo_root().join(".peers/node/node_modules/playwright-core");
    if !peer_installed(&browser, "Chromium (playwright-core)") {
        return;
    }
    let server = server(WebServerOptions::default(), true).await;
    let mut command = tokio::process::Command::new("node");
    command
        .arg(repo_root().join("tests/interop/browser_page.mjs"))
        .arg(format!(
            "https://localhost:{}/page.html",
            server.web.local_addr().port()
        ))
        .arg("--ignore-certificate-errors")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let output = within_for(
        std::time::Duration::from_secs(60),
        "Chromium",
        command.output(),
    )
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "DONE over the same connection (chat) permessage-deflate\nnavigation: h2\n"
    );
    let versions = server.wss.handler().versions.lock().unwrap().clone();
    assert_eq!(versions, [http::Version::HTTP_2]);
}

/// nghttp (Debian nghttp2-client), a client nobody here wrote: the SETTINGS it sees, and
/// plain requests over h2c and over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nghttp_sees_the_settings_and_gets_pages_and_404() {
    let nghttp = std::path::Path::new("/usr/bin/nghttp");
    if !peer_installed(nghttp, "nghttp (Debian nghttp2-client)") {
        return;
    }
    for tls in [false, true] {
        let server = server(WebServerOptions::default(), tls).await;
        let scheme = if tls { "https" } else { "http" };
        let base = format!("{scheme}://127.0.0.1:{}", server.web.local_addr().port());
        for (path, status) in [("/", "200"), ("/nope", "404")] {
            let output = within(
                "nghttp",
                tokio::process::Command::new(nghttp)
                    .arg("-nv")
                    .arg(format!("{base}{path}"))
                    .kill_on_drop(true)
                    .output(),
            )
            .await
            .unwrap();
            let out = String::from_utf8_lossy(&output.stdout);
            assert!(output.status.success(), "{out}");
            assert!(
                out.contains("[SETTINGS_ENABLE_CONNECT_PROTOCOL(0x08):1]"),
                "{out}"
            );
            assert!(
                out.contains("[SETTINGS_MAX_CONCURRENT_STREAMS(0x03):128]"),
                "{out}"
            );
            assert!(
                out.contains(&format!(":status: {status}")),
                "tls {tls} {path}: {out}"
            );
        }
    }
}
