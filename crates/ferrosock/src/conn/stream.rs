//! The sockets a connection runs on: plain TCP, or TLS on either side.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection's socket. An enum rather than a boxed trait object, so that the driver reads
/// and writes without dynamic dispatch.
#[derive(Debug)]
pub(crate) enum Stream {
    /// Plain TCP (`http://`, `ws://`).
    Plain(TcpStream),
    /// TLS accepted by the web server (`https://`, `wss://`).
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS opened by a client (`wss://`).
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// An in-memory stream: the unit tests' socket, on paused time.
    #[cfg(test)]
    Memory(tokio::io::DuplexStream),
}

/// Forwards a call to whichever stream this is.
macro_rules! each {
    ($self:expr, $s:ident => $call:expr) => {
        match $self {
            Stream::Plain($s) => $call,
            Stream::ServerTls($s) => $call,
            Stream::ClientTls($s) => $call,
            #[cfg(test)]
            Stream::Memory($s) => $call,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        each!(self, s => s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_shutdown(cx))
    }
}
