"""The coordinator: runs a client's get, put or delete against the key's preference list.

Theory of operation (Riak's get and put FSMs; the quorum rules are the pure objects of dynamo/quorum.py)
- Targets: the live primaries of the key's partition, then the fallbacks standing in for the down ones
  (`Membership.preflist`). Each target is (node, fallback_for).
- Get: ask every target ("kv.get"; the local copy is read directly), feed each answer to a GetQuorum and
  answer once it has enough. The asks are `PeerPool.request`s: no task per replica; each answer (or its
  failure: timeout, connection lost) arrives as a callback, and the request waits once, for "enough".
  Slow replicas keep reporting after the client has its answer, until all answered or the deadline
  passed, and the last one to report starts read repair (the merged object, "kv.replicate", in a task of
  the node's service nursery) to every replica that answered stale or not-found, a fallback with its
  hint. The client never waits for that.
- Put and delete (a delete writes a tombstone): the coordinating node must be a target, because it mints
  the new dot on its own durable, latest copy. A primary target coordinates locally; otherwise the whole
  request is forwarded ("kv.coordinate", with the targets and the remaining deadline) to the first live
  primary, and only when none is reachable does a fallback coordinate. Fallbacks coordinate as rarely as
  possible: a copy holding its own dots can never be dropped after handoff (see handoff.py).
- The coordinator stores its new object durably (with a hint when it is a fallback) *before* sending it
  anywhere: a replica must never hold a dot its minter could forget in a crash and mint again. Then it
  sends "kv.replicate" to the other targets (requests with callbacks, as for a get); its own write is the
  first ack of the PutQuorum.
- Answers carry ReplicaCounts (X-Dynamo-Replicas): primaries and fallbacks that answered or acked, and
  hints written. Replica answers are `Version`s: the blob as stored, decoded only when needed; equal
  blobs are equal objects (canonical encoding), so the common all-agree read decodes once.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any

import trio

from dynamo.causality import decode_context
from dynamo.object import Content, StoredObject, decode_object, encode_object, last_write_wins, merge, put
from dynamo.quorum import NOT_FOUND, Failed, Found, GetQuorum, NotFound, PutQuorum, QuorumFailed, ReadRepair
from dynamo.rpc import PeerPool, RpcError, RpcRemoteError, RpcTimeout, RpcUnavailable
from dynamo.service.membership import Membership
from dynamo.service.replica import OBJECTS, Replica, SiblingLimitError
from dynamo.stats import Stats
from dynamo.storage import StorageError
from ring.hashing import partition_for_key

log = logging.getLogger("dynamo.coordinator")

Target = tuple[str, "str | None"]  # (node, the primary it stands in for; None for a primary)
REPAIR_TIMEOUT_S = 5.0


@dataclasses.dataclass(frozen=True, slots=True)
class ReplicaCounts:
    primary: int = 0
    fallback: int = 0
    hints: int = 0

    def header(self) -> str:
        return f"primary={self.primary} fallback={self.fallback} hints={self.hints}"


@dataclasses.dataclass(frozen=True, slots=True)
class GetRequest:
    bucket: bytes
    key: bytes
    n_val: int
    r: int
    pr: int = 0
    notfound_ok: bool = True
    basic_quorum: bool = False
    timeout_s: float = 10.0


@dataclasses.dataclass(frozen=True, slots=True)
class GetOutcome:
    obj: StoredObject | None  # None: not found, or the quorum failed (then `error` says which)
    error: str | None
    replicas: ReplicaCounts


@dataclasses.dataclass(frozen=True, slots=True)
class WriteRequest:
    bucket: bytes
    key: bytes
    content: Content  # a tombstone for a delete
    context: str | None  # the client's X-Riak-Vclock, already checked by the caller
    n_val: int
    w: int
    dw: int = 0
    pw: int = 0
    timeout_s: float = 10.0
    lww: bool = False
    allow_mult: bool = True

    def to_wire(self) -> list[Any]:
        c = self.content
        return [self.bucket, self.key, [c.value, c.content_type, c.last_modified_us, [list(m) for m in c.metadata],
                                        c.deleted], self.context, self.n_val, self.w, self.dw, self.pw,
                self.timeout_s, self.lww, self.allow_mult]

    @classmethod
    def from_wire(cls, raw: Any) -> WriteRequest:
        bucket, key, (value, ctype, lm_us, meta, deleted), context, n_val, w, dw, pw, timeout_s, lww, mult = raw
        content = Content(value, ctype, lm_us, tuple(tuple(m) for m in meta), deleted)
        if not all(type(x) is int for x in (n_val, w, dw, pw)) or not isinstance(timeout_s, (int, float)):
            raise ValueError("bad write request")
        return cls(bucket, key, content, context, n_val, w, dw, pw, float(timeout_s), bool(lww), bool(mult))


@dataclasses.dataclass(frozen=True, slots=True)
class WriteOutcome:
    status: int  # 200: written to a quorum; else the HTTP status to answer with `message`
    message: str
    obj: StoredObject | None
    replicas: ReplicaCounts
    # encode_object(obj), when already at hand: a forwarded reply reuses it instead of encoding again
    blob: bytes | None = dataclasses.field(default=None, compare=False)

    def to_wire(self) -> list[Any]:
        blob = self.blob if self.blob is not None else encode_object(self.obj) if self.obj is not None else None
        r = self.replicas
        return [self.status, self.message, blob, [r.primary, r.fallback, r.hints]]

    @classmethod
    def from_wire(cls, raw: Any) -> WriteOutcome:
        status, message, blob, (primary, fallback, hints) = raw
        obj = decode_object(blob, trusted=True) if blob is not None else None  # from an authenticated peer
        return cls(status, message, obj, ReplicaCounts(primary, fallback, hints), blob)


class Version:
    """A replica's answer: its blob, decoded on first use; equal blobs are equal objects."""

    __slots__ = ("_blob", "_obj")

    def __init__(self, blob: bytes | None = None, obj: StoredObject | None = None) -> None:
        assert blob is not None or obj is not None
        self._blob, self._obj = blob, obj

    @property
    def blob(self) -> bytes:
        if self._blob is None:
            self._blob = encode_object(self._obj)
        return self._blob

    @property
    def obj(self) -> StoredObject:
        if self._obj is None:
            self._obj = OBJECTS.decode(self._blob)
        return self._obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and (self is other or self.blob == other.blob)

    __hash__ = None  # type: ignore[assignment]


def merge_versions(a: Version, b: Version) -> Version:
    if a is b or a.blob == b.blob:
        return a
    return Version(obj=merge(a.obj, b.obj))


def _is_tombstone(version: Version) -> bool:
    return version.obj.is_tombstone


class _Op:
    """One request in flight: its quorum, the event set once it has enough, replies still due."""

    __slots__ = ("quorum", "done", "waiting", "fallback_for", "bucket", "key")

    def __init__(self, quorum: GetQuorum | PutQuorum, targets: tuple[Target, ...], bucket: bytes, key: bytes):
        self.quorum = quorum
        self.done = trio.Event()
        self.waiting = 0
        self.fallback_for = {node: primary for node, primary in targets if primary is not None}
        self.bucket, self.key = bucket, key

    def add(self, node: str, reply: Any) -> None:
        self.quorum.add_reply(node, reply)
        if not self.done.is_set() and self.quorum.enough():
            self.done.set()

    async def wait(self, deadline_s: float, targets: tuple[Target, ...], failure: Any) -> None:
        """Until enough replies; past the deadline the missing ones count as failures."""
        if not self.done.is_set():
            with trio.move_on_at(deadline_s):
                await self.done.wait()
        if not self.done.is_set():
            for node, _ in targets:
                self.quorum.add_reply(node, failure)

    def counts(self, ok: Any) -> ReplicaCounts:
        primary = fallback = 0
        for node, reply in self.quorum.replies.items():
            if ok(reply):
                if node in self.fallback_for:
                    fallback += 1
                else:
                    primary += 1
        return ReplicaCounts(primary, fallback, fallback if isinstance(self.quorum, PutQuorum) else 0)


class Coordinator:
    def __init__(self, node_id: str, actor: str, replica: Replica, membership: Membership, pool: PeerPool,
                 stats: Stats, *, siblings_warn: int, siblings_max: int,
                 logger: logging.LoggerAdapter | None = None) -> None:
        self.node_id = node_id
        self.actor = actor
        self.replica = replica
        self.membership = membership
        self.pool = pool
        self.stats = stats
        self.siblings_warn, self.siblings_max = siblings_warn, siblings_max
        self.log = logger or logging.LoggerAdapter(log, {})
        self.nursery: trio.Nursery | None = None  # hosts replica calls that outlive their request

    def _targets(self, bucket: bytes, key: bytes, n_val: int) -> tuple[Target, ...]:
        partition = partition_for_key(bucket, key, self.membership.ring.partitions)
        return tuple((r.node, r.fallback_for) for r in self.membership.preflist(partition, n_val).targets)

    # ---- get ----------------------------------------------------------------------------------------

    async def get(self, request: GetRequest) -> GetOutcome:
        started_s = trio.current_time()
        deadline_s = started_s + request.timeout_s
        self.stats.node_gets += 1
        targets = self._targets(request.bucket, request.key, request.n_val)
        if not targets:
            return GetOutcome(None, f"R-value unsatisfied: 0/{request.r}", ReplicaCounts())
        primaries = frozenset(node for node, primary in targets if primary is None)
        quorum = GetQuorum(n=len(targets), r=request.r, pr=request.pr, notfound_ok=request.notfound_ok,
                           basic_quorum=request.basic_quorum, primaries=primaries, merge=merge_versions,
                           is_tombstone=_is_tombstone)
        op = _Op(quorum, targets, request.bucket, request.key)
        remote = [node for node, _ in targets if node != self.node_id]
        op.waiting = len(remote)  # before any ask: a failure may be reported at once
        if len(remote) < len(targets):
            blob = self.replica.read(request.bucket, request.key)
            self.stats.vnode_gets += 1
            op.add(self.node_id, NOT_FOUND if blob is None else Version(blob))
        for node in remote:
            self._ask(node, "kv.get", [request.bucket, request.key], deadline_s,
                      functools.partial(self._got, op, node))
        await op.wait(deadline_s, targets, Failed("timeout"))
        result = quorum.result()
        replicas = op.counts(lambda reply: not isinstance(reply, Failed))
        self.stats.get_latency.record(int((trio.current_time() - started_s) * 1e6))
        if isinstance(result, QuorumFailed):
            self.stats.node_get_failures += 1
            return GetOutcome(None, result.message, replicas)
        if isinstance(result, NotFound):
            self.stats.node_gets_notfound += 1
            return GetOutcome(None, None, replicas)
        assert isinstance(result, Found)
        return GetOutcome(result.obj.obj, None, replicas)

    def _spawn(self, fn, *args: Any) -> None:
        assert self.nursery is not None, "the coordinator needs its service nursery"
        self.nursery.start_soon(fn, *args)

    def _ask(self, node: str, type_: str, body: Any, deadline_s: float, on_reply) -> None:
        """Send a request to a replica; `on_reply(body, error)` runs exactly once, now or later."""
        try:
            timeout_s = deadline_s - trio.current_time()
            if timeout_s <= 0:
                raise RpcTimeout("deadline passed")
            self.pool.request(node, type_, body, timeout_s, on_reply)
        except RpcError as error:
            on_reply(None, error)
        except Exception as error:  # a bug here must not take the request down; the quorum sees a failure
            self.log.exception("%s to %s failed", type_, node)
            on_reply(None, error)

    def _got(self, op: _Op, node: str, blob: Any, error: Exception | None) -> None:
        """A replica's answer to kv.get (or its failure); the last one starts read repair if needed."""
        if error is not None:
            reply: Any = Failed(str(error))
        elif blob is None:
            reply = NOT_FOUND
        elif type(blob) is bytes:
            reply = Version(blob)
        else:
            reply = Failed(f"kv.get answered a {type(blob).__name__}")
        op.add(node, reply)
        op.waiting -= 1
        if op.waiting == 0:
            try:
                action = op.quorum.final_action()
            except Exception:
                self.log.exception("read repair of %r/%r: cannot merge the replies", op.bucket, op.key)
                return
            if action is not None:
                self._spawn(self._read_repair, op, action)

    async def _read_repair(self, op: _Op, action: ReadRepair) -> None:
        blob = action.obj.blob
        for node in action.nodes:
            self.stats.read_repairs += 1
            hint_for = op.fallback_for.get(node)
            try:
                if node == self.node_id:
                    await self.replica.merge_in(op.bucket, op.key, blob, hint_for)
                else:
                    await self.pool.call(node, "kv.replicate", [op.bucket, op.key, blob, hint_for],
                                         REPAIR_TIMEOUT_S)
            except (RpcError, StorageError) as error:
                self.log.info("read repair of %r/%r on %s failed: %s", op.bucket, op.key, node, error)

    # ---- put and delete -----------------------------------------------------------------------------

    async def write(self, request: WriteRequest) -> WriteOutcome:
        started_s = trio.current_time()
        deadline_s = started_s + request.timeout_s
        self.stats.node_puts += 1
        if request.content.deleted:
            self.stats.node_deletes += 1
        targets = self._targets(request.bucket, request.key, request.n_val)
        primaries = [node for node, primary in targets if primary is None]
        if self.node_id in primaries or (not primaries and any(node == self.node_id for node, _ in targets)):
            outcome = await self._coordinate(request, targets, deadline_s)
        else:
            outcome = await self._forward(request, targets, deadline_s)
        self.stats.put_latency.record(int((trio.current_time() - started_s) * 1e6))
        if outcome.status >= 500:
            self.stats.node_put_failures += 1
        return outcome

    async def _forward(self, request: WriteRequest, targets: tuple[Target, ...], deadline_s: float) -> WriteOutcome:
        is_target = any(node == self.node_id for node, _ in targets)
        candidates = [node for node, primary in targets if primary is None]
        if not is_target:  # a fallback target coordinates itself before asking another fallback
            candidates += [node for node, primary in targets if primary is not None]
        wire_targets = [[node, primary] for node, primary in targets]
        for node in candidates:
            timeout_s = deadline_s - trio.current_time()
            if timeout_s <= 0:
                break
            # The coordinator gets a little less time than we wait, so its own verdict (say a W-value
            # failure) reaches us before our deadline turns it into a bare timeout.
            body = [dataclasses.replace(request, timeout_s=timeout_s * 0.9).to_wire(), wire_targets]
            try:
                raw = await self.pool.call(node, "kv.coordinate", body, timeout_s)
            except RpcUnavailable:
                continue  # try the next target (at worst the write lands twice: same value, two dots)
            except RpcTimeout:
                return WriteOutcome(504, f"timeout: coordinator {node} did not answer in time", None,
                                    ReplicaCounts())
            except RpcRemoteError as error:
                return WriteOutcome(503, f"coordinator {node} failed: {error.message}", None, ReplicaCounts())
            self.stats.coord_redirs += 1
            return WriteOutcome.from_wire(raw)
        if is_target and deadline_s > trio.current_time():
            return await self._coordinate(request, targets, deadline_s)
        return WriteOutcome(503, f"W-value unsatisfied: 0/{request.w} (no coordinator reachable)", None,
                            ReplicaCounts())

    async def rpc_coordinate(self, body: Any) -> list[Any]:
        raw_request, raw_targets = body
        request = WriteRequest.from_wire(raw_request)
        targets = tuple((node, primary) for node, primary in raw_targets)
        if not any(node == self.node_id for node, _ in targets):
            raise ValueError("kv.coordinate sent to a node that is not a target")
        outcome = await self._coordinate(request, targets, trio.current_time() + request.timeout_s)
        return outcome.to_wire()

    def _change(self, request: WriteRequest):
        context = decode_context(request.context) if request.context else None

        def change(local: StoredObject | None) -> StoredObject:
            seen = context
            if seen is None and request.content.deleted and local is not None:
                seen = local.context()  # a delete without context removes what it finds here, as Riak's
            obj = put(local, request.content, seen, self.actor, lww=request.lww)
            if not request.allow_mult and len(obj.siblings) > 1:
                obj = last_write_wins(obj, self.actor)
            if len(obj.siblings) > self.siblings_max:
                raise SiblingLimitError(f"too many siblings: the write would leave {len(obj.siblings)} "
                                        f"(at most {self.siblings_max})")
            return obj
        return change

    async def _coordinate(self, request: WriteRequest, targets: tuple[Target, ...], deadline_s: float) -> WriteOutcome:
        bucket, key = request.bucket, request.key
        hint_for = next(primary for node, primary in targets if node == self.node_id)
        try:
            obj, blob = await self.replica.coordinate(bucket, key, self._change(request), hint_for)
        except SiblingLimitError as error:
            self.stats.siblings_refused += 1
            return WriteOutcome(413, str(error), None, ReplicaCounts())
        except StorageError as error:
            self.log.error("local write of %r/%r failed: %s", bucket, key, error)
            return WriteOutcome(503, f"local write failed: {error}", None, ReplicaCounts())
        if len(obj.siblings) > self.siblings_warn:
            self.stats.siblings_warned += 1
            self.log.warning("%r/%r has %d siblings (resolve them: write with the merged context)",
                             bucket, key, len(obj.siblings))
        primaries = frozenset(node for node, primary in targets if primary is None)
        quorum = PutQuorum(n=len(targets), w=request.w, dw=request.dw, pw=request.pw, primaries=primaries)
        op = _Op(quorum, targets, bucket, key)
        op.add(self.node_id, True)
        for node, primary in targets:
            if node != self.node_id:
                self._ask(node, "kv.replicate", [bucket, key, blob, primary], deadline_s,
                          functools.partial(self._acked, op, node))
        await op.wait(deadline_s, targets, False)
        failed = quorum.result()
        replicas = op.counts(bool)
        if failed is not None:
            return WriteOutcome(503, failed.message, None, replicas)
        return WriteOutcome(200, "", obj, replicas, blob)

    def _acked(self, op: _Op, node: str, reply: Any, error: Exception | None) -> None:
        if error is not None:
            self.log.debug("replicate %r/%r to %s failed: %s", op.bucket, op.key, node, error)
        op.add(node, error is None and reply is True)
