//! Positions in the log: partitions, offsets inside a partition, versions inside a
//! stream, and the expected version an append is checked against.

use std::fmt;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A partition number, `0..partition_count`.
pub type Partition = u32;

/// A position inside a partition, 0-based and gapless.
pub type Offset = u64;

/// A position inside a stream, 1-based: a stream with N events has version N, and a
/// stream that does not exist has version 0.
pub type Version = u64;

/// The version a stream must have for an append to go ahead (optimistic concurrency).
///
/// On the wire (HTTP, CLI) it is written `"any"`, `"no_stream"`, `"exists"` or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// No check: append whatever the stream's version.
    Any,
    /// The stream must not exist yet (same as `Exact(0)`).
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream must be at exactly this version.
    Exact(Version),
}

impl ExpectedVersion {
    /// Whether a stream currently at `actual` satisfies this expectation.
    pub fn admits(self, actual: Version) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::StreamExists => actual > 0,
            ExpectedVersion::Exact(version) => actual == version,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no_stream"),
            ExpectedVersion::StreamExists => f.write_str("exists"),
            ExpectedVersion::Exact(version) => write!(f, "{version}"),
        }
    }
}

/// The text was not `any`, `no_stream`, `exists` or a version number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected version must be \"any\", \"no_stream\", \"exists\" or a number, not {0:?}")]
pub struct ParseExpectedVersionError(String);

impl FromStr for ExpectedVersion {
    type Err = ParseExpectedVersionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "any" => Ok(ExpectedVersion::Any),
            "no_stream" => Ok(ExpectedVersion::NoStream),
            "exists" => Ok(ExpectedVersion::StreamExists),
            number => number
                .parse()
                .map(ExpectedVersion::Exact)
                .map_err(|_| ParseExpectedVersionError(text.to_owned())),
        }
    }
}

impl Serialize for ExpectedVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ExpectedVersion::Exact(version) => serializer.serialize_u64(*version),
            other => serializer.collect_str(other),
        }
    }
}

impl<'de> Deserialize<'de> for ExpectedVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ExpectedVersion;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"any\", \"no_stream\", \"exists\" or a non-negative version")
            }
            fn visit_u64<E: de::Error>(self, version: u64) -> Result<Self::Value, E> {
                Ok(ExpectedVersion::Exact(version))
            }
            fn visit_i64<E: de::Error>(self, version: i64) -> Result<Self::Value, E> {
                u64::try_from(version)
                    .map(ExpectedVersion::Exact)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(version), &self))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                match text {
                    "any" | "no_stream" | "exists" => Ok(text.parse().expect("keyword")),
                    _ => Err(E::invalid_value(de::Unexpected::Str(text), &self)),
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_follows_the_contract() {
        assert!(ExpectedVersion::Any.admits(0) && ExpectedVersion::Any.admits(7));
        assert!(ExpectedVersion::NoStream.admits(0) && !ExpectedVersion::NoStream.admits(1));
        assert!(!ExpectedVersion::StreamExists.admits(0) && ExpectedVersion::StreamExists.admits(3));
        assert!(ExpectedVersion::Exact(0).admits(0) && !ExpectedVersion::Exact(2).admits(3));
    }

    #[test]
    fn wire_format_round_trips() {
        for (value, json) in [
            (ExpectedVersion::Any, r#""any""#),
            (ExpectedVersion::NoStream, r#""no_stream""#),
            (ExpectedVersion::StreamExists, r#""exists""#),
            (ExpectedVersion::Exact(12), "12"),
        ] {
            assert_eq!(serde_json::to_string(&value).unwrap(), json);
            assert_eq!(serde_json::from_str::<ExpectedVersion>(json).unwrap(), value);
            assert_eq!(value.to_string().parse::<ExpectedVersion>().unwrap(), value);
        }
        assert!(serde_json::from_str::<ExpectedVersion>(r#""maybe""#).is_err());
        assert!(serde_json::from_str::<ExpectedVersion>("-1").is_err());
        assert!("-1".parse::<ExpectedVersion>().is_err());
    }
}
