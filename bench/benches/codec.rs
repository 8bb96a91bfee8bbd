//! Microbenchmarks of the hot path, in bytes per second, each beside a `memcpy` of the same
//! size (the ceiling): masking, UTF-8 validation, frame decode and encode.
//!
//! `cargo bench -p ferrosock-bench --bench codec`

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrosock::proto::mask::apply_mask;
use ferrosock::proto::utf8::Utf8Validator;
use ferrosock::proto::{Decoder, DecoderConfig, FrameHeader, OpCode, OutFrame, Role};

const SIZES: [usize; 3] = [64, 1024, 64 * 1024];

fn memcpy(c: &mut Criterion) {
    let mut group = c.benchmark_group("memcpy");
    for size in SIZES {
        let source = vec![0x5au8; size];
        let mut target = vec![0u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| target.copy_from_slice(black_box(&source)));
        });
    }
    group.finish();
}

fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    for size in SIZES {
        let mut data = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut data), black_box([0x12, 0x34, 0x56, 0x78])));
        });
    }
    group.finish();
}

fn utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    for size in SIZES {
        let ascii: Vec<u8> =
            br#"{"symbol":"ABC","price":101.25}"#.iter().copied().cycle().take(size).collect();
        let mixed: Vec<u8> = "Ελληνικά, русский, 日本語, ascii too. "
            .bytes()
            .cycle()
            .take(size)
            .collect();
        // Cut on a character boundary so that the input is valid.
        let mixed = std::str::from_utf8(&mixed)
            .map_or_else(|e| mixed[..e.valid_up_to()].to_vec(), |_| mixed.clone());
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("ascii", size), &ascii, |b, input| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                v.feed(black_box(input)).unwrap();
                v.finish().unwrap();
            });
        });
        group.throughput(Throughput::Bytes(mixed.len() as u64));
        group.bench_with_input(BenchmarkId::new("mixed", size), &mixed, |b, input| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                v.feed(black_box(input)).unwrap();
                v.finish().unwrap();
            });
        });
    }
    group.finish();
}

/// A masked client frame of `size` bytes of text.
fn client_frame(size: usize) -> Vec<u8> {
    let payload: Bytes = b"0123456789abcdef"
        .iter()
        .copied()
        .cycle()
        .take(size)
        .collect::<Vec<_>>()
        .into();
    let frame = OutFrame::new(Role::Client, OpCode::Text, payload, || [1, 2, 3, 4]);
    [frame.head(), &frame.payload()[..]].concat()
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    let config = DecoderConfig {
        role: Role::Server,
        max_frame_size: 1 << 20,
        max_message_size: 1 << 20,
    };
    for size in SIZES {
        let wire = client_frame(size);
        group.throughput(Throughput::Bytes(size as u64));
        // Unmasking and UTF-8 checking in place; the copy into the buffer stands for the read.
        group.bench_with_input(BenchmarkId::new("text", size), &wire, |b, wire| {
            let mut decoder = Decoder::new(config);
            let mut buf = BytesMut::with_capacity(wire.len());
            b.iter(|| {
                buf.extend_from_slice(wire);
                black_box(decoder.decode(&mut buf).unwrap());
            });
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for size in SIZES {
        let payload: Bytes = vec![0x5au8; size].into();
        group.throughput(Throughput::Bytes(size as u64));
        // A server frame: a header beside the shared payload, whatever its size.
        group.bench_with_input(BenchmarkId::new("server", size), &payload, |b, payload| {
            b.iter(|| {
                black_box(OutFrame::new(
                    Role::Server,
                    OpCode::Binary,
                    payload.clone(),
                    || [0; 4],
                ))
            });
        });
        // A client frame: the payload copied and masked.
        group.bench_with_input(BenchmarkId::new("client", size), &payload, |b, payload| {
            b.iter(|| {
                black_box(OutFrame::new(
                    Role::Client,
                    OpCode::Binary,
                    payload.clone(),
                    || [1, 2, 3, 4],
                ))
            });
        });
        let header = FrameHeader::new(OpCode::Binary, size as u64, None);
        group.bench_with_input(BenchmarkId::new("header", size), &header, |b, header| {
            let mut out = [0u8; 14];
            b.iter(|| black_box(header.encode(&mut out)));
        });
    }
    group.finish();
}

criterion_group!(benches, memcpy, mask, utf8, decode, encode);
criterion_main!(benches);
