//! Upcasters: old event JSON turned into the current shape on read, so an event enum
//! can change while the log, which is never rewritten, keeps every old record.
//!
//! Each step converts one event type from schema version `n` to `n + 1` (and may rename
//! the type). Reading a record written with version `v` runs the steps `v`, `v + 1`, …
//! up to the enum's [`DomainEvent::SCHEMA_VERSION`](super::DomainEvent::SCHEMA_VERSION);
//! a version without a step for that type leaves its JSON as it is.

use std::collections::HashMap;
use std::fmt;

use serde_json::Value;

type Step = Box<dyn Fn(Value) -> Value + Send + Sync>;

/// The registered conversions, by event type and the schema version they convert from.
///
/// ```
/// use annals::aggregate::Upcasters;
/// use serde_json::json;
///
/// let upcasters = Upcasters::new()
///     // v1 stored amounts in whole euros; v2 stores cents.
///     .register("Deposited", 1, |data| json!({"cents": data["amount"].as_i64().unwrap_or(0) * 100}))
///     // v2 renamed Credited to Deposited.
///     .rename("Credited", 1, "Deposited");
/// let (kind, data) = upcasters.upcast("Deposited", 1, 2, json!({"amount": 3}));
/// assert_eq!((kind.as_str(), data), ("Deposited", json!({"cents": 300})));
/// ```
#[derive(Default)]
pub struct Upcasters {
    steps: HashMap<(String, u32), (Option<String>, Step)>,
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.steps.keys()).finish()
    }
}

impl Upcasters {
    /// No conversions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Converts the payload of `event_type` from schema version `from` to `from + 1`.
    pub fn register(
        mut self,
        event_type: impl Into<String>,
        from: u32,
        step: impl Fn(Value) -> Value + Send + Sync + 'static,
    ) -> Self {
        self.steps.insert((event_type.into(), from), (None, Box::new(step)));
        self
    }

    /// Renames `event_type` to `to` from schema version `from` to `from + 1`, keeping
    /// its payload (the new name's steps for later versions then apply).
    pub fn rename(self, event_type: impl Into<String>, from: u32, to: impl Into<String>) -> Self {
        self.rename_with(event_type, from, to, |data| data)
    }

    /// Renames `event_type` to `to` and converts its payload, from schema version
    /// `from` to `from + 1`.
    pub fn rename_with(
        mut self,
        event_type: impl Into<String>,
        from: u32,
        to: impl Into<String>,
        step: impl Fn(Value) -> Value + Send + Sync + 'static,
    ) -> Self {
        self.steps
            .insert((event_type.into(), from), (Some(to.into()), Box::new(step)));
        self
    }

    /// The type and payload of an event written with schema `version`, in the shape of
    /// schema `target`.
    pub fn upcast(&self, event_type: &str, version: u32, target: u32, data: Value) -> (String, Value) {
        let (mut kind, mut data) = (event_type.to_owned(), data);
        for from in version..target {
            if let Some((rename, step)) = self.steps.get(&(kind.clone(), from)) {
                data = step(data);
                if let Some(to) = rename {
                    kind.clone_from(to);
                }
            }
        }
        (kind, data)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}
