"""The membership-change CLI pieces that need no running node: plan and transfer tables, argument checks,
and `dynamo cluster add`'s bookkeeping in cluster.toml (the added node's config names only itself)."""

from __future__ import annotations

import tomllib

import pytest

from dynamo import cluster, expansion
from dynamo.admin import AdminError
from dynamo.change_admin import render_clear, render_plan, render_transfers, run_change
from dynamo.cli import main as cli_main
from dynamo.service.claimant import describe
from ring.change import Transition, next_ring
from ring.state import Ring


def test_plan_table_shows_counts_balance_and_spacing():
    ring = Ring.initial(["n1", "n2", "n3", "n4", "n5"], partitions=64)
    plan = {"staged": {"join": ["n6"], "leave": [], "force-remove": []},
            **describe(Transition.plan(ring, next_ring(ring, joins=["n6"]), {3}))}
    text = render_plan(plan)
    assert text.startswith("next ring v2: join n6")
    row = next(line for line in text.splitlines() if line.startswith("n6"))
    assert row.split() == ["n6", "0", "10", "10"]
    assert "balanced yes (ideal 10..11)" in text and "spacing violations 0" in text


def test_transfer_table_with_and_without_a_change():
    idle = render_transfers({"node": "n1", "ring_version": 3, "next_version": None, "moves": [],
                             "sent": {"keys": 5, "bytes": 50}, "received": {"keys": 0, "bytes": 0}})
    assert idle.splitlines()[0] == "ring v3: no change under way" and "sent 5 keys" in idle
    busy = render_transfers({"node": "n1", "ring_version": 3, "next_version": 4, "done": 1, "remaining": 1,
                             "moves": [{"partition": 7, "source": "n1", "target": "n6", "state": "active",
                                        "keys_sent": 10, "keys_per_s": 100.0, "error": None},
                                       {"partition": 9, "source": "n2", "target": "n6", "state": "done"}]})
    lines = busy.splitlines()
    assert lines[0] == "ring v3 -> v4: 1 done, 1 remaining"
    assert lines[4].split()[:5] == ["7", "n1", "n6", "active", "10"]
    assert lines[5].split()[:4] == ["9", "n2", "n6", "done"]


def test_clear_says_what_it_undid_what_stays_staged_and_who_did_not_answer():
    text = render_clear({"cleared": {"join": ["n8"], "leave": ["n4"], "force-remove": ["n3", "n5"]},
                         "kept": {"join": ["n9"]}, "unreachable": ["n2", "n9"]})
    assert text.splitlines()[0] == "cleared: join n8; leave n4; force-remove n3, n5"
    assert "still staged: join n9" in text and "stopping the node" in text
    assert "not cleared: n2, n9 did not answer" in text
    nothing = render_clear({"cleared": {"join": [], "leave": [], "force-remove": []}, "kept": {"join": []},
                            "unreachable": []})
    assert nothing == "nothing staged to clear"


def test_commands_needing_a_target_say_so():
    with pytest.raises(AdminError, match="seed URL"):
        run_change("join", "http://127.0.0.1:1")
    with pytest.raises(AdminError, match="node id"):
        run_change("force-remove", "http://127.0.0.1:1")
    with pytest.raises(AdminError, match="cannot reach"):
        run_change("plan", "http://127.0.0.1:1", timeout_s=1)


def test_cli_admin_plan_failure_is_one_line(capsys):
    assert cli_main(["admin", "plan", "--node", "127.0.0.1:1", "--timeout", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dynamo admin plan: cannot reach") and err.count("\n") == 1


def test_added_nodes_are_recorded_and_start_alone(tmp_path):
    spec = cluster.plan_cluster(tmp_path, 3, http_port=31001, rpc_port=32001, partitions=64)
    cluster.write_configs(spec)
    grown = expansion.record_added(tmp_path)
    assert [n.node_id for n in grown.nodes] == ["node1", "node2", "node3", "node4"]
    assert (grown.node("node4").http_port, grown.node("node4").rpc_port) == (31004, 32004)
    assert tomllib.loads((tmp_path / cluster.CLUSTER_FILE).read_text())["added"] == 1
    assert [m["id"] for m in cluster.node_config(grown, grown.node("node4"))["members"]] == ["node4"]
    assert [m["id"] for m in cluster.node_config(grown, grown.node("node1"))["members"]] == ["node1", "node2",
                                                                                           "node3"]
    again = cluster.plan_cluster(tmp_path, http_port=31001, rpc_port=32001)  # a rerun of `cluster up`
    assert len(again.nodes) == 4 and again.secret == spec.secret


def test_cluster_add_refuses_without_a_running_supervisor(tmp_path):
    with pytest.raises(cluster.ClusterError, match="holds no cluster"):
        expansion.cluster_add(tmp_path / "none")
    spec = cluster.plan_cluster(tmp_path, 3, http_port=31001, rpc_port=32001)
    cluster.write_configs(spec)
    with pytest.raises(cluster.ClusterError, match="no `dynamo cluster up` is running"):
        expansion.cluster_add(tmp_path)


def test_a_node_still_joining_is_told_to_wait_before_it_can_leave():
    from types import SimpleNamespace

    from dynamo.service.claimant import ChangeError, Claimant

    ring = Ring.initial(["n1", "n2", "n3", "n4", "n5"], partitions=64)
    joining = Transition.plan(ring, next_ring(ring, joins=["n6"]), {3})
    membership = SimpleNamespace(node_id="n6", ring=ring, transition=joining, watchers=[])
    claimant = Claimant(membership, None, n_vals=lambda: {3}, keys_stored=lambda: 0, state_dir=None)
    with pytest.raises(ChangeError, match=r"n6 is still joining \(ring v1 -> v2, data still moving\)"):
        claimant.leave()
    membership.transition = None  # never joined at all
    with pytest.raises(ChangeError, match="n6 is not a member of the ring"):
        claimant.leave()


def test_a_node_has_left_once_its_leave_completed_and_not_before():
    from dynamo.service.claimant import SavedRing, left_at
    from gossip.membership import Status

    ring = Ring.initial(["n1", "n2", "n3", "n4"], partitions=64)
    leaving = Transition.plan(ring, next_ring(ring, leaves=["n4"]), {3})
    assert left_at(SavedRing(ring, None, {}, Status.LEAVING), "n4") is None        # staged, not committed
    assert left_at(SavedRing(ring, leaving, {}, Status.LEAVING), "n4") is None     # handing off
    assert left_at(SavedRing(leaving.next, None, {}, Status.LEAVING), "n4") == 2   # done: it left
    assert left_at(SavedRing(leaving.next, None, {}, Status.EXITING), "n4") == 2   # and said so by gossip
    assert left_at(SavedRing(leaving.next, None, {}, Status.VALID), "n1") is None
    assert left_at(None, "n4") is None
