"""The CLI, the local-cluster supervisor and the admin tables, without a real node.

The supervisor is exercised end to end with a stand-in node (a few lines of http.server that answer /ping
and hold the RPC port), so signals, readiness, busy ports and dying nodes are tested here in seconds; the
real node processes are the business of tests/e2e.
"""

import http.server
import io
import json
import os
import pathlib
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tomllib

import pytest
from hypothesis import given, strategies as st

from dynamo import admin, cli, cluster
from dynamo.config import load_config
from ring.state import Ring

FAKE_NODE = textwrap.dedent("""
    import http.server, json, os, signal, socket, sys, threading, time, tomllib
    config = tomllib.load(open(sys.argv[sys.argv.index("--config") + 1], "rb"))
    print("fake node", config["node_id"], "pid", os.getpid(), flush=True)
    parent = os.getppid()

    def die_with_parent():  # a stand-in left behind by a failed test must not linger
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(9)

    threading.Thread(target=die_with_parent, daemon=True).start()
    if config.get("fake_exit_code"):
        print("fake node failing on purpose", flush=True)
        sys.exit(config["fake_exit_code"])
    signal.signal(signal.SIGTERM, lambda signum, frame: (print("fake node stopping on signal", signum,
                                                               flush=True), os._exit(0)))
    time.sleep(config.get("fake_start_delay_s", 0))  # a slow start, for Ctrl-C while starting
    host, port = config["http"].rsplit(":", 1)
    rpc_host, rpc_port = config["rpc"].rsplit(":", 1)
    rpc = socket.socket()
    rpc.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    rpc.bind((rpc_host, int(rpc_port)))
    rpc.listen()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/die":
                os._exit(7)
            members = {"members": [{"node": m["id"], "status": "down" if config.get("fake_lonely") and
                                    m["id"] != config["node_id"] else "up"} for m in config["members"]]}
            answers = {"/ping": b"OK", "/admin/members": json.dumps(members).encode()}
            body = answers.get(self.path, b"not found")
            self.send_response(200 if self.path in answers else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    http.server.ThreadingHTTPServer((host, int(port)), Handler).serve_forever()
""")


def free_port_base(count: int) -> int:
    """A base port with base..base+count-1 free right now, below the ephemeral range.

    Below it because outgoing connections (the nodes' own, other tests') take ephemeral ports at random:
    a range probed free there can be taken by a dial before our node binds it.
    """
    try:
        ephemeral_low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10000, ephemeral_low - count)
        held = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError("no free range of ports")


# --- planning and cluster.toml ---------------------------------------------------------------------------

def test_plan_counts_ports_up_and_gives_each_node_a_dir(tmp_path):
    spec = cluster.plan_cluster(tmp_path / "data", 3, http_port=9001, rpc_port=9101)
    assert [n.node_id for n in spec.nodes] == ["node1", "node2", "node3"]
    assert [n.http_port for n in spec.nodes] == [9001, 9002, 9003]
    assert [n.rpc_port for n in spec.nodes] == [9101, 9102, 9103]
    assert spec.nodes[1].data_dir == (tmp_path / "data" / "node2").resolve()
    assert spec.nodes[0].http_url == "http://127.0.0.1:9001"
    assert (spec.name, spec.partitions) == ("dynamo", 256)


def test_cluster_file_is_made_once_with_a_fresh_secret_and_reused(tmp_path):
    first = cluster.plan_cluster(tmp_path, 3, name="blue", partitions=64)
    path = tmp_path / cluster.CLUSTER_FILE
    assert len(first.secret) == 64 and int(first.secret, 16) >= 0
    assert os.stat(path).st_mode & 0o077 == 0
    again = cluster.plan_cluster(tmp_path, 3, http_port=9500, rpc_port=9600)
    assert (again.name, again.secret, again.partitions) == ("blue", first.secret, 64)
    other = cluster.plan_cluster(tmp_path / "elsewhere", 3)
    assert other.secret != first.secret


def test_a_rerun_without_flags_finds_the_same_nodes(tmp_path):
    first = cluster.plan_cluster(tmp_path, 3, name="blue", partitions=64)
    again = cluster.plan_cluster(tmp_path)
    assert [n.node_id for n in again.nodes] == ["node1", "node2", "node3"]
    assert [n.data_dir for n in again.nodes] == [n.data_dir for n in first.nodes]
    assert len(cluster.plan_cluster(tmp_path / "new").nodes) == cluster.DEFAULT_NODES


@pytest.mark.parametrize("change", [{"nodes": 4}, {"partitions": 128}, {"name": "red"}])
def test_a_rerun_that_contradicts_the_data_dir_is_refused(tmp_path, change):
    cluster.plan_cluster(tmp_path, 3, name="blue", partitions=64)
    args = {"nodes": 3, "name": None, "partitions": None, **change}
    with pytest.raises(cluster.ClusterError, match="use another --data-dir"):
        cluster.plan_cluster(tmp_path, args.pop("nodes"), **args)


@pytest.mark.parametrize("nodes, http_port, rpc_port, words", [
    (0, 8001, 7001, "--nodes"), (65, 8001, 7001, "--nodes"), (5, 8001, 8003, "overlap"),
    (5, 65533, 7001, "--http-port"), (3, 0, 7001, "--http-port"),
])
def test_bad_plans_are_refused_with_a_message(tmp_path, nodes, http_port, rpc_port, words):
    with pytest.raises(cluster.ClusterError, match=words):
        cluster.plan_cluster(tmp_path, nodes, http_port=http_port, rpc_port=rpc_port)
    assert not (tmp_path / cluster.CLUSTER_FILE).exists()


def test_bad_identity_for_a_new_cluster_is_refused(tmp_path):
    with pytest.raises(cluster.ClusterError, match="power of two"):
        cluster.plan_cluster(tmp_path, 3, partitions=100)
    with pytest.raises(cluster.ClusterError, match="--cluster"):
        cluster.plan_cluster(tmp_path, 3, name="has space")


def test_node_settings_from_cluster_file_reach_every_node(tmp_path):
    cluster.plan_cluster(tmp_path, 2)
    path = tmp_path / cluster.CLUSTER_FILE
    path.write_text(path.read_text() + "\n[node]\ngossip_interval_s = 0.25\n")
    spec = cluster.plan_cluster(tmp_path, 2, node_settings={"handoff_interval_s": 0.5})
    assert spec.node_settings == {"gossip_interval_s": 0.25, "handoff_interval_s": 0.5}
    config = cluster.node_config(spec, spec.nodes[1])
    assert config["gossip_interval_s"] == 0.25 and config["handoff_interval_s"] == 0.5


# --- node.toml ---------------------------------------------------------------------------------------------

def test_written_node_configs_load_as_node_configs_listing_every_member(tmp_path):
    spec = cluster.plan_cluster(tmp_path, 3, http_port=9001, rpc_port=9101, name="blue", partitions=64,
                                node_settings={"gossip_interval_s": 0.2})
    cluster.write_configs(spec)
    for node in spec.nodes:
        assert os.stat(node.config_path).st_mode & 0o077 == 0
        config = load_config(node.config_path)
        assert config.node_id == node.node_id
        assert (config.rpc_port, config.http_port) == (node.rpc_port, node.http_port)
        assert (config.cluster, config.secret, config.partitions) == ("blue", spec.secret, 64)
        assert config.data_dir == str(node.data_dir)
        assert config.gossip_interval_s == 0.2
        assert [(m.node_id, m.rpc, m.http) for m in config.members] == [
            (n.node_id, n.rpc_address, n.http_address) for n in spec.nodes]


toml_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
toml_scalar = st.one_of(toml_text, st.integers(-2**63, 2**63 - 1), st.booleans(),
                        st.floats(allow_nan=False, allow_infinity=False))
toml_flat = st.dictionaries(toml_text, toml_scalar, max_size=5)


@given(st.dictionaries(toml_text, st.one_of(toml_scalar, st.lists(st.integers(0, 9), max_size=3)), max_size=5),
       st.dictionaries(toml_text, toml_flat, max_size=2),
       st.lists(toml_flat.filter(bool), max_size=3))
def test_dump_toml_round_trips_through_tomllib(flat, tables, members):
    document = dict(flat)
    for name, table in tables.items():
        document.setdefault(name, table)
    if members:
        document.setdefault("members", members)
    assert tomllib.loads(cluster.dump_toml(document)) == document


# --- ports and the data dir lock ---------------------------------------------------------------------------

def test_busy_ports_names_the_port_and_its_node(tmp_path):
    base = free_port_base(4)
    spec = cluster.plan_cluster(tmp_path, 2, http_port=base, rpc_port=base + 2)
    assert cluster.busy_ports(spec) == []
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", base + 3))
        holder.listen()
        busy = cluster.busy_ports(spec)
    assert len(busy) == 1 and f"127.0.0.1:{base + 3}" in busy[0] and "rpc of node2" in busy[0]


def test_a_data_dir_is_locked_by_one_supervisor(tmp_path):
    first, second = cluster.DataDirLock(tmp_path), cluster.DataDirLock(tmp_path)
    first.acquire()
    with pytest.raises(cluster.ClusterError, match="in use"):
        second.acquire()
    first.release()
    second.acquire()
    second.release()


# --- the supervisor, with stand-in nodes --------------------------------------------------------------------

def run_cluster_up(tmp_path, nodes, base, ready_timeout_s=30, **settings):
    """`cluster_up` in a child process (it installs signal handlers), with the stand-in node."""
    fake = tmp_path / "fake_node.py"
    fake.write_text(FAKE_NODE)
    script = textwrap.dedent(f"""
        import sys
        from dynamo import cluster
        spec = cluster.plan_cluster({str(tmp_path / 'data')!r}, {nodes}, http_port={base},
                                    rpc_port={base + nodes}, node_settings={settings!r})
        sys.exit(cluster.cluster_up(spec, ready_timeout_s={ready_timeout_s}, grace_s=5,
                                    node_command=[sys.executable, {str(fake)!r}]))
    """)
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def read_until(stream, marker, timeout_s=30):
    """Lines of a child's stream up to the one containing marker (a reader thread keeps it bounded)."""
    lines, found = [], threading.Event()

    def reader():
        for line in stream:
            lines.append(line)
            if marker in line:
                found.set()
                return

    threading.Thread(target=reader, daemon=True).start()
    found.wait(timeout_s)
    return found.is_set(), lines


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); our fakes are reaped by their supervisor, so also read the state.
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def pids_in(lines):
    return [int(line.split(" pid ")[1].split()[0]) for line in lines if " pid " in line]


def test_cluster_up_starts_prints_and_stops_cleanly_on_sigterm(tmp_path):
    base = free_port_base(6)
    child = run_cluster_up(tmp_path, 3, base)
    try:
        ready, lines = read_until(child.stdout, "ready:")
        assert ready, "".join(lines) + child.stderr.read() if child.poll() is not None else "".join(lines)
        text = "".join(lines)
        for i in range(3):
            assert f"http://127.0.0.1:{base + i}" in text
        assert f"http://127.0.0.1:{base}/ui/ring" in text and f"http://127.0.0.1:{base}/admin/ring" in text
        pids = pids_in(lines)
        assert len(pids) == 3 and all(pid_alive(pid) for pid in pids)
        assert cluster.ping(f"http://127.0.0.1:{base + 2}")
        child.send_signal(signal.SIGTERM)
        assert child.wait(30) == 0
    finally:
        if child.poll() is None:
            child.kill()
    assert not any(pid_alive(pid) for pid in pids)
    for i in range(1, 4):
        assert "stopping on signal 15" in (tmp_path / "data" / f"node{i}" / "node.log").read_text()


def test_cluster_up_does_not_start_a_node_that_left_the_cluster(tmp_path):
    """A node whose leave completed (its ring.json: status leaving, the ring without it) stays stopped."""
    base = free_port_base(6)
    spec = cluster.plan_cluster(tmp_path / "data", 3, http_port=base, rpc_port=base + 3)
    settled = Ring.initial(["node1", "node2"], partitions=spec.partitions).to_dict() | {"version": 4}
    spec.node("node3").data_dir.mkdir(parents=True, exist_ok=True)
    (spec.node("node3").data_dir / "ring.json").write_text(json.dumps(
        {"ring": settled, "status": "leaving", "rpc": {}, "transition": None}))
    child = run_cluster_up(tmp_path, 3, base)
    try:
        ready, lines = read_until(child.stdout, "ready:")
        assert ready, "".join(lines) + child.stderr.read() if child.poll() is not None else "".join(lines)
        text = "".join(lines)
        assert "node3    left the cluster at ring v4: not started" in text
        assert len(pids_in(lines)) == 2 and f"http://127.0.0.1:{base + 2}" not in text
        assert not cluster.ping(f"http://127.0.0.1:{base + 2}")
        child.send_signal(signal.SIGTERM)
        assert child.wait(30) == 0
    finally:
        if child.poll() is None:
            child.kill()


def test_ctrl_c_while_starting_stops_the_nodes_already_started(tmp_path):
    base = free_port_base(4)
    child = run_cluster_up(tmp_path, 2, base, fake_start_delay_s=60)
    logs = [tmp_path / "data" / f"node{i}" / "node.log" for i in (1, 2)]
    deadline = time.monotonic() + 30
    while not all(log.exists() and "pid" in log.read_text() for log in logs) and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = [int(log.read_text().split(" pid ")[1].split()[0]) for log in logs]
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0 and "ready:" not in out and "stopped" in out, (out, err)
    assert not any(pid_alive(pid) for pid in pids)


def test_cluster_up_warns_when_the_nodes_do_not_see_each_other(tmp_path):
    base = free_port_base(4)
    child = run_cluster_up(tmp_path, 2, base, ready_timeout_s=1, fake_lonely=True)
    try:
        ready, lines = read_until(child.stdout, "ready:")
        assert ready
        child.send_signal(signal.SIGTERM)
        assert child.wait(30) == 0
    finally:
        if child.poll() is None:
            child.kill()
    err = child.stderr.read()
    assert "gossip has not converged" in err and "node1 does not see node2 up" in err


def test_cluster_up_refuses_busy_ports_before_starting_anything(tmp_path):
    base = free_port_base(4)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", base + 1))
        holder.listen()
        child = run_cluster_up(tmp_path, 2, base)
        out, err = child.communicate(timeout=30)
    assert child.returncode == 1
    assert f"127.0.0.1:{base + 1}" in err and "http of node2" in err and "Traceback" not in err
    assert not list((tmp_path / "data").glob("node*/node.log"))


def test_cluster_up_names_the_log_of_a_node_that_fails_to_start(tmp_path):
    base = free_port_base(4)
    child = run_cluster_up(tmp_path, 2, base, fake_exit_code=3)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 1
    assert "exited with code 3" in err and "node.log" in err and "failing on purpose" in err
    assert "Traceback" not in err


def test_the_watch_reports_a_node_that_left_as_such_and_a_crash_with_its_log(tmp_path):
    spec = cluster.plan_cluster(tmp_path / "data", 3, http_port=31101, rpc_port=32101)
    settled = Ring.initial(["node1", "node2"], partitions=spec.partitions).to_dict() | {"version": 4}
    for node_id in ("node2", "node3"):
        spec.node(node_id).data_dir.mkdir(parents=True)
    (spec.node("node3").data_dir / "ring.json").write_text(json.dumps(
        {"ring": settled, "status": "leaving", "rpc": {}, "transition": None}))
    spec.node("node2").log_path.write_text("failing on purpose\n")

    class Supervisor:  # what _watch asks of one, after node2 crashed and node3 left
        def __init__(self) -> None:
            self.spec, self.left = spec, {}
            self.processes = {node.node_id: None for node in spec.nodes}  # all started once

        def newly_dead(self) -> list[tuple[str, int]]:
            return [("node3", 0), ("node2", 9)]

        def alive(self) -> list[str]:
            return ["node1"]
    supervisor, err, stops = Supervisor(), io.StringIO(), iter([False, True])
    assert cluster._watch(supervisor, lambda: next(stops), err) is False
    text = err.getvalue()
    assert "node3 left the cluster at ring v4 and stopped" in text and "node3 exited" not in text
    assert "node2 exited with code 9" in text and "failing on purpose" in text
    assert supervisor.left == {"node3": 4}


def test_cluster_up_reports_a_node_that_dies_and_keeps_the_rest(tmp_path):
    base = free_port_base(4)
    child = run_cluster_up(tmp_path, 2, base)
    try:
        ready, lines = read_until(child.stdout, "ready:")
        assert ready
        with pytest.raises(OSError):
            admin.OPENER.open(f"http://127.0.0.1:{base + 1}/die", timeout=5)
        found, errors = read_until(child.stderr, "node.log")
        assert found and "node2 exited with code 7" in "".join(errors)
        assert cluster.ping(f"http://127.0.0.1:{base}")
        child.send_signal(signal.SIGINT)
        assert child.wait(30) == 0
    finally:
        if child.poll() is None:
            child.kill()


# --- admin --------------------------------------------------------------------------------------------------

RING = {"version": 3, "partitions": 8, "n_val": 3, "target_n": 3,
        "owners": ["node1", "node2", "node3", "node1", "node2", "node3", "node1", "node2"],
        "nodes": {"node1": {"status": "up", "http": "127.0.0.1:8001", "rpc": "127.0.0.1:7001", "partitions": 3},
                  "node2": {"status": "up", "http": "127.0.0.1:8002", "rpc": "127.0.0.1:7002", "partitions": 3},
                  "node3": {"status": "down", "http": "127.0.0.1:8003", "rpc": "127.0.0.1:7003",
                            "partitions": 2}}}


def table_rows(text):
    return [line.split() for line in text.splitlines()]


def test_render_ring_shows_version_and_each_nodes_share():
    rows = table_rows(admin.render_ring(RING))
    assert rows[0][:5] == ["ring", "version", "3,", "8", "partitions,"]
    assert rows[1] == ["node", "status", "http", "rpc", "partitions", "share"]
    assert rows[3] == ["node1", "up", "127.0.0.1:8001", "127.0.0.1:7001", "3", "37.5%"]
    assert rows[5] == ["node3", "down", "127.0.0.1:8003", "127.0.0.1:7003", "2", "25.0%"]


def test_render_members_accepts_a_map_or_a_list():
    as_map = {"node2": {"status": "up", "http": "h2", "incarnation": "ab"}, "node1": {"status": "down"}}
    rows = table_rows(admin.render_members(as_map))
    assert rows[0] == ["node", "status", "http", "incarnation"]
    assert rows[2] == ["node1", "down", "-", "-"] and rows[3] == ["node2", "up", "h2", "ab"]
    as_list = {"members": [{"id": "node2", "status": "up", "extra": 5}, {"id": "node1", "status": "up"}]}
    rows = table_rows(admin.render_members(as_list))
    assert rows[0] == ["node", "status", "extra"] and rows[2] == ["node1", "up", "-"]
    with pytest.raises(admin.AdminError):
        admin.render_members(42)


def test_render_status_puts_key_counters_first_and_flattens_groups():
    stats = {"zeta": 1, "hints_pending": 4, "keys_stored": 10, "latency_ms": {"get": {"p50": 1.25}}}
    rows = table_rows(admin.render_status(stats))
    assert [row[0] for row in rows[2:]] == ["keys_stored", "hints_pending", "latency_ms.get.p50", "zeta"]
    assert rows[4] == ["latency_ms.get.p50", "1.25"]


def test_format_table_aligns_columns():
    text = admin.format_table(("name", "n"), [("a", 5), ("long-name", 123)])
    lines = text.splitlines()
    assert lines[2] == "a            5" and lines[3] == "long-name  123"


@pytest.mark.parametrize("given_url, expected", [
    ("127.0.0.1:8001", "http://127.0.0.1:8001"), ("http://localhost:8002/", "http://localhost:8002"),
])
def test_node_url_is_normalised(given_url, expected):
    assert admin.node_url(given_url) == expected


@pytest.fixture
def fake_admin_node():
    answers = {"/admin/ring": (200, json.dumps(RING).encode()), "/stats": (200, b'{"keys_stored": 7}'),
               "/admin/members": (500, b"internal error\n"), "/broken": (200, b"<html>")}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            status, body = answers.get(self.path, (404, b"not found\n"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_admin_commands_print_tables_from_the_node(fake_admin_node, capsys):
    assert cli.main(["admin", "ring", "--node", fake_admin_node]) == 0
    assert "ring version 3" in capsys.readouterr().out
    assert cli.main(["admin", "status", "--node", fake_admin_node]) == 0
    assert table_rows(capsys.readouterr().out)[2] == ["keys_stored", "7"]


def test_admin_reports_http_errors_and_bad_bodies_in_one_line(fake_admin_node, capsys):
    assert cli.main(["admin", "members", "--node", fake_admin_node]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "answered 500: internal error" in err
    with pytest.raises(admin.AdminError, match="did not return JSON"):
        admin.fetch_json(fake_admin_node, "/broken")


def test_admin_against_nothing_is_one_line_and_exit_1():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    child = subprocess.run([sys.executable, "-m", "dynamo.cli", "admin", "status", "--node",
                            f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=30)
    assert child.returncode == 1 and child.stdout == ""
    assert child.stderr == f"dynamo admin status: cannot reach the node at http://127.0.0.1:{port}: " \
                           "connection refused\n"


def test_admin_times_out_on_a_node_that_never_answers(capsys):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        assert cli.main(["admin", "ring", "--node", f"127.0.0.1:{port}", "--timeout", "0.3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dynamo admin ring: ") and "did not answer /admin/ring within 0.3 s" in err
    assert err.count("\n") == 1


def test_cluster_up_bad_arguments_exit_2_with_a_message(tmp_path, capsys):
    assert cli.main(["cluster", "up", "--nodes", "0", "--data-dir", str(tmp_path)]) == 2
    assert "--nodes must be between" in capsys.readouterr().err


def test_dynamo_node_hands_its_arguments_to_the_node(tmp_path, capsys):
    assert cli.main(["node", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_node_whose_supervisor_is_gone_does_not_start(tmp_path):
    env = dict(os.environ, **{cluster.ENV_SUPERVISOR_PID: "1"})  # pid 1 is not our parent
    child = subprocess.run([sys.executable, "-m", "dynamo.cli", "node", "--config", str(tmp_path / "x.toml")],
                           capture_output=True, text=True, timeout=30, env=env)
    assert child.returncode == 1 and "supervising `dynamo cluster up` is gone" in child.stderr
