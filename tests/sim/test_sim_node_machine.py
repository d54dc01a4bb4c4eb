"""A Hypothesis state machine drives five whole simulated nodes: reads and writes (read-modify-write with
the context read) at random nodes and quorums, deletes, concurrent writers, crashes, clean stops,
restarts, partitions, clogs and time passing, on a network that drops and reorders.

Checked as it goes: no read returns a value nobody wrote; no request ends in a 500 or a crashed callback.
Checked at the end (heal, quiet network, everyone restarted, hints drained, every key read at r=all):
no acknowledged write lost, nothing superseded by an acknowledged write or delete is back, the primaries
of every key hold the same causal history, and every node holds the same ring.
A failure prints the rule sequence and the simulator seed (`sim seed ...`).
"""

import functools
import random

import trio
from hypothesis import HealthCheck, note, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tools.sim.history import History, Write, check_history, check_resurrections
from tools.sim.network import NetworkConfig
from tools.sim.node_cluster import QUIET, ClientError, Lost, Refused
from tools.sim.node_workload import BUCKET, final_state, replica_divergence, ring_divergence, writer
from tools.sim.trio_run import SimSession

FAULTY = NetworkConfig(latency_s=0.0005, jitter_s=0.003, drop_p=0.005, reorder_p=0.05, reorder_delay_s=0.02)
KEYS = [f"m{i}" for i in range(4)]
NODES = [f"node{i}" for i in range(1, 6)]
QUORUM = st.sampled_from([1, 2, 3, "one", "quorum", "all"])
picks = st.integers(0, 1 << 16)


async def read_modify_write(cluster, history, node, key, r, w, value, delete):
    try:
        read = await cluster.get(node, BUCKET, key, r=r)
    except ClientError:
        return "no read"
    if read.status not in (200, 300, 404):
        return f"read {read.status}"
    seen = frozenset(read.values())
    history.record_read(key, seen)
    if delete and read.vclock is None:
        # Without a context a delete removes whatever its coordinator holds (Riak's rule), which the
        # history cannot know; the model only covers deletes that say what they saw.
        return "nothing to delete"
    write = Write(key, b"" if delete else value, seen, delete=delete)
    history.begin(write)
    try:
        if delete:
            reply = await cluster.delete(node, BUCKET, key, read.vclock, w=w)
        else:
            reply = await cluster.put(node, BUCKET, key, value, read.vclock, w=w)
        write.outcome = "ok" if reply.status == 204 else "unknown"
        return f"write {reply.status}"
    except Refused:
        write.outcome = "refused"
    except Lost:
        write.outcome = "unknown"
    return write.outcome


async def concurrent_writers(cluster, history, count, duration_s, seed):
    until_s = trio.current_time() + duration_s
    rng = random.Random(seed)
    async with trio.open_nursery() as nursery:
        for i in range(count):
            nodes = [NODES[(i + j) % len(NODES)] for j in range(len(NODES))]
            nursery.start_soon(functools.partial(writer, cluster, history, KEYS[:2], nodes, until_s,
                                                 f"b{seed}-{i}", random.Random(rng.getrandbits(64)),
                                                 delete_p=0.1, pause_s=0.1))


async def settle_and_check(cluster, history):
    cluster.network.heal()
    cluster.network.set_faults(QUIET)
    for node in cluster.ids:
        if not cluster.is_running(node):
            await cluster.start(node)
    await cluster.wait_all_up(cluster.ids, timeout_s=60)
    await cluster.wait_for(lambda: sum(cluster.hints_pending().values()) == 0, 60, "hints to drain")
    keys = sorted({w.key for w in history.writes})
    final = await final_state(cluster, keys)
    await cluster.sleep(2.0)  # read repair of the final reads
    problems = check_history(history, final) + check_resurrections(history, final)
    problems += replica_divergence(cluster, keys) + ring_divergence(cluster)
    return problems, final


class NodeClusterMachine(RuleBasedStateMachine):
    @initialize(seed=st.integers(0, 2**32 - 1))
    def start(self, seed):
        note(f"sim seed {seed}")
        self.seed = seed
        self.session = SimSession(seed, faults=FAULTY)
        self.history = History()
        self.values = 0

    def teardown(self):
        session = getattr(self, "session", None)
        if session is None:
            return
        try:
            problems, final = session.run(settle_and_check, self.history)
            note(f"final {final}; writes {self.history.outcomes()}")
            assert problems == [], "\n".join(problems) + "\n" + session.cluster.report()
        finally:
            session.close()

    # ---- helpers ----------------------------------------------------------------------------------------

    @property
    def cluster(self):
        return self.session.cluster  # read between steps only: the simulation is paused then

    def running(self):
        return self.cluster.alive()

    def down(self):
        return [n for n in NODES if not self.cluster.is_running(n)]

    @staticmethod
    def pick(nodes, index):
        return sorted(nodes)[index % len(nodes)]

    # ---- clients ----------------------------------------------------------------------------------------

    @rule(i=picks, key=st.sampled_from(KEYS), r=QUORUM, w=QUORUM, delete=st.booleans())
    def write(self, i, key, r, w, delete):
        self.values += 1
        value = f"v{self.values}".encode()
        outcome = self.session.run(read_modify_write, self.history, self.pick(NODES, i), key, r, w, value, delete)
        note(f"{'delete' if delete else 'write'} {key} -> {outcome}")

    @rule(i=picks, key=st.sampled_from(KEYS), r=QUORUM)
    def read(self, i, key, r):
        async def get(cluster):
            try:
                return await cluster.get(self.pick(NODES, i), BUCKET, key, r=r)
            except ClientError:
                return None
        reply = self.session.run(get)
        if reply is not None and reply.status in (200, 300, 404):
            self.history.record_read(key, frozenset(reply.values()))

    @rule(count=st.integers(2, 4), duration_s=st.floats(0.5, 3.0))
    def burst(self, count, duration_s):
        self.values += 1
        self.session.run(concurrent_writers, self.history, count, duration_s, self.values)

    # ---- faults -----------------------------------------------------------------------------------------

    @precondition(lambda self: len(self.down()) < 2)
    @rule(i=picks, clean=st.booleans())
    def crash(self, i, clean):
        node = self.pick(self.running(), i)
        self.session.run(lambda cluster: cluster.stop(node) if clean else cluster.crash(node))

    @precondition(lambda self: self.down())
    @rule(i=picks)
    def restart(self, i):
        node = self.pick(self.down(), i)
        self.session.run(lambda cluster: cluster.start(node))

    @rule(cut=st.lists(st.booleans(), min_size=5, max_size=5))
    def partition(self, cut):
        side = {n for n, left in zip(NODES, cut) if left}
        self.session.run(_sync, lambda cluster: cluster.network.partition(side, set(NODES) - side))

    @rule()
    def heal(self):
        self.session.run(_sync, lambda cluster: cluster.network.heal())

    @rule(i=picks, j=picks, duration_s=st.floats(0.1, 5.0))
    def clog(self, i, j, duration_s):
        src, dst = self.pick(NODES, i), self.pick(NODES, j)
        self.session.run(_sync, lambda cluster: cluster.network.clog(src, dst, duration_s))

    @rule(duration_s=st.floats(0.1, 10.0))
    def advance(self, duration_s):
        self.session.run(lambda cluster: cluster.sleep(duration_s))

    # ---- invariants -------------------------------------------------------------------------------------

    @invariant()
    def nothing_invented_and_no_internal_error(self):
        if not hasattr(self, "session"):
            return
        written = {w.value for w in self.history.writes if w.outcome != "refused" and not w.delete}
        for key, values in self.history.reads:
            assert values <= written, f"{key}: read {sorted(values - written)} that nobody wrote"
        assert self.cluster.errors == [] and self.cluster.network.errors == []


async def _sync(cluster, action):
    action(cluster)


NodeClusterMachine.TestCase.settings = settings(max_examples=10, stateful_step_count=20, deadline=None,
                                                suppress_health_check=[HealthCheck.too_slow])
test_node_cluster_machine = NodeClusterMachine.TestCase
