//! Support for ferrosock's integration tests: a raw WebSocket client that sends exact bytes,
//! raw HTTP requests, and a probe handler that records every callback it gets.

#![allow(missing_debug_implementations)] // test support only

#[path = "net_peers.rs"]
pub mod net_peers;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferrosock::proto::{
    CloseCode, CloseFrame, Decoded, Decoder, DecoderConfig, OpCode, OutFrame, Role,
};
use ferrosock::{
    ConnectionEvent, ConnectionHandler, ErrorEvent, MessageEvent, OpenEvent, ServerHandler,
    ServerOptions, ServerTerminateEvent, TerminateEvent, WebServer, WebServerOptions,
    WebSocketConnection, WebSocketServer,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Every wait in the tests is bounded by this: generous, since it costs time only when a test
/// fails, and a loaded 2-core machine can be slow (it is never an upper bound on how long
/// something should take).
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `future` or panics after [`TIMEOUT`].
pub async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    within_for(TIMEOUT, what, future).await
}

/// Runs `future` or panics after `limit` (for the waits that move megabytes).
pub async fn within_for<F: std::future::Future>(
    limit: Duration,
    what: &str,
    future: F,
) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// A web server on a free loopback port.
pub async fn web_server() -> WebServer {
    web_server_with(WebServerOptions::default()).await
}

/// A loopback port that refuses connections for as long as the returned socket lives: bound,
/// never listening, so no other test or process can take it meanwhile (unlike a port probed
/// with a listener and released).
pub fn refusing_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

/// A web server on the IPv6 loopback, `[::1]`, or `None` where the machine has none: a skip
/// outside CI, a failure under `CI=true` (where IPv6 is part of what is tested).
pub async fn ipv6_web_server() -> Option<WebServer> {
    match WebServer::start(WebServerOptions::default().listen("[::1]:0")).await {
        Ok(web) => Some(web),
        Err(err) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "no IPv6 loopback ([::1]) under CI=true: {err}"
            );
            eprintln!("no IPv6 loopback here ({err}): skipped");
            None
        }
    }
}

/// A web server on a free loopback port, with other options.
pub async fn web_server_with(options: WebServerOptions) -> WebServer {
    WebServer::start(options.listen("127.0.0.1:0"))
        .await
        .expect("web server starts")
}

// ---------------------------------------------------------------------------------------------
// Raw client

/// The key of RFC 6455's example handshake, and the answer it must get.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A WebSocket client that speaks frame by frame, for sending exactly the bytes a test needs.
pub struct RawClient {
    stream: TcpStream,
    buf: BytesMut,
    decoder: Decoder,
    /// The response head of the handshake.
    pub response: String,
}

/// The answer to an HTTP request: status, head and body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One masked client frame, as the bytes on the wire.
pub fn client_frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut header = ferrosock::proto::FrameHeader::new(opcode, payload.len() as u64, Some(key));
    header.fin = fin;
    let mut masked = payload.to_vec();
    ferrosock::proto::mask::apply_mask(&mut masked, key);
    let frame = OutFrame::with_header(header, masked.into());
    [frame.head(), &frame.payload()[..]].concat()
}

/// An upgrade request for `path` with the usual headers plus `extra` lines ("Name: value").
pub fn upgrade_request(path: &str, extra: &[&str]) -> String {
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for line in extra {
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request
}

impl RawClient {
    /// Connects and completes the handshake; panics unless the answer is 101.
    pub async fn connect(addr: SocketAddr, path: &str) -> RawClient {
        match RawClient::try_connect(addr, &upgrade_request(path, &[])).await {
            Ok(client) => client,
            Err(response) => panic!("upgrade to {path} refused: {}", response.head),
        }
    }

    /// Sends `request` (a whole handshake) and returns the client on 101, the response otherwise.
    pub async fn try_connect(
        addr: SocketAddr,
        request: impl AsRef<[u8]>,
    ) -> Result<RawClient, HttpResponse> {
        let mut stream = within("connect", TcpStream::connect(addr))
            .await
            .expect("connects");
        stream.set_nodelay(true).unwrap();
        stream.write_all(request.as_ref()).await.unwrap();
        let (head, rest) = read_head(&mut stream).await;
        let status = status_of(&head);
        if status != 101 {
            let body = read_body(&mut stream, &head, rest).await;
            return Err(HttpResponse { status, head, body });
        }
        let accept = format!("sec-websocket-accept: {}", ACCEPT.to_ascii_lowercase());
        assert!(head.contains(&accept), "{head}");
        Ok(RawClient {
            stream,
            buf: BytesMut::from(&rest[..]),
            decoder: Decoder::new(DecoderConfig {
                role: Role::Client,
                max_frame_size: 1 << 30,
                max_message_size: 1 << 30,
            }),
            response: head,
        })
    }

    /// Sends one masked frame.
    pub async fn send_frame(&mut self, fin: bool, opcode: OpCode, payload: &[u8]) {
        self.send_raw(&client_frame(fin, opcode, payload)).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send_frame(true, OpCode::Text, text.as_bytes()).await;
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.send_frame(true, OpCode::Binary, bytes).await;
    }

    /// Sends a close frame with a code and reason.
    pub async fn send_close(&mut self, code: u16, reason: &str) {
        let frame = OutFrame::close(Role::Client, CloseCode(code), reason, || [1, 2, 3, 4]);
        self.send_raw(&[frame.head(), frame.payload()].concat())
            .await;
    }

    /// Sends bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("write to the server");
    }

    /// The next frame from the server (pings included), or `None` at EOF.
    pub async fn recv(&mut self) -> Option<Decoded> {
        within("a frame from the server", async {
            loop {
                if let Some(decoded) = self
                    .decoder
                    .decode(&mut self.buf)
                    .expect("valid server frames")
                {
                    return Some(decoded);
                }
                self.buf.reserve(64 * 1024);
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
    }

    /// The next data message; pings and pongs are skipped.
    pub async fn recv_message(&mut self) -> Decoded {
        loop {
            match self.recv().await {
                Some(Decoded::Ping(_) | Decoded::Pong(_)) => continue,
                Some(other) => return other,
                None => panic!("connection closed while waiting for a message"),
            }
        }
    }

    /// The next text message.
    pub async fn recv_text(&mut self) -> String {
        match self.recv_message().await {
            Decoded::Text(text) => text.to_string(),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// Waits for the server's close frame (skipping anything before it).
    pub async fn recv_close(&mut self) -> Option<CloseFrame> {
        loop {
            match self.recv().await {
                Some(Decoded::Close(frame)) => return frame,
                Some(_) => continue,
                None => panic!("connection closed without a close frame"),
            }
        }
    }

    /// Waits for EOF; panics if a frame other than `allowed` comes first.
    pub async fn expect_eof(&mut self) {
        within("EOF", async {
            loop {
                self.buf.clear();
                self.buf.reserve(4096);
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
    }

    /// The close code of the server's close frame, after a full close handshake started by
    /// the server: answers it, then expects EOF.
    pub async fn answer_close(&mut self) -> Option<CloseFrame> {
        let frame = self.recv_close().await;
        let code = frame.as_ref().map_or(1000, |f| f.code.0);
        self.send_close(code, "").await;
        self.expect_eof().await;
        frame
    }

    /// Drops the TCP connection without a close frame.
    pub fn drop_connection(self) {
        drop(self.stream);
    }
}

/// Sends raw bytes over a fresh connection and reads the whole HTTP response.
pub async fn http_request(addr: SocketAddr, request: &str) -> HttpResponse {
    let mut stream = within("connect", TcpStream::connect(addr))
        .await
        .expect("connects");
    stream.write_all(request.as_bytes()).await.unwrap();
    let (head, rest) = read_head(&mut stream).await;
    let body = read_body(&mut stream, &head, rest).await;
    HttpResponse {
        status: status_of(&head),
        head,
        body,
    }
}

/// A GET request for `path` that closes the connection after the answer.
pub async fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Reads an HTTP head, lower-cased (names and values), and the bytes after it.
async fn read_head(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let (head, rest) = read_raw_head(stream).await;
    (head.to_ascii_lowercase(), rest)
}

/// Reads an HTTP head as it came, and the bytes after it.
pub async fn read_raw_head(stream: &mut TcpStream) -> (String, Vec<u8>) {
    within("an HTTP head", async {
        let mut buf = Vec::new();
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                return (head, buf[end + 4..].to_vec());
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read the response");
            assert!(
                n > 0,
                "connection closed before a response: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
}

async fn read_body(stream: &mut TcpStream, head: &str, mut body: Vec<u8>) -> Vec<u8> {
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    within("an HTTP body", async {
        while length.is_none_or(|len| body.len() < len) {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    body
}

fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Probe handler

/// What a probe connection does with the messages it gets.
#[derive(Clone, Debug, Default)]
pub enum Behavior {
    /// Sends every message back.
    #[default]
    Echo,
    /// Records messages and sends nothing.
    Silent,
    /// Panics in `on_message` when the message text is "panic", echoes otherwise.
    PanicOn(&'static str),
    /// Panics in `on_open`.
    PanicOnOpen,
    /// Sends this many copies of each message back (to fill a budget).
    Flood(usize),
    /// Blocks the thread in `on_message` when the message text is the trigger, until the gate
    /// opens, as a synchronous database call would; echoes every message.
    BlockUntil(&'static str, std::sync::Arc<Gate>),
}

/// A gate that handlers block on (the thread really blocks) until the test opens it.
#[derive(Debug, Default)]
pub struct Gate {
    open: Mutex<bool>,
    opened: std::sync::Condvar,
    /// Handlers blocked on it so far.
    entered: AtomicUsize,
    entering: tokio::sync::Notify,
}

impl Gate {
    /// Blocks the calling thread until the gate is open.
    pub fn block(&self) {
        self.entered.fetch_add(1, Ordering::SeqCst);
        self.entering.notify_waiters();
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }

    /// Waits until `count` handlers are blocked on the gate.
    pub async fn entered(&self, count: usize) {
        within("the handlers to block", async {
            loop {
                let notified = self.entering.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.entered.load(Ordering::SeqCst) >= count {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }

    /// Opens the gate: every blocked handler goes on.
    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// A server handler that records every callback as a line of text on a channel.
pub struct Probe {
    events: mpsc::UnboundedSender<String>,
    /// `on_connection` returns `None` (refuse) when set.
    pub refuse: bool,
    pub panic_on_connection: bool,
    pub behavior: Behavior,
    /// State shared through `handler()`: counts `on_connection` calls.
    pub connections_seen: AtomicUsize,
    /// Errors returned by `send` in `Flood`.
    pub send_errors: Mutex<Vec<ferrosock::ErrorKind>>,
}

/// The receiving end of a probe's event lines.
pub struct Events(mpsc::UnboundedReceiver<String>);

impl Probe {
    pub fn new(behavior: Behavior) -> (Probe, Events) {
        let (tx, rx) = mpsc::unbounded_channel();
        let probe = Probe {
            events: tx,
            refuse: false,
            panic_on_connection: false,
            behavior,
            connections_seen: AtomicUsize::new(0),
            send_errors: Mutex::new(Vec::new()),
        };
        (probe, Events(rx))
    }

    fn record(&self, line: String) {
        let _ = self.events.send(line);
    }
}

impl Events {
    /// The next event line.
    pub async fn next(&mut self) -> String {
        within("a callback", self.0.recv())
            .await
            .expect("the probe is alive")
    }

    /// The next event lines, which must be `expected` in order.
    pub async fn expect(&mut self, expected: &[&str]) {
        for want in expected {
            let got = self.next().await;
            assert_eq!(&got, want, "callback sequence");
        }
    }

    /// The next event line, which must start with `prefix`.
    pub async fn expect_prefix(&mut self, prefix: &str) -> String {
        let got = self.next().await;
        assert!(
            got.starts_with(prefix),
            "expected {prefix:?}..., got {got:?}"
        );
        got
    }

    /// The next event line if one is already there, without waiting.
    pub fn try_next(&mut self) -> Option<String> {
        self.0.try_recv().ok()
    }

    /// Asserts that no event arrives within `wait`.
    pub async fn expect_none(&mut self, wait: Duration) {
        if let Ok(Some(line)) = tokio::time::timeout(wait, self.0.recv()).await {
            panic!("unexpected callback: {line}");
        }
    }
}

/// The ids in a server's registry, in order, relative to `base` (the first connection's id).
fn registry(wss: &WebSocketServer<Probe>, me: u64) -> String {
    let ids: Vec<String> = wss
        .connections()
        .iter()
        .map(|c| {
            if c.id() == me {
                "me".to_owned()
            } else {
                "other".to_owned()
            }
        })
        .collect();
    format!("[{}]", ids.join(","))
}

impl ServerHandler for Probe {
    type Connection = ProbeConnection;

    fn on_connection(
        &self,
        wss: &WebSocketServer<Self>,
        event: ConnectionEvent,
    ) -> Option<ProbeConnection> {
        self.connections_seen.fetch_add(1, Ordering::SeqCst);
        let request = event.request;
        self.record(format!(
            "server connection {} from {} registry={}",
            request.url(),
            request.remote_address(),
            wss.connections().len()
        ));
        if self.panic_on_connection {
            panic!("on_connection exploded");
        }
        (!self.refuse).then_some(ProbeConnection { request })
    }

    fn on_open(&self, wss: &WebSocketServer<Self>, _: OpenEvent) {
        self.record(format!("server open terminated={}", wss.terminated()));
    }

    fn on_terminate(&self, wss: &WebSocketServer<Self>, event: ServerTerminateEvent) {
        self.record(format!(
            "server {} terminated={} connections={}",
            event.event_type(),
            wss.terminated(),
            wss.connections().len()
        ));
    }

    fn on_error(&self, _: &WebSocketServer<Self>, event: ErrorEvent) {
        let e = &event.errors[0];
        self.record(format!(
            "server error {} {}: {}",
            e.err_code, e.component_signature, e.message
        ));
    }
}

/// How the probes record a message: `Text(the text)`, `Blob(b"the bytes")`, `Object(json)`;
/// one over 64 KiB as its length and a hash of its bytes (formatting megabytes would make a
/// debug-build test crawl), e.g. `Blob(16777216 bytes, fnv 1f2e...)`.
pub fn shown(message: &ferrosock::Message) -> String {
    use ferrosock::Message;
    let bytes: &[u8] = match message {
        Message::Text(t) => t.as_bytes(),
        Message::Blob(b) => b,
        Message::Object(v) => return format!("Object({v})"),
    };
    let kind = if message.as_text().is_some() {
        "Text"
    } else {
        "Blob"
    };
    if bytes.len() > 64 << 10 {
        return format!("{kind}({} bytes, fnv {:016x})", bytes.len(), fnv1a(bytes));
    }
    match message {
        Message::Text(t) => format!("Text({t})"),
        _ => format!("Blob({:?})", Bytes::copy_from_slice(bytes)),
    }
}

/// FNV-1a, 64 bits.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Sends `data` back; once the connection is closing there is nobody to answer.
fn echo(ws: &WebSocketConnection<Probe>, data: ferrosock::Message) {
    if let Err(err) = ws.send(data) {
        assert!(err.is_not_connected(), "echo failed: {err}");
    }
}

/// The connection handler of [`Probe`]; keeps the request it was accepted with.
pub struct ProbeConnection {
    pub request: ferrosock::Request,
}

impl ConnectionHandler for ProbeConnection {
    type Server = Probe;

    fn on_open(&self, ws: &WebSocketConnection<Probe>, event: OpenEvent) {
        let probe = ws.wss().handler();
        probe.record(format!(
            "{} status={} registry={}",
            event.event_type(),
            ws.status(),
            registry(ws.wss(), ws.id())
        ));
        if let Behavior::PanicOnOpen = probe.behavior {
            panic!("on_open exploded");
        }
    }

    fn on_message(&self, ws: &WebSocketConnection<Probe>, event: MessageEvent) {
        let probe = ws.wss().handler();
        probe.record(format!("message {}", shown(&event.data)));
        match &probe.behavior {
            Behavior::Echo => echo(ws, event.data),
            Behavior::Silent | Behavior::PanicOnOpen => {}
            Behavior::PanicOn(trigger) => {
                if event.data.as_text() == Some(trigger) {
                    panic!("on_message exploded");
                }
                echo(ws, event.data);
            }
            Behavior::BlockUntil(trigger, gate) => {
                if event.data.as_text() == Some(trigger) {
                    gate.block();
                }
                echo(ws, event.data);
            }
            Behavior::Flood(copies) => {
                for _ in 0..*copies {
                    if let Err(err) = ws.send(event.data.clone()) {
                        probe.send_errors.lock().unwrap().push(err.kind());
                        break;
                    }
                }
            }
        }
    }

    fn on_error(&self, ws: &WebSocketConnection<Probe>, event: ErrorEvent) {
        let e = &event.errors[0];
        ws.wss().handler().record(format!(
            "error {} {}: {}",
            e.err_code, e.component_signature, e.message
        ));
    }

    fn on_terminate(&self, ws: &WebSocketConnection<Probe>, event: TerminateEvent) {
        ws.wss().handler().record(format!(
            "terminate {} {:?} clean={} status={} registry={}",
            event.code,
            event.reason,
            event.was_clean,
            ws.status(),
            registry(ws.wss(), ws.id())
        ));
    }
}

/// A probe server on a fresh web server; `on_open`'s event is consumed.
pub async fn probe_server(
    behavior: Behavior,
    options: ServerOptions,
) -> (WebServer, WebSocketServer<Probe>, Events) {
    let web = web_server().await;
    let (probe, mut events) = Probe::new(behavior);
    let wss = WebSocketServer::new(&web, probe, options).expect("server attaches");
    events.expect(&["server open terminated=false"]).await;
    (web, wss, events)
}

/// Shorthand for a text payload as the decoder returns it.
pub fn text(s: &str) -> Decoded {
    Decoded::Text(s.into())
}

/// Shorthand for a binary payload as the decoder returns it.
pub fn binary(b: &[u8]) -> Decoded {
    Decoded::Binary(Bytes::copy_from_slice(b))
}

// ---------------------------------------------------------------------------------------------
// Client probe

/// A client handler that records every callback as a line of text.
pub struct ClientProbe {
    events: mpsc::UnboundedSender<String>,
    pub data_type: ferrosock::DataType,
    pub headers: ferrosock::Params,
    /// Panics in `on_message` when the message text is this.
    pub panic_on: Option<&'static str>,
}

impl ClientProbe {
    pub fn new() -> (ClientProbe, Events) {
        let (tx, rx) = mpsc::unbounded_channel();
        let probe = ClientProbe {
            events: tx,
            data_type: ferrosock::DataType::Text,
            headers: ferrosock::Params::default(),
            panic_on: None,
        };
        (probe, Events(rx))
    }

    fn record(&self, line: String) {
        let _ = self.events.send(line);
    }
}

impl ferrosock::ClientHandler for ClientProbe {
    fn on_open(&self, ws: &ferrosock::WebSocket<Self>, event: OpenEvent) {
        self.record(format!("{} status={}", event.event_type(), ws.status()));
    }

    fn on_message(&self, _ws: &ferrosock::WebSocket<Self>, event: MessageEvent) {
        self.record(format!("message {}", shown(&event.data)));
        if self.panic_on.is_some() && event.data.as_text() == self.panic_on {
            panic!("client on_message exploded");
        }
    }

    fn on_error(&self, _ws: &ferrosock::WebSocket<Self>, event: ErrorEvent) {
        let e = &event.errors[0];
        self.record(format!(
            "error {} {}: {}",
            e.err_code, e.component_signature, e.message
        ));
    }

    fn on_terminate(&self, ws: &ferrosock::WebSocket<Self>, event: TerminateEvent) {
        self.record(format!(
            "terminate {} {:?} clean={} status={}",
            event.code,
            event.reason,
            event.was_clean,
            ws.status()
        ));
    }

    fn on_reconnect(&self, ws: &ferrosock::WebSocket<Self>, event: ferrosock::ReconnectEvent) {
        self.record(format!(
            "reconnect attempt={} delay={}ms status={}",
            event.attempt,
            event.delay.as_millis(),
            ws.status()
        ));
    }

    fn data_type(&self) -> ferrosock::DataType {
        self.data_type
    }

    fn headers(&self) -> ferrosock::Params {
        self.headers.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Test PKI

/// A private CA and a server certificate it signed (for `localhost`, `127.0.0.1` and `::1`),
/// written as PEM files into a fresh folder; plus a second CA that signed nothing.
pub struct TestPki {
    pub dir: std::path::PathBuf,
    pub ca: std::path::PathBuf,
    pub other_ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl TestPki {
    /// A CA and a certificate for localhost in a folder of their own, removed on drop: each
    /// call gets its own folder, so that tests running side by side never remove each other's.
    pub fn generate(name: &str) -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let folder = format!("ferrosock-pki-{name}-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        let ca = |common_name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
            let cert = params.self_signed(&key).unwrap();
            (cert.pem(), Issuer::new(params, key))
        };
        let (ca_pem, issuer) = ca("ferrosock test CA");
        let (other_pem, _) = ca("an unrelated CA");
        let key = KeyPair::generate().unwrap();
        let names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let pki = TestPki {
            ca: dir.join("ca.pem"),
            other_ca: dir.join("other-ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
        };
        std::fs::write(&pki.ca, ca_pem).unwrap();
        std::fs::write(&pki.other_ca, other_pem).unwrap();
        std::fs::write(&pki.cert, cert.pem()).unwrap();
        std::fs::write(&pki.key, key.serialize_pem()).unwrap();
        pki
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// Raw server

/// A TCP server for one connection that answers the opening request with `answer` (a function
/// of the request's `Sec-WebSocket-Key`), then sends `then` and keeps the socket open.
pub async fn raw_server(
    answer: impl Fn(&str) -> String + Send + 'static,
    then: Vec<u8>,
) -> (SocketAddr, tokio::task::JoinHandle<TcpStream>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let (head, _) = read_raw_head(&mut stream).await;
        let key = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_default();
        stream.write_all(answer(&key).as_bytes()).await.unwrap();
        stream.write_all(&then).await.unwrap();
        stream
    });
    (addr, task)
}

/// A valid 101 answer to a request with `key`.
pub fn switching_protocols(key: &str) -> String {
    let accept = ferrosock::proto::handshake::accept_key(key.as_bytes());
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept.to_str().unwrap()
    )
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A peer server process, killed when dropped.
pub struct PeerServer {
    child: std::process::Child,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebSocket server nobody here wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// Python `websockets` (tests/interop/python_server.py).
    Python,
    /// Node `ws` (tests/interop/node_server.mjs).
    Node,
    /// `../shared/tools/uws/uws_echo_deflate`: uWebSockets' echo server with its dedicated
    /// compressor (permessage-deflate with context takeover). Echoes only.
    UwsDeflate,
}

/// The repository's root folder.
pub fn repo_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Whether the peer `what`, found at `installed`, is there. Outside CI a missing peer skips
/// the test that needs it; under CI=true it is a failure.
pub fn peer_installed(installed: &std::path::Path, what: &str) -> bool {
    if installed.exists() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} peer missing ({}): run scripts/install-peers",
        installed.display()
    );
    eprintln!("{what} peer not installed: skipped (scripts/install-peers installs it)");
    false
}

/// A command that runs `program` (Python source with Python `websockets`, or JavaScript with
/// Node `ws`) from the peers' folders; `None` when that peer is not installed (outside CI).
pub fn inline_peer(python: bool, program: &str) -> Option<tokio::process::Command> {
    let peers = repo_root().join(".peers");
    let installed = if python {
        peers.join("py/bin/python")
    } else {
        peers.join("node/node_modules/ws")
    };
    if !peer_installed(&installed, if python { "Python" } else { "Node" }) {
        return None;
    }
    let command = if python {
        let mut command = tokio::process::Command::new(peers.join("py/bin/python"));
        command.arg("-c").arg(program);
        command
    } else {
        let mut command = tokio::process::Command::new("node");
        command
            .arg("-e")
            .arg(program)
            .env("NODE_PATH", peers.join("node/node_modules"));
        command
    };
    Some(command)
}

impl PeerServer {
    /// Starts the peer on a port of its own choosing, or returns `None` when it is not
    /// installed (outside CI).
    pub fn start(peer: Peer, pki: Option<&TestPki>, deflate: &str) -> Option<PeerServer> {
        PeerServer::start_at(peer, pki, deflate, 0)
    }

    /// [`start`](Self::start) on `port` (0: one of its choosing): to restart a peer where its
    /// clients will look for it. Python and Node only.
    pub fn start_at(
        peer: Peer,
        pki: Option<&TestPki>,
        deflate: &str,
        port: u16,
    ) -> Option<PeerServer> {
        let root = repo_root();
        let peers = root.join(".peers");
        let uws = root.join("../shared/tools/uws/uws_echo_deflate");
        let (program, script, installed) = match peer {
            Peer::Python => (
                peers.join("py/bin/python"),
                Some(root.join("tests/interop/python_server.py")),
                peers.join("py/bin/python"),
            ),
            Peer::Node => (
                std::path::PathBuf::from("node"),
                Some(root.join("tests/interop/node_server.mjs")),
                peers.join("node/node_modules/ws"),
            ),
            Peer::UwsDeflate => (uws.clone(), None, uws),
        };
        if !peer_installed(&installed, &format!("{peer:?}")) {
            return None;
        }
        let mut command = std::process::Command::new(program);
        if let Some(script) = script {
            // Port 0: the peer binds a free port itself and prints it ("READY PORT").
            command
                .arg(script)
                .arg(port.to_string())
                .env("NODE_PATH", peers.join("node/node_modules"))
                .arg("--deflate")
                .arg(deflate);
            if let Some(pki) = pki {
                command.arg("--tls").arg(&pki.cert).arg(&pki.key);
            }
        } else {
            // uWebSockets binds port 0 to a free port but prints the 0: the port is read from
            // the process's listening socket.
            command.arg("0");
        }
        command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        let mut child = command.spawn().expect("the peer server starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
            let ready = lines.next().and_then(Result::ok);
            let _ = tx.send(ready);
            // Keep draining, so that the peer never blocks on a full pipe.
            for _ in lines {}
        });
        let ready = rx.recv_timeout(Duration::from_secs(30));
        let port = match (peer, &ready) {
            (Peer::UwsDeflate, Ok(Some(line))) if line.starts_with("Listening") => {
                listening_port(child.id(), Duration::from_secs(30))
            }
            (_, Ok(Some(line))) => line
                .strip_prefix("READY ")
                .and_then(|port| port.trim().parse().ok())
                .unwrap_or(0),
            _ => 0,
        };
        if port == 0 {
            let _ = child.kill();
            panic!("{peer:?} peer server did not start: {ready:?}");
        }
        Some(PeerServer { child, port })
    }
}

/// The TCP port process `pid` listens on (its first listening socket), read from /proc once it
/// appears: for peers that bind port 0 without saying which port they got. Waits up to
/// `limit` for the socket; panics after that.
pub fn listening_port(pid: u32, limit: Duration) -> u16 {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(port) = listening_port_now(pid) {
            return port;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} listens on no TCP port after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn listening_port_now(pid: u32) -> Option<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|entry| {
            let target = std::fs::read_link(entry.ok()?.path()).ok()?;
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            if *state == "0A" && inodes.iter().any(|i| i == inode) {
                let port = local.rsplit(':').next()?;
                return u16::from_str_radix(port, 16).ok();
            }
        }
    }
    None
}
