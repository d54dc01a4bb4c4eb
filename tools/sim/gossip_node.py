"""A simulated gossip node: the adapter between `gossip.Gossiper` and the world, plus view checkers.

Theory of operation
- Durable state (the world keeps it across crashes): the generation counter, raised at every start; the
  join generation; the last status the node chose; the removal tombstones it knows; the ring and states it
  published, republished at start as a real node reloads them.
- `durable["rejoin"] = True` makes the next start an explicit re-join (new join generation), the only way
  back after an operator's removal. A node that exited joins again when restarted; one that was removed
  comes back stopped (its durable tombstones name it) or, if it never heard, as a stale member that
  learns its tombstone at the first exchange and stops.
- The first round comes at a random phase within the first interval: real nodes never start in lockstep.
- `wire=True` sends every message as CBOR bytes of `to_wire` and decodes with `from_wire`, so the codec is
  exercised and the world can count bytes (`sizer=len`).
- `auto_valid` stands in for the ring layer: a joining node turns valid once it has heard of another member.
- Checkers compare `Gossiper.summary()` across the running nodes: equal summaries mean equal views.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import cbor2

from gossip.gossiper import GossipConfig, Gossiper, MemberEvent, Send as GossipSend
from gossip.membership import Status
from gossip.message import Ack2, from_wire, to_wire
from tools.sim.process import Action, Note, Send, Timer
from tools.sim.world import World


@dataclass(frozen=True, slots=True)
class GossipNodeConfig:
    seeds: tuple[str, ...]
    gossip: GossipConfig = field(default_factory=GossipConfig)
    wire: bool = False
    auto_valid: bool = True
    notes: bool = True       # log every member event (turn off for 500-node runs)


class GossipProcess:
    def __init__(self, node: str, durable: dict[str, Any], rng: random.Random, config: GossipNodeConfig):
        self.node = node
        self.durable = durable
        self.rng = rng
        self.config = config
        self.gossiper: Gossiper | None = None
        self.events: list[MemberEvent] = []
        self._armed_at: float | None = None

    # ---- the Process protocol -----------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        durable = self.durable
        generation = durable.get("generation", 0) + 1
        durable["generation"] = generation
        if durable.pop("rejoin", False) or durable.get("status") in (None, "exiting"):
            durable["joined"] = generation
            durable["status"] = Status.JOINING.value
        elif durable["status"] == Status.REMOVED.value:
            durable["status"] = Status.VALID.value  # what it believed before it learned of its removal
        self.gossiper = Gossiper(self.node, generation, (f"{self.node}/rpc", f"{self.node}/http"),
                                 self.config.seeds, self.rng, now, config=self.config.gossip,
                                 status=Status(durable["status"]), joined_generation=durable["joined"],
                                 tombstones=durable.get("tombstones"))
        if "ring" in durable:
            self.gossiper.publish_ring(*durable["ring"])
        for key, value in durable.get("published", {}).items():
            self.gossiper.publish(key, value)
        # The first round at a random phase within an interval, as real nodes never start in lockstep.
        self._armed_at = now + self.rng.uniform(0.0, self.config.gossip.interval_s)
        return self._actions([]) + [Timer("tick", self._armed_at)]

    def deliver(self, src: str, message: Any, now: float) -> list[Action]:
        if self.config.wire:
            message = from_wire(cbor2.loads(message))
        return self.handle(src, message, now)

    def handle(self, src: str, message: Any, now: float) -> list[Action]:
        """A decoded gossip message, e.g. one a test builds."""
        return self._actions(self.gossiper.handle(src, message, now))

    def fire(self, name: str, now: float) -> list[Action]:
        self._armed_at = None
        return self._actions(self.gossiper.tick(now))

    # ---- operations a test performs through `act` ---------------------------------------------------

    def publish_ring(self, version: int, value: Any) -> None:
        self.durable["ring"] = (version, value)
        self.gossiper.publish_ring(version, value)

    def publish(self, key: str, value: Any) -> None:
        self.durable.setdefault("published", {})[key] = value
        self.gossiper.publish(key, value)

    def leave(self) -> None:
        self.gossiper.leave()
        self.durable["status"] = Status.LEAVING.value

    def exit(self, now: float) -> list[Action]:
        return self._actions(self.gossiper.exit(now))

    def force_remove(self, node: str, now: float) -> list[Action]:
        return self._actions(self.gossiper.force_remove(node, now))

    # ---- internals ----------------------------------------------------------------------------------

    def _actions(self, effects: list) -> list[Action]:
        gossiper, actions = self.gossiper, []
        for effect in effects:
            if isinstance(effect, GossipSend):
                message = cbor2.dumps(to_wire(effect.message)) if self.config.wire else effect.message
                actions.append(Send(effect.to, message))
            else:
                self.events.append(effect)
                if self.config.notes:
                    actions.append(Note(f"{effect.kind.value} {effect.node} gen={effect.generation} "
                                        f"status={effect.status}"))
        if gossiper.view.removed != self.durable.get("tombstones", {}):  # (few entries: cheap)
            self.durable["tombstones"] = gossiper.tombstones()
        local_status = gossiper.status(self.node)
        if self.config.auto_valid and local_status is Status.JOINING and len(gossiper.view.members) > 1:
            gossiper.set_status(Status.VALID)
            local_status = Status.VALID
        self.durable["status"] = local_status.value
        if not gossiper.stopped and self._armed_at is None:
            self._armed_at = gossiper.next_tick_at
            actions.append(Timer("tick", gossiper.next_tick_at))
        return actions


def gossip_factory(config: GossipNodeConfig):
    def factory(node: str, durable: dict[str, Any], rng: random.Random) -> GossipProcess:
        return GossipProcess(node, durable, rng, config)
    return factory


def add_cluster(world: World, names: list[str], config: GossipNodeConfig, start_within_s: float = 1.0) -> None:
    """Start `names` at random moments within `start_within_s` (so their rounds are not in lockstep)."""
    factory = gossip_factory(config)
    for name in names:
        world.at(world.now + world.rng.uniform(0.0, start_within_s), lambda name=name: world.add(name, factory))


def prejoin(world: World) -> None:
    """Hand every running gossiper every other's full state at once: a converged start for big clusters
    without simulating the joins (each gossiper still merges through its ordinary `handle`)."""
    gossipers = live_gossipers(world)
    for node, gossiper in gossipers.items():
        if gossiper.status(node) is Status.JOINING:  # as auto_valid would make them, so the snapshot holds
            gossiper.set_status(Status.VALID)
            world.process(node).durable["status"] = Status.VALID.value
    full = Ack2(tuple(g.view.members[node].delta(0) for node, g in gossipers.items()))
    for node, gossiper in gossipers.items():
        world.apply(node, world.process(node).handle(node, full, world.now))


def act(world: World, node: str, operation: str, *args: Any) -> Any:
    """Call an operation on a running node's adapter at the world's time and send what it produces."""
    process = world.process(node)
    if process is None:
        raise ValueError(f"node {node!r} is not running")
    method = getattr(process, operation)
    result = method(*args, world.now) if operation in ("exit", "force_remove", "handle") else method(*args)
    world.apply(node, result or [])
    return result


def live_gossipers(world: World) -> dict[str, Gossiper]:
    """Gossipers of running nodes that still gossip (not exited, not removed)."""
    out = {}
    for node in world.running():
        gossiper = world.process(node).gossiper
        if not gossiper.stopped:
            out[node] = gossiper
    return out


def disagreement(world: World, members_count: int | None = None) -> str | None:
    """None when every live view is the same (and has `members_count` members), else what differs."""
    gossipers = live_gossipers(world)
    if members_count is not None:
        for node, gossiper in gossipers.items():
            if len(gossiper.view.members) != members_count:
                return f"{node} knows {len(gossiper.view.members)} members, expected {members_count}"
    summaries: dict[tuple, list[str]] = {}
    for node, gossiper in gossipers.items():
        summaries.setdefault(gossiper.summary(), []).append(node)
    if len(summaries) <= 1:
        return None
    groups = sorted(summaries.items(), key=lambda item: -len(item[1]))
    (main, _), (other, nodes) = groups[0], groups[1]
    only_main = sorted(set(main[0]) - set(other[0]))[:3]
    only_other = sorted(set(other[0]) - set(main[0]))[:3]
    return (f"{len(summaries)} distinct views; {nodes[:5]} differ from the majority: "
            f"majority-only {only_main}, theirs-only {only_other}")


def rings_agree(world: World) -> bool:
    states = {repr(g.ring_state()) for g in live_gossipers(world).values()}
    return len(states) <= 1
