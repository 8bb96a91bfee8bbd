//! The web server and WebSocket servers over in-memory streams on paused time: the handshake
//! timeout, termination timeouts, the stop deadline, and what a server hears at its door.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::conn::Stream;
use crate::proto::{CloseCode, Decoded, Decoder, DecoderConfig, OpCode, OutFrame, Role};
use crate::{
    ConnectionEvent, ConnectionHandler, ErrorEvent, Limits, MessageEvent, ServerHandler,
    ServerOptions, ServerTerminateEvent, TerminateEvent, WebServer, WebServerOptions,
    WebSocketConnection, WebSocketServer,
};

/// Records every callback as a line.
struct Recorder(mpsc::UnboundedSender<String>);

struct Member;

impl ServerHandler for Recorder {
    type Connection = Member;

    fn on_connection(&self, _: &WebSocketServer<Self>, _: ConnectionEvent) -> Option<Member> {
        Some(Member)
    }

    fn on_error(&self, _: &WebSocketServer<Self>, event: ErrorEvent) {
        let e = &event.errors[0];
        let _ = self.0.send(format!(
            "server error {} {}",
            e.component_signature, e.err_code
        ));
    }

    fn on_terminate(&self, _: &WebSocketServer<Self>, _: ServerTerminateEvent) {
        let _ = self.0.send("server terminate".to_owned());
    }
}

impl ConnectionHandler for Member {
    type Server = Recorder;

    fn on_message(&self, ws: &WebSocketConnection<Recorder>, event: MessageEvent) {
        let _ = ws.send(event.data);
    }

    fn on_error(&self, ws: &WebSocketConnection<Recorder>, event: ErrorEvent) {
        let _ = ws
            .wss()
            .handler()
            .0
            .send(format!("error {}", event.errors[0].err_code));
    }

    fn on_terminate(&self, ws: &WebSocketConnection<Recorder>, event: TerminateEvent) {
        let _ = ws
            .wss()
            .handler()
            .0
            .send(format!("terminate {}", event.code));
    }
}

struct Setup {
    web: WebServer,
    wss: WebSocketServer<Recorder>,
    events: mpsc::UnboundedReceiver<String>,
}

impl Setup {
    async fn new(web_options: WebServerOptions, options: ServerOptions) -> Setup {
        let web = WebServer::start(web_options.listen("127.0.0.1:0"))
            .await
            .unwrap();
        let (tx, events) = mpsc::unbounded_channel();
        let wss = WebSocketServer::new(&web, Recorder(tx), options).unwrap();
        Setup { web, wss, events }
    }

    /// A connection served by the web server, as if accepted from a client.
    fn connect(&self) -> DuplexStream {
        self.connect_through(64 << 10)
    }

    /// [`connect`](Self::connect) through a "socket" of `capacity` bytes each way.
    fn connect_through(&self, capacity: usize) -> DuplexStream {
        let (client, server) = tokio::io::duplex(capacity);
        let remote: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        self.web.serve_stream(Stream::from_io(server), remote);
        client
    }

    /// An open WebSocket connection.
    async fn open(&mut self) -> Peer {
        let mut io = self.connect();
        io.write_all(UPGRADE.as_bytes()).await.unwrap();
        let mut buf = BytesMut::new();
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            assert_ne!(
                io.read_buf(&mut buf).await.unwrap(),
                0,
                "EOF in the handshake"
            );
        };
        assert!(buf.starts_with(b"HTTP/1.1 101"), "{buf:?}");
        let _ = buf.split_to(end);
        Peer {
            io,
            buf,
            decoder: Decoder::new(DecoderConfig {
                role: Role::Client,
                max_frame_size: 1 << 20,
                max_message_size: 1 << 20,
            }),
        }
    }

    async fn next(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(3600), self.events.recv())
            .await
            .expect("an event within an hour of paused time")
            .expect("the server is alive")
    }
}

const UPGRADE: &str = "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

struct Peer {
    io: DuplexStream,
    buf: BytesMut,
    decoder: Decoder,
}

impl Peer {
    async fn recv(&mut self) -> Option<Decoded> {
        loop {
            if let Some(decoded) = self.decoder.decode(&mut self.buf).unwrap() {
                return Some(decoded);
            }
            if self.io.read_buf(&mut self.buf).await.unwrap() == 0 {
                return None;
            }
        }
    }

    async fn send(&mut self, opcode: OpCode, payload: &[u8]) {
        let frame = OutFrame::new(
            Role::Client,
            opcode,
            Bytes::copy_from_slice(payload),
            || [1, 2, 3, 4],
        );
        self.io.write_all(frame.head()).await.unwrap();
        self.io.write_all(frame.payload()).await.unwrap();
    }
}

fn close_code(decoded: Option<Decoded>) -> u16 {
    match decoded {
        Some(Decoded::Close(Some(frame))) => frame.code.0,
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Issue #10: `terminate_with_timeout(8 s)` cut a silent peer after the connection's 5 s close
/// timeout. The termination's own timeout governs, longer or shorter.
#[tokio::test(start_paused = true)]
async fn a_termination_timeout_governs_whatever_the_close_timeout() {
    for wait in [Duration::from_secs(8), Duration::from_secs(2)] {
        let limits = Limits::default().close_timeout(Duration::from_secs(5));
        let mut setup = Setup::new(
            WebServerOptions::default(),
            ServerOptions::default().limits(limits),
        )
        .await;
        let mut peer = setup.open().await;
        let started = Instant::now();
        let terminating = setup.wss.terminate_with_timeout(wait);
        assert_eq!(close_code(peer.recv().await), 1000);
        // The peer never answers.
        assert_eq!(
            setup.next().await,
            "terminate 1006",
            "not an error: this side closed"
        );
        assert_eq!(
            started.elapsed(),
            wait,
            "cut when the termination's timeout ran out"
        );
        assert_eq!(setup.next().await, "server terminate");
        terminating.await;
        assert_eq!(peer.recv().await, None);
    }
}

#[tokio::test(start_paused = true)]
async fn terminate_waits_for_each_peer_within_the_close_timeout() {
    let limits = Limits::default().close_timeout(Duration::from_secs(5));
    let mut setup = Setup::new(
        WebServerOptions::default(),
        ServerOptions::default().limits(limits),
    )
    .await;
    let mut polite = setup.open().await;
    let mut silent = setup.open().await;
    let started = Instant::now();
    let terminating = setup.wss.terminate();
    assert_eq!(close_code(polite.recv().await), 1000);
    polite.send(OpCode::Close, &1000u16.to_be_bytes()).await;
    assert_eq!(setup.next().await, "terminate 1000");
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "the polite peer is done at once"
    );
    assert_eq!(close_code(silent.recv().await), 1000);
    assert_eq!(setup.next().await, "terminate 1006");
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(setup.next().await, "server terminate");
    terminating.await;
}

#[tokio::test(start_paused = true)]
async fn the_handshake_timeout_drops_a_request_head_that_does_not_end() {
    let options = WebServerOptions::default().handshake_timeout(Duration::from_secs(10));
    let mut setup = Setup::new(options, ServerOptions::default()).await;
    // Half a request head, then nothing; and nothing at all.
    let mut slow = setup.connect();
    let mut silent = setup.connect();
    let started = Instant::now();
    slow.write_all(b"GET /chat HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    for client in [&mut slow, &mut silent] {
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert!(
            rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"),
            "{rest:?}"
        );
    }
    // Meanwhile a complete request is served, and nothing reached the WebSocket server.
    let mut peer = setup.open().await;
    peer.send(OpCode::Text, b"still here").await;
    assert!(matches!(peer.recv().await, Some(Decoded::Text(t)) if &t[..] == "still here"));
    assert!(setup.events.try_recv().is_err());
}

/// Issue #10: the server's `on_error` did not hear of an upgrade it accepted that never became
/// a connection.
#[tokio::test(start_paused = true)]
async fn an_accepted_upgrade_that_fails_is_reported_to_the_server() {
    let mut setup = Setup::new(WebServerOptions::default(), ServerOptions::default()).await;
    // A 16-byte "socket": the server has accepted the upgrade once the first bytes of its 101
    // arrive, and cannot write the rest until the client reads.
    let mut client = setup.connect_through(16);
    client.write_all(UPGRADE.as_bytes()).await.unwrap();
    let mut first = [0u8; 8];
    client.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1");
    // The client leaves before the rest of the 101: the upgrade never completes.
    drop(client);
    assert_eq!(setup.next().await, "server error ferrosock 2");
    assert!(setup.wss.connections().is_empty());
    // The place it held is free again: max_connections are all available.
    let _peer = setup.open().await;
    assert_eq!(setup.wss.connections().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_client_refused_at_max_connections_is_reported_to_the_server() {
    let mut setup = Setup::new(
        WebServerOptions::default(),
        ServerOptions::default().max_connections(1),
    )
    .await;
    let _member = setup.open().await;
    let mut refused = setup.connect();
    refused.write_all(UPGRADE.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    refused.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 503");
    assert_eq!(setup.next().await, "server error ferrosock 3");
}

#[tokio::test(start_paused = true)]
async fn stop_is_bounded_by_one_shutdown_timeout() {
    let options = WebServerOptions::default().shutdown_timeout(Duration::from_secs(10));
    let mut setup = Setup::new(options, ServerOptions::default()).await;
    // A WebSocket peer that never answers the close, and an HTTP request that never ends.
    let mut mute = setup.open().await;
    let mut stuck = setup.connect();
    stuck
        .write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        .await
        .unwrap();
    tokio::task::yield_now().await;
    let started = Instant::now();
    let web = setup.web.clone();
    let stop = tokio::spawn(async move { web.stop().await });
    assert_eq!(close_code(mute.recv().await), 1001);
    stop.await.unwrap();
    // One deadline for both, not one after the other.
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    assert_eq!(
        setup.next().await,
        "terminate 1006",
        "a stop this side started: no on_error"
    );
    assert_eq!(setup.next().await, "server terminate");
    assert_eq!(mute.recv().await, None);
    let mut rest = Vec::new();
    stuck.read_to_end(&mut rest).await.unwrap();
}

/// Issue #10: an orderly stop this side starts called `on_error` with 1001 on every connection.
#[tokio::test(start_paused = true)]
async fn a_stop_is_not_an_error_but_a_peer_going_away_is() {
    let mut setup = Setup::new(WebServerOptions::default(), ServerOptions::default()).await;
    // A peer that leaves with 1001, as a browser tab does.
    let mut leaving = setup.open().await;
    leaving.send(OpCode::Close, &1001u16.to_be_bytes()).await;
    assert_eq!(close_code(leaving.recv().await), 1001);
    assert_eq!(setup.next().await, "error 1001");
    assert_eq!(setup.next().await, "terminate 1001");
    // A stop: close 1001 from this side, answered.
    let mut staying = setup.open().await;
    let web = setup.web.clone();
    let stop = tokio::spawn(async move { web.stop().await });
    assert_eq!(close_code(staying.recv().await), 1001);
    staying.send(OpCode::Close, &1001u16.to_be_bytes()).await;
    assert_eq!(setup.next().await, "terminate 1001");
    assert_eq!(setup.next().await, "server terminate");
    stop.await.unwrap();
    let _ = CloseCode::GOING_AWAY;
}
