//! The Rust-native ways in (issue #11): a server over streams the application accepted
//! (`WebSocketServer::detached` + `accept`), a client over a stream it opened
//! (`WebSocket::connect_over`), against Python `websockets` and Node `ws`; and backpressure a
//! producer waits on (`buffered_amount`, `writable`).

use std::future::Future;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use bytes::BytesMut;
use ferrosock::proto::{Decoded, Decoder, DecoderConfig, Role};
use ferrosock::{
    ClientOptions, ConnectionEvent, ConnectionHandler, DataType, ErrorKind, Limits, MessageEvent,
    OpenEvent, ServerHandler, ServerOptions, Status, WebSocket, WebSocketConnection,
    WebSocketServer,
};
use ferrosock_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Echoes every message (binary as binary on the servers of `detached`); refuses clients whose URL has `refuse` in it. With `burst`, sends
/// that many 1 KiB messages on open, each after awaiting room (`writable`).
struct Echo {
    burst: usize,
    /// What the burst saw: the most bytes queued, and the errors of `send`.
    seen: watch::Sender<(usize, Vec<ErrorKind>)>,
}

struct EchoConnection;

impl ServerHandler for Echo {
    type Connection = EchoConnection;

    fn on_connection(
        &self,
        _: &WebSocketServer<Self>,
        e: ConnectionEvent,
    ) -> Option<EchoConnection> {
        (!e.request.url().contains("refuse")).then_some(EchoConnection)
    }
}

impl ConnectionHandler for EchoConnection {
    type Server = Echo;

    fn on_open(&self, ws: &WebSocketConnection<Echo>, _: OpenEvent) {
        let burst = ws.wss().handler().burst;
        if burst == 0 {
            return;
        }
        let ws = ws.clone();
        tokio::spawn(async move {
            for n in 0..burst {
                let message = format!("{n:>1024}");
                ws.writable(message.len()).await;
                let queued = ws.buffered_amount();
                let sent = ws.send(message);
                ws.wss().handler().seen.send_modify(|seen| {
                    seen.0 = seen.0.max(queued);
                    if let Err(err) = sent {
                        seen.1.push(err.kind());
                    }
                });
            }
        });
    }

    fn on_message(&self, ws: &WebSocketConnection<Echo>, event: MessageEvent) {
        let _ = ws.send(event.data);
    }
}

/// A detached server, and the address of a listener whose streams it accepts.
async fn detached(burst: usize, limits: Limits) -> (WebSocketServer<Echo>, SocketAddr) {
    let echo = Echo {
        burst,
        seen: watch::Sender::default(),
    };
    let wss = WebSocketServer::detached(
        echo,
        ServerOptions::default()
            .limits(limits)
            .data_type(DataType::Auto),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = wss.clone();
    tokio::spawn(async move {
        while let Ok((stream, remote)) = listener.accept().await {
            let server = server.clone();
            tokio::spawn(async move {
                let _ = server.accept(stream, remote).await;
            });
        }
    });
    (wss, addr)
}

const PYTHON_CLIENT: &str = r#"
import asyncio, sys
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

async def main(url):
    async with asyncio.timeout(20):
        try:
            async with connect(url + "/refuse") as ws:
                print("refused: no")
        except InvalidStatus as e:
            print("refused:", e.response.status_code)
        async with connect(url + "/any/path?x=1") as ws:
            await ws.send("hello κόσμε")
            text = await ws.recv()
            await ws.send(b"\x00\xff" * 3000)
            blob = await ws.recv()
            deflate = [type(e).__name__ for e in ws.protocol.extensions]
            print("text:", text, "blob:", len(blob), "deflate:", deflate)
        print("close:", ws.close_code)

asyncio.run(main(sys.argv[1]))
"#;

const NODE_CLIENT: &str = r#"
const WebSocket = require('ws');
const url = process.argv[1];
const timer = setTimeout(() => { console.log('timeout'); process.exit(1); }, 20000);
const refused = new WebSocket(url + '/refuse');
refused.on('unexpected-response', (req, res) => {
  console.log('refused:', res.statusCode);
  const ws = new WebSocket(url + '/any/path?x=1', { perMessageDeflate: true });
  const got = [];
  ws.on('open', () => ws.send('hello κόσμε'));
  ws.on('message', (data, isBinary) => {
    got.push(data);
    if (got.length === 1) ws.send(Buffer.alloc(6000, 0xff));
    else {
      console.log('text:', got[0].toString(), 'blob:', got[1].length, 'deflate:', ws.extensions);
      ws.close(1000);
    }
  });
  ws.on('close', (code) => { console.log('close:', code); clearTimeout(timer); });
});
refused.on('open', () => { console.log('refused: no'); process.exit(1); });
"#;

/// Runs a peer's client program; its output, or `None` when the peer is not installed.
async fn run_client(python: bool, url: &str) -> Option<String> {
    let program = if python { PYTHON_CLIENT } else { NODE_CLIENT };
    let mut command = inline_peer(python, program)?;
    command
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let output = within("the peer's client", command.output()).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}");
    Some(stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_over_accepted_streams_serves_python_websockets() {
    let (_wss, addr) = detached(0, Limits::default()).await;
    let Some(out) = run_client(true, &format!("ws://{addr}")).await else {
        return;
    };
    assert_eq!(
        out,
        "refused: 403\ntext: hello κόσμε blob: 6000 deflate: ['PerMessageDeflate']\nclose: 1000\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_over_accepted_streams_serves_node_ws() {
    let (_wss, addr) = detached(0, Limits::default()).await;
    let Some(out) = run_client(false, &format!("ws://{addr}")).await else {
        return;
    };
    assert_eq!(
        out,
        "refused: 403\ntext: hello κόσμε blob: 6000 deflate: permessage-deflate\nclose: 1000\n"
    );
}

/// A refused or malformed request gets its HTTP answer on the stream, and `accept` says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_answers_refusals_on_the_stream_and_returns_the_status() {
    let echo = Echo {
        burst: 0,
        seen: watch::Sender::default(),
    };
    let wss = WebSocketServer::detached(echo, ServerOptions::default()).unwrap();
    let remote: SocketAddr = "127.0.0.1:9".parse().unwrap();
    for (request, status) in [
        (upgrade_request("/refuse", &[]), 403),
        (upgrade_request("/", &["Sec-WebSocket-Version: 8"]), 426),
        ("GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(), 400),
        ("NOT HTTP\r\n\r\n".to_owned(), 400),
        // No body on an upgrade: what follows the head is frames.
        (upgrade_request("/", &["Content-Length: 5"]), 400),
        (
            upgrade_request("/", &[&format!("Cookie: {}", "c".repeat(40 << 10))]),
            431,
        ),
    ] {
        let (ours, mut theirs) = tokio::io::duplex(64 << 10);
        theirs.write_all(request.as_bytes()).await.unwrap();
        let err = within("accept", wss.accept(ours, remote))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Handshake, "{request:?}");
        assert_eq!(err.http_status(), Some(status), "{request:?}");
        let mut answer = String::new();
        within("the answer", theirs.read_to_string(&mut answer))
            .await
            .unwrap();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{request:?}: {answer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_own_stream_against_python_and_node() {
    for peer in [Peer::Python, Peer::Node] {
        let Some(server) = PeerServer::start(peer, None, "on") else {
            return;
        };
        let url = format!("ws://127.0.0.1:{}/", server.port);
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        let (probe, mut events) = ClientProbe::new();
        let ws = WebSocket::connect_over(&url, tcp, probe, ClientOptions::default())
            .await
            .unwrap_or_else(|err| panic!("{peer:?}: {err}"));
        events.expect(&["open status=Connected"]).await;
        assert!(
            ws.compression().is_some(),
            "{peer:?}: deflate over the stream"
        );
        let long = "over my own stream ".repeat(100);
        ws.send("hello").unwrap();
        ws.send(long.as_str()).unwrap();
        events.expect(&["message Text(hello)"]).await;
        events.expect(&[&format!("message Text({long})")]).await;
        ws.terminate();
        within("the end", ws.closed()).await;
        assert_eq!(ws.status(), Status::Closed);
    }
}

/// A producer that awaits `writable` before each send never overruns the budget of a slow
/// reader: nothing is refused, the queue stays within the budget, and every message arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_that_awaits_room_loses_nothing_to_a_slow_reader() {
    const BUDGET: usize = 64 << 10;
    const COUNT: usize = 600; // about 10 budgets of 1 KiB messages
    let limits = Limits::default().max_outgoing_bytes(BUDGET);
    let echo = Echo {
        burst: COUNT,
        seen: watch::Sender::default(),
    };
    let mut seen = echo.seen.subscribe();
    let wss = WebSocketServer::detached(echo, ServerOptions::default().limits(limits)).unwrap();
    // A 4 KiB pipe: the server's writes stall as soon as the reader pauses.
    let (ours, mut theirs) = tokio::io::duplex(4 << 10);
    theirs
        .write_all(upgrade_request("/", &[]).as_bytes())
        .await
        .unwrap();
    within("accept", wss.accept(ours, "127.0.0.1:9".parse().unwrap()))
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    let head_end = loop {
        within("the 101", theirs.read_buf(&mut buf)).await.unwrap();
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    assert!(buf.starts_with(b"HTTP/1.1 101 "));
    let _ = buf.split_to(head_end);
    // The reader pauses: the producer fills the budget, then waits for room.
    within(
        "the budget to fill",
        seen.wait_for(|seen| seen.0 >= BUDGET / 2),
    )
    .await
    .unwrap();
    let mut decoder = Decoder::new(DecoderConfig {
        role: Role::Client,
        max_frame_size: 1 << 20,
        max_message_size: 1 << 20,
    });
    for n in 0..COUNT {
        let message = loop {
            if let Some(decoded) = decoder.decode(&mut buf).unwrap() {
                break decoded;
            }
            within("a message", theirs.read_buf(&mut buf))
                .await
                .unwrap();
        };
        match message {
            Decoded::Text(text) => assert_eq!(text.trim_start(), n.to_string()),
            other => panic!("message {n}: {other:?}"),
        }
    }
    let (most, errors) = seen.borrow().clone();
    assert!(errors.is_empty(), "refused sends: {errors:?}");
    assert!(most <= BUDGET, "{most} bytes queued, budget {BUDGET}");
    wss.terminate_with_timeout(Duration::ZERO).await;
}

/// A request head as large as the web server accepts (cookies of 16 KiB) is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_takes_request_heads_as_large_as_the_web_servers() {
    let (_wss, addr) = detached(0, Limits::default()).await;
    let cookie = format!("Cookie: {}", "c".repeat(16 << 10));
    let mut client = RawClient::try_connect(addr, &upgrade_request("/", &[&cookie]))
        .await
        .expect("a 101");
    client.send_text("big head").await;
    assert_eq!(client.recv_text().await, "big head");
}

/// A producer may await room before the socket is open: it waits for the opening, then sends.
/// The server takes the connection only once the wait has begun, so that the socket is still
/// opening whatever the machine's speed (a server answering at once raced the first check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writable_waits_for_a_connecting_socket_to_open() {
    let wss = WebSocketServer::detached(
        Echo {
            burst: 0,
            seen: watch::Sender::default(),
        },
        ServerOptions::default(),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (probe, mut events) = ClientProbe::new();
    let ws = WebSocket::new(&format!("ws://{addr}/"), probe).unwrap();
    let (stream, remote) = within("the client's connection", listener.accept())
        .await
        .unwrap();
    // Nobody answers its opening handshake yet.
    assert_eq!(ws.status(), Status::Connecting);
    let mut room = std::pin::pin!(ws.writable(5));
    let waiting =
        std::future::poll_fn(|cx| std::task::Poll::Ready(room.as_mut().poll(cx).is_pending()))
            .await;
    assert!(waiting, "room before the socket is open");
    tokio::spawn(async move {
        let _ = wss.accept(stream, remote).await;
    });
    within("room", room).await;
    ws.send("early").unwrap();
    events.expect(&["open status=Connected"]).await;
    events.expect(&["message Text(early)"]).await;
}
