"""Where a key lives: MurmurHash3 x64 128-bit onto a ring of Q equal partitions.

Theory of operation
- A key is the pair (bucket, key), both bytes. Its hash is `mmh3.hash128(bucket + b"\\0" + key,
  signed=False)`, an integer in [0, 2**128). The NUL separator keeps ("ab", "c") and ("a", "bc") apart.
- Q (the partition count) is a power of two, so partition = the top log2(Q) bits of the hash: partition p
  covers the hash range [p * 2**128 / Q, (p + 1) * 2**128 / Q). Every partition covers an equal share.
- Q is fixed for the life of a cluster; it is validated here once for every module that takes it.
"""

from __future__ import annotations

import mmh3

HASH_BITS = 128
PARTITIONS_DEFAULT = 256
PARTITIONS_MIN = 8
PARTITIONS_MAX = 4096


class PartitionCountError(ValueError):
    """Q is not a power of two in [PARTITIONS_MIN, PARTITIONS_MAX]."""


def check_partitions(partitions: int) -> int:
    """Return `partitions` if it is a valid Q, else raise PartitionCountError."""
    if isinstance(partitions, bool) or not isinstance(partitions, int):
        raise PartitionCountError(f"partitions must be an int, got {type(partitions).__name__}")
    if not PARTITIONS_MIN <= partitions <= PARTITIONS_MAX or partitions & (partitions - 1):
        raise PartitionCountError(
            f"partitions must be a power of two in [{PARTITIONS_MIN}, {PARTITIONS_MAX}], got {partitions}")
    return partitions


def key_hash(bucket: bytes, key: bytes) -> int:
    """MurmurHash3 x64 128-bit of bucket + NUL + key, as an unsigned int."""
    if not isinstance(bucket, bytes) or not isinstance(key, bytes):
        raise TypeError("bucket and key must be bytes")
    return mmh3.hash128(bucket + b"\0" + key, signed=False)


def partition_of(hash_value: int, partitions: int = PARTITIONS_DEFAULT) -> int:
    """The partition whose hash range holds `hash_value`."""
    check_partitions(partitions)
    if not 0 <= hash_value < 1 << HASH_BITS:
        raise ValueError(f"hash_value must be in [0, 2**{HASH_BITS}), got {hash_value}")
    return hash_value >> (HASH_BITS - (partitions.bit_length() - 1))


def partition_for_key(bucket: bytes, key: bytes, partitions: int = PARTITIONS_DEFAULT) -> int:
    """The partition of (bucket, key) on a ring of `partitions` partitions."""
    return partition_of(key_hash(bucket, key), partitions)
