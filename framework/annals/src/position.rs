//! Positions in the log: partitions, offsets inside a partition, versions inside a
//! stream, and the expected version an append is checked against.

use std::fmt;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// Defines a position type: a number that is not to be mixed up with the others.
/// Serialized as the bare number, so the wire format is the number's; comparable and
/// addable with bare numbers of its width, never with another position type.
macro_rules! position {
    ($(#[$doc:meta])* $name:ident($repr:ty)) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $repr);

        impl $name {
            /// The bare number.
            pub const fn get(self) -> $repr {
                self.0
            }

            /// The position after this one.
            pub const fn next(self) -> Self {
                $name(self.0 + 1)
            }

            /// `n` positions before this one, if there are that many.
            pub const fn checked_sub(self, n: $repr) -> Option<Self> {
                match self.0.checked_sub(n) {
                    Some(n) => Some($name(n)),
                    None => None,
                }
            }

            /// `n` positions before this one, or the first if there are fewer.
            pub const fn saturating_sub(self, n: $repr) -> Self {
                $name(self.0.saturating_sub(n))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = std::num::ParseIntError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                text.parse().map($name)
            }
        }

        impl From<$repr> for $name {
            fn from(n: $repr) -> Self {
                $name(n)
            }
        }

        impl From<$name> for $repr {
            fn from(position: $name) -> Self {
                position.0
            }
        }

        impl PartialEq<$repr> for $name {
            fn eq(&self, other: &$repr) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<$name> for $repr {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialOrd<$name> for $repr {
            fn partial_cmp(&self, other: &$name) -> Option<std::cmp::Ordering> {
                self.partial_cmp(&other.0)
            }
        }

        impl PartialOrd<$repr> for $name {
            fn partial_cmp(&self, other: &$repr) -> Option<std::cmp::Ordering> {
                self.0.partial_cmp(other)
            }
        }

        impl std::ops::Add<$repr> for $name {
            type Output = $name;
            fn add(self, n: $repr) -> $name {
                $name(self.0 + n)
            }
        }

        impl std::ops::AddAssign<$repr> for $name {
            fn add_assign(&mut self, n: $repr) {
                self.0 += n;
            }
        }

        impl std::ops::SubAssign<$repr> for $name {
            fn sub_assign(&mut self, n: $repr) {
                self.0 -= n;
            }
        }

        impl std::ops::Sub<$repr> for $name {
            type Output = $name;
            fn sub(self, n: $repr) -> $name {
                $name(self.0 - n)
            }
        }

        /// How far apart two positions are.
        impl std::ops::Sub for $name {
            type Output = $repr;
            fn sub(self, other: $name) -> $repr {
                self.0 - other.0
            }
        }

        /// As SQL's signed 64-bit integer, where every engine stores it.
        impl TryFrom<$name> for i64 {
            type Error = std::num::TryFromIntError;
            fn try_from(position: $name) -> Result<i64, Self::Error> {
                i64::try_from(u64::from(position.0))
            }
        }

        impl From<$name> for crate::readmodel::Param {
            fn from(position: $name) -> Self {
                crate::readmodel::Param::Int(Some(i64::try_from(position).unwrap_or(i64::MAX)))
            }
        }

        impl crate::readmodel::FromValue for $name {
            fn from_value(value: &crate::readmodel::Value) -> Option<Self> {
                <$repr as crate::readmodel::FromValue>::from_value(value).map($name)
            }
        }

        #[cfg(feature = "sqlite")]
        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(i64::try_from(*self).unwrap_or(i64::MAX).into())
            }
        }

        #[cfg(feature = "sqlite")]
        impl rusqlite::types::FromSql for $name {
            fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                <$repr as rusqlite::types::FromSql>::column_result(value).map($name)
            }
        }
    };
}

position! {
    /// A partition number, `0..partition_count`.
    ///
    /// Positions are not interchangeable: a version where an offset is expected does
    /// not compile.
    ///
    /// ```compile_fail
    /// let version = annals::Version(3);
    /// let offset: annals::Offset = version;
    /// ```
    Partition(u32)
}

position! {
    /// A position inside a partition, 0-based and gapless.
    Offset(u64)
}

position! {
    /// A position inside a stream, 1-based: a stream with N events has version N, and a
    /// stream that does not exist has version 0.
    Version(u64)
}

impl Partition {
    /// Every partition of a store with `count` of them, in order.
    pub fn all(count: u32) -> impl DoubleEndedIterator<Item = Partition> + ExactSizeIterator {
        (0..count).map(Partition)
    }

    /// The partition's place in a list of all of them.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// A record's place in the log: its partition and its offset there. What a reader
/// waits for to see a write ([`admin::wait_until`](crate::group::admin::wait_until)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    /// The partition.
    pub partition: Partition,
    /// The offset in it.
    pub offset: Offset,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.partition, self.offset)
    }
}

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
                .map(|version| ExpectedVersion::Exact(Version(version)))
                .map_err(|_| ParseExpectedVersionError(text.to_owned())),
        }
    }
}

impl Serialize for ExpectedVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ExpectedVersion::Exact(version) => serializer.serialize_u64(version.0),
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
                Ok(ExpectedVersion::Exact(Version(version)))
            }
            fn visit_i64<E: de::Error>(self, version: i64) -> Result<Self::Value, E> {
                u64::try_from(version)
                    .map(|version| ExpectedVersion::Exact(Version(version)))
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
        assert!(ExpectedVersion::Any.admits(Version(0)) && ExpectedVersion::Any.admits(Version(7)));
        assert!(ExpectedVersion::NoStream.admits(Version(0)) && !ExpectedVersion::NoStream.admits(Version(1)));
        assert!(!ExpectedVersion::StreamExists.admits(Version(0)) && ExpectedVersion::StreamExists.admits(Version(3)));
        assert!(
            ExpectedVersion::Exact(Version(0)).admits(Version(0))
                && !ExpectedVersion::Exact(Version(2)).admits(Version(3))
        );
    }

    #[test]
    fn positions_are_bare_numbers_on_the_wire() {
        assert_eq!(serde_json::to_string(&Offset(41)).unwrap(), "41");
        assert_eq!(serde_json::from_str::<Version>("7").unwrap(), Version(7));
        assert_eq!(serde_json::to_string(&Partition(3)).unwrap(), "3");
        assert!(serde_json::from_str::<Offset>("-1").is_err());
        assert_eq!("12".parse::<Offset>().unwrap(), Offset(12));
        assert_eq!(Offset(12).to_string(), "12");
        assert_eq!(Offset(12) + 1, Offset(13));
        assert_eq!(Offset(13) - Offset(10), 3);
        assert_eq!(Version(0).checked_sub(1), None);
        assert_eq!(
            Partition::all(3).collect::<Vec<_>>(),
            [Partition(0), Partition(1), Partition(2)]
        );
    }

    #[test]
    fn wire_format_round_trips() {
        for (value, json) in [
            (ExpectedVersion::Any, r#""any""#),
            (ExpectedVersion::NoStream, r#""no_stream""#),
            (ExpectedVersion::StreamExists, r#""exists""#),
            (ExpectedVersion::Exact(Version(12)), "12"),
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
