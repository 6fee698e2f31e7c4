//! The proxy-wasm pairs map: how Envoy serialises a map (a metadata struct, for one) when a filter
//! reads it as a property. A little-endian u32 count, then a u32 key length and a u32 value length
//! per pair, then each key and each value followed by a NUL byte.

/// The pairs of a serialised map, or `None` when the bytes are not exactly one such map.
pub fn parse(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let (count, mut rest) = u32_at(bytes)?;
    let mut sizes = Vec::new();
    for _ in 0..count {
        let (key, after) = u32_at(rest)?;
        let (value, after) = u32_at(after)?;
        sizes.push((key as usize, value as usize));
        rest = after;
    }
    let mut pairs = Vec::with_capacity(sizes.len());
    for (key_len, value_len) in sizes {
        let (key, after) = take_terminated(rest, key_len)?;
        let (value, after) = take_terminated(after, value_len)?;
        pairs.push((key, value));
        rest = after;
    }
    rest.is_empty().then_some(pairs)
}

fn u32_at(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*head), rest))
}

fn take_terminated(bytes: &[u8], len: usize) -> Option<(&[u8], &[u8])> {
    let (item, rest) = bytes.split_at_checked(len)?;
    let (nul, rest) = rest.split_first()?;
    (*nul == 0).then_some((item, rest))
}
