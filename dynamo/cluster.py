"""A local cluster on loopback: one node process per member, supervised from the foreground.

Theory of operation
-------------------
`dynamo cluster up` is the first command a newcomer runs, so it must be boring: it plans, writes, checks,
starts, waits, and then only watches.

1. Plan (`plan_cluster`): node ids node1..nodeN, ports counting up from the given HTTP and RPC ports, one
   data dir per node under the cluster's data dir. The cluster's identity lives in <data-dir>/cluster.toml
   (name, secret, partitions, node count), written once with a fresh `secrets.token_hex` secret and read on
   every later run: a rerun finds the same node ids, the same secret and the same ring, so the data on disk
   is where the ring says it is. A rerun that asks for a different name, partition count or node count is
   refused rather than silently misplacing data (membership changes are `dynamo admin join/leave`' job).
   An optional `[node]` table in cluster.toml holds settings copied into every node.toml.
2. Check before starting anything: the data dir is not in use by another supervisor (a lock file) and every
   port is free. A busy port is a clear error, not a half-started cluster.
3. Write each node's node.toml (every member with its addresses, so all nodes build the same ring) and start
   `python -m dynamo.cli node --config node.toml`, output appended to the node's node.log. Each node runs in
   its own session so a terminal's Ctrl-C reaches only the supervisor, which then stops the nodes in order;
   `dynamo node` asks the kernel to SIGTERM it if the supervisor dies (see cli.py), so nodes are not
   orphaned when the supervisor is killed.
4. Wait until every node answers GET /ping (a node that exits meanwhile fails the start, naming its log),
   then until every node's /admin/members shows every member up, so the first request a newcomer makes
   meets a cluster whose nodes know each other (past the deadline this is only a warning).
5. Watch: report any node that dies (and where its log is; a node that stopped because it left the cluster
   is reported as such), start any node `dynamo cluster add` recorded in cluster.toml (expansion.py); on
   SIGINT or SIGTERM send SIGTERM to every node, wait a grace period, SIGKILL what is left, and exit 0.

`Supervisor` is also the harness the end-to-end tests use to start, kill and restart real node processes.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import pathlib
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from dynamo.admin import OPENER, AdminError, fetch_json
from dynamo.service.claimant import left_at, load_ring_file

HOST = "127.0.0.1"
CLUSTER_FILE = "cluster.toml"
LOCK_FILE = "cluster.lock"
NODES_MAX = 64
DEFAULT_NODES = 5
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
POLL_INTERVAL_S = 0.2
ENV_SUPERVISOR_PID = "DYNAMO_SUPERVISOR_PID"  # read by `dynamo node` (cli.py) to die with its supervisor
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ClusterError(ValueError):
    """A cluster that cannot be planned, started or kept: the message says what and what to do."""


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """One node of a local cluster: its id, addresses and where its files live."""

    node_id: str
    host: str
    rpc_port: int
    http_port: int
    data_dir: pathlib.Path

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def rpc_address(self) -> str:
        return f"{self.host}:{self.rpc_port}"

    @property
    def http_address(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def config_path(self) -> pathlib.Path:
        return self.data_dir / "node.toml"

    @property
    def log_path(self) -> pathlib.Path:
        return self.data_dir / "node.log"


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """A whole local cluster: identity (name, secret, partitions), its nodes, and extra node settings."""

    name: str
    secret: str
    partitions: int
    data_dir: pathlib.Path
    nodes: tuple[NodeSpec, ...]
    node_settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Nodes past the first `initial_nodes` came from `dynamo cluster add` (expansion.py): each starts
    # knowing only itself and joins; its ring.json then outranks the member list. 0: all are initial.
    initial_nodes: int = 0

    def node(self, node_id: str) -> NodeSpec:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)


def plan_cluster(data_dir: str | os.PathLike, nodes: int | None = None, *, http_port: int = 8001,
                 rpc_port: int = 7001, name: str | None = None, partitions: int | None = None, host: str = HOST,
                 node_settings: Mapping[str, Any] | None = None) -> ClusterSpec:
    """Plan a cluster in data_dir, creating or reusing its cluster.toml (the secret is made only once).

    `nodes`, `name` and `partitions` default to what cluster.toml holds (or 5, "dynamo" and 256 for a new
    cluster); a value that contradicts an existing cluster.toml is an error. `node_settings` (tests) is
    merged over cluster.toml's [node] table and written into every node.toml.
    """
    root = pathlib.Path(data_dir).resolve()
    identity = _read_identity(root)
    if identity is not None:
        _check_rerun(root, identity, nodes, name, partitions)
        nodes = identity["nodes"]
    nodes = DEFAULT_NODES if nodes is None else nodes
    if not 1 <= nodes <= NODES_MAX:
        raise ClusterError(f"--nodes must be between 1 and {NODES_MAX}, got {nodes}")
    added = int(identity.get("added", 0)) if identity is not None else 0  # by `dynamo cluster add`
    _check_ports(nodes + added, http_port, rpc_port)
    if identity is None:
        identity = _create_identity(root, nodes, name, partitions)
    specs = tuple(NodeSpec(f"node{i}", host, rpc_port + i - 1, http_port + i - 1, root / f"node{i}")
                  for i in range(1, nodes + added + 1))
    settings = dict(identity.get("node", {}))
    settings.update(node_settings or {})
    return ClusterSpec(identity["name"], identity["secret"], identity["partitions"], root, specs, settings,
                       initial_nodes=nodes)


def _check_ports(nodes: int, http_port: int, rpc_port: int) -> None:
    for what, first in (("--http-port", http_port), ("--rpc-port", rpc_port)):
        if not 1 <= first or first + nodes - 1 > 65535:
            raise ClusterError(f"{what} {first}: the ports {first}..{first + nodes - 1} must lie in 1..65535")
    http_ports = set(range(http_port, http_port + nodes))
    if http_ports & set(range(rpc_port, rpc_port + nodes)):
        raise ClusterError(f"HTTP ports {http_port}.. and RPC ports {rpc_port}.. overlap for {nodes} nodes")


def _create_identity(root: pathlib.Path, nodes: int, name: str | None, partitions: int | None) -> dict[str, Any]:
    if name is not None and not _NAME_RE.match(name):
        raise ClusterError(f"--cluster must be 1-64 letters, digits, '.', '_' or '-', got {name!r}")
    if partitions is not None and (partitions < 1 or partitions & (partitions - 1)):
        raise ClusterError(f"--partitions must be a power of two, got {partitions}")
    identity = {"name": name or "dynamo", "secret": secrets.token_hex(32), "partitions": partitions or 256,
                "nodes": nodes}
    root.mkdir(parents=True, exist_ok=True)
    header = ("# Written once by `dynamo cluster up`; later runs reuse it (same secret, same ring).\n"
              "# Settings in an optional [node] table go into every node.toml (see dynamo/config.py).\n")
    path = root / CLUSTER_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(header + dump_toml(identity))
    os.chmod(tmp, 0o600)  # it holds the cluster secret
    tmp.replace(path)
    return identity


def _read_identity(root: pathlib.Path) -> dict[str, Any] | None:
    path = root / CLUSTER_FILE
    if not path.exists():
        return None
    try:
        identity = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ClusterError(f"cannot read {path}: {error}") from None
    missing = {"name", "secret", "partitions", "nodes"} - set(identity)
    if missing:
        raise ClusterError(f"{path} lacks {', '.join(sorted(missing))}; fix it or use another --data-dir")
    return identity


def _check_rerun(root: pathlib.Path, identity: Mapping[str, Any], nodes: int | None, name: str | None,
                 partitions: int | None) -> None:
    # Another node count or Q would build another ring: the data on disk would not be where it says.
    for flag, asked, stored in (("--cluster", name, identity["name"]),
                                ("--partitions", partitions, identity["partitions"]),
                                ("--nodes", nodes, identity["nodes"])):
        if asked is not None and asked != stored:
            raise ClusterError(f"{root} holds cluster {identity['name']!r} made with {flag} {stored}, not "
                               f"{asked}; rerun with {flag} {stored} or use another --data-dir")


def dump_toml(table: Mapping[str, Any]) -> str:
    """TOML text for flat keys, one level of sub-tables and arrays of tables (all a node.toml needs)."""
    lines, tables, arrays = [], [], []
    for key, value in table.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Mapping) for v in value):
            arrays.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, sub in tables:
        lines += ["", f"[{_toml_key(key)}]"] + [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in sub.items()]
    for key, items in arrays:
        for item in items:
            lines += ["", f"[[{_toml_key(key)}]]"]
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def _toml_string(text: str) -> str:
    # A TOML basic string: escape the quote, the backslash and the control characters; all else is literal
    # (JSON's \uXXXX surrogate pairs for astral characters are not valid TOML, so json.dumps will not do).
    out = []
    for char in text:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ClusterError(f"cannot write {value!r} to TOML")


def node_config(spec: ClusterSpec, node: NodeSpec) -> dict[str, Any]:
    """The settings of one node.toml: identity, addresses, data dir, every member, extra settings."""
    config: dict[str, Any] = {"node_id": node.node_id, "cluster": spec.name, "secret": spec.secret,
                              "rpc": node.rpc_address, "http": node.http_address,
                              "data_dir": str(node.data_dir), "partitions": spec.partitions}
    config.update({k: v for k, v in spec.node_settings.items() if k != "members"})
    initial = spec.nodes[:spec.initial_nodes] if spec.initial_nodes else spec.nodes
    members = initial if node in initial else (node,)
    config["members"] = [{"id": n.node_id, "rpc": n.rpc_address, "http": n.http_address} for n in members]
    return config


def write_configs(spec: ClusterSpec) -> None:
    """Write every node's node.toml (0600: it holds the secret), creating the data dirs."""
    for node in spec.nodes:
        node.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = node.config_path.with_suffix(".tmp")
        tmp.write_text("# Written by `dynamo cluster up` on every start; edit cluster.toml's [node] instead.\n"
                       + dump_toml(node_config(spec, node)))
        os.chmod(tmp, 0o600)
        tmp.replace(node.config_path)


def busy_ports(spec: ClusterSpec) -> list[str]:
    """One line per port of the plan that something already listens on (or that cannot be bound)."""
    busy = []
    for node in spec.nodes:
        for what, port in (("http", node.http_port), ("rpc", node.rpc_port)):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                # SO_REUSEADDR as the node's listener sets it: TIME_WAIT leftovers are not "busy".
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((node.host, port))
                    probe.listen(1)
                except OSError as error:
                    busy.append(f"{node.host}:{port} ({what} of {node.node_id}): {error.strerror}")
    return busy


class DataDirLock:
    """An exclusive lock on a cluster's data dir, so two supervisors never run the same nodes' data."""

    def __init__(self, data_dir: pathlib.Path):
        self.path = data_dir / LOCK_FILE
        self._file = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            file.close()
            raise ClusterError(f"{self.path.parent} is in use by another `dynamo cluster up`") from None
        self._file = file

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def ping(url: str, timeout_s: float = 1.0) -> bool:
    """True if the node at url answers GET /ping with 200."""
    try:
        with OPENER.open(url + "/ping", timeout=timeout_s) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def log_tail(path: pathlib.Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").rstrip("\n").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text[-lines:])


class Supervisor:
    """Starts, watches and stops the node processes of a ClusterSpec.

    Call it from one thread only (the main thread): a node dies with the thread that started it.
    """

    def __init__(self, spec: ClusterSpec, node_command: Sequence[str] | None = None):
        self.spec = spec
        # What runs a node; "--config <node.toml>" is appended. Tests put a stand-in here.
        self._node_command = list(node_command or (sys.executable, "-m", "dynamo.cli", "node"))
        self.processes: dict[str, subprocess.Popen] = {}
        self._reported: set[str] = set()
        self.left: dict[str, int] = {}  # nodes whose leave completed (ring version): never started again

    def start(self, node_id: str) -> subprocess.Popen:
        """Start one node (its config must be written); output appends to its node.log."""
        assert node_id not in self.processes or self.processes[node_id].poll() is not None, node_id
        node = self.spec.node(node_id)
        env = dict(os.environ, PYTHONUNBUFFERED="1", **{ENV_SUPERVISOR_PID: str(os.getpid())})
        with open(node.log_path, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} started by dynamo cluster\n".encode())
            log.flush()
            command = self._node_command + ["--config", str(node.config_path)]
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.processes[node_id] = process
        self._reported.discard(node_id)
        return process

    def start_all(self) -> None:
        """Start every node but those that left the cluster (a node refuses to start on such data)."""
        for node in self.spec.nodes:
            version = left_at(load_ring_file(str(node.data_dir)), node.node_id)
            if version is not None:
                self.left[node.node_id] = version
            else:
                self.start(node.node_id)
        if not self.processes:
            raise ClusterError("every node of this cluster has left it; nothing to start")

    def started(self) -> list[NodeSpec]:
        return [node for node in self.spec.nodes if node.node_id in self.processes]

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S, node_ids: Iterable[str] | None = None,
                   should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Wait until the nodes answer /ping. False if should_stop() turned true first.

        Raises ClusterError if a node exits or the deadline passes, naming the node and its log.
        """
        waiting = list(node_ids if node_ids is not None else (n.node_id for n in self.started()))
        deadline = time.monotonic() + timeout_s
        while waiting:
            if should_stop():
                return False
            for node_id in list(waiting):
                node = self.spec.node(node_id)
                code = self.processes[node_id].poll()
                if code is not None:
                    raise ClusterError(f"{node_id} exited with code {code} while starting; its log is "
                                       f"{node.log_path}, ending:\n{log_tail(node.log_path)}")
                if ping(node.http_url, timeout_s=1.0):
                    waiting.remove(node_id)
            if waiting and time.monotonic() > deadline:
                names = ", ".join(waiting)
                raise ClusterError(f"{names} did not answer /ping within {timeout_s:g} s; see node.log "
                                   f"under {self.spec.data_dir}")
            if waiting:
                time.sleep(POLL_INTERVAL_S)
        return True

    def not_converged(self) -> list[str]:
        """Which node does not yet see which member up, by each node's /admin/members; [] when all do."""
        ids = {node.node_id for node in self.started()}
        missing = []
        for node in self.started():
            try:
                report = fetch_json(node.http_url, "/admin/members", timeout_s=2.0)
                up = {m.get("node") for m in report["members"] if m.get("status") == "up"}
            except (AdminError, KeyError, TypeError, AttributeError):
                up = set()
            missing += [f"{node.node_id} does not see {other} up" for other in sorted(ids - up)]
        return missing

    def wait_converged(self, timeout_s: float, should_stop: Callable[[], bool] = lambda: False) -> list[str]:
        """Wait until every node sees every member up (gossip has met them all); what is still missing."""
        deadline = time.monotonic() + timeout_s
        while True:
            missing = self.not_converged()
            if not missing or should_stop() or time.monotonic() > deadline:
                return missing
            time.sleep(POLL_INTERVAL_S)

    def newly_dead(self) -> list[tuple[str, int]]:
        """Nodes that exited since the last call (each reported once), with their exit codes."""
        dead = []
        for node_id, process in self.processes.items():
            code = process.poll()
            if code is not None and node_id not in self._reported:
                self._reported.add(node_id)
                dead.append((node_id, code))
        return dead

    def alive(self) -> list[str]:
        return [node_id for node_id, process in self.processes.items() if process.poll() is None]

    def kill(self, node_id: str, sig: int = signal.SIGKILL, timeout_s: float = STOP_GRACE_S) -> int | None:
        """Send sig to one node and wait (up to timeout_s) for it to exit; its exit code or None."""
        process = self.processes[node_id]
        if process.poll() is None:
            process.send_signal(sig)
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop_all(self, grace_s: float = STOP_GRACE_S) -> list[str]:
        """SIGTERM every node, wait up to grace_s, SIGKILL the rest. Returns the ids that needed SIGKILL."""
        running = [(node_id, p) for node_id, p in self.processes.items() if p.poll() is None]
        for _, process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        killed = []
        for node_id, process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                killed.append(node_id)
        return killed


class _StopFlag:
    """Set by SIGINT/SIGTERM; the supervisor's loops poll it (signal handlers only set a flag)."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self) -> bool:
        return self.signal is not None

    def handle(self, signum: int, frame: Any) -> None:
        self.signal = signum


def cluster_up(spec: ClusterSpec, *, ready_timeout_s: float = READY_TIMEOUT_S, grace_s: float = STOP_GRACE_S,
               node_command: Sequence[str] | None = None, out=None, err=None) -> int:
    """Run the cluster in the foreground until SIGINT/SIGTERM: 0 after a clean stop, 1 if it cannot start
    or every node died."""
    out, err = out or sys.stdout, err or sys.stderr
    stop = _StopFlag()
    previous = {sig: signal.signal(sig, stop.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    lock = DataDirLock(spec.data_dir)
    supervisor = Supervisor(spec, node_command)
    try:
        lock.acquire()
        busy = busy_ports(spec)
        if busy:
            raise ClusterError("ports in use, nothing started (choose others with --http-port/--rpc-port):\n  "
                               + "\n  ".join(busy))
        write_configs(spec)
        supervisor.start_all()
        all_died = False
        if supervisor.wait_ready(ready_timeout_s, should_stop=stop):
            missing = supervisor.wait_converged(ready_timeout_s, should_stop=stop)
            if missing and not stop():
                print(f"dynamo cluster up: warning: gossip has not converged within {ready_timeout_s:g} s: "
                      + "; ".join(missing[:5]), file=err, flush=True)
        if not stop():
            _print_ready(spec, supervisor, out)
            all_died = _watch(supervisor, stop, err)
        _stop(supervisor, grace_s, out, err)
        return 1 if all_died else 0
    except ClusterError as error:
        print(f"dynamo cluster up: {error}", file=err, flush=True)
        _stop(supervisor, grace_s, out, err)
        return 1
    finally:
        lock.release()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _print_ready(spec: ClusterSpec, supervisor: Supervisor, out) -> None:
    started = supervisor.started()
    first = started[0]
    lines = [f"cluster {spec.name!r}: {len(started)} nodes, {spec.partitions} partitions, "
             f"data in {spec.data_dir}"]
    for node in started:
        pid = supervisor.processes[node.node_id].pid
        lines.append(f"  {node.node_id:<8} {node.http_url:<24} rpc {node.rpc_address:<18} pid {pid:<8} "
                     f"log {node.log_path}")
    for node_id, version in sorted(supervisor.left.items()):
        lines.append(f"  {node_id:<8} left the cluster at ring v{version}: not started")
    lines += [f"ring page:  {first.http_url}/ui/ring   (JSON: {first.http_url}/admin/ring)",
              f"try:        curl -X PUT -H 'Content-Type: text/plain' -d hello "
              f"{first.http_url}/buckets/test/keys/hello",
              f"            dynamo admin ring --node {first.http_url}",
              "ready: every node answers and sees the others up; Ctrl-C stops the cluster"]
    print("\n".join(lines), file=out, flush=True)


def _watch(supervisor: Supervisor, stop: _StopFlag, err) -> bool:
    """Report nodes that die until a stop signal (False) or until no node is left (True)."""
    while not stop():
        for node_id, code in supervisor.newly_dead():
            node = supervisor.spec.node(node_id)
            version = left_at(load_ring_file(str(node.data_dir)), node_id) if code == 0 else None
            if version is not None:  # a completed leave or a cleared join: the node stopped by design
                supervisor.left[node_id] = version
                print(f"dynamo cluster up: {node_id} left the cluster at ring v{version} and stopped",
                      file=err, flush=True)
                continue
            print(f"dynamo cluster up: {node_id} exited with code {code}; its log is {node.log_path}, ending:\n"
                  f"{log_tail(node.log_path)}", file=err, flush=True)
        if not supervisor.alive():
            print("dynamo cluster up: every node has exited; stopping", file=err, flush=True)
            return True
        from dynamo.expansion import start_added  # `dynamo cluster add` recorded a node: start it
        start_added(supervisor, err)
        time.sleep(POLL_INTERVAL_S)
    return False


def _stop(supervisor: Supervisor, grace_s: float, out, err) -> None:
    running = supervisor.alive()
    if not running:
        return
    print(f"stopping {len(running)} nodes ...", file=out, flush=True)
    killed = supervisor.stop_all(grace_s)
    if killed:
        print(f"dynamo cluster up: {', '.join(killed)} did not stop within {grace_s:g} s and were killed",
              file=err, flush=True)
    print("stopped", file=out, flush=True)
