"""The coordinator: runs a client's get, put or delete against the key's preference list.

Theory of operation (Riak's get and put FSMs; the quorum rules are the pure objects of dynamo/quorum.py)
- Targets: the live primaries of the key's partition, then the fallbacks standing in for the down ones
  (`Membership.preflist`). Each target is (node, fallback_for). During a ring change a write also goes
  to the partition's pending owners (`Membership.pending`), not counted toward W (Cassandra's pending
  ranges); each "kv.replicate" names the ring version it was routed by, and a replica that knows of a
  newer change passes the copy on to the pending owners, and to the primaries of its own view where a
  newer ring routes the partition, itself (`rpc_replicate`). A write forwarded here ("kv.coordinate")
  comes with the forwarder's targets, routed by its view; the primaries of this node's view that it did
  not name (a change that finished here and not there yet) get the write too, not counted toward W: the
  old owners named instead drop their copies once the change settles. A pr or pw above the live
  primaries is refused up front ("PW-value unsatisfied: 2/3"): nothing is read or written for a request
  that must fail.
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
  possible: dropping their copy after handoff then costs the node its actor (see forgetting.py).
- The rule behind a put: no dot may ever name two values. The coordinator mints the new dot (actor,
  n) from its local copy, n one past what that copy holds, so what must never happen is a replica holding
  (actor, n) while the coordinator's copy forgets it and a later write mints (actor, n) again. A put
  therefore does its two commits at once instead of one after the other: the coordinator queues its new
  object (with a hint when it is a fallback) for its own commit, sends "kv.replicate" to the other targets
  at once (requests with callbacks, as for a get), and counts its own ack in the PutQuorum when its commit
  is durable. Why the dot can still not be minted twice, in each way the local commit can fail to happen:
  - The process dies (crash, SIGKILL, power) before the commit: the node restarts with a *new actor*.
    `load_identity` (node.py) renews the incarnation, hence the actor node_id:incarnation, whenever the
    last run did not end with a clean stop; a clean stop is marked only after the group committer has
    written every queued batch. The old actor never mints again, so its lost n cannot be reused.
  - The commit fails while the node runs (disk error): the per-key lock, held from the read of the local
    copy until the commit's outcome is known (replica.py, shielded from cancellation), keeps the next
    write of the key from starting, and `_retire_actor` gives the node a new actor (durably, in node.json)
    before the lock is handed on. If even that fails, the node refuses to coordinate writes until restarted.
  - The caller is cancelled (a peer's kv.coordinate connection drops): the lock is still held until the
    commit settles, so the next write starts from the stored copy.
  A version sent before the commit only went where a version sent after it would have gone: replicas
  merge it like any other. Only the order of two fsyncs changed, not what is acknowledged: the client's
  ack still needs W durable copies (fsync before ack stays).
- A coordinator's "kv.replicate" to a peer that advertises REPLICATE_DIGEST (membership.py) also carries
  the copy's anti-entropy digest and tombstone flag, which the coordinator works out once for its own
  tree: a replica that stores the copy as sent then takes them instead of decoding the blob for them (a
  put's CPU across three nodes: 0.958-0.987x, four paired bench runs).
- Answers carry ReplicaCounts (X-Dynamo-Replicas): primaries and fallbacks that answered or acked, and
  hints written, counted when the answer is made: replies still on their way then (the client does not
  wait for them) are not in it, so primary+fallback is at least the quorum met and at most N. The same
  rule for get, put and delete. Replica answers are `Version`s: the blob as stored, decoded only when needed; equal
  blobs are equal objects (canonical encoding), so the common all-agree read decodes once.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Callable

import trio

from dynamo.causality import decode_context
from dynamo.object import (DIGEST_BYTES, Content, ObjectDigest, StoredObject, decode_object, encode_object,
                           last_write_wins, merge, put)
from dynamo.quorum import NOT_FOUND, Failed, Found, GetQuorum, NotFound, PutQuorum, QuorumFailed, ReadRepair
from dynamo.rpc import PeerPool, RpcError, RpcRemoteError, RpcTimeout, RpcUnavailable
from dynamo.service.membership import REPLICATE_DIGEST, Membership
from dynamo.service.replica import OBJECTS, Replica, SiblingLimitError
from dynamo.stats import Stats
from dynamo.storage import StorageError
from ring.hashing import partition_for_key

log = logging.getLogger("dynamo.coordinator")

Target = tuple[str, "str | None"]  # (node, the primary it stands in for; None for a primary)
REPAIR_TIMEOUT_S = 5.0


@dataclasses.dataclass(frozen=True, slots=True)
class ReplicaCounts:
    """Replicas that had answered (get: a value or not-found) or acked (put, delete) when the answer was
    made; `hints`: acks of fallbacks, each holding a hint. Later replies are not counted."""

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
    """One request in flight: its quorum, whether it has enough, replies still due.

    The request's task parks in `wait` until the quorum has enough, with no cancel scope or Event of its
    own: every ask is a `PeerPool.request` (or a local read or commit) with the request's deadline, so
    each reply or failure (RpcTimeout at the deadline at the latest) arrives through `add`."""

    __slots__ = ("quorum", "done", "waiting", "fallback_for", "bucket", "key", "_task")

    def __init__(self, quorum: GetQuorum | PutQuorum, targets: tuple[Target, ...], bucket: bytes, key: bytes):
        self.quorum = quorum
        self.done = False
        self.waiting = 0
        self.fallback_for = {node: primary for node, primary in targets if primary is not None}
        self.bucket, self.key = bucket, key
        self._task: Any = None  # the request's task while it waits

    def add(self, node: str, reply: Any) -> None:
        self.quorum.add_reply(node, reply)
        if not self.done and self.quorum.enough():
            self.done = True
            task, self._task = self._task, None
            if task is not None:
                trio.lowlevel.reschedule(task)

    async def wait(self) -> None:
        """Until the quorum has enough replies (each ask delivers a reply or a failure by its deadline)."""
        if not self.done:
            self._task = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, _raise_cancel: Any) -> trio.lowlevel.Abort:
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED

    def counts(self, ok: Any) -> ReplicaCounts:
        primary = fallback = 0
        for node, reply in self.quorum.replies.items():
            if ok(reply):
                if node in self.fallback_for:
                    fallback += 1
                else:
                    primary += 1
        return ReplicaCounts(primary, fallback, fallback if isinstance(self.quorum, PutQuorum) else 0)


def _primaries_unmet(name: str, needed: int, targets: tuple[Target, ...]) -> str | None:
    """The 503 message when the live primaries cannot meet pr/pw ("PW-value unsatisfied: 2/3"), else
    None. Only primaries the failure detector thinks down are counted out: a primary that is down but not
    yet convicted is asked, and the quorum object refuses later if it does not answer."""
    if needed <= 0:
        return None
    live = sum(1 for _, primary in targets if primary is None)
    return f"{name}-value unsatisfied: {live}/{needed}" if live < needed else None


def _replicate_routing(body: Any) -> tuple[int, int] | None:
    """Check kv.replicate's shape; a coordinator's copy also names (its routing version, n_val), and to a
    peer that supports REPLICATE_DIGEST, the copy's (digest, tombstone flag) after them."""
    if type(body) is not list or len(body) not in (4, 6, 8):
        raise ValueError("kv.replicate wants [bucket, key, blob, hint_for or null(, routing version, n_val"
                         "(, digest, tombstone))]")
    if len(body) == 4:
        return None
    routed, n_val = body[4], body[5]
    if type(routed) is not int or type(n_val) is not int:
        raise ValueError("kv.replicate's routing version and n_val must be integers")
    if len(body) == 8 and (type(body[6]) is not bytes or len(body[6]) != DIGEST_BYTES
                           or type(body[7]) is not bool):
        raise ValueError(f"kv.replicate's digest must be {DIGEST_BYTES} bytes and its tombstone flag a bool")
    return routed, n_val


def _replicate_digest(body: list) -> ObjectDigest | None:
    """The (digest, tombstone flag) a checked kv.replicate carries, or None."""
    return (body[6], body[7]) if len(body) == 8 else None


def _not_counted(reply: Any, error: Exception | None) -> None:
    """A pending owner's ack is not counted toward W (it does not own the key yet): nothing to do."""


def _cannot_renew() -> str:
    raise StorageError("no way to renew the actor was given")


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
        self.read_repair = True  # the node's read_repair setting (off only to test anti-entropy alone)
        # Gives the node a new actor, durably, and returns it (see _retire_actor); the node sets it.
        self.renew_actor: Callable[[], str] = _cannot_renew

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
        unmet = _primaries_unmet("PR", request.pr, targets)
        if unmet is not None:  # refused before asking anyone, as Riak's get FSM validates pr
            self.stats.node_get_failures += 1
            return GetOutcome(None, unmet, ReplicaCounts())
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
        await op.wait()
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
            if action is not None and self.read_repair:
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
        unmet = _primaries_unmet("PW", request.pw, targets)
        if unmet is not None:  # refused before anything is written, as Riak's put FSM validates pw
            self.stats.node_put_failures += 1
            return WriteOutcome(503, unmet, None, ReplicaCounts())
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
        # The forwarder routed by its own view of the ring, which may be older than ours: a ring change
        # may have finished here and not there yet. The primaries it did not name get the write too.
        named = {node for node, _ in targets}
        unnamed = tuple(node for node, primary in self._targets(request.bucket, request.key, request.n_val)
                        if primary is None and node not in named)
        outcome = await self._coordinate(request, targets, trio.current_time() + request.timeout_s, unnamed)
        return outcome.to_wire()

    def _change(self, request: WriteRequest, minted_by: list[str]):
        """The change of the local copy a write makes; it appends the actor it mints with to `minted_by`."""
        context = decode_context(request.context) if request.context else None

        def change(local: StoredObject | None) -> StoredObject:
            actor = self.actor
            if not actor:
                raise StorageError("this node lost a local commit and could not renew its actor; restart it")
            seen = context
            if seen is None and request.content.deleted and local is not None:
                seen = local.context()  # a delete without context removes what it finds here, as Riak's
            obj = put(local, request.content, seen, actor, lww=request.lww)
            if not request.allow_mult and len(obj.siblings) > 1:
                obj = last_write_wins(obj, actor)
            if len(obj.siblings) > self.siblings_max:
                raise SiblingLimitError(f"too many siblings: the write would leave {len(obj.siblings)} "
                                        f"(at most {self.siblings_max})")
            minted_by.append(actor)
            return obj
        return change

    async def _coordinate(self, request: WriteRequest, targets: tuple[Target, ...], deadline_s: float,
                          unnamed: tuple[str, ...] = ()) -> WriteOutcome:
        """Mint the new version on the local copy, send it to `targets` and wait for the quorum; `unnamed`
        (primaries in this node's view that a forwarder did not name) get it too, not counted toward W."""
        bucket, key = request.bucket, request.key
        hint_for = next(primary for node, primary in targets if node == self.node_id)
        primaries = frozenset(node for node, primary in targets if primary is None)
        quorum = PutQuorum(n=len(targets), w=request.w, dw=request.dw, pw=request.pw, primaries=primaries)
        op = _Op(quorum, targets, bucket, key)
        minted_by: list[str] = []
        sent = False

        def replicate(obj: StoredObject, blob: bytes, digest: ObjectDigest | None) -> None:
            nonlocal sent  # the new version is queued for our commit
            sent = True
            routed = [self.routing_version(), request.n_val]
            supports = self.membership.supports
            for node, primary in targets:
                if node != self.node_id:
                    body = [bucket, key, blob, primary, *routed]
                    if digest is not None and supports(node, REPLICATE_DIGEST):
                        body += digest
                    self._ask(node, "kv.replicate", body, deadline_s, functools.partial(self._acked, op, node))
            # A ring change under way: the partition's new owners get the write too, not counted toward W;
            # so do the primaries a forwarder with an older view did not name.
            pending = self.membership.pending(partition_for_key(bucket, key, self.replica.partitions),
                                              request.n_val)
            for node in dict.fromkeys(pending + unnamed):
                if all(node != target for target, _ in targets):
                    self._ask(node, "kv.replicate", [bucket, key, blob, None], deadline_s, _not_counted)
        try:
            obj, blob = await self.replica.coordinate(bucket, key, self._change(request, minted_by), hint_for,
                                                      replicate)
        except SiblingLimitError as error:
            self.stats.siblings_refused += 1
            return WriteOutcome(413, str(error), None, ReplicaCounts())
        except StorageError as error:
            self.log.error("local write of %r/%r failed: %s", bucket, key, error)
            if not sent:  # nothing left this node: the write did not happen
                return WriteOutcome(503, f"local write failed: {error}", None, ReplicaCounts())
            self._retire_actor(minted_by[-1])  # its dot left while our copy failed: never mint it again
            op.add(self.node_id, False)
            await op.wait()
            failed = quorum.result()
            return WriteOutcome(503 if failed is not None else 200, failed.message if failed else "", None,
                                op.counts(bool))
        op.add(self.node_id, True)  # our own ack, once our commit is durable
        if len(obj.siblings) > self.siblings_warn:
            self.stats.siblings_warned += 1
            self.log.warning("%r/%r has %d siblings (resolve them: write with the merged context)",
                             bucket, key, len(obj.siblings))
        await op.wait()
        failed = quorum.result()
        replicas = op.counts(bool)
        if failed is not None:
            return WriteOutcome(503, failed.message, None, replicas)
        return WriteOutcome(200, "", obj, replicas, blob)

    def routing_version(self) -> int:
        """The newest ring this node routes writes by: a change's next ring while one is under way."""
        transition = self.membership.transition
        return transition.next.version if transition is not None else self.membership.ring.version

    async def rpc_replicate(self, peer_id: str, body: Any) -> bool:
        """kv.replicate: store the copy. A coordinator's copy carries [..., its routing version, n_val]:
        if it did not know of the ring change under way here (gossip has not reached it yet), it did not
        send the write to the partition's pending owners, and a transfer may already have passed the key;
        so pass the copy on to them (best effort, like the coordinator's own sends to them)."""
        routing = _replicate_routing(body)
        stored = await self.replica.rpc_replicate(body[:4], _replicate_digest(body))
        self._pass_on(peer_id, body, routing)
        return stored

    def rpc_replicate_nowait(self, peer_id: str, body: Any, respond: Callable[[Any, Exception | None], None]) -> bool:
        """`rpc_replicate` without a task (RpcServer's deferred path): True if taken, and then
        `respond(True, None)` or `respond(None, error)` comes exactly once, when the copy is durable or
        failed; False when it needs a wait (key busy, committer full, a hint) and must go as a task."""
        routing = _replicate_routing(body)

        def done(error: Exception | None) -> None:
            if error is None:
                try:
                    self._pass_on(peer_id, body, routing)
                except Exception:  # the copy is stored: answer so, whatever became of the pass-on
                    self.log.exception("kv.replicate of %r/%r: passing it on failed", body[0], body[1])
            respond(True if error is None else None, error)
        return self.replica.rpc_replicate_nowait(body[:4], done, _replicate_digest(body))

    def _pass_on(self, peer_id: str, body: list, routing: tuple[int, int] | None) -> None:
        """Send a stored copy on to the partition's pending owners if its coordinator routed it by an
        older ring than ours (see rpc_replicate); and to the partition's primaries in our view if a newer
        ring than the coordinator's routes the partition here: once a change is done here there are no
        pending owners, and the copy would otherwise stay with old owners only, which drop it at cleanup."""
        if routing is None:
            return
        routed, n_val = routing
        if routed < self.routing_version():
            bucket, key, blob = body[0], body[1], body[2]
            partition = partition_for_key(bucket, key, self.replica.partitions)
            nodes = self.membership.pending(partition, n_val)
            if self.membership.routed_by(partition) > routed:
                nodes += tuple(node for node, primary in self._targets(bucket, key, n_val) if primary is None)
            for node in dict.fromkeys(nodes):
                if node != self.node_id and node != peer_id:
                    self.stats.writes_forwarded += 1
                    self._ask(node, "kv.replicate", [bucket, key, blob, None],
                              trio.current_time() + REPAIR_TIMEOUT_S, _not_counted)

    def _retire_actor(self, actor: str) -> None:
        """A dot of `actor` reached other replicas but our own copy of it was not stored: the next write
        of that key here would mint the same dot for another value. Give the node a new actor first (or,
        if that cannot be done, refuse to coordinate writes until the node restarts, which renews it)."""
        if actor != self.actor:
            return  # retired already
        try:
            self.actor = self.renew_actor()
            self.log.warning("a local commit failed after its version was sent on: actor %s retired, now %s",
                             actor, self.actor)
        except Exception:
            self.log.exception("cannot renew the actor after a failed local commit; refusing writes")
            self.actor = ""

    def _acked(self, op: _Op, node: str, reply: Any, error: Exception | None) -> None:
        if error is not None:
            self.log.debug("replicate %r/%r to %s failed: %s", op.bucket, op.key, node, error)
        op.add(node, error is None and reply is True)
