//! Close codes (RFC 6455 §7.4) and close frame payloads (§5.5.1).

use bytes::{BufMut, Bytes, BytesMut};

use super::error::ProtocolError;
use super::frame::MAX_CONTROL_PAYLOAD;
use super::utf8;

/// A close status code.
///
/// ```
/// use ferrosock_proto::CloseCode;
/// assert!(CloseCode::NORMAL.is_valid_on_wire());
/// assert!(!CloseCode::ABNORMAL.is_valid_on_wire()); // 1006 is never sent
/// assert_eq!(CloseCode::GOING_AWAY.description(), "An endpoint is going away.");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: a server going down or a browser leaving the page.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: reported when a close frame carried no code; never sent.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: reported when the connection dropped without a close frame; never sent.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: data inconsistent with its type, such as invalid UTF-8 in a text message.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a message that violates the endpoint's policy.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message too big to process.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: an unexpected condition on the server (a panicking handler, for one).
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1012: the server is restarting.
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1013: the server is overloaded; try again later.
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 1014: a gateway got an invalid response upstream.
    pub const BAD_GATEWAY: CloseCode = CloseCode(1014);
    /// 1015: reported when the TLS handshake failed; never sent.
    pub const TLS_HANDSHAKE: CloseCode = CloseCode(1015);

    /// Whether this code may appear in a close frame: 1000–1003, 1007–1014 (the codes the
    /// RFC and IANA define for the wire) and 3000–4999 (registered and private use).
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    /// Whether a connection that ended with this code ended normally: 1000, 1005 (a close
    /// frame without a code) and the application range 3000–4999. Every other code is an
    /// abnormal end, reported through `on_error` before `on_terminate`.
    pub fn is_normal(self) -> bool {
        matches!(self.0, 1000 | 1005 | 3000..=4999)
    }

    /// A fixed English description, used as the reason when the peer gave none.
    pub fn description(self) -> &'static str {
        match self.0 {
            1000 => "WebSocket has been closed normally.",
            1001 => "An endpoint is going away.",
            1002 => "Protocol error.",
            1003 => "Unsupported data.",
            1005 => "No status code was present.",
            1006 => "Abnormal closure (close frame not sent nor received).",
            1007 => "Invalid frame payload data.",
            1008 => "Policy violation.",
            1009 => "Message too big.",
            1010 => "Mandatory extension missing.",
            1011 => "Internal server error.",
            1012 => "Service restart.",
            1013 => "Try again later.",
            1014 => "Bad gateway.",
            1015 => "TLS handshake failure.",
            3000..=3999 => "Closed by the application (registered code).",
            4000..=4999 => "Closed by the application.",
            _ => "Unknown close code.",
        }
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> CloseCode {
        CloseCode(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> u16 {
        code.0
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The contents of a close frame that carried a status code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// The reason, valid UTF-8 of at most 123 bytes. May be empty.
    pub reason: String,
}

/// The most a reason can take: 125 bytes of control payload less the 2-byte code.
pub const MAX_REASON_LEN: usize = MAX_CONTROL_PAYLOAD - 2;

/// Parses a received close frame's payload: `None` for an empty one (reported as 1005).
///
/// ```
/// use ferrosock_proto::close::parse_payload;
/// use ferrosock_proto::CloseCode;
/// let frame = parse_payload(b"\x03\xe8bye").unwrap().unwrap();
/// assert_eq!((frame.code, frame.reason.as_str()), (CloseCode::NORMAL, "bye"));
/// assert!(parse_payload(b"\x03").is_err());
/// ```
pub fn parse_payload(payload: &[u8]) -> Result<Option<CloseFrame>, ProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::InvalidClosePayload),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_valid_on_wire() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            let reason = utf8::validate(reason)?.to_owned();
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

/// Builds a close frame payload. The reason is cut at a character boundary to fit in
/// [`MAX_REASON_LEN`] bytes.
///
/// ```
/// use ferrosock_proto::close::encode_payload;
/// use ferrosock_proto::CloseCode;
/// assert_eq!(&encode_payload(CloseCode::NORMAL, "ok")[..], b"\x03\xe8ok");
/// assert_eq!(encode_payload(CloseCode(4000), &"é".repeat(100)).len(), 2 + 122);
/// ```
pub fn encode_payload(code: CloseCode, reason: &str) -> Bytes {
    let reason = truncate_reason(reason);
    let mut out = BytesMut::with_capacity(2 + reason.len());
    out.put_u16(code.0);
    out.put_slice(reason.as_bytes());
    out.freeze()
}

/// The longest prefix of `reason` that fits in a close frame and ends on a char boundary.
pub fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_LEN {
        return reason;
    }
    let mut end = MAX_REASON_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_close_code_range() {
        for code in 0..=u16::MAX {
            let expected = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            assert_eq!(CloseCode(code).is_valid_on_wire(), expected, "{code}");
            let payload = code.to_be_bytes();
            match parse_payload(&payload) {
                Ok(Some(frame)) => assert!(expected && frame.code.0 == code),
                Err(ProtocolError::InvalidCloseCode(c)) => assert!(!expected && c == code),
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_codes_the_conformance_suite_checks() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            assert!(CloseCode(code).is_valid_on_wire(), "{code}");
        }
        for code in [
            0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(code).is_valid_on_wire(), "{code}");
        }
    }

    #[test]
    fn normal_ends() {
        for code in [1000, 1005, 3000, 4999] {
            assert!(CloseCode(code).is_normal());
        }
        for code in [1001, 1002, 1006, 1007, 1009, 1011, 2999, 5000] {
            assert!(!CloseCode(code).is_normal());
        }
    }

    #[test]
    fn reasons_must_be_utf8() {
        assert_eq!(
            parse_payload(b"\x03\xe8\xff"),
            Err(ProtocolError::InvalidUtf8)
        );
        let frame = parse_payload("\x03\u{e8}".as_bytes());
        // "\u{e8}" is two bytes of UTF-8 (c3 a8), so the code is 0x03c3 = 963: invalid.
        assert_eq!(frame, Err(ProtocolError::InvalidCloseCode(0x03c3)));
    }

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        let reason = "€".repeat(50); // 150 bytes
        let cut = truncate_reason(&reason);
        assert_eq!(cut.len(), 123);
        assert_eq!(truncate_reason("short"), "short");
        let payload = encode_payload(CloseCode::NORMAL, &reason);
        assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
        assert!(parse_payload(&payload).is_ok());
    }
}
