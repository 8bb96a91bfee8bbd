//! Drives `proto` over any `AsyncRead + AsyncWrite`: one task per connection.
//!
//! This layer owns the socket, the read buffer, the outgoing queue, the keepalive and close
//! timers, and the close handshake. It knows nothing of the 4D-style API: the server and the
//! client plug their callbacks in through [`Callbacks`] and talk to a running connection
//! through its [`Shared`] state (send, close, status). There is one driver in the crate, used
//! by both roles.

pub(crate) mod budget;
mod driver;
mod h2_stream;
mod outgoing;
mod queue;
mod stream;
#[cfg(test)]
mod tests;

pub(crate) use driver::{run, Callbacks, DriverConfig, Ending};
pub(crate) use h2_stream::H2Stream;
pub(crate) use outgoing::Prepared;
pub(crate) use queue::{Command, SendError, Shared};
pub(crate) use stream::{Io, Stream};
