"""The membership view: what one node believes about every member, and the rules that merge gossip into it.

Theory of operation
- A member's state belongs to its author, the member itself. It is a generation (raised by the member at
  every restart), a heartbeat and application states `key -> (version, value)`. Status, addresses and the
  join generation are application states under reserved keys, so they travel like any other state. The
  author stamps every change with the next number of one per-incarnation counter (heartbeats too), so
  "everything newer than version v" is a complete delta and (node, generation, max_version) a digest.
- Merge rules, per member: a higher generation replaces the whole state (a restart); a lower one is
  ignored; the same generation keeps, per key, the higher version. A new incarnation is only taken whole:
  it must carry status, addresses and join generation.
- Removal: an operator's `force_remove` leaves a tombstone (node, generation at removal). Tombstones merge by
  max and never expire. An incarnation is admissible only if its join generation (the generation in which
  it last joined explicitly) is above the tombstone: a stale message, or a restart without a re-join, can
  never bring a removed node back; a restart that joins again (joined = its new generation) can.
- The local member is in the view too (digests and deltas are uniform) but merges never touch it: only
  the local node writes its own state.
- The ring rides as the application state "ring" = [ring_version, value]. The winner across the view is the
  highest ring version; ties go to the lowest digest of the value's canonical CBOR, so every view that
  holds the same states picks the same ring.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import Any

import cbor2

from gossip.message import Delta, Digest

STATUS_KEY, ADDRESSES_KEY, JOINED_KEY, RING_KEY = "status", "addresses", "joined", "ring"
RESERVED_KEYS = frozenset({STATUS_KEY, ADDRESSES_KEY, JOINED_KEY, RING_KEY})
NO_TOMBSTONE = -1


class Status(str, enum.Enum):
    JOINING = "joining"
    VALID = "valid"
    LEAVING = "leaving"
    EXITING = "exiting"
    REMOVED = "removed"   # only ever the local node's own verdict: others drop a removed member


# Which statuses a node may move itself to (REMOVED is the operator's, through a tombstone).
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.JOINING: frozenset({Status.VALID, Status.LEAVING, Status.EXITING}),
    Status.VALID: frozenset({Status.LEAVING}),
    Status.LEAVING: frozenset({Status.VALID, Status.EXITING}),
    Status.EXITING: frozenset(),
    Status.REMOVED: frozenset(),
}
GOSSIPED_STATUSES = frozenset(s.value for s in Status if s is not Status.REMOVED)


def ring_digest(value: Any) -> bytes:
    """Deterministic tie-breaker for two rings of the same version."""
    return hashlib.blake2b(cbor2.dumps(value, canonical=True), digest_size=16).digest()


def _is_status(value: Any) -> bool:
    return isinstance(value, str) and value in GOSSIPED_STATUSES


def _is_addresses(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(a, str) for a in value)


def _is_joined(value: Any) -> bool:
    return type(value) is int and value >= 0


def _is_ring(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and type(value[0]) is int and value[0] >= 0


# Reserved states from the wire must have the shape the view relies on; other keys are opaque.
VALIDATORS = {STATUS_KEY: _is_status, ADDRESSES_KEY: _is_addresses, JOINED_KEY: _is_joined, RING_KEY: _is_ring}


def valid_state(key: str, value: Any) -> bool:
    check = VALIDATORS.get(key)
    return check is None or check(value)


@dataclass(slots=True)
class Member:
    node: str
    generation: int
    heartbeat: int                    # version of the last beat
    beat_ms: int                      # the member's clock at that beat
    states: dict[str, tuple[int, Any]]
    max_version: int                  # max(heartbeat, states_version): what a digest announces
    states_version: int = 0           # the newest application state's version
    beat_delta: Delta | None = None   # cached heartbeat-only delta: most deltas in a busy round are one

    @property
    def status(self) -> Status:
        return Status(self.states[STATUS_KEY][1])

    @property
    def status_value(self) -> str:
        return self.states[STATUS_KEY][1]

    @property
    def joined(self) -> int:
        return self.states[JOINED_KEY][1]

    @property
    def addresses(self) -> tuple[str, str]:
        rpc, http = self.states[ADDRESSES_KEY][1]
        return rpc, http

    def set_state(self, key: str, version: int, value: Any) -> None:
        self.states[key] = (version, value)
        if version > self.states_version:
            self.states_version = version
            if version > self.max_version:
                self.max_version = version

    def beat(self, version: int, beat_ms: int) -> None:
        self.heartbeat = version
        self.beat_ms = beat_ms
        if version > self.max_version:
            self.max_version = version

    def delta(self, after_version: int) -> Delta:
        if after_version >= self.states_version:
            cached = self.beat_delta
            if cached is None or cached.heartbeat != self.heartbeat:
                cached = self.beat_delta = Delta(self.node, self.generation, self.heartbeat, self.beat_ms, ())
            return cached
        states = tuple((k, v, value) for k, (v, value) in self.states.items() if v > after_version)
        return Delta(self.node, self.generation, self.heartbeat, self.beat_ms, states)


class MergeKind(enum.Enum):
    IGNORED = "ignored"
    NEW = "new"              # first incarnation this view has seen of the node
    RESTARTED = "restarted"  # a higher generation replaced the old state
    UPDATED = "updated"      # same generation, something newer


@dataclass(frozen=True, slots=True)
class Merge:
    kind: MergeKind
    beat: bool                    # the heartbeat advanced (always true for NEW/RESTARTED)
    old_status: str | None        # status values, None when the merge did not look at them
    new_status: str | None


IGNORED = Merge(MergeKind.IGNORED, False, None, None)
BEAT = Merge(MergeKind.UPDATED, True, None, None)   # the common case: a newer heartbeat, nothing else


class View:
    """Every member one node knows, plus removal tombstones. Iteration orders are insertion orders, so a
    seeded run is reproducible."""

    def __init__(self, local: Member):
        self.local = local.node
        self.members: dict[str, Member] = {local.node: local}
        self.removed: dict[str, int] = {}

    def get(self, node: str) -> Member | None:
        return self.members.get(node)

    def admissible(self, node: str, joined: int) -> bool:
        return joined > self.removed.get(node, NO_TOMBSTONE)

    def digests(self) -> tuple[Digest, ...]:
        return tuple((m.node, m.generation, m.max_version) for m in self.members.values())

    def tombstones(self) -> tuple[tuple[str, int], ...]:
        return tuple(self.removed.items())

    def bury(self, node: str, generation: int) -> Member | None:
        """Record a tombstone; drop the member if it no longer is admissible. Returns the dropped member."""
        if generation <= self.removed.get(node, NO_TOMBSTONE):
            return None
        self.removed[node] = generation
        member = self.members.get(node)
        if member is None or node == self.local or self.admissible(node, member.joined):
            return None
        del self.members[node]
        return member

    def merge(self, delta: Delta) -> Merge:
        member = self.members.get(delta.node)
        if member is None or delta.generation > member.generation:
            return IGNORED if delta.node == self.local else self._replace(delta, member)
        if delta.generation < member.generation or delta.node == self.local:
            return IGNORED
        if not delta.states:  # fast path: a heartbeat, or nothing new
            if delta.heartbeat <= member.heartbeat:
                return IGNORED
            member.beat(delta.heartbeat, delta.beat_ms)
            return BEAT
        return self._update(member, delta)

    def _replace(self, delta: Delta, current: Member | None) -> Merge:
        states = {k: (v, value) for k, v, value in delta.states if valid_state(k, value)}
        if not {STATUS_KEY, ADDRESSES_KEY, JOINED_KEY} <= states.keys():
            return IGNORED  # a partial state of an unknown incarnation: it is asked for in full next round
        joined = states[JOINED_KEY][1]
        if joined > delta.generation or not self.admissible(delta.node, joined):
            return IGNORED
        top = max(v for v, _ in states.values())
        member = Member(delta.node, delta.generation, delta.heartbeat, delta.beat_ms, states,
                        max(top, delta.heartbeat), top)
        self.members[delta.node] = member
        kind = MergeKind.NEW if current is None else MergeKind.RESTARTED
        return Merge(kind, True, None if current is None else current.status_value, member.status_value)

    def _update(self, member: Member, delta: Delta) -> Merge:
        old_status = member.status_value
        beat = delta.heartbeat > member.heartbeat
        if beat:
            member.beat(delta.heartbeat, delta.beat_ms)
        states = member.states
        for key, version, value in delta.states:
            have = states.get(key)
            if (have is None or version > have[0]) and valid_state(key, value):
                member.set_state(key, version, value)
        return Merge(MergeKind.UPDATED, beat, old_status, member.status_value)

    def compare(self, digests: tuple[Digest, ...]) -> tuple[list[Digest], list[Delta]]:
        """The SYN receiver's work: what to ask for, and what the initiator lacks (including members it
        did not list at all)."""
        requests: list[Digest] = []
        deltas: list[Delta] = []
        members, removed, local = self.members, self.removed, self.local
        known = 0  # listed members we know too: if all of ours are listed, there is nothing more to push
        for node, generation, version in digests:
            member = members.get(node)
            if member is None:
                if generation > removed.get(node, NO_TOMBSTONE):
                    requests.append((node, generation, 0))
                continue
            known += 1
            if generation == member.generation:
                if version < member.max_version:
                    deltas.append(member.delta(version))
                elif version > member.max_version and node != local:
                    requests.append((node, generation, member.max_version))
            elif generation < member.generation:
                deltas.append(member.delta(0))
            elif node != local:
                requests.append((node, generation, 0))
        if known < len(members):  # (a digest list with duplicates only makes us push less this round)
            listed = {digest[0] for digest in digests}
            deltas.extend(m.delta(0) for node, m in members.items() if node not in listed)
        return requests, deltas

    def answer(self, requests: tuple[Digest, ...]) -> list[Delta]:
        """The initiator's ACK2: deltas for what the receiver asked."""
        deltas = []
        for node, generation, version in requests:
            member = self.members.get(node)
            if member is None or member.generation < generation:
                continue
            deltas.append(member.delta(version if member.generation == generation else 0))
        return deltas

    def ring(self) -> tuple[int, Any] | None:
        best: list[tuple[int, Any]] = []
        for member in self.members.values():
            held = member.states.get(RING_KEY)
            if held is None:
                continue
            version, value = held[1]
            if not best or version > best[0][0]:
                best = [(version, value)]
            elif version == best[0][0]:
                best.append((version, value))
        if not best:
            return None
        if len(best) == 1:
            return best[0][0], best[0][1]
        version, value = min(best, key=lambda ring: ring_digest(ring[1]))
        return version, value
