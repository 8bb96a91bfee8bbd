//! What a byte budget promises, measured in live heap bytes (issue #10, item 3).
//!
//! A binary of its own, with a counting global allocator: every allocation of the process is
//! counted, so the scenarios run one after the other in a single test. Each one has a chat
//! member that never reads (a socket with a 4 KiB receive buffer) and a sender whose messages
//! the server broadcasts to it; the member's queue fills up to its budget and it is cut with
//! 1008. The heap may grow by the budget plus a small fixed margin (the scratch and read
//! buffers, a decompressor) while that happens — before, compressed 64 KiB messages made it
//! grow by twice the budget — and must come back down once the member is cut.
//!
//! Last, idle connections: each holds its task, driver and shared state, and no buffer of its
//! handshake (issue #11: hyper's read buffer was once kept alive for a connection's life).

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ferrosock::proto::deflate::Deflater;
use ferrosock::proto::{FrameHeader, OpCode, OutFrame};
use ferrosock::{
    ConnectionEvent, ConnectionHandler, Limits, MessageEvent, ServerHandler, ServerOptions,
    TerminateEvent, WebServer, WebServerOptions, WebSocketConnection, WebSocketServer,
};
use ferrosock_tests::{upgrade_request, within_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// The system allocator, counting the bytes live and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as it came; the caller upholds `alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as it came; the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as it came; the caller upholds `realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            let live = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Starts a new high-water mark from the bytes live now.
fn reset_peak() -> usize {
    let now = live();
    PEAK.store(now, Ordering::Relaxed);
    now
}

fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------------
// A chat server: each message goes to every other member.

struct Chat(mpsc::UnboundedSender<u16>);
struct Member;

impl ServerHandler for Chat {
    type Connection = Member;

    fn on_connection(&self, _: &WebSocketServer<Self>, _: ConnectionEvent) -> Option<Member> {
        Some(Member)
    }
}

impl ConnectionHandler for Member {
    type Server = Chat;

    fn on_message(&self, ws: &WebSocketConnection<Chat>, event: MessageEvent) {
        ws.wss().broadcast(event.data, Some(ws.id()));
    }

    fn on_terminate(&self, ws: &WebSocketConnection<Chat>, event: TerminateEvent) {
        let _ = ws.wss().handler().0.send(event.code);
    }
}

/// A member that never reads: its receive buffer is 4 KiB, so what the server sends it piles up
/// in the server's queue.
async fn stalled_member(addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(upgrade_request("/", &[]).as_bytes())
        .await
        .unwrap();
    read_head(&mut stream).await;
    stream
}

/// Reads an HTTP head byte by byte (nothing after it is consumed) and checks it is a 101.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    head
}

/// One masked client frame.
fn frame(payload: &[u8], compressed: bool) -> Vec<u8> {
    let mut header = FrameHeader::new(OpCode::Text, payload.len() as u64, Some([1, 2, 3, 4]));
    header.rsv1 = compressed;
    let mut masked = payload.to_vec();
    ferrosock::proto::mask::apply_mask(&mut masked, [1, 2, 3, 4]);
    let frame = OutFrame::with_header(header, Bytes::from(masked));
    [frame.head(), &frame.payload()[..]].concat()
}

/// Text that compresses about 3:1, like chat or JSON.
fn text(len: usize, seed: u32) -> String {
    let mut state = seed;
    let words = [
        "price",
        "volume",
        "ferrosock",
        "message",
        "alpha",
        "bravo",
        "charlie",
        "delta",
        "echo",
    ];
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        out.push_str(words[(state >> 28) as usize % words.len()]);
        out.push(char::from(b'a' + (state >> 20) as u8 % 26));
        out.push(' ');
    }
    out.truncate(len);
    out
}

struct Scenario {
    name: &'static str,
    budget: usize,
    message_len: usize,
    messages: usize,
    compressed: bool,
}

/// Runs one scenario: returns (growth at the peak, growth once the member was cut).
async fn run(scenario: &Scenario) -> (usize, isize) {
    let limits = Limits::default()
        .max_outgoing_bytes(scenario.budget)
        .max_message_size(1 << 20)
        .close_timeout(Duration::from_secs(1));
    let web = WebServer::start(WebServerOptions::default().listen("127.0.0.1:0"))
        .await
        .unwrap();
    let (tx, mut ended) = mpsc::unbounded_channel();
    let _wss =
        WebSocketServer::new(&web, Chat(tx), ServerOptions::default().limits(limits)).unwrap();
    let addr = web.local_addr();
    let member = stalled_member(addr).await;
    let mut sender = TcpStream::connect(addr).await.unwrap();
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits";
    let extra: &[&str] = if scenario.compressed { &[offer] } else { &[] };
    sender
        .write_all(upgrade_request("/", extra).as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut sender).await;
    assert_eq!(
        head.contains("permessage-deflate"),
        scenario.compressed,
        "{head}"
    );
    // The server answers client_no_context_takeover and a 12-bit client window: each message
    // is compressed on its own.
    let mut deflater = Deflater::new(12, true, 6, 8);
    let frames: Vec<Vec<u8>> = (0..scenario.messages)
        .map(|i| {
            let text = text(scenario.message_len, i as u32);
            if scenario.compressed {
                frame(&deflater.compress(text.as_bytes()), true)
            } else {
                frame(text.as_bytes(), false)
            }
        })
        .collect();
    // Warm up: the worker threads' scratch buffers and the runtime's structures exist before
    // the baseline is taken, once the server has answered a ping sent after the first message.
    sender.write_all(&frames[0]).await.unwrap();
    round_trip(&mut sender).await;
    let baseline = reset_peak();

    for frame in &frames[1..] {
        sender.write_all(frame).await.unwrap();
    }
    let code = within_for(Duration::from_secs(60), "the stalled member's end", async {
        ended.recv().await.unwrap()
    });
    // The member is cut as soon as its queue is full, long before every message is sent; it
    // never answers the close frame, so its end comes after the close timeout (1 s).
    let code = code.await;
    assert_eq!(
        code, 1008,
        "{}: the stalled member is cut by its budget",
        scenario.name
    );
    let grown = peak() - baseline;
    // Everything the sender sent has been read and broadcast (to nobody now) once the server
    // answers a ping sent after it.
    round_trip(&mut sender).await;
    let after = live() as isize - baseline as isize;
    drop(member);
    drop(sender);
    web.stop().await;
    (grown, after)
}

/// A ping and its pong: the server has handled everything the sender sent before.
async fn round_trip(sender: &mut TcpStream) {
    let header = FrameHeader::new(OpCode::Ping, 0, Some([1, 2, 3, 4]));
    let ping = OutFrame::with_header(header, Bytes::new()).head().to_vec();
    sender.write_all(&ping).await.unwrap();
    let mut pong = [0u8; 2];
    within_for(
        Duration::from_secs(60),
        "the pong",
        sender.read_exact(&mut pong),
    )
    .await
    .unwrap();
    assert_eq!(pong, [0x8a, 0], "a pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_holds_its_budget_and_no_more() {
    for scenario in [
        Scenario {
            name: "64 KiB messages",
            budget: 8 << 20,
            message_len: 64 << 10,
            messages: 400,
            compressed: false,
        },
        Scenario {
            name: "64 KiB messages, compressed",
            budget: 8 << 20,
            message_len: 64 << 10,
            messages: 400,
            compressed: true,
        },
        Scenario {
            // Each message costs its place in the queue: 20-byte payloads are most of all
            // overhead, and the budget must count it.
            name: "20-byte messages",
            budget: 1 << 20,
            message_len: 20,
            messages: 60_000,
            compressed: false,
        },
    ] {
        let (grown, after) = run(&scenario).await;
        // The worker threads' read buffers, a decompressor, the message in flight.
        let margin = (256 << 10) + scenario.budget / 16;
        eprintln!(
            "{}: budget {} KiB, heap grew by {} KiB at the peak, {} KiB once cut",
            scenario.name,
            scenario.budget >> 10,
            grown >> 10,
            after >> 10
        );
        assert!(
            grown <= scenario.budget + margin,
            "{}: the heap grew by {grown} bytes for a budget of {}",
            scenario.name,
            scenario.budget
        );
        assert!(
            after <= margin as isize,
            "{}: {after} bytes still live once the member was cut",
            scenario.name
        );
    }
    idle_connections_hold_no_buffer().await;
}

/// An idle connection holds no buffer of the handshake: not hyper's read buffer, not the
/// request's. Each costs its task, its driver and its shared state, about 1.5 KB with the
/// test's client side; a buffer of the handshake kept alive (an 8 KiB read buffer, as once
/// after the upgrade core's first version) would make it several times that.
async fn idle_connections_hold_no_buffer() {
    const IDLE: usize = 200;
    let web = WebServer::start(WebServerOptions::default().listen("127.0.0.1:0"))
        .await
        .unwrap();
    let (tx, _ended) = mpsc::unbounded_channel();
    let wss = WebSocketServer::new(&web, Chat(tx), ServerOptions::default()).unwrap();
    let addr = web.local_addr();
    // Warm up: the runtime's structures and the threads' scratch exist before the baseline.
    let mut first = TcpStream::connect(addr).await.unwrap();
    first
        .write_all(upgrade_request("/", &[]).as_bytes())
        .await
        .unwrap();
    read_head(&mut first).await;
    round_trip(&mut first).await;
    let baseline = live();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(upgrade_request("/", &[]).as_bytes())
            .await
            .unwrap();
        read_head(&mut stream).await;
        round_trip(&mut stream).await; // the connection is running, its handshake behind it
        idle.push(stream);
    }
    assert_eq!(wss.connections().len(), IDLE + 1);
    let per_connection = (live() - baseline) / IDLE;
    eprintln!("idle connections: {per_connection} bytes each, both sides");
    assert!(
        per_connection <= 4096,
        "{per_connection} bytes live per idle connection"
    );
    drop(idle);
    web.stop().await;
}
