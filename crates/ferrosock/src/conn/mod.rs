//! Drives `proto` over any `AsyncRead + AsyncWrite`: one task per connection.
//!
//! This layer owns the socket, the read buffer, the outgoing queue, the keepalive and close
//! timers, and the close handshake. It knows nothing of the 4D-style API: the server and the
//! client plug their callbacks in through [`Callbacks`] and talk to a running connection
//! through its [`Shared`] state (send, close, status). There is one driver in the crate, used
//! by both roles.

pub(crate) mod budget;
mod driver;
mod queue;
mod stream;
#[cfg(test)]
mod tests;

pub(crate) use driver::{run, Callbacks, DriverConfig, Ending, Incoming};
pub use queue::Compress;
pub(crate) use queue::{Command, Outgoing, SendError, Shared};
pub(crate) use stream::Stream;

/// What `send` queues for a message: a frame built here, in the sender's thread, or, when
/// permessage-deflate is on, the message for the driver to compress in order.
pub(crate) fn outgoing(
    role: crate::proto::Role,
    message: crate::Message,
    compress: Compress,
    deflate: bool,
) -> Outgoing {
    let (opcode, payload) = message.into_frame();
    if deflate {
        Outgoing::Message {
            opcode,
            payload,
            compress,
        }
    } else {
        Outgoing::Frame(crate::proto::OutFrame::new(
            role,
            opcode,
            payload,
            rand::random,
        ))
    }
}

/// Ids are unique in the process: server connections and client sockets draw from one counter,
/// starting at 1.
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The next connection id.
pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
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

    fn from_u8(value: u8) -> Status {
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
