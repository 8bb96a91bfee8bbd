//! Writing: framing what handles queued (compressing what the outgoing path left to the
//! driver), the frames the protocol owes, and vectored writes that return the budget.

use super::*;

impl<S, C> Driver<S, C>
where
    S: AsyncRead + AsyncWrite + Unpin,
    C: Callbacks,
{
    /// Frames what handles queued, compressing the messages the outgoing path left to the
    /// driver ([`super::outgoing`]).
    pub(super) fn frame_staged(&mut self) {
        let role = self.role;
        while let Some(Queued { item, mut held }) = self.staged.pop_front() {
            let frame = match item {
                Outgoing::Frame(frame) => frame,
                Outgoing::Message {
                    opcode,
                    payload,
                    compress,
                } => {
                    let compressed = self
                        .deflater
                        .as_deref_mut()
                        .and_then(|deflater| outgoing::compress(deflater, &payload, compress));
                    match compressed {
                        Some(compressed) => {
                            if let Some(stripe) = &self.stripe {
                                stripe.deflated(payload.len(), compressed.len());
                            }
                            let shared = self.callbacks.shared();
                            shared.recharge(&mut held, payload.len(), compressed.len());
                            OutFrame::compressed(role, opcode, compressed, rand::random)
                        }
                        None => OutFrame::new(role, opcode, payload, rand::random),
                    }
                }
            };
            self.out.push_back(Queued { item: frame, held });
        }
        shrink_if_drained(&mut self.staged);
    }

    /// Queues a pong, within the outgoing budget: a peer that floods pings and never reads
    /// the pongs fills its budget and is closed with 1008 like any other peer that does not read.
    pub(super) fn queue_pong(&mut self, payload: Bytes) {
        let shared = self.callbacks.shared();
        if shared.over_budget() {
            // Once per connection: a send may have cut it already.
            if let (false, Some(stats)) = (shared.failing(), shared.stats()) {
                stats.budget_cut();
            }
            self.fail(
                CloseCode::POLICY_VIOLATION,
                "outgoing buffer limit exceeded",
                "outgoing buffer limit exceeded by pongs to a peer that does not read".to_owned(),
                true,
            );
        } else {
            self.queue_internal(OpCode::Pong, payload);
        }
    }

    /// Queues a frame the protocol owes (pong, close, keepalive ping).
    pub(super) fn queue_internal(&mut self, opcode: OpCode, payload: Bytes) {
        let frame = OutFrame::new(self.role, opcode, payload, rand::random);
        let cost = cost(frame.payload().len());
        let shared = self.callbacks.shared();
        shared.charge(cost);
        let held = shared.hold(cost);
        self.out.push_back(Queued { item: frame, held });
    }

    pub(super) fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut count = 0;
            for (i, Queued { item: frame, .. }) in self.out.iter().enumerate() {
                if count + 2 > MAX_IOV {
                    break;
                }
                let (head, payload) = (frame.head(), &frame.payload()[..]);
                let skip = if i == 0 { self.out_pos } else { 0 };
                if skip < head.len() {
                    iov[count] = IoSlice::new(&head[skip..]);
                    count += 1;
                }
                let skip = skip.saturating_sub(head.len());
                if skip < payload.len() {
                    iov[count] = IoSlice::new(&payload[skip..]);
                    count += 1;
                }
            }
            let written = if count == 0 {
                // Only empty frames would be possible here, and every frame has a header.
                0
            } else if !self.io.is_write_vectored() {
                // A stream that writes one buffer per call: an HTTP/2 stream, where each write
                // is copied and becomes a DATA frame. Small slices are gathered into one write
                // (not a DATA frame per frame header and per payload), and no write is larger
                // than MAX_GATHER: what the stream holds beyond the budget's count while its
                // peer's window is shut stays small.
                if iov[0].len() >= MAX_GATHER {
                    std::task::ready!(Pin::new(&mut self.io).poll_write(cx, &iov[0][..MAX_GATHER]))?
                } else {
                    let gathered = gather(&iov[..count]);
                    std::task::ready!(Pin::new(&mut self.io).poll_write(cx, &gathered))?
                }
            } else if count > 1 && total_len(&iov[..count]) <= SMALL_GATHER {
                // A few small frames (an echo's header and payload, say): one copy into a
                // buffer on the stack and a plain write cost the kernel less than a writev of
                // their pieces (no iovec array to import and walk; profiled at 20 B echoes).
                let mut small = [0u8; SMALL_GATHER];
                let mut len = 0;
                for slice in &iov[..count] {
                    small[len..len + slice.len()].copy_from_slice(slice);
                    len += slice.len();
                }
                std::task::ready!(Pin::new(&mut self.io).poll_write(cx, &small[..len]))?
            } else {
                std::task::ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &iov[..count]))?
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.traffic.bytes_out += written as u64;
            if let Some(stripe) = &self.stripe {
                stripe.wire_out(written);
            }
            self.advance(written);
            self.needs_flush = true;
        }
        if self.needs_flush {
            std::task::ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.needs_flush = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Marks `written` bytes of `out` as written and returns their budget.
    pub(super) fn advance(&mut self, mut written: usize) {
        let mut released = 0;
        while let Some(Queued { item: front, .. }) = self.out.front() {
            let rest = front.wire_len() - self.out_pos;
            if written < rest {
                self.out_pos += written;
                break;
            }
            written -= rest;
            released += cost(front.payload().len());
            let kind = Kind::of_opcode(front.head()[0] & 0x0F);
            if matches!(kind, Some(Kind::Text | Kind::Binary)) {
                self.traffic.messages_out += 1;
            }
            if let Some(stripe) = &self.stripe {
                stripe.frame_out(kind);
            }
            self.out.pop_front();
            self.out_pos = 0;
        }
        shrink_if_drained(&mut self.out);
        self.callbacks.shared().release(released);
    }
}

/// The most bytes written at once to a stream without vectored writes: one HTTP/2 DATA frame
/// of the default size. Through a door, hyper copies each write and holds up to four beyond
/// the peer's window, outside the byte budget's count: 64 KiB per stream at most.
const MAX_GATHER: usize = 16 << 10;

/// Frames whose pieces add up to at most this many bytes are copied into one buffer and
/// written with a plain write rather than a vectored one.
const SMALL_GATHER: usize = 2048;

fn total_len(iov: &[IoSlice<'_>]) -> usize {
    iov.iter().map(|slice| slice.len()).sum()
}

/// The front of `iov` in one buffer: the slices that fit in [`MAX_GATHER`] bytes, and at most
/// [`MAX_GATHER`] bytes of the one that does not.
fn gather(iov: &[IoSlice<'_>]) -> Vec<u8> {
    let mut gathered = Vec::with_capacity(total_len(iov).min(MAX_GATHER));
    for slice in iov {
        let room = MAX_GATHER - gathered.len();
        gathered.extend_from_slice(&slice[..slice.len().min(room)]);
        if slice.len() >= room {
            break;
        }
    }
    gathered
}
