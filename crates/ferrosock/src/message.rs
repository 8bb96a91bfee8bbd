//! Messages as the application sees them, and the data types they are converted to.

use bytes::Bytes;
use bytestring::ByteString;

use crate::common::Incoming;
use crate::proto::OpCode;

/// How received messages are handed to `on_message` (4D's `dataType`).
///
/// The conversion depends only on this setting, not on the frame's type, except for `Auto`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DataType {
    /// Every message as [`Message::Text`]; binary payloads are decoded as UTF-8, invalid
    /// sequences replaced with U+FFFD. The default.
    #[default]
    Text,
    /// Every message as [`Message::Blob`] (its bytes).
    Blob,
    /// Every message parsed as JSON into [`Message::Object`]. A message that is not JSON is
    /// not delivered: `on_error` reports the parse error and the connection stays open.
    Object,
    /// A ferrosock extension: text frames as [`Message::Text`], binary frames as
    /// [`Message::Blob`] — what an echo server or a proxy wants.
    Auto,
}

impl DataType {
    /// The 4D name: `"text"`, `"blob"`, `"object"` (and `"auto"`).
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Text => "text",
            DataType::Blob => "blob",
            DataType::Object => "object",
            DataType::Auto => "auto",
        }
    }
}

impl std::str::FromStr for DataType {
    type Err = crate::Error;

    /// Parses a 4D name, case-insensitively.
    ///
    /// ```
    /// use ferrosock::DataType;
    /// assert_eq!("blob".parse::<DataType>().unwrap(), DataType::Blob);
    /// assert!("xml".parse::<DataType>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<DataType, crate::Error> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(DataType::Text),
            "blob" => Ok(DataType::Blob),
            "object" => Ok(DataType::Object),
            "auto" => Ok(DataType::Auto),
            _ => Err(crate::Error::new(
                crate::ErrorKind::InvalidArgument,
                format!("unknown data type {s:?} (expected text, blob, object or auto)"),
            )),
        }
    }
}

/// A message, received or to send.
///
/// What `send` puts on the wire follows the variant, whatever the data type: `Text` is a text
/// frame, `Blob` a binary frame, `Object` a text frame holding its JSON.
///
/// A queued message counts against the byte budgets by its length (see
/// [`memory`](crate::memory)). Messages made from a `String`, a `Vec<u8>` or an object, and
/// the messages ferrosock receives, own allocations of their own size; a [`Bytes`] given as it
/// is keeps whatever allocation it is a view of alive: slice a large buffer with
/// `Bytes::copy_from_slice` rather than `slice` before sending the piece.
///
/// ```
/// use ferrosock::Message;
/// let text = Message::from("hello");
/// assert_eq!(text.as_text(), Some("hello"));
/// let blob = Message::from(vec![1u8, 2, 3]);
/// assert_eq!(blob.as_blob().map(|b| b.len()), Some(3));
/// let object = Message::from(serde_json::json!({"n": 1}));
/// assert_eq!(object.to_text(), r#"{"n":1}"#);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// UTF-8 text.
    Text(ByteString),
    /// Bytes.
    Blob(Bytes),
    /// A JSON value. Sent as its JSON text, keys in insertion order (as 4D's JSON Stringify;
    /// the default feature `preserve_order`).
    Object(serde_json::Value),
}

impl Message {
    /// The text, if this is a `Text` message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(text) => Some(text),
            _ => None,
        }
    }

    /// The bytes, if this is a `Blob` message.
    pub fn as_blob(&self) -> Option<&Bytes> {
        match self {
            Message::Blob(bytes) => Some(bytes),
            _ => None,
        }
    }

    /// The value, if this is an `Object` message.
    pub fn as_object(&self) -> Option<&serde_json::Value> {
        match self {
            Message::Object(value) => Some(value),
            _ => None,
        }
    }

    /// The message as text whatever its variant: a blob decoded as UTF-8 (lossy), an object
    /// as its JSON.
    pub fn to_text(&self) -> String {
        match self {
            Message::Text(text) => text.to_string(),
            Message::Blob(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Message::Object(value) => value.to_string(),
        }
    }

    /// The frame opcode and payload that carry this message.
    pub(crate) fn into_frame(self) -> (OpCode, Bytes) {
        match self {
            Message::Text(text) => (OpCode::Text, text.into_bytes()),
            Message::Blob(bytes) => (OpCode::Binary, bytes),
            Message::Object(value) => (
                OpCode::Text,
                tight_vec(
                    serde_json::to_vec(&value).expect("a serde_json::Value always serialises"),
                ),
            ),
        }
    }

    /// Converts a received message to `data_type` (SPEC §3).
    pub(crate) fn convert(incoming: Incoming, data_type: DataType) -> serde_json::Result<Message> {
        Ok(match (data_type, incoming) {
            (DataType::Text | DataType::Auto, Incoming::Text(text)) => Message::Text(text),
            (DataType::Text, Incoming::Binary(bytes)) => Message::Text(lossy_text(bytes)),
            (DataType::Blob, Incoming::Text(text)) => Message::Blob(text.into_bytes()),
            (DataType::Blob | DataType::Auto, Incoming::Binary(bytes)) => Message::Blob(bytes),
            (DataType::Object, Incoming::Text(text)) => {
                Message::Object(serde_json::from_str(&text)?)
            }
            (DataType::Object, Incoming::Binary(bytes)) => {
                Message::Object(serde_json::from_slice(&bytes)?)
            }
        })
    }
}

/// Bytes decoded as UTF-8, invalid sequences replaced; no copy when they are valid.
fn lossy_text(bytes: Bytes) -> ByteString {
    match String::from_utf8_lossy(&bytes) {
        std::borrow::Cow::Owned(replaced) => ByteString::from(replaced),
        std::borrow::Cow::Borrowed(_) => ByteString::try_from(bytes)
            .unwrap_or_else(|_| unreachable!("from_utf8_lossy found it valid")),
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Message {
        Message::Text(ByteString::from(text))
    }
}

impl From<String> for Message {
    fn from(text: String) -> Message {
        let slack = crate::proto::decoder::tight_slack(text.len());
        // Without its spare capacity (`to_owned` allocates the length exactly).
        let text = if text.capacity() <= text.len() + slack {
            text
        } else {
            text.as_str().to_owned()
        };
        Message::Text(ByteString::from(text))
    }
}

impl From<ByteString> for Message {
    fn from(text: ByteString) -> Message {
        Message::Text(text)
    }
}

impl From<Bytes> for Message {
    fn from(bytes: Bytes) -> Message {
        Message::Blob(bytes)
    }
}

impl From<Vec<u8>> for Message {
    fn from(bytes: Vec<u8>) -> Message {
        Message::Blob(tight_vec(bytes))
    }
}

/// `bytes` without its spare capacity beyond a small slack: a queued message holds what the
/// budget counts for it (a `String` built by pushing, or JSON, may have up to twice its length
/// allocated).
fn tight_vec(bytes: Vec<u8>) -> Bytes {
    if bytes.capacity() <= bytes.len() + crate::proto::decoder::tight_slack(bytes.len()) {
        Bytes::from(bytes)
    } else {
        Bytes::copy_from_slice(&bytes)
    }
}

impl From<&[u8]> for Message {
    fn from(bytes: &[u8]) -> Message {
        Message::Blob(Bytes::copy_from_slice(bytes))
    }
}

impl From<serde_json::Value> for Message {
    fn from(value: serde_json::Value) -> Message {
        Message::Object(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(incoming: Incoming, data_type: DataType) -> Message {
        Message::convert(incoming, data_type).unwrap()
    }

    #[test]
    fn conversions_follow_the_data_type() {
        let text = || Incoming::Text(ByteString::from_static("{\"a\":1}"));
        let binary = || Incoming::Binary(Bytes::from_static(b"\xff{}"));
        assert_eq!(convert(text(), DataType::Text), Message::from("{\"a\":1}"));
        assert_eq!(
            convert(binary(), DataType::Text),
            Message::from("\u{FFFD}{}")
        );
        assert_eq!(
            convert(text(), DataType::Blob),
            Message::from(b"{\"a\":1}".to_vec())
        );
        assert_eq!(
            convert(binary(), DataType::Blob),
            Message::from(b"\xff{}".to_vec())
        );
        assert_eq!(convert(text(), DataType::Auto), Message::from("{\"a\":1}"));
        assert_eq!(
            convert(binary(), DataType::Auto),
            Message::from(b"\xff{}".to_vec())
        );
        assert_eq!(
            convert(text(), DataType::Object),
            Message::from(serde_json::json!({"a": 1}))
        );
        let binary_json = Incoming::Binary(Bytes::from_static(b"[1,2]"));
        assert_eq!(
            convert(binary_json, DataType::Object),
            Message::from(serde_json::json!([1, 2]))
        );
        assert!(Message::convert(binary(), DataType::Object).is_err());
    }

    #[test]
    fn the_frame_follows_the_variant() {
        assert_eq!(
            Message::from("é").into_frame(),
            (OpCode::Text, Bytes::from("é"))
        );
        assert_eq!(
            Message::from(vec![1]).into_frame(),
            (OpCode::Binary, Bytes::from(vec![1]))
        );
        let object = Message::from(serde_json::json!({"k": [true, null]}));
        assert_eq!(
            object.into_frame(),
            (OpCode::Text, Bytes::from(r#"{"k":[true,null]}"#))
        );
    }

    /// 4D's JSON Stringify writes keys in insertion order, and so does `send` (issue #10: they
    /// came out sorted). Needs the default feature `preserve_order`.
    #[cfg(feature = "preserve_order")]
    #[test]
    fn objects_keep_the_order_of_their_keys() {
        let object =
            Message::from(serde_json::json!({"zulu": 1, "alpha": {"y": 2, "b": 3}, "mike": 4}));
        assert_eq!(
            object.into_frame().1,
            Bytes::from(r#"{"zulu":1,"alpha":{"y":2,"b":3},"mike":4}"#)
        );
        // Received objects keep the order of their text.
        let received = Incoming::Text(ByteString::from_static(r#"{"z":1,"a":2}"#));
        let parsed = Message::convert(received, DataType::Object).unwrap();
        assert_eq!(parsed.to_text(), r#"{"z":1,"a":2}"#);
    }

    #[test]
    fn valid_binary_text_is_not_copied() {
        let bytes = Bytes::from(b"plain ascii".to_vec());
        let ptr = bytes.as_ptr();
        let Message::Text(text) = convert(Incoming::Binary(bytes), DataType::Text) else {
            panic!("expected text");
        };
        assert_eq!(text.as_ptr(), ptr);
    }
}
