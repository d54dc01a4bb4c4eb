"""The history checkers (tools/sim/history.py) and the end-of-run checks can fail: fed a lost write, an
invented value, a resurrected delete or a tampered replica, they say so."""

from dynamo.storage import Delete
from tools.sim.history import History, Write, check_history, check_resurrections
from tools.sim.node_workload import BUCKET, final_state, replica_divergence
from tools.sim.trio_run import run_simulation


def test_check_history_catches_lost_and_invented_values():
    history = History()
    history.writes = [Write("k", b"a", frozenset(), "ok"), Write("k", b"b", frozenset({b"a"}), "ok"),
                      Write("k", b"c", frozenset({b"b"}), "refused")]
    assert check_history(history, {"k": frozenset({b"b"})}) == []
    assert any("lost" in p for p in check_history(history, {"k": frozenset()}))
    assert any("nobody wrote" in p for p in check_history(history, {"k": frozenset({b"b", b"c"})}))


def test_a_delete_supersedes_what_it_saw_and_nothing_it_saw_may_come_back():
    history = History()
    history.writes = [Write("k", b"a", frozenset(), "ok"), Write("k", b"", frozenset({b"a"}), "ok", delete=True),
                      Write("k", b"b", frozenset(), "ok")]
    assert check_history(history, {"k": frozenset({b"b"})}) == []
    assert check_resurrections(history, {"k": frozenset({b"b"})}) == []
    assert any("back" in p for p in check_resurrections(history, {"k": frozenset({b"a", b"b"})}))
    history.writes[1].outcome = "unknown"  # a delete that may not have happened supersedes nothing for sure
    assert check_resurrections(history, {"k": frozenset({b"a", b"b"})}) == []
    assert any("lost" in p for p in check_history(history, {"k": frozenset()}) if "b'b'" in p)


def test_the_end_of_run_checks_see_data_loss_and_a_diverged_replica():
    async def scenario(cluster):
        history = History()
        for i, key in enumerate(["x", "y"]):
            write = Write(key, f"v{i}".encode(), frozenset())
            history.begin(write)
            reply = await cluster.put(cluster.ids[i], BUCKET, key, write.value, w="all")
            write.outcome = "ok" if reply.status == 204 else "unknown"
        assert check_history(history, await final_state(cluster, ["x", "y"])) == []
        assert replica_divergence(cluster, ["x", "y"]) == []
        for node in cluster.primaries(BUCKET, "x"):  # lose x everywhere, behind the nodes' backs
            cluster.disk(node).write_batch([Delete(cluster.partition_of(BUCKET, "x"), BUCKET.encode(), b"x")])
        lost = check_history(history, await final_state(cluster, ["x", "y"]))
        assert len(lost) == 1 and "b'v0' is lost" in lost[0], lost
        late = cluster.primaries(BUCKET, "y")[2]  # misses the next write: its copy differs from the others'
        await cluster.crash(late)
        assert (await cluster.put(cluster.ids[0], BUCKET, "y", b"w", w=2)).status == 204
        assert any(late in p for p in replica_divergence(cluster, ["y"]))

    run_simulation(5, scenario)
