//! ferrosock's client against WebSocket servers nobody here wrote: Python `websockets` and
//! Node `ws` (tests/interop/python_server.py, node_server.mjs), over ws:// and wss://.
//!
//! The peers are installed by scripts/install-peers. Without them these tests say so and pass,
//! except under CI=true, where a missing peer is a failure.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferrosock::{ClientOptions, DataType, Params, WebSocket};
use ferrosock_tests::*;

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
    fn start(peer: Peer, pki: Option<&TestPki>) -> Option<PeerServer> {
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
    let Some(server) = PeerServer::start(Peer::Python, None) else {
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
    let Some(server) = PeerServer::start(Peer::Node, None) else {
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
    let Some(server) = PeerServer::start(Peer::Python, Some(&pki)) else {
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
    let Some(server) = PeerServer::start(Peer::Node, Some(&pki)) else {
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
