//! The state a running connection shares with the handles that send on it.
//!
//! `send` never blocks: it appends a ready-made frame to the outbox under a short lock and
//! wakes the driver. The outgoing byte budget is counted here: bytes enter it when queued and
//! leave it when the driver has written them to the socket, so a peer that stops reading
//! fills only its own budget. What a queued item costs, and the process-wide cap, are in
//! [`super::budget`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use atomic_waker::AtomicWaker;
use tokio::sync::Notify;

use bytes::Bytes;

use super::budget::{cost, Charge, Held, Pool, Queued, POOL, QUEUED_MESSAGE_OVERHEAD};
use super::outgoing::DeflateSetup;
use crate::common::{Compress, Status};
use crate::limits::BackpressurePolicy;
use crate::proto::deflate::{Negotiated, PerMessageDeflate};
use crate::proto::{CloseCode, OpCode, OutFrame, Role};
use crate::stats::Counters;

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
    /// The payload's length.
    pub(crate) fn payload_len(&self) -> usize {
        match self {
            Outgoing::Frame(frame) => frame.payload().len(),
            Outgoing::Message { payload, .. } => payload.len(),
        }
    }

    /// What this costs against a budget: its payload and its place in the queue.
    pub(crate) fn cost(&self) -> usize {
        cost(self.payload_len())
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
    /// What the items queued and not yet written cost ([`cost`]). Invariant: `<= budget`, or
    /// one item alone, except transiently while the driver subtracts what it wrote.
    buffered: AtomicUsize,
    /// The process-wide account this connection's queue counts in.
    pool: &'static Pool,
    /// Set when a `Fail` or `Abort` command is accepted.
    failing: AtomicBool,
    /// Which end this is: it decides the masking of the frames senders build.
    role: Role,
    /// permessage-deflate as negotiated, set once before the first message can be sent: what
    /// the outgoing path ([`super::outgoing`]) decides with.
    /// Boxed: most connections never negotiate it, and every connection carries the slot.
    deflate: OnceLock<Box<DeflateSetup>>,
    /// Something was queued (frames or a command) since the driver last took the outbox: lets
    /// the driver skip the lock when there is nothing.
    pending: AtomicBool,
    /// The driver is inside its poll and will look at the outbox before it sleeps: queuing
    /// needs no wake-up then (a handler replying from `on_message` would otherwise wake its
    /// own task, which is already running, and cost it a second poll per message).
    polling: AtomicBool,
    budget: usize,
    policy: BackpressurePolicy,
    /// Wakes the tasks waiting for room in the budget ([`Shared::room_for`]); created by the
    /// first of them, so that a connection nobody waits on carries only the empty slot.
    room: OnceLock<Box<Notify>>,
    /// The counters of the server this connection belongs to (`None`: a client socket).
    stats: Option<Arc<Counters>>,
}

#[derive(Debug, Default)]
struct Outbox {
    frames: VecDeque<Queued<Outgoing>>,
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
    /// The process-wide cap is reached and this connection holds more than its share.
    ProcessFull { queued: usize, cap: usize },
}

impl Shared {
    pub(crate) fn new(
        role: Role,
        status: Status,
        budget: usize,
        policy: BackpressurePolicy,
    ) -> Shared {
        Shared::with_pool(role, status, budget, policy, &POOL)
    }

    /// [`new`](Self::new), counting in `pool` rather than the process's.
    pub(crate) fn with_pool(
        role: Role,
        status: Status,
        budget: usize,
        policy: BackpressurePolicy,
        pool: &'static Pool,
    ) -> Shared {
        Shared {
            pool,
            outbox: Mutex::new(Outbox::default()),
            waker: AtomicWaker::new(),
            status: AtomicU8::new(status as u8),
            buffered: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
            role,
            deflate: OnceLock::new(),
            pending: AtomicBool::new(false),
            polling: AtomicBool::new(false),
            budget,
            policy,
            room: OnceLock::new(),
            stats: None,
        }
    }

    /// Counts this connection in a server's `stats`.
    pub(crate) fn counted_in(mut self, stats: Option<Arc<Counters>>) -> Shared {
        self.stats = stats;
        self
    }

    /// The counters of the server this connection belongs to.
    pub(crate) fn stats(&self) -> Option<&Arc<Counters>> {
        self.stats.as_ref()
    }

    pub(crate) fn status(&self) -> Status {
        Status::from_u8(self.status.load(Ordering::Acquire))
    }

    /// Which end this is.
    pub(crate) fn role(&self) -> Role {
        self.role
    }

    /// permessage-deflate as negotiated, if it was.
    pub(crate) fn deflate_setup(&self) -> Option<&DeflateSetup> {
        self.deflate.get().map(|setup| &**setup)
    }

    /// Records what permessage-deflate settled, if anything, with the local `settings` it is
    /// used with. Called once, before the first `send` (and before the driver starts).
    pub(crate) fn set_deflate(&self, negotiated: Option<Negotiated>, settings: &PerMessageDeflate) {
        if let Some(negotiated) = negotiated {
            let _ = self
                .deflate
                .set(Box::new(DeflateSetup::new(negotiated, settings)));
        }
    }

    /// Queues a data frame or message for the driver to write. It counts against the budget
    /// until written ([`Outgoing::cost`]). Senders go through [`Shared::send_data`].
    pub(super) fn send(&self, frame: Outgoing) -> Result<(), SendError> {
        self.send_sharing(frame, None)
    }

    /// [`send`](Self::send) for a payload that other queues share: `payload` is its charge to
    /// the process-wide total, made once for all of them.
    pub(crate) fn send_sharing(
        &self,
        frame: Outgoing,
        payload: Option<Arc<Charge>>,
    ) -> Result<(), SendError> {
        let cost = frame.cost();
        let own = if payload.is_some() {
            QUEUED_MESSAGE_OVERHEAD
        } else {
            cost
        };
        // Charged before the checks, so that they see it; refused, it is released on return.
        let held = Held::new(self.pool.charge(own), payload);
        let mut outbox = self.lock();
        let status = self.status();
        if status != Status::Connected {
            return Err(SendError::NotConnected(status));
        }
        let buffered = self.buffered.load(Ordering::Acquire);
        // The budget and the process-wide cap bound what piles up: one message always goes on
        // an empty queue, whatever its size (`max_message_size` and the application bound
        // that), so a connection that keeps up is never cut.
        let refused = if buffered > 0 && buffered.saturating_add(cost) > self.budget {
            Some(SendError::BufferFull {
                buffered,
                budget: self.budget,
            })
        } else if buffered > 0 && self.pool.over_share(buffered.saturating_add(cost)) {
            Some(SendError::ProcessFull {
                queued: self.pool.total(),
                cap: self.pool.cap(),
            })
        } else {
            None
        };
        if let Some(refused) = refused {
            if self.policy == BackpressurePolicy::Close {
                if let Some(stats) = &self.stats {
                    stats.budget_cut();
                }
                let cause = match refused {
                    SendError::ProcessFull { queued, cap } => format!(
                        "process-wide outgoing limit reached: {queued} bytes queued in the \
                         process (cap {cap}), {buffered} on this connection"
                    ),
                    _ => format!(
                        "outgoing buffer limit exceeded: {buffered} bytes queued, budget {}",
                        self.budget
                    ),
                };
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
            return Err(refused);
        }
        self.add(cost);
        outbox.frames.push_back(Queued { item: frame, held });
        drop(outbox);
        self.notify();
        Ok(())
    }

    /// Counts `bytes` more on this connection's queue.
    fn add(&self, bytes: usize) {
        if self.buffered.fetch_add(bytes, Ordering::AcqRel) == 0 && bytes > 0 {
            self.pool.set_busy(true);
        }
    }

    /// Driver side: the process-wide charge for an item of `cost` the driver queues itself.
    pub(crate) fn hold(&self, cost: usize) -> Held {
        Held::new(self.pool.charge(cost), None)
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
        // Waiters for room stop waiting: no send will be accepted any more.
        self.wake_room();
    }

    /// Whether a `Fail` or `Abort` command was given: a callback panicked or the budget ran
    /// out, and no more messages should be delivered.
    pub(crate) fn failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// Driver side: moves queued frames into `into`, returns the pending command.
    pub(crate) fn take(&self, into: &mut VecDeque<Queued<Outgoing>>) -> Option<Command> {
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
    pub(crate) fn begin_closing(&self, into: &mut VecDeque<Queued<Outgoing>>) {
        let mut outbox = self.lock();
        if self.status() == Status::Connected {
            self.set_status_locked(Status::Closing);
        }
        into.append(&mut outbox.frames);
        drop(outbox);
        self.wake_room();
    }

    /// Driver side: the socket is gone. Frees whatever is still queued.
    pub(crate) fn finish(&self) {
        let mut outbox = self.lock();
        self.set_status_locked(Status::Closed);
        outbox.frames = VecDeque::new();
        outbox.command = None;
        if self.buffered.swap(0, Ordering::AcqRel) > 0 {
            self.pool.set_busy(false);
        }
        drop(outbox);
        self.wake_room();
    }

    /// Driver side: items that cost `bytes` reached the socket (or were dropped).
    pub(crate) fn release(&self, bytes: usize) {
        if bytes > 0 && self.buffered.fetch_sub(bytes, Ordering::AcqRel) == bytes {
            self.pool.set_busy(false);
        }
        if bytes > 0 {
            self.wake_room();
        }
    }

    fn wake_room(&self) {
        // With the fence in `room_for`: either this sees the waiters' `Notify`, or the waiter
        // that created it sees what changed before this call (no lost wake-up for the first).
        std::sync::atomic::fence(Ordering::SeqCst);
        if let Some(room) = self.room.get() {
            room.notify_waiters();
        }
    }

    /// What the items queued and not yet written cost against the budget: payloads plus
    /// [`QUEUED_MESSAGE_OVERHEAD`] each (browsers' and Node ws's `bufferedAmount`).
    pub(crate) fn buffered(&self) -> usize {
        self.buffered.load(Ordering::Acquire)
    }

    /// Resolves once a message with a payload of `payload_len` bytes would fit this
    /// connection's budget (the queue is empty, or has room for it) on an open connection, or
    /// once the connection is closing or closed (a send would fail anyway). While connecting it
    /// waits for the connection to open. The process-wide cap may still refuse the send: it is
    /// shared, and not waited for.
    pub(crate) async fn room_for(&self, payload_len: usize) {
        let room = self.room.get_or_init(|| Box::new(Notify::new()));
        loop {
            let notified = room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // See `wake_room`.
            std::sync::atomic::fence(Ordering::SeqCst);
            let buffered = self.buffered();
            let fits = buffered == 0 || buffered.saturating_add(cost(payload_len)) <= self.budget;
            match self.status() {
                Status::Connected if fits => return,
                Status::Closing | Status::Closed => return,
                Status::Connecting | Status::Connected => {}
            }
            notified.await;
        }
    }

    /// Driver side: counts an item the driver queued itself (pong, ping, close, a compressed
    /// message) against the budget until it is written, like the frames `send` queues.
    pub(crate) fn charge(&self, bytes: usize) {
        self.add(bytes);
    }

    /// The process-wide account this connection counts in.
    pub(crate) fn pool(&self) -> &'static Pool {
        self.pool
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
        let outbox = self.lock();
        if self.status() == Status::Connecting {
            self.set_status_locked(Status::Connected);
        }
        drop(outbox);
        // A producer waiting for room while connecting may send now.
        self.wake_room();
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

/// A connection whose driver never ran to its end (a task dropped before its first poll)
/// leaves the process's count of busy queues as it found it.
impl Drop for Shared {
    fn drop(&mut self) {
        if *self.buffered.get_mut() > 0 {
            self.pool.set_busy(false);
        }
    }
}

#[cfg(test)]
mod tests;
