//! Payload indexes: per segment and per indexed field, a map from values to segment offsets.
//!
//! Indexes only ever grow: a point whose payload changes is written to a new slot and its old
//! slot is marked deleted, so an index may name deleted offsets and callers intersect its answer
//! with the segment's live set. An index answer is always a superset of the matching offsets;
//! [`FieldIndex::candidates`] says when it is exact, so the caller can skip reading payloads.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bitset::BitSet;
use crate::filter::{Bound, FieldCondition, Match, parse_datetime, values_at};
use crate::types::{Payload, PayloadSchemaType};

/// Maps an f64 to a u64 whose unsigned order is the float's numeric order.
fn ord_key(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}

fn from_ord_key(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

/// One field's index in one segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum FieldIndex {
    /// Keyword or UUID strings.
    Keyword(HashMap<String, Vec<u32>>),
    /// Numbers (integer and float indexes), keyed by [`ord_key`].
    Numeric(BTreeMap<u64, Vec<u32>>),
    /// Date-times in microseconds.
    Datetime(BTreeMap<i64, Vec<u32>>),
    /// Booleans: offsets with `true`, offsets with `false`.
    Bool(Vec<u32>, Vec<u32>),
    /// A schema we store but do not accelerate (geo, text): filters scan payloads.
    Unsupported,
}

/// Answer of an index to one condition.
pub struct Candidates {
    /// Offsets that may match (every matching offset is included).
    pub offsets: BitSet,
    /// True when every offset in `offsets` matches, so no payload check is needed.
    pub exact: bool,
}

impl FieldIndex {
    /// An empty index for a schema type.
    pub fn new(kind: PayloadSchemaType) -> Self {
        match kind {
            PayloadSchemaType::Keyword | PayloadSchemaType::Uuid => FieldIndex::Keyword(HashMap::new()),
            PayloadSchemaType::Integer | PayloadSchemaType::Float => FieldIndex::Numeric(BTreeMap::new()),
            PayloadSchemaType::Datetime => FieldIndex::Datetime(BTreeMap::new()),
            PayloadSchemaType::Bool => FieldIndex::Bool(Vec::new(), Vec::new()),
            PayloadSchemaType::Geo | PayloadSchemaType::Text => FieldIndex::Unsupported,
        }
    }

    /// Indexes the values at `key` of the point at `offset`. Offsets must be added in increasing
    /// order so that posting lists stay sorted.
    pub fn add(&mut self, offset: u32, key: &str, payload: &Payload) {
        for v in values_at(payload, key) {
            match (&mut *self, v) {
                (FieldIndex::Keyword(m), Value::String(s)) => push(m.entry(s.clone()).or_default(), offset),
                (FieldIndex::Numeric(m), Value::Number(n)) => {
                    if let Some(x) = n.as_f64() {
                        push(m.entry(ord_key(x)).or_default(), offset)
                    }
                }
                (FieldIndex::Datetime(m), Value::String(s)) => {
                    if let Some(t) = parse_datetime(s) {
                        push(m.entry(t).or_default(), offset)
                    }
                }
                (FieldIndex::Bool(t, _), Value::Bool(true)) => push(t, offset),
                (FieldIndex::Bool(_, f), Value::Bool(false)) => push(f, offset),
                _ => {}
            }
        }
    }

    /// Offsets (of `len`) that may satisfy `cond`, or `None` when this index cannot help.
    pub fn candidates(&self, cond: &FieldCondition, len: usize) -> Option<Candidates> {
        let only_match =
            cond.range.is_none() && cond.values_count.is_none() && cond.is_empty.is_none() && cond.is_null.is_none();
        let only_range =
            cond.r#match.is_none() && cond.values_count.is_none() && cond.is_empty.is_none() && cond.is_null.is_none();
        let mut out = BitSet::new(len);
        let mut add = |list: &[u32]| list.iter().for_each(|&o| out.set(o as usize, true));
        let exact = match (self, &cond.r#match, &cond.range) {
            (
                FieldIndex::Keyword(m),
                Some(Match::Value {
                    value: Value::String(s),
                }),
                _,
            ) => {
                m.get(s).inspect(|l| add(l));
                only_match
            }
            (FieldIndex::Keyword(m), Some(Match::Any { any }), _) if any.iter().all(Value::is_string) => {
                any.iter().filter_map(|v| m.get(v.as_str()?)).for_each(|l| add(l));
                only_match
            }
            (FieldIndex::Bool(t, f), Some(Match::Value { value: Value::Bool(b) }), _) => {
                add(if *b { t } else { f });
                only_match
            }
            (
                FieldIndex::Numeric(m),
                Some(Match::Value {
                    value: Value::Number(n),
                }),
                _,
            ) => {
                n.as_f64().and_then(|x| m.get(&ord_key(x))).inspect(|l| add(l));
                // Integers beyond 2^53 share f64 keys, so the payload must confirm.
                only_match && n.as_i64().is_none_or(|i| i.unsigned_abs() < (1 << 53))
            }
            (FieldIndex::Numeric(m), Some(Match::Any { any }), _) if any.iter().all(Value::is_number) => {
                any.iter()
                    .filter_map(|v| m.get(&ord_key(v.as_f64()?)))
                    .for_each(|l| add(l));
                false
            }
            (FieldIndex::Numeric(m), _, Some(r)) if !r.is_datetime() => {
                let num = |b: &Option<Bound>| match b {
                    Some(Bound::Num(x)) => Some(ord_key(*x)),
                    _ => None,
                };
                // A superset window: the loosest of the given bounds on each side.
                let lo = [num(&r.gt), num(&r.gte)].into_iter().flatten().min().unwrap_or(0);
                let hi = [num(&r.lt), num(&r.lte)]
                    .into_iter()
                    .flatten()
                    .max()
                    .unwrap_or(u64::MAX);
                for (k, l) in m.range(lo..=hi.max(lo)) {
                    if r.contains(from_ord_key(*k)) {
                        add(l)
                    }
                }
                only_range
            }
            (FieldIndex::Datetime(m), _, Some(r))
                if [r.gt, r.gte, r.lt, r.lte]
                    .iter()
                    .flatten()
                    .all(|b| matches!(b, Bound::Time(_))) =>
            {
                for (k, l) in m.iter() {
                    if r.contains(*k as f64) {
                        add(l)
                    }
                }
                only_range
            }
            _ => return None,
        };
        Some(Candidates { offsets: out, exact })
    }
}

fn push(list: &mut Vec<u32>, offset: u32) {
    if list.last() != Some(&offset) {
        list.push(offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cond(v: Value) -> FieldCondition {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn numeric_and_keyword_candidates() {
        let payloads: Vec<Payload> = (0..10)
            .map(|i| {
                json!({"n": i, "f": i as f64 / 2.0, "k": format!("k{}", i % 3), "b": i % 2 == 0})
                    .as_object()
                    .unwrap()
                    .clone()
            })
            .collect();
        let mut n = FieldIndex::new(PayloadSchemaType::Integer);
        let mut k = FieldIndex::new(PayloadSchemaType::Keyword);
        let mut b = FieldIndex::new(PayloadSchemaType::Bool);
        for (i, p) in payloads.iter().enumerate() {
            n.add(i as u32, "n", p);
            k.add(i as u32, "k", p);
            b.add(i as u32, "b", p);
        }
        let c = n
            .candidates(&cond(json!({"key": "n", "range": {"gte": 3, "lt": 5.5}})), 10)
            .unwrap();
        assert!(c.exact);
        assert_eq!(c.offsets.iter_ones().collect::<Vec<_>>(), vec![3, 4, 5]);
        let c = k
            .candidates(&cond(json!({"key": "k", "match": {"any": ["k1", "k2"]}})), 10)
            .unwrap();
        assert_eq!(c.offsets.count_ones(), 6);
        let c = b
            .candidates(&cond(json!({"key": "b", "match": {"value": true}})), 10)
            .unwrap();
        assert_eq!(c.offsets.count_ones(), 5);
        assert!(
            k.candidates(&cond(json!({"key": "k", "match": {"except": ["k1"]}})), 10)
                .is_none()
        );
        let back: FieldIndex = serde_json::from_str(&serde_json::to_string(&n).unwrap()).unwrap();
        assert_eq!(back, n);
        for x in [-3.5, -0.0, 0.0, 1.0, 1e300] {
            assert_eq!(from_ord_key(ord_key(x)), x);
        }
        assert!(ord_key(-1.0) < ord_key(0.5));
    }
}
