//! Proxies: which one a connection goes through (the options, or the environment as curl and
//! Python read it), and the tunnel through it (HTTP CONNECT, SOCKS5).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::connect::Target;
use crate::error::{Error, ErrorKind};
use crate::proto::handshake::ResponseHead;

/// A proxy server: `http://`, `https://` (TLS to the proxy), `socks5://` or `socks5h://`,
/// with optional credentials (`scheme://user:password@host:port`, percent-encoded).
///
/// | scheme | tunnel | default port | names resolved |
/// |---|---|---|---|
/// | `http` | HTTP CONNECT, Basic auth | 80 | by the proxy |
/// | `https` | HTTP CONNECT inside TLS to the proxy | 443 | by the proxy |
/// | `socks5` | SOCKS5, user/password auth | 1080 | here, as curl does |
/// | `socks5h` | SOCKS5, user/password auth | 1080 | by the proxy |
///
/// TLS to an `https://` proxy trusts what the origin's TLS trusts (the system's roots, plus
/// [`ClientOptions::ca_file`](crate::ClientOptions::ca_file) or the configuration of
/// [`ClientOptions::tls_config`](crate::ClientOptions::tls_config)). A `wss://` origin gets TLS
/// of its own inside the tunnel, checked against its own name.
///
/// Its `Debug` and `Display` show neither user nor password, and neither do errors or logs.
///
/// ```
/// use ferrosock::Proxy;
/// let proxy = Proxy::parse("socks5h://alice:s%40cret@127.0.0.1:1080").unwrap();
/// assert_eq!(proxy.to_string(), "socks5h://127.0.0.1:1080");
/// assert!(Proxy::parse("ftp://proxy:21").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Proxy {
    kind: Kind,
    /// A domain name, or an IP address without brackets.
    host: String,
    port: u16,
    credentials: Option<Credentials>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Http,
    Https,
    Socks5,
    Socks5h,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Credentials {
    user: String,
    password: String,
}

impl Proxy {
    /// Parses a proxy URL. Fails ([`ErrorKind::Proxy`]) for another scheme, no host, a path,
    /// or credentials that are not valid percent-encoded UTF-8. The error does not repeat the
    /// URL's credentials.
    pub fn parse(url: &str) -> Result<Proxy, Error> {
        let parsed = url::Url::parse(url).map_err(|err| {
            Error::new(
                ErrorKind::Proxy,
                format!("invalid proxy URL {}: {err}", redact(url)),
            )
        })?;
        let invalid = |why: &str| {
            Error::new(
                ErrorKind::Proxy,
                format!("invalid proxy URL {}: {why}", redact(url)),
            )
        };
        let (kind, default_port) = match parsed.scheme() {
            "http" => (Kind::Http, 80),
            "https" => (Kind::Https, 443),
            "socks5" => (Kind::Socks5, 1080),
            "socks5h" => (Kind::Socks5h, 1080),
            other => {
                return Err(invalid(&format!(
                    "unknown scheme {other:?}: use http, https, socks5 or socks5h"
                )))
            }
        };
        let host = match parsed.host() {
            Some(url::Host::Domain(domain)) => domain.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(invalid("no host")),
        };
        if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
            return Err(invalid("a proxy URL has no path or query"));
        }
        let decode = |text: &str| {
            percent_decode(text).ok_or_else(|| invalid("credentials are not percent-encoded UTF-8"))
        };
        let credentials = if parsed.username().is_empty() && parsed.password().is_none() {
            None
        } else {
            Some(Credentials {
                user: decode(parsed.username())?,
                password: decode(parsed.password().unwrap_or(""))?,
            })
        };
        Ok(Proxy {
            kind,
            host,
            port: parsed.port().unwrap_or(default_port),
            credentials,
        })
    }

    fn scheme(&self) -> &'static str {
        match self.kind {
            Kind::Http => "http",
            Kind::Https => "https",
            Kind::Socks5 => "socks5",
            Kind::Socks5h => "socks5h",
        }
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]"),
            _ => self.host.clone(),
        };
        write!(f, "{}://{host}:{}", self.scheme(), self.port)
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("url", &self.to_string())
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<hidden>"),
            )
            .finish()
    }
}

/// A URL as it may appear in an error: `scheme://host...` without `user:password@`.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://<credentials>@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// Which proxy a client's connections go through ([`ClientOptions::proxy`](crate::ClientOptions::proxy)).
///
/// The default reads the environment, as curl and Python `websockets` (15.0 and later) do:
/// see [`ProxySetting::Environment`]. [`ClientOptions::no_proxy`](crate::ClientOptions::no_proxy)
/// turns that off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxySetting {
    /// The proxy named by the environment, read at each connection attempt (the default):
    /// `https_proxy` / `HTTPS_PROXY` for `wss://`, `http_proxy` / `HTTP_PROXY` for `ws://`,
    /// else `all_proxy` / `ALL_PROXY` (lower case first; an empty value is unset). Upper-case
    /// `HTTP_PROXY` is ignored when `REQUEST_METHOD` is set — under CGI it comes from the
    /// request's `Proxy` header ("httpoxy") — as Python and Go do (curl never reads it). None
    /// when the host is in `no_proxy` / `NO_PROXY`: `*` alone (every host), or a
    /// comma-separated list of domain names that match themselves and their subdomains
    /// (`example.com`, `.example.com`), IP addresses and CIDR blocks (`10.0.0.0/8`, `::1`,
    /// `[fd00::]/8`), each optionally with `:port`. A variable that holds an invalid proxy URL fails the connection
    /// ([`ErrorKind::Proxy`]) rather than going direct.
    #[default]
    Environment,
    /// Direct connections, whatever the environment says.
    Direct,
    /// Every connection through this proxy.
    Use(Proxy),
}

impl ProxySetting {
    /// The proxy for `target`, if any.
    pub(crate) fn resolve(&self, target: &Target) -> Result<Option<Proxy>, Error> {
        match self {
            ProxySetting::Direct => Ok(None),
            ProxySetting::Use(proxy) => Ok(Some(proxy.clone())),
            ProxySetting::Environment => from_environment(target, |name| std::env::var(name).ok()),
        }
    }
}

/// The proxy the environment names for `target` (see [`ProxySetting::Environment`]).
fn from_environment(
    target: &Target,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<Proxy>, Error> {
    // Under CGI (REQUEST_METHOD set), HTTP_PROXY comes from the request's `Proxy:` header
    // ("httpoxy"): it is ignored there, as Python and Go do. curl never reads it.
    let cgi = var("REQUEST_METHOD").is_some();
    let read = |name: &str| {
        [name.to_ascii_lowercase(), name.to_owned()]
            .into_iter()
            .filter(|candidate| !(cgi && candidate == "HTTP_PROXY"))
            .find_map(|name| {
                var(&name)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (name, v))
            })
    };
    let scheme_var = if target.secure {
        "HTTPS_PROXY"
    } else {
        "HTTP_PROXY"
    };
    let Some((name, url)) = read(scheme_var).or_else(|| read("ALL_PROXY")) else {
        return Ok(None);
    };
    if let Some((_, no_proxy)) = read("NO_PROXY") {
        if bypasses(&no_proxy, &target.host, target.port) {
            return Ok(None);
        }
    }
    let url = url.trim();
    // curl takes `host:port` without a scheme as an HTTP proxy.
    let url = if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    Proxy::parse(&url).map(Some).map_err(|err| {
        Error::with_source(
            ErrorKind::Proxy,
            format!("the {name} environment variable does not name a usable proxy"),
            err,
        )
    })
}

/// Whether `NO_PROXY`'s list exempts `host:port` (curl's rules, plus CIDR blocks).
fn bypasses(no_proxy: &str, host: &str, port: u16) -> bool {
    // `*` alone exempts every host (within a list, curl and Python ignore it).
    if no_proxy.trim() == "*" {
        return true;
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let host_ip = host.parse::<IpAddr>().ok();
    no_proxy
        .split([',', ' '])
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .any(|entry| {
            let (pattern, entry_port) = split_port(entry);
            if entry_port.is_some_and(|p| p != port) {
                return false;
            }
            let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
            if let Some(ip) = host_ip {
                return ip_matches(&pattern, ip);
            }
            let domain = pattern.strip_prefix("*.").unwrap_or(&pattern);
            let domain = domain.strip_prefix('.').unwrap_or(domain);
            !domain.is_empty()
                && (host == domain
                    || host
                        .strip_suffix(domain)
                        .is_some_and(|head| head.ends_with('.')))
        })
}

/// `entry` without a trailing `:port`; IPv6 addresses are bracketed when they have one
/// (`[::1]:8080`, `[fd00::]/8`).
fn split_port(entry: &str) -> (String, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        if let Some((ip, tail)) = rest.split_once(']') {
            if let Some(bits) = tail.strip_prefix('/') {
                return (format!("{ip}/{bits}"), None);
            }
            let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
            return (ip.to_owned(), port);
        }
    }
    match entry.rsplit_once(':') {
        // One colon: host:port. More: a bare IPv6 address (maybe a CIDR block).
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(port) => (host.to_owned(), Some(port)),
            Err(_) => (entry.to_owned(), None),
        },
        _ => (entry.to_owned(), None),
    }
}

fn ip_matches(pattern: &str, ip: IpAddr) -> bool {
    let (address, bits) = match pattern.split_once('/') {
        Some((address, bits)) => match bits.parse::<u32>() {
            Ok(bits) => (address, Some(bits)),
            Err(_) => return false,
        },
        None => (pattern, None),
    };
    let Ok(network) = address.parse::<IpAddr>() else {
        return false;
    };
    match (network, ip) {
        (IpAddr::V4(network), IpAddr::V4(ip)) => {
            prefix_matches(&network.octets(), &ip.octets(), bits.unwrap_or(32))
        }
        (IpAddr::V6(network), IpAddr::V6(ip)) => {
            prefix_matches(&network.octets(), &ip.octets(), bits.unwrap_or(128))
        }
        _ => false,
    }
}

fn prefix_matches(network: &[u8], ip: &[u8], bits: u32) -> bool {
    if bits as usize > network.len() * 8 {
        return false;
    }
    let (whole, rest) = ((bits / 8) as usize, bits % 8);
    if network[..whole] != ip[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        network[whole] & mask == ip[whole] & mask
    }
}

/// A connection to the origin through a proxy: plain TCP, or TLS to an `https://` proxy.
pub(crate) enum Tunnel {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Opens a tunnel to `target` through `proxy`.
pub(crate) async fn tunnel(
    proxy: &Proxy,
    target: &Target,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Tunnel, Error> {
    let tcp = connect_to_proxy(proxy).await?;
    match proxy.kind {
        Kind::Http => {
            let mut tcp = tcp;
            http_connect(&mut tcp, proxy, target).await?;
            Ok(Tunnel::Tcp(tcp))
        }
        Kind::Https => {
            // TLS to the proxy speaks HTTP/1.1, whatever ALPN the origin gets inside.
            let mut config = (**tls).clone();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name =
                rustls_pki_types::ServerName::try_from(proxy.host.clone()).map_err(|err| {
                    Error::with_source(
                        ErrorKind::Proxy,
                        format!("{proxy} is not a valid TLS server name"),
                        err,
                    )
                })?;
            let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(|err| {
                    Error::with_source(
                        ErrorKind::Proxy,
                        format!("TLS handshake with the proxy {proxy} failed"),
                        err,
                    )
                })?;
            http_connect(&mut tls, proxy, target).await?;
            Ok(Tunnel::Tls(Box::new(tls)))
        }
        Kind::Socks5 | Kind::Socks5h => Ok(Tunnel::Tcp(socks5(tcp, proxy, target).await?)),
    }
}

async fn connect_to_proxy(proxy: &Proxy) -> Result<TcpStream, Error> {
    let unreachable = |err: std::io::Error| {
        Error::with_source(
            ErrorKind::Proxy,
            format!("the proxy {proxy} is unreachable"),
            err,
        )
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((proxy.host.as_str(), proxy.port))
        .await
        .map_err(unreachable)?
        .collect();
    let mut last_error = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(err) => last_error = Some(err),
        }
    }
    Err(unreachable(last_error.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no address")
    })))
}

/// The most a proxy's answer to CONNECT may take.
const MAX_PROXY_ANSWER: usize = 16 * 1024;

/// `CONNECT host:port` and its 2xx answer (RFC 9110 §9.3.6).
async fn http_connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    proxy: &Proxy,
    target: &Target,
) -> Result<(), Error> {
    let authority = target.authority();
    let mut request =
        format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: ferrosock\r\n");
    if let Some(credentials) = &proxy.credentials {
        let token = BASE64.encode(format!("{}:{}", credentials.user, credentials.password));
        request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    let io_error = |err| {
        Error::with_source(
            ErrorKind::Proxy,
            format!("the proxy {proxy} failed during CONNECT"),
            err,
        )
    };
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(io_error)?;
    stream.flush().await.map_err(io_error)?;
    let mut buf = BytesMut::with_capacity(1024);
    let head = loop {
        match ResponseHead::parse(&buf) {
            Ok(Some(head)) => break head,
            Ok(None) => {}
            Err(err) => {
                return Err(Error::with_source(
                    ErrorKind::Proxy,
                    format!("the proxy {proxy} answered CONNECT with something that is not HTTP"),
                    err,
                ))
            }
        }
        // Never more than one byte past the head: what follows it belongs to the tunnel.
        if buf.len() >= MAX_PROXY_ANSWER {
            return Err(Error::new(
                ErrorKind::Proxy,
                format!(
                    "the proxy {proxy} sent an answer head larger than {MAX_PROXY_ANSWER} bytes"
                ),
            ));
        }
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await.map_err(io_error)? == 0 {
            return Err(Error::new(
                ErrorKind::Proxy,
                format!("the proxy {proxy} closed the connection before answering CONNECT"),
            ));
        }
        buf.extend_from_slice(&byte);
    };
    if (200..300).contains(&head.status) {
        return Ok(());
    }
    let why = match head.status {
        407 => "proxy authentication required".to_owned(),
        // What some proxies (tinyproxy) answer to credentials they refuse.
        401 if proxy.credentials.is_some() => "unauthorized".to_owned(),
        403 => "forbidden".to_owned(),
        status => http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("refused")
            .to_ascii_lowercase(),
    };
    let credentials = match (head.status, &proxy.credentials) {
        (401 | 407, Some(_)) => " (the credentials given were refused)",
        (407, None) => " (no credentials were given)",
        _ => "",
    };
    Err(Error::new(
        ErrorKind::Proxy,
        format!(
            "the proxy {proxy} refused the tunnel to {authority}: HTTP {} {why}{credentials}",
            head.status
        ),
    )
    .with_status(head.status))
}

/// The SOCKS5 handshake (RFC 1928, RFC 1929) over `tcp`, with `tokio-socks`.
async fn socks5(tcp: TcpStream, proxy: &Proxy, target: &Target) -> Result<TcpStream, Error> {
    use tokio_socks::tcp::Socks5Stream;
    let refused = |err: tokio_socks::Error| {
        let why = match &err {
            tokio_socks::Error::PasswordAuthFailure(_) => {
                "the user name and password were refused".to_owned()
            }
            tokio_socks::Error::NoAcceptableAuthMethods => {
                "it accepts none of the offered authentication methods (does it need a user and password?)".to_owned()
            }
            other => other.to_string(),
        };
        Error::with_source(
            ErrorKind::Proxy,
            format!(
                "the SOCKS5 proxy {proxy} did not open a tunnel to {}: {why}",
                target.authority()
            ),
            err,
        )
    };
    // socks5:// resolves the name here, socks5h:// leaves it to the proxy (as curl does).
    let stream = match (proxy.kind, target.host.parse::<IpAddr>()) {
        (_, Ok(ip)) => socks5_to(tcp, SocketAddr::new(ip, target.port), proxy)
            .await
            .map_err(refused)?,
        (Kind::Socks5, Err(_)) => {
            let addr = tokio::net::lookup_host((target.host.as_str(), target.port))
                .await
                .ok()
                .and_then(|mut addrs| addrs.next())
                .ok_or_else(|| {
                    Error::new(ErrorKind::Dns, format!("cannot resolve {}", target.host))
                })?;
            socks5_to(tcp, addr, proxy).await.map_err(refused)?
        }
        (_, Err(_)) => socks5_to(tcp, (target.host.as_str(), target.port), proxy)
            .await
            .map_err(refused)?,
    };
    Ok(Socks5Stream::into_inner(stream))
}

async fn socks5_to<'t, T: tokio_socks::IntoTargetAddr<'t>>(
    tcp: TcpStream,
    to: T,
    proxy: &Proxy,
) -> Result<tokio_socks::tcp::Socks5Stream<TcpStream>, tokio_socks::Error> {
    use tokio_socks::tcp::Socks5Stream;
    match &proxy.credentials {
        Some(c) => {
            Socks5Stream::connect_with_password_and_socket(tcp, to, &c.user, &c.password).await
        }
        None => Socks5Stream::connect_with_socket(tcp, to).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        Target::parse(url).unwrap()
    }

    #[test]
    fn proxy_urls() {
        let p = Proxy::parse("http://u%3Ax:p%40ss@proxy.example:3128").unwrap();
        assert_eq!(p.to_string(), "http://proxy.example:3128");
        let c = p.credentials.as_ref().unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("u:x", "p@ss"));
        assert!(!format!("{p:?}").contains("p@ss"));
        assert_eq!(
            Proxy::parse("https://[::1]").unwrap().to_string(),
            "https://[::1]:443"
        );
        assert_eq!(Proxy::parse("socks5://h").unwrap().port, 1080);
        for bad in [
            "ftp://h:1",
            "socks4://h",
            "http://",
            "http://h/path",
            "nothing",
        ] {
            assert_eq!(
                Proxy::parse(bad).unwrap_err().kind(),
                ErrorKind::Proxy,
                "{bad}"
            );
        }
        let err = Proxy::parse("gopher://alice:hunter2@h:1").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn environment_as_curl_reads_it() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let vars = env(&[
            ("HTTPS_PROXY", "http://secure:1"),
            ("http_proxy", "plain:2"),
            ("HTTP_PROXY", "http://upper:3"),
            ("NO_PROXY", "internal.example, 10.0.0.0/8,[::1]:8080"),
        ]);
        let pick = |url: &str| {
            from_environment(&target(url), vars)
                .unwrap()
                .map(|p| p.to_string())
        };
        assert_eq!(pick("wss://a.example/").as_deref(), Some("http://secure:1"));
        assert_eq!(pick("ws://a.example/").as_deref(), Some("http://plain:2"));
        assert_eq!(pick("wss://internal.example/"), None);
        assert_eq!(pick("wss://x.internal.example/"), None);
        assert_eq!(
            pick("wss://xinternal.example/").as_deref(),
            Some("http://secure:1")
        );
        assert_eq!(pick("ws://10.1.2.3/"), None);
        assert_eq!(pick("ws://11.1.2.3/").as_deref(), Some("http://plain:2"));
        assert_eq!(pick("ws://[::1]:8080/"), None);
        assert_eq!(pick("ws://[::1]:8081/").as_deref(), Some("http://plain:2"));

        let all = env(&[("ALL_PROXY", "socks5h://s:1080"), ("no_proxy", "*")]);
        assert_eq!(from_environment(&target("ws://a/"), all).unwrap(), None);
        let all = env(&[("all_proxy", "socks5h://s:1080"), ("HTTPS_PROXY", "")]);
        assert_eq!(
            from_environment(&target("wss://a/"), all)
                .unwrap()
                .map(|p| p.to_string()),
            Some("socks5h://s:1080".to_owned())
        );
        // Under CGI, HTTP_PROXY is the request's header: ignored; http_proxy is not.
        let cgi = env(&[("REQUEST_METHOD", "GET"), ("HTTP_PROXY", "http://evil:1")]);
        assert_eq!(from_environment(&target("ws://a/"), cgi).unwrap(), None);
        let cgi = env(&[("REQUEST_METHOD", "GET"), ("http_proxy", "http://ok:1")]);
        assert!(from_environment(&target("ws://a/"), cgi).unwrap().is_some());
        let bad = env(&[("HTTPS_PROXY", "ftp://alice:hunter2@x:1")]);
        let err = from_environment(&target("wss://a/"), bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Proxy);
        assert!(!crate::error::chain(&err).contains("hunter2"));
        assert_eq!(
            from_environment(&target("wss://a/"), env(&[])).unwrap(),
            None
        );
    }

    #[test]
    fn no_proxy_entries() {
        for (list, host, port, bypass) in [
            ("example.com", "example.com", 80, true),
            (".example.com", "example.com", 80, true),
            (".example.com", "a.b.example.com", 80, true),
            ("*.example.com", "a.example.com", 80, true),
            ("example.com", "badexample.com", 80, false),
            ("example.com:443", "example.com", 80, false),
            ("example.com:443", "example.com", 443, true),
            ("EXAMPLE.com.", "example.COM", 80, true),
            ("127.0.0.1", "127.0.0.1", 1, true),
            ("127.0.0.0/8", "127.9.9.9", 1, true),
            ("192.168.0.0/16", "192.169.0.1", 1, false),
            ("::1", "::1", 1, true),
            ("fd00::/8", "fd12::1", 1, true),
            ("fd00::/8", "fe80::1", 1, false),
            ("[fd00::]/8", "fd12::1", 1, true),
            ("a.example, *", "b.example", 1, false),
            (" * ", "b.example", 1, true),
            ("127.0.0.1", "localhost", 1, false),
            ("", "a", 1, false),
            ("10.0.0.0/99", "10.0.0.1", 1, false),
        ] {
            assert_eq!(bypasses(list, host, port), bypass, "{list} {host}:{port}");
        }
    }
}
