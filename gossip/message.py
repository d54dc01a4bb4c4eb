"""Gossip messages and their wire codec.

Theory of operation: one round is a three-way exchange, as Cassandra's SYN/ACK/ACK2.
- `Syn`: the initiator's digests, one (node, generation, max_version) per member it knows, plus its removal
  tombstones. A digest says what the sender has without sending it.
- `Ack`: the receiver compares digests with its own view and answers with `deltas` (what the initiator
  lacks) and `requests` (digests naming what the receiver lacks: node, generation, the version it already
  has), plus its tombstones.
- `Ack2`: the initiator answers the requests with deltas. A node that exits pushes its last state in an
  `Ack2` to every live member (nothing to answer).
A `Delta` carries one member's heartbeat (its version, and the member's own clock when it beat, which the
failure detector uses) and every application state newer than the version asked for; a version 0 request
yields the full state.

Messages are plain frozen dataclasses of str/int/tuples; `to_wire` turns one into a CBOR-friendly dict
(lists, str keys) and `from_wire` validates and rebuilds it, raising `WireError` (a ValueError) with a
message naming the bad field. Digests are bare tuples, not dataclasses: a 500-node cluster sends a 500-entry
digest list every round and tuples keep that cheap. Application values are opaque CBOR data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Digest = tuple[str, int, int]        # (node, generation, max_version)
Tombstone = tuple[str, int]          # (node, removed generation)
StateEntry = tuple[str, int, Any]    # (key, version, value)

NODE_ID_LENGTH_MAX = 256
ENTRIES_MAX = 1 << 16                 # members, digests or states in one message; guards against garbage
INT_MAX = (1 << 63) - 1


class WireError(ValueError):
    """A gossip message from the wire is malformed."""


@dataclass(frozen=True, slots=True)
class Delta:
    node: str
    generation: int
    heartbeat: int                   # the version at which the node last beat
    beat_ms: int                     # the node's own clock at that beat, ms since it started
    states: tuple[StateEntry, ...]   # every state newer than the version the receiver had


@dataclass(frozen=True, slots=True)
class Syn:
    cluster: str
    digests: tuple[Digest, ...]
    removed: tuple[Tombstone, ...] = ()


@dataclass(frozen=True, slots=True)
class Ack:
    requests: tuple[Digest, ...]
    deltas: tuple[Delta, ...]
    removed: tuple[Tombstone, ...] = ()


@dataclass(frozen=True, slots=True)
class Ack2:
    deltas: tuple[Delta, ...]


Message = Syn | Ack | Ack2

TYPE_SYN, TYPE_ACK, TYPE_ACK2 = "gossip.syn", "gossip.ack", "gossip.ack2"


def to_wire(message: Message) -> dict[str, Any]:
    """A dict of lists, str, int and opaque values that cbor2 can encode."""
    if isinstance(message, Syn):
        return {"t": TYPE_SYN, "c": message.cluster, "d": [list(d) for d in message.digests],
                "r": [list(t) for t in message.removed]}
    if isinstance(message, Ack):
        return {"t": TYPE_ACK, "q": [list(d) for d in message.requests],
                "s": [_delta_to_wire(d) for d in message.deltas], "r": [list(t) for t in message.removed]}
    if isinstance(message, Ack2):
        return {"t": TYPE_ACK2, "s": [_delta_to_wire(d) for d in message.deltas]}
    raise TypeError(f"not a gossip message: {type(message).__name__}")


def from_wire(obj: Any) -> Message:
    """Rebuild a message from `to_wire`'s shape (extra keys such as an RPC frame's "v"/"id" are ignored)."""
    if not isinstance(obj, dict):
        raise WireError(f"gossip message must be a map, got {type(obj).__name__}")
    kind = obj.get("t")
    if kind == TYPE_SYN:
        cluster = obj.get("c")
        if not isinstance(cluster, str):
            raise WireError("syn: cluster 'c' must be a string")
        return Syn(cluster, _digests(obj, "d"), _tombstones(obj))
    if kind == TYPE_ACK:
        return Ack(_digests(obj, "q"), _deltas(obj), _tombstones(obj))
    if kind == TYPE_ACK2:
        return Ack2(_deltas(obj))
    raise WireError(f"unknown gossip message type {kind!r}")


def _delta_to_wire(delta: Delta) -> list[Any]:
    return [delta.node, delta.generation, delta.heartbeat, delta.beat_ms,
            [[k, v, value] for k, v, value in delta.states]]


def _list(obj: dict[str, Any], key: str) -> list[Any]:
    value = obj.get(key)
    if not isinstance(value, list):
        raise WireError(f"field {key!r} must be a list, got {type(value).__name__}")
    if len(value) > ENTRIES_MAX:
        raise WireError(f"field {key!r} has {len(value)} entries, more than {ENTRIES_MAX}")
    return value


def _node(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > NODE_ID_LENGTH_MAX:
        raise WireError(f"{where}: node id must be a non-empty string of at most {NODE_ID_LENGTH_MAX} chars")
    return value


def _count(value: Any, where: str) -> int:
    # bool is an int subclass: refuse it so True never sneaks in as generation 1.
    if type(value) is not int or not 0 <= value <= INT_MAX:
        raise WireError(f"{where}: expected a non-negative integer, got {value!r}")
    return value


def _entry(value: Any, size: int, where: str) -> list[Any]:
    if not isinstance(value, list) or len(value) != size:
        raise WireError(f"{where}: expected a list of {size} items, got {value!r:.80}")
    return value


def _digests(obj: dict[str, Any], key: str) -> tuple[Digest, ...]:
    out = []
    for item in _list(obj, key):
        node, generation, version = _entry(item, 3, f"digest in {key!r}")
        out.append((_node(node, "digest"), _count(generation, "digest generation"),
                    _count(version, "digest version")))
    return tuple(out)


def _tombstones(obj: dict[str, Any]) -> tuple[Tombstone, ...]:
    out = []
    for item in _list(obj, "r"):
        node, generation = _entry(item, 2, "tombstone")
        out.append((_node(node, "tombstone"), _count(generation, "tombstone generation")))
    return tuple(out)


def _deltas(obj: dict[str, Any]) -> tuple[Delta, ...]:
    out = []
    for item in _list(obj, "s"):
        node, generation, heartbeat, beat_ms, states = _entry(item, 5, "delta")
        if not isinstance(states, list) or len(states) > ENTRIES_MAX:
            raise WireError("delta: states must be a list")
        entries = []
        for state in states:
            key, version, value = _entry(state, 3, "state")
            if not isinstance(key, str) or not key:
                raise WireError(f"state key must be a non-empty string, got {key!r:.80}")
            entries.append((key, _count(version, "state version"), value))
        out.append(Delta(_node(node, "delta"), _count(generation, "delta generation"),
                         _count(heartbeat, "delta heartbeat"), _count(beat_ms, "delta beat_ms"), tuple(entries)))
    return tuple(out)
