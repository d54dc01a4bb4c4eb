"""A Hypothesis state machine drives a simulated gossip cluster through joins, crashes, restarts, removals,
re-joins, partitions, clogs, stale replays and ring changes, checking invariants as it goes.

Always: no view holds an incarnation its own tombstones cover (a removed node never reappears), tombstones
never disappear from a running view, a removed node that learned so has stopped.
After `settle` (heal, quiet network, 40 s): all live views agree (members, generations, statuses, states,
tombstones), agree on the ring, which is one of the rings published, see exactly the live gossipers as
alive, and every removal a live node knows of is known everywhere and holds.
Seeds (n0, n1) are never removed and never both down, so a node always has someone to join.
A failure prints the rule sequence and the simulator seed (`sim seed ...`); rerun it with that example.
"""

from hypothesis import note, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gossip.membership import Status
from tools.sim import NetworkConfig, World
from tools.sim.gossip_node import GossipNodeConfig, act, add_cluster, disagreement, gossip_factory, live_gossipers

SEEDS = ("n0", "n1")
FAULTY = NetworkConfig(latency_s=0.002, jitter_s=0.01, drop_p=0.02, duplicate_p=0.02, reorder_p=0.05)
QUIET = NetworkConfig()
picks = st.integers(0, 1 << 16)


class GossipMachine(RuleBasedStateMachine):
    @initialize(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 6))
    def start(self, seed, n):
        note(f"sim seed {seed}")
        self.world = World(seed, FAULTY, keep_trace=False, history_size=400)
        self.config = GossipNodeConfig(seeds=SEEDS, notes=True)
        self.names = [f"n{i}" for i in range(n)]
        add_cluster(self.world, self.names, self.config)
        self.world.run_until(5.0)
        self.published = {}        # node -> the (version, value) rings it published (any incarnation)
        self.removals = {}         # node -> the highest generation an operator removed (the model)
        self.tombstones_seen = {}  # (node, incarnation) -> tombstones its view held

    # ---- helpers ------------------------------------------------------------------------------------

    def running(self):
        return self.world.running()

    def crashed(self):
        return [n for n in self.names if self.world.process(n) is None]

    def pick(self, nodes, index):
        return sorted(nodes)[index % len(nodes)]

    def fail(self, message):
        raise AssertionError(message + "\n" + "\n".join(list(self.world.log_lines)[-30:]))

    # ---- rules --------------------------------------------------------------------------------------

    @rule()
    def add_node(self):
        name = f"n{len(self.names)}"
        self.names.append(name)
        self.world.add(name, gossip_factory(self.config))

    @precondition(lambda self: len(self.running()) > 2)
    @rule(i=picks)
    def crash(self, i):
        candidates = [n for n in self.running() if n not in SEEDS or all(self.world.process(s) for s in SEEDS)]
        self.world.crash(self.pick(candidates, i))

    @precondition(lambda self: self.crashed())
    @rule(i=picks)
    def restart(self, i):
        self.world.restart(self.pick(self.crashed(), i))

    @precondition(lambda self: live_gossipers(self.world))
    @rule(i=picks, j=picks)
    def force_remove(self, i, j):
        issuer = self.pick(list(live_gossipers(self.world)), i)
        gossiper = self.world.process(issuer).gossiper
        targets = [m for m in gossiper.members() if m != issuer and m not in SEEDS]
        if targets:
            target = self.pick(targets, j)
            generation = gossiper.generation(target)
            act(self.world, issuer, "force_remove", target)
            self.removals[target] = max(generation, self.removals.get(target, 0))

    @rule(i=picks)
    def rejoin(self, i):
        removed = [n for n in self.names if self.world.process(n) is None or self.world.process(n).gossiper.stopped]
        if removed:
            node = self.pick(removed, i)
            self.world.nodes[node].durable["rejoin"] = True
            self.world.restart(node)

    @rule(cut=st.lists(st.booleans(), min_size=12, max_size=12))
    def partition(self, cut):
        side = {n for k, n in enumerate(self.names) if cut[k % len(cut)]}
        self.world.partition(side, set(self.names) - side)

    @rule()
    def heal(self):
        self.world.heal()

    @rule(i=picks, j=picks, duration_s=st.floats(0.5, 8.0))
    def clog(self, i, j, duration_s):
        self.world.clog(self.pick(self.names, i), self.pick(self.names, j), duration_s)

    @rule(i=picks)
    def replay_stale(self, i):
        self.world.replay(i)

    @precondition(lambda self: live_gossipers(self.world))
    @rule(i=picks, version=st.integers(0, 4), value=st.sampled_from(["x", "y", "z"]))
    def publish_ring(self, i, version, value):
        node = self.pick(list(live_gossipers(self.world)), i)
        ring = {"by": node, "v": value}
        act(self.world, node, "publish_ring", version, ring)
        self.published.setdefault(node, []).append((version, ring))

    @rule(duration_s=st.floats(0.1, 10.0))
    def advance(self, duration_s):
        self.world.run_for(duration_s)

    @rule()
    def settle(self):
        world = self.world
        world.heal()
        world.network.config = QUIET
        world.run_for(40.0)
        world.network.config = FAULTY
        gossipers = live_gossipers(world)
        problem = disagreement(world)
        if problem:
            self.fail(f"views disagree after settling: {problem}")
        rings = {repr(g.ring_state()) for g in gossipers.values()}
        if len(rings) > 1:
            self.fail(f"rings disagree: {rings}")
        ring = next(iter(gossipers.values())).ring_state() if gossipers else None
        every = [r for rings in self.published.values() for r in rings]
        if ring is not None and tuple(ring) not in every:
            self.fail(f"ring {ring} was never published")
        # A removal whose issuer crashed before telling anyone waits (durably) for the issuer's restart.
        spread = {t: g for t, g in self.removals.items()
                  if any(x.view.removed.get(t, -1) >= g for x in gossipers.values())}
        for node, gossiper in gossipers.items():
            for target, generation in spread.items():
                member = gossiper.view.get(target)
                if gossiper.view.removed.get(target, -1) < generation:
                    self.fail(f"{node} never learned that {target} (gen {generation}) was removed")
                if member is not None and member.joined <= generation:
                    self.fail(f"{node} still holds removed {target} (gen {member.generation})")
            for member in gossiper.members():
                expected = member in gossipers and gossiper.status(member) is not Status.EXITING
                if gossiper.is_alive(member) != expected:
                    self.fail(f"{node} thinks {member} alive={not expected}")

    # ---- invariants ---------------------------------------------------------------------------------

    @invariant()
    def removed_incarnations_never_reappear(self):
        if not hasattr(self, "world"):
            return
        for node in self.running():
            gossiper = self.world.process(node).gossiper
            view = gossiper.view
            for member in view.members.values():
                if member.node != node and not view.admissible(member.node, member.joined):
                    self.fail(f"{node} holds removed {member.node} (gen {member.generation})")
            for target, generation in self.removals.items():
                member = view.members.get(target)
                learned = generation <= view.removed.get(target, -1)
                if target != node and member is not None and member.joined <= generation and learned:
                    self.fail(f"{node} learned {target} (gen {generation}) was removed but holds it")
            key = (node, self.world.nodes[node].incarnation)
            before = self.tombstones_seen.get(key, {})
            if any(view.removed.get(n, -1) < g for n, g in before.items()):
                self.fail(f"{node} lost a tombstone: {before} -> {view.removed}")
            self.tombstones_seen[key] = dict(view.removed)
            if not view.admissible(node, view.members[node].joined) and not gossiper.stopped:
                if gossiper.status(node) is Status.REMOVED:
                    self.fail(f"{node} knows it was removed but still gossips")


GossipMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
test_gossip_state_machine = GossipMachine.TestCase
