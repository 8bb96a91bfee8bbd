//! The one outgoing path: a payload and a [`Compress`] choice go in; whether it is compressed,
//! how it is framed, and what it is charged against the budget are decided here, once, for
//! every sender — a handle's `send`, the driver, and the encode-once cache of `publish` and
//! `broadcast` ([`Prepared`]).
//!
//! - Without permessage-deflate, or for a message the policy leaves plain, the sender builds
//!   the frame in its own thread ([`Shared::send_data`]).
//! - A message to compress on a connection with context takeover goes to the driver as a
//!   message: its compressor's state depends on every message before, so only the driver can
//!   compress it, in order ([`compress`]).
//! - Without context takeover a compressed message depends on nothing else: [`Prepared`]
//!   compresses it once per window size and shares the frame among the connections.
//!
//! The budget counts what is allocated: a message compressed by the driver is re-charged at
//! its compressed size ([`Shared::recharge`]).

use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;

use super::budget::{cost, Charge, Held};
use super::queue::{Outgoing, SendError, Shared};
use crate::common::Compress;
use crate::proto::deflate::{Deflater, Negotiated, PerMessageDeflate};
use crate::proto::{OpCode, OutFrame, Role};

/// permessage-deflate as negotiated for one connection, with the local settings it needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DeflateSetup {
    pub(crate) negotiated: Negotiated,
    level: u8,
    mem_level: u8,
    threshold: usize,
}

impl DeflateSetup {
    pub(crate) fn new(negotiated: Negotiated, settings: &PerMessageDeflate) -> DeflateSetup {
        DeflateSetup {
            negotiated,
            level: settings.level,
            mem_level: settings.mem_level,
            threshold: settings.threshold,
        }
    }

    /// Whether a message of `len` bytes sent with `compress` is to be compressed. Never with
    /// an 8-bit window, which zlib cannot compress with (RFC 7692 §6 allows sending plain).
    pub(crate) fn wants(&self, len: usize, compress: Compress) -> bool {
        self.negotiated.compress_window_bits > 8
            && match compress {
                Compress::Auto => len >= self.threshold,
                Compress::Always => true,
                Compress::Never => false,
            }
    }

    /// A compressor for this connection's messages.
    pub(crate) fn deflater(&self) -> Deflater {
        let n = &self.negotiated;
        Deflater::new(
            n.compress_window_bits,
            n.compress_reset,
            self.level,
            self.mem_level,
        )
    }
}

/// Compresses a message that [`DeflateSetup::wants`] compressed. `None`: it goes plain after
/// all — incompressible data (random, or compressed already) under `Compress::Auto` without
/// context takeover, where sending it as it is costs nothing later. `Always` insists.
pub(crate) fn compress(
    deflater: &mut Deflater,
    payload: &[u8],
    compress: Compress,
) -> Option<Bytes> {
    if !deflater.can_compress() {
        return None;
    }
    let compressed = deflater.compress(payload);
    let useless =
        compress == Compress::Auto && deflater.resets() && compressed.len() >= payload.len();
    (!useless).then_some(compressed)
}

impl Shared {
    /// Queues a data message: framed here, in the sender's thread, unless it is to be
    /// compressed by the driver. Counts against the budget until written.
    pub(crate) fn send_data(
        &self,
        opcode: OpCode,
        payload: Bytes,
        compress: Compress,
    ) -> Result<(), SendError> {
        let outgoing = match self.deflate_setup() {
            Some(setup) if setup.wants(payload.len(), compress) => Outgoing::Message {
                opcode,
                payload,
                compress,
            },
            _ => Outgoing::Frame(OutFrame::new(self.role(), opcode, payload, rand::random)),
        };
        self.send(outgoing)
    }

    /// Driver side: an item charged at `from_len` bytes of payload now holds `to_len` (a
    /// message the driver compressed): its charges, to the budget and to the process, follow.
    pub(crate) fn recharge(&self, held: &mut Held, from_len: usize, to_len: usize) {
        self.charge(cost(to_len));
        self.release(cost(from_len));
        *held = self.hold(cost(to_len));
    }
}

/// A compressed frame, and its charge to the process-wide total.
type Compressed = (OutFrame, Arc<Charge>);

/// A message ready to be queued on any number of server connections (`publish`,
/// `broadcast`): the frame's header is built once and its payload shared, and it is
/// compressed once per window size for the connections without context takeover. The
/// decisions are those of [`Shared::send_data`] with `Compress::Auto`.
pub(crate) struct Prepared {
    opcode: OpCode,
    payload: Bytes,
    /// The uncompressed frame, header built once.
    plain: OutFrame,
    /// The payload's charge to the process-wide total, made once for every queue it goes on.
    plain_charge: OnceLock<Arc<Charge>>,
    /// Per window size (8 to 15 bits): `None` until a connection needs it; then the compressed
    /// frame and its charge, or `None` inside when compression would not shorten the message.
    compressed: Mutex<[Option<Option<Compressed>>; 8]>,
    /// How many encodings were built (the plain frame included): for the tests.
    #[cfg(test)]
    pub(crate) encodings: std::sync::atomic::AtomicUsize,
}

impl Prepared {
    pub(crate) fn new(opcode: OpCode, payload: Bytes) -> Prepared {
        let plain = OutFrame::new(Role::Server, opcode, payload.clone(), || {
            unreachable!("server frames are not masked")
        });
        Prepared {
            opcode,
            payload,
            plain,
            plain_charge: OnceLock::new(),
            compressed: Mutex::new(Default::default()),
            #[cfg(test)]
            encodings: std::sync::atomic::AtomicUsize::new(1),
        }
    }

    /// The frame type and payload, for a broker.
    pub(crate) fn parts(&self) -> (OpCode, &Bytes) {
        (self.opcode, &self.payload)
    }

    /// Queues this message on the server connection with this `shared` state. Whether it went
    /// (a full budget refuses it).
    pub(crate) fn send(&self, shared: &Shared) -> bool {
        let (outgoing, charge) = self.outgoing(shared);
        // The payload of a frame compressed here (RSV1), for the counters.
        let deflated = match &outgoing {
            Outgoing::Frame(frame) if frame.head()[0] & 0x40 != 0 => Some(frame.payload().len()),
            _ => None,
        };
        let sent = shared.send_sharing(outgoing, Some(charge)).is_ok();
        if let (true, Some(compressed), Some(stats)) = (sent, deflated, shared.stats()) {
            stats.deflated(self.payload.len(), compressed);
        }
        sent
    }

    /// What to queue on the server connection with this `shared` state, and the process-wide
    /// charge of its payload, shared by every queue it goes on.
    pub(crate) fn outgoing(&self, shared: &Shared) -> (Outgoing, Arc<Charge>) {
        debug_assert_eq!(shared.role(), Role::Server, "client frames are masked each");
        let plain_charge = || {
            self.plain_charge
                .get_or_init(|| Arc::new(shared.pool().charge(self.payload.len())))
                .clone()
        };
        let setup = match shared.deflate_setup() {
            Some(setup) if setup.wants(self.payload.len(), Compress::Auto) => setup,
            _ => return (Outgoing::Frame(self.plain.clone()), plain_charge()),
        };
        let agreed = setup.negotiated;
        if !agreed.compress_reset {
            // Context takeover: this connection's compressor state decides the bytes.
            let message = Outgoing::Message {
                opcode: self.opcode,
                payload: self.payload.clone(),
                compress: Compress::Auto,
            };
            return (message, plain_charge());
        }
        let mut cache = self.compressed.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut cache[usize::from(agreed.compress_window_bits.min(15) - 8)];
        let frame = slot.get_or_insert_with(|| {
            #[cfg(test)]
            self.encodings
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // The connections of one server share their deflate settings: the first
            // connection's setup compresses for every connection with this window size.
            let compressed = compress(&mut setup.deflater(), &self.payload, Compress::Auto)?;
            let charge = Arc::new(shared.pool().charge(compressed.len()));
            let frame = OutFrame::compressed(Role::Server, self.opcode, compressed, || {
                unreachable!("server frames are not masked")
            });
            Some((frame, charge))
        });
        match frame {
            Some((frame, charge)) => (Outgoing::Frame(frame.clone()), charge.clone()),
            None => (Outgoing::Frame(self.plain.clone()), plain_charge()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::common::Status;
    use crate::limits::BackpressurePolicy;

    fn connection(role: Role, deflate: Option<(u8, bool)>) -> Shared {
        let shared = Shared::new(role, Status::Connected, 1 << 20, BackpressurePolicy::Close);
        let negotiated = deflate.map(|(bits, reset)| Negotiated::new(bits, reset, 15, false));
        shared.set_deflate(negotiated, &PerMessageDeflate::default());
        shared
    }

    fn payload_of(outgoing: &Outgoing) -> (*const u8, bool) {
        match outgoing {
            Outgoing::Frame(frame) => (frame.payload().as_ptr(), frame.head()[0] & 0x40 != 0),
            Outgoing::Message { payload, .. } => (payload.as_ptr(), false),
        }
    }

    fn text(text: &str) -> Prepared {
        Prepared::new(OpCode::Text, Bytes::copy_from_slice(text.as_bytes()))
    }

    #[test]
    fn one_encoding_per_compression_setting_shared_by_every_connection() {
        let text_ = "fan-out ".repeat(1000); // compressible, over the threshold
        let prepared = text(&text_);
        let kinds = [None, Some((12, true)), Some((15, true)), Some((12, false))];
        let mut seen: Vec<Vec<(*const u8, bool)>> = vec![Vec::new(); kinds.len()];
        for _ in 0..100 {
            for (kind, seen) in kinds.iter().zip(&mut seen) {
                let shared = connection(Role::Server, *kind);
                seen.push(payload_of(&prepared.outgoing(&shared).0));
            }
        }
        // The plain frame, and one compression per window size: not one per connection.
        assert_eq!(prepared.encodings.load(Ordering::Relaxed), 3);
        for (kind, seen) in kinds.iter().zip(&seen) {
            assert!(seen.iter().all(|s| *s == seen[0]), "{kind:?}: shared");
        }
        assert!(!seen[0][0].1, "no deflate: plain");
        assert!(
            seen[1][0].1 && seen[2][0].1,
            "no context takeover: compressed once"
        );
        assert_ne!(seen[1][0].0, seen[2][0].0, "each window size its own");
        // Context takeover: the message goes to the driver, payload shared, uncompressed here.
        assert_eq!(seen[3][0].0, seen[0][0].0);

        // The compressed frame decompresses to the message.
        let (Outgoing::Frame(frame), _) =
            prepared.outgoing(&connection(Role::Server, Some((12, true))))
        else {
            unreachable!()
        };
        let mut inflater = crate::proto::deflate::Inflater::new(12, true);
        let back = inflater.decompress(frame.payload(), 1 << 20).unwrap();
        assert_eq!(&back[..], text_.as_bytes());
    }

    #[test]
    fn short_and_incompressible_messages_go_plain() {
        let shared = connection(Role::Server, Some((12, true)));
        assert!(!payload_of(&text("hi").outgoing(&shared).0).1);
        let noise: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
        let random = Prepared::new(OpCode::Binary, noise.into());
        assert!(!payload_of(&random.outgoing(&shared).0).1);
        let eight = connection(Role::Server, Some((8, true)));
        assert!(!payload_of(&random.outgoing(&eight).0).1);
    }

    /// A send and a broadcast decide alike: what the policy leaves plain is framed by the
    /// sender; only what is to be compressed goes to the driver.
    #[test]
    fn send_data_frames_in_the_sender_unless_the_driver_must_compress() {
        let queued = |shared: &Shared| {
            let mut staged = std::collections::VecDeque::new();
            let _ = shared.take(&mut staged);
            staged.pop_front().map(|q| q.item).expect("queued")
        };
        let long = Bytes::from("x".repeat(4096));
        for (kind, compress, len, to_driver) in [
            (None, Compress::Always, 4096, false),
            (Some((15, false)), Compress::Auto, 4096, true),
            (Some((15, false)), Compress::Auto, 10, false),
            (Some((15, false)), Compress::Never, 4096, false),
            (Some((15, true)), Compress::Always, 10, true),
            (Some((8, true)), Compress::Always, 4096, false),
        ] {
            let shared = connection(Role::Client, kind);
            shared
                .send_data(OpCode::Binary, long.slice(..len), compress)
                .unwrap();
            let item = queued(&shared);
            assert_eq!(
                matches!(item, Outgoing::Message { .. }),
                to_driver,
                "{kind:?} {compress:?} {len}"
            );
            if let Outgoing::Frame(frame) = item {
                assert_eq!(frame.head()[1] & 0x80, 0x80, "a client's frame is masked");
            }
        }
    }

    #[test]
    fn incompressible_data_without_context_takeover_goes_plain_unless_always() {
        let noise: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
        let setup = DeflateSetup::new(
            Negotiated::new(15, true, 15, true),
            &PerMessageDeflate::default(),
        );
        assert!(compress(&mut setup.deflater(), &noise, Compress::Auto).is_none());
        assert!(compress(&mut setup.deflater(), &noise, Compress::Always).is_some());
        let takeover = DeflateSetup::new(
            Negotiated::new(15, false, 15, false),
            &PerMessageDeflate::default(),
        );
        // With context takeover the compressor's state has moved on: the message must go
        // compressed, or the peer's window would miss it.
        assert!(compress(&mut takeover.deflater(), &noise, Compress::Auto).is_some());
    }
}
