//! The stable key hash: the same on every node, every build and every platform.
//!
//! Placement must never depend on `std`'s randomly seeded hasher, so keys are
//! hashed with XXH3-64 under a fixed seed. Changing the seed or the encoding
//! below re-homes every key in every existing cluster: never do it.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The fixed seed of the placement hash.
const PLACEMENT_SEED: u64 = 0x5155_4f52_5241_0001; // "QUORRA" v1

/// Hash of a bucket and key, as used for placement.
///
/// The bucket is length-prefixed so that `("ab", "c")` and `("a", "bc")` never
/// collide by construction.
pub fn key_hash(bucket: &[u8], key: &[u8]) -> u64 {
    let mut buf = Vec::with_capacity(2 + bucket.len() + key.len());
    // Bucket names are at most 255 bytes (see `bucket::MAX_BUCKET_LEN_HARD`).
    buf.extend_from_slice(&(bucket.len() as u16).to_be_bytes());
    buf.extend_from_slice(bucket);
    buf.extend_from_slice(key);
    xxh3_64_with_seed(&buf, PLACEMENT_SEED)
}

/// The partition of a hash among `partitions` partitions (a power of two):
/// the top bits of the hash, so partition `p` is a contiguous hash range.
pub fn partition_of(hash: u64, partitions: u32) -> u32 {
    debug_assert!(partitions.is_power_of_two());
    let bits = partitions.trailing_zeros();
    if bits == 0 {
        0
    } else {
        (hash >> (64 - bits)) as u32
    }
}

/// A content checksum for stored records (not for placement).
pub fn checksum(bytes: &[u8]) -> u64 {
    xxh3_64_with_seed(bytes, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_across_builds() {
        // Golden value: if it changes, every cluster's placement changes.
        assert_eq!(key_hash(b"users", b"alice"), 0xc079_31be_62f8_c96e);
        assert_ne!(key_hash(b"ab", b"c"), key_hash(b"a", b"bc"));
    }

    #[test]
    fn partitions_cover_the_range() {
        assert_eq!(partition_of(0, 256), 0);
        assert_eq!(partition_of(u64::MAX, 256), 255);
        assert_eq!(partition_of(u64::MAX, 1), 0);
        assert_eq!(partition_of(1 << 63, 2), 1);
    }
}
