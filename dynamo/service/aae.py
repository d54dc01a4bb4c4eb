"""Active anti-entropy: the trio driver that exchanges Merkle trees between replicas and repairs what differs.

Theory of operation
- Trees: one per partition and n_val (tree.py), kept current by the Replica hook and rebuilt from storage at
  start-up in the background. Exchanges start only once the start-up build is done.
- Rounds: every `interval_s`, for each n_val in use (the default, every bucket's, any a tree still holds)
  and each partition this node is a primary of at that n_val, it exchanges that tree with each other
  primary that is up *and has a larger node id* (every pair once per round, from one side; the smallest id
  exchanges with all, which is what makes it the reap decider, see reaper.py). So the 4th and 5th replicas
  of an n_val=5 bucket are compared too, and an n_val=1 bucket's keys never show up as missing on the
  default's other primaries. An exchange is the sans-IO `antientropy.exchange.Exchange` over the "aae.tree"
  RPC ([partition, request, n_val] -> reply, answered from the responder's tree by `respond`); it yields
  the keys that differ. At most `concurrency_max` trees are synced at a time, so at most that many
  exchanges run at once. A round first moves keys whose bucket's n_val changed into their new tree
  (`PartitionTrees.rehome`), once per change of the bucket registry.
- Repair, per differing key, both ways with DVV merge: fetch the peer's copies ("aae.fetch", a batch of
  keys), merge each into the local copy (Replica.merge_many: under the key's lock, with whatever is stored
  by then) and send the local copy to the peer when the merge shows it lacks something ("aae.push": the
  peer merges the same way). Merging is a sync: siblings are kept, a stale copy never replaces a newer one,
  nothing either side held is dropped, and doing it twice changes nothing. A key is counted repaired when
  either side was written. A side that is no primary for the key's bucket now (its n_val changed under
  the exchange) is not written. Every visited key is re-read into its tree (`resync`), on both sides.
- Budget: a token bucket of `keys_per_s` (burst: one second's worth) is charged before each batch of keys
  is fetched, so repair never touches keys faster than that, whatever the number of exchanges.
- Reaping (reaper.py): after a round in which the decider exchanged with every other primary, the
  tombstones found in no diff are agreed; ripe ones are reaped.
- `report()` is GET /admin/aae; /stats counts aae_exchanges, aae_keys_repaired and aae_tombstones_reaped.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from typing import Any, Callable, Sequence

import trio

from antientropy.exchange import (BranchReply, BranchRequest, Exchange, ExchangeDone, ExchangeError, RootReply,
                                  RootRequest, SegmentReply, SegmentRequest, respond)
from antientropy.merkle import TreeShape
from dynamo.rpc import RpcError
from dynamo.service.membership import HINTS_KEY
from dynamo.service.reaper import REAP_TYPE, ReapLedger, Reaper
from dynamo.service.replica import Replica, merge_blobs
from dynamo.service.tree import PartitionTrees, split_tree_key
from dynamo.storage import StorageError
from ring.hashing import partition_for_key

log = logging.getLogger("dynamo.aae")

TREE_TYPE = "aae.tree"
FETCH_TYPE = "aae.fetch"
PUSH_TYPE = "aae.push"
REPAIR_BATCH_KEYS = 64
REAP_BATCH_KEYS = 256


class AaeNotReady(ValueError):
    """A tree asked for before this node has built it."""


class TokenBucket:
    """Rate limit by reservation: `reserve(n, now_s)` takes n tokens (possibly into debt) and returns how
    long to wait before using them. Over any span T at most burst + rate * T tokens are used."""

    def __init__(self, rate_per_s: float, burst: float, now_s: float) -> None:
        if not rate_per_s > 0 or not burst >= 1:
            raise ValueError(f"rate_per_s must be > 0 and burst >= 1, got {rate_per_s!r}, {burst!r}")
        self.rate_per_s, self.burst = rate_per_s, burst
        self._tokens, self._at_s = burst, now_s

    def reserve(self, n: int, now_s: float) -> float:
        self._tokens = min(self.burst, self._tokens + (now_s - self._at_s) * self.rate_per_s)
        self._at_s = now_s
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate_per_s


# ---- exchange messages on the wire (CBOR lists) ----------------------------------------------------------


def encode_request(request: Any) -> list[Any]:
    if isinstance(request, RootRequest):
        shape = request.shape
        return ["root", request.exchange_id, request.step, shape.segments, shape.fanout, shape.hash_version]
    if isinstance(request, BranchRequest):
        return ["branch", request.exchange_id, request.step, request.level, list(request.parents)]
    assert isinstance(request, SegmentRequest)
    return ["segment", request.exchange_id, request.step, list(request.segments)]


def decode_request(raw: Any) -> Any:
    try:
        kind, exchange_id, step, *rest = raw
        if kind == "root":
            return RootRequest(exchange_id, step, TreeShape(*rest))
        if kind == "branch":
            level, parents = rest
            return BranchRequest(exchange_id, step, level, tuple(parents))
        if kind == "segment":
            (segments,) = rest
            return SegmentRequest(exchange_id, step, tuple(segments))
    except (TypeError, ValueError) as error:
        raise ValueError(f"malformed exchange request: {error}") from None
    raise ValueError(f"unknown exchange request {raw!r:.60}")


def encode_reply(reply: Any) -> list[Any]:
    if isinstance(reply, RootReply):
        shape = reply.shape
        return ["root", reply.exchange_id, reply.step, shape.segments, shape.fanout, shape.hash_version, reply.root]
    if isinstance(reply, BranchReply):
        return ["branch", reply.exchange_id, reply.step, list(reply.hashes)]
    assert isinstance(reply, SegmentReply)
    return ["segment", reply.exchange_id, reply.step, [[list(pair) for pair in seg] for seg in reply.entries]]


def decode_reply(raw: Any) -> Any:
    try:
        kind, exchange_id, step, *rest = raw
        if kind == "root":
            segments, fanout, version, root = rest
            return RootReply(exchange_id, step, TreeShape(segments, fanout, version), root)
        if kind == "branch":
            (hashes,) = rest
            return BranchReply(exchange_id, step, tuple(hashes))
        if kind == "segment":
            (entries,) = rest
            return SegmentReply(exchange_id, step, tuple(tuple(tuple(pair) for pair in seg) for seg in entries))
    except (TypeError, ValueError) as error:
        raise ExchangeError(f"malformed exchange reply: {error}") from None
    raise ExchangeError(f"unknown exchange reply {raw!r:.60}")


# ---- the driver ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class PartitionStatus:
    """What /admin/aae shows for one partition's tree of one n_val."""

    n_val: int
    peers: tuple[str, ...] = ()
    last_exchange_unix: float | None = None
    exchanges: int = 0
    keys_repaired: int = 0
    last_differences: int = 0
    tombstones_reaped: int = 0


@dataclasses.dataclass(frozen=True)
class AaeSettings:
    enabled: bool
    interval_s: float
    concurrency_max: int
    keys_per_s: float
    n_val: int
    timeout_s: float
    reap: bool
    reap_grace_s: float


class AntiEntropy:
    def __init__(self, node_id: str, settings: AaeSettings, replica: Replica, trees: PartitionTrees, reaper: Reaper,
                 membership: Any, registry: Any, pool: Any, stats: Any, hints_count: Callable[[], int], *,
                 rng: random.Random, wall_clock_ns: Callable[[], int],
                 logger: logging.LoggerAdapter | None = None) -> None:
        self.node_id, self.settings = node_id, settings
        self.replica, self.trees, self.reaper = replica, trees, reaper
        self.membership, self.registry, self.pool, self.stats = membership, registry, pool, stats
        self.hints_count, self.rng, self.wall_clock_ns = hints_count, rng, wall_clock_ns
        self.log = logger or logging.LoggerAdapter(log, {})
        self.ledger = ReapLedger(settings.reap_grace_s)
        self.status: dict[tuple[int, int], PartitionStatus] = {}  # (partition, n_val) -> status
        self.rounds = 0
        self.hashes_received = 0
        self.bytes_exchanged = 0
        self.repair_bytes = 0  # blobs fetched and pushed by repair
        self._bucket: TokenBucket | None = None
        self._placed_version = -1  # the registry version the trees were last rehomed for
        self._placed: dict[bytes, int] = {}  # and the bucket n_vals it set

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.trees.build)
            task_status.started()
            await self.trees.build_done.wait()
            if not self.settings.enabled:
                return
            self.set_budget(self.settings.keys_per_s)
            while True:
                await trio.sleep(self.settings.interval_s)
                await self.round()

    def set_budget(self, keys_per_s: float) -> None:
        """(Re)start the repair token bucket at `keys_per_s` (burst: one second's worth)."""
        self.settings = dataclasses.replace(self.settings, keys_per_s=keys_per_s)
        self._bucket = TokenBucket(keys_per_s, max(1.0, keys_per_s), trio.current_time())

    async def round(self) -> None:
        """Sync every (partition, n_val) tree this node is a primary of, `concurrency_max` at a time."""
        await self.follow_registry()
        mine = [(p, n) for n in sorted(self.n_vals()) for p in range(self.membership.ring.partitions)
                if self.node_id in self._primaries(p, n)]
        limiter = trio.CapacityLimiter(self.settings.concurrency_max)
        async with trio.open_nursery() as nursery:
            for partition, n_val in mine:
                await limiter.acquire_on_behalf_of((partition, n_val))
                nursery.start_soon(self._sync_released, partition, n_val, limiter)
        self.rounds += 1

    def n_vals(self) -> set[int]:
        """The n_vals to exchange: the default, every bucket's, and any a tree still holds keys of."""
        return ({self.settings.n_val} | {entry.props.n_val for _, entry in self.registry.items()}
                | self.trees.n_vals())

    async def follow_registry(self) -> None:
        """After a bucket's n_val changed, move its keys to the tree of the new n_val."""
        version = self.registry.version
        if version == self._placed_version:
            return
        placed = {bucket: entry.props.n_val for bucket, entry in self.registry.items()
                  if entry.props.n_val != self.settings.n_val}
        if placed != self._placed:
            await self.trees.rehome()
        self._placed, self._placed_version = placed, version

    async def _sync_released(self, partition: int, n_val: int, limiter: trio.CapacityLimiter) -> None:
        try:
            await self.sync_partition(partition, n_val)
        except Exception:  # noqa: BLE001 - a bug here must not take the node down; the next round retries
            self.log.exception("anti-entropy of partition %d (n_val %d) failed", partition, n_val)
        finally:
            limiter.release_on_behalf_of((partition, n_val))

    def _primaries(self, partition: int, n_val: int) -> tuple[str, ...]:
        return tuple(r.node for r in self.membership.preflist(partition, n_val).primaries)

    def _up(self, node: str) -> bool:
        return node not in self.membership.down and self.membership.is_alive(node)

    async def sync_partition(self, partition: int, n_val: int) -> None:
        """Exchange the partition's tree of `n_val` and repair with each larger-id primary at that n_val
        that is up; then, as decider, reap."""
        primaries = self._primaries(partition, n_val)
        peers = tuple(p for p in primaries if p > self.node_id)
        status = self.status.setdefault((partition, n_val), PartitionStatus(n_val=n_val))
        status.peers = tuple(p for p in primaries if p != self.node_id)
        if not self.trees.ready(partition):
            return
        differing: set[bytes] = set()
        complete = True
        for peer in peers:
            if not self._up(peer):
                complete = False
                continue
            try:
                done = await self.exchange(partition, n_val, peer)
                differing |= done.keys
                status.last_differences = len(done.keys)
                status.keys_repaired += await self.repair(partition, peer, done.keys)
            except (RpcError, StorageError, ExchangeError) as error:
                complete = False
                self.log.info("anti-entropy of partition %d (n_val %d) with %s failed: %s", partition, n_val, peer,
                              error)
        if self.settings.reap and primaries and min(primaries) == self.node_id:
            await self._reap_step(partition, n_val, primaries, differing, complete)

    async def exchange(self, partition: int, n_val: int, peer: str) -> ExchangeDone:
        exchange = Exchange(self.trees.tree(partition, n_val), exchange_id=self.rng.getrandbits(31))
        message: Any = exchange.start()
        while not isinstance(message, ExchangeDone):
            body = [partition, encode_request(message), n_val]
            raw = await self.pool.call(peer, TREE_TYPE, body, self.settings.timeout_s)
            message = exchange.handle(decode_reply(raw))
        status = self.status.setdefault((partition, n_val), PartitionStatus(n_val=n_val))
        status.exchanges += 1
        status.last_exchange_unix = self.wall_clock_ns() / 1e9
        self.stats.aae_exchanges += 1
        self.hashes_received += message.stats.hashes_received
        self.bytes_exchanged += message.stats.bytes_total
        return message

    async def repair(self, partition: int, peer: str, tks: frozenset[bytes] | set[bytes]) -> int:
        """Sync each differing key with `peer` both ways; returns the keys where either side was written."""
        names = []
        for tk in sorted(tks):
            bucket, key = split_tree_key(tk)
            if partition_for_key(bucket, key, self.replica.partitions) == partition:
                names.append((bucket, key))
        repaired = 0
        size = max(1, min(REPAIR_BATCH_KEYS, int(self.settings.keys_per_s)))  # never more than the burst
        for start in range(0, len(names), size):
            batch = names[start:start + size]
            assert self._bucket is not None
            delay_s = self._bucket.reserve(len(batch), trio.current_time())
            if delay_s > 0:
                await trio.sleep(delay_s)
            repaired += await self._repair_batch(partition, peer, batch)
        return repaired

    async def _repair_batch(self, partition: int, peer: str, batch: Sequence[tuple[bytes, bytes]]) -> int:
        remote = await self.pool.call(peer, FETCH_TYPE, [list(name) for name in batch], self.settings.timeout_s)
        if type(remote) is not list or len(remote) != len(batch):
            raise ExchangeError(f"aae.fetch from {peer} answered {len(remote) if type(remote) is list else remote!r}")
        take, give = [], []
        for (bucket, key), theirs in zip(batch, remote):
            if theirs is not None and type(theirs) is not bytes:
                raise ExchangeError(f"aae.fetch from {peer} answered a {type(theirs).__name__}")
            mine = self.replica.read(bucket, key)
            holders = self._primaries(partition, self.registry.get(bucket).n_val)
            if theirs is not None and self.node_id in holders and merge_blobs(mine, theirs) is not None:
                take.append((bucket, key, theirs))
            if mine is not None and peer in holders and (theirs is None or merge_blobs(theirs, mine) is not None):
                give.append([bucket, key, mine])
        self.repair_bytes += sum(len(blob) for blob in remote if blob is not None)
        self.repair_bytes += sum(len(item[2]) for item in give)
        if give:
            await self.pool.call(peer, PUSH_TYPE, give, self.settings.timeout_s)
        if take:
            await self.replica.merge_many(take)
        for bucket, key in batch:
            self.trees.resync(partition, bucket, key, self.replica.read(bucket, key))
        repaired = len({(b, k) for b, k, _ in take} | {(b, k) for b, k, _ in give})
        self.stats.aae_keys_repaired += repaired
        return repaired

    # ---- reaping ------------------------------------------------------------------------------------

    def _hint_free(self) -> bool:
        """Every node of the ring reports no pending hint (gossip; unknown counts as pending)."""
        if self.hints_count() != 0:
            return False
        gossiper = self.membership.gossiper
        return all(node == self.node_id or gossiper.app_state(node, HINTS_KEY) == 0
                   for node in self.membership.ring.nodes)

    async def _reap_step(self, partition: int, n_val: int, primaries: tuple[str, ...], differing: set[bytes],
                         complete: bool) -> None:
        tree = (partition, n_val)
        if not complete or self.membership.transition is not None or not self._hint_free() \
                or not all(self._up(p) for p in primaries if p != self.node_id):
            self.ledger.reset(tree)
            return
        agreed = {tk: digest for tk, digest in self.trees.tombstones(partition, n_val).items()
                  if tk not in differing}
        ripe = self.ledger.observe(tree, agreed, trio.current_time())
        items = []
        for tk, digest in ripe:
            bucket, key = split_tree_key(tk)
            if self.registry.get(bucket).n_val == n_val:  # changed since: other primaries, another round
                items.append((bucket, key, digest))
        for start in range(0, len(items), REAP_BATCH_KEYS):
            batch = items[start:start + REAP_BATCH_KEYS]
            try:
                reaped = await self.reap(partition, primaries, batch)
            except (RpcError, StorageError, ValueError) as error:
                self.log.info("reaping in partition %d failed: %s", partition, error)
                return
            finally:
                self.ledger.forget(tree, [tk for tk, _ in ripe[start:start + REAP_BATCH_KEYS]])
            self.status[tree].tombstones_reaped += reaped

    async def reap(self, partition: int, primaries: Sequence[str], items: Sequence[tuple[bytes, bytes, bytes]]) -> int:
        """Peers first; then locally only what every peer dropped (see reaper.py). Returns local drops."""
        everywhere = [True] * len(items)
        wire = [list(item) for item in items]
        for peer in primaries:
            if peer != self.node_id:
                dropped = await self.pool.call(peer, REAP_TYPE, [partition, wire], self.settings.timeout_s)
                if type(dropped) is not list or len(dropped) != len(items):
                    raise ValueError(f"aae.reap from {peer} answered {dropped!r:.60}")
                everywhere = [a and b is True for a, b in zip(everywhere, dropped)]
        return sum(await self.reaper.drop([item for item, ok in zip(items, everywhere) if ok]))

    # ---- RPC handlers -------------------------------------------------------------------------------

    async def rpc_tree(self, peer_id: str, body: Any) -> list[Any]:
        if type(body) is not list or len(body) not in (2, 3):
            raise ValueError("aae.tree wants [partition, request, n_val]")
        partition, raw, n_val = body if len(body) == 3 else (*body, self.settings.n_val)  # 2: an older peer
        if type(partition) is not int or not 0 <= partition < self.replica.partitions:
            raise ValueError(f"aae.tree: bad partition {partition!r}")
        if type(n_val) is not int or n_val < 1:
            raise ValueError(f"aae.tree: bad n_val {n_val!r}")
        if not self.trees.ready(partition):
            raise AaeNotReady(f"the tree of partition {partition} is still being built")
        request = decode_request(raw)
        if isinstance(request, RootRequest):  # the responder's side of an exchange counts as one too
            status = self.status.setdefault((partition, n_val), PartitionStatus(n_val=n_val))
            status.last_exchange_unix = self.wall_clock_ns() / 1e9
        return encode_reply(respond(self.trees.tree(partition, n_val), request))

    async def rpc_fetch(self, peer_id: str, body: Any) -> list[bytes | None]:
        if type(body) is not list:
            raise ValueError("aae.fetch wants [[bucket, key], ...]")
        blobs = []
        for item in body:
            if type(item) is not list or len(item) != 2 or not all(type(x) is bytes for x in item):
                raise ValueError("aae.fetch items are [bucket, key] of bytes")
            blob = self.replica.read(item[0], item[1])
            self.trees.resync(partition_for_key(item[0], item[1], self.replica.partitions), item[0], item[1], blob)
            blobs.append(blob)
        return blobs

    async def rpc_push(self, peer_id: str, body: Any) -> int:
        return await self.replica.rpc_handoff(body)  # same shape and checks: [[bucket, key, blob], ...]

    def rpc_types(self) -> dict[str, Callable[[str, Any], Any]]:
        return {TREE_TYPE: self.rpc_tree, FETCH_TYPE: self.rpc_fetch, PUSH_TYPE: self.rpc_push,
                REAP_TYPE: self.reaper.rpc_reap}

    # ---- GET /admin/aae -----------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        partitions = {}
        for (partition, n_val), status in sorted(self.status.items()):
            name = str(partition) if n_val == self.settings.n_val else f"{partition}/n_val={n_val}"
            partitions[name] = {**dataclasses.asdict(status), "peers": list(status.peers),
                                "tree_keys": self.trees.key_count(partition, n_val),
                                "tree_ready": self.trees.ready(partition)}
        totals = {"exchanges": self.stats.aae_exchanges, "keys_repaired": self.stats.aae_keys_repaired,
                  "tombstones_reaped": self.stats.aae_tombstones_reaped, "rounds": self.rounds,
                  "hashes_received": self.hashes_received, "bytes_exchanged": self.bytes_exchanged,
                  "repair_bytes": self.repair_bytes,
                  **self.trees.report()}
        settings = dataclasses.asdict(self.settings)
        return {"node": self.node_id, "settings": settings, "totals": totals, "partitions": partitions}


def build_aae(node: Any, rng: random.Random) -> AntiEntropy:
    """Wire anti-entropy into a starting Node: its trees follow the node's replica from now on."""
    config = node.config
    registry = node.registry
    trees = PartitionTrees(node.backend, config.partitions, config.aae_tree_segments,
                           lambda bucket: registry.get(bucket).n_val, node.log)
    node.replica.on_stored = trees.on_stored
    reaper = Reaper(node.replica, node.stats, node.forgetting, node.log)
    settings = AaeSettings(enabled=config.aae_enabled, interval_s=config.aae_interval_s,
                           concurrency_max=config.aae_concurrency_max, keys_per_s=config.aae_keys_per_s,
                           n_val=config.n_val, timeout_s=config.request_timeout_s, reap=config.tombstone_reap,
                           reap_grace_s=config.tombstone_reap_grace_s)
    return AntiEntropy(config.node_id, settings, node.replica, trees, reaper, node.membership, node.registry,
                       node.pool, node.stats, node.hints.count, rng=rng, wall_clock_ns=node.wall_clock_ns,
                       logger=node.log)
