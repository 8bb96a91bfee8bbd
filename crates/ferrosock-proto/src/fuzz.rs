//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer). Not part of the API:
//! hidden from the docs and free to change.
//!
//! Each entry point takes arbitrary bytes, drives one parser of `proto` with them, and asserts
//! what must hold for every input, beyond "does not panic":
//!
//! - [`decoder`]: the messages decoded from a stream are the same whatever the stream's split
//!   into reads; text is valid UTF-8; no message exceeds the limit; control payloads stay
//!   within 125 bytes.
//! - [`handshake_request`]: a request the server accepts yields a well-formed accept key.
//! - [`handshake_response`]: a complete 101 is reported complete only once its whole head has
//!   arrived.
//! - [`negotiation`]: any header value is refused or accepted without a panic, and whatever a
//!   server answers to a client's own offer, that client accepts, with compatible windows and
//!   context-takeover rules on both ends.
//! - [`inflater`]: decompression never returns more than its limit, and what the compressor
//!   produces decompresses to the original at every window size and level.
//!
//! [`seeds`] gives each target's seed corpus, built from the same frames and headers as the
//! unit tests; `scripts/fuzz` writes it into the corpus directory before a run.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Version};

use crate::deflate::{Deflater, Inflater};
use crate::handshake::{validate_request, ClientHandshake};
use crate::{
    CloseCode, Decoded, Decoder, DecoderConfig, OpCode, OutFrame, PerMessageDeflate, Role,
};

/// The names of the targets, as `fuzz/fuzz_targets/*.rs` and `scripts/fuzz` know them.
pub const TARGETS: [&str; 5] = [
    "decoder",
    "handshake_request",
    "handshake_response",
    "negotiation",
    "inflater",
];

/// Runs the entry point named `target` on `data`. Panics on an unknown name.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "decoder" => decoder(data),
        "handshake_request" => handshake_request(data),
        "handshake_response" => handshake_response(data),
        "negotiation" => negotiation(data),
        "inflater" => inflater(data),
        other => panic!("no fuzz target named {other:?}"),
    }
}

/// The frame decoder. Byte 0 chooses the role (bit 0), permessage-deflate (bit 1), its window
/// (bits 2–4: 8 to 15 bits) and context takeover (bit 5); byte 1 the size of each read (1 to
/// 256 bytes); byte 2 the limits (1 KiB to 64 KiB). The rest is the stream.
pub fn decoder(data: &[u8]) {
    let [flags, chunk, limit, stream @ ..] = data else {
        return;
    };
    let role = if flags & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let max = 1024 << (limit % 7);
    let config = DecoderConfig {
        role,
        max_frame_size: max,
        max_message_size: max,
    };
    let deflate = (flags & 2 != 0).then(|| (8 + (flags >> 2 & 7), flags & 32 != 0));
    let new_decoder = || {
        let mut decoder = Decoder::new(config);
        if let Some((bits, reset)) = deflate {
            decoder.set_inflater(Inflater::new(bits, reset));
        }
        decoder
    };

    // The whole stream in one buffer, then the same stream in reads of `chunk` bytes.
    let whole = decode_all(&mut new_decoder(), [stream].into_iter(), max);
    let reads = stream.chunks(1 + *chunk as usize);
    let split = decode_all(&mut new_decoder(), reads, max);
    assert_eq!(
        whole, split,
        "the split into reads changed what was decoded"
    );
}

/// Feeds `reads` to `decoder` one after the other, decoding after each, until an error.
fn decode_all<'a>(
    decoder: &mut Decoder,
    reads: impl Iterator<Item = &'a [u8]>,
    max: usize,
) -> (Vec<Decoded>, Option<crate::ProtocolError>) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(decoded)) => {
                    check(&decoded, max);
                    out.push(decoded);
                }
                Ok(None) => break,
                Err(err) => return (out, Some(err)),
            }
        }
    }
    (out, None)
}

fn check(decoded: &Decoded, max: usize) {
    match decoded {
        Decoded::Text(text) => {
            assert!(text.len() <= max, "a text message over the limit");
            // The decoder builds text without a second check: check it here.
            assert!(
                std::str::from_utf8(text.as_bytes()).is_ok(),
                "invalid UTF-8 as text"
            );
        }
        Decoded::Binary(data) => assert!(data.len() <= max, "a binary message over the limit"),
        Decoded::Ping(data) | Decoded::Pong(data) => assert!(data.len() <= 125),
        Decoded::Close(Some(frame)) => {
            assert!(
                frame.code.is_valid_on_wire(),
                "an invalid close code accepted"
            );
            assert!(frame.reason.len() <= 123);
        }
        Decoded::Close(None) => {}
    }
}

/// The server's check of an upgrade request, from raw bytes parsed as hyper would (httparse).
pub fn handshake_request(data: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = request.parse(data) else {
        return;
    };
    let Ok(method) = Method::from_bytes(request.method.unwrap_or_default().as_bytes()) else {
        return;
    };
    let version = match request.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let mut map = HeaderMap::new();
    for header in request.headers.iter() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(header.name.as_bytes()),
            HeaderValue::from_bytes(header.value),
        ) {
            map.append(name, value);
        }
    }
    if let Ok(accept) = validate_request(&method, version, &map) {
        // base64 of a SHA-1: 28 characters.
        assert_eq!(accept.len(), 28);
    }
    let offers = map.get_all(http::header::SEC_WEBSOCKET_EXTENSIONS);
    if let Some((agreed, response)) =
        PerMessageDeflate::default().server_accept(offers.iter().map(|v| v.as_bytes()))
    {
        assert!(response.starts_with("permessage-deflate"));
        assert!((8..=15).contains(&agreed.compress_window_bits));
        assert!((8..=15).contains(&agreed.decompress_window_bits));
    }
}

/// The client's check of the server's answer, offering permessage-deflate.
pub fn handshake_response(data: &[u8]) {
    let handshake = ClientHandshake::new([7; 16]).offer_deflate(&PerMessageDeflate::default());
    if let Ok(Some(accepted)) = handshake.check_response(data) {
        assert!(accepted.head_len <= data.len());
        // One byte fewer is an incomplete head, not an answer.
        let shorter = handshake.check_response(&data[..accepted.head_len - 1]);
        assert!(
            matches!(shorter, Ok(None)),
            "an answer complete before its end: {shorter:?}"
        );
    }
}

/// Both ends of the permessage-deflate negotiation. Bytes 0–3 are the client's and the
/// server's settings; the rest, split at newlines, are header values given to both parsers.
pub fn negotiation(data: &[u8]) {
    let [c, s, c_bits, s_bits, rest @ ..] = data else {
        return;
    };
    let settings = |flags: u8, bits: u8| {
        PerMessageDeflate::default()
            .server_no_context_takeover(flags & 1 != 0)
            .client_no_context_takeover(flags & 2 != 0)
            .server_max_window_bits(8 + (bits & 7))
            .client_max_window_bits(8 + (bits >> 3 & 7))
    };
    let (client, server) = (settings(*c, *c_bits), settings(*s, *s_bits));

    // Arbitrary values: refused or accepted, never a panic.
    let values: Vec<&[u8]> = rest.split(|&b| b == b'\n').collect();
    let _ = server.server_accept(values.iter().copied());
    let _ = client.client_accept(values.iter().copied());

    // The client's own offer: whatever the server answers, the client accepts, and the two
    // ends agree (each decompresses with at least the window the other compresses with, and
    // an end that resets its decompressor has a peer that resets its compressor).
    let offer = client.client_offer();
    let Some((on_server, response)) = server.server_accept([offer.as_bytes()]) else {
        panic!("a server refused a valid offer: {offer}");
    };
    let on_client = client
        .client_accept([response.as_bytes()])
        .unwrap_or_else(|err| panic!("{offer} answered with {response}: {err}"));
    assert!(on_client.decompress_window_bits >= on_server.compress_window_bits);
    assert!(on_server.decompress_window_bits >= on_client.compress_window_bits);
    assert!(!on_client.decompress_reset || on_server.compress_reset);
    assert!(!on_server.decompress_reset || on_client.compress_reset);
}

/// The decompressor on arbitrary data, and a compression round trip. Byte 0: window bits
/// (bits 0–2: 8 to 15), context takeover (bit 3), level (bits 4–7, up to 9); byte 1: the limit.
pub fn inflater(data: &[u8]) {
    let [flags, limit, input @ ..] = data else {
        return;
    };
    let bits = 8 + (flags & 7);
    let reset = flags & 8 != 0;
    let max = 64 << (limit % 12);
    let mut inflater = Inflater::new(bits, reset);
    // Twice: the second message starts from the first one's window unless `reset`.
    for _ in 0..2 {
        match inflater.decompress(input, max) {
            Ok(out) => assert!(out.len() <= max, "{} bytes for a limit of {max}", out.len()),
            Err(_) => return,
        }
    }

    let level = (flags >> 4).min(9);
    let mut deflater = Deflater::new(bits.max(9), reset, level, 8);
    let mut inflater = Inflater::new(bits.max(9), reset);
    for _ in 0..2 {
        let compressed = deflater.compress(input);
        let back = inflater
            .decompress(&compressed, input.len())
            .expect("what the compressor made decompresses");
        assert_eq!(&back[..], input);
    }
}

/// Each target's seed corpus: the frames, requests, answers and offers of the unit tests.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let mask = || [0x37, 0xfa, 0x21, 0x3d];
    let frames = |role: Role| {
        let frame = |op, payload: &'static [u8]| {
            let f = OutFrame::new(role, op, Bytes::from_static(payload), mask);
            [f.head(), &f.payload()[..]].concat()
        };
        vec![
            frame(OpCode::Text, b"Hello"),
            frame(OpCode::Binary, &[0, 1, 2, 255]),
            frame(OpCode::Text, "κόσμε".as_bytes()),
            frame(OpCode::Ping, b"ping"),
            frame(OpCode::Pong, b""),
            {
                let f = OutFrame::close(role, CloseCode(1000), "bye", mask);
                [f.head(), &f.payload()[..]].concat()
            },
        ]
    };
    match target {
        "decoder" => {
            let mut seeds = Vec::new();
            // flags: server, no deflate / client / server with deflate at 15 bits.
            for (flags, role) in [
                (0u8, Role::Client),
                (1, Role::Server),
                (2 | 28, Role::Client),
            ] {
                // The decoder's role is the receiver's: a server decodes a client's frames.
                let stream: Vec<u8> = frames(role).concat();
                seeds.push([&[flags, 7, 3][..], &stream].concat());
            }
            // A compressed message (RFC 7692 §7.2.3.1) and a fragmented one with a ping inside.
            seeds.push(
                [
                    &[3u8 | 28, 255, 3][..],
                    &[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
                ]
                .concat(),
            );
            seeds.push(
                [
                    &[1u8, 0, 0][..],
                    &[
                        0x01, 0x03, b'H', b'e', b'l', 0x89, 0x00, 0x80, 0x02, b'l', b'o',
                    ],
                ]
                .concat(),
            );
            seeds
        }
        "handshake_request" => vec![
            b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
                .to_vec(),
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
              Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\nSec-WebSocket-Version: 8\r\n\r\n"
                .to_vec(),
        ],
        "handshake_response" => {
            let handshake = ClientHandshake::new([7; 16]);
            let accept = crate::handshake::accept_key(handshake.key().as_bytes());
            let accept = accept.to_str().expect("base64");
            // What a ferrosock server answers to the default offer.
            let offer = PerMessageDeflate::default().client_offer();
            let (_, agreed) = PerMessageDeflate::default()
                .server_accept([offer.as_bytes()])
                .expect("the default offer is accepted");
            vec![
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                )
                .into_bytes(),
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\
                     Sec-WebSocket-Extensions: {agreed}\r\n\r\n"
                )
                .into_bytes()
                .into_iter()
                .chain([0x81, 0x02, b'h', b'i']) // a first frame right behind the head
                .collect(),
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".to_vec(),
            ]
        }
        "negotiation" => vec![
            [
                &[0u8, 3, 0x3f, 0x3f][..],
                b"permessage-deflate; client_max_window_bits",
            ]
            .concat(),
            [
                &[3u8, 0, 0x24, 0x12][..],
                b"permessage-deflate; server_max_window_bits=10; client_no_context_takeover, \
                  permessage-deflate\nx-webkit-deflate-frame",
            ]
            .concat(),
        ],
        "inflater" => {
            let mut deflater = Deflater::new(15, false, 6, 8);
            let hello = deflater.compress(b"Hello, Hello, Hello");
            vec![
                [
                    &[0x67u8, 5][..],
                    &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
                ]
                .concat(),
                [&[0x6fu8, 11][..], &hello[..]].concat(),
                [&[0x0au8, 0][..], &[0u8; 64][..]].concat(),
            ]
        }
        other => panic!("no fuzz target named {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every seed, and every input kept in fuzz/regressions/TARGET/ (inputs that once failed),
    /// passes its entry point.
    #[test]
    fn seeds_and_regressions_pass() {
        let regressions =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions");
        for target in TARGETS {
            let seeds = seeds(target);
            assert!(!seeds.is_empty());
            for seed in &seeds {
                run(target, seed);
            }
            if let Ok(entries) = std::fs::read_dir(regressions.join(target)) {
                for entry in entries {
                    let path = entry.unwrap().path();
                    run(target, &std::fs::read(&path).unwrap());
                }
            }
        }
    }

    /// The seeds reach the interesting paths: messages come out of the decoder seeds, and the
    /// first answer seed is a complete 101.
    #[test]
    fn the_seeds_are_meaningful() {
        for seed in seeds("decoder") {
            let [flags, _, _, stream @ ..] = &seed[..] else {
                unreachable!()
            };
            let mut decoder = Decoder::new(DecoderConfig {
                role: if flags & 1 == 0 {
                    Role::Server
                } else {
                    Role::Client
                },
                max_frame_size: 1 << 20,
                max_message_size: 1 << 20,
            });
            if flags & 2 != 0 {
                decoder.set_inflater(Inflater::new(8 + (flags >> 2 & 7), flags & 32 != 0));
            }
            let (out, err) = decode_all(&mut decoder, [stream].into_iter(), 1 << 20);
            assert!(err.is_none(), "{err:?}");
            assert!(!out.is_empty());
        }
        let handshake = ClientHandshake::new([7; 16]).offer_deflate(&PerMessageDeflate::default());
        let answers = seeds("handshake_response");
        assert!(matches!(handshake.check_response(&answers[0]), Ok(Some(_))));
        assert!(
            matches!(handshake.check_response(&answers[1]), Ok(Some(a)) if a.deflate.is_some())
        );
    }
}
