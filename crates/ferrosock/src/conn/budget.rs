//! What queued outgoing bytes cost, per connection and across the process.
//!
//! Each connection counts its queue against its own budget ([`Limits::max_outgoing_bytes`]);
//! the process counts every queue against one cap ([`set_max_queued_bytes`]). Both count what
//! is allocated, not only payload lengths: a queued message costs its payload (whose
//! allocation the decoder, the compressor and `Message`'s conversions keep tight) plus
//! [`QUEUED_MESSAGE_OVERHEAD`] for its place in the queue.
//!
//! The process-wide total is kept by [`Charge`]s that queued items carry and release when
//! they are dropped (written, discarded, or freed with their connection), so that nothing can
//! leak from it. A payload shared by many queues (a broadcast) is charged once to the process
//! and in full to each connection's own budget.
//!
//! [`Limits::max_outgoing_bytes`]: crate::Limits::max_outgoing_bytes

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::proto::OutFrame;

/// What a queued message costs beyond its payload: its place in a connection's queue (three
/// places at worst: a queue grows by doubling, and while it grows the old and the new room are
/// both allocated), and for a payload shared by several queues its reference count and its
/// share of the process-wide account. Measured with a counting allocator
/// (tests/memory.rs): a stalled reader's queue of 20-byte messages holds its budget.
pub const QUEUED_MESSAGE_OVERHEAD: usize = 3 * std::mem::size_of::<Queued<OutFrame>>() + 64;

/// The default of [`set_max_queued_bytes`]: 256 MiB.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 256 << 20;

/// What a queued message with a payload of `payload_len` bytes costs.
pub(crate) fn cost(payload_len: usize) -> usize {
    payload_len.saturating_add(QUEUED_MESSAGE_OVERHEAD)
}

/// The process-wide account of queued outgoing bytes.
#[derive(Debug)]
pub(crate) struct Pool {
    /// Bytes charged by live [`Charge`]s.
    total: AtomicUsize,
    cap: AtomicUsize,
    /// Connections with something queued: the cap is shared among them.
    busy: AtomicUsize,
}

/// The process's pool.
pub(crate) static POOL: Pool = Pool::new(DEFAULT_MAX_QUEUED_BYTES);

impl Pool {
    pub(crate) const fn new(cap: usize) -> Pool {
        Pool {
            total: AtomicUsize::new(0),
            cap: AtomicUsize::new(cap),
            busy: AtomicUsize::new(0),
        }
    }

    /// Charges `bytes` until the returned charge is dropped.
    pub(crate) fn charge(&'static self, bytes: usize) -> Charge {
        self.total.fetch_add(bytes, Ordering::AcqRel);
        Charge { pool: self, bytes }
    }

    pub(crate) fn total(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    pub(crate) fn cap(&self) -> usize {
        self.cap.load(Ordering::Acquire)
    }

    /// Whether a connection that would hold `queued` bytes is over its share of a full pool:
    /// the pool is over its cap, and the connection holds more than the cap divided among the
    /// connections that have something queued.
    pub(crate) fn over_share(&self, queued: usize) -> bool {
        let cap = self.cap();
        if self.total() <= cap {
            return false;
        }
        let busy = self.busy.load(Ordering::Acquire).max(1);
        queued > cap / busy
    }

    /// Connections with something queued.
    #[cfg(test)]
    pub(crate) fn busy(&self) -> usize {
        self.busy.load(Ordering::Acquire)
    }

    /// A connection's queue went from empty to not (`true`) or back.
    pub(crate) fn set_busy(&self, busy: bool) {
        if busy {
            self.busy.fetch_add(1, Ordering::AcqRel);
        } else {
            self.busy.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A share of the process-wide total, released when dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    pool: &'static Pool,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.pool.total.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// What a queued item holds of the process-wide total: its own bytes, and a payload it shares
/// with other queues.
#[derive(Debug)]
pub(crate) struct Held {
    _own: Charge,
    _shared: Option<Arc<Charge>>,
}

impl Held {
    pub(crate) fn new(own: Charge, shared: Option<Arc<Charge>>) -> Held {
        Held {
            _own: own,
            _shared: shared,
        }
    }

    /// Whether the item's payload is shared with other queues: a `publish` or `broadcast`.
    pub(crate) fn is_shared(&self) -> bool {
        self._shared.is_some()
    }
}

/// Something queued, with what it holds of the process-wide total.
#[derive(Debug)]
pub(crate) struct Queued<T> {
    pub(crate) item: T,
    pub(crate) held: Held,
}

/// Sets the process-wide cap on bytes queued for sending, across every connection and client
/// socket of the process. Default: [`DEFAULT_MAX_QUEUED_BYTES`] (256 MiB).
///
/// Each connection's own budget ([`Limits::max_outgoing_bytes`]) bounds what one peer that
/// does not read can hold; this cap bounds what all of them hold together. When the total is
/// over the cap, a message queued for a connection that holds more than its share (the cap
/// divided among the connections that have something queued) is refused as if its own budget
/// were full: the send fails with [`ErrorKind::BufferFull`], and with the default
/// [`BackpressurePolicy::Close`] that connection is closed with 1008 and its queue freed.
/// Connections that keep up (whose queues are short) are not affected: the ones cut are those
/// that let the most pile up, the stalled readers.
///
/// Counted as the per-connection budgets are: payload bytes as allocated plus
/// [`QUEUED_MESSAGE_OVERHEAD`] per message; a payload queued on many connections by
/// [`publish`](crate::WebSocketServer::publish) or
/// [`broadcast`](crate::WebSocketServer::broadcast) counts once.
///
/// ```
/// // A process that may hold at most 64 MiB of unsent messages.
/// ferrosock::memory::set_max_queued_bytes(64 << 20);
/// assert_eq!(ferrosock::memory::max_queued_bytes(), 64 << 20);
/// ```
///
/// [`Limits::max_outgoing_bytes`]: crate::Limits::max_outgoing_bytes
/// [`ErrorKind::BufferFull`]: crate::ErrorKind::BufferFull
/// [`BackpressurePolicy::Close`]: crate::BackpressurePolicy::Close
pub fn set_max_queued_bytes(bytes: usize) {
    POOL.cap.store(bytes, Ordering::Release);
}

/// The process-wide cap on queued bytes ([`set_max_queued_bytes`]).
pub fn max_queued_bytes() -> usize {
    POOL.cap()
}

/// The bytes queued for sending across the process now, counted as the cap counts them.
pub fn queued_bytes() -> usize {
    POOL.total()
}
