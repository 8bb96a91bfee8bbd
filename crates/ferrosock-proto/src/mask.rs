//! Masking (RFC 6455 §5.3): XOR of the payload with a 4-byte key, in place.
//!
//! Masking runs over every byte a client sends and a server receives, so it works a word at a
//! time: the key is widened to 64 bits and the payload is processed in 32-byte blocks of four
//! words, which the compiler turns into vector instructions on every target we build for.

/// XORs `buf` with `key`, the key's first byte lining up with `buf[0]`.
///
/// Masking is its own inverse: applying it twice restores the data.
///
/// ```
/// use ferrosock_proto::mask::apply_mask;
/// let mut data = *b"Hello";
/// apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d]);
/// assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]); // RFC 6455 §5.7
/// apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d]);
/// assert_eq!(&data, b"Hello");
/// ```
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    let word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut blocks = buf.chunks_exact_mut(32);
    for block in &mut blocks {
        for lane in block.chunks_exact_mut(8) {
            xor_word(lane, word);
        }
    }
    let rest = blocks.into_remainder();
    let mut words = rest.chunks_exact_mut(8);
    for lane in &mut words {
        xor_word(lane, word);
    }
    // Blocks and words are multiples of 4 bytes long, so the key is still aligned here.
    for (byte, k) in words.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

/// XORs `buf` with `key` as if `buf` started `offset` bytes into the masked payload.
///
/// The decoder unmasks a frame piece by piece as its bytes arrive; this keeps the key in step.
///
/// ```
/// use ferrosock_proto::mask::{apply_mask, apply_mask_at};
/// let key = [1, 2, 3, 4];
/// let mut whole = *b"streaming payload";
/// let mut parts = whole;
/// apply_mask(&mut whole, key);
/// let (a, b) = parts.split_at_mut(5);
/// apply_mask_at(a, key, 0);
/// apply_mask_at(b, key, 5);
/// assert_eq!(whole, parts);
/// ```
pub fn apply_mask_at(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let mut key = key;
    key.rotate_left(offset % 4);
    apply_mask(buf, key);
}

#[inline(always)]
fn xor_word(lane: &mut [u8], word: u64) {
    let value = u64::from_ne_bytes(lane.try_into().expect("lanes are 8 bytes")) ^ word;
    lane.copy_from_slice(&value.to_ne_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, byte) in buf.iter_mut().enumerate() {
            *byte ^= key[(offset + i) % 4];
        }
    }

    #[test]
    fn matches_the_bytewise_definition_at_every_length_and_alignment() {
        let key = [0x12, 0x34, 0x56, 0x78];
        let source: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        // Every start alignment inside a buffer (so the slice is not word-aligned in memory),
        // every length around the word and block sizes, every key offset.
        for start in 0..8 {
            for len in (0..80).chain([126, 255, 256, 257, 291]) {
                if start + len > source.len() {
                    continue;
                }
                for offset in 0..4 {
                    let mut fast = source.clone();
                    let mut slow = source.clone();
                    apply_mask_at(&mut fast[start..start + len], key, offset);
                    mask_bytewise(&mut slow[start..start + len], key, offset);
                    assert_eq!(fast, slow, "start {start} len {len} offset {offset}");
                }
            }
        }
    }

    #[test]
    fn masking_twice_is_the_identity() {
        let original: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let mut data = original.clone();
        apply_mask(&mut data, [9, 8, 7, 6]);
        assert_ne!(data, original);
        apply_mask(&mut data, [9, 8, 7, 6]);
        assert_eq!(data, original);
    }
}
