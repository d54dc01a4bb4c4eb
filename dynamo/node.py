"""One node process: storage, RPC, gossip, the coordinator, hinted handoff and HTTP, wired together.

Theory of operation
- `Node(config).run()` opens the backend (SQLite in data_dir, or memory), starts the group committer,
  the peer pool, the RPC server, the gossip driver, the handoff loop and the HTTP server, and runs until
  cancelled. Stopping closes the listeners and loops first, then lets the committer write every write
  already queued (shielded from the cancel), then closes the backend: a clean stop loses nothing.
- Identity (data_dir/node.json): the node id, an *incarnation* and the gossip generation. The incarnation
  is a random id made when the data dir is first initialised; the node's actor id in every causal clock
  is f"{node_id}:{incarnation}". A node that lost its data (a wiped or new data dir) gets a new
  incarnation and so a new actor: it must never mint a dot (actor, n) again for a different value, and a
  wiped node no longer knows which n it used (Riak renews its vnode ids for the same reason). A node
  whose last run did not stop cleanly also gets a new incarnation: a coordinator sends a new version on
  while its own commit of it runs (coordinator.py), so a crash may have lost a dot that already left.
  node.json says "running" from start until `mark_clean_stop`, written once the committer has written
  every queued batch and none failed. The generation rises at every start (and is at least the Unix time),
  so gossip takes the new state even after a wipe.
- `run_node(config)` adds SIGTERM/SIGINT handling; `main(argv)` is `dynamo node --config node.toml`.
- RPC types served: see `_serve_rpc_types` (kv.get, kv.replicate, kv.handoff, kv.coordinate, kv.list,
  gossip, and anti-entropy's aae.tree, aae.fetch, aae.push, aae.reap).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import pathlib
import random
import signal
import sys
import time
from typing import Any, Callable, Sequence

import trio

from dynamo import gc_policy
from dynamo.api import Api
from dynamo.bucket import BadProps, BucketProps, BucketRegistry
from dynamo.config import ConfigError, Member, NodeConfig, load_config
from dynamo.durable_file import write_durably
from dynamo.http.server import HttpServer, Limits
from dynamo.rpc import PeerPool, RpcServer, UnknownType
from dynamo.service.aae import build_aae
from dynamo.service.claimant import CLEAR_TYPE, COMMIT_TYPE, HELLO_TYPE, left_at, load_ring_file
from dynamo.service.coordinator import Coordinator
from dynamo.service.forgetting import Forgetting
from dynamo.service.handoff import Handoff
from dynamo.service.listing import LIST_TYPE, Listing
from dynamo.service.membership import GOSSIP_TYPE, Membership
from dynamo.service.ownership import TRANSFER_TYPE, build_ownership
from dynamo.service.replica import Replica
from dynamo.stats import Stats
from dynamo.storage import Backend, GroupCommitter, HintStore, MemoryBackend, SqliteBackend, StorageError, uring

IDENTITY_FILE = "node.json"
STORE_FILE = "store.sqlite3"
BODY_SLACK_BYTES = 64 * 1024
RPC_CONCURRENCY_MAX = 256

log = logging.getLogger("dynamo.node")


class NodeLog(logging.LoggerAdapter):
    """Prefixes the node's own lines with its id, for processes that hold several nodes (tests). `main`
    puts the node id on every line of its process instead (the RPC and HTTP layers log too)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return (f"[{self.extra['node']}] {msg}" if self.extra.get("prefix", True) else msg), kwargs


@dataclasses.dataclass(frozen=True)
class Identity:
    incarnation: str
    generation: int
    joined: int


def _new_incarnation(rng: random.Random | None) -> str:
    # A simulation passes a seeded rng so its runs repeat; a real node draws from the OS.
    return os.urandom(4).hex() if rng is None else f"{rng.getrandbits(32):08x}"


def load_identity(data_dir: str | None, node_id: str, *, fresh_store: bool = False,
                  rng: random.Random | None = None, now_s: float | None = None) -> Identity:
    """Read, bump and durably rewrite the node's identity. A new incarnation if there is none, or if the
    store is new (`fresh_store`: data and incarnation go together). The generation always rises above
    the last one recorded, even for a new incarnation: gossip ignores a generation it has seen.
    `rng` and `now_s` (Unix seconds) default to the OS's entropy and clock."""
    generation_floor = int(time.time() if now_s is None else now_s)
    if data_dir is None:
        return Identity(_new_incarnation(rng), generation_floor, generation_floor)
    path = pathlib.Path(data_dir) / IDENTITY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    old: dict[str, Any] | None = None
    if path.exists():
        try:
            old = json.loads(path.read_text())
            int(old["generation"]), int(old["joined"]), str(old["incarnation"])
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise ConfigError(f"{path} is unreadable: {error!r}") from None
        if old.get("node_id") != node_id:
            raise ConfigError(f"{path} belongs to node {old.get('node_id')!r}, not {node_id!r}: "
                              f"use another data_dir")
    generation = generation_floor if old is None else max(int(old["generation"]) + 1, generation_floor)
    # "running" stays true until a clean stop (mark_clean_stop); a file from before the flag counts as
    # unclean. After an unclean end a dot may have left without its local commit: take a new actor.
    if old is None or fresh_store:
        identity = Identity(_new_incarnation(rng), generation, generation)
    elif old.get("running", True) is not False:  # same data and gossip membership, a new actor
        identity = Identity(_new_incarnation(rng), generation, int(old["joined"]))
    else:
        identity = Identity(str(old["incarnation"]), generation, int(old["joined"]))
    _write_identity(pathlib.Path(data_dir), node_id, identity, running=True)
    return identity


def _write_identity(data_dir: pathlib.Path, node_id: str, identity: Identity, *, running: bool) -> None:
    write_durably(data_dir / IDENTITY_FILE,
                   json.dumps({"node_id": node_id, **dataclasses.asdict(identity), "running": running}))


def renew_incarnation(data_dir: str | None, node_id: str, identity: Identity,
                      rng: random.Random | None = None) -> Identity:
    """A new incarnation (so a new actor) for a running node, durably recorded before it is used."""
    renewed = dataclasses.replace(identity, incarnation=_new_incarnation(rng))
    if data_dir is not None:
        _write_identity(pathlib.Path(data_dir), node_id, renewed, running=True)
    return renewed


def mark_clean_stop(data_dir: str | None, node_id: str, identity: Identity) -> None:
    """Record that every dot this incarnation minted is in the local store: the next start keeps it."""
    if data_dir is not None:
        _write_identity(pathlib.Path(data_dir), node_id, identity, running=False)


def _bound_port(listeners: Sequence[Any]) -> int:
    return listeners[0].socket.getsockname()[1]


class Node:
    """A whole node. Attributes other than `config` exist once `run` has started it.

    Seams for running nodes in a simulation (tools/sim/node_cluster.py), all defaulting to production:
    `transport` replaces TCP: `transport.pool(node_id, rng)` gives an object with PeerPool's interface
    and `await nursery.start(transport.serve, node_id, handler)` registers the RPC handler and starts
    with an object that has RpcServer's `stats`. `serve_http=False` opens no HTTP listener (callers use
    `dynamo.api.Api(node)` directly). `rng` seeds everything random in the node (incarnation, gossip,
    RPC backoff jitter); `wall_clock_ns` is the Unix clock (the gossip generation's floor)."""

    def __init__(self, config: NodeConfig, *, backend: Backend | None = None, log_prefix: bool = True,
                 transport: Any = None, serve_http: bool = True, rng: random.Random | None = None,
                 wall_clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.config = config
        self._given_backend = backend
        self._transport, self._serve_http, self._rng = transport, serve_http, rng
        self.wall_clock_ns = wall_clock_ns
        self.log = NodeLog(log, {"node": config.node_id, "prefix": log_prefix})
        self.stats = Stats()
        try:
            defaults = BucketProps(**config.bucket_defaults())
        except BadProps as error:
            raise ConfigError(f"bucket defaults: {error}") from None
        self.registry = BucketRegistry(defaults, config.node_id)
        self.started = trio.Event()
        self._fsync_ring: uring.FsyncRing | None = None

    @property
    def http_port(self) -> int:
        return self.config.http_port

    @property
    def rpc_port(self) -> int:
        return self.config.rpc_port

    def _open_backend(self) -> tuple[Backend, bool]:
        """(backend, whether the store is new)."""
        if self._given_backend is not None:
            given = self._given_backend  # an empty store is a new one: its node gets a new incarnation
            return given, given.count() == 0 and given.hint_id_max() == 0
        if self.config.backend == "memory":
            return MemoryBackend(), True
        path = pathlib.Path(self.config.data_dir) / STORE_FILE
        fresh = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteBackend(path, value_cache_bytes=self.config.value_cache_mib << 20), fresh

    async def run(self, *, rpc_listeners: Sequence[Any] | None = None, http_listeners: Sequence[Any] | None = None,
                  task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        backend, fresh = self._open_backend()
        try:
            # A memory store lives only as long as its process unless the caller hands it in again.
            data_dir = self.config.data_dir if (self.config.backend == "sqlite" or self._given_backend) else None
            self._identity_dir = data_dir
            self.identity = load_identity(data_dir, self.config.node_id, fresh_store=fresh, rng=self._rng,
                                          now_s=self.wall_clock_ns() / 1e9)
            self.actor = f"{self.config.node_id}:{self.identity.incarnation}"
            self.backend = backend
            self._fsync_ring = self._open_fsync_ring(backend)
            self.committer = GroupCommitter(backend, in_thread=None if self.config.commit_from_loop else True,
                                            fsync_ring=self._fsync_ring)
            self.hints = HintStore(self.committer)
            async with trio.open_nursery() as outer:
                await outer.start(self._run_committer)
                try:
                    async with trio.open_nursery() as nursery:
                        await self._start(nursery, rpc_listeners, http_listeners)
                        self.started.set()
                        task_status.started(self)
                finally:
                    with trio.CancelScope(shield=True):
                        await self.committer.aclose()
                    self._mark_clean_stop()
        finally:
            if self._given_backend is None:
                backend.close()
            if self._fsync_ring is not None:
                self._fsync_ring.close()
            self.log.info("stopped")

    def _open_fsync_ring(self, backend: Backend) -> uring.FsyncRing | None:
        """The io_uring that flushes the loop's commits in the background, when configured and available."""
        config = self.config
        if not (backend.blocking and config.commit_from_loop and config.fsync_in_background):
            return None
        ring = uring.FsyncRing.open()
        if ring is None:
            self.log.info("commits are flushed from the event loop: %s", uring.unavailable_reason)
        else:
            self.log.info("commits are flushed in the background through io_uring")
        return ring

    def _mark_clean_stop(self) -> None:
        """Only when every dot minted here is stored: all queued writes written, no batch ever failed,
        and the actor was not lost (the coordinator blanks it when it cannot renew it)."""
        coordinator = getattr(self, "coordinator", None)
        if self.committer.closed_cleanly and (coordinator is None or coordinator.actor):
            try:
                mark_clean_stop(self._identity_dir, self.config.node_id, self.identity)
            except OSError as error:  # then the next start takes a new actor: safe, only wasteful
                self.log.warning("cannot mark the clean stop in node.json: %s", error)

    def retire_actor(self) -> str:
        """Give the node a fresh actor, durably recorded before use (forgetting.py: before a copy holding
        dots of the current actor is dropped)."""
        self.coordinator.actor = self._renew_actor()
        return self.coordinator.actor

    def _renew_actor(self) -> str:
        """The coordinator lost a local commit of a dot that had left: retire the actor (durably first)."""
        self.identity = renew_incarnation(self._identity_dir, self.config.node_id, self.identity,
                                          self._child_rng() if self._rng is not None else None)
        self.actor = f"{self.config.node_id}:{self.identity.incarnation}"
        return self.actor

    async def _run_committer(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        # Shielded: a stop must not abort writes already queued; `aclose` ends it once the rest is down.
        with trio.CancelScope(shield=True):
            await self.committer.run(task_status=task_status)

    async def _start(self, nursery: trio.Nursery, rpc_listeners: Sequence[Any] | None,
                     http_listeners: Sequence[Any] | None) -> None:
        config = self.config
        saved_ring = load_ring_file(self._identity_dir)
        version = left_at(saved_ring, config.node_id)
        if version is not None:
            raise ConfigError(f"{config.node_id} left the cluster at ring v{version} (its leave completed, or its "
                              f"join was cleared); to use it again, remove {config.data_dir} and join it anew "
                              "(`dynamo admin join`)")
        if rpc_listeners is None and self._transport is None:
            rpc_listeners = await trio.open_tcp_listeners(config.rpc_port, host=config.rpc_host)
        if http_listeners is None and self._serve_http:
            http_listeners = await trio.open_tcp_listeners(config.http_port, host=config.http_host)
        self._adopt_ports(_bound_port(rpc_listeners) if rpc_listeners else config.rpc_port,
                          _bound_port(http_listeners) if http_listeners else config.http_port)
        config = self.config
        secret = config.secret.encode("utf-8")
        if self._transport is None:
            self.pool = PeerPool(config.node_id, config.cluster, secret, rng=self._child_rng())
        else:
            self.pool = self._transport.pool(config.node_id, self._child_rng())
        await nursery.start(self.pool.run)
        self.replica = Replica(self.committer, self.hints, config.partitions, self.stats,
                               self.wall_clock_ns)
        self.membership = Membership(config, self.pool, self.registry, generation=self.identity.generation,
                                     joined_generation=self.identity.joined, rng=self._child_rng(),
                                     hints_pending=self.hints.count, logger=self.log, saved_ring=saved_ring)
        self.coordinator = Coordinator(config.node_id, self.actor, self.replica, self.membership, self.pool,
                                       self.stats, siblings_warn=config.siblings_warn,
                                       siblings_max=config.siblings_max, logger=self.log)
        self.coordinator.nursery = nursery
        self.coordinator.renew_actor = self._renew_actor
        self.listing = Listing(config.node_id, self.backend, self.membership, self.registry, self.pool,
                               config.request_timeout_s, self.log)
        self.forgetting = Forgetting(lambda: self.actor, self.retire_actor, self.log)
        self.handoff = Handoff(config.node_id, self.forgetting, self.replica, self.hints, self.pool, self.membership,
                               self.registry, self.stats, interval_s=config.handoff_interval_s,
                               batch=config.handoff_batch, backoff_max_s=config.handoff_backoff_max_s,
                               timeout_s=config.request_timeout_s, logger=self.log)
        self.claimant, self.ownership = build_ownership(self, self._identity_dir)
        self.coordinator.read_repair = config.read_repair
        self.aae = build_aae(self, self._child_rng())  # also hooks the trees into the replica
        self._serve_rpc_types()
        await nursery.start(self.membership.run)  # first: gossip arriving over RPC needs its nursery
        if self._transport is None:
            self.rpc_server = RpcServer(config.node_id, config.cluster, secret, self._rpc,
                                        concurrency_max=RPC_CONCURRENCY_MAX, inline=self.rpc_inline_handlers,
                                        deferred=self.rpc_deferred_handlers)
            await nursery.start(self.rpc_server.serve, rpc_listeners)
        else:
            self.rpc_server = await nursery.start(
                functools.partial(self._transport.serve, deferred=self.rpc_deferred_handlers), config.node_id,
                self._rpc)
        self.http_server: HttpServer | None = None
        if self._serve_http:
            limits = Limits(body_bytes_max=config.value_bytes_max + BODY_SLACK_BYTES,
                            inflight_max=config.inflight_max)
            self.http_server = HttpServer(Api(self), limits)
            await nursery.start(self.http_server.serve_listeners, http_listeners)
        await nursery.start(self.handoff.run)
        await nursery.start(self.ownership.run)
        await nursery.start(self.aae.run)
        self.claimant.on_left = lambda: nursery.start_soon(self._stop_after_leave, nursery.cancel_scope)
        self.log.info("serving HTTP on %s and RPC on %s (actor %s, %d members)", config.http_address,
                      config.rpc_address, self.actor, len(config.members))
        if len(config.members) < config.n_val:
            self.log.warning("n_val %d but only %d members: a key has at most %d replicas, so quorums above "
                             "that fail; lower n_val (and r/w) or add members", config.n_val,
                             len(config.members), len(config.members))
        if config.tombstone_reap and config.tombstone_reap_grace_s < 2 * config.request_timeout_s:
            # A read repair starts as late as a get's deadline and has a deadline of its own: a copy sent
            # before a delete can arrive up to two request timeouts later (reaper.py, "the grace").
            self.log.warning("tombstone_reap_grace_s %g is under twice request_timeout_s %g: a copy sent "
                             "before a delete could arrive after its tombstone was reaped and bring the value "
                             "back; raise the grace", config.tombstone_reap_grace_s, config.request_timeout_s)

    async def _stop_after_leave(self, scope: trio.CancelScope) -> None:
        """This node left the cluster: give its last gossip a moment to go out, then stop."""
        await trio.sleep(2 * self.config.gossip_interval_s)
        self.log.info("left the cluster: stopping")
        scope.cancel()

    def _child_rng(self) -> random.Random:
        """A generator of its own for one part of the node: seeded from `rng` when given, else from the OS."""
        return random.Random() if self._rng is None else random.Random(self._rng.getrandbits(64))

    def _adopt_ports(self, rpc_port: int, http_port: int) -> None:
        """Port 0 in the config means "any": the ports actually bound are the node's addresses."""
        config = self.config
        if (rpc_port, http_port) == (config.rpc_port, config.http_port):
            return
        changed = config.replace(rpc_port=rpc_port, http_port=http_port, members=())
        me = Member(config.node_id, changed.rpc_address, changed.http_address)
        others = tuple(m for m in config.members if m.node_id != config.node_id)
        self.config = changed.replace(members=others + (me,))

    def _serve_rpc_types(self) -> None:
        """The RPC types this node answers: type -> async handler(peer_id, body). Services add theirs here."""
        self.rpc_handlers = {
            "kv.get": lambda peer_id, body: self.replica.rpc_get(body),
            "kv.replicate": lambda peer_id, body: self.coordinator.rpc_replicate(peer_id, body),
            "kv.handoff": lambda peer_id, body: self.replica.rpc_handoff(body),
            "kv.coordinate": lambda peer_id, body: self.coordinator.rpc_coordinate(body),
            LIST_TYPE: lambda peer_id, body: self.listing.rpc_list(body),
            GOSSIP_TYPE: self.membership.handle_rpc,
            COMMIT_TYPE: self.claimant.rpc_commit,
            HELLO_TYPE: self.claimant.rpc_hello,
            CLEAR_TYPE: self.claimant.rpc_clear,
            TRANSFER_TYPE: self.ownership.rpc_transfer,
            **self.aae.rpc_types(),  # aae.tree, aae.fetch, aae.push, aae.reap
        }
        # Answered in the RPC connection's reader without a task (they never wait); also in rpc_handlers.
        self.rpc_inline_handlers = {"kv.get": lambda peer_id, body: self.replica.rpc_get_now(body)}
        # Taken by the reader when they need no wait but a callback's (a replica write's group commit);
        # a request one of these declines goes to its rpc_handlers entry, in a task (transport.py).
        self.rpc_deferred_handlers = {"kv.replicate": self.coordinator.rpc_replicate_nowait}

    async def _rpc(self, peer_id: str, type_: str, body: Any) -> Any:
        handler = self.rpc_handlers.get(type_)
        if handler is None:
            raise UnknownType(type_)
        return await handler(peer_id, body)

    async def stats_report(self) -> dict[str, Any]:
        backend = self.backend
        keys = await trio.to_thread.run_sync(backend.count) if backend.blocking else backend.count()
        membership = self.membership
        gauges = {
            "node": self.config.node_id, "actor": self.actor, "keys_stored": keys,
            "hints_pending": self.hints.count(), "ring_version": membership.ring.version,
            "ring_members": len(membership.ring.nodes), "members_down": sorted(membership.down),
            "http_inflight": self.http_server.inflight if self.http_server is not None else 0,
            "commit_batches": self.committer.batches_written,
            "commit_ops": self.committer.ops_written, "commit_batches_in_loop": self.committer.batches_in_loop,
            "commit_thread_spells": self.committer.thread_spells,
            "commit_background_syncs": self.committer.background_syncs,
            "rpc_requests": self.rpc_server.stats.requests,
            "rpc_handler_errors": self.rpc_server.stats.handler_errors,
            **self.ownership.gauges(),  # ring change: transfers remaining, keys sent/received/dropped
            **gc_policy.gc_report(),  # the garbage collector: collections, thresholds, objects frozen
        }
        return self.stats.to_json(gauges)


async def _stop_on_signal(cancel_scope: trio.CancelScope, node: Node) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            node.log.info("%s: stopping", signal.Signals(signum).name)
            cancel_scope.cancel()
            return


async def run_node(config: NodeConfig, *, log_prefix: bool = True, own_process: bool = False,
                   task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
    """Run a node until SIGTERM/SIGINT (or until cancelled); `task_status.started` gets the Node. With
    `own_process` (the process is this node: `dynamo node`) the start-up objects are frozen out of
    garbage collection once the node serves (gc_policy.py)."""
    node = Node(config, log_prefix=log_prefix)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, nursery.cancel_scope, node)
        await nursery.start(_run_until_stopped, node, nursery.cancel_scope)
        if own_process:
            gc_policy.freeze_startup_objects()
        task_status.started(node)


async def _run_until_stopped(node: Node, scope: trio.CancelScope,
                             task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
    await node.run(task_status=task_status)
    scope.cancel()  # the node stopped by itself (it left the cluster): so does the process


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dynamo node", description="Run one node of a dynamo cluster.")
    parser.add_argument("--config", help="a TOML file of settings (flags override it)")
    parser.add_argument("--node-id")
    parser.add_argument("--rpc", help="RPC listen address host:port (default 127.0.0.1:7001)")
    parser.add_argument("--http", help="HTTP listen address host:port (default 127.0.0.1:8001)")
    parser.add_argument("--data-dir")
    parser.add_argument("--backend", choices=("sqlite", "memory"))
    parser.add_argument("--cluster", help="cluster name")
    parser.add_argument("--secret", help="cluster secret (default: a loopback-only placeholder)")
    parser.add_argument("--partitions", type=int)
    parser.add_argument("--n-val", type=int)
    parser.add_argument("--member", action="append", metavar="ID=RPC,HTTP",
                        help="a cluster member, e.g. node2=127.0.0.1:7002,127.0.0.1:8002 (repeat)")
    parser.add_argument("--log-level")
    return parser


def _members(values: list[str] | None) -> tuple[Member, ...] | None:
    if not values:
        return None
    members = []
    for value in values:
        node_id, _, addresses = value.partition("=")
        rpc, _, http = addresses.partition(",")
        members.append(Member(node_id, rpc, http))
    return tuple(members)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        overrides = {"node_id": args.node_id, "rpc": args.rpc, "http": args.http, "backend": args.backend,
                     "cluster": args.cluster, "secret": args.secret, "partitions": args.partitions,
                     "n_val": args.n_val, "members": _members(args.member), "log_level": args.log_level}
        if args.data_dir is not None:
            overrides["data_dir"] = args.data_dir
        config = load_config(args.config, **overrides)
    except ConfigError as error:
        print(f"dynamo node: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s {config.node_id} %(levelname)s %(name)s: %(message)s")
    gc_policy.tune_for_serving()
    try:
        trio.run(functools.partial(run_node, config, log_prefix=False, own_process=True))
    except (ConfigError, StorageError, OSError) as error:
        print(f"dynamo node {config.node_id}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
