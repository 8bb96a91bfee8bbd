//! Fan-out: a message prepared once and queued on many connections.
//!
//! A server frame is a 2–10 byte header beside the payload, so sending one `Bytes` payload to
//! N connections already shares it; [`Prepared`] also builds the header once, and compresses
//! once per window size for the connections that negotiated permessage-deflate without
//! context takeover (their compressed messages depend on nothing else). Connections with
//! context takeover must compress in their own order: their driver does it.

use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;

use crate::conn::budget::Charge;
use crate::conn::{Compress, Outgoing, Shared};
use crate::message::Message;
use crate::proto::deflate::Deflater;
use crate::proto::{OpCode, OutFrame, PerMessageDeflate, Role};

/// A compressed frame, and its charge to the process-wide total.
type Compressed = (OutFrame, Arc<Charge>);

/// A message ready to be queued on any number of server connections.
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
    encodings: std::sync::atomic::AtomicUsize,
}

impl Prepared {
    pub(crate) fn new(message: Message) -> Prepared {
        let (opcode, payload) = message.into_frame();
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

    /// Queues this message on the connection with this `shared` state, on a server whose
    /// deflate settings are `deflate`. Whether it went (a full budget refuses it).
    pub(crate) fn send(&self, shared: &Shared, deflate: &PerMessageDeflate) -> bool {
        let (outgoing, charge) = self.outgoing(shared, deflate);
        shared.send_sharing(outgoing, Some(charge)).is_ok()
    }

    /// What to queue on a connection with this `shared` state, on a server whose deflate
    /// settings are `deflate` (the same decisions as `Compress::Auto` in the driver), and the
    /// process-wide charge of its payload, shared by every queue it goes on.
    pub(crate) fn outgoing(
        &self,
        shared: &Shared,
        deflate: &PerMessageDeflate,
    ) -> (Outgoing, Arc<Charge>) {
        let plain_charge = || {
            self.plain_charge
                .get_or_init(|| Arc::new(shared.pool().charge(self.payload.len())))
                .clone()
        };
        if !shared.deflate() || self.payload.len() < deflate.threshold {
            return (Outgoing::Frame(self.plain.clone()), plain_charge());
        }
        let Some(bits) = shared.resetting_window() else {
            // Context takeover: this connection's compressor state decides the bytes.
            let message = Outgoing::Message {
                opcode: self.opcode,
                payload: self.payload.clone(),
                compress: Compress::Auto,
            };
            return (message, plain_charge());
        };
        if bits <= 8 {
            // zlib cannot compress with an 8-bit window: sent as it is (RFC 7692 §6 allows it).
            return (Outgoing::Frame(self.plain.clone()), plain_charge());
        }
        let mut cache = self.compressed.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut cache[usize::from(bits.min(15) - 8)];
        let frame = slot.get_or_insert_with(|| {
            #[cfg(test)]
            self.encodings
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let compressed =
                Deflater::new(bits, true, deflate.level, deflate.mem_level).compress(&self.payload);
            // Incompressible data goes as it is, as the driver would send it.
            (compressed.len() < self.payload.len()).then(|| {
                let charge = Arc::new(shared.pool().charge(compressed.len()));
                let frame = OutFrame::compressed(Role::Server, self.opcode, compressed, || {
                    unreachable!("server frames are not masked")
                });
                (frame, charge)
            })
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
    use crate::limits::BackpressurePolicy;
    use crate::proto::Negotiated;
    use crate::Status;

    fn connection(deflate: Option<(u8, bool)>) -> Shared {
        let shared = Shared::new(Status::Connected, 1 << 20, BackpressurePolicy::Close);
        let negotiated = deflate.map(|(bits, reset)| Negotiated::new(bits, reset, 15, false));
        shared.set_deflate(negotiated.as_ref());
        shared
    }

    fn payload_of(outgoing: &Outgoing) -> (*const u8, bool) {
        match outgoing {
            Outgoing::Frame(frame) => (frame.payload().as_ptr(), frame.head()[0] & 0x40 != 0),
            Outgoing::Message { payload, .. } => (payload.as_ptr(), false),
        }
    }

    #[test]
    fn one_encoding_per_compression_setting_shared_by_every_connection() {
        let settings = PerMessageDeflate::default();
        let text = "fan-out ".repeat(1000); // compressible, over the threshold
        let prepared = Prepared::new(Message::Text(text.clone().into()));
        let kinds = [None, Some((12, true)), Some((15, true)), Some((12, false))];
        let mut seen: Vec<Vec<(*const u8, bool)>> = vec![Vec::new(); kinds.len()];
        for _ in 0..100 {
            for (kind, seen) in kinds.iter().zip(&mut seen) {
                let shared = connection(*kind);
                seen.push(payload_of(&prepared.outgoing(&shared, &settings).0));
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
            prepared.outgoing(&connection(Some((12, true))), &settings)
        else {
            unreachable!()
        };
        let mut inflater = crate::proto::deflate::Inflater::new(12, true);
        let back = inflater.decompress(frame.payload(), 1 << 20).unwrap();
        assert_eq!(&back[..], text.as_bytes());
    }

    #[test]
    fn short_and_incompressible_messages_go_plain() {
        let settings = PerMessageDeflate::default();
        let shared = connection(Some((12, true)));
        let short = Prepared::new(Message::Text("hi".into()));
        assert!(!payload_of(&short.outgoing(&shared, &settings).0).1);
        let noise: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
        let random = Prepared::new(Message::Blob(noise.into()));
        assert!(!payload_of(&random.outgoing(&shared, &settings).0).1);
        assert!(!payload_of(&random.outgoing(&connection(Some((8, true))), &settings).0).1);
    }
}
