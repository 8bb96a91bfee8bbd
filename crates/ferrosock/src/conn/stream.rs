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
    /// A stream the application brought (`WebSocketServer::accept`, `WebSocket::connect_over`):
    /// a TLS stream of another crate, a Unix socket, an in-memory pipe (the unit tests').
    Custom(Custom),
}

/// What a stream the application brings must be.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A stream of a type ferrosock does not know, behind one dynamic call per read and write.
pub(crate) struct Custom(Box<dyn Io>);

impl std::fmt::Debug for Custom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Custom")
    }
}

impl Stream {
    /// The stream for `io`: a `TcpStream` goes without the dynamic call.
    pub(crate) fn from_io<S: Io>(io: S) -> Stream {
        let mut slot = Some(io);
        if let Some(tcp) = (&mut slot as &mut dyn std::any::Any).downcast_mut::<Option<TcpStream>>()
        {
            return Stream::Plain(tcp.take().expect("just put"));
        }
        Stream::Custom(Custom(Box::new(slot.take().expect("still there"))))
    }
}

/// Forwards a call to whichever stream this is.
macro_rules! each {
    ($self:expr, $s:ident => $call:expr) => {
        match $self {
            Stream::Plain($s) => $call,
            Stream::ServerTls($s) => $call,
            Stream::ClientTls($s) => $call,
            Stream::Custom(Custom($s)) => $call,
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
