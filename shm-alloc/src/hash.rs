//! FNV-1a, 64-bit (Fowler, Noll, Vo; <http://www.isthe.com/chongo/tech/comp/fnv/>): the
//! one hash of the file formats, for message type fingerprints, ring ids and the
//! segment header's checksum. Stable: its values are written into segments, so its
//! constants and byte order never change (golden values are pinned by tests).

/// The offset basis: the hash of no bytes.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The FNV prime, 64-bit.
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// `hash` carried on over `bytes`. Start from [`FNV_OFFSET`]; chain calls to hash
/// several fields.
#[must_use]
pub const fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        hash = (hash ^ bytes[i] as u64).wrapping_mul(FNV_PRIME);
        i += 1;
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_values_of_the_reference_implementation() {
        // From the FNV reference test vectors (FNV-1a, 64-bit).
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(
            fnv1a(fnv1a(FNV_OFFSET, b"foo"), b"bar"),
            0x8594_4171_f739_67e8
        );
    }
}
