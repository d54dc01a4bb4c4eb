"""`dynamo cluster add`: one more node for a running local cluster, started and joined.

Theory of operation
- The running `dynamo cluster up` owns the node processes (they die with it), so `cluster add` does not
  start one itself: it records the node in cluster.toml (`added` = how many nodes were added), and the
  supervisor, which polls cluster.toml while it watches (`start_added`), writes the new node's node.toml
  and starts it. Its ports follow the others' (node N gets the first ports + N - 1); its config names only
  itself, so it starts as a one-node cluster that can join.
- Then `cluster add` waits for the node's /ping, stages its join through node1 (POST /admin/join on the
  new node, as `dynamo admin join`), waits until node1's plan shows the join (so that, with --stage-only,
  `plan` and `clear` find it at once), and commits there (unless --stage-only): the claimant computes
  the next ring and the handoff starts.
- Without a running supervisor for the data dir (its lock is free) it refuses: nothing would start the node.
"""

from __future__ import annotations

import os
import pathlib
import sys
import time
import tomllib
from typing import Any

from dynamo.admin import AdminError, fetch_json, post_json
from dynamo.change_admin import render_plan, seed_identity
from dynamo.cluster import (CLUSTER_FILE, POLL_INTERVAL_S, READY_TIMEOUT_S, ClusterError, ClusterSpec, DataDirLock,
                            Supervisor, dump_toml, plan_cluster, write_configs)

ADD_HEADER = ("# Written once by `dynamo cluster up`; later runs reuse it (same secret, same ring).\n"
              "# `added` counts the nodes `dynamo cluster add` started after the first ones.\n")


def record_added(data_dir: str | os.PathLike) -> ClusterSpec:
    """Count one more node in cluster.toml; the spec with it, on the ports node1's node.toml uses."""
    root = pathlib.Path(data_dir).resolve()
    path = root / CLUSTER_FILE
    try:
        identity = tomllib.loads(path.read_text())
        first = tomllib.loads((root / "node1" / "node.toml").read_text())
        rpc_port, http_port = int(first["rpc"].rpartition(":")[2]), int(first["http"].rpartition(":")[2])
    except (OSError, tomllib.TOMLDecodeError, KeyError, ValueError) as error:
        raise ClusterError(f"{root} does not hold a cluster made by `dynamo cluster up`: {error}") from None
    identity["added"] = int(identity.get("added", 0)) + 1
    temporary = path.with_suffix(".tmp")
    temporary.write_text(ADD_HEADER + dump_toml(identity))
    os.chmod(temporary, 0o600)
    temporary.replace(path)
    return plan_cluster(root, http_port=http_port, rpc_port=rpc_port)


def start_added(supervisor: Supervisor, err: Any = None) -> list[str]:
    """For a watching supervisor: start the nodes cluster.toml has and the supervisor does not."""
    first = supervisor.spec.nodes[0]
    try:
        spec = plan_cluster(supervisor.spec.data_dir, http_port=first.http_port, rpc_port=first.rpc_port)
    except ClusterError:
        return []
    new = [node.node_id for node in spec.nodes
           if node.node_id not in supervisor.processes and node.node_id not in supervisor.left]
    if not new:
        return []
    supervisor.spec = spec
    write_configs(spec)
    for node_id in new:
        supervisor.start(node_id)
        print(f"dynamo cluster: started {node_id} at {spec.node(node_id).http_url} (added)", file=err or sys.stderr,
              flush=True)
    return new


def join_and_commit(spec: ClusterSpec, node_id: str, *, commit: bool = True, timeout_s: float = 30.0) -> str:
    """Stage `node_id`'s join through node1 and (if `commit`) commit it there; a report of the plan."""
    seed = spec.nodes[0]
    seed_id, seed_rpc = seed_identity(seed.http_url)
    post_json(spec.node(node_id).http_url, "/admin/join", {"seed": seed_id, "rpc": seed_rpc})
    deadline = time.monotonic() + timeout_s
    while True:  # gossip carries the join request to node1 within a few rounds; then plan and clear see it
        try:
            plan = fetch_json(seed.http_url, "/admin/plan")
            if node_id in plan["staged"]["join"]:
                break
        except (AdminError, KeyError, TypeError):
            pass
        if time.monotonic() > deadline:
            raise ClusterError(f"{seed.node_id} did not see {node_id}'s join within {timeout_s:g} s")
        time.sleep(POLL_INTERVAL_S)
    if not commit:
        return f"{node_id}: join staged; run `dynamo admin plan` and `dynamo admin commit` --node {seed.http_url}"
    answer = post_json(seed.http_url, "/admin/commit")
    return f"committed ring v{answer['committed']} (claimant {answer['claimant']})\n" + render_plan(answer)


def cluster_add(data_dir: str | os.PathLike, *, commit: bool = True, ready_timeout_s: float = READY_TIMEOUT_S,
                out: Any = None) -> int:
    """`dynamo cluster add`: 0 when the node runs and its join is committed (or staged), else 1."""
    out = out or sys.stdout
    root = pathlib.Path(data_dir).resolve()
    if not (root / CLUSTER_FILE).exists():
        raise ClusterError(f"{root} holds no cluster: start one with `dynamo cluster up --data-dir {data_dir}`")
    probe = DataDirLock(root)
    try:
        probe.acquire()
    except ClusterError:
        pass  # held: a supervisor runs, as it must
    else:
        probe.release()
        raise ClusterError(f"no `dynamo cluster up` is running on {root}: start it first")
    spec = record_added(root)
    node = spec.nodes[-1]
    print(f"adding {node.node_id} at {node.http_url} ...", file=out, flush=True)
    from dynamo.cluster import ping
    deadline = time.monotonic() + ready_timeout_s
    while not ping(node.http_url):
        if time.monotonic() > deadline:
            raise ClusterError(f"{node.node_id} did not answer /ping within {ready_timeout_s:g} s; see {node.log_path}")
        time.sleep(POLL_INTERVAL_S)
    try:
        print(join_and_commit(spec, node.node_id, commit=commit), file=out, flush=True)
    except AdminError as error:
        raise ClusterError(str(error)) from None
    print(f"follow the handoff: dynamo admin transfers --node {spec.nodes[0].http_url}", file=out, flush=True)
    return 0
