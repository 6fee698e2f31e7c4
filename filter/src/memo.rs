//! A bounded memo of a pure function of request bytes, per worker: what a token's payload says
//! (its `cnf`), or which certificate a forwarded header carries. A client sends the same token
//! and the same header on request after request, and decoding them costs more than looking them
//! up. The result is recalled only for exactly the same bytes (the map compares keys in full), so
//! it is what decoding them again would give.
//!
//! Bounded in entries and in key bytes: when either bound would be passed the memo is emptied and
//! refills from the traffic that follows. A key longer than a sixty-fourth of the byte budget is
//! never kept, so a few large credentials cannot crowd out the rest.

use std::collections::HashMap;

pub struct Memo<V> {
    entries: HashMap<Box<[u8]>, V>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl<V: Clone> Memo<V> {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            entries: HashMap::new(),
            bytes: 0,
            max_entries,
            max_bytes,
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<V> {
        self.entries.get(key).cloned()
    }

    /// Keeps `value` for `key`, in place of an earlier one.
    pub fn insert(&mut self, key: &[u8], value: V) {
        if key.len() > self.max_bytes / 64 {
            return;
        }
        if let Some(kept) = self.entries.get_mut(key) {
            *kept = value;
            return;
        }
        if self.entries.len() >= self.max_entries || self.bytes + key.len() > self.max_bytes {
            self.entries.clear();
            self.bytes = 0;
        }
        self.bytes += key.len();
        self.entries.insert(key.into(), value);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recalls_exactly_the_same_bytes() {
        let mut memo = Memo::new(8, 1 << 10);
        memo.insert(b"a.b.c", 1);
        assert_eq!(memo.get(b"a.b.c"), Some(1));
        for other in [&b"a.b."[..], b"a.b.cc", b"A.b.c", b""] {
            assert_eq!(memo.get(other), None);
        }
        // A later value replaces the earlier one, and the key is counted once.
        memo.insert(b"a.b.c", 2);
        assert_eq!(memo.get(b"a.b.c"), Some(2));
        assert_eq!((memo.len(), memo.bytes), (1, 5));
    }

    #[test]
    fn stays_within_its_bounds() {
        let mut memo = Memo::new(4, 64 * 16);
        for i in 0u8..50 {
            memo.insert(&[i; 16], i);
            assert!(memo.len() <= 4);
            assert!(memo.bytes <= 64 * 16);
            assert_eq!(memo.get(&[i; 16]), Some(i));
        }
        let mut memo = Memo::new(1000, 64 * 16);
        for i in 0u8..200 {
            memo.insert(&[i; 16], i);
            assert!(memo.bytes <= 64 * 16);
        }
        // Longer than a sixty-fourth of the budget: never kept.
        memo.insert(&[7; 17], 7);
        assert_eq!(memo.get(&[7; 17]), None);
    }
}
