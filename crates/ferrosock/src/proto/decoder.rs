//! Bytes → messages: frame parsing, unmasking, fragment assembly, UTF-8 and limits.
//!
//! The decoder works on its input in place. A frame's payload is unmasked and (for text)
//! UTF-8-checked as its bytes arrive, so a bad message fails as soon as its first bad byte is
//! read, even in the middle of a large frame.
//!
//! Every payload it hands out is *tight*: its allocation is its length (within a small slack,
//! [`tight_slack`]), so that a message an application keeps, or queues on other connections,
//! holds no memory beyond what a byte budget counts for it. From a [`BytesMut`] that holds
//! the frame and little else, the payload is split off without a copy (a large frame read
//! into a buffer of its own); otherwise, and from a [`SliceInput`] (a read buffer that is
//! reused), it is copied out. Fragmented messages are assembled in one buffer, made tight at
//! the end.

use bytes::{Buf, Bytes, BytesMut};
use bytestring::ByteString;

use super::close::{self, CloseFrame};
use super::deflate::Inflater;
use super::error::ProtocolError;
use super::frame::{FrameHeader, OpCode};
use super::mask::apply_mask_at;
use super::utf8::Utf8Validator;
use super::Role;

/// The input the decoder takes frames from: the bytes not decoded yet, at the front.
pub trait Input {
    /// The bytes not consumed yet (the decoder unmasks them in place).
    fn remaining(&mut self) -> &mut [u8];
    /// Consumes `n` bytes (`n <= remaining().len()`).
    fn consume(&mut self, n: usize);
    /// Consumes the first `n` bytes and returns them as a tight [`Bytes`].
    fn take(&mut self, n: usize) -> Bytes;
}

/// A connection's own buffer: the payload is split off without a copy when the buffer's
/// allocation holds little else, copied out otherwise.
impl Input for BytesMut {
    fn remaining(&mut self) -> &mut [u8] {
        self
    }

    fn consume(&mut self, n: usize) {
        self.advance(n);
    }

    fn take(&mut self, n: usize) -> Bytes {
        // `capacity` counts from the payload's start to the end of the allocation: the payload
        // and whatever follows it (bytes and spare room).
        if self.capacity() <= n + tight_slack(n) {
            self.split_to(n).freeze()
        } else {
            let payload = Bytes::copy_from_slice(&self[..n]);
            self.advance(n);
            payload
        }
    }
}

/// A read buffer that is reused once decoded (a thread's scratch buffer): payloads are copied
/// out of it, and the caller keeps what is left of an incomplete frame.
#[derive(Debug)]
pub struct SliceInput<'a> {
    bytes: &'a mut [u8],
    pos: usize,
}

impl<'a> SliceInput<'a> {
    /// Decodes from the start of `bytes`.
    pub fn new(bytes: &'a mut [u8]) -> SliceInput<'a> {
        SliceInput { bytes, pos: 0 }
    }

    /// The bytes not consumed yet: an incomplete frame, for the caller to keep.
    pub fn rest(&self) -> &[u8] {
        &self.bytes[self.pos..]
    }
}

impl Input for SliceInput<'_> {
    fn remaining(&mut self) -> &mut [u8] {
        &mut self.bytes[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }

    fn take(&mut self, n: usize) -> Bytes {
        let payload = Bytes::copy_from_slice(&self.bytes[self.pos..self.pos + n]);
        self.pos += n;
        payload
    }
}

/// How much larger than `len` bytes their DEFLATE form may be. zlib stores what it cannot
/// shrink in streaming mode only block by block: Python `websockets` sends 16 MiB of random
/// bytes as 16,818,127 (0.24% more). 1/32 leaves room for any sensible compressor.
fn compressed_slack(len: usize) -> usize {
    len / 32 + 1024
}

/// The most a tight allocation may exceed its length by: 64 bytes, or 1/64 of the length.
pub fn tight_slack(len: usize) -> usize {
    64 + len / 64
}

/// `buf` as [`Bytes`] whose allocation is its length within [`tight_slack`]: frozen as it is
/// when it already is, copied into an exact allocation when it has more spare room. (Copied
/// rather than shrunk: an allocator may keep a block it is asked to shrink by less than half,
/// as mimalloc does.)
pub fn tight(buf: BytesMut) -> Bytes {
    if buf.capacity() <= buf.len() + tight_slack(buf.len()) {
        buf.freeze()
    } else {
        Bytes::copy_from_slice(&buf)
    }
}

/// What the decoder enforces.
#[derive(Clone, Copy, Debug)]
pub struct DecoderConfig {
    /// Which end is decoding: a server requires masked frames, a client unmasked ones.
    pub role: Role,
    /// The largest frame payload accepted, in bytes (larger: 1009).
    pub max_frame_size: usize,
    /// The largest message accepted, in bytes, counting all its fragments (larger: 1009).
    pub max_message_size: usize,
}

/// One unit of input, complete and validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A text message, validated as UTF-8 while it arrived.
    Text(ByteString),
    /// A binary message.
    Binary(Bytes),
    /// A ping; the protocol owes a pong with the same payload.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame; `None` when it carried no status code. The protocol owes a close reply.
    Close(Option<CloseFrame>),
}

/// Decodes a stream of frames into messages. See the module docs.
#[derive(Debug)]
pub struct Decoder {
    config: DecoderConfig,
    /// The frame whose header has been consumed from the buffer and whose payload has not.
    frame: Option<FrameInProgress>,
    /// The data message in progress, from its first frame's header to its final frame.
    message: Option<MessageInProgress>,
    /// permessage-deflate, when negotiated: RSV1 marks compressed messages.
    /// Boxed: most connections never negotiate it, and an idle connection should not carry
    /// its state inline.
    inflater: Option<Box<Inflater>>,
}

#[derive(Debug)]
struct FrameInProgress {
    header: FrameHeader,
    /// Payload length (checked against the limits, so it fits in memory).
    len: usize,
    /// How many payload bytes at the front of the buffer are already unmasked and checked.
    /// Invariant: `processed <= len`.
    processed: usize,
}

#[derive(Debug)]
struct MessageInProgress {
    text: bool,
    /// RSV1 on the first frame: the payload is DEFLATE data, checked once inflated.
    compressed: bool,
    /// Payload of the frames completed so far.
    data: Assembly,
    utf8: Utf8Validator,
}

#[derive(Debug)]
enum Assembly {
    Empty,
    /// One frame: kept as the read buffer's slice in case no other fragment has bytes.
    One(Bytes),
    /// Several frames, copied together.
    Many(BytesMut),
}

impl Assembly {
    fn len(&self) -> usize {
        match self {
            Assembly::Empty => 0,
            Assembly::One(b) => b.len(),
            Assembly::Many(b) => b.len(),
        }
    }

    fn push(&mut self, payload: Bytes) {
        if payload.is_empty() {
            return;
        }
        *self = match std::mem::replace(self, Assembly::Empty) {
            Assembly::Empty => Assembly::One(payload),
            Assembly::One(first) => {
                let mut all = BytesMut::with_capacity(first.len() + payload.len());
                all.extend_from_slice(&first);
                all.extend_from_slice(&payload);
                Assembly::Many(all)
            }
            Assembly::Many(mut all) => {
                all.extend_from_slice(&payload);
                Assembly::Many(all)
            }
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Assembly::Empty => Bytes::new(),
            Assembly::One(b) => b,
            Assembly::Many(b) => tight(b),
        }
    }
}

impl Decoder {
    /// A decoder at the start of a stream.
    pub fn new(config: DecoderConfig) -> Decoder {
        Decoder {
            config,
            frame: None,
            message: None,
            inflater: None,
        }
    }

    /// Turns permessage-deflate on: from now on a data message whose first frame has RSV1
    /// set is decompressed with `inflater` (RFC 7692 §6.1). Its decompressed size counts
    /// against `max_message_size`.
    pub fn set_inflater(&mut self, inflater: Inflater) {
        self.inflater = Some(Box::new(inflater));
    }

    /// The limits this decoder enforces.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Decodes the next message or control frame from the front of `buf`, consuming its bytes.
    ///
    /// Returns `Ok(None)` when more bytes are needed; the bytes seen so far stay in `buf` (and
    /// are already unmasked and checked). An error means the connection must fail with the
    /// error's close code; the decoder must not be used afterwards.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use ferrosock::proto::{Decoded, Decoder, DecoderConfig, Role};
    /// let mut decoder = Decoder::new(DecoderConfig {
    ///     role: Role::Server,
    ///     max_frame_size: 1 << 20,
    ///     max_message_size: 1 << 20,
    /// });
    /// // RFC 6455 §5.7: a masked "Hello".
    /// let mut buf = BytesMut::from(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58][..]);
    /// assert_eq!(decoder.decode(&mut buf).unwrap(), Some(Decoded::Text("Hello".into())));
    /// assert!(buf.is_empty());
    /// ```
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, ProtocolError> {
        self.decode_from(buf)
    }

    /// [`decode`](Self::decode) from any [`Input`]: a [`SliceInput`] over a read buffer that
    /// the caller reuses, say. After `Ok(None)`, what is left of the input is the start of a
    /// frame (and the bytes of it already unmasked and checked); decoding goes on with those
    /// bytes at the front of the next input.
    pub fn decode_from<I: Input>(&mut self, buf: &mut I) -> Result<Option<Decoded>, ProtocolError> {
        loop {
            let frame = match &mut self.frame {
                Some(frame) => frame,
                None => {
                    let Some((header, header_len)) = FrameHeader::decode(buf.remaining())? else {
                        return Ok(None);
                    };
                    let len = self.check_header(&header)?;
                    buf.consume(header_len);
                    self.frame.insert(FrameInProgress {
                        header,
                        len,
                        processed: 0,
                    })
                }
            };

            let bytes = buf.remaining();
            let available = bytes.len().min(frame.len);
            if available > frame.processed {
                let fresh = &mut bytes[frame.processed..available];
                if let Some(key) = frame.header.mask {
                    apply_mask_at(fresh, key, frame.processed);
                }
                if !frame.header.opcode.is_control() {
                    if let Some(message) = &mut self.message {
                        if message.text && !message.compressed {
                            message.utf8.feed(fresh)?;
                        }
                    }
                }
                frame.processed = available;
            }
            if available < frame.len {
                return Ok(None);
            }

            let header = frame.header;
            let payload = buf.take(frame.len);
            self.frame = None;
            if let Some(decoded) = self.complete_frame(header, payload)? {
                return Ok(Some(decoded));
            }
        }
    }

    /// How many more bytes the frame in progress needs beyond the `buffered` ones, so that the
    /// caller can size its next read. 0 when no frame is in progress.
    pub fn bytes_wanted(&self, buffered: usize) -> usize {
        self.frame
            .as_ref()
            .map_or(0, |f| f.len.saturating_sub(buffered))
    }

    /// The payload length of the frame being received, if its header has been consumed: the
    /// bytes of it received so far are at the front of the buffer. After an error, this tells a
    /// caller that skips the rest of the stream where the next frame starts.
    pub fn frame_in_progress(&self) -> Option<usize> {
        self.frame.as_ref().map(|f| f.len)
    }

    /// Checks a header against the connection's state and limits; returns the payload length.
    fn check_header(&mut self, header: &FrameHeader) -> Result<usize, ProtocolError> {
        // RFC 6455 §5.2: without a negotiated extension, the reserved bits must be 0.
        // RFC 7692 §6.1: permessage-deflate sets RSV1 on a message's first frame only.
        let first_data_frame = matches!(header.opcode, OpCode::Text | OpCode::Binary);
        let rsv1_allowed = self.inflater.is_some() && first_data_frame;
        if header.rsv2 || header.rsv3 || (header.rsv1 && !rsv1_allowed) {
            return Err(ProtocolError::ReservedBits);
        }
        // RFC 6455 §5.1: clients mask, servers do not.
        match (self.config.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        // A compressed message may take a little more room than its text (DEFLATE stores what
        // it cannot shrink, with a few bytes per block): the compressed form of a message at the
        // limit is accepted, and its decompressed size is held to `max_message_size` exactly.
        let compressed = match header.opcode {
            OpCode::Text | OpCode::Binary => header.rsv1,
            OpCode::Continuation => self.message.as_ref().is_some_and(|m| m.compressed),
            _ => false,
        };
        let slack = |limit: usize| {
            if compressed {
                limit.saturating_add(compressed_slack(limit))
            } else {
                limit
            }
        };
        let max_frame = slack(self.config.max_frame_size);
        if header.payload_len > max_frame as u64 {
            return Err(ProtocolError::FrameTooLarge {
                size: header.payload_len,
                max: self.config.max_frame_size as u64,
            });
        }
        let len = header.payload_len as usize;
        let max_message = slack(self.config.max_message_size);
        match header.opcode {
            OpCode::Text | OpCode::Binary => {
                if self.message.is_some() {
                    return Err(ProtocolError::ExpectedContinuation);
                }
                self.check_message_size(0, len, max_message)?;
                self.message = Some(MessageInProgress {
                    text: header.opcode == OpCode::Text,
                    compressed: header.rsv1,
                    data: Assembly::Empty,
                    utf8: Utf8Validator::new(),
                });
            }
            OpCode::Continuation => match &self.message {
                None => return Err(ProtocolError::UnexpectedContinuation),
                Some(message) => self.check_message_size(message.data.len(), len, max_message)?,
            },
            OpCode::Close | OpCode::Ping | OpCode::Pong => {}
        }
        Ok(len)
    }

    fn check_message_size(
        &self,
        so_far: usize,
        more: usize,
        max: usize,
    ) -> Result<(), ProtocolError> {
        let size = so_far as u64 + more as u64;
        if size > max as u64 {
            return Err(ProtocolError::MessageTooLarge {
                size,
                max: self.config.max_message_size as u64,
            });
        }
        Ok(())
    }

    fn complete_frame(
        &mut self,
        header: FrameHeader,
        payload: Bytes,
    ) -> Result<Option<Decoded>, ProtocolError> {
        match header.opcode {
            OpCode::Ping => Ok(Some(Decoded::Ping(payload))),
            OpCode::Pong => Ok(Some(Decoded::Pong(payload))),
            OpCode::Close => Ok(Some(Decoded::Close(close::parse_payload(&payload)?))),
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                let message = self
                    .message
                    .as_mut()
                    .expect("check_header opened a message for every data frame");
                message.data.push(payload);
                if !header.fin {
                    return Ok(None);
                }
                let message = self.message.take().expect("checked just above");
                let mut data = message.data.into_bytes();
                if message.compressed {
                    let inflater = self
                        .inflater
                        .as_mut()
                        .expect("check_header allows RSV1 only with an inflater");
                    data = inflater.decompress(&data, self.config.max_message_size)?;
                    if message.text {
                        super::utf8::validate(&data)?;
                    }
                } else if message.text {
                    message.utf8.finish()?;
                }
                Ok(Some(if message.text {
                    // SAFETY: `data` is valid UTF-8: a compressed message was validated whole
                    // just above; an uncompressed one chunk by chunk as it was unmasked
                    // (`message.utf8.feed`), and `finish` ruled out a sequence cut at its end.
                    // Validating a second time here cost 2% of the echo server's CPU time with
                    // 16 KiB text messages (perf, `ferrosock bench -c 200 -s 16384`).
                    Decoded::Text(unsafe { ByteString::from_bytes_unchecked(data) })
                } else {
                    Decoded::Binary(data)
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::close::encode_payload;
    use crate::proto::frame::MAX_HEADER_LEN;
    use crate::proto::mask::apply_mask;
    use crate::proto::CloseCode;

    const KEY: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

    fn server() -> Decoder {
        Decoder::new(DecoderConfig {
            role: Role::Server,
            max_frame_size: 1 << 20,
            max_message_size: 1 << 21,
        })
    }

    /// A client frame: masked with KEY.
    fn frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut header = FrameHeader::new(opcode, payload.len() as u64, Some(KEY));
        header.fin = fin;
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        let mut out = head[..n].to_vec();
        let mut body = payload.to_vec();
        apply_mask(&mut body, KEY);
        out.extend_from_slice(&body);
        out
    }

    fn decode_all(decoder: &mut Decoder, bytes: &[u8]) -> Result<Vec<Decoded>, ProtocolError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(item) = decoder.decode(&mut buf)? {
            out.push(item);
        }
        assert!(buf.is_empty(), "undecoded bytes left: {buf:?}");
        Ok(out)
    }

    /// Feeds `bytes` in pieces cut at `cuts`, as reads would deliver them.
    fn decode_in_pieces(bytes: &[u8], cuts: &[usize]) -> Result<Vec<Decoded>, ProtocolError> {
        let mut decoder = server();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
            buf.extend_from_slice(&bytes[start..cut]);
            start = cut;
            while let Some(item) = decoder.decode(&mut buf)? {
                out.push(item);
            }
        }
        Ok(out)
    }

    /// DEFLATE stores what it cannot shrink: a random message at the limit compresses to a
    /// frame a little over it, which must be accepted (its decompressed size is what counts).
    #[test]
    fn an_incompressible_message_at_the_limit_passes_compressed() {
        use crate::proto::deflate::{Deflater, Inflater};
        let limit = 64 << 10;
        let mut state = 7u32;
        let noise: Vec<u8> = (0..limit)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            })
            .collect();
        let compressed = Deflater::new(15, true, 6, 8).compress(&noise);
        assert!(compressed.len() > limit, "the premise: it grew");
        let mut header = FrameHeader::new(OpCode::Binary, compressed.len() as u64, Some(KEY));
        header.rsv1 = true;
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        let mut bytes = head[..n].to_vec();
        let mut body = compressed.to_vec();
        apply_mask(&mut body, KEY);
        bytes.extend_from_slice(&body);
        let config = DecoderConfig {
            role: Role::Server,
            max_frame_size: limit,
            max_message_size: limit,
        };
        let mut decoder = Decoder::new(config);
        decoder.set_inflater(Inflater::new(15, true));
        let out = decode_all(&mut decoder, &bytes).unwrap();
        assert_eq!(out, vec![Decoded::Binary(noise.into())]);
        // Uncompressed, one byte over the limit is refused as before.
        let over = frame(true, OpCode::Binary, &vec![0; limit + 1]);
        assert!(matches!(
            decode_all(&mut Decoder::new(config), &over),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn payload_lengths_at_the_encoding_edges() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let out = decode_all(&mut server(), &frame(true, OpCode::Binary, &payload)).unwrap();
            assert_eq!(out, vec![Decoded::Binary(payload.into())], "length {len}");
        }
    }

    #[test]
    fn a_frame_split_at_every_byte_decodes_the_same() {
        let bytes = frame(true, OpCode::Text, "héllo wörld, €𝄞".as_bytes());
        for cut in 0..=bytes.len() {
            let out = decode_in_pieces(&bytes, &[cut]).unwrap();
            assert_eq!(
                out,
                vec![Decoded::Text("héllo wörld, €𝄞".into())],
                "cut {cut}"
            );
        }
    }

    #[test]
    fn fragments_with_interleaved_control_frames() {
        let mut bytes = frame(false, OpCode::Text, b"fragment1 ");
        bytes.extend(frame(true, OpCode::Ping, b"p1"));
        bytes.extend(frame(false, OpCode::Continuation, b""));
        bytes.extend(frame(true, OpCode::Pong, b""));
        bytes.extend(frame(false, OpCode::Continuation, b"fragment2 "));
        bytes.extend(frame(true, OpCode::Ping, b"p2"));
        bytes.extend(frame(true, OpCode::Continuation, b"fragment3"));
        let out = decode_all(&mut server(), &bytes).unwrap();
        assert_eq!(
            out,
            vec![
                Decoded::Ping("p1".into()),
                Decoded::Pong(Bytes::new()),
                Decoded::Ping("p2".into()),
                Decoded::Text("fragment1 fragment2 fragment3".into()),
            ]
        );
    }

    #[test]
    fn utf8_split_across_fragments_at_every_byte() {
        let text = "κόσμε€𝄞 ok".as_bytes();
        for a in 0..=text.len() {
            for b in a..=text.len() {
                let mut bytes = frame(false, OpCode::Text, &text[..a]);
                bytes.extend(frame(false, OpCode::Continuation, &text[a..b]));
                bytes.extend(frame(true, OpCode::Continuation, &text[b..]));
                let out = decode_all(&mut server(), &bytes).unwrap();
                assert_eq!(
                    out,
                    vec![Decoded::Text(std::str::from_utf8(text).unwrap().into())],
                    "{a},{b}"
                );
            }
        }
    }

    #[test]
    fn invalid_utf8_fails_in_the_fragment_that_holds_it() {
        // Fragment 1 is fine, fragment 2 ends in a byte that can never be valid, fragment 3
        // never needs to arrive (Autobahn 6.4.1).
        let mut bytes = frame(false, OpCode::Text, "κόσμε".as_bytes());
        let split = bytes.len();
        bytes.extend(frame(
            false,
            OpCode::Continuation,
            b"\xce\xba\xe1\xbd\xb9\xf4\x90",
        ));
        let mut decoder = server();
        let mut buf = BytesMut::from(&bytes[..split]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&bytes[split..]);
        assert_eq!(decoder.decode(&mut buf), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn invalid_utf8_fails_before_its_frame_is_complete() {
        // One frame, delivered in chunks: the bad byte is in the second chunk (Autobahn 6.4.3).
        let mut text = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5".to_vec();
        text.extend_from_slice(b"\xf4\x90\x80\x80");
        text.extend_from_slice(b"edited");
        let bytes = frame(true, OpCode::Text, &text);
        let header_len = bytes.len() - text.len();
        let mut decoder = server();
        let mut buf = BytesMut::from(&bytes[..header_len + 11]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&bytes[header_len + 11..header_len + 13]);
        assert_eq!(decoder.decode(&mut buf), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn a_text_message_ending_inside_a_character_fails() {
        let bytes = frame(true, OpCode::Text, &"€".as_bytes()[..2]);
        assert_eq!(
            decode_all(&mut server(), &bytes),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    #[test]
    fn binary_messages_are_not_utf8_checked() {
        let out = decode_all(&mut server(), &frame(true, OpCode::Binary, b"\xff\xfe")).unwrap();
        assert_eq!(out, vec![Decoded::Binary(Bytes::from_static(b"\xff\xfe"))]);
    }

    #[test]
    fn fragmentation_errors() {
        let cont = frame(true, OpCode::Continuation, b"x");
        assert_eq!(
            decode_all(&mut server(), &cont),
            Err(ProtocolError::UnexpectedContinuation)
        );
        let mut two_starts = frame(false, OpCode::Text, b"a");
        two_starts.extend(frame(true, OpCode::Text, b"b"));
        assert_eq!(
            decode_all(&mut server(), &two_starts),
            Err(ProtocolError::ExpectedContinuation)
        );
    }

    #[test]
    fn masking_rules_per_role() {
        let unmasked = [0x81, 0x01, b'a'];
        assert_eq!(
            decode_all(&mut server(), &unmasked),
            Err(ProtocolError::UnmaskedFrame)
        );
        let mut client = Decoder::new(DecoderConfig {
            role: Role::Client,
            ..*server().config()
        });
        assert_eq!(
            decode_all(&mut client, &unmasked).unwrap(),
            vec![Decoded::Text("a".into())]
        );
        let masked = frame(true, OpCode::Text, b"a");
        let mut client = Decoder::new(DecoderConfig {
            role: Role::Client,
            ..*server().config()
        });
        assert_eq!(
            decode_all(&mut client, &masked),
            Err(ProtocolError::MaskedFrame)
        );
    }

    #[test]
    fn reserved_bits_are_rejected() {
        for bit in [0x40, 0x20, 0x10] {
            let mut bytes = frame(true, OpCode::Text, b"a");
            bytes[0] |= bit;
            assert_eq!(
                decode_all(&mut server(), &bytes),
                Err(ProtocolError::ReservedBits)
            );
        }
    }

    #[test]
    fn limits_fail_at_the_header_before_any_payload() {
        let mut decoder = Decoder::new(DecoderConfig {
            role: Role::Server,
            max_frame_size: 100,
            max_message_size: 150,
        });
        let big = frame(true, OpCode::Binary, &[0; 101]);
        let mut buf = BytesMut::from(&big[..8]); // header and mask only
        assert_eq!(
            decoder.decode(&mut buf),
            Err(ProtocolError::FrameTooLarge {
                size: 101,
                max: 100
            })
        );

        let mut decoder = Decoder::new(*decoder.config());
        let mut bytes = frame(false, OpCode::Binary, &[0; 100]);
        bytes.extend(frame(true, OpCode::Continuation, &[0; 51]));
        let err = decode_all(&mut decoder, &bytes).unwrap_err();
        assert_eq!(
            err,
            ProtocolError::MessageTooLarge {
                size: 151,
                max: 150
            }
        );
        assert_eq!(err.close_code(), CloseCode::MESSAGE_TOO_BIG);
    }

    #[test]
    fn a_message_exactly_at_the_limit_is_accepted() {
        let mut decoder = Decoder::new(DecoderConfig {
            role: Role::Server,
            max_frame_size: 100,
            max_message_size: 100,
        });
        let out = decode_all(&mut decoder, &frame(true, OpCode::Binary, &[7; 100])).unwrap();
        assert_eq!(out, vec![Decoded::Binary(vec![7; 100].into())]);
    }

    #[test]
    fn close_frames() {
        let empty = decode_all(&mut server(), &frame(true, OpCode::Close, b"")).unwrap();
        assert_eq!(empty, vec![Decoded::Close(None)]);
        let payload = encode_payload(CloseCode(4001), "bye");
        let coded = decode_all(&mut server(), &frame(true, OpCode::Close, &payload)).unwrap();
        assert_eq!(
            coded,
            vec![Decoded::Close(Some(CloseFrame {
                code: CloseCode(4001),
                reason: "bye".into()
            }))]
        );
        let one_byte = frame(true, OpCode::Close, b"\x03");
        assert_eq!(
            decode_all(&mut server(), &one_byte),
            Err(ProtocolError::InvalidClosePayload)
        );
        let bad_code = frame(true, OpCode::Close, b"\x03\xed");
        assert_eq!(
            decode_all(&mut server(), &bad_code),
            Err(ProtocolError::InvalidCloseCode(1005))
        );
    }

    #[test]
    fn an_unfragmented_message_is_a_slice_of_the_read_buffer() {
        let bytes = frame(true, OpCode::Binary, &[1; 64]);
        let mut buf = BytesMut::from(&bytes[..]);
        let base = buf.as_ptr() as usize;
        let Some(Decoded::Binary(payload)) = server().decode(&mut buf).unwrap() else {
            panic!("expected a binary message");
        };
        assert_eq!(
            payload.as_ptr() as usize,
            base + 6,
            "no copy: the payload follows its header"
        );
    }

    #[test]
    fn compressed_messages_with_permessage_deflate() {
        use crate::proto::deflate::{Deflater, Inflater};
        let mut deflater = Deflater::new(15, false, 6, 8);
        let text = "compressed, compressed, compressed €".repeat(10);
        let compressed = deflater.compress(text.as_bytes());
        let mut bytes = frame(true, OpCode::Text, &compressed);
        bytes[0] |= 0x40; // RSV1
                          // Without permessage-deflate, RSV1 is a protocol error.
        assert_eq!(
            decode_all(&mut server(), &bytes),
            Err(ProtocolError::ReservedBits)
        );
        let mut decoder = server();
        decoder.set_inflater(Inflater::new(15, false));
        assert_eq!(
            decode_all(&mut decoder, &bytes).unwrap(),
            vec![Decoded::Text(text.clone().into())]
        );
        // Fragmented: RSV1 on the first frame only; on a continuation it is an error.
        let second = deflater.compress(text.as_bytes());
        let (a, b) = second.split_at(second.len() / 2);
        let mut fragmented = frame(false, OpCode::Text, a);
        fragmented[0] |= 0x40;
        fragmented.extend(frame(true, OpCode::Continuation, b));
        assert_eq!(
            decode_all(&mut decoder, &fragmented).unwrap(),
            vec![Decoded::Text(text.into())]
        );
        let mut bad = frame(false, OpCode::Binary, b"x");
        bad.extend(frame(true, OpCode::Continuation, b"y"));
        let second_header = bad.len() - 7;
        bad[second_header] |= 0x40;
        assert_eq!(
            decode_all(&mut decoder, &bad),
            Err(ProtocolError::ReservedBits)
        );
        let mut ping = frame(true, OpCode::Ping, b"");
        ping[0] |= 0x40;
        let mut decoder = server();
        decoder.set_inflater(Inflater::new(15, false));
        assert_eq!(
            decode_all(&mut decoder, &ping),
            Err(ProtocolError::ReservedBits)
        );
    }

    #[test]
    fn compressed_text_is_utf8_checked_after_inflating_and_bombs_hit_the_limit() {
        use crate::proto::deflate::{Deflater, Inflater};
        let mut deflater = Deflater::new(15, false, 6, 8);
        let mut bytes = frame(true, OpCode::Text, &deflater.compress(b"ok \xff no"));
        bytes[0] |= 0x40;
        let mut decoder = server();
        decoder.set_inflater(Inflater::new(15, false));
        assert_eq!(
            decode_all(&mut decoder, &bytes),
            Err(ProtocolError::InvalidUtf8)
        );

        let bomb = Deflater::new(15, false, 9, 9).compress(&vec![0u8; 4 << 20]);
        let mut bytes = frame(true, OpCode::Binary, &bomb);
        bytes[0] |= 0x40;
        let mut decoder = Decoder::new(DecoderConfig {
            role: Role::Server,
            max_frame_size: 1 << 20,
            max_message_size: 1 << 20,
        });
        decoder.set_inflater(Inflater::new(15, false));
        assert!(matches!(
            decode_all(&mut decoder, &bytes),
            Err(ProtocolError::MessageTooLarge { max: 1048576, .. })
        ));
    }

    #[test]
    fn bytes_wanted_reports_the_rest_of_the_frame() {
        let bytes = frame(true, OpCode::Binary, &[0; 1000]);
        let mut decoder = server();
        let mut buf = BytesMut::from(&bytes[..100]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert_eq!(decoder.bytes_wanted(buf.len()), 1000 - 92);
    }
}
