"""When to dial a peer again after failed dials: capped exponential backoff with jitter.

One `DialBackoff` per peer, in the real peer pool (pool.py) and in the simulator's (tools/sim/trio_pool.py),
so both follow the same rules: after the k-th failure in a row the next dial waits
min(max_s, min_s * 2**(k-1)) times a random factor in [0.5, 1) (peers that lost a node together do not
all redial at once); while waiting, requests fail at once (`check`); a dial that works, a moved address
or news that the peer is back (`reset`) starts over. Pure: the clock and the random source are passed in.
"""

from __future__ import annotations

import dataclasses
import math
import random

from dynamo.rpc.transport import RpcUnavailable


@dataclasses.dataclass
class DialBackoff:
    failures: int = 0
    retry_at_s: float = -math.inf
    last_error: str = ""

    def check(self, peer_id: str, now_s: float) -> None:
        """Raise RpcUnavailable while backing off."""
        if now_s < self.retry_at_s:
            raise RpcUnavailable(f"{peer_id} unreachable ({self.last_error}); "
                                 f"backing off for {self.retry_at_s - now_s:.2f}s")

    def failed(self, reason: str, now_s: float, min_s: float, max_s: float, rng: random.Random) -> float:
        """Record a failed dial; the delay until the next one."""
        self.failures += 1
        delay_s = min(max_s, min_s * 2 ** min(self.failures - 1, 62)) * rng.uniform(0.5, 1.0)
        self.retry_at_s = now_s + delay_s
        self.last_error = reason
        return delay_s

    def reset(self) -> None:
        self.failures, self.retry_at_s = 0, -math.inf
