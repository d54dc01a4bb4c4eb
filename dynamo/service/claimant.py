"""Membership changes: staged joins, leaves and removals, the claimant's commit, and the ring every node
settles on (Riak's `cluster join|leave|force-remove|plan|commit`).

Theory of operation
- Staging is gossip status: a node asked to join (`join`, run on the new node, which must be an empty
  one-node cluster) says hello to the seed ("ring.hello": the seed learns its address, it learns the
  seed's ring and peers, so it routes requests right at once), then restarts its gossip core as JOINING
  with the seed as its only seed. `leave` (run on the leaving node) sets LEAVING. Force-removals are staged
  on the node asked, in staged.json in its state dir, so a restart keeps them. Nothing moves yet. `plan`
  shows the next ring those changes make (ring/change.py) and what would move.
- `clear` (any node; Riak's `cluster clear`) undoes what is staged and not yet committed: it sends
  "ring.clear" to every live member and clears itself, and each member drops what it staged: its
  force-removals, and its own leave (LEAVING -> VALID) unless a running ring change already moves it out
  (a commit it has not heard of yet still wins: see "Own status follows").
  A joiner that no ring names yet undoes its join, and stops as Riak's does (there the claimant marks
  joiners invalid): it turns LEAVING, so no commit takes it as a join any more, saves ring.json as a node
  that left (so, like a node whose leave completed, it does not start again on that data dir, and
  `dynamo cluster up` does not start it), and after UNJOIN_ROUNDS gossip rounds, in which every member
  hears it is no longer joining, exits gossip and stops. If a commit that took its join reaches it
  meanwhile (the commit was under way as the clear ran), the commit wins: it joins the ring with its leave
  staged, for the operator to commit or clear.
  Members that do not answer keep what they staged, and the answer says which.
- `commit` (any node) goes to the claimant (ring/change.claimant: smallest valid, alive member) as the
  RPC "ring.commit" with the joins and leaves the asker sees staged (the claimant waits a few gossip
  rounds to see them too, so `leave` then `commit` on the same node works at once); the claimant
  gossip-removes the force-removed nodes, computes the Transition and publishes it under the
  application state "transition". One writer: two commits cannot fork the ring.
  A commit while a transition runs is refused (TransitionBusy).
- `sync` runs once a gossip round on every node (a Membership watcher) and is the only place the routing
  state changes: the committed ring is the best (version, digest) of ours, the gossiped rings and the
  transition's current; the transition is the best gossiped one newer than it; `done` is the union of
  every source's "handed" state for that version. A complete transition turns its next ring into the
  committed one, on every node independently (same inputs, same ring). Every node republishes the winning
  transition, so it outlives the claimant.
- Own status follows: JOINING -> VALID once a committed or pending ring names us; a LEAVING node that the
  settled ring no longer names has handed off everything it sourced: it exits gossip and `on_left` stops
  the node. So does a VALID one: its leave was cleared while the claimant committed it (the commit wins),
  or the cluster force-removed it while it ran.
- The ring state (ring, transition, peers' RPC addresses, own status) is kept in ring.json in the node's
  state dir (written atomically when it changes), and outranks the configured member list at start: a
  joined node restarts into its cluster, not into the one-node cluster its config describes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from typing import Any, Callable

import trio

from dynamo.durable_file import write_durably
from dynamo.rpc import PeerPool, RpcError
from dynamo.service.membership import Membership
from gossip.gossiper import GossipError, Gossiper
from gossip.membership import Status
from ring.change import MoveId, Transition, TransitionFormatError, claimant, merge_transitions, next_ring
from ring.claim import ClaimError
from ring.report import ownership_report
from ring.state import Ring, RingFormatError, merge

RING_FILE = "ring.json"
STAGED_FILE = "staged.json"  # the force-removals staged on this node
TRANSITION_KEY = "transition"
HANDED_KEY = "handed"
COMMIT_TYPE = "ring.commit"
HELLO_TYPE = "ring.hello"
CLEAR_TYPE = "ring.clear"
COMMIT_TIMEOUT_S = 10.0
CLEAR_TIMEOUT_S = 3.0  # per member, all asked at once: within the CLI's default wait of 5 s
UNJOIN_ROUNDS = 10  # gossip rounds a cleared joiner waits, no longer joining, before it exits and stops
STAGED_WAIT_S = 6.0   # how long the claimant waits for gossip to bring the changes a commit's asker saw
STAGED_POLL_S = 0.1

log = logging.getLogger("dynamo.claimant")


class ChangeError(ValueError):
    """A membership change that cannot be made now (the message says why); HTTP 409."""


@dataclasses.dataclass(frozen=True)
class SavedRing:
    ring: Ring
    transition: Transition | None
    rpc: dict[str, str]  # node -> RPC address, for the gossip seeds after a restart
    status: Status


def load_ring_file(state_dir: str | None) -> SavedRing | None:
    """The saved ring state, or None (no dir, no file, or a file we cannot read: logged)."""
    if state_dir is None:
        return None
    path = pathlib.Path(state_dir) / RING_FILE
    try:
        raw = json.loads(path.read_text())
        transition = Transition.from_dict(raw["transition"]) if raw["transition"] is not None else None
        status = Status(raw["status"])
        if status not in (Status.JOINING, Status.VALID, Status.LEAVING, Status.EXITING):
            status = Status.VALID
        return SavedRing(Ring.from_dict(raw["ring"]), transition, dict(raw["rpc"]), status)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("ignoring %s: %s", path, error)
        return None


def left_at(saved: SavedRing | None, node_id: str) -> int | None:
    """The ring version at which `node_id` left the cluster (its leave completed: every partition handed
    off and the ring no longer names it), or None. Such a node must not start again on that data."""
    if saved is None or saved.status not in (Status.LEAVING, Status.EXITING) or node_id in saved.ring.members:
        return None
    if saved.transition is not None and node_id in saved.transition.nodes:
        return None  # still handing off: a restart resumes the leave
    return saved.ring.version


def save_ring_file(state_dir: str | None, saved: SavedRing) -> None:
    if state_dir is None:
        return
    path = pathlib.Path(state_dir) / RING_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"ring": saved.ring.to_dict(), "status": saved.status.value, "rpc": saved.rpc,
                       "transition": saved.transition.to_dict() if saved.transition else None})
    write_durably(path, text)


class Claimant:
    def __init__(self, membership: Membership, pool: PeerPool, *, n_vals: Callable[[], set[int]],
                 keys_stored: Callable[[], int], state_dir: str | None,
                 logger: logging.LoggerAdapter | None = None) -> None:
        self.membership, self.pool = membership, pool
        self.node_id = membership.node_id
        self.n_vals, self.keys_stored, self.state_dir = n_vals, keys_stored, state_dir
        self.log = logger or logging.LoggerAdapter(log, {})
        self.on_left: Callable[[], None] = lambda: None
        self.removals: set[str] = self._load_removals()  # force-removals staged here (STAGED_FILE)
        self.left = False
        self._unjoin_at_s: float | None = None  # a cleared join: when this node exits gossip and stops
        self._saved: SavedRing | None = None
        self._handed: dict[int, set[MoveId]] = {}  # transition version -> moves we finished
        self._decode_cache: dict[int, tuple[Any, Transition]] = {}  # id(raw) -> (raw, decoded)
        membership.watchers.append(self.sync)

    def _load_removals(self) -> set[str]:
        if self.state_dir is None:
            return set()
        path = pathlib.Path(self.state_dir) / STAGED_FILE
        try:
            removals = json.loads(path.read_text())["force-remove"]
            if not isinstance(removals, list) or not all(isinstance(node, str) for node in removals):
                raise ValueError("force-remove is not a list of node ids")
            return set(removals)
        except FileNotFoundError:
            return set()
        except (OSError, ValueError, KeyError, TypeError) as error:
            self.log.warning("ignoring %s (the force-removals staged here are lost): %s", path, error)
            return set()

    def _set_removals(self, removals: set[str]) -> None:
        """Stage exactly these force-removals here, durably when the node has a state dir (a disk that
        refuses keeps them in memory only, logged: a restart would forget them)."""
        if self.state_dir is not None and removals != self.removals:
            path = pathlib.Path(self.state_dir) / STAGED_FILE
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_durably(path, json.dumps({"force-remove": sorted(removals)}))
            except OSError as error:
                self.log.warning("cannot save %s (a restart would forget these): %s", path, error)
        self.removals = set(removals)

    @property
    def gossiper(self) -> Gossiper:
        return self.membership.gossiper

    # ---- the state every node settles on ------------------------------------------------------------

    def sync(self) -> None:
        """Fold what gossip knows into the committed ring, the transition and `done`; act on our status."""
        if self.left:
            return
        membership, gossiper = self.membership, self.gossiper
        ring, transition = membership.ring, membership.transition
        try:
            found = gossiper.ring_state()
            if found is not None and found[0] > ring.version:
                ring = merge(ring, Ring.from_dict(found[1]))
            for node in gossiper.members():
                raw = gossiper.app_state(node, TRANSITION_KEY)
                if isinstance(raw, list) and len(raw) == 2 and type(raw[0]) is int and raw[0] > ring.version \
                        and (transition is None or raw[0] >= transition.version):
                    transition = merge_transitions(transition, self._decoded(raw[1]))
        except (RingFormatError, TransitionFormatError) as error:
            self.log.error("ignoring a gossiped ring or transition: %s", error)
        if transition is not None:
            ring = merge(ring, transition.current)
            if transition.version <= ring.version:
                transition = None
        done = self._done(transition)
        if transition is not None and transition.complete(done):
            self.log.info("ring change to v%d complete: %d moves", transition.version, len(transition.moves))
            ring, transition, done = merge(ring, transition.next), None, frozenset()
        if transition is not None and gossiper.app_state(self.node_id, TRANSITION_KEY) != [transition.version,
                                                                                          transition.to_dict()]:
            gossiper.publish(TRANSITION_KEY, [transition.version, transition.to_dict()])
        membership.set_ring(ring, transition, done)
        self._follow_status()
        self._save()

    def _decoded(self, raw: Any) -> Transition:
        # Every member republishes the same transition: decode each distinct value once.
        key = id(raw)
        cached = self._decode_cache.get(key)
        if cached is None or cached[0] is not raw:
            self._decode_cache = {key: (raw, Transition.from_dict(raw))} if len(self._decode_cache) > 64 \
                else {**self._decode_cache, key: (raw, Transition.from_dict(raw))}
            cached = self._decode_cache[key]
        return cached[1]

    def _done(self, transition: Transition | None) -> frozenset[MoveId]:
        if transition is None:
            return frozenset()
        done: set[MoveId] = set(self._handed.get(transition.version, ()))
        for node in self.gossiper.members():
            raw = self.gossiper.app_state(node, HANDED_KEY)
            if isinstance(raw, list) and len(raw) == 2 and raw[0] == transition.version:
                done.update((int(k), str(target)) for k, target in raw[1])
        return frozenset(done)

    def mark_handed(self, version: int, move: MoveId) -> None:
        """A move this node sourced is complete (the target committed its last batch): say so."""
        handed = self._handed.setdefault(version, set())
        handed.add(move)
        for old in [v for v in self._handed if v < version]:
            del self._handed[old]
        self.gossiper.publish(HANDED_KEY, [version, sorted([k, target] for k, target in handed)])

    def _follow_status(self) -> None:
        gossiper, membership = self.gossiper, self.membership
        status = gossiper.status(self.node_id)
        named = self._named()
        if self._unjoin_at_s is not None:
            if named:  # a commit took the join before every member heard it was cleared: the commit wins
                self._unjoin_at_s = None
                self.log.warning("a commit took this node's join as it was cleared: it joins the ring, "
                                 "with its leave staged")
                return
            if trio.current_time() < self._unjoin_at_s:
                return
            self.left = True
            self.log.info("staged join cleared: stopping")
            membership._apply(gossiper.exit(trio.current_time()))
            self.on_left()
        elif status is Status.JOINING and named:
            gossiper.set_status(Status.VALID)
            self.log.info("joined the cluster (ring v%d)", membership.ring.version)
        elif status in (Status.LEAVING, Status.VALID) and not named and membership.transition is None \
                and membership.ring.version > 0:
            if status is Status.VALID:  # its leave was cleared as the claimant committed it, or it was removed
                self.log.warning("the cluster's ring v%d no longer names this node: leaving", membership.ring.version)
                gossiper.set_status(Status.LEAVING)
            self.left = True
            self._save(Status.LEAVING)
            self.log.info("left the cluster: every partition handed off (ring v%d)", membership.ring.version)
            membership._apply(gossiper.exit(trio.current_time()))
            self.on_left()

    def _named(self) -> bool:
        """The committed ring or the next ring of a change under way names this node."""
        return self.membership.names(self.node_id)

    def _save(self, status: Status | None = None) -> None:
        if self._unjoin_at_s is not None:
            return  # a cleared join: ring.json says it left (see _unjoin)
        membership = self.membership
        own = status or self.gossiper.status(self.node_id) or Status.VALID
        nodes = set(membership.ring.members) | set(membership.transition.nodes if membership.transition else ())
        rpc = {node: self.gossiper.addresses(node)[0] for node in sorted(nodes)
               if node != self.node_id and self.gossiper.addresses(node) is not None}
        if self._saved is not None:
            rpc = {**{n: a for n, a in self._saved.rpc.items() if n in nodes}, **rpc}
        saved = SavedRing(membership.ring, membership.transition, rpc, own)
        if saved != self._saved:
            try:
                save_ring_file(self.state_dir, saved)
            except OSError as error:
                self.log.warning("cannot save %s: %s", RING_FILE, error)
            self._saved = saved

    # ---- staging ------------------------------------------------------------------------------------

    async def join(self, seed: str, seed_rpc: str) -> dict[str, Any]:
        """Run on the new node: join the cluster `seed` (at RPC address `seed_rpc`) belongs to."""
        membership, old = self.membership, self.gossiper
        if seed == self.node_id:
            raise ChangeError("a node cannot join itself")
        if set(membership.ring.members) != {self.node_id} or membership.transition is not None:
            raise ChangeError(f"{self.node_id} is already in a cluster of {len(membership.ring.members)} nodes")
        if self.keys_stored() > 0:
            raise ChangeError(f"{self.node_id} holds data; only an empty node can join a cluster")
        config = membership.config
        membership.pool.set_address(seed, *_address(seed_rpc))
        try:  # the seed learns our address (its gossip answers must reach us); we learn its ring
            reply = await self.pool.call(seed, HELLO_TYPE, [config.rpc_address], COMMIT_TIMEOUT_S)
            ring = Ring.from_dict(reply["ring"])
            transition = Transition.from_dict(reply["transition"]) if reply["transition"] is not None else None
            addresses = {str(node): _address(rpc) for node, rpc in reply["rpc"].items()}
        except RpcError as error:
            raise ChangeError(f"cannot reach the seed {seed} at {seed_rpc}: {error}") from None
        except (KeyError, TypeError, AttributeError, RingFormatError, TransitionFormatError) as error:
            raise ChangeError(f"the seed {seed} sent a ring this node cannot read: {error}") from None
        if ring.partitions != membership.ring.partitions:
            raise ChangeError(f"the seed's ring has {ring.partitions} partitions, "
                              f"this node {membership.ring.partitions}")
        for node, (host, port) in addresses.items():
            if node != self.node_id:
                membership.pool.set_address(node, host, port)
        gossiper = Gossiper(self.node_id, old.generation(self.node_id) or 1,
                            (config.rpc_address, config.http_address), [seed], old.rng, trio.current_time(),
                            config=old.config, status=Status.JOINING)
        # The cluster's ring right away: requests this node coordinates meanwhile go where the data is.
        membership.set_ring(ring, transition, frozenset())
        self._saved = None
        membership.replace_gossiper(gossiper)
        self.sync()
        self.log.info("joining the cluster of %s (%s): ring v%d", seed, seed_rpc, ring.version)
        return {"node": self.node_id, "seed": seed, "status": Status.JOINING.value}

    async def rpc_hello(self, peer_id: str, body: Any) -> dict[str, Any]:
        """A node about to join through us: remember its RPC address; answer our ring and peers."""
        if not isinstance(body, list) or len(body) != 1 or not isinstance(body[0], str):
            raise ValueError("ring.hello wants [rpc address]")
        self.pool.set_address(peer_id, *_address(body[0]))
        membership, gossiper = self.membership, self.gossiper
        rpc = {node: gossiper.addresses(node)[0] for node in gossiper.members()
               if gossiper.addresses(node) is not None}
        transition = membership.transition.to_dict() if membership.transition is not None else None
        return {"ring": membership.ring.to_dict(), "transition": transition, "rpc": rpc}

    def leave(self) -> dict[str, Any]:
        """Run on the leaving node: stage its leave (it hands its data off after the commit)."""
        ring, transition = self.membership.ring, self.membership.transition
        if self.node_id not in ring.members:
            if transition is not None and self.node_id in transition.next.members:
                raise ChangeError(f"{self.node_id} is still joining (ring v{transition.current.version} -> "
                                  f"v{transition.next.version}, data still moving); stage its leave once "
                                  "`dynamo admin transfers` shows no change under way")
            raise ChangeError(f"{self.node_id} is not a member of the ring")
        if len(ring.members) == 1:
            raise ChangeError("the last member cannot leave")
        try:
            self.gossiper.leave()
        except GossipError as error:
            raise ChangeError(str(error)) from None
        self._save()
        return {"node": self.node_id, "status": Status.LEAVING.value}

    def force_remove(self, node: str) -> dict[str, Any]:
        """Stage the removal of a member that will not come back (its data is copied from the others)."""
        if node == self.node_id:
            raise ChangeError("a node cannot force-remove itself; ask another member")
        if node not in self.membership.ring.members:
            raise ChangeError(f"{node} is not a member of the ring")
        self._set_removals(self.removals | {node})
        return {"node": node, "staged": "force-remove"}

    async def clear(self) -> dict[str, Any]:
        """Undo the staged changes of every live member (see the module docstring): what each cleared,
        the joins kept, and the members that did not answer."""
        gossiper = self.gossiper
        others = sorted(n for n in gossiper.members() if n != self.node_id and gossiper.is_alive(n))
        cleared: dict[str, list[str]] = {"join": [], "leave": [], "force-remove": []}
        unreachable: list[str] = []

        def add(answer: Any) -> None:
            if not isinstance(answer, dict):
                raise ValueError(f"{CLEAR_TYPE} answered {answer!r}")
            for kind in cleared:
                cleared[kind].extend(str(node) for node in answer.get(kind, ()))

        async def ask(node: str) -> None:
            try:
                add(await self.pool.call(node, CLEAR_TYPE, {}, CLEAR_TIMEOUT_S))
            except (RpcError, ValueError) as error:
                self.log.warning("clear: %s did not clear its staged changes: %s", node, error)
                unreachable.append(node)

        add(self.clear_here())
        async with trio.open_nursery() as nursery:
            for node in others:
                nursery.start_soon(ask, node)
        joins, _, _ = self.staged()
        return {"cleared": {kind: sorted(set(nodes)) for kind, nodes in cleared.items()},
                "kept": {"join": sorted(set(joins) - set(cleared["join"]))}, "unreachable": sorted(unreachable)}

    def clear_here(self) -> dict[str, list[str]]:
        """Drop this node's staged force-removals, its own uncommitted leave and its own join that no ring
        names yet; say what was dropped."""
        removals = sorted(self.removals)
        self._set_removals(set())
        leave: list[str] = []
        join: list[str] = []
        status, transition = self.gossiper.status(self.node_id), self.membership.transition
        committed = transition is not None and self.node_id not in transition.next.members
        if status is Status.LEAVING and not committed and not self.left and self._unjoin_at_s is None:
            self.gossiper.set_status(Status.VALID)
            self._save()
            leave.append(self.node_id)
            self.log.info("staged leave cleared: staying in the cluster")
        elif status is Status.JOINING and not self._named() and not self.left:
            self._unjoin()
            join.append(self.node_id)
        return {"join": join, "leave": leave, "force-remove": removals}

    def _unjoin(self) -> None:
        """Undo this node's staged join (see the module docstring): no longer joining at once, saved as a
        node that left, gossip left and the node stopped UNJOIN_ROUNDS rounds later."""
        membership = self.membership
        self.gossiper.set_status(Status.LEAVING)
        self._unjoin_at_s = trio.current_time() + UNJOIN_ROUNDS * membership.config.gossip_interval_s
        saved = SavedRing(membership.ring, membership.transition, {}, Status.EXITING)
        try:
            save_ring_file(self.state_dir, saved)
        except OSError as error:
            self.log.warning("cannot save %s (a restart would rejoin the cluster): %s", RING_FILE, error)
        self._saved = saved
        self.log.info("staged join cleared: leaving the cluster's gossip in %d rounds", UNJOIN_ROUNDS)

    async def rpc_clear(self, peer_id: str, body: Any) -> dict[str, list[str]]:
        if body != {}:
            raise ValueError(f"{CLEAR_TYPE} wants an empty map")
        return self.clear_here()

    def staged(self, removals: set[str] | None = None) -> tuple[list[str], list[str], list[str]]:
        """(joins, leaves, removals) as this node's gossip view and staging see them."""
        gossiper, ring = self.gossiper, self.membership.ring
        removals = set(self.removals if removals is None else removals) & set(ring.members)
        joins = [n for n in gossiper.members() if n not in ring.members and gossiper.is_alive(n)
                 and gossiper.status(n) is Status.JOINING]
        leaves = [n for n in ring.members if gossiper.status(n) is Status.LEAVING and n not in removals]
        return sorted(joins), sorted(leaves), sorted(removals)

    def _transition(self, removals: set[str] | None = None) -> Transition:
        if self.membership.transition is not None:
            transition = self.membership.transition
            left = sum(1 for m in transition.moves if not transition.move_done(m, self.membership.done))
            raise ChangeError(f"the ring change to v{transition.version} is still running ({left} moves left)")
        joins, leaves, removes = self.staged(removals)
        ring = self.membership.ring
        try:
            next_ = next_ring(ring, joins, leaves, removes, author=self.node_id)
        except ClaimError as error:
            raise ChangeError(str(error)) from None
        return Transition.plan(ring, next_, self.n_vals() or {3}, removes)

    def plan(self) -> dict[str, Any]:
        """What a commit would do: staged changes, partitions per node before and after, moves, balance."""
        joins, leaves, removes = self.staged()
        transition = self._transition()
        return {"staged": {"join": joins, "leave": leaves, "force-remove": removes}, **describe(transition)}

    # ---- commit -------------------------------------------------------------------------------------

    def claimant(self) -> str | None:
        gossiper, ring = self.gossiper, self.membership.ring
        valid = {n for n in ring.members if gossiper.is_alive(n) and gossiper.status(n) is Status.VALID}
        return claimant(ring, valid or {n for n in ring.members if gossiper.is_alive(n)})

    async def commit(self) -> dict[str, Any]:
        """Have the claimant turn the staged changes into the next ring."""
        chosen = self.claimant()
        if chosen is None:
            raise ChangeError("no live member can act as claimant")
        if chosen == self.node_id:
            return self.commit_here(set(self.removals))
        joins, leaves, _ = self.staged()
        body = {"remove": sorted(self.removals), "expect": joins + leaves}
        try:
            reply = await self.pool.call(chosen, COMMIT_TYPE, body, COMMIT_TIMEOUT_S)
        except RpcError as error:
            raise ChangeError(f"the claimant {chosen} did not commit: {error}") from None
        self._set_removals(self.removals - set(body["remove"]))
        return reply

    async def rpc_commit(self, peer_id: str, body: Any) -> dict[str, Any]:
        """A commit asked by another node. `expect` is the joins and leaves the asker saw staged: a leave
        staged a moment ago may not have reached us by gossip yet, so wait (a few rounds at most) until we
        see them too, rather than commit without them or answer "no staged changes"."""
        if (not isinstance(body, dict) or set(body) != {"remove", "expect"}
                or not all(isinstance(v, list) and all(isinstance(n, str) for n in v) for v in body.values())):
            raise ValueError("ring.commit wants {remove: [node ids], expect: [node ids]}")
        if self.claimant() != self.node_id:
            raise ChangeError(f"{self.node_id} is not the claimant (that is {self.claimant()})")
        with trio.move_on_after(STAGED_WAIT_S):
            while not self._sees_staged(body["expect"]):
                await trio.sleep(STAGED_POLL_S)
        if not self._sees_staged(body["expect"]):
            raise ChangeError(f"the claimant {self.node_id} has not heard of every change staged on "
                              f"{peer_id} yet ({', '.join(body['expect'])}); try again in a few seconds")
        return self.commit_here(set(body["remove"]))

    def _sees_staged(self, expected: list[str]) -> bool:
        joins, leaves, _ = self.staged()
        return set(expected) <= set(joins) | set(leaves)

    def commit_here(self, removals: set[str]) -> dict[str, Any]:
        """The claimant's commit: remove, compute, publish; every node picks it up at its next sync."""
        transition = self._transition(removals)
        now = trio.current_time()
        for node in transition.removed:
            if self.gossiper.view.get(node) is not None:
                self.membership._apply(self.gossiper.force_remove(node, now))
        self._set_removals(self.removals - set(removals))  # what this commit took (a peer's may differ)
        self.gossiper.publish(TRANSITION_KEY, [transition.version, transition.to_dict()])
        self.log.info("committed ring v%d: %d moves (%s)", transition.version, len(transition.moves),
                      ", ".join(f"{k} {v}" for k, v in describe(transition)["changes"].items() if v) or "-")
        self.sync()
        return {"committed": transition.version, "claimant": self.node_id, **describe(transition)}


def describe(transition: Transition) -> dict[str, Any]:
    """A plan as JSON: partitions per node before and after, moves per source/target, next ring's report."""
    current, next_ = transition.current, transition.next
    report = ownership_report(next_)
    nodes = sorted(set(current.members) | set(next_.members))
    return {
        "version": next_.version,
        "changes": {"join": sorted(set(next_.members) - set(current.members)),
                    "leave": sorted(set(current.members) - set(next_.members) - set(transition.removed)),
                    "force-remove": list(transition.removed)},
        "partitions": {node: {"before": len(current.partitions_of(node)), "after": len(next_.partitions_of(node))}
                       for node in nodes},
        "ownership_moves": sum(1 for a, b in zip(current.owners, next_.owners) if a != b),
        "transfers": len(transition.moves),
        "balanced": report.balanced, "ideal": [report.ideal_low, report.ideal_high],
        "spacing_violations": report.violations, "spacing_violations_min": report.violations_min,
    }


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"an RPC address is host:port, got {text!r}")
    return host.strip("[]"), int(port)
