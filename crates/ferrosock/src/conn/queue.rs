//! The state a running connection shares with the handles that send on it.
//!
//! `send` never blocks: it appends a ready-made frame to the outbox under a short lock and
//! wakes the driver. The outgoing byte budget is counted here: bytes enter it when queued and
//! leave it when the driver has written them to the socket, so a peer that stops reading
//! fills only its own budget.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;

use atomic_waker::AtomicWaker;

use bytes::Bytes;

use super::Status;
use crate::limits::BackpressurePolicy;
use crate::proto::{CloseCode, OpCode, OutFrame};

/// Whether a message is compressed (when permessage-deflate was negotiated).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compress {
    /// Compressed if it is at least the threshold's length, and, without context takeover,
    /// only if compressing makes it shorter. The default.
    #[default]
    Auto,
    /// Compressed whatever its length, even when that makes it longer.
    Always,
    /// Sent as it is (data that is already compressed, say).
    Never,
}

/// Something queued for the driver to write.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A frame ready to write.
    Frame(OutFrame),
    /// A data message the driver compresses (or not) and frames: on connections with
    /// permessage-deflate, whose compressor state lives in the driver.
    Message {
        opcode: OpCode,
        payload: Bytes,
        compress: Compress,
    },
}

impl Outgoing {
    /// The payload bytes this counts against the budget.
    pub(crate) fn budget_len(&self) -> usize {
        match self {
            Outgoing::Frame(frame) => frame.payload().len(),
            Outgoing::Message { payload, .. } => payload.len(),
        }
    }
}

/// Connection state shared between the driver task and every handle.
#[derive(Debug)]
pub(crate) struct Shared {
    outbox: Mutex<Outbox>,
    waker: AtomicWaker,
    /// A [`Status`] as `u8`. Changes only under the outbox lock, so that a frame is never
    /// queued behind a close frame.
    status: AtomicU8,
    /// Payload bytes queued by `send` and not yet written. Invariant: `<= budget` except
    /// transiently while the driver subtracts what it wrote.
    buffered: AtomicUsize,
    /// Set when a `Fail` or `Abort` command is accepted.
    failing: AtomicBool,
    /// permessage-deflate was negotiated: data goes to the driver as messages to compress.
    deflate: AtomicBool,
    /// With permessage-deflate and no context takeover on this end: the window bits this end
    /// compresses with (its compressed messages depend on nothing else, so one compression can
    /// serve every such connection). 0 otherwise.
    resetting_window: AtomicU8,
    /// Something was queued (frames or a command) since the driver last took the outbox: lets
    /// the driver skip the lock when there is nothing.
    pending: AtomicBool,
    /// The driver is inside its poll and will look at the outbox before it sleeps: queuing
    /// needs no wake-up then (a handler replying from `on_message` would otherwise wake its
    /// own task, which is already running, and cost it a second poll per message).
    polling: AtomicBool,
    budget: usize,
    policy: BackpressurePolicy,
}

#[derive(Debug, Default)]
struct Outbox {
    frames: VecDeque<Outgoing>,
    /// Boxed: rarely set, and every connection carries the outbox for its whole life.
    command: Option<Box<Command>>,
}

/// A request to end the connection, from outside the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    /// Start the close handshake: send frames queued so far, then a close frame, then wait for
    /// the peer's — for `timeout`, or the connection's close timeout when `None`. The
    /// connection ends with the code of the peer's reply.
    Close {
        code: CloseCode,
        reason: String,
        timeout: Option<std::time::Duration>,
    },
    /// Fail the connection: send a close frame with `code` and `reason` after the frames
    /// already queued (or instead of them, with `discard_queued`), then close. The connection
    /// ends with `code`, reported as an error with `cause` (which stays local: it may say more
    /// than the peer should hear).
    Fail {
        code: CloseCode,
        reason: String,
        cause: String,
        discard_queued: bool,
    },
    /// Drop the socket now, without a close frame (the peer sees 1006).
    Abort { cause: String },
}

/// Why a `send` was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendError {
    /// The connection is not `Connected`.
    NotConnected(Status),
    /// The frame would exceed the outgoing byte budget.
    BufferFull { buffered: usize, budget: usize },
}

impl Shared {
    pub(crate) fn new(status: Status, budget: usize, policy: BackpressurePolicy) -> Shared {
        Shared {
            outbox: Mutex::new(Outbox::default()),
            waker: AtomicWaker::new(),
            status: AtomicU8::new(status as u8),
            buffered: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
            deflate: AtomicBool::new(false),
            resetting_window: AtomicU8::new(0),
            pending: AtomicBool::new(false),
            polling: AtomicBool::new(false),
            budget,
            policy,
        }
    }

    pub(crate) fn status(&self) -> Status {
        Status::from_u8(self.status.load(Ordering::Acquire))
    }

    /// Whether permessage-deflate was negotiated.
    pub(crate) fn deflate(&self) -> bool {
        self.deflate.load(Ordering::Acquire)
    }

    /// Records what permessage-deflate settled, if anything (before the first `send`).
    pub(crate) fn set_deflate(&self, negotiated: Option<&crate::proto::Negotiated>) {
        if let Some(agreed) = negotiated.filter(|agreed| agreed.compress_reset) {
            self.resetting_window
                .store(agreed.compress_window_bits, Ordering::Release);
        }
        self.deflate.store(negotiated.is_some(), Ordering::Release);
    }

    /// The window bits of a compressor that starts each message afresh, when
    /// permessage-deflate was negotiated without context takeover on this end.
    pub(crate) fn resetting_window(&self) -> Option<u8> {
        match self.resetting_window.load(Ordering::Acquire) {
            0 => None,
            bits => Some(bits),
        }
    }

    /// Queues a data frame or message for the driver to write. Its payload counts against the
    /// budget until written.
    pub(crate) fn send(&self, frame: Outgoing) -> Result<(), SendError> {
        let len = frame.budget_len();
        let mut outbox = self.lock();
        let status = self.status();
        if status != Status::Connected {
            return Err(SendError::NotConnected(status));
        }
        let buffered = self.buffered.load(Ordering::Acquire);
        if buffered.saturating_add(len) > self.budget {
            if self.policy == BackpressurePolicy::Close {
                let cause = format!(
                    "outgoing buffer limit exceeded: {buffered} bytes queued, budget {}",
                    self.budget
                );
                self.command_locked(
                    &mut outbox,
                    Command::Fail {
                        code: CloseCode::POLICY_VIOLATION,
                        reason: "outgoing buffer limit exceeded".to_owned(),
                        cause,
                        // The peer is not reading them: the close frame would wait behind.
                        discard_queued: true,
                    },
                );
            }
            return Err(SendError::BufferFull {
                buffered,
                budget: self.budget,
            });
        }
        self.buffered.fetch_add(len, Ordering::AcqRel);
        outbox.frames.push_back(frame);
        drop(outbox);
        self.notify();
        Ok(())
    }

    /// Tells the driver something is queued, waking it unless it is polling already.
    ///
    /// With [`Shared::stop_polling`], a Dekker-style handshake on two `SeqCst` flags: either
    /// this load sees `polling == false` and wakes the driver, or the driver's check after it
    /// cleared `polling` sees `pending == true`.
    fn notify(&self) {
        self.pending.store(true, Ordering::SeqCst);
        if !self.polling.load(Ordering::SeqCst) {
            self.waker.wake();
        }
    }

    /// Driver side: whether anything was queued since the last `take`.
    pub(crate) fn has_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Driver side: the driver starts a poll; queuing wakes nobody until [`stop_polling`].
    ///
    /// [`stop_polling`]: Shared::stop_polling
    pub(crate) fn start_polling(&self) {
        self.polling.store(true, Ordering::SeqCst);
    }

    /// Driver side: the driver is about to sleep. Returns true if something was queued in the
    /// meantime, in which case it keeps polling instead.
    pub(crate) fn stop_polling(&self) -> bool {
        self.polling.store(false, Ordering::SeqCst);
        if self.pending.load(Ordering::SeqCst) {
            self.polling.store(true, Ordering::SeqCst);
            true
        } else {
            false
        }
    }

    /// Asks the driver to end the connection. The first command wins; a connection that is
    /// already closing ignores a `Close` or `Fail` but still obeys an `Abort`.
    pub(crate) fn command(&self, command: Command) {
        let mut outbox = self.lock();
        self.command_locked(&mut outbox, command);
    }

    fn command_locked(&self, outbox: &mut Outbox, command: Command) {
        let status = self.status();
        let accept = match command {
            Command::Abort { .. } => status != Status::Closed,
            _ => status == Status::Connected || status == Status::Connecting,
        };
        if !accept {
            return;
        }
        if status != Status::Closed {
            self.set_status_locked(Status::Closing);
        }
        if matches!(command, Command::Fail { .. } | Command::Abort { .. }) {
            self.failing.store(true, Ordering::Release);
        }
        outbox.command = Some(Box::new(command));
        self.notify();
    }

    /// Whether a `Fail` or `Abort` command was given: a callback panicked or the budget ran
    /// out, and no more messages should be delivered.
    pub(crate) fn failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// Driver side: moves queued frames into `into`, returns the pending command.
    pub(crate) fn take(&self, into: &mut VecDeque<Outgoing>) -> Option<Command> {
        let mut outbox = self.lock();
        self.pending.store(false, Ordering::Release);
        if into.is_empty() {
            std::mem::swap(into, &mut outbox.frames);
        } else {
            into.append(&mut outbox.frames);
        }
        outbox.command.take().map(|command| *command)
    }

    /// Driver side: stops `send` (the driver is closing on its own account) and returns the
    /// frames queued so far.
    pub(crate) fn begin_closing(&self, into: &mut VecDeque<Outgoing>) {
        let mut outbox = self.lock();
        if self.status() == Status::Connected {
            self.set_status_locked(Status::Closing);
        }
        into.append(&mut outbox.frames);
    }

    /// Driver side: the socket is gone. Frees whatever is still queued.
    pub(crate) fn finish(&self) {
        let mut outbox = self.lock();
        self.set_status_locked(Status::Closed);
        outbox.frames = VecDeque::new();
        outbox.command = None;
        self.buffered.store(0, Ordering::Release);
    }

    /// Driver side: `bytes` of budgeted payload reached the socket (or were dropped).
    pub(crate) fn release(&self, bytes: usize) {
        if bytes > 0 {
            self.buffered.fetch_sub(bytes, Ordering::AcqRel);
        }
    }

    /// Driver side: counts a frame the driver queued itself (pong, ping, close) against the
    /// budget until it is written, like the frames `send` queues.
    pub(crate) fn charge(&self, bytes: usize) {
        self.buffered.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Whether the queued bytes exceed the budget.
    pub(crate) fn over_budget(&self) -> bool {
        self.buffered.load(Ordering::Acquire) > self.budget
    }

    /// Driver side: the task to wake when something is queued.
    pub(crate) fn register(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
    }

    /// Client side: the opening handshake succeeded.
    pub(crate) fn set_connected(&self) {
        let _outbox = self.lock();
        if self.status() == Status::Connecting {
            self.set_status_locked(Status::Connected);
        }
    }

    fn set_status_locked(&self, status: Status) {
        self.status.store(status as u8, Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Outbox> {
        // A panic while holding this lock cannot leave the outbox inconsistent (every update
        // is a single push, swap or store), so a poisoned lock is still usable.
        self.outbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Role;

    fn frame(len: usize) -> Outgoing {
        let payload = Bytes::from(vec![0; len]);
        Outgoing::Frame(OutFrame::new(Role::Server, OpCode::Binary, payload, || {
            [0; 4]
        }))
    }

    #[test]
    fn the_budget_counts_until_written() {
        let shared = Shared::new(Status::Connected, 100, BackpressurePolicy::Reject);
        shared.send(frame(60)).unwrap();
        assert_eq!(
            shared.send(frame(41)),
            Err(SendError::BufferFull {
                buffered: 60,
                budget: 100
            })
        );
        let mut out = VecDeque::new();
        assert_eq!(shared.take(&mut out), None);
        assert_eq!(out.len(), 1);
        // Taken by the driver but not written: still counted.
        assert!(shared.send(frame(41)).is_err());
        shared.release(60);
        shared.send(frame(100)).unwrap();
        assert_eq!(
            shared.status(),
            Status::Connected,
            "Reject keeps the connection"
        );
    }

    #[test]
    fn the_close_policy_fails_the_connection() {
        let shared = Shared::new(Status::Connected, 10, BackpressurePolicy::Close);
        assert!(shared.send(frame(11)).is_err());
        assert_eq!(shared.status(), Status::Closing);
        let mut out = VecDeque::new();
        assert!(matches!(
            shared.take(&mut out),
            Some(Command::Fail {
                code: CloseCode::POLICY_VIOLATION,
                ..
            })
        ));
        assert_eq!(
            shared.send(frame(1)),
            Err(SendError::NotConnected(Status::Closing))
        );
    }

    #[test]
    fn the_first_close_wins_but_abort_overrides() {
        let shared = Shared::new(Status::Connected, 10, BackpressurePolicy::Close);
        let close = Command::Close {
            code: CloseCode::NORMAL,
            reason: String::new(),
            timeout: None,
        };
        shared.command(close.clone());
        shared.command(Command::Fail {
            code: CloseCode::INTERNAL_ERROR,
            reason: String::new(),
            cause: "x".into(),
            discard_queued: false,
        });
        let mut out = VecDeque::new();
        assert_eq!(shared.take(&mut out), Some(close));
        shared.command(Command::Abort {
            cause: "now".into(),
        });
        assert!(matches!(shared.take(&mut out), Some(Command::Abort { .. })));
        shared.finish();
        shared.command(Command::Abort {
            cause: "again".into(),
        });
        assert_eq!(shared.take(&mut out), None);
    }
}
