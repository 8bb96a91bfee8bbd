//! URL → DNS → TCP → TLS → opening handshake: everything before a client's first frame.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::conn::Stream;
use crate::error::{Error, ErrorKind};
use crate::limits::Limits;
use crate::proto::deflate::{Negotiated, PerMessageDeflate};
use crate::proto::handshake::{Accepted, ClientHandshake, HandshakeError, RESERVED_HEADERS};
use crate::request::Params;

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
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            connect_timeout: Duration::from_secs(10),
            limits: Limits::default(),
            tls: None,
            deflate: PerMessageDeflate::default(),
            protocols: Vec::new(),
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
    /// verification...). Its ALPN protocols should be `http/1.1` or none.
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> ClientOptions {
        self.tls = Some(config);
        self
    }
}

/// Where a WebSocket URL points, parsed and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    secure: bool,
    /// A domain name, or an IP address without brackets.
    host: String,
    port: u16,
    /// The `Host` header: the host (IPv6 in brackets), with the port when not the default.
    host_header: String,
    /// Path and query, as sent in the request line.
    resource: String,
}

impl Target {
    /// Parses `ws://host[:port]path[?query]` or `wss://…` (RFC 6455 §3).
    pub(crate) fn parse(url: &str) -> Result<Target, Error> {
        let invalid = |why: String| {
            Error::new(
                ErrorKind::InvalidUrl,
                format!("invalid WebSocket URL {url:?}: {why}"),
            )
        };
        let parsed = url::Url::parse(url).map_err(|err| invalid(err.to_string()))?;
        let secure = match parsed.scheme() {
            "ws" => false,
            "wss" => true,
            other => {
                return Err(invalid(format!(
                    "the scheme must be ws or wss, not {other}"
                )))
            }
        };
        if parsed.fragment().is_some() {
            return Err(invalid("a WebSocket URL has no fragment (#...)".to_owned()));
        }
        let (host, bracketed) = match parsed.host() {
            Some(url::Host::Domain(domain)) => (domain.to_owned(), domain.to_owned()),
            Some(url::Host::Ipv4(ip)) => (ip.to_string(), ip.to_string()),
            Some(url::Host::Ipv6(ip)) => (ip.to_string(), format!("[{ip}]")),
            None => return Err(invalid("no host".to_owned())),
        };
        let default_port = if secure { 443 } else { 80 };
        let port = parsed.port().unwrap_or(default_port);
        let host_header = if port == default_port {
            bracketed
        } else {
            format!("{bracketed}:{port}")
        };
        let resource = match parsed.query() {
            Some(query) => format!("{}?{query}", parsed.path()),
            None => parsed.path().to_owned(),
        };
        Ok(Target {
            secure,
            host,
            port,
            host_header,
            resource,
        })
    }
}

/// Checks a handler's extra headers and returns them ready for the request.
pub(crate) fn request_headers(params: &Params) -> Result<Vec<(String, String)>, Error> {
    params
        .iter()
        .map(|(name, value)| {
            let valid_name = http::HeaderName::from_bytes(name.as_bytes()).is_ok();
            let valid_value = http::HeaderValue::from_str(value).is_ok();
            if !valid_name || !valid_value {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("invalid request header {name:?}: {value:?}"),
                ));
            }
            if RESERVED_HEADERS
                .iter()
                .any(|reserved| name.eq_ignore_ascii_case(reserved))
            {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    if name.eq_ignore_ascii_case("sec-websocket-protocol") {
                        format!("the {name} header belongs to the WebSocket handshake: offer subprotocols with ClientOptions::protocols")
                    } else {
                        format!("the {name} header belongs to the WebSocket handshake and cannot be set")
                    },
                ));
            }
            Ok((name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// An open connection, right after the opening handshake.
pub(crate) struct Established {
    pub(crate) stream: Stream,
    /// Bytes that followed the server's answer: the first frames.
    pub(crate) leftover: BytesMut,
    /// permessage-deflate, if the server accepted it.
    pub(crate) deflate: Option<Negotiated>,
    /// The subprotocol the server chose.
    pub(crate) protocol: Option<String>,
}

/// Connects (over `over`, a stream the application opened, when given) and completes the
/// opening handshake, within the connect timeout.
pub(crate) async fn establish(
    target: &Target,
    headers: &[(String, String)],
    options: &ClientOptions,
    over: Option<Stream>,
) -> Result<Established, Error> {
    let attempt = async {
        let mut stream = match over {
            Some(stream) => stream,
            None => open(target, options).await?,
        };
        let (leftover, accepted) = handshake(&mut stream, target, headers, options).await?;
        Ok(Established {
            stream,
            leftover,
            deflate: accepted.deflate,
            protocol: accepted.protocol,
        })
    };
    match tokio::time::timeout(options.connect_timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(Error::new(
            ErrorKind::Timeout,
            format!(
                "could not connect to {}:{} within {} s",
                target.host,
                target.port,
                options.connect_timeout.as_secs_f64()
            ),
        )),
    }
}

/// TCP, then TLS for `wss://`.
async fn open(target: &Target, options: &ClientOptions) -> Result<Stream, Error> {
    let tcp = connect_tcp(target).await?;
    let stream = if target.secure {
        let config = match &options.tls {
            Some(config) => config.clone(),
            None => crate::tls::default_client_config()?,
        };
        Stream::ClientTls(Box::new(connect_tls(target, tcp, config).await?))
    } else {
        Stream::Plain(tcp)
    };
    Ok(stream)
}

async fn connect_tcp(target: &Target) -> Result<TcpStream, Error> {
    let addrs: Vec<SocketAddr> = match target.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, target.port)],
        Err(_) => tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|err| {
                Error::with_source(
                    ErrorKind::Dns,
                    format!("cannot resolve {}", target.host),
                    err,
                )
            })?
            .collect(),
    };
    let mut last_error = None;
    for addr in &addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => {
                // Small frames go out at once; the driver batches writes itself.
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(err) => last_error = Some(err),
        }
    }
    let message = format!("cannot connect to {}:{}", target.host, target.port);
    Err(match last_error {
        Some(err) => Error::with_source(ErrorKind::Connect, message, err),
        None => Error::new(ErrorKind::Dns, format!("{} has no address", target.host)),
    })
}

async fn connect_tls(
    target: &Target,
    tcp: TcpStream,
    config: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
    let name = rustls_pki_types::ServerName::try_from(target.host.clone()).map_err(|err| {
        Error::with_source(
            ErrorKind::Tls,
            format!("{} is not a valid TLS server name", target.host),
            err,
        )
    })?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|err| {
            Error::with_source(
                ErrorKind::Tls,
                format!("TLS handshake with {} failed", target.host),
                err,
            )
        })
}

async fn handshake(
    stream: &mut Stream,
    target: &Target,
    headers: &[(String, String)],
    options: &ClientOptions,
) -> Result<(BytesMut, Accepted), Error> {
    let handshake = ClientHandshake::new(rand::random())
        .offer_deflate(&options.deflate)
        .offer_protocols(&options.protocols);
    let request = handshake.request(&target.host_header, &target.resource, headers);
    let io_error =
        |err| Error::with_source(ErrorKind::Handshake, "the opening handshake failed", err);
    stream.write_all(&request).await.map_err(io_error)?;
    stream.flush().await.map_err(io_error)?;
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        match handshake.check_response(&buf) {
            Ok(Some(accepted)) => return Ok((buf.split_off(accepted.head_len), accepted)),
            Ok(None) => {}
            Err(HandshakeError::Status(status)) => {
                return Err(Error::new(
                    ErrorKind::Handshake,
                    format!("the server refused the WebSocket connection with HTTP {status}"),
                )
                .with_status(status))
            }
            Err(err) => {
                return Err(Error::with_source(
                    ErrorKind::Handshake,
                    "the opening handshake failed",
                    err,
                ))
            }
        }
        if stream.read_buf(&mut buf).await.map_err(io_error)? == 0 {
            return Err(Error::new(
                ErrorKind::Handshake,
                "the server closed the connection during the opening handshake",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("ws://example.com/chat?room=1&x=%20").unwrap();
        assert_eq!(
            (t.secure, t.host.as_str(), t.port),
            (false, "example.com", 80)
        );
        assert_eq!(
            (t.host_header.as_str(), t.resource.as_str()),
            ("example.com", "/chat?room=1&x=%20")
        );
        let t = Target::parse("wss://127.0.0.1:9443").unwrap();
        assert_eq!(
            (
                t.secure,
                t.port,
                t.host_header.as_str(),
                t.resource.as_str()
            ),
            (true, 9443, "127.0.0.1:9443", "/")
        );
        let t = Target::parse("ws://[::1]:8080/x").unwrap();
        assert_eq!(
            (t.host.as_str(), t.host_header.as_str()),
            ("::1", "[::1]:8080")
        );
        let t = Target::parse("wss://[::1]/").unwrap();
        assert_eq!((t.port, t.host_header.as_str()), (443, "[::1]"));
        for bad in [
            "http://example.com/",
            "ftp://x/",
            "not a url",
            "ws://",
            "ws://host/#frag",
            "/relative",
        ] {
            let err = Target::parse(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidUrl, "{bad}");
        }
    }

    #[test]
    fn request_headers_are_checked() {
        let ok: Params = [("Cookie", "a=1; b=2"), ("X-A", "1"), ("X-A", "2")]
            .into_iter()
            .collect();
        assert_eq!(request_headers(&ok).unwrap().len(), 3);
        for (name, value) in [
            ("Sec-WebSocket-Key", "x"),
            ("upgrade", "h2c"),
            ("Bad Name", "x"),
            ("X", "a\r\nInjected: 1"),
        ] {
            let params: Params = [(name, value)].into_iter().collect();
            assert_eq!(
                request_headers(&params).unwrap_err().kind(),
                ErrorKind::InvalidArgument,
                "{name}"
            );
        }
    }
}
