"""The ring as a value: who owns each partition, at which version, and how two rings merge.

Theory of operation
- A Ring is immutable. `with_join` / `with_leave` run the claim (claim.py) and return a new Ring with
  version + 1 and `author` = the node that made the change. Members may own no partition (S > Q).
- Versions totally order a cluster's rings: `merge(a, b)` keeps the higher version; for equal versions
  with different content it keeps the one with the smaller `digest()` (SHA-256 of a canonical JSON
  encoding of every field). So merge is the maximum under one total order on (version, digest) and is
  commutative, associative and idempotent; every node that has seen the same rings picks the same one.
  Merging rings of different partition counts or target_n is a configuration error (ValueError).
- `to_dict()` uses plain types only (ints, strs, lists), fit for CBOR or JSON; owners travel as indices
  into the sorted member list. `from_dict` checks every field and raises RingFormatError (a ValueError)
  on anything malformed; it does not re-run the claim, so a ring made by another claim version loads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ring.claim import claim_join, claim_leave, initial_claim
from ring.hashing import PARTITIONS_DEFAULT, check_partitions
from ring.spacing import TARGET_N_DEFAULT, check_target_n

FORMAT = 1
FIELDS = frozenset({"format", "partitions", "target_n", "version", "author", "members", "owners"})


class RingFormatError(ValueError):
    """A ring (or its dict form) that breaks the ring's invariants."""


@dataclass(frozen=True)
class Ring:
    partitions: int
    owners: tuple[str, ...]
    version: int
    target_n: int = TARGET_N_DEFAULT
    members: tuple[str, ...] = ()
    author: str = ""
    _positions: dict[str, tuple[int, ...]] = field(default_factory=dict, init=False, repr=False,
                                                   compare=False, hash=False)

    def __post_init__(self) -> None:
        _check(self)
        members = self.members or tuple(sorted(set(self.owners)))
        object.__setattr__(self, "members", members)
        positions: dict[str, list[int]] = {node: [] for node in members}
        for partition, node in enumerate(self.owners):
            positions[node].append(partition)
        object.__setattr__(self, "_positions", {node: tuple(found) for node, found in positions.items()})

    @classmethod
    def initial(cls, nodes: Iterable[str], partitions: int = PARTITIONS_DEFAULT,
                target_n: int = TARGET_N_DEFAULT, author: str = "") -> Ring:
        nodes = list(nodes)
        owners = initial_claim(nodes, partitions, target_n)
        return cls(partitions, owners, 1, target_n, tuple(sorted(nodes)), author)

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every member, sorted, including members that own no partition."""
        return self.members

    def owner(self, partition: int) -> str:
        if not 0 <= partition < self.partitions:
            raise IndexError(f"partition {partition} outside [0, {self.partitions})")
        return self.owners[partition]

    def partitions_of(self, node: str) -> tuple[int, ...]:
        """The partitions `node` owns, ascending (empty for a member owning none or a stranger)."""
        return self._positions.get(node, ())

    def with_join(self, node: str, author: str | None = None) -> Ring:
        owners = claim_join(self.owners, self.members, node, self.target_n)
        members = tuple(sorted(self.members + (node,)))
        return Ring(self.partitions, owners, self.version + 1, self.target_n, members, author or node)

    def with_leave(self, node: str, author: str | None = None) -> Ring:
        owners = claim_leave(self.owners, self.members, node, self.target_n)
        members = tuple(member for member in self.members if member != node)
        return Ring(self.partitions, owners, self.version + 1, self.target_n, members, author or node)

    def to_dict(self) -> dict[str, Any]:
        index = {node: number for number, node in enumerate(self.members)}
        return {"format": FORMAT, "partitions": self.partitions, "target_n": self.target_n,
                "version": self.version, "author": self.author, "members": list(self.members),
                "owners": [index[node] for node in self.owners]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ring:
        if not isinstance(data, Mapping):
            raise RingFormatError(f"a ring is a mapping, got {type(data).__name__}")
        if set(data) != FIELDS:
            raise RingFormatError(f"ring fields must be {sorted(FIELDS)}, got {sorted(map(str, data))}")
        if data["format"] != FORMAT or isinstance(data["format"], bool):
            raise RingFormatError(f"unknown ring format {data['format']!r}")
        members, indices = data["members"], data["owners"]
        if not isinstance(members, list) or not isinstance(indices, list):
            raise RingFormatError("members and owners must be lists")
        if not all(_is_int(i) and 0 <= i < len(members) for i in indices):
            raise RingFormatError("owners must be indices into members")
        if not all(isinstance(node, str) for node in members):
            raise RingFormatError("members must be strings")
        return cls(data["partitions"], tuple(members[i] for i in indices), data["version"],
                   data["target_n"], tuple(members), data["author"])

    def digest(self) -> str:
        """SHA-256 (hex) of a canonical encoding of every field: the tie-breaker for equal versions."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def merge(a: Ring, b: Ring) -> Ring:
    """The ring every node settles on: higher version, then smaller digest."""
    if a.partitions != b.partitions or a.target_n != b.target_n:
        raise RingFormatError(f"cannot merge rings of {a.partitions}/{a.target_n} and "
                              f"{b.partitions}/{b.target_n} partitions/target_n")
    if a.version != b.version:
        return a if a.version > b.version else b
    if a == b:
        return a
    return a if a.digest() < b.digest() else b


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(ring: Ring) -> None:
    """Structural invariants; raise RingFormatError (a ValueError) naming the first one broken."""
    try:
        check_partitions(ring.partitions)
        check_target_n(ring.target_n)
    except ValueError as error:
        raise RingFormatError(str(error)) from None
    if not _is_int(ring.version) or ring.version < 0:
        raise RingFormatError(f"version must be an int >= 0, got {ring.version!r}")
    if not isinstance(ring.author, str):
        raise RingFormatError(f"author must be a string, got {ring.author!r}")
    if not isinstance(ring.owners, tuple) or len(ring.owners) != ring.partitions:
        raise RingFormatError(f"owners must be a tuple of {ring.partitions} node ids")
    if not isinstance(ring.members, tuple):
        raise RingFormatError("members must be a tuple")
    for node in ring.members + ring.owners:
        if not isinstance(node, str) or not node:
            raise RingFormatError(f"node ids are non-empty strings, got {node!r}")
    if ring.members:
        if list(ring.members) != sorted(set(ring.members)):
            raise RingFormatError("members must be sorted and unique")
        stray = set(ring.owners) - set(ring.members)
        if stray:
            raise RingFormatError(f"owners not among members: {sorted(stray)}")
