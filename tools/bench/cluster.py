"""Starting a local cluster for the benchmark and stopping it afterwards.

`start_cluster` runs `dynamo cluster up --nodes N --http-port P --rpc-port Q --data-dir D` (DESIGN §3) as a
child process in a fresh temp dir, its output going to a log file there. Ports are free ranges picked at
random, so a bench never collides with a cluster a developer already runs. The cluster prints each node's
HTTP endpoint; the bench reads them from the log (any http://host:port, in order, duplicates dropped).
Ready means: every endpoint answers GET /ping with 200, and GET /admin/ring of the first shows N nodes
(members listed and, when the ring lists partition owners, N distinct owners). A child that exits, or a
cluster not ready within the timeout, is an error quoting the end of its log.

Stopping sends SIGTERM to the `cluster up` process, which stops its nodes; a process still there after
the grace period is killed with its process group (the child runs in a session of its own, so the group
holds nothing else).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any, Sequence

HOST = "127.0.0.1"
READY_TIMEOUT_S = 90.0
STOP_GRACE_S = 20.0
POLL_INTERVAL_S = 0.25
_URL_RE = re.compile(r"http://[A-Za-z0-9.\-]+:\d+")  # IPv4 or a name: the cluster is on loopback


class ClusterStartError(RuntimeError):
    """The cluster did not come up; the message carries the end of its log."""


def default_dynamo_command() -> list[str]:
    """The `dynamo` command of the interpreter running the bench, so both use the same install."""
    return [sys.executable, "-m", "dynamo.cli"]


def endpoint_urls(text: str) -> list[str]:
    """Every http://host:port origin in `text`, first appearance order, duplicates dropped."""
    seen: list[str] = []
    for match in _URL_RE.finditer(text):
        if match.group(0) not in seen:
            seen.append(match.group(0))
    return seen


def ring_node_count(ring: Any) -> int | None:
    """How many nodes an /admin/ring document shows; None when it names none.

    Members come from "nodes" (a map or a list of records); owners from "owners" (a list) or
    "partitions" (a list or a map of owners). With both, the smaller count, so a ring whose members
    have not yet been given partitions is not taken as ready.
    """
    if not isinstance(ring, dict):
        return None
    counts = []
    nodes = ring.get("nodes")
    if isinstance(nodes, dict):
        counts.append(len(nodes))
    elif isinstance(nodes, list):
        counts.append(len({_record_name(item) for item in nodes}))
    owners = ring.get("owners")
    if owners is None and isinstance(ring.get("partitions"), (list, dict)):
        owners = ring["partitions"]
    if isinstance(owners, dict):
        owners = list(owners.values())
    if isinstance(owners, list) and owners:
        counts.append(len({_record_name(owner) for owner in owners}))
    return min(counts) if counts else None


def _record_name(item: Any) -> str:
    if isinstance(item, dict):
        for field in ("id", "node", "node_id", "owner", "name"):
            if field in item:
                return str(item[field])
    return str(item)


def free_port_base(count: int, rng: random.Random, avoid: Sequence[int] = ()) -> int:
    """A port P such that P..P+count-1 are free on loopback now and clear of `avoid`."""
    for _ in range(200):
        base = rng.randrange(20_000, 60_000 - count)
        ports = range(base, base + count)
        if any(port in avoid for port in ports):
            continue
        if all(_port_free(port) for port in ports):
            return base
    raise ClusterStartError(f"found no {count} consecutive free ports on {HOST}")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def http_get(url: str, timeout_s: float = 2.0) -> tuple[int, bytes] | None:
    """(status, body) of a GET, or None when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (OSError, ValueError):
        return None


def cluster_ready(urls: Sequence[str], nodes: int) -> bool:
    """Every url answers /ping, and the first one's /admin/ring shows `nodes` nodes."""
    for url in urls:
        answer = http_get(f"{url}/ping")
        if answer is None or answer[0] != 200:
            return False
    answer = http_get(f"{urls[0]}/admin/ring")
    if answer is None or answer[0] != 200:
        return False
    try:
        count = ring_node_count(json.loads(answer[1]))
    except ValueError:
        return False
    return count is not None and count >= nodes


@dataclasses.dataclass
class LocalCluster:
    """A running `dynamo cluster up` child and where it lives."""

    process: subprocess.Popen
    urls: list[str]
    root: pathlib.Path  # temp dir: data/ and cluster.log
    keep_files: bool = False

    @property
    def log_path(self) -> pathlib.Path:
        return self.root / "cluster.log"

    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM, wait, then kill the group; returns the exit code. Removes the temp dir unless kept."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(grace_s)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)  # its own session: only its group
                    self.process.wait(grace_s)
            return self.process.returncode
        finally:
            if not self.keep_files:
                shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(nodes: int = 3, dynamo_command: Sequence[str] | None = None,
                  ready_timeout_s: float = READY_TIMEOUT_S, keep_files: bool = False,
                  rng: random.Random | None = None) -> LocalCluster:
    """Start `dynamo cluster up` in a temp dir and wait until it is ready."""
    rng = rng or random.Random()
    http_port = free_port_base(nodes, rng)
    rpc_port = free_port_base(nodes, rng, avoid=range(http_port, http_port + nodes))
    root = pathlib.Path(tempfile.mkdtemp(prefix="dynamo-bench-"))
    command = [*(dynamo_command or default_dynamo_command()), "cluster", "up", "--nodes", str(nodes),
               "--http-port", str(http_port), "--rpc-port", str(rpc_port), "--data-dir", str(root / "data")]
    with open(root / "cluster.log", "wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    cluster = LocalCluster(process, [], root, keep_files)
    try:
        cluster.urls = _wait_ready(cluster, nodes, ready_timeout_s)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait_ready(cluster: LocalCluster, nodes: int, timeout_s: float) -> list[str]:
    deadline_s = time.monotonic() + timeout_s
    urls: list[str] = []
    while time.monotonic() < deadline_s:
        log_text = cluster.log_path.read_text(errors="replace")
        if cluster.process.poll() is not None:
            raise ClusterStartError(f"`dynamo cluster up` exited with {cluster.process.returncode}; "
                                    f"its output ends:\n{_tail(log_text)}")
        urls = endpoint_urls(log_text)[:nodes]
        if len(urls) == nodes and cluster_ready(urls, nodes):
            return urls
        time.sleep(POLL_INTERVAL_S)
    found = ", ".join(urls) or "no endpoints printed"
    raise ClusterStartError(f"cluster not ready within {timeout_s:g} s ({found}); its output ends:\n"
                            f"{_tail(cluster.log_path.read_text(errors='replace'))}")


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:]) or "(no output)"
