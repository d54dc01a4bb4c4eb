"""DialBackoff: the reconnect delay rule shared by the real peer pool and the simulator's."""

import random

import pytest
from hypothesis import given, strategies as st

from dynamo.rpc.backoff import DialBackoff
from dynamo.rpc.transport import RpcUnavailable


@given(st.integers(1, 80), st.integers(0, 2**32))
def test_the_kth_failure_waits_a_jittered_capped_doubling(failures, seed):
    backoff, rng = DialBackoff(), random.Random(seed)
    for _ in range(failures):
        delay_s = backoff.failed("refused", 100.0, 0.05, 5.0, rng)
    full_s = min(5.0, 0.05 * 2 ** (failures - 1))
    assert 0.5 * full_s <= delay_s < full_s and backoff.retry_at_s == 100.0 + delay_s


def test_requests_fail_fast_until_the_delay_passes_or_a_reset():
    backoff = DialBackoff()
    backoff.check("b", 0.0)  # never failed: go ahead
    delay_s = backoff.failed("connection refused", 10.0, 1.0, 5.0, random.Random(1))
    with pytest.raises(RpcUnavailable, match=r"b unreachable \(connection refused\); backing off"):
        backoff.check("b", 10.0 + delay_s / 2)
    backoff.check("b", 10.0 + delay_s)
    backoff.failed("refused", 20.0, 1.0, 5.0, random.Random(1))
    backoff.reset()
    assert backoff.failures == 0
    backoff.check("b", 20.0)
