"""The node as a process: identity on disk, SQLite storage across a restart, config parsing, main()."""

from __future__ import annotations

import json

import pytest
import trio

from dynamo.config import ConfigError, Member, NodeConfig, config_from_mapping, load_config
from dynamo.node import Node, load_identity, main, mark_clean_stop
from dynamo.storage.uring import FsyncRing


def test_identity_keeps_its_incarnation_and_raises_its_generation(tmp_path):
    first = load_identity(str(tmp_path), "n1")
    mark_clean_stop(str(tmp_path), "n1", first)
    second = load_identity(str(tmp_path), "n1")
    assert second.incarnation == first.incarnation
    assert second.generation > first.generation and second.joined == first.joined
    # No clean stop after `second` (a crash): a new actor, the same data and gossip membership.
    third = load_identity(str(tmp_path), "n1")
    assert third.incarnation != second.incarnation
    assert third.generation > second.generation and third.joined == first.joined
    # A file written before the "running" flag existed counts as an unclean stop.
    legacy = json.loads((tmp_path / "node.json").read_text())
    del legacy["running"]
    (tmp_path / "node.json").write_text(json.dumps(legacy))
    assert load_identity(str(tmp_path), "n1").incarnation != third.incarnation
    fresh = load_identity(str(tmp_path), "n1", fresh_store=True)
    assert fresh.incarnation != first.incarnation and fresh.generation > second.generation
    with pytest.raises(ConfigError, match="belongs to node"):
        load_identity(str(tmp_path), "n2")
    (tmp_path / "node.json").write_text("{garbage")
    with pytest.raises(ConfigError, match="unreadable"):
        load_identity(str(tmp_path), "n1")


def test_sqlite_node_keeps_data_and_actor_across_a_restart_and_a_wipe_gets_a_new_actor(tmp_path, trio_run):
    async def one_life(data_dir, write: bytes | None):
        config = NodeConfig(node_id="solo", rpc_port=0, http_port=0, data_dir=str(data_dir), n_val=1, r=1, w=1,
                            dw=1, rw=1, gossip_interval_s=0.1, handoff_interval_s=0.1)
        async with trio.open_nursery() as nursery:
            node = await nursery.start(Node(config).run)
            app = node.http_server.app
            from dynamo.http.message import make_request
            if write is not None:
                reply = await app(make_request("PUT", "/buckets/b/keys/k", body=write))
                assert reply.status == 204, reply
            got = await app(make_request("GET", "/buckets/b/keys/k"))
            nursery.cancel_scope.cancel()
            return node.actor, got

    async def main():
        actor, got = await one_life(tmp_path / "solo", b"durable")
        assert got.status == 200 and got.body == b"durable"
        again, got = await one_life(tmp_path / "solo", None)
        assert again == actor and got.body == b"durable"
        (tmp_path / "solo" / "store.sqlite3").unlink()
        wiped, got = await one_life(tmp_path / "solo", None)
        assert got.status == 404 and wiped != actor and wiped.startswith("solo:")
    trio_run(main)


def test_a_force_removal_staged_on_a_node_survives_its_restart_until_cleared(tmp_path, trio_run):
    members = (Member("solo", "127.0.0.1:0", "127.0.0.1:0"), Member("gone", "127.0.0.1:9", "127.0.0.1:9"))

    async def one_life(change):
        config = NodeConfig(node_id="solo", rpc_port=0, http_port=0, data_dir=str(tmp_path / "solo"), n_val=1,
                            r=1, w=1, dw=1, rw=1, members=members)
        async with trio.open_nursery() as nursery:
            node = await nursery.start(Node(config).run)
            staged = set(node.claimant.removals)
            change(node.claimant)
            nursery.cancel_scope.cancel()
        return staged

    async def main():
        assert await one_life(lambda claimant: claimant.force_remove("gone")) == set()
        assert await one_life(lambda claimant: claimant.clear_here()) == {"gone"}  # kept across the restart
        assert await one_life(lambda claimant: None) == set()  # and the clear too
        (tmp_path / "solo" / "staged.json").write_text("{garbage")
        assert await one_life(lambda claimant: None) == set()  # unreadable: logged, nothing staged
    trio_run(main)


@pytest.mark.parametrize("from_loop, background", [(True, True), (True, False), (False, True)])
def test_commit_settings_decide_where_a_sqlite_node_writes_and_flushes(tmp_path, trio_run, from_loop, background):
    """commit_from_loop (the default) writes a put's small group commits from the event loop; false, from
    the worker thread. fsync_in_background (the default) flushes the loop's commits through io_uring,
    where the kernel offers it; false, or commits from the thread, flush where they are written. /stats
    counts each."""
    ring = FsyncRing.open()
    if ring is not None:
        ring.close()

    async def main():
        config = NodeConfig(node_id="solo", rpc_port=0, http_port=0, data_dir=str(tmp_path / "solo"), n_val=1,
                            r=1, w=1, dw=1, rw=1, commit_from_loop=from_loop, fsync_in_background=background)
        async with trio.open_nursery() as nursery:
            node = await nursery.start(Node(config).run)
            from dynamo.http.message import make_request
            for number in range(5):
                reply = await node.http_server.app(make_request("PUT", f"/buckets/b/keys/k{number}", body=b"v"))
                assert reply.status == 204, reply
            stats = await node.stats_report()
            nursery.cancel_scope.cancel()
        batches, in_loop, slow, synced = (stats[name] for name in (
            "commit_batches", "commit_batches_in_loop", "commit_thread_spells", "commit_background_syncs"))
        assert batches >= 5
        if not from_loop:
            assert in_loop == 0 and slow == 0
        elif slow == 0:  # a stalling disk (a write over 50 ms) would send the next ones to the thread
            assert in_loop == batches
        else:
            assert in_loop >= 1
        assert synced == (in_loop if from_loop and background and ring is not None else 0)
    trio_run(main)


def test_config_from_toml_with_members_and_overrides(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text('node_id = "a"\nrpc = "127.0.0.1:7101"\nhttp = "127.0.0.1:8101"\npartitions = 64\n'
                    '[[members]]\nid = "a"\nrpc = "127.0.0.1:7101"\nhttp = "127.0.0.1:8101"\n'
                    '[[members]]\nid = "b"\nrpc = "127.0.0.1:7102"\nhttp = "127.0.0.1:8102"\n')
    config = load_config(path, n_val=2, data_dir=None, backend="memory")
    assert (config.node_id, config.rpc_port, config.http_port, config.partitions, config.n_val) == \
        ("a", 7101, 8101, 64, 2)
    assert config.member_ids() == ("a", "b") and config.data_dir is None
    assert NodeConfig().members == (Member("node1", "127.0.0.1:7001", "127.0.0.1:8001"),)
    assert NodeConfig(node_id="x").data_dir == "dynamo-data/x"


@pytest.mark.parametrize("settings, message", [
    ({"partitions": 100}, "power of two"),
    ({"n_val": 0}, "n_val"),
    ({"r": "most"}, "r must be"),
    ({"w": 4}, "w must be"),
    ({"node_id": "a:b"}, "node id"),
    ({"rpc": "nowhere"}, "host:port"),
    ({"backend": "rocks"}, "backend"),
    ({"gossip_interval_s": 0}, "gossip_interval_s"),
    ({"commit_from_loop": "yes"}, "commit_from_loop must be true or false"),
    ({"fsync_in_background": 1}, "fsync_in_background must be true or false"),
    ({"colour": "blue"}, "unknown setting"),
    ({"members": [{"id": "other", "rpc": "127.0.0.1:1", "http": "127.0.0.1:2"}]}, "not in members"),
    ({"members": [{"id": "node1"}]}, "host:port"),
])
def test_bad_settings_raise_config_error(settings, message):
    with pytest.raises(ConfigError, match=message):
        config_from_mapping({}, **settings)


def test_load_config_reports_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("node_id = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_main_refuses_bad_flags_with_exit_code_2(capsys):
    assert main(["--partitions", "100"]) == 2
    assert "power of two" in capsys.readouterr().err


def test_identity_file_is_json_naming_the_node(tmp_path):
    load_identity(str(tmp_path), "n7")
    saved = json.loads((tmp_path / "node.json").read_text())
    assert saved["node_id"] == "n7" and len(saved["incarnation"]) == 8


def _start_process(tmp_path):
    import subprocess
    import sys
    command = [sys.executable, "-m", "dynamo.node", "--node-id", "solo", "--rpc", "127.0.0.1:0", "--http",
               "127.0.0.1:0", "--data-dir", str(tmp_path / "solo"), "--n-val", "1", "--log-level", "INFO"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "serving HTTP on" in line:
            port = int(line.split("serving HTTP on ")[1].split(" ")[0].rsplit(":", 1)[1])
            return process, port, lines
    raise AssertionError(f"node did not start: {''.join(lines)}")


def test_node_process_stops_cleanly_on_sigterm_and_keeps_its_data(tmp_path):
    import http.client
    import signal
    process, port, lines = _start_process(tmp_path)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("PUT", "/buckets/b/keys/k", body=b"kept", headers={"Content-Type": "text/plain"})
        assert connection.getresponse().status == 204
        connection.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        output = "".join(lines) + process.stderr.read()
        assert " solo " in output and "SIGTERM: stopping" in output and "stopped" in output
        assert "Traceback" not in output
    finally:
        process.kill()
        process.stderr.close()
    process, port, lines = _start_process(tmp_path)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/buckets/b/keys/k")
        reply = connection.getresponse()
        assert (reply.status, reply.read()) == (200, b"kept")
        connection.close()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0
    finally:
        process.kill()
        process.stderr.close()
