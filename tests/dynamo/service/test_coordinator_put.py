"""The put path's two commits at once: the coordinator sends its new version on while its own commit runs.

The invariant under test: no dot (actor, n) ever names two values, across a crash between the mint and
the local commit (then a restart), and across a local commit that fails while the node runs. Every
version the coordinator sends is captured by a fake peer pool; the checks look at every dot in them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging

import pytest
import trio

from dynamo.node import load_identity, mark_clean_stop
from dynamo.object import Content, decode_object, encode_object, put
from dynamo.service.coordinator import Coordinator, WriteOutcome, WriteRequest
from dynamo.service.replica import Replica
from dynamo.stats import Stats
from dynamo.storage import GroupCommitter, HintStore, MemoryBackend, SqliteBackend, StorageError

PARTITIONS = 8


@dataclasses.dataclass(frozen=True)
class _Target:
    node: str
    fallback_for: str | None = None


@dataclasses.dataclass(frozen=True)
class _Preflist:
    targets: tuple


class _Ring:
    partitions = PARTITIONS
    version = 1


class _Membership:
    """Every key's preference list: this node and two peers, all primaries."""

    ring = _Ring()
    transition = None  # no ring change under way
    peers = ("peer1", "peer2")

    def preflist(self, partition: int, n_val: int) -> _Preflist:
        return _Preflist((_Target("me"), *(_Target(peer) for peer in self.peers)))

    def pending(self, partition: int, n_val: int) -> tuple[str, ...]:
        return ()  # no ring change under way

    def routed_by(self, partition: int) -> int:
        return self.ring.version

    def supports(self, node: str, capability: str) -> bool:
        return False  # peers that advertise nothing: kv.replicate goes in its first form


class _Pool:
    """Acknowledges every kv.replicate at once, and keeps what was sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.to: list[str] = []

    def request(self, node, type_, body, timeout_s, on_reply) -> None:
        assert type_ == "kv.replicate"
        self.sent.append(body[2])
        self.to.append(node)
        on_reply(True, None)


class _Disk(MemoryBackend):
    """A memory store whose commits can be made to fail (raise) or to be lost (a power cut)."""

    def __init__(self, disk=None) -> None:
        super().__init__(disk)
        self.failing = self.lost = False

    def write_batch(self, ops) -> None:
        if self.failing:
            raise StorageError("disk error")
        if not self.lost:
            super().write_batch(ops)


def _coordinator(committer: GroupCommitter, actor: str, pool: _Pool) -> Coordinator:
    replica = Replica(committer, HintStore(committer), PARTITIONS, Stats())
    return Coordinator("me", actor, replica, _Membership(), pool, Stats(), siblings_warn=25, siblings_max=100,
                       logger=logging.LoggerAdapter(logging.getLogger("test"), {}))


@contextlib.asynccontextmanager
async def _serving(pool: _Pool):
    """A coordinator "me:a" over a memory store whose committer runs (and is closed cleanly after)."""
    committer = GroupCommitter(_Disk(), in_thread=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(committer.run)
        yield _coordinator(committer, "me:a", pool)
        await committer.aclose()


def _write(value: bytes) -> WriteRequest:
    return WriteRequest(b"b", b"k", Content(value), None, n_val=3, w=2)


def _values_by_dot(blobs: list[bytes]) -> dict[tuple[str, int], set[bytes]]:
    seen: dict[tuple[str, int], set[bytes]] = {}
    for blob in blobs:
        for dot, content in decode_object(blob).clock.dotted_values():
            seen.setdefault(dot, set()).add(content.value)
    return seen


def _one_value_per_dot(blobs: list[bytes]) -> bool:
    return all(len(values) == 1 for values in _values_by_dot(blobs).values())


async def _life(data_dir, disk: _Disk, pool: _Pool, value: bytes, *, crash: bool, mark_clean: bool = False) -> str:
    """One run of a node: load its identity, coordinate one write; with `crash` the process dies after
    the version left but before its local commit (the batch is lost), so no clean stop is marked."""
    identity = load_identity(str(data_dir), "me")
    actor = f"me:{identity.incarnation}"
    disk.lost = crash
    committer = GroupCommitter(disk, in_thread=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(committer.run)
        outcome = await _coordinator(committer, actor, pool).write(_write(value))
        assert outcome.status == 200
        await committer.aclose()
    if not crash or mark_clean:
        mark_clean_stop(str(data_dir), "me", identity)
    return actor


def test_a_crash_between_mint_and_local_commit_then_a_restart_never_gives_a_dot_two_values(tmp_path, trio_run):
    async def main():
        disk, pool = _Disk(), _Pool()
        first = await _life(tmp_path, disk, pool, b"one", crash=True)
        second = await _life(tmp_path, disk, pool, b"two", crash=False)
        third = await _life(tmp_path, disk, pool, b"three", crash=False)
        assert len(pool.sent) == 6  # each write went to both peers
        assert first != second == third  # unclean end: a new actor; clean stop: the same one
        assert _one_value_per_dot(pool.sent)
        # The version sent after the restart has dots from the new actor only: (first, 1) stays "one".
        assert _values_by_dot(pool.sent)[(first, 1)] == {b"one"}
        assert _values_by_dot(pool.sent)[(second, 1)] == {b"two"}
    trio_run(main)


def test_the_hazard_is_real_keeping_the_actor_after_the_crash_mints_a_dot_twice(tmp_path, trio_run):
    """The same two lives, but the crashed life marks a clean stop anyway: the check above then fails."""
    async def main():
        disk, pool = _Disk(), _Pool()
        await _life(tmp_path, disk, pool, b"one", crash=True, mark_clean=True)  # a lie a crash cannot tell
        await _life(tmp_path, disk, pool, b"two", crash=False)
        assert not _one_value_per_dot(pool.sent)
    trio_run(main)


def test_a_local_commit_failing_after_the_version_left_retires_the_actor(trio_run):
    async def main():
        disk, pool = _Disk(), _Pool()
        committer = GroupCommitter(disk, in_thread=False)
        async with trio.open_nursery() as nursery:
            await nursery.start(committer.run)
            coordinator = _coordinator(committer, "me:a", pool)
            actors = iter(["me:b", "me:c"])
            coordinator.renew_actor = functools.partial(next, actors)
            assert (await coordinator.write(_write(b"one"))).status == 200
            disk.failing = True
            failed = await coordinator.write(_write(b"two"))  # sent on, then our commit fails
            assert failed.status == 200 and failed.replicas.primary == 2  # W=2 met by the peers
            assert coordinator.actor == "me:b"
            disk.failing = False
            assert (await coordinator.write(_write(b"three"))).status == 200
            await committer.aclose()
        assert len(pool.sent) == 6 and _one_value_per_dot(pool.sent)
        assert _values_by_dot(pool.sent[4:])[("me:b", 1)] == {b"three"}
    trio_run(main)


def test_a_node_that_cannot_renew_its_actor_refuses_writes(trio_run):
    async def main():
        disk, pool = _Disk(), _Pool()
        committer = GroupCommitter(disk, in_thread=False)
        async with trio.open_nursery() as nursery:
            await nursery.start(committer.run)
            coordinator = _coordinator(committer, "me:a", pool)  # the default renew_actor cannot renew
            disk.failing = True
            await coordinator.write(_write(b"one"))
            disk.failing = False
            refused = await coordinator.write(_write(b"two"))
            assert refused.status == 503 and "restart" in refused.message
            await committer.aclose()
        assert len(pool.sent) == 2  # the first write only
        assert not committer.closed_cleanly  # so the node marks no clean stop: the next start renews
    trio_run(main)


def test_a_write_forwarded_by_an_older_view_also_reaches_the_primaries_it_did_not_name(trio_run):
    """The forwarder still routed by the ring before a change (peer2 an owner); here the change is done
    and peer3 owns the key instead. peer3 gets the write too (not counted toward W), else only AAE would
    ever give it its copy, once peer2 dropped the one it was sent."""
    async def main():
        pool = _Pool()
        async with _serving(pool) as coordinator:
            coordinator.membership.peers = ("peer1", "peer3")
            forwarded = [_write(b"one").to_wire(), [["me", None], ["peer1", None], ["peer2", None]]]
            outcome = WriteOutcome.from_wire(await coordinator.rpc_coordinate(forwarded))
            assert outcome.status == 200 and outcome.replicas.primary == 3  # W counts the forwarder's targets
            coordinator.membership.peers = ("peer1", "peer2")  # a view like the forwarder's: nothing more
            assert WriteOutcome.from_wire(await coordinator.rpc_coordinate(forwarded)).status == 200
        assert sorted(pool.to[:3]) == ["peer1", "peer2", "peer3"] and sorted(pool.to[3:]) == ["peer1", "peer2"]
    trio_run(main)


def test_a_copy_routed_by_an_older_ring_is_passed_on_to_our_primaries_once_our_change_is_done(trio_run):
    """peer2's coordinator never heard of the change (it routed by ring v1) and sent its copy here, an old
    owner; here the change to v2 is done, so there are no pending owners. The copy goes on to the primaries
    of our view (not back to the sender, not to ourselves), else only the old owners would hold it."""
    async def main():
        pool = _Pool()
        async with _serving(pool) as coordinator:
            coordinator.membership.ring = _RingV2()
            coordinator.membership.peers = ("peer2", "peer3")
            blob = encode_object(put(None, Content(b"one"), None, "peer2:x"))
            assert await coordinator.rpc_replicate("peer2", [b"b", b"k", blob, None, 1, 3]) is True
            assert pool.to == ["peer3"]
            await coordinator.rpc_replicate("peer2", [b"b", b"k2", blob, None, 2, 3])  # routed by our ring
            assert pool.to == ["peer3"]
    trio_run(main)


@dataclasses.dataclass(frozen=True)
class _RingV2:
    partitions: int = PARTITIONS
    version: int = 2


def test_an_unchanged_sqlite_store_and_a_clean_stop_keep_the_actor(tmp_path):
    backend = SqliteBackend(tmp_path / "store.sqlite3")
    backend.close()
    identity = load_identity(str(tmp_path), "me")
    mark_clean_stop(str(tmp_path), "me", identity)
    assert load_identity(str(tmp_path), "me").incarnation == identity.incarnation


@pytest.fixture
def trio_run():
    def run(fn):
        async def bounded():
            with trio.fail_after(20):
                await fn()
        trio.run(bounded)
    return run
