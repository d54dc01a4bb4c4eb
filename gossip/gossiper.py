"""The gossip core of one node: rounds, message handling, membership changes and the queries a node uses.

Theory of operation
- Sans-IO: `tick(now)` and `handle(src, message, now)` return effects, `Send(to, message)` and
  `MemberEvent(...)`; nothing here reads a clock or touches a socket, and every random choice comes from
  the `random.Random` handed in. Call `tick` at `next_tick_at` (earlier is harmless: nothing is due).
- Every `interval_s` (1 s) a tick beats (bumps the own heartbeat, stamped with our clock) and starts a round
  (a `Syn` of digests) with one random live peer; as Cassandra, also with an unreachable member with
  probability unreachable/(live+1), and with a seed when no seed was picked, with probability
  seeds/(live+unreachable) (always when nothing is live, so a joining node reaches one). It also starts a
  round with up to `probe_fanout` live peers whose freshest beat is older than `probe_after_s`: waiting
  for their beats to come around second hand is what makes detection slow and jumpy. A probe is a full
  round, so it also refreshes whatever else the peer heard lately; that spread is what keeps every age
  short (a light probe that fetched only the peer's own beat was tried: at 20 members under loss its
  worst detection was 6.3 s, against 4.85 s). Up to 64 members the threshold stays `probe_after_s`: a crash is
  convicted within 5 s up to 50 members (`tools.gossipbench`; 5.1 s at 100). Above, it stretches by
  log2(members)/3 - 1 (2.3x at 1000 members), so a node of a big cluster does not send a full digest
  list to three peers every round: a probe of 1000 members is 16 KiB.
- Between rounds, ticks come when a peer's phi may cross the threshold, so a conviction is not late by up
  to a round. A node answering a Syn beats first, so a direct exchange always carries a fresh beat.
- Up/down only steers routing: a conviction marks a peer down (`is_alive` false) and a fresh heartbeat
  marks it up again. Membership changes only by the member itself (join, leave, exit) or by an operator's
  `force_remove`, which leaves a tombstone every view keeps (see membership.py).
- Lifecycle of the local node: joining -> valid -> leaving -> exiting. `exit` pushes the final state to every
  live member and stops the core: an exited or removed node neither ticks nor answers.
- Events (`MemberEvent`) are for logs and for the node's routing caches; the view itself is the truth.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cbor2

from gossip.detector import DetectorConfig, PhiAccrualDetector
from gossip.membership import (ADDRESSES_KEY, BEAT, JOINED_KEY, RESERVED_KEYS, RING_KEY, STATUS_KEY,
                               TRANSITIONS, Member, Merge, MergeKind, Status, View)
from gossip.message import Ack, Ack2, Delta, Message, Syn

EXITING = Status.EXITING.value


class GossipError(ValueError):
    """A caller asked the gossip core for something impossible (bad argument, illegal transition)."""


@dataclass(frozen=True, slots=True)
class GossipConfig:
    cluster: str = "default"
    interval_s: float = 1.0
    probe_after_s: float = 1.5    # a live peer whose freshest beat is older than this gets a direct round
    probe_fanout: int = 3         # at most this many such peers per round
    tick_gap_s: float = 0.05      # conviction ticks between rounds are at least this far apart
    detector: DetectorConfig = field(default_factory=DetectorConfig)

    def __post_init__(self) -> None:
        if min(self.interval_s, self.probe_after_s, self.tick_gap_s) <= 0 or self.probe_fanout < 0:
            raise GossipError("interval_s, probe_after_s and tick_gap_s must be positive, probe_fanout >= 0")


@dataclass(frozen=True, slots=True)
class Send:
    to: str
    message: Message


class EventKind(str, enum.Enum):
    JOINED = "joined"        # first seen in this view
    RESTARTED = "restarted"  # a new generation replaced the old state
    UP = "up"
    DOWN = "down"
    STATUS = "status"        # status changed (joining -> valid, valid -> leaving, ...)
    LEFT = "left"            # status became exiting: gone for good unless it joins again
    REMOVED = "removed"      # an operator removed it (or, for the local node: we were removed)


@dataclass(frozen=True, slots=True)
class MemberEvent:
    kind: EventKind
    node: str
    generation: int
    status: str
    at_s: float


Effect = Send | MemberEvent


def normalise(value: Any) -> Any:
    """What every other view will hold after the wire: CBOR in and out (tuples become lists)."""
    try:
        return cbor2.loads(cbor2.dumps(value))
    except Exception as error:  # cbor2 raises several unrelated types for unencodable values
        raise GossipError(f"application state value is not CBOR-encodable: {error}") from error


class Gossiper:
    def __init__(self, node: str, generation: int, addresses: tuple[str, str], seeds: Iterable[str],
                 rng: random.Random, now: float, *, config: GossipConfig | None = None,
                 status: Status = Status.JOINING, joined_generation: int | None = None,
                 tombstones: Mapping[str, int] | None = None):
        """`generation` must rise at every restart (keep it durably). `joined_generation` is the generation
        in which the node last joined explicitly: omit it on a (re-)join, pass the stored value on a plain
        restart. A node removed by an operator comes back only by joining again with a higher generation.
        `tombstones` are removals known before a restart (keep `tombstones()` durably): a removal issued
        just before a crash is not lost, and a node that knew of its own removal starts stopped."""
        joined = generation if joined_generation is None else joined_generation
        if not isinstance(node, str) or not node:
            raise GossipError("node id must be a non-empty string")
        if type(generation) is not int or type(joined) is not int or not 0 <= joined <= generation or generation < 1:
            raise GossipError(f"need 1 <= generation and 0 <= joined_generation <= generation, got "
                              f"{generation}, {joined}")
        if status not in (Status.JOINING, Status.VALID, Status.LEAVING):
            raise GossipError(f"a node starts joining, valid or leaving, not {status.value}")
        self.node = node
        self.config = config or GossipConfig()
        self.rng = rng
        self.seeds = tuple(s for s in dict.fromkeys(seeds) if s != node)
        self._version = 0
        self._local = Member(node, generation, 0, 0, {}, 0)
        self._started_s = now
        self.view = View(self._local)
        self._stamp(STATUS_KEY, status.value)
        self._stamp(ADDRESSES_KEY, [str(addresses[0]), str(addresses[1])])
        self._stamp(JOINED_KEY, joined)
        for removed_node, removed_generation in (tombstones or {}).items():
            self.view.bury(removed_node, removed_generation)
        self.detector = PhiAccrualDetector(self.config.detector)
        self._down: dict[str, None] = {}   # an ordered set: iteration order must not depend on str hashing
        self._peer_cache: tuple[list[str], list[str]] | None = None
        self.next_tick_at = now
        self._next_round_s = now
        self.stopped = not self.view.admissible(node, joined)
        if self.stopped:
            self._stamp(STATUS_KEY, Status.REMOVED.value)

    # ---- driving -------------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Effect]:
        """Convict peers whose phi crossed the threshold; every `interval_s`, beat and start a round. The
        next tick is the next round or the next possible conviction, whichever is first."""
        if self.stopped or now < self.next_tick_at:
            return []
        effects: list[Effect] = []
        next_conviction_s = self._convict(now, effects)
        if now >= self._next_round_s:
            self._next_round_s = now + self.config.interval_s
            self._stamp_heartbeat(now)
            effects.extend(self._round(now))
        self.next_tick_at = min(self._next_round_s, max(next_conviction_s, now + self.config.tick_gap_s))
        return effects

    def handle(self, src: str, message: Message, now: float) -> list[Effect]:
        if self.stopped:
            return []
        if isinstance(message, Syn):
            if message.cluster != self.config.cluster:
                return []  # another cluster's node: never mix views
            effects = self._bury_all(message.removed, now)
            if self.stopped:
                return effects
            self._stamp_heartbeat(now)  # the initiator beat just before its Syn: answer as fresh
            requests, deltas = self.view.compare(message.digests)
            effects.append(Send(src, Ack(tuple(requests), tuple(deltas), self.view.tombstones())))
            return effects
        if isinstance(message, Ack):
            effects = self._bury_all(message.removed, now)
            if self.stopped:
                return effects
            effects.extend(self._merge_all(message.deltas, now))
            answer = self.view.answer(message.requests)
            if answer:
                effects.append(Send(src, Ack2(tuple(answer))))
            return effects
        if isinstance(message, Ack2):
            return self._merge_all(message.deltas, now)
        raise GossipError(f"not a gossip message: {type(message).__name__}")

    # ---- the local node's changes --------------------------------------------------------------------

    def publish(self, key: str, value: Any) -> None:
        if not isinstance(key, str) or not key or key in RESERVED_KEYS:
            raise GossipError(f"cannot publish under {key!r}: empty or reserved ({sorted(RESERVED_KEYS)})")
        self._stamp(key, normalise(value))

    def publish_ring(self, version: int, value: Any) -> None:
        if type(version) is not int or version < 0:
            raise GossipError(f"ring version must be a non-negative int, got {version!r}")
        self._stamp(RING_KEY, [version, normalise(value)])

    def set_status(self, status: Status) -> None:
        current = self._local.status
        if status is Status.EXITING:
            raise GossipError("use exit(now): exiting also announces and stops the core")
        if status not in TRANSITIONS[current]:
            raise GossipError(f"illegal status change {current.value} -> {status.value}")
        self._stamp(STATUS_KEY, status.value)

    def leave(self) -> None:
        self.set_status(Status.LEAVING)

    def exit(self, now: float) -> list[Effect]:
        """Announce the exit to every live member and stop gossiping."""
        current = self._local.status
        if Status.EXITING not in TRANSITIONS[current]:
            raise GossipError(f"illegal status change {current.value} -> exiting")
        self._stamp(STATUS_KEY, EXITING)
        final = Ack2((self._local.delta(0),))
        effects: list[Effect] = [Send(node, final) for node in self.live_members() if node != self.node]
        effects.append(self._event(EventKind.LEFT, self._local, now))
        self.stopped = True
        return effects

    def force_remove(self, node: str, now: float) -> list[Effect]:
        """Operator removal: tombstone the member's current generation; it spreads with every round."""
        if node == self.node:
            raise GossipError("a node cannot force-remove itself; ask another member")
        member = self.view.get(node)
        if member is None:
            raise GossipError(f"unknown member {node!r}")
        dropped = self.view.bury(node, member.generation)
        assert dropped is member, "a tombstone at the current generation always drops the member"
        return self._forget(dropped, now)

    # ---- queries ------------------------------------------------------------------------------------

    def members(self) -> list[str]:
        """Every member this view holds, us included, up or down, exiting ones too (removed ones not)."""
        return sorted(self.view.members)

    def live_members(self) -> list[str]:
        """Members up and not exiting: the ones to route to and gossip with."""
        return sorted(n for n in self.view.members if self.is_alive(n))

    def is_alive(self, node: str) -> bool:
        member = self.view.get(node)
        if member is None or member.states[STATUS_KEY][1] == EXITING:
            return False
        return (not self.stopped) if node == self.node else node not in self._down

    def status(self, node: str) -> Status | None:
        """The member's status; REMOVED for a node only a tombstone remembers; None if never heard of."""
        member = self.view.get(node)
        if member is not None:
            return member.status
        return Status.REMOVED if node in self.view.removed else None

    def generation(self, node: str) -> int | None:
        member = self.view.get(node)
        return None if member is None else member.generation

    def addresses(self, node: str) -> tuple[str, str] | None:
        member = self.view.get(node)
        return None if member is None else member.addresses

    def app_state(self, node: str, key: str) -> Any:
        """The value `node` published under `key`, or None."""
        member = self.view.get(node)
        held = None if member is None else member.states.get(key)
        return None if held is None else held[1]

    def ring_state(self) -> tuple[int, Any] | None:
        """(ring version, ring value) winning across every member's published ring, or None."""
        return self.view.ring()

    def tombstones(self) -> dict[str, int]:
        """Removed node -> removed generation: what to keep durably and pass back in at restart."""
        return dict(self.view.removed)

    def phi(self, node: str, now: float) -> float | None:
        return self.detector.phi(node, now) if self.detector.tracks(node) else None

    def summary(self) -> tuple:
        """What converged views agree on: members, generations, statuses, application states (not
        heartbeats) and tombstones. A view holds every state of a member up to the newest version it has
        (deltas carry everything newer than what the receiver had), so that version stands for them all."""
        members = tuple(sorted((m.node, m.generation, m.status_value, m.states_version)
                               for m in self.view.members.values()))
        return members, tuple(sorted(self.view.removed.items()))

    # ---- internals ----------------------------------------------------------------------------------

    def _stamp(self, key: str, value: Any) -> None:
        self._version += 1
        self._local.set_state(key, self._version, value)

    def _stamp_heartbeat(self, now: float) -> None:
        self._version += 1
        self._local.beat(self._version, round((now - self._started_s) * 1000))

    def _event(self, kind: EventKind, member: Member, now: float) -> MemberEvent:
        return MemberEvent(kind, member.node, member.generation, member.states[STATUS_KEY][1], now)

    def _convict(self, now: float, effects: list[Effect]) -> float:
        suspects, next_s = self.detector.check(now)
        for node in suspects:
            member = self.view.members[node]  # the detector forgets whoever leaves the view
            if node not in self._down and member.states[STATUS_KEY][1] != EXITING:
                self._down[node] = None
                self._peer_cache = None
                effects.append(self._event(EventKind.DOWN, member, now))
        return next_s

    def _scale(self) -> float:
        """Beats take ~log2(members) rounds to come around: in clusters above 8 members, stretch a new
        peer's bootstrap by log2(members)/3, so big clusters do not convict fresh peers before their
        beats arrive. 5-10 members keep the tight defaults."""
        return max(1.0, math.log2(len(self.view.members)) / 3)

    def _peers(self) -> tuple[list[str], list[str]]:
        """(live, unreachable) gossip targets, cached until a member comes, goes, changes status or
        flips up/down: rebuilding it is O(members) and a round needs it every second."""
        if self._peer_cache is None:
            live, unreachable = [], []
            for node, member in self.view.members.items():
                if node != self.node and member.states[STATUS_KEY][1] != EXITING:
                    (unreachable if node in self._down else live).append(node)
            self._peer_cache = live, unreachable
        return self._peer_cache

    def _round(self, now: float) -> list[Effect]:
        live, unreachable = self._peers()
        rng = self.rng
        targets = [rng.choice(live)] if live else []
        if unreachable and rng.random() < len(unreachable) / (len(live) + 1):
            targets.append(rng.choice(unreachable))
        seeds = [s for s in self.seeds if s not in self.view.removed]
        if seeds and (not targets or targets[0] not in seeds or len(live) < len(seeds)):
            if not live or rng.random() <= len(seeds) / (len(live) + len(unreachable)):
                targets.append(rng.choice(seeds))
        # Probes: rounds directly with the peers whose freshest beat is oldest bound the detector's tail.
        stretch = max(1.0, math.log2(len(self.view.members)) / 3 - 1)  # 1 up to 64 members
        probe_after_s = self.config.probe_after_s * stretch
        targets.extend(self.detector.stale(live, now, probe_after_s, self.config.probe_fanout))
        syn = Syn(self.config.cluster, self.view.digests(), self.view.tombstones())
        return [Send(to, syn) for to in dict.fromkeys(targets)]

    def _merge_all(self, deltas: tuple[Delta, ...], now: float) -> list[Effect]:
        effects: list[Effect] = []
        view, detector, down = self.view, self.detector, self._down
        for delta in deltas:
            merge = view.merge(delta)
            if merge is BEAT:  # most merges: keep this path short
                detector.observe(delta.node, delta.beat_ms / 1000, now)
                if delta.node in down and detector.fresh(delta.node, now):
                    effects.append(self._up(delta.node, now))
                continue
            if merge.kind is not MergeKind.IGNORED:
                effects.extend(self._changed(delta, merge, now))
        return effects

    def _changed(self, delta: Delta, merge: Merge, now: float) -> list[Effect]:
        node = delta.node
        member = self.view.members[node]
        self._peer_cache = None
        effects: list[Effect] = []
        if merge.kind is MergeKind.NEW:
            effects.append(self._event(EventKind.JOINED, member, now))
        elif merge.kind is MergeKind.RESTARTED:
            effects.append(self._event(EventKind.RESTARTED, member, now))
        elif merge.old_status != merge.new_status:
            effects.append(self._event(EventKind.STATUS, member, now))
        if merge.new_status == EXITING:
            self.detector.forget(node)
            self._down.pop(node, None)
            if merge.old_status != EXITING:
                effects.append(self._event(EventKind.LEFT, member, now))
            return effects
        if merge.kind is not MergeKind.UPDATED:
            self.detector.reset(node, delta.beat_ms / 1000, now, self._scale())
        elif merge.beat:
            self.detector.observe(node, delta.beat_ms / 1000, now)
        if merge.beat and node in self._down and self.detector.fresh(node, now):
            effects.append(self._up(node, now))
        return effects

    def _up(self, node: str, now: float) -> MemberEvent:
        del self._down[node]
        self._peer_cache = None
        return self._event(EventKind.UP, self.view.members[node], now)

    def _bury_all(self, tombstones: tuple[tuple[str, int], ...], now: float) -> list[Effect]:
        effects: list[Effect] = []
        for node, generation in tombstones:
            dropped = self.view.bury(node, generation)
            if dropped is not None:
                effects.extend(self._forget(dropped, now))
            elif node == self.node and not self.view.admissible(node, self._local.joined):
                self._stamp(STATUS_KEY, Status.REMOVED.value)  # never gossiped: we stop right here
                self.stopped = True
                effects.append(self._event(EventKind.REMOVED, self._local, now))
                break
        return effects

    def _forget(self, member: Member, now: float) -> list[Effect]:
        self.detector.forget(member.node)
        self._peer_cache = None
        self._down.pop(member.node, None)
        return [self._event(EventKind.REMOVED, member, now)]
