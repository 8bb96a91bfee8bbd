//! Reading: from the socket into the thread's scratch or the connection's buffer, decoding in
//! place, handing messages to the callbacks, and skipping input while draining.

use super::state::{CloseEvent, Reading};
use super::*;

impl<S, C> Driver<S, C>
where
    S: AsyncRead + AsyncWrite + Unpin,
    C: Callbacks,
{
    /// Decodes everything in `read_buf` and acts on it.
    pub(super) fn process_input(&mut self) {
        if self.close.reading() != Reading::Decode {
            self.skip_input();
            return;
        }
        let mut input = std::mem::take(&mut self.read_buf);
        self.decode_all(&mut input);
        self.read_buf = input;
        if self.close.reading() != Reading::Decode {
            self.skip_input();
        } else if self.read_buf.is_empty() {
            // Release the buffer: a payload split off it keeps its own allocation alive.
            self.read_buf = BytesMut::new();
        }
    }

    /// Decodes the frames of `input` and acts on each, until it needs more bytes or the
    /// connection starts draining.
    pub(super) fn decode_all<I: Input>(&mut self, input: &mut I) {
        while self.close.reading() == Reading::Decode {
            let decoded = match self.decoder.decode_from(input) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => break,
                Err(err) => {
                    // The failure makes the decoder skip on from the frame that failed, to spot
                    // the peer's close reply.
                    let cause = err.to_string();
                    let code = err.close_code();
                    // Replies to the messages before the bad frame were accepted: they go first.
                    self.fail(code, &cause, format!("protocol error: {cause}"), false);
                    break;
                }
            };
            match decoded {
                Decoded::Text(payload) => {
                    self.count_message_in(Kind::Text, payload.len());
                    self.deliver(Incoming::Text(payload));
                }
                Decoded::Binary(payload) => {
                    self.count_message_in(Kind::Binary, payload.len());
                    self.deliver(Incoming::Binary(payload));
                }
                Decoded::Ping(payload) => {
                    self.count_control_in(Kind::Ping);
                    // RFC 6455 §5.5.2: answer with a pong carrying the same payload, unless
                    // our close frame is already queued (nothing may follow it).
                    if !self.close.sent() {
                        self.queue_pong(payload);
                    }
                }
                Decoded::Pong(_) => self.count_control_in(Kind::Pong),
                Decoded::Close(frame) => {
                    self.count_control_in(Kind::Close);
                    self.transition(CloseEvent::PeerClose(frame));
                }
            }
        }
    }

    /// Counts a data message of `len` bytes that the decoder handed out (inflated, if it was
    /// compressed).
    fn count_message_in(&mut self, kind: Kind, len: usize) {
        self.traffic.messages_in += 1;
        if let Some(stripe) = &self.stripe {
            stripe.frame_in(kind);
            let compressed = self.decoder.take_inflated_len();
            if compressed > 0 {
                stripe.inflated(compressed, len);
            }
        }
    }

    /// Counts a control frame received.
    fn count_control_in(&self, kind: Kind) {
        if let Some(stripe) = &self.stripe {
            stripe.frame_in(kind);
        }
    }

    /// Decodes what a read put in the thread's scratch buffer: first the end of a frame begun
    /// in an earlier read (completed in `read_buf`), then whole frames straight from the
    /// scratch (their payloads copied out, each in an allocation of its own size), and keeps
    /// the start of an incomplete frame in `read_buf`, sized for that frame.
    pub(super) fn decode_read(&mut self, bytes: &mut [u8]) {
        let mut input = SliceInput::new(bytes);
        while !self.read_buf.is_empty()
            && self.close.reading() == Reading::Decode
            && !input.rest().is_empty()
        {
            let need = match self.decoder.bytes_wanted(self.read_buf.len()) {
                // A header not complete yet: at most a header's worth.
                0 => MAX_HEADER_LEN,
                wanted => wanted,
            };
            let n = need.min(input.rest().len());
            // Room for the whole frame at once when it is small: no regrowth per read. A large
            // one (its header just completed) gets room for what arrived, at most 256 KiB
            // more: memory follows the bytes, not the length the header announces.
            let room = if need < SCRATCH_LEN {
                need
            } else {
                n.max(MAX_READ_RESERVE)
            };
            let total = self.read_buf.len() + room;
            reserve_exact(&mut self.read_buf, total);
            self.read_buf.extend_from_slice(&input.rest()[..n]);
            input.consume(n);
            self.process_input();
        }
        if self.read_buf.is_empty() {
            self.decode_all(&mut input);
        }
        let rest = input.rest();
        if rest.is_empty() {
            return;
        }
        match self.close.reading() {
            Reading::Decode => {}
            // A failure: the rest is skipped frame by frame.
            Reading::Skip => {
                self.read_buf.extend_from_slice(rest);
                self.skip_input();
                return;
            }
            // The peer's close frame: the rest is dropped.
            Reading::Discard => return,
        }
        // The start of a frame: its header (or part of it), or its payload's first bytes.
        let capacity = match self.decoder.frame_in_progress() {
            Some(len) => len.min(rest.len().max(MAX_READ_RESERVE)),
            None => rest.len(),
        };
        let mut buf = BytesMut::with_capacity(capacity);
        buf.extend_from_slice(rest);
        self.read_buf = buf;
    }

    /// Input that is not decoded: after a failure the decoder skips it frame by frame until
    /// the peer's close frame has wholly arrived; otherwise it is thrown away.
    pub(super) fn skip_input(&mut self) {
        if self.close.reading() == Reading::Skip && self.decoder.skip_to_close(&mut self.read_buf) {
            self.transition(CloseEvent::PeerClose(None));
        }
        if self.close.reading() != Reading::Skip || self.read_buf.is_empty() {
            self.read_buf = BytesMut::new();
        }
    }

    pub(super) fn deliver(&mut self, message: Incoming) {
        // After our close frame, messages the peer sent before it saw it are still delivered
        // (RFC 6455 §1.4: data may arrive until the peer's close frame), so that nothing the
        // peer sent in good faith is lost. A failing connection delivers nothing more: that
        // is decided by `fail`, which stops decoding, and by a pending failure command.
        if self.close.delivers() && !self.callbacks.shared().failing() {
            self.callbacks.on_message(message);
        }
    }

    /// Reads what the socket has and decodes it. `Ready(Ok(0))`: the peer closed its side.
    pub(super) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.close.reading() != Reading::Decode {
            let n = std::task::ready!(self.poll_read_draining(cx))?;
            if n > 0 {
                self.skip_input();
            }
            return Poll::Ready(Ok(n));
        }
        let wanted = self.decoder.bytes_wanted(self.read_buf.len());
        if wanted >= SCRATCH_LEN {
            // A large frame: read straight into its own buffer, and no further than its end,
            // so that its payload is split off without a copy and owns its whole allocation.
            let total = self.read_buf.len() + wanted;
            let step = (self.read_buf.len() * 2).max(self.read_buf.len() + MAX_READ_RESERVE);
            if self.read_buf.capacity() == self.read_buf.len() {
                // Memory follows the bytes that arrive, not the length the header announced.
                reserve_exact(&mut self.read_buf, total.min(step));
            }
            let io = Pin::new(&mut self.io);
            let mut limited = bytes::BufMut::limit(&mut self.read_buf, wanted);
            let n = std::task::ready!(tokio_util::io::poll_read_buf(io, cx, &mut limited))?;
            if n > 0 {
                self.process_input();
            }
            return Poll::Ready(Ok(n));
        }
        // Taken out of the thread's slot while in use: a callback run from here that drove
        // another connection on this thread would find the slot empty and use its own.
        let mut scratch = SCRATCH
            .take()
            .unwrap_or_else(|| vec![0; SCRATCH_LEN].into_boxed_slice());
        let mut buf = ReadBuf::new(&mut scratch);
        let read = Pin::new(&mut self.io).poll_read(cx, &mut buf);
        let n = buf.filled().len();
        if let Poll::Ready(Ok(())) = read {
            if n > 0 {
                self.decode_read(&mut scratch[..n]);
            }
        }
        SCRATCH.set(Some(scratch));
        std::task::ready!(read)?;
        Poll::Ready(Ok(n))
    }

    /// Reads while draining: into the scratch to throw away when framing is lost, into
    /// `read_buf` (to skip frame by frame) otherwise.
    pub(super) fn poll_read_draining(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let io = Pin::new(&mut self.io);
        if self.close.reading() == Reading::Discard {
            let mut scratch = SCRATCH
                .take()
                .unwrap_or_else(|| vec![0; SCRATCH_LEN].into_boxed_slice());
            let mut buf = ReadBuf::new(&mut scratch);
            let read = io.poll_read(cx, &mut buf);
            let n = buf.filled().len();
            SCRATCH.set(Some(scratch));
            std::task::ready!(read)?;
            return Poll::Ready(Ok(n));
        }
        self.read_buf.reserve(MIN_READ);
        tokio_util::io::poll_read_buf(io, cx, &mut self.read_buf)
    }
}
