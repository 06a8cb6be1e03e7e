//! What goes into a statement and what comes out of a row, the same on both engines.

use crate::StoreError;

/// A statement parameter. A NULL keeps its type: PostgreSQL types parameters from what is
/// bound, so `None::<i64>` and `None::<String>` are different NULLs.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Int(Option<i64>),
    Real(Option<f64>),
    Text(Option<String>),
    Blob(Option<Vec<u8>>),
}

impl From<Vec<u8>> for Param {
    fn from(v: Vec<u8>) -> Self {
        Self::Blob(Some(v))
    }
}

impl From<i64> for Param {
    fn from(v: i64) -> Self {
        Self::Int(Some(v))
    }
}

impl From<Option<i64>> for Param {
    fn from(v: Option<i64>) -> Self {
        Self::Int(v)
    }
}

impl From<bool> for Param {
    fn from(v: bool) -> Self {
        Self::Int(Some(i64::from(v)))
    }
}

impl From<f64> for Param {
    fn from(v: f64) -> Self {
        Self::Real(Some(v))
    }
}

impl From<String> for Param {
    fn from(v: String) -> Self {
        Self::Text(Some(v))
    }
}

impl From<&str> for Param {
    fn from(v: &str) -> Self {
        Self::Text(Some(v.to_owned()))
    }
}

impl From<&String> for Param {
    fn from(v: &String) -> Self {
        Self::Text(Some(v.clone()))
    }
}

impl From<Option<String>> for Param {
    fn from(v: Option<String>) -> Self {
        Self::Text(v)
    }
}

impl From<Option<&str>> for Param {
    fn from(v: Option<&str>) -> Self {
        Self::Text(v.map(str::to_owned))
    }
}

impl rusqlite::ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Self::Int(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Self::Real(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Real(*v)),
            Self::Text(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Self::Blob(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
            Self::Int(None) | Self::Real(None) | Self::Text(None) | Self::Blob(None) => {
                ToSqlOutput::Borrowed(ValueRef::Null)
            }
        })
    }
}

/// One column of a row as the database answered it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Self::Null => "NULL",
            Self::Int(_) => "an integer",
            Self::Real(_) => "a real",
            Self::Text(_) => "text",
            Self::Blob(_) => "a blob",
        }
    }
}

impl From<rusqlite::types::ValueRef<'_>> for Value {
    fn from(v: rusqlite::types::ValueRef<'_>) -> Self {
        use rusqlite::types::ValueRef;
        match v {
            ValueRef::Null => Self::Null,
            ValueRef::Integer(i) => Self::Int(i),
            ValueRef::Real(r) => Self::Real(r),
            ValueRef::Text(t) => Self::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Self::Blob(b.to_vec()),
        }
    }
}

/// A Rust value read from one column.
pub trait FromValue: Sized {
    fn from_value(value: Value) -> Result<Self, String>;
}

fn mismatch<T>(want: &str, got: &Value) -> Result<T, String> {
    Err(format!("expected {want}, found {}", got.kind()))
}

impl FromValue for i64 {
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::Int(v) => Ok(v),
            other => mismatch("an integer", &other),
        }
    }
}

impl FromValue for bool {
    fn from_value(value: Value) -> Result<Self, String> {
        i64::from_value(value).map(|v| v != 0)
    }
}

impl FromValue for f64 {
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::Real(v) => Ok(v),
            #[allow(clippy::cast_precision_loss)]
            Value::Int(v) => Ok(v as f64),
            other => mismatch("a real", &other),
        }
    }
}

impl FromValue for String {
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::Text(v) => Ok(v),
            other => mismatch("text", &other),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::Blob(v) => Ok(v),
            Value::Text(v) => Ok(v.into_bytes()),
            other => mismatch("a blob", &other),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// One row as the database answered it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row(pub(crate) Vec<Value>);

impl Row {
    /// Column `index`, read as `T`.
    pub fn get<T: FromValue>(&self, index: usize) -> Result<T, StoreError> {
        let value = self
            .0
            .get(index)
            .cloned()
            .ok_or_else(|| StoreError::Decode(format!("column {index} is not in the row")))?;
        T::from_value(value).map_err(|e| StoreError::Decode(format!("column {index}: {e}")))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn take<T: FromValue>(&mut self, index: usize) -> Result<T, StoreError> {
        let value = self
            .0
            .get_mut(index)
            .map(|v| std::mem::replace(v, Value::Null))
            .ok_or_else(|| StoreError::Decode(format!("column {index} is not in the row")))?;
        T::from_value(value).map_err(|e| StoreError::Decode(format!("column {index}: {e}")))
    }
}

/// A typed row: a tuple of [`FromValue`]s, or [`Row`] itself.
pub trait FromRow: Sized {
    fn from_row(row: Row) -> Result<Self, StoreError>;
}

impl FromRow for Row {
    fn from_row(row: Row) -> Result<Self, StoreError> {
        Ok(row)
    }
}

macro_rules! tuple_from_row {
    ($($t:ident $i:tt),+) => {
        impl<$($t: FromValue),+> FromRow for ($($t,)+) {
            fn from_row(mut row: Row) -> Result<Self, StoreError> {
                Ok(($(row.take::<$t>($i)?,)+))
            }
        }
    };
}

tuple_from_row!(A 0);
tuple_from_row!(A 0, B 1);
tuple_from_row!(A 0, B 1, C 2);
tuple_from_row!(A 0, B 1, C 2, D 3);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9);
