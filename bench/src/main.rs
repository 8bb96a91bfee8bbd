//! Echo servers built on ferrosock's peer crates, for side-by-side load tests (`scripts/bench`).
//!
//! `bench-server KIND --listen ADDR`, KIND one of `tokio-tungstenite`, `fastwebsockets`,
//! `tokio-websockets`, `raw` (a TCP echo that returns the same bytes without any WebSocket
//! work: the limit) or `io-uring` (ferrosock-proto on one io_uring thread: issue 14's
//! evaluation, see `uring.rs`). The others run on a tokio multi-thread runtime with a worker per core and sets
//! TCP_NODELAY, as `ferrosock echo` does, and echoes every text or binary message with its type,
//! in the way each crate's own examples do.

use std::net::SocketAddr;

mod uring;

/// The same allocator as the `ferrosock` binary, so that the comparison is of the WebSocket
/// stacks alone.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Parser)]
#[command(about = "Echo servers on ferrosock's peer crates")]
struct Args {
    /// Which server.
    kind: Kind,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9002")]
    listen: SocketAddr,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    TokioTungstenite,
    Fastwebsockets,
    TokioWebsockets,
    Raw,
    /// ferrosock-proto on one io_uring thread: the evaluation in `uring.rs`.
    IoUring,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Kind::IoUring = args.kind {
        return uring::serve(args.listen);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        eprintln!(
            "bench-server {:?}: ws://{}/",
            args.kind,
            listener.local_addr()?
        );
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(async move {
                let result = match args.kind {
                    Kind::TokioTungstenite => tungstenite_echo(stream).await,
                    Kind::Fastwebsockets => fastwebsockets_echo(stream).await,
                    Kind::TokioWebsockets => tokio_websockets_echo(stream).await,
                    Kind::Raw => raw_echo(stream).await,
                    Kind::IoUring => unreachable!("served without tokio"),
                };
                // A client going away mid-message is no news to a load test.
                drop(result);
            });
        }
    })
}

/// tokio-tungstenite: its README's echo.
async fn tungstenite_echo(stream: TcpStream) -> anyhow::Result<()> {
    use futures_util::{SinkExt, StreamExt};
    let mut ws = tokio_tungstenite::accept_async(stream).await?;
    while let Some(message) = ws.next().await {
        let message = message?;
        if message.is_text() || message.is_binary() {
            ws.send(message).await?;
        }
    }
    Ok(())
}

/// fastwebsockets: its `echo_server` example (hyper upgrade, FragmentCollector).
async fn fastwebsockets_echo(stream: TcpStream) -> anyhow::Result<()> {
    use fastwebsockets::{upgrade, FragmentCollector, OpCode};
    use http_body_util::Empty;
    use hyper::body::{Bytes, Incoming};
    use hyper::{Request, Response};

    async fn handle(
        mut request: Request<Incoming>,
    ) -> Result<Response<Empty<Bytes>>, fastwebsockets::WebSocketError> {
        let (response, upgrade) = upgrade::upgrade(&mut request)?;
        tokio::spawn(async move {
            let Ok(ws) = upgrade.await else { return };
            let mut ws = FragmentCollector::new(ws);
            while let Ok(frame) = ws.read_frame().await {
                let echo = matches!(frame.opcode, OpCode::Text | OpCode::Binary);
                if frame.opcode == OpCode::Close || (echo && ws.write_frame(frame).await.is_err()) {
                    break;
                }
            }
        });
        Ok(response)
    }

    let io = hyper_util::rt::TokioIo::new(stream);
    hyper::server::conn::http1::Builder::new()
        .serve_connection(io, hyper::service::service_fn(handle))
        .with_upgrades()
        .await?;
    Ok(())
}

/// tokio-websockets: its README's echo.
async fn tokio_websockets_echo(stream: TcpStream) -> anyhow::Result<()> {
    use futures_util::{SinkExt, StreamExt};
    let (_request, mut ws) = tokio_websockets::ServerBuilder::new()
        .accept(stream)
        .await?;
    while let Some(message) = ws.next().await {
        let message = message?;
        if message.is_text() || message.is_binary() {
            ws.send(message).await?;
        }
    }
    Ok(())
}

/// The same bytes back, no WebSocket work at all (the limit). The opening handshake is answered
/// so that a WebSocket client can connect; after it, every byte is returned as it came, so a
/// client's frames come back masked: `ferrosock bench --raw-echo` expects exactly that.
async fn raw_echo(mut stream: TcpStream) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    let rest = loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break head.split_off(end + 4);
        }
    };
    let text = String::from_utf8_lossy(&head);
    let key = text
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    let accept = ferrosock::proto::handshake::accept_key(key.as_bytes());
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept.to_str().unwrap_or_default()
    );
    stream.write_all(answer.as_bytes()).await?;
    stream.write_all(&rest).await?;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}
