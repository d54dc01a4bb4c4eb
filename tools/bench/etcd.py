"""The issue's reference: a local etcd cluster, measured under the same wrk load as dynamo, on the same machine.

Why. Issue 4 sets its target as what "a 3-member etcd cluster under the same wrk load does" on a 2-core
machine: 2,100 quorum puts/s and 4,300 linearizable gets/s. This machine's speed for the same work drifts
by 2x between hours (cpu.python_loop_us), so a number measured on one day says little about another. With
`--reference etcd` the bench measures etcd right after dynamo's cells, and the report gives both tables
and their ratio: the comparison the target means, at one moment.

What runs. etcd from Debian's `etcd-server` package (installed by debian.find_or_install when missing):
N members on loopback (etcd1..etcdN, each with its own data dir in a temp dir and a client and a peer
port), a static initial cluster, every other setting etcd's default. So a put is acknowledged once a
majority has written it to its fsynced WAL, as dynamo's quorum put is once W replicas committed it to
SQLite with synchronous=FULL, and a range is linearizable (etcd's default), which costs a ReadIndex
round to the leader. wrk's threads are spread over the members as over dynamo's nodes; a follower
forwards puts to the leader. The same keys and 100-byte values go through etcd's v3 JSON gateway
(script.py, `api="etcd"`). Ready means: every member's /health says true. Stopping: SIGTERM to each
member, then SIGKILL after the grace period; the temp dir is removed unless kept.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import random
import shutil
import subprocess
import tempfile
import time

from tools.bench.cluster import HOST, POLL_INTERVAL_S, ClusterStartError, free_port_base, http_get
from tools.bench.debian import find_or_install

READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0


def find_etcd(install: bool = True) -> str:
    """The path of etcd; installs Debian's etcd-server when missing, allowed, and root (else ToolMissing)."""
    return find_or_install("etcd", "etcd-server", install)


def etcd_version(path: str) -> str:
    done = subprocess.run([path, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = done.stdout.splitlines()[0] if done.stdout else ""  # "etcd Version: 3.4.23"
    return first.split(":", 1)[1].strip() if ":" in first else "(version unknown)"


@dataclasses.dataclass
class LocalEtcd:
    """Running etcd members and where they live."""

    processes: list[subprocess.Popen]
    urls: list[str]  # each member's client URL (the v3 JSON gateway)
    root: pathlib.Path
    keep_files: bool = False

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        try:
            for process in self.processes:
                if process.poll() is None:
                    process.terminate()
            for process in self.processes:
                try:
                    process.wait(grace_s)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(grace_s)
        finally:
            if not self.keep_files:
                shutil.rmtree(self.root, ignore_errors=True)


def member_command(etcd_path: str, index: int, root: pathlib.Path, client_ports: list[int],
                   peer_ports: list[int]) -> list[str]:
    """The command line of member `index` (0-based) of a static cluster."""
    names = [f"etcd{i + 1}" for i in range(len(client_ports))]
    initial = ",".join(f"{name}=http://{HOST}:{port}" for name, port in zip(names, peer_ports))
    client, peer = f"http://{HOST}:{client_ports[index]}", f"http://{HOST}:{peer_ports[index]}"
    return [etcd_path, "--name", names[index], "--data-dir", str(root / names[index]),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", f"bench-{root.name}", "--log-level", "warn"]


def start_etcd(etcd_path: str, members: int = 3, keep_files: bool = False,
               ready_timeout_s: float = READY_TIMEOUT_S, rng: random.Random | None = None) -> LocalEtcd:
    """Start `members` etcd processes as one cluster and wait until every member is healthy."""
    rng = rng or random.Random()
    client_base = free_port_base(members, rng)
    peer_base = free_port_base(members, rng, avoid=range(client_base, client_base + members))
    client_ports = list(range(client_base, client_base + members))
    peer_ports = list(range(peer_base, peer_base + members))
    root = pathlib.Path(tempfile.mkdtemp(prefix="etcd-bench-"))
    cluster = LocalEtcd([], [f"http://{HOST}:{port}" for port in client_ports], root, keep_files)
    try:
        for index in range(members):
            with open(root / f"etcd{index + 1}.log", "wb") as log:
                cluster.processes.append(subprocess.Popen(
                    member_command(etcd_path, index, root, client_ports, peer_ports), stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        _wait_healthy(cluster, ready_timeout_s)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _healthy(url: str) -> bool:
    answer = http_get(f"{url}/health")
    if answer is None or answer[0] != 200:
        return False
    try:
        return json.loads(answer[1]).get("health") == "true"
    except (ValueError, AttributeError):
        return False


def _wait_healthy(cluster: LocalEtcd, timeout_s: float) -> None:
    deadline_s = time.monotonic() + timeout_s
    while time.monotonic() < deadline_s:
        for index, process in enumerate(cluster.processes):
            if process.poll() is not None:
                log = (cluster.root / f"etcd{index + 1}.log").read_text(errors="replace").strip()
                raise ClusterStartError(f"etcd{index + 1} exited with {process.returncode}; its log ends:\n"
                                        + "\n".join(log.splitlines()[-10:]))
        if all(_healthy(url) for url in cluster.urls):
            return
        time.sleep(POLL_INTERVAL_S)
    raise ClusterStartError(f"etcd not healthy within {timeout_s:g} s (logs in {cluster.root})")
