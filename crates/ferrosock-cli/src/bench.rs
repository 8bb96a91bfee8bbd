//! `ferrosock bench`: a load generator in the spirit of uWebSockets' `load_test`.
//!
//! N connections each send one message and send the next as soon as its echo is back. One
//! thread runs everything (a tokio current-thread runtime, a small task per connection that
//! speaks `ferrosock::proto` directly), so the generator takes one core and leaves the others
//! to the server under test. Each connection sends the same pre-built masked frame every time:
//! a load test needs no fresh masking keys, and this keeps the generator's work per message to
//! a write and a decode.

use std::cell::{Cell, RefCell};
use std::io::IsTerminal as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::{Bytes, BytesMut};
use ferrosock::proto::deflate::{Deflater, Inflater};
use ferrosock::proto::handshake::ClientHandshake;
use ferrosock::proto::{Decoded, Decoder, DecoderConfig, OpCode, OutFrame, Role};
use ferrosock::PerMessageDeflate;
use futures_util::future::join_all;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

use crate::args::BenchArgs;
use crate::bench_h2::{H2Connection, H2Io};
use crate::note;

/// What one run measured.
#[derive(Debug, Default)]
struct Stats {
    messages: u64,
    errors: u64,
    first_errors: Vec<String>,
    /// Round-trip latency in microseconds.
    latency: Option<Histogram<u64>>,
}

impl Stats {
    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.first_errors.len() < 5 {
            self.first_errors.push(what);
        }
    }
}

/// Where to connect, from the URL.
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    pub(crate) host_header: String,
    pub(crate) resource: String,
    /// For wss://: the TLS client and the name the certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let target = target(&args.url, args.ca.as_deref()).await?;
        if args.http2 && target.tls.is_some() {
            bail!("bench --http2 speaks HTTP/2 by prior knowledge, on ws:// only");
        }
        match (args.idle, args.fanout) {
            (Some(count), _) => idle(&args, &target, count).await,
            (None, Some(subscribers)) => fanout(&args, target, subscribers).await,
            (None, None) => load(&args, &target).await,
        }
    })
}

async fn target(url: &str, ca: Option<&Path>) -> anyhow::Result<Target> {
    let parsed = url::Url::parse(url).with_context(|| format!("invalid URL {url:?}"))?;
    let secure = match parsed.scheme() {
        "ws" => false,
        "wss" => true,
        other => bail!("ferrosock bench speaks ws:// and wss://, not {other}://"),
    };
    let host = parsed.host_str().context("the URL has no host")?;
    let port = parsed.port().unwrap_or(if secure { 443 } else { 80 });
    let tls = if secure {
        let name = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(name.to_owned())
            .with_context(|| format!("{host} is not a name a certificate can carry"))?;
        Some((TlsConnector::from(tls_config(ca)?), name))
    } else {
        None
    };
    let addr = tokio::net::lookup_host((host.trim_start_matches('[').trim_end_matches(']'), port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    let resource = match parsed.query() {
        Some(query) => format!("{}?{query}", parsed.path()),
        None => parsed.path().to_owned(),
    };
    Ok(Target {
        addr,
        host_header: format!("{host}:{port}"),
        resource,
        tls,
    })
}

/// The TLS client for wss://: the system's roots, and those of `ca` if given.
fn tls_config(ca: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(ca) = ca {
        let certs = CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("cannot read {}", ca.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("{}: not PEM certificates", ca.display()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            bail!("{}: no usable CA certificate", ca.display());
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("cannot set up TLS")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An open connection, past the opening handshake.
pub(crate) struct Connection {
    pub(crate) stream: Io,
    pub(crate) buf: BytesMut,
    pub(crate) deflate: Option<ferrosock::proto::Negotiated>,
}

/// A WebSocket's bytes: its own TCP connection, or a stream of a shared HTTP/2 one.
pub(crate) enum Io {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    H2(H2Io),
}

impl tokio::io::AsyncRead for Io {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(tcp) => std::pin::Pin::new(tcp).poll_read(cx, buf),
            Io::Tls(tls) => std::pin::Pin::new(tls).poll_read(cx, buf),
            Io::H2(h2) => std::pin::Pin::new(h2).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Io {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(tcp) => std::pin::Pin::new(tcp).poll_write(cx, buf),
            Io::Tls(tls) => std::pin::Pin::new(tls).poll_write(cx, buf),
            Io::H2(h2) => std::pin::Pin::new(h2).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(tcp) => std::pin::Pin::new(tcp).poll_flush(cx),
            Io::Tls(tls) => std::pin::Pin::new(tls).poll_flush(cx),
            Io::H2(h2) => std::pin::Pin::new(h2).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(tcp) => std::pin::Pin::new(tcp).poll_shutdown(cx),
            Io::Tls(tls) => std::pin::Pin::new(tls).poll_shutdown(cx),
            Io::H2(h2) => std::pin::Pin::new(h2).poll_shutdown(cx),
        }
    }
}

/// Opens `count` WebSockets: each on a TCP connection of its own, or, with `--http2`, spread
/// over `--http2-connections` HTTP/2 connections. `source(i)` is the address the i-th TCP
/// connection comes from.
async fn open_all(
    args: &BenchArgs,
    target: &Target,
    count: usize,
    batch_size: usize,
    source: impl Fn(usize) -> Option<IpAddr>,
) -> (Vec<Connection>, Vec<String>) {
    let mut connections = Vec::with_capacity(count);
    let mut errors = Vec::new();
    let indices: Vec<usize> = (0..count).collect();
    if args.http2 {
        let mut shared = Vec::new();
        for _ in 0..args.http2_connections {
            match H2Connection::open(target).await {
                Ok(connection) => shared.push(connection),
                Err(err) => errors.push(format!("HTTP/2 connection: {err:#}")),
            }
        }
        if shared.is_empty() {
            return (connections, errors);
        }
        for batch in indices.chunks(batch_size) {
            let opened = join_all(
                batch
                    .iter()
                    .map(|&i| shared[i % shared.len()].websocket(target, args.deflate)),
            )
            .await;
            for result in opened {
                match result {
                    Ok(connection) => connections.push(connection),
                    Err(err) => errors.push(format!("connect: {err:#}")),
                }
            }
        }
        return (connections, errors);
    }
    for batch in indices.chunks(batch_size) {
        let opened = join_all(batch.iter().map(|&i| open(target, source(i), args.deflate))).await;
        for result in opened {
            match result {
                Ok(connection) => connections.push(connection),
                Err(err) => errors.push(format!("connect: {err:#}")),
            }
        }
    }
    (connections, errors)
}

async fn open(
    target: &Target,
    source: Option<IpAddr>,
    deflate: bool,
) -> anyhow::Result<Connection> {
    let tcp = match source {
        Some(ip) => {
            let socket = if target.addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(target.addr).await?
        }
        None => TcpStream::connect(target.addr).await?,
    };
    tcp.set_nodelay(true)?;
    let mut stream = match &target.tls {
        Some((connector, name)) => Io::Tls(Box::new(
            connector
                .connect(name.clone(), tcp)
                .await
                .context("TLS handshake")?,
        )),
        None => Io::Tcp(tcp),
    };
    let settings = if deflate {
        PerMessageDeflate::default()
    } else {
        PerMessageDeflate::disabled()
    };
    let handshake = ClientHandshake::new(rand::random()).offer_deflate(&settings);
    stream
        .write_all(&handshake.request(&target.host_header, &target.resource, &[]))
        .await?;
    // Over TLS, what the socket did not take at once waits in the TLS session until a flush
    // (a no-op on TCP): without it, a request could wait there while both ends wait for
    // each other.
    stream.flush().await?;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if let Some(accepted) = handshake.check_response(&buf)? {
            let _ = buf.split_to(accepted.head_len);
            return Ok(Connection {
                stream,
                buf,
                deflate: accepted.deflate,
            });
        }
        if stream.read_buf(&mut buf).await? == 0 {
            bail!("the server closed the connection during the opening handshake");
        }
    }
}

/// The message every connection sends: JSON-like text (or bytes with --binary), `size` long.
fn payload(size: usize, binary: bool) -> Bytes {
    let unit = br#"{"symbol":"ABC","price":101.25,"volume":1200},"#;
    let mut bytes: Vec<u8> = unit.iter().copied().cycle().take(size).collect();
    if binary {
        for (i, b) in bytes.iter_mut().enumerate() {
            *b ^= (i % 251) as u8;
        }
    }
    bytes.into()
}

async fn load(args: &BenchArgs, target: &Target) -> anyhow::Result<()> {
    let stats = Rc::new(RefCell::new(Stats {
        latency: Some(
            Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
        ),
        ..Stats::default()
    }));
    let start = Rc::new(Notify::new());
    let stop = Rc::new(Cell::new(false));
    let payload = payload(args.size, args.binary);

    // Connect everyone first, a hundred at a time, then start together.
    let (connections, errors) = open_all(args, target, args.connections, 100, |_| None).await;
    for error in errors {
        stats.borrow_mut().error(error);
    }
    if connections.is_empty() {
        bail!(
            "no connection could be opened: {}",
            stats.borrow().first_errors.join("; ")
        );
    }
    let mut tasks = Vec::new();
    for connection in connections {
        let (stats, start, stop, payload) =
            (stats.clone(), start.clone(), stop.clone(), payload.clone());
        let (binary, raw_echo, limit) = (args.binary, args.raw_echo, args.size.max(1 << 20));
        let pipeline = args.pipeline;
        tasks.push(tokio::task::spawn_local(async move {
            start.notified().await;
            if let Err(err) = ping_pong(
                connection, payload, binary, raw_echo, pipeline, limit, &stats, &stop,
            )
            .await
            {
                stats.borrow_mut().error(format!("{err:#}"));
            }
        }));
    }
    // Let every task reach its `notified()` before the start.
    tokio::task::yield_now().await;
    let cpu_before = args.server_pid.map(cpu_ticks).transpose()?;
    let began = Instant::now();
    start.notify_waiters();

    let live = std::io::stderr().is_terminal() && !args.json;
    let mut per_second = Vec::new();
    let mut last = 0;
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let deadline = began + Duration::from_secs_f64(args.duration);
    while Instant::now() < deadline {
        let until = tokio::time::Instant::from_std(deadline);
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::time::sleep_until(until) => break,
        }
        let stats = stats.borrow();
        per_second.push(stats.messages - last);
        last = stats.messages;
        if live {
            let p99 = stats
                .latency
                .as_ref()
                .map_or(0, |h| h.value_at_quantile(0.99));
            eprint!(
                "\r{:>3} s  {:>10} msg/s  p99 {:>8.3} ms  errors {}   ",
                per_second.len(),
                per_second.last().copied().unwrap_or_default(),
                p99 as f64 / 1000.0,
                stats.errors
            );
        }
    }
    stop.set(true);
    let elapsed = began.elapsed().as_secs_f64();
    let cpu_after = args.server_pid.map(cpu_ticks).transpose()?;
    if live {
        eprintln!();
    }
    // Messages completed after the deadline are not counted: stop now.
    let stats = stats.borrow();
    let messages = stats.messages;
    let latency = stats.latency.as_ref().expect("set above");
    let rate = messages as f64 / elapsed;
    let quantile = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    // The server's CPU time per message, in microseconds: what a message costs the server,
    // whoever (client, kernel, other tenants) limits the rate.
    let server_cpu_us = match (cpu_before, cpu_after) {
        (Some(before), Some(after)) if messages > 0 => {
            Some((after - before) as f64 * 1e6 / USER_HZ / messages as f64)
        }
        _ => None,
    };
    for error in &stats.first_errors {
        note(format_args!("ferrosock bench: error: {error}"));
    }
    if args.json {
        let json = serde_json::json!({
            "url": args.url,
            "connections": args.connections,
            "pipeline": args.pipeline,
            "http2_connections": args.http2.then_some(args.http2_connections),
            "size": args.size,
            "binary": args.binary,
            "deflate": args.deflate,
            "duration": elapsed,
            "messages": messages,
            "msgs_per_sec": rate,
            "per_second": per_second,
            "latency_ms": {"p50": quantile(0.5), "p99": quantile(0.99), "p999": quantile(0.999), "max": latency.max() as f64 / 1000.0},
            "errors": stats.errors,
            "server_cpu_us_per_msg": server_cpu_us,
        });
        println!("{json}");
    } else {
        println!(
            "{} connections x {} bytes{}{}{}: {messages} messages in {elapsed:.1} s = {rate:.0} msg/s; \
             latency p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms; errors {}",
            args.connections,
            args.size,
            if args.pipeline > 1 { format!(", {} in flight", args.pipeline) } else { String::new() },
            if args.binary { " binary" } else { "" },
            if args.deflate { " deflate" } else { "" },
            quantile(0.5),
            quantile(0.99),
            quantile(0.999),
            stats.errors
        );
        if let Some(cpu) = server_cpu_us {
            println!("server CPU: {cpu:.2} µs per message");
        }
    }
    for task in tasks {
        task.abort();
    }
    Ok(())
}

/// Messages in flight in fan-out mode: the publisher sends the next when every subscriber
/// has the one this many places back.
const FANOUT_WINDOW: u64 = 4;

/// `target` with `query` added to its resource.
fn with_query(target: &Target, query: &str) -> Target {
    let separator = if target.resource.contains('?') {
        '&'
    } else {
        '?'
    };
    Target {
        addr: target.addr,
        host_header: target.host_header.clone(),
        resource: format!("{}{separator}{query}", target.resource),
        tls: target.tls.clone(),
    }
}

/// Fan-out: `subscribers` connections spread over the nodes receive what one publisher
/// publishes; deliveries per second and publish-to-delivery latency.
async fn fanout(args: &BenchArgs, first: Target, subscribers: usize) -> anyhow::Result<()> {
    let topic = format!("bench-{:08x}", rand::random::<u32>());
    let mut nodes = vec![first];
    for url in &args.nodes {
        nodes.push(target(url, args.ca.as_deref()).await?);
    }
    let stats = Rc::new(RefCell::new(Stats {
        latency: Some(
            Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
        ),
        ..Stats::default()
    }));
    // Per message: when it was published, and how many subscribers have it.
    let sent_at: Rc<RefCell<Vec<Instant>>> = Rc::default();
    let received: Rc<RefCell<Vec<usize>>> = Rc::default();
    let progress = Rc::new(Notify::new());

    let subscribe: Vec<Target> = nodes
        .iter()
        .map(|node| with_query(node, &format!("subscribe={topic}")))
        .collect();
    let mut connections = Vec::with_capacity(subscribers);
    for batch in (0..subscribers).collect::<Vec<_>>().chunks(100) {
        let opened = join_all(
            batch
                .iter()
                .map(|i| open(&subscribe[i % subscribe.len()], None, false)),
        )
        .await;
        for result in opened {
            match result {
                Ok(connection) => connections.push(connection),
                Err(err) => stats.borrow_mut().error(format!("subscriber: {err:#}")),
            }
        }
    }
    if connections.len() < subscribers {
        bail!(
            "only {} of {subscribers} subscribers could connect: {}",
            connections.len(),
            stats.borrow().first_errors.join("; ")
        );
    }
    let mut tasks = Vec::new();
    for mut connection in connections {
        let (stats, sent_at, received, progress) = (
            stats.clone(),
            sent_at.clone(),
            received.clone(),
            progress.clone(),
        );
        tasks.push(tokio::task::spawn_local(async move {
            let mut decoder = Decoder::new(DecoderConfig {
                role: Role::Client,
                max_frame_size: 1 << 30,
                max_message_size: 1 << 30,
            });
            loop {
                let decoded = match decoder.decode(&mut connection.buf) {
                    Ok(Some(decoded)) => decoded,
                    Ok(None) => {
                        connection.buf.reserve(16 << 10);
                        match connection.stream.read_buf(&mut connection.buf).await {
                            Ok(0) | Err(_) => {
                                stats
                                    .borrow_mut()
                                    .error("a subscriber was disconnected".into());
                                return;
                            }
                            Ok(_) => continue,
                        }
                    }
                    Err(err) => {
                        stats.borrow_mut().error(format!("subscriber: {err}"));
                        return;
                    }
                };
                let data = match &decoded {
                    Decoded::Text(text) => text.as_bytes(),
                    Decoded::Binary(data) => &data[..],
                    _ => continue,
                };
                let Some(seq) = std::str::from_utf8(&data[..data.len().min(20)])
                    .ok()
                    .and_then(|head| head.split(' ').next()?.parse::<usize>().ok())
                else {
                    continue;
                };
                let at = sent_at.borrow().get(seq).copied();
                if let Some(at) = at {
                    let mut stats = stats.borrow_mut();
                    stats.messages += 1;
                    if let Some(latency) = stats.latency.as_mut() {
                        let _ = latency.record(at.elapsed().as_micros().max(1) as u64);
                    }
                }
                if let Some(count) = received.borrow_mut().get_mut(seq) {
                    *count += 1;
                }
                progress.notify_one();
            }
        }));
    }
    // Subscriptions happen in on_open, and reach other nodes through the broker: give them a
    // moment, then check that a first message reaches everyone before measuring.
    let publish = with_query(&nodes[0], &format!("publish={topic}"));
    let mut publisher = open(&publish, None, false).await?;
    let filler = payload(args.size, false);
    let message = |seq: usize| -> Vec<u8> {
        let mut text = format!("{seq} ").into_bytes();
        text.extend_from_slice(&filler[..args.size.saturating_sub(text.len())]);
        let frame = OutFrame::new(Role::Client, OpCode::Text, text.into(), rand::random);
        [frame.head(), &frame.payload()[..]].concat()
    };
    let everyone = |seq: usize| received.borrow().get(seq).copied().unwrap_or(0) >= subscribers;
    // Warm-up: message 0 until everyone has one (subscriptions settle), not measured.
    let warm = Instant::now();
    loop {
        let seq = sent_at.borrow().len();
        sent_at.borrow_mut().push(Instant::now());
        received.borrow_mut().push(0);
        publisher.stream.write_all(&message(seq)).await?;
        publisher.stream.flush().await?;
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while !everyone(seq) {
                progress.notified().await;
            }
        })
        .await;
        if everyone(seq) {
            break;
        }
        if warm.elapsed() > Duration::from_secs(15) {
            bail!(
                "after 15 s, {} of {subscribers} subscribers get the messages",
                received.borrow()[seq]
            );
        }
    }
    {
        let mut stats = stats.borrow_mut();
        stats.messages = 0;
        stats.latency.as_mut().expect("set above").reset();
    }
    let first = sent_at.borrow().len();
    let began = Instant::now();
    let deadline = began + Duration::from_secs_f64(args.duration);
    let mut seq = first;
    while Instant::now() < deadline {
        // Up to FANOUT_WINDOW messages in flight.
        if seq >= first + FANOUT_WINDOW as usize {
            let waited = tokio::time::timeout(Duration::from_secs(10), async {
                while !everyone(seq - FANOUT_WINDOW as usize) {
                    progress.notified().await;
                }
            })
            .await;
            if waited.is_err() {
                bail!(
                    "message {} reached only {} of {subscribers} subscribers in 10 s",
                    seq - FANOUT_WINDOW as usize,
                    received.borrow()[seq - FANOUT_WINDOW as usize]
                );
            }
        }
        sent_at.borrow_mut().push(Instant::now());
        received.borrow_mut().push(0);
        publisher.stream.write_all(&message(seq)).await?;
        publisher.stream.flush().await?;
        seq += 1;
    }
    let elapsed = began.elapsed().as_secs_f64();
    let stats = stats.borrow();
    let latency = stats.latency.as_ref().expect("set above");
    let quantile = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let rate = stats.messages as f64 / elapsed;
    let published = seq - first;
    if args.json {
        let json = serde_json::json!({
            "url": args.url,
            "nodes": nodes.len(),
            "subscribers": subscribers,
            "size": args.size,
            "duration": elapsed,
            "published": published,
            "deliveries": stats.messages,
            "deliveries_per_sec": rate,
            "latency_ms": {"p50": quantile(0.5), "p99": quantile(0.99), "p999": quantile(0.999), "max": latency.max() as f64 / 1000.0},
            "errors": stats.errors,
        });
        println!("{json}");
    } else {
        println!(
            "{subscribers} subscribers on {} node(s), {} bytes: {published} messages published, \
             {} deliveries in {elapsed:.1} s = {rate:.0} deliveries/s; latency p50 {:.3} ms, \
             p99 {:.3} ms; errors {}",
            nodes.len(),
            args.size,
            stats.messages,
            quantile(0.5),
            quantile(0.99),
            stats.errors
        );
    }
    for task in tasks {
        task.abort();
    }
    Ok(())
}

/// One connection's loop: send, wait for the echo, record, again.
/// Sends `pipeline` messages at a time on one connection and reads their echoes, until `stop`.
#[allow(clippy::too_many_arguments)]
async fn ping_pong(
    mut connection: Connection,
    payload: Bytes,
    binary: bool,
    raw_echo: bool,
    pipeline: usize,
    limit: usize,
    stats: &RefCell<Stats>,
    stop: &Cell<bool>,
) -> anyhow::Result<()> {
    let opcode = if binary { OpCode::Binary } else { OpCode::Text };
    let key: [u8; 4] = rand::random();
    let frame = match connection.deflate {
        // Without context takeover (ferrosock's defaults, required here), the same compressed
        // payload is valid for every message.
        Some(agreed) if agreed.compress_reset && agreed.compress_window_bits >= 9 => {
            let compressed =
                Deflater::new(agreed.compress_window_bits, true, 6, 5).compress(&payload);
            OutFrame::compressed(Role::Client, opcode, compressed, || key)
        }
        _ => OutFrame::new(Role::Client, opcode, payload.clone(), || key),
    };
    let wire: Bytes = [frame.head(), &frame.payload()[..]].concat().into();
    // A batch of `pipeline` frames, written at once.
    let batch: Bytes = wire.repeat(pipeline).into();
    let mut decoder = Decoder::new(DecoderConfig {
        role: Role::Client,
        max_frame_size: limit,
        max_message_size: limit,
    });
    if let Some(agreed) = connection.deflate {
        decoder.set_inflater(Inflater::new(
            agreed.decompress_window_bits,
            agreed.decompress_reset,
        ));
    }
    let stream = &mut connection.stream;
    let buf = &mut connection.buf;
    while !stop.get() {
        let sent = Instant::now();
        stream.write_all(&batch).await?;
        stream.flush().await?;
        if raw_echo {
            // The raw TCP echo returns exactly the bytes sent.
            while buf.len() < batch.len() {
                if stream.read_buf(buf).await? == 0 {
                    bail!("the server closed the connection");
                }
            }
            let echo = buf.split_to(batch.len());
            if echo[..] != batch[..] {
                bail!("the raw echo differs from what was sent");
            }
        } else {
            for _ in 0..pipeline {
                let len = loop {
                    match decoder.decode(buf)? {
                        Some(Decoded::Text(text)) => break text.len(),
                        Some(Decoded::Binary(data)) => break data.len(),
                        Some(Decoded::Close(frame)) => bail!("closed by the server: {frame:?}"),
                        Some(Decoded::Ping(_) | Decoded::Pong(_)) => {}
                        None => {
                            buf.reserve(64 * 1024);
                            if stream.read_buf(buf).await? == 0 {
                                bail!("the server closed the connection");
                            }
                        }
                    }
                };
                if len != payload.len() {
                    bail!("an echo of {len} bytes for {} sent", payload.len());
                }
            }
        }
        if stop.get() {
            break;
        }
        let micros = sent.elapsed().as_micros().max(1) as u64;
        let mut stats = stats.borrow_mut();
        stats.messages += pipeline as u64;
        if let Some(histogram) = stats.latency.as_mut() {
            // Saturates at the histogram's 60 s bound; one sample per message of the batch.
            let _ = histogram.record_n(micros.min(60_000_000), pipeline as u64);
        }
    }
    Ok(())
}

/// Opens `count` connections and keeps them idle for the duration; with `--server-pid`, reports
/// the server's resident memory per connection.
async fn idle(args: &BenchArgs, target: &Target, count: usize) -> anyhow::Result<()> {
    let rss_before = args.server_pid.map(resident_kib).transpose()?;
    // Loopback has 127.0.0.0/8: spread connections over several source addresses so that the
    // ephemeral ports of one address (about 28 000) never run short.
    let spread = target.addr.ip().is_loopback() && target.addr.is_ipv4();
    let (connections, errors) = open_all(args, target, count, 200, |i| {
        spread.then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % 16) as u8)))
    })
    .await;
    let opened = connections.len();
    // Let the server settle (its tasks run on_open, buffers are released).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = args.server_pid.map(resident_kib).transpose()?;
    let per_connection = match (rss_before, rss_after) {
        (Some(before), Some(after)) if opened > 0 => {
            Some((after.saturating_sub(before)) as f64 * 1024.0 / opened as f64)
        }
        _ => None,
    };
    if args.json {
        let json = serde_json::json!({
            "url": args.url,
            "idle": count,
            "http2_connections": args.http2.then_some(args.http2_connections),
            "opened": opened,
            "errors": errors.len(),
            "server_rss_kib_before": rss_before,
            "server_rss_kib_after": rss_after,
            "server_bytes_per_connection": per_connection,
        });
        println!("{json}");
    } else {
        match per_connection {
            Some(bytes) => println!(
                "{opened} idle connections open ({} failed); server resident memory {} KiB -> {} KiB: {bytes:.0} bytes per connection",
                errors.len(),
                rss_before.unwrap_or_default(),
                rss_after.unwrap_or_default()
            ),
            None => println!("{opened} idle connections open ({} failed)", errors.len()),
        }
    }
    for error in errors.iter().take(5) {
        note(format_args!("ferrosock bench: error: {error}"));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    drop(connections);
    Ok(())
}

/// Clock ticks per second in /proc/PID/stat: USER_HZ, 100 on every Linux architecture
/// (it is part of the kernel's ABI, unlike the kernel's internal HZ).
const USER_HZ: f64 = 100.0;

/// A process's CPU time so far (user + system, every thread), in clock ticks, from
/// /proc/PID/stat (Linux).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read the CPU time of process {pid}"))?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // Fields 14 (utime) and 15 (stime); `fields[0]` is field 3.
    let tick = |index: usize| fields.get(index).and_then(|v| v.parse::<u64>().ok());
    match (tick(11), tick(12)) {
        (Some(user), Some(system)) => Ok(user + system),
        _ => bail!("unreadable /proc/{pid}/stat"),
    }
}

/// A process's resident memory, from /proc (Linux).
fn resident_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read the memory of process {pid}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS for process {pid}"))
}
