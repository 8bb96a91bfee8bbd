//! A WebSocket on an HTTP/2 stream (RFC 8441), for the server's and the client's HTTP/2
//! connections: DATA frames carry its bytes both ways, END_STREAM ends it after the close
//! handshake, RST_STREAM(CANCEL) when it is dropped without one.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A WebSocket on an HTTP/2 stream (RFC 8441): DATA frames carry its bytes both ways.
pub(crate) struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received and not read yet.
    received: Bytes,
    /// END_STREAM sent: the close handshake is over on our side.
    ended: bool,
    /// The count of open streams of the connection this one is counted in (the client's
    /// pool), decremented when it is dropped.
    counted_in: Option<Arc<AtomicUsize>>,
}

impl H2Stream {
    /// The WebSocket on the stream whose halves are `send` and `recv`.
    pub(crate) fn new(send: SendStream<Bytes>, recv: RecvStream) -> H2Stream {
        H2Stream {
            send,
            recv,
            received: Bytes::new(),
            ended: false,
            counted_in: None,
        }
    }

    /// Counts this stream in `open`, whose count it already is in, until it is dropped.
    pub(crate) fn counted_in(mut self, open: Arc<AtomicUsize>) -> H2Stream {
        self.counted_in = Some(open);
        self
    }
}

impl AsyncRead for H2Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.received.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => this.received = data,
                // END_STREAM: the peer's FIN.
                None => return Poll::Ready(Ok(())),
                // "Stop sending, no error" (RFC 9113 §8.1): what a server sends after its END_STREAM
                // when it is done before the client. An end of the stream, no failure: clean
                // after the close handshake, 1006 without one, as a FIN would be.
                Some(Err(err)) if err.reason() == Some(Reason::NO_ERROR) => {
                    return Poll::Ready(Ok(()))
                }
                // A reset ends the stream as a TCP reset would: this WebSocket alone.
                Some(Err(err)) => return Poll::Ready(Err(to_io(err))),
            }
        }
        let count = this.received.len().min(buf.remaining());
        buf.put_slice(&this.received[..count]);
        this.received.advance(count);
        // Read by the connection: the peer may send that much more.
        let _ = this.recv.flow_control().release_capacity(count);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            let capacity = this.send.capacity();
            if capacity > 0 {
                let count = capacity.min(buf.len());
                this.send
                    .send_data(Bytes::copy_from_slice(&buf[..count]), false)
                    .map_err(to_io)?;
                return Poll::Ready(Ok(count));
            }
            // Only what the peer's window allows is handed to h2: the rest waits in the
            // connection's queue, counted by its byte budget.
            this.send.reserve_capacity(buf.len());
            match ready!(this.send.poll_capacity(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(err)) => return Poll::Ready(Err(to_io(err))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2's connection task writes the frames.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.ended {
            this.ended = true;
            // RFC 8441 §5: the close handshake's end is END_STREAM, TCP's FIN. A stream the
            // peer already ended and reset with NO_ERROR (a server done before its client)
            // takes no more frames: nothing is lost, as with a FIN after the peer's.
            if let Err(err) = this.send.send_data(Bytes::new(), true) {
                tracing::trace!("END_STREAM not sent: {err}");
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for H2Stream {
    fn drop(&mut self) {
        if let Some(open) = &self.counted_in {
            open.fetch_sub(1, Ordering::AcqRel);
        }
        if !self.ended {
            // Dropped without a close handshake's end (a close timeout, an abort, a failure):
            // RFC 8441 §5's TCP reset.
            self.send.send_reset(Reason::CANCEL);
        }
    }
}

/// An h2 error as the driver sees I/O errors: a peer's reset is the end of the stream.
fn to_io(err: h2::Error) -> io::Error {
    if err.is_io() {
        return err.into_io().unwrap_or_else(|| io::ErrorKind::Other.into());
    }
    match err.reason() {
        Some(Reason::NO_ERROR) | Some(Reason::CANCEL) => {
            io::Error::new(io::ErrorKind::ConnectionReset, err)
        }
        _ => io::Error::other(err),
    }
}
