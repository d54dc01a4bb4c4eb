"""The node's view of the cluster: the gossip driver, the ring, who is down, and bucket properties.

Theory of operation
- The gossip core (gossip.Gossiper) decides everything; this driver only moves its effects: `tick` on
  the core's own schedule (`next_tick_at`), messages in from RPC casts of type "gossip" (`handle_rpc`),
  and each `Send` out as a one-way RPC cast. Time is trio's clock; randomness a seeded Random.
- Cluster formation (for now): the config lists every member; every node builds the same
  Ring.initial(members) (version 1) and publishes it; the other members are the gossip seeds.
- Down steers routing only: `down` is the members the failure detector convicted, plus the members not
  heard from at all once UNHEARD_GRACE_ROUNDS gossip rounds have passed since this node started. Before
  that an unheard member counts as up (marking everyone down at boot would send every write to
  fallbacks; RPC fails fast if it is not up); after it, a member that was down when we started must not
  stay "up" forever. The set is recomputed on every member event and every tick, and the preference lists
  cached per (partition, n_val) are dropped when it changes. A member joining, restarting or coming
  back up also resets its RPC reconnect backoff, so the first request after that dials at once.
- Application states it publishes: the ring, "buckets" (the bucket property registry; see bucket.py),
  "hints" (this node's pending hint count, for operators) and "capabilities" (what this code speaks
  beyond the RPC protocol's first version, `CAPABILITIES`). A sender uses an extension only with a peer
  that advertises it (`supports`), so nodes of two versions interoperate during a rolling upgrade, as
  Riak's riak_core_capability lets them; a peer not heard from yet, or restarted without it, supports
  nothing. Once per gossip interval it merges every member's "buckets" into the local registry and
  republishes when that changed, so a property change reaches everyone and survives its author.
- Ring changes (claimant.py decides them; this class only routes by them): `ring` is the committed ring;
  during a change `transition` (ring/change.py) and `done` (the moves handed off so far) route each
  partition by the next ring once its moves are done, and `pending` names the nodes a write should also
  reach meanwhile. `set_ring` installs a new state; `watchers` run at every state sync (once a round).
"""

from __future__ import annotations

import logging
import random
from typing import Any, Callable

import trio

from dynamo.bucket import BucketRegistry
from dynamo.config import NodeConfig, parse_address
from dynamo.rpc import PeerPool
from gossip.detector import DetectorConfig
from gossip.gossiper import EventKind, GossipConfig, Gossiper, MemberEvent, Send
from gossip.membership import Status
from gossip.message import from_wire, to_wire
from ring.change import MoveId, Transition
from ring.preflist import Preflist, preference_list
from ring.state import Ring

GOSSIP_TYPE = "gossip"
UNHEARD_GRACE_ROUNDS = 5
BUCKETS_KEY = "buckets"
HINTS_KEY = "hints"
CAPABILITIES_KEY = "capabilities"
# kv.replicate may carry the copy's anti-entropy digest and tombstone flag (coordinator.py): a receiver that
# stores the copy as sent takes them instead of reading them off the blob. The digest is object_digest's:
# a change to what that hashes must rename this capability.
REPLICATE_DIGEST = "kv.replicate.digest.v1"
CAPABILITIES = frozenset({REPLICATE_DIGEST})
# Member events that mean a peer is reachable again: its RPC reconnect backoff is reset (PeerPool).
BACK_EVENTS = frozenset({EventKind.JOINED, EventKind.RESTARTED, EventKind.UP})

log = logging.getLogger("dynamo.membership")


def gossip_config(cluster: str, interval_s: float) -> GossipConfig:
    """The gossip core's settings scaled to `interval_s` (the defaults are tuned for 1 s rounds), so a
    test can run rounds every 0.1 s and still get a failure detector that is neither blind nor jumpy."""
    scale = interval_s / 1.0
    detector = DetectorConfig(bootstrap_interval_s=1.0 * scale, bootstrap_spread_s=1.0 * scale,
                              min_std_s=0.3 * scale, acceptable_pause_s=0.25 * scale,
                              max_interval_s=8.0 * scale)
    return GossipConfig(cluster=cluster, interval_s=interval_s, probe_after_s=1.25 * scale,
                        tick_gap_s=0.05 * scale, detector=detector)


class Membership:
    def __init__(self, config: NodeConfig, pool: PeerPool, registry: BucketRegistry, *, generation: int,
                 joined_generation: int, rng: random.Random, hints_pending: Callable[[], int],
                 logger: logging.LoggerAdapter | None = None, saved_ring: Any = None) -> None:
        self.node_id = config.node_id
        self.config = config
        self.pool = pool
        self.registry = registry
        self.log = logger or logging.LoggerAdapter(log, {})
        self._hints_pending = hints_pending
        self.ring = Ring.initial(config.member_ids(), partitions=config.partitions, target_n=config.target_n)
        self.transition: Transition | None = None
        self.done: frozenset[MoveId] = frozenset()
        self.watchers: list[Callable[[], None]] = []
        saved_addresses: dict[str, str] = {}
        status = Status.VALID
        if saved_ring is not None:  # a ring file (claimant.SavedRing) outranks the configured members
            self.ring, self.transition, saved_addresses = saved_ring.ring, saved_ring.transition, saved_ring.rpc
            status = saved_ring.status
        seeds = [m.node_id for m in config.members if m.node_id != config.node_id]
        seeds += [node for node in sorted(saved_addresses) if node != config.node_id and node not in seeds]
        self.gossiper = Gossiper(config.node_id, generation, (config.rpc_address, config.http_address), seeds,
                                 rng, trio.current_time(), config=gossip_config(config.cluster,
                                                                                config.gossip_interval_s),
                                 status=status, joined_generation=joined_generation)
        self.gossiper.publish_ring(self.ring.version, self.ring.to_dict())
        self.capabilities = CAPABILITIES
        self.gossiper.publish(CAPABILITIES_KEY, sorted(self.capabilities))
        self._peer_capabilities: dict[str, frozenset[str]] = {}
        self.down: frozenset[str] = frozenset()
        self._unheard_down_at_s = trio.current_time() + UNHEARD_GRACE_ROUNDS * config.gossip_interval_s
        self._preflists: dict[tuple[int, int], Preflist] = {}
        self._published_registry = -1
        self._merged_states: dict[str, Any] = {}  # node -> the "buckets" value last merged from it
        self._published_hints = -1
        self._nursery: trio.Nursery | None = None
        for member in config.members:
            if member.node_id != self.node_id:
                self.pool.set_address(member.node_id, *parse_address(member.rpc))
        for node, rpc in saved_addresses.items():
            if node != self.node_id:
                self.pool.set_address(node, *parse_address(rpc))

    # ---- routing ------------------------------------------------------------------------------------

    def preflist(self, partition: int, n_val: int) -> Preflist:
        found = self._preflists.get((partition, n_val))
        if found is None:
            ring = self.ring if self.transition is None else self.transition.ring_for(partition, self.done)
            found = self._preflists[(partition, n_val)] = preference_list(ring, partition, n_val, self.down)
        return found

    def names(self, node: str) -> bool:
        """Whether the committed ring (a real one: version 0 is a joiner's own placeholder) or the next ring
        of a change under way has `node` as a member."""
        return (self.ring.version > 0 and node in self.ring.members) or (
            self.transition is not None and node in self.transition.next.members)

    def routed_by(self, partition: int) -> int:
        """The version of the ring that routes `partition` here now (a change's next ring once the
        partition's moves are done)."""
        return (self.ring if self.transition is None else self.transition.ring_for(partition, self.done)).version

    def pending(self, partition: int, n_val: int) -> tuple[str, ...]:
        """Nodes gaining `partition` in a ring change not done yet: writes reach them too (even if they look
        down: a write they miss now is one the transfer may already have passed)."""
        if self.transition is None:
            return ()
        return self.transition.pending(partition, n_val, self.done)

    def set_ring(self, ring: Ring, transition: Transition | None, done: frozenset[MoveId]) -> None:
        """Install a committed ring and the change under way (if any); publish the ring if it is new."""
        if ring != self.ring:
            self.gossiper.publish_ring(ring.version, ring.to_dict())
        if (ring, transition, done) != (self.ring, self.transition, self.done):
            self.ring, self.transition, self.done = ring, transition, done
            self._preflists.clear()
            self._recompute_down()

    def is_primary(self, partition: int, n_val: int) -> bool:
        return any(r.node == self.node_id for r in self.preflist(partition, n_val).primaries)

    def is_alive(self, node: str) -> bool:
        """Heard from in this incarnation and not convicted (handoff waits for this)."""
        return self.gossiper.is_alive(node)

    def _recompute_down(self) -> None:
        gossiper = self.gossiper
        unheard_down = trio.current_time() >= self._unheard_down_at_s
        nodes = self.ring.nodes if self.transition is None else self.transition.nodes
        down = frozenset(node for node in nodes if node != self.node_id and not gossiper.is_alive(node)
                         and (unheard_down or gossiper.view.get(node) is not None))
        if down != self.down:
            self.down = down
            self._preflists.clear()

    # ---- the driver ---------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            next_sync_s = 0.0
            try:
                while True:
                    now = trio.current_time()
                    self._apply(self.gossiper.tick(now))
                    self._recompute_down()
                    if now >= next_sync_s:
                        next_sync_s = now + self.config.gossip_interval_s
                        self._sync_states()
                    await trio.sleep_until(max(self.gossiper.next_tick_at, now + 0.001))
            finally:
                # Stopping: gossip arriving now (the RPC server may outlive us by a moment) sends nothing,
                # rather than meet the nursery's "closed to new arrivals".
                self._nursery = None

    async def handle_rpc(self, peer_id: str, body: Any) -> None:
        message = from_wire(body)
        self._apply(self.gossiper.handle(peer_id, message, trio.current_time()))

    def _apply(self, effects: list) -> None:
        changed = False
        for effect in effects:
            if isinstance(effect, Send):
                if self._nursery is not None:
                    self._nursery.start_soon(self._cast, effect.to, to_wire(effect.message))
            elif isinstance(effect, MemberEvent):
                changed = True
                self.log.info("member %s %s (generation %d, %s)", effect.node, effect.kind.value,
                              effect.generation, effect.status)
                addresses = self.gossiper.addresses(effect.node)
                if addresses is not None and effect.node != self.node_id:
                    try:
                        self.pool.set_address(effect.node, *parse_address(addresses[0]))
                    except ValueError:
                        self.log.warning("member %s gossips a bad address %r", effect.node, addresses[0])
                self._learn_capabilities(effect.node)  # a restart may have changed the peer's code
                if effect.kind in BACK_EVENTS and effect.node != self.node_id:
                    # Gossip heard the peer (it dialled us): its RPC backoff from while it was away would
                    # only turn requests away for seconds.
                    self.pool.reset_backoff(effect.node)
        if changed:
            self._recompute_down()

    async def _cast(self, node: str, body: Any) -> None:
        await self.pool.cast(node, GOSSIP_TYPE, body)

    def supports(self, node: str, capability: str) -> bool:
        """Whether `node` advertises `capability` (see the module docstring)."""
        return capability in self._peer_capabilities.get(node, ())

    def _learn_capabilities(self, node: str) -> None:
        raw = self.gossiper.app_state(node, CAPABILITIES_KEY)
        names = raw if type(raw) is list else ()  # anything else: a node that advertises nothing we know
        self._peer_capabilities[node] = frozenset(name for name in names if type(name) is str)

    def _sync_states(self) -> None:
        gossiper = self.gossiper
        for node in gossiper.members():
            self._learn_capabilities(node)
            if node != self.node_id:
                raw = gossiper.app_state(node, BUCKETS_KEY)
                if raw is not None and raw is not self._merged_states.get(node):
                    self._merged_states[node] = raw  # the view keeps a value until a newer one replaces it
                    self.registry.merge_wire(raw)
        if self.registry.version != self._published_registry:
            self._published_registry = self.registry.version
            gossiper.publish(BUCKETS_KEY, self.registry.to_wire())
        hints = self._hints_pending()
        if hints != self._published_hints:
            self._published_hints = hints
            gossiper.publish(HINTS_KEY, hints)
        for watcher in self.watchers:
            watcher()

    def replace_gossiper(self, gossiper: Gossiper) -> None:
        """A new gossip core (a node joining a cluster restarts its own); republish our states into it."""
        self.gossiper = gossiper
        gossiper.publish_ring(self.ring.version, self.ring.to_dict())
        gossiper.publish(CAPABILITIES_KEY, sorted(self.capabilities))
        self._peer_capabilities.clear()
        self._published_registry = self._published_hints = -1
        # The members are new to this core: they count as up until it has had a few rounds to hear them.
        self._unheard_down_at_s = trio.current_time() + UNHEARD_GRACE_ROUNDS * self.config.gossip_interval_s
        self.down = frozenset()
        self._preflists.clear()
        self._sync_states()

    def publish_buckets(self) -> None:
        """Spread a local property change now rather than at the next sync."""
        self._published_registry = self.registry.version
        self.gossiper.publish(BUCKETS_KEY, self.registry.to_wire())

    # ---- what the admin routes show -----------------------------------------------------------------

    def member_status(self, node: str) -> str:
        """"up", "down", "left" (its leave completed: not alive and exiting, which is no failure) or
        "unknown" (not in our gossip view)."""
        if node == self.node_id:
            return "up"
        if self.gossiper.view.get(node) is None:
            return "unknown"
        if self.gossiper.is_alive(node):
            return "up"
        return "left" if self.gossiper.status(node) is Status.EXITING else "down"

    def members_report(self) -> list[dict[str, Any]]:
        configured = {m.node_id: m for m in self.config.members}
        report = []
        for node in sorted(set(configured) | set(self.gossiper.members())):
            addresses = self.gossiper.addresses(node)
            member = configured.get(node)
            rpc, http = addresses if addresses is not None else (member.rpc, member.http)
            status = self.gossiper.status(node)
            report.append({"node": node, "status": self.member_status(node),
                           "membership": status.value if status is not None else "unknown",
                           "generation": self.gossiper.generation(node), "rpc": rpc, "http": http,
                           "hints_pending": self.gossiper.app_state(node, HINTS_KEY),
                           "partitions": len(self.ring.partitions_of(node))})
        return report
