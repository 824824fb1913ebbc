//! A fixed-width growable bitset, used for deletion marks, vector presence and filter masks.

/// Bits addressed by segment offset. Bits past `len` read as zero.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BitSet {
    words: Vec<u64>,
    len: usize,
}

impl BitSet {
    /// A bitset of `len` zero bits.
    pub fn new(len: usize) -> Self {
        BitSet {
            words: vec![0; len.div_ceil(64)],
            len,
        }
    }

    /// A bitset of `len` one bits.
    pub fn full(len: usize) -> Self {
        let mut s = BitSet {
            words: vec![u64::MAX; len.div_ceil(64)],
            len,
        };
        s.clear_tail();
        s
    }

    fn clear_tail(&mut self) {
        let rem = self.len % 64;
        if rem != 0
            && let Some(last) = self.words.last_mut()
        {
            *last &= (1u64 << rem) - 1;
        }
    }

    /// Number of addressable bits.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no bit is addressable.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Grows (with zero bits) or shrinks to `len` bits.
    pub fn resize(&mut self, len: usize) {
        self.words.resize(len.div_ceil(64), 0);
        self.len = len;
        self.clear_tail();
    }

    /// Appends one bit.
    pub fn push(&mut self, value: bool) {
        let i = self.len;
        self.resize(i + 1);
        self.set(i, value);
    }

    /// Reads bit `i`; out-of-range bits are zero.
    #[inline]
    pub fn get(&self, i: usize) -> bool {
        i < self.len && (self.words[i / 64] >> (i % 64)) & 1 == 1
    }

    /// Sets bit `i` to `value`. Panics when `i >= len`.
    #[inline]
    pub fn set(&mut self, i: usize, value: bool) {
        assert!(i < self.len, "bit {i} out of range {}", self.len);
        let mask = 1u64 << (i % 64);
        if value {
            self.words[i / 64] |= mask;
        } else {
            self.words[i / 64] &= !mask;
        }
    }

    /// Number of one bits.
    pub fn count_ones(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// `self &= other` (bits beyond `other.len()` become zero).
    pub fn and_with(&mut self, other: &BitSet) {
        for (i, w) in self.words.iter_mut().enumerate() {
            *w &= other.words.get(i).copied().unwrap_or(0);
        }
    }

    /// `self |= other` (bits beyond `self.len()` are ignored).
    pub fn or_with(&mut self, other: &BitSet) {
        for (w, o) in self.words.iter_mut().zip(&other.words) {
            *w |= o;
        }
        self.clear_tail();
    }

    /// `self &= !other`.
    pub fn and_not_with(&mut self, other: &BitSet) {
        for (w, o) in self.words.iter_mut().zip(&other.words) {
            *w &= !o;
        }
    }

    /// Iterates the indices of one bits in increasing order.
    pub fn iter_ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let t = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(wi * 64 + t)
            })
        })
    }

    /// Little-endian bytes of the words, for persisting.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.words.len() * 8);
        out.extend_from_slice(&(self.len as u64).to_le_bytes());
        for w in &self.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// Inverse of [`BitSet::to_bytes`]; `None` when the bytes are not a valid encoding.
    pub fn from_bytes(bytes: &[u8]) -> Option<BitSet> {
        let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
        let body = &bytes[8..];
        if body.len() != len.div_ceil(64) * 8 {
            return None;
        }
        let words = body
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let mut s = BitSet { words, len };
        s.clear_tail();
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_iter_roundtrip() {
        let mut b = BitSet::new(130);
        for i in [0, 63, 64, 129] {
            b.set(i, true);
        }
        assert_eq!(b.iter_ones().collect::<Vec<_>>(), vec![0, 63, 64, 129]);
        assert_eq!(b.count_ones(), 4);
        assert!(!b.get(200));
        let back = BitSet::from_bytes(&b.to_bytes()).unwrap();
        assert_eq!(back, b);
        assert!(BitSet::from_bytes(&b.to_bytes()[..12]).is_none());
    }

    #[test]
    fn full_and_ops() {
        let mut f = BitSet::full(70);
        assert_eq!(f.count_ones(), 70);
        let mut other = BitSet::new(70);
        other.set(3, true);
        f.and_not_with(&other);
        assert_eq!(f.count_ones(), 69);
        f.and_with(&other);
        assert_eq!(f.count_ones(), 0);
        f.or_with(&other);
        assert!(f.get(3));
        f.push(true);
        assert_eq!(f.len(), 71);
        assert!(f.get(70));
    }
}
