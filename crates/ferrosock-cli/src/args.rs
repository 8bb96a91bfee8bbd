//! Command-line arguments.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ferrosock::PerMessageDeflate;

/// A WebSocket server and client.
#[derive(Debug, Parser)]
#[command(name = "ferrosock", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Web server with the demo page at / and the WebSocket endpoints /echo, /uppercase, /chat.
    Serve(ServeArgs),
    /// Bare WebSocket echo server on every path (text stays text, binary stays binary).
    Echo(EchoArgs),
    /// Terminal client: sends each line of stdin, prints each message received on a line.
    Connect(ConnectArgs),
    /// Load generator: N connections each send a message and the next as soon as its echo is
    /// back; reports messages per second and latency percentiles.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// An echo server: ws://HOST:PORT/PATH, or wss:// (TLS; see --ca).
    #[arg(value_name = "URL")]
    pub url: String,
    /// Connections, each with one message in flight.
    #[arg(long, short = 'c', value_name = "N", default_value_t = 100, value_parser = positive)]
    pub connections: usize,
    /// Payload bytes per message.
    #[arg(long, short = 's', value_name = "BYTES", default_value_t = 20)]
    pub size: usize,
    /// How long to send, in seconds.
    #[arg(long, short = 'd', value_name = "SECS", default_value_t = 10.0, value_parser = seconds)]
    pub duration: f64,
    /// Offer permessage-deflate (without context takeover) and send compressed messages.
    #[arg(long)]
    pub deflate: bool,
    /// Binary messages instead of text.
    #[arg(long)]
    pub binary: bool,
    /// Messages in flight per connection: each connection sends this many at once (one
    /// write) and the next batch once every echo of this one is back (HttpArena's
    /// echo-ws-pipeline). Latency is the batch's round trip.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = positive, conflicts_with_all = ["fanout", "idle"])]
    pub pipeline: usize,
    /// WebSockets over HTTP/2 (RFC 8441, by prior knowledge on ws://): the connections (or
    /// --idle ones) are streams spread over --http2-connections HTTP/2 connections.
    #[arg(long, conflicts_with_all = ["fanout", "raw_echo"])]
    pub http2: bool,
    /// With a wss:// URL: trust the CA certificates of this PEM file (besides the system's).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// With --http2: how many HTTP/2 connections carry the WebSockets.
    #[arg(long, value_name = "M", default_value_t = 1, value_parser = positive, requires = "http2")]
    pub http2_connections: usize,
    /// Print the result as one JSON object (and no progress line).
    #[arg(long)]
    pub json: bool,
    /// The server returns the raw bytes sent (bench-server raw), not WebSocket frames.
    #[arg(long)]
    pub raw_echo: bool,
    /// Instead of echo load: fan-out. N subscribers connect to URL (a `ferrosock serve`
    /// /pubsub endpoint) and to each --node, spread evenly; one publisher on URL publishes
    /// messages of --size bytes, up to 4 in flight, each counted once every subscriber got it.
    /// Reports deliveries per second and the publish-to-delivery latency.
    #[arg(long, value_name = "N", value_parser = positive, conflicts_with = "idle")]
    pub fanout: Option<usize>,
    /// With --fanout: another node's /pubsub URL (repeatable); subscribers are spread over URL
    /// and these.
    #[arg(long = "node", value_name = "URL", requires = "fanout")]
    pub nodes: Vec<String>,
    /// Instead of load: open N idle connections and hold them for the duration.
    #[arg(long, value_name = "N", value_parser = positive)]
    pub idle: Option<usize>,
    /// The server's process id (Linux, same machine): under load, report the server's CPU
    /// time per message; with --idle, its resident memory per connection.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The server: ws://HOST:PORT/PATH?QUERY or wss://... (the port and query are optional).
    #[arg(value_name = "URL")]
    pub url: String,
    /// An extra request header, 'Name: value' (repeat for more; a repeated name is sent once
    /// per value).
    #[arg(long = "header", short = 'H', value_name = "'NAME: VALUE'", value_parser = header)]
    pub headers: Vec<(String, String)>,
    /// Trust the CA certificates of this PEM file (besides the system's) for wss://.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Offer this subprotocol (repeat for more, in order of preference); the one the server
    /// agrees to is printed on stderr.
    #[arg(long = "protocol", value_name = "NAME", value_parser = token)]
    pub protocols: Vec<String>,
    /// Connect through this proxy: http://[USER:PASS@]HOST:PORT (HTTP CONNECT), https://...
    /// (TLS to the proxy), socks5://... (names resolved here) or socks5h://... (by the proxy).
    /// Without it, HTTPS_PROXY (wss://), HTTP_PROXY (ws://), ALL_PROXY and NO_PROXY are read
    /// as curl and Python read them.
    #[arg(long, value_name = "URL", value_parser = proxy, conflicts_with = "no_proxy")]
    pub proxy: Option<String>,
    /// Connect directly, ignoring the proxy environment variables.
    #[arg(long)]
    pub no_proxy: bool,
    /// Ask for HTTP/2 (RFC 8441): ALPN h2 for wss://, prior knowledge for ws://; HTTP/1.1 when
    /// the server does not take WebSockets over HTTP/2.
    #[arg(long)]
    pub http2: bool,
    /// When the connection is lost (1006, 1001, 1011, 1012, 1013, or an attempt that failed
    /// to connect), connect again with exponential backoff (0.5 s doubling to 30 s, with
    /// jitter), until stdin ends or the server closes normally.
    #[arg(long)]
    pub reconnect: bool,
    /// With --reconnect: give up after this many failed attempts in a row.
    #[arg(long, value_name = "N", requires = "reconnect", value_parser = positive_u32)]
    pub max_attempts: Option<u32>,
    /// Send each line as a binary message instead of a text one.
    #[arg(long)]
    pub binary: bool,
    /// Give up connecting after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Do not offer permessage-deflate compression.
    #[arg(long)]
    pub no_deflate: bool,
    /// Largest message accepted from the server, in bytes (decompressed); a larger one closes
    /// the connection with 1009.
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20, value_parser = positive)]
    pub max_message_size: usize,
    /// When stdin ends, keep printing what the server sends until it closes or stays silent
    /// for this many seconds, then close. A piped run thus prints the replies to its last
    /// lines, which a server may still be sending when the input ends. (A server that never
    /// falls silent keeps the connection open until it closes or the command is interrupted.)
    #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = seconds)]
    pub quiet_period: f64,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (host:port; port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Serve the files of this folder (index.html for folders); the demo page stays at / unless
    /// the folder has an index.html.
    #[arg(long = "static", value_name = "DIR")]
    pub static_dir: Option<PathBuf>,
    /// Make /chat and /pubsub span every node that uses this broker: redis://HOST:PORT or
    /// nats://HOST:PORT.
    #[arg(long, value_name = "URL", value_parser = broker)]
    pub broker: Option<String>,
}

#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Address to listen on (host:port; port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9001")]
    pub listen: String,
    /// On compressed connections: auto (from the threshold, and only when it shrinks the
    /// message), always (every echo compressed, for conformance runs), never.
    #[arg(long, value_name = "WHEN", default_value = "auto", value_parser = compress)]
    pub compress: ferrosock::Compress,
    /// A subprotocol this server speaks (repeat for more): the first of a client's offers,
    /// in the client's order, that is listed here is agreed; no match means none.
    #[arg(long = "protocol", value_name = "NAME", value_parser = token)]
    pub protocols: Vec<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Options every server command takes.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Serve https:// and wss:// with this PEM certificate chain (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Most WebSocket connections open at once per endpoint; more get HTTP 503.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = positive)]
    pub max_connections: usize,
    /// Largest message (and frame) accepted, in bytes (decompressed); larger ones close the
    /// connection with 1009. 16 MiB: the conformance suite's largest messages.
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20, value_parser = positive)]
    pub max_message_size: usize,
    /// Bytes of outgoing messages a client may leave unread (each message counted with its
    /// place in the queue); a message over it closes that client with 1008, so a slow or
    /// stalled reader cannot hold the server's memory. One message always goes on an empty
    /// queue.
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20, value_parser = positive)]
    pub max_outgoing_bytes: usize,
    /// Bytes of outgoing messages the whole process may hold unread. When it is reached, the
    /// clients that hold more than their share of it are closed with 1008 as their next
    /// message comes; clients that keep up are not affected.
    #[arg(long, value_name = "BYTES", default_value_t = ferrosock::memory::DEFAULT_MAX_QUEUED_BYTES, value_parser = positive)]
    pub max_outgoing_total: usize,
    /// Seconds a client may take to send its request head; slower ones are dropped.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = seconds)]
    pub handshake_timeout: f64,
    /// Seconds of silence from a client before the server pings it.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = seconds)]
    pub keepalive: f64,
    /// Seconds of silence (pongs included) after which a client is taken for gone (close 1006).
    #[arg(long, value_name = "SECS", default_value_t = 60.0, value_parser = seconds)]
    pub idle_timeout: f64,
    /// On SIGTERM or SIGINT: seconds the clients get to answer the close 1001 before the
    /// server drops what is left and exits.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = seconds)]
    pub shutdown_timeout: f64,
    /// Accept browsers only from pages of this origin, e.g. `https://example.com` (repeat
    /// for more; `https://*.example.com` for subdomains). Others get 403; clients that send
    /// no Origin (not browsers) are accepted. Default: every origin.
    #[arg(long = "allowed-origin", value_name = "ORIGIN", value_parser = origin)]
    pub allowed_origins: Vec<String>,
    /// Threads serving connections, each with a listening socket of its own on the address
    /// (SO_REUSEPORT); a connection stays on the thread that accepted it. Default: one per
    /// core.
    #[arg(long, value_name = "N", value_parser = positive)]
    pub threads: Option<usize>,
    /// Decline permessage-deflate compression (accepted by default).
    #[arg(long)]
    pub no_deflate: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics and a live status page at
    /// http://ADDR/status, on a listener of their own (host:port; port 0 picks a free one).
    /// Off by default: nothing about the server is shown on its public port.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Log lines as text, or as JSON objects one per line (with one line per WebSocket
    /// opened and closed: id, endpoint, remote address, close code, duration, messages and
    /// bytes each way). RUST_LOG filters as usual.
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Messages shorter than this are sent uncompressed on compressed connections.
    #[arg(long, value_name = "BYTES", default_value_t = PerMessageDeflate::default().threshold)]
    pub deflate_threshold: usize,
}

fn compress(value: &str) -> Result<ferrosock::Compress, String> {
    match value {
        "auto" => Ok(ferrosock::Compress::Auto),
        "always" => Ok(ferrosock::Compress::Always),
        "never" => Ok(ferrosock::Compress::Never),
        _ => Err("expected auto, always or never".to_owned()),
    }
}

fn origin(value: &str) -> Result<String, String> {
    if value == "null" {
        return Ok(value.to_owned());
    }
    let probe = value.replacen("://*.", "://x.", 1);
    match url::Url::parse(&probe) {
        Ok(url)
            if matches!(url.scheme(), "http" | "https")
                && url.host_str().is_some()
                && matches!(url.path(), "" | "/")
                && url.query().is_none() =>
        {
            Ok(value.trim_end_matches('/').to_owned())
        }
        _ => Err(
            "expected an origin such as https://example.com or https://*.example.com".to_owned(),
        ),
    }
}

fn broker(value: &str) -> Result<String, String> {
    let scheme = value.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some("redis" | "rediss" | "nats" | "tls") => Ok(value.to_owned()),
        _ => Err("expected redis://HOST:PORT or nats://HOST:PORT".to_owned()),
    }
}

fn token(value: &str) -> Result<String, String> {
    if ferrosock::proto::handshake::is_token(value.as_bytes()) {
        Ok(value.to_owned())
    } else {
        Err("a subprotocol must be an HTTP token: letters, digits and !#$%&'*+-.^_`|~".to_owned())
    }
}

fn header(value: &str) -> Result<(String, String), String> {
    match value.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err("expected 'Name: value'".to_owned()),
    }
}

fn seconds(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(secs)
            if secs.is_finite()
                && secs > 0.0
                && std::time::Duration::try_from_secs_f64(secs).is_ok() =>
        {
            Ok(secs)
        }
        Ok(_) => Err("must be a positive number of seconds".to_owned()),
        Err(err) => Err(err.to_string()),
    }
}

fn proxy(value: &str) -> Result<String, String> {
    ferrosock::Proxy::parse(value)
        .map(|_| value.to_owned())
        .map_err(|err| err.to_string())
}

fn positive_u32(value: &str) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(err) => Err(err.to_string()),
    }
}

fn positive(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(err) => Err(err.to_string()),
    }
}

/// Prints a usage error on one line (help and version in full) and picks the exit code.
/// `text` with the `user:password@` of every URL in it hidden: clap repeats an invalid value,
/// and a proxy URL's credentials must not reach a terminal or a log.
fn without_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme_end) = rest.find("://") {
        let (head, tail) = rest.split_at(scheme_end + 3);
        out.push_str(head);
        // The URL's authority ends at the first '/', quote or space.
        let authority_end = tail
            .find(|c: char| c == '/' || c == '\'' || c == '"' || c.is_whitespace())
            .unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(at) => {
                out.push_str("<credentials>");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

pub fn report_usage_error(err: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            let rendered = err.to_string();
            let mut lines = rendered.lines();
            let first = lines.next().unwrap_or("invalid arguments");
            let mut first = first.strip_prefix("error: ").unwrap_or(first).to_owned();
            // "the following required arguments were not provided:" lists them on the next
            // lines, indented.
            if first.ends_with(':') {
                let listed: Vec<&str> = lines
                    .take_while(|line| line.starts_with("  "))
                    .map(str::trim)
                    .collect();
                first = format!("{first} {}", listed.join(", "));
            }
            let first = without_credentials(&first);
            crate::note(format_args!("ferrosock: {first} (see ferrosock --help)"));
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_hide_credentials() {
        assert_eq!(
            without_credentials("invalid value 'ftp://u:secret@proxy:21' for '--proxy <URL>': x"),
            "invalid value 'ftp://<credentials>@proxy:21' for '--proxy <URL>': x"
        );
        assert_eq!(
            without_credentials("a http://h/p@x and socks5://a@b c"),
            "a http://h/p@x and socks5://<credentials>@b c"
        );
        assert_eq!(without_credentials("no url"), "no url");
    }
}
