//! The write-ahead log of one shard.
//!
//! Record layout: `[len: u32][crc32(body): u32][body: len bytes]`, body = `[version: u64][op]`.
//! A record is applied on replay only if its length fits in the file and its CRC matches, so a
//! record torn by a crash mid-write is never applied half; everything from the first bad record
//! on is cut off (the file is truncated there) and the log continues from the last good record.
//!
//! Durability: `append` hands bytes to the kernel; `sync` (fdatasync) makes them durable. The
//! worker thread calls `sync` once per batch of operations before acknowledging any `wait=true`
//! write of that batch (group commit), and at least once a second otherwise.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::codec::{Decoder, Encoder};
use crate::error::{EngineError, Result};
use crate::types::{Payload, PointId, VectorData};

/// A point as the WAL stores it: vectors already validated and preprocessed.
#[derive(Debug, Clone, PartialEq)]
pub struct PointWrite {
    /// Its id.
    pub id: PointId,
    /// Its vectors.
    pub vectors: BTreeMap<String, VectorData>,
    /// Its payload.
    pub payload: Payload,
}

/// A logged operation. Filters are resolved to ids before logging, so replay is deterministic.
#[derive(Debug, Clone, PartialEq)]
pub enum WalOp {
    /// Insert or replace points.
    Upsert(Vec<PointWrite>),
    /// Delete points.
    Delete(Vec<PointId>),
    /// Merge keys into payloads (at `key`, a nested path, when given).
    SetPayload {
        /// Target points.
        ids: Vec<PointId>,
        /// Keys to set.
        payload: Payload,
        /// Optional nested path to set under.
        key: Option<String>,
    },
    /// Replace payloads entirely.
    OverwritePayload {
        /// Target points.
        ids: Vec<PointId>,
        /// New payload.
        payload: Payload,
    },
    /// Remove keys from payloads.
    DeletePayloadKeys {
        /// Target points.
        ids: Vec<PointId>,
        /// Keys (paths) to remove.
        keys: Vec<String>,
    },
    /// Remove whole payloads.
    ClearPayload(Vec<PointId>),
}

impl WalOp {
    fn encode(&self, e: &mut Encoder) {
        match self {
            WalOp::Upsert(points) => {
                e.u8(1);
                e.u32(points.len() as u32);
                for p in points {
                    e.id(&p.id);
                    e.vectors(&p.vectors);
                    e.payload(&p.payload);
                }
            }
            WalOp::Delete(ids) => {
                e.u8(2);
                e.ids(ids);
            }
            WalOp::SetPayload { ids, payload, key } => {
                e.u8(3);
                e.ids(ids);
                e.payload(payload);
                e.str(key.as_deref().unwrap_or(""));
                e.u8(key.is_some() as u8);
            }
            WalOp::OverwritePayload { ids, payload } => {
                e.u8(4);
                e.ids(ids);
                e.payload(payload);
            }
            WalOp::DeletePayloadKeys { ids, keys } => {
                e.u8(5);
                e.ids(ids);
                e.u32(keys.len() as u32);
                keys.iter().for_each(|k| e.str(k));
            }
            WalOp::ClearPayload(ids) => {
                e.u8(6);
                e.ids(ids);
            }
        }
    }

    fn decode(d: &mut Decoder<'_>) -> Result<WalOp> {
        Ok(match d.u8()? {
            1 => {
                let n = d.u32()? as usize;
                let mut points = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    points.push(PointWrite {
                        id: d.id()?,
                        vectors: d.vectors()?,
                        payload: d.payload()?,
                    });
                }
                WalOp::Upsert(points)
            }
            2 => WalOp::Delete(d.ids()?),
            3 => {
                let ids = d.ids()?;
                let payload = d.payload()?;
                let key = d.str()?;
                let has_key = d.u8()? == 1;
                WalOp::SetPayload {
                    ids,
                    payload,
                    key: has_key.then_some(key),
                }
            }
            4 => WalOp::OverwritePayload {
                ids: d.ids()?,
                payload: d.payload()?,
            },
            5 => {
                let ids = d.ids()?;
                let n = d.u32()? as usize;
                let keys = (0..n).map(|_| d.str()).collect::<Result<_>>()?;
                WalOp::DeletePayloadKeys { ids, keys }
            }
            6 => WalOp::ClearPayload(d.ids()?),
            t => {
                return Err(EngineError::Corrupted(format!("WAL record: unknown op {t}")));
            }
        })
    }
}

const HEADER: usize = 8;
/// Upper bound on one record, so a corrupted length cannot make replay allocate gigabytes.
const MAX_RECORD: usize = 1 << 30;

/// An open WAL file.
pub struct Wal {
    path: PathBuf,
    file: File,
    len: u64,
    dirty: bool,
}

/// What [`Wal::open`] found.
pub struct Replay {
    /// Good records in order: (version, op).
    pub records: Vec<(u64, WalOp)>,
    /// Bytes cut off at the tail (a torn or corrupted record and everything after it).
    pub dropped_bytes: u64,
}

impl Wal {
    /// Opens (or creates) the log at `path`, returns its good records and truncates a bad tail.
    pub fn open(path: &Path) -> Result<(Wal, Replay)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        let mut records = Vec::new();
        let mut pos = 0usize;
        while pos + HEADER <= buf.len() {
            let len = u32::from_le_bytes(buf[pos..pos + 4].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(buf[pos + 4..pos + 8].try_into().unwrap());
            let Some(body) = buf
                .get(pos + HEADER..pos + HEADER + len)
                .filter(|_| (8..=MAX_RECORD).contains(&len))
            else {
                break;
            };
            if crc32fast::hash(body) != crc {
                break;
            }
            let mut d = Decoder::new(body);
            let parsed = d.u64().and_then(|v| WalOp::decode(&mut d).map(|op| (v, op)));
            match parsed {
                Ok(rec) if d.done() => records.push(rec),
                _ => break,
            }
            pos += HEADER + len;
        }
        let dropped = (buf.len() - pos) as u64;
        if dropped > 0 {
            tracing::warn!(path = %path.display(), dropped_bytes = dropped, "WAL tail is torn or corrupted; dropping it");
            file.set_len(pos as u64)?;
            file.sync_all()?;
        }
        file.seek(SeekFrom::Start(pos as u64))?;
        Ok((
            Wal {
                path: path.to_path_buf(),
                file,
                len: pos as u64,
                dirty: false,
            },
            Replay {
                records,
                dropped_bytes: dropped,
            },
        ))
    }

    /// Appends one record (not yet durable: see [`Wal::sync`]).
    pub fn append(&mut self, version: u64, op: &WalOp) -> Result<()> {
        let mut e = Encoder(Vec::with_capacity(256));
        e.u64(version);
        op.encode(&mut e);
        let body = e.0;
        let mut rec = Vec::with_capacity(HEADER + body.len());
        rec.extend_from_slice(&(body.len() as u32).to_le_bytes());
        rec.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        rec.extend_from_slice(&body);
        if let Err(err) = self.file.write_all(&rec) {
            // A short write (full disk) must not leave half a record that later records would
            // follow: cut the file back to the last whole record.
            let _ = self.file.set_len(self.len);
            let _ = self.file.seek(SeekFrom::Start(self.len));
            return Err(err.into());
        }
        self.len += rec.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// Makes every appended record durable.
    pub fn sync(&mut self) -> Result<()> {
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }

    /// True when records were appended since the last sync.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Current size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the log holds no record.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ops() -> Vec<WalOp> {
        let payload = json!({"a": 1, "b": [1, 2]}).as_object().unwrap().clone();
        vec![
            WalOp::Upsert(vec![PointWrite {
                id: PointId::Num(7),
                vectors: BTreeMap::from([("".to_string(), VectorData::Dense(vec![0.1, f32::MIN_POSITIVE, -3.0]))]),
                payload: payload.clone(),
            }]),
            WalOp::Delete(vec![PointId::Num(1), PointId::Uuid(uuid::Uuid::from_u128(5))]),
            WalOp::SetPayload {
                ids: vec![PointId::Num(7)],
                payload: payload.clone(),
                key: Some("x.y".into()),
            },
            WalOp::OverwritePayload {
                ids: vec![PointId::Num(7)],
                payload,
            },
            WalOp::DeletePayloadKeys {
                ids: vec![PointId::Num(7)],
                keys: vec!["a".into()],
            },
            WalOp::ClearPayload(vec![PointId::Num(7)]),
        ]
    }

    #[test]
    fn roundtrip_and_reopen_appends() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("wal.log");
        let (mut w, r) = Wal::open(&p).unwrap();
        assert!(r.records.is_empty());
        for (i, op) in ops().iter().enumerate() {
            w.append(i as u64 + 1, op).unwrap();
        }
        w.sync().unwrap();
        drop(w);
        let (mut w, r) = Wal::open(&p).unwrap();
        assert_eq!(r.records.iter().map(|r| r.1.clone()).collect::<Vec<_>>(), ops());
        assert_eq!(r.records.last().unwrap().0, 6);
        w.append(7, &WalOp::Delete(vec![PointId::Num(9)])).unwrap();
        drop(w);
        assert_eq!(Wal::open(&p).unwrap().1.records.len(), 7);
    }

    #[test]
    fn torn_and_corrupted_tails_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("wal.log");
        let (mut w, _) = Wal::open(&p).unwrap();
        for (i, op) in ops().iter().enumerate() {
            w.append(i as u64 + 1, op).unwrap();
        }
        drop(w);
        let full = std::fs::read(&p).unwrap();
        // Every possible truncation point yields a prefix of the records, never a partial one.
        let mut last = usize::MAX;
        for cut in (0..full.len()).rev() {
            std::fs::write(&p, &full[..cut]).unwrap();
            let (_, r) = Wal::open(&p).unwrap();
            assert!(r.records.len() < ops().len());
            assert_eq!(
                r.records.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
                ops()[..r.records.len()].to_vec()
            );
            assert!(r.records.len() <= last);
            last = r.records.len();
            assert_eq!(
                std::fs::metadata(&p).unwrap().len() as usize + r.dropped_bytes as usize,
                cut
            );
        }
        // A flipped byte in the third record drops it and everything after it.
        let mut bad = full.clone();
        let (_, r) = {
            std::fs::write(&p, &full).unwrap();
            Wal::open(&p).unwrap()
        };
        assert_eq!(r.records.len(), ops().len());
        let mut off = 0;
        for _ in 0..2 {
            off += 8 + u32::from_le_bytes(full[off..off + 4].try_into().unwrap()) as usize;
        }
        bad[off + 12] ^= 0xFF;
        std::fs::write(&p, &bad).unwrap();
        let (_, r) = Wal::open(&p).unwrap();
        assert_eq!(r.records.len(), 2);
        assert_eq!(std::fs::metadata(&p).unwrap().len() as usize, off);
    }
}
