"""Bucket properties: per-bucket replication and conflict settings, spread cluster-wide by gossip.

Theory of operation
- `BucketProps` holds what a request needs: n_val, allow_mult, last_write_wins, the default quorums
  (r w dw rw pr pw: an integer or one|quorum|all) and the flags notfound_ok and basic_quorum. A bucket
  nobody configured has the node's defaults (from its config).
- `props_from_json` applies a client's `{"props": {...}}` on top of the current properties and validates
  every known name (BadProps, a ValueError, becomes a 400). Names Riak has but we do not use (linkfun,
  chash_keyfun, ...) are ignored, as a client may send back everything it read.
- `BucketRegistry` keeps bucket -> (props, stamp, node). A change is stamped with max(now_us, last + 1);
  merges keep the highest (stamp, node), so every node that has heard the same entries agrees, whatever
  order they came in (the props themselves break a tie no honest node makes). The registry travels as
  one gossip application state ("buckets"), a list of [bucket, props, stamp, node]; every node
  republishes what it merged, so a change outlives its author.
- allow_mult=false keeps one value per key (the newest sibling wins when a write or a read finds several);
  last_write_wins=true also ignores causality on writes. Both true is refused as contradictory wording.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

N_VAL_MAX = 16
QUORUM_NAMES = ("r", "w", "dw", "rw", "pr", "pw")
QUORUM_MIN = {"r": 1, "w": 1, "rw": 1, "dw": 0, "pr": 0, "pw": 0}
SYMBOLS = ("one", "quorum", "all")
FLAG_NAMES = ("allow_mult", "last_write_wins", "notfound_ok", "basic_quorum")


class BadProps(ValueError):
    """Bucket properties a client sent that we cannot accept; `message` is one line for a 400."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclasses.dataclass(frozen=True)
class BucketProps:
    n_val: int = 3
    allow_mult: bool = True
    last_write_wins: bool = False
    r: int | str = "quorum"
    w: int | str = "quorum"
    dw: int | str = "quorum"
    rw: int | str = "quorum"
    pr: int | str = 0
    pw: int | str = 0
    notfound_ok: bool = True
    basic_quorum: bool = False

    def __post_init__(self) -> None:
        check_props(self)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_quorum(name: str, value: Any, n_val: int) -> None:
    if isinstance(value, str):
        if value not in SYMBOLS:
            raise BadProps(f"{name} must be an integer or one|quorum|all, got {value!r:.40}")
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadProps(f"{name} must be an integer or one|quorum|all, got {value!r:.40}")
    if not QUORUM_MIN[name] <= value <= n_val:
        raise BadProps(f"{name} must be in {QUORUM_MIN[name]}..n_val ({n_val}), got {value}")


def check_props(props: BucketProps) -> None:
    n_val = props.n_val
    if isinstance(n_val, bool) or not isinstance(n_val, int) or not 1 <= n_val <= N_VAL_MAX:
        raise BadProps(f"n_val must be an integer in 1..{N_VAL_MAX}, got {n_val!r:.40}")
    for name in FLAG_NAMES:
        if not isinstance(getattr(props, name), bool):
            raise BadProps(f"{name} must be true or false, got {getattr(props, name)!r:.40}")
    for name in QUORUM_NAMES:
        _check_quorum(name, getattr(props, name), n_val)
    if props.allow_mult and props.last_write_wins:
        raise BadProps("allow_mult and last_write_wins cannot both be true")


def props_from_json(body: Any, current: BucketProps) -> BucketProps:
    """New properties: `current` with the client's {"props": {...}} applied. Raises BadProps."""
    if not isinstance(body, Mapping) or not isinstance(body.get("props"), Mapping):
        raise BadProps('expected a JSON object {"props": {...}}')
    changes = {name: value for name, value in body["props"].items() if name in _FIELDS}
    if changes.get("last_write_wins") is True and "allow_mult" not in changes:
        changes["allow_mult"] = False  # asking for lww alone means it: siblings off
    try:
        return dataclasses.replace(current, **changes)
    except BadProps:
        raise
    except (TypeError, ValueError) as error:
        raise BadProps(f"invalid bucket properties: {error}") from None


def props_from_wire(raw: Any) -> BucketProps:
    """Properties from gossip (a full dict); ValueError if malformed."""
    if not isinstance(raw, Mapping) or set(raw) != _FIELDS:
        raise ValueError(f"bucket properties must have exactly {sorted(_FIELDS)}")
    return BucketProps(**raw)


_FIELDS = frozenset(field.name for field in dataclasses.fields(BucketProps))


@dataclasses.dataclass(frozen=True)
class BucketEntry:
    props: BucketProps
    stamp: int
    node: str

    def rank(self) -> tuple[int, str, tuple]:
        # The props come last only so that the order is total, whatever a confused node stamps.
        return self.stamp, self.node, tuple(sorted((name, repr(v)) for name, v in self.props.to_json().items()))


class BucketRegistry:
    """bucket -> its properties (the defaults when unset), merged from every node's gossip."""

    def __init__(self, defaults: BucketProps, node: str) -> None:
        self.defaults = defaults
        self.node = node
        self._entries: dict[bytes, BucketEntry] = {}
        self.version = 0  # bumped on every change, so a publisher knows when to republish

    def get(self, bucket: bytes) -> BucketProps:
        entry = self._entries.get(bucket)
        return self.defaults if entry is None else entry.props

    def is_set(self, bucket: bytes) -> bool:
        return bucket in self._entries

    def set(self, bucket: bytes, props: BucketProps, now_us: int) -> BucketEntry:
        """A local change, stamped after anything this registry has seen for the bucket."""
        old = self._entries.get(bucket)
        stamp = max(now_us, old.stamp + 1 if old is not None else 0)
        entry = BucketEntry(props, stamp, self.node)
        self._entries[bucket] = entry
        self.version += 1
        return entry

    def merge(self, bucket: bytes, entry: BucketEntry) -> bool:
        """Keep the entry of highest rank; True if `entry` replaced what we had."""
        old = self._entries.get(bucket)
        if old is not None and old.rank() >= entry.rank():
            return False
        self._entries[bucket] = entry
        self.version += 1
        return True

    def merge_wire(self, raw: Any) -> int:
        """Merge a gossiped list of [bucket, props, stamp, node]; malformed items are skipped."""
        changed = 0
        if not isinstance(raw, list):
            return 0
        for item in raw:
            try:
                bucket, props, stamp, node = item
                if type(bucket) is not bytes or type(stamp) is not int or not isinstance(node, str):
                    continue
                changed += self.merge(bucket, BucketEntry(props_from_wire(props), stamp, node))
            except (TypeError, ValueError):
                continue
        return changed

    def to_wire(self) -> list[list[Any]]:
        return [[bucket, entry.props.to_json(), entry.stamp, entry.node]
                for bucket, entry in sorted(self._entries.items())]

    def items(self) -> Iterable[tuple[bytes, BucketEntry]]:
        return sorted(self._entries.items())
