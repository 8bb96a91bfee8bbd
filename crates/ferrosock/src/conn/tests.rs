//! The driver through its entry point, [`run`](super::run), over in-memory streams on paused
//! time: timers to the tick, partial reads and writes, a reader that stalls, cancellation.
//!
//! `tokio::io::duplex` stands for the socket; the test plays the peer on its other end. Time is
//! paused (`start_paused`): the runtime jumps to the next timer whenever every task waits, so a
//! 60 s idle timeout takes no wall-clock time and fires exactly when it should.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{run, Callbacks, Command, DriverConfig, Ending, SendError, Shared};
use crate::common::Status;
use crate::common::{Compress, Incoming};
use crate::limits::Limits;
use crate::proto::deflate::{Negotiated, PerMessageDeflate};
use crate::proto::{CloseCode, Decoded, Decoder, DecoderConfig, OpCode, OutFrame, Role};

/// What the driver told the layer above.
#[derive(Debug)]
enum Event {
    Message(Incoming),
    End(Ending),
}

struct Recorder {
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<Event>,
}

impl Callbacks for Recorder {
    fn shared(&self) -> &Shared {
        &self.shared
    }

    fn on_message(&mut self, message: Incoming) {
        let _ = self.events.send(Event::Message(message));
    }

    fn on_end(self, ending: Ending) {
        let _ = self.events.send(Event::End(ending));
    }
}

/// The test's end of the connection: a WebSocket client written by hand.
struct Peer {
    io: DuplexStream,
    decoder: Decoder,
    buf: BytesMut,
}

impl Peer {
    async fn send(&mut self, opcode: OpCode, payload: &[u8]) {
        let frame = client_frame(opcode, payload);
        self.io.write_all(&frame).await.unwrap();
    }

    async fn send_close(&mut self, code: u16) {
        let payload = crate::proto::close::encode_payload(CloseCode(code), "");
        self.send(OpCode::Close, &payload).await;
    }

    /// The next frame from the driver, or `None` at EOF.
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
}

fn client_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let frame = OutFrame::new(
        Role::Client,
        opcode,
        Bytes::copy_from_slice(payload),
        || [0x37, 0xfa, 0x21, 0x3d],
    );
    [frame.head(), &frame.payload()[..]].concat()
}

struct Driven {
    shared: Arc<Shared>,
    peer: Peer,
    events: mpsc::UnboundedReceiver<Event>,
    task: tokio::task::JoinHandle<()>,
}

impl Driven {
    /// The next event, which must come (the test fails rather than hang).
    async fn next(&mut self) -> Event {
        tokio::time::timeout(Duration::from_secs(3600), self.events.recv())
            .await
            .expect("an event within an hour of paused time")
            .expect("the driver reports its end")
    }

    async fn ending(&mut self) -> Ending {
        match self.next().await {
            Event::End(ending) => ending,
            other => panic!("expected the end, got {other:?}"),
        }
    }

    fn send(&self, payload: &'static [u8]) -> Result<(), SendError> {
        self.shared
            .send_data(OpCode::Binary, Bytes::from_static(payload), Compress::Auto)
    }
}

/// A server-side driver on an in-memory stream of `capacity` bytes each way.
fn drive(limits: &Limits, capacity: usize) -> Driven {
    drive_with(limits, capacity, None)
}

/// [`drive`], with permessage-deflate as `deflate` settled it.
fn drive_with(limits: &Limits, capacity: usize, deflate: Option<Negotiated>) -> Driven {
    let (ours, theirs) = tokio::io::duplex(capacity);
    let shared = Arc::new(Shared::new(
        Role::Server,
        Status::Connected,
        limits.max_outgoing_bytes,
        limits.backpressure,
    ));
    shared.set_deflate(deflate, &PerMessageDeflate::default());
    let (tx, events) = mpsc::unbounded_channel();
    let callbacks = Recorder {
        shared: shared.clone(),
        events: tx,
    };
    let config = DriverConfig::new(Role::Server, limits);
    let task = tokio::spawn(run(ours, BytesMut::new(), config, callbacks));
    let decoder = Decoder::new(DecoderConfig {
        role: Role::Client,
        max_frame_size: 1 << 30,
        max_message_size: 1 << 30,
    });
    Driven {
        shared,
        peer: Peer {
            io: theirs,
            decoder,
            buf: BytesMut::new(),
        },
        events,
        task,
    }
}

fn close_frame(decoded: Option<Decoded>) -> u16 {
    match decoded {
        Some(Decoded::Close(Some(frame))) => frame.code.0,
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_pinged_at_the_keepalive_interval_and_dropped_at_the_idle_timeout() {
    let limits = Limits::default()
        .keepalive_interval(Some(Duration::from_secs(30)))
        .idle_timeout(Some(Duration::from_secs(60)));
    let started = Instant::now();
    let mut driven = drive(&limits, 64 << 10);
    assert!(matches!(driven.peer.recv().await, Some(Decoded::Ping(_))));
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(30),
        "the ping's time"
    );
    let ending = driven.ending().await;
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(60),
        "the idle timeout's time"
    );
    assert_eq!(ending.code, CloseCode::ABNORMAL);
    assert!(
        ending.cause.as_deref().unwrap().contains("idle timeout"),
        "{ending:?}"
    );
    assert!(ending.is_error(), "a peer gone silent is an error");
    assert_eq!(driven.shared.status(), Status::Closed);
    // The socket was dropped without a close frame.
    assert_eq!(driven.peer.recv().await, None);
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_answers_pings_stays_connected() {
    let limits = Limits::default()
        .keepalive_interval(Some(Duration::from_secs(30)))
        .idle_timeout(Some(Duration::from_secs(60)));
    let started = Instant::now();
    let mut driven = drive(&limits, 64 << 10);
    // Ten minutes of pings, each answered.
    for n in 1..=10u64 {
        match driven.peer.recv().await {
            Some(Decoded::Ping(payload)) => driven.peer.send(OpCode::Pong, &payload).await,
            other => panic!("expected a ping, got {other:?}"),
        }
        // Silence is counted in ticks: a pong just after a tick resets it at the next one, so
        // the next ping comes two intervals later.
        assert_eq!(started.elapsed(), Duration::from_secs(30 + 60 * (n - 1)));
    }
    assert_eq!(driven.shared.status(), Status::Connected);
    assert!(driven.events.try_recv().is_err(), "nothing ended");
    driven.peer.send_close(1000).await;
    assert_eq!(close_frame(driven.peer.recv().await), 1000);
    let ending = driven.ending().await;
    assert!(ending.was_clean && ending.code == CloseCode::NORMAL);
}

#[tokio::test(start_paused = true)]
async fn the_close_timeout_ends_a_close_handshake_that_the_peer_does_not_answer() {
    let limits = Limits::default().close_timeout(Duration::from_secs(5));
    let mut driven = drive(&limits, 64 << 10);
    let started = Instant::now();
    driven.shared.command(Command::Close {
        code: CloseCode::NORMAL,
        reason: String::new(),
        timeout: None,
    });
    assert_eq!(close_frame(driven.peer.recv().await), 1000);
    let ending = driven.ending().await;
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(ending.code, CloseCode::ABNORMAL);
    assert!(
        !ending.is_error(),
        "a close this side started is not an error"
    );
}

/// Issue #10: a server's `terminate_with_timeout(8 s)` cut a silent peer after the
/// connection's 5 s close timeout. The timeout given with the close governs, longer or shorter.
#[tokio::test(start_paused = true)]
async fn a_close_with_its_own_timeout_waits_that_long_and_no_other() {
    let limits = Limits::default().close_timeout(Duration::from_secs(5));
    for wait in [Duration::from_secs(8), Duration::from_secs(1)] {
        let mut driven = drive(&limits, 64 << 10);
        let started = Instant::now();
        driven.shared.command(Command::Close {
            code: CloseCode::GOING_AWAY,
            reason: String::new(),
            timeout: Some(wait),
        });
        assert_eq!(close_frame(driven.peer.recv().await), 1001);
        let ending = driven.ending().await;
        assert_eq!(started.elapsed(), wait);
        assert!(ending
            .cause
            .unwrap()
            .contains(&format!("within {} s", wait.as_secs())));
    }
}

#[tokio::test(start_paused = true)]
async fn a_frame_that_arrives_a_byte_at_a_time_is_one_message() {
    let mut driven = drive(&Limits::default(), 64 << 10);
    let text = "κόσμε, one byte at a time";
    let frame = client_frame(OpCode::Text, text.as_bytes());
    for byte in &frame {
        driven.peer.io.write_all(&[*byte]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    match driven.next().await {
        Event::Message(Incoming::Text(got)) => assert_eq!(&got[..], text),
        other => panic!("expected the text, got {other:?}"),
    }
    // And two frames in one write are two messages.
    let two = [
        client_frame(OpCode::Binary, b"one"),
        client_frame(OpCode::Binary, b"two"),
    ]
    .concat();
    driven.peer.io.write_all(&two).await.unwrap();
    for expected in [&b"one"[..], b"two"] {
        match driven.next().await {
            Event::Message(Incoming::Binary(got)) => assert_eq!(&got[..], expected),
            other => panic!("expected {expected:?}, got {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_reader_that_stalls_fills_its_budget_and_is_closed_with_1008() {
    // 4 KiB of "socket" each way, a 64 KiB budget.
    let limits = Limits::default().max_outgoing_bytes(64 << 10);
    let mut driven = drive(&limits, 4 << 10);
    static KIB: [u8; 1024] = [b'x'; 1024];
    let mut sent = 0;
    let refused = loop {
        match driven.send(&KIB) {
            Ok(()) => sent += 1,
            Err(err) => break err,
        }
        // Let the driver write what the socket takes.
        tokio::task::yield_now().await;
    };
    assert!(
        matches!(refused, SendError::BufferFull { .. }),
        "{refused:?}"
    );
    // What the budget holds (each message costs its place in the queue too), plus the few
    // the socket took.
    let fit = (64 << 10) / super::budget::cost(1024);
    assert!(
        (fit..=fit + 5).contains(&sent),
        "{sent} messages of 1 KiB queued, {fit} fit"
    );
    assert_eq!(driven.shared.status(), Status::Closing);
    // The peer reads at last: what the socket held, then at once the close frame (the queue
    // was dropped: the peer was not reading it).
    let mut messages = 0;
    let code = loop {
        match driven.peer.recv().await {
            Some(Decoded::Binary(_)) => messages += 1,
            other => break close_frame(other),
        }
    };
    assert_eq!(code, 1008);
    assert!(messages < sent, "{messages} of {sent} reached the peer");
    driven.peer.send_close(1008).await;
    let ending = driven.ending().await;
    assert_eq!(ending.code, CloseCode::POLICY_VIOLATION);
    assert!(ending.is_error());
}

#[tokio::test(start_paused = true)]
async fn a_close_command_during_a_partial_write_follows_the_whole_frame() {
    // A 100 KiB message through a 1 KiB socket: it is written in pieces, and the close command
    // arrives while it is half-way.
    let mut driven = drive(&Limits::default(), 1024);
    static BIG: [u8; 100 << 10] = [7; 100 << 10];
    driven.send(&BIG).unwrap();
    tokio::task::yield_now().await;
    driven.shared.command(Command::Close {
        code: CloseCode::NORMAL,
        reason: String::new(),
        timeout: None,
    });
    match driven.peer.recv().await {
        Some(Decoded::Binary(payload)) => assert_eq!(&payload[..], &BIG[..]),
        other => panic!("expected the whole message, got {other:?}"),
    }
    assert_eq!(close_frame(driven.peer.recv().await), 1000);
    driven.peer.send_close(1000).await;
    let ending = driven.ending().await;
    assert!(ending.was_clean && !ending.is_error());
    // The server closes the TCP connection after the handshake (RFC 6455 §7.1.1).
    assert_eq!(driven.peer.recv().await, None);
}

#[tokio::test(start_paused = true)]
async fn a_peer_close_is_echoed_then_the_socket_closed() {
    let mut driven = drive(&Limits::default(), 64 << 10);
    driven.peer.send(OpCode::Text, b"last words").await;
    driven.peer.send_close(4001).await;
    assert!(matches!(
        driven.next().await,
        Event::Message(Incoming::Text(_))
    ));
    assert_eq!(close_frame(driven.peer.recv().await), 4001);
    assert_eq!(driven.peer.recv().await, None, "EOF after the echo");
    let ending = driven.ending().await;
    assert_eq!((ending.code, ending.was_clean), (CloseCode(4001), true));
}

#[tokio::test(start_paused = true)]
async fn a_driver_that_is_dropped_leaves_its_connection_closed() {
    let mut driven = drive(&Limits::default(), 64 << 10);
    tokio::task::yield_now().await;
    assert_eq!(driven.shared.status(), Status::Connected);
    driven.task.abort();
    let _ = (&mut driven.task).await;
    assert_eq!(driven.shared.status(), Status::Closed);
    assert_eq!(
        driven.send(b"too late"),
        Err(SendError::NotConnected(Status::Closed))
    );
}

/// A close that waits "forever" (`Duration::MAX`) does not overflow the clock: it waits for the
/// peer's answer.
#[tokio::test(start_paused = true)]
async fn a_close_that_waits_forever_waits_for_the_peer() {
    let mut driven = drive(&Limits::default(), 64 << 10);
    driven.shared.command(Command::Close {
        code: CloseCode::NORMAL,
        reason: String::new(),
        timeout: Some(Duration::MAX),
    });
    assert_eq!(close_frame(driven.peer.recv().await), 1000);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(
        driven.events.try_recv().is_err(),
        "still waiting after an hour"
    );
    driven.peer.send_close(1000).await;
    let ending = driven.ending().await;
    assert!(ending.was_clean && !ending.is_error());
}

/// Bytes read past the opening handshake are decoded like any read.
#[tokio::test(start_paused = true)]
async fn frames_that_came_with_the_handshake_are_delivered() {
    let (ours, theirs) = tokio::io::duplex(64 << 10);
    let limits = Limits::default();
    let shared = Arc::new(Shared::new(
        Role::Server,
        Status::Connected,
        limits.max_outgoing_bytes,
        limits.backpressure,
    ));
    let (tx, mut events) = mpsc::unbounded_channel();
    let leftover = [
        client_frame(OpCode::Text, b"first"),
        client_frame(OpCode::Binary, b"second"),
        client_frame(OpCode::Text, b"thi"),
    ]
    .concat();
    // The last frame is cut: its end comes in the first read.
    let cut = leftover.len() - 1;
    let callbacks = Recorder {
        shared: shared.clone(),
        events: tx,
    };
    let config = DriverConfig::new(Role::Server, &limits);
    tokio::spawn(run(
        ours,
        BytesMut::from(&leftover[..cut]),
        config,
        callbacks,
    ));
    let mut theirs = theirs;
    theirs.write_all(&leftover[cut..]).await.unwrap();
    for expected in ["first", "second", "thi"] {
        match events.recv().await.unwrap() {
            Event::Message(Incoming::Text(text)) => assert_eq!(&text[..], expected),
            Event::Message(Incoming::Binary(bytes)) => assert_eq!(&bytes[..], expected.as_bytes()),
            other => panic!("expected {expected}, got {other:?}"),
        }
    }
}

/// The budget counts what is allocated: a message the driver compresses (context takeover)
/// is charged at its full size when queued, then at its compressed size once compressed —
/// decided in one place, the outgoing path.
#[tokio::test(start_paused = true)]
async fn a_message_the_driver_compresses_is_charged_at_its_compressed_size() {
    let limits = Limits::default().max_outgoing_bytes(1 << 20);
    // The peer reads nothing: what the driver queued stays queued.
    let driven = drive_with(&limits, 1024, Some(Negotiated::new(15, false, 15, false)));
    let text = Bytes::from("compressible ".repeat(5000));
    for _ in 0..3 {
        driven
            .shared
            .send_data(OpCode::Text, text.clone(), Compress::Auto)
            .unwrap();
    }
    assert!(driven.shared.buffered() >= 3 * text.len());
    let mut rounds = 0;
    while driven.shared.buffered() >= text.len() {
        rounds += 1;
        assert!(rounds < 10_000, "the driver never compressed the messages");
        tokio::task::yield_now().await;
    }
    let charged = driven.shared.buffered();
    assert!(
        charged <= 3 * super::budget::cost(2048),
        "{charged} bytes charged for three messages compressed to a few hundred bytes each"
    );
}

// The close handshake's transitions (driver/state.rs), each driven through the real driver.

/// A protocol error fails the connection with its code after the replies already queued; then
/// the decoder skips the peer's frames (a binary frame is not delivered, its payload not
/// judged) until the peer's close reply has wholly arrived — here a byte at a time — and only
/// then does the connection end, with the failure's code and cause.
#[tokio::test(start_paused = true)]
async fn a_protocol_error_skips_frames_until_the_peers_close_reply_arrives_byte_by_byte() {
    let mut driven = drive(&Limits::default(), 64 << 10);
    driven.peer.send(OpCode::Text, b"ok").await;
    driven.peer.send(OpCode::Text, &[b'a', 0xff]).await; // not UTF-8: 1007
    assert!(matches!(driven.next().await, Event::Message(Incoming::Text(t)) if &t[..] == "ok"));
    assert_eq!(close_frame(driven.peer.recv().await), 1007);
    let after = [
        client_frame(OpCode::Binary, &[0x88; 300]), // close-frame bytes in a payload
        client_frame(OpCode::Text, &[0xff; 3]),     // not judged while skipping
        client_frame(
            OpCode::Close,
            &crate::proto::close::encode_payload(CloseCode::PROTOCOL_ERROR, "ack"),
        ),
    ]
    .concat();
    for byte in &after[..after.len() - 1] {
        driven.peer.io.write_all(&[*byte]).await.unwrap();
        tokio::task::yield_now().await;
    }
    // Not over before the last byte of the close reply: nothing was delivered meanwhile.
    assert!(driven.events.try_recv().is_err());
    assert_eq!(driven.shared.status(), Status::Closing);
    driven
        .peer
        .io
        .write_all(&after[after.len() - 1..])
        .await
        .unwrap();
    let ending = driven.ending().await;
    assert_eq!(ending.code, CloseCode::INVALID_PAYLOAD);
    assert!(!ending.was_clean && ending.is_error() && !ending.closed_here);
    assert!(ending.cause.unwrap().starts_with("protocol error"));
    assert_eq!(driven.peer.recv().await, None);
}

/// A close this side starts: messages the peer sent before it read our close frame are still
/// delivered, its reply ends the connection cleanly, and the end is this side's own (no error
/// whatever the code).
#[tokio::test(start_paused = true)]
async fn a_close_of_ours_delivers_until_the_reply_and_ends_as_our_own() {
    let mut driven = drive(&Limits::default(), 64 << 10);
    driven.shared.command(Command::Close {
        code: CloseCode(4000),
        reason: "bye".to_owned(),
        timeout: None,
    });
    assert_eq!(close_frame(driven.peer.recv().await), 4000);
    driven.peer.send(OpCode::Text, b"in flight").await;
    driven.peer.send_close(4000).await;
    assert!(
        matches!(driven.next().await, Event::Message(Incoming::Text(t)) if &t[..] == "in flight")
    );
    let ending = driven.ending().await;
    assert_eq!((ending.code, ending.was_clean), (CloseCode(4000), true));
    assert!(ending.closed_here && !ending.is_error(), "{ending:?}");
}

/// After a failure, the first failure is the one reported: an abort drops the socket at once
/// but does not hide why the connection failed.
#[tokio::test(start_paused = true)]
async fn an_abort_after_a_failure_reports_the_failure() {
    let mut driven = drive(&Limits::default(), 64 << 10);
    driven.shared.command(Command::Fail {
        code: CloseCode::INTERNAL_ERROR,
        reason: String::new(),
        cause: "on_message panicked: boom".to_owned(),
        discard_queued: false,
    });
    assert_eq!(close_frame(driven.peer.recv().await), 1011);
    driven.shared.command(Command::Abort {
        cause: "aborted".to_owned(),
    });
    let ending = driven.ending().await;
    assert_eq!(
        ending.code,
        CloseCode::ABNORMAL,
        "an abort sends no close reply"
    );
    assert!(!ending.closed_here && ending.is_error());
}

/// A peer that closes first gets its code echoed even when our own frames are still queued
/// behind a stalled socket: they go first, then the echo, and the ending is the peer's.
#[tokio::test(start_paused = true)]
async fn a_peer_close_while_our_frames_wait_is_echoed_after_them() {
    let mut driven = drive(&Limits::default(), 1024);
    static KIB: [u8; 1024] = [b'q'; 1024];
    for _ in 0..8 {
        driven.send(&KIB).unwrap();
    }
    driven.peer.send_close(4002).await;
    for n in 0..8 {
        match driven.peer.recv().await {
            Some(Decoded::Binary(b)) => assert_eq!(b.len(), 1024, "frame {n}"),
            other => panic!("frame {n}: {other:?}"),
        }
    }
    assert_eq!(close_frame(driven.peer.recv().await), 4002);
    let ending = driven.ending().await;
    assert_eq!((ending.code, ending.was_clean), (CloseCode(4002), true));
    assert!(!ending.closed_here && !ending.is_error());
}

/// A stream that takes one buffer per write, as an HTTP/2 stream does (each write a DATA
/// frame), and records the size of each write.
struct OneBufferPerWrite {
    io: DuplexStream,
    writes: Arc<std::sync::Mutex<Vec<usize>>>,
}

impl tokio::io::AsyncRead for OneBufferPerWrite {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for OneBufferPerWrite {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let written = std::task::ready!(std::pin::Pin::new(&mut self.io).poll_write(cx, buf))?;
        self.writes.lock().unwrap().push(buf.len());
        std::task::Poll::Ready(Ok(written))
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_stream_without_vectored_writes_gets_whole_frames_in_writes_of_at_most_16_kib() {
    let (ours, theirs) = tokio::io::duplex(4 << 20);
    let writes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let io = OneBufferPerWrite {
        io: ours,
        writes: writes.clone(),
    };
    let limits = Limits::default().max_outgoing_bytes(4 << 20);
    let shared = Arc::new(Shared::new(
        Role::Server,
        Status::Connected,
        limits.max_outgoing_bytes,
        limits.backpressure,
    ));
    shared.set_deflate(None, &PerMessageDeflate::default());
    // Queued before the driver runs: three small messages and a large one.
    for text in [&b"one"[..], b"two", b"three"] {
        shared
            .send_data(OpCode::Text, Bytes::from_static(text), Compress::Auto)
            .unwrap();
    }
    let large = Bytes::from(vec![7u8; 200 << 10]);
    shared
        .send_data(OpCode::Binary, large.clone(), Compress::Auto)
        .unwrap();
    let (tx, _events) = mpsc::unbounded_channel();
    let callbacks = Recorder {
        shared: shared.clone(),
        events: tx,
    };
    tokio::spawn(run(
        io,
        BytesMut::new(),
        DriverConfig::new(Role::Server, &limits),
        callbacks,
    ));
    let mut peer = Peer {
        io: theirs,
        decoder: Decoder::new(DecoderConfig {
            role: Role::Client,
            max_frame_size: 1 << 30,
            max_message_size: 1 << 30,
        }),
        buf: BytesMut::new(),
    };
    for expected in ["one", "two", "three"] {
        match peer.recv().await {
            Some(Decoded::Text(text)) => assert_eq!(&text[..], expected),
            other => panic!("expected {expected}, got {other:?}"),
        }
    }
    match peer.recv().await {
        Some(Decoded::Binary(bytes)) => assert_eq!(bytes, large),
        other => panic!("expected the large message, got {other:?}"),
    }
    let writes = writes.lock().unwrap().clone();
    // The first write holds the three small frames whole and the start of the large one: no
    // write of a lone header.
    assert_eq!(writes[0], 16 << 10, "{writes:?}");
    assert!(writes.iter().all(|&size| size <= 16 << 10), "{writes:?}");
    let total: usize = writes.iter().sum();
    assert_eq!(total, 5 + 5 + 7 + 10 + (200 << 10), "{writes:?}");
}

/// Sends `first`, lets the driver run once, sends `second` before the runtime looks at I/O
/// again, and returns the sizes of the driver's writes once the peer has both frames.
async fn writes_of_two_sends(send: impl Fn(&Shared, &'static [u8])) -> Vec<usize> {
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let writes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let io = OneBufferPerWrite {
        io: ours,
        writes: writes.clone(),
    };
    let limits = Limits::default();
    let shared = Arc::new(Shared::new(
        Role::Server,
        Status::Connected,
        limits.max_outgoing_bytes,
        limits.backpressure,
    ));
    shared.set_deflate(None, &PerMessageDeflate::default());
    let (tx, _events) = mpsc::unbounded_channel();
    let callbacks = Recorder {
        shared: shared.clone(),
        events: tx,
    };
    tokio::spawn(run(
        io,
        BytesMut::new(),
        DriverConfig::new(Role::Server, &limits),
        callbacks,
    ));
    // The driver's first poll: it waits for the socket and the outbox.
    tokio::task::yield_now().await;
    send(&shared, b"first");
    // Queued behind the driver, this task's wake-up comes before the runtime's next look at
    // I/O, and so before any task that deferred itself past it.
    let (go, wait) = tokio::sync::oneshot::channel();
    tokio::spawn(async move { go.send(()).unwrap() });
    wait.await.unwrap();
    send(&shared, b"second");
    let mut peer = Peer {
        io: theirs,
        decoder: Decoder::new(DecoderConfig {
            role: Role::Client,
            max_frame_size: 1 << 20,
            max_message_size: 1 << 20,
        }),
        buf: BytesMut::new(),
    };
    for expected in ["first", "second"] {
        match peer.recv().await {
            Some(Decoded::Text(text)) => assert_eq!(&text[..], expected),
            other => panic!("expected {expected}, got {other:?}"),
        }
    }
    let writes = writes.lock().unwrap().clone();
    writes
}

/// A publish wakes every subscriber with a frame: its write waits for the runtime's next look
/// at the sockets, and what is published meanwhile goes out in the same write (a send per
/// frame made fan-out 35% slower than on the work-stealing runtime). A connection's own sends
/// are not held.
#[tokio::test]
async fn published_frames_wait_a_turn_and_share_a_write_but_own_sends_do_not() {
    let publish = |shared: &Shared, text: &'static [u8]| {
        let prepared = super::outgoing::Prepared::new(OpCode::Text, Bytes::from_static(text));
        assert!(prepared.send(shared));
    };
    // Two frames of 2 + 5 and 2 + 6 bytes.
    assert_eq!(writes_of_two_sends(publish).await, [15]);
    let own = |shared: &Shared, text: &'static [u8]| {
        shared
            .send_data(OpCode::Text, Bytes::from_static(text), Compress::Auto)
            .unwrap();
    };
    assert_eq!(writes_of_two_sends(own).await, [7, 8]);
}
