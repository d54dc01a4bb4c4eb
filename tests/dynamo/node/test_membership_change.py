"""Membership changes on in-process nodes: join, leave, force-remove, and a transfer that resumes.

Each test writes keys, stages a change over HTTP (/admin/join, /admin/leave, /admin/force-remove), commits
it and waits until every running node settles on the next ring. Then it checks where the data is: every
key is on every node of its new preference list (read from the stores directly, so a read repair cannot
hide a missing transfer), and the ring is balanced.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import trio

from dynamo.config import Member
from dynamo.object import decode_object
from dynamo.service.claimant import UNJOIN_ROUNDS, left_at, load_ring_file
from dynamo.service.ownership import TRANSFER_TYPE
from dynamo.storage import MemoryBackend
from gossip.membership import Status
from ring.hashing import partition_for_key
from ring.preflist import replicas_of_partition
from ring.report import ownership_report

KEYS = 120


async def add_standalone(cluster, node_id: str, data_root) -> None:
    """Start a node that knows only itself (as `dynamo cluster add` does), in the cluster's nursery."""
    rpc = await trio.open_tcp_listeners(0, host="127.0.0.1")
    http = await trio.open_tcp_listeners(0, host="127.0.0.1")
    ports = rpc[0].socket.getsockname()[1], http[0].socket.getsockname()[1]
    me = Member(node_id, f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}")
    model = cluster.handles[cluster.ids[0]]  # same cluster, secret and settings; only itself as member
    config = dataclasses.replace(model.config, node_id=node_id, rpc_port=ports[0], http_port=ports[1],
                                 data_dir=str(data_root / node_id), members=(me,))
    cluster.handles[node_id] = type(model)(config, MemoryBackend())
    await cluster.start(node_id, listeners=(rpc, http))


async def post(cluster, node_id: str, path: str, body: dict | None = None):
    payload = json.dumps(body).encode() if body is not None else b""
    return await cluster.client(node_id).request("POST", path, payload, {"Content-Type": "application/json"})


async def write_keys(cluster, node_id: str, prefix: str, count: int) -> list[str]:
    client = cluster.client(node_id)
    keys = [f"{prefix}{i}" for i in range(count)]
    for key in keys:
        reply = await client.put("b", key, key.encode())
        assert reply.status in (200, 204), reply
    return keys


def running(cluster) -> list[str]:
    return [n for n in cluster.ids if cluster.handles[n].running]


async def wait_settled(cluster, version: int, timeout_s: float = 20.0) -> None:
    def settled() -> bool:
        return all(cluster.node(n).membership.ring.version == version and cluster.node(n).membership.transition
                   is None for n in running(cluster))
    await cluster.wait_until(settled, timeout_s)


def check_placement(cluster, keys: list[str]) -> None:
    """Every key is stored on every node of its preference list in the settled ring."""
    ring = cluster.node(running(cluster)[0]).membership.ring
    missing = []
    for key in keys:
        partition = partition_for_key(b"b", key.encode(), ring.partitions)
        for node in replicas_of_partition(ring, partition, 3):
            if cluster.node(node).replica.read(b"b", key.encode()) is None:
                missing.append((key, node))
    assert not missing, f"{len(missing)} copies missing, e.g. {missing[:5]}"


def check_no_strays(cluster) -> None:
    """A node keeps copies only where it is a replica (one that held its own dots retired its actor first)."""
    ring = cluster.node(running(cluster)[0]).membership.ring
    for node_id in running(cluster):
        node = cluster.node(node_id)
        for partition in node.backend.partitions():
            if node_id not in replicas_of_partition(ring, partition, 3):
                assert node.backend.scan(partition, None, 10) == [], (node_id, partition)


def test_join_moves_partitions_and_keeps_writes(local_cluster, tmp_path, trio_run):
    async def main():
        async with local_cluster(4) as cluster:
            keys = await write_keys(cluster, "n1", "k", KEYS)
            await add_standalone(cluster, "n5", tmp_path)
            n1_rpc = cluster.handles["n1"].config.rpc_address
            reply = await post(cluster, "n5", "/admin/join", {"seed": "n1", "rpc": n1_rpc})
            assert reply.status == 200, reply
            await cluster.wait_until(lambda: cluster.node("n1").claimant.staged()[0] == ["n5"])
            plan = (await cluster.client("n1").request("GET", "/admin/plan")).json()
            assert plan["staged"]["join"] == ["n5"]
            assert plan["partitions"]["n5"] == {"before": 0, "after": 64 // 5}
            assert plan["balanced"] and plan["spacing_violations"] == 0
            during: list[str] = []

            async def writer():
                for i in range(60):
                    during.extend(await write_keys(cluster, "n3", f"d{i}-", 1))
                    await trio.sleep(0.01)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                reply = await post(cluster, "n2", "/admin/commit")  # n2 asks the claimant, n1
                assert reply.status == 200, reply
                assert reply.json()["claimant"] == "n1" and reply.json()["transfers"] > 0
            await wait_settled(cluster, 2)
            await trio.sleep(0.3)  # the last writes' replicate calls land
            ring = cluster.node("n5").membership.ring
            assert "n5" in ring.members and ownership_report(ring).balanced
            assert len(ring.partitions_of("n5")) == 64 // 5
            check_placement(cluster, keys + during)
            # a few rounds later the old owners drop what they no longer replicate
            await cluster.wait_until(lambda: all(cluster.node(n).ownership._cleaned_version == 2
                                                 for n in cluster.ids), 20)
            assert sum(cluster.node(n).ownership.keys_dropped for n in cluster.ids) > 0
            check_no_strays(cluster)
            # n1 coordinated every write above, so the copies it gave up held its dots: it retired its actor.
            assert cluster.node("n1").forgetting.retirements >= 1
            check_placement(cluster, keys + during)
            report = (await cluster.client("n1").request("GET", "/admin/transfers")).json()
            assert report["next_version"] is None and report["ring_version"] == 2
            for key in keys[:20]:
                assert (await cluster.client("n5").get("b", key)).body == key.encode()
            # ring.json outranks the config (which names only n5): a restart comes back into the cluster
            await cluster.stop("n5")
            await cluster.start("n5")
            membership = cluster.node("n5").membership
            assert membership.ring == ring and membership.gossiper.status("n5").value == "valid"
            await cluster.wait_up("n5")
            assert (await cluster.client("n5").get("b", keys[0], r=3)).body == keys[0].encode()
    trio_run(main, 60)


def test_a_write_routed_by_the_old_ring_is_passed_on_to_the_new_owner(local_cluster, tmp_path, trio_run):
    """A coordinator that has not heard of a ring change yet replicates to the old owners only; the
    replica that knows of it passes the copy on to the pending owner, even while no transfer runs."""
    async def main():
        async with local_cluster(4) as cluster:
            keys = await write_keys(cluster, "n1", "k", 10)
            await add_standalone(cluster, "n5", tmp_path)
            release = trio.Event()
            transfer = cluster.node("n5").rpc_handlers[TRANSFER_TYPE]

            async def held_transfer(peer_id, body):  # no batch reaches n5 until the test says so
                await release.wait()
                return await transfer(peer_id, body)
            cluster.node("n5").rpc_handlers[TRANSFER_TYPE] = held_transfer
            n1_rpc = cluster.handles["n1"].config.rpc_address
            assert (await post(cluster, "n5", "/admin/join", {"seed": "n1", "rpc": n1_rpc})).status == 200
            await cluster.wait_until(lambda: cluster.node("n1").claimant.staged()[0] == ["n5"])
            assert (await post(cluster, "n1", "/admin/commit")).status == 200
            n1 = cluster.node("n1")
            assert n1.membership.transition is not None and n1.coordinator.routing_version() == 2
            moving = next(f"fwd{i}" for i in range(10_000) if "n5" in n1.membership.pending(
                partition_for_key(b"b", f"fwd{i}".encode(), 64), 3))
            blob = next(b for b in (n1.replica.read(b"b", k.encode()) for k in keys) if b is not None)  # any will do
            sender = cluster.node("n2").pool
            # Routed by ring v2 (the sender knew of the change): nothing to pass on.
            assert await sender.call("n1", "kv.replicate", [b"b", b"other", blob, None, 2, 3], 5) is True
            assert n1.stats.writes_forwarded == 0
            # Routed by ring v1: n1 passes it on to n5, whose transfers are all still held.
            assert await sender.call("n1", "kv.replicate", [b"b", moving.encode(), blob, None, 1, 3], 5) is True
            assert n1.stats.writes_forwarded == 1
            await cluster.wait_until(lambda: cluster.node("n5").replica.read(b"b", moving.encode()) == blob, 10)
            release.set()
            await wait_settled(cluster, 2)
            check_placement(cluster, keys)
            assert cluster.node("n5").replica.read(b"b", moving.encode()) == blob  # n5 owns it now
    trio_run(main, 60)


def test_leave_hands_off_and_stops(local_cluster, trio_run):
    async def main():
        async with local_cluster(4) as cluster:
            keys = await write_keys(cluster, "n1", "k", KEYS)
            reply = await post(cluster, "n4", "/admin/leave")
            assert reply.status == 200, reply
            # Commit at once, through the leaver: the claimant (n1) waits until gossip brings it the leave.
            assert cluster.node("n1").claimant.staged()[1] == []
            reply = await post(cluster, "n4", "/admin/commit")
            assert reply.status == 200, reply
            assert reply.json()["changes"]["leave"] == ["n4"]
            await cluster.wait_until(lambda: not cluster.handles["n4"].running, 20)  # it stops by itself
            await wait_settled(cluster, 2)
            ring = cluster.node("n1").membership.ring
            assert ring.members == ("n1", "n2", "n3")
            check_placement(cluster, keys)
            assert cluster.node("n4").claimant.left
            # The others show it as left, not as a failure.
            await cluster.wait_until(lambda: cluster.node("n1").membership.member_status("n4") == "left", 10)
            ring_report = (await cluster.client("n1").request("GET", "/admin/ring")).json()
            assert ring_report["nodes"]["n4"]["status"] == "left" and ring_report["nodes"]["n4"]["partitions"] == 0
            # Its data dir says so: it refuses to start again on it (a wipe and a join bring it back).
            refused = None
            try:
                await cluster.start("n4")
            except BaseException as error:  # ConfigError, perhaps wrapped in trio's ExceptionGroup
                refused = error
            assert "n4 left the cluster at ring v2" in repr(refused), repr(refused)
    trio_run(main, 60)


def test_a_leave_cleared_as_it_was_committed_still_completes(local_cluster, trio_run):
    """The race of `clear` with a commit: the leaver turns VALID after the claimant committed its leave.
    The commit wins: once the ring no longer names it, the node leaves and stops as a LEAVING one would."""
    async def main():
        async with local_cluster(4) as cluster:
            keys = await write_keys(cluster, "n1", "k", KEYS)
            assert (await post(cluster, "n4", "/admin/leave")).status == 200
            assert (await post(cluster, "n4", "/admin/commit")).status == 200
            n4 = cluster.node("n4")
            await cluster.wait_until(lambda: n4.membership.transition is not None or n4.claimant.left, 10)
            if not n4.claimant.left:
                n4.membership.gossiper.set_status(Status.VALID)  # what a clear heard before the commit does
            await cluster.wait_until(lambda: not cluster.handles["n4"].running, 20)
            assert n4.claimant.left
            await wait_settled(cluster, 2)
            assert cluster.node("n1").membership.ring.members == ("n1", "n2", "n3")
            check_placement(cluster, keys)
    trio_run(main, 60)


def test_force_remove_copies_from_the_survivors(local_cluster, trio_run):
    async def main():
        async with local_cluster(5) as cluster:
            keys = await write_keys(cluster, "n1", "k", KEYS)
            await cluster.stop("n5")
            await cluster.wait_down("n5")
            reply = await post(cluster, "n2", "/admin/force-remove", {"node": "n5"})
            assert reply.status == 200, reply
            plan = (await cluster.client("n2").request("GET", "/admin/plan")).json()
            assert plan["staged"]["force-remove"] == ["n5"]
            reply = await post(cluster, "n2", "/admin/commit")
            assert reply.status == 200, reply
            await wait_settled(cluster, 2)
            ring = cluster.node("n1").membership.ring
            assert "n5" not in ring.members and ownership_report(ring).balanced
            check_placement(cluster, keys)
            assert all(cluster.node(n).membership.gossiper.status("n5").value == "removed"
                       for n in running(cluster))
    trio_run(main, 60)


def test_hints_for_a_force_removed_node_go_to_the_keys_new_primaries(local_cluster, trio_run):
    """A fallback holds a hint for a primary that is then force-removed: the hint can never reach it, so the
    fallback hands the key to the key's primaries in the new ring instead, then drops its own copy."""
    async def main():
        async with local_cluster(5) as cluster:
            victim, *others = cluster.primaries("b", "hinted")
            client = cluster.client(others[0])
            assert (await client.put("b", "hinted", b"v1", w="all")).status == 204
            await cluster.stop(victim)
            await cluster.wait_down(victim)
            context = (await client.get("b", "hinted")).headers["x-riak-vclock"]
            reply = await client.put("b", "hinted", b"v2", w=3, headers={"X-Riak-Vclock": context})
            assert reply.status == 204 and "hints=1" in reply.headers["x-dynamo-replicas"], reply
            fallback = next(n for n in cluster.ids if n != victim and cluster.node(n).hints.count(victim))
            assert (await post(cluster, others[0], "/admin/force-remove", {"node": victim})).status == 200
            assert (await post(cluster, others[0], "/admin/commit")).status == 200
            await wait_settled(cluster, 2)
            await cluster.wait_until(lambda: cluster.node(fallback).hints.count(victim) == 0, 20)
            ring = cluster.node(others[0]).membership.ring
            owners = replicas_of_partition(ring, partition_for_key(b"b", b"hinted", ring.partitions), 3)
            for owner in owners:
                assert decode_object(cluster.node(owner).replica.read(b"b", b"hinted")).siblings[0].value == b"v2"
            if fallback not in owners:
                await cluster.wait_until(lambda: cluster.node(fallback).replica.read(b"b", b"hinted") is None, 10)
    trio_run(main, 60)


def test_clear_unstages_every_members_leave_removals_and_join(local_cluster, tmp_path, trio_run):
    async def main():
        async with local_cluster(4) as cluster:
            assert (await post(cluster, "n4", "/admin/leave")).status == 200
            assert (await post(cluster, "n2", "/admin/force-remove", {"node": "n3"})).status == 200
            await add_standalone(cluster, "n9", tmp_path)
            n1_rpc = cluster.handles["n1"].config.rpc_address
            assert (await post(cluster, "n9", "/admin/join", {"seed": "n1", "rpc": n1_rpc})).status == 200
            await cluster.wait_until(lambda: cluster.node("n1").claimant.staged()[:2] == (["n9"], ["n4"]))
            assert (tmp_path / "n9" / "ring.json").exists()  # the joiner holds the cluster's ring

            reply = await post(cluster, "n1", "/admin/clear")  # asked of a node that staged nothing itself
            assert reply.status == 200, reply
            assert reply.json() == {"cleared": {"join": ["n9"], "leave": ["n4"], "force-remove": ["n3"]},
                                    "kept": {"join": []}, "unreachable": []}
            assert cluster.node("n4").membership.gossiper.status("n4").value == "valid"
            assert cluster.node("n2").claimant.removals == set()
            assert json.loads((tmp_path / "n9" / "ring.json").read_text())["status"] == "exiting"

            # The joiner leaves the cluster's gossip and stops; no member has anything staged any more.
            await cluster.wait_until(lambda: not cluster.handles["n9"].running, 20)
            await cluster.wait_until(lambda: all(cluster.node(n).claimant.staged() == ([], [], [])
                                                 and "n9" not in cluster.node(n).membership.gossiper.live_members()
                                                 for n in running(cluster)), 20)
            reply = await post(cluster, "n1", "/admin/commit")
            assert reply.status == 409 and "no staged changes" in reply.text
            again = (await post(cluster, "n3", "/admin/clear")).json()
            assert again["cleared"] == {"join": [], "leave": [], "force-remove": []} and again["kept"] == {"join": []}
            assert cluster.node("n1").membership.ring.version == 1
            assert (await cluster.client("n4").put("b", "after", b"x")).status in (200, 204)

            # Like a node that left, it does not start again on that data (node.py and `dynamo cluster up`
            # refuse what left_at names); wiped, it can join anew.
            assert left_at(load_ring_file(str(tmp_path / "n9")), "n9") == 1
            shutil.rmtree(tmp_path / "n9")
            await add_standalone(cluster, "n9", tmp_path)
            assert cluster.node("n9").membership.ring.members == ("n9",)
            n1_rpc = cluster.handles["n1"].config.rpc_address
            assert (await post(cluster, "n9", "/admin/join", {"seed": "n1", "rpc": n1_rpc})).status == 200
            await cluster.wait_until(lambda: cluster.node("n1").claimant.staged()[0] == ["n9"], 20)
            assert (await post(cluster, "n1", "/admin/commit")).status == 200
            await wait_settled(cluster, 2, timeout_s=30)
            assert cluster.node("n1").membership.ring.members == ("n1", "n2", "n3", "n4", "n9")
    trio_run(main, 90)


def test_a_join_cleared_as_it_was_committed_still_completes(local_cluster, tmp_path, trio_run):
    """The race of `clear` with a commit, for a join: the claimant took the join before it heard that the
    joiner was cleared. The commit wins: the joiner stays, with its leave staged."""
    async def main():
        async with local_cluster(3) as cluster:
            keys = await write_keys(cluster, "n1", "k", KEYS)
            await add_standalone(cluster, "n9", tmp_path)
            n1_rpc = cluster.handles["n1"].config.rpc_address
            assert (await post(cluster, "n9", "/admin/join", {"seed": "n1", "rpc": n1_rpc})).status == 200
            await cluster.wait_until(lambda: cluster.node("n1").claimant.staged()[0] == ["n9"])
            assert (await post(cluster, "n1", "/admin/commit")).status == 200
            n9 = cluster.node("n9")
            n9.claimant._unjoin()  # what a clear that reached n9 before the commit's gossip does
            await wait_settled(cluster, 2, timeout_s=30)
            interval_s = n9.config.gossip_interval_s
            await trio.sleep((UNJOIN_ROUNDS + 5) * interval_s)  # past the joiner's wait: it must not have stopped
            assert cluster.handles["n9"].running
            assert cluster.node("n1").membership.ring.members == ("n1", "n2", "n3", "n9")
            assert n9.membership.gossiper.status("n9") is Status.LEAVING
            check_placement(cluster, keys)
            plan = (await cluster.client("n1").request("GET", "/admin/plan")).json()
            assert plan["staged"]["leave"] == ["n9"]
            assert (tmp_path / "n9" / "ring.json").exists()  # saved again: a restart rejoins its cluster
    trio_run(main, 90)


def test_changes_refused_with_a_reason(local_cluster, tmp_path, trio_run):
    async def main():
        async with local_cluster(3) as cluster:
            reply = await post(cluster, "n1", "/admin/commit")
            assert reply.status == 409 and "no staged changes" in reply.text
            reply = await post(cluster, "n1", "/admin/join", {"seed": "n2", "rpc": "127.0.0.1:1"})
            assert reply.status == 409 and "already in a cluster" in reply.text
            reply = await post(cluster, "n1", "/admin/force-remove", {"node": "n1"})
            assert reply.status == 409
            reply = await post(cluster, "n1", "/admin/force-remove", {"nod": "n2"})
            assert reply.status == 400
            await write_keys(cluster, "n1", "k", 3)
            await add_standalone(cluster, "n9", tmp_path)
            assert (await cluster.client("n9").put("b", "own", b"x", w=1, dw=1)).status in (200, 204)
            reply = await post(cluster, "n9", "/admin/join", {"seed": "n1", "rpc": "127.0.0.1:1"})
            assert reply.status == 409 and "holds data" in reply.text
    trio_run(main, 30)


def test_interrupted_transfer_resumes_from_its_cursor(local_cluster, tmp_path, trio_run):
    async def main():
        async with local_cluster(4, transfer_batch_keys=2, transfer_window=1) as cluster:
            keys = await write_keys(cluster, "n1", "k", 300)
            await add_standalone(cluster, "n5", tmp_path)
            target = cluster.node("n5")
            real = target.ownership.rpc_transfer
            batches = 0

            async def flaky(peer_id, body):  # every stream's 3rd batch fails once, until healed
                nonlocal batches
                batches += 1
                if batches % 3 == 0 and not healed.is_set():
                    raise ValueError("injected failure")
                return await real(peer_id, body)
            healed = trio.Event()
            target.rpc_handlers["kv.transfer"] = flaky
            n1_rpc = cluster.handles["n1"].config.rpc_address
            assert (await post(cluster, "n5", "/admin/join", {"seed": "n1", "rpc": n1_rpc})).status == 200
            await cluster.wait_until(lambda: cluster.node("n1").claimant.staged()[0] == ["n5"])
            assert (await post(cluster, "n1", "/admin/commit")).status == 200
            await cluster.wait_until(lambda: any(p.failures for n in cluster.ids
                                                 for p in cluster.node(n).ownership.progress.values()), 20)
            healed.set()
            await wait_settled(cluster, 2, 40)
            check_placement(cluster, keys)
            resumed = [(n, p) for n in cluster.ids for p in cluster.node(n).ownership.progress.values()
                       if p.failures]
            assert resumed
            for node, progress in resumed:  # acked batches were not sent again: it went on from the cursor
                stored = cluster.node(node).backend.count(progress.move.partition)
                assert progress.done and progress.keys_sent == stored, (node, progress)
    trio_run(main, 60)
