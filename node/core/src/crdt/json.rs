//! Data types as JSON: operations as clients send them over HTTP, and
//! values as reads show them. The HTTP gateway and the Rust client use the
//! same two functions, so both speak one format.
//!
//! | type     | operation                                          | value            |
//! |----------|----------------------------------------------------|------------------|
//! | counter  | `{"increment": n}` (n may be negative)             | a number         |
//! | set      | `{"add": [..]}`, `{"remove": [..]}` (both allowed) | sorted strings   |
//! | register | `{"set": v}` (any JSON)                            | array of values  |
//! | flag     | `{"enable": true}` / `{"enable": false}`           | a boolean        |
//! | map      | `{"update": {field: op}, "remove": [field]}`       | an object        |
//!
//! Inside a map a register is last-writer-wins and shows its one value.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::{CrdtError, CrdtMap, CrdtOp, CrdtValue, Datatype, Field};

fn invalid(what: &str, expected: Datatype, hint: &str) -> CrdtError {
    CrdtError::WrongType {
        what: what.to_owned(),
        expected,
        got: format!("its operations are {hint}"),
    }
}

fn keys_only<'a>(
    obj: &'a Map<String, Value>,
    allowed: &[&str],
    what: &str,
    t: Datatype,
    hint: &str,
) -> Result<&'a Map<String, Value>, CrdtError> {
    if obj.is_empty() || obj.keys().any(|k| !allowed.contains(&k.as_str())) {
        return Err(invalid(what, t, hint));
    }
    Ok(obj)
}

fn strings(v: &Value, what: &str) -> Result<Vec<String>, CrdtError> {
    let items = v
        .as_array()
        .ok_or_else(|| CrdtError::Invalid(format!("{what} is an array of strings")))?;
    items
        .iter()
        .map(|i| {
            i.as_str()
                .map(str::to_owned)
                .ok_or_else(|| CrdtError::Invalid(format!("{what} is an array of strings")))
        })
        .collect()
}

/// Parses the JSON operation `v` on a key (or map field) of type `t`.
pub fn parse_op(t: Datatype, v: &Value) -> Result<CrdtOp, CrdtError> {
    parse_at(t, v, "the bucket", 0)
}

fn parse_at(t: Datatype, v: &Value, what: &str, depth: usize) -> Result<CrdtOp, CrdtError> {
    if depth > super::MAX_DEPTH {
        return Err(CrdtError::Invalid(format!(
            "maps nest at most {} deep",
            super::MAX_DEPTH
        )));
    }
    let empty = Map::new();
    let obj = v.as_object().unwrap_or(&empty);
    Ok(match t {
        Datatype::Counter => {
            let hint = r#"{"increment": n}"#;
            let o = keys_only(obj, &["increment"], what, t, hint)?;
            let n = o.get("increment").and_then(Value::as_i64).ok_or_else(|| {
                CrdtError::Invalid("increment is a whole number from -2^63 to 2^63-1".into())
            })?;
            CrdtOp::Increment(n)
        }
        Datatype::Set => {
            let hint = r#"{"add": [..]} and {"remove": [..]}"#;
            let o = keys_only(obj, &["add", "remove"], what, t, hint)?;
            let list = |k: &str| o.get(k).map_or(Ok(Vec::new()), |v| strings(v, k));
            CrdtOp::Set {
                add: list("add")?,
                remove: list("remove")?,
            }
        }
        Datatype::Register => {
            let o = keys_only(obj, &["set"], what, t, r#"{"set": value}"#)?;
            CrdtOp::Register(o.get("set").map(Value::to_string).unwrap_or_default())
        }
        Datatype::Flag => {
            let o = keys_only(obj, &["enable"], what, t, r#"{"enable": true|false}"#)?;
            let on = o
                .get("enable")
                .and_then(Value::as_bool)
                .ok_or_else(|| CrdtError::Invalid("enable is true or false".into()))?;
            CrdtOp::Flag(on)
        }
        Datatype::Map => {
            let hint = r#"{"update": {field: op}, "remove": [field]}"#;
            let o = keys_only(obj, &["update", "remove"], what, t, hint)?;
            let mut update = BTreeMap::new();
            if let Some(u) = o.get("update") {
                let u = u.as_object().ok_or_else(|| {
                    CrdtError::Invalid("update is an object of field: operation".into())
                })?;
                for (name, op) in u {
                    let ft = super::field_type(name)?;
                    let sub = parse_at(ft, op, &format!("field {name}"), depth + 1)?;
                    update.insert(name.clone(), sub);
                }
            }
            let remove = o
                .get("remove")
                .map_or(Ok(Vec::new()), |v| strings(v, "remove"))?;
            CrdtOp::Map { update, remove }
        }
    })
}

fn counter_json(n: i128) -> Value {
    i64::try_from(n).map_or_else(|_| Value::String(n.to_string()), Value::from)
}

fn document(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

fn set_json<M: Clone + Ord + std::hash::Hash + Eq>(
    s: &crdts::Orswot<M, crate::Actor>,
    show: impl Fn(&M) -> Value,
) -> Vec<Value> {
    let mut members: Vec<M> = s.read().val.into_iter().collect();
    members.sort();
    members.iter().map(show).collect()
}

fn map_json(m: &CrdtMap) -> Value {
    let mut out = Map::new();
    for (name, field) in m.iter() {
        let v = match &field {
            Field::Counter(c) => counter_json(c.value()),
            Field::Set(s) => Value::Array(set_json(s, |m| Value::String(m.clone()))),
            Field::Register(r) => match r.value() {
                Some(text) => document(text),
                None => continue,
            },
            Field::Flag(f) => Value::Bool(!set_json(f, |_| Value::Null).is_empty()),
            Field::Map(inner) => map_json(inner),
        };
        out.insert(name.to_owned(), v);
    }
    Value::Object(out)
}

/// The value of `state` as plain JSON.
pub fn render(state: &CrdtValue) -> Value {
    match state {
        CrdtValue::Counter(c) => counter_json(c.value()),
        CrdtValue::Set(s) => Value::Array(s.members().cloned().map(Value::String).collect()),
        CrdtValue::Register(r) => {
            let mut vals: Vec<&str> = r.values().collect();
            vals.sort();
            Value::Array(vals.iter().map(|t| document(t)).collect())
        }
        CrdtValue::Flag(f) => json!(!set_json(f, |_| Value::Null).is_empty()),
        CrdtValue::Map(m) => map_json(m),
    }
}
