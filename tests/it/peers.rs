//! ferrosock's client against WebSocket servers nobody here wrote: Python `websockets` and
//! Node `ws` (tests/interop/python_server.py, node_server.mjs), over ws:// and wss://.
//!
//! The peers are installed by scripts/install-peers. Without them these tests say so and pass,
//! except under CI=true, where a missing peer is a failure.

use std::time::Duration;

use ferrosock::{
    ClientHandler, ClientOptions, DataType, Limits, Message, MessageEvent, Params,
    PerMessageDeflate, WebSocket,
};
use ferrosock_tests::*;
use tokio::sync::mpsc;

async fn client(
    url: &str,
    data_type: DataType,
    options: ClientOptions,
) -> (WebSocket<ClientProbe>, Events) {
    let (mut probe, mut events) = ClientProbe::new();
    probe.data_type = data_type;
    probe.headers = [
        ("Cookie", "a=1; b=2"),
        ("X-Multi", "one"),
        ("X-Multi", "two"),
    ]
    .into_iter()
    .collect::<Params>();
    let ws = WebSocket::connect_with(url, probe, options)
        .await
        .unwrap_or_else(|err| panic!("connect {url}: {err}"));
    events.expect(&["open status=Connected"]).await;
    (ws, events)
}

/// Limits for 16 MiB messages (the default is 1 MiB).
fn big_messages() -> Limits {
    Limits::default()
        .max_message_size(16 << 20)
        .max_frame_size(16 << 20)
}

/// Everything a client must get right against one peer at `base` (ws:// or wss://).
async fn exercise(peer: Peer, base: &str, options: ClientOptions) {
    let options = options.limits(big_messages());
    // Text and binary echo, unicode, empty.
    let (ws, mut events) = client(&format!("{base}/"), DataType::Auto, options.clone()).await;
    for text in ["hello", "κόσμε €𝄞", ""] {
        ws.send(text).unwrap();
        events.expect(&[&format!("message Text({text})")]).await;
    }
    ws.send((0u8..=255).collect::<Vec<u8>>()).unwrap();
    let line = events.next().await;
    assert!(
        line.starts_with("message Blob(b\"\\0\\x01\\x02"),
        "{peer:?}: {line}"
    );

    // A message the peer sends in fragments arrives whole.
    ws.send("fragments:5:a message in several fragments, κόσμε")
        .unwrap();
    events
        .expect(&["message Text(a message in several fragments, κόσμε)"])
        .await;

    // The headers the peer saw.
    ws.send("headers").unwrap();
    let line = events.next().await;
    let json: serde_json::Value = serde_json::from_str(
        line.strip_prefix("message Text(")
            .and_then(|l| l.strip_suffix(')'))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(json["cookie"], "a=1; b=2", "{peer:?}: {json}");
    assert_eq!(
        json["x-multi"],
        serde_json::json!(["one", "two"]),
        "{peer:?}: {json}"
    );
    assert_eq!(json["sec-websocket-version"], "13");

    // 16 MiB both ways.
    let big: Vec<u8> = (0..16 << 20).map(|i| (i % 251) as u8).collect();
    let expected = format!("message {}", shown(&Message::from(big.clone())));
    ws.send(big).unwrap();
    within_for(BIG, "the 16 MiB echo", events.expect(&[&expected])).await;
    ws.send(format!("big:{}", 16 << 20)).unwrap();
    within_for(BIG, "16 MiB from the peer", events.expect(&[&expected])).await;

    // The client closes with a code and a reason: a clean close with the code echoed.
    ws.terminate_with(4002, "ciao").unwrap();
    within("closed", ws.closed()).await;
    let line = events.next().await;
    assert!(
        line.starts_with("terminate 4002 ") && line.ends_with("clean=true status=Closed"),
        "{peer:?}: {line}"
    );

    // The peer closes with a code and a reason.
    let (ws, mut events) = client(&format!("{base}/"), DataType::Text, options.clone()).await;
    ws.send("close:4001:bye from the peer").unwrap();
    within("closed", ws.closed()).await;
    events
        .expect(&["terminate 4001 \"bye from the peer\" clean=true status=Closed"])
        .await;

    let (ws, mut events) = client(&format!("{base}/"), DataType::Text, options).await;
    ws.send("close:1000:").unwrap();
    within("closed", ws.closed()).await;
    events
        .expect(&[
            "terminate 1000 \"WebSocket has been closed normally.\" clean=true status=Closed",
        ])
        .await;
    events.expect_none(Duration::from_millis(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_python_websockets() {
    let Some(server) = PeerServer::start(Peer::Python, None, "off") else {
        return;
    };
    exercise(
        Peer::Python,
        &format!("ws://127.0.0.1:{}", server.port),
        ClientOptions::default(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_node_ws() {
    let Some(server) = PeerServer::start(Peer::Node, None, "off") else {
        return;
    };
    exercise(
        Peer::Node,
        &format!("ws://127.0.0.1:{}", server.port),
        ClientOptions::default(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_against_python_websockets_with_a_private_ca() {
    let pki = TestPki::generate("py-wss");
    let Some(server) = PeerServer::start(Peer::Python, Some(&pki), "off") else {
        return;
    };
    let options = ClientOptions::default().ca_file(&pki.ca).unwrap();
    exercise(
        Peer::Python,
        &format!("wss://localhost:{}", server.port),
        options,
    )
    .await;
    // Without the CA, the certificate is not trusted.
    let err = WebSocket::connect(&format!("wss://localhost:{}/", server.port), ())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ferrosock::ErrorKind::Tls, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_against_node_ws_with_a_private_ca() {
    let pki = TestPki::generate("node-wss");
    let Some(server) = PeerServer::start(Peer::Node, Some(&pki), "off") else {
        return;
    };
    let options = ClientOptions::default().ca_file(&pki.ca).unwrap();
    exercise(
        Peer::Node,
        &format!("wss://127.0.0.1:{}", server.port),
        options,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// permessage-deflate against the peers

/// The bound on a wait for 16 MiB to be compressed, sent, decompressed and back.
const BIG: Duration = Duration::from_secs(30);

/// Hands every message to the test, whole.
struct Collector(mpsc::UnboundedSender<Message>);

impl ClientHandler for Collector {
    fn on_message(&self, _ws: &WebSocket<Self>, event: MessageEvent) {
        let _ = self.0.send(event.data);
    }

    fn data_type(&self) -> DataType {
        DataType::Auto
    }
}

/// Messages from 0 bytes to 16 MiB, compressible text and incompressible binary.
fn deflate_messages() -> Vec<Message> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    let json = |len: usize| -> String {
        let unit = r#"{"symbol":"ABC","price":101.25,"volume":1200,"venue":"XNAS"},"#;
        unit.repeat(len / unit.len() + 1)[..len].to_owned()
    };
    let mut messages = Vec::new();
    for len in [
        0usize,
        1,
        100,
        1023,
        1024,
        1025,
        64 << 10,
        1 << 20,
        16 << 20,
    ] {
        messages.push(Message::from(json(len)));
        messages.push(Message::from(random(len)));
    }
    messages
}

/// Round trips through a peer's echo with compression negotiated; `expect` is what the peer's
/// answer must contain.
async fn exercise_deflate(peer: Peer, url: &str, settings: PerMessageDeflate, expect: &[&str]) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let options = ClientOptions::default()
        .deflate(settings.clone())
        .limits(big_messages());
    let ws = WebSocket::connect_with(url, Collector(tx), options)
        .await
        .unwrap();
    ws.send("extensions").unwrap();
    let answer = within("the peer's extensions", rx.recv())
        .await
        .unwrap()
        .to_text();
    for want in expect {
        assert!(
            answer.contains(want),
            "{peer:?} with {settings:?}: answered {answer:?}, expected {want}"
        );
    }
    // Twice over: with context takeover, each message depends on the ones before.
    for round in 0..2 {
        for message in deflate_messages() {
            ws.send(message.clone()).unwrap();
            let echo = within_for(BIG, "an echo", rx.recv()).await.unwrap();
            assert!(
                echo == message,
                "{peer:?} with {settings:?}, round {round}: a {} message came back different",
                describe(&message)
            );
        }
    }
    // Messages from the peer in several fragments, compressed by the peer.
    ws.send("fragments:7:fragmented and compressed by the peer, fragmented and compressed")
        .unwrap();
    let echo = within("fragments", rx.recv()).await.unwrap();
    assert_eq!(
        echo.as_text(),
        Some("fragmented and compressed by the peer, fragmented and compressed")
    );
    ws.send(format!("big:{}", 16 << 20)).unwrap();
    let big = within_for(BIG, "16 MiB from the peer", rx.recv())
        .await
        .unwrap();
    let expected: Vec<u8> = (0..16 << 20).map(|i| (i % 251) as u8).collect();
    assert!(
        big.as_blob().is_some_and(|b| b[..] == expected[..]),
        "{peer:?}: 16 MiB from the peer"
    );
    ws.terminate();
    within("closed", ws.closed()).await;
}

fn describe(message: &Message) -> String {
    match message {
        Message::Text(t) => format!("{}-byte text", t.len()),
        Message::Blob(b) => format!("{}-byte binary", b.len()),
        Message::Object(_) => "JSON".to_owned(),
    }
}

/// Each side's context takeover switched off in turn, and the window sizes asked for.
async fn deflate_matrix(peer: Peer) {
    let default = PerMessageDeflate::default();
    for (mode, settings, expect) in [
        ("on", default.clone(), &["permessage-deflate"][..]),
        // A server may ignore this hint (Node ws does); the client keeps its promise anyway.
        (
            "on",
            default.clone().client_no_context_takeover(true),
            &["permessage-deflate"][..],
        ),
        (
            "on",
            default.clone().server_no_context_takeover(true),
            &["server_no_context_takeover"][..],
        ),
        (
            "on",
            default
                .clone()
                .server_max_window_bits(9)
                .client_max_window_bits(10),
            &["server_max_window_bits=9"][..],
        ),
        (
            "on",
            default.clone().threshold(0).level(1),
            &["permessage-deflate"][..],
        ),
        (
            "server-nct",
            default.clone(),
            &["server_no_context_takeover"][..],
        ),
        (
            "client-nct",
            default.clone(),
            &["client_no_context_takeover"][..],
        ),
    ] {
        let Some(server) = PeerServer::start(peer, None, mode) else {
            return;
        };
        exercise_deflate(
            peer,
            &format!("ws://127.0.0.1:{}/", server.port),
            settings,
            expect,
        )
        .await;
    }
    // A peer without compression: nothing negotiated, messages flow uncompressed.
    let Some(server) = PeerServer::start(peer, None, "off") else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let ws = WebSocket::connect(&format!("ws://127.0.0.1:{}/", server.port), Collector(tx))
        .await
        .unwrap();
    ws.send("extensions").unwrap();
    assert_eq!(within("extensions", rx.recv()).await.unwrap().to_text(), "");
    ws.send("x".repeat(5000)).unwrap();
    assert_eq!(
        within("echo", rx.recv())
            .await
            .unwrap()
            .as_text()
            .map(str::len),
        Some(5000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permessage_deflate_against_python_websockets() {
    deflate_matrix(Peer::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permessage_deflate_against_node_ws() {
    deflate_matrix(Peer::Node).await;
}

// ---------------------------------------------------------------------------------------------
// uWebSockets with context takeover (issue #10)

/// A TCP relay to `target` for one connection, counting the bytes each way: (port, from the
/// server, from the client). A byte is counted before it is passed on.
async fn counting_relay(
    target: u16,
) -> (
    u16,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (from_server, from_client) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let counts = (from_server.clone(), from_client.clone());
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = tokio::net::TcpStream::connect(("127.0.0.1", target))
            .await
            .unwrap();
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        tokio::spawn(pump(client_read, server_write, counts.1));
        pump(server_read, client_write, counts.0).await;
    });
    (port, from_server, from_client)
}

/// Copies `from` to `to`, counting the bytes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                count.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// uWebSockets' echo server with its dedicated compressor answers an offer without its
/// server-side parameters (issue #10: the default client refused the answer). The default client
/// connects with compression; a client that keeps its context (15-bit window, context takeover
/// offered) sends messages whose back-references reach up to 8 KiB into the messages before, and
/// uWebSockets' decompressor, which kept its context too, echoes them intact. (This peer sends
/// its own echoes uncompressed whatever their size: seen with RSV1 never set from 100 B to
/// 20 KB; the client's decompression with context is tested against a raw server in
/// tests/it/client.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permessage_deflate_against_uwebsockets_with_context_takeover() {
    use std::sync::atomic::Ordering;
    let Some(server) = PeerServer::start(Peer::UwsDeflate, None, "on") else {
        return;
    };

    // The default client: compression on offer, and uWebSockets' answer accepted.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let ws = WebSocket::connect(&format!("ws://127.0.0.1:{}/", server.port), Collector(tx))
        .await
        .expect("the default client connects to uWebSockets");
    let agreed = ws.compression().expect("permessage-deflate negotiated");
    assert_eq!(
        (agreed.decompress_window_bits, agreed.decompress_reset),
        (15, false),
        "uWebSockets keeps its 15-bit context: {agreed:?}"
    );
    assert!(agreed.compress_reset, "the client compresses as it offered");
    for message in deflate_messages()
        .into_iter()
        .filter(|m| size(m) <= 1 << 20)
    {
        ws.send(message.clone()).unwrap();
        let echo = within_for(BIG, "an echo", rx.recv()).await.unwrap();
        assert!(
            echo == message,
            "a {} message came back different",
            describe(&message)
        );
    }
    ws.terminate();
    within("closed", ws.closed()).await;

    // A client that keeps its compression context, through a relay that counts what it sends.
    let (port, _from_server, from_client) = counting_relay(server.port).await;
    let takeover = PerMessageDeflate::default()
        .client_no_context_takeover(false)
        .client_max_window_bits(15);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let ws = WebSocket::connect_with(
        &format!("ws://127.0.0.1:{port}/"),
        Collector(tx),
        ClientOptions::default().deflate(takeover),
    )
    .await
    .unwrap();
    let agreed = ws.compression().expect("permessage-deflate negotiated");
    assert_eq!(
        (agreed.compress_window_bits, agreed.compress_reset),
        (15, false)
    );

    // Hex digits of a fixed LCG: nothing DEFLATE can use inside one message, so a short
    // message on the wire can only be back-references into the messages before.
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
        noise[4096..].to_owned(),                        // 9 KiB back
    ];
    let mut wire = Vec::new();
    for message in &messages {
        let before = from_client.load(Ordering::SeqCst);
        ws.send(message.as_str()).unwrap();
        let echo = within("an echo", rx.recv()).await.unwrap();
        assert_eq!(
            echo.as_text(),
            Some(message.as_str()),
            "uWebSockets decoded it"
        );
        wire.push(from_client.load(Ordering::SeqCst) - before);
    }
    assert!(
        wire[0] > 3000 && wire[1..].iter().all(|&bytes| bytes < 1000),
        "bytes sent per message: {wire:?} (the later ones must be back-references)"
    );
    ws.terminate();
    within("closed", ws.closed()).await;
}

fn size(message: &Message) -> usize {
    message.as_text().map_or(0, str::len) + message.as_blob().map_or(0, |b| b.len())
}
