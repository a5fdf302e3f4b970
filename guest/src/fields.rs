//! Reading JSON objects field by field, with errors that name the exact key.
//!
//! Config files and tool requests both come from people and models, so every
//! rejection says which key was wrong and what was expected ("clusters.a.slurmDefaults.nodes:
//! expected a whole number >= 1, got 1.5"). Unknown keys are refused, because a
//! misspelt key that is silently ignored is worse than an error.

use serde_json::{Map, Value};

/// A problem with one field; `path` is dotted ("clusters.gpu.remoteRoot").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

pub type FieldResult<T> = Result<T, FieldError>;

/// How strictly scalar types are read. Tool requests are lenient the way the
/// reference host's validator was (`"50"` is accepted for a number, a single
/// string for a list); config files are strict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coercion {
    Strict,
    Lenient,
}

/// A JSON object being read; remembers which keys were consumed.
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: String,
    coercion: Coercion,
    known: Vec<&'static str>,
}

pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let shown: String = s.chars().take(40).collect();
            if shown.len() < s.len() {
                format!("the string {shown:?}…")
            } else {
                format!("the string {shown:?}")
            }
        }
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

impl<'a> Fields<'a> {
    pub fn new(value: &'a Value, path: &str, coercion: Coercion) -> FieldResult<Self> {
        match value {
            Value::Object(map) => Ok(Fields {
                map,
                path: path.to_string(),
                coercion,
                known: Vec::new(),
            }),
            other => Err(FieldError {
                path: path.to_string(),
                message: format!("expected an object, got {}", describe(other)),
            }),
        }
    }

    pub fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{}", self.path, key)
        }
    }

    pub fn error(&self, key: &str, message: impl Into<String>) -> FieldError {
        FieldError {
            path: self.child_path(key),
            message: message.into(),
        }
    }

    /// The raw value of `key`, treating JSON null as absent.
    pub fn raw(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.push(key);
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    /// A string, trimmed; blank counts as absent.
    pub fn string(&mut self, key: &'static str) -> FieldResult<Option<String>> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::String(s)) => {
                let t = s.trim();
                Ok((!t.is_empty()).then(|| t.to_string()))
            }
            Some(Value::Number(n)) if self.coercion == Coercion::Lenient => Ok(Some(n.to_string())),
            Some(other) => {
                Err(self.error(key, format!("expected a string, got {}", describe(other))))
            }
        }
    }

    /// A string kept exactly as given (commands keep their inner layout).
    pub fn string_verbatim(&mut self, key: &'static str) -> FieldResult<Option<String>> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok((!s.trim().is_empty()).then(|| s.clone())),
            Some(other) => {
                Err(self.error(key, format!("expected a string, got {}", describe(other))))
            }
        }
    }

    pub fn bool(&mut self, key: &'static str) -> FieldResult<Option<bool>> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s))
                if self.coercion == Coercion::Lenient && (s == "true" || s == "false") =>
            {
                Ok(Some(s == "true"))
            }
            Some(other) => Err(self.error(
                key,
                format!("expected true or false, got {}", describe(other)),
            )),
        }
    }

    /// A whole number in `min..=max`.
    pub fn uint(&mut self, key: &'static str, min: u64, max: u64) -> FieldResult<Option<u64>> {
        let Some(value) = self.raw(key) else {
            return Ok(None);
        };
        let parsed = match value {
            Value::Number(n) => n.as_u64().or_else(|| {
                // 2.0 is a whole number written as a float; 1.5 is not.
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
                    .map(|f| f as u64)
            }),
            Value::String(s) if self.coercion == Coercion::Lenient => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match parsed {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(self.error(
                key,
                format!(
                    "expected a whole number from {min} to {max}, got {}",
                    describe(value)
                ),
            )),
        }
    }

    /// A list of strings: each trimmed, blanks dropped, duplicates removed
    /// (first kept) when `dedupe` is set.
    pub fn string_list(&mut self, key: &'static str, dedupe: bool) -> FieldResult<Vec<String>> {
        let Some(value) = self.raw(key) else {
            return Ok(Vec::new());
        };
        let items: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            Value::String(_) if self.coercion == Coercion::Lenient => vec![value],
            other => {
                return Err(self.error(
                    key,
                    format!("expected a list of strings, got {}", describe(other)),
                ));
            }
        };
        let mut out: Vec<String> = Vec::new();
        // A set beside the list: lists may be long (1,000 job ids).
        let mut seen = std::collections::HashSet::new();
        for (i, item) in items.iter().enumerate() {
            let Value::String(s) = item else {
                return Err(FieldError {
                    path: format!("{}[{i}]", self.child_path(key)),
                    message: format!("expected a string, got {}", describe(item)),
                });
            };
            let t = s.trim();
            if t.is_empty() || (dedupe && !seen.insert(t)) {
                continue;
            }
            out.push(t.to_string());
        }
        Ok(out)
    }

    /// A nested object, if present.
    pub fn object(&mut self, key: &'static str) -> FieldResult<Option<Fields<'a>>> {
        let path = self.child_path(key);
        let coercion = self.coercion;
        match self.raw(key) {
            None => Ok(None),
            Some(v) => Fields::new(v, &path, coercion).map(Some),
        }
    }

    /// The entries of a nested object (for maps such as `clusters` or `env`).
    pub fn entries(&mut self, key: &'static str) -> FieldResult<Vec<(String, &'a Value)>> {
        match self.raw(key) {
            None => Ok(Vec::new()),
            Some(Value::Object(map)) => Ok(map.iter().map(|(k, v)| (k.clone(), v)).collect()),
            Some(other) => {
                Err(self.error(key, format!("expected an object, got {}", describe(other))))
            }
        }
    }

    /// Refuse keys that were never read.
    pub fn finish(self) -> FieldResult<()> {
        let mut unknown: Vec<&String> = self
            .map
            .keys()
            .filter(|k| !self.known.contains(&k.as_str()))
            .collect();
        unknown.sort();
        match unknown.first() {
            None => Ok(()),
            Some(first) => {
                let mut allowed: Vec<&str> = self.known.clone();
                allowed.sort_unstable();
                allowed.dedup();
                Err(FieldError {
                    path: self.child_path(first),
                    message: format!("unknown key (allowed here: {})", allowed.join(", ")),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strict_and_lenient_numbers() {
        let v = json!({"a": "50", "b": 2.0, "c": 1.5});
        let mut f = Fields::new(&v, "", Coercion::Strict).unwrap();
        assert!(f.uint("a", 1, 100).is_err());
        assert_eq!(f.uint("b", 1, 100).unwrap(), Some(2));
        let err = f.uint("c", 1, 100).unwrap_err();
        assert_eq!(err.path, "c");
        assert!(err.message.contains("whole number"), "{}", err.message);
        let mut f = Fields::new(&v, "", Coercion::Lenient).unwrap();
        assert_eq!(f.uint("a", 1, 100).unwrap(), Some(50));
    }

    #[test]
    fn unknown_keys_are_named() {
        let v = json!({"known": 1, "typo": 2});
        let mut f = Fields::new(&v, "root", Coercion::Strict).unwrap();
        let _ = f.raw("known");
        let err = f.finish().unwrap_err();
        assert_eq!(err.path, "root.typo");
        assert!(err.message.contains("known"));
    }

    #[test]
    fn string_lists_trim_and_dedupe() {
        let v = json!({"l": [" a ", "", "b", "a"]});
        let mut f = Fields::new(&v, "", Coercion::Strict).unwrap();
        assert_eq!(f.string_list("l", true).unwrap(), vec!["a", "b"]);
        let v = json!({"l": [1]});
        let mut f = Fields::new(&v, "x", Coercion::Strict).unwrap();
        assert_eq!(f.string_list("l", true).unwrap_err().path, "x.l[0]");
    }
}
