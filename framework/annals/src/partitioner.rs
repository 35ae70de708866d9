//! Kafka's default partitioner: murmur2 of the key's bytes, sign bit cleared, modulo
//! the partition count. A stream lands in the same partition number as a Kafka record
//! keyed by the same id in a topic with the same partition count.

use crate::position::Partition;
use crate::stream::StreamId;

/// The partition of `stream` in a store of `partition_count` partitions.
///
/// ```
/// use annals::{partition_for, StreamId};
///
/// assert_eq!(partition_for(&StreamId::new("order-42")?, 16), 0);
/// # Ok::<(), annals::Error>(())
/// ```
pub fn partition_for(stream: &StreamId, partition_count: u32) -> Partition {
    assert!(partition_count > 0, "a store has at least one partition");
    let hash = murmur2(stream.as_str().as_bytes()) as u32;
    Partition((hash & 0x7fff_ffff) % partition_count)
}

/// Kafka's 32-bit murmur2 (seed `0x9747b28c`), as `org.apache.kafka.common.utils.Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, byte) in tail.iter().enumerate().rev() {
            h ^= u32::from(*byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_kafkas_own_vectors() {
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58_897_971
        );
        assert_eq!(murmur2(b"abc"), 479_470_107);
    }

    #[test]
    fn places_streams_as_the_contract_says() {
        for (id, partition) in [
            ("order-1", 6),
            ("order-2", 3),
            ("order-42", 0),
            ("product-sku-9", 1),
            ("customer-alice", 6),
        ] {
            let stream = StreamId::new(id).unwrap();
            assert_eq!(partition_for(&stream, 16), partition, "{id}");
        }
    }

    proptest! {
        #[test]
        fn partition_is_in_range_and_stable(id in "[A-Za-z0-9_.:@-]{1,200}", count in 1u32..1024) {
            let stream = StreamId::new(id).unwrap();
            let partition = partition_for(&stream, count);
            prop_assert!(partition < count);
            prop_assert_eq!(partition, partition_for(&stream.clone(), count));
        }

        #[test]
        fn tail_bytes_all_count(prefix in "[a-z]{0,12}", a in any::<u8>(), b in any::<u8>()) {
            // Changing any one byte of the tail changes the hash (murmur2 mixes every byte).
            let mut one = prefix.clone().into_bytes();
            one.push(a);
            let mut other = prefix.into_bytes();
            other.push(b);
            prop_assert_eq!(murmur2(&one) == murmur2(&other), a == b);
        }
    }
}
