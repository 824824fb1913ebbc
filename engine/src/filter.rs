//! Qdrant's filter language: `must` / `should` / `must_not` / `min_should` clauses over field,
//! id, emptiness, null and nested conditions, and its evaluation against one point.
//!
//! Deserialisation inspects each condition's keys to pick its kind, so that a malformed
//! condition reports what is wrong with it rather than "did not match any variant".

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::types::{Payload, PointId};

/// A boolean combination of conditions.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// At least one must match (when non-empty).
    #[serde(default, deserialize_with = "one_or_many", skip_serializing_if = "Vec::is_empty")]
    pub should: Vec<Condition>,
    /// At least `min_count` of these must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_should: Option<MinShould>,
    /// All must match.
    #[serde(default, deserialize_with = "one_or_many", skip_serializing_if = "Vec::is_empty")]
    pub must: Vec<Condition>,
    /// None may match.
    #[serde(default, deserialize_with = "one_or_many", skip_serializing_if = "Vec::is_empty")]
    pub must_not: Vec<Condition>,
}

/// `min_should`: at least `min_count` of `conditions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinShould {
    /// The conditions to count.
    pub conditions: Vec<Condition>,
    /// How many must match.
    pub min_count: usize,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Condition>, D::Error> {
    use serde::de::Error;
    match Value::deserialize(d)? {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .into_iter()
            .map(|v| Condition::from_value(v).map_err(D::Error::custom))
            .collect(),
        v @ Value::Object(_) => Ok(vec![Condition::from_value(v).map_err(D::Error::custom)?]),
        other => Err(D::Error::custom(format!(
            "expected a condition or a list of conditions, got {other}"
        ))),
    }
}

/// One condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// A test on a payload field.
    Field(FieldCondition),
    /// The field is missing, null or an empty array.
    IsEmpty(String),
    /// The field exists and is null.
    IsNull(String),
    /// The point id is one of these.
    HasId(Vec<PointId>),
    /// The point has this named vector.
    HasVector(String),
    /// Some element of the array at `key` matches `filter` on its own.
    Nested {
        /// Path of an array of objects.
        key: String,
        /// Filter applied to each element.
        filter: Filter,
    },
    /// A nested filter.
    Filter(Filter),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyOnly {
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NestedBody {
    key: String,
    filter: Filter,
}

impl Condition {
    /// Parses one condition from JSON, naming what is wrong when it cannot.
    pub fn from_value(v: Value) -> Result<Condition, String> {
        let obj = v
            .as_object()
            .ok_or_else(|| format!("a condition must be an object, got {v}"))?;
        let take = |k: &str| obj.get(k).cloned().unwrap_or(Value::Null);
        let e = |what: &str, err: serde_json::Error| format!("invalid `{what}` condition: {err}");
        if obj.contains_key("key") {
            return FieldCondition::deserialize(v)
                .map(Condition::Field)
                .map_err(|x| e("field", x));
        }
        if obj.len() == 1 {
            if obj.contains_key("is_empty") {
                return KeyOnly::deserialize(take("is_empty"))
                    .map(|k| Condition::IsEmpty(k.key))
                    .map_err(|x| e("is_empty", x));
            }
            if obj.contains_key("is_null") {
                return KeyOnly::deserialize(take("is_null"))
                    .map(|k| Condition::IsNull(k.key))
                    .map_err(|x| e("is_null", x));
            }
            if obj.contains_key("has_id") {
                return Vec::<PointId>::deserialize(take("has_id"))
                    .map(Condition::HasId)
                    .map_err(|x| e("has_id", x));
            }
            if obj.contains_key("has_vector") {
                return String::deserialize(take("has_vector"))
                    .map(Condition::HasVector)
                    .map_err(|x| e("has_vector", x));
            }
            if obj.contains_key("nested") {
                return NestedBody::deserialize(take("nested"))
                    .map(|n| Condition::Nested {
                        key: n.key,
                        filter: n.filter,
                    })
                    .map_err(|x| e("nested", x));
            }
        }
        Filter::deserialize(v)
            .map(Condition::Filter)
            .map_err(|x| e("filter", x))
    }

    fn to_value(&self) -> Value {
        use serde_json::json;
        match self {
            Condition::Field(f) => serde_json::to_value(f).unwrap_or(Value::Null),
            Condition::IsEmpty(k) => json!({"is_empty": {"key": k}}),
            Condition::IsNull(k) => json!({"is_null": {"key": k}}),
            Condition::HasId(ids) => json!({ "has_id": ids }),
            Condition::HasVector(n) => json!({ "has_vector": n }),
            Condition::Nested { key, filter } => json!({"nested": {"key": key, "filter": filter}}),
            Condition::Filter(f) => serde_json::to_value(f).unwrap_or(Value::Null),
        }
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Condition::from_value(Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A test on the values found at a payload path.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldCondition {
    /// Payload path: `a.b`, `a[].b`, `a[0]`.
    pub key: String,
    /// Value equality.
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub r#match: Option<Match>,
    /// Numeric or date-time range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<Range>,
    /// Bounds on the number of values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_count: Option<ValuesCount>,
    /// Field-level `is_empty` flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_empty: Option<bool>,
    /// Field-level `is_null` flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_null: Option<bool>,
}

/// Value matching.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Match {
    /// Equals this keyword, integer or bool.
    Value {
        /// The value.
        value: Value,
    },
    /// Equals any of these.
    Any {
        /// Allowed values.
        any: Vec<Value>,
    },
    /// Equals none of these.
    Except {
        /// Excluded values.
        except: Vec<Value>,
    },
    /// Contains this text (no full-text index yet: substring match).
    Text {
        /// The text.
        text: String,
    },
}

/// A range bound: a number, or a date-time given as an RFC 3339 string.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// Numeric bound.
    Num(f64),
    /// Date-time bound in microseconds since the epoch.
    Time(i64),
}

impl Serialize for Bound {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Bound::Num(n) => s.serialize_f64(*n),
            Bound::Time(t) => match chrono::DateTime::from_timestamp_micros(*t) {
                Some(dt) => s.serialize_str(&dt.to_rfc3339()),
                None => s.serialize_i64(*t),
            },
        }
    }
}

impl<'de> Deserialize<'de> for Bound {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_f64()
                .map(Bound::Num)
                .ok_or_else(|| D::Error::custom("invalid number")),
            Value::String(s) => parse_datetime(&s)
                .map(Bound::Time)
                .ok_or_else(|| D::Error::custom(format!("`{s}` is not an RFC 3339 date-time"))),
            other => Err(D::Error::custom(format!(
                "range bound must be a number or a date-time string, got {other}"
            ))),
        }
    }
}

/// Parses RFC 3339 (and the common `YYYY-MM-DD[ HH:MM:SS]` forms, read as UTC) to microseconds.
pub fn parse_datetime(s: &str) -> Option<i64> {
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_micros());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(dt) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            return Some(dt.and_utc().timestamp_micros());
        }
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| dt.and_utc().timestamp_micros())
}

/// `gt` / `gte` / `lt` / `lte` bounds.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    /// Strictly greater.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<Bound>,
    /// Greater or equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<Bound>,
    /// Strictly less.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<Bound>,
    /// Less or equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<Bound>,
}

impl Range {
    /// True when any bound is a date-time, so payload strings must be read as date-times.
    pub fn is_datetime(&self) -> bool {
        [self.gt, self.gte, self.lt, self.lte]
            .iter()
            .flatten()
            .any(|b| matches!(b, Bound::Time(_)))
    }

    /// Checks a number (date-times as microseconds) against every bound.
    pub fn contains(&self, x: f64) -> bool {
        let f = |b: &Option<Bound>| {
            b.map(|b| match b {
                Bound::Num(n) => n,
                Bound::Time(t) => t as f64,
            })
        };
        f(&self.gt).is_none_or(|b| x > b)
            && f(&self.gte).is_none_or(|b| x >= b)
            && f(&self.lt).is_none_or(|b| x < b)
            && f(&self.lte).is_none_or(|b| x <= b)
    }

    /// The numeric reading of a payload value for this range, if it has one.
    pub fn value_of(&self, v: &Value) -> Option<f64> {
        if self.is_datetime() {
            v.as_str().and_then(parse_datetime).map(|t| t as f64)
        } else {
            v.as_f64()
        }
    }
}

/// Bounds on how many values a field holds.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValuesCount {
    /// Strictly more than.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<usize>,
    /// At least.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<usize>,
    /// Strictly fewer than.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<usize>,
    /// At most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<usize>,
}

enum Step<'k> {
    Key(&'k str),
    All(&'k str),
    Index(&'k str, usize),
}

fn parse_path(key: &str) -> Vec<Step<'_>> {
    key.split('.')
        .map(|part| {
            if let Some(name) = part.strip_suffix("[]") {
                Step::All(name)
            } else if let Some((name, rest)) = part.split_once('[')
                && let Some(Ok(i)) = rest.strip_suffix(']').map(str::parse::<usize>)
            {
                Step::Index(name, i)
            } else {
                Step::Key(part)
            }
        })
        .collect()
}

fn walk<'a>(v: &'a Value, steps: &[Step<'_>], out: &mut Vec<&'a Value>) {
    let Some((step, rest)) = steps.split_first() else {
        out.push(v);
        return;
    };
    let get = |v: &'a Value, name: &str| -> Option<&'a Value> { if name.is_empty() { Some(v) } else { v.get(name) } };
    match (step, v) {
        // Descending by name into an array of objects looks inside each element.
        (Step::Key(_), Value::Array(items)) => items.iter().for_each(|i| walk(i, steps, out)),
        (Step::Key(name), _) => {
            if let Some(next) = get(v, name) {
                walk(next, rest, out)
            }
        }
        (Step::All(name), _) => {
            if let Some(Value::Array(items)) = get(v, name) {
                items.iter().for_each(|i| walk(i, rest, out))
            }
        }
        (Step::Index(name, i), _) => {
            if let Some(next) = get(v, name).and_then(|a| a.get(*i)) {
                walk(next, rest, out)
            }
        }
    }
}

/// The raw values at `key` (arrays not flattened).
pub fn raw_values<'a>(payload: &'a Payload, key: &str) -> Vec<&'a Value> {
    let steps = parse_path(key);
    let mut out = Vec::new();
    let Some((first, rest)) = steps.split_first() else {
        return out;
    };
    match first {
        Step::Key(name) => {
            if let Some(v) = payload.get(*name) {
                walk(v, rest, &mut out)
            }
        }
        Step::All(name) => {
            if let Some(Value::Array(items)) = payload.get(*name) {
                items.iter().for_each(|i| walk(i, rest, &mut out))
            }
        }
        Step::Index(name, i) => {
            if let Some(v) = payload.get(*name).and_then(|a| a.get(*i)) {
                walk(v, rest, &mut out)
            }
        }
    }
    out
}

/// The values at `key`, with arrays flattened one level: what match, range and counts see.
pub fn values_at<'a>(payload: &'a Payload, key: &str) -> Vec<&'a Value> {
    let mut out = Vec::new();
    for v in raw_values(payload, key) {
        match v {
            Value::Array(items) => out.extend(items.iter()),
            other => out.push(other),
        }
    }
    out
}

/// What a condition can be evaluated against.
pub struct PointView<'a> {
    /// The point's id.
    pub id: PointId,
    /// Its payload.
    pub payload: &'a Payload,
    /// Whether it has a given named vector.
    pub has_vector: &'a dyn Fn(&str) -> bool,
}

impl Filter {
    /// True when the filter has no condition at all.
    pub fn is_empty(&self) -> bool {
        self.must.is_empty() && self.should.is_empty() && self.must_not.is_empty() && self.min_should.is_none()
    }

    /// Evaluates the filter on one point.
    pub fn matches(&self, p: &PointView<'_>) -> bool {
        self.must.iter().all(|c| c.matches(p))
            && !self.must_not.iter().any(|c| c.matches(p))
            && (self.should.is_empty() || self.should.iter().any(|c| c.matches(p)))
            && self
                .min_should
                .as_ref()
                .is_none_or(|m| m.conditions.iter().filter(|c| c.matches(p)).count() >= m.min_count)
    }
}

impl Condition {
    /// Evaluates the condition on one point.
    pub fn matches(&self, p: &PointView<'_>) -> bool {
        match self {
            Condition::Field(f) => f.matches(p.payload),
            Condition::IsEmpty(key) => is_empty(p.payload, key),
            Condition::IsNull(key) => is_null(p.payload, key),
            Condition::HasId(ids) => ids.contains(&p.id),
            Condition::HasVector(name) => (p.has_vector)(name),
            Condition::Nested { key, filter } => {
                let no_vectors = |_: &str| false;
                values_at(p.payload, key).into_iter().any(|el| match el {
                    Value::Object(obj) => filter.matches(&PointView {
                        id: p.id,
                        payload: obj,
                        has_vector: &no_vectors,
                    }),
                    _ => false,
                })
            }
            Condition::Filter(f) => f.matches(p),
        }
    }
}

fn is_empty(payload: &Payload, key: &str) -> bool {
    values_at(payload, key).iter().all(|v| v.is_null())
}

fn is_null(payload: &Payload, key: &str) -> bool {
    raw_values(payload, key).iter().any(|v| v.is_null())
}

/// Equality as Qdrant applies it: keywords, integers and bools compare exactly.
pub fn value_eq(stored: &Value, wanted: &Value) -> bool {
    match (stored, wanted) {
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => a.as_f64() == b.as_f64(),
        },
        _ => stored == wanted,
    }
}

impl FieldCondition {
    /// Evaluates every test this condition carries (all must hold).
    pub fn matches(&self, payload: &Payload) -> bool {
        let values = values_at(payload, &self.key);
        if let Some(m) = &self.r#match {
            let ok = match m {
                Match::Value { value } => values.iter().any(|v| value_eq(v, value)),
                Match::Any { any } => values.iter().any(|v| any.iter().any(|w| value_eq(v, w))),
                Match::Except { except } => {
                    values.is_empty() || values.iter().any(|v| !except.iter().any(|w| value_eq(v, w)))
                }
                Match::Text { text } => values
                    .iter()
                    .any(|v| v.as_str().is_some_and(|s| s.contains(text.as_str()))),
            };
            if !ok {
                return false;
            }
        }
        if let Some(r) = &self.range
            && !values.iter().any(|v| r.value_of(v).is_some_and(|x| r.contains(x)))
        {
            return false;
        }
        if let Some(c) = &self.values_count {
            let n = values.len();
            if !(c.gt.is_none_or(|b| n > b)
                && c.gte.is_none_or(|b| n >= b)
                && c.lt.is_none_or(|b| n < b)
                && c.lte.is_none_or(|b| n <= b))
            {
                return false;
            }
        }
        if let Some(want) = self.is_empty
            && is_empty(payload, &self.key) != want
        {
            return false;
        }
        if let Some(want) = self.is_null
            && is_null(payload, &self.key) != want
        {
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(filter: Value, payload: Value, id: u64) -> bool {
        let f: Filter = serde_json::from_value(filter).unwrap();
        let p = payload.as_object().unwrap().clone();
        let hv = |n: &str| n == "img";
        f.matches(&PointView {
            id: PointId::Num(id),
            payload: &p,
            has_vector: &hv,
        })
    }

    #[test]
    fn clauses_and_match() {
        let p = json!({"city": "London", "color": "red", "n": 3, "ok": true, "tags": ["a", "b"]});
        assert!(check(
            json!({"must": [{"key": "city", "match": {"value": "London"}}]}),
            p.clone(),
            1
        ));
        assert!(!check(
            json!({"must_not": {"key": "city", "match": {"value": "London"}}}),
            p.clone(),
            1
        ));
        assert!(check(
            json!({"should": [{"key": "n", "match": {"value": 4}}, {"key": "ok", "match": {"value": true}}]}),
            p.clone(),
            1
        ));
        assert!(check(
            json!({"must": [{"key": "tags", "match": {"any": ["z", "b"]}}]}),
            p.clone(),
            1
        ));
        assert!(check(
            json!({"must": [{"key": "color", "match": {"except": ["blue"]}}]}),
            p.clone(),
            1
        ));
        assert!(!check(
            json!({"must": [{"key": "color", "match": {"except": ["red"]}}]}),
            p.clone(),
            1
        ));
        assert!(check(json!({"must": [{"has_id": [1, 2]}]}), p.clone(), 1));
        assert!(!check(json!({"must": [{"has_id": [2]}]}), p.clone(), 1));
        assert!(check(json!({"must": [{"has_vector": "img"}]}), p.clone(), 1));
        assert!(check(
            json!({"min_should": {"conditions": [{"key": "n", "match": {"value": 3}}, {"key": "ok", "match": {"value": false}}], "min_count": 1}}),
            p.clone(),
            1
        ));
        assert!(check(
            json!({"must": [{"must_not": [{"key": "n", "match": {"value": 9}}]}]}),
            p,
            1
        ));
    }

    #[test]
    fn range_counts_and_emptiness() {
        let p = json!({"n": 3.5, "when": "2024-01-02T00:00:00Z", "arr": [1, 2, 3], "nul": null, "empty": []});
        assert!(check(
            json!({"must": [{"key": "n", "range": {"gt": 3, "lte": 3.5}}]}),
            p.clone(),
            1
        ));
        assert!(!check(
            json!({"must": [{"key": "n", "range": {"lt": 3.5}}]}),
            p.clone(),
            1
        ));
        assert!(check(
            json!({"must": [{"key": "when", "range": {"gte": "2024-01-01T00:00:00Z"}}]}),
            p.clone(),
            1
        ));
        assert!(!check(
            json!({"must": [{"key": "when", "range": {"lt": "2024-01-01"}}]}),
            p.clone(),
            1
        ));
        assert!(check(
            json!({"must": [{"key": "arr", "values_count": {"gte": 3, "lt": 4}}]}),
            p.clone(),
            1
        ));
        for k in ["missing", "nul", "empty"] {
            assert!(check(json!({"must": [{"is_empty": {"key": k}}]}), p.clone(), 1), "{k}");
        }
        assert!(!check(json!({"must": [{"is_empty": {"key": "arr"}}]}), p.clone(), 1));
        assert!(check(json!({"must": [{"is_null": {"key": "nul"}}]}), p.clone(), 1));
        assert!(!check(json!({"must": [{"is_null": {"key": "missing"}}]}), p, 1));
    }

    #[test]
    fn nested_paths() {
        let p = json!({"country": {"name": "DE", "cities": [{"name": "Berlin", "pop": 3.7}, {"name": "Bonn", "pop": 0.3}]}});
        assert!(check(
            json!({"must": [{"key": "country.name", "match": {"value": "DE"}}]}),
            p.clone(),
            1
        ));
        assert!(check(
            json!({"must": [{"key": "country.cities[].name", "match": {"value": "Bonn"}}]}),
            p.clone(),
            1
        ));
        assert!(check(
            json!({"must": [{"key": "country.cities[1].name", "match": {"value": "Bonn"}}]}),
            p.clone(),
            1
        ));
        assert!(!check(
            json!({"must": [{"key": "country.cities[0].name", "match": {"value": "Bonn"}}]}),
            p.clone(),
            1
        ));
        let both = json!({"must": [{"nested": {"key": "country.cities", "filter": {"must": [
            {"key": "name", "match": {"value": "Bonn"}}, {"key": "pop", "range": {"gt": 1.0}}]}}}]});
        assert!(!check(both, p.clone(), 1));
        let one = json!({"must": [{"nested": {"key": "country.cities", "filter": {"must": [
            {"key": "name", "match": {"value": "Berlin"}}, {"key": "pop", "range": {"gt": 1.0}}]}}}]});
        assert!(check(one, p, 1));
    }

    #[test]
    fn errors_name_the_problem() {
        let e = serde_json::from_value::<Filter>(json!({"must": [{"key": "a", "range": {"gt": "x"}}]})).unwrap_err();
        assert!(e.to_string().contains("RFC 3339"), "{e}");
        let e = serde_json::from_value::<Filter>(json!({"must": [{"has_id": ["nope"]}]})).unwrap_err();
        assert!(e.to_string().contains("has_id"), "{e}");
        assert!(serde_json::from_value::<Filter>(json!({"mus": []})).is_err());
    }
}
