"""The `dynamo` command line: one entry point, one subcommand per job.

Subcommands are added as the parts they drive exist. `dynamo ring` lays out a ring with the real claim
algorithm and prints who owns what, so an operator can see balance and spacing before a cluster exists.
`dynamo node` runs one node (its own flags belong to dynamo.node, which parses them); `dynamo cluster up`
runs a local cluster of node processes in the foreground (dynamo.cluster); `dynamo admin` prints a running
node's status, ring and members as tables (dynamo.admin).

Each subcommand imports what it drives only when it runs, so `dynamo admin` does not pay for the node's
imports and a broken part does not take the other commands down with it. Errors a user can fix are one line
on stderr and a non-zero exit (2 for bad arguments, 1 for a failure talking to or running a cluster).
"""

from __future__ import annotations

import argparse
import os
import sys


def _ring_command(args: argparse.Namespace) -> int:
    from ring.hashing import partition_for_key
    from ring.preflist import preference_list
    from ring.report import ownership_report
    from ring.state import Ring

    nodes = [f"node{i}" for i in range(1, args.nodes + 1)]
    ring = Ring.initial(nodes, partitions=args.partitions, target_n=args.target_n)
    print(ownership_report(ring).format())
    for key in args.key or ():
        bucket, _, name = key.partition("/")
        if not name:
            raise SystemExit(f"dynamo ring: --key wants BUCKET/KEY, got {key!r}")
        partition = partition_for_key(bucket.encode(), name.encode(), ring.partitions)
        preflist = preference_list(ring, partition, args.n_val)
        owners = ", ".join(replica.node for replica in preflist.primaries)
        print(f"{bucket}/{name}: partition {partition}, primaries {owners}")
    return 0


def _node_command(argv: list[str]) -> int:
    _die_with_supervisor()
    from dynamo import node

    return node.main(argv)


def _die_with_supervisor() -> None:
    """Under `dynamo cluster up`, ask Linux to SIGTERM this node when its supervisor dies.

    The supervisor starts nodes in their own session (so a terminal's Ctrl-C reaches only the supervisor,
    which stops them in order); without this, a SIGKILLed supervisor would leave orphan nodes holding ports.
    """
    from dynamo.cluster import ENV_SUPERVISOR_PID

    supervisor = os.environ.pop(ENV_SUPERVISOR_PID, None)
    if supervisor is None or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != supervisor:  # it died before prctl took effect
        raise SystemExit("dynamo node: the supervising `dynamo cluster up` is gone; not starting")


def _cluster_up_command(args: argparse.Namespace) -> int:
    from dynamo import cluster

    spec = cluster.plan_cluster(args.data_dir, args.nodes, http_port=args.http_port, rpc_port=args.rpc_port,
                                name=args.cluster, partitions=args.partitions)
    return cluster.cluster_up(spec, ready_timeout_s=args.ready_timeout, grace_s=args.grace)


def _cluster_add_command(args: argparse.Namespace) -> int:
    from dynamo import cluster, expansion

    try:
        return expansion.cluster_add(args.data_dir, commit=not args.stage_only, ready_timeout_s=args.ready_timeout)
    except cluster.ClusterError as error:
        print(f"dynamo cluster add: {error}", file=sys.stderr)
        return 1


def _admin_command(args: argparse.Namespace) -> int:
    from dynamo import admin

    try:
        if args.admin_command in ("status", "ring", "members"):
            print(admin.run_admin(args.admin_command, args.node, args.timeout))
        else:  # membership changes (change_admin.py)
            from dynamo.change_admin import run_change
            print(run_change(args.admin_command, args.node, args.target, args.timeout))
    except admin.AdminError as error:
        print(f"dynamo admin {args.admin_command}: {error}", file=sys.stderr)
        return 1
    return 0


def _add_node_parser(commands) -> None:
    # Only for `dynamo --help`: main() hands `dynamo node ...` to dynamo.node before argparse sees it.
    commands.add_parser("node", help="run one node (dynamo node --config node.toml; see dynamo node --help)",
                        add_help=False)


def _add_cluster_parser(commands) -> None:
    cluster = commands.add_parser("cluster", help="run a local cluster of node processes")
    actions = cluster.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    up = actions.add_parser("up", help="start N nodes on 127.0.0.1 in the foreground; Ctrl-C stops them")
    up.add_argument("--nodes", type=int, default=None,
                    help="number of nodes for a new data dir (default 5; a rerun uses the data dir's)")
    up.add_argument("--http-port", type=int, default=8001, help="first HTTP port, counting up (default 8001)")
    up.add_argument("--rpc-port", type=int, default=7001, help="first RPC port, counting up (default 7001)")
    up.add_argument("--data-dir", default="./dynamo-data", help="one subdirectory per node (default ./dynamo-data)")
    up.add_argument("--cluster", default=None, help="cluster name for a new data dir (default dynamo)")
    up.add_argument("--partitions", type=int, default=None, help="Q for a new data dir (default 256)")
    up.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to wait for /ping (default 60)")
    up.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL (default 10)")
    up.set_defaults(run=_cluster_up_command)
    add = actions.add_parser("add", help="start one more node in a running `cluster up` and join it")
    add.add_argument("--data-dir", default="./dynamo-data", help="the running cluster's data dir")
    add.add_argument("--stage-only", action="store_true", help="stage the join; plan and commit yourself")
    add.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to wait for /ping (default 60)")
    add.set_defaults(run=_cluster_add_command)


def _add_admin_parser(commands) -> None:
    from dynamo.change_admin import CHANGE_COMMANDS

    admin = commands.add_parser("admin", help="ask a running node: status, ring, members; stage and commit "
                                "membership changes (join, leave, force-remove, plan, commit, clear), follow transfers")
    admin_commands = ("status", "ring", "members") + CHANGE_COMMANDS
    admin.add_argument("admin_command", choices=admin_commands, metavar="{" + ",".join(admin_commands) + "}")
    admin.add_argument("target", nargs="?", help="join: the seed's HTTP URL; force-remove: the node id")
    admin.add_argument("--node", default="http://127.0.0.1:8001", help="the node's HTTP URL")
    admin.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the node (default 5)")
    admin.set_defaults(run=_admin_command)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dynamo", description="A Dynamo-style leaderless key-value store.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    ring = commands.add_parser("ring", help="lay out a ring with the claim algorithm and print ownership")
    ring.add_argument("--nodes", type=int, default=5, help="number of nodes (default 5)")
    ring.add_argument("--partitions", type=int, default=256, help="Q, a power of two (default 256)")
    ring.add_argument("--target-n", type=int, default=3, help="spacing target (default 3)")
    ring.add_argument("--n-val", type=int, default=3, help="replicas per key for --key (default 3)")
    ring.add_argument("--key", action="append", help="BUCKET/KEY: also show where this key lives")
    ring.set_defaults(run=_ring_command)
    _add_node_parser(commands)
    _add_cluster_parser(commands)
    _add_admin_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["node"]:
        return _node_command(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except ValueError as error:
        print(f"dynamo {args.command}: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `dynamo ring | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
