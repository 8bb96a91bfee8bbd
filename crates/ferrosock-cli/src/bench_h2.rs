//! `ferrosock bench --http2`: WebSockets over HTTP/2 (RFC 8441), N of them spread over M
//! connections, each on a stream of its own. `h2` does the framing; a small adapter makes each
//! stream the byte stream the load loop reads and writes, as a TCP connection is.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use anyhow::{bail, Context as _};
use bytes::{Buf, Bytes, BytesMut};
use ferrosock::proto::handshake::ClientHandshake;
use ferrosock::PerMessageDeflate;
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::bench::{Connection, Target};

/// The longest wait for a stream's answer.
const OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One HTTP/2 connection that WebSockets can be opened on.
pub(crate) struct H2Connection {
    send: SendRequest<Bytes>,
}

impl H2Connection {
    /// Connects, and waits for the server's SETTINGS: it must enable extended CONNECT.
    pub(crate) async fn open(target: &Target) -> anyhow::Result<H2Connection> {
        let tcp = TcpStream::connect(target.addr).await?;
        tcp.set_nodelay(true)?;
        let (send, mut connection) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(16 << 20)
            .handshake::<_, Bytes>(tcp)
            .await
            .context("HTTP/2 handshake (prior knowledge)")?;
        let mut ping = connection.ping_pong().expect("taken once");
        tokio::task::spawn_local(async move {
            let _ = connection.await;
        });
        // The server's SETTINGS come before the answer to a PING.
        ping.ping(h2::Ping::opaque())
            .await
            .context("the server does not speak HTTP/2")?;
        if !send.is_extended_connect_protocol_enabled() {
            bail!("the server does not enable extended CONNECT (RFC 8441)");
        }
        Ok(H2Connection { send })
    }

    /// Opens a WebSocket on a new stream.
    pub(crate) async fn websocket(
        &self,
        target: &Target,
        deflate: bool,
    ) -> anyhow::Result<Connection> {
        let settings = if deflate {
            PerMessageDeflate::default()
        } else {
            PerMessageDeflate::disabled()
        };
        let handshake = ClientHandshake::new(rand::random()).offer_deflate(&settings);
        let mut request = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(format!("http://{}{}", target.host_header, target.resource))
            .body(())?;
        request
            .extensions_mut()
            .insert(h2::ext::Protocol::from_static("websocket"));
        *request.headers_mut() = handshake.extended_connect_headers();
        let limit = self.send.current_max_send_streams();
        let opening = async {
            let mut send = self.send.clone().ready().await?;
            let (response, stream) = send.send_request(request, false)?;
            anyhow::Ok((response.await?, stream))
        };
        let Ok(opened) = tokio::time::timeout(OPEN_TIMEOUT, opening).await else {
            bail!(
                "no stream within {} s: the server allows {limit} streams per connection                  (use more --http2-connections)",
                OPEN_TIMEOUT.as_secs()
            );
        };
        let (response, stream) = opened?;
        let (head, body) = response.into_parts();
        let accepted = handshake.check_extended_connect(head.status.as_u16(), &head.headers)?;
        Ok(Connection {
            stream: crate::bench::Io::H2(H2Io {
                send: stream,
                recv: body,
                received: Bytes::new(),
            }),
            buf: BytesMut::with_capacity(4096),
            deflate: accepted.deflate,
        })
    }
}

/// A WebSocket's HTTP/2 stream as bytes: DATA frames both ways.
pub(crate) struct H2Io {
    send: SendStream<Bytes>,
    recv: RecvStream,
    received: Bytes,
}

impl AsyncRead for H2Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.received.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => this.received = data,
                None => return Poll::Ready(Ok(())),
                Some(Err(err)) => return Poll::Ready(Err(io::Error::other(err))),
            }
        }
        let count = this.received.len().min(buf.remaining());
        buf.put_slice(&this.received[..count]);
        this.received.advance(count);
        let _ = this.recv.flow_control().release_capacity(count);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            let capacity = this.send.capacity();
            if capacity > 0 || buf.is_empty() {
                let count = capacity.min(buf.len());
                this.send
                    .send_data(Bytes::copy_from_slice(&buf[..count]), false)
                    .map_err(io::Error::other)?;
                return Poll::Ready(Ok(count));
            }
            this.send.reserve_capacity(buf.len());
            match ready!(this.send.poll_capacity(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(err)) => return Poll::Ready(Err(io::Error::other(err))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = self.get_mut().send.send_data(Bytes::new(), true);
        Poll::Ready(Ok(()))
    }
}
