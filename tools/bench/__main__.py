"""`python -m tools.bench`: puts and gets at ONE, QUORUM and ALL against a running or freshly started cluster.

Order of a run: find wrk (installing it if allowed), start a cluster if asked, then one wrk run per cell,
operations in the order given and consistencies within each. The keys the gets read are written once,
just before the first get cell (preload.py). Progress goes to stderr; the Markdown report to stdout, so
`python -m tools.bench ... > note.md` keeps just the report. Ctrl-C prints the cells finished so far.
The report's heading also gives the machine's speed for pure Python before and after the cells
(cpu.python_loop_us): on a shared machine that drifts, two reports compare only when those agree.
`--reference etcd` then runs the same put and get load against a local etcd cluster (etcd.py), the
issue's yardstick, and ends the report with etcd's table and dynamo's quorum rows as multiples of it.
"""

from __future__ import annotations

import argparse
import secrets
import shlex
import sys
import time
import urllib.parse

from tools.bench.cluster import ClusterStartError, LocalCluster, start_cluster
from tools.bench.cpu import cpu_between_s, cpu_s, python_loop_us, tree_pids
from tools.bench.debian import ToolMissing
from tools.bench.etcd import etcd_version, find_etcd, start_etcd
from tools.bench.preload import PreloadResult, preload
from tools.bench.report import format_errors, format_table
from tools.bench.result import CellResult
from tools.bench.script import CONSISTENCIES, OPERATIONS, BenchSpecError, CellSpec
from tools.bench.wrk import LoadPlan, WrkError, find_wrk, plan_load, run_cell, wrk_version


def _word_list(allowed: tuple[str, ...]):
    def parse(text: str) -> tuple[str, ...]:
        words = tuple(word.strip().lower() for word in text.split(",") if word.strip())
        wrong = [word for word in words if word not in allowed]
        if wrong or not words:
            raise argparse.ArgumentTypeError(f"want a comma-separated list of {', '.join(allowed)}, got {text!r}")
        return words
    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.splitlines()[0])
    where = parser.add_argument_group("target (one of)")
    where.add_argument("--url", action="append", default=[], help="a node's HTTP endpoint; repeat to spread "
                       "connections over nodes (e.g. --url http://127.0.0.1:8001 --url http://127.0.0.1:8002)")
    where.add_argument("--start-cluster", action="store_true",
                       help="start `dynamo cluster up --nodes N` in a temp dir and stop it at the end")
    where.add_argument("--nodes", type=int, default=3, help="nodes of the started cluster (default 3)")
    where.add_argument("--dynamo-command", default=None,
                       help="command that takes `cluster up ...` (default: this python -m dynamo.cli)")
    where.add_argument("--keep-cluster-files", action="store_true", help="keep the started cluster's temp dir")
    where.add_argument("--cpu-pid", type=int, action="append", default=[],
                       help="with --url: count the CPU of this process and its descendants as the nodes' "
                            "(repeat; e.g. the pid of `dynamo cluster up`). --start-cluster counts its own")
    where.add_argument("--reference", choices=("etcd",), default=None,
                       help="afterwards, run the same puts and gets against a local etcd cluster of --nodes "
                            "members (installed from Debian's etcd-server when missing) and compare")
    load = parser.add_argument_group("load")
    load.add_argument("--duration", type=int, default=10, help="seconds per cell, whole (default 10)")
    load.add_argument("--connections", type=int, default=16, help="keep-alive connections (default 16)")
    load.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    load.add_argument("--value-size", type=int, default=100, help="value bytes per put (default 100)")
    load.add_argument("--consistency", type=_word_list(CONSISTENCIES), default=CONSISTENCIES,
                      help="comma-separated, sent as w= / r= (default one,quorum,all)")
    load.add_argument("--ops", type=_word_list(OPERATIONS), default=OPERATIONS,
                      help="comma-separated (default put,get)")
    load.add_argument("--keyspace", type=int, default=10_000, help="keys preloaded for the gets (default 10000)")
    load.add_argument("--preload-consistency", choices=CONSISTENCIES, default="all",
                      help="w= of the preload writes (default all)")
    load.add_argument("--bucket", default="bench")
    load.add_argument("--timeout", type=int, default=10, help="wrk's per-request timeout, seconds (default 10)")
    load.add_argument("--pause", type=float, default=1.0, help="seconds between cells, to let the nodes drain")
    return parser


def parse_targets(urls: list[str]) -> tuple[tuple[str, int], ...]:
    targets = []
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise BenchSpecError(f"--url wants http://host:port, got {url!r}")
        targets.append((parts.hostname, parts.port or 80))
    return tuple(targets)


def _log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def heading(args: argparse.Namespace, loader: str, plan: LoadPlan, urls: list[str],
            loaded: PreloadResult | None, run_id: str, results: list[CellResult],
            speed_us: tuple[float, float] | None = None) -> str:
    lines = [f"### dynamo bench: {args.value_size}-byte values, {args.duration} s per cell, run {run_id}", "",
             f"- load: {loader}, {plan.threads} threads, {plan.connections} keep-alive connections over "
             f"{len(urls)} node(s): {', '.join(urls)}",
             "- puts write keys never written before; gets read uniformly among preloaded keys; "
             "N is the bucket's default",
             "- ops/s counts successes only (put 200/201/204, get 200/300); latencies cover every response"]
    return "\n".join(lines + measure_lines(results, loaded, speed_us, f" at w={args.preload_consistency}"))


def measure_lines(results: list[CellResult], loaded: PreloadResult | None, speed_us: tuple[float, float] | None,
                  written_how: str = "") -> list[str]:
    """The heading lines on how a run went: wrk's own CPU (whether the load generator could have been the
    bottleneck), the preload, and the machine's speed before and after the cells."""
    lines = []
    if results:
        busiest = max((result.wrk.loader_cpu_s / result.wrk.duration_s for result in results
                       if result.wrk.duration_s > 0), default=0.0)
        lines.append(f"- wrk's own CPU: at most {100 * busiest:.0f}% of one core in any cell")
    if loaded is not None:
        lines.append(f"- preload: {loaded.written}/{loaded.keys} keys{written_how} in {loaded.duration_s:.1f} s "
                     f"(failed: {format_errors(loaded.failures)})")
    if speed_us is not None:
        lines.append(f"- machine speed: `sum(range(1000))` took {speed_us[0]:.1f} us before the cells and "
                     f"{speed_us[1]:.1f} us after (this machine drifts; compare reports whose readings agree)")
    return lines


def run(args: argparse.Namespace, urls: list[str], wrk_path: str, cpu_pids: tuple[int, ...] = ()) -> int:
    run_id = f"b{secrets.token_hex(4)}"  # fresh keys every run: no siblings from earlier runs
    plan = plan_load(args.connections, args.threads, len(urls))
    speed_before_us = python_loop_us()
    loaded, results, exit_code = run_cells(args, urls, plan, wrk_path, cpu_pids, run_id, "riak", args.consistency)
    speed_us = (speed_before_us, python_loop_us())
    print(heading(args, wrk_version(wrk_path), plan, urls, loaded, run_id, results, speed_us))
    print()
    print(format_table(results))
    if args.reference == "etcd" and exit_code == 0:
        exit_code = run_etcd_reference(args, wrk_path, run_id, results)
    return exit_code


def run_cells(args: argparse.Namespace, urls: list[str], plan: LoadPlan, wrk_path: str,
              cpu_pids: tuple[int, ...] | list[int], run_id: str, api: str, consistencies: tuple[str, ...]
              ) -> tuple[PreloadResult | None, list[CellResult], int]:
    """One wrk run per cell (operations in order, consistencies within each) with `plan` over `urls`,
    preloading the gets' keys before the first get cell; (the preload, the cells measured, exit code).
    Ctrl-C or a failing wrk keeps the cells measured before it."""
    targets = parse_targets(urls)
    results: list[CellResult] = []
    loaded = None
    try:
        for operation in args.ops:
            for consistency in consistencies:
                if operation == "get" and loaded is None:
                    _log(f"preloading {args.keyspace} keys ({api})")
                    loaded = preload(urls, run_id, args.keyspace, args.value_size, bucket=args.bucket,
                                     connections=args.connections, consistency=args.preload_consistency,
                                     timeout_s=args.timeout, api=api)
                    _log(f"preloaded {loaded.written}/{loaded.keys} in {loaded.duration_s:.1f} s")
                spec = CellSpec(operation, consistency, targets, run_id, bucket=args.bucket,
                                keyspace=args.keyspace, value_size_bytes=args.value_size, api=api)
                _log(f"{api} {operation} at {consistency} for {args.duration} s")
                pids = [pid for root in cpu_pids for pid in tree_pids(root)]
                cpu_before = cpu_s(pids)
                measured = run_cell(wrk_path, spec, plan, args.duration, args.timeout)
                node_cpu_s = cpu_between_s(cpu_before, cpu_s(pids)) if pids else None
                label = "linearizable" if api == "etcd" and operation == "get" else consistency
                results.append(CellResult(operation, label, measured, node_cpu_s))
                time.sleep(args.pause)
    except KeyboardInterrupt:
        _log("interrupted; the cells finished so far:")
        return loaded, results, 130
    except WrkError as error:  # keep what was measured before the failing cell
        _log(f"{error}\nbench: the cells finished before it:")
        return loaded, results, 1
    return loaded, results, 0


def run_etcd_reference(args: argparse.Namespace, wrk_path: str, run_id: str, ours: list[CellResult]) -> int:
    """The same load against a fresh local etcd cluster; prints its table and how dynamo compares."""
    etcd_path = find_etcd()
    _log(f"starting a {args.nodes}-member etcd cluster")
    etcd = start_etcd(etcd_path, args.nodes)
    try:
        speed_before_us = python_loop_us()
        plan = plan_load(args.connections, args.threads, len(etcd.urls))
        loaded, results, exit_code = run_cells(args, etcd.urls, plan, wrk_path, etcd.pids, run_id, "etcd",
                                               ("quorum",))
        speed_us = (speed_before_us, python_loop_us())
    finally:
        etcd.stop()
    print()
    print(reference_heading(etcd_version(etcd_path), etcd.urls, loaded, results, speed_us))
    print()
    print(format_table(results))
    print()
    print(comparison(ours, results))
    return exit_code


def reference_heading(version: str, urls: list[str], loaded: PreloadResult | None, results: list[CellResult],
                      speed_us: tuple[float, float]) -> str:
    lines = [f"### reference: etcd {version}, {len(urls)} members on loopback, the same load", "",
             "- puts are etcd puts (a majority fsynced them: quorum); gets are linearizable ranges; etcd's "
             "own defaults otherwise, through its v3 JSON gateway, values base64 as it wants them",
             "- CPU ms/req is the etcd members' CPU per request"]
    return "\n".join(lines + measure_lines(results, loaded, speed_us))


def comparison(ours: list[CellResult], reference: list[CellResult]) -> str:
    """dynamo's quorum rows as multiples of etcd's rows of the same operation."""
    lines = ["dynamo at quorum as a multiple of etcd, ops/s (CPU per request):"]
    for theirs in reference:
        mine = next((result for result in ours if result.operation == theirs.operation
                     and result.consistency == "quorum"), None)
        if mine is None or theirs.ok_per_s == 0:
            continue
        line = (f"- {theirs.operation}: {mine.ok_per_s / theirs.ok_per_s:.2f}x "
                f"({mine.ok_per_s:.0f} against {theirs.ok_per_s:.0f} ops/s")
        mine_cpu, their_cpu = mine.node_cpu_ms_per_request, theirs.node_cpu_ms_per_request
        if mine_cpu is not None and their_cpu:
            line += f"; CPU per request {mine_cpu / their_cpu:.2f}x"
        lines.append(line + ")")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if bool(args.url) == args.start_cluster:
        parser.error("give --url (one or more) or --start-cluster, not both and not neither")
    for name in ("duration", "connections", "threads", "keyspace", "timeout", "nodes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    cluster: LocalCluster | None = None
    try:
        wrk_path = find_wrk()
        if args.start_cluster:
            command = shlex.split(args.dynamo_command) if args.dynamo_command else None
            _log(f"starting a {args.nodes}-node cluster")
            cluster = start_cluster(args.nodes, command, keep_files=args.keep_cluster_files)
            _log(f"cluster ready: {', '.join(cluster.urls)} (files in {cluster.root})")
        if cluster is not None:
            return run(args, cluster.urls, wrk_path, (cluster.process.pid,))
        return run(args, args.url, wrk_path, tuple(args.cpu_pid))
    except (WrkError, ToolMissing, ClusterStartError, BenchSpecError) as error:
        _log(str(error))
        return 2
    except KeyboardInterrupt:  # while wrk was found or the cluster started: nothing measured yet
        _log("interrupted")
        return 130
    finally:
        if cluster is not None:
            _log(f"stopping the cluster (exit code {cluster.stop()})")


if __name__ == "__main__":
    sys.exit(main())
