//! Heap bytes per idle server connection, by allocation site (dhat):
//! `cargo run --release -p ferrosock --example idle-memory [CONNECTIONS]`.
//!
//! A server in this process accepts CONNECTIONS clients that complete the opening handshake
//! and then send nothing; the clients are plain blocking sockets on another thread, which
//! allocate nothing on the heap. What the heap grew by is what the server keeps per idle
//! connection. Written to dhat-heap.json (open it in dhat's viewer) with a summary here.

use std::io::{Read, Write};
use std::time::Duration;

use ferrosock::{
    ConnectionEvent, ConnectionHandler, MessageEvent, ServerHandler, ServerOptions, WebServer,
    WebServerOptions, WebSocketConnection, WebSocketServer,
};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

struct Echo;
struct EchoConnection;

impl ServerHandler for Echo {
    type Connection = EchoConnection;
    fn on_connection(
        &self,
        _: &WebSocketServer<Self>,
        _: ConnectionEvent,
    ) -> Option<EchoConnection> {
        Some(EchoConnection)
    }
}

impl ConnectionHandler for EchoConnection {
    type Server = Echo;
    fn on_message(&self, ws: &WebSocketConnection<Echo>, event: MessageEvent) {
        let _ = ws.send(event.data);
    }
}

fn main() {
    let connections: usize = std::env::args()
        .nth(1)
        .map_or(2000, |n| n.parse().expect("a number"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let web = runtime
        .block_on(WebServer::start(
            WebServerOptions::default().listen("127.0.0.1:0"),
        ))
        .expect("listen");
    let _wss = WebSocketServer::new(
        &web,
        Echo,
        ServerOptions::default().max_connections(100_000),
    )
    .expect("attach");
    let addr = web.local_addr();
    let open = |count: usize| -> Vec<std::net::TcpStream> {
        (0..count)
            .map(|_| {
                let mut stream = std::net::TcpStream::connect(addr).expect("connect");
                stream
                    .write_all(
                        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                    )
                    .expect("write");
                let mut head = [0u8; 256];
                let n = stream.read(&mut head).expect("read");
                assert!(head[..n].starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head[..n]));
                stream
            })
            .collect()
    };
    // Warm up: process-wide state (the scratch buffer, timers, pools) is not per connection.
    let warm = open(100);
    std::thread::sleep(Duration::from_millis(500));
    let _profiler = dhat::Profiler::builder().build();
    let before = dhat::HeapStats::get();
    let clients = open(connections);
    std::thread::sleep(Duration::from_secs(1));
    let after = dhat::HeapStats::get();
    println!(
        "{connections} idle connections: heap {} -> {} bytes in {} -> {} blocks: {:.0} bytes and {:.1} blocks per connection",
        before.curr_bytes,
        after.curr_bytes,
        before.curr_blocks,
        after.curr_blocks,
        (after.curr_bytes - before.curr_bytes) as f64 / connections as f64,
        (after.curr_blocks - before.curr_blocks) as f64 / connections as f64,
    );
    drop((clients, warm));
}
