//! The opening handshake (RFC 6455 §4): what makes an HTTP request a valid upgrade, and the
//! key that proves the answer.
//!
//! Works on `http` types (plain data, no I/O) so that the web server can validate the request
//! hyper parsed, and so that a client can build and check its own side later.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Version};
use sha1::{Digest, Sha1};

use super::deflate::{Negotiated, NegotiationError, PerMessageDeflate};

/// The GUID RFC 6455 §1.3 appends to the key.
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only protocol version this implementation speaks (RFC 6455 §4.1).
pub const VERSION: &str = "13";

/// Why an upgrade request is not a valid WebSocket opening handshake.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The method is not GET.
    #[error("the WebSocket handshake must use GET, not {0}")]
    Method(String),
    /// HTTP/1.0 or older.
    #[error("the WebSocket handshake needs HTTP/1.1 or later")]
    HttpVersion,
    /// No `Upgrade: websocket`.
    #[error("missing 'Upgrade: websocket' header")]
    MissingUpgrade,
    /// No `Connection: upgrade`.
    #[error("missing 'Connection: upgrade' header")]
    MissingConnectionUpgrade,
    /// No `Sec-WebSocket-Key`, or more than one.
    #[error("missing or repeated Sec-WebSocket-Key header")]
    MissingKey,
    /// A `Sec-WebSocket-Key` that is not 16 bytes in base64.
    #[error("Sec-WebSocket-Key is not a base64-encoded 16-byte value")]
    InvalidKey,
    /// A `Sec-WebSocket-Version` other than 13 (or none).
    #[error("unsupported Sec-WebSocket-Version (this server speaks 13)")]
    UnsupportedVersion,
    /// A `Sec-WebSocket-Protocol` list element that is not a token (RFC 6455 §4.1,
    /// RFC 7230 §3.2.6).
    #[error("Sec-WebSocket-Protocol element {0:?} is not a token")]
    InvalidProtocol(String),
    /// HTTP/2 (RFC 8441): a CONNECT whose `:protocol` is missing or not `websocket`.
    #[error("an HTTP/2 WebSocket needs an extended CONNECT with :protocol websocket, not {0}")]
    ConnectProtocol(String),
    /// Client side: the server answered with a status other than 101.
    #[error("the server answered {0} instead of 101 Switching Protocols")]
    Status(u16),
    /// Client side: `Sec-WebSocket-Accept` missing or not the one the key calls for.
    #[error("the server's Sec-WebSocket-Accept does not match the key")]
    InvalidAccept,
    /// Client side: a 101 without `Upgrade: websocket` and `Connection: upgrade`.
    #[error("the server's 101 answer lacks 'Upgrade: websocket' or 'Connection: upgrade'")]
    NotAnUpgrade,
    /// Client side: the server chose an extension or a subprotocol the client did not offer.
    #[error("the server selected {0} that the client did not offer")]
    NotOffered(&'static str),
    /// Client side: the answer is not HTTP.
    #[error("malformed HTTP answer: {0}")]
    MalformedResponse(String),
    /// Client side: the answer's head is larger than any sane server sends.
    #[error("the server's answer head exceeds {MAX_RESPONSE_HEAD} bytes")]
    ResponseTooLarge,
    /// Client side: a permessage-deflate answer the offer does not allow.
    #[error(transparent)]
    Extension(#[from] NegotiationError),
}

impl HandshakeError {
    /// The HTTP status that answers this error: 426 Upgrade Required for a version the server
    /// does not speak (with `Sec-WebSocket-Version: 13`, RFC 6455 §4.4), 405 for another method,
    /// 400 Bad Request for the rest.
    pub fn status(&self) -> StatusCode {
        match self {
            HandshakeError::UnsupportedVersion => StatusCode::UPGRADE_REQUIRED,
            HandshakeError::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Whether a request asks for a WebSocket upgrade (`Upgrade` lists `websocket`). Requests that
/// do are validated with [`validate_request`]; the others are ordinary HTTP.
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    header_has_token(headers, &header::UPGRADE, "websocket")
}

/// The subprotocols a request offers, in the client's order: repeated `Sec-WebSocket-Protocol`
/// headers make one list and empty list elements are ignored (RFC 7230 §7). An element that is
/// not a token is an error (answered with 400).
///
/// ```
/// use ferrosock_proto::handshake::offered_protocols;
/// use http::HeaderMap;
/// let mut headers = HeaderMap::new();
/// headers.append("sec-websocket-protocol", "graphql-transport-ws, ,mqtt".parse().unwrap());
/// headers.append("sec-websocket-protocol", "v12.stomp".parse().unwrap());
/// assert_eq!(offered_protocols(&headers).unwrap(), ["graphql-transport-ws", "mqtt", "v12.stomp"]);
/// headers.append("sec-websocket-protocol", "chat room".parse().unwrap());
/// assert!(offered_protocols(&headers).is_err());
/// ```
pub fn offered_protocols(headers: &HeaderMap) -> Result<Vec<String>, HandshakeError> {
    let mut offered = Vec::new();
    for value in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        for element in value.as_bytes().split(|&b| b == b',') {
            let element = element.trim_ascii();
            if element.is_empty() {
                continue;
            }
            if !is_token(element) {
                let shown = String::from_utf8_lossy(element).into_owned();
                return Err(HandshakeError::InvalidProtocol(shown));
            }
            // A token is ASCII.
            offered.push(String::from_utf8_lossy(element).into_owned());
        }
    }
    Ok(offered)
}

/// Whether `text` is an HTTP token (RFC 7230 §3.2.6): one or more `tchar`s.
pub fn is_token(text: &[u8]) -> bool {
    !text.is_empty()
        && text
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Validates an HTTP/2 extended CONNECT that opens a WebSocket (RFC 8441 §4): the method is
/// CONNECT, `protocol` (the `:protocol` pseudo-header) is `websocket`, and
/// `Sec-WebSocket-Version` is 13. There is no key: the answer is a 200.
///
/// ```
/// use ferrosock_proto::handshake::validate_extended_connect;
/// use http::{HeaderMap, Method};
/// let mut headers = HeaderMap::new();
/// headers.insert("sec-websocket-version", "13".parse().unwrap());
/// assert!(validate_extended_connect(&Method::CONNECT, Some("websocket"), &headers).is_ok());
/// assert!(validate_extended_connect(&Method::CONNECT, None, &headers).is_err());
/// ```
pub fn validate_extended_connect(
    method: &Method,
    protocol: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), HandshakeError> {
    if method != Method::CONNECT {
        return Err(HandshakeError::Method(method.to_string()));
    }
    match protocol {
        Some(protocol) if protocol.eq_ignore_ascii_case("websocket") => {}
        Some(other) => return Err(HandshakeError::ConnectProtocol(format!("{other:?}"))),
        None => return Err(HandshakeError::ConnectProtocol("none".to_owned())),
    }
    check_version(headers)
}

/// `Sec-WebSocket-Version` is present once and is 13.
fn check_version(headers: &HeaderMap) -> Result<(), HandshakeError> {
    let mut versions = headers.get_all(header::SEC_WEBSOCKET_VERSION).iter();
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.as_bytes().trim_ascii() == VERSION.as_bytes() => Ok(()),
        _ => Err(HandshakeError::UnsupportedVersion),
    }
}

/// Validates a client's opening handshake and returns the `Sec-WebSocket-Accept` value that
/// the 101 answer must carry.
///
/// ```
/// use ferrosock_proto::handshake::validate_request;
/// use http::{HeaderMap, Method, Version};
/// let mut headers = HeaderMap::new();
/// headers.insert("upgrade", "websocket".parse().unwrap());
/// headers.insert("connection", "keep-alive, Upgrade".parse().unwrap());
/// headers.insert("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap());
/// headers.insert("sec-websocket-version", "13".parse().unwrap());
/// let accept = validate_request(&Method::GET, Version::HTTP_11, &headers).unwrap();
/// assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="); // RFC 6455 §1.3
/// ```
pub fn validate_request(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
) -> Result<HeaderValue, HandshakeError> {
    if method != Method::GET {
        return Err(HandshakeError::Method(method.to_string()));
    }
    if version < Version::HTTP_11 {
        return Err(HandshakeError::HttpVersion);
    }
    if !is_upgrade_request(headers) {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !header_has_token(headers, &header::CONNECTION, "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    check_version(headers)?;
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(key), None) => key.as_bytes().trim_ascii(),
        _ => return Err(HandshakeError::MissingKey),
    };
    // RFC 6455 §4.1: the key is 16 random bytes, base64-encoded (24 characters).
    match BASE64.decode(key) {
        Ok(raw) if raw.len() == 16 => {}
        _ => return Err(HandshakeError::InvalidKey),
    }
    Ok(accept_key(key))
}

/// `base64(SHA-1(key + GUID))`, the value of `Sec-WebSocket-Accept` (RFC 6455 §4.2.2).
///
/// ```
/// use ferrosock_proto::handshake::accept_key;
/// assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// ```
pub fn accept_key(key: &[u8]) -> HeaderValue {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(GUID.as_bytes());
    let encoded = BASE64.encode(sha1.finalize());
    HeaderValue::from_str(&encoded).expect("base64 is a valid header value")
}

/// The most bytes of answer head a client reads before giving up.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Request headers the handshake sets itself; a client may not set them too.
pub const RESERVED_HEADERS: &[&str] = &[
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
];

/// The client's side of the opening handshake (RFC 6455 §4.1): the request, and the checks on
/// the answer.
///
/// ```
/// use ferrosock_proto::handshake::ClientHandshake;
/// let handshake = ClientHandshake::new(*b"the sample nonce");
/// assert_eq!(handshake.key(), "dGhlIHNhbXBsZSBub25jZQ==");
/// let request = handshake.request("example.com", "/chat?room=1", &[]);
/// assert!(request.starts_with(b"GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\n"));
/// let answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
///     Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
/// let accepted = handshake.check_response(answer).unwrap().unwrap();
/// assert_eq!((accepted.head_len, accepted.deflate, accepted.protocol), (answer.len(), None, None));
/// ```
#[derive(Clone, Debug)]
pub struct ClientHandshake {
    key: String,
    accept: HeaderValue,
    /// The permessage-deflate settings offered, if any.
    deflate: Option<PerMessageDeflate>,
    /// The subprotocols offered, in order of preference.
    protocols: Vec<String>,
}

/// A server's valid 101 answer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Accepted {
    /// The length of the answer's head: what follows is WebSocket data.
    pub head_len: usize,
    /// permessage-deflate, if the server accepted the offer.
    pub deflate: Option<Negotiated>,
    /// The subprotocol the server chose among those offered, if any.
    pub protocol: Option<String>,
}

/// The head of an HTTP/1.1 answer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// The headers; those whose name or value is not valid HTTP are left out.
    pub headers: HeaderMap,
    /// The length of the head: what follows is the body, or WebSocket data after a 101.
    pub len: usize,
}

impl ResponseHead {
    /// Parses the head at the front of `buf`: `Ok(None)` while it is not complete, an error
    /// when it is not HTTP or exceeds [`MAX_RESPONSE_HEAD`].
    ///
    /// ```
    /// use ferrosock_proto::handshake::ResponseHead;
    /// let head = ResponseHead::parse(b"HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n").unwrap().unwrap();
    /// assert_eq!((head.status, head.headers["location"].to_str().unwrap()), (302, "/x"));
    /// assert_eq!(ResponseHead::parse(b"HTTP/1.1 200 OK\r\n").unwrap(), None);
    /// ```
    pub fn parse(buf: &[u8]) -> Result<Option<ResponseHead>, HandshakeError> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let len = match response.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
                return Err(HandshakeError::ResponseTooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(err) => return Err(HandshakeError::MalformedResponse(err.to_string())),
        };
        let mut map = HeaderMap::new();
        for header in response.headers.iter() {
            let name = header::HeaderName::from_bytes(header.name.as_bytes());
            let value = HeaderValue::from_bytes(header.value);
            if let (Ok(name), Ok(value)) = (name, value) {
                map.append(name, value);
            }
        }
        Ok(Some(ResponseHead {
            status: response.code.unwrap_or(0),
            headers: map,
            len,
        }))
    }
}

impl ClientHandshake {
    /// A handshake whose key is `nonce` in base64; the nonce must be random (RFC 6455 §4.1).
    pub fn new(nonce: [u8; 16]) -> ClientHandshake {
        let key = BASE64.encode(nonce);
        let accept = accept_key(key.as_bytes());
        ClientHandshake {
            key,
            accept,
            deflate: None,
            protocols: Vec::new(),
        }
    }

    /// Offers these subprotocols, in order of preference (`Sec-WebSocket-Protocol`). Each must
    /// be a token ([`is_token`]); the caller checks.
    pub fn offer_protocols(mut self, protocols: &[String]) -> ClientHandshake {
        self.protocols = protocols.to_vec();
        self
    }

    /// Offers permessage-deflate with these settings (nothing, if they are disabled).
    pub fn offer_deflate(mut self, settings: &PerMessageDeflate) -> ClientHandshake {
        self.deflate = settings.enabled.then(|| settings.clone());
        self
    }

    /// The `Sec-WebSocket-Key` value.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The request: `GET resource HTTP/1.1`, `Host`, the upgrade headers, then `extra` (names
    /// and values the caller has checked: no CR or LF, none of [`RESERVED_HEADERS`]). A `Host`
    /// in `extra` replaces the default one.
    pub fn request(&self, host: &str, resource: &str, extra: &[(String, String)]) -> Vec<u8> {
        let mut request = format!("GET {resource} HTTP/1.1\r\n").into_bytes();
        let mut push = |name: &str, value: &str| {
            request.extend_from_slice(name.as_bytes());
            request.extend_from_slice(b": ");
            request.extend_from_slice(value.as_bytes());
            request.extend_from_slice(b"\r\n");
        };
        if !extra
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("host"))
        {
            push("Host", host);
        }
        push("Upgrade", "websocket");
        push("Connection", "Upgrade");
        push("Sec-WebSocket-Key", &self.key);
        push("Sec-WebSocket-Version", VERSION);
        if let Some(deflate) = &self.deflate {
            push("Sec-WebSocket-Extensions", &deflate.client_offer());
        }
        if !self.protocols.is_empty() {
            push("Sec-WebSocket-Protocol", &self.protocols.join(", "));
        }
        for (name, value) in extra {
            push(name, value);
        }
        request.extend_from_slice(b"\r\n");
        request
    }

    /// Checks the server's answer at the front of `buf`. `Ok(None)`: the head is not complete
    /// yet. `Ok(Some(accepted))`: a valid 101.
    pub fn check_response(&self, buf: &[u8]) -> Result<Option<Accepted>, HandshakeError> {
        match ResponseHead::parse(buf)? {
            Some(head) => self.check_upgrade(&head).map(Some),
            None => Ok(None),
        }
    }

    /// Checks a whole HTTP/1.1 answer head: a 101 that accepts this handshake.
    pub fn check_upgrade(&self, head: &ResponseHead) -> Result<Accepted, HandshakeError> {
        if head.status != 101 {
            return Err(HandshakeError::Status(head.status));
        }
        let map = &head.headers;
        // RFC 6455 §4.1, the client's checks of the answer, in order.
        if !is_upgrade_request(map) || !header_has_token(map, &header::CONNECTION, "upgrade") {
            return Err(HandshakeError::NotAnUpgrade);
        }
        let mut accepts = map.get_all(header::SEC_WEBSOCKET_ACCEPT).iter();
        match (accepts.next(), accepts.next()) {
            (Some(accept), None) if accept.as_bytes().trim_ascii() == self.accept.as_bytes() => {}
            _ => return Err(HandshakeError::InvalidAccept),
        }
        self.accepted(map, head.len)
    }

    /// The headers of an extended CONNECT (RFC 8441 §4) for this handshake, besides the
    /// pseudo-headers: `sec-websocket-version`, and the extension and subprotocol offers.
    pub fn extended_connect_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static(VERSION),
        );
        if let Some(deflate) = &self.deflate {
            if let Ok(value) = HeaderValue::from_str(&deflate.client_offer()) {
                headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
            }
        }
        if let Ok(value) = HeaderValue::from_str(&self.protocols.join(", ")) {
            if !self.protocols.is_empty() {
                headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
            }
        }
        headers
    }

    /// Checks the answer to an extended CONNECT (RFC 8441 §5): a 2xx status, and the
    /// extension and subprotocol the server chose among those offered. There is no
    /// `Sec-WebSocket-Accept` over HTTP/2; `head_len` is 0.
    pub fn check_extended_connect(
        &self,
        status: u16,
        headers: &HeaderMap,
    ) -> Result<Accepted, HandshakeError> {
        if !(200..300).contains(&status) {
            return Err(HandshakeError::Status(status));
        }
        self.accepted(headers, 0)
    }

    /// The extension and subprotocol of an accepting answer.
    fn accepted(&self, map: &HeaderMap, head_len: usize) -> Result<Accepted, HandshakeError> {
        let deflate = match (
            map.contains_key(header::SEC_WEBSOCKET_EXTENSIONS),
            &self.deflate,
        ) {
            (false, _) => None,
            (true, None) => return Err(HandshakeError::NotOffered("an extension")),
            (true, Some(settings)) => {
                let values = map
                    .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
                    .iter()
                    .map(HeaderValue::as_bytes);
                Some(settings.client_accept(values)?)
            }
        };
        let protocol = self.chosen_protocol(map)?;
        Ok(Accepted {
            head_len,
            deflate,
            protocol,
        })
    }

    /// The subprotocol an answer chose: one value, among those offered (RFC 6455 §4.1).
    fn chosen_protocol(&self, answer: &HeaderMap) -> Result<Option<String>, HandshakeError> {
        let mut values = answer.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter();
        let chosen = match (values.next(), values.next()) {
            (None, _) => return Ok(None),
            (Some(chosen), None) => chosen.as_bytes().trim_ascii(),
            (Some(_), Some(_)) => return Err(HandshakeError::NotOffered("several subprotocols")),
        };
        match self.protocols.iter().find(|p| p.as_bytes() == chosen) {
            Some(offered) => Ok(Some(offered.clone())),
            None => Err(HandshakeError::NotOffered("a subprotocol")),
        }
    }
}

/// Whether any of the `name` headers holds `token` in its comma-separated list
/// (case-insensitive, RFC 7230 §3.2.6).
fn header_has_token(headers: &HeaderMap, name: &header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("host", "example.com".parse().unwrap());
        headers.insert("upgrade", "websocket".parse().unwrap());
        headers.insert("connection", "Upgrade".parse().unwrap());
        headers.insert(
            "sec-websocket-key",
            "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
        );
        headers.insert("sec-websocket-version", "13".parse().unwrap());
        headers
    }

    fn check(headers: &HeaderMap) -> Result<HeaderValue, HandshakeError> {
        validate_request(&Method::GET, Version::HTTP_11, headers)
    }

    #[test]
    fn the_rfc_example() {
        assert_eq!(check(&valid()).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn tokens_are_case_insensitive_and_may_be_listed() {
        let mut headers = valid();
        headers.insert("upgrade", "WebSocket".parse().unwrap());
        headers.insert("connection", "keep-alive,  UPGRADE ".parse().unwrap());
        assert!(check(&headers).is_ok());
    }

    #[test]
    fn each_missing_piece_has_its_error_and_status() {
        let cases: &[(&str, Option<&str>, HandshakeError, u16)] = &[
            ("upgrade", None, HandshakeError::MissingUpgrade, 400),
            ("upgrade", Some("h2c"), HandshakeError::MissingUpgrade, 400),
            (
                "connection",
                None,
                HandshakeError::MissingConnectionUpgrade,
                400,
            ),
            (
                "connection",
                Some("close"),
                HandshakeError::MissingConnectionUpgrade,
                400,
            ),
            ("sec-websocket-key", None, HandshakeError::MissingKey, 400),
            (
                "sec-websocket-key",
                Some("c2hvcnQ="),
                HandshakeError::InvalidKey,
                400,
            ),
            (
                "sec-websocket-key",
                Some("!!!!not base64!!!!!!!!=="),
                HandshakeError::InvalidKey,
                400,
            ),
            (
                "sec-websocket-version",
                None,
                HandshakeError::UnsupportedVersion,
                426,
            ),
            (
                "sec-websocket-version",
                Some("8"),
                HandshakeError::UnsupportedVersion,
                426,
            ),
        ];
        for (name, value, expected, status) in cases {
            let mut headers = valid();
            match value {
                Some(v) => headers.insert(*name, v.parse().unwrap()),
                None => headers.remove(*name),
            };
            let err = check(&headers).unwrap_err();
            assert_eq!(&err, expected, "{name}: {value:?}");
            assert_eq!(err.status().as_u16(), *status);
        }
    }

    #[test]
    fn an_extended_connect_needs_the_websocket_protocol_and_version_13() {
        let mut headers = HeaderMap::new();
        headers.insert("sec-websocket-version", "13".parse().unwrap());
        let connect = |method: &Method, protocol, headers: &HeaderMap| {
            validate_extended_connect(method, protocol, headers)
        };
        assert_eq!(
            connect(&Method::CONNECT, Some("websocket"), &headers),
            Ok(())
        );
        assert_eq!(
            connect(&Method::CONNECT, Some("WebSocket"), &headers),
            Ok(())
        );
        let err = connect(&Method::CONNECT, None, &headers).unwrap_err();
        assert_eq!(
            (err.status().as_u16(), err.to_string().contains("none")),
            (400, true)
        );
        let err = connect(&Method::CONNECT, Some("webtransport"), &headers).unwrap_err();
        assert!(err.to_string().contains("\"webtransport\""), "{err}");
        assert_eq!(
            connect(&Method::GET, Some("websocket"), &headers),
            Err(HandshakeError::Method("GET".to_owned()))
        );
        let err = connect(&Method::CONNECT, Some("websocket"), &HeaderMap::new()).unwrap_err();
        assert_eq!(
            (err.clone(), err.status().as_u16()),
            (HandshakeError::UnsupportedVersion, 426)
        );
    }

    #[test]
    fn offered_protocols_are_one_list_in_the_clients_order() {
        let mut headers = HeaderMap::new();
        assert_eq!(offered_protocols(&headers), Ok(vec![]));
        headers.append(
            "sec-websocket-protocol",
            ", wamp.2.json ,,".parse().unwrap(),
        );
        headers.append("sec-websocket-protocol", "".parse().unwrap());
        headers.append("sec-websocket-protocol", "mqtt,graphql-ws".parse().unwrap());
        assert_eq!(
            offered_protocols(&headers).unwrap(),
            ["wamp.2.json", "mqtt", "graphql-ws"]
        );
        for bad in ["a b", "chat/1", "\"quoted\"", "x;y", "é"] {
            let mut headers = HeaderMap::new();
            let value = HeaderValue::from_bytes(bad.as_bytes()).unwrap();
            headers.append("sec-websocket-protocol", value);
            let err = offered_protocols(&headers).unwrap_err();
            assert!(matches!(err, HandshakeError::InvalidProtocol(_)), "{bad}");
            assert_eq!(err.status().as_u16(), 400);
        }
    }

    #[test]
    fn repeated_keys_are_rejected() {
        let mut headers = valid();
        headers.append(
            "sec-websocket-key",
            "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
        );
        assert_eq!(check(&headers), Err(HandshakeError::MissingKey));
    }

    const ANSWER: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                          Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";

    fn client() -> ClientHandshake {
        ClientHandshake::new(*b"the sample nonce")
    }

    #[test]
    fn a_client_request_carries_the_key_and_extra_headers_in_order() {
        let extra = vec![
            ("Cookie".to_owned(), "a=1; b=2".to_owned()),
            ("X-Multi".to_owned(), "1".to_owned()),
            ("X-Multi".to_owned(), "2".to_owned()),
        ];
        let request = String::from_utf8(client().request("[::1]:8080", "/", &extra)).unwrap();
        assert_eq!(
            request,
            "GET / HTTP/1.1\r\nHost: [::1]:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Cookie: a=1; b=2\r\nX-Multi: 1\r\nX-Multi: 2\r\n\r\n"
        );
        let custom = vec![("host".to_owned(), "virtual.example".to_owned())];
        let request = String::from_utf8(client().request("127.0.0.1", "/", &custom)).unwrap();
        assert_eq!(request.matches("ost: ").count(), 1, "{request}");
        assert!(request.contains("host: virtual.example"));
    }

    #[test]
    fn the_answer_must_be_a_complete_101_with_the_right_accept() {
        let full = format!("{ANSWER}\r\nleftover frame bytes");
        let accepted = Accepted {
            head_len: ANSWER.len() + 2,
            deflate: None,
            protocol: None,
        };
        assert_eq!(client().check_response(full.as_bytes()), Ok(Some(accepted)));
        // Every strict prefix of the head is incomplete.
        for cut in 0..ANSWER.len() + 2 {
            assert_eq!(
                client().check_response(&full.as_bytes()[..cut]),
                Ok(None),
                "{cut}"
            );
        }
        let cases: &[(&str, HandshakeError)] = &[
            ("HTTP/1.1 403 Forbidden\r\n\r\n", HandshakeError::Status(403)),
            ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", HandshakeError::Status(200)),
            ("HTTP/1.1 101 OK\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n", HandshakeError::NotAnUpgrade),
            ("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n", HandshakeError::InvalidAccept),
            ("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", HandshakeError::InvalidAccept),
        ];
        for (answer, expected) in cases {
            assert_eq!(
                client().check_response(answer.as_bytes()),
                Err(expected.clone()),
                "{answer}"
            );
        }
        let extension = format!("{ANSWER}Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n");
        assert_eq!(
            client().check_response(extension.as_bytes()),
            Err(HandshakeError::NotOffered("an extension"))
        );
        let protocol = format!("{ANSWER}Sec-WebSocket-Protocol: chat\r\n\r\n");
        assert_eq!(
            client().check_response(protocol.as_bytes()),
            Err(HandshakeError::NotOffered("a subprotocol"))
        );
        let offering = client().offer_protocols(&["mqtt".to_owned(), "chat".to_owned()]);
        let request = String::from_utf8(offering.request("h", "/", &[])).unwrap();
        assert!(
            request.contains("\r\nSec-WebSocket-Protocol: mqtt, chat\r\n"),
            "{request}"
        );
        let accepted = offering
            .check_response(protocol.as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(
            (accepted.head_len, accepted.protocol.as_deref()),
            (protocol.len(), Some("chat"))
        );
        // One value, among those offered: not a list, not twice, not another.
        for answer in [
            "Sec-WebSocket-Protocol: mqtt, chat\r\n",
            "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: chat\r\n",
            "Sec-WebSocket-Protocol: stomp\r\n",
            "Sec-WebSocket-Protocol: CHAT\r\n",
        ] {
            let answer = format!("{ANSWER}{answer}\r\n");
            assert!(
                matches!(
                    offering.check_response(answer.as_bytes()),
                    Err(HandshakeError::NotOffered(_))
                ),
                "{answer}"
            );
        }
        // With permessage-deflate offered: the answer is checked against the offer.
        let offered = client().offer_deflate(&PerMessageDeflate::default());
        let request = String::from_utf8(offered.request("h", "/", &[])).unwrap();
        assert!(request
            .contains("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover;"));
        let deflate = format!("{ANSWER}Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; server_max_window_bits=10\r\n\r\n");
        let agreed = offered
            .check_response(deflate.as_bytes())
            .unwrap()
            .unwrap()
            .deflate
            .unwrap();
        assert_eq!(
            (agreed.decompress_window_bits, agreed.compress_window_bits),
            (10, 12)
        );
        let wider = format!("{ANSWER}Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; server_max_window_bits=14\r\n\r\n");
        assert!(matches!(
            offered.check_response(wider.as_bytes()),
            Err(HandshakeError::Extension(_))
        ));
        assert!(matches!(
            client().check_response(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(HandshakeError::MalformedResponse(_))
        ));
        let endless = format!("HTTP/1.1 101 OK\r\nX: {}", "y".repeat(MAX_RESPONSE_HEAD));
        assert_eq!(
            client().check_response(endless.as_bytes()),
            Err(HandshakeError::ResponseTooLarge)
        );
    }

    #[test]
    fn method_and_version() {
        let err = validate_request(&Method::POST, Version::HTTP_11, &valid()).unwrap_err();
        assert_eq!(err.status(), StatusCode::METHOD_NOT_ALLOWED);
        let err = validate_request(&Method::GET, Version::HTTP_10, &valid()).unwrap_err();
        assert_eq!(err, HandshakeError::HttpVersion);
    }
}
