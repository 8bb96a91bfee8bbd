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
//! The loop is here; what it calls lives beside it: reading and decoding in `read.rs`,
//! framing and writing in `write.rs`, the close handshake, failures, the end and the timers in
//! `state.rs`.
//!
//! It ends when the close handshake is done (and the TCP socket closed after it), when the
//! peer vanishes, or when a handle aborts it; the socket is closed before
//! [`Callbacks::on_end`] runs.

mod read;
mod state;
mod write;

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
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
use crate::stats::{Kind, Stripe};

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
    /// What went through the connection.
    pub(crate) traffic: Traffic,
}

/// One connection's traffic: data messages and bytes on the wire each way, for the line
/// logged at its end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Traffic {
    pub(crate) messages_in: u64,
    pub(crate) messages_out: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
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
            traffic: Traffic::default(),
        }
    }
}

/// What the layer above plugs into the driver.
pub(crate) trait Callbacks: Send {
    /// The connection's shared state, which handles send and close through.
    fn shared(&self) -> &Shared;
    /// A whole message arrived. Not called once the connection is closing.
    fn on_message(&mut self, message: Incoming);
    /// Ready when the layer above takes more messages: until then the driver reads nothing
    /// from the socket (it still writes). Pending registers `cx`'s waker. Default: always
    /// ready.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }
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
        ending.closed_here = driver.close.closed_here();
        ending.traffic = driver.traffic;
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

/// Schedules the task to be polled again after the runtime's next look at I/O, as
/// `tokio::task::yield_now` does: true if it will be. Outside a tokio runtime it is woken at once.
fn defer(cx: &mut Context<'_>) -> bool {
    let mut yielded = std::pin::pin!(tokio::task::yield_now());
    yielded.as_mut().poll(cx).is_pending()
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

    /// Where the close handshake is ([`state`]): every change of it is made by
    /// `transition`.
    close: state::Close,
    /// How long the close handshake waits for the peer once our close frame is queued.
    close_wait: Duration,
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

    /// The stripe of its server's counters that this driver adds to: its thread's when it
    /// started (`None`: a client socket).
    stripe: Option<Arc<Stripe>>,
    /// This connection's own counts.
    traffic: Traffic,
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
        let stripe = callbacks.shared().stats().map(|stats| stats.stripe());
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
            close: state::Close::Open,
            close_wait: config.close_timeout,
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
            stripe,
            traffic: Traffic::default(),
        }
    }

    /// Counts `n` bytes read from the socket.
    fn count_read(&mut self, n: usize) {
        self.traffic.bytes_in += n as u64;
        if let Some(stripe) = &self.stripe {
            stripe.wire_in(n);
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
            self.count_read(leftover.len());
            self.decode_read(&mut leftover);
        }
        // Set for this poll when its writes wait for the runtime's next turn (see below).
        let mut corked = false;
        for round in 0..MAX_ROUNDS {
            let mut progressed = false;

            // 1. What handles queued (the lock is taken only when something is).
            let before = self.out.len();
            let command = if self.callbacks.shared().has_pending() {
                let command = self.callbacks.shared().take(&mut self.staged);
                // A publish or broadcast wakes every subscriber with one frame each. Written at
                // once, that is a send per frame; held until the runtime has looked at the
                // sockets again (`yield_now` defers the task past that), the messages published
                // meanwhile join it — the corking uWebSockets does until the end of its loop
                // iteration. Once per wake-up: the next poll writes.
                if round == 0
                    && before == 0
                    && command.is_none()
                    && self.staged.iter().any(|queued| queued.held.is_shared())
                {
                    corked = defer(cx);
                }
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
                    } => self.transition(state::CloseEvent::Close {
                        code,
                        reason,
                        timeout,
                    }),
                    Command::Fail {
                        code,
                        reason,
                        cause,
                        discard_queued,
                    } => self.transition(state::CloseEvent::Fail {
                        code,
                        reason,
                        cause,
                        discard_queued,
                    }),
                    Command::Abort { cause } => {
                        self.transition(state::CloseEvent::Abort);
                        return Poll::Ready(Ending::abnormal(cause));
                    }
                }
            }
            progressed |= self.out.len() != before;

            // 2. Write.
            let flushed = if corked {
                false
            } else {
                match self.poll_write_out(cx) {
                    Poll::Ready(Ok(())) => true,
                    Poll::Ready(Err(err)) => return Poll::Ready(self.io_failed(&err)),
                    Poll::Pending => false,
                }
            };
            // Our close frame is out and we owe nothing more: half-close. A server then closes
            // the socket (RFC 6455 §7.1.1); a client waits for the server's EOF, and a failing
            // endpoint for the peer's close reply (or EOF), reading on so that an unread byte
            // does not turn our close into a reset.
            if flushed && self.close.owes_nothing() && !self.write_shutdown {
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

            // 3. Read and decode, if the callbacks take more.
            if !self.read_eof && self.callbacks.poll_ready(cx).is_ready() {
                match self.poll_read(cx) {
                    Poll::Ready(Ok(0)) => {
                        self.read_eof = true;
                        return Poll::Ready(self.on_eof());
                    }
                    Poll::Ready(Ok(n)) => {
                        self.count_read(n);
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
