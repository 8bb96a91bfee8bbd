//! Sans-IO RFC 6455 and RFC 7692 for [ferrosock](https://docs.rs/ferrosock): bytes in, values
//! out.
//!
//! This crate owns everything about the wire format — frame headers, masking, UTF-8
//! validation, close codes, message assembly, the opening handshake and permessage-deflate —
//! and nothing about sockets, tasks or time. It never awaits, and no runtime is among its
//! dependencies (Cargo enforces it: `cargo tree -p ferrosock-proto` has no tokio or hyper).
//! ferrosock's `conn` layer drives it over real I/O; the fuzz targets in `fuzz/` drive it
//! directly through the entry points of the `fuzz` feature.
//!
//! Replies the protocol owes (a pong for a ping, the close echo) are handed back to the caller
//! as values; this crate never writes anything itself.
//!
//! ```
//! use bytes::BytesMut;
//! use ferrosock_proto::{Decoded, Decoder, DecoderConfig, OpCode, OutFrame, Role};
//!
//! // A client frames a text message (masked with the key it draws); the server decodes it.
//! let frame = OutFrame::new(Role::Client, OpCode::Text, "hello".into(), || [7, 1, 8, 2]);
//! let mut wire = BytesMut::from(frame.head());
//! wire.extend_from_slice(frame.payload());
//! let config = DecoderConfig { role: Role::Server, max_frame_size: 1 << 20, max_message_size: 1 << 20 };
//! let mut decoder = Decoder::new(config);
//! assert_eq!(decoder.decode(&mut wire).unwrap(), Some(Decoded::Text("hello".into())));
//! ```

#![deny(missing_docs, missing_debug_implementations)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod close;
pub mod decoder;
pub mod deflate;
pub mod encoder;
mod error;
pub mod frame;
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub mod fuzz;
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
