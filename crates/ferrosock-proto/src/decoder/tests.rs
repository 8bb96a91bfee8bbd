use super::*;
use crate::close::encode_payload;
use crate::frame::MAX_HEADER_LEN;
use crate::mask::apply_mask;
use crate::CloseCode;

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
    use crate::deflate::{Deflater, Inflater};
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
    use crate::deflate::{Deflater, Inflater};
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
    use crate::deflate::{Deflater, Inflater};
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

/// After a failure the stream is skipped frame by frame, whatever its split into reads, until
/// the peer's close frame has wholly arrived: at a bad header (left at the front of the input)
/// and in a bad payload (its header consumed) alike.
#[test]
fn skipping_after_a_failure_finds_the_close_frame_at_every_split() {
    let close = frame(true, OpCode::Close, &encode_payload(CloseCode(1000), "bye"));
    let ping = frame(true, OpCode::Ping, b"still there?");
    let big = frame(true, OpCode::Binary, &[0x88; 300]); // a payload of close-frame bytes
    let bad_header = [0xf1, 0x80, 0, 0, 0, 0]; // RSV bits set, masked, empty
    let bad_utf8 = frame(true, OpCode::Text, &[b'a', 0xff, b'b']);
    for bad in [&bad_header[..], &bad_utf8[..]] {
        let stream = [bad, &big[..], &ping[..], &close[..], b"after"].concat();
        for split in 1..stream.len() {
            let mut decoder = server();
            let mut buf = BytesMut::from(&stream[..split]);
            let mut rest_added = false;
            if decoder.decode(&mut buf).is_ok() {
                // The bad frame has not wholly arrived: it fails once the rest comes.
                buf.extend_from_slice(&stream[split..]);
                rest_added = true;
                assert!(decoder.decode(&mut buf).is_err(), "split {split}");
            }
            decoder.start_skipping();
            let mut found = decoder.skip_to_close(&mut buf);
            if !rest_added {
                buf.extend_from_slice(&stream[split..]);
                if !found {
                    found = decoder.skip_to_close(&mut buf);
                }
            }
            assert!(found, "split {split}");
            assert!(decoder.is_skipping());
            assert_eq!(
                &buf[..],
                b"after",
                "split {split}: stops after the close frame"
            );
        }
    }
}
