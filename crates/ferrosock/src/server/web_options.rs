//! [`WebServerOptions`]: what a [`WebServer`](super::WebServer) starts with, and the
//! [`TlsFiles`] of an HTTPS one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;

use super::upgrade::defaults;
#[cfg(doc)]
use super::WebServer;

/// Options of a [`WebServer`].
///
/// ```
/// use ferrosock::WebServerOptions;
/// let options = WebServerOptions::default()
///     .listen("0.0.0.0:8080")
///     .static_dir("public")
///     .asset("/", "text/html; charset=utf-8", &b"<h1>hello</h1>"[..]);
/// assert_eq!(options.listen, "0.0.0.0:8080");
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WebServerOptions {
    /// The address to listen on, `host:port`; port 0 picks a free port (see
    /// [`WebServer::local_addr`]). Default: `127.0.0.1:8080`.
    pub listen: String,
    /// A folder whose files are served for GET and HEAD requests (`index.html` for a folder).
    /// Paths cannot leave it. Default: none.
    pub static_dir: Option<PathBuf>,
    /// How long a client may take to send a complete request head (an upgrade or any other
    /// request); slower ones are disconnected. Also the TLS handshake's limit, and how long an
    /// HTTP/2 connection may stay without a stream before it gets GOAWAY. Default: 10 s.
    pub handshake_timeout: Duration,
    /// How long [`WebServer::stop`] lets WebSocket close handshakes and in-flight HTTP requests
    /// run before closing what is left. Default: 10 s.
    pub shutdown_timeout: Duration,
    /// The most header fields an HTTP/1.1 request may have; more get HTTP 431 (HTTP/2 header
    /// lists are bounded by [`max_request_head_size`](Self::max_request_head_size)).
    /// Default: 100.
    pub max_request_headers: usize,
    /// The most bytes a request head (request line and headers; over HTTP/2, the header list,
    /// `SETTINGS_MAX_HEADER_LIST_SIZE`) may take; more get HTTP 431.
    /// At least 8 KiB. Default: 32 KiB (browsers send a few KiB, cookies included).
    pub max_request_head_size: usize,
    /// Serve HTTPS (and `wss://`) with this PEM certificate chain and PEM private key, instead of
    /// plain HTTP. Default: none.
    pub tls: Option<TlsFiles>,
    pub(super) assets: HashMap<String, Asset>,
    /// Speak HTTP/2 beside HTTP/1.1 on the same port: by ALPN (`h2`) over TLS, by prior
    /// knowledge (the client's connection preface) in plain text. WebSockets then open as
    /// extended CONNECT streams (RFC 8441; `SETTINGS_ENABLE_CONNECT_PROTOCOL` is advertised).
    /// Default: `true`.
    pub http2: bool,
    /// The most streams one HTTP/2 connection may have open at once — WebSockets and
    /// requests — advertised as `SETTINGS_MAX_CONCURRENT_STREAMS`; a client that opens more
    /// gets `RST_STREAM(REFUSED_STREAM)`. Default: 128.
    pub http2_max_streams: u32,
    /// The flow-control window of each HTTP/2 stream, in bytes: how much a peer may send on
    /// one WebSocket before the server has read it. The connection's window is this times
    /// [`http2_max_streams`](Self::http2_max_streams) (at most 2³¹ − 1), so that one stream
    /// the application does not read cannot stall the others. Default: 256 KiB.
    pub http2_stream_window: u32,
    /// How many WebSockets one HTTP/2 connection may open per second, after a burst of
    /// [`http2_max_streams`](Self::http2_max_streams): beyond it, extended CONNECTs get 429
    /// without reaching `on_connection`. A client that opens and resets streams in a loop
    /// (Rapid Reset, CVE-2023-44487) cannot make the server run `on_connection` faster.
    /// Default: 100.
    pub http2_websockets_per_second: u32,
    /// Thread-per-core mode: serve on this many threads of the server's own, each running a
    /// tokio current-thread runtime with a listening socket of its own on the same address
    /// (`SO_REUSEPORT`: the kernel spreads new connections over them). A connection stays on
    /// the thread that accepted it for its whole life, so its reads, callbacks and writes
    /// never cross threads. [`publish`](crate::WebSocketServer::publish),
    /// [`broadcast`](crate::WebSocketServer::broadcast) and handles used from other threads
    /// keep working. The threads run until [`WebServer::stop`].
    ///
    /// `None`: every connection runs on the tokio runtime that called
    /// [`WebServer::start`], whatever its kind (work-stealing on a multi-thread runtime).
    /// Handlers with [`blocking_callbacks`](crate::ServerOptions::blocking_callbacks) work in
    /// both modes. Default: `None`.
    pub threads: Option<usize>,
}

/// A certificate chain and its private key, both PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert_chain: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Clone, Debug)]
pub(super) struct Asset {
    pub(super) content_type: HeaderValue,
    pub(super) body: Bytes,
}

impl Default for WebServerOptions {
    fn default() -> WebServerOptions {
        WebServerOptions {
            listen: "127.0.0.1:8080".to_owned(),
            static_dir: None,
            handshake_timeout: defaults::HANDSHAKE_TIMEOUT,
            shutdown_timeout: Duration::from_secs(10),
            max_request_headers: defaults::MAX_REQUEST_HEADERS,
            max_request_head_size: defaults::MAX_REQUEST_HEAD_SIZE,
            tls: None,
            assets: HashMap::new(),
            http2: true,
            http2_max_streams: 128,
            http2_stream_window: 256 << 10,
            http2_websockets_per_second: 100,
            threads: None,
        }
    }
}

impl WebServerOptions {
    /// Sets [`WebServerOptions::listen`].
    pub fn listen(mut self, addr: impl Into<String>) -> WebServerOptions {
        self.listen = addr.into();
        self
    }

    /// Sets [`WebServerOptions::static_dir`].
    pub fn static_dir(mut self, dir: impl Into<PathBuf>) -> WebServerOptions {
        self.static_dir = Some(dir.into());
        self
    }

    /// Sets [`WebServerOptions::handshake_timeout`].
    pub fn handshake_timeout(mut self, timeout: Duration) -> WebServerOptions {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets [`WebServerOptions::max_request_headers`].
    pub fn max_request_headers(mut self, max: usize) -> WebServerOptions {
        self.max_request_headers = max;
        self
    }

    /// Sets [`WebServerOptions::max_request_head_size`] (at least 8 KiB, checked by
    /// [`WebServer::start`]).
    pub fn max_request_head_size(mut self, max: usize) -> WebServerOptions {
        self.max_request_head_size = max;
        self
    }

    /// Sets [`WebServerOptions::http2`].
    pub fn http2(mut self, enabled: bool) -> WebServerOptions {
        self.http2 = enabled;
        self
    }

    /// Sets [`WebServerOptions::http2_max_streams`].
    pub fn http2_max_streams(mut self, max: u32) -> WebServerOptions {
        self.http2_max_streams = max;
        self
    }

    /// Sets [`WebServerOptions::http2_stream_window`].
    pub fn http2_stream_window(mut self, bytes: u32) -> WebServerOptions {
        self.http2_stream_window = bytes;
        self
    }

    /// Sets [`WebServerOptions::http2_websockets_per_second`].
    pub fn http2_websockets_per_second(mut self, rate: u32) -> WebServerOptions {
        self.http2_websockets_per_second = rate;
        self
    }

    /// Sets [`WebServerOptions::threads`]: serve on `n` threads of the server's own, one
    /// connection per thread for life (thread-per-core). `n` must be at least 1
    /// ([`WebServer::start`] checks it); [`std::thread::available_parallelism`] is the usual
    /// choice.
    ///
    /// ```
    /// use ferrosock::WebServerOptions;
    /// let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    /// let options = WebServerOptions::default().threads(cores);
    /// assert_eq!(options.threads, Some(cores));
    /// ```
    pub fn threads(mut self, n: usize) -> WebServerOptions {
        self.threads = Some(n);
        self
    }

    /// Sets [`WebServerOptions::shutdown_timeout`].
    pub fn shutdown_timeout(mut self, timeout: Duration) -> WebServerOptions {
        self.shutdown_timeout = timeout;
        self
    }

    /// Sets [`WebServerOptions::tls`]: serve HTTPS and `wss://` with this certificate chain and
    /// key (PEM files, read when the server starts).
    pub fn tls(
        mut self,
        cert_chain: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> WebServerOptions {
        self.tls = Some(TlsFiles {
            cert_chain: cert_chain.into(),
            key: key.into(),
        });
        self
    }

    /// Serves `body` at `path` (GET and HEAD), for pages built into the program. A file of
    /// the static folder at the same path wins.
    ///
    /// # Panics
    /// If `content_type` is not a valid header value.
    pub fn asset(
        mut self,
        path: impl Into<String>,
        content_type: &str,
        body: impl Into<Bytes>,
    ) -> WebServerOptions {
        let content_type = HeaderValue::from_str(content_type).expect("a valid content type");
        let asset = Asset {
            content_type,
            body: body.into(),
        };
        self.assets.insert(path.into(), asset);
        self
    }
}
