//! Measures what permessage-deflate costs a connection in heap memory, with dhat's allocator
//! counting every byte: `cargo run --release -p ferrosock --example deflate-memory`.
//!
//! 1. The compressor and the decompressor of one endpoint: their state (allocated while a
//!    message is compressed or decompressed) and what they keep between messages, after a
//!    16 KiB message, for several settings.
//! 2. End to end: the heap of a server and its clients, in this process, with 200 connections
//!    that each exchanged one compressed message, against the same with compression off.
//!    Docs: docs/DEFLATE.md.

use std::time::Duration;

use ferrosock::proto::deflate::{Deflater, Inflater};
use ferrosock::{
    ClientHandler, ClientOptions, ConnectionEvent, ConnectionHandler, MessageEvent,
    PerMessageDeflate, ServerHandler, ServerOptions, WebServer, WebServerOptions, WebSocket,
    WebSocketConnection, WebSocketServer,
};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn heap() -> (usize, usize) {
    let stats = dhat::HeapStats::get();
    (stats.curr_bytes, stats.max_bytes)
}

/// A JSON-like message of `len` bytes, compressible as real traffic is.
fn message(len: usize) -> Vec<u8> {
    let unit = br#"{"symbol":"ABC","price":101.25,"volume":1200,"venue":"XNAS","ts":1732500000},"#;
    unit.iter().copied().cycle().take(len).collect()
}

fn codec_row(name: &str, window_bits: u8, reset: bool, mem_level: u8) {
    let input = message(16 * 1024);
    // The state itself: measured on a compressor that keeps it.
    let (base, _) = heap();
    let mut keeper = Deflater::new(window_bits, false, 6, mem_level);
    let compressed = keeper.compress(&input);
    let deflate_state = heap().0 - base - compressed.len();
    let (base, _) = heap();
    let mut inflater = Inflater::new(window_bits, false);
    let output = inflater
        .decompress(&compressed, 1 << 20)
        .expect("valid data");
    let inflate_state = heap().0 - base - output.len();
    drop((keeper, inflater, output));

    // What stays between messages with these settings.
    let (base, _) = heap();
    let mut deflater = Deflater::new(window_bits, reset, 6, mem_level);
    let compressed = deflater.compress(&input);
    let mut inflater = Inflater::new(window_bits, reset);
    let output = inflater
        .decompress(&compressed, 1 << 20)
        .expect("valid data");
    drop((compressed, output));
    let kept = heap().0 - base;
    println!(
        "| {name} | {window_bits} | {mem_level} | {} | {:.1} KiB | {:.1} KiB | {:.1} KiB |",
        if reset { "no" } else { "yes" },
        deflate_state as f64 / 1024.0,
        inflate_state as f64 / 1024.0,
        kept as f64 / 1024.0,
    );
}

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

struct Waiter(tokio::sync::mpsc::UnboundedSender<()>);

impl ClientHandler for Waiter {
    fn on_message(&self, _: &WebSocket<Self>, _: MessageEvent) {
        let _ = self.0.send(());
    }
}

/// Heap bytes per connection (server and client ends together) with `settings`.
async fn per_connection(settings: PerMessageDeflate, connections: usize) -> f64 {
    let web = WebServer::start(WebServerOptions::default().listen("127.0.0.1:0"))
        .await
        .expect("listen");
    let _wss = WebSocketServer::new(
        &web,
        Echo,
        ServerOptions::default().deflate(settings.clone()),
    )
    .expect("attach");
    let url = format!("ws://{}/", web.local_addr());
    // One connection first, so that lazily built process-wide state is not counted.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let options = ClientOptions::default()
        .deflate(settings)
        .limits(ferrosock::Limits::default());
    let warm = WebSocket::connect_with(&url, Waiter(tx.clone()), options.clone())
        .await
        .expect("connect");
    warm.send(message(4096)).expect("send");
    rx.recv().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (base, _) = heap();
    let mut sockets = Vec::new();
    for _ in 0..connections {
        let ws = WebSocket::connect_with(&url, Waiter(tx.clone()), options.clone())
            .await
            .expect("connect");
        ws.send(message(4096)).expect("send");
        sockets.push(ws);
    }
    for _ in 0..connections {
        rx.recv().await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (after, _) = heap();
    let per = (after - base) as f64 / connections as f64;
    for ws in &sockets {
        ws.terminate();
    }
    for ws in &sockets {
        ws.closed().await;
    }
    web.stop().await;
    per
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    println!("Codec memory of one endpoint (zlib-rs), around a 16 KiB message:\n");
    println!("| settings | window bits | mem_level | context takeover | compressor state | decompressor state | kept between messages |");
    println!("|---|---|---|---|---|---|---|");
    codec_row("ferrosock default", 12, true, 5);
    codec_row("ferrosock windows, context takeover", 12, false, 5);
    codec_row("zlib defaults, context takeover", 15, false, 8);
    codec_row("zlib defaults, no context takeover", 15, true, 8);
    codec_row("smallest window and mem_level", 9, false, 1);

    let n = 200;
    let plain = per_connection(PerMessageDeflate::disabled(), n).await;
    let default = per_connection(PerMessageDeflate::default(), n).await;
    let takeover = per_connection(
        PerMessageDeflate::default()
            .server_no_context_takeover(false)
            .client_no_context_takeover(false),
        n,
    )
    .await;
    println!("\nEnd to end, {n} connections each after one 4 KiB compressed echo (server and client ends together):\n");
    println!("| settings | heap per connection | of which permessage-deflate |");
    println!("|---|---|---|");
    println!("| compression off | {:.1} KiB | - |", plain / 1024.0);
    println!(
        "| default (no context takeover) | {:.1} KiB | {:.1} KiB |",
        default / 1024.0,
        (default - plain) / 1024.0
    );
    println!(
        "| context takeover both ways | {:.1} KiB | {:.1} KiB |",
        takeover / 1024.0,
        (takeover - plain) / 1024.0
    );
}
