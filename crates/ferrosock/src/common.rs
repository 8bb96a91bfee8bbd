//! What every layer and both sides use: a connection's [`Status`], the [`Compress`] choice of
//! a send, the process's connection ids, and a received data message ([`Incoming`]).
//!
//! It imports nothing of the crate: `conn` below and the 4D-style API above both depend on
//! it, and it on neither.

use bytes::Bytes;

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

/// A complete data message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// From a text frame.
    Text(bytestring::ByteString),
    /// From a binary frame.
    Binary(Bytes),
}

/// Ids are unique in the process: server connections and client sockets draw from one counter,
/// starting at 1.
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The next connection id.
pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Whether this thread runs a tokio current-thread runtime (a thread of thread-per-core
/// mode, or a user's), where `block_in_place` is refused: blocking callbacks are handed to the
/// blocking pool instead.
pub(crate) fn on_current_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
}

/// Where a connection is in its life.
///
/// A server connection starts `Connected`; a client socket starts `Connecting`. A connection
/// becomes `Closing` when either side starts the close handshake and `Closed` once its socket
/// is gone, just before `on_terminate` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// The opening handshake has not finished (client sockets only).
    Connecting = 0,
    /// Messages flow both ways.
    Connected = 1,
    /// A close frame has been sent or received; no more messages can be sent.
    Closing = 2,
    /// The socket is closed.
    Closed = 3,
}

impl Status {
    /// The 4D name: `"Connecting"`, `"Connected"`, `"Closing"` or `"Closed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Connecting => "Connecting",
            Status::Connected => "Connected",
            Status::Closing => "Closing",
            Status::Closed => "Closed",
        }
    }

    pub(crate) fn from_u8(value: u8) -> Status {
        match value {
            0 => Status::Connecting,
            1 => Status::Connected,
            2 => Status::Closing,
            _ => Status::Closed,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
