//! SQL values as they travel: JSON on the HTTP API, msgpack in log records, rusqlite values
//! in SQLite. Blobs are `{"base64": "..."}` in JSON.

use base64::Engine;
use rusqlite::types::{Value, ValueRef};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::{Error, Result};

/// One SQL value, in the log's encoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SqlValue {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// One statement with its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<SqlValue>,
}

impl SqlValue {
    /// Converts a JSON parameter; `what` names it in the error.
    pub fn from_json(v: &Json, what: &str) -> Result<Self> {
        Ok(match v {
            Json::Null => SqlValue::Null,
            Json::Bool(b) => SqlValue::Integer(i64::from(*b)),
            Json::Number(n) => match n.as_i64() {
                Some(i) => SqlValue::Integer(i),
                None => SqlValue::Real(n.as_f64().ok_or_else(|| Error::InvalidInput(format!("{what}: number {n} is out of range")))?),
            },
            Json::String(s) => SqlValue::Text(s.clone()),
            Json::Object(o) if o.len() == 1 && o.contains_key("base64") => {
                let text = o["base64"].as_str().ok_or_else(|| Error::InvalidInput(format!("{what}: \"base64\" must be a string")))?;
                let bytes = base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| Error::InvalidInput(format!("{what}: invalid base64: {e}")))?;
                SqlValue::Blob(bytes)
            }
            other => return Err(Error::InvalidInput(format!("{what}: {other} is not a SQL value (use a number, string, null or {{\"base64\": \"...\"}})"))),
        })
    }

    pub fn to_json(&self) -> Json {
        match self {
            SqlValue::Null => Json::Null,
            SqlValue::Integer(i) => Json::from(*i),
            SqlValue::Real(f) => serde_json::Number::from_f64(*f)
                .map(Json::Number)
                .unwrap_or(Json::Null),
            SqlValue::Text(s) => Json::String(s.clone()),
            SqlValue::Blob(b) => {
                serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) })
            }
        }
    }

    pub fn from_ref(v: ValueRef<'_>) -> Self {
        match v {
            ValueRef::Null => SqlValue::Null,
            ValueRef::Integer(i) => SqlValue::Integer(i),
            ValueRef::Real(f) => SqlValue::Real(f),
            ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
        }
    }

    pub fn to_sqlite(&self) -> Value {
        match self {
            SqlValue::Null => Value::Null,
            SqlValue::Integer(i) => Value::Integer(*i),
            SqlValue::Real(f) => Value::Real(*f),
            SqlValue::Text(s) => Value::Text(s.clone()),
            SqlValue::Blob(b) => Value::Blob(b.clone()),
        }
    }
}

/// Converts a JSON `params` array (absent means none).
pub fn params_from_json(v: Option<&Json>) -> Result<Vec<SqlValue>> {
    match v {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, p)| SqlValue::from_json(p, &format!("parameter {}", i + 1)))
            .collect(),
        Some(other) => Err(Error::InvalidInput(format!(
            "\"params\" must be an array, found {other}"
        ))),
    }
}

/// Binds `params` positionally; a count mismatch is the user's error, said plainly.
pub fn bind(stmt: &mut rusqlite::Statement<'_>, params: &[SqlValue]) -> Result<()> {
    let expected = stmt.parameter_count();
    if expected != params.len() {
        return Err(Error::InvalidInput(format!(
            "the statement takes {expected} parameter(s) but {} were given",
            params.len()
        )));
    }
    for (i, p) in params.iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, p.to_sqlite())?;
    }
    Ok(())
}
