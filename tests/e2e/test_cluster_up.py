"""`dynamo cluster up` as a newcomer runs it: start, use, Ctrl-C, start again, and the data is still there.

The command runs in a child process exactly as typed (python -m dynamo.cli ...); the test reads its
output for the endpoints and the node pids, talks to the nodes over HTTP, runs `dynamo admin` against
them, and sends SIGINT as a terminal's Ctrl-C would.
"""

import json
import pathlib
import signal
import socket
import subprocess
import sys
import threading

import pytest

from dynamo.gc_policy import YOUNG_COLLECTION_ALLOCATIONS


def start_cluster_up(data_dir, base: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "dynamo.cli", "cluster", "up", "--nodes", "3", "--http-port", str(base),
               "--rpc-port", str(base + 3), "--data-dir", str(data_dir)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_until_ready(child: subprocess.Popen, timeout_s: float = 120.0) -> list[str]:
    lines, ready = [], threading.Event()

    def reader():
        for line in child.stdout:
            lines.append(line)
            if line.startswith("ready:"):
                ready.set()
                return
        ready.set()  # the output ended: the command failed

    threading.Thread(target=reader, daemon=True).start()
    ready.wait(timeout_s)
    if not lines or not lines[-1].startswith("ready:"):
        child.kill()
        pytest.fail("dynamo cluster up did not get ready:\n" + "".join(lines) + child.stderr.read())
    return lines


def node_pids(lines: list[str]) -> list[int]:
    return [int(line.split(" pid ")[1].split()[0]) for line in lines if " pid " in line]


def is_running(pid: int) -> bool:
    """True while pid exists and is not a zombie (a killed node is reaped by its supervisor)."""
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def stop_with_ctrl_c(child: subprocess.Popen, pids: list[int]) -> str:
    child.send_signal(signal.SIGINT)
    try:
        code = child.wait(60)
    finally:
        if child.poll() is None:
            child.kill()
    rest = child.stdout.read()
    assert code == 0, rest + child.stderr.read()
    assert not [pid for pid in pids if is_running(pid)], "every node process is gone after Ctrl-C"
    return rest


def admin(command: str, url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dynamo.cli", "admin", command, "--node", url],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def launch():
    """start_cluster_up, with every supervisor still running at the end stopped (a failed test too)."""
    children = []

    def start(data_dir, base):
        children.append(start_cluster_up(data_dir, base))
        return children[-1]

    yield start
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()  # its nodes get SIGTERM from the kernel
                child.wait()


def test_cluster_up_serves_stops_on_ctrl_c_and_keeps_its_data(tmp_path, helpers, launch):
    base = helpers.free_port_base(6)
    data_dir = tmp_path / "dynamo-data"
    urls = [f"http://127.0.0.1:{base + i}" for i in range(3)]
    path = helpers.object_path("photos", "cat.jpg")

    child = launch(data_dir, base)
    lines = read_until_ready(child)
    text = "".join(lines)
    assert all(url in text for url in urls) and f"{urls[0]}/ui/ring" in text and f"{urls[0]}/admin/ring" in text
    first_pids = node_pids(lines)
    assert len(first_pids) == 3 and all(is_running(pid) for pid in first_pids)
    secret = (data_dir / "cluster.toml").read_text()
    put = helpers.request(urls[1], "PUT", path + "?w=all", b"meow", {"Content-Type": "image/jpeg"})
    assert put.status == 204, put.text
    ring = admin("ring", urls[2])
    assert ring.returncode == 0 and ring.stderr == "", ring.stderr
    assert "ring version 1" in ring.stdout and all(f"node{i}" in ring.stdout for i in (1, 2, 3))
    members = admin("members", urls[0])
    assert members.returncode == 0 and members.stdout.count(" up ") == 3, members.stdout
    status = admin("status", urls[1])
    assert status.returncode == 0 and "keys_stored" in status.stdout
    stats = json.loads(helpers.request(urls[0], "GET", "/stats").body)  # a node process sets its collector
    assert stats["gc_thresholds"]["gen0"] == YOUNG_COLLECTION_ALLOCATIONS and stats["gc_frozen_objects"] > 0
    assert "stopped" in stop_with_ctrl_c(child, first_pids)
    assert admin("status", urls[0]).returncode == 1  # nothing answers any more

    child = launch(data_dir, base)
    lines = read_until_ready(child)
    second_pids = node_pids(lines)
    try:
        assert (data_dir / "cluster.toml").read_text() == secret, "the rerun reuses the cluster's identity"
        for url in urls:
            got = helpers.request(url, "GET", path + "?r=all")
            assert (got.status, got.body, got.headers["content-type"]) == (200, b"meow", "image/jpeg"), url
    finally:
        # A supervisor killed outright takes its nodes with it (they get SIGTERM from the kernel).
        child.kill()
        child.wait(30)
    helpers.wait_for(lambda: not any(is_running(pid) for pid in second_pids), 30,
                     "the nodes of a SIGKILLed supervisor to exit")
    for i in (1, 2, 3):
        log = (data_dir / f"node{i}" / "node.log").read_text()
        assert log.count("started by dynamo cluster") == 2 and "Traceback" not in log
        assert log.count("SIGTERM") >= 2, log  # both stops were clean ones, the second from the kernel


def test_cluster_up_refuses_a_busy_port_and_starts_nothing(tmp_path, helpers, launch):
    base = helpers.free_port_base(6)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", base + 4))  # node2's RPC port
        squatter.listen()
        child = launch(tmp_path, base)
        out, err = child.communicate(timeout=60)
    assert child.returncode == 1
    assert f"127.0.0.1:{base + 4} (rpc of node2)" in err and "Traceback" not in err
    assert not list(tmp_path.glob("node*/node.log"))
