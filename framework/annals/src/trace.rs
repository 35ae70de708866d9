//! W3C trace context (`traceparent`), carried in record metadata from a command to its
//! events and on to the handlers of the groups that read them.
//!
//! A command given a [`TraceParent`] (from an incoming request's `traceparent` header,
//! say) writes it into the metadata of every event it appends. A group member handles
//! each record inside a span (`annals.handle`) that names the record's trace and
//! parent span, and a saga's next command ([`CommandContext::caused_by`]) continues
//! the same trace with a new span id. A tracing layer that exports to OpenTelemetry can
//! take those fields as the span's remote parent.
//!
//! [`CommandContext::caused_by`]: crate::aggregate::CommandContext::caused_by

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A W3C `traceparent`: `00-<trace id: 32 hex>-<parent span id: 16 hex>-<flags: 2 hex>`.
///
/// ```
/// use annals::TraceParent;
/// let parent: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse()?;
/// assert_eq!(parent.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// let child = parent.child();
/// assert_eq!(child.trace_id(), parent.trace_id());
/// assert_ne!(child.span_id(), parent.span_id());
/// # Ok::<(), annals::InvalidTraceParent>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: u128,
    span_id: u64,
    flags: u8,
}

/// The text is not a version-00 W3C `traceparent`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>, ids not all zero): {0:?}")]
pub struct InvalidTraceParent(String);

impl TraceParent {
    /// The start of a new trace, sampled: random trace and span ids.
    pub fn root() -> Self {
        TraceParent {
            trace_id: nonzero(rand::random()),
            span_id: nonzero(rand::random::<u64>().into()) as u64,
            flags: 0x01,
        }
    }

    /// A span in the same trace under this one: the same trace id and flags, a new span
    /// id.
    pub fn child(&self) -> Self {
        TraceParent {
            span_id: nonzero(rand::random::<u64>().into()) as u64,
            ..*self
        }
    }

    /// The trace id, 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span id of the parent, 16 lowercase hex digits.
    pub fn span_id(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    /// Whether the trace is sampled (flag bit 0).
    pub fn sampled(&self) -> bool {
        self.flags & 0x01 == 0x01
    }
}

fn nonzero(id: u128) -> u128 {
    id.max(1)
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{:032x}-{:016x}-{:02x}", self.trace_id, self.span_id, self.flags)
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

impl FromStr for TraceParent {
    type Err = InvalidTraceParent;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidTraceParent(text.chars().take(80).collect());
        let hex = |part: &str, len: usize| {
            (part.len() == len && part.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
                .then(|| u128::from_str_radix(part, 16).ok())
                .flatten()
        };
        let mut parts = text.split('-');
        let (Some("00"), Some(trace), Some(span), Some(flags), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let (Some(trace_id), Some(span_id), Some(flags)) = (hex(trace, 32), hex(span, 16), hex(flags, 2)) else {
            return Err(invalid());
        };
        if trace_id == 0 || span_id == 0 {
            return Err(invalid());
        }
        Ok(TraceParent {
            trace_id,
            span_id: span_id as u64,
            flags: flags as u8,
        })
    }
}

impl Serialize for TraceParent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TraceParent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_specification_allows_and_nothing_else() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent: TraceParent = text.parse().expect("valid");
        assert_eq!(parent.to_string(), text);
        assert!(parent.sampled());
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(bad.parse::<TraceParent>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn children_keep_the_trace_and_roots_start_one() {
        let root = TraceParent::root();
        let child = root.child();
        assert_eq!((child.trace_id(), child.sampled()), (root.trace_id(), true));
        assert_ne!(child.span_id(), root.span_id());
        assert_ne!(TraceParent::root().trace_id(), root.trace_id());
        let json = serde_json::to_string(&root).expect("json");
        assert_eq!(serde_json::from_str::<TraceParent>(&json).expect("back"), root);
    }
}
