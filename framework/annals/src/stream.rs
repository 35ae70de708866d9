//! Stream ids: the key of one aggregate's history, validated once at the edge.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// The longest stream id, in bytes.
pub const MAX_STREAM_ID_LEN: usize = 200;

/// The id of a stream, e.g. `order-7f3c`: 1–200 bytes of `[A-Za-z0-9_.:@-]`.
///
/// By convention an id is `category-id`; [`StreamId::category`] is the text before the
/// first `-`. A `StreamId` can only be built through [`StreamId::new`], so every value
/// in the program is valid.
///
/// ```
/// use annals::StreamId;
///
/// let id = StreamId::new("order-42")?;
/// assert_eq!((id.category(), id.id()), ("order", "42"));
/// assert!(StreamId::new("order 42").is_err());
/// # Ok::<(), annals::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct StreamId(String);

/// A text that is not a stream id, and why. It converts into
/// [`Error::InvalidStreamId`](crate::Error::InvalidStreamId), so `?` carries it into an
/// `annals::Result`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidStreamId {
    /// The text.
    pub id: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for InvalidStreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid stream id {:?}: {}", self.id, self.reason)
    }
}

impl std::error::Error for InvalidStreamId {}

impl StreamId {
    /// Validates `id` and wraps it.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidStreamId> {
        let id = id.into();
        match invalid_reason(&id) {
            None => Ok(StreamId(id)),
            Some(reason) => Err(InvalidStreamId { id, reason }),
        }
    }

    /// Wraps an id read back from a store, which validated it on the way in.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn trusted(id: String) -> Self {
        debug_assert!(invalid_reason(&id).is_none(), "stored stream id {id:?} is invalid");
        StreamId(id)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The category: the text before the first `-`, or the whole id if it has none.
    pub fn category(&self) -> &str {
        category_of(&self.0)
    }

    /// The aggregate's id within its category: the text after the first `-` (what a
    /// repository was given), or the whole id if it has none.
    pub fn id(&self) -> &str {
        self.0.split_once('-').map_or(&self.0, |(_, id)| id)
    }
}

pub(crate) fn category_of(id: &str) -> &str {
    id.split_once('-').map_or(id, |(category, _)| category)
}

/// Why `id` is not a valid stream id (group names follow the same rules), if it is not.
pub(crate) fn invalid_reason(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        Some("is empty")
    } else if id.len() > MAX_STREAM_ID_LEN {
        Some("is longer than 200 bytes")
    } else if !id.bytes().all(is_stream_byte) {
        Some("may only contain A-Z a-z 0-9 _ . : @ -")
    } else {
        None
    }
}

const fn is_stream_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b':' | b'@' | b'-')
}

/// Whether `category` could be the category of some stream id: 1–200 bytes of stream
/// id characters, without `-`. A `const fn`, so that an aggregate's category is
/// checked when the program is compiled.
pub(crate) const fn is_category(category: &str) -> bool {
    let bytes = category.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_STREAM_ID_LEN {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'-' || !is_stream_byte(bytes[i]) {
            return false;
        }
        i += 1;
    }
    true
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Ids compare as their text, so maps keyed by stream id can be searched by `&str`.
impl std::borrow::Borrow<str> for StreamId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for StreamId {
    type Err = InvalidStreamId;
    fn from_str(id: &str) -> Result<Self, InvalidStreamId> {
        StreamId::new(id)
    }
}

impl TryFrom<String> for StreamId {
    type Error = InvalidStreamId;
    fn try_from(id: String) -> Result<Self, InvalidStreamId> {
        StreamId::new(id)
    }
}

impl TryFrom<&str> for StreamId {
    type Error = InvalidStreamId;
    fn try_from(id: &str) -> Result<Self, InvalidStreamId> {
        StreamId::new(id)
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let id = String::deserialize(deserializer)?;
        StreamId::new(id).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for id in [
            "order-1",
            "a",
            "customer-alice@example.com",
            "x:y.z_w-1",
            &"a".repeat(200),
        ] {
            assert_eq!(StreamId::new(id).unwrap().as_str(), id);
        }
    }

    #[test]
    fn rejects_everything_else() {
        for id in ["", "order 1", "order/1", "ordre-é", "a\n", &"a".repeat(201)] {
            assert!(
                matches!(StreamId::new(id), Err(InvalidStreamId { .. })),
                "{id:?} was accepted"
            );
        }
        assert!(serde_json::from_str::<StreamId>(r#""no spaces""#).is_err());
    }

    #[test]
    fn category_is_the_text_before_the_first_dash() {
        assert_eq!(StreamId::new("order-7f3c-1").unwrap().category(), "order");
        assert_eq!(StreamId::new("singleton").unwrap().category(), "singleton");
        assert!(is_category("order"));
        assert!(!is_category("order-1"));
        assert!(!is_category(""));
    }

    #[test]
    fn id_is_the_text_after_the_first_dash() {
        assert_eq!(StreamId::new("order-7f3c-1").unwrap().id(), "7f3c-1");
        assert_eq!(StreamId::new("product-sku-1").unwrap().id(), "sku-1");
        assert_eq!(StreamId::new("singleton").unwrap().id(), "singleton");
    }
}
