"""Hinted handoff: a fallback gives the writes it holds for a down primary back once that primary is up.

Theory of operation
- Every `interval_s` the loop looks at the targets with pending hints (HintStore.counts). A target gets a
  delivery when gossip says it is alive and its backoff has expired. A delivery takes the target's oldest
  `batch` hints, reads the CURRENT local copy of each distinct key (it holds everything any hint of the key
  ever held, merges and later writes included) and sends them in one "kv.handoff" call; the target merges
  and stores them durably before it answers. Only then are exactly those hints removed (a hint added
  meanwhile stays for the next batch). A failure doubles the target's backoff (capped); a success resets
  it. Delivering twice is harmless: merging is idempotent.
- A hint names the node that was a primary when it was written. A ring change may since have moved the
  key's partition away from it (it left, or was force-removed while down, so it may never be alive
  again): each key of a batch goes to its target only while the target is still one of the key's
  primaries here; otherwise to the key's live primaries in our view instead (as Riak hands a hinted
  partition to its current owner). A target no ring here names any more gets its batches so, whether or
  not it is alive.
- A key with no live primary to go to (and us not one of them) waits: its hints stay for a later round,
  while the rest of its batch goes, and the round goes on past it to the target's later hints. Nothing
  failed, so the target's backoff does not grow: once a primary is back, the next round delivers.
- After a delivery, a key this node is not a primary for and holds no other hint for is deleted locally:
  under the key's lock, only if the copy is still the one delivered. A copy holding a dot of this node's
  current actor (a fallback coordinates only when no primary is reachable) goes too, after the actor is
  retired (forgetting.py): kept, it would be a stale copy no anti-entropy exchange looks at.
"""

from __future__ import annotations

import logging
import math

import trio

from dynamo.bucket import BucketRegistry
from dynamo.rpc import PeerPool, RpcError
from dynamo.service.forgetting import Forgetting
from dynamo.service.membership import Membership
from dynamo.service.replica import Replica
from dynamo.stats import Stats
from dynamo.storage import HintStore, StorageError
from ring.hashing import partition_for_key

log = logging.getLogger("dynamo.handoff")

BATCHES_PER_ROUND_MAX = 16  # per target and round, so one big backlog does not starve the others


class Handoff:
    def __init__(self, node_id: str, forgetting: Forgetting, replica: Replica, hints: HintStore, pool: PeerPool,
                 membership: Membership, registry: BucketRegistry, stats: Stats, *, interval_s: float,
                 batch: int, backoff_max_s: float, timeout_s: float,
                 logger: logging.LoggerAdapter | None = None) -> None:
        self.node_id, self.forgetting = node_id, forgetting
        self.replica, self.hints, self.pool = replica, hints, pool
        self.membership, self.registry, self.stats = membership, registry, stats
        self.interval_s, self.batch, self.backoff_max_s, self.timeout_s = interval_s, batch, backoff_max_s, timeout_s
        self.log = logger or logging.LoggerAdapter(log, {})
        self._failures: dict[str, int] = {}
        self._retry_at_s: dict[str, float] = {}

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self.interval_s)
            await self.round()

    async def round(self) -> None:
        for target in sorted(self.hints.counts()):
            now_s = trio.current_time()
            if target == self.node_id or now_s < self._retry_at_s.get(target, -math.inf):
                continue
            if not self.membership.is_alive(target) and self.membership.names(target):
                continue  # down, but still a member: it gets its hints once it is back
            try:
                after_id = None
                for _ in range(BATCHES_PER_ROUND_MAX):
                    after_id = await self.deliver(target, after_id)
                    if after_id is None:
                        break
            except (RpcError, StorageError) as error:
                failures = self._failures[target] = self._failures.get(target, 0) + 1
                delay_s = min(self.backoff_max_s, self.interval_s * 2 ** min(failures, 30))
                self._retry_at_s[target] = trio.current_time() + delay_s
                self.stats.handoff_failures += 1
                self.log.info("handoff to %s failed (%s); retry in %.1fs", target, error, delay_s)
            else:
                self._failures.pop(target, None)
                self._retry_at_s.pop(target, None)

    async def deliver(self, target: str, after_id: int | None = None) -> int | None:
        """Send one batch of `target`'s hints (those after `after_id`); return the id of the batch's last
        hint when there may be more after it, else None. Hints of a key that has to wait stay pending."""
        hints = self.hints.pending(target, limit=self.batch, after_id=after_id)
        if not hints:
            return None
        blobs: dict[tuple[bytes, bytes], bytes | None] = {}
        for hint in hints:
            name = (hint.bucket, hint.key)
            if name not in blobs:
                blobs[name] = self.replica.read(hint.bucket, hint.key)
        by_node: dict[str, list[list[bytes]]] = {}
        waiting: set[tuple[bytes, bytes]] = set()
        for (bucket, key), blob in blobs.items():
            receivers = self._receivers(target, bucket, key) if blob is not None else []
            if receivers is None:
                waiting.add((bucket, key))
            for node in receivers or ():
                by_node.setdefault(node, []).append([bucket, key, blob])
        for node, items in sorted(by_node.items()):
            await self.pool.call(node, "kv.handoff", items, self.timeout_s)
        done = [hint.hint_id for hint in hints if (hint.bucket, hint.key) not in waiting]
        await self.hints.remove(done)
        self.stats.hints_delivered += len(done)
        self.log.debug("handed %d keys (%d hints) for %s; %d keys wait for a live primary",
                       len(blobs) - len(waiting), len(done), target, len(waiting))
        for name, blob in blobs.items():
            if blob is not None and name not in waiting:
                await self._maybe_drop(*name, blob)
        return hints[-1].hint_id if len(hints) == self.batch else None

    def _receivers(self, target: str, bucket: bytes, key: bytes) -> list[str] | None:
        """Who gets a hinted key: its target while still a primary of it, else its live primaries but us
        ([] when we are its only live primary: nothing to send). None when it has no live primary and we
        are not one either: the key waits for a later round."""
        partition = partition_for_key(bucket, key, self.membership.ring.partitions)
        primaries = [r.node for r in self.membership.preflist(partition, self.registry.get(bucket).n_val).primaries]
        if target in primaries:
            return [target]
        live = [node for node in primaries if node != self.node_id and self.membership.is_alive(node)]
        if not live and self.node_id not in primaries:
            return None
        return live

    async def _maybe_drop(self, bucket: bytes, key: bytes, blob: bytes) -> None:
        partition = partition_for_key(bucket, key, self.membership.ring.partitions)
        if self.membership.is_primary(partition, self.registry.get(bucket).n_val):
            return
        if await self.replica.drop_if(bucket, key, blob, self.forgetting.may_forget):
            self.stats.handoff_keys_dropped += 1
        else:
            self.log.debug("kept %r/%r after handoff (changed or hinted again)", bucket, key)
