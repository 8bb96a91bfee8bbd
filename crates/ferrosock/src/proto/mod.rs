//! Sans-IO RFC 6455: bytes in, values out.
//!
//! This module owns everything about the wire format — frame headers, masking, UTF-8
//! validation, close codes, message assembly and the opening handshake — and nothing about
//! sockets, tasks or time. It never awaits and never imports tokio or hyper: `conn` drives it
//! over real I/O, and the fuzz targets drive it directly.
//!
//! Replies the protocol owes (a pong for a ping, the close echo) are handed back to the caller
//! as values; this module never writes anything itself.

pub mod close;
pub mod decoder;
pub mod deflate;
pub mod encoder;
mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use decoder::{Decoded, Decoder, DecoderConfig};
pub use deflate::{Negotiated, PerMessageDeflate};
pub use encoder::OutFrame;
pub use error::ProtocolError;
pub use frame::{FrameHeader, OpCode};

/// Which end of a connection this is. It decides the masking rules (RFC 6455 §5.1): a client
/// masks every frame it sends and a server rejects unmasked frames, and the reverse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The end that sent the opening handshake.
    Client,
    /// The end that answered it with 101.
    Server,
}
