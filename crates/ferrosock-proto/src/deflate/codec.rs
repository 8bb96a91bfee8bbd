//! The compressor and the decompressor of permessage-deflate (RFC 7692 §7.2): whole messages
//! on byte slices, with or without context takeover.

use bytes::{Bytes, BytesMut};
use zlib_rs::{
    Deflate, DeflateConfig, DeflateFlush, Inflate, InflateFlush, Method, Status, Strategy,
};

use crate::error::ProtocolError;

/// What RFC 7692 §7.2.1 removes from the end of each compressed message.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Compresses the messages one endpoint sends, in order (with context takeover, each message's
/// compression depends on the ones before).
pub struct Deflater {
    window_bits: u8,
    reset: bool,
    level: u8,
    mem_level: u8,
    /// Created at the first compressed message; dropped after each message when `reset`, so a
    /// connection without context takeover holds no compressor between messages.
    state: Option<Deflate>,
}

impl Deflater {
    /// A compressor for `window_bits` (8: it never compresses), resetting between messages when
    /// `reset`, with zlib `level` and `mem_level`.
    pub fn new(window_bits: u8, reset: bool, level: u8, mem_level: u8) -> Deflater {
        Deflater {
            window_bits,
            reset,
            level,
            mem_level,
            state: None,
        }
    }

    /// Whether this compressor can compress at all (zlib cannot with an 8-bit window).
    pub fn can_compress(&self) -> bool {
        self.window_bits >= 9
    }

    /// Whether each message starts from an empty window (no context takeover). Then a
    /// compressed result may be discarded and the message sent as it is: the peer's
    /// decompressor does not depend on it. With context takeover it may not, since the
    /// compressor's window already holds the message.
    pub fn resets(&self) -> bool {
        self.reset
    }

    /// Compresses one whole message (RFC 7692 §7.2.1): DEFLATE with a sync flush, the final
    /// `00 00 ff ff` removed.
    ///
    /// ```
    /// use ferrosock_proto::deflate::{Deflater, Inflater};
    /// let mut deflater = Deflater::new(15, false, 6, 8);
    /// let compressed = deflater.compress(b"Hello");
    /// assert_eq!(&compressed[..], &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]); // RFC 7692 §7.2.3.1
    /// let mut inflater = Inflater::new(15, false);
    /// assert_eq!(&inflater.decompress(&compressed, 1024).unwrap()[..], b"Hello");
    /// ```
    pub fn compress(&mut self, input: &[u8]) -> Bytes {
        assert!(
            self.can_compress(),
            "a raw DEFLATE stream cannot use an 8-bit window"
        );
        if input.is_empty() {
            // RFC 7692 §7.2.3.6. Not left to zlib: a sync flush with no new input after an
            // earlier one writes nothing at all, not even the empty block that the peer's
            // restored `00 00 ff ff` belongs to, and the peer's stream would be corrupt.
            return Bytes::from_static(&[0x00]);
        }
        let (level, mem_level, window_bits) = (self.level, self.mem_level, self.window_bits);
        let deflate = self.state.get_or_insert_with(|| {
            Deflate::new_with_config(DeflateConfig {
                level: i32::from(level),
                method: Method::Deflated,
                window_bits: -i32::from(window_bits),
                mem_level: i32::from(mem_level),
                strategy: Strategy::Default,
            })
        });
        // Deflate output is rarely larger than its input plus a few bytes per 16 KiB block.
        let mut out = BytesMut::with_capacity(input.len() / 2 + 64);
        let mut consumed = 0;
        loop {
            let start = out.len();
            let room = out.capacity().saturating_sub(start).max(1024);
            out.resize(start + room, 0);
            let (before_in, before_out) = (deflate.total_in(), deflate.total_out());
            let result = deflate.compress(
                &input[consumed..],
                &mut out[start..],
                DeflateFlush::SyncFlush,
            );
            let read = (deflate.total_in() - before_in) as usize;
            let wrote = (deflate.total_out() - before_out) as usize;
            out.truncate(start + wrote);
            consumed += read;
            // deflate fails only on a stream in an invalid state (bad parameters or a misuse of
            // the API), which this type never creates; input cannot make it fail.
            if let Err(err) = result {
                panic!("zlib deflate failed: {}", err.as_str());
            }
            // Done once all input is in and the flush did not fill the output.
            if consumed == input.len() && wrote < room {
                break;
            }
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if self.reset {
            self.state = None;
        }
        // Its allocation is its length: a queued frame holds what the budget counts.
        crate::decoder::tight(out)
    }
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater")
            .field("window_bits", &self.window_bits)
            .field("reset", &self.reset)
            .field("allocated", &self.state.is_some())
            .finish()
    }
}

/// Decompresses the messages the peer sends, in order.
pub struct Inflater {
    window_bits: u8,
    reset: bool,
    /// Created at the first compressed message; dropped after each one when `reset`.
    state: Option<Inflate>,
    /// The compressed length of the last message, until the decoder's owner takes it
    /// ([`Decoder::take_inflated_len`](crate::Decoder::take_inflated_len)).
    pub(crate) inflated_from: usize,
}

impl Inflater {
    /// A decompressor for messages compressed with at most `window_bits`, resetting between
    /// messages when the peer does (`reset`).
    pub fn new(window_bits: u8, reset: bool) -> Inflater {
        Inflater {
            window_bits,
            reset,
            state: None,
            inflated_from: 0,
        }
    }

    /// Decompresses one whole message (RFC 7692 §7.2.2: the `00 00 ff ff` tail is restored).
    /// Fails with [`ProtocolError::MessageTooLarge`] as soon as the output would exceed `max`
    /// bytes — a deflate bomb costs at most `max` bytes of memory — and with
    /// [`ProtocolError::InvalidCompressedData`] for data that is not DEFLATE.
    pub fn decompress(&mut self, input: &[u8], max: usize) -> Result<Bytes, ProtocolError> {
        let window_bits = self.window_bits;
        let inflate = self
            .state
            .get_or_insert_with(|| Inflate::new(false, window_bits));
        let mut out = BytesMut::with_capacity(
            input
                .len()
                .saturating_mul(3)
                .max(256)
                .min(max.saturating_add(1)),
        );
        let mut stream_ended = false;
        for piece in [input, &TAIL[..]] {
            let mut consumed = 0;
            loop {
                if out.len() > max {
                    self.state = None;
                    return Err(ProtocolError::MessageTooLarge {
                        size: out.len() as u64,
                        max: max as u64,
                    });
                }
                let start = out.len();
                // Use the spare capacity; when there is none, double, but never past one byte
                // over the limit (invariant here: start <= max).
                let spare = out.capacity() - start;
                let room = if spare > 0 {
                    spare
                } else {
                    start.max(256).min(max + 1 - start)
                };
                out.resize(start + room, 0);
                let (before_in, before_out) = (inflate.total_in(), inflate.total_out());
                let result = inflate.decompress(
                    &piece[consumed..],
                    &mut out[start..],
                    InflateFlush::SyncFlush,
                );
                let read = (inflate.total_in() - before_in) as usize;
                let wrote = (inflate.total_out() - before_out) as usize;
                out.truncate(start + wrote);
                consumed += read;
                match result {
                    Ok(Status::StreamEnd) => {
                        // A final block (BFINAL): the next message starts a new stream.
                        stream_ended = true;
                        break;
                    }
                    Ok(Status::Ok | Status::BufError) => {}
                    // Not DEFLATE, a preset dictionary (never negotiated), or allocation failure.
                    Err(_) => {
                        self.state = None;
                        return Err(ProtocolError::InvalidCompressedData);
                    }
                }
                if consumed == piece.len() && wrote < room {
                    break;
                }
            }
            if stream_ended {
                break;
            }
        }
        if out.len() > max {
            self.state = None;
            return Err(ProtocolError::MessageTooLarge {
                size: out.len() as u64,
                max: max as u64,
            });
        }
        if self.reset || stream_ended {
            self.state = None;
        }
        // The output doubled as it grew: a message kept or forwarded holds only its length.
        Ok(crate::decoder::tight(out))
    }
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("window_bits", &self.window_bits)
            .field("reset", &self.reset)
            .field("allocated", &self.state.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_every_window_size_with_and_without_context_takeover() {
        let messages: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"a".to_vec(),
            b"Hello, Hello, Hello, Hello".to_vec(),
            (0..20_000u32).map(|i| (i % 7) as u8 + b'a').collect(),
            (0..70_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
                .collect(), // incompressible
            br#"{"price": 101.5, "symbol": "ABC"}"#.repeat(50),
        ];
        for bits in 9..=15u8 {
            for reset in [false, true] {
                let mut deflater = Deflater::new(bits, reset, 6, 8);
                let mut inflater = Inflater::new(bits, reset);
                for round in 0..2 {
                    for message in &messages {
                        let compressed = deflater.compress(message);
                        let back = inflater.decompress(&compressed, 1 << 20).unwrap();
                        assert_eq!(
                            &back[..],
                            &message[..],
                            "bits {bits} reset {reset} round {round} len {}",
                            message.len()
                        );
                    }
                }
                // Context takeover pays: the repeat compresses to almost nothing.
                let text = br#"{"price": 101.5, "symbol": "ABC", "exchange": "XNAS"}"#;
                let first = deflater.compress(text).len();
                let second = deflater.compress(text).len();
                if reset {
                    assert_eq!(
                        first, second,
                        "no context takeover: the same message, the same size"
                    );
                } else {
                    assert!(second < first / 2, "context takeover: {second} vs {first}");
                }
            }
        }
        assert!(!Deflater::new(8, false, 6, 8).can_compress());
        // Decompressing with an 8-bit window works (only compressing does not).
        let mut inflater = Inflater::new(8, false);
        let stored = [0x01, 0x03, 0x00, 0xfc, 0xff, b'a', b'b', b'c'];
        assert_eq!(&inflater.decompress(&stored, 16).unwrap()[..], b"abc");
    }

    #[test]
    fn a_deflate_bomb_stops_at_the_limit() {
        let mut deflater = Deflater::new(15, false, 9, 9);
        let bomb = deflater.compress(&vec![0u8; 10 << 20]);
        assert!(
            bomb.len() < 16 * 1024,
            "10 MiB of zeros compress to {} bytes",
            bomb.len()
        );
        let mut inflater = Inflater::new(15, false);
        let err = inflater.decompress(&bomb, 1 << 20).unwrap_err();
        assert!(
            matches!(err, ProtocolError::MessageTooLarge { max: 1048576, .. }),
            "{err:?}"
        );
        assert_eq!(err.close_code(), crate::CloseCode::MESSAGE_TOO_BIG);
        // Exactly at the limit is fine.
        let exact = Deflater::new(15, false, 6, 8).compress(&vec![1u8; 4096]);
        assert_eq!(
            Inflater::new(15, false)
                .decompress(&exact, 4096)
                .unwrap()
                .len(),
            4096
        );
        assert!(Inflater::new(15, false).decompress(&exact, 4095).is_err());
    }

    #[test]
    fn garbage_is_invalid_compressed_data() {
        let mut inflater = Inflater::new(15, false);
        assert_eq!(
            inflater.decompress(&[0xff, 0xff, 0xff, 0xff], 1024),
            Err(ProtocolError::InvalidCompressedData)
        );
        // The inflater recovers for the next message (a new stream).
        let good = Deflater::new(15, false, 6, 8).compress(b"fine");
        assert_eq!(&inflater.decompress(&good, 1024).unwrap()[..], b"fine");
    }

    #[test]
    fn an_empty_message_between_others_keeps_the_streams_in_step() {
        // Regression: zlib writes nothing for a sync flush without new input, which left the
        // peer's inflater unable to read the next message.
        let mut deflater = Deflater::new(15, false, 6, 8);
        let mut inflater = Inflater::new(15, false);
        for message in [&b"first"[..], b"", b"", b"after two empty ones", b""] {
            let compressed = deflater.compress(message);
            assert_eq!(
                &inflater.decompress(&compressed, 1024).unwrap()[..],
                message
            );
        }
        assert_eq!(&deflater.compress(b"")[..], &[0x00]);
    }

    #[test]
    fn a_final_block_starts_a_new_stream() {
        // "abc" as a final stored block (BFINAL=1), twice: each message is its own stream.
        let message = [0x01, 0x03, 0x00, 0xfc, 0xff, b'a', b'b', b'c'];
        let mut inflater = Inflater::new(15, false);
        assert_eq!(&inflater.decompress(&message, 64).unwrap()[..], b"abc");
        assert_eq!(&inflater.decompress(&message, 64).unwrap()[..], b"abc");
    }
}
