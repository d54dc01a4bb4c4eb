"""Quorum logic of a get, put or delete, as pure objects (the shape of riak_kv_get_core / put_core).

Theory of operation: the coordinator's trio side sends a request to every replica in the preference list
and feeds each answer to a quorum object with `add_reply`. After each reply it asks `enough()`; once true it
answers the client with `result()`. It keeps feeding late replies until every target answered or the
deadline passed, then asks `final_action()` for the read repairs to send. The object never does I/O and
never reads a clock, so every rule below is tested on its own.

Rules (Riak's):
- Get: an `ok` reply (an object, tombstones included) counts toward R; a not-found counts toward R only
  with notfound_ok. A reply from a primary also counts toward PR. The get fails early once the failures
  (errors, plus not-founds when they do not count) reach the fail threshold: N-R+1, or with basic_quorum
  the smaller of that and a simple majority. Once all N answered it is over either way.
- Put: every acknowledgement is durable when sent (replicas ack after their group commit), so one ack
  counts toward W and DW; acks from primaries count toward PW. It fails once the unmet quorum can no
  longer be reached by the replies still to come.
- Error text names the unmet quorum the way Riak does: "R-value unsatisfied: 1/2".
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Generic, Hashable, TypeVar

Obj = TypeVar("Obj")
Node = Hashable


@dataclasses.dataclass(frozen=True)
class NotFound:
    """A replica's answer that it holds nothing for the key."""


@dataclasses.dataclass(frozen=True)
class Failed:
    """A replica's error, timeout or refusal; `reason` is for logs."""

    reason: str


NOT_FOUND = NotFound()


@dataclasses.dataclass(frozen=True)
class Found(Generic[Obj]):
    """The get answers with an object; `tombstone` tells whether every sibling is a delete."""

    obj: Obj
    tombstone: bool


@dataclasses.dataclass(frozen=True)
class QuorumFailed:
    """The quorum could not be met: `message` is what the client sees with a 503."""

    message: str


@dataclasses.dataclass(frozen=True)
class ReadRepair(Generic[Obj]):
    """Send `obj` (the merge of every answer) to `nodes`, which answered stale or not-found."""

    nodes: tuple
    obj: Obj


def _unsatisfied(name: str, needed: int, got: int) -> QuorumFailed:
    return QuorumFailed(f"{name}-value unsatisfied: {got}/{needed}")


def _validate(n: int, **quorums: int) -> None:
    """n is the number of replicas asked, which may be fewer than n_val when the cluster is small: a
    quorum larger than n is legal here and simply fails. Checking r <= n_val is the caller's job (a 400)."""
    if n < 1:
        raise ValueError(f"at least one replica must be asked, got {n}")
    for name, value in quorums.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


class GetQuorum(Generic[Obj]):
    """Counts the replies of one get; merges what was found; decides read repair."""

    def __init__(self, *, n: int, r: int, pr: int = 0, notfound_ok: bool = True, basic_quorum: bool = False,
                 primaries: frozenset = frozenset(), merge: Callable[[Obj, Obj], Obj],
                 is_tombstone: Callable[[Obj], bool]) -> None:
        _validate(n, r=r, pr=pr)
        self.n, self.r, self.pr = n, r, pr
        self.notfound_ok = notfound_ok
        self.fail_threshold = min(n // 2 + 1, n - r + 1) if basic_quorum else n - r + 1
        self.primaries = primaries
        self._merge, self._is_tombstone = merge, is_tombstone
        self.replies: dict[Node, Obj | NotFound | Failed] = {}
        self.num_ok = self.num_primary_ok = self.num_notfound = self.num_failed = 0

    def add_reply(self, node: Node, reply: Obj | NotFound | Failed) -> None:
        if node in self.replies:
            return  # a duplicate delivery changes nothing
        self.replies[node] = reply
        if isinstance(reply, Failed):
            self.num_failed += 1
            return
        if isinstance(reply, NotFound) and not self.notfound_ok:
            self.num_notfound += 1
            return
        self.num_ok += 1
        if node in self.primaries:
            self.num_primary_ok += 1

    def _met(self) -> bool:
        return self.num_ok >= self.r and self.num_primary_ok >= self.pr

    def has_all_replies(self) -> bool:
        return len(self.replies) >= self.n

    def enough(self) -> bool:
        if self._met() or self.has_all_replies():
            return True
        if self.num_notfound + self.num_failed >= self.fail_threshold:
            return True
        # PR can no longer be met by the primaries that have not answered yet.
        primaries_waiting = len(self.primaries - self.replies.keys())
        return self.num_primary_ok + primaries_waiting < self.pr

    def merged(self) -> Obj | None:
        objs = [reply for reply in self.replies.values() if not isinstance(reply, (NotFound, Failed))]
        if not objs:
            return None
        merged = objs[0]
        for obj in objs[1:]:
            merged = self._merge(merged, obj)
        return merged

    def result(self) -> Found[Obj] | NotFound | QuorumFailed:
        """What the client gets; call once `enough()` is true."""
        assert self.enough(), "result() before enough()"
        if self._met():
            merged = self.merged()
            if merged is None:
                return NOT_FOUND
            return Found(merged, self._is_tombstone(merged))
        if self.num_failed == 0 and self.num_ok == 0 and self.num_notfound > 0:
            return NOT_FOUND  # every replica said not-found: the key does not exist
        if self.pr > 0 and (self.num_primary_ok < self.pr) and (self.num_ok >= self.r or self.pr >= self.r):
            return _unsatisfied("PR", self.pr, self.num_primary_ok)
        return _unsatisfied("R", self.r, self.num_ok)

    def final_action(self) -> ReadRepair[Obj] | None:
        """Read repair for every replica that answered not-found or something older than the merge."""
        merged = self.merged()
        if merged is None:
            return None
        stale = tuple(node for node, reply in self.replies.items()
                      if not isinstance(reply, Failed) and (isinstance(reply, NotFound) or reply != merged))
        return ReadRepair(stale, merged) if stale else None


class PutQuorum:
    """Counts the acknowledgements of one put or delete."""

    def __init__(self, *, n: int, w: int, dw: int = 0, pw: int = 0, primaries: frozenset = frozenset()) -> None:
        _validate(n, w=w, dw=dw, pw=pw)
        self.n, self.w, self.dw, self.pw = n, w, dw, pw
        self.primaries = primaries
        self.replies: dict[Node, bool] = {}  # node -> acknowledged
        self.num_acked = self.num_primary_acked = self.num_failed = 0

    def add_reply(self, node: Node, acked: bool) -> None:
        if node in self.replies:
            return
        self.replies[node] = acked
        if not acked:
            self.num_failed += 1
            return
        self.num_acked += 1
        if node in self.primaries:
            self.num_primary_acked += 1

    def _met(self) -> bool:
        return (self.num_acked >= max(self.w, self.dw)) and self.num_primary_acked >= self.pw

    def enough(self) -> bool:
        if self._met() or len(self.replies) >= self.n:
            return True
        waiting = self.n - len(self.replies)
        if self.num_acked + waiting < max(self.w, self.dw):
            return True
        primaries_waiting = len(self.primaries - self.replies.keys())
        return self.num_primary_acked + primaries_waiting < self.pw

    def result(self) -> None | QuorumFailed:
        """None on success, else the unmet quorum; call once `enough()` is true."""
        assert self.enough(), "result() before enough()"
        if self._met():
            return None
        if self.num_primary_acked < self.pw:
            return _unsatisfied("PW", self.pw, self.num_primary_acked)
        if self.num_acked < self.w:
            return _unsatisfied("W", self.w, self.num_acked)
        return _unsatisfied("DW", self.dw, self.num_acked)
