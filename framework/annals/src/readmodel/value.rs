//! What goes into a statement and what comes out of a row.

use uuid::Uuid;

use crate::error::{Error, Result};

/// A statement parameter. Nulls carry their type, so PostgreSQL knows it.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// An integer (BIGINT).
    Int(Option<i64>),
    /// A floating-point number (DOUBLE PRECISION / REAL).
    Real(Option<f64>),
    /// Text.
    Text(Option<String>),
    /// A boolean (an integer 0/1 on SQLite).
    Bool(Option<bool>),
    /// Bytes (BYTEA / BLOB).
    Blob(Option<Vec<u8>>),
}

macro_rules! param_from {
    ($variant:ident: $($t:ty => $convert:expr),* $(,)?) => {$(
        impl From<$t> for Param {
            fn from(value: $t) -> Self {
                Param::$variant(Some($convert(value)))
            }
        }
        impl From<Option<$t>> for Param {
            fn from(value: Option<$t>) -> Self {
                Param::$variant(value.map($convert))
            }
        }
    )*};
}

param_from!(Int: i64 => |v| v, i32 => i64::from, u32 => i64::from, i16 => i64::from);
param_from!(Real: f64 => |v| v);
param_from!(Text: String => |v| v, &str => str::to_owned, &String => String::clone, Uuid => |v: Uuid| v.to_string());
param_from!(Bool: bool => |v| v);
param_from!(Blob: Vec<u8> => |v| v);

/// One column of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer (also PostgreSQL's booleans, as 0 and 1).
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// Text (also PostgreSQL's uuid and timestamptz columns, as text; cast json with
    /// `::text`).
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Int(_) => "an integer",
            Value::Real(_) => "a real",
            Value::Text(_) => "text",
            Value::Blob(_) => "bytes",
        }
    }
}

/// A type a [`Value`] converts into.
pub trait FromValue: Sized {
    /// The conversion; `None` when the value holds something else.
    fn from_value(value: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }
}

impl FromValue for u64 {
    fn from_value(value: &Value) -> Option<Self> {
        i64::from_value(value).and_then(|v| u64::try_from(v).ok())
    }
}

impl FromValue for i32 {
    fn from_value(value: &Value) -> Option<Self> {
        i64::from_value(value).and_then(|v| i32::try_from(v).ok())
    }
}

impl FromValue for u32 {
    fn from_value(value: &Value) -> Option<Self> {
        i64::from_value(value).and_then(|v| u32::try_from(v).ok())
    }
}

impl FromValue for bool {
    fn from_value(value: &Value) -> Option<Self> {
        i64::from_value(value).map(|v| v != 0)
    }
}

impl FromValue for f64 {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Real(v) => Some(*v),
            Value::Int(v) => Some(*v as f64),
            _ => None,
        }
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Text(v) => Some(v.clone()),
            _ => None,
        }
    }
}

impl FromValue for Uuid {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Text(v) => v.parse().ok(),
            _ => None,
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Blob(v) => Some(v.clone()),
            _ => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Null => Some(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// One row of a query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    /// Column `index` (0-based) as a `T`.
    pub fn get<T: FromValue>(&self, index: usize) -> Result<T> {
        let value = self.0.get(index).unwrap_or(&Value::Null);
        T::from_value(value).ok_or(Error::ColumnType {
            index,
            expected: std::any::type_name::<T>(),
            found: value.kind(),
        })
    }
}
