//! SPEC §2–3: terminate rules, codes and reasons, abnormal ends, terminating a server and
//! stopping the web server.

use std::future::IntoFuture;
use std::time::Duration;

use ferrosock::proto::{CloseCode, OpCode};
use ferrosock::{ServerOptions, Status, WebSocketServer};
use ferrosock_tests::*;

async fn one_connection() -> (
    ferrosock::WebServer,
    WebSocketServer<Probe>,
    Events,
    RawClient,
) {
    let (web, wss, mut events) = probe_server(Behavior::Echo, ServerOptions::default()).await;
    let client = RawClient::connect(web.local_addr(), "/").await;
    events.expect_prefix("server connection").await;
    events.expect_prefix("open").await;
    (web, wss, events, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_sends_1000_and_waits_for_the_peer() {
    let (_web, wss, mut events, mut client) = one_connection().await;
    let connection = wss.connections().remove(0);
    connection.terminate();
    assert_eq!(connection.status(), Status::Closing);
    let frame = client.recv_close().await.unwrap();
    assert_eq!((frame.code, frame.reason.as_str()), (CloseCode::NORMAL, ""));
    // Nothing happens until the peer answers.
    events.expect_none(Duration::from_millis(100)).await;
    assert_eq!(connection.status(), Status::Closing);
    client.send_close(1000, "").await;
    client.expect_eof().await;
    events
        .expect(&["terminate 1000 \"WebSocket has been closed normally.\" clean=true status=Closed registry=[]"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_with_code_rules() {
    // (code given, message given) → (code sent, reason sent)
    let long = "é".repeat(100); // 200 bytes: cut to 122 (a char boundary under 123)
    let cases: Vec<(u16, String, u16, String)> = vec![
        (4001, "bye".into(), 4001, "bye".into()),
        (4999, "max".into(), 4999, "max".into()),
        (3001, "registered".into(), 3001, "registered".into()),
        (3000, "not above 3000".into(), 1000, String::new()),
        (5000, "too high".into(), 1000, String::new()),
        (1001, "reserved range".into(), 1000, String::new()),
        (4000, long.clone(), 4000, long[..122].to_owned()),
    ];
    for (code, message, want_code, want_reason) in cases {
        let (_web, wss, mut events, mut client) = one_connection().await;
        wss.connections()[0].terminate_with(code, &message);
        let frame = client.recv_close().await.unwrap();
        assert_eq!(
            (frame.code.0, frame.reason.as_str()),
            (want_code, want_reason.as_str()),
            "terminate_with({code})"
        );
        client.send_close(frame.code.0, &frame.reason).await;
        let line = events.next().await;
        assert!(
            line.starts_with(&format!("terminate {want_code} ")),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_queued_before_terminate_are_delivered_first() {
    let (_web, wss, _events, mut client) = one_connection().await;
    let connection = wss.connections().remove(0);
    for i in 0..100 {
        connection.send(format!("message {i}")).unwrap();
    }
    connection.terminate();
    for i in 0..100 {
        assert_eq!(client.recv_text().await, format!("message {i}"));
    }
    assert_eq!(client.recv_close().await.unwrap().code, CloseCode::NORMAL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_codes_and_reasons_seen_by_on_terminate() {
    // (what the client sends) → (on_error line?, on_terminate prefix)
    let (_web, _wss, mut events, mut client) = one_connection().await;
    client.send_close(4321, "app reason").await;
    client.recv_close().await;
    events
        .expect(&["terminate 4321 \"app reason\" clean=true status=Closed registry=[]"])
        .await;

    // A close frame without a code: 1005, a normal end.
    let (_web, _wss, mut events, mut client) = one_connection().await;
    client.send_frame(true, OpCode::Close, b"").await;
    assert_eq!(
        client.recv_close().await,
        None,
        "an empty close is echoed empty"
    );
    events
        .expect(&[
            "terminate 1005 \"No status code was present.\" clean=true status=Closed registry=[]",
        ])
        .await;
    events.expect_none(Duration::from_millis(100)).await;

    // 1001 from the peer: an abnormal end by SPEC §3, so on_error comes first.
    let (_web, _wss, mut events, mut client) = one_connection().await;
    client.send_close(1001, "").await;
    assert_eq!(
        client.recv_close().await.unwrap().code,
        CloseCode::GOING_AWAY
    );
    events
        .expect(&[
            "error 1001 HTTP: An endpoint is going away.",
            "terminate 1001 \"An endpoint is going away.\" clean=true status=Closed registry=[]",
        ])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_socket_ends_with_1006_after_on_error() {
    let (_web, wss, mut events, client) = one_connection().await;
    client.drop_connection();
    events.expect(&["error 1006 HTTP: Abnormal closure (close frame not sent nor received). (connection closed by the peer without a close frame)"]).await;
    events
        .expect(&["terminate 1006 \"Abnormal closure (close frame not sent nor received).\" clean=false status=Closed registry=[]"])
        .await;
    assert!(wss.connections().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_fail_with_their_code_after_on_error() {
    let cases: &[(&[u8], u16, &str)] = &[
        // An unmasked frame from a client.
        (
            &[0x81, 0x01, b'a'],
            1002,
            "protocol error: unmasked frame from client",
        ),
        // A reserved opcode.
        (
            &[0x83, 0x80, 0, 0, 0, 0],
            1002,
            "protocol error: reserved opcode 0x3",
        ),
        // RSV1 without an extension.
        (
            &[0xC1, 0x80, 0, 0, 0, 0],
            1002,
            "protocol error: reserved bits set in frame header",
        ),
        // Invalid UTF-8 in a text frame (0xff masked with a zero key).
        (
            &[0x81, 0x81, 0, 0, 0, 0, 0xff],
            1007,
            "protocol error: invalid UTF-8 in text",
        ),
        // A close code that may not be sent.
        (
            &[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xed],
            1002,
            "protocol error: invalid close code 1005",
        ),
    ];
    for (bytes, code, cause) in cases {
        let (_web, _wss, mut events, mut client) = one_connection().await;
        client.send_raw(bytes).await;
        let frame = client.recv_close().await.unwrap();
        assert_eq!(frame.code.0, *code, "{bytes:x?}");
        client.send_close(frame.code.0, "").await;
        client.expect_eof().await;
        let error = events.next().await;
        assert!(
            error.starts_with(&format!("error {code} HTTP: "))
                && error.ends_with(&format!("({cause})")),
            "{error}"
        );
        let terminate = events.next().await;
        assert!(
            terminate.starts_with(&format!("terminate {code} ")),
            "{terminate}"
        );
        assert!(
            terminate.contains("clean=false status=Closed registry=[]"),
            "{terminate}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_a_server_closes_every_connection_then_calls_on_terminate() {
    let (web, wss, mut events) =
        probe_server(Behavior::Echo, ServerOptions::default().path("/t")).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(RawClient::connect(web.local_addr(), "/t").await);
        events.expect_prefix("server connection").await;
        events.expect_prefix("open").await;
    }
    let handle = wss.terminate();
    assert!(wss.terminated(), "terminated() is true at once");
    assert!(!handle.is_done());
    // New upgrades no longer reach it.
    let refused = RawClient::try_connect(web.local_addr(), &upgrade_request("/t", &[]))
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 404);
    for client in &mut clients {
        assert_eq!(client.recv_close().await.unwrap().code, CloseCode::NORMAL);
        client.send_close(1000, "").await;
    }
    within("termination", handle.clone().into_future()).await;
    assert!(handle.is_done());
    // Every connection's on_terminate, then the server's.
    for _ in 0..3 {
        events.expect_prefix("terminate 1000").await;
    }
    events
        .expect(&["server terminate terminated=true connections=0"])
        .await;
    // A second terminate is a handle on the same, finished, termination.
    within("a second terminate", wss.terminate().into_future()).await;
    events.expect_none(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_with_timeout_zero_drops_sockets_without_close_frames() {
    let (_web, wss, mut events, mut client) = one_connection().await;
    within(
        "termination",
        wss.terminate_with_timeout(Duration::ZERO).into_future(),
    )
    .await;
    // The peer sees the socket close with no close frame: 1006 on its side. This side closed
    // in good order: no on_error (issue #10), only on_terminate.
    assert_eq!(client.recv().await, None);
    events.expect_prefix("terminate 1006").await;
    events
        .expect(&["server terminate terminated=true connections=0"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_with_timeout_forces_peers_that_do_not_answer() {
    let (_web, wss, mut events, mut client) = one_connection().await;
    let started = std::time::Instant::now();
    let handle = wss.terminate_with_timeout(Duration::from_millis(300));
    assert_eq!(client.recv_close().await.unwrap().code, CloseCode::NORMAL);
    // The client never answers.
    within("termination", handle.into_future()).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250),
        "forced too early: {elapsed:?}"
    );
    assert_eq!(client.recv().await, None);
    events.expect_prefix("terminate 1006").await;
    events
        .expect(&["server terminate terminated=true connections=0"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_web_server_closes_clients_with_1001_and_frees_the_port() {
    let (web, wss, mut events, mut client) = one_connection().await;
    let addr = web.local_addr();
    let stop = tokio::spawn({
        let web = web.clone();
        async move { web.stop().await }
    });
    let frame = client.recv_close().await.unwrap();
    assert_eq!(frame.code, CloseCode::GOING_AWAY);
    client.send_close(1001, "").await;
    within("stop", stop).await.unwrap();
    assert!(!web.is_running());
    assert!(wss.terminated());
    // An orderly stop this side started is not an error (issue #10: on_error fired with 1001
    // on every connection at every restart).
    events.expect_prefix("terminate 1001").await;
    events
        .expect(&["server terminate terminated=true connections=0"])
        .await;
    // The port is free again, and a stopped web server takes no new WebSocket server.
    let again = ferrosock::WebServer::start(
        ferrosock::WebServerOptions::default().listen(addr.to_string()),
    )
    .await;
    assert!(again.is_ok(), "port {addr} still taken");
    let (probe, _) = Probe::new(Behavior::Echo);
    let err = WebSocketServer::new(&web, probe, ServerOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ferrosock::ErrorKind::NotStarted);
}

// That `WebServer::stop` is bounded by one shutdown timeout, for close handshakes and HTTP
// requests together, is tested on paused time in the library (`server::tests`).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_the_peer_sent_before_seeing_our_close_are_delivered() {
    let (_web, wss, mut events, mut client) = one_connection().await;
    let connection = wss.connections().remove(0);
    connection.terminate();
    // The client has not read the close frame yet and keeps talking.
    client.send_text("in flight 1").await;
    client.send_text("in flight 2").await;
    assert_eq!(client.recv_close().await.unwrap().code, CloseCode::NORMAL);
    client.send_close(1000, "").await;
    client.expect_eof().await;
    events
        .expect(&[
            "message Text(in flight 1)",
            "message Text(in flight 2)",
            "terminate 1000 \"WebSocket has been closed normally.\" clean=true status=Closed registry=[]",
        ])
        .await;
    // The replies the echo handler tried could not be sent: the connection was closing.
    assert_eq!(connection.status(), Status::Closed);
}

/// Counts, per client, the numbered messages its handler received.
#[derive(Default)]
struct Ledger(std::sync::Mutex<std::collections::BTreeMap<String, Vec<u64>>>);
struct LedgerConnection;

impl ferrosock::ServerHandler for Ledger {
    type Connection = LedgerConnection;
    fn on_connection(
        &self,
        _: &WebSocketServer<Self>,
        _: ferrosock::ConnectionEvent,
    ) -> Option<LedgerConnection> {
        Some(LedgerConnection)
    }
}

impl ferrosock::ConnectionHandler for LedgerConnection {
    type Server = Ledger;
    fn on_message(
        &self,
        ws: &ferrosock::WebSocketConnection<Ledger>,
        event: ferrosock::MessageEvent,
    ) {
        let text = event.data.to_text();
        let (client, n) = text.split_once(':').expect("client:number");
        let mut ledger = ws.wss().handler().0.lock().unwrap();
        ledger
            .entry(client.to_owned())
            .or_default()
            .push(n.parse().unwrap());
    }
}

/// Stopping the web server while 200 clients stream: each gets 1001, and every message a
/// client sent before its close reply reached its handler, in order, none missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_under_load_delivers_every_message_sent_before_the_close_reply() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // A generous shutdown timeout: the server must read everything the clients sent before
    // their close replies, whatever the machine's load; what is tested is that it does.
    let web = web_server_with(
        ferrosock::WebServerOptions::default().shutdown_timeout(Duration::from_secs(120)),
    )
    .await;
    let wss = WebSocketServer::new(&web, Ledger::default(), ServerOptions::default()).unwrap();
    let addr = web.local_addr();
    let mut clients = Vec::new();
    for id in 0..200 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(upgrade_request("/", &[]).as_bytes())
            .await
            .unwrap();
        let mut head = Vec::new();
        within("a 101", async {
            while !head.ends_with(b"\r\n\r\n") {
                head.push(stream.read_u8().await.unwrap());
            }
        })
        .await;
        assert!(head.starts_with(b"HTTP/1.1 101"));
        clients.push((id, stream));
    }
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(id, stream)| {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.into_split();
                let closing = Arc::new(AtomicBool::new(false));
                let closed = Arc::new(tokio::sync::Notify::new());
                let writer = {
                    let (closing, closed) = (closing.clone(), closed.clone());
                    tokio::spawn(async move {
                        let mut sent = 0u64;
                        // Streaming until the server's close frame arrives, up to 20 000
                        // messages (then the writer waits for the close frame).
                        while !closing.load(Ordering::Acquire) {
                            if sent == 20_000 {
                                closed.notified().await;
                                break;
                            }
                            let frame = client_frame(
                                true,
                                OpCode::Text,
                                format!("c{id}:{sent}").as_bytes(),
                            );
                            write.write_all(&frame).await.unwrap();
                            sent += 1;
                            if sent.is_multiple_of(8) {
                                tokio::task::yield_now().await;
                            }
                        }
                        // The close reply comes after every message sent.
                        write
                            .write_all(&client_frame(true, OpCode::Close, &[0x03, 0xe8]))
                            .await
                            .unwrap();
                        sent
                    })
                };
                // The server sends nothing but its close frame (4 bytes): on it, the writer
                // stops and replies; then the server closes the socket.
                let mut received = vec![0u8; 4];
                read.read_exact(&mut received).await.unwrap();
                closing.store(true, Ordering::Release);
                closed.notify_one();
                let mut rest = Vec::new();
                read.read_to_end(&mut rest).await.unwrap();
                received.extend(rest);
                (id, received, writer)
            })
        })
        .collect();
    // Stop once every client is streaming: each has had a message delivered.
    within("every client streaming", async {
        while wss.handler().0.lock().unwrap().len() < 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    within_for(Duration::from_secs(150), "the stop", web.stop()).await;

    let ledger = wss.handler().0.lock().unwrap().clone();
    let mut total = 0;
    for task in tasks {
        let (id, received, writer) = within("a client", task).await.unwrap();
        let sent = within("a writer", writer).await.unwrap();
        // 0x88 0x02 0x03 0xe9: a close frame with 1001.
        assert_eq!(received, [0x88, 0x02, 0x03, 0xe9], "client {id}");
        let delivered = ledger.get(&format!("c{id}")).cloned().unwrap_or_default();
        assert_eq!(
            delivered,
            (0..sent).collect::<Vec<_>>(),
            "client {id}: sent {sent}, delivered {}",
            delivered.len()
        );
        total += sent;
    }
    assert!(total > 200, "the clients did stream ({total} messages)");
}
