"""Ring changes: the next ring a set of staged joins, leaves and removals makes, and the moves of data
that take the cluster from the current ring to it.

Theory of operation
- Staged changes apply to the committed ring in a fixed order (joins, then leaves and removals, each
  sorted) through the claim (claim.py); the result is the next ring at version current + 1, whatever the
  number of steps. Same inputs, same ring: any node computing it gets the one the claimant published.
- Data lives per key-partition k on k's primaries (preflist.replicas_of_partition). For each k whose
  primaries differ under any n_val in use, every node that gains k gets one Move(k, source, target). The
  source is a current holder of k, preferring one that loses k (a leaver streams its own data away) and
  never a removed node; if no holder is left, the move has no source and counts as done from the start.
- A Transition is (current, next, moves, removed). Routing is per key-partition: k follows `next` once
  every move of k is done, `current` before. While k is not done its gainers are pending replicas: writes
  reach them too, without counting toward W (Cassandra's pending ranges). When every move is done, `next`
  becomes the committed ring.
- The claimant, the one node that computes and publishes a transition, is the smallest member of the
  committed ring that is valid and alive: two operators committing at once cannot fork the ring.
- Transitions travel as plain dicts (CBOR/JSON). Two transitions merge like rings: the higher next
  version wins, then the smaller digest; `from_dict` raises TransitionFormatError on malformed input.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from ring.claim import ClaimError, claim_join, claim_leave
from ring.preflist import replicas_of_partition
from ring.state import Ring, RingFormatError


class TransitionFormatError(ValueError):
    """A transition (or its dict form) that is malformed or does not fit its rings."""


@dataclass(frozen=True, order=True)
class Move:
    partition: int      # the key-partition whose data moves
    source: str | None  # who streams it (None: no live holder left, nothing to copy)
    target: str         # who gains it


MoveId = tuple[int, str]  # (partition, target): what a source reports as handed off


def next_ring(ring: Ring, joins: Iterable[str] = (), leaves: Iterable[str] = (), removes: Iterable[str] = (),
              author: str = "") -> Ring:
    """The ring after the staged changes, at version ring.version + 1 (ClaimError if they make no sense)."""
    joins, departures = sorted(set(joins)), sorted(set(leaves) | set(removes))
    if not joins and not departures:
        raise ClaimError("no staged changes")
    owners, members = ring.owners, list(ring.members)
    for node in joins:
        if node in members:
            raise ClaimError(f"{node} is already a member")
        owners = claim_join(owners, members, node, ring.target_n)
        members = sorted(members + [node])
    for node in departures:
        if node not in members:
            raise ClaimError(f"{node} is not a member")
        if len(members) == 1:
            raise ClaimError("the last member cannot leave")
        owners = claim_leave(owners, members, node, ring.target_n)
        members.remove(node)
    return Ring(ring.partitions, tuple(owners), ring.version + 1, ring.target_n, tuple(members), author)


def plan_moves(current: Ring, next_: Ring, n_vals: Collection[int], removed: Collection[str] = ()) -> tuple[Move, ...]:
    """Every Move from `current` to `next_`, sorted, for data replicated with any of `n_vals`."""
    if current.partitions != next_.partitions:
        raise TransitionFormatError(f"rings differ in partition count: {current.partitions} vs {next_.partitions}")
    if not n_vals or min(n_vals) < 1:
        raise ValueError(f"n_vals must hold positive ints, got {sorted(n_vals)!r}")
    n_max = max(n_vals)
    moves = []
    for k in range(current.partitions):
        before = {n: replicas_of_partition(current, k, n) for n in n_vals}
        after = {n: replicas_of_partition(next_, k, n) for n in n_vals}
        gained = sorted({node for n in n_vals for node in after[n] if node not in before[n]})
        if not gained:
            continue
        holders = [node for node in replicas_of_partition(current, k, n_max) if node not in removed]
        losers = [node for node in holders if node not in replicas_of_partition(next_, k, n_max)]
        for target in gained:
            sources = [node for node in losers + holders if node != target]
            moves.append(Move(k, sources[0] if sources else None, target))
    return tuple(moves)


def claimant(ring: Ring, valid_alive: Set[str]) -> str | None:
    """The member that computes the next ring: the smallest valid, alive member of `ring` (None: none)."""
    return min((node for node in ring.members if node in valid_alive), default=None)


@dataclass(frozen=True)
class Transition:
    current: Ring
    next: Ring
    moves: tuple[Move, ...]
    removed: tuple[str, ...] = ()
    _by_partition: dict[int, tuple[Move, ...]] = field(default_factory=dict, init=False, repr=False,
                                                       compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.next.version <= self.current.version:
            raise TransitionFormatError(f"next ring v{self.next.version} is not newer than v{self.current.version}")
        if self.next.partitions != self.current.partitions or self.next.target_n != self.current.target_n:
            raise TransitionFormatError("current and next rings differ in partitions or target_n")
        by_partition: dict[int, list[Move]] = {}
        for move in self.moves:
            if not 0 <= move.partition < self.current.partitions or move.target not in self.next.members:
                raise TransitionFormatError(f"bad move {move}")
            by_partition.setdefault(move.partition, []).append(move)
        object.__setattr__(self, "_by_partition", {k: tuple(v) for k, v in by_partition.items()})

    @classmethod
    def plan(cls, current: Ring, next_: Ring, n_vals: Collection[int], removed: Iterable[str] = ()) -> Transition:
        removed = tuple(sorted(set(removed)))
        return cls(current, next_, plan_moves(current, next_, n_vals, removed), removed)

    @property
    def version(self) -> int:
        return self.next.version

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every node either ring names, sorted."""
        return tuple(sorted(set(self.current.members) | set(self.next.members)))

    def moves_of(self, partition: int) -> tuple[Move, ...]:
        return self._by_partition.get(partition, ())

    def move_done(self, move: Move, done: Set[MoveId]) -> bool:
        return move.source is None or (move.partition, move.target) in done

    def partition_done(self, partition: int, done: Set[MoveId]) -> bool:
        return all(self.move_done(move, done) for move in self.moves_of(partition))

    def complete(self, done: Set[MoveId]) -> bool:
        return all(self.move_done(move, done) for move in self.moves)

    def ring_for(self, partition: int, done: Set[MoveId]) -> Ring:
        """The ring that routes `partition` now."""
        return self.next if self.partition_done(partition, done) else self.current

    def pending(self, partition: int, n_val: int, done: Set[MoveId]) -> tuple[str, ...]:
        """Nodes that will hold `partition` with `n_val` replicas but do not yet: writes go to them too."""
        if self.partition_done(partition, done):
            return ()
        before = replicas_of_partition(self.current, partition, n_val)
        return tuple(node for node in replicas_of_partition(self.next, partition, n_val) if node not in before)

    def to_dict(self) -> dict[str, Any]:
        return {"current": self.current.to_dict(), "next": self.next.to_dict(), "removed": list(self.removed),
                "moves": [[m.partition, m.source, m.target] for m in self.moves]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Transition:
        try:
            if not isinstance(data, Mapping) or set(data) != {"current", "next", "removed", "moves"}:
                raise TransitionFormatError("a transition is a mapping of current, next, removed and moves")
            moves = tuple(_move(raw) for raw in data["moves"])
            removed = tuple(data["removed"])
            if not all(isinstance(node, str) for node in removed):
                raise TransitionFormatError("removed must be node ids")
            return cls(Ring.from_dict(data["current"]), Ring.from_dict(data["next"]), moves, removed)
        except (RingFormatError, TypeError) as error:
            raise TransitionFormatError(f"bad transition: {error}") from None

    def digest(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _move(raw: Any) -> Move:
    if not isinstance(raw, (list, tuple)) or len(raw) != 3:
        raise TransitionFormatError(f"a move is [partition, source, target], got {raw!r}")
    partition, source, target = raw
    if type(partition) is not int or not isinstance(target, str) or not (source is None or isinstance(source, str)):
        raise TransitionFormatError(f"a move is [partition, source, target], got {raw!r}")
    return Move(partition, source, target)


def merge_transitions(a: Transition | None, b: Transition | None) -> Transition | None:
    """The transition every node settles on: the higher next version, then the smaller digest."""
    if a is None or b is None:
        return a or b
    if a.version != b.version:
        return a if a.version > b.version else b
    if a == b:
        return a
    return a if a.digest() < b.digest() else b
