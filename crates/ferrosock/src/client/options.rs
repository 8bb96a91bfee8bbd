//! `ClientOptions`: everything about a client socket but its handler.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::proxy::{Proxy, ProxySetting};
use super::reconnect::Reconnect;
use crate::error::Error;
use crate::limits::Limits;
use crate::proto::deflate::PerMessageDeflate;

/// Options of a client socket, beyond its handler.
///
/// ```no_run
/// # fn options() -> Result<(), ferrosock::Error> {
/// use std::time::Duration;
/// use ferrosock::ClientOptions;
/// let options = ClientOptions::default()
///     .connect_timeout(Duration::from_secs(3))
///     .ca_file("private-ca.pem")?; // trust a private CA besides the system's roots
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientOptions {
    /// The most time from `new`/`connect` to the end of the opening handshake (DNS, TCP, TLS
    /// and HTTP included). Default: 10 s.
    pub connect_timeout: Duration,
    /// Per-connection limits, as for a server connection. Default: [`Limits::default()`].
    pub limits: Limits,
    /// The TLS configuration for `wss://`. `None`: the system's root certificates.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// permessage-deflate: offered by default. Default: [`PerMessageDeflate::default()`].
    pub deflate: PerMessageDeflate,
    /// The subprotocols offered (`Sec-WebSocket-Protocol`), in order of preference; each must
    /// be an HTTP token. The server chooses one or none ([`WebSocket::protocol`](crate::WebSocket::protocol)).
    /// Default: none.
    pub protocols: Vec<String>,
    /// The proxy connections go through. Default: [`ProxySetting::Environment`], the
    /// `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` / `NO_PROXY` variables as curl and Python read
    /// them (see [`ProxySetting::Environment`]).
    pub proxy: ProxySetting,
    /// Ask for HTTP/2 (RFC 8441): `wss://` offers `h2` by ALPN, `ws://` tries HTTP/2 by prior
    /// knowledge. The client waits for the server's SETTINGS, and uses HTTP/1.1 on a new
    /// connection when the server does not speak HTTP/2 or does not enable extended CONNECT.
    /// Sockets to one origin share one HTTP/2 connection (see [`WebSocket`](crate::WebSocket)).
    /// Default: false.
    pub http2: bool,
    /// How many redirects (301, 302, 303, 307, 308) of the opening handshake are followed;
    /// 0 follows none (the 3xx is then an [`ErrorKind::Handshake`](crate::ErrorKind::Handshake)
    /// error with its status). `ws://` may lead to `wss://`, never the reverse; `Authorization`
    /// and `Cookie` headers are not sent to another origin. Default: 10.
    pub max_redirects: usize,
    /// Reconnection after a connection ends or an attempt fails. Default: `None`, never.
    pub reconnect: Option<Reconnect>,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            connect_timeout: Duration::from_secs(10),
            limits: Limits::default(),
            tls: None,
            deflate: PerMessageDeflate::default(),
            protocols: Vec::new(),
            proxy: ProxySetting::Environment,
            http2: false,
            max_redirects: 10,
            reconnect: None,
        }
    }
}

impl ClientOptions {
    /// Sets [`ClientOptions::connect_timeout`].
    pub fn connect_timeout(mut self, timeout: Duration) -> ClientOptions {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`ClientOptions::limits`].
    pub fn limits(mut self, limits: Limits) -> ClientOptions {
        self.limits = limits;
        self
    }

    /// Sets [`ClientOptions::deflate`] (`PerMessageDeflate::disabled()` offers no compression).
    pub fn deflate(mut self, settings: PerMessageDeflate) -> ClientOptions {
        self.deflate = settings;
        self
    }

    /// Sets [`ClientOptions::protocols`].
    ///
    /// ```
    /// use ferrosock::ClientOptions;
    /// let options = ClientOptions::default().protocols(["graphql-transport-ws", "graphql-ws"]);
    /// assert_eq!(options.protocols, ["graphql-transport-ws", "graphql-ws"]);
    /// ```
    pub fn protocols<S: Into<String>>(
        mut self,
        protocols: impl IntoIterator<Item = S>,
    ) -> ClientOptions {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Sends every connection through the proxy at `url` (see [`Proxy`]), whatever the
    /// environment says. Fails at once ([`ErrorKind::Proxy`](crate::ErrorKind::Proxy)) for an
    /// unknown scheme or a URL that is not one.
    ///
    /// ```
    /// use ferrosock::ClientOptions;
    /// let options = ClientOptions::default().proxy("socks5h://user:pass@127.0.0.1:1080")?;
    /// assert!(ClientOptions::default().proxy("gopher://proxy:70").is_err());
    /// # Ok::<(), ferrosock::Error>(())
    /// ```
    pub fn proxy(mut self, url: &str) -> Result<ClientOptions, Error> {
        self.proxy = ProxySetting::Use(Proxy::parse(url)?);
        Ok(self)
    }

    /// Connects directly, ignoring the proxy variables of the environment.
    pub fn no_proxy(mut self) -> ClientOptions {
        self.proxy = ProxySetting::Direct;
        self
    }

    /// Sets [`ClientOptions::http2`].
    pub fn http2(mut self, http2: bool) -> ClientOptions {
        self.http2 = http2;
        self
    }

    /// Sets [`ClientOptions::max_redirects`] (0: redirects are errors).
    pub fn max_redirects(mut self, max: usize) -> ClientOptions {
        self.max_redirects = max;
        self
    }

    /// Reconnects with `policy` when a connection ends or an attempt fails for a reason it
    /// retries ([`Reconnect`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ferrosock::{ClientOptions, Reconnect};
    /// let options = ClientOptions::default()
    ///     .reconnect(Reconnect::default().max_delay(Duration::from_secs(10)).max_attempts(None));
    /// ```
    pub fn reconnect(mut self, policy: Reconnect) -> ClientOptions {
        self.reconnect = Some(policy);
        self
    }

    /// Checks what cannot be sent: a subprotocol that is not a token.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        crate::request::check_protocols(&self.protocols)
    }

    /// Trusts the CA certificates of a PEM file besides the system's roots (for servers with
    /// certificates from a private CA). Fails if the file has no usable certificate.
    pub fn ca_file(mut self, path: impl AsRef<Path>) -> Result<ClientOptions, Error> {
        self.tls = Some(crate::tls::client_config_with_ca(path.as_ref())?);
        Ok(self)
    }

    /// Uses a rustls configuration of the caller's for `wss://` (client certificates, custom
    /// verification...). Its ALPN protocols are replaced by those the connection asks for
    /// (`http/1.1`, and `h2` with [`ClientOptions::http2`]).
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> ClientOptions {
        self.tls = Some(config);
        self
    }
}
