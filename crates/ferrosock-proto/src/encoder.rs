//! Messages → frames, ready to write: an encoded header beside a shared payload.

use bytes::{Bytes, BytesMut};

use super::close::{encode_payload, CloseCode};
use super::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use super::mask::apply_mask;
use super::Role;

/// A frame in wire form: its header bytes and its payload.
///
/// A server's frame shares its payload with the message it was built from (`Bytes` is
/// reference-counted), so a message sent to many connections is encoded once. A client's
/// frame owns a masked copy, as RFC 6455 §5.3 requires a fresh key for every frame.
#[derive(Clone, Debug)]
pub struct OutFrame {
    head: [u8; MAX_HEADER_LEN],
    /// Invariant: `2 <= head_len <= MAX_HEADER_LEN`.
    head_len: u8,
    payload: Bytes,
}

impl OutFrame {
    /// An unfragmented frame. With `Role::Client`, `mask_key` is called for the key and the
    /// payload is copied and masked; with `Role::Server` the payload is shared as it is.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use ferrosock_proto::{OpCode, OutFrame, Role};
    /// let frame = OutFrame::new(Role::Server, OpCode::Text, Bytes::from_static(b"hi"), || unreachable!());
    /// assert_eq!(frame.head(), &[0x81, 0x02]);
    /// assert_eq!(&frame.payload()[..], b"hi");
    /// let frame = OutFrame::new(Role::Client, OpCode::Text, Bytes::from_static(b"hi"), || [1, 2, 3, 4]);
    /// assert_eq!(frame.head(), &[0x81, 0x82, 1, 2, 3, 4]);
    /// assert_eq!(&frame.payload()[..], &[b'h' ^ 1, b'i' ^ 2]);
    /// ```
    pub fn new(
        role: Role,
        opcode: OpCode,
        payload: Bytes,
        mask_key: impl FnOnce() -> [u8; 4],
    ) -> OutFrame {
        OutFrame::message(role, opcode, false, payload, mask_key)
    }

    /// An unfragmented data frame whose payload is a compressed message: RSV1 set
    /// (permessage-deflate, RFC 7692 §6.1).
    pub fn compressed(
        role: Role,
        opcode: OpCode,
        payload: Bytes,
        mask_key: impl FnOnce() -> [u8; 4],
    ) -> OutFrame {
        OutFrame::message(role, opcode, true, payload, mask_key)
    }

    fn message(
        role: Role,
        opcode: OpCode,
        rsv1: bool,
        payload: Bytes,
        mask_key: impl FnOnce() -> [u8; 4],
    ) -> OutFrame {
        let mask = match role {
            Role::Server => None,
            Role::Client => Some(mask_key()),
        };
        let mut header = FrameHeader::new(opcode, payload.len() as u64, mask);
        header.rsv1 = rsv1;
        let payload = match mask {
            None => payload,
            Some(key) => {
                let mut masked = BytesMut::from(&payload[..]);
                apply_mask(&mut masked, key);
                masked.freeze()
            }
        };
        OutFrame::with_header(header, payload)
    }

    /// A frame from a header and a payload already in wire form (masked if the header says
    /// so). The header's length is taken from the payload.
    pub fn with_header(mut header: FrameHeader, payload: Bytes) -> OutFrame {
        header.payload_len = payload.len() as u64;
        let mut head = [0u8; MAX_HEADER_LEN];
        let head_len = header.encode(&mut head) as u8;
        OutFrame {
            head,
            head_len,
            payload,
        }
    }

    /// A close frame carrying `code` and `reason` (cut to fit 123 bytes).
    pub fn close(
        role: Role,
        code: CloseCode,
        reason: &str,
        mask_key: impl FnOnce() -> [u8; 4],
    ) -> OutFrame {
        OutFrame::new(role, OpCode::Close, encode_payload(code, reason), mask_key)
    }

    /// The encoded header.
    pub fn head(&self) -> &[u8] {
        &self.head[..usize::from(self.head_len)]
    }

    /// The payload in wire form.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Header plus payload length: the bytes this frame takes on the wire.
    pub fn wire_len(&self) -> usize {
        usize::from(self.head_len) + self.payload.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Decoded, Decoder, DecoderConfig};

    #[test]
    fn client_frames_decode_on_a_server_and_back() {
        for len in [0usize, 125, 126, 65535, 65536] {
            let payload: Bytes = (0..len).map(|i| i as u8).collect::<Vec<_>>().into();
            let frame = OutFrame::new(Role::Client, OpCode::Binary, payload.clone(), || {
                [9, 8, 7, 6]
            });
            let mut wire = BytesMut::from(frame.head());
            wire.extend_from_slice(frame.payload());
            assert_eq!(wire.len(), frame.wire_len());
            let mut decoder = Decoder::new(DecoderConfig {
                role: Role::Server,
                max_frame_size: 1 << 20,
                max_message_size: 1 << 20,
            });
            assert_eq!(
                decoder.decode(&mut wire).unwrap(),
                Some(Decoded::Binary(payload))
            );
        }
    }

    #[test]
    fn server_frames_share_the_payload() {
        let payload = Bytes::from(vec![5u8; 1000]);
        let frame = OutFrame::new(
            Role::Server,
            OpCode::Binary,
            payload.clone(),
            || unreachable!(),
        );
        assert_eq!(frame.payload().as_ptr(), payload.as_ptr());
        assert_eq!(frame.head(), &[0x82, 126, 0x03, 0xE8]);
    }

    #[test]
    fn close_frames_carry_code_and_reason() {
        let frame = OutFrame::close(
            Role::Server,
            CloseCode::GOING_AWAY,
            "bye",
            || unreachable!(),
        );
        assert_eq!(frame.head(), &[0x88, 5]);
        assert_eq!(&frame.payload()[..], b"\x03\xe9bye");
    }
}
