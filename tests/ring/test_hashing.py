"""Hashing: MurmurHash3 x64 128 of bucket NUL key (golden vectors, checked against mmh3 directly), the
top log2(Q) bits as the partition, and clear errors for a bad Q or a bad hash."""

import mmh3
import pytest
from hypothesis import given, strategies as st

from ring.hashing import PartitionCountError, check_partitions, key_hash, partition_for_key, partition_of

# (bucket, key) -> (hash, partition at Q=64, 256, 1024), computed once and checked in.
GOLDEN = [
    (b"", b"", 0x51622DAA78F835834610ABE56EFF5CB5, 20, 81, 325),
    (b"users", b"alice", 0xA710FE955AA85029D5E602E4A5D97680, 41, 167, 668),
    (b"users", b"bob", 0xCF96ED115D7E1C1046C3BAEC63F6C726, 51, 207, 830),
    (b"b", b"k", 0xD0F817EB8EE36EAB8A83DDDBDC359FE9, 52, 208, 835),
    (b"ab", b"c", 0x38A4EC169016C82E96E8FA3CF664A1E9, 14, 56, 226),
    (b"a", b"bc", 0x1A52A24C2F081B43C8702520B268807D, 6, 26, 105),
    (b"\x00\xff", b"\x01" * 40, 0x4AF5869DF109B41E55765F7FEB2087, 0, 0, 1),
]


@pytest.mark.parametrize("bucket, key, expected, p64, p256, p1024", GOLDEN)
def test_golden_vectors(bucket, key, expected, p64, p256, p1024):
    assert key_hash(bucket, key) == expected
    assert key_hash(bucket, key) == mmh3.hash128(bucket + b"\0" + key, signed=False)
    assert [partition_for_key(bucket, key, q) for q in (64, 256, 1024)] == [p64, p256, p1024]


def test_separator_keeps_bucket_and_key_apart():
    assert key_hash(b"ab", b"c") != key_hash(b"a", b"bc")


@given(bucket=st.binary(max_size=20), key=st.binary(max_size=40))
def test_hash_is_mmh3_of_bucket_nul_key(bucket, key):
    value = key_hash(bucket, key)
    assert value == mmh3.hash128(bucket + b"\0" + key, signed=False)
    assert 0 <= value < 2 ** 128


@given(value=st.integers(0, 2 ** 128 - 1), bits=st.integers(3, 12))
def test_partition_is_the_top_bits(value, bits):
    partitions = 1 << bits
    partition = partition_of(value, partitions)
    assert partition == value * partitions // 2 ** 128  # equal shares of the hash space
    assert partition * 2 ** 128 // partitions <= value < (partition + 1) * 2 ** 128 // partitions


def test_partition_edges():
    assert partition_of(0, 64) == 0
    assert partition_of(2 ** 128 - 1, 64) == 63
    assert partition_of(2 ** 122, 64) == 1
    assert partition_of(2 ** 122 - 1, 64) == 0


@pytest.mark.parametrize("bad", [0, 1, 4, 7, 12, 100, 8192, 2 ** 20, -8, True, 64.0, "64", None])
def test_bad_partition_counts_are_refused(bad):
    with pytest.raises(PartitionCountError, match="partitions"):
        check_partitions(bad)
    with pytest.raises(ValueError):
        partition_of(5, bad)


@pytest.mark.parametrize("good", [8, 16, 64, 256, 1024, 4096])
def test_good_partition_counts(good):
    assert check_partitions(good) == good


@pytest.mark.parametrize("bad", [-1, 2 ** 128])
def test_hash_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match="hash_value"):
        partition_of(bad, 64)


def test_keys_must_be_bytes():
    with pytest.raises(TypeError):
        key_hash("bucket", b"key")
    with pytest.raises(TypeError):
        key_hash(b"bucket", "key")
