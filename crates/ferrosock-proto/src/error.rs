//! Violations of RFC 6455 by the peer, each mapped to the close code that answers it.

use super::close::CloseCode;

/// Something the peer sent that RFC 6455 (or a configured limit) does not allow.
///
/// Every variant means "fail the WebSocket connection" (RFC 6455 §7.1.7); [`close_code`]
/// tells which code the close frame carries.
///
/// [`close_code`]: ProtocolError::close_code
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// RSV1, RSV2 or RSV3 set without an extension that defines them (§5.2).
    #[error("reserved bits set in frame header")]
    ReservedBits,
    /// Opcodes 0x3–0x7 and 0xB–0xF are reserved (§5.2).
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// Control frames must not be fragmented (§5.5).
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// Control frames carry at most 125 bytes of payload (§5.5).
    #[error("control frame payload of {0} bytes (at most 125)")]
    ControlFrameTooLong(u64),
    /// The most significant bit of a 64-bit payload length must be 0 (§5.2).
    #[error("invalid payload length")]
    InvalidPayloadLength,
    /// A server must fail the connection on an unmasked client frame (§5.1).
    #[error("unmasked frame from client")]
    UnmaskedFrame,
    /// A client must fail the connection on a masked server frame (§5.1).
    #[error("masked frame from server")]
    MaskedFrame,
    /// A continuation frame arrived with no fragmented message in progress (§5.4).
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new text or binary frame arrived while a fragmented message was in progress (§5.4).
    #[error("new data frame inside a fragmented message")]
    ExpectedContinuation,
    /// A close frame payload of exactly one byte (§5.5.1).
    #[error("close frame with a one-byte payload")]
    InvalidClosePayload,
    /// A close code that may not appear on the wire (§7.4).
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A compressed message (permessage-deflate) that is not valid DEFLATE data.
    #[error("invalid compressed data")]
    InvalidCompressedData,
    /// Text (or a close reason) that is not UTF-8 (§8.1).
    #[error("invalid UTF-8 in text")]
    InvalidUtf8,
    /// A frame longer than the configured maximum frame size.
    #[error("frame of {size} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// The frame's payload length as announced in its header.
        size: u64,
        /// The configured limit.
        max: u64,
    },
    /// A message longer than the configured maximum message size.
    #[error("message of at least {size} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// The message size known so far.
        size: u64,
        /// The configured limit.
        max: u64,
    },
}

impl ProtocolError {
    /// The close code that answers this violation: 1007 for bad UTF-8, 1009 for a size limit,
    /// 1002 for the rest.
    ///
    /// ```
    /// use ferrosock_proto::{CloseCode, ProtocolError};
    /// assert_eq!(ProtocolError::InvalidUtf8.close_code(), CloseCode::INVALID_PAYLOAD);
    /// assert_eq!(ProtocolError::ReservedBits.close_code(), CloseCode::PROTOCOL_ERROR);
    /// ```
    pub fn close_code(&self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::InvalidCompressedData => {
                CloseCode::INVALID_PAYLOAD
            }
            ProtocolError::FrameTooLarge { .. } | ProtocolError::MessageTooLarge { .. } => {
                CloseCode::MESSAGE_TOO_BIG
            }
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}
