//! permessage-deflate (RFC 7692): negotiation, and compression of whole messages.
//!
//! Sans-IO like the rest of `proto`: the negotiation works on header values, the compressor
//! and the decompressor on byte slices. zlib-rs does the DEFLATE work (the same pure-Rust
//! zlib that flate2 can use); it is used directly for its `mem_level` knob, which sets most of
//! a compressor's memory.
//!
//! Window sizes: RFC 7692 allows 8 to 15 bits, but zlib cannot *compress* raw DEFLATE with an
//! 8-bit window. When this endpoint's compression window is negotiated down to 8, it sends its
//! messages uncompressed, which RFC 7692 §6 always allows; it decompresses at any size.
//!
//! [`negotiation`] settles the extension's parameters from `Sec-WebSocket-Extensions` header
//! values; [`codec`] compresses and decompresses the messages with what was settled.

pub mod codec;
pub mod negotiation;

pub use codec::{Deflater, Inflater};
pub use negotiation::{Negotiated, NegotiationError, PerMessageDeflate, EXTENSION};
