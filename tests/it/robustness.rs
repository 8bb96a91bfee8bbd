//! Bad input never takes the server down: bad handshakes, garbage bytes, vanishing clients and
//! panicking handlers each end only their own connection.

use std::time::Duration;

use ferrosock::proto::{CloseCode, OpCode};
use ferrosock::{ServerOptions, WebSocketServer};
use ferrosock_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_upgrades_get_400_and_other_versions_426() {
    let (web, _wss, mut events) = probe_server(Behavior::Echo, ServerOptions::default()).await;
    let addr = web.local_addr();
    let base = "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    let cases: &[(String, u16)] = &[
        (format!("{base}Sec-WebSocket-Version: 13\r\n\r\n"), 400), // no key
        (format!("{base}Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n"), 400),
        (format!("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"), 400),
        (format!("POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n"), 405),
        (format!("{base}Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 8\r\n\r\n"), 426),
    ];
    for (request, status) in cases {
        let response = http_request(addr, request).await;
        assert_eq!(response.status, *status, "{request}");
        if *status == 426 {
            assert_eq!(response.header("sec-websocket-version"), Some("13"));
        }
        // Error pages say nothing about the server.
        assert!(
            response.body.len() < 64,
            "{:?}",
            String::from_utf8_lossy(&response.body)
        );
    }
    // None of them reached on_connection.
    events.expect_none(Duration::from_millis(100)).await;
    let mut client = RawClient::connect(addr, "/").await;
    client.send_text("ok").await;
    assert_eq!(client.recv_message().await, text("ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_before_and_after_the_handshake() {
    let (web, _wss, mut events) = probe_server(Behavior::Echo, ServerOptions::default()).await;
    let addr = web.local_addr();
    // Not HTTP at all.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0xff, 0xfe, b'\r', b'\n', b'\r', b'\n',
        ])
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = within("the server to answer garbage", stream.read_to_end(&mut buf)).await;
    let answer = String::from_utf8_lossy(&buf);
    assert!(
        buf.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );

    // Random bytes after a valid handshake: failed with a close frame, nothing else affected.
    let mut bystander = RawClient::connect(addr, "/").await;
    events.expect_prefix("server connection").await;
    events.expect_prefix("open").await;
    let mut client = RawClient::connect(addr, "/").await;
    events.expect_prefix("server connection").await;
    events.expect_prefix("open").await;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    client.send_raw(&noise).await;
    assert!(client.recv_close().await.is_some());
    client.drop_connection();
    let error = events.next().await;
    assert!(error.starts_with("error 100"), "{error}");
    events.expect_prefix("terminate 100").await;
    bystander.send_text("fine").await;
    assert_eq!(bystander.recv_message().await, text("fine"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_on_message_closes_only_its_connection_with_1011() {
    let (web, wss, mut events) =
        probe_server(Behavior::PanicOn("panic"), ServerOptions::default()).await;
    let mut bystander = RawClient::connect(web.local_addr(), "/").await;
    events.expect_prefix("server connection").await;
    events.expect_prefix("open").await;
    let mut client = RawClient::connect(web.local_addr(), "/").await;
    events.expect_prefix("server connection").await;
    events.expect_prefix("open").await;
    client.send_text("before").await;
    client.send_text("panic").await;
    client.send_text("after").await; // dropped: the connection is closing
    assert_eq!(client.recv_message().await, text("before"));
    let frame = client.recv_close().await.unwrap();
    assert_eq!(frame.code, CloseCode::INTERNAL_ERROR);
    assert_eq!(frame.reason, "", "the panic message stays on the server");
    client.send_close(1011, "").await;
    events
        .expect(&["message Text(before)", "message Text(panic)"])
        .await;
    events
        .expect(&[
            "error 1011 HTTP: Internal server error. (on_message panicked: on_message exploded)",
        ])
        .await;
    events.expect_prefix("terminate 1011").await;
    // The server and the other connection carry on.
    bystander.send_text("hello").await;
    assert_eq!(bystander.recv_message().await, text("hello"));
    assert_eq!(wss.connections().len(), 1);
    let _new = RawClient::connect(web.local_addr(), "/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_on_open_closes_with_1011() {
    let (web, _wss, mut events) =
        probe_server(Behavior::PanicOnOpen, ServerOptions::default()).await;
    let mut client = RawClient::connect(web.local_addr(), "/").await;
    assert_eq!(
        client.answer_close().await.unwrap().code,
        CloseCode::INTERNAL_ERROR
    );
    events.expect_prefix("server connection").await;
    events.expect_prefix("open").await;
    events
        .expect(&["error 1011 HTTP: Internal server error. (on_open panicked: on_open exploded)"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_on_connection_answers_500_and_reports_to_the_server() {
    let web = web_server().await;
    let (mut probe, mut events) = Probe::new(Behavior::Echo);
    probe.panic_on_connection = true;
    let _wss = WebSocketServer::new(&web, probe, ServerOptions::default()).unwrap();
    events.next().await;
    let response = RawClient::try_connect(web.local_addr(), &upgrade_request("/", &[]))
        .await
        .err()
        .unwrap();
    assert_eq!(response.status, 500);
    events.expect_prefix("server connection").await;
    events
        .expect(&["server error 1 ferrosock: on_connection panicked: on_connection exploded"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_vanish_mid_frame_or_mid_handshake() {
    let (web, wss, mut events) = probe_server(Behavior::Echo, ServerOptions::default()).await;
    let addr = web.local_addr();
    // Half a frame, then gone.
    let mut client = RawClient::connect(addr, "/").await;
    events.expect_prefix("server connection").await;
    events.expect_prefix("open").await;
    client.send_raw(&[0x81, 0x8a, 1, 2, 3, 4, b'x']).await;
    client.drop_connection();
    events.expect_prefix("error 1006").await;
    events.expect_prefix("terminate 1006").await;
    // Half a handshake, then gone.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nUpgr").await.unwrap();
    drop(stream);
    // Many at once.
    for _ in 0..50 {
        let mut client = RawClient::connect(addr, "/").await;
        client.send_frame(false, OpCode::Text, b"part").await;
        client.drop_connection();
    }
    // Each one: connection, open, error 1006, terminate 1006 (interleaved between connections).
    let mut ends = 0;
    while ends < 50 {
        if events.next().await.starts_with("terminate 1006") {
            ends += 1;
        }
    }
    within("every connection to end", async {
        while !wss.connections().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut client = RawClient::connect(addr, "/").await;
    client.send_text("alive").await;
    assert_eq!(client.recv_message().await, text("alive"));
}

/// Handlers that block the thread: with `blocking_callbacks`, only their own connections wait.
/// The server has a runtime of its own with two I/O threads, and the clients another, so that
/// what the server's threads do cannot stall the clients. Four handlers block (more than the
/// server's I/O threads) until the test opens their gate; meanwhile another client is served.
#[test]
fn blocking_callbacks_keep_blocked_handlers_off_the_io_threads() {
    let gate = std::sync::Arc::new(Gate::default());
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let options = ServerOptions::default().blocking_callbacks(true);
    let behavior = Behavior::BlockUntil("block", gate.clone());
    let (web, _wss, _events) = server_runtime.block_on(probe_server(behavior, options));
    let addr = web.local_addr();
    let clients = tokio::runtime::Runtime::new().unwrap();
    clients.block_on(async {
        let mut blocked = Vec::new();
        for _ in 0..4 {
            blocked.push(RawClient::connect(addr, "/").await);
        }
        for client in &mut blocked {
            client.send_text("block").await;
        }
        gate.entered(4).await;
        // Served while the four handlers block (without blocking_callbacks it would wait for
        // the gate, and time out).
        let mut quick = RawClient::connect(addr, "/").await;
        for i in 0..5 {
            quick.send_text(&format!("quick {i}")).await;
            assert_eq!(quick.recv_message().await, text(&format!("quick {i}")));
        }
        // The blocked connections have not answered yet...
        for client in &mut blocked {
            let answer = tokio::time::timeout(Duration::ZERO, client.recv()).await;
            assert!(answer.is_err(), "a blocked handler answered: {answer:?}");
        }
        // ...and once the gate opens they finish their work and carry on.
        gate.open();
        for client in &mut blocked {
            assert_eq!(client.recv_message().await, text("block"));
            client.send_text("and then").await;
            assert_eq!(client.recv_message().await, text("and then"));
        }
    });
    drop(web);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_get_431_and_leave_the_server_serving() {
    let options = ferrosock::WebServerOptions::default()
        .max_request_headers(20)
        .max_request_head_size(8 << 10);
    let web = web_server_with(options).await;
    let (probe, _events) = Probe::new(Behavior::Echo);
    let _wss = WebSocketServer::new(&web, probe, ServerOptions::default()).unwrap();
    let addr = web.local_addr();
    let upgrade = |extra: &[String]| {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        upgrade_request("/", &extra)
    };
    let many: Vec<String> = (0..30).map(|i| format!("X-Filler-{i}: {i}")).collect();
    let large = vec![format!("Cookie: session={}", "a".repeat(10 << 10))];
    for (what, request) in [
        ("30 headers", upgrade(&many)),
        ("a 10 KiB cookie", upgrade(&large)),
    ] {
        let response = http_request(addr, &request).await;
        assert_eq!(response.status, 431, "{what}: {}", response.head);
        assert!(
            response.body.len() < 64,
            "{what}: the error page says little"
        );
    }
    // Within the limits, the same server upgrades.
    let fine: Vec<String> = (0..10).map(|i| format!("X-Filler-{i}: {i}")).collect();
    let mut client = RawClient::try_connect(addr, upgrade(&fine))
        .await
        .ok()
        .unwrap();
    client.send_text("ok").await;
    assert_eq!(client.recv_message().await, text("ok"));
    // Impossible limits are refused when the server starts.
    let err = ferrosock::WebServer::start(
        ferrosock::WebServerOptions::default()
            .listen("127.0.0.1:0")
            .max_request_head_size(1024),
    )
    .await
    .expect_err("refused");
    assert_eq!(err.kind(), ferrosock::ErrorKind::InvalidArgument);
}
