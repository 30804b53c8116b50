//! Typed reads of a client frame's fields: a known field of the wrong type is a `VALIDATION_ERROR` naming it.

use serde_json::{Map, Value};

use crate::error::ClientError;

pub(super) struct Fields<'a> {
    pub(super) obj: &'a Map<String, Value>,
}

impl Fields<'_> {
    pub(super) fn opt_str(&self, key: &str) -> Result<Option<String>, ClientError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ClientError::validation(format!("'{key}' must be a string"))),
        }
    }
    /// An optional list of short strings (`supports`): at most `max` entries of at most `max_len` chars each.
    pub(super) fn opt_str_list(
        &self,
        key: &str,
        max: usize,
        max_len: usize,
    ) -> Result<Option<Vec<String>>, ClientError> {
        let bad = || ClientError::validation(format!("'{key}' must be a list of at most {max} strings"));
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) if items.len() <= max => items
                .iter()
                .map(|i| i.as_str().filter(|s| s.chars().count() <= max_len).map(str::to_string).ok_or_else(bad))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(bad()),
        }
    }
    pub(super) fn req_str(&self, key: &str) -> Result<String, ClientError> {
        match self.opt_str(key)? {
            Some(s) if !s.is_empty() && s.len() <= 256 => Ok(s),
            Some(s) if !s.is_empty() => Err(ClientError::validation(format!("'{key}' is too long"))),
            _ => Err(ClientError::validation(format!("missing or empty '{key}'"))),
        }
    }
    pub(super) fn opt_bool(&self, key: &str) -> Result<Option<bool>, ClientError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ClientError::validation(format!("'{key}' must be a boolean"))),
        }
    }
    pub(super) fn req_bool(&self, key: &str) -> Result<bool, ClientError> {
        self.opt_bool(key)?.ok_or_else(|| ClientError::validation(format!("missing '{key}'")))
    }
    pub(super) fn req_u64(&self, key: &str) -> Result<u64, ClientError> {
        match self.obj.get(key) {
            Some(Value::Number(n)) => {
                n.as_u64().ok_or_else(|| ClientError::validation(format!("'{key}' must be a non-negative integer")))
            }
            None | Some(Value::Null) => Err(ClientError::validation(format!("missing '{key}'"))),
            Some(_) => Err(ClientError::validation(format!("'{key}' must be a non-negative integer"))),
        }
    }
    /// `limit`: 1–100, default 50.
    pub(super) fn limit(&self) -> Result<usize, ClientError> {
        match self.obj.get("limit") {
            None | Some(Value::Null) => Ok(50),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(l @ 1..=100) => Ok(l as usize),
                _ => Err(ClientError::validation("'limit' must be an integer from 1 to 100")),
            },
            Some(_) => Err(ClientError::validation("'limit' must be an integer from 1 to 100")),
        }
    }
}
