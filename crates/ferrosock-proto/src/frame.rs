//! Frame headers (RFC 6455 §5.2): opcodes, lengths, masks. Payloads are not touched here.

use super::error::ProtocolError;

/// The longest header: 2 fixed bytes, 8 bytes of extended length, 4 bytes of mask key.
pub const MAX_HEADER_LEN: usize = 14;

/// Control frames carry at most this many payload bytes (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame's opcode (RFC 6455 §5.2, §11.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    /// A later fragment of a fragmented message.
    Continuation = 0x0,
    /// The first (or only) frame of a text message.
    Text = 0x1,
    /// The first (or only) frame of a binary message.
    Binary = 0x2,
    /// Close.
    Close = 0x8,
    /// Ping.
    Ping = 0x9,
    /// Pong.
    Pong = 0xA,
}

impl OpCode {
    /// The opcode for a 4-bit value, or `None` for the reserved ones.
    ///
    /// ```
    /// use ferrosock_proto::OpCode;
    /// assert_eq!(OpCode::from_bits(0x9), Some(OpCode::Ping));
    /// assert_eq!(OpCode::from_bits(0x3), None);
    /// ```
    pub fn from_bits(bits: u8) -> Option<OpCode> {
        Some(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    /// Close, ping and pong are control frames (the opcode's high bit is set).
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the last frame of its message.
    pub fin: bool,
    /// RSV1 (permessage-deflate marks compressed messages with it).
    pub rsv1: bool,
    /// RSV2: no extension ferrosock knows defines it.
    pub rsv2: bool,
    /// RSV3: no extension ferrosock knows defines it.
    pub rsv3: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, present on every client-to-server frame.
    pub mask: Option<[u8; 4]>,
    /// The payload length in bytes.
    pub payload_len: u64,
}

impl FrameHeader {
    /// A header for an unfragmented frame without reserved bits.
    ///
    /// ```
    /// use ferrosock_proto::{FrameHeader, OpCode};
    /// let header = FrameHeader::new(OpCode::Text, 5, None);
    /// let mut bytes = [0u8; 14];
    /// let len = header.encode(&mut bytes);
    /// assert_eq!(&bytes[..len], &[0x81, 0x05]);
    /// ```
    pub fn new(opcode: OpCode, payload_len: u64, mask: Option<[u8; 4]>) -> FrameHeader {
        FrameHeader {
            fin: true,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode,
            mask,
            payload_len,
        }
    }

    /// Decodes a header from the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not hold a whole header yet, and otherwise the header
    /// with the number of bytes it took. Only what a header alone can tell is checked here:
    /// reserved opcodes, control-frame rules, the 64-bit length's top bit. Masking rules,
    /// reserved bits and limits depend on the connection and are the decoder's to check.
    ///
    /// ```
    /// use ferrosock_proto::{FrameHeader, OpCode};
    /// let (header, len) = FrameHeader::decode(&[0x89, 0x00]).unwrap().unwrap();
    /// assert_eq!((header.opcode, header.payload_len, len), (OpCode::Ping, 0, 2));
    /// assert_eq!(FrameHeader::decode(&[0x81]).unwrap(), None);
    /// ```
    pub fn decode(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let Some(extent) = FrameExtent::peek(buf) else {
            return Ok(None);
        };
        let (b0, b1) = (buf[0], buf[1]);
        let opcode =
            OpCode::from_bits(b0 & 0x0F).ok_or(ProtocolError::ReservedOpcode(b0 & 0x0F))?;
        let fin = b0 & 0x80 != 0;
        let payload_len = extent.payload_len;
        // RFC 6455 §5.2: the most significant bit of a 64-bit length MUST be 0.
        if payload_len & (1 << 63) != 0 {
            return Err(ProtocolError::InvalidPayloadLength);
        }
        if opcode.is_control() {
            // RFC 6455 §5.5: control frames are never fragmented and carry ≤ 125 bytes.
            if !fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlFrameTooLong(payload_len));
            }
        }
        let mask = (b1 & 0x80 != 0).then(|| {
            let key = &buf[extent.header_len - 4..extent.header_len];
            [key[0], key[1], key[2], key[3]]
        });
        let header = FrameHeader {
            fin,
            rsv1: b0 & 0x40 != 0,
            rsv2: b0 & 0x20 != 0,
            rsv3: b0 & 0x10 != 0,
            opcode,
            mask,
            payload_len,
        };
        Ok(Some((header, extent.header_len)))
    }

    /// Writes the header into `out` using the shortest length encoding, and returns how many
    /// bytes it took (2 to 14).
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        out[0] = (u8::from(self.fin) << 7)
            | (u8::from(self.rsv1) << 6)
            | (u8::from(self.rsv2) << 5)
            | (u8::from(self.rsv3) << 4)
            | self.opcode as u8;
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut pos = match self.payload_len {
            len @ 0..=125 => {
                out[1] = mask_bit | len as u8;
                2
            }
            len @ 126..=0xFFFF => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            len => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&len.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            out[pos..pos + 4].copy_from_slice(&key);
            pos += 4;
        }
        pos
    }
}

/// Where a frame ends, read from its header without judging it: enough to skip frames in a
/// stream that has already failed, to find the peer's close frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameExtent {
    /// The opcode's 4 bits, reserved values included.
    pub opcode_bits: u8,
    /// The header's length, mask key included.
    pub header_len: usize,
    /// The payload length as announced (the 64-bit form's top bit included).
    pub payload_len: u64,
}

impl FrameExtent {
    /// Reads the extent of the frame at the front of `buf`, or `None` if its header is not
    /// all there.
    ///
    /// ```
    /// use ferrosock_proto::frame::FrameExtent;
    /// // A frame with reserved opcode 0x3, masked, 2 bytes of payload.
    /// let extent = FrameExtent::peek(&[0x83, 0x82, 1, 2, 3, 4]).unwrap();
    /// assert_eq!((extent.opcode_bits, extent.header_len, extent.payload_len), (0x3, 6, 2));
    /// ```
    pub fn peek(buf: &[u8]) -> Option<FrameExtent> {
        let [b0, b1, ..] = *buf else {
            return None;
        };
        let (payload_len, len_end) = match b1 & 0x7F {
            126 => (
                u64::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)),
                4,
            ),
            127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?), 10),
            len => (u64::from(len), 2),
        };
        let header_len = if b1 & 0x80 != 0 { len_end + 4 } else { len_end };
        (buf.len() >= header_len).then_some(FrameExtent {
            opcode_bits: b0 & 0x0F,
            header_len,
            payload_len,
        })
    }

    /// Header plus payload, saturating on lengths no memory could hold.
    pub fn total_len(&self) -> usize {
        usize::try_from(self.payload_len)
            .map_or(usize::MAX, |len| len.saturating_add(self.header_len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(header: FrameHeader) -> Vec<u8> {
        let mut out = [0u8; MAX_HEADER_LEN];
        let len = header.encode(&mut out);
        let bytes = out[..len].to_vec();
        // Every strict prefix is incomplete, the whole decodes to the same header.
        for cut in 0..len {
            assert_eq!(FrameHeader::decode(&bytes[..cut]), Ok(None), "prefix {cut}");
        }
        assert_eq!(FrameHeader::decode(&bytes), Ok(Some((header, len))));
        bytes
    }

    #[test]
    fn payload_lengths_at_the_encoding_edges() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0x82, 0x00]),
            (125, &[0x82, 125]),
            (126, &[0x82, 126, 0x00, 126]),
            (65535, &[0x82, 126, 0xFF, 0xFF]),
            (65536, &[0x82, 127, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]),
            (
                (1 << 63) - 1,
                &[0x82, 127, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
            ),
        ];
        for &(len, expected) in cases {
            let bytes = round_trip(FrameHeader::new(OpCode::Binary, len, None));
            assert_eq!(bytes, expected, "length {len}");
        }
    }

    #[test]
    fn masked_headers_carry_the_key_last() {
        let key = [0xA1, 0xB2, 0xC3, 0xD4];
        for len in [0, 125, 126, 65535, 65536] {
            let bytes = round_trip(FrameHeader::new(OpCode::Text, len, Some(key)));
            assert_eq!(bytes[1] & 0x80, 0x80);
            assert_eq!(&bytes[bytes.len() - 4..], &key);
        }
    }

    #[test]
    fn flags_and_reserved_bits_survive_a_round_trip() {
        let mut header = FrameHeader::new(OpCode::Continuation, 3, None);
        header.fin = false;
        header.rsv1 = true;
        header.rsv3 = true;
        assert_eq!(round_trip(header)[0], 0x50);
    }

    #[test]
    fn reserved_opcodes_are_rejected() {
        for op in (0x3..=0x7).chain(0xB..=0xF) {
            assert_eq!(
                FrameHeader::decode(&[0x80 | op, 0x00]),
                Err(ProtocolError::ReservedOpcode(op))
            );
        }
    }

    #[test]
    fn control_frames_must_be_whole_and_short() {
        assert_eq!(
            FrameHeader::decode(&[0x09, 0x00]),
            Err(ProtocolError::FragmentedControlFrame)
        );
        assert_eq!(
            FrameHeader::decode(&[0x88, 126, 0x00, 126]),
            Err(ProtocolError::ControlFrameTooLong(126))
        );
        assert!(FrameHeader::decode(&[0x8A, 125]).unwrap().is_some());
    }

    #[test]
    fn a_64_bit_length_with_the_top_bit_set_is_rejected() {
        let bytes = [0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            FrameHeader::decode(&bytes),
            Err(ProtocolError::InvalidPayloadLength)
        );
    }
}
