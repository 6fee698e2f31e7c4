//! A bounded memo of a pure function of request bytes, per worker: what an Authorization header
//! confirms, which certificate a forwarded header carries, or a connection's certificate. A
//! client sends the same token and the same header on request after request, and decoding them
//! costs more than looking them up. The result is recalled only for exactly the same bytes (keys
//! are compared in full), so it is what decoding them again would give.
//!
//! Entries are found by a keyed hash of their key (std's SipHash with this process's random
//! keys, so a client cannot aim many keys at one bucket) and then compared eight bytes at a time:
//! in wasm the C library's `memcmp` compares a byte per step, which for a token costs more than
//! the hash.
//!
//! Bounded in entries and in key bytes: when either bound would be passed the memo is emptied and
//! refills from the traffic that follows. A key longer than a sixty-fourth of the byte budget is
//! never kept, so a few large credentials cannot crowd out the rest.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

type Bucket<V> = Vec<(Box<[u8]>, V)>;

/// `S` hashes the keys; only tests choose another than std's keyed SipHash.
pub struct Memo<V, S = RandomState> {
    /// By the keyed hash of the key: the entries with that hash (one, but for a collision).
    entries: HashMap<u64, Bucket<V>, BuildHasherDefault<Prehashed>>,
    keys: S,
    len: usize,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl<V: Clone> Memo<V> {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self::with_hasher(max_entries, max_bytes, RandomState::new())
    }
}

impl<V: Clone, S: BuildHasher> Memo<V, S> {
    fn with_hasher(max_entries: usize, max_bytes: usize, keys: S) -> Self {
        Self {
            entries: HashMap::default(),
            keys,
            len: 0,
            bytes: 0,
            max_entries,
            max_bytes,
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<V> {
        let bucket = self.entries.get(&self.keys.hash_one(key))?;
        let (_, value) = bucket.iter().find(|(kept, _)| same_bytes(kept, key))?;
        Some(value.clone())
    }

    /// Keeps `value` for `key`, in place of an earlier one.
    pub fn insert(&mut self, key: &[u8], value: V) {
        if key.len() > self.max_bytes / 64 {
            return;
        }
        let hash = self.keys.hash_one(key);
        if let Some(bucket) = self.entries.get_mut(&hash) {
            if let Some((_, kept)) = bucket.iter_mut().find(|(kept, _)| same_bytes(kept, key)) {
                *kept = value;
                return;
            }
        }
        if self.len >= self.max_entries || self.bytes + key.len() > self.max_bytes {
            self.entries.clear();
            self.len = 0;
            self.bytes = 0;
        }
        self.len += 1;
        self.bytes += key.len();
        self.entries
            .entry(hash)
            .or_default()
            .push((key.into(), value));
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Whether two byte strings are equal, compared eight bytes at a time.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    fn word(chunk: &[u8]) -> Option<u64> {
        chunk.try_into().ok().map(u64::from_ne_bytes)
    }
    let (a_words, b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    a.len() == b.len()
        && a_words.remainder() == b_words.remainder()
        && a_words.zip(b_words).all(|(x, y)| word(x) == word(y))
}

/// The map's own hasher: its keys are already keyed SipHash values, so it passes them through.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; any other input is folded in rather than dropped.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
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

    /// Every key hashes alike: one bucket, so only the full comparison tells keys apart.
    struct Colliding;

    struct Constant;

    impl Hasher for Constant {
        fn finish(&self) -> u64 {
            7
        }

        fn write(&mut self, _bytes: &[u8]) {}
    }

    impl BuildHasher for Colliding {
        type Hasher = Constant;
        fn build_hasher(&self) -> Constant {
            Constant
        }
    }

    #[test]
    fn keys_with_one_hash_stay_apart() {
        let mut memo = Memo::with_hasher(8, 1 << 10, Colliding);
        memo.insert(b"first token", 1);
        memo.insert(b"other token", 2);
        memo.insert(b"first token", 3);
        assert_eq!(memo.get(b"first token"), Some(3));
        assert_eq!(memo.get(b"other token"), Some(2));
        assert_eq!(memo.get(b"third token"), None);
        assert_eq!(memo.len(), 2);
    }

    #[test]
    fn compares_every_byte() {
        let key = b"0123456789abcdefXYZ";
        assert!(same_bytes(key, key));
        for other in [
            &b"0123456789abcdefXYz"[..],
            b"0123456789abcdeFXYZ",
            b"0123456789abcdef",
        ] {
            assert!(!same_bytes(key, other), "{other:?}");
        }
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
