"""Real processes: a 6th node joins a running 5-node cluster holding data, as `dynamo cluster add` does it.

The supervisor starts the added node (expansion.start_added, the hook `dynamo cluster up` polls), the join
is staged through node1 and committed there; while partitions move, every key is read back again and
again from the nodes in turn. At the end every node's /admin/ring shows the 6-node ring, balanced, and
the new node stores data.
"""

from __future__ import annotations

import itertools
import time

from dynamo import cluster, expansion
from dynamo.admin import fetch_json

SETTINGS = {"gossip_interval_s": 0.2, "handoff_interval_s": 0.3, "request_timeout_s": 8.0,
            "transfer_batch_keys": 16}
KEYS = 400


def test_sixth_node_joins_while_every_key_stays_readable(tmp_path, helpers):
    base = helpers.free_port_base(12)
    spec = cluster.plan_cluster(tmp_path, 5, http_port=base, rpc_port=base + 6, partitions=64,
                                node_settings=SETTINGS)
    supervisor = cluster.Supervisor(spec)
    try:
        cluster.write_configs(spec)
        supervisor.start_all()
        supervisor.wait_ready(90)
        assert not supervisor.wait_converged(30)
        urls = [node.http_url for node in spec.nodes]
        for i in range(KEYS):
            reply = helpers.request(urls[i % 5], "PUT", helpers.object_path("m", f"k{i}"), f"v{i}".encode(),
                                    {"Content-Type": "text/plain"})
            assert reply.status in (200, 204), reply.text

        spec = expansion.record_added(tmp_path)
        assert expansion.start_added(supervisor) == ["node6"]
        supervisor.wait_ready(90, ["node6"])
        report = expansion.join_and_commit(spec, "node6")
        assert "committed ring v2" in report

        readers = itertools.cycle(node.http_url for node in spec.nodes)
        rounds, deadline = 0, time.monotonic() + 60
        while True:  # poll every key until every node has settled on ring v2
            for i in range(0, KEYS, 7):
                url = next(readers)
                reply = helpers.request(url, "GET", helpers.object_path("m", f"k{i}"))
                assert reply.status == 200 and reply.body == f"v{i}".encode(), \
                    (i, url, reply.status, reply.text, fetch_json(url, "/admin/members"))
            rounds += 1
            transfers = [fetch_json(node.http_url, "/admin/transfers") for node in spec.nodes]
            if all(t["ring_version"] == 2 and t["next_version"] is None for t in transfers):
                break
            assert time.monotonic() < deadline, transfers[0]
        for i in range(KEYS):  # and after the move, all of them
            reply = helpers.request(urls[i % 5], "GET", helpers.object_path("m", f"k{i}"))
            assert reply.status == 200 and reply.body == f"v{i}".encode(), (i, reply.status)
        for node in spec.nodes:
            ring = fetch_json(node.http_url, "/admin/ring")
            counts = {name: info["partitions"] for name, info in ring["nodes"].items()}
            assert ring["version"] == 2 and set(counts) == {f"node{i}" for i in range(1, 7)}
            assert set(counts.values()) <= {64 // 6, 64 // 6 + 1}, counts
        assert fetch_json(spec.node("node6").http_url, "/stats")["keys_stored"] > 0
        sent = sum(t["sent"]["keys"] for t in transfers)
        assert sent > 0 and transfers[5]["received"]["keys"] > 0
        print(f"polled all keys {rounds} times during the move; {sent} keys handed off")
    finally:
        print("\n".join(f"--- {n.node_id}\n{cluster.log_tail(n.log_path, 8)}" for n in spec.nodes))
        supervisor.stop_all(grace_s=10)
