//! Streaming UTF-8 validation for text messages that arrive in pieces.
//!
//! A text message may be split across frames (fragments) and a frame across reads, and a
//! multi-byte character may straddle any of those cuts. [`Utf8Validator`] carries the bytes of
//! an unfinished character from one piece to the next, and reports invalid input as soon as
//! the first byte that cannot start or continue a character is seen — not at the end of the
//! message (RFC 6455 §8.1 "fail fast"; Autobahn cases 6.4.*).

use super::error::ProtocolError;

/// Validates a text message piece by piece.
#[derive(Clone, Copy, Debug, Default)]
pub struct Utf8Validator {
    /// The leading bytes of a character whose remaining bytes have not arrived yet.
    /// Invariant: `pending_len < 4`, and `pending[..pending_len]` is a valid prefix.
    pending: [u8; 4],
    pending_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Utf8Validator {
        Utf8Validator::default()
    }

    /// Checks the next piece of the message.
    ///
    /// ```
    /// use ferrosock_proto::utf8::Utf8Validator;
    /// let euro = "€".as_bytes(); // e2 82 ac
    /// let mut v = Utf8Validator::new();
    /// v.feed(&euro[..1]).unwrap();
    /// v.feed(&euro[1..]).unwrap();
    /// v.finish().unwrap();
    /// // 0xC0 can never start a character: rejected at once, not at the end.
    /// assert!(Utf8Validator::new().feed(&[b'a', 0xC0]).is_err());
    /// ```
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), ProtocolError> {
        if self.pending_len > 0 {
            input = self.complete_pending(input)?;
            if self.pending_len > 0 {
                return Ok(());
            }
        }
        match simdutf8::compat::from_utf8(input) {
            Ok(_) => Ok(()),
            // Input that ends inside a character whose bytes so far are valid: keep them.
            Err(err) if err.error_len().is_none() => {
                let tail = &input[err.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(ProtocolError::InvalidUtf8),
        }
    }

    /// Checks that the message did not end inside a character.
    pub fn finish(&self) -> Result<(), ProtocolError> {
        if self.pending_len == 0 {
            Ok(())
        } else {
            Err(ProtocolError::InvalidUtf8)
        }
    }

    /// Moves bytes from `input` onto the pending character until it is whole, checking the
    /// prefix after each byte. Returns what is left of `input`.
    fn complete_pending<'a>(&mut self, mut input: &'a [u8]) -> Result<&'a [u8], ProtocolError> {
        while let Some((&byte, rest)) = input.split_first() {
            self.pending[usize::from(self.pending_len)] = byte;
            self.pending_len += 1;
            input = rest;
            match std::str::from_utf8(&self.pending[..usize::from(self.pending_len)]) {
                Ok(_) => {
                    self.pending_len = 0;
                    break;
                }
                Err(err) if err.error_len().is_none() => {}
                Err(_) => return Err(ProtocolError::InvalidUtf8),
            }
        }
        Ok(input)
    }
}

/// Validates a whole piece of text at once (close reasons).
pub fn validate(input: &[u8]) -> Result<&str, ProtocolError> {
    simdutf8::basic::from_utf8(input).map_err(|_| ProtocolError::InvalidUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLES: &[&str] = &[
        "",
        "ascii only",
        "κόσμε",
        "Hello-µ@ßöäüàá-UTF-8!!",
        "€ and 𝄞 and 中文",
        "\u{10FFFF}\u{FFFD}\u{7FF}\u{800}",
    ];

    fn validate_in_pieces(bytes: &[u8], cuts: &[usize]) -> Result<(), ProtocolError> {
        let mut v = Utf8Validator::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
            v.feed(&bytes[start..cut])?;
            start = cut;
        }
        v.finish()
    }

    #[test]
    fn valid_text_split_at_every_byte_is_accepted() {
        for text in SAMPLES {
            let bytes = text.as_bytes();
            for a in 0..=bytes.len() {
                for b in a..=bytes.len() {
                    assert_eq!(
                        validate_in_pieces(bytes, &[a, b]),
                        Ok(()),
                        "{text:?} at {a},{b}"
                    );
                }
            }
        }
    }

    #[test]
    fn invalid_sequences_fail_in_whatever_piece_holds_the_bad_byte() {
        // Each case: valid prefix, then bytes where the last one is the first invalid byte.
        let cases: &[&[u8]] = &[
            b"abc\xC0",                                              // overlong lead byte
            b"\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xED\xA0", // surrogate D800
            b"\xF4\x90",                                             // above U+10FFFF
            b"\xE2\x82\x41",                                         // continuation expected
            b"\x80",                                                 // lone continuation
            b"\xF8",                                                 // 5-byte lead
            b"\xE0\x80",                                             // overlong 3-byte
        ];
        for &bad in cases {
            // Cut anywhere: the failure is reported by the feed that receives the last byte,
            // never later.
            for cut in 0..bad.len() {
                let mut v = Utf8Validator::new();
                assert_eq!(v.feed(&bad[..cut]), Ok(()), "{bad:x?} prefix {cut}");
                assert_eq!(
                    v.feed(&bad[cut..]),
                    Err(ProtocolError::InvalidUtf8),
                    "{bad:x?} {cut}"
                );
            }
        }
    }

    #[test]
    fn a_message_ending_inside_a_character_is_rejected() {
        let mut v = Utf8Validator::new();
        v.feed("a€".as_bytes().split_last().unwrap().1).unwrap();
        assert_eq!(v.finish(), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn one_byte_at_a_time() {
        for text in SAMPLES {
            let mut v = Utf8Validator::new();
            for byte in text.as_bytes() {
                v.feed(std::slice::from_ref(byte)).unwrap();
            }
            v.finish().unwrap();
        }
    }
}
