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

/// Validates a client's opening handshake and returns the `Sec-WebSocket-Accept` value that
/// the 101 answer must carry.
///
/// ```
/// use ferrosock::proto::handshake::validate_request;
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
    let mut versions = headers.get_all(header::SEC_WEBSOCKET_VERSION).iter();
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.as_bytes().trim_ascii() == VERSION.as_bytes() => {}
        _ => return Err(HandshakeError::UnsupportedVersion),
    }
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
/// use ferrosock::proto::handshake::accept_key;
/// assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// ```
pub fn accept_key(key: &[u8]) -> HeaderValue {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(GUID.as_bytes());
    let encoded = BASE64.encode(sha1.finalize());
    HeaderValue::from_str(&encoded).expect("base64 is a valid header value")
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
    fn repeated_keys_are_rejected() {
        let mut headers = valid();
        headers.append(
            "sec-websocket-key",
            "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
        );
        assert_eq!(check(&headers), Err(HandshakeError::MissingKey));
    }

    #[test]
    fn method_and_version() {
        let err = validate_request(&Method::POST, Version::HTTP_11, &valid()).unwrap_err();
        assert_eq!(err.status(), StatusCode::METHOD_NOT_ALLOWED);
        let err = validate_request(&Method::GET, Version::HTTP_10, &valid()).unwrap_err();
        assert_eq!(err, HandshakeError::HttpVersion);
    }
}
