//! Bounded top-k selection over internal scores (higher is better).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// A candidate: score and where the point lives in its shard.
#[derive(Debug, Clone, Copy)]
pub struct Hit {
    /// Internal score.
    pub score: f32,
    /// Segment index in the shard.
    pub seg: u32,
    /// Offset in the segment.
    pub off: u32,
}

impl PartialEq for Hit {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Hit {}
impl PartialOrd for Hit {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Hit {
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .total_cmp(&o.score)
            .then_with(|| (o.seg, o.off).cmp(&(self.seg, self.off)))
    }
}

/// Keeps the `k` best hits seen.
#[derive(Debug)]
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Reverse<Hit>>,
}

impl TopK {
    /// A selector for `k` hits.
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.min(1 << 16) + 1),
        }
    }

    /// The score a new hit must beat once the selector is full.
    #[inline]
    pub fn floor(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.heap.peek().map_or(f32::NEG_INFINITY, |h| h.0.score)
        }
    }

    /// Offers a hit.
    #[inline]
    pub fn push(&mut self, hit: Hit) {
        if self.k == 0 {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(Reverse(hit));
        } else if let Some(mut min) = self.heap.peek_mut()
            && hit > min.0
        {
            *min = Reverse(hit);
        }
    }

    /// The hits, best first.
    pub fn into_sorted(self) -> Vec<Hit> {
        let mut v: Vec<Hit> = self.heap.into_iter().map(|r| r.0).collect();
        v.sort_by(|a, b| b.cmp(a));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_best() {
        let mut t = TopK::new(3);
        for (i, s) in [0.5, 0.1, 0.9, 0.7, 0.2].iter().enumerate() {
            t.push(Hit {
                score: *s,
                seg: 0,
                off: i as u32,
            });
        }
        let got: Vec<f32> = t.into_sorted().iter().map(|h| h.score).collect();
        assert_eq!(got, vec![0.9, 0.7, 0.5]);
    }
}
