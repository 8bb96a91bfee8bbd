//! ferrosock's client against WebSocket servers nobody here wrote: Python `websockets` and
//! Node `ws` (tests/interop/python_server.py, node_server.mjs), over ws:// and wss://.
//!
//! The peers are installed by scripts/install-peers. Without them these tests say so and pass,
//! except under CI=true, where a missing peer is a failure.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferrosock::{
    ClientHandler, ClientOptions, DataType, Message, MessageEvent, Params, PerMessageDeflate,
    WebSocket,
};
use ferrosock_tests::*;
use tokio::sync::mpsc;

/// A peer server process, killed when dropped.
struct PeerServer {
    child: Child,
    port: u16,
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, Debug)]
enum Peer {
    Python,
    Node,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

impl PeerServer {
    /// Starts the peer on a free port, or returns `None` when it is not installed (outside CI).
    fn start(peer: Peer, pki: Option<&TestPki>, deflate: &str) -> Option<PeerServer> {
        let root = repo_root();
        let peers = root.join(".peers");
        let (program, script, installed) = match peer {
            Peer::Python => (
                peers.join("py/bin/python"),
                root.join("tests/interop/python_server.py"),
                peers.join("py/bin/python"),
            ),
            Peer::Node => (
                PathBuf::from("node"),
                root.join("tests/interop/node_server.mjs"),
                peers.join("node/node_modules/ws"),
            ),
        };
        if !installed.exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{peer:?} peer missing ({}): run scripts/install-peers",
                installed.display()
            );
            eprintln!("{peer:?} peer not installed: skipped (scripts/install-peers installs it)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(program);
        command
            .arg(script)
            .arg(port.to_string())
            .env("NODE_PATH", peers.join("node/node_modules"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(pki) = pki {
            command.arg("--tls").arg(&pki.cert).arg(&pki.key);
        }
        command.arg("--deflate").arg(deflate);
        let mut child = command.spawn().expect("the peer server starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let ready = BufReader::new(stdout).lines().next().and_then(Result::ok);
            let _ = tx.send(ready);
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(line)) if line == "READY" => Some(PeerServer { child, port }),
            other => {
                let _ = child.kill();
                panic!("{peer:?} peer server did not start: {other:?}");
            }
        }
    }
}

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

/// Everything a client must get right against one peer at `base` (ws:// or wss://).
async fn exercise(peer: Peer, base: &str, options: ClientOptions) {
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
    ws.send(big.clone()).unwrap();
    let line = events.next().await;
    assert_eq!(
        line.len(),
        "message Blob(b\"\")".len() + escaped_len(&big),
        "{peer:?}: 16 MiB echo"
    );
    ws.send(format!("big:{}", 16 << 20)).unwrap();
    let line = events.next().await;
    assert_eq!(
        line.len(),
        "message Blob(b\"\")".len() + escaped_len(&big),
        "{peer:?}: 16 MiB from the peer"
    );

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

/// The length of `{:?}` of bytes as `Bytes` prints them, to compare without building 64 MiB
/// strings twice.
fn escaped_len(bytes: &[u8]) -> usize {
    let shown = format!("{:?}", bytes::Bytes::copy_from_slice(bytes));
    shown.len() - 3 // b"..."
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
    let options = ClientOptions::default().deflate(settings.clone());
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
