//! Reconnection (`ClientOptions::reconnect`): a client survives its server's restart — Python
//! websockets killed and started again, a ferrosock web server stopped and started again with
//! HTTP/2 sockets sharing its connection — with the 4D callbacks for each connection, attempts
//! spaced by the backoff, and what is not retried left alone.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrosock::reconnect::Ending;
use ferrosock::{
    ClientHandler, ClientOptions, ErrorEvent, MessageEvent, OpenEvent, Reconnect, ReconnectEvent,
    ServerOptions, Status, TerminateEvent, WebServer, WebServerOptions, WebSocket,
};
use ferrosock_tests::*;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Records each callback with the moment it ran.
struct Timed {
    events: mpsc::UnboundedSender<(Instant, String)>,
}

struct TimedEvents(mpsc::UnboundedReceiver<(Instant, String)>);

impl TimedEvents {
    async fn next(&mut self) -> (Instant, String) {
        within("the next callback", self.0.recv())
            .await
            .expect("the socket is alive")
    }

    /// The next callback's line, which must start with `prefix`.
    async fn expect(&mut self, prefix: &str) -> (Instant, String) {
        let (at, line) = self.next().await;
        assert!(
            line.starts_with(prefix),
            "expected {prefix:?}, got {line:?}"
        );
        (at, line)
    }
}

fn timed() -> (Timed, TimedEvents) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Timed { events: tx }, TimedEvents(rx))
}

impl Timed {
    fn record(&self, line: String) {
        let _ = self.events.send((Instant::now(), line));
    }
}

impl ClientHandler for Timed {
    fn on_open(&self, ws: &WebSocket<Self>, _: OpenEvent) {
        self.record(format!("open id={} status={}", ws.id(), ws.status()));
    }
    fn on_message(&self, _: &WebSocket<Self>, event: MessageEvent) {
        self.record(format!("message {}", event.data.to_text()));
    }
    fn on_error(&self, _: &WebSocket<Self>, event: ErrorEvent) {
        self.record(format!("error {}", event.errors[0].err_code));
    }
    fn on_terminate(&self, _: &WebSocket<Self>, event: TerminateEvent) {
        self.record(format!("terminate {}", event.code));
    }
    fn on_reconnect(&self, ws: &WebSocket<Self>, event: ReconnectEvent) {
        self.record(format!(
            "reconnect attempt={} delay={}ms status={} cause={}",
            event.attempt,
            event.delay.as_millis(),
            ws.status(),
            event.cause
        ));
    }
}

fn policy() -> Reconnect {
    Reconnect::default()
        .initial_delay(Duration::from_millis(50))
        .max_delay(Duration::from_millis(400))
        .jitter(0.0)
}

#[tokio::test]
async fn a_client_survives_a_python_server_restart_with_backoff() {
    let Some(server) = PeerServer::start(Peer::Python, None, "off") else {
        return;
    };
    let port = server.port;
    let (handler, mut events) = timed();
    let options = ClientOptions::default().reconnect(policy());
    let ws = WebSocket::connect_with(&format!("ws://127.0.0.1:{port}/"), handler, options)
        .await
        .unwrap();
    let (_, opened) = events.expect("open").await;
    ws.send("before").unwrap();
    events.expect("message before").await;

    drop(server); // killed mid-stream
    events.expect("error 1006").await;
    events.expect("terminate 1006").await;
    // Attempts while nobody listens: each fails (on_error, on_terminate with 1006) and the
    // next waits twice as long, up to the maximum; at least the delay passes before each.
    let mut delays = Vec::new();
    loop {
        let (at, line) = events.expect("reconnect").await;
        assert!(line.contains("status=Connecting"), "{line}");
        let delay: u64 = line
            .split("delay=")
            .nth(1)
            .and_then(|rest| rest.split("ms").next())
            .and_then(|ms| ms.parse().ok())
            .unwrap();
        delays.push(delay);
        // Connecting while waiting (the line says so), Closed once an attempt failed: never
        // Connected, and nothing can be sent.
        assert!(ws.send("lost").unwrap_err().is_not_connected());
        let (attempted, _) = events.expect("error 1006").await;
        assert!(attempted.duration_since(at) >= Duration::from_millis(delay));
        events.expect("terminate 1006").await;
        if delays.len() == 5 {
            break;
        }
    }
    assert_eq!(delays, [50, 100, 200, 400, 400]);

    let _server = PeerServer::start_at(Peer::Python, None, "off", port).unwrap();
    // Attempts go on until one finds it listening.
    let reopened = loop {
        let (_, line) = events.next().await;
        if line.starts_with("open") {
            break line;
        }
        assert!(
            ["reconnect attempt=", "error 1006", "terminate 1006"]
                .iter()
                .any(|prefix| line.starts_with(prefix)),
            "{line}"
        );
    };
    assert_eq!(reopened, opened, "the same socket, the same id");
    assert_eq!(ws.status(), Status::Connected);
    ws.send("after").unwrap();
    events.expect("message after").await;
    ws.terminate();
    events.expect("terminate 1000").await;
    within("the end", ws.closed()).await;
    assert_eq!(ws.status(), Status::Closed);
}

/// Stops `web` and starts a web server with HTTP/2 on the same address.
async fn restart(web: WebServer) -> WebServer {
    let addr = web.local_addr();
    web.stop().await;
    WebServer::start(WebServerOptions::default().listen(addr.to_string()))
        .await
        .expect("the address is free again")
}

#[tokio::test]
async fn http2_sockets_come_back_together_on_one_new_connection() {
    let (web, _wss, _events) = probe_server(Behavior::Echo, ServerOptions::default()).await;
    let url = format!("ws://{}/echo", web.local_addr());
    // Between the new web server's start and its WebSocket server's, /echo is a 404: retried
    // here, so that an attempt in that moment does not end the socket.
    let options = ClientOptions::default()
        .http2(true)
        .reconnect(policy().retry_if(|ending| {
            Reconnect::retries(ending)
                || matches!(ending, Ending::Failed(err) if err.http_status() == Some(404))
        }));
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let (probe, mut events) = ClientProbe::new();
        let ws = WebSocket::connect_with(&url, probe, options.clone())
            .await
            .unwrap();
        events.expect(&["open status=Connected"]).await;
        sockets.push((ws, events));
    }
    // The server goes away (1001 to each) and comes back.
    let web = restart(web).await;
    let (probe, mut server) = Probe::new(Behavior::Echo);
    let wss = ferrosock::WebSocketServer::new(&web, probe, ServerOptions::default()).unwrap();
    server.expect(&["server open terminated=false"]).await;
    for (ws, events) in &mut sockets {
        events.expect_prefix("error 1001").await;
        events.expect_prefix("terminate 1001").await;
        loop {
            let line = events.next().await;
            if line.starts_with("open") {
                break;
            }
            assert!(
                line.starts_with("reconnect")
                    || line.starts_with("error")
                    || line.starts_with("terminate 1006"),
                "{line}"
            );
        }
        ws.send("back").unwrap();
        events.expect(&["message Text(back)"]).await;
    }
    let remotes: Vec<String> = wss
        .connections()
        .iter()
        .map(|c| {
            let request = &c.handler().request;
            format!("{}:{:?}", request.remote_address(), request.remote_port())
        })
        .collect();
    assert_eq!(remotes.len(), 3);
    assert!(
        remotes.iter().all(|r| r == &remotes[0]),
        "one new HTTP/2 connection for the three: {remotes:?}"
    );
    for (ws, _) in &sockets {
        ws.terminate();
        within("the end", ws.closed()).await;
    }
}

/// A server that answers every request with `answer` and counts the requests.
async fn answering(answer: &'static str) -> (std::net::SocketAddr, Arc<Mutex<usize>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(Mutex::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            *counted.lock().unwrap() += 1;
            tokio::spawn(async move {
                let _ = read_raw_head(&mut stream).await;
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (addr, count)
}

#[tokio::test]
async fn what_is_not_retried_ends_the_socket() {
    // A 403 is an answer: no reconnection.
    let (addr, count) = answering("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n").await;
    let (handler, mut events) = timed();
    let options = ClientOptions::default().reconnect(policy());
    let ws = WebSocket::with_options(&format!("ws://{addr}/"), handler, options).unwrap();
    events.expect("error 1006").await;
    events.expect("terminate 1006").await;
    within("the end", ws.closed()).await;
    assert_eq!(ws.status(), Status::Closed);
    assert!(events.0.try_recv().is_err(), "no reconnect after a 403");
    assert_eq!(*count.lock().unwrap(), 1);

    // A normal close by the server (1000): no reconnection either.
    let (web, wss, mut server) = probe_server(Behavior::Echo, ServerOptions::default()).await;
    let (handler, mut events) = timed();
    let options = ClientOptions::default().reconnect(policy());
    let ws = WebSocket::connect_with(&format!("ws://{}/echo", web.local_addr()), handler, options)
        .await
        .unwrap();
    events.expect("open").await;
    server.expect_prefix("server connection").await;
    wss.connections()[0].terminate();
    events.expect("terminate 1000").await;
    within("the end", ws.closed()).await;
    assert!(events.0.try_recv().is_err(), "no reconnect after a 1000");
}

#[tokio::test]
async fn retry_after_the_server_asks_for_and_a_limit_on_attempts() {
    let (addr, count) = answering(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    let (handler, mut events) = timed();
    let options = ClientOptions::default().reconnect(policy().max_attempts(Some(2)));
    let ws = WebSocket::with_options(&format!("ws://{addr}/"), handler, options).unwrap();
    for attempt in 1..=2 {
        events.expect("error 1006").await;
        events.expect("terminate 1006").await;
        let (_, line) = events.expect("reconnect").await;
        // The policy says 50 ms, then 100; the server said 1 s.
        assert!(
            line.starts_with(&format!("reconnect attempt={attempt} delay=1000ms")),
            "{line}"
        );
    }
    events.expect("error 1006").await;
    events.expect("terminate 1006").await;
    within("giving up", ws.closed()).await;
    assert_eq!(*count.lock().unwrap(), 3);
}

#[tokio::test]
async fn terminate_calls_off_a_reconnection() {
    let (_bound, port) = refusing_port();
    let (handler, mut events) = timed();
    let options = ClientOptions::default()
        .reconnect(Reconnect::default().initial_delay(Duration::from_secs(3600)));
    let ws = WebSocket::with_options(&format!("ws://127.0.0.1:{port}/"), handler, options).unwrap();
    events.expect("error 1006").await;
    events.expect("terminate 1006").await;
    let (_, line) = events.expect("reconnect attempt=1").await;
    assert!(line.contains("cannot connect"), "{line}");
    assert_eq!(ws.status(), Status::Connecting);
    ws.terminate();
    within("the end of the wait", ws.closed()).await;
    assert_eq!(ws.status(), Status::Closed);
    assert!(events.0.try_recv().is_err());
}

#[tokio::test]
async fn a_socket_over_its_own_stream_cannot_reconnect() {
    let (client, _server) = tokio::io::duplex(1024);
    let err = WebSocket::connect_over(
        "ws://localhost/",
        client,
        (),
        ClientOptions::default().reconnect(Reconnect::default()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ferrosock::ErrorKind::InvalidArgument);
}
