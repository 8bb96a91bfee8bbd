//! The `request` object given to `on_connection`: the client's upgrade request.

use std::net::SocketAddr;

/// The client's upgrade request, as `on_connection` sees it.
///
/// ```
/// # use ferrosock::Request;
/// fn allowed(request: &Request) -> bool {
///     request.headers().get("origin") == Some("https://example.com")
///         && request.query().get("token").is_some()
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    headers: Params,
    query: Params,
    url: String,
    remote_address: String,
    remote_port: Option<u16>,
    protocols: Vec<String>,
    version: http::Version,
}

impl Request {
    /// The request of `request`'s head, from `remote` (`None`: unknown, see
    /// [`remote_address`](Self::remote_address)), offering `protocols`.
    pub(crate) fn from_parts(
        request: &http::request::Parts,
        remote: Option<SocketAddr>,
        protocols: Vec<String>,
    ) -> Request {
        let mut headers: Vec<(String, String)> = request
            .headers
            .iter()
            .map(|(name, value)| {
                // `http` stores names lower-cased already.
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect();
        // Over HTTP/2 the host is `:authority` (RFC 9113 §8.3.1): shown as `host`, as HTTP/1.1
        // sends it, so that handlers checking the host work either way.
        if let Some(authority) = request.uri.authority() {
            if !request.headers.contains_key(http::header::HOST) {
                headers.insert(0, ("host".to_owned(), authority.as_str().to_owned()));
            }
        }
        let query = request
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let url = request.uri.path_and_query().map_or_else(
            || request.uri.path().to_owned(),
            |pq| pq.as_str().to_owned(),
        );
        Request {
            headers: Params {
                pairs: headers,
                ignore_case: true,
            },
            query: Params {
                pairs: query,
                ignore_case: false,
            },
            url,
            remote_address: remote
                .map_or_else(String::new, |remote| remote.ip().to_canonical().to_string()),
            remote_port: remote.map(|remote| remote.port()),
            protocols,
            version: request.version,
        }
    }

    /// The subprotocols the client offered (`Sec-WebSocket-Protocol`), in its order of
    /// preference: repeated headers make one list, empty elements are left out. See
    /// [`ConnectionEvent::select_protocol`](crate::ConnectionEvent::select_protocol).
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }

    /// The HTTP version the request came over: `HTTP/1.1` for an upgrade, `HTTP/2` for an
    /// extended CONNECT (RFC 8441).
    pub fn http_version(&self) -> http::Version {
        self.version
    }

    /// The request's headers. Names are looked up case-insensitively (`get("Origin")` and
    /// `get("origin")` are the same header) and listed lower-cased; a repeated header keeps
    /// every value, in order.
    pub fn headers(&self) -> &Params {
        &self.headers
    }

    /// The URL's query parameters, percent-decoded. A repeated key keeps every value.
    pub fn query(&self) -> &Params {
        &self.query
    }

    /// The path and query exactly as in the request line, e.g. `/status?name=ryan`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The client's IP address as plain text (`127.0.0.1`, `::1`); an IPv4-mapped IPv6
    /// address is shown as IPv4.
    ///
    /// Empty when the HTTP layer does not know it: through a [door](crate::door) (axum,
    /// tower, hyper) the address comes from the request's extensions — a
    /// [`RemoteAddr`](crate::door::RemoteAddr), or axum's `ConnectInfo<SocketAddr>` with the
    /// `axum` feature — and is empty without them.
    pub fn remote_address(&self) -> &str {
        &self.remote_address
    }

    /// The client's TCP port (ferrosock extension); `None` where
    /// [`remote_address`](Self::remote_address) is empty. WebSockets over one HTTP/2
    /// connection share it.
    pub fn remote_port(&self) -> Option<u16> {
        self.remote_port
    }

    /// The `Origin` header: the page a browser's script runs on (`https://example.com`), or
    /// `null` for sandboxed and local pages. Browsers send it with every WebSocket handshake;
    /// other clients (command-line tools, servers) usually do not.
    pub fn origin(&self) -> Option<&str> {
        self.headers.get("origin")
    }

    /// Whether the request comes from a page of one of the `allowed` origins: the defence
    /// against cross-site WebSocket hijacking, where a page of another site opens a WebSocket
    /// to this server with the user's cookies.
    ///
    /// Entries are origins as browsers write them, `scheme://host[:port]`; scheme and host
    /// compare case-insensitively, a missing port is the scheme's default (so
    /// `https://example.com` and `https://example.com:443` are the same origin), and a host
    /// of the form `*.example.com` allows every subdomain of `example.com` (not `example.com`
    /// itself). `"null"` must be listed to allow pages with a `null` origin.
    ///
    /// A request without an `Origin` header is not allowed: it is not from a browser. To
    /// accept non-browser clients too, test [`origin`](Self::origin) for `None` first, as
    /// below. A request with several `Origin` headers is not allowed either.
    ///
    /// ```
    /// # use ferrosock::*;
    /// struct Chat;
    /// # struct Member;
    /// # impl ConnectionHandler for Member {
    /// #     type Server = Chat;
    /// #     fn on_message(&self, _: &WebSocketConnection<Chat>, _: MessageEvent) {}
    /// # }
    /// impl ServerHandler for Chat {
    ///     type Connection = Member;
    ///     fn on_connection(&self, _: &WebSocketServer<Self>, event: ConnectionEvent) -> Option<Member> {
    ///         let request = &event.request;
    ///         // Browsers only from our own pages; other clients authenticate otherwise.
    ///         let allowed = ["https://chat.example.com", "https://*.example.com"];
    ///         (request.origin().is_none() || request.origin_allowed(&allowed)).then_some(Member)
    ///     }
    /// }
    /// ```
    pub fn origin_allowed(&self, allowed: &[&str]) -> bool {
        let mut origins = self.headers.get_all("origin");
        let (Some(origin), None) = (origins.next(), origins.next()) else {
            return false;
        };
        let origin = origin.trim();
        if origin.eq_ignore_ascii_case("null") {
            return allowed
                .iter()
                .any(|a| a.trim().eq_ignore_ascii_case("null"));
        }
        let Some(origin) = Origin::parse(origin) else {
            return false;
        };
        allowed
            .iter()
            .filter_map(|entry| Origin::parse(entry.trim()))
            .any(|entry| entry.allows(&origin))
    }

    /// The request as 4D shows it: `{headers, query, url, remoteAddress}`, where a repeated
    /// header or key is a list of its values.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "headers": self.headers.to_json(),
            "query": self.query.to_json(),
            "url": self.url,
            "remoteAddress": self.remote_address,
        })
    }
}

/// Checks subprotocol names given to the server or the client: each must be an HTTP token
/// (RFC 7230 §3.2.6), as the handshake carries them.
pub(crate) fn check_protocols(protocols: &[String]) -> Result<(), crate::error::Error> {
    match protocols
        .iter()
        .find(|p| !crate::proto::handshake::is_token(p.as_bytes()))
    {
        Some(bad) => Err(crate::error::Error::new(
            crate::error::ErrorKind::InvalidArgument,
            format!("subprotocol {bad:?} is not an HTTP token (RFC 7230 §3.2.6)"),
        )),
        None => Ok(()),
    }
}

/// An origin, `scheme://host:port`, normalised by the URL parser (lower case, IDNA, default
/// ports).
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    /// `None` for anything that is not a bare origin (a path, a query, user info).
    fn parse(text: &str) -> Option<Origin> {
        // `*.example.com` is not a valid host: parse `x.example.com` and remember the star.
        let (text, wildcard) = match text.split_once("://*.") {
            Some((scheme, rest)) => (format!("{scheme}://x.{rest}"), true),
            None => (text.to_owned(), false),
        };
        let url = url::Url::parse(&text).ok()?;
        let bare = matches!(url.path(), "" | "/")
            && url.query().is_none()
            && url.fragment().is_none()
            && url.username().is_empty()
            && url.password().is_none();
        if !bare {
            return None;
        }
        let host = url.host_str()?;
        let host = if wildcard {
            // "x.example.com" -> "*.example.com"
            format!("*{}", &host[1..])
        } else {
            host.to_owned()
        };
        Some(Origin {
            scheme: url.scheme().to_owned(),
            host,
            port: url.port_or_known_default(),
        })
    }

    /// Whether this allowed entry admits `origin`.
    fn allows(&self, origin: &Origin) -> bool {
        let host = match self.host.strip_prefix('*') {
            // ".example.com": a strict subdomain.
            Some(suffix) => origin.host.len() > suffix.len() && origin.host.ends_with(suffix),
            None => self.host == origin.host,
        };
        host && self.scheme == origin.scheme && self.port == origin.port
    }
}

/// Names with one or more values, in the order they came: request headers or query parameters.
///
/// Names compare exactly, except in the [headers of a request](Request::headers), where they
/// compare case-insensitively as HTTP requires.
///
/// ```
/// # use ferrosock::Params;
/// let params: Params = [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
/// assert_eq!(params.get("a"), Some("1"));
/// assert_eq!(params.get_all("a").collect::<Vec<_>>(), ["1", "3"]);
/// assert_eq!(params.get("A"), None); // a query's keys are case-sensitive
/// assert_eq!(params.to_json(), serde_json::json!({"a": ["1", "3"], "b": "2"}));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
    /// Names compare ASCII-case-insensitively (HTTP header names).
    ignore_case: bool,
}

impl Params {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| self.same_name(n, name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(n, _)| self.same_name(n, name))
            .map(|(_, v)| v.as_str())
    }

    fn same_name(&self, a: &str, b: &str) -> bool {
        if self.ignore_case {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Every (name, value) pair, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// How many (name, value) pairs there are.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// A JSON object: each name maps to its value, or to the list of its values when repeated.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for (name, value) in &self.pairs {
            match map.get_mut(name) {
                None => {
                    map.insert(name.clone(), value.clone().into());
                }
                Some(serde_json::Value::Array(values)) => values.push(value.clone().into()),
                Some(first) => {
                    let first = first.take();
                    map.insert(name.clone(), vec![first, value.clone().into()].into());
                }
            }
        }
        map.into()
    }
}

/// Equal when they hold the same pairs in the same order (however their names compare).
impl PartialEq for Params {
    fn eq(&self, other: &Params) -> bool {
        self.pairs == other.pairs
    }
}

impl Eq for Params {}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Params {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Params {
        Params {
            pairs: iter
                .into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
            ignore_case: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_an_http_request() {
        let http = http::Request::get("/status?name=ryan&tag=a%20b&tag=c+d")
            .header("Host", "localhost")
            .header("X-Multi", "1")
            .header("x-multi", "2")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let mapped: SocketAddr = "[::ffff:10.0.0.7]:5000".parse().unwrap();
        let request = Request::from_parts(&http, Some(mapped), vec![]);
        assert_eq!(request.url(), "/status?name=ryan&tag=a%20b&tag=c+d");
        assert_eq!(request.remote_address(), "10.0.0.7");
        assert_eq!(request.remote_port(), Some(5000));
        assert_eq!(request.query().get("name"), Some("ryan"));
        assert_eq!(
            request.query().get_all("tag").collect::<Vec<_>>(),
            ["a b", "c d"]
        );
        assert_eq!(request.headers().get("host"), Some("localhost"));
        assert_eq!(
            request.headers().get_all("x-multi").collect::<Vec<_>>(),
            ["1", "2"]
        );
        // Header names are case-insensitive (issue #10): any spelling finds the header, and
        // the listing is lower-cased.
        assert_eq!(request.headers().get("Host"), Some("localhost"));
        assert_eq!(request.headers().get("HOST"), Some("localhost"));
        assert!(request.headers().contains("X-Multi"));
        assert_eq!(
            request.headers().get_all("X-MULTI").collect::<Vec<_>>(),
            ["1", "2"]
        );
        assert!(request
            .headers()
            .iter()
            .all(|(name, _)| name == name.to_ascii_lowercase()));
        // Query keys are not header names: they stay case-sensitive.
        assert_eq!(request.query().get("NAME"), None);
        let json = request.to_json();
        assert_eq!(json["headers"]["x-multi"], serde_json::json!(["1", "2"]));
        assert_eq!(json["query"]["name"], "ryan");
        assert_eq!(json["remoteAddress"], "10.0.0.7");
        let v6 = Request::from_parts(&http, Some("[::1]:1".parse().unwrap()), vec![]);
        assert_eq!(v6.remote_address(), "::1");
    }

    fn with_origins(origins: &[&str]) -> Request {
        let mut request = http::Request::builder().uri("/chat");
        for origin in origins {
            request = request.header("origin", *origin);
        }
        Request::from_parts(
            &request.body(()).unwrap().into_parts().0,
            Some("127.0.0.1:9".parse().unwrap()),
            vec![],
        )
    }

    #[test]
    fn origin_checks() {
        let allowed = [
            "https://example.com",
            "http://localhost:8080",
            "https://*.example.org",
        ];
        let cases = [
            ("https://example.com", true),
            ("HTTPS://Example.COM", true),
            ("https://example.com:443", true),
            ("https://example.com:8443", false),
            ("http://example.com", false),
            ("https://example.com.evil.net", false),
            ("https://evilexample.com", false),
            ("http://localhost:8080", true),
            ("http://localhost", false),
            ("https://chat.example.org", true),
            ("https://a.b.example.org", true),
            ("https://example.org", false),
            ("https://evil-example.org", false),
            ("null", false),
            ("https://example.com/path", false),
            ("https://user@example.com", false),
            ("not an origin", false),
            ("", false),
        ];
        for (origin, expected) in cases {
            let request = with_origins(&[origin]);
            assert_eq!(request.origin(), Some(origin));
            assert_eq!(request.origin_allowed(&allowed), expected, "{origin:?}");
        }
        assert!(with_origins(&["null"]).origin_allowed(&["null"]));
        // Not from a browser, or ambiguous: not allowed.
        assert!(!with_origins(&[]).origin_allowed(&allowed));
        assert_eq!(with_origins(&[]).origin(), None);
        assert!(
            !with_origins(&["https://example.com", "https://evil.net"]).origin_allowed(&allowed)
        );
        // A malformed allowed entry allows nothing.
        assert!(!with_origins(&["https://example.com"]).origin_allowed(&["example.com"]));
    }
}
