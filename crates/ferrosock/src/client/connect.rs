//! The connection pipeline of a client: URL → proxy (if any) → TCP → TLS with ALPN → the
//! HTTP/1.1 upgrade or an HTTP/2 extended CONNECT → the driver. Each stage fails with an error
//! kind of its own (`InvalidUrl`, `Proxy`, `Dns`, `Connect`, `Tls`, `Handshake`, `Redirect`,
//! `Timeout`); a redirect starts the pipeline over for its URL.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::proxy::{self, Proxy, Tunnel};
use super::ClientOptions;
use crate::conn::Stream;
use crate::error::{Error, ErrorKind};
use crate::proto::deflate::Negotiated;
use crate::proto::handshake::{ClientHandshake, ResponseHead, RESERVED_HEADERS};
use crate::request::Params;

/// Where a WebSocket URL points, parsed and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) secure: bool,
    /// A domain name, or an IP address without brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The `Host` header: the host (IPv6 in brackets), with the port when not the default.
    pub(crate) host_header: String,
    /// Path and query, as sent in the request line.
    pub(crate) resource: String,
    /// The URL, for redirects relative to it.
    url: url::Url,
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
        let mut parsed = url::Url::parse(url).map_err(|err| invalid(err.to_string()))?;
        // User information is not sent (RFC 6455 defines no use for it), and kept out of the
        // messages that show the URL.
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
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
            url: parsed,
        })
    }

    /// `host:port`, the IPv6 host in brackets: a CONNECT's target, an HTTP/2 `:authority`.
    pub(crate) fn authority(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]:{}", self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }

    /// The same scheme, host and port.
    pub(crate) fn same_origin(&self, other: &Target) -> bool {
        (self.secure, &self.host, self.port) == (other.secure, &other.host, other.port)
    }

    /// Where a redirect's `Location` leads (RFC 9110 §10.2.2: relative to this URL). `http`
    /// and `https` stand for `ws` and `wss`, as browsers and Node ws take them; a `wss://` URL
    /// never leads to `ws://`.
    fn redirect(&self, location: &str) -> Result<Target, Error> {
        let refuse = |why: String| Error::new(ErrorKind::Redirect, why);
        let mut next = self
            .url
            .join(location)
            .map_err(|err| refuse(format!("the redirect to {location:?} is not a URL: {err}")))?;
        let scheme = match next.scheme() {
            "ws" | "http" => "ws",
            "wss" | "https" => "wss",
            other => {
                return Err(refuse(format!(
                    "the redirect leads to a {other}:// URL, not a WebSocket one"
                )))
            }
        };
        if self.secure && scheme == "ws" {
            return Err(refuse(format!(
                "refusing the redirect from a wss:// URL to {location:?}: it would drop TLS"
            )));
        }
        if next.scheme() != scheme && next.set_scheme(scheme).is_err() {
            // The url crate refuses to turn a "special" scheme into another kind: rebuild.
            let text = format!("{scheme}{}", &next.as_str()[next.scheme().len()..]);
            next = url::Url::parse(&text).map_err(|err| {
                refuse(format!("cannot follow the redirect to {location:?}: {err}"))
            })?;
        }
        next.set_fragment(None);
        Target::parse(next.as_str()).map_err(|err| {
            Error::with_source(ErrorKind::Redirect, "cannot follow the redirect", err)
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

/// How an opening handshake ended, short of an error.
pub(crate) enum Outcome {
    Open(Established),
    /// A 3xx with a `Location`.
    Redirect {
        status: u16,
        location: String,
    },
}

/// Connects (over `over`, a stream the application opened, when given) and completes the
/// opening handshake, following redirects, all within the connect timeout.
pub(crate) async fn establish(
    target: &Target,
    headers: &[(String, String)],
    options: &ClientOptions,
    over: Option<Stream>,
) -> Result<Established, Error> {
    let attempt = async {
        let mut target = target.clone();
        let mut headers = headers.to_vec();
        // A redirect would need a connection of ferrosock's: over the application's stream
        // (its tunnel, its TLS), the 3xx is the answer.
        let own_stream = over.is_some();
        let mut over = over;
        let mut hops = 0;
        loop {
            let outcome = match over.take() {
                Some(stream) => handshake(stream, &target, &headers, options).await?,
                None => attempt(&target, &headers, options).await?,
            };
            let (status, location) = match outcome {
                Outcome::Open(established) => return Ok(established),
                Outcome::Redirect { status, location } => (status, location),
            };
            if own_stream || hops >= options.max_redirects {
                let why = if own_stream {
                    "redirects are not followed over the application's own stream".to_owned()
                } else if options.max_redirects == 0 {
                    "redirects are not followed (ClientOptions::max_redirects is 0)".to_owned()
                } else {
                    format!("too many redirects (more than {})", options.max_redirects)
                };
                return Err(Error::new(
                    if own_stream || options.max_redirects == 0 {
                        ErrorKind::Handshake
                    } else {
                        ErrorKind::Redirect
                    },
                    format!("the server answered HTTP {status} to {location:?}: {why}"),
                )
                .with_status(status));
            }
            hops += 1;
            let next = target.redirect(&location)?;
            if !next.same_origin(&target) {
                // As Node ws does: credentials stay with their origin.
                headers.retain(|(name, _)| {
                    !["authorization", "cookie", "host"]
                        .iter()
                        .any(|dropped| name.eq_ignore_ascii_case(dropped))
                });
            }
            tracing::debug!(status, to = %next.url, "following a redirect");
            target = next;
        }
    };
    match tokio::time::timeout(options.connect_timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(Error::new(
            ErrorKind::Timeout,
            format!(
                "could not connect to {} within {} s",
                target.url,
                options.connect_timeout.as_secs_f64()
            ),
        )),
    }
}

/// One URL's connection: HTTP/2 when asked for and the server takes WebSockets over it,
/// else HTTP/1.1.
async fn attempt(
    target: &Target,
    headers: &[(String, String)],
    options: &ClientOptions,
) -> Result<Outcome, Error> {
    let proxy = options.proxy.resolve(target)?;
    if options.http2 {
        if let Some(outcome) = super::http2::open(target, proxy.as_ref(), headers, options).await? {
            return Ok(outcome);
        }
    }
    let (stream, _) = transport(target, proxy.as_ref(), options, &[b"http/1.1"]).await?;
    handshake(stream, target, headers, options).await
}

/// The connection to the origin, through the proxy if any, with TLS for `wss://` offering
/// `alpn`; returns the protocol ALPN chose.
pub(crate) async fn transport(
    target: &Target,
    proxy: Option<&Proxy>,
    options: &ClientOptions,
    alpn: &[&[u8]],
) -> Result<(Stream, Option<Vec<u8>>), Error> {
    let tls = match &options.tls {
        Some(config) => config.clone(),
        None => crate::tls::default_client_config()?,
    };
    let tunnel = match proxy {
        Some(proxy) => {
            tracing::debug!(%proxy, to = %target.authority(), "connecting through a proxy");
            proxy::tunnel(proxy, target, &tls).await?
        }
        None => Tunnel::Tcp(connect_tcp(target).await?),
    };
    if !target.secure {
        return Ok((
            match tunnel {
                Tunnel::Tcp(tcp) => Stream::Plain(tcp),
                Tunnel::Tls(tls) => Stream::from_io(*tls),
            },
            None,
        ));
    }
    let config = with_alpn(tls, alpn);
    Ok(match tunnel {
        Tunnel::Tcp(tcp) => {
            let tls = connect_tls(target, tcp, config).await?;
            let chosen = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            (Stream::ClientTls(Box::new(tls)), chosen)
        }
        Tunnel::Tls(proxy_tls) => {
            // TLS to the origin inside TLS to the proxy.
            let tls = connect_tls(target, *proxy_tls, config).await?;
            let chosen = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            (Stream::from_io(tls), chosen)
        }
    })
}

/// `config`, offering `alpn`.
fn with_alpn(config: Arc<rustls::ClientConfig>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    if config
        .alpn_protocols
        .iter()
        .map(Vec::as_slice)
        .eq(alpn.iter().copied())
    {
        return config;
    }
    let mut config = (*config).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
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
    let message = format!("cannot connect to {}", target.authority());
    Err(match last_error {
        Some(err) => Error::with_source(ErrorKind::Connect, message, err),
        None => Error::new(ErrorKind::Dns, format!("{} has no address", target.host)),
    })
}

async fn connect_tls<S>(
    target: &Target,
    io: S,
    config: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<S>, Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let name = rustls_pki_types::ServerName::try_from(target.host.clone()).map_err(|err| {
        Error::with_source(
            ErrorKind::Tls,
            format!("{} is not a valid TLS server name", target.host),
            err,
        )
    })?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, io)
        .await
        .map_err(|err| {
            // A certificate or protocol failure is TLS's; a connection reset or closed during
            // the handshake (a server restarting) is the network's.
            let kind = match err.get_ref() {
                Some(inner) if inner.is::<rustls::Error>() => ErrorKind::Tls,
                _ => ErrorKind::Io,
            };
            Error::with_source(
                kind,
                format!("TLS handshake with {} failed", target.host),
                err,
            )
        })
}

/// The handshake a connection starts with: the key, and the offers of the options.
pub(crate) fn client_handshake(options: &ClientOptions) -> ClientHandshake {
    ClientHandshake::new(rand::random())
        .offer_deflate(&options.deflate)
        .offer_protocols(&options.protocols)
}

/// The HTTP/1.1 upgrade (RFC 6455 §4.1) on `stream`.
pub(crate) async fn handshake(
    mut stream: Stream,
    target: &Target,
    headers: &[(String, String)],
    options: &ClientOptions,
) -> Result<Outcome, Error> {
    let handshake = client_handshake(options);
    let request = handshake.request(&target.host_header, &target.resource, headers);
    let io_error =
        |err| Error::with_source(ErrorKind::Handshake, "the opening handshake failed", err);
    stream.write_all(&request).await.map_err(io_error)?;
    stream.flush().await.map_err(io_error)?;
    let mut buf = BytesMut::with_capacity(1024);
    let head = loop {
        match ResponseHead::parse(&buf) {
            Ok(Some(head)) => break head,
            Ok(None) => {}
            Err(err) => return Err(handshake_failed(err)),
        }
        if stream.read_buf(&mut buf).await.map_err(io_error)? == 0 {
            return Err(Error::new(
                ErrorKind::Handshake,
                "the server closed the connection during the opening handshake",
            ));
        }
    };
    if head.status != 101 {
        return refusal(head.status, &head.headers);
    }
    let accepted = handshake.check_upgrade(&head).map_err(handshake_failed)?;
    Ok(Outcome::Open(Established {
        stream,
        leftover: buf.split_off(accepted.head_len),
        deflate: accepted.deflate,
        protocol: accepted.protocol,
    }))
}

pub(crate) fn handshake_failed(err: crate::proto::handshake::HandshakeError) -> Error {
    Error::with_source(ErrorKind::Handshake, "the opening handshake failed", err)
}

/// What an answer other than the upgrade means: a redirect to follow, or a refusal.
pub(crate) fn refusal(status: u16, headers: &http::HeaderMap) -> Result<Outcome, Error> {
    if matches!(status, 301 | 302 | 303 | 307 | 308) {
        if let Some(location) = headers
            .get(http::header::LOCATION)
            .and_then(|l| l.to_str().ok())
        {
            return Ok(Outcome::Redirect {
                status,
                location: location.to_owned(),
            });
        }
    }
    let retry_after = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| retry_after(value, SystemTime::now()));
    Err(Error::new(
        ErrorKind::Handshake,
        format!("the server refused the WebSocket connection with HTTP {status}"),
    )
    .with_status(status)
    .with_retry_after(retry_after))
}

/// A `Retry-After` value (RFC 9110 §10.2.3): seconds, or an HTTP date.
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or_default())
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
    fn redirects() {
        let from = Target::parse("ws://a.example:8080/chat?x=1").unwrap();
        let to = |location: &str| from.redirect(location).map(|t| t.url.to_string());
        assert_eq!(to("/other").unwrap(), "ws://a.example:8080/other");
        assert_eq!(to("other?y").unwrap(), "ws://a.example:8080/other?y");
        assert_eq!(to("wss://b.example/x#frag").unwrap(), "wss://b.example/x");
        assert_eq!(to("https://b.example:9/").unwrap(), "wss://b.example:9/");
        assert_eq!(to("http://c/").unwrap(), "ws://c/");
        assert_eq!(to("ftp://c/").unwrap_err().kind(), ErrorKind::Redirect);
        let secure = Target::parse("wss://a.example/").unwrap();
        for down in ["ws://a.example/", "http://a.example/"] {
            assert_eq!(
                secure.redirect(down).unwrap_err().kind(),
                ErrorKind::Redirect
            );
        }
        assert!(from.same_origin(&from.redirect("/x").unwrap()));
        assert!(!from.same_origin(&from.redirect("wss://a.example:8080/").unwrap()));
        assert!(!from.same_origin(&from.redirect("//b.example:8080/").unwrap()));
    }

    #[test]
    fn retry_after_values() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(retry_after(&later, now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(retry_after("soon", now), None);
        let mut headers = http::HeaderMap::new();
        headers.insert("retry-after", "7".parse().unwrap());
        let err = refusal(503, &headers).err().unwrap();
        assert_eq!(
            (err.http_status(), err.retry_after()),
            (Some(503), Some(Duration::from_secs(7)))
        );
        headers.insert("location", "/next".parse().unwrap());
        assert!(matches!(
            refusal(307, &headers),
            Ok(Outcome::Redirect { status: 307, .. })
        ));
        assert!(refusal(200, &headers).is_err());
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
