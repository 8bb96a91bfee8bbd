//! permessage-deflate (RFC 7692): negotiation, and compression of whole messages.
//!
//! Sans-IO like the rest of `proto`: the negotiation works on header values, the compressor
//! and the decompressor on byte slices. zlib-rs does the DEFLATE work (the same pure-Rust
//! zlib that flate2 can use); it is used directly for its `mem_level` knob, which sets most of
//! a compressor's memory.
//!
//! Window sizes: RFC 7692 allows 8 to 15 bits, but zlib cannot *compress* raw DEFLATE with an
//! 8-bit window. When this endpoint's compression window is negotiated down to 8, it sends its
//! messages uncompressed, which RFC 7692 §6 always allows; it decompresses at any size.

use bytes::{Bytes, BytesMut};
use zlib_rs::{
    Deflate, DeflateConfig, DeflateFlush, Inflate, InflateFlush, Method, Status, Strategy,
};

use super::error::ProtocolError;

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const EXTENSION: &str = "permessage-deflate";

/// What RFC 7692 §7.2.1 removes from the end of each compressed message.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// permessage-deflate settings, for either role.
///
/// A server accepts a client's offer as far as these settings allow; a client offers them.
///
/// The defaults bound memory: without context takeover (both ways) a connection's compressor
/// and decompressor exist only while a message is being compressed or decompressed, so an idle
/// compressed connection costs nothing extra; with context takeover they stay allocated for the
/// connection's life, about 170 KiB and 50 KiB with zlib-rs (whose hash table is a fixed
/// 128 KiB). Messages under the 1024-byte threshold, where context takeover helps most, are
/// not compressed anyway. docs/DEFLATE.md has the measurements.
///
/// ```
/// use ferrosock::PerMessageDeflate;
/// let settings = PerMessageDeflate::default().server_no_context_takeover(true).threshold(256);
/// assert!(settings.enabled);
/// assert!(!PerMessageDeflate::disabled().enabled);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PerMessageDeflate {
    /// A server accepts offers, a client offers. Default: true.
    pub enabled: bool,
    /// The largest window the server compresses with (8–15 bits). A server uses it for its
    /// own messages; a client asks the server for it. Default: 12 (4 KiB).
    pub server_max_window_bits: u8,
    /// The largest window the client compresses with (8–15 bits). A client uses it for its
    /// own messages; a server asks the client for it when the client allows. Default: 12.
    pub client_max_window_bits: u8,
    /// The server starts each message with an empty window: its compressor is freed between
    /// messages (a server uses it for its own messages; a client asks the server for it).
    /// Default: true.
    pub server_no_context_takeover: bool,
    /// The client starts each message with an empty window (a client uses it for its own
    /// messages; a server asks the client for it, and then frees its decompressor between
    /// messages). Default: true.
    pub client_no_context_takeover: bool,
    /// zlib compression level, 0 (stored) to 9 (best). Default: 6, zlib's own default.
    pub level: u8,
    /// zlib `memLevel`, 1 to 9: the size of the compressor's hash tables. Default: 5.
    pub mem_level: u8,
    /// Messages shorter than this many bytes are sent uncompressed: compressing them costs
    /// more CPU than it saves bandwidth. Default: 1024 (Node `ws`'s threshold).
    pub threshold: usize,
}

impl Default for PerMessageDeflate {
    fn default() -> PerMessageDeflate {
        PerMessageDeflate {
            enabled: true,
            server_max_window_bits: 12,
            client_max_window_bits: 12,
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            level: 6,
            mem_level: 5,
            threshold: 1024,
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        impl PerMessageDeflate {
            $(
                $(#[$doc])*
                pub fn $name(mut self, value: $ty) -> PerMessageDeflate {
                    self.$name = value;
                    self
                }
            )*
        }
    };
}

setters! {
    /// Sets [`PerMessageDeflate::enabled`].
    enabled: bool;
    /// Sets [`PerMessageDeflate::server_max_window_bits`].
    server_max_window_bits: u8;
    /// Sets [`PerMessageDeflate::client_max_window_bits`].
    client_max_window_bits: u8;
    /// Sets [`PerMessageDeflate::server_no_context_takeover`].
    server_no_context_takeover: bool;
    /// Sets [`PerMessageDeflate::client_no_context_takeover`].
    client_no_context_takeover: bool;
    /// Sets [`PerMessageDeflate::level`].
    level: u8;
    /// Sets [`PerMessageDeflate::mem_level`].
    mem_level: u8;
    /// Sets [`PerMessageDeflate::threshold`].
    threshold: usize;
}

impl PerMessageDeflate {
    /// Compression off: a server declines every offer, a client offers nothing.
    pub fn disabled() -> PerMessageDeflate {
        PerMessageDeflate {
            enabled: false,
            ..PerMessageDeflate::default()
        }
    }

    /// Checks that every value is in its range.
    pub fn validate(&self) -> Result<(), String> {
        for (name, bits) in [
            ("server_max_window_bits", self.server_max_window_bits),
            ("client_max_window_bits", self.client_max_window_bits),
        ] {
            if !(8..=15).contains(&bits) {
                return Err(format!("{name} must be 8 to 15, not {bits}"));
            }
        }
        if self.level > 9 {
            return Err(format!("level must be 0 to 9, not {}", self.level));
        }
        if !(1..=9).contains(&self.mem_level) {
            return Err(format!("mem_level must be 1 to 9, not {}", self.mem_level));
        }
        Ok(())
    }

    /// The `Sec-WebSocket-Extensions` value a client offers with these settings: the
    /// preferred offer, then, unless these settings already give up context takeover, a
    /// fallback offer with `client_no_context_takeover` for servers that insist on it (a
    /// server accepts the first offer it can).
    ///
    /// ```
    /// use ferrosock::PerMessageDeflate;
    /// assert_eq!(
    ///     PerMessageDeflate::default().client_offer(),
    ///     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
    ///      server_max_window_bits=12; client_max_window_bits=12"
    /// );
    /// let takeover = PerMessageDeflate::default()
    ///     .server_no_context_takeover(false)
    ///     .client_no_context_takeover(false);
    /// assert_eq!(
    ///     takeover.client_offer(),
    ///     "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12, \
    ///      permessage-deflate; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits=12"
    /// );
    /// let plain = PerMessageDeflate::default()
    ///     .server_max_window_bits(15)
    ///     .client_max_window_bits(15)
    ///     .server_no_context_takeover(false);
    /// assert_eq!(plain.client_offer(), "permessage-deflate; client_no_context_takeover; client_max_window_bits");
    /// ```
    pub fn client_offer(&self) -> String {
        self.client_offers()
            .into_iter()
            .map(Offer::header)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The offers a client makes, in order of preference.
    fn client_offers(&self) -> Vec<Offer> {
        let preferred = Offer {
            server_no_context_takeover: self.server_no_context_takeover,
            client_no_context_takeover: self.client_no_context_takeover,
            server_max_window_bits: (self.server_max_window_bits < 15)
                .then_some(self.server_max_window_bits),
            client_max_window_bits: (self.client_max_window_bits < 15)
                .then_some(self.client_max_window_bits),
        };
        let mut offers = vec![preferred];
        if !self.client_no_context_takeover {
            offers.push(Offer {
                client_no_context_takeover: true,
                ..preferred
            });
        }
        offers
    }

    /// A server's answer to the `Sec-WebSocket-Extensions` values of a request: the first
    /// permessage-deflate offer these settings can accept, as the agreement and the header
    /// value of the response. `None`: compression is off, or no offer is acceptable. Offers
    /// with unknown, duplicate or invalid parameters are declined (RFC 7692 §5).
    ///
    /// ```
    /// use ferrosock::PerMessageDeflate;
    /// let offer = "permessage-deflate; client_max_window_bits";
    /// let (agreed, response) = PerMessageDeflate::default().server_accept([offer.as_bytes()]).unwrap();
    /// assert_eq!(
    ///     response,
    ///     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
    ///      server_max_window_bits=12; client_max_window_bits=12"
    /// );
    /// assert_eq!((agreed.compress_window_bits, agreed.compress_reset), (12, true));
    /// ```
    pub fn server_accept<'a>(
        &self,
        header_values: impl IntoIterator<Item = &'a [u8]>,
    ) -> Option<(Negotiated, String)> {
        if !self.enabled {
            return None;
        }
        let mut extensions = Vec::new();
        for value in header_values {
            // A header that does not parse declines every offer in it.
            extensions.extend(parse_extensions(value).ok()?);
        }
        extensions
            .into_iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(EXTENSION))
            .find_map(|(_, params)| Params::parse(&params).ok())
            .map(|offer| self.accept(offer))
    }

    fn accept(&self, offer: Params) -> (Negotiated, String) {
        let server_reset = offer.server_no_context_takeover || self.server_no_context_takeover;
        let client_reset = offer.client_no_context_takeover || self.client_no_context_takeover;
        let server_bits = offer
            .server_max_window_bits
            .map_or(self.server_max_window_bits, |asked| {
                asked.min(self.server_max_window_bits)
            });
        let (client_bits, client_param) = match offer.client_max_window_bits {
            // The client cannot limit its window: it may use 15 bits.
            None => (15, None),
            Some(promised) => {
                let bits = promised.unwrap_or(15).min(self.client_max_window_bits);
                (bits, (bits < 15 || promised.is_some()).then_some(bits))
            }
        };
        let mut response = String::from(EXTENSION);
        if server_reset {
            response.push_str("; server_no_context_takeover");
        }
        if client_reset {
            response.push_str("; client_no_context_takeover");
        }
        // RFC 7692 §7.1.2.1: an offer's server_max_window_bits is accepted by answering it.
        if offer.server_max_window_bits.is_some() || server_bits < 15 {
            response.push_str(&format!("; server_max_window_bits={server_bits}"));
        }
        if let Some(bits) = client_param {
            response.push_str(&format!("; client_max_window_bits={bits}"));
        }
        let negotiated = Negotiated {
            compress_window_bits: server_bits,
            compress_reset: server_reset,
            decompress_window_bits: client_bits,
            decompress_reset: client_reset,
        };
        (negotiated, response)
    }

    /// A client's check of the server's `Sec-WebSocket-Extensions` values against the offers
    /// these settings made ([`client_offer`](Self::client_offer)). RFC 7692 §5: a response that
    /// none of the offers allows fails the connection.
    pub fn client_accept<'a>(
        &self,
        header_values: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Negotiated, NegotiationError> {
        let mut extensions = Vec::new();
        for value in header_values {
            extensions.extend(parse_extensions(value)?);
        }
        let [(name, params)] = extensions.as_slice() else {
            return Err(NegotiationError::new(
                "the server accepted more than one extension",
            ));
        };
        if !self.enabled || !name.eq_ignore_ascii_case(EXTENSION) {
            return Err(NegotiationError::new(format!(
                "the server accepted {name:?}, which was not offered"
            )));
        }
        let response = Params::parse(params)?;
        let mut first_error = None;
        for offer in self.client_offers() {
            match offer.accept_response(&response, self.client_max_window_bits) {
                Ok(negotiated) => return Ok(negotiated),
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        Err(first_error.expect("a client always makes at least one offer"))
    }
}

/// One permessage-deflate offer a client makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    /// Asked of the server (`None`: not asked, the server may use 15 bits).
    server_max_window_bits: Option<u8>,
    /// Promised by the client (`None`: offered without a value).
    client_max_window_bits: Option<u8>,
}

impl Offer {
    fn header(self) -> String {
        let mut offer = String::from(EXTENSION);
        if self.server_no_context_takeover {
            offer.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            offer.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            offer.push_str(&format!("; server_max_window_bits={bits}"));
        }
        // Always offered: this client can compress with whatever window the server asks for.
        offer.push_str("; client_max_window_bits");
        if let Some(bits) = self.client_max_window_bits {
            offer.push_str(&format!("={bits}"));
        }
        offer
    }

    /// What a response to this offer settles, if this offer allows it (RFC 7692 §7.1).
    fn accept_response(
        &self,
        response: &Params,
        own_bits: u8,
    ) -> Result<Negotiated, NegotiationError> {
        // The server-side parameters of an offer are requests the server may leave out of its
        // answer: uWebSockets-based servers (uWebSockets.js, Bun with a dedicated compressor)
        // answer `server_max_window_bits` and `server_no_context_takeover` by ignoring them,
        // and only read the first offer. RFC 7692 §7.1.2.1 reads an omission as "declined";
        // the answer still tells what the server does — the default, a window of up to 15 bits
        // kept from message to message — and this side can always decompress that, at the
        // price of an inflate context kept for the connection (docs/DEFLATE.md). Browsers
        // accept the same answers. Only an answer that contradicts the offer fails.
        let server_bits = match (response.server_max_window_bits, self.server_max_window_bits) {
            (Some(bits), Some(asked)) if bits > asked => {
                return Err(NegotiationError::new(format!(
                    "server_max_window_bits={bits} exceeds the {asked} offered"
                )))
            }
            (Some(bits), _) => bits,
            (None, _) => 15,
        };
        // A server may ask for a smaller window than the client promised, or answer with a
        // larger one (it may ignore the promise, §7.1.2.2): the client keeps to the smaller.
        let client_bits = match response.client_max_window_bits {
            Some(None) => {
                return Err(NegotiationError::new(
                    "client_max_window_bits without a value in a response",
                ))
            }
            Some(Some(bits)) => bits.min(own_bits),
            None => own_bits,
        };
        Ok(Negotiated {
            compress_window_bits: client_bits,
            // An offer with client_no_context_takeover is a promise (§7.1.1.2).
            compress_reset: response.client_no_context_takeover || self.client_no_context_takeover,
            decompress_window_bits: server_bits,
            decompress_reset: response.server_no_context_takeover,
        })
    }
}

/// What a handshake settled, from one endpoint's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Negotiated {
    /// The window this endpoint compresses with (8: it sends uncompressed).
    pub compress_window_bits: u8,
    /// This endpoint starts each message it compresses with an empty window.
    pub compress_reset: bool,
    /// The window the peer compresses with: this endpoint's decompression window.
    pub decompress_window_bits: u8,
    /// The peer starts each message with an empty window.
    pub decompress_reset: bool,
}

/// A `Sec-WebSocket-Extensions` header that does not parse, or a response the offer did not
/// allow.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("permessage-deflate negotiation: {0}")]
pub struct NegotiationError(String);

impl NegotiationError {
    fn new(message: impl Into<String>) -> NegotiationError {
        NegotiationError(message.into())
    }
}

/// The parameters of one permessage-deflate offer or response (RFC 7692 §7.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value.
    client_max_window_bits: Option<Option<u8>>,
}

impl Params {
    fn parse(params: &[(String, Option<String>)]) -> Result<Params, NegotiationError> {
        let mut parsed = Params::default();
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in params {
            if seen.iter().any(|s| s.eq_ignore_ascii_case(name)) {
                return Err(NegotiationError::new(format!("duplicate parameter {name}")));
            }
            seen.push(name);
            let flag = |value: &Option<String>| match value {
                None => Ok(true),
                Some(v) => Err(NegotiationError::new(format!(
                    "{name} takes no value, got {v:?}"
                ))),
            };
            match name.to_ascii_lowercase().as_str() {
                "server_no_context_takeover" => parsed.server_no_context_takeover = flag(value)?,
                "client_no_context_takeover" => parsed.client_no_context_takeover = flag(value)?,
                "server_max_window_bits" => match value {
                    Some(v) => parsed.server_max_window_bits = Some(window_bits(name, v)?),
                    None => {
                        return Err(NegotiationError::new(
                            "server_max_window_bits needs a value",
                        ))
                    }
                },
                "client_max_window_bits" => {
                    parsed.client_max_window_bits =
                        Some(value.as_deref().map(|v| window_bits(name, v)).transpose()?)
                }
                _ => return Err(NegotiationError::new(format!("unknown parameter {name}"))),
            }
        }
        Ok(parsed)
    }
}

/// RFC 7692 §7.1.2: a decimal integer from 8 to 15, without leading zeroes.
fn window_bits(name: &str, value: &str) -> Result<u8, NegotiationError> {
    let valid = !value.starts_with('0') && value.bytes().all(|b| b.is_ascii_digit());
    match value.parse::<u8>() {
        Ok(bits @ 8..=15) if valid => Ok(bits),
        _ => Err(NegotiationError::new(format!(
            "{name}={value:?} is not 8 to 15"
        ))),
    }
}

/// One extension: its name and its parameters (names and optional values, quotes removed).
type Extension = (String, Vec<(String, Option<String>)>);

/// Parses a `Sec-WebSocket-Extensions` value (RFC 6455 §9.1): a comma-separated list of
/// `name *( ";" param [ "=" ( token / quoted-string ) ] )`.
fn parse_extensions(value: &[u8]) -> Result<Vec<Extension>, NegotiationError> {
    let value =
        std::str::from_utf8(value).map_err(|_| NegotiationError::new("header is not UTF-8"))?;
    let mut extensions = Vec::new();
    for element in split_outside_quotes(value, ',')? {
        let mut parts = split_outside_quotes(element, ';')?.into_iter();
        let name = parts.next().unwrap_or_default().trim();
        if name.is_empty() {
            // RFC 7230 §7: empty list elements are allowed and ignored.
            continue;
        }
        if !is_token(name) {
            return Err(NegotiationError::new(format!(
                "invalid extension name {name:?}"
            )));
        }
        let mut params = Vec::new();
        for param in parts {
            let (name, value) = match param.split_once('=') {
                Some((name, value)) => (name.trim(), Some(unquote(value.trim())?)),
                None => (param.trim(), None),
            };
            if !is_token(name) {
                return Err(NegotiationError::new(format!(
                    "invalid parameter name {name:?}"
                )));
            }
            params.push((name.to_owned(), value));
        }
        extensions.push((name.to_owned(), params));
    }
    Ok(extensions)
}

fn split_outside_quotes(text: &str, separator: char) -> Result<Vec<&str>, NegotiationError> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err(NegotiationError::new("unterminated quoted string"));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

/// A token, or a quoted string whose content is a token (RFC 6455 §9.1).
fn unquote(value: &str) -> Result<String, NegotiationError> {
    let inner = match value.strip_prefix('"') {
        Some(rest) => {
            let rest = rest.strip_suffix('"').ok_or_else(|| {
                NegotiationError::new(format!("malformed quoted value {value:?}"))
            })?;
            let mut unescaped = String::with_capacity(rest.len());
            let mut chars = rest.chars();
            while let Some(c) = chars.next() {
                unescaped.push(if c == '\\' {
                    chars.next().unwrap_or('\\')
                } else {
                    c
                });
            }
            unescaped
        }
        None => value.to_owned(),
    };
    if is_token(&inner) {
        Ok(inner)
    } else {
        Err(NegotiationError::new(format!(
            "invalid parameter value {value:?}"
        )))
    }
}

/// RFC 7230 §3.2.6 `token`.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Compresses the messages one endpoint sends, in order (with context takeover, each message's
/// compression depends on the ones before).
pub struct Deflater {
    window_bits: u8,
    reset: bool,
    level: u8,
    mem_level: u8,
    /// Created at the first compressed message; dropped after each message when `reset`, so a
    /// connection without context takeover holds no compressor between messages.
    state: Option<Deflate>,
}

impl Deflater {
    /// A compressor for `window_bits` (8: it never compresses), resetting between messages when
    /// `reset`, with zlib `level` and `mem_level`.
    pub fn new(window_bits: u8, reset: bool, level: u8, mem_level: u8) -> Deflater {
        Deflater {
            window_bits,
            reset,
            level,
            mem_level,
            state: None,
        }
    }

    /// Whether this compressor can compress at all (zlib cannot with an 8-bit window).
    pub fn can_compress(&self) -> bool {
        self.window_bits >= 9
    }

    /// Whether each message starts from an empty window (no context takeover). Then a
    /// compressed result may be discarded and the message sent as it is: the peer's
    /// decompressor does not depend on it. With context takeover it may not, since the
    /// compressor's window already holds the message.
    pub fn resets(&self) -> bool {
        self.reset
    }

    /// Compresses one whole message (RFC 7692 §7.2.1): DEFLATE with a sync flush, the final
    /// `00 00 ff ff` removed.
    ///
    /// ```
    /// use ferrosock::proto::deflate::{Deflater, Inflater};
    /// let mut deflater = Deflater::new(15, false, 6, 8);
    /// let compressed = deflater.compress(b"Hello");
    /// assert_eq!(&compressed[..], &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]); // RFC 7692 §7.2.3.1
    /// let mut inflater = Inflater::new(15, false);
    /// assert_eq!(&inflater.decompress(&compressed, 1024).unwrap()[..], b"Hello");
    /// ```
    pub fn compress(&mut self, input: &[u8]) -> Bytes {
        assert!(
            self.can_compress(),
            "a raw DEFLATE stream cannot use an 8-bit window"
        );
        if input.is_empty() {
            // RFC 7692 §7.2.3.6. Not left to zlib: a sync flush with no new input after an
            // earlier one writes nothing at all, not even the empty block that the peer's
            // restored `00 00 ff ff` belongs to, and the peer's stream would be corrupt.
            return Bytes::from_static(&[0x00]);
        }
        let (level, mem_level, window_bits) = (self.level, self.mem_level, self.window_bits);
        let deflate = self.state.get_or_insert_with(|| {
            Deflate::new_with_config(DeflateConfig {
                level: i32::from(level),
                method: Method::Deflated,
                window_bits: -i32::from(window_bits),
                mem_level: i32::from(mem_level),
                strategy: Strategy::Default,
            })
        });
        // Deflate output is rarely larger than its input plus a few bytes per 16 KiB block.
        let mut out = BytesMut::with_capacity(input.len() / 2 + 64);
        let mut consumed = 0;
        loop {
            let start = out.len();
            let room = out.capacity().saturating_sub(start).max(1024);
            out.resize(start + room, 0);
            let (before_in, before_out) = (deflate.total_in(), deflate.total_out());
            let result = deflate.compress(
                &input[consumed..],
                &mut out[start..],
                DeflateFlush::SyncFlush,
            );
            let read = (deflate.total_in() - before_in) as usize;
            let wrote = (deflate.total_out() - before_out) as usize;
            out.truncate(start + wrote);
            consumed += read;
            // deflate fails only on a stream in an invalid state (bad parameters or a misuse of
            // the API), which this type never creates; input cannot make it fail.
            if let Err(err) = result {
                panic!("zlib deflate failed: {}", err.as_str());
            }
            // Done once all input is in and the flush did not fill the output.
            if consumed == input.len() && wrote < room {
                break;
            }
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if self.reset {
            self.state = None;
        }
        // Its allocation is its length: a queued frame holds what the budget counts.
        super::decoder::tight(out)
    }
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater")
            .field("window_bits", &self.window_bits)
            .field("reset", &self.reset)
            .field("allocated", &self.state.is_some())
            .finish()
    }
}

/// Decompresses the messages the peer sends, in order.
pub struct Inflater {
    window_bits: u8,
    reset: bool,
    /// Created at the first compressed message; dropped after each one when `reset`.
    state: Option<Inflate>,
}

impl Inflater {
    /// A decompressor for messages compressed with at most `window_bits`, resetting between
    /// messages when the peer does (`reset`).
    pub fn new(window_bits: u8, reset: bool) -> Inflater {
        Inflater {
            window_bits,
            reset,
            state: None,
        }
    }

    /// Decompresses one whole message (RFC 7692 §7.2.2: the `00 00 ff ff` tail is restored).
    /// Fails with [`ProtocolError::MessageTooLarge`] as soon as the output would exceed `max`
    /// bytes — a deflate bomb costs at most `max` bytes of memory — and with
    /// [`ProtocolError::InvalidCompressedData`] for data that is not DEFLATE.
    pub fn decompress(&mut self, input: &[u8], max: usize) -> Result<Bytes, ProtocolError> {
        let window_bits = self.window_bits;
        let inflate = self
            .state
            .get_or_insert_with(|| Inflate::new(false, window_bits));
        let mut out = BytesMut::with_capacity(
            input
                .len()
                .saturating_mul(3)
                .max(256)
                .min(max.saturating_add(1)),
        );
        let mut stream_ended = false;
        for piece in [input, &TAIL[..]] {
            let mut consumed = 0;
            loop {
                if out.len() > max {
                    self.state = None;
                    return Err(ProtocolError::MessageTooLarge {
                        size: out.len() as u64,
                        max: max as u64,
                    });
                }
                let start = out.len();
                // Use the spare capacity; when there is none, double, but never past one byte
                // over the limit (invariant here: start <= max).
                let spare = out.capacity() - start;
                let room = if spare > 0 {
                    spare
                } else {
                    start.max(256).min(max + 1 - start)
                };
                out.resize(start + room, 0);
                let (before_in, before_out) = (inflate.total_in(), inflate.total_out());
                let result = inflate.decompress(
                    &piece[consumed..],
                    &mut out[start..],
                    InflateFlush::SyncFlush,
                );
                let read = (inflate.total_in() - before_in) as usize;
                let wrote = (inflate.total_out() - before_out) as usize;
                out.truncate(start + wrote);
                consumed += read;
                match result {
                    Ok(Status::StreamEnd) => {
                        // A final block (BFINAL): the next message starts a new stream.
                        stream_ended = true;
                        break;
                    }
                    Ok(Status::Ok | Status::BufError) => {}
                    // Not DEFLATE, a preset dictionary (never negotiated), or allocation failure.
                    Err(_) => {
                        self.state = None;
                        return Err(ProtocolError::InvalidCompressedData);
                    }
                }
                if consumed == piece.len() && wrote < room {
                    break;
                }
            }
            if stream_ended {
                break;
            }
        }
        if out.len() > max {
            self.state = None;
            return Err(ProtocolError::MessageTooLarge {
                size: out.len() as u64,
                max: max as u64,
            });
        }
        if self.reset || stream_ended {
            self.state = None;
        }
        // The output doubled as it grew: a message kept or forwarded holds only its length.
        Ok(super::decoder::tight(out))
    }
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("window_bits", &self.window_bits)
            .field("reset", &self.reset)
            .field("allocated", &self.state.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(settings: &PerMessageDeflate, offer: &str) -> Option<(Negotiated, String)> {
        settings.server_accept([offer.as_bytes()])
    }

    /// zlib's defaults: 15-bit windows, context takeover.
    fn full() -> PerMessageDeflate {
        PerMessageDeflate::default()
            .server_max_window_bits(15)
            .client_max_window_bits(15)
            .server_no_context_takeover(false)
            .client_no_context_takeover(false)
    }

    /// ferrosock's default windows, with context takeover.
    fn takeover() -> PerMessageDeflate {
        PerMessageDeflate::default()
            .server_no_context_takeover(false)
            .client_no_context_takeover(false)
    }

    #[test]
    fn the_server_negotiation_table() {
        // (settings, offer) → response; every parameter, alone and together.
        let d = takeover();
        let cases: &[(&PerMessageDeflate, &str, Option<&str>)] = &[
            (&full(), "permessage-deflate", Some("permessage-deflate")),
            (&d, "permessage-deflate", Some("permessage-deflate; server_max_window_bits=12")),
            (&full(), "permessage-deflate; client_max_window_bits", Some("permessage-deflate")),
            (&d, "permessage-deflate; client_max_window_bits", Some("permessage-deflate; server_max_window_bits=12; client_max_window_bits=12")),
            (&full(), "permessage-deflate; client_max_window_bits=10", Some("permessage-deflate; client_max_window_bits=10")),
            (&d, "permessage-deflate; client_max_window_bits=9", Some("permessage-deflate; server_max_window_bits=12; client_max_window_bits=9")),
            (&full(), "permessage-deflate; server_max_window_bits=10", Some("permessage-deflate; server_max_window_bits=10")),
            (&d, "permessage-deflate; server_max_window_bits=15", Some("permessage-deflate; server_max_window_bits=12")),
            (&full(), "permessage-deflate; server_max_window_bits=8", Some("permessage-deflate; server_max_window_bits=8")),
            (&full(), "permessage-deflate; server_no_context_takeover", Some("permessage-deflate; server_no_context_takeover")),
            (&full(), "permessage-deflate; client_no_context_takeover", Some("permessage-deflate; client_no_context_takeover")),
            (&full().server_no_context_takeover(true).client_no_context_takeover(true), "permessage-deflate",
                Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")),
            (&full(), "permessage-deflate; server_max_window_bits=\"9\"; CLIENT_MAX_WINDOW_BITS", Some("permessage-deflate; server_max_window_bits=9")),
            // Malformed or duplicate parameters decline that offer; the next one is accepted.
            (&full(), "permessage-deflate; server_max_window_bits=16, permessage-deflate", Some("permessage-deflate")),
            (&full(), "permessage-deflate; server_max_window_bits=7", None),
            (&full(), "permessage-deflate; server_max_window_bits=010", None),
            (&full(), "permessage-deflate; server_max_window_bits", None),
            (&full(), "permessage-deflate; client_max_window_bits=abc", None),
            (&full(), "permessage-deflate; server_no_context_takeover=1", None),
            (&full(), "permessage-deflate; client_no_context_takeover; client_no_context_takeover", None),
            (&full(), "permessage-deflate; server_max_window_bits=10; server_max_window_bits=11", None),
            (&full(), "permessage-deflate; mystery", None),
            (&full(), "x-webkit-deflate-frame", None),
            (&full(), "foo, permessage-deflate; client_max_window_bits=12", Some("permessage-deflate; client_max_window_bits=12")),
            (&full(), "permessage-deflate; server_max_window_bits=\"1", None),
            (&PerMessageDeflate::disabled(), "permessage-deflate", None),
            // The defaults: no context takeover either way, 12-bit windows.
            (&PerMessageDeflate::default(), "permessage-deflate; client_max_window_bits",
                Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits=12")),
        ];
        for (settings, offer, expected) in cases {
            let got = accept(settings, offer).map(|(_, response)| response);
            assert_eq!(got.as_deref(), *expected, "offer {offer:?}");
        }
    }

    #[test]
    fn what_the_server_agrees_to() {
        let (agreed, _) =
            accept(&takeover(), "permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(
            agreed,
            Negotiated {
                compress_window_bits: 12,
                compress_reset: false,
                decompress_window_bits: 12,
                decompress_reset: false
            }
        );
        // A client that cannot limit its window may use 15 bits: decompress at 15.
        let (agreed, _) = accept(
            &takeover(),
            "permessage-deflate; client_no_context_takeover",
        )
        .unwrap();
        assert_eq!(
            (agreed.decompress_window_bits, agreed.decompress_reset),
            (15, true)
        );
        // The defaults reset both ways.
        let (agreed, _) = accept(&PerMessageDeflate::default(), "permessage-deflate").unwrap();
        assert!(agreed.compress_reset && agreed.decompress_reset);
    }

    #[test]
    fn the_client_checks_the_response_against_its_offer() {
        let d = takeover();
        let ok = |settings: &PerMessageDeflate, response: &str| {
            settings.client_accept([response.as_bytes()])
        };
        assert_eq!(
            ok(&d, "permessage-deflate; server_max_window_bits=12").unwrap(),
            Negotiated {
                compress_window_bits: 12,
                compress_reset: false,
                decompress_window_bits: 12,
                decompress_reset: false
            }
        );
        assert_eq!(
            ok(&d, "permessage-deflate; server_max_window_bits=9; client_max_window_bits=8; client_no_context_takeover; server_no_context_takeover").unwrap(),
            Negotiated { compress_window_bits: 8, compress_reset: true, decompress_window_bits: 9, decompress_reset: true }
        );
        assert_eq!(
            ok(&full(), "permessage-deflate")
                .unwrap()
                .decompress_window_bits,
            15
        );
        // A server may answer a larger client window than promised: the client keeps its own.
        assert_eq!(
            ok(
                &d,
                "permessage-deflate; server_max_window_bits=12; client_max_window_bits=15"
            )
            .unwrap()
            .compress_window_bits,
            12
        );
        // The fallback offer: the server asked for client_no_context_takeover.
        let fallback = ok(
            &d,
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=12",
        )
        .unwrap();
        assert!(fallback.compress_reset);
        for bad in [
            "permessage-deflate; server_max_window_bits=13", // more than offered
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits", // no value
            "permessage-deflate; server_max_window_bits=12; bogus",
            "permessage-deflate; server_max_window_bits=12, permessage-deflate",
            "x-other",
        ] {
            assert!(ok(&d, bad).is_err(), "{bad}");
        }
        let asks_reset = full().server_no_context_takeover(true);
        assert!(
            ok(
                &asks_reset,
                "permessage-deflate; server_no_context_takeover"
            )
            .unwrap()
            .decompress_reset
        );
        // The defaults: both resets are part of the one offer.
        let defaults = PerMessageDeflate::default();
        let agreed = ok(
            &defaults,
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=12",
        )
        .unwrap();
        assert!(agreed.compress_reset && agreed.decompress_reset);
    }

    /// uWebSockets' servers answer the default offer without its server-side parameters
    /// (`../shared/tools/uws/uws_echo_deflate`): the client decompresses what the answer says
    /// the server does — a 15-bit window kept between messages — and keeps compressing its
    /// own messages as it offered (no context takeover, 12 bits).
    #[test]
    fn a_server_that_leaves_out_the_server_parameters_is_decompressed_with_its_defaults() {
        let defaults = PerMessageDeflate::default();
        for answer in [
            "permessage-deflate",
            "permessage-deflate; client_no_context_takeover",
            "permessage-deflate; server_max_window_bits=12", // context kept
            "permessage-deflate; server_no_context_takeover", // 15-bit window
        ] {
            let agreed = defaults.client_accept([answer.as_bytes()]).unwrap();
            assert_eq!(
                (agreed.compress_window_bits, agreed.compress_reset),
                (12, true),
                "{answer}: this side compresses as it offered"
            );
            let expected_bits = if answer.contains("server_max_window_bits=12") {
                12
            } else {
                15
            };
            assert_eq!(agreed.decompress_window_bits, expected_bits, "{answer}");
            assert_eq!(
                agreed.decompress_reset,
                answer.contains("server_no_context_takeover"),
                "{answer}"
            );
        }
        for still_bad in [
            "permessage-deflate; server_max_window_bits=14", // more than the 12 asked
            "permessage-deflate; client_max_window_bits",    // no value in an answer
        ] {
            assert!(
                defaults.client_accept([still_bad.as_bytes()]).is_err(),
                "{still_bad}"
            );
        }
    }

    #[test]
    fn round_trips_at_every_window_size_with_and_without_context_takeover() {
        let messages: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"a".to_vec(),
            b"Hello, Hello, Hello, Hello".to_vec(),
            (0..20_000u32).map(|i| (i % 7) as u8 + b'a').collect(),
            (0..70_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
                .collect(), // incompressible
            br#"{"price": 101.5, "symbol": "ABC"}"#.repeat(50),
        ];
        for bits in 9..=15u8 {
            for reset in [false, true] {
                let mut deflater = Deflater::new(bits, reset, 6, 8);
                let mut inflater = Inflater::new(bits, reset);
                for round in 0..2 {
                    for message in &messages {
                        let compressed = deflater.compress(message);
                        let back = inflater.decompress(&compressed, 1 << 20).unwrap();
                        assert_eq!(
                            &back[..],
                            &message[..],
                            "bits {bits} reset {reset} round {round} len {}",
                            message.len()
                        );
                    }
                }
                // Context takeover pays: the repeat compresses to almost nothing.
                let text = br#"{"price": 101.5, "symbol": "ABC", "exchange": "XNAS"}"#;
                let first = deflater.compress(text).len();
                let second = deflater.compress(text).len();
                if reset {
                    assert_eq!(
                        first, second,
                        "no context takeover: the same message, the same size"
                    );
                } else {
                    assert!(second < first / 2, "context takeover: {second} vs {first}");
                }
            }
        }
        assert!(!Deflater::new(8, false, 6, 8).can_compress());
        // Decompressing with an 8-bit window works (only compressing does not).
        let mut inflater = Inflater::new(8, false);
        let stored = [0x01, 0x03, 0x00, 0xfc, 0xff, b'a', b'b', b'c'];
        assert_eq!(&inflater.decompress(&stored, 16).unwrap()[..], b"abc");
    }

    #[test]
    fn a_deflate_bomb_stops_at_the_limit() {
        let mut deflater = Deflater::new(15, false, 9, 9);
        let bomb = deflater.compress(&vec![0u8; 10 << 20]);
        assert!(
            bomb.len() < 16 * 1024,
            "10 MiB of zeros compress to {} bytes",
            bomb.len()
        );
        let mut inflater = Inflater::new(15, false);
        let err = inflater.decompress(&bomb, 1 << 20).unwrap_err();
        assert!(
            matches!(err, ProtocolError::MessageTooLarge { max: 1048576, .. }),
            "{err:?}"
        );
        assert_eq!(err.close_code(), super::super::CloseCode::MESSAGE_TOO_BIG);
        // Exactly at the limit is fine.
        let exact = Deflater::new(15, false, 6, 8).compress(&vec![1u8; 4096]);
        assert_eq!(
            Inflater::new(15, false)
                .decompress(&exact, 4096)
                .unwrap()
                .len(),
            4096
        );
        assert!(Inflater::new(15, false).decompress(&exact, 4095).is_err());
    }

    #[test]
    fn garbage_is_invalid_compressed_data() {
        let mut inflater = Inflater::new(15, false);
        assert_eq!(
            inflater.decompress(&[0xff, 0xff, 0xff, 0xff], 1024),
            Err(ProtocolError::InvalidCompressedData)
        );
        // The inflater recovers for the next message (a new stream).
        let good = Deflater::new(15, false, 6, 8).compress(b"fine");
        assert_eq!(&inflater.decompress(&good, 1024).unwrap()[..], b"fine");
    }

    #[test]
    fn an_empty_message_between_others_keeps_the_streams_in_step() {
        // Regression: zlib writes nothing for a sync flush without new input, which left the
        // peer's inflater unable to read the next message.
        let mut deflater = Deflater::new(15, false, 6, 8);
        let mut inflater = Inflater::new(15, false);
        for message in [&b"first"[..], b"", b"", b"after two empty ones", b""] {
            let compressed = deflater.compress(message);
            assert_eq!(
                &inflater.decompress(&compressed, 1024).unwrap()[..],
                message
            );
        }
        assert_eq!(&deflater.compress(b"")[..], &[0x00]);
    }

    #[test]
    fn a_final_block_starts_a_new_stream() {
        // "abc" as a final stored block (BFINAL=1), twice: each message is its own stream.
        let message = [0x01, 0x03, 0x00, 0xfc, 0xff, b'a', b'b', b'c'];
        let mut inflater = Inflater::new(15, false);
        assert_eq!(&inflater.decompress(&message, 64).unwrap()[..], b"abc");
        assert_eq!(&inflater.decompress(&message, 64).unwrap()[..], b"abc");
    }
}
