//! SPEC §4: the client — callback order in normal, refused, dropped and protocol-error cases,
//! `on_terminate` exactly once, terminate rules, status, data types, headers, errors, TLS.

use std::time::Duration;

use ferrosock::proto::CloseCode;
use ferrosock::{
    ClientOptions, DataType, ErrorKind, Limits, ServerOptions, Status, WebServerOptions, WebSocket,
    WebSocketServer,
};
use ferrosock_tests::*;

/// A ferrosock echo server (data type Auto) and its events.
async fn echo_server() -> (ferrosock::WebServer, WebSocketServer<Probe>, Events) {
    probe_server(
        Behavior::Echo,
        ServerOptions::default().data_type(DataType::Auto),
    )
    .await
}

fn url(web: &ferrosock::WebServer, path: &str) -> String {
    format!("ws://{}{path}", web.local_addr())
}

// A current-thread runtime: the connecting task cannot run before the test first awaits,
// so "Connecting right after new()" is a fact here, not a race against a fast loopback.
#[tokio::test(flavor = "current_thread")]
async fn callback_order_and_status_of_a_normal_connection() {
    let (web, _wss, mut server) = echo_server().await;
    let (probe, mut events) = ClientProbe::new();
    let target = url(&web, "/echo?x=1");
    let ws = WebSocket::new(&target, probe).unwrap();
    assert_eq!(ws.status(), Status::Connecting);
    assert_eq!(ws.url(), target, "url() is exactly what was given");
    // Nothing can be sent before the connection is open.
    assert_eq!(
        ws.send("too early").unwrap_err().kind(),
        ErrorKind::NotConnected
    );
    events.expect(&["open status=Connected"]).await;
    assert_eq!(ws.status(), Status::Connected);
    ws.send("hello").unwrap();
    ws.send(vec![1u8, 2, 3]).unwrap();
    ws.send(serde_json::json!({"n": 1})).unwrap();
    events
        .expect(&[
            "message Text(hello)",
            "message Text(\u{1}\u{2}\u{3})",
            "message Text({\"n\":1})",
        ])
        .await;
    server.expect_prefix("server connection /echo?x=1").await;
    ws.terminate();
    assert_eq!(ws.status(), Status::Closing);
    within("closed", ws.closed()).await;
    events
        .expect(&[
            "terminate 1000 \"WebSocket has been closed normally.\" clean=true status=Closed",
        ])
        .await;
    events.expect_none(Duration::from_millis(100)).await;
    assert_eq!(ws.status(), Status::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_awaitable_connect_returns_after_on_open() {
    let (web, _wss, _server) = echo_server().await;
    let (probe, mut events) = ClientProbe::new();
    let ws = WebSocket::connect(&url(&web, "/"), probe).await.unwrap();
    // on_open has already been recorded when connect returns.
    assert_eq!(events.try_next().as_deref(), Some("open status=Connected"));
    assert_eq!(ws.status(), Status::Connected);
    ws.send("x").unwrap();
    events.expect(&["message Text(x)"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_reports_its_http_status() {
    let web = web_server().await;
    let (mut probe, _server) = Probe::new(Behavior::Echo);
    probe.refuse = true;
    let _wss = WebSocketServer::new(&web, probe, ServerOptions::default()).unwrap();
    // Awaitable: the error, with the status.
    let err = WebSocket::connect(&url(&web, "/"), ()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Handshake);
    assert_eq!(err.http_status(), Some(403));
    // Callback style: on_error then on_terminate (1006), no on_open.
    let (probe, mut events) = ClientProbe::new();
    let ws = WebSocket::new(&url(&web, "/"), probe).unwrap();
    let error = events.next().await;
    assert!(
        error.starts_with("error 1006 HTTP: Abnormal closure") && error.contains("HTTP 403"),
        "{error}"
    );
    events
        .expect(&["terminate 1006 \"Abnormal closure (close frame not sent nor received).\" clean=false status=Closed"])
        .await;
    within("closed", ws.closed()).await;
    events.expect_none(Duration::from_millis(100)).await;
    // A path no server answers: 404.
    let other = web_server().await;
    let (probe, _) = Probe::new(Behavior::Echo);
    let _only =
        WebSocketServer::new(&other, probe, ServerOptions::default().path("/only")).unwrap();
    let err = WebSocket::connect(&url(&other, "/nope"), ())
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), Some(404));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_way_to_fail_has_its_error() {
    // Bad URLs fail at once, with nothing spawned.
    for bad in [
        "http://127.0.0.1/",
        "ws//missing-colon",
        "wss://host/#fragment",
        "",
    ] {
        let err = WebSocket::new(bad, ()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidUrl, "{bad}");
    }
    // Refused: nothing listens on the port.
    let (_bound, port) = refusing_port();
    let err = WebSocket::connect(&format!("ws://127.0.0.1:{port}/"), ())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
    // A name that cannot resolve (.invalid never does, RFC 6761).
    let options = ClientOptions::default().connect_timeout(Duration::from_secs(3));
    let err = WebSocket::connect_with("ws://no-such-host.invalid/", (), options)
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Dns | ErrorKind::Timeout),
        "{err}"
    );
    // A server that accepts TCP and never answers: the connect timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap();
    let options = ClientOptions::default().connect_timeout(Duration::from_millis(300));
    let err = WebSocket::connect_with(&format!("ws://{silent}/"), (), options)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    drop(listener);
    // A 101 with the wrong accept key.
    let (addr, _server) =
        raw_server(|_| switching_protocols("not the client's key"), Vec::new()).await;
    let err = WebSocket::connect(&format!("ws://{addr}/"), ())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Handshake);
    let cause = std::error::Error::source(&err)
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(cause.contains("Sec-WebSocket-Accept"), "{err}: {cause}");
    // Not HTTP at all.
    let (addr, _server) =
        raw_server(|_| "SSH-2.0-OpenSSH_9.2\r\n\r\n".to_owned(), Vec::new()).await;
    let err = WebSocket::connect(&format!("ws://{addr}/"), ())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Handshake, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_ends_with_1006_after_on_error() {
    let (web, wss, mut server) = echo_server().await;
    let (probe, mut events) = ClientProbe::new();
    let ws = WebSocket::connect(&url(&web, "/"), probe).await.unwrap();
    events.next().await;
    server.expect_prefix("server connection").await;
    server.expect_prefix("open").await;
    wss.terminate_with_timeout(Duration::ZERO).await;
    let error = events.next().await;
    assert!(error.starts_with("error 1006 HTTP: "), "{error}");
    events.expect_prefix("terminate 1006").await;
    within("closed", ws.closed()).await;
    events.expect_none(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_close_code_and_reason_reach_on_terminate() {
    let (web, wss, mut server) = echo_server().await;
    let (probe, mut events) = ClientProbe::new();
    let ws = WebSocket::connect(&url(&web, "/"), probe).await.unwrap();
    events.next().await;
    server.expect_prefix("server connection").await;
    server.expect_prefix("open").await;
    wss.connections()[0].terminate_with(4001, "bye now");
    within("closed", ws.closed()).await;
    events
        .expect(&["terminate 4001 \"bye now\" clean=true status=Closed"])
        .await;
    // 1001 from a server going away is an abnormal end: on_error first.
    let (probe, mut events) = ClientProbe::new();
    let ws = WebSocket::connect(&url(&web, "/"), probe).await.unwrap();
    events.next().await;
    web.stop().await;
    within("closed", ws.closed()).await;
    events
        .expect(&["error 1001 HTTP: An endpoint is going away."])
        .await;
    events
        .expect(&["terminate 1001 \"An endpoint is going away.\" clean=true status=Closed"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_error_from_the_server_fails_with_1002() {
    // A server that masks its frames breaks RFC 6455 §5.1.
    let masked_text = vec![0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
    let (addr, server) = raw_server(switching_protocols, masked_text).await;
    let (probe, mut events) = ClientProbe::new();
    let ws = WebSocket::new(&format!("ws://{addr}/"), probe).unwrap();
    events.expect(&["open status=Connected"]).await;
    // The server receives the client's close frame with 1002...
    let mut stream = server.await.unwrap();
    let mut decoder = ferrosock::proto::Decoder::new(ferrosock::proto::DecoderConfig {
        role: ferrosock::proto::Role::Server,
        max_frame_size: 1024,
        max_message_size: 1024,
    });
    let mut bytes = bytes::BytesMut::new();
    let decoded = within("the client's close frame", async {
        loop {
            if let Some(decoded) = decoder.decode(&mut bytes).unwrap() {
                break Some(decoded);
            }
            let read = tokio::io::AsyncReadExt::read_buf(&mut stream, &mut bytes).await;
            if read.unwrap() == 0 {
                break None;
            }
        }
    })
    .await;
    match decoded {
        Some(ferrosock::proto::Decoded::Close(Some(frame))) => {
            assert_eq!(frame.code, CloseCode::PROTOCOL_ERROR)
        }
        other => panic!("expected a masked close frame, got {other:?}"),
    }
    // ...and hangs up.
    drop(stream);
    within("closed", ws.closed()).await;
    events
        .expect(&["error 1002 HTTP: Protocol error. (protocol error: masked frame from server)"])
        .await;
    events.expect_prefix("terminate 1002").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_code_and_reason_rules() {
    let (web, wss, mut server) = echo_server().await;
    let ws = WebSocket::connect(&url(&web, "/"), ()).await.unwrap();
    server.expect_prefix("server connection").await;
    server.expect_prefix("open").await;
    for code in [999, 1001, 1005, 2999, 5000] {
        let err = ws.terminate_with(code, "").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{code}");
    }
    let err = ws.terminate_with(4000, &"x".repeat(124)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(ws.status(), Status::Connected, "nothing was closed");
    assert_eq!(wss.connections().len(), 1);
    ws.terminate_with(3000, &"r".repeat(123)).unwrap();
    within("closed", ws.closed()).await;
    let line = server.next().await;
    assert_eq!(
        line,
        format!(
            "terminate 3000 {:?} clean=true status=Closed registry=[]",
            "r".repeat(123)
        )
    );
    // 1000 is allowed too.
    let ws = WebSocket::connect(&url(&web, "/"), ()).await.unwrap();
    ws.terminate_with(1000, "done").unwrap();
    within("closed", ws.closed()).await;
    server.expect_prefix("server connection").await;
    server.expect_prefix("open").await;
    server
        .expect(&["terminate 1000 \"done\" clean=true status=Closed registry=[]"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_types() {
    let (web, _wss, _server) = echo_server().await;
    let cases: &[(DataType, &[&str])] = &[
        (
            DataType::Text,
            &["message Text(t)", "message Text(\u{fffd}b)"],
        ),
        (
            DataType::Blob,
            &["message Blob(b\"t\")", "message Blob(b\"\\xffb\")"],
        ),
        (
            DataType::Auto,
            &["message Text(t)", "message Blob(b\"\\xffb\")"],
        ),
    ];
    for (data_type, expected) in cases {
        let (mut probe, mut events) = ClientProbe::new();
        probe.data_type = *data_type;
        let ws = WebSocket::connect(&url(&web, "/"), probe).await.unwrap();
        assert_eq!(ws.data_type(), *data_type);
        events.next().await;
        ws.send("t").unwrap();
        ws.send(vec![0xff, b'b']).unwrap();
        events.expect(expected).await;
    }
    // Object: JSON parsed. A message that is not JSON (the seeds' chat server greets with
    // "Welcome on the chat!") gets an on_error with component JSON and no on_message, and the
    // connection stays open, as on the server (SPEC §3, §4; issue #10: it closed with 1007).
    let (mut probe, mut events) = ClientProbe::new();
    probe.data_type = DataType::Object;
    let ws = WebSocket::connect(&url(&web, "/"), probe).await.unwrap();
    events.next().await;
    ws.send(r#"{"a":[1,true]}"#).unwrap();
    events.expect(&["message Object({\"a\":[1,true]})"]).await;
    ws.send("Welcome on the chat!").unwrap();
    let error = events.next().await;
    assert!(
        error.starts_with("error 1 JSON: message is not valid JSON"),
        "{error}"
    );
    ws.send(r#"[2]"#).unwrap();
    events.expect(&["message Object([2])"]).await;
    assert_eq!(ws.status(), Status::Connected);
    ws.terminate();
    within("closed", ws.closed()).await;
    events.expect_prefix("terminate 1000").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_reach_the_server_and_ids_are_shared_with_it() {
    let (web, wss, mut server) = echo_server().await;
    let (mut probe, _events) = ClientProbe::new();
    probe.headers = [
        ("Cookie", "session=abc; theme=dark"),
        ("X-Multi", "1"),
        ("X-Multi", "2"),
        ("Origin", "http://test"),
    ]
    .into_iter()
    .collect();
    let ws = WebSocket::connect(&url(&web, "/"), probe).await.unwrap();
    server.expect_prefix("server connection").await;
    server.expect_prefix("open").await;
    let connection = wss.connections().remove(0);
    let request = &connection.handler().request;
    assert_eq!(
        request.headers().get("cookie"),
        Some("session=abc; theme=dark")
    );
    assert_eq!(
        request.headers().get_all("x-multi").collect::<Vec<_>>(),
        ["1", "2"]
    );
    assert_eq!(request.headers().get("origin"), Some("http://test"));
    assert_ne!(
        ws.id(),
        connection.id(),
        "one id counter for clients and server connections"
    );
    // The handshake's own headers cannot be overridden.
    let (mut probe, _events) = ClientProbe::new();
    probe.headers = [("Sec-WebSocket-Version", "8")].into_iter().collect();
    assert_eq!(
        WebSocket::new(&url(&web, "/"), probe).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_client_callback_fails_with_1011() {
    let (web, _wss, mut server) = echo_server().await;
    let (mut probe, mut events) = ClientProbe::new();
    probe.panic_on = Some("boom");
    let ws = WebSocket::connect(&url(&web, "/"), probe).await.unwrap();
    events.next().await;
    ws.send("boom").unwrap();
    events.expect(&["message Text(boom)"]).await;
    events
        .expect(&["error 1011 HTTP: Internal server error. (on_message panicked: client on_message exploded)"])
        .await;
    events.expect_prefix("terminate 1011").await;
    server.expect_prefix("server connection").await;
    server.expect_prefix("open").await;
    server.expect(&["message Text(boom)"]).await;
    server.expect_prefix("error 1011").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_literals() {
    let Some(web) = ipv6_web_server().await else {
        return;
    };
    let (probe, _) = Probe::new(Behavior::Echo);
    let _wss = WebSocketServer::new(&web, probe, ServerOptions::default()).unwrap();
    let (probe, mut events) = ClientProbe::new();
    let port = web.local_addr().port();
    let ws = WebSocket::connect(&format!("ws://[::1]:{port}/v6"), probe)
        .await
        .unwrap();
    events.next().await;
    ws.send("over v6").unwrap();
    events.expect(&["message Text(over v6)"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16_mib_message_both_ways() {
    let limits = Limits::default()
        .max_message_size(16 << 20)
        .max_frame_size(16 << 20);
    let (web, wss, mut server) = probe_server(
        Behavior::Echo,
        ServerOptions::default()
            .data_type(DataType::Auto)
            .limits(limits.clone()),
    )
    .await;
    let (mut probe, mut events) = ClientProbe::new();
    probe.data_type = DataType::Blob;
    let options = ClientOptions::default().limits(limits);
    let ws = WebSocket::connect_with(&url(&web, "/"), probe, options)
        .await
        .unwrap();
    events.next().await;
    server.expect_prefix("server connection").await;
    server.expect_prefix("open").await;
    let big: Vec<u8> = (0..16 << 20).map(|i| (i % 251) as u8).collect();
    ws.send(big.clone()).unwrap();
    let expected = format!("message {}", shown(&ferrosock::Message::from(big)));
    within_for(
        Duration::from_secs(60),
        "the echo",
        events.expect(&[&expected]),
    )
    .await;
    assert_eq!(wss.connections().len(), 1);
}

/// The default message limit is 1 MiB (issue #10: 64 MiB let a thousand peers pin 64 GiB):
/// a larger message is refused with 1009, one at the limit goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_message_limit_is_one_mebibyte() {
    let (web, _wss, _server) = echo_server().await;
    let (mut probe, mut events) = ClientProbe::new();
    probe.data_type = DataType::Blob;
    let ws = WebSocket::connect(&url(&web, "/"), probe).await.unwrap();
    events.next().await;
    let at_limit = vec![1u8; 1 << 20];
    ws.send(at_limit.clone()).unwrap();
    let expected = format!("message {}", shown(&ferrosock::Message::from(at_limit)));
    within_for(
        Duration::from_secs(60),
        "the echo",
        events.expect(&[&expected]),
    )
    .await;
    ws.send(vec![2u8; (1 << 20) + 1]).unwrap();
    within_for(Duration::from_secs(60), "the close", ws.closed()).await;
    events.expect_prefix("error 1009 HTTP").await;
    events.expect_prefix("terminate 1009").await;
}

// ---------------------------------------------------------------------------------------------
// TLS

async fn tls_echo_server(pki: &TestPki) -> (ferrosock::WebServer, WebSocketServer<Probe>) {
    let web = web_server_with(WebServerOptions::default().tls(&pki.cert, &pki.key)).await;
    assert!(web.is_tls());
    let (probe, _) = Probe::new(Behavior::Echo);
    let wss = WebSocketServer::new(
        &web,
        probe,
        ServerOptions::default().data_type(DataType::Auto),
    )
    .unwrap();
    (web, wss)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_to_a_ferrosock_tls_server_with_a_private_ca() {
    let pki = TestPki::generate("wss");
    let (web, _wss) = tls_echo_server(&pki).await;
    let port = web.local_addr().port();
    for host in ["127.0.0.1", "localhost"] {
        let (probe, mut events) = ClientProbe::new();
        let options = ClientOptions::default().ca_file(&pki.ca).unwrap();
        let ws = WebSocket::connect_with(&format!("wss://{host}:{port}/secure"), probe, options)
            .await
            .unwrap();
        events.next().await;
        ws.send("over TLS").unwrap();
        ws.send(vec![7u8; 100_000]).unwrap();
        events.expect(&["message Text(over TLS)"]).await;
        let sevens = ferrosock::Message::from(vec![7u8; 100_000]);
        let echo = ferrosock::Message::Text(sevens.to_text().into());
        events.expect(&[&format!("message {}", shown(&echo))]).await;
        ws.terminate();
        within("closed", ws.closed()).await;
        events.expect_prefix("terminate 1000").await;
    }
    // Static files over HTTPS work too: the server speaks HTTP/1.1 in TLS.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_a_tls_error() {
    let pki = TestPki::generate("untrusted");
    let (web, _wss) = tls_echo_server(&pki).await;
    let port = web.local_addr().port();
    // Neither the system's roots nor an unrelated CA vouch for it.
    let err = WebSocket::connect(&format!("wss://127.0.0.1:{port}/"), ())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    let options = ClientOptions::default().ca_file(&pki.other_ca).unwrap();
    let err = WebSocket::connect_with(&format!("wss://127.0.0.1:{port}/"), (), options)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    // A plain ws:// client to a TLS port fails the handshake, and the server is unharmed.
    let err = WebSocket::connect(&format!("ws://127.0.0.1:{port}/"), ())
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Handshake | ErrorKind::Timeout),
        "{err}"
    );
    let options = ClientOptions::default().ca_file(&pki.ca).unwrap();
    assert!(
        WebSocket::connect_with(&format!("wss://127.0.0.1:{port}/"), (), options)
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_files_are_reported() {
    let pki = TestPki::generate("badfiles");
    let missing = pki.dir.join("missing.pem");
    let err = ferrosock::WebServer::start(
        WebServerOptions::default()
            .listen("127.0.0.1:0")
            .tls(&missing, &pki.key),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls);
    // A key that does not belong to the certificate.
    let err = ferrosock::WebServer::start(
        WebServerOptions::default()
            .listen("127.0.0.1:0")
            .tls(&pki.ca, &pki.key),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    assert_eq!(
        ClientOptions::default()
            .ca_file(&pki.key)
            .unwrap_err()
            .kind(),
        ErrorKind::Tls
    );
}

/// A server of uWebSockets' kind answers the default offer without its server-side parameters
/// and compresses with a 15-bit window kept from message to message (issue #10: the client
/// refused such answers). The client connects with compression and decompresses messages whose
/// back-references reach up to 8 KiB into the message before, which only a decompressor that
/// kept its context (and a window over 4 KiB) can decode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_ignores_the_server_parameters_of_the_offer_is_decompressed_with_context() {
    use ferrosock::proto::deflate::Deflater;
    use ferrosock::proto::{OpCode, OutFrame, Role};

    // 8 KiB of hex digits from a fixed LCG: no long repeat inside one message.
    let mut state = 0x2545_f491_u32;
    let noise: String = (0..8192)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            char::from_digit(state >> 28, 16).unwrap()
        })
        .collect();
    let messages = [
        noise.clone(),
        noise.clone(),                                   // 8 KiB back
        format!("{}{}", &noise[..3000], &noise[6000..]), // 8 KiB back, then 5 KiB back
    ];
    for answer in [
        "permessage-deflate",
        "permessage-deflate; client_no_context_takeover", // uWS's answer to the default offer
    ] {
        let mut deflater = Deflater::new(15, false, 6, 8);
        let mut frames = Vec::new();
        let mut compressed_sizes = Vec::new();
        for message in &messages {
            let compressed = deflater.compress(message.as_bytes());
            compressed_sizes.push(compressed.len());
            let frame = OutFrame::compressed(Role::Server, OpCode::Text, compressed, || {
                unreachable!("server frames are not masked")
            });
            frames.extend_from_slice(frame.head());
            frames.extend_from_slice(frame.payload());
        }
        // The test's own premise: the later messages are back-references into the first.
        assert!(
            compressed_sizes[0] > 3000 && compressed_sizes[1..].iter().all(|&n| n < 400),
            "{compressed_sizes:?}"
        );

        let answered = answer.to_owned();
        let (addr, server) = raw_server(
            move |key| {
                switching_protocols(key).replace(
                    "\r\n\r\n",
                    &format!("\r\nSec-WebSocket-Extensions: {answered}\r\n\r\n"),
                )
            },
            frames,
        )
        .await;
        let (probe, mut events) = ClientProbe::new();
        let ws = WebSocket::connect(&format!("ws://{addr}/"), probe)
            .await
            .unwrap_or_else(|err| panic!("{answer}: {err}"));
        events.expect(&["open status=Connected"]).await;
        let agreed = ws.compression().expect("permessage-deflate negotiated");
        assert_eq!(
            (agreed.decompress_window_bits, agreed.decompress_reset),
            (15, false),
            "{answer}"
        );
        assert!(
            agreed.compress_reset,
            "{answer}: the client keeps its own promise"
        );
        for message in &messages {
            events.expect(&[&format!("message Text({message})")]).await;
        }
        assert_eq!(ws.status(), Status::Connected);
        ws.terminate();
        drop(server);
    }
}
