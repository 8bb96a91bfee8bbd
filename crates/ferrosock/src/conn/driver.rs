//! The per-connection task: read, decode, dispatch, write, keep alive, close.
//!
//! One hand-written `poll` loop drives everything, so that a partial write, a read, a command
//! from a handle and a timer can never cancel one another's progress:
//!
//! 1. take the frames and the command that handles queued (see [`Shared`]);
//! 2. write queued frames with vectored writes, as many per system call as fit;
//! 3. read what the socket has and decode it in place; hand whole messages to the callbacks,
//!    answer pings, run the close handshake, fail the connection on a protocol error;
//! 4. fire the keepalive, idle and close timers.
//!
//! It ends when the close handshake is done (and the TCP socket closed after it), when the
//! peer vanishes, or when a handle aborts it; the socket is closed before
//! [`Callbacks::on_end`] runs.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::budget::{cost, Queued};
use super::outgoing;
use super::queue::{Command, Outgoing, Shared};
use crate::common::Incoming;
use crate::limits::Limits;
use crate::proto::decoder::{Input, SliceInput};
use crate::proto::deflate::{Deflater, Inflater};
use crate::proto::frame::MAX_HEADER_LEN;
use crate::proto::{
    CloseCode, CloseFrame, Decoded, Decoder, DecoderConfig, OpCode, OutFrame, Role,
};

/// How the driver runs one connection.
#[derive(Clone, Debug)]
pub(crate) struct DriverConfig {
    pub(crate) role: Role,
    pub(crate) decoder: DecoderConfig,
    pub(crate) keepalive_interval: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) close_timeout: Duration,
}

impl DriverConfig {
    pub(crate) fn new(role: Role, limits: &Limits) -> DriverConfig {
        DriverConfig {
            role,
            decoder: DecoderConfig {
                role,
                max_frame_size: limits.max_frame_size,
                max_message_size: limits.max_message_size,
            },
            keepalive_interval: limits.keepalive_interval,
            idle_timeout: limits.idle_timeout,
            close_timeout: limits.close_timeout,
        }
    }
}

/// How a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ending {
    /// The peer's close code; 1005 if its close frame had none; 1006 if there was no close
    /// frame; the code we sent if we failed the connection.
    pub(crate) code: CloseCode,
    /// The peer's reason, or ours when we failed the connection. May be empty.
    pub(crate) reason: String,
    /// Whether both close frames were exchanged.
    pub(crate) was_clean: bool,
    /// What went wrong, when something did.
    pub(crate) cause: Option<String>,
    /// This side closed the connection in good order (`terminate`, a server's termination, a
    /// web server's stop, an abort): a normal end for this side's callbacks, whatever the code.
    pub(crate) closed_here: bool,
}

impl Ending {
    /// Whether this end is reported through `on_error` before `on_terminate` (SPEC §3): an
    /// abnormal code, unless this side closed in good order.
    pub(crate) fn is_error(&self) -> bool {
        !self.code.is_normal() && !self.closed_here
    }

    fn abnormal(cause: impl Into<String>) -> Ending {
        Ending {
            code: CloseCode::ABNORMAL,
            reason: String::new(),
            was_clean: false,
            cause: Some(cause.into()),
            closed_here: false,
        }
    }
}

/// What the layer above plugs into the driver.
pub(crate) trait Callbacks: Send {
    /// The connection's shared state, which handles send and close through.
    fn shared(&self) -> &Shared;
    /// A whole message arrived. Not called once the connection is closing.
    fn on_message(&mut self, message: Incoming);
    /// The connection is over and its socket closed. Called exactly once, last.
    fn on_end(self, ending: Ending);
}

/// Runs a connection to its end. `read_buf` holds bytes already read past the handshake.
///
/// Not an `async fn`: the driver is built here, and the future returned holds only the driver,
/// not also the arguments it was built from (every idle connection carries this future).
/// Must be called within a tokio runtime.
pub(crate) fn run<S, C>(
    io: S,
    read_buf: BytesMut,
    config: DriverConfig,
    callbacks: C,
) -> impl std::future::Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    C: Callbacks,
{
    let mut running = Running(Some(Driver::new(io, read_buf, config, callbacks)));
    async move {
        let driver = running
            .0
            .as_mut()
            .expect("taken only once the loop is over");
        let mut ending = poll_fn(|cx| driver.poll_drive(cx)).await;
        // A failure of ours (a protocol error, a limit, a panic) is an error even while a close
        // this side started was under way.
        ending.closed_here = driver.closed_here && driver.failure.is_none();
        let Some(Driver { io, callbacks, .. }) = running.0.take() else {
            unreachable!("taken here only")
        };
        drop(io);
        callbacks.shared().finish();
        callbacks.on_end(ending);
    }
}

/// A driver whose future may be dropped before its end (a runtime shutting down, a task
/// aborted): the connection is then marked `Closed`, so that handles stop sending to it.
struct Running<S, C: Callbacks>(Option<Driver<S, C>>);

impl<S, C: Callbacks> Drop for Running<S, C> {
    fn drop(&mut self) {
        if let Some(driver) = &self.0 {
            driver.callbacks.shared().finish();
        }
    }
}

/// Frames gathered into one vectored write. Enough to batch many small messages; more would
/// only lengthen the kernel's iovec copy.
const MAX_IOV: usize = 64;
/// Rounds of work in one poll before yielding to the runtime, so that a busy connection
/// cannot starve the others on its worker thread.
const MAX_ROUNDS: usize = 32;
/// The smallest read into a connection's own buffer.
const MIN_READ: usize = 4 * 1024;
/// The most reserved for one read when a large frame is in progress: memory grows with the
/// bytes that actually arrive, not with the length a header announces.
const MAX_READ_RESERVE: usize = 256 * 1024;
/// Each worker thread reads into this scratch buffer when the connection has nothing
/// buffered, and copies out only the bytes that arrived: an idle connection holds no read
/// buffer at all.
const SCRATCH_LEN: usize = 64 * 1024;

thread_local! {
    static SCRATCH: Cell<Option<Box<[u8]>>> = const { Cell::new(None) };
}

/// `timeout` from now; a timeout too long to represent (`Duration::MAX`, "wait forever") is
/// about thirty years.
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400))
}

/// A queue emptied after a burst gives its memory back: an idle connection keeps no room for
/// thousands of frames it no longer holds.
fn shrink_if_drained<T>(queue: &mut VecDeque<T>) {
    const KEPT: usize = 64;
    if queue.is_empty() && queue.capacity() > KEPT {
        *queue = VecDeque::new();
    }
}

/// Makes `buf` able to hold `total` bytes, with an allocation of exactly that size when it
/// must grow (`BytesMut::reserve` may double it).
fn reserve_exact(buf: &mut BytesMut, total: usize) {
    if buf.capacity() < total {
        let mut grown = BytesMut::with_capacity(total);
        grown.extend_from_slice(buf);
        *buf = grown;
    }
}

struct Driver<S, C> {
    io: S,
    role: Role,
    close_timeout: Duration,
    decoder: Decoder,
    callbacks: C,
    /// Received bytes not yet decoded. Emptied (and its memory released) whenever every
    /// complete frame in it has been handed out.
    read_buf: BytesMut,
    /// `read_buf` holds bytes that have not been through the decoder yet.
    unprocessed: bool,
    /// What handles queued, taken from the outbox and not yet framed.
    staged: VecDeque<Queued<Outgoing>>,
    /// Frames to write, in order.
    out: VecDeque<Queued<OutFrame>>,
    /// permessage-deflate's compressor, when negotiated ([`Shared::deflate_setup`]).
    /// Boxed: most connections never negotiate it.
    deflater: Option<Box<Deflater>>,
    /// Bytes of `out[0]` already written. Invariant: `out_pos < out[0].wire_len()`, or 0.
    out_pos: usize,
    needs_flush: bool,

    /// Our close frame is in `out` (or written): nothing may follow it.
    close_sent: bool,
    /// How long the close handshake waits for the peer once our close frame is queued.
    close_wait: Duration,
    /// This side ended the connection in good order (a `Close` command before the peer's close
    /// frame, or an `Abort`): not an error for this side, whatever the code.
    closed_here: bool,
    /// The peer's close frame, once it arrived (`Some(None)`: one without a code).
    close_received: Option<Option<CloseFrame>>,
    /// We failed the connection; this is how it ends.
    failure: Option<Ending>,
    /// Input is read and thrown away (after a failure, or while waiting for the peer's EOF).
    draining: bool,
    /// While draining after a failure: bytes to skip before the next frame header, so that the
    /// peer's close frame can still be recognised. `None`: framing is lost, discard all.
    drain_skip: Option<usize>,
    /// The peer's close frame arrived after we failed the connection: it has read ours.
    close_seen_while_draining: bool,
    read_eof: bool,
    write_shutdown: bool,

    /// The keepalive period: the idle timeout and keepalive interval are counted in these
    /// ticks, so that a read costs a flag, not a clock read. `None`: no keepalive, no timeout.
    tick: Option<Duration>,
    /// The keepalive interval and idle timeout in ticks (0: off), rounded up.
    keepalive_ticks: u32,
    idle_ticks: u32,
    /// Something was read since the last tick.
    heard: bool,
    /// How long the peer has been silent, in ticks.
    silent: u32,
    ping_outstanding: bool,
    close_deadline: Option<Instant>,
    /// The one timer: the next tick, or the close deadline once closing.
    timer: Option<Pin<Box<Sleep>>>,
    /// The timer has been polled since it was last armed, so it will wake the task when it
    /// fires; until it has fired, checking `is_elapsed` is enough.
    timer_registered: bool,
}

impl<S, C> Driver<S, C>
where
    S: AsyncRead + AsyncWrite + Unpin,
    C: Callbacks,
{
    fn new(io: S, read_buf: BytesMut, config: DriverConfig, callbacks: C) -> Self {
        let tick = match (config.keepalive_interval, config.idle_timeout) {
            (Some(keepalive), Some(idle)) => Some(keepalive.min(idle)),
            (keepalive, idle) => keepalive.or(idle),
        };
        let ticks = |limit: Option<Duration>| match (limit, tick) {
            (Some(limit), Some(tick)) if !tick.is_zero() => {
                u32::try_from(limit.as_nanos().div_ceil(tick.as_nanos()))
                    .unwrap_or(u32::MAX)
                    .max(1)
            }
            (Some(_), Some(_)) => 1,
            _ => 0,
        };
        let (keepalive_ticks, idle_ticks) =
            (ticks(config.keepalive_interval), ticks(config.idle_timeout));
        let mut decoder = Decoder::new(config.decoder);
        let deflater = callbacks.shared().deflate_setup().map(|setup| {
            let n = setup.negotiated;
            decoder.set_inflater(Inflater::new(n.decompress_window_bits, n.decompress_reset));
            Box::new(setup.deflater())
        });
        Driver {
            io,
            role: config.role,
            close_timeout: config.close_timeout,
            decoder,
            deflater,
            staged: VecDeque::new(),
            callbacks,
            unprocessed: !read_buf.is_empty(),
            read_buf,
            out: VecDeque::new(),
            out_pos: 0,
            needs_flush: false,
            close_sent: false,
            close_wait: config.close_timeout,
            closed_here: false,
            close_received: None,
            failure: None,
            draining: false,
            drain_skip: None,
            close_seen_while_draining: false,
            read_eof: false,
            write_shutdown: false,
            tick,
            keepalive_ticks,
            idle_ticks,
            heard: false,
            silent: 0,
            ping_outstanding: false,
            close_deadline: None,
            timer: tick.map(|tick| Box::pin(tokio::time::sleep(tick))),
            timer_registered: false,
        }
    }

    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<Ending> {
        // Register before looking at the outbox, so that a frame queued after the look wakes us.
        self.callbacks.shared().register(cx.waker());
        self.callbacks.shared().start_polling();
        if std::mem::take(&mut self.unprocessed) {
            // The bytes read past the handshake, decoded like a read: payloads copied out, so
            // that none pins the leftover buffer.
            let mut leftover = std::mem::take(&mut self.read_buf);
            self.decode_read(&mut leftover);
        }
        for _ in 0..MAX_ROUNDS {
            let mut progressed = false;

            // 1. What handles queued (the lock is taken only when something is).
            let before = self.out.len();
            let command = if self.callbacks.shared().has_pending() {
                let command = self.callbacks.shared().take(&mut self.staged);
                self.frame_staged();
                command
            } else {
                None
            };
            if let Some(command) = command {
                progressed = true;
                match command {
                    Command::Close {
                        code,
                        reason,
                        timeout,
                    } => self.start_close(code, &reason, timeout),
                    Command::Fail {
                        code,
                        reason,
                        cause,
                        discard_queued,
                    } => self.fail(code, &reason, cause, discard_queued),
                    Command::Abort { cause } => {
                        self.closed_here = true;
                        return Poll::Ready(Ending::abnormal(cause));
                    }
                }
            }
            progressed |= self.out.len() != before;

            // 2. Write.
            let flushed = match self.poll_write_out(cx) {
                Poll::Ready(Ok(())) => true,
                Poll::Ready(Err(err)) => return Poll::Ready(self.io_failed(&err)),
                Poll::Pending => false,
            };
            // Our close frame is out and we owe nothing more: half-close. A server then closes
            // the socket (RFC 6455 §7.1.1); a client waits for the server's EOF, and a failing
            // endpoint for the peer's close reply (or EOF), reading on so that an unread byte
            // does not turn our close into a reset.
            let owe_nothing = self.failure.is_some() || self.close_received.is_some();
            if flushed && self.close_sent && owe_nothing && !self.write_shutdown {
                match Pin::new(&mut self.io).poll_shutdown(cx) {
                    Poll::Ready(Ok(())) => {
                        self.write_shutdown = true;
                        progressed = true;
                    }
                    Poll::Ready(Err(err)) => return Poll::Ready(self.io_failed(&err)),
                    Poll::Pending => {}
                }
            }
            if self.write_shutdown {
                if let Some(ending) = self.finished_ending() {
                    return Poll::Ready(ending);
                }
            }

            // 3. Read and decode.
            if !self.read_eof {
                match self.poll_read(cx) {
                    Poll::Ready(Ok(0)) => {
                        self.read_eof = true;
                        return Poll::Ready(self.on_eof());
                    }
                    Poll::Ready(Ok(_)) => {
                        progressed = true;
                        self.heard = true;
                        self.ping_outstanding = false;
                    }
                    Poll::Ready(Err(err)) => return Poll::Ready(self.io_failed(&err)),
                    Poll::Pending => {}
                }
            }

            // 4. Timers.
            match self.poll_timers(cx) {
                Poll::Ready(Some(ending)) => return Poll::Ready(ending),
                Poll::Ready(None) => progressed = true,
                Poll::Pending => {}
            }

            if !progressed && !self.callbacks.shared().stop_polling() {
                return Poll::Pending;
            }
        }
        self.callbacks.shared().stop_polling();
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Decodes everything in `read_buf` and acts on it.
    fn process_input(&mut self) {
        if self.draining {
            self.skip_to_close_frame();
            return;
        }
        let mut input = std::mem::take(&mut self.read_buf);
        self.decode_all(&mut input);
        self.read_buf = input;
        if self.draining {
            self.skip_to_close_frame();
        } else if self.read_buf.is_empty() {
            // Release the buffer: a payload split off it keeps its own allocation alive.
            self.read_buf = BytesMut::new();
        }
    }

    /// Decodes the frames of `input` and acts on each, until it needs more bytes or the
    /// connection starts draining.
    fn decode_all<I: Input>(&mut self, input: &mut I) {
        while !self.draining {
            let decoded = match self.decoder.decode_from(input) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => break,
                Err(err) => {
                    // Where the stream can be resynchronised to spot the peer's close reply:
                    // after the frame that failed (its header is at the front of the input if
                    // it failed at the header, consumed if it failed in its payload).
                    self.drain_skip = Some(self.decoder.frame_in_progress().unwrap_or(0));
                    let cause = err.to_string();
                    let code = err.close_code();
                    // Replies to the messages before the bad frame were accepted: they go first.
                    self.fail(code, &cause, format!("protocol error: {cause}"), false);
                    break;
                }
            };
            match decoded {
                Decoded::Text(payload) => self.deliver(Incoming::Text(payload)),
                Decoded::Binary(payload) => self.deliver(Incoming::Binary(payload)),
                Decoded::Ping(payload) => {
                    // RFC 6455 §5.5.2: answer with a pong carrying the same payload, unless
                    // our close frame is already queued (nothing may follow it).
                    if !self.close_sent {
                        self.queue_pong(payload);
                    }
                }
                Decoded::Pong(_) => {}
                Decoded::Close(frame) => self.on_close_frame(frame),
            }
        }
    }

    /// Decodes what a read put in the thread's scratch buffer: first the end of a frame begun
    /// in an earlier read (completed in `read_buf`), then whole frames straight from the
    /// scratch (their payloads copied out, each in an allocation of its own size), and keeps
    /// the start of an incomplete frame in `read_buf`, sized for that frame.
    fn decode_read(&mut self, bytes: &mut [u8]) {
        let mut input = SliceInput::new(bytes);
        while !self.read_buf.is_empty() && !self.draining && !input.rest().is_empty() {
            let need = match self.decoder.bytes_wanted(self.read_buf.len()) {
                // A header not complete yet: at most a header's worth.
                0 => MAX_HEADER_LEN,
                wanted => wanted,
            };
            let n = need.min(input.rest().len());
            // Room for the whole frame at once when it is small: no regrowth per read. A large
            // one (its header just completed) gets room for what arrived, at most 256 KiB
            // more: memory follows the bytes, not the length the header announces.
            let room = if need < SCRATCH_LEN {
                need
            } else {
                n.max(MAX_READ_RESERVE)
            };
            let total = self.read_buf.len() + room;
            reserve_exact(&mut self.read_buf, total);
            self.read_buf.extend_from_slice(&input.rest()[..n]);
            input.consume(n);
            self.process_input();
        }
        if self.read_buf.is_empty() {
            self.decode_all(&mut input);
        }
        let rest = input.rest();
        if rest.is_empty() {
            return;
        }
        if self.draining {
            // A failure or the peer's close: the rest is skipped frame by frame (or dropped).
            if self.drain_skip.is_some() {
                self.read_buf.extend_from_slice(rest);
                self.skip_to_close_frame();
            }
            return;
        }
        // The start of a frame: its header (or part of it), or its payload's first bytes.
        let capacity = match self.decoder.frame_in_progress() {
            Some(len) => len.min(rest.len().max(MAX_READ_RESERVE)),
            None => rest.len(),
        };
        let mut buf = BytesMut::with_capacity(capacity);
        buf.extend_from_slice(rest);
        self.read_buf = buf;
    }

    /// Draining after a failure: skips whole frames by their headers, without looking at
    /// payloads, until the peer's close frame has fully arrived.
    fn skip_to_close_frame(&mut self) {
        while let Some(skip) = self.drain_skip {
            if skip > 0 {
                let n = skip.min(self.read_buf.len());
                bytes::Buf::advance(&mut self.read_buf, n);
                self.drain_skip = Some(skip - n);
                if skip > n {
                    break;
                }
                continue;
            }
            let Some(extent) = crate::proto::frame::FrameExtent::peek(&self.read_buf) else {
                break;
            };
            if extent.opcode_bits == OpCode::Close as u8 {
                if self.read_buf.len() >= extent.total_len() {
                    self.close_seen_while_draining = true;
                    self.drain_skip = None;
                }
                break;
            }
            self.drain_skip = Some(extent.total_len());
        }
        if self.drain_skip.is_none() || self.read_buf.is_empty() {
            self.read_buf = BytesMut::new();
        }
    }

    fn deliver(&mut self, message: Incoming) {
        // After our close frame, messages the peer sent before it saw it are still delivered
        // (RFC 6455 §1.4: data may arrive until the peer's close frame), so that nothing the
        // peer sent in good faith is lost. A failing connection delivers nothing more: that
        // is decided by `fail`, which stops decoding, and by a pending failure command.
        if self.failure.is_none() && !self.callbacks.shared().failing() {
            self.callbacks.on_message(message);
        }
    }

    fn on_close_frame(&mut self, frame: Option<CloseFrame>) {
        let code = frame.as_ref().map(|f| f.code);
        self.close_received = Some(frame);
        // Nothing after a close frame is read as frames (RFC 6455 §5.5.1).
        self.draining = true;
        self.drain_skip = None;
        self.read_buf = BytesMut::new();
        if !self.close_sent {
            // The peer started the close handshake: send what was queued, then echo its code.
            self.callbacks.shared().begin_closing(&mut self.staged);
            self.frame_staged();
            let payload = match code {
                Some(code) => crate::proto::close::encode_payload(code, ""),
                None => Bytes::new(),
            };
            self.queue_close_frame(payload, self.close_timeout);
        }
    }

    /// Starts the close handshake on the application's request, waiting `timeout` (or the
    /// connection's close timeout) for the peer's close frame.
    fn start_close(&mut self, code: CloseCode, reason: &str, timeout: Option<Duration>) {
        if self.close_sent {
            return;
        }
        self.closed_here = true;
        let payload = crate::proto::close::encode_payload(code, reason);
        self.queue_close_frame(payload, timeout.unwrap_or(self.close_timeout));
    }

    /// Fails the connection (RFC 6455 §7.1.7): a close frame with `code` and `reason`, then the
    /// socket is closed; no more input is decoded. Frames already queued go out first, unless
    /// `discard_queued` (for a peer that does not read them). `cause` is kept for the local
    /// error report.
    fn fail(&mut self, code: CloseCode, reason: &str, cause: String, discard_queued: bool) {
        if self.failure.is_some() {
            return;
        }
        if !self.draining {
            // Failed by a command (not by the decoder, which sets this itself): framing is
            // intact, the next frame starts after the one in progress.
            if self.drain_skip.is_none() {
                self.drain_skip = Some(self.decoder.frame_in_progress().unwrap_or(0));
            }
            self.draining = true;
        }
        if !self.close_sent {
            self.callbacks.shared().begin_closing(&mut self.staged);
            if discard_queued {
                let dropped: usize = self.staged.drain(..).map(|q| q.item.cost()).sum();
                self.callbacks.shared().release(dropped);
            }
            self.frame_staged();
            if discard_queued {
                // A frame partly written must be finished, or the stream would be corrupt.
                let keep = usize::from(self.out_pos > 0);
                let dropped: usize = self
                    .out
                    .drain(keep..)
                    .map(|q| cost(q.item.payload().len()))
                    .sum();
                self.callbacks.shared().release(dropped);
                shrink_if_drained(&mut self.out);
            }
            let payload = crate::proto::close::encode_payload(code, reason);
            self.queue_close_frame(payload, self.close_timeout);
        }
        self.failure = Some(Ending {
            code,
            reason: crate::proto::close::truncate_reason(reason).to_owned(),
            was_clean: false,
            cause: Some(cause),
            closed_here: false,
        });
    }

    fn queue_close_frame(&mut self, payload: Bytes, timeout: Duration) {
        self.queue_internal(OpCode::Close, payload);
        self.close_sent = true;
        self.close_wait = timeout;
        let deadline = deadline_after(timeout);
        self.close_deadline = Some(deadline);
        self.arm(deadline);
    }

    /// Sets the timer to fire at `at`.
    fn arm(&mut self, at: Instant) {
        match &mut self.timer {
            Some(timer) => timer.as_mut().reset(at),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        self.timer_registered = false;
    }

    /// Frames what handles queued, compressing the messages the outgoing path left to the
    /// driver ([`super::outgoing`]).
    fn frame_staged(&mut self) {
        let role = self.role;
        while let Some(Queued { item, mut held }) = self.staged.pop_front() {
            let frame = match item {
                Outgoing::Frame(frame) => frame,
                Outgoing::Message {
                    opcode,
                    payload,
                    compress,
                } => {
                    let compressed = self
                        .deflater
                        .as_deref_mut()
                        .and_then(|deflater| outgoing::compress(deflater, &payload, compress));
                    match compressed {
                        Some(compressed) => {
                            let shared = self.callbacks.shared();
                            shared.recharge(&mut held, payload.len(), compressed.len());
                            OutFrame::compressed(role, opcode, compressed, rand::random)
                        }
                        None => OutFrame::new(role, opcode, payload, rand::random),
                    }
                }
            };
            self.out.push_back(Queued { item: frame, held });
        }
        shrink_if_drained(&mut self.staged);
    }

    /// Queues a pong, within the outgoing budget: a peer that floods pings and never reads
    /// the pongs fills its budget and is closed with 1008 like any other peer that does not read.
    fn queue_pong(&mut self, payload: Bytes) {
        if self.callbacks.shared().over_budget() {
            self.fail(
                CloseCode::POLICY_VIOLATION,
                "outgoing buffer limit exceeded",
                "outgoing buffer limit exceeded by pongs to a peer that does not read".to_owned(),
                true,
            );
        } else {
            self.queue_internal(OpCode::Pong, payload);
        }
    }

    /// Queues a frame the protocol owes (pong, close, keepalive ping).
    fn queue_internal(&mut self, opcode: OpCode, payload: Bytes) {
        let frame = OutFrame::new(self.role, opcode, payload, rand::random);
        let cost = cost(frame.payload().len());
        let shared = self.callbacks.shared();
        shared.charge(cost);
        let held = shared.hold(cost);
        self.out.push_back(Queued { item: frame, held });
    }

    /// The ending once our write side is shut, if nothing more needs to be read.
    fn finished_ending(&mut self) -> Option<Ending> {
        if let Some(failure) = &self.failure {
            // Done once the peer has answered our close frame or hung up; until then, reading
            // on avoids resetting a connection whose last bytes it has not read.
            return (self.read_eof || self.close_seen_while_draining).then(|| failure.clone());
        }
        let frame = self.close_received.as_ref()?;
        if self.role == Role::Client && !self.read_eof {
            // RFC 6455 §7.1.1: the client waits for the server to close the TCP connection.
            self.draining = true;
            self.drain_skip = None;
            return None;
        }
        Some(clean_ending(frame))
    }

    /// The peer closed its side: whatever state the close handshake is in, the connection is over.
    fn on_eof(&self) -> Ending {
        if let Some(failure) = &self.failure {
            return failure.clone();
        }
        match &self.close_received {
            Some(frame) if self.write_shutdown || self.out.is_empty() => clean_ending(frame),
            // The peer's close arrived and it hung up before our reply was written.
            Some(frame) => Ending {
                was_clean: false,
                ..clean_ending(frame)
            },
            None => Ending::abnormal(if self.close_sent {
                "connection closed by the peer before its close frame"
            } else {
                "connection closed by the peer without a close frame"
            }),
        }
    }

    fn io_failed(&mut self, err: &io::Error) -> Ending {
        match &self.failure {
            Some(failure) => failure.clone(),
            None => Ending::abnormal(format!("connection error: {err}")),
        }
    }

    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut count = 0;
            for (i, Queued { item: frame, .. }) in self.out.iter().enumerate() {
                if count + 2 > MAX_IOV {
                    break;
                }
                let (head, payload) = (frame.head(), &frame.payload()[..]);
                let skip = if i == 0 { self.out_pos } else { 0 };
                if skip < head.len() {
                    iov[count] = IoSlice::new(&head[skip..]);
                    count += 1;
                }
                let skip = skip.saturating_sub(head.len());
                if skip < payload.len() {
                    iov[count] = IoSlice::new(&payload[skip..]);
                    count += 1;
                }
            }
            let written = if count == 0 {
                // Only empty frames would be possible here, and every frame has a header.
                0
            } else {
                std::task::ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &iov[..count]))?
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(written);
            self.needs_flush = true;
        }
        if self.needs_flush {
            std::task::ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.needs_flush = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Marks `written` bytes of `out` as written and returns their budget.
    fn advance(&mut self, mut written: usize) {
        let mut released = 0;
        while let Some(Queued { item: front, .. }) = self.out.front() {
            let rest = front.wire_len() - self.out_pos;
            if written < rest {
                self.out_pos += written;
                break;
            }
            written -= rest;
            released += cost(front.payload().len());
            self.out.pop_front();
            self.out_pos = 0;
        }
        shrink_if_drained(&mut self.out);
        self.callbacks.shared().release(released);
    }

    /// Reads what the socket has and decodes it. `Ready(Ok(0))`: the peer closed its side.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.draining {
            let n = std::task::ready!(self.poll_read_draining(cx))?;
            if n > 0 {
                self.skip_to_close_frame();
            }
            return Poll::Ready(Ok(n));
        }
        let wanted = self.decoder.bytes_wanted(self.read_buf.len());
        if wanted >= SCRATCH_LEN {
            // A large frame: read straight into its own buffer, and no further than its end,
            // so that its payload is split off without a copy and owns its whole allocation.
            let total = self.read_buf.len() + wanted;
            let step = (self.read_buf.len() * 2).max(self.read_buf.len() + MAX_READ_RESERVE);
            if self.read_buf.capacity() == self.read_buf.len() {
                // Memory follows the bytes that arrive, not the length the header announced.
                reserve_exact(&mut self.read_buf, total.min(step));
            }
            let io = Pin::new(&mut self.io);
            let mut limited = bytes::BufMut::limit(&mut self.read_buf, wanted);
            let n = std::task::ready!(tokio_util::io::poll_read_buf(io, cx, &mut limited))?;
            if n > 0 {
                self.process_input();
            }
            return Poll::Ready(Ok(n));
        }
        // Taken out of the thread's slot while in use: a callback run from here that drove
        // another connection on this thread would find the slot empty and use its own.
        let mut scratch = SCRATCH
            .take()
            .unwrap_or_else(|| vec![0; SCRATCH_LEN].into_boxed_slice());
        let mut buf = ReadBuf::new(&mut scratch);
        let read = Pin::new(&mut self.io).poll_read(cx, &mut buf);
        let n = buf.filled().len();
        if let Poll::Ready(Ok(())) = read {
            if n > 0 {
                self.decode_read(&mut scratch[..n]);
            }
        }
        SCRATCH.set(Some(scratch));
        std::task::ready!(read)?;
        Poll::Ready(Ok(n))
    }

    /// Reads while draining: into the scratch to throw away when framing is lost, into
    /// `read_buf` (to skip frame by frame) otherwise.
    fn poll_read_draining(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let io = Pin::new(&mut self.io);
        if self.drain_skip.is_none() {
            let mut scratch = SCRATCH
                .take()
                .unwrap_or_else(|| vec![0; SCRATCH_LEN].into_boxed_slice());
            let mut buf = ReadBuf::new(&mut scratch);
            let read = io.poll_read(cx, &mut buf);
            let n = buf.filled().len();
            SCRATCH.set(Some(scratch));
            std::task::ready!(read)?;
            return Poll::Ready(Ok(n));
        }
        self.read_buf.reserve(MIN_READ);
        tokio_util::io::poll_read_buf(io, cx, &mut self.read_buf)
    }

    /// `Ready(Some)`: the connection ends. `Ready(None)`: the timer did something.
    fn poll_timers(&mut self, cx: &mut Context<'_>) -> Poll<Option<Ending>> {
        let Some(timer) = &mut self.timer else {
            return Poll::Pending;
        };
        if self.timer_registered && !timer.is_elapsed() {
            return Poll::Pending;
        }
        // Registers the waker after the timer was armed, or observes that it fired.
        if std::future::Future::poll(timer.as_mut(), cx).is_pending() {
            self.timer_registered = true;
            return Poll::Pending;
        }
        let now = Instant::now();
        if let Some(deadline) = self.close_deadline {
            if now >= deadline {
                return Poll::Ready(Some(self.close_timed_out()));
            }
            self.arm(deadline);
            return Poll::Ready(None);
        }
        let Some(tick) = self.tick else {
            // Only the close deadline arms the timer without a tick, and it is handled above.
            return Poll::Pending;
        };
        if std::mem::take(&mut self.heard) {
            self.silent = 0;
        } else {
            self.silent = self.silent.saturating_add(1);
        }
        if self.idle_ticks > 0 && self.silent >= self.idle_ticks {
            return Poll::Ready(Some(Ending::abnormal(format!(
                "no data from the peer for {} s (idle timeout)",
                (tick * self.silent).as_secs_f64()
            ))));
        }
        if self.keepalive_ticks > 0 && !self.ping_outstanding && self.silent >= self.keepalive_ticks
        {
            self.ping_outstanding = true;
            self.queue_internal(OpCode::Ping, Bytes::from_static(b"ferrosock"));
        }
        self.arm(now + tick);
        Poll::Ready(None)
    }

    fn close_timed_out(&self) -> Ending {
        if let Some(failure) = &self.failure {
            return failure.clone();
        }
        match &self.close_received {
            Some(frame) => Ending {
                was_clean: false,
                ..clean_ending(frame)
            },
            None => Ending::abnormal(format!(
                "no close frame from the peer within {} s",
                self.close_wait.as_secs_f64()
            )),
        }
    }
}

/// The ending of a completed close handshake, from the peer's close frame.
fn clean_ending(frame: &Option<CloseFrame>) -> Ending {
    match frame {
        Some(frame) => Ending {
            code: frame.code,
            reason: frame.reason.clone(),
            was_clean: true,
            cause: None,
            closed_here: false,
        },
        None => Ending {
            code: CloseCode::NO_STATUS,
            reason: String::new(),
            was_clean: true,
            cause: None,
            closed_here: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limits;
    use crate::proto::FrameHeader;

    struct Quiet(Shared);

    impl Callbacks for Quiet {
        fn shared(&self) -> &Shared {
            &self.0
        }
        fn on_message(&mut self, _: Incoming) {}
        fn on_end(self, _: Ending) {}
    }

    /// A large frame whose header arrives in pieces: the buffer holds what arrived, not the
    /// length the header announced (a peer could make every connection reserve its frame
    /// limit with a few bytes each).
    #[tokio::test]
    async fn a_header_that_announces_a_large_frame_reserves_only_what_arrived() {
        let limits = Limits::default()
            .max_frame_size(16 << 20)
            .max_message_size(16 << 20);
        let shared = Shared::new(
            Role::Server,
            crate::common::Status::Connected,
            1 << 20,
            limits.backpressure,
        );
        let (io, _peer) = tokio::io::duplex(1024);
        let config = DriverConfig::new(Role::Server, &limits);
        let mut driver = Driver::new(io, BytesMut::new(), config, Quiet(shared));
        let mut head = [0u8; MAX_HEADER_LEN];
        let header = FrameHeader::new(OpCode::Binary, 16 << 20, Some([1, 2, 3, 4]));
        let len = header.encode(&mut head);
        driver.decode_read(&mut head[..1].to_vec());
        let mut rest = head[1..len].to_vec();
        rest.push(0xaa);
        driver.decode_read(&mut rest);
        assert_eq!(driver.decoder.frame_in_progress(), Some(16 << 20));
        assert!(
            driver.read_buf.capacity() <= MAX_READ_RESERVE + MAX_HEADER_LEN,
            "{} bytes reserved for 1 that arrived",
            driver.read_buf.capacity()
        );
    }
}
