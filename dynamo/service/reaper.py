"""Tombstone reaping: when a delete may be forgotten, and how it is forgotten without bringing a value back.

Theory of operation
- The rule (DESIGN §3): a tombstone is reaped only once anti-entropy has shown that every primary holds it
  and no hint for the key is pending anywhere. One node decides per partition and n_val (per tree): the
  *decider*, the primary at that n_val with the smallest node id. It initiates the exchanges with every
  other primary (aae.py), so after a round in which all of them were up and every exchange completed, a
  tombstone of its tree that was in no diff is held, with the same digest (same causal state), by every
  primary: *agreed*.
- `ReapLedger` (pure) remembers since when each (key, digest) has been agreed. A tombstone becomes *ripe*
  when it was agreed in two rounds at least `grace_s` apart with the same digest, and at both rounds no
  ring change was under way and every node's hint count (gossiped, so possibly late: hence the grace) and
  the local one were zero. The grace also outlasts any write, repair or hint delivery still in flight from
  before the delete (by default 60 s against RPC deadlines of 10 s; a node whose grace is under twice its
  request_timeout_s says so in a warning at start), so nothing older than the tombstone arrives after.
- Reaping a batch: the decider sends "aae.reap" [partition, [[bucket, key, digest], ...]] to every other
  primary; each drops a key only if it still stores exactly that digest, the object is a tombstone and it
  holds no hint for the key (Replica.drop_if, under the key's lock), and answers which it dropped. The
  decider then drops locally only the keys *every* peer dropped. So the decider keeps its tombstone
  unless each other primary held that very tombstone when it dropped it.

Why a replica that missed the delete cannot resurrect the value. Say primary C held the value V and missed
the delete T (down, or partitioned). (1) Reaping needs C to answer an exchange with T's digest and to drop
exactly T, so while C holds V, nobody's T goes: the decider keeps T, and any peer that dropped T gets it
back from the decider through repair. Merging V and T gives T (T's clock covers V), so C ends up with T.
(2) A fallback holding V for C holds a hint for it: the hint counts are not all zero, so nothing is ripe.
(3) A V still in flight (a write, a read repair, a hint delivery started before the delete) is older than
the grace. Hence at the moment the last copy of T goes, no primary holds V or anything older than T.

A reaped key on one primary and a not-yet-reaped tombstone on another (a peer dropped, the decider or
another peer did not): the next exchange shows the key differs, and repair copies the tombstone back to
where it was dropped (merging a tombstone in can only supersede); a later round reaps it everywhere. The
mixed state is safe throughout: an absent copy holds nothing to resurrect.

Dots after a reap. A node that dropped a key forgets its own counter for it; a later write coordinated
there would mint (actor, 1) again, which a copy of the tombstone still held elsewhere (its clock saw
(actor, n)) would silently swallow. So before dropping a tombstone that holds an entry of the node's
current actor, the node retires that actor (forgetting.py: a new incarnation, written durably first); the
next write mints with a fresh actor no clock has seen. That happens at most once per reap batch.

Copies on nodes that are no primary of the key are not exchanged, so they must not linger: a fallback
drops its copy once the hint is delivered, an old owner once a ring change settled, each also when the copy
holds its own dots (forgetting.py). Until then (a hint not yet delivered, a cleanup not yet run) such a
copy, answering a read as a fallback, could still read-repair an old value back.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Hashable, Sequence

from dynamo.object import StoredObject, object_digest
from dynamo.service.forgetting import Forgetting
from dynamo.service.replica import OBJECTS, Replica

log = logging.getLogger("dynamo.reaper")

REAP_TYPE = "aae.reap"


@dataclasses.dataclass(frozen=True)
class Agreed:
    digest: bytes
    since_s: float


class ReapLedger:
    """Per tree (its (partition, n_val)): since when each tombstone (tree key -> digest) has been agreed by
    every primary."""

    def __init__(self, grace_s: float) -> None:
        if not grace_s >= 0:
            raise ValueError(f"grace_s must be >= 0, got {grace_s!r}")
        self.grace_s = grace_s
        self._agreed: dict[Hashable, dict[bytes, Agreed]] = {}

    def observe(self, tree: Hashable, agreed: dict[bytes, bytes], now_s: float) -> list[tuple[bytes, bytes]]:
        """Record a round's agreed tombstones of `tree`; returns the ripe (tree key, digest) pairs.
        A key missing from `agreed` (or with a new digest) starts over."""
        before = self._agreed.get(tree, {})
        after = {}
        for tk, digest in agreed.items():
            seen = before.get(tk)
            after[tk] = seen if seen is not None and seen.digest == digest else Agreed(digest, now_s)
        self._agreed[tree] = after
        return sorted((tk, a.digest) for tk, a in after.items() if now_s - a.since_s >= self.grace_s)

    def reset(self, tree: Hashable) -> None:
        """A round that could not show agreement (a primary down, hints pending, a ring change)."""
        self._agreed.pop(tree, None)

    def forget(self, tree: Hashable, tks: Sequence[bytes]) -> None:
        entries = self._agreed.get(tree, {})
        for tk in tks:
            entries.pop(tk, None)

    def tracked(self, tree: Hashable) -> int:
        return len(self._agreed.get(tree, {}))


class Reaper:
    """Drops agreed tombstones on this node (`drop`), and answers "aae.reap" from deciders."""

    def __init__(self, replica: Replica, stats: Any, forgetting: Forgetting,
                 logger: logging.LoggerAdapter | None = None) -> None:
        self.replica, self.stats, self.forgetting = replica, stats, forgetting
        self.log = logger or logging.LoggerAdapter(log, {})

    async def drop(self, items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
        """Drop each (bucket, key, digest) whose stored object is a tombstone with exactly that digest and
        has no local hint; returns, per item, whether it was dropped."""
        candidates: dict[int, tuple[bytes, StoredObject]] = {}
        for i, (bucket, key, digest) in enumerate(items):
            blob = self.replica.read(bucket, key)
            if blob is None:
                continue
            obj = OBJECTS.decode(blob)
            if obj.is_tombstone and object_digest(bucket, key, obj) == digest:
                candidates[i] = (blob, obj)
        dropped = [False] * len(items)
        for i, (blob, _) in candidates.items():
            bucket, key, _ = items[i]
            dropped[i] = await self.replica.drop_if(bucket, key, blob, self._may_reap)
        self.stats.aae_tombstones_reaped += sum(dropped)
        return dropped

    def _may_reap(self, obj: StoredObject) -> bool:
        """Still a tombstone (checked under the key's lock), and safe to forget (forgetting.py)."""
        return obj.is_tombstone and self.forgetting.may_forget(obj)

    async def rpc_reap(self, peer_id: str, body: Any) -> list[bool]:
        partition, raw = body
        if type(partition) is not int or type(raw) is not list:
            raise ValueError("aae.reap wants [partition, [[bucket, key, digest], ...]]")
        items = []
        for item in raw:
            if type(item) is not list or len(item) != 3 or not all(type(x) is bytes for x in item):
                raise ValueError("aae.reap items are [bucket, key, digest] of bytes")
            items.append((item[0], item[1], item[2]))
        return await self.drop(items)


