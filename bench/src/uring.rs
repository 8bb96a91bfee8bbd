//! `bench-server io-uring`: the io_uring evaluation of issue 14 (docs/PERFORMANCE.md, "io_uring").
//!
//! Not a server to deploy: it answers the question "what does batching the kernel entries
//! through io_uring buy, with ferrosock's own codec?" before any of the library moves to it.
//! One thread and one ring, the way a thread of `WebServerOptions::threads` would run it:
//!
//! - a multishot accept, and a multishot receive per connection into a ring of provided
//!   buffers (no buffer is held per idle connection, no re-arming per message);
//! - at most one send in flight per connection (a `sendmsg`): what the decoder produces while
//!   it is in flight is gathered behind it and goes out in the next one; small frames are
//!   copied together, a large payload goes out from the buffer it was received and unmasked
//!   in, as the library's driver writes them;
//! - every submission of a loop turn and the wait for the next completions in a single
//!   `io_uring_enter` (`submit_and_wait`), with `SINGLE_ISSUER` and `DEFER_TASKRUN` so that the
//!   kernel completes work only when the loop asks for it.
//!
//! The WebSocket side is ferrosock-proto's, as in the library: `validate_request` for the
//! opening handshake and the same `Decoder` (masking, UTF-8, fragmentation, control frames,
//! limits; a protocol error is answered with its close code). It echoes text and binary
//! messages, answers pings and closes. No TLS, HTTP/2 or permessage-deflate.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use anyhow::Context as _;
use bytes::{Buf, Bytes, BytesMut};
use ferrosock_proto::decoder::{Input, SliceInput};
use ferrosock_proto::handshake::validate_request;
use ferrosock_proto::{CloseCode, Decoded, Decoder, DecoderConfig, FrameHeader, OpCode, Role};
use io_uring::types::{BufRingEntry, Fd};
use io_uring::{cqueue, opcode, squeue, IoUring};

/// The provided-buffer group every receive draws from.
const GROUP: u16 = 0;
/// Buffers in the ring: a power of two. They are lent for one loop turn at most (frames are
/// decoded in place, and what is left of a partial one is copied into the connection's input
/// at once), so what matters is what one turn receives.
const BUFFERS: u16 = 256;
/// Large enough for a 16 KiB message with its header in one buffer.
const BUFFER_SIZE: usize = 64 * 1024;
/// The largest request head read before the answer is 431.
const MAX_HEAD: usize = 8 * 1024;
const MAX_MESSAGE: usize = 16 << 20;
/// Payloads up to this size are copied into the output; larger ones are sent from where they
/// are (the library's driver draws the same line).
const COPY_LIMIT: usize = 2048;
/// The most pieces one `sendmsg` takes (`IOV_MAX`).
const MAX_IOVECS: usize = 1024;

/// What a completion is about: the kind in the top bits of its `user_data`, the connection's
/// slot in the low 32.
const ACCEPT: u64 = 1 << 62;
const RECV: u64 = 2 << 62;
const SEND: u64 = 3 << 62;
const KIND: u64 = 3 << 62;

/// Serves `listen` on this thread until an error.
pub fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let listener =
        TcpListener::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
    eprintln!("bench-server io-uring: ws://{}/", listener.local_addr()?);
    let mut ring: IoUring = IoUring::builder()
        .setup_cqsize(16 * 1024)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(4096)
        .context("io_uring_setup (is io_uring enabled? /proc/sys/kernel/io_uring_disabled)")?;
    let mut buffers = Buffers::register(&ring)?;
    let mut server = Server {
        listener: listener.as_raw_fd(),
        slots: Vec::new(),
        free: Vec::new(),
        pending: Vec::new(),
    };
    let result = run(&mut ring, &mut buffers, &mut server);
    // The ring goes first: closing it makes the kernel let go of the provided buffers and of
    // the output of the sends in flight.
    drop(ring);
    result
}

fn run(ring: &mut IoUring, buffers: &mut Buffers, server: &mut Server) -> anyhow::Result<()> {
    server.pending.push(accept(server.listener));
    let mut completions = Vec::with_capacity(1024);
    loop {
        submit_all(ring, &mut server.pending)?;
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(error) if error.raw_os_error() == Some(libc::EINTR) => continue,
            Err(error) => return Err(error).context("io_uring_enter"),
        }
        completions.extend(
            ring.completion()
                .map(|cqe| (cqe.user_data(), cqe.result(), cqe.flags())),
        );
        for (token, result, flags) in completions.drain(..) {
            server.complete(token, result, flags, buffers);
        }
        buffers.publish();
    }
}

/// Pushes the submissions of this turn; a full queue is submitted (not waited on) and reused.
fn submit_all(ring: &mut IoUring, pending: &mut Vec<squeue::Entry>) -> anyhow::Result<()> {
    for entry in pending.drain(..) {
        // SAFETY: every buffer an entry points at outlives its operation: receives use the
        // registered ring (`Buffers`, alive for the whole loop), and a send points at a
        // connection's `msg`, `iov` and `out`, which are neither touched nor freed while
        // `sending` is set.
        while unsafe { ring.submission().push(&entry) }.is_err() {
            ring.submit().context("io_uring_enter")?;
        }
    }
    Ok(())
}

fn accept(listener: RawFd) -> squeue::Entry {
    opcode::AcceptMulti::new(Fd(listener))
        .build()
        .user_data(ACCEPT)
}

fn receive(fd: RawFd, slot: usize) -> squeue::Entry {
    opcode::RecvMulti::new(Fd(fd), GROUP)
        .build()
        .user_data(RECV | slot as u64)
}

struct Server {
    listener: RawFd,
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Submissions made while handling completions, pushed before the next wait.
    pending: Vec<squeue::Entry>,
}

struct Conn {
    fd: OwnedFd,
    input: BytesMut,
    /// `None` until the opening handshake is done.
    decoder: Option<Decoder>,
    /// What the send in flight writes: `iov[unsent..]` points into it. None of `out`, `iov`
    /// and `msg` is touched while `sending`.
    out: Output,
    iov: Vec<libc::iovec>,
    unsent: usize,
    msg: Box<libc::msghdr>,
    /// What was produced while a send was in flight.
    next: Output,
    sending: bool,
    receiving: bool,
    /// A close frame (or a refusal) is queued: no more input is read, the socket is shut down
    /// once everything is sent.
    closing: bool,
    shut: bool,
}

impl Server {
    fn complete(&mut self, token: u64, result: i32, flags: u32, buffers: &mut Buffers) {
        let slot = (token & 0xffff_ffff) as usize;
        match token & KIND {
            ACCEPT => {
                if result >= 0 {
                    // SAFETY: a successful accept returns a new descriptor that nothing else
                    // owns.
                    let fd = unsafe { OwnedFd::from_raw_fd(result) };
                    self.open(fd);
                } else {
                    eprintln!("accept: {}", io::Error::from_raw_os_error(-result));
                }
                if !cqueue::more(flags) {
                    self.pending.push(accept(self.listener));
                }
            }
            RECV => {
                let mut received = None;
                if result > 0 {
                    let bid =
                        cqueue::buffer_select(flags).expect("a receive with data names its buffer");
                    received = Some((bid, result as usize));
                }
                let more = cqueue::more(flags);
                let Some(conn) = self.slots[slot].as_mut() else {
                    if let Some((bid, _)) = received {
                        buffers.give_back(bid);
                    }
                    return;
                };
                if let Some((bid, len)) = received {
                    conn.process(buffers.get_mut(bid, len));
                    buffers.give_back(bid);
                }
                if !more {
                    conn.receiving = false;
                    // Out of buffers (-ENOBUFS) or the kernel ending the multishot early: the
                    // connection is still there, so receive again. End of stream or an error
                    // ends it.
                    if (result > 0 || result == -libc::ENOBUFS) && !conn.shut {
                        conn.receiving = true;
                        self.pending.push(receive(conn.fd.as_raw_fd(), slot));
                    } else {
                        conn.shut_down();
                    }
                }
                self.flush(slot);
            }
            SEND => {
                let Some(conn) = self.slots[slot].as_mut() else {
                    return;
                };
                conn.sending = false;
                if result < 0 {
                    conn.shut_down();
                } else {
                    conn.advance(result as usize);
                }
                self.flush(slot);
            }
            _ => unreachable!("a token of no kind"),
        }
    }

    fn open(&mut self, fd: OwnedFd) {
        set_nodelay(fd.as_raw_fd());
        let conn = Conn {
            fd,
            input: BytesMut::new(),
            decoder: None,
            out: Output::default(),
            iov: Vec::new(),
            unsent: 0,
            // SAFETY: an all-zero msghdr is valid: no name, no control data, no iovecs.
            msg: Box::new(unsafe { std::mem::zeroed() }),
            next: Output::default(),
            sending: false,
            receiving: true,
            closing: false,
            shut: false,
        };
        let raw = conn.fd.as_raw_fd();
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(conn);
                slot
            }
            None => {
                self.slots.push(Some(conn));
                self.slots.len() - 1
            }
        };
        self.pending.push(receive(raw, slot));
    }

    /// Starts the next send, shuts a finished connection down, frees a dead one.
    fn flush(&mut self, slot: usize) {
        let conn = self.slots[slot].as_mut().expect("flushing a live slot");
        if !conn.sending && !conn.shut {
            if conn.unsent == conn.iov.len() {
                conn.out.clear();
                std::mem::swap(&mut conn.out, &mut conn.next);
                conn.iov.clear();
                conn.unsent = 0;
                conn.iov.extend(conn.out.pieces.iter().map(|piece| {
                    let bytes = piece.bytes();
                    libc::iovec {
                        iov_base: bytes.as_ptr() as *mut libc::c_void,
                        iov_len: bytes.len(),
                    }
                }));
            }
            if conn.unsent < conn.iov.len() {
                let rest = &mut conn.iov[conn.unsent..];
                conn.msg.msg_iov = rest.as_mut_ptr();
                conn.msg.msg_iovlen = rest.len().min(MAX_IOVECS);
                self.pending.push(
                    opcode::SendMsg::new(Fd(conn.fd.as_raw_fd()), &*conn.msg)
                        .build()
                        .user_data(SEND | slot as u64),
                );
                conn.sending = true;
            } else if conn.closing {
                conn.shut_down();
            }
        }
        if conn.shut && !conn.sending && !conn.receiving {
            self.slots[slot] = None;
            self.free.push(slot);
        }
    }
}

impl Conn {
    /// Decodes what arrived and queues the answers. Frames are decoded (unmasked, checked)
    /// where they arrived when nothing is pending from earlier reads, as the library's driver
    /// does with its scratch buffer; only the rest of a partial frame is copied.
    fn process(&mut self, received: &mut [u8]) {
        if self.closing {
            return;
        }
        let Some(decoder) = self.decoder.as_mut() else {
            self.input.extend_from_slice(received);
            if self.handshake() {
                self.decode_input();
            }
            return;
        };
        if !self.input.is_empty() {
            // Room for the rest of the frame in progress at once: growing step by step would
            // copy it again and again.
            let wanted = decoder.bytes_wanted(self.input.len());
            self.input.reserve(received.len().max(wanted));
            self.input.extend_from_slice(received);
            self.decode_input();
            return;
        }
        let mut input = SliceInput::new(received);
        self.closing = decode_all(decoder, &mut self.next, &mut input);
        if !self.closing {
            self.input.extend_from_slice(input.rest());
        }
    }

    fn decode_input(&mut self) {
        if let Some(decoder) = self.decoder.as_mut() {
            self.closing = decode_all(decoder, &mut self.next, &mut self.input);
        }
    }

    /// Answers the opening handshake once its head is in: true when the connection is a
    /// WebSocket now.
    fn handshake(&mut self) -> bool {
        let Some(end) = self.input.windows(4).position(|w| w == b"\r\n\r\n") else {
            if self.input.len() > MAX_HEAD {
                self.refuse("431 Request Header Fields Too Large");
            }
            return false;
        };
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        let accepted = match request.parse(&self.input[..end + 4]) {
            Ok(httparse::Status::Complete(_)) => {
                let method = http::Method::from_bytes(request.method.unwrap_or("").as_bytes())
                    .unwrap_or(http::Method::POST);
                let version = match request.version {
                    Some(1) => http::Version::HTTP_11,
                    _ => http::Version::HTTP_10,
                };
                let mut map = http::HeaderMap::new();
                for header in request.headers.iter() {
                    if let (Ok(name), Ok(value)) = (
                        http::HeaderName::from_bytes(header.name.as_bytes()),
                        http::HeaderValue::from_bytes(header.value),
                    ) {
                        map.append(name, value);
                    }
                }
                validate_request(&method, version, &map).map_err(|error| error.status())
            }
            _ => Err(http::StatusCode::BAD_REQUEST),
        };
        match accepted {
            Ok(accept) => {
                self.input.advance(end + 4);
                self.next.copy(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                      Connection: Upgrade\r\nSec-WebSocket-Accept: ",
                );
                self.next.copy(accept.as_bytes());
                self.next.copy(b"\r\n\r\n");
                self.decoder = Some(Decoder::new(DecoderConfig {
                    role: Role::Server,
                    max_frame_size: MAX_MESSAGE,
                    max_message_size: MAX_MESSAGE,
                }));
                true
            }
            Err(status) => {
                self.refuse(&status.to_string());
                false
            }
        }
    }

    fn refuse(&mut self, status: &str) {
        self.next.copy(
            format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        self.closing = true;
    }

    /// Counts `sent` bytes of the send in flight as gone.
    fn advance(&mut self, mut sent: usize) {
        while sent > 0 {
            let iov = &mut self.iov[self.unsent];
            if sent >= iov.iov_len {
                sent -= iov.iov_len;
                self.unsent += 1;
            } else {
                // SAFETY: `sent < iov_len`: the new base stays inside the same piece.
                iov.iov_base = unsafe { iov.iov_base.cast::<u8>().add(sent) }.cast();
                iov.iov_len -= sent;
                sent = 0;
            }
        }
    }

    /// Ends both directions: the receive in flight completes with end of stream, the send
    /// with an error, and the slot is freed when both are in.
    fn shut_down(&mut self) {
        if !self.shut {
            self.shut = true;
            // SAFETY: shutdown(2) on a descriptor this connection owns; it touches no memory.
            unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RDWR) };
        }
    }
}

/// Decodes every complete frame of `input` and queues the answers: true once a close frame (an
/// answer to the peer's, or a protocol error's) is queued.
fn decode_all<I: Input>(decoder: &mut Decoder, out: &mut Output, input: &mut I) -> bool {
    loop {
        match decoder.decode_from(input) {
            Ok(None) => return false,
            Ok(Some(Decoded::Text(text))) => out.frame(OpCode::Text, text.into_bytes()),
            Ok(Some(Decoded::Binary(data))) => out.frame(OpCode::Binary, data),
            Ok(Some(Decoded::Ping(data))) => out.frame(OpCode::Pong, data),
            Ok(Some(Decoded::Pong(_))) => {}
            Ok(Some(Decoded::Close(close))) => {
                match close {
                    Some(close) => out.close(close.code),
                    None => out.frame(OpCode::Close, Bytes::new()),
                }
                return true;
            }
            Err(error) => {
                out.close(error.close_code());
                return true;
            }
        }
    }
}

/// Bytes to send, in order: small frames copied together, large payloads shared.
#[derive(Default)]
struct Output {
    pieces: Vec<Piece>,
    /// A copy buffer kept from the last batch, so that small frames do not allocate.
    spare: Option<Vec<u8>>,
}

enum Piece {
    Copied(Vec<u8>),
    Shared(Bytes),
}

impl Piece {
    fn bytes(&self) -> &[u8] {
        match self {
            Piece::Copied(bytes) => bytes,
            Piece::Shared(bytes) => bytes,
        }
    }
}

impl Output {
    fn copy(&mut self, bytes: &[u8]) {
        if let Some(Piece::Copied(last)) = self.pieces.last_mut() {
            last.extend_from_slice(bytes);
        } else {
            let mut buffer = self.spare.take().unwrap_or_default();
            buffer.extend_from_slice(bytes);
            self.pieces.push(Piece::Copied(buffer));
        }
    }

    /// Appends an unmasked frame (a server's).
    fn frame(&mut self, opcode: OpCode, payload: Bytes) {
        let mut head = [0; ferrosock_proto::frame::MAX_HEADER_LEN];
        let len = FrameHeader::new(opcode, payload.len() as u64, None).encode(&mut head);
        self.copy(&head[..len]);
        if payload.len() <= COPY_LIMIT {
            self.copy(&payload);
        } else {
            self.pieces.push(Piece::Shared(payload));
        }
    }

    fn close(&mut self, code: CloseCode) {
        let code = u16::from(code).to_be_bytes();
        self.frame(OpCode::Close, Bytes::copy_from_slice(&code));
    }

    fn clear(&mut self) {
        for piece in self.pieces.drain(..) {
            if let Piece::Copied(mut buffer) = piece {
                if self.spare.is_none() {
                    buffer.clear();
                    self.spare = Some(buffer);
                }
            }
        }
    }
}

fn set_nodelay(fd: RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// The provided buffers: one allocation of `BUFFERS × BUFFER_SIZE` bytes and the ring of
/// entries that lends them to the kernel (`IORING_REGISTER_PBUF_RING`).
struct Buffers {
    ring: *mut BufRingEntry,
    memory: Box<[u8]>,
    tail: u16,
}

impl Buffers {
    fn register(ring: &IoUring) -> anyhow::Result<Buffers> {
        let layout = ring_layout();
        // SAFETY: the layout has a non-zero size; the zeroed memory is a valid array of
        // entries (plain integers).
        let entries = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<BufRingEntry>();
        anyhow::ensure!(!entries.is_null(), "cannot allocate the buffer ring");
        let mut buffers = Buffers {
            ring: entries,
            memory: vec![0; usize::from(BUFFERS) * BUFFER_SIZE].into_boxed_slice(),
            tail: 0,
        };
        // SAFETY: the ring is page-aligned, `BUFFERS` entries long, and lives as long as
        // `buffers`, which outlives the loop that uses the ring.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, BUFFERS, GROUP, 0)
                .context("IORING_REGISTER_PBUF_RING")?;
        }
        for bid in 0..BUFFERS {
            buffers.give_back(bid);
        }
        buffers.publish();
        Ok(buffers)
    }

    fn get_mut(&mut self, bid: u16, len: usize) -> &mut [u8] {
        let start = usize::from(bid) * BUFFER_SIZE;
        &mut self.memory[start..start + len]
    }

    /// Lends buffer `bid` again; the kernel sees it after [`publish`](Self::publish).
    fn give_back(&mut self, bid: u16) {
        let index = usize::from(self.tail & (BUFFERS - 1));
        let addr = self.memory.as_ptr() as u64 + u64::from(bid) * BUFFER_SIZE as u64;
        // SAFETY: `index < BUFFERS`, inside the ring's allocation; the kernel reads only the
        // entries between its head and the published tail, and this one is past the tail.
        let entry = unsafe { &mut *self.ring.add(index) };
        entry.set_addr(addr);
        entry.set_len(BUFFER_SIZE as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the buffers given back so far visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail field is the first entry's `resv`, a u16 in the ring's memory that
        // the kernel reads concurrently: an atomic store with release ordering publishes the
        // entries written before it.
        unsafe {
            let tail = BufRingEntry::tail(self.ring).cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

fn ring_layout() -> std::alloc::Layout {
    std::alloc::Layout::from_size_align(
        usize::from(BUFFERS) * std::mem::size_of::<BufRingEntry>(),
        4096,
    )
    .expect("a valid layout")
}

impl Drop for Buffers {
    fn drop(&mut self) {
        // SAFETY: allocated in `register` with the same layout. The ring is dropped (and
        // unregistered) before the buffers only when the process ends the loop with an error.
        unsafe { std::alloc::dealloc(self.ring.cast(), ring_layout()) };
    }
}
