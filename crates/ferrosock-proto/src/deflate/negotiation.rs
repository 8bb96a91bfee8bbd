//! The negotiation of permessage-deflate (RFC 7692 §5, §7.1): offers, answers, and what they
//! settle ([`Negotiated`]), on header values only.

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const EXTENSION: &str = "permessage-deflate";

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
/// use ferrosock_proto::PerMessageDeflate;
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
    /// use ferrosock_proto::PerMessageDeflate;
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
    /// use ferrosock_proto::PerMessageDeflate;
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

impl Negotiated {
    /// The settlement of one endpoint, from its four terms: what a handshake decided elsewhere
    /// (a test, or an HTTP layer that negotiated the extension itself).
    ///
    /// ```
    /// use ferrosock_proto::Negotiated;
    /// let settled = Negotiated::new(12, true, 15, false);
    /// assert_eq!((settled.compress_window_bits, settled.decompress_reset), (12, false));
    /// ```
    pub const fn new(
        compress_window_bits: u8,
        compress_reset: bool,
        decompress_window_bits: u8,
        decompress_reset: bool,
    ) -> Negotiated {
        Negotiated {
            compress_window_bits,
            compress_reset,
            decompress_window_bits,
            decompress_reset,
        }
    }
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

#[cfg(test)]
mod tests;
