//! A small little-endian binary codec for WAL records. Vectors are stored as raw f32 bits so a
//! replayed vector is bit-identical to the acknowledged one (a JSON round trip would not promise
//! that); payloads are stored as JSON bytes.

use std::collections::BTreeMap;

use crate::error::{EngineError, Result};
use crate::types::{Payload, PointId, SparseVector, VectorData};

/// Appends values to a byte buffer.
#[derive(Default)]
pub struct Encoder(pub Vec<u8>);

impl Encoder {
    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    /// A u32.
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// A u64.
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// Length-prefixed bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    /// Length-prefixed UTF-8.
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    /// Length-prefixed f32 bits.
    pub fn f32s(&mut self, v: &[f32]) {
        self.u32(v.len() as u32);
        v.iter().for_each(|x| self.0.extend_from_slice(&x.to_le_bytes()));
    }
    /// Length-prefixed u32s.
    pub fn u32s(&mut self, v: &[u32]) {
        self.u32(v.len() as u32);
        v.iter().for_each(|x| self.u32(*x));
    }
    /// A point id.
    pub fn id(&mut self, id: &PointId) {
        self.0.extend_from_slice(&id.to_bytes());
    }
    /// A list of point ids.
    pub fn ids(&mut self, ids: &[PointId]) {
        self.u32(ids.len() as u32);
        ids.iter().for_each(|i| self.id(i));
    }
    /// A payload as JSON.
    pub fn payload(&mut self, p: &Payload) {
        self.bytes(&serde_json::to_vec(p).expect("a JSON map always serialises"));
    }
    /// Named vectors.
    pub fn vectors(&mut self, v: &BTreeMap<String, VectorData>) {
        self.u32(v.len() as u32);
        for (name, data) in v {
            self.str(name);
            match data {
                VectorData::Dense(d) => {
                    self.u8(0);
                    self.f32s(d);
                }
                VectorData::Sparse(s) => {
                    self.u8(1);
                    self.u32s(&s.indices);
                    self.f32s(&s.values);
                }
            }
        }
    }
}

/// Reads values back; every read checks bounds and reports corruption instead of panicking.
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn corrupt(what: &str) -> EngineError {
    EngineError::Corrupted(format!("WAL record: {what}"))
}

impl<'a> Decoder<'a> {
    /// Reads from `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder { buf, pos: 0 }
    }
    /// True when every byte was consumed.
    pub fn done(&self) -> bool {
        self.pos == self.buf.len()
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| corrupt("truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    /// One byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    /// A u32.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    /// A u64.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    /// Length-prefixed bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    /// Length-prefixed UTF-8.
    pub fn str(&mut self) -> Result<String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| corrupt("invalid UTF-8"))
    }
    /// Length-prefixed f32s.
    pub fn f32s(&mut self) -> Result<Vec<f32>> {
        let n = self.u32()? as usize;
        let raw = self.take(n.checked_mul(4).ok_or_else(|| corrupt("length"))?)?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect())
    }
    /// Length-prefixed u32s.
    pub fn u32s(&mut self) -> Result<Vec<u32>> {
        let n = self.u32()? as usize;
        let raw = self.take(n.checked_mul(4).ok_or_else(|| corrupt("length"))?)?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect())
    }
    /// A point id.
    pub fn id(&mut self) -> Result<PointId> {
        PointId::from_bytes(self.take(17)?.try_into().unwrap()).ok_or_else(|| corrupt("point id"))
    }
    /// A list of point ids.
    pub fn ids(&mut self) -> Result<Vec<PointId>> {
        let n = self.u32()? as usize;
        (0..n).map(|_| self.id()).collect()
    }
    /// A JSON payload.
    pub fn payload(&mut self) -> Result<Payload> {
        serde_json::from_slice(self.bytes()?).map_err(|e| corrupt(&format!("payload: {e}")))
    }
    /// Named vectors.
    pub fn vectors(&mut self) -> Result<BTreeMap<String, VectorData>> {
        let n = self.u32()? as usize;
        let mut out = BTreeMap::new();
        for _ in 0..n {
            let name = self.str()?;
            let data = match self.u8()? {
                0 => VectorData::Dense(self.f32s()?),
                1 => VectorData::Sparse(SparseVector {
                    indices: self.u32s()?,
                    values: self.f32s()?,
                }),
                _ => return Err(corrupt("vector kind")),
            };
            out.insert(name, data);
        }
        Ok(out)
    }
}
